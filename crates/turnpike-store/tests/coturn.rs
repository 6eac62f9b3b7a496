//! Reading an existing coturn database, read-only, in SQLite and PostgreSQL.
//! The tables are created with coturn's own DDL: for SQLite the statements
//! coturn runs itself when it opens a new file (`dbd_sqlite.c`), for
//! PostgreSQL its `turndb/schema.sql`.

mod common;

use common::Db;
use turnpike_codec::integrity::{long_term_key_md5, long_term_key_sha256};
use turnpike_store::{Location, Schema, SecretRef, Store, StoreError, StoreOptions, StoredKeys};

const COTURN_SQLITE_DDL: &str = "
CREATE TABLE turnusers_lt ( realm varchar(127) default '', name varchar(512), hmackey char(128), PRIMARY KEY (realm,name));
CREATE TABLE turn_secret (realm varchar(127) default '', value varchar(127), primary key (realm,value));
CREATE TABLE allowed_peer_ip (realm varchar(127) default '', ip_range varchar(256), primary key (realm,ip_range));
CREATE TABLE denied_peer_ip (realm varchar(127) default '', ip_range varchar(256), primary key (realm,ip_range));
CREATE TABLE turn_origin_to_realm (origin varchar(127),realm varchar(127),primary key (origin));
CREATE TABLE turn_realm_option (realm varchar(127) default '',\topt varchar(32),\tvalue varchar(128),\tprimary key (realm,opt));
CREATE TABLE oauth_key (kid varchar(128),ikm_key varchar(256),timestamp bigint default 0,lifetime integer default 0,as_rs_alg varchar(64) default '',realm varchar(127) default '',primary key (kid));
CREATE TABLE admin_user (name varchar(32), realm varchar(127), password varchar(127), primary key (name));
";

const COTURN_POSTGRES_DDL: &str = "
CREATE TABLE turnusers_lt (
    realm varchar(127) default '',
    name varchar(512),
    hmackey char(128),
    PRIMARY KEY (realm,name)
);
CREATE TABLE turn_secret (
\trealm varchar(127) default '',
\tvalue varchar(256),
\tprimary key (realm,value)
);
CREATE TABLE allowed_peer_ip (
\trealm varchar(127) default '',
\tip_range varchar(256),
\tprimary key (realm,ip_range)
);
CREATE TABLE admin_user (
\tname varchar(32),
\trealm varchar(127),
\tpassword varchar(127),
\tprimary key (name)
);
";

const REALM: &str = "example.org";

fn md5_hex(user: &str, realm: &str, password: &str) -> String {
    hex::encode(long_term_key_md5(user, realm, password))
}

/// coturn's tables with what `turnadmin -a` and `turnadmin -s` would have
/// written (hmackey is lowercase hex), plus rows a hand-edited database
/// might hold.
fn fill_coturn(db: &Db) {
    let ddl = match db {
        Db::Sqlite { .. } => COTURN_SQLITE_DDL,
        Db::Postgres(_) => COTURN_POSTGRES_DDL,
    };
    let sha = hex::encode(long_term_key_sha256("shauser", REALM, "pw"));
    db.execute_batch(&format!(
        "{ddl}
        INSERT INTO turnusers_lt (realm, name, hmackey) VALUES
            ('{REALM}', 'alice', '{alice}'),
            ('{REALM}', 'shauser', '{sha}'),
            ('{REALM}', 'broken', 'not hex at all'),
            ('{REALM}', 'sha512user', '{long}'),
            ('{REALM}', 'nullkey', NULL),
            ('other.net', 'bob', '{bob}');
        INSERT INTO turn_secret (realm, value) VALUES
            ('{REALM}', 'zeta-secret'),
            ('{REALM}', 'alpha-secret'),
            ('{REALM}', 'Mid-secret'),
            ('third.org', 'logen');",
        alice = md5_hex("alice", REALM, "pw"),
        bob = md5_hex("bob", "other.net", "pw2"),
        long = "ab".repeat(64),
    ));
}

fn coturn_options(db: &Db) -> StoreOptions {
    let mut options = db.options(Schema::Coturn);
    // Reading a coturn database never creates anything.
    options.create = false;
    options
}

/// A fingerprint of everything the database holds, to prove nothing was
/// written: the SQLite file bytes, or PostgreSQL's list of tables and the
/// coturn rows.
fn fingerprint(db: &Db) -> Vec<u8> {
    match db {
        Db::Sqlite { path, .. } => {
            let mut bytes = std::fs::read(path).unwrap();
            let mut wal = path.clone().into_os_string();
            wal.push("-wal");
            bytes.extend(std::fs::read(std::path::PathBuf::from(wal)).unwrap_or_default());
            bytes
        }
        Db::Postgres(pg) => {
            let tables = pg.psql(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename",
            );
            let mut dump = tables.clone();
            for table in tables.lines() {
                dump.push_str(&pg.psql(&format!("SELECT t::text FROM {table} t ORDER BY 1")));
            }
            dump.into_bytes()
        }
    }
}

on_both!(
    reads_coturn_read_only,
    refuses_a_database_without_coturn_tables
);

async fn reads_coturn_read_only(db: Db) {
    fill_coturn(&db);
    let before = fingerprint(&db);
    let store = Store::open(coturn_options(&db)).await.unwrap();
    assert_eq!(store.schema(), Schema::Coturn);

    // MD5 user: usable for both HMAC-SHA1; no SHA-256 key known.
    let alice = store.user_keys(REALM, "alice").await.unwrap().unwrap();
    assert_eq!(alice.md5, Some(long_term_key_md5("alice", REALM, "pw")));
    assert_eq!(alice.sha256, None);
    // coturn --sha256 user: SHA-256 key only.
    let sha = store.user_keys(REALM, "shauser").await.unwrap().unwrap();
    assert_eq!(sha.md5, None);
    assert_eq!(
        sha.sha256,
        Some(long_term_key_sha256("shauser", REALM, "pw"))
    );
    // Unusable keys are no user, not an error.
    for name in ["broken", "sha512user", "nullkey", "nobody"] {
        assert_eq!(store.user_keys(REALM, name).await.unwrap(), None, "{name}");
    }
    assert_eq!(store.user_keys("other.net", "alice").await.unwrap(), None);
    assert_eq!(
        store
            .user_keys("other.net", "bob")
            .await
            .unwrap()
            .and_then(|k| k.md5),
        Some(long_term_key_md5("bob", "other.net", "pw2"))
    );

    // Secrets: numbered in byte order of their values.
    let secrets = store.secrets(REALM).await.unwrap();
    let pairs: Vec<(u32, &str)> = secrets
        .iter()
        .map(|s| (s.key_index, s.value.as_str()))
        .collect();
    assert_eq!(
        pairs,
        vec![(0, "Mid-secret"), (1, "alpha-secret"), (2, "zeta-secret")]
    );
    assert!(
        secrets
            .iter()
            .all(|s| s.created_at.is_none() && s.realm == REALM)
    );
    assert!(store.secrets("nowhere").await.unwrap().is_empty());

    assert_eq!(
        store.realms().await.unwrap(),
        vec![REALM, "other.net", "third.org"]
    );
    let users = store.list_users(None).await.unwrap();
    let names: Vec<(&str, &str)> = users
        .iter()
        .map(|u| (u.realm.as_str(), u.username.as_str()))
        .collect();
    assert_eq!(
        names,
        vec![
            (REALM, "alice"),
            (REALM, "broken"),
            (REALM, "nullkey"),
            (REALM, "sha512user"),
            (REALM, "shauser"),
            ("other.net", "bob"),
        ]
    );
    assert!(users.iter().all(|u| u.created_at.is_none()));
    assert_eq!(store.list_users(Some("other.net")).await.unwrap().len(), 1);

    // Every write is refused; registering a realm is a no-op.
    let k = StoredKeys::from_password("carol", REALM, "pw");
    assert!(matches!(
        store.add_user(REALM, "carol", &k).await,
        Err(StoreError::ReadOnly)
    ));
    assert!(matches!(
        store.set_user_keys(REALM, "alice", &k).await,
        Err(StoreError::ReadOnly)
    ));
    assert!(matches!(
        store.remove_user(REALM, "alice").await,
        Err(StoreError::ReadOnly)
    ));
    assert!(matches!(
        store.add_secret(REALM, None, "new-secret").await,
        Err(StoreError::ReadOnly)
    ));
    assert!(matches!(
        store.remove_secret(REALM, SecretRef::Index(0)).await,
        Err(StoreError::ReadOnly)
    ));
    assert!(matches!(
        store
            .remove_secret(REALM, SecretRef::Value("zeta-secret"))
            .await,
        Err(StoreError::ReadOnly)
    ));
    store.ensure_realm("new.example").await.unwrap();
    assert!(
        !store
            .realms()
            .await
            .unwrap()
            .contains(&"new.example".to_owned())
    );
    assert!(store.user_keys(REALM, "alice").await.unwrap().is_some());
    drop(store);

    assert!(
        before == fingerprint(&db),
        "the coturn database was modified"
    );
}

async fn refuses_a_database_without_coturn_tables(db: Db) {
    // An existing database with Turnpike's tables but not coturn's.
    drop(db.open().await);
    let before = fingerprint(&db);
    match Store::open(coturn_options(&db)).await {
        Err(StoreError::Schema(msg)) => {
            assert!(
                msg.contains("no coturn table turnusers_lt or turn_secret"),
                "{msg}"
            )
        }
        other => panic!("expected a schema error, got {other:?}"),
    }
    assert!(before == fingerprint(&db));
}

#[tokio::test]
async fn sqlite_missing_coturn_file_is_unavailable_and_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("turndb");
    let mut options = StoreOptions::new(Location::Sqlite(path.clone()));
    options.schema = Schema::Coturn;
    // Even with create = true: a coturn database is never created.
    match Store::open(options).await {
        Err(StoreError::Unavailable(msg)) => {
            assert!(msg.starts_with("no coturn database at"), "{msg}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(!path.exists());
}
