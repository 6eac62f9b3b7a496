//! Tests of the batched UDP socket, over loopback.

use super::*;
use std::future::Future;
use std::net::Ipv6Addr;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(5);

async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(TIMEOUT, future)
        .await
        .expect("timed out")
}

fn bind(addr: &str) -> BatchUdpSocket {
    BatchUdpSocket::bind(addr.parse().unwrap(), &UdpOptions::default()).unwrap()
}

/// Receives until `count` datagrams have arrived; returns payloads and metas.
async fn recv_n(
    socket: &BatchUdpSocket,
    batch: &mut RecvBatch,
    count: usize,
) -> Vec<(Vec<u8>, RecvMeta)> {
    let mut out = Vec::new();
    while out.len() < count {
        let n = within(socket.recv_batch(batch)).await.unwrap();
        assert!(n >= 1 && n == batch.len());
        out.extend(batch.iter().map(|(bytes, meta)| (bytes.to_vec(), meta)));
    }
    assert_eq!(out.len(), count, "more datagrams than expected");
    out
}

fn payload(i: usize) -> Vec<u8> {
    let len = 1 + (i * 97) % 1400;
    (0..len).map(|j| (i * 31 + j) as u8).collect()
}

#[tokio::test]
async fn batch_to_several_receivers_v4() {
    let sender = bind("127.0.0.1:0");
    let receivers: Vec<_> = (0..3).map(|_| bind("127.0.0.1:0")).collect();
    let mut send = SendBatch::new(32, 1500);
    for i in 0..20 {
        let to = receivers[i % 3].local_addr();
        assert!(send.push(to, None, &payload(i)));
    }
    assert_eq!(send.len(), 20);
    assert_eq!(within(sender.send_batch(&mut send)).await.unwrap(), 20);
    assert!(send.is_empty());
    assert_eq!(send.failed_count(), 0);

    let mut recv = RecvBatch::new(8, 1500);
    for (r, receiver) in receivers.iter().enumerate() {
        let expected: Vec<_> = (0..20).filter(|i| i % 3 == r).map(payload).collect();
        let got = recv_n(receiver, &mut recv, expected.len()).await;
        for ((bytes, meta), want) in got.iter().zip(&expected) {
            assert_eq!(bytes, want);
            assert_eq!(meta.source, sender.local_addr());
            assert_eq!(meta.destination, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
            assert!(!meta.truncated);
        }
    }
}

#[tokio::test]
async fn wildcard_socket_answers_from_chosen_address() {
    let server = bind("0.0.0.0:0");
    let port = server.local_addr().port();
    assert!(server.local_addr().ip().is_unspecified());
    let client = bind("127.0.0.1:0");
    let mut send = SendBatch::new(4, 1500);
    let mut recv = RecvBatch::new(4, 1500);

    // Request to 127.0.0.1, answer from 127.0.0.2.
    assert!(send.push(SocketAddr::from(([127, 0, 0, 1], port)), None, b"ping"));
    assert_eq!(within(client.send_batch(&mut send)).await.unwrap(), 1);
    let got = recv_n(&server, &mut recv, 1).await;
    assert_eq!(got[0].0, b"ping");
    assert_eq!(got[0].1.source, client.local_addr());
    assert_eq!(got[0].1.destination, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    assert!(send.push_with(got[0].1.source, Some(other), |buf| {
        buf[..4].copy_from_slice(b"pong");
        4
    }));
    assert_eq!(within(server.send_batch(&mut send)).await.unwrap(), 1);
    let reply = recv_n(&client, &mut recv, 1).await;
    assert_eq!(reply[0].0, b"pong");
    assert_eq!(reply[0].1.source, SocketAddr::new(other, port));

    // Request to 127.0.0.2, answer from where it arrived.
    assert!(send.push(SocketAddr::new(other, port), None, b"ping2"));
    assert_eq!(within(client.send_batch(&mut send)).await.unwrap(), 1);
    let got = recv_n(&server, &mut recv, 1).await;
    assert_eq!(got[0].1.destination, Some(other));
    assert!(send.push(got[0].1.source, got[0].1.destination, b"pong2"));
    assert_eq!(within(server.send_batch(&mut send)).await.unwrap(), 1);
    let reply = recv_n(&client, &mut recv, 1).await;
    assert_eq!(reply[0].0, b"pong2");
    assert_eq!(reply[0].1.source, SocketAddr::new(other, port));
}

fn int_option(socket: &BatchUdpSocket, level: libc::c_int, name: libc::c_int) -> libc::c_int {
    sys::get_int_option(socket.fd.get_ref(), level, name)
        .unwrap_or_else(|err| panic!("getsockopt({level}, {name}): {err}"))
}

#[tokio::test]
async fn dont_fragment_is_switched_per_datagram() {
    let v4 = bind("127.0.0.1:0");
    v4.set_dont_fragment(true).unwrap();
    let mode = int_option(&v4, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER);
    assert_eq!(mode, libc::IP_PMTUDISC_DO, "DF set");
    v4.set_dont_fragment(false).unwrap();
    let mode = int_option(&v4, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER);
    assert_eq!(mode, libc::IP_PMTUDISC_WANT, "back to the kernel's default");
    let v6 = bind("[::1]:0");
    v6.set_dont_fragment(true).unwrap();
    assert_eq!(int_option(&v6, libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG), 1);
    v6.set_dont_fragment(false).unwrap();
    assert_eq!(int_option(&v6, libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG), 0);
}

#[tokio::test]
async fn reuse_port_and_dual_stack_binds() {
    let opts = UdpOptions {
        reuse_port: true,
        recv_buffer_size: Some(1 << 20),
        send_buffer_size: Some(1 << 20),
        dont_fragment: true,
    };
    let a = BatchUdpSocket::bind("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
    assert_eq!(
        int_option(&a, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER),
        libc::IP_PMTUDISC_DO,
        "DONT-FRAGMENT sets the DF bit"
    );
    let b = BatchUdpSocket::bind(a.local_addr(), &opts).unwrap();
    assert_eq!(a.local_addr(), b.local_addr());
    assert!(a.recv_buffer_size().unwrap() > 0);
    assert!(a.send_buffer_size().unwrap() > 0);

    // Without SO_REUSEPORT a second socket cannot take the address.
    let c = bind("127.0.0.1:0");
    let err = BatchUdpSocket::bind(c.local_addr(), &UdpOptions::default()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);

    // IPV6_V6ONLY: [::]:p and 0.0.0.0:p are separate sockets.
    let v6 = bind("[::]:0");
    let port = v6.local_addr().port();
    let v4 = BatchUdpSocket::bind(
        SocketAddr::from(([0, 0, 0, 0], port)),
        &UdpOptions::default(),
    )
    .unwrap();
    assert_eq!(v4.local_addr().port(), port);
}

#[tokio::test]
async fn ipv6_loopback() {
    let a = bind("[::1]:0");
    let b = bind("[::]:0");
    let b_port = b.local_addr().port();
    let mut send = SendBatch::new(8, 1500);
    let mut recv = RecvBatch::new(8, 1500);
    for i in 0..5 {
        assert!(send.push(
            SocketAddr::from((Ipv6Addr::LOCALHOST, b_port)),
            None,
            &payload(i)
        ));
    }
    assert_eq!(within(a.send_batch(&mut send)).await.unwrap(), 5);
    let got = recv_n(&b, &mut recv, 5).await;
    for (i, (bytes, meta)) in got.iter().enumerate() {
        assert_eq!(*bytes, payload(i));
        assert_eq!(meta.source, a.local_addr());
        assert_eq!(meta.destination, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    }
    // Reply from the wildcard socket with an explicit IPv6 source.
    assert!(send.push(got[0].1.source, got[0].1.destination, b"back"));
    assert_eq!(within(b.send_batch(&mut send)).await.unwrap(), 1);
    let reply = recv_n(&a, &mut recv, 1).await;
    assert_eq!(reply[0].0, b"back");
    assert_eq!(
        reply[0].1.source,
        SocketAddr::from((Ipv6Addr::LOCALHOST, b_port))
    );
    assert_eq!(
        reply[0].1.destination,
        Some(IpAddr::V6(Ipv6Addr::LOCALHOST))
    );
}

#[tokio::test]
async fn datagrams_larger_than_a_slot_arrive_whole() {
    let a = bind("127.0.0.1:0");
    let b = bind("127.0.0.1:0");
    // Larger than the slots, interleaved with small ones, several in
    // one receive: each has its own spill area.
    let sizes = [200, 64, 0, 65_507, 65, 9_000, 1];
    let datagram = |n: usize| -> Vec<u8> { (0..n).map(|i| (i * 7 + n) as u8).collect() };
    let mut send = SendBatch::new(8, 10_000);
    for &n in &sizes {
        assert!(
            send.push(b.local_addr(), None, &datagram(n)),
            "{n} bytes queued"
        );
    }
    assert_eq!(within(a.send_batch(&mut send)).await.unwrap(), sizes.len());
    let mut recv = RecvBatch::new(8, 64);
    let got = recv_n(&b, &mut recv, sizes.len()).await;
    for (&n, (bytes, meta)) in sizes.iter().zip(&got) {
        assert_eq!(bytes.len(), n);
        assert!(*bytes == datagram(n), "{n}-byte datagram intact");
        assert!(!meta.truncated);
    }
    // The slots are reused for small datagrams afterwards.
    assert!(send.push(b.local_addr(), None, b"small"));
    within(a.send_batch(&mut send)).await.unwrap();
    let got = recv_n(&b, &mut recv, 1).await;
    assert_eq!(got[0].0, b"small");
}

#[tokio::test]
async fn bad_destinations_do_not_fail_the_batch() {
    let a = bind("127.0.0.1:0");
    let b = bind("127.0.0.1:0");
    let to = b.local_addr();
    let mut send = SendBatch::new(16, 1500);
    assert!(send.push(to, None, b"0"));
    assert!(send.push("0.0.0.0:0".parse().unwrap(), None, b"x")); // EINVAL
    assert!(send.push(to, None, b"1"));
    assert!(send.push("[::1]:9".parse().unwrap(), None, b"x")); // IPv6 on IPv4 socket
    assert!(send.push(to, Some("::1".parse().unwrap()), b"x")); // IPv6 source on IPv4 socket
    assert!(send.push(to, Some("203.0.113.7".parse().unwrap()), b"x")); // not a local address
    assert!(send.push("[::ffff:127.0.0.1]:0".parse().unwrap(), None, b"x")); // mapped, port 0
    assert!(send.push(
        SocketAddr::V6(format!("[::ffff:127.0.0.1]:{}", to.port()).parse().unwrap()),
        None,
        b"2"
    ));
    assert!(send.push(to, Some("::ffff:127.0.0.1".parse().unwrap()), b"3"));
    assert_eq!(within(a.send_batch(&mut send)).await.unwrap(), 4);
    assert_eq!(send.failed_count(), 5);
    assert!(send.is_empty());
    let got = recv_n(&b, &mut recv_batch(), 4).await;
    let bodies: Vec<_> = got.iter().map(|(bytes, _)| bytes.clone()).collect();
    assert_eq!(bodies, [b"0", b"1", b"2", b"3"]);

    // IPv6 socket (V6ONLY): IPv4 destinations fail one by one.
    let c = bind("[::1]:0");
    let d = bind("[::1]:0");
    assert!(send.push(d.local_addr(), None, b"a"));
    assert!(send.push(to, None, b"x")); // ENETUNREACH
    assert!(send.push(d.local_addr(), None, b"b"));
    assert!(send.push(d.local_addr(), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)), b"x"));
    assert!(send.push(d.local_addr(), None, b"c"));
    assert_eq!(within(c.send_batch(&mut send)).await.unwrap(), 3);
    assert_eq!(send.failed_count(), 5 + 2);
    let got = recv_n(&d, &mut recv_batch(), 3).await;
    let bodies: Vec<_> = got.iter().map(|(bytes, _)| bytes.clone()).collect();
    assert_eq!(bodies, [b"a", b"b", b"c"]);

    // Too large for UDP: EMSGSIZE.
    let mut huge = SendBatch::new(2, 70_000);
    assert!(huge.push_with(to, None, |buf| buf.len()));
    assert!(huge.push(to, None, b"ok"));
    assert_eq!(within(a.send_batch(&mut huge)).await.unwrap(), 1);
    assert_eq!(huge.failed_count(), 1);
    let got = recv_n(&b, &mut recv_batch(), 1).await;
    assert_eq!(got[0].0, b"ok");
}

fn recv_batch() -> RecvBatch {
    RecvBatch::new(16, 2048)
}

#[tokio::test]
async fn push_limits() {
    let mut send = SendBatch::new(2, 8);
    let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
    assert!(!send.push(to, None, &vec![0; MAX_DATAGRAM + 1]));
    assert!(send.push_with(to, None, |_| 0));
    assert!(send.is_empty());
    assert!(send.push(to, None, b"12345678"));
    assert!(send.push_with(to, None, |buf| buf.len() + 100));
    assert!(send.is_full());
    assert_eq!(send.len(), 2);
    assert!(!send.push(to, None, b"x"));
    assert!(!send.push_with(to, None, |_| unreachable!()));
    send.clear();
    // A large datagram takes the room of many small ones: the batch
    // is full after it although it holds fewer than `capacity`.
    let mut batch = SendBatch::new(4, 1000);
    assert!(batch.push(to, None, &[1; 1000]));
    assert!(batch.push(to, None, &[2; 60_000]));
    assert!(batch.is_full());
    assert_eq!(batch.len(), 2);
    assert!(!batch.push(to, None, b"x"));
    batch.clear();
    for _ in 0..4 {
        assert!(
            batch.push(to, None, &[3; 1000]),
            "small ones: `capacity` fit"
        );
    }
    assert!(batch.is_full());
    let socket = bind("127.0.0.1:0");
    let mut empty = SendBatch::new(1, 1);
    assert_eq!(within(socket.send_batch(&mut empty)).await.unwrap(), 0);
}

#[tokio::test]
async fn push_in_place_sends_what_fill_wrote_to_where_it_said() {
    let receiver = bind("127.0.0.1:0");
    let to = receiver.local_addr();
    let mut send = SendBatch::new(2, 16);
    assert!(send.push_in_place(|_| None));
    assert!(send.is_empty(), "None queues nothing");
    assert!(send.push_in_place(|slot| {
        slot[..5].copy_from_slice(b"hello");
        Some((5, to, None))
    }));
    assert_eq!(send.len(), 1);
    let socket = bind("127.0.0.1:0");
    assert_eq!(within(socket.send_batch(&mut send)).await.unwrap(), 1);
    let mut recv = RecvBatch::new(4, 64);
    assert_eq!(within(receiver.recv_batch(&mut recv)).await.unwrap(), 1);
    let (data, meta) = recv.get(0);
    assert_eq!(data, b"hello");
    assert_eq!(meta.source, socket.local_addr());
}

#[tokio::test]
async fn batches_survive_moves_between_threads() {
    fn assert_send<T: Send>(_: &T) {}
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<BatchUdpSocket>();

    let (mut send, mut recv) =
        std::thread::spawn(|| (SendBatch::new(4, 64), RecvBatch::new(4, 64)))
            .join()
            .unwrap();
    let a = bind("127.0.0.1:0");
    let b = bind("127.0.0.1:0");
    assert!(send.push(b.local_addr(), None, b"first"));
    {
        let future = a.send_batch(&mut send);
        assert_send(&future);
        within(future).await.unwrap();
    }
    {
        let future = b.recv_batch(&mut recv);
        assert_send(&future);
        within(future).await.unwrap();
    }
    assert_eq!(recv.get(0).0, b"first");

    // Move both batches (their boxes stay put, the structs move) and reuse.
    let mut moved = Box::new((send, recv));
    assert!(moved.0.push(b.local_addr(), None, b"second"));
    within(a.send_batch(&mut moved.0)).await.unwrap();
    within(b.recv_batch(&mut moved.1)).await.unwrap();
    assert_eq!(moved.1.get(0).0, b"second");
}

#[test]
fn bind_outside_runtime_is_an_error() {
    let err =
        BatchUdpSocket::bind("127.0.0.1:0".parse().unwrap(), &UdpOptions::default()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::Other);
}
