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

pub mod host;
pub mod tcp;
pub mod udp;
