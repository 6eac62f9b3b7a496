//! Limits of the connection transports. Per-source limits count an IPv6
//! client per /64 (`limits.ipv6_prefix`), as a host is usually given a
//! whole /64: before, they counted per /128, so 40 connections from 40
//! addresses of one /64 were all held with `max_connections_per_ip = 8`
//! (the test makes a network namespace of its own whose loopback carries
//! the client addresses). And a connection that has not authenticated
//! cannot make the server buffer a large message.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use support::{ServerOptions, TestServer, binding_request, private_network_namespace, run};

const STEP: Duration = Duration::from_secs(5);

/// A TCP connection to `server` from `source`.
fn connect_from(source: IpAddr, server: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV6, Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(source, 0).into()).unwrap();
    socket.connect_timeout(&server.into(), STEP).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(STEP)).unwrap();
    stream
}

/// Whether the server serves this connection: a Binding request gets its
/// answer (a connection over the limit is closed at once instead).
fn served(stream: &mut TcpStream) -> bool {
    let (request, _) = binding_request();
    if stream.write_all(&request).is_err() {
        return false;
    }
    let mut head = [0u8; 20];
    stream.read_exact(&mut head).is_ok()
}

#[test]
fn connections_per_source_count_ipv6_per_prefix() {
    private_network_namespace();
    let prefix = |net: u16, host: u16| Ipv6Addr::new(0xfd00, 1, 2, net, 0, 0, 0, host);
    let mut sources: Vec<IpAddr> = (1..=40).map(|i| prefix(3, i).into()).collect();
    let other: IpAddr = prefix(4, 1).into();
    sources.push(other);
    for ip in &sources {
        let cidr = format!("{ip}/128");
        let out = run("ip", &["-6", "addr", "add", &cidr, "dev", "lo", "nodad"]);
        assert_eq!(out.code(), Some(0), "{}", out.describe());
    }
    let server = TestServer::start(ServerOptions {
        limits: vec![("max_connections_per_ip", 8)],
        ..ServerOptions::basic()
    });
    let addr = server.v6();
    // Held open, one after the other, from 40 addresses of one /64.
    let mut held = Vec::new();
    let mut served_count = 0;
    for &source in &sources[..40] {
        let mut stream = connect_from(source, addr);
        if served(&mut stream) {
            served_count += 1;
        }
        held.push(stream);
    }
    assert_eq!(
        served_count,
        8,
        "one /64 is one source: 8 connections, not 40\n{}",
        server.describe()
    );
    let mut stream = connect_from(other, addr);
    assert!(served(&mut stream), "another /64 has its own budget");
}

/// A connection that has not authenticated cannot make the server buffer
/// a large message: a STUN header announcing a 60,000-byte body closes it
/// at once. Before, the buffer grew to 64 KiB for it and the connection
/// stayed until the authentication timeout.
#[test]
fn unauthenticated_connections_cannot_announce_large_messages() {
    let server = TestServer::start(ServerOptions::basic());
    let mut stream = TcpStream::connect_timeout(&server.v4(), STEP).unwrap();
    stream.set_read_timeout(Some(STEP)).unwrap();
    let mut header = [0u8; 20];
    header[..4].copy_from_slice(&[0x00, 0x01, 0xEA, 0x60]);
    header[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
    stream.write_all(&header).unwrap();
    let mut rest = Vec::new();
    let closed = match stream.read_to_end(&mut rest) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(
        closed,
        "the connection is closed, not left waiting for 60,000 bytes"
    );
}

/// `limits.max_connections` caps the connections of all sources together:
/// with 3, a fourth from another address is closed at once, and served
/// again once one of the three has gone.
#[test]
fn connections_are_capped_server_wide() {
    let server = TestServer::start(ServerOptions {
        limits: vec![("max_connections", 3)],
        ..ServerOptions::basic()
    });
    let connect = |source: [u8; 4]| {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket.bind(&SocketAddr::from((source, 0)).into()).unwrap();
        socket.connect_timeout(&server.v4().into(), STEP).unwrap();
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(STEP)).unwrap();
        stream
    };
    let mut held: Vec<TcpStream> = (0..3).map(|_| connect([127, 0, 0, 1])).collect();
    for stream in &mut held {
        assert!(served(stream));
    }
    let mut fourth = connect([127, 0, 0, 2]);
    assert!(!served(&mut fourth), "over the server-wide limit");
    drop(held.pop());
    // The closed connection is uncounted as the server notices it.
    support::eventually("a slot frees up", STEP, || {
        served(&mut connect([127, 0, 0, 2]))
    });
}
