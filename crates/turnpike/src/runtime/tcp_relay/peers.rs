//! A worker's RFC 6062 state: its TCP relays' listeners, the peer
//! connections of its shard's allocations, the data connections waiting
//! for the answer to their ConnectionBind, and the mail workers send each
//! other about them. The core's events about peer connections are carried
//! out here, synchronously; the tasks that connect, accept and pipe bytes
//! are [`super`]'s.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot};
use turnpike_core::{ConnectionId, FiveTuple, PeerSocket, RelayedAddress, Server, Transport};

use crate::runtime::task::TaskGuard;

/// What workers send each other about peer connections.
pub(crate) enum Mail {
    /// A ConnectionBind for a connection of the recipient's shard arrived
    /// on worker `from`'s data connection `(local, remote)`.
    Bind {
        from: usize,
        transport: Transport,
        local: SocketAddr,
        remote: SocketAddr,
        message: Box<[u8]>,
        reply: oneshot::Sender<BindReply>,
    },
    /// The pair `id`, hosted by the recipient, must close: its allocation
    /// ended.
    Close { id: ConnectionId },
    /// The pair `id`, owned by the recipient's shard, closed.
    Closed { id: ConnectionId },
}

/// The answer to a forwarded ConnectionBind, and on success the peer
/// connection to pipe it to.
pub(crate) struct BindReply {
    pub(crate) answer: Box<[u8]>,
    pub(crate) peer: Option<(ConnectionId, std::net::TcpStream)>,
}

/// A client connection: (local, remote) address.
type StreamKey = (SocketAddr, SocketAddr);

/// A peer connection on the worker that owns it.
pub(crate) enum PeerConn {
    /// Being opened for a Connect.
    Connecting(TaskGuard),
    /// Established, waiting for the client's ConnectionBind; unread.
    Unbound(TcpStream),
    /// Handed to worker `host`, which runs its pipe.
    Bound { host: usize },
}

/// A data connection on another worker (or this one) waiting for the
/// answer to its ConnectionBind from this shard.
struct Waiter {
    /// The worker the data connection is on.
    worker: usize,
    reply: oneshot::Sender<BindReply>,
    /// The answer, once the core has written it: sent with the peer
    /// connection the core binds right after it.
    answer: Option<Box<[u8]>>,
}

/// A worker's share of RFC 6062.
pub(crate) struct TcpRelays {
    pub(crate) index: usize,
    pub(crate) mailboxes: Arc<[mpsc::UnboundedSender<Mail>]>,
    /// Listening sockets of this shard's TCP relayed addresses.
    pub(crate) listeners: RefCell<FxHashMap<SocketAddr, TaskGuard>>,
    /// Peer connections of this shard's allocations.
    pub(crate) peers: RefCell<FxHashMap<ConnectionId, PeerConn>>,
    /// Connections the core asked to open, for the opener task.
    pub(crate) to_open: RefCell<Vec<(ConnectionId, RelayedAddress, PeerSocket)>>,
    /// Wakes the opener task.
    pub(crate) opener: Notify,
    waiters: RefCell<FxHashMap<StreamKey, Waiter>>,
    /// Peer connections just bound, leaving with the answer to their data
    /// connection (local, remote).
    handoffs: RefCell<FxHashMap<StreamKey, (ConnectionId, std::net::TcpStream)>>,
    /// Pipes running on this worker, by the connection they carry.
    pub(crate) pipes: RefCell<FxHashMap<ConnectionId, Rc<Notify>>>,
}

impl TcpRelays {
    pub(crate) fn new(index: usize, mailboxes: Arc<[mpsc::UnboundedSender<Mail>]>) -> Self {
        TcpRelays {
            index,
            mailboxes,
            listeners: RefCell::default(),
            peers: RefCell::default(),
            to_open: RefCell::default(),
            opener: Notify::new(),
            waiters: RefCell::default(),
            handoffs: RefCell::default(),
            pipes: RefCell::default(),
        }
    }

    pub(crate) fn mail(&self, worker: usize, mail: Mail) {
        if let Some(mailbox) = self.mailboxes.get(worker) {
            // Fails only while the server shuts down.
            let _ = mailbox.send(mail);
        }
    }

    /// Files a forwarded ConnectionBind's data connection `(local, remote)`
    /// of worker `from` until the core answers it.
    pub(crate) fn wait(
        &self,
        from: usize,
        local: SocketAddr,
        remote: SocketAddr,
        reply: oneshot::Sender<BindReply>,
    ) {
        let mut waiters = self.waiters.borrow_mut();
        // Data connections that gave up waiting (a request held for a
        // lookup that never came back).
        waiters.retain(|_, w| !w.reply.is_closed());
        let waiter = Waiter {
            worker: from,
            reply,
            answer: None,
        };
        waiters.insert((local, remote), waiter);
    }

    /// Keeps the core's answer for a waiting data connection, if `to` is
    /// one; `false` if it is not. It leaves with [`send_replies`](Self::send_replies).
    pub(crate) fn answer_waiter(&self, to: &FiveTuple, answer: &[u8]) -> bool {
        match self.waiters.borrow_mut().get_mut(&(to.server, to.client)) {
            Some(waiter) => {
                waiter.answer = Some(answer.into());
                true
            }
            None => false,
        }
    }

    /// Sends the answers kept for waiting data connections, each with the
    /// peer connection bound to it. Returns whether the core was told of a
    /// connection to forget (its data connection went away meanwhile).
    pub(crate) fn send_replies(&self, server: &mut Server) -> bool {
        let answered: Vec<StreamKey> = self
            .waiters
            .borrow()
            .iter()
            .filter(|(_, w)| w.answer.is_some())
            .map(|(key, _)| *key)
            .collect();
        let mut forgot = false;
        for key in answered {
            let Some(Waiter {
                reply,
                answer: Some(answer),
                ..
            }) = self.waiters.borrow_mut().remove(&key)
            else {
                continue;
            };
            let peer = self.handoffs.borrow_mut().remove(&key);
            // The data connection went away meanwhile: so does its peer
            // connection.
            if let Err(BindReply {
                peer: Some((id, _)),
                ..
            }) = reply.send(BindReply { answer, peer })
            {
                self.peers.borrow_mut().remove(&id);
                server.peer_connection_closed(id);
                forgot = true;
            }
        }
        forgot
    }

    /// [`Event::ConnectionBound`](turnpike_core::Event::ConnectionBound):
    /// the peer connection leaves with the answer to the data connection.
    pub(crate) fn connection_bound(
        &self,
        server: &mut Server,
        id: ConnectionId,
        client: FiveTuple,
    ) {
        let key = (client.server, client.client);
        let host = self.waiters.borrow().get(&key).map(|w| w.worker);
        let mut peers = self.peers.borrow_mut();
        let stream = match (peers.remove(&id), host) {
            (Some(PeerConn::Unbound(stream)), Some(host)) => {
                peers.insert(id, PeerConn::Bound { host });
                stream.into_std().ok()
            }
            _ => None,
        };
        drop(peers);
        match stream {
            Some(stream) => {
                self.handoffs.borrow_mut().insert(key, (id, stream));
            }
            None => {
                self.peers.borrow_mut().remove(&id);
                server.peer_connection_closed(id);
            }
        }
    }

    /// [`Event::CloseConnection`](turnpike_core::Event::CloseConnection).
    pub(crate) fn close_connection(&self, id: ConnectionId) {
        self.to_open.borrow_mut().retain(|(open, ..)| *open != id);
        // Dropping a connecting task or an unbound socket closes it.
        let removed = self.peers.borrow_mut().remove(&id);
        if let Some(PeerConn::Bound { host }) = removed {
            self.mail(host, Mail::Close { id });
        }
    }

    /// Closes a TCP relayed address's listener (its connections are closed
    /// by their own events).
    pub(crate) fn release(&self, relay: SocketAddr) {
        self.listeners.borrow_mut().remove(&relay);
    }
}
