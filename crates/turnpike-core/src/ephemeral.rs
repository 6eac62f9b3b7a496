//! Time-limited credentials derived from shared secrets: the password is
//! not stored anywhere but recomputed from the username and a secret the
//! server shares with the application that hands out credentials.
//!
//! Two username formats are understood:
//!
//! - **TURN REST API** (draft-uberti-behave-turn-rest, coturn's
//!   `use-auth-secret`): `<expiry>[:<user-id>]` (coturn also accepts
//!   `<user-id>:<expiry>`; the separator is configurable), password
//!   `base64(HMAC-SHA1(secret, username))`. Every secret is tried, which is
//!   how secrets rotate without downtime.
//! - **Wire's restund** (`zrest`): `d=<expiry>.v=1.k=<key-index>.t=s.r=<random>`,
//!   password `base64(HMAC-SHA512(secret, username))`. `k` names the secret;
//!   restund ignores it, we honour it, so an operator can retire one key
//!   index without invalidating the others.
//!
//! Expiry times are Unix seconds. The long-term key is then derived from the
//! password as for any user (RFC 8489 §9.2.2).

use std::sync::Arc;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::Sha512;

use crate::credentials::UserKeys;

/// Longest username treated as ephemeral: real ones are well under 100 bytes,
/// and each candidate secret costs a few HMAC passes over it.
const MAX_USERNAME: usize = 256;

/// A shared secret and the key index Wire-format usernames name it by.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedSecret {
    /// Index selected by the `k=` field of Wire-format usernames.
    pub key_index: u32,
    /// The secret itself.
    pub value: Box<[u8]>,
}

impl std::fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets never reach logs.
        f.debug_struct("SharedSecret")
            .field("key_index", &self.key_index)
            .finish_non_exhaustive()
    }
}

/// The secrets currently accepted, shared read-only by all shards and
/// replaced as a whole when the operator adds or removes one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Secrets {
    secrets: Arc<[SharedSecret]>,
}

impl Secrets {
    /// The given secrets, in the order they are tried.
    pub fn new(secrets: impl IntoIterator<Item = SharedSecret>) -> Self {
        Secrets {
            secrets: secrets.into_iter().collect(),
        }
    }

    /// No secret: ephemeral credentials are off.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// How many secrets there are.
    pub fn len(&self) -> usize {
        self.secrets.len()
    }
}

/// What a username says about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// TURN REST API: HMAC-SHA1, every secret tried.
    Rest,
    /// Wire restund: HMAC-SHA512 with the secret of this key index.
    Wire {
        /// The `k=` field.
        key_index: u32,
    },
}

/// A username in one of the ephemeral formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ephemeral {
    /// Which format, and so which HMAC and which secrets.
    pub format: Format,
    /// Unix time (seconds) after which the credential is refused.
    pub expires: u64,
}

/// Recognises an ephemeral username; `None` for anything else (an ordinary
/// long-term user).
pub fn parse(username: &str, separator: char) -> Option<Ephemeral> {
    if username.len() > MAX_USERNAME {
        return None;
    }
    parse_wire(username).or_else(|| parse_rest(username, separator))
}

fn parse_rest(username: &str, separator: char) -> Option<Ephemeral> {
    let expires = match username.split_once(separator) {
        None => unix_seconds(username)?,
        Some((first, rest)) => {
            unix_seconds(first).or_else(|| unix_seconds(rest.rsplit(separator).next()?))?
        }
    };
    Some(Ephemeral {
        format: Format::Rest,
        expires,
    })
}

fn parse_wire(username: &str) -> Option<Ephemeral> {
    let mut fields = username.split('.');
    let mut field = |name: &str| fields.next()?.strip_prefix(name);
    let expires = unix_seconds(field("d=")?)?;
    if field("v=")? != "1" {
        return None;
    }
    let key_index = field("k=")?;
    if key_index.is_empty() || !key_index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let key_index = key_index.parse().ok()?;
    field("t=")?;
    field("r=")?;
    Some(Ephemeral {
        format: Format::Wire { key_index },
        expires,
    })
}

/// Plain decimal digits only: `+5` or ` 5` are not timestamps.
fn unix_seconds(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The password an application derives for `username` from `secret`.
pub fn password(format: Format, secret: &[u8], username: &str) -> String {
    let engine = &base64::engine::general_purpose::STANDARD;
    match format {
        Format::Rest => {
            // new_from_slice accepts keys of any length for HMAC.
            let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(secret)
                .expect("HMAC takes keys of any length");
            mac.update(username.as_bytes());
            engine.encode(mac.finalize().into_bytes())
        }
        Format::Wire { .. } => {
            let mut mac = <Hmac<Sha512> as KeyInit>::new_from_slice(secret)
                .expect("HMAC takes keys of any length");
            mac.update(username.as_bytes());
            engine.encode(mac.finalize().into_bytes())
        }
    }
}

/// How a credential is minted: the username format and what goes in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mint<'a> {
    /// TURN REST API: `<expiry>` or `<expiry><separator><user id>`.
    Rest {
        /// The application's name for the user, if it gives one.
        user_id: Option<&'a str>,
        /// `turn.rest_separator` of the relays.
        separator: char,
    },
    /// Wire's `d=<expiry>.v=1.k=<key index>.t=s.r=<random>`.
    Wire {
        /// Makes each username unique (alphanumeric, from the caller's
        /// random source: the core has no entropy of its own).
        random: &'a str,
    },
}

/// A credential as handed to a client.
#[derive(Clone, PartialEq, Eq)]
pub struct Minted {
    /// USERNAME, which carries the expiry.
    pub username: String,
    /// The password derived from the username and the secret.
    pub password: String,
}

impl std::fmt::Debug for Minted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minted")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The `r=` field of a Wire username: 16 alphanumeric characters, enough
/// that two credentials minted in the same second differ.
pub fn wire_random(rng: &mut impl rand::Rng) -> String {
    (0..16)
        .map(|_| char::from(rng.sample(rand::distr::Alphanumeric)))
        .collect()
}

/// Mints a credential valid until `expires` (Unix seconds) with `secret`,
/// which a server holding the same secret accepts ([`parse`], then the
/// password check).
pub fn mint(how: Mint<'_>, secret: &SharedSecret, expires: u64) -> Minted {
    let (format, username) = match how {
        Mint::Rest {
            user_id: Some(id),
            separator,
        } => (Format::Rest, format!("{expires}{separator}{id}")),
        Mint::Rest { user_id: None, .. } => (Format::Rest, expires.to_string()),
        Mint::Wire { random } => (
            Format::Wire {
                key_index: secret.key_index,
            },
            format!("d={expires}.v=1.k={}.t=s.r={random}", secret.key_index),
        ),
    };
    let password = password(format, &secret.value, &username);
    Minted { username, password }
}

/// The long-term keys of `username` under each secret that may have issued
/// it, in order: every secret for the REST format, the secrets with the
/// named key index for Wire's.
pub(crate) fn candidate_keys<'a>(
    secrets: &'a Secrets,
    format: Format,
    username: &'a str,
    realm: &'a str,
) -> impl Iterator<Item = UserKeys> + 'a {
    secrets
        .secrets
        .iter()
        .filter(move |s| match format {
            Format::Rest => true,
            Format::Wire { key_index } => s.key_index == key_index,
        })
        .map(move |s| {
            UserKeys::from_password(username, realm, &password(format, &s.value, username))
        })
}

/// The names a USERNAME answers to for the operator: itself, and for a
/// time-limited credential (`expiry<separator>user id`) the user id too.
pub fn user_names(username: &str, separator: char) -> impl Iterator<Item = &str> {
    std::iter::once(username).chain(user_id(username, separator))
}

/// The user id of a TURN REST API username (`expiry<separator>user id`):
/// what stays the same across the credentials an application mints for one
/// user. `None` when the username has none (a bare expiry, a Wire-format
/// name, an ordinary long-term username).
pub fn user_id(username: &str, separator: char) -> Option<&str> {
    username
        .split_once(separator)
        .filter(|(expiry, id)| {
            !id.is_empty() && !expiry.is_empty() && expiry.bytes().all(|b| b.is_ascii_digit())
        })
        .map(|(_, id)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_usernames() {
        let rest = |expires| {
            Some(Ephemeral {
                format: Format::Rest,
                expires,
            })
        };
        assert_eq!(parse("1700000000", ':'), rest(1_700_000_000));
        assert_eq!(parse("1700000000:alice", ':'), rest(1_700_000_000));
        assert_eq!(parse("alice:1700000000", ':'), rest(1_700_000_000));
        assert_eq!(parse("1700000000:a:b", ':'), rest(1_700_000_000));
        assert_eq!(parse("1700000000-alice", '-'), rest(1_700_000_000));
        assert_eq!(parse("alice", ':'), None);
        assert_eq!(parse("alice:bob", ':'), None);
        assert_eq!(parse("+1700000000", ':'), None);
        assert_eq!(parse("", ':'), None);
        assert_eq!(parse(":", ':'), None);
        assert_eq!(parse("99999999999999999999999", ':'), None);
        assert_eq!(parse(&"1".repeat(300), ':'), None);
    }

    #[test]
    fn wire_usernames() {
        let name = "d=1700000000.v=1.k=3.t=s.r=abcdef";
        assert_eq!(
            parse(name, ':'),
            Some(Ephemeral {
                format: Format::Wire { key_index: 3 },
                expires: 1_700_000_000,
            })
        );
        for bad in [
            "d=1700000000.v=2.k=3.t=s.r=abc",
            "d=1700000000.v=1.k=.t=s.r=abc",
            "d=1700000000.v=1.k=x.t=s.r=abc",
            "d=x.v=1.k=3.t=s.r=abc",
            "d=1700000000.v=1.k=3.t=s",
            "v=1.d=1700000000.k=3.t=s.r=abc",
        ] {
            assert_eq!(parse(bad, ':'), None, "{bad}");
        }
    }

    /// Values computed independently with `openssl dgst -hmac`.
    #[test]
    fn rest_password_matches_known_values() {
        // printf '1700000000:alice' | openssl dgst -binary -sha1 -hmac s3cret | base64
        assert_eq!(
            password(Format::Rest, b"s3cret", "1700000000:alice"),
            "TtElzSjT0GdnTQ9xdcRNxx96yQs="
        );
        // printf 'd=1700000000.v=1.k=0.t=s.r=abc' | openssl dgst -binary -sha512 -hmac s3cret | base64 -w0
        assert_eq!(
            password(
                Format::Wire { key_index: 0 },
                b"s3cret",
                "d=1700000000.v=1.k=0.t=s.r=abc"
            ),
            "wTwHu+BwLzip894WhoNGXs9Nh41TlzpvvoChfCkor8dEERn37GwF9g2gpC7IBlo7EpDNHHzVL2Eq7u8ffMSBGA=="
        );
    }

    #[test]
    fn wire_candidates_follow_the_key_index() {
        let secrets = Secrets::new([
            SharedSecret {
                key_index: 0,
                value: b"zero".as_slice().into(),
            },
            SharedSecret {
                key_index: 1,
                value: b"one".as_slice().into(),
            },
        ]);
        let name = "d=1.v=1.k=1.t=s.r=x";
        assert_eq!(
            candidate_keys(&secrets, Format::Wire { key_index: 1 }, name, "r").count(),
            1
        );
        assert_eq!(
            candidate_keys(&secrets, Format::Wire { key_index: 7 }, name, "r").count(),
            0
        );
        assert_eq!(
            candidate_keys(&secrets, Format::Rest, "1:x", "r").count(),
            2
        );
    }

    #[test]
    fn minted_credentials_parse_and_match() {
        let secret = SharedSecret {
            key_index: 4,
            value: b"s3cret".as_slice().into(),
        };
        let rest = mint(
            Mint::Rest {
                user_id: Some("alice"),
                separator: ':',
            },
            &secret,
            1_700_000_000,
        );
        assert_eq!(rest.username, "1700000000:alice");
        assert_eq!(rest.password, "TtElzSjT0GdnTQ9xdcRNxx96yQs=");
        let wire = mint(Mint::Wire { random: "abc" }, &secret, 1_700_000_000);
        assert_eq!(wire.username, "d=1700000000.v=1.k=4.t=s.r=abc");
        assert_eq!(
            parse(&wire.username, ':'),
            Some(Ephemeral {
                format: Format::Wire { key_index: 4 },
                expires: 1_700_000_000,
            })
        );
        assert!(!format!("{wire:?}").contains(&wire.password));
    }
}
