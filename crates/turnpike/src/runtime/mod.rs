//! The worker runtime: `workers` OS threads, each running a current-thread
//! tokio runtime that owns one [`turnpike_core::Server`] shard and its own
//! `SO_REUSEPORT` UDP sockets and TCP listeners.
//!
//! The kernel spreads datagrams (by 4-tuple hash) and connections across the
//! workers' sockets, so a client's packets always reach the same shard and no
//! lock is taken on the packet path. Datagrams are received and sent in
//! batches (`recvmmsg`/`sendmmsg`). The main thread binds nothing itself
//! beyond a short probe (to report "address in use" clearly), then waits for
//! SIGTERM/SIGINT and shuts the workers down.

mod relay;
mod worker;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use anyhow::{Context, anyhow};
use rand::RngCore;
use socket2::{Domain, Socket, Type};
use tokio::sync::watch;

use crate::config::{Config, Listener};
use crate::credentials::{CredentialStore, StaticCredentials};
use relay::Reservations;
use worker::Worker;

/// Runs the server until SIGTERM or SIGINT.
pub fn serve(config: Config) -> anyhow::Result<()> {
    // The nonce secret lives only in this process: nonces do not survive a
    // restart, and clients recover with one 438.
    let mut nonce_secret = [0u8; 32];
    rand::rng().fill_bytes(&mut nonce_secret);
    let core = Arc::new(config.core(&nonce_secret, Instant::now()));
    let store: Arc<dyn CredentialStore> = Arc::new(StaticCredentials::new(
        &config.turn.realm,
        config
            .users()
            .iter()
            .map(|u| (u.username.as_str(), u.password.as_str())),
    ));
    let reservations = Arc::new(Reservations::default());
    let listeners = config.listeners();
    let (udp, tcp) = (config.stun.udp, config.stun.tcp);
    probe_listeners(&listeners, udp, tcp)?;

    let workers = config.worker_threads();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<()>>();
    let (failed_tx, mut failed_rx) = tokio::sync::mpsc::unbounded_channel::<anyhow::Error>();
    let mut handles = Vec::with_capacity(workers);
    for id in 0..workers {
        let worker = Worker {
            id,
            workers,
            core: Arc::clone(&core),
            store: Arc::clone(&store),
            reservations: Arc::clone(&reservations),
            listeners: listeners.clone(),
            udp,
            tcp,
            shutdown: shutdown_rx.clone(),
        };
        let ready = ready_tx.clone();
        let failed = failed_tx.clone();
        let handle = thread::Builder::new()
            .name(format!("turnpike-worker-{id}"))
            .spawn(move || {
                if let Err(err) = worker.run(ready) {
                    let _ = failed.send(err);
                }
            })
            .context("cannot start a worker thread")?;
        handles.push(handle);
    }
    drop(ready_tx);

    let stop = |handles: Vec<thread::JoinHandle<()>>| {
        let _ = shutdown_tx.send(true);
        for handle in handles {
            let _ = handle.join();
        }
    };
    for _ in 0..workers {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                stop(handles);
                return Err(err);
            }
            Err(_) => {
                stop(handles);
                return Err(anyhow!("a worker thread stopped while starting"));
            }
        }
    }
    for l in &listeners {
        let transports = match (udp, tcp) {
            (true, true) => "udp+tcp",
            (true, false) => "udp",
            _ => "tcp",
        };
        tracing::info!(address = %l.addr, transports, "listening");
    }
    tracing::info!(workers, "turnpike ready");

    let result = wait_for_shutdown(&mut failed_rx);
    tracing::info!("shutting down");
    stop(handles);
    result
}

/// Binds each address once without `SO_REUSEPORT` and closes it again.
///
/// Our workers share ports through `SO_REUSEPORT`, which would also let them
/// silently share a port with another running Turnpike. A socket without the
/// option cannot bind a port anyone holds, so this turns that case (and
/// coturn on the same port) into a clear error before any worker starts.
fn probe_listeners(listeners: &[Listener], udp: bool, tcp: bool) -> anyhow::Result<()> {
    for l in listeners {
        if udp {
            probe(l.addr, Type::DGRAM).map_err(|e| bind_error("udp", l.addr, &e))?;
        }
        if tcp {
            probe(l.addr, Type::STREAM).map_err(|e| bind_error("tcp", l.addr, &e))?;
        }
    }
    Ok(())
}

fn probe(addr: SocketAddr, ty: Type) -> io::Result<()> {
    let socket = Socket::new(Domain::for_address(addr), ty, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if ty == Type::STREAM {
        // Lingering TIME_WAIT connections from a previous run are no conflict.
        socket.set_reuse_address(true)?;
    }
    socket.bind(&addr.into())
}

/// One line saying what failed and what to do about it.
pub(crate) fn bind_error(transport: &str, addr: SocketAddr, err: &io::Error) -> anyhow::Error {
    let hint = match err.kind() {
        io::ErrorKind::AddrInUse => {
            "another process (another turnpike, coturn?) is using it: stop it or change stun.listen"
        }
        io::ErrorKind::AddrNotAvailable => {
            "no interface of this host has that IP: check stun.listen and stun.alternate_ip"
        }
        io::ErrorKind::PermissionDenied => {
            "ports below 1024 need root or CAP_NET_BIND_SERVICE (setcap cap_net_bind_service=+ep on the binary)"
        }
        _ => "check stun.listen",
    };
    let reason = crate::config::io_message(err).to_lowercase();
    anyhow!("cannot listen on {transport} {addr}: {reason}; {hint}")
}

/// Waits for SIGTERM/SIGINT, or for a worker to fail.
fn wait_for_shutdown(
    failed: &mut tokio::sync::mpsc::UnboundedReceiver<anyhow::Error>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal handler runtime")?;
    rt.block_on(async {
        let mut term =
            signal(SignalKind::terminate()).context("cannot install a SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot install a SIGINT handler")?;
        tokio::select! {
            _ = term.recv() => Ok(()),
            _ = int.recv() => Ok(()),
            Some(err) = failed.recv() => Err(err),
        }
    })
}
