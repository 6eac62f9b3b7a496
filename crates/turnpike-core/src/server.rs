//! [`Server`]: one shard of the STUN/TURN server.
//!
//! Each worker thread owns one `Server`. Client packets enter through
//! [`Server::handle_client_packet`], peer datagrams through
//! [`Server::handle_peer_packet`]; both write any answer into the caller's
//! buffer. Everything the core wants done leaves through one door,
//! [`Server::poll_output`]: that answer, the events only the shell can act
//! on, what the core owes clients outside a request's answer, and finally
//! when its timer is due. Time moves only through the `now` arguments and
//! [`Server::handle_timeout`]. Shards share nothing on the packet path;
//! quotas are shared but touched only by Allocate and deletion.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::{SmallRng, StdRng};
use rand::{Rng, SeedableRng};
use rustc_hash::FxHashMap;
use turnpike_codec::framing::{self, PacketKind};
use turnpike_codec::{Attribute, Class, DecodeError, Header, Message, Method, TransactionId};

use crate::allocation::{AllocationView, Allocations};
use crate::auth::{self, Auth};
use crate::bandwidth::Caps;
use crate::binding::{self, Outcome};
use crate::config::{Config, TurnConfig};
use crate::connection::Connections;
use crate::credentials::{Hold, KeyCache, Lookup, UserKeys, Waiting};
use crate::drain::Draining;
use crate::ephemeral::Secrets;
use crate::ids::{ConnectionId, PeerSocket, RelayedAddress};
use crate::output::{Event, Output, Transmit};
use crate::packet::{FiveTuple, Packet};
use crate::rate::PerSourceRate;
use crate::relay::{NoRelays, PortPicker, RelayBinder};
use crate::response::{self, ErrorDetails};
use crate::stats::{AuthFailure, DropReason, EndReason, ErrorCode, Label, RequestMethod, Stats};
use crate::turn::{self, Request, TurnState};

/// How often expired allocations, permissions and channels are swept.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// An unauthenticated answer may be at most this many times its request.
const AMPLIFICATION_LIMIT: usize = 3;

/// Identifies a shard among the server's workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This shard's number, `0..count`.
    pub index: usize,
    /// How many shards there are.
    pub count: usize,
    /// Seed of the shard's ordinary random numbers (relay ports and IPs)
    /// and of the keys of its per-source rate tables: from the OS in
    /// production, fixed in tests for determinism.
    pub seed: u64,
    /// Seed of the shard's cryptographically secure generator, for what a
    /// client could exploit by guessing: CONNECTION-IDs, RESERVATION-TOKENs
    /// and the transaction IDs of the indications the server originates.
    /// From the OS in production, fixed in tests.
    pub secret_seed: [u8; 32],
}

impl Default for Shard {
    fn default() -> Self {
        Shard {
            index: 0,
            count: 1,
            seed: 0,
            secret_seed: [0; 32],
        }
    }
}

/// A key for a [`PerSourceRate`] table.
fn rate_key(rng: &mut SmallRng) -> [u64; 2] {
    [rng.random(), rng.random()]
}

/// One shard of the server.
#[derive(Debug)]
pub struct Server {
    config: Arc<Config>,
    stats: Stats,
    turn: Option<TurnState>,
    limiter: PerSourceRate,
    /// The transmit of the latest input, written to that input's buffer;
    /// the first thing [`poll_output`](Self::poll_output) hands out.
    answer: Option<Transmit>,
    /// The time of the latest input: requests held for a lookup are
    /// answered as of then when `poll_output` gets to them.
    now: Option<Instant>,
    next_sweep: Option<Instant>,
}

impl Server {
    /// A single STUN-only shard (TURN requests, if configured, fail to bind
    /// relays). For tests and tools; the runtime uses [`Server::with_relays`].
    pub fn new(config: Arc<Config>) -> Self {
        Server::with_relays(config, Shard::default(), Box::new(NoRelays))
    }

    /// A shard that binds relay sockets through `relays`.
    pub fn with_relays(config: Arc<Config>, shard: Shard, relays: Box<dyn RelayBinder>) -> Self {
        // Keys of the rate tables, from the shard's seed (a stream of its
        // own, so the ports drawn from the seed stay as they were).
        let mut keys = SmallRng::seed_from_u64(shard.seed ^ 0x7261_7465_6b65_7973);
        let turn = config.turn.as_ref().map(|t| TurnState {
            allocations: Allocations::default(),
            users: KeyCache::default(),
            secrets: Secrets::default(),
            waiting: Waiting::new(rate_key(&mut keys)),
            ports: PortPicker::new(t.min_port, t.max_port, shard.index, shard.count),
            rng: SmallRng::seed_from_u64(shard.seed),
            secure_rng: StdRng::from_seed(shard.secret_seed),
            relays,
            connections: Connections::default(),
            outgoing: std::collections::VecDeque::new(),
            events: std::collections::VecDeque::new(),
            deadline: None,
            shard: (shard.index, shard.count),
            peer_policy: t
                .peer_policy
                .clone()
                .with_relay_ports(t.min_port, t.max_port),
            host_ips: Box::default(),
            stats: Stats::default(),
            serial: 0,
            stopped: FxHashMap::default(),
            draining: None,
            alternates: Draining::default(),
            next_alternate: 0,
        });
        Server {
            config,
            stats: Stats::default(),
            turn,
            limiter: PerSourceRate::new(rate_key(&mut keys)),
            answer: None,
            now: None,
            next_sweep: None,
        }
    }

    /// The configuration this shard runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// This shard's counters.
    pub fn stats(&self) -> Stats {
        let mut stats = self.stats;
        if let Some(turn) = &self.turn {
            stats += turn.stats;
        }
        stats
    }

    /// Live allocations on this shard.
    pub fn allocation_count(&self) -> usize {
        self.turn.as_ref().map_or(0, |t| t.allocations.len())
    }

    /// Teaches this shard a user's keys for good (static users).
    pub fn insert_credentials(&mut self, now: Instant, username: &str, keys: UserKeys) {
        if let (Some(turn), Some(config)) = (self.turn.as_mut(), self.config.turn.as_ref()) {
            turn.users
                .insert(now, username, &config.realm, Lookup::Found(keys), None);
        }
    }

    /// Answers an [`Event::NeedCredentials`]: what the store said about
    /// `username`, trusted until `valid_until`. Requests held for the user
    /// are answered through [`poll_output`](Self::poll_output).
    pub fn resolve_credentials(
        &mut self,
        now: Instant,
        username: &str,
        lookup: Lookup,
        valid_until: Instant,
    ) {
        self.now = Some(now);
        if let (Some(turn), Some(config)) = (self.turn.as_mut(), self.config.turn.as_ref()) {
            turn.users
                .insert(now, username, &config.realm, lookup, Some(valid_until));
            turn.waiting.complete(username);
        }
    }

    /// Drops every "unavailable" verdict ([`Lookup::Unavailable`]): the
    /// store is reachable again, and the users told 500 are looked up again
    /// on their next request instead of at the end of the verdict's time.
    pub fn forget_unavailable_credentials(&mut self) {
        if let Some(turn) = self.turn.as_mut() {
            turn.users.forget_unavailable();
        }
    }

    /// Forgets a user (allocations already made stay until they expire).
    pub fn remove_credentials(&mut self, username: &str) {
        if let (Some(turn), Some(config)) = (self.turn.as_mut(), self.config.turn.as_ref()) {
            turn.users.remove(username, &config.realm);
        }
    }

    /// A client's connection (TCP, TLS, DTLS) closed: its allocation goes
    /// with it (RFC 8656 §3.1: the control connection bounds the allocation).
    pub fn connection_closed(&mut self, now: Instant, five_tuple: &FiveTuple) {
        self.now = Some(now);
        let (Some(turn), Some(config)) = (self.turn.as_mut(), self.config.turn.as_ref()) else {
            return;
        };
        if let Some(id) = turn.allocations.id_by_five_tuple(five_tuple) {
            turn.delete(config, id, now, EndReason::ConnectionClosed);
        }
    }

    /// Ends the allocations `select` picks (their end reason: `reason`),
    /// and returns how many. Their sockets, connections and routes are
    /// released through [`poll_output`](Self::poll_output), as for any end.
    pub fn end_allocations(
        &mut self,
        now: Instant,
        reason: EndReason,
        mut select: impl FnMut(&AllocationView<'_>) -> bool,
    ) -> usize {
        self.now = Some(now);
        let (Some(turn), Some(config)) = (self.turn.as_mut(), self.config.turn.as_ref()) else {
            return 0;
        };
        let ids: Vec<_> = turn
            .allocations
            .iter()
            .filter(|(_, a)| select(&AllocationView::new(a, now)))
            .map(|(id, _)| id)
            .collect();
        for &id in &ids {
            turn.delete(config, id, now, reason);
        }
        turn.deadline = turn.next_deadline();
        ids.len()
    }

    /// Refuses `name` new allocations (403) until `until`: a USERNAME, or
    /// the user id of time-limited credentials, which stops every
    /// credential minted for it. What it holds already is ended apart
    /// ([`end_allocations`](Self::end_allocations)).
    pub fn stop_user(&mut self, name: &str, until: Instant) {
        if let Some(turn) = self.turn.as_mut() {
            let now = self.now.unwrap_or(until);
            turn.stopped.retain(|_, &mut t| t > now);
            turn.stopped.insert(name.into(), until);
        }
    }

    /// Starts draining (`Some`): every new Allocate is refused as
    /// `draining` says (see [`crate::drain`]), while the allocations this
    /// shard holds keep working until they end. `None` stops draining.
    pub fn set_draining(&mut self, draining: Option<Draining>) {
        if let Some(turn) = self.turn.as_mut() {
            turn.draining = draining;
            turn.next_alternate = 0;
        }
    }

    /// The relays a new Allocate is sent to (300 with ALTERNATE-SERVER)
    /// when this server is at its capacity (`total_quota`), and while it
    /// drains; see [`crate::drain`]. Without any, such Allocates get 508.
    pub fn set_alternates(&mut self, alternates: Draining) {
        if let Some(turn) = self.turn.as_mut() {
            if turn.draining.is_some() {
                turn.draining = Some(alternates.clone());
            }
            turn.alternates = alternates;
        }
    }

    /// How new Allocates are refused, while draining.
    pub fn draining(&self) -> Option<&Draining> {
        self.turn.as_ref().and_then(|t| t.draining.as_ref())
    }

    /// Calls `visit` with each live allocation of this shard.
    pub fn visit_allocations(&self, now: Instant, mut visit: impl FnMut(&AllocationView<'_>)) {
        if let Some(turn) = &self.turn {
            for (_, allocation) in turn.allocations.iter() {
                visit(&AllocationView::new(allocation, now));
            }
        }
    }

    /// Whether the client on `five_tuple` holds an allocation: the shell
    /// keeps connections that have one and closes those that never
    /// authenticated.
    pub fn has_allocation(&self, five_tuple: &FiveTuple) -> bool {
        self.turn
            .as_ref()
            .is_some_and(|t| t.allocations.id_by_five_tuple(five_tuple).is_some())
    }

    /// The host's addresses as they are now (every interface's): the peer
    /// policy refuses the server's wildcard sockets and every port outside
    /// the relay range on them (see [`PeerPolicy`](crate::PeerPolicy)).
    /// Replaces the addresses of an earlier call; the configuration's own
    /// stay. Channels already bound keep relaying.
    pub fn set_host_addresses(&mut self, addresses: &[std::net::IpAddr]) {
        if let Some(turn) = self.turn.as_mut() {
            turn.peer_policy = turn.peer_policy.with_host_ips(addresses);
            turn.host_ips = addresses.into();
        }
    }

    /// Runs with `config` from now on: a configuration made for running
    /// shards by [`Config::reconfigured`] from this shard's. Requests,
    /// allocations, permissions and channels made from now on follow it;
    /// what exists stays (allocations keep the lifetime they were granted,
    /// cached keys and held lookups stay), except that permissions and
    /// channels to peers the new peer policy refuses are withdrawn at once
    /// (and their fast-path routes), and the fast-path routes are
    /// withdrawn when a per-user bandwidth cap starts to apply, put back
    /// when none does any more, and announced again with the new cap when
    /// `max_bps` changes. Returns `false`, changing nothing,
    /// when `config` changes what a running shard cannot
    /// ([`Config::can_replace`]).
    pub fn reconfigure(&mut self, now: Instant, config: Arc<Config>) -> bool {
        if !config.can_replace(&self.config) {
            return false;
        }
        self.now = Some(now);
        if let (Some(turn), Some(t)) = (self.turn.as_mut(), config.turn.as_ref()) {
            turn.peer_policy = t
                .peer_policy
                .clone()
                .with_relay_ports(t.min_port, t.max_port)
                .with_host_ips(&turn.host_ips);
            turn.withdraw_refused_peers(t, now);
            let was = self
                .config
                .turn
                .as_ref()
                .map(|t| t.caps())
                .unwrap_or_default();
            turn.reroute_for_caps(t, now, was);
        }
        self.config = config;
        true
    }

    /// Replaces the shared secrets of time-limited credentials.
    pub fn set_secrets(&mut self, secrets: Secrets) {
        if let Some(turn) = self.turn.as_mut() {
            turn.secrets = secrets;
        }
    }

    /// The next thing the shell must do: call it after every input until it
    /// returns [`Output::Timeout`].
    ///
    /// In order: the transmit of the latest input (already in the buffer
    /// passed with it; `out` is not touched), the events that input or an
    /// earlier report raised, the answers to requests held for a credential
    /// lookup now resolved (answered as if they had just arrived, written to
    /// `out`), what the core owes clients outside a request's answer (the
    /// deferred answer to a Connect, a ConnectionAttempt; written to `out`),
    /// and last when [`handle_timeout`](Self::handle_timeout) is next due.
    /// `out` should be as large as for
    /// [`handle_client_packet`](Self::handle_client_packet).
    pub fn poll_output(&mut self, out: &mut [u8]) -> Output {
        if let Some(transmit) = self.answer.take() {
            return Output::Transmit(transmit);
        }
        if let Some(event) = self.turn.as_mut().and_then(|t| t.events.pop_front()) {
            return Output::Event(event);
        }
        while let (Some(now), Some(held)) = (
            self.now,
            self.turn.as_mut().and_then(|t| t.waiting.next_ready()),
        ) {
            let packet = Packet {
                transport: held.transport,
                local: held.local,
                remote: held.remote,
                data: &held.data,
            };
            self.answer = self.client_packet(now, packet, out);
            if let Some(transmit) = self.answer.take() {
                return Output::Transmit(transmit);
            }
            if let Some(event) = self.turn.as_mut().and_then(|t| t.events.pop_front()) {
                return Output::Event(event);
            }
        }
        let software = self.config.software.as_deref();
        if let Some(turn) = self.turn.as_mut() {
            while let Some(outgoing) = turn.outgoing.pop_front() {
                // One that does not fit `out` is dropped; the next may fit.
                if let Some(transmit) = turn::connect::render(outgoing, software, turn, out) {
                    return Output::Transmit(transmit);
                }
            }
        }
        Output::Timeout(self.poll_timeout())
    }

    /// The shell's report on an [`Event::OpenConnection`]: whether the
    /// connection to the peer was established. The Connect is answered
    /// through [`poll_output`](Self::poll_output) (447 if not). After a
    /// failure, drop the connection; no [`Event::CloseConnection`] follows.
    pub fn connect_finished(&mut self, now: Instant, id: ConnectionId, established: bool) {
        self.now = Some(now);
        if let (Some(turn), Some(config)) = (self.turn.as_mut(), self.config.turn.as_ref()) {
            turn::connect::finished(turn, config, now, id, established);
        }
    }

    /// A peer connected to the TCP relay `relay` (RFC 6062 §5.3). `Some`: the
    /// client is told (a ConnectionAttempt through
    /// [`poll_output`](Self::poll_output)); keep the connection, unread,
    /// under that identifier. `None`: the peer has no permission (or a limit
    /// is reached): close it. The shell needs the answer before it can file
    /// the socket, hence a return value rather than an output.
    pub fn peer_connected(
        &mut self,
        now: Instant,
        relay: RelayedAddress,
        peer: PeerSocket,
    ) -> Option<ConnectionId> {
        self.now = Some(now);
        let (turn, config) = self.turn.as_mut().zip(self.config.turn.as_ref())?;
        let id = turn::connect::from_peer(turn, config, now, relay, peer)?;
        self.next_sweep.get_or_insert(now + SWEEP_INTERVAL);
        Some(id)
    }

    /// A peer connection, or the data connection bound to it, closed (or
    /// failed) in the shell: the core forgets it, and answers its Connect
    /// with 447 if it was still connecting.
    pub fn peer_connection_closed(&mut self, id: ConnectionId) {
        if let (Some(turn), Some(config)) = (self.turn.as_mut(), self.config.turn.as_ref()) {
            turn.forget_connection(config, id);
        }
    }

    /// Peer connections of this shard's TCP allocations, in any state.
    pub fn peer_connection_count(&self) -> usize {
        self.turn.as_ref().map_or(0, |t| t.connections.len())
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called
    /// (also the last output of [`poll_output`](Self::poll_output)): when
    /// the first allocation expires or a Connect or ConnectionBind runs out
    /// of time, or for the periodic sweep of permissions, channels and held
    /// lookups, whichever comes first.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let deadline = self.turn.as_ref().and_then(|t| t.deadline);
        match (self.next_sweep, deadline) {
            (Some(sweep), Some(deadline)) => Some(sweep.min(deadline)),
            (sweep, deadline) => sweep.or(deadline),
        }
    }

    /// Expires allocations (closing their relays), peer connections that
    /// ran out of time, permissions and channels. Allocations and peer
    /// connections go at their exact deadlines; permissions, channels and
    /// held lookups in one sweep per [`SWEEP_INTERVAL`] over the shard's
    /// allocations (a lookup ignores an expired one meanwhile), which is
    /// cheaper than a timer per object.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = Some(now);
        if self.poll_timeout().is_none_or(|t| t > now) {
            return;
        }
        let (Some(turn), Some(config)) = (self.turn.as_mut(), self.config.turn.as_ref()) else {
            return;
        };
        for id in turn.allocations.expired(now) {
            turn.delete(config, id, now, EndReason::Expired);
        }
        // Connects that got no connection in time are answered 447;
        // connections nobody bound in time are closed (RFC 6062 §5.2, §5.3).
        for id in turn.connections.overdue(now) {
            turn.forget_connection(config, id);
            turn.events.push_back(Event::CloseConnection { id });
        }
        let routes = config.channel_routes;
        let events = &mut turn.events;
        turn.allocations.sweep(now, |allocation, dropped| {
            if routes {
                for channel in dropped {
                    if let Some(route) = allocation.route(channel) {
                        events.push_back(Event::UnrouteChannel { route });
                    }
                }
            }
        });
        turn.waiting.expire(now);
        turn.deadline = turn.next_deadline();
        self.next_sweep = (turn.allocations.len() > 0
            || !turn.waiting.is_empty()
            || !turn.connections.is_empty())
        .then(|| now + SWEEP_INTERVAL);
    }

    /// Handles one datagram, or one message framed from a stream, from a
    /// client. If an answer or a relayed datagram is due, it is written to
    /// the start of `out`, and the next [`poll_output`](Self::poll_output)
    /// returns it. `out` should hold at least as many bytes as the largest
    /// message the core writes
    /// ([`MAX_FRAME_LEN`](turnpike_codec::framing::MAX_FRAME_LEN)); a
    /// smaller one drops what does not fit.
    pub fn handle_client_packet(&mut self, now: Instant, packet: Packet<'_>, out: &mut [u8]) {
        debug_assert!(self.answer.is_none(), "poll_output after every input");
        self.now = Some(now);
        self.answer = self.client_packet(now, packet, out);
    }

    fn client_packet(
        &mut self,
        now: Instant,
        packet: Packet<'_>,
        out: &mut [u8],
    ) -> Option<Transmit> {
        match framing::classify(packet.data) {
            PacketKind::Stun => self.handle_stun(now, &packet, out),
            PacketKind::ChannelData => {
                let caps = self.caps();
                let Some(turn) = self.turn.as_mut() else {
                    return self.drop_packet();
                };
                let five_tuple = packet.five_tuple();
                let relayed =
                    turn::send::channel_data(turn, (now, caps), &five_tuple, packet.data, out);
                self.count_to_peer(relayed, &packet)
            }
            PacketKind::Dtls | PacketKind::Other => self.drop_packet(),
        }
    }

    /// Handles a datagram a peer sent to the relayed address `relay`. The
    /// client's copy, if it gets one, is written to the start of `out` (as
    /// large as for [`handle_client_packet`](Self::handle_client_packet))
    /// and returned by the next [`poll_output`](Self::poll_output).
    pub fn handle_peer_packet(
        &mut self,
        now: Instant,
        relay: RelayedAddress,
        peer: PeerSocket,
        data: &[u8],
        out: &mut [u8],
    ) {
        debug_assert!(self.answer.is_none(), "poll_output after every input");
        self.now = Some(now);
        let caps = self.caps();
        let Some(turn) = self.turn.as_mut() else {
            return;
        };
        self.answer = match turn::data::from_peer(turn, (now, caps), relay, peer, data, out) {
            Ok(t) => {
                self.stats.relayed.to_client(data.len());
                Some(t)
            }
            Err((reason, bytes)) => {
                self.record_drop(reason, bytes, peer.0, relay.0);
                None
            }
        };
    }

    /// The bandwidth caps on relayed data (none without TURN).
    fn caps(&self) -> Caps {
        self.config
            .turn
            .as_ref()
            .map_or_else(Caps::default, TurnConfig::caps)
    }

    /// Counts relayed data that was not delivered, by reason: the core's
    /// own drops and the shell's (a full queue, a path MTU the kernel
    /// enforced). Those a limit of the way out caused
    /// ([`DropReason::is_relay_limit`]) are logged at debug level too.
    /// `bytes` is the data's length (the payload, without TURN framing);
    /// `from` and `to` are the addresses it arrived between.
    pub fn record_drop(
        &mut self,
        reason: DropReason,
        bytes: usize,
        from: SocketAddr,
        to: SocketAddr,
    ) {
        self.stats.drops.record(reason);
        if reason.is_relay_limit() {
            tracing::debug!(%reason, bytes, %from, %to, "relayed data dropped");
        }
    }

    fn count_to_peer(
        &mut self,
        relayed: turn::send::Relayed,
        packet: &Packet<'_>,
    ) -> Option<Transmit> {
        match relayed {
            Ok(t) => {
                self.stats.relayed.to_peer(t.len);
                Some(t)
            }
            Err((reason, bytes)) => {
                self.record_drop(reason, bytes, packet.remote, packet.local);
                None
            }
        }
    }

    fn handle_stun(
        &mut self,
        now: Instant,
        packet: &Packet<'_>,
        out: &mut [u8],
    ) -> Option<Transmit> {
        let message = match Message::parse(packet.data) {
            Ok(message) => message,
            Err(error) => return self.handle_malformed(packet, error, out),
        };
        // RFC 8489 §7.3: a FINGERPRINT that does not match means the packet is
        // not STUN after all.
        if message.fingerprint_matches() == Some(false) {
            return self.drop_packet();
        }
        let method = message.message_type().method;
        match message.message_type().class {
            Class::Request => {}
            Class::Indication if method == Method::SEND && !message.is_rfc3489() => {
                let caps = self.caps();
                let Some(turn) = self.turn.as_mut() else {
                    return self.drop_packet();
                };
                let five_tuple = packet.five_tuple();
                let relayed = turn::send::indication(turn, (now, caps), &five_tuple, &message, out);
                return self.count_to_peer(relayed, packet);
            }
            // Binding indications are keepalives: nothing to answer.
            Class::Indication if method == Method::BINDING => return None,
            // Responses are not ours.
            _ => return self.drop_packet(),
        }
        self.stats.requests.record(RequestMethod::of(method));
        match method {
            Method::BINDING => match binding::handle_request(&self.config, &message, packet, out) {
                Ok(Outcome::Success(transmit)) => {
                    self.stats.bindings.record(packet.transport.into());
                    Some(transmit)
                }
                Ok(Outcome::Error(transmit)) => {
                    self.count_answer(method, &out[..transmit.len]);
                    Some(transmit)
                }
                Err(_) => self.drop_packet(),
            },
            // A classic RFC 3489 header is too weak a signature to answer
            // anything but Binding: 20 zero bytes would otherwise get a reply.
            _ if message.is_rfc3489() => self.drop_packet(),
            Method::ALLOCATE
            | Method::REFRESH
            | Method::CREATE_PERMISSION
            | Method::CHANNEL_BIND
            | Method::CONNECT
            | Method::CONNECTION_BIND
                if self.turn.is_some() =>
            {
                self.handle_turn_request(now, packet, &message, out)
            }
            method => {
                let details = ErrorDetails {
                    unknown_attributes: &[],
                    fingerprint: message.has_fingerprint(),
                };
                self.reply_error(packet, method, message.transaction_id(), 400, details, out)
            }
        }
    }

    fn handle_turn_request(
        &mut self,
        now: Instant,
        packet: &Packet<'_>,
        message: &Message<'_>,
        out: &mut [u8],
    ) -> Option<Transmit> {
        let config = Arc::clone(&self.config);
        let turn_config = config.turn.as_ref()?;
        let method = message.message_type().method;
        let tid = message.transaction_id();
        let fingerprint = message.has_fingerprint();

        let unknown = response::UnknownAttributes::of(message);
        if !unknown.is_empty() {
            let details = ErrorDetails {
                unknown_attributes: unknown.as_slice(),
                fingerprint,
            };
            return self.reply_error(packet, method, tid, 420, details, out);
        }

        let turn = self.turn.as_mut()?;
        let context = auth::Context {
            realm: &turn_config.realm,
            nonces: &turn_config.nonces,
            users: &turn.users,
            secrets: &turn.secrets,
            separator: turn_config.rest_separator,
            control: (method == Method::CONNECTION_BIND)
                .then(|| turn::connection_bind::control_client(turn, message))
                .flatten(),
        };
        let (user, integrity) = match auth::authenticate(message, packet.remote, now, &context) {
            Auth::Ok { user, integrity } => {
                self.stats.auth_successes += 1;
                (user, integrity)
            }
            Auth::Challenge { code, failure } => {
                if let Some(failure) = failure {
                    self.stats.auth_failures.record(failure);
                }
                return self.challenge(now, packet, message, code, turn_config, out);
            }
            Auth::BadRequest => {
                let details = ErrorDetails {
                    unknown_attributes: &[],
                    fingerprint,
                };
                return self.reply_error(packet, method, tid, 400, details, out);
            }
            Auth::Unknown { username } => {
                let source = self.config.sources.key(packet.remote.ip());
                match turn.waiting.hold(now, &username, packet, source) {
                    Hold::Lookup => {
                        turn.events.push_back(Event::NeedCredentials { username });
                        self.next_sweep.get_or_insert(now + SWEEP_INTERVAL);
                    }
                    Hold::Queued => {}
                    // A datagram client retransmits and is answered once
                    // there is room; a stream client would wait in vain.
                    Hold::Dropped if packet.transport.is_stream() => {
                        let details = ErrorDetails {
                            unknown_attributes: &[],
                            fingerprint,
                        };
                        return self.reply_error(packet, method, tid, 500, details, out);
                    }
                    Hold::Dropped => {}
                }
                return None;
            }
            Auth::Unavailable => {
                self.stats.auth_failures.record(AuthFailure::Unavailable);
                let details = ErrorDetails {
                    unknown_attributes: &[],
                    fingerprint,
                };
                return self.reply_error(packet, method, tid, 500, details, out);
            }
        };
        // Time-limited credentials: an expired one cannot make an
        // allocation, and in strict mode cannot do anything, nor keep an
        // allocation beyond its expiry.
        let mut credential_left = None;
        if let Some(expires) = user.expires {
            let unix_now = turn_config
                .wall_clock
                .map_or(u64::MAX, |c| c.unix_secs(now));
            if expires <= unix_now && (method == Method::ALLOCATE || turn_config.strict_expiry) {
                self.stats
                    .auth_failures
                    .record(AuthFailure::ExpiredCredential);
                return self.challenge(now, packet, message, 401, turn_config, out);
            }
            if turn_config.strict_expiry {
                credential_left = Some(Duration::from_secs(expires - unix_now));
            }
        }
        let request = Request {
            now,
            packet,
            message,
            config: turn_config,
            software: config.software.as_deref(),
            user,
            integrity,
            credential_left,
        };
        let len = match method {
            Method::ALLOCATE => turn::allocate::handle(&request, turn, out),
            Method::REFRESH => turn::refresh::handle(&request, turn, out),
            Method::CREATE_PERMISSION => turn::create_permission::handle(&request, turn, out),
            Method::CHANNEL_BIND => turn::channel_bind::handle(&request, turn, out),
            Method::CONNECT => turn::connect::handle(&request, turn, out),
            Method::CONNECTION_BIND => turn::connection_bind::handle(&request, turn, out),
            _ => None,
        };
        if turn.allocations.len() > 0 || !turn.connections.is_empty() {
            self.next_sweep.get_or_insert(now + SWEEP_INTERVAL);
        }
        match len {
            Some(len) => {
                self.count_answer(method, &out[..len]);
                Some(Transmit::reply(packet, len))
            }
            // An accepted Connect is answered once the shell has connected.
            None if method == Method::CONNECT => None,
            None => self.drop_packet(),
        }
    }

    /// A 401/438 answer, within the amplification budget and the per-source
    /// rate limit; otherwise nothing.
    fn challenge(
        &mut self,
        now: Instant,
        packet: &Packet<'_>,
        message: &Message<'_>,
        code: u16,
        config: &TurnConfig,
        out: &mut [u8],
    ) -> Option<Transmit> {
        let budget = packet
            .data
            .len()
            .saturating_mul(AMPLIFICATION_LIMIT)
            .min(out.len());
        let source = self.config.sources.key(packet.remote.ip());
        let allowed = self
            .limiter
            .allow(source, now, config.challenges_per_second);
        let len = allowed
            .then(|| {
                auth::write_challenge(
                    out,
                    message.message_type().method,
                    message.transaction_id(),
                    code,
                    &config.realm,
                    &config.nonces,
                    now,
                    packet.remote,
                    message.has_fingerprint(),
                    budget,
                )
            })
            .flatten();
        match len {
            Some(len) => {
                self.stats.challenges_sent += 1;
                self.count_error(message.message_type().method, code);
                Some(Transmit::reply(packet, len))
            }
            None => {
                self.stats.drops.record(DropReason::RateLimited);
                None
            }
        }
    }

    /// A message whose header is valid but whose body is not: a request with
    /// the magic cookie and a consistent length gets 400 (RFC 8489 §6.3.1);
    /// anything less certain to be STUN is dropped silently.
    fn handle_malformed(
        &mut self,
        packet: &Packet<'_>,
        error: DecodeError,
        out: &mut [u8],
    ) -> Option<Transmit> {
        let header = Header::peek(packet.data)?;
        let body_fits =
            usize::from(header.length) + turnpike_codec::HEADER_LEN == packet.data.len();
        let answerable = matches!(
            error,
            DecodeError::AttributeOverrun
                | DecodeError::TooManyAttributes
                | DecodeError::FingerprintNotLast
        ) && body_fits
            && header.message_type.class == Class::Request
            && !header.transaction_id.is_rfc3489();
        if !answerable {
            return self.drop_packet();
        }
        self.reply_error(
            packet,
            header.message_type.method,
            header.transaction_id,
            400,
            ErrorDetails::default(),
            out,
        )
    }

    fn reply_error(
        &mut self,
        packet: &Packet<'_>,
        method: Method,
        transaction_id: TransactionId,
        code: u16,
        details: ErrorDetails<'_>,
        out: &mut [u8],
    ) -> Option<Transmit> {
        let len = response::write_error(out, method, transaction_id, code, details).ok()?;
        self.count_error(method, code);
        Some(Transmit::reply(packet, len))
    }

    /// Counts an answer the method's handler wrote: error responses by
    /// code (read back from the answer, so every code path is counted in
    /// one place; answers are control traffic, never relayed data).
    fn count_answer(&mut self, method: Method, answer: &[u8]) {
        let Ok(message) = Message::parse(answer) else {
            return;
        };
        if message.message_type().class != Class::Error {
            return;
        }
        let code = message.decoded().find_map(|a| match a {
            Ok(Attribute::ErrorCode(e)) => Some(e.code),
            _ => None,
        });
        if let Some(code) = code {
            self.count_error(method, code);
        }
    }

    fn count_error(&mut self, method: Method, code: u16) {
        self.stats.errors[RequestMethod::of(method).index()].record(ErrorCode::of(code));
    }

    /// Counts a packet dropped without an answer: not a message the server
    /// answers.
    fn drop_packet(&mut self) -> Option<Transmit> {
        self.stats.drops.record(DropReason::Malformed);
        None
    }
}
