//! Relayed data of every size, over every client transport, against
//! coturn's `turnutils_uclient` and `turnutils_peer` on loopback: payloads
//! of 500, 1,200, 1,500, 2,100, 4,000 and 9,000 bytes and the largest
//! uclient can carry, by ChannelData and by Send/Data indications, with
//! the relay and peer on IPv4 and on IPv6. Every message must come back.
//!
//! Before Turnpike received datagrams whole, everything over 2,048 bytes
//! was lost on every transport, and over DTLS everything from 1,160 bytes
//! on (records were capped at the 1,200-byte handshake MTU). coturn 4.6.1,
//! run through `scripts/size-matrix` beside Turnpike, relays up to about
//! 16,300 bytes on UDP, TCP and TLS and loses everything above; Turnpike
//! relays every size up to the transports' limits.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use support::pki::{KeyType, Pki};
use support::sizes::{Transport, relay_every_size};
use support::{
    PRIMARY_V4, PRIMARY_V6, Peer, ServerOptions, TURN_PASSWORD, TURN_USER, TestServer, TlsFiles,
    eventually,
};
use turnpike_client::tcp_relay::{StreamData, TcpRelayClient};
use turnpike_client::{AllocateParams, Credentials, Relayed, TurnClient};
use turnpike_codec::{AddressFamily, Attribute, Class};
use turnpike_core::max_udp_payload;

fn families() -> [IpAddr; 2] {
    [PRIMARY_V4.into(), PRIMARY_V6.into()]
}

/// A TURN server on 127.0.0.1 and ::1, with TLS and DTLS on its TLS port
/// (a certificate for "turn1" from `pki`), logging at `log_level`.
fn server(pki: &Pki, log_level: Option<&'static str>) -> TestServer {
    let leaf = pki.leaf("turn1", KeyType::EcP256Sec1, 2);
    TestServer::start(ServerOptions {
        tls: Some(TlsFiles {
            certificate: leaf.chain,
            private_key: Some(leaf.key),
        }),
        log_level,
        ..ServerOptions::turn()
    })
}

fn every_size_over(transport: Transport) {
    let pki = Pki::new();
    let server = server(&pki, None);
    let peer = Peer::start(&families());
    let port = match transport {
        Transport::Udp | Transport::Tcp => server.port,
        Transport::Tls | Transport::Dtls => server.tls_port.expect("TLS configured"),
    };
    relay_every_size(&server, &peer, transport, port, &families());
}

#[test]
fn every_size_over_udp() {
    every_size_over(Transport::Udp);
}

#[test]
fn every_size_over_tcp() {
    every_size_over(Transport::Tcp);
}

#[test]
fn every_size_over_tls() {
    every_size_over(Transport::Tls);
}

#[test]
fn every_size_over_dtls() {
    every_size_over(Transport::Dtls);
}

// ---------------------------------------------------------------------------
// The transports' own limits, with our own client: uclient sends at most
// 65,407 bytes, and over TLS reads one record per message. Here the peer is
// the test itself (a UDP socket), so every byte is checked.
// ---------------------------------------------------------------------------

/// Drop lines are logged by the core at debug level.
const LOG_LEVEL: &str = "info,turnpike_core=debug";

/// Payload bytes that tell sizes and offsets apart.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// A UDP socket playing the peer, on `family`'s loopback.
fn peer_socket(family: IpAddr) -> UdpSocket {
    let socket = UdpSocket::bind((family, 0)).expect("bind a peer socket");
    socket.set_read_timeout(Some(STEP)).unwrap();
    socket
}

/// What the peer socket receives next, and from where.
fn peer_receives(peer: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 65_536];
    let (n, from) = peer
        .recv_from(&mut buf)
        .expect("the peer receives the relayed datagram");
    buf.truncate(n);
    (buf, from)
}

/// Waits until the server has logged dropping `bytes` bytes for `reason`.
fn drop_logged(server: &TestServer, reason: &str, bytes: usize) {
    let wanted = format!("bytes={bytes} ");
    eventually(
        &format!("a debug line about dropping {bytes} bytes ({reason})"),
        STEP,
        || {
            server.output().lines().any(|l| {
                l.contains("relayed data dropped") && l.contains(reason) && l.contains(&wanted)
            })
        },
    );
}

/// Each read and each wait of these tests.
const STEP: Duration = Duration::from_secs(5);

fn family_attribute(family: IpAddr) -> AddressFamily {
    if family.is_ipv4() {
        AddressFamily::V4
    } else {
        AddressFamily::V6
    }
}

/// Over UDP: ChannelData of 65,503 bytes (IPv4; 65,523 over IPv6) and Send
/// indications of 65,468 (65,476) both ways; a peer datagram one byte
/// larger cannot be framed in one datagram to the client, and is dropped
/// with a debug line.
#[tokio::test]
async fn udp_carries_the_largest_datagrams_and_drops_larger_ones_with_a_reason() {
    let server = TestServer::start(ServerOptions {
        log_level: Some(LOG_LEVEL),
        ..ServerOptions::turn()
    });
    for family in families() {
        let credentials = Credentials::new(TURN_USER, TURN_PASSWORD);
        let mut client = TurnClient::bind(SocketAddr::new(family, server.port), credentials)
            .await
            .unwrap();
        let params = AllocateParams {
            family: Some(family_attribute(family)),
            ..AllocateParams::default()
        };
        let relayed = client.allocate(params).await.unwrap().relayed;
        let udp_limit = max_udp_payload(family);
        let mut buf = vec![0u8; 65_536];

        let peer = peer_socket(family);
        let peer_addr = peer.local_addr().unwrap();
        client.channel_bind(0x4000, peer_addr).await.unwrap();
        let largest = udp_limit - 4;
        let data = pattern(largest);
        client.send_channel_data(0x4000, &data).await.unwrap();
        assert_eq!(peer_receives(&peer), (data.clone(), relayed), "{family}");
        peer.send_to(&data, relayed).unwrap();
        let got = tokio::time::timeout(STEP, client.recv(&mut buf)).await;
        let expected = Relayed::Channel {
            channel: 0x4000,
            data: &data,
        };
        assert!(got.unwrap().unwrap() == expected, "{largest} bytes back");
        peer.send_to(&pattern(largest + 1), relayed).unwrap();
        drop_logged(&server, "too_big_for_client", largest + 1);
        peer.send_to(b"after", relayed).unwrap();
        let got = tokio::time::timeout(STEP, client.recv(&mut buf)).await;
        let after = Relayed::Channel {
            channel: 0x4000,
            data: b"after",
        };
        assert_eq!(got.unwrap().unwrap(), after, "nothing else arrived");

        // Send and Data indications: 20 + 4 + 8 (IPv4) or 20 (IPv6) + 4 +
        // the data padded to a word, within one datagram.
        let peer2 = peer_socket(family);
        let peer2_addr = peer2.local_addr().unwrap();
        client.create_permission(&[peer2_addr]).await.unwrap();
        let address = if family.is_ipv4() { 8 } else { 20 };
        let largest = (udp_limit - 20 - 4 - address - 4) & !3;
        let data = pattern(largest);
        client.send_indication(peer2_addr, &data).await.unwrap();
        assert_eq!(peer_receives(&peer2), (data.clone(), relayed));
        peer2.send_to(&data, relayed).unwrap();
        let got = tokio::time::timeout(STEP, client.recv(&mut buf)).await;
        let expected = Relayed::Indication {
            peer: peer2_addr,
            data: &data,
        };
        assert!(got.unwrap().unwrap() == expected, "{largest} bytes back");
        peer2.send_to(&pattern(largest + 1), relayed).unwrap();
        drop_logged(&server, "too_big_for_client", largest + 1);
    }
}

/// A control connection over TCP or TLS to the server's `family` address.
fn stream_client(
    server: &TestServer,
    pki: &Pki,
    tls: bool,
    family: IpAddr,
) -> TcpRelayClient<Box<dyn ReadWrite>> {
    let port = if tls {
        server.tls_port.expect("TLS configured")
    } else {
        server.port
    };
    let addr = SocketAddr::new(family, port);
    let tcp = TcpStream::connect_timeout(&addr, STEP).unwrap();
    tcp.set_read_timeout(Some(STEP)).unwrap();
    tcp.set_nodelay(true).unwrap();
    let stream: Box<dyn ReadWrite> = if tls {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(support::pki::der_of(pki.root())))
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from("turn1").unwrap();
        let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        Box::new(rustls::StreamOwned::new(connection, tcp))
    } else {
        Box::new(tcp)
    };
    let credentials = Credentials::new(TURN_USER, TURN_PASSWORD);
    TcpRelayClient::over(stream, addr, credentials, STEP)
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Over TCP and TLS: a peer's largest datagram (65,507 bytes over IPv4,
/// 65,527 over IPv6) both ways as ChannelData, one byte more is too much
/// for the peer; the largest Send indication each way (65,507 over IPv4;
/// over IPv6 a STUN body of 65,532 bytes holds 65,504), and an IPv6 peer's
/// larger datagrams cannot become a Data indication. Every drop is logged.
#[test]
fn tcp_and_tls_carry_the_largest_datagrams() {
    let pki = Pki::new();
    let server = server(&pki, Some(LOG_LEVEL));
    for tls in [false, true] {
        for family in families() {
            let what = format!("{} {family}", if tls { "TLS" } else { "TCP" });
            let mut client = stream_client(&server, &pki, tls, family);
            let family_attr = Attribute::RequestedAddressFamily(family_attribute(family));
            let reply = client.allocate_udp(&[family_attr]).unwrap();
            assert_eq!(reply.class(), Class::Success, "{what}: {:?}", reply.code());
            let relayed = reply.relayed()[0];
            let udp_limit = max_udp_payload(family);

            let peer = peer_socket(family);
            let peer_addr = peer.local_addr().unwrap();
            let reply = client.channel_bind(0x4000, peer_addr).unwrap();
            assert_eq!(reply.class(), Class::Success, "{what}");
            let data = pattern(udp_limit);
            client.send_channel_data(0x4000, &data).unwrap();
            assert_eq!(peer_receives(&peer), (data.clone(), relayed), "{what}");
            peer.send_to(&data, relayed).unwrap();
            let expected = StreamData::Channel {
                channel: 0x4000,
                data: data.clone(),
            };
            assert!(
                client.next_data().unwrap() == expected,
                "{what}: back whole"
            );
            // ChannelData carries up to 65,535 bytes; the peer cannot.
            client
                .send_channel_data(0x4000, &pattern(udp_limit + 1))
                .unwrap();
            drop_logged(&server, "too_big_for_peer", udp_limit + 1);
            client.send_channel_data(0x4000, b"after").unwrap();
            assert_eq!(peer_receives(&peer).0, b"after", "{what}: nothing else");

            let peer2 = peer_socket(family);
            let peer2_addr = peer2.local_addr().unwrap();
            let reply = client.create_permission(peer2_addr).unwrap();
            assert_eq!(reply.class(), Class::Success, "{what}");
            let largest = if family.is_ipv4() { udp_limit } else { 65_504 };
            let data = pattern(largest);
            client.send_indication(peer2_addr, &data).unwrap();
            assert_eq!(peer_receives(&peer2), (data.clone(), relayed), "{what}");
            peer2.send_to(&data, relayed).unwrap();
            let expected = StreamData::Indication {
                peer: peer2_addr,
                data,
            };
            assert!(
                client.next_data().unwrap() == expected,
                "{what}: back whole"
            );
            if family.is_ipv6() {
                peer2.send_to(&pattern(largest + 1), relayed).unwrap();
                drop_logged(&server, "too_big_for_client", largest + 1);
            }
        }
    }
}

/// DONT-FRAGMENT (RFC 8656 §14), on a path with a 1,500-byte MTU (the
/// test's own network namespace, whose `lo` it shrinks): without it a
/// 2,100-byte datagram is fragmented and arrives; with it on the
/// allocation, datagrams to the peer carry DF, and one larger than the
/// path MTU is refused by the kernel and dropped with a `path_mtu` debug
/// line, while one that fits still arrives.
#[tokio::test]
async fn dont_fragment_drops_what_exceeds_the_path_mtu() {
    support::private_network_namespace();
    let mtu = support::run("ip", &["link", "set", "lo", "mtu", "1500"]);
    assert_eq!(mtu.code(), Some(0), "{}", mtu.describe());
    let server = TestServer::start(ServerOptions {
        log_level: Some(LOG_LEVEL),
        ..ServerOptions::turn()
    });
    let family: IpAddr = PRIMARY_V4.into();
    for dont_fragment in [false, true] {
        let credentials = Credentials::new(TURN_USER, TURN_PASSWORD);
        let mut client = TurnClient::bind(SocketAddr::new(family, server.port), credentials)
            .await
            .unwrap();
        let params = AllocateParams {
            dont_fragment,
            ..AllocateParams::default()
        };
        let relayed = client.allocate(params).await.unwrap().relayed;
        let peer = peer_socket(family);
        let peer_addr = peer.local_addr().unwrap();
        client.create_permission(&[peer_addr]).await.unwrap();
        let large = pattern(2_100);
        client.send_indication(peer_addr, &large).await.unwrap();
        if dont_fragment {
            drop_logged(&server, "path_mtu", 2_100);
        } else {
            assert_eq!(peer_receives(&peer), (large, relayed), "fragmented");
        }
        let fits = pattern(1_400);
        client.send_indication(peer_addr, &fits).await.unwrap();
        assert_eq!(
            peer_receives(&peer),
            (fits, relayed),
            "DF {dont_fragment}: within the MTU, it arrives"
        );
    }
}
