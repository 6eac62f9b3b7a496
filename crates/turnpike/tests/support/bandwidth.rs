//! A bandwidth cap measured against a real server: one allocation of ours
//! (turnpike-client) with a channel to a UDP peer of the test's own, data
//! sent at a fixed rate each way in turn, and what came through compared
//! with the cap and with the server's counters on `/metrics`.
//!
//! The server's relayed (on the sockets and, with the fast path on, by the
//! XDP program) and dropped counters say how many datagrams the relay let
//! through; the receiving side then waits for exactly that many
//! (an event, not a guess of how long the last one takes).

use std::io::ErrorKind;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use turnpike_client::{AllocateParams, Credentials, TurnClient};

use super::{TURN_PASSWORD, TURN_USER, TestServer, admin_get, eventually, metric};

const CHANNEL: u16 = 0x4000;
/// Payload of each datagram.
pub const SIZE: usize = 1000;

/// One direction's run: datagrams sent, and the payload bytes that
/// arrived over how long the sender sent.
#[derive(Debug)]
pub struct Direction {
    pub sent: u64,
    pub received_bytes: u64,
    pub sending_time: Duration,
}

impl Direction {
    /// Asserts that what arrived is within `cap` bytes per second plus its
    /// one second of burst, and at least the cap's rate over the sending
    /// time (a cap, not a stop).
    pub fn assert_within(&self, what: &str, cap: u64) {
        let secs = self.sending_time.as_secs_f64();
        let ceiling = cap as f64 * (secs + 1.0);
        let floor = cap as f64 * secs;
        let got = self.received_bytes as f64;
        assert!(
            got <= ceiling,
            "{what}: {got} bytes in {secs:.2} s, over the cap {cap} B/s + 1 s of burst ({ceiling})"
        );
        assert!(
            got >= floor,
            "{what}: {got} bytes in {secs:.2} s, under the cap's rate {cap} B/s ({floor})"
        );
    }
}

/// Both ways through one allocation.
#[derive(Debug)]
pub struct CapRun {
    pub to_peer: Direction,
    pub to_client: Direction,
}

/// Datagrams dropped over a bandwidth cap, so far.
pub fn capped(server: &TestServer) -> u64 {
    metric(
        server,
        "turnpike_dropped_packets_total{reason=\"bandwidth_cap\"}",
    )
}

/// Datagrams relayed `direction` ("to_peer", "to_client") so far, every
/// path together (the sockets, and the XDP program with the fast path on).
fn relayed(server: &TestServer, direction: &str) -> u64 {
    let series = format!("turnpike_relayed_packets_total{{direction=\"{direction}\",path=");
    admin_get(server, "/metrics")
        .lines()
        .filter(|line| line.starts_with(&series))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Sends `count` datagrams of [`SIZE`] with `send`, one every `every`.
fn paced(count: u64, every: Duration, mut send: impl FnMut()) -> Duration {
    let start = Instant::now();
    for i in 0..count {
        // Pacing, not synchronisation: the rate is what is under test.
        let due = start + every.mul_f64(i as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        send();
    }
    start.elapsed()
}

/// Waits until the server has accounted for `sent` more datagrams
/// `direction` than `before` (relayed or dropped over the cap); returns
/// how many it relayed since.
fn accounted(server: &TestServer, direction: &str, before: (u64, u64), sent: u64) -> u64 {
    let mut through = 0;
    eventually(
        "the server counts every datagram sent",
        Duration::from_secs(10),
        || {
            through = relayed(server, direction) - before.0;
            through + capped(server) - before.1 >= sent
        },
    );
    through
}

/// Runs `send` while a thread reads `socket` (the kernel's buffer would
/// not hold a whole run), then waits for as many datagrams as the server
/// relayed `direction`: the payload bytes that arrived. `header` is what
/// precedes the payload in each datagram.
fn measure(
    server: &TestServer,
    (socket, header): (&UdpSocket, usize),
    direction: &str,
    send: impl FnOnce() -> (u64, Duration),
) -> Direction {
    let before = (relayed(server, direction), capped(server));
    let (datagrams, bytes, stop) = (AtomicU64::new(0), AtomicU64::new(0), AtomicBool::new(false));
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("read timeout");
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut buf = vec![0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                match socket.recv(&mut buf) {
                    Ok(n) => {
                        bytes.fetch_add((n - header) as u64, Ordering::Relaxed);
                        datagrams.fetch_add(1, Ordering::Relaxed);
                    }
                    // The timeout only lets the loop see `stop`.
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(e) => panic!("receiving: {e}"),
                }
            }
        });
        // Stops the reader however this closure ends: a failed assertion
        // would otherwise leave the scope waiting for it forever.
        let _stop = StopOnDrop(&stop);
        let (sent, sending_time) = send();
        let through = accounted(server, direction, before, sent);
        eventually(
            "every datagram relayed arrives",
            Duration::from_secs(5),
            || datagrams.load(Ordering::Relaxed) >= through,
        );
        assert_eq!(datagrams.load(Ordering::Relaxed), through, "{direction}");
        Direction {
            sent,
            received_bytes: bytes.load(Ordering::Relaxed),
            sending_time,
        }
    })
}

/// Sets its flag when dropped, unwinding included.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// An allocation of ours with [`CHANNEL`] bound to a peer socket of ours,
/// both as plain blocking sockets.
#[derive(Debug)]
pub struct Channel {
    pub client: UdpSocket,
    pub peer: UdpSocket,
    pub relay: std::net::SocketAddr,
}

impl Channel {
    /// Allocates on `server` as the loopback user and binds the channel.
    pub fn open(server: &TestServer) -> Channel {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let peer = UdpSocket::bind("127.0.0.1:0").expect("peer socket");
        let peer_addr = peer.local_addr().expect("peer address");
        let (client, relay) = runtime.block_on(async {
            let credentials = Credentials::new(TURN_USER, TURN_PASSWORD);
            let mut client = TurnClient::bind(server.v4(), credentials)
                .await
                .expect("client socket");
            let allocated = client
                .allocate(AllocateParams::default())
                .await
                .expect("allocated");
            client
                .channel_bind(CHANNEL, peer_addr)
                .await
                .expect("channel bound");
            let (socket, _) = client.into_parts();
            (socket.into_std().expect("a std socket"), allocated.relayed)
        });
        client
            .set_nonblocking(false)
            .expect("blocking client socket");
        Channel {
            client,
            peer,
            relay,
        }
    }

    /// Sends ChannelData of [`SIZE`] bytes at `rate` bytes per second for
    /// `duration`; returns how many and how long that took.
    pub fn flood_to_peer(&self, rate: u64, duration: Duration) -> (u64, Duration) {
        let (count, every) = pace(rate, duration);
        let mut frame = vec![0u8; SIZE + 4];
        let len = turnpike_client::data::encode_channel_data(&mut frame, CHANNEL, &[0x5a; SIZE])
            .expect("ChannelData");
        let took = paced(count, every, || {
            self.client.send(&frame[..len]).expect("send to the server");
        });
        (count, took)
    }

    /// Sends datagrams of [`SIZE`] bytes from the peer to the relayed
    /// address at `rate` bytes per second for `duration`.
    pub fn flood_to_client(&self, rate: u64, duration: Duration) -> (u64, Duration) {
        let (count, every) = pace(rate, duration);
        let took = paced(count, every, || {
            self.peer
                .send_to(&[0x5a; SIZE], self.relay)
                .expect("send to the relay");
        });
        (count, took)
    }
}

/// How many datagrams of [`SIZE`] make `rate` over `duration`, and how
/// far apart.
fn pace(rate: u64, duration: Duration) -> (u64, Duration) {
    let count = rate * duration.as_secs() / SIZE as u64;
    (count, Duration::from_secs_f64(SIZE as f64 / rate as f64))
}

/// Allocates on `server` (a TURN server with the admin endpoint), binds a
/// channel to a peer socket of ours, and sends [`SIZE`]-byte datagrams at
/// `rate` bytes per second for `duration`, client to peer, then peer to
/// client.
pub fn run_at(server: &TestServer, rate: u64, duration: Duration) -> CapRun {
    let channel = Channel::open(server);
    let to_peer = measure(server, (&channel.peer, 0), "to_peer", || {
        channel.flood_to_peer(rate, duration)
    });
    // ChannelData: a 4-byte header before the payload.
    let to_client = measure(server, (&channel.client, 4), "to_client", || {
        channel.flood_to_client(rate, duration)
    });
    CapRun { to_peer, to_client }
}
