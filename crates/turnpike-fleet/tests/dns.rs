//! SRV discovery against a real DNS server (dnsmasq on 127.0.0.1).

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::wait_for;
use turnpike_fleet::testing::{Dnsmasq, host, srv};
use turnpike_fleet::{Fleet, FleetConfig, Relay, Snapshot, Source, Transport};

fn config(dns: &Dnsmasq) -> FleetConfig {
    FleetConfig {
        srv_domain: Some("example.test".into()),
        name_servers: vec![dns.addr()],
        discovery_interval: Duration::from_millis(200),
        // Discovery alone: probes are tested in tests/probes.rs.
        probe_interval: None,
        ..FleetConfig::default()
    }
}

fn names(s: &Snapshot) -> Vec<String> {
    s.relays.iter().map(|r| r.relay.name.clone()).collect()
}

fn relay<'a>(s: &'a Snapshot, name: &str) -> &'a Relay {
    &s.relays
        .iter()
        .find(|r| r.relay.name == name)
        .unwrap_or_else(|| panic!("no {name} in {s:#?}"))
        .relay
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

fn three_targets() -> Vec<String> {
    vec![
        srv(
            "_turn._udp.example.test",
            "turn1.example.test",
            3478,
            10,
            60,
        ),
        srv(
            "_turn._udp.example.test",
            "turn2.example.test",
            3479,
            20,
            10,
        ),
        srv(
            "_turn._tcp.example.test",
            "turn2.example.test",
            3478,
            10,
            10,
        ),
        srv("_turns._tcp.example.test", "turn3.example.test", 443, 10, 5),
        host("turn1.example.test", "127.0.0.2"),
        host("turn2.example.test", "127.0.0.3,::1"),
        host("turn3.example.test", "127.0.0.4"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_targets_over_the_three_srv_names() {
    let dns = Dnsmasq::start(&three_targets());
    let fleet = Fleet::start(config(&dns), &tokio::runtime::Handle::current()).unwrap();
    let s = wait_for(&fleet, "three relays", |_| {}, |s| s.relays.len() == 3).await;
    assert_eq!(
        names(&s),
        [
            "turn1.example.test",
            "turn2.example.test",
            "turn3.example.test"
        ]
    );
    assert!(s.relays.iter().all(|r| r.relay.source == Source::Dns));

    let t1 = relay(&s, "turn1.example.test");
    assert_eq!(t1.addresses, ips(&["127.0.0.2"]));
    let urls: Vec<_> = t1.endpoints.iter().map(|e| e.url()).collect();
    assert_eq!(urls, ["turn:turn1.example.test:3478?transport=udp"]);
    assert_eq!((t1.endpoints[0].priority, t1.endpoints[0].weight), (10, 60));

    // One relay offering two transports, from two SRV names.
    let t2 = relay(&s, "turn2.example.test");
    assert_eq!(t2.addresses, ips(&["127.0.0.3", "::1"]));
    let urls: Vec<_> = t2.endpoints.iter().map(|e| e.url()).collect();
    assert_eq!(
        urls,
        [
            "turn:turn2.example.test:3479?transport=udp",
            "turn:turn2.example.test:3478?transport=tcp"
        ]
    );
    assert_eq!(t2.priority_weight(), (10, 10));

    let t3 = relay(&s, "turn3.example.test");
    assert_eq!(t3.addresses, ips(&["127.0.0.4"]));
    assert_eq!(t3.endpoints.len(), 1);
    assert_eq!(t3.endpoints[0].transport, Transport::Tls);
    assert_eq!(
        t3.endpoints[0].url(),
        "turns:turn3.example.test:443?transport=tcp"
    );

    let d = &s.dns;
    assert!(d.enabled && d.last_success.is_some() && d.failing_since.is_none());
    assert!(d.lookups >= 1);
    assert_eq!(d.failures, 0);
    // Probing off: every relay is unknown, and served.
    assert!(!s.probing);
    assert_eq!(s.serving(), (s.relays.iter().collect(), false));
    fleet.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weight_zero_record_is_skipped() {
    let dns = Dnsmasq::start(&[
        srv(
            "_turn._udp.example.test",
            "turn1.example.test",
            3478,
            10,
            60,
        ),
        srv("_turn._udp.example.test", "turn0.example.test", 3478, 10, 0),
        // Weight 0 under one name, a real weight under another: only the
        // weighted endpoint stays.
        srv("_turn._tcp.example.test", "turn1.example.test", 3478, 10, 0),
        host("turn1.example.test", "127.0.0.2"),
        host("turn0.example.test", "127.0.0.9"),
    ]);
    let fleet = Fleet::start(config(&dns), &tokio::runtime::Handle::current()).unwrap();
    let s = wait_for(
        &fleet,
        "a DNS round",
        |_| {},
        |s| s.dns.last_success.is_some(),
    )
    .await;
    assert_eq!(names(&s), ["turn1.example.test"]);
    let t1 = relay(&s, "turn1.example.test");
    assert_eq!(t1.endpoints.len(), 1);
    assert_eq!(t1.endpoints[0].transport, Transport::Udp);
    fleet.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_keeps_the_last_good_set_and_a_changed_zone_shows_after_it() {
    let dns = Dnsmasq::start(&three_targets());
    let port = dns.port;
    let fleet = Fleet::start(config(&dns), &tokio::runtime::Handle::current()).unwrap();
    let good = wait_for(&fleet, "three relays", |_| {}, |s| s.relays.len() == 3).await;

    drop(dns);
    let failing = wait_for(&fleet, "two failed rounds", |_| {}, |s| s.dns.failures >= 2).await;
    assert!(failing.dns.failing_since.is_some(), "{:#?}", failing.dns);
    assert!(failing.dns.last_success.is_some());
    assert_eq!(failing.relays, good.relays, "the last good set is kept");

    // Back with turn1 gone, turn4 new, and turn2 on another address.
    let changed = vec![
        srv(
            "_turn._udp.example.test",
            "turn4.example.test",
            3478,
            10,
            10,
        ),
        srv(
            "_turn._tcp.example.test",
            "turn2.example.test",
            3478,
            10,
            10,
        ),
        srv("_turns._tcp.example.test", "turn3.example.test", 443, 10, 5),
        host("turn2.example.test", "127.0.0.5"),
        host("turn3.example.test", "127.0.0.4"),
        host("turn4.example.test", "127.0.0.6"),
    ];
    let _dns = Dnsmasq::start_on(port, &changed).expect("the port taken meanwhile");
    let s = wait_for(
        &fleet,
        "the changed zone",
        |_| {},
        |s| s.dns.failing_since.is_none(),
    )
    .await;
    assert_eq!(
        names(&s),
        [
            "turn2.example.test",
            "turn3.example.test",
            "turn4.example.test"
        ]
    );
    assert_eq!(
        relay(&s, "turn2.example.test").addresses,
        ips(&["127.0.0.5"])
    );
    assert_eq!(relay(&s, "turn2.example.test").endpoints.len(), 1);
    assert_eq!(
        relay(&s, "turn4.example.test").addresses,
        ips(&["127.0.0.6"])
    );
    assert!(s.dns.failures >= 2 && s.dns.lookups > s.dns.failures);
    fleet.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_relays_come_first_and_reconfigure_replaces_them() {
    let dns = Dnsmasq::start(&[
        srv(
            "_turn._udp.example.test",
            "turn1.example.test",
            3478,
            10,
            60,
        ),
        host("turn1.example.test", "127.0.0.2"),
    ]);
    let mut cfg = config(&dns);
    cfg.static_relays = vec![
        "turn:192.0.2.1:3478?transport=udp".into(),
        "turns:192.0.2.1:5349".into(),
        "turn:[2001:db8::1]".into(),
    ];
    let fleet = Fleet::start(cfg.clone(), &tokio::runtime::Handle::current()).unwrap();
    // Static relays are known at once (the first DNS round may be done
    // already: it is fast here).
    let s = fleet.snapshot();
    assert_eq!(names(&s)[..2], ["192.0.2.1", "2001:db8::1"]);
    assert!(
        s.relays[..2]
            .iter()
            .all(|r| r.relay.source == Source::Static)
    );
    assert_eq!(relay(&s, "192.0.2.1").endpoints.len(), 2);
    assert_eq!(relay(&s, "2001:db8::1").addresses, ips(&["2001:db8::1"]));
    let s = wait_for(&fleet, "the DNS relay", |_| {}, |s| s.relays.len() == 3).await;
    assert_eq!(
        names(&s),
        ["192.0.2.1", "2001:db8::1", "turn1.example.test"]
    );
    assert_eq!(s.relays[2].relay.source, Source::Dns);

    cfg.static_relays = vec!["turn:192.0.2.7".into()];
    cfg.srv_domain = None;
    fleet.reconfigure(cfg);
    let s = fleet.snapshot();
    assert_eq!(names(&s), ["192.0.2.7"]);
    assert!(!s.dns.enabled);
    fleet.stop();
}

#[test]
fn start_refuses_bad_configuration() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bad_url = FleetConfig {
        static_relays: vec!["turn:ok.example".into(), "stun:x".into()],
        ..FleetConfig::default()
    };
    let e = Fleet::start(bad_url, rt.handle()).unwrap_err().to_string();
    assert!(e.contains("stun:x") && e.contains("turn: or turns:"), "{e}");
    let bad_domain = FleetConfig {
        srv_domain: Some("bad domain".into()),
        ..FleetConfig::default()
    };
    let e = Fleet::start(bad_domain, rt.handle())
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad domain"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_relay_given_by_name_is_resolved() {
    let config = FleetConfig {
        static_relays: vec!["turn:localhost:3478".into(), "turns:localhost".into()],
        discovery_interval: Duration::from_millis(200),
        probe_interval: None,
        ..FleetConfig::default()
    };
    let fleet = Fleet::start(config, &tokio::runtime::Handle::current()).unwrap();
    let s = wait_for(
        &fleet,
        "localhost resolved",
        |_| {},
        |s| !s.relays[0].relay.addresses.is_empty(),
    )
    .await;
    let relay = &s.relays[0].relay;
    assert_eq!(
        (relay.name.as_str(), relay.endpoints.len()),
        ("localhost", 2)
    );
    assert!(
        relay.addresses.iter().all(|ip| ip.is_loopback()),
        "{relay:#?}"
    );
    assert!(!s.dns.enabled);
    fleet.stop();
}
