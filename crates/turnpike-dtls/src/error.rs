//! The crate's one error type.

use std::net::SocketAddr;

/// What went wrong. Every `Display` is a single line, fit for a log line or
/// a startup error message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DtlsError {
    /// A configuration value is out of range (the message says which).
    #[error("invalid DTLS configuration: {0}")]
    Config(&'static str),
    /// The certificate chain PEM holds no certificate.
    #[error("no certificate in the DTLS certificate chain PEM")]
    NoCertificate,
    /// The certificate chain PEM could not be parsed.
    #[error("DTLS certificate chain could not be parsed: {0}")]
    Certificate(String),
    /// The private key PEM could not be parsed.
    #[error("DTLS private key could not be parsed (PKCS#8, PKCS#1 or SEC1 PEM, unencrypted): {0}")]
    PrivateKey(String),
    /// The private key does not belong to the leaf certificate.
    #[error("DTLS certificate and key do not match")]
    KeyMismatch,
    /// OpenSSL refused something while building the TLS context.
    #[error("DTLS (OpenSSL) error: {0}")]
    Tls(String),
    /// [`send`](crate::DtlsServer::send) to an address without a session.
    #[error("no DTLS session with {0}")]
    NoSession(SocketAddr),
    /// [`send`](crate::DtlsServer::send) to a session whose handshake has not
    /// finished yet.
    #[error("DTLS session with {0} is still handshaking")]
    NotEstablished(SocketAddr),
    /// Application data larger than one record.
    #[error("{len} bytes do not fit one DTLS record (at most {max} bytes)")]
    TooLarge {
        /// Length of the data passed to `send`.
        len: usize,
        /// Largest payload of one record.
        max: usize,
    },
    /// The peer already has the maximum number of outputs waiting in
    /// [`poll_output`](crate::DtlsServer::poll_output).
    #[error("too many unsent DTLS outputs for {0} (drain poll_output)")]
    QueueFull(SocketAddr),
    /// OpenSSL failed the session while encrypting; the session is gone
    /// (an [`Output::Closed`](crate::Output::Closed) was queued).
    #[error("DTLS session with {0} failed and was closed")]
    SessionFailed(SocketAddr),
}

/// One line from an OpenSSL error stack (which may hold several entries).
pub(crate) fn one_line(err: impl std::fmt::Display) -> String {
    let text = err.to_string();
    let mut line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    line.truncate(line.trim_end().len());
    if line.is_empty() {
        line.push_str("unknown error");
    }
    line
}
