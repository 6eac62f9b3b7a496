//! TLS certificates: loading, checking, serving and reloading them without
//! dropping calls.
//!
//! [`Certificates::load`] reads `tls.certificate` (the server certificate,
//! then its intermediates, optionally followed by the private key, as
//! restund keeps them) and `tls.private_key`, and checks what operators get
//! wrong: unreadable or non-PEM files, a missing or passphrase-protected key,
//! a key that does not match the certificate, a chain with the server
//! certificate not first, an unsupported key type. Every failure is a
//! [`CertError`] whose `Display` is one line saying what is wrong and how to
//! fix it.
//!
//! [`Certificates::server_config`] is built once. Its certificate comes from
//! a [`ResolvesServerCert`] reading an [`ArcSwap`], so a reload
//! ([`Certificates::reload`]) applies to the next handshake without
//! rebuilding anything, and established sessions — which hold their own keys
//! — are untouched. A reload that fails (a half-written file, a key that
//! does not match yet) changes nothing: the previous certificate stays in
//! service. [`watch`] runs the reloads: when the files change (polled by
//! inode, size, mtime and ctime, so certbot's symlink swaps and Kubernetes'
//! secret updates are seen) and on SIGHUP, logging one line per outcome.
//!
//! TLS 1.2 and 1.3 (or 1.3 only, `tls.min_version`) with rustls' *ring*
//! provider; TLS 1.0 and 1.1 are never offered. ALPN (RFC 7443):
//! `stun.turn` and `stun.nat-discovery` are accepted but not required —
//! clients that send no ALPN connect too; a client that offers only other
//! protocols is refused with `no_application_protocol`, as RFC 7301 section
//! 3.2 has it.
//!
//! The DTLS side (OpenSSL) takes the same chain and key as PEM
//! ([`Certificates::pem`]) and notices reloads through
//! [`Certificates::generation`].
//!
//! Keys: RSA (2048 bits or more), ECDSA P-256 and P-384, Ed25519; PEM as
//! PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE
//! KEY`). Copies of the key this module makes are zeroized when dropped.
//!
//! # Layout
//!
//! - `certificates`: [`Certificates`], reading and checking the chain and
//!   key ([`Certificates::load`], [`Certificates::reload`]) and serving them
//!   to rustls;
//! - `pem`: reading PEM files, and writing PEM for the DTLS side
//!   ([`PemPair`]);
//! - `error`: [`CertError`] and [`FileRole`], the one-line diagnostics;
//! - `watcher`: [`watch`], the reloads on file changes and SIGHUP, and the
//!   expiry warnings;
//! - `x509`: the small DER reader for subject, names and expiry.
//!
//! Dates are formatted by [`crate::date`].

#![forbid(unsafe_code)]

use std::time::Duration;

mod certificates;
mod error;
mod pem;
mod watcher;
mod x509;

pub use certificates::Certificates;
pub use error::{CertError, FileRole};
pub use pem::PemPair;
pub use watcher::{NoTrigger, ReloadCause, ReloadTrigger, describe_reload, expiry_warning, watch};

/// Kept at their old paths for callers of `tls::format_utc` and
/// `tls::format_rfc3339`; they live in [`crate::date`].
pub use crate::date::{format_rfc3339, format_utc};

/// ALPN protocol ID for TURN (RFC 7443).
pub const ALPN_STUN_TURN: &[u8] = b"stun.turn";

/// ALPN protocol ID for STUN NAT behaviour discovery (RFC 7443).
pub const ALPN_STUN_NAT_DISCOVERY: &[u8] = b"stun.nat-discovery";

/// Largest certificate or key file read. Real chains are a few KiB; the
/// limit keeps a mistaken path (a log file, `/dev/zero`) from being read
/// into memory.
pub const MAX_PEM_FILE_BYTES: u64 = 1 << 20;

/// How far ahead of the expiry [`watch`] starts warning.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);
