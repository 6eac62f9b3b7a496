//! Self-registering relays: each relay of a fleet writes one heartbeat row
//! (`fleet_relays`) to the shared database every few seconds, and the ICE
//! endpoint lists the rows seen lately as a discovery source beside static
//! lists and DNS SRV.
//!
//! The cost is kept to one single-statement upsert per heartbeat (no read
//! before the write), one `SELECT` of the fresh rows per listing, and a
//! `DELETE` of rows gone stale now and then. Ages are measured by the
//! database's clock (PostgreSQL's `now()`), so the relays' clocks need not
//! agree; SQLite, one file on one host, uses the host's clock.
//!
//! Addresses and endpoints are stored as short text lists (`"192.0.2.1
//! 2001:db8::1"`, `"udp/3478 tcp/3478 tls/5349"`) rather than in child
//! tables: a heartbeat stays one row written, and a reader never sees half
//! of an update. Entries a newer Turnpike may add and this one does not know
//! are skipped when read.

use std::net::IpAddr;
use std::time::Duration;

use crate::{StoreError, validate_name};

/// Longest relay id or name accepted, in bytes (a DNS name is at most 253).
pub const MAX_RELAY_NAME_LEN: usize = 255;
/// Longest version string accepted, in bytes.
pub const MAX_VERSION_LEN: usize = 64;

/// How a relay's clients reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RegisteredTransport {
    /// TURN over UDP.
    Udp,
    /// TURN over TCP.
    Tcp,
    /// TURN over TLS (`turns:`).
    Tls,
    /// TURN over DTLS.
    Dtls,
}

impl RegisteredTransport {
    /// The name stored: `udp`, `tcp`, `tls`, `dtls`.
    pub fn as_str(self) -> &'static str {
        match self {
            RegisteredTransport::Udp => "udp",
            RegisteredTransport::Tcp => "tcp",
            RegisteredTransport::Tls => "tls",
            RegisteredTransport::Dtls => "dtls",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "udp" => RegisteredTransport::Udp,
            "tcp" => RegisteredTransport::Tcp,
            "tls" => RegisteredTransport::Tls,
            "dtls" => RegisteredTransport::Dtls,
            _ => return None,
        })
    }
}

/// One listener of a relay: a transport and its port (on every one of the
/// relay's addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RegisteredEndpoint {
    pub transport: RegisteredTransport,
    pub port: u16,
}

/// What a relay says about itself in each heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayRegistration {
    /// Unique in the fleet and stable across restarts (Turnpike uses its
    /// first public `IP:PORT`), so that a restarted relay takes over its
    /// own row.
    pub id: String,
    /// The host name clients use (`turns:` URLs need one a certificate
    /// carries), or an address.
    pub name: String,
    /// Its public addresses.
    pub addresses: Vec<IpAddr>,
    /// Its listeners.
    pub endpoints: Vec<RegisteredEndpoint>,
    /// Allocations it holds now.
    pub allocations: u64,
    /// Allocations it takes at most; `None`: no limit.
    pub capacity: Option<u64>,
    /// Whether it refuses new allocations.
    pub draining: bool,
    /// Its Turnpike version.
    pub version: String,
}

/// A row read back, with how long ago it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredRelay {
    pub registration: RelayRegistration,
    /// Time since its last heartbeat, by the database's clock.
    pub age: Duration,
}

/// Checks what a heartbeat writes.
pub(crate) fn validate(r: &RelayRegistration) -> Result<(), StoreError> {
    validate_name("relay id", &r.id, MAX_RELAY_NAME_LEN)?;
    validate_name("relay name", &r.name, MAX_RELAY_NAME_LEN)?;
    validate_name("relay version", &r.version, MAX_VERSION_LEN)?;
    if r.allocations > i64::MAX as u64 || r.capacity.is_some_and(|c| c > i64::MAX as u64) {
        return Err(StoreError::Invalid(
            "relay allocations and capacity must fit in 63 bits".to_owned(),
        ));
    }
    Ok(())
}

/// `"192.0.2.1 2001:db8::1"`.
pub(crate) fn encode_addresses(addresses: &[IpAddr]) -> String {
    let list: Vec<String> = addresses.iter().map(IpAddr::to_string).collect();
    list.join(" ")
}

/// `"udp/3478 tls/5349"`.
pub(crate) fn encode_endpoints(endpoints: &[RegisteredEndpoint]) -> String {
    let list: Vec<String> = endpoints
        .iter()
        .map(|e| format!("{}/{}", e.transport.as_str(), e.port))
        .collect();
    list.join(" ")
}

pub(crate) fn decode_addresses(text: &str) -> Vec<IpAddr> {
    text.split_whitespace()
        .filter_map(|a| a.parse().ok())
        .collect()
}

pub(crate) fn decode_endpoints(text: &str) -> Vec<RegisteredEndpoint> {
    text.split_whitespace()
        .filter_map(|e| {
            let (transport, port) = e.split_once('/')?;
            Some(RegisteredEndpoint {
                transport: RegisteredTransport::parse(transport)?,
                port: port.parse().ok().filter(|&p| p != 0)?,
            })
        })
        .collect()
}

/// A duration as whole milliseconds for SQL (saturating).
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A row's integer columns back (negative values, written by hand, as 0).
pub(crate) fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// The heartbeat's upsert for both backends: `params` are the eight
/// placeholders of the written columns, in [`COLUMNS`] order, and `now` the
/// SQL of the clock stamped as `last_seen_ms`.
pub(crate) fn upsert_sql(params: [&str; 8], now: &str) -> String {
    format!(
        "INSERT INTO fleet_relays ({COLUMNS}, last_seen_ms) VALUES ({}, {now})
         ON CONFLICT (id) DO UPDATE SET name = excluded.name,
             addresses = excluded.addresses, endpoints = excluded.endpoints,
             allocations = excluded.allocations, capacity = excluded.capacity,
             draining = excluded.draining, version = excluded.version,
             last_seen_ms = excluded.last_seen_ms",
        params.join(", ")
    )
}

/// The columns a listing reads, in order, shared by both backends' SQL.
pub(crate) const COLUMNS: &str =
    "id, name, addresses, endpoints, allocations, capacity, draining, version";

/// A row from its columns (in [`COLUMNS`] order) and its age in ms.
#[allow(clippy::too_many_arguments)] // one per column
pub(crate) fn row(
    id: String,
    name: String,
    addresses: &str,
    endpoints: &str,
    allocations: i64,
    capacity: Option<i64>,
    draining: bool,
    version: String,
    age_ms: i64,
) -> RegisteredRelay {
    RegisteredRelay {
        registration: RelayRegistration {
            id,
            name,
            addresses: decode_addresses(addresses),
            endpoints: decode_endpoints(endpoints),
            allocations: unsigned(allocations),
            capacity: capacity.map(unsigned),
            draining,
            version,
        },
        age: Duration::from_millis(unsigned(age_ms)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_round_trip_and_unknown_entries_are_skipped() {
        let addresses: Vec<IpAddr> =
            vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()];
        assert_eq!(encode_addresses(&addresses), "192.0.2.1 2001:db8::1");
        assert_eq!(decode_addresses("192.0.2.1  2001:db8::1 bogus"), addresses);
        let endpoints = vec![
            RegisteredEndpoint {
                transport: RegisteredTransport::Udp,
                port: 3478,
            },
            RegisteredEndpoint {
                transport: RegisteredTransport::Dtls,
                port: 5349,
            },
        ];
        assert_eq!(encode_endpoints(&endpoints), "udp/3478 dtls/5349");
        assert_eq!(
            decode_endpoints("udp/3478 quic/443 tcp/0 tcp/x dtls/5349"),
            endpoints
        );
    }
}
