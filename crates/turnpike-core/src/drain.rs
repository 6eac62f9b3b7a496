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
//! TLS clients are sent to an alternate's TLS address only when its name
//! is known (a relay of the fleet, [`Alternate::tls`]): the answer then
//! carries ALTERNATE-DOMAIN (RFC 8489 §14.16) with that name, so a client
//! can still check the alternate's certificate against it. Otherwise, and
//! always for DTLS clients, they get the 508: an ALTERNATE-SERVER alone is
//! an address, and a client redirected by address could no longer check
//! the certificate against the name it was configured with.
//!
//! A shard at its capacity (`turn.total_quota`) sends a new Allocate to an
//! alternate the same way (300), and answers 508 when there is none
//! ([`crate::Server::set_alternates`]). The runtime keeps the list to
//! relays of the fleet that are up, not draining and have room, never
//! this server, so a client is not sent round in a loop.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::packet::{Packet, Transport};

/// The reason phrase of the 508 a draining shard answers a new Allocate with.
pub const DRAINING_REASON: &str = "Draining";

/// Another relay clients can be sent to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alternate {
    /// Its plain TURN address (UDP and TCP clients), if it serves plain
    /// TURN.
    pub plain: Option<SocketAddr>,
    /// Its TURN-over-TLS address and the name its certificate carries
    /// (sent as ALTERNATE-DOMAIN), if known.
    pub tls: Option<(SocketAddr, Arc<str>)>,
}

impl Alternate {
    /// An alternate known by its plain TURN address only
    /// (`drain.alternate_servers`).
    pub fn plain(address: SocketAddr) -> Self {
        Alternate {
            plain: Some(address),
            tls: None,
        }
    }
}

/// Where a client is sent: the ALTERNATE-SERVER, and the ALTERNATE-DOMAIN
/// for TLS clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// ALTERNATE-SERVER.
    pub address: SocketAddr,
    /// ALTERNATE-DOMAIN (TLS clients).
    pub domain: Option<Arc<str>>,
}

/// How a draining (or full) shard answers a new Allocate: see the module
/// documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Draining {
    alternates: Arc<[Alternate]>,
}

impl Draining {
    /// Draining with these other relays to send UDP and TCP clients to
    /// (those of the client's address family; none: 508 for everyone).
    pub fn new(alternates: impl IntoIterator<Item = SocketAddr>) -> Self {
        Draining::with(alternates.into_iter().map(Alternate::plain))
    }

    /// With these alternates (plain, TLS with their names, or both).
    pub fn with(alternates: impl IntoIterator<Item = Alternate>) -> Self {
        Draining {
            alternates: alternates.into_iter().collect(),
        }
    }

    /// The other relays clients are sent to.
    pub fn alternates(&self) -> &[Alternate] {
        &self.alternates
    }

    /// The alternate for a new Allocate that arrived as `packet`, the next
    /// in turn after `cursor` (which moves past it): one reachable over the
    /// client's transport, of the family of the address the client
    /// reached, never that address itself (which would send the client
    /// back here). `None` for DTLS clients and when there is none.
    pub(crate) fn pick(&self, cursor: &mut usize, packet: &Packet<'_>) -> Option<Redirect> {
        let target = |a: &Alternate| -> Option<Redirect> {
            let redirect = match packet.transport {
                Transport::Udp | Transport::Tcp => Redirect {
                    address: a.plain?,
                    domain: None,
                },
                Transport::Tls => {
                    let (address, name) = a.tls.as_ref()?;
                    Redirect {
                        address: *address,
                        domain: Some(Arc::clone(name)),
                    }
                }
                Transport::Dtls => return None,
            };
            (redirect.address.is_ipv4() == packet.local.is_ipv4()
                && redirect.address != packet.local)
                .then_some(redirect)
        };
        let n = self.alternates.len();
        (0..n)
            .map(|i| (*cursor + i) % n)
            .find_map(|i| target(&self.alternates[i]).map(|r| (i, r)))
            .map(|(i, redirect)| {
                *cursor = (i + 1) % n;
                redirect
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
            .map(|_| draining.pick(&mut cursor, &v4).unwrap().address.to_string())
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
            draining.pick(&mut cursor, &v6).unwrap().address.to_string(),
            "[2001:db8::1]:3478"
        );
    }

    #[test]
    fn no_plain_alternate_for_secure_clients_another_family_or_ourselves() {
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
                draining
                    .pick(&mut cursor, &ours)
                    .unwrap()
                    .address
                    .to_string(),
                "192.0.2.1:3478"
            );
        }
        assert_eq!(
            Draining::default().pick(&mut cursor, &ours),
            None,
            "no alternates"
        );
    }

    #[test]
    fn tls_clients_go_to_named_alternates_with_their_domain() {
        let tls_alt: SocketAddr = "192.0.2.3:5349".parse().unwrap();
        let draining = Draining::with([
            Alternate::plain("192.0.2.1:3478".parse().unwrap()),
            Alternate {
                plain: Some("192.0.2.3:3478".parse().unwrap()),
                tls: Some((tls_alt, Arc::from("turn3.example.com"))),
            },
        ]);
        let mut cursor = 0;
        let tls = draining
            .pick(&mut cursor, &packet(Transport::Tls, "192.0.2.10:5349"))
            .unwrap();
        assert_eq!(tls.address, tls_alt);
        assert_eq!(tls.domain.as_deref(), Some("turn3.example.com"));
        assert_eq!(
            draining.pick(&mut cursor, &packet(Transport::Dtls, "192.0.2.10:5349")),
            None
        );
        // UDP clients get plain addresses, without a domain.
        let udp = draining
            .pick(&mut cursor, &packet(Transport::Udp, "192.0.2.10:3478"))
            .unwrap();
        assert_eq!(udp.domain, None);
    }
}
