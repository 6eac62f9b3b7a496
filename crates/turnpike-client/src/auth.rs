//! Long-term credentials (RFC 8489 §9.2, RFC 8656 §5).
//!
//! A TURN client starts knowing only a username and password. Its first
//! request goes out unsigned; the server answers 401 with a REALM and a NONCE;
//! from then on every request carries USERNAME, REALM, NONCE and a
//! MESSAGE-INTEGRITY keyed with MD5(username ":" realm ":" password). When the
//! nonce expires the server answers 438 with a new one.
//!
//! [`AuthState`] is that knowledge. It belongs to one client 5-tuple (one
//! allocation) and is shared by all of its transactions: the transactions
//! update it when a challenge arrives ([`crate::ClientTransaction`] does this)
//! and read it when they sign a request.

use core::fmt;

use turnpike_codec::attr::Attribute;
use turnpike_codec::integrity::long_term_key_md5;
use turnpike_codec::{EncodeError, MessageBuilder, Sha1Key};

/// A username and password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The USERNAME sent to the server.
    pub username: String,
    /// The password; never sent, only used to derive the key.
    pub password: String,
}

impl Credentials {
    /// Credentials from a username and password.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"..")
            .finish()
    }
}

/// What a client knows for signing requests: its credentials plus the realm,
/// nonce and derived key learned from the server's challenges.
#[derive(Clone)]
pub struct AuthState {
    credentials: Credentials,
    realm: Option<String>,
    nonce: Option<String>,
    /// MD5 long-term key of (username, realm, password), pre-keyed for HMAC;
    /// recomputed only when the realm changes.
    key: Option<Sha1Key>,
}

impl fmt::Debug for AuthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthState")
            .field("username", &self.credentials.username)
            .field("realm", &self.realm)
            .field("nonce", &self.nonce)
            .finish_non_exhaustive()
    }
}

impl AuthState {
    /// A state that knows only the credentials: the next request goes out
    /// unsigned, to be challenged.
    pub fn new(credentials: Credentials) -> Self {
        AuthState {
            credentials,
            realm: None,
            nonce: None,
            key: None,
        }
    }

    /// The username.
    pub fn username(&self) -> &str {
        &self.credentials.username
    }

    /// The realm learned from a 401, if any.
    pub fn realm(&self) -> Option<&str> {
        self.realm.as_deref()
    }

    /// The current nonce, if any.
    pub fn nonce(&self) -> Option<&str> {
        self.nonce.as_deref()
    }

    /// Whether requests will be signed (a realm and nonce are known).
    pub fn is_ready(&self) -> bool {
        self.key.is_some() && self.nonce.is_some()
    }

    /// The MESSAGE-INTEGRITY key, once a realm is known.
    pub fn key(&self) -> Option<&Sha1Key> {
        self.key.as_ref()
    }

    /// Takes the realm and nonce of a 401 challenge.
    pub fn challenge(&mut self, realm: &str, nonce: &str) {
        if self.realm.as_deref() != Some(realm) || self.key.is_none() {
            let key = long_term_key_md5(
                &self.credentials.username,
                realm,
                &self.credentials.password,
            );
            self.key = Some(Sha1Key::new(&key));
            self.realm = Some(realm.to_owned());
        }
        self.set_nonce(nonce);
    }

    /// Takes a new nonce (from a 438, or a NONCE in any response).
    pub fn set_nonce(&mut self, nonce: &str) {
        if self.nonce.as_deref() != Some(nonce) {
            self.nonce = Some(nonce.to_owned());
        }
    }

    /// Appends USERNAME, REALM, NONCE and MESSAGE-INTEGRITY when a challenge
    /// has been taken; appends nothing otherwise (the request then goes out
    /// unsigned, to be challenged). Must be called after every other
    /// attribute: MESSAGE-INTEGRITY covers what precedes it. Returns whether
    /// the message was signed.
    pub fn sign(&self, builder: &mut MessageBuilder<'_>) -> Result<bool, EncodeError> {
        let (Some(realm), Some(nonce), Some(key)) = (&self.realm, &self.nonce, &self.key) else {
            return Ok(false);
        };
        builder.add(&Attribute::Username(&self.credentials.username))?;
        builder.add(&Attribute::Realm(realm))?;
        builder.add(&Attribute::Nonce(nonce))?;
        builder.add_message_integrity(key)?;
        Ok(true)
    }
}
