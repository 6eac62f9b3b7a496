//! One DTLS socket of a worker and its sessions, as the rest of the worker
//! sees them: what sends to a session and what is known about it. Feeding
//! decrypted messages to the core is [`super`]'s.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use rustc_hash::FxHashMap;
use tokio::sync::Notify;
use turnpike_core::{DropReason, FiveTuple, Transport};
use turnpike_dtls::{DtlsError, Sessions};

use crate::net;
use crate::net::udp::{BatchUdpSocket, SendBatch};
use crate::runtime::stream::conn::Counted;
use crate::tls::Certificates;

/// What the shell keeps about an established session.
pub(crate) struct Session {
    /// The local IP the peer talks to (a wildcard socket learns it from
    /// each datagram).
    pub(crate) local: IpAddr,
    /// Closed then unless it has made an allocation; `None` once it has.
    pub(crate) auth_deadline: Option<Instant>,
    /// Its place in the per-source connection count.
    pub(crate) _counted: Counted,
}

/// One DTLS socket of a worker and its sessions.
pub(crate) struct DtlsEndpoint {
    pub(crate) socket: BatchUdpSocket,
    pub(crate) sessions: RefCell<Box<dyn Sessions>>,
    /// Established sessions by peer; bounded by the sessions.
    pub(crate) locals: RefCell<FxHashMap<SocketAddr, Session>>,
    /// The certificate generation the sessions were given.
    generation: Cell<u64>,
    tx: RefCell<SendBatch>,
    /// Wakes the endpoint's task to send what was encrypted outside it
    /// (answers and messages the core owed).
    pub(crate) wake: Notify,
}

impl DtlsEndpoint {
    pub(crate) fn new(
        socket: BatchUdpSocket,
        sessions: Box<dyn Sessions>,
        generation: u64,
    ) -> Self {
        DtlsEndpoint {
            socket,
            sessions: RefCell::new(sessions),
            locals: RefCell::new(FxHashMap::default()),
            generation: Cell::new(generation),
            // One datagram at a time: a batch takes one of any size
            // beyond its slots, so the slot itself can be minimal.
            tx: RefCell::new(SendBatch::new(1, 1)),
            wake: Notify::new(),
        }
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.socket.local_addr()
    }

    /// Whether this endpoint serves the local address `server`.
    pub(crate) fn serves(&self, server: SocketAddr) -> bool {
        net::serves(self.local_addr(), server)
    }

    /// Encrypts one message for the established session with `peer`. The
    /// datagram goes out with the next [`drain`](Self::drain). A message
    /// the session cannot take is dropped; the reason is returned when it
    /// is worth counting (a client that has gone is not).
    pub(crate) fn send(
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

    /// The 5-tuple of the session with `peer`, talking to `local`.
    pub(crate) fn five_tuple(&self, peer: SocketAddr, local: IpAddr) -> FiveTuple {
        FiveTuple {
            transport: Transport::Dtls,
            client: peer,
            server: SocketAddr::new(local, self.local_addr().port()),
        }
    }

    pub(crate) fn transmit(&self, to: SocketAddr, source_ip: Option<IpAddr>, datagram: &[u8]) {
        let source_ip = source_ip.and_then(|ip| net::source_ip(self.local_addr(), ip));
        let mut tx = self.tx.borrow_mut();
        tx.push(to, source_ip, datagram);
        // A full socket buffer drops the datagram; DTLS retransmits
        // handshakes, and data is datagrams anyway.
        let _ = self.socket.try_send_batch(&mut tx);
        tx.clear();
    }

    /// Gives the sessions the certificate in service if it changed since
    /// they were last given one. Called before every received batch, so a
    /// handshake whose ClientHello arrives after a reload returned (SIGHUP,
    /// `POST /v1/reload`, the file watcher) gets the new certificate, as on
    /// TLS; unchanged, it costs one `ArcSwap` load and a compare.
    pub(crate) fn refresh_certificate(&self, certs: &Certificates) {
        if certs.generation() == self.generation.get() {
            return;
        }
        let (generation, pem) = certs.pem_with_generation();
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
