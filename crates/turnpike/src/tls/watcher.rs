//! Certificate renewal while serving: [`watch`] reloads the files when
//! they change (polled by `stat` identity, so certbot's symlink swaps and
//! Kubernetes' secret updates are seen) and when a [`ReloadTrigger`] asks,
//! logs one line per attempt ([`describe_reload`]), and warns daily about a
//! certificate that expires soon ([`expiry_warning`]). In the server,
//! SIGHUP reloads the whole configuration, the certificate included
//! (`runtime/reload.rs`), so the watcher gets [`NoTrigger`]; a reload made
//! elsewhere is not repeated here (the files' stamps are those of the last
//! attempt, whoever made it).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::EXPIRY_WARNING;
use super::certificates::{Certificates, Stamps, describe_expiry};
use super::error::CertError;

/// How often [`watch`] checks the expiry.
const EXPIRY_CHECK_EVERY: Duration = Duration::from_secs(86_400);

/// Something that asks for a reload: a channel in tests, a signal
/// (`tokio::signal::unix::signal(SignalKind::hangup())`), or
/// [`NoTrigger`].
pub trait ReloadTrigger: Send {
    /// Waits for the next request; `None` once no more can come.
    fn requested(&mut self) -> impl Future<Output = Option<()>> + Send;
}

impl ReloadTrigger for tokio::signal::unix::Signal {
    fn requested(&mut self) -> impl Future<Output = Option<()>> + Send {
        self.recv()
    }
}

/// Never asks: the files are only watched (the server's configuration
/// reload reloads the certificate itself).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTrigger;

impl ReloadTrigger for NoTrigger {
    fn requested(&mut self) -> impl Future<Output = Option<()>> + Send {
        std::future::pending()
    }
}

impl ReloadTrigger for tokio::sync::mpsc::Receiver<()> {
    fn requested(&mut self) -> impl Future<Output = Option<()>> + Send {
        self.recv()
    }
}

impl ReloadTrigger for tokio::sync::mpsc::UnboundedReceiver<()> {
    fn requested(&mut self) -> impl Future<Output = Option<()>> + Send {
        self.recv()
    }
}

/// What caused a reload attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadCause {
    /// The files' stamps changed (and then held still for one interval).
    FilesChanged,
    /// A [`ReloadTrigger`] fired, or the configuration was reloaded
    /// (SIGHUP, `POST /v1/reload`).
    Requested,
}

/// How a reload attempt is logged: the level and the line.
pub fn describe_reload(
    certs: &Certificates,
    cause: ReloadCause,
    outcome: &Result<bool, CertError>,
) -> (tracing::Level, String) {
    let expiry = describe_expiry(certs.not_after(), SystemTime::now());
    match outcome {
        Ok(true) => (
            tracing::Level::INFO,
            format!(
                "TLS certificate reloaded: subject {}, {expiry}",
                certs.subject()
            ),
        ),
        Ok(false) => match cause {
            ReloadCause::Requested => (
                tracing::Level::INFO,
                format!(
                    "TLS certificate unchanged: subject {}, {expiry}",
                    certs.subject()
                ),
            ),
            ReloadCause::FilesChanged => (
                tracing::Level::DEBUG,
                format!(
                    "TLS certificate files touched but unchanged: subject {}, {expiry}",
                    certs.subject()
                ),
            ),
        },
        Err(err) => (
            tracing::Level::ERROR,
            format!(
                "TLS certificate not reloaded: {err}; still serving the previous one (subject {}, {expiry})",
                certs.subject()
            ),
        ),
    }
}

/// The warning about an expired or soon expiring certificate, if due.
pub fn expiry_warning(certs: &Certificates, now: SystemTime) -> Option<String> {
    let not_after = certs.not_after();
    let subject = certs.subject();
    match not_after.duration_since(now) {
        Err(_) => Some(format!(
            "TLS certificate {} (subject {subject}): clients refuse it; renew it",
            describe_expiry(not_after, now)
        )),
        Ok(left) if left < EXPIRY_WARNING => Some(format!(
            "TLS certificate {} (subject {subject}); renew it",
            describe_expiry(not_after, now)
        )),
        Ok(_) => None,
    }
}

fn log(level: tracing::Level, line: &str) {
    match level {
        tracing::Level::ERROR => tracing::error!("{line}"),
        tracing::Level::WARN => tracing::warn!("{line}"),
        tracing::Level::INFO => tracing::info!("{line}"),
        tracing::Level::DEBUG => tracing::debug!("{line}"),
        _ => tracing::trace!("{line}"),
    }
}

/// Keeps `certs` up to date until the task is dropped: every `interval`
/// (`None`: never) it compares the files' stamps with those of the last
/// reload, and reloads once a change has held still for one more interval
/// (so a renewal that writes the chain and the key one after the other is
/// read complete); every `trigger` request reloads at once. Each attempt
/// logs one line ([`describe_reload`]), and once a day a warning is logged
/// while the certificate expires within [`EXPIRY_WARNING`] or has expired.
///
/// A failed reload is not retried until the files change again or another
/// request comes.
pub async fn watch<T: ReloadTrigger>(
    certs: Arc<Certificates>,
    interval: Option<Duration>,
    mut trigger: T,
) {
    let mut settling: Option<Stamps> = None;
    let mut poll = interval.map(|every| {
        let mut poll = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll
    });
    let mut trigger_open = true;
    let mut expiry_check = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = tick(poll.as_mut()) => {
                let now = certs.stamps_now();
                // The stamps of the last attempt, this task's or another's.
                if now == certs.last_stamps() {
                    settling = None;
                } else if settling.as_ref() != Some(&now) {
                    settling = Some(now);
                } else {
                    settling = None;
                    let outcome = certs.reload();
                    let (level, line) = describe_reload(&certs, ReloadCause::FilesChanged, &outcome);
                    log(level, &line);
                }
            }
            request = trigger.requested(), if trigger_open => {
                match request {
                    Some(()) => {
                        settling = None;
                        let outcome = certs.reload();
                        let (level, line) = describe_reload(&certs, ReloadCause::Requested, &outcome);
                        log(level, &line);
                    }
                    None => trigger_open = false,
                }
            }
            () = tokio::time::sleep_until(expiry_check) => {
                if let Some(line) = expiry_warning(&certs, SystemTime::now()) {
                    tracing::warn!("{line}");
                }
                expiry_check += EXPIRY_CHECK_EVERY;
            }
        }
    }
}

async fn tick(poll: Option<&mut tokio::time::Interval>) {
    match poll {
        Some(poll) => {
            poll.tick().await;
        }
        None => std::future::pending().await,
    }
}
