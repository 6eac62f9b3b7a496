//! Reading coturn's database (its `turndb/schema.sql`, and the same tables
//! that coturn creates itself in SQLite):
//!
//! ```sql
//! CREATE TABLE turnusers_lt (realm varchar(127) default '', name varchar(512),
//!     hmackey char(128), PRIMARY KEY (realm,name));
//! CREATE TABLE turn_secret (realm varchar(127) default '', value varchar(256),
//!     primary key (realm,value));
//! ```
//!
//! `hmackey` is the lowercase hex of the long-term key. Which hash made it
//! depends on how coturn was run: MD5 by default (32 hex digits), SHA-256
//! with `--sha256` (64 hex digits; coturn's own non-standard use of the
//! SHA-256 key, which is still RFC 8489's SHA-256 key). Those are the only
//! two Turnpike can use; anything else (SHA-384/512 keys, garbage) is treated
//! as no such user.

use crate::{Secret, StoredKeys};

/// The tables a coturn database must have.
pub(crate) const TABLES: [&str; 2] = ["turnusers_lt", "turn_secret"];

/// Decodes an `hmackey` value. PostgreSQL pads `char(128)` with spaces, so
/// surrounding whitespace is ignored; hex digits of either case are
/// accepted.
pub(crate) fn decode_hmackey(hmackey: &str) -> Option<StoredKeys> {
    let bytes = hex::decode(hmackey.trim()).ok()?;
    match bytes.len() {
        16 => StoredKeys::from_db(Some(&bytes), None),
        32 => StoredKeys::from_db(None, Some(&bytes)),
        _ => None,
    }
}

/// A realm's secrets from their values: coturn has no index column, so they
/// are numbered 0, 1, … in the order given (by value, in byte order).
pub(crate) fn numbered_secrets(realm: &str, values: Vec<String>) -> Vec<Secret> {
    let mut key_index = 0u32;
    let mut secrets = Vec::with_capacity(values.len());
    for value in values {
        secrets.push(Secret {
            realm: realm.to_owned(),
            key_index,
            value,
            created_at: None,
        });
        key_index = key_index.saturating_add(1);
    }
    secrets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_sha256_and_garbage() {
        let md5 = turnpike_codec::integrity::long_term_key_md5("alice", "r", "pw");
        let k = decode_hmackey(&hex::encode(md5)).unwrap();
        assert_eq!(k.md5, Some(md5));
        assert_eq!(k.sha256, None);

        let sha = turnpike_codec::integrity::long_term_key_sha256("alice", "r", "pw");
        let padded = format!("{}{}", hex::encode_upper(sha), " ".repeat(64));
        let k = decode_hmackey(&padded).unwrap();
        assert_eq!(k.md5, None);
        assert_eq!(k.sha256, Some(sha));

        for bad in [
            "",
            "   ",
            "zz",
            "abc",
            &"ab".repeat(48),
            &"ab".repeat(64),
            "é0123456789abcdef0123456789abcde",
        ] {
            assert_eq!(decode_hmackey(bad), None, "{bad:?}");
        }
    }
}
