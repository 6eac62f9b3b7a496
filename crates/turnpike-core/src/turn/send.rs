//! Client → peer: Send indications (RFC 8656 §11.2) and ChannelData
//! (§12.6). This is the hot path: no allocation, no logging; anything
//! wrong is dropped silently, as indications and ChannelData are never
//! answered.

use std::net::SocketAddr;
use std::time::Instant;

use turnpike_codec::{Attribute, ChannelData, Message};

use super::Turn;
use crate::allocation::FiveTuple;
use crate::config::TurnConfig;
use crate::packet::{Transmit, Transport};
use crate::relay::RelayProtocol;

/// A datagram for a peer, already copied to `out`.
fn to_peer(out: &mut [u8], relay: SocketAddr, peer: SocketAddr, data: &[u8]) -> Option<Transmit> {
    out.get_mut(..data.len())?.copy_from_slice(data);
    Some(Transmit {
        transport: Transport::Udp,
        source: relay,
        destination: peer,
        len: data.len(),
    })
}

/// A Send indication from the client of `five_tuple`.
pub(crate) fn indication(
    turn: &Turn,
    config: &TurnConfig,
    now: Instant,
    five_tuple: &FiveTuple,
    message: &Message<'_>,
    out: &mut [u8],
) -> Option<Transmit> {
    let allocation = turn
        .allocations
        .get(turn.allocations.id_by_five_tuple(five_tuple)?)?;
    let mut peer = None;
    let mut data = None;
    for attr in message.attributes() {
        match attr.attr_type {
            turnpike_codec::AttrType::XOR_PEER_ADDRESS if peer.is_none() => {
                if let Ok(Attribute::XorPeerAddress(p)) =
                    Attribute::decode(attr.attr_type, attr.value, &message.xor_key())
                {
                    peer = Some(p);
                }
            }
            turnpike_codec::AttrType::DATA if data.is_none() => data = Some(attr.value),
            _ => {}
        }
    }
    let (peer, data) = (peer?, data?);
    // A TCP allocation relays connections, not datagrams (RFC 6062 §5).
    if allocation.protocol != RelayProtocol::Udp {
        return None;
    }
    let relay = allocation.relay_for(peer.ip())?;
    if !allocation.has_permission(peer.ip(), now) || config.peer_policy.check(peer).is_err() {
        return None;
    }
    to_peer(out, relay, peer, data)
}

/// ChannelData from the client of `five_tuple`. The peer passed the policy
/// when the channel was bound, and the policy does not change at run time.
pub(crate) fn channel_data(
    turn: &Turn,
    now: Instant,
    five_tuple: &FiveTuple,
    packet: &[u8],
    out: &mut [u8],
) -> Option<Transmit> {
    let message = ChannelData::parse(packet).ok()?;
    let allocation = turn
        .allocations
        .get(turn.allocations.id_by_five_tuple(five_tuple)?)?;
    let peer = allocation.channel_peer(message.channel, now)?;
    if !allocation.has_permission(peer.ip(), now) {
        return None;
    }
    to_peer(out, allocation.relay_for(peer.ip())?, peer, message.data)
}
