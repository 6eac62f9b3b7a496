//! Bandwidth caps against the real server and our own client:
//! `turn.max_bps` holds each way with the drops on `/metrics`, and
//! `turn.bps_capacity` refuses new allocations (508) while the relay
//! carries more than it, and takes them again once it does not.

mod support;

use std::time::Duration;

use support::bandwidth::{Channel, SIZE, capped, run_at};
use support::{ServerOptions, TestServer, TurnOptions, eventually};
use turnpike_client::ClientError;

fn server(turn: TurnOptions) -> TestServer {
    TestServer::start(ServerOptions {
        admin: true,
        ipv6: false,
        turn: Some(turn),
        ..ServerOptions::default()
    })
}

/// ChannelData at four times `max_bps` for two seconds, then as much from
/// the peer: each way gets the cap's rate plus its one second of burst,
/// and every datagram held back is counted as `bandwidth_cap`.
#[test]
fn a_capped_allocation_relays_at_most_its_cap_each_way() {
    const CAP: u64 = 50_000;
    let server = server(TurnOptions {
        max_bps: CAP,
        ..TurnOptions::loopback()
    });
    let run = run_at(&server, 4 * CAP, Duration::from_secs(2));
    run.to_peer.assert_within("client → peer", CAP);
    run.to_client.assert_within("peer → client", CAP);
    let through = (run.to_peer.received_bytes + run.to_client.received_bytes) / SIZE as u64;
    assert_eq!(
        capped(&server),
        run.to_peer.sent + run.to_client.sent - through,
        "every datagram not relayed is counted"
    );
}

/// A new Allocate, as a fresh client of ours: its error code, if refused.
fn allocate_refusal(server: &TestServer) -> Option<u16> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    match runtime.block_on(support::allocate(server.v4())) {
        Ok(_) => None,
        Err(ClientError::ErrorResponse { code, .. }) => Some(code),
        Err(other) => panic!("Allocate: {other}"),
    }
}

/// With `bps_capacity` at 100 kB/s, an allocation relaying 200 kB/s fills
/// the relay: within the measurement's second or two a new Allocate gets
/// 508, and once the flood ends new allocations are taken again.
#[test]
fn at_its_bandwidth_capacity_the_relay_refuses_new_allocations() {
    let server = server(TurnOptions {
        bps_capacity: 100_000,
        ..TurnOptions::loopback()
    });
    let channel = Channel::open(&server);
    assert_eq!(allocate_refusal(&server), None, "idle: room for more");
    std::thread::scope(|scope| {
        let flood = scope.spawn(|| channel.flood_to_peer(200_000, Duration::from_secs(6)));
        eventually(
            "508 while relaying 200 kB/s",
            Duration::from_secs(5),
            || allocate_refusal(&server) == Some(508),
        );
        flood.join().expect("the flood");
    });
    eventually(
        "new allocations once the flood is over",
        Duration::from_secs(5),
        || allocate_refusal(&server).is_none(),
    );
}
