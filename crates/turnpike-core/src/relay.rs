//! Relayed transport addresses: the shell's side ([`RelayBinder`], which
//! binds sockets) and the core's side (choosing ports).
//!
//! Binding is the one place the core needs an answer from the operating
//! system before it can reply (the port may be taken by another program, a
//! reservation may have lapsed), so it asks the shell synchronously through
//! this trait; tests supply a fake. Everything else about relay sockets
//! (closing them, setting one aside for EVEN-PORT) is an
//! [`Event`](crate::Event) the shell acts on afterwards.
//!
//! Each shard chooses only from its own share of the port range (port pairs
//! whose index is congruent to the shard number), so shards never race for a
//! port and an even port always comes with its odd neighbour for EVEN-PORT.

use std::io;
use std::time::Instant;

use rand::Rng;
use rand::rngs::SmallRng;

use crate::ids::RelayedAddress;
use crate::packet::FiveTuple;

/// What a relayed address carries (REQUESTED-TRANSPORT).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RelayProtocol {
    /// Datagrams (RFC 8656): a UDP socket.
    Udp,
    /// Peer connections (RFC 6062): a TCP listening socket, from whose
    /// address connections to peers are also opened.
    Tcp,
}

/// How a relayed address is bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayOptions {
    /// UDP socket or TCP listener.
    pub protocol: RelayProtocol,
    /// Set the IP Don't Fragment bit on datagrams to peers (DONT-FRAGMENT).
    pub dont_fragment: bool,
    /// The allocation's 5-tuple, which says how relayed data reaches the
    /// client: its transport, the server address the client talks to
    /// (relayed data leaves from it) and the client's address.
    pub client: FiveTuple,
}

/// Binds relay sockets for the core, synchronously: the answer (bound or
/// not, which address) decides the Allocate's response, so it cannot wait
/// for a later poll. Closing one needs no answer and is an
/// [`Event::ReleaseRelay`](crate::Event::ReleaseRelay).
pub trait RelayBinder {
    /// Binds a relayed address. UDP: a socket whose datagrams go to
    /// [`Server::handle_peer_packet`](crate::Server::handle_peer_packet).
    /// TCP: a listening socket whose incoming connections are announced to
    /// [`Server::peer_connected`](crate::Server::peer_connected), and from
    /// whose address [`Event::OpenConnection`](crate::Event::OpenConnection)s
    /// are opened. Either fails with `AddrInUse` when the port is taken.
    /// The socket is closed on [`Event::ReleaseRelay`](crate::Event::ReleaseRelay).
    fn bind(&mut self, relay: RelayedAddress, options: RelayOptions) -> io::Result<()>;
    /// Binds a UDP relayed address for no allocation yet and keeps it aside
    /// under `token` until `until` (EVEN-PORT with the R bit): the client's
    /// next Allocate, which may land on another worker, takes it over.
    /// Fails with `AddrInUse` when the port is taken. An unclaimed
    /// reservation is closed at `until`.
    fn reserve(&mut self, relay: RelayedAddress, token: [u8; 8], until: Instant) -> io::Result<()>;
    /// Takes over the socket reserved under `token` (on any worker) for the
    /// allocation `options` describes; `None` if the token is unknown or
    /// expired.
    fn take_reserved(
        &mut self,
        token: [u8; 8],
        now: Instant,
        options: RelayOptions,
    ) -> Option<RelayedAddress>;
}

/// A [`RelayBinder`] that cannot bind anything: for a STUN-only server.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoRelays;

impl RelayBinder for NoRelays {
    fn bind(&mut self, _: RelayedAddress, _: RelayOptions) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "TURN is disabled",
        ))
    }
    fn reserve(&mut self, _: RelayedAddress, _: [u8; 8], _: Instant) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "TURN is disabled",
        ))
    }
    fn take_reserved(&mut self, _: [u8; 8], _: Instant, _: RelayOptions) -> Option<RelayedAddress> {
        None
    }
}

/// Chooses ports from a shard's share of the relay port range.
#[derive(Debug)]
pub(crate) struct PortPicker {
    /// First and last port pair index (port / 2) owned by this shard.
    first_pair: u32,
    pairs: u32,
    stride: u32,
    min: u16,
    max: u16,
}

impl PortPicker {
    pub(crate) fn new(min: u16, max: u16, shard: usize, shards: usize) -> Self {
        let stride = u32::try_from(shards.max(1)).unwrap_or(1);
        let shard = u32::try_from(shard).unwrap_or(0) % stride;
        let lo = u32::from(min) / 2;
        let hi = u32::from(max) / 2;
        // First pair index >= lo that belongs to this shard.
        let first_pair = lo + (shard + stride - lo % stride) % stride;
        let pairs = if first_pair > hi {
            0
        } else {
            (hi - first_pair) / stride + 1
        };
        PortPicker {
            first_pair,
            pairs,
            stride,
            min,
            max,
        }
    }

    /// A random port of this shard's share; even if `even`. `None` if the
    /// share is empty.
    pub(crate) fn pick(&self, rng: &mut SmallRng, even: bool) -> Option<u16> {
        for _ in 0..8 {
            if self.pairs == 0 {
                return None;
            }
            let pair = self.first_pair + rng.random_range(0..self.pairs) * self.stride;
            let odd = if even { 0 } else { rng.random_range(0..2) };
            let Ok(port) = u16::try_from(pair * 2 + odd) else {
                continue;
            };
            // The range ends may cut a pair in half.
            let needs = if even {
                port.checked_add(1)
            } else {
                Some(port)
            };
            if port >= self.min && needs.is_some_and(|p| p <= self.max) {
                return Some(port);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn shards_split_the_range_without_overlap() {
        let mut rng = SmallRng::seed_from_u64(1);
        let pickers: Vec<_> = (0..3)
            .map(|s| PortPicker::new(50000, 50099, s, 3))
            .collect();
        let mut owner = std::collections::HashMap::new();
        for (s, p) in pickers.iter().enumerate() {
            for _ in 0..2000 {
                let port = p.pick(&mut rng, false).unwrap();
                assert!((50000..=50099).contains(&port));
                assert_eq!(
                    *owner.entry(port / 2).or_insert(s),
                    s,
                    "pair {} shared",
                    port / 2
                );
                let even = p.pick(&mut rng, true).unwrap();
                assert_eq!(even % 2, 0);
                assert!(even < 50099);
            }
        }
        assert_eq!(owner.len(), 50, "every pair is used by some shard");
    }

    #[test]
    fn tiny_and_empty_ranges() {
        let mut rng = SmallRng::seed_from_u64(2);
        let p = PortPicker::new(61001, 61001, 0, 1);
        assert_eq!(p.pick(&mut rng, false), Some(61001));
        assert_eq!(p.pick(&mut rng, true), None);
        let p = PortPicker::new(61000, 61001, 1, 2);
        assert_eq!(p.pick(&mut rng, false), None);
    }
}
