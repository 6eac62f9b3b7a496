//! Relaying payloads of many sizes with `turnutils_uclient`: the cases of
//! one transport (both methods, both address families, every size) run a
//! few at a time against one server and one `turnutils_peer`, and the
//! verdict lists every case that lost anything.
//!
//! `turnutils_uclient` cannot send every size a transport allows, so the
//! largest case of each transport is the largest *it* can carry (found
//! against Turnpike and coturn on loopback; see [`uclient_largest`]). The
//! server's own limits, which are larger, are checked with our own client
//! in `relay_sizes.rs`.

use std::net::IpAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::thread;

use super::uclient::{Run, assert_delivered};
use super::{Peer, TestServer};

/// The sizes every transport is tried with (bytes of payload), before its
/// largest: below, at and above an Ethernet MTU, and beyond the 2,048-byte
/// receive slots and the 1,200-byte DTLS MTU.
pub const SIZES: [usize; 6] = [500, 1_200, 1_500, 2_100, 4_000, 9_000];

/// Messages per run.
pub const MESSAGES: u64 = 10;

/// uclient runs at a time.
const PARALLEL: usize = 7;

/// How the client reaches the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
    Dtls,
}

/// How data travels: ChannelBind + ChannelData, or Send/Data indications.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Channel,
    Send,
}

/// The largest payload `turnutils_uclient` 4.6 relays through a server
/// over `transport` with `method`, the peer (and relay) at `family`:
/// - it sends at most 65,407 bytes of payload, whatever `-l` says (UDP,
///   TCP);
/// - over TLS it takes each record it reads for one message, so a message
///   to it must fit one 16,384-byte TLS record: ChannelData 4 + 16,380, a
///   Data indication 20 + 12 (IPv4 XOR-PEER-ADDRESS; 24 for IPv6) + 4 +
///   data;
/// - over DTLS every message is one record both ways, and its own Send
///   indications also carry an 8-byte FINGERPRINT.
pub fn uclient_largest(transport: Transport, method: Method, family: IpAddr) -> usize {
    let address = if family.is_ipv4() { 12 } else { 24 };
    match (transport, method) {
        (Transport::Udp | Transport::Tcp, _) => 65_407,
        (Transport::Tls | Transport::Dtls, Method::Channel) => 16_384 - 4,
        (Transport::Tls, Method::Send) => 16_384 - 20 - address - 4,
        (Transport::Dtls, Method::Send) => 16_384 - 20 - address - 4 - 8,
    }
}

/// One run: its flags and what it is.
struct Case {
    what: String,
    args: Vec<String>,
    family: IpAddr,
    size: usize,
}

/// Runs uclient for every size of [`SIZES`] and the largest it can carry,
/// with both methods and every family of `families`, over `transport`
/// (`port`: the server port it uses), and fails listing every case that
/// lost or duplicated a message or failed.
pub fn relay_every_size(
    server: &TestServer,
    peer: &Peer,
    transport: Transport,
    port: u16,
    families: &[IpAddr],
) {
    let mut cases = Vec::new();
    for &family in families {
        for method in [Method::Channel, Method::Send] {
            let largest = uclient_largest(transport, method, family);
            for size in SIZES.into_iter().chain([largest]) {
                let mut args: Vec<String> = ["-c", "-n", &MESSAGES.to_string(), "-l"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                args.push(size.to_string());
                args.extend(
                    match transport {
                        Transport::Udp => &[][..],
                        Transport::Tcp => &["-t"][..],
                        Transport::Tls => &["-t", "-S"][..],
                        Transport::Dtls => &["-S"][..],
                    }
                    .iter()
                    .map(|s| s.to_string()),
                );
                if method == Method::Send {
                    args.push("-s".into());
                }
                cases.push(Case {
                    what: format!("{transport:?} {method:?} {family} {size} B"),
                    args,
                    family,
                    size,
                });
            }
        }
    }
    let failures = Mutex::new(Vec::new());
    for chunk in cases.chunks(PARALLEL) {
        thread::scope(|scope| {
            for case in chunk {
                let failures = &failures;
                scope.spawn(move || {
                    let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
                    let (out, rep) = Run::new(server, case.family, &args)
                        .port(port)
                        .peer(peer, case.family)
                        .go();
                    let verdict = catch_unwind(AssertUnwindSafe(|| {
                        assert_delivered(&case.what, &out, &rep, MESSAGES, case.size as u64)
                    }));
                    if verdict.is_err() {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{}: {}", case.what, rep.summary()));
                    }
                });
            }
        });
    }
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} size cases over {transport:?} lost data (each case's details are above):\n  {}\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n  "),
        server.describe()
    );
}
