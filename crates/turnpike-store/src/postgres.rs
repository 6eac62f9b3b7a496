//! The PostgreSQL backend: a small deadpool pool of tokio-postgres
//! connections, for fleets of servers that share one user base.
//!
//! Staying up while the database does not:
//!
//! - A pooled connection is checked with `is_closed` before reuse, and a
//!   statement that fails because its connection broke (the database
//!   restarted, a proxy dropped it) discards that connection. If the
//!   connection had been sitting in the pool, the breakage predates the call,
//!   so the operation is tried again on another one; a fresh connection that
//!   breaks is a real failure.
//! - After a failed connection attempt, calls in the next back-off window
//!   (0.5 s, then 1 s) fail at once with [`StoreError::Unavailable`]
//!   instead of each waiting for a connect timeout; the first success
//!   resets it. The server then answers clients with an error quickly
//!   instead of queueing work behind a dead database, and notices within a
//!   second once it answers again: the window never grows beyond 1 s, and
//!   failures that end inside an open window (calls that were already
//!   waiting) do not lengthen it. [`PostgresStore::ping`], the server's
//!   health probe while the database is down, ignores the window.
//! - Every operation has a deadline (twice the connect timeout), so a
//!   database that stops answering without closing connections cannot block
//!   callers either.
//! - The pool logs nothing of its own: deadpool-postgres warns once per
//!   connection that ends with an error and once per dead connection it
//!   finds in the pool, which during an outage would add lines per
//!   connection to the one line per state change the server writes. Our
//!   connector ([`QuietConnect`]) drops the first (the error reaches the
//!   caller through its statement), a `pre_recycle` hook discards closed
//!   connections before deadpool's recycling would warn about them.
//!
//! Turnpike's schema is versioned in a `turnpike_schema_version` table and
//! migrated when the store opens, inside a transaction holding
//! `pg_advisory_xact_lock`, so servers of a fleet starting together migrate
//! one at a time. A coturn database is used with
//! `default_transaction_read_only` set on every connection, so not even a
//! bug here could change it.
//!
//! Connections are plaintext unless the URL's `sslmode` asks for TLS
//! ([`tls`]: libpq's `sslmode` and `sslrootcert`, and `database.ca_file`,
//! over rustls).

use std::error::Error as _;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use deadpool_postgres::{
    ClientWrapper, Connect, Hook, HookError, Manager, ManagerConfig, Object, Pool, PoolError,
    RecyclingMethod, Runtime, TimeoutType,
};
use tokio_postgres::error::SqlState;

use crate::backend::{Backend, OwnedSecretRef, UserRef, new_secret_index};
use crate::location::redact_url;
use crate::registry::{self, RegisteredRelay, RelayRegistration};
use crate::{
    Location, Schema, Secret, StoreError, StoreOptions, StoredKeys, UserInfo, coturn, newer_schema,
    now_unix,
};

/// The schema version this binary creates; `MIGRATIONS[n - 1]` brings a
/// database from version n - 1 to n.
const LATEST: i32 = 2;

/// Each entry is applied once, in order, inside the migration transaction.
/// Never edit a released entry: add a new one.
const MIGRATIONS: &[&str] = &[
    // 1: realms, users (keys only, never passwords), shared secrets.
    "CREATE TABLE realms (
        realm text PRIMARY KEY,
        created_at bigint NOT NULL
    );
    CREATE TABLE users (
        realm text NOT NULL REFERENCES realms (realm),
        username text NOT NULL,
        md5_key bytea CHECK (md5_key IS NULL OR length(md5_key) = 16),
        sha256_key bytea CHECK (sha256_key IS NULL OR length(sha256_key) = 32),
        created_at bigint NOT NULL,
        updated_at bigint NOT NULL,
        PRIMARY KEY (realm, username),
        CHECK (md5_key IS NOT NULL OR sha256_key IS NOT NULL)
    );
    CREATE TABLE secrets (
        realm text NOT NULL REFERENCES realms (realm),
        key_index bigint NOT NULL CHECK (key_index BETWEEN 0 AND 4294967295),
        value text NOT NULL,
        created_at bigint NOT NULL,
        PRIMARY KEY (realm, key_index),
        UNIQUE (realm, value)
    );",
    // 2: the fleet's heartbeat rows (crate::registry). Every heartbeat
    // rewrites its row: with no index on a column it changes and room left
    // in each page (fillfactor), the update is HOT (no index write, the old
    // version pruned within the page), so the table stays a few pages.
    "CREATE TABLE fleet_relays (
        id text PRIMARY KEY,
        name text NOT NULL,
        addresses text NOT NULL,
        endpoints text NOT NULL,
        allocations bigint NOT NULL,
        capacity bigint,
        draining boolean NOT NULL,
        version text NOT NULL,
        last_seen_ms bigint NOT NULL
    ) WITH (fillfactor = 50);",
];

const _: () = assert!(MIGRATIONS.len() as i32 == LATEST);

/// The advisory lock every Turnpike server takes to migrate: "turnpike" in
/// ASCII, so that it is recognisable in `pg_locks`.
const MIGRATION_LOCK: i64 = 0x7475_726e_7069_6b65;

pub(crate) mod tls;

/// The database's clock in Unix milliseconds, as SQL: heartbeat ages never
/// depend on the relays' clocks agreeing.
macro_rules! db_now_ms {
    () => {
        "(extract(epoch FROM now()) * 1000)::bigint"
    };
}

const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// At most this long after the database answers again, calls reach it.
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Opens the pool's connections as deadpool-postgres's own connector
/// (`ConfigConnectImpl`) does, but without its WARN line when a
/// connection ends with an error: a database restart would log one per
/// pooled connection. Whoever used the connection gets the error from its
/// statement; the server logs the outage once.
struct QuietConnect {
    tls: tls::MakeRustls,
}

type ConnectFuture<'a> = Pin<
    Box<
        dyn Future<
                Output = Result<
                    (tokio_postgres::Client, tokio::task::JoinHandle<()>),
                    tokio_postgres::Error,
                >,
            > + Send
            + 'a,
    >,
>;

impl Connect for QuietConnect {
    fn connect(&self, pg_config: &tokio_postgres::Config) -> ConnectFuture<'_> {
        let tls = self.tls.clone();
        let pg_config = pg_config.clone();
        Box::pin(async move {
            let (client, connection) = pg_config.connect(tls).await?;
            let task = tokio::spawn(async move {
                // The connection's end (closed, reset, the server shutting
                // down) shows as `is_closed` and as statement errors.
                let _ = connection.await;
            });
            Ok((client, task))
        })
    }
}

/// A credential database in PostgreSQL. Cheap to clone; clones share the
/// pool.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    location: Location,
    /// The URL without its password, for messages.
    shown: String,
    schema: Schema,
    pool: Pool,
    pool_size: usize,
    connect_timeout: Duration,
    op_timeout: Duration,
    backoff: Mutex<Backoff>,
    /// The URL's `sslmode` (absent counts as `disable`), for messages.
    ssl_mode: tls::SslMode,
}

/// Whether a call fails at once inside a back-off window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Window {
    /// Every ordinary call.
    Honour,
    /// The health probe ([`PostgresStore::ping`]).
    Ignore,
}

/// Failure memory for fail-fast behaviour while the database is down.
struct Backoff {
    /// Calls before this instant fail at once with `last`.
    retry_at: Option<Instant>,
    /// The window after the next failure.
    delay: Duration,
    last: String,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("location", &self.inner.shown)
            .field("schema", &self.inner.schema)
            .field("pool_size", &self.inner.pool_size)
            .finish_non_exhaustive()
    }
}

/// What an operation on a connection can fail with: a database error (sorted
/// out by [`PostgresStore::with_client`]) or an answer such as NotFound.
enum OpError {
    Pg(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for OpError {
    fn from(e: tokio_postgres::Error) -> Self {
        OpError::Pg(e)
    }
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        OpError::Store(e)
    }
}

type OpFuture<'c, T> = Pin<Box<dyn Future<Output = Result<T, OpError>> + Send + 'c>>;

impl PostgresStore {
    /// Connects to `options.location`, which must be
    /// [`Location::Postgres`], and migrates (Turnpike's schema) or checks
    /// coturn's tables. See [`crate::Store::open`].
    pub async fn open(options: StoreOptions) -> Result<PostgresStore, StoreError> {
        let Location::Postgres(url) = &options.location else {
            return Err(StoreError::Invalid(format!(
                "{} is not a PostgreSQL location",
                options.location.redacted()
            )));
        };
        let shown = redact_url(url);
        // tokio-postgres does not know verify-ca, verify-full nor
        // sslrootcert: they are ours.
        let url_tls = tls::split_url(url)
            .map_err(|e| StoreError::Invalid(format!("invalid PostgreSQL URL {shown}: {e}")))?;
        let tls_setup = tls::setup(&url_tls, options.ca_file.as_deref())?;
        let mut config = tokio_postgres::Config::from_str(&url_tls.rest)
            .map_err(|e| StoreError::Invalid(format!("invalid PostgreSQL URL {shown}: {e}")))?;
        // Explicitly: tokio-postgres's own default is `prefer`, and an
        // absent sslmode stays plaintext here (see `tls`).
        config.ssl_mode(tls_setup.mode);
        config.connect_timeout(options.connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("turnpike");
        }
        // The server cancels a statement still running when we stop
        // waiting for it (a pool connection is dropped on our deadline, but
        // PostgreSQL notices that only when it next writes to it), so slow
        // queries cannot pile up on the server under a flood of lookups.
        let op_timeout = options.connect_timeout.max(Duration::from_secs(1)) * 2;
        let mut server_options = format!("-c statement_timeout={}", op_timeout.as_millis());
        if options.schema == Schema::Coturn {
            server_options.push_str(" -c default_transaction_read_only=on");
        }
        let server_options = match config.get_options() {
            Some(given) => format!("{given} {server_options}"),
            None => server_options,
        };
        config.options(server_options);
        let pool_size = options.pool_size.max(1);
        let manager = Manager::from_connect(
            config,
            QuietConnect {
                tls: tls_setup.connector,
            },
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.connect_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            // Discards a connection that died in the pool before deadpool's
            // recycling sees it, and warns ("could not be recycled"): the
            // pool then opens a new one, as it would have.
            .pre_recycle(Hook::sync_fn(|client: &mut ClientWrapper, _| {
                if client.is_closed() {
                    Err(HookError::message("connection closed"))
                } else {
                    Ok(())
                }
            }))
            .build()
            .map_err(|e| StoreError::Unavailable(format!("PostgreSQL pool for {shown}: {e}")))?;
        let store = PostgresStore {
            inner: Arc::new(Inner {
                location: options.location.clone(),
                shown,
                schema: options.schema,
                pool,
                pool_size,
                connect_timeout: options.connect_timeout,
                op_timeout,
                backoff: Mutex::new(Backoff {
                    retry_at: None,
                    delay: BACKOFF_MIN,
                    last: String::new(),
                }),
                ssl_mode: url_tls.mode.unwrap_or(tls::SslMode::Disable),
            }),
        };
        match options.schema {
            Schema::Turnpike => store.migrate().await?,
            Schema::Coturn => store.check_coturn_tables().await?,
        }
        Ok(store)
    }

    /// Where the database is.
    pub fn location(&self) -> &Location {
        &self.inner.location
    }

    /// Which schema the database holds.
    pub fn schema(&self) -> Schema {
        self.inner.schema
    }

    /// Test support: how the server sees the connection a query gets, from
    /// `pg_stat_ssl`: the TLS version (`TLSv1.3`) when it is encrypted,
    /// `None` when it is plaintext. Proves that `sslmode` did what it says.
    #[cfg(feature = "testing")]
    pub async fn connection_tls_version(&self) -> Result<Option<String>, StoreError> {
        self.with_client(|c| {
            Box::pin(async move {
                let row = c
                    .query_one(
                        "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                        &[],
                    )
                    .await?;
                let ssl: bool = row.try_get(0)?;
                let version: Option<String> = row.try_get(1)?;
                Ok(if ssl { version } else { None })
            })
        })
        .await
    }

    /// Runs `op` on a pooled connection, with the fail-fast, retry and
    /// deadline rules of the module docs. `op` may run twice (on a second
    /// connection, when the first turns out to have been dead before it was
    /// used), so it must not consume its captures.
    async fn with_client<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        F: for<'c> Fn(&'c mut ClientWrapper) -> OpFuture<'c, T> + Send + Sync,
        T: Send,
    {
        self.run(op, Window::Honour).await
    }

    /// Whether the database answers now: one trivial statement, made even
    /// inside a back-off window (which a success closes). The server's
    /// health probe while the database is unreachable: it calls this about
    /// twice a second, one call at a time, so that recovery shows at once
    /// without every lookup trying to connect.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.run(
            |c| {
                Box::pin(async move {
                    c.simple_query("SELECT 1").await?;
                    Ok(())
                })
            },
            Window::Ignore,
        )
        .await
    }

    /// See [`crate::Store::heartbeat`]: one upsert, stamped with the
    /// database's clock.
    pub(crate) async fn heartbeat(&self, r: RelayRegistration) -> Result<(), StoreError> {
        let (addresses, endpoints) = (
            registry::encode_addresses(&r.addresses),
            registry::encode_endpoints(&r.endpoints),
        );
        let (allocations, capacity) = (r.allocations as i64, r.capacity.map(|c| c as i64));
        self.with_client(|c| {
            let (r, addresses, endpoints) = (r.clone(), addresses.clone(), endpoints.clone());
            Box::pin(async move {
                let sql = registry::upsert_sql(
                    ["$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8"],
                    db_now_ms!(),
                );
                let stmt = c.prepare_cached(&sql).await?;
                c.execute(
                    &stmt,
                    &[
                        &r.id,
                        &r.name,
                        &addresses,
                        &endpoints,
                        &allocations,
                        &capacity,
                        &r.draining,
                        &r.version,
                    ],
                )
                .await?;
                Ok(())
            })
        })
        .await
    }

    /// See [`crate::Store::registered_relays`].
    pub(crate) async fn registered_relays(
        &self,
        max_age: Duration,
    ) -> Result<Vec<RegisteredRelay>, StoreError> {
        let max_age = registry::millis(max_age);
        self.with_client(|c| {
            Box::pin(async move {
                let sql = format!(
                    "SELECT {}, {} - last_seen_ms FROM fleet_relays
                     WHERE last_seen_ms >= {} - $1 ORDER BY id",
                    registry::COLUMNS,
                    db_now_ms!(),
                    db_now_ms!()
                );
                let stmt = c.prepare_cached(&sql).await?;
                let mut relays = Vec::new();
                for row in c.query(&stmt, &[&max_age]).await? {
                    relays.push(registry::row(
                        row.try_get(0)?,
                        row.try_get(1)?,
                        row.try_get(2)?,
                        row.try_get(3)?,
                        row.try_get(4)?,
                        row.try_get(5)?,
                        row.try_get(6)?,
                        row.try_get(7)?,
                        row.try_get(8)?,
                    ));
                }
                Ok(relays)
            })
        })
        .await
    }

    /// See [`crate::Store::expire_relays`].
    pub(crate) async fn expire_relays(&self, older_than: Duration) -> Result<u64, StoreError> {
        let older_than = registry::millis(older_than);
        self.with_client(|c| {
            Box::pin(async move {
                let sql = concat!(
                    "DELETE FROM fleet_relays WHERE last_seen_ms < ",
                    db_now_ms!(),
                    " - $1"
                );
                Ok(c.execute(sql, &[&older_than]).await?)
            })
        })
        .await
    }

    /// See [`crate::Store::withdraw_relay`].
    pub(crate) async fn withdraw_relay(&self, id: String) -> Result<bool, StoreError> {
        self.with_client(|c| {
            let id = id.clone();
            Box::pin(async move {
                let deleted = c
                    .execute("DELETE FROM fleet_relays WHERE id = $1", &[&id])
                    .await?;
                Ok(deleted > 0)
            })
        })
        .await
    }

    /// [`PostgresStore::with_client`], with or without the back-off window.
    async fn run<T, F>(&self, op: F, window: Window) -> Result<T, StoreError>
    where
        F: for<'c> Fn(&'c mut ClientWrapper) -> OpFuture<'c, T> + Send + Sync,
        T: Send,
    {
        // At most one retry per connection the pool may hold.
        let mut stale_left = self.inner.pool_size;
        loop {
            let mut client = self.client(window).await?;
            // `recycled` is set once a connection has gone back to the pool
            // and come out again: it may have died while idle.
            let was_idle = Object::metrics(&client).recycled.is_some();
            let result = tokio::time::timeout(self.inner.op_timeout, op(&mut client)).await;
            match result {
                Ok(Ok(value)) => {
                    self.succeeded();
                    return Ok(value);
                }
                Ok(Err(OpError::Store(e))) => {
                    self.succeeded();
                    return Err(e);
                }
                Ok(Err(OpError::Pg(e))) if connection_broken(&e) => {
                    // Never hand this connection out again.
                    drop(Object::take(client));
                    if was_idle && stale_left > 0 {
                        stale_left -= 1;
                        continue;
                    }
                    return Err(self.failed(format!(
                        "lost the connection to PostgreSQL at {}: {}; is the server running? check database.url",
                        self.inner.shown,
                        describe(&e)
                    )));
                }
                Ok(Err(OpError::Pg(e))) => return Err(self.query_error(&e)),
                Err(_elapsed) => {
                    // The connection may be stuck mid-statement.
                    drop(Object::take(client));
                    return Err(self.failed(format!(
                        "PostgreSQL at {} did not answer within {:?}; is it overloaded or unreachable?",
                        self.inner.shown, self.inner.op_timeout
                    )));
                }
            }
        }
    }

    /// A pooled connection, or a fast [`StoreError::Unavailable`].
    async fn client(&self, window: Window) -> Result<deadpool_postgres::Client, StoreError> {
        if window == Window::Honour
            && let Some(message) = self.backing_off()
        {
            return Err(StoreError::Unavailable(message));
        }
        match self.inner.pool.get().await {
            Ok(client) => Ok(client),
            // Busy, not unreachable: no back-off.
            Err(PoolError::Timeout(TimeoutType::Wait)) => Err(StoreError::Unavailable(format!(
                "all {} connections to PostgreSQL at {} stayed busy for {:?}; raise database.pool_size?",
                self.inner.pool_size, self.inner.shown, self.inner.connect_timeout
            ))),
            Err(e) => Err(self.failed(self.connect_failure(&e))),
        }
    }

    fn backing_off(&self) -> Option<String> {
        let backoff = self
            .inner
            .backoff
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let retry_at = backoff.retry_at?;
        let left = retry_at.checked_duration_since(Instant::now())?;
        Some(format!(
            "{} (next attempt in {:.1} s)",
            backoff.last,
            left.as_secs_f64()
        ))
    }

    /// Records a failure to reach the database and opens the next back-off
    /// window, unless one is open: a failure ending inside it is a call that
    /// started before it (or the health probe), and says nothing new.
    fn failed(&self, message: String) -> StoreError {
        let mut backoff = self
            .inner
            .backoff
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if backoff.retry_at.is_none_or(|at| at <= now) {
            backoff.retry_at = Some(now + backoff.delay);
            backoff.delay = (backoff.delay * 2).min(BACKOFF_MAX);
        }
        backoff.last.clone_from(&message);
        StoreError::Unavailable(message)
    }

    fn succeeded(&self) {
        let mut backoff = self
            .inner
            .backoff
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        backoff.retry_at = None;
        backoff.delay = BACKOFF_MIN;
    }

    fn connect_failure(&self, e: &PoolError) -> String {
        let shown = &self.inner.shown;
        if let PoolError::Backend(e) = e
            && let Some(message) = tls::connect_failure(e, shown, self.inner.ssl_mode)
        {
            return message;
        }
        match e {
            PoolError::Backend(e) => match e.code() {
                Some(code)
                    if *code == SqlState::INVALID_PASSWORD
                        || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
                {
                    format!(
                        "cannot log in to PostgreSQL at {shown}: {}; check the user and password in database.url",
                        describe(e)
                    )
                }
                Some(code) if *code == SqlState::INVALID_CATALOG_NAME => format!(
                    "PostgreSQL at {shown}: {}; create the database or check database.url",
                    describe(e)
                ),
                Some(code) if *code == SqlState::TOO_MANY_CONNECTIONS => format!(
                    "PostgreSQL at {shown}: {}; lower database.pool_size or raise the server's max_connections",
                    describe(e)
                ),
                Some(code) if *code == SqlState::CANNOT_CONNECT_NOW => format!(
                    "PostgreSQL at {shown} is not accepting connections: {}; is it starting up or shutting down?",
                    describe(e)
                ),
                _ => format!(
                    "cannot reach PostgreSQL at {shown}: {}; is the server running? check database.url",
                    describe(e)
                ),
            },
            PoolError::Timeout(_) => format!(
                "cannot reach PostgreSQL at {shown}: no answer within {:?}; is the server running and reachable? check database.url",
                self.inner.connect_timeout
            ),
            other => format!("cannot use PostgreSQL at {shown}: {other}"),
        }
    }

    /// A database error that is not a broken connection.
    fn query_error(&self, e: &tokio_postgres::Error) -> StoreError {
        let shown = &self.inner.shown;
        let what = describe(e);
        match e.code() {
            Some(code)
                if *code == SqlState::UNDEFINED_TABLE
                    || *code == SqlState::UNDEFINED_COLUMN
                    || *code == SqlState::UNDEFINED_FUNCTION =>
            {
                StoreError::Schema(format!(
                    "PostgreSQL database at {shown} lacks what this turnpike expects: {what}"
                ))
            }
            Some(code) if *code == SqlState::READ_ONLY_SQL_TRANSACTION => {
                if self.inner.schema == Schema::Coturn {
                    StoreError::ReadOnly
                } else {
                    StoreError::Unavailable(format!(
                        "PostgreSQL at {shown} refuses writes: {what}; does database.url point at a standby?"
                    ))
                }
            }
            Some(code) if *code == SqlState::INSUFFICIENT_PRIVILEGE => {
                StoreError::Unavailable(format!(
                    "PostgreSQL at {shown}: {what}; grant turnpike's database user access to its tables"
                ))
            }
            _ => StoreError::Unavailable(format!("PostgreSQL at {shown}: {what}")),
        }
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let shown = self.inner.shown.clone();
        self.with_client(|c| {
            let shown = shown.clone();
            Box::pin(async move {
                // Without the lock first: the usual case is an up-to-date
                // database, and servers should not queue for it.
                if let Some(version) = schema_version(c).await? {
                    if version > LATEST {
                        return Err(newer_schema(version.into(), LATEST.into()).into());
                    }
                    if version == LATEST {
                        return Ok(());
                    }
                }
                let tx = c.transaction().await?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                    .await?;
                tx.batch_execute(
                    "CREATE TABLE IF NOT EXISTS turnpike_schema_version (
                        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
                        version integer NOT NULL
                    )",
                )
                .await?;
                // Again under the lock: another server may have migrated.
                let current: i32 = match tx
                    .query_opt("SELECT version FROM turnpike_schema_version", &[])
                    .await?
                {
                    Some(row) => row.try_get(0)?,
                    None => 0,
                };
                if current > LATEST {
                    return Err(newer_schema(current.into(), LATEST.into()).into());
                }
                for (version, sql) in (1..).zip(MIGRATIONS) {
                    if version <= current {
                        continue;
                    }
                    if let Err(e) = tx.batch_execute(sql).await {
                        if connection_broken(&e) {
                            return Err(e.into());
                        }
                        return Err(StoreError::Schema(format!(
                            "migrating PostgreSQL database at {shown} to schema version {version} failed: {}",
                            describe(&e)
                        ))
                        .into());
                    }
                }
                tx.execute(
                    "INSERT INTO turnpike_schema_version (singleton, version) VALUES (true, $1)
                     ON CONFLICT (singleton) DO UPDATE SET version = EXCLUDED.version",
                    &[&LATEST],
                )
                .await?;
                tx.commit().await?;
                Ok(())
            })
        })
        .await
    }

    async fn check_coturn_tables(&self) -> Result<(), StoreError> {
        let shown = self.inner.shown.clone();
        self.with_client(|c| {
            let shown = shown.clone();
            Box::pin(async move {
                let mut missing = Vec::new();
                for table in coturn::TABLES {
                    let row = c
                        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
                        .await?;
                    if !row.try_get::<_, bool>(0)? {
                        missing.push(table);
                    }
                }
                if missing.is_empty() {
                    return Ok(());
                }
                Err(StoreError::Schema(format!(
                    "PostgreSQL database at {shown} has no coturn table {}: schema \"coturn\" reads an existing coturn database",
                    missing.join(" or ")
                ))
                .into())
            })
        })
        .await
    }
}

/// The recorded schema version, `None` before the first migration.
async fn schema_version(c: &ClientWrapper) -> Result<Option<i32>, OpError> {
    let exists: bool = c
        .query_one(
            "SELECT to_regclass('turnpike_schema_version') IS NOT NULL",
            &[],
        )
        .await?
        .try_get(0)?;
    if !exists {
        return Ok(None);
    }
    match c
        .query_opt("SELECT version FROM turnpike_schema_version", &[])
        .await?
    {
        Some(row) => Ok(Some(row.try_get(0)?)),
        None => Ok(None),
    }
}

/// Whether the error means the connection is unusable (rather than the
/// statement being wrong): closed, an I/O error, or a server that is
/// shutting down (SQLSTATE class 08 and 57P).
fn connection_broken(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => {
            let code = code.code();
            code.starts_with("08") || code.starts_with("57P")
        }
        None => io_error(e).is_some(),
    }
}

fn io_error<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e io::Error> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return Some(io);
        }
        current = err.source();
    }
    None
}

/// A one-line reason: the server's message, a plain I/O reason ("connection
/// refused" rather than "Connection refused (os error 111)"), or the
/// client's own description.
fn describe(e: &tokio_postgres::Error) -> String {
    let text = if let Some(db) = e.as_db_error() {
        db.message().to_owned()
    } else if let Some(io) = io_error(e) {
        match io.kind() {
            io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::TimedOut
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::AddrNotAvailable
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::BrokenPipe => io.kind().to_string(),
            _ => io.to_string(),
        }
    } else {
        match e.source() {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        }
    };
    // Messages are one line (they end up in single-line logs and errors).
    text.replace(['\n', '\r'], " ")
}

/// The realms in byte order (`COLLATE "C"`, as SQLite sorts), so that both
/// backends list the same order whatever the database's locale.
async fn all_realms(c: &tokio_postgres::Client, schema: Schema) -> Result<Vec<String>, OpError> {
    let sql = match schema {
        Schema::Turnpike => r#"SELECT realm FROM realms ORDER BY realm COLLATE "C""#,
        Schema::Coturn => {
            r#"SELECT r FROM (
                 SELECT realm::text AS r FROM turnusers_lt WHERE realm IS NOT NULL
                 UNION SELECT realm::text FROM turn_secret WHERE realm IS NOT NULL
               ) AS t ORDER BY r COLLATE "C""#
        }
    };
    let rows = c.query(sql, &[]).await?;
    let mut realms = Vec::with_capacity(rows.len());
    for row in rows {
        realms.push(row.try_get(0)?);
    }
    Ok(realms)
}

/// [`StoreError::UnknownRealm`] unless the realm is registered; the row lock
/// (`FOR SHARE` or `FOR UPDATE`) holds until the transaction ends.
async fn require_realm(
    tx: &tokio_postgres::Transaction<'_>,
    realm: &str,
    lock: &'static str,
) -> Result<(), OpError> {
    let sql = format!("SELECT 1 FROM realms WHERE realm = $1 {lock}");
    if tx.query_opt(&sql, &[&realm]).await?.is_some() {
        return Ok(());
    }
    Err(StoreError::UnknownRealm {
        realm: realm.to_owned(),
        known: all_realms(tx.client(), Schema::Turnpike).await?,
    }
    .into())
}

fn key_slices(keys: &StoredKeys) -> (Option<&[u8]>, Option<&[u8]>) {
    (
        keys.md5.as_ref().map(|k| &k[..]),
        keys.sha256.as_ref().map(|k| &k[..]),
    )
}

impl Backend for PostgresStore {
    fn schema(&self) -> Schema {
        self.inner.schema
    }

    async fn find_user_keys(
        &self,
        realm: &str,
        username: &str,
    ) -> Result<Option<StoredKeys>, StoreError> {
        let schema = self.schema();
        self.with_client(|c| {
            let (realm, username) = (realm.to_owned(), username.to_owned());
            Box::pin(async move {
                let keys = match schema {
                    Schema::Turnpike => {
                        let stmt = c
                            .prepare_cached(
                                "SELECT md5_key, sha256_key FROM users WHERE realm = $1 AND username = $2",
                            )
                            .await?;
                        match c.query_opt(&stmt, &[&realm, &username]).await? {
                            Some(row) => StoredKeys::from_db(
                                row.try_get::<_, Option<&[u8]>>(0)?,
                                row.try_get::<_, Option<&[u8]>>(1)?,
                            ),
                            None => None,
                        }
                    }
                    Schema::Coturn => {
                        // `char(128)` comes back space-padded; the cast to
                        // text drops the padding (and decode_hmackey trims
                        // anyway).
                        let stmt = c
                            .prepare_cached(
                                "SELECT hmackey::text FROM turnusers_lt WHERE realm = $1 AND name = $2",
                            )
                            .await?;
                        match c.query_opt(&stmt, &[&realm, &username]).await? {
                            Some(row) => row
                                .try_get::<_, Option<&str>>(0)?
                                .and_then(coturn::decode_hmackey),
                            None => None,
                        }
                    }
                };
                Ok(keys)
            })
        })
        .await
    }

    async fn find_secrets(&self, realm: &str) -> Result<Vec<Secret>, StoreError> {
        let schema = self.schema();
        self.with_client(|c| {
            let realm = realm.to_owned();
            Box::pin(async move {
                match schema {
                    Schema::Turnpike => {
                        let stmt = c
                            .prepare_cached(
                                "SELECT key_index, value, created_at FROM secrets
                                 WHERE realm = $1 ORDER BY key_index",
                            )
                            .await?;
                        let mut secrets = Vec::new();
                        for row in c.query(&stmt, &[&realm]).await? {
                            // The CHECK constraint keeps indexes in u32 range.
                            if let Ok(key_index) = u32::try_from(row.try_get::<_, i64>(0)?) {
                                secrets.push(Secret {
                                    realm: realm.clone(),
                                    key_index,
                                    value: row.try_get(1)?,
                                    created_at: Some(row.try_get(2)?),
                                });
                            }
                        }
                        Ok(secrets)
                    }
                    Schema::Coturn => {
                        let stmt = c
                            .prepare_cached(
                                r#"SELECT value::text FROM turn_secret
                                   WHERE realm = $1 AND value IS NOT NULL ORDER BY value COLLATE "C""#,
                            )
                            .await?;
                        let mut values = Vec::new();
                        for row in c.query(&stmt, &[&realm]).await? {
                            values.push(row.try_get(0)?);
                        }
                        Ok(coturn::numbered_secrets(&realm, values))
                    }
                }
            })
        })
        .await
    }

    async fn find_realms(&self) -> Result<Vec<String>, StoreError> {
        let schema = self.schema();
        self.with_client(|c| Box::pin(async move { all_realms(c, schema).await }))
            .await
    }

    async fn insert_realm(&self, realm: String) -> Result<(), StoreError> {
        self.with_client(|c| {
            let realm = realm.clone();
            Box::pin(async move {
                // Look before writing: a fleet may pre-register realms and
                // give servers a role that cannot insert.
                if c.query_opt("SELECT 1 FROM realms WHERE realm = $1", &[&realm])
                    .await?
                    .is_none()
                {
                    c.execute(
                        "INSERT INTO realms (realm, created_at) VALUES ($1, $2)
                         ON CONFLICT (realm) DO NOTHING",
                        &[&realm, &now_unix()],
                    )
                    .await?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn insert_user(&self, user: UserRef, keys: StoredKeys) -> Result<(), StoreError> {
        self.with_client(|c| {
            let (user, keys) = (user.clone(), keys.clone());
            Box::pin(async move {
                let tx = c.transaction().await?;
                // FOR SHARE: the realm cannot disappear before the insert.
                require_realm(&tx, &user.realm, "FOR SHARE").await?;
                let (md5, sha256) = key_slices(&keys);
                let inserted = tx
                    .execute(
                        "INSERT INTO users (realm, username, md5_key, sha256_key, created_at, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $5)
                         ON CONFLICT (realm, username) DO NOTHING",
                        &[&user.realm, &user.username, &md5, &sha256, &now_unix()],
                    )
                    .await?;
                if inserted == 0 {
                    return Err(StoreError::AlreadyExists(user.label()).into());
                }
                tx.commit().await?;
                Ok(())
            })
        })
        .await
    }

    async fn update_user_keys(&self, user: UserRef, keys: StoredKeys) -> Result<(), StoreError> {
        self.with_client(|c| {
            let (user, keys) = (user.clone(), keys.clone());
            Box::pin(async move {
                let (md5, sha256) = key_slices(&keys);
                let changed = c
                    .execute(
                        "UPDATE users SET md5_key = $3, sha256_key = $4, updated_at = $5
                         WHERE realm = $1 AND username = $2",
                        &[&user.realm, &user.username, &md5, &sha256, &now_unix()],
                    )
                    .await?;
                if changed == 0 {
                    return Err(StoreError::NotFound(user.label()).into());
                }
                Ok(())
            })
        })
        .await
    }

    async fn delete_user(&self, user: UserRef) -> Result<(), StoreError> {
        self.with_client(|c| {
            let user = user.clone();
            Box::pin(async move {
                let changed = c
                    .execute(
                        "DELETE FROM users WHERE realm = $1 AND username = $2",
                        &[&user.realm, &user.username],
                    )
                    .await?;
                if changed == 0 {
                    return Err(StoreError::NotFound(user.label()).into());
                }
                Ok(())
            })
        })
        .await
    }

    async fn find_users(&self, realm: Option<&str>) -> Result<Vec<UserInfo>, StoreError> {
        let sql = match self.schema() {
            Schema::Turnpike => {
                r#"SELECT realm, username, created_at FROM users
                   WHERE $1::text IS NULL OR realm = $1::text
                   ORDER BY realm COLLATE "C", username COLLATE "C""#
            }
            Schema::Coturn => {
                r#"SELECT realm::text, name::text, NULL::bigint FROM turnusers_lt
                   WHERE realm IS NOT NULL AND name IS NOT NULL
                     AND ($1::text IS NULL OR realm = $1::text)
                   ORDER BY realm COLLATE "C", name COLLATE "C""#
            }
        };
        self.with_client(|c| {
            let realm = realm.map(str::to_owned);
            Box::pin(async move {
                let mut users = Vec::new();
                for row in c.query(sql, &[&realm]).await? {
                    users.push(UserInfo {
                        realm: row.try_get(0)?,
                        username: row.try_get(1)?,
                        created_at: row.try_get(2)?,
                    });
                }
                Ok(users)
            })
        })
        .await
    }

    async fn insert_secret(
        &self,
        realm: String,
        key_index: Option<u32>,
        value: String,
    ) -> Result<u32, StoreError> {
        self.with_client(|c| {
            let (realm, value) = (realm.clone(), value.clone());
            Box::pin(async move {
                let tx = c.transaction().await?;
                // FOR UPDATE: concurrent additions to one realm take turns,
                // so two cannot pick the same free index.
                require_realm(&tx, &realm, "FOR UPDATE").await?;
                let duplicate = tx
                    .query_opt(
                        "SELECT 1 FROM secrets WHERE realm = $1 AND value = $2",
                        &[&realm, &value],
                    )
                    .await?
                    .is_some();
                let mut taken = Vec::new();
                for row in tx
                    .query(
                        "SELECT key_index FROM secrets WHERE realm = $1 ORDER BY key_index",
                        &[&realm],
                    )
                    .await?
                {
                    taken.extend(u32::try_from(row.try_get::<_, i64>(0)?).ok());
                }
                let index = new_secret_index(&realm, key_index, duplicate, &taken)?;
                tx.execute(
                    "INSERT INTO secrets (realm, key_index, value, created_at) VALUES ($1, $2, $3, $4)",
                    &[&realm, &i64::from(index), &value, &now_unix()],
                )
                .await?;
                tx.commit().await?;
                Ok(index)
            })
        })
        .await
    }

    async fn delete_secret(&self, realm: String, which: OwnedSecretRef) -> Result<(), StoreError> {
        self.with_client(|c| {
            let (realm, which) = (realm.clone(), which.clone());
            Box::pin(async move {
                let changed = match &which {
                    OwnedSecretRef::Index(index) => {
                        c.execute(
                            "DELETE FROM secrets WHERE realm = $1 AND key_index = $2",
                            &[&realm, &i64::from(*index)],
                        )
                        .await?
                    }
                    OwnedSecretRef::Value(value) => {
                        c.execute(
                            "DELETE FROM secrets WHERE realm = $1 AND value = $2",
                            &[&realm, value],
                        )
                        .await?
                    }
                };
                if changed == 0 {
                    return Err(StoreError::NotFound(which.label(&realm)).into());
                }
                Ok(())
            })
        })
        .await
    }
}
