//! Client → peer: Send indications (RFC 8656 §11.2) and ChannelData
//! (§12.6). This is the hot path: no allocation, no logging; anything
//! wrong is dropped, as indications and ChannelData are never answered.
//! Every drop carries a [`DropReason`], which the server counts: what
//! breaks the protocol's rules (no allocation, no permission, a malformed
//! message, a peer the policy refuses) silently, data too large for one UDP
//! datagram to the peer also with a debug log line.
//!
//! DONT-FRAGMENT (§14, "IPv4 Fragmentation"): a Send indication carrying it
//! goes out with the DF bit set. Otherwise the DF bit should be copied from
//! the client's packet, which a socket cannot see; the allocation's own
//! DONT-FRAGMENT stands in for it (a client that asked for it sends with DF
//! itself), so data of such an allocation always goes out with DF.
//!
//! Data within every check is last held against the bandwidth caps
//! ([`crate::bandwidth`]), and dropped if over.

use std::net::SocketAddr;
use std::time::Instant;

use turnpike_codec::{Attribute, ChannelData, Message};

use super::TurnState;
use crate::allocation::Allocation;
use crate::bandwidth::{Caps, Direction};
use crate::ids::{PeerSocket, RelayedAddress};
use crate::output::{Destination, Transmit};
use crate::packet::{FiveTuple, max_udp_payload};
use crate::relay::RelayProtocol;
use crate::stats::DropReason;

/// A relayed datagram (written to `out`), or why there is none and how
/// long the data was.
pub(crate) type Relayed = Result<Transmit, (DropReason, usize)>;

/// The protocol's own drops: no allocation, no permission, no channel, a
/// malformed message.
pub(crate) const REFUSED: (DropReason, usize) = (DropReason::NoPermission, 0);

/// A datagram for a peer, copied to `out`. The shell gives an `out` that
/// holds any UDP payload; one that does not is treated as the peer's limit.
fn to_peer(
    out: &mut [u8],
    relay: SocketAddr,
    peer: SocketAddr,
    data: &[u8],
    dont_fragment: bool,
) -> Relayed {
    let too_big = (DropReason::TooBigForPeer, data.len());
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
    turn: &mut TurnState,
    (now, caps): (Instant, Caps),
    five_tuple: &FiveTuple,
    message: &Message<'_>,
    out: &mut [u8],
) -> Relayed {
    let id = turn
        .allocations
        .id_by_five_tuple(five_tuple)
        .ok_or(REFUSED)?;
    let allocation = turn.allocations.get(id).ok_or(REFUSED)?;
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
    let (peer, data) = (peer.ok_or(REFUSED)?, data.ok_or(REFUSED)?);
    // A TCP allocation relays connections, not datagrams (RFC 6062 §5).
    if allocation.protocol != RelayProtocol::Udp {
        return Err(REFUSED);
    }
    let relay = allocation.relay_for(peer.ip()).ok_or(REFUSED)?;
    if !allocation.has_permission(peer.ip(), now) {
        return Err(REFUSED);
    }
    if turn.peer_policy.check(peer).is_err() {
        return Err((DropReason::PeerRefused, data.len()));
    }
    let transmit = to_peer(out, relay, peer, data, dont_fragment)?;
    let allocation = turn.allocations.get_mut(id).ok_or(REFUSED)?;
    relay_to_peer(allocation, now, caps, transmit)
}

/// ChannelData from the client of `five_tuple`. The peer passed the policy
/// when the channel was bound, and the policy does not change at run time.
pub(crate) fn channel_data(
    turn: &mut TurnState,
    (now, caps): (Instant, Caps),
    five_tuple: &FiveTuple,
    packet: &[u8],
    out: &mut [u8],
) -> Relayed {
    let message = ChannelData::parse(packet).map_err(|_| (DropReason::Malformed, 0))?;
    let id = turn
        .allocations
        .id_by_five_tuple(five_tuple)
        .ok_or(REFUSED)?;
    let allocation = turn.allocations.get_mut(id).ok_or(REFUSED)?;
    let peer = allocation
        .channel_peer(message.channel, now)
        .ok_or(REFUSED)?;
    if !allocation.has_permission(peer.ip(), now) {
        return Err(REFUSED);
    }
    let relay = allocation.relay_for(peer.ip()).ok_or(REFUSED)?;
    let transmit = to_peer(out, relay, peer, message.data, allocation.dont_fragment)?;
    relay_to_peer(allocation, now, caps, transmit)
}

/// Counts a datagram to a peer that is within the bandwidth caps, and
/// drops it if not.
fn relay_to_peer(
    allocation: &mut Allocation,
    now: Instant,
    caps: Caps,
    transmit: Transmit,
) -> Relayed {
    if !allocation
        .bandwidth
        .admit(Direction::ToPeer, now, transmit.len, caps)
    {
        return Err((DropReason::BandwidthCap, transmit.len));
    }
    allocation.traffic.to_peer(transmit.len);
    Ok(transmit)
}
