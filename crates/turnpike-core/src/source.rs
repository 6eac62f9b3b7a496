//! Which client addresses count as one source for per-source limits
//! (connections, challenges, held credential lookups, DTLS handshakes).
//!
//! An IPv4 address is one source. An IPv6 host is usually given a whole
//! /64 (RFC 6177 recommends /48 to /56 per site, a /64 per link), so
//! counting per /128 would give one host 2^64 budgets: IPv6 addresses are
//! counted per prefix, /64 by default. IPv4-mapped IPv6 addresses are
//! counted as the IPv4 address they stand for.

use std::net::{IpAddr, Ipv6Addr};

/// Maps a client address to the key its per-source limits are counted
/// under: the IPv4 address, or the IPv6 address cut to its prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourcePrefix {
    ipv6_bits: u8,
}

impl SourcePrefix {
    /// The default: IPv6 clients counted per /64.
    pub const DEFAULT_IPV6_BITS: u8 = 64;

    /// IPv6 addresses counted per prefix of `ipv6_bits` bits (clamped to
    /// 1..=128; 128 counts each address on its own).
    pub const fn new(ipv6_bits: u8) -> Self {
        let ipv6_bits = if ipv6_bits == 0 {
            1
        } else if ipv6_bits > 128 {
            128
        } else {
            ipv6_bits
        };
        SourcePrefix { ipv6_bits }
    }

    /// The prefix length IPv6 sources are counted by.
    pub const fn ipv6_bits(self) -> u8 {
        self.ipv6_bits
    }

    /// The source `ip` belongs to.
    pub fn key(self, ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let mask = u128::MAX << (128 - u32::from(self.ipv6_bits));
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
            v4 => v4,
        }
    }
}

impl Default for SourcePrefix {
    fn default() -> Self {
        SourcePrefix::new(SourcePrefix::DEFAULT_IPV6_BITS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_counts_per_prefix_ipv4_per_address() {
        let p = SourcePrefix::default();
        assert_eq!(p.key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            p.key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            p.key(ip("2001:db8:1:2::7"))
        );
        assert_ne!(p.key(ip("2001:db8:1:3::1")), p.key(ip("2001:db8:1:2::1")));
        assert_eq!(p.key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(p.key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(
            SourcePrefix::new(128).key(ip("2001:db8::1")),
            ip("2001:db8::1")
        );
        assert_eq!(
            SourcePrefix::new(48).key(ip("2001:db8:1:2::1")),
            ip("2001:db8:1::")
        );
        assert_eq!(SourcePrefix::new(0).ipv6_bits(), 1);
        assert_eq!(SourcePrefix::new(200).ipv6_bits(), 128);
    }
}
