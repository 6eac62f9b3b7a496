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

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use socket2::{Domain, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::LocalSet;
use turnpike_core::{Packet, Server, Transport};

use crate::config::{Config, Listener};
use crate::net::tcp::{self, FrameBuffer, NextFrame};
use crate::net::udp::{BatchUdpSocket, RecvBatch, SendBatch, UdpOptions};

/// Datagrams per `recvmmsg`/`sendmmsg`.
const BATCH: usize = 32;
/// Receive slot: a full Ethernet-MTU datagram and then some. Larger datagrams
/// are truncated by the kernel and dropped.
const RECV_SLOT: usize = 2048;
/// Send slot: the largest answer the core writes. A padded RFC 5780 answer
/// is at most its request plus a few address and SOFTWARE attributes.
const SEND_SLOT: usize = RECV_SLOT + 256;
/// Pause after a receive error that is not transient.
const RECV_ERROR_BACKOFF: Duration = Duration::from_millis(10);
/// A TCP connection that sends nothing for this long is closed.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the server until SIGTERM or SIGINT.
pub fn serve(config: Config) -> anyhow::Result<()> {
    let core = Arc::new(config.core());
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
            core: Arc::clone(&core),
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
fn bind_error(transport: &str, addr: SocketAddr, err: &io::Error) -> anyhow::Error {
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

/// What one worker thread needs.
struct Worker {
    core: Arc<turnpike_core::Config>,
    listeners: Vec<Listener>,
    udp: bool,
    tcp: bool,
    shutdown: watch::Receiver<bool>,
}

impl Worker {
    /// Binds this worker's sockets, reports readiness, and serves until shutdown.
    fn run(self, ready: mpsc::Sender<anyhow::Result<()>>) -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start a worker runtime")?;
        let local = LocalSet::new();
        let mut shutdown = self.shutdown.clone();
        local.block_on(&rt, async move {
            let (sockets, tcp_listeners) = match self.bind() {
                Ok(bound) => {
                    let _ = ready.send(Ok(()));
                    bound
                }
                Err(err) => {
                    let _ = ready.send(Err(err));
                    return Ok(());
                }
            };
            let server = Rc::new(RefCell::new(Server::new(Arc::clone(&self.core))));
            let sockets: Rc<[BatchUdpSocket]> = sockets.into();
            let redirects = !self.core.nat_discovery.is_empty();
            for index in 0..sockets.len() {
                tokio::task::spawn_local(udp_loop(
                    Rc::clone(&server),
                    Rc::clone(&sockets),
                    index,
                    redirects,
                ));
            }
            for listener in tcp_listeners {
                tokio::task::spawn_local(tcp_accept_loop(Rc::clone(&server), listener));
            }
            // Returning drops the LocalSet's tasks: sockets close with them.
            let _ = shutdown.wait_for(|stop| *stop).await;
            Ok(())
        })
    }

    fn bind(&self) -> anyhow::Result<(Vec<BatchUdpSocket>, Vec<TcpListener>)> {
        let options = UdpOptions {
            reuse_port: true,
            ..UdpOptions::default()
        };
        let mut sockets = Vec::new();
        let mut listeners = Vec::new();
        for l in &self.listeners {
            if self.udp {
                sockets.push(
                    BatchUdpSocket::bind(l.addr, &options)
                        .map_err(|e| bind_error("udp", l.addr, &e))?,
                );
            }
            if self.tcp {
                listeners.push(
                    tcp::bind_listener(l.addr, true).map_err(|e| bind_error("tcp", l.addr, &e))?,
                );
            }
        }
        Ok((sockets, listeners))
    }
}

/// Receives datagrams on `sockets[index]` in batches, runs them through the
/// shard, and sends the answers in batches.
///
/// An answer normally leaves from the socket its request arrived on; RFC
/// 5780 CHANGE-REQUEST answers leave from another of the worker's sockets,
/// queued in `redirect` batches (allocated only when NAT discovery is on).
async fn udp_loop(
    server: Rc<RefCell<Server>>,
    sockets: Rc<[BatchUdpSocket]>,
    index: usize,
    redirects: bool,
) {
    let socket = &sockets[index];
    let bound = socket.local_addr();
    let wildcard = bound.ip().is_unspecified();
    let mut rx = RecvBatch::new(BATCH, RECV_SLOT);
    let mut tx = SendBatch::new(BATCH, SEND_SLOT);
    let mut redirect: Vec<SendBatch> = if redirects {
        (0..sockets.len())
            .map(|_| SendBatch::new(BATCH, SEND_SLOT))
            .collect()
    } else {
        Vec::new()
    };
    loop {
        if let Err(err) = socket.recv_batch(&mut rx).await {
            // Transient errors (EAGAIN, stale ICMP) never get here; what does
            // (ENOMEM, ENOBUFS) would recur at once, so back off instead of
            // spinning the worker.
            tracing::warn!(address = %bound, %err, "udp receive failed");
            tokio::time::sleep(RECV_ERROR_BACKOFF).await;
            continue;
        }
        let now = Instant::now();
        {
            let mut server = server.borrow_mut();
            for (data, meta) in rx.iter() {
                if meta.truncated {
                    continue;
                }
                let local = match (wildcard, meta.destination) {
                    (true, Some(ip)) => SocketAddr::new(ip, bound.port()),
                    _ => bound,
                };
                let packet = Packet {
                    transport: Transport::Udp,
                    local,
                    remote: meta.source,
                    data,
                };
                // The core writes its answer straight into the send slot. `tx`
                // holds as many slots as `rx`, and is flushed after every
                // receive, so it always has room.
                tx.push_in_place(|slot| {
                    let t = server.handle_packet(now, packet, slot)?;
                    if t.source == local {
                        return Some((t.len, t.destination, wildcard.then_some(t.source.ip())));
                    }
                    // RFC 5780 CHANGE-REQUEST: the answer leaves from another
                    // of this worker's sockets.
                    let j = sockets.iter().position(|s| s.local_addr() == t.source)?;
                    redirect
                        .get_mut(j)?
                        .push(t.destination, None, &slot[..t.len]);
                    None
                });
            }
        }
        if !tx.is_empty() {
            if let Err(err) = socket.send_batch(&mut tx).await {
                tracing::debug!(address = %bound, %err, "udp send failed");
            }
        }
        for (j, batch) in redirect.iter_mut().enumerate() {
            if !batch.is_empty() {
                if let Err(err) = sockets[j].send_batch(batch).await {
                    tracing::debug!(address = %sockets[j].local_addr(), %err, "udp send failed");
                }
            }
        }
    }
}

async fn tcp_accept_loop(server: Rc<RefCell<Server>>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                tokio::task::spawn_local(tcp_connection(Rc::clone(&server), stream, remote));
            }
            Err(err) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(%err, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Serves one TCP connection: frames messages, answers each on the connection.
async fn tcp_connection(server: Rc<RefCell<Server>>, mut stream: TcpStream, remote: SocketAddr) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let mut frames = FrameBuffer::new(2048);
    let mut out = vec![0u8; SEND_SLOT].into_boxed_slice();
    loop {
        match tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.read(frames.read_slot())).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(n)) => frames.filled(n),
        }
        loop {
            let transmit = match frames.next_frame() {
                NextFrame::Frame(data) => {
                    let packet = Packet {
                        transport: Transport::Tcp,
                        local,
                        remote,
                        data,
                    };
                    server
                        .borrow_mut()
                        .handle_packet(Instant::now(), packet, &mut out)
                }
                NextFrame::NeedMore => break,
                NextFrame::Invalid => return,
            };
            if let Some(t) = transmit {
                if stream.write_all(&out[..t.len]).await.is_err() {
                    return;
                }
            }
        }
    }
}
