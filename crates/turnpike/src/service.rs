//! What the service manager is told: systemd's readiness protocol
//! (`sd_notify(3)`), written straight to the `NOTIFY_SOCKET` datagram
//! socket, without libsystemd.
//!
//! Every function here does nothing when `NOTIFY_SOCKET` is unset (the
//! server was not started by systemd with `Type=notify`), and a failed
//! send is logged once and otherwise ignored: the service manager's
//! bookkeeping never stops the relay.
//!
//! - [`ready`]: `READY=1`, once every listener is bound (and after a
//!   reload);
//! - [`reloading`]: `RELOADING=1` with `MONOTONIC_USEC`, when a reload
//!   starts (the reload code calls it, then [`ready`]);
//! - [`stopping`]: `STOPPING=1`, when shutdown begins;
//! - [`supervise`]: `STATUS=` with the live allocation count every
//!   [`STATUS_INTERVAL`], and `WATCHDOG=1` at half of `WATCHDOG_USEC` as
//!   long as every worker answers.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::observe::{Relay, Snapshot};

/// How often `STATUS=` is refreshed (what `systemctl status` shows).
pub const STATUS_INTERVAL: Duration = Duration::from_secs(10);

/// Where notifications go: the socket systemd named, and our own unbound
/// socket to send from.
struct Notifier {
    socket: UnixDatagram,
    address: SocketAddr,
    /// Whether a failed send was already logged.
    failed: AtomicBool,
}

/// Read from the environment on first use; `None` outside systemd.
static NOTIFIER: OnceLock<Option<Notifier>> = OnceLock::new();

/// Set by [`stopping`]: the workers are about to go, so their silence is
/// no fault any more.
static STOPPING: AtomicBool = AtomicBool::new(false);

fn notifier() -> Option<&'static Notifier> {
    NOTIFIER
        .get_or_init(|| {
            let value = std::env::var_os("NOTIFY_SOCKET")?;
            match Notifier::open(&value.to_string_lossy()) {
                Ok(notifier) => Some(notifier),
                Err(err) => {
                    tracing::warn!(
                        socket = %value.to_string_lossy(),
                        "cannot use NOTIFY_SOCKET, the service manager will not hear from us: {err}"
                    );
                    None
                }
            }
        })
        .as_ref()
}

impl Notifier {
    /// `value` is a path (`/run/systemd/notify`) or an abstract socket
    /// name (`@name`); systemd's `vsock:` form is refused.
    fn open(value: &str) -> io::Result<Notifier> {
        let address = parse_address(value)?;
        Ok(Notifier {
            socket: UnixDatagram::unbound()?,
            address,
            failed: Default::default(),
        })
    }

    fn send(&self, message: &str) {
        if let Err(err) = self.socket.send_to_addr(message.as_bytes(), &self.address)
            && !self.failed.swap(true, Ordering::Relaxed)
        {
            tracing::warn!("cannot notify the service manager (NOTIFY_SOCKET): {err}");
        }
    }
}

/// The address `NOTIFY_SOCKET` names.
fn parse_address(value: &str) -> io::Result<SocketAddr> {
    if let Some(name) = value.strip_prefix('@') {
        SocketAddr::from_abstract_name(name.as_bytes())
    } else if value.starts_with('/') {
        SocketAddr::from_pathname(value)
    } else {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "only a socket path or an abstract name (@name) is supported",
        ))
    }
}

/// Sends `message` (newline-separated `KEY=VALUE` lines) to the service
/// manager, if there is one.
pub fn notify(message: &str) {
    if let Some(notifier) = notifier() {
        tracing::debug!(message, "service manager notified");
        notifier.send(message);
    }
}

/// Whether a service manager listens (`NOTIFY_SOCKET` is set and usable).
pub fn enabled() -> bool {
    notifier().is_some()
}

/// `READY=1`: start-up (or a reload) is complete.
pub fn ready() {
    notify("READY=1");
}

/// `RELOADING=1` with the `CLOCK_MONOTONIC` time, as
/// `Type=notify-reload` (systemd 253 and newer) expects; send [`ready`]
/// when the reload is over.
pub fn reloading() {
    notify(&reloading_message(monotonic_usec()));
}

/// A reload as systemd sees it: [`reloading`] when it begins, [`ready`]
/// when the guard drops, whatever the outcome.
#[derive(Debug)]
pub struct Reloading(());

impl Reloading {
    /// Sends `RELOADING=1`.
    pub fn begin() -> Self {
        reloading();
        Reloading(())
    }
}

impl Drop for Reloading {
    fn drop(&mut self) {
        ready();
    }
}

/// `STOPPING=1`: shutdown has begun (sent once, however often called:
/// SIGTERM's drain starts it, the runtime's exit path makes sure of it).
/// The watchdog's pings end (systemd does not watch a stopping service);
/// status lines go on while workers answer (a drain's "draining: N
/// allocations left").
pub fn stopping() {
    if !STOPPING.swap(true, Ordering::Relaxed) {
        notify("STOPPING=1");
    }
}

/// `STATUS=TEXT`, one line shown by `systemctl status`.
pub fn status(text: &str) {
    notify(&format!("STATUS={}", text.replace('\n', " ")));
}

fn reloading_message(monotonic_usec: u64) -> String {
    format!("RELOADING=1\nMONOTONIC_USEC={monotonic_usec}")
}

/// `CLOCK_MONOTONIC` in microseconds, the clock systemd compares
/// `MONOTONIC_USEC` with (not what `Instant` exposes).
fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec for the duration of the
    // call; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    if rc != 0 {
        return 0;
    }
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000
        + u64::try_from(now.tv_nsec).unwrap_or(0) / 1_000
}

/// The watchdog interval systemd asks for (`WatchdogSec=`, passed as
/// `WATCHDOG_USEC`), if it is meant for this process (`WATCHDOG_PID`
/// unset or ours).
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok()?;
    let pid = std::env::var("WATCHDOG_PID").ok();
    parse_watchdog(&usec, pid.as_deref(), std::process::id())
}

fn parse_watchdog(usec: &str, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(own_pid)
    {
        return None;
    }
    let usec: u64 = usec.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// The `STATUS=` line for a snapshot.
pub fn status_text(snapshot: &Snapshot) -> String {
    let allocations = snapshot.workers.allocations.total;
    let noun = if allocations == 1 {
        "allocation"
    } else {
        "allocations"
    };
    let mut text = if snapshot.draining {
        format!("draining: {allocations} {noun} left")
    } else {
        format!("serving: {allocations} {noun}")
    };
    text.push_str(&format!(", {} workers", snapshot.worker_count));
    if snapshot.workers_silent > 0 {
        text.push_str(&format!(
            " ({} not answering, not counted)",
            snapshot.workers_silent
        ));
    }
    text
}

/// Keeps the service manager informed while the server runs: `STATUS=`
/// now and every [`STATUS_INTERVAL`], and the watchdog's `WATCHDOG=1` when
/// `WATCHDOG_USEC` asks for it. Runs on the control runtime; returns at
/// once outside systemd.
pub async fn supervise(relay: Arc<dyn Relay>) {
    if !enabled() {
        return;
    }
    let watchdog = watchdog_interval();
    if let Some(interval) = watchdog {
        tracing::info!(
            interval_ms = interval.as_millis() as u64,
            "systemd watchdog on: pinging at half the interval while every worker answers"
        );
        tokio::spawn(watchdog_pings(
            Arc::clone(&relay),
            interval / 2,
            || notify("WATCHDOG=1"),
            &STOPPING,
        ));
    }
    let mut ticks = tokio::time::interval(STATUS_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let snapshot = relay.snapshot().await;
        if STOPPING.load(Ordering::Relaxed) && snapshot.workers_silent > 0 {
            // Workers that have stopped count nothing worth showing.
            return;
        }
        status(&status_text(&snapshot));
    }
}

/// `ping` (`WATCHDOG=1`) every `period`, only after every worker
/// answered: a stuck worker stops the pings and systemd restarts the
/// service. Ends once `stopping` is set.
async fn watchdog_pings(
    relay: Arc<dyn Relay>,
    period: Duration,
    ping: impl Fn(),
    stopping: &'static AtomicBool,
) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_alive = true;
    loop {
        ticks.tick().await;
        let health = relay.health().await;
        if stopping.load(Ordering::Relaxed) {
            return;
        }
        if health.alive() {
            ping();
        } else if was_alive {
            tracing::error!(
                silent = health.workers_silent,
                workers = health.workers,
                "a worker does not answer: watchdog pings stop, systemd will restart the service"
            );
        }
        was_alive = health.alive();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reload_pair_format() {
        assert_eq!(
            reloading_message(1_234_567),
            "RELOADING=1\nMONOTONIC_USEC=1234567"
        );
        // The real clock: CLOCK_MONOTONIC, not the wall clock, and moving.
        let message = reloading_message(monotonic_usec());
        let mut lines = message.lines();
        assert_eq!(lines.next(), Some("RELOADING=1"));
        let usec: u64 = lines
            .next()
            .and_then(|l| l.strip_prefix("MONOTONIC_USEC="))
            .and_then(|v| v.parse().ok())
            .expect("MONOTONIC_USEC=<integer>");
        assert!(lines.next().is_none());
        let uptime: f64 = std::fs::read_to_string("/proc/uptime")
            .expect("/proc/uptime")
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .expect("uptime seconds");
        // CLOCK_MONOTONIC starts near boot and never exceeds BOOTTIME
        // (/proc/uptime); the wall clock would be decades ahead.
        assert!(usec > 0 && (usec as f64) <= (uptime + 1.0) * 1e6, "{usec}");
        assert!(monotonic_usec() >= usec);
    }

    #[test]
    fn reload_pair_reaches_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::open(path.to_str().unwrap()).unwrap();
        notifier.send(&reloading_message(42));
        notifier.send("READY=1");
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"RELOADING=1\nMONOTONIC_USEC=42");
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn abstract_socket_names() {
        let name = format!("turnpike-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        let notifier = Notifier::open(&format!("@{name}")).unwrap();
        notifier.send("STOPPING=1");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn unsupported_addresses_are_refused() {
        assert!(parse_address("vsock:2:1234").is_err());
        assert!(parse_address("relative/path").is_err());
        assert!(parse_address("/run/systemd/notify").is_ok());
    }

    #[test]
    fn watchdog_settings() {
        assert_eq!(
            parse_watchdog("30000000", None, 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_watchdog("500000", Some("7"), 7),
            Some(Duration::from_millis(500))
        );
        // Meant for another process (a parent's setting inherited).
        assert_eq!(parse_watchdog("500000", Some("8"), 7), None);
        assert_eq!(parse_watchdog("0", None, 7), None);
        assert_eq!(parse_watchdog("soon", None, 7), None);
    }

    #[tokio::test]
    async fn a_silent_worker_stops_the_watchdog() {
        use crate::admin_http::testing::FakeRelay;
        use std::sync::atomic::AtomicUsize;

        static STOPPED: AtomicBool = AtomicBool::new(false);
        let relay = Arc::new(FakeRelay::with(Vec::new()));
        let pings = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&pings);
        let period = Duration::from_millis(20);
        let task = tokio::spawn(watchdog_pings(
            relay.clone(),
            period,
            move || {
                counted.fetch_add(1, Ordering::Relaxed);
            },
            &STOPPED,
        ));
        tokio::time::sleep(period * 10).await;
        assert!(pings.load(Ordering::Relaxed) >= 5, "pings while healthy");

        let mut health = relay.health().await;
        health.workers_silent = 1;
        relay.set_health(health.clone());
        // A tick already past its health check may still ping once.
        tokio::time::sleep(period * 2).await;
        let stuck = pings.load(Ordering::Relaxed);
        tokio::time::sleep(period * 10).await;
        assert_eq!(pings.load(Ordering::Relaxed), stuck, "no ping while stuck");

        health.workers_silent = 0;
        relay.set_health(health);
        tokio::time::sleep(period * 5).await;
        assert!(pings.load(Ordering::Relaxed) > stuck, "pings resume");

        // Shutdown: the pings end, and so does the task.
        STOPPED.store(true, Ordering::Relaxed);
        tokio::time::timeout(period * 5, task)
            .await
            .expect("the watchdog task ends once stopping")
            .expect("no panic");
    }

    #[test]
    fn status_lines() {
        let mut snapshot = Snapshot {
            worker_count: 2,
            ..Snapshot::default()
        };
        assert_eq!(status_text(&snapshot), "serving: 0 allocations, 2 workers");
        snapshot.workers.allocations.total = 1;
        assert_eq!(status_text(&snapshot), "serving: 1 allocation, 2 workers");
        snapshot.workers.allocations.total = 12;
        snapshot.draining = true;
        snapshot.workers_silent = 1;
        assert_eq!(
            status_text(&snapshot),
            "draining: 12 allocations left, 2 workers (1 not answering, not counted)"
        );
    }
}
