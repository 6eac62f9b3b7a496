//! The long-term credential mechanism (RFC 8489 §9.2.4) as a pure decision:
//! given a request, the client's address and the clock, either an
//! authenticated user and the key to sign the answer with, or the error to
//! answer with.
//!
//! SHA-256 (RFC 8489) is offered through the nonce cookie and
//! PASSWORD-ALGORITHMS; clients that ignore it keep using MD5 keys and
//! HMAC-SHA1. USERHASH is accepted once SHA-256 was offered. Users come from
//! the shard's cache; usernames in a time-limited format are checked against
//! the shared secrets instead (see [`crate::ephemeral`]). Challenges are
//! built to fit an amplification budget (see [`write_challenge`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use turnpike_codec::attr::{PasswordAlgorithm, PasswordAlgorithms, password_algorithm};
use turnpike_codec::{
    Attribute, Class, EncodeError, ErrorCode, Message, MessageBuilder, MessageType, Method,
    Sha1Key, Sha256Key, TransactionId,
};

use crate::credentials::{KeyCache, Known, User, UserKeys};
use crate::ephemeral::{self, Secrets};
use crate::nonce::{self, NonceCheck, NonceKey};
use crate::stats::AuthFailure;

/// The algorithms we offer, in preference order.
const OFFERED: [PasswordAlgorithm<'static>; 2] = [
    PasswordAlgorithm {
        algorithm: password_algorithm::SHA256,
        params: &[],
    },
    PasswordAlgorithm {
        algorithm: password_algorithm::MD5,
        params: &[],
    },
];

/// How an authenticated answer must be signed: the way the request was.
#[derive(Clone, Debug)]
pub enum Integrity {
    /// MESSAGE-INTEGRITY with the MD5 long-term key.
    Sha1(Sha1Key),
    /// MESSAGE-INTEGRITY-SHA256 with the SHA-256 long-term key.
    Sha256(Sha256Key),
}

impl Integrity {
    /// Appends the matching integrity attribute.
    pub fn sign(&self, msg: &mut MessageBuilder<'_>) -> Result<(), EncodeError> {
        match self {
            Integrity::Sha1(key) => msg.add_message_integrity(key),
            Integrity::Sha256(key) => msg.add_message_integrity_sha256(key),
        }
    }
}

/// The outcome of authenticating a request.
#[derive(Debug)]
pub(crate) enum Auth {
    /// The request is authentic.
    Ok {
        user: Arc<User>,
        integrity: Integrity,
    },
    /// 401 or 438 with REALM and a fresh NONCE; `failure` says why the
    /// credentials given were refused (`None`: none were given yet).
    Challenge {
        code: u16,
        failure: Option<AuthFailure>,
    },
    /// 400: the request is malformed for the mechanism.
    BadRequest,
    /// The user is not in this shard's cache; the shell may know it.
    Unknown { username: Box<str> },
    /// The user could not be looked up (store unreachable): 500.
    Unavailable,
}

impl Auth {
    fn bad_integrity() -> Self {
        Auth::Challenge {
            code: 401,
            failure: Some(AuthFailure::BadIntegrity),
        }
    }

    fn unknown_user() -> Self {
        Auth::Challenge {
            code: 401,
            failure: Some(AuthFailure::UnknownUser),
        }
    }

    fn stale_nonce() -> Self {
        Auth::Challenge {
            code: 438,
            failure: Some(AuthFailure::StaleNonce),
        }
    }
}

/// What authentication checks a request against.
pub(crate) struct Context<'a> {
    pub(crate) realm: &'a str,
    pub(crate) nonces: &'a NonceKey,
    pub(crate) users: &'a KeyCache,
    pub(crate) secrets: &'a Secrets,
    /// Separator of TURN REST API usernames (`expiry:user`).
    pub(crate) separator: char,
    /// Another address whose nonces are accepted: for a ConnectionBind, the
    /// client address of the control connection of the allocation it names.
    /// Clients sign it with the nonce that connection got (RFC 6062 §4.3:
    /// same credentials as the control connection), and a nonce is bound to
    /// the address it was issued to.
    pub(crate) control: Option<SocketAddr>,
}

/// Authenticates `request` from `client`.
pub(crate) fn authenticate(
    request: &Message<'_>,
    client: SocketAddr,
    now: Instant,
    ctx: &Context<'_>,
) -> Auth {
    if !request.has_integrity() && !request.has_integrity_sha256() {
        return Auth::Challenge {
            code: 401,
            failure: None,
        };
    }
    let mut username = None;
    let mut userhash = None;
    let mut req_realm = None;
    let mut req_nonce = None;
    let mut algorithms = None;
    let mut algorithm = None;
    for attr in request.decoded() {
        match attr {
            Ok(Attribute::Username(u)) => username = username.or(Some(u)),
            Ok(Attribute::Userhash(h)) => userhash = userhash.or(Some(h)),
            Ok(Attribute::Realm(r)) => req_realm = req_realm.or(Some(r)),
            Ok(Attribute::Nonce(n)) => req_nonce = req_nonce.or(Some(n)),
            Ok(Attribute::PasswordAlgorithms(list)) => algorithms = algorithms.or(Some(list)),
            Ok(Attribute::PasswordAlgorithm(a)) => algorithm = algorithm.or(Some(a)),
            Ok(_) => {}
            Err(_) => return Auth::BadRequest,
        }
    }
    let (Some(req_realm), Some(req_nonce)) = (req_realm, req_nonce) else {
        return Auth::BadRequest;
    };
    if username.is_none() && userhash.is_none() {
        return Auth::BadRequest;
    }
    let check = match (ctx.nonces.check(req_nonce, now, client), ctx.control) {
        (NonceCheck::Invalid, Some(control)) => ctx.nonces.check(req_nonce, now, control),
        (check, _) => check,
    };
    let sha256_offered = match check {
        NonceCheck::Valid { sha256 } => sha256,
        NonceCheck::Stale | NonceCheck::Invalid => return Auth::stale_nonce(),
    };
    if req_realm != ctx.realm {
        return Auth::bad_integrity();
    }

    // RFC 8489 §9.2.4 bid-down protection: once SHA-256 was offered, the
    // client must echo our list and pick from it.
    let use_sha256 = if sha256_offered && (algorithms.is_some() || algorithm.is_some()) {
        let echoed = algorithms.is_some_and(|list| list == PasswordAlgorithms::Values(&OFFERED));
        let picked = algorithm.map(|a| a.algorithm);
        if !echoed
            || !matches!(
                picked,
                Some(password_algorithm::SHA256 | password_algorithm::MD5)
            )
        {
            return Auth::BadRequest;
        }
        picked == Some(password_algorithm::SHA256)
    } else {
        false
    };
    // Keys and MACs pair up: SHA-256 key with MESSAGE-INTEGRITY-SHA256, MD5
    // key with MESSAGE-INTEGRITY. Anything else is a client error.
    if use_sha256 != request.has_integrity_sha256() || (!use_sha256 && !request.has_integrity()) {
        return Auth::BadRequest;
    }
    let verify = |keys: &UserKeys| -> Option<Integrity> {
        if use_sha256 {
            let key = keys.sha256.as_ref()?;
            request.verify_integrity_sha256(key).ok()?;
            Some(Integrity::Sha256(key.clone()))
        } else {
            let key = keys.sha1.as_ref()?;
            request.verify_integrity(key).ok()?;
            Some(Integrity::Sha1(key.clone()))
        }
    };

    let name = match (username, userhash) {
        (Some(name), _) => name,
        // A USERHASH can only name a user this shard already knows.
        (None, Some(hash)) if sha256_offered => {
            return match ctx.users.by_userhash(hash, now) {
                Some(user) => match verify(&user.keys) {
                    Some(integrity) => Auth::Ok {
                        user: Arc::clone(user),
                        integrity,
                    },
                    None => Auth::bad_integrity(),
                },
                None => Auth::unknown_user(),
            };
        }
        (None, _) => return Auth::BadRequest,
    };
    match ctx.users.by_name(name, now) {
        Some(Known::User(user)) => {
            return match verify(&user.keys) {
                Some(integrity) => Auth::Ok {
                    user: Arc::clone(user),
                    integrity,
                },
                None => Auth::bad_integrity(),
            };
        }
        Some(Known::Absent) => return Auth::unknown_user(),
        Some(Known::Unavailable) => return Auth::Unavailable,
        None => {}
    }
    // Usernames in an ephemeral format are checked against the shared
    // secrets, never looked up: whoever holds a secret can mint any number
    // of them, and a database round trip each would be a lever for floods.
    if !ctx.secrets.is_empty()
        && let Some(ephemeral) = ephemeral::parse(name, ctx.separator)
    {
        for keys in ephemeral::candidate_keys(ctx.secrets, ephemeral.format, name, ctx.realm) {
            if let Some(integrity) = verify(&keys) {
                let user = User {
                    name: Arc::from(name),
                    keys,
                    expires: Some(ephemeral.expires),
                };
                return Auth::Ok {
                    user: Arc::new(user),
                    integrity,
                };
            }
        }
        return Auth::bad_integrity();
    }
    Auth::Unknown {
        username: name.into(),
    }
}

/// Bytes an attribute with a `len`-byte value takes.
const fn attr_len(len: usize) -> usize {
    4 + ((len + 3) & !3)
}

/// Writes a 401/438 challenge — ERROR-CODE with no reason phrase, REALM,
/// NONCE, and PASSWORD-ALGORITHMS when SHA-256 can be offered — into `out`,
/// but only if it fits in `budget` bytes (three times the request: an
/// unauthenticated answer must not amplify). Offers SHA-256 only when its
/// longer nonce and list fit; returns `None` when not even the plain
/// challenge does, and the request is then dropped.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_challenge(
    out: &mut [u8],
    method: Method,
    transaction_id: TransactionId,
    code: u16,
    realm: &str,
    nonces: &NonceKey,
    now: Instant,
    client: SocketAddr,
    fingerprint: bool,
    budget: usize,
) -> Option<usize> {
    let base = turnpike_codec::HEADER_LEN
        + attr_len(4)
        + attr_len(realm.len())
        + if fingerprint { 8 } else { 0 };
    let with_sha256 = base + attr_len(nonce::COOKIE_LEN) + attr_len(4 * OFFERED.len());
    let plain = base + attr_len(nonce::PLAIN_LEN);
    let offer_sha256 = if with_sha256 <= budget {
        true
    } else if plain <= budget {
        false
    } else {
        return None;
    };
    let nonce = nonces.mint(now, client, offer_sha256);
    let mut build = || -> Result<usize, EncodeError> {
        let mut msg =
            MessageBuilder::new(out, MessageType::new(method, Class::Error), transaction_id)?;
        msg.add(&Attribute::ErrorCode(ErrorCode { code, reason: "" }))?;
        msg.add(&Attribute::Realm(realm))?;
        msg.add(&Attribute::Nonce(nonce.as_str()))?;
        if offer_sha256 {
            msg.add(&Attribute::PasswordAlgorithms(PasswordAlgorithms::Values(
                &OFFERED,
            )))?;
        }
        if fingerprint {
            msg.add_fingerprint()?;
        }
        Ok(msg.finish())
    };
    build().ok()
}
