//! What each database implements: only its SQL.
//!
//! [`CredentialDb`](crate::CredentialDb)'s provided methods check the input
//! and the schema first, in one place for every backend, and then call these.
//! The module is private, so the trait cannot be named (or its unchecked
//! methods called) outside the crate: it seals `CredentialDb`.

use std::future::Future;

use crate::{Schema, Secret, StoreError, StoredKeys, UserInfo};

/// The SQL of one database. Lookups get names that can be looked up at all
/// (no NUL); writes get names and values that passed validation, and are
/// only called on [`Schema::Turnpike`].
pub trait Backend: Send + Sync {
    /// Which schema the database holds.
    fn schema(&self) -> Schema;

    /// See [`CredentialDb::user_keys`](crate::CredentialDb::user_keys).
    fn find_user_keys(
        &self,
        realm: &str,
        username: &str,
    ) -> impl Future<Output = Result<Option<StoredKeys>, StoreError>> + Send;

    /// See [`CredentialDb::secrets`](crate::CredentialDb::secrets).
    fn find_secrets(
        &self,
        realm: &str,
    ) -> impl Future<Output = Result<Vec<Secret>, StoreError>> + Send;

    /// See [`CredentialDb::realms`](crate::CredentialDb::realms).
    fn find_realms(&self) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// See [`CredentialDb::list_users`](crate::CredentialDb::list_users).
    fn find_users(
        &self,
        realm: Option<&str>,
    ) -> impl Future<Output = Result<Vec<UserInfo>, StoreError>> + Send;

    /// Registers a realm unless it is known.
    fn insert_realm(&self, realm: String) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Adds a user to a registered realm.
    fn insert_user(
        &self,
        user: UserRef,
        keys: StoredKeys,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Replaces an existing user's keys.
    fn update_user_keys(
        &self,
        user: UserRef,
        keys: StoredKeys,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes a user.
    fn delete_user(&self, user: UserRef) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Adds a secret to a registered realm (see [`new_secret_index`]).
    fn insert_secret(
        &self,
        realm: String,
        key_index: Option<u32>,
        value: String,
    ) -> impl Future<Output = Result<u32, StoreError>> + Send;

    /// Removes a secret.
    fn delete_secret(
        &self,
        realm: String,
        which: OwnedSecretRef,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// A realm and username checked for writing, owned so that a backend can
/// move them to a worker thread or keep them for a retry.
#[derive(Clone, Debug)]
pub struct UserRef {
    pub realm: String,
    pub username: String,
}

impl UserRef {
    /// For messages: `user "alice" in realm "example.org"`.
    pub fn label(&self) -> String {
        format!("user {:?} in realm {:?}", self.username, self.realm)
    }
}

/// A [`SecretRef`](crate::SecretRef) that can move to another thread,
/// checked for writing.
#[derive(Clone)]
pub enum OwnedSecretRef {
    Index(u32),
    Value(String),
}

/// Never shows the value.
impl std::fmt::Debug for OwnedSecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OwnedSecretRef::Index(index) => f.debug_tuple("Index").field(index).finish(),
            OwnedSecretRef::Value(value) => write!(f, "Value(<{} bytes>)", value.len()),
        }
    }
}

impl OwnedSecretRef {
    /// For messages: never the value itself.
    pub fn label(&self, realm: &str) -> String {
        match self {
            OwnedSecretRef::Index(index) => format!("secret {index} in realm {realm:?}"),
            OwnedSecretRef::Value(_) => same_value_label(realm),
        }
    }
}

/// For messages about a secret given by its value, which is never shown.
fn same_value_label(realm: &str) -> String {
    format!("a secret with that value in realm {realm:?}")
}

/// Where a new secret goes, decided the same way by every backend inside its
/// write transaction: `duplicate` says whether the realm already has a secret
/// with this value, `taken` lists the indexes in use (ascending).
pub fn new_secret_index(
    realm: &str,
    key_index: Option<u32>,
    duplicate: bool,
    taken: &[u32],
) -> Result<u32, StoreError> {
    if duplicate {
        return Err(StoreError::AlreadyExists(same_value_label(realm)));
    }
    match key_index {
        Some(index) if taken.contains(&index) => Err(StoreError::AlreadyExists(
            OwnedSecretRef::Index(index).label(realm),
        )),
        Some(index) => Ok(index),
        None => lowest_free_index(taken).ok_or_else(|| {
            StoreError::Invalid(format!("realm {realm:?} has no free secret index"))
        }),
    }
}

/// The lowest index ≥ 0 not in `taken`, which must be sorted ascending.
pub fn lowest_free_index(taken: &[u32]) -> Option<u32> {
    let mut next: u32 = 0;
    for &i in taken {
        if i > next {
            break;
        }
        if i == next {
            next = next.checked_add(1)?;
        }
    }
    Some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_free_index_fills_gaps() {
        assert_eq!(lowest_free_index(&[]), Some(0));
        assert_eq!(lowest_free_index(&[0, 1, 2]), Some(3));
        assert_eq!(lowest_free_index(&[0, 2, 3]), Some(1));
        assert_eq!(lowest_free_index(&[1, 2]), Some(0));
        assert_eq!(lowest_free_index(&[0, 0, 1]), Some(2));
        assert_eq!(lowest_free_index(&[5, 9]), Some(0));
    }

    #[test]
    fn new_secret_index_checks_value_then_index() {
        let taken = [0, 1, 5];
        assert_eq!(new_secret_index("r", None, false, &taken).unwrap(), 2);
        assert_eq!(new_secret_index("r", Some(7), false, &taken).unwrap(), 7);
        assert_eq!(
            new_secret_index("r", Some(5), false, &taken)
                .unwrap_err()
                .to_string(),
            "secret 5 in realm \"r\" already exists"
        );
        assert_eq!(
            new_secret_index("r", Some(7), true, &taken)
                .unwrap_err()
                .to_string(),
            "a secret with that value in realm \"r\" already exists"
        );
        let full: Vec<u32> = vec![u32::MAX];
        assert_eq!(new_secret_index("r", None, false, &full).unwrap(), 0);
    }
}
