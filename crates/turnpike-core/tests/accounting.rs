//! What the core tells operators: accounting events with their end
//! reasons and traffic, the labelled counters, and the operator's kicks
//! (ending allocations, stopping a user).

mod common;

use std::time::Duration;

use turnpike_codec::attr::protocol;
use turnpike_codec::{Attribute, Class, Method};
use turnpike_core::Event;
use turnpike_core::stats::{AuthFailure, EndReason, ErrorCode, RequestMethod, Traffic};

use common::*;

/// The accounting events polled so far, as (kind, serial, reason).
fn accounting(h: &Harness) -> Vec<(&'static str, u64, Option<EndReason>)> {
    h.accounting
        .iter()
        .map(|e| match e {
            Event::AllocationCreated(r) => ("created", r.serial, None),
            Event::AllocationEnded { record, reason, .. } => {
                ("ended", record.serial, Some(*reason))
            }
            other => panic!("not an accounting event: {other:?}"),
        })
        .collect()
}

fn permit(h: &mut Harness, creds: &Creds, peer: &str) {
    let a = h.authed(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(addr(peer))],
        creds,
    );
    assert_eq!(a.class(), Class::Success);
}

#[test]
fn an_allocation_is_accounted_from_creation_to_refresh_zero_with_its_traffic() {
    let mut h = Harness::new(|_| {});
    let creds = h.creds();
    let relay = h.allocate(&creds);
    let Some(Event::AllocationCreated(record)) = h.accounting.first().cloned() else {
        panic!("no creation event: {:?}", h.accounting);
    };
    assert_eq!(&*record.user, USER);
    assert_eq!(record.client.client, addr(CLIENT));
    assert_eq!(record.relays[0], Some(relay));

    permit(&mut h, &creds, PEER);
    for _ in 0..3 {
        h.send_indication(addr(PEER), &[7; 100]).expect("relayed");
    }
    for _ in 0..2 {
        h.peer_sends(relay, PEER, &[9; 40]).expect("relayed");
    }
    h.advance(5);
    let a = h.authed(Method::REFRESH, &[Attribute::Lifetime(0)], &creds);
    assert_eq!(a.class(), Class::Success);

    let Some(Event::AllocationEnded {
        record: ended,
        reason,
        lasted,
        traffic,
    }) = h.accounting.last().cloned()
    else {
        panic!("no end event: {:?}", h.accounting);
    };
    assert_eq!(ended.serial, record.serial);
    assert_eq!(reason, EndReason::Refresh);
    assert_eq!(lasted, Duration::from_secs(5));
    assert_eq!(
        traffic,
        Traffic {
            to_peer_packets: 3,
            to_peer_bytes: 300,
            to_client_packets: 2,
            to_client_bytes: 80,
        }
    );
    let stats = h.server.stats();
    assert_eq!(stats.allocations_created, 1);
    assert_eq!(stats.allocations_ended.get(EndReason::Refresh), 1);
    assert_eq!(stats.allocation_duration.count(), 1);
    assert_eq!(stats.allocation_duration.sum_ms, 5_000);
    assert_eq!(stats.relayed.to_peer_bytes, 300);
}

#[test]
fn expiry_and_closed_connections_are_their_own_reasons() {
    let mut h = Harness::new(|t| t.default_lifetime = Duration::from_secs(60));
    let creds = h.creds();
    h.allocate(&creds);
    h.advance(61);
    h.server.handle_timeout(h.now);
    h.drain_owed();
    assert_eq!(
        accounting(&h).last().map(|e| e.2),
        Some(Some(EndReason::Expired))
    );

    let mut h = Harness::new(|_| {});
    h.transport = turnpike_core::Transport::Tcp;
    let creds = h.creds();
    h.allocate(&creds);
    let five_tuple = turnpike_core::FiveTuple {
        transport: turnpike_core::Transport::Tcp,
        client: addr(CLIENT),
        server: addr(SERVER),
    };
    h.server.connection_closed(h.now, &five_tuple);
    h.drain_owed();
    assert_eq!(
        accounting(&h).last().map(|e| e.2),
        Some(Some(EndReason::ConnectionClosed))
    );
}

#[test]
fn serials_are_unique_per_shard_and_carry_the_shard() {
    let shard = turnpike_core::Shard {
        index: 3,
        count: 4,
        ..turnpike_core::Shard::default()
    };
    let mut h = Harness::with_shard(shard, |_| {});
    let creds = h.creds();
    h.allocate(&creds);
    let a = h.authed(Method::REFRESH, &[Attribute::Lifetime(0)], &creds);
    assert_eq!(a.class(), Class::Success);
    let creds = h.creds();
    h.allocate(&creds);
    let serials: Vec<u64> = accounting(&h)
        .iter()
        .filter(|e| e.0 == "created")
        .map(|e| e.1)
        .collect();
    assert_eq!(serials.len(), 2);
    assert_ne!(serials[0], serials[1], "a reused slot gets a new serial");
    assert!(serials.iter().all(|s| s >> 48 == 3), "{serials:x?}");
}

#[test]
fn kicking_a_user_ends_its_allocations_and_refuses_new_ones_until_the_stop_ends() {
    let mut h = Harness::new(|_| {});
    let creds = h.creds();
    let relay = h.allocate(&creds);
    let ended = h
        .server
        .end_allocations(h.now, EndReason::Kicked, |a| a.username() == USER);
    assert_eq!(ended, 1);
    h.server.stop_user(USER, h.now + Duration::from_secs(30));
    h.drain_owed();
    assert_eq!(h.server.allocation_count(), 0);
    assert!(!h.bound().contains(&relay), "its relay is released");
    assert_eq!(
        accounting(&h).last().map(|e| e.2),
        Some(Some(EndReason::Kicked))
    );

    let creds = h.creds();
    let a = h.authed(
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(protocol::UDP)],
        &creds,
    );
    assert_eq!(a.code(), Some(403), "a stopped user gets no allocation");
    let stats = h.server.stats();
    assert_eq!(stats.auth_failures.get(AuthFailure::Stopped), 1);
    assert_eq!(
        stats
            .errors(RequestMethod::Allocate)
            .get(ErrorCode::Forbidden),
        1
    );

    h.advance(31);
    let creds = h.creds();
    h.allocate(&creds);
    assert_eq!(h.server.allocation_count(), 1, "the stop is over");
}

#[test]
fn a_stopped_user_id_covers_every_time_limited_credential_minted_for_it() {
    let separator = ':';
    let names: Vec<&str> =
        turnpike_core::ephemeral::user_names("1800000000:bob", separator).collect();
    assert_eq!(names, ["1800000000:bob", "bob"]);
    let names: Vec<&str> = turnpike_core::ephemeral::user_names("bob", separator).collect();
    assert_eq!(names, ["bob"]);
    // Not a time-limited name: the part before the separator is no expiry.
    let names: Vec<&str> = turnpike_core::ephemeral::user_names("x:bob", separator).collect();
    assert_eq!(names, ["x:bob"]);
}

#[test]
fn requests_and_errors_are_counted_by_method_and_code() {
    let mut h = Harness::new(|_| {});
    let creds = h.creds(); // one unauthenticated Allocate: 401
    h.allocate(&creds);
    // A second Allocate on the same 5-tuple: 437.
    let a = h.authed(
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(protocol::UDP)],
        &creds,
    );
    assert_eq!(a.code(), Some(437));
    // A forbidden peer: 403, and counted as refused by the policy.
    let a = h.authed(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(addr(FORBIDDEN_PEERS[0]))],
        &creds,
    );
    assert_eq!(a.code(), Some(403));

    let stats = h.server.stats();
    assert_eq!(stats.requests.get(RequestMethod::Allocate), 3);
    assert_eq!(stats.requests.get(RequestMethod::CreatePermission), 1);
    let allocate = stats.errors(RequestMethod::Allocate);
    assert_eq!(allocate.get(ErrorCode::Unauthenticated), 1);
    assert_eq!(allocate.get(ErrorCode::AllocationMismatch), 1);
    assert_eq!(allocate.total(), 2);
    assert_eq!(
        stats
            .errors(RequestMethod::CreatePermission)
            .get(ErrorCode::Forbidden),
        1
    );
    assert_eq!(stats.peers_refused, 1);
    assert_eq!(stats.challenges_sent, 1);
    assert_eq!(stats.auth_successes, 3);
}

#[test]
fn a_stale_nonce_is_counted_as_such() {
    let mut h = Harness::new(|_| {});
    let mut creds = h.creds();
    creds.nonce = "not-a-nonce-of-ours".into();
    let a = h.authed(
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(protocol::UDP)],
        &creds,
    );
    assert_eq!(a.code(), Some(438));
    let stats = h.server.stats();
    assert_eq!(stats.auth_failures.get(AuthFailure::StaleNonce), 1);
    assert_eq!(
        stats
            .errors(RequestMethod::Allocate)
            .get(ErrorCode::StaleNonce),
        1
    );
}
