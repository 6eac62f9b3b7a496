//! DtlsServer against an OpenSSL DTLS 1.2 client in the same process, over
//! in-memory datagrams and a simulated clock.

mod common;

use std::time::{Duration, Instant};

use common::*;
use turnpike_dtls::{DtlsError, DtlsServer, INITIAL_RTO, Output, PER_PEER_OUTPUT_CAP};

fn is_hello_verify_request(d: &[u8]) -> bool {
    d.len() > 13 && d[0] == 22 && d[13] == 3
}

fn handshake_and_data(kind: KeyKind) {
    let id = identity(kind, "turn.example");
    let mut server = DtlsServer::new(config(&id)).unwrap();
    let mut client = Client::new(addr("192.0.2.10:40000"), &id.leaf);
    let now = Instant::now();

    // First flight: ClientHello without cookie → HelloVerifyRequest, no state.
    client.step().unwrap();
    let first = client.take();
    assert_eq!(first.len(), 1);
    server.handle_datagram(now, client.addr, &first[0]);
    let out = drain(&mut server);
    assert_eq!(out.len(), 1, "{out:?}");
    let Output::Transmit { to, data } = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(*to, client.addr);
    assert!(
        is_hello_verify_request(data),
        "not a HelloVerifyRequest: {data:?}"
    );
    assert_eq!(
        (server.half_open(), server.sessions()),
        (0, 0),
        "state before the cookie"
    );
    assert_eq!(server.poll_timeout(), None);
    client.deliver(data.clone());

    // ClientHello with cookie → a session, then the rest of the handshake.
    client.step().unwrap();
    let second = client.take();
    assert_eq!(second.len(), 1);
    server.handle_datagram(now, client.addr, &second[0]);
    assert_eq!(server.half_open(), 1);
    let flight = drain(&mut server);
    assert!(!flight.is_empty());
    for out in flight {
        let Output::Transmit { to, data } = out else {
            panic!("{out:?}")
        };
        assert_eq!(to, client.addr);
        assert!(
            data.len() <= 1200,
            "datagram of {} bytes over the MTU",
            data.len()
        );
        client.deliver(data);
    }
    assert!(
        server.poll_timeout().is_some(),
        "retransmission timer armed"
    );
    connect(&mut server, &mut client, now);
    assert_eq!((server.half_open(), server.sessions()), (0, 1));
    assert_eq!(client.stream.ssl().version_str(), "DTLSv1.2");
    let cipher = client.stream.ssl().current_cipher().unwrap().name();
    assert!(
        cipher.starts_with("ECDHE-") && cipher.contains("GCM"),
        "{cipher}"
    );
    let peer_leaf = client.stream.ssl().peer_certificate().unwrap();
    assert_eq!(peer_leaf.to_der().unwrap(), id.leaf.to_der().unwrap());

    // Client → server.
    for d in client.write(b"ping") {
        server.handle_datagram(now, client.addr, &d);
    }
    assert_eq!(
        drain(&mut server),
        vec![Output::Data {
            from: client.addr,
            data: b"ping".to_vec()
        }]
    );
    // Server → client.
    server.send(now, client.addr, b"pong").unwrap();
    for out in drain(&mut server) {
        let Output::Transmit { to, data } = out else {
            panic!("{out:?}")
        };
        assert_eq!(to, client.addr);
        client.deliver(data);
    }
    assert_eq!(client.read_all().unwrap(), vec![b"pong".to_vec()]);
}

#[test]
fn handshake_and_data_rsa() {
    handshake_and_data(KeyKind::Rsa);
}

#[test]
fn handshake_and_data_ecdsa() {
    handshake_and_data(KeyKind::Ecdsa);
}

#[test]
fn dropped_server_flight_is_retransmitted_on_the_simulated_clock() {
    let id = identity(KeyKind::Ecdsa, "turn.example");
    let mut server = DtlsServer::new(config(&id)).unwrap();
    let mut client = Client::new(addr("192.0.2.11:40000"), &id.leaf);
    let t0 = Instant::now();

    // Cookie exchange.
    client.step().unwrap();
    for d in client.take() {
        server.handle_datagram(t0, client.addr, &d);
    }
    for out in drain(&mut server) {
        let Output::Transmit { data, .. } = out else {
            panic!()
        };
        client.deliver(data);
    }
    client.step().unwrap();
    for d in client.take() {
        server.handle_datagram(t0, client.addr, &d);
    }
    // The server's whole flight (ServerHello … ServerHelloDone) is lost.
    let lost: Vec<Vec<u8>> = drain(&mut server)
        .into_iter()
        .map(|o| match o {
            Output::Transmit { data, .. } => data,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(!lost.is_empty());
    assert_eq!(server.poll_timeout(), Some(t0 + INITIAL_RTO));

    // Not yet due: nothing.
    server.handle_timeout(t0 + INITIAL_RTO - Duration::from_millis(1));
    assert!(drain(&mut server).is_empty());
    // Due: the same flight again, then the timer backs off to 2 s.
    server.handle_timeout(t0 + INITIAL_RTO);
    let resent: Vec<Vec<u8>> = drain(&mut server)
        .into_iter()
        .map(|o| match o {
            Output::Transmit { data, .. } => data,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(resent, lost, "retransmission is the lost flight");
    assert_eq!(
        server.poll_timeout(),
        Some(t0 + INITIAL_RTO + 2 * INITIAL_RTO)
    );
    // Lost again; the second retransmission gets through.
    server.handle_timeout(t0 + 3 * SECOND);
    let t = t0 + 3 * SECOND;
    for out in drain(&mut server) {
        let Output::Transmit { data, .. } = out else {
            panic!()
        };
        client.deliver(data);
    }
    connect(&mut server, &mut client, t);
    assert_eq!(server.sessions(), 1);
    // Established: no retransmission timer, only the idle deadline.
    assert_eq!(server.poll_timeout(), Some(t + Duration::from_secs(600)));
}

#[test]
fn garbage_from_unknown_peers_creates_no_state() {
    let id = identity(KeyKind::Ecdsa, "turn.example");
    let mut server = DtlsServer::new(config(&id)).unwrap();
    let now = Instant::now();
    let from = addr("198.51.100.1:5000");
    let inputs: Vec<Vec<u8>> = vec![
        vec![],
        vec![0; 12],
        vec![0; 13],
        vec![22; 100],
        vec![23, 0xFE, 0xFD, 0, 1, 0, 0, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4],
        b"\x00\x01\x00\x00\x21\x12\xa4\x42abcdefghijkl".to_vec(), // STUN Binding
        vec![0xFF; 70_000],
    ];
    for d in &inputs {
        server.handle_datagram(now, from, d);
    }
    assert!(drain(&mut server).is_empty());
    assert_eq!(
        (server.half_open(), server.sessions(), server.poll_timeout()),
        (0, 0, None)
    );
}

/// Cookie exchange, then the cookie-valid ClientHello; returns the
/// server's outputs for the latter (not delivered to the client).
fn cookie_then_hello(server: &mut DtlsServer, client: &mut Client, now: Instant) -> Vec<Output> {
    client.step().unwrap();
    for d in client.take() {
        server.handle_datagram(now, client.addr, &d);
    }
    for out in drain(server) {
        let Output::Transmit { data, .. } = out else {
            panic!("{out:?}")
        };
        assert!(is_hello_verify_request(&data));
        client.deliver(data);
    }
    client.step().unwrap();
    for d in client.take() {
        server.handle_datagram(now, client.addr, &d);
    }
    drain(server)
}

#[test]
fn chain_with_intermediate_is_sent() {
    let root_key = key(KeyKind::Ecdsa);
    let root = cert("Test Root", &root_key, None, true);
    let mid_key = key(KeyKind::Ecdsa);
    let mid = cert(
        "Test Intermediate",
        &mid_key,
        Some((&root, &root_key)),
        true,
    );
    let leaf_key = key(KeyKind::Rsa);
    let leaf = cert("turn.example", &leaf_key, Some((&mid, &mid_key)), false);
    let mut chain_pem = leaf.to_pem().unwrap();
    chain_pem.extend_from_slice(&mid.to_pem().unwrap());
    let id = Identity {
        chain_pem,
        key_pem: leaf_key.private_key_to_pem_pkcs8().unwrap(),
        leaf: leaf.clone(),
        key: leaf_key,
    };
    let mut server = DtlsServer::new(config(&id)).unwrap();
    // The client trusts only the root: verification needs the intermediate.
    let mut client = Client::new(addr("192.0.2.12:40000"), &root);
    connect(&mut server, &mut client, Instant::now());
    let chain = client.stream.ssl().peer_cert_chain().unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[1].to_der().unwrap(), mid.to_der().unwrap());
}

#[test]
fn key_formats_and_certificate_errors() {
    let rsa = identity(KeyKind::Rsa, "rsa.example");
    let ec = identity(KeyKind::Ecdsa, "ec.example");
    let pkcs1 = rsa.key.rsa().unwrap().private_key_to_pem().unwrap();
    assert!(String::from_utf8_lossy(&pkcs1).contains("BEGIN RSA PRIVATE KEY"));
    let sec1 = ec.key.ec_key().unwrap().private_key_to_pem().unwrap();
    assert!(String::from_utf8_lossy(&sec1).contains("BEGIN EC PRIVATE KEY"));
    for (chain, key) in [
        (&rsa.chain_pem, &rsa.key_pem), // PKCS#8
        (&rsa.chain_pem, &pkcs1),
        (&ec.chain_pem, &ec.key_pem),
        (&ec.chain_pem, &sec1),
    ] {
        let mut cfg = config(&rsa);
        cfg.chain_pem = chain.clone();
        cfg.key_pem = key.clone();
        DtlsServer::new(cfg).expect("valid chain and key");
    }

    let mut mismatched = config(&rsa);
    mismatched.key_pem = ec.key_pem.clone();
    let err = DtlsServer::new(mismatched).unwrap_err();
    assert_eq!(err, DtlsError::KeyMismatch);
    assert_eq!(err.to_string(), "DTLS certificate and key do not match");

    let mut no_cert = config(&rsa);
    no_cert.chain_pem = b"not a pem".to_vec();
    let err = DtlsServer::new(no_cert).unwrap_err();
    assert!(
        matches!(err, DtlsError::NoCertificate | DtlsError::Certificate(_)),
        "{err}"
    );

    let mut bad_key = config(&rsa);
    bad_key.key_pem = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_vec();
    let err = DtlsServer::new(bad_key).unwrap_err();
    assert!(matches!(err, DtlsError::PrivateKey(_)), "{err}");

    // Encrypted keys are refused, never prompted for on the terminal.
    let encrypted = ec
        .key
        .private_key_to_pem_pkcs8_passphrase(openssl::symm::Cipher::aes_128_cbc(), b"pw")
        .unwrap();
    let mut enc = config(&ec);
    enc.key_pem = encrypted;
    let enc_config = enc.clone();
    let err = DtlsServer::new(enc).unwrap_err();
    assert!(matches!(err, DtlsError::PrivateKey(_)), "{err}");

    // OpenSSL error stacks come out as one line.
    let mut garbage = config(&rsa);
    garbage.chain_pem = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec();
    for err in [
        DtlsServer::new(garbage).unwrap_err(),
        DtlsServer::new(enc_config).unwrap_err(),
    ] {
        let text = err.to_string();
        assert!(!text.contains('\n') && !text.is_empty(), "one line: {text}");
    }

    // set_certificate: on error the old certificate stays in use.
    let mut server = DtlsServer::new(config(&rsa)).unwrap();
    assert_eq!(
        server.set_certificate(&rsa.chain_pem, &ec.key_pem),
        Err(DtlsError::KeyMismatch)
    );
    let mut client = Client::new(addr("192.0.2.13:40000"), &rsa.leaf);
    connect(&mut server, &mut client, Instant::now());
    let leaf = client.stream.ssl().peer_certificate().unwrap();
    assert_eq!(leaf.to_der().unwrap(), rsa.leaf.to_der().unwrap());
}

#[test]
fn certificate_swap_affects_only_new_handshakes() {
    let old = identity(KeyKind::Rsa, "old.example");
    let new = identity(KeyKind::Ecdsa, "new.example");
    let mut server = DtlsServer::new(config(&old)).unwrap();
    let now = Instant::now();
    let mut a = Client::new(addr("192.0.2.20:40000"), &old.leaf);
    connect(&mut server, &mut a, now);
    // B's handshake is in progress during the swap: it keeps the old one.
    let mut b = Client::new(addr("192.0.2.21:40000"), &old.leaf);
    let flight = cookie_then_hello(&mut server, &mut b, now);
    server
        .set_certificate(&new.chain_pem, &new.key_pem)
        .unwrap();
    for out in flight {
        let Output::Transmit { data, .. } = out else {
            panic!()
        };
        b.deliver(data);
    }
    connect(&mut server, &mut b, now);
    let mut c = Client::new(addr("192.0.2.22:40000"), &new.leaf);
    connect(&mut server, &mut c, now);
    let leaf = |cl: &Client| {
        cl.stream
            .ssl()
            .peer_certificate()
            .unwrap()
            .to_der()
            .unwrap()
    };
    assert_eq!(leaf(&a), old.leaf.to_der().unwrap());
    assert_eq!(leaf(&b), old.leaf.to_der().unwrap());
    assert_eq!(leaf(&c), new.leaf.to_der().unwrap());
    assert_eq!(server.sessions(), 3);

    // The old session still works both ways.
    for d in a.write(b"still here") {
        server.handle_datagram(now, a.addr, &d);
    }
    assert_eq!(
        drain(&mut server),
        vec![Output::Data {
            from: a.addr,
            data: b"still here".to_vec()
        }]
    );
    server.send(now, a.addr, b"yes").unwrap();
    for out in drain(&mut server) {
        let Output::Transmit { data, .. } = out else {
            panic!()
        };
        a.deliver(data);
    }
    assert_eq!(a.read_all().unwrap(), vec![b"yes".to_vec()]);
}

#[test]
fn half_open_cap_per_ip() {
    let id = identity(KeyKind::Ecdsa, "turn.example");
    let mut cfg = config(&id);
    cfg.max_half_open_per_ip = 2;
    let mut server = DtlsServer::new(cfg).unwrap();
    let now = Instant::now();
    let mut clients: Vec<Client> = (0..3)
        .map(|i| Client::new(addr(&format!("192.0.2.30:{}", 41000 + i)), &id.leaf))
        .collect();
    let flight0 = cookie_then_hello(&mut server, &mut clients[0], now);
    assert!(!flight0.is_empty());
    assert!(!cookie_then_hello(&mut server, &mut clients[1], now).is_empty());
    assert_eq!(server.half_open(), 2);
    // The third cookie-valid ClientHello from the same IP gets nothing.
    assert_eq!(cookie_then_hello(&mut server, &mut clients[2], now), vec![]);
    assert_eq!(server.half_open(), 2);
    // Another IP is not affected.
    let mut other = Client::new(addr("192.0.2.31:41000"), &id.leaf);
    connect(&mut server, &mut other, now);
    // Once one handshake of the first IP finishes, the next one fits.
    let mut first = clients.remove(0);
    for out in flight0 {
        let Output::Transmit { data, .. } = out else {
            panic!()
        };
        first.deliver(data);
    }
    let seen = pump(&mut server, &mut first, now);
    assert!(
        seen.events
            .contains(&Output::Established { peer: first.addr })
    );
    assert_eq!(server.half_open(), 1);
    let mut retry = Client::new(addr("192.0.2.30:41009"), &id.leaf);
    assert!(!cookie_then_hello(&mut server, &mut retry, now).is_empty());
    assert_eq!(server.half_open(), 2);
}

/// IPv6 sources count per /64: three addresses of one /64 share the cap
/// of 2, a neighbouring /64 has its own.
#[test]
fn half_open_cap_counts_ipv6_per_prefix() {
    let id = identity(KeyKind::Ecdsa, "turn.example");
    let mut cfg = config(&id);
    cfg.max_half_open_per_ip = 2;
    let mut server = DtlsServer::new(cfg).unwrap();
    let now = Instant::now();
    let mut clients: Vec<Client> = (1..=3)
        .map(|i| Client::new(addr(&format!("[2001:db8:1:2::{i}]:41000")), &id.leaf))
        .collect();
    assert!(!cookie_then_hello(&mut server, &mut clients[0], now).is_empty());
    assert!(!cookie_then_hello(&mut server, &mut clients[1], now).is_empty());
    assert_eq!(
        cookie_then_hello(&mut server, &mut clients[2], now),
        vec![],
        "another address of the same /64 is the same source"
    );
    let mut other = Client::new(addr("[2001:db8:1:3::1]:41000"), &id.leaf);
    assert!(!cookie_then_hello(&mut server, &mut other, now).is_empty());
    assert_eq!(server.half_open(), 3);
}

/// A source may start only so many handshakes per second, however fast
/// they finish: the third within a second gets nothing, the next second
/// starts afresh.
#[test]
fn handshakes_per_source_and_second_are_capped() {
    let id = identity(KeyKind::Ecdsa, "turn.example");
    let mut cfg = config(&id);
    cfg.max_handshakes_per_ip_per_second = 2;
    let mut server = DtlsServer::new(cfg).unwrap();
    let now = Instant::now();
    for i in 0..2 {
        let mut c = Client::new(addr(&format!("192.0.2.40:{}", 41000 + i)), &id.leaf);
        connect(&mut server, &mut c, now);
    }
    let mut third = Client::new(addr("192.0.2.40:41002"), &id.leaf);
    assert_eq!(cookie_then_hello(&mut server, &mut third, now), vec![]);
    let mut other = Client::new(addr("192.0.2.41:41000"), &id.leaf);
    connect(&mut server, &mut other, now);
    let later = now + Duration::from_secs(1);
    let mut next = Client::new(addr("192.0.2.40:41003"), &id.leaf);
    assert!(!cookie_then_hello(&mut server, &mut next, later).is_empty());
}

#[test]
fn half_open_cap_total_and_session_cap_per_ip() {
    let id = identity(KeyKind::Ecdsa, "turn.example");
    let now = Instant::now();

    let mut cfg = config(&id);
    cfg.max_half_open_total = 2;
    let mut server = DtlsServer::new(cfg).unwrap();
    for i in 0..2 {
        let mut c = Client::new(addr(&format!("192.0.2.{}:5000", 40 + i)), &id.leaf);
        assert!(!cookie_then_hello(&mut server, &mut c, now).is_empty());
    }
    let mut c = Client::new(addr("192.0.2.49:5000"), &id.leaf);
    assert_eq!(cookie_then_hello(&mut server, &mut c, now), vec![]);
    assert_eq!(server.half_open(), 2);

    let mut cfg = config(&id);
    cfg.max_sessions_per_ip = 2;
    let mut server = DtlsServer::new(cfg).unwrap();
    for port in [6000, 6001] {
        let mut c = Client::new(addr(&format!("192.0.2.50:{port}")), &id.leaf);
        connect(&mut server, &mut c, now);
    }
    let mut c = Client::new(addr("192.0.2.50:6002"), &id.leaf);
    assert_eq!(cookie_then_hello(&mut server, &mut c, now), vec![]);
    assert_eq!((server.sessions(), server.half_open()), (2, 0));
}

#[test]
fn handshake_timeout_closes_half_open_sessions() {
    let id = identity(KeyKind::Ecdsa, "turn.example");
    let mut cfg = config(&id);
    cfg.handshake_timeout = Duration::from_secs(5);
    let mut server = DtlsServer::new(cfg).unwrap();
    let t0 = Instant::now();
    let mut client = Client::new(addr("192.0.2.60:40000"), &id.leaf);
    assert!(!cookie_then_hello(&mut server, &mut client, t0).is_empty());
    assert_eq!(server.half_open(), 1);
    // Retransmissions at 1 s and 3 s (1 + 2), then the deadline at 5 s.
    let mut t = t0;
    let mut retransmissions = 0;
    let mut closed = false;
    while let Some(at) = server.poll_timeout() {
        assert!(at > t, "timer did not advance");
        t = at;
        server.handle_timeout(t);
        for out in drain(&mut server) {
            match out {
                Output::Transmit { .. } if !closed => retransmissions += 1,
                Output::Closed { peer } => {
                    assert_eq!(peer, client.addr);
                    assert_eq!(t, t0 + Duration::from_secs(5));
                    closed = true;
                }
                other => panic!("{other:?}"),
            }
        }
    }
    assert!(closed);
    assert!(retransmissions >= 2, "{retransmissions}");
    assert_eq!((server.half_open(), server.sessions()), (0, 0));
}

#[test]
fn idle_timeout_closes_established_sessions() {
    let id = identity(KeyKind::Ecdsa, "turn.example");
    let mut cfg = config(&id);
    cfg.idle_timeout = Duration::from_secs(30);
    let mut server = DtlsServer::new(cfg).unwrap();
    let t0 = Instant::now();
    let mut client = Client::new(addr("192.0.2.61:40000"), &id.leaf);
    connect(&mut server, &mut client, t0);
    assert_eq!(server.poll_timeout(), Some(t0 + Duration::from_secs(30)));

    // Data at 20 s postpones the idle deadline to 50 s.
    let t20 = t0 + Duration::from_secs(20);
    for d in client.write(b"keepalive") {
        server.handle_datagram(t20, client.addr, &d);
    }
    assert_eq!(drain(&mut server).len(), 1);
    // Garbage "from" the client does not.
    server.handle_datagram(
        t20 + SECOND,
        client.addr,
        &[23, 0xFE, 0xFD, 0, 1, 0, 0, 0, 0, 0, 9, 0, 0],
    );
    assert!(drain(&mut server).is_empty());

    server.handle_timeout(t0 + Duration::from_secs(30));
    assert!(
        drain(&mut server).is_empty(),
        "early idle deadline is pushed back"
    );
    assert_eq!(server.sessions(), 1);
    assert_eq!(server.poll_timeout(), Some(t20 + Duration::from_secs(30)));
    server.handle_timeout(t20 + Duration::from_secs(30));
    let out = drain(&mut server);
    assert_eq!(
        out.last(),
        Some(&Output::Closed { peer: client.addr }),
        "{out:?}"
    );
    assert_eq!(server.sessions(), 0);
    assert_eq!(server.poll_timeout(), None);
    // The close_notify sent on the way out reaches the client.
    for o in out {
        if let Output::Transmit { data, .. } = o {
            client.deliver(data);
        }
    }
    let err = client.read_all().unwrap_err();
    assert_eq!(err.code(), openssl::ssl::ErrorCode::ZERO_RETURN);
}

#[test]
fn close_notify_both_ways() {
    let id = identity(KeyKind::Ecdsa, "turn.example");
    let mut server = DtlsServer::new(config(&id)).unwrap();
    let now = Instant::now();

    // From the peer: Closed, and our close_notify in return.
    let mut client = Client::new(addr("192.0.2.70:40000"), &id.leaf);
    connect(&mut server, &mut client, now);
    let _ = client.stream.shutdown();
    for d in client.take() {
        server.handle_datagram(now, client.addr, &d);
    }
    let out = drain(&mut server);
    assert!(
        matches!(out.first(), Some(Output::Transmit { .. })),
        "{out:?}"
    );
    assert_eq!(out.last(), Some(&Output::Closed { peer: client.addr }));
    assert_eq!(server.sessions(), 0);

    // From us: close() sends close_notify and forgets, without Closed.
    let mut client = Client::new(addr("192.0.2.71:40000"), &id.leaf);
    connect(&mut server, &mut client, now);
    server.close(client.addr);
    assert_eq!(server.sessions(), 0);
    assert_eq!(server.poll_timeout(), None);
    let out = drain(&mut server);
    assert_eq!(out.len(), 1, "{out:?}");
    let Output::Transmit { data, .. } = out.into_iter().next().unwrap() else {
        panic!()
    };
    client.deliver(data);
    assert_eq!(
        client.read_all().unwrap_err().code(),
        openssl::ssl::ErrorCode::ZERO_RETURN
    );
    assert_eq!(
        server.send(now, client.addr, b"x"),
        Err(DtlsError::NoSession(client.addr))
    );
}

#[test]
fn send_limits() {
    let id = identity(KeyKind::Ecdsa, "turn.example");
    let mut server = DtlsServer::new(config(&id)).unwrap();
    let now = Instant::now();
    let mut client = Client::new(addr("192.0.2.80:40000"), &id.leaf);
    let nobody = addr("192.0.2.99:1");
    assert_eq!(
        server.send(now, nobody, b"x"),
        Err(DtlsError::NoSession(nobody))
    );
    let flight = cookie_then_hello(&mut server, &mut client, now);
    assert_eq!(
        server.send(now, client.addr, b"x"),
        Err(DtlsError::NotEstablished(client.addr))
    );
    for out in flight {
        let Output::Transmit { data, .. } = out else {
            panic!()
        };
        client.deliver(data);
    }
    connect(&mut server, &mut client, now);

    // A message is one record of up to 2^14 bytes, whatever the handshake
    // MTU (1200 here): a TURN message cannot span records. The record is
    // one datagram, for IP to fragment past the path MTU.
    let max = server.max_payload();
    assert_eq!(max, 16_384);
    for len in [1_163, 1_164, 4_000, max] {
        let big = vec![0x5A; len];
        server.send(now, client.addr, &big).unwrap();
        let out = drain(&mut server);
        assert_eq!(out.len(), 1, "{len} bytes: one datagram");
        let Output::Transmit { data, .. } = &out[0] else {
            panic!()
        };
        assert!(data.len() > len && data.len() <= len + 37, "{}", data.len());
        client.deliver(data.clone());
        assert_eq!(
            client.read_all().unwrap(),
            vec![big],
            "{len} bytes arrive whole"
        );
    }
    assert_eq!(
        server.send(now, client.addr, &vec![0; max + 1]),
        Err(DtlsError::TooLarge { len: max + 1, max })
    );

    // Undrained outputs are capped per session.
    for _ in 0..PER_PEER_OUTPUT_CAP {
        server.send(now, client.addr, b"queued").unwrap();
    }
    assert_eq!(
        server.send(now, client.addr, b"one more"),
        Err(DtlsError::QueueFull(client.addr))
    );
    assert_eq!(drain(&mut server).len(), PER_PEER_OUTPUT_CAP);
    server.send(now, client.addr, b"drained").unwrap();
    // Incoming data is capped the same way: 100 records in, 64 outputs.
    let mut records = Vec::new();
    for i in 0..100u8 {
        records.extend(client.write(&[i]));
    }
    drain(&mut server);
    for d in &records {
        server.handle_datagram(now, client.addr, d);
    }
    assert_eq!(drain(&mut server).len(), PER_PEER_OUTPUT_CAP);
    assert_eq!(server.sessions(), 1);
}

#[test]
fn new_handshake_from_an_established_address_replaces_the_session() {
    let id = identity(KeyKind::Ecdsa, "turn.example");
    let mut server = DtlsServer::new(config(&id)).unwrap();
    let now = Instant::now();
    let at = addr("192.0.2.90:40000");
    let mut first = Client::new(at, &id.leaf);
    connect(&mut server, &mut first, now);

    // The first ClientHello of a restarted client gets a HelloVerifyRequest
    // and leaves the old session alone.
    let mut second = Client::new(at, &id.leaf);
    second.step().unwrap();
    for d in second.take() {
        server.handle_datagram(now, at, &d);
    }
    let out = drain(&mut server);
    assert_eq!(out.len(), 1);
    assert_eq!(server.sessions(), 1);
    // The cookie proves reachability: the old session is replaced.
    let Output::Transmit { data, .. } = out.into_iter().next().unwrap() else {
        panic!()
    };
    second.deliver(data);
    let seen = connect(&mut server, &mut second, now);
    assert_eq!(
        seen.events,
        vec![
            Output::Closed { peer: at },
            Output::Established { peer: at }
        ],
        "{:?}",
        seen.events
    );
    assert_eq!(server.sessions(), 1);
    for d in second.write(b"new") {
        server.handle_datagram(now, at, &d);
    }
    assert_eq!(
        drain(&mut server),
        vec![Output::Data {
            from: at,
            data: b"new".to_vec()
        }]
    );
}

#[test]
fn retransmitted_client_hello_and_foreign_cookies_create_nothing() {
    let id = identity(KeyKind::Ecdsa, "turn.example");
    let mut server = DtlsServer::new(config(&id)).unwrap();
    let now = Instant::now();
    let mut client = Client::new(addr("192.0.2.91:40000"), &id.leaf);
    client.step().unwrap();
    let hello = client.take().remove(0);
    server.handle_datagram(now, client.addr, &hello);
    let Some(Output::Transmit { data: hvr, .. }) = server.poll_output() else {
        panic!()
    };
    client.deliver(hvr);
    client.step().unwrap();
    let with_cookie = client.take().remove(0);

    // The same cookie from another address (port) is not valid there.
    let elsewhere = addr("192.0.2.91:40001");
    server.handle_datagram(now, elsewhere, &with_cookie);
    let out = drain(&mut server);
    assert_eq!(out.len(), 1);
    assert!(
        matches!(&out[0], Output::Transmit { to, data } if *to == elsewhere && is_hello_verify_request(data))
    );
    assert_eq!(server.half_open(), 0);

    // Nor after two cookie periods (60 s).
    server.handle_datagram(now + Duration::from_secs(61), client.addr, &with_cookie);
    assert_eq!(drain(&mut server).len(), 1);
    assert_eq!(server.half_open(), 0);

    // Valid: one session; the same ClientHello again does not make another
    // nor reset it.
    server.handle_datagram(now, client.addr, &with_cookie);
    let flight = drain(&mut server);
    assert!(!flight.is_empty());
    server.handle_datagram(now, client.addr, &with_cookie);
    assert!(drain(&mut server).is_empty());
    assert_eq!(server.half_open(), 1);
    for out in flight {
        let Output::Transmit { data, .. } = out else {
            panic!()
        };
        client.deliver(data);
    }
    connect(&mut server, &mut client, now);
}

#[test]
fn dtls10_client_is_refused() {
    let id = identity(KeyKind::Ecdsa, "turn.example");
    let mut server = DtlsServer::new(config(&id)).unwrap();
    let now = Instant::now();
    let mut client = Client::with_version(
        addr("192.0.2.92:40000"),
        &id.leaf,
        ClientVersion::Dtls10Only,
    );
    let seen = pump(&mut server, &mut client, now);
    assert!(client.step().is_err(), "client handshake must fail");
    assert!(
        seen.to_client >= 2,
        "HelloVerifyRequest and an alert: {seen:?}"
    );
    assert_eq!(seen.events, vec![Output::Closed { peer: client.addr }]);
    assert_eq!(
        (server.half_open(), server.sessions(), server.poll_timeout()),
        (0, 0, None)
    );
}
