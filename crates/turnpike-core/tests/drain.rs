//! Draining (`Server::set_draining`) with a simulated clock: a new Allocate
//! is refused after authentication (signed 300 with ALTERNATE-SERVER, or
//! 508 "Draining"), while everything an existing allocation does goes on:
//! the retransmitted Allocate, Refresh, CreatePermission, ChannelBind and
//! its fast-path route, data both ways, RFC 6062 Connect.

mod common;

use std::net::SocketAddr;

use turnpike_codec::attr::protocol;
use turnpike_codec::{AttrType, Attribute, Class, Method};
use turnpike_core::{Draining, Event, Transport};

use common::*;

const OTHER_CLIENT: &str = "198.51.100.21:40000";
const CHANNEL: u16 = 0x4000;

fn alternates(list: &[&str]) -> Draining {
    Draining::new(list.iter().map(|a| addr(a)).collect::<Vec<SocketAddr>>())
}

fn error_reason(answer: &Answer) -> String {
    match answer.attr(AttrType::ERROR_CODE) {
        Some(Attribute::ErrorCode(e)) => e.reason.to_owned(),
        other => panic!("no ERROR-CODE: {other:?}"),
    }
}

fn alternate_server(answer: &Answer) -> Option<SocketAddr> {
    match answer.attr(AttrType::ALTERNATE_SERVER) {
        Some(Attribute::AlternateServer(a)) => Some(a),
        None => None,
        other => panic!("{other:?}"),
    }
}

/// A new Allocate from `client` (its own nonce first).
fn new_allocate(h: &mut Harness, client: &str) -> Answer {
    let creds = h.creds_for(client, USER, PASS);
    h.authed_from(
        client,
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(protocol::UDP)],
        &creds,
    )
}

#[test]
fn an_existing_allocation_keeps_working_while_new_ones_get_a_signed_508() {
    let mut h = Harness::new(|t| t.channel_routes = true);
    let creds = h.creds();
    let allocate = h.allocate_request(&creds);
    let first = h.send(&allocate).expect("allocated");
    let relay = first.relayed()[0];
    h.server.set_draining(Some(Draining::default()));
    assert!(h.server.draining().is_some());

    // The client that asks anew is refused, signed, with "Draining".
    let refused = new_allocate(&mut h, OTHER_CLIENT);
    assert_eq!(refused.class(), Class::Error);
    assert_eq!(refused.code(), Some(508));
    assert_eq!(error_reason(&refused), "Draining");
    assert_eq!(alternate_server(&refused), None);
    verify_md5(&refused, USER, PASS);
    assert_eq!(h.server.allocation_count(), 1);
    assert!(
        h.accounting
            .iter()
            .all(|e| !matches!(e, Event::AllocationEnded { .. })),
        "nothing ended"
    );

    // The allocation's own client: its retransmitted Allocate is answered
    // again, and everything else works.
    let again = h.send(&allocate).expect("answered");
    assert_eq!(again.class(), Class::Success);
    assert_eq!(again.relayed(), vec![relay]);
    let refresh = h.authed(Method::REFRESH, &[Attribute::Lifetime(600)], &creds);
    assert_eq!(refresh.class(), Class::Success, "{:?}", refresh.code());
    let permission = h.authed(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(addr(PEER))],
        &creds,
    );
    assert_eq!(permission.class(), Class::Success);
    let out = h
        .send_indication(addr(PEER), b"to the peer")
        .expect("relayed");
    assert_eq!(out.bytes, b"to the peer");
    let bound = h.authed(
        Method::CHANNEL_BIND,
        &[
            Attribute::ChannelNumber(CHANNEL),
            Attribute::XorPeerAddress(addr(PEER)),
        ],
        &creds,
    );
    assert_eq!(bound.class(), Class::Success);
    assert!(
        std::iter::from_fn(|| h.poll_event())
            .any(|e| matches!(e, Event::RouteChannel { route, .. } if route.channel == CHANNEL)),
        "the fast path gets the channel's route"
    );
    let out = h.send(&channel_data(CHANNEL, b"ping")).expect("relayed");
    assert_eq!(out.bytes, b"ping");
    let back = h.peer_sends(relay, PEER, b"pong").expect("to the client");
    assert_eq!(back.bytes, channel_data(CHANNEL, b"pong"));

    // Deleting it works too, and then the client is refused like anyone.
    let delete = h.authed(Method::REFRESH, &[Attribute::Lifetime(0)], &creds);
    assert_eq!(delete.class(), Class::Success);
    assert_eq!(h.server.allocation_count(), 0);
    let after = h.authed(
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(protocol::UDP)],
        &creds,
    );
    assert_eq!(after.code(), Some(508));

    // Undrained: allocations are made again.
    h.server.set_draining(None);
    assert!(h.server.draining().is_none());
    let welcome = new_allocate(&mut h, OTHER_CLIENT);
    assert_eq!(welcome.class(), Class::Success, "{:?}", welcome.code());
}

#[test]
fn an_unauthenticated_allocate_is_challenged_first() {
    let mut h = Harness::new(|_| {});
    h.server
        .set_draining(Some(alternates(&["192.0.2.77:3478"])));
    let tid = h.tid();
    let bare = h.request(
        Method::ALLOCATE,
        tid,
        &[Attribute::RequestedTransport(protocol::UDP)],
        None,
    );
    let answer = h.send(&bare).expect("a challenge");
    assert_eq!(answer.code(), Some(401));
    assert_eq!(
        alternate_server(&answer),
        None,
        "no unauthenticated redirect"
    );
    // With a wrong password: challenged again, never redirected.
    let creds = h.creds_for(CLIENT, USER, "not the password");
    let wrong = h.authed(
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(protocol::UDP)],
        &creds,
    );
    assert_eq!(wrong.code(), Some(401));
    assert_eq!(alternate_server(&wrong), None);
}

#[test]
fn alternates_of_the_clients_family_are_named_in_turn_in_a_signed_300() {
    let mut h = Harness::new(|_| {});
    h.server.set_draining(Some(alternates(&[
        "203.0.113.1:3478",
        "[2001:db8::99]:3478",
        "203.0.113.2:3478",
    ])));
    let mut named = Vec::new();
    for i in 0..4 {
        let client = format!("198.51.100.{}:4000{i}", 30 + i);
        let answer = new_allocate(&mut h, leak(client));
        assert_eq!(answer.code(), Some(300));
        assert_eq!(error_reason(&answer), "Try Alternate");
        verify_md5(&answer, USER, PASS);
        named.push(
            alternate_server(&answer)
                .expect("ALTERNATE-SERVER")
                .to_string(),
        );
    }
    assert_eq!(
        named,
        [
            "203.0.113.1:3478",
            "203.0.113.2:3478",
            "203.0.113.1:3478",
            "203.0.113.2:3478"
        ]
    );
    assert_eq!(h.server.allocation_count(), 0);

    // Over TCP as well; over TLS the 508 (a redirect by address cannot keep
    // the certificate's name).
    h.transport = Transport::Tcp;
    let tcp = new_allocate(&mut h, "198.51.100.40:40000");
    assert_eq!(tcp.code(), Some(300));
    h.transport = Transport::Tls;
    let tls = new_allocate(&mut h, "198.51.100.41:40000");
    assert_eq!(tls.code(), Some(508));
    assert_eq!(alternate_server(&tls), None);
}

#[test]
fn without_an_alternate_of_its_family_a_client_gets_508() {
    let mut h = Harness::new(|_| {});
    h.server
        .set_draining(Some(alternates(&["[2001:db8::99]:3478"])));
    let answer = new_allocate(&mut h, OTHER_CLIENT);
    assert_eq!(answer.code(), Some(508));
}

#[test]
fn a_tcp_allocation_keeps_connecting_to_peers() {
    let mut h = Harness::new(|_| {});
    h.transport = Transport::Tcp;
    let creds = h.creds();
    let a = h.authed(
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(protocol::TCP)],
        &creds,
    );
    assert_eq!(a.class(), Class::Success);
    let relay = a.relayed()[0];
    h.server.set_draining(Some(Draining::default()));
    let tid = h.tid();
    let connect = h.request(
        Method::CONNECT,
        tid,
        &[Attribute::XorPeerAddress(addr(PEER))],
        Some(&creds),
    );
    assert!(h.send(&connect).is_none(), "accepted: answered once open");
    let id = match h.poll_event() {
        Some(Event::OpenConnection {
            id, relay: from, ..
        }) => {
            assert_eq!(from.0, relay);
            id
        }
        other => panic!("expected OpenConnection: {other:?}"),
    };
    h.server.connect_finished(h.now, id, true);
    let answers = h.owed();
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].class(), Class::Success);
    // A permitted peer may still connect to it.
    let permission = h.authed(
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(addr(PEER))],
        &creds,
    );
    assert_eq!(permission.class(), Class::Success);
    assert!(
        h.peer_connects(relay, addr("93.184.216.34:7000")).is_some(),
        "a peer's connection is announced"
    );
}
