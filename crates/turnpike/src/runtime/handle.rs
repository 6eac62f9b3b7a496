//! [`RelayHandle`]: the running relay as the admin surfaces see it
//! ([`Relay`]). It asks every worker through its query mailbox
//! ([`super::queries`]) and sums the answers; what lives outside the
//! workers (the credential cache, the XDP counters, the certificates) it
//! reads directly.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, mpsc, oneshot};
use turnpike_core::Quotas;

use super::alternates::Alternates;
use turnpike_xdp::FastPath;

use super::queries::{Query, ask_all};
use super::reload::{ReloadCause, Reloader};
use crate::credentials::CredentialSource;
use crate::observe::{
    AllocationFilter, AllocationInfo, BoxFuture, DrainState, FastPathStats, Health, Relay,
    ReloadReport, ReloadResult, Snapshot, WorkerShare,
};
use crate::tls::Certificates;

/// How often the relayed rate is measured for `turn.bps_capacity`.
const RATE_INTERVAL: Duration = Duration::from_secs(1);

/// The running relay, for the admin endpoint, `turnstats` and the CLI.
#[derive(Clone)]
pub struct RelayHandle {
    inner: Arc<Inner>,
}

struct Inner {
    /// Each worker's query mailbox, by worker number.
    workers: Vec<mpsc::UnboundedSender<Query>>,
    /// Set once every listener is bound and every worker runs.
    started: AtomicBool,
    /// Set while draining.
    draining: AtomicBool,
    /// Where draining or full workers send new Allocates
    /// (`drain.alternate_servers`, which a reload replaces, and the fleet's).
    drain: Arc<Alternates>,
    /// Notified when draining starts or stops and when an allocation ends
    /// (by the workers), for whoever waits for the server to empty.
    changed: Arc<Notify>,
    credentials: Option<Arc<CredentialSource>>,
    quotas: Option<Arc<Quotas>>,
    fast_path: Option<Arc<Mutex<FastPath>>>,
    certs: Option<Arc<Certificates>>,
    /// How long a kicked user is refused new allocations without a
    /// credential cache (whose `cache_ttl` it is otherwise).
    stop_for: Duration,
    /// Reloads the configuration.
    reloader: Arc<Reloader>,
    /// Failed heartbeats, with `fleet.register`.
    heartbeat_failures: Option<Arc<AtomicU64>>,
}

impl std::fmt::Debug for RelayHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayHandle")
            .field("workers", &self.inner.workers.len())
            .finish_non_exhaustive()
    }
}

/// What a [`RelayHandle`] reads besides the workers.
pub(super) struct Sources {
    pub(super) credentials: Option<Arc<CredentialSource>>,
    pub(super) quotas: Option<Arc<Quotas>>,
    pub(super) fast_path: Option<Arc<Mutex<FastPath>>>,
    pub(super) certs: Option<Arc<Certificates>>,
    pub(super) stop_for: Duration,
    pub(super) drain: Arc<Alternates>,
    /// Also given to the workers, which notify it when an allocation ends.
    pub(super) changed: Arc<Notify>,
    pub(super) reloader: Arc<Reloader>,
    /// Counted by the heartbeat ([`crate::fleet_registry::Heartbeat`]).
    pub(super) heartbeat_failures: Option<Arc<AtomicU64>>,
}

impl RelayHandle {
    pub(super) fn new(workers: Vec<mpsc::UnboundedSender<Query>>, sources: Sources) -> Self {
        RelayHandle {
            inner: Arc::new(Inner {
                workers,
                started: AtomicBool::new(false),
                draining: AtomicBool::new(false),
                drain: sources.drain,
                changed: sources.changed,
                credentials: sources.credentials,
                quotas: sources.quotas,
                fast_path: sources.fast_path,
                certs: sources.certs,
                stop_for: sources.stop_for,
                reloader: sources.reloader,
                heartbeat_failures: sources.heartbeat_failures,
            }),
        }
    }

    /// Start-up is over: every listener is bound.
    pub(super) fn set_started(&self) {
        self.inner.started.store(true, Ordering::Relaxed);
    }

    /// Starts (`true`) or stops (`false`) draining in every worker, and
    /// returns the state once each has applied it.
    pub async fn set_draining(&self, on: bool) -> DrainState {
        self.inner.draining.store(on, Ordering::Relaxed);
        let draining = on.then(|| self.inner.drain.current());
        let answers = self
            .ask_all(|reply| Query::Drain {
                draining: draining.clone(),
                reply,
            })
            .await;
        self.inner.changed.notify_waiters();
        self.drain_state_of(&answers)
    }

    /// Hands every worker the alternates as they are now (at start: the
    /// configured ones).
    pub(super) async fn push_alternates(&self) {
        let alternates = self.inner.drain.current();
        self.ask_all(|reply| Query::Alternates {
            alternates: alternates.clone(),
            reply,
        })
        .await;
    }

    /// Whether the server drains now.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed)
    }

    /// Resolves at the next change of draining or end of an allocation;
    /// `enable` it before checking what it guards, as [`RelayHandle::drained`]
    /// does.
    pub fn changes(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.changed.notified()
    }

    /// Whether the server drains, and the allocations left.
    pub async fn drain_state(&self) -> DrainState {
        let answers = self.ask_all(Query::AllocationCount).await;
        self.drain_state_of(&answers)
    }

    fn drain_state_of(&self, answers: &[Option<usize>]) -> DrainState {
        DrainState {
            draining: self.inner.draining.load(Ordering::Relaxed),
            allocations: answers.iter().flatten().map(|&n| n as u64).sum(),
            workers_silent: answers.iter().filter(|a| a.is_none()).count(),
        }
    }

    /// Returns once the server drains and no allocation is left in any
    /// worker: at once if it is so now, else when an allocation ends or
    /// draining starts (never if it never drains).
    pub async fn drained(&self) {
        loop {
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so a change between the check
            // and the wait is not missed.
            changed.as_mut().enable();
            if self.inner.draining.load(Ordering::Relaxed) && self.drain_state().await.drained() {
                return;
            }
            changed.await;
        }
    }

    /// Measures what the relay relays, sockets and XDP together, every
    /// [`RATE_INTERVAL`], and hands the rate to the shards through
    /// `quotas` for `turn.bps_capacity` (a new Allocate is refused while
    /// it is at the capacity). A worker that does not answer counts as
    /// relaying nothing that round. Runs until the runtime stops.
    pub(super) async fn measure_relayed_rate(self, quotas: Arc<Quotas>) {
        let mut ticks = tokio::time::interval(RATE_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last: Option<(tokio::time::Instant, u64)> = None;
        loop {
            let at = ticks.tick().await;
            let relayed = self.relayed_bytes().await;
            if let Some((then, before)) = last {
                let secs = at.saturating_duration_since(then).as_secs_f64();
                if secs > 0.0 {
                    // Counters only grow; a silent worker makes a round
                    // look smaller, never negative.
                    let rate = relayed.saturating_sub(before) as f64 / secs;
                    quotas.set_relayed_rate(rate as u64);
                }
            }
            last = Some((at, relayed));
        }
    }

    /// Payload bytes relayed so far, both ways, by every worker's core and
    /// the XDP fast path.
    async fn relayed_bytes(&self) -> u64 {
        let cores: u64 = self
            .ask_all(Query::RelayedBytes)
            .await
            .into_iter()
            .flatten()
            .sum();
        let fast = self
            .fast_path_stats()
            .map_or(0, |f| f.relayed.to_peer_bytes + f.relayed.to_client_bytes);
        cores + fast
    }

    /// Asks every worker ([`super::queries::ask_all`]).
    async fn ask_all<T>(&self, query: impl FnMut(oneshot::Sender<T>) -> Query) -> Vec<Option<T>> {
        ask_all(&self.inner.workers, query).await
    }

    fn fast_path_stats(&self) -> Option<FastPathStats> {
        let fast_path = self.inner.fast_path.as_ref()?;
        let fast_path = fast_path.lock().unwrap_or_else(PoisonError::into_inner);
        let c = fast_path.counters();
        Some(FastPathStats {
            relayed: turnpike_core::stats::Traffic {
                to_peer_packets: c.to_peer_packets,
                to_peer_bytes: c.to_peer_bytes,
                to_client_packets: c.to_client_packets,
                to_client_bytes: c.to_client_bytes,
            },
            passed: c.passed,
            capped: c.capped,
            routes: fast_path.routes() as u64,
            capacity: FastPath::capacity() as u64,
        })
    }

    /// Whether the credential database has been unreachable for longer
    /// than the grace period of the keys already read.
    fn database_down(&self) -> bool {
        let Some(credentials) = &self.inner.credentials else {
            return false;
        };
        credentials.stats().down_since.is_some_and(|since| {
            SystemTime::now()
                .duration_since(since)
                .is_ok_and(|down| down > credentials.grace())
        })
    }
}

impl Relay for RelayHandle {
    fn snapshot(&self) -> BoxFuture<'_, Snapshot> {
        Box::pin(async move {
            let answers = self.ask_all(Query::Share).await;
            let mut workers = WorkerShare::default();
            let mut silent = 0;
            for answer in answers {
                match answer {
                    Some(share) => workers += share,
                    None => silent += 1,
                }
            }
            Snapshot {
                workers,
                worker_count: self.inner.workers.len(),
                workers_silent: silent,
                fast_path: self.fast_path_stats(),
                credentials: self.inner.credentials.as_ref().map(|c| c.stats()),
                peer_connections_open: self
                    .inner
                    .quotas
                    .as_ref()
                    .map_or(0, |q| q.connections() as u64),
                draining: self.inner.draining.load(Ordering::Relaxed),
                certificate_reloads_refused: self
                    .inner
                    .certs
                    .as_ref()
                    .map_or(0, |c| c.reloads_refused()),
                config: self.inner.reloader.facts(),
                heartbeat_failures: self
                    .inner
                    .heartbeat_failures
                    .as_ref()
                    .map(|f| f.load(Ordering::Relaxed)),
            }
        })
    }

    fn health(&self) -> BoxFuture<'_, Health> {
        Box::pin(async move {
            let answers = self.ask_all(Query::Share).await;
            Health {
                workers: answers.len(),
                workers_silent: answers.iter().filter(|a| a.is_none()).count(),
                started: self.inner.started.load(Ordering::Relaxed),
                draining: self.inner.draining.load(Ordering::Relaxed),
                database_down: self.database_down(),
                allocations: answers.iter().flatten().map(|a| a.allocations.total).sum(),
                capacity: self.inner.reloader.capacity(),
            }
        })
    }

    fn allocations(&self, filter: AllocationFilter) -> BoxFuture<'_, Vec<AllocationInfo>> {
        Box::pin(async move {
            let answers = self
                .ask_all(|reply| Query::Allocations {
                    filter: filter.clone(),
                    reply,
                })
                .await;
            let mut list: Vec<_> = answers.into_iter().flatten().flatten().collect();
            list.sort_by(|a, b| a.id.cmp(&b.id));
            list
        })
    }

    fn set_draining(&self, on: bool) -> BoxFuture<'_, DrainState> {
        Box::pin(RelayHandle::set_draining(self, on))
    }

    fn drain_state(&self) -> BoxFuture<'_, DrainState> {
        Box::pin(RelayHandle::drain_state(self))
    }

    fn kick(&self, filter: AllocationFilter) -> BoxFuture<'_, usize> {
        Box::pin(async move {
            // `database.cache_ttl` as it is now (a reload may change it).
            let stop_for = self
                .inner
                .credentials
                .as_ref()
                .map_or(self.inner.stop_for, |c| c.options().ttl);
            self.ask_all(|reply| Query::Kick {
                filter: filter.clone(),
                stop_for,
                reply,
            })
            .await
            .into_iter()
            .flatten()
            .sum()
        })
    }

    fn reload(&self) -> BoxFuture<'_, ReloadReport> {
        // A task of its own: a reload is finished whole even when the
        // asker gives up waiting.
        let reloader = Arc::clone(&self.inner.reloader);
        let task = tokio::spawn(async move { reloader.reload(ReloadCause::AdminRequest).await });
        Box::pin(async move {
            task.await.unwrap_or_else(|err| ReloadReport {
                result: ReloadResult::Refused,
                error: Some(format!("the reload failed: {err}")),
                warnings: Vec::new(),
                changed: Vec::new(),
                config_sha256: self.inner.reloader.facts().sha256,
            })
        })
    }
}
