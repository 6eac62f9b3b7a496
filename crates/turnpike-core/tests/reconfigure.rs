//! `Server::reconfigure`: a running shard takes a new configuration
//! (`Config::reconfigured`) without losing what it holds: allocations keep
//! relaying, new requests follow the new limits and peer policy, and
//! permissions and channels to peers the new policy refuses are withdrawn
//! with their fast-path routes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use turnpike_codec::attr::protocol;
use turnpike_codec::{Attribute, Class, Method};
use turnpike_core::{Event, NonceKey, PeerPolicy, nonce::NonceCheck};

use common::*;

const OTHER_PEER: &str = "93.184.216.35:7000";

/// The configuration a reload would give: `tweak` applied to a fresh
/// configuration (as the shell builds one from the new settings), then
/// reconfigured from the running one.
fn reloaded(
    h: &Harness,
    tweak: impl FnOnce(&mut turnpike_core::TurnConfig),
) -> turnpike_core::Config {
    let new = turn_config(h.now, tweak);
    h.server.config().reconfigured(&new)
}

#[test]
fn a_new_peer_policy_and_quota_apply_and_the_allocation_stays() {
    let mut h = Harness::new(|t| t.channel_routes = true);
    let creds = h.creds();
    let relay = h.allocate(&creds);
    let a = h.authed(
        Method::CHANNEL_BIND,
        &[
            Attribute::ChannelNumber(0x4000),
            Attribute::XorPeerAddress(addr(PEER)),
        ],
        &creds,
    );
    assert_eq!(a.class(), Class::Success);
    let a = h.authed(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(addr(OTHER_PEER))],
        &creds,
    );
    assert_eq!(a.class(), Class::Success);
    while h.poll_event().is_some() {}
    assert!(h.send(&channel_data(0x4000, b"before")).is_some());

    // PEER is denied now, and a user may hold one allocation.
    let next = reloaded(&h, |t| {
        t.peer_policy = PeerPolicy::new(
            vec![],
            vec!["93.184.216.34/32".parse().unwrap()],
            vec![addr(SERVER)],
            vec![],
        );
        t.user_quota = 1;
        t.default_lifetime = Duration::from_secs(120);
    });
    assert!(h.server.reconfigure(h.now, Arc::new(next)));
    assert_eq!(h.server.config().turn.as_ref().unwrap().user_quota, 1);

    // The channel to PEER is withdrawn, route and all; nothing relays to
    // or from it any more, and no new permission for it is granted.
    let withdrawn: Vec<Event> = std::iter::from_fn(|| h.poll_event()).collect();
    assert!(
        matches!(withdrawn.as_slice(), [Event::UnrouteChannel { route }] if route.peer.0 == addr(PEER)),
        "{withdrawn:?}"
    );
    assert!(h.send(&channel_data(0x4000, b"after")).is_none());
    assert!(h.peer_sends(relay, PEER, b"in").is_none());
    let a = h.authed(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(addr(PEER))],
        &creds,
    );
    assert_eq!(a.code(), Some(403));

    // The allocation itself carries on with its other peer, and can be
    // refreshed.
    assert!(h.peer_sends(relay, OTHER_PEER, b"still").is_some());
    assert!(h.send_indication(addr(OTHER_PEER), b"out").is_some());
    let a = h.authed(Method::REFRESH, &[Attribute::Lifetime(600)], &creds);
    assert_eq!(a.class(), Class::Success);
    assert_eq!(h.server.allocation_count(), 1);

    // The quota counts the allocation made before: a second is 486, and
    // new allocations get the new default lifetime.
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
    assert_eq!((a.class(), a.lifetime()), (Class::Success, Some(120)));
}

/// What a running shard cannot change is refused whole: the realm, the
/// relay ports, TURN itself, and a configuration not made from the running
/// one (its quota counts would start again from zero).
#[test]
fn what_a_running_shard_cannot_change_is_refused() {
    let mut h = Harness::new(|_| {});
    let creds = h.creds();
    h.allocate(&creds);
    let running = Arc::new(h.server.config().clone());
    for (what, config) in [
        ("fresh quota counts", turn_config(h.now, |_| {})),
        (
            "another realm",
            h.server
                .config()
                .reconfigured(&turn_config(h.now, |_| {}))
                .tap(|c| c.turn.as_mut().unwrap().realm = "other".into()),
        ),
        (
            "other relay ports",
            h.server
                .config()
                .reconfigured(&turn_config(h.now, |_| {}))
                .tap(|c| c.turn.as_mut().unwrap().min_port = 40000),
        ),
        (
            "TURN off",
            turnpike_core::Config {
                turn: None,
                ..h.server.config().clone()
            },
        ),
    ] {
        assert!(!h.server.reconfigure(h.now, Arc::new(config)), "{what}");
        assert_eq!(h.server.config().turn.as_ref().unwrap().realm, REALM);
    }
    // The running configuration itself, or one made from it, is taken.
    assert!(h.server.reconfigure(h.now, Arc::clone(&running)));
    let a = h.authed(Method::REFRESH, &[Attribute::Lifetime(600)], &creds);
    assert_eq!(a.class(), Class::Success);
}

/// A new nonce lifetime applies to the nonces minted from now on; those
/// minted before keep theirs (same secret and epoch).
#[test]
fn a_new_nonce_lifetime_keeps_the_key() {
    let h = Harness::new(|_| {});
    let key = h.server.config().turn.as_ref().unwrap().nonces.clone();
    let shorter = key.with_lifetime(Duration::from_secs(60));
    assert_eq!(shorter.lifetime(), Duration::from_secs(60));
    let client = addr(CLIENT);
    let old = key.mint(h.now, client, false);
    let new = shorter.mint(h.now, client, false);
    let later = h.now + Duration::from_secs(120);
    assert!(matches!(
        shorter.check(old.as_str(), later, client),
        NonceCheck::Valid { .. }
    ));
    assert_eq!(
        shorter.check(new.as_str(), later, client),
        NonceCheck::Stale
    );
    // Another secret is another key.
    let other = NonceKey::new(&[1; 32], h.now, Duration::from_secs(600));
    assert_eq!(
        other.check(old.as_str(), h.now, client),
        NonceCheck::Invalid
    );
    let next = reloaded(&h, |t| {
        t.nonces = NonceKey::new(&[1; 32], h.now, Duration::from_secs(60));
    });
    let nonces = &next.turn.as_ref().unwrap().nonces;
    assert_eq!(nonces.lifetime(), Duration::from_secs(60));
    assert!(matches!(
        nonces.check(old.as_str(), h.now, client),
        NonceCheck::Valid { .. }
    ));
}

/// `value.tap(f)`: `f` applied to `value`, for building variants inline.
trait Tap: Sized {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}

impl<T> Tap for T {}
