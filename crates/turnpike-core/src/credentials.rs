//! Per-shard cache of long-term credential keys.
//!
//! The core never sees passwords and never waits for a database: the shell
//! fills this cache (all static users at start; database users on demand,
//! see [`crate::Event::NeedCredentials`]) and the authentication path only
//! reads it. Keys are the RFC 8489 §9.2.2 long-term keys, pre-keyed as HMAC
//! states so each check costs one HMAC pass.

use std::sync::Arc;

use rustc_hash::FxHashMap;
use turnpike_codec::integrity::{self, Sha1Key, Sha256Key};

/// Both long-term keys of one user in one realm.
#[derive(Clone, Debug)]
pub struct UserKeys {
    /// HMAC-SHA1 key: MD5(username ":" realm ":" password).
    pub sha1: Sha1Key,
    /// HMAC-SHA256 key: SHA-256(username ":" realm ":" password).
    pub sha256: Sha256Key,
}

impl UserKeys {
    /// Keys derived from a password (static users in the configuration).
    pub fn from_password(username: &str, realm: &str, password: &str) -> Self {
        UserKeys {
            sha1: Sha1Key::new(&integrity::long_term_key_md5(username, realm, password)),
            sha256: Sha256Key::new(&integrity::long_term_key_sha256(username, realm, password)),
        }
    }

    /// Keys from stored key material (a database keeps keys, not passwords).
    pub fn from_keys(md5: &[u8; 16], sha256: &[u8; 32]) -> Self {
        UserKeys {
            sha1: Sha1Key::new(md5),
            sha256: Sha256Key::new(sha256),
        }
    }
}

/// A user as the authentication path sees it.
#[derive(Debug)]
pub(crate) struct User {
    pub(crate) name: Arc<str>,
    pub(crate) keys: UserKeys,
}

/// Usernames and USERHASHes to keys.
#[derive(Debug, Default)]
pub(crate) struct Credentials {
    by_name: FxHashMap<Arc<str>, Arc<User>>,
    by_userhash: FxHashMap<[u8; 32], Arc<User>>,
}

impl Credentials {
    pub(crate) fn insert(&mut self, username: &str, realm: &str, keys: UserKeys) {
        let user = Arc::new(User {
            name: Arc::from(username),
            keys,
        });
        self.by_userhash
            .insert(integrity::userhash(username, realm), Arc::clone(&user));
        self.by_name.insert(Arc::clone(&user.name), user);
    }

    pub(crate) fn remove(&mut self, username: &str, realm: &str) {
        self.by_name.remove(username);
        self.by_userhash
            .remove(&integrity::userhash(username, realm));
    }

    pub(crate) fn by_name(&self, username: &str) -> Option<&Arc<User>> {
        self.by_name.get(username)
    }

    pub(crate) fn by_userhash(&self, hash: &[u8; 32]) -> Option<&Arc<User>> {
        self.by_userhash.get(hash)
    }
}
