//! Where the database is: parsing the `database.url` setting, and printing it
//! for logs and error messages without the password.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::StoreError;

/// Where a credential database is.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (`postgres://user:password@host:port/db`).
    Postgres(String),
}

const URL_FORMS: &str =
    "use a file path, sqlite:PATH, or postgres://USER:PASSWORD@HOST:PORT/DATABASE";

impl Location {
    /// Parses a `database.url` setting:
    ///
    /// - `""` → SQLite file `turnpike.db` in `data_dir`;
    /// - `sqlite:PATH`, `sqlite://PATH` or a bare path → that SQLite file
    ///   (`sqlite:///var/lib/x.db` is the absolute path `/var/lib/x.db`);
    /// - `postgres://…` or `postgresql://…` → PostgreSQL (the URL is checked
    ///   here, so that a typo is reported at configuration time).
    ///
    /// Anything else (another scheme) is [`StoreError::Invalid`].
    pub fn parse(url: &str, data_dir: &Path) -> Result<Location, StoreError> {
        // Surrounding whitespace is never meaningful here and easily slips in
        // through environment variables.
        let url = url.trim();
        if url.is_empty() {
            return Ok(Location::Sqlite(crate::default_sqlite_path(data_dir)));
        }
        let lower = url.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            return parse_postgres(url);
        }
        for prefix in ["sqlite://", "sqlite:"] {
            if lower.starts_with(prefix) {
                // The prefix is ASCII, so slicing at its length is on a char
                // boundary.
                let path = url.get(prefix.len()..).unwrap_or_default();
                if path.is_empty() {
                    return Err(StoreError::Invalid(format!(
                        "database URL {url:?} has no path: write e.g. sqlite:/var/lib/turnpike/turnpike.db"
                    )));
                }
                return Ok(Location::Sqlite(PathBuf::from(path)));
            }
        }
        if lower.starts_with("postgres:") || lower.starts_with("postgresql:") {
            return Err(StoreError::Invalid(format!(
                "database URL {} is not a URL: write postgres://USER:PASSWORD@HOST:PORT/DATABASE",
                redact_url(url)
            )));
        }
        if let Some((scheme, _)) = url.split_once("://") {
            // Only the scheme is shown: the rest may hold a password.
            return Err(StoreError::Invalid(format!(
                "unsupported database URL scheme {scheme:?}: {URL_FORMS}"
            )));
        }
        Ok(Location::Sqlite(PathBuf::from(url)))
    }

    /// The location for logs and messages: an SQLite path as is, a
    /// PostgreSQL URL with its password replaced by `***`
    /// (`postgres://turnpike:***@db.example:5432/turnpike`).
    pub fn redacted(&self) -> String {
        match self {
            Location::Sqlite(path) => path.display().to_string(),
            Location::Postgres(url) => redact_url(url),
        }
    }
}

/// Never shows a password.
impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Location::Postgres(_) => f.debug_tuple("Postgres").field(&self.redacted()).finish(),
        }
    }
}

/// Same as [`Location::redacted`].
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

fn parse_postgres(url: &str) -> Result<Location, StoreError> {
    // `sslmode=verify-ca|verify-full` and `sslrootcert` are ours, unknown to
    // tokio-postgres's parser.
    let url_tls = crate::postgres::tls::split_url(url).map_err(|e| {
        StoreError::Invalid(format!("invalid PostgreSQL URL {}: {e}", redact_url(url)))
    })?;
    let config = tokio_postgres::Config::from_str(&url_tls.rest).map_err(|e| {
        StoreError::Invalid(format!(
            "invalid PostgreSQL URL {}: {e}; write postgres://USER:PASSWORD@HOST:PORT/DATABASE",
            redact_url(url)
        ))
    })?;
    if config.get_hosts().is_empty() {
        return Err(StoreError::Invalid(format!(
            "PostgreSQL URL {} names no host: write postgres://USER:PASSWORD@HOST:PORT/DATABASE",
            redact_url(url)
        )));
    }
    Ok(Location::Postgres(url.to_owned()))
}

/// Replaces the password of a PostgreSQL URL, in the user info and in a
/// `password=` query parameter, by `***`. It errs on the side of hiding: a
/// password containing an unescaped `/`, `?` or `@` is still hidden because
/// the user info is taken to run up to the *last* `@`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<database URL>".to_owned();
    };
    let (authority_and_path, query) = match rest.rfind('@') {
        Some(at) => {
            let (userinfo, after) = (&rest[..at], &rest[at + 1..]);
            let user = match userinfo.split_once(':') {
                Some((user, _password)) => format!("{user}:***"),
                None => userinfo.to_owned(),
            };
            split_query(&format!("{user}@{after}"))
        }
        None => split_query(rest),
    };
    let mut out = format!("{scheme}://{authority_and_path}");
    if let Some(query) = query {
        out.push('?');
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => param.to_owned(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    out
}

fn split_query(s: &str) -> (String, Option<String>) {
    match s.split_once('?') {
        Some((before, query)) => (before.to_owned(), Some(query.to_owned())),
        None => (s.to_owned(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<Location, StoreError> {
        Location::parse(url, Path::new("/var/lib/turnpike"))
    }

    #[test]
    fn sqlite_forms() {
        let want = |p: &str| Ok::<_, ()>(Location::Sqlite(PathBuf::from(p)));
        assert_eq!(
            parse("").map_err(|_| ()),
            want("/var/lib/turnpike/turnpike.db")
        );
        assert_eq!(
            parse("  ").map_err(|_| ()),
            want("/var/lib/turnpike/turnpike.db")
        );
        assert_eq!(parse("sqlite:/x/y.db").map_err(|_| ()), want("/x/y.db"));
        assert_eq!(parse("sqlite:///x/y.db").map_err(|_| ()), want("/x/y.db"));
        assert_eq!(parse("sqlite://rel.db").map_err(|_| ()), want("rel.db"));
        assert_eq!(parse("SQLite:rel.db").map_err(|_| ()), want("rel.db"));
        assert_eq!(parse("/abs/t.db").map_err(|_| ()), want("/abs/t.db"));
        assert_eq!(parse("rel/t.db").map_err(|_| ()), want("rel/t.db"));
        assert!(matches!(parse("sqlite:"), Err(StoreError::Invalid(_))));
        assert!(matches!(parse("sqlite://"), Err(StoreError::Invalid(_))));
    }

    #[test]
    fn postgres_forms() {
        for url in [
            "postgres://turnpike:pw@127.0.0.1:5432/turnpike",
            "postgresql://turnpike@db.example/turnpike",
            "postgres://u:p@h1:5432,h2:5433/db?connect_timeout=3",
            "postgres://u:p@db.example/turnpike?sslmode=verify-full&sslrootcert=/etc/ca.pem",
            "postgres://u:p@db.example/turnpike?sslmode=verify-ca",
            "postgres://u:p@db.example/turnpike?sslmode=require&sslrootcert=system",
        ] {
            assert_eq!(
                parse(url).ok(),
                Some(Location::Postgres(url.to_owned())),
                "{url}"
            );
        }
        let e = parse("postgres://u:secret@h:notaport/db")
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid PostgreSQL URL"), "{e}");
        assert!(!e.contains("secret"), "{e}");
        let e = parse("postgres://u:secret@h/db?sslmode=verify")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown sslmode \"verify\""), "{e}");
        assert!(!e.contains("secret"), "{e}");
        let e = parse("postgres:u:secret@h").unwrap_err().to_string();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn other_schemes_are_refused_without_echoing_the_url() {
        let e = parse("mysql://root:hunter2@db/turn").unwrap_err();
        assert!(matches!(e, StoreError::Invalid(_)));
        let msg = e.to_string();
        assert!(msg.contains("\"mysql\""), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }

    #[test]
    fn redaction() {
        let r = |u: &str| Location::Postgres(u.to_owned()).redacted();
        assert_eq!(
            r("postgres://turnpike:pw@127.0.0.1:5432/turnpike"),
            "postgres://turnpike:***@127.0.0.1:5432/turnpike"
        );
        assert_eq!(r("postgres://turnpike@h/db"), "postgres://turnpike@h/db");
        assert_eq!(r("postgres://h/db"), "postgres://h/db");
        assert_eq!(
            r("postgres://h/db?user=u&password=pw&sslmode=disable"),
            "postgres://h/db?user=u&password=***&sslmode=disable"
        );
        // Unescaped separators in the password do not leak any of it.
        let tricky = r("postgres://u:p/a?s@s@h:5432/db");
        assert_eq!(tricky, "postgres://u:***@h:5432/db");
        assert!(!format!("{:?}", Location::Postgres("postgres://u:zz@h/d".into())).contains("zz"));
        assert_eq!(
            Location::Sqlite(PathBuf::from("/d/t.db")).redacted(),
            "/d/t.db"
        );
    }
}
