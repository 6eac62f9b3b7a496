//! The ICE-server configuration endpoint against a fleet on one machine:
//! three Turnpike relays on 127.0.0.2, 127.0.0.3 and 127.0.0.4, a real DNS
//! server (Debian's dnsmasq) serving their SRV and A records, and the
//! endpoint both as `turnpike ice-config` and on a relay's admin listener.
//! The credentials it hands out are used with coturn's `turnutils_uclient`
//! on every relay it lists.

mod support;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use support::uclient::{Run, assert_delivered};
use support::{
    HttpAnswer, Peer, ServerOptions, TestServer, TurnOptions, admin_request, eventually,
    http_request,
};
use turnpike_fleet::testing::{Dnsmasq, host, srv};

const SECRET: &str = "fleet-shared-secret";
const DOMAIN: &str = "example.test";

fn relay_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

/// A relay of the fleet on 127.0.0.N: TURN with the fleet's secret, its
/// admin endpoint (for the endpoint's /readyz probes) on the same address.
fn relay(n: u8) -> TestServer {
    TestServer::start(ServerOptions::fleet_relay(n, SECRET))
}

fn name(n: u8) -> String {
    format!("turn{n}.{DOMAIN}")
}

/// The zone: UDP and TCP for each relay (at its own port), and a record of
/// weight 0 for a fourth host that must never be handed out.
fn zone(relays: &[(u8, &TestServer)]) -> Vec<String> {
    let mut records = Vec::new();
    for &(n, relay) in relays {
        records.push(srv(
            &format!("_turn._udp.{DOMAIN}"),
            &name(n),
            relay.port,
            10,
            10,
        ));
        records.push(srv(
            &format!("_turn._tcp.{DOMAIN}"),
            &name(n),
            relay.port,
            10,
            10,
        ));
        records.push(host(&name(n), &relay_ip(n).to_string()));
    }
    records.push(srv(&format!("_turn._udp.{DOMAIN}"), &name(9), 3478, 10, 0));
    records.push(host(&name(9), "127.0.0.9"));
    records
}

/// `turnpike ice-config` discovering the fleet through `dns`, probing every
/// second, relays out after 2 failed probes, back after 2 passed ones.
fn endpoint(dns: &Dnsmasq, format: &str) -> TestServer {
    TestServer::start(ServerOptions {
        extra_config: format!(
            "[ice]\ncredential_format = \"{format}\"\nrequests_per_second = 1000\n\n\
             [discovery]\nsrv_domain = \"{DOMAIN}\"\nname_servers = [\"{}\"]\n\
             interval = 1\nprobe_interval = 1\nprobe_timeout = 1\nunhealthy_after = 2\n\
             healthy_after = 2\nadmin_port = 0\n",
            dns.addr()
        ),
        ..ServerOptions::ice_endpoint(SECRET)
    })
}

fn get(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> HttpAnswer {
    let addr = SocketAddr::new(
        server.options.v4_host().into(),
        server.admin_port.expect("admin port"),
    );
    http_request(addr, "GET", path, headers)
}

fn json(answer: &HttpAnswer) -> Value {
    serde_json::from_str(&answer.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", answer.body))
}

/// The relay host names of an `/ice-servers` answer, in order.
fn hosts(config: &Value, list: &str) -> Vec<String> {
    config[list]
        .as_array()
        .expect("a list of ICE servers")
        .iter()
        .map(|server| {
            let url = server["urls"][0].as_str().expect("a URL");
            url.split(':').nth(1).expect("scheme:host:port").to_owned()
        })
        .collect()
}

fn served_hosts(endpoint: &TestServer) -> BTreeSet<String> {
    let answer = get(endpoint, "/ice-servers", &[]);
    assert_eq!(answer.status, 200, "{}", answer.body);
    hosts(&json(&answer), "iceServers").into_iter().collect()
}

fn all(names: &[u8]) -> BTreeSet<String> {
    names.iter().map(|&n| name(n)).collect()
}

#[test]
fn srv_discovery_leaves_out_stopped_and_draining_relays_and_survives_dns_outages() {
    let relays = [relay(2), relay(3), relay(4)];
    let fleet: Vec<(u8, &TestServer)> = (2..=4).zip(relays.iter()).collect();
    let dns = Dnsmasq::start(&zone(&fleet));
    let endpoint = endpoint(&dns, "rest");
    eventually("all three relays served", Duration::from_secs(10), || {
        served_hosts(&endpoint) == all(&[2, 3, 4])
    });

    // Every relay with UDP and TCP, the weight-0 host never; the order
    // changes from request to request.
    let mut firsts = BTreeSet::new();
    for _ in 0..30 {
        let config = json(&get(&endpoint, "/ice-servers", &[]));
        let listed = hosts(&config, "iceServers");
        assert_eq!(listed.len(), 3, "{config}");
        assert!(!listed.contains(&name(9)), "weight 0 handed out: {config}");
        for server in config["iceServers"].as_array().unwrap() {
            let urls: Vec<&str> = server["urls"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u.as_str().unwrap())
                .collect();
            assert_eq!(urls.len(), 2, "{urls:?}");
            assert!(urls[0].ends_with("?transport=udp"), "{urls:?}");
            assert!(urls[1].ends_with("?transport=tcp"), "{urls:?}");
        }
        firsts.insert(listed[0].clone());
    }
    assert!(
        firsts.len() >= 2,
        "the same relay came first 30 times: {firsts:?}"
    );

    // A stopped relay (it answers no probe) is left out after two failed
    // probes, and served again after two passed ones.
    relays[1].signal(libc::SIGSTOP);
    eventually(
        "the stopped relay left out",
        Duration::from_secs(10),
        || served_hosts(&endpoint) == all(&[2, 4]),
    );
    let fleet_view = json(&get(&endpoint, "/v1/fleet", &[]));
    let stopped = fleet_view["relays"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["relay"]["name"] == name(3))
        .expect("relay 3 in /v1/fleet");
    assert_eq!(stopped["health"], "unhealthy", "{fleet_view}");
    relays[1].signal(libc::SIGCONT);
    eventually("the stopped relay back", Duration::from_secs(10), || {
        served_hosts(&endpoint) == all(&[2, 3, 4])
    });

    // DNS stops answering: the last good set stays, the failure is counted.
    drop(dns);
    eventually("a failed lookup counted", Duration::from_secs(15), || {
        let metrics = get(&endpoint, "/metrics", &[]).body;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("turnpike_discovery_failures_total "))
            .is_some_and(|n| n.trim() != "0")
    });
    assert_eq!(served_hosts(&endpoint), all(&[2, 3, 4]));
    let fleet_view = json(&get(&endpoint, "/v1/fleet", &[]));
    assert!(
        !fleet_view["dns"]["failing_since"].is_null(),
        "{fleet_view}"
    );
}

#[test]
fn draining_relays_are_left_out_through_their_readyz() {
    let relays = [relay(2), relay(3)];
    let admin_port = relays[0].admin_port.unwrap();
    // The probe asks every relay's /readyz on one port: give relay 3 the
    // same admin port number on its own address.
    let relay3 = &relays[1];
    let urls: Vec<String> = [(2u8, relays[0].port), (3, relay3.port)]
        .iter()
        .map(|&(n, port)| format!("\"turn:{}:{port}?transport=udp\"", relay_ip(n)))
        .collect();
    let endpoint = TestServer::start(ServerOptions {
        extra_config: format!(
            "[ice]\nrequests_per_second = 1000\n\n[discovery]\nrelays = [{}]\nprobe_interval = 1\nprobe_timeout = 1\n\
             unhealthy_after = 2\nhealthy_after = 2\nadmin_port = {admin_port}\n",
            urls.join(", ")
        ),
        ..ServerOptions::ice_endpoint(SECRET)
    });
    let served = || served_hosts(&endpoint);
    let ip = |n: u8| relay_ip(n).to_string();
    // Relay 3's admin endpoint is on another port: its /readyz probe fails,
    // so only relay 2 is served, and relay 3 shows why in /v1/fleet.
    eventually("relay 2 served alone", Duration::from_secs(10), || {
        served() == BTreeSet::from([ip(2)])
    });
    let (status, body) = admin_request(&relays[0], "POST", "/v1/drain");
    assert_eq!(status, 200, "{body}");
    // Relay 2 drains and relay 3 fails: every relay unhealthy or draining
    // means all are served, and the metric says so.
    eventually("relay 2 seen draining", Duration::from_secs(10), || {
        let view = json(&get(&endpoint, "/v1/fleet", &[]));
        view["relays"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["relay"]["name"] == ip(2) && r["draining"] == true)
    });
    let view = json(&get(&endpoint, "/v1/fleet", &[]));
    assert_eq!(view["all_unhealthy"], true, "{view}");
    assert_eq!(served(), BTreeSet::from([ip(2), ip(3)]), "{view}");
    let metrics = get(&endpoint, "/metrics", &[]).body;
    assert!(
        metrics
            .lines()
            .any(|l| l == "turnpike_fleet_all_unhealthy 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l == "turnpike_fleet_relays{state=\"draining\"} 1"),
        "{metrics}"
    );
    let (status, body) = admin_request(&relays[0], "DELETE", "/v1/drain");
    assert_eq!(status, 200, "{body}");
    eventually("relay 2 back alone", Duration::from_secs(10), || {
        served() == BTreeSet::from([ip(2)])
    });
}

/// uclient relays through every relay the endpoint lists, over UDP and TCP,
/// with the credentials it handed out, in both formats.
#[test]
fn handed_out_credentials_work_with_uclient_on_every_relay_in_both_formats() {
    let relays = [relay(2), relay(3), relay(4)];
    let fleet: Vec<(u8, &TestServer)> = (2..=4).zip(relays.iter()).collect();
    let dns = Dnsmasq::start(&zone(&fleet));
    let peer = Peer::start(&[IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    for format in ["rest", "wire"] {
        let endpoint = endpoint(&dns, format);
        eventually("all three relays served", Duration::from_secs(10), || {
            served_hosts(&endpoint) == all(&[2, 3, 4])
        });
        let config = json(&get(&endpoint, "/calls/config/v2", &[]));
        assert!(config["ttl"].as_u64().is_some_and(|t| t > 0), "{config}");
        let servers = config["ice_servers"].as_array().expect("ice_servers");
        assert_eq!(servers.len(), 3, "{config}");
        for server in servers {
            let username = server["username"].as_str().unwrap();
            let password = server["credential"].as_str().unwrap();
            match format {
                "wire" => assert!(username.starts_with("d="), "{username}"),
                _ => assert!(username.parse::<u64>().is_ok(), "{username}"),
            }
            for url in server["urls"].as_array().unwrap() {
                let url = url.as_str().unwrap();
                // turn:turnN.example.test:PORT?transport=…
                let host = url.split(':').nth(1).expect("scheme:host:port");
                let n = host.as_bytes()[4] - b'0';
                let relay = &relays[usize::from(n - 2)];
                let tcp = url.ends_with("transport=tcp");
                let args: &[&str] = if tcp {
                    &["-t", "-c", "-n", "10", "-l", "400"]
                } else {
                    &["-c", "-n", "10", "-l", "400"]
                };
                let (out, rep) = Run::new(relay, relay_ip(n).into(), args)
                    .peer(&peer, IpAddr::V4(Ipv4Addr::LOCALHOST))
                    .credentials(username, password)
                    .go();
                assert_delivered(&format!("{format} {url}"), &out, &rep, 10, 400);
            }
        }
    }
}

/// `turnpike serve` with `ice.enabled`: the routes on the admin listener,
/// callers admitted by the ICE token (not the admin one), the rate limit,
/// `/v1/fleet` behind the admin token, and a reload that changes the
/// relays and the credential format without a restart.
#[test]
fn the_relay_serves_the_endpoint_on_its_admin_listener_and_reloads_it() {
    const ADMIN_TOKEN: &str = "admin-token-0123456789";
    const ICE_TOKEN: &str = "ice-token-0123456789ab";
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("ice.token");
    std::fs::write(&token_file, ICE_TOKEN).unwrap();
    let mut server = TestServer::start(ServerOptions {
        ipv6: false,
        admin: true,
        admin_token: Some(ADMIN_TOKEN),
        turn: Some(TurnOptions {
            secrets: vec![SECRET.to_owned()],
            ..TurnOptions::loopback()
        }),
        extra_config: format!(
            "[ice]\nenabled = true\nauth = \"token\"\ntoken_file = \"{}\"\n\
             requests_per_second = 3\n\n\
             [discovery]\nrelays = [\"turn:127.0.0.1:3478?transport=udp\"]\nprobe_interval = 0\n",
            token_file.display()
        ),
        ..ServerOptions::default()
    });
    let ice = format!("Bearer {ICE_TOKEN}");
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let with_ice = [("Authorization", ice.as_str())];
    let with_admin = [("Authorization", admin.as_str())];

    // Strangers and the admin token get 401; the ICE token an answer.
    assert_eq!(get(&server, "/ice-servers", &[]).status, 401);
    assert_eq!(get(&server, "/ice-servers", &with_admin).status, 401);
    let answer = get(&server, "/ice-servers", &with_ice);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        hosts(&json(&answer), "iceServers"),
        ["127.0.0.1"],
        "{}",
        answer.body
    );
    // Three a second per caller: a burst of six gets some 429s.
    let statuses: Vec<u16> = (0..6)
        .map(|_| get(&server, "/ice-servers", &with_ice).status)
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    // The self-test page is public (it holds no secret), as on ice-config.
    let page = get(&server, "/selftest", &[]);
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Turnpike fleet self-test"));
    // /v1/fleet is an admin route.
    assert_eq!(get(&server, "/v1/fleet", &with_ice).status, 401);
    let fleet = json(&get(&server, "/v1/fleet", &with_admin));
    assert_eq!(fleet["relays"][0]["relay"]["name"], "127.0.0.1", "{fleet}");
    let metrics = get(&server, "/metrics", &with_admin).body;
    assert!(
        metrics.lines().any(|l| l.starts_with(
            "turnpike_ice_requests_total{route=\"ice_servers\",outcome=\"rate_limited\"} "
        ) && !l.ends_with(" 0")),
        "{metrics}"
    );

    // SIGHUP: another relay list and Wire credentials, applied live.
    server.edit_config(|text| {
        text.replace(
            "relays = [\"turn:127.0.0.1:3478?transport=udp\"]",
            "relays = [\"turn:127.0.0.7:3478?transport=udp\", \"turns:127.0.0.7:5349?transport=tcp\"]",
        )
        .replace("[ice]\n", "[ice]\ncredential_format = \"wire\"\n")
    });
    server.hangup();
    eventually("the new relay list served", Duration::from_secs(10), || {
        let answer = get(&server, "/ice-servers", &with_ice);
        answer.status == 200 && hosts(&json(&answer), "iceServers") == ["127.0.0.7"]
    });
    let config = json(&get(&server, "/calls/config/v2", &with_ice));
    let username = config["ice_servers"][0]["username"].as_str().unwrap();
    assert!(username.starts_with("d="), "{config}");
}
