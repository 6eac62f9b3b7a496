//! Health probes against responders in the test: STUN over UDP and TCP,
//! and /readyz.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::{Answer, ReadyzResponder, StunResponder, StunTcpResponder, wait_for};
use turnpike_fleet::{Fleet, FleetConfig, Health, RelayStatus, Snapshot};

fn probing(static_relays: Vec<String>, admin_port: Option<u16>) -> FleetConfig {
    FleetConfig {
        static_relays,
        probe_interval: Some(Duration::from_millis(150)),
        // Generous for a loaded machine: a stopped responder fails at once
        // anyway (ICMP port unreachable, or a refused connection).
        probe_timeout: Duration::from_secs(2),
        unhealthy_after: 3,
        healthy_after: 2,
        admin_port,
        ..FleetConfig::default()
    }
}

fn status<'a>(s: &'a Snapshot, name: &str) -> &'a RelayStatus {
    s.relays.iter().find(|r| r.relay.name == name).unwrap()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_relay_goes_unhealthy_after_n_losses_and_back_after_m() {
    let mut stun = StunResponder::start(SocketAddr::new(ip("127.0.0.2"), 0)).await;
    let addr = stun.addr;
    let url = format!("turn:{}:{}?transport=udp", addr.ip(), addr.port());
    let fleet = Fleet::start(probing(vec![url], None), &tokio::runtime::Handle::current()).unwrap();
    let name = "127.0.0.2";

    let s = wait_for(
        &fleet,
        "healthy",
        |_| {},
        |s| status(s, name).health == Health::Healthy,
    )
    .await;
    let r = status(&s, name);
    assert!(r.last_probe.is_some() && r.last_error.is_none());
    assert!(s.probing);

    // Below the threshold a relay stays healthy: every snapshot on the way
    // down shows that.
    stun.stop().await;
    let hysteresis = |s: &Snapshot| {
        let r = status(s, name);
        if r.consecutive_failures > 0 && r.consecutive_failures < 3 {
            assert_eq!(r.health, Health::Healthy, "{r:#?}");
        }
        if r.health == Health::Unhealthy {
            assert!(r.consecutive_failures >= 3, "{r:#?}");
        }
    };
    let s = wait_for(&fleet, "unhealthy", hysteresis, |s| {
        status(s, name).health == Health::Unhealthy
    })
    .await;
    let r = status(&s, name);
    assert!(
        r.last_error
            .as_deref()
            .is_some_and(|e| e.contains("127.0.0.2")),
        "{r:#?}"
    );
    // The only relay, unhealthy: served all the same, flagged.
    let (serving, all_unhealthy) = s.serving();
    assert_eq!((serving.len(), all_unhealthy), (1, true));

    // Back: unhealthy until two passes in a row.
    let _stun = StunResponder::start(addr).await;
    let recovery = |s: &Snapshot| {
        let r = status(s, name);
        if r.health == Health::Unhealthy {
            assert!(r.consecutive_successes < 2, "{r:#?}");
        }
    };
    let s = wait_for(&fleet, "healthy again", recovery, |s| {
        status(s, name).health == Health::Healthy
    })
    .await;
    let r = status(&s, name);
    assert!(
        r.consecutive_successes >= 2 && r.last_error.is_none(),
        "{r:#?}"
    );
    assert_eq!(s.serving(), (vec![r], false));
    fleet.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_only_relay_is_probed_with_stun_over_tcp() {
    let stun = StunTcpResponder::start(ip("127.0.0.4")).await;
    let url = format!("turn:127.0.0.4:{}?transport=tcp", stun.addr.port());
    // Nothing listens on this one's port: a refused connection.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.3:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dead_url = format!("turn:127.0.0.3:{dead}?transport=tcp");
    let fleet = Fleet::start(
        probing(vec![url, dead_url], None),
        &tokio::runtime::Handle::current(),
    )
    .unwrap();
    let s = wait_for(
        &fleet,
        "one healthy, one unhealthy",
        |_| {},
        |s| {
            status(s, "127.0.0.4").health == Health::Healthy
                && status(s, "127.0.0.3").health == Health::Unhealthy
        },
    )
    .await;
    let (serving, all_unhealthy) = s.serving();
    assert_eq!(serving.len(), 1);
    assert_eq!(serving[0].relay.name, "127.0.0.4");
    assert!(!all_unhealthy);
    assert!(
        status(&s, "127.0.0.3")
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("TCP"))
    );
    fleet.stop();
}

/// Readyz responders on 127.0.0.2 and 127.0.0.3 at one port (the fleet has
/// one admin port for all relays).
async fn readyz_pair(answer: Answer) -> (ReadyzResponder, ReadyzResponder) {
    for _ in 0..20 {
        let a = ReadyzResponder::start(SocketAddr::new(ip("127.0.0.2"), 0), answer.clone())
            .await
            .unwrap();
        if let Ok(b) = ReadyzResponder::start(
            SocketAddr::new(ip("127.0.0.3"), a.addr.port()),
            answer.clone(),
        )
        .await
        {
            return (a, b);
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_draining_takes_a_relay_out_at_once_and_back() {
    let ready = Answer::new(200, "ready\n").header("x-turnpike-allocations", "7");
    let (http_a, http_b) = readyz_pair(ready.clone()).await;
    let stun_a = StunResponder::start(SocketAddr::new(ip("127.0.0.2"), 0)).await;
    let stun_b = StunResponder::start(SocketAddr::new(ip("127.0.0.3"), 0)).await;
    let urls = vec![
        format!("turn:127.0.0.2:{}", stun_a.addr.port()),
        format!("turn:127.0.0.3:{}", stun_b.addr.port()),
    ];
    let fleet = Fleet::start(
        probing(urls, Some(http_a.addr.port())),
        &tokio::runtime::Handle::current(),
    )
    .unwrap();
    let both = |s: &Snapshot| s.relays.iter().all(|r| r.health == Health::Healthy);
    let s = wait_for(&fleet, "both healthy", |_| {}, both).await;
    assert_eq!(status(&s, "127.0.0.2").allocations, Some(7));
    assert_eq!(s.serving().0.len(), 2);

    // Draining is a passed probe, taken at once: never a failure, never
    // unhealthy on the way.
    http_a.set(Answer::new(503, "not ready: draining\n").header("x-turnpike-allocations", "5"));
    let never_failing = |s: &Snapshot| {
        let r = status(s, "127.0.0.2");
        assert_eq!(
            (r.health, r.consecutive_failures),
            (Health::Healthy, 0),
            "{r:#?}"
        );
    };
    let s = wait_for(&fleet, "draining", never_failing, |s| {
        status(s, "127.0.0.2").draining
    })
    .await;
    assert_eq!(status(&s, "127.0.0.2").allocations, Some(5));
    let (serving, all_unhealthy) = s.serving();
    let names: Vec<_> = serving.iter().map(|r| r.relay.name.as_str()).collect();
    assert_eq!((names, all_unhealthy), (vec!["127.0.0.3"], false));

    // A 503 for another reason is a failure, not draining.
    http_b.set(Answer::new(503, "not ready: 1 of 4 workers silent\n"));
    let s = wait_for(
        &fleet,
        "b failing",
        |_| {},
        |s| status(s, "127.0.0.3").consecutive_failures >= 1,
    )
    .await;
    let b = status(&s, "127.0.0.3");
    assert!(!b.draining);
    assert!(
        b.last_error
            .as_deref()
            .is_some_and(|e| e.contains("workers silent")),
        "{b:#?}"
    );
    http_b.set(ready.clone());

    // The header decides over the body, and draining clears at once.
    http_a.set(Answer::new(200, "draining? no").header("x-turnpike-draining", "false"));
    let s = wait_for(&fleet, "not draining", never_failing, |s| {
        !status(s, "127.0.0.2").draining
    })
    .await;
    assert!(s.serving().0.iter().any(|r| r.relay.name == "127.0.0.2"));
    fleet.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconfigure_keeps_the_health_of_relays_still_present_and_stop_ends_probing() {
    let stun = StunResponder::start(SocketAddr::new(ip("127.0.0.2"), 0)).await;
    let kept = format!("turn:127.0.0.2:{}", stun.addr.port());
    let mut config = probing(
        vec![kept.clone(), "turn:127.0.0.1:9?transport=tcp".into()],
        None,
    );
    let fleet = Fleet::start(config.clone(), &tokio::runtime::Handle::current()).unwrap();
    let s = wait_for(
        &fleet,
        "healthy",
        |_| {},
        |s| status(s, "127.0.0.2").health == Health::Healthy,
    )
    .await;
    let successes = status(&s, "127.0.0.2").consecutive_successes;

    config.static_relays = vec![kept, "turn:127.0.0.5:3478".into()];
    fleet.reconfigure(config);
    let s = fleet.snapshot();
    let names: Vec<_> = s.relays.iter().map(|r| r.relay.name.as_str()).collect();
    assert_eq!(names, ["127.0.0.2", "127.0.0.5"]);
    let r = status(&s, "127.0.0.2");
    assert_eq!(r.health, Health::Healthy);
    assert!(r.consecutive_successes >= successes);
    assert_eq!(status(&s, "127.0.0.5").health, Health::Unknown);

    fleet.stop();
    let last = fleet.snapshot();
    // changed() resolves at once once stopped, and nothing is published.
    tokio::time::timeout(Duration::from_secs(1), fleet.changed())
        .await
        .unwrap();
    assert_eq!(*fleet.snapshot(), *last);
}
