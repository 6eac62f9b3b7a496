//! TCP allocations (RFC 6062) end to end, on loopback: coturn's
//! `turnutils_uclient -T` over TCP and over TLS, and our own TCP client
//! (`support::turn_tcp`) for what uclient does not do.
//!
//! What `turnutils_uclient -T` does (coturn 4.6.1, seen on the wire): it
//! implies `-t -y -c -s`, so clients relay to each other and `-e`/`-r`
//! (`turnutils_peer`) are ignored. Each client allocates a TCP relay,
//! permits its partners' relayed addresses, and Connects to them: the server
//! connects relay to relay, so one side gets a Connect answer and the other
//! a ConnectionAttempt, and both bind a new data connection with
//! ConnectionBind signed with the control connection's nonce. Payloads then
//! go over the data connections as raw bytes; uclient counts `-l`-byte
//! reads, so its totals are `-n` × `-m` messages. With `-m 4` the clients
//! form a full mesh (6 Connects, 12 data connections), which on a
//! two-worker server puts data connections on both workers.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use support::pki::{KeyType, Pki};
use support::uclient::{Run, assert_delivered};
use support::{
    PRIMARY_V4, ServerOptions, TURN_PASSWORD, TURN_USER, TestServer, TlsFiles, eventually,
};
use turnpike_client::Credentials;
use turnpike_client::tcp_relay::TcpRelayClient;
use turnpike_codec::{AddressFamily, Attribute, Class, Method};

fn v4() -> IpAddr {
    PRIMARY_V4.into()
}

/// How long the server may take to close sockets after their allocation.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);

fn server_addr(server: &TestServer) -> SocketAddr {
    SocketAddr::new(v4(), server.port)
}

/// How long any one read may take.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A control connection of the test user.
fn open_control(server: &TestServer) -> TcpRelayClient {
    let credentials = Credentials::new(TURN_USER, TURN_PASSWORD);
    TcpRelayClient::connect(server_addr(server), credentials, READ_TIMEOUT)
        .expect("connect to the server")
}

/// A TCP allocation (with `extra` attributes): its relayed addresses.
fn allocate(control: &mut TcpRelayClient, extra: &[Attribute<'_>]) -> Vec<SocketAddr> {
    let reply = control.allocate(extra).expect("Allocate answered");
    assert_eq!(
        reply.class(),
        Class::Success,
        "TCP Allocate: {:?}",
        reply.code()
    );
    reply.relayed()
}

fn permit(control: &mut TcpRelayClient, peer: SocketAddr) {
    let reply = control.create_permission(peer).expect("answered");
    assert_eq!(reply.class(), Class::Success, "CreatePermission {peer}");
}

fn assert_no_tcp_relay_sockets(server: &TestServer) {
    eventually(
        "the server closes the TCP relays and peer connections",
        CLOSE_WITHIN,
        || server.tcp_relay_sockets() == 0,
    );
}

#[test]
fn uclient_tcp_relay_over_tcp_no_loss() {
    let server = TestServer::start(ServerOptions::turn());
    let args = ["-T", "-m", "4", "-n", "50", "-l", "1000"];
    let (out, rep) = Run::new(&server, v4(), &args).go();
    assert_delivered("TCP relay over TCP (-T), full mesh", &out, &rep, 200, 1000);
    // uclient deletes its allocations as it exits (Refresh 0): listeners,
    // peer connections and pipes all go.
    assert_no_tcp_relay_sockets(&server);
}

#[test]
fn uclient_tcp_relay_over_tls_no_loss() {
    let pki = Pki::new();
    let leaf = pki.leaf("turn1", KeyType::EcP256Sec1, 2);
    let server = TestServer::start(ServerOptions {
        tls: Some(TlsFiles {
            certificate: leaf.chain,
            private_key: Some(leaf.key),
        }),
        ..ServerOptions::turn()
    });
    let port = server.tls_port.expect("TLS configured");
    let args = ["-T", "-S", "-m", "2", "-n", "50", "-l", "1000"];
    let (out, rep) = Run::new(&server, v4(), &args).port(port).go();
    assert_delivered("TCP relay over TLS (-T -S)", &out, &rep, 100, 1000);
    assert_no_tcp_relay_sockets(&server);
}

/// Reads exactly `len` bytes.
fn read_n(stream: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).expect("relayed bytes");
    buf
}

/// The stream was closed by the other end: EOF or a reset.
fn assert_closed(what: &str, stream: &mut TcpStream) {
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("{what}: expected the connection closed, got {other:?}"),
    }
}

/// A peer connecting to the relayed address (RFC 6062 §5.3): refused
/// without a permission; with one, the client hears of it through a
/// ConnectionAttempt, and what the peer sent before the ConnectionBind is
/// delivered after it, then bytes flow both ways, and the peer closing
/// closes the data connection.
#[test]
fn peer_initiated_connection_with_data_before_the_bind() {
    let server = TestServer::start(ServerOptions::turn());
    let mut control = open_control(&server);
    let relay = allocate(&mut control, &[])[0];
    permit(&mut control, "127.0.0.1:1".parse().unwrap());

    // From 127.0.0.2: no permission, so reset at once.
    let stranger =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    stranger
        .bind(&SocketAddr::new(Ipv4Addr::new(127, 0, 0, 2).into(), 0).into())
        .unwrap();
    stranger.connect(&relay.into()).unwrap();
    let mut stranger: TcpStream = stranger.into();
    assert_closed("a peer without permission", &mut stranger);

    let mut peer = TcpStream::connect(relay).expect("a permitted peer connects");
    let early = b"sent before the client bound the connection".repeat(100);
    peer.write_all(&early).unwrap();
    // The first ConnectionAttempt is the permitted peer's: the stranger's
    // connection never reached the client.
    let attempt = control.next_indication().expect("a ConnectionAttempt");
    assert_eq!(attempt.method(), Method::CONNECTION_ATTEMPT);
    assert_eq!(attempt.peer(), Some(peer.local_addr().unwrap()));
    let id = attempt.connection_id().expect("CONNECTION-ID");

    let (mut data, bound) = control.bind_data_connection(id).expect("data connection");
    assert_eq!(
        bound.class(),
        Class::Success,
        "ConnectionBind: {:?}",
        bound.code()
    );
    assert_eq!(read_n(&mut data, early.len()), early, "early data, intact");
    data.write_all(b"client to peer").unwrap();
    peer.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    assert_eq!(read_n(&mut peer, 14), b"client to peer");
    peer.write_all(b"peer to client").unwrap();
    assert_eq!(read_n(&mut data, 14), b"peer to client");

    drop(peer);
    assert_closed("the data connection after its peer closed", &mut data);
    // The listener stays for the next peer.
    eventually("the pair's sockets close", CLOSE_WITHIN, || {
        server.tcp_relay_sockets() == 1
    });
}

/// Connect (RFC 6062 §5.2): the server connects from the relayed address;
/// a second Connect to the same peer is 446, a peer that refuses is 447;
/// megabytes cross both ways intact through the pipe; the client closing
/// its data connection closes the peer's.
#[test]
fn connect_446_447_and_bulk_data_both_ways() {
    let server = TestServer::start(ServerOptions::turn());
    let mut control = open_control(&server);
    let relay = allocate(&mut control, &[])[0];
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap();

    let answer = control.connect_peer(target).unwrap();
    assert_eq!(
        answer.class(),
        Class::Success,
        "Connect: {:?}",
        answer.code()
    );
    let id = answer.connection_id().expect("CONNECTION-ID");
    let (peer, from) = listener.accept().unwrap();
    assert_eq!(from, relay, "the peer sees the relayed address");

    let again = control.connect_peer(target).unwrap();
    assert_eq!(
        again.code(),
        Some(446),
        "a second connection to the same peer"
    );

    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let refusing = closed.local_addr().unwrap();
    drop(closed);
    let refused = control.connect_peer(refusing).unwrap();
    assert_eq!(refused.code(), Some(447), "the peer refused the connection");

    let (data, bound) = control.bind_data_connection(id).expect("data connection");
    assert_eq!(bound.class(), Class::Success);

    // 4 MiB each way at once: nothing lost, reordered or stuck (each
    // direction is only read as fast as the other side writes).
    let up: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
    let down: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 241) as u8).collect();
    peer.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let (mut data_tx, mut data_rx) = (data.try_clone().unwrap(), data);
    let (mut peer_tx, mut peer_rx) = (peer.try_clone().unwrap(), peer);
    thread::scope(|s| {
        s.spawn(|| data_tx.write_all(&up).unwrap());
        s.spawn(|| peer_tx.write_all(&down).unwrap());
        let at_peer = s.spawn(|| read_n(&mut peer_rx, up.len()));
        let at_client = read_n(&mut data_rx, down.len());
        assert!(at_client == down, "peer → client bytes differ");
        assert!(at_peer.join().unwrap() == up, "client → peer bytes differ");
    });

    drop(data_tx);
    drop(data_rx);
    assert_closed("the peer after the client closed", &mut peer_rx);
}

/// The Connect path refuses internal targets in every disguise, before any
/// connection is attempted (coturn's TCP CONNECT was an SSRF path): a
/// server with no allowed ranges, a live listener on loopback.
#[test]
fn connect_refuses_internal_peers_in_every_form() {
    let mut options = ServerOptions::turn();
    if let Some(turn) = options.turn.as_mut() {
        turn.allowed_peer_ranges = Vec::new();
    }
    let server = TestServer::start(options);
    let mut control = open_control(&server);
    let relays = allocate(
        &mut control,
        &[Attribute::AdditionalAddressFamily(AddressFamily::V6)],
    );
    assert_eq!(
        relays.len(),
        2,
        "dual stack, so IPv6 forms reach the policy"
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let own = server.port;
    for target in [
        format!("127.0.0.1:{port}"),
        format!("127.1.2.3:{port}"),
        format!("[::1]:{port}"),
        format!("[::ffff:127.0.0.1]:{port}"),
        format!("[::127.0.0.1]:{port}"),
        format!("[64:ff9b::7f00:1]:{port}"),
        format!("[2002:7f00:1::1]:{port}"),
        format!("0.0.0.0:{port}"),
        format!("[::]:{port}"),
        "10.0.0.1:80".to_string(),
        "169.254.169.254:80".to_string(),
        "[fd00:ec2::254]:80".to_string(),
        format!("127.0.0.1:{own}"),
    ] {
        let target: SocketAddr = target.parse().unwrap();
        let answer = control.connect_peer(target).unwrap();
        assert_eq!(answer.code(), Some(403), "Connect to {target}");
    }
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the loopback listener was reached: {other:?}"),
    }
}

/// Closing the control connection deletes the allocation, which closes its
/// listener, its peer connections and the data connections bound to them.
#[test]
fn closing_the_control_connection_closes_everything() {
    let server = TestServer::start(ServerOptions::turn());
    let mut control = open_control(&server);
    allocate(&mut control, &[]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap();
    let id = control
        .connect_peer(target)
        .unwrap()
        .connection_id()
        .expect("connected");
    let (mut peer, _) = listener.accept().unwrap();
    let (mut data, bound) = control.bind_data_connection(id).expect("data connection");
    assert_eq!(bound.class(), Class::Success);
    // A second connection, never bound.
    let second = TcpListener::bind("127.0.0.1:0").unwrap();
    let answer = control.connect_peer(second.local_addr().unwrap()).unwrap();
    assert_eq!(answer.class(), Class::Success);
    assert_eq!(
        server.tcp_relay_sockets(),
        3,
        "listener and two peer connections"
    );

    drop(control);
    assert_closed("the data connection", &mut data);
    assert_closed("the peer", &mut peer);
    assert_no_tcp_relay_sockets(&server);
}

/// A ConnectionBind for an unknown CONNECTION-ID is 400, and one on the
/// control connection too.
#[test]
fn connection_bind_errors() {
    let server = TestServer::start(ServerOptions::turn());
    let mut control = open_control(&server);
    allocate(&mut control, &[]);
    // The control connection's nonce is accepted only for its own
    // connections: here the client gets a 438 first, then the 400.
    let (_, reply) = control
        .bind_data_connection(0x1234_5678)
        .expect("data connection");
    assert_eq!(reply.code(), Some(400), "unknown CONNECTION-ID");
    let on_control = control
        .request(Method::CONNECTION_BIND, &[Attribute::ConnectionId(1)])
        .expect("answered");
    assert_eq!(
        on_control.code(),
        Some(400),
        "ConnectionBind on the control connection"
    );
}

/// `limits.max_peer_connections_per_allocation` reaches the core: the
/// connection beyond it is 508, and a peer connecting in beyond it is
/// refused.
#[test]
fn peer_connections_per_allocation_are_limited() {
    let server = TestServer::start(ServerOptions {
        limits: vec![("max_peer_connections_per_allocation", 1)],
        ..ServerOptions::turn()
    });
    let mut control = open_control(&server);
    let relay = allocate(&mut control, &[])[0];
    let first = TcpListener::bind("127.0.0.1:0").unwrap();
    let second = TcpListener::bind("127.0.0.1:0").unwrap();
    let answer = control.connect_peer(first.local_addr().unwrap()).unwrap();
    assert_eq!(answer.class(), Class::Success);
    let answer = control.connect_peer(second.local_addr().unwrap()).unwrap();
    assert_eq!(
        answer.code(),
        Some(508),
        "second connection of the allocation"
    );
    permit(&mut control, "127.0.0.1:1".parse().unwrap());
    let mut incoming = TcpStream::connect(relay).unwrap();
    assert_closed("a peer beyond the limit", &mut incoming);
}
