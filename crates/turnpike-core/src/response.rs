//! Building responses.
//!
//! Error responses are deliberately lean: a short reason phrase, no SOFTWARE,
//! nothing the client did not ask for. Every unauthenticated answer is a
//! potential reflection payload, so its size is kept close to the request's.

use turnpike_codec::Message;
use turnpike_codec::attr::U16List;
use turnpike_codec::message::MAX_ATTRIBUTES;
use turnpike_codec::{
    Attribute, EncodeError, ErrorCode, MessageBuilder, MessageType, Method, TransactionId,
};

/// The reason phrase sent with an error code. RFC 8489 §14.8 lets the phrase
/// be anything; these are the RFCs' names, short.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        300 => "Try Alternate",
        400 => "Bad Request",
        401 => "Unauthenticated",
        403 => "Forbidden",
        420 => "Unknown Attribute",
        437 => "Allocation Mismatch",
        438 => "Stale Nonce",
        440 => "Address Family not Supported",
        441 => "Wrong Credentials",
        442 => "Unsupported Transport Protocol",
        443 => "Peer Address Family Mismatch",
        486 => "Allocation Quota Reached",
        500 => "Server Error",
        508 => "Insufficient Capacity",
        _ => "",
    }
}

/// What goes into an error response besides its code.
#[derive(Clone, Copy, Debug, Default)]
pub struct ErrorDetails<'a> {
    /// For 420: the attribute types not understood.
    pub unknown_attributes: &'a [u16],
    /// Whether to append FINGERPRINT (the request carried one).
    pub fingerprint: bool,
}

/// Writes an error response for a request of `method` into `out`.
pub fn write_error(
    out: &mut [u8],
    method: Method,
    transaction_id: TransactionId,
    code: u16,
    details: ErrorDetails<'_>,
) -> Result<usize, EncodeError> {
    let mut msg = MessageBuilder::new(
        out,
        MessageType::new(method, turnpike_codec::Class::Error),
        transaction_id,
    )?;
    msg.add(&Attribute::ErrorCode(ErrorCode {
        code,
        reason: reason_phrase(code),
    }))?;
    if !details.unknown_attributes.is_empty() {
        msg.add(&Attribute::UnknownAttributes(U16List::Values(
            details.unknown_attributes,
        )))?;
    }
    if details.fingerprint {
        msg.add_fingerprint()?;
    }
    Ok(msg.finish())
}

/// The comprehension-required attributes of a request that this server does
/// not understand (RFC 8489 §6.3.1: answered with 420 listing them), held on
/// the stack.
#[derive(Debug)]
pub(crate) struct UnknownAttributes {
    types: [u16; MAX_ATTRIBUTES],
    len: usize,
}

impl UnknownAttributes {
    pub(crate) fn of(message: &Message<'_>) -> Self {
        let mut unknown = UnknownAttributes {
            types: [0; MAX_ATTRIBUTES],
            len: 0,
        };
        for attr_type in message.unknown_comprehension_required() {
            // A message has at most MAX_ATTRIBUTES attributes.
            if unknown.len < unknown.types.len() {
                unknown.types[unknown.len] = attr_type.0;
                unknown.len += 1;
            }
        }
        unknown
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn as_slice(&self) -> &[u16] {
        &self.types[..self.len]
    }
}
