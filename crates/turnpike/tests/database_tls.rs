//! The credential database over TLS, end to end: `turnpike serve` and the
//! admin command line reach a real PostgreSQL server (started by the test
//! with `ssl=on` and a certificate from the test PKI) with
//! `sslmode=verify-full` and `database.ca_file`, a user added with
//! `turnpike user add` relays through coturn's `turnutils_uclient`, and the
//! server's view (`pg_stat_ssl`) shows every Turnpike connection encrypted.
//! A CA that did not sign the server's certificate stops `serve` (and the
//! admin commands) with one line naming the CA file.

mod support;

use std::net::IpAddr;
use std::path::Path;

use support::cli::run;
use support::pki::{KeyType, Pki};
use support::uclient::{Run, assert_delivered};
use support::{DatabaseOptions, PRIMARY_V4, Peer, ServerOptions, TestServer, TurnOptions};
use turnpike_store::testing::{TestPostgres, TestPostgresOptions, TestPostgresTls};

const ARGS: &[&str] = &["-c", "-m", "1", "-n", "10", "-l", "200"];
const MESSAGES: u64 = 10;
const LEN: u64 = 200;

fn v4() -> IpAddr {
    PRIMARY_V4.into()
}

/// PostgreSQL with TLS, its certificate for `localhost`, 127.0.0.1 and ::1,
/// signed by `pki`'s intermediate (served with it, so clients need only
/// the root).
fn postgres_with_tls(pki: &Pki) -> TestPostgres {
    let leaf = pki.leaf("localhost", KeyType::EcP256Pkcs8, 30);
    TestPostgres::start_with(TestPostgresOptions {
        tls: Some(TestPostgresTls {
            certificate: leaf.chain,
            private_key: leaf.key,
        }),
        ..TestPostgresOptions::default()
    })
}

fn verify_full(pg: &TestPostgres, ca_file: &Path) -> DatabaseOptions {
    DatabaseOptions {
        url: Some(format!("{}?sslmode=verify-full", pg.url())),
        ca_file: Some(ca_file.to_owned()),
        ..DatabaseOptions::default()
    }
}

#[test]
fn serve_authenticates_users_from_postgres_over_verified_tls() {
    let pki = Pki::new();
    let pg = postgres_with_tls(&pki);
    let server = TestServer::start(ServerOptions {
        ipv6: false,
        turn: Some(TurnOptions {
            users: Vec::new(),
            ..TurnOptions::loopback()
        }),
        database: verify_full(&pg, pki.root()),
        ..ServerOptions::default()
    });
    // The admin command line opens the same store, over TLS too.
    server.admin(&["user", "add", "dave", "--password", "d-pass"]);
    let listed = server.admin(&["user", "list"]);
    assert!(listed.contains("dave"), "{listed}");

    let peer = Peer::start(&[v4()]);
    let (out, rep) = Run::new(&server, v4(), ARGS)
        .peer(&peer, v4())
        .credentials("dave", "d-pass")
        .go();
    assert_delivered("dave from PostgreSQL over TLS", &out, &rep, MESSAGES, LEN);

    // The server's own connections (its pool stays open), as PostgreSQL
    // sees them: some, and every one encrypted.
    let counts = pg.psql(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
         FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
         WHERE a.application_name = 'turnpike'",
    );
    let (encrypted, plain) = counts.split_once('|').expect("two columns");
    assert!(
        encrypted.parse::<u32>().expect("a count") > 0,
        "no turnpike connection: {counts}"
    );
    assert_eq!(plain, "0", "plaintext turnpike connections: {counts}");
}

#[test]
fn a_wrong_ca_stops_serve_with_one_line() {
    let pki = Pki::new();
    let wrong = Pki::new();
    let pg = postgres_with_tls(&pki);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("turnpike.toml");
    let data_dir = dir.path().join("data");
    let url = format!("{}?sslmode=verify-full", pg.url());
    std::fs::write(
        &config,
        format!(
            "[log]\nlevel = \"warn\"\n\n[stun]\nlisten = [\"127.0.0.1:0\"]\n\n[database]\nurl = {url:?}\ndata_dir = {:?}\nca_file = {:?}\n",
            data_dir.display().to_string(),
            wrong.root().display().to_string()
        ),
    )
    .expect("write the config");
    let config = config.to_str().expect("UTF-8 temporary path");
    let want = format!(
        "TLS certificate not trusted by CA file {} (",
        wrong.root().display()
    );

    // Exits at start, before binding anything; the line names the file
    // and the settings to check, never the password. (`log.level = warn`
    // leaves out the "starting turnpike" info line.)
    let out = run(&["serve", "-c", config], &[]);
    assert_ne!(out.status, 0, "serve started with a wrong CA");
    let line = out.single_error_line();
    assert!(line.contains(&want), "{line}");
    assert!(
        line.contains("check database.ca_file / sslrootcert"),
        "{line}"
    );
    assert!(!line.contains("turnpike-test-password"), "{line}");

    // The admin command line says the same.
    let out = run(&["user", "list", "-c", config], &[]);
    let line = out.error_line(1);
    assert!(line.contains(&want), "{line}");

    // With the right CA (by flag, over the file's) the same command works.
    let root = pki.root().to_str().expect("UTF-8 temporary path");
    let out = run(
        &["user", "list", "-c", config, "--database-ca-file", root],
        &[],
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
}
