//! TURN over TLS and DTLS against coturn's `turnutils_uclient` (`-S -t` and
//! `-S`) and `turnutils_peer`, certificate renewal under live sessions, and
//! the limits on idle connections. Loopback only.
//!
//! What `turnutils_uclient` 4.6 does with TLS: for each connection it picks
//! at random one of several OpenSSL contexts — version-flexible, TLS 1.0,
//! TLS 1.1, TLS 1.2 — and, when the handshake fails, tries again with
//! another (up to 32 times). Turnpike refuses TLS 1.0 and 1.1, so its runs
//! print a few "handshake failure" / "protocol version" lines and then
//! succeed; the verdict is, as always, the message totals.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::dtls::{DtlsClient, Received};
use support::pki::{KeyType, Pki, Renewable, served_subject};
use support::uclient::{Run, assert_delivered};
use support::{PRIMARY_V4, PRIMARY_V6, Peer, ServerOptions, TestServer, TlsFiles, eventually};

fn v4() -> IpAddr {
    PRIMARY_V4.into()
}

fn v6() -> IpAddr {
    PRIMARY_V6.into()
}

/// A TURN server with TLS and DTLS on `server.tls_port`, its certificate
/// issued for "turn1" by `pki`.
fn secure_server(pki: &Pki, limits: Vec<(&'static str, u32)>) -> TestServer {
    let leaf = pki.leaf("turn1", KeyType::EcP256Sec1, 2);
    TestServer::start(ServerOptions {
        tls: Some(TlsFiles {
            certificate: leaf.chain,
            private_key: Some(leaf.key),
        }),
        limits,
        ..ServerOptions::turn()
    })
}

fn tls_port(server: &TestServer) -> u16 {
    server.tls_port.expect("TLS configured")
}

#[test]
fn tls_channels_and_send_indications_no_loss() {
    let pki = Pki::new();
    let server = secure_server(&pki, Vec::new());
    let peer = Peer::start(&[v4()]);
    let port = tls_port(&server);
    let channels = ["-S", "-t", "-m", "2", "-n", "30", "-l", "1000"];
    let (out, rep) = Run::new(&server, v4(), &channels)
        .port(port)
        .peer(&peer, v4())
        .go();
    assert_delivered("TLS, channels", &out, &rep, 60, 1000);
    let send = ["-S", "-t", "-s", "-m", "2", "-n", "30", "-l", "1000"];
    let (out, rep) = Run::new(&server, v4(), &send)
        .port(port)
        .peer(&peer, v4())
        .go();
    assert_delivered("TLS, Send indications", &out, &rep, 60, 1000);
}

#[test]
fn tls_over_ipv6_with_rest_credentials_no_loss() {
    let pki = Pki::new();
    let leaf = pki.leaf("turn1", KeyType::RsaPkcs8, 2);
    let mut options = ServerOptions::turn();
    options.tls = Some(TlsFiles {
        // restund's layout: the chain followed by the key in one file.
        certificate: leaf.combined,
        private_key: None,
    });
    if let Some(turn) = options.turn.as_mut() {
        turn.secrets = vec!["tls-secret".into()];
    }
    let server = TestServer::start(options);
    let peer = Peer::start(&[v6()]);
    let args = ["-S", "-t", "-c", "-m", "2", "-n", "30", "-l", "333"];
    let (out, rep) = Run::new(&server, v6(), &args)
        .port(tls_port(&server))
        .rest_secret("tls-secret")
        .peer(&peer, v6())
        .go();
    assert_delivered("TLS over IPv6, REST credentials, RSA", &out, &rep, 60, 333);
}

#[test]
fn dtls_channels_and_send_indications_no_loss() {
    let pki = Pki::new();
    let server = secure_server(&pki, Vec::new());
    let peer = Peer::start(&[v4(), v6()]);
    let port = tls_port(&server);
    let channels = ["-S", "-m", "2", "-n", "30", "-l", "1000"];
    let (out, rep) = Run::new(&server, v4(), &channels)
        .port(port)
        .peer(&peer, v4())
        .go();
    assert_delivered("DTLS, channels", &out, &rep, 60, 1000);
    let send = ["-S", "-s", "-m", "2", "-n", "30", "-l", "1000"];
    let (out, rep) = Run::new(&server, v4(), &send)
        .port(port)
        .peer(&peer, v4())
        .go();
    assert_delivered("DTLS, Send indications", &out, &rep, 60, 1000);
    let v6_args = ["-S", "-c", "-m", "2", "-n", "30", "-l", "200"];
    let (out, rep) = Run::new(&server, v6(), &v6_args)
        .port(port)
        .peer(&peer, v6())
        .go();
    assert_delivered("DTLS over IPv6", &out, &rep, 60, 200);
}

/// RFC 8656 §3.1: the control connection bounds the allocation. After each
/// uclient run (`-c`: no EVEN-PORT reservations, which outlive connections
/// by design) the allocations and their relay sockets are gone well before
/// the end of their lifetime: at once for TCP and TLS (uclient's exit closes
/// the connections); for DTLS, uclient sends close_notify on its data
/// sessions but never on its first "probe" session, which ends at the DTLS
/// idle timeout (12 s here: longer than uclient's 1–6 s pauses between
/// connecting and sending, so its live sessions are not cut).
#[test]
fn allocations_end_with_their_connections_and_sessions() {
    let pki = Pki::new();
    let server = secure_server(&pki, vec![("idle_timeout", 12)]);
    let peer = Peer::start(&[v4()]);
    let tls = tls_port(&server);
    for (what, args, port, within) in [
        (
            "TCP",
            ["-t", "-c", "-m", "2", "-n", "5"].as_slice(),
            server.port,
            5,
        ),
        (
            "TLS",
            ["-S", "-t", "-c", "-m", "2", "-n", "5"].as_slice(),
            tls,
            5,
        ),
        (
            "DTLS",
            ["-S", "-c", "-m", "2", "-n", "5"].as_slice(),
            tls,
            20,
        ),
    ] {
        let (out, rep) = Run::new(&server, v4(), args)
            .port(port)
            .peer(&peer, v4())
            .go();
        assert_delivered(what, &out, &rep, 10, 100);
        let what = format!("{what} allocations end with their connections");
        eventually(&what, Duration::from_secs(within), || {
            server.relay_sockets() == 0
        });
    }
}

/// Renewal without dropping calls: a TLS session and a DTLS session relay
/// while the certificate files are replaced; both lose nothing, and a new
/// connection is served the new certificate. A broken replacement is refused
/// and the previous certificate stays in service.
#[test]
fn certificate_renewal_keeps_tls_and_dtls_sessions() {
    let pki = Pki::new();
    let first = pki.leaf("turn1", KeyType::EcP256Sec1, 2);
    let files = Renewable::new(&first);
    let server = TestServer::start(ServerOptions {
        tls: Some(files.files()),
        ..ServerOptions::turn()
    });
    let port = tls_port(&server);
    let peer = Peer::start(&[v4()]);
    assert!(served_subject(port).contains("turn1"));

    // 250 messages 20 ms apart: about 5 s of traffic per session.
    let tls_args = ["-S", "-t", "-c", "-m", "1", "-n", "250", "-l", "200"];
    let dtls_args = ["-S", "-c", "-m", "1", "-n", "250", "-l", "200"];
    let renewed = pki.leaf("turn2", KeyType::EcP256Sec1, 2);
    std::thread::scope(|scope| {
        let tls = scope.spawn(|| {
            Run::new(&server, v4(), &tls_args)
                .port(port)
                .peer(&peer, v4())
                .go()
        });
        let dtls = scope.spawn(|| {
            Run::new(&server, v4(), &dtls_args)
                .port(port)
                .peer(&peer, v4())
                .go()
        });
        // Renew once both sessions are relaying (each holds a relay socket).
        eventually("both sessions allocate", Duration::from_secs(20), || {
            server.relay_sockets() >= 2 || tls.is_finished() || dtls.is_finished()
        });
        files.renew(&renewed);
        eventually(
            "the server reloads the certificate",
            Duration::from_secs(20),
            || server.output().contains("subject CN=turn2"),
        );
        assert!(
            served_subject(port).contains("turn2"),
            "a new connection gets the new certificate"
        );
        let (out, rep) = tls.join().expect("TLS session");
        assert_delivered("TLS session across the renewal", &out, &rep, 250, 200);
        let (out, rep) = dtls.join().expect("DTLS session");
        assert_delivered("DTLS session across the renewal", &out, &rep, 250, 200);
    });

    files.break_certificate();
    eventually(
        "the broken certificate is refused",
        Duration::from_secs(20),
        || server.output().contains("not reloaded"),
    );
    assert!(
        served_subject(port).contains("turn2"),
        "the previous certificate stays in service"
    );
    let args = ["-S", "-t", "-c", "-m", "1", "-n", "10", "-l", "200"];
    let (out, rep) = Run::new(&server, v4(), &args)
        .port(port)
        .peer(&peer, v4())
        .go();
    assert_delivered("TLS after a broken renewal", &out, &rep, 10, 200);
}

/// Slowloris: connections that never authenticate are closed after
/// `limits.auth_timeout` (TLS ones that never finish a handshake after
/// `limits.handshake_timeout`), and the server keeps serving real clients
/// meanwhile; connections beyond `max_connections_per_ip` are refused.
#[test]
fn idle_connections_are_closed_and_clients_still_served() {
    let pki = Pki::new();
    let server = secure_server(
        &pki,
        vec![
            ("auth_timeout", 2),
            ("handshake_timeout", 2),
            ("max_connections_per_ip", 40),
        ],
    );
    let plain: SocketAddr = (PRIMARY_V4, server.port).into();
    let tls: SocketAddr = (PRIMARY_V4, tls_port(&server)).into();
    let mut idle: Vec<TcpStream> = (0..20)
        .flat_map(|_| [plain, tls])
        .map(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect"))
        .collect();
    let opened = Instant::now();

    // Over the per-IP limit: accepted by the kernel, closed at once.
    let mut extra = TcpStream::connect_timeout(&plain, Duration::from_secs(2)).expect("connect");
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    assert_eq!(
        extra.read(&mut byte).map_err(|e| e.kind()),
        Ok(0),
        "the 41st connection is closed"
    );
    drop(extra);

    let peer = Peer::start(&[v4()]);
    // A real client is served while the idle connections are held — over
    // UDP, since the TCP slots of this IP are all taken by the idlers.
    let args = ["-c", "-m", "1", "-n", "10", "-l", "200"];
    let (out, rep) = Run::new(&server, v4(), &args).peer(&peer, v4()).go();
    assert_delivered("UDP client during the slowloris", &out, &rep, 10, 200);

    for (i, conn) in idle.iter_mut().enumerate() {
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        // One byte: a trickle, not a message (on TLS, not a ClientHello; the
        // server may answer it with an alert before closing).
        let _ = conn.write_all(&[0]);
        let mut rest = Vec::new();
        let closed = match conn.read_to_end(&mut rest) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        };
        assert!(
            closed,
            "idle connection {i} still open after {:?}",
            opened.elapsed()
        );
    }
    assert!(
        opened.elapsed() >= Duration::from_secs(2),
        "closed before the auth timeout"
    );
    drop(idle);

    // The slots are free again: TCP clients are served.
    let args = ["-t", "-c", "-m", "1", "-n", "10", "-l", "200"];
    let (out, rep) = Run::new(&server, v4(), &args).peer(&peer, v4()).go();
    assert_delivered(
        "TCP client after the idle connections went",
        &out,
        &rep,
        10,
        200,
    );
}

/// A DTLS session that makes no allocation is closed `auth_timeout` after
/// its handshake, however many Binding requests it sends (they are
/// answered meanwhile). Before, only the 600 s idle timeout ended it, and
/// each Binding kept it alive.
#[test]
fn dtls_sessions_without_an_allocation_end_at_the_auth_timeout() {
    let pki = Pki::new();
    let server = secure_server(&pki, vec![("auth_timeout", 2)]);
    let addr = SocketAddr::new(v4(), tls_port(&server));
    let opened = Instant::now();
    let mut client = DtlsClient::connect(addr, Duration::from_millis(500));
    let mut answered = 0;
    loop {
        assert!(
            opened.elapsed() < Duration::from_secs(15),
            "the session is still open after {:?} ({answered} Bindings answered)",
            opened.elapsed()
        );
        client.send(&support::binding_request().0);
        match client.receive() {
            Received::Data(_) => answered += 1,
            Received::Closed => break,
            Received::Nothing => {}
        }
    }
    assert!(
        answered >= 1,
        "Binding requests were answered while it lasted"
    );
    assert!(
        opened.elapsed() >= Duration::from_secs(2),
        "closed before the auth timeout"
    );
}

/// DTLS sessions count against `max_connections_per_ip` like TCP and TLS
/// connections, all workers together: with a limit of 2, two of six
/// sessions from one address are served and the others are closed once
/// established. Before, each of the two workers allowed 2.
#[test]
fn dtls_sessions_count_against_the_per_source_limit_server_wide() {
    let pki = Pki::new();
    let server = secure_server(&pki, vec![("max_connections_per_ip", 2)]);
    let addr = SocketAddr::new(v4(), tls_port(&server));
    let mut sessions: Vec<DtlsClient> = (0..6)
        .map(|_| DtlsClient::connect(addr, Duration::from_secs(2)))
        .collect();
    let mut served = 0;
    for session in &mut sessions {
        session.send(&support::binding_request().0);
        match session.receive() {
            Received::Data(_) => served += 1,
            Received::Closed => {}
            Received::Nothing => panic!("neither an answer nor close_notify within 2 s"),
        }
    }
    assert_eq!(
        served, 2,
        "two sessions for the source, all workers together"
    );
}

/// A source may start only `handshakes_per_second_per_ip` TLS handshakes a
/// second: of ten connections opened at once, at most two per second get
/// a handshake (four if they straddle a second), the rest are closed.
#[test]
fn tls_handshakes_per_source_and_second_are_capped() {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, ServerName};
    use std::sync::Arc;

    let pki = Pki::new();
    let server = secure_server(&pki, vec![("handshakes_per_second_per_ip", 2)]);
    let addr = SocketAddr::new(v4(), tls_port(&server));
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.root()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let started = Instant::now();
    let handshaken = (0..10)
        .filter(|_| {
            let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let name = ServerName::try_from("turn1").unwrap();
            let mut tls = rustls::ClientConnection::new(Arc::clone(&config), name).unwrap();
            while tls.is_handshaking() {
                if tls.complete_io(&mut tcp).is_err() {
                    return false;
                }
            }
            true
        })
        .count();
    let seconds = started.elapsed().as_secs() + 1;
    assert!(
        handshaken >= 1 && handshaken as u64 <= 2 * seconds && handshaken < 10,
        "{handshaken} of 10 handshakes in {:?}",
        started.elapsed()
    );
}
