//! Draining and graceful shutdown against real clients: sessions of
//! `turnutils_uclient` over UDP, TCP and TLS (and through the XDP fast
//! path) relay to their end with no loss while a drain refuses every new
//! Allocate (508 "Draining", or 300 with ALTERNATE-SERVER, which uclient
//! and our own client follow to the alternate); `/readyz`, the metric and
//! `turnpike drain`/`undrain` follow; `drain.exit_when_empty` stops the
//! process once the last allocation ends; SIGTERM drains for the grace
//! period, a second SIGTERM or a SIGINT stops at once, and one line says
//! what was cut short.

mod support;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use support::pki::{KeyType, Pki};
use support::uclient::{Run, assert_delivered, assert_redirected_and_delivered};
use support::{
    PRIMARY_V4, Peer, ServerOptions, TestServer, TlsFiles, ToolOutput, UclientReport,
    admin_request, allocate, allocations, eventually, private_network_namespace, redirected,
};
use turnpike_client::ClientError;

const TOKEN: &str = "drain-test-token-0123456789abcdef";

/// Messages per uclient session: about 4 s of sending, long enough for a
/// drain to start in the middle.
const MESSAGES: u64 = 200;
const LENGTH: u64 = 100;

fn v4() -> IpAddr {
    PRIMARY_V4.into()
}

/// A TURN server with the admin endpoint behind a token.
fn admin_options() -> ServerOptions {
    ServerOptions {
        admin: true,
        admin_token: Some(TOKEN),
        ..ServerOptions::turn()
    }
}

/// `/v1/drain`: (draining, allocations).
fn drain_state(server: &TestServer) -> (bool, u64) {
    let (status, body) = admin_request(server, "GET", "/v1/drain");
    assert_eq!(status, 200, "{body}");
    let state: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    (
        state["draining"].as_bool().expect("draining"),
        state["allocations"].as_u64().expect("allocations"),
    )
}

/// `turnpike_draining` on `/metrics`.
fn draining_metric(server: &TestServer) -> String {
    let (status, text) = admin_request(server, "GET", "/metrics");
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix("turnpike_draining "))
        .unwrap_or_else(|| panic!("no turnpike_draining in {text}"))
        .to_owned()
}

/// `transport/relay_kind` of the allocations that relayed something to
/// their peer (uclient's UDP-relay sessions once they send; its probe
/// allocations never do), without repeats.
fn relaying(server: &TestServer) -> Vec<String> {
    let mut kinds: Vec<String> = allocations(server)
        .iter()
        .filter(|a| a["to_peer_packets"].as_u64().unwrap_or(0) > 0)
        .map(|a| {
            format!(
                "{}/{}",
                a["transport"].as_str().unwrap_or_default(),
                a["relay_kind"].as_str().unwrap_or_default()
            )
        })
        .collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

/// Live TCP allocations (RFC 6062).
fn tcp_relays(server: &TestServer) -> usize {
    allocations(server)
        .iter()
        .filter(|a| a["relay_kind"] == "tcp")
        .count()
}

/// What a draining server without an alternate answers a new Allocate.
async fn assert_refused_with_508(server: SocketAddr) {
    match allocate(server).await {
        Err(ClientError::ErrorResponse { code: 508, reason }) => assert_eq!(reason, "Draining"),
        Err(other) => panic!("a new Allocate while draining: {other}"),
        Ok(_) => panic!("a new Allocate while draining succeeded"),
    }
}

/// A UDP peer of our own, and whether a datagram reaches it.
fn udp_peer() -> UdpSocket {
    let peer = UdpSocket::bind((PRIMARY_V4, 0)).expect("peer socket");
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    peer
}

fn arrives(peer: &UdpSocket, expected: &[u8]) -> bool {
    let mut buf = [0u8; 2048];
    matches!(peer.recv_from(&mut buf), Ok((n, _)) if &buf[..n] == expected)
}

/// Starts uclient runs in threads of their own (each spawned, and killed
/// at its deadline, by its thread).
fn start_runs(
    server: &TestServer,
    peer: &Peer,
    runs: &[(&'static str, Vec<&'static str>, Option<u16>)],
) -> Vec<(
    &'static str,
    thread::JoinHandle<(ToolOutput, UclientReport)>,
)> {
    runs.iter()
        .map(|(what, args, port)| {
            let mut run = Run::new(server, v4(), args).peer(peer, v4());
            if let Some(port) = port {
                run = run.port(*port);
            }
            (*what, run.spawn())
        })
        .collect()
}

fn session_args(extra: &[&'static str]) -> Vec<&'static str> {
    let mut args = extra.to_vec();
    args.extend(["-c", "-n", "200", "-l", "100"]);
    args
}

/// uclient sessions over UDP, TCP and TLS are relaying when the drain
/// starts: every message of each comes back, while a new Allocate (ours,
/// and uclient's) gets 508 "Draining".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_relay_to_their_end_while_new_allocations_get_508() {
    let pki = Pki::new();
    let leaf = pki.leaf("turn1", KeyType::EcP256Sec1, 2);
    let server = TestServer::start(ServerOptions {
        tls: Some(TlsFiles {
            certificate: leaf.chain,
            private_key: Some(leaf.key),
        }),
        ..admin_options()
    });
    let peer = Peer::start(&[v4()]);
    let tls = server.tls_port.expect("TLS configured");
    let runs = start_runs(
        &server,
        &peer,
        &[
            ("udp", session_args(&[]), None),
            ("tcp", session_args(&["-t"]), None),
            ("tls", session_args(&["-t", "-S"]), Some(tls)),
            // RFC 6062: two clients relaying to each other over TCP relays
            // (-T implies -y), Connect and ConnectionBind included.
            (
                "tcp relay",
                vec!["-T", "-m", "2", "-n", "100", "-l", "100"],
                None,
            ),
        ],
    );
    // Each UDP-relay session relays (uclient waits 1-6 s before it sends),
    // and both TCP relays are allocated.
    eventually("every session relays", Duration::from_secs(30), || {
        relaying(&server) == ["tcp/udp", "tls/udp", "udp/udp"] && tcp_relays(&server) >= 2
    });
    let (status, body) = admin_request(&server, "POST", "/v1/drain");
    assert_eq!(status, 200, "{body}");
    let state: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(state["draining"], true, "{body}");
    assert!(state["allocations"].as_u64().unwrap() >= 3, "{body}");

    // New allocations are refused, from our client and from uclient.
    assert_refused_with_508(server.v4()).await;
    let (out, rep) = Run::new(&server, v4(), &["-c", "-n", "5"])
        .peer(&peer, v4())
        .go();
    assert!(
        rep.error_responses()
            .iter()
            .any(|&(_, code, reason)| code == 508 && reason == "Draining"),
        "uclient's Allocate while draining: {:?}\n{}",
        rep.error_responses(),
        out.describe()
    );
    assert_ne!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(rep.send_msgs, None, "{}", out.describe());

    // The sessions that were relaying finish, every message back.
    for (what, run) in runs {
        let (out, rep) = run.join().expect("uclient thread");
        assert_delivered(what, &out, &rep, MESSAGES, LENGTH);
    }
    assert!(drain_state(&server).0, "still draining");
}

/// `/readyz` fails and `turnpike_draining` is 1 while draining, both come
/// back with `turnpike undrain`; `turnpike drain --wait --timeout 2` with
/// an allocation left exits 1 and says how many, and returns at once when
/// none is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_metric_and_the_drain_commands() {
    let server = TestServer::start(admin_options());
    eventually("ready", Duration::from_secs(5), || {
        admin_request(&server, "GET", "/readyz").0 == 200
    });
    assert_eq!(draining_metric(&server), "0");
    let client = allocate(server.v4()).await.expect("allocated");

    let drained = server.command(&["drain"]);
    assert_eq!(
        drained.ok_lines(),
        ["draining: new allocations are refused; 1 allocation left (turnpike undrain to stop)"]
    );
    let (status, reason) = admin_request(&server, "GET", "/readyz");
    assert_eq!((status, reason.as_str()), (503, "not ready: draining\n"));
    assert_eq!(admin_request(&server, "GET", "/healthz").0, 200);
    assert_eq!(draining_metric(&server), "1");
    let (_, body) = admin_request(&server, "GET", "/v1/status");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status["draining"].as_bool(), status["ready"].as_bool()),
        (Some(true), Some(false)),
        "{body}"
    );
    assert_refused_with_508(server.v4()).await;

    // The wait gives up at its timeout, with the count.
    let started = Instant::now();
    let timed_out = server.command(&["drain", "--wait", "--timeout", "2"]);
    let waited = started.elapsed();
    assert_eq!(timed_out.status, 1, "{}", timed_out.stderr);
    assert_eq!(
        timed_out.single_error_line(),
        "turnpike: error: still 1 allocation after 2 s of draining; the server keeps draining (turnpike undrain to stop it)"
    );
    assert_eq!(timed_out.stdout, "draining: 1 allocation left\n");
    assert!(
        (Duration::from_secs(2)..Duration::from_secs(6)).contains(&waited),
        "{waited:?}"
    );

    let undrained = server.command(&["undrain"]);
    assert_eq!(
        undrained.ok_lines(),
        ["not draining: new allocations are made again; 1 allocation live"]
    );
    assert_eq!(admin_request(&server, "GET", "/readyz").0, 200);
    assert_eq!(draining_metric(&server), "0");
    let another = allocate(server.v4()).await.expect("allocations again");

    // Once they are gone, the wait ends at once.
    for mut c in [client, another] {
        c.refresh(0).await.expect("deleted");
    }
    let done = server.command(&["drain", "--wait", "--timeout", "10"]);
    assert_eq!(done.ok_lines(), ["drained: no allocation left"]);
    assert_eq!(drain_state(&server), (true, 0));
}

/// With an alternate configured, a new Allocate gets a signed 300 naming
/// it. Our client follows it by hand; uclient follows it by itself (its
/// probe Allocate learns the alternate, and its sessions go there), and
/// relays through the alternate with no loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_allocations_are_sent_to_the_alternate_which_serves_them() {
    let alternate = TestServer::start(admin_options());
    let server = TestServer::start(ServerOptions {
        drain_alternates: vec![alternate.v4()],
        ..admin_options()
    });
    let drained = server.command(&["drain"]);
    assert_eq!(drained.status, 0, "{}", drained.stderr);

    let sent_to = redirected(server.v4()).await;
    assert_eq!(sent_to, alternate.v4());
    let mut client = allocate(sent_to).await.expect("the alternate allocates");
    let peer = udp_peer();
    let peer_addr = peer.local_addr().unwrap();
    client
        .create_permission(&[peer_addr])
        .await
        .expect("permission");
    client
        .send_indication(peer_addr, b"through the alternate")
        .await
        .expect("send");
    assert!(arrives(&peer, b"through the alternate"));
    client.refresh(0).await.expect("deleted");

    // uclient: its probe Allocate gets the 300 and learns the alternate
    // (checking the response's MESSAGE-INTEGRITY first), and its session
    // connects there instead.
    let udp_peer = Peer::start(&[v4()]);
    let (out, rep) = Run::new(&server, v4(), &["-v", "-c", "-n", "20", "-l", "100"])
        .peer(&udp_peer, v4())
        .go();
    assert_redirected_and_delivered(&out, &rep, alternate.v4(), 20);
    // It was the alternate that relayed (the echoes came back through it;
    // our own peer above echoes nothing), and nothing is left on either.
    assert_eq!(
        relayed_packets(&alternate, "to_client"),
        20,
        "the echoes came back through the alternate"
    );
    assert_eq!(relayed_packets(&server, "to_peer"), 0);
    assert_eq!(relayed_packets(&server, "to_client"), 0);
    assert_eq!(drain_state(&server), (true, 0));
    assert_eq!(allocations(&alternate), Vec::<serde_json::Value>::new());
}

/// `turnpike_relayed_packets_total` of the sockets path, `direction`.
fn relayed_packets(server: &TestServer, direction: &str) -> u64 {
    let (status, text) = admin_request(server, "GET", "/metrics");
    assert_eq!(status, 200, "{text}");
    let sample =
        format!("turnpike_relayed_packets_total{{direction=\"{direction}\",path=\"sockets\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&sample))
        .map_or(0, |v| v.parse().expect("a count"))
}

/// `drain.exit_when_empty`: once draining, the process exits with status
/// 0 when its last allocation ends, and says nothing was cut short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_when_empty_stops_the_process_once_the_last_allocation_ends() {
    let mut server = TestServer::start(ServerOptions {
        exit_when_empty: true,
        ..admin_options()
    });
    let mut client = allocate(server.v4()).await.expect("allocated");
    let drained = server.command(&["drain"]);
    assert_eq!(drained.status, 0, "{}", drained.stderr);
    // Still serving the allocation it holds.
    assert_eq!(drain_state(&server), (true, 1));
    let peer = udp_peer();
    let peer_addr = peer.local_addr().unwrap();
    client
        .create_permission(&[peer_addr])
        .await
        .expect("permission");
    client
        .send_indication(peer_addr, b"still")
        .await
        .expect("send");
    assert!(arrives(&peer, b"still"));

    client.refresh(0).await.expect("deleted");
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}\n{}", server.output());
    let output = server.output();
    assert!(
        output.contains(
            "stopped (drained: the last allocation ended (drain.exit_when_empty)): no allocation was cut short"
        ),
        "{output}"
    );
}

/// Lines of `output` that say what was cut short.
fn cut_short_lines(output: &str) -> Vec<&str> {
    output.lines().filter(|l| l.contains("cut short")).collect()
}

/// SIGTERM drains: the allocation keeps relaying and new ones are refused
/// until the grace period ends, then the process exits (status 0) having
/// ended the allocation (its accounting line) and logged one line saying
/// so. A second SIGTERM, or a SIGINT, during the grace exits at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_for_the_grace_period_and_a_second_signal_stops_at_once() {
    const GRACE: Duration = Duration::from_secs(3);
    let mut server = TestServer::start(ServerOptions {
        grace_period: 3,
        ..admin_options()
    });
    let mut client = allocate(server.v4()).await.expect("allocated");
    let peer = udp_peer();
    let peer_addr = peer.local_addr().unwrap();
    client
        .create_permission(&[peer_addr])
        .await
        .expect("permission");

    let signalled = Instant::now();
    server.signal(libc::SIGTERM);
    eventually("draining after SIGTERM", Duration::from_secs(2), || {
        drain_state(&server).0
    });
    assert_refused_with_508(server.v4()).await;
    client
        .send_indication(peer_addr, b"during the grace")
        .await
        .expect("send");
    assert!(arrives(&peer, b"during the grace"));
    let status = server.wait_exit(GRACE + Duration::from_secs(5));
    let took = signalled.elapsed();
    assert!(status.success(), "{status}\n{}", server.output());
    assert!(
        took >= GRACE && took < GRACE + Duration::from_secs(2),
        "exited {took:?} after SIGTERM, grace {GRACE:?}"
    );
    let output = server.output();
    let lines = cut_short_lines(&output);
    assert_eq!(lines.len(), 1, "one line says what was cut short\n{output}");
    assert!(
        lines[0].contains(
            "stopped (SIGTERM, and the grace period (3 s) is over): 1 allocation was cut short"
        ),
        "{output}"
    );
    assert!(
        output
            .lines()
            .any(|l| l.contains("allocation_ended") && l.contains("drained")),
        "the allocation's accounting line\n{output}"
    );

    // A second signal during a long grace stops at once.
    for (second, why) in [
        (libc::SIGTERM, "a second SIGTERM during the grace period"),
        (libc::SIGINT, "SIGINT during the grace period"),
    ] {
        let mut server = TestServer::start(ServerOptions {
            grace_period: 600,
            ..admin_options()
        });
        let _client = allocate(server.v4()).await.expect("allocated");
        server.signal(libc::SIGTERM);
        eventually("draining after SIGTERM", Duration::from_secs(2), || {
            drain_state(&server).0
        });
        let signalled = Instant::now();
        server.signal(second);
        let status = server.wait_exit(Duration::from_secs(5));
        assert!(status.success(), "{status}\n{}", server.output());
        assert!(signalled.elapsed() < Duration::from_secs(2), "at once");
        let output = server.output();
        let lines = cut_short_lines(&output);
        assert_eq!(lines.len(), 1, "{output}");
        assert!(
            lines[0].contains(&format!("stopped ({why}): 1 allocation was cut short")),
            "{output}"
        );
    }

    // SIGINT alone (Ctrl-C) stops at once too.
    let mut server = TestServer::start(ServerOptions {
        grace_period: 600,
        ..admin_options()
    });
    let _client = allocate(server.v4()).await.expect("allocated");
    let signalled = Instant::now();
    server.signal(libc::SIGINT);
    let status = server.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{status}\n{}", server.output());
    assert!(signalled.elapsed() < Duration::from_secs(2), "at once");
    let output = server.output();
    assert_eq!(cut_short_lines(&output).len(), 1, "{output}");
    assert!(
        output.contains("stopped (SIGINT): 1 allocation was cut short"),
        "{output}"
    );
}

/// Through the XDP fast path: a session relaying in the kernel when the
/// drain starts delivers every message, the program relaying all of them;
/// SIGTERM then ends what is left after the grace period and detaches the
/// program.
#[test]
fn xdp_sessions_relay_to_their_end_and_sigterm_detaches_the_program() {
    private_network_namespace();
    let mut server = TestServer::start(ServerOptions {
        xdp: true,
        grace_period: 2,
        ..admin_options()
    });
    let peer = Peer::start(&[v4()]);
    let runs = start_runs(&server, &peer, &[("udp over xdp", session_args(&[]), None)]);
    eventually("the session relays", Duration::from_secs(30), || {
        relaying(&server) == ["udp/udp"]
    });
    let (status, body) = admin_request(&server, "POST", "/v1/drain");
    assert_eq!(status, 200, "{body}");
    for (what, run) in runs {
        let (out, rep) = run.join().expect("uclient thread");
        assert_delivered(what, &out, &rep, MESSAGES, LENGTH);
    }
    let (_, metrics) = admin_request(&server, "GET", "/metrics");
    for direction in ["to_peer", "to_client"] {
        let sample =
            format!("turnpike_xdp_relayed_packets_total{{direction=\"{direction}\"}} {MESSAGES}");
        assert!(
            metrics.lines().any(|l| l == sample),
            "{sample} in\n{metrics}"
        );
    }
    // uclient's probe allocation is left: SIGTERM ends it after the grace.
    assert_eq!(drain_state(&server), (true, 1));
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}\n{}", server.output());
    let output = server.output();
    assert!(
        output.contains(
            "stopped (SIGTERM, and the grace period (2 s) is over): 1 allocation was cut short"
        ),
        "{output}"
    );
    let link = support::run("ip", &["-details", "link", "show", "lo"]);
    assert!(
        !link.stdout.contains("xdp"),
        "detached\n{}",
        link.describe()
    );
}
