//! Message integrity (RFC 8489 §14.5, §14.6), long-term keys (§9.2.2),
//! USERHASH (§14.4) and FINGERPRINT (§14.7).
//!
//! Keys are pre-keyed HMAC states: deriving the inner and outer pads once per
//! credential and cloning the state per message halves the cost of each check,
//! which matters on the authenticated packet path.

use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// XORed into the CRC-32 so a FINGERPRINT cannot be mistaken for another protocol's CRC.
pub const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// A MESSAGE-INTEGRITY (HMAC-SHA1) key.
#[derive(Clone)]
pub struct Sha1Key(Hmac<Sha1>);

/// A MESSAGE-INTEGRITY-SHA256 (HMAC-SHA256) key.
#[derive(Clone)]
pub struct Sha256Key(Hmac<Sha256>);

impl Sha1Key {
    /// A key from raw bytes: the long-term key (see [`long_term_key_md5`]) or a
    /// short-term password.
    pub fn new(key: &[u8]) -> Self {
        // HMAC is defined for keys of every length (RFC 2104 §2): longer keys
        // are hashed, shorter ones padded, so this cannot fail.
        Sha1Key(
            <Hmac<Sha1> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length"),
        )
    }

    pub(crate) fn mac(&self, header: &[u8; 20], body: &[u8]) -> [u8; 20] {
        let mut mac = self.0.clone();
        mac.update(header);
        mac.update(body);
        mac.finalize().into_bytes().into()
    }
}

impl Sha256Key {
    /// A key from raw bytes: the SHA-256 long-term key (see
    /// [`long_term_key_sha256`]) or a short-term password.
    pub fn new(key: &[u8]) -> Self {
        // As for SHA-1: HMAC accepts keys of any length.
        Sha256Key(
            <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length"),
        )
    }

    pub(crate) fn mac(&self, header: &[u8; 20], body: &[u8]) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(header);
        mac.update(body);
        mac.finalize().into_bytes().into()
    }
}

impl core::fmt::Debug for Sha1Key {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Sha1Key(..)")
    }
}

impl core::fmt::Debug for Sha256Key {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Sha256Key(..)")
    }
}

/// The RFC 5389 long-term key: MD5(username ":" realm ":" password).
///
/// Strings are used as given; SASLprep/OpaqueString preparation is the
/// caller's (credential store's) business.
pub fn long_term_key_md5(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut h = Md5::new();
    for (i, part) in [username, realm, password].iter().enumerate() {
        if i > 0 {
            h.update(b":");
        }
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

/// The RFC 8489 SHA-256 long-term key: SHA-256(username ":" realm ":" password).
pub fn long_term_key_sha256(username: &str, realm: &str, password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    for (i, part) in [username, realm, password].iter().enumerate() {
        if i > 0 {
            h.update(b":");
        }
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

/// USERHASH (RFC 8489 §14.4): SHA-256(username ":" realm).
pub fn userhash(username: &str, realm: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.finalize().into()
}

/// The FINGERPRINT value of a header (length already adjusted) plus body.
pub(crate) fn fingerprint(header: &[u8; 20], body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(header);
    h.update(body);
    h.finalize() ^ FINGERPRINT_XOR
}

/// Constant-time equality of a received MAC with a (possibly truncated) computed one.
pub(crate) fn mac_matches(received: &[u8], computed: &[u8]) -> bool {
    received.len() <= computed.len() && bool::from(received.ct_eq(&computed[..received.len()]))
}
