//! TLS certificates (`turnpike::tls`) against real certificates made by the
//! `openssl` command (tests/support/pki.rs): every supported key type and
//! file layout, the one-line errors, reloads that keep the old certificate
//! on errors and leave established connections alone, the watcher, and
//! real clients — rustls through tokio-rustls, and `openssl s_client` for
//! protocol versions, the served chain and ALPN (RFC 7443).
//!
//! Everything runs on 127.0.0.1 with time limits.

mod support;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use turnpike::config::{TlsSettings, TlsVersion};
use turnpike::tls::{CertError, Certificates, ReloadCause, describe_reload, expiry_warning};

use support::cli::run;
use support::pki::{KeyType, Leaf, Pki};

/// Time limit for one network step (connect, handshake, echo).
const STEP: Duration = Duration::from_secs(10);

fn config(certificate: &Path, private_key: Option<&Path>) -> TlsSettings {
    TlsSettings {
        certificate: Some(certificate.to_owned()),
        private_key: private_key.map(Path::to_owned),
        ..TlsSettings::default()
    }
}

/// Separate chain and key files.
fn separate(leaf: &Leaf) -> TlsSettings {
    config(&leaf.chain, Some(&leaf.key))
}

fn load(tls: &TlsSettings) -> Arc<Certificates> {
    match Certificates::load(tls) {
        Ok(certs) => certs,
        Err(err) => panic!("load {tls:?}: {err}"),
    }
}

fn load_error(tls: &TlsSettings) -> String {
    match Certificates::load(tls) {
        Ok(certs) => panic!("expected an error for {tls:?}, loaded {certs:?}"),
        Err(err) => {
            let text = err.to_string();
            assert!(!text.contains('\n'), "{text}");
            text
        }
    }
}

/// Copies `from` over `to` through a new file and a rename, as certbot and
/// most deployment tools do.
fn replace(to: &Path, from: &Path) {
    replace_with(to, &Leaf::read(from));
}

fn replace_with(to: &Path, contents: &[u8]) {
    let tmp = to.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

/// The files a running server is configured with, in their own directory
/// so they can be overwritten.
struct Live {
    chain: PathBuf,
    key: PathBuf,
}

impl Live {
    fn new(pki: &Pki, leaf: &Leaf) -> Live {
        let dir = pki.dir().join("live");
        std::fs::create_dir_all(&dir).unwrap();
        let live = Live {
            chain: dir.join("fullchain.pem"),
            key: dir.join("privkey.pem"),
        };
        live.install(leaf);
        live
    }

    fn install(&self, leaf: &Leaf) {
        replace(&self.chain, &leaf.chain);
        replace(&self.key, &leaf.key);
    }

    fn config(&self) -> TlsSettings {
        config(&self.chain, Some(&self.key))
    }
}

fn not_after_in_days(certs: &Certificates) -> f64 {
    let left = certs
        .not_after()
        .duration_since(SystemTime::now())
        .expect("not expired");
    left.as_secs_f64() / 86_400.0
}

// ---------------------------------------------------------------------------
// A client and an echo server.

fn client_config(pki: &Pki, versions: &[TlsVersion], alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(support::pki::der_of(pki.root())))
        .unwrap();
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = versions
        .iter()
        .map(|v| match v {
            TlsVersion::Tls12 => &rustls::version::TLS12,
            TlsVersion::Tls13 => &rustls::version::TLS13,
        })
        .collect();
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

type ClientStream = tokio_rustls::client::TlsStream<TcpStream>;

/// Connects and completes a handshake, verifying the server as `name`.
async fn connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    name: &str,
) -> std::io::Result<ClientStream> {
    let name = ServerName::try_from(name.to_owned()).unwrap();
    tokio::time::timeout(STEP, async move {
        let tcp = TcpStream::connect(addr).await?;
        tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
    })
    .await
    .expect("handshake within the time limit")
}

/// The certificates the server presented.
fn presented(stream: &ClientStream) -> Vec<Vec<u8>> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("server certificates")
        .iter()
        .map(|c| c.as_ref().to_vec())
        .collect()
}

async fn echo_round_trip(stream: &mut ClientStream, message: &[u8]) {
    tokio::time::timeout(STEP, async {
        stream.write_all(message).await.unwrap();
        stream.flush().await.unwrap();
        let mut back = vec![0; message.len()];
        stream.read_exact(&mut back).await.unwrap();
        assert_eq!(back, message);
    })
    .await
    .expect("echo within the time limit");
}

/// An echo server on 127.0.0.1 using `certs.acceptor()`, on the current
/// runtime, until the runtime ends.
async fn echo_server(certs: &Certificates) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = certs.acceptor();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(Ok(mut tls)) = tokio::time::timeout(STEP, acceptor.accept(tcp)).await else {
                    return;
                };
                let mut buf = vec![0; 4096];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    let _ = tls.flush().await;
                }
            });
        }
    });
    addr
}

/// The same server on a runtime of its own, for tests that block (on the
/// `openssl` command).
fn echo_server_thread(certs: &Certificates) -> (tokio::runtime::Runtime, SocketAddr) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let addr = runtime.block_on(echo_server(certs));
    (runtime, addr)
}

// ---------------------------------------------------------------------------
// Loading.

/// Every supported key type and PEM format, with the key in its own file
/// and after the chain in one file: the subject, expiry and chain are read,
/// the PEM for the DTLS side is what OpenSSL reads, and rustls clients
/// complete TLS 1.2 and 1.3 handshakes that verify the served chain.
#[tokio::test]
async fn every_key_type_and_layout_loads_and_serves() {
    let pki = Pki::new();
    for (i, key_type) in KeyType::SUPPORTED.into_iter().enumerate() {
        let leaf = pki.leaf(&format!("k{i}.turn.test"), key_type, 10 + i as u32);
        for (layout, tls) in [
            ("separate", separate(&leaf)),
            ("combined", config(&leaf.combined, None)),
        ] {
            let what = format!("{key_type:?} {layout}");
            let certs = load(&tls);
            assert_eq!(
                certs.subject(),
                format!("CN={}, O=Turnpike Tests", leaf.name),
                "{what}"
            );
            let days = not_after_in_days(&certs);
            let want = 10.0 + i as f64;
            assert!((want - 1.0..=want).contains(&days), "{what}: {days}");
            assert_eq!(certs.generation(), 0, "{what}");
            assert_eq!(certs.chain_len(), 2, "{what}");
            assert_eq!(certs.leaf().as_ref(), leaf.der.as_slice(), "{what}");
            assert!(certs.summary().starts_with(&format!(
                "subject CN={}, O=Turnpike Tests, expires ",
                leaf.name
            )));
            assert!(certs.summary().ends_with(" days), 2 certificates"));

            // The PEM pair: the same chain, the key in its own format, and
            // both readable by OpenSSL (the DTLS side).
            let pem = certs.pem();
            let chain: Vec<_> = CertificateDer::pem_slice_iter(&pem.chain)
                .map(|c| c.unwrap().as_ref().to_vec())
                .collect();
            assert_eq!(
                chain,
                vec![leaf.der.clone(), pki.intermediate_der().to_vec()]
            );
            let label = format!("-----BEGIN {}-----\n", key_type.pem_label());
            assert!(pem.key.starts_with(label.as_bytes()), "{what}");
            let dir = tempfile::tempdir().unwrap();
            let (chain_file, key_file) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
            std::fs::write(&chain_file, &pem.chain).unwrap();
            std::fs::write(&key_file, &pem.key).unwrap();
            let check = Command::new("openssl")
                .args(["x509", "-noout", "-checkend", "0", "-in"])
                .arg(&chain_file)
                .status()
                .unwrap();
            assert!(check.success(), "{what}");
            let check = Command::new("openssl")
                .args(["pkey", "-noout", "-in"])
                .arg(&key_file)
                .status()
                .unwrap();
            assert!(check.success(), "{what}");

            let addr = echo_server(&certs).await;
            for version in [TlsVersion::Tls12, TlsVersion::Tls13] {
                let client = client_config(&pki, &[version], &[]);
                let mut stream = connect(addr, client, &leaf.name)
                    .await
                    .unwrap_or_else(|e| panic!("{what} TLS {version}: {e}"));
                assert_eq!(
                    presented(&stream),
                    vec![leaf.der.clone(), pki.intermediate_der().to_vec()],
                    "{what} TLS {version}: the leaf and the intermediate"
                );
                echo_round_trip(&mut stream, format!("hello {what}").as_bytes()).await;
            }
        }
    }
}

/// The key may come first in the combined file; other PEM blocks (a CSR)
/// are ignored; a key in the certificate file is ignored when
/// `private_key` names another file.
#[test]
fn lenient_layouts() {
    let pki = Pki::new();
    let leaf = pki.leaf("a.turn.test", KeyType::EcP256Sec1, 10);
    let other = pki.leaf("b.turn.test", KeyType::EcP256Sec1, 10);
    let dir = pki.dir();

    let key_first = dir.join("key-first.pem");
    std::fs::write(
        &key_first,
        [Leaf::read(&leaf.key), Leaf::read(&leaf.chain)].concat(),
    )
    .unwrap();
    assert_eq!(load(&config(&key_first, None)).leaf().as_ref(), leaf.der);

    let with_csr = dir.join("with-csr.pem");
    std::fs::write(
        &with_csr,
        [
            Leaf::read(&leaf.combined),
            Leaf::read(&dir.join("a.turn.test.csr")),
            b"some comment\n".to_vec(),
        ]
        .concat(),
    )
    .unwrap();
    assert_eq!(load(&config(&with_csr, None)).leaf().as_ref(), leaf.der);

    // other.combined holds other's key, but private_key wins.
    let mixed = dir.join("mixed.pem");
    std::fs::write(
        &mixed,
        [Leaf::read(&leaf.chain), Leaf::read(&other.key)].concat(),
    )
    .unwrap();
    assert_eq!(
        load(&config(&mixed, Some(&leaf.key))).leaf().as_ref(),
        leaf.der
    );
    // Without the leaf's own key it does not match.
    assert!(load_error(&config(&mixed, None)).contains("does not match its certificate"));
    // A leaf on its own (no intermediate) is served as it is.
    let certs = load(&config(&leaf.cert, Some(&leaf.key)));
    assert_eq!(certs.chain_len(), 1);
    assert!(certs.summary().ends_with(", 1 certificate"));
}

/// Every way the files can be wrong gives one line naming the file and
/// what to do.
#[test]
fn errors_say_what_is_wrong_and_how_to_fix_it() {
    let pki = Pki::new();
    let leaf = pki.leaf("a.turn.test", KeyType::RsaPkcs8, 10);
    let other = pki.leaf("b.turn.test", KeyType::EcP256Pkcs8, 10);
    let k1 = pki.leaf("k1.turn.test", KeyType::Secp256k1, 10);
    let short = pki.leaf("short.turn.test", KeyType::Rsa1024, 10);
    let dir = pki.dir();
    let write = |name: &str, contents: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    };
    let s = |p: &Path| p.display().to_string();

    let missing = dir.join("missing.pem");
    let empty = write("empty.pem", b"");
    let text = write("text.pem", b"this is not a certificate\n");
    let der = write("leaf.der", &leaf.der);
    let truncated = write(
        "truncated.pem",
        &Leaf::read(&leaf.chain)[..Leaf::read(&leaf.cert).len() / 2],
    );
    let bad_base64 = write(
        "bad-base64.pem",
        b"-----BEGIN CERTIFICATE-----\n@@@@\n-----END CERTIFICATE-----\n",
    );
    let not_x509 = write(
        "not-x509.pem",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    let reversed = write(
        "reversed.pem",
        &[
            std::fs::read(dir.join("intermediate.pem")).unwrap(),
            Leaf::read(&leaf.cert),
        ]
        .concat(),
    );
    let two_keys = write(
        "two-keys.pem",
        &[Leaf::read(&leaf.combined), Leaf::read(&other.key)].concat(),
    );
    let encrypted = dir.join("encrypted.key");
    support::pki::openssl(&[
        "pkey",
        "-in",
        &s(&leaf.key),
        "-aes256",
        "-passout",
        "pass:x",
        "-out",
        &s(&encrypted),
    ]);
    let legacy_encrypted = dir.join("legacy-encrypted.key");
    support::pki::openssl(&[
        "rsa",
        "-in",
        &s(&leaf.key),
        "-traditional",
        "-aes256",
        "-passout",
        "pass:x",
        "-out",
        &s(&legacy_encrypted),
    ]);
    let huge = write("huge.pem", &vec![b'A'; 2 << 20]);

    let cases: Vec<(TlsSettings, String)> = vec![
        (
            TlsSettings::default(),
            "tls.certificate is not set; set it to the PEM certificate chain to serve TLS and DTLS"
                .into(),
        ),
        (
            config(&missing, None),
            format!(
                "cannot read TLS certificate {}: No such file or directory; check tls.certificate",
                s(&missing)
            ),
        ),
        (
            config(&leaf.chain, Some(&missing)),
            format!(
                "cannot read TLS private key {}: No such file or directory; check tls.private_key",
                s(&missing)
            ),
        ),
        (
            config(dir, None),
            format!(
                "cannot read TLS certificate {}: Is a directory; check tls.certificate",
                s(dir)
            ),
        ),
        (
            config(&empty, None),
            format!(
                "no certificate in {}; tls.certificate must be a PEM file with the server certificate first, then its intermediates",
                s(&empty)
            ),
        ),
        (
            config(&text, Some(&leaf.key)),
            format!("no certificate in {};", s(&text)),
        ),
        (
            config(&der, Some(&leaf.key)),
            format!(
                "no certificate in {} (it looks like binary DER: convert it with `openssl x509 -inform der -in FILE -out FILE.pem`);",
                s(&der)
            ),
        ),
        (
            config(&truncated, Some(&leaf.key)),
            format!(
                "TLS certificate {} is not valid PEM (no \"-----END CERTIFICATE-----\" line); check tls.certificate",
                s(&truncated)
            ),
        ),
        (
            config(&bad_base64, Some(&leaf.key)),
            format!(
                "TLS certificate {} is not valid PEM (bad base64",
                s(&bad_base64)
            ),
        ),
        (
            config(&not_x509, Some(&leaf.key)),
            format!(
                "certificate 1 in {} is not a valid X.509 certificate (",
                s(&not_x509)
            ),
        ),
        (
            config(&leaf.chain, None),
            format!("no private key in {}; set tls.private_key", s(&leaf.chain)),
        ),
        (
            config(&leaf.chain, Some(&leaf.chain)),
            format!(
                "no private key in {}; check tls.private_key",
                s(&leaf.chain)
            ),
        ),
        (
            config(&leaf.chain, Some(&other.key)),
            format!(
                "tls.private_key {} does not match the certificate {}",
                s(&other.key),
                s(&leaf.chain)
            ),
        ),
        (
            config(
                &write(
                    "wrong-combined.pem",
                    &[Leaf::read(&leaf.chain), Leaf::read(&other.key)].concat(),
                ),
                None,
            ),
            "does not match its certificate; put the server's own key there or set tls.private_key"
                .into(),
        ),
        (
            config(&reversed, Some(&leaf.key)),
            format!(
                "the private key belongs to certificate 2 of {}, not to the first; put the server certificate first, then its intermediates",
                s(&reversed)
            ),
        ),
        (
            config(&two_keys, None),
            format!(
                "{} holds 2 private keys; keep only the server's",
                s(&two_keys)
            ),
        ),
        (
            config(&leaf.chain, Some(&encrypted)),
            format!(
                "the private key in {} is encrypted; Turnpike cannot ask for a passphrase, so store it decrypted (`openssl pkey -in KEY -out KEY.plain`), readable only by turnpike",
                s(&encrypted)
            ),
        ),
        (
            config(&leaf.chain, Some(&legacy_encrypted)),
            format!("the private key in {} is encrypted;", s(&legacy_encrypted)),
        ),
        (
            separate(&k1),
            format!("the private key in {} is not usable (", s(&k1.key)),
        ),
        (
            separate(&short),
            "); use an RSA (2048 bits or more), ECDSA P-256 or P-384, or Ed25519 key".into(),
        ),
        (
            config(&huge, None),
            format!(
                "TLS certificate {} is larger than 1 MiB, which no PEM certificate file is; check tls.certificate",
                s(&huge)
            ),
        ),
    ];
    for (tls, needle) in cases {
        let message = load_error(&tls);
        assert!(
            message.contains(&needle),
            "{tls:?}:\n  got  {message}\n  want {needle}"
        );
    }
}

// ---------------------------------------------------------------------------
// Reloading.

/// `reload` picks up a new certificate (generation, expiry, subject, PEM
/// and the served leaf change), reports unchanged files as such, and keeps
/// serving the previous certificate whatever is wrong with the new files.
#[test]
fn reload_swaps_and_keeps_the_old_certificate_on_errors() {
    let pki = Pki::new();
    let a = pki.leaf("a.turn.test", KeyType::RsaPkcs1, 10);
    let b = pki.leaf("b.turn.test", KeyType::EcP384Sec1, 20);
    let c = pki.leaf("c.turn.test", KeyType::Ed25519, 30);
    let live = Live::new(&pki, &a);
    let certs = load(&live.config());
    let a_pem = certs.pem();
    assert_eq!(certs.subject(), "CN=a.turn.test, O=Turnpike Tests");

    assert!(!certs.reload().unwrap(), "same files: unchanged");
    // Rewritten with the same contents: still unchanged.
    live.install(&a);
    assert!(!certs.reload().unwrap());
    assert_eq!(certs.generation(), 0);

    live.install(&b);
    assert!(certs.reload().unwrap());
    assert_eq!(certs.generation(), 1);
    assert_eq!(certs.subject(), "CN=b.turn.test, O=Turnpike Tests");
    assert!((19.0..=20.0).contains(&not_after_in_days(&certs)));
    assert_eq!(certs.leaf().as_ref(), b.der);
    let (generation, b_pem) = certs.pem_with_generation();
    assert_eq!(generation, 1);
    assert_ne!(b_pem.chain, a_pem.chain);
    assert!(b_pem.key.starts_with(b"-----BEGIN EC PRIVATE KEY-----"));

    let still_b = |certs: &Certificates, what: &str| {
        assert_eq!(certs.generation(), 1, "{what}");
        assert_eq!(
            certs.subject(),
            "CN=b.turn.test, O=Turnpike Tests",
            "{what}"
        );
        assert_eq!(certs.leaf().as_ref(), b.der, "{what}");
        assert_eq!(certs.pem().key, b_pem.key, "{what}");
    };
    // C's certificate with B's key (a renewal half written).
    replace(&live.chain, &c.chain);
    let err = certs.reload().unwrap_err();
    assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");
    still_b(&certs, "mismatched key");
    // Garbage, an empty file, a truncated one, a missing one.
    for (what, contents) in [
        ("garbage", b"garbage\n".to_vec()),
        ("empty", Vec::new()),
        ("truncated", Leaf::read(&c.chain)[..100].to_vec()),
    ] {
        replace_with(&live.chain, &contents);
        assert!(certs.reload().is_err(), "{what}");
        still_b(&certs, what);
    }
    replace(&live.chain, &c.chain);
    std::fs::remove_file(&live.key).unwrap();
    let err = certs.reload().unwrap_err();
    assert!(matches!(err, CertError::Read { .. }), "{err}");
    still_b(&certs, "missing key");

    live.install(&c);
    assert!(certs.reload().unwrap());
    assert_eq!(certs.generation(), 2);
    assert_eq!(certs.subject(), "CN=c.turn.test, O=Turnpike Tests");
    assert!((29.0..=30.0).contains(&not_after_in_days(&certs)));
    // The old PEM pair is still intact for whoever holds it.
    assert!(a_pem.key.starts_with(b"-----BEGIN RSA PRIVATE KEY-----"));
}

/// A connection established before a reload keeps working after it (it
/// holds its own session keys), while new connections get the new leaf;
/// a failed reload changes nothing for either.
#[tokio::test]
async fn reload_applies_to_new_handshakes_and_established_connections_keep_working() {
    let pki = Pki::new();
    let a = pki.leaf("a.turn.test", KeyType::RsaPkcs8, 10);
    let b = pki.leaf("b.turn.test", KeyType::EcP256Pkcs8, 20);
    let live = Live::new(&pki, &a);
    let certs = load(&live.config());
    let addr = echo_server(&certs).await;
    // Clients that trust the root and accept either name (by IP). Each
    // connection gets a fresh client configuration: one that remembered a
    // session would resume it, and a resumed session is not given a
    // certificate at all.
    let tls12 = || client_config(&pki, &[TlsVersion::Tls12], &[]);
    let tls13 = || client_config(&pki, &[TlsVersion::Tls13], &[]);

    let mut old12 = connect(addr, tls12(), "127.0.0.1").await.unwrap();
    let mut old13 = connect(addr, tls13(), "127.0.0.1").await.unwrap();
    assert_eq!(presented(&old12)[0], a.der);
    assert_eq!(presented(&old13)[0], a.der);
    echo_round_trip(&mut old12, b"before the reload, 1.2").await;
    echo_round_trip(&mut old13, b"before the reload, 1.3").await;

    live.install(&b);
    assert!(certs.reload().unwrap());

    for config in [tls12(), tls13()] {
        let mut new = connect(addr, config, "127.0.0.1").await.unwrap();
        assert_eq!(
            presented(&new),
            vec![b.der.clone(), pki.intermediate_der().to_vec()]
        );
        echo_round_trip(&mut new, b"a new connection").await;
    }
    for i in 0..3 {
        echo_round_trip(&mut old12, format!("after the reload {i}, 1.2").as_bytes()).await;
        echo_round_trip(&mut old13, format!("after the reload {i}, 1.3").as_bytes()).await;
    }
    // The old connections still see the certificate they were given.
    assert_eq!(presented(&old12)[0], a.der);

    // A broken renewal: new connections keep getting B, old ones keep
    // working.
    replace_with(&live.key, b"not a key\n");
    assert!(certs.reload().is_err());
    let mut new = connect(addr, tls13(), "127.0.0.1").await.unwrap();
    assert_eq!(presented(&new)[0], b.der);
    echo_round_trip(&mut new, b"still b").await;
    echo_round_trip(&mut old13, b"still working").await;
}

/// `watch` reloads files that changed (once they hold still), keeps the
/// old certificate while they are broken, and reloads on request.
#[tokio::test]
async fn watch_reloads_changed_files_and_on_request() {
    let pki = Pki::new();
    let a = pki.leaf("a.turn.test", KeyType::EcP256Sec1, 10);
    let b = pki.leaf("b.turn.test", KeyType::EcP256Sec1, 20);
    let c = pki.leaf("c.turn.test", KeyType::EcP256Sec1, 30);
    let live = Live::new(&pki, &a);
    let certs = load(&live.config());
    let (_requests, trigger) = tokio::sync::mpsc::channel::<()>(1);
    let watcher = tokio::spawn(turnpike::tls::watch(
        Arc::clone(&certs),
        Some(Duration::from_millis(20)),
        trigger,
    ));

    async fn wait_for(certs: &Certificates, generation: u64) {
        let deadline = Instant::now() + STEP;
        while certs.generation() != generation {
            assert!(
                Instant::now() < deadline,
                "generation {generation} not reached: {certs:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    live.install(&b);
    wait_for(&certs, 1).await;
    assert_eq!(certs.subject(), "CN=b.turn.test, O=Turnpike Tests");

    // Broken files: polled, refused, not retried, old one kept.
    replace_with(&live.chain, b"broken\n");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(certs.generation(), 1);
    assert_eq!(certs.leaf().as_ref(), b.der);

    // Overwritten in place (same inode) rather than renamed.
    std::fs::write(&live.chain, Leaf::read(&c.chain)).unwrap();
    std::fs::write(&live.key, Leaf::read(&c.key)).unwrap();
    wait_for(&certs, 2).await;
    assert_eq!(certs.leaf().as_ref(), c.der);
    watcher.abort();

    // Without polling, only a request reloads.
    let live = Live {
        chain: pki.dir().join("live2-chain.pem"),
        key: pki.dir().join("live2-key.pem"),
    };
    live.install(&a);
    let certs = load(&live.config());
    let (requests, trigger) = tokio::sync::mpsc::channel::<()>(1);
    let watcher = tokio::spawn(turnpike::tls::watch(Arc::clone(&certs), None, trigger));
    live.install(&b);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(certs.generation(), 0, "no polling");
    requests.send(()).await.unwrap();
    wait_for(&certs, 1).await;
    assert_eq!(certs.leaf().as_ref(), b.der);
    // A closed trigger ends nothing.
    drop(requests);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!watcher.is_finished());
    watcher.abort();
}

/// The lines `watch` logs for each outcome, and the expiry warnings.
#[test]
fn reload_log_lines() {
    let pki = Pki::new();
    let a = pki.leaf("a.turn.test", KeyType::EcP256Sec1, 5);
    let b = pki.leaf("b.turn.test", KeyType::EcP256Sec1, 60);
    let live = Live::new(&pki, &a);
    let certs = load(&live.config());

    let (level, line) = describe_reload(&certs, ReloadCause::Requested, &Ok(false));
    assert_eq!(level, tracing::Level::INFO);
    assert!(
        line.starts_with(
            "TLS certificate unchanged: subject CN=a.turn.test, O=Turnpike Tests, expires "
        ),
        "{line}"
    );
    let (level, _) = describe_reload(&certs, ReloadCause::FilesChanged, &Ok(false));
    assert_eq!(level, tracing::Level::DEBUG);

    let warning = expiry_warning(&certs, SystemTime::now()).expect("5 days left");
    assert!(warning.starts_with("TLS certificate expires "), "{warning}");
    assert!(
        warning.ends_with("(subject CN=a.turn.test, O=Turnpike Tests); renew it"),
        "{warning}"
    );
    let later = SystemTime::now() + Duration::from_secs(7 * 86_400);
    let warning = expiry_warning(&certs, later).expect("expired by then");
    assert!(warning.starts_with("TLS certificate EXPIRED "), "{warning}");
    assert!(
        warning.ends_with("clients refuse it; renew it"),
        "{warning}"
    );

    live.install(&b);
    let outcome = certs.reload();
    let (level, line) = describe_reload(&certs, ReloadCause::FilesChanged, &outcome);
    assert_eq!(level, tracing::Level::INFO);
    assert!(
        line.starts_with(
            "TLS certificate reloaded: subject CN=b.turn.test, O=Turnpike Tests, expires "
        ),
        "{line}"
    );
    assert!(
        line.ends_with("(in 59 days)") || line.ends_with("(in 60 days)"),
        "{line}"
    );
    assert_eq!(expiry_warning(&certs, SystemTime::now()), None);

    replace(&live.key, &a.key);
    let outcome = certs.reload();
    let (level, line) = describe_reload(&certs, ReloadCause::FilesChanged, &outcome);
    assert_eq!(level, tracing::Level::ERROR);
    assert!(
        line.starts_with(&format!(
            "TLS certificate not reloaded: tls.private_key {} does not match the certificate {}; still serving the previous one (subject CN=b.turn.test, O=Turnpike Tests, expires ",
            live.key.display(),
            live.chain.display()
        )),
        "{line}"
    );
    assert!(!line.contains('\n'));
}

// ---------------------------------------------------------------------------
// Versions and ALPN with rustls clients.

#[tokio::test]
async fn minimum_version() {
    let pki = Pki::new();
    let leaf = pki.leaf("a.turn.test", KeyType::EcP256Pkcs8, 10);
    let tls12_only = client_config(&pki, &[TlsVersion::Tls12], &[]);
    let tls13_only = client_config(&pki, &[TlsVersion::Tls13], &[]);

    let default = load(&separate(&leaf));
    let addr = echo_server(&default).await;
    let stream = connect(addr, tls12_only.clone(), "a.turn.test")
        .await
        .unwrap();
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );

    let strict = load(&TlsSettings {
        min_version: TlsVersion::Tls13,
        ..separate(&leaf)
    });
    let addr = echo_server(&strict).await;
    let err = connect(addr, tls12_only, "a.turn.test").await.unwrap_err();
    assert!(err.to_string().contains("ProtocolVersion"), "{err}");
    let stream = connect(addr, tls13_only, "a.turn.test").await.unwrap();
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}

/// RFC 7443 ALPN: either STUN protocol is negotiated when offered, clients
/// without ALPN connect without it, and clients offering only unrelated
/// protocols are refused (RFC 7301 section 3.2).
#[tokio::test]
async fn alpn_is_accepted_but_not_required() {
    let pki = Pki::new();
    let leaf = pki.leaf("a.turn.test", KeyType::EcP256Pkcs8, 10);
    let certs = load(&separate(&leaf));
    let addr = echo_server(&certs).await;
    let both = [TlsVersion::Tls12, TlsVersion::Tls13];
    let (turn, discovery, h2) = (
        b"stun.turn".as_slice(),
        b"stun.nat-discovery".as_slice(),
        b"h2".as_slice(),
    );
    /// Offered by the client, negotiated.
    type Case<'a> = (&'a [&'a [u8]], Option<&'a [u8]>);
    let cases: [Case; 4] = [
        (&[turn], Some(turn)),
        (&[discovery], Some(discovery)),
        (&[h2, turn], Some(turn)),
        (&[], None),
    ];
    for (offered, want) in cases {
        for version in both {
            let client = client_config(&pki, &[version], offered);
            let mut stream = connect(addr, client, "a.turn.test").await.unwrap();
            assert_eq!(
                stream.get_ref().1.alpn_protocol(),
                want,
                "{offered:?} {version}"
            );
            echo_round_trip(&mut stream, b"alpn").await;
        }
    }
    let client = client_config(&pki, &both, &[h2]);
    let err = connect(addr, client, "a.turn.test").await.unwrap_err();
    assert!(err.to_string().contains("NoApplicationProtocol"), "{err}");
}

// ---------------------------------------------------------------------------
// openssl s_client.

/// Runs `openssl s_client` against `addr` with no input (so it closes
/// after the handshake) and a time limit; returns whether it succeeded
/// and everything it printed.
fn s_client(addr: SocketAddr, pki: &Pki, args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut child = Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .arg("-CAfile")
        .arg(pki.root())
        .args(["-verify_return_error", "-servername", "a.turn.test"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("run openssl s_client (Debian package openssl)");
    let deadline = Instant::now() + STEP;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("openssl s_client {args:?} did not finish within {STEP:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let output = std::fs::read_to_string(&out_path).unwrap();
    (status.success(), output)
}

fn s_client_server() -> (Pki, Leaf, tokio::runtime::Runtime, SocketAddr) {
    let pki = Pki::new();
    let leaf = pki.leaf("a.turn.test", KeyType::RsaPkcs8, 10);
    let certs = load(&separate(&leaf));
    let (runtime, addr) = echo_server_thread(&certs);
    (pki, leaf, runtime, addr)
}

#[test]
fn openssl_s_client_tls12_and_tls13_accepted() {
    let (pki, _leaf, _runtime, addr) = s_client_server();
    for (flag, version) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let (ok, output) = s_client(addr, &pki, &[flag]);
        assert!(ok, "{flag}: {output}");
        assert!(
            output.contains(&format!("New, {version}, Cipher is ")),
            "{flag}: {output}"
        );
        assert!(
            output.contains("Verify return code: 0 (ok)"),
            "{flag}: {output}"
        );
    }
}

/// TLS 1.0 and 1.1 are refused by the server itself: the client is allowed
/// to offer them (security level 0, since OpenSSL 3 will not by default),
/// sends its hello, and gets an alert back instead of a certificate.
#[test]
fn openssl_s_client_tls10_and_tls11_refused() {
    let (pki, _leaf, _runtime, addr) = s_client_server();
    for (flag, version) in [("-tls1", "TLSv1\n"), ("-tls1_1", "TLSv1.1\n")] {
        let (ok, output) = s_client(addr, &pki, &[flag, "-cipher", "DEFAULT:@SECLEVEL=0"]);
        assert!(!ok, "{flag}: {output}");
        assert!(
            output.contains(&format!("Protocol  : {version}")),
            "{flag}: the client must have tried {version}: {output}"
        );
        assert!(
            output.contains("SSL alert number") && output.contains("no peer certificate available"),
            "{flag}: the server must refuse it with an alert: {output}"
        );
        assert!(!output.contains("written 0 bytes"), "{flag}: {output}");
    }
}

/// The chain is served (leaf, then intermediate) and verifies against the
/// root; ALPN stun.turn is negotiated when asked for, nothing otherwise.
#[test]
fn openssl_s_client_sees_the_chain_and_alpn() {
    let (pki, _leaf, _runtime, addr) = s_client_server();
    let (ok, output) = s_client(addr, &pki, &["-showcerts", "-alpn", "stun.turn"]);
    assert!(ok, "{output}");
    assert_eq!(
        output.matches("-----BEGIN CERTIFICATE-----").count(),
        2,
        "{output}"
    );
    assert!(
        output.contains(" 0 s:CN = a.turn.test, O = Turnpike Tests"),
        "{output}"
    );
    assert!(
        output.contains("   i:CN = Turnpike Test Intermediate"),
        "{output}"
    );
    assert!(
        output.contains(" 1 s:CN = Turnpike Test Intermediate"),
        "{output}"
    );
    assert!(output.contains("   i:CN = Turnpike Test Root"), "{output}");
    assert!(output.contains("Verify return code: 0 (ok)"), "{output}");
    assert!(output.contains("ALPN protocol: stun.turn"), "{output}");

    let (ok, output) = s_client(addr, &pki, &["-alpn", "stun.nat-discovery"]);
    assert!(
        ok && output.contains("ALPN protocol: stun.nat-discovery"),
        "{output}"
    );
    let (ok, output) = s_client(addr, &pki, &[]);
    assert!(ok && output.contains("No ALPN negotiated"), "{output}");
}

// ---------------------------------------------------------------------------
// check-config.

/// `check-config` loads the certificate and prints its subject and expiry
/// on a second line, or the one-line error (exit 2, nothing on stdout).
#[test]
fn check_config_checks_the_certificate() {
    let pki = Pki::new();
    let leaf = pki.leaf("a.turn.test", KeyType::EcP256Sec1, 10);
    let other = pki.leaf("b.turn.test", KeyType::EcP256Sec1, 10);
    let chain = leaf.chain.to_str().unwrap();
    let key = leaf.key.to_str().unwrap();

    let out = run(
        &[
            "check-config",
            "--tls-certificate",
            chain,
            "--tls-private-key",
            key,
        ],
        &[],
    );
    let lines = out.ok_lines();
    assert_eq!(lines.len(), 2, "{:?}", out.stdout);
    assert!(
        lines[0].contains(&format!("; tls on (certificate {chain}, key {key}, tls 0.0.0.0:5349 [::]:5349, dtls 0.0.0.0:5349 [::]:5349, min version 1.2, reload on change (checked every 5 s) or SIGHUP);")),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with(&format!(
            "turnpike: TLS certificate OK ({chain}): subject CN=a.turn.test, O=Turnpike Tests, expires "
        )),
        "{}",
        lines[1]
    );
    assert!(lines[1].ends_with(" days), 2 certificates"), "{}", lines[1]);

    // From the environment, the key in the certificate file.
    let combined = leaf.combined.to_str().unwrap();
    let out = run(&["check-config"], &[("TURNPIKE_TLS_CERTIFICATE", combined)]);
    let lines = out.ok_lines();
    assert!(lines[1].starts_with(&format!(
        "turnpike: TLS certificate OK ({combined}): subject CN=a.turn.test"
    )));

    // Errors: exit 2, one line, nothing on stdout.
    let out = run(
        &[
            "check-config",
            "--tls-certificate",
            chain,
            "--tls-private-key",
            other.key.to_str().unwrap(),
        ],
        &[],
    );
    let line = out.error_line(2);
    assert_eq!(
        line,
        format!(
            "turnpike: error: tls.private_key {} does not match the certificate {chain}",
            other.key.display()
        )
    );
    let out = run(
        &[
            "check-config",
            "--tls-certificate",
            "/nonexistent/chain.pem",
        ],
        &[],
    );
    assert_eq!(
        out.error_line(2),
        "turnpike: error: cannot read TLS certificate /nonexistent/chain.pem: No such file or directory; check tls.certificate"
    );
    // Without TLS: one line, as before.
    assert_eq!(run(&["check-config"], &[]).ok_lines().len(), 1);
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        file,
        "[tls]\ncertificate = \"{chain}\"\nprivate_key = \"{key}\""
    )
    .unwrap();
    let out = run(&["check-config", "-c", file.path().to_str().unwrap()], &[]);
    assert_eq!(out.ok_lines().len(), 2);
}
