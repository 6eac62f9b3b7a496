//! The client against the real endpoint (`admin_http::start` on a
//! loopback port, a [`FakeRelay`] behind it): tables and JSON, every page
//! of allocations, kicks, reloads, and one-line errors for a wrong or missing
//! token, nothing listening, and no admin address configured.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::*;
use crate::admin_http::testing::{FakeRelay, allocation};
use crate::admin_http::{AdminState, ListenerInfo};
use crate::config::AdminSettings;
use crate::observe::{
    AllocationGauges, ConfigFacts, Relay, ReloadReport, ReloadResult, Snapshot, WorkerShare,
};

const TOKEN: &str = "feedfacecafebeef0123456789abcdef";

/// A running endpoint with a token, on its own runtime.
struct Server {
    _runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    relay: Arc<FakeRelay>,
    addr: SocketAddr,
    token_file: PathBuf,
}

impl Server {
    fn start(relay: FakeRelay) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("admin.token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let relay = Arc::new(relay);
        let state = AdminState {
            started: Instant::now(),
            certs: None,
            fast_path: None,
            relay: Arc::clone(&relay) as Arc<dyn Relay>,
            listeners: vec![ListenerInfo {
                transport: "udp",
                address: "0.0.0.0:3478".parse().unwrap(),
            }],
            ice: None,
        };
        let admin = AdminSettings {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            token_file: Some(token_file.clone()),
            ..AdminSettings::default()
        };
        let bound = crate::admin_http::start(&admin, state, &runtime).unwrap();
        Server {
            _runtime: runtime,
            _dir: dir,
            relay,
            addr: bound[0],
            token_file,
        }
    }

    /// The settings of a client of this server.
    fn client(&self) -> Settings {
        let mut settings = Settings::default();
        settings.admin.listen = vec![self.addr];
        settings.admin.token_file = Some(self.token_file.clone());
        settings
    }
}

fn usage(result: Result<String, AdminError>) -> String {
    match result {
        Err(AdminError::Usage(message)) => message,
        other => panic!("expected a usage error, got {other:?}"),
    }
}

fn runtime_error(result: Result<String, AdminError>) -> String {
    match result {
        Err(AdminError::Runtime(message)) => message,
        other => panic!("expected a runtime error, got {other:?}"),
    }
}

#[test]
fn wildcards_are_asked_on_loopback() {
    for (listen, connect) in [
        ("0.0.0.0:9641", "127.0.0.1:9641"),
        ("[::]:9641", "[::1]:9641"),
        ("127.0.0.2:9641", "127.0.0.2:9641"),
        ("192.0.2.1:80", "192.0.2.1:80"),
        ("[::1]:1", "[::1]:1"),
    ] {
        assert_eq!(
            connect_address(listen.parse().unwrap()),
            connect.parse::<SocketAddr>().unwrap()
        );
    }
}

#[test]
fn status_as_a_table_and_as_json() {
    let relay = FakeRelay::with(Vec::new());
    let mut by_kind = [[[0u64; 2]; 2]; 4];
    by_kind[0][0][0] = 3;
    by_kind[3][1][0] = 1;
    *relay.snapshot.lock().unwrap() = Snapshot {
        workers: WorkerShare {
            allocations: AllocationGauges {
                by_kind,
                total: 4,
                channels: 2,
                permissions: 5,
            },
            ..WorkerShare::default()
        },
        worker_count: 2,
        config: ConfigFacts {
            sha256: "c0ffee".to_owned(),
            reloads_applied: 1,
            reloads_refused: 2,
        },
        ..Snapshot::default()
    };
    let server = Server::start(relay);
    let settings = server.client();
    let table = status(&StatusArgs { json: false }, &settings).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    let uptime = table
        .lines()
        .find(|l| l.starts_with("uptime:"))
        .unwrap()
        .to_owned();
    assert!(uptime.ends_with('s'), "{uptime}");
    assert_eq!(
        table,
        format!(
            "version:     {version}\n{uptime}\nready:       yes\ndraining:    no\nworkers:     2 running, 0 silent\nlisteners:   udp 0.0.0.0:3478\ndatabase:    none (TURN off)\ncertificate: none (TLS off)\nconfig:      sha256 c0ffee; reloads 1 applied, 2 refused\nallocations: 4 (2 channels, 5 permissions)\n\nTRANSPORT  FAMILY  RELAY  ALLOCATIONS\nudp        ipv4    udp    3\ndtls       ipv6    udp    1\n"
        )
    );
    let json = status(&StatusArgs { json: true }, &settings).unwrap();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["version"], version);
    assert_eq!(value["allocations"]["total"], 4);
    // Not ready: the reasons are shown.
    server.relay.set_health(crate::observe::Health {
        workers: 2,
        draining: true,
        database_down: true,
        started: true,
        ..Default::default()
    });
    let table = status(&StatusArgs { json: false }, &settings).unwrap();
    assert!(
        table.contains("\nready:       no (draining; database unreachable)\n"),
        "{table}"
    );
}

#[test]
fn allocations_fetch_every_page() {
    // More than two pages of MAX_PAGE.
    let many: Vec<_> = (1..=2345u64)
        .map(|i| allocation(i, if i % 2 == 0 { "even" } else { "odd" }))
        .collect();
    let server = Server::start(FakeRelay::with(many));
    let settings = server.client();
    let json = allocations(
        &AllocationsArgs {
            username: None,
            json: true,
        },
        &settings,
    )
    .unwrap();
    let list: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(list.len(), 2345);
    let ids: Vec<String> = list
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (1..=2345u64).map(|i| format!("{i:016x}")).collect();
    assert_eq!(ids, expected);

    let table = allocations(
        &AllocationsArgs {
            username: Some("even".to_owned()),
            json: false,
        },
        &settings,
    )
    .unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 1 + 1172 + 1, "{}", &table[..300]);
    assert_eq!(
        lines[0],
        "ID                USER  CLIENT               RELAYED                LEFT  PERMS  CHANS  BYTES_TO_PEER  BYTES_TO_CLIENT"
    );
    assert_eq!(
        lines[1],
        "0000000000000002  even  udp 192.0.2.7:40002  udp 203.0.113.1:50002  540s  1      1      1000           2000"
    );
    assert_eq!(lines[1173], "1172 allocations of user \"even\"");

    let none = allocations(
        &AllocationsArgs {
            username: Some("nobody at all".to_owned()),
            json: false,
        },
        &settings,
    )
    .unwrap();
    assert_eq!(none, "no allocations of user \"nobody at all\"\n");
}

#[test]
fn kicks() {
    let server = Server::start(FakeRelay::with(vec![
        allocation(1, "alice"),
        allocation(2, "alice"),
        allocation(3, "1767225600:bob"),
    ]));
    let settings = server.client();
    let by_id = |id: &str| KickArgs {
        username: None,
        id: Some(id.to_owned()),
        json: false,
    };
    let by_user = |user: &str, json: bool| KickArgs {
        username: Some(user.to_owned()),
        id: None,
        json,
    };
    assert_eq!(
        kick(&by_id("0000000000000001"), &settings).unwrap(),
        "ended allocation 0000000000000001\n"
    );
    assert_eq!(
        runtime_error(kick(&by_id("0000000000000001"), &settings)),
        "no live allocation has id \"0000000000000001\" (see turnpike allocations)"
    );
    assert_eq!(
        kick(&by_user("alice", false), &settings).unwrap(),
        "ended 1 allocation of user \"alice\"; the user cannot make new ones for 60 s (database.cache_ttl)\n"
    );
    // Names are percent-encoded on the way.
    let json = kick(&by_user("1767225600:bob", true), &settings).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&json).unwrap(),
        serde_json::json!({"ended": 1})
    );
    assert_eq!(
        kick(&by_user("alice", false), &settings).unwrap(),
        "ended 0 allocations of user \"alice\"; the user cannot make new ones for 60 s (database.cache_ttl)\n"
    );
    let kicked: Vec<Option<String>> = server
        .relay
        .kicks()
        .into_iter()
        .map(|f| f.user.or(f.id))
        .collect();
    assert_eq!(
        kicked,
        [
            Some("0000000000000001".to_owned()),
            Some("0000000000000001".to_owned()),
            Some("alice".to_owned()),
            Some("1767225600:bob".to_owned()),
            Some("alice".to_owned()),
        ]
    );
}

#[test]
fn a_wrong_or_missing_token_is_one_line() {
    let server = Server::start(FakeRelay::with(Vec::new()));
    let mut settings = server.client();
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.token");
    std::fs::write(&wrong, "0000000000000000000000000000000000").unwrap();
    settings.admin.token_file = Some(wrong);
    let addr = server.addr;
    assert_eq!(
        usage(status(&StatusArgs { json: false }, &settings)),
        format!(
            "the admin endpoint at {addr} refused the request (401 unauthorized): the token in admin.token_file is not the server's; use the server's token file"
        )
    );
    settings.admin.token_file = None;
    assert_eq!(
        usage(status(&StatusArgs { json: false }, &settings)),
        format!(
            "the admin endpoint at {addr} refused the request (401 unauthorized): it needs a token: set admin.token_file (or --admin-token-file) to the server's token file"
        )
    );
    let missing = dir.path().join("missing.token");
    settings.admin.token_file = Some(missing.clone());
    let message = usage(status(&StatusArgs { json: false }, &settings));
    assert!(
        message.starts_with(&format!(
            "invalid configuration: admin.token_file {}: cannot read it: no such file or directory",
            missing.display()
        )),
        "{message}"
    );
}

#[test]
fn nothing_listening_is_one_line() {
    // A port nobody listens on: bound, then closed.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut settings = Settings::default();
    settings.admin.listen = vec![addr];
    assert_eq!(
        runtime_error(status(&StatusArgs { json: false }, &settings)),
        format!(
            "cannot reach the admin endpoint at {addr}: connection refused; is turnpike serve running with admin.listen set?"
        )
    );
    // No admin address at all.
    assert_eq!(
        usage(status(&StatusArgs { json: false }, &Settings::default())),
        "admin.listen is not set, so there is no admin endpoint to ask; use the server's configuration (--config), or give its address with --admin-listen ADDR"
    );
}

#[test]
fn durations_in_words() {
    assert_eq!(duration_words(0), "0s");
    assert_eq!(duration_words(59), "59s");
    assert_eq!(duration_words(60), "1m 0s");
    assert_eq!(duration_words(3600), "1h 0m 0s");
    assert_eq!(duration_words(90_061), "1d 1h 1m 1s");
}

#[test]
fn drain_undrain_and_waiting() {
    let server = Server::start(FakeRelay::with(vec![
        allocation(1, "alice"),
        allocation(2, "bob"),
    ]));
    let settings = server.client();
    let args = |wait: bool, timeout: Option<u64>, json: bool| DrainArgs {
        wait,
        timeout: timeout.map(Duration::from_secs),
        json,
    };
    assert_eq!(
        drain(&args(false, None, false), &settings).unwrap(),
        "draining: new allocations are refused; 2 allocations left (turnpike undrain to stop)\n"
    );
    assert!(*server.relay.draining.lock().unwrap());
    // Two allocations stay: the wait ends at the timeout, with the count.
    let started = std::time::Instant::now();
    assert_eq!(
        runtime_error(drain(&args(true, Some(1), false), &settings)),
        "still 2 allocations after 1 s of draining; the server keeps draining (turnpike undrain to stop it)"
    );
    let waited = started.elapsed();
    assert!(
        (Duration::from_secs(1)..Duration::from_secs(5)).contains(&waited),
        "{waited:?}"
    );
    assert_eq!(
        undrain(&UndrainArgs { json: false }, &settings).unwrap(),
        "not draining: new allocations are made again; 2 allocations live\n"
    );
    assert!(!*server.relay.draining.lock().unwrap());
    // Empty: the wait ends at once.
    server.relay.allocations.lock().unwrap().clear();
    assert_eq!(
        drain(&args(true, None, false), &settings).unwrap(),
        "drained: no allocation left\n"
    );
    let json = drain(&args(true, Some(5), true), &settings).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&json).unwrap(),
        serde_json::json!({"draining": true, "allocations": 0, "workers_silent": 0})
    );
}

#[test]
fn drain_timeouts() {
    for (text, seconds) in [
        ("90", 90),
        ("90s", 90),
        ("15m", 900),
        ("2h", 7200),
        (" 0 ", 0),
    ] {
        assert_eq!(
            parse_duration(text),
            Ok(Duration::from_secs(seconds)),
            "{text}"
        );
    }
    for text in [
        "",
        "s",
        "1.5s",
        "-1",
        "10d",
        "1h30m",
        "99999999999999999999h",
    ] {
        assert!(parse_duration(text).is_err(), "{text:?}");
    }
}

/// `turnpike reload`: what was applied and the warnings, or the refusal
/// (the report on stdout, the error for stderr and the exit status).
#[test]
fn reloads() {
    let server = Server::start(FakeRelay::with(Vec::new()));
    let settings = server.client();
    *server.relay.reload.lock().unwrap() = Some(ReloadReport {
        result: ReloadResult::Applied,
        error: None,
        warnings: vec!["stun.listen changed in t.toml but needs a restart".to_owned()],
        changed: vec!["turn.users".to_owned(), "log.level".to_owned()],
        config_sha256: "ab12".to_owned(),
    });
    let (output, refused) = reload(&ReloadArgs { json: false }, &settings).unwrap();
    assert_eq!(
        output,
        "configuration reloaded (sha256 ab12): changed turn.users, log.level\nwarning: stun.listen changed in t.toml but needs a restart\n"
    );
    assert_eq!(refused, None);
    *server.relay.reload.lock().unwrap() = Some(ReloadReport {
        result: ReloadResult::Refused,
        error: Some("t.toml line 2: bad value for `user_quota`".to_owned()),
        warnings: Vec::new(),
        changed: Vec::new(),
        config_sha256: "ab12".to_owned(),
    });
    let (output, refused) = reload(&ReloadArgs { json: false }, &settings).unwrap();
    assert_eq!(
        output,
        "configuration not reloaded: t.toml line 2: bad value for `user_quota`; still running sha256 ab12\n"
    );
    assert_eq!(
        refused.as_deref(),
        Some("configuration not reloaded: t.toml line 2: bad value for `user_quota`")
    );
    let (json, refused) = reload(&ReloadArgs { json: true }, &settings).unwrap();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["result"], "refused");
    assert_eq!(value["config_sha256"], "ab12");
    assert!(refused.is_some());
    assert_eq!(*server.relay.reloads.lock().unwrap(), 3);
}
