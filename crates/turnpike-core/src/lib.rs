//! Turnpike's sans-IO STUN/TURN server.
//!
//! The core takes bytes, the addresses they travelled between and the current
//! time, and returns what to send; it owns no sockets, threads or clocks. The
//! `turnpike` binary runs one [`Server`] per worker thread (a shard) and moves
//! bytes between it and the kernel.
//!
//! - [`server`]: [`Server`], the entry point: demultiplexing and method dispatch.
//! - [`binding`]: where a Binding request is answered (RFC 8489, RFC 3489, RFC 5780).
//! - [`turn`]: TURN methods, one file each (`turn/allocate.rs`, `turn/refresh.rs`, ...).
//! - [`auth`], [`nonce`], [`credentials`], [`ephemeral`]: the long-term
//!   credential mechanism, and time-limited credentials from shared secrets.
//! - [`allocation`]: allocations, permissions, channels, quotas.
//! - [`connection`]: peer connections of TCP allocations (RFC 6062).
//! - [`peer_policy`]: which peers may be relayed to (anti-SSRF).
//! - [`relay`]: relay ports: what the shell binds for the core.
//! - [`response`]: building responses and error responses.
//! - [`config`]: what the core needs to know about its deployment.
//! - [`packet`]: the input and output types crossing the I/O boundary, and
//!   the size limits of each transport.
//! - [`stats`]: per-shard counters, and why relayed data was dropped.
//! - [`source`]: which client addresses count as one source for limits.
//! - [`rate`]: per-source rates in constant memory.

#![forbid(unsafe_code)]

pub mod allocation;
pub mod auth;
pub mod binding;
pub mod config;
pub mod connection;
pub mod credentials;
pub mod ephemeral;
pub mod nonce;
pub mod packet;
pub mod peer_policy;
pub mod rate;
pub mod relay;
pub mod response;
pub mod server;
pub mod source;
pub mod stats;
pub(crate) mod turn;

pub use allocation::{ChannelRoute, FiveTuple, Quotas};
pub use config::{Config, NatDiscovery, TurnConfig, WallClock};
pub use connection::ConnectionId;
pub use credentials::{Lookup, UserKeys};
pub use ephemeral::{Secrets, SharedSecret};
pub use nonce::NonceKey;
pub use packet::{MAX_DTLS_MESSAGE, Packet, Transmit, Transport, max_udp_payload};
pub use peer_policy::PeerPolicy;
pub use rate::PerSourceRate;
pub use relay::{NoRelays, RelayOptions, RelayPorts, RelayProtocol};
pub use server::{Event, Server, Shard};
pub use source::SourcePrefix;
pub use stats::{DropReason, Drops, Stats};
