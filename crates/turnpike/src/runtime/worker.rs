//! One worker thread: a current-thread tokio runtime that owns a core shard,
//! its listener sockets, and the relay sockets of the allocations the shard
//! holds.
//!
//! Everything here is single-threaded. Tasks share the worker's state
//! through [`WorkerCtx`], whose `RefCell`s are borrowed only between awaits,
//! never across one.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::RngCore;
use rustc_hash::FxHashMap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::LocalSet;
use turnpike_core::{
    Event, Packet, PerSourceRate, RelayOptions, Secrets, Server, Shard, SourcePrefix, Transmit,
    Transport,
};
use turnpike_dtls::{DtlsConfig, DtlsServer};
use turnpike_xdp::FastPath;

use super::bind_error;
use super::dtls::{self, DtlsEndpoint};
use super::relay::{ClientPath, Relay, Reservations, ShellRelays};
use super::stream::{self, ConnectionCounts, QueueBudget, StreamConn, StreamLimits};
use super::tcp_relay::{self, Mail, TcpRelays};
use crate::config::Listener;
use crate::credentials::Credentials;
use crate::net::tcp;
use crate::net::udp::{BatchUdpSocket, RecvBatch, SendBatch, UdpOptions};
use crate::tls::Certificates;

/// Datagrams per `recvmmsg`/`sendmmsg`.
pub(super) const BATCH: usize = 32;
/// Receive slot: a full Ethernet-MTU datagram and then some. Larger datagrams
/// (up to UDP's limit) still arrive whole, through the batch's spill area.
pub(super) const RECV_SLOT: usize = 2048;
/// Room per datagram in a send batch: a Data indication around a full
/// receive slot. Larger ones fit too; the batch just holds fewer.
pub(super) const SEND_SLOT: usize = RECV_SLOT + 256;
/// The largest message the core writes: a STUN message with a 65,532-byte
/// body (relayed data framed for a stream client, a padded answer to a
/// large request). Buffers the core writes into outside a send batch are
/// this large.
pub(super) const MAX_MESSAGE: usize = turnpike_codec::framing::MAX_FRAME_LEN;
/// Room for what the core owes clients outside the packet path: Connect
/// answers and ConnectionAttempts, a few dozen bytes each.
const OWED_SLOT: usize = 512;
/// Pause after a receive error that is not transient.
pub(super) const RECV_ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// What one worker thread needs.
pub(super) struct Worker {
    pub(super) id: usize,
    pub(super) workers: usize,
    pub(super) core: Arc<turnpike_core::Config>,
    /// Credential sources; `None` when TURN is off.
    pub(super) credentials: Option<Arc<Credentials>>,
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

/// State shared by a worker's tasks.
pub(super) struct WorkerCtx {
    pub(super) server: RefCell<Server>,
    /// UDP listener sockets.
    pub(super) listeners: Box<[BatchUdpSocket]>,
    /// Answers to clients produced by relay sockets, one batch per listener.
    pub(super) client_tx: Box<[RefCell<SendBatch>]>,
    /// The receive buffer all relay sockets share.
    pub(super) peer_rx: RefCell<RecvBatch>,
    /// Relay sockets by relayed address.
    pub(super) relays: RefCell<FxHashMap<SocketAddr, Relay>>,
    /// Relays bound while handling the current batch, to start after it.
    pub(super) pending: RefCell<Vec<SocketAddr>>,
    /// Client connections (TCP, TLS) by (local, remote) address.
    pub(super) streams: RefCell<FxHashMap<(SocketAddr, SocketAddr), Rc<StreamConn>>>,
    /// Scratch space for relayed data bound for a connection.
    pub(super) scratch: RefCell<Box<[u8]>>,
    /// Bytes queued towards this worker's connections, and their bound.
    pub(super) queued: Rc<QueueBudget>,
    pub(super) connections: Arc<ConnectionCounts>,
    pub(super) limits: StreamLimits,
    /// Wakes the task that sends [`client_tx`](Self::client_tx).
    pub(super) flush: tokio::sync::Notify,
    /// DTLS sockets and their sessions.
    pub(super) dtls: Box<[Rc<DtlsEndpoint>]>,
    /// TCP relays and their peer connections (RFC 6062).
    pub(super) tcp: TcpRelays,
    credentials: Option<Arc<Credentials>>,
    /// Channel routes go here (the core announces them only when it is on).
    fast_path: Option<Arc<Mutex<FastPath>>>,
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
            tokio::task::spawn_local(timer_loop(Rc::clone(&ctx), Arc::clone(&self.reservations)));
            if let Some(secrets) = self.secrets.clone() {
                tokio::task::spawn_local(secrets_loop(Rc::clone(&ctx), secrets));
            }
            if let Some(addresses) = self.host_addresses.clone() {
                // The first set is in place before any packet is handled.
                let current = addresses.borrow().clone();
                ctx.server.borrow_mut().set_host_addresses(&current);
                tokio::task::spawn_local(host_addresses_loop(Rc::clone(&ctx), addresses));
            }
            tokio::task::spawn_local(super::relay::flusher(Rc::clone(&ctx)));
            if let Some(inbox) = inbox {
                tokio::task::spawn_local(tcp_relay::mail_loop(Rc::clone(&ctx), inbox));
            }
            // Returning drops the LocalSet's tasks: sockets close with them.
            let _ = shutdown.wait_for(|stop| *stop).await;
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
            let relays = ShellRelays::new(weak.clone(), Arc::clone(&self.reservations));
            WorkerCtx {
                server: RefCell::new(Server::with_relays(
                    Arc::clone(&self.core),
                    shard,
                    Box::new(relays),
                )),
                listeners: sockets.into_boxed_slice(),
                client_tx,
                peer_rx: RefCell::new(RecvBatch::new(BATCH, RECV_SLOT)),
                relays: RefCell::new(FxHashMap::default()),
                pending: RefCell::new(Vec::new()),
                streams: RefCell::new(FxHashMap::default()),
                scratch: RefCell::new(vec![0u8; MAX_MESSAGE].into_boxed_slice()),
                queued: Rc::new(QueueBudget::new(self.limits.max_buffered_per_worker)),
                connections: Arc::clone(&self.connections),
                limits: self.limits,
                flush: tokio::sync::Notify::new(),
                dtls: dtls.into_iter().map(Rc::new).collect(),
                tcp: TcpRelays::new(self.id, Arc::clone(&self.mailboxes)),
                credentials: self.credentials.clone(),
                fast_path: self.fast_path.clone(),
            }
        });
        if let Some(credentials) = &ctx.credentials {
            let mut server = ctx.server.borrow_mut();
            let now = Instant::now();
            for (name, keys) in credentials.static_users() {
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
        let Some(counted) = ctx.connections.admit(remote.ip(), ctx.limits.per_ip) else {
            continue;
        };
        let source = secure.sources.key(remote.ip());
        let started = secure
            .handshake_rate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .allow(source, Instant::now(), secure.handshakes_per_second);
        if !started {
            continue;
        }
        if secure.handshakes.fetch_add(1, Ordering::Relaxed) >= secure.max_handshakes {
            secure.handshakes.fetch_sub(1, Ordering::Relaxed);
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
                let limits = ctx.limits;
                stream::serve(ctx, tls, Transport::Tls, local, remote, limits).await;
            }
            drop(counted);
        });
    }
}

impl WorkerCtx {
    /// How relayed data reaches the client of the allocation `options`
    /// describes: the UDP listener serving its server address, or its
    /// connection.
    pub(super) fn client_path(&self, options: &RelayOptions) -> Option<ClientPath> {
        match options.transport {
            Transport::Udp => self.listener_for(options.server).map(ClientPath::Udp),
            Transport::Tcp | Transport::Tls => self
                .streams
                .borrow()
                .get(&(options.server, options.client))
                .map(|conn| ClientPath::Stream(Rc::clone(conn))),
            Transport::Dtls => self
                .dtls
                .iter()
                .find(|d| d.serves(options.server))
                .map(|d| ClientPath::Dtls(Rc::clone(d))),
        }
    }

    /// The UDP listener serving the local address `server`: the socket bound
    /// to it, or the wildcard socket of its family and port.
    pub(super) fn listener_for(&self, server: SocketAddr) -> Option<usize> {
        self.listeners.iter().position(|l| {
            let bound = l.local_addr();
            bound == server
                || (bound.ip().is_unspecified()
                    && bound.port() == server.port()
                    && bound.is_ipv4() == server.is_ipv4())
        })
    }

    /// Acts on what the core asked for while handling packets: starts relay
    /// sockets bound meanwhile, looks up unknown users, opens and closes
    /// peer connections, and sends what the core owes clients.
    pub(super) fn after_packets(self: &Rc<Self>) {
        super::relay::start_pending(self);
        loop {
            let Some(event) = self.server.borrow_mut().poll_event() else {
                break;
            };
            match event {
                Event::NeedCredentials { username } => {
                    let Some(credentials) = self.credentials.clone() else {
                        continue;
                    };
                    let ctx = Rc::clone(self);
                    tokio::task::spawn_local(async move {
                        let resolved = credentials.lookup(&username).await;
                        let now = Instant::now();
                        ctx.server.borrow_mut().resolve_credentials(
                            now,
                            &username,
                            resolved.lookup,
                            now + resolved.valid_for,
                        );
                        ctx.replay();
                    });
                }
                Event::RouteChannel { route, until } => {
                    self.with_fast_path(|fast_path| fast_path.route(&route, until).map(drop))
                }
                Event::UnrouteChannel { route } => self.with_fast_path(|fast_path| {
                    fast_path.unroute(&route);
                    Ok(())
                }),
                other => tcp_relay::handle_event(self, other),
            }
        }
        let mut out = [0u8; OWED_SLOT];
        loop {
            let Some(transmit) = self.server.borrow_mut().poll_transmit(&mut out) else {
                break;
            };
            self.deliver(transmit, &out[..transmit.len]);
        }
    }

    /// Updates the XDP routes (a control-path call: once per ChannelBind,
    /// CreatePermission or Refresh, never per packet). A route that cannot
    /// be written leaves its channel on the sockets, which relay it as
    /// before: it is logged once, not per channel.
    fn with_fast_path(
        &self,
        update: impl FnOnce(&mut FastPath) -> Result<(), turnpike_xdp::Error>,
    ) {
        static WARNED: AtomicBool = AtomicBool::new(false);
        let Some(fast_path) = &self.fast_path else {
            return;
        };
        // A worker that panicked holding the lock left whole routes behind
        // (each update is one map write per side): keep using them.
        let mut fast_path = fast_path.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(err) = update(&mut fast_path)
            && !WARNED.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(%err, "XDP route not written; its channel stays on the sockets (logged once)");
        }
    }

    /// Sends a message the core produced outside the packet path (a replayed
    /// answer, a deferred Connect answer, a ConnectionAttempt) on whatever
    /// it is for: a DTLS session, a connection of this worker or a data
    /// connection waiting on another, or a UDP listener. Messages to clients
    /// who left are dropped.
    fn deliver(self: &Rc<Self>, transmit: Transmit, payload: &[u8]) {
        match transmit.transport {
            Transport::Dtls => {
                if let Some(d) = self.dtls.iter().find(|d| d.serves(transmit.source)) {
                    let now = Instant::now();
                    // Answers the client retransmits if lost.
                    let _ = d.send(now, transmit.destination, payload);
                    d.drain(self, now, None);
                }
            }
            Transport::Tcp | Transport::Tls => {
                let (local, remote) = (transmit.source, transmit.destination);
                if tcp_relay::answer_waiter(self, local, remote, payload) {
                    return;
                }
                if let Some(conn) = self.streams.borrow().get(&(local, remote)) {
                    conn.push(payload);
                    conn.flush();
                }
            }
            Transport::Udp => {
                let Some(i) = self.listener_for(transmit.source) else {
                    return;
                };
                let wildcard = self.listeners[i].local_addr().ip().is_unspecified();
                // A full batch drops the answer; the client retransmits.
                self.client_tx[i].borrow_mut().push(
                    transmit.destination,
                    wildcard.then_some(transmit.source.ip()),
                    payload,
                );
                self.flush.notify_one();
            }
        }
    }

    /// Answers the requests held for a lookup that just completed. They go
    /// out with the relayed data on the next flush.
    fn replay(self: &Rc<Self>) {
        let mut out = vec![0u8; MAX_MESSAGE];
        loop {
            let replayed = self
                .server
                .borrow_mut()
                .poll_replay(Instant::now(), &mut out);
            let transmit = match replayed {
                None => break,
                Some(None) => continue,
                Some(Some(transmit)) => transmit,
            };
            self.after_packets();
            self.deliver(transmit, &out[..transmit.len]);
        }
    }
}

/// Hands each new set of the host's addresses to the shard.
async fn host_addresses_loop(ctx: Rc<WorkerCtx>, mut addresses: watch::Receiver<Arc<[IpAddr]>>) {
    while addresses.changed().await.is_ok() {
        let current = addresses.borrow_and_update().clone();
        ctx.server.borrow_mut().set_host_addresses(&current);
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
/// Answers normally leave from the socket their request arrived on; RFC 5780
/// CHANGE-REQUEST answers leave from another listener, and relayed data from
/// the allocation's relay socket.
async fn udp_loop(ctx: Rc<WorkerCtx>, index: usize) {
    let socket = &ctx.listeners[index];
    let bound = socket.local_addr();
    let wildcard = bound.ip().is_unspecified();
    let mut rx = RecvBatch::new(BATCH, RECV_SLOT);
    let mut tx = SendBatch::new(BATCH, SEND_SLOT);
    let mut redirect: Vec<SendBatch> = if !ctx.server.borrow().config().nat_discovery.is_empty() {
        (0..ctx.listeners.len())
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
                    let t = server.handle_packet(now, packet, room)?;
                    if t.source == local {
                        return Some((t.len, t.destination, wildcard.then_some(t.source.ip())));
                    }
                    let payload = &room[..t.len];
                    // Client → peer. One sendto per datagram: each relay
                    // is its own socket.
                    if super::relay::to_peer(&ctx, &mut server, &t, payload) {
                        return None;
                    }
                    // RFC 5780 CHANGE-REQUEST: another listener answers.
                    let j = ctx
                        .listeners
                        .iter()
                        .position(|s| s.local_addr() == t.source)?;
                    redirect.get_mut(j)?.push(t.destination, None, payload);
                    None
                });
            }
        }
        ctx.after_packets();
        if !tx.is_empty()
            && let Err(err) = socket.send_batch(&mut tx).await
        {
            tracing::debug!(address = %bound, %err, "udp send failed");
        }
        for (j, batch) in redirect.iter_mut().enumerate() {
            if !batch.is_empty()
                && let Err(err) = ctx.listeners[j].send_batch(batch).await
            {
                tracing::debug!(address = %ctx.listeners[j].local_addr(), %err, "udp send failed");
            }
        }
    }
}

/// Expires allocations once a second (the core's sweep interval), and
/// unclaimed port reservations.
async fn timer_loop(ctx: Rc<WorkerCtx>, reservations: Arc<Reservations>) {
    let mut tick = tokio::time::interval(turnpike_core::server::SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        ctx.server.borrow_mut().handle_timeout(now);
        // Timed-out Connects are answered, unbound connections closed.
        ctx.after_packets();
        // Reserved ports nobody claimed are closed when they expire, not
        // when the next reservation happens to be made.
        reservations.expire(now);
    }
}

async fn tcp_accept_loop(ctx: Rc<WorkerCtx>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                let Some(counted) = ctx.connections.admit(remote.ip(), ctx.limits.per_ip) else {
                    // Over the per-IP limit: closed at once.
                    continue;
                };
                let Ok(local) = stream.local_addr() else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let ctx = Rc::clone(&ctx);
                tokio::task::spawn_local(async move {
                    let limits = ctx.limits;
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
