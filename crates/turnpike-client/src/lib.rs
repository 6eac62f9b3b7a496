//! A TURN-over-UDP client, built on Turnpike's own codec
//! ([`turnpike_codec`]). The `turnpike bench` load generator that drives it
//! at scale is the `turnpike-loadgen` crate.
//!
//! # Layers
//!
//! The protocol logic is *sans-IO*: it builds requests into a caller's buffer
//! and consumes responses the caller received, and is told the time rather
//! than reading a clock. That keeps it deterministic and unit-testable, and
//! lets the same code run in the async client ([`TurnClient`]) and in the load
//! generator's hand-written `epoll` loops (`turnpike-loadgen`).
//!
//! - [`auth`]: long-term credentials ([`Credentials`]) and what a client learns
//!   from the server's challenges ([`AuthState`]: realm, nonce, key).
//! - [`transaction`]: one request/response exchange ([`ClientTransaction`]):
//!   the 401 → REALM/NONCE → signed retry and 438 → new-nonce retry flows,
//!   response integrity checks, and RFC 8489 §6.2.1 retransmission timing
//!   ([`RetransmitPolicy`]).
//! - [`data`]: the data plane: ChannelData and Send indications out, ChannelData
//!   and Data indications in ([`parse_incoming`]). Allocation-free.
//! - [`client`]: [`TurnClient`], a thin tokio UDP driver over the above, with
//!   one method per TURN operation.
//! - [`tcp_relay`]: a blocking client for TCP allocations (RFC 6062):
//!   Connect, ConnectionAttempt, ConnectionBind.
//! - `testing` (feature `testing`): coturn's `turnserver` as a test fixture.
//!
//! # Example
//!
//! ```no_run
//! use turnpike_client::{AllocateParams, Credentials, TurnClient};
//!
//! # async fn demo() -> Result<(), turnpike_client::ClientError> {
//! let server = "127.0.0.1:3478".parse().unwrap();
//! let mut client = TurnClient::bind(server, Credentials::new("bench", "secret")).await?;
//! let allocation = client.allocate(AllocateParams::default()).await?;
//! let peer = "127.0.0.1:9000".parse().unwrap();
//! client.channel_bind(0x4000, peer).await?;
//! client.send_channel_data(0x4000, b"hello").await?;
//! println!("relayed at {}", allocation.relayed);
//! # Ok(()) }
//! ```
//!
//! Only long-term credentials with the MD5 key (RFC 5389/8656, what coturn
//! and browsers use) are implemented; RFC 8489's SHA-256 password algorithm
//! and USERHASH are not.

#![forbid(unsafe_code)]

pub mod auth;
pub mod client;
pub mod data;
pub mod error;
pub mod tcp_relay;
#[cfg(feature = "testing")]
pub mod testing;
pub mod transaction;

pub use auth::{AuthState, Credentials};
pub use client::{Relayed, TurnClient};
pub use data::{Incoming, parse_incoming};
pub use error::ClientError;
pub use transaction::{
    AllocateParams, Allocated, ClientTransaction, Request, ResponseAction, RetransmitPolicy,
    Success, TimeoutAction,
};
