//! What the relay tells its operators: counters summed over the workers
//! ([`Snapshot`]), the health of the workers, the live allocations, and the
//! surfaces that show them — Prometheus metrics ([`metrics`]), restund's
//! `turnstats` command port ([`restund`]), and the accounting log lines
//! ([`accounting`]).
//!
//! The workers keep their counters as plain integers in their own core
//! shard and [`ShellStats`]; nothing shared is touched per packet. A reader
//! asks every worker for its share through [`crate::runtime::RelayHandle`]
//! (the worker answers between two batches) and sums them here.

pub mod accounting;
pub mod metrics;
pub mod restund;

use std::net::SocketAddr;
use std::ops::AddAssign;
use std::time::{Duration, SystemTime};

use turnpike_core::Stats;
use turnpike_core::stats::{Label, Tally, TransportLabel};

/// Counters the shell keeps per worker, for what the core never sees
/// (connections, handshakes, queues). Summed like [`Stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShellStats {
    /// Client connections open now, by transport (TCP, TLS, DTLS).
    pub connections_open: Tally<TransportLabel>,
    /// Client connections accepted since the start, by transport.
    pub connections_accepted: Tally<TransportLabel>,
    /// Client connections refused by a limit (per source, in all,
    /// handshakes in progress), by transport.
    pub connections_refused: Tally<TransportLabel>,
    /// TLS and DTLS handshakes completed, by transport.
    pub handshakes: Tally<TransportLabel>,
    /// TLS and DTLS handshakes that failed or timed out, by transport.
    pub handshake_failures: Tally<TransportLabel>,
}

impl AddAssign for ShellStats {
    fn add_assign(&mut self, o: Self) {
        self.connections_open += o.connections_open;
        self.connections_accepted += o.connections_accepted;
        self.connections_refused += o.connections_refused;
        self.handshakes += o.handshakes;
        self.handshake_failures += o.handshake_failures;
    }
}

/// Live allocations by what they are, counted when asked (a scan of the
/// shard's table, never kept per packet).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocationGauges {
    /// `[client transport][relay family: 0 IPv4, 1 IPv6][relay kind: 0 UDP, 1 TCP]`.
    /// A dual-stack allocation counts once per family.
    pub by_kind: [[[u64; 2]; 2]; TransportLabel::ALL.len()],
    /// Allocations, each counted once.
    pub total: u64,
    /// Channels bound now.
    pub channels: u64,
    /// Permissions installed now.
    pub permissions: u64,
}

impl AddAssign for AllocationGauges {
    fn add_assign(&mut self, o: Self) {
        for (a, b) in self.by_kind.iter_mut().zip(o.by_kind) {
            for (a, b) in a.iter_mut().zip(b) {
                for (a, b) in a.iter_mut().zip(b) {
                    *a += b;
                }
            }
        }
        self.total += o.total;
        self.channels += o.channels;
        self.permissions += o.permissions;
    }
}

/// One worker's share of a [`Snapshot`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerShare {
    /// Its core shard's counters.
    pub core: Stats,
    /// Its shell's counters.
    pub shell: ShellStats,
    /// Its live allocations.
    pub allocations: AllocationGauges,
}

impl AddAssign for WorkerShare {
    fn add_assign(&mut self, o: Self) {
        self.core += o.core;
        self.shell += o.shell;
        self.allocations += o.allocations;
    }
}

/// Everything the metrics and `turnstats` report, read at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The workers' shares, summed.
    pub workers: WorkerShare,
    /// Workers running.
    pub worker_count: usize,
    /// Workers that did not answer in time (a stuck worker: `/healthz`
    /// fails). Their shares are missing from [`Snapshot::workers`].
    pub workers_silent: usize,
    /// Datagrams and bytes the XDP fast path relayed, if it runs.
    pub fast_path: Option<FastPathStats>,
    /// The credential cache and database, if TURN is on.
    pub credentials: Option<CredentialStats>,
    /// RFC 6062 peer connections open now (all workers).
    pub peer_connections_open: u64,
    /// Whether the server is draining (refusing new allocations).
    pub draining: bool,
    /// Refused certificate reloads (a renewal that did not parse or match).
    pub certificate_reloads_refused: u64,
    /// The configuration in service and its reloads.
    pub config: ConfigFacts,
    /// Heartbeats to the database that failed, with `fleet.register`.
    pub heartbeat_failures: Option<u64>,
}

/// The configuration in service: which file, and how its reloads went.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ConfigFacts {
    /// SHA-256 of the config file's bytes as last applied (at start or by
    /// a reload), lower-case hex: what `sha256sum` prints for it.
    pub sha256: String,
    /// Reloads applied (in whole or with settings that need a restart
    /// kept) since the start.
    pub reloads_applied: u64,
    /// Reloads refused (the file did not parse or validate) since the
    /// start.
    pub reloads_refused: u64,
}

/// Whether a reload was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReloadResult {
    /// The new configuration is in service (settings that need a restart
    /// excepted: see the warnings).
    Applied,
    /// The file did not parse or validate; the running configuration
    /// stays.
    Refused,
}

/// What a reload did, as `POST /v1/reload` and `turnpike reload` report it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ReloadReport {
    /// Applied or refused.
    pub result: ReloadResult,
    /// Why it was refused (one line); `None` when applied.
    pub error: Option<String>,
    /// One line per thing not applied: a changed setting that needs a
    /// restart, a `log.level` that `RUST_LOG` overrides, a certificate
    /// renewal refused, a worker that did not answer.
    pub warnings: Vec<String>,
    /// The settings applied (keys, never values); empty when refused.
    pub changed: Vec<String>,
    /// The configuration in service after it: the file's SHA-256.
    pub config_sha256: String,
}

impl Snapshot {
    /// Datagrams and bytes relayed each way by every path (sockets and the
    /// XDP fast path).
    pub fn relayed(&self) -> turnpike_core::stats::Traffic {
        let mut t = self.workers.core.relayed;
        if let Some(f) = &self.fast_path {
            t += f.relayed;
        }
        t
    }
}

/// The XDP fast path's own counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FastPathStats {
    /// Relayed in the driver, each way.
    pub relayed: turnpike_core::stats::Traffic,
    /// Packets of a route it left to the sockets.
    pub passed: u64,
    /// Packets it dropped over their allocation's bandwidth cap.
    pub capped: u64,
    /// Routes installed now.
    pub routes: u64,
    /// Routes it can hold per address family.
    pub capacity: u64,
}

/// The shared credential cache and the database behind it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CredentialStats {
    /// Lookups answered from the cache.
    pub cache_hits: u64,
    /// Lookups that went to the database.
    pub cache_misses: u64,
    /// Database lookup latencies.
    pub lookup_seconds: LatencyHistogram,
    /// Whether the last database call succeeded.
    pub database_up: bool,
    /// Since when the database has been unreachable, if it is.
    pub down_since: Option<SystemTime>,
}

/// Upper bounds (seconds) of the database latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 10] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// Database call latencies (non-cumulative buckets, the last `+Inf`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Calls per bucket.
    pub buckets: [u64; LATENCY_BUCKETS.len() + 1],
    /// Sum of the latencies, in microseconds.
    pub sum_us: u64,
}

impl LatencyHistogram {
    /// Counts one call.
    pub fn record(&mut self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i] += 1;
        self.sum_us += u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    }
}

/// One live allocation, as `GET /v1/allocations` lists it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AllocationInfo {
    /// Its id: unique for the life of the process (16 hex digits).
    pub id: String,
    /// The USERNAME it was made with.
    pub user: String,
    /// The realm.
    pub realm: String,
    /// The client's address.
    pub client: SocketAddr,
    /// The client's transport: udp, tcp, tls or dtls.
    pub transport: &'static str,
    /// Relayed addresses (one per family).
    pub relayed: Vec<SocketAddr>,
    /// udp or tcp (RFC 6062).
    pub relay_kind: &'static str,
    /// When it was made (RFC 3339, UTC).
    pub created: String,
    /// Seconds of lifetime left.
    pub lifetime_left: u64,
    /// Peer IPs with a permission.
    pub permissions: Vec<std::net::IpAddr>,
    /// Bound channels: number and peer.
    pub channels: Vec<ChannelInfo>,
    /// Relayed traffic, each way (the XDP fast path's included).
    pub to_peer_packets: u64,
    /// Payload bytes to peers.
    pub to_peer_bytes: u64,
    /// Datagrams to the client.
    pub to_client_packets: u64,
    /// Payload bytes to the client.
    pub to_client_bytes: u64,
}

/// A channel of an [`AllocationInfo`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ChannelInfo {
    /// The channel number.
    pub number: u16,
    /// The peer.
    pub peer: SocketAddr,
}

/// A boxed future, for the object-safe [`Relay`].
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Which allocations a query or a kick is about.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllocationFilter {
    /// Only this user's: the whole USERNAME, or for time-limited
    /// credentials the user id after the expiry (`1767225600:alice` is
    /// `alice`'s).
    pub user: Option<String>,
    /// Only the one with this id.
    pub id: Option<String>,
}

/// Whether the workers turn and the server takes new allocations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// Workers running.
    pub workers: usize,
    /// Workers that did not answer within the health deadline.
    pub workers_silent: usize,
    /// Start-up finished (every listener bound).
    pub started: bool,
    /// The server refuses new allocations while draining.
    pub draining: bool,
    /// The credential database has been unreachable for longer than
    /// `database.grace_period` (new users cannot be authenticated).
    pub database_down: bool,
    /// Live allocations, each counted once (of the workers that answered).
    pub allocations: u64,
    /// The allocations it takes at most (`turn.total_quota`); `None`: no
    /// limit.
    pub capacity: Option<u64>,
}

impl Health {
    /// `/healthz`: the process runs and every worker answered.
    pub fn alive(&self) -> bool {
        self.workers_silent == 0
    }

    /// `/readyz`: alive, started, not draining, database reachable.
    pub fn ready(&self) -> bool {
        self.alive() && self.started && !self.draining && !self.database_down
    }
}

/// A route of the ICE-server endpoint ([`crate::ice`]), as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IceRoute {
    /// `/ice-servers` (RTCConfiguration).
    IceServers,
    /// `/calls/config/v2` (Wire).
    CallsConfigV2,
    /// `/calls/config` (Wire's v1).
    CallsConfig,
}

impl IceRoute {
    /// How many routes there are.
    pub const COUNT: usize = 3;
    /// Every route, in index order.
    pub const ALL: [IceRoute; IceRoute::COUNT] = [
        IceRoute::IceServers,
        IceRoute::CallsConfigV2,
        IceRoute::CallsConfig,
    ];

    /// Its position in counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            IceRoute::IceServers => "ice_servers",
            IceRoute::CallsConfigV2 => "calls_config_v2",
            IceRoute::CallsConfig => "calls_config",
        }
    }
}

/// How an ICE-server request ended, as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IceOutcome {
    /// Relays and credentials handed out.
    Served,
    /// The caller was not admitted (401).
    Unauthorized,
    /// The caller asked too often (429).
    RateLimited,
    /// A bad `limit` or user id (400).
    BadRequest,
    /// No relay or no secret to answer with (503).
    Unavailable,
}

impl IceOutcome {
    /// How many outcomes there are.
    pub const COUNT: usize = 5;
    /// Every outcome, in index order.
    pub const ALL: [IceOutcome; IceOutcome::COUNT] = [
        IceOutcome::Served,
        IceOutcome::Unauthorized,
        IceOutcome::RateLimited,
        IceOutcome::BadRequest,
        IceOutcome::Unavailable,
    ];

    /// Its position in counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            IceOutcome::Served => "served",
            IceOutcome::Unauthorized => "unauthorized",
            IceOutcome::RateLimited => "rate_limited",
            IceOutcome::BadRequest => "bad_request",
            IceOutcome::Unavailable => "unavailable",
        }
    }
}

/// Relay states of [`IceFacts::relays`], as metric label values.
pub const FLEET_STATES: [&str; 4] = ["healthy", "unhealthy", "unknown", "draining"];

/// What `/metrics` shows of the ICE-server endpoint and its fleet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IceFacts {
    /// Requests by route and outcome.
    pub requests: [[u64; IceOutcome::COUNT]; IceRoute::COUNT],
    /// Relays known, by state ([`FLEET_STATES`]).
    pub relays: [u64; 4],
    /// Every relay is unhealthy, so all are served.
    pub all_unhealthy: bool,
    /// Registered relays listed from the database (`discovery.database`).
    pub registered_relays: u64,
    /// DNS SRV lookup rounds.
    pub dns_lookups: u64,
    /// Those that failed (the last good set was kept).
    pub dns_failures: u64,
}

/// Whether the server drains, and what is left.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DrainState {
    /// New allocations are refused ([`turnpike_core::drain`]).
    pub draining: bool,
    /// Live allocations, in the workers that answered.
    pub allocations: u64,
    /// Workers that did not answer in time (their allocations are not
    /// counted, so the server is not known to be empty).
    pub workers_silent: usize,
}

impl DrainState {
    /// Draining, and no allocation left in any worker.
    pub fn drained(&self) -> bool {
        self.draining && self.allocations == 0 && self.workers_silent == 0
    }
}

/// What the admin surfaces ask of the running relay. The runtime
/// implements it by asking each worker in turn (a message to its mailbox,
/// answered between two batches), so a query never takes a lock the
/// packet path takes; tests implement it with fixed answers.
pub trait Relay: Send + Sync + 'static {
    /// The counters, summed over the workers.
    fn snapshot(&self) -> BoxFuture<'_, Snapshot>;
    /// Liveness and readiness.
    fn health(&self) -> BoxFuture<'_, Health>;
    /// Live allocations matching `filter`, ordered by id.
    fn allocations(&self, filter: AllocationFilter) -> BoxFuture<'_, Vec<AllocationInfo>>;
    /// Ends the allocations matching `filter` (reason `kicked`); with a
    /// user filter, also refuses that user new allocations (403) for
    /// `database.cache_ttl`. Returns how many ended.
    fn kick(&self, filter: AllocationFilter) -> BoxFuture<'_, usize>;
    /// Starts (`true`) or stops (`false`) draining: new Allocates are
    /// refused (300 to an alternate, else 508) while existing allocations
    /// keep working; `/readyz` fails meanwhile. Returns the state once
    /// every worker has applied it.
    fn set_draining(&self, on: bool) -> BoxFuture<'_, DrainState>;
    /// Whether the server drains, and the allocations left.
    fn drain_state(&self) -> BoxFuture<'_, DrainState>;
    /// Reads the configuration again and applies what can change while
    /// running (see [`crate::runtime`]'s reload).
    fn reload(&self) -> BoxFuture<'_, ReloadReport>;
}
