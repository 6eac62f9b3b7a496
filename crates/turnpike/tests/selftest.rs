//! The fleet self-test page (`GET /selftest`, src/ice/selftest.rs) in a
//! real browser against a fleet on one machine: three relays on 127.0.0.2,
//! 127.0.0.3 and 127.0.0.4, each with TURN over UDP, TCP and TLS (its own
//! certificate from the test PKI, whose root the browser trusts), and
//! `turnpike ice-config` listing their nine URLs, probing them every second
//! (STUN, and `/readyz` on the admin port they share).
//!
//! Headless Chromium loads the page from the endpoint with the ICE and
//! admin tokens in the query. The page POSTs its results to the test's
//! site ([`Site`]) when done: that is the wait, with a deadline. Then the
//! test reads the same results from the page itself through the DevTools
//! protocol (the JSON in `#results`, the table's rows, `data-done`), and
//! takes a screenshot, kept under `target/test-artifacts/`.
//!
//! Runs: all relays up (every relay and transport gives a relay candidate
//! and an echo, all healthy); relay 3 stopped with SIGSTOP (its three rows
//! fail, it is unhealthy and left out of `/ice-servers`, the others still
//! pass); relay 3 back and no admin token (every row passes again, health
//! "unavailable").

mod support;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::browser::{Chromium, Site, SiteOptions, await_report, query_escape};
use support::pki::{KeyType, Pki};
use support::{
    HttpAnswer, ServerOptions, TestServer, TlsFiles, TurnOptions, eventually, http_request,
};

const SECRET: &str = "selftest-fleet-secret";
const ICE_TOKEN: &str = "selftest-ice-token-0123";
const ADMIN_TOKEN: &str = "selftest-admin-token-0123";
/// The browser window, and so the screenshot.
const WINDOW: (u32, u32) = (1200, 900);
/// The page's bound on each step (`?timeout_ms=`): how long a stopped
/// relay takes to be given up on. A good gathering takes well under a
/// second here.
const STEP_TIMEOUT_MS: u64 = 5000;
/// Browser start to report. A run takes 2-3 s with every relay up, about
/// STEP_TIMEOUT_MS more with one stopped; this is for a loaded machine.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
const TRANSPORTS: [&str; 3] = ["udp", "tcp", "tls"];
const RELAYS: [u8; 3] = [2, 3, 4];

fn relay_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

/// Relay N on 127.0.0.N: TURN with the fleet's secret, relaying on its
/// own address, TLS with a certificate for that address, and its admin
/// endpoint (the endpoint probes `/readyz`) on `admin_port` when given.
fn relay(n: u8, pki: &Pki, admin_port: Option<u16>) -> TestServer {
    let ip = relay_ip(n);
    let leaf = pki.leaf_with_ips(&format!("relay{n}"), KeyType::EcP256Pkcs8, 2, &[ip.into()]);
    TestServer::start(ServerOptions {
        ipv6: false,
        host_v4: Some(ip),
        admin: true,
        fixed_admin_port: admin_port,
        turn: Some(TurnOptions {
            relay_ips: vec![ip.into()],
            secrets: vec![SECRET.to_owned()],
            ..TurnOptions::loopback()
        }),
        tls: Some(TlsFiles {
            // The leaf then the intermediate: the browser trusts the root.
            certificate: leaf.chain,
            private_key: Some(leaf.key),
        }),
        ..ServerOptions::default()
    })
}

/// The relay's URL for `transport`, as the endpoint writes it.
fn url(n: u8, relay: &TestServer, transport: &str) -> String {
    let ip = relay_ip(n);
    match transport {
        "udp" => format!("turn:{ip}:{}?transport=udp", relay.port),
        "tcp" => format!("turn:{ip}:{}?transport=tcp", relay.port),
        _ => format!(
            "turns:{ip}:{}?transport=tcp",
            relay.tls_port.expect("TLS configured")
        ),
    }
}

/// `turnpike ice-config` over the relays: the ICE token for
/// `/ice-servers`, the admin token for `/v1/fleet`, probes every second,
/// out after 2 failures, back after 1 success.
fn endpoint(relays: &[(u8, &TestServer)], admin_port: u16, dir: &std::path::Path) -> TestServer {
    let token_file = dir.join("ice.token");
    std::fs::write(&token_file, ICE_TOKEN).unwrap();
    let urls: Vec<String> = relays
        .iter()
        .flat_map(|&(n, relay)| TRANSPORTS.map(|t| format!("\"{}\"", url(n, relay, t))))
        .collect();
    TestServer::start(ServerOptions {
        ipv6: false,
        admin: true,
        admin_token: Some(ADMIN_TOKEN),
        ice_config: true,
        turn: Some(TurnOptions {
            secrets: vec![SECRET.to_owned()],
            ..TurnOptions::loopback()
        }),
        extra_config: format!(
            "[ice]\nauth = \"token\"\ntoken_file = \"{}\"\nrequests_per_second = 100\n\
             relay_only = true\n\n\
             [discovery]\nrelays = [{}]\nprobe_interval = 1\nprobe_timeout = 1\n\
             unhealthy_after = 2\nhealthy_after = 1\nadmin_port = {admin_port}\n",
            token_file.display(),
            urls.join(", ")
        ),
        ..ServerOptions::default()
    })
}

fn admin_addr(server: &TestServer) -> SocketAddr {
    SocketAddr::new(
        server.options.v4_host().into(),
        server.admin_port.expect("admin port"),
    )
}

/// The endpoint's `/v1/fleet`: health of each relay by address.
fn fleet_health(endpoint: &TestServer) -> Vec<(String, String, bool)> {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let answer: HttpAnswer = http_request(
        admin_addr(endpoint),
        "GET",
        "/v1/fleet",
        &[("Authorization", &auth)],
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let view: Value = serde_json::from_str(&answer.body).expect("/v1/fleet is JSON");
    view["relays"]
        .as_array()
        .expect("relays")
        .iter()
        .map(|r| {
            (
                r["relay"]["name"].as_str().unwrap_or_default().to_owned(),
                r["health"].as_str().unwrap_or_default().to_owned(),
                r["draining"] == true,
            )
        })
        .collect()
}

fn wait_for_health(endpoint: &TestServer, want: &[(u8, &str)]) {
    let want: Vec<(String, String, bool)> = want
        .iter()
        .map(|&(n, h)| (relay_ip(n).to_string(), h.to_owned(), false))
        .collect();
    eventually(
        &format!("/v1/fleet shows {want:?}"),
        Duration::from_secs(15),
        || fleet_health(endpoint) == want,
    );
}

/// Where the screenshots go: `target/test-artifacts/` (the test binary is
/// `target/<profile>/deps/selftest-HASH`).
fn artifacts_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("target/<profile>/deps/<binary>")
        .to_owned();
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    dir
}

/// What one run of the page gave.
struct Run {
    /// As POSTed to the site.
    results: Value,
    /// The rows of the table (`data-*` of each `<tr>`).
    table: Vec<Value>,
    /// Browser start to report.
    took: Duration,
}

impl Run {
    fn rows(&self) -> &[Value] {
        self.results["rows"].as_array().expect("rows")
    }

    fn row(&self, n: u8, transport: &str) -> &Value {
        let relay = relay_ip(n).to_string();
        self.rows()
            .iter()
            .find(|r| r["relay"] == relay.as_str() && r["transport"] == transport)
            .unwrap_or_else(|| panic!("no row for {relay} {transport}\n{:#}", self.results))
    }
}

/// Loads the page with `query`, waits for its report, reads the same from
/// the page through DevTools, and saves a screenshot as `screenshot`.
fn run_page(endpoint: &TestServer, pki: &Pki, query: &str, screenshot: &str) -> Run {
    let site = Site::start(SiteOptions::default());
    let page = format!(
        "http://{}/selftest?{query}&timeout_ms={STEP_TIMEOUT_MS}&report={}",
        admin_addr(endpoint),
        query_escape(&site.url("/result"))
    );
    let mut browser = Chromium::new();
    browser.trust(pki.root());
    let started = Instant::now();
    let mut devtools = browser.launch_with_devtools(&page, WINDOW.0, WINDOW.1);
    let raw = await_report(&site, &mut browser, RUN_TIMEOUT);
    let took = started.elapsed();
    let results: Value = serde_json::from_str(&raw)
        .unwrap_or_else(|e| panic!("the report is not JSON ({e}): {raw}"));
    eprintln!(
        "[selftest] {screenshot}: report after {took:?} (page: {} ms)",
        results["elapsedMs"]
    );

    let session = devtools.attach_page().expect("attach to the page");
    let mut evaluate = |expression: &str| {
        devtools
            .evaluate(&session, expression)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    assert_eq!(
        evaluate("document.documentElement.dataset.done"),
        "true",
        "data-done"
    );
    // The page's own copy is what it reported.
    let in_page = evaluate("JSON.parse(document.getElementById('results').textContent)");
    assert_eq!(
        in_page, results,
        "the page's #results differ from its report"
    );
    let table = evaluate(
        "Array.from(document.querySelectorAll('#rows tr'), tr => Object.assign({}, tr.dataset))",
    );
    // The tokens were taken out of the address bar.
    let search = evaluate("location.search");
    let search = search.as_str().unwrap_or_default();
    assert!(!search.contains("token"), "token left in the URL: {search}");

    let png = devtools.screenshot(&session).expect("a screenshot");
    let path = artifacts_dir().join(screenshot);
    std::fs::write(&path, &png).expect("write the screenshot");
    assert_png(&png, &path);
    eprintln!("[selftest] screenshot: {}", path.display());
    drop(browser);
    Run {
        results,
        table: table.as_array().cloned().unwrap_or_default(),
        took,
    }
}

/// A PNG, of the window's width, with something on it.
fn assert_png(png: &[u8], path: &std::path::Path) {
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && &png[12..16] == b"IHDR",
        "{} is not a PNG",
        path.display()
    );
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!(width, WINDOW.0, "{}: {width}x{height}", path.display());
    assert!(height > 0, "{}: {width}x{height}", path.display());
    // A blank page of that size compresses to a few hundred bytes; a table
    // of text does not.
    assert!(
        png.len() > 10_000,
        "{}: only {} bytes",
        path.display(),
        png.len()
    );
}

/// Asserts the row of relay `n` over `transport` passed: a relay
/// candidate on the relay's own address, an echo through it, and the
/// health `health`.
fn assert_passed(run: &Run, n: u8, relay: &TestServer, transport: &str, health: &str) {
    let row = run.row(n, transport);
    let what = format!("{} {transport}: {row:#}", relay_ip(n));
    let ip = relay_ip(n).to_string();
    assert_eq!(row["url"], url(n, relay, transport).as_str(), "{what}");
    assert_eq!(row["handedOut"], true, "{what}");
    assert_eq!(row["candidate"], true, "{what}");
    let ms = row["candidateMs"].as_u64().unwrap_or(0);
    assert!((1..STEP_TIMEOUT_MS).contains(&ms), "{what}");
    assert_eq!(row["candidateAddress"], ip.as_str(), "{what}");
    assert_eq!(row["relayProtocol"], transport, "{what}");
    assert_eq!(row["echo"], true, "{what}");
    assert_eq!(row["echoError"], Value::Null, "{what}");
    let rtt = row["rttMs"].as_f64().unwrap_or(0.0);
    assert!(rtt > 0.0 && rtt < 1000.0, "{what}");
    assert_eq!(
        row["rttSamplesMs"].as_array().map(Vec::len),
        Some(5),
        "{what}"
    );
    // The echo went through this relay, reached over this transport.
    let path = &row["echoPath"];
    assert_eq!(path["localType"], "relay", "{what}");
    assert_eq!(path["relayProtocol"], transport, "{what}");
    for end in ["local", "remote"] {
        let address = path[end].as_str().unwrap_or_default();
        assert!(address.starts_with(&format!("{ip}:")), "{end}: {what}");
    }
    assert_eq!(row["health"], health, "{what}");
    // Draining is known only from /v1/fleet.
    let draining = match health {
        "unavailable" => Value::Null,
        _ => Value::from(false),
    };
    assert_eq!(row["draining"], draining, "{what}");
}

/// The table shows what the results say, one row per relay and transport.
fn assert_table(run: &Run) {
    let from_results: Vec<(String, String, String, String)> = run
        .rows()
        .iter()
        .map(|r| {
            (
                r["relay"].as_str().unwrap().to_owned(),
                r["transport"].as_str().unwrap().to_owned(),
                r["candidate"].to_string(),
                r["echo"].to_string(),
            )
        })
        .collect();
    let from_table: Vec<(String, String, String, String)> = run
        .table
        .iter()
        .map(|tr| {
            let field = |k: &str| tr[k].as_str().unwrap_or_default().to_owned();
            (
                field("relay"),
                field("transport"),
                field("candidate"),
                field("echo"),
            )
        })
        .collect();
    assert_eq!(from_table, from_results);
    let all: BTreeSet<(String, String)> = from_results
        .iter()
        .map(|(r, t, _, _)| (r.clone(), t.clone()))
        .collect();
    let want: BTreeSet<(String, String)> = RELAYS
        .iter()
        .flat_map(|&n| TRANSPORTS.map(|t| (relay_ip(n).to_string(), t.to_owned())))
        .collect();
    assert_eq!(all, want, "one row per relay and transport");
    assert_eq!(from_results.len(), 9);
}

#[test]
fn the_selftest_page_checks_every_relay_and_transport_and_shows_a_stopped_one() {
    let pki = Pki::new();
    let first = relay(2, &pki, None);
    // The endpoint probes every relay's /readyz on one port number: the
    // others take relay 2's, each on its own address.
    let admin_port = first.admin_port.expect("admin port");
    let relays = [
        first,
        relay(3, &pki, Some(admin_port)),
        relay(4, &pki, Some(admin_port)),
    ];
    let fleet: Vec<(u8, &TestServer)> = RELAYS.iter().copied().zip(relays.iter()).collect();
    let dir = tempfile::tempdir().unwrap();
    let endpoint = endpoint(&fleet, admin_port, dir.path());
    wait_for_health(&endpoint, &[(2, "healthy"), (3, "healthy"), (4, "healthy")]);

    // Everything up: nine rows, each with a relay candidate and an echo.
    let tokens = format!(
        "token={}&admin_token={}",
        query_escape(ICE_TOKEN),
        query_escape(ADMIN_TOKEN)
    );
    let up = run_page(&endpoint, &pki, &tokens, "selftest.png");
    let context = format!("{:#}", up.results);
    assert_eq!(up.results["done"], true, "{context}");
    assert_eq!(up.results["error"], Value::Null, "{context}");
    assert_eq!(up.results["fleetError"], Value::Null, "{context}");
    assert_table(&up);
    for (n, relay) in &fleet {
        for transport in TRANSPORTS {
            assert_passed(&up, *n, relay, transport, "healthy");
        }
    }
    assert_eq!(up.results["ok"], true, "{context}");

    // Relay 3 stopped: it answers nothing (its sockets stay open, so TCP
    // still connects and TLS hangs). Once the endpoint has seen it fail,
    // the page tests it from /v1/fleet though /ice-servers leaves it out.
    relays[1].signal(libc::SIGSTOP);
    wait_for_health(
        &endpoint,
        &[(2, "healthy"), (3, "unhealthy"), (4, "healthy")],
    );
    let down = run_page(&endpoint, &pki, &tokens, "selftest-relay3-stopped.png");
    let context = format!("{:#}", down.results);
    // Continued before anything can fail, so the relay stops normally.
    relays[1].signal(libc::SIGCONT);
    assert_eq!(down.results["done"], true, "{context}");
    assert_eq!(down.results["error"], Value::Null, "{context}");
    assert_eq!(down.results["ok"], false, "{context}");
    assert_table(&down);
    for transport in TRANSPORTS {
        let row = down.row(3, transport);
        let what = format!("127.0.0.3 {transport}: {row:#}");
        assert_eq!(row["handedOut"], false, "{what}");
        assert_eq!(row["candidate"], false, "{what}");
        assert!(row["gatherError"].is_string(), "{what}");
        assert_eq!(row["echo"], false, "{what}");
        assert!(row["echoError"].is_string(), "{what}");
        assert_eq!(row["health"], "unhealthy", "{what}");
    }
    for (n, relay) in [fleet[0], fleet[2]] {
        for transport in TRANSPORTS {
            assert_passed(&down, n, relay, transport, "healthy");
        }
    }

    // Relay 3 back, and no admin token: every row passes, health is
    // unavailable (the page says why).
    wait_for_health(&endpoint, &[(2, "healthy"), (3, "healthy"), (4, "healthy")]);
    let without_admin = format!("token={}", query_escape(ICE_TOKEN));
    let unknown = run_page(
        &endpoint,
        &pki,
        &without_admin,
        "selftest-no-admin-token.png",
    );
    let context = format!("{:#}", unknown.results);
    assert!(
        unknown.results["fleetError"]
            .as_str()
            .is_some_and(|e| e.contains("401")),
        "{context}"
    );
    assert_table(&unknown);
    for (n, relay) in &fleet {
        for transport in TRANSPORTS {
            assert_passed(&unknown, *n, relay, transport, "unavailable");
        }
    }
    eprintln!(
        "[selftest] runs: all up {:?}, relay 3 stopped {:?}, no admin token {:?}",
        up.took, down.took, unknown.took
    );
}
