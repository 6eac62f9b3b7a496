//! A UDP relayed address's socket as the worker keeps it, and the sockets
//! reserved by EVEN-PORT, which any worker may take over.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Mutex;
use std::time::Instant;

use rustc_hash::FxHashMap;
use socket2::Socket;
use turnpike_core::DropReason;

use crate::net::udp::BatchUdpSocket;
use crate::runtime::task::TaskGuard;

/// A relay socket of this worker and the task receiving on it.
pub(crate) struct RelaySocket {
    pub(crate) socket: Rc<BatchUdpSocket>,
    /// Whether the socket sets DF now: switched when a datagram asks
    /// otherwise (RFC 8656 §14), which only a client mixing Send
    /// indications with and without DONT-FRAGMENT makes happen.
    dont_fragment: Cell<bool>,
    /// Stops the receiving task when the relay is removed.
    _task: TaskGuard,
}

impl RelaySocket {
    pub(crate) fn new(socket: Rc<BatchUdpSocket>, dont_fragment: bool, task: TaskGuard) -> Self {
        RelaySocket {
            socket,
            dont_fragment: Cell::new(dont_fragment),
            _task: task,
        }
    }

    /// Sends a client's datagram to a peer, without waiting: a full socket
    /// buffer drops it, as a router would. The socket's DF setting follows
    /// the datagram's. A drop worth counting is returned with its reason.
    pub(crate) fn send(
        &self,
        payload: &[u8],
        peer: SocketAddr,
        dont_fragment: bool,
    ) -> Option<DropReason> {
        let err = match self.try_send(payload, peer, dont_fragment) {
            Ok(()) => return None,
            Err(err) => err,
        };
        match err.raw_os_error() {
            Some(libc::EMSGSIZE) if dont_fragment => Some(DropReason::PathMtu),
            Some(libc::EMSGSIZE) => Some(DropReason::TooBigForPeer),
            Some(libc::EAGAIN | libc::ENOBUFS) => Some(DropReason::QueueFull),
            // Unreachable peers (queued ICMP errors) and the like: the
            // datagram is lost as it would be in the network.
            _ => None,
        }
    }

    fn try_send(&self, payload: &[u8], peer: SocketAddr, dont_fragment: bool) -> io::Result<()> {
        if self.dont_fragment.get() != dont_fragment {
            // Sending without the DF the client asked for would break its
            // path MTU discovery: failing here drops the datagram instead.
            self.socket.set_dont_fragment(dont_fragment)?;
            self.dont_fragment.set(dont_fragment);
        }
        self.socket.try_send_to(payload, peer).map(drop)
    }
}

/// Reserved relay sockets, shared by all workers.
#[derive(Debug, Default)]
pub(crate) struct Reservations {
    sockets: Mutex<FxHashMap<[u8; 8], (Socket, Instant)>>,
}

impl Reservations {
    pub(crate) fn put(&self, token: [u8; 8], socket: Socket, until: Instant) {
        if let Ok(mut sockets) = self.sockets.lock() {
            let now = Instant::now();
            // Dropping an expired reservation closes its socket.
            sockets.retain(|_, (_, until)| *until > now);
            sockets.insert(token, (socket, until));
        }
    }

    /// Closes the sockets of expired reservations.
    pub(crate) fn expire(&self, now: Instant) {
        if let Ok(mut sockets) = self.sockets.lock() {
            sockets.retain(|_, (_, until)| *until > now);
        }
    }

    /// When the next reservation expires.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        let sockets = self.sockets.lock().ok()?;
        sockets.values().map(|(_, until)| *until).min()
    }

    pub(crate) fn take(&self, token: &[u8; 8], now: Instant) -> Option<Socket> {
        let mut sockets = self.sockets.lock().ok()?;
        match sockets.remove(token) {
            Some((socket, until)) if until > now => Some(socket),
            _ => None,
        }
    }
}
