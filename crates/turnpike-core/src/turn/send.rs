//! Client → peer: Send indications (RFC 8656 §11.2) and ChannelData
//! (§12.6). This is the hot path: no allocation, no logging; anything
//! wrong is dropped, as indications and ChannelData are never answered.
//! What breaks the protocol's rules (no allocation, no permission, a
//! malformed message) is dropped silently; data too large for one UDP
//! datagram to the peer is dropped with a [`DropReason`], which the server
//! counts and logs.
//!
//! DONT-FRAGMENT (§14, "IPv4 Fragmentation"): a Send indication carrying it
//! goes out with the DF bit set. Otherwise the DF bit should be copied from
//! the client's packet, which a socket cannot see; the allocation's own
//! DONT-FRAGMENT stands in for it (a client that asked for it sends with DF
//! itself), so data of such an allocation always goes out with DF.

use std::net::SocketAddr;
use std::time::Instant;

use turnpike_codec::{Attribute, ChannelData, Message};

use super::TurnState;
use crate::ids::{PeerSocket, RelayedAddress};
use crate::output::{Destination, Transmit};
use crate::packet::{FiveTuple, max_udp_payload};
use crate::relay::RelayProtocol;
use crate::stats::DropReason;

/// A relayed datagram (written to `out`), or why there is none: `None` for
/// the protocol's silent drops, a reason and the data's length for the
/// counted ones.
pub(crate) type Relayed = Result<Transmit, Option<(DropReason, usize)>>;

/// A datagram for a peer, copied to `out`. The shell gives an `out` that
/// holds any UDP payload; one that does not is treated as the peer's limit.
fn to_peer(
    out: &mut [u8],
    relay: SocketAddr,
    peer: SocketAddr,
    data: &[u8],
    dont_fragment: bool,
) -> Relayed {
    let too_big = Some((DropReason::TooBigForPeer, data.len()));
    if data.len() > max_udp_payload(peer.ip()) {
        return Err(too_big);
    }
    out.get_mut(..data.len())
        .ok_or(too_big)?
        .copy_from_slice(data);
    Ok(Transmit {
        to: Destination::Peer {
            relay: RelayedAddress(relay),
            peer: PeerSocket(peer),
            dont_fragment,
        },
        len: data.len(),
    })
}

/// A Send indication from the client of `five_tuple`.
pub(crate) fn indication(
    turn: &TurnState,
    now: Instant,
    five_tuple: &FiveTuple,
    message: &Message<'_>,
    out: &mut [u8],
) -> Relayed {
    let allocation = turn
        .allocations
        .get(turn.allocations.id_by_five_tuple(five_tuple).ok_or(None)?)
        .ok_or(None)?;
    let mut peer = None;
    let mut data = None;
    let mut dont_fragment = allocation.dont_fragment;
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
            turnpike_codec::AttrType::DONT_FRAGMENT => dont_fragment = true,
            _ => {}
        }
    }
    let (peer, data) = (peer.ok_or(None)?, data.ok_or(None)?);
    // A TCP allocation relays connections, not datagrams (RFC 6062 §5).
    if allocation.protocol != RelayProtocol::Udp {
        return Err(None);
    }
    let relay = allocation.relay_for(peer.ip()).ok_or(None)?;
    if !allocation.has_permission(peer.ip(), now) || turn.peer_policy.check(peer).is_err() {
        return Err(None);
    }
    to_peer(out, relay, peer, data, dont_fragment)
}

/// ChannelData from the client of `five_tuple`. The peer passed the policy
/// when the channel was bound, and the policy does not change at run time.
pub(crate) fn channel_data(
    turn: &TurnState,
    now: Instant,
    five_tuple: &FiveTuple,
    packet: &[u8],
    out: &mut [u8],
) -> Relayed {
    let message = ChannelData::parse(packet).map_err(|_| None)?;
    let allocation = turn
        .allocations
        .get(turn.allocations.id_by_five_tuple(five_tuple).ok_or(None)?)
        .ok_or(None)?;
    let peer = allocation.channel_peer(message.channel, now).ok_or(None)?;
    if !allocation.has_permission(peer.ip(), now) {
        return Err(None);
    }
    let relay = allocation.relay_for(peer.ip()).ok_or(None)?;
    to_peer(out, relay, peer, message.data, allocation.dont_fragment)
}
