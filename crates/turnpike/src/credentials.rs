//! Where long-term credentials come from: the [`CredentialStore`] trait,
//! which the workers call (asynchronously, off the packet path) when the core
//! meets a user it has no keys for, and its static implementation over the
//! users in the configuration file. Database stores implement the same trait.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use turnpike_core::UserKeys;

/// Why a lookup failed (as opposed to "no such user").
#[derive(Debug, thiserror::Error)]
#[error("credential store unavailable: {0}")]
pub struct StoreError(pub String);

/// A boxed lookup future: stores are called through `dyn`, so the future's
/// type cannot be named.
pub type Lookup<'a> =
    Pin<Box<dyn Future<Output = Result<Option<UserKeys>, StoreError>> + Send + 'a>>;

/// A source of long-term credential keys for one realm.
pub trait CredentialStore: Send + Sync + std::fmt::Debug {
    /// The keys of `username`, `Ok(None)` if there is no such user.
    fn lookup<'a>(&'a self, username: &'a str) -> Lookup<'a>;

    /// Every user to load into the shards at start (a small static set);
    /// database stores return nothing and are asked on demand.
    fn preload(&self) -> Vec<(String, UserKeys)> {
        Vec::new()
    }
}

/// The users of the configuration file.
#[derive(Debug, Default)]
pub struct StaticCredentials {
    users: HashMap<String, UserKeys>,
}

impl StaticCredentials {
    /// Derives the keys of each `(username, password)` in `realm`; the
    /// passwords themselves are not kept.
    pub fn new<'a>(realm: &str, users: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        StaticCredentials {
            users: users
                .into_iter()
                .map(|(name, password)| {
                    (
                        name.to_owned(),
                        UserKeys::from_password(name, realm, password),
                    )
                })
                .collect(),
        }
    }
}

impl CredentialStore for StaticCredentials {
    fn lookup<'a>(&'a self, username: &'a str) -> Lookup<'a> {
        let keys = self.users.get(username).cloned();
        Box::pin(async move { Ok(keys) })
    }

    fn preload(&self) -> Vec<(String, UserKeys)> {
        self.users
            .iter()
            .map(|(n, k)| (n.clone(), k.clone()))
            .collect()
    }
}
