//! The client against coturn's `turnserver` on
//! loopback (Debian package `coturn`, which `scripts/test` installs). A
//! missing `turnserver` fails the tests: they are never skipped.

use std::net::UdpSocket;
use std::time::Duration;

use turnpike_client::testing::{COTURN_USER, Coturn};
use turnpike_client::{AllocateParams, ClientError, Credentials, Relayed, TurnClient};

fn credentials() -> Credentials {
    let (user, password) = COTURN_USER;
    Credentials::new(user, password)
}

#[tokio::test]
async fn client_allocates_binds_relays_and_refreshes() {
    let coturn = Coturn::start();
    let mut client = TurnClient::bind(coturn.addr, credentials()).await.unwrap();
    let allocation = client.allocate(AllocateParams::default()).await.unwrap();
    assert_eq!(client.auth().realm(), Some("bench.test"));
    assert!(allocation.relayed.ip().is_loopback());
    assert!(allocation.lifetime > 0);
    assert_eq!(
        allocation.mapped.map(|m| m.port()),
        Some(client.local_addr().unwrap().port())
    );

    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let mut buf = [0u8; 2048];

    // ChannelData out and back.
    client.channel_bind(0x4000, peer_addr).await.unwrap();
    client
        .send_channel_data(0x4000, b"over the channel")
        .await
        .unwrap();
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"over the channel");
    assert_eq!(from, allocation.relayed);
    peer.send_to(b"channel reply", allocation.relayed).unwrap();
    let mut rbuf = [0u8; 2048];
    let got = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut rbuf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        got,
        Relayed::Channel {
            channel: 0x4000,
            data: b"channel reply"
        }
    );

    // Send and Data indications with a second peer.
    let peer2 = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer2
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let peer2_addr = peer2.local_addr().unwrap();
    client.create_permission(&[peer2_addr]).await.unwrap();
    client
        .send_indication(peer2_addr, b"indicated")
        .await
        .unwrap();
    let (n, _) = peer2.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"indicated");
    peer2.send_to(b"data back", allocation.relayed).unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut rbuf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        got,
        Relayed::Indication {
            peer: peer2_addr,
            data: b"data back"
        }
    );

    assert!(client.refresh(300).await.unwrap() > 0);
    assert_eq!(client.refresh(0).await.unwrap(), 0);
}

#[tokio::test]
async fn wrong_password_is_reported_as_unauthorized() {
    let coturn = Coturn::start();
    let mut client = TurnClient::bind(coturn.addr, Credentials::new("bench", "wrong"))
        .await
        .unwrap();
    match client.allocate(AllocateParams::default()).await {
        Err(ClientError::Unauthorized(_)) => {}
        other => panic!("expected Unauthorized, got {other:?}"),
    }
}
