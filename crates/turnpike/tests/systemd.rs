//! systemd's side of the service, without systemd: each test binds the
//! `NOTIFY_SOCKET` datagram socket itself, starts the real server with it
//! in the environment and reads what the server tells the service manager
//! (`sd_notify(3)`), in order: start, status, reload, watchdog, stop. The
//! unit file (`deploy/systemd`) is checked against the settings it must
//! agree with.

mod support;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use support::{PRIMARY_V4, READY_TIMEOUT, TURN_PASSWORD, TURN_USER, tcp_binding, udp_binding};
use turnpike_client::{AllocateParams, Credentials, TurnClient};

/// `crate::service::STATUS_INTERVAL` plus slack.
const STATUS_WAIT: Duration = Duration::from_secs(13);
const EXIT_LIMIT: Duration = Duration::from_secs(10);
const WORKERS: usize = 2;

/// A server started with `NOTIFY_SOCKET` pointing at our socket.
struct Notified {
    child: Child,
    socket: UnixDatagram,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Notified {
    /// TURN with one user on 127.0.0.1:P; `env` added to the server's
    /// environment (`NOTIFY_SOCKET` is always ours).
    fn start(env: &[(&str, &str)]) -> Notified {
        let dir = tempfile::tempdir().expect("temporary directory");
        let socket_path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&socket_path).expect("bind NOTIFY_SOCKET");
        let port = free_port();
        let addr = SocketAddr::new(PRIMARY_V4.into(), port);
        let config = format!(
            r#"[server]
workers = {WORKERS}

[stun]
listen = ["{addr}"]

[turn]
realm = "turnpike.test"
relay_ips = ["127.0.0.1"]
min_port = {min}
max_port = {max}
allowed_peer_ranges = ["127.0.0.0/8"]

[[turn.users]]
username = "{TURN_USER}"
password = "{TURN_PASSWORD}"

[database]
data_dir = "{data}"
"#,
            min = support::RELAY_MIN_PORT,
            max = support::RELAY_MAX_PORT,
            data = dir.path().display(),
        );
        let config_path = dir.path().join("turnpike.toml");
        std::fs::write(&config_path, config).expect("write the configuration");
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_turnpike"))
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env("NOTIFY_SOCKET", &socket_path)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawn turnpike");
        Notified {
            child,
            socket,
            addr,
            dir,
        }
    }

    /// The next notification within `wait`, or a test failure with the
    /// server's log.
    fn next(&self, wait: Duration) -> String {
        self.socket
            .set_read_timeout(Some(wait))
            .expect("socket timeout");
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => String::from_utf8(buf[..n].to_vec()).expect("UTF-8 notification"),
            Err(err) => panic!(
                "no notification within {wait:?} ({err}); server log:\n{}",
                self.log()
            ),
        }
    }

    /// The next notification that is not a `STATUS=` refresh.
    fn next_event(&self, wait: Duration) -> String {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = self.next(left.max(Duration::from_millis(1)));
            if !message.starts_with("STATUS=") {
                return message;
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) on our own child, not reaped yet.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// SIGTERM with nothing to drain: the server exits at once.
    fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit()
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + EXIT_LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "turnpike did not exit within {EXIT_LIMIT:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Notified {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free for UDP and TCP on 127.0.0.1.
fn free_port() -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind((PRIMARY_V4, 0)).expect("bind UDP");
        let port = udp.local_addr().expect("local address").port();
        if TcpListener::bind((PRIMARY_V4, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for UDP and TCP on 127.0.0.1");
}

#[test]
fn ready_when_listening_status_with_allocations_stopping_on_sigterm_while_draining() {
    let mut server = Notified::start(&[]);
    // Nothing comes before READY=1, and READY=1 means serving: the very
    // first Binding on each transport is answered.
    assert_eq!(server.next(READY_TIMEOUT), "READY=1");
    assert!(
        udp_binding(server.addr, Duration::from_secs(1)).is_some(),
        "READY=1 was sent, but UDP {} did not answer",
        server.addr
    );
    tcp_binding(server.addr, Duration::from_secs(1))
        .unwrap_or_else(|e| panic!("READY=1 was sent, but TCP did not answer: {e}"));
    assert_eq!(
        server.next(Duration::from_secs(5)),
        format!("STATUS=serving: 0 allocations, {WORKERS} workers")
    );

    // One allocation: the next refresh counts it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut client = runtime.block_on(async {
        let mut client = TurnClient::bind(server.addr, Credentials::new(TURN_USER, TURN_PASSWORD))
            .await
            .expect("client socket");
        client
            .allocate(AllocateParams::default())
            .await
            .expect("allocate");
        client
    });
    assert_eq!(
        server.next(STATUS_WAIT),
        format!("STATUS=serving: 1 allocation, {WORKERS} workers")
    );

    // SIGTERM: STOPPING=1 at once, while the allocation drains (the
    // default grace period); the status line says what is left.
    server.signal(libc::SIGTERM);
    assert_eq!(
        server.next_event(Duration::from_secs(2)),
        "STOPPING=1",
        "log:\n{}",
        server.log()
    );
    assert_eq!(
        server.next(STATUS_WAIT),
        format!("STATUS=draining: 1 allocation left, {WORKERS} workers")
    );
    // The client lets it go: the drain is over, the server exits.
    runtime
        .block_on(client.refresh(0))
        .expect("delete the allocation");
    let status = server.wait_exit();
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        server.log()
    );
    // Nothing after STOPPING=1 but status lines: no second STOPPING=1, no
    // READY=1.
    server.socket.set_nonblocking(true).expect("non-blocking");
    let mut buf = [0u8; 4096];
    while let Ok(n) = server.socket.recv(&mut buf) {
        let message = String::from_utf8_lossy(&buf[..n]);
        assert!(
            message.starts_with("STATUS="),
            "after STOPPING=1: {message}"
        );
    }
}

#[test]
fn sighup_is_a_reload_between_reloading_and_ready() {
    // What `systemctl reload` (ExecReload=kill -HUP) and Type=notify-reload
    // see: RELOADING=1 with CLOCK_MONOTONIC, then READY=1, the server
    // serving throughout (TLS off: nothing else handles SIGHUP).
    let mut server = Notified::start(&[]);
    assert_eq!(server.next(READY_TIMEOUT), "READY=1");
    let before = monotonic_usec();
    server.signal(libc::SIGHUP);
    let reloading = server.next_event(Duration::from_secs(5));
    let after = monotonic_usec();
    let usec: u64 = reloading
        .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("not RELOADING=1 with MONOTONIC_USEC: {reloading:?}"));
    assert!(
        (before..=after).contains(&usec),
        "MONOTONIC_USEC={usec} is not CLOCK_MONOTONIC between {before} and {after}"
    );
    assert_eq!(server.next_event(Duration::from_secs(5)), "READY=1");
    assert!(
        udp_binding(server.addr, Duration::from_secs(1)).is_some(),
        "no answer after the reload; log:\n{}",
        server.log()
    );
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
}

/// `CLOCK_MONOTONIC` in microseconds, as systemd reads it.
fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) },
        0
    );
    u64::try_from(now.tv_sec).unwrap() * 1_000_000 + u64::try_from(now.tv_nsec).unwrap() / 1_000
}

#[test]
fn watchdog_pings_at_half_the_interval() {
    // WatchdogSec=400ms: a ping every 200 ms, only while the workers answer.
    let mut server = Notified::start(&[("WATCHDOG_USEC", "400000")]);
    assert_eq!(server.next(READY_TIMEOUT), "READY=1");
    let window = Duration::from_secs(2);
    let until = Instant::now() + window;
    let mut pings = 0;
    let mut last: Option<Instant> = None;
    let mut longest = Duration::ZERO;
    while Instant::now() < until {
        let message = server.next(Duration::from_secs(1));
        if message == "WATCHDOG=1" {
            let now = Instant::now();
            if let Some(last) = last {
                longest = longest.max(now - last);
            }
            last = Some(now);
            pings += 1;
        } else {
            assert!(message.starts_with("STATUS="), "unexpected: {message}");
        }
    }
    assert!(
        pings >= 7,
        "{pings} pings in {window:?}, expected about 10; log:\n{}",
        server.log()
    );
    assert!(
        longest < Duration::from_millis(400),
        "a gap of {longest:?} between pings would let systemd kill the service"
    );

    // Stopping workers are no stuck workers: the pings end without an
    // alarm.
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
    let log = server.log();
    assert!(
        !log.contains("does not answer"),
        "shutdown taken for a stuck worker:\n{log}"
    );
}

#[test]
fn watchdog_meant_for_another_process_is_ignored() {
    // WATCHDOG_PID names someone else (inherited from a parent): no pings.
    let server = Notified::start(&[("WATCHDOG_USEC", "200000"), ("WATCHDOG_PID", "1")]);
    assert_eq!(server.next(READY_TIMEOUT), "READY=1");
    let until = Instant::now() + Duration::from_secs(1);
    server
        .socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while Instant::now() < until {
        if let Ok(n) = server.socket.recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..n]);
            assert!(message.starts_with("STATUS="), "unexpected: {message}");
        }
    }
}

#[test]
fn an_unusable_notify_socket_does_not_stop_the_server() {
    let mut server = Notified::start(&[("NOTIFY_SOCKET", "/nonexistent/notify")]);
    let deadline = Instant::now() + READY_TIMEOUT;
    while udp_binding(server.addr, Duration::from_millis(200)).is_none() {
        assert!(
            Instant::now() < deadline,
            "no answer on {}; log:\n{}",
            server.addr,
            server.log()
        );
        if let Some(status) = server.child.try_wait().expect("try_wait") {
            panic!("turnpike exited ({status}); log:\n{}", server.log());
        }
    }
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
    let log = server.log();
    assert_eq!(
        log.matches("cannot notify the service manager").count(),
        1,
        "one warning, however many sends failed:\n{log}"
    );
}

// ---------------------------------------------------------------------------
// The unit file
// ---------------------------------------------------------------------------

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `[Section] Key=Value` of a unit file, comments and blank lines left out
/// (a repeated key keeps its last value, as systemd's do for these).
fn parse_unit(text: &str) -> BTreeMap<(String, String), String> {
    let mut keys = BTreeMap::new();
    let mut section = String::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not KEY=VALUE: {line}", n + 1));
        assert!(!section.is_empty(), "line {}: key outside a section", n + 1);
        keys.insert(
            (section.clone(), key.trim().to_owned()),
            value.trim().to_owned(),
        );
    }
    keys
}

#[test]
fn the_unit_file_runs_the_server_as_the_issue_asks() {
    let path = repo_root().join("deploy/systemd/turnpike.service");
    let text = std::fs::read_to_string(&path).expect("deploy/systemd/turnpike.service");
    let unit = parse_unit(&text);
    let get = |section: &str, key: &str| {
        unit.get(&(section.to_owned(), key.to_owned()))
            .unwrap_or_else(|| panic!("{}: [{section}] {key}= missing", path.display()))
            .as_str()
    };
    for (key, value) in [
        ("Type", "notify"),
        (
            "ExecStart",
            "/usr/bin/turnpike serve --config /etc/turnpike/turnpike.toml",
        ),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("User", "turnpike"),
        ("Group", "turnpike"),
        ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
        ("StateDirectory", "turnpike"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
    ] {
        assert_eq!(get("Service", key), value, "[Service] {key}=");
    }
    assert_eq!(get("Install", "WantedBy"), "multi-user.target");

    // The state directory is the default database.data_dir.
    let example = std::fs::read_to_string(repo_root().join("turnpike.example.toml"))
        .expect("turnpike.example.toml");
    assert!(
        example.contains("data_dir = \"/var/lib/turnpike\""),
        "StateDirectory=turnpike is /var/lib/turnpike, database.data_dir's default"
    );

    // Enough descriptors for the default limits (see the unit's comment).
    let nofile: u64 = get("Service", "LimitNOFILE").parse().expect("a number");
    let needed = 50_000 + 2 * 16_384 + 4 * 16_384;
    assert!(
        nofile >= needed && nofile <= 1_048_576,
        "LimitNOFILE={nofile}: at least {needed}, at most fs.nr_open's default"
    );

    // systemd waits for the drain (shutdown.grace_period's default, as
    // the example shows it) and a little more before it kills.
    let grace: u64 = example
        .split("\n[shutdown]\n")
        .nth(1)
        .and_then(|section| {
            section
                .lines()
                .find_map(|l| l.strip_prefix("grace_period = "))
        })
        .and_then(|v| v.trim().parse().ok())
        .expect("[shutdown] grace_period in turnpike.example.toml");
    let stop = get("Service", "TimeoutStopSec");
    let stop: u64 = stop
        .strip_suffix('s')
        .unwrap_or(stop)
        .parse()
        .expect("TimeoutStopSec in seconds");
    assert!(
        stop > grace && stop <= grace + 30,
        "TimeoutStopSec={stop}s: the {grace} s grace period plus a margin"
    );

    // The watchdog is offered, not imposed.
    assert!(!unit.contains_key(&("Service".to_owned(), "WatchdogSec".to_owned())));
    assert!(text.contains("#WatchdogSec="), "WatchdogSec documented");
    // XDP's capabilities are documented, not granted.
    assert!(text.contains("CAP_BPF CAP_NET_ADMIN"));
}
