//! Turnpike's credential database.
//!
//! TURN clients authenticate in two ways, and both need data that lives
//! outside the configuration file once there are more than a handful of
//! users:
//!
//! - **Long-term credentials** (RFC 8489 §9.2). The server needs, per realm
//!   and username, the key MD5(username ":" realm ":" password) for
//!   MESSAGE-INTEGRITY (HMAC-SHA1) and SHA-256(username ":" realm ":"
//!   password) for MESSAGE-INTEGRITY-SHA256. Only these two keys are stored,
//!   never the password: [`StoredKeys::from_password`] derives them.
//! - **Time-limited shared secrets** ("TURN REST API"): per realm, a small
//!   ordered list of secrets ([`Secret`]), so that a new secret can be added
//!   before the old one is removed.
//!
//! Two databases are supported behind one trait, [`CredentialDb`]:
//!
//! - **SQLite** (the default, [`SqliteStore`]): an embedded file next to the
//!   server's data, compiled in (no system library needed at run time). The
//!   running server and the admin command line share the file (WAL mode and
//!   a busy timeout).
//! - **PostgreSQL** ([`PostgresStore`]): for fleets of servers sharing one
//!   user base. A small connection pool that survives database restarts and
//!   fails fast (with [`StoreError::Unavailable`]) while the database is
//!   down, so that callers are never blocked for long.
//!
//! Each can hold Turnpike's own schema ([`Schema::Turnpike`], created and
//! migrated automatically when opened) or be an existing coturn database
//! ([`Schema::Coturn`]) that is only ever read, so that an operator can point
//! Turnpike at coturn's user base while migrating.
//!
//! [`Store`] is what the rest of Turnpike uses: one cheaply clonable handle
//! over either backend. Every method is async because the server calls the
//! store from its control tasks, off the packet path; SQLite work runs on
//! tokio's blocking thread pool.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod backend;
mod coturn;
mod location;
mod postgres;
mod registry;
mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;

use backend::{Backend, OwnedSecretRef, UserRef};
pub use location::Location;
pub use postgres::PostgresStore;
pub use postgres::tls::SslMode;
pub use registry::{
    MAX_RELAY_NAME_LEN, MAX_VERSION_LEN, RegisteredEndpoint, RegisteredRelay, RegisteredTransport,
    RelayRegistration,
};
pub use sqlite::SqliteStore;

/// Longest username accepted, in bytes (coturn's `name varchar(512)`).
pub const MAX_USERNAME_LEN: usize = 512;
/// Longest realm accepted, in bytes (coturn's `realm varchar(127)`).
pub const MAX_REALM_LEN: usize = 127;
/// Longest shared secret accepted, in bytes (coturn's `value varchar(256)`).
pub const MAX_SECRET_LEN: usize = 256;

/// The long-term keys of one user (RFC 8489 §9.2.2): what the server needs to
/// check MESSAGE-INTEGRITY and MESSAGE-INTEGRITY-SHA256, and all that is
/// stored. Either key may be unknown: a user imported from a coturn database
/// that hashed passwords with SHA-256 has no MD5 key and so cannot use
/// MESSAGE-INTEGRITY (HMAC-SHA1).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKeys {
    /// MD5(username ":" realm ":" password), the HMAC-SHA1 key.
    pub md5: Option<[u8; 16]>,
    /// SHA-256(username ":" realm ":" password), the HMAC-SHA256 key.
    pub sha256: Option<[u8; 32]>,
}

impl StoredKeys {
    /// Both keys for a password. The password itself goes no further.
    pub fn from_password(username: &str, realm: &str, password: &str) -> Self {
        use turnpike_codec::integrity::{long_term_key_md5, long_term_key_sha256};
        StoredKeys {
            md5: Some(long_term_key_md5(username, realm, password)),
            sha256: Some(long_term_key_sha256(username, realm, password)),
        }
    }

    /// Builds keys from raw database values; a value of the wrong length
    /// (someone edited the database by hand) counts as absent rather than
    /// being trusted or panicking. `None` when neither key is usable.
    pub(crate) fn from_db(md5: Option<&[u8]>, sha256: Option<&[u8]>) -> Option<Self> {
        let keys = StoredKeys {
            md5: md5.and_then(|k| <[u8; 16]>::try_from(k).ok()),
            sha256: sha256.and_then(|k| <[u8; 32]>::try_from(k).ok()),
        };
        (keys.md5.is_some() || keys.sha256.is_some()).then_some(keys)
    }
}

/// The keys are as good as the password for TURN: logs show only which keys
/// are present.
impl fmt::Debug for StoredKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKeys")
            .field("md5", &self.md5.map(|_| "<16 bytes>"))
            .field("sha256", &self.sha256.map(|_| "<32 bytes>"))
            .finish()
    }
}

/// One user as listed by [`Store::list_users`] (keys are not listed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    /// The user's realm.
    pub realm: String,
    /// The username.
    pub username: String,
    /// When the user was added, in Unix seconds; `None` for a coturn
    /// database, which does not record it.
    pub created_at: Option<i64>,
}

/// One shared secret of a realm (TURN REST API).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    /// The realm the secret belongs to.
    pub realm: String,
    /// Its position: secrets are tried in `key_index` order. For a coturn
    /// database, which has no such column, the secrets' rank when sorted by
    /// value (0, 1, …).
    pub key_index: u32,
    /// The secret itself.
    pub value: String,
    /// When it was added, in Unix seconds; `None` for a coturn database.
    pub created_at: Option<i64>,
}

/// A secret's value is never printed.
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("realm", &self.realm)
            .field("key_index", &self.key_index)
            .field("value", &format_args!("<{} bytes>", self.value.len()))
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// Which secret [`Store::remove_secret`] removes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum SecretRef<'a> {
    /// The secret with this `key_index`.
    Index(u32),
    /// The secret with this value.
    Value(&'a str),
}

impl fmt::Debug for SecretRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Index(i) => f.debug_tuple("Index").field(i).finish(),
            SecretRef::Value(v) => write!(f, "Value(<{} bytes>)", v.len()),
        }
    }
}

/// Which tables the database holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Schema {
    /// Turnpike's own tables, created and migrated when the store opens.
    #[default]
    Turnpike,
    /// An existing coturn database (`turnusers_lt`, `turn_secret`), opened
    /// read-only: every write fails with [`StoreError::ReadOnly`].
    Coturn,
}

/// How to open a [`Store`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Where the database is.
    pub location: Location,
    /// Which tables it holds.
    pub schema: Schema,
    /// PostgreSQL: the most connections kept open (0 counts as 1). Unused
    /// for SQLite, which has one connection.
    pub pool_size: usize,
    /// PostgreSQL: how long to wait for a connection to be made (or for a
    /// busy pool to free one). SQLite: how long to wait for a lock held by
    /// another process (the admin command line, another server).
    pub connect_timeout: Duration,
    /// PostgreSQL: the PEM file of CA certificates the server's TLS
    /// certificate is checked against (`database.ca_file`; the URL's
    /// `sslrootcert` does the same). `None`: the system's CA bundle for
    /// `sslmode=verify-ca|verify-full`, no check for `require`. Read when
    /// the store opens.
    pub ca_file: Option<PathBuf>,
    /// SQLite: create the file (and its directory) when missing. The admin
    /// command line's read commands pass `false`, so that a mistyped path is
    /// an error rather than a new empty database.
    pub create: bool,
}

impl StoreOptions {
    /// Options for `location` with the defaults: Turnpike's schema, 4
    /// connections, a 5 s timeout, no CA file, create when missing.
    pub fn new(location: Location) -> Self {
        StoreOptions {
            location,
            schema: Schema::Turnpike,
            pool_size: 4,
            connect_timeout: Duration::from_secs(5),
            ca_file: None,
            create: true,
        }
    }
}

/// Why a store operation failed. Messages are one line, say what is wrong and
/// how to fix it, and never contain a password or a secret.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or opened.
    #[error("{0}")]
    Unavailable(String),
    /// A write was attempted on a coturn database, which is read-only.
    #[error(
        "the database has coturn's schema and is used read-only: change users and secrets with coturn's turnadmin"
    )]
    ReadOnly,
    /// The realm is not registered (servers register theirs when they start).
    #[error("unknown realm {realm:?}: {}", known_realms(known))]
    UnknownRealm {
        /// The realm asked for.
        realm: String,
        /// The realms the database knows.
        known: Vec<String>,
    },
    /// The user or secret does not exist ("user alice in realm r").
    #[error("{0} not found")]
    NotFound(String),
    /// The user or secret already exists.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// Bad input: empty or over-long name, control characters, no keys, ….
    #[error("{0}")]
    Invalid(String),
    /// The database's schema is not usable: a migration failed, it is newer
    /// than this binary, or coturn's tables are missing.
    #[error("{0}")]
    Schema(String),
}

fn known_realms(known: &[String]) -> String {
    if known.is_empty() {
        "the database has no realms yet (a server registers its realm when it starts)".to_owned()
    } else {
        let list: Vec<String> = known.iter().map(|r| format!("{r:?}")).collect();
        format!("known realms are {}", list.join(", "))
    }
}

/// A credential database: the operations the server and the admin command
/// line need, implemented by [`SqliteStore`] and [`PostgresStore`] (and by
/// [`Store`], which dispatches to one of them).
///
/// Every method is provided: the checks below are made here, once for all
/// backends, before the backend runs its SQL. The trait is sealed (only this
/// crate's types implement it).
///
/// Lookups never validate their input: a name that could not have been
/// stored simply has no keys, so garbage sent by a client is not an error.
/// Writes validate ([`StoreError::Invalid`]), and on a coturn database fail
/// with [`StoreError::ReadOnly`] before looking at their input.
pub trait CredentialDb: Backend {
    /// The keys of `username` in `realm`, `None` if there is no such (usable)
    /// user.
    fn user_keys(
        &self,
        realm: &str,
        username: &str,
    ) -> impl Future<Output = Result<Option<StoredKeys>, StoreError>> + Send {
        async move {
            if !lookupable(realm) || !lookupable(username) {
                return Ok(None);
            }
            self.find_user_keys(realm, username).await
        }
    }

    /// The realm's shared secrets, ordered by `key_index`.
    fn secrets(&self, realm: &str) -> impl Future<Output = Result<Vec<Secret>, StoreError>> + Send {
        async move {
            if !lookupable(realm) {
                return Ok(Vec::new());
            }
            self.find_secrets(realm).await
        }
    }

    /// Every realm, sorted.
    fn realms(&self) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send {
        self.find_realms()
    }

    /// Registers a realm (servers do at start); no-op if known or coturn.
    fn ensure_realm(&self, realm: &str) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move {
            if self.schema() == Schema::Coturn {
                return Ok(());
            }
            validate_realm(realm)?;
            self.insert_realm(realm.to_owned()).await
        }
    }

    /// Adds a user to a registered realm.
    fn add_user(
        &self,
        realm: &str,
        username: &str,
        keys: &StoredKeys,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move {
            let user = user_to_write(self.schema(), realm, username)?;
            validate_keys(keys)?;
            self.insert_user(user, keys.clone()).await
        }
    }

    /// Replaces an existing user's keys (a password change).
    fn set_user_keys(
        &self,
        realm: &str,
        username: &str,
        keys: &StoredKeys,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move {
            let user = user_to_write(self.schema(), realm, username)?;
            validate_keys(keys)?;
            self.update_user_keys(user, keys.clone()).await
        }
    }

    /// Removes a user.
    fn remove_user(
        &self,
        realm: &str,
        username: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move {
            let user = user_to_write(self.schema(), realm, username)?;
            self.delete_user(user).await
        }
    }

    /// Users of one realm, or of all, sorted by realm then username.
    fn list_users(
        &self,
        realm: Option<&str>,
    ) -> impl Future<Output = Result<Vec<UserInfo>, StoreError>> + Send {
        async move {
            if realm.is_some_and(|r| !lookupable(r)) {
                return Ok(Vec::new());
            }
            self.find_users(realm).await
        }
    }

    /// Adds a shared secret at `key_index` (or the lowest free index) and
    /// returns the index used.
    fn add_secret(
        &self,
        realm: &str,
        key_index: Option<u32>,
        value: &str,
    ) -> impl Future<Output = Result<u32, StoreError>> + Send {
        async move {
            writable(self.schema())?;
            validate_realm(realm)?;
            validate_secret(value)?;
            self.insert_secret(realm.to_owned(), key_index, value.to_owned())
                .await
        }
    }

    /// Removes a shared secret by index or value.
    fn remove_secret(
        &self,
        realm: &str,
        which: SecretRef<'_>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move {
            writable(self.schema())?;
            validate_realm(realm)?;
            let which = match which {
                SecretRef::Index(index) => OwnedSecretRef::Index(index),
                SecretRef::Value(value) => {
                    validate_secret(value)?;
                    OwnedSecretRef::Value(value.to_owned())
                }
            };
            self.delete_secret(realm.to_owned(), which).await
        }
    }
}

impl CredentialDb for SqliteStore {}
impl CredentialDb for PostgresStore {}
impl CredentialDb for Store {}

/// The credential database the server uses: SQLite or PostgreSQL, chosen by
/// [`StoreOptions::location`]. Cloning is cheap and clones share the
/// connection(s).
#[derive(Clone, Debug)]
pub struct Store {
    backend: Engine,
}

#[derive(Clone, Debug)]
enum Engine {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

/// Runs the same expression on whichever backend the store has.
macro_rules! dispatch {
    ($self:ident, $db:ident => $e:expr) => {
        match &$self.backend {
            Engine::Sqlite($db) => $e,
            Engine::Postgres($db) => $e,
        }
    };
}

/// The methods of [`CredentialDb`], callable without importing the trait.
impl Store {
    /// Opens the database. With [`Schema::Turnpike`] it creates (SQLite, if
    /// `create`) and migrates it; with [`Schema::Coturn`] it checks that
    /// coturn's tables exist and never writes.
    pub async fn open(options: StoreOptions) -> Result<Store, StoreError> {
        let backend = match options.location {
            Location::Sqlite(_) => Engine::Sqlite(SqliteStore::open(options).await?),
            Location::Postgres(_) => Engine::Postgres(PostgresStore::open(options).await?),
        };
        Ok(Store { backend })
    }

    /// Where the database is (print it with [`Location::redacted`]).
    pub fn location(&self) -> &Location {
        dispatch!(self, db => db.location())
    }

    /// Which schema the database holds.
    pub fn schema(&self) -> Schema {
        dispatch!(self, db => db.schema())
    }

    /// See [`CredentialDb::user_keys`].
    pub async fn user_keys(
        &self,
        realm: &str,
        username: &str,
    ) -> Result<Option<StoredKeys>, StoreError> {
        CredentialDb::user_keys(self, realm, username).await
    }

    /// Whether the database answers now (a health probe): PostgreSQL runs
    /// a trivial statement even while calls are failing fast after an
    /// outage ([`PostgresStore::ping`]); SQLite, a local file, always does.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match &self.backend {
            Engine::Sqlite(_) => Ok(()),
            Engine::Postgres(db) => db.ping().await,
        }
    }

    /// See [`CredentialDb::secrets`].
    pub async fn secrets(&self, realm: &str) -> Result<Vec<Secret>, StoreError> {
        CredentialDb::secrets(self, realm).await
    }

    /// See [`CredentialDb::realms`]. Coturn: the realms that have users or
    /// secrets.
    pub async fn realms(&self) -> Result<Vec<String>, StoreError> {
        CredentialDb::realms(self).await
    }

    /// See [`CredentialDb::ensure_realm`].
    pub async fn ensure_realm(&self, realm: &str) -> Result<(), StoreError> {
        CredentialDb::ensure_realm(self, realm).await
    }

    /// See [`CredentialDb::add_user`]: [`StoreError::UnknownRealm`] if the
    /// realm is not in [`Store::realms`], [`StoreError::AlreadyExists`].
    pub async fn add_user(
        &self,
        realm: &str,
        username: &str,
        keys: &StoredKeys,
    ) -> Result<(), StoreError> {
        CredentialDb::add_user(self, realm, username, keys).await
    }

    /// See [`CredentialDb::set_user_keys`]: [`StoreError::NotFound`].
    pub async fn set_user_keys(
        &self,
        realm: &str,
        username: &str,
        keys: &StoredKeys,
    ) -> Result<(), StoreError> {
        CredentialDb::set_user_keys(self, realm, username, keys).await
    }

    /// See [`CredentialDb::remove_user`]: [`StoreError::NotFound`].
    pub async fn remove_user(&self, realm: &str, username: &str) -> Result<(), StoreError> {
        CredentialDb::remove_user(self, realm, username).await
    }

    /// See [`CredentialDb::list_users`].
    pub async fn list_users(&self, realm: Option<&str>) -> Result<Vec<UserInfo>, StoreError> {
        CredentialDb::list_users(self, realm).await
    }

    /// See [`CredentialDb::add_secret`]: `None` takes the lowest unused index
    /// (from 0); [`StoreError::UnknownRealm`]; [`StoreError::AlreadyExists`]
    /// for a taken index or a duplicate value.
    pub async fn add_secret(
        &self,
        realm: &str,
        key_index: Option<u32>,
        value: &str,
    ) -> Result<u32, StoreError> {
        CredentialDb::add_secret(self, realm, key_index, value).await
    }

    /// See [`CredentialDb::remove_secret`]: [`StoreError::NotFound`].
    pub async fn remove_secret(&self, realm: &str, which: SecretRef<'_>) -> Result<(), StoreError> {
        CredentialDb::remove_secret(self, realm, which).await
    }
}

/// The fleet's heartbeat rows ([`registry`]): written by relays with
/// `fleet.register`, read by the ICE endpoint. Turnpike's schema only (a
/// coturn database is read-only).
impl Store {
    /// Writes this relay's row: one upsert, last-seen time from the
    /// database's clock.
    pub async fn heartbeat(&self, registration: &RelayRegistration) -> Result<(), StoreError> {
        writable(self.schema())?;
        registry::validate(registration)?;
        let r = registration.clone();
        dispatch!(self, db => db.heartbeat(r).await)
    }

    /// The rows written within `max_age`, by id.
    pub async fn registered_relays(
        &self,
        max_age: Duration,
    ) -> Result<Vec<RegisteredRelay>, StoreError> {
        if self.schema() == Schema::Coturn {
            return Ok(Vec::new());
        }
        dispatch!(self, db => db.registered_relays(max_age).await)
    }

    /// Deletes the rows not written for `older_than`; how many.
    pub async fn expire_relays(&self, older_than: Duration) -> Result<u64, StoreError> {
        writable(self.schema())?;
        dispatch!(self, db => db.expire_relays(older_than).await)
    }

    /// Deletes one relay's row (at a clean shutdown); whether it was there.
    pub async fn withdraw_relay(&self, id: &str) -> Result<bool, StoreError> {
        writable(self.schema())?;
        let id = id.to_owned();
        dispatch!(self, db => db.withdraw_relay(id).await)
    }
}

/// Checked input goes straight to the backend.
impl Backend for Store {
    fn schema(&self) -> Schema {
        Store::schema(self)
    }
    async fn find_user_keys(
        &self,
        realm: &str,
        username: &str,
    ) -> Result<Option<StoredKeys>, StoreError> {
        dispatch!(self, db => db.find_user_keys(realm, username).await)
    }
    async fn find_secrets(&self, realm: &str) -> Result<Vec<Secret>, StoreError> {
        dispatch!(self, db => db.find_secrets(realm).await)
    }
    async fn find_realms(&self) -> Result<Vec<String>, StoreError> {
        dispatch!(self, db => db.find_realms().await)
    }
    async fn find_users(&self, realm: Option<&str>) -> Result<Vec<UserInfo>, StoreError> {
        dispatch!(self, db => db.find_users(realm).await)
    }
    async fn insert_realm(&self, realm: String) -> Result<(), StoreError> {
        dispatch!(self, db => db.insert_realm(realm).await)
    }
    async fn insert_user(&self, user: UserRef, keys: StoredKeys) -> Result<(), StoreError> {
        dispatch!(self, db => db.insert_user(user, keys).await)
    }
    async fn update_user_keys(&self, user: UserRef, keys: StoredKeys) -> Result<(), StoreError> {
        dispatch!(self, db => db.update_user_keys(user, keys).await)
    }
    async fn delete_user(&self, user: UserRef) -> Result<(), StoreError> {
        dispatch!(self, db => db.delete_user(user).await)
    }
    async fn insert_secret(
        &self,
        realm: String,
        key_index: Option<u32>,
        value: String,
    ) -> Result<u32, StoreError> {
        dispatch!(self, db => db.insert_secret(realm, key_index, value).await)
    }
    async fn delete_secret(&self, realm: String, which: OwnedSecretRef) -> Result<(), StoreError> {
        dispatch!(self, db => db.delete_secret(realm, which).await)
    }
}

// ---------------------------------------------------------------------------
// Shared by both backends.

/// Checks a name for writing: non-empty, at most `max` bytes, no control
/// characters (they break logs and coturn's tools, and PostgreSQL rejects
/// NUL).
fn validate_name(what: &str, value: &str, max: usize) -> Result<(), StoreError> {
    if value.is_empty() {
        return Err(StoreError::Invalid(format!("{what} must not be empty")));
    }
    if value.len() > max {
        return Err(StoreError::Invalid(format!(
            "{what} is {} bytes long: at most {max} are allowed",
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(StoreError::Invalid(format!(
            "{what} {:?} contains a control character",
            value
        )));
    }
    Ok(())
}

fn validate_realm(realm: &str) -> Result<(), StoreError> {
    validate_name("realm", realm, MAX_REALM_LEN)
}

fn validate_username(username: &str) -> Result<(), StoreError> {
    validate_name("username", username, MAX_USERNAME_LEN)
}

/// Like a name, but the value itself never appears in the message.
fn validate_secret(value: &str) -> Result<(), StoreError> {
    if value.is_empty() {
        return Err(StoreError::Invalid("secret must not be empty".to_owned()));
    }
    if value.len() > MAX_SECRET_LEN {
        return Err(StoreError::Invalid(format!(
            "secret is {} bytes long: at most {MAX_SECRET_LEN} are allowed",
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(StoreError::Invalid(
            "secret contains a control character".to_owned(),
        ));
    }
    Ok(())
}

fn validate_keys(keys: &StoredKeys) -> Result<(), StoreError> {
    if keys.md5.is_none() && keys.sha256.is_none() {
        return Err(StoreError::Invalid(
            "a user needs at least one key (MD5 or SHA-256)".to_owned(),
        ));
    }
    Ok(())
}

/// A string that can be looked up at all: PostgreSQL rejects NUL in text
/// parameters, and nothing with NUL was ever stored.
fn lookupable(s: &str) -> bool {
    !s.contains('\0')
}

/// Writes need Turnpike's schema: a coturn database is only read.
fn writable(schema: Schema) -> Result<(), StoreError> {
    match schema {
        Schema::Turnpike => Ok(()),
        Schema::Coturn => Err(StoreError::ReadOnly),
    }
}

/// The checks of every user write, in order: the schema, the realm, the
/// username.
fn user_to_write(schema: Schema, realm: &str, username: &str) -> Result<UserRef, StoreError> {
    writable(schema)?;
    validate_realm(realm)?;
    validate_username(username)?;
    Ok(UserRef {
        realm: realm.to_owned(),
        username: username.to_owned(),
    })
}

/// Now in Unix seconds (0 if the clock is before 1970, which no database
/// cares about).
pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Now in Unix milliseconds (0 before 1970), the heartbeat clock of SQLite.
pub(crate) fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Shared with the backends: the schema version this binary creates and
/// understands.
pub(crate) fn newer_schema(found: i64, known: i64) -> StoreError {
    StoreError::Schema(format!(
        "database schema version {found} is newer than this turnpike ({known}): upgrade turnpike"
    ))
}

/// Kept so that the default data file name is defined once.
pub(crate) fn default_sqlite_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("turnpike.db")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(validate_username("alice").is_ok());
        assert!(validate_username(&"a".repeat(512)).is_ok());
        assert!(matches!(validate_username(""), Err(StoreError::Invalid(_))));
        assert!(matches!(
            validate_username(&"a".repeat(513)),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            validate_username("a\nb"),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            validate_username("a\0b"),
            Err(StoreError::Invalid(_))
        ));
        assert!(validate_realm(&"r".repeat(127)).is_ok());
        assert!(matches!(
            validate_realm(&"r".repeat(128)),
            Err(StoreError::Invalid(_))
        ));
        assert!(validate_secret(&"s".repeat(256)).is_ok());
        assert!(matches!(
            validate_secret(&"s".repeat(257)),
            Err(StoreError::Invalid(_))
        ));
        let e = validate_secret("top\tsecret").unwrap_err().to_string();
        assert!(!e.contains("top"), "{e}");
        assert!(matches!(
            validate_keys(&StoredKeys {
                md5: None,
                sha256: None
            }),
            Err(StoreError::Invalid(_))
        ));
    }

    #[test]
    fn from_password_derives_both_keys_with_the_codec() {
        // The derivation itself is tested in the codec; here: both keys are
        // present, come from the codec, and depend on the password.
        let a = StoredKeys::from_password("alice", "example.org", "pw");
        let b = StoredKeys::from_password("alice", "example.org", "pw2");
        assert!(a.md5.is_some() && a.sha256.is_some());
        assert_ne!(a, b);
        assert_eq!(
            a.md5,
            Some(turnpike_codec::integrity::long_term_key_md5(
                "alice",
                "example.org",
                "pw"
            ))
        );
    }

    #[test]
    fn debug_never_shows_keys_or_secrets() {
        let k = StoredKeys::from_password("alice", "r", "pw");
        let d = format!("{k:?}");
        assert!(d.contains("<16 bytes>") && d.contains("<32 bytes>"), "{d}");
        let s = Secret {
            realm: "r".into(),
            key_index: 0,
            value: "hunter2".into(),
            created_at: None,
        };
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{:?}", SecretRef::Value("hunter2")).contains("hunter2"));
    }

    #[test]
    fn from_db_ignores_wrong_lengths() {
        assert_eq!(StoredKeys::from_db(Some(&[0; 15]), None), None);
        assert_eq!(StoredKeys::from_db(None, None), None);
        let k = StoredKeys::from_db(Some(&[1; 16]), Some(&[2; 31])).unwrap();
        assert_eq!(k.md5, Some([1; 16]));
        assert_eq!(k.sha256, None);
    }

    #[test]
    fn unknown_realm_message_lists_known() {
        let e = StoreError::UnknownRealm {
            realm: "x".into(),
            known: vec!["a".into(), "b".into()],
        };
        assert_eq!(
            e.to_string(),
            r#"unknown realm "x": known realms are "a", "b""#
        );
    }
}
