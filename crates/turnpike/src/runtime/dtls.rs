//! Client sessions over DTLS (RFC 6347; TURN and STUN over DTLS, port
//! 5349/udp by default): the worker's side of [`turnpike_dtls::Sessions`].
//!
//! Each worker binds its own `SO_REUSEPORT` socket per DTLS address, so a
//! client's datagrams (hashed by 4-tuple) always reach the worker holding its
//! session. Decrypted records are STUN or ChannelData messages for the core,
//! with [`Transport::Dtls`]; what the core answers, and what peers send to an
//! allocation made over DTLS, is encrypted for the session and sent from the
//! address the client talks to. A session that ends (close_notify, idle or
//! handshake timeout) ends its allocation, as a closed TCP connection does.
//!
//! Sessions are held to the limits of TCP and TLS connections: each counts
//! against its source's `limits.max_connections_per_ip`, all workers and
//! connection transports together (a session over it is closed as soon as
//! it is established), and one that has made no allocation
//! `limits.auth_timeout` after it was established is closed, whatever else
//! it sends (Binding requests do not keep it).
//!
//! DTLS costs a few allocations per datagram (one buffer per record each
//! way, inside the session library); the plain UDP path stays free of them.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use turnpike_core::{DropReason, FiveTuple, Packet, Transport};
use turnpike_dtls::{DtlsError, Output, Sessions};

use super::stream::Counted;
use super::worker::{BATCH, RECV_ERROR_BACKOFF, RECV_SLOT, SEND_SLOT, WorkerCtx};
use crate::net::udp::{BatchUdpSocket, RecvBatch, SendBatch};
use crate::tls::Certificates;

/// How often a worker checks whether the certificate was renewed, and
/// closes sessions past their authentication deadline.
const CERTIFICATE_CHECK: Duration = Duration::from_secs(1);

/// What the shell keeps about an established session.
struct Session {
    /// The local IP the peer talks to (a wildcard socket learns it from
    /// each datagram).
    local: IpAddr,
    /// Closed then unless it has made an allocation; `None` once it has.
    auth_deadline: Option<Instant>,
    /// Its place in the per-source connection count.
    _counted: Counted,
}

/// One DTLS socket of a worker and its sessions.
pub(super) struct DtlsEndpoint {
    socket: BatchUdpSocket,
    sessions: RefCell<Box<dyn Sessions>>,
    /// Established sessions by peer; bounded by the sessions.
    locals: RefCell<FxHashMap<SocketAddr, Session>>,
    /// The certificate generation the sessions were given.
    generation: Cell<u64>,
    tx: RefCell<SendBatch>,
}

impl DtlsEndpoint {
    pub(super) fn new(
        socket: BatchUdpSocket,
        sessions: Box<dyn Sessions>,
        generation: u64,
    ) -> Self {
        DtlsEndpoint {
            socket,
            sessions: RefCell::new(sessions),
            locals: RefCell::new(FxHashMap::default()),
            generation: Cell::new(generation),
            // One datagram at a time, of any size a record can have.
            tx: RefCell::new(SendBatch::new(1, SEND_SLOT)),
        }
    }

    pub(super) fn local_addr(&self) -> SocketAddr {
        self.socket.local_addr()
    }

    /// Whether this endpoint serves the local address `server`.
    pub(super) fn serves(&self, server: SocketAddr) -> bool {
        let bound = self.local_addr();
        bound == server
            || (bound.ip().is_unspecified()
                && bound.port() == server.port()
                && bound.is_ipv4() == server.is_ipv4())
    }

    /// Encrypts one message for the established session with `peer`. The
    /// datagram goes out with the next [`drain`](Self::drain). A message
    /// the session cannot take is dropped; the reason is returned when it
    /// is worth counting (a client that has gone is not).
    pub(super) fn send(
        &self,
        now: Instant,
        peer: SocketAddr,
        message: &[u8],
    ) -> Option<DropReason> {
        match self.sessions.borrow_mut().send(now, peer, message) {
            Ok(()) => None,
            Err(DtlsError::QueueFull(_)) => Some(DropReason::QueueFull),
            Err(DtlsError::TooLarge { .. }) => Some(DropReason::TooBigForClient),
            Err(_) => None,
        }
    }

    /// Acts on everything the sessions produced: sends datagrams, hands
    /// decrypted messages to the core (and encrypts its answers), ends the
    /// allocations of sessions that closed. `arrived` is the peer and local
    /// IP of the datagram just handled, for answers to peers without a
    /// session yet.
    pub(super) fn drain(
        &self,
        ctx: &Rc<WorkerCtx>,
        now: Instant,
        arrived: Option<(SocketAddr, IpAddr)>,
    ) {
        let bound = self.local_addr();
        loop {
            let output = self.sessions.borrow_mut().poll_output();
            match output {
                None => return,
                Some(Output::Transmit { to, data }) => {
                    let ip = match arrived {
                        Some((from, ip)) if from == to => Some(ip),
                        _ => self.locals.borrow().get(&to).map(|s| s.local),
                    };
                    self.transmit(to, ip, &data);
                }
                Some(Output::Established { peer }) => {
                    let Some((from, ip)) = arrived.filter(|(from, _)| *from == peer) else {
                        continue;
                    };
                    let limit = ctx.limits.per_ip;
                    let Some(counted) = ctx.connections.admit(from.ip(), limit) else {
                        // Over its source's connection limit.
                        self.sessions.borrow_mut().close(peer);
                        continue;
                    };
                    let session = Session {
                        local: ip,
                        auth_deadline: Some(now + ctx.limits.auth_timeout),
                        _counted: counted,
                    };
                    self.locals.borrow_mut().insert(from, session);
                }
                Some(Output::Closed { peer }) => {
                    if let Some(session) = self.locals.borrow_mut().remove(&peer) {
                        let five_tuple = self.five_tuple(peer, session.local);
                        ctx.server.borrow_mut().connection_closed(&five_tuple);
                    }
                }
                Some(Output::Data { from, data }) => {
                    let Some(ip) = self.locals.borrow().get(&from).map(|s| s.local) else {
                        continue;
                    };
                    self.to_core(ctx, now, SocketAddr::new(ip, bound.port()), from, &data);
                }
            }
        }
    }

    /// One decrypted message from a client, through the core.
    fn to_core(
        &self,
        ctx: &Rc<WorkerCtx>,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        data: &[u8],
    ) {
        let mut out = ctx.scratch.borrow_mut();
        let packet = Packet {
            transport: Transport::Dtls,
            local,
            remote,
            data,
        };
        let mut server = ctx.server.borrow_mut();
        if let Some(t) = server.handle_packet(now, packet, &mut out) {
            let payload = &out[..t.len];
            if t.transport == Transport::Dtls && t.source == local {
                // Answers to requests: the client retransmits what is lost.
                let _ = self.send(now, t.destination, payload);
            } else {
                super::relay::to_peer(ctx, &mut server, &t, payload);
            }
        }
        drop((server, out));
        ctx.after_packets();
    }

    /// The 5-tuple of the session with `peer`, talking to `local`.
    fn five_tuple(&self, peer: SocketAddr, local: IpAddr) -> FiveTuple {
        FiveTuple {
            transport: Transport::Dtls,
            client: peer,
            server: SocketAddr::new(local, self.local_addr().port()),
        }
    }

    /// Closes the sessions that made no allocation by their deadline, as
    /// a TCP connection without one is closed (slowloris over DTLS).
    fn close_unauthenticated(&self, ctx: &WorkerCtx, now: Instant) {
        let mut overdue = Vec::new();
        {
            let server = ctx.server.borrow();
            for (&peer, session) in self.locals.borrow_mut().iter_mut() {
                let Some(deadline) = session.auth_deadline else {
                    continue;
                };
                if server.has_allocation(&self.five_tuple(peer, session.local)) {
                    session.auth_deadline = None;
                } else if now >= deadline {
                    overdue.push(peer);
                }
            }
        }
        for peer in overdue {
            // close() sends close_notify and forgets the session without a
            // Closed output: nothing was allocated to clean up.
            self.sessions.borrow_mut().close(peer);
            self.locals.borrow_mut().remove(&peer);
        }
    }

    fn transmit(&self, to: SocketAddr, source_ip: Option<IpAddr>, datagram: &[u8]) {
        let wildcard = self.local_addr().ip().is_unspecified();
        let mut tx = self.tx.borrow_mut();
        tx.push(to, source_ip.filter(|_| wildcard), datagram);
        // A full socket buffer drops the datagram; DTLS retransmits
        // handshakes, and data is datagrams anyway.
        let _ = self.socket.try_send_batch(&mut tx);
        tx.clear();
    }

    fn refresh_certificate(&self, certs: &Certificates) {
        let (generation, pem) = certs.pem_with_generation();
        if generation == self.generation.get() {
            return;
        }
        self.generation.set(generation);
        if let Err(err) = self
            .sessions
            .borrow_mut()
            .set_certificate(&pem.chain, &pem.key)
        {
            tracing::error!(%err, "DTLS keeps its previous certificate");
        }
    }
}

/// Receives DTLS datagrams on one endpoint and runs the sessions' timers,
/// until the worker stops.
pub(super) async fn dtls_loop(
    ctx: Rc<WorkerCtx>,
    endpoint: Rc<DtlsEndpoint>,
    certs: Arc<Certificates>,
) {
    let bound = endpoint.local_addr();
    let mut rx = RecvBatch::new(BATCH, RECV_SLOT);
    let mut certificate_check = tokio::time::interval(CERTIFICATE_CHECK);
    certificate_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let deadline = endpoint
            .sessions
            .borrow()
            .poll_timeout()
            .map(tokio::time::Instant::from_std);
        tokio::select! {
            received = endpoint.socket.recv_batch(&mut rx) => {
                if let Err(err) = received {
                    tracing::warn!(address = %bound, %err, "dtls receive failed");
                    tokio::time::sleep(RECV_ERROR_BACKOFF).await;
                    continue;
                }
                let now = Instant::now();
                for (data, meta) in rx.iter() {
                    if meta.truncated {
                        continue;
                    }
                    let ip = meta.destination.unwrap_or(bound.ip());
                    endpoint.sessions.borrow_mut().handle_datagram(now, meta.source, data);
                    endpoint.drain(&ctx, now, Some((meta.source, ip)));
                }
            }
            () = sleep_until(deadline) => {
                let now = Instant::now();
                endpoint.sessions.borrow_mut().handle_timeout(now);
                endpoint.drain(&ctx, now, None);
            }
            _ = certificate_check.tick() => {
                endpoint.refresh_certificate(&certs);
                let now = Instant::now();
                endpoint.close_unauthenticated(&ctx, now);
                endpoint.drain(&ctx, now, None);
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
