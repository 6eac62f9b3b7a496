//! Shared proptest strategies: owned attribute values covering every
//! [`Attribute`] variant with valid values, and whole messages built from them.

#![allow(dead_code)] // each test binary uses a different subset

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;
use turnpike_codec::attr::{
    ChangeRequest, Icmp, MAX_TEXT_LEN, MAX_USERNAME_LEN, PasswordAlgorithm, PasswordAlgorithms,
    U16List,
};
use turnpike_codec::{
    AddressFamily, AttrType, Attribute, Class, ErrorCode, MAGIC_COOKIE, MessageBuilder,
    MessageType, Method, TransactionId,
};

/// An attribute value that owns its data; [`with_attrs`] lends it out as an [`Attribute`].
#[derive(Clone, Debug)]
pub enum OwnedAttr {
    MappedAddress(SocketAddr),
    ResponseAddress(SocketAddr),
    ChangeRequest(ChangeRequest),
    SourceAddress(SocketAddr),
    ChangedAddress(SocketAddr),
    Username(String),
    MessageIntegrity([u8; 20]),
    ErrorCode(u16, String),
    UnknownAttributes(Vec<u16>),
    ReflectedFrom(SocketAddr),
    ChannelNumber(u16),
    Lifetime(u32),
    XorPeerAddress(SocketAddr),
    Data(Vec<u8>),
    Realm(String),
    Nonce(String),
    XorRelayedAddress(SocketAddr),
    RequestedAddressFamily(AddressFamily),
    EvenPort(bool),
    RequestedTransport(u8),
    DontFragment,
    MessageIntegritySha256(Vec<u8>),
    PasswordAlgorithm(u16, Vec<u8>),
    Userhash([u8; 32]),
    XorMappedAddress(SocketAddr),
    ReservationToken([u8; 8]),
    Padding(Vec<u8>),
    ResponsePort(u16),
    ConnectionId(u32),
    AdditionalAddressFamily(AddressFamily),
    AddressErrorCode(AddressFamily, u16, String),
    PasswordAlgorithms(Vec<(u16, Vec<u8>)>),
    AlternateDomain(String),
    Icmp(Icmp),
    Software(String),
    AlternateServer(SocketAddr),
    Fingerprint(u32),
    ResponseOrigin(SocketAddr),
    OtherAddress(SocketAddr),
    Unknown(u16, Vec<u8>),
}

impl OwnedAttr {
    /// Whether this is MESSAGE-INTEGRITY(-SHA256) or FINGERPRINT, after which
    /// a receiver ignores (most) attributes.
    pub fn is_trailer(&self) -> bool {
        matches!(
            self,
            OwnedAttr::MessageIntegrity(_)
                | OwnedAttr::MessageIntegritySha256(_)
                | OwnedAttr::Fingerprint(_)
        )
    }

    /// The borrowed attribute. `algorithms` holds the PASSWORD-ALGORITHMS
    /// entries of this attribute (see [`with_attrs`]).
    fn as_attr<'a>(&'a self, algorithms: &'a [PasswordAlgorithm<'a>]) -> Attribute<'a> {
        use OwnedAttr as O;
        match self {
            O::MappedAddress(a) => Attribute::MappedAddress(*a),
            O::ResponseAddress(a) => Attribute::ResponseAddress(*a),
            O::ChangeRequest(c) => Attribute::ChangeRequest(*c),
            O::SourceAddress(a) => Attribute::SourceAddress(*a),
            O::ChangedAddress(a) => Attribute::ChangedAddress(*a),
            O::Username(s) => Attribute::Username(s),
            O::MessageIntegrity(m) => Attribute::MessageIntegrity(m),
            O::ErrorCode(code, reason) => Attribute::ErrorCode(ErrorCode {
                code: *code,
                reason,
            }),
            O::UnknownAttributes(v) => Attribute::UnknownAttributes(U16List::Values(v)),
            O::ReflectedFrom(a) => Attribute::ReflectedFrom(*a),
            O::ChannelNumber(c) => Attribute::ChannelNumber(*c),
            O::Lifetime(l) => Attribute::Lifetime(*l),
            O::XorPeerAddress(a) => Attribute::XorPeerAddress(*a),
            O::Data(d) => Attribute::Data(d),
            O::Realm(s) => Attribute::Realm(s),
            O::Nonce(s) => Attribute::Nonce(s),
            O::XorRelayedAddress(a) => Attribute::XorRelayedAddress(*a),
            O::RequestedAddressFamily(f) => Attribute::RequestedAddressFamily(*f),
            O::EvenPort(r) => Attribute::EvenPort(*r),
            O::RequestedTransport(p) => Attribute::RequestedTransport(*p),
            O::DontFragment => Attribute::DontFragment,
            O::MessageIntegritySha256(m) => Attribute::MessageIntegritySha256(m),
            O::PasswordAlgorithm(algorithm, params) => {
                Attribute::PasswordAlgorithm(PasswordAlgorithm {
                    algorithm: *algorithm,
                    params,
                })
            }
            O::Userhash(h) => Attribute::Userhash(h),
            O::XorMappedAddress(a) => Attribute::XorMappedAddress(*a),
            O::ReservationToken(t) => Attribute::ReservationToken(t),
            O::Padding(p) => Attribute::Padding(p),
            O::ResponsePort(p) => Attribute::ResponsePort(*p),
            O::ConnectionId(c) => Attribute::ConnectionId(*c),
            O::AdditionalAddressFamily(f) => Attribute::AdditionalAddressFamily(*f),
            O::AddressErrorCode(family, code, reason) => Attribute::AddressErrorCode {
                family: *family,
                error: ErrorCode {
                    code: *code,
                    reason,
                },
            },
            O::PasswordAlgorithms(_) => {
                Attribute::PasswordAlgorithms(PasswordAlgorithms::Values(algorithms))
            }
            O::AlternateDomain(s) => Attribute::AlternateDomain(s),
            O::Icmp(i) => Attribute::Icmp(*i),
            O::Software(s) => Attribute::Software(s),
            O::AlternateServer(a) => Attribute::AlternateServer(*a),
            O::Fingerprint(f) => Attribute::Fingerprint(*f),
            O::ResponseOrigin(a) => Attribute::ResponseOrigin(*a),
            O::OtherAddress(a) => Attribute::OtherAddress(*a),
            O::Unknown(t, v) => Attribute::Unknown {
                attr_type: AttrType(*t),
                value: v,
            },
        }
    }
}

/// Lends `owned` out as borrowed [`Attribute`]s.
pub fn with_attrs<R>(owned: &[OwnedAttr], f: impl FnOnce(&[Attribute<'_>]) -> R) -> R {
    let algorithm_lists: Vec<Vec<PasswordAlgorithm<'_>>> = owned
        .iter()
        .map(|o| match o {
            OwnedAttr::PasswordAlgorithms(list) => list
                .iter()
                .map(|(algorithm, params)| PasswordAlgorithm {
                    algorithm: *algorithm,
                    params,
                })
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    let attrs: Vec<Attribute<'_>> = owned
        .iter()
        .zip(&algorithm_lists)
        .map(|(o, l)| o.as_attr(l))
        .collect();
    f(&attrs)
}

pub fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<u32>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (any::<u128>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
    ]
}

pub fn family() -> impl Strategy<Value = AddressFamily> {
    prop_oneof![Just(AddressFamily::V4), Just(AddressFamily::V6)]
}

/// UTF-8 text of at most `max_bytes` bytes, mostly short and mixed-script,
/// sometimes right at the limit.
pub fn text(max_bytes: usize) -> BoxedStrategy<String> {
    prop_oneof![
        8 => "\\PC{0,40}".prop_map(move |s: String| truncate_utf8(s, max_bytes)),
        1 => Just("x".repeat(max_bytes)),
        1 => Just(format!("{}\u{00E9}", "y".repeat(max_bytes - 2))),
    ]
    .boxed()
}

fn truncate_utf8(mut s: String, max: usize) -> String {
    while s.len() > max {
        s.pop();
    }
    s
}

pub fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..=max)
}

/// Attribute types this codec has no decoder for.
pub fn unknown_type() -> impl Strategy<Value = u16> {
    any::<u16>().prop_filter("unknown type", |t| !AttrType(*t).is_known())
}

/// Any attribute except MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT.
pub fn body_attr() -> BoxedStrategy<OwnedAttr> {
    use OwnedAttr as O;
    let addresses = prop_oneof![
        socket_addr().prop_map(O::MappedAddress),
        socket_addr().prop_map(O::ResponseAddress),
        socket_addr().prop_map(O::SourceAddress),
        socket_addr().prop_map(O::ChangedAddress),
        socket_addr().prop_map(O::ReflectedFrom),
        socket_addr().prop_map(O::XorPeerAddress),
        socket_addr().prop_map(O::XorRelayedAddress),
        socket_addr().prop_map(O::XorMappedAddress),
        socket_addr().prop_map(O::AlternateServer),
        socket_addr().prop_map(O::ResponseOrigin),
        socket_addr().prop_map(O::OtherAddress),
    ];
    let texts = prop_oneof![
        text(MAX_USERNAME_LEN).prop_map(O::Username),
        text(MAX_TEXT_LEN).prop_map(O::Realm),
        text(MAX_TEXT_LEN).prop_map(O::Nonce),
        text(MAX_TEXT_LEN).prop_map(O::Software),
        text(MAX_TEXT_LEN).prop_map(O::AlternateDomain),
        (300u16..=699, text(MAX_TEXT_LEN)).prop_map(|(c, r)| O::ErrorCode(c, r)),
        (family(), 300u16..=699, text(MAX_TEXT_LEN))
            .prop_map(|(f, c, r)| O::AddressErrorCode(f, c, r)),
    ];
    let fixed = prop_oneof![
        (any::<bool>(), any::<bool>()).prop_map(|(change_ip, change_port)| O::ChangeRequest(
            ChangeRequest {
                change_ip,
                change_port
            }
        )),
        any::<u16>().prop_map(O::ChannelNumber),
        any::<u32>().prop_map(O::Lifetime),
        family().prop_map(O::RequestedAddressFamily),
        family().prop_map(O::AdditionalAddressFamily),
        any::<bool>().prop_map(O::EvenPort),
        any::<u8>().prop_map(O::RequestedTransport),
        Just(O::DontFragment),
        any::<[u8; 32]>().prop_map(O::Userhash),
        any::<[u8; 8]>().prop_map(O::ReservationToken),
        any::<u16>().prop_map(O::ResponsePort),
        any::<u32>().prop_map(O::ConnectionId),
        (any::<u8>(), any::<u8>(), any::<u32>()).prop_map(|(icmp_type, code, error_data)| O::Icmp(
            Icmp {
                icmp_type,
                code,
                error_data
            }
        )),
    ];
    let variable = prop_oneof![
        prop::collection::vec(any::<u16>(), 0..12).prop_map(O::UnknownAttributes),
        bytes(300).prop_map(O::Data),
        bytes(64).prop_map(O::Padding),
        (any::<u16>(), bytes(13)).prop_map(|(a, p)| O::PasswordAlgorithm(a, p)),
        prop::collection::vec((any::<u16>(), bytes(9)), 0..5).prop_map(O::PasswordAlgorithms),
        (unknown_type(), bytes(40)).prop_map(|(t, v)| O::Unknown(t, v)),
    ];
    prop_oneof![3 => addresses, 3 => texts, 3 => fixed, 2 => variable].boxed()
}

/// MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT with arbitrary (not computed) values.
pub fn trailer_attr() -> BoxedStrategy<OwnedAttr> {
    use OwnedAttr as O;
    prop_oneof![
        any::<[u8; 20]>().prop_map(O::MessageIntegrity),
        (4usize..=8)
            .prop_flat_map(|words| prop::collection::vec(any::<u8>(), words * 4))
            .prop_map(O::MessageIntegritySha256),
        any::<u32>().prop_map(O::Fingerprint),
    ]
    .boxed()
}

/// A trailer a receiver honours in full: MESSAGE-INTEGRITY, then
/// MESSAGE-INTEGRITY-SHA256, then FINGERPRINT, each optional.
pub fn trailer() -> impl Strategy<Value = Vec<OwnedAttr>> {
    use OwnedAttr as O;
    (
        prop::option::of(any::<[u8; 20]>()),
        prop::option::of((4usize..=8).prop_flat_map(|w| prop::collection::vec(any::<u8>(), w * 4))),
        prop::option::of(any::<u32>()),
    )
        .prop_map(|(mi, sha, fp)| {
            let mut v = Vec::new();
            v.extend(mi.map(O::MessageIntegrity));
            v.extend(sha.map(O::MessageIntegritySha256));
            v.extend(fp.map(O::Fingerprint));
            v
        })
}

pub fn class() -> impl Strategy<Value = Class> {
    prop_oneof![
        Just(Class::Request),
        Just(Class::Indication),
        Just(Class::Success),
        Just(Class::Error)
    ]
}

pub fn message_type() -> impl Strategy<Value = MessageType> {
    (0u16..=0x0FFF, class()).prop_map(|(m, c)| MessageType::new(Method::new(m).unwrap(), c))
}

pub fn rfc5389_tid() -> impl Strategy<Value = TransactionId> {
    any::<[u8; 12]>().prop_map(TransactionId::Rfc5389)
}

/// A classic 128-bit ID; one that happens to start with the cookie would be
/// read back as an RFC 5389 ID, so those are left out.
pub fn rfc3489_tid() -> impl Strategy<Value = TransactionId> {
    any::<[u8; 16]>()
        .prop_filter("no magic cookie", |id| {
            id[..4] != MAGIC_COOKIE.to_be_bytes()
        })
        .prop_map(TransactionId::Rfc3489)
}

pub fn transaction_id() -> impl Strategy<Value = TransactionId> {
    prop_oneof![3 => rfc5389_tid(), 1 => rfc3489_tid()]
}

/// A message as its parts: type, transaction ID, attributes in order.
#[derive(Clone, Debug)]
pub struct MessageSpec {
    pub message_type: MessageType,
    pub transaction_id: TransactionId,
    pub attrs: Vec<OwnedAttr>,
}

pub fn message_spec(max_attrs: usize) -> impl Strategy<Value = MessageSpec> {
    (
        message_type(),
        transaction_id(),
        prop::collection::vec(body_attr(), 0..=max_attrs),
        trailer(),
    )
        .prop_map(|(message_type, transaction_id, mut attrs, trailer)| {
            attrs.extend(trailer);
            MessageSpec {
                message_type,
                transaction_id,
                attrs,
            }
        })
}

/// Encodes a spec with [`MessageBuilder::add`] for every attribute.
pub fn encode(spec: &MessageSpec) -> Vec<u8> {
    let mut buf = vec![0u8; 70_000];
    let mut b = MessageBuilder::new(&mut buf, spec.message_type, spec.transaction_id).unwrap();
    with_attrs(&spec.attrs, |attrs| {
        for a in attrs {
            b.add(a).unwrap_or_else(|e| panic!("adding {a:?}: {e}"));
        }
    });
    let n = b.finish();
    buf.truncate(n);
    buf
}
