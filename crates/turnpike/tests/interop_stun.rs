//! STUN interoperability with real third-party clients, on loopback only:
//! coturn's `turnutils_stunclient` and `turnutils_natdiscovery` (RFC 5389 /
//! RFC 5780) and the classic RFC 3489 client `stun` (Debian `stun-client`),
//! plus raw-socket checks (TCP Binding, garbage resistance).
//!
//! The expected outputs were recorded against coturn 4.6.1's own `turnserver`
//! on Debian 12 (primary 127.0.0.1, alternate 127.0.0.2, alternate port
//! P + 1). Quirks of the clients that shape these tests:
//! - `turnutils_stunclient` has no receive timeout: if the server never
//!   answers it blocks forever, so every run is bounded by `run_tool`. Its
//!   exit status is 0 even when it prints an error response.
//! - When the first response carries OTHER-ADDRESS it sends two more
//!   requests: CHANGE-REQUEST(ip+port) with RESPONSE-PORT = local port + 1
//!   (and it then only listens on port + 1), then CHANGE-REQUEST(ip+port) with
//!   a 1500-byte PADDING from port + 1. A server that rejects RESPONSE-PORT
//!   makes it hang; the RFC 5780 server here enables both features.
//! - `stun` (classic): server as HOST:PORT, `-p` is the SOURCE port (it also
//!   uses source port + 1), verbose output goes to stderr, the verdict to
//!   stdout, and the exit status is the NAT type (1 = "Open").
//! - `turnutils_natdiscovery` always exits 0: the verdict is in its output.

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use support::{
    ALTERNATE_V4, PRIMARY_V4, PRIMARY_V6, ServerOptions, TestServer, ToolOutput,
    free_udp_port_pair, recv_any, recv_matching, require_tool, run, tcp_binding, udp_binding,
    udp_client_for,
};

// ---------------------------------------------------------------------------
// Output parsing
// ---------------------------------------------------------------------------

/// Parse `127.0.0.1:3478` or coturn's unbracketed IPv6 form `::1:3478`.
fn parse_endpoint(s: &str) -> Option<SocketAddr> {
    let s = s.trim().trim_start_matches(':').trim();
    let (ip, port) = s.rsplit_once(':')?;
    let ip: IpAddr = ip
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    Some(SocketAddr::new(ip, port.trim().parse().ok()?))
}

/// Every endpoint printed after `marker` (one per matching line, in order).
/// Panics on a matching line whose endpoint does not parse.
fn endpoints_after(text: &str, marker: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| l.split_once(marker).map(|(_, rest)| rest))
        .map(|rest| {
            parse_endpoint(rest)
                .unwrap_or_else(|| panic!("unparsable endpoint after {marker:?}: {rest:?}"))
        })
        .collect()
}

/// Split coturn client output into the text before the first
/// "RFC 5780 response N" banner (key 0) and one block per banner (key N).
fn rfc5780_blocks(text: &str) -> BTreeMap<u32, String> {
    let mut blocks = BTreeMap::new();
    let mut current = 0u32;
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("RFC 5780 response ") {
            current = n.trim().parse().expect("response number");
        }
        let b: &mut String = blocks.entry(current).or_default();
        b.push_str(line);
        b.push('\n');
    }
    blocks
}

/// The single distinct endpoint printed after `marker` in `block`.
fn one_endpoint(block: &str, marker: &str, context: &ToolOutput) -> SocketAddr {
    let mut v = endpoints_after(block, marker);
    v.dedup();
    assert_eq!(
        v.len(),
        1,
        "expected exactly one distinct {marker:?} in block:\n{block}\n{}",
        context.describe()
    );
    v[0]
}

/// Lines that coturn's clients print when something went wrong.
fn assert_no_client_errors(out: &ToolOutput) {
    for bad in [
        "The response is an error",
        "unrecognized error",
        "not a STUN message",
        "not a well formed",
        "not a reponse message",
        "not a response message",
        "Cannot read the response",
        "Wrong type of response",
        "STUN receive timeout",
        "ALG detected",
    ] {
        assert!(
            !out.stdout.contains(bad) && !out.stderr.contains(bad),
            "client reported {bad:?}\n{}",
            out.describe()
        );
    }
}

fn assert_finished_ok(out: &ToolOutput) {
    assert!(
        !out.timed_out,
        "client never finished (server did not answer one of its requests)\n{}",
        out.describe()
    );
    assert_eq!(out.code(), Some(0), "client failed\n{}", out.describe());
}

/// One response as the classic `stun -v` client prints it (on stderr).
#[derive(Debug, Default, Clone)]
struct ClassicResponse {
    msg_type: u32,
    mapped: Option<SocketAddr>,
    source: Option<SocketAddr>,
    changed: Option<SocketAddr>,
    error: Option<String>,
}

/// Responses keyed by the client's request id (1 = test I, 2 = test II
/// (change IP), 3 = test III (change port), 10 = test I(2) sent to the
/// changed IP, 11 = hairpin).
fn classic_responses(stderr: &str) -> BTreeMap<u32, ClassicResponse> {
    let mut out = BTreeMap::new();
    let mut cur = ClassicResponse::default();
    for line in stderr.lines().map(str::trim) {
        if line.starts_with("Received stun message") {
            cur = ClassicResponse::default();
        } else if let Some(v) = line.strip_prefix("MappedAddress = ") {
            cur.mapped = parse_endpoint(v);
        } else if let Some(v) = line.strip_prefix("SourceAddress = ") {
            cur.source = parse_endpoint(v);
        } else if let Some(v) = line.strip_prefix("ChangedAddress = ") {
            cur.changed = parse_endpoint(v);
        } else if let Some(v) = line.strip_prefix("ErrorCode = ") {
            cur.error = Some(v.to_string());
        } else if let Some(rest) = line.strip_prefix("Received message of type ") {
            // "Received message of type 257  id=1"
            let (t, id) = rest.split_once("id=").expect("id= in type line");
            cur.msg_type = t.trim().parse().expect("message type");
            out.insert(id.trim().parse().expect("request id"), cur.clone());
        }
    }
    out
}

/// The `name = value` summary flags of `stun -v` ("test I = 1", ...).
fn classic_flags(stderr: &str) -> BTreeMap<String, String> {
    stderr
        .lines()
        .filter(|l| {
            l.starts_with("test ")
                || l.starts_with("is nat")
                || l.starts_with("mapped IP same")
                || l.starts_with("hairpin")
                || l.starts_with("preserver port")
        })
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

// ---------------------------------------------------------------------------
// turnutils_stunclient
// ---------------------------------------------------------------------------

/// Plain server: one Binding, the reflexive address is the client's own.
fn stunclient_basic(server_ip: IpAddr, family: &str) {
    require_tool("turnutils_stunclient");
    let server = TestServer::start(ServerOptions::basic());
    let port = server.port.to_string();
    let out = run(
        "turnutils_stunclient",
        &["-p", &port, &server_ip.to_string()],
    );
    assert_finished_ok(&out);
    assert_no_client_errors(&out);
    assert!(
        !out.stdout.contains("RFC 5780 response"),
        "a server without alternate_ip must not advertise OTHER-ADDRESS\n{}",
        out.describe()
    );
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.contains("UDP reflexive addr"))
        .collect();
    assert!(
        !lines.is_empty(),
        "no reflexive address printed\n{}",
        out.describe()
    );
    assert!(
        lines.iter().all(|l| l.contains(&format!("{family}."))),
        "expected an {family} reflexive address\n{}",
        out.describe()
    );
    let mapped = one_endpoint(&out.stdout, "UDP reflexive addr", &out);
    assert_eq!(
        mapped.ip(),
        server_ip,
        "mapped IP is not the client's loopback address\n{}",
        out.describe()
    );
    assert!(
        mapped.port() != 0 && mapped.port() != server.port,
        "implausible mapped port {}\n{}",
        mapped.port(),
        out.describe()
    );
}

#[test]
fn stunclient_udp_ipv4_reports_mapped_address() {
    stunclient_basic(PRIMARY_V4.into(), "IPv4");
}

#[test]
fn stunclient_udp_ipv6_reports_mapped_address() {
    stunclient_basic(PRIMARY_V6.into(), "IPv6");
}

/// Against a server with an alternate address the client runs its RFC 5780
/// sequence. Recorded against coturn (P = primary port, X = client port):
/// ```text
/// RFC 5780 response 1   origin 127.0.0.1:P    other 127.0.0.2:P+1  reflexive 127.0.0.1:X
/// RFC 5780 response 2   origin 127.0.0.2:P+1  other 127.0.0.2:P+1  reflexive 127.0.0.1:X
/// RFC 5780 response 3   origin 127.0.0.2:P+1  other 127.0.0.2:P+1  reflexive 127.0.0.1:X+1
/// ```
/// Response 2 answers CHANGE-REQUEST(ip+port) + RESPONSE-PORT=X+1 (it is sent
/// from X and must arrive at X+1); response 3 answers CHANGE-REQUEST(ip+port)
/// + PADDING sent from X+1.
#[test]
fn stunclient_rfc5780_other_address_and_response_origin() {
    require_tool("turnutils_stunclient");
    let server = TestServer::start(ServerOptions::rfc5780());
    let p = server.port;
    let alt = sa(ALTERNATE_V4, p + 1);
    let out = run(
        "turnutils_stunclient",
        &["-p", &p.to_string(), &PRIMARY_V4.to_string()],
    );
    assert_finished_ok(&out);
    assert_no_client_errors(&out);
    let blocks = rfc5780_blocks(&out.stdout);
    for n in 1..=3 {
        assert!(
            blocks.contains_key(&n),
            "missing \"RFC 5780 response {n}\" (server did not send OTHER-ADDRESS, \
             or did not honour CHANGE-REQUEST / RESPONSE-PORT / PADDING)\n{}",
            out.describe()
        );
    }
    assert!(
        !blocks.contains_key(&4),
        "unexpected extra response\n{}",
        out.describe()
    );

    let b1 = &blocks[&1];
    let b2 = &blocks[&2];
    let b3 = &blocks[&3];
    assert_eq!(
        one_endpoint(b1, "Response origin:", &out),
        sa(PRIMARY_V4, p)
    );
    assert_eq!(one_endpoint(b1, "Other addr:", &out), alt);
    let x = one_endpoint(b1, "UDP reflexive addr", &out);
    assert_eq!(x.ip(), IpAddr::from(PRIMARY_V4), "{}", out.describe());

    assert_eq!(
        one_endpoint(b2, "Response origin:", &out),
        alt,
        "CHANGE-REQUEST(ip+port) not answered from the alternate address\n{}",
        out.describe()
    );
    assert_eq!(one_endpoint(b2, "Other addr:", &out), alt);
    assert_eq!(
        one_endpoint(b2, "UDP reflexive addr", &out),
        x,
        "response 2 must map the same client socket as response 1\n{}",
        out.describe()
    );

    assert_eq!(one_endpoint(b3, "Response origin:", &out), alt);
    assert_eq!(one_endpoint(b3, "Other addr:", &out), alt);
    assert_eq!(
        one_endpoint(b3, "UDP reflexive addr", &out),
        sa(PRIMARY_V4, x.port() + 1),
        "response 3 comes from the client's port+1 socket\n{}",
        out.describe()
    );
}

// ---------------------------------------------------------------------------
// Classic RFC 3489 client `stun`
// ---------------------------------------------------------------------------

fn run_classic(server: &TestServer, src: u16) -> ToolOutput {
    run(
        "stun",
        &[
            &format!("{}:{}", PRIMARY_V4, server.port),
            "-v",
            "-p",
            &src.to_string(),
        ],
    )
}

fn assert_classic_open(out: &ToolOutput) {
    assert!(!out.timed_out, "stun never finished\n{}", out.describe());
    assert!(
        out.stdout.contains("Primary: Open"),
        "classic client did not classify the path as Open (as it does against coturn)\n{}",
        out.describe()
    );
    assert_eq!(
        out.code(),
        Some(1),
        "exit status is the NAT type; 1 = Open\n{}",
        out.describe()
    );
}

/// Against coturn with primary 127.0.0.1:P and alternate 127.0.0.2:P+1 the
/// classic client prints "Primary: Open" and exits 1. The verbose trace
/// shows each RFC 3489 test answered from the right address.
#[test]
fn classic_stun_with_alternate_is_open() {
    require_tool("stun");
    let server = TestServer::start(ServerOptions::rfc5780());
    let p = server.port;
    let src = free_udp_port_pair();
    let out = run_classic(&server, src);
    assert_classic_open(&out);

    let r = classic_responses(&out.stderr);
    let get = |id: u32| {
        r.get(&id)
            .unwrap_or_else(|| panic!("no response to request id={id}\n{}", out.describe()))
    };
    // Test I: plain request from SRC.
    let t1 = get(1);
    assert_eq!(t1.msg_type, 0x0101, "{}", out.describe());
    assert_eq!(t1.mapped, Some(sa(PRIMARY_V4, src)), "{}", out.describe());
    assert_eq!(t1.source, Some(sa(PRIMARY_V4, p)), "{}", out.describe());
    assert_eq!(
        t1.changed,
        Some(sa(ALTERNATE_V4, p + 1)),
        "CHANGED-ADDRESS must be the alternate address and port\n{}",
        out.describe()
    );
    // Test II: CHANGE-REQUEST change-IP, sent from SRC+1.
    let t2 = get(2);
    assert_eq!(t2.msg_type, 0x0101, "{}", out.describe());
    assert_eq!(
        t2.mapped,
        Some(sa(PRIMARY_V4, src + 1)),
        "{}",
        out.describe()
    );
    assert_eq!(
        t2.source,
        Some(sa(ALTERNATE_V4, p)),
        "change-IP must be answered from 127.0.0.2 and the same port\n{}",
        out.describe()
    );
    // Test III: CHANGE-REQUEST change-port, sent from SRC+1.
    let t3 = get(3);
    assert_eq!(t3.msg_type, 0x0101, "{}", out.describe());
    assert_eq!(
        t3.mapped,
        Some(sa(PRIMARY_V4, src + 1)),
        "{}",
        out.describe()
    );
    assert_eq!(
        t3.source,
        Some(sa(PRIMARY_V4, p + 1)),
        "change-port must be answered from the same IP and port P+1\n{}",
        out.describe()
    );
    // Test I(2): plain request to the changed IP at the primary port.
    let t10 = get(10);
    assert_eq!(t10.msg_type, 0x0101, "{}", out.describe());
    assert_eq!(t10.mapped, Some(sa(PRIMARY_V4, src)), "{}", out.describe());
    assert_eq!(t10.source, Some(sa(ALTERNATE_V4, p)), "{}", out.describe());

    let flags = classic_flags(&out.stderr);
    for f in ["test I", "test II", "test III", "test I(2)"] {
        assert_eq!(
            flags.get(f).map(String::as_str),
            Some("1"),
            "{f}\n{}",
            out.describe()
        );
    }
    assert_eq!(
        flags.get("is nat").map(String::as_str),
        Some("0"),
        "{}",
        out.describe()
    );
}

/// Without an alternate address coturn (`--no-rfc5780`: it answers
/// CHANGE-REQUEST with 420) still gets "Primary: Open", exit 1: the classic
/// client counts any answer to tests II/III. A server that silently drops
/// CHANGE-REQUEST instead makes it print "Primary: Firewall" (exit 11).
#[test]
fn classic_stun_without_alternate_is_open() {
    require_tool("stun");
    let server = TestServer::start(ServerOptions::basic());
    let src = free_udp_port_pair();
    let out = run_classic(&server, src);
    assert_classic_open(&out);
    let r = classic_responses(&out.stderr);
    let t1 = r
        .get(&1)
        .unwrap_or_else(|| panic!("no response to test I\n{}", out.describe()));
    assert_eq!(t1.msg_type, 0x0101, "{}", out.describe());
    assert_eq!(
        t1.mapped,
        Some(sa(PRIMARY_V4, src)),
        "MAPPED-ADDRESS must be the client's source\n{}",
        out.describe()
    );
    let flags = classic_flags(&out.stderr);
    for f in ["test I", "test II", "test III"] {
        assert_eq!(
            flags.get(f).map(String::as_str),
            Some("1"),
            "{f}\n{}",
            out.describe()
        );
    }
}

// ---------------------------------------------------------------------------
// turnutils_natdiscovery (RFC 5780 behaviour discovery)
// ---------------------------------------------------------------------------

fn natdiscovery(server: &TestServer, mode: &[&str], local_port: u16) -> ToolOutput {
    let port = server.port.to_string();
    let lport = local_port.to_string();
    let mut args: Vec<&str> = mode.to_vec();
    args.extend(["-L", "127.0.0.1", "-l", &lport, "-p", &port, "127.0.0.1"]);
    run("turnutils_natdiscovery", &args)
}

/// Mapping discovery: request to 127.0.0.1:P, then to the OTHER-ADDRESS IP at
/// the primary port (127.0.0.2:P). Against coturn, bound to 127.0.0.1:L:
/// "No NAT! (Endpoint Independent Mapping)" then
/// "NAT with Endpoint Independent Mapping!".
#[test]
fn natdiscovery_mapping_is_endpoint_independent() {
    require_tool("turnutils_natdiscovery");
    let server = TestServer::start(ServerOptions::rfc5780());
    let p = server.port;
    let l = free_udp_port_pair();
    let out = natdiscovery(&server, &["-m"], l);
    assert_finished_ok(&out);
    assert_no_client_errors(&out);
    assert!(
        out.stdout
            .contains("No NAT! (Endpoint Independent Mapping)"),
        "{}",
        out.describe()
    );
    assert!(
        out.stdout
            .contains("NAT with Endpoint Independent Mapping!"),
        "{}",
        out.describe()
    );
    let blocks = rfc5780_blocks(&out.stdout);
    let (b1, b2) = match (blocks.get(&1), blocks.get(&2)) {
        (Some(a), Some(b)) => (a, b),
        _ => panic!("expected two RFC 5780 responses\n{}", out.describe()),
    };
    let me = sa(PRIMARY_V4, l);
    assert_eq!(
        one_endpoint(b1, "Response origin:", &out),
        sa(PRIMARY_V4, p)
    );
    assert_eq!(
        one_endpoint(b1, "Other addr:", &out),
        sa(ALTERNATE_V4, p + 1)
    );
    assert_eq!(one_endpoint(b1, "UDP reflexive addr", &out), me);
    assert_eq!(
        one_endpoint(b2, "Response origin:", &out),
        sa(ALTERNATE_V4, p),
        "the alternate IP at the primary port must answer from itself\n{}",
        out.describe()
    );
    assert_eq!(one_endpoint(b2, "UDP reflexive addr", &out), me);
}

/// Filtering discovery: plain request, then CHANGE-REQUEST(ip+port), which
/// must come back from 127.0.0.2:P+1. Against coturn:
/// "NAT with Endpoint Independent Filtering!".
#[test]
fn natdiscovery_filtering_is_endpoint_independent() {
    require_tool("turnutils_natdiscovery");
    let server = TestServer::start(ServerOptions::rfc5780());
    let p = server.port;
    let l = free_udp_port_pair();
    let out = natdiscovery(&server, &["-f"], l);
    assert_finished_ok(&out);
    assert_no_client_errors(&out);
    assert!(
        out.stdout
            .contains("NAT with Endpoint Independent Filtering!"),
        "{}",
        out.describe()
    );
    let blocks = rfc5780_blocks(&out.stdout);
    let (b1, b2) = match (blocks.get(&1), blocks.get(&2)) {
        (Some(a), Some(b)) => (a, b),
        _ => panic!("expected two RFC 5780 responses\n{}", out.describe()),
    };
    let me = sa(PRIMARY_V4, l);
    assert_eq!(
        one_endpoint(b1, "Response origin:", &out),
        sa(PRIMARY_V4, p)
    );
    assert_eq!(one_endpoint(b1, "UDP reflexive addr", &out), me);
    assert_eq!(
        one_endpoint(b2, "Response origin:", &out),
        sa(ALTERNATE_V4, p + 1),
        "CHANGE-REQUEST(ip+port) must be answered from the alternate IP and port\n{}",
        out.describe()
    );
    assert_eq!(one_endpoint(b2, "UDP reflexive addr", &out), me);
}

/// Both discoveries in one run with `-P` (1500-byte PADDING in every
/// request): same verdicts as without padding, as against coturn.
#[test]
fn natdiscovery_with_padding_same_verdicts() {
    require_tool("turnutils_natdiscovery");
    let server = TestServer::start(ServerOptions::rfc5780());
    let p = server.port;
    let l = free_udp_port_pair();
    let out = natdiscovery(&server, &["-m", "-f", "-P"], l);
    assert_finished_ok(&out);
    assert_no_client_errors(&out);
    for verdict in [
        "NAT with Endpoint Independent Mapping!",
        "NAT with Endpoint Independent Filtering!",
    ] {
        assert!(
            out.stdout.contains(verdict),
            "missing {verdict:?}\n{}",
            out.describe()
        );
    }
    assert_eq!(
        out.stdout
            .matches("No NAT! (Endpoint Independent Mapping)")
            .count(),
        2,
        "both phases must see their own local address mapped unchanged\n{}",
        out.describe()
    );
    let blocks = rfc5780_blocks(&out.stdout);
    let origins: Vec<Option<SocketAddr>> = (1..=4)
        .map(|n| {
            blocks
                .get(&n)
                .map(|b| one_endpoint(b, "Response origin:", &out))
        })
        .collect();
    assert_eq!(
        origins,
        [
            Some(sa(PRIMARY_V4, p)),
            Some(sa(ALTERNATE_V4, p)),
            Some(sa(PRIMARY_V4, p)),
            Some(sa(ALTERNATE_V4, p + 1)),
        ],
        "RESPONSE-ORIGIN of the four padded requests (mapping: primary, alternate IP; \
         filtering: primary, CHANGE-REQUEST(ip+port))\n{}",
        out.describe()
    );
}

// ---------------------------------------------------------------------------
// Raw sockets: TCP Binding (turnutils_stunclient is UDP-only), garbage
// ---------------------------------------------------------------------------

fn raw_tcp_binding(ip: IpAddr) {
    let server = TestServer::start(ServerOptions::basic());
    let target = sa(ip, server.port);
    let (msg, local) = tcp_binding(target, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("TCP Binding to {target} failed: {e}"));
    assert_eq!(
        msg.msg_type, 0x0101,
        "not a Binding success response: {msg:?}"
    );
    assert_eq!(
        msg.xor_mapped_address(),
        Some(local),
        "XOR-MAPPED-ADDRESS must decode to the connection's local address: {msg:?}"
    );
}

#[test]
fn tcp_binding_ipv4_reports_local_address() {
    raw_tcp_binding(PRIMARY_V4.into());
}

#[test]
fn tcp_binding_ipv6_reports_local_address() {
    raw_tcp_binding(PRIMARY_V6.into());
}

fn raw_udp_binding(ip: IpAddr) {
    let server = TestServer::start(ServerOptions::basic());
    let target = sa(ip, server.port);
    let (msg, local) = udp_binding(target, Duration::from_secs(2))
        .unwrap_or_else(|| panic!("no Binding success from {target} within 2 s"));
    assert_eq!(
        msg.xor_mapped_address(),
        Some(local),
        "XOR-MAPPED-ADDRESS must decode to the client socket's address: {msg:?}"
    );
}

#[test]
fn udp_binding_ipv4_reports_exact_source() {
    raw_udp_binding(PRIMARY_V4.into());
}

#[test]
fn udp_binding_ipv6_reports_exact_source() {
    raw_udp_binding(PRIMARY_V6.into());
}

/// Non-STUN bytes and a STUN header whose length field is wrong get no
/// answer (RFC 8489: silently discarded); the server then still answers a
/// valid request on the same socket.
#[test]
fn udp_garbage_is_ignored_and_server_stays_alive() {
    let server = TestServer::start(ServerOptions::basic());
    let target = server.v4();
    let sock = udp_client_for(target);
    let quiet = Duration::from_millis(700);

    let (valid, tid) = support::binding_request();
    // A Binding header claiming 256 bytes of attributes but carrying none.
    let mut bad_len = valid;
    bad_len[2..4].copy_from_slice(&256u16.to_be_bytes());
    // A Binding header with a length that is not a multiple of 4 (3 bytes).
    let mut odd = valid.to_vec();
    odd[2..4].copy_from_slice(&3u16.to_be_bytes());
    odd.extend_from_slice(&[0, 1, 2]);
    let probes: [(&str, Vec<u8>); 4] = [
        ("100 bytes of 0xFF", vec![0xFF; 100]),
        ("STUN header with length 256 but no body", bad_len.to_vec()),
        ("STUN header with length 3", odd),
        ("5 bytes", vec![0, 1, 0, 0, 0x21]),
    ];
    for (what, bytes) in &probes {
        sock.send_to(bytes, target).expect("send garbage");
        if let Some(reply) = recv_any(&sock, quiet) {
            panic!(
                "server answered garbage ({what}) with {} bytes: {reply:02x?}",
                reply.len()
            );
        }
    }
    sock.send_to(&valid, target).expect("send valid request");
    let msg = recv_matching(&sock, &tid, Duration::from_secs(2))
        .expect("server stopped answering valid Binding requests after garbage");
    assert_eq!(
        msg.xor_mapped_address(),
        Some(sock.local_addr().unwrap()),
        "{msg:?}"
    );
}
