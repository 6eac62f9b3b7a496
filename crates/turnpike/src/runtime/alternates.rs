//! Where this relay sends a new Allocate it will not take (300 with
//! ALTERNATE-SERVER, [`turnpike_core::drain`]): while it drains, and when it
//! is at its capacity (`turn.total_quota`).
//!
//! Two sources, merged: `drain.alternate_servers` (static, plain TURN
//! addresses, replaced by a reload) and, when this relay runs the fleet
//! view of `[discovery]` ([`turnpike_fleet`]), the relays of the fleet that
//! are up, not draining and have room, never this relay itself. The fleet's
//! part follows every change of its snapshot ([`follow_fleet`]), so a full
//! or draining relay stops being an alternate within a probe interval, and
//! two full relays cannot send clients back and forth.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{mpsc, watch};
use turnpike_core::{Alternate, Draining};
use turnpike_fleet::{Fleet, RelayStatus, Snapshot, Transport};

use super::queries::{Query, ask_all};

/// How often the fleet's snapshot is read even without a change notice.
const RECHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// The alternates of both sources.
#[derive(Debug, Default)]
pub(crate) struct Alternates {
    configured: Mutex<Vec<SocketAddr>>,
    fleet: Mutex<Vec<Alternate>>,
}

impl Alternates {
    /// With `drain.alternate_servers`.
    pub(crate) fn new(configured: Vec<SocketAddr>) -> Self {
        Alternates {
            configured: Mutex::new(configured),
            fleet: Mutex::default(),
        }
    }

    /// A reload's `drain.alternate_servers`.
    pub(crate) fn set_configured(&self, configured: Vec<SocketAddr>) {
        *self
            .configured
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = configured;
    }

    /// What the workers refuse with now: the configured ones first, then
    /// the fleet's.
    pub(crate) fn current(&self) -> Draining {
        let configured = self
            .configured
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let fleet = self
            .fleet
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Draining::with(configured.into_iter().map(Alternate::plain).chain(fleet))
    }
}

/// This relay's own addresses, which are never its alternates: the IPs it
/// listens on or advertises (the host's, for wildcard listeners) with the
/// ports it serves.
#[derive(Debug, Clone)]
pub(crate) struct Own {
    /// Ports of its STUN/TURN and TLS listeners.
    pub(crate) ports: Vec<u16>,
    /// IPs it listens on or advertises.
    pub(crate) ips: Vec<IpAddr>,
    /// The host's addresses, which wildcard listeners answer on.
    pub(crate) host: Option<watch::Receiver<Arc<[IpAddr]>>>,
}

impl Own {
    fn is_self(&self, address: SocketAddr) -> bool {
        let ip = address.ip().to_canonical();
        self.ports.contains(&address.port())
            && (self.ips.contains(&ip)
                || self.host.as_ref().is_some_and(|h| h.borrow().contains(&ip)))
    }
}

/// The fleet's relays a client may be sent to, as the core takes them:
/// serving, with room, not this relay; the plain address at the relay's
/// first address (UDP, else TCP endpoint), and the TLS address with the
/// relay's name when the name is a DNS name a certificate can carry.
pub(crate) fn fleet_alternates(snapshot: &Snapshot, own: &Own) -> Vec<Alternate> {
    snapshot
        .relays
        .iter()
        .filter(|r| r.is_serving() && r.has_room())
        .filter_map(|r| alternate(r, own))
        .collect()
}

fn alternate(status: &RelayStatus, own: &Own) -> Option<Alternate> {
    let relay = &status.relay;
    let ip = *relay.addresses.first()?;
    let port_of = |transport: Transport| {
        relay
            .endpoints
            .iter()
            .find(|e| e.transport == transport)
            .map(|e| e.port)
    };
    let plain = port_of(Transport::Udp)
        .or_else(|| port_of(Transport::Tcp))
        .map(|port| SocketAddr::new(ip, port));
    if plain.is_some_and(|a| own.is_self(a)) {
        return None;
    }
    let named = relay.name.parse::<IpAddr>().is_err();
    let tls = port_of(Transport::Tls)
        .filter(|_| named)
        .map(|port| (SocketAddr::new(ip, port), Arc::from(relay.name.as_str())));
    if tls.as_ref().is_some_and(|(a, _)| own.is_self(*a)) {
        return None;
    }
    (plain.is_some() || tls.is_some()).then_some(Alternate { plain, tls })
}

/// Keeps the workers' alternates to the fleet's, as each snapshot changes,
/// until the fleet stops.
pub(crate) async fn follow_fleet(
    fleet: Fleet,
    own: Own,
    alternates: Arc<Alternates>,
    workers: Vec<mpsc::UnboundedSender<Query>>,
) {
    loop {
        let fresh = fleet_alternates(&fleet.snapshot(), &own);
        let changed = {
            let mut current = alternates
                .fleet
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let changed = *current != fresh;
            *current = fresh;
            changed
        };
        if changed {
            let draining = alternates.current();
            tracing::debug!(
                alternates = draining.alternates().len(),
                "alternates from the fleet"
            );
            ask_all(&workers, |reply| Query::Alternates {
                alternates: draining.clone(),
                reply,
            })
            .await;
        }
        if fleet.is_stopped() {
            return;
        }
        // A change published between the read above and this wait would
        // be missed until the next: look again every few seconds anyway.
        let _ = tokio::time::timeout(RECHECK, fleet.changed()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use turnpike_fleet::{Endpoint, Health, Relay, Source};

    fn status(name: &str, ip: &str, endpoints: &[(Transport, u16)]) -> RelayStatus {
        RelayStatus {
            relay: Relay {
                name: name.into(),
                source: Source::Dns,
                endpoints: endpoints
                    .iter()
                    .map(|&(transport, port)| Endpoint {
                        transport,
                        host: name.into(),
                        port,
                        priority: 10,
                        weight: 10,
                    })
                    .collect(),
                addresses: vec![ip.parse().unwrap()],
            },
            health: Health::Healthy,
            draining: false,
            last_probe: None,
            last_error: None,
            allocations: Some(1),
            capacity: Some(10),
            consecutive_failures: 0,
            consecutive_successes: 2,
        }
    }

    #[test]
    fn only_serving_relays_with_room_other_than_this_one() {
        let own = Own {
            ports: vec![3478, 5349],
            ips: vec!["192.0.2.1".parse().unwrap()],
            host: None,
        };
        let both = [(Transport::Udp, 3478), (Transport::Tls, 5349)];
        let mut full = status("turn3.example.com", "192.0.2.3", &both);
        full.allocations = Some(10);
        let mut draining = status("turn4.example.com", "192.0.2.4", &both);
        draining.draining = true;
        let mut down = status("turn5.example.com", "192.0.2.5", &both);
        down.health = Health::Unhealthy;
        let snapshot = Snapshot {
            relays: vec![
                status("turn1.example.com", "192.0.2.1", &both),
                status("turn2.example.com", "192.0.2.2", &both),
                full,
                draining,
                down,
                status("192.0.2.6", "192.0.2.6", &both),
            ],
            dns: Default::default(),
            registry: Default::default(),
            probing: true,
        };
        let alternates = fleet_alternates(&snapshot, &own);
        assert_eq!(
            alternates,
            [
                Alternate {
                    plain: Some("192.0.2.2:3478".parse().unwrap()),
                    tls: Some((
                        "192.0.2.2:5349".parse().unwrap(),
                        Arc::from("turn2.example.com")
                    )),
                },
                // Known by address only: no name for a TLS client to check.
                Alternate::plain("192.0.2.6:3478".parse().unwrap()),
            ]
        );
    }
}
