//! A real browser relaying through a test server: headless Chromium
//! (Debian package `chromium`, installed by `scripts/test`) loads a test
//! page from a small HTTP server on 127.0.0.1 ([`Site`]); the page fetches
//! an RTCConfiguration, connects two RTCPeerConnections relay-only through
//! the TURN servers it lists, sends messages over a data channel, and
//! POSTs what happened back ([`RelayReport`]).
//!
//! - [`Site`] serves the page (`/` and `/page.html`, from
//!   `browser/page.html`), the configuration (`/config.json`, optionally
//!   only with `Authorization: Bearer TOKEN`) and takes the page's report
//!   (`POST /result`), handed to the test through a channel it waits on
//!   with a deadline. Every request is recorded ([`Site::requests`]).
//! - [`Chromium`] runs the browser headless with a fresh profile and a
//!   fresh `HOME` (so nothing is read from or written to the machine's
//!   own: crash reports, and the NSS certificate database a test can fill
//!   with a CA to trust, [`Chromium::trust`]). `Drop` kills its whole
//!   process group and the crash handlers that leave it, and prints the
//!   tail of its log when the test failed.
//! - [`relay_check`] does one run: browser launched, report awaited within
//!   [`RUN_TIMEOUT`], failing the test with the page's log and the
//!   browser's if none comes.
//! - [`Chromium::launch_with_devtools`] also opens the DevTools protocol
//!   on a pipe ([`DevTools`]): the test reads the page's DOM and takes
//!   screenshots (the fleet self-test page, tests/selftest.rs).
//!
//! What Chromium (156, Debian 12) was found to do here: it takes a TURN
//! server on 127.0.0.1 (over UDP, TCP and TLS) and connects two loopback
//! relayed addresses without any flag. `--ignore-certificate-errors`
//! does apply to `turns:`, but the TLS test trusts the test CA through
//! NSS instead, so that the served chain is verified as a browser out
//! there would. `--disable-crashpad-for-testing`, which would keep the
//! crash handlers from starting, makes the network service crash.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{PRIMARY_V4, die_with_spawner};

/// The test page: plain HTML and JavaScript, no build step.
pub const PAGE: &str = include_str!("browser/page.html");
/// The browser Debian installs (`chromium` is a wrapper script that execs
/// /usr/lib/chromium/chromium, keeping the pid).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Deadline for one run, browser start to report. A good run takes 1-3 s;
/// the page gives up on a step after 20 s and still reports, so this is
/// only reached when the page or the browser never ran.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on reading one request from the browser.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request the site takes (a report is a few KiB).
const MAX_REQUEST: usize = 1 << 20;

// ---------------------------------------------------------------------------
// The site
// ---------------------------------------------------------------------------

/// What [`Site`] serves besides the page.
#[derive(Debug, Clone, Default)]
pub struct SiteOptions {
    /// The body of `/config.json`; `None`: 404.
    pub config: Option<String>,
    /// `/config.json` only with `Authorization: Bearer TOKEN` (else 401).
    pub token: Option<String>,
}

/// One request the site answered.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: String,
    /// The path and query.
    pub target: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    pub status: u16,
}

/// The test's HTTP server on 127.0.0.1: one thread accepting, one per
/// connection; stopped in `Drop`.
pub struct Site {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<SeenRequest>>>,
    reports: Receiver<String>,
    stopping: Arc<AtomicBool>,
    /// Clones of the open connections, shut down in `Drop` so that no
    /// connection thread waits out its read timeout (Chromium opens
    /// connections ahead of need and may leave one idle).
    connections: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<JoinHandle<Vec<JoinHandle<()>>>>,
}

impl Site {
    pub fn start(options: SiteOptions) -> Site {
        let listener = TcpListener::bind((PRIMARY_V4, 0)).expect("bind the test site on 127.0.0.1");
        let addr = listener.local_addr().expect("the site's address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (reports_tx, reports) = mpsc::channel();
        let stopping = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let options = Arc::new(options);
        let acceptor = {
            let (requests, stopping, connections) =
                (requests.clone(), stopping.clone(), connections.clone());
            thread::spawn(move || {
                let mut handlers = Vec::new();
                for stream in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    if let Ok(clone) = stream.try_clone() {
                        connections.lock().unwrap().push(clone);
                    }
                    let (options, requests, reports_tx) =
                        (options.clone(), requests.clone(), reports_tx.clone());
                    handlers.push(thread::spawn(move || {
                        serve_connection(stream, &options, &requests, &reports_tx);
                    }));
                }
                handlers
            })
        };
        Site {
            addr,
            requests,
            reports,
            stopping,
            connections,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The page, running at once against the configuration at `config`
    /// (a URL, relative to the site or not), fetched with `token`, and
    /// reporting to `/result`.
    pub fn page_url(&self, config: &str, token: Option<&str>) -> String {
        let mut url = format!("{}?config={}", self.url("/page.html"), query_escape(config));
        if let Some(token) = token {
            url.push_str(&format!("&token={}", query_escape(token)));
        }
        url.push_str("&report=/result");
        url
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// The next report POSTed to `/result`, waiting at most `within`.
    pub fn next_report(&self, within: Duration) -> Result<String, RecvTimeoutError> {
        self.reports.recv_timeout(within)
    }

    /// The requests, one a line, for failure messages.
    pub fn describe(&self) -> String {
        let lines: Vec<String> = self
            .requests()
            .iter()
            .map(|r| {
                format!(
                    "{} {} -> {}{}",
                    r.method,
                    r.target,
                    r.status,
                    if r.authorization.is_some() {
                        " (with Authorization)"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        format!("site {} served:\n  {}", self.addr, lines.join("\n  "))
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wakes the acceptor, which sees `stopping` and returns.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        for c in self.connections.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        if let Some(acceptor) = self.acceptor.take()
            && let Ok(handlers) = acceptor.join()
        {
            for h in handlers {
                let _ = h.join();
            }
        }
    }
}

/// `s` for a query value: everything but unreserved characters escaped.
pub fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Answers requests on `stream` until the client closes it (keep-alive, as
/// Chromium expects), a request is malformed, or none comes within
/// [`REQUEST_TIMEOUT`].
fn serve_connection(
    stream: TcpStream,
    options: &SiteOptions,
    requests: &Mutex<Vec<SeenRequest>>,
    reports: &Sender<String>,
) {
    let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
    let _ = stream.set_write_timeout(Some(REQUEST_TIMEOUT));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    while let Some((method, target, headers, body)) = read_request(&mut reader) {
        let path = target.split('?').next().unwrap_or_default();
        let authorization = headers.get("authorization").cloned();
        let (status, content_type, response): (u16, &str, Vec<u8>) = match (method.as_str(), path) {
            ("GET", "/" | "/page.html") => (200, "text/html; charset=utf-8", PAGE.into()),
            ("GET", "/config.json") => match (&options.config, &options.token) {
                (None, _) => (404, "text/plain", b"no configuration".to_vec()),
                (Some(_), Some(token))
                    if authorization.as_deref() != Some(format!("Bearer {token}").as_str()) =>
                {
                    (401, "text/plain", b"token required".to_vec())
                }
                (Some(config), _) => (200, "application/json", config.clone().into_bytes()),
            },
            ("POST", "/result") => {
                let _ = reports.send(String::from_utf8_lossy(&body).into_owned());
                (204, "text/plain", Vec::new())
            }
            _ => (404, "text/plain", b"not found".to_vec()),
        };
        requests.lock().unwrap().push(SeenRequest {
            method,
            target,
            authorization,
            status,
        });
        let reason = match status {
            200 => "OK",
            204 => "No Content",
            401 => "Unauthorized",
            _ => "Not Found",
        };
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n\
             Content-Length: {}\r\nCache-Control: no-store\r\n\r\n",
            response.len()
        );
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(&response).is_err() {
            break;
        }
    }
    // Closes the connection for the browser too, though [`Site`] holds a
    // clone: a connection idle past the read timeout left open would take
    // the browser's next request (it reuses idle connections) and never
    // answer it.
    let _ = writer.shutdown(Shutdown::Both);
}

type Request = (String, String, HashMap<String, String>, Vec<u8>);

/// One HTTP/1.1 request: method, target, headers (names lowercased) and
/// body; `None` at the end of the connection or on anything malformed.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = HashMap::new();
    let mut size = line.len();
    loop {
        let mut h = String::new();
        size += reader.read_line(&mut h).ok()?;
        if size > MAX_REQUEST {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let length: usize = match headers.get("content-length") {
        Some(v) => v.parse().ok()?,
        None => 0,
    };
    if length > MAX_REQUEST {
        return None;
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((method, target, headers, body))
}

// ---------------------------------------------------------------------------
// The page's report
// ---------------------------------------------------------------------------

/// A candidate, as the page saw it gathered or as getStats() describes
/// one side of the selected pair.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    /// `a` (the offerer) or `b`; absent in a pair.
    pub side: Option<String>,
    /// host, srflx, prflx or relay.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The candidate's own transport: udp for every relayed candidate
    /// (the relayed transport address is UDP whatever reaches the server).
    pub protocol: Option<String>,
    pub address: Option<String>,
    pub port: Option<u16>,
    /// How the browser reaches the TURN server: udp, tcp or tls (local
    /// relay candidates only).
    pub relay_protocol: Option<String>,
    /// The ICE server URL it came from (local candidates only).
    pub url: Option<String>,
}

impl Candidate {
    /// `address:port`.
    pub fn endpoint(&self) -> Option<SocketAddr> {
        let ip = self.address.as_deref()?.parse().ok()?;
        Some(SocketAddr::new(ip, self.port?))
    }
}

/// The selected candidate pair of one connection, from getStats().
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SelectedPair {
    pub local: Option<Candidate>,
    pub remote: Option<Candidate>,
    pub bytes_sent: Option<u64>,
    pub bytes_received: Option<u64>,
}

/// What the page POSTs to `/result`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RelayReport {
    pub ok: bool,
    pub error: Option<String>,
    /// Messages sent from `a`.
    pub expected: u32,
    /// Messages that arrived intact at `b`.
    pub received: u32,
    /// Messages that came back intact to `a` (b echoes each).
    pub echoed: u32,
    /// Bytes of all the messages.
    pub bytes: u64,
    /// Every candidate gathered, both sides.
    pub candidates: Vec<Candidate>,
    /// `icecandidateerror` events (url, errorCode, errorText).
    pub candidate_errors: Vec<serde_json::Value>,
    /// `a`'s selected pair.
    pub selected_pair: Option<SelectedPair>,
    /// `b`'s selected pair.
    pub remote_selected_pair: Option<SelectedPair>,
    /// The `urls` of each ICE server of the configuration.
    pub ice_servers: Vec<serde_json::Value>,
    pub elapsed_ms: u64,
    pub user_agent: Option<String>,
    /// The page's own log, with milliseconds since the start.
    pub log: Vec<String>,
    /// The report as received.
    #[serde(skip)]
    pub raw: String,
}

impl RelayReport {
    pub fn parse(raw: &str) -> RelayReport {
        let mut report: RelayReport = serde_json::from_str(raw)
            .unwrap_or_else(|e| panic!("the page's report does not parse ({e}): {raw}"));
        report.raw = raw.to_owned();
        report
    }

    /// The page's log, one entry a line, and its error.
    pub fn describe(&self) -> String {
        format!(
            "page report: ok={} error={:?} received={}/{} echoed={} in {} ms\n\
             candidate errors: {:?}\n--- page log ---\n{}\n----------------",
            self.ok,
            self.error,
            self.received,
            self.expected,
            self.echoed,
            self.elapsed_ms,
            self.candidate_errors,
            self.log.join("\n")
        )
    }
}

// ---------------------------------------------------------------------------
// Chromium
// ---------------------------------------------------------------------------

/// A headless Chromium with its own profile and `HOME`, killed (with its
/// whole process group) in `Drop`.
pub struct Chromium {
    child: Option<Child>,
    pub url: String,
    /// Profile (`profile/`), `HOME` (`home/`) and the log (`chromium.log`).
    dir: tempfile::TempDir,
    started: Instant,
}

impl Chromium {
    /// A fresh profile and `HOME`, not started yet, so that [`trust`]
    /// can prepare the certificate database first.
    ///
    /// [`trust`]: Chromium::trust
    pub fn new() -> Chromium {
        let dir = tempfile::tempdir().expect("a temporary directory for Chromium");
        for sub in ["profile", "home"] {
            std::fs::create_dir(dir.path().join(sub)).expect("create the browser's directories");
        }
        Chromium {
            child: None,
            url: String::new(),
            dir,
            started: Instant::now(),
        }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("chromium.log")
    }

    /// Trusts the CA certificate `ca_pem` for TLS servers: Chromium on
    /// Linux reads user-added roots from `$HOME/.pki/nssdb`, made here with
    /// `certutil` (Debian package `libnss3-tools`).
    pub fn trust(&self, ca_pem: &Path) {
        let db = self.home().join(".pki/nssdb");
        std::fs::create_dir_all(&db).expect("create the NSS database directory");
        let db = format!("sql:{}", db.display());
        let ca = ca_pem.to_str().expect("UTF-8 path");
        for args in [
            vec!["-N", "-d", db.as_str(), "--empty-password"],
            vec![
                "-A",
                "-d",
                db.as_str(),
                "-n",
                "turnpike test CA",
                "-t",
                "C,,",
                "-i",
                ca,
            ],
        ] {
            let out = super::run("certutil", &args);
            assert_eq!(out.code(), Some(0), "certutil\n{}", out.describe());
        }
    }

    /// Starts the browser on `url`.
    pub fn launch(&mut self, url: &str) {
        let command = self.command(url, &[]);
        self.spawn(command, url);
    }

    /// Starts the browser on `url` with the DevTools protocol on a pipe
    /// (`--remote-debugging-pipe`: it reads commands from its fd 3 and
    /// writes answers to its fd 4), its window `width`x`height` (what a
    /// screenshot shows). A pipe rather than a port: nothing to find or
    /// race for, no WebSocket client, and no other process can attach.
    pub fn launch_with_devtools(&mut self, url: &str, width: u32, height: u32) -> DevTools {
        let (browser_reads, from_test) = std::io::pipe().expect("a pipe to the browser");
        let (test_reads, browser_writes) = std::io::pipe().expect("a pipe from the browser");
        let size = format!("--window-size={width},{height}");
        let mut command = self.command(url, &["--remote-debugging-pipe", &size]);
        let (read_fd, write_fd) = (browser_reads.as_raw_fd(), browser_writes.as_raw_fd());
        // SAFETY: between fork and exec, only fcntl(2) and dup2(2), which are
        // async-signal-safe, on descriptors the parent keeps open until
        // spawn returns. Both are first copied above 10 (close-on-exec), so
        // that placing one on 3 cannot overwrite the other; the copies on
        // 3 and 4 themselves stay open across exec.
        unsafe {
            command.pre_exec(move || {
                let high_read = libc::fcntl(read_fd, libc::F_DUPFD_CLOEXEC, 10);
                let high_write = libc::fcntl(write_fd, libc::F_DUPFD_CLOEXEC, 10);
                if high_read < 0
                    || high_write < 0
                    || libc::dup2(high_read, 3) < 0
                    || libc::dup2(high_write, 4) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self.spawn(command, url);
        // The browser's ends, closed here so that the test sees the end of
        // the pipe when the browser is gone.
        drop((browser_reads, browser_writes));
        DevTools::new(from_test, test_reads)
    }

    /// The command line: the flags every run needs, then `extra`, then
    /// `url`.
    fn command(&self, url: &str, extra: &[&str]) -> Command {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing (Debian package `chromium`). Run `scripts/test`, which \
             installs every test dependency."
        );
        let log = std::fs::File::create(self.log_path()).expect("create the browser's log");
        let mut command = die_with_spawner(Command::new(CHROMIUM));
        command
            .args([
                "--headless",
                // Root cannot use the sandbox (and the tests run as root).
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                // Without these Chromium calls out at start-up; the
                // network here refuses it, and the tests stay on loopback.
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-default-apps",
                "--disable-extensions",
                "--mute-audio",
                // Its log on stderr (to the file), for failure messages.
                "--enable-logging=stderr",
                "--v=0",
            ])
            .arg(format!(
                "--user-data-dir={}",
                self.dir.path().join("profile").display()
            ))
            .args(extra)
            .arg(url)
            .env("HOME", self.home())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("DISPLAY")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file"))
            .stderr(log)
            // Its own process group, so Drop ends every process it forks.
            .process_group(0);
        command
    }

    fn spawn(&mut self, mut command: Command, url: &str) {
        assert!(self.child.is_none(), "this browser already runs");
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {CHROMIUM}: {e}"));
        self.url = url.to_owned();
        self.started = Instant::now();
        self.child = Some(child);
    }

    /// Whether the browser exited by itself (it should not: it stays on the
    /// page until killed).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The last `lines` lines of its log, without the D-Bus complaints of
    /// a machine without a session bus.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains("dbus") && !l.contains("D-Bus"))
            .collect();
        kept[kept.len().saturating_sub(lines)..].join("\n")
    }

    pub fn describe(&self) -> String {
        format!(
            "Chromium on {} (running {:?})\n--- Chromium log (last lines) ---\n{}\n\
             ---------------------------------",
            self.url,
            self.started.elapsed(),
            self.log_tail(40)
        )
    }

    /// Kills the browser's process group, then the crash handlers it
    /// started: they leave the group (setsid), and would otherwise linger
    /// a few seconds. They are found by this browser's own directory in
    /// their command line (`--database=HOME/.config/chromium/...`).
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pgid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) on the process group our own child leads; the
            // child is not reaped yet, so the id cannot have been reused.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
        let _ = child.wait();
        let marker = self.dir.path().to_string_lossy().into_owned();
        let handlers = processes_mentioning(&marker);
        for &pid in &handlers {
            // SAFETY: kill(2) on a process whose command line names our own
            // temporary directory: one this browser started.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        // They are init's children, not ours to reap: wait (briefly) until
        // each is gone or a zombie, so none is alive when the test ends.
        let deadline = Instant::now() + Duration::from_secs(2);
        while handlers.iter().any(|&pid| alive(pid)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Default for Chromium {
    fn default() -> Self {
        Chromium::new()
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        if self.child.is_none() {
            return;
        }
        // The log is read first: killing the browser adds nothing useful.
        let description = thread::panicking().then(|| self.describe());
        self.stop();
        if let Some(d) = description {
            eprintln!("---- {d} ----");
        }
    }
}

/// Whether `pid` runs (exists and is not a zombie).
fn alive(pid: libc::pid_t) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // `pid (comm) STATE ...`; comm may hold spaces and parentheses.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// Pids of the processes whose command line contains `marker`.
fn processes_mentioning(marker: &str) -> Vec<libc::pid_t> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// One run
// ---------------------------------------------------------------------------

/// Runs the page in `browser` against the configuration at `config` on
/// `site` and returns its report, failing the test if none comes within
/// [`RUN_TIMEOUT`] (or the browser exits first). The browser keeps
/// running, the page's connections open, until it is dropped: the test
/// can look at the server's allocations meanwhile.
pub fn relay_check(
    site: &Site,
    browser: &mut Chromium,
    config: &str,
    token: Option<&str>,
) -> RelayReport {
    browser.launch(&site.page_url(config, token));
    let raw = await_report(site, browser, RUN_TIMEOUT);
    let report = RelayReport::parse(&raw);
    eprintln!(
        "[browser] report after {:?}: ok={} error={:?}, page took {} ms",
        browser.started.elapsed(),
        report.ok,
        report.error,
        report.elapsed_ms
    );
    report
}

/// Waits for the next report on `site` from the page in `browser`, at
/// most `within`; fails the test (with the site's requests and the
/// browser's log) when none comes or the browser exits first.
pub fn await_report(site: &Site, browser: &mut Chromium, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        // Short waits on the channel, to notice a browser that died.
        match site.next_report(Duration::from_millis(250)) {
            Ok(raw) => return raw,
            Err(RecvTimeoutError::Disconnected) => panic!("the site stopped"),
            Err(RecvTimeoutError::Timeout) => {}
        }
        if let Some(status) = browser.exited() {
            panic!(
                "Chromium exited ({status}) before the page reported\n{}\n{}",
                site.describe(),
                browser.describe()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no report from the page within {within:?}\n{}\n{}",
            site.describe(),
            browser.describe()
        );
    }
}

// ---------------------------------------------------------------------------
// The DevTools protocol
// ---------------------------------------------------------------------------

/// Bound on one DevTools command's answer.
pub const DEVTOOLS_TIMEOUT: Duration = Duration::from_secs(15);

/// The DevTools protocol of a browser started with
/// [`Chromium::launch_with_devtools`]: JSON messages, each ended by a NUL
/// byte, over two pipes. A thread reads the answers (and events, which are
/// dropped); it ends when the browser closes its end.
pub struct DevTools {
    to_browser: std::io::PipeWriter,
    answers: Receiver<serde_json::Value>,
    next_id: u64,
}

impl DevTools {
    fn new(to_browser: std::io::PipeWriter, from_browser: std::io::PipeReader) -> DevTools {
        let (tx, answers) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(from_browser);
            loop {
                let mut message = Vec::new();
                match reader.read_until(0, &mut message) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                message.pop_if(|b| *b == 0);
                let Ok(value) = serde_json::from_slice::<serde_json::Value>(&message) else {
                    continue;
                };
                if value.get("id").is_some() && tx.send(value).is_err() {
                    return;
                }
            }
        });
        DevTools {
            to_browser,
            answers,
            next_id: 1,
        }
    }

    /// Sends `method` with `params` (to the page `session` when given) and
    /// returns its `result`, or the protocol's error as text.
    pub fn call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = serde_json::json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = session.into();
        }
        let mut bytes = message.to_string().into_bytes();
        bytes.push(0);
        self.to_browser
            .write_all(&bytes)
            .map_err(|e| format!("{method}: writing to the browser: {e}"))?;
        let deadline = Instant::now() + DEVTOOLS_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = self
                .answers
                .recv_timeout(left)
                .map_err(|e| format!("{method}: no answer from the browser ({e})"))?;
            if answer["id"].as_u64() != Some(id) {
                continue;
            }
            if let Some(error) = answer.get("error") {
                return Err(format!("{method}: {error}"));
            }
            return Ok(answer["result"].clone());
        }
    }

    /// A session on the browser's (one) page.
    pub fn attach_page(&mut self) -> Result<String, String> {
        let targets = self.call(None, "Target.getTargets", serde_json::json!({}))?;
        let page = targets["targetInfos"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .ok_or_else(|| format!("no page among the browser's targets: {targets}"))?;
        let attached = self.call(
            None,
            "Target.attachToTarget",
            serde_json::json!({ "targetId": page["targetId"], "flatten": true }),
        )?;
        attached["sessionId"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no session in {attached}"))
    }

    /// The value of the JavaScript `expression` in the page.
    pub fn evaluate(
        &mut self,
        session: &str,
        expression: &str,
    ) -> Result<serde_json::Value, String> {
        let result = self.call(
            Some(session),
            "Runtime.evaluate",
            serde_json::json!({ "expression": expression, "returnByValue": true }),
        )?;
        if let Some(exception) = result.get("exceptionDetails") {
            return Err(format!("{expression}: {exception}"));
        }
        Ok(result["result"]["value"].clone())
    }

    /// A PNG of the page as shown (the window's size).
    pub fn screenshot(&mut self, session: &str) -> Result<Vec<u8>, String> {
        use base64::Engine as _;
        let result = self.call(
            Some(session),
            "Page.captureScreenshot",
            serde_json::json!({ "format": "png" }),
        )?;
        let data = result["data"]
            .as_str()
            .ok_or_else(|| format!("no data in the screenshot's answer: {result}"))?;
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| format!("the screenshot is not base64: {e}"))
    }
}
