//! STUN attributes: type codes and typed, zero-copy values.
//!
//! Every attribute of RFC 3489, 5389/8489, 5766/8656, 6062, 6156 and 5780 has a
//! variant in [`Attribute`]; anything else is kept raw in
//! [`Attribute::Unknown`]. Values borrow from the message buffer: decoding
//! never allocates. Encoding writes into a caller-provided slice.
//!
//! Length bounds follow the RFCs (e.g. USERNAME < 513 bytes, REALM/NONCE/
//! SOFTWARE < 128 characters, at most 763 bytes) so that oversized values are
//! refused at the codec boundary rather than by every consumer.

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::error::AttrError;

/// A 16-bit attribute type.
///
/// Types below 0x8000 are comprehension-required: a server that does not
/// understand one must reject the request with 420 (RFC 8489 §14).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttrType(pub u16);

macro_rules! attr_types {
    ($( $(#[$doc:meta])* $name:ident = $value:expr, $label:expr; )*) => {
        impl AttrType {
            $( $(#[$doc])* pub const $name: AttrType = AttrType($value); )*

            /// The RFC name of a known type.
            pub fn name(self) -> Option<&'static str> {
                match self { $( AttrType::$name => Some($label), )* _ => None }
            }
        }
    };
}

attr_types! {
    /// RFC 3489 / 8489 §14.1.
    MAPPED_ADDRESS = 0x0001, "MAPPED-ADDRESS";
    /// RFC 3489 §11.2.2 (obsolete).
    RESPONSE_ADDRESS = 0x0002, "RESPONSE-ADDRESS";
    /// RFC 3489 §11.2.4, RFC 5780 §7.2.
    CHANGE_REQUEST = 0x0003, "CHANGE-REQUEST";
    /// RFC 3489 §11.2.5 (obsolete).
    SOURCE_ADDRESS = 0x0004, "SOURCE-ADDRESS";
    /// RFC 3489 §11.2.3 (obsolete).
    CHANGED_ADDRESS = 0x0005, "CHANGED-ADDRESS";
    /// RFC 8489 §14.3.
    USERNAME = 0x0006, "USERNAME";
    /// RFC 8489 §14.5.
    MESSAGE_INTEGRITY = 0x0008, "MESSAGE-INTEGRITY";
    /// RFC 8489 §14.8.
    ERROR_CODE = 0x0009, "ERROR-CODE";
    /// RFC 8489 §14.13.
    UNKNOWN_ATTRIBUTES = 0x000A, "UNKNOWN-ATTRIBUTES";
    /// RFC 3489 §11.2.11 (obsolete).
    REFLECTED_FROM = 0x000B, "REFLECTED-FROM";
    /// RFC 8656 §18.1.
    CHANNEL_NUMBER = 0x000C, "CHANNEL-NUMBER";
    /// RFC 8656 §18.2.
    LIFETIME = 0x000D, "LIFETIME";
    /// RFC 8656 §18.3.
    XOR_PEER_ADDRESS = 0x0012, "XOR-PEER-ADDRESS";
    /// RFC 8656 §18.4.
    DATA = 0x0013, "DATA";
    /// RFC 8489 §14.9.
    REALM = 0x0014, "REALM";
    /// RFC 8489 §14.10.
    NONCE = 0x0015, "NONCE";
    /// RFC 8656 §18.5.
    XOR_RELAYED_ADDRESS = 0x0016, "XOR-RELAYED-ADDRESS";
    /// RFC 8656 §18.6 (RFC 6156).
    REQUESTED_ADDRESS_FAMILY = 0x0017, "REQUESTED-ADDRESS-FAMILY";
    /// RFC 8656 §18.7.
    EVEN_PORT = 0x0018, "EVEN-PORT";
    /// RFC 8656 §18.8.
    REQUESTED_TRANSPORT = 0x0019, "REQUESTED-TRANSPORT";
    /// RFC 8656 §18.9.
    DONT_FRAGMENT = 0x001A, "DONT-FRAGMENT";
    /// RFC 8489 §14.6.
    MESSAGE_INTEGRITY_SHA256 = 0x001C, "MESSAGE-INTEGRITY-SHA256";
    /// RFC 8489 §14.12.
    PASSWORD_ALGORITHM = 0x001D, "PASSWORD-ALGORITHM";
    /// RFC 8489 §14.4.
    USERHASH = 0x001E, "USERHASH";
    /// RFC 8489 §14.2.
    XOR_MAPPED_ADDRESS = 0x0020, "XOR-MAPPED-ADDRESS";
    /// RFC 8656 §18.10.
    RESERVATION_TOKEN = 0x0022, "RESERVATION-TOKEN";
    /// RFC 5780 §7.4.
    PADDING = 0x0026, "PADDING";
    /// RFC 5780 §7.5.
    RESPONSE_PORT = 0x0027, "RESPONSE-PORT";
    /// RFC 6062 §6.2.1.
    CONNECTION_ID = 0x002A, "CONNECTION-ID";
    /// RFC 8656 §18.11.
    ADDITIONAL_ADDRESS_FAMILY = 0x8000, "ADDITIONAL-ADDRESS-FAMILY";
    /// RFC 8656 §18.12.
    ADDRESS_ERROR_CODE = 0x8001, "ADDRESS-ERROR-CODE";
    /// RFC 8489 §14.11.
    PASSWORD_ALGORITHMS = 0x8002, "PASSWORD-ALGORITHMS";
    /// RFC 8489 §14.16.
    ALTERNATE_DOMAIN = 0x8003, "ALTERNATE-DOMAIN";
    /// RFC 8656 §18.13.
    ICMP = 0x8004, "ICMP";
    /// RFC 8489 §14.14.
    SOFTWARE = 0x8022, "SOFTWARE";
    /// RFC 8489 §14.15.
    ALTERNATE_SERVER = 0x8023, "ALTERNATE-SERVER";
    /// RFC 8489 §14.7.
    FINGERPRINT = 0x8028, "FINGERPRINT";
    /// RFC 5780 §7.3.
    RESPONSE_ORIGIN = 0x802B, "RESPONSE-ORIGIN";
    /// RFC 5780 §7.4.
    OTHER_ADDRESS = 0x802C, "OTHER-ADDRESS";
}

impl AttrType {
    /// Whether a receiver that does not understand this type must reject the message.
    pub const fn is_comprehension_required(self) -> bool {
        self.0 < 0x8000
    }

    /// Whether this codec has a typed decoder for the type.
    pub fn is_known(self) -> bool {
        self.name().is_some()
    }
}

impl fmt::Debug for AttrType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}"),
            None => write!(f, "AttrType({:#06x})", self.0),
        }
    }
}

/// Upper bound on USERNAME (RFC 8489 §14.3: fewer than 513 bytes).
pub const MAX_USERNAME_LEN: usize = 512;
/// Upper bound in bytes for the 127/128-character UTF-8 text attributes
/// (REALM, NONCE, SOFTWARE, reason phrases, ALTERNATE-DOMAIN).
pub const MAX_TEXT_LEN: usize = 763;

/// Password algorithm numbers (RFC 8489 §18.5).
pub mod password_algorithm {
    /// MD5, the RFC 5389 long-term key.
    pub const MD5: u16 = 0x0001;
    /// SHA-256 (RFC 8489).
    pub const SHA256: u16 = 0x0002;
}

/// REQUESTED-TRANSPORT protocol numbers.
pub mod protocol {
    /// UDP (IANA protocol number 17).
    pub const UDP: u8 = 17;
    /// TCP (IANA protocol number 6; RFC 6062).
    pub const TCP: u8 = 6;
}

/// An address family as carried by address and family attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressFamily {
    /// 0x01.
    V4,
    /// 0x02.
    V6,
}

impl AddressFamily {
    fn from_wire(byte: u8) -> Result<Self, AttrError> {
        match byte {
            0x01 => Ok(AddressFamily::V4),
            0x02 => Ok(AddressFamily::V6),
            _ => Err(AttrError::BadAddressFamily),
        }
    }

    fn to_wire(self) -> u8 {
        match self {
            AddressFamily::V4 => 0x01,
            AddressFamily::V6 => 0x02,
        }
    }

    /// The family of an IP address.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => AddressFamily::V4,
            IpAddr::V6(_) => AddressFamily::V6,
        }
    }
}

/// An error code (ERROR-CODE, ADDRESS-ERROR-CODE): a number 300–699 and a reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorCode<'a> {
    /// The code, e.g. 401.
    pub code: u16,
    /// The reason phrase (may be empty; we keep ours short to limit amplification).
    pub reason: &'a str,
}

/// A PASSWORD-ALGORITHM value, or one entry of PASSWORD-ALGORITHMS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasswordAlgorithm<'a> {
    /// The algorithm number (see [`password_algorithm`]).
    pub algorithm: u16,
    /// Algorithm parameters; empty for MD5 and SHA-256.
    pub params: &'a [u8],
}

/// A list of 16-bit values: as read from the wire, or as given for encoding.
#[derive(Clone, Copy)]
pub enum U16List<'a> {
    /// Big-endian pairs as they appear in a message.
    Wire(&'a [u8]),
    /// Values to encode.
    Values(&'a [u16]),
}

impl<'a> U16List<'a> {
    /// The values in order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + 'a {
        let (wire, values): (&'a [u8], &'a [u16]) = match *self {
            U16List::Wire(w) => (w, &[]),
            U16List::Values(v) => (&[], v),
        };
        wire.chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .chain(values.iter().copied())
    }

    fn byte_len(&self) -> usize {
        match self {
            U16List::Wire(w) => w.len(),
            U16List::Values(v) => v.len() * 2,
        }
    }
}

impl PartialEq for U16List<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl fmt::Debug for U16List<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// PASSWORD-ALGORITHMS: as read from the wire, or as given for encoding.
#[derive(Clone, Copy)]
pub enum PasswordAlgorithms<'a> {
    /// The attribute value as it appears in a message (already validated).
    Wire(&'a [u8]),
    /// Entries to encode.
    Values(&'a [PasswordAlgorithm<'a>]),
}

impl<'a> PasswordAlgorithms<'a> {
    /// The entries in order.
    pub fn iter(&self) -> PasswordAlgorithmsIter<'a> {
        match *self {
            PasswordAlgorithms::Wire(w) => PasswordAlgorithmsIter::Wire(w),
            PasswordAlgorithms::Values(v) => PasswordAlgorithmsIter::Values(v.iter()),
        }
    }

    fn byte_len(&self) -> usize {
        self.iter().map(|a| 4 + padded(a.params.len())).sum()
    }
}

impl PartialEq for PasswordAlgorithms<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl fmt::Debug for PasswordAlgorithms<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Iterator over [`PasswordAlgorithms`].
#[derive(Clone, Debug)]
pub enum PasswordAlgorithmsIter<'a> {
    /// Over wire bytes.
    Wire(&'a [u8]),
    /// Over given values.
    Values(core::slice::Iter<'a, PasswordAlgorithm<'a>>),
}

impl<'a> Iterator for PasswordAlgorithmsIter<'a> {
    type Item = PasswordAlgorithm<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            PasswordAlgorithmsIter::Values(it) => it.next().copied(),
            PasswordAlgorithmsIter::Wire(rest) => {
                let (entry, tail) = split_password_algorithm(rest).ok()??;
                *rest = tail;
                Some(entry)
            }
        }
    }
}

/// Splits one PASSWORD-ALGORITHMS entry off `buf`. `Ok(None)` at the end.
fn split_password_algorithm(
    buf: &[u8],
) -> Result<Option<(PasswordAlgorithm<'_>, &[u8])>, AttrError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf.len() < 4 {
        return Err(AttrError::BadLength);
    }
    let algorithm = u16::from_be_bytes([buf[0], buf[1]]);
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    let end = 4 + padded(len);
    // The last entry's padding may be absent only if it is the attribute's end;
    // RFC 8489 pads every parameter, so insist on it.
    if buf.len() < end {
        return Err(AttrError::BadLength);
    }
    Ok(Some((
        PasswordAlgorithm {
            algorithm,
            params: &buf[4..4 + len],
        },
        &buf[end..],
    )))
}

/// RFC 5780 CHANGE-REQUEST flags (also RFC 3489's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChangeRequest {
    /// Answer from the alternate IP address.
    pub change_ip: bool,
    /// Answer from the alternate port.
    pub change_port: bool,
}

/// The ICMP attribute (RFC 8656 §18.13), sent in Data indications.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Icmp {
    /// ICMP type.
    pub icmp_type: u8,
    /// ICMP code.
    pub code: u8,
    /// Type-specific data (e.g. the next-hop MTU).
    pub error_data: u32,
}

/// One decoded attribute. Values borrow from the message.
#[derive(Clone, Copy, Debug, PartialEq)]
#[allow(missing_docs)] // each variant is the attribute of the same name
pub enum Attribute<'a> {
    MappedAddress(SocketAddr),
    ResponseAddress(SocketAddr),
    ChangeRequest(ChangeRequest),
    SourceAddress(SocketAddr),
    ChangedAddress(SocketAddr),
    Username(&'a str),
    MessageIntegrity(&'a [u8; 20]),
    ErrorCode(ErrorCode<'a>),
    UnknownAttributes(U16List<'a>),
    ReflectedFrom(SocketAddr),
    ChannelNumber(u16),
    /// Seconds.
    Lifetime(u32),
    XorPeerAddress(SocketAddr),
    Data(&'a [u8]),
    Realm(&'a str),
    Nonce(&'a str),
    XorRelayedAddress(SocketAddr),
    RequestedAddressFamily(AddressFamily),
    /// The R bit: reserve the next-higher port too.
    EvenPort(bool),
    /// An IANA protocol number (see [`protocol`]).
    RequestedTransport(u8),
    DontFragment,
    /// 16 to 32 bytes, a multiple of 4.
    MessageIntegritySha256(&'a [u8]),
    PasswordAlgorithm(PasswordAlgorithm<'a>),
    Userhash(&'a [u8; 32]),
    XorMappedAddress(SocketAddr),
    ReservationToken(&'a [u8; 8]),
    Padding(&'a [u8]),
    ResponsePort(u16),
    ConnectionId(u32),
    AdditionalAddressFamily(AddressFamily),
    AddressErrorCode {
        family: AddressFamily,
        error: ErrorCode<'a>,
    },
    PasswordAlgorithms(PasswordAlgorithms<'a>),
    AlternateDomain(&'a str),
    Icmp(Icmp),
    Software(&'a str),
    AlternateServer(SocketAddr),
    Fingerprint(u32),
    ResponseOrigin(SocketAddr),
    OtherAddress(SocketAddr),
    /// Any type this codec has no decoder for, kept as it came.
    Unknown {
        attr_type: AttrType,
        value: &'a [u8],
    },
}

/// Rounds up to the 4-byte attribute boundary.
pub(crate) const fn padded(len: usize) -> usize {
    (len + 3) & !3
}

fn exact<const N: usize>(value: &[u8]) -> Result<&[u8; N], AttrError> {
    value.try_into().map_err(|_| AttrError::BadLength)
}

fn text(value: &[u8], max: usize) -> Result<&str, AttrError> {
    if value.len() > max {
        return Err(AttrError::TooLong);
    }
    core::str::from_utf8(value).map_err(|_| AttrError::NotUtf8)
}

fn decode_address(value: &[u8], xor_key: Option<&[u8; 16]>) -> Result<SocketAddr, AttrError> {
    if value.len() < 4 {
        return Err(AttrError::BadLength);
    }
    let family = AddressFamily::from_wire(value[1])?;
    let mut port = u16::from_be_bytes([value[2], value[3]]);
    let raw = &value[4..];
    let ip = match family {
        AddressFamily::V4 => {
            let mut b: [u8; 4] = *exact::<4>(raw)?;
            if let Some(key) = xor_key {
                b.iter_mut().zip(key).for_each(|(x, k)| *x ^= k);
            }
            IpAddr::V4(Ipv4Addr::from(b))
        }
        AddressFamily::V6 => {
            let mut b: [u8; 16] = *exact::<16>(raw)?;
            if let Some(key) = xor_key {
                b.iter_mut().zip(key).for_each(|(x, k)| *x ^= k);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
    };
    if let Some(key) = xor_key {
        port ^= u16::from_be_bytes([key[0], key[1]]);
    }
    Ok(SocketAddr::new(ip, port))
}

fn encode_address(addr: SocketAddr, xor_key: Option<&[u8; 16]>, out: &mut [u8]) -> usize {
    let mut port = addr.port();
    if let Some(key) = xor_key {
        port ^= u16::from_be_bytes([key[0], key[1]]);
    }
    out[0] = 0;
    out[1] = AddressFamily::of(addr.ip()).to_wire();
    out[2..4].copy_from_slice(&port.to_be_bytes());
    let len = match addr.ip() {
        IpAddr::V4(ip) => {
            out[4..8].copy_from_slice(&ip.octets());
            8
        }
        IpAddr::V6(ip) => {
            out[4..20].copy_from_slice(&ip.octets());
            20
        }
    };
    if let Some(key) = xor_key {
        out[4..len].iter_mut().zip(key).for_each(|(x, k)| *x ^= k);
    }
    len
}

fn address_len(addr: &SocketAddr) -> usize {
    if addr.is_ipv4() { 8 } else { 20 }
}

fn decode_error_code(value: &[u8]) -> Result<ErrorCode<'_>, AttrError> {
    if value.len() < 4 {
        return Err(AttrError::BadLength);
    }
    let class = u16::from(value[2] & 0x07);
    let number = u16::from(value[3]);
    if !(3..=6).contains(&class) || number > 99 {
        return Err(AttrError::BadValue);
    }
    Ok(ErrorCode {
        code: class * 100 + number,
        reason: text(&value[4..], MAX_TEXT_LEN)?,
    })
}

fn encode_error_code(error: &ErrorCode<'_>, out: &mut [u8]) -> usize {
    out[0] = 0;
    out[1] = 0;
    // Codes outside 300..=699 are refused in `check`, so both fit.
    out[2] = (error.code / 100) as u8;
    out[3] = (error.code % 100) as u8;
    out[4..4 + error.reason.len()].copy_from_slice(error.reason.as_bytes());
    4 + error.reason.len()
}

fn decode_family(value: &[u8]) -> Result<AddressFamily, AttrError> {
    let v = exact::<4>(value)?;
    AddressFamily::from_wire(v[0])
}

impl<'a> Attribute<'a> {
    /// Decodes one attribute value.
    ///
    /// `xor_key` is bytes 4..20 of the message header (see
    /// [`TransactionId::header_tail`](crate::TransactionId::header_tail)).
    pub fn decode(
        attr_type: AttrType,
        value: &'a [u8],
        xor_key: &[u8; 16],
    ) -> Result<Self, AttrError> {
        use Attribute as A;
        Ok(match attr_type {
            AttrType::MAPPED_ADDRESS => A::MappedAddress(decode_address(value, None)?),
            AttrType::RESPONSE_ADDRESS => A::ResponseAddress(decode_address(value, None)?),
            AttrType::SOURCE_ADDRESS => A::SourceAddress(decode_address(value, None)?),
            AttrType::CHANGED_ADDRESS => A::ChangedAddress(decode_address(value, None)?),
            AttrType::REFLECTED_FROM => A::ReflectedFrom(decode_address(value, None)?),
            AttrType::ALTERNATE_SERVER => A::AlternateServer(decode_address(value, None)?),
            AttrType::RESPONSE_ORIGIN => A::ResponseOrigin(decode_address(value, None)?),
            AttrType::OTHER_ADDRESS => A::OtherAddress(decode_address(value, None)?),
            AttrType::XOR_MAPPED_ADDRESS => {
                A::XorMappedAddress(decode_address(value, Some(xor_key))?)
            }
            AttrType::XOR_PEER_ADDRESS => A::XorPeerAddress(decode_address(value, Some(xor_key))?),
            AttrType::XOR_RELAYED_ADDRESS => {
                A::XorRelayedAddress(decode_address(value, Some(xor_key))?)
            }
            AttrType::CHANGE_REQUEST => {
                let v = exact::<4>(value)?;
                A::ChangeRequest(ChangeRequest {
                    change_ip: v[3] & 0x04 != 0,
                    change_port: v[3] & 0x02 != 0,
                })
            }
            AttrType::USERNAME => A::Username(text(value, MAX_USERNAME_LEN)?),
            AttrType::REALM => A::Realm(text(value, MAX_TEXT_LEN)?),
            AttrType::NONCE => A::Nonce(text(value, MAX_TEXT_LEN)?),
            AttrType::SOFTWARE => A::Software(text(value, MAX_TEXT_LEN)?),
            AttrType::ALTERNATE_DOMAIN => A::AlternateDomain(text(value, MAX_TEXT_LEN)?),
            AttrType::MESSAGE_INTEGRITY => A::MessageIntegrity(exact::<20>(value)?),
            AttrType::MESSAGE_INTEGRITY_SHA256 => {
                if !(16..=32).contains(&value.len()) || !value.len().is_multiple_of(4) {
                    return Err(AttrError::BadLength);
                }
                A::MessageIntegritySha256(value)
            }
            AttrType::FINGERPRINT => A::Fingerprint(u32::from_be_bytes(*exact::<4>(value)?)),
            AttrType::ERROR_CODE => A::ErrorCode(decode_error_code(value)?),
            AttrType::UNKNOWN_ATTRIBUTES => {
                if !value.len().is_multiple_of(2) {
                    return Err(AttrError::BadLength);
                }
                A::UnknownAttributes(U16List::Wire(value))
            }
            AttrType::CHANNEL_NUMBER => {
                let v = exact::<4>(value)?;
                A::ChannelNumber(u16::from_be_bytes([v[0], v[1]]))
            }
            AttrType::LIFETIME => A::Lifetime(u32::from_be_bytes(*exact::<4>(value)?)),
            AttrType::DATA => A::Data(value),
            AttrType::REQUESTED_ADDRESS_FAMILY => A::RequestedAddressFamily(decode_family(value)?),
            AttrType::ADDITIONAL_ADDRESS_FAMILY => {
                A::AdditionalAddressFamily(decode_family(value)?)
            }
            AttrType::EVEN_PORT => {
                let v = exact::<1>(value)?;
                A::EvenPort(v[0] & 0x80 != 0)
            }
            AttrType::REQUESTED_TRANSPORT => A::RequestedTransport(exact::<4>(value)?[0]),
            AttrType::DONT_FRAGMENT => {
                if !value.is_empty() {
                    return Err(AttrError::BadLength);
                }
                A::DontFragment
            }
            AttrType::PASSWORD_ALGORITHM => {
                // A lone algorithm is padded by the attribute framing, not internally.
                if value.len() < 4
                    || usize::from(u16::from_be_bytes([value[2], value[3]])) != value.len() - 4
                {
                    return Err(AttrError::BadLength);
                }
                A::PasswordAlgorithm(PasswordAlgorithm {
                    algorithm: u16::from_be_bytes([value[0], value[1]]),
                    params: &value[4..],
                })
            }
            AttrType::PASSWORD_ALGORITHMS => {
                let mut rest = value;
                while let Some((_, tail)) = split_password_algorithm(rest)? {
                    rest = tail;
                }
                A::PasswordAlgorithms(PasswordAlgorithms::Wire(value))
            }
            AttrType::USERHASH => A::Userhash(exact::<32>(value)?),
            AttrType::RESERVATION_TOKEN => A::ReservationToken(exact::<8>(value)?),
            AttrType::PADDING => A::Padding(value),
            AttrType::RESPONSE_PORT => {
                let v = exact::<4>(value)?;
                A::ResponsePort(u16::from_be_bytes([v[0], v[1]]))
            }
            AttrType::CONNECTION_ID => A::ConnectionId(u32::from_be_bytes(*exact::<4>(value)?)),
            AttrType::ADDRESS_ERROR_CODE => {
                if value.len() < 4 {
                    return Err(AttrError::BadLength);
                }
                let family = AddressFamily::from_wire(value[0])?;
                // The family byte stands where ERROR-CODE has reserved bits.
                let mut head = [0u8; 4];
                head[2..].copy_from_slice(&value[2..4]);
                let error = decode_error_code(&head)?;
                A::AddressErrorCode {
                    family,
                    error: ErrorCode {
                        code: error.code,
                        reason: text(&value[4..], MAX_TEXT_LEN)?,
                    },
                }
            }
            AttrType::ICMP => {
                let v = exact::<8>(value)?;
                A::Icmp(Icmp {
                    icmp_type: v[2],
                    code: v[3],
                    error_data: u32::from_be_bytes([v[4], v[5], v[6], v[7]]),
                })
            }
            _ => A::Unknown { attr_type, value },
        })
    }

    /// The attribute's type.
    pub fn attr_type(&self) -> AttrType {
        use Attribute as A;
        match self {
            A::MappedAddress(_) => AttrType::MAPPED_ADDRESS,
            A::ResponseAddress(_) => AttrType::RESPONSE_ADDRESS,
            A::ChangeRequest(_) => AttrType::CHANGE_REQUEST,
            A::SourceAddress(_) => AttrType::SOURCE_ADDRESS,
            A::ChangedAddress(_) => AttrType::CHANGED_ADDRESS,
            A::Username(_) => AttrType::USERNAME,
            A::MessageIntegrity(_) => AttrType::MESSAGE_INTEGRITY,
            A::ErrorCode(_) => AttrType::ERROR_CODE,
            A::UnknownAttributes(_) => AttrType::UNKNOWN_ATTRIBUTES,
            A::ReflectedFrom(_) => AttrType::REFLECTED_FROM,
            A::ChannelNumber(_) => AttrType::CHANNEL_NUMBER,
            A::Lifetime(_) => AttrType::LIFETIME,
            A::XorPeerAddress(_) => AttrType::XOR_PEER_ADDRESS,
            A::Data(_) => AttrType::DATA,
            A::Realm(_) => AttrType::REALM,
            A::Nonce(_) => AttrType::NONCE,
            A::XorRelayedAddress(_) => AttrType::XOR_RELAYED_ADDRESS,
            A::RequestedAddressFamily(_) => AttrType::REQUESTED_ADDRESS_FAMILY,
            A::EvenPort(_) => AttrType::EVEN_PORT,
            A::RequestedTransport(_) => AttrType::REQUESTED_TRANSPORT,
            A::DontFragment => AttrType::DONT_FRAGMENT,
            A::MessageIntegritySha256(_) => AttrType::MESSAGE_INTEGRITY_SHA256,
            A::PasswordAlgorithm(_) => AttrType::PASSWORD_ALGORITHM,
            A::Userhash(_) => AttrType::USERHASH,
            A::XorMappedAddress(_) => AttrType::XOR_MAPPED_ADDRESS,
            A::ReservationToken(_) => AttrType::RESERVATION_TOKEN,
            A::Padding(_) => AttrType::PADDING,
            A::ResponsePort(_) => AttrType::RESPONSE_PORT,
            A::ConnectionId(_) => AttrType::CONNECTION_ID,
            A::AdditionalAddressFamily(_) => AttrType::ADDITIONAL_ADDRESS_FAMILY,
            A::AddressErrorCode { .. } => AttrType::ADDRESS_ERROR_CODE,
            A::PasswordAlgorithms(_) => AttrType::PASSWORD_ALGORITHMS,
            A::AlternateDomain(_) => AttrType::ALTERNATE_DOMAIN,
            A::Icmp(_) => AttrType::ICMP,
            A::Software(_) => AttrType::SOFTWARE,
            A::AlternateServer(_) => AttrType::ALTERNATE_SERVER,
            A::Fingerprint(_) => AttrType::FINGERPRINT,
            A::ResponseOrigin(_) => AttrType::RESPONSE_ORIGIN,
            A::OtherAddress(_) => AttrType::OTHER_ADDRESS,
            A::Unknown { attr_type, .. } => *attr_type,
        }
    }

    /// The unpadded length of the encoded value.
    pub fn value_len(&self) -> usize {
        use Attribute as A;
        match self {
            A::MappedAddress(a)
            | A::ResponseAddress(a)
            | A::SourceAddress(a)
            | A::ChangedAddress(a)
            | A::ReflectedFrom(a)
            | A::XorPeerAddress(a)
            | A::XorRelayedAddress(a)
            | A::XorMappedAddress(a)
            | A::AlternateServer(a)
            | A::ResponseOrigin(a)
            | A::OtherAddress(a) => address_len(a),
            A::ChangeRequest(_)
            | A::ChannelNumber(_)
            | A::Lifetime(_)
            | A::RequestedAddressFamily(_)
            | A::AdditionalAddressFamily(_)
            | A::RequestedTransport(_)
            | A::ResponsePort(_)
            | A::ConnectionId(_)
            | A::Fingerprint(_) => 4,
            A::Username(s) | A::Realm(s) | A::Nonce(s) | A::Software(s) | A::AlternateDomain(s) => {
                s.len()
            }
            A::MessageIntegrity(_) => 20,
            A::ErrorCode(e) | A::AddressErrorCode { error: e, .. } => 4 + e.reason.len(),
            A::UnknownAttributes(list) => list.byte_len(),
            A::Data(d) | A::MessageIntegritySha256(d) | A::Padding(d) => d.len(),
            A::EvenPort(_) => 1,
            A::DontFragment => 0,
            A::PasswordAlgorithm(a) => 4 + a.params.len(),
            A::PasswordAlgorithms(list) => list.byte_len(),
            A::Userhash(_) => 32,
            A::ReservationToken(_) | A::Icmp(_) => 8,
            A::Unknown { value, .. } => value.len(),
        }
    }

    /// Checks that the value can be encoded (lengths, code ranges).
    pub fn check(&self) -> Result<(), AttrError> {
        use Attribute as A;
        let len = self.value_len();
        if len > usize::from(u16::MAX) {
            return Err(AttrError::TooLong);
        }
        match self {
            A::Username(s) if s.len() > MAX_USERNAME_LEN => Err(AttrError::TooLong),
            A::Realm(s) | A::Nonce(s) | A::Software(s) | A::AlternateDomain(s)
                if s.len() > MAX_TEXT_LEN =>
            {
                Err(AttrError::TooLong)
            }
            A::ErrorCode(e) | A::AddressErrorCode { error: e, .. } => {
                if !(300..=699).contains(&e.code) {
                    Err(AttrError::BadValue)
                } else if e.reason.len() > MAX_TEXT_LEN {
                    Err(AttrError::TooLong)
                } else {
                    Ok(())
                }
            }
            A::MessageIntegritySha256(d) if !(16..=32).contains(&d.len()) || d.len() % 4 != 0 => {
                Err(AttrError::BadLength)
            }
            _ => Ok(()),
        }
    }

    /// Writes the value (unpadded) into `out`, which must hold
    /// [`value_len`](Self::value_len) bytes; returns the length written.
    pub(crate) fn encode_value(&self, xor_key: &[u8; 16], out: &mut [u8]) -> usize {
        use Attribute as A;
        let put4 = |out: &mut [u8], v: [u8; 4]| {
            out[..4].copy_from_slice(&v);
            4
        };
        match self {
            A::MappedAddress(a)
            | A::ResponseAddress(a)
            | A::SourceAddress(a)
            | A::ChangedAddress(a)
            | A::ReflectedFrom(a)
            | A::AlternateServer(a)
            | A::ResponseOrigin(a)
            | A::OtherAddress(a) => encode_address(*a, None, out),
            A::XorPeerAddress(a) | A::XorRelayedAddress(a) | A::XorMappedAddress(a) => {
                encode_address(*a, Some(xor_key), out)
            }
            A::ChangeRequest(c) => {
                let flags = (u8::from(c.change_ip) << 2) | (u8::from(c.change_port) << 1);
                put4(out, [0, 0, 0, flags])
            }
            A::Username(s) | A::Realm(s) | A::Nonce(s) | A::Software(s) | A::AlternateDomain(s) => {
                out[..s.len()].copy_from_slice(s.as_bytes());
                s.len()
            }
            A::MessageIntegrity(m) => {
                out[..20].copy_from_slice(&m[..]);
                20
            }
            A::ErrorCode(e) => encode_error_code(e, out),
            A::AddressErrorCode { family, error } => {
                let n = encode_error_code(error, out);
                out[0] = family.to_wire();
                n
            }
            A::UnknownAttributes(list) => {
                let mut n = 0;
                for v in list.iter() {
                    out[n..n + 2].copy_from_slice(&v.to_be_bytes());
                    n += 2;
                }
                n
            }
            A::ChannelNumber(c) => {
                let [a, b] = c.to_be_bytes();
                put4(out, [a, b, 0, 0])
            }
            A::Lifetime(v) | A::Fingerprint(v) | A::ConnectionId(v) => put4(out, v.to_be_bytes()),
            A::Data(d) | A::MessageIntegritySha256(d) | A::Padding(d) => {
                out[..d.len()].copy_from_slice(d);
                d.len()
            }
            A::RequestedAddressFamily(f) | A::AdditionalAddressFamily(f) => {
                put4(out, [f.to_wire(), 0, 0, 0])
            }
            A::EvenPort(r) => {
                out[0] = u8::from(*r) << 7;
                1
            }
            A::RequestedTransport(p) => put4(out, [*p, 0, 0, 0]),
            A::DontFragment => 0,
            A::PasswordAlgorithm(a) => {
                out[0..2].copy_from_slice(&a.algorithm.to_be_bytes());
                // Lengths were bounded by `check` (the whole value fits in u16).
                out[2..4].copy_from_slice(&(a.params.len() as u16).to_be_bytes());
                out[4..4 + a.params.len()].copy_from_slice(a.params);
                4 + a.params.len()
            }
            A::PasswordAlgorithms(list) => {
                let mut n = 0;
                for a in list.iter() {
                    out[n..n + 2].copy_from_slice(&a.algorithm.to_be_bytes());
                    out[n + 2..n + 4].copy_from_slice(&(a.params.len() as u16).to_be_bytes());
                    out[n + 4..n + 4 + a.params.len()].copy_from_slice(a.params);
                    let end = n + 4 + padded(a.params.len());
                    out[n + 4 + a.params.len()..end].fill(0);
                    n = end;
                }
                n
            }
            A::Userhash(h) => {
                out[..32].copy_from_slice(&h[..]);
                32
            }
            A::ReservationToken(t) => {
                out[..8].copy_from_slice(&t[..]);
                8
            }
            A::ResponsePort(p) => {
                let [a, b] = p.to_be_bytes();
                put4(out, [a, b, 0, 0])
            }
            A::Icmp(i) => {
                out[..4].copy_from_slice(&[0, 0, i.icmp_type, i.code]);
                out[4..8].copy_from_slice(&i.error_data.to_be_bytes());
                8
            }
            A::Unknown { value, .. } => {
                out[..value.len()].copy_from_slice(value);
                value.len()
            }
        }
    }
}
