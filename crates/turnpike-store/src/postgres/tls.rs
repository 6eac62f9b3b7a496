//! TLS for the PostgreSQL backend: the `sslmode` and `sslrootcert` URL
//! parameters as libpq spells them, and tokio-postgres's `MakeTlsConnect`
//! implemented over rustls (the ring provider the server's own TLS uses).
//!
//! What each `sslmode` does (see also the README):
//!
//! | sslmode            | encrypted            | certificate checked              |
//! |--------------------|----------------------|----------------------------------|
//! | absent, `disable`  | no                   | -                                |
//! | `prefer`           | if the server offers | as `require`                     |
//! | `require`          | yes                  | no, unless a CA is given: chain  |
//! | `verify-ca`        | yes                  | chain against the CA             |
//! | `verify-full`      | yes                  | chain, and the host name         |
//!
//! An absent `sslmode` is *not* libpq's default (`prefer`): it stays the
//! plaintext connection Turnpike always made, so that existing deployments
//! keep working unchanged. `require` with a CA (`sslrootcert` or
//! `database.ca_file`) checks the chain, as libpq does for compatibility.
//! The CA is the file `sslrootcert=PATH` or `database.ca_file` names; with
//! neither (or `sslrootcert=system`), `verify-ca` and `verify-full` use the
//! system's CA bundle (`SSL_CERT_FILE`, else the usual distribution paths).
//!
//! tokio-postgres's own URL parser knows only `disable`, `prefer` and
//! `require` and no `sslrootcert`, so [`split_url`] takes both parameters
//! out before the URL is handed to it.
//!
//! A handshake failure carries a [`TlsError`] that says what was wrong
//! (untrusted chain, wrong host name, …) so that
//! [`connect_failure`] can turn it into one actionable line.
//!
//! We implement the connector here rather than use the
//! `tokio-postgres-rustls` crate: it costs x509-cert's tree for channel
//! binding (a small DER walk does here), and its `io::Error`s would hide
//! which certificate check failed.

use std::error::Error as _;
use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use percent_encoding::percent_decode_str;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::Digest;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

use crate::StoreError;

/// An `sslmode` value, as libpq spells it (`allow` is not supported:
/// tokio-postgres cannot try plaintext first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// Plaintext (also what an absent `sslmode` means here).
    Disable,
    /// TLS if the server offers it, else plaintext.
    Prefer,
    /// TLS; the certificate is checked only if a CA is given.
    Require,
    /// TLS; the chain is checked against the CA, the host name is not.
    VerifyCa,
    /// TLS; the chain and the host name are checked.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode, String> {
        match value {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            "allow" => Err(
                "sslmode=allow is not supported: use disable, prefer, require, verify-ca or verify-full"
                    .to_owned(),
            ),
            other => Err(format!(
                "unknown sslmode {other:?}: use disable, prefer, require, verify-ca or verify-full"
            )),
        }
    }

    /// As written in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres is told: it only decides whether to ask for TLS;
    /// the checks are our connector's.
    fn for_tokio_postgres(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Pg;
        match self {
            SslMode::Disable => Pg::Disable,
            SslMode::Prefer => Pg::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Pg::Require,
        }
    }
}

/// Where the CA certificates come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM file, and which setting named it (for messages).
    File(PathBuf, &'static str),
    /// The system's CA bundle (`sslrootcert=system`, or nothing given).
    System,
}

/// The TLS parameters of a PostgreSQL URL, and the URL without them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlTls {
    /// `None` when the URL has no `sslmode` (plaintext, see the module
    /// docs).
    pub mode: Option<SslMode>,
    /// `sslrootcert`, if given.
    pub root_cert: Option<RootCert>,
    /// The URL for tokio-postgres: `sslmode` and `sslrootcert` removed.
    pub rest: String,
}

/// Takes `sslmode` and `sslrootcert` out of a `postgres://` URL. The error
/// does not contain the URL (it may hold a password): the caller names it.
pub fn split_url(url: &str) -> Result<UrlTls, String> {
    // The query starts at the first `?` after the user info (which runs to
    // the last `@`, as in `redact_url`: a password may hold a `?`).
    let after_userinfo = url.rfind('@').map_or(0, |at| at + 1);
    let Some(q) = url[after_userinfo..].find('?').map(|i| i + after_userinfo) else {
        return Ok(UrlTls {
            mode: None,
            root_cert: None,
            rest: url.to_owned(),
        });
    };
    let (base, query) = (&url[..q], &url[q + 1..]);
    let mut mode = None;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for param in query.split('&') {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        let value = percent_decode_str(value)
            .decode_utf8()
            .map_err(|_| format!("the value of {key} is not UTF-8 once percent-decoded"))?;
        match key {
            // Later ones win, as in libpq.
            "sslmode" => mode = Some(SslMode::parse(&value)?),
            "sslrootcert" if value.is_empty() => {
                return Err("sslrootcert is empty: give a PEM file of CA certificates".to_owned());
            }
            "sslrootcert" if value == "system" => root_cert = Some(RootCert::System),
            "sslrootcert" => {
                root_cert = Some(RootCert::File(PathBuf::from(&*value), "sslrootcert"));
            }
            _ => kept.push(param),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(UrlTls {
        mode,
        root_cert,
        rest,
    })
}

/// System CA bundles, in the order looked for: Debian and Ubuntu (and
/// Alpine with ca-certificates), Fedora and RHEL, openSUSE, Alpine and the
/// BSDs.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// What a connection needs: the mode for tokio-postgres and the connector.
pub struct Setup {
    /// For `tokio_postgres::Config::ssl_mode`.
    pub mode: tokio_postgres::config::SslMode,
    /// For the pool's manager.
    pub connector: MakeRustls,
}

/// Builds the connector for `url_tls`, reading the CA now (at start-up),
/// so that a missing or unreadable file is an error before any connection
/// is tried. `ca_file` is `database.ca_file`.
pub fn setup(url_tls: &UrlTls, ca_file: Option<&Path>) -> Result<Setup, StoreError> {
    let mode = url_tls.mode.unwrap_or(SslMode::Disable);
    let root_cert = match (&url_tls.root_cert, ca_file) {
        (Some(RootCert::File(url_path, _)), Some(setting)) if url_path != setting => {
            return Err(StoreError::Invalid(format!(
                "database.ca_file ({}) and sslrootcert in database.url ({}) name different CA files: keep one",
                setting.display(),
                url_path.display()
            )));
        }
        (Some(given), _) => Some(given.clone()),
        (None, Some(setting)) => Some(RootCert::File(setting.to_owned(), "database.ca_file")),
        (None, None) => None,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (verifier, trust): (Arc<dyn ServerCertVerifier>, String) = match (mode, root_cert) {
        (SslMode::Disable, _) => {
            return Ok(Setup {
                mode: mode.for_tokio_postgres(),
                connector: MakeRustls {
                    config: None,
                    mode,
                    trust: Arc::from(""),
                },
            });
        }
        (SslMode::Prefer | SslMode::Require, None) => (
            Arc::new(AnyCertificate {
                algorithms: provider.signature_verification_algorithms,
            }),
            "nothing (sslmode=require checks no certificate)".to_owned(),
        ),
        (SslMode::Prefer | SslMode::Require | SslMode::VerifyCa, root_cert) => {
            let (roots, trust) = load_roots(root_cert.as_ref())?;
            (
                Arc::new(ChainOnly {
                    inner: webpki_verifier(roots, &provider)?,
                }),
                trust,
            )
        }
        (SslMode::VerifyFull, root_cert) => {
            let (roots, trust) = load_roots(root_cert.as_ref())?;
            (webpki_verifier(roots, &provider)?, trust)
        }
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Invalid(format!("PostgreSQL TLS set-up: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // What libpq sends (PostgreSQL 17 requires it with
    // sslnegotiation=direct; older servers ignore it).
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Setup {
        mode: mode.for_tokio_postgres(),
        connector: MakeRustls {
            config: Some(Arc::new(config)),
            mode,
            trust: Arc::from(trust),
        },
    })
}

fn webpki_verifier(
    roots: RootCertStore,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, StoreError> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
        .build()
        .map_err(|e| StoreError::Invalid(format!("PostgreSQL TLS set-up: {e}")))
}

/// The CA certificates, and how messages name them ("CA file PATH").
fn load_roots(root_cert: Option<&RootCert>) -> Result<(RootCertStore, String), StoreError> {
    let (path, setting) = match root_cert {
        Some(RootCert::File(path, setting)) => (path.clone(), *setting),
        Some(RootCert::System) | None => (system_bundle()?, "the system's CA bundle"),
    };
    let shown = path.display();
    let unreadable = |e: &dyn fmt::Display| {
        StoreError::Invalid(format!(
            "cannot read the CA file {shown} ({setting}): {e}; check the path and its permissions"
        ))
    };
    // Read first so that a missing file is told as such, not as a PEM error.
    let pem = std::fs::read(&path).map_err(|e| unreadable(&io_reason(&e)))?;
    let mut roots = RootCertStore::empty();
    let mut found = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| unreadable(&e))?;
        found += 1;
        // A bundle may hold certificates webpki cannot use (old or odd
        // ones); the rest still count.
        let _ = roots.add(cert);
    }
    if found == 0 {
        return Err(StoreError::Invalid(format!(
            "the CA file {shown} ({setting}) holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        )));
    }
    if roots.is_empty() {
        return Err(StoreError::Invalid(format!(
            "none of the {found} certificates in the CA file {shown} ({setting}) is a usable CA certificate"
        )));
    }
    let trust = match root_cert {
        Some(RootCert::File(..)) => format!("CA file {shown}"),
        _ => format!("the system's CA bundle {shown}"),
    };
    Ok((roots, trust))
}

/// `SSL_CERT_FILE` (OpenSSL's variable), else the first bundle of
/// [`SYSTEM_BUNDLES`] that exists.
fn system_bundle() -> Result<PathBuf, StoreError> {
    if let Some(file) = std::env::var_os("SSL_CERT_FILE").filter(|f| !f.is_empty()) {
        return Ok(PathBuf::from(file));
    }
    SYSTEM_BUNDLES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            StoreError::Invalid(format!(
                "sslmode verify-ca and verify-full need CA certificates: set database.ca_file (or sslrootcert= in database.url); no system CA bundle was found ({}; install ca-certificates)",
                SYSTEM_BUNDLES.join(", ")
            ))
        })
}

/// "No such file or directory" rather than "… (os error 2)".
fn io_reason(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(_) => {
            let text = e.to_string();
            match text.rfind(" (os error") {
                Some(at) => text[..at].to_owned(),
                None => text,
            }
        }
        None => e.to_string(),
    }
}

/// `verify-ca`: the chain must lead to the CA; the name is not checked.
/// webpki checks the name last, after the chain, so a name mismatch means
/// the chain was good.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `require` without a CA: any certificate is accepted (encryption against
/// passive eavesdroppers only, as libpq's `require`), but the handshake's
/// signatures are still checked, so the server must hold the certificate's
/// key.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// tokio-postgres's `MakeTlsConnect` over rustls: one per pool, cloned per
/// connection attempt.
#[derive(Clone)]
pub struct MakeRustls {
    /// `None` for `sslmode=disable`, when tokio-postgres never asks for a
    /// handshake.
    config: Option<Arc<ClientConfig>>,
    mode: SslMode,
    /// What the certificate is checked against, for messages.
    trust: Arc<str>,
}

impl fmt::Debug for MakeRustls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MakeRustls")
            .field("mode", &self.mode)
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = TlsError;

    /// Never fails: tokio-postgres calls this even for `sslmode=disable`
    /// and for Unix sockets (host ""), so a bad name is reported only if a
    /// handshake is actually attempted.
    fn make_tls_connect(&mut self, host: &str) -> Result<RustlsConnect, TlsError> {
        Ok(RustlsConnect {
            make: self.clone(),
            host: host.to_owned(),
        })
    }
}

/// One handshake, to `host`.
#[derive(Debug)]
pub struct RustlsConnect {
    make: MakeRustls,
    host: String,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = TlsError;
    type Future = Pin<Box<dyn Future<Output = Result<RustlsStream<S>, TlsError>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let RustlsConnect { make, host } = self;
            let fail = |failure| TlsError {
                failure,
                host: host.clone(),
                mode: make.mode,
                trust: Arc::clone(&make.trust),
            };
            let Some(config) = make.config.clone() else {
                return Err(fail(Failure::NotConfigured));
            };
            let name = ServerName::try_from(host.clone())
                .map_err(|e| fail(Failure::BadHostName(e.to_string())))?;
            tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await
                .map(RustlsStream)
                .map_err(|e| fail(Failure::from_io(&e)))
        })
    }
}

/// The encrypted stream, with the channel binding SCRAM-SHA-256-PLUS needs.
#[derive(Debug)]
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S> TlsStream for RustlsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// `tls-server-end-point` (RFC 5929 §4.1): the server certificate's hash
    /// with its signature's hash function (SHA-256 for MD5 and SHA-1). None
    /// for signatures without one (Ed25519, RSA-PSS): tokio-postgres then
    /// uses SCRAM without channel binding, as libpq does.
    fn channel_binding(&self) -> ChannelBinding {
        let (_, session) = self.0.get_ref();
        let Some(cert) = session.peer_certificates().and_then(|c| c.first()) else {
            return ChannelBinding::none();
        };
        match signature_hash(cert) {
            Some(SignatureHash::Sha256) => {
                ChannelBinding::tls_server_end_point(sha2::Sha256::digest(cert).to_vec())
            }
            Some(SignatureHash::Sha384) => {
                ChannelBinding::tls_server_end_point(sha2::Sha384::digest(cert).to_vec())
            }
            Some(SignatureHash::Sha512) => {
                ChannelBinding::tls_server_end_point(sha2::Sha512::digest(cert).to_vec())
            }
            None => ChannelBinding::none(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SignatureHash {
    Sha256,
    Sha384,
    Sha512,
}

/// The hash function of a certificate's signature algorithm, read with a
/// minimal DER walk: Certificate ::= SEQUENCE { tbsCertificate,
/// signatureAlgorithm SEQUENCE { algorithm OID, … }, signature }.
fn signature_hash(cert: &[u8]) -> Option<SignatureHash> {
    let (tag, certificate, _) = der_element(cert)?;
    if tag != 0x30 {
        return None;
    }
    let (_, _tbs, rest) = der_element(certificate)?;
    let (tag, algorithm, _) = der_element(rest)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, oid, _) = der_element(algorithm)?;
    if tag != 0x06 {
        return None;
    }
    // 1.2.840.113549.1.1.{4,5,11,12,13}: RSA PKCS#1 v1.5 with MD5, SHA-1,
    // SHA-256, SHA-384, SHA-512; 1.2.840.10045.4.1 and 4.3.{2,3,4}: ECDSA
    // with SHA-1, SHA-256, SHA-384, SHA-512.
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
    const ECDSA_SHA2: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    if oid == ECDSA_SHA1 {
        return Some(SignatureHash::Sha256);
    }
    let (family, last) = oid.split_last().map(|(last, family)| (family, *last))?;
    match (family, last) {
        (RSA, 4 | 5 | 11) | (ECDSA_SHA2, 2) => Some(SignatureHash::Sha256),
        (RSA, 12) | (ECDSA_SHA2, 3) => Some(SignatureHash::Sha384),
        (RSA, 13) | (ECDSA_SHA2, 4) => Some(SignatureHash::Sha512),
        _ => None,
    }
}

/// One DER element: its tag, its contents and what follows it.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    let (contents, after) = rest.split_at(len);
    Some((tag, contents, after))
}

/// Why a TLS handshake with PostgreSQL failed.
#[derive(Debug)]
pub struct TlsError {
    failure: Failure,
    host: String,
    mode: SslMode,
    trust: Arc<str>,
}

#[derive(Debug)]
enum Failure {
    /// The chain does not lead to the CA (or is otherwise unacceptable).
    Untrusted(rustls::Error),
    /// The chain is good but not for this host name.
    WrongName(rustls::Error),
    /// Expired or not yet valid.
    Expired(rustls::Error),
    /// Any other TLS failure (an alert, a protocol error).
    Handshake(rustls::Error),
    /// The connection broke during the handshake.
    Io(String),
    /// The host is not something a certificate can name.
    BadHostName(String),
    /// A handshake with `sslmode=disable` (tokio-postgres never asks for
    /// one then).
    NotConfigured,
}

impl Failure {
    fn from_io(e: &io::Error) -> Failure {
        // tokio-rustls wraps rustls's error in an io::Error, whose
        // `source()` skips it: look at the wrapped error itself.
        let Some(tls) = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        else {
            return Failure::Io(io_reason(e));
        };
        match tls {
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => Failure::WrongName(tls.clone()),
            rustls::Error::InvalidCertificate(
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. },
            ) => Failure::Expired(tls.clone()),
            rustls::Error::InvalidCertificate(_) => Failure::Untrusted(tls.clone()),
            _ => Failure::Handshake(tls.clone()),
        }
    }
}

impl TlsError {
    /// The one-line message for PostgreSQL at `shown` (the redacted URL).
    pub fn message(&self, shown: &str) -> String {
        let trust = &self.trust;
        let mode = self.mode.as_str();
        let text = match &self.failure {
            Failure::Untrusted(e) => format!(
                "PostgreSQL at {shown}: TLS certificate not trusted by {trust} ({e}): check database.ca_file / sslrootcert"
            ),
            Failure::WrongName(e) => format!(
                "PostgreSQL at {shown}: TLS certificate is not valid for host name {:?} ({e}): use a host name the certificate lists in database.url, or sslmode=verify-ca",
                self.host
            ),
            Failure::Expired(e) => format!(
                "PostgreSQL at {shown}: TLS certificate is expired or not yet valid ({e}): renew the server's certificate or check this host's clock"
            ),
            Failure::Handshake(e) => format!(
                "TLS handshake with PostgreSQL at {shown} failed ({e}); check the server's ssl settings and sslmode={mode}"
            ),
            Failure::Io(e) => format!(
                "PostgreSQL at {shown} broke off the TLS handshake ({e}); check the server's ssl settings and sslmode={mode}"
            ),
            Failure::BadHostName(e) => format!(
                "PostgreSQL at {shown}: cannot check a TLS certificate for host {:?} ({e}): use a host name or IP address in database.url",
                self.host
            ),
            Failure::NotConfigured => {
                format!("PostgreSQL at {shown}: TLS handshake asked for with sslmode={mode}")
            }
        };
        text.replace(['\n', '\r'], " ")
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message(&format!("host {}", self.host)))
    }
}

impl std::error::Error for TlsError {}

/// The one-line message for a connection that failed because of TLS, or
/// `None` if TLS was not the problem.
pub fn connect_failure(e: &tokio_postgres::Error, shown: &str, mode: SslMode) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(err) = current {
        if let Some(tls) = err.downcast_ref::<TlsError>() {
            return Some(tls.message(shown));
        }
        // tokio-postgres's words when the server answers the SSLRequest
        // with 'N' (its error kinds are private); the test against a server
        // with ssl=off pins them.
        if err.to_string() == "server does not support TLS" {
            return Some(format!(
                "PostgreSQL at {shown} does not offer TLS, which sslmode={} requires: turn ssl on in its postgresql.conf, or lower sslmode in database.url",
                mode.as_str()
            ));
        }
        current = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_url_takes_out_sslmode_and_sslrootcert() {
        let u = split_url("postgres://u:p@h:5432/db").unwrap();
        assert_eq!(
            (u.mode, u.root_cert, u.rest.as_str()),
            (None, None, "postgres://u:p@h:5432/db")
        );

        let u = split_url(
            "postgres://u:p?x@h/db?connect_timeout=3&sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20x.pem&application_name=a",
        )
        .unwrap();
        assert_eq!(u.mode, Some(SslMode::VerifyFull));
        assert_eq!(
            u.root_cert,
            Some(RootCert::File(
                PathBuf::from("/etc/ca x.pem"),
                "sslrootcert"
            ))
        );
        assert_eq!(
            u.rest,
            "postgres://u:p?x@h/db?connect_timeout=3&application_name=a"
        );

        let u = split_url("postgres://h/db?sslmode=require&sslrootcert=system").unwrap();
        assert_eq!(u.mode, Some(SslMode::Require));
        assert_eq!(u.root_cert, Some(RootCert::System));
        assert_eq!(u.rest, "postgres://h/db");

        for mode in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            let u = split_url(&format!("postgres://h/db?sslmode={mode}")).unwrap();
            assert_eq!(u.mode.map(SslMode::as_str), Some(mode));
        }
        let e = split_url("postgres://h/db?sslmode=allow").unwrap_err();
        assert!(e.contains("not supported"), "{e}");
        let e = split_url("postgres://h/db?sslmode=verify_full").unwrap_err();
        assert!(e.contains("unknown sslmode \"verify_full\""), "{e}");
        assert!(split_url("postgres://h/db?sslrootcert=").is_err());
    }

    #[test]
    fn modes_for_tokio_postgres() {
        use tokio_postgres::config::SslMode as Pg;
        assert_eq!(SslMode::Disable.for_tokio_postgres(), Pg::Disable);
        assert_eq!(SslMode::Prefer.for_tokio_postgres(), Pg::Prefer);
        for m in [SslMode::Require, SslMode::VerifyCa, SslMode::VerifyFull] {
            assert_eq!(m.for_tokio_postgres(), Pg::Require);
        }
    }

    #[test]
    fn ca_file_errors_are_one_line_naming_the_file() {
        let url = |q: &str| split_url(&format!("postgres://h/db?{q}")).unwrap();
        let e = setup(
            &url("sslmode=verify-full"),
            Some(Path::new("/nonexistent/ca.pem")),
        )
        .err()
        .unwrap()
        .to_string();
        assert_eq!(
            e,
            "cannot read the CA file /nonexistent/ca.pem (database.ca_file): No such file or directory; check the path and its permissions"
        );
        let e = setup(
            &url("sslmode=verify-ca&sslrootcert=/nonexistent/x.pem"),
            None,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("/nonexistent/x.pem (sslrootcert)"), "{e}");
        let e = setup(
            &url("sslmode=verify-ca&sslrootcert=/a.pem"),
            Some(Path::new("/b.pem")),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("name different CA files"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = setup(&url("sslmode=require"), Some(&empty))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("holds no PEM certificate"), "{e}");
        assert!(!e.contains('\n'));

        // Without TLS, no file is read.
        assert!(setup(&url("sslmode=disable"), Some(&empty)).is_ok());
        assert!(setup(&url(""), Some(Path::new("/nonexistent"))).is_ok());
        assert!(setup(&url("sslmode=require"), None).is_ok());
    }

    #[test]
    fn der_walk_finds_the_signature_hash() {
        // A skeleton certificate: SEQUENCE { SEQUENCE {} (the TBS),
        // SEQUENCE { OID }, BIT STRING }.
        fn cert(oid: &[u8]) -> Vec<u8> {
            let mut alg = vec![0x06, oid.len() as u8];
            alg.extend_from_slice(oid);
            let mut body = vec![0x30, 0x00, 0x30, alg.len() as u8];
            body.extend_from_slice(&alg);
            body.extend_from_slice(&[0x03, 0x01, 0x00]);
            let mut out = vec![0x30, 0x81, body.len() as u8];
            out.extend_from_slice(&body);
            out
        }
        let rsa = |n: u8| cert(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, n]);
        let ec = |n: u8| cert(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, n]);
        assert_eq!(signature_hash(&rsa(11)), Some(SignatureHash::Sha256));
        assert_eq!(signature_hash(&rsa(5)), Some(SignatureHash::Sha256));
        assert_eq!(signature_hash(&rsa(12)), Some(SignatureHash::Sha384));
        assert_eq!(signature_hash(&rsa(13)), Some(SignatureHash::Sha512));
        assert_eq!(signature_hash(&rsa(10)), None, "RSA-PSS");
        assert_eq!(signature_hash(&ec(2)), Some(SignatureHash::Sha256));
        assert_eq!(signature_hash(&ec(3)), Some(SignatureHash::Sha384));
        assert_eq!(signature_hash(&cert(&[0x2b, 0x65, 0x70])), None, "Ed25519");
        assert_eq!(signature_hash(&[0x30, 0x05, 0x30]), None, "truncated");
        assert_eq!(signature_hash(&[]), None);
    }
}
