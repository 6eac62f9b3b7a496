//! DtlsServer on a real UDP socket against the `openssl s_client` CLI
//! (a third-party DTLS client), with certificates made by `openssl req`.
//!
//! A small harness thread plays the runtime: recv → handle_datagram, drain
//! poll_output (Transmit → send_to, Data → echoed back with `send`), and
//! handle_timeout when poll_timeout is due.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use turnpike_dtls::{DtlsConfig, DtlsServer, Output};

const DEADLINE: Duration = Duration::from_secs(20);

/// What the harness saw.
#[derive(Debug, Default, Clone)]
struct Stats {
    datagrams_in: usize,
    /// HelloVerifyRequests sent while the server held no session at all.
    hello_verify_without_state: usize,
    established: Vec<SocketAddr>,
    closed: Vec<SocketAddr>,
    echoed: usize,
    max_half_open: usize,
    /// Server datagrams deliberately not sent (see `Harness::lose_first_flight`).
    lost: usize,
    errors: Vec<String>,
}

/// The server loop on its own thread; stopped and joined on drop.
struct Harness {
    addr: SocketAddr,
    stats: Arc<Mutex<Stats>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Harness {
    /// With `lose_first_flight`, the server's first flight after the cookie
    /// exchange (ServerHello … ServerHelloDone) is not sent: only the
    /// server's retransmission timer can complete the handshake.
    fn start(config: DtlsConfig, lose_first_flight: bool) -> Harness {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let stats = Arc::new(Mutex::new(Stats::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut server = DtlsServer::new(config).unwrap();
        let (st, sp) = (stats.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !sp.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    st.lock().unwrap().datagrams_in += 1;
                    server.handle_datagram(Instant::now(), from, &buf[..n]);
                }
                if server.poll_timeout().is_some_and(|t| t <= Instant::now()) {
                    server.handle_timeout(Instant::now());
                }
                let mut s = st.lock().unwrap();
                s.max_half_open = s.max_half_open.max(server.half_open());
                // The flight is the non-HelloVerifyRequest datagrams of one batch.
                let losing = lose_first_flight && s.lost == 0;
                while let Some(out) = server.poll_output() {
                    match out {
                        Output::Transmit { to, data } => {
                            let hvr = data.len() > 13 && data[0] == 22 && data[13] == 3;
                            if hvr && server.half_open() + server.sessions() == 0 {
                                s.hello_verify_without_state += 1;
                            }
                            if losing && !hvr {
                                s.lost += 1;
                                continue;
                            }
                            socket.send_to(&data, to).unwrap();
                        }
                        Output::Data { from, data } => {
                            match server.send(Instant::now(), from, &data) {
                                Ok(()) => s.echoed += 1,
                                Err(e) => s.errors.push(e.to_string()),
                            }
                        }
                        Output::Established { peer } => s.established.push(peer),
                        Output::Closed { peer } => s.closed.push(peer),
                    }
                }
            }
        });
        Harness {
            addr,
            stats,
            stop,
            thread: Some(thread),
        }
    }

    fn stats(&self) -> Stats {
        self.stats.lock().unwrap().clone()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A child process killed (by its PID, through `Child::kill`) and reaped on
/// drop, whatever happened in the test.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the openssl CLI to completion (killed after DEADLINE).
fn openssl_cli(dir: &Path, args: &[&str]) {
    let child = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the openssl CLI is installed");
    let mut child = ChildGuard(child);
    let status = wait_for(&format!("openssl {args:?}"), || child.0.try_wait().unwrap());
    assert!(status.success(), "openssl {args:?} failed: {status}");
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    /// PKCS#1 RSA key (`BEGIN RSA PRIVATE KEY`).
    Rsa,
    /// SEC1 P-256 key with an `EC PARAMETERS` block in front, as
    /// `openssl ecparam -genkey` writes it.
    Ecdsa,
}

/// (cert.pem, key.pem) made by the openssl CLI in `dir`.
fn make_cert(dir: &Path, kind: Kind) -> (PathBuf, PathBuf) {
    match kind {
        Kind::Rsa => openssl_cli(dir, &["genrsa", "-traditional", "-out", "key.pem", "2048"]),
        Kind::Ecdsa => openssl_cli(
            dir,
            &[
                "ecparam",
                "-genkey",
                "-name",
                "prime256v1",
                "-out",
                "key.pem",
            ],
        ),
    }
    openssl_cli(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ],
    );
    let key = std::fs::read_to_string(dir.join("key.pem")).unwrap();
    match kind {
        Kind::Rsa => assert!(key.contains("BEGIN RSA PRIVATE KEY"), "{key}"),
        Kind::Ecdsa => assert!(key.contains("BEGIN EC PRIVATE KEY"), "{key}"),
    }
    (dir.join("cert.pem"), dir.join("key.pem"))
}

fn harness_for(cert: &Path, key: &Path) -> Harness {
    harness_with(cert, key, false)
}

fn harness_with(cert: &Path, key: &Path, lose_first_flight: bool) -> Harness {
    let mut secret = [0u8; 32];
    openssl::rand::rand_bytes(&mut secret).unwrap();
    let config = DtlsConfig::new(
        std::fs::read(cert).unwrap(),
        std::fs::read(key).unwrap(),
        secret,
    );
    Harness::start(config, lose_first_flight)
}

/// `openssl s_client` with the given protocol flag(s); stdout lines arrive
/// on the returned channel.
fn s_client(
    server: SocketAddr,
    ca: &Path,
    msgfile: &Path,
    extra: &[&str],
) -> (ChildGuard, ChildStdin, mpsc::Receiver<String>) {
    let mut child = Command::new("openssl")
        .arg("s_client")
        .args(extra)
        .args([
            "-connect",
            &server.to_string(),
            "-servername",
            "localhost",
            "-quiet",
            "-trace",
        ])
        .arg("-msgfile")
        .arg(msgfile)
        .arg("-CAfile")
        .arg(ca)
        .args(["-verify_return_error", "-mtu", "1200"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn openssl s_client");
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (ChildGuard(child), stdin, rx)
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn echo_with_s_client(kind: Kind, lose_first_flight: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_cert(dir.path(), kind);
    let harness = harness_with(&cert, &key, lose_first_flight);
    let msgfile = dir.path().join("msg.txt");
    let (_child, mut stdin, lines) = s_client(harness.addr, &cert, &msgfile, &["-dtls1_2"]);

    wait_for("Established", || {
        (!harness.stats().established.is_empty()).then_some(())
    });
    for text in ["hello over dtls", "second line"] {
        writeln!(stdin, "{text}").unwrap();
        stdin.flush().unwrap();
        let end = Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let line = lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no echo of {text:?}"));
            if line == text {
                break;
            }
        }
    }
    let stats = harness.stats();
    assert_eq!(stats.established.len(), 1, "{stats:?}");
    assert!(stats.echoed >= 2, "{stats:?}");
    assert!(
        stats.hello_verify_without_state >= 1,
        "no stateless HelloVerifyRequest: {stats:?}"
    );
    assert_eq!(stats.max_half_open, 1, "{stats:?}");
    assert!(stats.errors.is_empty(), "{stats:?}");
    assert_eq!(stats.lost > 0, lose_first_flight, "{stats:?}");
    let msgs = std::fs::read_to_string(&msgfile).unwrap();
    // -trace: the client's first ClientHello has no cookie, the server's
    // first answer is a HelloVerifyRequest, the second ClientHello carries
    // the cookie, and DTLS 1.2 was negotiated.
    let received = msgs.split("Received Record").nth(1).unwrap_or_default();
    assert!(
        received.contains("HelloVerifyRequest"),
        "no HelloVerifyRequest first:\n{msgs}"
    );
    let hellos: Vec<&str> = msgs.split("ClientHello, Length").skip(1).collect();
    assert!(hellos.len() >= 2, "{msgs}");
    assert!(hellos[0].contains("cookie (len=0)"), "{msgs}");
    assert!(hellos[1].contains("cookie (len=17)"), "{msgs}");
    assert!(msgs.contains("server_version=0xfefd (DTLS 1.2)"), "{msgs}");
}

#[test]
fn s_client_dtls12_echo_rsa() {
    echo_with_s_client(Kind::Rsa, false);
}

#[test]
fn s_client_dtls12_echo_ecdsa() {
    echo_with_s_client(Kind::Ecdsa, false);
}

/// Real time: the server resends its lost flight after INITIAL_RTO (1 s).
#[test]
fn s_client_dtls12_recovers_from_a_lost_server_flight() {
    echo_with_s_client(Kind::Ecdsa, true);
}

#[test]
fn s_client_dtls10_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_cert(dir.path(), Kind::Ecdsa);
    let harness = harness_for(&cert, &key);
    let msgfile = dir.path().join("msg.txt");
    // Security level 0 so that the client really offers DTLS 1.0 (SHA-1
    // MACs) instead of refusing locally.
    let (mut child, _stdin, lines) = s_client(
        harness.addr,
        &cert,
        &msgfile,
        &["-dtls1", "-cipher", "DEFAULT:@SECLEVEL=0"],
    );
    let status = wait_for("s_client to give up", || child.0.try_wait().unwrap());
    assert!(!status.success(), "s_client -dtls1 succeeded");
    let stats = harness.stats();
    assert!(
        stats.datagrams_in >= 2,
        "the client never reached the server: {stats:?}"
    );
    assert!(stats.hello_verify_without_state >= 1, "{stats:?}");
    assert!(stats.established.is_empty(), "{stats:?}");
    assert!(lines.try_recv().is_err(), "no application data expected");
    let msgs = std::fs::read_to_string(&msgfile).unwrap();
    // The server's answer to the cookie-valid ClientHello: a fatal
    // protocol_version alert (from OpenSSL's version negotiation).
    let last_received = msgs.rsplit("Received Record").next().unwrap();
    assert!(
        last_received.contains("Alert") && last_received.contains("protocol version(70)"),
        "expected a protocol_version alert from the server:\n{msgs}"
    );
    wait_for("the refused session to be forgotten", || {
        let s = harness.stats();
        (s.closed.len() == 1).then_some(())
    });
}

/// `openssl s_client -dtls1_2` with `extra` flags and stdin closed (it ends
/// the session right after the handshake): whether it succeeded, its
/// stdout and stderr, and its `-trace` output.
fn s_client_once(
    server: SocketAddr,
    ca: &Path,
    dir: &Path,
    extra: &[&str],
) -> (bool, String, String) {
    let (out, msgfile) = (dir.join("s_client.out"), dir.join("msg.txt"));
    let child = Command::new("openssl")
        .args(["s_client", "-dtls1_2", "-connect", &server.to_string()])
        .args(["-servername", "localhost", "-trace", "-mtu", "1200"])
        .args(extra)
        .arg("-msgfile")
        .arg(&msgfile)
        .arg("-CAfile")
        .arg(ca)
        .arg("-verify_return_error")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("s_client.err")).unwrap(),
        ))
        .spawn()
        .expect("spawn openssl s_client");
    let mut child = ChildGuard(child);
    let status = wait_for("s_client to finish", || child.0.try_wait().unwrap());
    let text = std::fs::read_to_string(&out).unwrap()
        + &std::fs::read_to_string(dir.join("s_client.err")).unwrap();
    let msgs = std::fs::read_to_string(&msgfile).unwrap_or_default();
    (status.success(), text, msgs)
}

/// ALPN as on the TLS side (RFC 7443): `stun.turn` is negotiated, a client
/// offering only `h2` is refused with no_application_protocol (120), one
/// offering no ALPN is served without it.
#[test]
fn s_client_dtls12_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_cert(dir.path(), Kind::Ecdsa);
    let harness = harness_for(&cert, &key);

    let (ok, text, _) = s_client_once(harness.addr, &cert, dir.path(), &["-alpn", "stun.turn"]);
    assert!(ok, "{text}");
    assert!(text.contains("ALPN protocol: stun.turn"), "{text}");

    let (ok, text, _) = s_client_once(
        harness.addr,
        &cert,
        dir.path(),
        &["-alpn", "h2,stun.nat-discovery"],
    );
    assert!(ok, "{text}");
    assert!(text.contains("ALPN protocol: stun.nat-discovery"), "{text}");

    let (ok, text, msgs) = s_client_once(harness.addr, &cert, dir.path(), &["-alpn", "h2"]);
    assert!(!ok, "s_client -alpn h2 succeeded:\n{text}");
    assert!(!text.contains("ALPN protocol"), "{text}");
    // The server's answer to the ClientHello: a fatal alert 120
    // (no_application_protocol), the one rustls sends on TLS.
    let last_received = msgs.rsplit("Received Record").next().unwrap();
    assert!(
        last_received.contains("Alert") && last_received.contains("(120)"),
        "expected a no_application_protocol alert from the server:\n{msgs}\n{text}"
    );
    assert!(text.contains("SSL alert number 120"), "{text}");

    let (ok, text, _) = s_client_once(harness.addr, &cert, dir.path(), &[]);
    assert!(ok, "{text}");
    assert!(text.contains("No ALPN negotiated"), "{text}");

    let stats = harness.stats();
    assert_eq!(stats.established.len(), 3, "{stats:?}");
}
