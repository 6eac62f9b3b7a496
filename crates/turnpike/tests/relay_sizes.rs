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

use std::net::IpAddr;

use support::pki::{KeyType, Pki};
use support::sizes::{Transport, relay_every_size};
use support::{PRIMARY_V4, PRIMARY_V6, Peer, ServerOptions, TestServer, TlsFiles};

fn families() -> [IpAddr; 2] {
    [PRIMARY_V4.into(), PRIMARY_V6.into()]
}

/// A TURN server on 127.0.0.1 and ::1, with TLS and DTLS on its TLS port.
fn server(pki: &Pki) -> TestServer {
    let leaf = pki.leaf("turn1", KeyType::EcP256Sec1, 2);
    TestServer::start(ServerOptions {
        tls: Some(TlsFiles {
            certificate: leaf.chain,
            private_key: Some(leaf.key),
        }),
        ..ServerOptions::turn()
    })
}

fn every_size_over(transport: Transport) {
    let pki = Pki::new();
    let server = server(&pki);
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
