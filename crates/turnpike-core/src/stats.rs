//! Per-shard counters, and why relayed data was not delivered.
//!
//! Each shard owns its counters as plain integers, and whoever reports them
//! sums the shards', so the packet path never touches shared memory.

use std::fmt;

/// Per-shard counters. Plain integers: each shard owns its own, and the
/// metrics endpoint sums them, so the packet path never touches shared memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Binding requests answered with a success response.
    pub binding_success: u64,
    /// Requests answered with an error response.
    pub error_responses: u64,
    /// Packets dropped without an answer (garbage, wrong class, bad fingerprint).
    pub dropped: u64,
    /// Allocations created.
    pub allocations_created: u64,
    /// Requests whose credentials were refused (401 after an integrity
    /// check, or an unknown user).
    pub auth_failures: u64,
    /// Challenges not sent because of the per-source rate limit or the
    /// amplification budget.
    pub challenges_suppressed: u64,
    /// Datagrams relayed client → peer, and their payload bytes.
    pub to_peer_packets: u64,
    /// Payload bytes relayed client → peer.
    pub to_peer_bytes: u64,
    /// Datagrams relayed peer → client.
    pub to_client_packets: u64,
    /// Payload bytes relayed peer → client.
    pub to_client_bytes: u64,
    /// Relayed data that could not be delivered, by reason.
    pub relay_drops: Drops,
}

/// Why relayed data was not delivered, when it was not the peer's or the
/// client's choice (no permission, no channel: those are the protocol
/// working) but a limit of the way out. Each is counted per shard in
/// [`Stats::relay_drops`] and logged at debug level as it happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// A peer's datagram does not fit one message to the client: over UDP
    /// the ChannelData or Data indication would exceed the largest UDP
    /// payload to the client ([`max_udp_payload`](crate::packet::max_udp_payload)),
    /// over DTLS one record ([`MAX_DTLS_MESSAGE`](crate::packet::MAX_DTLS_MESSAGE)),
    /// on TCP and TLS a Data indication's 65,532-byte body.
    TooBigForClient,
    /// A client's data is larger than one UDP datagram to the peer (on TCP
    /// and TLS ChannelData carries up to 65,535 bytes; an IPv4 peer takes
    /// 65,507).
    TooBigForPeer,
    /// Sent without fragmentation (DONT-FRAGMENT, RFC 8656 §11.2, §14) and
    /// larger than the path MTU: the kernel refused it (`EMSGSIZE`).
    PathMtu,
    /// The way to the client or peer was full: the client connection's
    /// write queue, the DTLS session's output queue, or the relay socket's
    /// send buffer.
    QueueFull,
}

impl DropReason {
    /// Every reason, in the order of [`Drops`]' counters.
    pub const ALL: [DropReason; 4] = [
        DropReason::TooBigForClient,
        DropReason::TooBigForPeer,
        DropReason::PathMtu,
        DropReason::QueueFull,
    ];

    /// A stable name for logs and metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::TooBigForClient => "too_big_for_client",
            DropReason::TooBigForPeer => "too_big_for_peer",
            DropReason::PathMtu => "path_mtu",
            DropReason::QueueFull => "queue_full",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Relayed datagrams dropped, by [`DropReason`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drops([u64; DropReason::ALL.len()]);

impl Drops {
    /// Counts one drop.
    pub fn record(&mut self, reason: DropReason) {
        self.0[reason.index()] += 1;
    }

    /// Drops for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason.index()]
    }

    /// All drops, whatever the reason.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}
