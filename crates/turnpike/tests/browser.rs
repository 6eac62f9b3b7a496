//! A real browser relays through Turnpike: headless Chromium fetches an
//! RTCConfiguration from a URL and, relay-only, opens a WebRTC data
//! channel between two peer connections of one page, every message going
//! through the test server's relays (tests/support/browser.rs: the page,
//! the site serving it, the browser).
//!
//! Each case checks the page's word (every message intact both ways, only
//! relay candidates, the selected pair relay to relay on the server's
//! relay address, reached over the expected transport) against the
//! server's (`GET /v1/allocations`: the selected pair's two relayed
//! addresses are live allocations of the expected user and transport,
//! and they relayed at least the messages' bytes).
//!
//! Cases: TURN over UDP with a static user and a configuration fetched
//! with a bearer token; over TCP with time-limited (REST) credentials
//! minted by `turnpike credentials`; over TLS (`turns:`) with the test
//! PKI's root trusted through NSS, and refused when it is not trusted.
//!
//! The configuration is served by the test's own site, and in the last
//! case by Turnpike's ICE-server endpoint (`ice.enabled`), fetched
//! cross-origin with its token: credentials minted per request, CORS for
//! the site's origin.

mod support;

use std::net::SocketAddr;

use serde_json::{Value, json};

use support::browser::{Chromium, RelayReport, Site, SiteOptions, relay_check};
use support::pki::{KeyType, Pki};
use support::{
    PRIMARY_V4, RELAY_MAX_PORT, RELAY_MIN_PORT, ServerOptions, TURN_PASSWORD, TURN_USER,
    TestServer, TlsFiles, admin_get,
};

/// The secret of the REST credentials case.
const REST_SECRET: &str = "browser-secret";

/// A TURN server on loopback (relays on 127.0.0.1, loopback peers allowed:
/// the other peer connection's relayed address is a loopback one) with
/// the admin endpoint, the shared secret, and TLS when `pki` is given.
fn server(pki: Option<&Pki>) -> TestServer {
    let mut options = ServerOptions {
        admin: true,
        ..ServerOptions::turn()
    };
    if let Some(turn) = options.turn.as_mut() {
        turn.secrets = vec![REST_SECRET.to_owned()];
    }
    if let Some(pki) = pki {
        let leaf = pki.leaf("turn-browser", KeyType::EcP256Pkcs8, 2);
        options.tls = Some(TlsFiles {
            // The leaf then the intermediate: the browser trusts the root
            // only, so the served chain must be whole.
            certificate: leaf.chain,
            private_key: Some(leaf.key),
        });
    }
    TestServer::start(options)
}

/// An RTCConfiguration with one ICE server.
fn rtc_config(url: &str, username: &str, credential: &str) -> String {
    json!({
        "iceServers": [{ "urls": [url], "username": username, "credential": credential }],
        "iceTransportPolicy": "relay",
    })
    .to_string()
}

/// Username and password minted by `turnpike credentials` from the
/// server's secret, as the configuration endpoint will hand them out.
fn rest_credentials(server: &TestServer) -> (String, String) {
    let out = server.admin(&["credentials", "--user-id", "browser", "--ttl", "600"]);
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name:?} in {out}"))
            .trim()
            .to_owned()
    };
    (field("username:"), field("password:"))
}

/// What one case expects of a successful run.
struct Expect<'a> {
    /// The ICE server URL of the configuration.
    url: &'a str,
    /// The selected local candidate's `relayProtocol`: udp, tcp or tls.
    relay_protocol: &'a str,
    /// The allocations' `transport` on the server's side.
    transport: &'a str,
    /// The allocations' user.
    user: &'a str,
}

/// The live allocations.
fn allocations(server: &TestServer) -> Vec<Value> {
    let body = admin_get(server, "/v1/allocations");
    let page: Value = serde_json::from_str(&body).expect("/v1/allocations is JSON");
    page["allocations"]
        .as_array()
        .unwrap_or_else(|| panic!("no allocations list in {body}"))
        .clone()
}

/// The allocation whose relayed addresses include `relayed`.
fn allocation_of(all: &[Value], relayed: SocketAddr) -> Option<&Value> {
    let text = relayed.to_string();
    all.iter().find(|a| {
        a["relayed"]
            .as_array()
            .is_some_and(|r| r.iter().any(|v| v.as_str() == Some(&text)))
    })
}

/// Asserts everything `report` and the server say about a run that
/// should have succeeded.
fn assert_relayed(what: &str, report: &RelayReport, server: &TestServer, expect: &Expect) {
    let context = report.describe();
    assert!(report.ok, "{what}: the page failed\n{context}");
    assert_eq!(report.error, None, "{what}\n{context}");
    assert_eq!(report.expected, 20, "{what}: messages sent\n{context}");
    assert_eq!(
        report.received, report.expected,
        "{what}: messages intact at the answering side\n{context}"
    );
    assert_eq!(
        report.echoed, report.expected,
        "{what}: messages echoed back intact\n{context}"
    );

    // Relay-only: each side gathered candidates, all of them relayed
    // addresses on the server's relay address, from our ICE server.
    for side in ["a", "b"] {
        assert!(
            report
                .candidates
                .iter()
                .any(|c| c.side.as_deref() == Some(side)),
            "{what}: side {side} gathered no candidate\n{context}"
        );
    }
    for c in &report.candidates {
        assert_eq!(c.kind.as_deref(), Some("relay"), "{what}: {c:?}\n{context}");
        assert_eq!(
            c.address.as_deref(),
            Some("127.0.0.1"),
            "{what}: {c:?}\n{context}"
        );
        assert_eq!(
            c.url.as_deref(),
            Some(expect.url),
            "{what}: {c:?}\n{context}"
        );
    }

    // The selected pair, seen from both connections: relay to relay, each
    // a relayed address of the server, the local one reached over the
    // expected transport.
    let mut relayed = Vec::new();
    for (side, pair) in [
        ("a", &report.selected_pair),
        ("b", &report.remote_selected_pair),
    ] {
        let pair = pair
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: no selected pair on side {side}\n{context}"));
        let (local, remote) = match (&pair.local, &pair.remote) {
            (Some(l), Some(r)) => (l, r),
            _ => panic!("{what}: side {side}'s pair lacks a candidate: {pair:?}\n{context}"),
        };
        for c in [local, remote] {
            assert_eq!(
                c.kind.as_deref(),
                Some("relay"),
                "{what}: side {side}'s selected pair {pair:?}\n{context}"
            );
            let ep = c
                .endpoint()
                .unwrap_or_else(|| panic!("{what}: no address in {c:?}\n{context}"));
            assert_eq!(ep.ip(), PRIMARY_V4, "{what}: {c:?}\n{context}");
            assert!(
                (RELAY_MIN_PORT..=RELAY_MAX_PORT).contains(&ep.port()),
                "{what}: {c:?} is not on a relay port\n{context}"
            );
        }
        assert_eq!(
            local.relay_protocol.as_deref(),
            Some(expect.relay_protocol),
            "{what}: side {side} reaches the server over {:?}\n{context}",
            local.relay_protocol
        );
        assert_eq!(local.url.as_deref(), Some(expect.url), "{what}\n{context}");
        relayed.push(local.endpoint().expect("checked above"));
        assert!(
            pair.bytes_sent.unwrap_or(0) >= report.bytes,
            "{what}: side {side}'s pair sent {:?} bytes, the messages are {}\n{context}",
            pair.bytes_sent,
            report.bytes
        );
    }
    let (a, b) = (relayed[0], relayed[1]);
    assert_ne!(a, b, "{what}: both sides on one relayed address\n{context}");
    let remote_of_a = report
        .selected_pair
        .as_ref()
        .and_then(|p| p.remote.as_ref())
        .and_then(|c| c.endpoint());
    assert_eq!(
        remote_of_a,
        Some(b),
        "{what}: a's pair does not lead to b's relayed address\n{context}"
    );

    // The server's side: both relayed addresses are live allocations of
    // the configured user over the expected transport, each of which sent
    // at least the messages to the other (a's messages one way, b's
    // echoes the other), plus DTLS and SCTP.
    let all = allocations(server);
    for (side, ep) in [("a", a), ("b", b)] {
        let alloc = allocation_of(&all, ep).unwrap_or_else(|| {
            panic!(
                "{what}: no allocation on the server relays {ep} (side {side}): {all:#?}\n{context}"
            )
        });
        assert_eq!(alloc["user"].as_str(), Some(expect.user), "{what}: {alloc}");
        assert_eq!(
            alloc["transport"].as_str(),
            Some(expect.transport),
            "{what}: {alloc}"
        );
        assert_eq!(alloc["relay_kind"].as_str(), Some("udp"), "{what}: {alloc}");
        let sent = alloc["to_peer_bytes"].as_u64().unwrap_or(0);
        assert!(
            sent >= report.bytes,
            "{what}: side {side}'s allocation relayed {sent} bytes to its peer, the messages \
             are {} bytes: {alloc}",
            report.bytes
        );
        let peer_ip = PRIMARY_V4.to_string();
        assert!(
            alloc["permissions"]
                .as_array()
                .is_some_and(|p| p.iter().any(|ip| ip.as_str() == Some(&peer_ip))),
            "{what}: no permission for the other side's relay: {alloc}"
        );
    }
}

#[test]
fn udp_static_user_config_fetched_with_a_token() {
    let server = server(None);
    let url = format!("turn:127.0.0.1:{}?transport=udp", server.port);
    let site = Site::start(SiteOptions {
        config: Some(rtc_config(&url, TURN_USER, TURN_PASSWORD)),
        token: Some("page-token".to_owned()),
    });
    let mut browser = Chromium::new();
    let report = relay_check(&site, &mut browser, "/config.json", Some("page-token"));
    assert_relayed(
        "TURN over UDP",
        &report,
        &server,
        &Expect {
            url: &url,
            relay_protocol: "udp",
            transport: "udp",
            user: TURN_USER,
        },
    );
    // The page sent the token (the site refuses the configuration
    // without it), and fetched the configuration once.
    let fetches: Vec<_> = site
        .requests()
        .into_iter()
        .filter(|r| r.target == "/config.json")
        .collect();
    assert_eq!(fetches.len(), 1, "{}", site.describe());
    assert_eq!(
        fetches[0].authorization.as_deref(),
        Some("Bearer page-token"),
        "{}",
        site.describe()
    );
    assert_eq!(fetches[0].status, 200, "{}", site.describe());
}

#[test]
fn tcp_rest_credentials() {
    let server = server(None);
    let (username, password) = rest_credentials(&server);
    let url = format!("turn:127.0.0.1:{}?transport=tcp", server.port);
    let site = Site::start(SiteOptions {
        config: Some(rtc_config(&url, &username, &password)),
        token: None,
    });
    let mut browser = Chromium::new();
    let report = relay_check(&site, &mut browser, "/config.json", None);
    assert_relayed(
        "TURN over TCP, REST credentials",
        &report,
        &server,
        &Expect {
            url: &url,
            relay_protocol: "tcp",
            transport: "tcp",
            user: &username,
        },
    );
}

#[test]
fn tls_with_the_test_ca_trusted() {
    let pki = Pki::new();
    let server = server(Some(&pki));
    let tls_port = server.tls_port.expect("TLS configured");
    let url = format!("turns:127.0.0.1:{tls_port}?transport=tcp");
    let site = Site::start(SiteOptions {
        config: Some(rtc_config(&url, TURN_USER, TURN_PASSWORD)),
        token: None,
    });
    let mut browser = Chromium::new();
    browser.trust(pki.root());
    let report = relay_check(&site, &mut browser, "/config.json", None);
    assert_relayed(
        "TURN over TLS",
        &report,
        &server,
        &Expect {
            url: &url,
            relay_protocol: "tls",
            transport: "tls",
            user: TURN_USER,
        },
    );
}

/// Without the test CA among its roots the browser refuses the server's
/// certificate: no relay, no connection. (So the trust above is what
/// makes the TLS case pass, not a browser that checks nothing.)
#[test]
fn tls_without_the_ca_fails() {
    let pki = Pki::new();
    let server = server(Some(&pki));
    let tls_port = server.tls_port.expect("TLS configured");
    let url = format!("turns:127.0.0.1:{tls_port}?transport=tcp");
    let site = Site::start(SiteOptions {
        config: Some(rtc_config(&url, TURN_USER, TURN_PASSWORD)),
        token: None,
    });
    let mut browser = Chromium::new();
    let report = relay_check(&site, &mut browser, "/config.json", None);
    let context = report.describe();
    assert!(!report.ok, "relayed through an untrusted server\n{context}");
    assert!(
        report.candidates.is_empty(),
        "candidates gathered through an untrusted server\n{context}"
    );
    assert!(
        report
            .candidate_errors
            .iter()
            .any(|e| e["url"].as_str() == Some(&url) && e["errorCode"].as_u64() == Some(701)),
        "no candidate error for {url}\n{context}"
    );
    assert!(
        allocations(&server).is_empty(),
        "allocations without a trusted TLS connection\n{context}"
    );
}

/// The page fetches its configuration from Turnpike's own ICE-server
/// endpoint, cross-origin (CORS for the site's origin) with the endpoint's
/// bearer token, and relays with the credentials it minted.
#[test]
fn config_from_the_ice_endpoint() {
    const ICE_TOKEN: &str = "ice-browser-token-0123";
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("ice.token");
    std::fs::write(&token_file, ICE_TOKEN).unwrap();
    let site = Site::start(SiteOptions {
        config: None,
        token: None,
    });
    let origin = site.url("");
    let mut options = ServerOptions {
        admin: true,
        extra_config: format!(
            "[ice]\nenabled = true\nauth = \"token\"\ntoken_file = \"{}\"\n\
             cors_origins = [\"{origin}\"]\nrelay_only = true\n\n\
             [discovery]\nrelays = [\"turn:127.0.0.1:@PORT@?transport=udp\"]\nprobe_interval = 1\n",
            token_file.display()
        ),
        ..ServerOptions::turn()
    };
    if let Some(turn) = options.turn.as_mut() {
        turn.secrets = vec![REST_SECRET.to_owned()];
    }
    let server = TestServer::start(options);
    let endpoint = format!(
        "http://127.0.0.1:{}/ice-servers",
        server.admin_port.expect("admin port")
    );
    let mut browser = Chromium::new();
    let report = relay_check(&site, &mut browser, &endpoint, Some(ICE_TOKEN));
    // The user is the one the endpoint minted: a REST username, an expiry
    // a day ahead (ice.ttl's default), the same on both sides.
    let users: Vec<String> = allocations(&server)
        .iter()
        .filter_map(|a| a["user"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(users.len(), 2, "{users:?}\n{}", report.describe());
    assert_eq!(users[0], users[1]);
    let expiry: u64 = users[0].parse().expect("a REST username");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(expiry > now + 86_000, "{expiry}");
    let url = format!("turn:127.0.0.1:{}?transport=udp", server.port);
    assert_relayed(
        "config from the ICE endpoint",
        &report,
        &server,
        &Expect {
            url: &url,
            relay_protocol: "udp",
            transport: "udp",
            user: &users[0],
        },
    );
}
