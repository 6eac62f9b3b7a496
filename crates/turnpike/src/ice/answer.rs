//! The three answer shapes of the ICE endpoint, built from the relays being
//! served and one minted credential. Pure: the order comes from the caller's
//! random source, so tests choose it.
//!
//! - `/ice-servers`: the browser's `RTCConfiguration` dictionary
//!   (W3C WebRTC §4.2.1), `{"iceServers": [RTCIceServer…],
//!   "iceTransportPolicy"?}`, which `new RTCPeerConnection(answer)` takes
//!   as it is.
//! - `/calls/config/v2`: Wire's shape, `{"ice_servers": […], "ttl": N}`.
//! - `/calls/config`: Wire's first version, IP URLs of the UDP relays only
//!   (for clients that cannot resolve names).
//!
//! One `RTCIceServer` per relay, holding that relay's URLs. With a limit,
//! URLs are taken across relays and transports in turn (UDP of the first
//! relay, TCP of the second, TLS of the third, UDP of the second, …), so a
//! short list still offers every transport and more than one relay.

use std::net::IpAddr;

use rand::Rng;
use serde::Serialize;
use turnpike_core::ephemeral::Minted;
use turnpike_fleet::{RelayStatus, Transport};

/// Transports in the order a limited list takes them.
const TRANSPORTS: [Transport; 3] = [Transport::Udp, Transport::Tcp, Transport::Tls];

/// One `RTCIceServer`: the fields in the order the specification lists
/// them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IceServer {
    /// TURN URLs of one relay (RFC 7065).
    pub urls: Vec<String>,
    /// The minted username.
    pub username: String,
    /// Its password.
    pub credential: String,
}

/// `/ice-servers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RtcConfiguration {
    /// `iceServers`.
    #[serde(rename = "iceServers")]
    pub ice_servers: Vec<IceServer>,
    /// `"relay"` with `ice.relay_only`, else left out (the browser's
    /// default, `"all"`).
    #[serde(rename = "iceTransportPolicy", skip_serializing_if = "Option::is_none")]
    pub ice_transport_policy: Option<&'static str>,
}

/// `/calls/config/v2` and `/calls/config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WireConfig {
    /// `ice_servers`.
    pub ice_servers: Vec<IceServer>,
    /// Seconds the credentials stay valid.
    pub ttl: u32,
}

/// The relays to list, in a fresh random order: by SRV priority (lower
/// first), and within one priority weighted by SRV weight (RFC 2782).
/// Static relays have equal weights, so their order is uniform.
pub fn shuffled<'a>(relays: &[&'a RelayStatus], rng: &mut impl Rng) -> Vec<&'a RelayStatus> {
    turnpike_fleet::shuffle(relays.to_vec(), |r| r.relay.priority_weight(), rng)
}

/// The URLs of each relay of `ordered` (in that order), at most `limit` in
/// all, taken across relays and transports in turn; one entry per relay
/// that has any.
pub fn urls_per_relay(ordered: &[&RelayStatus], limit: Option<usize>) -> Vec<Vec<String>> {
    let per_transport: Vec<Vec<(usize, String)>> = TRANSPORTS
        .iter()
        .enumerate()
        .map(|(t, &transport)| {
            let n = ordered.len();
            // Each transport starts at another relay, so the first URLs
            // spread over relays as well as transports.
            (0..n)
                .map(|i| (i + t) % n)
                .flat_map(|i| {
                    ordered[i]
                        .relay
                        .endpoints
                        .iter()
                        .filter(move |e| e.transport == transport)
                        .map(move |e| (i, e.url()))
                })
                .collect()
        })
        .collect();
    let total: usize = per_transport.iter().map(Vec::len).sum();
    let take = limit.map_or(total, |l| l.min(total));
    let mut chosen: Vec<(usize, String)> = Vec::with_capacity(take);
    let mut cursors = [0usize; TRANSPORTS.len()];
    while chosen.len() < take {
        for (t, urls) in per_transport.iter().enumerate() {
            if chosen.len() == take {
                break;
            }
            if let Some(url) = urls.get(cursors[t]) {
                chosen.push(url.clone());
                cursors[t] += 1;
            }
        }
    }
    let mut grouped: Vec<Vec<String>> = vec![Vec::new(); ordered.len()];
    for (relay, url) in chosen {
        grouped[relay].push(url);
    }
    // Within a relay: UDP, TCP, TLS, whatever order they were taken in.
    for urls in &mut grouped {
        urls.sort_by_key(|u| transport_rank(u));
    }
    grouped.retain(|urls| !urls.is_empty());
    grouped
}

/// UDP first, then TCP, then TLS, as browsers try them in list order.
fn transport_rank(url: &str) -> u8 {
    if url.starts_with("turns:") {
        2
    } else if url.ends_with("transport=tcp") {
        1
    } else {
        0
    }
}

/// Wire's v1 URLs: `turn:IP:PORT` of each relay's UDP endpoint, at its
/// first address; at most `limit`.
pub fn v1_urls(ordered: &[&RelayStatus], limit: Option<usize>) -> Vec<Vec<String>> {
    ordered
        .iter()
        .filter_map(|r| {
            let udp = r
                .relay
                .endpoints
                .iter()
                .find(|e| e.transport == Transport::Udp)?;
            let ip = r.relay.addresses.first()?;
            Some(vec![format!("turn:{}:{}", url_host(*ip), udp.port)])
        })
        .take(limit.unwrap_or(usize::MAX))
        .collect()
}

/// An IP as a URL host: IPv6 in brackets (RFC 3986 §3.2.2).
fn url_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// The entries of an answer: every group with the one credential.
pub fn ice_servers(groups: Vec<Vec<String>>, credential: &Minted) -> Vec<IceServer> {
    groups
        .into_iter()
        .map(|urls| IceServer {
            urls,
            username: credential.username.clone(),
            credential: credential.password.clone(),
        })
        .collect()
}
