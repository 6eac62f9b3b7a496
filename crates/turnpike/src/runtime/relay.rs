//! Relay sockets: the shell's [`RelayPorts`] for the core, and the loop
//! that carries peer datagrams to clients.
//!
//! Each allocation's relayed address is its own UDP socket, owned by the
//! worker whose shard holds the allocation (the kernel cannot demultiplex
//! thousands of ports onto one socket). A bound socket waits as `Pending`
//! until the core has finished the packet that bound it, then gets a task.
//! All relay tasks of a worker share one receive batch and send their
//! answers through the worker's listener batches, so an allocation costs a
//! socket and a small task, not buffers of its own.
//!
//! Sockets reserved by EVEN-PORT's R bit leave the worker: the client's next
//! Allocate (with the RESERVATION-TOKEN) may reach another worker, which
//! takes the socket over from [`Reservations`].
//!
//! Datagrams of any size up to UDP's limit are relayed both ways: the
//! shared receive batch takes them whole, and the core frames them for the
//! client's transport or drops them with a reason it counts. What the
//! kernel refuses on the way to a peer (larger than the path MTU with DF,
//! a full send buffer) is counted here with [`Server::record_drop`].

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rustc_hash::FxHashMap;
use socket2::Socket;
use tokio::task::AbortHandle;
use turnpike_core::{DropReason, RelayOptions, RelayPorts, RelayProtocol, Server, Transmit};

use super::dtls::DtlsEndpoint;
use super::stream::StreamConn;
use super::worker::{RECV_ERROR_BACKOFF, WorkerCtx};
use crate::net::udp::{BatchUdpSocket, UdpOptions};

/// How peer data reaches an allocation's client.
#[derive(Clone)]
pub(super) enum ClientPath {
    /// UDP, through this listener's send batch.
    Udp(usize),
    /// On the client's connection.
    Stream(Rc<StreamConn>),
    /// Encrypted for the client's DTLS session on this endpoint.
    Dtls(Rc<DtlsEndpoint>),
}

/// A relay socket of this worker.
pub(super) struct Relay {
    socket: Rc<BatchUdpSocket>,
    /// Whether the socket sets DF now: switched when a datagram asks
    /// otherwise (RFC 8656 §14), which only a client mixing Send
    /// indications with and without DONT-FRAGMENT makes happen.
    dont_fragment: Cell<bool>,
    state: RelayState,
}

enum RelayState {
    /// Bound during the packet being handled; its task starts after it and
    /// carries peer data to this client.
    Pending(ClientPath),
    /// Receiving; the guard stops the task when the relay is removed.
    Running { _task: TaskGuard },
}

/// Aborts a task (which closes its sockets) when dropped: when its relay
/// or connection is removed from the worker.
pub(super) struct TaskGuard(Option<AbortHandle>);

impl TaskGuard {
    pub(super) fn new(task: AbortHandle) -> Self {
        TaskGuard(Some(task))
    }

    /// Lets the task run on: for a task dropping its own guard as it ends.
    pub(super) fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

impl Relay {
    fn pending(socket: BatchUdpSocket, client: ClientPath, dont_fragment: bool) -> Self {
        Relay {
            socket: Rc::new(socket),
            dont_fragment: Cell::new(dont_fragment),
            state: RelayState::Pending(client),
        }
    }

    /// Sends a client's datagram to a peer, without waiting: a full socket
    /// buffer drops it, as a router would. The socket's DF setting follows
    /// the datagram's.
    fn send(&self, payload: &[u8], peer: SocketAddr, dont_fragment: bool) -> io::Result<()> {
        if self.dont_fragment.get() != dont_fragment {
            // Sending without the DF the client asked for would break its
            // path MTU discovery: failing here drops the datagram instead.
            self.socket.set_dont_fragment(dont_fragment)?;
            self.dont_fragment.set(dont_fragment);
        }
        self.socket.try_send_to(payload, peer).map(drop)
    }
}

/// Sends what the core produced for a peer (`payload`, described by `t`)
/// from the relay socket of `t.source`, and counts it in `server` if the
/// kernel refuses it. Returns `false` if `t` is not from a relay of this
/// worker.
pub(super) fn to_peer(ctx: &WorkerCtx, server: &mut Server, t: &Transmit, payload: &[u8]) -> bool {
    let relays = ctx.relays.borrow();
    let Some(relay) = relays.get(&t.source) else {
        return false;
    };
    if let Err(err) = relay.send(payload, t.destination, t.dont_fragment) {
        let reason = match err.raw_os_error() {
            Some(libc::EMSGSIZE) if t.dont_fragment => Some(DropReason::PathMtu),
            Some(libc::EMSGSIZE) => Some(DropReason::TooBigForPeer),
            Some(libc::EAGAIN | libc::ENOBUFS) => Some(DropReason::QueueFull),
            // Unreachable peers (queued ICMP errors) and the like: the
            // datagram is lost as it would be in the network.
            _ => None,
        };
        if let Some(reason) = reason {
            server.record_drop(reason, payload.len(), t.source, t.destination);
        }
    }
    true
}

/// Reserved relay sockets, shared by all workers.
#[derive(Debug, Default)]
pub(crate) struct Reservations {
    sockets: Mutex<FxHashMap<[u8; 8], (Socket, Instant)>>,
}

impl Reservations {
    fn put(&self, token: [u8; 8], socket: Socket, until: Instant) {
        if let Ok(mut sockets) = self.sockets.lock() {
            let now = Instant::now();
            // Dropping an expired reservation closes its socket.
            sockets.retain(|_, (_, until)| *until > now);
            sockets.insert(token, (socket, until));
        }
    }

    /// Closes the sockets of expired reservations.
    pub(super) fn expire(&self, now: Instant) {
        if let Ok(mut sockets) = self.sockets.lock() {
            sockets.retain(|_, (_, until)| *until > now);
        }
    }

    fn take(&self, token: &[u8; 8], now: Instant) -> Option<Socket> {
        let mut sockets = self.sockets.lock().ok()?;
        match sockets.remove(token) {
            Some((socket, until)) if until > now => Some(socket),
            _ => None,
        }
    }
}

/// The [`RelayPorts`] the core of one worker calls.
pub(super) struct ShellRelays {
    ctx: Weak<WorkerCtx>,
    reservations: Arc<Reservations>,
}

impl ShellRelays {
    pub(super) fn new(ctx: Weak<WorkerCtx>, reservations: Arc<Reservations>) -> Self {
        ShellRelays { ctx, reservations }
    }

    fn ctx(&self) -> io::Result<Rc<WorkerCtx>> {
        self.ctx
            .upgrade()
            .ok_or_else(|| io::Error::other("worker is shutting down"))
    }
}

impl RelayPorts for ShellRelays {
    fn bind(&mut self, addr: SocketAddr, options: RelayOptions) -> io::Result<()> {
        let ctx = self.ctx()?;
        if options.protocol == RelayProtocol::Tcp {
            // Peer connections reach the client through the core's events;
            // only the control connection must still be here.
            ctx.client_path(&options).ok_or_else(no_client_path)?;
            return super::tcp_relay::listen(&ctx, addr);
        }
        let socket = BatchUdpSocket::bind(
            addr,
            &UdpOptions {
                dont_fragment: options.dont_fragment,
                ..UdpOptions::default()
            },
        )?;
        let client = ctx.client_path(&options).ok_or_else(no_client_path)?;
        ctx.relays
            .borrow_mut()
            .insert(addr, Relay::pending(socket, client, options.dont_fragment));
        ctx.pending.borrow_mut().push(addr);
        Ok(())
    }

    fn release(&mut self, addr: SocketAddr, protocol: RelayProtocol) {
        if let Ok(ctx) = self.ctx() {
            // Dropping the entry aborts the task, which closes the socket.
            match protocol {
                RelayProtocol::Udp => drop(ctx.relays.borrow_mut().remove(&addr)),
                RelayProtocol::Tcp => super::tcp_relay::release(&ctx, addr),
            }
        }
    }

    fn reserve(&mut self, addr: SocketAddr, token: [u8; 8], until: Instant) {
        let Ok(ctx) = self.ctx() else { return };
        // Reservations are made right after `bind`, before the task starts,
        // so nothing else holds the socket yet.
        let mut relays = ctx.relays.borrow_mut();
        if let Some(Relay {
            socket,
            state: RelayState::Pending(_),
            ..
        }) = relays.remove(&addr)
            && let Ok(socket) = Rc::try_unwrap(socket)
        {
            self.reservations.put(token, socket.into_socket(), until);
        }
    }

    fn redeem(
        &mut self,
        token: [u8; 8],
        now: Instant,
        options: RelayOptions,
    ) -> Option<SocketAddr> {
        let ctx = self.ctx().ok()?;
        let client = ctx.client_path(&options)?;
        let socket = BatchUdpSocket::from_socket(self.reservations.take(&token, now)?).ok()?;
        let addr = socket.local_addr();
        // The socket was bound for the reserving Allocate, whose
        // DONT-FRAGMENT may have differed.
        socket.set_dont_fragment(options.dont_fragment).ok()?;
        ctx.relays
            .borrow_mut()
            .insert(addr, Relay::pending(socket, client, options.dont_fragment));
        ctx.pending.borrow_mut().push(addr);
        Some(addr)
    }
}

/// The allocation's client is on no listener or connection of this worker
/// (it closed while its Allocate was being handled).
fn no_client_path() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the allocation's client has no listener or connection here",
    )
}

/// Starts a task for every relay socket bound since the last call. Called
/// after every receive batch, so it touches only the sockets just bound.
pub(super) fn start_pending(ctx: &Rc<WorkerCtx>) {
    if ctx.pending.borrow().is_empty() {
        return;
    }
    let pending = std::mem::take(&mut *ctx.pending.borrow_mut());
    let mut relays = ctx.relays.borrow_mut();
    for addr in pending {
        // Released again before it started (e.g. a failed EVEN-PORT pair).
        let Some(relay) = relays.get_mut(&addr) else {
            continue;
        };
        let RelayState::Pending(client) = &relay.state else {
            continue;
        };
        let loop_ = relay_loop(Rc::clone(ctx), Rc::clone(&relay.socket), client.clone());
        let task = tokio::task::spawn_local(loop_);
        relay.state = RelayState::Running {
            _task: TaskGuard::new(task.abort_handle()),
        };
    }
}

/// Carries datagrams from peers, arriving on one relay socket, to the
/// allocation's client: through a UDP listener's send batch, or on the
/// client's connection.
///
/// The task holds the worker's context strongly: the worker's `LocalSet` owns
/// every task, so dropping it at shutdown drops them all.
async fn relay_loop(ctx: Rc<WorkerCtx>, socket: Rc<BatchUdpSocket>, client: ClientPath) {
    let relay = socket.local_addr();
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
    }
}

fn to_udp_client(ctx: &WorkerCtx, relay: SocketAddr, listener: usize, now: Instant) {
    let (Some(out_socket), Some(tx)) = (ctx.listeners.get(listener), ctx.client_tx.get(listener))
    else {
        return;
    };
    let wildcard = out_socket.local_addr().ip().is_unspecified();
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
            let t = server.handle_peer_packet(now, relay, meta.source, data, slot)?;
            Some((t.len, t.destination, wildcard.then_some(t.source.ip())))
        });
    }
    if !tx.is_empty() {
        // Sent by the flusher, after every other relay task ready in this
        // tick has added its datagrams: one sendmmsg for many allocations
        // instead of one each.
        ctx.flush.notify_one();
    }
}

fn to_stream_client(ctx: &WorkerCtx, relay: SocketAddr, conn: &StreamConn, now: Instant) {
    let rx = ctx.peer_rx.borrow();
    let mut server = ctx.server.borrow_mut();
    let mut scratch = ctx.scratch.borrow_mut();
    let mut queued = false;
    for (data, meta) in rx.iter() {
        if meta.truncated {
            continue;
        }
        if let Some(t) = server.handle_peer_packet(now, relay, meta.source, data, &mut scratch) {
            if conn.push(&scratch[..t.len]) {
                queued = true;
            } else {
                server.record_drop(DropReason::QueueFull, data.len(), meta.source, relay);
            }
        }
    }
    if queued {
        conn.flush();
    }
}

fn to_dtls_client(ctx: &WorkerCtx, relay: SocketAddr, endpoint: &DtlsEndpoint, now: Instant) {
    let rx = ctx.peer_rx.borrow();
    let mut server = ctx.server.borrow_mut();
    let mut scratch = ctx.scratch.borrow_mut();
    for (data, meta) in rx.iter() {
        if meta.truncated {
            continue;
        }
        if let Some(t) = server.handle_peer_packet(now, relay, meta.source, data, &mut scratch)
            && let Some(reason) = endpoint.send(now, t.destination, &scratch[..t.len])
        {
            server.record_drop(reason, data.len(), meta.source, relay);
        }
    }
}

/// Sends what relay tasks queued for clients, once per executor tick.
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
