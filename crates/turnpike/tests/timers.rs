//! The core's timers, as the server process keeps them: the shell sleeps
//! until the core's next timeout, so an allocation ends when its lifetime
//! does (a shell ticking once a second would let it live up to a second
//! longer, with its relay port bound and its quota taken).

mod support;

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use support::{ServerOptions, TURN_PASSWORD, TURN_USER, TestServer, TurnOptions};
use turnpike_client::{AllocateParams, Credentials, TurnClient};

/// The lifetime under test, and how late its end may be noticed: the
/// timer's own granularity (1 ms), the worker's wake-up, and this test's
/// polling interval.
const LIFETIME: Duration = Duration::from_secs(2);
const SLACK: Duration = Duration::from_millis(100);
/// How often the test checks whether the relay port is free again.
const POLL: Duration = Duration::from_millis(5);

/// Whether the server still holds `relay`: its socket is bound without
/// SO_REUSEADDR or SO_REUSEPORT, so binding the same address fails while
/// it is open.
fn held(relay: SocketAddr) -> bool {
    match UdpSocket::bind(relay) {
        Ok(_) => false,
        Err(err) if err.kind() == io::ErrorKind::AddrInUse => true,
        Err(err) => panic!("cannot probe {relay}: {err}"),
    }
}

#[tokio::test]
async fn an_allocation_with_a_2_s_lifetime_is_gone_within_2_1_s() {
    let server = TestServer::start(ServerOptions {
        turn: Some(TurnOptions {
            default_lifetime: 2,
            max_lifetime: 2,
            ..TurnOptions::loopback()
        }),
        ..ServerOptions::turn()
    });
    let credentials = Credentials::new(TURN_USER, TURN_PASSWORD);
    let mut client = TurnClient::bind(
        SocketAddr::new(support::PRIMARY_V4.into(), server.port),
        credentials,
    )
    .await
    .expect("client socket");
    // Time runs from just before the request: the server's lifetime starts
    // when it handles it, which is no earlier.
    let asked = Instant::now();
    let allocated = client
        .allocate(AllocateParams::default())
        .await
        .expect("allocate");
    assert_eq!(allocated.lifetime, 2, "the lifetime under test");
    let relay = allocated.relayed;
    assert!(
        held(relay),
        "the relay port {relay} is bound while it lives"
    );

    // Nothing refreshes it; the first probe that finds the port free ends
    // the wait. No probe can bind it while the server holds it.
    let limit = asked + LIFETIME + SLACK;
    loop {
        let now = Instant::now();
        if !held(relay) {
            let lived = now - asked;
            assert!(
                lived >= LIFETIME - POLL,
                "the relay closed after {lived:?}, before its lifetime"
            );
            break;
        }
        assert!(
            now < limit,
            "the relay {relay} is still bound {:?} after the Allocate (lifetime {LIFETIME:?})",
            now - asked
        );
        tokio::time::sleep(POLL).await;
    }
}
