//! A [`Snapshot`](observe::Snapshot) with every counter, gauge and
//! histogram bucket non-zero and the optional parts present, so every
//! metric and every label value `/metrics` can show is in its rendering.
//!
//! Shared by the unit tests of `src/observe/metrics.rs` and the tests that
//! read the exposition (`metrics_lint.rs`, `grafana_dashboard.rs`), each
//! including this file with `#[path]`. The includer has `observe` in scope
//! (`crate::observe` in the library, `turnpike::observe` in a test), which
//! is why the paths below go through `super::observe`.

use std::time::Duration;

use turnpike_core::stats::{Label, Tally, Traffic};

use super::observe::{ConfigFacts, CredentialStats, FastPathStats, Snapshot};

/// Counts `first`, `first + 1`, … for the labels in order.
fn fill<L: Label>(tally: &mut Tally<L>, first: u64) {
    for (i, &label) in L::ALL.iter().enumerate() {
        tally.add(label, first + i as u64);
    }
}

/// Every figure set, each to a distinct value.
pub fn populated() -> Snapshot {
    let mut s = Snapshot::default();
    let core = &mut s.workers.core;
    fill(&mut core.requests, 1000);
    for (i, errors) in core.errors.iter_mut().enumerate() {
        fill(errors, 100 * (i as u64 + 1));
    }
    fill(&mut core.bindings, 900);
    core.auth_successes = 800;
    fill(&mut core.auth_failures, 70);
    core.challenges_sent = 600;
    core.allocations_created = 500;
    fill(&mut core.allocations_ended, 40);
    // One in every bucket, the overflow included.
    for secs in turnpike_core::stats::DURATION_BUCKETS {
        core.allocation_duration
            .record(Duration::from_millis(secs * 1000 - 1));
    }
    core.allocation_duration
        .record(Duration::from_secs(2 * 86_400));
    core.relayed = Traffic {
        to_peer_packets: 11,
        to_peer_bytes: 11_000,
        to_client_packets: 12,
        to_client_bytes: 12_000,
    };
    core.peers_refused = 30;
    fill(&mut core.drops, 20);
    core.peer_connections_connected = 9;
    core.peer_connections_accepted = 8;

    let shell = &mut s.workers.shell;
    fill(&mut shell.connections_open, 10);
    fill(&mut shell.connections_accepted, 300);
    fill(&mut shell.connections_refused, 5);
    fill(&mut shell.handshakes, 200);
    fill(&mut shell.handshake_failures, 3);

    let gauges = &mut s.workers.allocations;
    let mut n = 1;
    for families in &mut gauges.by_kind {
        for kinds in families {
            for count in kinds {
                *count = n;
                n += 1;
            }
        }
    }
    gauges.total = 100;
    gauges.channels = 60;
    gauges.permissions = 90;

    s.heartbeat_failures = Some(4);
    s.worker_count = 2;
    s.workers_silent = 1;
    s.fast_path = Some(FastPathStats {
        relayed: Traffic {
            to_peer_packets: 21,
            to_peer_bytes: 21_000,
            to_client_packets: 22,
            to_client_bytes: 22_000,
        },
        passed: 7,
        capped: 3,
        routes: 4,
        capacity: 65_536,
    });
    let mut credentials = CredentialStats {
        cache_hits: 4000,
        cache_misses: 40,
        database_up: true,
        ..CredentialStats::default()
    };
    for bound in super::observe::LATENCY_BUCKETS {
        credentials
            .lookup_seconds
            .record(Duration::from_secs_f64(bound * 0.9));
    }
    credentials.lookup_seconds.record(Duration::from_secs(10));
    s.credentials = Some(credentials);
    s.peer_connections_open = 6;
    s.draining = true;
    s.certificate_reloads_refused = 2;
    s.config = ConfigFacts {
        sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".to_owned(),
        reloads_applied: 13,
        reloads_refused: 1,
    };
    s
}
