//! Registered relays as a discovery source: a [`Registry`] over a list the
//! test changes, beside a static relay, without probes.

mod common;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use common::wait_for;
use turnpike_fleet::registry::ListFuture;
use turnpike_fleet::{
    Endpoint, Fleet, FleetConfig, Health, Registered, Registry, Relay, Snapshot, Source, Transport,
};

/// What the next listings return.
#[derive(Debug)]
struct Rows(Mutex<Result<Vec<Registered>, String>>);

impl Rows {
    fn new(rows: Vec<Registered>) -> Self {
        Rows(Mutex::new(Ok(rows)))
    }

    fn set(&self, rows: Result<Vec<Registered>, String>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = rows;
    }
}

impl Registry for Rows {
    fn list(&self) -> ListFuture<'_> {
        let rows = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Box::pin(async move { rows })
    }
}

fn row(name: &str, allocations: u64, draining: bool) -> Registered {
    Registered {
        relay: Relay {
            name: name.into(),
            source: Source::Database,
            endpoints: vec![Endpoint {
                transport: Transport::Udp,
                host: name.into(),
                port: 3478,
                priority: 0,
                weight: 1,
            }],
            addresses: vec!["192.0.2.9".parse().unwrap()],
        },
        allocations,
        capacity: Some(100),
        draining,
    }
}

fn registered(s: &Snapshot) -> Vec<&str> {
    s.relays
        .iter()
        .filter(|r| r.relay.source == Source::Database)
        .map(|r| r.relay.name.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_relays_follow_the_rows_and_survive_a_failed_listing() {
    let rows = Arc::new(Rows::new(vec![
        row("b.example", 10, false),
        row("a.example", 99, true),
    ]));
    let config = FleetConfig {
        static_relays: vec!["turn:192.0.2.1:3478?transport=udp".into()],
        probe_interval: None,
        registry_interval: Duration::from_millis(20),
        ..FleetConfig::default()
    };
    let fleet = Fleet::start_with(
        config,
        Some(rows.clone() as Arc<dyn Registry>),
        &tokio::runtime::Handle::current(),
    )
    .unwrap();

    // Static first, then the registered ones by name, with the rows' load
    // and drain state (no probe has run).
    let s = wait_for(
        &fleet,
        "two registered relays",
        |_| {},
        |s| registered(s).len() == 2,
    )
    .await;
    assert!(s.registry.enabled && s.registry.lookups >= 1);
    assert_eq!(s.relays[0].relay.source, Source::Static);
    assert_eq!(registered(&s), ["a.example", "b.example"]);
    let a = &s.relays[1];
    assert_eq!(
        (a.allocations, a.capacity, a.draining),
        (Some(99), Some(100), true)
    );
    assert_eq!(a.health, Health::Unknown);
    let (serving, _) = s.serving();
    let names: Vec<&str> = serving.iter().map(|r| r.relay.name.as_str()).collect();
    assert_eq!(names, ["192.0.2.1", "b.example"]);

    // A draining row shows at the next listing.
    rows.set(Ok(vec![
        row("b.example", 11, true),
        row("a.example", 99, true),
    ]));
    wait_for(
        &fleet,
        "b draining",
        |_| {},
        |s| {
            s.relays
                .iter()
                .any(|r| r.relay.name == "b.example" && r.draining)
        },
    )
    .await;

    // The database failing keeps the last listed relays.
    rows.set(Err("PostgreSQL at postgres://db: connection refused".into()));
    let s = wait_for(
        &fleet,
        "a failed listing",
        |_| {},
        |s| s.registry.failures >= 2,
    )
    .await;
    assert!(s.registry.failing_since.is_some());
    assert_eq!(registered(&s), ["a.example", "b.example"]);

    // Rows gone (expired or withdrawn) are relays gone.
    rows.set(Ok(vec![row("b.example", 0, false)]));
    let s = wait_for(&fleet, "a gone", |_| {}, |s| registered(s) == ["b.example"]).await;
    assert!(s.registry.failing_since.is_none());
    fleet.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_registry_the_source_is_off() {
    let fleet = Fleet::start(FleetConfig::default(), &tokio::runtime::Handle::current()).unwrap();
    assert!(!fleet.snapshot().registry.enabled);
    fleet.stop();
}
