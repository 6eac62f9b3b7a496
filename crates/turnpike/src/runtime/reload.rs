//! Live reconfiguration: SIGHUP, `POST /v1/reload` and `turnpike reload`
//! all end in [`Reloader::reload`], one at a time.
//!
//! A reload reads the configuration again ([`SettingsSource::load`]: the
//! file, with the start's environment and flags laid over it), keeps the
//! running value of every setting declared `reload restart` (one warning
//! line each: [`Settings::keep_restart_only`]), and applies the rest:
//!
//! - the core: [`turnpike_core::Config::reconfigured`] from the running
//!   configuration, handed to every worker through its query mailbox
//!   ([`Query::Reconfigure`]), which swaps it between two batches with
//!   [`turnpike_core::Server::reconfigure`] (no lock on the packet path);
//!   with it the static users that changed and the limits of new
//!   connections;
//! - the credential sources: the file's users, secrets and cache options
//!   ([`CredentialSource::reconfigure`]), and the new set of secrets
//!   published to the shards at once;
//! - the server-wide connection limit ([`ConnectionCounts`]);
//! - the drain alternates (`drain.alternate_servers`): for the next drain,
//!   and at once for a drain under way;
//! - the log filter and format ([`crate::logging::reconfigure`]);
//! - the ICE-server endpoint and its relays (`[ice]`, `[discovery]`:
//!   [`crate::ice::IceService::reconfigure`]);
//! - the TLS certificate, re-read as SIGHUP always did (also when the file
//!   is refused: a renewal does not wait for a configuration edit).
//!
//! A file that does not load is refused with one line; nothing changes.
//! Allocations, connections and sessions are not touched (apart from
//! permissions and channels to peers the new policy refuses, which the
//! shards withdraw).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::{mpsc, watch};
use turnpike_core::Secrets;

use super::queries::{Query, WorkerChange, ask_all};
use super::stream::conn::ConnectionCounts;
use crate::config::{Settings, SettingsSource, UserEntry};
use crate::credentials::CredentialSource;
use crate::observe::{ConfigFacts, ReloadReport, ReloadResult};
use crate::tls::{Certificates, ReloadCause as CertificateReloadCause, describe_reload};

/// What asked for a reload (for the log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReloadCause {
    /// SIGHUP.
    Signal,
    /// `POST /v1/reload` (also `turnpike reload`).
    AdminRequest,
}

impl ReloadCause {
    fn as_str(self) -> &'static str {
        match self {
            ReloadCause::Signal => "SIGHUP",
            ReloadCause::AdminRequest => "POST /v1/reload",
        }
    }
}

/// The configuration in service.
pub(crate) struct Running {
    /// The effective settings (the restart-only ones as at start).
    pub(crate) settings: Settings,
    /// The core's configuration every shard runs with.
    pub(crate) core: Arc<turnpike_core::Config>,
    /// The file's SHA-256.
    pub(crate) sha256: String,
    /// What the core's configuration is rebuilt from: the nonce secret and
    /// epoch of the start (the core keeps the running key anyway).
    pub(crate) nonce_secret: [u8; 32],
    pub(crate) epoch: Instant,
}

/// What a reload reaches besides the settings.
pub(crate) struct Targets {
    /// Every worker's query mailbox.
    pub(crate) workers: Vec<mpsc::UnboundedSender<Query>>,
    /// How draining workers refuse new Allocates, for the next drain
    /// (`drain.alternate_servers`).
    pub(crate) drain: Arc<super::alternates::Alternates>,
    /// The credential sources and the shards' secrets; `None` with TURN
    /// off.
    pub(crate) credentials: Option<(Arc<CredentialSource>, watch::Sender<Secrets>)>,
    pub(crate) certs: Option<Arc<Certificates>>,
    pub(crate) connections: Arc<ConnectionCounts>,
    /// The ICE-server endpoint, with `ice.enabled`.
    pub(crate) ice: Option<Arc<crate::ice::IceService>>,
    /// The fleet of `[discovery]`, when it runs.
    pub(crate) fleet: Option<turnpike_fleet::Fleet>,
}

/// See the module documentation.
pub(crate) struct Reloader {
    source: SettingsSource,
    /// Held for a whole reload: one at a time.
    running: tokio::sync::Mutex<Running>,
    targets: Targets,
    applied: AtomicU64,
    /// `turn.total_quota` in service (0: no limit), for `/readyz`.
    capacity: AtomicU64,
    refused: AtomicU64,
    /// The file's SHA-256 as last applied, for the metrics (readable while
    /// a reload holds `running`).
    sha256: Mutex<String>,
}

impl Reloader {
    pub(crate) fn new(source: SettingsSource, running: Running, targets: Targets) -> Self {
        Reloader {
            source,
            sha256: Mutex::new(running.sha256.clone()),
            capacity: AtomicU64::new(u64::from(running.settings.turn.total_quota)),
            running: tokio::sync::Mutex::new(running),
            targets,
            applied: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// The allocations this relay takes at most (`turn.total_quota`);
    /// `None` without a limit.
    pub(crate) fn capacity(&self) -> Option<u64> {
        Some(self.capacity.load(Ordering::Relaxed)).filter(|&c| c > 0)
    }

    /// The configuration in service and its reloads so far.
    pub(crate) fn facts(&self) -> ConfigFacts {
        ConfigFacts {
            sha256: self
                .sha256
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            reloads_applied: self.applied.load(Ordering::Relaxed),
            reloads_refused: self.refused.load(Ordering::Relaxed),
        }
    }

    /// Reads the configuration again and applies it (see the module
    /// documentation). Logs one line for the outcome and one per warning.
    pub(crate) async fn reload(&self, cause: ReloadCause) -> ReloadReport {
        let mut running = self.running.lock().await;
        // systemd sees the reload from here until the guard drops: READY=1
        // again whatever the outcome.
        let _reloading = crate::service::Reloading::begin();
        let cause = cause.as_str();
        let mut warnings = Vec::new();
        if let Some(line) = self.reload_certificate() {
            warnings.push(line);
        }
        match self.load(&running) {
            Ok((new, sha256, kept)) => {
                for key in kept {
                    let line = format!(
                        "{key} changed in {} but needs a restart; still running with the value it started with",
                        self.source.describe()
                    );
                    tracing::warn!("{line}");
                    warnings.push(line);
                }
                let changed = new.changed_keys(&running.settings);
                warnings.extend(self.apply(&mut running, new).await);
                running.sha256.clone_from(&sha256);
                *self.sha256.lock().unwrap_or_else(PoisonError::into_inner) = sha256.clone();
                self.applied.fetch_add(1, Ordering::Relaxed);
                let what = if changed.is_empty() {
                    "nothing changed".to_owned()
                } else {
                    format!("changed {}", changed.join(", "))
                };
                tracing::info!(
                    cause,
                    sha256 = %sha256,
                    warnings = warnings.len(),
                    "configuration reloaded from {}: {what}",
                    self.source.describe()
                );
                ReloadReport {
                    result: ReloadResult::Applied,
                    error: None,
                    warnings,
                    changed: changed.into_iter().map(str::to_owned).collect(),
                    config_sha256: sha256,
                }
            }
            Err(error) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    cause,
                    "configuration not reloaded: {error}; still running the previous configuration"
                );
                ReloadReport {
                    result: ReloadResult::Refused,
                    error: Some(error),
                    warnings,
                    changed: Vec::new(),
                    config_sha256: running.sha256.clone(),
                }
            }
        }
    }

    /// Re-reads the TLS certificate, logging one line as the watcher does;
    /// that line again when the renewal was refused.
    fn reload_certificate(&self) -> Option<String> {
        let certs = self.targets.certs.as_ref()?;
        let outcome = certs.reload();
        let (level, line) = describe_reload(certs, CertificateReloadCause::Requested, &outcome);
        if level == tracing::Level::ERROR {
            tracing::error!("{line}");
            Some(line)
        } else {
            tracing::info!("{line}");
            None
        }
    }

    /// The new settings to apply (the restart-only ones kept at their
    /// running values), the file's SHA-256, and the keys kept; or why not,
    /// in one line.
    fn load(&self, running: &Running) -> Result<(Settings, String, Vec<&'static str>), String> {
        let loaded = self.source.load().map_err(|e| e.to_string())?;
        let mut new = loaded.settings;
        let kept = new.keep_restart_only(&running.settings);
        // The file is valid as written; with the restart-only settings put
        // back it must still be (a rule between two settings could break).
        new.validate().map_err(|e| {
            format!(
                "{e} (with {} kept at the running values, which need a restart)",
                kept.join(", ")
            )
        })?;
        Ok((new, loaded.file_sha256, kept))
    }

    /// Applies `new` (restart-only settings already as running) and makes
    /// it the running configuration; the warnings.
    async fn apply(&self, running: &mut Running, new: Settings) -> Vec<String> {
        let mut warnings = Vec::new();
        let old = &running.settings;
        if (&new.log.level, new.log.format) != (&old.log.level, old.log.format) {
            let note = crate::logging::reconfigure(&new.log.level, new.log.format)
                .unwrap_or_else(|err| Some(err.to_string()));
            if let Some(line) = note {
                tracing::warn!("{line}");
                warnings.push(line);
            }
        }
        let fresh = new.core(&running.nonce_secret, running.epoch);
        let core = Arc::new(running.core.reconfigured(&fresh));
        let (forget, learn) = user_changes(old.users(), new.users());
        let learn = new
            .user_keys()
            .into_iter()
            .filter(|(name, _)| learn.contains(name))
            .collect();
        if let Some((credentials, secrets)) = &self.targets.credentials {
            credentials.reconfigure(
                new.user_keys(),
                &new.turn.secrets,
                super::cache_options(&new),
            );
            crate::credentials::publish_secrets(secrets, credentials.secrets_now());
        }
        self.targets
            .connections
            .set_max_total(new.limits.max_connections);
        if let Some(fleet) = &self.targets.fleet {
            fleet.reconfigure(crate::ice::fleet_config(&new));
        }
        if let Some(ice) = &self.targets.ice
            && let Err(err) = ice.reconfigure(&new)
        {
            let line = format!("the ICE-server endpoint keeps its previous settings: {err}");
            tracing::warn!("{line}");
            warnings.push(line);
        }
        // drain.alternate_servers: for the next drain, and for a drain
        // under way (each worker that drains takes it with the change).
        self.targets
            .drain
            .set_configured(new.drain.alternate_servers.clone());
        let drain = self.targets.drain.current();
        let change = Arc::new(WorkerChange {
            core: Arc::clone(&core),
            limits: super::stream_limits(&new, self.targets.workers.len()),
            forget,
            learn,
            drain,
        });
        let answers = ask_all(&self.targets.workers, |reply| Query::Reconfigure {
            change: Arc::clone(&change),
            reply,
        })
        .await;
        for (worker, answer) in answers.into_iter().enumerate() {
            let line = match answer {
                Some(true) => continue,
                Some(false) => format!(
                    "worker {worker} refused the new configuration (it changes what a running worker cannot); it keeps the previous one"
                ),
                None => format!(
                    "worker {worker} did not answer in time; it takes the new configuration when it does"
                ),
            };
            tracing::warn!("{line}");
            warnings.push(line);
        }
        running.core = core;
        self.capacity
            .store(u64::from(new.turn.total_quota), Ordering::Relaxed);
        running.settings = new;
        warnings
    }
}

/// The static users to forget (gone, or with another password) and to
/// learn (new, or with another password), by name.
pub(crate) fn user_changes(old: &[UserEntry], new: &[UserEntry]) -> (Vec<String>, Vec<String>) {
    let forget = old
        .iter()
        .filter(|o| !new.contains(o))
        .map(|o| o.username.clone())
        .collect();
    let learn = new
        .iter()
        .filter(|n| !old.contains(n))
        .map(|n| n.username.clone())
        .collect();
    (forget, learn)
}

/// Reloads on every SIGHUP, until the runtime stops.
pub(crate) async fn on_hangup(reloader: Arc<Reloader>, mut hangup: tokio::signal::unix::Signal) {
    while hangup.recv().await.is_some() {
        reloader.reload(ReloadCause::Signal).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, password: &str) -> UserEntry {
        UserEntry {
            username: name.to_owned(),
            password: password.to_owned(),
        }
    }

    #[test]
    fn user_changes_by_name_and_password() {
        let old = [user("alice", "a"), user("bob", "b"), user("carol", "c")];
        let new = [user("alice", "a"), user("bob", "B"), user("dave", "d")];
        let (forget, learn) = user_changes(&old, &new);
        assert_eq!(forget, ["bob", "carol"]);
        assert_eq!(learn, ["bob", "dave"]);
        assert_eq!(user_changes(&old, &old), (vec![], vec![]));
    }
}
