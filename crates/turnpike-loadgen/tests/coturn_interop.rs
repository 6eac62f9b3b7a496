//! The load generator against coturn's `turnserver` on loopback (Debian
//! package `coturn`, which `scripts/test` installs). A missing `turnserver`
//! fails the test: it is never skipped. (Moved from turnpike-client's
//! `tests/coturn_interop.rs` with the generator; the coturn fixture is the
//! same.)

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use turnpike_loadgen::{self as bench, BenchOptions, Load, PeerMode};

/// A `turnserver` on 127.0.0.1, killed (by its own PID) on drop.
struct Coturn {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_coturn() -> Coturn {
    // A free port: bind, note, release (racy in theory, fine on loopback).
    let port = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free loopback UDP port")
        .port();
    // A relay window of our own, outside the ephemeral range, so parallel
    // tests (and test binaries) do not compete for relay ports.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let slot = (std::process::id() as u16)
        .wrapping_mul(7)
        .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))
        % 44;
    let base = 61_000 + slot * 100;
    let child = match Command::new("turnserver")
        .args([
            "-n",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            &format!("--listening-port={port}"),
            &format!("--min-port={base}"),
            &format!("--max-port={}", base + 99),
            "--lt-cred-mech",
            "--user=bench:secret",
            "--realm=bench.test",
            "--allow-loopback-peers",
            "--no-stdout-log",
            "--log-file=/dev/null",
            "--simple-log",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("cannot run turnserver ({e}): run scripts/test, which installs coturn"),
    };
    let coturn = Coturn {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    };
    // Ready once the port is taken.
    let deadline = Instant::now() + Duration::from_secs(10);
    while UdpSocket::bind(coturn.addr).is_ok() {
        assert!(
            Instant::now() < deadline,
            "turnserver did not bind {}",
            coturn.addr
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    coturn
}

#[tokio::test]
async fn bench_runs_every_mode_without_loss() {
    let coturn = start_coturn();
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
        o.observe_pid = Some(coturn.child.id());
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
