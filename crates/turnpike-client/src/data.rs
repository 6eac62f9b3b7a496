//! The data plane: application data to and from peers through an allocation.
//!
//! Two framings carry it (RFC 8656 §11–12):
//!
//! - Send / Data indications: a STUN indication with XOR-PEER-ADDRESS and
//!   DATA. Needs only a permission, costs 36 (IPv4) or 48 (IPv6) bytes of
//!   overhead.
//! - ChannelData: a 4-byte header naming a channel bound with ChannelBind.
//!
//! Everything here writes into caller buffers and parses borrowed ones, so the
//! load generator's per-message path allocates nothing. Indications are not
//! authenticated (RFC 8656 §11.1), so no credentials are involved.

use std::net::SocketAddr;

use turnpike_codec::attr::Attribute;
use turnpike_codec::framing::{PacketKind, classify};
use turnpike_codec::{
    AttrType, ChannelData, Class, EncodeError, Message, MessageBuilder, MessageType, Method,
    TransactionId,
};

/// Bytes before the application data in a ChannelData message.
pub const CHANNEL_DATA_HEADER_LEN: usize = turnpike_codec::channel_data::HEADER_LEN;

/// Bytes a Send indication adds to `data_len` bytes of data for a peer of
/// this family (header, XOR-PEER-ADDRESS, DATA header and padding).
pub fn send_indication_len(peer: SocketAddr, data_len: usize) -> usize {
    let address = if peer.is_ipv4() { 8 } else { 20 };
    turnpike_codec::HEADER_LEN + 4 + address + 4 + data_len.div_ceil(4) * 4
}

/// Writes a ChannelData message carrying `data` (no padding: UDP); returns
/// its length.
pub fn encode_channel_data(
    out: &mut [u8],
    channel: u16,
    data: &[u8],
) -> Result<usize, EncodeError> {
    ChannelData { channel, data }.encode(out, false)
}

/// Writes a Send indication to `peer` whose DATA value, `data_len` bytes, is
/// written in place by `fill` (which may leave bytes the caller put there
/// earlier untouched); returns its length.
pub fn encode_send_indication_with(
    out: &mut [u8],
    transaction_id: [u8; 12],
    peer: SocketAddr,
    data_len: usize,
    fill: impl FnOnce(&mut [u8]),
) -> Result<usize, EncodeError> {
    let mut b = MessageBuilder::new(
        out,
        MessageType::new(Method::SEND, Class::Indication),
        TransactionId::Rfc5389(transaction_id),
    )?;
    b.add(&Attribute::XorPeerAddress(peer))?;
    b.add_with(AttrType::DATA, data_len, fill)?;
    Ok(b.finish())
}

/// Writes a Send indication carrying `data` to `peer`; returns its length.
pub fn encode_send_indication(
    out: &mut [u8],
    transaction_id: [u8; 12],
    peer: SocketAddr,
    data: &[u8],
) -> Result<usize, EncodeError> {
    encode_send_indication_with(out, transaction_id, peer, data.len(), |v| {
        v.copy_from_slice(data)
    })
}

/// A datagram received from the server, classified.
#[derive(Clone, Copy, Debug)]
pub enum Incoming<'a> {
    /// ChannelData: relayed data from the peer bound to `channel`.
    ChannelData {
        /// The channel number.
        channel: u16,
        /// The application data.
        data: &'a [u8],
    },
    /// A Data indication: relayed data from `peer`.
    Data {
        /// XOR-PEER-ADDRESS.
        peer: SocketAddr,
        /// DATA.
        data: &'a [u8],
    },
    /// Any other STUN message: typically a response for a transaction.
    Stun(Message<'a>),
    /// Not STUN nor ChannelData, or malformed (including a Data indication
    /// without XOR-PEER-ADDRESS or DATA).
    Invalid,
}

/// Classifies and parses one datagram from the server (RFC 7983 first-byte
/// demultiplexing).
pub fn parse_incoming(datagram: &[u8]) -> Incoming<'_> {
    match classify(datagram) {
        PacketKind::ChannelData => match ChannelData::parse(datagram) {
            Ok(cd) => Incoming::ChannelData {
                channel: cd.channel,
                data: cd.data,
            },
            Err(_) => Incoming::Invalid,
        },
        PacketKind::Stun => {
            let Ok(msg) = Message::parse(datagram) else {
                return Incoming::Invalid;
            };
            if msg.message_type() != MessageType::new(Method::DATA, Class::Indication) {
                return Incoming::Stun(msg);
            }
            let peer = match msg.get(AttrType::XOR_PEER_ADDRESS) {
                Some(Ok(Attribute::XorPeerAddress(p))) => p,
                _ => return Incoming::Invalid,
            };
            match msg.get(AttrType::DATA) {
                Some(Ok(Attribute::Data(data))) => Incoming::Data { peer, data },
                _ => Incoming::Invalid,
            }
        }
        _ => Incoming::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_data_round_trip() {
        let mut buf = [0u8; 64];
        let n = encode_channel_data(&mut buf, 0x4001, b"hello").unwrap();
        assert_eq!(n, 9);
        match parse_incoming(&buf[..n]) {
            Incoming::ChannelData { channel, data } => {
                assert_eq!(channel, 0x4001);
                assert_eq!(data, b"hello");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn send_indication_is_a_send_indication_and_data_parses() {
        let peer: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        let mut buf = [0u8; 128];
        let n = encode_send_indication(&mut buf, [1; 12], peer, b"abcde").unwrap();
        assert_eq!(n, send_indication_len(peer, 5));
        let msg = Message::parse(&buf[..n]).unwrap();
        assert_eq!(
            msg.message_type(),
            MessageType::new(Method::SEND, Class::Indication)
        );
        assert_eq!(msg.get(AttrType::DATA), Some(Ok(Attribute::Data(b"abcde"))));
        let v6: SocketAddr = "[::1]:9000".parse().unwrap();
        assert_eq!(
            encode_send_indication(&mut buf, [1; 12], v6, b"abcd").unwrap(),
            send_indication_len(v6, 4)
        );

        // A Data indication, as a server would send it.
        let mut b = MessageBuilder::new(
            &mut buf,
            MessageType::new(Method::DATA, Class::Indication),
            TransactionId::Rfc5389([2; 12]),
        )
        .unwrap();
        b.add(&Attribute::XorPeerAddress(peer)).unwrap();
        b.add(&Attribute::Data(b"xyz")).unwrap();
        let n = b.finish();
        match parse_incoming(&buf[..n]) {
            Incoming::Data { peer: p, data } => {
                assert_eq!(p, peer);
                assert_eq!(data, b"xyz");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_and_incomplete_indications_are_invalid() {
        assert!(matches!(parse_incoming(&[]), Incoming::Invalid));
        assert!(matches!(parse_incoming(&[0xFF; 8]), Incoming::Invalid));
        assert!(matches!(
            parse_incoming(&[0x40, 0, 0, 9, 1]),
            Incoming::Invalid
        ));
        let mut buf = [0u8; 64];
        let b = MessageBuilder::new(
            &mut buf,
            MessageType::new(Method::DATA, Class::Indication),
            TransactionId::Rfc5389([2; 12]),
        )
        .unwrap();
        let n = b.finish();
        assert!(matches!(parse_incoming(&buf[..n]), Incoming::Invalid));
        let b = MessageBuilder::new(
            &mut buf,
            MessageType::new(Method::ALLOCATE, Class::Success),
            TransactionId::Rfc5389([2; 12]),
        )
        .unwrap();
        let n = b.finish();
        assert!(matches!(parse_incoming(&buf[..n]), Incoming::Stun(_)));
    }
}
