//! Identifiers and addresses named for their role.
//!
//! A bare `SocketAddr` says nothing about whose address it is; the core's
//! interface passes the roles instead, as Firezone's relay does: the
//! client's side is a [`FiveTuple`](crate::FiveTuple), a peer is a
//! [`PeerSocket`], an allocation's own address is a [`RelayedAddress`].
//! Mixing them up is then a type error, not a packet sent the wrong way.

use std::fmt;
use std::net::SocketAddr;

use rand::Rng;
use turnpike_codec::{AttrType, Attribute, Class, Header, Message, Method};

/// Identifies an allocation within its shard (its slot in the table).
pub(crate) type AllocationId = u32;

/// A peer's transport address: where relayed data goes to, or came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerSocket(pub SocketAddr);

/// A relayed transport address as bound on this host (RFC 8656 §2): the
/// socket the shell opened for an allocation. What clients are told
/// (XOR-RELAYED-ADDRESS) may differ behind 1:1 NAT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RelayedAddress(pub SocketAddr);

impl fmt::Display for PeerSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for RelayedAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

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
    pub(crate) fn random(rng: &mut impl Rng, index: usize, count: usize) -> ConnectionId {
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
