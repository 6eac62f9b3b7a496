//! STUN messages: a zero-copy reader ([`Message`]) and a writer into a
//! caller-provided buffer ([`MessageBuilder`]).
//!
//! [`Message::parse`] validates the header and the attribute framing in one
//! bounded pass and records where the integrity attributes are; attribute
//! values are decoded lazily, only when asked for. Per RFC 8489 §14.5 and
//! §14.6, attributes after MESSAGE-INTEGRITY are ignored except
//! MESSAGE-INTEGRITY-SHA256 and FINGERPRINT, and attributes after
//! MESSAGE-INTEGRITY-SHA256 are ignored except FINGERPRINT.

use crate::attr::{AttrType, Attribute, padded};
use crate::error::{AttrError, DecodeError, EncodeError, IntegrityError};
use crate::header::{HEADER_LEN, MessageType, TransactionId};
use crate::integrity::{self, Sha1Key, Sha256Key};

/// The most attributes a message may carry. Real requests carry fewer than 20;
/// the bound keeps the cost of a hostile message of tiny attributes fixed.
pub const MAX_ATTRIBUTES: usize = 64;

/// One attribute as it appears on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawAttribute<'a> {
    /// Its type.
    pub attr_type: AttrType,
    /// Its value, without padding.
    pub value: &'a [u8],
}

/// A parsed STUN message borrowing its buffer.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    buf: &'a [u8],
    message_type: MessageType,
    transaction_id: TransactionId,
    /// Offsets of the attribute headers that count (see the module docs).
    integrity: Option<usize>,
    integrity_sha256: Option<usize>,
    fingerprint: Option<usize>,
}

fn read_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

impl<'a> Message<'a> {
    /// Parses one whole message: `buf` must be exactly the message (a UDP
    /// datagram, or one frame cut by [`crate::framing`]).
    pub fn parse(buf: &'a [u8]) -> Result<Self, DecodeError> {
        if buf.len() < HEADER_LEN {
            return Err(DecodeError::TooShort);
        }
        let message_type = MessageType::from_u16(read_u16(buf, 0)).ok_or(DecodeError::NotStun)?;
        let length = usize::from(read_u16(buf, 2));
        if length % 4 != 0 {
            return Err(DecodeError::UnalignedLength);
        }
        if HEADER_LEN + length != buf.len() {
            return Err(DecodeError::LengthMismatch);
        }
        let tail: &[u8; 16] = buf[4..HEADER_LEN]
            .try_into()
            .map_err(|_| DecodeError::TooShort)?;
        let mut msg = Message {
            buf,
            message_type,
            transaction_id: TransactionId::from_header_tail(tail),
            integrity: None,
            integrity_sha256: None,
            fingerprint: None,
        };
        let mut offset = HEADER_LEN;
        let mut count = 0;
        while offset < buf.len() {
            if msg.fingerprint.is_some() {
                return Err(DecodeError::FingerprintNotLast);
            }
            count += 1;
            if count > MAX_ATTRIBUTES {
                return Err(DecodeError::TooManyAttributes);
            }
            if buf.len() - offset < 4 {
                return Err(DecodeError::AttributeOverrun);
            }
            let attr_type = AttrType(read_u16(buf, offset));
            let len = usize::from(read_u16(buf, offset + 2));
            let next = offset + 4 + padded(len);
            if next > buf.len() {
                return Err(DecodeError::AttributeOverrun);
            }
            match attr_type {
                AttrType::MESSAGE_INTEGRITY
                    if msg.integrity.is_none() && msg.integrity_sha256.is_none() =>
                {
                    msg.integrity = Some(offset)
                }
                AttrType::MESSAGE_INTEGRITY_SHA256 if msg.integrity_sha256.is_none() => {
                    msg.integrity_sha256 = Some(offset)
                }
                AttrType::FINGERPRINT => msg.fingerprint = Some(offset),
                _ => {}
            }
            offset = next;
        }
        Ok(msg)
    }

    /// The whole message.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// Method and class.
    pub fn message_type(&self) -> MessageType {
        self.message_type
    }

    /// The transaction ID (tells RFC 3489 from RFC 5389+ messages).
    pub fn transaction_id(&self) -> TransactionId {
        self.transaction_id
    }

    /// Whether this is a classic RFC 3489 message (no magic cookie).
    pub fn is_rfc3489(&self) -> bool {
        self.transaction_id.is_rfc3489()
    }

    /// Header bytes 4..20, the key XOR-encoded addresses are encoded with.
    pub fn xor_key(&self) -> [u8; 16] {
        self.transaction_id.header_tail()
    }

    /// The attributes that count, in order (see the module docs for which are ignored).
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes {
            buf: self.buf,
            offset: HEADER_LEN,
            after_integrity: false,
            after_integrity_sha256: false,
        }
    }

    /// The first attribute of a type, raw.
    pub fn raw(&self, attr_type: AttrType) -> Option<RawAttribute<'a>> {
        self.attributes().find(|a| a.attr_type == attr_type)
    }

    /// The first attribute of a type, decoded.
    pub fn get(&self, attr_type: AttrType) -> Option<Result<Attribute<'a>, AttrError>> {
        let raw = self.raw(attr_type)?;
        Some(Attribute::decode(raw.attr_type, raw.value, &self.xor_key()))
    }

    /// Every attribute that counts, decoded.
    pub fn decoded(&self) -> impl Iterator<Item = Result<Attribute<'a>, AttrError>> + 'a {
        let key = self.xor_key();
        self.attributes()
            .map(move |raw| Attribute::decode(raw.attr_type, raw.value, &key))
    }

    /// Comprehension-required attribute types this codec does not know
    /// (RFC 8489 §6.3.1: a request carrying any gets a 420 listing them).
    pub fn unknown_comprehension_required(&self) -> impl Iterator<Item = AttrType> + 'a {
        self.attributes()
            .map(|a| a.attr_type)
            .filter(|t| t.is_comprehension_required() && !t.is_known())
    }

    /// Whether MESSAGE-INTEGRITY is present (and counts).
    pub fn has_integrity(&self) -> bool {
        self.integrity.is_some()
    }

    /// Whether MESSAGE-INTEGRITY-SHA256 is present (and counts).
    pub fn has_integrity_sha256(&self) -> bool {
        self.integrity_sha256.is_some()
    }

    /// Whether FINGERPRINT is present.
    pub fn has_fingerprint(&self) -> bool {
        self.fingerprint.is_some()
    }

    /// The header with its length field set to cover everything up to `end`,
    /// as the integrity and fingerprint computations require.
    fn header_until(&self, end: usize) -> [u8; 20] {
        let mut header = [0u8; 20];
        header.copy_from_slice(&self.buf[..HEADER_LEN]);
        // `end` is within the message, whose length fits in u16.
        let len = (end - HEADER_LEN) as u16;
        header[2..4].copy_from_slice(&len.to_be_bytes());
        header
    }

    /// Checks MESSAGE-INTEGRITY (HMAC-SHA1) in constant time.
    pub fn verify_integrity(&self, key: &Sha1Key) -> Result<(), IntegrityError> {
        let at = self.integrity.ok_or(IntegrityError::Missing)?;
        // Length first: `parse` only checked the attribute's own length, so a
        // shorter MESSAGE-INTEGRITY near the end has no 20 bytes to slice.
        if read_u16(self.buf, at + 2) != 20 {
            return Err(IntegrityError::Mismatch);
        }
        let received = &self.buf[at + 4..at + 24];
        let computed = key.mac(&self.header_until(at + 24), &self.buf[HEADER_LEN..at]);
        if integrity::mac_matches(received, &computed) {
            Ok(())
        } else {
            Err(IntegrityError::Mismatch)
        }
    }

    /// Checks MESSAGE-INTEGRITY-SHA256 (possibly truncated, RFC 8489 §14.6) in constant time.
    pub fn verify_integrity_sha256(&self, key: &Sha256Key) -> Result<(), IntegrityError> {
        let at = self.integrity_sha256.ok_or(IntegrityError::Missing)?;
        let len = usize::from(read_u16(self.buf, at + 2));
        if !(16..=32).contains(&len) || len % 4 != 0 {
            return Err(IntegrityError::Mismatch);
        }
        let received = &self.buf[at + 4..at + 4 + len];
        let computed = key.mac(&self.header_until(at + 4 + len), &self.buf[HEADER_LEN..at]);
        if integrity::mac_matches(received, &computed) {
            Ok(())
        } else {
            Err(IntegrityError::Mismatch)
        }
    }

    /// `None` without a FINGERPRINT, else whether it matches.
    pub fn fingerprint_matches(&self) -> Option<bool> {
        let at = self.fingerprint?;
        // A FINGERPRINT of the wrong length is present but does not match.
        if read_u16(self.buf, at + 2) != 4 {
            return Some(false);
        }
        let value = self.buf.get(at + 4..at + 8)?;
        let expected = u32::from_be_bytes([value[0], value[1], value[2], value[3]]);
        Some(
            integrity::fingerprint(&self.header_until(at + 8), &self.buf[HEADER_LEN..at])
                == expected,
        )
    }
}

/// Iterator over the attributes of a [`Message`] that count.
#[derive(Clone, Debug)]
pub struct Attributes<'a> {
    buf: &'a [u8],
    offset: usize,
    after_integrity: bool,
    after_integrity_sha256: bool,
}

impl<'a> Iterator for Attributes<'a> {
    type Item = RawAttribute<'a>;

    fn next(&mut self) -> Option<RawAttribute<'a>> {
        // `Message::parse` validated the framing, so the reads below stay in bounds;
        // `get` keeps that true even if it did not.
        loop {
            let head = self.buf.get(self.offset..self.offset + 4)?;
            let attr_type = AttrType(u16::from_be_bytes([head[0], head[1]]));
            let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
            let value = self.buf.get(self.offset + 4..self.offset + 4 + len)?;
            self.offset += 4 + padded(len);
            let counts = match attr_type {
                AttrType::FINGERPRINT => true,
                AttrType::MESSAGE_INTEGRITY_SHA256 => !self.after_integrity_sha256,
                _ => !self.after_integrity && !self.after_integrity_sha256,
            };
            match attr_type {
                AttrType::MESSAGE_INTEGRITY => self.after_integrity = true,
                AttrType::MESSAGE_INTEGRITY_SHA256 => self.after_integrity_sha256 = true,
                _ => {}
            }
            if counts {
                return Some(RawAttribute { attr_type, value });
            }
        }
    }
}

/// Writes a STUN message into a caller-provided buffer.
///
/// The header's length field is kept current after every attribute, which is
/// what MESSAGE-INTEGRITY and FINGERPRINT need when they are appended.
#[derive(Debug)]
pub struct MessageBuilder<'b> {
    buf: &'b mut [u8],
    len: usize,
    xor_key: [u8; 16],
}

impl<'b> MessageBuilder<'b> {
    /// Starts a message with the given type and transaction ID.
    pub fn new(
        buf: &'b mut [u8],
        message_type: MessageType,
        transaction_id: TransactionId,
    ) -> Result<Self, EncodeError> {
        if buf.len() < HEADER_LEN {
            return Err(EncodeError::BufferTooSmall);
        }
        let xor_key = transaction_id.header_tail();
        buf[0..2].copy_from_slice(&message_type.to_u16().to_be_bytes());
        buf[2..4].fill(0);
        buf[4..HEADER_LEN].copy_from_slice(&xor_key);
        Ok(MessageBuilder {
            buf,
            len: HEADER_LEN,
            xor_key,
        })
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether only the header has been written.
    pub fn is_empty(&self) -> bool {
        self.len == HEADER_LEN
    }

    /// Reserves an attribute of `value_len` bytes, sets the header length, and
    /// returns the value slice for the caller to fill. Padding is zeroed.
    fn reserve(&mut self, attr_type: AttrType, value_len: usize) -> Result<&mut [u8], EncodeError> {
        let value_len_u16 = u16::try_from(value_len).map_err(|_| EncodeError::MessageTooLong)?;
        let end = self.len + 4 + padded(value_len);
        let body_len = u16::try_from(end - HEADER_LEN).map_err(|_| EncodeError::MessageTooLong)?;
        if end > self.buf.len() {
            return Err(EncodeError::BufferTooSmall);
        }
        let start = self.len;
        self.buf[start..start + 2].copy_from_slice(&attr_type.0.to_be_bytes());
        self.buf[start + 2..start + 4].copy_from_slice(&value_len_u16.to_be_bytes());
        self.buf[start + 4 + value_len..end].fill(0);
        self.buf[2..4].copy_from_slice(&body_len.to_be_bytes());
        self.len = end;
        Ok(&mut self.buf[start + 4..start + 4 + value_len])
    }

    /// Appends an attribute.
    pub fn add(&mut self, attr: &Attribute<'_>) -> Result<(), EncodeError> {
        attr.check()?;
        let key = self.xor_key;
        let value = self.reserve(attr.attr_type(), attr.value_len())?;
        attr.encode_value(&key, value);
        Ok(())
    }

    /// Appends an attribute whose value the caller writes in place (e.g. DATA
    /// received straight into the buffer). `fill` gets exactly `value_len` bytes.
    pub fn add_with(
        &mut self,
        attr_type: AttrType,
        value_len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), EncodeError> {
        fill(self.reserve(attr_type, value_len)?);
        Ok(())
    }

    /// Appends MESSAGE-INTEGRITY computed over everything written so far.
    pub fn add_message_integrity(&mut self, key: &Sha1Key) -> Result<(), EncodeError> {
        let start = self.len;
        self.reserve(AttrType::MESSAGE_INTEGRITY, 20)?;
        let header: [u8; 20] = self.header();
        let mac = key.mac(&header, &self.buf[HEADER_LEN..start]);
        self.buf[start + 4..start + 24].copy_from_slice(&mac);
        Ok(())
    }

    /// Appends a full-length MESSAGE-INTEGRITY-SHA256.
    pub fn add_message_integrity_sha256(&mut self, key: &Sha256Key) -> Result<(), EncodeError> {
        let start = self.len;
        self.reserve(AttrType::MESSAGE_INTEGRITY_SHA256, 32)?;
        let header: [u8; 20] = self.header();
        let mac = key.mac(&header, &self.buf[HEADER_LEN..start]);
        self.buf[start + 4..start + 36].copy_from_slice(&mac);
        Ok(())
    }

    /// Appends FINGERPRINT; it must be the last attribute.
    pub fn add_fingerprint(&mut self) -> Result<(), EncodeError> {
        let start = self.len;
        self.reserve(AttrType::FINGERPRINT, 4)?;
        let header: [u8; 20] = self.header();
        let crc = integrity::fingerprint(&header, &self.buf[HEADER_LEN..start]);
        self.buf[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
        Ok(())
    }

    fn header(&self) -> [u8; 20] {
        let mut header = [0u8; 20];
        header.copy_from_slice(&self.buf[..HEADER_LEN]);
        header
    }

    /// Finishes the message; returns its length.
    pub fn finish(self) -> usize {
        self.len
    }
}
