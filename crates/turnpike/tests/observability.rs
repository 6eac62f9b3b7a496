//! What operators see of a running server, against real clients:
//! `/metrics` (read with a Prometheus parser) moves by what
//! `turnutils_uclient` sent over UDP, TCP, TLS and DTLS; `/v1/allocations`
//! lists what a client holds; a kicked user's session stops relaying and
//! its next Allocate is refused; restund's `turnstats` answers `nc` (the
//! netcat-traditional the runbook's `-q1` is for), as Wire's runbook asks
//! it; `/healthz` and `/readyz` answer the probes.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use support::pki::{KeyType, Pki};
use support::uclient::{Run, assert_delivered};
use support::{
    DatabaseOptions, PRIMARY_V4, Peer, ServerOptions, TURN_PASSWORD, TURN_USER, TestServer,
    TlsFiles, admin_request, eventually, run,
};
use turnpike_client::{AllocateParams, ClientError, Credentials, TurnClient};
use turnpike_store::testing::TestPostgres;

const TOKEN: &str = "observability-test-token-0123456789";

fn v4() -> IpAddr {
    PRIMARY_V4.into()
}

/// A TURN server with TLS and DTLS, the admin endpoint behind a token, and
/// restund's command port.
fn observed_server(pki: &Pki) -> TestServer {
    let leaf = pki.leaf("turn1", KeyType::EcP256Sec1, 2);
    TestServer::start(ServerOptions {
        tls: Some(TlsFiles {
            certificate: leaf.chain,
            private_key: Some(leaf.key),
        }),
        admin: true,
        admin_token: Some(TOKEN),
        restund: true,
        ..ServerOptions::turn()
    })
}

/// Every sample of `/metrics`, by name and sorted labels, read with a
/// Prometheus exposition parser.
fn scrape(server: &TestServer) -> HashMap<String, f64> {
    let (status, text) = admin_request(server, "GET", "/metrics");
    assert_eq!(status, 200, "{text}");
    let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("/metrics parses");
    let mut samples = HashMap::new();
    for s in parsed.samples {
        let mut labels: Vec<_> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let value = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            // Histograms and summaries are not compared here.
            _ => continue,
        };
        samples.insert(format!("{}{{{}}}", s.metric, labels.join(",")), value);
    }
    samples
}

/// One sample, 0 when absent (a family not yet shown).
fn value(samples: &HashMap<String, f64>, key: &str) -> f64 {
    samples.get(key).copied().unwrap_or(0.0)
}

/// How much each of `keys` moved between two scrapes.
fn moved(before: &HashMap<String, f64>, after: &HashMap<String, f64>, key: &str) -> f64 {
    value(after, key) - value(before, key)
}

#[test]
fn metrics_count_what_uclient_relayed_on_every_transport() {
    let pki = Pki::new();
    let server = observed_server(&pki);
    let peer = Peer::start(&[v4()]);
    let secure = server.tls_port.expect("TLS configured");
    // One session each (-c), channels, 20 x 200 bytes, echoed by the peer.
    let runs: [(&str, &[&str], Option<u16>); 4] = [
        ("udp", &["-c", "-n", "20", "-l", "200"], None),
        ("tcp", &["-t", "-c", "-n", "20", "-l", "200"], None),
        (
            "tls",
            &["-t", "-S", "-c", "-n", "20", "-l", "200"],
            Some(secure),
        ),
        ("dtls", &["-S", "-c", "-n", "20", "-l", "200"], Some(secure)),
    ];
    for (transport, args, port) in runs {
        let before = scrape(&server);
        let mut run = Run::new(&server, v4(), args).peer(&peer, v4());
        if let Some(port) = port {
            run = run.port(port);
        }
        let (out, rep) = run.go();
        assert_delivered(transport, &out, &rep, 20, 200);
        let after = scrape(&server);
        let relayed = |key: &str| moved(&before, &after, key);
        for direction in ["to_peer", "to_client"] {
            assert_eq!(
                relayed(&format!(
                    "turnpike_relayed_packets_total{{direction={direction},path=sockets}}"
                )),
                20.0,
                "{transport}: datagrams {direction}"
            );
            assert_eq!(
                relayed(&format!(
                    "turnpike_relayed_bytes_total{{direction={direction},path=sockets}}"
                )),
                4000.0,
                "{transport}: bytes {direction}"
            );
        }
        // uclient's probe allocation and the session's.
        assert_eq!(
            relayed("turnpike_allocations_created_total{}"),
            2.0,
            "{transport}"
        );
        assert!(
            relayed("turnpike_requests_total{method=allocate}") >= 2.0,
            "{transport}"
        );
        assert!(
            relayed("turnpike_auth_successes_total{}") >= 2.0,
            "{transport}"
        );
        assert!(
            relayed("turnpike_requests_total{method=channel_bind}") >= 1.0,
            "{transport}"
        );
        if transport != "udp" {
            assert!(
                relayed(&format!(
                    "turnpike_connections_accepted_total{{transport={transport}}}"
                )) >= 1.0,
                "{transport}: connections accepted"
            );
        }
        if matches!(transport, "tls" | "dtls") {
            assert!(
                relayed(&format!(
                    "turnpike_handshakes_total{{transport={transport}}}"
                )) >= 1.0,
                "{transport}: handshakes"
            );
        }
    }
    let last = scrape(&server);
    assert_eq!(value(&last, "turnpike_workers{}"), 2.0);
    assert_eq!(value(&last, "turnpike_workers_silent{}"), 0.0);
    assert_eq!(value(&last, "turnpike_database_up{}"), 1.0);
}

/// A UDP peer of our own that tells what arrived.
fn udp_peer() -> UdpSocket {
    let peer = UdpSocket::bind((PRIMARY_V4, 0)).expect("peer socket");
    peer.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    peer
}

fn arrives(peer: &UdpSocket) -> bool {
    let mut buf = [0u8; 2048];
    peer.recv_from(&mut buf).is_ok()
}

#[tokio::test]
async fn allocations_are_listed_and_a_kicked_user_stops_relaying_and_is_refused() {
    let pki = Pki::new();
    let server = observed_server(&pki);
    let credentials = Credentials::new(TURN_USER, TURN_PASSWORD);
    let address = SocketAddr::new(v4(), server.port);
    let mut client = TurnClient::bind(address, credentials.clone())
        .await
        .expect("client socket");
    let allocation = client
        .allocate(AllocateParams::default())
        .await
        .expect("allocate");
    let peer = udp_peer();
    let peer_addr = peer.local_addr().unwrap();
    client
        .create_permission(&[peer_addr])
        .await
        .expect("permission");
    client
        .send_indication(peer_addr, b"before")
        .await
        .expect("send");
    assert!(arrives(&peer), "relayed before the kick");

    // The list names it as the client made it.
    let (status, body) = admin_request(&server, "GET", "/v1/allocations?user=alice");
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let listed = list["allocations"].as_array().expect("a list");
    assert_eq!(listed.len(), 1, "{body}");
    let one = &listed[0];
    assert_eq!(one["user"], TURN_USER);
    assert_eq!(one["transport"], "udp");
    assert_eq!(one["relay_kind"], "udp");
    assert_eq!(one["client"], client.local_addr().unwrap().to_string());
    assert_eq!(one["relayed"][0], allocation.relayed.to_string());
    assert_eq!(one["permissions"][0], peer_addr.ip().to_string());
    assert_eq!(one["to_peer_packets"], 1);
    assert_eq!(one["to_peer_bytes"], 6);

    // Kicked: the session stops relaying, a new Allocate is refused.
    let (status, body) = admin_request(&server, "DELETE", "/v1/users/alice/allocations");
    assert_eq!((status, body.trim()), (200, r#"{"ended":1}"#));
    client
        .send_indication(peer_addr, b"after")
        .await
        .expect("send");
    assert!(!arrives(&peer), "nothing relayed after the kick");
    let mut again = TurnClient::bind(address, credentials)
        .await
        .expect("client socket");
    match again.allocate(AllocateParams::default()).await {
        Err(ClientError::ErrorResponse { code: 403, .. }) => {}
        other => panic!("a kicked user's Allocate: {other:?}"),
    }
    let (_, body) = admin_request(&server, "GET", "/v1/allocations");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["allocations"],
        serde_json::json!([]),
        "{body}"
    );
}

#[test]
fn turnstats_answers_nc_as_in_wires_runbook() {
    let pki = Pki::new();
    let server = observed_server(&pki);
    let port = server.restund_port.expect("restund configured");
    let peer = Peer::start(&[v4()]);
    // uclient leaves its probe allocation behind until it expires.
    let (out, rep) = Run::new(&server, v4(), &["-v", "-c", "-n", "10", "-l", "100"])
        .peer(&peer, v4())
        .go();
    assert_delivered("before turnstats", &out, &rep, 10, 100);
    // The list shows it, as uclient printed it.
    let (status, body) = admin_request(&server, "GET", "/v1/allocations");
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let listed = list["allocations"].as_array().expect("a list");
    assert_eq!(listed.len(), 1, "the probe allocation: {body}");
    let printed: Vec<String> = rep
        .allocations()
        .iter()
        .filter_map(|a| a.relay())
        .map(|relay| relay.to_string())
        .collect();
    let relayed = listed[0]["relayed"][0].as_str().unwrap_or_default();
    assert!(
        printed.iter().any(|p| p == relayed),
        "listed {relayed}, uclient printed {printed:?}\n{}",
        out.describe()
    );
    assert_eq!(listed[0]["user"], TURN_USER);
    let answer = run(
        "sh",
        &[
            "-c",
            &format!(
                "echo turnstats | timeout 10 nc.traditional -u 127.0.0.1 {port} -q1 | grep allocs_cur"
            ),
        ],
    );
    assert_eq!(answer.code(), Some(0), "{}", answer.describe());
    assert_eq!(
        answer.stdout.trim(),
        "allocs_cur 1",
        "{}",
        answer.describe()
    );
    // The rest of restund's lines, in its order.
    let socket = UdpSocket::bind((PRIMARY_V4, 0)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket.send_to(b"turnstats\n", (PRIMARY_V4, port)).unwrap();
    let mut buf = [0u8; 2048];
    let n = socket.recv(&mut buf).expect("an answer");
    let text = String::from_utf8_lossy(&buf[..n]);
    let keys: Vec<_> = text.lines().filter_map(|l| l.split(' ').next()).collect();
    assert_eq!(
        keys,
        [
            "allocs_cur",
            "allocs_tot",
            "bytes_tx",
            "bytes_rx",
            "bytes_tot",
            "chan_cur"
        ],
        "{text}"
    );
    assert!(text.contains("allocs_tot 2\n"), "{text}");
    assert!(text.contains("bytes_tx 1000\n"), "to peers: {text}");
    assert!(text.contains("bytes_rx 1000\n"), "from peers: {text}");
}

/// The status code of `GET path` sent without a token.
fn status_without_token(port: u16, path: &str) -> u16 {
    let mut stream = TcpStream::connect((PRIMARY_V4, port)).expect("connect to the admin endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    raw.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: {raw:?}"))
}

#[test]
fn probes_answer_without_the_token_and_the_rest_needs_it() {
    let pki = Pki::new();
    let server = observed_server(&pki);
    let port = server.admin_port.expect("admin configured");
    eventually("/readyz says ready", Duration::from_secs(5), || {
        admin_request(&server, "GET", "/readyz").0 == 200
    });
    assert_eq!(admin_request(&server, "GET", "/healthz").0, 200);
    for (path, status) in [
        ("/healthz", 200),
        ("/readyz", 200),
        ("/metrics", 401),
        ("/v1/status", 401),
        ("/v1/allocations", 401),
    ] {
        assert_eq!(status_without_token(port, path), status, "GET {path}");
    }
    let (status, body) = admin_request(&server, "GET", "/v1/status");
    assert_eq!(status, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(status["ready"], true, "{body}");
    let listeners = status["listeners"].as_array().expect("listeners");
    for transport in ["udp", "tcp", "tls", "dtls"] {
        assert!(
            listeners.iter().any(|l| l["transport"] == transport),
            "{transport} listener in {body}"
        );
    }
}

/// `/readyz` fails once the credential database has been unreachable for
/// longer than the grace period, and recovers with it; `/healthz` stays up
/// (the workers still turn, and sessions keep relaying).
#[test]
fn readiness_follows_the_credential_database() {
    let mut pg = TestPostgres::start();
    let server = TestServer::start(ServerOptions {
        admin: true,
        admin_token: Some(TOKEN),
        database: DatabaseOptions {
            url: Some(pg.url()),
            grace_period: 1,
            ..DatabaseOptions::default()
        },
        ..ServerOptions::turn()
    });
    let ready = || admin_request(&server, "GET", "/readyz");
    eventually("ready at first", Duration::from_secs(5), || {
        ready().0 == 200
    });
    pg.stop();
    // The secrets are re-read every second: the outage is noticed then,
    // and readiness goes once the grace period has passed.
    eventually(
        "not ready while PostgreSQL is down",
        Duration::from_secs(15),
        || ready().0 == 503,
    );
    let (_, reason) = ready();
    assert!(reason.contains("database unreachable"), "{reason}");
    assert_eq!(
        admin_request(&server, "GET", "/healthz").0,
        200,
        "still alive"
    );
    assert_eq!(value(&scrape(&server), "turnpike_database_up{}"), 0.0);
    pg.start_again();
    eventually(
        "ready again with PostgreSQL back",
        Duration::from_secs(30),
        || ready().0 == 200,
    );
    assert_eq!(value(&scrape(&server), "turnpike_database_up{}"), 1.0);
}
