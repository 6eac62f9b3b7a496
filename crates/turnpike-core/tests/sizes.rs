//! Relayed data of every size (RFC 8656 §11, §12): what one UDP datagram,
//! one DTLS record or one STUN message can carry goes through, the first
//! byte more is dropped with a counted reason, never silently. And
//! DONT-FRAGMENT (§14): which datagrams to peers carry the DF bit.
//!
//! The limits, for a client and peer on IPv4 (the harness's addresses):
//! - UDP client: ChannelData 4 + data ≤ 65,507; Data indication
//!   20 + 12 + 4 + data (padded) ≤ 65,507;
//! - DTLS client: the same within one 16,384-byte record;
//! - TCP/TLS client: the peer's datagram (≤ 65,507) always fits ChannelData;
//!   a Data indication's body is at most 65,532 bytes;
//! - to an IPv4 peer: at most 65,507 bytes of data, whatever the client's
//!   transport (ChannelData over TCP can carry 65,535).

mod common;

use std::net::SocketAddr;

use common::*;
use turnpike_codec::{AttrType, Attribute, ChannelData, Class, Method};
use turnpike_core::{DropReason, Transport};

const PEER: &str = "93.184.216.34:5000";
const PEER_V6: &str = "[2606:2800:220:1::1]:5000";
const CHANNEL: u16 = 0x4001;

/// An allocation of the default client over `transport`, with a
/// permission and a channel for `PEER`, and `extra` attributes on its
/// Allocate. Returns the relayed address.
fn allocation(h: &mut Harness, transport: Transport, extra: &[Attribute<'_>]) -> SocketAddr {
    h.transport = transport;
    let creds = h.creds();
    let mut attrs = vec![Attribute::RequestedTransport(
        turnpike_codec::attr::protocol::UDP,
    )];
    attrs.extend_from_slice(extra);
    let a = h.authed(Method::ALLOCATE, &attrs, &creds);
    assert_eq!(a.class(), Class::Success, "allocate: {:?}", a.code());
    let relay = a.relayed()[0];
    let a = h.authed(
        Method::CHANNEL_BIND,
        &[
            Attribute::ChannelNumber(CHANNEL),
            Attribute::XorPeerAddress(addr(PEER)),
        ],
        &creds,
    );
    assert_eq!(a.class(), Class::Success, "channel bind: {:?}", a.code());
    relay
}

/// A permission for `peer` (on the allocation of the default client).
fn permit(h: &mut Harness, peer: &str) {
    let creds = h.creds();
    let a = h.authed(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(addr(peer))],
        &creds,
    );
    assert_eq!(a.class(), Class::Success, "permission: {:?}", a.code());
}

fn drops(h: &Harness, reason: DropReason) -> u64 {
    h.server.stats().drops.get(reason)
}

/// Relayed data dropped for a limit of the way out.
fn relay_limit_drops(h: &Harness) -> u64 {
    let d = h.server.stats().drops;
    d.iter()
        .filter(|(r, _)| r.is_relay_limit())
        .map(|(_, n)| n)
        .sum()
}

/// The peer sends `len` bytes: the client gets them as ChannelData, whole,
/// or nothing and a `TooBigForClient` drop is counted.
fn peer_to_client(h: &mut Harness, relay: SocketAddr, len: usize) -> bool {
    let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
    let before = drops(h, DropReason::TooBigForClient);
    match h.peer_sends(relay, PEER, &data) {
        Some(answer) => {
            let message = ChannelData::parse(&answer.bytes).expect("ChannelData");
            assert_eq!(message.channel, CHANNEL);
            assert!(message.data == data, "{len} bytes relayed unchanged");
            assert_eq!(drops(h, DropReason::TooBigForClient), before);
            true
        }
        None => {
            assert_eq!(drops(h, DropReason::TooBigForClient), before + 1);
            false
        }
    }
}

/// A peer without a channel sends `len` bytes: a Data indication, or a
/// counted drop.
fn peer_indication_to_client(h: &mut Harness, relay: SocketAddr, peer: &str, len: usize) -> bool {
    let data: Vec<u8> = (0..len).map(|i| (i * 3) as u8).collect();
    let before = drops(h, DropReason::TooBigForClient);
    match h.peer_sends(relay, peer, &data) {
        Some(answer) => {
            assert_eq!(
                answer.attr(AttrType::DATA),
                Some(Attribute::Data(&data)),
                "{len} bytes relayed unchanged"
            );
            true
        }
        None => {
            assert_eq!(drops(h, DropReason::TooBigForClient), before + 1);
            false
        }
    }
}

fn channel_data(len: usize, stream: bool) -> Vec<u8> {
    let data = vec![0xA5; len];
    let mut buf = vec![0u8; ChannelData::encoded_len(len, stream)];
    let n = ChannelData {
        channel: CHANNEL,
        data: &data,
    }
    .encode(&mut buf, stream)
    .unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn udp_clients_get_peer_datagrams_up_to_the_largest_udp_payload() {
    let mut h = Harness::new(|_| {});
    let relay = allocation(&mut h, Transport::Udp, &[]);
    for len in [500, 1_200, 1_500, 2_100, 4_000, 9_000, 65_503] {
        assert!(peer_to_client(&mut h, relay, len), "{len} bytes");
    }
    // 4 + 65,504 > 65,507.
    assert!(!peer_to_client(&mut h, relay, 65_504));
    assert!(!peer_to_client(&mut h, relay, 65_507));

    // Without a channel: 20 + 12 + 4 + 65,468 = 65,504; 65,469 pads to
    // 65,472, which makes 65,508.
    let other = "93.184.216.34:5001";
    permit(&mut h, other);
    assert!(peer_indication_to_client(&mut h, relay, other, 65_468));
    assert!(!peer_indication_to_client(&mut h, relay, other, 65_469));
    assert_eq!(relay_limit_drops(&h), 3);
}

#[test]
fn dtls_clients_get_what_fits_one_record() {
    let mut h = Harness::new(|_| {});
    let relay = allocation(&mut h, Transport::Dtls, &[]);
    for len in [500, 1_200, 1_500, 2_100, 4_000, 9_000, 16_380] {
        assert!(peer_to_client(&mut h, relay, len), "{len} bytes");
    }
    assert!(!peer_to_client(&mut h, relay, 16_381));

    let other = "93.184.216.34:5001";
    permit(&mut h, other);
    // 20 + 12 + 4 + 16,348 = 16,384.
    assert!(peer_indication_to_client(&mut h, relay, other, 16_348));
    assert!(!peer_indication_to_client(&mut h, relay, other, 16_349));
    assert_eq!(drops(&h, DropReason::TooBigForClient), 2);
}

#[test]
fn stream_clients_get_every_udp_datagram_within_stun_lengths() {
    for transport in [Transport::Tcp, Transport::Tls] {
        let mut h = Harness::new(|_| {});
        let relay = allocation(&mut h, transport, &[]);
        // The largest datagram an IPv4 peer can send, padded to 65,512.
        for len in [1, 500, 9_000, 65_507] {
            let data = vec![7u8; len];
            let answer = h.peer_sends(relay, PEER, &data).expect("relayed");
            assert_eq!(answer.bytes.len(), (4 + len).next_multiple_of(4));
            assert_eq!(ChannelData::parse(&answer.bytes).unwrap().data, &data[..]);
        }
        // Data indications: the body is 12 + 4 + data (padded) for an IPv4
        // peer, 24 + 4 + data for an IPv6 one, at most 65,532. The IPv6
        // peer needs a permission and an IPv6 relay, which the harness's
        // allocation does not have: the IPv4 case is what is checked here,
        // and IPv6's arithmetic in the core's unit tests.
        let other = "93.184.216.34:5001";
        permit(&mut h, other);
        assert!(peer_indication_to_client(&mut h, relay, other, 65_507));
        assert_eq!(relay_limit_drops(&h), 0, "{transport:?}");
    }
}

#[test]
fn client_data_larger_than_the_peers_udp_limit_is_dropped_and_counted() {
    let mut h = Harness::new(|_| {});
    allocation(&mut h, Transport::Tcp, &[]);
    // ChannelData on a stream can carry up to 65,535 bytes; an IPv4 peer
    // takes 65,507.
    let t = h.send(&channel_data(65_507, true)).expect("relayed");
    assert_eq!(
        (t.transmit.destination(), t.bytes.len()),
        (addr(PEER), 65_507)
    );
    assert!(h.send(&channel_data(65_508, true)).is_none());
    assert!(h.send(&channel_data(65_535, true)).is_none());
    assert_eq!(drops(&h, DropReason::TooBigForPeer), 2);
    assert_eq!(h.server.stats().relayed.to_peer_packets, 1);

    // The same through a Send indication.
    let t = h
        .send_indication(addr(PEER), &vec![1; 65_507])
        .expect("relayed");
    assert_eq!(t.bytes.len(), 65_507);
    assert!(h.send_indication(addr(PEER), &vec![1; 65_508]).is_none());
    assert_eq!(drops(&h, DropReason::TooBigForPeer), 3);

    // An IPv6 peer takes 65,527; the harness's policy lets it through, but
    // the allocation has only an IPv4 relay, so it is not relayed at all:
    // a silent drop (no relay of that family), not a size drop.
    assert!(h.send_indication(addr(PEER_V6), &[1; 10]).is_none());
    assert_eq!(drops(&h, DropReason::TooBigForPeer), 3);
}

#[test]
fn dont_fragment_follows_the_send_indication_and_the_allocation() {
    // RFC 8656 §14: a Send indication with DONT-FRAGMENT goes out with DF;
    // without it, DF would be copied from the client's packet, for which
    // the allocation's own DONT-FRAGMENT stands in.
    let mut h = Harness::new(|_| {});
    allocation(&mut h, Transport::Udp, &[]);
    permit(&mut h, PEER);
    let plain = h.send_indication(addr(PEER), b"x").expect("relayed");
    assert!(!plain.transmit.dont_fragment());
    let df = h
        .send_indication_with(addr(PEER), b"x", &[Attribute::DontFragment])
        .expect("relayed");
    assert!(df.transmit.dont_fragment());
    let channel = h.send(&channel_data(100, false)).expect("relayed");
    assert!(!channel.transmit.dont_fragment());

    let mut h = Harness::new(|_| {});
    allocation(&mut h, Transport::Udp, &[Attribute::DontFragment]);
    permit(&mut h, PEER);
    assert!(
        h.send(&channel_data(100, false))
            .unwrap()
            .transmit
            .dont_fragment()
    );
    assert!(
        h.send_indication(addr(PEER), b"x")
            .unwrap()
            .transmit
            .dont_fragment()
    );
    // Answers to the client never carry it.
    let creds = h.creds();
    let a = h.authed(Method::REFRESH, &[Attribute::Lifetime(600)], &creds);
    assert!(!a.transmit.dont_fragment());
}

#[test]
fn shell_drops_are_counted_with_the_cores() {
    let mut h = Harness::new(|_| {});
    let (from, to) = (addr(CLIENT), addr(PEER));
    h.server.record_drop(DropReason::PathMtu, 2_100, from, to);
    h.server.record_drop(DropReason::QueueFull, 100, from, to);
    h.server.record_drop(DropReason::QueueFull, 100, from, to);
    let d = h.server.stats().drops;
    let counted: Vec<_> = d.iter().map(|(r, n)| (r.as_str(), n)).collect();
    assert_eq!(
        counted,
        [
            ("malformed", 0),
            ("rate_limited", 0),
            ("no_permission", 0),
            ("peer_refused", 0),
            ("too_big_for_client", 0),
            ("too_big_for_peer", 0),
            ("path_mtu", 1),
            ("queue_full", 2),
            ("bandwidth_cap", 0)
        ]
    );
    assert_eq!(d.total(), 3);
}
