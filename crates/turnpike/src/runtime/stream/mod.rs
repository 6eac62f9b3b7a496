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

pub(crate) mod conn;

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use turnpike_core::stats::TransportLabel;
use turnpike_core::{ConnectionId, FiveTuple, Packet, Transport};

use super::context::WorkerCtx;
use super::tcp_relay;
use crate::net::tcp::{FrameBuffer, NextFrame};
use conn::{StreamConn, StreamLimits, Taken};

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
    let label = TransportLabel::from(transport);
    ctx.count(|s| {
        s.connections_accepted.record(label);
        s.connections_open.record(label);
    });
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
    ctx.server
        .borrow_mut()
        .connection_closed(Instant::now(), &five_tuple);
    // Its allocation's relays close.
    ctx.process_pending();
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
                    server.handle_client_packet(Instant::now(), packet, &mut out);
                    ctx.process_outputs(&mut server, &mut out);
                }
                NextFrame::NeedMore => break,
                NextFrame::Invalid => return Ending::Closed,
            }
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
