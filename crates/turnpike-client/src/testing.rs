//! Test fixture: coturn's `turnserver` on loopback, as the reference server
//! the client and the load generator are checked against (Debian package
//! `coturn`, which `scripts/test` installs). Behind the `testing` feature;
//! a missing `turnserver` panics with the fix, so no test is ever skipped.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// The long-term credential the fixture's `turnserver` knows.
pub const COTURN_USER: (&str, &str) = ("bench", "secret");
/// The fixture's realm.
pub const COTURN_REALM: &str = "bench.test";

/// A `turnserver` on 127.0.0.1 (UDP and TCP, no TLS/DTLS), killed (by its
/// own PID) on drop.
#[derive(Debug)]
pub struct Coturn {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Coturn {
    /// Starts one and returns once its listening port is taken. Loopback
    /// peers are allowed; relay ports come from a window of 100 of this
    /// process's own, outside the ephemeral range, so parallel tests and
    /// test binaries do not compete for them.
    pub fn start() -> Coturn {
        // A free port: bind, note, release (racy in theory, fine on loopback).
        let port = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("a free loopback UDP port")
            .port();
        static NEXT: AtomicU16 = AtomicU16::new(0);
        let slot = (std::process::id() as u16)
            .wrapping_mul(7)
            .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))
            % 44;
        let base = 61_000 + slot * 100;
        let (user, password) = COTURN_USER;
        let child = match Command::new("turnserver")
            .args([
                "-n",
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                "--listening-ip=127.0.0.1",
                "--relay-ip=127.0.0.1",
                &format!("--listening-port={port}"),
                &format!("--min-port={base}"),
                &format!("--max-port={}", base + 99),
                "--lt-cred-mech",
                &format!("--user={user}:{password}"),
                &format!("--realm={COTURN_REALM}"),
                "--allow-loopback-peers",
                "--no-stdout-log",
                "--log-file=/dev/null",
                "--simple-log",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                panic!("cannot run turnserver ({e}): run scripts/test, which installs coturn")
            }
        };
        let coturn = Coturn {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        // Ready once the port is taken; coturn says so nowhere else we can
        // read without its log, which the fixture turns off.
        let deadline = Instant::now() + Duration::from_secs(10);
        while UdpSocket::bind(coturn.addr).is_ok() {
            assert!(
                Instant::now() < deadline,
                "turnserver did not bind {}",
                coturn.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        coturn
    }

    /// The server's process ID (to read its CPU time and memory).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
