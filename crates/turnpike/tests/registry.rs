//! Self-registering relays on one machine: two relays (127.0.0.2, .3) with
//! `fleet.register` write heartbeat rows to one real PostgreSQL, and
//! `turnpike ice-config` with `discovery.database` hands out what the rows
//! say. Draining shows at once, a clean stop withdraws the row, and the
//! row of a relay killed outright is ignored, then deleted, after
//! `fleet.expire_after`.

mod support;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use support::{
    DatabaseOptions, HttpAnswer, ServerOptions, TestServer, admin_request, eventually, http_request,
};
use turnpike_store::testing::TestPostgres;

const SECRET: &str = "fleet-shared-secret";

/// Heartbeats every second, rows ignored after 3 s without one.
const FLEET: &str = "[fleet]\nheartbeat_interval = 1\nexpire_after = 3\n";

/// Long enough for a loaded machine; the waits end as soon as they can.
const WITHIN: Duration = Duration::from_secs(15);

fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

fn database(pg: &TestPostgres) -> DatabaseOptions {
    DatabaseOptions {
        url: Some(pg.url()),
        ..DatabaseOptions::default()
    }
}

/// A relay on 127.0.0.N registering itself, 100 allocations at most.
fn relay(n: u8, pg: &TestPostgres) -> TestServer {
    let mut options = ServerOptions {
        database: database(pg),
        extra_config: format!("{FLEET}register = true\n"),
        ..ServerOptions::fleet_relay(n, SECRET)
    };
    if let Some(turn) = options.turn.as_mut() {
        turn.total_quota = 100;
    }
    TestServer::start(options)
}

/// `turnpike ice-config` handing out the registered relays, unprobed: a
/// relay leaves its answer only through its row.
fn endpoint(pg: &TestPostgres) -> TestServer {
    TestServer::start(ServerOptions {
        database: database(pg),
        extra_config: format!(
            "[ice]\nrequests_per_second = 1000\n\n[discovery]\ndatabase = true\nprobe_interval = 0\n\n{FLEET}"
        ),
        ..ServerOptions::ice_endpoint(SECRET)
    })
}

fn get(server: &TestServer, path: &str) -> HttpAnswer {
    let addr = SocketAddr::new(
        server.options.v4_host().into(),
        server.admin_port.expect("admin port"),
    );
    http_request(addr, "GET", path, &[])
}

/// The relay hosts of `/ice-servers`; none when it has no relay to give.
fn served(endpoint: &TestServer) -> BTreeSet<String> {
    let answer = get(endpoint, "/ice-servers");
    if answer.status != 200 {
        return BTreeSet::new();
    }
    let config: Value = serde_json::from_str(&answer.body).expect("JSON");
    config["iceServers"]
        .as_array()
        .expect("a list of ICE servers")
        .iter()
        .flat_map(|s| s["urls"].as_array().cloned().unwrap_or_default())
        .map(|url| {
            let url = url.as_str().expect("a URL");
            url.split(':').nth(1).expect("scheme:host:port").to_owned()
        })
        .collect()
}

fn hosts(ns: &[u8]) -> BTreeSet<String> {
    ns.iter().map(|&n| ip(n).to_string()).collect()
}

/// The rows as PostgreSQL holds them: `id|name|addresses|endpoints|
/// allocations|capacity|draining|version`, by id.
fn rows(pg: &TestPostgres) -> Vec<String> {
    pg.psql(
        "SELECT id, name, addresses, endpoints, allocations, capacity, draining, version \
         FROM fleet_relays ORDER BY id",
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

fn row(relay: &TestServer, n: u8, draining: bool) -> String {
    let p = relay.port;
    format!(
        "{a}:{p}|{a}|{a}|udp/{p} tcp/{p}|0|100|{}|{}",
        if draining { "t" } else { "f" },
        env!("CARGO_PKG_VERSION"),
        a = ip(n)
    )
}

#[test]
fn registered_relays_are_handed_out_until_they_drain_stop_or_die() {
    let pg = TestPostgres::start();
    let mut two = relay(2, &pg);
    let mut three = relay(3, &pg);
    let endpoint = endpoint(&pg);

    // Both rows, with what each relay is.
    eventually("both rows written", WITHIN, || {
        rows(&pg) == [row(&two, 2, false), row(&three, 3, false)]
    });
    eventually("both relays handed out", WITHIN, || {
        served(&endpoint) == hosts(&[2, 3])
    });
    let metrics = get(&endpoint, "/metrics").body;
    assert!(
        metrics
            .lines()
            .any(|l| l == "turnpike_fleet_registered_relays 2"),
        "{metrics}"
    );
    let relay_metrics = get(&two, "/metrics").body;
    assert!(
        relay_metrics
            .lines()
            .any(|l| l == "turnpike_fleet_heartbeat_failures_total 0"),
        "{relay_metrics}"
    );

    // Draining writes the row at once, and the endpoint's next listing
    // leaves the relay out; undraining brings it back.
    let (status, body) = admin_request(&two, "POST", "/v1/drain");
    assert_eq!(status, 200, "{body}");
    eventually("relay 2's row draining", WITHIN, || {
        rows(&pg).first() == Some(&row(&two, 2, true))
    });
    eventually("relay 2 left out", WITHIN, || {
        served(&endpoint) == hosts(&[3])
    });
    let (status, body) = admin_request(&two, "DELETE", "/v1/drain");
    assert_eq!(status, 200, "{body}");
    eventually("relay 2 back", WITHIN, || {
        served(&endpoint) == hosts(&[2, 3])
    });

    // Killed outright, relay 3 leaves its row behind: ignored after
    // expire_after, then deleted by relay 2's clean-up.
    three.signal(libc::SIGKILL);
    three.wait_exit(WITHIN);
    eventually("relay 3 no longer handed out", WITHIN, || {
        served(&endpoint) == hosts(&[2])
    });
    eventually("relay 3's row deleted", WITHIN, || {
        rows(&pg) == [row(&two, 2, false)]
    });

    // A clean stop (SIGTERM) withdraws the row.
    let output = two.shut_down();
    assert!(output.contains("withdrawn from the database"), "{output}");
    assert_eq!(rows(&pg), Vec::<String>::new());
    eventually("no relay handed out", WITHIN, || {
        served(&endpoint).is_empty()
    });
}
