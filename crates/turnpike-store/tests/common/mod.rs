//! Shared set-up for the store tests: the same test body runs against a
//! fresh SQLite file and a fresh PostgreSQL server.

#![allow(dead_code)] // each test binary uses a different part

use std::path::PathBuf;
use std::time::Duration;

use tempfile::TempDir;
use turnpike_store::testing::TestPostgres;
use turnpike_store::{Location, Schema, Store, StoreOptions};

/// A fresh, empty database of one kind.
#[derive(Debug)]
pub enum Db {
    Sqlite { _dir: TempDir, path: PathBuf },
    Postgres(TestPostgres),
}

impl Db {
    pub fn sqlite() -> Db {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("turnpike.db");
        Db::Sqlite { _dir: dir, path }
    }

    pub fn postgres() -> Db {
        Db::Postgres(TestPostgres::start())
    }

    pub fn location(&self) -> Location {
        match self {
            Db::Sqlite { path, .. } => Location::Sqlite(path.clone()),
            Db::Postgres(pg) => Location::Postgres(pg.url()),
        }
    }

    pub fn options(&self, schema: Schema) -> StoreOptions {
        StoreOptions {
            location: self.location(),
            schema,
            pool_size: 2,
            connect_timeout: Duration::from_secs(5),
            ca_file: None,
            create: true,
        }
    }

    /// Opens Turnpike's schema, panicking on error.
    pub async fn open(&self) -> Store {
        Store::open(self.options(Schema::Turnpike))
            .await
            .unwrap_or_else(|e| panic!("open {:?}: {e}", self.location()))
    }

    pub fn pg(&mut self) -> &mut TestPostgres {
        match self {
            Db::Postgres(pg) => pg,
            Db::Sqlite { .. } => panic!("not PostgreSQL"),
        }
    }

    /// The schema version recorded in the database, read behind the store's
    /// back.
    pub fn schema_version(&self) -> i64 {
        match self {
            Db::Sqlite { path, .. } => rusqlite::Connection::open(path)
                .unwrap()
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap(),
            Db::Postgres(pg) => pg
                .psql("SELECT version FROM turnpike_schema_version")
                .parse()
                .unwrap(),
        }
    }

    pub fn set_schema_version(&self, version: i64) {
        match self {
            Db::Sqlite { path, .. } => rusqlite::Connection::open(path)
                .unwrap()
                .pragma_update(None, "user_version", version)
                .unwrap(),
            Db::Postgres(pg) => {
                pg.psql(&format!(
                    "UPDATE turnpike_schema_version SET version = {version}"
                ));
            }
        }
    }

    /// Everything the database holds about users, as raw as it gets: the
    /// SQLite file and its write-ahead log byte for byte, or PostgreSQL's
    /// text rendering of every users row (bytea as hex).
    pub fn raw_users(&self) -> Vec<u8> {
        match self {
            Db::Sqlite { path, .. } => {
                let mut bytes = std::fs::read(path).unwrap();
                let mut wal = path.clone().into_os_string();
                wal.push("-wal");
                if let Ok(more) = std::fs::read(PathBuf::from(wal)) {
                    bytes.extend(more);
                }
                bytes
            }
            Db::Postgres(pg) => pg.psql("SELECT u::text FROM users u").into_bytes(),
        }
    }

    /// Runs SQL directly (set-up of foreign tables).
    pub fn execute_batch(&self, sql: &str) {
        match self {
            Db::Sqlite { path, .. } => rusqlite::Connection::open(path)
                .unwrap()
                .execute_batch(sql)
                .unwrap(),
            Db::Postgres(pg) => {
                pg.psql(sql);
            }
        }
    }
}

/// Generates `NAME::sqlite` and `NAME::postgres` tests running the async
/// function `NAME(db: Db)`.
#[macro_export]
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name(super::common::Db::sqlite()).await
                }
                #[tokio::test]
                async fn postgres() {
                    super::$name(super::common::Db::postgres()).await
                }
            }
        )*
    };
}
