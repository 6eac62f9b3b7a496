//! The TURN load generator behind `turnpike bench`.
//!
//! [`run`] opens N authenticated allocations, gives each a destination, pushes
//! relayed traffic through them for a while and reports what came out:
//!
//! 1. **Allocate** (measured: allocations/s): one UDP socket per allocation on
//!    an ephemeral port, each running the full 401 → signed Allocate exchange,
//!    at most `setup_concurrency` at a time.
//! 2. **Bind**: in echo mode every allocation binds channel 0x4000 to the
//!    generator's own echo peer (one peer socket per worker thread); in
//!    client-to-client mode allocation *i* binds 0x4000 to allocation
//!    *i+1*'s relayed address and 0x4001 to *i−1*'s, so traffic flows as
//!    ChannelData both ways. With `send_indications`, CreatePermission
//!    replaces ChannelBind and data goes out in Send indications.
//! 3. **Traffic**: worker threads (see `worker.rs`) send ChannelData or Send
//!    indications of `payload_size` bytes, either paced at an aggregate rate
//!    or closed-loop with a window per allocation, for warm-up + duration,
//!    then wait `drain` for stragglers. Each payload carries a sequence
//!    number and a send timestamp: loss, reordering and latency (round trip
//!    in echo mode, one way in client-to-client mode) are measured per
//!    message, latency into an HDR histogram.
//! 4. **Release**: Refresh with LIFETIME 0 for every allocation, so repeated
//!    runs against one server do not pile up allocations.
//!
//! With `observe_pid` (a server on this host), the report adds the server's
//! VmRSS before and after set-up and its CPU time during the measurement
//! window, from `/proc`.
//!
//! # Keeping the generator out of the way
//!
//! The generator crosses the kernel as often as the server does, so it must
//! spend less per datagram: sockets are polled by `epoll` in a few threads
//! (not a task per socket), every receive and send is a batched
//! `recvmmsg`/`sendmmsg` (each allocation's share of a pacing tick goes out
//! in one call; the echo peer answers a whole batch in one call, in place),
//! and the per-message path does not allocate. The report includes the
//! generator's own CPU use: when it nears 100 % of its threads, the
//! generator, not the server, is the limit.
//!
//! Linux only.
//!
//! # Crate
//!
//! The generator was `turnpike_client::bench`; it is a crate of its own so
//! that the TURN client stays small and free of `unsafe` code: the
//! generator's system calls (`epoll`, `recvmmsg`/`sendmmsg`, `getrusage`,
//! `/proc`) are all in its `sys` module. It drives the sans-IO client
//! ([`turnpike_client::ClientTransaction`], [`turnpike_client::data`]) from
//! its own `epoll` loops, and [`TurnClient`] for set-up. `turnpike bench`
//! (in the `turnpike` binary) is its command line.

mod report;
mod sys;
pub mod tcp;
mod worker;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use turnpike_client::auth::{AuthState, Credentials};
use turnpike_client::client::TurnClient;
use turnpike_client::error::ClientError;
use turnpike_client::transaction::{AllocateParams, Allocated, RetransmitPolicy};
use turnpike_codec::AddressFamily;

pub use report::{
    BenchReport, ConfigReport, CpusReport, GeneratorReport, LatencyReport, ReleaseReport,
    ServerProcessReport, SetupReport, TrafficReport,
};

use worker::{Conn, Target, WorkerLoad, WorkerPlan, WorkerStats};

/// The channel each allocation sends on (and, client-to-client, the one
/// bound to the next allocation).
const CHANNEL_OUT: u16 = 0x4000;
/// Client-to-client: the channel bound to the previous allocation, so its
/// traffic arrives as ChannelData rather than Data indications.
const CHANNEL_IN: u16 = 0x4001;

/// Client transport addresses an allocation tries when the server answers
/// 437 (Allocation Mismatch), per RFC 8656 §7.4.
const ALLOCATE_ATTEMPTS: usize = 3;

/// Smallest payload: the measurement header.
pub const MIN_PAYLOAD: usize = worker::PAYLOAD_HEADER_LEN;
/// Largest payload (fits a UDP datagram with any TURN framing).
pub const MAX_PAYLOAD: usize = 65_000;

/// How messages are offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    /// A fixed aggregate rate in messages per second, spread evenly over the
    /// allocations (open loop: sending does not wait for answers).
    Paced {
        /// Messages per second, all allocations together.
        rate: u64,
    },
    /// Closed loop: each allocation keeps `window` messages in flight and
    /// sends a new one whenever one arrives (the throughput the server
    /// sustains at that concurrency). A window that makes no progress for a
    /// second is refilled (its messages count as lost).
    ClosedLoop {
        /// Messages in flight per allocation.
        window: u32,
    },
}

/// Where relayed traffic goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerMode {
    /// To the generator's own UDP echo peer, which sends it back: each
    /// message crosses the relay twice and its round-trip time is measured.
    Echo,
    /// Allocation *i* sends to allocation *i+1*'s relayed address (a ring
    /// within each worker thread): each message crosses the relay once and
    /// its one-way latency is measured.
    ClientToClient,
}

/// Parameters of a run. [`BenchOptions::new`] fills in the defaults.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// The TURN server (UDP).
    pub server: SocketAddr,
    /// Long-term credential username (the realm comes from the 401).
    pub username: String,
    /// Its password.
    pub password: String,
    /// Allocations to open. Default 100.
    pub allocations: usize,
    /// Allocate transactions in flight at once during set-up. Default 64.
    pub setup_concurrency: usize,
    /// Application bytes per message, at least [`MIN_PAYLOAD`]. Default 100.
    pub payload_size: usize,
    /// Paced or closed-loop. Default paced at 10 000 msg/s.
    pub load: Load,
    /// Measured traffic time; zero skips traffic (set-up only, e.g. to
    /// measure memory per allocation). Default 10 s.
    pub duration: Duration,
    /// Traffic before the measurement starts (not counted). Default 1 s.
    pub warmup: Duration,
    /// Wait after the last send for messages still in flight. Default 500 ms.
    pub drain: Duration,
    /// Idle time between set-up and traffic (the server's memory is read at
    /// its end). Default 0.
    pub hold: Duration,
    /// Echo peer or client-to-client. Default echo.
    pub peer_mode: PeerMode,
    /// Send indications and CreatePermission instead of ChannelData and
    /// ChannelBind. Default false.
    pub send_indications: bool,
    /// Worker threads. Default 1 (the generator should use about one core).
    pub threads: usize,
    /// REQUESTED-ADDRESS-FAMILY for the relayed addresses. Default none.
    pub requested_family: Option<AddressFamily>,
    /// Requested allocation lifetime in seconds. Default: the server's.
    pub lifetime: Option<u32>,
    /// Address the echo peer and the client sockets bind to. Default: the
    /// local address the kernel picks to reach the server.
    pub local_ip: Option<IpAddr>,
    /// Retransmission timing of set-up, refresh and release transactions.
    pub retransmit: RetransmitPolicy,
    /// A server process on this host to read CPU time and memory from.
    pub observe_pid: Option<u32>,
    /// The CPUs the server runs on (and its network receive work is steered
    /// to): how busy they were is reported per message, kernel work
    /// included. Empty: not reported.
    pub server_cpus: Vec<usize>,
    /// Delete the allocations at the end. Default true.
    pub release: bool,
    /// How often allocations, channels and permissions are refreshed during
    /// traffic. Default: half of the shortest of the granted allocation
    /// lifetime and the 300 s permission lifetime.
    pub refresh_interval: Option<Duration>,
}

impl BenchOptions {
    /// Options with the defaults listed on each field.
    pub fn new(
        server: SocketAddr,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        BenchOptions {
            server,
            username: username.into(),
            password: password.into(),
            allocations: 100,
            setup_concurrency: 64,
            payload_size: 100,
            load: Load::Paced { rate: 10_000 },
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            drain: Duration::from_millis(500),
            hold: Duration::ZERO,
            peer_mode: PeerMode::Echo,
            send_indications: false,
            threads: 1,
            requested_family: None,
            lifetime: None,
            local_ip: None,
            retransmit: RetransmitPolicy::default(),
            observe_pid: None,
            server_cpus: Vec::new(),
            release: true,
            refresh_interval: None,
        }
    }

    fn validate(&self) -> Result<(), BenchError> {
        let bad = |m: String| Err(BenchError::InvalidOptions(m));
        if self.allocations == 0 {
            return bad("allocations must be at least 1".into());
        }
        if self.allocations > u32::MAX as usize {
            return bad("too many allocations".into());
        }
        if self.peer_mode == PeerMode::ClientToClient && self.allocations < 2 {
            return bad("client-to-client mode needs at least 2 allocations".into());
        }
        if !(MIN_PAYLOAD..=MAX_PAYLOAD).contains(&self.payload_size) {
            return bad(format!(
                "payload size must be {MIN_PAYLOAD}..={MAX_PAYLOAD} bytes (it carries a {MIN_PAYLOAD}-byte sequence/timestamp header)"
            ));
        }
        match self.load {
            Load::Paced { rate: 0 } => return bad("rate must be at least 1 msg/s".into()),
            Load::ClosedLoop { window: 0 } => return bad("window must be at least 1".into()),
            _ => {}
        }
        if self.threads == 0 {
            return bad("threads must be at least 1".into());
        }
        if self.setup_concurrency == 0 {
            return bad("setup concurrency must be at least 1".into());
        }
        if self.retransmit.max_transmissions == 0 || self.retransmit.initial_rto.is_zero() {
            return bad(
                "retransmission policy needs at least one transmission and a nonzero RTO".into(),
            );
        }
        Ok(())
    }
}

/// Why a run could not produce a report.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The options are inconsistent.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// A local socket or system call failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// No allocation could be opened (the first error says why).
    #[error("no allocation succeeded: {0}")]
    Setup(String),
    /// A worker thread failed.
    #[error("worker failed: {0}")]
    Worker(String),
}

/// An allocation between set-up phases.
struct Opened {
    client: TurnClient,
    allocated: Allocated,
}

/// Runs the load described by `options` and reports the results.
///
/// Needs a tokio runtime with I/O and time enabled (a current-thread runtime
/// is enough and keeps the generator's footprint small); the traffic phase
/// runs on dedicated threads via `spawn_blocking`. Raises the process's
/// soft open-file limit when the allocations need more descriptors.
///
/// # Errors
///
/// [`BenchError`] when the options are invalid, no allocation succeeds, or
/// local resources fail. Partial failures (some allocations refused, loss)
/// are in the report, not errors.
pub async fn run(options: BenchOptions) -> Result<BenchReport, BenchError> {
    options.validate()?;
    let o = &options;
    sys::raise_fd_limit(o.allocations as u64 + 64)?;
    let local_ip = match o.local_ip {
        Some(ip) => ip,
        None => route_source(o.server)?,
    };
    let credentials = Credentials::new(o.username.clone(), o.password.clone());
    let rss_before = o.observe_pid.and_then(|pid| sys::vm_rss_kib(pid).ok());

    // 1. Allocate.
    let gen_cpu0 = sys::own_cpu_time();
    let srv_cpu0 = o
        .observe_pid
        .and_then(|pid| sys::process_cpu_time(pid).ok());
    let t0 = Instant::now();
    let (opened, alloc_errors, retries_437) = allocate_all(o, local_ip, &credentials).await;
    let allocate_secs = t0.elapsed().as_secs_f64();
    let setup_gen_cpu = sys::own_cpu_time().saturating_sub(gen_cpu0);
    let setup_srv_cpu = match (srv_cpu0, o.observe_pid) {
        (Some(before), Some(pid)) => sys::process_cpu_time(pid)
            .ok()
            .map(|after| after.saturating_sub(before)),
        _ => None,
    };
    let mut first_error = alloc_errors.first().map(|e| e.to_string());
    if opened.is_empty() {
        return Err(BenchError::Setup(
            first_error.unwrap_or_else(|| "unknown".into()),
        ));
    }
    let allocated = opened.len();

    // 2. Peers and bindings. Workers own contiguous runs of allocations.
    let threads = match o.peer_mode {
        PeerMode::Echo => o.threads.min(allocated),
        PeerMode::ClientToClient => o.threads.min(allocated / 2).max(1),
    };
    if o.peer_mode == PeerMode::ClientToClient && allocated < 2 {
        return Err(BenchError::Setup(format!(
            "only {allocated} allocation succeeded; client-to-client needs 2 ({})",
            first_error.unwrap_or_default()
        )));
    }
    let groups = split_evenly(opened, threads);
    let mut peers = Vec::new();
    if o.peer_mode == PeerMode::Echo {
        for _ in 0..groups.len() {
            peers.push(echo_peer_socket(local_ip)?);
        }
    }
    let t1 = Instant::now();
    let (groups, bind_failed, bind_error) = bind_all(o, groups, &peers).await?;
    let bound_at = Instant::now();
    let bind_secs = bound_at.duration_since(t1).as_secs_f64();
    if first_error.is_none() {
        first_error = bind_error;
    }
    let setup = SetupReport {
        allocated,
        failed: alloc_errors.len(),
        retried_437: retries_437,
        bind_failed,
        allocate_secs,
        allocations_per_sec: allocated as f64 / allocate_secs.max(1e-9),
        generator_cpu_percent: 100.0 * setup_gen_cpu.as_secs_f64() / allocate_secs.max(1e-9),
        bind_secs,
        first_error,
    };
    if !o.hold.is_zero() {
        tokio::time::sleep(o.hold).await;
    }
    let rss_after = o.observe_pid.and_then(|pid| sys::vm_rss_kib(pid).ok());

    // 3. Traffic.
    let min_lifetime = groups
        .iter()
        .flatten()
        .map(|c| c.lifetime)
        .min()
        .unwrap_or(600);
    let refresh_every = o.refresh_interval.unwrap_or_else(|| {
        // Permissions last 300 s (RFC 8656 §9), channels 600 s.
        Duration::from_secs(u64::from(min_lifetime.clamp(2, 300)) / 2)
    });
    let senders: usize = groups
        .iter()
        .flatten()
        .filter(|c| c.target.is_some())
        .count();
    let mut traffic = None;
    let mut generator = GeneratorReport {
        cpu_secs: 0.0,
        cpu_percent: 0.0,
        cpus: 0,
        cores_busy_percent: None,
    };
    let mut server_cpu = None;
    let (mut machine, mut server_cores) = (None, None);
    let mut groups = groups;
    if !o.duration.is_zero() {
        let (returned, stats, gen_report, window, srv, cpus) = run_traffic(
            o,
            groups,
            peers,
            senders,
            bound_at + refresh_every,
            refresh_every,
        )
        .await?;
        groups = returned;
        generator = gen_report;
        server_cpu = srv.map(|cpu| (cpu, window));
        traffic = Some(traffic_report(o, &stats));
        let sent = traffic.as_ref().map_or(0, |t| t.sent);
        let per_message = |mut c: CpusReport| {
            c.cpu_us_per_message = (sent > 0).then(|| c.busy_secs * 1e6 / sent as f64);
            c
        };
        machine = cpus.machine.map(per_message);
        server_cores = cpus.server.map(per_message);
    }

    // 4. Release.
    let release = if o.release {
        release_all(o, groups).await
    } else {
        ReleaseReport::default()
    };

    let server_process = o.observe_pid.map(|pid| {
        let sent = traffic.as_ref().map_or(0, |t| t.sent);
        ServerProcessReport {
            pid,
            rss_kib_before: rss_before,
            rss_kib_after_setup: rss_after,
            rss_kib_per_1000_allocations: match (rss_before, rss_after) {
                (Some(b), Some(a)) => Some((a as f64 - b as f64) * 1000.0 / allocated as f64),
                _ => None,
            },
            allocate_cpu_us_per_allocation: setup_srv_cpu
                .map(|c| c.as_secs_f64() * 1e6 / allocated as f64),
            cpu_secs: server_cpu.map(|(c, _)| c.as_secs_f64()),
            cpu_percent: server_cpu
                .map(|(c, w)| 100.0 * c.as_secs_f64() / w.as_secs_f64().max(1e-9)),
            cpu_us_per_message: server_cpu
                .filter(|_| sent > 0)
                .map(|(c, _)| c.as_secs_f64() * 1e6 / sent as f64),
        }
    });

    Ok(BenchReport {
        config: ConfigReport {
            server: o.server.to_string(),
            allocations: o.allocations,
            payload_bytes: o.payload_size,
            data_path: if o.send_indications {
                "send-indication"
            } else {
                "channel"
            },
            peer_mode: match o.peer_mode {
                PeerMode::Echo => "echo",
                PeerMode::ClientToClient => "client-to-client",
            },
            load: match o.load {
                Load::Paced { .. } => "paced",
                Load::ClosedLoop { .. } => "closed-loop",
            },
            target_rate: match o.load {
                Load::Paced { rate } => Some(rate),
                Load::ClosedLoop { .. } => None,
            },
            window: match o.load {
                Load::Paced { .. } => None,
                Load::ClosedLoop { window } => Some(window),
            },
            threads,
            duration_secs: o.duration.as_secs_f64(),
            warmup_secs: o.warmup.as_secs_f64(),
        },
        setup,
        traffic,
        generator,
        server_process,
        machine,
        server_cores,
        release,
    })
}

/// The local address the kernel would use to reach `server` (no packet is
/// sent: connecting a UDP socket only picks a route).
fn route_source(server: SocketAddr) -> io::Result<IpAddr> {
    let probe = StdUdpSocket::bind(unspecified(server))?;
    probe.connect(server)?;
    Ok(probe.local_addr()?.ip())
}

fn unspecified(like: SocketAddr) -> SocketAddr {
    if like.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    }
}

/// A nonblocking client socket on an ephemeral port, connected to the server.
fn client_socket(local_ip: IpAddr, server: SocketAddr) -> io::Result<StdUdpSocket> {
    let s = StdUdpSocket::bind((local_ip, 0))?;
    s.connect(server)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// The echo peer of one worker: large buffers, since it absorbs the
/// worker's whole outbound rate on one socket.
fn echo_peer_socket(local_ip: IpAddr) -> io::Result<StdUdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr = SocketAddr::new(local_ip, 0);
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    sys::set_buffer(&s, true, 16 << 20);
    sys::set_buffer(&s, false, 16 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

async fn allocate_all(
    o: &BenchOptions,
    local_ip: IpAddr,
    credentials: &Credentials,
) -> (Vec<Opened>, Vec<ClientError>, usize) {
    let limit = Arc::new(Semaphore::new(o.setup_concurrency));
    let mut set = JoinSet::new();
    let params = AllocateParams {
        family: o.requested_family,
        lifetime: o.lifetime,
        dont_fragment: false,
    };
    let mut results: Vec<Option<Result<Opened, ClientError>>> =
        (0..o.allocations).map(|_| None).collect();
    for i in 0..o.allocations {
        // Acquiring before spawning bounds both concurrency and task count.
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let (server, policy, credentials) = (o.server, o.retransmit, credentials.clone());
        set.spawn(async move {
            let _permit = permit;
            // RFC 8656 §7.4: a 437 means the server still holds state for
            // this 5-tuple (coturn keeps it for a while after a deallocation,
            // so a previous run's ports answer 437); the client retries from
            // other ports, up to three in all. The refused sockets stay open
            // until the end so the kernel cannot hand the same port back.
            let mut refused = Vec::new();
            let result = loop {
                let attempt = async {
                    let socket = UdpSocket::from_std(client_socket(local_ip, server)?)?;
                    let mut client =
                        TurnClient::from_socket(socket, AuthState::new(credentials.clone()))?;
                    client.set_retransmit_policy(policy);
                    match client.allocate(params).await {
                        Ok(allocated) => Ok(Ok(Opened { client, allocated })),
                        Err(e) if e.error_code() == Some(437) => Ok(Err((client, e))),
                        Err(e) => Err(e),
                    }
                }
                .await;
                match attempt {
                    Ok(Err((client, e))) => {
                        if refused.len() + 1 >= ALLOCATE_ATTEMPTS {
                            break Err(e);
                        }
                        refused.push(client);
                    }
                    Ok(Ok(opened)) => break Ok(opened),
                    Err(e) => break Err(e),
                }
            };
            (i, result, refused.len())
        });
    }
    let mut retries = 0;
    while let Some(joined) = set.join_next().await {
        if let Ok((i, r, refused)) = joined {
            results[i] = Some(r);
            retries += refused;
        }
    }
    let mut opened = Vec::new();
    let mut errors = Vec::new();
    // Keep allocation order, so the client-to-client ring follows it.
    for r in results.into_iter().flatten() {
        match r {
            Ok(x) => opened.push(x),
            Err(e) => errors.push(e),
        }
    }
    (opened, errors, retries)
}

/// Splits `items` into `parts` contiguous runs of near-equal length.
fn split_evenly<T>(items: Vec<T>, parts: usize) -> Vec<Vec<T>> {
    let parts = parts.max(1);
    let n = items.len();
    let mut out: Vec<Vec<T>> = (0..parts).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        out[i * parts / n.max(1)].push(item);
    }
    out.retain(|g| !g.is_empty());
    out
}

/// Binds every allocation to its destination(s); returns the worker groups
/// as [`Conn`]s, the number of allocations whose binding failed, and the
/// first binding error.
async fn bind_all(
    o: &BenchOptions,
    groups: Vec<Vec<Opened>>,
    peers: &[StdUdpSocket],
) -> Result<(Vec<Vec<Conn>>, usize, Option<String>), BenchError> {
    // Work out each allocation's destinations first.
    struct Plan {
        opened: Opened,
        id: u32,
        target: Target,
        channels: Vec<(u16, SocketAddr)>,
        permissions: Vec<SocketAddr>,
    }
    let mut planned: Vec<Vec<Plan>> = Vec::new();
    let mut next_id = 0u32;
    for (g, group) in groups.into_iter().enumerate() {
        let relays: Vec<SocketAddr> = group.iter().map(|x| x.allocated.relayed).collect();
        let n = relays.len();
        let peer_addr = match peers.get(g) {
            Some(p) => Some(p.local_addr()?),
            None => None,
        };
        let mut plans = Vec::new();
        for (i, opened) in group.into_iter().enumerate() {
            let (target, channels, permissions) = match (o.peer_mode, peer_addr) {
                (PeerMode::Echo, Some(peer)) => (
                    Target {
                        channel: CHANNEL_OUT,
                        peer,
                    },
                    vec![(CHANNEL_OUT, peer)],
                    vec![peer],
                ),
                _ => {
                    let next = relays[(i + 1) % n];
                    let prev = relays[(i + n - 1) % n];
                    let mut channels = vec![(CHANNEL_OUT, next)];
                    if prev != next {
                        channels.push((CHANNEL_IN, prev));
                    }
                    let mut permissions = vec![next];
                    if prev.ip() != next.ip() {
                        permissions.push(prev);
                    }
                    (
                        Target {
                            channel: CHANNEL_OUT,
                            peer: next,
                        },
                        channels,
                        permissions,
                    )
                }
            };
            plans.push(Plan {
                opened,
                id: next_id,
                target,
                channels: if o.send_indications {
                    Vec::new()
                } else {
                    channels
                },
                permissions: if o.send_indications {
                    permissions
                } else {
                    Vec::new()
                },
            });
            next_id += 1;
        }
        planned.push(plans);
    }

    // Then run the bindings, concurrency-limited.
    let limit = Arc::new(Semaphore::new(o.setup_concurrency));
    let mut set = JoinSet::new();
    let group_sizes: Vec<usize> = planned.iter().map(Vec::len).collect();
    for (g, plans) in planned.into_iter().enumerate() {
        for (i, mut plan) in plans.into_iter().enumerate() {
            let Ok(permit) = limit.clone().acquire_owned().await else {
                break;
            };
            set.spawn(async move {
                let _permit = permit;
                let client = &mut plan.opened.client;
                let mut result = Ok(());
                for &(channel, peer) in &plan.channels {
                    result = client.channel_bind(channel, peer).await;
                    if result.is_err() {
                        break;
                    }
                }
                if result.is_ok() && !plan.permissions.is_empty() {
                    result = client.create_permission(&plan.permissions).await;
                }
                (g, i, plan, result)
            });
        }
    }
    let mut slots: Vec<Vec<Option<Conn>>> = group_sizes
        .iter()
        .map(|&n| (0..n).map(|_| None).collect())
        .collect();
    let mut failed = 0;
    let mut first_error = None;
    while let Some(joined) = set.join_next().await {
        let (g, i, plan, result) = joined.map_err(|e| BenchError::Worker(e.to_string()))?;
        let ok = match result {
            Ok(()) => true,
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("bind: {e}"));
                false
            }
        };
        let (socket, auth) = plan.opened.client.into_parts();
        slots[g][i] = Some(Conn {
            socket: socket.into_std()?,
            auth,
            id: plan.id,
            lifetime: plan.opened.allocated.lifetime,
            target: ok.then_some(plan.target),
            channels: plan.channels,
            permissions: plan.permissions,
        });
    }
    let groups = slots
        .into_iter()
        .map(|g| g.into_iter().flatten().collect::<Vec<_>>())
        .collect();
    Ok((groups, failed, first_error))
}

type TrafficOutcome = (
    Vec<Vec<Conn>>,
    WorkerStats,
    GeneratorReport,
    Duration,
    Option<Duration>,
    WindowCpus,
);

/// Runs the workers; returns the allocations (for release), the merged
/// stats, the generator's CPU use, the wall time of the measurement window
/// plus drain, the server's CPU time over that window, and how busy the
/// machine's and the server's CPUs were.
async fn run_traffic(
    o: &BenchOptions,
    groups: Vec<Vec<Conn>>,
    peers: Vec<StdUdpSocket>,
    senders: usize,
    first_refresh: Instant,
    refresh_every: Duration,
) -> Result<TrafficOutcome, BenchError> {
    let base = Instant::now();
    // A short lead time so every worker is in its loop when traffic starts.
    let start = base + Duration::from_millis(50);
    let warmup_end = start + o.warmup;
    let stop = warmup_end + o.duration;
    let drain_end = stop + o.drain;
    let mut handles = Vec::new();
    let mut peers = peers.into_iter();
    for group in groups {
        let group_senders = group.iter().filter(|c| c.target.is_some()).count();
        let load = match o.load {
            Load::Paced { rate } => {
                WorkerLoad::Paced(rate as f64 * group_senders as f64 / senders.max(1) as f64)
            }
            Load::ClosedLoop { window } => WorkerLoad::ClosedLoop(window),
        };
        let plan = WorkerPlan {
            payload_len: o.payload_size,
            send_indications: o.send_indications,
            load,
            base,
            start,
            warmup_end,
            stop,
            drain_end,
            first_refresh,
            refresh_every,
            retransmit: o.retransmit,
            stall_timeout: Duration::from_secs(1),
        };
        let peer = if o.peer_mode == PeerMode::Echo {
            peers.next()
        } else {
            None
        };
        handles.push(tokio::task::spawn_blocking(move || {
            let mut group = group;
            let result = worker::run(&plan, &mut group, peer.as_ref());
            (group, result)
        }));
    }

    // Sample CPU times at the edges of the measurement window.
    let cpus = sys::allowed_cpus();
    let all_cpus = sys::online_cpus();
    tokio::time::sleep_until(warmup_end.into()).await;
    let idle0 = sys::cpu_idle(&cpus);
    let machine_idle0 = sys::cpu_idle(&all_cpus);
    let server_idle0 = sys::cpu_idle(&o.server_cpus);
    let gen0 = sys::own_cpu_time();
    let srv0 = o
        .observe_pid
        .and_then(|pid| sys::process_cpu_time(pid).ok());
    let w0 = Instant::now();
    tokio::time::sleep_until(drain_end.into()).await;
    let gen1 = sys::own_cpu_time();
    let idle1 = sys::cpu_idle(&cpus);
    let machine_idle1 = sys::cpu_idle(&all_cpus);
    let server_idle1 = sys::cpu_idle(&o.server_cpus);
    let srv1 = o
        .observe_pid
        .and_then(|pid| sys::process_cpu_time(pid).ok());
    let window = w0.elapsed();

    let mut groups = Vec::new();
    let mut stats = WorkerStats::new();
    for h in handles {
        let (group, result) = h.await.map_err(|e| BenchError::Worker(e.to_string()))?;
        let s = result.map_err(|e| BenchError::Worker(e.to_string()))?;
        stats.merge(&s);
        groups.push(group);
    }
    let server = match (srv0, srv1) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let cores_busy = match (idle0, idle1) {
        (Some(i0), Some(i1)) if !cpus.is_empty() => {
            let capacity = window.as_secs_f64() * cpus.len() as f64;
            let idle = i1.saturating_sub(i0).as_secs_f64();
            Some((100.0 * (1.0 - idle / capacity.max(1e-9))).clamp(0.0, 100.0))
        }
        _ => None,
    };
    let generator = GeneratorReport {
        cpu_secs: gen1.saturating_sub(gen0).as_secs_f64(),
        cpu_percent: 100.0 * gen1.saturating_sub(gen0).as_secs_f64()
            / window.as_secs_f64().max(1e-9),
        cpus: cpus.len(),
        cores_busy_percent: cores_busy,
    };
    let cpus = WindowCpus {
        machine: busy(&all_cpus, machine_idle0, machine_idle1, window),
        server: busy(&o.server_cpus, server_idle0, server_idle1, window),
    };
    Ok((groups, stats, generator, window, server, cpus))
}

fn traffic_report(o: &BenchOptions, s: &WorkerStats) -> TrafficReport {
    let secs = o.duration.as_secs_f64().max(1e-9);
    let lost = s.sent.saturating_sub(s.received);
    let h = &s.latency;
    let us = |ns: u64| ns as f64 / 1000.0;
    let latency_us = if h.is_empty() {
        LatencyReport::default()
    } else {
        LatencyReport {
            min: us(h.min()),
            mean: h.mean() / 1000.0,
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        }
    };
    TrafficReport {
        measured_secs: secs,
        sent: s.sent,
        received: s.received,
        lost,
        loss_percent: if s.sent == 0 {
            0.0
        } else {
            100.0 * lost as f64 / s.sent as f64
        },
        reordered: s.reordered,
        duplicates: s.duplicates,
        sent_per_sec: s.sent as f64 / secs,
        received_per_sec: s.received as f64 / secs,
        bytes_sent_per_sec: s.bytes_sent as f64 / secs,
        bytes_received_per_sec: s.bytes_received as f64 / secs,
        send_errors: s.send_errors,
        recv_errors: s.recv_errors,
        invalid: s.invalid,
        echoed: s.echoed,
        echo_drops: s.echo_drops,
        stall_resets: s.stall_resets,
        refreshes_ok: s.maintenance_ok,
        refreshes_failed: s.maintenance_failed,
        latency_kind: match o.peer_mode {
            PeerMode::Echo => "round-trip",
            PeerMode::ClientToClient => "one-way",
        },
        latency_us,
        first_error: s.first_error.clone(),
    }
}

/// Deletes every allocation (Refresh, LIFETIME 0), concurrency-limited.
async fn release_all(o: &BenchOptions, groups: Vec<Vec<Conn>>) -> ReleaseReport {
    let limit = Arc::new(Semaphore::new(o.setup_concurrency));
    let mut set = JoinSet::new();
    for conn in groups.into_iter().flatten() {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let policy = o.retransmit;
        set.spawn(async move {
            let _permit = permit;
            let socket = UdpSocket::from_std(conn.socket)?;
            let mut client = TurnClient::from_socket(socket, conn.auth)?;
            client.set_retransmit_policy(policy);
            client.refresh(0).await
        });
    }
    let mut report = ReleaseReport::default();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(_)) => report.released += 1,
            _ => report.failed += 1,
        }
    }
    report
}

/// Busy time of the machine's and the server's CPUs over the window.
struct WindowCpus {
    machine: Option<CpusReport>,
    server: Option<CpusReport>,
}

/// How busy `cpus` were over `window`, from their idle time at its edges.
fn busy(
    cpus: &[usize],
    idle0: Option<Duration>,
    idle1: Option<Duration>,
    window: Duration,
) -> Option<CpusReport> {
    let (i0, i1) = (idle0?, idle1?);
    if cpus.is_empty() {
        return None;
    }
    let capacity = window.as_secs_f64() * cpus.len() as f64;
    let busy_secs = (capacity - i1.saturating_sub(i0).as_secs_f64()).max(0.0);
    Some(CpusReport {
        cpus: cpus.len(),
        busy_secs,
        busy_percent: 100.0 * busy_secs / capacity.max(1e-9),
        cpu_us_per_message: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_contiguous_and_even() {
        let groups = split_evenly((0..10).collect(), 3);
        assert_eq!(groups, vec![vec![0, 1, 2, 3], vec![4, 5, 6], vec![7, 8, 9]]);
        assert_eq!(split_evenly((0..2).collect::<Vec<_>>(), 5).len(), 2);
    }

    #[test]
    fn options_are_validated() {
        let server = "127.0.0.1:3478".parse().unwrap();
        let mut o = BenchOptions::new(server, "u", "p");
        assert!(o.validate().is_ok());
        o.payload_size = 10;
        assert!(matches!(o.validate(), Err(BenchError::InvalidOptions(_))));
        o.payload_size = 100;
        o.peer_mode = PeerMode::ClientToClient;
        o.allocations = 1;
        assert!(o.validate().is_err());
        o.allocations = 2;
        o.load = Load::Paced { rate: 0 };
        assert!(o.validate().is_err());
    }
}
