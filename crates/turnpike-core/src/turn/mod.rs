//! TURN (RFC 8656, RFC 5766, RFC 6156): one file per method.
//!
//! - [`allocate`] — Allocate — relayed addresses, EVEN-PORT, RESERVATION-TOKEN,
//!   dual-stack (ADDITIONAL-ADDRESS-FAMILY), quotas.
//! - [`refresh`] — Refresh — lifetimes, deletion.
//! - [`create_permission`] — CreatePermission.
//! - [`channel_bind`] — ChannelBind.
//! - [`send`] — client → peer: Send indications and ChannelData.
//! - [`data`] — peer → client: Data indications and ChannelData.
//! - [`connect`] — Connect (RFC 6062): a TCP allocation's connection to a peer,
//!   and the peer-initiated side (ConnectionAttempt).
//! - [`connection_bind`] — ConnectionBind (RFC 6062): a client's data
//!   connection joins a peer connection.
//!
//! Authenticated requests arrive here as a [`Request`] after
//! [`crate::auth`] has accepted them; answers are signed the way the request was.

pub(crate) mod allocate;
pub(crate) mod channel_bind;
pub(crate) mod connect;
pub(crate) mod connection_bind;
pub(crate) mod create_permission;
pub(crate) mod data;
pub(crate) mod refresh;
pub(crate) mod send;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::{SmallRng, StdRng};
use rustc_hash::FxHashMap;
use turnpike_codec::{Attribute, EncodeError, ErrorCode, Message, MessageBuilder};

use std::collections::VecDeque;

use crate::allocation::Allocations;
use crate::auth::Integrity;
use crate::bandwidth::Caps;
use crate::config::TurnConfig;
use crate::connection::{Connections, Outgoing, State};
use crate::credentials::{KeyCache, User, Waiting};
use crate::drain::Draining;
use crate::ephemeral::Secrets;
use crate::ids::{AllocationId, ConnectionId, RelayedAddress};
use crate::output::{AllocationRecord, Event};
use crate::packet::{FiveTuple, Packet};
use crate::peer_policy::PeerPolicy;
use crate::relay::{PortPicker, RelayBinder};
use crate::response::reason_phrase;
use crate::stats::{EndReason, Stats};

/// A shard's TURN state.
pub(crate) struct TurnState {
    pub(crate) allocations: Allocations,
    pub(crate) users: KeyCache,
    pub(crate) secrets: Secrets,
    pub(crate) waiting: Waiting,
    pub(crate) ports: PortPicker,
    /// Ports and relay IPs: nothing a client gains by predicting.
    pub(crate) rng: SmallRng,
    /// CONNECTION-IDs, RESERVATION-TOKENs, transaction IDs of indications
    /// the server originates: a CSPRNG (ChaCha12), as a client guessing
    /// them could bind another's connection or claim another's port.
    pub(crate) secure_rng: StdRng,
    pub(crate) relays: Box<dyn RelayBinder>,
    /// Peer connections of this shard's TCP allocations.
    pub(crate) connections: Connections,
    /// Answers and indications owed to clients outside a request's answer.
    pub(crate) outgoing: VecDeque<Outgoing>,
    /// What the shell must do, in order.
    pub(crate) events: VecDeque<Event>,
    /// The earliest deadline set since the last timeout (an allocation's
    /// expiry, a Connect's or ConnectionBind's 30 s): the shard's timer
    /// fires then, not at the next periodic sweep.
    pub(crate) deadline: Option<Instant>,
    /// This shard's number and the shard count (for connection identifiers).
    pub(crate) shard: (usize, usize),
    /// The configuration's peer policy, with the relay port range and the
    /// host's addresses as the shell last reported them.
    pub(crate) peer_policy: PeerPolicy,
    /// The host's addresses as the shell last reported them, for a new
    /// policy on reconfiguration.
    pub(crate) host_ips: Box<[std::net::IpAddr]>,
    /// What the TURN methods count themselves; [`crate::Server::stats`]
    /// adds the server's own.
    pub(crate) stats: Stats,
    /// The next allocation's serial (the shard's number in the top 16 bits).
    pub(crate) serial: u64,
    /// Users the operator stopped, refused new allocations until then.
    pub(crate) stopped: FxHashMap<Box<str>, Instant>,
    /// While draining: how a new Allocate is refused.
    pub(crate) draining: Option<Draining>,
    /// Where a new Allocate goes when the server is at capacity.
    pub(crate) alternates: Draining,
    /// Which of the alternates is next.
    pub(crate) next_alternate: usize,
}

impl std::fmt::Debug for TurnState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnState")
            .field("allocations", &self.allocations.len())
            .finish_non_exhaustive()
    }
}

impl TurnState {
    /// A serial for a new allocation: unique in the process, since the
    /// shard's number is in the top 16 bits.
    pub(crate) fn next_serial(&mut self) -> u64 {
        self.serial += 1;
        ((self.shard.0 as u64) << 48) | (self.serial & ((1 << 48) - 1))
    }

    /// Whether `username` (or, for a time-limited credential, its user id)
    /// was stopped by the operator and still is at `now`.
    pub(crate) fn is_stopped(&self, username: &str, separator: char, now: Instant) -> bool {
        if self.stopped.is_empty() {
            return false;
        }
        crate::ephemeral::user_names(username, separator)
            .any(|name| self.stopped.get(name).is_some_and(|&until| until > now))
    }

    /// Makes the shard's timer fire at `at` at the latest.
    pub(crate) fn wake_at(&mut self, at: Instant) {
        self.deadline = Some(self.deadline.map_or(at, |d| d.min(at)));
    }

    /// The earliest deadline of the shard's allocations and peer
    /// connections, found anew after a timeout (a scan, as the sweep is).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let allocations = self.allocations.next_expiry();
        let connections = self.connections.next_deadline();
        match (allocations, connections) {
            (Some(a), Some(c)) => Some(a.min(c)),
            (a, c) => a.or(c),
        }
    }

    /// Deletes an allocation: closes its sockets and peer connections,
    /// returns its quota, and reports its end.
    pub(crate) fn delete(
        &mut self,
        config: &TurnConfig,
        id: AllocationId,
        now: Instant,
        reason: EndReason,
    ) {
        if let Some(allocation) = self.allocations.remove(id) {
            if config.channel_routes {
                for channel in &allocation.channels {
                    if let Some(route) = allocation.route(channel) {
                        self.events.push_back(Event::UnrouteChannel { route });
                    }
                }
            }
            for connection in allocation.connections {
                self.forget_connection(config, connection);
                self.events
                    .push_back(Event::CloseConnection { id: connection });
            }
            for relay in allocation.relays.into_iter().flatten() {
                self.events.push_back(Event::ReleaseRelay {
                    relay: RelayedAddress(relay),
                    protocol: allocation.protocol,
                });
            }
            config.quotas.release(&allocation.quota);
            let lasted = now.saturating_duration_since(allocation.created);
            self.stats.allocations_ended.record(reason);
            self.stats.allocation_duration.record(lasted);
            self.events.push_back(Event::AllocationEnded {
                record: Box::new(AllocationRecord {
                    serial: allocation.serial,
                    user: Arc::clone(&allocation.user.name),
                    client: allocation.five_tuple,
                    relays: allocation.relays,
                    protocol: allocation.protocol,
                }),
                reason,
                lasted,
                traffic: allocation.traffic,
            });
        }
    }

    /// Withdraws every permission and channel the peer policy (just
    /// replaced) refuses, as if they had expired now, and the fast-path
    /// routes of those channels.
    pub(crate) fn withdraw_refused_peers(&mut self, config: &TurnConfig, now: Instant) {
        let policy = &self.peer_policy;
        let events = &mut self.events;
        let mut withdrawn = Vec::new();
        for allocation in self.allocations.values_mut() {
            allocation.withdraw(
                now,
                |ip| policy.check_ip(ip).is_err(),
                |peer| policy.check(peer).is_err(),
                &mut withdrawn,
            );
            if config.channel_routes {
                for channel in &withdrawn {
                    if let Some(route) = allocation.route(channel) {
                        events.push_back(Event::UnrouteChannel { route });
                    }
                }
            }
            withdrawn.clear();
        }
    }

    /// Announces the routes of allocation `id`'s live channels after their
    /// lifetimes changed: all of them, or those to `peer` only, with the
    /// allocation's cap (`max_bps`), which the fast path enforces. None
    /// while a per-user cap applies: its bucket is shared by the user's
    /// allocations on every shard, in the core's memory, where a fast path
    /// cannot take from it, so that data must come through the core (see
    /// [`crate::bandwidth`]).
    pub(crate) fn route_channels(
        &mut self,
        config: &TurnConfig,
        id: AllocationId,
        now: Instant,
        peer: Option<SocketAddr>,
    ) {
        let caps = config.caps();
        if !config.channel_routes || caps.user != 0 {
            return;
        }
        let Some(allocation) = self.allocations.get(id) else {
            return;
        };
        for channel in &allocation.channels {
            if peer.is_some_and(|peer| peer != channel.peer) {
                continue;
            }
            if let (Some(route), Some(until)) = (
                allocation.route(channel),
                allocation.channel_relays_until(channel, now),
            ) {
                self.events.push_back(Event::RouteChannel {
                    route,
                    until,
                    max_bps: caps.allocation,
                });
            }
        }
    }

    /// After a reconfiguration to `config` from caps `was`: withdraws
    /// every fast-path route when a per-user cap starts to apply, so that
    /// the user's data never bypasses the core, and announces them again
    /// when none applies any more, or with the new `max_bps` when only
    /// that changed.
    pub(crate) fn reroute_for_caps(&mut self, config: &TurnConfig, now: Instant, was: Caps) {
        let caps = config.caps();
        if !config.channel_routes || caps == was {
            return;
        }
        if caps.user == 0 {
            let ids: Vec<AllocationId> = self.allocations.iter().map(|(id, _)| id).collect();
            for id in ids {
                self.route_channels(config, id, now, None);
            }
            return;
        }
        if was.user != 0 {
            // Withdrawn already.
            return;
        }
        for (_, allocation) in self.allocations.iter() {
            for channel in &allocation.channels {
                if let Some(route) = allocation.route(channel) {
                    self.events.push_back(Event::UnrouteChannel { route });
                }
            }
        }
    }

    /// Removes a peer connection from the shard's books (the shell closes
    /// it, or has). A Connect still waiting for it is answered with 447.
    pub(crate) fn forget_connection(&mut self, config: &TurnConfig, id: ConnectionId) {
        let Some(connection) = self.connections.remove(id) else {
            return;
        };
        config.quotas.release_connection();
        let Some(allocation) = self.allocations.get_mut(connection.allocation) else {
            return;
        };
        allocation.connections.retain(|&c| c != id);
        if let State::Connecting { answer, .. } = connection.state {
            self.outgoing.push_back(Outgoing::ConnectAnswer {
                to: allocation.five_tuple,
                answer,
                result: Err(447),
            });
        }
    }
}

/// An authenticated TURN request and everything needed to answer it.
pub(crate) struct Request<'a, 'm> {
    pub(crate) now: Instant,
    pub(crate) packet: &'a Packet<'m>,
    pub(crate) message: &'a Message<'m>,
    pub(crate) config: &'a TurnConfig,
    pub(crate) software: Option<&'a str>,
    pub(crate) user: Arc<User>,
    pub(crate) integrity: Integrity,
    /// Strict expiry of a time-limited credential: what is left of it,
    /// which caps the allocation's lifetime.
    pub(crate) credential_left: Option<Duration>,
}

impl Request<'_, '_> {
    pub(crate) fn five_tuple(&self) -> FiveTuple {
        self.packet.five_tuple()
    }

    /// Writes a signed success response with the attributes `fill` adds.
    pub(crate) fn success(
        &self,
        out: &mut [u8],
        fill: impl FnOnce(&mut MessageBuilder<'_>) -> Result<(), EncodeError>,
    ) -> Option<usize> {
        let mut msg = MessageBuilder::new(
            out,
            self.message.message_type().success(),
            self.message.transaction_id(),
        )
        .ok()?;
        fill(&mut msg).ok()?;
        self.finish(msg)
    }

    /// Writes a signed error response (RFC 8656 signs errors to
    /// authenticated requests, so the client can trust them).
    pub(crate) fn error(&self, out: &mut [u8], code: u16) -> Option<usize> {
        self.error_with(out, code, reason_phrase(code), |_| Ok(()))
    }

    /// [`error`](Self::error) with a reason phrase of its own and the
    /// attributes `fill` adds after ERROR-CODE.
    pub(crate) fn error_with(
        &self,
        out: &mut [u8],
        code: u16,
        reason: &str,
        fill: impl FnOnce(&mut MessageBuilder<'_>) -> Result<(), EncodeError>,
    ) -> Option<usize> {
        let mut msg = MessageBuilder::new(
            out,
            self.message.message_type().error(),
            self.message.transaction_id(),
        )
        .ok()?;
        msg.add(&Attribute::ErrorCode(ErrorCode { code, reason }))
            .ok()?;
        fill(&mut msg).ok()?;
        self.finish(msg)
    }

    fn finish(&self, mut msg: MessageBuilder<'_>) -> Option<usize> {
        if let Some(software) = self.software {
            msg.add(&Attribute::Software(software)).ok()?;
        }
        self.integrity.sign(&mut msg).ok()?;
        if self.message.has_fingerprint() {
            msg.add_fingerprint().ok()?;
        }
        Some(msg.finish())
    }

    /// The allocation of this request's 5-tuple, if it belongs to the same
    /// user: `Err(437)` without one, `Err(441)` for another user's (RFC 8656
    /// §5: the 5-tuple and the credentials must both match).
    pub(crate) fn own_allocation(&self, allocations: &Allocations) -> Result<AllocationId, u16> {
        let id = allocations
            .id_by_five_tuple(&self.five_tuple())
            .ok_or(437u16)?;
        match allocations.get(id) {
            Some(a) if a.user.name == self.user.name => Ok(id),
            Some(_) => Err(441),
            None => Err(437),
        }
    }
}

/// Lifetime granted for a requested one (RFC 8656 §7.2 and §8.2): the
/// default when none or less is asked for, capped at the maximum and, in
/// strict mode, at what is left of the credential.
pub(crate) fn granted_lifetime(req: &Request<'_, '_>, requested: Option<u32>) -> Duration {
    let config = req.config;
    let requested = requested.map_or(config.default_lifetime, |s| {
        Duration::from_secs(u64::from(s))
    });
    let granted = requested
        .max(config.default_lifetime)
        .min(config.max_lifetime);
    req.credential_left
        .map_or(granted, |left| granted.min(left))
}

/// Lifetime in whole seconds for the LIFETIME attribute.
pub(crate) fn lifetime_secs(lifetime: Duration) -> u32 {
    u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX)
}

/// Whether `peer` can be relayed from an allocation with these relays.
pub(crate) fn same_family(relays: &[Option<SocketAddr>; 2], peer: IpAddr) -> bool {
    relays[crate::allocation::family_index(peer)].is_some()
}
