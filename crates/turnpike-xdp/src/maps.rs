//! The program's map layouts, mirrored from `bpf/relay.bpf.c` (keep the
//! two in step; `tests/program.rs` fails if they drift). Addresses, ports
//! and channel numbers are in network byte order, as on the wire.

/// `ROUTE_DONT_FRAGMENT` in `struct route`'s flags.
pub(crate) const ROUTE_DONT_FRAGMENT: u16 = 1;

/// `struct client_key`: ChannelData from a client's 5-tuple on a channel.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClientKey {
    pub(crate) client_ip: [u8; 4],
    pub(crate) server_ip: [u8; 4],
    pub(crate) client_port: [u8; 2],
    pub(crate) server_port: [u8; 2],
    pub(crate) channel: [u8; 2],
    pub(crate) pad: [u8; 2],
}

/// `struct peer_key`: a datagram from a peer to a relayed address.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct PeerKey {
    pub(crate) peer_ip: [u8; 4],
    pub(crate) relay_ip: [u8; 4],
    pub(crate) peer_port: [u8; 2],
    pub(crate) relay_port: [u8; 2],
}

/// `struct route`: both sides of a channel, and when it lapses
/// (`CLOCK_MONOTONIC` nanoseconds).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Route {
    pub(crate) client_ip: [u8; 4],
    pub(crate) server_ip: [u8; 4],
    pub(crate) relay_ip: [u8; 4],
    pub(crate) peer_ip: [u8; 4],
    pub(crate) client_port: [u8; 2],
    pub(crate) server_port: [u8; 2],
    pub(crate) relay_port: [u8; 2],
    pub(crate) peer_port: [u8; 2],
    pub(crate) channel: [u8; 2],
    pub(crate) flags: u16,
    pub(crate) pad: u32,
    pub(crate) until_ns: u64,
}

/// `struct client_key6`: [`ClientKey`] for IPv6.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClientKey6 {
    pub(crate) client_ip: [u8; 16],
    pub(crate) server_ip: [u8; 16],
    pub(crate) client_port: [u8; 2],
    pub(crate) server_port: [u8; 2],
    pub(crate) channel: [u8; 2],
    pub(crate) pad: [u8; 2],
}

/// `struct peer_key6`: [`PeerKey`] for IPv6.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct PeerKey6 {
    pub(crate) peer_ip: [u8; 16],
    pub(crate) relay_ip: [u8; 16],
    pub(crate) peer_port: [u8; 2],
    pub(crate) relay_port: [u8; 2],
}

/// `struct route6`: [`Route`] for IPv6.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Route6 {
    pub(crate) client_ip: [u8; 16],
    pub(crate) server_ip: [u8; 16],
    pub(crate) relay_ip: [u8; 16],
    pub(crate) peer_ip: [u8; 16],
    pub(crate) client_port: [u8; 2],
    pub(crate) server_port: [u8; 2],
    pub(crate) relay_port: [u8; 2],
    pub(crate) peer_port: [u8; 2],
    pub(crate) channel: [u8; 2],
    pub(crate) flags: u16,
    pub(crate) pad: u32,
    pub(crate) until_ns: u64,
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
    /// too big for the MTU, next hop unknown.
    pub passed: u64,
}

// SAFETY: plain `repr(C)` structs of integers and byte arrays, with no
// implicit padding (every field is naturally aligned at its offset and the
// sizes are multiples of the alignment), so every byte pattern is valid.
unsafe impl aya::Pod for ClientKey {}
// SAFETY: as above.
unsafe impl aya::Pod for PeerKey {}
// SAFETY: as above.
unsafe impl aya::Pod for Route {}
// SAFETY: as above.
unsafe impl aya::Pod for ClientKey6 {}
// SAFETY: as above.
unsafe impl aya::Pod for PeerKey6 {}
// SAFETY: as above.
unsafe impl aya::Pod for Route6 {}
// SAFETY: as above.
unsafe impl aya::Pod for Config {}
// SAFETY: as above.
unsafe impl aya::Pod for Counters {}

const _: () = {
    assert!(size_of::<ClientKey>() == 16);
    assert!(size_of::<PeerKey>() == 12);
    assert!(size_of::<Route>() == 40);
    assert!(size_of::<ClientKey6>() == 40);
    assert!(size_of::<PeerKey6>() == 36);
    assert!(size_of::<Route6>() == 88);
    assert!(size_of::<Config>() == 8);
    assert!(size_of::<Counters>() == 40);
};
