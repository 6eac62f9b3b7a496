//! Driving `turnutils_uclient` (coturn's TURN client) against a test server
//! and judging its run: what it was asked to do ([`Run`]) and whether every
//! message came back ([`assert_delivered`]). See `interop_turn.rs` for what
//! the tool does on the wire.

use std::net::IpAddr;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::{Peer, TURN_PASSWORD, TURN_USER, TestServer, ToolOutput, UclientReport, run_tool};

/// Deadline for one uclient run. A good run takes 3-8 s (its sessions start
/// sending 1-6 s after connecting); a run with lost packets takes ~15 s.
pub const UCLIENT_TIMEOUT: Duration = Duration::from_secs(40);

/// What uclient should do in one run.
pub struct Run<'a> {
    server: &'a TestServer,
    /// Server address to contact (`-p` is the server's port).
    server_ip: IpAddr,
    /// Peer address (`-e`, `-r peer.port`); `None` for `-y`.
    peer: Option<(&'a Peer, IpAddr)>,
    user: &'a str,
    password: &'a str,
    /// `-W`: TURN REST API credentials from this shared secret (with the
    /// user as the user id) instead of `-w`.
    secret: Option<&'a str>,
    /// Server port (`-p`); the server's plain port when `None`.
    port: Option<u16>,
    /// Flags and options (`-m`, `-n`, `-l`, `-s`, ...).
    args: &'a [&'a str],
}

impl Run<'_> {
    pub fn new<'a>(server: &'a TestServer, server_ip: IpAddr, args: &'a [&'a str]) -> Run<'a> {
        Run {
            server,
            server_ip,
            peer: None,
            user: TURN_USER,
            password: TURN_PASSWORD,
            secret: None,
            port: None,
            args,
        }
    }

    pub fn peer<'a>(self, peer: &'a Peer, ip: IpAddr) -> Run<'a>
    where
        Self: 'a,
    {
        Run {
            peer: Some((peer, ip)),
            ..self
        }
    }

    pub fn credentials<'a>(self, user: &'a str, password: &'a str) -> Run<'a>
    where
        Self: 'a,
    {
        Run {
            user,
            password,
            ..self
        }
    }

    /// Contacts the server on `port` (its TLS/DTLS port, say).
    pub fn port(self, port: u16) -> Self {
        Run {
            port: Some(port),
            ..self
        }
    }

    /// Credentials minted by uclient from a shared secret (`-W`).
    pub fn rest_secret<'a>(self, secret: &'a str) -> Run<'a>
    where
        Self: 'a,
    {
        Run {
            secret: Some(secret),
            ..self
        }
    }

    pub fn command_args(&self) -> Vec<String> {
        let mut v: Vec<String> = self.args.iter().map(|s| s.to_string()).collect();
        v.extend(["-u".into(), self.user.into()]);
        match self.secret {
            Some(secret) => v.extend(["-W".into(), secret.into()]),
            None => v.extend(["-w".into(), self.password.into()]),
        }
        let port = self.port.unwrap_or(self.server.port);
        v.extend(["-p".into(), port.to_string()]);
        if let Some((peer, ip)) = self.peer {
            v.extend([
                "-e".into(),
                ip.to_string(),
                "-r".into(),
                peer.port.to_string(),
            ]);
        }
        v.push(self.server_ip.to_string());
        v
    }

    pub fn go(&self) -> (ToolOutput, UclientReport) {
        run_and_report(&self.command_args())
    }

    /// The same run in a thread of its own, for a test that acts on the
    /// server while uclient relays (the thread kills uclient at its
    /// deadline).
    pub fn spawn(&self) -> JoinHandle<(ToolOutput, UclientReport)> {
        let args = self.command_args();
        thread::spawn(move || run_and_report(&args))
    }
}

fn run_and_report(args: &[String]) -> (ToolOutput, UclientReport) {
    let out = run_tool("turnutils_uclient", args, UCLIENT_TIMEOUT);
    eprintln!("[uclient] `{}` took {:?}", out.command, out.elapsed);
    let report = UclientReport::parse(&out);
    (out, report)
}

/// uclient's probe Allocate got one 300 and nothing else was refused, its
/// session connected to `alternate`, and all `expected` messages came back.
pub fn assert_redirected_and_delivered(
    out: &ToolOutput,
    rep: &UclientReport,
    alternate: std::net::SocketAddr,
    expected: u64,
) {
    assert_eq!(
        (out.code(), rep.error_responses(), rep.error_lines.len()),
        (Some(0), vec![("allocate/refresh", 300, "Try Alternate")], 0),
        "uclient: one redirect, nothing else refused\n{}",
        out.describe()
    );
    assert!(
        out.stdout.contains(&format!("Connected to: {alternate}")),
        "uclient's session connected to the alternate {alternate}\n{}",
        out.describe()
    );
    assert_eq!(
        (rep.send_msgs, rep.recv_msgs, rep.lost),
        (Some(expected), Some(expected), Some(0)),
        "{}\n{}",
        rep.summary(),
        out.describe()
    );
}

pub fn assert_finished(what: &str, out: &ToolOutput) {
    assert!(
        !out.timed_out,
        "{what}: turnutils_uclient did not finish within {UCLIENT_TIMEOUT:?} \
         (the server never answered one of its TURN requests?)\n{}",
        out.describe()
    );
}

/// The run succeeded and every one of `expected` messages of `len` bytes
/// came back through the relay, exactly once.
pub fn assert_delivered(
    what: &str,
    out: &ToolOutput,
    rep: &UclientReport,
    expected: u64,
    len: u64,
) {
    assert_finished(what, out);
    let errors = rep.error_responses();
    let mut hints = Vec::new();
    if errors
        .iter()
        .any(|&(c, code, _)| c == "channel bind" && code == 400)
    {
        hints.push(
            "uclient picks channel numbers in 0x4000-0x7FFF (RFC 5766's range), which coturn \
             accepts",
        );
    }
    if errors
        .iter()
        .any(|&(c, code, _)| c == "allocate/refresh" && code == 443)
    {
        hints.push(
            "443 to a Refresh: with -Z uclient's Refreshes randomly carry \
             REQUESTED-ADDRESS-FAMILY IPv4 or IPv6, which a dual allocation must accept",
        );
    }
    if rep
        .error_lines
        .iter()
        .any(|l| l.contains("relay addr cannot be received"))
    {
        hints.push(
            "an Allocate success had no XOR-RELAYED-ADDRESS of the family uclient needs (the \
             peer's; after -Z it needs both an IPv4 and an IPv6 one)",
        );
    }
    assert!(
        out.code() == Some(0) && errors.is_empty() && rep.error_lines.is_empty(),
        "{what}: turnutils_uclient failed (exit status {:?}); error responses it got: \
         {errors:?}; its complaints: {:?}; hints: {hints:?}. A TURN request \
         (Allocate/Refresh/CreatePermission/ChannelBind) was rejected, never answered or \
         answered wrongly\n{}",
        out.code(),
        rep.error_lines,
        out.describe()
    );
    assert_eq!(
        (rep.send_msgs, rep.recv_msgs),
        (Some(expected), Some(expected)),
        "{what}: {}; expected {expected} messages sent and all {expected} echoed back \
         by the peer through the relay (no loss, no duplicates)\n{}",
        rep.summary(),
        out.describe()
    );
    assert_eq!(
        (rep.send_bytes, rep.recv_bytes),
        (Some(expected * len), Some(expected * len)),
        "{what}: {}; expected {} bytes each way ({expected} x {len}-byte payloads: \
         relayed data must be delivered unchanged in size)\n{}",
        rep.summary(),
        expected * len,
        out.describe()
    );
    assert_eq!(
        (rep.lost, rep.send_dropped),
        (Some(0), Some(0)),
        "{what}: {}\n{}",
        rep.summary(),
        out.describe()
    );
}

/// uclient gave up on its Allocate after repeated 401 challenges, as it does
/// for bad credentials: exit status 255, "Cannot complete Allocation", no
/// data, and no error response other than the challenges.
pub fn assert_rejected(what: &str, out: &ToolOutput, rep: &UclientReport) {
    assert_finished(what, out);
    assert!(
        rep.send_msgs.is_none(),
        "{what}: the server accepted bad credentials: {}\n{}",
        rep.summary(),
        out.describe()
    );
    assert_eq!(
        out.code(),
        Some(255),
        "{what}: uclient must give up with exit status 255\n{}",
        out.describe()
    );
    assert!(
        rep.error_lines
            .iter()
            .any(|l| l.contains("Cannot complete Allocation")),
        "{what}: expected uclient to give up with \"Cannot complete Allocation\" after \
         repeated 401 challenges (401 Unauthorized with REALM and NONCE, as RFC 8489 \
         requires for bad credentials)\n{}",
        out.describe()
    );
    assert!(
        rep.error_responses().is_empty(),
        "{what}: the server sent an error other than a 401 challenge with REALM and \
         NONCE: {:?}\n{}",
        rep.error_responses(),
        out.describe()
    );
}
