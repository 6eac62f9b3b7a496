//! Property tests: build → parse round trips for STUN messages and
//! ChannelData, stream framing under arbitrary chunking, and "nothing panics"
//! over arbitrary and mutated input.

mod common;

use common::{
    MessageSpec, OwnedAttr, body_attr, encode, message_spec, message_type, transaction_id,
    with_attrs,
};
use proptest::prelude::*;
use turnpike_codec::channel_data::{self, ChannelData};
use turnpike_codec::framing::{Frame, PacketKind, next_frame};
use turnpike_codec::{
    AttrType, Attribute, EncodeError, IntegrityError, Message, MessageBuilder, MessageType, Method,
    Sha1Key, Sha256Key, TransactionId,
};

fn config(cases: u32) -> ProptestConfig {
    // No regression files: a failing case is printed, and belongs in a named test.
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Every public read of a parsed message; must not panic whatever the bytes.
fn exercise(buf: &[u8]) {
    if let Ok(msg) = Message::parse(buf) {
        let _ = msg.message_type();
        let _ = msg.transaction_id();
        let _ = msg.is_rfc3489();
        for a in msg.decoded() {
            let _ = a.map(|a| (a.attr_type(), a.value_len(), a.check()));
        }
        for raw in msg.attributes() {
            let _ = msg.get(raw.attr_type);
        }
        let _ = msg.unknown_comprehension_required().count();
        let _ = msg.verify_integrity(&Sha1Key::new(b"key"));
        let _ = msg.verify_integrity_sha256(&Sha256Key::new(b"key"));
        let _ = msg.fingerprint_matches();
        // Whatever decodes must re-encode (decode and check agree).
        let decoded: Vec<Attribute<'_>> = msg.decoded().filter_map(Result::ok).collect();
        let mut out = vec![0u8; 70_000];
        let mut b =
            MessageBuilder::new(&mut out, msg.message_type(), msg.transaction_id()).unwrap();
        for a in &decoded {
            b.add(a)
                .unwrap_or_else(|e| panic!("re-encoding decoded {a:?}: {e}"));
        }
        let n = b.finish();
        let again = Message::parse(&out[..n]).expect("re-encoded message parses");
        let redecoded: Vec<Attribute<'_>> = again
            .decoded()
            .map(|a| a.expect("re-encoded attribute decodes"))
            .collect();
        // Ignored attributes were not decoded, so the structure is the same.
        assert_eq!(redecoded, decoded);
    }
    let _ = ChannelData::parse(buf);
    let _ = next_frame(buf);
    let _ = turnpike_codec::framing::classify(buf);
    let _ = turnpike_codec::header::Header::peek(buf);
}

/// Mutations of a valid message that reach deep parser paths random bytes rarely do.
#[derive(Clone, Debug)]
enum Mutation {
    Set(usize, u8),
    Truncate(usize),
    /// Rewrites the header length to match the buffer (after other mutations).
    FixLength,
    /// Sets a 16-bit field (an attribute type or length, usually).
    SetU16(usize, u16),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        2 => Just(Mutation::FixLength),
        3 => (any::<usize>(), prop_oneof![
            Just(0x0008u16), Just(0x001C), Just(0x8028), Just(0x0000), Just(0x0004), Just(0x0014),
            Just(0x0010), Just(0x0020), any::<u16>()
        ]).prop_map(|(i, v)| Mutation::SetU16(i, v)),
    ]
}

fn apply(buf: &mut Vec<u8>, m: &Mutation) {
    match *m {
        Mutation::Set(i, b) if !buf.is_empty() => {
            let i = i % buf.len();
            buf[i] = b;
        }
        Mutation::Truncate(n) => buf.truncate(n % (buf.len() + 1)),
        Mutation::FixLength if buf.len() >= 20 => {
            let len = ((buf.len() - 20) & !3) as u16;
            buf.truncate(20 + usize::from(len));
            buf[2..4].copy_from_slice(&len.to_be_bytes());
        }
        // Aligned to 2 so attribute type and length fields get hit.
        Mutation::SetU16(i, v) if buf.len() >= 2 => {
            let i = (i % (buf.len() - 1)) & !1;
            buf[i..i + 2].copy_from_slice(&v.to_be_bytes());
        }
        _ => {}
    }
}

/// Builds `spec`'s body attributes, then the real integrity attributes and FINGERPRINT.
fn encode_signed(spec: &MessageSpec, key1: &Sha1Key, key256: Option<&Sha256Key>) -> Vec<u8> {
    let mut buf = vec![0u8; 70_000];
    let mut b = MessageBuilder::new(&mut buf, spec.message_type, spec.transaction_id).unwrap();
    with_attrs(&spec.attrs, |attrs| {
        for a in attrs.iter().filter(|a| {
            !matches!(
                a,
                Attribute::MessageIntegrity(_)
                    | Attribute::MessageIntegritySha256(_)
                    | Attribute::Fingerprint(_)
            )
        }) {
            b.add(a).unwrap();
        }
    });
    b.add_message_integrity(key1).unwrap();
    if let Some(k) = key256 {
        b.add_message_integrity_sha256(k).unwrap();
    }
    b.add_fingerprint().unwrap();
    let n = b.finish();
    buf.truncate(n);
    buf
}

/// ChannelData frames and STUN messages, as (kind, message bytes, stream bytes).
fn stream_item() -> impl Strategy<Value = (PacketKind, Vec<u8>, Vec<u8>)> {
    prop_oneof![
        message_spec(6).prop_map(|mut spec| {
            // RFC 7983 demultiplexing knows STUN by a first byte of 0..=3,
            // which leaves room for methods below 0x100 only.
            let method = Method::new(spec.message_type.method.value() & 0xFF).unwrap();
            spec.message_type = MessageType::new(method, spec.message_type.class);
            let m = encode(&spec);
            (PacketKind::Stun, m.clone(), m)
        }),
        (
            channel_data::MIN_CHANNEL..=channel_data::MAX_CHANNEL,
            common::bytes(200)
        )
            .prop_map(|(channel, data)| {
                let cd = ChannelData {
                    channel,
                    data: &data,
                };
                let mut unpadded = vec![0u8; data.len() + 4];
                assert_eq!(cd.encode(&mut unpadded, false), Ok(data.len() + 4));
                let mut padded = vec![0xAA; data.len() + 8];
                let n = cd.encode(&mut padded, true).unwrap();
                padded.truncate(n);
                (PacketKind::ChannelData, unpadded, padded)
            }),
    ]
}

proptest! {
    #![proptest_config(config(512))]

    /// build → parse gives back the type, the ID and the attributes in order.
    #[test]
    fn message_round_trip(spec in message_spec(24)) {
        let bytes = encode(&spec);
        let msg = Message::parse(&bytes).unwrap();
        prop_assert_eq!(msg.message_type(), spec.message_type);
        prop_assert_eq!(msg.transaction_id(), spec.transaction_id);
        prop_assert_eq!(msg.is_rfc3489(), spec.transaction_id.is_rfc3489());
        prop_assert_eq!(msg.as_bytes(), &bytes[..]);
        let decoded: Vec<Attribute<'_>> = msg.decoded().collect::<Result<_, _>>().unwrap();
        with_attrs(&spec.attrs, |attrs| assert_eq!(&decoded, attrs));
        // Type-wise lookup finds the first of each type.
        with_attrs(&spec.attrs, |attrs| {
            for a in attrs {
                let first = attrs.iter().find(|b| b.attr_type() == a.attr_type()).unwrap();
                assert_eq!(msg.get(a.attr_type()), Some(Ok(*first)));
            }
        });
        prop_assert_eq!(msg.unknown_comprehension_required().count(), spec.attrs.iter().filter(|a| match a {
            OwnedAttr::Unknown(t, _) => *t < 0x8000,
            _ => false,
        }).count());
        // Encoding is deterministic and canonical: re-encoding the decoded
        // attributes gives the same bytes.
        let mut again = vec![0u8; bytes.len()];
        let mut b = MessageBuilder::new(&mut again, msg.message_type(), msg.transaction_id()).unwrap();
        for a in &decoded {
            b.add(a).unwrap();
        }
        prop_assert_eq!(b.finish(), bytes.len());
        prop_assert_eq!(again, bytes);
    }

    /// With real integrity attributes and FINGERPRINT the message verifies,
    /// and not with another key; any one changed byte is caught.
    #[test]
    fn integrity_and_fingerprint_verify(
        spec in message_spec(12),
        password in prop::collection::vec(any::<u8>(), 0..80),
        with_sha256 in any::<bool>(),
        flip in (any::<usize>(), 1u8..=255),
    ) {
        let k1 = Sha1Key::new(&password);
        let k256 = Sha256Key::new(&password);
        let bytes = encode_signed(&spec, &k1, with_sha256.then_some(&k256));
        let msg = Message::parse(&bytes).unwrap();
        prop_assert!(msg.has_integrity());
        prop_assert_eq!(msg.has_integrity_sha256(), with_sha256);
        prop_assert_eq!(msg.verify_integrity(&k1), Ok(()));
        if with_sha256 {
            prop_assert_eq!(msg.verify_integrity_sha256(&k256), Ok(()));
        } else {
            prop_assert_eq!(msg.verify_integrity_sha256(&k256), Err(IntegrityError::Missing));
        }
        prop_assert_eq!(msg.fingerprint_matches(), Some(true));

        let mut other = password.clone();
        other.push(0x5A);
        prop_assert_eq!(msg.verify_integrity(&Sha1Key::new(&other)), Err(IntegrityError::Mismatch));
        if with_sha256 {
            prop_assert_eq!(msg.verify_integrity_sha256(&Sha256Key::new(&other)), Err(IntegrityError::Mismatch));
        }

        // CRC-32 catches every single-byte change.
        let mut corrupted = bytes.clone();
        let i = flip.0 % corrupted.len();
        corrupted[i] ^= flip.1;
        if let Ok(m) = Message::parse(&corrupted) {
            prop_assert_ne!(m.fingerprint_matches(), Some(true), "byte {} changed", i);
        }
    }

    #[test]
    fn channel_data_round_trip(
        channel in channel_data::MIN_CHANNEL..=channel_data::MAX_CHANNEL,
        data in prop_oneof![4 => common::bytes(300), 1 => common::bytes(70_000)],
        stream in any::<bool>(),
    ) {
        let cd = ChannelData { channel, data: &data };
        let mut out = vec![0xEE; data.len() + 8];
        let res = cd.encode(&mut out, stream);
        if data.len() > usize::from(u16::MAX) {
            prop_assert_eq!(res, Err(EncodeError::MessageTooLong));
            return Ok(());
        }
        let n = res.unwrap();
        prop_assert_eq!(n, ChannelData::encoded_len(data.len(), stream));
        if stream {
            prop_assert_eq!(n % 4, 0);
            prop_assert!(out[4 + data.len()..n].iter().all(|&b| b == 0));
        } else {
            prop_assert_eq!(n, 4 + data.len());
        }
        prop_assert_eq!(ChannelData::parse(&out[..n]), Ok(cd));
        prop_assert_eq!(turnpike_codec::framing::classify(&out[..n]), PacketKind::ChannelData);
        // Stream framing always cuts at the padded length.
        let padded = (4 + data.len() + 3) & !3;
        prop_assert_eq!(
            next_frame(&out[..padded]),
            Frame::Complete { kind: PacketKind::ChannelData, len: 4 + data.len(), consumed: padded }
        );
        prop_assert_eq!(next_frame(&out[..padded - 1]), Frame::Incomplete { needed: padded });
    }

    /// A stream of STUN messages and padded ChannelData, fed in arbitrary
    /// chunks, is cut back into the same messages.
    #[test]
    fn framing_cuts_a_chunked_stream(
        items in prop::collection::vec(stream_item(), 0..12),
        chunks in prop::collection::vec(1usize..600, 1..40),
    ) {
        let stream: Vec<u8> = items.iter().flat_map(|(_, _, s)| s.iter().copied()).collect();
        let mut fed = 0;
        let mut pending: Vec<u8> = Vec::new();
        let mut got: Vec<(PacketKind, Vec<u8>)> = Vec::new();
        let mut chunk_sizes = chunks.iter().cycle();
        while fed < stream.len() {
            let n = (*chunk_sizes.next().unwrap()).min(stream.len() - fed);
            pending.extend_from_slice(&stream[fed..fed + n]);
            fed += n;
            loop {
                match next_frame(&pending) {
                    Frame::Complete { kind, len, consumed } => {
                        prop_assert!(len <= consumed && consumed <= pending.len());
                        prop_assert!(consumed <= turnpike_codec::framing::MAX_FRAME_LEN);
                        got.push((kind, pending[..len].to_vec()));
                        pending.drain(..consumed);
                    }
                    Frame::Incomplete { needed } => {
                        prop_assert!(needed > pending.len());
                        break;
                    }
                    Frame::Invalid => prop_assert!(false, "valid stream judged invalid"),
                }
            }
        }
        prop_assert!(pending.is_empty());
        let want: Vec<(PacketKind, Vec<u8>)> = items.into_iter().map(|(k, m, _)| (k, m)).collect();
        prop_assert_eq!(got.len(), want.len());
        for ((gk, gm), (wk, wm)) in got.iter().zip(&want) {
            prop_assert_eq!(gk, wk);
            prop_assert_eq!(gm, wm);
            match gk {
                PacketKind::Stun => { Message::parse(gm).unwrap(); }
                _ => { ChannelData::parse(gm).unwrap(); }
            }
        }
    }
}

proptest! {
    #![proptest_config(config(4096))]

    #[test]
    fn parse_never_panics_on_arbitrary_bytes(buf in prop::collection::vec(any::<u8>(), 0..300)) {
        exercise(&buf);
    }

    /// Arbitrary bytes behind a plausible header (right length, cookie or not).
    #[test]
    fn parse_never_panics_behind_a_valid_header(
        message_type in message_type(),
        transaction_id in transaction_id(),
        body in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut buf = vec![0u8; 20];
        buf[0..2].copy_from_slice(&message_type.to_u16().to_be_bytes());
        let len = (body.len() & !3) as u16;
        buf[2..4].copy_from_slice(&len.to_be_bytes());
        buf[4..20].copy_from_slice(&transaction_id.header_tail());
        buf.extend_from_slice(&body[..usize::from(len)]);
        exercise(&buf);
    }

    /// Valid messages (with real integrity and FINGERPRINT) with a few mutations.
    #[test]
    fn parse_never_panics_on_mutated_messages(
        spec in message_spec(8),
        signed in any::<bool>(),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let mut buf = if signed {
            encode_signed(&spec, &Sha1Key::new(b"key"), Some(&Sha256Key::new(b"key")))
        } else {
            encode(&spec)
        };
        for m in &mutations {
            apply(&mut buf, m);
        }
        exercise(&buf);
    }

    #[test]
    fn attribute_decode_never_panics(
        t in prop_oneof![any::<u16>(), 0u16..0x30, 0x8000u16..0x8030],
        value in prop::collection::vec(any::<u8>(), 0..64),
        key in any::<[u8; 16]>(),
    ) {
        if let Ok(a) = Attribute::decode(AttrType(t), &value, &key) {
            // What decodes is valid to encode, and decoding what it encodes to
            // gives it back (reserved bits and padding are normalised away).
            prop_assert_eq!(a.check(), Ok(()));
            prop_assert!(a.value_len() <= value.len());
            let mut out = vec![0u8; 20 + 4 + 64 + 4];
            let mut b = MessageBuilder::new(&mut out, MessageType::from_u16(1).unwrap(), TransactionId::Rfc3489(key)).unwrap();
            b.add(&a).unwrap();
            let n = b.finish();
            let msg = Message::parse(&out[..n]).unwrap();
            let again = msg.decoded().next().unwrap().unwrap();
            prop_assert_eq!(again, a);
        }
    }

    #[test]
    fn next_frame_never_panics(buf in prop::collection::vec(any::<u8>(), 0..64)) {
        match next_frame(&buf) {
            Frame::Complete { len, consumed, .. } => prop_assert!(len <= consumed && consumed <= buf.len()),
            Frame::Incomplete { needed } => prop_assert!(needed > buf.len()),
            Frame::Invalid => {}
        }
    }
}

/// The strategies cover every typed variant and [`Attribute::Unknown`].
#[test]
fn every_variant_is_generated() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = body_attr();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20_000 {
        let owned = strategy.new_tree(&mut runner).unwrap().current();
        with_attrs(std::slice::from_ref(&owned), |a| {
            seen.insert(a[0].attr_type().0)
        });
    }
    let trailer = common::trailer_attr();
    for _ in 0..100 {
        let owned = trailer.new_tree(&mut runner).unwrap().current();
        with_attrs(std::slice::from_ref(&owned), |a| {
            seen.insert(a[0].attr_type().0)
        });
    }
    // Every known type has a variant, plus Unknown.
    let known: Vec<u16> = (0..=u16::MAX).filter(|t| AttrType(*t).is_known()).collect();
    for t in &known {
        assert!(seen.contains(t), "type {t:#06x} never generated");
    }
    assert!(
        seen.iter().any(|t| !AttrType(*t).is_known()),
        "Unknown never generated"
    );
}
