//! Shared support for the integration tests that drive the real `turnpike`
//! binary: start a server for one test (and always stop it), run external
//! reference clients with a deadline, and speak just enough raw STUN to probe
//! a server without depending on the project's own codec.
//!
//! Rules these helpers enforce:
//! - every network operation is on loopback and bounded in time;
//! - a missing external tool is a test FAILURE (never a skip): `scripts/test`
//!   installs everything the suite needs;
//! - the server child is terminated in `Drop` (SIGTERM, then SIGKILL after a
//!   grace period) and its output is printed when the test panicked.
//!
//! `TURNPIKE_INTEROP_SERVER=/path/to/cmd` replaces the server binary with
//! another command taking the same `serve --config FILE` arguments (for
//! example a shim that runs coturn's `turnserver`), so the assertions can be
//! checked against a reference server. By default the tests use the
//! `turnpike` binary Cargo built for them.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long a freshly spawned server gets to answer its first Binding request.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Default deadline for one run of an external client.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(20);
/// Grace period between SIGTERM and SIGKILL when stopping the server.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

pub const PRIMARY_V4: Ipv4Addr = Ipv4Addr::LOCALHOST;
pub const PRIMARY_V6: Ipv6Addr = Ipv6Addr::LOCALHOST;
/// The alternate address (RFC 3489 CHANGE-REQUEST / RFC 5780 OTHER-ADDRESS).
pub const ALTERNATE_V4: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

pub const MAGIC_COOKIE: u32 = 0x2112_A442;
pub const BINDING_REQUEST: u16 = 0x0001;
pub const BINDING_SUCCESS: u16 = 0x0101;
pub const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
pub const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

/// What the test server should be configured with.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Also listen on `[::1]:P`.
    pub ipv6: bool,
    /// Configure `alternate_ip = 127.0.0.2` and `alternate_port = P + 1`
    /// (enables RFC 3489 CHANGE-REQUEST and RFC 5780).
    pub alternate: bool,
    /// RFC 5780 RESPONSE-PORT support.
    pub response_port: bool,
    /// RFC 5780 PADDING support.
    pub padding: bool,
}

impl ServerOptions {
    /// Plain STUN on 127.0.0.1 and ::1, no alternate address.
    pub fn basic() -> Self {
        ServerOptions {
            ipv6: true,
            ..ServerOptions::default()
        }
    }

    /// IPv4 server with the alternate address and every RFC 5780 feature
    /// enabled (what the coturn reference clients exercise).
    pub fn rfc5780() -> Self {
        ServerOptions {
            ipv6: false,
            alternate: true,
            response_port: true,
            padding: true,
        }
    }
}

/// A running server, stopped when dropped.
#[derive(Debug)]
pub struct TestServer {
    child: Option<Child>,
    /// Primary port `P` (UDP and TCP) on 127.0.0.1 (and ::1 when enabled).
    pub port: u16,
    /// Alternate port when configured (always `P + 1`).
    pub alt_port: Option<u16>,
    pub options: ServerOptions,
    program: PathBuf,
    config_text: String,
    output: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// Start a server with `options` on free ports and wait until every
    /// configured UDP endpoint answers a Binding request. Panics (failing the
    /// test) with the server's output if it does not become ready.
    pub fn start(options: ServerOptions) -> TestServer {
        const ATTEMPTS: usize = 3;
        let mut last_failure = String::new();
        for attempt in 1..=ATTEMPTS {
            let port = pick_server_port(&options);
            let mut server = TestServer::spawn(options.clone(), port);
            match server.wait_ready(READY_TIMEOUT) {
                Ok(()) => return server,
                Err(why) => {
                    let output = server.stop_and_collect();
                    // Another process may have taken a port between our
                    // probe and the server's bind: retry on fresh ports.
                    let in_use = output.contains("in use") || output.contains("AddrInUse");
                    last_failure = format!(
                        "{why}\n--- server command: {} serve --config {}\n--- config:\n{}--- server output:\n{}",
                        server.program.display(),
                        server.config_path().display(),
                        server.config_text,
                        output
                    );
                    if !(in_use && attempt < ATTEMPTS) {
                        break;
                    }
                }
            }
        }
        panic!("turnpike test server did not become ready: {last_failure}");
    }

    fn spawn(options: ServerOptions, port: u16) -> TestServer {
        let dir = tempfile::tempdir().expect("create temp dir for server config");
        let alt_port = options.alternate.then(|| port + 1);
        let config_text = render_config(&options, port, alt_port);
        let config_path = dir.path().join("turnpike.toml");
        std::fs::write(&config_path, &config_text).expect("write server config");

        let program = server_program();
        let mut child = Command::new(&program)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("RUST_BACKTRACE", "1")
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", program.display()));

        let output = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            pump(child.stdout.take().expect("piped stdout"), output.clone()),
            pump(child.stderr.take().expect("piped stderr"), output.clone()),
        ];
        TestServer {
            child: Some(child),
            port,
            alt_port,
            options,
            program,
            config_text,
            output,
            readers,
            _dir: dir,
        }
    }

    fn config_path(&self) -> PathBuf {
        self._dir.path().join("turnpike.toml")
    }

    /// Every UDP endpoint the configuration asks the server to serve.
    pub fn udp_endpoints(&self) -> Vec<SocketAddr> {
        let mut v = vec![self.v4()];
        if self.options.ipv6 {
            v.push(self.v6());
        }
        if let Some(alt) = self.alt_port {
            v.push(SocketAddr::new(PRIMARY_V4.into(), alt));
            v.push(SocketAddr::new(ALTERNATE_V4.into(), self.port));
            v.push(SocketAddr::new(ALTERNATE_V4.into(), alt));
        }
        v
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut pending = self.udp_endpoints();
        let mut tcp_ready = false;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("server exited before it was ready ({status})"));
                }
            }
            pending.retain(|&ep| udp_binding(ep, Duration::from_millis(200)).is_none());
            if !tcp_ready {
                tcp_ready =
                    TcpStream::connect_timeout(&self.v4(), Duration::from_millis(200)).is_ok();
            }
            if pending.is_empty() && tcp_ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let mut why = format!(
                    "no readiness within {timeout:?}: UDP endpoints without a Binding answer: {pending:?}"
                );
                if !tcp_ready {
                    let _ = write!(why, "; TCP {} refused connections", self.v4());
                }
                return Err(why);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Primary IPv4 endpoint `127.0.0.1:P`.
    pub fn v4(&self) -> SocketAddr {
        SocketAddr::new(PRIMARY_V4.into(), self.port)
    }

    /// Primary IPv6 endpoint `[::1]:P`.
    pub fn v6(&self) -> SocketAddr {
        SocketAddr::new(PRIMARY_V6.into(), self.port)
    }

    /// Everything the server printed so far (stdout and stderr interleaved).
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Context for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "server {} (config:\n{})",
            self.program.display(),
            self.config_text.trim_end()
        )
    }

    fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: plain kill(2) on our own child's pid, which has not been
            // reaped yet (try_wait above returned None), so it cannot be reused.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok()
    }

    fn stop_and_collect(&mut self) -> String {
        let status = self.stop();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let mut out = self.output();
        if let Some(status) = status {
            let _ = writeln!(out, "[harness] server exit status: {status}");
        }
        out
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if self.child.is_none() {
            return;
        }
        let output = self.stop_and_collect();
        if thread::panicking() {
            eprintln!(
                "---- {} ----\n---- server output ----\n{}---- end of server output ----",
                self.describe(),
                output
            );
        }
    }
}

fn pump(mut from: impl Read + Send + 'static, to: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => to.lock().unwrap().extend_from_slice(&buf[..n]),
            }
        }
    })
}

fn server_program() -> PathBuf {
    match std::env::var_os("TURNPIKE_INTEROP_SERVER") {
        Some(p) if !p.is_empty() => {
            eprintln!(
                "[harness] TURNPIKE_INTEROP_SERVER set: using {} instead of turnpike",
                Path::new(&p).display()
            );
            PathBuf::from(p)
        }
        _ => PathBuf::from(env!("CARGO_BIN_EXE_turnpike")),
    }
}

fn render_config(options: &ServerOptions, port: u16, alt_port: Option<u16>) -> String {
    let level = std::env::var("TURNPIKE_TEST_LOG_LEVEL").unwrap_or_else(|_| "info".into());
    let mut listen = vec![format!("\"{}\"", SocketAddr::new(PRIMARY_V4.into(), port))];
    if options.ipv6 {
        listen.push(format!("\"{}\"", SocketAddr::new(PRIMARY_V6.into(), port)));
    }
    let mut s = String::new();
    let _ = writeln!(s, "[server]\nworkers = 2\n");
    let _ = writeln!(s, "[log]\nlevel = \"{level}\"\nformat = \"text\"\n");
    let _ = writeln!(s, "[stun]\nlisten = [{}]", listen.join(", "));
    if let Some(alt) = alt_port {
        let _ = writeln!(
            s,
            "alternate_ip = \"{ALTERNATE_V4}\"\nalternate_port = {alt}"
        );
    }
    let _ = writeln!(s, "response_port = {}", options.response_port);
    let _ = writeln!(s, "padding = {}", options.padding);
    s
}

// ---------------------------------------------------------------------------
// Free ports
// ---------------------------------------------------------------------------

/// Can `addr` be bound right now for UDP and TCP? (Sockets are released
/// before returning; the caller must accept the small race that follows.)
fn bindable(addrs: &[SocketAddr]) -> bool {
    let mut held_udp = Vec::new();
    let mut held_tcp = Vec::new();
    for a in addrs {
        match (UdpSocket::bind(a), TcpListener::bind(a)) {
            (Ok(u), Ok(t)) => {
                held_udp.push(u);
                held_tcp.push(t);
            }
            _ => return false,
        }
    }
    true
}

fn pick_server_port(options: &ServerOptions) -> u16 {
    for _ in 0..500 {
        let port = UdpSocket::bind((PRIMARY_V4, 0))
            .and_then(|s| s.local_addr())
            .expect("bind an ephemeral UDP port on 127.0.0.1")
            .port();
        if port == u16::MAX {
            continue;
        }
        let mut need = vec![SocketAddr::new(PRIMARY_V4.into(), port)];
        if options.ipv6 {
            need.push(SocketAddr::new(PRIMARY_V6.into(), port));
        }
        if options.alternate {
            need.push(SocketAddr::new(PRIMARY_V4.into(), port + 1));
            need.push(SocketAddr::new(ALTERNATE_V4.into(), port));
            need.push(SocketAddr::new(ALTERNATE_V4.into(), port + 1));
        }
        if bindable(&need) {
            return port;
        }
    }
    panic!("could not find a free port for the test server on loopback");
}

/// A UDP port `S` such that `S` and `S + 1` are free on every IPv4 address
/// (clients such as the classic `stun -p S` bind 0.0.0.0:S and 0.0.0.0:S+1).
pub fn free_udp_port_pair() -> u16 {
    for _ in 0..500 {
        let port = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
            .and_then(|s| s.local_addr())
            .expect("bind an ephemeral UDP port")
            .port();
        if port == u16::MAX {
            continue;
        }
        let a = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port));
        let b = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port + 1));
        if a.is_ok() && b.is_ok() {
            return port;
        }
    }
    panic!("could not find two consecutive free UDP ports");
}

// ---------------------------------------------------------------------------
// External tools
// ---------------------------------------------------------------------------

/// The result of one bounded run of an external program.
#[derive(Debug)]
pub struct ToolOutput {
    pub command: String,
    /// `None` when the tool was killed at the deadline.
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
    pub elapsed: Duration,
    pub stdout: String,
    pub stderr: String,
}

impl ToolOutput {
    /// Exit code, `None` if killed (timeout or signal).
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// Everything about the run, for assertion messages.
    pub fn describe(&self) -> String {
        let status = if self.timed_out {
            format!(
                "TIMED OUT after {:?} and killed (no answer from the server?)",
                self.elapsed
            )
        } else {
            match self.status {
                Some(s) => format!("{s} after {:?}", self.elapsed),
                None => "unknown status".to_string(),
            }
        };
        format!(
            "`{}`: {status}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--------------",
            self.command,
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// Debian package that provides an external tool used by the tests.
fn package_of(tool: &str) -> &'static str {
    match tool {
        t if t.starts_with("turnutils_") || t == "turnserver" => "coturn",
        "stun" => "stun-client",
        "ip" | "ss" => "iproute2",
        _ => "(unknown package)",
    }
}

/// Full path of `tool` in PATH; panics (fails the test) when it is missing.
pub fn require_tool(tool: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(tool);
        if let Ok(meta) = std::fs::metadata(&candidate) {
            use std::os::unix::fs::PermissionsExt;
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return candidate;
            }
        }
    }
    panic!(
        "required external tool `{tool}` (Debian package `{}`) is not installed. \
         Run `scripts/test`, which installs every test dependency. \
         Interop tests never skip a missing tool.",
        package_of(tool)
    );
}

/// Run `tool args...` with stdin closed, killing it after `timeout`.
pub fn run_tool(tool: &str, args: &[String], timeout: Duration) -> ToolOutput {
    let program = require_tool(tool);
    let command = std::iter::once(tool.to_string())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    let start = Instant::now();
    let mut child = Command::new(&program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{command}`: {e}"));
    let out = Arc::new(Mutex::new(Vec::new()));
    let err = Arc::new(Mutex::new(Vec::new()));
    let readers = [
        pump(child.stdout.take().expect("piped stdout"), out.clone()),
        pump(child.stderr.take().expect("piped stderr"), err.clone()),
    ];
    let deadline = start + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                timed_out = true;
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("waiting for `{command}`: {e}"),
        }
    };
    for r in readers {
        let _ = r.join();
    }
    let text = |b: &Arc<Mutex<Vec<u8>>>| String::from_utf8_lossy(&b.lock().unwrap()).into_owned();
    ToolOutput {
        command,
        status,
        timed_out,
        elapsed: start.elapsed(),
        stdout: text(&out),
        stderr: text(&err),
    }
}

/// `run_tool` with `&str` arguments and the default deadline.
pub fn run(tool: &str, args: &[&str]) -> ToolOutput {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    run_tool(tool, &args, TOOL_TIMEOUT)
}

// ---------------------------------------------------------------------------
// Raw STUN (hand-built on purpose: independent of the project's codec)
// ---------------------------------------------------------------------------

/// `N` random bytes from the kernel.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("read /dev/urandom");
    b
}

/// A 20-byte RFC 5389 Binding request with a random transaction id.
pub fn binding_request() -> ([u8; 20], [u8; 12]) {
    let tid: [u8; 12] = random_bytes();
    let mut m = [0u8; 20];
    m[0..2].copy_from_slice(&BINDING_REQUEST.to_be_bytes());
    m[2..4].copy_from_slice(&0u16.to_be_bytes());
    m[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    m[8..20].copy_from_slice(&tid);
    (m, tid)
}

/// A parsed STUN message: type and attributes (type, value).
#[derive(Debug, Clone)]
pub struct RawMessage {
    pub msg_type: u16,
    pub transaction_id: [u8; 12],
    pub attributes: Vec<(u16, Vec<u8>)>,
}

impl RawMessage {
    /// Parse a whole STUN message with the magic cookie; `None` if malformed.
    pub fn parse(b: &[u8]) -> Option<RawMessage> {
        if b.len() < 20 || b[0] & 0xC0 != 0 {
            return None;
        }
        let msg_type = u16::from_be_bytes([b[0], b[1]]);
        let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
        if u32::from_be_bytes([b[4], b[5], b[6], b[7]]) != MAGIC_COOKIE
            || len % 4 != 0
            || b.len() != 20 + len
        {
            return None;
        }
        let mut transaction_id = [0u8; 12];
        transaction_id.copy_from_slice(&b[8..20]);
        let mut attributes = Vec::new();
        let mut rest = &b[20..];
        while !rest.is_empty() {
            if rest.len() < 4 {
                return None;
            }
            let t = u16::from_be_bytes([rest[0], rest[1]]);
            let l = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
            let padded = l.div_ceil(4) * 4;
            if rest.len() < 4 + padded {
                return None;
            }
            attributes.push((t, rest[4..4 + l].to_vec()));
            rest = &rest[4 + padded..];
        }
        Some(RawMessage {
            msg_type,
            transaction_id,
            attributes,
        })
    }

    pub fn attribute(&self, t: u16) -> Option<&[u8]> {
        self.attributes
            .iter()
            .find(|(at, _)| *at == t)
            .map(|(_, v)| v.as_slice())
    }

    /// The XOR-MAPPED-ADDRESS, decoded.
    pub fn xor_mapped_address(&self) -> Option<SocketAddr> {
        let v = self.attribute(ATTR_XOR_MAPPED_ADDRESS)?;
        if v.len() < 4 {
            return None;
        }
        let port = u16::from_be_bytes([v[2], v[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
        let mut key = [0u8; 16];
        key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        key[4..].copy_from_slice(&self.transaction_id);
        let ip = match (v[1], v.len()) {
            (0x01, 8) => {
                let mut o = [0u8; 4];
                for (o, (a, k)) in o.iter_mut().zip(v[4..].iter().zip(key)) {
                    *o = a ^ k;
                }
                IpAddr::from(o)
            }
            (0x02, 20) => {
                let mut o = [0u8; 16];
                for (o, (a, k)) in o.iter_mut().zip(v[4..].iter().zip(key)) {
                    *o = a ^ k;
                }
                IpAddr::from(o)
            }
            _ => return None,
        };
        Some(SocketAddr::new(ip, port))
    }
}

/// Send one Binding request over UDP from a fresh socket and wait up to
/// `wait` for the matching success response. Returns the response and the
/// client socket's local address.
pub fn udp_binding(server: SocketAddr, wait: Duration) -> Option<(RawMessage, SocketAddr)> {
    let sock = udp_client_for(server);
    let (req, tid) = binding_request();
    sock.send_to(&req, server).ok()?;
    let local = sock.local_addr().ok()?;
    let msg = recv_matching(&sock, &tid, wait)?;
    Some((msg, local))
}

/// A UDP socket on the loopback address of `server`'s family.
pub fn udp_client_for(server: SocketAddr) -> UdpSocket {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (PRIMARY_V4, 0).into(),
        SocketAddr::V6(_) => (PRIMARY_V6, 0).into(),
    };
    UdpSocket::bind(local).expect("bind loopback UDP client socket")
}

/// Wait up to `wait` for a Binding success response with transaction `tid`
/// on `sock`, ignoring anything else.
pub fn recv_matching(sock: &UdpSocket, tid: &[u8; 12], wait: Duration) -> Option<RawMessage> {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 2048];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        if left.is_zero() {
            return None;
        }
        sock.set_read_timeout(Some(left)).ok()?;
        let n = match sock.recv_from(&mut buf) {
            Ok((n, _)) => n,
            Err(_) => return None,
        };
        if let Some(m) = RawMessage::parse(&buf[..n]) {
            if m.msg_type == BINDING_SUCCESS && &m.transaction_id == tid {
                return Some(m);
            }
        }
    }
}

/// Whatever arrives on `sock` within `wait` (any datagram), if anything.
pub fn recv_any(sock: &UdpSocket, wait: Duration) -> Option<Vec<u8>> {
    sock.set_read_timeout(Some(wait)).ok()?;
    let mut buf = [0u8; 2048];
    match sock.recv_from(&mut buf) {
        Ok((n, _)) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

/// Send one Binding request over a new TCP connection and read one STUN
/// message back (bounded by `wait`). Returns the response and the local
/// address of the connection.
pub fn tcp_binding(server: SocketAddr, wait: Duration) -> Result<(RawMessage, SocketAddr), String> {
    let addr = server
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    let mut s = TcpStream::connect_timeout(&addr, wait).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(wait)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(wait)).map_err(|e| e.to_string())?;
    let local = s.local_addr().map_err(|e| e.to_string())?;
    let (req, tid) = binding_request();
    s.write_all(&req).map_err(|e| format!("write: {e}"))?;
    let mut head = [0u8; 20];
    s.read_exact(&mut head)
        .map_err(|e| format!("reading the 20-byte response header: {e}"))?;
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let mut whole = head.to_vec();
    whole.resize(20 + len, 0);
    s.read_exact(&mut whole[20..])
        .map_err(|e| format!("reading {len} bytes of attributes: {e}"))?;
    let msg =
        RawMessage::parse(&whole).ok_or_else(|| format!("malformed response {whole:02x?}"))?;
    if msg.transaction_id != tid {
        return Err(format!("transaction id mismatch in {msg:?}"));
    }
    Ok((msg, local))
}
