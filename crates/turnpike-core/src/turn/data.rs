//! Peer → client (RFC 8656 §11.3, §12.7): a datagram that arrived on a
//! relayed address goes to the client as ChannelData if a channel is bound
//! to the peer, else as a Data indication — and is dropped silently if the
//! peer has no permission. A datagram that cannot be framed for the
//! client's transport (one UDP datagram, one DTLS record, a STUN message's
//! 16-bit length) is dropped with [`DropReason::TooBigForClient`]; one
//! over a bandwidth cap ([`crate::bandwidth`]) with
//! [`DropReason::BandwidthCap`].

use std::net::SocketAddr;
use std::time::Instant;

use rand::RngCore;
use turnpike_codec::channel_data::{self, ChannelData};
use turnpike_codec::{
    Attribute, Class, HEADER_LEN, MessageBuilder, MessageType, Method, TransactionId,
};

use super::TurnState;
use super::send::{REFUSED, Relayed};
use crate::bandwidth::{Caps, Direction};
use crate::ids::{PeerSocket, RelayedAddress};
use crate::output::{Destination, Transmit};
use crate::relay::RelayProtocol;
use crate::stats::DropReason;

/// The longest STUN message body (a 16-bit length, in whole words).
const MAX_BODY: usize = 0xFFFC;

pub(crate) fn from_peer(
    turn: &mut TurnState,
    (now, caps): (Instant, Caps),
    relay: RelayedAddress,
    peer: PeerSocket,
    data: &[u8],
    out: &mut [u8],
) -> Relayed {
    let (relay, peer) = (relay.0, peer.0);
    let id = turn
        .allocations
        .id_by_relay(RelayProtocol::Udp, relay)
        .ok_or(REFUSED)?;
    let allocation = turn.allocations.get_mut(id).ok_or(REFUSED)?;
    if !allocation.has_permission(peer.ip(), now) {
        return Err(REFUSED);
    }
    let five_tuple = allocation.five_tuple;
    let limit = five_tuple.transport.max_message_len(five_tuple.client.ip());
    let too_big = (DropReason::TooBigForClient, data.len());
    let len = match allocation.channel_for_peer(peer, now) {
        Some(channel) => {
            let stream = five_tuple.transport.is_stream();
            if ChannelData::encoded_len(data.len(), stream) > limit {
                return Err(too_big);
            }
            out.get_mut(channel_data::HEADER_LEN..channel_data::HEADER_LEN + data.len())
                .ok_or(too_big)?
                .copy_from_slice(data);
            ChannelData::write_header(out, channel, data.len(), stream).map_err(|_| too_big)?
        }
        None => {
            let body = data_indication_body(peer, data.len());
            if body > MAX_BODY || HEADER_LEN + body > limit {
                return Err(too_big);
            }
            let mut id = [0u8; 12];
            turn.secure_rng.fill_bytes(&mut id);
            let kind = MessageType::new(Method::DATA, Class::Indication);
            let mut msg =
                MessageBuilder::new(out, kind, TransactionId::Rfc5389(id)).map_err(|_| too_big)?;
            msg.add(&Attribute::XorPeerAddress(peer))
                .map_err(|_| too_big)?;
            msg.add(&Attribute::Data(data)).map_err(|_| too_big)?;
            msg.finish()
        }
    };
    if !allocation
        .bandwidth
        .admit(Direction::ToClient, now, data.len(), caps)
    {
        return Err((DropReason::BandwidthCap, data.len()));
    }
    allocation.traffic.to_client(data.len());
    Ok(Transmit {
        to: Destination::Client(five_tuple),
        len,
    })
}

/// The body of a Data indication carrying `data_len` bytes from `peer`:
/// XOR-PEER-ADDRESS (4 + 8 or 20 bytes) and DATA (4 + the data, padded to
/// a word).
fn data_indication_body(peer: SocketAddr, data_len: usize) -> usize {
    let address = if peer.is_ipv4() { 8 } else { 20 };
    4 + address + 4 + data_len.next_multiple_of(4)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::packet::{MAX_DTLS_MESSAGE, Transport, max_udp_payload};

    const V4: &str = "192.0.2.1:5000";
    const V6: &str = "[2001:db8::1]:5000";

    /// The largest data a Data indication from `peer` carries to a client
    /// of `transport` at `client`.
    fn largest_indication(transport: Transport, client: IpAddr, peer: &str) -> usize {
        let peer: SocketAddr = peer.parse().unwrap();
        let limit = transport.max_message_len(client);
        (0..=max_udp_payload(peer.ip()))
            .rev()
            .find(|&n| {
                let body = data_indication_body(peer, n);
                body <= MAX_BODY && HEADER_LEN + body <= limit
            })
            .unwrap()
    }

    #[test]
    fn transport_limits() {
        let (v4, v6): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "::1".parse().unwrap());
        assert_eq!(max_udp_payload(v4), 65_507);
        assert_eq!(max_udp_payload(v6), 65_527);
        assert_eq!(Transport::Udp.max_message_len(v6), 65_527);
        assert_eq!(Transport::Dtls.max_message_len(v4), MAX_DTLS_MESSAGE);
        assert_eq!(Transport::Tls.max_message_len(v4), usize::MAX);
        // Data indications: 20 + 4 + 8 or 20 + 4 + data padded to a word.
        assert_eq!(largest_indication(Transport::Udp, v4, V4), 65_468);
        assert_eq!(largest_indication(Transport::Udp, v6, V6), 65_476);
        assert_eq!(largest_indication(Transport::Dtls, v4, V4), 16_348);
        assert_eq!(largest_indication(Transport::Dtls, v6, V6), 16_336);
        // On streams the body's 65,532 bytes bound it: every IPv4 peer
        // datagram fits, an IPv6 peer's largest ones do not.
        assert_eq!(largest_indication(Transport::Tcp, v4, V4), 65_507);
        assert_eq!(largest_indication(Transport::Tcp, v6, V6), 65_504);
    }
}
