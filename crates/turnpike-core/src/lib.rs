//! Turnpike's sans-IO STUN/TURN server.
//!
//! The core takes bytes, the addresses they travelled between and the current
//! time, and returns what to send; it owns no sockets, threads or clocks. The
//! `turnpike` binary runs one [`Server`] per worker thread (a shard) and moves
//! bytes between it and the kernel.
//!
//! - [`server`]: [`Server`], the entry point: demultiplexing and method dispatch.
//! - [`binding`]: where a Binding request is answered (RFC 8489, RFC 3489, RFC 5780).
//! - [`response`]: building responses and error responses.
//! - [`config`]: what the core needs to know about its deployment.
//! - [`packet`]: the input and output types crossing the I/O boundary.

pub mod binding;
pub mod config;
pub mod packet;
pub mod response;
pub mod server;

pub use config::{Config, NatDiscovery};
pub use packet::{Packet, Transmit, Transport};
pub use server::{Server, Stats};
