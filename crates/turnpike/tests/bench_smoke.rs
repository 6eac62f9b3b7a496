//! `turnpike bench` against our own server: hundreds of allocations spread
//! over two workers, channels and Send indications, IPv4 and IPv6 — every
//! relayed message must come back. A correctness test of the relay fast
//! path at scale; the figures themselves belong to `scripts/bench-vs-coturn`.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::{ServerOptions, TURN_PASSWORD, TURN_USER, TestServer, run_tool};

/// Runs the generator with `extra` options; returns its key=value report.
fn bench(server: std::net::SocketAddr, extra: &[&str]) -> HashMap<String, String> {
    let server = server.to_string();
    let mut args: Vec<String> = [
        "bench",
        "--server",
        &server,
        "--username",
        TURN_USER,
        "--password",
        TURN_PASSWORD,
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--format",
        "kv",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = run_tool(
        env!("CARGO_BIN_EXE_turnpike"),
        &args,
        Duration::from_secs(60),
    );
    assert_eq!(
        out.code(),
        Some(0),
        "turnpike bench failed: {}",
        out.describe()
    );
    out.stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn assert_lossless(report: &HashMap<String, String>, allocations: &str, what: &str) {
    let get = |k: &str| report.get(k).map(String::as_str).unwrap_or("<missing>");
    assert_eq!(
        get("setup_allocated"),
        allocations,
        "{what}: allocations made: {report:?}"
    );
    assert_eq!(get("setup_failed"), "0", "{what}: {report:?}");
    let sent: u64 = get("traffic_sent").parse().unwrap_or(0);
    assert!(sent > 0, "{what}: nothing sent: {report:?}");
    assert_eq!(
        get("traffic_received"),
        get("traffic_sent"),
        "{what}: {report:?}"
    );
    assert_eq!(get("traffic_lost"), "0", "{what}: {report:?}");
    assert_eq!(get("release_failed"), "0", "{what}: {report:?}");
}

#[test]
fn hundreds_of_allocations_relay_without_loss() {
    let server = TestServer::start(ServerOptions::turn());
    let report = bench(
        server.v4(),
        &["--allocations", "300", "--payload", "200", "--rate", "3000"],
    );
    assert_lossless(&report, "300", "channels over IPv4");
    let report = bench(
        server.v4(),
        &[
            "--allocations",
            "50",
            "--payload",
            "100",
            "--rate",
            "2000",
            "--send-indications",
        ],
    );
    assert_lossless(&report, "50", "Send indications");
    let report = bench(
        server.v6(),
        &[
            "--allocations",
            "50",
            "--payload",
            "1000",
            "--rate",
            "2000",
            "--peer",
            "c2c",
        ],
    );
    assert_lossless(&report, "50", "client to client over IPv6");
}

/// `turnpike bench --tcp-relay`: four RFC 6062 connections set up and bytes
/// echoed through them; the allocations are released afterwards.
#[test]
fn tcp_relay_bench_moves_bytes_and_cleans_up() {
    let server = TestServer::start(ServerOptions::turn());
    let report = bench(server.v4(), &["--tcp-relay", "--allocations", "4"]);
    let get = |k: &str| report.get(k).map(String::as_str).unwrap_or("<missing>");
    assert_eq!(get("connections"), "4", "{report:?}");
    let echoed: u64 = get("echoed_bytes").parse().unwrap_or(0);
    assert!(echoed > 0, "nothing echoed: {report:?}");
    support::eventually(
        "the bench's TCP relays are released",
        Duration::from_secs(5),
        || server.tcp_relay_sockets() == 0,
    );
}
