//! Differential tests against the independent `stun-types` crate.
//!
//! For random messages made of the attributes both codecs know (XOR-MAPPED-
//! ADDRESS v4/v6, USERNAME, REALM, NONCE, SOFTWARE, ERROR-CODE, LIFETIME as a
//! raw attribute on their side, plus UNKNOWN-ATTRIBUTES, USERHASH,
//! ALTERNATE-SERVER, ALTERNATE-DOMAIN, PASSWORD-ALGORITHM(S)), with
//! MESSAGE-INTEGRITY (short- or long-term key), MESSAGE-INTEGRITY-SHA256 and
//! FINGERPRINT in any combination:
//!
//! - both builders produce the same bytes;
//! - `stun-types` parses our message and reads back every attribute, accepts
//!   its FINGERPRINT and validates its integrity with the same credentials;
//! - we parse the message `stun-types` built and read back the same values,
//!   integrity and FINGERPRINT included;
//! - both refuse the same corrupted messages.

use std::net::SocketAddr;

use proptest::prelude::*;
use stun_types::attribute::{
    AlternateDomain as TAlternateDomain, AlternateServer as TAlternateServer, Attribute as _,
    AttributeType as TAttrType, ErrorCode as TErrorCode, Nonce as TNonce,
    PasswordAlgorithm as TPasswordAlgorithm, PasswordAlgorithmValue,
    PasswordAlgorithms as TPasswordAlgorithms, RawAttribute as TRawAttribute, Realm as TRealm,
    Software as TSoftware, UnknownAttributes as TUnknownAttributes, Userhash as TUserhash,
    Username as TUsername, XorMappedAddress as TXorMappedAddress,
};
use stun_types::message::{
    IntegrityAlgorithm, LongTermKeyCredentials, Message as TMessage, MessageClass,
    MessageIntegrityCredentials, MessageType as TMessageType, MessageWrite as _, MessageWriteExt,
    MessageWriteVec, Method as TMethod, ShortTermCredentials, StunParseError,
    TransactionId as TTransactionId, ValidateError,
};
use turnpike_codec::attr::{PasswordAlgorithm, PasswordAlgorithms, U16List, password_algorithm};
use turnpike_codec::integrity::{long_term_key_md5, long_term_key_sha256};
use turnpike_codec::{
    AttrType, Attribute, Class, ErrorCode, IntegrityError, Message, MessageBuilder, MessageType,
    Method, Sha1Key, Sha256Key, TransactionId,
};

// ---------------------------------------------------------------------------
// The shared message description.
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum DAttr {
    XorMappedAddress(SocketAddr),
    Username(String),
    Realm(String),
    Nonce(String),
    Software(String),
    ErrorCode(u16, String),
    Lifetime(u32),
    UnknownAttributes(Vec<u16>),
    Userhash([u8; 32]),
    AlternateServer(SocketAddr),
    AlternateDomain(String),
    /// `true` for SHA-256, `false` for MD5.
    PasswordAlgorithm(bool),
    PasswordAlgorithms(Vec<bool>),
}

#[derive(Clone, Debug)]
enum Cred {
    Short(String),
    Long {
        username: String,
        realm: String,
        password: String,
    },
}

impl Cred {
    fn ours(&self) -> (Sha1Key, Sha256Key) {
        match self {
            Cred::Short(p) => (Sha1Key::new(p.as_bytes()), Sha256Key::new(p.as_bytes())),
            Cred::Long {
                username,
                realm,
                password,
            } => (
                Sha1Key::new(&long_term_key_md5(username, realm, password)),
                Sha256Key::new(&long_term_key_sha256(username, realm, password)),
            ),
        }
    }

    fn theirs(&self) -> MessageIntegrityCredentials {
        match self {
            Cred::Short(p) => ShortTermCredentials::new(p.clone()).into(),
            Cred::Long {
                username,
                realm,
                password,
            } => LongTermKeyCredentials::new(username.clone(), password.clone(), realm.clone())
                .into(),
        }
    }

    fn wrong(&self) -> Cred {
        match self {
            Cred::Short(p) => Cred::Short(format!("{p}!")),
            Cred::Long {
                username,
                realm,
                password,
            } => Cred::Long {
                username: username.clone(),
                realm: realm.clone(),
                password: format!("{password}!"),
            },
        }
    }
}

#[derive(Clone, Debug)]
struct Spec {
    class: Class,
    method: u16,
    tid: [u8; 12],
    attrs: Vec<DAttr>,
    cred: Cred,
    sha1: bool,
    sha256: bool,
    fingerprint: bool,
}

fn algorithm_number(sha256: bool) -> u16 {
    if sha256 {
        password_algorithm::SHA256
    } else {
        password_algorithm::MD5
    }
}

fn their_algorithm(sha256: bool) -> PasswordAlgorithmValue {
    if sha256 {
        PasswordAlgorithmValue::SHA256
    } else {
        PasswordAlgorithmValue::MD5
    }
}

fn their_class(c: Class) -> MessageClass {
    match c {
        Class::Request => MessageClass::Request,
        Class::Indication => MessageClass::Indication,
        Class::Success => MessageClass::Success,
        Class::Error => MessageClass::Error,
    }
}

fn their_tid(tid: [u8; 12]) -> TTransactionId {
    let mut wide = [0u8; 16];
    wide[4..].copy_from_slice(&tid);
    TTransactionId::from(u128::from_be_bytes(wide))
}

// ---------------------------------------------------------------------------
// Building.
// ---------------------------------------------------------------------------

fn build_ours(spec: &Spec) -> Vec<u8> {
    let lists: Vec<Vec<PasswordAlgorithm<'static>>> = spec
        .attrs
        .iter()
        .map(|a| match a {
            DAttr::PasswordAlgorithms(l) => l
                .iter()
                .map(|&s| PasswordAlgorithm {
                    algorithm: algorithm_number(s),
                    params: &[],
                })
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    let mut buf = vec![0u8; 8192];
    let mt = MessageType::new(Method::new(spec.method).unwrap(), spec.class);
    let mut b = MessageBuilder::new(&mut buf, mt, TransactionId::Rfc5389(spec.tid)).unwrap();
    for (a, list) in spec.attrs.iter().zip(&lists) {
        let attr = match a {
            DAttr::XorMappedAddress(s) => Attribute::XorMappedAddress(*s),
            DAttr::Username(s) => Attribute::Username(s),
            DAttr::Realm(s) => Attribute::Realm(s),
            DAttr::Nonce(s) => Attribute::Nonce(s),
            DAttr::Software(s) => Attribute::Software(s),
            DAttr::ErrorCode(code, reason) => Attribute::ErrorCode(ErrorCode {
                code: *code,
                reason,
            }),
            DAttr::Lifetime(l) => Attribute::Lifetime(*l),
            DAttr::UnknownAttributes(v) => Attribute::UnknownAttributes(U16List::Values(v)),
            DAttr::Userhash(h) => Attribute::Userhash(h),
            DAttr::AlternateServer(s) => Attribute::AlternateServer(*s),
            DAttr::AlternateDomain(s) => Attribute::AlternateDomain(s),
            DAttr::PasswordAlgorithm(s) => Attribute::PasswordAlgorithm(PasswordAlgorithm {
                algorithm: algorithm_number(*s),
                params: &[],
            }),
            DAttr::PasswordAlgorithms(_) => {
                Attribute::PasswordAlgorithms(PasswordAlgorithms::Values(list))
            }
        };
        b.add(&attr).unwrap();
    }
    let (k1, k256) = spec.cred.ours();
    if spec.sha1 {
        b.add_message_integrity(&k1).unwrap();
    }
    if spec.sha256 {
        b.add_message_integrity_sha256(&k256).unwrap();
    }
    if spec.fingerprint {
        b.add_fingerprint().unwrap();
    }
    let n = b.finish();
    buf.truncate(n);
    buf
}

fn build_theirs(spec: &Spec) -> Vec<u8> {
    let mt = TMessageType::from_class_method(their_class(spec.class), TMethod::new(spec.method));
    let tid = their_tid(spec.tid);
    let mut w = TMessage::builder(mt, tid, MessageWriteVec::new());
    for a in &spec.attrs {
        match a {
            DAttr::XorMappedAddress(s) => w.add_attribute(&TXorMappedAddress::new(*s, tid)),
            DAttr::Username(s) => w.add_attribute(&TUsername::new(s).unwrap()),
            DAttr::Realm(s) => w.add_attribute(&TRealm::new(s).unwrap()),
            DAttr::Nonce(s) => w.add_attribute(&TNonce::new(s).unwrap()),
            DAttr::Software(s) => w.add_attribute(&TSoftware::new(s).unwrap()),
            DAttr::ErrorCode(code, reason) => {
                w.add_attribute(&TErrorCode::new(*code, reason).unwrap())
            }
            DAttr::Lifetime(l) => w.add_attribute(&TRawAttribute::new(
                TAttrType::new(0x000D),
                &l.to_be_bytes(),
            )),
            DAttr::UnknownAttributes(v) => {
                let types: Vec<TAttrType> = v.iter().map(|&t| TAttrType::new(t)).collect();
                w.add_attribute(&TUnknownAttributes::new(&types))
            }
            DAttr::Userhash(h) => w.add_attribute(&TUserhash::new(*h)),
            DAttr::AlternateServer(s) => w.add_attribute(&TAlternateServer::new(*s)),
            DAttr::AlternateDomain(s) => w.add_attribute(&TAlternateDomain::new(s)),
            DAttr::PasswordAlgorithm(s) => {
                w.add_attribute(&TPasswordAlgorithm::new(their_algorithm(*s)))
            }
            DAttr::PasswordAlgorithms(l) => {
                let values: Vec<PasswordAlgorithmValue> =
                    l.iter().map(|&s| their_algorithm(s)).collect();
                w.add_attribute(&TPasswordAlgorithms::new(&values))
            }
        }
        .unwrap();
    }
    let creds = spec.cred.theirs();
    if spec.sha1 {
        w.add_message_integrity(&creds, IntegrityAlgorithm::Sha1)
            .unwrap();
    }
    if spec.sha256 {
        w.add_message_integrity(&creds, IntegrityAlgorithm::Sha256)
            .unwrap();
    }
    if spec.fingerprint {
        w.add_fingerprint().unwrap();
    }
    w.finish()
}

// ---------------------------------------------------------------------------
// Reading back.
// ---------------------------------------------------------------------------

/// `stun-types` reads every attribute of `bytes` back as `spec` describes.
fn check_theirs(spec: &Spec, bytes: &[u8]) {
    let m = TMessage::from_bytes(bytes)
        .unwrap_or_else(|e| panic!("stun-types refuses {}: {e}", hex::encode(bytes)));
    assert_eq!(m.method().value(), spec.method);
    assert_eq!(m.class(), their_class(spec.class));
    assert_eq!(m.transaction_id(), their_tid(spec.tid));
    let tid = m.transaction_id();

    // Every attribute, raw, in order.
    let raw: Vec<u16> = m
        .iter_attributes()
        .map(|(_, a)| a.get_type().value())
        .collect();
    let mut want: Vec<u16> = spec.attrs.iter().map(type_of).collect();
    want.extend(spec.sha1.then_some(0x0008));
    want.extend(spec.sha256.then_some(0x001C));
    want.extend(spec.fingerprint.then_some(0x8028));
    assert_eq!(raw, want);

    // Typed, the nth of each type.
    let mut seen = std::collections::HashMap::<u16, usize>::new();
    for a in &spec.attrs {
        let n = {
            let c = seen.entry(type_of(a)).or_default();
            *c += 1;
            *c - 1
        };
        match a {
            DAttr::XorMappedAddress(s) => assert_eq!(
                m.nth_attribute::<TXorMappedAddress>(n).unwrap().addr(tid),
                *s
            ),
            DAttr::Username(s) => {
                assert_eq!(m.nth_attribute::<TUsername>(n).unwrap().username(), s)
            }
            DAttr::Realm(s) => assert_eq!(m.nth_attribute::<TRealm>(n).unwrap().realm(), s),
            DAttr::Nonce(s) => assert_eq!(m.nth_attribute::<TNonce>(n).unwrap().nonce(), s),
            DAttr::Software(s) => {
                assert_eq!(m.nth_attribute::<TSoftware>(n).unwrap().software(), s)
            }
            DAttr::ErrorCode(code, reason) => {
                let e = m.nth_attribute::<TErrorCode>(n).unwrap();
                assert_eq!((e.code(), e.reason()), (*code, reason.as_str()));
            }
            DAttr::Lifetime(l) => {
                let r = m.nth_raw_attribute(TAttrType::new(0x000D), n).unwrap();
                assert_eq!(&r.value[..], &l.to_be_bytes());
            }
            DAttr::UnknownAttributes(v) => {
                let u = m.nth_attribute::<TUnknownAttributes>(n).unwrap();
                assert!(v.iter().all(|&t| u.has_attribute(TAttrType::new(t))));
                let r = m.nth_raw_attribute(TAttrType::new(0x000A), n).unwrap();
                assert_eq!(r.value.len(), v.len() * 2);
            }
            DAttr::Userhash(h) => assert_eq!(m.nth_attribute::<TUserhash>(n).unwrap().hash(), h),
            DAttr::AlternateServer(s) => {
                assert_eq!(m.nth_attribute::<TAlternateServer>(n).unwrap().server(), *s)
            }
            DAttr::AlternateDomain(s) => {
                assert_eq!(m.nth_attribute::<TAlternateDomain>(n).unwrap().domain(), s)
            }
            DAttr::PasswordAlgorithm(s) => {
                assert_eq!(
                    m.nth_attribute::<TPasswordAlgorithm>(n)
                        .unwrap()
                        .algorithm(),
                    their_algorithm(*s)
                )
            }
            DAttr::PasswordAlgorithms(l) => {
                let want: Vec<PasswordAlgorithmValue> =
                    l.iter().map(|&s| their_algorithm(s)).collect();
                assert_eq!(
                    m.nth_attribute::<TPasswordAlgorithms>(n)
                        .unwrap()
                        .algorithms(),
                    &want[..]
                );
            }
        }
    }

    // FINGERPRINT: `from_bytes` already refused a wrong one.
    assert_eq!(m.has_attribute(TAttrType::new(0x8028)), spec.fingerprint);

    // Integrity with the same credentials, and not with others.
    let creds = spec.cred.theirs();
    let wrong = spec.cred.wrong().theirs();
    for (present, algo) in [
        (spec.sha1, IntegrityAlgorithm::Sha1),
        (spec.sha256, IntegrityAlgorithm::Sha256),
    ] {
        if !present {
            continue;
        }
        match &spec.cred {
            // A long-term key names its algorithm, so each attribute is checked.
            Cred::Long { .. } => {
                assert!(
                    matches!(m.validate_integrity_with_key(&creds.make_key(algo)), Ok(a) if a == algo)
                );
                assert!(matches!(
                    m.validate_integrity_with_key(&wrong.make_key(algo)),
                    Err(ValidateError::IntegrityFailed)
                ));
            }
            // A short-term key does not: stun-types checks SHA-256 if present.
            Cred::Short(_) => {
                let expect = if spec.sha256 {
                    IntegrityAlgorithm::Sha256
                } else {
                    IntegrityAlgorithm::Sha1
                };
                assert!(matches!(m.validate_integrity(&creds), Ok(a) if a == expect));
                assert!(matches!(
                    m.validate_integrity(&wrong),
                    Err(ValidateError::IntegrityFailed)
                ));
            }
        }
    }
    if !spec.sha1 && !spec.sha256 {
        assert!(m.validate_integrity(&creds).is_err());
    }
}

/// We read every attribute of `bytes` back as `spec` describes.
fn check_ours(spec: &Spec, bytes: &[u8]) {
    let msg = Message::parse(bytes).unwrap();
    assert_eq!(
        msg.message_type(),
        MessageType::new(Method::new(spec.method).unwrap(), spec.class)
    );
    assert_eq!(msg.transaction_id(), TransactionId::Rfc5389(spec.tid));
    let decoded: Vec<Attribute<'_>> = msg.decoded().collect::<Result<_, _>>().unwrap();
    assert_eq!(
        decoded.len(),
        spec.attrs.len()
            + usize::from(spec.sha1)
            + usize::from(spec.sha256)
            + usize::from(spec.fingerprint)
    );
    for (a, d) in spec.attrs.iter().zip(&decoded) {
        let ok = match (a, d) {
            (DAttr::XorMappedAddress(s), Attribute::XorMappedAddress(t)) => s == t,
            (DAttr::Username(s), Attribute::Username(t)) => s == t,
            (DAttr::Realm(s), Attribute::Realm(t)) => s == t,
            (DAttr::Nonce(s), Attribute::Nonce(t)) => s == t,
            (DAttr::Software(s), Attribute::Software(t)) => s == t,
            (DAttr::ErrorCode(c, r), Attribute::ErrorCode(e)) => *c == e.code && r == e.reason,
            (DAttr::Lifetime(l), Attribute::Lifetime(t)) => l == t,
            (DAttr::UnknownAttributes(v), Attribute::UnknownAttributes(t)) => {
                t.iter().eq(v.iter().copied())
            }
            (DAttr::Userhash(h), Attribute::Userhash(t)) => h == *t,
            (DAttr::AlternateServer(s), Attribute::AlternateServer(t)) => s == t,
            (DAttr::AlternateDomain(s), Attribute::AlternateDomain(t)) => s == t,
            (DAttr::PasswordAlgorithm(s), Attribute::PasswordAlgorithm(t)) => {
                t.algorithm == algorithm_number(*s) && t.params.is_empty()
            }
            (DAttr::PasswordAlgorithms(l), Attribute::PasswordAlgorithms(t)) => t
                .iter()
                .map(|p| (p.algorithm, p.params.len()))
                .eq(l.iter().map(|&s| (algorithm_number(s), 0))),
            _ => false,
        };
        assert!(ok, "{a:?} read back as {d:?}");
    }
    let (k1, k256) = spec.cred.ours();
    let (w1, w256) = spec.cred.wrong().ours();
    if spec.sha1 {
        assert_eq!(msg.verify_integrity(&k1), Ok(()));
        assert_eq!(msg.verify_integrity(&w1), Err(IntegrityError::Mismatch));
    } else {
        assert_eq!(msg.verify_integrity(&k1), Err(IntegrityError::Missing));
    }
    if spec.sha256 {
        assert_eq!(msg.verify_integrity_sha256(&k256), Ok(()));
        assert_eq!(
            msg.verify_integrity_sha256(&w256),
            Err(IntegrityError::Mismatch)
        );
    } else {
        assert_eq!(
            msg.verify_integrity_sha256(&k256),
            Err(IntegrityError::Missing)
        );
    }
    assert_eq!(msg.fingerprint_matches(), spec.fingerprint.then_some(true));
}

fn type_of(a: &DAttr) -> u16 {
    match a {
        DAttr::XorMappedAddress(_) => 0x0020,
        DAttr::Username(_) => 0x0006,
        DAttr::Realm(_) => 0x0014,
        DAttr::Nonce(_) => 0x0015,
        DAttr::Software(_) => 0x8022,
        DAttr::ErrorCode(..) => 0x0009,
        DAttr::Lifetime(_) => 0x000D,
        DAttr::UnknownAttributes(_) => 0x000A,
        DAttr::Userhash(_) => 0x001E,
        DAttr::AlternateServer(_) => 0x8023,
        DAttr::AlternateDomain(_) => 0x8003,
        DAttr::PasswordAlgorithm(_) => 0x001D,
        DAttr::PasswordAlgorithms(_) => 0x8002,
    }
}

// ---------------------------------------------------------------------------
// Strategies.
// ---------------------------------------------------------------------------

fn addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
    ]
}

/// Text both codecs accept: at most `max` bytes.
fn text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "\\PC{0,40}".prop_map(move |mut s: String| {
            while s.len() > max {
                s.pop();
            }
            s
        }),
        1 => Just("a".repeat(max)),
    ]
}

fn dattr() -> impl Strategy<Value = DAttr> {
    prop_oneof![
        3 => addr().prop_map(DAttr::XorMappedAddress),
        2 => text(512).prop_map(DAttr::Username),
        2 => text(763).prop_map(DAttr::Realm),
        2 => text(763).prop_map(DAttr::Nonce),
        2 => text(763).prop_map(DAttr::Software),
        2 => (300u16..700, text(763)).prop_map(|(c, r)| DAttr::ErrorCode(c, r)),
        2 => any::<u32>().prop_map(DAttr::Lifetime),
        1 => prop::collection::vec(any::<u16>(), 0..8).prop_map(DAttr::UnknownAttributes),
        1 => any::<[u8; 32]>().prop_map(DAttr::Userhash),
        1 => addr().prop_map(DAttr::AlternateServer),
        1 => "[a-z0-9.-]{0,60}".prop_map(DAttr::AlternateDomain),
        1 => any::<bool>().prop_map(DAttr::PasswordAlgorithm),
        // stun-types cannot read an empty list back (it wants at least one entry).
        1 => prop::collection::vec(any::<bool>(), 1..4).prop_map(DAttr::PasswordAlgorithms),
    ]
}

fn cred() -> impl Strategy<Value = Cred> {
    prop_oneof![
        "\\PC{0,30}".prop_map(Cred::Short),
        ("\\PC{0,20}", "[a-z.]{0,20}", "\\PC{0,20}").prop_map(|(username, realm, password)| {
            Cred::Long {
                username,
                realm,
                password,
            }
        }),
    ]
}

fn class() -> impl Strategy<Value = Class> {
    prop_oneof![
        Just(Class::Request),
        Just(Class::Indication),
        Just(Class::Success),
        Just(Class::Error)
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        class(),
        0u16..=0x0FFF,
        any::<[u8; 12]>(),
        prop::collection::vec(dattr(), 0..8),
        cred(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(class, method, tid, attrs, cred, sha1, sha256, fingerprint)| Spec {
                class,
                method,
                tid,
                attrs,
                cred,
                sha1,
                sha256,
                fingerprint,
            },
        )
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 600,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Positions of attribute value bytes (not headers, not padding).
fn value_positions(bytes: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut at = 20;
    while at + 4 <= bytes.len() {
        let len = usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
        out.extend(at + 4..at + 4 + len);
        at += 4 + len.div_ceil(4) * 4;
    }
    out
}

proptest! {
    #![proptest_config(config())]

    /// Same bytes from both builders; each codec reads the other's message.
    #[test]
    fn both_directions(spec in spec()) {
        let ours = build_ours(&spec);
        let theirs = build_theirs(&spec);
        prop_assert_eq!(hex::encode(&ours), hex::encode(&theirs));
        // Ours, read by stun-types.
        check_theirs(&spec, &ours);
        // stun-types', read by us.
        check_ours(&spec, &theirs);
    }

    /// A changed value byte: both codecs reject the integrity (or, with a
    /// FINGERPRINT, stun-types refuses the message and ours flags it).
    #[test]
    fn both_refuse_corruption(spec in spec(), pick in any::<usize>(), flip in 1u8..=255) {
        let mut bytes = build_ours(&spec);
        let positions = value_positions(&bytes);
        prop_assume!(!positions.is_empty());
        let i = positions[pick % positions.len()];
        bytes[i] ^= flip;

        let ours = Message::parse(&bytes).unwrap();
        let theirs = TMessage::from_bytes(&bytes);
        if spec.fingerprint {
            prop_assert_eq!(ours.fingerprint_matches(), Some(false));
            prop_assert!(matches!(theirs, Err(StunParseError::FingerprintMismatch)), "{:?}", theirs.err());
            return Ok(());
        }
        let theirs = theirs.unwrap();
        let (k1, k256) = spec.cred.ours();
        let creds = spec.cred.theirs();
        if spec.sha1 {
            // MESSAGE-INTEGRITY covers everything up to its own end; a byte
            // changed in a MESSAGE-INTEGRITY-SHA256 after it leaves it valid.
            let mi_end = bytes.len() - if spec.sha256 { 36 } else { 0 };
            let want = if i < mi_end { Err(IntegrityError::Mismatch) } else { Ok(()) };
            prop_assert_eq!(ours.verify_integrity(&k1), want);
            if let Cred::Long { .. } = spec.cred {
                let t = theirs.validate_integrity_with_key(&creds.make_key(IntegrityAlgorithm::Sha1));
                prop_assert_eq!(t.is_ok(), want.is_ok());
            }
        }
        if spec.sha256 {
            prop_assert_eq!(ours.verify_integrity_sha256(&k256), Err(IntegrityError::Mismatch));
        }
        if spec.sha1 || spec.sha256 {
            // stun-types checks SHA-256 when present, else SHA-1 (then the
            // last attribute, so covering every value byte): either way, refused.
            let t = theirs.validate_integrity(&creds);
            prop_assert!(matches!(t, Err(ValidateError::IntegrityFailed)), "{:?}", t);
        }
    }
}

/// Fixed examples of the brief's list, one of each, both ways.
#[test]
fn fixed_examples() {
    let v4: SocketAddr = "192.0.2.1:32853".parse().unwrap();
    let v6: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
        .parse()
        .unwrap();
    for (cred, sha1, sha256) in [
        (Cred::Short("VOkJxbRl1RmTxUk/WvJxBt".into()), true, false),
        (
            Cred::Long {
                username: "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}".into(),
                realm: "example.org".into(),
                password: "TheMatrIX".into(),
            },
            true,
            true,
        ),
    ] {
        let spec = Spec {
            class: Class::Error,
            method: 0x003,
            tid: [
                0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
            ],
            attrs: vec![
                DAttr::XorMappedAddress(v4),
                DAttr::XorMappedAddress(v6),
                DAttr::Username("evtj:h6vY".into()),
                DAttr::Realm("example.org".into()),
                DAttr::Nonce("f//499k954d6OL34oL9FSTvy64sA".into()),
                DAttr::Software("turnpike test".into()),
                DAttr::ErrorCode(401, "Unauthorized".into()),
                DAttr::Lifetime(600),
            ],
            cred,
            sha1,
            sha256,
            fingerprint: true,
        };
        let ours = build_ours(&spec);
        let theirs = build_theirs(&spec);
        assert_eq!(hex::encode(&ours), hex::encode(&theirs));
        check_theirs(&spec, &ours);
        check_ours(&spec, &theirs);
    }
}

/// stun-types' ERROR-CODE with its default reason phrase reads back in ours.
#[test]
fn their_default_reason_phrases() {
    for code in [
        300, 400, 401, 403, 420, 437, 438, 440, 441, 442, 443, 486, 500, 508, 699,
    ] {
        let tid = their_tid([7; 12]);
        let mut w = TMessage::builder(
            TMessageType::from_class_method(MessageClass::Error, TMethod::new(0x003)),
            tid,
            MessageWriteVec::new(),
        );
        let e = TErrorCode::builder(code).build().unwrap();
        w.add_attribute(&e).unwrap();
        w.add_fingerprint().unwrap();
        let bytes = w.finish();
        let msg = Message::parse(&bytes).unwrap();
        assert_eq!(
            msg.get(AttrType::ERROR_CODE),
            Some(Ok(Attribute::ErrorCode(ErrorCode {
                code,
                reason: e.reason()
            })))
        );
        assert_eq!(msg.fingerprint_matches(), Some(true));
    }
}
