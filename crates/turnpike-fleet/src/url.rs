//! TURN URLs (RFC 7065) of the static relay list: parsing, for
//! configuration validation with one clear message per bad URL, and
//! writing, for the ICE-server answer.

use std::net::{IpAddr, Ipv6Addr};

use crate::{Endpoint, Transport};

/// Longest URL accepted: far more than any real host name and port need,
/// short enough that an error message quoting it stays one line.
pub const MAX_URL_LEN: usize = 300;

/// Default port of `turn:` (RFC 5766 / 8656).
pub const TURN_PORT: u16 = 3478;
/// Default port of `turns:`.
pub const TURNS_PORT: u16 = 5349;

/// Longest DNS name (RFC 1035, text form without the trailing dot).
pub const MAX_NAME_LEN: usize = 253;

/// Parses `turn:HOST[:PORT][?transport=udp|tcp]` or
/// `turns:HOST[:PORT][?transport=tcp]`; an IPv6 host goes in brackets.
///
/// Static endpoints get priority 0 and weight 1: all equal, so a weighted
/// shuffle ([`crate::shuffle`]) spreads clients evenly over them.
pub fn parse_relay_url(url: &str) -> Result<Endpoint, String> {
    if url.len() > MAX_URL_LEN {
        return Err(format!(
            "TURN URL is {} bytes long, at most {MAX_URL_LEN} are accepted",
            url.len()
        ));
    }
    let show = url.escape_debug();
    let (scheme, rest) = url
        .split_once(':')
        .ok_or_else(|| format!("{show:?} is not a TURN URL: expected turn:HOST[:PORT][?transport=udp|tcp] or turns:HOST[:PORT]"))?;
    let tls = if scheme.eq_ignore_ascii_case("turn") {
        false
    } else if scheme.eq_ignore_ascii_case("turns") {
        true
    } else {
        return Err(format!(
            "{show:?}: the scheme must be turn: or turns:, not {:?}",
            scheme.escape_debug().to_string()
        ));
    };
    if rest.starts_with("//") {
        return Err(format!(
            "{show:?}: TURN URLs have no '//' (write {scheme}:HOST:PORT, RFC 7065)"
        ));
    }
    let (authority, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let transport = match query {
        None => {
            if tls {
                Transport::Tls
            } else {
                Transport::Udp
            }
        }
        Some(query) => {
            let value = query.strip_prefix("transport=").ok_or_else(|| {
                format!("{show:?}: the only query accepted is ?transport=udp or ?transport=tcp")
            })?;
            match (tls, value.to_ascii_lowercase().as_str()) {
                (false, "udp") => Transport::Udp,
                (false, "tcp") => Transport::Tcp,
                (true, "tcp") => Transport::Tls,
                (true, "udp") => {
                    return Err(format!(
                        "{show:?}: turns: runs over TLS on TCP; transport=udp (DTLS) is not supported"
                    ));
                }
                _ => {
                    return Err(format!(
                        "{show:?}: transport must be udp or tcp, not {:?}",
                        value.escape_debug().to_string()
                    ));
                }
            }
        }
    };
    let (host, port) = split_host_port(authority).map_err(|e| format!("{show:?}: {e}"))?;
    let port = match port {
        Some(port) => port,
        None if tls => TURNS_PORT,
        None => TURN_PORT,
    };
    Ok(Endpoint {
        transport,
        host,
        port,
        priority: 0,
        weight: 1,
    })
}

/// `HOST`, `HOST:PORT`, `[V6]` or `[V6]:PORT`; the host comes back without
/// brackets.
fn split_host_port(authority: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (inside, after) = bracketed
            .split_once(']')
            .ok_or("an IPv6 address opened with '[' has no closing ']'")?;
        let v6: Ipv6Addr = inside.parse().map_err(|_| {
            format!(
                "{:?} is not an IPv6 address",
                inside.escape_debug().to_string()
            )
        })?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or("only :PORT may follow ']'")?),
        };
        (v6.to_string(), port)
    } else {
        if authority.matches(':').count() > 1 {
            return Err("an IPv6 address must be written in brackets: [2001:db8::1]:3478".into());
        }
        let (host, port) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        check_host_name(host)?;
        (host.to_owned(), port)
    };
    let port = port.map(parse_port).transpose()?;
    Ok((host, port))
}

fn parse_port(text: &str) -> Result<u16, String> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "port {:?} is not a number from 1 to 65535",
            text.escape_debug().to_string()
        ));
    }
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("port {text} is not from 1 to 65535")),
        Ok(port) => Ok(port),
    }
}

/// An IPv4 literal or a DNS name of letters, digits and hyphens (RFC 1123
/// labels, at most 63 bytes each, 253 in all).
pub fn check_host_name(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("the host is missing".into());
    }
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if host.len() > MAX_NAME_LEN {
        return Err(format!(
            "the host name is {} bytes long, at most {MAX_NAME_LEN}",
            host.len()
        ));
    }
    for label in host.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "{:?} is not a valid host name",
                host.escape_debug().to_string()
            ));
        }
    }
    Ok(())
}

impl Endpoint {
    /// The RFC 7065 URL of this endpoint, always with the port and the
    /// transport, as browsers expect in `RTCIceServer.urls`.
    pub fn url(&self) -> String {
        let (scheme, transport) = match self.transport {
            Transport::Udp => ("turn", "udp"),
            Transport::Tcp => ("turn", "tcp"),
            Transport::Tls => ("turns", "tcp"),
        };
        if self.host.contains(':') {
            format!(
                "{scheme}:[{}]:{}?transport={transport}",
                self.host, self.port
            )
        } else {
            format!("{scheme}:{}:{}?transport={transport}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str) -> Endpoint {
        match parse_relay_url(url) {
            Ok(e) => e,
            Err(e) => panic!("{url}: {e}"),
        }
    }

    #[test]
    fn good_urls_parse_with_default_ports_and_transports() {
        let e = ok("turn:relay.example.com");
        assert_eq!(
            (e.transport, e.host.as_str(), e.port),
            (Transport::Udp, "relay.example.com", 3478)
        );
        let e = ok("turn:relay.example.com:3479?transport=tcp");
        assert_eq!((e.transport, e.port), (Transport::Tcp, 3479));
        let e = ok("turns:relay.example.com");
        assert_eq!((e.transport, e.port), (Transport::Tls, 5349));
        let e = ok("TURNS:relay.example.com:443?transport=TCP");
        assert_eq!((e.transport, e.port), (Transport::Tls, 443));
        let e = ok("turn:192.0.2.7:3478?transport=udp");
        assert_eq!(
            (e.host.as_str(), e.transport),
            ("192.0.2.7", Transport::Udp)
        );
        assert_eq!((e.priority, e.weight), (0, 1));
    }

    #[test]
    fn ipv6_goes_in_brackets_both_ways() {
        let e = ok("turn:[2001:db8::1]:3478?transport=udp");
        assert_eq!(e.host, "2001:db8::1");
        assert_eq!(e.url(), "turn:[2001:db8::1]:3478?transport=udp");
        let e = ok("turns:[::1]");
        assert_eq!((e.host.as_str(), e.port), ("::1", 5349));
        assert_eq!(e.url(), "turns:[::1]:5349?transport=tcp");
        // The written form is canonical, whatever the configuration spelled.
        assert_eq!(
            ok("turn:[2001:DB8:0::1]").url(),
            "turn:[2001:db8::1]:3478?transport=udp"
        );
    }

    #[test]
    fn url_round_trips_every_transport() {
        for url in [
            "turn:a.example:3478?transport=udp",
            "turn:a.example:3478?transport=tcp",
            "turns:a.example:5349?transport=tcp",
        ] {
            assert_eq!(ok(url).url(), url);
        }
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let cases: &[(&str, &str)] = &[
            ("", "not a TURN URL"),
            ("relay.example.com", "not a TURN URL"),
            ("stun:relay.example.com", "scheme must be turn: or turns:"),
            ("turn://relay.example.com", "no '//'"),
            ("turn:", "host is missing"),
            ("turn::3478", "host is missing"),
            ("turn:relay.example.com:0", "not from 1 to 65535"),
            ("turn:relay.example.com:65536", "not from 1 to 65535"),
            ("turn:relay.example.com:http", "not a number"),
            ("turn:relay.example.com:", "not a number"),
            (
                "turn:relay.example.com?transport=sctp",
                "transport must be udp or tcp",
            ),
            ("turn:relay.example.com?foo=bar", "only query accepted"),
            ("turns:relay.example.com?transport=udp", "DTLS"),
            ("turn:2001:db8::1", "in brackets"),
            ("turn:[2001:db8::1", "no closing"),
            ("turn:[not-v6]:3478", "not an IPv6 address"),
            ("turn:[::1]x", "only :PORT"),
            ("turn:bad host", "not a valid host name"),
            ("turn:-bad.example", "not a valid host name"),
            ("turn:a..b", "not a valid host name"),
        ];
        for (url, want) in cases {
            match parse_relay_url(url) {
                Ok(e) => panic!("{url:?} parsed as {e:?}"),
                Err(message) => assert!(
                    message.contains(want),
                    "{url:?}: {message:?} lacks {want:?}"
                ),
            }
        }
        let long = format!("turn:{}.example", "a".repeat(400));
        assert!(parse_relay_url(&long).unwrap_err().contains("at most"));
        let long_label = format!("turn:{}.example", "a".repeat(64));
        assert!(parse_relay_url(&long_label).is_err());
    }

    #[test]
    fn hostile_input_never_panics() {
        for url in [
            "turn:[",
            "turn:]",
            "turn:[]",
            "turn:[]:",
            "turn:?",
            "turn:a?transport=",
            "turns:\u{0}",
            "turn:é.example",
            "turn:a:99999999999",
        ] {
            assert!(parse_relay_url(url).is_err(), "{url:?}");
        }
    }
}
