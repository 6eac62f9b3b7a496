//! Turnpike's STUN/TURN codec.
//!
//! Pure data transformation, no I/O and no async:
//! - [`header`]: message type (method + class), transaction IDs, RFC 3489 vs RFC 5389+.
//! - [`attr`]: every attribute type, typed and zero-copy.
//! - [`message`]: [`Message`] (parse a borrowed buffer) and [`MessageBuilder`]
//!   (write into a caller's buffer), integrity and fingerprint handling.
//! - [`integrity`]: HMAC keys, long-term key derivation, USERHASH, FINGERPRINT.
//! - [`channel_data`]: TURN ChannelData framing.
//! - [`framing`]: first-byte demultiplexing and TCP/TLS stream framing.
//!
//! Nothing here panics on input: every malformed buffer yields an error value,
//! and every length and count read from the wire is bounded.

#![forbid(unsafe_code)]

pub mod attr;
pub mod channel_data;
pub mod error;
pub mod framing;
pub mod header;
pub mod integrity;
pub mod message;

pub use attr::{AddressFamily, AttrType, Attribute, ChangeRequest, ErrorCode};
pub use channel_data::ChannelData;
pub use error::{AttrError, DecodeError, EncodeError, IntegrityError};
pub use header::{Class, HEADER_LEN, Header, MAGIC_COOKIE, MessageType, Method, TransactionId};
pub use integrity::{Sha1Key, Sha256Key};
pub use message::{Message, MessageBuilder, RawAttribute};
