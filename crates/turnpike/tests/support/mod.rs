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
//!
//! TURN tests add a `[turn]` section to the configuration
//! ([`ServerOptions::turn`]), run coturn's `turnutils_peer` as the echoing
//! peer ([`Peer`], also stopped in `Drop`) and parse what
//! `turnutils_uclient` prints ([`UclientReport`]).

#![allow(dead_code)]

pub mod bandwidth;
pub mod browser;
pub mod cli;
pub mod dtls;
pub mod pki;
pub mod sizes;
pub mod uclient;

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
    /// Render a `[turn]` section (TURN relaying with long-term credentials).
    pub turn: Option<TurnOptions>,
    /// The `[database]` section (its `data_dir` is always the server's own
    /// temporary directory).
    pub database: DatabaseOptions,
    /// TLS and DTLS on a second port (`TestServer::tls_port`) with these
    /// certificate files.
    pub tls: Option<TlsFiles>,
    /// `[limits]` values to set; the defaults otherwise.
    pub limits: Vec<(&'static str, u32)>,
    /// The admin HTTP endpoint on `127.0.0.1:TestServer::admin_port`.
    pub admin: bool,
    /// With `admin`: this bearer token, in `admin.token_file` (a file in
    /// the server's directory).
    pub admin_token: Option<&'static str>,
    /// The XDP fast path on `lo` (`[xdp] interfaces = ["lo"]`): only in a
    /// network namespace of the test's own ([`private_network_namespace`]).
    pub xdp: bool,
    /// `log.level`; `None`: `TURNPIKE_TEST_LOG_LEVEL`, else `info`.
    pub log_level: Option<&'static str>,
    /// `log.format = "json"` instead of text.
    pub json_logs: bool,
    /// With `admin`: restund's command port on
    /// `127.0.0.1:TestServer::restund_port` (`admin.restund_listen`).
    pub restund: bool,
    /// Listen on the wildcard addresses (`0.0.0.0:P`, and `[::]:P` with
    /// `ipv6`), as the defaults do, instead of the loopback ones.
    pub wildcard: bool,
    /// With `xdp`: the interfaces instead of `lo`.
    pub xdp_interfaces: Vec<&'static str>,
    /// `shutdown.grace_period`: 0 (the default here, not the server's) so
    /// that stopping a test server with SIGTERM does not drain first.
    pub grace_period: u32,
    /// `drain.alternate_servers`.
    pub drain_alternates: Vec<SocketAddr>,
    /// `drain.exit_when_empty`.
    pub exit_when_empty: bool,
    /// With `tls`: `tls.reload_interval`; `None`: 1 s.
    pub tls_reload_interval: Option<u32>,
    /// The IPv4 address it listens on (STUN/TURN, TLS, admin) instead of
    /// 127.0.0.1, e.g. 127.0.0.3 for the third relay of a fleet on one
    /// machine.
    pub host_v4: Option<Ipv4Addr>,
    /// TOML appended to the configuration (sections of their own, such as
    /// `[ice]` and `[discovery]`), with `@PORT@` replaced by the server's
    /// port.
    pub extra_config: String,
    /// Run `turnpike ice-config` (the ICE-server endpoint alone, on the
    /// admin port) instead of `turnpike serve`; ready once the admin port
    /// accepts connections.
    pub ice_config: bool,
    /// With `admin`: this admin port instead of a free one. The relays of
    /// a fleet on one machine each listen on their own address (`host_v4`),
    /// so they can share one port number, as `discovery.admin_port` (one
    /// port for every relay's `/readyz`) expects.
    pub fixed_admin_port: Option<u16>,
    /// This primary port instead of a free one: the relays of a fleet on one
    /// machine (each on its own `host_v4`) share one port number, so the
    /// fleet's URLs can be written before any of them starts. See
    /// [`free_port_on`].
    pub fixed_port: Option<u16>,
}

impl ServerOptions {
    /// Relay N of a fleet on one machine: IPv4 only, listening and relaying
    /// on 127.0.0.N (so relays share port numbers, as a fleet's hosts do),
    /// with its admin endpoint there too (for `/readyz` probes, `/v1/drain`)
    /// and `secret`, the fleet's shared secret. Add `database`,
    /// `extra_config` (e.g. `[fleet] register = true`) and limits with
    /// struct update syntax.
    pub fn fleet_relay(n: u8, secret: &str) -> Self {
        let ip = Ipv4Addr::new(127, 0, 0, n);
        ServerOptions {
            ipv6: false,
            host_v4: Some(ip),
            admin: true,
            turn: Some(TurnOptions {
                relay_ips: vec![ip.into()],
                secrets: vec![secret.to_owned()],
                ..TurnOptions::loopback()
            }),
            ..ServerOptions::default()
        }
    }

    /// `turnpike ice-config` on 127.0.0.1 (its routes on the admin port),
    /// minting credentials with `secret`, the fleet's shared secret. Add
    /// its `[ice]` and `[discovery]` in `extra_config`.
    pub fn ice_endpoint(secret: &str) -> Self {
        ServerOptions {
            ipv6: false,
            admin: true,
            ice_config: true,
            turn: Some(TurnOptions {
                secrets: vec![secret.to_owned()],
                ..TurnOptions::loopback()
            }),
            ..ServerOptions::default()
        }
    }

    /// The IPv4 address the server listens on.
    pub fn v4_host(&self) -> Ipv4Addr {
        self.host_v4.unwrap_or(PRIMARY_V4)
    }
}

/// The certificate of `[tls]`.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    /// `None`: the key follows the chain in `certificate`.
    pub private_key: Option<PathBuf>,
}

/// The `[database]` section of the test configuration.
#[derive(Debug, Clone)]
pub struct DatabaseOptions {
    /// `database.url`; `None`: SQLite in the server's temporary directory.
    pub url: Option<String>,
    /// `database.schema`.
    pub schema: &'static str,
    pub cache_ttl: u32,
    pub negative_cache_ttl: u32,
    pub grace_period: u32,
    /// Short by default, so tests see secret changes quickly.
    pub secrets_refresh: u32,
    /// `database.ca_file`.
    pub ca_file: Option<PathBuf>,
    /// `database.timeout`; `None`: the default.
    pub timeout: Option<u32>,
}

impl Default for DatabaseOptions {
    fn default() -> Self {
        DatabaseOptions {
            url: None,
            schema: "turnpike",
            cache_ttl: 60,
            negative_cache_ttl: 1,
            grace_period: 3600,
            secrets_refresh: 1,
            ca_file: None,
            timeout: None,
        }
    }
}

/// The `[turn]` section of the test configuration.
#[derive(Debug, Clone)]
pub struct TurnOptions {
    pub realm: String,
    /// Long-term credentials, `(username, password)`.
    pub users: Vec<(String, String)>,
    /// Addresses relayed transport addresses are allocated on.
    pub relay_ips: Vec<IpAddr>,
    /// Relay port range. Keep it out of the kernel's ephemeral range
    /// (32768-60999), where client sockets and the test peer live.
    pub min_port: u16,
    pub max_port: u16,
    /// CIDR ranges peers may be in (loopback is refused by default).
    pub allowed_peer_ranges: Vec<String>,
    /// Lifetime granted when a client asks for less or none, in seconds.
    pub default_lifetime: u32,
    /// Upper bound of allocation lifetimes, in seconds.
    pub max_lifetime: u32,
    /// Allocations per user; 0 = unlimited.
    pub user_quota: u32,
    /// Allocations in total; 0 = unlimited.
    pub total_quota: u32,
    /// `turn.max_bps`, `turn.user_max_bps`, `turn.bps_capacity`: relayed
    /// bytes per second per allocation, per user and server-wide; 0 =
    /// unlimited.
    pub max_bps: u64,
    pub user_max_bps: u64,
    pub bps_capacity: u64,
    /// Shared secrets of time-limited credentials (`turn.secrets`).
    pub secrets: Vec<String>,
    /// `turn.strict_expiry`.
    pub strict_expiry: bool,
}

/// Realm of [`TurnOptions::loopback`].
pub const TURN_REALM: &str = "turnpike.test";
/// The one user of [`TurnOptions::loopback`].
pub const TURN_USER: &str = "alice";
pub const TURN_PASSWORD: &str = "wonderland";
/// Relay port range of [`TurnOptions::loopback`].
pub const RELAY_MIN_PORT: u16 = 61000;
pub const RELAY_MAX_PORT: u16 = 65000;

impl TurnOptions {
    /// Relays on 127.0.0.1 and ::1 (ports 61000-65000), loopback peers
    /// allowed, one user `alice`/`wonderland` in realm `turnpike.test`, no
    /// quotas.
    pub fn loopback() -> Self {
        TurnOptions {
            realm: TURN_REALM.to_string(),
            users: vec![(TURN_USER.to_string(), TURN_PASSWORD.to_string())],
            relay_ips: vec![PRIMARY_V4.into(), PRIMARY_V6.into()],
            min_port: RELAY_MIN_PORT,
            max_port: RELAY_MAX_PORT,
            allowed_peer_ranges: vec!["127.0.0.0/8".to_string(), "::1/128".to_string()],
            default_lifetime: 600,
            max_lifetime: 3600,
            user_quota: 0,
            total_quota: 0,
            max_bps: 0,
            user_max_bps: 0,
            bps_capacity: 0,
            secrets: Vec::new(),
            strict_expiry: false,
        }
    }
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
            turn: None,
            database: DatabaseOptions::default(),
            tls: None,
            limits: Vec::new(),
            admin: false,
            admin_token: None,
            xdp: false,
            log_level: None,
            json_logs: false,
            restund: false,
            wildcard: false,
            xdp_interfaces: Vec::new(),
            grace_period: 0,
            drain_alternates: Vec::new(),
            exit_when_empty: false,
            tls_reload_interval: None,
            host_v4: None,
            extra_config: String::new(),
            ice_config: false,
            fixed_admin_port: None,
            fixed_port: None,
        }
    }

    /// STUN/TURN on 127.0.0.1 and ::1 with [`TurnOptions::loopback`].
    pub fn turn() -> Self {
        ServerOptions {
            ipv6: true,
            turn: Some(TurnOptions::loopback()),
            ..ServerOptions::default()
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
    /// TLS (TCP) and DTLS (UDP) port when configured.
    pub tls_port: Option<u16>,
    /// Admin HTTP port on 127.0.0.1 when configured.
    pub admin_port: Option<u16>,
    /// restund's command port (UDP) on 127.0.0.1 when configured.
    pub restund_port: Option<u16>,
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
        let tls_port = options.tls.as_ref().map(|_| {
            loop {
                let tp = pick_server_port(&ServerOptions {
                    alternate: false,
                    ..options.clone()
                });
                if tp != port && Some(tp) != alt_port {
                    break tp;
                }
            }
        });
        let admin_port = options.admin.then(|| {
            if let Some(fixed) = options.fixed_admin_port {
                return fixed;
            }
            loop {
                let ap = TcpListener::bind((PRIMARY_V4, 0))
                    .and_then(|l| l.local_addr())
                    .expect("bind an ephemeral TCP port on 127.0.0.1")
                    .port();
                if ap != port && Some(ap) != alt_port && Some(ap) != tls_port {
                    break ap;
                }
            }
        });
        let config_text = render_config(&options, port, alt_port, tls_port, dir.path());
        let config_text = match admin_port {
            Some(ap) => format!(
                "{config_text}\n[admin]\nlisten = [\"{}:{ap}\"]\n",
                options.v4_host()
            ),
            None => config_text,
        };
        let config_text = match options.admin_token.filter(|_| admin_port.is_some()) {
            Some(token) => {
                let token_file = dir.path().join("admin.token");
                std::fs::write(&token_file, format!("{token}\n")).expect("write the admin token");
                format!(
                    "{config_text}token_file = {}\n",
                    toml_str(token_file.to_str().expect("UTF-8 temporary path"))
                )
            }
            None => config_text,
        };
        let restund_port = admin_port.filter(|_| options.restund).map(|_| {
            loop {
                let rp = UdpSocket::bind((PRIMARY_V4, 0))
                    .and_then(|s| s.local_addr())
                    .expect("bind an ephemeral UDP port on 127.0.0.1")
                    .port();
                if rp != port && Some(rp) != alt_port && Some(rp) != tls_port {
                    break rp;
                }
            }
        });
        let config_text = match restund_port {
            Some(rp) => format!("{config_text}restund_listen = \"{PRIMARY_V4}:{rp}\"\n"),
            None => config_text,
        };
        let config_text = format!(
            "{config_text}\n{}",
            options.extra_config.replace("@PORT@", &port.to_string())
        );
        let config_path = dir.path().join("turnpike.toml");
        std::fs::write(&config_path, &config_text).expect("write server config");

        let program = server_program();
        let output = Arc::new(Mutex::new(Vec::new()));
        let (child, readers) = launch(&program, &options, &config_path, &output);
        TestServer {
            child: Some(child),
            port,
            alt_port,
            tls_port,
            admin_port,
            restund_port,
            options,
            program,
            config_text,
            output,
            readers,
            _dir: dir,
        }
    }

    /// The server's configuration file (for the admin commands, and for a
    /// test to change before a reload).
    pub fn config_path(&self) -> PathBuf {
        self._dir.path().join("turnpike.toml")
    }

    /// Runs `turnpike --config CONFIG ARGS...` (an admin command on this
    /// server's configuration) with a clean environment, whatever it exits
    /// with.
    pub fn command(&self, args: &[&str]) -> cli::Output {
        let config = self.config_path();
        let config = config.to_str().expect("UTF-8 temporary path");
        let mut all = vec!["--config", config];
        all.extend_from_slice(args);
        cli::run(&all, &[])
    }

    /// The server's process id.
    pub fn pid(&self) -> libc::pid_t {
        let child = self.child.as_ref().expect("the server runs");
        libc::pid_t::try_from(child.id()).expect("pid fits pid_t")
    }

    /// Sends `signal` to the server.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = self.pid();
        // SAFETY: kill(2) on our own child, not reaped yet (we hold it).
        assert_eq!(
            unsafe { libc::kill(pid, signal) },
            0,
            "kill({pid}, {signal})"
        );
    }

    /// Waits for the server to exit by itself, at most `within` (failing
    /// the test after that), and returns its status; its output stays
    /// readable.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("the server runs");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                for r in self.readers.drain(..) {
                    let _ = r.join();
                }
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit within {within:?}\n{}",
                self.output()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the server again after it exited (see [`TestServer::wait_exit`]):
    /// the same configuration file, so the same ports, as an operator's
    /// restart would. Its output is appended to what the first run wrote.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart: the server is still running");
        let (child, readers) = launch(
            &self.program,
            &self.options,
            &self.config_path(),
            &self.output,
        );
        self.child = Some(child);
        self.readers = readers;
        if let Err(why) = self.wait_ready(READY_TIMEOUT) {
            panic!(
                "the restarted server did not become ready: {why}\n{}",
                self.output()
            );
        }
    }

    /// The configuration file's text now.
    pub fn config(&self) -> String {
        std::fs::read_to_string(self.config_path()).expect("read the server's configuration")
    }

    /// Writes `edit` of the configuration file's text back to it (for a
    /// reload to read).
    pub fn edit_config(&mut self, edit: impl FnOnce(&str) -> String) {
        let text = edit(&self.config());
        std::fs::write(self.config_path(), &text).expect("write the server's configuration");
        self.config_text = text;
    }

    /// Sends the server SIGHUP.
    pub fn hangup(&self) {
        self.signal(libc::SIGHUP);
    }

    /// The lines of the output so far that contain `text`.
    pub fn lines_with(&self, text: &str) -> Vec<String> {
        self.output()
            .lines()
            .filter(|l| l.contains(text))
            .map(str::to_owned)
            .collect()
    }

    /// Waits until `count` lines of the output contain `text`; returns
    /// them.
    pub fn wait_for_lines(&self, text: &str, count: usize, within: Duration) -> Vec<String> {
        eventually(
            &format!("{count} lines with {text:?} in the server's output"),
            within,
            || self.lines_with(text).len() >= count,
        );
        self.lines_with(text)
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
        if self.options.ice_config {
            let admin = SocketAddr::new(
                self.options.v4_host().into(),
                self.admin_port.expect("ice_config needs admin"),
            );
            loop {
                if let Some(child) = self.child.as_mut()
                    && let Ok(Some(status)) = child.try_wait()
                {
                    return Err(format!("ice-config exited before it was ready ({status})"));
                }
                if TcpStream::connect_timeout(&admin, Duration::from_millis(200)).is_ok() {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    return Err(format!("{admin} refused connections for {timeout:?}"));
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        let mut pending = self.udp_endpoints();
        let mut tcp_ready = false;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("server exited before it was ready ({status})"));
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
        SocketAddr::new(self.options.v4_host().into(), self.port)
    }

    /// Primary IPv6 endpoint `[::1]:P`.
    pub fn v6(&self) -> SocketAddr {
        SocketAddr::new(PRIMARY_V6.into(), self.port)
    }

    /// Everything the server printed so far (stdout and stderr interleaved).
    /// Runs the admin command line (`turnpike --config CONFIG ARGS...`) on
    /// this server's configuration, and so on its database; panics with its
    /// output unless it succeeds. Returns its standard output.
    pub fn admin(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_turnpike"))
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run the turnpike admin command");
        assert!(
            out.status.success(),
            "turnpike {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// UDP sockets the server holds in the relay port range: how a test
    /// sees that an allocation exists (each has a relay socket) without a
    /// management interface. Read from /proc, for this server's process
    /// only (other tests' servers use the same range).
    pub fn relay_sockets(&self) -> usize {
        self.sockets_in_relay_range(&["/proc/net/udp", "/proc/net/udp6"])
    }

    /// TCP sockets the server holds on relay ports: the listeners of TCP
    /// allocations and their peer connections (RFC 6062).
    pub fn tcp_relay_sockets(&self) -> usize {
        self.sockets_in_relay_range(&["/proc/net/tcp", "/proc/net/tcp6"])
    }

    fn sockets_in_relay_range(&self, tables: &[&str]) -> usize {
        let Some(pid) = self.child.as_ref().map(Child::id) else {
            return 0;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return 0;
        };
        let inodes: std::collections::HashSet<String> = fds
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .filter_map(|link| {
                let link = link.to_string_lossy().into_owned();
                Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
            })
            .collect();
        let mut count = 0;
        for table in tables {
            let Ok(text) = std::fs::read_to_string(table) else {
                continue;
            };
            for line in text.lines().skip(1) {
                let fields: Vec<&str> = line.split_whitespace().collect();
                // local_address is "HEXIP:HEXPORT"; the inode is field 9.
                let port = fields
                    .get(1)
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| u16::from_str_radix(p, 16).ok());
                let ours = fields.get(9).is_some_and(|i| inodes.contains(*i));
                if ours && port.is_some_and(|p| (RELAY_MIN_PORT..=RELAY_MAX_PORT).contains(&p)) {
                    count += 1;
                }
            }
        }
        count
    }

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

    /// Stops the server (SIGTERM) and returns everything it printed, its
    /// last lines included.
    pub fn shut_down(&mut self) -> String {
        self.stop_and_collect()
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

/// Have the kernel SIGKILL the child when the thread that spawns it exits,
/// which includes the test process being killed: no server, peer or client
/// outlives its test, even when `Drop` never runs. (So a child must be
/// spawned by the thread that owns it, as every helper here does.)
fn die_with_spawner(mut cmd: Command) -> Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook runs in the child between fork and exec and only calls
    // prctl(2), which is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
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

fn render_config(
    options: &ServerOptions,
    port: u16,
    alt_port: Option<u16>,
    tls_port: Option<u16>,
    data_dir: &std::path::Path,
) -> String {
    let level = match options.log_level {
        Some(level) => level.to_string(),
        None => std::env::var("TURNPIKE_TEST_LOG_LEVEL").unwrap_or_else(|_| "info".into()),
    };
    let (v4, v6): (IpAddr, IpAddr) = if options.wildcard {
        (Ipv4Addr::UNSPECIFIED.into(), Ipv6Addr::UNSPECIFIED.into())
    } else {
        (options.v4_host().into(), PRIMARY_V6.into())
    };
    let mut listen = vec![format!("\"{}\"", SocketAddr::new(v4, port))];
    if options.ipv6 {
        listen.push(format!("\"{}\"", SocketAddr::new(v6, port)));
    }
    let mut s = String::new();
    let _ = writeln!(s, "[server]\nworkers = 2\n");
    let format = if options.json_logs { "json" } else { "text" };
    let _ = writeln!(s, "[log]\nlevel = \"{level}\"\nformat = \"{format}\"\n");
    let _ = writeln!(s, "[stun]\nlisten = [{}]", listen.join(", "));
    if let Some(alt) = alt_port {
        let _ = writeln!(
            s,
            "alternate_ip = \"{ALTERNATE_V4}\"\nalternate_port = {alt}"
        );
    }
    let _ = writeln!(s, "response_port = {}", options.response_port);
    let _ = writeln!(s, "padding = {}", options.padding);
    let db = &options.database;
    let _ = writeln!(s, "\n[database]");
    let _ = writeln!(
        s,
        "data_dir = {}",
        toml_str(&data_dir.display().to_string())
    );
    if let Some(url) = &db.url {
        let _ = writeln!(s, "url = {}", toml_str(url));
    }
    let _ = writeln!(s, "schema = {}", toml_str(db.schema));
    let _ = writeln!(s, "cache_ttl = {}", db.cache_ttl);
    let _ = writeln!(s, "negative_cache_ttl = {}", db.negative_cache_ttl);
    let _ = writeln!(s, "grace_period = {}", db.grace_period);
    let _ = writeln!(s, "secrets_refresh = {}", db.secrets_refresh);
    if let Some(timeout) = db.timeout {
        let _ = writeln!(s, "timeout = {timeout}");
    }
    if let Some(ca_file) = &db.ca_file {
        let _ = writeln!(s, "ca_file = {}", toml_str(&ca_file.display().to_string()));
    }
    if let (Some(tls), Some(tp)) = (&options.tls, tls_port) {
        let mut listen = vec![toml_str(
            &SocketAddr::new(options.v4_host().into(), tp).to_string(),
        )];
        if options.ipv6 {
            listen.push(toml_str(
                &SocketAddr::new(PRIMARY_V6.into(), tp).to_string(),
            ));
        }
        let listen = format!("[{}]", listen.join(", "));
        let _ = writeln!(s, "\n[tls]");
        let _ = writeln!(
            s,
            "certificate = {}",
            toml_str(&tls.certificate.display().to_string())
        );
        if let Some(key) = &tls.private_key {
            let _ = writeln!(s, "private_key = {}", toml_str(&key.display().to_string()));
        }
        let _ = writeln!(
            s,
            "listen = {listen}\ndtls_listen = {listen}\nreload_interval = {}",
            options.tls_reload_interval.unwrap_or(1)
        );
    }
    if !options.limits.is_empty() {
        let _ = writeln!(s, "\n[limits]");
        for (key, value) in &options.limits {
            let _ = writeln!(s, "{key} = {value}");
        }
    }
    if options.xdp {
        let interfaces: Vec<&str> = if options.xdp_interfaces.is_empty() {
            vec!["lo"]
        } else {
            options.xdp_interfaces.clone()
        };
        let _ = writeln!(s, "\n[xdp]\ninterfaces = {interfaces:?}");
    }
    let _ = writeln!(s, "\n[shutdown]\ngrace_period = {}", options.grace_period);
    if !options.drain_alternates.is_empty() || options.exit_when_empty {
        let _ = writeln!(
            s,
            "\n[drain]\nalternate_servers = {}\nexit_when_empty = {}",
            toml_list(&options.drain_alternates),
            options.exit_when_empty
        );
    }
    if let Some(turn) = &options.turn {
        render_turn(&mut s, turn);
    }
    s
}

/// Moves the calling thread into a new network namespace with only its own
/// loopback, up (needs root; fails the test otherwise). Sockets the thread
/// opens afterwards, and processes it spawns (the server, coturn's tools),
/// live there; the namespace goes away with the last of them. For tests
/// that change the loopback device itself (XDP).
pub fn private_network_namespace() {
    // SAFETY: unshare takes no pointers; CLONE_NEWNET affects only the
    // calling thread's network namespace.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET): {} (run the tests as root)",
        std::io::Error::last_os_error()
    );
    let up = run("ip", &["link", "set", "lo", "up"]);
    assert_eq!(up.code(), Some(0), "ip link set lo up\n{}", up.describe());
}

/// `GET path` on the server's admin endpoint: the body of a 200 answer.
pub fn admin_get(server: &TestServer, path: &str) -> String {
    let (status, body) = admin_request(server, "GET", path);
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// One sample of a metric on `/metrics` (`name{labels}` as in the text
/// format).
pub fn metric(server: &TestServer, sample: &str) -> u64 {
    let metrics = admin_get(server, "/metrics");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {sample} in /metrics:\n{metrics}"))
}

/// `method path` on the server's admin endpoint, with its bearer token
/// when it has one: the status code and the body.
pub fn admin_request(server: &TestServer, method: &str, path: &str) -> (u16, String) {
    let port = server.admin_port.expect("admin endpoint configured");
    let authorization = server
        .options
        .admin_token
        .map(|token| format!("Bearer {token}"));
    let headers: Vec<(&str, &str)> = authorization
        .as_deref()
        .map(|a| ("Authorization", a))
        .into_iter()
        .collect();
    let answer = http_request(
        SocketAddr::new(server.options.v4_host().into(), port),
        method,
        path,
        &headers,
    );
    (answer.status, answer.body)
}

/// An HTTP answer: status, headers (names lower-cased) and body.
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpAnswer {
    /// The value of header `name` (lower case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `method path` on `addr` over HTTP/1.1 with `headers`, the connection
/// closed after the answer.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpAnswer {
    let mut stream = TcpStream::connect(addr)
        .unwrap_or_else(|e| panic!("connect to {addr} for {method} {path}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: no status line in {head:?}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    HttpAnswer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// A TOML basic string.
fn toml_str(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn toml_list<T: ToString>(items: &[T]) -> String {
    let v: Vec<String> = items.iter().map(|i| toml_str(&i.to_string())).collect();
    format!("[{}]", v.join(", "))
}

fn render_turn(s: &mut String, turn: &TurnOptions) {
    let _ = writeln!(s, "\n[turn]");
    let _ = writeln!(s, "realm = {}", toml_str(&turn.realm));
    let _ = writeln!(s, "relay_ips = {}", toml_list(&turn.relay_ips));
    let _ = writeln!(s, "min_port = {}", turn.min_port);
    let _ = writeln!(s, "max_port = {}", turn.max_port);
    let _ = writeln!(
        s,
        "allowed_peer_ranges = {}",
        toml_list(&turn.allowed_peer_ranges)
    );
    let _ = writeln!(s, "default_lifetime = {}", turn.default_lifetime);
    let _ = writeln!(s, "max_lifetime = {}", turn.max_lifetime);
    let _ = writeln!(s, "user_quota = {}", turn.user_quota);
    let _ = writeln!(s, "total_quota = {}", turn.total_quota);
    let _ = writeln!(s, "max_bps = {}", turn.max_bps);
    let _ = writeln!(s, "user_max_bps = {}", turn.user_max_bps);
    let _ = writeln!(s, "bps_capacity = {}", turn.bps_capacity);
    let _ = writeln!(s, "secrets = {}", toml_list(&turn.secrets));
    let _ = writeln!(s, "strict_expiry = {}", turn.strict_expiry);
    for (user, password) in &turn.users {
        let _ = writeln!(
            s,
            "\n[[turn.users]]\nusername = {}\npassword = {}",
            toml_str(user),
            toml_str(password)
        );
    }
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

/// Spawns `turnpike serve` (or `ice-config`) on `config`, its output
/// appended to `output`.
fn launch(
    program: &Path,
    options: &ServerOptions,
    config: &Path,
    output: &Arc<Mutex<Vec<u8>>>,
) -> (Child, Vec<JoinHandle<()>>) {
    let mut child = die_with_spawner(Command::new(program))
        .arg(if options.ice_config {
            "ice-config"
        } else {
            "serve"
        })
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("RUST_BACKTRACE", "1")
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", program.display()));
    let readers = vec![
        pump(child.stdout.take().expect("piped stdout"), output.clone()),
        pump(child.stderr.take().expect("piped stderr"), output.clone()),
    ];
    (child, readers)
}

/// A port free for UDP and TCP on every one of `hosts`, for servers of
/// [`ServerOptions::fixed_port`].
pub fn free_port_on(hosts: &[Ipv4Addr]) -> u16 {
    for _ in 0..500 {
        let port = UdpSocket::bind((PRIMARY_V4, 0))
            .and_then(|s| s.local_addr())
            .expect("bind an ephemeral UDP port on 127.0.0.1")
            .port();
        let need: Vec<SocketAddr> = hosts
            .iter()
            .map(|&host| SocketAddr::new(host.into(), port))
            .collect();
        if port != u16::MAX && bindable(&need) {
            return port;
        }
    }
    panic!("no port free on every one of {hosts:?}");
}

fn pick_server_port(options: &ServerOptions) -> u16 {
    if let Some(port) = options.fixed_port {
        return port;
    }
    for _ in 0..500 {
        let port = UdpSocket::bind((PRIMARY_V4, 0))
            .and_then(|s| s.local_addr())
            .expect("bind an ephemeral UDP port on 127.0.0.1")
            .port();
        if port == u16::MAX {
            continue;
        }
        let mut need = vec![SocketAddr::new(options.v4_host().into(), port)];
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
        "certutil" => "libnss3-tools",
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
    let mut child = die_with_spawner(Command::new(&program))
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
        if let Some(m) = RawMessage::parse(&buf[..n])
            && m.msg_type == BINDING_SUCCESS
            && &m.transaction_id == tid
        {
            return Some(m);
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

// ---------------------------------------------------------------------------
// TURN peer: coturn's `turnutils_peer`
// ---------------------------------------------------------------------------

/// How long a freshly spawned peer gets to echo on every endpoint.
pub const PEER_READY_TIMEOUT: Duration = Duration::from_secs(5);

/// A running `turnutils_peer` (a UDP echo server on port `P` and `P + 1` of
/// each of its addresses), killed when dropped.
///
/// It is always started with explicit `-L` addresses: without `-L` it
/// listens on every address. It never exits by itself.
#[derive(Debug)]
pub struct Peer {
    child: Option<Child>,
    /// Port `P`; the peer also echoes on `P + 1` (uclient's RTCP peer).
    pub port: u16,
    pub addrs: Vec<IpAddr>,
    command: String,
    output: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Peer {
    /// Start `turnutils_peer -L ADDR... -p P` on a free pair `P`, `P + 1`
    /// (below the relay port range) and wait until every endpoint echoes.
    /// Panics (failing the test) when the tool is missing or never ready.
    pub fn start(addrs: &[IpAddr]) -> Peer {
        assert!(!addrs.is_empty(), "a peer needs at least one address");
        require_tool("turnutils_peer");
        const ATTEMPTS: usize = 3;
        let mut last_failure = String::new();
        for _ in 0..ATTEMPTS {
            let port = free_peer_port(addrs);
            let mut peer = Peer::spawn(addrs, port);
            match peer.wait_ready(PEER_READY_TIMEOUT) {
                Ok(()) => return peer,
                Err(why) => {
                    // Possibly a port taken between our probe and its bind.
                    peer.stop();
                    last_failure = format!("{why}\n{}", peer.describe());
                }
            }
        }
        panic!("turnutils_peer did not become ready: {last_failure}");
    }

    fn spawn(addrs: &[IpAddr], port: u16) -> Peer {
        let program = require_tool("turnutils_peer");
        let mut args = Vec::new();
        for a in addrs {
            args.push("-L".to_string());
            args.push(a.to_string());
        }
        args.push("-p".to_string());
        args.push(port.to_string());
        let command = format!("turnutils_peer {}", args.join(" "));
        let mut child = die_with_spawner(Command::new(&program))
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `{command}`: {e}"));
        let output = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            pump(child.stdout.take().expect("piped stdout"), output.clone()),
            pump(child.stderr.take().expect("piped stderr"), output.clone()),
        ];
        Peer {
            child: Some(child),
            port,
            addrs: addrs.to_vec(),
            command,
            output,
            readers,
        }
    }

    /// `ADDR:P` and `ADDR:P+1` for every address.
    pub fn endpoints(&self) -> Vec<SocketAddr> {
        self.addrs
            .iter()
            .flat_map(|&ip| {
                [
                    SocketAddr::new(ip, self.port),
                    SocketAddr::new(ip, self.port + 1),
                ]
            })
            .collect()
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut pending = self.endpoints();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("peer exited before it was ready ({status})"));
            }
            pending.retain(|&ep| !echoes(ep, Duration::from_millis(200)));
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("no echo within {timeout:?} from {pending:?}"));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the peer printed so far.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    pub fn describe(&self) -> String {
        format!(
            "peer `{}` (echo on {:?})\n--- peer output ---\n{}\n-------------------",
            self.command,
            self.endpoints(),
            self.output().trim_end()
        )
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if self.child.is_none() {
            return;
        }
        self.stop();
        if thread::panicking() {
            eprintln!("---- {} ----", self.describe());
        }
    }
}

/// Does `ep` echo a datagram within `wait`?
fn echoes(ep: SocketAddr, wait: Duration) -> bool {
    let sock = udp_client_for(ep);
    let probe: [u8; 8] = random_bytes();
    if sock.send_to(&probe, ep).is_err() {
        return false;
    }
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 64];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if left.is_zero() || sock.set_read_timeout(Some(left)).is_err() {
            return false;
        }
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if from == ep && buf[..n] == probe => return true,
            Ok(_) => continue,
            Err(_) => return false,
        }
    }
    false
}

/// A UDP port `P` such that `P` and `P + 1` are free on every address in
/// `addrs`, and `P + 1` is below the relay port range.
pub fn free_peer_port(addrs: &[IpAddr]) -> u16 {
    for _ in 0..500 {
        let port = UdpSocket::bind((addrs[0], 0))
            .and_then(|s| s.local_addr())
            .expect("bind an ephemeral UDP port")
            .port();
        if port >= RELAY_MIN_PORT - 1 {
            continue;
        }
        let mut held = Vec::new();
        let ok = addrs.iter().all(|&ip| {
            [port, port + 1]
                .iter()
                .all(|&p| match UdpSocket::bind((ip, p)) {
                    Ok(s) => {
                        held.push(s);
                        true
                    }
                    Err(_) => false,
                })
        });
        if ok {
            return port;
        }
    }
    panic!("could not find two consecutive free UDP ports for the peer");
}

// ---------------------------------------------------------------------------
// turnutils_uclient output
// ---------------------------------------------------------------------------

/// One Allocate that succeeded, as `turnutils_uclient -v` prints it:
/// `IPv4. Received relay addr: 127.0.0.1:62414` (one line per
/// XOR-RELAYED-ADDRESS it looked at, until one of the family it wants) then
/// `clnet_allocate: rtv=N` (the RESERVATION-TOKEN, 0 when absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UclientAllocation {
    pub relay_addrs: Vec<SocketAddr>,
    pub reservation_token: u64,
}

impl UclientAllocation {
    /// The relayed address the client uses (the last one it printed).
    pub fn relay(&self) -> Option<SocketAddr> {
        self.relay_addrs.last().copied()
    }
}

/// Something uclient reported, in output order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UclientEvent {
    /// A successful Allocate (verbose output only).
    Allocated(UclientAllocation),
    /// A successful ChannelBind, `success: 0x4b6f` (verbose output only).
    ChannelBound(u16),
    /// An error response it printed: `channel bind: error 400 (reason)`,
    /// `create permission error 403 (...)`, or `error 437 (reason)` from an
    /// Allocate or Refresh (context `allocate/refresh`).
    ErrorResponse {
        context: String,
        code: u16,
        reason: String,
    },
}

/// What one `turnutils_uclient` run reported. Totals are `None` when the
/// run ended before printing them (it exits early when a request fails).
#[derive(Debug, Clone, Default)]
pub struct UclientReport {
    /// Final `start_mclient: tot_send_msgs=N, tot_recv_msgs=M`.
    pub send_msgs: Option<u64>,
    pub recv_msgs: Option<u64>,
    /// Final `start_mclient: tot_send_bytes ~ N, tot_recv_bytes ~ M`.
    pub send_bytes: Option<u64>,
    pub recv_bytes: Option<u64>,
    /// `Total lost packets N (x%), total send dropped D (y%)`.
    pub lost: Option<u64>,
    pub send_dropped: Option<u64>,
    pub events: Vec<UclientEvent>,
    /// Every line containing `ERROR` or `!!!` (its own diagnostics, such as
    /// `ERROR: Cannot complete Allocation`,
    /// `ERROR: received message has wrong channel` or
    /// `clnet_allocate: !!!: relay addr cannot be received (2)`).
    pub error_lines: Vec<String>,
}

/// The unsigned number at the start of `s`.
fn leading_u64(s: &str) -> Option<u64> {
    let digits: String = s
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The number after `key` in `line`.
fn number_after(line: &str, key: &str) -> Option<u64> {
    line.split_once(key).and_then(|(_, rest)| leading_u64(rest))
}

/// `127.0.0.1:3478`, `[::1]:3478` or coturn's unbracketed `::1:3478`.
pub fn parse_tool_endpoint(s: &str) -> Option<SocketAddr> {
    let s = s.trim();
    let (ip, port) = s.rsplit_once(':')?;
    let ip: IpAddr = ip
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    Some(SocketAddr::new(ip, port.trim().parse().ok()?))
}

impl UclientReport {
    /// Parse uclient's stdout and stderr (it logs to stdout).
    pub fn parse(out: &ToolOutput) -> UclientReport {
        let mut r = UclientReport::default();
        let mut relay_addrs = Vec::new();
        for line in out.stdout.lines().chain(out.stderr.lines()) {
            if line.contains("ERROR") || line.contains("!!!") {
                r.error_lines.push(line.trim().to_string());
            }
            // Periodic progress lines carry `msz=`; only the final totals
            // matter.
            if line.contains("start_mclient:") && !line.contains("msz=") {
                if let Some(v) = number_after(line, "tot_send_msgs=") {
                    r.send_msgs = Some(v);
                }
                if let Some(v) = number_after(line, "tot_recv_msgs=") {
                    r.recv_msgs = Some(v);
                }
                if let Some(v) = number_after(line, "tot_send_bytes ~") {
                    r.send_bytes = Some(v);
                }
                if let Some(v) = number_after(line, "tot_recv_bytes ~") {
                    r.recv_bytes = Some(v);
                }
            }
            if let Some(v) = number_after(line, "Total lost packets ") {
                r.lost = Some(v);
                r.send_dropped = number_after(line, "total send dropped ");
            }
            if let Some((_, a)) = line.split_once("Received relay addr:")
                && let Some(a) = parse_tool_endpoint(a)
            {
                relay_addrs.push(a);
            }
            if let Some(token) = number_after(line, "clnet_allocate: rtv=") {
                r.events.push(UclientEvent::Allocated(UclientAllocation {
                    relay_addrs: std::mem::take(&mut relay_addrs),
                    reservation_token: token,
                }));
            }
            if let Some((_, hex)) = line.split_once("success: 0x") {
                let hex: String = hex.chars().take_while(char::is_ascii_hexdigit).collect();
                if let Ok(ch) = u16::from_str_radix(&hex, 16) {
                    r.events.push(UclientEvent::ChannelBound(ch));
                }
            }
            if let Some((context, rest)) = line.split_once("error ")
                && let Some(code) = leading_u64(rest).and_then(|c| u16::try_from(c).ok())
                && (300..700).contains(&code)
            {
                let reason = rest
                    .split_once('(')
                    .and_then(|(_, r)| r.rsplit_once(')'))
                    .map(|(r, _)| r.to_string())
                    .unwrap_or_default();
                let context = context
                    .rsplit_once(": : ")
                    .map_or(context, |(_, c)| c)
                    .trim()
                    .trim_end_matches(':');
                // Allocate and Refresh errors print no context.
                let context = if context.is_empty() {
                    "allocate/refresh".to_string()
                } else {
                    context.to_string()
                };
                r.events.push(UclientEvent::ErrorResponse {
                    context,
                    code,
                    reason,
                });
            }
        }
        r
    }

    pub fn allocations(&self) -> Vec<&UclientAllocation> {
        self.events
            .iter()
            .filter_map(|e| match e {
                UclientEvent::Allocated(a) => Some(a),
                _ => None,
            })
            .collect()
    }

    pub fn channel_binds(&self) -> Vec<u16> {
        self.events
            .iter()
            .filter_map(|e| match e {
                UclientEvent::ChannelBound(c) => Some(*c),
                _ => None,
            })
            .collect()
    }

    /// `(context, code, reason)` of every error response it printed.
    pub fn error_responses(&self) -> Vec<(&str, u16, &str)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                UclientEvent::ErrorResponse {
                    context,
                    code,
                    reason,
                } => Some((context.as_str(), *code, reason.as_str())),
                _ => None,
            })
            .collect()
    }

    /// One line for assertion messages.
    pub fn summary(&self) -> String {
        let n = |v: Option<u64>| v.map_or_else(|| "(not printed)".to_string(), |v| v.to_string());
        let loss = match (self.send_msgs, self.recv_msgs) {
            (Some(s), Some(r)) if s > 0 => {
                format!(
                    ": {:.0}% loss",
                    100.0 * (s.saturating_sub(r)) as f64 / s as f64
                )
            }
            _ => String::new(),
        };
        format!(
            "uclient reported tot_send_msgs={} tot_recv_msgs={}{loss} \
             (bytes sent {} received {}, lost {}, send dropped {})",
            n(self.send_msgs),
            n(self.recv_msgs),
            n(self.send_bytes),
            n(self.recv_bytes),
            n(self.lost),
            n(self.send_dropped),
        )
    }
}

/// Polls `done` every 100 ms until it holds, for changes a server makes on
/// its own schedule (reloads, cache expiry, timeouts) that no event
/// announces; fails the test after `within`.
pub fn eventually(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// The live allocations, as the server's `/v1/allocations` lists them.
pub fn allocations(server: &TestServer) -> Vec<serde_json::Value> {
    let (status, body) = admin_request(server, "GET", "/v1/allocations");
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    list["allocations"].as_array().expect("a list").clone()
}

/// A new Allocate from a fresh client of ours (turnpike-client) as the
/// loopback user `alice`: the client holding the allocation, or what the
/// server answered instead (a 300 is `ClientError::TryAlternate`).
pub async fn allocate(
    server: SocketAddr,
) -> Result<turnpike_client::TurnClient, turnpike_client::ClientError> {
    let mut client = turnpike_client::TurnClient::bind(
        server,
        turnpike_client::Credentials::new(TURN_USER, TURN_PASSWORD),
    )
    .await
    .expect("client socket");
    client
        .allocate(turnpike_client::AllocateParams::default())
        .await?;
    Ok(client)
}

/// The ALTERNATE-SERVER of the signed 300 (Try Alternate) a server answers a
/// new Allocate with; panics on any other answer.
pub async fn redirected(server: SocketAddr) -> SocketAddr {
    match allocate(server).await {
        Err(turnpike_client::ClientError::TryAlternate { server, reason }) => {
            assert_eq!(reason, "Try Alternate");
            server
        }
        Err(other) => panic!("a new Allocate expected to be redirected: {other}"),
        Ok(_) => panic!("a new Allocate expected to be redirected succeeded"),
    }
}
