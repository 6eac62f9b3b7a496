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

pub(crate) mod peers;

use std::collections::hash_map::Entry;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, oneshot};
use turnpike_core::{ConnectionId, Packet, PeerSocket, RelayedAddress, Transport};

use super::context::{MAX_MESSAGE, WorkerCtx};
use super::task::TaskGuard;
use crate::net::tcp;
use peers::{BindReply, Mail, PeerConn};

/// Bytes read per direction of a pipe before they are written on.
const PIPE_BUFFER: usize = 16 * 1024;
/// Pause after an accept error on a relayed address (EMFILE and friends).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

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
        let id = ctx.server.borrow_mut().peer_connected(
            Instant::now(),
            RelayedAddress(relay),
            PeerSocket(peer),
        );
        match id {
            Some(id) => {
                let _ = stream.set_nodelay(true);
                ctx.tcp
                    .peers
                    .borrow_mut()
                    .insert(id, PeerConn::Unbound(stream));
                // Sends the ConnectionAttempt.
                ctx.process_pending();
            }
            // No permission: a reset tells the peer at once (a zero linger
            // never blocks the close).
            None => {
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            }
        }
    }
}

/// Opens the connections the core asked for
/// ([`Event::OpenConnection`](turnpike_core::Event::OpenConnection)), each
/// in a task of its own that the connection's entry owns.
pub(super) async fn opener_loop(ctx: Rc<WorkerCtx>) {
    loop {
        ctx.tcp.opener.notified().await;
        let to_open = std::mem::take(&mut *ctx.tcp.to_open.borrow_mut());
        for (id, relay, peer) in to_open {
            let task = tokio::task::spawn_local(open(Rc::clone(&ctx), id, relay, peer));
            ctx.tcp.peers.borrow_mut().insert(
                id,
                PeerConn::Connecting(TaskGuard::new(task.abort_handle())),
            );
        }
    }
}

/// Opens a connection for a Connect and tells the core how it went. The
/// core's own 30-second timer bounds the attempt: at the deadline it closes
/// the connection, which drops this task.
async fn open(ctx: Rc<WorkerCtx>, id: ConnectionId, relay: RelayedAddress, peer: PeerSocket) {
    let result = tcp::connect_from(relay.0, peer.0).await;
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
    ctx.process_pending();
}

/// Receives the other workers' (and this worker's own) mail.
pub(super) async fn mail_loop(ctx: Rc<WorkerCtx>, mut inbox: mpsc::UnboundedReceiver<Mail>) {
    let mut out = vec![0u8; MAX_MESSAGE].into_boxed_slice();
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
                ctx.tcp.wait(from, local, remote, reply);
                let packet = Packet {
                    transport,
                    local,
                    remote,
                    data: &message,
                };
                // The answer goes to the waiting data connection, with the
                // peer connection if the core binds it. No answer: held for
                // a credential lookup (answered when it completes) or
                // dropped (the data connection times out).
                let mut server = ctx.server.borrow_mut();
                server.handle_client_packet(Instant::now(), packet, &mut out);
                ctx.process_outputs(&mut server, &mut out);
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
                ctx.process_pending();
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
