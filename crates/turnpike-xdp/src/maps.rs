//! The program's map layouts, mirrored from `bpf/fast_path.bpf.c` (keep the
//! two in step; `tests/program.rs` fails if they drift). One Rust type per
//! pair of C structs, generic over the address length: `N = 4` is IPv4
//! (`struct client_key`, ...), `N = 16` IPv6 (`struct client_key6`, ...).
//! Addresses, ports and channel numbers are in network byte order, as on
//! the wire.

use std::net::{IpAddr, SocketAddr};

/// `ROUTE_DONT_FRAGMENT` in `struct route`'s flags.
pub(crate) const ROUTE_DONT_FRAGMENT: u16 = 1;

/// `struct client_key`: ChannelData from a client's 5-tuple on a channel.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClientKey<const N: usize> {
    pub(crate) client_ip: [u8; N],
    pub(crate) server_ip: [u8; N],
    pub(crate) client_port: [u8; 2],
    pub(crate) server_port: [u8; 2],
    pub(crate) channel: [u8; 2],
    pub(crate) pad: [u8; 2],
}

/// `struct peer_key`: a datagram from a peer to a relayed address.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct PeerKey<const N: usize> {
    pub(crate) peer_ip: [u8; N],
    pub(crate) relay_ip: [u8; N],
    pub(crate) peer_port: [u8; 2],
    pub(crate) relay_port: [u8; 2],
}

/// `struct route`: both sides of a channel, when it lapses
/// (`CLOCK_MONOTONIC` nanoseconds), its allocation's bandwidth cap (bytes
/// per second, 0 = none), and what the entry holding it relayed.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Route<const N: usize> {
    pub(crate) client_ip: [u8; N],
    pub(crate) server_ip: [u8; N],
    pub(crate) relay_ip: [u8; N],
    pub(crate) peer_ip: [u8; N],
    pub(crate) client_port: [u8; 2],
    pub(crate) server_port: [u8; 2],
    pub(crate) relay_port: [u8; 2],
    pub(crate) peer_port: [u8; 2],
    pub(crate) channel: [u8; 2],
    pub(crate) flags: u16,
    pub(crate) pad: u32,
    pub(crate) until_ns: u64,
    pub(crate) max_bps: u64,
    pub(crate) traffic: EntryTraffic,
}

/// `struct route_traffic`: what one map entry relayed, in its own
/// direction (to the peer in a client-side entry, to the client in a
/// peer-side one). The program adds to it; the server only carries it over
/// a rewrite and reads it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct EntryTraffic {
    /// Datagrams relayed.
    pub(crate) packets: u64,
    /// Payload bytes, without the ChannelData header.
    pub(crate) bytes: u64,
}

/// A route's two keys and its value.
pub(crate) type Entries<const N: usize> = (ClientKey<N>, PeerKey<N>, Route<N>);

impl<const N: usize> Route<N> {
    /// Whether `other` is the same channel between the same four addresses
    /// (whatever its lapse time, cap and flags).
    pub(crate) fn same_route(&self, other: &Route<N>) -> bool {
        (
            self.client_ip,
            self.server_ip,
            self.relay_ip,
            self.peer_ip,
            [self.client_port, self.server_port],
            [self.relay_port, self.peer_port],
            self.channel,
        ) == (
            other.client_ip,
            other.server_ip,
            other.relay_ip,
            other.peer_ip,
            [other.client_port, other.server_port],
            [other.relay_port, other.peer_port],
            other.channel,
        )
    }

    /// The entries for a channel between `[client, server, relay, peer]`
    /// (`until_ns` and the traffic left 0).
    pub(crate) fn entries(
        ips: [[u8; N]; 4],
        addrs: [SocketAddr; 4],
        channel: u16,
        dont_fragment: bool,
    ) -> Entries<N> {
        let [client_ip, server_ip, relay_ip, peer_ip] = ips;
        let [client_port, server_port, relay_port, peer_port] =
            addrs.map(|a| a.port().to_be_bytes());
        let channel = channel.to_be_bytes();
        let route = Route {
            client_ip,
            server_ip,
            relay_ip,
            peer_ip,
            client_port,
            server_port,
            relay_port,
            peer_port,
            channel,
            flags: if dont_fragment {
                ROUTE_DONT_FRAGMENT
            } else {
                0
            },
            pad: 0,
            until_ns: 0,
            max_bps: 0,
            traffic: EntryTraffic::default(),
        };
        let client = ClientKey {
            client_ip,
            server_ip,
            client_port,
            server_port,
            channel,
            pad: [0; 2],
        };
        let peer = PeerKey {
            peer_ip,
            relay_ip,
            peer_port,
            relay_port,
        };
        (client, peer, route)
    }
}

/// `struct bucket_key`'s `direction`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Direction {
    ToPeer = 0,
    ToClient = 1,
}

impl Direction {
    pub(crate) const BOTH: [Direction; 2] = [Direction::ToPeer, Direction::ToClient];
}

/// `struct bucket_key`: an allocation's bandwidth bucket in one direction,
/// keyed by its 5-tuple (the client's side of its routes; an IPv4 address
/// in the first 4 bytes of its 16).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct BucketKey {
    pub(crate) client_ip: [u8; 16],
    pub(crate) server_ip: [u8; 16],
    pub(crate) client_port: [u8; 2],
    pub(crate) server_port: [u8; 2],
    pub(crate) family: u16,
    pub(crate) direction: u16,
}

impl BucketKey {
    /// The key of `route`'s allocation in `direction`.
    pub(crate) fn of<const N: usize>(route: &Route<N>, direction: Direction) -> Self {
        let widen = |ip: [u8; N]| {
            let mut wide = [0; 16];
            wide[..N].copy_from_slice(&ip);
            wide
        };
        BucketKey {
            client_ip: widen(route.client_ip),
            server_ip: widen(route.server_ip),
            client_port: route.client_port,
            server_port: route.server_port,
            family: if N == 4 { AF_INET } else { AF_INET6 },
            direction: direction as u16,
        }
    }

    /// The same allocation's key in `direction`.
    pub(crate) fn toward(self, direction: Direction) -> Self {
        BucketKey {
            direction: direction as u16,
            ..self
        }
    }
}

/// The families' `AF_*` numbers, as the program writes them in keys.
const AF_INET: u16 = libc::AF_INET as u16;
const AF_INET6: u16 = libc::AF_INET6 as u16;

/// `struct bucket`: the spin lock (which the kernel leaves alone when the
/// server writes the entry) and the GCRA drain time; written as zeros, a
/// full bucket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Bucket {
    pub(crate) lock: u32,
    pub(crate) pad: u32,
    pub(crate) drained_at_ns: u64,
}

/// An IPv4 address's octets, including an IPv4-mapped IPv6 one (as a
/// dual-stack socket reports an IPv4 client: the wire carries IPv4).
pub(crate) fn v4(addr: SocketAddr) -> Option<[u8; 4]> {
    match addr.ip() {
        IpAddr::V4(ip) => Some(ip.octets()),
        IpAddr::V6(ip) => Some(ip.to_ipv4_mapped()?.octets()),
    }
}

/// An IPv6 address's octets, unless it is IPv4 (or IPv4-mapped).
pub(crate) fn v6(addr: SocketAddr) -> Option<[u8; 16]> {
    match addr.ip() {
        IpAddr::V6(ip) if ip.to_ipv4_mapped().is_none() => Some(ip.octets()),
        _ => None,
    }
}

/// `struct config`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    pub(crate) loopback_ifindex: u32,
    pub(crate) relay_port_min: u16,
    pub(crate) relay_port_max: u16,
}

/// `struct counters`: what the program did, per CPU (summed by
/// [`FastPath::counters`](crate::FastPath::counters)).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// ChannelData relayed to peers.
    pub to_peer_packets: u64,
    /// Their payload bytes.
    pub to_peer_bytes: u64,
    /// Peer datagrams relayed to clients as ChannelData.
    pub to_client_packets: u64,
    /// Their payload bytes.
    pub to_client_bytes: u64,
    /// Packets of a route left to the stack: route past its time, padding,
    /// too big for the MTU, next hop unknown, a capped route without its
    /// bandwidth bucket.
    pub passed: u64,
    /// Packets dropped over their allocation's bandwidth cap
    /// (`turn.max_bps`).
    pub capped: u64,
}

// SAFETY: plain `repr(C)` structs of integers and byte arrays (and, in
// `Route`, `EntryTraffic`: two `u64`s) with no implicit padding for the
// two address lengths used (4 and 16: every field is naturally aligned at
// its offset and the sizes are multiples of the alignment, asserted
// below), so every byte pattern is valid.
unsafe impl<const N: usize> aya::Pod for ClientKey<N> {}
// SAFETY: as above.
unsafe impl<const N: usize> aya::Pod for PeerKey<N> {}
// SAFETY: as above.
unsafe impl<const N: usize> aya::Pod for Route<N> {}
// SAFETY: as above.
unsafe impl aya::Pod for Config {}
// SAFETY: as above.
unsafe impl aya::Pod for BucketKey {}
// SAFETY: as above.
unsafe impl aya::Pod for Bucket {}
// SAFETY: as above.
unsafe impl aya::Pod for Counters {}

const _: () = {
    assert!(size_of::<ClientKey<4>>() == 16);
    assert!(size_of::<PeerKey<4>>() == 12);
    assert!(size_of::<Route<4>>() == 64);
    assert!(size_of::<ClientKey<16>>() == 40);
    assert!(size_of::<PeerKey<16>>() == 36);
    assert!(size_of::<Route<16>>() == 112);
    assert!(size_of::<EntryTraffic>() == 16);
    // Where the program adds to it (`struct route_traffic traffic`, last).
    assert!(std::mem::offset_of!(Route<4>, traffic) == 48);
    assert!(std::mem::offset_of!(Route<16>, traffic) == 96);
    assert!(size_of::<BucketKey>() == 40);
    assert!(size_of::<Bucket>() == 16);
    assert!(size_of::<Config>() == 8);
    assert!(size_of::<Counters>() == 48);
};
