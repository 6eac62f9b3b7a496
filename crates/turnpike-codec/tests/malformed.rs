//! Malformed input: every case has one defined, asserted result, and none
//! panics.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use turnpike_codec::attr::{MAX_TEXT_LEN, MAX_USERNAME_LEN};
use turnpike_codec::channel_data::{ChannelDataError, MAX_CHANNEL, MIN_CHANNEL};
use turnpike_codec::framing::{Frame, PacketKind, next_frame};
use turnpike_codec::message::MAX_ATTRIBUTES;
use turnpike_codec::{
    AttrError, AttrType, Attribute, ChannelData, Class, DecodeError, EncodeError, IntegrityError,
    MAGIC_COOKIE, Message, MessageBuilder, MessageType, Method, Sha1Key, Sha256Key, TransactionId,
};

const TID: [u8; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

/// A Binding request header with the given body length field.
fn header(len: u16) -> Vec<u8> {
    let mut h = vec![0x00, 0x01];
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    h.extend_from_slice(&TID);
    h
}

/// One attribute, padded with zeros.
fn attr(t: u16, value: &[u8]) -> Vec<u8> {
    let mut a = t.to_be_bytes().to_vec();
    a.extend_from_slice(&(value.len() as u16).to_be_bytes());
    a.extend_from_slice(value);
    a.resize(4 + value.len().div_ceil(4) * 4, 0);
    a
}

/// A message whose header length matches the attributes given.
fn message(attrs: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = attrs.concat();
    let mut m = header(body.len() as u16);
    m.extend_from_slice(&body);
    m
}

fn binding() -> MessageType {
    MessageType::new(Method::BINDING, Class::Request)
}

#[test]
fn truncated_header() {
    let full = header(0);
    assert!(Message::parse(&full).is_ok());
    for n in 0..20 {
        assert_eq!(
            Message::parse(&full[..n]).err(),
            Some(DecodeError::TooShort),
            "{n} bytes"
        );
    }
}

#[test]
fn not_stun() {
    for first in [0x40u8, 0x80, 0xC0, 0xFF] {
        let mut m = header(0);
        m[0] = first;
        assert_eq!(Message::parse(&m).err(), Some(DecodeError::NotStun));
    }
}

#[test]
fn length_not_a_multiple_of_four() {
    for len in [1u16, 2, 3, 5, 6, 7, 0xFFFF] {
        let mut m = header(len);
        m.resize(20 + usize::from(len), 0);
        assert_eq!(
            Message::parse(&m).err(),
            Some(DecodeError::UnalignedLength),
            "length {len}"
        );
    }
}

#[test]
fn length_field_differs_from_buffer() {
    let good = message(&[attr(0x0006, b"user")]);
    assert!(Message::parse(&good).is_ok());
    // Buffer shorter than the length field says.
    assert_eq!(
        Message::parse(&good[..good.len() - 4]).err(),
        Some(DecodeError::LengthMismatch)
    );
    // Buffer longer (trailing bytes after the message).
    let mut long = good.clone();
    long.extend_from_slice(&[0; 4]);
    assert_eq!(
        Message::parse(&long).err(),
        Some(DecodeError::LengthMismatch)
    );
    // Length field larger than anything present.
    let mut m = header(0xFFFC);
    m.extend_from_slice(&[0; 8]);
    assert_eq!(Message::parse(&m).err(), Some(DecodeError::LengthMismatch));
}

#[test]
fn attribute_running_past_the_end() {
    // USERNAME claiming 8 bytes where 4 remain.
    let mut body = 0x0006u16.to_be_bytes().to_vec();
    body.extend_from_slice(&8u16.to_be_bytes());
    body.extend_from_slice(b"abcd");
    let mut m = header(body.len() as u16);
    m.extend_from_slice(&body);
    assert_eq!(
        Message::parse(&m).err(),
        Some(DecodeError::AttributeOverrun)
    );

    // Its value fits but its padding does not: 5 bytes need 8.
    let mut body = 0x0006u16.to_be_bytes().to_vec();
    body.extend_from_slice(&5u16.to_be_bytes());
    body.extend_from_slice(b"abcd");
    let mut m = header(body.len() as u16);
    m.extend_from_slice(&body);
    assert_eq!(
        Message::parse(&m).err(),
        Some(DecodeError::AttributeOverrun)
    );

    // Maximal length field.
    let mut m = message(&[attr(0x0006, b"ok")]);
    m.extend_from_slice(&[0x80, 0x22, 0xFF, 0xFF]);
    let body_len = (m.len() - 20) as u16;
    m[2..4].copy_from_slice(&body_len.to_be_bytes());
    assert_eq!(
        Message::parse(&m).err(),
        Some(DecodeError::AttributeOverrun)
    );
}

#[test]
fn zero_length_attributes() {
    let m = message(&[
        attr(0x001A, &[]),
        attr(0x0020, &[]),
        attr(0x0006, &[]),
        attr(0x0013, &[]),
    ]);
    let msg = Message::parse(&m).unwrap();
    // DONT-FRAGMENT is empty by definition.
    assert_eq!(
        msg.get(AttrType::DONT_FRAGMENT),
        Some(Ok(Attribute::DontFragment))
    );
    // An address cannot be.
    assert_eq!(
        msg.get(AttrType::XOR_MAPPED_ADDRESS),
        Some(Err(AttrError::BadLength))
    );
    // Empty text and data are fine.
    assert_eq!(
        msg.get(AttrType::USERNAME),
        Some(Ok(Attribute::Username("")))
    );
    assert_eq!(msg.get(AttrType::DATA), Some(Ok(Attribute::Data(&[]))));
    let results: Vec<_> = msg.decoded().collect();
    assert_eq!(results.len(), 4);
    assert_eq!(results[1], Err(AttrError::BadLength));

    // And the reverse: DONT-FRAGMENT with a value is wrong.
    let m = message(&[attr(0x001A, &[0, 0, 0, 0])]);
    let msg = Message::parse(&m).unwrap();
    assert_eq!(
        msg.get(AttrType::DONT_FRAGMENT),
        Some(Err(AttrError::BadLength))
    );
}

#[test]
fn fixed_size_attributes_of_the_wrong_size() {
    for (t, len) in [
        (0x000Du16, 3usize), // LIFETIME
        (0x000D, 8),
        (0x000C, 2),  // CHANNEL-NUMBER
        (0x0019, 1),  // REQUESTED-TRANSPORT
        (0x0018, 4),  // EVEN-PORT
        (0x001E, 31), // USERHASH
        (0x0022, 4),  // RESERVATION-TOKEN
        (0x8028, 8),  // FINGERPRINT, here last
        (0x0008, 16), // MESSAGE-INTEGRITY
        (0x0003, 2),  // CHANGE-REQUEST
        (0x8004, 4),  // ICMP
        (0x0017, 1),  // REQUESTED-ADDRESS-FAMILY
    ] {
        let m = message(&[attr(t, &vec![0x11; len])]);
        let msg = Message::parse(&m).unwrap();
        assert_eq!(
            msg.get(AttrType(t)),
            Some(Err(AttrError::BadLength)),
            "type {t:#06x} length {len}"
        );
    }
}

#[test]
fn oversize_text_attributes() {
    let at_limit = "u".repeat(MAX_USERNAME_LEN);
    let over = "u".repeat(MAX_USERNAME_LEN + 1);
    assert_eq!(MAX_USERNAME_LEN, 512);
    let m = message(&[attr(0x0006, at_limit.as_bytes())]);
    assert_eq!(
        Message::parse(&m).unwrap().get(AttrType::USERNAME),
        Some(Ok(Attribute::Username(&at_limit)))
    );
    let m = message(&[attr(0x0006, over.as_bytes())]);
    assert_eq!(
        Message::parse(&m).unwrap().get(AttrType::USERNAME),
        Some(Err(AttrError::TooLong))
    );

    assert_eq!(MAX_TEXT_LEN, 763);
    for t in [0x0014u16, 0x0015, 0x8022, 0x8003] {
        let ok = "r".repeat(MAX_TEXT_LEN);
        let m = message(&[attr(t, ok.as_bytes())]);
        assert!(
            Message::parse(&m)
                .unwrap()
                .get(AttrType(t))
                .unwrap()
                .is_ok(),
            "{t:#06x} at the limit"
        );
        let over = "r".repeat(MAX_TEXT_LEN + 1);
        let m = message(&[attr(t, over.as_bytes())]);
        assert_eq!(
            Message::parse(&m).unwrap().get(AttrType(t)),
            Some(Err(AttrError::TooLong)),
            "{t:#06x}"
        );
    }
    // ERROR-CODE reason phrase too.
    let mut v = vec![0, 0, 4, 1];
    v.extend_from_slice("e".repeat(MAX_TEXT_LEN + 1).as_bytes());
    let m = message(&[attr(0x0009, &v)]);
    assert_eq!(
        Message::parse(&m).unwrap().get(AttrType::ERROR_CODE),
        Some(Err(AttrError::TooLong))
    );

    // The builder refuses the same values.
    let mut buf = vec![0u8; 4096];
    let mut b = MessageBuilder::new(&mut buf, binding(), TransactionId::Rfc5389(TID)).unwrap();
    assert_eq!(
        b.add(&Attribute::Username(&over)),
        Err(EncodeError::Attribute(AttrError::TooLong))
    );
    assert_eq!(
        b.add(&Attribute::Realm(&"r".repeat(MAX_TEXT_LEN + 1))),
        Err(EncodeError::Attribute(AttrError::TooLong))
    );
    assert_eq!(b.len(), 20, "nothing written");
}

#[test]
fn text_that_is_not_utf8() {
    let m = message(&[attr(0x0006, &[0x66, 0xFF, 0x66]), attr(0x0014, &[0xC3])]);
    let msg = Message::parse(&m).unwrap();
    assert_eq!(msg.get(AttrType::USERNAME), Some(Err(AttrError::NotUtf8)));
    assert_eq!(msg.get(AttrType::REALM), Some(Err(AttrError::NotUtf8)));
}

#[test]
fn error_code_out_of_range() {
    for (class, number, want) in [
        (2u8, 0u8, Err(AttrError::BadValue)),
        (7, 0, Err(AttrError::BadValue)),
        (4, 100, Err(AttrError::BadValue)),
        (6, 99, Ok(699)),
        (3, 0, Ok(300)),
        // Reserved bits above the class are ignored.
        (0xF8 | 4, 38, Ok(438)),
    ] {
        let m = message(&[attr(0x0009, &[0, 0, class, number])]);
        let got = Message::parse(&m)
            .unwrap()
            .get(AttrType::ERROR_CODE)
            .unwrap();
        match want {
            Ok(code) => assert!(
                matches!(got, Ok(Attribute::ErrorCode(e)) if e.code == code && e.reason.is_empty())
            ),
            Err(e) => assert_eq!(got, Err(e)),
        }
    }
    let mut buf = [0u8; 64];
    let mut b = MessageBuilder::new(&mut buf, binding(), TransactionId::Rfc5389(TID)).unwrap();
    let bad = Attribute::ErrorCode(turnpike_codec::ErrorCode {
        code: 700,
        reason: "",
    });
    assert_eq!(
        b.add(&bad),
        Err(EncodeError::Attribute(AttrError::BadValue))
    );
}

#[test]
fn duplicated_attributes_first_wins() {
    let m = message(&[
        attr(0x0006, b"first"),
        attr(0x0014, b"realm"),
        attr(0x0006, b"second"),
    ]);
    let msg = Message::parse(&m).unwrap();
    assert_eq!(
        msg.get(AttrType::USERNAME),
        Some(Ok(Attribute::Username("first")))
    );
    // Both are still listed, in order.
    let usernames: Vec<_> = msg
        .decoded()
        .filter_map(|a| match a {
            Ok(Attribute::Username(u)) => Some(u),
            _ => None,
        })
        .collect();
    assert_eq!(usernames, ["first", "second"]);
}

#[test]
fn too_many_attributes() {
    // Exactly the limit is fine.
    let at_limit = message(&vec![attr(0x001A, &[]); MAX_ATTRIBUTES]);
    assert_eq!(
        Message::parse(&at_limit).unwrap().attributes().count(),
        MAX_ATTRIBUTES
    );
    // One more is not.
    let over = message(&vec![attr(0x001A, &[]); MAX_ATTRIBUTES + 1]);
    assert_eq!(
        Message::parse(&over).err(),
        Some(DecodeError::TooManyAttributes)
    );
    // Nor thousands (the most a 16-bit length allows: 16383 empty attributes).
    let flood = message(&vec![attr(0x8000 | 0x7F, &[]); 16_383]);
    assert_eq!(flood.len(), 20 + 65_532);
    assert_eq!(
        Message::parse(&flood).err(),
        Some(DecodeError::TooManyAttributes)
    );
}

#[test]
fn attributes_after_message_integrity_are_ignored_except_fingerprint() {
    let key = Sha1Key::new(b"secret");
    let mut buf = vec![0u8; 512];
    let mut b = MessageBuilder::new(&mut buf, binding(), TransactionId::Rfc5389(TID)).unwrap();
    b.add(&Attribute::Username("alice")).unwrap();
    b.add_message_integrity(&key).unwrap();
    b.add(&Attribute::Realm("smuggled")).unwrap();
    b.add(&Attribute::Username("mallory")).unwrap();
    b.add_fingerprint().unwrap();
    let n = b.finish();
    let msg = Message::parse(&buf[..n]).unwrap();

    let types: Vec<AttrType> = msg.attributes().map(|a| a.attr_type).collect();
    assert_eq!(
        types,
        [
            AttrType::USERNAME,
            AttrType::MESSAGE_INTEGRITY,
            AttrType::FINGERPRINT
        ]
    );
    assert_eq!(msg.get(AttrType::REALM), None);
    assert_eq!(
        msg.get(AttrType::USERNAME),
        Some(Ok(Attribute::Username("alice")))
    );
    assert_eq!(msg.verify_integrity(&key), Ok(()));
    assert_eq!(msg.fingerprint_matches(), Some(true));
}

#[test]
fn integrity_attribute_ordering() {
    let k1 = Sha1Key::new(b"k");
    let k256 = Sha256Key::new(b"k");

    // MESSAGE-INTEGRITY then MESSAGE-INTEGRITY-SHA256: both count.
    let mut buf = vec![0u8; 512];
    let mut b = MessageBuilder::new(&mut buf, binding(), TransactionId::Rfc5389(TID)).unwrap();
    b.add(&Attribute::Username("u")).unwrap();
    b.add_message_integrity(&k1).unwrap();
    b.add_message_integrity_sha256(&k256).unwrap();
    b.add(&Attribute::Nonce("ignored")).unwrap();
    let n = b.finish();
    let msg = Message::parse(&buf[..n]).unwrap();
    assert!(msg.has_integrity() && msg.has_integrity_sha256());
    assert_eq!(msg.verify_integrity(&k1), Ok(()));
    assert_eq!(msg.verify_integrity_sha256(&k256), Ok(()));
    assert_eq!(msg.get(AttrType::NONCE), None);

    // MESSAGE-INTEGRITY-SHA256 then MESSAGE-INTEGRITY: the latter is ignored.
    let mut buf = vec![0u8; 512];
    let mut b = MessageBuilder::new(&mut buf, binding(), TransactionId::Rfc5389(TID)).unwrap();
    b.add(&Attribute::Username("u")).unwrap();
    b.add_message_integrity_sha256(&k256).unwrap();
    b.add_message_integrity(&k1).unwrap();
    let n = b.finish();
    let msg = Message::parse(&buf[..n]).unwrap();
    assert!(!msg.has_integrity());
    assert_eq!(msg.verify_integrity(&k1), Err(IntegrityError::Missing));
    assert_eq!(msg.verify_integrity_sha256(&k256), Ok(()));
    assert_eq!(msg.get(AttrType::MESSAGE_INTEGRITY), None);

    // A second MESSAGE-INTEGRITY is ignored; the first is the one checked.
    let mut buf = vec![0u8; 512];
    let mut b = MessageBuilder::new(&mut buf, binding(), TransactionId::Rfc5389(TID)).unwrap();
    b.add_message_integrity(&k1).unwrap();
    b.add_message_integrity(&Sha1Key::new(b"other")).unwrap();
    let n = b.finish();
    let msg = Message::parse(&buf[..n]).unwrap();
    assert_eq!(msg.attributes().count(), 1);
    assert_eq!(msg.verify_integrity(&k1), Ok(()));
}

#[test]
fn fingerprint_not_last() {
    let m = message(&[attr(0x8028, &[0; 4]), attr(0x0006, b"late")]);
    assert_eq!(
        Message::parse(&m).err(),
        Some(DecodeError::FingerprintNotLast)
    );
    let m = message(&[attr(0x8028, &[0; 4]), attr(0x8028, &[0; 4])]);
    assert_eq!(
        Message::parse(&m).err(),
        Some(DecodeError::FingerprintNotLast)
    );
    // Last, even with a wrong value, parses; it just does not match.
    let m = message(&[attr(0x0006, b"u"), attr(0x8028, &[0; 4])]);
    assert_eq!(
        Message::parse(&m).unwrap().fingerprint_matches(),
        Some(false)
    );
}

#[test]
fn fingerprint_of_the_wrong_length() {
    for len in [0usize, 3, 8] {
        let m = message(&[attr(0x0006, b"u"), attr(0x8028, &vec![0; len])]);
        let msg = Message::parse(&m).unwrap();
        assert!(msg.has_fingerprint());
        assert_eq!(msg.fingerprint_matches(), Some(false), "length {len}");
        assert_eq!(
            msg.get(AttrType::FINGERPRINT),
            Some(Err(AttrError::BadLength))
        );
    }
}

/// Regression: a MESSAGE-INTEGRITY shorter than 20 bytes at the end of a
/// message made `verify_integrity` slice past the buffer and panic.
#[test]
fn message_integrity_of_the_wrong_length() {
    let key = Sha1Key::new(b"k");
    for len in [0usize, 1, 4, 16, 19, 21, 24, 40] {
        let m = message(&[attr(0x0006, b"user"), attr(0x0008, &vec![0xAB; len])]);
        let msg = Message::parse(&m).unwrap();
        assert!(msg.has_integrity());
        assert_eq!(
            msg.verify_integrity(&key),
            Err(IntegrityError::Mismatch),
            "length {len}"
        );
        assert_eq!(
            msg.get(AttrType::MESSAGE_INTEGRITY),
            Some(Err(AttrError::BadLength))
        );
        // Followed by another attribute, too.
        let m = message(&[attr(0x0008, &vec![0xAB; len]), attr(0x8028, &[0; 4])]);
        let msg = Message::parse(&m).unwrap();
        assert_eq!(
            msg.verify_integrity(&key),
            Err(IntegrityError::Mismatch),
            "length {len}, then FINGERPRINT"
        );
    }
}

#[test]
fn message_integrity_sha256_lengths() {
    let key_bytes = b"sha256 key";
    let key = Sha256Key::new(key_bytes);
    // Illegal lengths: under 16, over 32, or not a multiple of 4.
    for len in [0usize, 4, 12, 15, 17, 18, 30, 33, 36, 64] {
        let m = message(&[attr(0x0006, b"user"), attr(0x001C, &vec![0x5A; len])]);
        let msg = Message::parse(&m).unwrap();
        assert!(msg.has_integrity_sha256());
        assert_eq!(
            msg.get(AttrType::MESSAGE_INTEGRITY_SHA256),
            Some(Err(AttrError::BadLength)),
            "length {len}"
        );
        assert_eq!(
            msg.verify_integrity_sha256(&key),
            Err(IntegrityError::Mismatch),
            "length {len}"
        );
    }
    // Legal lengths, truncated MACs (RFC 8489 §14.6): computed here by hand,
    // they verify; a wrong value does not.
    for len in [16usize, 20, 24, 28, 32] {
        let mut m = message(&[attr(0x0006, b"user"), attr(0x001C, &vec![0; len])]);
        let at = m.len() - 4 - len;
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key_bytes).unwrap();
        mac.update(&m[..at]);
        let full = mac.finalize().into_bytes();
        m[at + 4..].copy_from_slice(&full[..len]);
        let msg = Message::parse(&m).unwrap();
        assert!(
            matches!(msg.get(AttrType::MESSAGE_INTEGRITY_SHA256), Some(Ok(Attribute::MessageIntegritySha256(v))) if v.len() == len)
        );
        assert_eq!(msg.verify_integrity_sha256(&key), Ok(()), "length {len}");
        m[at + 4] ^= 1;
        assert_eq!(
            Message::parse(&m).unwrap().verify_integrity_sha256(&key),
            Err(IntegrityError::Mismatch)
        );
    }
    // The builder refuses illegal lengths as plain attributes.
    let mut buf = [0u8; 128];
    let mut b = MessageBuilder::new(&mut buf, binding(), TransactionId::Rfc5389(TID)).unwrap();
    assert_eq!(
        b.add(&Attribute::MessageIntegritySha256(&[0; 12])),
        Err(EncodeError::Attribute(AttrError::BadLength))
    );
    assert_eq!(
        b.add(&Attribute::MessageIntegritySha256(&[0; 18])),
        Err(EncodeError::Attribute(AttrError::BadLength))
    );
}

#[test]
fn bad_address_family() {
    for t in [0x0001u16, 0x0020, 0x0012, 0x0016, 0x8023] {
        for family in [0x00u8, 0x03, 0xFF] {
            let m = message(&[attr(t, &[0, family, 0x12, 0x34, 1, 2, 3, 4])]);
            let msg = Message::parse(&m).unwrap();
            assert_eq!(
                msg.get(AttrType(t)),
                Some(Err(AttrError::BadAddressFamily)),
                "type {t:#06x} family {family}"
            );
        }
        // A known family with the other family's length.
        let m = message(&[attr(
            t,
            &[
                0, 0x01, 0x12, 0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        )]);
        assert_eq!(
            Message::parse(&m).unwrap().get(AttrType(t)),
            Some(Err(AttrError::BadLength))
        );
        let m = message(&[attr(t, &[0, 0x02, 0x12, 0x34, 1, 2, 3, 4])]);
        assert_eq!(
            Message::parse(&m).unwrap().get(AttrType(t)),
            Some(Err(AttrError::BadLength))
        );
        // Too short for even the family.
        let m = message(&[attr(t, &[0, 0x01])]);
        assert_eq!(
            Message::parse(&m).unwrap().get(AttrType(t)),
            Some(Err(AttrError::BadLength))
        );
    }
    // The family attributes.
    let m = message(&[
        attr(0x0017, &[0x03, 0, 0, 0]),
        attr(0x8000, &[0x00, 0, 0, 0]),
    ]);
    let msg = Message::parse(&m).unwrap();
    assert_eq!(
        msg.get(AttrType::REQUESTED_ADDRESS_FAMILY),
        Some(Err(AttrError::BadAddressFamily))
    );
    assert_eq!(
        msg.get(AttrType::ADDITIONAL_ADDRESS_FAMILY),
        Some(Err(AttrError::BadAddressFamily))
    );
}

#[test]
fn password_algorithms_malformed() {
    // An entry claiming more parameter bytes than the attribute holds.
    let m = message(&[attr(0x8002, &[0, 1, 0, 8, 1, 2, 3, 4])]);
    assert_eq!(
        Message::parse(&m)
            .unwrap()
            .get(AttrType::PASSWORD_ALGORITHMS),
        Some(Err(AttrError::BadLength))
    );
    // A trailing partial entry.
    let m = message(&[attr(0x8002, &[0, 1, 0, 0, 0, 2])]);
    assert_eq!(
        Message::parse(&m)
            .unwrap()
            .get(AttrType::PASSWORD_ALGORITHMS),
        Some(Err(AttrError::BadLength))
    );
    // PASSWORD-ALGORITHM whose parameter length disagrees with the attribute length.
    let m = message(&[attr(0x001D, &[0, 2, 0, 4])]);
    assert_eq!(
        Message::parse(&m)
            .unwrap()
            .get(AttrType::PASSWORD_ALGORITHM),
        Some(Err(AttrError::BadLength))
    );
    let m = message(&[attr(0x001D, &[0, 2])]);
    assert_eq!(
        Message::parse(&m)
            .unwrap()
            .get(AttrType::PASSWORD_ALGORITHM),
        Some(Err(AttrError::BadLength))
    );
    // UNKNOWN-ATTRIBUTES of odd length.
    let m = message(&[attr(0x000A, &[0, 1, 0])]);
    assert_eq!(
        Message::parse(&m)
            .unwrap()
            .get(AttrType::UNKNOWN_ATTRIBUTES),
        Some(Err(AttrError::BadLength))
    );
}

#[test]
fn unknown_comprehension_required_attributes() {
    let m = message(&[
        attr(0x0006, b"known"),
        attr(0x0024, &[0; 4]), // PRIORITY: comprehension-required, unknown here
        attr(0x7FFF, &[]),
        attr(0x0000, &[1]),    // reserved type 0
        attr(0x8029, &[0; 8]), // ICE-CONTROLLED: comprehension-optional
        attr(0xC001, &[]),
        attr(0x8022, b"known too"),
    ]);
    let msg = Message::parse(&m).unwrap();
    let unknown: Vec<AttrType> = msg.unknown_comprehension_required().collect();
    assert_eq!(
        unknown,
        [AttrType(0x0024), AttrType(0x7FFF), AttrType(0x0000)]
    );
    assert!(matches!(
        msg.get(AttrType(0xC001)),
        Some(Ok(Attribute::Unknown {
            attr_type: AttrType(0xC001),
            value: &[]
        }))
    ));

    // Unknown attributes after MESSAGE-INTEGRITY do not count.
    let mut buf = vec![0u8; 256];
    let mut b = MessageBuilder::new(&mut buf, binding(), TransactionId::Rfc5389(TID)).unwrap();
    b.add_message_integrity(&Sha1Key::new(b"k")).unwrap();
    b.add(&Attribute::Unknown {
        attr_type: AttrType(0x0024),
        value: &[0; 4],
    })
    .unwrap();
    let n = b.finish();
    assert_eq!(
        Message::parse(&buf[..n])
            .unwrap()
            .unknown_comprehension_required()
            .count(),
        0
    );
}

#[test]
fn rfc3489_message_without_cookie() {
    // A classic Binding request: 128-bit transaction ID, no cookie, with
    // CHANGE-REQUEST and RESPONSE-ADDRESS.
    let tid: [u8; 16] = [
        0xDE, 0xAD, 0xBE, 0xEF, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
    ];
    let mut m = vec![0x00, 0x01, 0x00, 0x00];
    m.extend_from_slice(&tid);
    let body = [
        attr(0x0003, &[0, 0, 0, 0x06]),
        attr(0x0002, &[0, 0x01, 0x0D, 0x96, 192, 0, 2, 7]),
    ]
    .concat();
    m[2..4].copy_from_slice(&(body.len() as u16).to_be_bytes());
    m.extend_from_slice(&body);

    let msg = Message::parse(&m).unwrap();
    assert!(msg.is_rfc3489());
    assert_eq!(msg.transaction_id(), TransactionId::Rfc3489(tid));
    assert_eq!(msg.xor_key(), tid);
    assert_eq!(msg.message_type(), binding());
    assert_eq!(
        msg.get(AttrType::CHANGE_REQUEST),
        Some(Ok(Attribute::ChangeRequest(
            turnpike_codec::ChangeRequest {
                change_ip: true,
                change_port: true
            }
        )))
    );
    assert_eq!(
        msg.get(AttrType::RESPONSE_ADDRESS),
        Some(Ok(Attribute::ResponseAddress(
            "192.0.2.7:3478".parse().unwrap()
        )))
    );

    // A classic response built by us keeps the 128-bit ID and reads back.
    let mut buf = [0u8; 64];
    let mut b = MessageBuilder::new(&mut buf, binding().success(), msg.transaction_id()).unwrap();
    b.add(&Attribute::MappedAddress(
        "198.51.100.1:40000".parse().unwrap(),
    ))
    .unwrap();
    let n = b.finish();
    assert_eq!(&buf[4..20], &tid);
    let resp = Message::parse(&buf[..n]).unwrap();
    assert!(resp.is_rfc3489());
    assert_eq!(
        resp.get(AttrType::MAPPED_ADDRESS),
        Some(Ok(Attribute::MappedAddress(
            "198.51.100.1:40000".parse().unwrap()
        )))
    );
}

#[test]
fn channel_data_malformed() {
    assert_eq!(ChannelData::parse(&[]), Err(ChannelDataError::TooShort));
    assert_eq!(
        ChannelData::parse(&[0x40, 0x00, 0x00]),
        Err(ChannelDataError::TooShort)
    );
    // Channel numbers outside 0x4000..=0x7FFF.
    for ch in [0x0000u16, 0x0001, 0x3FFF, 0x8000, 0xFFFF] {
        let mut m = ch.to_be_bytes().to_vec();
        m.extend_from_slice(&[0, 0]);
        assert_eq!(
            ChannelData::parse(&m),
            Err(ChannelDataError::BadChannel),
            "channel {ch:#06x}"
        );
    }
    for ch in [MIN_CHANNEL, 0x4FFF, MAX_CHANNEL] {
        let mut m = ch.to_be_bytes().to_vec();
        m.extend_from_slice(&[0, 1, 0xAA]);
        assert_eq!(
            ChannelData::parse(&m),
            Ok(ChannelData {
                channel: ch,
                data: &[0xAA]
            })
        );
    }
    // Length larger than the data.
    assert_eq!(
        ChannelData::parse(&[0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4]),
        Err(ChannelDataError::LengthOverrun)
    );
    assert_eq!(
        ChannelData::parse(&[0x40, 0x00, 0xFF, 0xFF]),
        Err(ChannelDataError::LengthOverrun)
    );
    // Extra bytes (padding) after the data are ignored.
    assert_eq!(
        ChannelData::parse(&[0x40, 0x00, 0x00, 0x01, 9, 0, 0, 0, 0xFF]),
        Ok(ChannelData {
            channel: 0x4000,
            data: &[9]
        })
    );
    // Encoding: data too long for the length field, buffer too small.
    let big = vec![0u8; 65_536];
    let mut out = vec![0u8; 65_544];
    assert_eq!(
        ChannelData {
            channel: 0x4000,
            data: &big
        }
        .encode(&mut out, false),
        Err(EncodeError::MessageTooLong)
    );
    let mut small = [0u8; 6];
    assert_eq!(
        ChannelData {
            channel: 0x4000,
            data: &[1, 2, 3]
        }
        .encode(&mut small, false),
        Err(EncodeError::BufferTooSmall)
    );
}

#[test]
fn framing_malformed() {
    // Not STUN or ChannelData: RTP, DTLS, garbage.
    for first in [0x80u8, 0x16, 0x14, 0x3F, 0xFF, 0x04] {
        assert_eq!(
            next_frame(&[first, 0, 0, 0]),
            Frame::Invalid,
            "first byte {first:#04x}"
        );
    }
    // STUN with an unaligned length.
    assert_eq!(next_frame(&[0x00, 0x01, 0x00, 0x02]), Frame::Invalid);
    // Too short to tell.
    for n in 0..4 {
        assert_eq!(
            next_frame(&[0x00, 0x01, 0x00, 0x00][..n]),
            Frame::Incomplete { needed: 4 }
        );
    }
    // STUN header announcing the largest body.
    assert_eq!(
        next_frame(&[0x00, 0x01, 0xFF, 0xFC]),
        Frame::Incomplete {
            needed: 20 + 0xFFFC
        }
    );
    // ChannelData announcing the most data: padded to 4 on a stream.
    assert_eq!(
        next_frame(&[0x40, 0x00, 0xFF, 0xFF]),
        Frame::Incomplete {
            needed: 4 + 0xFFFF + 1
        }
    );
    // A ChannelData frame waits for its padding.
    let frame = [0x7F, 0xFF, 0x00, 0x01, 0xAA, 0, 0, 0];
    assert_eq!(next_frame(&frame[..5]), Frame::Incomplete { needed: 8 });
    assert_eq!(
        next_frame(&frame),
        Frame::Complete {
            kind: PacketKind::ChannelData,
            len: 5,
            consumed: 8
        }
    );
}

/// The largest frame [`next_frame`] can cut fits in `MAX_FRAME_LEN`.
#[test]
fn max_frame_len_covers_the_largest_frames() {
    use turnpike_codec::framing::MAX_FRAME_LEN;
    let Frame::Incomplete { needed: stun } = next_frame(&[0x00, 0x01, 0xFF, 0xFC]) else {
        panic!()
    };
    let Frame::Incomplete { needed: cd } = next_frame(&[0x40, 0x00, 0xFF, 0xFF]) else {
        panic!()
    };
    assert!(
        stun <= MAX_FRAME_LEN,
        "STUN frame of {stun} bytes > MAX_FRAME_LEN {MAX_FRAME_LEN}"
    );
    assert!(
        cd <= MAX_FRAME_LEN,
        "ChannelData frame of {cd} bytes > MAX_FRAME_LEN {MAX_FRAME_LEN}"
    );
    assert_eq!(MAX_FRAME_LEN, stun.max(cd));
}

#[test]
fn builder_limits() {
    // Header does not fit.
    let mut tiny = [0u8; 19];
    assert_eq!(
        MessageBuilder::new(&mut tiny, binding(), TransactionId::Rfc5389(TID)).err(),
        Some(EncodeError::BufferTooSmall)
    );
    // Attribute does not fit: nothing is written.
    let mut buf = [0u8; 30];
    let mut b = MessageBuilder::new(&mut buf, binding(), TransactionId::Rfc5389(TID)).unwrap();
    assert_eq!(
        b.add(&Attribute::Username("too long for ten")),
        Err(EncodeError::BufferTooSmall)
    );
    assert_eq!(
        b.add_message_integrity(&Sha1Key::new(b"k")),
        Err(EncodeError::BufferTooSmall)
    );
    assert_eq!(b.len(), 20);
    b.add(&Attribute::Lifetime(1)).unwrap();
    assert_eq!(b.add_fingerprint(), Err(EncodeError::BufferTooSmall));
    let n = b.finish();
    assert_eq!(n, 28);
    assert!(Message::parse(&buf[..n]).is_ok());
    // A message past the 16-bit length field.
    let mut big = vec![0u8; 140_000];
    let mut b = MessageBuilder::new(&mut big, binding(), TransactionId::Rfc5389(TID)).unwrap();
    let data = vec![0u8; 65_000];
    b.add(&Attribute::Data(&data)).unwrap();
    assert_eq!(
        b.add(&Attribute::Data(&data)),
        Err(EncodeError::MessageTooLong)
    );
    let n = b.finish();
    assert!(Message::parse(&big[..n]).is_ok());
    // DATA over 65535 bytes cannot be an attribute at all.
    let huge = vec![0u8; 65_536];
    let mut b = MessageBuilder::new(&mut big, binding(), TransactionId::Rfc5389(TID)).unwrap();
    assert_eq!(
        b.add(&Attribute::Data(&huge)),
        Err(EncodeError::Attribute(AttrError::TooLong))
    );
}
