//! [`RelayHandle`]: the running relay as the admin surfaces see it
//! ([`Relay`]). It asks every worker through its query mailbox
//! ([`super::queries`]) and sums the answers; what lives outside the
//! workers (the credential cache, the XDP counters, the certificates) it
//! reads directly.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};
use turnpike_core::Quotas;
use turnpike_xdp::FastPath;

use super::queries::Query;
use crate::credentials::CredentialSource;
use crate::observe::{
    AllocationFilter, AllocationInfo, BoxFuture, FastPathStats, Health, Relay, Snapshot,
    WorkerShare,
};
use crate::tls::Certificates;

/// How long a worker may take to answer before it counts as silent: far
/// beyond one batch (microseconds to milliseconds), short enough for a
/// probe's timeout.
const ANSWER_DEADLINE: Duration = Duration::from_secs(2);

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
    /// Set while draining (the drain issue sets it).
    draining: AtomicBool,
    credentials: Option<Arc<CredentialSource>>,
    quotas: Option<Arc<Quotas>>,
    fast_path: Option<Arc<Mutex<FastPath>>>,
    certs: Option<Arc<Certificates>>,
    /// How long a kicked user is refused new allocations.
    stop_for: Duration,
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
}

impl RelayHandle {
    pub(super) fn new(workers: Vec<mpsc::UnboundedSender<Query>>, sources: Sources) -> Self {
        RelayHandle {
            inner: Arc::new(Inner {
                workers,
                started: AtomicBool::new(false),
                draining: AtomicBool::new(false),
                credentials: sources.credentials,
                quotas: sources.quotas,
                fast_path: sources.fast_path,
                certs: sources.certs,
                stop_for: sources.stop_for,
            }),
        }
    }

    /// Start-up is over: every listener is bound.
    pub(super) fn set_started(&self) {
        self.inner.started.store(true, Ordering::Relaxed);
    }

    /// Asks every worker, each answer within [`ANSWER_DEADLINE`]; `None`
    /// for a worker that did not answer.
    async fn ask_all<T>(
        &self,
        mut query: impl FnMut(oneshot::Sender<T>) -> Query,
    ) -> Vec<Option<T>> {
        let mut pending = Vec::with_capacity(self.inner.workers.len());
        for worker in &self.inner.workers {
            let (tx, rx) = oneshot::channel();
            // A worker whose mailbox is gone has stopped: its answer never
            // comes, which is what `rx` then says.
            let _ = worker.send(query(tx));
            pending.push(rx);
        }
        let deadline = tokio::time::Instant::now() + ANSWER_DEADLINE;
        let mut answers = Vec::with_capacity(pending.len());
        for rx in pending {
            answers.push(
                tokio::time::timeout_at(deadline, rx)
                    .await
                    .ok()
                    .and_then(Result::ok),
            );
        }
        answers
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

    fn kick(&self, filter: AllocationFilter) -> BoxFuture<'_, usize> {
        Box::pin(async move {
            let stop_for = self.inner.stop_for;
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
}
