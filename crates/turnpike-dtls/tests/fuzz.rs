//! Property tests: random datagrams and mutated real handshake datagrams
//! never panic the server, never create state without a valid cookie, and
//! never leave state behind once every deadline has passed.

mod common;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use proptest::prelude::*;
use turnpike_dtls::{DtlsServer, Output, PER_PEER_OUTPUT_CAP, QUEUE_CAP};

fn id() -> &'static Identity {
    static ID: OnceLock<Identity> = OnceLock::new();
    ID.get_or_init(|| identity(KeyKind::Ecdsa, "fuzz.example"))
}

/// Every deadline passed: nothing may remain.
fn assert_clean_after_all_deadlines(server: &mut DtlsServer, now: Instant) {
    server.handle_timeout(now + Duration::from_secs(86_400));
    drain(server);
    assert_eq!(
        (server.sessions(), server.half_open(), server.poll_timeout()),
        (0, 0, None)
    );
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: usize,
        mask: u8,
    },
    Truncate {
        to: usize,
    },
    Append(Vec<u8>),
    Replace(Vec<u8>),
    /// Set a header byte (record or handshake header) to a chosen value.
    Header {
        at: usize,
        value: u8,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        any::<usize>().prop_map(|to| Mutation::Truncate { to }),
        proptest::collection::vec(any::<u8>(), 1..64).prop_map(Mutation::Append),
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(Mutation::Replace),
        (0usize..25, any::<u8>()).prop_map(|(at, value)| Mutation::Header { at, value }),
    ]
}

fn apply(m: &Mutation, d: &[u8]) -> Vec<u8> {
    let mut d = d.to_vec();
    match m {
        Mutation::Flip { at, mask } => {
            let i = at % d.len();
            d[i] ^= mask;
        }
        Mutation::Truncate { to } => d.truncate(to % d.len()),
        Mutation::Append(extra) => d.extend_from_slice(extra),
        Mutation::Replace(bytes) => d = bytes.clone(),
        Mutation::Header { at, value } => {
            if let Some(b) = d.get_mut(*at) {
                *b = *value;
            }
        }
    }
    d
}

/// Runs a real handshake plus a little data, mutating the `target`-th
/// datagram the client sends (and, with `keep_original`, sending the
/// original after it). Returns whether the client finished and whether the
/// server answered the mutated datagram itself.
fn run_mutated(target: usize, m: &Mutation, keep_original: bool) -> (bool, bool) {
    let mut server = DtlsServer::new(config(id())).unwrap();
    let mut client = Client::new(addr("192.0.2.200:50000"), &id().leaf);
    let now = Instant::now();
    let mut sent = 0usize;
    let mut wrote_data = false;
    let mut mutated_answered = false;
    for _ in 0..40 {
        let _ = client.step();
        if client.done && !wrote_data {
            let _ = client.stream.ssl_write(b"payload one");
            let _ = client.stream.ssl_write(b"payload two");
            wrote_data = true;
        }
        let datagrams = client.take();
        let mut moved = !datagrams.is_empty();
        for d in datagrams {
            if sent == target {
                server.handle_datagram(now, client.addr, &apply(m, &d));
                let answers = drain(&mut server);
                mutated_answered = !answers.is_empty();
                for out in answers {
                    if let Output::Transmit { data, .. } = out {
                        client.deliver(data);
                    }
                }
                if keep_original {
                    server.handle_datagram(now, client.addr, &d);
                }
            } else {
                server.handle_datagram(now, client.addr, &d);
            }
            sent += 1;
        }
        let mut queued = 0;
        while let Some(out) = server.poll_output() {
            queued += 1;
            match out {
                Output::Transmit { to, data } => {
                    assert_eq!(to, client.addr);
                    assert!(!data.is_empty() && data.len() <= 1200, "{}", data.len());
                    client.deliver(data);
                    moved = true;
                }
                Output::Data { from, data } => {
                    assert_eq!(from, client.addr);
                    // Records are authenticated: only what the client wrote.
                    assert!(data == b"payload one" || data == b"payload two", "{data:?}");
                }
                Output::Established { peer } | Output::Closed { peer } => {
                    assert_eq!(peer, client.addr)
                }
            }
        }
        assert!(queued <= PER_PEER_OUTPUT_CAP + 4);
        assert!(server.half_open() + server.sessions() <= 1);
        if !moved {
            break;
        }
    }
    let done = client.done;
    assert_clean_after_all_deadlines(&mut server, now);
    (done, mutated_answered)
}

fn peer() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
    ]
}

/// Random bytes, biased towards DTLS-looking headers.
fn datagram() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..1500),
        (
            proptest::collection::vec(any::<u8>(), 0..300),
            20u8..26,
            any::<u8>()
        )
            .prop_map(|(mut d, ct, minor)| {
                if d.len() >= 3 {
                    d[0] = ct;
                    d[1] = 0xFE;
                    d[2] = minor;
                }
                d
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_datagrams_create_no_state(
        inputs in proptest::collection::vec((peer(), datagram()), 1..40)
    ) {
        let mut server = DtlsServer::new(config(id())).unwrap();
        let now = Instant::now();
        for (from, d) in &inputs {
            server.handle_datagram(now, *from, d);
        }
        let out = drain(&mut server);
        // At most a HelloVerifyRequest each, never a session.
        prop_assert!(out.len() <= inputs.len());
        for o in out {
            let is_hvr = matches!(&o, Output::Transmit { data, .. } if data.len() > 13 && data[13] == 3);
            prop_assert!(is_hvr, "{:?}", o);
        }
        prop_assert_eq!((server.half_open(), server.sessions(), server.poll_timeout()), (0, 0, None));
    }

    #[test]
    fn random_datagrams_to_live_sessions(
        inputs in proptest::collection::vec(datagram(), 1..30)
    ) {
        let mut server = DtlsServer::new(config(id())).unwrap();
        let now = Instant::now();
        let mut client = Client::new(addr("192.0.2.201:50000"), &id().leaf);
        connect(&mut server, &mut client, now);
        let mut half = Client::new(addr("192.0.2.202:50000"), &id().leaf);
        let _ = pump_until_half_open(&mut server, &mut half, now);
        for d in &inputs {
            server.handle_datagram(now, client.addr, d);
            server.handle_datagram(now, half.addr, d);
        }
        for o in drain(&mut server) {
            // Garbage is never decrypted into data.
            prop_assert!(!matches!(o, Output::Data { .. }), "{:?}", o);
        }
        prop_assert!(server.sessions() + server.half_open() <= 2);
        assert_clean_after_all_deadlines(&mut server, now);
    }

    #[test]
    fn mutated_handshake_datagrams(target in 0usize..6, m in mutation(), keep_original in any::<bool>()) {
        let (finished, answered) = run_mutated(target, &m, keep_original);
        // A mangled first ClientHello that the server ignores, followed by
        // the real one, must not hurt the handshake. (One it answers can:
        // e.g. a huge record sequence number, which the HelloVerifyRequest
        // echoes per RFC 6347, moves the client's replay window.)
        if keep_original && target == 0 && !answered {
            prop_assert!(finished, "{:?}", m);
        }
    }
}

/// Cookie exchange and the cookie-valid ClientHello only.
fn pump_until_half_open(server: &mut DtlsServer, client: &mut Client, now: Instant) -> bool {
    for _ in 0..2 {
        client.step().unwrap();
        for d in client.take() {
            server.handle_datagram(now, client.addr, &d);
        }
        for out in drain(server) {
            if let Output::Transmit { data, .. } = out {
                client.deliver(data);
            }
        }
    }
    server.half_open() == 1
}

#[test]
fn undrained_hello_verify_requests_are_capped() {
    let mut server = DtlsServer::new(config(id())).unwrap();
    let now = Instant::now();
    let mut client = Client::new(addr("192.0.2.203:50000"), &id().leaf);
    client.step().unwrap();
    let hello = client.take().remove(0);
    for i in 0..(QUEUE_CAP as u32 + 100) {
        let from = SocketAddr::from(((0x0A00_0000 + i).to_be_bytes(), 1234));
        server.handle_datagram(now, from, &hello);
    }
    assert_eq!(drain(&mut server).len(), QUEUE_CAP);
    assert_eq!(server.half_open(), 0);
}
