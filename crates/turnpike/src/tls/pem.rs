//! PEM: reading the configured files (bounded in size, into buffers that
//! are zeroized when dropped), splitting them into certificates and keys
//! with diagnostics an operator can act on, and writing the chain and key
//! back as PEM for the DTLS side ([`PemPair`]).

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use base64::Engine as _;
use rustls_pki_types::pem::{self, PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::{Zeroize, Zeroizing};

use super::MAX_PEM_FILE_BYTES;
use super::error::{CertError, FileRole};

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

/// Reads a file of at most [`MAX_PEM_FILE_BYTES`] into a buffer that is
/// zeroized when dropped (it may hold a key).
pub(super) fn read_file(role: FileRole, path: &Path) -> Result<Zeroizing<Vec<u8>>, CertError> {
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
pub(super) struct Blocks {
    pub(super) certificates: Vec<CertificateDer<'static>>,
    pub(super) keys: Vec<Zeroizing<PrivateKeyDer<'static>>>,
}

pub(super) fn parse_pem(role: FileRole, path: &Path, bytes: &[u8]) -> Result<Blocks, CertError> {
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

pub(super) fn is_encrypted(bytes: &[u8]) -> bool {
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    contains(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") || contains(b"Proc-Type: 4,ENCRYPTED")
}

/// PEM with 64-character lines.
pub(super) fn encode_pem(label: &str, der: &[u8]) -> Vec<u8> {
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
pub(super) fn encode_key_pem(key: &PrivateKeyDer<'_>) -> Vec<u8> {
    let label = match key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    let mut out = Vec::new();
    write_pem(label, key.secret_der(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
