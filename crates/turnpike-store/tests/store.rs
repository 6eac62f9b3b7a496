//! Turnpike's own schema on real databases: SQLite files in temporary
//! directories and PostgreSQL servers started for each test.

mod common;

use std::time::{Duration, Instant};

use common::Db;
use turnpike_store::testing::TestPostgres;
use turnpike_store::{
    CredentialDb, Location, PostgresStore, Schema, SecretRef, SqliteStore, Store, StoreError,
    StoreOptions, StoredKeys, UserInfo,
};

const REALM: &str = "example.org";

fn keys(username: &str, password: &str) -> StoredKeys {
    StoredKeys::from_password(username, REALM, password)
}

on_both!(
    migrates_from_empty_and_reopens,
    refuses_a_newer_schema,
    users,
    input_validation,
    passwords_are_never_stored,
    secrets,
    trait_and_clones,
);

async fn migrates_from_empty_and_reopens(db: Db) {
    let store = db.open().await;
    assert_eq!(store.schema(), Schema::Turnpike);
    assert_eq!(store.location(), &db.location());
    assert_eq!(db.schema_version(), 2);
    assert_eq!(store.realms().await.unwrap(), Vec::<String>::new());
    store.ensure_realm(REALM).await.unwrap();
    store.ensure_realm(REALM).await.unwrap();
    store.ensure_realm("b.example").await.unwrap();
    store
        .add_user(REALM, "alice", &keys("alice", "pw"))
        .await
        .unwrap();
    drop(store);

    // Reopening migrates nothing and loses nothing.
    let again = db.open().await;
    assert_eq!(db.schema_version(), 2);
    assert_eq!(again.realms().await.unwrap(), vec!["b.example", REALM]);
    assert_eq!(
        again.user_keys(REALM, "alice").await.unwrap(),
        Some(keys("alice", "pw"))
    );

    // A second store on the same database (the admin command line next to a
    // running server) sees the first one's writes and vice versa.
    let admin = db.open().await;
    admin
        .add_user(REALM, "bob", &keys("bob", "pw"))
        .await
        .unwrap();
    assert_eq!(
        again.user_keys(REALM, "bob").await.unwrap(),
        Some(keys("bob", "pw"))
    );
    again.remove_user(REALM, "alice").await.unwrap();
    assert_eq!(admin.user_keys(REALM, "alice").await.unwrap(), None);
}

async fn refuses_a_newer_schema(db: Db) {
    drop(db.open().await);
    db.set_schema_version(99);
    let err = Store::open(db.options(Schema::Turnpike))
        .await
        .expect_err("a newer schema must be refused");
    match err {
        StoreError::Schema(msg) => assert_eq!(
            msg,
            "database schema version 99 is newer than this turnpike (2): upgrade turnpike"
        ),
        other => panic!("expected a schema error, got {other:?}"),
    }
    // Refusing must not have touched it.
    assert_eq!(db.schema_version(), 99);
}

async fn users(db: Db) {
    let store = db.open().await;

    // No realm registered yet.
    match store.add_user(REALM, "alice", &keys("alice", "pw")).await {
        Err(StoreError::UnknownRealm { realm, known }) => {
            assert_eq!(realm, REALM);
            assert!(known.is_empty(), "{known:?}");
        }
        other => panic!("expected UnknownRealm, got {other:?}"),
    }
    store.ensure_realm(REALM).await.unwrap();
    store.ensure_realm("other.net").await.unwrap();
    match store
        .add_user("typo.org", "alice", &keys("alice", "pw"))
        .await
    {
        Err(StoreError::UnknownRealm { realm, known }) => {
            assert_eq!(realm, "typo.org");
            assert_eq!(known, vec![REALM, "other.net"]);
        }
        other => panic!("expected UnknownRealm, got {other:?}"),
    }

    let before = now();
    store
        .add_user(REALM, "alice", &keys("alice", "pw"))
        .await
        .unwrap();
    store
        .add_user(REALM, "bob", &keys("bob", "pw"))
        .await
        .unwrap();
    // Same name, other realm: a different user.
    let other_keys = StoredKeys::from_password("alice", "other.net", "pw2");
    store
        .add_user("other.net", "alice", &other_keys)
        .await
        .unwrap();
    let after = now();

    assert_eq!(
        store.user_keys(REALM, "alice").await.unwrap(),
        Some(keys("alice", "pw"))
    );
    assert_eq!(
        store.user_keys("other.net", "alice").await.unwrap(),
        Some(other_keys.clone())
    );
    assert_eq!(store.user_keys(REALM, "carol").await.unwrap(), None);
    assert_eq!(store.user_keys("nowhere", "alice").await.unwrap(), None);
    // Names are case-sensitive.
    assert_eq!(store.user_keys(REALM, "Alice").await.unwrap(), None);

    match store.add_user(REALM, "alice", &keys("alice", "x")).await {
        Err(StoreError::AlreadyExists(what)) => assert!(what.contains("alice"), "{what}"),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    // The failed add changed nothing.
    assert_eq!(
        store.user_keys(REALM, "alice").await.unwrap(),
        Some(keys("alice", "pw"))
    );

    let all = store.list_users(None).await.unwrap();
    let names: Vec<(&str, &str)> = all
        .iter()
        .map(|u| (u.realm.as_str(), u.username.as_str()))
        .collect();
    assert_eq!(
        names,
        vec![(REALM, "alice"), (REALM, "bob"), ("other.net", "alice")]
    );
    for user in &all {
        let created = user.created_at.expect("created_at is recorded");
        assert!(
            (before..=after).contains(&created),
            "{created} not in {before}..={after}"
        );
    }
    assert_eq!(
        store.list_users(Some("other.net")).await.unwrap(),
        vec![UserInfo {
            realm: "other.net".into(),
            username: "alice".into(),
            created_at: all[2].created_at,
        }]
    );
    assert!(store.list_users(Some("nowhere")).await.unwrap().is_empty());

    // Password change.
    store
        .set_user_keys(REALM, "alice", &keys("alice", "new"))
        .await
        .unwrap();
    assert_eq!(
        store.user_keys(REALM, "alice").await.unwrap(),
        Some(keys("alice", "new"))
    );
    assert_ne!(keys("alice", "new"), keys("alice", "pw"));
    assert!(matches!(
        store.set_user_keys(REALM, "carol", &keys("carol", "x")).await,
        Err(StoreError::NotFound(what)) if what.contains("carol")
    ));

    // A user with only a SHA-256 key (as imported from coturn --sha256).
    let sha_only = StoredKeys {
        md5: None,
        sha256: keys("dave", "pw").sha256,
    };
    store.add_user(REALM, "dave", &sha_only).await.unwrap();
    assert_eq!(
        store.user_keys(REALM, "dave").await.unwrap(),
        Some(sha_only)
    );

    // Removal.
    store.remove_user(REALM, "alice").await.unwrap();
    assert_eq!(store.user_keys(REALM, "alice").await.unwrap(), None);
    assert!(matches!(
        store.remove_user(REALM, "alice").await,
        Err(StoreError::NotFound(what)) if what == "user \"alice\" in realm \"example.org\""
    ));
    // The namesake in the other realm is untouched.
    assert!(
        store
            .user_keys("other.net", "alice")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(store.list_users(Some(REALM)).await.unwrap().len(), 2);
}

async fn input_validation(db: Db) {
    let store = db.open().await;
    store.ensure_realm(REALM).await.unwrap();
    let k = keys("x", "pw");
    let long_user = "u".repeat(513);
    let long_realm = "r".repeat(128);
    for (realm, user) in [
        (REALM, ""),
        (REALM, "a\nb"),
        (REALM, "a\0b"),
        (REALM, "tab\there"),
        (REALM, long_user.as_str()),
        ("", "alice"),
        (long_realm.as_str(), "alice"),
        ("ex\u{7f}ample", "alice"),
    ] {
        assert!(
            matches!(
                store.add_user(realm, user, &k).await,
                Err(StoreError::Invalid(_))
            ),
            "add_user({realm:?}, {user:?})"
        );
    }
    assert!(matches!(
        store.ensure_realm("").await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.ensure_realm(&long_realm).await,
        Err(StoreError::Invalid(_))
    ));
    // The limits themselves are fine (UTF-8 counted in bytes).
    let max_user = "é".repeat(256);
    store.add_user(REALM, &max_user, &k).await.unwrap();
    assert!(store.user_keys(REALM, &max_user).await.unwrap().is_some());
    let max_realm = "r".repeat(127);
    store.ensure_realm(&max_realm).await.unwrap();
    store.add_user(&max_realm, "alice", &k).await.unwrap();

    assert!(matches!(
        store
            .add_user(
                REALM,
                "nokeys",
                &StoredKeys {
                    md5: None,
                    sha256: None
                }
            )
            .await,
        Err(StoreError::Invalid(_))
    ));

    // Lookups never fail on garbage: such users cannot exist.
    for user in ["", "a\0b", long_user.as_str(), "\u{1}"] {
        assert_eq!(
            store.user_keys(REALM, user).await.unwrap(),
            None,
            "{user:?}"
        );
    }
    assert_eq!(store.user_keys("\0", "alice").await.unwrap(), None);
    assert!(store.secrets("a\0b").await.unwrap().is_empty());
    assert!(store.list_users(Some("\0")).await.unwrap().is_empty());
    // Nothing invalid slipped in.
    assert_eq!(store.list_users(None).await.unwrap().len(), 2);
}

async fn passwords_are_never_stored(db: Db) {
    let store = db.open().await;
    store.ensure_realm(REALM).await.unwrap();
    let password = "correct-horse-battery-staple-4711";
    let k = keys("alice", password);
    store.add_user(REALM, "alice", &k).await.unwrap();
    store
        .set_user_keys(REALM, "alice", &keys("alice", "second-password-0815"))
        .await
        .unwrap();
    store.add_user(REALM, "bob", &k).await.unwrap();
    let raw = db.raw_users();
    let md5 = k.md5.unwrap();
    // The check can fail: the stored key is there, raw or as hex.
    assert!(
        contains(&raw, &md5) || contains(&raw, hex::encode(md5).as_bytes()),
        "the MD5 key should be in the raw data"
    );
    assert!(!contains(&raw, password.as_bytes()), "password stored");
    assert!(!contains(&raw, b"second-password-0815"), "password stored");
}

async fn secrets(db: Db) {
    let store = db.open().await;
    assert!(matches!(
        store.add_secret(REALM, None, "sekrit-zero").await,
        Err(StoreError::UnknownRealm { .. })
    ));
    store.ensure_realm(REALM).await.unwrap();
    store.ensure_realm("other.net").await.unwrap();
    assert!(store.secrets(REALM).await.unwrap().is_empty());

    let before = now();
    assert_eq!(
        store.add_secret(REALM, None, "sekrit-zero").await.unwrap(),
        0
    );
    assert_eq!(
        store.add_secret(REALM, None, "sekrit-one").await.unwrap(),
        1
    );
    assert_eq!(
        store
            .add_secret(REALM, Some(5), "sekrit-five")
            .await
            .unwrap(),
        5
    );
    assert_eq!(
        store.add_secret(REALM, None, "sekrit-two").await.unwrap(),
        2
    );
    assert_eq!(
        store
            .add_secret(REALM, Some(u32::MAX), "sekrit-max")
            .await
            .unwrap(),
        u32::MAX
    );
    // Other realms have their own numbering, and may reuse a value.
    assert_eq!(
        store
            .add_secret("other.net", None, "sekrit-one")
            .await
            .unwrap(),
        0
    );
    let after = now();

    match store.add_secret(REALM, Some(1), "another").await {
        Err(StoreError::AlreadyExists(what)) => {
            assert_eq!(what, "secret 1 in realm \"example.org\"")
        }
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    match store.add_secret(REALM, None, "sekrit-zero").await {
        Err(StoreError::AlreadyExists(what)) => {
            assert!(
                !what.contains("sekrit"),
                "the message shows the secret: {what}"
            )
        }
        other => panic!("expected AlreadyExists, got {other:?}"),
    }

    let listed = store.secrets(REALM).await.unwrap();
    let pairs: Vec<(u32, &str)> = listed
        .iter()
        .map(|s| (s.key_index, s.value.as_str()))
        .collect();
    assert_eq!(
        pairs,
        vec![
            (0, "sekrit-zero"),
            (1, "sekrit-one"),
            (2, "sekrit-two"),
            (5, "sekrit-five"),
            (u32::MAX, "sekrit-max"),
        ]
    );
    for s in &listed {
        assert_eq!(s.realm, REALM);
        let created = s.created_at.expect("created_at is recorded");
        assert!((before..=after).contains(&created));
    }

    // Removal by index frees the index for the next addition.
    store
        .remove_secret(REALM, SecretRef::Index(1))
        .await
        .unwrap();
    assert_eq!(
        store.add_secret(REALM, None, "sekrit-new").await.unwrap(),
        1
    );
    assert_eq!(store.secrets(REALM).await.unwrap()[1].value, "sekrit-new");
    // Removal by value.
    store
        .remove_secret(REALM, SecretRef::Value("sekrit-five"))
        .await
        .unwrap();
    let indexes: Vec<u32> = store
        .secrets(REALM)
        .await
        .unwrap()
        .iter()
        .map(|s| s.key_index)
        .collect();
    assert_eq!(indexes, vec![0, 1, 2, u32::MAX]);
    // The other realm's copy of a value is separate.
    assert_eq!(store.secrets("other.net").await.unwrap().len(), 1);

    assert!(matches!(
        store.remove_secret(REALM, SecretRef::Index(42)).await,
        Err(StoreError::NotFound(what)) if what == "secret 42 in realm \"example.org\""
    ));
    match store
        .remove_secret(REALM, SecretRef::Value("sekrit-five"))
        .await
    {
        Err(StoreError::NotFound(what)) => assert!(!what.contains("sekrit"), "{what}"),
        other => panic!("expected NotFound, got {other:?}"),
    }

    let long = "s".repeat(257);
    for bad in ["", long.as_str(), "new\nline"] {
        assert!(
            matches!(
                store.add_secret(REALM, None, bad).await,
                Err(StoreError::Invalid(_))
            ),
            "{bad:?}"
        );
    }
    let max = "s".repeat(256);
    assert_eq!(store.add_secret(REALM, None, &max).await.unwrap(), 3);
    assert!(store.secrets("nowhere").await.unwrap().is_empty());
}

/// The backends are usable through the trait, from spawned tasks
/// (`Send` futures), and clones share the database.
async fn trait_and_clones(db: Db) {
    fn assert_handle<T: CredentialDb + Clone + Send + Sync + std::fmt::Debug + 'static>() {}
    assert_handle::<Store>();
    assert_handle::<SqliteStore>();
    assert_handle::<PostgresStore>();

    async fn add_then_read<D: CredentialDb>(db: &D, name: &str) -> Option<StoredKeys> {
        db.add_user(REALM, name, &keys(name, "pw")).await.unwrap();
        db.user_keys(REALM, name).await.unwrap()
    }

    let store = db.open().await;
    store.ensure_realm(REALM).await.unwrap();
    let clone = store.clone();
    let task = tokio::spawn(async move { add_then_read(&clone, "alice").await });
    assert_eq!(task.await.unwrap(), Some(keys("alice", "pw")));
    assert_eq!(
        store.user_keys(REALM, "alice").await.unwrap(),
        Some(keys("alice", "pw"))
    );

    // The backend types directly: each uses its own kind of location and
    // refuses the other's.
    let options = || db.options(Schema::Turnpike);
    let (direct, other_refuses) = match db.location() {
        Location::Sqlite(_) => (
            add_then_read(&SqliteStore::open(options()).await.unwrap(), "bob").await,
            PostgresStore::open(options()).await.is_err(),
        ),
        Location::Postgres(_) => (
            add_then_read(&PostgresStore::open(options()).await.unwrap(), "bob").await,
            SqliteStore::open(options()).await.is_err(),
        ),
    };
    assert_eq!(direct, Some(keys("bob", "pw")));
    assert!(other_refuses);
    assert!(store.user_keys(REALM, "bob").await.unwrap().is_some());
    // Debug output names the place but not the password.
    let debug = format!("{store:?}");
    assert!(!debug.contains("turnpike-test-password"), "{debug}");
}

// ---------------------------------------------------------------------------
// SQLite only.

#[tokio::test]
async fn sqlite_missing_file_is_not_created_when_asked_not_to() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.db");
    let mut options = StoreOptions::new(Location::Sqlite(path.clone()));
    options.create = false;
    match Store::open(options).await {
        Err(StoreError::Unavailable(msg)) => assert_eq!(
            msg,
            format!(
                "no database at {}: start turnpike once to create it, or pass --database",
                path.display()
            )
        ),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(!path.exists());
}

#[tokio::test]
async fn sqlite_creates_parent_directories_and_uses_wal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/turnpike.db");
    let store = Store::open(StoreOptions::new(Location::Sqlite(path.clone())))
        .await
        .unwrap();
    assert!(path.is_file());
    store.ensure_realm(REALM).await.unwrap();
    let mode: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");

    // Opening with create = false now works (the admin CLI's read commands).
    let mut options = StoreOptions::new(Location::Sqlite(path));
    options.create = false;
    let reader = Store::open(options).await.unwrap();
    assert_eq!(reader.realms().await.unwrap(), vec![REALM]);
}

/// The database holds keys and secrets: what the store creates is its
/// owner's only, whatever the umask; what the operator made keeps its mode.
#[cfg(unix)]
#[tokio::test]
async fn sqlite_creates_private_files_and_directories() {
    use std::os::unix::fs::PermissionsExt;
    // In octal, as `ls -l` and chmod think of them.
    let mode = |path: &std::path::Path| {
        let mode = std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode();
        format!("{:o}", mode & 0o777)
    };
    let dir = tempfile::tempdir().unwrap();
    let operators = dir.path().join("var");
    std::fs::create_dir(&operators).unwrap();
    std::fs::set_permissions(&operators, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = operators.join("lib/turnpike/turnpike.db");
    let store = Store::open(StoreOptions::new(Location::Sqlite(path.clone())))
        .await
        .unwrap();
    // A write, so that SQLite has made its WAL and shared-memory files.
    store.ensure_realm(REALM).await.unwrap();
    let wal = path.with_extension("db-wal");
    let shm = path.with_extension("db-shm");
    for (file, expected) in [
        (&operators, "755"),
        (&operators.join("lib"), "700"),
        (&operators.join("lib/turnpike"), "700"),
        (&path, "600"),
        (&wal, "600"),
        (&shm, "600"),
    ] {
        assert_eq!(mode(file), expected, "{}", file.display());
    }
    drop(store);

    // An (empty) file the operator made is used as it is.
    let theirs = operators.join("theirs.db");
    std::fs::write(&theirs, "").unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o640)).unwrap();
    let store = Store::open(StoreOptions::new(Location::Sqlite(theirs.clone())))
        .await
        .unwrap();
    store.ensure_realm(REALM).await.unwrap();
    assert_eq!(mode(&theirs), "640");
    assert_eq!(mode(&operators), "755");
}

#[tokio::test]
async fn sqlite_refuses_a_file_that_is_not_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "this is not SQLite ".repeat(100)).unwrap();
    match Store::open(StoreOptions::new(Location::Sqlite(path.clone()))).await {
        Err(StoreError::Unavailable(msg)) => {
            assert!(msg.contains("is not an SQLite database"), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // And left it alone.
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "this is not SQLite ".repeat(100)
    );
}

// ---------------------------------------------------------------------------
// PostgreSQL only.

/// A fresh PostgreSQL database, a store on it, and user alice (password
/// "pw") in [`REALM`].
async fn postgres_with_alice() -> (Db, Store) {
    let db = Db::postgres();
    let store = db.open().await;
    store.ensure_realm(REALM).await.unwrap();
    store
        .add_user(REALM, "alice", &keys("alice", "pw"))
        .await
        .unwrap();
    (db, store)
}

/// Stop the database under a store: calls fail fast with Unavailable and a
/// message without the password; start it again: the same store works.
#[tokio::test]
async fn postgres_outage_fails_fast_and_recovers() {
    let (mut db, store) = postgres_with_alice().await;

    db.pg().stop();
    for attempt in 0..5 {
        let started = Instant::now();
        let result = store.user_keys(REALM, "alice").await;
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(3),
            "attempt {attempt} took {took:?}"
        );
        match result {
            Err(StoreError::Unavailable(msg)) => {
                assert!(
                    msg.contains("PostgreSQL at postgres://turnpike:***@127.0.0.1:"),
                    "{msg}"
                );
                assert!(msg.contains("is the server running?"), "{msg}");
                assert!(!msg.contains("turnpike-test-password"), "{msg}");
                assert!(!msg.contains('\n'), "{msg}");
            }
            other => panic!("attempt {attempt}: expected Unavailable, got {other:?}"),
        }
    }
    let started = Instant::now();
    assert!(matches!(
        store.add_user(REALM, "bob", &keys("bob", "pw")).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(started.elapsed() < Duration::from_secs(3));

    db.pg().start_again();
    // The back-off window (at most a few seconds after these few failures)
    // may still be open: poll, bounded.
    let deadline = Instant::now() + Duration::from_secs(20);
    let found = loop {
        match store.user_keys(REALM, "alice").await {
            Ok(found) => break found,
            Err(StoreError::Unavailable(msg)) if Instant::now() < deadline => {
                let _ = msg;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no recovery: {e}"),
        }
    };
    assert_eq!(found, Some(keys("alice", "pw")));
    store
        .add_user(REALM, "bob", &keys("bob", "pw"))
        .await
        .unwrap();
    assert!(store.user_keys(REALM, "bob").await.unwrap().is_some());
}

/// However long the database was down and however many calls failed
/// meanwhile, calls reach it within about a second of it answering again:
/// the back-off window never grows beyond 1 s (it used to double up to
/// 10 s, so a recovery could go unnoticed for most of that).
#[tokio::test]
async fn postgres_calls_reach_a_database_back_within_a_second() {
    let (mut db, store) = postgres_with_alice().await;
    db.pg().stop();
    // Eight seconds of lookups failing, ten a second, as a busy server's
    // would: a window doubling from 0.5 s would open its 8 s step at about
    // 7.5 s, and still be open when the database is back.
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(8) {
        assert!(matches!(
            store.user_keys(REALM, "alice").await,
            Err(StoreError::Unavailable(_))
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    db.pg().start_again();
    let answering = Instant::now();
    let took = loop {
        match store.user_keys(REALM, "alice").await {
            Ok(found) => {
                assert_eq!(found, Some(keys("alice", "pw")));
                break answering.elapsed();
            }
            Err(StoreError::Unavailable(_)) if answering.elapsed() < Duration::from_secs(20) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("no recovery: {e}"),
        }
    };
    println!(
        "store calls reached PostgreSQL {:.3} s after it answered again",
        took.as_secs_f64()
    );
    assert!(
        took < Duration::from_millis(1500),
        "calls reached the database only {took:?} after it answered again"
    );
}

/// The health probe ([`Store::ping`]) asks the database even inside a
/// back-off window, and its success closes the window for every call.
#[tokio::test]
async fn postgres_ping_ignores_the_back_off_window() {
    let (mut db, store) = postgres_with_alice().await;
    db.pg().stop();
    assert!(
        store.ping().await.is_err(),
        "ping with the database stopped"
    );
    assert!(store.user_keys(REALM, "alice").await.is_err());
    db.pg().start_again();
    // The failure just now opened a window (0.5 s at least): an ordinary
    // call inside it fails at once, the probe does not.
    store
        .ping()
        .await
        .unwrap_or_else(|e| panic!("ping right after the restart: {e}"));
    assert_eq!(
        store.user_keys(REALM, "alice").await.unwrap(),
        Some(keys("alice", "pw")),
        "the probe's success closes the window"
    );
}

/// A lookup that outlives its deadline is cancelled by PostgreSQL itself
/// (`statement_timeout`), not left running: under a flood of lookups of
/// unknown names, abandoned queries would otherwise pile up on the server.
/// A psql session holds a lock on the users table; the lookup waits for it,
/// gives up at its deadline (10 s: twice the 5 s connect timeout), and the
/// server stops waiting too.
#[tokio::test]
async fn postgres_cancels_a_lookup_nobody_waits_for() {
    let (mut db, store) = postgres_with_alice().await;
    let mut holder = db.pg().psql_in_background(
        "BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60);",
    );
    let locked = "SELECT count(*) FROM pg_locks WHERE relation = 'users'::regclass AND granted";
    let waiting = "SELECT count(*) FROM pg_stat_activity \
                   WHERE application_name = 'turnpike' AND wait_event_type = 'Lock'";
    let deadline = Instant::now() + Duration::from_secs(20);
    while db.pg().psql(locked) != "1" {
        assert!(Instant::now() < deadline, "psql never took the lock");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let result = store.user_keys(REALM, "alice").await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
    // The statement is cancelled at the same deadline on the server side;
    // allow a moment for the backend to notice.
    let deadline = Instant::now() + Duration::from_secs(5);
    let still = loop {
        let still = db.pg().psql(waiting);
        if still == "0" || Instant::now() >= deadline {
            break still;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(still, "0", "the abandoned lookup still waits on the server");
}

/// Pooled connections die with a restart; the first call afterwards must
/// not see that (they are replaced, the call retried).
#[tokio::test]
async fn postgres_first_call_after_a_restart_succeeds() {
    let (mut db, store) = postgres_with_alice().await;
    // Two calls at once make the pool hold two connections.
    let (a, b) = tokio::join!(store.user_keys(REALM, "alice"), store.realms());
    assert!(a.unwrap().is_some());
    assert_eq!(b.unwrap(), vec![REALM]);

    for round in 0..2 {
        db.pg().restart();
        assert_eq!(
            store
                .user_keys(REALM, "alice")
                .await
                .unwrap_or_else(|e| panic!("round {round}: {e}")),
            Some(keys("alice", "pw"))
        );
        assert_eq!(store.realms().await.unwrap(), vec![REALM]);
    }
}

#[tokio::test]
async fn postgres_unreachable_at_open_is_a_quick_one_line_error() {
    let mut pg = TestPostgres::start();
    let url = pg.url();
    pg.stop();
    let started = Instant::now();
    let err = Store::open(StoreOptions::new(Location::Postgres(url)))
        .await
        .expect_err("nothing listens there");
    assert!(started.elapsed() < Duration::from_secs(3));
    let StoreError::Unavailable(msg) = err else {
        panic!("expected Unavailable, got {err:?}");
    };
    let expected = format!(
        "cannot reach PostgreSQL at postgres://turnpike:***@127.0.0.1:{}/turnpike: connection refused; is the server running? check database.url",
        pg.port()
    );
    assert_eq!(msg, expected);
}

/// Several servers of a fleet starting at once on an empty database: the
/// advisory lock makes them migrate one at a time, and all succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_first_opens_all_succeed() {
    let db = Db::postgres();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let options = db.options(Schema::Turnpike);
        tasks.push(tokio::spawn(async move {
            let store = Store::open(options).await?;
            store.ensure_realm(REALM).await?;
            store.realms().await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), vec![REALM]);
    }
    assert_eq!(db.schema_version(), 2);
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
