//! TCP allocations (RFC 6062) through the sans-IO `Server` with a simulated
//! clock: Allocate rules, Connect and its answers (success, 446, 447, 403
//! for every disguised internal address), peer-initiated connections and
//! ConnectionAttempt, ConnectionBind and its rules, the 30-second timers,
//! limits, and what closes what.

mod common;

use std::net::SocketAddr;

use turnpike_codec::attr::protocol;
use turnpike_codec::{AddressFamily, AttrType, Attribute, Class, Method};
use turnpike_core::{ConnectionId, Event, FiveTuple, RelayProtocol, Transport};

use common::*;

/// The client's second connection, for ConnectionBind.
const DATA_CLIENT: &str = "198.51.100.20:40002";

/// A harness whose client talks TCP.
fn tcp_harness(tweak: impl FnOnce(&mut turnpike_core::TurnConfig)) -> Harness {
    let mut h = Harness::new(tweak);
    h.transport = Transport::Tcp;
    h
}

fn allocate_tcp(h: &mut Harness, creds: &Creds, extra: &[Attribute<'_>]) -> Vec<SocketAddr> {
    let mut attrs = vec![Attribute::RequestedTransport(protocol::TCP)];
    attrs.extend_from_slice(extra);
    let a = h.authed(Method::ALLOCATE, &attrs, creds);
    assert_eq!(a.class(), Class::Success, "TCP allocate: {:?}", a.code());
    a.relayed()
}

/// Sends a Connect: `None` when it was accepted (the answer is deferred).
fn connect(h: &mut Harness, creds: &Creds, peer: SocketAddr) -> Option<Answer> {
    let tid = h.tid();
    let req = h.request(
        Method::CONNECT,
        tid,
        &[Attribute::XorPeerAddress(peer)],
        Some(creds),
    );
    h.send(&req)
}

fn events(h: &mut Harness) -> Vec<Event> {
    std::iter::from_fn(|| h.poll_event()).collect()
}

/// The messages the core owes clients outside packet answers.
fn owed(h: &mut Harness) -> Vec<Answer> {
    h.owed()
}

fn connection_id(answer: &Answer) -> ConnectionId {
    match answer.attr(AttrType::CONNECTION_ID) {
        Some(Attribute::ConnectionId(id)) => ConnectionId(id),
        other => panic!("no CONNECTION-ID: {other:?}"),
    }
}

/// Connect accepted, the shell asked to open it from the relay, the shell
/// reports `established`: returns the event's identifier and the owed answer.
fn connect_and_finish(
    h: &mut Harness,
    creds: &Creds,
    relay: SocketAddr,
    peer: SocketAddr,
    established: bool,
) -> (ConnectionId, Answer) {
    assert!(connect(h, creds, peer).is_none(), "answer deferred");
    let id = match events(h).as_slice() {
        [
            Event::OpenConnection {
                id,
                relay: from,
                peer: to,
            },
        ] => {
            assert_eq!((from.0, to.0), (relay, peer));
            *id
        }
        other => panic!("expected one OpenConnection: {other:?}"),
    };
    h.server.connect_finished(h.now, id, established);
    let mut answers = owed(h);
    assert_eq!(answers.len(), 1, "one Connect answer");
    (id, answers.remove(0))
}

/// A ConnectionBind from the client's data connection.
fn connection_bind(h: &mut Harness, from: &str, id: ConnectionId) -> Answer {
    let creds = h.creds_for(from, USER, PASS);
    h.authed_from(
        from,
        Method::CONNECTION_BIND,
        &[Attribute::ConnectionId(id.0)],
        &creds,
    )
}

fn control() -> FiveTuple {
    FiveTuple {
        transport: Transport::Tcp,
        client: addr(CLIENT),
        server: addr(SERVER),
    }
}

#[test]
fn tcp_allocations_need_a_stream_and_refuse_datagram_options() {
    let mut h = Harness::new(|_| {});
    let creds = h.creds();
    let a = h.authed(
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(protocol::TCP)],
        &creds,
    );
    assert_eq!(
        a.code(),
        Some(400),
        "TCP relay asked over UDP (RFC 6062 §5.1)"
    );
    let a = h.authed(
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(132)],
        &creds,
    );
    assert_eq!(a.code(), Some(442), "SCTP is relayed by nobody");

    let mut h = tcp_harness(|_| {});
    let creds = h.creds();
    let token = [1u8; 8];
    for option in [
        Attribute::DontFragment,
        Attribute::EvenPort(false),
        Attribute::ReservationToken(&token),
    ] {
        let a = h.authed(
            Method::ALLOCATE,
            &[Attribute::RequestedTransport(protocol::TCP), option],
            &creds,
        );
        assert_eq!(a.code(), Some(400), "{option:?} with a TCP relay");
    }
    let relays = allocate_tcp(&mut h, &creds, &[]);
    let options = h.relays.0.lock().unwrap().options.clone();
    assert_eq!(options.len(), 1);
    assert_eq!(options[0].protocol, RelayProtocol::Tcp);
    assert_eq!(relays.len(), 1);

    // Channels and Send are for datagrams.
    let a = h.authed(
        Method::CHANNEL_BIND,
        &[
            Attribute::ChannelNumber(0x4000),
            Attribute::XorPeerAddress(addr(PEER)),
        ],
        &creds,
    );
    assert_eq!(a.code(), Some(400), "ChannelBind on a TCP allocation");
    let a = h.authed(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(addr(PEER))],
        &creds,
    );
    assert_eq!(a.class(), Class::Success, "permissions apply as for UDP");
    assert!(h.send_indication(addr(PEER), b"x").is_none());
    assert_eq!(h.server.stats().relayed.to_peer_packets, 0);
}

#[test]
fn connect_on_a_udp_allocation_is_400() {
    let mut h = tcp_harness(|_| {});
    let creds = h.creds();
    h.allocate(&creds);
    let a = connect(&mut h, &creds, addr(PEER)).expect("an answer");
    assert_eq!(a.code(), Some(400));
    assert!(events(&mut h).is_empty(), "nothing to open");
}

#[test]
fn connect_then_bind_on_a_new_connection() {
    let mut h = tcp_harness(|_| {});
    let creds = h.creds();
    let relay = allocate_tcp(&mut h, &creds, &[])[0];
    let (id, answer) = connect_and_finish(&mut h, &creds, relay, addr(PEER), true);
    assert_eq!(answer.class(), Class::Success);
    assert_eq!(answer.message().message_type().method, Method::CONNECT);
    assert_eq!(connection_id(&answer), id);
    verify_md5(&answer, USER, PASS);
    assert_eq!(answer.transmit.transport(), Transport::Tcp);
    assert_eq!(answer.transmit.destination(), addr(CLIENT));
    assert_eq!(answer.transmit.source(), addr(SERVER));
    assert_eq!(h.server.peer_connection_count(), 1);

    let bound = connection_bind(&mut h, DATA_CLIENT, id);
    assert_eq!(bound.class(), Class::Success, "{:?}", bound.code());
    assert_eq!(bound.transmit.destination(), addr(DATA_CLIENT));
    verify_md5(&bound, USER, PASS);
    let data = FiveTuple {
        client: addr(DATA_CLIENT),
        ..control()
    };
    assert_eq!(
        events(&mut h),
        [Event::ConnectionBound { id, client: data }]
    );
    // Bound connections have no timer: a minute later it is still there.
    h.advance(60);
    assert!(events(&mut h).is_empty());
    assert_eq!(h.server.peer_connection_count(), 1);

    // Either side closing in the shell ends it.
    h.server.peer_connection_closed(id);
    assert_eq!(h.server.peer_connection_count(), 0);
}

#[test]
fn a_second_connection_to_the_same_peer_is_446() {
    let mut h = tcp_harness(|_| {});
    let creds = h.creds();
    let relay = allocate_tcp(&mut h, &creds, &[])[0];
    // While connecting…
    assert!(connect(&mut h, &creds, addr(PEER)).is_none());
    let id = match events(&mut h).as_slice() {
        [Event::OpenConnection { id, .. }] => *id,
        other => panic!("{other:?}"),
    };
    let a = connect(&mut h, &creds, addr(PEER)).expect("refused at once");
    assert_eq!(a.code(), Some(446));
    verify_md5(&a, USER, PASS);
    // …and once established.
    h.server.connect_finished(h.now, id, true);
    owed(&mut h);
    let a = connect(&mut h, &creds, addr(PEER)).expect("refused at once");
    assert_eq!(a.code(), Some(446));
    // Another port of the same peer is another connection.
    let other = SocketAddr::new(addr(PEER).ip(), 6001);
    let (_, answer) = connect_and_finish(&mut h, &creds, relay, other, true);
    assert_eq!(answer.class(), Class::Success);
    // Once the first is closed, its peer may be connected again.
    h.server.peer_connection_closed(id);
    let (_, answer) = connect_and_finish(&mut h, &creds, relay, addr(PEER), true);
    assert_eq!(answer.class(), Class::Success);
}

#[test]
fn failed_and_timed_out_connects_are_447() {
    let mut h = tcp_harness(|_| {});
    let creds = h.creds();
    let relay = allocate_tcp(&mut h, &creds, &[])[0];
    let (_, answer) = connect_and_finish(&mut h, &creds, relay, addr(PEER), false);
    assert_eq!(answer.code(), Some(447));
    assert_eq!(answer.message().message_type().method, Method::CONNECT);
    verify_md5(&answer, USER, PASS);
    assert!(events(&mut h).is_empty(), "nothing left for the shell");
    assert_eq!(h.server.peer_connection_count(), 0);

    // No report at all: 447 at 30 s, and the shell is told to give up.
    assert!(connect(&mut h, &creds, addr(PEER)).is_none());
    let id = match events(&mut h).as_slice() {
        [Event::OpenConnection { id, .. }] => *id,
        other => panic!("{other:?}"),
    };
    h.advance(29);
    assert!(owed(&mut h).is_empty(), "still connecting at 29 s");
    h.advance(2);
    let answers = owed(&mut h);
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].code(), Some(447));
    assert_eq!(events(&mut h), [Event::CloseConnection { id }]);
    // A late report changes nothing.
    h.server.connect_finished(h.now, id, true);
    assert!(owed(&mut h).is_empty());
    assert_eq!(h.server.peer_connection_count(), 0);
}

#[test]
fn unbound_connections_close_after_30_seconds() {
    let mut h = tcp_harness(|_| {});
    let creds = h.creds();
    let relay = allocate_tcp(&mut h, &creds, &[])[0];
    let (id, _) = connect_and_finish(&mut h, &creds, relay, addr(PEER), true);
    h.advance(29);
    assert!(events(&mut h).is_empty(), "still waiting at 29 s");
    h.advance(2);
    assert_eq!(events(&mut h), [Event::CloseConnection { id }]);
    assert_eq!(h.server.peer_connection_count(), 0);
    let a = connection_bind(&mut h, DATA_CLIENT, id);
    assert_eq!(a.code(), Some(400), "too late to bind");
}

#[test]
fn peers_with_a_permission_connect_and_the_client_is_told() {
    let mut h = tcp_harness(|_| {});
    let creds = h.creds();
    let relay = allocate_tcp(&mut h, &creds, &[])[0];
    let peer = addr(PEER);
    assert_eq!(h.peer_connects(relay, peer), None, "no permission: refused");
    assert!(owed(&mut h).is_empty());
    let a = h.authed(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(peer)],
        &creds,
    );
    assert_eq!(a.class(), Class::Success);
    let unknown_relay = SocketAddr::new(relay.ip(), relay.port() ^ 1);
    assert_eq!(h.peer_connects(unknown_relay, peer), None);
    let id = h.peer_connects(relay, peer).expect("permitted peer");
    let attempts = owed(&mut h);
    assert_eq!(attempts.len(), 1);
    let attempt = &attempts[0];
    let kind = attempt.message().message_type();
    assert_eq!(
        (kind.method, kind.class),
        (Method::CONNECTION_ATTEMPT, Class::Indication)
    );
    assert_eq!(connection_id(attempt), id);
    assert_eq!(
        attempt.attr(AttrType::XOR_PEER_ADDRESS),
        Some(Attribute::XorPeerAddress(peer))
    );
    assert_eq!(attempt.transmit.destination(), addr(CLIENT));
    assert_eq!(attempt.transmit.transport(), Transport::Tcp);

    let bound = connection_bind(&mut h, DATA_CLIENT, id);
    assert_eq!(bound.class(), Class::Success);
    assert!(matches!(
        events(&mut h).as_slice(),
        [Event::ConnectionBound { id: bound_id, .. }] if *bound_id == id
    ));

    // The permission expires (300 s, refreshed by nothing): new peer
    // connections are refused again; the bound one is not touched.
    h.advance(301);
    let other = SocketAddr::new(peer.ip(), 7000);
    assert_eq!(h.peer_connects(relay, other), None);
    assert_eq!(h.server.peer_connection_count(), 1);
}

#[test]
fn connection_bind_rules() {
    let mut h = tcp_harness(|_| {});
    let creds = h.creds();
    let relay = allocate_tcp(&mut h, &creds, &[])[0];
    let (id, _) = connect_and_finish(&mut h, &creds, relay, addr(PEER), true);

    // Not on the control connection.
    let a = h.authed(
        Method::CONNECTION_BIND,
        &[Attribute::ConnectionId(id.0)],
        &creds,
    );
    assert_eq!(
        a.code(),
        Some(400),
        "ConnectionBind on the control connection"
    );
    // Not without an identifier, nor with an unknown one.
    let data_creds = h.creds_for(DATA_CLIENT, USER, PASS);
    let a = h.authed_from(DATA_CLIENT, Method::CONNECTION_BIND, &[], &data_creds);
    assert_eq!(a.code(), Some(400));
    let a = connection_bind(&mut h, DATA_CLIENT, ConnectionId(id.0 ^ 0x100));
    assert_eq!(a.code(), Some(400), "unknown CONNECTION-ID");
    // Not by another user.
    let bob = h.creds_for(DATA_CLIENT, "bob", "builder");
    let a = h.authed_from(
        DATA_CLIENT,
        Method::CONNECTION_BIND,
        &[Attribute::ConnectionId(id.0)],
        &bob,
    );
    assert_eq!(a.code(), Some(400), "another user's connection");
    // Not over UDP.
    h.transport = Transport::Udp;
    let a = connection_bind(&mut h, DATA_CLIENT, id);
    assert_eq!(a.code(), Some(400), "over UDP");
    h.transport = Transport::Tcp;
    // Unauthenticated: challenged, like every request.
    let tid = h.tid();
    let req = h.request(
        Method::CONNECTION_BIND,
        tid,
        &[Attribute::ConnectionId(id.0)],
        None,
    );
    let a = h.send_from(DATA_CLIENT, &req).expect("challenge");
    assert_eq!(a.code(), Some(401));
    assert!(events(&mut h).is_empty(), "nothing bound so far");

    let a = connection_bind(&mut h, DATA_CLIENT, id);
    assert_eq!(a.class(), Class::Success);
    let a = connection_bind(&mut h, "198.51.100.20:40003", id);
    assert_eq!(a.code(), Some(400), "bound only once");
}

#[test]
fn closing_the_allocation_closes_every_connection() {
    let mut h = tcp_harness(|_| {});
    let creds = h.creds();
    let relay = allocate_tcp(&mut h, &creds, &[])[0];
    let (a, _) = connect_and_finish(&mut h, &creds, relay, addr(PEER), true);
    connection_bind(&mut h, DATA_CLIENT, a);
    events(&mut h);
    let (b, _) = connect_and_finish(
        &mut h,
        &creds,
        relay,
        "93.184.216.34:6001".parse().unwrap(),
        true,
    );
    assert!(connect(&mut h, &creds, "93.184.216.34:6002".parse().unwrap()).is_none());
    let c = match events(&mut h).as_slice() {
        [Event::OpenConnection { id, .. }] => *id,
        other => panic!("{other:?}"),
    };
    assert_eq!(h.server.peer_connection_count(), 3);

    // The control connection closes: the allocation and all three go.
    h.server.connection_closed(h.now, &control());
    let mut closed: Vec<_> = events(&mut h)
        .into_iter()
        .map(|e| match e {
            Event::CloseConnection { id } => id,
            other => panic!("{other:?}"),
        })
        .collect();
    closed.sort();
    let mut expected = vec![a, b, c];
    expected.sort();
    assert_eq!(closed, expected);
    assert_eq!(h.server.peer_connection_count(), 0);
    assert!(owed(&mut h).is_empty(), "no answer to a closed connection");
    assert!(h.bound().is_empty(), "the relay listener is released");

    // Expiry and Refresh with LIFETIME 0 do the same.
    let creds = h.creds();
    let relay = allocate_tcp(&mut h, &creds, &[])[0];
    let (id, _) = connect_and_finish(&mut h, &creds, relay, addr(PEER), true);
    let a = h.authed(Method::REFRESH, &[Attribute::Lifetime(0)], &creds);
    assert_eq!(a.class(), Class::Success);
    assert_eq!(events(&mut h), [Event::CloseConnection { id }]);
    let creds = h.creds();
    let relay = allocate_tcp(&mut h, &creds, &[])[0];
    let (id, _) = connect_and_finish(&mut h, &creds, relay, addr(PEER), true);
    connection_bind(&mut h, DATA_CLIENT, id);
    events(&mut h);
    h.advance(601);
    assert_eq!(events(&mut h), [Event::CloseConnection { id }]);
}

#[test]
fn connections_are_limited_per_allocation_and_in_total() {
    let mut h = tcp_harness(|t| {
        t.max_connections_per_allocation = 2;
        t.max_connections = 3;
    });
    let creds = h.creds();
    let relay = allocate_tcp(&mut h, &creds, &[])[0];
    for port in [6000, 6001] {
        let peer = SocketAddr::new(addr(PEER).ip(), port);
        let (_, a) = connect_and_finish(&mut h, &creds, relay, peer, true);
        assert_eq!(a.class(), Class::Success);
    }
    let a = connect(&mut h, &creds, "93.184.216.34:6002".parse().unwrap()).expect("refused");
    assert_eq!(a.code(), Some(508), "third on one allocation");
    h.authed(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(addr(PEER))],
        &creds,
    );
    assert_eq!(
        h.peer_connects(relay, addr("93.184.216.34:7000")),
        None,
        "peer-initiated ones count too"
    );

    // Another allocation may take one more: the server-wide limit is 3.
    let other = "198.51.100.21:41000";
    let creds2 = h.creds_for(other, "bob", "builder");
    let a = h.authed_from(
        other,
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(protocol::TCP)],
        &creds2,
    );
    assert_eq!(a.class(), Class::Success, "bob's TCP allocation");
    let connect_from = |h: &mut Harness, peer: &str| {
        let tid = h.tid();
        let req = h.request(
            Method::CONNECT,
            tid,
            &[Attribute::XorPeerAddress(addr(peer))],
            Some(&creds2),
        );
        h.send_from(other, &req)
    };
    assert!(connect_from(&mut h, PEER).is_none());
    let a = connect_from(&mut h, "93.184.216.34:6001").expect("refused");
    assert_eq!(a.code(), Some(508), "fourth on the server");
}

#[test]
fn every_forbidden_peer_is_refused_on_connect() {
    let mut h = tcp_harness(|_| {});
    let creds = h.creds();
    let relays = allocate_tcp(
        &mut h,
        &creds,
        &[Attribute::AdditionalAddressFamily(AddressFamily::V6)],
    );
    assert_eq!(
        relays.len(),
        2,
        "dual-stack, so IPv6 forms reach the policy"
    );
    for peer in FORBIDDEN_PEERS {
        let peer = addr(peer);
        let a = connect(&mut h, &creds, peer).expect("refused at once");
        assert_eq!(a.code(), Some(403), "Connect to {peer}");
        // Nor can a peer at that address get a permission and connect in.
        let a = h.authed(
            Method::CREATE_PERMISSION,
            &[Attribute::XorPeerAddress(peer)],
            &creds,
        );
        assert_eq!(a.code(), Some(403), "CreatePermission for {peer}");
        let relay = if peer.is_ipv4() { relays[0] } else { relays[1] };
        assert_eq!(h.peer_connects(relay, peer), None);
    }
    assert!(
        events(&mut h).is_empty(),
        "the shell was never asked to connect anywhere"
    );
    assert!(owed(&mut h).is_empty());
}

#[test]
fn connection_bind_ids_route_to_their_shard() {
    let mut h = tcp_harness(|_| {});
    let creds = h.creds();
    let relay = allocate_tcp(&mut h, &creds, &[])[0];
    let (id, _) = connect_and_finish(&mut h, &creds, relay, addr(PEER), true);
    let bind_creds = h.creds_for(DATA_CLIENT, USER, PASS);
    let tid = h.tid();
    let req = h.request(
        Method::CONNECTION_BIND,
        tid,
        &[Attribute::ConnectionId(id.0)],
        Some(&bind_creds),
    );
    assert_eq!(ConnectionId::of_connection_bind(&req), Some(id));
    assert_eq!(id.shard(1), 0);
    let tid = h.tid();
    let other = h.request(
        Method::CONNECT,
        tid,
        &[Attribute::ConnectionId(id.0)],
        Some(&bind_creds),
    );
    assert_eq!(
        ConnectionId::of_connection_bind(&other),
        None,
        "not a ConnectionBind"
    );
    assert_eq!(ConnectionId::of_connection_bind(b"garbage"), None);
}

#[test]
fn connection_bind_may_reuse_the_control_connections_nonce() {
    // turnutils_uclient signs ConnectionBind with the nonce its control
    // connection got, from a new port; nonces are bound to an address.
    let mut h = tcp_harness(|_| {});
    let creds = h.creds();
    let relay = allocate_tcp(&mut h, &creds, &[])[0];
    let (id, _) = connect_and_finish(&mut h, &creds, relay, addr(PEER), true);
    let stranger = h.creds_for("203.0.113.9:5000", USER, PASS);
    let a = h.authed_from(
        DATA_CLIENT,
        Method::CONNECTION_BIND,
        &[Attribute::ConnectionId(id.0)],
        &stranger,
    );
    assert_eq!(a.code(), Some(438), "a nonce issued to another address");
    let a = h.authed_from(
        DATA_CLIENT,
        Method::CONNECTION_BIND,
        &[Attribute::ConnectionId(id.0)],
        &creds,
    );
    assert_eq!(a.class(), Class::Success, "{:?}", a.code());
    // Only for ConnectionBind, and only for the connection's own allocation.
    let a = h.authed_from(
        DATA_CLIENT,
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(protocol::TCP)],
        &creds,
    );
    assert_eq!(a.code(), Some(438), "Allocate from the data connection");
}
