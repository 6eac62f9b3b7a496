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

pub(crate) mod endpoint;

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use turnpike_core::stats::TransportLabel;
use turnpike_core::{Packet, Transport};
use turnpike_dtls::Output;

use super::context::{BATCH, RECV_ERROR_BACKOFF, RECV_SLOT, WorkerCtx, sleep_until};
use crate::net::udp::RecvBatch;
use crate::tls::Certificates;
use endpoint::{DtlsEndpoint, Session};

/// How often a worker closes sessions past their authentication deadline
/// (and picks up a renewed certificate while no datagram arrives, so the
/// old one's memory is given back).
const CERTIFICATE_CHECK: Duration = Duration::from_secs(1);

impl DtlsEndpoint {
    /// Acts on everything the sessions produced: sends datagrams, hands
    /// decrypted messages to the core (and encrypts its answers), ends the
    /// allocations of sessions that closed. `arrived` is the peer and local
    /// IP of the datagram just handled, for answers to peers without a
    /// session yet.
    pub(crate) fn drain(
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
                    let limit = ctx.limits.get().per_ip;
                    ctx.count(|s| s.handshakes.record(TransportLabel::Dtls));
                    let Some(counted) = ctx.connections.admit(from.ip(), limit) else {
                        // Over its source's connection limit.
                        ctx.count(|s| s.connections_refused.record(TransportLabel::Dtls));
                        self.sessions.borrow_mut().close(peer);
                        continue;
                    };
                    ctx.count(|s| {
                        s.connections_accepted.record(TransportLabel::Dtls);
                        s.connections_open.record(TransportLabel::Dtls);
                    });
                    let session = Session {
                        local: ip,
                        auth_deadline: Some(now + ctx.limits.get().auth_timeout),
                        _counted: counted,
                    };
                    self.locals.borrow_mut().insert(from, session);
                }
                Some(Output::Closed { peer }) => {
                    let session = self.locals.borrow_mut().remove(&peer);
                    if session.is_none() {
                        // It never reached Established: a handshake that
                        // failed or timed out.
                        ctx.count(|s| s.handshake_failures.record(TransportLabel::Dtls));
                    }
                    if let Some(session) = session {
                        ctx.count(|s| s.connections_open.sub(TransportLabel::Dtls, 1));
                        let five_tuple = self.five_tuple(peer, session.local);
                        ctx.server
                            .borrow_mut()
                            .connection_closed(Instant::now(), &five_tuple);
                        ctx.process_pending();
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
        server.handle_client_packet(now, packet, &mut out);
        // Answers are encrypted for the session here and leave as this
        // drain goes on.
        ctx.process_outputs(&mut server, &mut out);
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
                // Before any ClientHello of the batch can start a handshake:
                // a reload that has returned applies to it (checking only on
                // the tick left DTLS on the old certificate for up to a
                // second after TLS and /v1/status had the new one).
                endpoint.refresh_certificate(&certs);
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
            // Records encrypted outside this task (answers polled after a
            // lookup, messages the core owed) are sent.
            () = endpoint.wake.notified() => endpoint.drain(&ctx, Instant::now(), None),
            _ = certificate_check.tick() => {
                endpoint.refresh_certificate(&certs);
                let now = Instant::now();
                endpoint.close_unauthenticated(&ctx, now);
                endpoint.drain(&ctx, now, None);
            }
        }
    }
}
