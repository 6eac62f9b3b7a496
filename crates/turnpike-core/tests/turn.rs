//! TURN through the sans-IO `Server` with a simulated clock and a fake relay
//! binder: authentication, lifetimes, permissions, channels, relaying both
//! ways, quotas, reservations, dual stack, and the unauthenticated surface
//! (amplification, rate limits, no state).

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use turnpike_codec::attr::{PasswordAlgorithm, PasswordAlgorithms, password_algorithm, protocol};
use turnpike_codec::integrity::{long_term_key_sha256, userhash};
use turnpike_codec::{
    AddressFamily, AttrType, Attribute, ChannelData, Class, MessageBuilder, MessageType, Method,
    Sha256Key,
};
use turnpike_core::ephemeral::Format;
use turnpike_core::stats::{AuthFailure, DropReason};
use turnpike_core::{
    Event, FiveTuple, Lookup, Packet, PeerPolicy, Secrets, Shard, Transport, UserKeys,
};

use common::*;

#[test]
fn allocate_needs_credentials_and_answers_lean() {
    let mut h = Harness::new(|_| {});
    let tid = h.tid();
    let req = h.request(
        Method::ALLOCATE,
        tid,
        &[Attribute::RequestedTransport(protocol::UDP)],
        None,
    );
    assert_eq!(req.len(), 28);
    let a = h.send(&req).unwrap();
    assert_eq!(a.code(), Some(401));
    assert_eq!(a.attr(AttrType::REALM), Some(Attribute::Realm(REALM)));
    assert!(a.attr(AttrType::SOFTWARE).is_none());
    assert!(
        a.bytes.len() <= 3 * req.len(),
        "401 of {} bytes to a {}-byte request",
        a.bytes.len(),
        req.len()
    );
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn allocate_success_is_signed_and_binds_a_relay() {
    let mut h = Harness::new(|_| {});
    let creds = h.creds();
    let a = h.authed(
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(protocol::UDP)],
        &creds,
    );
    assert_eq!(a.class(), Class::Success);
    verify_md5(&a, USER, PASS);
    let relay = a.relayed()[0];
    assert_eq!(relay.ip(), "192.0.2.10".parse::<IpAddr>().unwrap());
    assert!((50000..=50999).contains(&relay.port()));
    assert_eq!(a.lifetime(), Some(600));
    assert_eq!(
        a.attr(AttrType::XOR_MAPPED_ADDRESS),
        Some(Attribute::XorMappedAddress(addr(CLIENT)))
    );
    assert!(h.bound().contains(&relay));
    assert_eq!(h.server.allocation_count(), 1);
    assert_eq!(h.server.stats().allocations_created, 1);
}

#[test]
fn wrong_password_is_401_and_counted() {
    let mut h = Harness::new(|_| {});
    let mut creds = h.creds();
    creds.pass = "wrong";
    let a = h.authed(
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(protocol::UDP)],
        &creds,
    );
    assert_eq!(a.code(), Some(401));
    let failures = h.server.stats().auth_failures;
    assert_eq!(failures.get(AuthFailure::BadIntegrity), 1);
    assert_eq!(failures.total(), 1);
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn stale_and_foreign_nonces_get_438_with_a_fresh_nonce() {
    let mut h = Harness::new(|_| {});
    let creds = h.creds();
    // Issued to another address.
    let a = h.authed_from(
        "198.51.100.21:40000",
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(protocol::UDP)],
        &creds,
    );
    assert_eq!(a.code(), Some(438));
    h.advance(601);
    let a = h.authed(
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(protocol::UDP)],
        &creds,
    );
    assert_eq!(a.code(), Some(438));
    let fresh = Creds {
        nonce: a.nonce(),
        ..creds
    };
    h.allocate(&fresh);
}

#[test]
fn unknown_user_is_held_looked_up_and_answered() {
    let mut h = Harness::new(|_| {});
    let creds = h.creds_for(CLIENT, "carol", "secret");
    let req = h.allocate_request(&creds);
    // Held, not answered; a retransmission meanwhile adds no second lookup.
    assert!(h.send(&req).is_none());
    assert!(h.send(&req).is_none());
    assert_eq!(
        h.poll_event(),
        Some(Event::NeedCredentials {
            username: "carol".into()
        })
    );
    assert_eq!(h.poll_event(), None);
    assert!(h.replay().is_empty(), "nothing is ready before the lookup");

    let keys = UserKeys::from_password("carol", REALM, "secret");
    let valid_until = h.now + Duration::from_secs(60);
    h.server
        .resolve_credentials(h.now, "carol", Lookup::Found(keys), valid_until);
    let answers = h.replay();
    assert_eq!(answers.len(), 1, "the retransmission was held once");
    assert_eq!(answers[0].class(), Class::Success);
    assert_eq!(answers[0].transmit.destination(), addr(CLIENT));
    verify_md5(&answers[0], "carol", "secret");

    // Within the validity the cache answers; afterwards it asks again.
    let more = h.creds_for("198.51.100.7:4000", "carol", "secret");
    let a = h.authed_from(
        "198.51.100.7:4000",
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(protocol::UDP)],
        &more,
    );
    assert_eq!(a.class(), Class::Success);
    assert_eq!(h.poll_event(), None);
    h.advance(61);
    let late = h.creds_for("198.51.100.8:4000", "carol", "secret");
    let req = h.allocate_request(&late);
    assert!(h.send_from("198.51.100.8:4000", &req).is_none());
    assert!(matches!(
        h.poll_event(),
        Some(Event::NeedCredentials { .. })
    ));
}

#[test]
fn users_the_store_does_not_know_get_401_and_an_unreachable_store_500() {
    let mut h = Harness::new(|_| {});
    for (user, lookup, code) in [
        ("mallory", Lookup::NotFound, 401),
        ("dave", Lookup::Unavailable, 500),
    ] {
        let creds = h.creds_for(CLIENT, user, "pw");
        let req = h.allocate_request(&creds);
        assert!(h.send(&req).is_none());
        assert_eq!(
            h.poll_event(),
            Some(Event::NeedCredentials {
                username: user.into()
            })
        );
        h.server
            .resolve_credentials(h.now, user, lookup, h.now + Duration::from_secs(5));
        let answers = h.replay();
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].code(), Some(code), "{user}");
        // Until the verdict expires it comes from the cache, without a lookup.
        let again = h.send(&req).expect("answered from the cache");
        assert_eq!(again.code(), Some(code), "{user}");
        assert_eq!(h.poll_event(), None);
    }
    let failures = h.server.stats().auth_failures;
    assert_eq!(failures.get(AuthFailure::UnknownUser), 2, "mallory twice");
    assert_eq!(failures.get(AuthFailure::Unavailable), 2, "dave twice");
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn lookups_that_never_complete_are_forgotten() {
    let mut h = Harness::new(|_| {});
    let creds = h.creds_for(CLIENT, "erin", "pw");
    let req = h.allocate_request(&creds);
    assert!(h.send(&req).is_none());
    assert!(h.poll_event().is_some());
    assert!(
        h.server.poll_timeout().is_some(),
        "a held request keeps the timer running"
    );
    h.advance(20);
    h.server.resolve_credentials(
        h.now,
        "erin",
        Lookup::Found(UserKeys::from_password("erin", REALM, "pw")),
        h.now + Duration::from_secs(60),
    );
    assert!(
        h.replay().is_empty(),
        "the held request was dropped with its lookup"
    );
    // The client's next retransmission is answered from the cache.
    assert_eq!(h.send(&req).expect("answer").class(), Class::Success);
}

#[test]
fn second_allocate_on_a_five_tuple_is_437_but_a_retransmission_is_answered_again() {
    let mut h = Harness::new(|_| {});
    let creds = h.creds();
    let req = h.allocate_request(&creds);
    let first = h.send(&req).unwrap();
    let again = h.send(&req).unwrap();
    assert_eq!(again.class(), Class::Success);
    assert_eq!(again.relayed(), first.relayed());
    let a = h.authed(
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(protocol::UDP)],
        &creds,
    );
    assert_eq!(a.code(), Some(437));
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn transport_and_attribute_rules() {
    let mut h = Harness::new(|_| {});
    let creds = h.creds();
    let a = h.authed(Method::ALLOCATE, &[], &creds);
    assert_eq!(a.code(), Some(400), "REQUESTED-TRANSPORT is required");
    let a = h.authed(
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(protocol::TCP)],
        &creds,
    );
    assert_eq!(a.code(), Some(400), "TCP relays need a TCP or TLS client");
    let a = h.authed(
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(132)],
        &creds,
    );
    assert_eq!(a.code(), Some(442), "SCTP");
    let a = h.authed(
        Method::ALLOCATE,
        &[
            Attribute::RequestedTransport(protocol::UDP),
            Attribute::ReservationToken(&[1; 8]),
            Attribute::EvenPort(false),
        ],
        &creds,
    );
    assert_eq!(a.code(), Some(400), "RESERVATION-TOKEN with EVEN-PORT");
    let a = h.authed(
        Method::ALLOCATE,
        &[
            Attribute::RequestedTransport(protocol::UDP),
            Attribute::AdditionalAddressFamily(AddressFamily::V4),
        ],
        &creds,
    );
    assert_eq!(
        a.code(),
        Some(400),
        "ADDITIONAL-ADDRESS-FAMILY must be IPv6"
    );
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn lifetimes_refresh_and_deletion() {
    let mut h = Harness::new(|_| {});
    let creds = h.creds();
    let a = h.authed(
        Method::ALLOCATE,
        &[
            Attribute::RequestedTransport(protocol::UDP),
            Attribute::Lifetime(100_000),
        ],
        &creds,
    );
    assert_eq!(a.lifetime(), Some(3600), "capped at the maximum");
    let relay = a.relayed()[0];
    let a = h.authed(Method::REFRESH, &[Attribute::Lifetime(30)], &creds);
    assert_eq!(a.lifetime(), Some(600), "raised to the default");
    h.advance(599);
    assert_eq!(h.server.allocation_count(), 1);
    let a = h.authed(Method::REFRESH, &[Attribute::Lifetime(0)], &creds);
    assert_eq!(a.class(), Class::Success);
    assert_eq!(a.lifetime(), Some(0));
    assert_eq!(h.server.allocation_count(), 0);
    assert!(!h.bound().contains(&relay), "relay released on delete");
    let a = h.authed(Method::REFRESH, &[], &creds);
    assert_eq!(a.code(), Some(437));
}

#[test]
fn allocations_expire_on_the_sweep() {
    let mut h = Harness::new(|_| {});
    let creds = h.creds();
    let relay = h.allocate(&creds);
    h.advance(599);
    assert_eq!(h.server.allocation_count(), 1);
    h.advance(2);
    assert_eq!(h.server.allocation_count(), 0);
    assert!(!h.bound().contains(&relay));
    assert_eq!(h.server.poll_timeout(), None, "nothing left to sweep");
}

/// Follows the server's timer as the shell does: to each timeout it asks
/// for, until `done` holds or `limit` passes. Returns when `done` held.
fn follow_timer(h: &mut Harness, limit: Instant, done: impl Fn(&mut Harness) -> bool) -> Instant {
    while !done(h) {
        let at = h.timeout.expect("a timer runs while there is state");
        assert!(at <= limit, "nothing happened by {:?}", limit - h.now);
        h.now = at;
        h.server.handle_timeout(at);
        h.drain_owed();
    }
    h.now
}

/// Allocations go when their lifetime ends, not at the next periodic sweep
/// after it: the timer the core asks for is the earliest expiry.
#[test]
fn an_allocation_goes_at_its_expiry_not_at_the_next_sweep() {
    let mut h = Harness::new(|t| {
        t.default_lifetime = Duration::from_secs(2);
        t.max_lifetime = Duration::from_secs(2);
    });
    // Another allocation starts the periodic sweep, out of step with the
    // one under test.
    let bob = h.creds_for("198.51.100.30:4000", "bob", "builder");
    let a = h.authed_from(
        "198.51.100.30:4000",
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(protocol::UDP)],
        &bob,
    );
    assert_eq!(a.class(), Class::Success);
    h.advance_by(Duration::from_millis(300));
    let creds = h.creds();
    let created = h.now;
    let relay = h.allocate(&creds);
    let expiry = created + Duration::from_secs(2);
    assert!(h.timeout.is_some_and(|t| t <= expiry), "{:?}", h.timeout);

    let gone = follow_timer(&mut h, expiry, |h| !h.bound().contains(&relay));
    assert_eq!(gone, expiry, "deleted at its expiry, to the nanosecond");
    assert_eq!(h.server.allocation_count(), 0, "bob's went 300 ms earlier");
}

/// RFC 6062's 30-second timers fire on time too.
#[test]
fn a_connect_deadline_is_the_timer() {
    let mut h = Harness::new(|_| {});
    h.transport = Transport::Tcp;
    let creds = h.creds();
    let a = h.authed(
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(protocol::TCP)],
        &creds,
    );
    assert_eq!(a.class(), Class::Success);
    h.advance_by(Duration::from_millis(700));
    let asked = h.now;
    let tid = h.tid();
    let req = h.request(
        Method::CONNECT,
        tid,
        &[Attribute::XorPeerAddress(addr(PEER))],
        Some(&creds),
    );
    assert!(h.send(&req).is_none(), "answered once the shell reports");
    let deadline = asked + turnpike_core::connection::CONNECT_TIMEOUT;
    let answered = follow_timer(&mut h, deadline, |h| !h.outbox.is_empty());
    assert_eq!(answered, deadline);
    assert_eq!(h.owed()[0].code(), Some(447));
}

#[test]
fn other_clients_and_users_cannot_touch_an_allocation() {
    let mut h = Harness::new(|_| {});
    let creds = h.creds();
    h.allocate(&creds);
    // Same user, other 5-tuple: no allocation there.
    let other = "198.51.100.99:1234";
    let c2 = h.creds_for(other, USER, PASS);
    let a = h.authed_from(other, Method::REFRESH, &[Attribute::Lifetime(0)], &c2);
    assert_eq!(a.code(), Some(437));
    let a = h.authed_from(
        other,
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(addr(PEER))],
        &c2,
    );
    assert_eq!(a.code(), Some(437));
    // Other user on the allocation's own 5-tuple.
    let bob = h.creds_for(CLIENT, "bob", "builder");
    let a = h.authed(Method::REFRESH, &[Attribute::Lifetime(0)], &bob);
    assert_eq!(a.code(), Some(441));
    assert_eq!(h.server.allocation_count(), 1);
}

/// A CreatePermission refused with 508 (the allocation's table is full)
/// installs none of its peers, not even those listed before the one that
/// did not fit: the client was told it failed, so data to them must not
/// flow. Found by the `turn_server` fuzz target.
#[test]
fn a_create_permission_without_room_installs_nothing() {
    let mut h = Harness::new(|t| t.max_permissions = 2);
    let creds = h.creds();
    h.allocate(&creds);
    let permit = |h: &mut Harness, peers: &[&str]| {
        let attrs: Vec<_> = peers
            .iter()
            .map(|p| Attribute::XorPeerAddress(addr(p)))
            .collect();
        h.authed(Method::CREATE_PERMISSION, &attrs, &creds)
    };
    assert_eq!(permit(&mut h, &[PEER]).class(), Class::Success);
    let (second, third) = ("93.184.216.35:6000", "93.184.216.36:6000");
    assert_eq!(permit(&mut h, &[second, third]).code(), Some(508));
    assert!(
        h.send_indication(addr(second), b"x").is_none(),
        "a peer of the refused request was installed"
    );
    // The one that fits alone still can be installed, and refreshing a
    // permission that exists needs no room.
    assert_eq!(permit(&mut h, &[second]).class(), Class::Success);
    assert_eq!(permit(&mut h, &[PEER, second]).class(), Class::Success);
    assert_eq!(permit(&mut h, &[PEER, third]).code(), Some(508));
    assert!(h.send_indication(addr(third), b"x").is_none());
    assert!(h.send_indication(addr(PEER), b"x").is_some());
}

/// A ChannelBind refused with 508 because the peer's permission does not
/// fit binds no channel: the number stays free for another peer, and the
/// refused peer's datagrams reach nobody. Found by the `turn_server` fuzz
/// target.
#[test]
fn a_channel_bind_without_room_for_its_permission_binds_nothing() {
    let mut h = Harness::new(|t| t.max_permissions = 1);
    let creds = h.creds();
    let relay = h.allocate(&creds);
    let a = h.authed(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(addr(PEER))],
        &creds,
    );
    assert_eq!(a.class(), Class::Success);
    let bind = |h: &mut Harness, peer: &str| {
        let attrs = [
            Attribute::ChannelNumber(0x4000),
            Attribute::XorPeerAddress(addr(peer)),
        ];
        h.authed(Method::CHANNEL_BIND, &attrs, &creds)
    };
    let other = "93.184.216.35:6000";
    assert_eq!(bind(&mut h, other).code(), Some(508));
    assert!(h.peer_sends(relay, other, b"x").is_none());
    assert_eq!(
        bind(&mut h, PEER).class(),
        Class::Success,
        "the number was taken"
    );
    let back = h.peer_sends(relay, PEER, b"x").expect("relayed");
    assert_eq!(
        turnpike_codec::ChannelData::parse(&back.bytes).map(|c| c.channel),
        Ok(0x4000)
    );
}

#[test]
fn send_needs_a_permission_which_expires() {
    let mut h = Harness::new(|_| {});
    let creds = h.creds();
    let relay = h.allocate(&creds);
    let send = |h: &mut Harness| h.send_indication(addr(PEER), b"hello peer");
    assert!(send(&mut h).is_none(), "no permission yet");
    let a = h.authed(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(addr(PEER))],
        &creds,
    );
    assert_eq!(a.class(), Class::Success);
    let t = send(&mut h).expect("relayed");
    assert_eq!(t.transmit.source(), relay);
    assert_eq!(t.transmit.destination(), addr(PEER));
    assert_eq!(t.bytes, b"hello peer");
    // Peer answers: a Data indication to the client, from the server address.
    let back = h.peer_sends(relay, PEER, b"hi client").expect("to client");
    assert_eq!(back.transmit.destination(), addr(CLIENT));
    assert_eq!(back.transmit.source(), addr(SERVER));
    assert_eq!(
        back.message().message_type(),
        MessageType::new(Method::DATA, Class::Indication)
    );
    assert_eq!(
        back.attr(AttrType::DATA),
        Some(Attribute::Data(b"hi client"))
    );
    assert_eq!(
        back.attr(AttrType::XOR_PEER_ADDRESS),
        Some(Attribute::XorPeerAddress(addr(PEER)))
    );
    // Another peer IP has no permission.
    assert!(h.peer_sends(relay, "93.184.216.35:6000", b"x").is_none());
    // Permissions last 300 s (the allocation 600 s).
    h.advance(301);
    assert!(send(&mut h).is_none(), "permission expired");
    assert!(h.peer_sends(relay, PEER, b"x").is_none());
    assert_eq!(h.server.stats().relayed.to_peer_packets, 1);
    assert_eq!(h.server.stats().relayed.to_client_packets, 1);
}

#[test]
fn channels_relay_both_ways_and_follow_the_rebinding_rules() {
    let mut h = Harness::new(|_| {});
    let creds = h.creds();
    let relay = h.allocate(&creds);
    let bind = |h: &mut Harness, n: u16, peer: &str| {
        h.authed(
            Method::CHANNEL_BIND,
            &[
                Attribute::ChannelNumber(n),
                Attribute::XorPeerAddress(addr(peer)),
            ],
            &creds,
        )
    };
    assert_eq!(bind(&mut h, 0x4000, PEER).class(), Class::Success);
    assert_eq!(
        bind(&mut h, 0x4000, PEER).class(),
        Class::Success,
        "refresh"
    );
    assert_eq!(
        bind(&mut h, 0x4000, "93.184.216.35:7000").code(),
        Some(400),
        "channel to another peer"
    );
    assert_eq!(
        bind(&mut h, 0x4001, PEER).code(),
        Some(400),
        "peer to another channel"
    );
    assert_eq!(
        bind(&mut h, 0x3FFF, "93.184.216.36:1").code(),
        Some(400),
        "below the range"
    );
    assert_eq!(
        bind(&mut h, 0x8000, "93.184.216.36:1").code(),
        Some(400),
        "above the range"
    );
    assert_eq!(
        bind(&mut h, 0x7FFF, "93.184.216.36:1").class(),
        Class::Success,
        "RFC 5766 range"
    );

    let mut cd = [0u8; 64];
    let len = ChannelData {
        channel: 0x4000,
        data: b"over the channel",
    }
    .encode(&mut cd, false)
    .unwrap();
    let t = h.send(&cd[..len]).expect("relayed");
    assert_eq!(
        (t.transmit.source(), t.transmit.destination()),
        (relay, addr(PEER))
    );
    assert_eq!(t.bytes, b"over the channel");
    let back = h.peer_sends(relay, PEER, b"reply").expect("to client");
    assert_eq!(
        ChannelData::parse(&back.bytes),
        Ok(ChannelData {
            channel: 0x4000,
            data: b"reply"
        })
    );
    // An unbound channel number is dropped.
    let len = ChannelData {
        channel: 0x4002,
        data: b"x",
    }
    .encode(&mut cd, false)
    .unwrap();
    assert!(h.send(&cd[..len]).is_none());
    // Bindings last 600 s, but the permission they install only 300 s
    // unless refreshed: data stops with the permission.
    h.advance(301);
    let len = ChannelData {
        channel: 0x4000,
        data: b"late",
    }
    .encode(&mut cd, false)
    .unwrap();
    assert!(h.send(&cd[..len]).is_none());
}

#[test]
fn peers_refused_by_policy_get_403() {
    let mut h = Harness::new(|_| {});
    let creds = h.creds();
    h.allocate(&creds);
    for peer in ["127.0.0.1:5000", "[::ffff:127.0.0.1]:5000", SERVER] {
        let a = h.authed(
            Method::CREATE_PERMISSION,
            &[Attribute::XorPeerAddress(addr(peer))],
            &creds,
        );
        let expect = if addr(peer).is_ipv6() { 443 } else { 403 };
        assert_eq!(a.code(), Some(expect), "{peer}");
    }
    let a = h.authed(
        Method::CHANNEL_BIND,
        &[
            Attribute::ChannelNumber(0x4000),
            Attribute::XorPeerAddress(addr("127.0.0.1:5000")),
        ],
        &creds,
    );
    assert_eq!(a.code(), Some(403));
    // One bad peer among good ones installs nothing.
    let a = h.authed(
        Method::CREATE_PERMISSION,
        &[
            Attribute::XorPeerAddress(addr(PEER)),
            Attribute::XorPeerAddress(addr("127.0.0.1:1")),
        ],
        &creds,
    );
    assert_eq!(a.code(), Some(403));
    let relay = h.bound().into_iter().next().unwrap();
    assert!(h.peer_sends(relay, PEER, b"x").is_none());
}

#[test]
fn quotas() {
    let mut h = Harness::new(|t| {
        t.user_quota = 1;
        t.total_quota = 2;
    });
    let creds = h.creds();
    h.allocate(&creds);
    let c2 = "198.51.100.30:1000";
    let alice2 = h.creds_for(c2, USER, PASS);
    let a = h.authed_from(
        c2,
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(protocol::UDP)],
        &alice2,
    );
    assert_eq!(a.code(), Some(486));
    let bob = h.creds_for(c2, "bob", "builder");
    let a = h.authed_from(
        c2,
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(protocol::UDP)],
        &bob,
    );
    assert_eq!(a.class(), Class::Success);
    let c3 = "198.51.100.31:1000";
    let bob2 = h.creds_for(c3, "bob", "builder");
    let a = h.authed_from(
        c3,
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(protocol::UDP)],
        &bob2,
    );
    assert_eq!(a.code(), Some(486));
    // Deleting frees the quota.
    h.authed(Method::REFRESH, &[Attribute::Lifetime(0)], &creds);
    let alice3 = h.creds_for(c3, USER, PASS);
    let a = h.authed_from(
        c3,
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(protocol::UDP)],
        &alice3,
    );
    assert_eq!(a.class(), Class::Success);
    // Server-wide: two allocations exist, the limit is two.
    let c4 = "198.51.100.32:1000";
    let mut h2 = Harness::new(|t| t.total_quota = 1);
    let creds = h2.creds();
    h2.allocate(&creds);
    let bob = h2.creds_for(c4, "bob", "builder");
    let a = h2.authed_from(
        c4,
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(protocol::UDP)],
        &bob,
    );
    assert_eq!(a.code(), Some(508));
}

/// `user_quota` counts the time-limited credentials of one user id
/// together, whatever their expiries: minting more credentials does not
/// buy more allocations. Another user id, and a Wire-format credential
/// (no user id: counted by its username), have quotas of their own; an
/// allocation that ends gives its user id's place back.
#[test]
fn rest_credentials_of_one_user_id_share_its_quota() {
    let mut h = Harness::new(|t| t.user_quota = 2);
    h.server.set_secrets(Secrets::new([secret(0, "s")]));
    let udp = [Attribute::RequestedTransport(protocol::UDP)];
    let expiry = UNIX_EPOCH_OF_TESTS + 3600;
    let allocate = |h: &mut Harness, client: &str, name: String, format: Format| {
        let creds = h.ephemeral_creds(client, name, format, "s");
        (h.authed_from(client, Method::ALLOCATE, &udp, &creds), creds)
    };
    let (first, first_creds) = allocate(
        &mut h,
        "198.51.100.1:1",
        format!("{expiry}:alice"),
        Format::Rest,
    );
    assert_eq!(first.class(), Class::Success, "{:?}", first.code());
    let (second, _) = allocate(
        &mut h,
        "198.51.100.2:2",
        format!("{}:alice", expiry + 100),
        Format::Rest,
    );
    assert_eq!(second.class(), Class::Success, "{:?}", second.code());
    let (third, _) = allocate(
        &mut h,
        "198.51.100.3:3",
        format!("{}:alice", expiry + 200),
        Format::Rest,
    );
    assert_eq!(
        third.code(),
        Some(486),
        "a third credential of user id alice is over her quota of 2"
    );
    let (bob, _) = allocate(
        &mut h,
        "198.51.100.4:4",
        format!("{expiry}:bob"),
        Format::Rest,
    );
    assert_eq!(bob.class(), Class::Success, "bob: {:?}", bob.code());
    for (i, client) in ["198.51.100.5:5", "198.51.100.6:6"].into_iter().enumerate() {
        let (wire, _) = allocate(
            &mut h,
            client,
            format!("d={expiry}.v=1.k=0.t=s.r=random{i}"),
            Format::Wire { key_index: 0 },
        );
        assert_eq!(
            wire.class(),
            Class::Success,
            "Wire credential {i} (counted by its own username): {:?}",
            wire.code()
        );
    }
    // Alice's first allocation ends: a credential of yet another expiry
    // takes its place.
    let deleted = h.authed_from(
        "198.51.100.1:1",
        Method::REFRESH,
        &[Attribute::Lifetime(0)],
        &first_creds,
    );
    assert_eq!(deleted.class(), Class::Success, "{:?}", deleted.code());
    let (again, _) = allocate(
        &mut h,
        "198.51.100.7:7",
        format!("{}:alice", expiry + 300),
        Format::Rest,
    );
    assert_eq!(again.class(), Class::Success, "{:?}", again.code());
}

#[test]
fn no_free_port_is_508_and_returns_the_quota() {
    let mut h = Harness::new(|t| t.user_quota = 1);
    h.relays.0.lock().unwrap().refuse_all = true;
    let creds = h.creds();
    let a = h.authed(
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(protocol::UDP)],
        &creds,
    );
    assert_eq!(a.code(), Some(508));
    h.relays.0.lock().unwrap().refuse_all = false;
    h.allocate(&creds);
}

/// What a client could exploit by guessing comes from the shard's secure
/// generator, not from the seed of its ports: two shards with the same
/// seed pick the same relay port but hand out different tokens.
#[test]
fn reservation_tokens_come_from_the_secret_seed() {
    let token_and_port = |secret_seed: [u8; 32]| {
        let shard = Shard {
            secret_seed,
            ..Shard::default()
        };
        let mut h = Harness::with_shard(shard, |_| {});
        let creds = h.creds();
        let attrs = [
            Attribute::RequestedTransport(protocol::UDP),
            Attribute::EvenPort(true),
        ];
        let a = h.authed(Method::ALLOCATE, &attrs, &creds);
        let token = match a.attr(AttrType::RESERVATION_TOKEN) {
            Some(Attribute::ReservationToken(t)) => *t,
            other => panic!("no token: {other:?}"),
        };
        (token, a.relayed()[0])
    };
    let (token_a, port_a) = token_and_port([1; 32]);
    let (token_b, port_b) = token_and_port([2; 32]);
    assert_eq!(port_a, port_b, "ports follow the ordinary seed");
    assert_ne!(token_a, token_b, "tokens follow the secret one");
    assert_eq!(token_and_port([1; 32]).0, token_a, "deterministic in tests");
}

#[test]
fn even_port_reserves_the_next_port_for_a_token() {
    let mut h = Harness::new(|_| {});
    let creds = h.creds();
    let a = h.authed(
        Method::ALLOCATE,
        &[
            Attribute::RequestedTransport(protocol::UDP),
            Attribute::EvenPort(true),
        ],
        &creds,
    );
    assert_eq!(a.class(), Class::Success);
    let rtp = a.relayed()[0];
    assert_eq!(rtp.port() % 2, 0);
    let token = match a.attr(AttrType::RESERVATION_TOKEN) {
        Some(Attribute::ReservationToken(t)) => *t,
        other => panic!("no token: {other:?}"),
    };
    // The RTCP allocation comes from another client port.
    let c2 = "198.51.100.20:40001";
    let creds2 = h.creds_for(c2, USER, PASS);
    let a = h.authed_from(
        c2,
        Method::ALLOCATE,
        &[
            Attribute::RequestedTransport(protocol::UDP),
            Attribute::ReservationToken(&token),
        ],
        &creds2,
    );
    assert_eq!(a.relayed(), vec![SocketAddr::new(rtp.ip(), rtp.port() + 1)]);
    // A token works once.
    let c3 = "198.51.100.20:40002";
    let creds3 = h.creds_for(c3, USER, PASS);
    let a = h.authed_from(
        c3,
        Method::ALLOCATE,
        &[
            Attribute::RequestedTransport(protocol::UDP),
            Attribute::ReservationToken(&token),
        ],
        &creds3,
    );
    assert_eq!(a.code(), Some(508));
}

#[test]
fn dual_stack_and_families() {
    let mut h = Harness::new(|_| {});
    let creds = h.creds();
    let a = h.authed(
        Method::ALLOCATE,
        &[
            Attribute::RequestedTransport(protocol::UDP),
            Attribute::AdditionalAddressFamily(AddressFamily::V6),
        ],
        &creds,
    );
    let relays = a.relayed();
    assert_eq!(relays.len(), 2);
    assert!(relays[0].is_ipv4() && relays[1].is_ipv6());
    // Peers of either family can now be permitted.
    let a = h.authed(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(addr("[2606:4700::1111]:53"))],
        &creds,
    );
    assert_eq!(a.class(), Class::Success);

    let mut v4only = Harness::new(|t| t.relay_ips = vec!["192.0.2.10".parse().unwrap()]);
    let creds = v4only.creds();
    let a = v4only.authed(
        Method::ALLOCATE,
        &[
            Attribute::RequestedTransport(protocol::UDP),
            Attribute::AdditionalAddressFamily(AddressFamily::V6),
        ],
        &creds,
    );
    assert_eq!(a.class(), Class::Success);
    assert_eq!(a.relayed().len(), 1);
    match a.attr(AttrType::ADDRESS_ERROR_CODE) {
        Some(Attribute::AddressErrorCode { family, error }) => {
            assert_eq!((family, error.code), (AddressFamily::V6, 440));
        }
        other => panic!("expected ADDRESS-ERROR-CODE: {other:?}"),
    }
    let a = v4only.authed(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(addr("[2606:4700::1111]:53"))],
        &creds,
    );
    assert_eq!(a.code(), Some(443), "IPv6 peer on an IPv4-only allocation");
    let c2 = "198.51.100.40:1";
    let creds2 = v4only.creds_for(c2, USER, PASS);
    let a = v4only.authed_from(
        c2,
        Method::ALLOCATE,
        &[
            Attribute::RequestedTransport(protocol::UDP),
            Attribute::RequestedAddressFamily(AddressFamily::V6),
        ],
        &creds2,
    );
    assert_eq!(a.code(), Some(440));
}

#[test]
fn sha256_and_userhash_when_the_request_leaves_room_for_them() {
    let mut h = Harness::new(|_| {});
    // A request large enough that the SHA-256 challenge fits 3x its size.
    let tid = h.tid();
    let pad = "x".repeat(16);
    let req = h.request(
        Method::ALLOCATE,
        tid,
        &[
            Attribute::RequestedTransport(protocol::UDP),
            Attribute::Software(&pad),
        ],
        None,
    );
    let challenge = h.send(&req).unwrap();
    assert_eq!(challenge.code(), Some(401));
    let nonce = challenge.nonce();
    assert!(nonce.starts_with("obMatJos2"), "{nonce}");
    let offered = match challenge.attr(AttrType::PASSWORD_ALGORITHMS) {
        Some(Attribute::PasswordAlgorithms(list)) => {
            list.iter().map(|a| a.algorithm).collect::<Vec<_>>()
        }
        other => panic!("no PASSWORD-ALGORITHMS: {other:?}"),
    };
    assert_eq!(
        offered,
        vec![password_algorithm::SHA256, password_algorithm::MD5]
    );
    let list = [
        PasswordAlgorithm {
            algorithm: password_algorithm::SHA256,
            params: &[],
        },
        PasswordAlgorithm {
            algorithm: password_algorithm::MD5,
            params: &[],
        },
    ];
    let sha_key = Sha256Key::new(&long_term_key_sha256(USER, REALM, PASS));
    let build = |h: &mut Harness, use_hash: bool, echoed: &[PasswordAlgorithm<'_>]| {
        let tid = h.tid();
        let mut buf = vec![0u8; 512];
        let mut msg = MessageBuilder::new(
            &mut buf,
            MessageType::new(Method::ALLOCATE, Class::Request),
            tid,
        )
        .unwrap();
        msg.add(&Attribute::RequestedTransport(protocol::UDP))
            .unwrap();
        if use_hash {
            msg.add(&Attribute::Userhash(&userhash(USER, REALM)))
                .unwrap();
        } else {
            msg.add(&Attribute::Username(USER)).unwrap();
        }
        msg.add(&Attribute::Realm(REALM)).unwrap();
        msg.add(&Attribute::Nonce(&nonce)).unwrap();
        msg.add(&Attribute::PasswordAlgorithms(PasswordAlgorithms::Values(
            echoed,
        )))
        .unwrap();
        msg.add(&Attribute::PasswordAlgorithm(list[0])).unwrap();
        msg.add_message_integrity_sha256(&sha_key).unwrap();
        let len = msg.finish();
        buf.truncate(len);
        buf
    };
    // Bid-down protection: the echoed list must be ours.
    let req = build(&mut h, false, &list[1..]);
    assert_eq!(h.send(&req).unwrap().code(), Some(400));
    let req = build(&mut h, false, &list);
    let a = h.send(&req).unwrap();
    assert_eq!(a.class(), Class::Success);
    a.message()
        .verify_integrity_sha256(&sha_key)
        .expect("answer signed with SHA-256");
    assert!(
        !a.message().has_integrity(),
        "signed the way the request was"
    );
    // USERHASH instead of USERNAME, from another client.
    let md5 = h.creds();
    h.authed(Method::REFRESH, &[Attribute::Lifetime(0)], &md5);
    let req = build(&mut h, true, &list);
    let a = h.send(&req).unwrap();
    assert_eq!(a.class(), Class::Success);
}

#[test]
fn unauthenticated_answers_never_exceed_three_times_the_request() {
    let mut h = Harness::new(|_| {});
    for (method, attrs) in [
        (Method::REFRESH, vec![]),
        (
            Method::ALLOCATE,
            vec![Attribute::RequestedTransport(protocol::UDP)],
        ),
        (
            Method::CREATE_PERMISSION,
            vec![Attribute::XorPeerAddress(addr(PEER))],
        ),
        (Method::CHANNEL_BIND, vec![Attribute::ChannelNumber(0x4000)]),
    ] {
        for fingerprint in [false, true] {
            let tid = h.tid();
            let mut buf = vec![0u8; 256];
            let mut msg =
                MessageBuilder::new(&mut buf, MessageType::new(method, Class::Request), tid)
                    .unwrap();
            for a in &attrs {
                msg.add(a).unwrap();
            }
            if fingerprint {
                msg.add_fingerprint().unwrap();
            }
            let len = msg.finish();
            let client = format!(
                "198.51.100.{}:{}",
                100 + h.next_tid,
                1000 + u16::from(h.next_tid)
            );
            if let Some(a) = h.send_from(&client, &buf[..len]) {
                assert!(
                    a.bytes.len() <= 3 * len,
                    "{method:?}: {} bytes for {len}",
                    a.bytes.len()
                );
            }
        }
    }
    // A bare 20-byte Refresh cannot be answered within the budget at all.
    let tid = h.tid();
    let bare = h.request(Method::REFRESH, tid, &[], None);
    assert!(h.send_from("198.51.100.200:1", &bare).is_none());
    assert!(h.server.stats().drops.get(DropReason::RateLimited) >= 1);
}

#[test]
fn challenges_are_rate_limited_per_source() {
    let mut h = Harness::new(|t| t.challenges_per_second = 5);
    let tid = h.tid();
    let req = h.request(
        Method::ALLOCATE,
        tid,
        &[Attribute::RequestedTransport(protocol::UDP)],
        None,
    );
    let answered = (0..20).filter(|_| h.send(&req).is_some()).count();
    assert_eq!(answered, 5);
    // Another source is not affected; the first recovers a second later.
    assert!(h.send_from("198.51.100.77:1", &req).is_some());
    h.advance(1);
    assert!(h.send(&req).is_some());
}

/// IPv6 clients share the budget of their /64: 20 addresses of one /64
/// get 5 challenges between them, another /64 has its own.
#[test]
fn ipv6_challenges_are_rate_limited_per_prefix() {
    let mut h = Harness::new(|t| t.challenges_per_second = 5);
    let tid = h.tid();
    let req = h.request(
        Method::ALLOCATE,
        tid,
        &[Attribute::RequestedTransport(protocol::UDP)],
        None,
    );
    let answered = (0..20)
        .filter(|i| {
            let client = format!("[2001:db8:1:2::{:x}]:4000", i + 1);
            h.send_from(&client, &req).is_some()
        })
        .count();
    assert_eq!(answered, 5, "one /64, one budget");
    assert!(h.send_from("[2001:db8:1:3::1]:4000", &req).is_some());
}

/// Requests naming unknown users wait for a lookup, at most 4 in flight
/// per source. Beyond that a datagram client is left to retransmit, but a
/// stream client (which never does) is answered 500 at once rather than
/// left hanging.
#[test]
fn stream_clients_get_500_when_their_request_cannot_be_held() {
    for (transport, answered) in [(Transport::Udp, 0), (Transport::Tcp, 6)] {
        let mut h = Harness::new(|_| {});
        h.transport = transport;
        let nonce = h.creds().nonce;
        let codes: Vec<Option<u16>> = (0..10)
            .map(|i| {
                let creds = Creds {
                    user: leak(format!("ghost{i}")),
                    pass: "junk",
                    nonce: nonce.clone(),
                };
                let tid = h.tid();
                let attrs = [Attribute::RequestedTransport(protocol::UDP)];
                let request = h.request(Method::ALLOCATE, tid, &attrs, Some(&creds));
                h.send(&request)
                    .map(|a| a.code().expect("an error response"))
            })
            .collect();
        assert_eq!(
            codes.iter().filter(|c| c.is_none()).count(),
            10 - answered,
            "{transport:?}: held (4) or silently dropped"
        );
        assert!(codes.iter().flatten().all(|&c| c == 500), "{codes:?}");
    }
}

#[test]
fn a_flood_of_unauthenticated_allocates_keeps_no_state() {
    let mut h = Harness::new(|_| {});
    let tid = h.tid();
    let req = h.request(
        Method::ALLOCATE,
        tid,
        &[Attribute::RequestedTransport(protocol::UDP)],
        None,
    );
    for i in 0..20_000u32 {
        let client = SocketAddr::new(
            IpAddr::from(std::net::Ipv4Addr::from(
                (0xC633_6400u32 | (i & 0xFF)) ^ (i << 8),
            )),
            1024 + (i % 60000) as u16,
        );
        let mut out = [0u8; 512];
        let packet = Packet {
            transport: Transport::Udp,
            local: addr(SERVER),
            remote: client,
            data: &req,
        };
        h.server.handle_client_packet(h.now, packet, &mut out);
        h.drain(&mut out);
    }
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.poll_event(), None);
    assert!(h.bound().is_empty());
}

#[test]
fn dual_stack_with_even_port_as_uclient_sends_it() {
    let mut h = Harness::new(|_| {});
    let creds = h.creds();
    let a = h.authed(
        Method::ALLOCATE,
        &[
            Attribute::RequestedTransport(protocol::UDP),
            Attribute::Lifetime(800),
            Attribute::EvenPort(false),
            Attribute::AdditionalAddressFamily(AddressFamily::V6),
        ],
        &creds,
    );
    assert_eq!(a.class(), Class::Success);
    assert_eq!(a.relayed().len(), 2, "{:?}", a.relayed());
}

#[test]
fn every_forbidden_peer_is_refused_on_every_path() {
    let mut h = Harness::new(|_| {});
    let creds = h.creds();
    let a = h.authed(
        Method::ALLOCATE,
        &[
            Attribute::RequestedTransport(protocol::UDP),
            Attribute::AdditionalAddressFamily(AddressFamily::V6),
        ],
        &creds,
    );
    assert_eq!(
        a.relayed().len(),
        2,
        "dual-stack, so IPv6 forms reach the policy"
    );
    for (i, peer) in FORBIDDEN_PEERS.iter().enumerate() {
        let peer = addr(peer);
        let a = h.authed(
            Method::CREATE_PERMISSION,
            &[Attribute::XorPeerAddress(peer)],
            &creds,
        );
        assert_eq!(a.code(), Some(403), "CreatePermission to {peer}");
        let channel = 0x4000 + u16::try_from(i).unwrap();
        let a = h.authed(
            Method::CHANNEL_BIND,
            &[
                Attribute::ChannelNumber(channel),
                Attribute::XorPeerAddress(peer),
            ],
            &creds,
        );
        assert_eq!(a.code(), Some(403), "ChannelBind to {peer}");
        assert!(h.send_indication(peer, b"x").is_none(), "Send to {peer}");
    }
    assert_eq!(h.server.stats().relayed.to_peer_packets, 0);
}

#[test]
fn send_rechecks_the_policy_for_the_servers_own_sockets() {
    // A permission for the server's IP is legitimate (other clients' relays
    // live there), but its listener port must stay unreachable.
    let mut h = Harness::new(|t| {
        t.peer_policy = PeerPolicy::new(
            vec!["192.0.2.0/24".parse().unwrap()],
            vec![],
            vec![addr(SERVER)],
            vec![],
        );
    });
    let creds = h.creds();
    let relay = h.allocate(&creds);
    let a = h.authed(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(addr(SERVER))],
        &creds,
    );
    assert_eq!(
        a.class(),
        Class::Success,
        "IP-level permission to the server's IP"
    );
    let a = h.authed(
        Method::CHANNEL_BIND,
        &[
            Attribute::ChannelNumber(0x4000),
            Attribute::XorPeerAddress(addr(SERVER)),
        ],
        &creds,
    );
    assert_eq!(a.code(), Some(403), "but not a channel to its listener");
    let send = |h: &mut Harness, to: &str| h.send_indication(addr(to), b"x");
    assert!(
        send(&mut h, SERVER).is_none(),
        "Send to the listener itself"
    );
    let other_relay = "192.0.2.10:50123";
    let t = send(&mut h, other_relay).expect("another port of the server's IP (a relay) is fine");
    assert_eq!(t.transmit.source(), relay);
}

#[test]
fn even_port_reservation_skips_pairs_whose_odd_port_is_taken() {
    let mut h = Harness::new(|_| {});
    {
        // Another program holds the odd port of every other pair.
        let mut sockets = h.relays.0.lock().unwrap();
        for port in (50001..50999u16).step_by(4) {
            sockets
                .bound
                .insert(SocketAddr::new("192.0.2.10".parse().unwrap(), port));
        }
    }
    let taken_before = h.bound().len();
    let creds = h.creds();
    let a = h.authed(
        Method::ALLOCATE,
        &[
            Attribute::RequestedTransport(protocol::UDP),
            Attribute::EvenPort(true),
        ],
        &creds,
    );
    assert_eq!(a.class(), Class::Success, "{:?}", a.code());
    let rtp = a.relayed()[0];
    assert_eq!(rtp.port() % 4, 2, "a pair whose odd port was free");
    assert!(a.attr(AttrType::RESERVATION_TOKEN).is_some());
    // Exactly the pair is held: failed attempts released their even ports.
    assert_eq!(h.bound().len(), taken_before + 2);
}

#[test]
fn coturn_clients_draft_code_point_for_additional_address_family() {
    // turnutils_uclient -Z sends ADDITIONAL-ADDRESS-FAMILY as 0x8032.
    let mut h = Harness::new(|_| {});
    let creds = h.creds();
    let draft = Attribute::Unknown {
        attr_type: AttrType(0x8032),
        value: &[0x02, 0, 0, 0],
    };
    let a = h.authed(
        Method::ALLOCATE,
        &[
            Attribute::RequestedTransport(protocol::UDP),
            Attribute::EvenPort(false),
            draft,
        ],
        &creds,
    );
    assert_eq!(a.relayed().len(), 2, "{:?}", a.relayed());
    let bad = Attribute::Unknown {
        attr_type: AttrType(0x8032),
        value: &[0x03, 0, 0, 0],
    };
    let c2 = "198.51.100.41:1";
    let creds2 = h.creds_for(c2, USER, PASS);
    let a = h.authed_from(
        c2,
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(protocol::UDP), bad],
        &creds2,
    );
    assert_eq!(a.code(), Some(400));
}

/// TURN over TCP: the allocation belongs to the connection's 5-tuple,
/// relayed data goes back on the stream (ChannelData padded to 4 bytes), and
/// the allocation ends with the connection.
#[test]
fn turn_over_tcp_lives_and_dies_with_its_connection() {
    let mut h = Harness::new(|_| {});
    h.transport = Transport::Tcp;
    let creds = h.creds();
    let relay = h.allocate(&creds);
    let five_tuple = FiveTuple {
        transport: Transport::Tcp,
        client: addr(CLIENT),
        server: addr(SERVER),
    };
    assert!(h.server.has_allocation(&five_tuple));
    let udp = FiveTuple {
        transport: Transport::Udp,
        ..five_tuple
    };
    assert!(
        !h.server.has_allocation(&udp),
        "the 5-tuple includes the transport"
    );
    let bind = h.authed(
        Method::CHANNEL_BIND,
        &[
            Attribute::ChannelNumber(0x4000),
            Attribute::XorPeerAddress(addr(PEER)),
        ],
        &creds,
    );
    assert_eq!(bind.class(), Class::Success);

    let data = h
        .peer_sends(relay, PEER, b"hello")
        .expect("relayed to the client");
    assert_eq!(data.transmit.transport(), Transport::Tcp);
    assert_eq!(data.transmit.destination(), addr(CLIENT));
    assert_eq!(
        data.bytes,
        [
            0x40, 0x00, 0x00, 0x05, b'h', b'e', b'l', b'l', b'o', 0, 0, 0
        ]
    );

    h.server.connection_closed(h.now, &five_tuple);
    assert_eq!(h.server.allocation_count(), 0);
    assert!(h.bound().is_empty(), "the relay socket is released");
    assert!(h.peer_sends(relay, PEER, b"late").is_none());
}

#[test]
fn rest_credentials_from_every_current_secret_and_no_other() {
    let mut h = Harness::new(|_| {});
    h.server
        .set_secrets(Secrets::new([secret(0, "old"), secret(1, "new")]));
    let udp = [Attribute::RequestedTransport(protocol::UDP)];
    let expiry = UNIX_EPOCH_OF_TESTS + 3600;
    let clients = [
        "198.51.100.1:1",
        "198.51.100.2:2",
        "198.51.100.3:3",
        "198.51.100.4:4",
    ];
    for (client, name, s) in [
        (clients[0], format!("{expiry}:alice"), "old"),
        (clients[1], format!("{expiry}:alice"), "new"),
        (clients[2], format!("{expiry}"), "new"),
        (clients[3], format!("alice:{expiry}"), "new"),
    ] {
        let creds = h.ephemeral_creds(client, name.clone(), Format::Rest, s);
        let a = h.authed_from(client, Method::ALLOCATE, &udp, &creds);
        assert_eq!(
            a.class(),
            Class::Success,
            "{name} with secret {s}: {:?}",
            a.code()
        );
        verify_md5(&a, creds.user, creds.pass);
    }
    // Never a database lookup for an ephemeral username.
    assert_eq!(h.poll_event(), None);

    let client = "198.51.100.9:9";
    let wrong = h.ephemeral_creds(client, format!("{expiry}:alice"), Format::Rest, "guess");
    assert_eq!(
        h.authed_from(client, Method::ALLOCATE, &udp, &wrong).code(),
        Some(401)
    );
    let expired = h.ephemeral_creds(
        client,
        format!("{}:alice", UNIX_EPOCH_OF_TESTS - 1),
        Format::Rest,
        "new",
    );
    assert_eq!(
        h.authed_from(client, Method::ALLOCATE, &udp, &expired)
            .code(),
        Some(401)
    );

    // Rotation: once "old" is withdrawn, credentials minted with it fail.
    h.server.set_secrets(Secrets::new([secret(1, "new")]));
    let old = h.ephemeral_creds(client, format!("{expiry}:bob"), Format::Rest, "old");
    assert_eq!(
        h.authed_from(client, Method::ALLOCATE, &udp, &old).code(),
        Some(401)
    );
    let new = h.ephemeral_creds(client, format!("{expiry}:bob"), Format::Rest, "new");
    assert_eq!(
        h.authed_from(client, Method::ALLOCATE, &udp, &new).class(),
        Class::Success
    );
    let failures = h.server.stats().auth_failures;
    assert_eq!(failures.get(AuthFailure::ExpiredCredential), 1);
    assert_eq!(failures.total(), 3);
}

#[test]
fn wire_credentials_need_the_secret_of_their_key_index() {
    let mut h = Harness::new(|_| {});
    h.server
        .set_secrets(Secrets::new([secret(0, "zero"), secret(1, "one")]));
    let udp = [Attribute::RequestedTransport(protocol::UDP)];
    let expiry = UNIX_EPOCH_OF_TESTS + 3600;
    let wire = |k: u32| format!("d={expiry}.v=1.k={k}.t=s.r=q9WfGx2");
    let client = "198.51.100.1:1";
    let right = h.ephemeral_creds(client, wire(1), Format::Wire { key_index: 1 }, "one");
    let a = h.authed_from(client, Method::ALLOCATE, &udp, &right);
    assert_eq!(a.class(), Class::Success, "{:?}", a.code());

    let client = "198.51.100.2:2";
    // Signed with another index's secret, or naming an index that has none.
    let crossed = h.ephemeral_creds(client, wire(1), Format::Wire { key_index: 1 }, "zero");
    assert_eq!(
        h.authed_from(client, Method::ALLOCATE, &udp, &crossed)
            .code(),
        Some(401)
    );
    let missing = h.ephemeral_creds(client, wire(5), Format::Wire { key_index: 5 }, "one");
    assert_eq!(
        h.authed_from(client, Method::ALLOCATE, &udp, &missing)
            .code(),
        Some(401)
    );
    let old = format!("d={}.v=1.k=0.t=s.r=x", UNIX_EPOCH_OF_TESTS - 10);
    let expired = h.ephemeral_creds(client, old, Format::Wire { key_index: 0 }, "zero");
    assert_eq!(
        h.authed_from(client, Method::ALLOCATE, &udp, &expired)
            .code(),
        Some(401)
    );
}

#[test]
fn an_expired_credential_keeps_its_call_unless_expiry_is_strict() {
    let udp = [Attribute::RequestedTransport(protocol::UDP)];
    let expiry = UNIX_EPOCH_OF_TESTS + 100;

    // Default: expiry is checked when the allocation is made.
    let mut h = Harness::new(|_| {});
    h.server.set_secrets(Secrets::new([secret(0, "s")]));
    let creds = h.ephemeral_creds(CLIENT, format!("{expiry}:u"), Format::Rest, "s");
    let a = h.authed(Method::ALLOCATE, &udp, &creds);
    assert_eq!(a.lifetime(), Some(600));
    h.advance(200);
    let refreshed = h.authed(Method::REFRESH, &[], &creds);
    assert_eq!(refreshed.class(), Class::Success);
    assert_eq!(refreshed.lifetime(), Some(600));

    // Strict: the allocation ends with the credential.
    let mut h = Harness::new(|t| t.strict_expiry = true);
    h.server.set_secrets(Secrets::new([secret(0, "s")]));
    let creds = h.ephemeral_creds(CLIENT, format!("{expiry}:u"), Format::Rest, "s");
    let a = h.authed(Method::ALLOCATE, &udp, &creds);
    assert_eq!(a.class(), Class::Success);
    assert_eq!(a.lifetime(), Some(100));
    h.advance(40);
    let refreshed = h.authed(Method::REFRESH, &[Attribute::Lifetime(3600)], &creds);
    assert_eq!(refreshed.lifetime(), Some(60));
    h.advance(59);
    assert_eq!(h.server.allocation_count(), 1);
    h.advance(2);
    assert_eq!(
        h.server.allocation_count(),
        0,
        "expired with its credential"
    );
    let late = h.authed(Method::REFRESH, &[], &creds);
    assert_eq!(late.code(), Some(401));
}
