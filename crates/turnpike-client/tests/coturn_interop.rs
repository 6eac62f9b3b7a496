//! The client against coturn's `turnserver` on
//! loopback (Debian package `coturn`, which `scripts/test` installs). A
//! missing `turnserver` fails the tests: they are never skipped.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

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
