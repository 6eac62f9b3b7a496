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
use turnpike_codec::{AttrType, Attribute, Class, Header, Message, Method, TransactionId};

use crate::allocation::{AllocationId, FiveTuple};
use crate::auth::Integrity;

/// How long the server tries to reach a peer for a Connect before answering
/// 447 (RFC 6062 §5.2: at least 30 seconds).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection waits for its ConnectionBind (RFC 6062 §5.2, §5.3:
/// 30 seconds, then it is closed).
pub const BIND_TIMEOUT: Duration = Duration::from_secs(30);

/// A CONNECTION-ID (RFC 6062 §6.2.1). Random, so a client cannot guess
/// another's, and congruent to the shard number modulo the shard count, so
/// the shell can route a ConnectionBind that arrives on any worker to the
/// shard holding the connection ([`ConnectionId::shard`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u32);

impl ConnectionId {
    /// The shard that holds this connection among `count` shards.
    pub fn shard(self, count: usize) -> usize {
        // The remainder is below `count`, so it fits a usize.
        (self.0 % shard_count(count)) as usize
    }

    /// The CONNECTION-ID of a ConnectionBind request, if `data` is one: the
    /// shell's routing question, answered before the message reaches a shard.
    pub fn of_connection_bind(data: &[u8]) -> Option<ConnectionId> {
        // The header alone rules out every other message, before parsing.
        let kind = Header::peek(data)?.message_type;
        if kind.method != Method::CONNECTION_BIND || kind.class != Class::Request {
            return None;
        }
        match Message::parse(data).ok()?.get(AttrType::CONNECTION_ID)? {
            Ok(Attribute::ConnectionId(id)) => Some(ConnectionId(id)),
            _ => None,
        }
    }

    /// A fresh random identifier of shard `index` among `count`, from a
    /// cryptographically secure `rng`: a client that guessed another's
    /// could bind its peer connection.
    fn random(rng: &mut impl Rng, index: usize, count: usize) -> ConnectionId {
        let count = shard_count(count);
        let index = u32::try_from(index).unwrap_or(0) % count;
        loop {
            let r: u32 = rng.random();
            let id = (r - r % count).checked_add(index);
            // Zero is avoided: some clients treat it as "no connection".
            if let Some(id) = id.filter(|&id| id != 0) {
                return ConnectionId(id);
            }
        }
    }
}

/// The shard count as a divisor: at least 1.
fn shard_count(count: usize) -> u32 {
    u32::try_from(count.max(1)).unwrap_or(u32::MAX)
}

impl std::fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

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
/// [`Server::poll_transmit`](crate::Server::poll_transmit).
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn identifiers_name_their_shard() {
        let mut rng = StdRng::seed_from_u64(7);
        for count in [1, 2, 3, 7, 64] {
            for index in 0..count {
                for _ in 0..200 {
                    let id = ConnectionId::random(&mut rng, index, count);
                    assert_ne!(id.0, 0);
                    assert_eq!(id.shard(count), index);
                }
            }
        }
    }
}
