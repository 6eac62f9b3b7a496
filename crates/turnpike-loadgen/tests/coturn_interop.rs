//! The load generator against coturn's `turnserver` on loopback (Debian
//! package `coturn`, which `scripts/test` installs). A missing `turnserver`
//! fails the test: it is never skipped.

use std::time::Duration;

use turnpike_client::testing::Coturn;
use turnpike_loadgen::{self as bench, BenchOptions, Load, PeerMode};

#[tokio::test]
async fn bench_runs_every_mode_without_loss() {
    let coturn = Coturn::start();
    for (peer_mode, send_indications, load) in [
        (PeerMode::Echo, false, Load::Paced { rate: 2000 }),
        (PeerMode::Echo, true, Load::ClosedLoop { window: 2 }),
        (
            PeerMode::ClientToClient,
            false,
            Load::ClosedLoop { window: 2 },
        ),
        (PeerMode::ClientToClient, true, Load::Paced { rate: 2000 }),
    ] {
        let mut o = BenchOptions::new(coturn.addr, "bench", "secret");
        o.allocations = 10;
        o.payload_size = 200;
        o.peer_mode = peer_mode;
        o.send_indications = send_indications;
        o.load = load;
        o.duration = Duration::from_millis(800);
        o.warmup = Duration::from_millis(200);
        o.refresh_interval = Some(Duration::from_millis(300));
        o.observe_pid = Some(coturn.pid());
        let report = bench::run(o).await.unwrap();
        let what = format!("{peer_mode:?} indications={send_indications} {load:?}\n{report}");
        assert_eq!(report.setup.allocated, 10, "{what}");
        assert_eq!(report.release.released, 10, "{what}");
        let t = report.traffic.as_ref().expect("traffic ran");
        assert!(t.sent > 0, "{what}");
        // Closed loop on a shared machine may time out a window; paced
        // runs at this low rate must be lossless.
        if matches!(load, Load::Paced { .. }) {
            assert_eq!(t.lost, 0, "{what}");
        }
        assert_eq!(t.invalid, 0, "{what}");
        assert!(t.refreshes_ok > 0, "{what}");
        assert_eq!(t.refreshes_failed, 0, "{what}");
        assert!(t.latency_us.p50 > 0.0, "{what}");
        let server = report.server_process.expect("observed");
        assert!(server.rss_kib_before.is_some(), "{what}");
        // The machine-readable forms carry the same figures.
        assert!(
            report
                .to_key_values()
                .contains(&format!("traffic_sent={}\n", t.sent))
        );
        assert!(report.to_json().contains("\"loss_percent\""));
    }
}
