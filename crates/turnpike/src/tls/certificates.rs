//! The certificate chain and key in service: [`Certificates`] reads and
//! checks `tls.certificate` and `tls.private_key`, builds the rustls server
//! configuration once, and swaps what it serves on a successful reload. It
//! also records the files' `stat` identity at each attempt, which the
//! watcher compares to notice renewals.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::{CertifiedKey, SigningKey};
use rustls_pki_types::CertificateDer;

use super::error::{CertError, FileRole};
use super::pem::{PemPair, encode_key_pem, encode_pem, is_encrypted, parse_pem, read_file};
use super::{ALPN_STUN_NAT_DISCOVERY, ALPN_STUN_TURN, x509};
use crate::config::{TlsSettings, TlsVersion};
use crate::date::format_utc;

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
pub(super) struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// The stamps of the certificate file and the key file (if separate);
/// `None` for a file that cannot be stat'ed.
pub(super) type Stamps = Vec<Option<FileStamp>>;

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
    /// Reloads refused (files that did not parse or match): a renewal
    /// gone wrong shows in the metrics, not only in an ERROR line.
    refused: AtomicU64,
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
    pub fn load(tls: &TlsSettings) -> Result<Arc<Certificates>, CertError> {
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
            refused: AtomicU64::new(0),
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
        )
        .inspect_err(|_| {
            self.refused.fetch_add(1, Ordering::Relaxed);
        })?;
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

    /// Reloads refused since the start (the previous certificate stayed).
    pub fn reloads_refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
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
    pub(super) fn last_stamps(&self) -> Stamps {
        self.stamps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The files' stamps now.
    pub(super) fn stamps_now(&self) -> Stamps {
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
pub(super) fn describe_expiry(not_after: SystemTime, now: SystemTime) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::date::from_unix_seconds as timestamp;

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
}
