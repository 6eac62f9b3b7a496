//! Channel routes for a relay fast path (`TurnConfig::channel_routes`),
//! with a simulated clock: which events the core announces, and that a
//! route's `until` is exactly when the core itself stops relaying, so a fast
//! path that hands packets back to the core past `until` never relays one
//! the core would have dropped.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use turnpike_codec::{Attribute, Class, Method};
use turnpike_core::{ChannelRoute, Event, FiveTuple, Transport};

use common::*;

const CHANNEL: u16 = 0x4000;

fn routed_harness() -> Harness {
    Harness::new(|t| t.channel_routes = true)
}

fn events(h: &mut Harness) -> Vec<Event> {
    std::iter::from_fn(|| h.poll_event()).collect()
}

fn bind(h: &mut Harness, creds: &Creds, channel: u16, peer: &str) {
    let a = h.authed(
        Method::CHANNEL_BIND,
        &[
            Attribute::ChannelNumber(channel),
            Attribute::XorPeerAddress(addr(peer)),
        ],
        creds,
    );
    assert_eq!(a.class(), Class::Success, "ChannelBind: {:?}", a.code());
}

fn route(relay: SocketAddr, channel: u16, peer: &str) -> ChannelRoute {
    ChannelRoute {
        client: FiveTuple {
            transport: Transport::Udp,
            client: addr(CLIENT),
            server: addr(SERVER),
        },
        channel,
        relay: turnpike_core::RelayedAddress(relay),
        peer: turnpike_core::PeerSocket(addr(peer)),
        dont_fragment: false,
    }
}

/// Whether the core relays ChannelData on `channel` to the peer, and the
/// peer's datagrams to the client as ChannelData (what a route carries; past
/// it, a peer may still reach the client in Data indications).
fn relays_both_ways(h: &mut Harness, relay: SocketAddr, channel: u16, peer: &str) -> bool {
    let out = h.send(&channel_data(channel, b"ping")).is_some();
    let back = h
        .peer_sends(relay, peer, b"pong")
        .is_some_and(|a| a.bytes[..2] == channel.to_be_bytes());
    assert_eq!(out, back, "both directions lapse together");
    out
}

/// The relaying `until` of the only `RouteChannel` among `events`.
fn only_route(events: &[Event], expected: ChannelRoute) -> Instant {
    match events {
        [
            Event::RouteChannel {
                route,
                until,
                max_bps: 0,
            },
        ] => {
            assert_eq!(*route, expected);
            *until
        }
        other => panic!("expected one RouteChannel, got {other:?}"),
    }
}

/// Advances the clock to just before and to `until`: the core relays until
/// then and not from then on.
fn check_until(h: &mut Harness, relay: SocketAddr, peer: &str, until: Instant) {
    let before = until - Duration::from_millis(1);
    assert!(before >= h.now, "until lies ahead");
    h.now = before;
    assert!(
        relays_both_ways(h, relay, CHANNEL, peer),
        "relays before until"
    );
    h.now = until;
    assert!(
        !relays_both_ways(h, relay, CHANNEL, peer),
        "relays no more at until"
    );
}

#[test]
fn no_events_unless_asked_for() {
    let mut h = Harness::new(|_| {});
    let creds = h.creds();
    let relay = h.allocate(&creds);
    bind(&mut h, &creds, CHANNEL, PEER);
    assert!(relays_both_ways(&mut h, relay, CHANNEL, PEER));
    assert_eq!(events(&mut h), vec![]);
}

#[test]
fn channel_bind_routes_until_the_permission_lapses() {
    let mut h = routed_harness();
    let creds = h.creds();
    let relay = h.allocate(&creds);
    assert_eq!(events(&mut h), vec![], "no route before a channel");
    let t0 = h.now;
    bind(&mut h, &creds, CHANNEL, PEER);
    let until = only_route(&events(&mut h), route(relay, CHANNEL, PEER));
    // Channel 600 s, permission 300 s, allocation 600 s: the permission first.
    assert_eq!(until, t0 + Duration::from_secs(300));
    check_until(&mut h, relay, PEER, until);
}

#[test]
fn create_permission_and_refresh_move_until() {
    let mut h = routed_harness();
    let creds = h.creds();
    let relay = h.allocate(&creds);
    let t0 = h.now;
    bind(&mut h, &creds, CHANNEL, PEER);
    events(&mut h);

    // At 200 s the permission is refreshed: until moves to 500 s.
    h.advance(200);
    let a = h.authed(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(addr(PEER))],
        &creds,
    );
    assert_eq!(a.class(), Class::Success);
    let until = only_route(&events(&mut h), route(relay, CHANNEL, PEER));
    assert_eq!(until, t0 + Duration::from_secs(500));

    // A permission for another peer announces the same route again
    // (harmless) and does not move it.
    let a = h.authed(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(addr("93.184.216.35:1"))],
        &creds,
    );
    assert_eq!(a.class(), Class::Success);
    assert_eq!(
        only_route(&events(&mut h), route(relay, CHANNEL, PEER)),
        until
    );

    // At 450 s: permission refreshed to 750 s, but the channel (600 s) and
    // the allocation (600 s) lapse first, and a Refresh of the allocation
    // (to 1050 s) leaves the channel's 600 s.
    h.advance(250);
    h.authed(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(addr(PEER))],
        &creds,
    );
    assert_eq!(
        only_route(&events(&mut h), route(relay, CHANNEL, PEER)),
        t0 + Duration::from_secs(600)
    );
    let a = h.authed(Method::REFRESH, &[Attribute::Lifetime(600)], &creds);
    assert_eq!(a.class(), Class::Success);
    let until = only_route(&events(&mut h), route(relay, CHANNEL, PEER));
    assert_eq!(until, t0 + Duration::from_secs(600));
    check_until(&mut h, relay, PEER, until);

    // A lapsed channel is announced no more, and rebinding it routes again.
    let a = h.authed(Method::REFRESH, &[Attribute::Lifetime(600)], &creds);
    assert_eq!(a.class(), Class::Success);
    assert_eq!(events(&mut h), vec![], "lapsed channels have no route");
    bind(&mut h, &creds, CHANNEL, PEER);
    let until = only_route(&events(&mut h), route(relay, CHANNEL, PEER));
    assert_eq!(until, h.now + Duration::from_secs(300));
}

#[test]
fn the_allocation_lapsing_first_bounds_until() {
    let mut h = routed_harness();
    let creds = h.creds();
    let relay = h.allocate(&creds);
    let t0 = h.now;
    // At 400 s the channel (to 1000 s) and permission (to 700 s) outlive the
    // allocation (600 s).
    h.advance(400);
    bind(&mut h, &creds, CHANNEL, PEER);
    let until = only_route(&events(&mut h), route(relay, CHANNEL, PEER));
    assert_eq!(until, t0 + Duration::from_secs(600));
}

#[test]
fn deleting_the_allocation_unroutes_its_channels() {
    let mut h = routed_harness();
    let creds = h.creds();
    let relay = h.allocate(&creds);
    bind(&mut h, &creds, CHANNEL, PEER);
    bind(&mut h, &creds, CHANNEL + 1, "93.184.216.35:7000");
    assert_eq!(events(&mut h).len(), 2);
    let a = h.authed(Method::REFRESH, &[Attribute::Lifetime(0)], &creds);
    assert_eq!(a.class(), Class::Success);
    assert_eq!(
        events(&mut h),
        vec![
            Event::UnrouteChannel {
                route: route(relay, CHANNEL, PEER)
            },
            Event::UnrouteChannel {
                route: route(relay, CHANNEL + 1, "93.184.216.35:7000")
            },
        ]
    );

    // Expiry too, at 600 s.
    let creds = h.creds();
    let relay = h.allocate(&creds);
    bind(&mut h, &creds, CHANNEL, PEER);
    events(&mut h);
    unrouted_after(&mut h, relay, 600);
}

/// Advances the clock `secs` seconds, a second at a time: no event until the
/// last second, then the route of `CHANNEL` to `PEER` is withdrawn.
fn unrouted_after(h: &mut Harness, relay: SocketAddr, secs: u64) {
    for _ in 1..secs {
        h.advance(1);
        assert_eq!(events(h), vec![], "at {:?}", h.now);
    }
    h.advance(1);
    assert_eq!(
        events(h),
        vec![Event::UnrouteChannel {
            route: route(relay, CHANNEL, PEER)
        }]
    );
}

#[test]
fn a_lapsed_channel_is_unrouted_after_its_cool_down() {
    let mut h = routed_harness();
    let creds = h.creds();
    let relay = h.allocate(&creds);
    let a = h.authed(Method::REFRESH, &[Attribute::Lifetime(3600)], &creds);
    assert_eq!(a.class(), Class::Success);
    bind(&mut h, &creds, CHANNEL, PEER);
    events(&mut h);
    // The binding lapses at 600 s; its number and peer stay reserved for
    // 300 s more (RFC 8656 §12), then the route goes.
    unrouted_after(&mut h, relay, 900);
}

#[test]
fn only_udp_clients_get_routes_and_dont_fragment_is_carried() {
    for transport in [Transport::Tcp, Transport::Tls, Transport::Dtls] {
        let mut h = routed_harness();
        h.transport = transport;
        let creds = h.creds();
        h.allocate(&creds);
        bind(&mut h, &creds, CHANNEL, PEER);
        assert_eq!(events(&mut h), vec![], "{transport:?}");
    }

    let mut h = routed_harness();
    let creds = h.creds();
    let a = h.authed(
        Method::ALLOCATE,
        &[
            Attribute::RequestedTransport(turnpike_codec::attr::protocol::UDP),
            Attribute::DontFragment,
        ],
        &creds,
    );
    assert_eq!(a.class(), Class::Success);
    let relay = a.relayed()[0];
    bind(&mut h, &creds, CHANNEL, PEER);
    let mut expected = route(relay, CHANNEL, PEER);
    expected.dont_fragment = true;
    only_route(&events(&mut h), expected);
}

#[test]
fn ipv6_peers_route_through_the_ipv6_relay() {
    let mut h = routed_harness();
    let creds = h.creds();
    let a = h.authed(
        Method::ALLOCATE,
        &[
            Attribute::RequestedTransport(turnpike_codec::attr::protocol::UDP),
            Attribute::RequestedAddressFamily(turnpike_codec::AddressFamily::V6),
        ],
        &creds,
    );
    assert_eq!(a.class(), Class::Success);
    let relay = a.relayed()[0];
    assert!(relay.is_ipv6());
    let peer = "[2606:2800:220:1::1]:6000";
    bind(&mut h, &creds, CHANNEL, peer);
    only_route(&events(&mut h), route(relay, CHANNEL, peer));
}

/// A binding whose cool-down ends just as the client binds its number to
/// another peer (before the sweep drops it) is unrouted all the same:
/// otherwise the rebinding overwrote the client-side route and left the old
/// peer's route in the fast path's map for good, and a client cycling
/// channels filled the map for everyone.
#[test]
fn a_binding_dropped_by_a_rebind_is_unrouted() {
    let mut h = routed_harness();
    let creds = h.creds();
    let relay = h.allocate(&creds);
    bind(&mut h, &creds, CHANNEL, PEER);
    let first = route(relay, CHANNEL, PEER);
    only_route(&events(&mut h), first);
    // Keep the allocation alive, then let the channel expire and cool down
    // without a sweep running in between.
    let refreshed = h.authed(Method::REFRESH, &[Attribute::Lifetime(3600)], &creds);
    assert_eq!(refreshed.class(), Class::Success);
    events(&mut h);
    h.now += Duration::from_secs(600 + 300 + 1);
    let creds = h.creds();
    let other = "93.184.216.35:7000";
    bind(&mut h, &creds, CHANNEL, other);
    let events = events(&mut h);
    assert!(
        events.contains(&Event::UnrouteChannel { route: first }),
        "the cooled-down binding's route is withdrawn: {events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::RouteChannel { route, .. } if route.peer.0 == addr(other))),
        "{events:?}"
    );
}
