//! The SQLite backend: one connection to a file, used from tokio's blocking
//! thread pool.
//!
//! One connection behind a mutex is enough: the server reads credentials
//! rarely (once per new client, then it caches keys in the nonce state) and
//! SQLite serialises writers anyway. The file is in WAL mode with a busy
//! timeout, so the running server and the admin command line can use it at
//! the same time: readers never block the writer, and a writer waits for
//! another writer instead of failing.
//!
//! Turnpike's schema is versioned with `PRAGMA user_version` and migrated in
//! an `IMMEDIATE` transaction when the store opens, so that two processes
//! opening a new file at once migrate one after the other.

use std::fmt;
use std::fs;
use std::io;
#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension, Params, Transaction, TransactionBehavior,
    params,
};

use crate::backend::{Backend, OwnedSecretRef, UserRef, new_secret_index};
use crate::registry::{self, RegisteredRelay, RelayRegistration};
use crate::{
    Location, Schema, Secret, StoreError, StoreOptions, StoredKeys, UserInfo, coturn, newer_schema,
    now_unix, now_unix_ms,
};

/// The schema version this binary creates; `MIGRATIONS[n - 1]` brings a
/// database from version n - 1 to n.
const LATEST: i64 = 2;

/// Each entry is applied once, in order, inside the migration transaction.
/// Never edit a released entry: add a new one.
const MIGRATIONS: &[&str] = &[
    // 1: realms, users (keys only, never passwords), shared secrets. STRICT
    // makes SQLite enforce the column types, so keys are always BLOBs.
    "CREATE TABLE realms (
        realm TEXT NOT NULL PRIMARY KEY,
        created_at INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE users (
        realm TEXT NOT NULL REFERENCES realms (realm),
        username TEXT NOT NULL,
        md5_key BLOB CHECK (md5_key IS NULL OR length(md5_key) = 16),
        sha256_key BLOB CHECK (sha256_key IS NULL OR length(sha256_key) = 32),
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (realm, username),
        CHECK (md5_key IS NOT NULL OR sha256_key IS NOT NULL)
    ) STRICT;
    CREATE TABLE secrets (
        realm TEXT NOT NULL REFERENCES realms (realm),
        key_index INTEGER NOT NULL CHECK (key_index BETWEEN 0 AND 4294967295),
        value TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (realm, key_index),
        UNIQUE (realm, value)
    ) STRICT;",
    // 2: the fleet's heartbeat rows (crate::registry). No index on
    // last_seen_ms: the table holds one row per relay, and every heartbeat
    // changes that column.
    "CREATE TABLE fleet_relays (
        id TEXT NOT NULL PRIMARY KEY,
        name TEXT NOT NULL,
        addresses TEXT NOT NULL,
        endpoints TEXT NOT NULL,
        allocations INTEGER NOT NULL,
        capacity INTEGER,
        draining INTEGER NOT NULL,
        version TEXT NOT NULL,
        last_seen_ms INTEGER NOT NULL
    ) STRICT;",
];

const _: () = assert!(MIGRATIONS.len() as i64 == LATEST);

/// A credential database in an SQLite file. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    location: Location,
    path: PathBuf,
    schema: Schema,
    conn: Mutex<Connection>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("schema", &self.inner.schema)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens the file at `options.location`, which must be
    /// [`Location::Sqlite`]. See [`crate::Store::open`].
    pub async fn open(options: StoreOptions) -> Result<SqliteStore, StoreError> {
        let Location::Sqlite(path) = &options.location else {
            return Err(StoreError::Invalid(format!(
                "{} is not an SQLite location",
                options.location.redacted()
            )));
        };
        let path = path.clone();
        let (schema, create, busy) = (options.schema, options.create, options.connect_timeout);
        let conn = {
            let path = path.clone();
            blocking(move || open_connection(&path, schema, create, busy)).await?
        };
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                location: options.location,
                path,
                schema,
                conn: Mutex::new(conn),
            }),
        })
    }

    /// Where the file is.
    pub fn location(&self) -> &Location {
        &self.inner.location
    }

    /// Which schema the file holds.
    pub fn schema(&self) -> Schema {
        self.inner.schema
    }

    /// See [`crate::Store::heartbeat`]: one upsert, stamped with this
    /// host's clock.
    pub(crate) async fn heartbeat(&self, r: RelayRegistration) -> Result<(), StoreError> {
        self.run(move |conn, path| {
            let sql = registry::upsert_sql(["?1", "?2", "?3", "?4", "?5", "?6", "?7", "?8"], "?9");
            conn.prepare_cached(&sql)
                .ctx(path)?
                .execute(params![
                    r.id,
                    r.name,
                    registry::encode_addresses(&r.addresses),
                    registry::encode_endpoints(&r.endpoints),
                    r.allocations as i64,
                    r.capacity.map(|c| c as i64),
                    r.draining,
                    r.version,
                    now_unix_ms(),
                ])
                .ctx(path)?;
            Ok(())
        })
        .await
    }

    /// See [`crate::Store::registered_relays`].
    pub(crate) async fn registered_relays(
        &self,
        max_age: Duration,
    ) -> Result<Vec<RegisteredRelay>, StoreError> {
        self.run(move |conn, path| {
            let sql = format!(
                "SELECT {}, ?1 - last_seen_ms FROM fleet_relays
                 WHERE last_seen_ms >= ?1 - ?2 ORDER BY id",
                registry::COLUMNS
            );
            let mut stmt = conn.prepare_cached(&sql).ctx(path)?;
            let rows = stmt
                .query_map(params![now_unix_ms(), registry::millis(max_age)], |row| {
                    Ok(registry::row(
                        row.get(0)?,
                        row.get(1)?,
                        &row.get::<_, String>(2)?,
                        &row.get::<_, String>(3)?,
                        row.get(4)?,
                        row.get(5)?,
                        row.get(6)?,
                        row.get(7)?,
                        row.get(8)?,
                    ))
                })
                .ctx(path)?;
            rows.collect::<Result<Vec<_>, _>>().ctx(path)
        })
        .await
    }

    /// See [`crate::Store::expire_relays`].
    pub(crate) async fn expire_relays(&self, older_than: Duration) -> Result<u64, StoreError> {
        self.run(move |conn, path| {
            let deleted = conn
                .execute(
                    "DELETE FROM fleet_relays WHERE last_seen_ms < ?1 - ?2",
                    params![now_unix_ms(), registry::millis(older_than)],
                )
                .ctx(path)?;
            Ok(deleted as u64)
        })
        .await
    }

    /// See [`crate::Store::withdraw_relay`].
    pub(crate) async fn withdraw_relay(&self, id: String) -> Result<bool, StoreError> {
        self.run(move |conn, path| {
            let deleted = conn
                .execute("DELETE FROM fleet_relays WHERE id = ?1", [id])
                .ctx(path)?;
            Ok(deleted > 0)
        })
        .await
    }

    /// Runs `f` with the connection on the blocking thread pool.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Path) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(move || {
            // Poisoning would mean an earlier call panicked while holding
            // the lock (none should); the connection is still consistent,
            // because an open transaction rolls back when dropped during
            // unwinding, so keep using it rather than failing forever.
            let mut conn = inner.conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn, &inner.path)
        })
        .await
    }
}

async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Unavailable(format!("the SQLite worker thread failed: {e}")))?
}

/// Attaches the file name to SQLite errors and sorts them into
/// [`StoreError`] kinds.
trait Ctx<T> {
    fn ctx(self, path: &Path) -> Result<T, StoreError>;
}

impl<T> Ctx<T> for rusqlite::Result<T> {
    fn ctx(self, path: &Path) -> Result<T, StoreError> {
        self.map_err(|e| sqlite_error(path, e))
    }
}

fn sqlite_error(path: &Path, e: rusqlite::Error) -> StoreError {
    let shown = path.display();
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Unavailable(
            format!("SQLite database {shown} stayed locked by another process: {e}; try again"),
        ),
        Some(ErrorCode::NotADatabase) => StoreError::Unavailable(format!(
            "{shown} is not an SQLite database: check database.url"
        )),
        Some(
            ErrorCode::CannotOpen
            | ErrorCode::PermissionDenied
            | ErrorCode::ReadOnly
            | ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure
            | ErrorCode::DatabaseCorrupt,
        ) => StoreError::Unavailable(format!(
            "cannot use SQLite database {shown}: {e}; check the file, its directory's permissions and free space"
        )),
        _ => {
            let msg = e.to_string();
            if msg.contains("no such table") || msg.contains("no such column") {
                StoreError::Schema(format!(
                    "SQLite database {shown} lacks what this turnpike expects: {msg}"
                ))
            } else {
                StoreError::Unavailable(format!("SQLite database {shown}: {msg}"))
            }
        }
    }
}

fn open_connection(
    path: &Path,
    schema: Schema,
    create: bool,
    busy: Duration,
) -> Result<Connection, StoreError> {
    let shown = path.display();
    let exists = path.try_exists().map_err(|e| {
        StoreError::Unavailable(format!("cannot access the database at {shown}: {e}"))
    })?;
    match schema {
        Schema::Coturn => {
            if !exists {
                return Err(StoreError::Unavailable(format!(
                    "no coturn database at {shown}: check database.url"
                )));
            }
            // Read-only at the SQLite level too: nothing this process does
            // can change coturn's file.
            let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let conn = Connection::open_with_flags(path, flags).ctx(path)?;
            conn.busy_timeout(busy).ctx(path)?;
            check_coturn_tables(&conn, path)?;
            Ok(conn)
        }
        Schema::Turnpike => {
            if !exists {
                if !create {
                    return Err(StoreError::Unavailable(format!(
                        "no database at {shown}: start turnpike once to create it, or pass --database"
                    )));
                }
                create_private(path)?;
            }
            let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            if create {
                flags |= OpenFlags::SQLITE_OPEN_CREATE;
            }
            let mut conn = Connection::open_with_flags(path, flags).ctx(path)?;
            conn.busy_timeout(busy).ctx(path)?;
            // WAL lets the admin command line write while the server reads.
            // The mode is stored in the file; the answer is ignored because
            // a file system without shared memory keeps the old mode, which
            // still works (with more waiting).
            conn.pragma_update_and_check(None, "journal_mode", "wal", |row| {
                row.get::<_, String>(0)
            })
            .ctx(path)?;
            conn.pragma_update(None, "foreign_keys", true).ctx(path)?;
            migrate(&mut conn, path)?;
            Ok(conn)
        }
    }
}

/// Creates a new database file readable by its owner only (0600), and the
/// directories missing above it likewise (0700): it holds long-term keys and
/// shared secrets. SQLite then opens the empty file as a new database and
/// gives its `-wal` and `-shm` files the same mode. The modes are set
/// explicitly, whatever the umask; what already exists is left alone, so an
/// operator's own directory or file keeps its mode.
fn create_private(path: &Path) -> Result<(), StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dirs(dir).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot create directory {} for the database: {e}",
                dir.display()
            ))
        })?;
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    match options.open(path) {
        Ok(_) => {}
        // Another process created it meanwhile (and set its mode).
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => {
            return Err(StoreError::Unavailable(format!(
                "cannot create SQLite database {}: {e}; check its directory's permissions and free space",
                path.display()
            )));
        }
    }
    set_mode(path, 0o600).map_err(|e| {
        StoreError::Unavailable(format!(
            "cannot restrict access to database {}: {e}",
            path.display()
        ))
    })
}

/// `fs::create_dir_all`, with 0700 for each directory it creates.
fn create_private_dirs(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dirs(parent)?;
    }
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    builder.mode(0o700);
    match builder.create(dir) {
        Ok(()) => set_mode(dir, 0o700),
        // Made by someone else meanwhile: theirs, and so is its mode.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Sets the mode of something just created, which the umask may have
/// narrowed (or, with an odd umask, left unusable to its owner).
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, mode);
        Ok(())
    }
}

fn check_coturn_tables(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let mut missing = Vec::new();
    for table in coturn::TABLES {
        let found: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |row| row.get(0),
            )
            .ctx(path)?;
        if found == 0 {
            missing.push(table);
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Schema(format!(
            "SQLite database {} has no coturn table {}: schema \"coturn\" reads an existing coturn database",
            path.display(),
            missing.join(" or ")
        )))
    }
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let version = |conn: &Connection| -> Result<i64, StoreError> {
        conn.query_row("PRAGMA user_version", [], |row| row.get(0))
            .ctx(path)
    };
    // Without a write lock first: the usual case is an up-to-date file, and
    // the admin command line should not queue behind a busy server for it.
    let current = version(conn)?;
    if current > LATEST {
        return Err(newer_schema(current, LATEST));
    }
    if current == LATEST {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .ctx(path)?;
    // Again under the lock: another process may have migrated meanwhile.
    let current = version(&tx)?;
    if current > LATEST {
        return Err(newer_schema(current, LATEST));
    }
    for (version, sql) in (1..).zip(MIGRATIONS) {
        if version <= current {
            continue;
        }
        tx.execute_batch(sql).map_err(|e| {
            StoreError::Schema(format!(
                "migrating SQLite database {} to schema version {version} failed: {e}",
                path.display()
            ))
        })?;
    }
    tx.pragma_update(None, "user_version", LATEST).ctx(path)?;
    tx.commit().ctx(path)
}

/// A text column read leniently (coturn's columns are untyped in SQLite):
/// text or UTF-8 blob, anything else is absent.
fn text(value: ValueRef<'_>) -> Option<String> {
    match value {
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => {
            std::str::from_utf8(bytes).ok().map(str::to_owned)
        }
        _ => None,
    }
}

/// Whether `sql` (a `SELECT 1 …`) finds a row.
fn exists(
    conn: &Connection,
    path: &Path,
    sql: &str,
    params: impl Params,
) -> Result<bool, StoreError> {
    Ok(conn
        .query_row(sql, params, |_| Ok(()))
        .optional()
        .ctx(path)?
        .is_some())
}

fn realm_exists(conn: &Connection, path: &Path, realm: &str) -> Result<bool, StoreError> {
    exists(conn, path, "SELECT 1 FROM realms WHERE realm = ?1", [realm])
}

fn all_realms(conn: &Connection, path: &Path, schema: Schema) -> Result<Vec<String>, StoreError> {
    let sql = match schema {
        Schema::Turnpike => "SELECT realm FROM realms ORDER BY realm",
        Schema::Coturn => {
            "SELECT realm FROM turnusers_lt WHERE realm IS NOT NULL
             UNION SELECT realm FROM turn_secret WHERE realm IS NOT NULL
             ORDER BY 1"
        }
    };
    let mut stmt = conn.prepare_cached(sql).ctx(path)?;
    let rows = stmt
        .query_map([], |row| Ok(text(row.get_ref(0)?)))
        .ctx(path)?;
    let mut realms = Vec::new();
    for realm in rows {
        realms.extend(realm.ctx(path)?);
    }
    Ok(realms)
}

/// Starts a write transaction in a realm: [`StoreError::UnknownRealm`] unless
/// the realm is registered. `IMMEDIATE` takes the write lock at once, so the
/// realm cannot vanish before the insert and concurrent writers take turns.
fn begin_in_realm<'c>(
    conn: &'c mut Connection,
    path: &Path,
    realm: &str,
) -> Result<Transaction<'c>, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .ctx(path)?;
    if realm_exists(&tx, path, realm)? {
        return Ok(tx);
    }
    Err(StoreError::UnknownRealm {
        realm: realm.to_owned(),
        known: all_realms(&tx, path, Schema::Turnpike)?,
    })
}

fn key_slices(keys: &StoredKeys) -> (Option<&[u8]>, Option<&[u8]>) {
    (
        keys.md5.as_ref().map(|k| &k[..]),
        keys.sha256.as_ref().map(|k| &k[..]),
    )
}

impl Backend for SqliteStore {
    fn schema(&self) -> Schema {
        self.inner.schema
    }

    async fn find_user_keys(
        &self,
        realm: &str,
        username: &str,
    ) -> Result<Option<StoredKeys>, StoreError> {
        let (realm, username, schema) = (realm.to_owned(), username.to_owned(), self.schema());
        self.run(move |conn, path| match schema {
            Schema::Turnpike => {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT md5_key, sha256_key FROM users WHERE realm = ?1 AND username = ?2",
                    )
                    .ctx(path)?;
                let row = stmt
                    .query_row(params![realm, username], |row| {
                        Ok((
                            row.get::<_, Option<Vec<u8>>>(0)?,
                            row.get::<_, Option<Vec<u8>>>(1)?,
                        ))
                    })
                    .optional()
                    .ctx(path)?;
                Ok(row.and_then(|(md5, sha256)| {
                    StoredKeys::from_db(md5.as_deref(), sha256.as_deref())
                }))
            }
            Schema::Coturn => {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT hmackey FROM turnusers_lt WHERE realm = ?1 AND name = ?2",
                    )
                    .ctx(path)?;
                let key = stmt
                    .query_row(params![realm, username], |row| Ok(text(row.get_ref(0)?)))
                    .optional()
                    .ctx(path)?
                    .flatten();
                Ok(key.and_then(|k| coturn::decode_hmackey(&k)))
            }
        })
        .await
    }

    async fn find_secrets(&self, realm: &str) -> Result<Vec<Secret>, StoreError> {
        let (realm, schema) = (realm.to_owned(), self.schema());
        self.run(move |conn, path| match schema {
            Schema::Turnpike => {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT key_index, value, created_at FROM secrets
                         WHERE realm = ?1 ORDER BY key_index",
                    )
                    .ctx(path)?;
                let rows = stmt
                    .query_map([&realm], |row| {
                        Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get(2)?))
                    })
                    .ctx(path)?;
                let mut secrets = Vec::new();
                for row in rows {
                    let (index, value, created_at) = row.ctx(path)?;
                    // The CHECK constraint keeps indexes in u32 range.
                    if let Ok(key_index) = u32::try_from(index) {
                        secrets.push(Secret {
                            realm: realm.clone(),
                            key_index,
                            value,
                            created_at: Some(created_at),
                        });
                    }
                }
                Ok(secrets)
            }
            Schema::Coturn => {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT value FROM turn_secret
                         WHERE realm = ?1 AND value IS NOT NULL ORDER BY value",
                    )
                    .ctx(path)?;
                let rows = stmt
                    .query_map([&realm], |row| Ok(text(row.get_ref(0)?)))
                    .ctx(path)?;
                let mut values = Vec::new();
                for row in rows {
                    values.extend(row.ctx(path)?);
                }
                Ok(coturn::numbered_secrets(&realm, values))
            }
        })
        .await
    }

    async fn find_realms(&self) -> Result<Vec<String>, StoreError> {
        let schema = self.schema();
        self.run(move |conn, path| all_realms(conn, path, schema))
            .await
    }

    async fn find_users(&self, realm: Option<&str>) -> Result<Vec<UserInfo>, StoreError> {
        let (realm, schema) = (realm.map(str::to_owned), self.schema());
        self.run(move |conn, path| {
            let sql = match schema {
                Schema::Turnpike => {
                    "SELECT realm, username, created_at FROM users
                     WHERE ?1 IS NULL OR realm = ?1 ORDER BY realm, username"
                }
                Schema::Coturn => {
                    "SELECT realm, name, NULL FROM turnusers_lt
                     WHERE realm IS NOT NULL AND name IS NOT NULL AND (?1 IS NULL OR realm = ?1)
                     ORDER BY realm, name"
                }
            };
            let mut stmt = conn.prepare_cached(sql).ctx(path)?;
            let rows = stmt
                .query_map([&realm], |row| {
                    Ok((
                        text(row.get_ref(0)?),
                        text(row.get_ref(1)?),
                        row.get::<_, Option<i64>>(2)?,
                    ))
                })
                .ctx(path)?;
            let mut users = Vec::new();
            for row in rows {
                if let (Some(realm), Some(username), created_at) = row.ctx(path)? {
                    users.push(UserInfo {
                        realm,
                        username,
                        created_at,
                    });
                }
            }
            Ok(users)
        })
        .await
    }

    async fn insert_realm(&self, realm: String) -> Result<(), StoreError> {
        self.run(move |conn, path| {
            // Look before writing: a server restarting against a database
            // it may not write (read-only file) must still start.
            if realm_exists(conn, path, &realm)? {
                return Ok(());
            }
            conn.execute(
                "INSERT INTO realms (realm, created_at) VALUES (?1, ?2)
                 ON CONFLICT (realm) DO NOTHING",
                params![realm, now_unix()],
            )
            .ctx(path)?;
            Ok(())
        })
        .await
    }

    async fn insert_user(&self, user: UserRef, keys: StoredKeys) -> Result<(), StoreError> {
        self.run(move |conn, path| {
            let tx = begin_in_realm(conn, path, &user.realm)?;
            let sql = "SELECT 1 FROM users WHERE realm = ?1 AND username = ?2";
            if exists(&tx, path, sql, params![user.realm, user.username])? {
                return Err(StoreError::AlreadyExists(user.label()));
            }
            let (md5, sha256) = key_slices(&keys);
            tx.execute(
                "INSERT INTO users (realm, username, md5_key, sha256_key, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                params![user.realm, user.username, md5, sha256, now_unix()],
            )
            .ctx(path)?;
            tx.commit().ctx(path)
        })
        .await
    }

    async fn update_user_keys(&self, user: UserRef, keys: StoredKeys) -> Result<(), StoreError> {
        self.run(move |conn, path| {
            let (md5, sha256) = key_slices(&keys);
            let changed = conn
                .execute(
                    "UPDATE users SET md5_key = ?3, sha256_key = ?4, updated_at = ?5
                     WHERE realm = ?1 AND username = ?2",
                    params![user.realm, user.username, md5, sha256, now_unix()],
                )
                .ctx(path)?;
            if changed == 0 {
                return Err(StoreError::NotFound(user.label()));
            }
            Ok(())
        })
        .await
    }

    async fn delete_user(&self, user: UserRef) -> Result<(), StoreError> {
        self.run(move |conn, path| {
            let changed = conn
                .execute(
                    "DELETE FROM users WHERE realm = ?1 AND username = ?2",
                    params![user.realm, user.username],
                )
                .ctx(path)?;
            if changed == 0 {
                return Err(StoreError::NotFound(user.label()));
            }
            Ok(())
        })
        .await
    }

    async fn insert_secret(
        &self,
        realm: String,
        key_index: Option<u32>,
        value: String,
    ) -> Result<u32, StoreError> {
        self.run(move |conn, path| {
            let tx = begin_in_realm(conn, path, &realm)?;
            let sql = "SELECT 1 FROM secrets WHERE realm = ?1 AND value = ?2";
            let duplicate = exists(&tx, path, sql, params![realm, value])?;
            let taken: Vec<u32> = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT key_index FROM secrets WHERE realm = ?1 ORDER BY key_index",
                    )
                    .ctx(path)?;
                let rows = stmt
                    .query_map([&realm], |row| row.get::<_, i64>(0))
                    .ctx(path)?;
                let mut taken = Vec::new();
                for index in rows {
                    taken.extend(u32::try_from(index.ctx(path)?).ok());
                }
                taken
            };
            let index = new_secret_index(&realm, key_index, duplicate, &taken)?;
            tx.execute(
                "INSERT INTO secrets (realm, key_index, value, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![realm, i64::from(index), value, now_unix()],
            )
            .ctx(path)?;
            tx.commit().ctx(path)?;
            Ok(index)
        })
        .await
    }

    async fn delete_secret(&self, realm: String, which: OwnedSecretRef) -> Result<(), StoreError> {
        self.run(move |conn, path| {
            let changed = match &which {
                OwnedSecretRef::Index(index) => conn
                    .execute(
                        "DELETE FROM secrets WHERE realm = ?1 AND key_index = ?2",
                        params![realm, i64::from(*index)],
                    )
                    .ctx(path)?,
                OwnedSecretRef::Value(value) => conn
                    .execute(
                        "DELETE FROM secrets WHERE realm = ?1 AND value = ?2",
                        params![realm, value],
                    )
                    .ctx(path)?,
            };
            if changed == 0 {
                return Err(StoreError::NotFound(which.label(&realm)));
            }
            Ok(())
        })
        .await
    }
}
