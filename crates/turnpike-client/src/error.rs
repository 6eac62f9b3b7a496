//! The client's error type.

use std::io;

use turnpike_codec::EncodeError;

/// Why a TURN operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A socket operation failed (including `ECONNREFUSED` from an ICMP port
    /// unreachable: nothing listens at the server address).
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    /// A request could not be written (e.g. a buffer too small for it).
    #[error("cannot encode request: {0}")]
    Encode(#[from] EncodeError),
    /// No valid response arrived after every retransmission.
    #[error("no response from the server (request timed out after retransmissions)")]
    Timeout,
    /// The server refused the credentials: a 401 answered a request signed
    /// with the realm and nonce of that very challenge, or a 401 came without
    /// REALM and NONCE to retry with.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The server kept answering 438 (Stale Nonce) to fresh nonces.
    #[error("server keeps answering 438 Stale Nonce")]
    StaleNonceLoop,
    /// 300 (Try Alternate) with ALTERNATE-SERVER: the server sends the
    /// client to another server (RFC 8489 §10). To a signed request it is
    /// reported only with a valid MESSAGE-INTEGRITY, as RFC 8489 §14.8
    /// requires before a client follows it; following it (a new client for
    /// that address) is the caller's choice.
    #[error("try alternate server {server} ({reason})")]
    TryAlternate {
        /// The ALTERNATE-SERVER address.
        server: std::net::SocketAddr,
        /// The server's reason phrase.
        reason: String,
    },
    /// Any other error response: the code and reason phrase.
    #[error("error response {code} {reason}")]
    ErrorResponse {
        /// ERROR-CODE number, e.g. 437.
        code: u16,
        /// The server's reason phrase.
        reason: String,
    },
    /// A success or error response lacked something the protocol requires
    /// (e.g. an Allocate success without XOR-RELAYED-ADDRESS).
    #[error("invalid response: {0}")]
    InvalidResponse(&'static str),
}

impl ClientError {
    /// The STUN error code, if the server answered with an error response.
    pub fn error_code(&self) -> Option<u16> {
        match self {
            ClientError::ErrorResponse { code, .. } => Some(*code),
            ClientError::TryAlternate { .. } => Some(300),
            ClientError::Unauthorized(_) => Some(401),
            ClientError::StaleNonceLoop => Some(438),
            _ => None,
        }
    }
}
