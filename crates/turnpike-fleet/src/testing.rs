//! Test support for this crate and its users (feature `testing`): a real
//! DNS server, Debian's dnsmasq (package `dnsmasq-base`, which starts no
//! service), on 127.0.0.1 and a free port, serving SRV and address records
//! given on its command line. Test code: it panics when the server cannot
//! be started, which is what a test wants.

use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// dnsmasq on 127.0.0.1, authoritative for the `.test` TLD (RFC 2606: an
/// unknown name there is NXDOMAIN, never a question for an upstream), with
/// the given `--srv-host` / `--host-record` arguments. Killed on drop.
#[derive(Debug)]
pub struct Dnsmasq {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Dnsmasq {
    /// On a free port (another if the one picked is taken meanwhile).
    pub fn start(records: &[String]) -> Dnsmasq {
        for _ in 0..10 {
            let port = StdUdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            if let Some(d) = Dnsmasq::start_on(port, records) {
                return d;
            }
        }
        panic!("dnsmasq did not start on any of 10 ports");
    }

    /// On `port`; `None` if it exited (the port was taken).
    pub fn start_on(port: u16, records: &[String]) -> Option<Dnsmasq> {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(DNSMASQ)
            .arg("-k")
            .arg(format!("--port={port}"))
            .args([
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
            ])
            .args(["-C", "/dev/null", "--local=/test/", "--log-facility=-"])
            // Root would drop to "nobody"; staying root changes nothing here.
            .arg("--user=root")
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .args(records)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{DNSMASQ}: {e} (Debian package dnsmasq-base)"));
        let mut d = Dnsmasq {
            child,
            port,
            _dir: dir,
        };
        // Ready once it answers a query; gone if the port was taken.
        let probe = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        probe
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let query = dns_query("ready.example.test");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if d.child.try_wait().unwrap().is_some() {
                return None;
            }
            let _ = probe.send_to(&query, ("127.0.0.1", port));
            let mut buf = [0u8; 512];
            if let Ok((n, _)) = probe.recv_from(&mut buf)
                && n >= 12
                && buf[..2] == query[..2]
            {
                return Some(d);
            }
        }
        let _ = d.child.kill();
        panic!("dnsmasq on port {port} did not answer within 10 s");
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal DNS query for `name` IN A.
fn dns_query(name: &str) -> Vec<u8> {
    let mut q = vec![0x4a, 0x17, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// `--srv-host=NAME,TARGET,PORT,PRIORITY,WEIGHT`: `name` in full
/// (`_turn._udp.example.test`).
pub fn srv(name: &str, target: &str, port: u16, priority: u16, weight: u16) -> String {
    format!("--srv-host={name},{target},{port},{priority},{weight}")
}

/// `--host-record=NAME,ADDRESS...`.
pub fn host(name: &str, addresses: &str) -> String {
    format!("--host-record={name},{addresses}")
}
