//! Binding request handling through the sans-IO `Server`: RFC 8489, RFC 3489
//! and RFC 5780 behaviour, error responses, and what is dropped.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use turnpike_codec::attr::ChangeRequest;
use turnpike_codec::{
    AttrType, Attribute, Class, Message, MessageBuilder, MessageType, Method, TransactionId,
};
use turnpike_core::stats::{DropReason, ErrorCode, RequestMethod, TransportLabel};
use turnpike_core::{Config, NatDiscovery, Output, Packet, Server, Transmit, Transport};

const LOCAL: &str = "127.0.0.1:3478";
const REMOTE: &str = "192.0.2.7:50000";
const TID: TransactionId = TransactionId::Rfc5389([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
const CLASSIC_TID: TransactionId = TransactionId::Rfc3489([7; 16]);

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

fn with_alternate() -> Config {
    Config {
        software: Some("Turnpike".into()),
        nat_discovery: vec![NatDiscovery {
            ips: [
                IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
                IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
            ],
            ports: [3478, 3479],
        }],
        ..Config::default()
    }
}

fn request(tid: TransactionId, attrs: &[Attribute<'_>], fingerprint: bool) -> Vec<u8> {
    let mut buf = vec![0u8; 1500];
    let mut msg = MessageBuilder::new(
        &mut buf,
        MessageType::new(Method::BINDING, Class::Request),
        tid,
    )
    .unwrap();
    for a in attrs {
        msg.add(a).unwrap();
    }
    if fingerprint {
        msg.add_fingerprint().unwrap();
    }
    let len = msg.finish();
    buf.truncate(len);
    buf
}

struct Answer {
    transmit: Transmit,
    bytes: Vec<u8>,
}

impl Answer {
    fn message(&self) -> Message<'_> {
        Message::parse(&self.bytes).expect("server output parses")
    }

    fn attr(&self, t: AttrType) -> Option<Attribute<'_>> {
        self.message()
            .get(t)
            .map(|r| r.expect("server output decodes"))
    }

    fn error_code(&self) -> Option<u16> {
        match self.attr(AttrType::ERROR_CODE) {
            Some(Attribute::ErrorCode(e)) => Some(e.code),
            _ => None,
        }
    }

    fn unknown_attributes(&self) -> Vec<u16> {
        match self.attr(AttrType::UNKNOWN_ATTRIBUTES) {
            Some(Attribute::UnknownAttributes(list)) => list.iter().collect(),
            _ => vec![],
        }
    }
}

/// Handles `packet` and polls the answer, as the shell does.
fn handle(server: &mut Server, packet: Packet<'_>, out: &mut [u8]) -> Option<Transmit> {
    server.handle_client_packet(Instant::now(), packet, out);
    let mut answer = None;
    loop {
        match server.poll_output(out) {
            Output::Transmit(t) if answer.is_none() => answer = Some(t),
            Output::Timeout(_) => return answer,
            other => panic!("a STUN server has nothing else to say: {other:?}"),
        }
    }
}

fn send(config: Config, transport: Transport, local: &str, data: &[u8]) -> Option<Answer> {
    let mut server = Server::new(Arc::new(config));
    let mut out = [0u8; 2048];
    let packet = Packet {
        transport,
        local: addr(local),
        remote: addr(REMOTE),
        data,
    };
    let transmit = handle(&mut server, packet, &mut out)?;
    Some(Answer {
        transmit,
        bytes: out[..transmit.len].to_vec(),
    })
}

fn udp(config: Config, data: &[u8]) -> Option<Answer> {
    send(config, Transport::Udp, LOCAL, data)
}

#[test]
fn rfc8489_binding_gets_xor_mapped_address_and_software() {
    let a = udp(
        Config {
            software: Some("Turnpike".into()),
            ..Config::default()
        },
        &request(TID, &[], false),
    )
    .unwrap();
    let m = a.message();
    assert_eq!(
        m.message_type(),
        MessageType::new(Method::BINDING, Class::Success)
    );
    assert_eq!(m.transaction_id(), TID);
    assert_eq!(
        a.attr(AttrType::XOR_MAPPED_ADDRESS),
        Some(Attribute::XorMappedAddress(addr(REMOTE)))
    );
    assert_eq!(
        a.attr(AttrType::SOFTWARE),
        Some(Attribute::Software("Turnpike"))
    );
    assert!(
        !m.has_fingerprint(),
        "no FINGERPRINT unless the request had one"
    );
    assert!(a.attr(AttrType::MAPPED_ADDRESS).is_none());
    assert!(
        a.attr(AttrType::OTHER_ADDRESS).is_none(),
        "no RFC 5780 attributes without an alternate address"
    );
    assert_eq!(a.transmit.destination(), addr(REMOTE));
    assert_eq!(a.transmit.source(), addr(LOCAL));
}

#[test]
fn bare_binding_response_is_small() {
    // Amplification budget: a 20-byte request gets 20 + 12 (XOR-MAPPED-ADDRESS)
    // + 12 (SOFTWARE "Turnpike") bytes.
    let a = udp(
        Config {
            software: Some("Turnpike".into()),
            ..Config::default()
        },
        &request(TID, &[], false),
    )
    .unwrap();
    assert_eq!(a.bytes.len(), 44);
    let a = udp(Config::default(), &request(TID, &[], false)).unwrap();
    assert_eq!(a.bytes.len(), 32);
}

#[test]
fn fingerprint_is_echoed_and_valid() {
    let a = udp(Config::default(), &request(TID, &[], true)).unwrap();
    assert_eq!(a.message().fingerprint_matches(), Some(true));
}

#[test]
fn software_can_be_disabled() {
    let a = udp(Config::default(), &request(TID, &[], false)).unwrap();
    assert!(a.attr(AttrType::SOFTWARE).is_none());
}

#[test]
fn ipv6_binding() {
    let mut server = Server::new(Arc::new(Config::default()));
    let mut out = [0u8; 1500];
    let remote = addr("[2001:db8::5]:4000");
    let data = request(TID, &[], false);
    let packet = Packet {
        transport: Transport::Udp,
        local: addr("[::1]:3478"),
        remote,
        data: &data,
    };
    let t = handle(&mut server, packet, &mut out).unwrap();
    let m = Message::parse(&out[..t.len]).unwrap();
    assert_eq!(
        m.get(AttrType::XOR_MAPPED_ADDRESS),
        Some(Ok(Attribute::XorMappedAddress(remote)))
    );
}

#[test]
fn tcp_binding_answers_on_the_connection() {
    let a = send(
        Config::default(),
        Transport::Tcp,
        LOCAL,
        &request(TID, &[], false),
    )
    .unwrap();
    assert_eq!(a.transmit.transport(), Transport::Tcp);
    assert_eq!(
        a.attr(AttrType::XOR_MAPPED_ADDRESS),
        Some(Attribute::XorMappedAddress(addr(REMOTE)))
    );
}

#[test]
fn classic_rfc3489_binding() {
    let a = udp(Config::default(), &request(CLASSIC_TID, &[], false)).unwrap();
    let m = a.message();
    assert!(m.is_rfc3489());
    assert_eq!(m.transaction_id(), CLASSIC_TID);
    assert_eq!(
        a.attr(AttrType::MAPPED_ADDRESS),
        Some(Attribute::MappedAddress(addr(REMOTE)))
    );
    assert_eq!(
        a.attr(AttrType::SOURCE_ADDRESS),
        Some(Attribute::SourceAddress(addr(LOCAL)))
    );
    assert!(a.attr(AttrType::CHANGED_ADDRESS).is_none());
    assert!(a.attr(AttrType::XOR_MAPPED_ADDRESS).is_none());
}

#[test]
fn classic_rfc3489_with_alternate_reports_changed_address_and_changes_path() {
    let a = udp(with_alternate(), &request(CLASSIC_TID, &[], false)).unwrap();
    assert_eq!(
        a.attr(AttrType::CHANGED_ADDRESS),
        Some(Attribute::ChangedAddress(addr("127.0.0.2:3479")))
    );

    let change_both = Attribute::ChangeRequest(ChangeRequest {
        change_ip: true,
        change_port: true,
    });
    let a = udp(
        with_alternate(),
        &request(CLASSIC_TID, &[change_both], false),
    )
    .unwrap();
    assert_eq!(a.transmit.source(), addr("127.0.0.2:3479"));
    assert_eq!(
        a.attr(AttrType::SOURCE_ADDRESS),
        Some(Attribute::SourceAddress(addr("127.0.0.2:3479")))
    );

    let change_port = Attribute::ChangeRequest(ChangeRequest {
        change_ip: false,
        change_port: true,
    });
    let a = udp(
        with_alternate(),
        &request(CLASSIC_TID, &[change_port], false),
    )
    .unwrap();
    assert_eq!(a.transmit.source(), addr("127.0.0.1:3479"));
}

#[test]
fn rfc5780_attributes_relative_to_the_receiving_address() {
    // Received on the alternate IP and primary port: OTHER-ADDRESS flips both.
    let a = send(
        with_alternate(),
        Transport::Udp,
        "127.0.0.2:3478",
        &request(TID, &[], false),
    )
    .unwrap();
    assert_eq!(
        a.attr(AttrType::OTHER_ADDRESS),
        Some(Attribute::OtherAddress(addr("127.0.0.1:3479")))
    );
    assert_eq!(
        a.attr(AttrType::RESPONSE_ORIGIN),
        Some(Attribute::ResponseOrigin(addr("127.0.0.2:3478")))
    );

    let change_ip = Attribute::ChangeRequest(ChangeRequest {
        change_ip: true,
        change_port: false,
    });
    let a = send(
        with_alternate(),
        Transport::Udp,
        "127.0.0.2:3478",
        &request(TID, &[change_ip], false),
    )
    .unwrap();
    assert_eq!(a.transmit.source(), addr("127.0.0.1:3478"));
    assert_eq!(
        a.attr(AttrType::RESPONSE_ORIGIN),
        Some(Attribute::ResponseOrigin(addr("127.0.0.1:3478")))
    );
}

#[test]
fn change_request_without_alternate_is_420() {
    let change = Attribute::ChangeRequest(ChangeRequest {
        change_ip: true,
        change_port: false,
    });
    let a = udp(Config::default(), &request(TID, &[change], false)).unwrap();
    assert_eq!(a.error_code(), Some(420));
    assert_eq!(a.unknown_attributes(), vec![AttrType::CHANGE_REQUEST.0]);
    assert_eq!(a.transmit.source(), addr(LOCAL));
}

#[test]
fn change_request_with_no_flags_is_a_plain_binding() {
    let a = udp(
        Config::default(),
        &request(
            TID,
            &[Attribute::ChangeRequest(ChangeRequest::default())],
            false,
        ),
    )
    .unwrap();
    assert_eq!(a.message().message_type().class, Class::Success);
}

#[test]
fn change_request_over_tcp_is_400() {
    let change = Attribute::ChangeRequest(ChangeRequest {
        change_ip: true,
        change_port: true,
    });
    let a = send(
        with_alternate(),
        Transport::Tcp,
        LOCAL,
        &request(TID, &[change], false),
    )
    .unwrap();
    assert_eq!(a.error_code(), Some(400));
}

#[test]
fn response_port_only_when_enabled() {
    let a = udp(
        with_alternate(),
        &request(TID, &[Attribute::ResponsePort(40000)], false),
    )
    .unwrap();
    assert_eq!(a.error_code(), Some(420));
    assert_eq!(a.unknown_attributes(), vec![AttrType::RESPONSE_PORT.0]);

    let config = Config {
        allow_response_port: true,
        ..with_alternate()
    };
    let a = udp(
        config,
        &request(TID, &[Attribute::ResponsePort(40000)], false),
    )
    .unwrap();
    assert_eq!(a.transmit.destination(), addr("192.0.2.7:40000"));
    assert_eq!(
        a.attr(AttrType::XOR_MAPPED_ADDRESS),
        Some(Attribute::XorMappedAddress(addr(REMOTE)))
    );
}

#[test]
fn padding_only_when_enabled_and_never_larger_than_the_request() {
    let pad = [0xAAu8; 400];
    let a = udp(
        Config::default(),
        &request(TID, &[Attribute::Padding(&pad)], false),
    )
    .unwrap();
    assert_eq!(a.error_code(), Some(420));
    assert_eq!(a.unknown_attributes(), vec![AttrType::PADDING.0]);

    let config = Config {
        allow_padding: true,
        software: Some("Turnpike".into()),
        ..with_alternate()
    };
    let req = request(TID, &[Attribute::Padding(&pad)], false);
    let a = udp(config, &req).unwrap();
    match a.attr(AttrType::PADDING) {
        Some(Attribute::Padding(p)) => assert_eq!(p.len(), pad.len()),
        other => panic!("expected PADDING, got {other:?}"),
    }
    assert!(
        a.bytes.len() <= req.len() + 64,
        "padded answer {} vs request {}",
        a.bytes.len(),
        req.len()
    );
}

#[test]
fn several_refused_features_are_listed_together() {
    let a = udp(
        Config::default(),
        &request(
            TID,
            &[Attribute::ResponsePort(1), Attribute::Padding(&[0; 4])],
            false,
        ),
    )
    .unwrap();
    assert_eq!(
        a.unknown_attributes(),
        vec![AttrType::RESPONSE_PORT.0, AttrType::PADDING.0]
    );
}

#[test]
fn unknown_comprehension_required_attribute_is_420() {
    let odd = Attribute::Unknown {
        attr_type: AttrType(0x7ABC),
        value: b"x",
    };
    let a = udp(Config::default(), &request(TID, &[odd], true)).unwrap();
    assert_eq!(a.error_code(), Some(420));
    assert_eq!(a.unknown_attributes(), vec![0x7ABC]);
    assert_eq!(a.message().fingerprint_matches(), Some(true));
}

#[test]
fn unknown_optional_attribute_is_ignored() {
    let odd = Attribute::Unknown {
        attr_type: AttrType(0xC0DE),
        value: b"xyz",
    };
    let a = udp(Config::default(), &request(TID, &[odd], false)).unwrap();
    assert_eq!(a.message().message_type().class, Class::Success);
}

#[test]
fn malformed_attribute_value_is_400() {
    // A USERNAME that is not UTF-8.
    let bad = Attribute::Unknown {
        attr_type: AttrType::USERNAME,
        value: &[0xFF, 0xFE],
    };
    let a = udp(Config::default(), &request(TID, &[bad], false)).unwrap();
    assert_eq!(a.error_code(), Some(400));
}

#[test]
fn attribute_overrun_with_cookie_is_400() {
    let mut req = request(TID, &[Attribute::Lifetime(5)], false);
    req[22..24].copy_from_slice(&100u16.to_be_bytes()); // LIFETIME claims 100 bytes
    let a = udp(Config::default(), &req).unwrap();
    assert_eq!(a.error_code(), Some(400));
    assert_eq!(a.message().transaction_id(), TID);
}

#[test]
fn unknown_method_with_cookie_is_400() {
    let mut buf = [0u8; 64];
    let mut msg = MessageBuilder::new(
        &mut buf,
        MessageType::new(Method::new(0x0FF).unwrap(), Class::Request),
        TID,
    )
    .unwrap();
    msg.add(&Attribute::Lifetime(1)).unwrap();
    let len = msg.finish();
    let a = udp(Config::default(), &buf[..len]).unwrap();
    assert_eq!(a.error_code(), Some(400));
    assert_eq!(a.message().message_type().method.value(), 0x0FF);
}

#[test]
fn garbage_gets_no_answer() {
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xFF; 100],
        vec![0; 20],                             // classic header, method 0
        vec![0x00, 0x01, 0x00],                  // truncated header
        request(TID, &[], false)[..19].to_vec(), // truncated header
        {
            let mut r = request(TID, &[Attribute::Lifetime(1)], false);
            r[3] = 6; // length not a multiple of 4
            r
        },
        {
            let mut r = request(TID, &[], false);
            r.extend_from_slice(&[0; 4]); // trailing bytes beyond the length
            r
        },
        {
            let mut r = request(CLASSIC_TID, &[Attribute::Lifetime(1)], false);
            r[22..24].copy_from_slice(&100u16.to_be_bytes()); // classic with overrun
            r
        },
        vec![0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4], // ChannelData without TURN
        vec![0x16, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], // DTLS record
    ];
    for case in cases {
        assert!(
            udp(Config::default(), &case).is_none(),
            "answered {case:02x?}"
        );
    }
}

#[test]
fn bad_fingerprint_is_dropped() {
    let mut req = request(TID, &[], true);
    let last = req.len() - 1;
    req[last] ^= 1;
    assert!(udp(Config::default(), &req).is_none());
}

#[test]
fn indications_and_responses_are_not_answered() {
    for class in [Class::Indication, Class::Success, Class::Error] {
        let mut buf = [0u8; 32];
        let len = MessageBuilder::new(&mut buf, MessageType::new(Method::BINDING, class), TID)
            .unwrap()
            .finish();
        assert!(
            udp(Config::default(), &buf[..len]).is_none(),
            "{class:?} answered"
        );
    }
}

#[test]
fn stats_count_outcomes() {
    let mut server = Server::new(Arc::new(Config::default()));
    let mut out = [0u8; 1500];
    let ok = request(TID, &[], false);
    let bad = request(TID, &[Attribute::ResponsePort(1)], false);
    for data in [&ok[..], &bad[..], &[0xFF; 8][..]] {
        let p = Packet {
            transport: Transport::Udp,
            local: addr(LOCAL),
            remote: addr(REMOTE),
            data,
        };
        handle(&mut server, p, &mut out);
    }
    let s = server.stats();
    assert_eq!(s.requests.get(RequestMethod::Binding), 2);
    assert_eq!(s.bindings.get(TransportLabel::Udp), 1);
    assert_eq!(s.bindings.total(), 1);
    // RESPONSE-PORT without RFC 5780: 420, read back from the answer the
    // binding handler wrote.
    assert_eq!(
        s.errors(RequestMethod::Binding)
            .get(ErrorCode::UnknownAttribute),
        1
    );
    assert_eq!(s.error_responses(), 1);
    assert_eq!(s.drops.get(DropReason::Malformed), 1);
    assert_eq!(s.drops.total(), 1);
}

#[test]
fn tiny_output_buffer_drops_instead_of_panicking() {
    let mut server = Server::new(Arc::new(Config {
        software: Some("Turnpike".into()),
        ..Config::default()
    }));
    let mut out = [0u8; 24];
    let data = request(TID, &[], false);
    let p = Packet {
        transport: Transport::Udp,
        local: addr(LOCAL),
        remote: addr(REMOTE),
        data: &data,
    };
    assert!(handle(&mut server, p, &mut out).is_none());
}
