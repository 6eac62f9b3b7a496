//! A fleet on one machine, run the way an operator runs one: three relays
//! on 127.0.0.2–4 sharing one real PostgreSQL (users, shared secrets, and
//! each relay's heartbeat row: `fleet.register`), DNS SRV records served
//! by dnsmasq (the relays' view of each other, for their redirects), and
//! the ICE-server endpoint (`turnpike ice-config`) handing clients the
//! relays registered in the database (`discovery.database`).
//!
//! One scenario, in order, with coturn's `turnutils_uclient` as the client:
//! 1. a user added with `turnpike user add` on PostgreSQL authenticates on
//!    all three relays;
//! 2. a client takes the endpoint's credentials and relays through relay 2;
//!    relay 2 is drained mid-session: it leaves the endpoint's answers, the
//!    session relays to its end with no loss, and a new Allocate sent to it
//!    is redirected (300) and relays on another relay;
//! 3. relay 2 exits by itself once empty (`drain.exit_when_empty`), is
//!    started again on the same ports, and the endpoint serves it again;
//! 4. relay 4, at its capacity, redirects the next Allocate;
//! 5. PostgreSQL stops, and every relay still serves the users it knows.

mod support;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::thread;
use std::time::Duration;

use serde_json::Value;
use support::uclient::{Run, assert_delivered, assert_redirected_and_delivered};
use support::{
    DatabaseOptions, Peer, ServerOptions, TestServer, TurnOptions, admin_request, allocate,
    allocations, eventually, free_port_on, http_request, redirected,
};
use turnpike_fleet::testing::{Dnsmasq, host, srv};
use turnpike_store::testing::TestPostgres;

const DOMAIN: &str = "fleet.test";
const SECRET: &str = "the-fleet-secret";
const USER: &str = "carol";
const PASSWORD: &str = "carol-password";
/// How long a probe round takes to see a change: relays are probed every
/// second, out after two failures, back after two passes.
const FLEET_SEES: Duration = Duration::from_secs(15);

fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

fn name(n: u8) -> String {
    format!("turn{n}.{DOMAIN}")
}

/// The fleet's zone: UDP and TCP SRV records for each relay, all on the
/// one port they share, and their addresses.
fn zone(port: u16) -> Vec<String> {
    let mut records = Vec::new();
    for n in 2..=4 {
        for service in ["_turn._udp", "_turn._tcp"] {
            records.push(srv(&format!("{service}.{DOMAIN}"), &name(n), port, 10, 10));
        }
        records.push(host(&name(n), &ip(n).to_string()));
    }
    records
}

/// Probes every second, out after two failures, back after two passes,
/// `/readyz` on the relays' shared admin port.
fn probes(admin_port: u16) -> String {
    format!(
        "probe_interval = 1\nprobe_timeout = 1\nunhealthy_after = 2\nhealthy_after = 2\n\
         admin_port = {admin_port}\n"
    )
}

/// Users and secrets come from PostgreSQL only; `alice` (the support
/// client's user) stays in the file for our own Allocates.
fn database(pg: &TestPostgres) -> DatabaseOptions {
    DatabaseOptions {
        url: Some(pg.url()),
        // Short, so that step 5 shows the grace period serving known users
        // rather than a cache entry still fresh.
        cache_ttl: 2,
        ..DatabaseOptions::default()
    }
}

struct Fleet {
    port: u16,
    admin_port: u16,
}

impl Fleet {
    fn relay(&self, n: u8, pg: &TestPostgres, dns: &Dnsmasq) -> TestServer {
        TestServer::start(ServerOptions {
            ipv6: false,
            host_v4: Some(ip(n)),
            fixed_port: Some(self.port),
            admin: true,
            fixed_admin_port: Some(self.admin_port),
            exit_when_empty: n == 2,
            turn: Some(TurnOptions {
                relay_ips: vec![ip(n).into()],
                ..TurnOptions::loopback()
            }),
            database: database(pg),
            extra_config: format!(
                "[fleet]\nregister = true\nname = \"{}\"\nheartbeat_interval = 1\n\
                 expire_after = 3\n\n[discovery]\nsrv_domain = \"{DOMAIN}\"\n\
                 name_servers = [\"{}\"]\ninterval = 1\n{}",
                name(n),
                dns.addr(),
                probes(self.admin_port)
            ),
            ..ServerOptions::default()
        })
    }

    fn endpoint(&self, pg: &TestPostgres) -> TestServer {
        TestServer::start(ServerOptions {
            ipv6: false,
            admin: true,
            ice_config: true,
            turn: Some(TurnOptions {
                users: Vec::new(),
                ..TurnOptions::loopback()
            }),
            database: database(pg),
            extra_config: format!(
                "[ice]\nrequests_per_second = 1000\n\n[discovery]\ndatabase = true\n{}",
                probes(self.admin_port)
            ),
            ..ServerOptions::default()
        })
    }
}

fn ice_servers(endpoint: &TestServer) -> Value {
    let admin = SocketAddr::new(
        endpoint.options.v4_host().into(),
        endpoint.admin_port.expect("admin port"),
    );
    let answer = http_request(admin, "GET", "/ice-servers", &[]);
    assert_eq!(answer.status, 200, "{}", answer.body);
    serde_json::from_str(&answer.body).unwrap_or_else(|e| panic!("{e}: {}", answer.body))
}

/// The relays (host names) the endpoint hands out now.
fn served(endpoint: &TestServer) -> BTreeSet<String> {
    ice_servers(endpoint)["iceServers"]
        .as_array()
        .expect("iceServers")
        .iter()
        .flat_map(|server| server["urls"].as_array().expect("urls").iter())
        .map(|url| {
            let url = url.as_str().expect("a URL");
            url.split(':').nth(1).expect("scheme:host:port").to_owned()
        })
        .collect()
}

fn names(relays: &[u8]) -> BTreeSet<String> {
    relays.iter().map(|&n| name(n)).collect()
}

/// The endpoint's username and credential for `relay`.
fn credentials_for(endpoint: &TestServer, relay: u8) -> (String, String) {
    let config = ice_servers(endpoint);
    let server = config["iceServers"]
        .as_array()
        .expect("iceServers")
        .iter()
        .find(|s| {
            s["urls"].as_array().is_some_and(|urls| {
                urls.iter()
                    .any(|u| u.as_str().is_some_and(|u| u.contains(&name(relay))))
            })
        })
        .unwrap_or_else(|| panic!("relay {relay} is not served: {config}"));
    (
        server["username"].as_str().expect("username").to_owned(),
        server["credential"]
            .as_str()
            .expect("credential")
            .to_owned(),
    )
}

/// uclient relays 10 messages through relay `n` as `carol`, and every
/// one comes back.
fn carol_relays(relay: &TestServer, n: u8, peer: &Peer, what: &str) {
    let (out, rep) = Run::new(relay, ip(n).into(), &["-c", "-n", "10", "-l", "200"])
        .peer(peer, IpAddr::V4(Ipv4Addr::LOCALHOST))
        .credentials(USER, PASSWORD)
        .go();
    assert_delivered(what, &out, &rep, 10, 200);
}

/// Whether an allocation on `server` has relayed something to its peer
/// (uclient's session once it sends; its probe allocation never does).
fn relaying(server: &TestServer) -> bool {
    allocations(server)
        .iter()
        .any(|a| a["to_peer_packets"].as_u64().unwrap_or(0) > 0)
}

/// Ends uclient's probe allocations on `relay`, which uclient never
/// deletes (they relay nothing and would live out their lifetime), as an
/// operator ends stragglers: by id. Every other allocation must be over.
fn end_stragglers(relay: &TestServer) {
    for straggler in allocations(relay) {
        assert_eq!(
            straggler["to_peer_packets"], 0,
            "only uclient's probe allocations are left: {straggler}"
        );
        let id = straggler["id"].as_str().expect("an id");
        let (status, body) = admin_request(relay, "DELETE", &format!("/v1/allocations/{id}"));
        assert_eq!(status, 200, "{body}");
    }
}

/// Sets relay's `turn.total_quota` by a live reload.
fn set_capacity(relay: &mut TestServer, capacity: u32) {
    let reloads = relay.lines_with("configuration reloaded").len();
    relay.edit_config(|text| {
        let from = text
            .find("total_quota = ")
            .expect("total_quota in the file");
        let to = from + text[from..].find('\n').expect("a line");
        format!("{}total_quota = {capacity}{}", &text[..from], &text[to..])
    });
    relay.hangup();
    relay.wait_for_lines(
        "configuration reloaded",
        reloads + 1,
        Duration::from_secs(10),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_drains_restarts_redirects_and_outlives_its_database() {
    let mut pg = TestPostgres::start();
    let hosts = [ip(2), ip(3), ip(4)];
    let fleet = Fleet {
        port: free_port_on(&hosts),
        admin_port: free_port_on(&hosts),
    };
    let dns = Dnsmasq::start(&zone(fleet.port));
    let mut relays = [
        fleet.relay(2, &pg, &dns),
        fleet.relay(3, &pg, &dns),
        fleet.relay(4, &pg, &dns),
    ];
    let peer = Peer::start(&[IpAddr::V4(Ipv4Addr::LOCALHOST)]);

    // 1. One `turnpike user add` on the shared database: the user
    //    authenticates on every relay (and each relay now knows it).
    relays[0].admin(&["user", "add", USER, "--password", PASSWORD]);
    relays[0].admin(&["secret", "add", SECRET]);
    for (relay, n) in relays.iter().zip(2..) {
        carol_relays(relay, n, &peer, &format!("{USER} on relay {n}"));
    }

    // 2. A client asks the endpoint, and relays through relay 2 with the
    //    time-limited credentials it was given.
    let endpoint = fleet.endpoint(&pg);
    eventually("the endpoint serves all three relays", FLEET_SEES, || {
        served(&endpoint) == names(&[2, 3, 4])
    });
    let (username, credential) = credentials_for(&endpoint, 2);
    // 400 messages 40 ms apart: 16 s, long enough for the drain and the
    // redirects below to happen while it relays.
    let session = Run::new(
        &relays[0],
        ip(2).into(),
        &["-c", "-n", "400", "-z", "40", "-l", "200"],
    )
    .peer(&peer, IpAddr::V4(Ipv4Addr::LOCALHOST))
    .credentials(&username, &credential)
    .spawn();
    eventually(
        "the session relays on relay 2",
        Duration::from_secs(30),
        || relaying(&relays[0]),
    );
    let (status, body) = admin_request(&relays[0], "POST", "/v1/drain");
    assert_eq!(status, 200, "{body}");
    eventually("relay 2 leaves the endpoint's answers", FLEET_SEES, || {
        served(&endpoint) == names(&[3, 4])
    });
    // A new Allocate at the draining relay goes to one with room, relay 3
    // or 4.
    let alternate = redirected(relays[0].v4()).await;
    assert!(
        [relays[1].v4(), relays[2].v4()].contains(&alternate),
        "redirected to {alternate}, not to relay 3 or 4"
    );
    let (out, rep) = Run::new(
        &relays[0],
        ip(2).into(),
        &["-v", "-c", "-n", "20", "-l", "100"],
    )
    .peer(&peer, IpAddr::V4(Ipv4Addr::LOCALHOST))
    .credentials(&username, &credential)
    .go();
    let connected = [relays[1].v4(), relays[2].v4()]
        .into_iter()
        .find(|a| out.stdout.contains(&format!("Connected to: {a}")))
        .unwrap_or_else(|| panic!("uclient connected to neither alternate\n{}", out.describe()));
    assert_redirected_and_delivered(&out, &rep, connected, 20);
    let (out, rep) = session.join().expect("the session's thread");
    assert_delivered("the session drained under", &out, &rep, 400, 200);

    // 3. Empty, relay 2 exits by itself; started again, it is served again
    //    and relays. uclient never deletes its probe allocations (they
    //    relay nothing and would live out their lifetime): end those as an
    //    operator ends stragglers, by id.
    end_stragglers(&relays[0]);
    let status = relays[0].wait_exit(Duration::from_secs(30));
    assert!(status.success(), "relay 2 exited with {status}");
    relays[0].restart();
    eventually("relay 2 is served again", FLEET_SEES, || {
        served(&endpoint) == names(&[2, 3, 4])
    });
    carol_relays(&relays[0], 2, &peer, "carol on relay 2 after its restart");

    // 4. Relay 4 at its capacity (one allocation, set live): the next
    //    Allocate goes to another relay.
    end_stragglers(&relays[2]);
    set_capacity(&mut relays[2], 1);
    let mut held = allocate(relays[2].v4())
        .await
        .expect("the allocation relay 4 has room for");
    let alternate = redirected(relays[2].v4()).await;
    assert!(
        [relays[0].v4(), relays[1].v4()].contains(&alternate),
        "relay 4 at capacity redirected to {alternate}, not to relay 2 or 3"
    );
    held.refresh(0)
        .await
        .expect("relay 4's allocation given back");
    set_capacity(&mut relays[2], 0);

    // 5. PostgreSQL stops. Each relay still serves the user it knows, past
    //    its cache TTL (the grace period), and the endpoint still hands out
    //    relays and time-limited credentials, signed with the secret it
    //    last read, which every relay still verifies.
    pg.stop();
    // Not a wait for an event: each relay's cache entries for carol must
    // be past cache_ttl (2 s), so that what serves her is the grace period
    // of a database that is down, not a fresh entry.
    thread::sleep(Duration::from_secs(3));
    assert_eq!(served(&endpoint), names(&[2, 3, 4]));
    for (relay, n) in relays.iter().zip(2..) {
        carol_relays(
            relay,
            n,
            &peer,
            &format!("{USER} on relay {n}, PostgreSQL stopped"),
        );
        let (username, credential) = credentials_for(&endpoint, n);
        let (out, rep) = Run::new(relay, ip(n).into(), &["-c", "-n", "10", "-l", "200"])
            .peer(&peer, IpAddr::V4(Ipv4Addr::LOCALHOST))
            .credentials(&username, &credential)
            .go();
        assert_delivered(
            &format!("the endpoint's credentials on relay {n}, PostgreSQL stopped"),
            &out,
            &rep,
            10,
            200,
        );
        // The outage is one line, not one per request.
        assert_eq!(
            relay.lines_with("credential database unreachable").len(),
            1,
            "relay {n}\n{}",
            relay.output()
        );
    }
}
