//! The client and the load generator against coturn's `turnserver` on
//! loopback (Debian package `coturn`, which `scripts/test` installs). A
//! missing `turnserver` fails the tests: they are never skipped.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use turnpike_client::bench::{self, BenchOptions, Load, PeerMode};
use turnpike_client::{AllocateParams, ClientError, Credentials, Relayed, TurnClient};

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

fn credentials() -> Credentials {
    Credentials::new("bench", "secret")
}

#[tokio::test]
async fn client_allocates_binds_relays_and_refreshes() {
    let coturn = start_coturn();
    let mut client = TurnClient::bind(coturn.addr, credentials()).await.unwrap();
    let allocation = client.allocate(AllocateParams::default()).await.unwrap();
    assert_eq!(client.auth().realm(), Some("bench.test"));
    assert!(allocation.relayed.ip().is_loopback());
    assert!(allocation.lifetime > 0);
    assert_eq!(
        allocation.mapped.map(|m| m.port()),
        Some(client.local_addr().unwrap().port())
    );

    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let mut buf = [0u8; 2048];

    // ChannelData out and back.
    client.channel_bind(0x4000, peer_addr).await.unwrap();
    client
        .send_channel_data(0x4000, b"over the channel")
        .await
        .unwrap();
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"over the channel");
    assert_eq!(from, allocation.relayed);
    peer.send_to(b"channel reply", allocation.relayed).unwrap();
    let mut rbuf = [0u8; 2048];
    let got = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut rbuf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        got,
        Relayed::Channel {
            channel: 0x4000,
            data: b"channel reply"
        }
    );

    // Send and Data indications with a second peer.
    let peer2 = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer2
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let peer2_addr = peer2.local_addr().unwrap();
    client.create_permission(&[peer2_addr]).await.unwrap();
    client
        .send_indication(peer2_addr, b"indicated")
        .await
        .unwrap();
    let (n, _) = peer2.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"indicated");
    peer2.send_to(b"data back", allocation.relayed).unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut rbuf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        got,
        Relayed::Indication {
            peer: peer2_addr,
            data: b"data back"
        }
    );

    assert!(client.refresh(300).await.unwrap() > 0);
    assert_eq!(client.refresh(0).await.unwrap(), 0);
}

#[tokio::test]
async fn wrong_password_is_reported_as_unauthorized() {
    let coturn = start_coturn();
    let mut client = TurnClient::bind(coturn.addr, Credentials::new("bench", "wrong"))
        .await
        .unwrap();
    match client.allocate(AllocateParams::default()).await {
        Err(ClientError::Unauthorized(_)) => {}
        other => panic!("expected Unauthorized, got {other:?}"),
    }
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
