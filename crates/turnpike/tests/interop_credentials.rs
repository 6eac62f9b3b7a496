//! Credentials from databases and shared secrets, against coturn's
//! `turnutils_uclient` and `turnutils_peer` over UDP on loopback:
//!
//! - long-term users added with `turnpike user add` to the default SQLite
//!   database and to a real PostgreSQL server (started by the test);
//! - TURN REST API credentials minted by uclient itself (`-W secret`), from
//!   secrets in the config file and in the database, through a rotation;
//! - expired and Wire-format credentials, minted here and given to uclient
//!   as plain username and password (what an application hands a browser);
//! - PostgreSQL stopped under a live relay session, and started again;
//! - a coturn SQLite database made by coturn's `turnadmin`, used read-only.
//!
//! Each uclient run is one session (`-c`, `-m 1`) of 10 x 200-byte
//! messages through `turnutils_peer`, and must lose nothing.

mod support;

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::uclient::{Run, assert_delivered, assert_rejected};
use support::{
    DatabaseOptions, PRIMARY_V4, Peer, ServerOptions, TestServer, TurnOptions, eventually,
};
use turnpike_core::ephemeral::{self, Format};
use turnpike_store::testing::TestPostgres;

const ARGS: &[&str] = &["-c", "-m", "1", "-n", "10", "-l", "200"];
const MESSAGES: u64 = 10;
const LEN: u64 = 200;

fn v4() -> IpAddr {
    PRIMARY_V4.into()
}

/// A TURN server without static users: every user comes from `database`.
fn server(database: DatabaseOptions, secrets: &[&str]) -> TestServer {
    TestServer::start(ServerOptions {
        ipv6: false,
        turn: Some(TurnOptions {
            users: Vec::new(),
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
            ..TurnOptions::loopback()
        }),
        database,
        ..ServerOptions::default()
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Runs uclient as `user`/`password` and demands every message back.
fn relays(server: &TestServer, peer: &Peer, what: &str, user: &str, password: &str) {
    let (out, rep) = Run::new(server, v4(), ARGS)
        .peer(peer, v4())
        .credentials(user, password)
        .go();
    assert_delivered(what, &out, &rep, MESSAGES, LEN);
}

fn rejected(server: &TestServer, peer: &Peer, what: &str, user: &str, password: &str) {
    let (out, rep) = Run::new(server, v4(), ARGS)
        .peer(peer, v4())
        .credentials(user, password)
        .go();
    assert_rejected(what, &out, &rep);
}

/// One uclient run that got every message back.
fn uclient_relays(peer: &Peer, run: Run<'_>) -> bool {
    let (_, rep) = run.peer(peer, v4()).go();
    rep.recv_msgs == Some(MESSAGES)
}

#[test]
fn sqlite_users_from_the_admin_command_line() {
    let server = server(DatabaseOptions::default(), &[]);
    let peer = Peer::start(&[v4()]);
    server.admin(&["user", "add", "carol", "--password", "c-pass"]);
    relays(&server, &peer, "SQLite user carol", "carol", "c-pass");
    rejected(&server, &peer, "carol, wrong password", "carol", "nope");
    rejected(&server, &peer, "a user nobody added", "mallory", "c-pass");
}

#[test]
fn postgres_users_from_the_admin_command_line() {
    let pg = TestPostgres::start();
    let server = server(
        DatabaseOptions {
            url: Some(pg.url()),
            ..DatabaseOptions::default()
        },
        &[],
    );
    let peer = Peer::start(&[v4()]);
    server.admin(&["user", "add", "dave", "--password", "d-pass"]);
    relays(&server, &peer, "PostgreSQL user dave", "dave", "d-pass");
    rejected(&server, &peer, "dave, wrong password", "dave", "nope");
    // A password change reaches the server once its cached keys expire
    // (cache_ttl); the old password is refused meanwhile only after that, so
    // check the new one against a fresh name instead.
    server.admin(&["user", "add", "erin", "--password", "e-pass"]);
    relays(&server, &peer, "PostgreSQL user erin", "erin", "e-pass");
}

/// `-W`: uclient mints `<now + 1 day>:<user>` and base64(HMAC-SHA1(secret,
/// username)) itself, as a web application would for a browser.
#[test]
fn rest_credentials_rotate_without_downtime() {
    let server = server(DatabaseOptions::default(), &["config-secret"]);
    let peer = Peer::start(&[v4()]);
    let rest = |secret: &'static str| Run::new(&server, v4(), ARGS).rest_secret(secret);

    let (out, rep) = rest("config-secret").peer(&peer, v4()).go();
    assert_delivered(
        "REST, secret from the config file",
        &out,
        &rep,
        MESSAGES,
        LEN,
    );

    // Rotation in the database: the old and the new secret both work...
    server.admin(&["secret", "add", "old-secret"]);
    server.admin(&["secret", "add", "new-secret"]);
    eventually(
        "the server loads the new secrets",
        Duration::from_secs(30),
        || uclient_relays(&peer, rest("new-secret")),
    );
    let (out, rep) = rest("old-secret").peer(&peer, v4()).go();
    assert_delivered(
        "REST, old secret during rotation",
        &out,
        &rep,
        MESSAGES,
        LEN,
    );
    let (out, rep) = rest("new-secret").peer(&peer, v4()).go();
    assert_delivered(
        "REST, new secret during rotation",
        &out,
        &rep,
        MESSAGES,
        LEN,
    );

    // ...until the old one is removed.
    server.admin(&["secret", "remove", "old-secret"]);
    eventually(
        "the removed secret is refused",
        Duration::from_secs(30),
        || {
            let (_, rep) = rest("old-secret").peer(&peer, v4()).go();
            rep.send_msgs.is_none()
        },
    );
    let (out, rep) = rest("old-secret").peer(&peer, v4()).go();
    assert_rejected("REST, removed secret", &out, &rep);
    let (out, rep) = rest("new-secret").peer(&peer, v4()).go();
    assert_delivered("REST, remaining secret", &out, &rep, MESSAGES, LEN);
    let (out, rep) = rest("never-a-secret").peer(&peer, v4()).go();
    assert_rejected("REST, unknown secret", &out, &rep);
}

#[test]
fn expired_rest_credentials_are_refused() {
    let server = server(DatabaseOptions::default(), &["s3cret"]);
    let peer = Peer::start(&[v4()]);
    let expired = format!("{}:frank", unix_now() - 60);
    let password = ephemeral::password(Format::Rest, b"s3cret", &expired);
    rejected(
        &server,
        &peer,
        "REST credential expired a minute ago",
        &expired,
        &password,
    );
    let current = format!("{}:frank", unix_now() + 600);
    let password = ephemeral::password(Format::Rest, b"s3cret", &current);
    relays(
        &server,
        &peer,
        "the same user, not expired",
        &current,
        &password,
    );
}

/// Wire's restund format: `k` selects the secret. Key index 0 is the first
/// secret of the config file; the database's secrets carry their own index.
#[test]
fn wire_credentials_need_the_secret_of_their_key_index() {
    let server = server(DatabaseOptions::default(), &["zero"]);
    let peer = Peer::start(&[v4()]);
    server.admin(&["secret", "add", "seven", "--key-index", "7"]);
    let wire = |k: u32| format!("d={}.v=1.k={k}.t=s.r=Zk3q0PbX", unix_now() + 600);

    let name = wire(0);
    let password = ephemeral::password(Format::Wire { key_index: 0 }, b"zero", &name);
    relays(&server, &peer, "Wire, k=0", &name, &password);

    let name = wire(7);
    let password = ephemeral::password(Format::Wire { key_index: 7 }, b"seven", &name);
    eventually(
        "the server loads key index 7",
        Duration::from_secs(30),
        || {
            let run = Run::new(&server, v4(), ARGS).credentials(&name, &password);
            uclient_relays(&peer, run)
        },
    );
    relays(
        &server,
        &peer,
        "Wire, k=7 from the database",
        &name,
        &password,
    );

    // The right secret under the wrong index, and an index with no secret.
    let name = wire(0);
    let password = ephemeral::password(Format::Wire { key_index: 0 }, b"seven", &name);
    rejected(
        &server,
        &peer,
        "Wire, k=0 signed with k=7's secret",
        &name,
        &password,
    );
    let name = wire(3);
    let password = ephemeral::password(Format::Wire { key_index: 3 }, b"zero", &name);
    rejected(
        &server,
        &peer,
        "Wire, k=3 (no such secret)",
        &name,
        &password,
    );
}

/// The database goes away under a live session: the session keeps relaying,
/// a user seen recently can still allocate, a user never seen gets 500
/// (uclient gives up at once on an error response), and once PostgreSQL is
/// back a user added then authenticates.
#[test]
fn postgres_outage_keeps_sessions_and_recent_users() {
    let mut pg = TestPostgres::start();
    let server = server(
        DatabaseOptions {
            url: Some(pg.url()),
            // Every lookup reaches the database, so the outage is really
            // exercised rather than hidden by the cache.
            cache_ttl: 1,
            ..DatabaseOptions::default()
        },
        &[],
    );
    let peer = Peer::start(&[v4()]);
    server.admin(&["user", "add", "grace", "--password", "g-pass"]);
    server.admin(&["user", "add", "henry", "--password", "h-pass"]);
    relays(&server, &peer, "grace before the outage", "grace", "g-pass");

    // A long session (200 messages, 20 ms apart: 4 s) spans the outage.
    let long_args = ["-c", "-m", "1", "-n", "200", "-l", "200"];
    // Allocations of earlier runs linger until they expire.
    let before = server.relay_sockets();
    std::thread::scope(|scope| {
        let session = scope.spawn(|| {
            Run::new(&server, v4(), &long_args)
                .peer(&peer, v4())
                .credentials("henry", "h-pass")
                .go()
        });
        // Stop PostgreSQL once henry's allocations exist (each has a relay
        // socket); his later requests (permissions, channels) then meet the
        // outage.
        eventually("henry's session allocates", Duration::from_secs(20), || {
            server.relay_sockets() > before || session.is_finished()
        });
        pg.stop();
        eventually(
            "the server notices the outage",
            Duration::from_secs(10),
            || server.output().contains("credential database unreachable"),
        );
        // Let grace's cached keys pass their cache_ttl (a timeout: nothing to
        // await), so her next requests really meet the stopped database.
        std::thread::sleep(Duration::from_millis(1100));
        relays(
            &server,
            &peer,
            "grace during the outage (seen recently)",
            "grace",
            "g-pass",
        );
        let (out, rep) = session.join().expect("session thread");
        assert_delivered("henry's session across the outage", &out, &rep, 200, LEN);
    });

    let (out, rep) = Run::new(&server, v4(), ARGS)
        .peer(&peer, v4())
        .credentials("ivan", "i-pass")
        .go();
    assert!(
        rep.send_msgs.is_none() && out.code() != Some(0),
        "a user never seen cannot be checked while the database is down\n{}",
        out.describe()
    );
    assert!(
        rep.error_responses()
            .iter()
            .any(|&(_, code, _)| code == 500),
        "expected 500 (Server Error) for a user the server cannot look up: {:?}\n{}",
        rep.error_responses(),
        out.describe()
    );
    let log = server.output();
    assert_eq!(
        log.matches("credential database unreachable").count(),
        1,
        "one log line for the outage, not one per lookup:\n{log}"
    );

    pg.start_again();
    server.admin(&["user", "add", "ivan", "--password", "i-pass"]);
    eventually(
        "ivan authenticates once PostgreSQL is back",
        Duration::from_secs(30),
        || {
            let run = Run::new(&server, v4(), ARGS).credentials("ivan", "i-pass");
            uclient_relays(&peer, run)
        },
    );
    assert!(
        server
            .output()
            .contains("credential database reachable again")
    );
}

/// Runs coturn's `turnadmin` on its SQLite database `db`, then removes the
/// log file it always writes (`/var/log/turn_<pid>_<date>.log`).
fn turnadmin(db: &std::path::Path, args: &[&str]) {
    let program = support::require_tool("turnadmin");
    let child = std::process::Command::new(program)
        .args(args)
        .arg("-b")
        .arg(db)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run turnadmin");
    let pid = child.id();
    let out = child.wait_with_output().expect("turnadmin output");
    if let Ok(logs) = std::fs::read_dir("/var/log") {
        let prefix = format!("turn_{pid}_");
        for log in logs.flatten() {
            if log.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(log.path());
            }
        }
    }
    assert!(
        out.status.success(),
        "turnadmin {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A coturn operator switches servers without moving users: coturn's own
/// `turnadmin` creates its SQLite database with a user and a shared secret,
/// and Turnpike serves both from it, read-only.
#[test]
fn a_coturn_database_made_by_turnadmin_works_as_it_is() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("turndb");
    let realm = support::TURN_REALM;
    turnadmin(&db, &["-a", "-u", "olga", "-r", realm, "-p", "o-pass"]);
    turnadmin(&db, &["-s", "coturn-secret", "-r", realm]);
    let before = std::fs::read(&db).expect("read the coturn database");

    let server = server(
        DatabaseOptions {
            url: Some(format!("sqlite:{}", db.display())),
            schema: "coturn",
            ..DatabaseOptions::default()
        },
        &[],
    );
    let peer = Peer::start(&[v4()]);
    relays(&server, &peer, "coturn user olga", "olga", "o-pass");
    rejected(
        &server,
        &peer,
        "coturn user olga, wrong password",
        "olga",
        "nope",
    );
    let (out, rep) = Run::new(&server, v4(), ARGS)
        .rest_secret("coturn-secret")
        .peer(&peer, v4())
        .go();
    assert_delivered("REST with coturn's turn_secret", &out, &rep, MESSAGES, LEN);
    drop(server);
    assert!(
        std::fs::read(&db).expect("read the coturn database") == before,
        "Turnpike must not write to a coturn database"
    );
}
