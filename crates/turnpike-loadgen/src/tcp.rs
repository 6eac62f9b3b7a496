//! `turnpike bench --tcp-relay`: bulk bytes through TCP allocations
//! (RFC 6062), against any TURN server that relays to loopback peers.
//!
//! Each of N clients allocates a TCP relay over TCP, Connects it to the
//! generator's echo peer, binds a data connection, and then writes
//! fixed-size chunks as fast as the relay takes them while reading the echo
//! back. Every byte crosses the relay twice (client → peer → client), so the
//! server's work is twice the echoed bytes. Reported: echoed MiB/s over the
//! measurement window, and with `observe_pid`, the server's CPU time per MiB
//! relayed (both directions counted).
//!
//! Plain threads and blocking sockets: a few connections saturate a relay,
//! and the generator's cost per byte (one read and one write per chunk) is
//! the same as the server's, so it stays out of the way as long as it has a
//! core of its own.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;
use turnpike_codec::Class;

use crate::sys;
use turnpike_client::auth::Credentials;
use turnpike_client::tcp_relay::TcpRelayClient;

/// Bytes per write.
const CHUNK: usize = 64 * 1024;
/// Set-up reads wait at most this long.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// What to run.
#[derive(Debug, Clone)]
pub struct TcpBenchOptions {
    /// The server's TCP address.
    pub server: SocketAddr,
    /// Long-term credentials.
    pub credentials: Credentials,
    /// TCP allocations, each with one relayed connection.
    pub connections: usize,
    /// Traffic before the measurement window.
    pub warmup: Duration,
    /// The measurement window.
    pub duration: Duration,
    /// Where the echo peer listens (the server must allow it as a peer).
    pub peer_ip: IpAddr,
    /// A server process on this host whose CPU time to report.
    pub observe_pid: Option<u32>,
}

/// What came out.
#[derive(Debug, Clone, Serialize)]
pub struct TcpBenchReport {
    /// Connections relayed.
    pub connections: usize,
    /// Seconds to set them all up (Allocate, Connect, ConnectionBind).
    pub setup_seconds: f64,
    /// Length of the measurement window.
    pub window_seconds: f64,
    /// Bytes echoed back to the clients in the window.
    pub echoed_bytes: u64,
    /// Echoed MiB per second (the relay carried twice as much).
    pub echoed_mib_per_second: f64,
    /// The server's CPU seconds in the window (with `observe_pid`).
    pub server_cpu_seconds: Option<f64>,
    /// The server's CPU µs per MiB relayed, both directions counted.
    pub server_cpu_us_per_mib: Option<f64>,
    /// The generator's own CPU seconds in the window (all its threads).
    pub generator_cpu_seconds: f64,
}

impl TcpBenchReport {
    /// `key=value` lines.
    pub fn to_key_values(&self) -> String {
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
        format!(
            "connections={}\nsetup_seconds={:.3}\nwindow_seconds={:.3}\nechoed_bytes={}\n\
             echoed_mib_per_second={:.1}\nserver_cpu_seconds={}\nserver_cpu_us_per_mib={}\n\
             generator_cpu_seconds={:.3}\n",
            self.connections,
            self.setup_seconds,
            self.window_seconds,
            self.echoed_bytes,
            self.echoed_mib_per_second,
            opt(self.server_cpu_seconds),
            opt(self.server_cpu_us_per_mib),
            self.generator_cpu_seconds,
        )
    }

    /// One JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl std::fmt::Display for TcpBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "TCP relay (RFC 6062), {} connections", self.connections)?;
        writeln!(f, "  set-up            {:.3} s", self.setup_seconds)?;
        writeln!(
            f,
            "  echoed            {:.1} MiB/s over {:.1} s",
            self.echoed_mib_per_second, self.window_seconds
        )?;
        if let (Some(cpu), Some(per)) = (self.server_cpu_seconds, self.server_cpu_us_per_mib) {
            writeln!(
                f,
                "  server CPU        {cpu:.3} s, {per:.1} µs per MiB relayed"
            )?;
        }
        writeln!(f, "  generator CPU     {:.3} s", self.generator_cpu_seconds)
    }
}

/// One relayed connection's client side.
struct Relayed {
    control: TcpRelayClient,
    data: TcpStream,
}

/// Runs the benchmark.
///
/// # Errors
///
/// One line saying what failed during set-up.
pub fn run(o: &TcpBenchOptions) -> Result<TcpBenchReport, String> {
    let peer = TcpListener::bind((o.peer_ip, 0)).map_err(|e| format!("echo peer: {e}"))?;
    let peer_addr = peer.local_addr().map_err(|e| e.to_string())?;
    thread::spawn(move || echo_peer(&peer));

    let started = Instant::now();
    let mut relayed = Vec::with_capacity(o.connections);
    for i in 0..o.connections {
        relayed.push(open(o, peer_addr).map_err(|e| format!("connection {i}: {e}"))?);
    }
    let setup_seconds = started.elapsed().as_secs_f64();

    let stop = Arc::new(AtomicBool::new(false));
    let echoed = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for r in &relayed {
        let (mut tx, mut rx) = (
            r.data.try_clone().map_err(|e| e.to_string())?,
            r.data.try_clone().map_err(|e| e.to_string())?,
        );
        let stop_tx = Arc::clone(&stop);
        threads.push(thread::spawn(move || {
            let chunk = vec![0x5au8; CHUNK];
            while !stop_tx.load(Ordering::Relaxed) {
                if tx.write_all(&chunk).is_err() {
                    break;
                }
            }
        }));
        let counter = Arc::clone(&echoed);
        threads.push(thread::spawn(move || {
            let mut buf = vec![0u8; CHUNK];
            while let Ok(n) = rx.read(&mut buf) {
                if n == 0 {
                    break;
                }
                counter.fetch_add(n as u64, Ordering::Relaxed);
            }
        }));
    }

    thread::sleep(o.warmup);
    let (bytes0, own0, server0, t0) = snapshot(o, &echoed);
    thread::sleep(o.duration);
    let (bytes1, own1, server1, t1) = snapshot(o, &echoed);
    stop.store(true, Ordering::Relaxed);
    for r in &mut relayed {
        let _ = r.data.shutdown(Shutdown::Both);
        let _ = r.control.release();
    }
    for t in threads {
        let _ = t.join();
    }

    let window = t1.duration_since(t0).as_secs_f64().max(1e-9);
    let bytes = bytes1 - bytes0;
    let mib = bytes as f64 / f64::from(1 << 20);
    let server_cpu = server0
        .zip(server1)
        .map(|(a, b)| b.saturating_sub(a).as_secs_f64());
    Ok(TcpBenchReport {
        connections: o.connections,
        setup_seconds,
        window_seconds: window,
        echoed_bytes: bytes,
        echoed_mib_per_second: mib / window,
        server_cpu_seconds: server_cpu,
        // Each echoed byte was relayed twice.
        server_cpu_us_per_mib: server_cpu
            .filter(|_| mib > 0.0)
            .map(|s| s * 1e6 / (2.0 * mib)),
        generator_cpu_seconds: own1.saturating_sub(own0).as_secs_f64(),
    })
}

fn snapshot(o: &TcpBenchOptions, echoed: &AtomicU64) -> (u64, Duration, Option<Duration>, Instant) {
    let server = o
        .observe_pid
        .and_then(|pid| sys::process_cpu_time(pid).ok());
    (
        echoed.load(Ordering::Relaxed),
        sys::own_cpu_time(),
        server,
        Instant::now(),
    )
}

/// Allocate, Connect to the echo peer, ConnectionBind.
fn open(o: &TcpBenchOptions, peer: SocketAddr) -> io::Result<Relayed> {
    let mut control = TcpRelayClient::connect(o.server, o.credentials.clone(), SETUP_TIMEOUT)?;
    let refused = |what: &str, reply: &turnpike_client::tcp_relay::Reply| {
        io::Error::other(format!("{what} refused ({:?})", reply.code()))
    };
    let allocated = control.allocate(&[])?;
    if allocated.class() != Class::Success {
        return Err(refused("TCP Allocate", &allocated));
    }
    let connected = control.connect_peer(peer)?;
    let id = match (connected.class(), connected.connection_id()) {
        (Class::Success, Some(id)) => id,
        _ => return Err(refused("Connect to the echo peer", &connected)),
    };
    let (data, bound) = control.bind_data_connection(id)?;
    if bound.class() != Class::Success {
        return Err(refused("ConnectionBind", &bound));
    }
    // Reads end when the run shuts the socket down, not on a timer.
    data.set_read_timeout(None)?;
    Ok(Relayed { control, data })
}

/// Echoes every connection back, one thread each.
fn echo_peer(listener: &TcpListener) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        thread::spawn(move || {
            let Ok(mut out) = stream.try_clone() else {
                return;
            };
            let _ = io::copy(&mut stream, &mut out);
        });
    }
}
