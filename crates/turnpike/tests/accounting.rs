//! Accounting lines, as an operator's log shipper reads them: with
//! `log.format = "json"` one JSON object per allocation created and one per
//! allocation ended, under the `turnpike::accounting` target, whose byte
//! counts are what the client really relayed (`turnutils_uclient` with a
//! known message count and size, echoed by `turnutils_peer`).

mod support;

use std::net::IpAddr;

use support::uclient::{Run, assert_delivered};
use support::{PRIMARY_V4, Peer, ServerOptions, TURN_REALM, TURN_USER, TestServer};

const MESSAGES: u64 = 20;
const LENGTH: u64 = 500;

/// The JSON lines of `target` in the server's output.
fn lines_of(output: &str, target: &str) -> Vec<serde_json::Value> {
    output
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == target)
        .collect()
}

/// A field of a JSON log line (they sit beside `message` and `target`).
fn field<'a>(line: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    &line[name]
}

#[test]
fn accounting_lines_are_json_and_count_what_uclient_relayed() {
    let mut server = TestServer::start(ServerOptions {
        json_logs: true,
        ..ServerOptions::turn()
    });
    let v4: IpAddr = PRIMARY_V4.into();
    let peer = Peer::start(&[v4]);
    // One session (-c: no RTCP companion), channels, 20 x 500 bytes.
    let (out, rep) = Run::new(&server, v4, &["-c", "-n", "20", "-l", "500"])
        .peer(&peer, v4)
        .go();
    assert_delivered("accounting run", &out, &rep, MESSAGES, LENGTH);
    // Allocations still alive end at shutdown, each with its line.
    let output = server.shut_down();
    let lines = lines_of(&output, "turnpike::accounting");
    let created: Vec<_> = lines
        .iter()
        .filter(|l| field(l, "event") == "allocation_created")
        .collect();
    let ended: Vec<_> = lines
        .iter()
        .filter(|l| field(l, "event") == "allocation_ended")
        .collect();
    // uclient makes a probe allocation first, then the session's.
    assert_eq!(created.len(), 2, "created lines: {created:#?}\n{output}");
    assert_eq!(ended.len(), 2, "ended lines: {ended:#?}\n{output}");
    for line in created.iter().chain(&ended) {
        assert_eq!(field(line, "user"), TURN_USER, "{line}");
        assert_eq!(field(line, "realm"), TURN_REALM, "{line}");
        assert_eq!(field(line, "transport"), "udp", "{line}");
        assert_eq!(field(line, "relay_kind"), "udp", "{line}");
        assert!(
            field(line, "id").as_str().is_some_and(|id| id.len() == 16),
            "{line}"
        );
    }
    // uclient deletes its session's allocation (Refresh 0); the probe's
    // lives on until the shutdown.
    let mut reasons: Vec<_> = ended
        .iter()
        .map(|l| field(l, "reason").as_str().unwrap_or_default())
        .collect();
    reasons.sort_unstable();
    assert_eq!(reasons, ["drained", "refresh"], "{ended:#?}");
    for line in &ended {
        assert!(field(line, "duration_seconds").as_f64().is_some(), "{line}");
    }
    let session = ended
        .iter()
        .find(|l| field(l, "to_peer_packets").as_u64() != Some(0))
        .unwrap_or_else(|| panic!("no ended allocation relayed anything: {ended:#?}"));
    assert_eq!(
        field(session, "to_peer_packets").as_u64(),
        Some(MESSAGES),
        "{session}"
    );
    assert_eq!(
        field(session, "to_peer_bytes").as_u64(),
        Some(MESSAGES * LENGTH),
        "{session}"
    );
    assert_eq!(
        field(session, "to_client_packets").as_u64(),
        Some(MESSAGES),
        "{session}"
    );
    assert_eq!(
        field(session, "to_client_bytes").as_u64(),
        Some(MESSAGES * LENGTH),
        "{session}"
    );
    // Its creation line names the same allocation.
    assert!(
        created
            .iter()
            .any(|c| field(c, "id") == field(session, "id")),
        "{created:#?}"
    );
}
