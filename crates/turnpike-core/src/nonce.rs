//! Stateless nonces (RFC 8489 §9.2): an expiry time and a MAC over it, the
//! client's address and the feature prefix, under a server secret.
//!
//! Nothing is stored per client: a flood of unauthenticated requests from
//! spoofed sources costs one HMAC each and no memory. A nonce is only valid
//! from the address it was issued to, and only until it expires (then the
//! client gets 438 Stale Nonce and a fresh one).
//!
//! Layout, all URL-safe base64 without padding: an optional RFC 8489 "nonce
//! cookie" (`obMatJos2` + 4 characters of security-feature bits), then 4
//! bytes of expiry (seconds since the server's epoch) and 12 bytes of
//! HMAC-SHA256 — 22 characters, 35 with the cookie. The cookie is MACed too,
//! so a client cannot strip it to bid down from SHA-256 to MD5.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// RFC 8489 §9.2: a nonce starting with this tells the client which
/// security features the server supports.
pub const COOKIE_PREFIX: &str = "obMatJos2";
/// Security feature bits (RFC 8489 §18.1): password algorithms (SHA-256) and
/// username anonymity (USERHASH), as 24 bits in 4 base64 characters.
const FEATURES: &str = "gAAA"; // bit 0 set: "Password algorithms"

const MAC_LEN: usize = 12;
const RAW_LEN: usize = 4 + MAC_LEN;
/// Characters of a nonce without the cookie.
pub const PLAIN_LEN: usize = 22;
/// Characters of a nonce with the cookie.
pub const COOKIE_LEN: usize = COOKIE_PREFIX.len() + FEATURES.len() + PLAIN_LEN;

/// Mints and checks nonces. Shared by every shard (same secret and epoch),
/// so a nonce issued by one worker is accepted by another.
#[derive(Clone)]
pub struct NonceKey {
    mac: Hmac<Sha256>,
    epoch: Instant,
    lifetime: Duration,
}

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceKey")
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

/// What a received nonce turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceCheck {
    /// Issued by us to this address and not expired. `sha256` tells whether
    /// it carried the cookie that offered SHA-256.
    Valid {
        /// The nonce offered PASSWORD-ALGORITHMS (RFC 8489 bid-down protection applies).
        sha256: bool,
    },
    /// Issued by us to this address, but expired: answer 438.
    Stale,
    /// Not ours, or not for this address: also answered 438 (RFC 8489 gives
    /// a client no other way to recover), with a fresh nonce.
    Invalid,
}

/// A minted nonce, held on the stack.
#[derive(Clone, Copy, Debug)]
pub struct Nonce {
    buf: [u8; COOKIE_LEN],
    len: usize,
}

impl Nonce {
    /// The nonce text.
    pub fn as_str(&self) -> &str {
        // Only ASCII (the prefix and base64) is ever written.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl NonceKey {
    /// A key from a 32-byte server secret; `epoch` is the shared time origin.
    pub fn new(secret: &[u8; 32], epoch: Instant, lifetime: Duration) -> Self {
        // HMAC takes keys of any length, so this cannot fail.
        let mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes any key length");
        NonceKey {
            mac,
            epoch,
            lifetime,
        }
    }

    /// How long the nonces minted with this key stay valid.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// The same key (secret and epoch: nonces minted before stay valid
    /// until their own expiry) minting nonces valid for `lifetime`.
    #[must_use]
    pub fn with_lifetime(&self, lifetime: Duration) -> Self {
        NonceKey {
            lifetime,
            ..self.clone()
        }
    }

    fn seconds(&self, now: Instant) -> u32 {
        // Saturating: a server running for 136 years has other problems.
        u32::try_from(now.saturating_duration_since(self.epoch).as_secs()).unwrap_or(u32::MAX)
    }

    fn tag(&self, expiry: [u8; 4], client: SocketAddr, with_cookie: bool) -> [u8; MAC_LEN] {
        let mut mac = self.mac.clone();
        mac.update(&[u8::from(with_cookie)]);
        mac.update(&expiry);
        match client.ip() {
            std::net::IpAddr::V4(ip) => mac.update(&ip.octets()),
            std::net::IpAddr::V6(ip) => mac.update(&ip.octets()),
        }
        mac.update(&client.port().to_be_bytes());
        let full: [u8; 32] = mac.finalize().into_bytes().into();
        let mut tag = [0u8; MAC_LEN];
        tag.copy_from_slice(&full[..MAC_LEN]);
        tag
    }

    /// A fresh nonce for `client`, valid for the key's lifetime.
    pub fn mint(&self, now: Instant, client: SocketAddr, with_cookie: bool) -> Nonce {
        let expiry = (self
            .seconds(now)
            .saturating_add(u32::try_from(self.lifetime.as_secs()).unwrap_or(u32::MAX)))
        .to_be_bytes();
        let mut raw = [0u8; RAW_LEN];
        raw[..4].copy_from_slice(&expiry);
        raw[4..].copy_from_slice(&self.tag(expiry, client, with_cookie));
        let mut nonce = Nonce {
            buf: [0; COOKIE_LEN],
            len: 0,
        };
        if with_cookie {
            let prefix_len = COOKIE_PREFIX.len() + FEATURES.len();
            nonce.buf[..COOKIE_PREFIX.len()].copy_from_slice(COOKIE_PREFIX.as_bytes());
            nonce.buf[COOKIE_PREFIX.len()..prefix_len].copy_from_slice(FEATURES.as_bytes());
            nonce.len = prefix_len;
        }
        // 16 bytes always encode to exactly 22 characters.
        let written = URL_SAFE_NO_PAD
            .encode_slice(raw, &mut nonce.buf[nonce.len..])
            .unwrap_or(0);
        nonce.len += written;
        nonce
    }

    /// Checks a nonce received from `client`.
    pub fn check(&self, nonce: &str, now: Instant, client: SocketAddr) -> NonceCheck {
        let (with_cookie, body) = match nonce.strip_prefix(COOKIE_PREFIX) {
            Some(rest)
                if rest.len() == FEATURES.len() + PLAIN_LEN && rest.starts_with(FEATURES) =>
            {
                (true, &rest[FEATURES.len()..])
            }
            _ => (false, nonce),
        };
        if body.len() != PLAIN_LEN {
            return NonceCheck::Invalid;
        }
        let mut raw = [0u8; RAW_LEN];
        match URL_SAFE_NO_PAD.decode_slice(body, &mut raw) {
            Ok(RAW_LEN) => {}
            _ => return NonceCheck::Invalid,
        }
        let expiry = [raw[0], raw[1], raw[2], raw[3]];
        let expected = self.tag(expiry, client, with_cookie);
        if !bool::from(expected.ct_eq(&raw[4..])) {
            return NonceCheck::Invalid;
        }
        if u32::from_be_bytes(expiry) < self.seconds(now) {
            NonceCheck::Stale
        } else {
            NonceCheck::Valid {
                sha256: with_cookie,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(epoch: Instant) -> NonceKey {
        NonceKey::new(&[7; 32], epoch, Duration::from_secs(600))
    }

    #[test]
    fn mint_and_check() {
        let t0 = Instant::now();
        let k = key(t0);
        let client: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        for cookie in [false, true] {
            let n = k.mint(t0, client, cookie);
            assert_eq!(
                n.as_str().len(),
                if cookie { COOKIE_LEN } else { PLAIN_LEN }
            );
            assert_eq!(
                k.check(n.as_str(), t0, client),
                NonceCheck::Valid { sha256: cookie }
            );
            assert_eq!(
                k.check(n.as_str(), t0 + Duration::from_secs(600), client),
                NonceCheck::Valid { sha256: cookie }
            );
            assert_eq!(
                k.check(n.as_str(), t0 + Duration::from_secs(601), client),
                NonceCheck::Stale
            );
            let other: SocketAddr = "192.0.2.1:5001".parse().unwrap();
            assert_eq!(k.check(n.as_str(), t0, other), NonceCheck::Invalid);
        }
    }

    #[test]
    fn forgeries_are_invalid() {
        let t0 = Instant::now();
        let k = key(t0);
        let client: SocketAddr = "[2001:db8::1]:5000".parse().unwrap();
        let n = k.mint(t0, client, true);
        // Stripping the cookie (a bid-down to MD5) breaks the MAC.
        let stripped = &n.as_str()[COOKIE_PREFIX.len() + FEATURES.len()..];
        assert_eq!(k.check(stripped, t0, client), NonceCheck::Invalid);
        // Another server's secret.
        let other = NonceKey::new(&[8; 32], t0, Duration::from_secs(600));
        assert_eq!(other.check(n.as_str(), t0, client), NonceCheck::Invalid);
        for junk in [
            "",
            "x",
            "obMatJos2",
            "!!!!!!!!!!!!!!!!!!!!!!",
            &"A".repeat(400),
        ] {
            assert_eq!(k.check(junk, t0, client), NonceCheck::Invalid, "{junk:?}");
        }
    }
}
