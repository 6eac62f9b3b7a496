//! Error types of the codec. Every malformed input maps to one of these;
//! nothing in this crate panics on input.

use core::fmt;

/// Why a buffer is not a well-formed STUN message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than the 20-byte header.
    TooShort,
    /// One of the two leading bits is set: not STUN (maybe ChannelData, RTP, DTLS).
    NotStun,
    /// The header length field is not a multiple of 4.
    UnalignedLength,
    /// The header length does not match the bytes given.
    LengthMismatch,
    /// An attribute header or value runs past the end of the message.
    AttributeOverrun,
    /// More attributes than [`MAX_ATTRIBUTES`](crate::message::MAX_ATTRIBUTES).
    TooManyAttributes,
    /// FINGERPRINT is present but not the last attribute.
    FingerprintNotLast,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecodeError::TooShort => "shorter than a STUN header",
            DecodeError::NotStun => "leading bits set: not a STUN message",
            DecodeError::UnalignedLength => "message length is not a multiple of 4",
            DecodeError::LengthMismatch => "message length does not match the data",
            DecodeError::AttributeOverrun => "attribute runs past the end of the message",
            DecodeError::TooManyAttributes => "too many attributes",
            DecodeError::FingerprintNotLast => "FINGERPRINT is not the last attribute",
        })
    }
}

impl std::error::Error for DecodeError {}

/// Why an attribute value is not valid for its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrError {
    /// The value has the wrong length for its type.
    BadLength,
    /// The value exceeds the type's maximum length.
    TooLong,
    /// An address family other than 0x01 or 0x02.
    BadAddressFamily,
    /// Text that is not UTF-8.
    NotUtf8,
    /// A field outside its range (e.g. an error class outside 3..=6).
    BadValue,
}

impl fmt::Display for AttrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttrError::BadLength => "attribute has the wrong length",
            AttrError::TooLong => "attribute is too long",
            AttrError::BadAddressFamily => "unknown address family",
            AttrError::NotUtf8 => "text is not UTF-8",
            AttrError::BadValue => "attribute value out of range",
        })
    }
}

impl std::error::Error for AttrError {}

/// Why a message could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The output buffer is too small.
    BufferTooSmall,
    /// The message would exceed the 16-bit length field.
    MessageTooLong,
    /// An attribute value is invalid (see [`AttrError`]).
    Attribute(AttrError),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::BufferTooSmall => f.write_str("output buffer too small"),
            EncodeError::MessageTooLong => f.write_str("message too long"),
            EncodeError::Attribute(e) => write!(f, "invalid attribute: {e}"),
        }
    }
}

impl std::error::Error for EncodeError {}

impl From<AttrError> for EncodeError {
    fn from(e: AttrError) -> Self {
        EncodeError::Attribute(e)
    }
}

/// Why a MESSAGE-INTEGRITY(-SHA256) check failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntegrityError {
    /// The message carries no such attribute.
    Missing,
    /// The MAC does not match.
    Mismatch,
}

impl fmt::Display for IntegrityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IntegrityError::Missing => "no message integrity attribute",
            IntegrityError::Mismatch => "message integrity mismatch",
        })
    }
}

impl std::error::Error for IntegrityError {}
