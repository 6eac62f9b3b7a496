//! The stateless half of the handshake, in plain Rust: recognising a
//! ClientHello, the cookie MAC, and the HelloVerifyRequest (RFC 6347 §4.2.1).
//!
//! This runs for every datagram from an address without a session, so it
//! must be cheap and allocate nothing unless it answers: one HMAC-SHA256
//! over ~30 bytes to check a cookie, one more plus a ~60-byte `Vec` to
//! answer. OpenSSL is not involved until a cookie is valid, which is what
//! keeps a flood of spoofed ClientHellos from costing an `SSL` object each.

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// DTLS record header: type, version, epoch, sequence number, length.
pub(crate) const RECORD_HEADER_LEN: usize = 13;
/// DTLS handshake header: type, length, message_seq, fragment offset/length.
const HANDSHAKE_HEADER_LEN: usize = 12;
const CONTENT_HANDSHAKE: u8 = 22;
const MSG_CLIENT_HELLO: u8 = 1;
const MSG_HELLO_VERIFY_REQUEST: u8 = 3;
/// DTLS 1.0, which RFC 6347 §4.2.1 says a DTLS 1.2 server should put in the
/// HelloVerifyRequest (some clients ignore anything else). Version
/// negotiation proper happens later, in OpenSSL, which refuses DTLS 1.0.
const DTLS1_0: [u8; 2] = [0xFE, 0xFF];

/// Length of a cookie coarse-time period. A cookie is accepted during the
/// period it was made in and the next one, so 30–60 s: plenty for a client
/// to answer a HelloVerifyRequest, short enough that a captured cookie is
/// soon useless.
pub(crate) const COOKIE_PERIOD: Duration = Duration::from_secs(30);
const COOKIE_MAC_LEN: usize = 16;
/// One byte of the period number (to pick current/previous without trying
/// both) and a truncated HMAC-SHA256.
pub(crate) const COOKIE_LEN: usize = 1 + COOKIE_MAC_LEN;

/// The parts of an epoch-0 ClientHello the stateless exchange needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientHello<'a> {
    /// Record sequence number (48 bits), echoed in the HelloVerifyRequest.
    pub record_seq: [u8; 6],
    pub random: [u8; 32],
    pub cookie: &'a [u8],
}

/// Parses the first record of `datagram` if it is an epoch-0 handshake
/// record holding the first fragment of a ClientHello that reaches at least
/// the cookie. Mirrors what OpenSSL's `DTLSv1_listen` accepts, so whatever
/// passes here with a valid cookie is also accepted there.
pub(crate) fn parse_client_hello(datagram: &[u8]) -> Option<ClientHello<'_>> {
    let header = datagram.get(..RECORD_HEADER_LEN)?;
    // Content type handshake, major version 254 (every DTLS version); the
    // minor version is not checked here (DTLS 1.0 clients must get a clean
    // protocol_version alert from OpenSSL, not silence).
    if header[0] != CONTENT_HANDSHAKE || header[1] != 0xFE || header[3] != 0 || header[4] != 0 {
        return None;
    }
    let mut record_seq = [0u8; 6];
    record_seq.copy_from_slice(&header[5..11]);
    let record_len = usize::from(u16::from_be_bytes([header[11], header[12]]));
    let record = datagram.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + record_len)?;

    let hs = record.get(..HANDSHAKE_HEADER_LEN)?;
    if hs[0] != MSG_CLIENT_HELLO {
        return None;
    }
    let msg_len = u24(&hs[1..4]);
    let message_seq = u16::from_be_bytes([hs[4], hs[5]]);
    let frag_off = u24(&hs[6..9]);
    let frag_len = u24(&hs[9..12]);
    // Exactly one message in the record, first fragment only (no
    // reassembly without state), message_seq 0 (first) or 1 (after our
    // HelloVerifyRequest) — OpenSSL allows up to 2.
    if frag_off != 0 || frag_len > msg_len || message_seq > 2 {
        return None;
    }
    if record.len() != HANDSHAKE_HEADER_LEN + frag_len {
        return None;
    }
    let body = &record[HANDSHAKE_HEADER_LEN..];
    // client_version (2), random (32), session_id<0..32>, cookie<0..255>.
    let random_bytes = body.get(2..34)?;
    let sid_len = usize::from(*body.get(34)?);
    if sid_len > 32 {
        return None;
    }
    let cookie_at = 35 + sid_len;
    let cookie_len = usize::from(*body.get(cookie_at)?);
    let cookie = body.get(cookie_at + 1..cookie_at + 1 + cookie_len)?;
    let mut random = [0u8; 32];
    random.copy_from_slice(random_bytes);
    Some(ClientHello {
        record_seq,
        random,
        cookie,
    })
}

fn u24(b: &[u8]) -> usize {
    (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2])
}

/// A HelloVerifyRequest answering `hello`, carrying `cookie`: one record,
/// one unfragmented message, as OpenSSL's `DTLSv1_listen` writes it
/// (record sequence number copied from the ClientHello, message_seq 0).
pub(crate) fn hello_verify_request(hello: &ClientHello<'_>, cookie: &[u8; COOKIE_LEN]) -> Vec<u8> {
    let body_len = 2 + 1 + COOKIE_LEN;
    let record_len = HANDSHAKE_HEADER_LEN + body_len;
    let mut out = Vec::with_capacity(RECORD_HEADER_LEN + record_len);
    out.push(CONTENT_HANDSHAKE);
    out.extend_from_slice(&DTLS1_0);
    out.extend_from_slice(&[0, 0]); // epoch
    out.extend_from_slice(&hello.record_seq);
    out.extend_from_slice(&(record_len as u16).to_be_bytes());
    out.push(MSG_HELLO_VERIFY_REQUEST);
    out.extend_from_slice(&(body_len as u32).to_be_bytes()[1..]); // length
    out.extend_from_slice(&[0, 0]); // message_seq
    out.extend_from_slice(&[0, 0, 0]); // fragment_offset
    out.extend_from_slice(&(body_len as u32).to_be_bytes()[1..]); // fragment_length
    out.extend_from_slice(&DTLS1_0); // server_version
    out.push(COOKIE_LEN as u8);
    out.extend_from_slice(cookie);
    out
}

/// Keyed cookie MAC: HMAC-SHA256(secret, period ‖ peer address).
#[derive(Clone)]
pub(crate) struct CookieKey {
    /// Pre-keyed state, cloned per cookie (saves two SHA-256 blocks).
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieKey(<redacted>)")
    }
}

/// Process-wide origin of the coarse cookie clock, so every worker's server
/// (same secret) agrees on the period number and accepts the others'
/// cookies.
static COOKIE_EPOCH: OnceLock<Instant> = OnceLock::new();

impl CookieKey {
    pub(crate) fn new(secret: &[u8; 32]) -> Self {
        COOKIE_EPOCH.get_or_init(Instant::now);
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
            .expect("HMAC takes keys of any length");
        CookieKey { mac }
    }

    /// The coarse-time period `now` falls in.
    pub(crate) fn period(now: Instant) -> u64 {
        let epoch = *COOKIE_EPOCH.get_or_init(Instant::now);
        now.saturating_duration_since(epoch).as_secs() / COOKIE_PERIOD.as_secs()
    }

    pub(crate) fn cookie(&self, period: u64, peer: SocketAddr) -> [u8; COOKIE_LEN] {
        let mut mac = self.mac.clone();
        mac.update(&period.to_be_bytes());
        match peer.ip() {
            IpAddr::V4(ip) => {
                mac.update(&[4]);
                mac.update(&ip.octets());
            }
            IpAddr::V6(ip) => {
                mac.update(&[6]);
                mac.update(&ip.octets());
            }
        }
        mac.update(&peer.port().to_be_bytes());
        let tag = mac.finalize().into_bytes();
        let mut out = [0u8; COOKIE_LEN];
        out[0] = period as u8;
        out[1..].copy_from_slice(&tag[..COOKIE_MAC_LEN]);
        out
    }

    /// Whether `cookie` was made for `peer` in the current or the previous
    /// period. Constant-time in the MAC comparison.
    pub(crate) fn verify(&self, now: Instant, peer: SocketAddr, cookie: &[u8]) -> bool {
        if cookie.len() != COOKIE_LEN {
            return false;
        }
        let current = Self::period(now);
        let period = if cookie[0] == current as u8 {
            current
        } else if current > 0 && cookie[0] == (current - 1) as u8 {
            current - 1
        } else {
            return false;
        };
        bool::from(self.cookie(period, peer).ct_eq(cookie))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A ClientHello as OpenSSL 3.0's `s_client -dtls1_2` sends it first
    /// (truncated extensions are fine for the parser: it stops at the cookie).
    fn client_hello(cookie: &[u8], record_seq: u8, message_seq: u8) -> Vec<u8> {
        let mut body = vec![0xFE, 0xFD];
        body.extend_from_slice(&[0x11; 32]); // random
        body.push(0); // session id
        body.push(cookie.len() as u8);
        body.extend_from_slice(cookie);
        body.extend_from_slice(&[0, 2, 0xC0, 0x2B, 1, 0]); // one suite, null compression
        let mut hs = vec![1];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&[0, message_seq, 0, 0, 0]);
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![22, 0xFE, 0xFF, 0, 0, 0, 0, 0, 0, 0, record_seq];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn parses_client_hello_and_answers() {
        let dgram = client_hello(&[], 7, 0);
        let ch = parse_client_hello(&dgram).expect("parses");
        assert_eq!(ch.record_seq, [0, 0, 0, 0, 0, 7]);
        assert_eq!(ch.random, [0x11; 32]);
        assert!(ch.cookie.is_empty());

        let key = CookieKey::new(&[5; 32]);
        let peer: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let cookie = key.cookie(CookieKey::period(Instant::now()), peer);
        let hvr = hello_verify_request(&ch, &cookie);
        assert_eq!(hvr[0], 22);
        assert_eq!(&hvr[1..3], &[0xFE, 0xFF]);
        assert_eq!(&hvr[5..11], &[0, 0, 0, 0, 0, 7], "record seq echoed");
        assert_eq!(
            usize::from(u16::from_be_bytes([hvr[11], hvr[12]])),
            hvr.len() - 13
        );
        assert_eq!(hvr[13], 3);
        assert_eq!(&hvr[hvr.len() - COOKIE_LEN..], &cookie);

        let with_cookie = client_hello(&cookie, 8, 1);
        let ch2 = parse_client_hello(&with_cookie).unwrap();
        assert_eq!(ch2.cookie, &cookie);
        assert!(key.verify(Instant::now(), peer, ch2.cookie));
    }

    #[test]
    fn rejects_non_client_hellos() {
        let good = client_hello(&[], 0, 0);
        let mut app = good.clone();
        app[0] = 23;
        assert!(parse_client_hello(&app).is_none());
        let mut epoch1 = good.clone();
        epoch1[4] = 1;
        assert!(parse_client_hello(&epoch1).is_none());
        let mut fragment = good.clone();
        fragment[13 + 8] = 1; // fragment offset 1
        assert!(parse_client_hello(&fragment).is_none());
        let mut server_hello = good.clone();
        server_hello[13] = 2;
        assert!(parse_client_hello(&server_hello).is_none());
        assert!(
            parse_client_hello(&good[..good.len() - 1]).is_none(),
            "truncated record"
        );
        assert!(parse_client_hello(&[]).is_none());
        assert!(parse_client_hello(&good[..13]).is_none());
    }

    #[test]
    fn cookie_binds_address_and_time() {
        let key = CookieKey::new(&[9; 32]);
        let a: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let b: SocketAddr = "192.0.2.1:4001".parse().unwrap();
        let c: SocketAddr = "[2001:db8::1]:4000".parse().unwrap();
        let now = Instant::now() + Duration::from_secs(3600);
        let p = CookieKey::period(now);
        let cookie = key.cookie(p, a);
        assert!(key.verify(now, a, &cookie));
        assert!(!key.verify(now, b, &cookie));
        assert!(!key.verify(now, c, &cookie));
        assert!(
            key.verify(now + COOKIE_PERIOD, a, &cookie),
            "previous period accepted"
        );
        assert!(
            !key.verify(now + 2 * COOKIE_PERIOD, a, &cookie),
            "older refused"
        );
        let other = CookieKey::new(&[8; 32]);
        assert!(!other.verify(now, a, &cookie), "other secret");
        let mut bad = cookie;
        bad[5] ^= 1;
        assert!(!key.verify(now, a, &bad));
        assert!(!key.verify(now, a, &cookie[..COOKIE_LEN - 1]));
        assert!(!key.verify(now, a, &[]));
    }

    proptest! {
        #[test]
        fn parser_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_client_hello(&data);
        }

        #[test]
        fn parser_survives_mutations(idx in 0usize..120, val in any::<u8>(), cut in 0usize..120) {
            let mut d = client_hello(&[1, 2, 3], 0, 1);
            let i = idx % d.len();
            d[i] = val;
            d.truncate(d.len() - cut % d.len());
            if let Some(ch) = parse_client_hello(&d) {
                prop_assert!(ch.cookie.len() <= 255);
            }
        }
    }
}
