//! The relay must not reach its own host. Each test makes a network
//! namespace of its own with an interface at 11.22.33.44 (an address
//! in no reserved range, as a public one would be), and runs the server
//! there with the defaults that matter: wildcard listeners, no
//! `relay_ips`, no allowed peer ranges. Clients reach it at 11.22.33.44, so
//! their relayed addresses are there too.
//!
//! Before the peer policy learnt the host's addresses, a client could bind
//! a channel to 11.22.33.44:3478 and have the server answer its own relay
//! (and allocate for it), and relayed data reached any service the host
//! ran on that address. Now its listener ports and every port outside the
//! relay range are refused there, while two clients still reach each
//! other's relayed addresses.

mod support;

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::time::Duration;

use support::uclient::{Run, assert_delivered};
use support::{
    Peer, ServerOptions, TURN_PASSWORD, TURN_USER, TestServer, TurnOptions,
    private_network_namespace, run,
};
use turnpike_client::tcp_relay::TcpRelayClient;
use turnpike_client::{AllocateParams, ClientError, Credentials, Relayed, TurnClient};
use turnpike_codec::Class;

const HOST: Ipv4Addr = Ipv4Addr::new(11, 22, 33, 44);
const STEP: Duration = Duration::from_secs(5);

fn host() -> IpAddr {
    HOST.into()
}

/// A namespace whose only address besides loopback is 11.22.33.44, and a
/// server in it with wildcard listeners and no relay IPs.
fn server_on_a_public_address() -> TestServer {
    private_network_namespace();
    // A veth pair stands in for the network card (this kernel may lack
    // the dummy driver); the other end only needs to be up.
    for args in [
        &[
            "link", "add", "pub0", "type", "veth", "peer", "name", "pub1",
        ][..],
        &["addr", "add", "11.22.33.44/24", "dev", "pub0"],
        &["link", "set", "pub1", "up"],
        &["link", "set", "pub0", "up"],
    ] {
        let out = run("ip", args);
        assert_eq!(out.code(), Some(0), "{}", out.describe());
    }
    TestServer::start(ServerOptions {
        wildcard: true,
        turn: Some(TurnOptions {
            relay_ips: Vec::new(),
            allowed_peer_ranges: Vec::new(),
            ..TurnOptions::loopback()
        }),
        ..ServerOptions::turn()
    })
}

async fn client(server: &TestServer) -> (TurnClient, SocketAddr) {
    let credentials = Credentials::new(TURN_USER, TURN_PASSWORD);
    let mut client = TurnClient::bind(SocketAddr::new(host(), server.port), credentials)
        .await
        .unwrap();
    let relayed = client
        .allocate(AllocateParams::default())
        .await
        .unwrap()
        .relayed;
    assert_eq!(relayed.ip(), host(), "relayed where the request arrived");
    (client, relayed)
}

fn forbidden(result: Result<(), ClientError>, what: &str) {
    let code = result.err().and_then(|e| e.error_code());
    assert_eq!(code, Some(403), "{what}: refused with 403");
}

/// UDP: ChannelBind to the server's own listener and to another service of
/// the host is 403; CreatePermission for the host's IP succeeds (relay to
/// relay needs it) but Send indications to those ports are dropped; the
/// service receives nothing, the server answers nothing through the relay,
/// and two clients relay to each other as before.
#[tokio::test]
async fn udp_cannot_reach_the_hosts_listeners_or_services() {
    let server = server_on_a_public_address();
    let listener = SocketAddr::new(host(), server.port);
    let service = UdpSocket::bind((HOST, 0)).unwrap();
    service.set_nonblocking(true).unwrap();
    let service_addr = service.local_addr().unwrap();
    let (mut a, relay_a) = client(&server).await;
    let (mut b, relay_b) = client(&server).await;

    forbidden(
        a.channel_bind(0x4000, listener).await,
        "ChannelBind to a listener",
    );
    forbidden(
        a.channel_bind(0x4001, service_addr).await,
        "ChannelBind to a service",
    );
    a.create_permission(&[service_addr]).await.unwrap();
    b.create_permission(&[relay_a]).await.unwrap();
    // A Binding request for the server itself, through the relay: before,
    // the server answered it, with the relayed address as the client.
    let (binding, _) = support::binding_request();
    a.send_indication(listener, &binding).await.unwrap();
    a.send_indication(service_addr, b"to the service")
        .await
        .unwrap();
    a.send_indication(relay_b, b"to b").await.unwrap();

    let mut buf = vec![0u8; 2048];
    let got = tokio::time::timeout(STEP, b.recv(&mut buf)).await;
    let expected = Relayed::Indication {
        peer: relay_a,
        data: b"to b",
    };
    assert_eq!(got.unwrap().unwrap(), expected, "relay to relay works");
    // What A sent before reached nobody: the service's socket is empty, and
    // the next thing A receives is B's answer, not a Binding response.
    let err = service.recv_from(&mut buf).unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::WouldBlock,
        "the service received nothing"
    );
    b.send_indication(relay_a, b"from b").await.unwrap();
    let got = tokio::time::timeout(STEP, a.recv(&mut buf)).await;
    let expected = Relayed::Indication {
        peer: relay_b,
        data: b"from b",
    };
    assert_eq!(
        got.unwrap().unwrap(),
        expected,
        "no answer from the server itself"
    );
    a.channel_bind(0x4002, relay_b).await.unwrap();
    a.send_channel_data(0x4002, b"over a channel")
        .await
        .unwrap();
    let got = tokio::time::timeout(STEP, b.recv(&mut buf)).await;
    let expected = Relayed::Indication {
        peer: relay_a,
        data: b"over a channel",
    };
    assert_eq!(got.unwrap().unwrap(), expected);
}

/// RFC 6062: Connect to the server's own TCP listener or another TCP
/// service of the host is 403 and no connection is made; Connect to
/// another client's TCP relayed address works.
#[test]
fn tcp_connect_cannot_reach_the_hosts_listeners_or_services() {
    let server = server_on_a_public_address();
    let service = TcpListener::bind((HOST, 0)).unwrap();
    service.set_nonblocking(true).unwrap();
    let service_addr = service.local_addr().unwrap();
    let open = || {
        let credentials = Credentials::new(TURN_USER, TURN_PASSWORD);
        let mut control =
            TcpRelayClient::connect(SocketAddr::new(host(), server.port), credentials, STEP)
                .unwrap();
        let reply = control.allocate(&[]).unwrap();
        assert_eq!(reply.class(), Class::Success, "{:?}", reply.code());
        let relayed = reply.relayed()[0];
        (control, relayed)
    };
    let (mut a, relay_a) = open();
    let (mut b, relay_b) = open();
    let reply = a.create_permission(service_addr).unwrap();
    assert_eq!(
        reply.class(),
        Class::Success,
        "the host's IP itself is fine"
    );
    for peer in [SocketAddr::new(host(), server.port), service_addr] {
        let reply = a.connect_peer(peer).unwrap();
        assert_eq!(reply.code(), Some(403), "Connect to {peer}");
    }
    let err = service.accept().unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::WouldBlock,
        "no connection reached the service"
    );

    let reply = b.create_permission(relay_a).unwrap();
    assert_eq!(reply.class(), Class::Success);
    let reply = a.connect_peer(relay_b).unwrap();
    assert_eq!(
        reply.class(),
        Class::Success,
        "relay to relay: {:?}",
        reply.code()
    );
    let attempt = b.next_indication().unwrap();
    assert_eq!(attempt.peer(), Some(relay_a), "B is told A connected");
}

/// coturn's own client, relaying client to client (`-y`) through
/// 11.22.33.44: relayed addresses on the host stay reachable to each other.
#[test]
fn uclient_relays_client_to_client_on_the_hosts_address() {
    let server = server_on_a_public_address();
    // -y: sessions in multiples of 4 (two RTP/RTCP pairs talking).
    let args = ["-y", "-m", "4", "-n", "20", "-l", "500"];
    let (out, rep) = Run::new(&server, host(), &args).go();
    assert_delivered("client to client on 11.22.33.44", &out, &rep, 80, 500);
    // And coturn's echo peer on the host, outside the relay range, is a
    // service like any other: uclient's ChannelBinds to it are refused.
    let peer = Peer::start(&[host()]);
    let args = ["-c", "-n", "5", "-l", "100"];
    let (out, rep) = Run::new(&server, host(), &args).peer(&peer, host()).go();
    assert!(
        rep.error_responses()
            .iter()
            .any(|&(_, code, _)| code == 403),
        "a peer on the host outside the relay range is refused with 403: {}\n{}",
        rep.summary(),
        out.describe()
    );
}
