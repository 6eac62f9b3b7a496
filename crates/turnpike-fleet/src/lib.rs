//! Turnpike's relay fleet: which TURN relays exist and which are fit to be
//! handed to WebRTC clients, for the ICE-server configuration endpoint.
//!
//! - Relays come from a static list of TURN URLs ([`parse_relay_url`]),
//!   with [`FleetConfig::srv_domain`] from DNS SRV discovery ([`dns`]), and
//!   with a [`Registry`] from the relays' own heartbeat rows in a shared
//!   database ([`registry`]).
//! - Each is probed ([`probe`]): a STUN Binding, and `/readyz` of its admin
//!   endpoint when configured; [`health`] turns the outcomes into a health
//!   with hysteresis.
//! - [`Fleet`] runs both as tokio tasks and publishes a [`Snapshot`] that
//!   request handlers read lock-free; [`Snapshot::serving`] says which relays
//!   to hand out and [`shuffle`] orders them per request as RFC 2782 says.
//!
//! The SRV ordering and the health state machine are pure (time is an
//! argument) and unit-tested; the I/O around them is a thin shell.

#![forbid(unsafe_code)]

pub mod dns;
mod fleet;
pub mod health;
pub mod probe;
pub mod registry;
mod srv;
#[cfg(feature = "testing")]
pub mod testing;
mod url;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

pub use fleet::{Fleet, FleetError};
pub use registry::{Registered, Registry};
pub use srv::{MAX_ADDRESSES, MAX_RELAYS, shuffle, shuffle_weighted};
pub use url::{MAX_URL_LEN, TURN_PORT, TURNS_PORT, check_host_name, parse_relay_url};

/// How an endpoint is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// `turn:…?transport=udp`
    Udp,
    /// `turn:…?transport=tcp`
    Tcp,
    /// `turns:…?transport=tcp`
    Tls,
}

/// Where a relay came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// [`FleetConfig::static_relays`].
    Static,
    /// DNS SRV discovery under [`FleetConfig::srv_domain`].
    Dns,
    /// A [`Registry`]: the relay's own heartbeat row.
    Database,
}

/// One way to reach a relay: a URL's worth.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Endpoint {
    pub transport: Transport,
    /// Host as written, IPv6 without brackets.
    pub host: String,
    pub port: u16,
    /// SRV priority (0 for static URLs).
    pub priority: u16,
    /// SRV weight (1 for static URLs; DNS records of weight 0 are left out).
    pub weight: u16,
}

/// A relay: one host (an SRV target name, or a static URL's host).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Relay {
    /// Host as written (SRV target without the trailing dot, or the static
    /// URL's host).
    pub name: String,
    pub source: Source,
    /// The transports it offers.
    pub endpoints: Vec<Endpoint>,
    /// Its A/AAAA records (DNS), or the literal IP of a static URL, or the
    /// addresses the system resolves a static host name to (each discovery
    /// interval; empty until the first lookup). IPv4 first. The first is
    /// the one probed.
    pub addresses: Vec<IpAddr>,
}

impl Relay {
    /// The relay's place in an RFC 2782 order: its best (lowest) endpoint
    /// priority, and the highest weight among the endpoints of that
    /// priority. For [`shuffle`] over relays.
    pub fn priority_weight(&self) -> (u16, u16) {
        let priority = self.endpoints.iter().map(|e| e.priority).min().unwrap_or(0);
        let weight = self
            .endpoints
            .iter()
            .filter(|e| e.priority == priority)
            .map(|e| e.weight)
            .max()
            .unwrap_or(0);
        (priority, weight)
    }
}

/// What the probes make of a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Not probed yet (or probing is off): served.
    Unknown,
    Healthy,
    /// Left out of the answers.
    Unhealthy,
}

/// One relay as `GET /v1/fleet` shows it. Times serialize as whole seconds
/// since the Unix epoch (or null).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RelayStatus {
    pub relay: Relay,
    pub health: Health,
    /// `/readyz` said draining: alive but not handed out.
    pub draining: bool,
    #[serde(serialize_with = "unix_seconds")]
    pub last_probe: Option<SystemTime>,
    pub last_error: Option<String>,
    /// As the relay's `/readyz` reported (`x-turnpike-allocations`).
    pub allocations: Option<u64>,
    /// The allocations it takes at most, as its `/readyz` reported
    /// (`x-turnpike-capacity`); `None`: no limit, or not known.
    pub capacity: Option<u64>,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
}

impl RelayStatus {
    /// Healthy (or not known to be unhealthy) and not draining.
    pub fn is_serving(&self) -> bool {
        self.health != Health::Unhealthy && !self.draining
    }

    /// Below its capacity, as last reported (a relay that reports no
    /// capacity has room).
    pub fn has_room(&self) -> bool {
        match (self.allocations, self.capacity) {
            (Some(allocations), Some(capacity)) => allocations < capacity,
            _ => true,
        }
    }
}

/// DNS discovery as the status page shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DnsStatus {
    /// Whether [`FleetConfig::srv_domain`] is set.
    pub enabled: bool,
    #[serde(serialize_with = "unix_seconds")]
    pub last_success: Option<SystemTime>,
    /// Set while rounds fail (from the first failed round of the outage).
    #[serde(serialize_with = "unix_seconds")]
    pub failing_since: Option<SystemTime>,
    /// Discovery rounds done.
    pub lookups: u64,
    /// Of those, failed ones.
    pub failures: u64,
}

/// The fleet at one moment, published whole: a request handler reads one
/// consistent view without locking.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Static relays in configuration order, then DNS relays by name, then
    /// registered relays by name.
    pub relays: Vec<RelayStatus>,
    pub dns: DnsStatus,
    /// The registry's listings, counted as DNS rounds are (`lookups` are
    /// listings); `enabled` when the fleet has a [`Registry`].
    pub registry: DnsStatus,
    /// Whether relays are probed ([`FleetConfig::probe_interval`]).
    pub probing: bool,
}

impl Snapshot {
    /// Relays to hand out: healthy (or unknown) and not draining. If that is
    /// none of them, all of them and `true`: every relay unhealthy is more
    /// likely a probe problem (a firewall, the prober's own network) than a
    /// dead fleet, and an answer with no relays would fail every call.
    pub fn serving(&self) -> (Vec<&RelayStatus>, bool) {
        let serving: Vec<_> = self.relays.iter().filter(|r| r.is_serving()).collect();
        if serving.is_empty() && !self.relays.is_empty() {
            (self.relays.iter().collect(), true)
        } else {
            (serving, false)
        }
    }
}

/// What the fleet knows and does; [`Fleet::reconfigure`] replaces it whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// TURN URLs, RFC 7065: `turn:HOST[:PORT][?transport=udp|tcp]`,
    /// `turns:HOST[:PORT][?transport=tcp]`; default ports 3478 / 5349; IPv6
    /// in brackets. URLs with the same host make one relay.
    pub static_relays: Vec<String>,
    /// Base domain: `_turn._udp.<d>`, `_turn._tcp.<d>`, `_turns._tcp.<d>`.
    pub srv_domain: Option<String>,
    /// Name servers asked (UDP, TCP on truncation); empty: the system's
    /// resolv.conf.
    pub name_servers: Vec<SocketAddr>,
    pub discovery_interval: Duration,
    /// `None`: no probing; every relay stays [`Health::Unknown`] and served.
    pub probe_interval: Option<Duration>,
    /// Bound on one relay's whole probe (STUN and /readyz).
    pub probe_timeout: Duration,
    /// Consecutive failed probes before a relay is left out.
    pub unhealthy_after: u32,
    /// Consecutive passed probes before an unhealthy relay is served again.
    pub healthy_after: u32,
    /// The relays' admin port: probe `http://<first address>:<port>/readyz`
    /// as well.
    pub admin_port: Option<u16>,
    /// How often the [`Registry`] is listed, when the fleet has one.
    pub registry_interval: Duration,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            static_relays: Vec::new(),
            srv_domain: None,
            name_servers: Vec::new(),
            discovery_interval: Duration::from_secs(60),
            probe_interval: Some(Duration::from_secs(10)),
            probe_timeout: Duration::from_secs(2),
            unhealthy_after: 2,
            healthy_after: 2,
            admin_port: None,
            registry_interval: Duration::from_secs(5),
        }
    }
}

fn unix_seconds<S: Serializer>(time: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match time.and_then(|t| t.duration_since(UNIX_EPOCH).ok()) {
        Some(d) => s.serialize_some(&d.as_secs()),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(name: &str, health: Health, draining: bool) -> RelayStatus {
        RelayStatus {
            relay: Relay {
                name: name.into(),
                source: Source::Static,
                endpoints: vec![],
                addresses: vec![],
            },
            health,
            draining,
            last_probe: None,
            last_error: None,
            allocations: None,
            capacity: None,
            consecutive_failures: 0,
            consecutive_successes: 0,
        }
    }

    fn names(relays: &[&RelayStatus]) -> Vec<String> {
        relays.iter().map(|r| r.relay.name.clone()).collect()
    }

    #[test]
    fn serving_leaves_out_unhealthy_and_draining_keeps_unknown() {
        let snapshot = Snapshot {
            relays: vec![
                status("a", Health::Healthy, false),
                status("b", Health::Unhealthy, false),
                status("c", Health::Unknown, false),
                status("d", Health::Healthy, true),
            ],
            ..Snapshot::default()
        };
        let (serving, fallback) = snapshot.serving();
        assert_eq!(names(&serving), ["a", "c"]);
        assert!(!fallback);
    }

    #[test]
    fn serving_falls_back_to_all_when_none_qualifies() {
        let snapshot = Snapshot {
            relays: vec![
                status("a", Health::Unhealthy, false),
                status("b", Health::Healthy, true),
            ],
            ..Snapshot::default()
        };
        let (serving, fallback) = snapshot.serving();
        assert_eq!(names(&serving), ["a", "b"]);
        assert!(fallback);
        // No relays at all is not a fallback: there is nothing to fall back to.
        let empty = Snapshot::default();
        let (serving, fallback) = empty.serving();
        assert!(serving.is_empty());
        assert!(!fallback);
    }

    #[test]
    fn relay_priority_weight_takes_the_best_priority() {
        let e = |priority, weight| Endpoint {
            transport: Transport::Udp,
            host: "h".into(),
            port: 1,
            priority,
            weight,
        };
        let relay = Relay {
            name: "h".into(),
            source: Source::Dns,
            endpoints: vec![e(20, 100), e(10, 5), e(10, 7)],
            addresses: vec![],
        };
        assert_eq!(relay.priority_weight(), (10, 7));
    }
}
