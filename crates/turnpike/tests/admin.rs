//! End-to-end tests of the administration commands (`turnpike user …`,
//! `turnpike secret …`, `turnpike credentials`) run as the real binary
//! against SQLite files in temporary directories, a coturn-schema SQLite
//! file, an unreachable PostgreSQL URL and a real PostgreSQL server
//! (`TestPostgres`).
//!
//! What the commands wrote is checked through the store itself (keys equal
//! to the ones derived from the password) and by reading the database file's
//! bytes (no password in them). Minted credentials are recomputed here with
//! the RustCrypto HMACs, independently of `turnpike_core::ephemeral`.
//!
//! Each run gets a cleared environment, so a developer's `TURNPIKE_*` cannot
//! change the outcome.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use support::cli::{Output, run_with_input};
use turnpike_store::testing::TestPostgres;
use turnpike_store::{Location, Schema, Store, StoreOptions, StoredKeys};

/// The default `turn.realm`.
const REALM: &str = "turnpike";

/// An SQLite database in its own temporary directory, and the environment
/// that points the binary at it.
struct Sqlite {
    dir: tempfile::TempDir,
    url: String,
}

impl Sqlite {
    fn new() -> Sqlite {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("turnpike.db").display());
        Sqlite { dir, url }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("turnpike.db")
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, &[], "")
    }

    fn run_with(&self, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
        let mut env = env.to_vec();
        env.push(("TURNPIKE_DATABASE", &self.url));
        run_with_input(args, &env, stdin)
    }

    /// Runs `args` and asserts that it fails with `status` and one error
    /// line containing `needle`; returns that line.
    fn fails(&self, args: &[&str], status: i32, needle: &str) -> String {
        let line = self.run(args).error_line(status).to_owned();
        assert!(line.contains(needle), "{args:?}: {line}");
        line
    }

    /// Every byte SQLite keeps for this database (the file and its WAL).
    fn all_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap() {
            bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
        }
        bytes
    }

    fn store(&self) -> Store {
        block_on(Store::open(StoreOptions {
            create: false,
            ..StoreOptions::new(Location::Sqlite(self.path()))
        }))
        .unwrap()
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hmac_sha1_b64(key: &str, message: &str) -> String {
    let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(message.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn hmac_sha512_b64(key: &str, message: &str) -> String {
    let mut mac = <Hmac<sha2::Sha512> as KeyInit>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(message.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// `username: U` / `password: P` output.
fn parse_credentials(out: &Output) -> (String, String) {
    let lines = out.ok_lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let username = lines[0].strip_prefix("username: ").expect("username line");
    let password = lines[1].strip_prefix("password: ").expect("password line");
    (username.to_owned(), password.to_owned())
}

/// Asserts an expiry is now + ttl, give or take the run's duration.
fn assert_expiry(expiry: u64, ttl: u64, before: u64) {
    let after = unix_now();
    assert!(
        (before + ttl..=after + ttl).contains(&expiry),
        "expiry {expiry} not in {}..={}",
        before + ttl,
        after + ttl
    );
}

#[test]
fn users_add_list_passwd_remove() {
    let db = Sqlite::new();
    let dir = db.dir.path();
    // Three ways to give a password: stdin, flag, file.
    let out = db.run_with(&["user", "add", "alice"], &[], "alice-pw\n");
    assert!(out.ok_lines().is_empty(), "stdout carries only data");
    assert!(
        out.stderr
            .contains("added user \"alice\" to realm \"turnpike\""),
        "{}",
        out.stderr
    );
    db.run(&["user", "add", "bob", "--password", "bob-pw"])
        .ok_lines();
    let file = dir.join("carol.pw");
    std::fs::write(&file, "carol-pw\r\nignored second line\n").unwrap();
    db.run(&[
        "user",
        "add",
        "carol",
        "--password-file",
        file.to_str().unwrap(),
    ])
    .ok_lines();
    assert_eq!(
        db.run(&["user", "list"]).ok_lines(),
        ["alice", "bob", "carol"]
    );

    let store = db.store();
    let keys = |user: &str| block_on(store.user_keys(REALM, user)).unwrap();
    let derived = |user: &str, pw: &str| Some(StoredKeys::from_password(user, REALM, pw));
    assert_eq!(keys("alice"), derived("alice", "alice-pw"));
    assert_eq!(keys("bob"), derived("bob", "bob-pw"));
    assert_eq!(
        keys("carol"),
        derived("carol", "carol-pw"),
        "first line only"
    );

    // passwd replaces the keys.
    db.run_with(&["user", "passwd", "alice"], &[], "new-pw\n")
        .ok_lines();
    assert_eq!(keys("alice"), derived("alice", "new-pw"));

    db.run(&["user", "remove", "bob"]).ok_lines();
    assert_eq!(db.run(&["user", "list"]).ok_lines(), ["alice", "carol"]);
    assert_eq!(keys("bob"), None);

    // State errors: exit 1, one line.
    db.fails(
        &["user", "remove", "bob"],
        1,
        "user \"bob\" in realm \"turnpike\" not found",
    );
    db.fails(
        &["user", "passwd", "zed", "--password", "x"],
        1,
        "not found",
    );
    db.fails(
        &["user", "add", "alice", "--password", "x"],
        1,
        "already exists",
    );
    assert_eq!(keys("alice"), derived("alice", "new-pw"), "unchanged");

    // Input errors: exit 2.
    db.fails(&["user", "add", "dave"], 2, "no password on standard input");
    let line = db
        .run_with(&["user", "add", "dave"], &[], "\n")
        .error_line(2)
        .to_owned();
    assert!(line.contains("empty"), "{line}");
    db.fails(
        &["user", "add", "dave", "--password-file", "/nonexistent/pw"],
        2,
        "cannot read password file /nonexistent/pw",
    );
    db.fails(&["user", "add", "", "--password", "x"], 2, "username");
    assert_eq!(db.run(&["user", "list"]).ok_lines(), ["alice", "carol"]);
}

/// Only keys are stored: no way of giving the password leaves it in the
/// database file.
#[test]
fn the_database_never_contains_the_password() {
    let db = Sqlite::new();
    let file = db.dir.path().join("pw");
    std::fs::write(&file, "Pw-file-7c1e\n").unwrap();
    db.run_with(&["user", "add", "user-stdin"], &[], "Pw-stdin-3b9d\n")
        .ok_lines();
    db.run(&["user", "add", "user-flag", "--password", "Pw-flag-5a2f"])
        .ok_lines();
    db.run(&[
        "user",
        "add",
        "user-file",
        "--password-file",
        file.to_str().unwrap(),
    ])
    .ok_lines();
    db.run(&["user", "passwd", "user-flag", "--password", "Pw-new-9e4c"])
        .ok_lines();
    std::fs::remove_file(&file).unwrap();
    let bytes = db.all_bytes();
    // The users are there (so the search looks at the right bytes)…
    for user in ["user-stdin", "user-flag", "user-file"] {
        assert!(contains(&bytes, user), "{user} not in the database");
    }
    // …their passwords are not.
    for pw in [
        "Pw-stdin-3b9d",
        "Pw-flag-5a2f",
        "Pw-file-7c1e",
        "Pw-new-9e4c",
    ] {
        assert!(!contains(&bytes, pw), "{pw} found in the database file");
    }
}

#[test]
fn other_realms_must_be_known_or_created() {
    let db = Sqlite::new();
    // `user add USER --password x --realm other`, then `extra`.
    let add_to_other = |user: &'static str, extra: &[&'static str]| {
        let mut args = vec!["user", "add", user, "--password", "x", "--realm", "other"];
        args.extend_from_slice(extra);
        db.run(&args)
    };
    let unknown_other = |known: &str| {
        format!(
            "turnpike: error: unknown realm \"other\" (known: {known}); pass --create-realm to add it"
        )
    };
    // A fresh database: the config's realm is accepted (and registered);
    // another is not.
    assert_eq!(
        add_to_other("carol", &[]).error_line(1),
        unknown_other("none")
    );
    db.run(&["user", "add", "alice", "--password", "x"])
        .ok_lines();
    assert_eq!(
        add_to_other("carol", &[]).error_line(1),
        unknown_other("turnpike")
    );
    db.fails(
        &["secret", "add", "s", "--realm", "other"],
        1,
        "pass --create-realm",
    );
    add_to_other("carol", &["--create-realm"]).ok_lines();
    // Now known: no --create-realm needed.
    add_to_other("dave", &[]).ok_lines();
    assert_eq!(
        db.run(&["user", "list", "--realm", "other"]).ok_lines(),
        ["carol", "dave"]
    );
    assert_eq!(db.run(&["user", "list"]).ok_lines(), ["alice"]);
    assert_eq!(
        db.run(&["user", "list", "--all-realms"]).ok_lines(),
        ["other\tcarol", "other\tdave", "turnpike\talice"]
    );
    // The keys are derived with the realm they are stored in.
    let store = db.store();
    assert_eq!(
        block_on(store.user_keys("other", "carol")).unwrap(),
        Some(StoredKeys::from_password("carol", "other", "x"))
    );
    // Reading an unknown realm is an error too (a typo, not an empty list).
    let line = db
        .run(&["user", "list", "--realm", "othr"])
        .error_line(1)
        .to_owned();
    assert_eq!(
        line,
        "turnpike: error: unknown realm \"othr\" (known: other, turnpike)"
    );
    // TURNPIKE_REALM is the server's realm (a server started with it
    // registers it), so it needs no --create-realm; --realm on the command
    // line still picks another.
    let env = [("TURNPIKE_REALM", "env.example")];
    db.run_with(&["user", "add", "erin", "--password", "x"], &env, "")
        .ok_lines();
    assert_eq!(
        db.run_with(&["user", "list"], &env, "").ok_lines(),
        ["erin"]
    );
    assert_eq!(
        db.run_with(&["user", "list", "--realm", "turnpike"], &env, "")
            .ok_lines(),
        ["alice"]
    );
    db.run_with(
        &[
            "user",
            "add",
            "fred",
            "--password",
            "x",
            "--realm",
            "new.example",
        ],
        &env,
        "",
    )
    .error_line(1);
}

#[test]
fn secrets_add_list_remove() {
    let db = Sqlite::new();
    let before = unix_now();
    let out = db.run(&["secret", "add", "first-secret"]);
    assert!(out.ok_lines().is_empty());
    assert!(out.stderr.contains("key index 0"), "{}", out.stderr);
    db.run_with(&["secret", "add"], &[], "from-stdin\n")
        .ok_lines();
    db.run(&["secret", "add", "indexed", "--key-index", "7"])
        .ok_lines();
    let generated = db.run(&["secret", "add", "--generate"]).ok_lines()[0].to_owned();
    assert_eq!(generated.len(), 43, "{generated}");
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&generated)
        .unwrap();
    assert_eq!(decoded.len(), 32);
    let again = db.run(&["secret", "add", "--generate"]).ok_lines()[0].to_owned();
    assert_ne!(generated, again);

    let out = db.run(&["secret", "list"]);
    let rows: Vec<Vec<&str>> = out
        .ok_lines()
        .iter()
        .map(|l| l.split('\t').collect())
        .collect();
    let indexes: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    let values: Vec<&str> = rows.iter().map(|r| r[2]).collect();
    assert_eq!(indexes, ["0", "1", "2", "3", "7"]);
    assert_eq!(
        values,
        [
            "first-secret",
            "from-stdin",
            generated.as_str(),
            again.as_str(),
            "indexed"
        ]
    );
    for row in &rows {
        assert_eq!(row.len(), 3, "{row:?}");
        // RFC 3339 UTC, this very minute (or the next).
        let created = row[1];
        assert_eq!(created.len(), 20, "{created}");
        assert!(
            created.ends_with('Z') && created.as_bytes()[10] == b'T',
            "{created}"
        );
    }
    let year = 1970 + before / 31_556_952;
    assert!(rows[0][1].starts_with(&year.to_string()), "{}", rows[0][1]);

    // Errors: a taken index or value, a missing secret.
    db.fails(
        &["secret", "add", "other", "--key-index", "7"],
        1,
        "already exists",
    );
    let line = db.fails(&["secret", "add", "indexed"], 1, "already exists");
    assert!(
        !line.contains("indexed"),
        "the value is not repeated: {line}"
    );

    db.run(&["secret", "remove", "first-secret"]).ok_lines();
    db.run(&["secret", "remove", "--key-index", "7"]).ok_lines();
    db.fails(&["secret", "remove", "--key-index", "7"], 1, "not found");
    db.fails(&["secret", "remove", "nope"], 1, "not found");
    let out = db.run(&["secret", "list"]);
    let values: Vec<&str> = out
        .ok_lines()
        .iter()
        .map(|l| l.split('\t').nth(2).unwrap())
        .collect();
    assert_eq!(values, ["from-stdin", generated.as_str(), again.as_str()]);
    db.fails(&["secret", "remove"], 2, "--key-index");
}

/// Read commands never create a database: a mistyped path is an error.
#[test]
fn read_commands_need_an_existing_database() {
    let db = Sqlite::new();
    for args in [
        &["user", "list"][..],
        &["user", "list", "--all-realms"],
        &["secret", "list"],
        &["credentials"],
    ] {
        let line = db.run(args).error_line(1).to_owned();
        assert!(
            line.contains(&db.path().display().to_string()),
            "{args:?}: {line}"
        );
        assert!(!db.path().exists(), "{args:?} created the database");
    }
    // A write creates it, directory included.
    let nested = db.dir.path().join("a/b/t.db");
    let url = format!("sqlite:{}", nested.display());
    run_with_input(
        &[
            "user",
            "add",
            "alice",
            "--password",
            "x",
            "--database",
            &url,
        ],
        &[],
        "",
    )
    .ok_lines();
    assert!(nested.exists());
}

#[test]
fn unreachable_postgres_is_one_line_without_the_password() {
    let url = "postgres://u:hunter2@127.0.0.1:1/x";
    for args in [
        &["user", "list"][..],
        &["user", "add", "alice", "--password", "x"],
        &["secret", "add", "--generate"],
        &["secret", "list"],
        &["credentials"],
    ] {
        let started = Instant::now();
        let out = run_with_input(args, &[("TURNPIKE_DATABASE", url)], "");
        let line = out.error_line(1);
        assert!(line.contains("127.0.0.1:1"), "{args:?}: {line}");
        assert!(!line.contains("hunter2"), "{args:?}: {line}");
        assert!(started.elapsed() < Duration::from_secs(15), "{args:?}");
    }
    // A URL that cannot be used at all is a configuration error.
    let out = run_with_input(
        &["user", "list", "--database", "mysql://root:hunter2@db/turn"],
        &[],
        "",
    );
    let line = out.error_line(2);
    assert!(line.contains("database.url"), "{line}");
    assert!(!line.contains("hunter2"), "{line}");
}

/// A coturn database is read, never written.
#[test]
fn coturn_schema_is_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coturn.sqlite");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE turnusers_lt ( realm varchar(127) default '', name varchar(512), hmackey char(128), PRIMARY KEY (realm,name));
         CREATE TABLE turn_secret (realm varchar(127) default '', value varchar(127), primary key (realm,value));",
    )
    .unwrap();
    let key = StoredKeys::from_password("alice", "example.org", "pw")
        .md5
        .unwrap();
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    conn.execute(
        "INSERT INTO turnusers_lt (realm, name, hmackey) VALUES ('example.org', 'alice', ?1)",
        [&hex],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO turn_secret (realm, value) VALUES ('example.org', 'coturn-secret')",
        [],
    )
    .unwrap();
    drop(conn);
    let url = format!("sqlite:{}", path.display());
    let env = [
        ("TURNPIKE_DATABASE", url.as_str()),
        ("TURNPIKE_DATABASE_SCHEMA", "coturn"),
        ("TURNPIKE_REALM", "example.org"),
    ];
    let run = |args: &[&str]| run_with_input(args, &env, "");
    assert_eq!(run(&["user", "list"]).ok_lines(), ["alice"]);
    assert_eq!(
        run(&["user", "list", "--all-realms"]).ok_lines(),
        ["example.org\talice"]
    );
    assert_eq!(run(&["secret", "list"]).ok_lines(), ["0\t-\tcoturn-secret"]);
    let before = std::fs::read(&path).unwrap();
    for args in [
        &["user", "add", "bob", "--password", "x"][..],
        &["user", "passwd", "alice", "--password", "x"],
        &["user", "remove", "alice"],
        &["secret", "add", "--generate"],
        &["secret", "remove", "coturn-secret"],
    ] {
        let out = run(args);
        let line = out.error_line(1);
        assert!(line.contains("coturn's turnadmin"), "{args:?}: {line}");
        assert!(line.contains("read-only"), "{args:?}: {line}");
    }
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the file was written"
    );
    // Credentials minted from the coturn secret.
    let (username, password) = parse_credentials(&run(&["credentials", "--user-id", "u1"]));
    assert_eq!(password, hmac_sha1_b64("coturn-secret", &username));
}

#[test]
fn rest_credentials_match_an_independent_hmac() {
    let before = unix_now();
    let out = run_with_input(
        &[
            "credentials",
            "--secret",
            "s3cret",
            "--user-id",
            "alice",
            "--ttl",
            "3600",
        ],
        &[],
        "",
    );
    let (username, password) = parse_credentials(&out);
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, "alice");
    assert_expiry(expiry.parse().unwrap(), 3600, before);
    assert_eq!(password, hmac_sha1_b64("s3cret", &username));

    // Without a user id the username is the expiry; the default TTL is a
    // day; the separator is turn.rest_separator.
    let before = unix_now();
    let (username, password) = parse_credentials(&run_with_input(
        &["credentials"],
        &[("TURNPIKE_SECRETS", "s3cret")],
        "",
    ));
    assert_expiry(username.parse().unwrap(), 86_400, before);
    assert_eq!(password, hmac_sha1_b64("s3cret", &username));
    let (username, password) = parse_credentials(&run_with_input(
        &[
            "credentials",
            "--secret",
            "k",
            "--rest-separator",
            "-",
            "--user-id",
            "bob",
        ],
        &[],
        "",
    ));
    assert!(username.ends_with("-bob"), "{username}");
    assert_eq!(password, hmac_sha1_b64("k", &username));

    // The newest (last) configured secret, unless --key-index says.
    let env = [("TURNPIKE_SECRETS", "old,new")];
    let (username, password) = parse_credentials(&run_with_input(&["credentials"], &env, ""));
    assert_eq!(password, hmac_sha1_b64("new", &username));
    let (username, password) = parse_credentials(&run_with_input(
        &["credentials", "--key-index", "0"],
        &env,
        "",
    ));
    assert_eq!(password, hmac_sha1_b64("old", &username));
    let line = run_with_input(&["credentials", "--key-index", "2"], &env, "")
        .error_line(2)
        .to_owned();
    assert!(line.contains("no secret with key index 2"), "{line}");
    assert!(!line.contains("old") && !line.contains("new,"), "{line}");
}

#[test]
fn wire_credentials_match_an_independent_hmac() {
    let env = [("TURNPIKE_SECRETS", "zero,one")];
    for (args, index, secret) in [
        (&["credentials", "--format", "wire"][..], 1, "one"),
        (
            &["credentials", "--format", "wire", "--key-index", "0"],
            0,
            "zero",
        ),
    ] {
        let before = unix_now();
        let mut full = args.to_vec();
        full.extend(["--ttl", "600"]);
        let (username, password) = parse_credentials(&run_with_input(&full, &env, ""));
        let fields: Vec<&str> = username.split('.').collect();
        assert_eq!(fields.len(), 5, "{username}");
        let expiry = fields[0].strip_prefix("d=").unwrap().parse().unwrap();
        assert_expiry(expiry, 600, before);
        assert_eq!(fields[1], "v=1");
        assert_eq!(fields[2], format!("k={index}"));
        assert_eq!(fields[3], "t=s");
        let random = fields[4].strip_prefix("r=").unwrap();
        assert_eq!(random.len(), 16, "{username}");
        assert!(
            random.chars().all(|c| c.is_ascii_alphanumeric()),
            "{username}"
        );
        assert_eq!(password, hmac_sha512_b64(secret, &username));
    }
    let line = run_with_input(
        &["credentials", "--format", "wire", "--user-id", "alice"],
        &env,
        "",
    )
    .error_line(2)
    .to_owned();
    assert!(line.contains("--user-id"), "{line}");
}

#[test]
fn credentials_as_an_rtc_ice_server() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("t.toml");
    std::fs::write(
        &config,
        "[stun]\nlisten = [\"127.0.0.1:5000\", \"127.0.0.1:6000\"]\ntcp = false\n[turn]\nsecrets = [\"js\"]\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let out = run_with_input(&["credentials", "--json", "-c", config], &[], "");
    let lines = out.ok_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let server: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    let urls = server["urls"].as_array().unwrap();
    assert_eq!(urls.len(), 1, "UDP only, first listen port: {urls:?}");
    let url = urls[0].as_str().unwrap();
    assert!(
        url.starts_with("turn:") && url.ends_with(":5000?transport=udp"),
        "{url}"
    );
    let username = server["username"].as_str().unwrap();
    let credential = server["credential"].as_str().unwrap();
    assert_eq!(credential, hmac_sha1_b64("js", username));
    assert_eq!(server.as_object().unwrap().len(), 3);
    // The WebRTC order: urls, username, credential.
    assert!(lines[0].starts_with("{\"urls\":["), "{}", lines[0]);

    // Default config: UDP and TCP on 3478, but TURN over TCP is refused for
    // now, so only the UDP URL. Explicit URLs replace it.
    let out = run_with_input(&["credentials", "--json", "--secret", "s"], &[], "");
    let server: serde_json::Value = serde_json::from_str(out.ok_lines()[0]).unwrap();
    let urls: Vec<&str> = server["urls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert_eq!(urls.len(), 1, "{urls:?}");
    assert!(urls[0].ends_with(":3478?transport=udp"), "{urls:?}");
    // TCP only: no default URL at all, which is an error rather than an
    // RTCIceServer without URLs; --url still works.
    let tcp_only = [("TURNPIKE_UDP", "false"), ("TURNPIKE_SECRETS", "s")];
    let line = run_with_input(&["credentials", "--json"], &tcp_only, "")
        .error_line(2)
        .to_owned();
    assert!(line.contains("pass --url"), "{line}");
    let out = run_with_input(
        &["credentials", "--json", "--url", "turn:h:3478"],
        &tcp_only,
        "",
    );
    assert!(out.ok_lines()[0].starts_with("{\"urls\":[\"turn:h:3478\"]"));
    let out = run_with_input(
        &[
            "credentials",
            "--json",
            "--secret",
            "s",
            "--url",
            "turn:turn.example.com:3478",
            "--url",
            "turns:turn.example.com:5349?transport=tcp",
        ],
        &[],
        "",
    );
    let server: serde_json::Value = serde_json::from_str(out.ok_lines()[0]).unwrap();
    assert_eq!(
        server["urls"],
        serde_json::json!([
            "turn:turn.example.com:3478",
            "turns:turn.example.com:5349?transport=tcp"
        ])
    );
}

/// Without secrets in the configuration, `credentials` uses the database's:
/// the newest, or the one with --key-index.
#[test]
fn credentials_from_database_secrets() {
    let db = Sqlite::new();
    db.run(&["secret", "add", "older", "--key-index", "8"])
        .ok_lines();
    // Creation times are whole seconds.
    std::thread::sleep(Duration::from_millis(1100));
    db.run(&["secret", "add", "newer", "--key-index", "3"])
        .ok_lines();
    let (username, password) = parse_credentials(&db.run(&["credentials", "--format", "wire"]));
    assert!(username.contains(".k=3."), "{username}");
    assert_eq!(password, hmac_sha512_b64("newer", &username));
    let (username, password) =
        parse_credentials(&db.run(&["credentials", "--format", "wire", "--key-index", "8"]));
    assert!(username.contains(".k=8."), "{username}");
    assert_eq!(password, hmac_sha512_b64("older", &username));
    db.fails(
        &["credentials", "--key-index", "5"],
        1,
        "no secret with key index 5",
    );
    // Secrets are per realm.
    db.run(&[
        "secret",
        "add",
        "elsewhere",
        "--realm",
        "b.example",
        "--create-realm",
    ])
    .ok_lines();
    let (username, password) = parse_credentials(&db.run(&["credentials", "--realm", "b.example"]));
    assert_eq!(password, hmac_sha1_b64("elsewhere", &username));
    // A configured secret wins over the database's.
    let (username, password) = parse_credentials(&db.run(&["credentials", "--secret", "cfg"]));
    assert_eq!(password, hmac_sha1_b64("cfg", &username));
}

/// The same commands against a real PostgreSQL server.
#[test]
fn postgres_users_and_secrets() {
    let pg = TestPostgres::start();
    let url = pg.url();
    let env = [("TURNPIKE_DATABASE", url.as_str())];
    let run = |args: &[&str], stdin: &str| run_with_input(args, &env, stdin);
    run(&["user", "add", "alice"], "alice-pw\n").ok_lines();
    run(&["user", "add", "bob", "--password", "bob-pw"], "").ok_lines();
    assert_eq!(run(&["user", "list"], "").ok_lines(), ["alice", "bob"]);
    run(&["user", "passwd", "bob"], "bob-new\n").ok_lines();
    run(&["user", "remove", "alice"], "").ok_lines();
    assert_eq!(
        run(&["user", "list", "--all-realms"], "").ok_lines(),
        ["turnpike\tbob"]
    );
    let store = block_on(Store::open(StoreOptions {
        create: false,
        ..StoreOptions::new(Location::Postgres(url.clone()))
    }))
    .unwrap();
    assert_eq!(store.schema(), Schema::Turnpike);
    assert_eq!(
        block_on(store.user_keys(REALM, "bob")).unwrap(),
        Some(StoredKeys::from_password("bob", REALM, "bob-new"))
    );
    // Nothing in the database holds a password.
    let dump = pg.psql("SELECT string_agg(t::text, ' ') FROM (SELECT * FROM users) t");
    assert!(dump.contains("bob"), "{dump}");
    assert!(
        !dump.contains("bob-new") && !dump.contains("alice-pw"),
        "{dump}"
    );

    let secret = run(&["secret", "add", "--generate"], "").ok_lines()[0].to_owned();
    let (username, password) = parse_credentials(&run(&["credentials"], ""));
    assert_eq!(password, hmac_sha1_b64(&secret, &username));
    let line = run(
        &["user", "add", "x", "--password", "x", "--realm", "nope"],
        "",
    )
    .error_line(1)
    .to_owned();
    assert!(
        line.contains("unknown realm \"nope\" (known: turnpike)"),
        "{line}"
    );
}
