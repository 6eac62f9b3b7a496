//! Connect (RFC 6062 §5.2): a TCP allocation's client asks the server to
//! open a connection from the relayed address to a peer; and the other
//! direction, a peer connecting to the relayed address (§5.3), which the
//! client learns of through a ConnectionAttempt indication.
//!
//! The peer address goes through the same policy as every UDP path
//! ([`PeerPolicy::check`](crate::PeerPolicy::check): deny list, the
//! server's own sockets, reserved ranges in every IPv6 disguise) before the
//! shell is asked to connect anywhere: the Connect path is where TURN
//! servers have been turned into SSRF proxies.

use std::time::Instant;

use rand::RngCore;
use turnpike_codec::{
    Attribute, Class, ErrorCode, MessageBuilder, MessageType, Method, TransactionId,
};

use super::{Request, TurnState};
use crate::config::TurnConfig;
use crate::connection::{
    BIND_TIMEOUT, CONNECT_TIMEOUT, Connection, Outgoing, PendingAnswer, State,
};
use crate::ids::{ConnectionId, PeerSocket, RelayedAddress};
use crate::output::{Destination, Event, Transmit};
use crate::relay::RelayProtocol;
use crate::response::reason_phrase;

pub(crate) fn handle(req: &Request<'_, '_>, turn: &mut TurnState, out: &mut [u8]) -> Option<usize> {
    let id = match req.own_allocation(&turn.allocations) {
        Ok(id) => id,
        Err(code) => return req.error(out, code),
    };
    let mut peer = None;
    for attr in req.message.decoded() {
        match attr {
            Ok(Attribute::XorPeerAddress(p)) => peer = peer.or(Some(p)),
            Ok(_) => {}
            Err(_) => return req.error(out, 400),
        }
    }
    let Some(peer) = peer else {
        return req.error(out, 400);
    };
    let config = req.config;
    let allocation = turn.allocations.get(id)?;
    // A Connect on a UDP allocation is a client error (RFC 6062 §5.2).
    if allocation.protocol != RelayProtocol::Tcp {
        return req.error(out, 400);
    }
    let Some(relay) = allocation.relay_for(peer.ip()) else {
        return req.error(out, 443);
    };
    if turn.peer_policy.check(peer).is_err() {
        turn.stats.peers_refused += 1;
        return req.error(out, 403);
    }
    let exists = allocation
        .connections
        .iter()
        .filter_map(|&c| turn.connections.get(c))
        .any(|c| c.peer == peer);
    if exists {
        return req.error(out, 446);
    }
    if allocation.connections.len() >= config.max_connections_per_allocation
        || !config.quotas.acquire_connection(config.max_connections)
    {
        return req.error(out, 508);
    }
    let answer = Box::new(PendingAnswer {
        transaction_id: req.message.transaction_id(),
        integrity: req.integrity.clone(),
        fingerprint: req.message.has_fingerprint(),
    });
    let connection = Connection {
        allocation: id,
        peer,
        state: State::Connecting {
            deadline: req.now + CONNECT_TIMEOUT,
            answer,
        },
    };
    let conn_id = turn
        .connections
        .insert(&mut turn.secure_rng, turn.shard, connection);
    turn.wake_at(req.now + CONNECT_TIMEOUT);
    // The allocation was found above and nothing removed it since.
    turn.allocations.get_mut(id)?.connections.push(conn_id);
    turn.events.push_back(Event::OpenConnection {
        id: conn_id,
        relay: RelayedAddress(relay),
        peer: PeerSocket(peer),
    });
    // Answered when the shell reports how the connection went.
    None
}

/// The shell's report on an [`Event::OpenConnection`]: established or not.
/// The Connect is answered (through `outgoing`) either way.
pub(crate) fn finished(
    turn: &mut TurnState,
    config: &TurnConfig,
    now: Instant,
    id: ConnectionId,
    established: bool,
) {
    let Some(connection) = turn.connections.get_mut(id) else {
        return;
    };
    if !matches!(connection.state, State::Connecting { .. }) {
        return;
    }
    if !established {
        // Answers 447; the shell has nothing left to close.
        turn.forget_connection(config, id);
        return;
    }
    let state = std::mem::replace(
        &mut connection.state,
        State::Unbound {
            deadline: now + BIND_TIMEOUT,
        },
    );
    let allocation = connection.allocation;
    turn.stats.peer_connections_connected += 1;
    turn.wake_at(now + BIND_TIMEOUT);
    let (State::Connecting { answer, .. }, Some(allocation)) =
        (state, turn.allocations.get(allocation))
    else {
        return;
    };
    turn.outgoing.push_back(Outgoing::ConnectAnswer {
        to: allocation.five_tuple,
        answer,
        result: Ok(id),
    });
}

/// A peer connected to the relayed address `relay` (RFC 6062 §5.3): a new
/// connection for the client to bind if the peer has a permission, `None`
/// (the shell closes it) otherwise.
pub(crate) fn from_peer(
    turn: &mut TurnState,
    config: &TurnConfig,
    now: Instant,
    relay: RelayedAddress,
    peer: PeerSocket,
) -> Option<ConnectionId> {
    let (relay, peer) = (relay.0, peer.0);
    let id = turn.allocations.id_by_relay(RelayProtocol::Tcp, relay)?;
    let allocation = turn.allocations.get(id)?;
    if !allocation.has_permission(peer.ip(), now) {
        return None;
    }
    let taken = allocation
        .connections
        .iter()
        .filter_map(|&c| turn.connections.get(c))
        .any(|c| c.peer == peer);
    if taken
        || allocation.connections.len() >= config.max_connections_per_allocation
        || !config.quotas.acquire_connection(config.max_connections)
    {
        return None;
    }
    let to = allocation.five_tuple;
    let connection = Connection {
        allocation: id,
        peer,
        state: State::Unbound {
            deadline: now + BIND_TIMEOUT,
        },
    };
    let conn_id = turn
        .connections
        .insert(&mut turn.secure_rng, turn.shard, connection);
    turn.allocations.get_mut(id)?.connections.push(conn_id);
    turn.stats.peer_connections_accepted += 1;
    turn.wake_at(now + BIND_TIMEOUT);
    turn.outgoing.push_back(Outgoing::Attempt {
        to,
        id: conn_id,
        peer,
    });
    Some(conn_id)
}

/// Writes what the core owes a control connection: the deferred answer to
/// a Connect, or a ConnectionAttempt indication.
pub(crate) fn render(
    outgoing: Outgoing,
    software: Option<&str>,
    turn: &mut TurnState,
    out: &mut [u8],
) -> Option<Transmit> {
    let (to, len) = match outgoing {
        Outgoing::ConnectAnswer { to, answer, result } => {
            let kind = MessageType::new(Method::CONNECT, Class::Request);
            let kind = if result.is_ok() {
                kind.success()
            } else {
                kind.error()
            };
            let mut msg = MessageBuilder::new(out, kind, answer.transaction_id).ok()?;
            match result {
                Ok(id) => msg.add(&Attribute::ConnectionId(id.0)).ok()?,
                Err(code) => msg
                    .add(&Attribute::ErrorCode(ErrorCode {
                        code,
                        reason: reason_phrase(code),
                    }))
                    .ok()?,
            }
            if let Some(software) = software {
                msg.add(&Attribute::Software(software)).ok()?;
            }
            answer.integrity.sign(&mut msg).ok()?;
            if answer.fingerprint {
                msg.add_fingerprint().ok()?;
            }
            (to, msg.finish())
        }
        Outgoing::Attempt { to, id, peer } => {
            let mut tid = [0u8; 12];
            turn.secure_rng.fill_bytes(&mut tid);
            let kind = MessageType::new(Method::CONNECTION_ATTEMPT, Class::Indication);
            let mut msg = MessageBuilder::new(out, kind, TransactionId::Rfc5389(tid)).ok()?;
            msg.add(&Attribute::XorPeerAddress(peer)).ok()?;
            msg.add(&Attribute::ConnectionId(id.0)).ok()?;
            (to, msg.finish())
        }
    };
    Some(Transmit {
        to: Destination::Client(to),
        len,
    })
}
