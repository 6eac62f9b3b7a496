//! Certificates for the TLS tests, made by the real `openssl` command in a
//! temporary directory: a root CA, an intermediate CA, and server
//! certificates ("leaves") signed by the intermediate, with every key type
//! and PEM key format Turnpike supports (and a few it refuses).
//!
//! Every leaf is for its name and for 127.0.0.1 and ::1, so clients can
//! verify it against [`Pki::root`] by either.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Serial numbers of the leaves (the CAs use 1 and 2).
static NEXT_SERIAL: AtomicU32 = AtomicU32::new(1000);

/// A server key: algorithm and PEM format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// RSA 2048, PKCS#8 (`PRIVATE KEY`).
    RsaPkcs8,
    /// RSA 2048, PKCS#1 (`RSA PRIVATE KEY`).
    RsaPkcs1,
    /// ECDSA P-256, PKCS#8.
    EcP256Pkcs8,
    /// ECDSA P-256, SEC1 (`EC PRIVATE KEY`).
    EcP256Sec1,
    /// ECDSA P-384, SEC1.
    EcP384Sec1,
    /// Ed25519, PKCS#8.
    Ed25519,
    /// secp256k1, SEC1: a curve TLS servers cannot sign with.
    Secp256k1,
    /// RSA 1024: too short.
    Rsa1024,
}

impl KeyType {
    /// Every type Turnpike serves with.
    pub const SUPPORTED: [KeyType; 6] = [
        KeyType::RsaPkcs8,
        KeyType::RsaPkcs1,
        KeyType::EcP256Pkcs8,
        KeyType::EcP256Sec1,
        KeyType::EcP384Sec1,
        KeyType::Ed25519,
    ];

    /// The PEM label of the key file.
    pub fn pem_label(self) -> &'static str {
        match self {
            KeyType::RsaPkcs1 | KeyType::Rsa1024 => "RSA PRIVATE KEY",
            KeyType::EcP256Sec1 | KeyType::EcP384Sec1 | KeyType::Secp256k1 => "EC PRIVATE KEY",
            KeyType::RsaPkcs8 | KeyType::EcP256Pkcs8 | KeyType::Ed25519 => "PRIVATE KEY",
        }
    }

    fn generate(self, out: &Path) {
        let out = out.to_str().expect("UTF-8 temp path");
        let args: Vec<&str> = match self {
            KeyType::RsaPkcs8 => vec![
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ],
            KeyType::RsaPkcs1 => vec!["genrsa", "-traditional", "2048"],
            KeyType::Rsa1024 => vec!["genrsa", "-traditional", "1024"],
            KeyType::EcP256Pkcs8 => vec![
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ],
            KeyType::EcP256Sec1 => vec!["ecparam", "-name", "prime256v1", "-genkey", "-noout"],
            KeyType::EcP384Sec1 => vec!["ecparam", "-name", "secp384r1", "-genkey", "-noout"],
            KeyType::Secp256k1 => vec!["ecparam", "-name", "secp256k1", "-genkey", "-noout"],
            KeyType::Ed25519 => vec!["genpkey", "-algorithm", "ed25519"],
        };
        let mut args = args;
        // genrsa takes the size last, after the options.
        let bits = matches!(self, KeyType::RsaPkcs1 | KeyType::Rsa1024).then(|| args.pop());
        args.extend(["-out", out]);
        args.extend(bits.flatten());
        openssl(&args);
    }
}

/// One server certificate and the files a configuration can point at.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// Its name (the CN and a DNS name).
    pub name: String,
    /// The server certificate alone.
    pub cert: PathBuf,
    /// The server certificate, then the intermediate.
    pub chain: PathBuf,
    /// The private key.
    pub key: PathBuf,
    /// The chain followed by the key (restund's layout).
    pub combined: PathBuf,
    /// The server certificate, DER.
    pub der: Vec<u8>,
}

impl Leaf {
    /// The contents of one of its files.
    pub fn read(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }
}

/// A root and an intermediate CA in a temporary directory (removed on
/// drop).
pub struct Pki {
    dir: tempfile::TempDir,
    root: PathBuf,
    intermediate: PathBuf,
    intermediate_key: PathBuf,
    intermediate_der: Vec<u8>,
}

impl Pki {
    /// Makes the two CAs (ECDSA P-256, valid for 30 days).
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = |name: &str| dir.path().join(name);
        let s = |path: &Path| path.to_str().expect("UTF-8 temp path").to_owned();
        let (root, root_key) = (p("root.pem"), p("root.key"));
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &s(&root_key),
            "-out",
            &s(&root),
            "-days",
            "30",
            "-subj",
            "/CN=Turnpike Test Root",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        let (intermediate, intermediate_key, csr, ext) = (
            p("intermediate.pem"),
            p("intermediate.key"),
            p("intermediate.csr"),
            p("intermediate.ext"),
        );
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &s(&intermediate_key),
            "-out",
            &s(&csr),
            "-subj",
            "/CN=Turnpike Test Intermediate",
        ]);
        std::fs::write(
            &ext,
            "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
        )
        .expect("write extensions");
        openssl(&[
            "x509",
            "-req",
            "-in",
            &s(&csr),
            "-CA",
            &s(&root),
            "-CAkey",
            &s(&root_key),
            "-set_serial",
            "2",
            "-days",
            "30",
            "-extfile",
            &s(&ext),
            "-out",
            &s(&intermediate),
        ]);
        let intermediate_der = der_of(&intermediate);
        Pki {
            dir,
            root,
            intermediate,
            intermediate_key,
            intermediate_der,
        }
    }

    /// The directory everything is in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The root CA certificate (PEM), for clients to trust.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The intermediate CA certificate, DER.
    pub fn intermediate_der(&self) -> &[u8] {
        &self.intermediate_der
    }

    /// A server certificate for `name` (CN and DNS name, plus 127.0.0.1
    /// and ::1) with a key of `key_type`, valid for `days` days; its files
    /// are `<name>.*` in [`Pki::dir`].
    pub fn leaf(&self, name: &str, key_type: KeyType, days: u32) -> Leaf {
        self.leaf_with_ips(name, key_type, days, &[])
    }

    /// [`Pki::leaf`], also for the addresses `ips` (e.g. 127.0.0.3 for the
    /// relay of a fleet on one machine listening there).
    pub fn leaf_with_ips(
        &self,
        name: &str,
        key_type: KeyType,
        days: u32,
        ips: &[std::net::IpAddr],
    ) -> Leaf {
        let extra: String = ips.iter().map(|ip| format!(",IP:{ip}")).collect();
        let p = |ext: &str| self.dir.path().join(format!("{name}.{ext}"));
        let s = |path: &Path| path.to_str().expect("UTF-8 temp path").to_owned();
        let (key, csr, ext, cert, chain, combined) = (
            p("key"),
            p("csr"),
            p("ext"),
            p("crt"),
            p("chain.pem"),
            p("combined.pem"),
        );
        key_type.generate(&key);
        openssl(&[
            "req",
            "-new",
            "-key",
            &s(&key),
            "-subj",
            &format!("/CN={name}/O=Turnpike Tests"),
            "-out",
            &s(&csr),
        ]);
        std::fs::write(
            &ext,
            format!(
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:{name},IP:127.0.0.1,IP:::1{extra}\n"
            ),
        )
        .expect("write extensions");
        let serial = NEXT_SERIAL.fetch_add(1, Ordering::Relaxed).to_string();
        openssl(&[
            "x509",
            "-req",
            "-in",
            &s(&csr),
            "-CA",
            &s(&self.intermediate),
            "-CAkey",
            &s(&self.intermediate_key),
            "-set_serial",
            &serial,
            "-days",
            &days.to_string(),
            "-extfile",
            &s(&ext),
            "-out",
            &s(&cert),
        ]);
        let leaf_pem = Leaf::read(&cert);
        let intermediate_pem = Leaf::read(&self.intermediate);
        let key_pem = Leaf::read(&key);
        std::fs::write(&chain, [&leaf_pem[..], &intermediate_pem[..]].concat()).expect("write");
        std::fs::write(
            &combined,
            [&leaf_pem[..], &intermediate_pem[..], &key_pem[..]].concat(),
        )
        .expect("write");
        Leaf {
            name: name.to_owned(),
            der: der_of(&cert),
            cert,
            chain,
            key,
            combined,
        }
    }
}

/// The DER of a PEM certificate file.
pub fn der_of(pem: &Path) -> Vec<u8> {
    let output = Command::new("openssl")
        .args(["x509", "-outform", "der", "-in"])
        .arg(pem)
        .output()
        .expect("run openssl (Debian package openssl)");
    assert!(
        output.status.success(),
        "openssl x509: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Runs `openssl ARGS` and panics with its output if it fails.
pub fn openssl(args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl (Debian package openssl)");
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The subject of the certificate a new TLS connection to 127.0.0.1:`port`
/// is served, as `openssl s_client -brief` prints it.
pub fn served_subject(port: u16) -> String {
    let out = Command::new(super::require_tool("openssl"))
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-brief",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl s_client");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Peer certificate: "))
        .unwrap_or_else(|| panic!("no peer certificate in s_client output:\n{text}"))
        .to_owned()
}

/// The subject of the certificate served over DTLS on 127.0.0.1:`port`
/// (UDP), as `openssl s_client -dtls1_2` sees it. The client is killed (by
/// its own handle) and reaped if it has not finished within 20 s.
pub fn served_subject_dtls(port: u16) -> String {
    let mut child = Command::new(super::require_tool("openssl"))
        .args([
            "s_client",
            "-dtls1_2",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-brief",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run openssl s_client");
    // The output is small (a few lines) and only read once it has exited,
    // so the pipes cannot fill up and block it.
    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let exited = loop {
        match child.try_wait().expect("wait for s_client") {
            Some(_) => break true,
            None if std::time::Instant::now() >= end => break false,
            None => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    };
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("s_client output");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(exited, "s_client -dtls1_2 did not finish:\n{text}");
    text.lines()
        .find_map(|l| l.strip_prefix("Peer certificate: "))
        .unwrap_or_else(|| panic!("no peer certificate in s_client -dtls1_2 output:\n{text}"))
        .to_owned()
}

/// Certificate files a test server serves from and the test renews in
/// place, in a temporary directory of their own.
pub struct Renewable {
    _dir: tempfile::TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Renewable {
    /// Starts with `leaf`'s chain and key.
    pub fn new(leaf: &Leaf) -> Renewable {
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::copy(&leaf.chain, &cert).expect("copy the chain");
        std::fs::copy(&leaf.key, &key).expect("copy the key");
        Renewable {
            _dir: dir,
            cert,
            key,
        }
    }

    /// The `[tls]` files to serve from.
    pub fn files(&self) -> super::TlsFiles {
        super::TlsFiles {
            certificate: self.cert.clone(),
            private_key: Some(self.key.clone()),
        }
    }

    /// Renews with `leaf` as certbot does: the key, then the chain, each
    /// written beside its target and renamed into place.
    pub fn renew(&self, leaf: &Leaf) {
        replace(&self.key, &Leaf::read(&leaf.key));
        replace(&self.cert, &Leaf::read(&leaf.chain));
    }

    /// Replaces the certificate with a file that does not parse.
    pub fn break_certificate(&self) {
        replace(&self.cert, b"-----BEGIN CERTIFICATE-----\nnot base64\n");
    }
}

fn replace(target: &Path, contents: &[u8]) {
    let tmp = target.with_extension("new");
    std::fs::write(&tmp, contents).expect("write the new file");
    std::fs::rename(&tmp, target).expect("rename it into place");
}
