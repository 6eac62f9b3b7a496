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
/// first), and within one priority weighted by SRV weight (RFC 2782) times
/// the relay's spare room ([`room_weights`]). Relays known to be full are
/// left out, unless all are. Static relays have equal SRV weights, so
/// without load figures their order is uniform.
///
/// Browsers take the first relay that works, so the first place is where
/// the load goes: weighting it by spare room fills the fleet evenly, while
/// staying random means that endpoints answering at once never send every
/// client to the one emptiest relay.
pub fn shuffled<'a>(relays: &[&'a RelayStatus], rng: &mut impl Rng) -> Vec<&'a RelayStatus> {
    let with_room: Vec<&RelayStatus> = relays.iter().copied().filter(|r| r.has_room()).collect();
    let relays = if with_room.is_empty() {
        relays.to_vec()
    } else {
        with_room
    };
    let weighed: Vec<(&RelayStatus, u64)> = room_weights(&relays)
        .into_iter()
        .zip(&relays)
        .map(|(room, &relay)| (relay, room))
        .collect();
    turnpike_fleet::shuffle_weighted(
        weighed,
        |&(relay, room)| {
            let (priority, weight) = relay.relay.priority_weight();
            (priority, u64::from(weight) * room)
        },
        rng,
    )
    .into_iter()
    .map(|(relay, _)| relay)
    .collect()
}

/// A relay of little room still weighs this share of the mean spare room,
/// so that it is picked now and then (its figures may be a few seconds old,
/// and its own Allocates redirect when it really is full).
const ROOM_FLOOR_DIVISOR: u64 = 16;

/// Spare room beyond this counts as this (a relay without a limit reports
/// none, and the products with SRV weights must not overflow).
const ROOM_CAP: u64 = 1 << 32;

/// Each relay's weight for [`shuffled`]: its spare room (capacity less
/// allocations) where both are known, at least a sixteenth of the mean
/// spare room of those (and at least 1); the mean for relays that report
/// no capacity. All equal when none reports one.
pub fn room_weights(relays: &[&RelayStatus]) -> Vec<u64> {
    let spare = |r: &RelayStatus| match (r.capacity, r.allocations) {
        (Some(capacity), Some(allocations)) => {
            Some(capacity.saturating_sub(allocations).min(ROOM_CAP))
        }
        _ => None,
    };
    let known: Vec<u64> = relays.iter().filter_map(|r| spare(r)).collect();
    let mean = match u64::try_from(known.len()) {
        Ok(n) if n > 0 => (known.iter().sum::<u64>() / n).max(1),
        _ => 1,
    };
    let floor = (mean / ROOM_FLOOR_DIVISOR).max(1);
    relays
        .iter()
        .map(|r| spare(r).map_or(mean, |s| s.max(floor)))
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use turnpike_fleet::{Endpoint, Health, Relay, Source};

    fn relay(name: &str, allocations: Option<u64>, capacity: Option<u64>) -> RelayStatus {
        RelayStatus {
            relay: Relay {
                name: name.into(),
                source: Source::Database,
                endpoints: vec![Endpoint {
                    transport: Transport::Udp,
                    host: name.into(),
                    port: 3478,
                    priority: 0,
                    weight: 1,
                }],
                addresses: vec![],
            },
            health: Health::Healthy,
            draining: false,
            last_probe: None,
            last_error: None,
            allocations,
            capacity,
            consecutive_failures: 0,
            consecutive_successes: 1,
        }
    }

    /// How often each relay comes first over `draws` seeded orders.
    fn firsts(relays: &[&RelayStatus], draws: usize) -> std::collections::HashMap<String, usize> {
        let mut rng = StdRng::seed_from_u64(18);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..draws {
            let order = shuffled(relays, &mut rng);
            assert_eq!(order.len(), relays.iter().filter(|r| r.has_room()).count());
            *counts.entry(order[0].relay.name.clone()).or_insert(0) += 1;
        }
        counts
    }

    #[test]
    fn the_first_place_goes_by_spare_room_never_to_one_relay_only() {
        let roomy = relay("roomy", Some(100), Some(400)); // 300 spare
        let busy = relay("busy", Some(300), Some(400)); // 100 spare
        let unknown = relay("unknown", None, None); // the mean: 200
        let nearly_full = relay("nearly-full", Some(399), Some(400)); // 1: the floor
        let full = relay("full", Some(400), Some(400));
        let relays = [&roomy, &busy, &unknown, &nearly_full, &full];
        assert_eq!(room_weights(&relays), [300, 100, 100, 6, 6]);
        let counts = firsts(&relays, 10_000);
        let first = |name: &str| counts.get(name).copied().unwrap_or(0) as f64;
        // 3x the spare room: first about 3x as often.
        let ratio = first("roomy") / first("busy");
        assert!((2.6..3.4).contains(&ratio), "{counts:?}");
        // Every relay with room comes first now and then; a full one never.
        assert!(first("nearly-full") > 0.0, "{counts:?}");
        assert_eq!(first("full"), 0.0, "{counts:?}");
    }

    #[test]
    fn unknown_capacity_weighs_the_mean_and_all_unknown_is_uniform() {
        let a = relay("a", Some(0), Some(100));
        let b = relay("b", Some(50), Some(100));
        let c = relay("c", None, Some(100));
        assert_eq!(room_weights(&[&a, &b, &c]), [100, 50, 75]);
        let (x, y) = (relay("x", None, None), relay("y", Some(3), None));
        assert_eq!(room_weights(&[&x, &y]), [1, 1]);
        let counts = firsts(&[&x, &y], 10_000);
        let ratio = counts["x"] as f64 / counts["y"] as f64;
        assert!((0.9..1.1).contains(&ratio), "{counts:?}");
    }

    #[test]
    fn when_every_relay_is_full_all_are_listed() {
        let a = relay("a", Some(10), Some(10));
        let b = relay("b", Some(20), Some(10));
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(shuffled(&[&a, &b], &mut rng).len(), 2);
    }
}
