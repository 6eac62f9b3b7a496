//! Demultiplexing and stream framing.
//!
//! One port carries STUN, ChannelData and (with DTLS) DTLS records; RFC 7983
//! tells them apart by the first byte. On TCP and TLS, messages arrive as a
//! byte stream and [`next_frame`] cuts it into whole messages (RFC 8656 §12.5:
//! ChannelData is padded to 4 bytes there).

use crate::channel_data;
use crate::header::HEADER_LEN;

/// What a packet is, judged by its first byte (RFC 7983 §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketKind {
    /// 0–3: STUN.
    Stun,
    /// 64–127: TURN ChannelData (RFC 7983 names 64–79; RFC 5766 clients may use up to 127).
    ChannelData,
    /// 20–63: DTLS.
    Dtls,
    /// Anything else: ZRTP, RTP/RTCP, garbage. Dropped by a TURN server.
    Other,
}

/// Classifies a packet by its first byte.
pub fn classify(packet: &[u8]) -> PacketKind {
    match packet.first() {
        Some(0..=3) => PacketKind::Stun,
        Some(20..=63) => PacketKind::Dtls,
        Some(64..=127) => PacketKind::ChannelData,
        _ => PacketKind::Other,
    }
}

/// The largest frame [`next_frame`] can return (or ask for): the larger of a
/// STUN message with a 65532-byte body (65552 bytes) and padded ChannelData
/// with 65535 bytes of data (65540 bytes).
pub const MAX_FRAME_LEN: usize = {
    let stun = HEADER_LEN + 0xFFFC;
    let channel_data = (channel_data::HEADER_LEN + 0xFFFF + 3) & !3;
    if stun > channel_data {
        stun
    } else {
        channel_data
    }
};

/// The result of looking for a message at the start of a stream buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole message: its own length, and the bytes to consume (including
    /// ChannelData padding).
    Complete {
        /// What [`PacketKind`] it is (`Stun` or `ChannelData`).
        kind: PacketKind,
        /// Bytes of the message proper.
        len: usize,
        /// Bytes to drop from the stream, padding included.
        consumed: usize,
    },
    /// More bytes are needed; at least this many in total.
    Incomplete {
        /// Total bytes needed before a frame can be cut.
        needed: usize,
    },
    /// The stream does not start with STUN or ChannelData: the connection
    /// cannot be resynchronised and should be closed.
    Invalid,
}

/// Finds the message at the start of a TCP/TLS stream buffer.
pub fn next_frame(buf: &[u8]) -> Frame {
    if buf.len() < 4 {
        return Frame::Incomplete { needed: 4 };
    }
    let len_field = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    let (kind, len, consumed) = match classify(buf) {
        PacketKind::Stun => {
            if len_field % 4 != 0 {
                return Frame::Invalid;
            }
            (
                PacketKind::Stun,
                HEADER_LEN + len_field,
                HEADER_LEN + len_field,
            )
        }
        PacketKind::ChannelData => {
            let len = channel_data::HEADER_LEN + len_field;
            (PacketKind::ChannelData, len, (len + 3) & !3)
        }
        _ => return Frame::Invalid,
    };
    if buf.len() < consumed {
        Frame::Incomplete { needed: consumed }
    } else {
        Frame::Complete {
            kind,
            len,
            consumed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_ranges() {
        assert_eq!(classify(&[0x00]), PacketKind::Stun);
        assert_eq!(classify(&[0x03]), PacketKind::Stun);
        assert_eq!(classify(&[22]), PacketKind::Dtls);
        assert_eq!(classify(&[0x40]), PacketKind::ChannelData);
        assert_eq!(classify(&[0x7F]), PacketKind::ChannelData);
        assert_eq!(classify(&[0x80]), PacketKind::Other);
        assert_eq!(classify(&[]), PacketKind::Other);
    }

    #[test]
    fn frames_in_a_stream() {
        let mut stream = vec![0x00, 0x01, 0x00, 0x00];
        stream.extend_from_slice(&[0u8; 16]);
        stream.extend_from_slice(&[0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0]);
        assert_eq!(
            next_frame(&stream),
            Frame::Complete {
                kind: PacketKind::Stun,
                len: 20,
                consumed: 20
            }
        );
        assert_eq!(
            next_frame(&stream[20..]),
            Frame::Complete {
                kind: PacketKind::ChannelData,
                len: 9,
                consumed: 12
            }
        );
        assert_eq!(
            next_frame(&stream[20..30]),
            Frame::Incomplete { needed: 12 }
        );
        assert_eq!(next_frame(&stream[..3]), Frame::Incomplete { needed: 4 });
        assert_eq!(next_frame(&[0x00, 0x01, 0x00, 0x03]), Frame::Invalid);
        assert_eq!(next_frame(&[0xFF, 0x01, 0x00, 0x00]), Frame::Invalid);
    }
}
