//! Peer → client (RFC 8656 §11.3, §12.7): a datagram that arrived on a
//! relayed address goes to the client as ChannelData if a channel is bound
//! to the peer, else as a Data indication — and is dropped silently if the
//! peer has no permission.

use std::net::SocketAddr;
use std::time::Instant;

use rand::RngCore;
use turnpike_codec::channel_data::{self, ChannelData};
use turnpike_codec::{Attribute, Class, MessageBuilder, MessageType, Method, TransactionId};

use super::Turn;
use crate::packet::Transmit;
use crate::relay::RelayProtocol;

pub(crate) fn from_peer(
    turn: &mut Turn,
    now: Instant,
    relay: SocketAddr,
    peer: SocketAddr,
    data: &[u8],
    out: &mut [u8],
) -> Option<Transmit> {
    let allocation = turn
        .allocations
        .get(turn.allocations.id_by_relay(RelayProtocol::Udp, relay)?)?;
    if !allocation.has_permission(peer.ip(), now) {
        return None;
    }
    let five_tuple = allocation.five_tuple;
    let len = match allocation.channel_for_peer(peer, now) {
        Some(channel) => {
            let stream = five_tuple.transport.is_stream();
            out.get_mut(channel_data::HEADER_LEN..channel_data::HEADER_LEN + data.len())?
                .copy_from_slice(data);
            ChannelData::write_header(out, channel, data.len(), stream).ok()?
        }
        None => {
            let mut id = [0u8; 12];
            turn.rng.fill_bytes(&mut id);
            let kind = MessageType::new(Method::DATA, Class::Indication);
            let mut msg = MessageBuilder::new(out, kind, TransactionId::Rfc5389(id)).ok()?;
            msg.add(&Attribute::XorPeerAddress(peer)).ok()?;
            msg.add(&Attribute::Data(data)).ok()?;
            msg.finish()
        }
    };
    Some(Transmit {
        transport: five_tuple.transport,
        source: five_tuple.server,
        destination: five_tuple.client,
        len,
    })
}
