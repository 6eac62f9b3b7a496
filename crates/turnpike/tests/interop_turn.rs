//! TURN interoperability with coturn's reference tools, on loopback only:
//! `turnutils_uclient` (the TURN client: allocates, binds channels or sends
//! Send indications, and counts what comes back) and `turnutils_peer` (a UDP
//! echo server on port P and P + 1).
//!
//! Every expectation here was recorded against coturn 4.6.1's `turnserver`
//! (Debian 12) run through the `TURNPIKE_INTEROP_SERVER` shim with the same
//! configuration (long-term credentials alice/wonderland in realm
//! turnpike.test, relays on 127.0.0.1 and ::1, ports 61000-65000, loopback
//! peers allowed).
//!
//! What `turnutils_uclient` does, from its source and from its traffic
//! against coturn (tshark on lo):
//! - Each "client" first makes a *probe* allocation on its own socket (never
//!   freed: it expires), then the real ones. Without `-c` every client is an
//!   RTP + RTCP pair: two sessions, one talking to peer port P, the other to
//!   P + 1, so `-m M` means M sessions (rounded up to even; with `-y`, to a
//!   multiple of 4) and the totals count `sessions * n` messages.
//! - EVEN-PORT / RESERVATION-TOKEN (default, without `-c`/`-Z`): successive
//!   Allocate requests of the whole run alternate. The 1st, 3rd, 5th, ...
//!   carry EVEN-PORT with the R bit set (plus REQUESTED-ADDRESS-FAMILY) and
//!   get an even port E and a RESERVATION-TOKEN; the next one carries that
//!   token (and no address family) and gets E + 1. With `-c` or `-Z` it
//!   instead randomly sends EVEN-PORT with R = 0 or no EVEN-PORT at all.
//! - The relay family follows the peer address family (`-e ::1` asks for an
//!   IPv6 relay whatever the server address); `-x` only matters with `-y`.
//! - `-Z` sends ADDITIONAL-ADDRESS-FAMILY = IPv6 (no REQUESTED-ADDRESS-FAMILY);
//!   coturn answers with two XOR-RELAYED-ADDRESS (IPv4 first). uclient uses
//!   the one of the peer's family; in its Refreshes it randomly adds a
//!   REQUESTED-ADDRESS-FAMILY.
//! - It exits 0 even at 100 % loss (it waits ~10 s for the missing echoes,
//!   then prints the totals), so the totals are the verdict. It exits 255
//!   as soon as a request gets an error response (or, for a 401 with a new
//!   NONCE, after 32 retries), without printing totals. If the server never
//!   answers a request it blocks forever: every run has a deadline.
//! - Channel numbers are random in 0x4000-0x7FFF (RFC 5766's range; RFC 8656
//!   narrowed it to 0x4000-0x4FFF). coturn accepts the whole old range; a
//!   server that refuses 0x5000-0x7FFF fails most ChannelBinds with 400.
//! - It logs to stdout; some lines appear twice.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

use support::uclient::{Run, assert_delivered, assert_finished, assert_rejected};
use support::{
    PRIMARY_V4, PRIMARY_V6, Peer, ServerOptions, TURN_PASSWORD, TURN_USER, TestServer, ToolOutput,
    UclientReport,
};

fn v4() -> IpAddr {
    PRIMARY_V4.into()
}

fn v6() -> IpAddr {
    PRIMARY_V6.into()
}

fn assert_relay_family(what: &str, out: &ToolOutput, rep: &UclientReport, family: IpAddr) {
    let allocations = rep.allocations();
    assert!(
        !allocations.is_empty(),
        "{what}: no allocation printed (run uclient with -v)\n{}",
        out.describe()
    );
    for a in &allocations {
        let relay = a.relay().unwrap_or_else(|| {
            panic!(
                "{what}: allocation without XOR-RELAYED-ADDRESS: {a:?}\n{}",
                out.describe()
            )
        });
        assert_eq!(
            relay.ip(),
            family,
            "{what}: relayed address {relay} is not on the {family} relay; allocations: \
             {allocations:?}\n{}",
            out.describe()
        );
        assert!(
            (support::RELAY_MIN_PORT..=support::RELAY_MAX_PORT).contains(&relay.port()),
            "{what}: relayed port {} outside the configured range {}-{}\n{}",
            relay.port(),
            support::RELAY_MIN_PORT,
            support::RELAY_MAX_PORT,
            out.describe()
        );
    }
}

// ---------------------------------------------------------------------------
// Data through the relay
// ---------------------------------------------------------------------------

/// Default mode: ChannelBind + ChannelData, 6 sessions (3 RTP/RTCP client
/// pairs, peer ports P and P + 1) of 50 x 1000-byte messages. coturn:
/// `tot_send_msgs=300, tot_recv_msgs=300`, `tot_send_bytes ~ 300000,
/// tot_recv_bytes ~ 300000`, `Total lost packets 0 (0.000000%), total send
/// dropped 0 (0.000000%)`, exit 0, ~6 s.
#[test]
fn udp_channels_concurrent_clients_no_loss() {
    let server = TestServer::start(ServerOptions::turn());
    let peer = Peer::start(&[v4()]);
    let args = ["-m", "6", "-n", "50", "-l", "1000"];
    let (out, rep) = Run::new(&server, v4(), &args).peer(&peer, v4()).go();
    assert_delivered("UDP, channels, -m 6 -n 50 -l 1000", &out, &rep, 300, 1000);
}

/// `-s`: CreatePermission + Send/Data indications instead of channels.
/// coturn: 2 sessions x 20 = 40 messages both ways, no loss.
#[test]
fn send_indications_no_loss() {
    let server = TestServer::start(ServerOptions::turn());
    let peer = Peer::start(&[v4()]);
    let args = ["-s", "-m", "2", "-n", "20", "-l", "1000"];
    let (out, rep) = Run::new(&server, v4(), &args).peer(&peer, v4()).go();
    assert_delivered("Send indications (-s)", &out, &rep, 40, 1000);
}

/// `-y`: client to client. Pairs of clients bind channels to each other's
/// relayed addresses (127.0.0.1 relays are peers of each other), so data goes
/// client -> relay A -> relay B -> client. No `turnutils_peer` involved.
/// coturn: `-m 4` = 4 sessions (two RTP/RTCP pairs) x 20 = 80, no loss.
#[test]
fn client_to_client_no_loss() {
    let server = TestServer::start(ServerOptions::turn());
    let args = ["-y", "-m", "4", "-n", "20", "-l", "1000"];
    let (out, rep) = Run::new(&server, v4(), &args).go();
    assert_delivered("client to client (-y)", &out, &rep, 80, 1000);
}

/// `-g`: every Allocate carries DONT-FRAGMENT. A server that cannot honour
/// it must reject the Allocate (420), which makes uclient exit 255; coturn
/// accepts it and relays: 2 sessions x 20 = 40, no loss.
#[test]
fn dont_fragment_accepted() {
    let server = TestServer::start(ServerOptions::turn());
    let peer = Peer::start(&[v4()]);
    let args = ["-g", "-m", "2", "-n", "20", "-l", "1000"];
    let (out, rep) = Run::new(&server, v4(), &args).peer(&peer, v4()).go();
    assert_delivered("DONT-FRAGMENT (-g)", &out, &rep, 40, 1000);
}

// ---------------------------------------------------------------------------
// EVEN-PORT / RESERVATION-TOKEN
// ---------------------------------------------------------------------------

/// Default uclient (RTP + RTCP, `-m 4` = 2 clients) makes 6 allocations
/// that alternate EVEN-PORT(R=1) and RESERVATION-TOKEN (see the module
/// docs). Against coturn with `-v`:
/// ```text
/// IPv4. Received relay addr: 127.0.0.1:62414
/// clnet_allocate: rtv=113120187182283281      <- EVEN-PORT R=1: even port + token
/// IPv4. Received relay addr: 127.0.0.1:62415
/// clnet_allocate: rtv=0                       <- RESERVATION-TOKEN: the reserved E+1
/// IPv4. Received relay addr: 127.0.0.1:63520
/// clnet_allocate: rtv=13583083933288233864
/// ...
/// ```
/// and 2 x 2 sessions x 10 messages = 40 echoed, no loss.
#[test]
fn even_port_reservation_pairs() {
    let server = TestServer::start(ServerOptions::turn());
    let peer = Peer::start(&[v4()]);
    let args = ["-v", "-m", "4", "-n", "10", "-l", "200"];
    let (out, rep) = Run::new(&server, v4(), &args).peer(&peer, v4()).go();
    assert_delivered("EVEN-PORT (-m 4, RTP+RTCP)", &out, &rep, 40, 200);
    assert_relay_family("EVEN-PORT", &out, &rep, v4());

    let allocations = rep.allocations();
    assert_eq!(
        allocations.len(),
        6,
        "expected 6 allocations (2 clients x probe + RTP + RTCP), got {allocations:?}\n{}",
        out.describe()
    );
    let mut relays = Vec::new();
    for (i, pair) in allocations.chunks(2).enumerate() {
        let (even, reserved) = (pair[0], pair[1]);
        let e = even.relay().expect("relay address");
        let r = reserved.relay().expect("relay address");
        assert!(
            e.port() % 2 == 0 && even.reservation_token != 0,
            "allocation {} asked for EVEN-PORT with R=1: it must get an even port and a \
             RESERVATION-TOKEN, got {e} with token {}\n{}",
            2 * i + 1,
            even.reservation_token,
            out.describe()
        );
        assert_eq!(
            r,
            SocketAddr::new(e.ip(), e.port() + 1),
            "allocation {} carried the RESERVATION-TOKEN of allocation {} ({e}): it must get \
             the reserved port {}\n{}",
            2 * i + 2,
            2 * i + 1,
            e.port() + 1,
            out.describe()
        );
        assert_eq!(
            reserved.reservation_token,
            0,
            "allocation {} did not ask for a reservation, yet got a RESERVATION-TOKEN\n{}",
            2 * i + 2,
            out.describe()
        );
        relays.extend([e, r]);
    }
    let mut unique = relays.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        relays.len(),
        "two live allocations share a relayed address: {relays:?}\n{}",
        out.describe()
    );
}

// ---------------------------------------------------------------------------
// Address families
// ---------------------------------------------------------------------------

/// `-Z`: dual allocation (ADDITIONAL-ADDRESS-FAMILY = IPv6; implies `-c`).
/// Two runs against one server, one with an IPv4 peer and one with an IPv6
/// peer: uclient picks the relayed address of the peer's family, so both
/// relays of every dual allocation must exist and relay. coturn answered
/// `XOR-RELAYED-ADDRESS: 127.0.0.1:64059 XOR-RELAYED-ADDRESS: ::1:64451`;
/// `-m 2` = 2 clients, each a probe + 1 allocation; 2 x 10 messages each run,
/// no loss. Each Refresh randomly carries REQUESTED-ADDRESS-FAMILY IPv4, IPv6
/// or none (RFC 8656 7.3: refresh just that family); with both relays in the
/// allocation none of them may get 443.
#[test]
fn dual_allocation_relays_both_families() {
    let server = TestServer::start(ServerOptions::turn());
    let peer = Peer::start(&[v4(), v6()]);
    let args = ["-Z", "-v", "-m", "2", "-n", "10", "-l", "1000"];
    let (a, b) = thread::scope(|s| {
        let a = s.spawn(|| Run::new(&server, v4(), &args).peer(&peer, v4()).go());
        let b = s.spawn(|| Run::new(&server, v4(), &args).peer(&peer, v6()).go());
        (
            a.join().expect("uclient thread"),
            b.join().expect("uclient thread"),
        )
    });
    // The IPv6-peer run first: it needs the allocation's IPv6 relay.
    for ((out, rep), family) in [(b, v6()), (a, v4())] {
        let what = format!("dual allocation (-Z), peer on {family}");
        assert_delivered(&what, &out, &rep, 20, 1000);
        assert_relay_family(&what, &out, &rep, family);
        assert_eq!(
            rep.allocations().len(),
            4,
            "{what}: expected 4 allocations (2 clients x probe + 1)\n{}",
            out.describe()
        );
    }
}

/// All IPv6: client to [::1]:P, IPv6 relay (REQUESTED-ADDRESS-FAMILY = IPv6,
/// following the peer), peer on ::1. coturn: relays `::1:63108`, ... (EVEN-PORT
/// pairs as with IPv4), 2 sessions x 20 = 40, no loss.
#[test]
fn ipv6_client_ipv6_relay_no_loss() {
    let server = TestServer::start(ServerOptions::turn());
    let peer = Peer::start(&[v6()]);
    let args = ["-v", "-m", "2", "-n", "20", "-l", "1000"];
    let (out, rep) = Run::new(&server, v6(), &args).peer(&peer, v6()).go();
    let what = "IPv6 client, IPv6 relay, IPv6 peer";
    assert_delivered(what, &out, &rep, 40, 1000);
    assert_relay_family(what, &out, &rep, v6());
}

/// RFC 6156 family translation: IPv4 client, IPv6 relay. Two runs against
/// one server: an IPv6 peer (`-e ::1`), and client-to-client with IPv6
/// relays (`-y -x`). coturn: relays on ::1, 40 and 80 messages, no loss.
#[test]
fn ipv4_client_ipv6_relay_no_loss() {
    let server = TestServer::start(ServerOptions::turn());
    let peer = Peer::start(&[v6()]);
    let to_peer = ["-v", "-m", "2", "-n", "20", "-l", "1000"];
    let c2c = ["-v", "-y", "-x", "-m", "4", "-n", "20", "-l", "1000"];
    let (a, b) = thread::scope(|s| {
        let a = s.spawn(|| Run::new(&server, v4(), &to_peer).peer(&peer, v6()).go());
        let b = s.spawn(|| Run::new(&server, v4(), &c2c).go());
        (
            a.join().expect("uclient thread"),
            b.join().expect("uclient thread"),
        )
    });
    let what = "IPv4 client, IPv6 relay, IPv6 peer";
    assert_delivered(what, &a.0, &a.1, 40, 1000);
    assert_relay_family(what, &a.0, &a.1, v6());
    let what = "IPv4 clients, IPv6 relays, client to client (-y -x)";
    assert_delivered(what, &b.0, &b.1, 80, 1000);
    assert_relay_family(what, &b.0, &b.1, v6());
}

// ---------------------------------------------------------------------------
// Rejections
// ---------------------------------------------------------------------------

/// Wrong password, and an unknown user. A correct server answers every
/// Allocate with 401 + REALM + NONCE; uclient takes each as a fresh
/// challenge and retries. coturn: 32 Allocates (the first without
/// credentials), 32 x `401 Unauthorized`, then uclient prints
/// `ERROR: Cannot complete Allocation` and exits 255 after ~20 ms, before
/// sending any data. (A 401 without REALM/NONCE would show up as
/// `error 401 (...)` instead.)
#[test]
fn wrong_credentials_rejected() {
    let server = TestServer::start(ServerOptions::turn());
    let peer = Peer::start(&[v4()]);
    let args = ["-m", "2", "-n", "5"];
    for (user, password) in [(TURN_USER, "not-the-password"), ("mallory", TURN_PASSWORD)] {
        let started = Instant::now();
        let (out, rep) = Run::new(&server, v4(), &args)
            .peer(&peer, v4())
            .credentials(user, password)
            .go();
        let what = format!("user {user:?} with password {password:?}");
        assert_rejected(&what, &out, &rep);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: rejecting took {:?}\n{}",
            started.elapsed(),
            out.describe()
        );
    }
}

/// `-N` (with `-c`, one client): after its allocations uclient binds the
/// peer P+1 to a random channel (success), then binds the same peer to
/// another random channel. RFC 8656 12.2: a transport address already bound
/// to a different channel gets 400. coturn, with `-v`:
/// ```text
/// success: 0x7e63
/// channel bind: error 400 (You cannot use the same peer with different channel number)
/// ```
/// and uclient exits 255 (no data phase).
#[test]
fn channel_rebind_to_another_channel_rejected_400() {
    let server = TestServer::start(ServerOptions::turn());
    let peer = Peer::start(&[v4()]);
    let args = ["-N", "-c", "-v", "-m", "1", "-n", "5"];
    let (out, rep) = Run::new(&server, v4(), &args).peer(&peer, v4()).go();
    let what = "negative test -N (re-bind a bound peer to another channel)";
    assert_finished(what, &out);
    let errors = rep.error_responses();
    let binds = rep.channel_binds();
    assert!(
        !binds.is_empty(),
        "{what}: the first ChannelBind must succeed; error responses: {errors:?}\n{}",
        out.describe()
    );
    assert!(
        binds.iter().all(|c| (0x4000..=0x7FFF).contains(c)),
        "{what}: channel numbers out of range: {binds:x?}\n{}",
        out.describe()
    );
    assert_eq!(
        errors.first().map(|&(context, code, _)| (context, code)),
        Some(("channel bind", 400)),
        "{what}: re-binding the peer to a different channel must be answered with \
         400 Bad Request; error responses: {errors:?}\n{}",
        out.describe()
    );
    assert_eq!(
        out.code(),
        Some(255),
        "{what}: uclient exits 255 after the 400\n{}",
        out.describe()
    );
    assert!(
        rep.send_msgs.is_none(),
        "{what}: uclient went on to send data, so the re-bind was accepted: {}\n{}",
        rep.summary(),
        out.describe()
    );
}

// ---------------------------------------------------------------------------
// TURN over TCP (RFC 8656 over a stream; relays are UDP)
// ---------------------------------------------------------------------------

/// `-t`: the control connection is TCP; uclient's messages go over the
/// stream as ChannelData (padded to 4 bytes) and come back the same way.
#[test]
fn tcp_channels_no_loss() {
    let server = TestServer::start(ServerOptions::turn());
    let peer = Peer::start(&[v4()]);
    let args = ["-t", "-m", "2", "-n", "50", "-l", "1000"];
    let (out, rep) = Run::new(&server, v4(), &args).peer(&peer, v4()).go();
    assert_delivered("TCP, channels", &out, &rep, 100, 1000);
}

/// `-t -s`: Send and Data indications on the stream.
#[test]
fn tcp_send_indications_no_loss() {
    let server = TestServer::start(ServerOptions::turn());
    let peer = Peer::start(&[v4()]);
    let args = ["-t", "-s", "-m", "2", "-n", "50", "-l", "1000"];
    let (out, rep) = Run::new(&server, v4(), &args).peer(&peer, v4()).go();
    assert_delivered("TCP, Send indications", &out, &rep, 100, 1000);
}

/// TCP over IPv6 with an IPv6 relay and peer, odd payload lengths (the
/// ChannelData padding on the stream must be added and stripped).
#[test]
fn tcp_ipv6_odd_lengths_no_loss() {
    let server = TestServer::start(ServerOptions::turn());
    let peer = Peer::start(&[v6()]);
    let args = ["-t", "-c", "-m", "3", "-n", "30", "-l", "101"];
    let (out, rep) = Run::new(&server, v6(), &args).peer(&peer, v6()).go();
    assert_delivered("TCP over IPv6, 101-byte payloads", &out, &rep, 90, 101);
}
