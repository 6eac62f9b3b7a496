//! STUN message parsing: parse, decode every attribute, check integrity and
//! FINGERPRINT, re-encode what decoded and parse that again.
//!
//! Each input is tried twice: as it is (a whole datagram), and as a message
//! body behind a header whose length field is made right, so the fuzzer
//! spends its time in the attributes rather than on the length check.

#![no_main]

use libfuzzer_sys::fuzz_target;
use turnpike_codec::{
    Attribute, DecodeError, HEADER_LEN, MAGIC_COOKIE, Message, MessageBuilder, Sha1Key, Sha256Key,
};

fuzz_target!(|data: &[u8]| {
    let _ = check(data);

    if let Some((&[t0, t1, flags], body)) = data.split_first_chunk::<3>() {
        let body = &body[..(body.len() & !3).min(0xFFFC)];
        let mut buf = Vec::with_capacity(HEADER_LEN + body.len());
        buf.extend_from_slice(&(u16::from_be_bytes([t0, t1]) & 0x3FFF).to_be_bytes());
        buf.extend_from_slice(&(body.len() as u16).to_be_bytes());
        if flags & 1 == 0 {
            // RFC 5389+: the cookie, then a 96-bit ID.
            buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
            buf.extend_from_slice(&[flags; 12]);
        } else {
            // RFC 3489: a 128-bit ID.
            buf.extend_from_slice(&[flags; 16]);
        }
        buf.extend_from_slice(body);
        let parsed = check(&buf);
        // A right header leaves only attribute-level errors.
        if let Err(e) = parsed {
            assert!(
                matches!(
                    e,
                    DecodeError::AttributeOverrun
                        | DecodeError::TooManyAttributes
                        | DecodeError::FingerprintNotLast
                ),
                "{e:?}"
            );
        }
    }
});

fn check(data: &[u8]) -> Result<(), DecodeError> {
    let msg = Message::parse(data)?;
    assert_eq!(msg.as_bytes(), data);
    let _ = msg.message_type();
    let _ = msg.is_rfc3489();
    let _ = msg.unknown_comprehension_required().count();
    let _ = msg.verify_integrity(&Sha1Key::new(b"fuzz"));
    let _ = msg.verify_integrity_sha256(&Sha256Key::new(b"fuzz"));
    let fp = msg.fingerprint_matches();
    assert_eq!(fp.is_some(), msg.has_fingerprint());

    // Decode everything; what decodes must be encodable.
    let mut decoded: Vec<Attribute<'_>> = Vec::new();
    for raw in msg.attributes() {
        assert!(msg.get(raw.attr_type).is_some(), "a listed type is found");
        if let Ok(a) = Attribute::decode(raw.attr_type, raw.value, &msg.xor_key()) {
            assert_eq!(a.attr_type(), raw.attr_type);
            assert_eq!(a.check(), Ok(()), "{a:?} decoded but does not check");
            assert!(a.value_len() <= raw.value.len());
            decoded.push(a);
        }
    }

    // Re-encode and re-parse: same type, ID and attributes.
    let mut out = vec![0u8; data.len()];
    let mut b = MessageBuilder::new(&mut out, msg.message_type(), msg.transaction_id())
        .expect("header fits");
    for a in &decoded {
        b.add(a)
            .unwrap_or_else(|e| panic!("re-encoding {a:?}: {e}"));
    }
    let n = b.finish();
    let again = Message::parse(&out[..n]).expect("re-encoded message parses");
    assert_eq!(again.message_type(), msg.message_type());
    assert_eq!(again.transaction_id(), msg.transaction_id());
    let redecoded: Vec<Attribute<'_>> = again
        .decoded()
        .map(|a| a.expect("re-encoded attribute decodes"))
        .collect();
    assert_eq!(redecoded, decoded);
    Ok(())
}
