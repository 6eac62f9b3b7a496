//! Draining: a shard that takes no new allocations while the ones it holds
//! run to their end ([`crate::Server::set_draining`]).
//!
//! Only a new Allocate is refused; Refresh, CreatePermission, ChannelBind,
//! data both ways, RFC 6062 connections and the retransmission of the
//! Allocate that made an allocation go on as before. The refusal comes
//! after authentication, signed like any answer to an authenticated
//! request:
//!
//! - **300 (Try Alternate) with ALTERNATE-SERVER** when an alternate of the
//!   client's address family is configured and the client came over UDP or
//!   TCP. RFC 8489 §14.8 allows 300 only in answer to a request with a
//!   valid MESSAGE-INTEGRITY, and requires it signed (an unauthenticated
//!   redirect would let anyone send a victim's clients elsewhere, and
//!   costs nothing to reflect). The alternates take turns (round robin per
//!   shard), as coturn's `alternate-server` list does.
//! - **508 (Insufficient Capacity), reason "Draining"** otherwise, as
//!   restund's drain module answers. RFC 8656 §7.4: the client "SHOULD
//!   wait at least 1 minute before trying to create any more allocations
//!   on this server", which is what a draining server wants; 403 (coturn's
//!   choice) reads as a refusal of the user, and 486 is about the user's
//!   own quota. Browsers treat all three alike: libwebrtc's `TurnPort`
//!   fails the port (`OnAllocateError`, an `icecandidateerror` with the
//!   code), Firefox's nICEr fails the TURN server on any error but
//!   401/438, and both keep the candidates of their other ICE servers,
//!   which they gather in parallel.
//!
//! TLS and DTLS clients always get the 508: an ALTERNATE-SERVER is an
//! address, and a client redirected by address can no longer check the
//! alternate's certificate against the name it was configured with
//! (libwebrtc replaces the server's host name with the address; RFC 8489's
//! ALTERNATE-DOMAIN would carry the name, but no browser reads it), and
//! the alternates' ports are those of plain TURN.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::packet::{Packet, Transport};

/// The reason phrase of the 508 a draining shard answers a new Allocate with.
pub const DRAINING_REASON: &str = "Draining";

/// How a draining shard answers a new Allocate: see the module
/// documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Draining {
    alternates: Arc<[SocketAddr]>,
}

impl Draining {
    /// Draining with these other relays to send UDP and TCP clients to
    /// (those of the client's address family; none: 508 for everyone).
    pub fn new(alternates: impl Into<Arc<[SocketAddr]>>) -> Self {
        Draining {
            alternates: alternates.into(),
        }
    }

    /// The other relays clients are sent to.
    pub fn alternates(&self) -> &[SocketAddr] {
        &self.alternates
    }

    /// The alternate for a new Allocate that arrived as `packet`, the next
    /// in turn after `cursor` (which moves past it): one of the family of
    /// the address the client reached, never that address itself (which
    /// would send the client back here). `None` for TLS and DTLS clients
    /// and when there is none.
    pub(crate) fn pick(&self, cursor: &mut usize, packet: &Packet<'_>) -> Option<SocketAddr> {
        if !matches!(packet.transport, Transport::Udp | Transport::Tcp) {
            return None;
        }
        let n = self.alternates.len();
        (0..n)
            .map(|i| (*cursor + i) % n)
            .find(|&i| {
                let a = self.alternates[i];
                a.is_ipv4() == packet.local.is_ipv4() && a != packet.local
            })
            .map(|i| {
                *cursor = (i + 1) % n;
                self.alternates[i]
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(transport: Transport, local: &str) -> Packet<'static> {
        Packet {
            transport,
            local: local.parse().unwrap(),
            remote: if local.starts_with('[') {
                "[2001:db8::7]:40000".parse().unwrap()
            } else {
                "198.51.100.7:40000".parse().unwrap()
            },
            data: &[],
        }
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn alternates_of_the_clients_family_take_turns() {
        let draining = Draining::new(addrs(&[
            "192.0.2.1:3478",
            "[2001:db8::1]:3478",
            "192.0.2.2:3478",
        ]));
        let v4 = packet(Transport::Udp, "192.0.2.10:3478");
        let v6 = packet(Transport::Tcp, "[2001:db8::10]:3478");
        let mut cursor = 0;
        let picked: Vec<_> = (0..4)
            .map(|_| draining.pick(&mut cursor, &v4).unwrap().to_string())
            .collect();
        assert_eq!(
            picked,
            [
                "192.0.2.1:3478",
                "192.0.2.2:3478",
                "192.0.2.1:3478",
                "192.0.2.2:3478"
            ]
        );
        assert_eq!(
            draining.pick(&mut cursor, &v6).unwrap().to_string(),
            "[2001:db8::1]:3478"
        );
    }

    #[test]
    fn no_alternate_for_secure_clients_another_family_or_ourselves() {
        let draining = Draining::new(addrs(&["192.0.2.1:3478", "192.0.2.10:3478"]));
        let mut cursor = 0;
        for transport in [Transport::Tls, Transport::Dtls] {
            assert_eq!(
                draining.pick(&mut cursor, &packet(transport, "192.0.2.10:5349")),
                None
            );
        }
        assert_eq!(
            draining.pick(&mut cursor, &packet(Transport::Udp, "[2001:db8::10]:3478")),
            None
        );
        // The address the client reached is never its alternate.
        let ours = packet(Transport::Udp, "192.0.2.10:3478");
        for _ in 0..3 {
            assert_eq!(
                draining.pick(&mut cursor, &ours).unwrap().to_string(),
                "192.0.2.1:3478"
            );
        }
        assert_eq!(
            Draining::default().pick(&mut cursor, &ours),
            None,
            "no alternates"
        );
    }
}
