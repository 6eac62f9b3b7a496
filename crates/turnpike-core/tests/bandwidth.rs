//! Bandwidth caps with a simulated clock: `max_bps` per allocation and
//! `user_max_bps` per user (each direction on its own, one second of
//! burst, drops counted as `bandwidth_cap`), `bps_capacity` server-wide
//! (508, or 300 to an alternate), a reload reaching existing allocations,
//! the fast-path routes carrying `max_bps`, and withdrawn while a per-user
//! cap applies.

mod common;

use std::sync::Arc;
use std::time::Duration;

use turnpike_codec::attr::protocol;
use turnpike_codec::{AttrType, Attribute, Class, Method};
use turnpike_core::ephemeral::Format;
use turnpike_core::{Draining, DropReason, Event, Secrets};

use common::*;

const CHANNEL: u16 = 0x4000;
/// Payload of every datagram sent.
const SIZE: usize = 1000;
/// The cap of most tests, bytes per second.
const CAP: u64 = 10_000;
/// How long the senders send.
const SECONDS: u64 = 3;
/// One datagram every `TICK`: 40,000 B/s, four times [`CAP`].
const TICK: Duration = Duration::from_millis(25);

fn bandwidth_drops(h: &Harness) -> u64 {
    h.server.stats().drops.get(DropReason::BandwidthCap)
}

/// What a cap of `cap` may let through in `seconds`: its rate and one
/// second of burst.
fn allowance(cap: u64, seconds: u64) -> usize {
    usize::try_from(cap * (seconds + 1)).unwrap()
}

/// Allocates for `creds` from `client`, binds [`CHANNEL`] to [`PEER`] and
/// returns the relayed address.
fn allocate_with_channel(h: &mut Harness, client: &str, creds: &Creds) -> std::net::SocketAddr {
    let udp = [Attribute::RequestedTransport(protocol::UDP)];
    let a = h.authed_from(client, Method::ALLOCATE, &udp, creds);
    assert_eq!(a.class(), Class::Success, "{:?}", a.code());
    let bind = [
        Attribute::ChannelNumber(CHANNEL),
        Attribute::XorPeerAddress(addr(PEER)),
    ];
    let b = h.authed_from(client, Method::CHANNEL_BIND, &bind, creds);
    assert_eq!(b.class(), Class::Success, "{:?}", b.code());
    a.relayed()[0]
}

/// A harness configured by `tweak` with an allocation of the default
/// client whose [`CHANNEL`] is bound to [`PEER`]; its relayed address.
fn with_channel(
    tweak: impl FnOnce(&mut turnpike_core::TurnConfig),
) -> (Harness, std::net::SocketAddr) {
    let mut h = Harness::new(tweak);
    let creds = h.creds();
    let relay = allocate_with_channel(&mut h, CLIENT, &creds);
    (h, relay)
}

/// Sends for [`SECONDS`] at four times [`CAP`], one datagram per tick from
/// each of `send`; returns the payload bytes each got relayed.
fn flood<const N: usize>(
    h: &mut Harness,
    mut send: [&mut dyn FnMut(&mut Harness) -> bool; N],
) -> [usize; N] {
    let mut relayed = [0; N];
    let ticks = SECONDS * 1000 / u64::try_from(TICK.as_millis()).unwrap();
    for _ in 0..ticks {
        for (sender, total) in send.iter_mut().zip(&mut relayed) {
            if sender(h) {
                *total += SIZE;
            }
        }
        h.advance_by(TICK);
    }
    relayed
}

#[test]
fn a_capped_allocation_relays_its_rate_and_burst_each_way_and_drops_the_rest() {
    let (mut h, relay) = with_channel(|t| t.max_bps = CAP);
    let payload = [7u8; SIZE];
    let [to_peer, to_client, indications] = flood(
        &mut h,
        [
            &mut |h| h.send(&channel_data(CHANNEL, &payload)).is_some(),
            &mut |h| h.peer_sends(relay, PEER, &payload).is_some(),
            // Send indications share the client → peer bucket with
            // ChannelData: together they stay under the cap.
            &mut |h| h.send_indication(addr(PEER), &payload).is_some(),
        ],
    );
    let sent = SECONDS as usize * 40_000;
    let allowed = allowance(CAP, SECONDS);
    assert!(
        to_peer + indications <= allowed,
        "client → peer: {to_peer} + {indications} > {allowed}"
    );
    assert!(
        to_client <= allowed,
        "peer → client: {to_client} > {allowed}"
    );
    // The cap is a cap, not a stop: it relays its rate.
    let floor = usize::try_from(CAP * SECONDS).unwrap();
    assert!(to_peer + indications >= floor, "{to_peer} + {indications}");
    assert!(to_client >= floor, "{to_client}");
    let dropped = (2 * sent - to_peer - indications) + (sent - to_client);
    assert_eq!(bandwidth_drops(&h), (dropped / SIZE) as u64);
    assert_eq!(h.server.stats().drops.get(DropReason::NoPermission), 0);
}

#[test]
fn without_a_cap_nothing_is_dropped() {
    let (mut h, relay) = with_channel(|_| {});
    let payload = [7u8; SIZE];
    let [to_peer, to_client] = flood(
        &mut h,
        [
            &mut |h| h.send(&channel_data(CHANNEL, &payload)).is_some(),
            &mut |h| h.peer_sends(relay, PEER, &payload).is_some(),
        ],
    );
    assert_eq!((to_peer, to_client), (120_000, 120_000));
    assert_eq!(bandwidth_drops(&h), 0);
}

/// Two allocations of user id alice, made with REST credentials of
/// different expiries (on the same shard here; the bucket is shared
/// through the quota registry, as across shards), share her cap; bob's
/// allocation has a cap of its own.
#[test]
fn a_users_cap_is_shared_by_the_allocations_of_one_user_id() {
    let mut h = Harness::new(|t| t.user_max_bps = CAP);
    h.server.set_secrets(Secrets::new([secret(0, "s")]));
    let expiry = UNIX_EPOCH_OF_TESTS + 3600;
    let clients = ["198.51.100.1:1", "198.51.100.2:2", "198.51.100.3:3"];
    let names = [
        format!("{expiry}:alice"),
        format!("{}:alice", expiry + 100),
        format!("{expiry}:bob"),
    ];
    for (client, name) in clients.iter().zip(names) {
        let creds = h.ephemeral_creds(client, name, Format::Rest, "s");
        allocate_with_channel(&mut h, client, &creds);
    }
    let payload = channel_data(CHANNEL, &[1u8; SIZE]);
    let [alice1, alice2, bob] = clients.map(|client| {
        let payload = payload.clone();
        move |h: &mut Harness| h.send_from(client, &payload).is_some()
    });
    let (mut alice1, mut alice2, mut bob) = (alice1, alice2, bob);
    let [a1, a2, b] = flood(&mut h, [&mut alice1, &mut alice2, &mut bob]);
    let allowed = allowance(CAP, SECONDS);
    let floor = usize::try_from(CAP * SECONDS).unwrap();
    assert!(a1 + a2 <= allowed, "alice: {a1} + {a2} > {allowed}");
    assert!(a1 + a2 >= floor, "alice: {a1} + {a2}");
    assert!(a1 > 0 && a2 > 0, "both of alice's allocations relay");
    assert!((floor..=allowed).contains(&b), "bob: {b}");
}

#[test]
fn a_reload_reaches_the_buckets_of_existing_allocations() {
    let (mut h, relay) = with_channel(|_| {});
    let payload = [7u8; SIZE];
    let next = h
        .server
        .config()
        .reconfigured(&turn_config(h.now, |t| t.max_bps = CAP));
    assert!(h.server.reconfigure(h.now, Arc::new(next)));
    let [to_client] = flood(
        &mut h,
        [&mut |h| h.peer_sends(relay, PEER, &payload).is_some()],
    );
    assert!(to_client <= allowance(CAP, SECONDS), "{to_client}");
    assert!(bandwidth_drops(&h) > 0);
    // And lifting it lets everything through again.
    let next = h.server.config().reconfigured(&turn_config(h.now, |_| {}));
    assert!(h.server.reconfigure(h.now, Arc::new(next)));
    let before = bandwidth_drops(&h);
    let [to_client] = flood(
        &mut h,
        [&mut |h| h.peer_sends(relay, PEER, &payload).is_some()],
    );
    assert_eq!(to_client, 120_000);
    assert_eq!(bandwidth_drops(&h), before);
}

fn alternate_server(answer: &Answer) -> Option<std::net::SocketAddr> {
    match answer.attr(AttrType::ALTERNATE_SERVER) {
        Some(Attribute::AlternateServer(a)) => Some(a),
        _ => None,
    }
}

#[test]
fn at_its_bandwidth_capacity_a_server_refuses_new_allocations_with_508_or_300() {
    let mut h = Harness::new(|t| t.bps_capacity = 1_000_000);
    let quotas = Arc::clone(&h.server.config().turn.as_ref().unwrap().quotas);
    let udp = [Attribute::RequestedTransport(protocol::UDP)];
    let allocate = |h: &mut Harness, client: &str| {
        let creds = h.creds_for(client, USER, PASS);
        h.authed_from(client, Method::ALLOCATE, &udp, &creds)
    };
    quotas.set_relayed_rate(999_999);
    let below = allocate(&mut h, "198.51.100.1:1");
    assert_eq!(below.class(), Class::Success, "{:?}", below.code());

    quotas.set_relayed_rate(1_000_000);
    let full = allocate(&mut h, "198.51.100.2:2");
    assert_eq!(full.code(), Some(508));
    assert_eq!(alternate_server(&full), None);
    verify_md5(&full, USER, PASS);

    let elsewhere = addr("192.0.2.77:3478");
    h.server.set_alternates(Draining::new(vec![elsewhere]));
    let redirected = allocate(&mut h, "198.51.100.3:3");
    assert_eq!(redirected.code(), Some(300));
    assert_eq!(alternate_server(&redirected), Some(elsewhere));
    verify_md5(&redirected, USER, PASS);

    // The allocation made below capacity keeps relaying; new ones are
    // taken again once the rate falls.
    quotas.set_relayed_rate(10);
    let again = allocate(&mut h, "198.51.100.4:4");
    assert_eq!(again.class(), Class::Success, "{:?}", again.code());
    assert_eq!(h.server.allocation_count(), 2);
}

/// A fast path holds `max_bps` itself: the routes carry it, and a reload
/// that changes it announces them again with the new one. The per-user
/// cap it cannot hold: while one applies a channel gets no route, a
/// reload that sets one withdraws the routes there are, and one that lifts
/// it puts them back.
#[test]
fn routes_carry_max_bps_and_none_is_announced_under_a_user_cap() {
    let routes = |h: &mut Harness| {
        std::iter::from_fn(|| h.poll_event())
            .filter_map(|e| match e {
                Event::RouteChannel { route, max_bps, .. } => {
                    Some(("route", route.channel, max_bps))
                }
                Event::UnrouteChannel { route } => Some(("unroute", route.channel, 0)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let reload = |h: &mut Harness, max_bps: u64, user_max_bps: u64| {
        let next = h.server.config().reconfigured(&turn_config(h.now, |t| {
            t.channel_routes = true;
            t.max_bps = max_bps;
            t.user_max_bps = user_max_bps;
        }));
        assert!(h.server.reconfigure(h.now, Arc::new(next)));
    };
    let mut h = Harness::new(|t| {
        t.channel_routes = true;
        t.user_max_bps = CAP;
    });
    let creds = h.creds();
    allocate_with_channel(&mut h, CLIENT, &creds);
    assert_eq!(routes(&mut h), []);

    let mut h = Harness::new(|t| {
        t.channel_routes = true;
        t.max_bps = CAP;
    });
    let creds = h.creds();
    allocate_with_channel(&mut h, CLIENT, &creds);
    assert_eq!(routes(&mut h), [("route", CHANNEL, CAP)]);
    reload(&mut h, 2 * CAP, 0);
    assert_eq!(routes(&mut h), [("route", CHANNEL, 2 * CAP)]);
    reload(&mut h, 2 * CAP, CAP);
    assert_eq!(routes(&mut h), [("unroute", CHANNEL, 0)]);
    // Refreshing the channel does not bring its route back, nor does a
    // new max_bps.
    let bind = [
        Attribute::ChannelNumber(CHANNEL),
        Attribute::XorPeerAddress(addr(PEER)),
    ];
    assert_eq!(
        h.authed(Method::CHANNEL_BIND, &bind, &creds).class(),
        Class::Success
    );
    reload(&mut h, CAP, CAP);
    assert_eq!(routes(&mut h), []);
    reload(&mut h, 0, 0);
    assert_eq!(routes(&mut h), [("route", CHANNEL, 0)]);
}
