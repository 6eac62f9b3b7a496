//! The server process as an operator meets it: defaults with no
//! configuration, clean shutdown on SIGTERM/SIGINT, one-line errors for busy
//! addresses, and JSON logs.

mod support;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use support::{READY_TIMEOUT, tcp_binding, udp_binding};

const EXIT_LIMIT: Duration = Duration::from_secs(10);

/// A turnpike child with a clean environment; killed if the test panics.
struct Server {
    child: Child,
    /// The server's data directory (its SQLite database), removed on drop.
    _data: tempfile::TempDir,
}

impl Server {
    fn spawn(args: &[&str]) -> Server {
        let data = tempfile::tempdir().expect("data dir");
        let child = Command::new(env!("CARGO_BIN_EXE_turnpike"))
            .args(args)
            .env_clear()
            .env("TURNPIKE_DATA_DIR", data.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn turnpike");
        Server { child, _data: data }
    }

    /// Polls with Binding requests until `addr` answers (the server has no
    /// other readiness signal), or fails the test with the server's output.
    fn wait_ready(&mut self, addr: SocketAddr) {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if udp_binding(addr, Duration::from_millis(200)).is_some() {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                let (_, stderr) = self.output();
                panic!("turnpike exited early ({status}): {stderr}");
            }
        }
        let _ = self.child.kill();
        let (_, stderr) = self.output();
        panic!("turnpike did not answer on {addr} within {READY_TIMEOUT:?}: {stderr}");
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) has no memory-safety preconditions.
        assert_eq!(
            unsafe { libc::kill(pid, signal) },
            0,
            "kill({pid}, {signal})"
        );
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + EXIT_LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "turnpike did not exit within {EXIT_LIMIT:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// stdout and stderr; call only once the child has exited (or been killed).
    fn output(&mut self) -> (String, String) {
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut s) = self.child.stdout.take() {
            let _ = s.read_to_string(&mut out);
        }
        if let Some(mut s) = self.child.stderr.take() {
            let _ = s.read_to_string(&mut err);
        }
        (out, err)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    // A port free on both UDP and TCP for 127.0.0.1 at the time of the call.
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind probe");
        let port = udp.local_addr().expect("local addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

#[test]
fn sigterm_and_sigint_stop_the_server_with_status_0() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let listen = addr.to_string();
        let mut server = Server::spawn(&["serve", "--listen", &listen, "--workers", "2"]);
        server.wait_ready(addr);
        server.signal(signal);
        let status = server.wait_exit();
        let (_, stderr) = server.output();
        assert!(
            status.success(),
            "signal {signal}: exit {status}, stderr: {stderr}"
        );
        assert!(stderr.contains("shutting down"), "{stderr}");
        // Its ports are free again.
        UdpSocket::bind(addr).expect("UDP port released");
        TcpListener::bind(addr).expect("TCP port released");
    }
}

#[test]
fn address_in_use_is_one_error_line_and_exit_1() {
    let udp = UdpSocket::bind("127.0.0.1:0").expect("occupy a UDP port");
    let busy = udp.local_addr().expect("local addr").to_string();
    let tcp = TcpListener::bind("127.0.0.1:0").expect("occupy a TCP port");
    let busy_tcp = tcp.local_addr().expect("local addr").to_string();
    for (args, transport, addr) in [
        (vec!["--listen", busy.as_str(), "--no-tcp"], "udp", &busy),
        (
            vec!["--listen", busy_tcp.as_str(), "--no-udp"],
            "tcp",
            &busy_tcp,
        ),
    ] {
        let mut server = Server::spawn(&args);
        let status = server.wait_exit();
        let (_, stderr) = server.output();
        assert_eq!(status.code(), Some(1), "{stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(errors.len(), 1, "exactly one error line: {stderr}");
        let line = errors[0];
        assert!(line.starts_with("turnpike: error: "), "{line}");
        assert!(
            line.contains(&format!("cannot listen on {transport} {addr}")),
            "{line}"
        );
        assert!(
            line.contains("stop it or change stun.listen"),
            "says how to fix it: {line}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn no_configuration_serves_stun_on_port_3478() {
    let mut server = Server::spawn(&[]);
    let v4: SocketAddr = ([127, 0, 0, 1], 3478).into();
    server.wait_ready(v4);
    let (msg, local) = udp_binding("[::1]:3478".parse().expect("addr"), Duration::from_secs(2))
        .expect("IPv6 UDP answer on the default port");
    assert_eq!(msg.xor_mapped_address(), Some(local));
    let (msg, local) =
        tcp_binding(v4, Duration::from_secs(2)).expect("TCP answer on the default port");
    assert_eq!(msg.xor_mapped_address(), Some(local));
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().success());
}

#[test]
fn json_logs_are_one_object_per_line() {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let listen = addr.to_string();
    let mut server = Server::spawn(&[
        "--log-format",
        "json",
        "--listen",
        &listen,
        "--workers",
        "1",
    ]);
    server.wait_ready(addr);
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().success());
    let (_, stderr) = server.output();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines.len() >= 3,
        "startup, listening, ready and shutdown lines: {stderr}"
    );
    for line in lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            value.get("level").is_some() && value.get("timestamp").is_some(),
            "{line}"
        );
    }
    assert!(
        stderr.contains("\"address\":\"127.0.0.1:"),
        "listening address is a field: {stderr}"
    );
    for transport in ["udp", "tcp"] {
        assert!(
            stderr.contains(&format!("\"transport\":\"{transport}\"")),
            "a start-up line names the {transport} listener: {stderr}"
        );
    }
}
