//! One worker thread: a current-thread tokio runtime that owns a core shard,
//! its listener sockets, and the relay sockets of the allocations the shard
//! holds.
//!
//! Everything here is single-threaded. Tasks share the worker's state
//! through [`WorkerCtx`], whose `RefCell`s are borrowed only between awaits,
//! never across one.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::RngCore;
use rustc_hash::FxHashMap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::LocalSet;
use turnpike_core::stats::{EndReason, TransportLabel};
use turnpike_core::{Packet, PerSourceRate, Secrets, Server, Shard, SourcePrefix, Transport};
use turnpike_dtls::{ALPN_STUN_NAT_DISCOVERY, ALPN_STUN_TURN, DtlsConfig, DtlsServer};
use turnpike_xdp::FastPath;

use super::bind_error;
use super::binder::ShellRelayBinder;
use super::context::{
    BATCH, MAX_MESSAGE, RECV_ERROR_BACKOFF, RECV_SLOT, SEND_SLOT, Timer, WorkerCtx, sleep_until,
};
use super::dtls::{self, endpoint::DtlsEndpoint};
use super::queries::{self, Query};
use super::stream::{
    self,
    conn::{ConnectionCounts, QueueBudget, StreamLimits},
};
use super::tcp_relay::{self, peers::Mail, peers::TcpRelays};
use super::udp_relay::{self, socket::Reservations};
use crate::config::Listener;
use crate::credentials::CredentialSource;
use crate::net::tcp;
use crate::net::udp::{BatchUdpSocket, RecvBatch, SendBatch, UdpOptions};
use crate::tls::Certificates;

/// What one worker thread needs.
pub(super) struct Worker {
    pub(super) id: usize,
    pub(super) workers: usize,
    pub(super) core: Arc<turnpike_core::Config>,
    /// Credential sources; `None` when TURN is off.
    pub(super) credentials: Option<Arc<CredentialSource>>,
    /// The shared secrets as they change; `None` when TURN is off.
    pub(super) secrets: Option<watch::Receiver<Secrets>>,
    /// The host's IP addresses as they change, for the peer policy; `None`
    /// when TURN is off.
    pub(super) host_addresses: Option<watch::Receiver<Arc<[IpAddr]>>>,
    pub(super) reservations: Arc<Reservations>,
    /// Client connections per source IP, all workers together.
    pub(super) connections: Arc<ConnectionCounts>,
    pub(super) limits: StreamLimits,
    pub(super) listeners: Vec<Listener>,
    pub(super) udp: bool,
    pub(super) tcp: bool,
    /// TLS and DTLS: the certificates and where to listen.
    pub(super) secure: Option<Secure>,
    pub(super) shutdown: watch::Receiver<bool>,
    /// Every worker's mailbox, by worker number (RFC 6062 hand-overs).
    pub(super) mailboxes: Arc<[tokio::sync::mpsc::UnboundedSender<Mail>]>,
    /// This worker's mailbox.
    pub(super) inbox: Option<tokio::sync::mpsc::UnboundedReceiver<Mail>>,
    /// The XDP fast path's routes, shared by all workers; `None` when off.
    pub(super) fast_path: Option<Arc<Mutex<FastPath>>>,
    /// Questions from the admin surfaces ([`super::queries`]).
    pub(super) queries: Option<tokio::sync::mpsc::UnboundedReceiver<Query>>,
    /// Notified when an allocation ends (see [`WorkerCtx::allocation_ended`]).
    pub(super) allocation_ended: Arc<tokio::sync::Notify>,
    /// Allocations still live at shutdown, all workers together: each adds
    /// those it ends on the way out.
    pub(super) cut_short: Arc<AtomicUsize>,
}

/// What a worker needs for TLS and DTLS.
#[derive(Clone)]
pub(super) struct Secure {
    pub(super) certs: Arc<Certificates>,
    pub(super) tls_listen: Vec<SocketAddr>,
    pub(super) dtls_listen: Vec<SocketAddr>,
    /// TLS handshakes in progress, all workers together.
    pub(super) handshakes: Arc<AtomicUsize>,
    pub(super) max_handshakes: usize,
    /// TLS handshakes started per source this second, all workers together
    /// (touched once per accepted connection).
    pub(super) handshake_rate: Arc<Mutex<PerSourceRate>>,
    pub(super) handshakes_per_second: u16,
    pub(super) sources: SourcePrefix,
    pub(super) handshake_timeout: Duration,
    /// DTLS session settings (certificate, caps, cookie secret) for this
    /// worker's share of the limits.
    pub(super) dtls: DtlsSettings,
}

/// The per-worker DTLS settings; the certificate comes from [`Secure::certs`].
#[derive(Clone, Copy)]
pub(super) struct DtlsSettings {
    pub(super) cookie_secret: [u8; 32],
    pub(super) max_half_open: usize,
    pub(super) max_sessions_per_ip: usize,
    /// IPv6 sources are counted per prefix of this many bits.
    pub(super) ipv6_prefix: u8,
    /// Handshakes one source may start per second on this worker.
    pub(super) handshakes_per_second_per_ip: u16,
    pub(super) handshake_timeout: Duration,
    pub(super) idle_timeout: Duration,
}

/// Sockets a worker binds.
struct Bound {
    udp: Vec<BatchUdpSocket>,
    tcp: Vec<TcpListener>,
    tls: Vec<TcpListener>,
    dtls: Vec<DtlsEndpoint>,
}

impl Worker {
    /// Binds this worker's sockets, reports readiness, and serves until shutdown.
    pub(super) fn run(mut self, ready: mpsc::Sender<anyhow::Result<()>>) -> anyhow::Result<()> {
        let inbox = self.inbox.take();
        let queries = self.queries.take();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start a worker runtime")?;
        let local = LocalSet::new();
        let mut shutdown = self.shutdown.clone();
        local.block_on(&rt, async move {
            let bound = match self.bind() {
                Ok(bound) => {
                    let _ = ready.send(Ok(()));
                    bound
                }
                Err(err) => {
                    let _ = ready.send(Err(err));
                    return Ok(());
                }
            };
            let ctx = self.context(bound.udp, bound.dtls);
            for index in 0..ctx.listeners.len() {
                tokio::task::spawn_local(udp_loop(Rc::clone(&ctx), index));
            }
            for listener in bound.tcp {
                tokio::task::spawn_local(tcp_accept_loop(Rc::clone(&ctx), listener));
            }
            if let Some(secure) = &self.secure {
                for listener in bound.tls {
                    let (ctx, secure) = (Rc::clone(&ctx), secure.clone());
                    tokio::task::spawn_local(tls_accept_loop(ctx, listener, secure));
                }
                for endpoint in ctx.dtls.iter() {
                    let (ctx2, endpoint) = (Rc::clone(&ctx), Rc::clone(endpoint));
                    let certs = Arc::clone(&secure.certs);
                    tokio::task::spawn_local(dtls::dtls_loop(ctx2, endpoint, certs));
                }
            }
            tokio::task::spawn_local(timer_loop(Rc::clone(&ctx)));
            if let Some(secrets) = self.secrets.clone() {
                tokio::task::spawn_local(secrets_loop(Rc::clone(&ctx), secrets));
            }
            if let Some(credentials) = &ctx.credentials {
                let recoveries = credentials.recoveries();
                tokio::task::spawn_local(recoveries_loop(Rc::clone(&ctx), recoveries));
            }
            if let Some(addresses) = self.host_addresses.clone() {
                // The first set is in place before any packet is handled.
                let current = addresses.borrow().clone();
                ctx.server.borrow_mut().set_host_addresses(&current);
                tokio::task::spawn_local(host_addresses_loop(Rc::clone(&ctx), addresses));
            }
            tokio::task::spawn_local(udp_relay::flusher(Rc::clone(&ctx)));
            tokio::task::spawn_local(tcp_relay::opener_loop(Rc::clone(&ctx)));
            if let Some(inbox) = inbox {
                tokio::task::spawn_local(tcp_relay::mail_loop(Rc::clone(&ctx), inbox));
            }
            if let Some(queries) = queries {
                tokio::task::spawn_local(queries::query_loop(Rc::clone(&ctx), queries));
            }
            let _ = shutdown.wait_for(|stop| *stop).await;
            // Every allocation ends on the way out, so each gets its
            // accounting line and its fast-path routes are withdrawn.
            let ended =
                ctx.server
                    .borrow_mut()
                    .end_allocations(Instant::now(), EndReason::Drained, |_| true);
            self.cut_short.fetch_add(ended, Ordering::Relaxed);
            ctx.process_pending();
            // Returning drops the LocalSet's tasks: sockets close with them.
            Ok(())
        })
    }

    fn context(&self, sockets: Vec<BatchUdpSocket>, dtls: Vec<DtlsEndpoint>) -> Rc<WorkerCtx> {
        let mut seed = [0u8; 8];
        rand::rng().fill_bytes(&mut seed);
        let mut secret_seed = [0u8; 32];
        rand::rng().fill_bytes(&mut secret_seed);
        let shard = Shard {
            index: self.id,
            count: self.workers,
            seed: u64::from_le_bytes(seed),
            secret_seed,
        };
        let client_tx = (0..sockets.len())
            .map(|_| RefCell::new(SendBatch::new(BATCH, SEND_SLOT)))
            .collect();
        let ctx = Rc::new_cyclic(|weak: &Weak<WorkerCtx>| {
            let binder = ShellRelayBinder::new(weak.clone(), Arc::clone(&self.reservations));
            WorkerCtx {
                server: RefCell::new(Server::with_relays(
                    Arc::clone(&self.core),
                    shard,
                    Box::new(binder),
                )),
                listeners: sockets.into_boxed_slice(),
                client_tx,
                flush: tokio::sync::Notify::new(),
                peer_rx: RefCell::new(RecvBatch::new(BATCH, RECV_SLOT)),
                relays: RefCell::new(FxHashMap::default()),
                reservations: Arc::clone(&self.reservations),
                streams: RefCell::new(FxHashMap::default()),
                scratch: RefCell::new(vec![0u8; MAX_MESSAGE].into_boxed_slice()),
                queued: Rc::new(QueueBudget::new(self.limits.max_buffered_per_worker)),
                connections: Arc::clone(&self.connections),
                limits: Cell::new(self.limits),
                dtls: dtls.into_iter().map(Rc::new).collect(),
                tcp: TcpRelays::new(self.id, Arc::clone(&self.mailboxes)),
                timer: Timer::default(),
                credentials: self.credentials.clone(),
                fast_path: self.fast_path.clone(),
                shell_stats: Cell::default(),
                withdrawn: RefCell::default(),
                allocation_ended: Arc::clone(&self.allocation_ended),
            }
        });
        if let Some(credentials) = &ctx.credentials {
            let mut server = ctx.server.borrow_mut();
            let now = Instant::now();
            for (name, keys) in credentials.static_users().iter() {
                server.insert_credentials(now, name, keys.clone());
            }
        }
        ctx
    }

    fn bind(&self) -> anyhow::Result<Bound> {
        let options = UdpOptions {
            reuse_port: true,
            ..UdpOptions::default()
        };
        let mut bound = Bound {
            udp: Vec::new(),
            tcp: Vec::new(),
            tls: Vec::new(),
            dtls: Vec::new(),
        };
        for l in &self.listeners {
            if self.udp {
                bound.udp.push(
                    BatchUdpSocket::bind(l.addr, &options)
                        .map_err(|e| bind_error("udp", l.addr, &e))?,
                );
            }
            if self.tcp {
                bound.tcp.push(
                    tcp::bind_listener(l.addr, true).map_err(|e| bind_error("tcp", l.addr, &e))?,
                );
            }
        }
        if let Some(secure) = &self.secure {
            for &addr in &secure.tls_listen {
                bound
                    .tls
                    .push(tcp::bind_listener(addr, true).map_err(|e| bind_error("tls", addr, &e))?);
            }
            let (generation, pem) = secure.certs.pem_with_generation();
            for &addr in &secure.dtls_listen {
                let socket = BatchUdpSocket::bind(addr, &options)
                    .map_err(|e| bind_error("dtls", addr, &e))?;
                let d = secure.dtls;
                let mut config =
                    DtlsConfig::new(pem.chain.clone(), pem.key.clone(), d.cookie_secret);
                config.max_half_open_total = d.max_half_open;
                config.max_sessions_per_ip = d.max_sessions_per_ip;
                config.ipv6_prefix = d.ipv6_prefix;
                config.max_handshakes_per_ip_per_second = d.handshakes_per_second_per_ip;
                config.handshake_timeout = d.handshake_timeout;
                config.idle_timeout = d.idle_timeout;
                // The same ALPN IDs as TLS (RFC 7443), refused alike.
                config.alpn_protocols =
                    vec![ALPN_STUN_TURN.to_vec(), ALPN_STUN_NAT_DISCOVERY.to_vec()];
                let sessions = DtlsServer::new(config)
                    .map_err(|e| anyhow::anyhow!("cannot start DTLS on {addr}: {e}"))?;
                bound
                    .dtls
                    .push(DtlsEndpoint::new(socket, Box::new(sessions), generation));
            }
        }
        Ok(bound)
    }
}

/// Accepts TLS connections: per-IP limit, then the handshake (bounded in
/// number across workers and in time), then the stream is served like TCP.
async fn tls_accept_loop(ctx: Rc<WorkerCtx>, listener: TcpListener, secure: Secure) {
    let acceptor = secure.certs.acceptor();
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(%err, "tls accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let refused = || ctx.count(|s| s.connections_refused.record(TransportLabel::Tls));
        let Some(counted) = ctx.connections.admit(remote.ip(), ctx.limits.get().per_ip) else {
            refused();
            continue;
        };
        let source = secure.sources.key(remote.ip());
        let started = secure
            .handshake_rate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .allow(source, Instant::now(), secure.handshakes_per_second);
        if !started {
            refused();
            continue;
        }
        if secure.handshakes.fetch_add(1, Ordering::Relaxed) >= secure.max_handshakes {
            secure.handshakes.fetch_sub(1, Ordering::Relaxed);
            refused();
            continue;
        }
        let Ok(local) = stream.local_addr() else {
            secure.handshakes.fetch_sub(1, Ordering::Relaxed);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (ctx, acceptor) = (Rc::clone(&ctx), acceptor.clone());
        let (handshakes, timeout) = (Arc::clone(&secure.handshakes), secure.handshake_timeout);
        tokio::task::spawn_local(async move {
            let handshake = tokio::time::timeout(timeout, acceptor.accept(stream)).await;
            handshakes.fetch_sub(1, Ordering::Relaxed);
            if let Ok(Ok(tls)) = handshake {
                ctx.count(|s| s.handshakes.record(TransportLabel::Tls));
                let limits = ctx.limits.get();
                stream::serve(ctx, tls, Transport::Tls, local, remote, limits).await;
            } else {
                ctx.count(|s| s.handshake_failures.record(TransportLabel::Tls));
            }
            drop(counted);
        });
    }
}

/// Hands each new set of the host's addresses to the shard.
async fn host_addresses_loop(ctx: Rc<WorkerCtx>, mut addresses: watch::Receiver<Arc<[IpAddr]>>) {
    while addresses.changed().await.is_ok() {
        let current = addresses.borrow_and_update().clone();
        ctx.server.borrow_mut().set_host_addresses(&current);
    }
}

/// Each time the credential database is reachable again, drops the
/// shard's "unavailable" verdicts at once: users it told 500 are looked up
/// again on their next request, on this worker as on the one whose lookup
/// (or probe) reached the database first.
async fn recoveries_loop(ctx: Rc<WorkerCtx>, mut recoveries: watch::Receiver<u64>) {
    while recoveries.changed().await.is_ok() {
        recoveries.borrow_and_update();
        ctx.server.borrow_mut().forget_unavailable_credentials();
    }
}

/// Hands each new set of shared secrets to the shard.
async fn secrets_loop(ctx: Rc<WorkerCtx>, mut secrets: watch::Receiver<Secrets>) {
    loop {
        let current = secrets.borrow_and_update().clone();
        ctx.server.borrow_mut().set_secrets(current);
        if secrets.changed().await.is_err() {
            return;
        }
    }
}

/// Receives datagrams on listener `index` in batches, runs them through the
/// shard, and sends the answers in batches.
///
/// Answers and relayed data for clients on this listener go into its send
/// batch, written there by the core; everything else (data for peers,
/// RFC 5780 CHANGE-REQUEST answers from another listener) goes where
/// [`WorkerCtx::dispatch`] sends it.
async fn udp_loop(ctx: Rc<WorkerCtx>, index: usize) {
    let socket = &ctx.listeners[index];
    let bound = socket.local_addr();
    let wildcard = bound.ip().is_unspecified();
    let mut rx = RecvBatch::new(BATCH, RECV_SLOT);
    let mut tx = SendBatch::new(BATCH, SEND_SLOT);
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
            let mut server = ctx.server.borrow_mut();
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
                // The core writes straight into the send batch. A batch holds
                // as many small datagrams as `rx` and is flushed after every
                // receive; large ones fill it sooner, so it is sent early then.
                if tx.is_full() {
                    let _ = socket.try_send_batch(&mut tx);
                }
                tx.push_in_place(|room| {
                    server.handle_client_packet(now, packet, room);
                    ctx.take_answer(&mut server, room, index)
                });
            }
        }
        ctx.process_pending();
        if !tx.is_empty()
            && let Err(err) = socket.send_batch(&mut tx).await
        {
            tracing::debug!(address = %bound, %err, "udp send failed");
        }
    }
}

/// Runs the shard's timer: sleeps until the core's next timeout (woken when
/// it moves earlier), so allocations expire and RFC 6062's 30-second timers
/// fire on time; and closes reserved ports nobody claimed when they expire.
async fn timer_loop(ctx: Rc<WorkerCtx>) {
    loop {
        let due = match (ctx.timer.at(), ctx.reservations.next_expiry()) {
            (Some(core), Some(reserved)) => Some(core.min(reserved)),
            (core, reserved) => core.or(reserved),
        };
        tokio::select! {
            () = sleep_until(due.map(tokio::time::Instant::from_std)) => {}
            () = ctx.timer.wake.notified() => continue,
        }
        let now = Instant::now();
        ctx.server.borrow_mut().handle_timeout(now);
        ctx.process_pending();
        ctx.reservations.expire(now);
    }
}

async fn tcp_accept_loop(ctx: Rc<WorkerCtx>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                let Some(counted) = ctx.connections.admit(remote.ip(), ctx.limits.get().per_ip)
                else {
                    // Over the per-IP limit: closed at once.
                    ctx.count(|s| s.connections_refused.record(TransportLabel::Tcp));
                    continue;
                };
                let Ok(local) = stream.local_addr() else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let ctx = Rc::clone(&ctx);
                tokio::task::spawn_local(async move {
                    let limits = ctx.limits.get();
                    stream::serve(ctx, stream, Transport::Tcp, local, remote, limits).await;
                    drop(counted);
                });
            }
            Err(err) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(%err, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
