//! Live reconfiguration of a running server (the real binary): the
//! configuration file is edited and the server told with SIGHUP,
//! `POST /v1/reload` or `turnpike reload`.
//!
//! - A new peer policy and a static user's new password apply (the old
//!   password gets 401, a newly denied peer 403) while an allocation made
//!   before keeps relaying, to its allowed peer, through our own
//!   `TurnClient` and a UDP peer socket.
//! - A broken file changes nothing and is one log line.
//! - A changed listen address is one warning line, not applied.
//! - `POST /v1/reload` and `turnpike reload` report what they did, and
//!   `/metrics` and `/v1/status` count reloads and name the file's SHA-256.
//! - `log.level` and `log.format` change live.
//! - A drain under way sends new clients to the new alternates.
//! - One SIGHUP reloads the configuration and the certificate.
//! - A reload applies to the very next TLS and DTLS handshake.
//!
//! Every wait is for a log line or an answer (`eventually`), never a sleep.
//! Loopback only, with time limits.

mod support;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use support::cli::run;
use support::pki::{KeyType, Pki, Renewable, served_subject, served_subject_dtls};
use support::{
    PRIMARY_V4, ServerOptions, TURN_PASSWORD, TURN_USER, TestServer, admin_get, admin_request,
};
use turnpike::config::sha256_hex;
use turnpike_client::{AllocateParams, ClientError, Credentials, Relayed, TurnClient};

/// How long a reload may take to show in the log.
const WITHIN: Duration = Duration::from_secs(10);
/// Time limit for one datagram to arrive.
const STEP: Duration = Duration::from_secs(5);

const NEW_PASSWORD: &str = "looking-glass";
/// The peer the reloaded policy denies (loopback: every 127/8 address is
/// this host's).
const DENIED_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const TOKEN: &str = "0123456789abcdef0123456789abcdef";

const RELOADED: &str = "configuration reloaded";
const REFUSED: &str = "configuration not reloaded";
const NEEDS_RESTART: &str = "needs a restart";

/// The configuration's text with alice's password replaced.
fn with_password(text: &str, password: &str) -> String {
    let old = format!("password = \"{TURN_PASSWORD}\"");
    assert!(text.contains(&old), "{text}");
    text.replace(&old, &format!("password = \"{password}\""))
}

/// The configuration's text with `DENIED_IP` denied.
fn with_denied_peer(text: &str) -> String {
    text.replace(
        "allowed_peer_ranges = ",
        &format!("denied_peer_ranges = [\"{DENIED_IP}/32\"]\nallowed_peer_ranges = "),
    )
}

/// A client of `server` (IPv4) with an allocation, or the error code.
async fn allocate(server: &TestServer, password: &str) -> Result<(TurnClient, SocketAddr), u16> {
    allocate_as(server, TURN_USER, password).await
}

/// [`allocate`] as `user`.
async fn allocate_as(
    server: &TestServer,
    user: &str,
    password: &str,
) -> Result<(TurnClient, SocketAddr), u16> {
    let credentials = Credentials::new(user, password);
    let mut client = TurnClient::bind(server.v4(), credentials).await.unwrap();
    match client.allocate(AllocateParams::default()).await {
        Ok(allocated) => Ok((client, allocated.relayed)),
        Err(err) => Err(err.error_code().unwrap_or_else(|| panic!("{err}"))),
    }
}

fn error_code(result: Result<(), ClientError>) -> Option<u16> {
    result.err().and_then(|e| e.error_code())
}

/// A UDP peer on `ip`.
fn peer(ip: Ipv4Addr) -> (UdpSocket, SocketAddr) {
    let socket = UdpSocket::bind((ip, 0)).unwrap();
    socket.set_read_timeout(Some(STEP)).unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

/// The next datagram `peer` receives, and where from.
fn received(peer: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = [0u8; 1500];
    let (n, from) = peer.recv_from(&mut buf).expect("a datagram for the peer");
    (buf[..n].to_vec(), from)
}

/// The next data relayed to `client`.
async fn relayed_to(client: &mut TurnClient) -> (Option<u16>, Vec<u8>) {
    let mut buf = vec![0u8; 2048];
    match tokio::time::timeout(STEP, client.recv(&mut buf)).await {
        Ok(Ok(Relayed::Channel { channel, data })) => (Some(channel), data.to_vec()),
        Ok(Ok(Relayed::Indication { data, .. })) => (None, data.to_vec()),
        other => panic!("no relayed data: {other:?}"),
    }
}

/// `/metrics` as name-and-labels → value.
fn metrics(server: &TestServer) -> Vec<(String, String)> {
    admin_get(server, "/metrics")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn metric(metrics: &[(String, String)], series: &str) -> Option<String> {
    metrics
        .iter()
        .find(|(k, _)| k == series)
        .map(|(_, v)| v.clone())
}

/// What `/metrics` says of the reloads: applied, refused, and every
/// `turnpike_config_info` series.
fn reload_metrics(server: &TestServer) -> (String, String, Vec<String>) {
    let m = metrics(server);
    let info = m
        .iter()
        .filter(|(k, _)| k.starts_with("turnpike_config_info{"))
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    (
        metric(&m, "turnpike_config_reloads_total{result=\"applied\"}").expect("applied"),
        metric(&m, "turnpike_config_reloads_total{result=\"refused\"}").expect("refused"),
        info,
    )
}

fn info_line(text: &str) -> String {
    format!(
        "turnpike_config_info{{sha256=\"{}\"}} 1",
        sha256_hex(text.as_bytes())
    )
}

fn turn_server() -> TestServer {
    TestServer::start(ServerOptions {
        admin: true,
        admin_token: Some(TOKEN),
        log_level: Some("info"),
        ..ServerOptions::turn()
    })
}

/// SIGHUP with a new peer policy, a new password for alice and bob gone:
/// the old password and bob are refused, the new password works, the newly
/// denied peer gets 403 and loses its permission, and the allocation made
/// before keeps relaying both ways on its channel to the allowed peer.
#[tokio::test]
async fn sighup_applies_policy_and_password_and_the_allocation_keeps_relaying() {
    let mut options = ServerOptions::turn();
    let turn = options.turn.as_mut().unwrap();
    turn.users.push(("bob".to_owned(), "builder".to_owned()));
    let mut server = TestServer::start(ServerOptions {
        admin: true,
        admin_token: Some(TOKEN),
        log_level: Some("info"),
        ..options
    });
    assert!(allocate_as(&server, "bob", "builder").await.is_ok());
    let (allowed, allowed_addr) = peer(PRIMARY_V4);
    let (denied, denied_addr) = peer(DENIED_IP);
    denied.set_nonblocking(true).unwrap();
    let (mut old, relayed) = allocate(&server, TURN_PASSWORD).await.unwrap();
    old.channel_bind(0x4000, allowed_addr).await.unwrap();
    old.create_permission(&[denied_addr]).await.unwrap();
    old.send_channel_data(0x4000, b"before").await.unwrap();
    assert_eq!(received(&allowed), (b"before".to_vec(), relayed));

    server.edit_config(|text| {
        let bob = "\n[[turn.users]]\nusername = \"bob\"\npassword = \"builder\"\n";
        assert!(text.contains(bob), "{text}");
        with_denied_peer(&with_password(&text.replace(bob, ""), NEW_PASSWORD))
    });
    server.hangup();
    let lines = server.wait_for_lines(RELOADED, 1, WITHIN);
    assert!(
        lines[0].contains("changed turn.denied_peer_ranges, turn.users"),
        "{lines:?}"
    );

    // The old password and the removed user: 401; the new password: an
    // allocation.
    assert_eq!(allocate(&server, TURN_PASSWORD).await.err(), Some(401));
    assert_eq!(
        allocate_as(&server, "bob", "builder").await.err(),
        Some(401)
    );
    let (mut new, _) = allocate(&server, NEW_PASSWORD).await.unwrap();
    // The denied peer: 403, and no longer relayed to.
    assert_eq!(
        error_code(new.create_permission(&[denied_addr]).await),
        Some(403)
    );

    // The allocation made before relays on, both ways, on its channel; its
    // permission for the denied peer is gone: the indication sent first is
    // dropped (the channel data after it arrives, through the same relay
    // socket, so the denied peer would have had it by then).
    old.send_indication(denied_addr, b"dropped").await.unwrap();
    old.send_channel_data(0x4000, b"after").await.unwrap();
    assert_eq!(received(&allowed), (b"after".to_vec(), relayed));
    assert_eq!(
        denied.recv_from(&mut [0u8; 64]).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::WouldBlock),
        "the denied peer got data after the reload"
    );
    denied.send_to(b"from the denied peer", relayed).unwrap();
    allowed.send_to(b"back", relayed).unwrap();
    assert_eq!(relayed_to(&mut old).await, (Some(0x4000), b"back".to_vec()));

    let (applied, refused, _) = reload_metrics(&server);
    assert_eq!((applied.as_str(), refused.as_str()), ("1", "0"));
}

/// A file that does not parse is refused with one line, and changes
/// nothing: the old password still works.
#[tokio::test]
async fn a_broken_file_changes_nothing_and_is_one_line() {
    let mut server = turn_server();
    let started_with = server.config();
    server.edit_config(|text| with_password(text, NEW_PASSWORD) + "\n[turn\n");
    server.hangup();
    let lines = server.wait_for_lines(REFUSED, 1, WITHIN);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let path = server.config_path().display().to_string();
    assert!(
        lines[0].contains("ERROR") && lines[0].contains(&path) && lines[0].contains(" line "),
        "one line naming the file and the line: {lines:?}"
    );
    assert!(server.lines_with(RELOADED).is_empty());
    assert!(allocate(&server, TURN_PASSWORD).await.is_ok());
    assert_eq!(allocate(&server, NEW_PASSWORD).await.err(), Some(401));
    let (applied, refused, info) = reload_metrics(&server);
    assert_eq!((applied.as_str(), refused.as_str()), ("0", "1"));
    assert_eq!(info, [info_line(&started_with)], "the file in service");
}

/// A new listen address needs a restart: one warning line names it, the
/// server keeps its sockets, and the rest of the file is applied.
#[tokio::test]
async fn a_listen_address_change_is_reported_not_applied() {
    let mut server = turn_server();
    // A port nobody holds: the server must not take it.
    let free = UdpSocket::bind((PRIMARY_V4, 0)).unwrap();
    let moved = SocketAddr::new(PRIMARY_V4.into(), free.local_addr().unwrap().port());
    drop(free);
    let listen = format!("\"{}\"", server.v4());
    server.edit_config(|text| {
        assert!(text.contains(&listen), "{text}");
        with_password(
            &text.replace(&listen, &format!("\"{moved}\"")),
            NEW_PASSWORD,
        )
    });
    server.hangup();
    server.wait_for_lines(RELOADED, 1, WITHIN);
    let warnings = server.lines_with(NEEDS_RESTART);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("WARN") && warnings[0].contains("stun.listen"),
        "{warnings:?}"
    );
    // Still served where it was; nothing took the new port.
    assert!(support::udp_binding(server.v4(), STEP).is_some());
    assert!(UdpSocket::bind(moved).is_ok(), "{moved} was bound");
    // The rest applied.
    assert!(allocate(&server, NEW_PASSWORD).await.is_ok());
    assert_eq!(allocate(&server, TURN_PASSWORD).await.err(), Some(401));
}

/// `POST /v1/reload` and `turnpike reload` reload as SIGHUP does and say
/// what they did; `/metrics` counts each outcome and names the file in
/// service by its SHA-256, as `/v1/status` does.
#[tokio::test]
async fn the_admin_endpoint_and_the_command_reload_and_report() {
    let mut server = turn_server();
    let first = server.config();
    let (applied, refused, info) = reload_metrics(&server);
    assert_eq!((applied.as_str(), refused.as_str()), ("0", "0"));
    assert_eq!(info, [info_line(&first)]);

    // Applied, with a warning for the listen address.
    let listen = format!("\"{}\"", server.v6());
    server.edit_config(|text| {
        with_password(&text.replace(&listen, "\"[::1]:1\""), NEW_PASSWORD)
            .replace("user_quota = 0", "user_quota = 1")
    });
    let second = server.config();
    let (status, body) = admin_request(&server, "POST", "/v1/reload");
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["result"], "applied", "{report}");
    assert_eq!(report["error"], serde_json::Value::Null);
    assert_eq!(
        report["changed"],
        serde_json::json!(["turn.user_quota", "turn.users"]),
        "{report}"
    );
    let warnings = report["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{report}");
    assert!(
        warnings[0].as_str().unwrap().contains("stun.listen"),
        "{report}"
    );
    assert_eq!(report["config_sha256"], sha256_hex(second.as_bytes()));
    // Applied indeed: the new password and the quota of one.
    let (_held, _) = allocate(&server, NEW_PASSWORD).await.unwrap();
    assert_eq!(allocate(&server, NEW_PASSWORD).await.err(), Some(486));
    let (applied, refused, info) = reload_metrics(&server);
    assert_eq!((applied.as_str(), refused.as_str()), ("1", "0"));
    assert_eq!(info, [info_line(&second)], "one series, the new file's");

    // `turnpike reload`, with the server's configuration: the same, nothing
    // changed this time.
    let config = server.config_path().display().to_string();
    let out = run(&["--config", &config, "reload"], &[]);
    let lines = out.ok_lines();
    assert_eq!(
        lines[0],
        format!(
            "configuration reloaded (sha256 {}): nothing changed",
            sha256_hex(second.as_bytes())
        ),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("warning: stun.listen changed"),
        "{lines:?}"
    );

    // A value out of range: refused by the endpoint (422, the error), and
    // by the command, which finds it before asking.
    server.edit_config(|text| text.replace("max_lifetime = 3600", "max_lifetime = 0"));
    let (status, body) = admin_request(&server, "POST", "/v1/reload");
    assert_eq!(status, 422, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["result"], "refused", "{report}");
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("turn.max_lifetime = 0 is out of range"),
        "{report}"
    );
    assert_eq!(report["config_sha256"], sha256_hex(second.as_bytes()));
    let out = run(&["--config", &config, "reload"], &[]);
    let line = out.error_line(2);
    assert!(
        line.contains("configuration not reloaded: ")
            && line.contains("turn.max_lifetime = 0 is out of range")
            && line.contains("the server was not asked"),
        "{line}"
    );
    // Asked without that file (the endpoint's address and token given as
    // flags): the server's refusal, on stdout as JSON and as the error.
    let port = server.admin_port.unwrap().to_string();
    let token_file = server.config_path().with_file_name("admin.token");
    let out = run(
        &[
            "--admin-listen",
            &format!("127.0.0.1:{port}"),
            "--admin-token-file",
            token_file.to_str().unwrap(),
            "reload",
            "--json",
        ],
        &[],
    );
    assert_eq!(out.status, 2, "{}", out.stderr);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["result"], "refused");
    assert!(
        out.single_error_line()
            .contains("configuration not reloaded: ")
    );

    // Two refused, still the second file in service, and the same in
    // /v1/status.
    let (applied, refused, info) = reload_metrics(&server);
    assert_eq!((applied.as_str(), refused.as_str()), ("2", "2"));
    assert_eq!(info, [info_line(&second)]);
    let status: serde_json::Value =
        serde_json::from_str(&admin_get(&server, "/v1/status")).unwrap();
    assert_eq!(
        status["config"],
        serde_json::json!({
            "sha256": sha256_hex(second.as_bytes()),
            "reloads_applied": 2,
            "reloads_refused": 2,
        })
    );
    // Without the token: 401, and no reload.
    let port = server.admin_port.unwrap();
    let mut stream = std::net::TcpStream::connect((PRIMARY_V4, port)).unwrap();
    use std::io::{Read, Write};
    write!(
        stream,
        "POST /v1/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert_eq!(reload_metrics(&server).1, "2");
}

/// `log.level` and `log.format` change live: a debug line (a credential
/// lookup) appears, as JSON, once the file says `debug` and `json`.
#[tokio::test]
async fn the_log_level_and_format_change_live() {
    let mut server = turn_server();
    // An unknown user is looked up in the database: a debug line.
    let address = server.v4();
    let lookup = |user: &'static str| {
        let server = address;
        async move {
            let mut client = TurnClient::bind(server, Credentials::new(user, "x"))
                .await
                .unwrap();
            let err = client
                .allocate(AllocateParams::default())
                .await
                .unwrap_err();
            assert_eq!(err.error_code(), Some(401));
        }
    };
    lookup("trudy").await;
    assert!(server.lines_with("credential lookup").is_empty());

    server.edit_config(|text| {
        text.replace("level = \"info\"", "level = \"debug\"")
            .replace("format = \"text\"", "format = \"json\"")
    });
    server.hangup();
    server.wait_for_lines(RELOADED, 1, WITHIN);
    lookup("mallory").await;
    let lines = server.wait_for_lines("credential lookup", 1, WITHIN);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line: serde_json::Value =
        serde_json::from_str(&lines[0]).unwrap_or_else(|e| panic!("not JSON ({e}): {}", lines[0]));
    assert_eq!(line["level"], "DEBUG", "{line}");
    assert_eq!(line["username"], "mallory", "{line}");

    // And back: no more debug lines.
    server.edit_config(|text| text.replace("level = \"debug\"", "level = \"info\""));
    server.hangup();
    server.wait_for_lines(RELOADED, 2, WITHIN);
    lookup("oscar").await;
    // The reload's own line comes after the lookup's would have.
    let (status, _) = admin_request(&server, "POST", "/v1/reload");
    assert_eq!(status, 200);
    server.wait_for_lines(RELOADED, 3, WITHIN);
    assert_eq!(server.lines_with("credential lookup").len(), 1);
}

/// `drain.alternate_servers` changes live: a drain under way sends new
/// Allocates to the new alternate at once.
#[tokio::test]
async fn a_drain_under_way_takes_the_new_alternates() {
    let first: SocketAddr = "127.0.0.1:3".parse().unwrap();
    let second: SocketAddr = "127.0.0.1:4".parse().unwrap();
    let mut server = TestServer::start(ServerOptions {
        admin: true,
        admin_token: Some(TOKEN),
        drain_alternates: vec![first],
        ..ServerOptions::turn()
    });
    let (status, body) = admin_request(&server, "POST", "/v1/drain");
    assert_eq!(status, 200, "{body}");
    let sent_to = |result: Result<(TurnClient, SocketAddr), ClientError>| match result {
        Err(ClientError::TryAlternate { server, .. }) => server,
        Err(other) => panic!("a new Allocate while draining: {other}"),
        Ok(_) => panic!("a new Allocate while draining succeeded"),
    };
    assert_eq!(sent_to(try_allocate(&server).await), first);
    server.edit_config(|text| {
        let list = format!("alternate_servers = [\"{first}\"]");
        assert!(text.contains(&list), "{text}");
        text.replace(&list, &format!("alternate_servers = [\"{second}\"]"))
    });
    let (status, body) = admin_request(&server, "POST", "/v1/reload");
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        report["changed"],
        serde_json::json!(["drain.alternate_servers"])
    );
    assert_eq!(sent_to(try_allocate(&server).await), second);
    // And for the next drain.
    assert_eq!(admin_request(&server, "DELETE", "/v1/drain").0, 200);
    assert!(try_allocate(&server).await.is_ok());
    assert_eq!(admin_request(&server, "POST", "/v1/drain").0, 200);
    assert_eq!(sent_to(try_allocate(&server).await), second);
}

/// An Allocate as alice on a fresh client, with its error as is.
async fn try_allocate(server: &TestServer) -> Result<(TurnClient, SocketAddr), ClientError> {
    let credentials = Credentials::new(TURN_USER, TURN_PASSWORD);
    let mut client = TurnClient::bind(server.v4(), credentials).await.unwrap();
    let allocated = client.allocate(AllocateParams::default()).await?;
    Ok((client, allocated.relayed))
}

/// One SIGHUP reloads both the configuration and the certificate (with
/// file watching off, only the signal can have done it).
#[tokio::test]
async fn one_sighup_reloads_the_configuration_and_the_certificate() {
    let pki = Pki::new();
    let first = pki.leaf("first.turn.test", KeyType::EcP256Sec1, 30);
    let renewed = pki.leaf("renewed.turn.test", KeyType::EcP256Sec1, 60);
    let files = Renewable::new(&first);
    let mut server = TestServer::start(ServerOptions {
        tls: Some(files.files()),
        tls_reload_interval: Some(0),
        log_level: Some("info"),
        ..ServerOptions::turn()
    });
    let tls_port = server.tls_port.unwrap();
    assert!(served_subject(tls_port).contains("first.turn.test"));
    files.renew(&renewed);
    server.edit_config(|text| with_password(text, NEW_PASSWORD));
    server.hangup();
    server.wait_for_lines(RELOADED, 1, WITHIN);
    let certificate = server.wait_for_lines("TLS certificate reloaded", 1, WITHIN);
    assert_eq!(certificate.len(), 1, "{certificate:?}");
    assert!(
        certificate[0].contains("renewed.turn.test"),
        "{certificate:?}"
    );
    assert!(served_subject(tls_port).contains("renewed.turn.test"));
    assert!(allocate(&server, NEW_PASSWORD).await.is_ok());
    assert_eq!(allocate(&server, TURN_PASSWORD).await.err(), Some(401));
}

/// A certificate reload is in service for TLS and DTLS alike by the time
/// it has returned: a DTLS handshake right after the `POST /v1/reload`
/// answer (no wait) gets the new certificate. DTLS workers used to look
/// only once a second, so `/v1/status` could name a certificate DTLS did
/// not serve yet. Twice, to leave the once-a-second check no chance of
/// making it pass by luck.
#[tokio::test]
async fn a_reload_applies_to_the_next_dtls_handshake_at_once() {
    let pki = Pki::new();
    let first = pki.leaf("first.turn.test", KeyType::EcP256Sec1, 30);
    let renewed = pki.leaf("renewed.turn.test", KeyType::EcP256Sec1, 60);
    let files = Renewable::new(&first);
    let server = TestServer::start(ServerOptions {
        tls: Some(files.files()),
        // No file watching: only the reload request can switch.
        tls_reload_interval: Some(0),
        admin: true,
        admin_token: Some(TOKEN),
        log_level: Some("info"),
        ..ServerOptions::turn()
    });
    let port = server.tls_port.unwrap();
    assert!(served_subject_dtls(port).contains("first.turn.test"));
    for (leaf, name) in [(&renewed, "renewed.turn.test"), (&first, "first.turn.test")] {
        files.renew(leaf);
        let (status, body) = admin_request(&server, "POST", "/v1/reload");
        assert_eq!(status, 200, "{body}");
        let dtls = served_subject_dtls(port);
        assert!(dtls.contains(name), "DTLS still serves {dtls}, not {name}");
        assert!(served_subject(port).contains(name));
    }
}
