//! Who is asking the ICE endpoint, and whether they may: the caller checks
//! of `ice.auth`, the user id of `ice.user_header`, the per-caller rate
//! limit and CORS. Pure functions of the request's headers and peer
//! address, so the route tests and the unit tests share them.
//!
//! Minting relay credentials for strangers would turn every relay of the
//! fleet into an open relay, so there is no "open" mode: the default admits
//! loopback callers only (an application server or proxy on the same host).

use std::net::{IpAddr, SocketAddr};

use crate::admin_http::Token;
use crate::config::IceAuth;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

/// Longest user id taken from `ice.user_header`: ids are short, and the
/// whole REST username must stay well under STUN's 509 bytes.
pub const MAX_USER_ID: usize = 128;

/// How callers are admitted, as configured.
#[derive(Clone, Debug)]
pub struct CallerPolicy {
    /// `ice.auth`.
    pub auth: IceAuth,
    /// The token of `ice.token_file` (with `auth = "token"`).
    pub token: Option<Token>,
    /// `ice.user_header`, if set.
    pub user_header: Option<HeaderName>,
    /// `ice.cors_origins`.
    pub cors_origins: Vec<String>,
}

/// An admitted caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user id the proxy named, if any (goes into REST usernames).
    pub user_id: Option<String>,
    /// What the rate limit counts: the user id, else the address.
    pub key: CallerKey,
}

/// What the per-caller rate limit counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CallerKey {
    /// A user named by the proxy.
    User(String),
    /// An address (IPv4-mapped IPv6 addresses as IPv4).
    Address(IpAddr),
}

/// Why a caller was turned away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not admitted by `ice.auth` (401).
    Unauthorized(&'static str),
    /// A user id that cannot go into a username (400).
    BadUserId(&'static str),
}

impl CallerPolicy {
    /// Admits the request from `peer` with `headers`, or says why not.
    pub fn admit(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Result<Caller, Refusal> {
        let user_id = match &self.user_header {
            Some(name) => user_id(headers, name)?,
            None => None,
        };
        match self.auth {
            IceAuth::Loopback => {
                if !peer.is_some_and(|p| p.ip().to_canonical().is_loopback()) {
                    return Err(Refusal::Unauthorized(
                        "only callers on this host are served (ice.auth = \"loopback\")",
                    ));
                }
            }
            IceAuth::Token => {
                let Some(expected) = &self.token else {
                    return Err(Refusal::Unauthorized("no token is configured"));
                };
                let presented = bearer(headers).unwrap_or_default();
                // Constant time: the comparison must not tell how much of
                // a guess was right.
                if !expected.matches(presented.as_bytes()) {
                    return Err(Refusal::Unauthorized(
                        "send Authorization: Bearer with the token of ice.token_file",
                    ));
                }
            }
            IceAuth::Header => {
                if user_id.is_none() {
                    return Err(Refusal::Unauthorized(
                        "the request did not come through the authenticating proxy (no ice.user_header)",
                    ));
                }
            }
        }
        let key = match &user_id {
            Some(id) => CallerKey::User(id.clone()),
            None => CallerKey::Address(
                peer.map_or(IpAddr::from([0, 0, 0, 0]), |p| p.ip().to_canonical()),
            ),
        };
        Ok(Caller { user_id, key })
    }

    /// The CORS headers for a request from `origin`: the origin echoed back
    /// when it is allowed, nothing otherwise (the browser then refuses the
    /// page the answer).
    pub fn cors(&self, origin: Option<&HeaderValue>) -> Vec<(HeaderName, HeaderValue)> {
        let Some(origin) = origin else {
            return Vec::new();
        };
        let allowed = self.cors_origins.iter().any(|o| o == "*")
            || origin
                .to_str()
                .is_ok_and(|o| self.cors_origins.iter().any(|a| a.eq_ignore_ascii_case(o)));
        if !allowed {
            return Vec::new();
        }
        let mut headers = vec![
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()),
            (header::VARY, HeaderValue::from_static("Origin")),
        ];
        let mut allow_headers = String::from("Authorization");
        if let Some(name) = &self.user_header {
            allow_headers.push_str(", ");
            allow_headers.push_str(name.as_str());
        }
        if let Ok(value) = HeaderValue::from_str(&allow_headers) {
            headers.push((header::ACCESS_CONTROL_ALLOW_HEADERS, value));
        }
        headers.push((
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, OPTIONS"),
        ));
        headers.push((
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        ));
        headers
    }
}

/// The user id of `name`: printable ASCII without spaces, at most
/// [`MAX_USER_ID`] bytes; absent or empty is `None`.
fn user_id(headers: &HeaderMap, name: &HeaderName) -> Result<Option<String>, Refusal> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| Refusal::BadUserId("the user id header is not printable ASCII"))?
        .trim();
    if text.is_empty() {
        return Ok(None);
    }
    if text.len() > MAX_USER_ID {
        return Err(Refusal::BadUserId("the user id is longer than 128 bytes"));
    }
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Refusal::BadUserId(
            "the user id holds spaces or control characters",
        ));
    }
    Ok(Some(text.to_owned()))
}

/// The token of `Authorization: Bearer TOKEN`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(auth: IceAuth) -> CallerPolicy {
        CallerPolicy {
            auth,
            token: Some(Token::parse("s3cret-token-0123").unwrap()),
            user_header: Some(HeaderName::from_static("x-user-id")),
            cors_origins: vec!["https://app.example".into()],
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const LOCAL: &str = "127.0.0.1:5000";
    const REMOTE: &str = "198.51.100.7:5000";

    #[test]
    fn loopback_admits_this_host_only() {
        let p = policy(IceAuth::Loopback);
        assert!(p.admit(Some(LOCAL.parse().unwrap()), &headers(&[])).is_ok());
        assert!(
            p.admit(Some("[::ffff:127.0.0.1]:1".parse().unwrap()), &headers(&[]))
                .is_ok()
        );
        assert!(matches!(
            p.admit(Some(REMOTE.parse().unwrap()), &headers(&[])),
            Err(Refusal::Unauthorized(_))
        ));
        assert!(p.admit(None, &headers(&[])).is_err());
    }

    #[test]
    fn token_must_match_exactly() {
        let p = policy(IceAuth::Token);
        let remote = Some(REMOTE.parse().unwrap());
        assert!(
            p.admit(
                remote,
                &headers(&[("authorization", "Bearer s3cret-token-0123")])
            )
            .is_ok()
        );
        assert!(
            p.admit(
                remote,
                &headers(&[("authorization", "bearer s3cret-token-0123")])
            )
            .is_ok()
        );
        for bad in [
            "Bearer s3cret-token-012",
            "Bearer s3cret-token-01234",
            "Basic s3cret-token-0123",
            "",
        ] {
            assert!(
                p.admit(remote, &headers(&[("authorization", bad)]))
                    .is_err(),
                "{bad:?}"
            );
        }
        // Loopback is no excuse without the token.
        assert!(
            p.admit(Some(LOCAL.parse().unwrap()), &headers(&[]))
                .is_err()
        );
    }

    #[test]
    fn header_mode_needs_the_proxy_header_and_keys_by_user() {
        let p = policy(IceAuth::Header);
        let remote = Some(REMOTE.parse().unwrap());
        let caller = p
            .admit(remote, &headers(&[("x-user-id", "alice")]))
            .unwrap();
        assert_eq!(caller.user_id.as_deref(), Some("alice"));
        assert_eq!(caller.key, CallerKey::User("alice".into()));
        assert!(matches!(
            p.admit(remote, &headers(&[])),
            Err(Refusal::Unauthorized(_))
        ));
        assert!(matches!(
            p.admit(remote, &headers(&[("x-user-id", "a b")])),
            Err(Refusal::BadUserId(_))
        ));
        assert!(matches!(
            p.admit(remote, &headers(&[("x-user-id", &"x".repeat(129))])),
            Err(Refusal::BadUserId(_))
        ));
    }

    #[test]
    fn cors_echoes_allowed_origins_only() {
        let p = policy(IceAuth::Loopback);
        let cors = p.cors(Some(&HeaderValue::from_static("https://app.example")));
        assert!(
            cors.iter().any(
                |(k, v)| k == header::ACCESS_CONTROL_ALLOW_ORIGIN && v == "https://app.example"
            )
        );
        assert!(
            p.cors(Some(&HeaderValue::from_static("https://evil.example")))
                .is_empty()
        );
        assert!(p.cors(None).is_empty());
        let open = CallerPolicy {
            cors_origins: vec!["*".into()],
            ..p
        };
        assert!(
            !open
                .cors(Some(&HeaderValue::from_static("https://any.example")))
                .is_empty()
        );
    }
}
