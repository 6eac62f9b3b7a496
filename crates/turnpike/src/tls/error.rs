//! Why certificates could not be (re)loaded: [`CertError`], whose
//! `Display` is one line saying what is wrong and how to fix it, and
//! [`FileRole`], which of the two configured files it is about.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::config::io_message;

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
    /// A file larger than [`MAX_PEM_FILE_BYTES`](super::MAX_PEM_FILE_BYTES).
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
