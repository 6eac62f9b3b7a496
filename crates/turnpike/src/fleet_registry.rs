//! The shared database as the fleet's registry (`[fleet]`,
//! `discovery.database`), over [`turnpike_store`]'s `fleet_relays` rows:
//!
//! - [`Heartbeat`]: a relay with `fleet.register` writes its row (public
//!   addresses, listeners, allocations, capacity, draining, version) every
//!   `fleet.heartbeat_interval`, and at once when it starts or stops
//!   draining; it deletes the rows of relays gone silent for
//!   `fleet.expire_after`; at a clean exit [`Heartbeat::withdraw`] deletes
//!   its own row.
//! - [`StoreRegistry`]: the [`turnpike_fleet::Registry`] the ICE endpoint
//!   (and a relay's own fleet view, for its alternates) lists the rows
//!   seen within `fleet.expire_after` through.
//!
//! Everything here runs on the control runtime; the workers are only asked
//! for their allocation count, as the admin endpoint asks them. A database
//! that is down costs one log line per outage, never a wait on the packet
//! path.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use turnpike_fleet::registry::ListFuture;
use turnpike_fleet::{Endpoint, Registered, Registry, Relay, Source, Transport};
use turnpike_store::{
    RegisteredEndpoint, RegisteredRelay, RegisteredTransport, RelayRegistration, Store,
};

use crate::config::Settings;
use crate::runtime::RelayHandle;

/// `fleet.heartbeat_interval` and `fleet.expire_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Between two heartbeats (and two listings).
    pub interval: Duration,
    /// A row older than this is ignored, then deleted.
    pub expire_after: Duration,
}

impl Timing {
    /// From `[fleet]`.
    pub fn from_settings(settings: &Settings) -> Timing {
        Timing {
            interval: Duration::from_secs(settings.fleet.heartbeat_interval.into()),
            expire_after: Duration::from_secs(settings.fleet.expire_after.into()),
        }
    }
}

/// The registered relays, as the fleet lists them.
#[derive(Debug)]
pub struct StoreRegistry {
    store: Store,
    expire_after: Duration,
}

impl StoreRegistry {
    /// Lists the rows of `store` seen within `timing.expire_after`.
    pub fn new(store: Store, timing: Timing) -> Self {
        StoreRegistry {
            store,
            expire_after: timing.expire_after,
        }
    }
}

impl Registry for StoreRegistry {
    fn list(&self) -> ListFuture<'_> {
        Box::pin(async move {
            let rows = self
                .store
                .registered_relays(self.expire_after)
                .await
                .map_err(|e| e.to_string())?;
            Ok(rows.into_iter().map(registered).collect())
        })
    }
}

/// A row as the fleet knows relays: its TURN endpoints under its name
/// (DTLS is left out: no browser speaks TURN over DTLS).
fn registered(row: RegisteredRelay) -> Registered {
    let r = row.registration;
    let mut endpoints: Vec<Endpoint> = Vec::new();
    for e in &r.endpoints {
        let transport = match e.transport {
            RegisteredTransport::Udp => Transport::Udp,
            RegisteredTransport::Tcp => Transport::Tcp,
            RegisteredTransport::Tls => Transport::Tls,
            RegisteredTransport::Dtls => continue,
        };
        let endpoint = Endpoint {
            transport,
            host: r.name.clone(),
            port: e.port,
            priority: 0,
            weight: 1,
        };
        if !endpoints.contains(&endpoint) {
            endpoints.push(endpoint);
        }
    }
    Registered {
        relay: Relay {
            name: r.name,
            source: Source::Database,
            endpoints,
            addresses: r.addresses,
        },
        allocations: r.allocations,
        capacity: r.capacity,
        draining: r.draining,
    }
}

/// What the relay serves on, for its row.
#[derive(Debug, Clone, Default)]
pub struct Listeners {
    /// The STUN/TURN listeners.
    pub stun: Vec<SocketAddr>,
    /// Whether they take UDP and TCP.
    pub udp: bool,
    pub tcp: bool,
    /// TLS and DTLS listeners (empty without a certificate).
    pub tls: Vec<SocketAddr>,
    pub dtls: Vec<SocketAddr>,
}

/// The row's fixed part: where clients reach this relay. The addresses are
/// what clients are told elsewhere too: `turn.external_ips` (the public
/// side of a NAT), else the listeners' own IPs, else, for wildcard
/// listeners, the host's (`host`) other than loopback and link-local. The
/// id is the first address with the first listener's port: unique among
/// relays that can all be reached, and the same after a restart.
pub fn registration(
    settings: &Settings,
    listeners: &Listeners,
    host: &[IpAddr],
) -> Result<RelayRegistration, String> {
    let mut addresses: Vec<IpAddr> = Vec::new();
    let external: Vec<IpAddr> = settings
        .turn
        .external_ips
        .iter()
        .map(|e| e.public)
        .collect();
    let listening: Vec<IpAddr> = listeners
        .stun
        .iter()
        .chain(&listeners.tls)
        .chain(&listeners.dtls)
        .map(SocketAddr::ip)
        .filter(|ip| !ip.is_unspecified())
        .collect();
    let candidates = if !external.is_empty() {
        external
    } else if !listening.is_empty() {
        listening
    } else {
        host.iter()
            .copied()
            .filter(|ip| !ip.is_loopback() && !ip.is_unspecified() && !is_link_local(*ip))
            .collect()
    };
    for ip in candidates.into_iter().map(|ip| ip.to_canonical()) {
        if !addresses.contains(&ip) {
            addresses.push(ip);
        }
    }
    addresses.sort_by_key(IpAddr::is_ipv6);
    addresses.truncate(turnpike_fleet::MAX_ADDRESSES);
    let mut endpoints: Vec<RegisteredEndpoint> = Vec::new();
    let mut add = |transport, addrs: &[SocketAddr]| {
        for a in addrs {
            let e = RegisteredEndpoint {
                transport,
                port: a.port(),
            };
            if !endpoints.contains(&e) {
                endpoints.push(e);
            }
        }
    };
    if listeners.udp {
        add(RegisteredTransport::Udp, &listeners.stun);
    }
    if listeners.tcp {
        add(RegisteredTransport::Tcp, &listeners.stun);
    }
    add(RegisteredTransport::Tls, &listeners.tls);
    add(RegisteredTransport::Dtls, &listeners.dtls);
    let (Some(&first), Some(port)) = (addresses.first(), endpoints.first().map(|e| e.port)) else {
        return Err(
            "fleet.register: this relay has no address clients can reach (only wildcard or loopback listeners and no turn.external_ips); set turn.external_ips or listen on a public address".to_owned(),
        );
    };
    let name = match settings.fleet.name.trim() {
        "" => first.to_string(),
        name => name.to_owned(),
    };
    Ok(RelayRegistration {
        id: SocketAddr::new(first, port).to_string(),
        name,
        addresses,
        endpoints,
        allocations: 0,
        capacity: (settings.turn.total_quota > 0).then_some(u64::from(settings.turn.total_quota)),
        draining: false,
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }
}

/// This relay's heartbeat.
#[derive(Debug)]
pub struct Heartbeat {
    store: Store,
    row: RelayRegistration,
    timing: Timing,
    relay: RelayHandle,
    /// Heartbeats that failed (`turnpike_fleet_heartbeat_failures_total`).
    failures: Arc<AtomicU64>,
}

/// The longest a heartbeat waits for the database: a stuck write must not
/// hold back the next one, nor the exit.
fn write_timeout(timing: Timing) -> Duration {
    timing
        .interval
        .clamp(Duration::from_secs(1), Duration::from_secs(5))
}

impl Heartbeat {
    /// The heartbeat of `relay` with the fixed part `row`, counting its
    /// failures in `failures`.
    pub fn new(
        store: Store,
        row: RelayRegistration,
        timing: Timing,
        relay: RelayHandle,
        failures: Arc<AtomicU64>,
    ) -> Self {
        Heartbeat {
            store,
            row,
            timing,
            relay,
            failures,
        }
    }

    /// The id of the row written.
    pub fn id(&self) -> &str {
        &self.row.id
    }

    /// Writes the row every interval, and at once when draining starts or
    /// stops; runs until aborted.
    pub async fn run(mut self) {
        tracing::info!(
            id = %self.row.id,
            name = %self.row.name,
            interval_seconds = self.timing.interval.as_secs(),
            "registering in the database (fleet.register)"
        );
        let mut next = tokio::time::Instant::now();
        let mut written_draining: Option<bool> = None;
        let mut failing = false;
        let mut last_cleanup = tokio::time::Instant::now();
        loop {
            let changed = self.relay.changes();
            tokio::pin!(changed);
            // Registered before the check: a drain starting between the
            // check and the wait is not missed.
            changed.as_mut().enable();
            let now = tokio::time::Instant::now();
            if now >= next || written_draining != Some(self.relay.is_draining()) {
                let state = self.relay.drain_state().await;
                self.row.allocations = state.allocations;
                self.row.draining = state.draining;
                // Even a failed write counts as written here: the timer
                // retries, so a database that is down is not hammered.
                written_draining = Some(state.draining);
                next = now + self.timing.interval;
                let result = tokio::time::timeout(
                    write_timeout(self.timing),
                    self.store.heartbeat(&self.row),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(turnpike_store::StoreError::Unavailable(format!(
                        "no answer within {:?}",
                        write_timeout(self.timing)
                    )))
                });
                match result {
                    Ok(()) if failing => {
                        failing = false;
                        tracing::info!(id = %self.row.id, "heartbeat written again");
                    }
                    Ok(()) => {}
                    Err(e) => {
                        self.failures.fetch_add(1, Ordering::Relaxed);
                        if !failing {
                            failing = true;
                            tracing::warn!(
                                id = %self.row.id,
                                "heartbeat failed, retrying every {} s (ICE endpoints drop this relay after {} s): {e}",
                                self.timing.interval.as_secs(),
                                self.timing.expire_after.as_secs()
                            );
                        }
                    }
                }
                if !failing && now.duration_since(last_cleanup) >= self.timing.expire_after {
                    last_cleanup = now;
                    self.clean_up().await;
                }
            }
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                () = changed => {}
            }
        }
    }

    /// Deletes the rows of relays silent for `expire_after` (which every
    /// listing ignores already): a relay killed without its clean exit.
    async fn clean_up(&self) {
        let expire = self.store.expire_relays(self.timing.expire_after);
        match tokio::time::timeout(write_timeout(self.timing), expire).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(rows = n, "deleted the rows of relays gone silent"),
            Ok(Err(e)) => tracing::debug!("cannot delete the rows of silent relays: {e}"),
            Err(_) => tracing::debug!("deleting the rows of silent relays took too long"),
        }
    }

    /// Deletes this relay's row (a clean exit), waiting for the database a
    /// few seconds at most.
    pub async fn withdraw(store: &Store, id: &str, timing: Timing) {
        match tokio::time::timeout(write_timeout(timing), store.withdraw_relay(id)).await {
            Ok(Ok(_)) => tracing::info!(id, "withdrawn from the database"),
            Ok(Err(e)) => tracing::warn!(
                id,
                "cannot withdraw from the database (ICE endpoints drop this relay after {} s): {e}",
                timing.expire_after.as_secs()
            ),
            Err(_) => tracing::warn!(
                id,
                "the database did not answer the withdrawal (ICE endpoints drop this relay after {} s)",
                timing.expire_after.as_secs()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listeners(stun: &[&str], tls: &[&str]) -> Listeners {
        Listeners {
            stun: stun.iter().map(|a| a.parse().unwrap()).collect(),
            udp: true,
            tcp: true,
            tls: tls.iter().map(|a| a.parse().unwrap()).collect(),
            dtls: vec![],
        }
    }

    #[test]
    fn the_row_names_public_addresses_and_every_listener() {
        let mut settings = Settings::default();
        settings.turn.total_quota = 500;
        let host: Vec<IpAddr> = [
            "127.0.0.1",
            "169.254.1.1",
            "fe80::1",
            "2001:db8::5",
            "192.0.2.5",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        // Wildcard listeners: the host's routable addresses, IPv4 first.
        let r = registration(
            &settings,
            &listeners(&["0.0.0.0:3478", "[::]:3478"], &["0.0.0.0:5349"]),
            &host,
        )
        .unwrap();
        assert_eq!(r.id, "192.0.2.5:3478");
        assert_eq!(r.name, "192.0.2.5");
        assert_eq!(
            r.addresses,
            [
                "192.0.2.5".parse::<IpAddr>().unwrap(),
                "2001:db8::5".parse().unwrap()
            ]
        );
        let endpoints: Vec<(&str, u16)> = r
            .endpoints
            .iter()
            .map(|e| (e.transport.as_str(), e.port))
            .collect();
        assert_eq!(endpoints, [("udp", 3478), ("tcp", 3478), ("tls", 5349)]);
        assert_eq!(r.capacity, Some(500));
        assert_eq!(r.version, env!("CARGO_PKG_VERSION"));

        // A listener's own IP wins over the host's; external IPs over both.
        let r = registration(&settings, &listeners(&["127.0.0.2:3480"], &[]), &host).unwrap();
        assert_eq!(
            (r.id.as_str(), r.name.as_str()),
            ("127.0.0.2:3480", "127.0.0.2")
        );
        settings.turn.external_ips =
            vec![crate::config::values::parse_external_ip("203.0.113.9/10.0.0.9").unwrap()];
        settings.fleet.name = "turn9.example.com".into();
        settings.turn.total_quota = 0;
        let r = registration(&settings, &listeners(&["10.0.0.9:3478"], &[]), &host).unwrap();
        assert_eq!(r.id, "203.0.113.9:3478");
        assert_eq!(r.name, "turn9.example.com");
        assert_eq!(r.capacity, None);

        // Nothing reachable: one line saying what to set.
        settings.turn.external_ips.clear();
        let e = registration(&settings, &listeners(&["0.0.0.0:3478"], &[]), &[]).unwrap_err();
        assert!(e.contains("turn.external_ips"), "{e}");
    }

    #[test]
    fn a_row_becomes_a_relay_with_its_turn_endpoints() {
        let row = RegisteredRelay {
            registration: RelayRegistration {
                id: "192.0.2.5:3478".into(),
                name: "turn5.example.com".into(),
                addresses: vec!["192.0.2.5".parse().unwrap()],
                endpoints: [
                    (RegisteredTransport::Udp, 3478),
                    (RegisteredTransport::Dtls, 5349),
                    (RegisteredTransport::Tls, 5349),
                ]
                .into_iter()
                .map(|(transport, port)| RegisteredEndpoint { transport, port })
                .collect(),
                allocations: 7,
                capacity: Some(10),
                draining: true,
                version: "0.1.0".into(),
            },
            age: Duration::from_secs(1),
        };
        let r = registered(row);
        assert_eq!(r.relay.source, Source::Database);
        let urls: Vec<String> = r.relay.endpoints.iter().map(Endpoint::url).collect();
        assert_eq!(
            urls,
            [
                "turn:turn5.example.com:3478?transport=udp",
                "turns:turn5.example.com:5349?transport=tcp"
            ]
        );
        assert_eq!((r.allocations, r.capacity, r.draining), (7, Some(10), true));
    }
}
