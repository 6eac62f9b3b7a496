//! The XDP fast path with coturn's reference tools. Each test moves its
//! thread into a network namespace of its own (so the program goes on that
//! namespace's loopback, never the machine's), starts the server there with
//! `[xdp] interfaces = ["lo"]` (generic XDP), and runs `turnutils_uclient`
//! and `turnutils_peer` beside it. The verdicts are uclient's totals (every
//! message back, no loss) and the program's own counters on `/metrics`,
//! which say whether the datagrams went through the kernel path or the
//! sockets. Needs root, like the rest of the suite.

mod support;

use std::net::IpAddr;
use std::process::{Command, Stdio};

use support::bandwidth::{SIZE, capped, run_at};
use support::sizes::{Transport, relay_every_size};
use support::uclient::{Run, assert_delivered};
use support::{
    PRIMARY_V4, PRIMARY_V6, Peer, ServerOptions, TestServer, TurnOptions, metric,
    private_network_namespace, run,
};

fn v4() -> IpAddr {
    PRIMARY_V4.into()
}

fn v6() -> IpAddr {
    PRIMARY_V6.into()
}

fn xdp_server() -> TestServer {
    private_network_namespace();
    start_xdp_server()
}

/// The XDP server, in the namespace the thread is already in.
fn start_xdp_server() -> TestServer {
    TestServer::start(ServerOptions {
        admin: true,
        xdp: true,
        ..ServerOptions::turn()
    })
}

/// Datagrams the program relayed: (client → peer, peer → client).
fn relayed_in_kernel(server: &TestServer) -> (u64, u64) {
    (
        metric(
            server,
            "turnpike_xdp_relayed_packets_total{direction=\"to_peer\"}",
        ),
        metric(
            server,
            "turnpike_xdp_relayed_packets_total{direction=\"to_client\"}",
        ),
    )
}

fn xdp_attached_to_lo() -> bool {
    let out = run("ip", &["-details", "link", "show", "lo"]);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    out.stdout.contains("xdp")
}

/// Channels (uclient's default): every ChannelData message out and every
/// echo back is relayed by the program — the routes are written before the
/// ChannelBind answer leaves, so not one datagram takes the socket path —
/// and nothing is lost. Stopping the server detaches the program.
#[test]
fn channel_data_is_relayed_in_the_kernel() {
    let server = xdp_server();
    assert!(xdp_attached_to_lo(), "the program is on lo while serving");
    let peer = Peer::start(&[v4()]);
    let args = ["-m", "6", "-n", "100", "-l", "1000"];
    let (out, rep) = Run::new(&server, v4(), &args).peer(&peer, v4()).go();
    assert_delivered("XDP, channels, -m 6 -n 100 -l 1000", &out, &rep, 600, 1000);
    assert_eq!(
        relayed_in_kernel(&server),
        (600, 600),
        "every message relayed by XDP, both ways\n{}",
        server.describe()
    );
    assert_eq!(
        metric(
            &server,
            "turnpike_xdp_relayed_bytes_total{direction=\"to_peer\"}"
        ),
        600_000
    );
    assert_eq!(metric(&server, "turnpike_xdp_passed_packets_total"), 0);
    // The relay's own totals count the XDP path beside the sockets'.
    for direction in ["to_peer", "to_client"] {
        assert_eq!(
            metric(
                &server,
                &format!(
                    "turnpike_relayed_packets_total{{direction=\"{direction}\",path=\"xdp\"}}"
                )
            ),
            600,
            "{direction}"
        );
    }
    drop(server);
    assert!(
        !xdp_attached_to_lo(),
        "the program is detached when the server stops"
    );
}

/// With `turn.max_bps` the channel keeps its route and the program holds
/// the cap: ChannelData at four times the cap for two seconds each way,
/// relayed in the kernel up to the cap's rate and its one second of burst,
/// the rest dropped there and counted as `bandwidth_cap` on `/metrics`.
#[test]
fn a_bandwidth_cap_holds_with_xdp_on() {
    const CAP: u64 = 50_000;
    private_network_namespace();
    let server = TestServer::start(ServerOptions {
        admin: true,
        xdp: true,
        ipv6: false,
        turn: Some(TurnOptions {
            max_bps: CAP,
            ..TurnOptions::loopback()
        }),
        ..ServerOptions::default()
    });
    assert!(xdp_attached_to_lo(), "the program is on lo while serving");
    let run = run_at(&server, 4 * CAP, std::time::Duration::from_secs(2));
    run.to_peer.assert_within("client → peer", CAP);
    run.to_client.assert_within("peer → client", CAP);
    // Nearly all of it in the kernel: the first datagrams may come before
    // the route is in, and take the sockets (under the core's bucket).
    let (to_peer, to_client) = relayed_in_kernel(&server);
    let received = |d: &support::bandwidth::Direction| d.received_bytes / SIZE as u64;
    for (what, in_kernel, run) in [
        ("to the peer", to_peer, &run.to_peer),
        ("to the client", to_client, &run.to_client),
    ] {
        assert!(
            in_kernel * 10 >= received(run) * 9,
            "the program relayed {in_kernel} of {} {what}\n{}",
            received(run),
            server.describe()
        );
    }
    let through = received(&run.to_peer) + received(&run.to_client);
    assert_eq!(
        capped(&server),
        run.to_peer.sent + run.to_client.sent - through,
        "every datagram not relayed is dropped and counted"
    );
}

/// Client to client (`-y`): ChannelData from client A leaves relay A for
/// relay B on the same loopback and is turned into ChannelData for client B
/// by the program again — both relays without a socket.
#[test]
fn client_to_client_is_relayed_in_the_kernel() {
    let server = xdp_server();
    let args = ["-y", "-m", "4", "-n", "50", "-l", "500"];
    let (out, rep) = Run::new(&server, v4(), &args).go();
    assert_delivered("XDP, client to client, -y -m 4 -n 50", &out, &rep, 200, 500);
    assert_eq!(relayed_in_kernel(&server), (200, 200));
}

/// Runs uclient with `args` (server address `server_ip`, peer
/// `peer_ip`) through an XDP server and asserts that all `expected`
/// messages of `len` bytes came back and that the program relayed
/// `in_kernel` of them each way.
fn delivered(
    what: &str,
    (server_ip, peer_ip): (IpAddr, IpAddr),
    args: &[&str],
    (expected, len): (u64, u64),
    in_kernel: u64,
) {
    let server = xdp_server();
    let peer = Peer::start(&[peer_ip]);
    let (out, rep) = Run::new(&server, server_ip, args).peer(&peer, peer_ip).go();
    assert_delivered(what, &out, &rep, expected, len);
    assert_eq!(
        relayed_in_kernel(&server),
        (in_kernel, in_kernel),
        "{what}\n{}",
        server.describe()
    );
}

/// IPv6 (RFC 6156) end to end: client, relay and peer on ::1, every message
/// relayed by the program.
#[test]
fn ipv6_channel_data_is_relayed_in_the_kernel() {
    let args = ["-m", "2", "-n", "50", "-l", "1000"];
    delivered("XDP, IPv6 channels", (v6(), v6()), &args, (100, 1000), 100);
}

/// An IPv4 client with an IPv6 relay and peer would need a new IP header:
/// the sockets carry it.
#[test]
fn mixed_families_stay_on_the_sockets() {
    let args = ["-m", "2", "-n", "20", "-l", "500"];
    delivered(
        "XDP on, IPv4 client, IPv6 peer",
        (v4(), v6()),
        &args,
        (40, 500),
        0,
    );
}

/// Send indications (`-s`) have no route: the program leaves them to the
/// sockets, which relay them as before.
#[test]
fn send_indications_stay_on_the_sockets() {
    let args = ["-s", "-m", "2", "-n", "20", "-l", "1000"];
    delivered(
        "XDP on, Send indications",
        (v4(), v4()),
        &args,
        (40, 1000),
        0,
    );
}

/// Over TCP the client's ChannelData never reaches XDP as a datagram: the
/// sockets relay it, and nothing is lost.
#[test]
fn tcp_clients_stay_on_the_sockets() {
    let args = ["-t", "-c", "-m", "2", "-n", "30", "-l", "101"];
    delivered("XDP on, TCP client", (v4(), v4()), &args, (60, 101), 0);
}

/// Payloads of every size, by channels and Send indications, over IPv4
/// and IPv6, with the fast path on: on `lo`'s 64 KiB MTU the program
/// rewrites every ChannelData datagram (however large), and the sockets
/// carry the Send indications. Nothing is lost.
#[test]
fn every_size_is_relayed_with_the_fast_path_on() {
    let server = xdp_server();
    let peer = Peer::start(&[v4(), v6()]);
    relay_every_size(&server, &peer, Transport::Udp, server.port, &[v4(), v6()]);
    let (to_peer, to_client) = relayed_in_kernel(&server);
    assert!(
        to_peer > 0 && to_client > 0,
        "channel data took the program: {to_peer} / {to_client}\n{}",
        server.describe()
    );
}

/// The same with `lo` at a 1,500-byte MTU: datagrams above it travel as
/// IP fragments, which the program leaves to the stack; the stack
/// reassembles them and the sockets must relay them. Nothing is lost, and
/// the program still relays the channel messages that fit the MTU.
#[test]
fn what_the_program_cannot_rewrite_the_sockets_relay() {
    private_network_namespace();
    let mtu = run("ip", &["link", "set", "lo", "mtu", "1500"]);
    assert_eq!(mtu.code(), Some(0), "{}", mtu.describe());
    let server = start_xdp_server();
    let peer = Peer::start(&[v4(), v6()]);
    relay_every_size(&server, &peer, Transport::Udp, server.port, &[v4(), v6()]);
    // Channel messages: 2 families x 7 sizes x MESSAGES, of which only the
    // 500- and 1,200-byte ones fit a 1,500-byte packet.
    let channel_messages = 2 * 7 * support::sizes::MESSAGES;
    let fitting = 2 * 2 * support::sizes::MESSAGES;
    assert_eq!(
        relayed_in_kernel(&server),
        (fitting, fitting),
        "the program relays what fits the MTU, the sockets the other {} \
         channel messages each way\n{}",
        channel_messages - fitting,
        server.describe()
    );
}

/// IPv6 forwarding off on an attached interface is no error (IPv4 works),
/// but IPv6 channels there would quietly take the socket path: the server
/// says so once at start, with the fix.
#[test]
fn ipv6_forwarding_off_is_a_warning_at_start() {
    private_network_namespace();
    for args in [
        &["link", "add", "x0", "type", "veth", "peer", "name", "x1"][..],
        &["link", "set", "x0", "up"],
        &["link", "set", "x1", "up"],
    ] {
        let out = run("ip", args);
        assert_eq!(out.code(), Some(0), "{}", out.describe());
    }
    std::fs::write("/proc/sys/net/ipv4/conf/x0/forwarding", "1").unwrap();
    std::fs::write("/proc/sys/net/ipv6/conf/x0/forwarding", "0").unwrap();
    let server = TestServer::start(ServerOptions {
        xdp: true,
        xdp_interfaces: vec!["lo", "x0"],
        ..ServerOptions::turn()
    });
    let output = server.output();
    assert!(
        output.lines().any(|l| l.contains("WARN")
            && l.contains("net.ipv6.conf.x0.forwarding is 0")
            && l.contains("sysctl -w net.ipv6.conf.x0.forwarding=1")),
        "{output}"
    );
    assert!(
        !output.contains("net.ipv6.conf.lo."),
        "loopback needs no forwarding"
    );
}

/// Runs `turnpike serve` with `[xdp] interfaces = [interface]` and returns
/// its one error line, after asserting exit status 1.
fn start_error(interface: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("turnpike.toml");
    std::fs::write(
        &config,
        format!(
            "[stun]\nlisten = [\"127.0.0.1:3478\"]\n[turn]\nrealm = \"x\"\n[[turn.users]]\nusername = \"a\"\npassword = \"b\"\n[database]\ndata_dir = \"{}\"\n[xdp]\ninterfaces = [\"{interface}\"]\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_turnpike"))
        .args(["serve", "--log-level", "error", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("turnpike: error: "), "{stderr}");
    lines[0].to_owned()
}

/// Start-up errors are one line saying what to do, exit 1, and leave no
/// program behind: an interface that does not exist, and one without IPv4
/// forwarding (where the kernel's next-hop lookup would refuse every
/// packet, silently losing the fast path).
#[test]
fn start_up_errors_are_one_clear_line() {
    private_network_namespace();
    let line = start_error("nosuch0");
    assert!(
        line.contains("cannot attach the XDP program to nosuch0")
            && line.contains("CAP_BPF")
            && line.contains("xdp.interfaces"),
        "{line}"
    );

    let veth = run(
        "ip",
        &["link", "add", "x0", "type", "veth", "peer", "name", "x1"],
    );
    assert_eq!(veth.code(), Some(0), "{}", veth.describe());
    std::fs::write("/proc/sys/net/ipv4/conf/x0/forwarding", "0").unwrap();
    let line = start_error("x0");
    assert!(
        line.contains("net.ipv4.conf.x0.forwarding is 0")
            && line.contains("sysctl -w net.ipv4.conf.x0.forwarding=1"),
        "{line}"
    );
    assert!(!xdp_attached_to_lo());
}

/// The accounting line of an allocation whose data the program relayed
/// counts it: the routes' own counters are added when they are withdrawn.
#[test]
fn accounting_lines_count_what_the_program_relayed() {
    private_network_namespace();
    let mut server = TestServer::start(ServerOptions {
        admin: true,
        xdp: true,
        json_logs: true,
        ..ServerOptions::turn()
    });
    let peer = Peer::start(&[v4()]);
    let (out, rep) = Run::new(&server, v4(), &["-c", "-n", "50", "-l", "500"])
        .peer(&peer, v4())
        .go();
    assert_delivered("XDP accounting run", &out, &rep, 50, 500);
    assert_eq!(relayed_in_kernel(&server), (50, 50), "relayed by XDP");
    let output = server.shut_down();
    let session = output
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "turnpike::accounting" && v["event"] == "allocation_ended")
        .find(|v| v["to_peer_packets"].as_u64() != Some(0))
        .unwrap_or_else(|| panic!("no ended allocation with traffic:\n{output}"));
    for (field, expected) in [
        ("to_peer_packets", 50),
        ("to_peer_bytes", 25_000),
        ("to_client_packets", 50),
        ("to_client_bytes", 25_000),
    ] {
        assert_eq!(
            session[field].as_u64(),
            Some(expected),
            "{field}: {session}"
        );
    }
}
