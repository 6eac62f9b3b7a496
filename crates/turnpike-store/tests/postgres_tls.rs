//! PostgreSQL over TLS against real servers: `sslmode` as libpq spells it,
//! the CA from `database.ca_file` or `sslrootcert`, the one-line errors,
//! and proof from the server's side (`pg_stat_ssl`) that the connection is
//! encrypted. Certificates are made for each test by the `openssl` command
//! in a temporary directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;
use turnpike_store::testing::{TestPostgres, TestPostgresOptions, TestPostgresTls};
use turnpike_store::{CredentialDb, Location, PostgresStore, StoreError, StoreOptions, StoredKeys};

const REALM: &str = "example.org";

/// A CA and the certificates it signed, in a temporary directory.
struct Ca {
    dir: TempDir,
    cert: PathBuf,
    key: PathBuf,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            s(&key),
            "-out",
            s(&cert),
            "-days",
            "30",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        Ca { dir, cert, key }
    }

    /// A server certificate for `san` (`DNS:localhost,IP:127.0.0.1`).
    fn server(&self, name: &str, san: &str) -> TestPostgresTls {
        let p = |ext: &str| self.dir.path().join(format!("{name}.{ext}"));
        let (key, csr, ext, cert) = (p("key"), p("csr"), p("ext"), p("crt"));
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            s(&key),
            "-out",
            s(&csr),
            "-subj",
            &format!("/CN={name}"),
        ]);
        std::fs::write(
            &ext,
            format!(
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName={san}\n"
            ),
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            s(&csr),
            "-CA",
            s(&self.cert),
            "-CAkey",
            s(&self.key),
            "-set_serial",
            "1000",
            "-days",
            "30",
            "-extfile",
            s(&ext),
            "-out",
            s(&cert),
        ]);
        TestPostgresTls {
            certificate: cert,
            private_key: key,
        }
    }
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tls_server(ca: &Ca, san: &str) -> TestPostgres {
    TestPostgres::start_with(TestPostgresOptions {
        tls: Some(ca.server("db", san)),
        ..TestPostgresOptions::default()
    })
}

/// The server's URL with `query` added, and `localhost` for 127.0.0.1 when
/// asked.
fn url(pg: &TestPostgres, host: &str, query: &str) -> String {
    let url = pg.url().replace("127.0.0.1", host);
    if query.is_empty() {
        url
    } else {
        format!("{url}?{query}")
    }
}

async fn open(url: &str, ca_file: Option<&Path>) -> Result<PostgresStore, StoreError> {
    PostgresStore::open(StoreOptions {
        pool_size: 1,
        connect_timeout: Duration::from_secs(10),
        ca_file: ca_file.map(Path::to_owned),
        ..StoreOptions::new(Location::Postgres(url.to_owned()))
    })
    .await
}

/// Opens, checks that a user written through the store is read back (the
/// store really works over this connection) and returns the TLS version
/// the server reports, `None` for plaintext.
async fn works(url: &str, ca_file: Option<&Path>) -> Option<String> {
    let store = open(url, ca_file)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    store.ensure_realm(REALM).await.unwrap();
    let keys = StoredKeys::from_password("alice", REALM, "pw");
    match store.add_user(REALM, "alice", &keys).await {
        Ok(()) | Err(StoreError::AlreadyExists(_)) => {}
        Err(e) => panic!("{url}: {e}"),
    }
    assert_eq!(
        store.user_keys(REALM, "alice").await.unwrap(),
        Some(keys),
        "{url}"
    );
    store.connection_tls_version().await.unwrap()
}

/// The one line a failed open gives (checked to be one line without the
/// password).
async fn fails(url: &str, ca_file: Option<&Path>) -> String {
    let e = open(url, ca_file)
        .await
        .err()
        .unwrap_or_else(|| panic!("{url} opened"));
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    let line = e.to_string();
    assert!(!line.contains('\n'), "{line}");
    assert!(!line.contains("turnpike-test-password"), "{line}");
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_the_right_ca_is_encrypted() {
    let ca = Ca::new("Right CA");
    let pg = tls_server(&ca, "DNS:localhost,IP:127.0.0.1");

    // database.ca_file, by IP address.
    let version = works(
        &url(&pg, "127.0.0.1", "sslmode=verify-full"),
        Some(&ca.cert),
    )
    .await;
    assert!(
        version.is_some_and(|v| v.starts_with("TLSv1.")),
        "not encrypted"
    );
    // sslrootcert, by name.
    let with_rootcert = format!("sslmode=verify-full&sslrootcert={}", s(&ca.cert));
    let version = works(&url(&pg, "localhost", &with_rootcert), None).await;
    assert!(version.is_some());
    // The same CA named both ways is fine.
    assert!(
        works(&url(&pg, "127.0.0.1", &with_rootcert), Some(&ca.cert))
            .await
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_a_wrong_ca_is_one_clear_line() {
    let ca = Ca::new("Right CA");
    let wrong = Ca::new("Wrong CA");
    let pg = tls_server(&ca, "DNS:localhost,IP:127.0.0.1");

    for mode in ["verify-full", "verify-ca"] {
        let url = url(&pg, "127.0.0.1", &format!("sslmode={mode}"));
        let line = fails(&url, Some(&wrong.cert)).await;
        let want = format!(
            "PostgreSQL at postgres://turnpike:***@127.0.0.1:{}/turnpike?sslmode={mode}: TLS certificate not trusted by CA file {} (",
            pg.port(),
            wrong.cert.display()
        );
        assert!(line.starts_with(&want), "{line}\nwant: {want}");
        assert!(
            line.ends_with("): check database.ca_file / sslrootcert"),
            "{line}"
        );
    }
    // `require` with a CA checks the chain too, as libpq does.
    let line = fails(&url(&pg, "127.0.0.1", "sslmode=require"), Some(&wrong.cert)).await;
    assert!(
        line.contains("TLS certificate not trusted by CA file"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_name_not_in_the_certificate_fails_verify_full_but_not_verify_ca() {
    let ca = Ca::new("Right CA");
    let pg = tls_server(&ca, "DNS:db.internal");

    let line = fails(
        &url(&pg, "127.0.0.1", "sslmode=verify-full"),
        Some(&ca.cert),
    )
    .await;
    assert!(
        line.contains("TLS certificate is not valid for host name \"127.0.0.1\""),
        "{line}"
    );
    assert!(line.contains("or sslmode=verify-ca"), "{line}");
    let line = fails(
        &url(&pg, "localhost", "sslmode=verify-full"),
        Some(&ca.cert),
    )
    .await;
    assert!(line.contains("host name \"localhost\""), "{line}");

    let version = works(&url(&pg, "127.0.0.1", "sslmode=verify-ca"), Some(&ca.cert)).await;
    assert!(version.is_some(), "verify-ca is encrypted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_and_prefer_encrypt_without_a_ca_and_no_sslmode_stays_plaintext() {
    let ca = Ca::new("Unknown CA");
    let pg = tls_server(&ca, "DNS:elsewhere.example");

    // Any certificate, any name: encrypted all the same.
    assert!(
        works(&url(&pg, "127.0.0.1", "sslmode=require"), None)
            .await
            .is_some()
    );
    assert!(
        works(&url(&pg, "127.0.0.1", "sslmode=prefer"), None)
            .await
            .is_some()
    );
    // No sslmode: today's plaintext, even though the server offers TLS
    // (libpq's default would be `prefer`).
    assert_eq!(works(&url(&pg, "127.0.0.1", ""), None).await, None);
    assert_eq!(
        works(&url(&pg, "127.0.0.1", "sslmode=disable"), Some(&ca.cert)).await,
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_tls_fails_require_clearly() {
    let ca = Ca::new("Right CA");
    let pg = TestPostgres::start();

    for mode in ["require", "verify-ca", "verify-full"] {
        let url = url(&pg, "127.0.0.1", &format!("sslmode={mode}"));
        let line = fails(&url, Some(&ca.cert)).await;
        let want = format!(
            "PostgreSQL at postgres://turnpike:***@127.0.0.1:{}/turnpike?sslmode={mode} does not offer TLS, which sslmode={mode} requires: ",
            pg.port()
        );
        assert!(line.starts_with(&want), "{line}\nwant: {want}");
    }
    // `prefer` falls back to plaintext.
    assert_eq!(
        works(&url(&pg, "127.0.0.1", "sslmode=prefer"), None).await,
        None
    );
}

/// With SCRAM over TLS, tokio-postgres uses SCRAM-SHA-256-PLUS when the
/// stream gives a channel binding: `channel_binding=require` fails unless
/// ours is there and the server agrees with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_over_tls_uses_channel_binding() {
    let ca = Ca::new("Right CA");
    let pg = TestPostgres::start_with(TestPostgresOptions {
        tls: Some(ca.server("db", "IP:127.0.0.1")),
        password_over_tcp: true,
    });
    let bound = "sslmode=verify-full&channel_binding=require";
    assert!(
        works(&url(&pg, "127.0.0.1", bound), Some(&ca.cert))
            .await
            .is_some()
    );
    // Without TLS there is nothing to bind to: the requirement fails, so
    // the success above really used the binding.
    let line = fails(
        &url(&pg, "127.0.0.1", "sslmode=disable&channel_binding=require"),
        None,
    )
    .await;
    assert!(line.contains("127.0.0.1"), "{line}");
    // And the password is really checked over TCP.
    let wrong = url(&pg, "127.0.0.1", "sslmode=require").replace("turnpike-test-password", "nope");
    let line = fails(&wrong, None).await;
    assert!(line.contains("cannot log in"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_ca_file_is_reported_before_connecting() {
    // No server at all: the file is read first.
    let missing = Path::new("/nonexistent/turnpike-ca.pem");
    let e = open(
        "postgres://u:pw@127.0.0.1:1/db?sslmode=verify-full",
        Some(missing),
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(e, StoreError::Invalid(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        "cannot read the CA file /nonexistent/turnpike-ca.pem (database.ca_file): No such file or directory; check the path and its permissions"
    );
}
