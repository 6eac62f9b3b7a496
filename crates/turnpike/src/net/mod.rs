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
