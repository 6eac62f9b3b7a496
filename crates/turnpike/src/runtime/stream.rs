//! Client connections over streams (TCP now, TLS through the same code):
//! STUN and TURN requests framed from the byte stream, answers and relayed
//! data written back on it.
//!
//! A connection is the client side of a 5-tuple: an allocation made over it
//! sends its peers' data back through the connection's [`StreamConn`] queue
//! (RFC 8656: on streams, ChannelData is padded to a multiple of 4), and the
//! allocation is deleted when the connection closes.
//!
//! Writes never block the relay: relay tasks and the reader append whole
//! messages to a bounded queue and a writer task drains it. When a slow
//! client lets the queue fill up, relayed data is dropped (it is datagrams:
//! RTP copes), so memory per connection stays bounded.
//!
//! A connection whose first request is a ConnectionBind (RFC 6062) is a
//! data connection: the request goes to the shard holding the connection it
//! names, and once bound the stream leaves STUN behind and becomes one end
//! of a byte pipe ([`super::tcp_relay`]).
//!
//! Limits against abuse: connections per source IP (shared by all
//! workers), an idle timeout, and an authentication deadline: a connection
//! that holds no allocation that long after it opened is closed, so idle
//! or trickling connections (slowloris) cannot pile up.

use std::cell::{Cell, RefCell};
use std::collections::hash_map::Entry;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use turnpike_core::{ConnectionId, FiveTuple, Packet, SourcePrefix, Transport};

use super::tcp_relay;
use super::worker::WorkerCtx;
use crate::net::tcp::{FrameBuffer, NextFrame};

/// Limits on client connections; see `[limits]` in the example config.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamLimits {
    /// Connections from one source IP, all workers together; 0: no limit.
    pub(crate) per_ip: u32,
    /// A connection without an allocation this long after it opened is
    /// closed.
    pub(crate) auth_timeout: Duration,
    /// A connection that sends nothing for this long is closed.
    pub(crate) idle_timeout: Duration,
    /// Bytes queued for writing per connection; beyond, relayed data is
    /// dropped.
    pub(crate) max_buffered: usize,
    /// Bytes queued for writing over all of one worker's connections (its
    /// share of `limits.max_buffered_bytes_total`); beyond, relayed data is
    /// dropped.
    pub(crate) max_buffered_per_worker: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            per_ip: 64,
            auth_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
            max_buffered: 256 * 1024,
            max_buffered_per_worker: 256 * 1024 * 1024,
        }
    }
}

/// Connections per source and in all, shared by the workers (touched on
/// accept and close only). A source is an IPv4 address or an IPv6 prefix
/// ([`SourcePrefix`]).
#[derive(Debug, Default)]
pub(crate) struct ConnectionCounts {
    counts: Mutex<Counts>,
    sources: SourcePrefix,
    /// Connections in all; 0: no limit.
    max_total: u32,
}

#[derive(Debug, Default)]
struct Counts {
    by_source: FxHashMap<IpAddr, u32>,
    total: u32,
}

/// One counted connection; uncounted when dropped.
#[derive(Debug)]
pub(crate) struct Counted {
    counts: Arc<ConnectionCounts>,
    ip: IpAddr,
}

impl ConnectionCounts {
    /// Counts connections per source as `sources` says, and at most
    /// `max_total` in all (0: no limit).
    pub(crate) fn new(sources: SourcePrefix, max_total: u32) -> Self {
        ConnectionCounts {
            counts: Mutex::default(),
            sources,
            max_total,
        }
    }

    /// Counts a connection from `ip`, unless its source already has `limit`
    /// (0: no limit) or the server its total.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr, limit: u32) -> Option<Counted> {
        let ip = self.sources.key(ip);
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if self.max_total != 0 && counts.total >= self.max_total {
            return None;
        }
        let count = counts.by_source.entry(ip).or_insert(0);
        if limit != 0 && *count >= limit {
            return None;
        }
        *count += 1;
        counts.total += 1;
        Some(Counted {
            counts: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut counts = self
            .counts
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Entry::Occupied(mut e) = counts.by_source.entry(self.ip) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

/// Bytes queued towards the clients of one worker's connections, and how
/// many may be: slow clients together cannot make a worker hold more than
/// its share, however many connections they open. Single-threaded, like
/// the worker.
#[derive(Debug)]
pub(crate) struct QueueBudget {
    used: Cell<usize>,
    max: usize,
}

impl QueueBudget {
    pub(crate) fn new(max: usize) -> Self {
        QueueBudget {
            used: Cell::new(0),
            max,
        }
    }

    /// Takes `n` bytes, unless that would exceed the budget.
    fn take(&self, n: usize) -> bool {
        let used = self.used.get() + n;
        if used > self.max {
            return false;
        }
        self.used.set(used);
        true
    }

    fn give_back(&self, n: usize) {
        self.used.set(self.used.get().saturating_sub(n));
    }
}

/// Bytes taken from a [`QueueBudget`], given back when dropped (written, or
/// abandoned with the connection).
struct Taken<'a> {
    budget: &'a QueueBudget,
    bytes: usize,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

/// The write side of one client connection, shared by its reader, its
/// writer and the relay tasks of its allocation.
#[derive(Debug)]
pub(super) struct StreamConn {
    queue: RefCell<Vec<u8>>,
    limit: usize,
    /// The worker's budget, which every byte in `queue` (and in the
    /// writer's hands) is taken from.
    budget: Rc<QueueBudget>,
    wake: Notify,
    closed: Cell<bool>,
    /// The writer sends what is queued, then hands its half of the stream
    /// back (the connection is becoming a data connection).
    handover: Cell<bool>,
}

impl StreamConn {
    fn new(limit: usize, budget: Rc<QueueBudget>) -> Self {
        StreamConn {
            queue: RefCell::new(Vec::new()),
            limit,
            budget,
            wake: Notify::new(),
            closed: Cell::new(false),
            handover: Cell::new(false),
        }
    }

    /// Queues one whole message for the client; drops it (returning
    /// `false`) when the connection's queue or the worker's budget is full,
    /// or the connection closed.
    pub(super) fn push(&self, message: &[u8]) -> bool {
        let mut queue = self.queue.borrow_mut();
        if self.closed.get()
            || queue.len() + message.len() > self.limit
            || !self.budget.take(message.len())
        {
            return false;
        }
        queue.extend_from_slice(message);
        true
    }

    /// Wakes the writer after one or more [`push`](Self::push)es.
    pub(super) fn flush(&self) {
        self.wake.notify_one();
    }
}

impl Drop for StreamConn {
    fn drop(&mut self) {
        self.budget.give_back(self.queue.get_mut().len());
    }
}

/// How serving a connection as STUN ended.
enum Ending {
    /// Closed, failed or timed out.
    Closed,
    /// Bound to the peer connection `id` (RFC 6062): pipe `peer` to it,
    /// after `early`, the bytes the client sent behind its ConnectionBind.
    Bound {
        id: ConnectionId,
        peer: std::net::TcpStream,
        early: Vec<u8>,
    },
}

/// Serves one client connection until it closes, fails or times out.
pub(super) async fn serve<S>(
    ctx: Rc<WorkerCtx>,
    stream: S,
    transport: Transport,
    local: SocketAddr,
    remote: SocketAddr,
    limits: StreamLimits,
) where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let conn = Rc::new(StreamConn::new(limits.max_buffered, Rc::clone(&ctx.queued)));
    let key = (local, remote);
    ctx.streams.borrow_mut().insert(key, Rc::clone(&conn));
    let five_tuple = FiveTuple {
        transport,
        client: remote,
        server: local,
    };
    let (mut reader, writer) = tokio::io::split(stream);
    let writing = tokio::task::spawn_local(write_loop(Rc::clone(&conn), writer));
    let ending = read_loop(&ctx, &conn, &mut reader, five_tuple, limits).await;

    ctx.streams.borrow_mut().remove(&key);
    ctx.server.borrow_mut().connection_closed(&five_tuple);
    let Ending::Bound { id, peer, early } = ending else {
        conn.closed.set(true);
        writing.abort();
        return;
    };
    // The writer sends the ConnectionBind's answer, then gives its half back.
    conn.handover.set(true);
    conn.flush();
    let writer = writing.await.ok().flatten();
    conn.closed.set(true);
    match writer {
        Some(writer) => tcp_relay::pipe(&ctx, id, reader.unsplit(writer), peer, early).await,
        None => tcp_relay::abandon(&ctx, id),
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    ctx: &Rc<WorkerCtx>,
    conn: &StreamConn,
    reader: &mut R,
    five_tuple: FiveTuple,
    limits: StreamLimits,
) -> Ending {
    let auth_deadline = tokio::time::Instant::now() + limits.auth_timeout;
    let mut authenticated = false;
    let mut frames = FrameBuffer::new(2048);
    loop {
        let idle = tokio::time::Instant::now() + limits.idle_timeout;
        let deadline = if authenticated {
            idle
        } else {
            auth_deadline.min(idle)
        };
        match tokio::time::timeout_at(deadline, reader.read(frames.read_slot())).await {
            Ok(Ok(0) | Err(_)) => return Ending::Closed,
            Ok(Ok(n)) => frames.filled(n),
            // The authentication deadline passed, but the allocation may
            // have been made since the last read: by a request held for a
            // credential lookup and answered afterwards.
            Err(_) if deadline < idle && ctx.server.borrow().has_allocation(&five_tuple) => {
                authenticated = true;
                frames.allow_large_frames();
                continue;
            }
            // Idle, or still without an allocation at the deadline.
            Err(_) => return Ending::Closed,
        }
        loop {
            match frames.next_frame() {
                NextFrame::Frame(data) => {
                    // A data connection's ConnectionBind goes to the shard
                    // that holds the connection it names; on a control
                    // connection it is this shard's to refuse.
                    let bind = ConnectionId::of_connection_bind(data).filter(|_| {
                        !authenticated && !ctx.server.borrow().has_allocation(&five_tuple)
                    });
                    if let Some(id) = bind {
                        let message: Box<[u8]> = data.into();
                        let (transport, local, remote) =
                            (five_tuple.transport, five_tuple.server, five_tuple.client);
                        let reply = tcp_relay::bind(
                            ctx,
                            id,
                            transport,
                            local,
                            remote,
                            &message,
                            auth_deadline,
                        )
                        .await;
                        let Some(reply) = reply else {
                            // Unanswered until the deadline.
                            return Ending::Closed;
                        };
                        conn.push(&reply.answer);
                        conn.flush();
                        if let Some((id, peer)) = reply.peer {
                            let early = frames.remaining().to_vec();
                            return Ending::Bound { id, peer, early };
                        }
                        continue;
                    }
                    let packet = Packet {
                        transport: five_tuple.transport,
                        local: five_tuple.server,
                        remote: five_tuple.client,
                        data,
                    };
                    // The worker's scratch buffer, not one per connection:
                    // the answer or datagram leaves before the next await.
                    let mut out = ctx.scratch.borrow_mut();
                    let mut server = ctx.server.borrow_mut();
                    if let Some(t) = server.handle_packet(Instant::now(), packet, &mut out) {
                        let payload = &out[..t.len];
                        if t.transport == five_tuple.transport && t.source == five_tuple.server {
                            conn.push(payload);
                            conn.flush();
                        } else {
                            super::relay::to_peer(ctx, &mut server, &t, payload);
                        }
                    }
                }
                NextFrame::NeedMore => break,
                NextFrame::Invalid => return Ending::Closed,
            }
            ctx.after_packets();
            // Checked after each message: relayed data may follow the
            // Allocate in the same read.
            if !authenticated && ctx.server.borrow().has_allocation(&five_tuple) {
                authenticated = true;
                frames.allow_large_frames();
            }
        }
    }
}

/// Writes what is queued for the client. Returns its half of the stream
/// when asked to hand it over, `None` when the stream failed.
async fn write_loop<W: AsyncWrite + Unpin>(conn: Rc<StreamConn>, mut writer: W) -> Option<W> {
    let mut sending = Vec::new();
    loop {
        conn.wake.notified().await;
        loop {
            std::mem::swap(&mut *conn.queue.borrow_mut(), &mut sending);
            if sending.is_empty() {
                break;
            }
            // Given back once written, or if the connection goes first.
            let _taken = Taken {
                budget: &conn.budget,
                bytes: sending.len(),
            };
            writer.write_all(&sending).await.ok()?;
            sending.clear();
        }
        if conn.handover.get() {
            writer.flush().await.ok()?;
            return Some(writer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One worker's connections share its budget: a slow client's queue
    /// counts against the others', and what is written or abandoned is
    /// given back.
    #[test]
    fn queued_bytes_are_bounded_per_worker() {
        let budget = Rc::new(QueueBudget::new(1000));
        let a = StreamConn::new(600, Rc::clone(&budget));
        let b = StreamConn::new(600, Rc::clone(&budget));
        assert!(a.push(&[0; 600]));
        assert!(!a.push(&[0; 1]), "the connection's own limit");
        assert!(b.push(&[0; 400]));
        assert!(!b.push(&[0; 1]), "the worker's budget");
        // Written: swapped out by the writer and given back.
        let written = std::mem::take(&mut *a.queue.borrow_mut());
        drop(Taken {
            budget: &budget,
            bytes: written.len(),
        });
        assert!(b.push(&[0; 200]));
        // Abandoned with the connection.
        drop(b);
        assert_eq!(budget.used.get(), 0);
        assert!(a.push(&[0; 600]));
    }
}
