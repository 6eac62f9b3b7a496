//! Sockets: the operating-system side of the packet path.
//!
//! - [`udp`]: [`udp::BatchUdpSocket`], a Linux UDP socket that receives with
//!   `recvmmsg` and sends with `sendmmsg` into preallocated batches
//!   ([`udp::RecvBatch`], [`udp::SendBatch`]), reporting and choosing the
//!   local address of each datagram (`IP_PKTINFO` / `IPV6_PKTINFO`) so one
//!   wildcard-bound socket per worker serves every local address.
//! - [`tcp`]: per-worker `SO_REUSEPORT` TCP listeners and STUN/ChannelData
//!   message framing on each connection.
//! - [`host`]: the host's own IP addresses, for the peer policy.
//!
//! `unsafe` code is denied here except in the two modules that make system
//! calls `socket2` and tokio do not wrap: `udp::sys` (socket addresses,
//! control messages, `recvmmsg`/`sendmmsg`) and `host` (`getifaddrs`).

#![deny(unsafe_code)]

pub mod host;
pub mod tcp;
pub mod udp;

use std::net::{IpAddr, SocketAddr};

/// Whether a socket bound to `bound` receives what is sent to the local
/// address `local`: it is bound to that address, or to the wildcard of its
/// family and port.
pub fn serves(bound: SocketAddr, local: SocketAddr) -> bool {
    bound == local
        || (bound.ip().is_unspecified()
            && bound.port() == local.port()
            && bound.is_ipv4() == local.is_ipv4())
}

/// The source IP to set on a datagram from a socket bound to `bound` so it
/// leaves from `local`: only a wildcard socket needs one (`IP_PKTINFO`),
/// as the kernel would otherwise pick it by route.
pub fn source_ip(bound: SocketAddr, local: IpAddr) -> Option<IpAddr> {
    bound.ip().is_unspecified().then_some(local)
}
