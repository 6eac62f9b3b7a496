//! What the core asks of the shell, all through one door:
//! [`Server::poll_output`](crate::Server::poll_output).
//!
//! After every input (a client's packet, a peer's datagram, a timeout, one
//! of the shell's reports) the shell polls until it gets
//! [`Output::Timeout`]. Each [`Output::Transmit`] names where its bytes go
//! by role ([`Destination`]), so the shell never works out a direction by
//! comparing addresses; each [`Output::Event`] is work only the shell can
//! do (a database lookup, a TCP connection, a socket to close, a fast-path
//! route); the final timeout says when the core next needs the clock.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ids::{ConnectionId, PeerSocket, RelayedAddress};
use crate::packet::{FiveTuple, Transport};
use crate::relay::RelayProtocol;
use crate::stats::{EndReason, Traffic};

/// The next thing the shell must do for the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send a message.
    Transmit(Transmit),
    /// Act on something outside the packet path.
    Event(Event),
    /// Nothing more to do until new input, or until this instant, when
    /// [`Server::handle_timeout`](crate::Server::handle_timeout) is due
    /// (`None`: no timer is pending).
    Timeout(Option<Instant>),
}

/// A message to send: the first `len` bytes of a buffer the core wrote.
///
/// The answer to an input is written into the buffer passed with that input
/// (so relayed data lands straight in a send batch); anything else the core
/// owes is written into the buffer passed to `poll_output`. Either way the
/// bytes are valid until the next call on the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where it goes.
    pub to: Destination,
    /// How many bytes to send.
    pub len: usize,
}

/// Where a [`Transmit`] goes, by role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// To a client, on the 5-tuple's transport, from the server address of
    /// the 5-tuple: back on the connection or listener its request came in
    /// on. (With RFC 5780 RESPONSE-PORT the client port differs from the
    /// request's.)
    Client(FiveTuple),
    /// To a client over UDP from another of the server's addresses: an
    /// RFC 5780 CHANGE-REQUEST answer. The 5-tuple's server address is the
    /// alternate address to send from.
    Alternate(FiveTuple),
    /// Relayed data to a peer, from an allocation's relayed address.
    Peer {
        /// The relay socket to send from.
        relay: RelayedAddress,
        /// The peer.
        peer: PeerSocket,
        /// Send with the DF bit set (IPv4) or unfragmented (IPv6): data of
        /// a Send indication, or of an allocation whose Allocate, carried
        /// DONT-FRAGMENT (RFC 8656 §7.2, §11.2, §14). Larger than the path
        /// MTU, it is dropped rather than fragmented.
        dont_fragment: bool,
    },
}

impl Transmit {
    /// An answer of `len` bytes to `packet`, from the address it arrived on.
    pub(crate) fn reply(packet: &crate::Packet<'_>, len: usize) -> Transmit {
        Transmit {
            to: Destination::Client(packet.five_tuple()),
            len,
        }
    }

    /// The transport it leaves on (UDP towards peers).
    pub fn transport(&self) -> Transport {
        match self.to {
            Destination::Client(t) | Destination::Alternate(t) => t.transport,
            Destination::Peer { .. } => Transport::Udp,
        }
    }

    /// The local address it leaves from.
    pub fn source(&self) -> SocketAddr {
        match self.to {
            Destination::Client(t) | Destination::Alternate(t) => t.server,
            Destination::Peer { relay, .. } => relay.0,
        }
    }

    /// The address it goes to.
    pub fn destination(&self) -> SocketAddr {
        match self.to {
            Destination::Client(t) | Destination::Alternate(t) => t.client,
            Destination::Peer { peer, .. } => peer.0,
        }
    }

    /// Whether it must not be fragmented (only data to peers may ask).
    pub fn dont_fragment(&self) -> bool {
        matches!(
            self.to,
            Destination::Peer {
                dont_fragment: true,
                ..
            }
        )
    }
}

/// Work only the shell can do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A request named a user this shard has no current keys for: look it
    /// up (asynchronously) and call
    /// [`Server::resolve_credentials`](crate::Server::resolve_credentials).
    /// The request is held meanwhile and answered through `poll_output`
    /// once the lookup is resolved.
    NeedCredentials {
        /// The USERNAME.
        username: Box<str>,
    },
    /// Close the socket of a relayed address: its allocation ended (a TCP
    /// relay's peer connections are closed by their own
    /// [`Event::CloseConnection`]s).
    ReleaseRelay {
        /// The relayed address, as bound.
        relay: RelayedAddress,
        /// Which socket: UDP, or the TCP listener.
        protocol: RelayProtocol,
    },
    /// A Connect (RFC 6062) was accepted: open a TCP connection from the
    /// relayed address `relay` (the TCP relay's own port) to `peer`, then
    /// call [`Server::connect_finished`](crate::Server::connect_finished).
    /// Nothing is read from it until [`Event::ConnectionBound`]: until then
    /// the kernel's receive buffer holds what the peer sends, and TCP flow
    /// control bounds it.
    OpenConnection {
        /// The connection's CONNECTION-ID.
        id: ConnectionId,
        /// The TCP allocation's relayed address.
        relay: RelayedAddress,
        /// Where to connect.
        peer: PeerSocket,
    },
    /// The client's data connection `client` was bound to the peer
    /// connection `id` (the success answer is the transmit polled just
    /// before): from now on, relay bytes between the two. When either side
    /// closes, close the other and call
    /// [`Server::peer_connection_closed`](crate::Server::peer_connection_closed).
    ConnectionBound {
        /// The peer connection.
        id: ConnectionId,
        /// The data connection's 5-tuple.
        client: FiveTuple,
    },
    /// Close the peer connection `id` and, if bound, its data connection:
    /// its allocation ended, or it waited too long to be bound.
    CloseConnection {
        /// The peer connection.
        id: ConnectionId,
    },
    /// A channel relays (it was bound, or its lifetime, its peer's
    /// permission's or its allocation's changed): a fast path may carry its
    /// ChannelData and its peer's datagrams until `until`, as the core
    /// would. Only with
    /// [`TurnConfig::channel_routes`](crate::TurnConfig::channel_routes).
    /// Past `until` the packets must reach the core again, which decides; a
    /// later event may move `until` either way.
    ///
    /// The fast path must hold the allocation's data to `max_bps` itself,
    /// in a bucket of its own that all the allocation's routes share (see
    /// [`crate::bandwidth`]); a reload that changes the cap announces the
    /// routes again with the new one. No route is announced while a
    /// per-user cap (`user_max_bps`) applies.
    RouteChannel {
        /// The route.
        route: ChannelRoute,
        /// When the channel, the peer's permission or the allocation lapses.
        until: Instant,
        /// The allocation's bandwidth cap, payload bytes per second each
        /// way ([`TurnConfig::max_bps`](crate::TurnConfig::max_bps)); 0 =
        /// none.
        max_bps: u64,
    },
    /// The channel's route is gone (its allocation was deleted, or its
    /// binding ended its cool-down): forget it.
    UnrouteChannel {
        /// The route, as announced.
        route: ChannelRoute,
    },
    /// An allocation was created (for accounting). Its answer is the
    /// transmit polled before.
    AllocationCreated(Box<AllocationRecord>),
    /// An allocation ended (for accounting); the events that close its
    /// sockets, connections and routes came before this one.
    AllocationEnded {
        /// Which.
        record: Box<AllocationRecord>,
        /// Why.
        reason: EndReason,
        /// How long it lived.
        lasted: Duration,
        /// What the core relayed for it (a fast path adds its own).
        traffic: Traffic,
    },
}

/// What accounting needs to know about an allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocationRecord {
    /// Its serial: unique for the life of the process.
    pub serial: u64,
    /// The USERNAME it was made with.
    pub user: Arc<str>,
    /// The client's 5-tuple.
    pub client: FiveTuple,
    /// Relayed addresses as bound (index 0 IPv4, 1 IPv6).
    pub relays: [Option<SocketAddr>; 2],
    /// UDP or TCP (RFC 6062).
    pub protocol: RelayProtocol,
}

/// A channel binding as a relay fast path outside the core sees it (see
/// [`TurnConfig::channel_routes`](crate::TurnConfig::channel_routes)):
/// ChannelData on `channel` from the client of `client` goes to `peer` from
/// `relay`, and datagrams from `peer` to `relay` go to the client as
/// ChannelData on `channel`. Only allocations whose client and relay are
/// both UDP have routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelRoute {
    /// The allocation's 5-tuple.
    pub client: FiveTuple,
    /// The channel number.
    pub channel: u16,
    /// The relayed address of the peer's family, as bound.
    pub relay: RelayedAddress,
    /// The peer.
    pub peer: PeerSocket,
    /// Datagrams to the peer carry the Don't Fragment bit.
    pub dont_fragment: bool,
}
