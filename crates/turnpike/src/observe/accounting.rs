//! Accounting log lines: one when an allocation is created, one when it
//! ends, under their own tracing target ([`TARGET`]) so they can be routed
//! or filtered apart from the operational log (`RUST_LOG` or
//! `log.filter` such as `turnpike::accounting=info`). With
//! `log.format = "json"` each is one JSON object, ready for a log shipper.
//!
//! The end line carries the reason, the duration, and what was relayed
//! each way — the XDP fast path's share included, which the runtime adds
//! from the routes' own counters before it logs.

use std::net::SocketAddr;

use turnpike_core::RelayProtocol;
use turnpike_core::output::AllocationRecord;
use turnpike_core::stats::{EndReason, Traffic, TransportLabel};

/// The tracing target of accounting lines.
pub const TARGET: &str = "turnpike::accounting";

/// An allocation's id as operators see it: its serial in 16 hex digits.
pub fn allocation_id(serial: u64) -> String {
    format!("{serial:016x}")
}

/// The relay kind's label.
pub fn relay_kind(protocol: RelayProtocol) -> &'static str {
    match protocol {
        RelayProtocol::Udp => "udp",
        RelayProtocol::Tcp => "tcp",
    }
}

/// Relayed addresses, comma-separated (one per family).
fn relayed(relays: &[Option<SocketAddr>; 2]) -> String {
    let mut out = String::new();
    for relay in relays.iter().flatten() {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(&relay.to_string());
    }
    out
}

/// Logs an allocation's creation.
pub fn created(record: &AllocationRecord, realm: &str) {
    tracing::info!(
        target: TARGET,
        event = "allocation_created",
        id = %allocation_id(record.serial),
        user = %record.user,
        realm,
        client = %record.client.client,
        transport = TransportLabel::from(record.client.transport).as_str(),
        relayed = %relayed(&record.relays),
        relay_kind = relay_kind(record.protocol),
        "allocation created"
    );
}

/// Logs an allocation's end. `traffic` is everything relayed for it, the
/// fast path's share included.
pub fn ended(
    record: &AllocationRecord,
    realm: &str,
    reason: EndReason,
    lasted: std::time::Duration,
    traffic: &Traffic,
) {
    tracing::info!(
        target: TARGET,
        event = "allocation_ended",
        id = %allocation_id(record.serial),
        user = %record.user,
        realm,
        client = %record.client.client,
        transport = TransportLabel::from(record.client.transport).as_str(),
        relayed = %relayed(&record.relays),
        relay_kind = relay_kind(record.protocol),
        reason = reason.as_str(),
        duration_seconds = lasted.as_secs_f64(),
        to_peer_packets = traffic.to_peer_packets,
        to_peer_bytes = traffic.to_peer_bytes,
        to_client_packets = traffic.to_client_packets,
        to_client_bytes = traffic.to_client_bytes,
        "allocation ended"
    );
}
