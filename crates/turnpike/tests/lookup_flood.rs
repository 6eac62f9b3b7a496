//! Credential lookups cannot be starved: one source floods the server with
//! authenticated-looking Allocates naming random users (a valid nonce,
//! junk MESSAGE-INTEGRITY: each costs a database lookup, since the keys are
//! what is looked up), while a new user of the database, from another
//! source, allocates. Over UDP and TCP, with SQLite and with PostgreSQL.
//!
//! Before, one source could keep the shard's 64 lookups and 256 held
//! requests busy: new users were dropped (UDP) or never answered (TCP,
//! which does not retransmit). Now one source gets 4 lookups in flight and
//! 20 a second, and a TCP request that cannot be held is answered 500.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use support::{DatabaseOptions, ServerOptions, TestServer, TurnOptions};
use turnpike_client::tcp_relay::TcpRelayClient;
use turnpike_client::{AllocateParams, Credentials, TurnClient};
use turnpike_codec::Sha1Key;
use turnpike_codec::attr::protocol;
use turnpike_codec::integrity::long_term_key_md5;
use turnpike_codec::{
    AttrType, Attribute, Class, Message, MessageBuilder, MessageType, Method, TransactionId,
};
use turnpike_store::testing::TestPostgres;

/// The flooder's address: another source than the user's (127.0.0.1).
const FLOODER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 9);
const STEP: Duration = Duration::from_secs(5);
/// How long the flood lasts before the user allocates, and after.
const FLOOD: Duration = Duration::from_secs(2);

fn server(database: DatabaseOptions) -> TestServer {
    TestServer::start(ServerOptions {
        ipv6: false,
        turn: Some(TurnOptions {
            users: Vec::new(),
            ..TurnOptions::loopback()
        }),
        database,
        log_level: Some("info,turnpike::credentials=debug"),
        ..ServerOptions::default()
    })
}

/// An Allocate naming `user`, signed with a key that cannot be right.
fn forged_allocate(user: &str, realm: &str, nonce: &str, n: u64) -> Vec<u8> {
    let mut buf = vec![0u8; 512];
    let mut id = [0u8; 12];
    id[..8].copy_from_slice(&n.to_be_bytes());
    let kind = MessageType::new(Method::ALLOCATE, Class::Request);
    let mut msg = MessageBuilder::new(&mut buf, kind, TransactionId::Rfc5389(id)).unwrap();
    msg.add(&Attribute::RequestedTransport(protocol::UDP))
        .unwrap();
    msg.add(&Attribute::Username(user)).unwrap();
    msg.add(&Attribute::Realm(realm)).unwrap();
    msg.add(&Attribute::Nonce(nonce)).unwrap();
    let junk = Sha1Key::new(&long_term_key_md5(user, realm, "not the password"));
    msg.add_message_integrity(&junk).unwrap();
    let len = msg.finish();
    buf.truncate(len);
    buf
}

/// The realm and nonce of the 401 that answers an unauthenticated Allocate.
fn challenge(answer: &[u8]) -> (String, String) {
    let message = Message::parse(answer).expect("a STUN answer");
    let text = |t| match message.get(t) {
        Some(Ok(Attribute::Realm(r))) | Some(Ok(Attribute::Nonce(r))) => r.to_owned(),
        other => panic!("no {t:?} in the challenge: {other:?}"),
    };
    (text(AttrType::REALM), text(AttrType::NONCE))
}

/// An Allocate without credentials: answered with the realm and a nonce.
fn unauthenticated_allocate() -> Vec<u8> {
    let mut buf = vec![0u8; 64];
    let kind = MessageType::new(Method::ALLOCATE, Class::Request);
    let mut msg = MessageBuilder::new(&mut buf, kind, TransactionId::Rfc5389([7; 12])).unwrap();
    msg.add(&Attribute::RequestedTransport(protocol::UDP))
        .unwrap();
    let len = msg.finish();
    buf.truncate(len);
    buf
}

/// Floods over UDP from [`FLOODER`] until `stop`: one nonce, then forged
/// Allocates with fresh random usernames as fast as it can send.
fn udp_flood(server: SocketAddr, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) {
    let socket = UdpSocket::bind((FLOODER, 0)).unwrap();
    socket.set_read_timeout(Some(STEP)).unwrap();
    socket.send_to(&unauthenticated_allocate(), server).unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = socket.recv_from(&mut buf).expect("a 401 challenge");
    let (realm, nonce) = challenge(&buf[..n]);
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let request = forged_allocate(&format!("random-{i:x}"), &realm, &nonce, i);
        let _ = socket.send_to(&request, server);
        sent.fetch_add(1, Ordering::Relaxed);
    }
}

/// Floods over one TCP connection from [`FLOODER`]; returns how many
/// answers came back (every forged request gets one: a 401 once its
/// lookup is done, or a 500 when it cannot be held).
fn tcp_flood(server: SocketAddr, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) -> u64 {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::new(FLOODER.into(), 0).into())
        .unwrap();
    socket.connect_timeout(&server.into(), STEP).unwrap();
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(STEP)).unwrap();
    stream.write_all(&unauthenticated_allocate()).unwrap();
    let first = read_message(&mut stream);
    let (realm, nonce) = challenge(&first);
    let reader = {
        let mut stream = stream.try_clone().unwrap();
        thread::spawn(move || {
            let mut answers = 0u64;
            let mut five_hundreds = 0u64;
            while let Some(message) = try_read_message(&mut stream) {
                answers += 1;
                if message.len() > 20 && Message::parse(&message).is_ok_and(|m| {
                    matches!(m.get(AttrType::ERROR_CODE), Some(Ok(Attribute::ErrorCode(e))) if e.code == 500)
                }) {
                    five_hundreds += 1;
                }
            }
            (answers, five_hundreds)
        })
    };
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let request = forged_allocate(&format!("random-{i:x}"), &realm, &nonce, i);
        if stream.write_all(&request).is_err() {
            break;
        }
        sent.fetch_add(1, Ordering::Relaxed);
        if i.is_multiple_of(64) {
            // Paced by the answers, as a TCP client is by its window.
            thread::sleep(Duration::from_millis(1));
        }
    }
    // Half-close: the server answers what it has, then the reader sees EOF
    // or its timeout.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let (answers, five_hundreds) = reader.join().unwrap();
    assert!(
        five_hundreds > 0,
        "requests that could not be held were answered 500"
    );
    answers
}

fn read_message(stream: &mut TcpStream) -> Vec<u8> {
    try_read_message(stream).expect("an answer on the TCP connection")
}

fn try_read_message(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = [0u8; 20];
    stream.read_exact(&mut head).ok()?;
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let mut whole = head.to_vec();
    whole.resize(20 + len, 0);
    stream.read_exact(&mut whole[20..]).ok()?;
    Some(whole)
}

/// How many database lookups the server has logged.
fn lookups(server: &TestServer) -> usize {
    server
        .output()
        .lines()
        .filter(|l| l.contains("credential lookup"))
        .count()
}

fn flood_and_allocate(database: DatabaseOptions, tcp: bool) {
    let server = server(database);
    server.admin(&["user", "add", "newcomer", "--password", "n-pass"]);
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), server.port);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flooder = {
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        thread::spawn(move || {
            if tcp {
                tcp_flood(addr, stop, sent)
            } else {
                udp_flood(addr, stop, sent);
                0
            }
        })
    };
    let flood_started = Instant::now();
    while sent.load(Ordering::Relaxed) < 1000 {
        assert!(flood_started.elapsed() < STEP, "the flood did not start");
        thread::yield_now();
    }
    thread::sleep(FLOOD);
    // The new user allocates in the middle of the flood.
    let started = Instant::now();
    let credentials = Credentials::new("newcomer", "n-pass");
    let allocated = if tcp {
        let mut control = TcpRelayClient::connect(addr, credentials, STEP).unwrap();
        let reply = control.allocate_udp(&[]).unwrap();
        assert_eq!(reply.class(), Class::Success, "{:?}", reply.code());
        reply.relayed()[0]
    } else {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut client = TurnClient::bind(addr, credentials).await.unwrap();
            client
                .allocate(AllocateParams::default())
                .await
                .unwrap()
                .relayed
        })
    };
    let waited = started.elapsed();
    thread::sleep(FLOOD);
    stop.store(true, Ordering::Relaxed);
    let flood_lasted = flood_started.elapsed();
    let answered = flooder.join().unwrap();
    let sent = sent.load(Ordering::Relaxed);
    let looked_up = lookups(&server);
    eprintln!(
        "[flood] {} {}: {sent} forged Allocates in {flood_lasted:?} ({answered} answered), \
         {looked_up} database lookups; the new user allocated {allocated} after {waited:?}",
        if tcp { "TCP" } else { "UDP" },
        server
            .options
            .database
            .url
            .as_deref()
            .map_or("SQLite", |_| "PostgreSQL"),
    );
    // One source: 4 lookups in flight and 20 a second per worker (2).
    let bound = 2 * (20 * (flood_lasted.as_secs() as usize + 1) + 4) + 1;
    assert!(
        looked_up <= bound,
        "{looked_up} lookups for one source in {flood_lasted:?} (at most {bound}); {sent} sent"
    );
}

#[test]
fn udp_flood_with_sqlite() {
    flood_and_allocate(DatabaseOptions::default(), false);
}

#[test]
fn tcp_flood_with_sqlite() {
    flood_and_allocate(DatabaseOptions::default(), true);
}

#[test]
fn udp_flood_with_postgres() {
    let pg = TestPostgres::start();
    let database = DatabaseOptions {
        url: Some(pg.url()),
        ..DatabaseOptions::default()
    };
    flood_and_allocate(database, false);
}

#[test]
fn tcp_flood_with_postgres() {
    let pg = TestPostgres::start();
    let database = DatabaseOptions {
        url: Some(pg.url()),
        ..DatabaseOptions::default()
    };
    flood_and_allocate(database, true);
}
