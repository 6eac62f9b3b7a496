//! Per-shard counters, and the fixed label sets they are counted by.
//!
//! Each shard owns its counters as plain integers, and whoever reports them
//! sums the shards' ([`Stats`] is `AddAssign`), so the packet path never
//! touches shared memory. Every label is an enum with a fixed set of
//! values ([`Label`]): no username, address or allocation ever becomes a
//! label, so what a scraper sees is bounded whatever clients send.

use std::fmt;
use std::marker::PhantomData;
use std::ops::AddAssign;
use std::time::Duration;

use crate::packet::Transport;

/// A fixed set of label values: the enum's variants, in index order.
pub trait Label: Copy + 'static {
    /// Every value, in the order of their counters.
    const ALL: &'static [Self];
    /// The value's counter.
    fn index(self) -> usize;
    /// A stable name for logs and metric labels.
    fn as_str(self) -> &'static str;
}

/// Most values a [`Label`] has; [`Tally`] keeps this many counters.
const MAX_LABELS: usize = 20;

/// One counter per value of a [`Label`].
pub struct Tally<L> {
    counts: [u64; MAX_LABELS],
    label: PhantomData<L>,
}

impl<L: Label> Tally<L> {
    /// Counts one.
    pub fn record(&mut self, label: L) {
        self.add(label, 1);
    }

    /// Counts `n`.
    pub fn add(&mut self, label: L, n: u64) {
        self.counts[label.index()] += n;
    }

    /// Takes `n` off (for gauges: what is open now).
    pub fn sub(&mut self, label: L, n: u64) {
        let count = &mut self.counts[label.index()];
        *count = count.saturating_sub(n);
    }

    /// The count for `label`.
    pub fn get(&self, label: L) -> u64 {
        self.counts[label.index()]
    }

    /// All counts, whatever the label.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Each label with its count, in label order.
    pub fn iter(&self) -> impl Iterator<Item = (L, u64)> + '_ {
        L::ALL.iter().map(|&l| (l, self.get(l)))
    }
}

// Hand-written: derives would ask the label type for the same traits.
impl<L> Clone for Tally<L> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<L> Copy for Tally<L> {}
impl<L> Default for Tally<L> {
    fn default() -> Self {
        Tally {
            counts: [0; MAX_LABELS],
            label: PhantomData,
        }
    }
}
impl<L> PartialEq for Tally<L> {
    fn eq(&self, other: &Self) -> bool {
        self.counts == other.counts
    }
}
impl<L> Eq for Tally<L> {}
impl<L: Label + fmt::Debug> fmt::Debug for Tally<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().filter(|(_, n)| *n != 0))
            .finish()
    }
}
impl<L> AddAssign for Tally<L> {
    fn add_assign(&mut self, other: Self) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
    }
}

/// Declares a label enum with its names, in counter order.
macro_rules! labels {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// A stable name for logs and metric labels.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl Label for $name {
            const ALL: &'static [Self] = &[$($name::$variant,)+];
            fn index(self) -> usize {
                self as usize
            }
            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        const _: () = assert!(<$name as Label>::ALL.len() <= MAX_LABELS);
    };
}

labels! {
    /// A request's method, as counted.
    RequestMethod {
        /// Binding (RFC 8489).
        Binding = "binding",
        /// Allocate.
        Allocate = "allocate",
        /// Refresh.
        Refresh = "refresh",
        /// CreatePermission.
        CreatePermission = "create_permission",
        /// ChannelBind.
        ChannelBind = "channel_bind",
        /// Connect (RFC 6062).
        Connect = "connect",
        /// ConnectionBind (RFC 6062).
        ConnectionBind = "connection_bind",
        /// Anything else (answered 400).
        Other = "other",
    }
}

impl RequestMethod {
    /// The label of a STUN method.
    pub fn of(method: turnpike_codec::Method) -> Self {
        use turnpike_codec::Method;
        match method {
            Method::BINDING => RequestMethod::Binding,
            Method::ALLOCATE => RequestMethod::Allocate,
            Method::REFRESH => RequestMethod::Refresh,
            Method::CREATE_PERMISSION => RequestMethod::CreatePermission,
            Method::CHANNEL_BIND => RequestMethod::ChannelBind,
            Method::CONNECT => RequestMethod::Connect,
            Method::CONNECTION_BIND => RequestMethod::ConnectionBind,
            _ => RequestMethod::Other,
        }
    }
}

labels! {
    /// An error response's code, as counted: the codes the server sends,
    /// and one bucket for any other.
    ErrorCode {
        /// 300 Try Alternate.
        TryAlternate = "300",
        /// 400 Bad Request.
        BadRequest = "400",
        /// 401 Unauthenticated.
        Unauthenticated = "401",
        /// 403 Forbidden (a refused peer, a stopped user).
        Forbidden = "403",
        /// 420 Unknown Attribute.
        UnknownAttribute = "420",
        /// 437 Allocation Mismatch.
        AllocationMismatch = "437",
        /// 438 Stale Nonce.
        StaleNonce = "438",
        /// 440 Address Family not Supported.
        FamilyNotSupported = "440",
        /// 441 Wrong Credentials.
        WrongCredentials = "441",
        /// 442 Unsupported Transport Protocol.
        UnsupportedTransport = "442",
        /// 443 Peer Address Family Mismatch.
        PeerFamilyMismatch = "443",
        /// 446 Connection Already Exists (RFC 6062).
        ConnectionExists = "446",
        /// 447 Connection Timeout or Failure (RFC 6062).
        ConnectionFailure = "447",
        /// 486 Allocation Quota Reached.
        QuotaReached = "486",
        /// 500 Server Error.
        ServerError = "500",
        /// 508 Insufficient Capacity.
        InsufficientCapacity = "508",
        /// Any other code.
        Other = "other",
    }
}

impl ErrorCode {
    /// The label of an error code.
    pub fn of(code: u16) -> Self {
        match code {
            300 => ErrorCode::TryAlternate,
            400 => ErrorCode::BadRequest,
            401 => ErrorCode::Unauthenticated,
            403 => ErrorCode::Forbidden,
            420 => ErrorCode::UnknownAttribute,
            437 => ErrorCode::AllocationMismatch,
            438 => ErrorCode::StaleNonce,
            440 => ErrorCode::FamilyNotSupported,
            441 => ErrorCode::WrongCredentials,
            442 => ErrorCode::UnsupportedTransport,
            443 => ErrorCode::PeerFamilyMismatch,
            446 => ErrorCode::ConnectionExists,
            447 => ErrorCode::ConnectionFailure,
            486 => ErrorCode::QuotaReached,
            500 => ErrorCode::ServerError,
            508 => ErrorCode::InsufficientCapacity,
            _ => ErrorCode::Other,
        }
    }
}

labels! {
    /// Why a request's credentials were refused.
    AuthFailure {
        /// No such user (not in the store, no static user, no secret
        /// matched a time-limited name's format).
        UnknownUser = "unknown_user",
        /// The MESSAGE-INTEGRITY did not verify with the user's key (a wrong
        /// password), or the REALM was not ours.
        BadIntegrity = "bad_integrity",
        /// The NONCE was stale or not ours (438).
        StaleNonce = "stale_nonce",
        /// A time-limited credential past its expiry.
        ExpiredCredential = "expired_credential",
        /// The operator stopped this user (`DELETE /v1/users/…`).
        Stopped = "stopped",
        /// The credential database could not be asked (500).
        Unavailable = "database_unavailable",
    }
}

labels! {
    /// Why an allocation ended.
    EndReason {
        /// A Refresh with LIFETIME 0.
        Refresh = "refresh",
        /// Its lifetime ran out.
        Expired = "expired",
        /// The client's TCP, TLS or DTLS connection closed.
        ConnectionClosed = "connection_closed",
        /// The operator ended it.
        Kicked = "kicked",
        /// The server shut down or drained it.
        Drained = "drained",
    }
}

labels! {
    /// Why a packet or relayed data was dropped without an answer.
    DropReason {
        /// Not a message the server answers: garbage, a bad FINGERPRINT, a
        /// STUN message too broken to answer, a response.
        Malformed = "malformed",
        /// An answer (a challenge) held back by the per-source rate limit
        /// or the amplification budget.
        RateLimited = "rate_limited",
        /// Data from or to a peer without a permission, ChannelData on an
        /// unbound channel, data for no allocation.
        NoPermission = "no_permission",
        /// Data for a peer the peer policy refuses.
        PeerRefused = "peer_refused",
        /// A peer's datagram does not fit one message to the client: over
        /// UDP the ChannelData or Data indication would exceed the largest
        /// UDP payload to the client
        /// ([`max_udp_payload`](crate::packet::max_udp_payload)), over DTLS
        /// one record ([`MAX_DTLS_MESSAGE`](crate::packet::MAX_DTLS_MESSAGE)),
        /// on TCP and TLS a Data indication's 65,532-byte body.
        TooBigForClient = "too_big_for_client",
        /// A client's data is larger than one UDP datagram to the peer (on
        /// TCP and TLS ChannelData carries up to 65,535 bytes; an IPv4 peer
        /// takes 65,507).
        TooBigForPeer = "too_big_for_peer",
        /// Sent without fragmentation (DONT-FRAGMENT, RFC 8656 §11.2, §14)
        /// and larger than the path MTU: the kernel refused it (`EMSGSIZE`).
        PathMtu = "path_mtu",
        /// The way to the client or peer was full: the client connection's
        /// write queue, the DTLS session's output queue, or the relay
        /// socket's send buffer.
        QueueFull = "queue_full",
        /// Over a bandwidth cap (`turn.max_bps`, `turn.user_max_bps`;
        /// [`crate::bandwidth`]): dropped, not queued.
        BandwidthCap = "bandwidth_cap",
    }
}

impl DropReason {
    /// Whether it is relayed data that could not be delivered because of a
    /// limit of the way out (logged at debug level as it happens), rather
    /// than the protocol refusing a packet.
    pub const fn is_relay_limit(self) -> bool {
        matches!(
            self,
            DropReason::TooBigForClient
                | DropReason::TooBigForPeer
                | DropReason::PathMtu
                | DropReason::QueueFull
        )
    }
}

/// Dropped packets, by [`DropReason`].
pub type Drops = Tally<DropReason>;

labels! {
    /// The transport a client reached the server on.
    TransportLabel {
        /// UDP.
        Udp = "udp",
        /// TCP.
        Tcp = "tcp",
        /// TLS over TCP.
        Tls = "tls",
        /// DTLS over UDP.
        Dtls = "dtls",
    }
}

impl From<Transport> for TransportLabel {
    fn from(t: Transport) -> Self {
        match t {
            Transport::Udp => TransportLabel::Udp,
            Transport::Tcp => TransportLabel::Tcp,
            Transport::Tls => TransportLabel::Tls,
            Transport::Dtls => TransportLabel::Dtls,
        }
    }
}

/// Relayed traffic, each way: payload bytes, without TURN framing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Datagrams (or ChannelData/Send messages) client → peer.
    pub to_peer_packets: u64,
    /// Payload bytes client → peer.
    pub to_peer_bytes: u64,
    /// Datagrams peer → client.
    pub to_client_packets: u64,
    /// Payload bytes peer → client.
    pub to_client_bytes: u64,
}

impl Traffic {
    /// Counts one datagram of `bytes` to the peer.
    pub fn to_peer(&mut self, bytes: usize) {
        self.to_peer_packets += 1;
        self.to_peer_bytes += bytes as u64;
    }

    /// Counts one datagram of `bytes` to the client.
    pub fn to_client(&mut self, bytes: usize) {
        self.to_client_packets += 1;
        self.to_client_bytes += bytes as u64;
    }
}

impl AddAssign for Traffic {
    fn add_assign(&mut self, o: Self) {
        self.to_peer_packets += o.to_peer_packets;
        self.to_peer_bytes += o.to_peer_bytes;
        self.to_client_packets += o.to_client_packets;
        self.to_client_bytes += o.to_client_bytes;
    }
}

/// Upper bounds (seconds) of the allocation duration histogram's buckets;
/// the last, `+Inf`, is implied. A WebRTC call lasts minutes to hours.
pub const DURATION_BUCKETS: [u64; 12] =
    [1, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400];

/// How long ended allocations lasted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DurationHistogram {
    /// Allocations per bucket (not cumulative): `buckets[i]` lasted at
    /// most `DURATION_BUCKETS[i]` s and more than the bound before; the
    /// last counts those longer than every bound.
    pub buckets: [u64; DURATION_BUCKETS.len() + 1],
    /// Sum of the durations, in milliseconds.
    pub sum_ms: u64,
}

impl DurationHistogram {
    /// Counts one duration.
    pub fn record(&mut self, lasted: Duration) {
        let i = DURATION_BUCKETS
            .iter()
            .position(|&b| lasted <= Duration::from_secs(b))
            .unwrap_or(DURATION_BUCKETS.len());
        self.buckets[i] += 1;
        self.sum_ms += u64::try_from(lasted.as_millis()).unwrap_or(u64::MAX);
    }

    /// Durations counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

impl AddAssign for DurationHistogram {
    fn add_assign(&mut self, o: Self) {
        for (a, b) in self.buckets.iter_mut().zip(o.buckets) {
            *a += b;
        }
        self.sum_ms += o.sum_ms;
    }
}

/// Per-shard counters. Plain integers: each shard owns its own, and the
/// metrics endpoint sums them, so the packet path never touches shared
/// memory. All are totals since the start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests received, by method (those dropped unanswered included).
    pub requests: Tally<RequestMethod>,
    /// Error responses sent, by method and code.
    pub errors: [Tally<ErrorCode>; RequestMethod::ALL.len()],
    /// Binding requests answered with a success, by transport.
    pub bindings: Tally<TransportLabel>,
    /// Requests whose credentials verified.
    pub auth_successes: u64,
    /// Requests whose credentials were refused, by reason.
    pub auth_failures: Tally<AuthFailure>,
    /// 401/438 challenges sent.
    pub challenges_sent: u64,
    /// Allocations created.
    pub allocations_created: u64,
    /// Allocations ended, by reason.
    pub allocations_ended: Tally<EndReason>,
    /// How long the ended allocations lasted.
    pub allocation_duration: DurationHistogram,
    /// Data relayed through the core (the sockets path; a fast path outside
    /// the core counts its own).
    pub relayed: Traffic,
    /// Requests and data refused because the peer policy forbids the peer
    /// (403, or data dropped).
    pub peers_refused: u64,
    /// Packets dropped without an answer, by reason.
    pub drops: Drops,
    /// RFC 6062 peer connections: opened by Connect.
    pub peer_connections_connected: u64,
    /// RFC 6062 peer connections: accepted from peers.
    pub peer_connections_accepted: u64,
}

impl Stats {
    /// Error responses for `method`, by code.
    pub fn errors(&self, method: RequestMethod) -> &Tally<ErrorCode> {
        &self.errors[method.index()]
    }

    /// All error responses.
    pub fn error_responses(&self) -> u64 {
        self.errors.iter().map(Tally::total).sum()
    }
}

impl AddAssign for Stats {
    fn add_assign(&mut self, o: Self) {
        self.requests += o.requests;
        for (a, b) in self.errors.iter_mut().zip(o.errors) {
            *a += b;
        }
        self.bindings += o.bindings;
        self.auth_successes += o.auth_successes;
        self.auth_failures += o.auth_failures;
        self.challenges_sent += o.challenges_sent;
        self.allocations_created += o.allocations_created;
        self.allocations_ended += o.allocations_ended;
        self.allocation_duration += o.allocation_duration;
        self.relayed += o.relayed;
        self.peers_refused += o.peers_refused;
        self.drops += o.drops;
        self.peer_connections_connected += o.peer_connections_connected;
        self.peer_connections_accepted += o.peer_connections_accepted;
    }
}
