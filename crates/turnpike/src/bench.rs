//! `turnpike bench`: the command line of the TURN load generator in
//! `turnpike-loadgen`, usable against any TURN server.
//!
//! ```sh
//! turnpike bench --server 127.0.0.1:3478 --username bench --password secret \
//!     --allocations 100 --payload 1000 --rate 20000 --duration 10
//! ```
//!
//! With `--tcp-relay`, bulk bytes through TCP allocations (RFC 6062)
//! instead: `--allocations` clients over TCP to `--server`, each relaying
//! one connection to an echo peer on `--local-ip` (default 127.0.0.1).
//!
//! Prints the report as a table (default), `key=value` lines (`--format kv`)
//! or JSON (`--format json`) on stdout. Exits 1 when the run fails, 2 on bad
//! arguments.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::{Args, ValueEnum};
use turnpike_client::RetransmitPolicy;
use turnpike_codec::AddressFamily;
use turnpike_loadgen::{self as bench, BenchOptions, Load, PeerMode};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Kv,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Peer {
    /// The generator's own UDP echo peer (round-trip latency).
    Echo,
    /// Allocation i sends to allocation i+1's relayed address (one-way latency).
    C2c,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Family {
    V4,
    V6,
}

/// Options of `turnpike bench`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct BenchArgs {
    /// TURN server address (UDP).
    #[arg(long, short = 's', default_value = "127.0.0.1:3478")]
    server: SocketAddr,
    /// Long-term credential username.
    /// (`--user` is the server's own USER:PASSWORD flag.)
    #[arg(long = "username", short = 'u', default_value = "bench")]
    user: String,
    /// Password.
    #[arg(
        long,
        short = 'w',
        default_value = "secret",
        env = "TURN_BENCH_PASSWORD"
    )]
    password: String,
    /// Allocations to open.
    #[arg(long, short = 'n', default_value_t = 100)]
    allocations: usize,
    /// Allocate transactions in flight during set-up.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Payload bytes per message (at least 24).
    #[arg(long, short = 'l', default_value_t = 100)]
    payload: usize,
    /// Paced: aggregate messages per second.
    #[arg(long, short = 'r', conflicts_with = "window")]
    rate: Option<u64>,
    /// Closed loop: messages in flight per allocation.
    #[arg(long)]
    window: Option<u32>,
    /// Measured duration (e.g. 10, 10s, 500ms); 0 = set-up only.
    #[arg(long, short = 'd', default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Warm-up before measuring.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// Wait after the last send for in-flight messages.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    drain: Duration,
    /// Idle time between set-up and traffic (server memory is read after it).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    hold: Duration,
    /// Where traffic goes.
    #[arg(long, value_enum, default_value = "echo")]
    peer: Peer,
    /// Send indications (and CreatePermission) instead of ChannelData.
    #[arg(long)]
    send_indications: bool,
    /// Worker threads.
    #[arg(long, short = 't', default_value_t = 1)]
    threads: usize,
    /// REQUESTED-ADDRESS-FAMILY of the relayed addresses.
    #[arg(long, value_enum)]
    family: Option<Family>,
    /// Requested allocation lifetime (seconds).
    #[arg(long)]
    lifetime: Option<u32>,
    /// Local IP for client sockets and the echo peer.
    #[arg(long)]
    local_ip: Option<IpAddr>,
    /// Initial retransmission timeout of requests (ms).
    #[arg(long, default_value_t = 500)]
    rto_ms: u64,
    /// Transmissions per request before giving up (RFC 8489 Rc).
    #[arg(long, default_value_t = 7)]
    transmissions: u32,
    /// Server PID on this host: report its CPU time and memory.
    #[arg(long)]
    observe_pid: Option<u32>,
    /// CPUs the server runs on (comma-separated), with the network receive
    /// work steered to them: report how busy they were per message, kernel
    /// work (softirq, XDP) included.
    #[arg(long, value_delimiter = ',', value_name = "CPU")]
    server_cpus: Vec<usize>,
    /// Leave the allocations to expire instead of deleting them.
    #[arg(long)]
    no_release: bool,
    /// Refresh interval during traffic (default: derived from lifetimes).
    #[arg(long, value_parser = parse_duration)]
    refresh_interval: Option<Duration>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// TCP relays (RFC 6062) over TCP: bulk bytes echoed through one
    /// relayed connection per allocation, for the measured duration.
    #[arg(long)]
    tcp_relay: bool,
}

/// "10", "2.5", "10s", "500ms", "2m".
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (examples: 10, 10s, 500ms, 2m)"))?;
    Duration::try_from_secs_f64(v * scale).map_err(|e| format!("{s:?}: {e}"))
}

fn options(a: BenchArgs) -> BenchOptions {
    let mut o = BenchOptions::new(a.server, a.user, a.password);
    o.allocations = a.allocations;
    o.setup_concurrency = a.concurrency;
    o.payload_size = a.payload;
    o.load = match (a.rate, a.window) {
        (_, Some(window)) => Load::ClosedLoop { window },
        (Some(rate), None) => Load::Paced { rate },
        (None, None) => Load::Paced { rate: 10_000 },
    };
    o.duration = a.duration;
    o.warmup = a.warmup;
    o.drain = a.drain;
    o.hold = a.hold;
    o.peer_mode = match a.peer {
        Peer::Echo => PeerMode::Echo,
        Peer::C2c => PeerMode::ClientToClient,
    };
    o.send_indications = a.send_indications;
    o.threads = a.threads;
    o.requested_family = a.family.map(|f| match f {
        Family::V4 => AddressFamily::V4,
        Family::V6 => AddressFamily::V6,
    });
    o.lifetime = a.lifetime;
    o.local_ip = a.local_ip;
    o.retransmit = RetransmitPolicy {
        initial_rto: Duration::from_millis(a.rto_ms.max(1)),
        max_transmissions: a.transmissions,
        ..RetransmitPolicy::default()
    };
    o.observe_pid = a.observe_pid;
    o.server_cpus = a.server_cpus.clone();
    o.release = !a.no_release;
    o.refresh_interval = a.refresh_interval;
    o
}

/// Runs the load generator and prints its report on stdout.
///
/// # Errors
///
/// One line saying why the run failed.
pub fn run(args: BenchArgs) -> Result<(), String> {
    let format = args.format;
    if args.tcp_relay {
        let options = bench::tcp::TcpBenchOptions {
            server: args.server,
            credentials: turnpike_client::Credentials::new(args.user, args.password),
            connections: args.allocations,
            warmup: args.warmup,
            duration: args.duration,
            peer_ip: args.local_ip.unwrap_or(IpAddr::from([127, 0, 0, 1])),
            observe_pid: args.observe_pid,
        };
        let report = bench::tcp::run(&options)?;
        match format {
            Format::Table => print!("{report}"),
            Format::Kv => print!("{}", report.to_key_values()),
            Format::Json => println!("{}", report.to_json()),
        }
        return Ok(());
    }
    // One thread for set-up and coordination; traffic runs on the workers.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let report = runtime
        .block_on(bench::run(options(args)))
        .map_err(|e| e.to_string())?;
    match format {
        Format::Table => print!("{report}"),
        Format::Kv => print!("{}", report.to_key_values()),
        Format::Json => println!("{}", report.to_json()),
    }
    Ok(())
}
