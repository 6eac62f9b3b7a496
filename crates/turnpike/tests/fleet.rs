//! Load balancing across a fleet on one machine: a relay at its capacity
//! (`turn.total_quota`) sends a new Allocate to another relay of its
//! `[discovery]` fleet with a signed 300 (ALTERNATE-SERVER), never to
//! itself, and answers 508 when no relay of the fleet can take it.
//! coturn's `turnutils_uclient` follows the redirect and relays through the
//! other relay with no loss.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use support::uclient::{Run, assert_redirected_and_delivered};
use support::{Peer, ServerOptions, TestServer, TurnOptions, allocate, redirected};
use turnpike_client::ClientError;

fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

/// A relay on 127.0.0.N taking `capacity` allocations at most (0: no
/// limit), whose fleet is `extra` ([discovery]).
fn relay(n: u8, capacity: u32, extra: String) -> TestServer {
    TestServer::start(ServerOptions {
        ipv6: false,
        host_v4: Some(ip(n)),
        turn: Some(TurnOptions {
            relay_ips: vec![ip(n).into()],
            total_quota: capacity,
            ..TurnOptions::loopback()
        }),
        extra_config: extra,
        ..ServerOptions::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_relay_sends_new_allocations_to_another_of_its_fleet() {
    let other = relay(3, 0, String::new());
    // The fleet lists this relay itself too: it must never be its own
    // alternate.
    let full = relay(
        2,
        1,
        format!(
            "[discovery]\nrelays = [\"turn:127.0.0.2:@PORT@?transport=udp\", \
             \"turn:127.0.0.3:{}?transport=udp\"]\nprobe_interval = 1\nprobe_timeout = 1\n\
             unhealthy_after = 2\nhealthy_after = 2\n",
            other.port
        ),
    );
    let _held = allocate(full.v4()).await.expect("the first allocation");
    assert_eq!(
        redirected(full.v4()).await,
        other.v4(),
        "the other relay, not this one"
    );

    // uclient's probe Allocate learns the alternate and its session relays
    // there.
    let peer = Peer::start(&[IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    let (out, rep) = Run::new(&full, ip(2).into(), &["-v", "-c", "-n", "20", "-l", "100"])
        .peer(&peer, IpAddr::V4(Ipv4Addr::LOCALHOST))
        .go();
    assert_redirected_and_delivered(&out, &rep, other.v4(), 20);

    // The other relay stops answering: once it is found down, nobody can
    // take the allocation, and the full relay says so with 508.
    other.signal(libc::SIGSTOP);
    let mut last = String::new();
    let refused = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match allocate(full.v4()).await {
                Err(ClientError::ErrorResponse { code: 508, .. }) => return,
                Err(other) => last = other.to_string(),
                Ok(_) => panic!("a new Allocate beyond the capacity succeeded"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    other.signal(libc::SIGCONT);
    assert!(
        refused.is_ok(),
        "no 508 once the only alternate was down: {last}"
    );
    // And back: the other relay is an alternate again.
    let back = tokio::time::timeout(Duration::from_secs(15), async {
        while !matches!(
            allocate(full.v4()).await,
            Err(ClientError::TryAlternate { .. })
        ) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        back.is_ok(),
        "the other relay never became an alternate again"
    );
}
