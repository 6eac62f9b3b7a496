//! The 20-byte STUN message header (RFC 8489 §5) and the RFC 3489 variant.
//!
//! A classic RFC 3489 header has no magic cookie: its 128-bit transaction ID
//! occupies the bytes where RFC 5389 and later put the cookie. The two are told
//! apart by the cookie alone (RFC 8489 §5: a cookie match is how a server knows
//! the client understands the newer attributes).

/// Length of every STUN header.
pub const HEADER_LEN: usize = 20;

/// The fixed value of bytes 4..8 in every RFC 5389/8489 message.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;

/// The magic cookie as it appears on the wire.
pub const MAGIC_COOKIE_BYTES: [u8; 4] = MAGIC_COOKIE.to_be_bytes();

/// A STUN method: the 12 method bits of the message type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Method(u16);

impl Method {
    /// Binding (RFC 8489).
    pub const BINDING: Method = Method(0x001);
    /// Shared Secret (RFC 3489, obsolete; recognised so it can be refused).
    pub const SHARED_SECRET: Method = Method(0x002);
    /// Allocate (RFC 8656 §7).
    pub const ALLOCATE: Method = Method(0x003);
    /// Refresh (RFC 8656 §8).
    pub const REFRESH: Method = Method(0x004);
    /// Send (RFC 8656 §11, indication only).
    pub const SEND: Method = Method(0x006);
    /// Data (RFC 8656 §11, indication only).
    pub const DATA: Method = Method(0x007);
    /// CreatePermission (RFC 8656 §9).
    pub const CREATE_PERMISSION: Method = Method(0x008);
    /// ChannelBind (RFC 8656 §12).
    pub const CHANNEL_BIND: Method = Method(0x009);
    /// Connect (RFC 6062 §4.3).
    pub const CONNECT: Method = Method(0x00A);
    /// ConnectionBind (RFC 6062 §4.4).
    pub const CONNECTION_BIND: Method = Method(0x00B);
    /// ConnectionAttempt (RFC 6062 §4.5, indication only).
    pub const CONNECTION_ATTEMPT: Method = Method(0x00C);

    /// A method from its 12-bit value; `None` if it does not fit in 12 bits.
    pub const fn new(value: u16) -> Option<Method> {
        if value <= 0x0FFF {
            Some(Method(value))
        } else {
            None
        }
    }

    /// The 12-bit method number.
    pub const fn value(self) -> u16 {
        self.0
    }
}

/// The message class: the two class bits of the message type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// A request, answered by a success or error response.
    Request,
    /// An indication: never answered.
    Indication,
    /// A success response.
    Success,
    /// An error response.
    Error,
}

/// Method and class together: the 14 bits after the two leading zero bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MessageType {
    /// The method.
    pub method: Method,
    /// The class.
    pub class: Class,
}

impl MessageType {
    /// A message type from its parts.
    pub const fn new(method: Method, class: Class) -> Self {
        MessageType { method, class }
    }

    /// Decodes the 16-bit type field; `None` if either leading bit is set.
    ///
    /// RFC 8489 §5: the class bits C1 and C0 sit at bit positions 8 and 4,
    /// interleaved with the method bits.
    pub const fn from_u16(value: u16) -> Option<MessageType> {
        if value & 0xC000 != 0 {
            return None;
        }
        let class = match ((value >> 7) & 0b10) | ((value >> 4) & 0b01) {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::Success,
            _ => Class::Error,
        };
        let method = (value & 0x000F) | ((value >> 1) & 0x0070) | ((value >> 2) & 0x0F80);
        Some(MessageType {
            method: Method(method),
            class,
        })
    }

    /// Encodes to the 16-bit type field.
    pub const fn to_u16(self) -> u16 {
        let m = self.method.0;
        let c: u16 = match self.class {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        };
        (m & 0x000F)
            | ((m & 0x0070) << 1)
            | ((m & 0x0F80) << 2)
            | ((c & 0b01) << 4)
            | ((c & 0b10) << 7)
    }

    /// The success-response type for this (request) type's method.
    pub const fn success(self) -> MessageType {
        MessageType::new(self.method, Class::Success)
    }

    /// The error-response type for this (request) type's method.
    pub const fn error(self) -> MessageType {
        MessageType::new(self.method, Class::Error)
    }
}

/// A transaction ID, in the form its message carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransactionId {
    /// RFC 5389/8489: 96 bits after the magic cookie.
    Rfc5389([u8; 12]),
    /// RFC 3489: 128 bits where the cookie would be, no cookie.
    Rfc3489([u8; 16]),
}

impl TransactionId {
    /// Bytes 4..20 of a header carrying this ID: the cookie and the 96-bit ID,
    /// or the 128-bit classic ID. XOR-encoded addresses are XORed with these.
    pub fn header_tail(&self) -> [u8; 16] {
        match self {
            TransactionId::Rfc5389(id) => {
                let mut out = [0u8; 16];
                out[..4].copy_from_slice(&MAGIC_COOKIE_BYTES);
                out[4..].copy_from_slice(id);
                out
            }
            TransactionId::Rfc3489(id) => *id,
        }
    }

    /// Reads the transaction ID from bytes 4..20 of a header.
    pub fn from_header_tail(tail: &[u8; 16]) -> TransactionId {
        if tail[..4] == MAGIC_COOKIE_BYTES {
            let mut id = [0u8; 12];
            id.copy_from_slice(&tail[4..]);
            TransactionId::Rfc5389(id)
        } else {
            TransactionId::Rfc3489(*tail)
        }
    }

    /// Whether this is a classic RFC 3489 transaction (no magic cookie).
    pub fn is_rfc3489(&self) -> bool {
        matches!(self, TransactionId::Rfc3489(_))
    }
}

/// The fields of a header, read without validating the rest of the message.
///
/// A server uses this to decide whether a message that fails to parse was a
/// STUN request worth a 400 (it has the cookie and a request type) or garbage
/// to drop silently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Method and class.
    pub message_type: MessageType,
    /// The length field: bytes after the header.
    pub length: u16,
    /// The transaction ID.
    pub transaction_id: TransactionId,
}

impl Header {
    /// Reads the first 20 bytes; `None` if too short or a leading bit is set.
    pub fn peek(buf: &[u8]) -> Option<Header> {
        let head: &[u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
        let message_type = MessageType::from_u16(u16::from_be_bytes([head[0], head[1]]))?;
        let tail: &[u8; 16] = head[4..].try_into().ok()?;
        Some(Header {
            message_type,
            length: u16::from_be_bytes([head[2], head[3]]),
            transaction_id: TransactionId::from_header_tail(tail),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_type_round_trips_every_valid_value() {
        for v in 0..=0x3FFFu16 {
            let t = MessageType::from_u16(v).expect("leading bits are zero");
            assert_eq!(t.to_u16(), v);
        }
        assert!(MessageType::from_u16(0x4001).is_none());
        assert!(MessageType::from_u16(0x8001).is_none());
    }

    #[test]
    fn well_known_types() {
        let binding_req = MessageType::new(Method::BINDING, Class::Request);
        assert_eq!(binding_req.to_u16(), 0x0001);
        assert_eq!(binding_req.success().to_u16(), 0x0101);
        assert_eq!(binding_req.error().to_u16(), 0x0111);
        assert_eq!(
            MessageType::new(Method::ALLOCATE, Class::Request).to_u16(),
            0x0003
        );
        assert_eq!(
            MessageType::new(Method::SEND, Class::Indication).to_u16(),
            0x0016
        );
        assert_eq!(
            MessageType::new(Method::DATA, Class::Indication).to_u16(),
            0x0017
        );
        assert_eq!(
            MessageType::new(Method::CONNECTION_ATTEMPT, Class::Indication).to_u16(),
            0x001C
        );
    }

    #[test]
    fn transaction_id_kinds() {
        let t = TransactionId::Rfc5389([7; 12]);
        assert_eq!(TransactionId::from_header_tail(&t.header_tail()), t);
        let c = TransactionId::Rfc3489([9; 16]);
        assert_eq!(TransactionId::from_header_tail(&c.header_tail()), c);
        assert!(c.is_rfc3489());
    }
}
