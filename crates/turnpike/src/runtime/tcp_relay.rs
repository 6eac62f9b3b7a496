//! TCP allocations (RFC 6062) in the shell: relayed addresses that listen,
//! peer connections opened for a Connect or accepted from peers, and the
//! byte pipe between a peer connection and the client's data connection.
//!
//! The core decides everything (who may connect, identifiers, timers); this
//! module carries it out. A peer connection lives on the worker whose shard
//! holds its allocation until the client binds it. The client's data
//! connection, though, lands on whichever worker the kernel picked, so its
//! ConnectionBind is mailed to the owning worker (the CONNECTION-ID names
//! the shard), answered there, and the peer socket travels back with the
//! answer: the pipe then runs on the data connection's worker, with no
//! other thread on its path.
//!
//! Nothing is read from a peer connection before it is bound: the kernel's
//! receive buffer keeps what the peer sends meanwhile and TCP flow control
//! holds the peer back when it is full, so data before ConnectionBind is
//! neither lost nor buffered without bound. The pipe reads only as fast as
//! the other side accepts writes, one fixed buffer per direction.

use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, oneshot};
use turnpike_core::{ConnectionId, Event, Packet, Transport};

use super::relay::TaskGuard;
use super::worker::{SEND_SLOT, WorkerCtx};
use crate::net::tcp;

/// Bytes read per direction of a pipe before they are written on.
const PIPE_BUFFER: usize = 16 * 1024;
/// Pause after an accept error on a relayed address (EMFILE and friends).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What workers send each other about peer connections.
pub(super) enum Mail {
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
pub(super) struct BindReply {
    pub(super) answer: Box<[u8]>,
    pub(super) peer: Option<(ConnectionId, std::net::TcpStream)>,
}

/// A client connection: (local, remote) address.
type StreamKey = (SocketAddr, SocketAddr);

/// A peer connection on the worker that owns it.
enum PeerConn {
    /// Being opened for a Connect.
    Connecting(TaskGuard),
    /// Established, waiting for the client's ConnectionBind; unread.
    Unbound(TcpStream),
    /// Handed to worker `host`, which runs its pipe.
    Bound { host: usize },
}

/// A worker's share of RFC 6062.
pub(super) struct TcpRelays {
    index: usize,
    mailboxes: Arc<[mpsc::UnboundedSender<Mail>]>,
    /// Listening sockets of this shard's TCP relayed addresses.
    listeners: RefCell<FxHashMap<SocketAddr, TaskGuard>>,
    /// Peer connections of this shard's allocations.
    peers: RefCell<FxHashMap<ConnectionId, PeerConn>>,
    /// Data connections (local, remote), on worker `.0`, waiting for the
    /// answer to their ConnectionBind from this shard.
    waiters: RefCell<FxHashMap<StreamKey, (usize, oneshot::Sender<BindReply>)>>,
    /// Peer connections just bound, leaving with the answer to their data
    /// connection (local, remote).
    handoffs: RefCell<FxHashMap<StreamKey, (ConnectionId, std::net::TcpStream)>>,
    /// Pipes running on this worker, by the connection they carry.
    pipes: RefCell<FxHashMap<ConnectionId, Rc<Notify>>>,
}

impl TcpRelays {
    pub(super) fn new(index: usize, mailboxes: Arc<[mpsc::UnboundedSender<Mail>]>) -> Self {
        TcpRelays {
            index,
            mailboxes,
            listeners: RefCell::default(),
            peers: RefCell::default(),
            waiters: RefCell::default(),
            handoffs: RefCell::default(),
            pipes: RefCell::default(),
        }
    }

    fn mail(&self, worker: usize, mail: Mail) {
        if let Some(mailbox) = self.mailboxes.get(worker) {
            // Fails only while the server shuts down.
            let _ = mailbox.send(mail);
        }
    }
}

/// Binds a TCP relayed address and accepts its peers' connections.
pub(super) fn listen(ctx: &Rc<WorkerCtx>, addr: SocketAddr) -> std::io::Result<()> {
    let listener = tcp::bind_relay_listener(addr)?;
    let task = tokio::task::spawn_local(accept_loop(Rc::clone(ctx), listener, addr));
    ctx.tcp
        .listeners
        .borrow_mut()
        .insert(addr, TaskGuard::new(task.abort_handle()));
    Ok(())
}

/// Closes a TCP relayed address's listener (its connections are closed by
/// the core's [`Event::CloseConnection`]s).
pub(super) fn release(ctx: &WorkerCtx, addr: SocketAddr) {
    ctx.tcp.listeners.borrow_mut().remove(&addr);
}

/// RFC 6062 §5.3: a peer connecting to a relayed address is kept (unread)
/// if the core says the client may hear of it, and reset otherwise.
async fn accept_loop(ctx: Rc<WorkerCtx>, listener: TcpListener, relay: SocketAddr) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(address = %relay, %err, "tcp relay accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let id = ctx
            .server
            .borrow_mut()
            .peer_connected(Instant::now(), relay, peer);
        match id {
            Some(id) => {
                let _ = stream.set_nodelay(true);
                ctx.tcp
                    .peers
                    .borrow_mut()
                    .insert(id, PeerConn::Unbound(stream));
                // Sends the ConnectionAttempt.
                ctx.after_packets();
            }
            // No permission: a reset tells the peer at once (a zero linger
            // never blocks the close).
            None => {
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            }
        }
    }
}

/// Carries out the core's RFC 6062 events.
pub(super) fn handle_event(ctx: &Rc<WorkerCtx>, event: Event) {
    match event {
        Event::OpenConnection { id, relay, peer } => {
            let task = tokio::task::spawn_local(open(Rc::clone(ctx), id, relay, peer));
            ctx.tcp.peers.borrow_mut().insert(
                id,
                PeerConn::Connecting(TaskGuard::new(task.abort_handle())),
            );
        }
        Event::ConnectionBound { id, client } => {
            let key = (client.server, client.client);
            let host = ctx.tcp.waiters.borrow().get(&key).map(|(from, _)| *from);
            let mut peers = ctx.tcp.peers.borrow_mut();
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
                    ctx.tcp.handoffs.borrow_mut().insert(key, (id, stream));
                }
                None => {
                    ctx.tcp.peers.borrow_mut().remove(&id);
                    ctx.server.borrow_mut().peer_connection_closed(id);
                }
            }
        }
        Event::CloseConnection { id } => {
            // Dropping a connecting task or an unbound socket closes it.
            let removed = ctx.tcp.peers.borrow_mut().remove(&id);
            if let Some(PeerConn::Bound { host }) = removed {
                ctx.tcp.mail(host, Mail::Close { id });
            }
        }
        Event::NeedCredentials { .. }
        | Event::RouteChannel { .. }
        | Event::UnrouteChannel { .. } => {}
    }
}

/// Opens a connection for a Connect and tells the core how it went. The
/// core's own 30-second timer bounds the attempt: at the deadline it closes
/// the connection, which drops this task.
async fn open(ctx: Rc<WorkerCtx>, id: ConnectionId, relay: SocketAddr, peer: SocketAddr) {
    let result = tcp::connect_from(relay, peer).await;
    let established = result.is_ok();
    let previous = {
        let mut peers = ctx.tcp.peers.borrow_mut();
        match result {
            Ok(stream) => peers.insert(id, PeerConn::Unbound(stream)),
            Err(_) => peers.remove(&id),
        }
    };
    // The entry held this task's own guard: it must not abort the task
    // that is finishing.
    if let Some(PeerConn::Connecting(guard)) = previous {
        guard.disarm();
    }
    ctx.server
        .borrow_mut()
        .connect_finished(Instant::now(), id, established);
    ctx.after_packets();
}

/// Delivers an answer to a data connection waiting on this shard, if
/// `(local, remote)` is one; `false` if it is not.
pub(super) fn answer_waiter(
    ctx: &WorkerCtx,
    local: SocketAddr,
    remote: SocketAddr,
    answer: &[u8],
) -> bool {
    let key = (local, remote);
    let Some((_, reply)) = ctx.tcp.waiters.borrow_mut().remove(&key) else {
        return false;
    };
    let peer = ctx.tcp.handoffs.borrow_mut().remove(&key);
    let reply = reply.send(BindReply {
        answer: answer.into(),
        peer,
    });
    // The data connection went away meanwhile: so does its peer connection.
    if let Err(BindReply {
        peer: Some((id, _)),
        ..
    }) = reply
    {
        ctx.tcp.peers.borrow_mut().remove(&id);
        ctx.server.borrow_mut().peer_connection_closed(id);
    }
    true
}

/// Receives the other workers' (and this worker's own) mail.
pub(super) async fn mail_loop(ctx: Rc<WorkerCtx>, mut inbox: mpsc::UnboundedReceiver<Mail>) {
    let mut out = vec![0u8; SEND_SLOT].into_boxed_slice();
    while let Some(mail) = inbox.recv().await {
        match mail {
            Mail::Bind {
                from,
                transport,
                local,
                remote,
                message,
                reply,
            } => {
                {
                    let mut waiters = ctx.tcp.waiters.borrow_mut();
                    // Data connections that gave up waiting (a request held
                    // for a lookup that never came back).
                    waiters.retain(|_, (_, reply)| !reply.is_closed());
                    waiters.insert((local, remote), (from, reply));
                }
                let packet = Packet {
                    transport,
                    local,
                    remote,
                    data: &message,
                };
                let transmit =
                    ctx.server
                        .borrow_mut()
                        .handle_packet(Instant::now(), packet, &mut out);
                ctx.after_packets();
                // No answer: held for a credential lookup (answered on
                // replay) or dropped (the data connection times out).
                if let Some(t) = transmit {
                    answer_waiter(&ctx, t.source, t.destination, &out[..t.len]);
                }
            }
            Mail::Close { id } => {
                if let Some(stop) = ctx.tcp.pipes.borrow_mut().remove(&id) {
                    stop.notify_one();
                }
            }
            Mail::Closed { id } => {
                if let Entry::Occupied(e) = ctx.tcp.peers.borrow_mut().entry(id) {
                    e.remove();
                }
                ctx.server.borrow_mut().peer_connection_closed(id);
            }
        }
    }
}

/// Sends a ConnectionBind framed from the data connection `(local, remote)`
/// to the shard holding its connection, and waits for the answer until
/// `deadline`.
pub(super) async fn bind(
    ctx: &WorkerCtx,
    id: ConnectionId,
    transport: Transport,
    local: SocketAddr,
    remote: SocketAddr,
    message: &[u8],
    deadline: tokio::time::Instant,
) -> Option<BindReply> {
    let (reply, answer) = oneshot::channel();
    let owner = id.shard(ctx.tcp.mailboxes.len());
    ctx.tcp.mail(
        owner,
        Mail::Bind {
            from: ctx.tcp.index,
            transport,
            local,
            remote,
            message: message.into(),
            reply,
        },
    );
    tokio::time::timeout_at(deadline, answer).await.ok()?.ok()
}

/// Relays bytes between a client's data connection and the peer connection
/// bound to it until either side closes (or the allocation ends), then
/// closes both and tells the owning shard. `early` is what the client sent
/// right behind its ConnectionBind.
pub(super) async fn pipe<S>(
    ctx: &WorkerCtx,
    id: ConnectionId,
    client: S,
    peer: std::net::TcpStream,
    early: Vec<u8>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let owner = id.shard(ctx.tcp.mailboxes.len());
    let stop = Rc::new(Notify::new());
    ctx.tcp.pipes.borrow_mut().insert(id, Rc::clone(&stop));
    if let Ok(peer) = TcpStream::from_std(peer) {
        let (mut client_rx, mut client_tx) = tokio::io::split(client);
        let (mut peer_rx, mut peer_tx) = peer.into_split();
        let upstream = async {
            peer_tx.write_all(&early).await?;
            copy(&mut client_rx, &mut peer_tx).await
        };
        let downstream = copy(&mut peer_rx, &mut client_tx);
        // Whichever ends first ends both: closing one side closes the other
        // (RFC 6062 §5.5).
        tokio::select! {
            _ = upstream => {}
            _ = downstream => {}
            () = stop.notified() => {}
        }
        let _ = client_tx.shutdown().await;
        let _ = peer_tx.shutdown().await;
    }
    ctx.tcp.pipes.borrow_mut().remove(&id);
    ctx.tcp.mail(owner, Mail::Closed { id });
}

/// Copies until end of stream, writing each read before the next: the
/// reader is held back exactly as much as the writer is.
async fn copy<R, W>(reader: &mut R, writer: &mut W) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; PIPE_BUFFER];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        writer.write_all(&buf[..n]).await?;
        // TLS buffers records until flushed.
        writer.flush().await?;
    }
}

/// A bound peer connection whose data connection failed before its pipe
/// started: the owning shard forgets it (the socket closes as it drops).
pub(super) fn abandon(ctx: &WorkerCtx, id: ConnectionId) {
    let owner = id.shard(ctx.tcp.mailboxes.len());
    ctx.tcp.mail(owner, Mail::Closed { id });
}
