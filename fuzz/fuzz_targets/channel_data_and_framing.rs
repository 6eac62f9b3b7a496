//! ChannelData parsing and TCP/TLS stream framing.
//!
//! The input is parsed as one ChannelData datagram, then cut into frames the
//! way a stream connection would, checking every frame and every "need
//! more" answer against the bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use turnpike_codec::channel_data::ChannelData;
use turnpike_codec::framing::{self, Frame, MAX_FRAME_LEN, PacketKind};
use turnpike_codec::{DecodeError, Message};

fuzz_target!(|data: &[u8]| {
    // One datagram.
    if let Ok(cd) = ChannelData::parse(data) {
        assert!(turnpike_codec::channel_data::is_channel_number(cd.channel));
        for stream in [false, true] {
            let mut out = vec![0u8; ChannelData::encoded_len(cd.data.len(), stream)];
            let n = cd.encode(&mut out, stream).expect("fits");
            assert_eq!(n, out.len());
            assert_eq!(ChannelData::parse(&out), Ok(cd));
            assert_eq!(&out[..4 + cd.data.len()], &data[..4 + cd.data.len()]);
        }
    }

    // A stream.
    let mut rest = data;
    loop {
        match framing::next_frame(rest) {
            Frame::Complete {
                kind,
                len,
                consumed,
            } => {
                assert!(len <= consumed && consumed <= rest.len() && consumed <= MAX_FRAME_LEN);
                let frame = &rest[..len];
                assert_eq!(framing::classify(frame), kind);
                match kind {
                    PacketKind::Stun => {
                        assert_eq!(len, consumed);
                        // The frame's header is right by construction.
                        if let Err(e) = Message::parse(frame) {
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
                    PacketKind::ChannelData => {
                        assert_eq!(consumed, (len + 3) & !3);
                        let cd = ChannelData::parse(frame).expect("a framed ChannelData parses");
                        assert_eq!(4 + cd.data.len(), len);
                    }
                    other => panic!("frame of kind {other:?}"),
                }
                // Any shorter prefix asks for exactly this frame.
                if consumed > 4 {
                    assert_eq!(
                        framing::next_frame(&rest[..consumed - 1]),
                        Frame::Incomplete { needed: consumed }
                    );
                }
                rest = &rest[consumed..];
            }
            Frame::Incomplete { needed } => {
                assert!(needed > rest.len() && needed <= MAX_FRAME_LEN);
                break;
            }
            Frame::Invalid => {
                assert!(!matches!(framing::classify(rest), PacketKind::ChannelData));
                break;
            }
        }
    }
});
