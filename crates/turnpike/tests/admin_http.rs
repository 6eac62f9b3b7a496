//! The admin HTTP endpoint (`[admin] listen`) of a running server, asked
//! with plain HTTP/1.1 over a TCP socket: `/metrics` and `/status` report
//! the TLS certificate in service — its expiry, reload count and subject —
//! and follow a renewal but not a broken one; without TLS there is no TLS
//! part; connections are bounded; with a token every route but the probes
//! needs it, and `turnpike status|allocations|kick` send it; non-loopback
//! addresses need a token; a busy admin port is one error line and exit 1;
//! so is an admin endpoint the command line cannot reach.
//!
//! Expected certificate values are read from the files with the `openssl`
//! and `date` commands, not with Turnpike's own parser. Loopback only, with
//! time limits.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::cli::run;
use support::pki::{KeyType, Pki, Renewable, served_subject};
use support::{PRIMARY_V4, ServerOptions, TestServer, eventually};

/// Time limit for one HTTP exchange.
const STEP: Duration = Duration::from_secs(10);

/// How long a certificate change may take to show (the test server checks
/// the files every second).
const RELOAD_WITHIN: Duration = Duration::from_secs(15);

const VERSION: &str = env!("CARGO_PKG_VERSION");

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// Parses one HTTP/1.1 response (the whole of what a `Connection: close`
/// exchange returned).
fn parse_response(raw: &[u8]) -> Response {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let response = Response {
        status,
        headers,
        body: body.to_owned(),
    };
    if let Some(length) = response.header("content-length") {
        assert_eq!(
            length.parse::<usize>().ok(),
            Some(response.body.len()),
            "{text:?}"
        );
    }
    response
}

fn connect(port: u16) -> TcpStream {
    let addr = SocketAddr::new(PRIMARY_V4.into(), port);
    let stream = TcpStream::connect_timeout(&addr, STEP)
        .unwrap_or_else(|e| panic!("connect to the admin endpoint {addr}: {e}"));
    stream.set_read_timeout(Some(STEP)).unwrap();
    stream.set_write_timeout(Some(STEP)).unwrap();
    stream
}

fn request_text(method: &str, path: &str) -> String {
    format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
}

/// One request on a new connection.
fn http(port: u16, method: &str, path: &str) -> Response {
    http_with(port, method, path, "")
}

/// One request on a new connection, with `headers` (`Name: value\r\n`
/// each) added.
fn http_with(port: u16, method: &str, path: &str, headers: &str) -> Response {
    let mut stream = connect(port);
    let request = request_text(method, path).replacen(
        "Connection: close\r\n",
        &format!("Connection: close\r\n{headers}"),
        1,
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("{method} {path}: {e} after {raw:?}"));
    parse_response(&raw)
}

fn get_ok(port: u16, path: &str) -> Response {
    let response = http(port, "GET", path);
    assert_eq!(response.status, 200, "GET {path}: {:?}", response.body);
    response
}

fn admin_port(server: &TestServer) -> u16 {
    server.admin_port.expect("admin endpoint configured")
}

fn status(server: &TestServer) -> serde_json::Value {
    let response = get_ok(admin_port(server), "/status");
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{:?}",
        response.headers
    );
    response.json()
}

fn metrics(server: &TestServer) -> String {
    let response = get_ok(admin_port(server), "/metrics");
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8"),
        "{:?}",
        response.headers
    );
    response.body
}

/// The value of the sample `name` (with its labels, if any) in a
/// Prometheus text body; `None` when absent.
fn sample<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
}

/// The certificate's notAfter as Unix time and RFC 3339, by `openssl x509`
/// and GNU `date`.
fn expected_expiry(cert: &Path) -> (i64, String) {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-enddate", "-in"])
        .arg(cert)
        .output()
        .expect("run openssl (Debian package openssl)");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let end = text
        .trim()
        .strip_prefix("notAfter=")
        .unwrap_or_else(|| panic!("openssl x509 -enddate: {text:?}"));
    let date = |args: &[&str]| {
        let out = Command::new("date")
            .arg("-u")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run date");
        assert!(out.status.success(), "date {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let unix: i64 = date(&["-d", end, "+%s"]).parse().expect("a number");
    let rfc3339 = date(&["-d", &format!("@{unix}"), "+%Y-%m-%dT%H:%M:%SZ"]);
    (unix, rfc3339)
}

/// What `/status` and `/metrics` must say about one certificate.
fn assert_reports(server: &TestServer, cert: &Path, name: &str, generation: u64) {
    let (unix, rfc3339) = expected_expiry(cert);
    let subject = format!("CN={name}, O=Turnpike Tests");
    let status = status(server);
    let tls = &status["tls"];
    assert_eq!(tls["not_after_unix"], unix, "{status}");
    assert_eq!(tls["not_after"], rfc3339.as_str(), "{status}");
    assert_eq!(tls["generation"], generation, "{status}");
    assert_eq!(tls["subject"], subject.as_str(), "{status}");
    let body = metrics(server);
    assert_eq!(
        sample(&body, "turnpike_tls_certificate_not_after_seconds"),
        Some(unix.to_string().as_str()),
        "{body}"
    );
    assert_eq!(
        sample(&body, "turnpike_tls_certificate_reloads_total"),
        Some(generation.to_string().as_str()),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            &format!("turnpike_tls_certificate_info{{subject=\"{subject}\"}}")
        ),
        Some("1"),
        "{body}"
    );
    // And that is the certificate new TLS connections get.
    let served = served_subject(server.tls_port.expect("TLS configured"));
    assert!(served.contains(&format!("CN = {name}")), "{served}");
}

/// The expiry, reload count and subject of the certificate in service:
/// at start, after a renewal (within the reload interval), and unchanged
/// after a broken renewal, which the server refuses.
#[test]
fn metrics_and_status_follow_the_certificate_in_service() {
    let pki = Pki::new();
    // Different lifetimes, so the expiries differ by days.
    let first = pki.leaf("turn1", KeyType::EcP256Sec1, 2);
    let renewed = pki.leaf("turn2", KeyType::RsaPkcs8, 20);
    let files = Renewable::new(&first);
    let server = TestServer::start(ServerOptions {
        tls: Some(files.files()),
        admin: true,
        ..ServerOptions::basic()
    });
    let started = Instant::now();
    let first_status = status(&server);
    assert_eq!(first_status["version"], VERSION, "{first_status}");
    let first_uptime = first_status["uptime_seconds"]
        .as_u64()
        .unwrap_or_else(|| panic!("uptime_seconds: {first_status}"));
    assert_eq!(
        sample(
            &metrics(&server),
            &format!("turnpike_build_info{{version=\"{VERSION}\"}}")
        ),
        Some("1")
    );
    assert_reports(&server, &first.cert, "turn1", 0);

    // Renewal: new files, picked up within the reload interval.
    files.renew(&renewed);
    eventually(
        "/status shows the renewed certificate",
        RELOAD_WITHIN,
        || status(&server)["tls"]["generation"] == 1,
    );
    assert_reports(&server, &renewed.cert, "turn2", 1);

    // A broken renewal is refused: everything stays as it was.
    let refusals = |server: &TestServer| server.output().matches("not reloaded").count();
    let before = refusals(&server);
    files.break_certificate();
    eventually("the broken certificate is refused", RELOAD_WITHIN, || {
        refusals(&server) > before
    });
    assert_reports(&server, &renewed.cert, "turn2", 1);

    // Uptime counts whole seconds from the start.
    let uptime = status(&server)["uptime_seconds"].as_u64().unwrap();
    assert!(uptime >= first_uptime, "{uptime} < {first_uptime}");
    if started.elapsed() >= Duration::from_secs(2) {
        assert!(uptime > first_uptime, "{uptime} vs {first_uptime}");
    }
}

/// Without TLS, `/metrics` has only the build info and `/status` says
/// `"tls": null`; other paths are 404 and other methods 405.
#[test]
fn without_tls_there_is_no_certificate_and_other_requests_are_refused() {
    let server = TestServer::start(ServerOptions {
        admin: true,
        ..ServerOptions::basic()
    });
    let port = admin_port(&server);
    let body = metrics(&server);
    assert_eq!(
        sample(
            &body,
            &format!("turnpike_build_info{{version=\"{VERSION}\"}}")
        ),
        Some("1"),
        "{body}"
    );
    assert!(!body.contains("turnpike_tls_"), "{body}");
    assert!(
        body.contains("# TYPE turnpike_build_info gauge\n"),
        "{body}"
    );
    let status = status(&server);
    assert!(status["tls"].is_null(), "{status}");
    assert_eq!(
        status.as_object().map(|o| {
            let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
            keys.sort_unstable();
            keys
        }),
        Some(vec!["tls", "uptime_seconds", "version"]),
        "{status}"
    );
    assert_eq!(http(port, "GET", "/").status, 404);
    assert_eq!(http(port, "GET", "/metrics/x").status, 404);
    assert_eq!(http(port, "POST", "/metrics").status, 405);
    assert_eq!(http(port, "DELETE", "/status").status, 405);
    // Several requests on one keep-alive connection.
    let mut stream = connect(port);
    for _ in 0..3 {
        stream
            .write_all(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        while !raw.ends_with(b"}\n") {
            let n = stream.read(&mut buf).expect("keep-alive response");
            assert!(n > 0, "connection closed after {raw:?}");
            raw.extend_from_slice(&buf[..n]);
        }
        assert_eq!(parse_response(&raw).status, 200);
    }
}

/// At most 32 connections at once: a further client waits (in the kernel's
/// backlog) until one closes, then is served.
#[test]
fn connections_are_bounded() {
    let server = TestServer::start(ServerOptions {
        admin: true,
        ..ServerOptions::basic()
    });
    let port = admin_port(&server);
    let held: Vec<TcpStream> = (0..32).map(|_| connect(port)).collect();
    // Each held connection is accepted (holding a slot) once the server
    // answers on it; a request proves it without closing it.
    for mut stream in &held {
        stream
            .write_all(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 4096];
        assert!(stream.read(&mut buf).unwrap() > 0);
    }
    let mut waiting = connect(port);
    waiting
        .write_all(request_text("GET", "/status").as_bytes())
        .unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut buf = [0u8; 4096];
    match waiting.read(&mut buf) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("the 33rd connection was served: {other:?}"),
    }
    drop(held);
    waiting.set_read_timeout(Some(STEP)).unwrap();
    let mut raw = Vec::new();
    waiting
        .read_to_end(&mut raw)
        .expect("served once a slot is free");
    assert_eq!(parse_response(&raw).status, 200);
}

/// Clients that take every slot and trickle their requests a byte at a
/// time (reconnecting when cut off) cannot lock out a scraper: a request
/// must arrive whole within 5 s, bytes do not extend that, so the scraper,
/// waiting in the kernel's backlog, is served in turn. Before, every byte
/// restarted a 30 s idle timer and 40 such clients held `/metrics` for as
/// long as they liked.
#[test]
fn trickling_clients_cannot_lock_out_the_scraper() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let server = TestServer::start(ServerOptions {
        admin: true,
        ..ServerOptions::basic()
    });
    let port = admin_port(&server);
    let stop = Arc::new(AtomicBool::new(false));
    let tricklers: Vec<_> = (0..40)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let request = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
                while !stop.load(Ordering::Relaxed) {
                    let mut stream = connect(port);
                    for byte in request.iter().cycle() {
                        if stop.load(Ordering::Relaxed) || stream.write_all(&[*byte]).is_err() {
                            break;
                        }
                        // The attack itself: one byte every half second.
                        std::thread::sleep(Duration::from_millis(500));
                    }
                }
            })
        })
        .collect();
    // Let them take the slots: the admin endpoint sees 40 connections.
    eventually("40 trickling connections", STEP, || {
        let out = std::process::Command::new("ss")
            .args(["-Htn", "state", "established", &format!("dport = :{port}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count() >= 40
    });
    let started = Instant::now();
    let response = http(port, "GET", "/metrics");
    let waited = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in tricklers {
        t.join().unwrap();
    }
    assert_eq!(response.status, 200, "{:?}", response.body);
    assert!(
        waited < STEP,
        "the scraper was served after {waited:?}, within the 5 s request timeout plus its turn"
    );
}

/// An address other than loopback needs a token: without
/// `admin.token_file` it is a configuration error (one line, exit 2); so
/// is a token file that cannot be read, and the removed
/// `admin.allow_remote`.
#[test]
fn non_loopback_admin_address_needs_a_token() {
    let data = tempfile::tempdir().expect("data dir");
    let data_dir = data.path().to_str().unwrap();
    let token_file = data.path().join("admin.token");
    std::fs::write(&token_file, "0123456789abcdef0123456789abcdef\n").unwrap();
    let token_file = token_file.to_str().unwrap();
    let env = [("TURNPIKE_DATA_DIR", data_dir)];
    for (args, env) in [
        (
            vec!["--admin-listen", "0.0.0.0:9641", "check-config"],
            env.to_vec(),
        ),
        (
            vec!["--admin-listen", "0.0.0.0:9641", "serve"],
            env.to_vec(),
        ),
        (
            vec!["serve"],
            vec![
                ("TURNPIKE_DATA_DIR", data_dir),
                ("TURNPIKE_ADMIN_LISTEN", "127.0.0.1:9641,0.0.0.0:9641"),
            ],
        ),
    ] {
        let out = run(&args, &env);
        let line = out.error_line(2);
        assert!(
            line.contains("admin.listen address 0.0.0.0:9641 is not a loopback address, and admin.token_file is not set; set admin.token_file to a file holding a bearer token (e.g. `openssl rand -hex 32 > /etc/turnpike/admin.token`), or use 127.0.0.1:PORT or [::1]:PORT"),
            "{args:?}: {line}"
        );
    }
    // With a token, by flag or variable.
    for (args, env) in [
        (
            vec![
                "--admin-listen",
                "0.0.0.0:9641",
                "--admin-token-file",
                token_file,
                "check-config",
            ],
            env.to_vec(),
        ),
        (
            vec!["--admin-listen", "0.0.0.0:9641", "check-config"],
            vec![
                ("TURNPIKE_DATA_DIR", data_dir),
                ("TURNPIKE_ADMIN_TOKEN_FILE", token_file),
            ],
        ),
    ] {
        let lines = run(&args, &env).ok_lines().join("\n");
        assert!(
            lines.contains(&format!(
                "; admin on (http://0.0.0.0:9641; token {token_file}); "
            )),
            "{args:?}: {lines}"
        );
    }
    // check-config reads the token file.
    let missing = data.path().join("missing.token");
    let missing = missing.to_str().unwrap();
    let out = run(
        &[
            "--admin-listen",
            "0.0.0.0:9641",
            "--admin-token-file",
            missing,
            "check-config",
        ],
        &env,
    );
    assert_eq!(
        out.error_line(2),
        format!(
            "turnpike: error: invalid configuration: admin.token_file {missing}: cannot read it: no such file or directory; create it, e.g. with `openssl rand -hex 32 > {missing}`"
        )
    );
    // The flag of the removed setting says what replaced it.
    let out = run(
        &[
            "--admin-allow-remote",
            "--admin-listen",
            "0.0.0.0:9641",
            "check-config",
        ],
        &env,
    );
    assert!(
        out.error_line(2)
            .contains("admin.allow_remote was removed: an admin.listen address other than loopback now needs admin.token_file (--admin-token-file PATH)"),
        "{}",
        out.stderr
    );
}

const TOKEN: &str = "c0ffee00c0ffee00c0ffee00c0ffee00";

/// With a token, every route but the probes needs it (401 and a Bearer
/// challenge otherwise), and the command line sends it.
#[test]
fn the_token_guards_every_route_but_the_probes() {
    let server = TestServer::start(ServerOptions {
        admin: true,
        admin_token: Some(TOKEN),
        ..ServerOptions::basic()
    });
    let port = admin_port(&server);
    let bearer = format!("Authorization: Bearer {TOKEN}\r\n");
    for path in [
        "/metrics",
        "/status",
        "/v1/status",
        "/v1/allocations",
        "/nowhere",
    ] {
        for headers in ["", "Authorization: Bearer wrong-token-0000000000\r\n"] {
            let response = http_with(port, "GET", path, headers);
            assert_eq!(
                response.status, 401,
                "GET {path} {headers:?}: {}",
                response.body
            );
            assert!(
                response
                    .header("www-authenticate")
                    .is_some_and(|v| v.starts_with("Bearer")),
                "{:?}",
                response.headers
            );
        }
    }
    for (method, path) in [
        ("DELETE", "/v1/allocations/0000000000000001"),
        ("DELETE", "/v1/users/alice/allocations"),
    ] {
        assert_eq!(http(port, method, path).status, 401, "{method} {path}");
    }
    for path in ["/metrics", "/status", "/v1/status", "/v1/allocations"] {
        let response = http_with(port, "GET", path, &bearer);
        assert_eq!(response.status, 200, "GET {path}: {}", response.body);
    }
    // The probes answer without it.
    let healthz = http(port, "GET", "/healthz");
    assert_eq!((healthz.status, healthz.body.as_str()), (200, "ok\n"));
    let readyz = http(port, "GET", "/readyz");
    assert_eq!((readyz.status, readyz.body.as_str()), (200, "ready\n"));

    // The command line reads the address and token from the same file.
    let status = server.admin(&["status"]);
    assert!(
        status.starts_with(&format!("version:     {VERSION}\nuptime:      ")),
        "{status}"
    );
    assert!(status.contains("\nready:       yes\n"), "{status}");
    let json: serde_json::Value =
        serde_json::from_str(&server.admin(&["status", "--json"])).expect("status --json is JSON");
    assert_eq!(json["version"], VERSION);
    assert_eq!(server.admin(&["allocations"]), "no allocations\n");
    assert_eq!(server.admin(&["allocations", "--json"]), "[]\n");
    assert_eq!(
        server.admin(&["kick", "--username", "alice"]),
        "ended 0 allocations of user \"alice\"; the user cannot make new ones for 60 s (database.cache_ttl)\n"
    );
    // Without the token file, refused: one line, exit 2.
    let out = run(
        &["status", "--admin-listen", &format!("127.0.0.1:{port}")],
        &[],
    );
    assert_eq!(
        out.error_line(2),
        format!(
            "turnpike: error: the admin endpoint at 127.0.0.1:{port} refused the request (401 unauthorized): it needs a token: set admin.token_file (or --admin-token-file) to the server's token file"
        )
    );
}

/// `turnpike status` with nothing to ask: one line each, exit 1 when
/// nothing listens, exit 2 without an address.
#[test]
fn an_unreachable_admin_endpoint_is_one_error_line() {
    let free = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    for command in [
        vec!["status"],
        vec!["allocations"],
        vec!["kick", "--id", "01"],
    ] {
        let mut args = command.clone();
        let listen = free.to_string();
        args.extend(["--admin-listen", &listen]);
        let out = run(&args, &[]);
        assert_eq!(
            out.error_line(1),
            format!(
                "turnpike: error: cannot reach the admin endpoint at {free}: connection refused; is turnpike serve running with admin.listen set?"
            ),
            "{command:?}"
        );
    }
    let out = run(&["status"], &[]);
    assert_eq!(
        out.error_line(2),
        "turnpike: error: admin.listen is not set, so there is no admin endpoint to ask; use the server's configuration (--config), or give its address with --admin-listen ADDR"
    );
}

/// A busy admin port stops the start like any busy listener: one error
/// line saying what to change, exit 1.
#[test]
fn admin_address_in_use_is_one_error_line_and_exit_1() {
    let busy = TcpListener::bind("127.0.0.1:0").expect("occupy a TCP port");
    let busy = busy.local_addr().unwrap().to_string();
    // A free UDP port for STUN (over UDP only).
    let stun = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .unwrap()
        .to_string();
    let data = tempfile::tempdir().expect("data dir");
    let out = run(
        &[
            "serve",
            "--listen",
            &stun,
            "--no-turn",
            "--no-tcp",
            "--admin-listen",
            &busy,
        ],
        &[("TURNPIKE_DATA_DIR", data.path().to_str().unwrap())],
    );
    assert_eq!(out.status, 1, "{}", out.stderr);
    let errors: Vec<&str> = out.stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(
        errors,
        [format!(
            "turnpike: error: cannot listen on admin http {busy}: address already in use; another process is using it: stop it or change admin.listen"
        )]
    );
}
