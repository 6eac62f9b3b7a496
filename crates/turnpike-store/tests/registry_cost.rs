//! What self-registering relays cost the database, measured on a real
//! PostgreSQL: 1,000 relays heartbeating at the default interval (5 s) for
//! 30 s, while an ICE endpoint lists the rows at the same interval. Prints
//! writes/s, upsert latency (mean, p99), the listing's latency with 1,000
//! rows, the table's size and its dead tuples. The figures are in the
//! README ("Self-registering relays").
//!
//! Not run by default (it takes half a minute and prints rather than
//! asserts much):
//!
//! ```sh
//! cargo test -p turnpike-store --test registry_cost -- --ignored --nocapture
//! ```
//!
//! `REGISTRY_RELAYS`, `REGISTRY_SECONDS` and `REGISTRY_INTERVAL_MS` change
//! the load. One process stands in for the whole fleet through a pool of 16
//! connections, so the latencies include waiting for a free connection;
//! real relays each bring their own.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use turnpike_store::testing::TestPostgres;
use turnpike_store::{
    Location, RegisteredEndpoint, RegisteredTransport, RelayRegistration, Schema, Store,
    StoreOptions,
};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn registration(i: u64) -> RelayRegistration {
    let (a, b) = ((i >> 8) as u8, i as u8);
    RelayRegistration {
        id: format!("10.0.{a}.{b}:3478"),
        name: format!("turn{i}.example.com"),
        addresses: vec![format!("10.0.{a}.{b}").parse().expect("an IPv4 address")],
        endpoints: [
            (RegisteredTransport::Udp, 3478),
            (RegisteredTransport::Tcp, 3478),
            (RegisteredTransport::Tls, 5349),
            (RegisteredTransport::Dtls, 5349),
        ]
        .into_iter()
        .map(|(transport, port)| RegisteredEndpoint { transport, port })
        .collect(),
        allocations: i % 700,
        capacity: Some(1000),
        draining: false,
        version: "0.1.0".to_owned(),
    }
}

/// Mean and 99th percentile, in ms.
fn summary(mut samples: Vec<Duration>) -> (f64, f64, usize) {
    samples.sort();
    let n = samples.len().max(1);
    let mean = samples.iter().sum::<Duration>().as_secs_f64() * 1000.0 / n as f64;
    let p99 = samples
        .get((samples.len() * 99 / 100).min(samples.len().saturating_sub(1)))
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    (mean, p99, samples.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a 30 s measurement; run with --ignored --nocapture"]
async fn thousand_relays_heartbeating() {
    let relays = env_or("REGISTRY_RELAYS", 1000);
    let seconds = env_or("REGISTRY_SECONDS", 30);
    let interval = Duration::from_millis(env_or("REGISTRY_INTERVAL_MS", 5000));
    let pg = TestPostgres::start();
    let store = Store::open(StoreOptions {
        pool_size: 16,
        ..StoreOptions::new(Location::Postgres(pg.url()))
    })
    .await
    .expect("open PostgreSQL");
    assert_eq!(store.schema(), Schema::Turnpike);

    let upserts = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(Mutex::new(0u64));
    let start = tokio::time::Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for i in 0..relays {
        let (store, upserts, failures) = (store.clone(), upserts.clone(), failures.clone());
        // Relays start at different moments: spread over one interval.
        let offset = interval.mul_f64(i as f64 / relays as f64);
        tasks.push(tokio::spawn(async move {
            let row = registration(i);
            let mut next = start + offset;
            while next < end {
                tokio::time::sleep_until(next).await;
                let t = Instant::now();
                match store.heartbeat(&row).await {
                    Ok(()) => upserts
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(t.elapsed()),
                    Err(_) => *failures.lock().unwrap_or_else(PoisonError::into_inner) += 1,
                }
                next += interval;
            }
        }));
    }
    // The ICE endpoint's listing, at the same interval.
    let mut listings = Vec::new();
    let mut listed = 0;
    let mut next = start + interval;
    while next < end {
        tokio::time::sleep_until(next).await;
        let t = Instant::now();
        listed = store
            .registered_relays(Duration::from_secs(30))
            .await
            .expect("list the rows")
            .len();
        listings.push(t.elapsed());
        next += interval;
    }
    for task in tasks {
        task.await.expect("a relay task");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (mean, p99, writes) = summary(std::mem::take(
        &mut *upserts.lock().unwrap_or_else(PoisonError::into_inner),
    ));
    let (list_mean, list_p99, lists) = summary(listings);
    let failed = *failures.lock().unwrap_or_else(PoisonError::into_inner);
    // The statistics collector reports with a delay: ask it to flush.
    pg.psql("SELECT pg_stat_force_next_flush()");
    let stats = pg.psql(
        "SELECT pg_total_relation_size('fleet_relays'), n_live_tup, n_dead_tup, n_tup_upd, \
         n_tup_hot_upd, autovacuum_count FROM pg_stat_user_tables WHERE relname = 'fleet_relays'",
    );
    println!(
        "relays={relays} interval={interval:?} seconds={elapsed:.1}\n\
         upserts={writes} failed={failed} writes_per_second={:.1} upsert_mean_ms={mean:.2} upsert_p99_ms={p99:.2}\n\
         listings={lists} rows_listed={listed} list_mean_ms={list_mean:.2} list_p99_ms={list_p99:.2}\n\
         table: total_bytes|live|dead|updates|hot_updates|autovacuums = {}",
        writes as f64 / elapsed,
        stats.trim()
    );
    assert_eq!(failed, 0);
    assert_eq!(listed as u64, relays);
}
