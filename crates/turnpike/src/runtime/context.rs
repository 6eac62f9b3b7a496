//! The state a worker's tasks share, and the one path by which the core's
//! outputs are carried out.
//!
//! Every task of a worker (listeners, connections, relay sockets, DTLS,
//! timers) holds an `Rc<WorkerCtx>`; the `RefCell`s inside are borrowed only
//! between awaits, never across one. After handing the core an input a task
//! calls [`WorkerCtx::process_outputs`] with the buffer it handed in, or
//! [`WorkerCtx::take_answer`] first to keep the answer for a batch of its
//! own. Every transmit goes through [`WorkerCtx::dispatch`], which sends it
//! where its [`Destination`] says; every event through
//! [`WorkerCtx::handle_event`]; the final timeout re-arms the worker's timer.
//!
//! This is the bottom of the runtime: it knows the state of each transport
//! (a stream connection's queue, a DTLS endpoint, a relay socket, the
//! RFC 6062 books) but none of their tasks, so every other module can use
//! it without import circles.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use tokio::sync::Notify;
use turnpike_core::stats::Traffic;
use turnpike_core::{
    ChannelRoute, Destination, Event, FiveTuple, Output, Server, Transmit, Transport,
};
use turnpike_xdp::FastPath;

use super::dtls::endpoint::DtlsEndpoint;
use super::stream::conn::{ConnectionCounts, QueueBudget, StreamConn, StreamLimits};
use super::tcp_relay::peers::TcpRelays;
use super::udp_relay::socket::{RelaySocket, Reservations};
use crate::credentials::CredentialSource;
use crate::net;
use crate::net::udp::{BatchUdpSocket, RecvBatch, SendBatch};
use crate::observe::{ShellStats, accounting};

/// Datagrams per `recvmmsg`/`sendmmsg`.
pub(crate) const BATCH: usize = 32;
/// Receive slot: a full Ethernet-MTU datagram and then some. Larger datagrams
/// (up to UDP's limit) still arrive whole, through the batch's spill area.
pub(crate) const RECV_SLOT: usize = 2048;
/// Room per datagram in a send batch: a Data indication around a full
/// receive slot. Larger ones fit too; the batch just holds fewer.
pub(crate) const SEND_SLOT: usize = RECV_SLOT + 256;
/// The largest message the core writes: a STUN message with a 65,532-byte
/// body (relayed data framed for a stream client, a padded answer to a
/// large request). Buffers the core writes into outside a send batch are
/// this large.
pub(crate) const MAX_MESSAGE: usize = turnpike_codec::framing::MAX_FRAME_LEN;
/// Pause after a receive error that is not transient.
pub(crate) const RECV_ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// How relayed data reaches an allocation's client.
#[derive(Clone)]
pub(crate) enum ClientPath {
    /// UDP, through this listener's send batch.
    Udp(usize),
    /// On the client's connection.
    Stream(Rc<StreamConn>),
    /// Encrypted for the client's DTLS session on this endpoint.
    Dtls(Rc<DtlsEndpoint>),
}

/// A datagram for a UDP listener's send batch: its length in the slot,
/// where it goes, and the source IP to send from (wildcard listeners).
pub(crate) type BatchEntry = (usize, SocketAddr, Option<IpAddr>);

/// When the worker's timer next fires: the core's next timeout as last
/// polled. The timer task sleeps until then and is woken when it moves
/// earlier.
#[derive(Default)]
pub(crate) struct Timer {
    at: Cell<Option<Instant>>,
    pub(crate) wake: Notify,
}

impl Timer {
    /// The core's timer as last polled.
    pub(crate) fn at(&self) -> Option<Instant> {
        self.at.get()
    }

    fn set(&self, at: Option<Instant>) {
        let before = self.at.replace(at);
        if at.is_some_and(|at| before.is_none_or(|before| at < before)) {
            self.wake.notify_one();
        }
    }
}

/// State shared by a worker's tasks.
pub(crate) struct WorkerCtx {
    pub(crate) server: RefCell<Server>,
    /// UDP listener sockets.
    pub(crate) listeners: Box<[BatchUdpSocket]>,
    /// Datagrams to clients sent outside a listener's own loop (relayed
    /// data, owed and replayed answers), one batch per listener.
    pub(crate) client_tx: Box<[RefCell<SendBatch>]>,
    /// Wakes the task that sends [`client_tx`](Self::client_tx).
    pub(crate) flush: Notify,
    /// The receive buffer all relay sockets share.
    pub(crate) peer_rx: RefCell<RecvBatch>,
    /// UDP relay sockets by relayed address.
    pub(crate) relays: RefCell<FxHashMap<SocketAddr, RelaySocket>>,
    /// Reserved relay sockets, all workers'.
    pub(crate) reservations: Arc<Reservations>,
    /// Client connections (TCP, TLS) by (local, remote) address.
    pub(crate) streams: RefCell<FxHashMap<(SocketAddr, SocketAddr), Rc<StreamConn>>>,
    /// Scratch space for the core's output outside a send batch.
    pub(crate) scratch: RefCell<Box<[u8]>>,
    /// Bytes queued towards this worker's connections, and their bound.
    pub(crate) queued: Rc<QueueBudget>,
    pub(crate) connections: Arc<ConnectionCounts>,
    /// The limits new connections get (a reload changes them).
    pub(crate) limits: Cell<StreamLimits>,
    /// DTLS sockets and their sessions.
    pub(crate) dtls: Box<[Rc<DtlsEndpoint>]>,
    /// TCP relays and their peer connections (RFC 6062).
    pub(crate) tcp: TcpRelays,
    pub(crate) timer: Timer,
    pub(crate) credentials: Option<Arc<CredentialSource>>,
    /// Channel routes go here (the core announces them only when it is on).
    pub(crate) fast_path: Option<Arc<Mutex<FastPath>>>,
    /// What the shell counts itself (connections, handshakes); read by
    /// [`super::queries`].
    pub(crate) shell_stats: Cell<ShellStats>,
    /// What the fast path relayed on routes already withdrawn, by the
    /// allocation's 5-tuple, until the allocation ends: its accounting
    /// line and listing add it to the core's own count.
    pub(crate) withdrawn: RefCell<FxHashMap<FiveTuple, Traffic>>,
    /// Notified when an allocation ends, for whoever waits for the server
    /// to empty while it drains ([`super::RelayHandle::drained`]).
    pub(crate) allocation_ended: Arc<Notify>,
}

impl WorkerCtx {
    /// Counts something in the shell's own counters.
    pub(crate) fn count(&self, update: impl FnOnce(&mut ShellStats)) {
        let mut stats = self.shell_stats.get();
        update(&mut stats);
        self.shell_stats.set(stats);
    }

    /// What the fast path relayed on the live `routes`, and on the routes
    /// of the allocation of `client` it withdrew before (nothing without a
    /// fast path).
    pub(crate) fn fast_path_traffic(
        &self,
        client: &FiveTuple,
        routes: impl Iterator<Item = ChannelRoute>,
    ) -> Traffic {
        let mut total = self
            .withdrawn
            .borrow()
            .get(client)
            .copied()
            .unwrap_or_default();
        let Some(fast_path) = &self.fast_path else {
            return total;
        };
        let fast_path = fast_path.lock().unwrap_or_else(PoisonError::into_inner);
        for route in routes {
            if let Some(t) = fast_path.route_traffic(&route) {
                total += traffic(t);
            }
        }
        total
    }

    /// How relayed data reaches the client of the allocation whose 5-tuple
    /// is `client`: the UDP listener serving its server address, its
    /// connection, or its DTLS endpoint.
    pub(crate) fn client_path(&self, client: &FiveTuple) -> Option<ClientPath> {
        match client.transport {
            Transport::Udp => self.listener_for(client.server).map(ClientPath::Udp),
            Transport::Tcp | Transport::Tls => self
                .streams
                .borrow()
                .get(&(client.server, client.client))
                .map(|conn| ClientPath::Stream(Rc::clone(conn))),
            Transport::Dtls => self
                .dtls
                .iter()
                .find(|d| d.serves(client.server))
                .map(|d| ClientPath::Dtls(Rc::clone(d))),
        }
    }

    /// The UDP listener serving the local address `server`.
    pub(crate) fn listener_for(&self, server: SocketAddr) -> Option<usize> {
        self.listeners
            .iter()
            .position(|l| net::serves(l.local_addr(), server))
    }

    /// The batch entry of a datagram to a UDP client through `listener`.
    fn batch_entry(&self, listener: usize, to: &FiveTuple, len: usize) -> BatchEntry {
        let bound = self.listeners[listener].local_addr();
        (len, to.client, net::source_ip(bound, to.server.ip()))
    }

    /// Polls the output of an input just handled into `slot` (part of a send
    /// batch of UDP `listener`) until the answer: if it leaves through that
    /// listener, its entry for the batch is returned; anything else is
    /// carried out here. What the core has beyond the answer waits for the
    /// next [`process_outputs`](Self::process_outputs).
    pub(crate) fn take_answer(
        self: &Rc<Self>,
        server: &mut Server,
        slot: &mut [u8],
        listener: usize,
    ) -> Option<BatchEntry> {
        loop {
            let t = self.next_transmit(server, slot)?;
            match t.to {
                Destination::Client(to)
                    if to.transport == Transport::Udp
                        && self.listener_for(to.server) == Some(listener) =>
                {
                    return Some(self.batch_entry(listener, &to, t.len));
                }
                _ => self.dispatch(server, t, &slot[..t.len]),
            }
        }
    }

    /// Polls the core until its next transmit, which is returned for the
    /// caller to send its own way (its bytes are in `buf`, or in the buffer
    /// of the input just handled if it is that input's answer); events on
    /// the way are carried out. `None` once the core has nothing more.
    pub(crate) fn next_transmit(
        self: &Rc<Self>,
        server: &mut Server,
        buf: &mut [u8],
    ) -> Option<Transmit> {
        loop {
            match server.poll_output(buf) {
                Output::Transmit(t) => return Some(t),
                Output::Event(event) => self.handle_event(server, event),
                Output::Timeout(at) => {
                    self.timer.set(at);
                    return None;
                }
            }
        }
    }

    /// Carries out everything the core has to say after an input it handled
    /// with `buf` (the same buffer: the answer to the input is already in
    /// it).
    pub(crate) fn process_outputs(self: &Rc<Self>, server: &mut Server, buf: &mut [u8]) {
        loop {
            match server.poll_output(buf) {
                Output::Transmit(t) => self.dispatch(server, t, &buf[..t.len]),
                Output::Event(event) => self.handle_event(server, event),
                Output::Timeout(at) => {
                    // Answers to data connections leave once the core has
                    // bound their peer connections; telling it of one that
                    // went meanwhile may give it more to say.
                    if !self.tcp.send_replies(server) {
                        self.timer.set(at);
                        return;
                    }
                }
            }
        }
    }

    /// [`process_outputs`](Self::process_outputs) after an input that came
    /// with no buffer (a timeout, a report, a lookup's result).
    pub(crate) fn process_pending(self: &Rc<Self>) {
        let mut server = self.server.borrow_mut();
        let mut scratch = self.scratch.borrow_mut();
        self.process_outputs(&mut server, &mut scratch);
    }

    /// Sends one message of the core's where its destination says: from a
    /// relay socket to a peer, or to a client through its UDP listener (the
    /// worker's batch), its connection (or the data connection waiting on
    /// another worker), or its DTLS session. Messages to clients who left
    /// are dropped; data the kernel refuses is counted in `server`.
    pub(crate) fn dispatch(&self, server: &mut Server, t: Transmit, payload: &[u8]) {
        let to = match t.to {
            Destination::Peer {
                relay,
                peer,
                dont_fragment,
            } => {
                let relays = self.relays.borrow();
                if let Some(socket) = relays.get(&relay.0)
                    && let Some(reason) = socket.send(payload, peer.0, dont_fragment)
                {
                    server.record_drop(reason, payload.len(), relay.0, peer.0);
                }
                return;
            }
            Destination::Client(to) | Destination::Alternate(to) => to,
        };
        match to.transport {
            Transport::Udp => {
                let Some(i) = self.listener_for(to.server) else {
                    return;
                };
                let (_, destination, source) = self.batch_entry(i, &to, payload.len());
                // A full batch drops the answer; the client retransmits.
                self.client_tx[i]
                    .borrow_mut()
                    .push(destination, source, payload);
                self.flush.notify_one();
            }
            Transport::Tcp | Transport::Tls => {
                if self.tcp.answer_waiter(&to, payload) {
                    return;
                }
                if let Some(conn) = self.streams.borrow().get(&(to.server, to.client)) {
                    conn.push(payload);
                    conn.flush();
                }
            }
            Transport::Dtls => {
                if let Some(d) = self.dtls.iter().find(|d| d.serves(to.server)) {
                    // Answers: the client retransmits what is lost. The
                    // endpoint's task sends the record.
                    let _ = d.send(Instant::now(), to.client, payload);
                    d.wake.notify_one();
                }
            }
        }
    }

    /// Acts on one of the core's events.
    pub(crate) fn handle_event(self: &Rc<Self>, server: &mut Server, event: Event) {
        match event {
            Event::NeedCredentials { username } => self.look_up(username),
            Event::ReleaseRelay { relay, protocol } => match protocol {
                // Dropping the entry aborts the task, which closes the socket.
                turnpike_core::RelayProtocol::Udp => {
                    drop(self.relays.borrow_mut().remove(&relay.0))
                }
                turnpike_core::RelayProtocol::Tcp => self.tcp.release(relay.0),
            },
            Event::OpenConnection { id, relay, peer } => {
                self.tcp.to_open.borrow_mut().push((id, relay, peer));
                self.tcp.opener.notify_one();
            }
            Event::ConnectionBound { id, client } => self.tcp.connection_bound(server, id, client),
            Event::CloseConnection { id } => self.tcp.close_connection(id),
            Event::RouteChannel {
                route,
                until,
                max_bps,
            } => {
                self.with_fast_path(|fast_path| fast_path.route(&route, until, max_bps).map(drop));
            }
            Event::UnrouteChannel { route } => self.with_fast_path(|fast_path| {
                if let Some(relayed) = fast_path.unroute(&route) {
                    *self.withdrawn.borrow_mut().entry(route.client).or_default() +=
                        traffic(relayed);
                }
                Ok(())
            }),
            Event::AllocationCreated(record) => accounting::created(&record, realm(server)),
            Event::AllocationEnded {
                record,
                reason,
                lasted,
                mut traffic,
            } => {
                // Its routes were withdrawn by the events before this one.
                if let Some(fast) = self.withdrawn.borrow_mut().remove(&record.client) {
                    traffic += fast;
                }
                accounting::ended(&record, realm(server), reason, lasted, &traffic);
                self.allocation_ended.notify_waiters();
            }
        }
    }

    /// Looks a user up off the worker (a database call may take a while)
    /// and hands the result to the shard, which answers the requests it
    /// held meanwhile.
    fn look_up(self: &Rc<Self>, username: Box<str>) {
        let Some(credentials) = self.credentials.clone() else {
            return;
        };
        let ctx = Rc::clone(self);
        tokio::task::spawn_local(async move {
            let resolved = credentials.lookup(&username).await;
            let now = Instant::now();
            // "Unavailable" from before the database came back: not kept
            // (the shard may have dropped such verdicts already), so the
            // held requests ask again.
            let valid_for = if credentials.outdated(&resolved) {
                Duration::ZERO
            } else {
                resolved.valid_for
            };
            ctx.server.borrow_mut().resolve_credentials(
                now,
                &username,
                resolved.lookup,
                now + valid_for,
            );
            ctx.process_pending();
        });
    }

    /// Updates the XDP routes (a control-path call: once per ChannelBind,
    /// CreatePermission or Refresh, never per packet). A route that cannot
    /// be written leaves its channel on the sockets, which relay it as
    /// before: it is logged once, not per channel.
    fn with_fast_path(
        &self,
        update: impl FnOnce(&mut FastPath) -> Result<(), turnpike_xdp::Error>,
    ) {
        static WARNED: AtomicBool = AtomicBool::new(false);
        let Some(fast_path) = &self.fast_path else {
            return;
        };
        // A worker that panicked holding the lock left whole routes behind
        // (each update is one map write per side): keep using them.
        let mut fast_path = fast_path.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(err) = update(&mut fast_path)
            && !WARNED.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(%err, "XDP route not written; its channel stays on the sockets (logged once)");
        }
    }
}

/// A fast path's count in the core's terms.
fn traffic(t: turnpike_xdp::RouteTraffic) -> Traffic {
    Traffic {
        to_peer_packets: t.to_peer_packets,
        to_peer_bytes: t.to_peer_bytes,
        to_client_packets: t.to_client_packets,
        to_client_bytes: t.to_client_bytes,
    }
}

/// The shard's realm, for accounting lines.
fn realm(server: &Server) -> &str {
    server
        .config()
        .turn
        .as_ref()
        .map_or("", |t| t.realm.as_str())
}

/// Sleeps until `deadline`, or forever without one.
pub(crate) async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
