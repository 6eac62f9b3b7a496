//! OpenSSL glue: the TLS context, the in-memory datagram pipe every session
//! reads from and writes to, and the few DTLS calls rust-openssl does not
//! wrap.
//!
//! All `unsafe` of the crate is in this file: one `SSL_ctrl` (is OpenSSL's
//! retransmission timer armed?), `DTLS_set_timer_cb` (park that timer), and
//! `DTLSv1_listen` (prime a fresh `SSL` with an already-verified ClientHello).

use std::io::{self, Read, Write};
use std::os::raw::{c_int, c_long, c_uint};
use std::sync::Arc;

use foreign_types_shared::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::pkey::PKey;
use openssl::ssl::{
    AlpnError, Ssl, SslContext, SslContextBuilder, SslMethod, SslMode, SslOptions, SslRef,
    SslSessionCacheMode, SslStream, SslVerifyMode, SslVersion,
};
use openssl::x509::X509;
use openssl_sys as ffi;

use crate::DtlsError;
use crate::error::one_line;

/// ECDHE with AEAD only, ECDSA first (smaller, faster handshakes), then the
/// RSA equivalents; whichever matches the configured key is used. No CBC,
/// no static RSA, no PSK. These are the DTLS 1.2 suites browsers, pion,
/// coturn's clients and OpenSSL clients offer.
const CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
const GROUPS: &str = "X25519:P-256:P-384";

/// Largest plaintext of one record (2^14).
pub(crate) const MAX_PLAINTEXT: usize = 16_384;
/// Largest datagram the pipe passes on (UDP payload limit); OpenSSL writes
/// handshake datagrams of at most the MTU and application records of at
/// most 2^14 bytes plus 37 of header, nonce and tag: this is a second fence.
pub(crate) const MAX_DATAGRAM: usize = 65_507;
/// Datagrams one session may write in one step before the pipe starts
/// dropping (a handshake flight with a long chain is ~10 at MTU 1200).
const MAX_PIPE_OUT: usize = 64;

/// The ALPN ID to answer a client's offer with (RFC 7301 §3.2): the first
/// of ours, in our order of preference, that the client offers. `client` is
/// the wire list (each ID prefixed by its length); a malformed one matches
/// nothing from the first bad length on.
pub(crate) fn select_alpn<'a>(ours: &[Vec<u8>], client: &'a [u8]) -> Option<&'a [u8]> {
    let mut offered = Vec::new();
    let mut rest = client;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len);
        if len == 0 || len > tail.len() {
            break;
        }
        let (id, tail) = tail.split_at(len);
        offered.push(id);
        rest = tail;
    }
    ours.iter()
        .find_map(|p| offered.iter().copied().find(|id| *id == p.as_slice()))
}

/// Builds the context every new session of a server is created from.
pub(crate) fn build_context(
    chain_pem: &[u8],
    key_pem: &[u8],
    alpn: &Arc<[Vec<u8>]>,
) -> Result<SslContext, DtlsError> {
    let mut chain = X509::stack_from_pem(chain_pem)
        .map_err(|e| DtlsError::Certificate(one_line(e)))?
        .into_iter();
    let leaf = chain.next().ok_or(DtlsError::NoCertificate)?;
    // An empty passphrase instead of OpenSSL's default callback, which would
    // prompt on the terminal for an encrypted key.
    let key = PKey::private_key_from_pem_callback(key_pem, |_| Ok(0))
        .map_err(|e| DtlsError::PrivateKey(one_line(e)))?;

    let tls = |e: ErrorStack| DtlsError::Tls(one_line(e));
    let mut b = SslContextBuilder::new(SslMethod::dtls_server()).map_err(tls)?;
    b.set_min_proto_version(Some(SslVersion::DTLS1_2))
        .map_err(tls)?;
    b.set_max_proto_version(Some(SslVersion::DTLS1_2))
        .map_err(tls)?;
    b.set_options(
        SslOptions::NO_COMPRESSION
            | SslOptions::NO_RENEGOTIATION
            // No resumption: tickets and a session cache would be per
            // worker anyway (SO_REUSEPORT spreads a client's new ports over
            // workers) and TURN sessions are long-lived.
            | SslOptions::NO_TICKET
            | SslOptions::CIPHER_SERVER_PREFERENCE
            // The pipe has no path MTU: keep the configured one, also across
            // the SSL_clear inside DTLSv1_listen and after timeouts.
            | SslOptions::NO_QUERY_MTU,
    );
    b.set_session_cache_mode(SslSessionCacheMode::OFF);
    // Idle sessions give their read/write buffers (~34 KB) back.
    b.set_mode(SslMode::RELEASE_BUFFERS);
    b.set_cipher_list(CIPHERS).map_err(tls)?;
    b.set_groups_list(GROUPS).map_err(tls)?;
    b.set_verify(SslVerifyMode::NONE);
    // DTLSv1_listen and the server state machine insist on a verify
    // callback once a cookie is present. The cookie has already been
    // checked (CookieKey::verify) for this peer and this exact datagram
    // before any SSL object exists; OpenSSL only ever sees ClientHellos
    // that passed, so there is nothing left to check here.
    b.set_cookie_verify_cb(|_, _| true);
    // ALPN as on TLS (RFC 7443): OpenSSL calls this only when the client
    // sends the extension, so a client without ALPN is accepted and
    // negotiates nothing; one that offers only foreign protocols (h2, …)
    // gets a fatal no_application_protocol alert instead of a STUN server
    // it did not ask for.
    if !alpn.is_empty() {
        let ours = Arc::clone(alpn);
        b.set_alpn_select_callback(move |_, client| {
            select_alpn(&ours, client).ok_or(AlpnError::ALERT_FATAL)
        });
    }

    b.set_certificate(&leaf)
        .map_err(|e| DtlsError::Certificate(one_line(e)))?;
    for cert in chain {
        b.add_extra_chain_cert(cert)
            .map_err(|e| DtlsError::Certificate(one_line(e)))?;
    }
    b.set_private_key(&key)
        .map_err(|_| DtlsError::KeyMismatch)?;
    b.check_private_key().map_err(|_| DtlsError::KeyMismatch)?;
    Ok(b.build())
}

/// The in-memory "socket" of one session: at most one received datagram
/// in, each `write` OpenSSL makes is one datagram out.
///
/// OpenSSL 3.0 has no `BIO_s_dgram_mem`, and rust-openssl's stream BIO has
/// byte-stream semantics, so datagram boundaries are kept here: `read`
/// hands out the whole pending datagram (truncated to OpenSSL's buffer,
/// like a UDP socket) and then reports `WouldBlock`; DTLS flushes one
/// datagram's worth of records per `write` (it packs records up to the MTU
/// itself).
#[derive(Debug, Default)]
pub(crate) struct Pipe {
    /// The received datagram; its allocation is lent by the server and
    /// taken back after each step, so sessions hold no input buffer.
    pub inbox: Vec<u8>,
    pub inbox_full: bool,
    pub outbox: Vec<Vec<u8>>,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.inbox_full || self.inbox.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.inbox_full = false;
        let n = buf.len().min(self.inbox.len());
        buf[..n].copy_from_slice(&self.inbox[..n]);
        Ok(n)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Too many or too large: dropped like a congested network would;
        // DTLS recovers by retransmission, and nothing here grows without
        // bound.
        if self.outbox.len() < MAX_PIPE_OUT && !buf.is_empty() && buf.len() <= MAX_DATAGRAM {
            self.outbox.push(buf.to_vec());
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Duration, in µs, OpenSSL's own retransmission timer is set to: one hour,
/// i.e. never within a handshake (at most 10 min, see config.rs).
///
/// OpenSSL's DTLS timer reads the wall clock (`gettimeofday`) and fires on
/// its own from inside `SSL_read`/`SSL_do_handshake` whenever a read finds
/// no data after the deadline. A sans-IO server must run on the caller's
/// clock instead (deterministic tests, one timer wheel in the runtime), so
/// the timer is parked and `DtlsServer` retransmits the last flight itself
/// on its own schedule (1 s doubling to 60 s, RFC 6347 §4.2.4.1). OpenSSL
/// still arms and disarms the timer exactly when a flight awaits an
/// answer, which [`timer_armed`] reads.
const OPENSSL_TIMER_PARK_US: c_uint = 3_600_000_000;

unsafe extern "C" fn park_timer(_ssl: *mut ffi::SSL, _previous_us: c_uint) -> c_uint {
    OPENSSL_TIMER_PARK_US
}

/// `DTLS_CTRL_GET_TIMEOUT` (`DTLSv1_get_timeout` is a macro over it).
const DTLS_CTRL_GET_TIMEOUT: c_int = 73;

/// OpenSSL's `BIO_ADDR`, opaque here (openssl-sys declares it only for 3.2+).
#[repr(C)]
struct BioAddr {
    _opaque: [u8; 0],
}

// Public OpenSSL 1.1.1+/3.x functions that openssl-sys does not declare;
// they live in the libssl/libcrypto openssl-sys already links.
unsafe extern "C" {
    fn DTLS_set_timer_cb(
        s: *mut ffi::SSL,
        cb: Option<unsafe extern "C" fn(*mut ffi::SSL, c_uint) -> c_uint>,
    );
    fn DTLSv1_listen(s: *mut ffi::SSL, client: *mut BioAddr) -> c_int;
    fn BIO_ADDR_new() -> *mut BioAddr;
    fn BIO_ADDR_free(a: *mut BioAddr);
}

/// A server-side session over a fresh [`Pipe`], configured for the MTU
/// and with OpenSSL's own timer parked.
pub(crate) fn new_session(ctx: &SslContext, mtu: usize) -> Result<SslStream<Pipe>, ErrorStack> {
    let mut ssl = Ssl::new(ctx)?;
    ssl.set_accept_state();
    // `mtu` was validated to 256..=65507 in DtlsConfig::validate.
    ssl.set_mtu(mtu as u32)?;
    // SAFETY: `ssl` is a valid, exclusively owned DTLS `SSL`; the callback
    // is a plain function with the C signature OpenSSL expects and touches
    // nothing. OpenSSL keeps it across SSL_clear (DTLSv1_listen calls it).
    unsafe { DTLS_set_timer_cb(ssl.as_ptr(), Some(park_timer)) };
    SslStream::new(ssl, Pipe::default())
}

/// Runs `DTLSv1_listen` on a fresh session whose pipe holds a ClientHello
/// with a cookie we already verified: OpenSSL consumes it and sets the
/// handshake/record sequence numbers as after a cookie exchange, so the
/// next `do_handshake` answers with ServerHello (message_seq 1). That state
/// cannot be set through any other public API.
pub(crate) fn listen(stream: &mut SslStream<Pipe>) -> bool {
    // SAFETY: BIO_ADDR_new returns an owned, zeroed address or null
    // (checked); DTLSv1_listen needs a non-null one to clear or fill and
    // does not keep it; it is freed once, below. The SSL pointer is valid
    // for the duration of the call (borrowed from `stream`), and its BIOs
    // are rust-openssl's stream BIO over `Pipe`, which is what
    // DTLSv1_listen reads the datagram from.
    let ok = unsafe {
        let addr = BIO_ADDR_new();
        if addr.is_null() {
            return false;
        }
        let r = DTLSv1_listen(stream.ssl().as_ptr(), addr);
        BIO_ADDR_free(addr);
        r == 1
    };
    if !ok {
        // Leave nothing on this thread's error queue for later calls.
        drop(ErrorStack::get());
    }
    ok
}

/// Whether OpenSSL's retransmission timer is armed, i.e. the last flight
/// this session sent still awaits the peer's answer.
pub(crate) fn timer_armed(ssl: &SslRef) -> bool {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    // SAFETY: DTLS_CTRL_GET_TIMEOUT writes one `struct timeval` through
    // `parg` (a valid, exclusive pointer to one for the whole call) and
    // returns 1 if the timer is armed, 0 otherwise; it keeps no pointer.
    let r: c_long = unsafe {
        ffi::SSL_ctrl(
            ssl.as_ptr(),
            DTLS_CTRL_GET_TIMEOUT,
            0,
            (&raw mut tv).cast::<std::ffi::c_void>(),
        )
    };
    r == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours() -> Vec<Vec<u8>> {
        vec![b"stun.turn".to_vec(), b"stun.nat-discovery".to_vec()]
    }

    #[test]
    fn alpn_selection_follows_our_preference_and_refuses_strangers() {
        let wire = b"\x02h2\x12stun.nat-discovery\x09stun.turn";
        assert_eq!(select_alpn(&ours(), wire), Some(&b"stun.turn"[..]));
        let wire = b"\x02h2\x12stun.nat-discovery";
        assert_eq!(select_alpn(&ours(), wire), Some(&b"stun.nat-discovery"[..]));
        assert_eq!(select_alpn(&ours(), b"\x02h2\x08http/1.1"), None);
        // Prefixes and malformed lists match nothing.
        assert_eq!(select_alpn(&ours(), b"\x04stun"), None);
        assert_eq!(select_alpn(&ours(), b"\x09stun.tur"), None);
        assert_eq!(select_alpn(&ours(), b"\x00\x09stun.turn"), None);
        assert_eq!(select_alpn(&ours(), b""), None);
    }
}
