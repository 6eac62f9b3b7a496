//! UDP relayed addresses: the tasks that carry peer datagrams to clients.
//!
//! Each allocation's relayed address is its own UDP socket, owned by the
//! worker whose shard holds the allocation (the kernel cannot demultiplex
//! thousands of ports onto one socket); [`super::binder`] binds it and
//! starts its task here. All relay tasks of a worker share one receive
//! batch and send their datagrams through the worker's listener batches,
//! so an allocation costs a socket and a small task, not buffers of its
//! own.
//!
//! Sockets reserved by EVEN-PORT's R bit have no task: the client's next
//! Allocate (with the RESERVATION-TOKEN) may reach another worker, which
//! takes the socket over from [`socket::Reservations`].
//!
//! Datagrams of any size up to UDP's limit are relayed both ways: the
//! shared receive batch takes them whole, and the core frames them for the
//! client's transport or drops them with a reason it counts. What the
//! kernel refuses on the way to a peer (larger than the path MTU with DF,
//! a full send buffer) is counted by [`WorkerCtx::dispatch`].

pub(crate) mod socket;

use std::rc::Rc;
use std::time::Instant;

use turnpike_core::{DropReason, PeerSocket, RelayedAddress};

use super::context::{ClientPath, RECV_ERROR_BACKOFF, WorkerCtx};
use super::dtls::endpoint::DtlsEndpoint;
use super::stream::conn::StreamConn;
use super::task::TaskGuard;
use crate::net::udp::BatchUdpSocket;

/// Starts the task that carries what peers send to `socket` to the client
/// on `client`.
pub(super) fn start(
    ctx: &Rc<WorkerCtx>,
    socket: Rc<BatchUdpSocket>,
    client: ClientPath,
) -> TaskGuard {
    let task = tokio::task::spawn_local(relay_loop(Rc::clone(ctx), socket, client));
    TaskGuard::new(task.abort_handle())
}

/// Carries datagrams from peers, arriving on one relay socket, to the
/// allocation's client: through a UDP listener's send batch, on the
/// client's connection, or in its DTLS session.
///
/// The task holds the worker's context strongly: the worker's `LocalSet` owns
/// every task, so dropping it at shutdown drops them all.
async fn relay_loop(ctx: Rc<WorkerCtx>, socket: Rc<BatchUdpSocket>, client: ClientPath) {
    let relay = RelayedAddress(socket.local_addr());
    loop {
        if let Err(err) = socket.recv_batch_shared(&ctx.peer_rx).await {
            tracing::warn!(address = %relay, %err, "relay receive failed");
            tokio::time::sleep(RECV_ERROR_BACKOFF).await;
            continue;
        }
        let now = Instant::now();
        match &client {
            ClientPath::Udp(listener) => to_udp_client(&ctx, relay, *listener, now),
            ClientPath::Stream(conn) => to_stream_client(&ctx, relay, conn, now),
            ClientPath::Dtls(endpoint) => {
                to_dtls_client(&ctx, relay, endpoint, now);
                endpoint.drain(&ctx, now, None);
            }
        }
        // Whatever the core had beyond the datagrams' copies.
        ctx.process_pending();
    }
}

fn to_udp_client(ctx: &Rc<WorkerCtx>, relay: RelayedAddress, listener: usize, now: Instant) {
    let (Some(out_socket), Some(tx)) = (ctx.listeners.get(listener), ctx.client_tx.get(listener))
    else {
        return;
    };
    let rx = ctx.peer_rx.borrow();
    let mut server = ctx.server.borrow_mut();
    let mut tx = tx.borrow_mut();
    for (data, meta) in rx.iter() {
        if meta.truncated {
            continue;
        }
        if tx.is_full() {
            let _ = out_socket.try_send_batch(&mut tx);
        }
        tx.push_in_place(|slot| {
            let peer = PeerSocket(meta.source);
            server.handle_peer_packet(now, relay, peer, data, slot);
            ctx.take_answer(&mut server, slot, listener)
        });
    }
    if !tx.is_empty() {
        // Sent by the flusher, after every other relay task ready in this
        // tick has added its datagrams: one sendmmsg for many allocations
        // instead of one each.
        ctx.flush.notify_one();
    }
}

fn to_stream_client(ctx: &Rc<WorkerCtx>, relay: RelayedAddress, conn: &StreamConn, now: Instant) {
    let rx = ctx.peer_rx.borrow();
    let mut server = ctx.server.borrow_mut();
    let mut scratch = ctx.scratch.borrow_mut();
    let mut queued = false;
    for (data, meta) in rx.iter() {
        if meta.truncated {
            continue;
        }
        let peer = PeerSocket(meta.source);
        server.handle_peer_packet(now, relay, peer, data, &mut scratch);
        if let Some(t) = ctx.next_transmit(&mut server, &mut scratch) {
            if conn.push(&scratch[..t.len]) {
                queued = true;
            } else {
                server.record_drop(DropReason::QueueFull, data.len(), peer.0, relay.0);
            }
        }
    }
    if queued {
        conn.flush();
    }
}

fn to_dtls_client(
    ctx: &Rc<WorkerCtx>,
    relay: RelayedAddress,
    endpoint: &DtlsEndpoint,
    now: Instant,
) {
    let rx = ctx.peer_rx.borrow();
    let mut server = ctx.server.borrow_mut();
    let mut scratch = ctx.scratch.borrow_mut();
    for (data, meta) in rx.iter() {
        if meta.truncated {
            continue;
        }
        let peer = PeerSocket(meta.source);
        server.handle_peer_packet(now, relay, peer, data, &mut scratch);
        if let Some(t) = ctx.next_transmit(&mut server, &mut scratch)
            && let Some(reason) = endpoint.send(now, t.destination(), &scratch[..t.len])
        {
            server.record_drop(reason, data.len(), peer.0, relay.0);
        }
    }
}

/// Sends what was queued for clients outside the listeners' own loops,
/// once per executor tick.
pub(super) async fn flusher(ctx: Rc<WorkerCtx>) {
    loop {
        ctx.flush.notified().await;
        for (socket, tx) in ctx.listeners.iter().zip(ctx.client_tx.iter()) {
            let mut tx = tx.borrow_mut();
            if !tx.is_empty() {
                let _ = socket.try_send_batch(&mut tx);
            }
        }
    }
}
