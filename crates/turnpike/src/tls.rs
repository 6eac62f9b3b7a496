//! TLS certificates: loading, checking, serving and reloading them without
//! dropping calls.
//!
//! [`Certificates::load`] reads `tls.certificate` (the server certificate,
//! then its intermediates, optionally followed by the private key, as
//! restund keeps them) and `tls.private_key`, and checks what operators get
//! wrong: unreadable or non-PEM files, a missing or passphrase-protected key,
//! a key that does not match the certificate, a chain with the server
//! certificate not first, an unsupported key type. Every failure is a
//! [`CertError`] whose `Display` is one line saying what is wrong and how to
//! fix it.
//!
//! [`Certificates::server_config`] is built once. Its certificate comes from
//! a [`ResolvesServerCert`] reading an [`ArcSwap`], so a reload
//! ([`Certificates::reload`]) applies to the next handshake without
//! rebuilding anything, and established sessions — which hold their own keys
//! — are untouched. A reload that fails (a half-written file, a key that
//! does not match yet) changes nothing: the previous certificate stays in
//! service. [`watch`] runs the reloads: when the files change (polled by
//! inode, size, mtime and ctime, so certbot's symlink swaps and Kubernetes'
//! secret updates are seen) and on SIGHUP, logging one line per outcome.
//!
//! TLS 1.2 and 1.3 (or 1.3 only, `tls.min_version`) with rustls' *ring*
//! provider; TLS 1.0 and 1.1 are never offered. ALPN (RFC 7443):
//! `stun.turn` and `stun.nat-discovery` are accepted but not required —
//! clients that send no ALPN connect too; a client that offers only other
//! protocols is refused with `no_application_protocol`, as RFC 7301 section
//! 3.2 has it.
//!
//! The DTLS side (OpenSSL) takes the same chain and key as PEM
//! ([`Certificates::pem`]) and notices reloads through
//! [`Certificates::generation`].
//!
//! Keys: RSA (2048 bits or more), ECDSA P-256 and P-384, Ed25519; PEM as
//! PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE
//! KEY`). Copies of the key this module makes are zeroized when dropped.

use std::fmt;
use std::fs::File;
use std::future::Future;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use base64::Engine as _;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::{CertifiedKey, SigningKey};
use rustls_pki_types::pem::{self, PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::{Zeroize, Zeroizing};

use crate::config::{TlsSettings as TlsConfig, TlsVersion, io_message};

mod x509;

/// ALPN protocol ID for TURN (RFC 7443).
pub const ALPN_STUN_TURN: &[u8] = b"stun.turn";

/// ALPN protocol ID for STUN NAT behaviour discovery (RFC 7443).
pub const ALPN_STUN_NAT_DISCOVERY: &[u8] = b"stun.nat-discovery";

/// Largest certificate or key file read. Real chains are a few KiB; the
/// limit keeps a mistaken path (a log file, `/dev/zero`) from being read
/// into memory.
pub const MAX_PEM_FILE_BYTES: u64 = 1 << 20;

/// How far ahead of the expiry [`watch`] starts warning.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);

/// How often [`watch`] checks the expiry.
const EXPIRY_CHECK_EVERY: Duration = Duration::from_secs(86_400);

/// The certificate chain and private key in service, as PEM, for the DTLS
/// side (OpenSSL's `X509::stack_from_pem` and `PKey::private_key_from_pem`).
/// The key is zeroized when this is dropped.
pub struct PemPair {
    /// `CERTIFICATE` blocks: the server certificate, then its intermediates.
    pub chain: Vec<u8>,
    /// One `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block.
    pub key: Vec<u8>,
}

impl Drop for PemPair {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl fmt::Debug for PemPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PemPair")
            .field("chain", &format_args!("{} bytes", self.chain.len()))
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Which of the two files an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRole {
    /// `tls.certificate`.
    Certificate,
    /// `tls.private_key`.
    PrivateKey,
}

impl FileRole {
    /// The configuration key naming the file.
    pub fn key(self) -> &'static str {
        match self {
            FileRole::Certificate => "tls.certificate",
            FileRole::PrivateKey => "tls.private_key",
        }
    }
}

impl fmt::Display for FileRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileRole::Certificate => "certificate",
            FileRole::PrivateKey => "private key",
        })
    }
}

/// Why certificates could not be (re)loaded. `Display` is one line that
/// says what is wrong and how to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// `tls.certificate` is unset.
    #[error(
        "tls.certificate is not set; set it to the PEM certificate chain to serve TLS and DTLS"
    )]
    NotConfigured,
    /// A file could not be read.
    #[error(
        "cannot read TLS {role} {}: {}; {}",
        path.display(),
        io_message(error),
        read_hint(*role, error)
    )]
    Read {
        /// Which file.
        role: FileRole,
        /// The path as configured.
        path: PathBuf,
        /// The underlying error.
        error: io::Error,
    },
    /// A file larger than [`MAX_PEM_FILE_BYTES`].
    #[error(
        "TLS {role} {} is larger than 1 MiB, which no PEM {role} file is; check {}",
        path.display(),
        role.key()
    )]
    TooLarge {
        /// Which file.
        role: FileRole,
        /// The path as configured.
        path: PathBuf,
    },
    /// Broken PEM (a section without its end line, bad base64).
    #[error(
        "TLS {role} {} is not valid PEM ({reason}); check {}",
        path.display(),
        role.key()
    )]
    Pem {
        /// Which file.
        role: FileRole,
        /// The path as configured.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// No `CERTIFICATE` block.
    #[error(
        "no certificate in {}{}; tls.certificate must be a PEM file with the server certificate first, then its intermediates",
        path.display(),
        if *der { " (it looks like binary DER: convert it with `openssl x509 -inform der -in FILE -out FILE.pem`)" } else { "" }
    )]
    NoCertificate {
        /// The path as configured.
        path: PathBuf,
        /// The file looks like DER rather than PEM.
        der: bool,
    },
    /// A `CERTIFICATE` block that is not an X.509 certificate.
    #[error(
        "certificate {index} in {} is not a valid X.509 certificate ({reason}); check tls.certificate",
        path.display()
    )]
    BadCertificate {
        /// The path as configured.
        path: PathBuf,
        /// 1-based position in the file.
        index: usize,
        /// The parser's complaint.
        reason: String,
    },
    /// No private key where one was expected.
    #[error(
        "no private key in {}; {}",
        path.display(),
        if *role == FileRole::Certificate { "set tls.private_key" } else { "check tls.private_key" }
    )]
    NoKey {
        /// Which file was searched.
        role: FileRole,
        /// The path as configured.
        path: PathBuf,
    },
    /// More than one private key in the file.
    #[error("{} holds {count} private keys; keep only the server's", path.display())]
    SeveralKeys {
        /// The path as configured.
        path: PathBuf,
        /// How many.
        count: usize,
    },
    /// A passphrase-protected key.
    #[error(
        "the private key in {} is encrypted; Turnpike cannot ask for a passphrase, so store it decrypted (`openssl pkey -in KEY -out KEY.plain`), readable only by turnpike",
        path.display()
    )]
    EncryptedKey {
        /// The path as configured.
        path: PathBuf,
    },
    /// A key the TLS library cannot sign with.
    #[error(
        "the private key in {} is not usable ({reason}); use an RSA (2048 bits or more), ECDSA P-256 or P-384, or Ed25519 key",
        path.display()
    )]
    UnsupportedKey {
        /// The path as configured.
        path: PathBuf,
        /// The library's complaint.
        reason: String,
    },
    /// The key belongs to no certificate of the chain.
    #[error("{}", mismatch_message(certificate, private_key.as_deref()))]
    KeyMismatch {
        /// `tls.certificate`.
        certificate: PathBuf,
        /// `tls.private_key`, `None` when the key is in the certificate file.
        private_key: Option<PathBuf>,
    },
    /// The key belongs to a later certificate of the chain.
    #[error(
        "the private key belongs to certificate {index} of {}, not to the first; put the server certificate first, then its intermediates",
        path.display()
    )]
    ChainOrder {
        /// `tls.certificate`.
        path: PathBuf,
        /// 1-based position of the matching certificate.
        index: usize,
    },
    /// rustls refused the configuration (not expected with the built-in
    /// provider).
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

fn read_hint(role: FileRole, error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::PermissionDenied => {
            format!(
                "make it readable by the user turnpike runs as ({})",
                role.key()
            )
        }
        _ => format!("check {}", role.key()),
    }
}

fn mismatch_message(certificate: &Path, private_key: Option<&Path>) -> String {
    match private_key {
        Some(key) => format!(
            "tls.private_key {} does not match the certificate {}",
            key.display(),
            certificate.display()
        ),
        None => format!(
            "the private key in {} does not match its certificate; put the server's own key there or set tls.private_key",
            certificate.display()
        ),
    }
}

/// What one successful read of the files produced.
struct Loaded {
    /// What rustls serves.
    certified: Arc<CertifiedKey>,
    /// The same as PEM, for the DTLS side.
    pem: Arc<PemPair>,
    /// The server certificate's notAfter.
    not_after: SystemTime,
    /// The server certificate's subject (or its names when the subject is
    /// empty), on one line.
    subject: String,
    /// 0 for the certificates loaded at start, +1 per change.
    generation: u64,
}

impl fmt::Debug for Loaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loaded")
            .field("subject", &self.subject)
            .field("not_after", &format_utc(self.not_after))
            .field("chain", &self.certified.cert.len())
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// rustls asks this for the certificate on every handshake.
#[derive(Debug)]
struct Resolver(Arc<ArcSwap<Loaded>>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.load().certified))
    }
}

/// Identity of a file's current contents, as far as `stat` tells: a
/// rewrite changes ctime (and usually mtime and size), a replacement by
/// rename or a symlink swap changes the inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// The stamps of the certificate file and the key file (if separate);
/// `None` for a file that cannot be stat'ed.
type Stamps = Vec<Option<FileStamp>>;

fn stamp(path: &Path) -> Option<FileStamp> {
    // `metadata` follows symlinks: certbot's live/ links and Kubernetes'
    // ..data link change their target.
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

/// A certificate chain and key, reloadable while serving. See the module
/// documentation.
pub struct Certificates {
    certificate: PathBuf,
    private_key: Option<PathBuf>,
    provider: Arc<CryptoProvider>,
    current: Arc<ArcSwap<Loaded>>,
    config: Arc<ServerConfig>,
    /// Serialises reloads; holds the file stamps taken (before reading)
    /// by the last load or reload attempt.
    stamps: Mutex<Stamps>,
}

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificates")
            .field("certificate", &self.certificate)
            .field("private_key", &self.private_key)
            .field("current", &*self.current.load())
            .finish_non_exhaustive()
    }
}

impl Certificates {
    /// Reads and checks `tls.certificate` and `tls.private_key` and builds
    /// the TLS server configuration for `tls.min_version`.
    pub fn load(tls: &TlsConfig) -> Result<Arc<Certificates>, CertError> {
        let certificate = tls.certificate.clone().ok_or(CertError::NotConfigured)?;
        let private_key = tls.private_key.clone();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let stamps = file_stamps(&certificate, private_key.as_deref());
        let loaded = read_files(&certificate, private_key.as_deref(), &provider, 0)?;
        let current = Arc::new(ArcSwap::from_pointee(loaded));

        let versions: &[&'static rustls::SupportedProtocolVersion] = match tls.min_version {
            TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::Tls13 => &[&rustls::version::TLS13],
        };
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions)
            .map_err(|err| CertError::Tls(err.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(Arc::clone(&current))));
        config.alpn_protocols = vec![ALPN_STUN_TURN.to_vec(), ALPN_STUN_NAT_DISCOVERY.to_vec()];

        Ok(Arc::new(Certificates {
            certificate,
            private_key,
            provider,
            current,
            config: Arc::new(config),
            stamps: Mutex::new(stamps),
        }))
    }

    /// The TLS server configuration: built once; reloads change the
    /// certificate it serves, not the configuration.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config)
    }

    /// A tokio acceptor over [`Certificates::server_config`].
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server_config())
    }

    /// Re-reads the files. `Ok(true)`: a different certificate or key is now
    /// served to new handshakes; `Ok(false)`: the files hold what is
    /// already served. On any error nothing changes: the previous
    /// certificate stays in service.
    pub fn reload(&self) -> Result<bool, CertError> {
        let mut stamps = self.stamps.lock().unwrap_or_else(PoisonError::into_inner);
        // Taken before reading, so a write that lands while the files are
        // being read shows up as a change the next time they are checked.
        *stamps = file_stamps(&self.certificate, self.private_key.as_deref());
        let current = self.current.load_full();
        let loaded = read_files(
            &self.certificate,
            self.private_key.as_deref(),
            &self.provider,
            current.generation + 1,
        )?;
        if loaded.certified.cert == current.certified.cert && loaded.pem.key == current.pem.key {
            return Ok(false);
        }
        self.current.store(Arc::new(loaded));
        Ok(true)
    }

    /// The chain and key in service, as PEM. Compare
    /// [`Certificates::generation`] to notice a change.
    pub fn pem(&self) -> Arc<PemPair> {
        Arc::clone(&self.current.load().pem)
    }

    /// [`Certificates::pem`] with the generation it belongs to, read
    /// together.
    pub fn pem_with_generation(&self) -> (u64, Arc<PemPair>) {
        let current = self.current.load();
        (current.generation, Arc::clone(&current.pem))
    }

    /// The expiry (notAfter) of the server certificate in service.
    pub fn not_after(&self) -> SystemTime {
        self.current.load().not_after
    }

    /// The subject of the server certificate in service (`CN=…, O=…`), or
    /// its DNS names and IPs when the subject is empty.
    pub fn subject(&self) -> String {
        self.current.load().subject.clone()
    }

    /// 0 for the certificate loaded at start, then one more for every
    /// reload that changed the certificate or key.
    pub fn generation(&self) -> u64 {
        self.current.load().generation
    }

    /// Number of certificates served: the server certificate and its
    /// intermediates.
    pub fn chain_len(&self) -> usize {
        self.current.load().certified.cert.len()
    }

    /// The server certificate in service (DER).
    pub fn leaf(&self) -> CertificateDer<'static> {
        let current = self.current.load();
        // `read_files` never stores an empty chain (NoCertificate).
        current.certified.cert[0].clone()
    }

    /// `tls.certificate`.
    pub fn certificate_path(&self) -> &Path {
        &self.certificate
    }

    /// `tls.private_key`, `None` when the key is in the certificate file.
    pub fn private_key_path(&self) -> Option<&Path> {
        self.private_key.as_deref()
    }

    /// One line for logs and `check-config`:
    /// `subject CN=…, expires 2027-01-31 12:00:00 UTC (in 69 days), 2 certificates`.
    pub fn summary(&self) -> String {
        let current = self.current.load();
        let count = current.certified.cert.len();
        format!(
            "subject {}, {}, {count} certificate{}",
            current.subject,
            describe_expiry(current.not_after, SystemTime::now()),
            if count == 1 { "" } else { "s" }
        )
    }

    /// The file stamps of the last load or reload attempt.
    fn last_stamps(&self) -> Stamps {
        self.stamps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The files' stamps now.
    fn stamps_now(&self) -> Stamps {
        file_stamps(&self.certificate, self.private_key.as_deref())
    }
}

fn file_stamps(certificate: &Path, private_key: Option<&Path>) -> Stamps {
    std::iter::once(certificate)
        .chain(private_key)
        .map(stamp)
        .collect()
}

/// `expires 2027-01-31 12:00:00 UTC (in 69 days)` or `expired … (3 days ago)`.
fn describe_expiry(not_after: SystemTime, now: SystemTime) -> String {
    let when = format_utc(not_after);
    match not_after.duration_since(now) {
        Ok(left) => format!("expires {when} (in {})", days(left)),
        Err(past) => format!("EXPIRED {when} ({} ago)", days(past.duration())),
    }
}

fn days(d: Duration) -> String {
    match d.as_secs() / 86_400 {
        0 => format!("{} hours", d.as_secs() / 3600),
        1 => "1 day".to_owned(),
        n => format!("{n} days"),
    }
}

/// The time as UTC date and clock, whole seconds; times before 1970 (old
/// certificates) are exact too.
fn utc_parts(time: SystemTime) -> ((i64, i64, i64), (i64, i64, i64)) {
    let secs: i64 = match time.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    };
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    (
        civil_from_days(days),
        (rem / 3600, rem % 3600 / 60, rem % 60),
    )
}

/// `YYYY-MM-DD HH:MM:SS UTC`, for log lines.
pub fn format_utc(time: SystemTime) -> String {
    let ((y, m, d), (hh, mm, ss)) = utc_parts(time);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02} UTC")
}

/// RFC 3339 in UTC, whole seconds: `2027-01-31T12:00:00Z`.
pub fn format_rfc3339(time: SystemTime) -> String {
    let ((y, m, d), (hh, mm, ss)) = utc_parts(time);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}
/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day)
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Reads a file of at most [`MAX_PEM_FILE_BYTES`] into a buffer that is
/// zeroized when dropped (it may hold a key).
fn read_file(role: FileRole, path: &Path) -> Result<Zeroizing<Vec<u8>>, CertError> {
    let read_error = |error| CertError::Read {
        role,
        path: path.to_owned(),
        error,
    };
    let file = File::open(path).map_err(read_error)?;
    let expected = file.metadata().map_err(read_error)?.len();
    if expected > MAX_PEM_FILE_BYTES {
        return Err(CertError::TooLarge {
            role,
            path: path.to_owned(),
        });
    }
    // Sized up front so that the buffer is not reallocated (leaving copies
    // of a key behind) unless the file grows while being read.
    let capacity = usize::try_from(expected).unwrap_or(0).saturating_add(1);
    let mut bytes = Zeroizing::new(Vec::with_capacity(capacity));
    file.take(MAX_PEM_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_PEM_FILE_BYTES {
        return Err(CertError::TooLarge {
            role,
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

/// The PEM blocks of a file: its certificates in order, and its keys.
struct Blocks {
    certificates: Vec<CertificateDer<'static>>,
    keys: Vec<Zeroizing<PrivateKeyDer<'static>>>,
}

fn parse_pem(role: FileRole, path: &Path, bytes: &[u8]) -> Result<Blocks, CertError> {
    let mut blocks = Blocks {
        certificates: Vec::new(),
        keys: Vec::new(),
    };
    for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes) {
        let (kind, der) = item.map_err(|err| {
            // An old-style encrypted key ("Proc-Type: 4,ENCRYPTED" headers)
            // is not valid base64 to the parser.
            if is_encrypted(bytes) {
                CertError::EncryptedKey {
                    path: path.to_owned(),
                }
            } else {
                CertError::Pem {
                    role,
                    path: path.to_owned(),
                    reason: describe_pem_error(&err),
                }
            }
        })?;
        match kind {
            SectionKind::Certificate => blocks.certificates.push(CertificateDer::from(der)),
            SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey | SectionKind::PrivateKey => {
                let key = PrivateKeyDer::from_pem(kind, der);
                blocks.keys.extend(key.map(Zeroizing::new));
            }
            // CSRs, CRLs, public keys and the like are not ours to use.
            _ => {}
        }
    }
    Ok(blocks)
}

fn describe_pem_error(err: &pem::Error) -> String {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).trim().to_owned();
    match err {
        pem::Error::MissingSectionEnd { end_marker } => {
            format!("no \"-----END {}-----\" line", text(end_marker))
        }
        pem::Error::IllegalSectionStart { line } => {
            format!("bad BEGIN line {:?}", text(line))
        }
        pem::Error::Base64Decode(why) => format!("bad base64: {why}"),
        other => other.to_string(),
    }
}

fn is_encrypted(bytes: &[u8]) -> bool {
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    contains(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") || contains(b"Proc-Type: 4,ENCRYPTED")
}

/// Reads both files and builds what is served, or says why not.
fn read_files(
    certificate: &Path,
    private_key: Option<&Path>,
    provider: &CryptoProvider,
    generation: u64,
) -> Result<Loaded, CertError> {
    let cert_bytes = read_file(FileRole::Certificate, certificate)?;
    let cert_blocks = parse_pem(FileRole::Certificate, certificate, &cert_bytes)?;
    let chain = cert_blocks.certificates;
    if chain.is_empty() {
        return Err(CertError::NoCertificate {
            path: certificate.to_owned(),
            der: cert_bytes.first() == Some(&0x30),
        });
    }

    let (key_role, key_path, mut keys, encrypted) = match private_key {
        Some(path) => {
            let bytes = read_file(FileRole::PrivateKey, path)?;
            let blocks = parse_pem(FileRole::PrivateKey, path, &bytes)?;
            (
                FileRole::PrivateKey,
                path,
                blocks.keys,
                is_encrypted(&bytes),
            )
        }
        None => (
            FileRole::Certificate,
            certificate,
            cert_blocks.keys,
            is_encrypted(&cert_bytes),
        ),
    };
    let key = match keys.len() {
        1 => keys.remove(0),
        0 if encrypted => {
            return Err(CertError::EncryptedKey {
                path: key_path.to_owned(),
            });
        }
        0 => {
            return Err(CertError::NoKey {
                role: key_role,
                path: key_path.to_owned(),
            });
        }
        count => {
            return Err(CertError::SeveralKeys {
                path: key_path.to_owned(),
                count,
            });
        }
    };

    // Parse every certificate, so that a broken intermediate is reported
    // now rather than by clients.
    let mut spkis = Vec::with_capacity(chain.len());
    let mut leaf_info = None;
    for (index, der) in chain.iter().enumerate() {
        let bad = |reason: String| CertError::BadCertificate {
            path: certificate.to_owned(),
            index: index + 1,
            reason,
        };
        let info = x509::parse(der.as_ref()).map_err(bad)?;
        spkis.push(info.spki.to_vec());
        if index == 0 {
            leaf_info = Some((info.not_after, subject_line(&info)));
        }
    }
    let Some((not_after, subject)) = leaf_info else {
        // `chain` is not empty (checked above), so index 0 was visited.
        return Err(CertError::NoCertificate {
            path: certificate.to_owned(),
            der: false,
        });
    };

    let pem_key = encode_key_pem(&key);
    let signing_key: Arc<dyn SigningKey> = provider
        .key_provider
        // rustls zeroizes its copy once it has made its own signing key.
        .load_private_key(key.clone_key())
        .map_err(|err| CertError::UnsupportedKey {
            path: key_path.to_owned(),
            // rustls words its "cannot parse this key" as a general error.
            reason: err
                .to_string()
                .trim_start_matches("unexpected error: ")
                .to_owned(),
        })?;
    // rustls' own `keys_match`, extended to say when the key belongs to an
    // intermediate (a chain in the wrong order). A key type that cannot
    // tell its public key is accepted, as rustls does.
    if let Some(spki) = signing_key.public_key() {
        match spkis.iter().position(|s| s.as_slice() == spki.as_ref()) {
            Some(0) => {}
            Some(i) => {
                return Err(CertError::ChainOrder {
                    path: certificate.to_owned(),
                    index: i + 1,
                });
            }
            None => {
                return Err(CertError::KeyMismatch {
                    certificate: certificate.to_owned(),
                    private_key: private_key.map(Path::to_owned),
                });
            }
        }
    }

    let mut pem_chain = Vec::new();
    for der in &chain {
        pem_chain.extend_from_slice(&encode_pem("CERTIFICATE", der.as_ref()));
    }
    Ok(Loaded {
        certified: Arc::new(CertifiedKey::new(chain, signing_key)),
        pem: Arc::new(PemPair {
            chain: pem_chain,
            key: pem_key,
        }),
        not_after,
        subject,
        generation,
    })
}

/// Seconds since the Unix epoch (negative before it) as a `SystemTime`.
fn timestamp(secs: i64) -> SystemTime {
    match u64::try_from(secs) {
        Ok(after) => UNIX_EPOCH + Duration::from_secs(after),
        Err(_) => UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()),
    }
}

/// The subject as `CN=…, O=…`, or the subject alternative names when the
/// subject is empty (as in some ACME certificates); control characters
/// replaced so it stays one line.
fn subject_line(info: &x509::CertInfo<'_>) -> String {
    let text = if !info.subject.is_empty() {
        info.subject.clone()
    } else if !info.alt_names.is_empty() {
        info.alt_names.join(", ")
    } else {
        "(empty)".to_owned()
    };
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// PEM with 64-character lines.
fn encode_pem(label: &str, der: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_pem(label, der, &mut out);
    out
}

fn write_pem(label: &str, der: &[u8], out: &mut Vec<u8>) {
    let engine = &base64::engine::general_purpose::STANDARD;
    let encoded = Zeroizing::new(engine.encode(der));
    let begin = format!("-----BEGIN {label}-----\n");
    let end = format!("-----END {label}-----\n");
    let lines = encoded.len().div_ceil(64);
    out.reserve_exact(begin.len() + encoded.len() + lines + end.len());
    out.extend_from_slice(begin.as_bytes());
    for line in encoded.as_bytes().chunks(64) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend_from_slice(end.as_bytes());
}

/// The key as PEM under the label of its format, in a buffer sized up front
/// (so no partial copy is left behind by a reallocation).
fn encode_key_pem(key: &PrivateKeyDer<'_>) -> Vec<u8> {
    let label = match key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    let mut out = Vec::new();
    write_pem(label, key.secret_der(), &mut out);
    out
}

/// Something that asks for a reload: SIGHUP in the server
/// (`tokio::signal::unix::signal(SignalKind::hangup())`), a channel in
/// tests.
pub trait ReloadTrigger: Send {
    /// Waits for the next request; `None` once no more can come.
    fn requested(&mut self) -> impl Future<Output = Option<()>> + Send;
}

impl ReloadTrigger for tokio::signal::unix::Signal {
    fn requested(&mut self) -> impl Future<Output = Option<()>> + Send {
        self.recv()
    }
}

impl ReloadTrigger for tokio::sync::mpsc::Receiver<()> {
    fn requested(&mut self) -> impl Future<Output = Option<()>> + Send {
        self.recv()
    }
}

impl ReloadTrigger for tokio::sync::mpsc::UnboundedReceiver<()> {
    fn requested(&mut self) -> impl Future<Output = Option<()>> + Send {
        self.recv()
    }
}

/// What caused a reload attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadCause {
    /// The files' stamps changed (and then held still for one interval).
    FilesChanged,
    /// A [`ReloadTrigger`] fired (SIGHUP).
    Requested,
}

/// How a reload attempt is logged: the level and the line.
pub fn describe_reload(
    certs: &Certificates,
    cause: ReloadCause,
    outcome: &Result<bool, CertError>,
) -> (tracing::Level, String) {
    let expiry = describe_expiry(certs.not_after(), SystemTime::now());
    match outcome {
        Ok(true) => (
            tracing::Level::INFO,
            format!(
                "TLS certificate reloaded: subject {}, {expiry}",
                certs.subject()
            ),
        ),
        Ok(false) => match cause {
            ReloadCause::Requested => (
                tracing::Level::INFO,
                format!(
                    "TLS certificate unchanged: subject {}, {expiry}",
                    certs.subject()
                ),
            ),
            ReloadCause::FilesChanged => (
                tracing::Level::DEBUG,
                format!(
                    "TLS certificate files touched but unchanged: subject {}, {expiry}",
                    certs.subject()
                ),
            ),
        },
        Err(err) => (
            tracing::Level::ERROR,
            format!(
                "TLS certificate not reloaded: {err}; still serving the previous one (subject {}, {expiry})",
                certs.subject()
            ),
        ),
    }
}

/// The warning about an expired or soon expiring certificate, if due.
pub fn expiry_warning(certs: &Certificates, now: SystemTime) -> Option<String> {
    let not_after = certs.not_after();
    let subject = certs.subject();
    match not_after.duration_since(now) {
        Err(_) => Some(format!(
            "TLS certificate {} (subject {subject}): clients refuse it; renew it",
            describe_expiry(not_after, now)
        )),
        Ok(left) if left < EXPIRY_WARNING => Some(format!(
            "TLS certificate {} (subject {subject}); renew it",
            describe_expiry(not_after, now)
        )),
        Ok(_) => None,
    }
}

fn log(level: tracing::Level, line: &str) {
    match level {
        tracing::Level::ERROR => tracing::error!("{line}"),
        tracing::Level::WARN => tracing::warn!("{line}"),
        tracing::Level::INFO => tracing::info!("{line}"),
        tracing::Level::DEBUG => tracing::debug!("{line}"),
        _ => tracing::trace!("{line}"),
    }
}

/// Keeps `certs` up to date until the task is dropped: every `interval`
/// (`None`: never) it compares the files' stamps with those of the last
/// reload, and reloads once a change has held still for one more interval
/// (so a renewal that writes the chain and the key one after the other is
/// read complete); every `trigger` request reloads at once. Each attempt
/// logs one line ([`describe_reload`]), and once a day a warning is logged
/// while the certificate expires within [`EXPIRY_WARNING`] or has expired.
///
/// A failed reload is not retried until the files change again or another
/// request comes.
pub async fn watch<T: ReloadTrigger>(
    certs: Arc<Certificates>,
    interval: Option<Duration>,
    mut trigger: T,
) {
    let mut seen = certs.last_stamps();
    let mut settling: Option<Stamps> = None;
    let mut poll = interval.map(|every| {
        let mut poll = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll
    });
    let mut trigger_open = true;
    let mut expiry_check = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = tick(poll.as_mut()) => {
                let now = certs.stamps_now();
                if now == seen {
                    settling = None;
                } else if settling.as_ref() != Some(&now) {
                    settling = Some(now);
                } else {
                    settling = None;
                    let outcome = certs.reload();
                    seen = certs.last_stamps();
                    let (level, line) = describe_reload(&certs, ReloadCause::FilesChanged, &outcome);
                    log(level, &line);
                }
            }
            request = trigger.requested(), if trigger_open => {
                match request {
                    Some(()) => {
                        settling = None;
                        let outcome = certs.reload();
                        seen = certs.last_stamps();
                        let (level, line) = describe_reload(&certs, ReloadCause::Requested, &outcome);
                        log(level, &line);
                    }
                    None => trigger_open = false,
                }
            }
            () = tokio::time::sleep_until(expiry_check) => {
                if let Some(line) = expiry_warning(&certs, SystemTime::now()) {
                    tracing::warn!("{line}");
                }
                expiry_check += EXPIRY_CHECK_EVERY;
            }
        }
    }
}

async fn tick(poll: Option<&mut tokio::time::Interval>) {
    match poll {
        Some(poll) => {
            poll.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        let at = |secs: i64| format_utc(timestamp(secs));
        assert_eq!(at(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(at(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(at(1_798_761_599), "2026-12-31 23:59:59 UTC");
        assert_eq!(at(4_102_444_800), "2100-01-01 00:00:00 UTC");
        assert_eq!(at(-1), "1969-12-31 23:59:59 UTC");
        assert_eq!(at(253_402_300_799), "9999-12-31 23:59:59 UTC");
    }

    #[test]
    fn expiry_descriptions() {
        let now = timestamp(1_800_000_000);
        let later = |secs: u64| now + Duration::from_secs(secs);
        assert_eq!(
            describe_expiry(later(90 * 86_400 + 5), now),
            "expires 2027-04-15 08:00:05 UTC (in 90 days)"
        );
        assert!(describe_expiry(later(86_400), now).ends_with("(in 1 day)"));
        assert!(describe_expiry(later(7_200), now).ends_with("(in 2 hours)"));
        assert_eq!(
            describe_expiry(now - Duration::from_secs(3 * 86_400), now),
            "EXPIRED 2027-01-12 08:00:00 UTC (3 days ago)"
        );
    }

    #[test]
    fn pem_encoding_round_trips() {
        let der: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let pem = encode_pem("CERTIFICATE", &der);
        let text = String::from_utf8(pem.clone()).unwrap();
        assert!(text.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(text.ends_with("-----END CERTIFICATE-----\n"));
        assert!(text.lines().all(|l| l.len() <= 64));
        let back = CertificateDer::from_pem_slice(&pem).unwrap();
        assert_eq!(back.as_ref(), der.as_slice());
    }

    #[test]
    fn encrypted_keys_are_recognised() {
        assert!(is_encrypted(
            b"x\n-----BEGIN ENCRYPTED PRIVATE KEY-----\nabc\n"
        ));
        assert!(is_encrypted(
            b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n"
        ));
        assert!(!is_encrypted(b"-----BEGIN PRIVATE KEY-----\n"));
    }

    #[test]
    fn pem_errors_are_one_line() {
        let cases: &[&[u8]] = &[
            b"-----BEGIN CERTIFICATE-----\nAAAA\n",
            b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        ];
        for bytes in cases {
            let err = parse_pem(FileRole::Certificate, Path::new("/c.pem"), bytes)
                .err()
                .expect("an error");
            let text = err.to_string();
            assert!(
                text.starts_with("TLS certificate /c.pem is not valid PEM ("),
                "{text}"
            );
            assert!(text.ends_with("; check tls.certificate"), "{text}");
            assert!(!text.contains('\n'), "{text}");
        }
    }

    #[test]
    fn pem_pair_debug_hides_the_key() {
        let pair = PemPair {
            chain: b"chain".to_vec(),
            key: b"-----BEGIN PRIVATE KEY-----secret".to_vec(),
        };
        let debug = format!("{pair:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }
}
