//! [`DtlsConfig`]: certificate, limits and timeouts of one [`DtlsServer`](crate::DtlsServer).

use std::fmt;
use std::time::Duration;

use crate::DtlsError;

/// Smallest MTU OpenSSL accepts for DTLS (`SSL_set_mtu` refuses less).
pub const MIN_MTU: usize = 256;
/// Largest UDP payload over IPv4 (65535 − 8 UDP − 20 IP header bytes).
pub const MAX_MTU: usize = 65_507;

/// Configuration of one [`DtlsServer`](crate::DtlsServer).
///
/// The fields are public so a runtime can fill them from its own config;
/// [`DtlsConfig::new`] gives the defaults documented on each field.
/// `Debug` never prints the private key or the cookie secret.
#[derive(Clone)]
pub struct DtlsConfig {
    /// PEM: the leaf certificate first, then intermediates (sent to clients
    /// in this order).
    pub chain_pem: Vec<u8>,
    /// PEM private key of the leaf: RSA or ECDSA, PKCS#8 (`BEGIN PRIVATE
    /// KEY`), PKCS#1 (`BEGIN RSA PRIVATE KEY`) or SEC1 (`BEGIN EC PRIVATE
    /// KEY`); not encrypted.
    pub key_pem: Vec<u8>,
    /// Handshakes in progress (after the cookie exchange) on this server.
    /// Default 1024; splitting a global budget across workers is the
    /// caller's business.
    pub max_half_open_total: usize,
    /// Handshakes in progress per source IP. Default 8.
    pub max_half_open_per_ip: usize,
    /// IPv6 sources are counted per prefix of this many bits for the
    /// per-IP caps (1 to 128; default 64: a host is given a whole /64).
    pub ipv6_prefix: u8,
    /// Handshakes (cookie-valid ClientHellos) one source may start per
    /// second; more are dropped until the next second. Default 100 (a TLS 1.2 ECDSA handshake costs about a millisecond of CPU).
    pub max_handshakes_per_ip_per_second: u16,
    /// Established plus half-open sessions per source IP; 0 = unlimited
    /// (the default: many clients share one NAT address).
    pub max_sessions_per_ip: usize,
    /// Time allowed for the whole handshake after the cookie exchange.
    /// Default 10 s.
    pub handshake_timeout: Duration,
    /// An established session that receives no application data for this
    /// long is dropped. Default 10 min; it must exceed the TURN refresh
    /// interval of quiet clients.
    pub idle_timeout: Duration,
    /// Largest datagram of a handshake flight: handshake messages are
    /// fragmented to fit it (no path-MTU discovery). Default 1200, the
    /// usual WebRTC value. Application data is not bound by it: each
    /// message is one record of up to 2^14 bytes (a STUN or ChannelData
    /// message cannot span records), sent as one datagram, which IP
    /// fragments past the path MTU as it would a plain UDP datagram of that
    /// size.
    pub mtu: usize,
    /// HMAC-SHA256 key for the stateless cookies. Random per deployment;
    /// workers of one process should share it (a cookie from one worker is
    /// then valid on the others).
    pub cookie_secret: [u8; 32],
    /// ALPN protocol IDs (RFC 7301) the server accepts, in its order of
    /// preference. Default `stun.turn` and `stun.nat-discovery` (RFC 7443).
    /// A client that offers ALPN but none of these is refused with a fatal
    /// no_application_protocol alert (120), as the TLS side does; a client
    /// that offers no ALPN at all is accepted. Empty: ALPN is ignored and
    /// nothing is negotiated. Each ID is 1 to 255 bytes.
    pub alpn_protocols: Vec<Vec<u8>>,
}

/// ALPN protocol ID for TURN (RFC 7443).
pub const ALPN_STUN_TURN: &[u8] = b"stun.turn";
/// ALPN protocol ID for STUN NAT behaviour discovery (RFC 7443).
pub const ALPN_STUN_NAT_DISCOVERY: &[u8] = b"stun.nat-discovery";

impl DtlsConfig {
    /// A configuration with the default limits and timeouts.
    pub fn new(chain_pem: Vec<u8>, key_pem: Vec<u8>, cookie_secret: [u8; 32]) -> Self {
        DtlsConfig {
            chain_pem,
            key_pem,
            max_half_open_total: 1024,
            max_half_open_per_ip: 8,
            ipv6_prefix: 64,
            max_handshakes_per_ip_per_second: 100,
            max_sessions_per_ip: 0,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(600),
            mtu: 1200,
            cookie_secret,
            alpn_protocols: vec![ALPN_STUN_TURN.to_vec(), ALPN_STUN_NAT_DISCOVERY.to_vec()],
        }
    }

    pub(crate) fn validate(&self) -> Result<(), DtlsError> {
        if self.max_half_open_total == 0 {
            return Err(DtlsError::Config("max_half_open_total must be at least 1"));
        }
        if self.max_half_open_per_ip == 0 {
            return Err(DtlsError::Config("max_half_open_per_ip must be at least 1"));
        }
        if self.max_handshakes_per_ip_per_second == 0 {
            return Err(DtlsError::Config(
                "max_handshakes_per_ip_per_second must be at least 1",
            ));
        }
        if !(1..=128).contains(&self.ipv6_prefix) {
            return Err(DtlsError::Config("ipv6_prefix must be between 1 and 128"));
        }
        if self.handshake_timeout.is_zero() {
            return Err(DtlsError::Config("handshake_timeout must not be zero"));
        }
        // OpenSSL's own DTLS timer is parked at OPENSSL_TIMER_PARK (one hour,
        // see ossl.rs); a longer handshake would let it fire on its own.
        if self.handshake_timeout > Duration::from_secs(600) {
            return Err(DtlsError::Config(
                "handshake_timeout must be at most 10 minutes",
            ));
        }
        if self.idle_timeout.is_zero() {
            return Err(DtlsError::Config("idle_timeout must not be zero"));
        }
        // Deadlines are `Instant + Duration`; a week keeps them far from
        // overflow whatever the platform's Instant range is.
        if self.idle_timeout > Duration::from_secs(7 * 86_400) {
            return Err(DtlsError::Config("idle_timeout must be at most 7 days"));
        }
        if !(MIN_MTU..=MAX_MTU).contains(&self.mtu) {
            return Err(DtlsError::Config("mtu must be between 256 and 65507"));
        }
        // The wire format (RFC 7301 §3.1) prefixes each ID with one length
        // byte, and an empty ID is not a protocol.
        if self
            .alpn_protocols
            .iter()
            .any(|p| p.is_empty() || p.len() > 255)
        {
            return Err(DtlsError::Config(
                "each ALPN protocol ID must be 1 to 255 bytes",
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for DtlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsConfig")
            .field(
                "chain_pem",
                &format_args!("<{} bytes>", self.chain_pem.len()),
            )
            .field("key_pem", &format_args!("<redacted>"))
            .field("max_half_open_total", &self.max_half_open_total)
            .field("max_half_open_per_ip", &self.max_half_open_per_ip)
            .field("max_sessions_per_ip", &self.max_sessions_per_ip)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("mtu", &self.mtu)
            .field("ipv6_prefix", &self.ipv6_prefix)
            .field(
                "alpn_protocols",
                &self
                    .alpn_protocols
                    .iter()
                    .map(|p| String::from_utf8_lossy(p))
                    .collect::<Vec<_>>(),
            )
            .field("cookie_secret", &format_args!("<redacted>"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_secrets() {
        let cfg = DtlsConfig::new(b"chain".to_vec(), b"SECRETKEY".to_vec(), [0xAB; 32]);
        let text = format!("{cfg:?}");
        assert!(!text.contains("SECRETKEY"), "{text}");
        assert!(!text.contains("171"), "{text}"); // 0xAB
        assert!(text.contains("redacted"), "{text}");
    }

    #[test]
    fn validation() {
        let ok = DtlsConfig::new(Vec::new(), Vec::new(), [0; 32]);
        assert!(ok.validate().is_ok());
        let mut c = ok.clone();
        c.mtu = 255;
        assert!(matches!(c.validate(), Err(DtlsError::Config(_))));
        c.mtu = 65_508;
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.max_half_open_total = 0;
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.idle_timeout = Duration::ZERO;
        assert!(c.validate().is_err());
        c.idle_timeout = Duration::MAX;
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.alpn_protocols.push(Vec::new());
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.alpn_protocols = vec![vec![b'x'; 256]];
        assert!(c.validate().is_err());
        let mut c = ok;
        c.handshake_timeout = Duration::from_secs(3600);
        assert!(c.validate().is_err());
    }
}
