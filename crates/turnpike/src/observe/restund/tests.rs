//! `turnstats` in restund's exact format, the command reading, and the
//! port itself asked over UDP as `echo turnstats | nc -u -q1 HOST PORT`
//! would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use turnpike_core::stats::Traffic;

use super::*;
use crate::admin_http::testing::FakeRelay;
use crate::observe::{AllocationGauges, FastPathStats, Snapshot, WorkerShare};

fn snapshot() -> Snapshot {
    let mut workers = WorkerShare {
        allocations: AllocationGauges {
            total: 12,
            channels: 7,
            permissions: 30,
            ..AllocationGauges::default()
        },
        ..WorkerShare::default()
    };
    workers.core.allocations_created = 345;
    workers.core.relayed = Traffic {
        to_peer_packets: 10,
        to_peer_bytes: 1_000,
        to_client_packets: 20,
        to_client_bytes: 20_000,
    };
    Snapshot {
        workers,
        worker_count: 2,
        fast_path: Some(FastPathStats {
            relayed: Traffic {
                to_peer_packets: 1,
                to_peer_bytes: 5,
                to_client_packets: 2,
                to_client_bytes: 7,
            },
            ..FastPathStats::default()
        }),
        ..Snapshot::default()
    }
}

#[test]
fn turnstats_is_restunds_format() {
    // bytes_tx: to peers (restund's bytec_tx, counted where its relay
    // socket sends to a peer); bytes_rx: to clients. The fast path's bytes
    // count too.
    let expected = "allocs_cur 12\nallocs_tot 345\nbytes_tx 1005\nbytes_rx 20007\nbytes_tot 21012\nchan_cur 7\n";
    let s = snapshot();
    assert_eq!(answer(b"turnstats", &s), expected);
    assert_eq!(answer(b"turnstats\n", &s), expected);
    assert_eq!(answer(b"turnstats\r\n", &s), expected);
    assert_eq!(answer(b"turnstats\nanything after", &s), expected);
    assert_eq!(
        answer(b"turnstats", &Snapshot::default()),
        "allocs_cur 0\nallocs_tot 0\nbytes_tx 0\nbytes_rx 0\nbytes_tot 0\nchan_cur 0\n"
    );
}

#[test]
fn other_commands_are_not_found() {
    let s = snapshot();
    assert_eq!(answer(b"status\n", &s), "status: command not found\n");
    assert_eq!(answer(b"TURNSTATS", &s), "TURNSTATS: command not found\n");
    assert_eq!(answer(b" turnstats", &s), " turnstats: command not found\n");
    assert_eq!(answer(b"turnstatsx", &s), "turnstatsx: command not found\n");
    // Only the first 32 bytes of the line are the command.
    let long = [b'a'; 100];
    assert_eq!(
        answer(&long, &s),
        format!("{}: command not found\n", "a".repeat(32))
    );
    // Garbage is echoed lossily, never a panic.
    assert_eq!(
        answer(&[0xff, 0x00, b'x', b'\n', 0xfe], &s),
        "\u{fffd}\0x: command not found\n"
    );
}

#[test]
fn commands_are_first_lines() {
    assert_eq!(command(b""), b"");
    assert_eq!(command(b"\n"), b"");
    assert_eq!(command(b"\r\n"), b"");
    assert_eq!(command(b"\nturnstats"), b"");
    assert_eq!(command(b"turnstats"), b"turnstats");
    assert_eq!(command(b"turnstats\n\n"), b"turnstats");
    assert!(needs_snapshot(b"turnstats\n"));
    assert!(!needs_snapshot(b"turn\n"));
    assert!(!needs_snapshot(b""));
}

/// Binds `serve` on 127.0.0.1:0 and returns its address.
async fn serving(relay: Arc<FakeRelay>) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(serve(socket, relay));
    addr
}

/// What `echo COMMAND | nc -u -q1 127.0.0.1 PORT` prints: the datagrams
/// that come back within a second of the last.
async fn nc(addr: SocketAddr, datagram: &[u8]) -> String {
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.send_to(datagram, addr).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok(Ok((n, from))) =
        tokio::time::timeout(Duration::from_millis(500), client.recv_from(&mut buf)).await
    {
        assert_eq!(from, addr);
        assert!(n <= CHUNK_SIZE);
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn the_port_answers_like_restund() {
    let relay = Arc::new(FakeRelay::default());
    *relay.snapshot.lock().unwrap() = snapshot();
    let addr = serving(Arc::clone(&relay)).await;
    let reply = nc(addr, b"turnstats\n").await;
    assert!(reply.lines().any(|l| l == "allocs_cur 12"), "{reply:?}");
    assert_eq!(
        reply,
        "allocs_cur 12\nallocs_tot 345\nbytes_tx 1005\nbytes_rx 20007\nbytes_tot 21012\nchan_cur 7\n"
    );
    // It follows the relay.
    relay.snapshot.lock().unwrap().workers.allocations.total = 13;
    assert!(
        nc(addr, b"turnstats\n")
            .await
            .starts_with("allocs_cur 13\n")
    );
    assert_eq!(nc(addr, b"help\n").await, "help: command not found\n");
    // Empty datagrams get no answer, and garbage does not stop the port.
    assert_eq!(nc(addr, b"").await, "");
    assert_eq!(nc(addr, b"\n").await, "");
    let garbage: Vec<u8> = (0..1500u32).map(|i| (i * 7) as u8).collect();
    let reply = nc(addr, &garbage).await;
    assert!(reply.ends_with(": command not found\n"), "{reply:?}");
    assert!(nc(addr, b"turnstats").await.starts_with("allocs_cur 13\n"));
}

#[test]
fn a_busy_port_is_one_line() {
    let busy = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let admin = AdminSettings {
        restund_listen: Some(addr),
        ..AdminSettings::default()
    };
    let err = start(&admin, Arc::new(FakeRelay::default()), &runtime).unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        format!(
            "cannot listen on restund command port udp {addr}: address already in use; another process is using it (a restund still running?): stop it or change admin.restund_listen"
        )
    );
    // Unset: nothing to start.
    start(
        &AdminSettings::default(),
        Arc::new(FakeRelay::default()),
        &runtime,
    )
    .unwrap();
    // A free port: started.
    drop(busy);
    start(&admin, Arc::new(FakeRelay::default()), &runtime).unwrap();
}
