//! Turnpike's sans-IO STUN/TURN server.
//!
//! The core takes bytes, the addresses they travelled between and the current
//! time, and returns what to send; it owns no sockets, threads or clocks. The
//! `turnpike` binary runs one [`Server`] per worker thread (a shard) and moves
//! bytes between it and the kernel.
//!
//! - [`server`]: [`Server`], the entry point: demultiplexing and method dispatch.
//! - [`output`]: what the core asks of the shell ([`Output`]: transmits by
//!   [`Destination`], [`Event`]s, the next timeout), all from
//!   [`Server::poll_output`].
//! - [`binding`]: where a Binding request is answered (RFC 8489, RFC 3489, RFC 5780).
//! - [`turn`]: TURN methods, one file each (`turn/allocate.rs`, `turn/refresh.rs`, ...).
//! - [`auth`], [`nonce`], [`credentials`], [`ephemeral`]: the long-term
//!   credential mechanism, and time-limited credentials from shared secrets.
//! - [`allocation`]: allocations, permissions, channels, quotas.
//! - [`bandwidth`]: bandwidth caps per allocation and per user.
//! - [`drain`]: how a draining shard refuses new allocations.
//! - [`connection`]: peer connections of TCP allocations (RFC 6062).
//! - [`peer_policy`]: which peers may be relayed to (anti-SSRF).
//! - [`relay`]: relayed addresses: what the shell binds for the core
//!   ([`RelayBinder`]), and how a shard picks ports.
//! - [`response`]: building responses and error responses.
//! - [`config`]: what the core needs to know about its deployment.
//! - [`packet`]: a client packet as it enters ([`Packet`], [`FiveTuple`]),
//!   and the size limits of each transport.
//! - [`ids`]: identifiers and addresses named for their role
//!   ([`ConnectionId`], [`PeerSocket`], [`RelayedAddress`]).
//! - [`stats`]: per-shard counters, and why relayed data was dropped.
//! - [`source`]: which client addresses count as one source for limits.
//! - [`rate`]: per-source rates in constant memory.

#![forbid(unsafe_code)]

pub mod allocation;
pub mod auth;
pub mod bandwidth;
pub mod binding;
pub mod config;
pub mod connection;
pub mod credentials;
pub mod drain;
pub mod ephemeral;
pub mod ids;
pub mod nonce;
pub mod output;
pub mod packet;
pub mod peer_policy;
pub mod rate;
pub mod relay;
pub mod response;
pub mod server;
pub mod source;
pub mod stats;
pub(crate) mod turn;

pub use allocation::Quotas;
pub use config::{Config, NatDiscovery, TurnConfig, WallClock};
pub use credentials::{Lookup, UserKeys};
pub use drain::{Alternate, Draining, Redirect};
pub use ephemeral::{Secrets, SharedSecret};
pub use ids::{ConnectionId, PeerSocket, RelayedAddress};
pub use nonce::NonceKey;
pub use output::{ChannelRoute, Destination, Event, Output, Transmit};
pub use packet::{FiveTuple, MAX_DTLS_MESSAGE, Packet, Transport, max_udp_payload};
pub use peer_policy::PeerPolicy;
pub use rate::PerSourceRate;
pub use relay::{NoRelays, RelayBinder, RelayOptions, RelayProtocol};
pub use server::{Server, Shard};
pub use source::SourcePrefix;
pub use stats::{DropReason, Drops, Stats};
