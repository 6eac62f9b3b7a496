//! Peer connections of TCP allocations (RFC 6062): their identifiers, their
//! states and timers, and the answers the core owes the client once the
//! shell has opened a connection.
//!
//! A connection is born by a client's Connect (the shell opens it from the
//! relayed address) or by a peer connecting to the relayed address (the
//! client is told with a ConnectionAttempt). Either way it then waits,
//! at most [`BIND_TIMEOUT`], for the client's ConnectionBind on a new
//! connection of its own; after that the shell relays raw bytes between the
//! two and the core only keeps the record, so closing the allocation can
//! close the pair and the limits stay counted.
//!
//! The bytes never pass through the core: a TCP relay is a byte pipe the
//! shell runs with the kernel's flow control, not a sequence of messages.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::Rng;
use rustc_hash::FxHashMap;
use turnpike_codec::TransactionId;

use crate::auth::Integrity;
use crate::ids::{AllocationId, ConnectionId};
use crate::packet::FiveTuple;

/// How long the server tries to reach a peer for a Connect before answering
/// 447 (RFC 6062 §5.2: at least 30 seconds).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection waits for its ConnectionBind (RFC 6062 §5.2, §5.3:
/// 30 seconds, then it is closed).
pub const BIND_TIMEOUT: Duration = Duration::from_secs(30);

/// What the answer to a Connect needs once the shell reports the outcome:
/// it is signed the way the request was.
#[derive(Clone, Debug)]
pub(crate) struct PendingAnswer {
    pub(crate) transaction_id: TransactionId,
    pub(crate) integrity: Integrity,
    pub(crate) fingerprint: bool,
}

#[derive(Debug)]
pub(crate) enum State {
    /// The shell is connecting to the peer; the Connect is answered when it
    /// reports, or with 447 at the deadline.
    Connecting {
        deadline: Instant,
        answer: Box<PendingAnswer>,
    },
    /// Established; waiting for the client's ConnectionBind until the deadline.
    Unbound { deadline: Instant },
    /// Bound to a data connection of the client: bytes flow in the shell.
    Bound,
}

/// One peer connection.
#[derive(Debug)]
pub(crate) struct Connection {
    pub(crate) allocation: AllocationId,
    pub(crate) peer: SocketAddr,
    pub(crate) state: State,
}

/// Something the core owes a client's control connection, rendered by
/// [`Server::poll_output`](crate::Server::poll_output).
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// The answer to a Connect: its CONNECTION-ID, or an error code.
    ConnectAnswer {
        to: FiveTuple,
        answer: Box<PendingAnswer>,
        result: Result<ConnectionId, u16>,
    },
    /// A ConnectionAttempt indication: a peer connected to the relayed address.
    Attempt {
        to: FiveTuple,
        id: ConnectionId,
        peer: SocketAddr,
    },
}

/// A shard's peer connections.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    by_id: FxHashMap<ConnectionId, Connection>,
}

impl Connections {
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Adds a connection under a fresh identifier.
    pub(crate) fn insert(
        &mut self,
        rng: &mut impl Rng,
        shard: (usize, usize),
        connection: Connection,
    ) -> ConnectionId {
        let mut id = ConnectionId::random(rng, shard.0, shard.1);
        while self.by_id.contains_key(&id) {
            id = ConnectionId::random(rng, shard.0, shard.1);
        }
        self.by_id.insert(id, connection);
        id
    }

    pub(crate) fn get(&self, id: ConnectionId) -> Option<&Connection> {
        self.by_id.get(&id)
    }

    pub(crate) fn get_mut(&mut self, id: ConnectionId) -> Option<&mut Connection> {
        self.by_id.get_mut(&id)
    }

    pub(crate) fn remove(&mut self, id: ConnectionId) -> Option<Connection> {
        self.by_id.remove(&id)
    }

    /// The earliest Connect or ConnectionBind deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.by_id
            .values()
            .filter_map(|c| match c.state {
                State::Connecting { deadline, .. } | State::Unbound { deadline } => Some(deadline),
                State::Bound => None,
            })
            .min()
    }

    /// Connections whose Connect or ConnectionBind deadline has passed.
    pub(crate) fn overdue(&self, now: Instant) -> Vec<ConnectionId> {
        self.by_id
            .iter()
            .filter(|(_, c)| match c.state {
                State::Connecting { deadline, .. } | State::Unbound { deadline } => deadline <= now,
                State::Bound => false,
            })
            .map(|(&id, _)| id)
            .collect()
    }
}
