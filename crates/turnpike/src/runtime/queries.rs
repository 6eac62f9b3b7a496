//! What the admin surfaces ask a worker, and how it answers: each worker
//! has a query mailbox, read by a task of its own between two batches, so a
//! query never takes a lock the packet path takes and a worker that stops
//! turning is noticed (its answer does not come). A reload hands each
//! worker its new configuration the same way ([`Query::Reconfigure`]).
//!
//! The asking side is [`super::handle::RelayHandle`] (and
//! [`super::reload`]).

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot};
use turnpike_core::allocation::AllocationView;
use turnpike_core::ephemeral::user_names;
use turnpike_core::stats::{EndReason, Label, TransportLabel};
use turnpike_core::{Draining, RelayProtocol, Server, UserKeys};

use super::context::WorkerCtx;
use super::stream::conn::StreamLimits;
use crate::date;
use crate::observe::accounting::{allocation_id, relay_kind};
use crate::observe::{
    AllocationFilter, AllocationGauges, AllocationInfo, ChannelInfo, WorkerShare,
};

/// How long a worker may take to answer before it counts as silent: far
/// beyond one batch (microseconds to milliseconds), short enough for a
/// probe's timeout.
const ANSWER_DEADLINE: Duration = Duration::from_secs(2);

/// A question for one worker, with where its answer goes.
#[derive(Debug)]
pub(crate) enum Query {
    /// Its counters and gauges.
    Share(oneshot::Sender<WorkerShare>),
    /// Its live allocations that match.
    Allocations {
        filter: AllocationFilter,
        reply: oneshot::Sender<Vec<AllocationInfo>>,
    },
    /// End its allocations that match; with a user filter, also refuse the
    /// user new allocations for `stop_for`.
    Kick {
        filter: AllocationFilter,
        stop_for: Duration,
        reply: oneshot::Sender<usize>,
    },
    /// Start (`Some`) or stop (`None`) draining: refuse new Allocates as
    /// `draining` says ([`turnpike_core::drain`]). Answers with its live
    /// allocations.
    Drain {
        draining: Option<Draining>,
        reply: oneshot::Sender<usize>,
    },
    /// Where new Allocates go when it drains or is full
    /// ([`turnpike_core::Server::set_alternates`]).
    Alternates {
        alternates: Draining,
        reply: oneshot::Sender<()>,
    },
    /// How many live allocations it holds.
    AllocationCount(oneshot::Sender<usize>),
    /// Payload bytes its core relayed so far, both ways (for
    /// `turn.bps_capacity`; a copy of its counters, no walk).
    RelayedBytes(oneshot::Sender<u64>),
    /// Run with a reloaded configuration; whether the shard took it.
    Reconfigure {
        change: Arc<WorkerChange>,
        reply: oneshot::Sender<bool>,
    },
}

/// What a reload changes in every worker.
#[derive(Debug)]
pub(crate) struct WorkerChange {
    /// The core's configuration, made by `Config::reconfigured` from the
    /// running one.
    pub(crate) core: Arc<turnpike_core::Config>,
    /// The limits new connections get.
    pub(crate) limits: StreamLimits,
    /// Static users removed, or whose password changed: forgotten (a
    /// database user of the same name is looked up again).
    pub(crate) forget: Vec<String>,
    /// Static users added, or whose password changed, with their keys.
    pub(crate) learn: Vec<(String, UserKeys)>,
    /// Where new Allocates go while draining or full: taken at once.
    pub(crate) drain: Draining,
}

/// Asks every worker, each answer within [`ANSWER_DEADLINE`]; `None` for
/// a worker that did not answer.
pub(super) async fn ask_all<T>(
    workers: &[mpsc::UnboundedSender<Query>],
    mut query: impl FnMut(oneshot::Sender<T>) -> Query,
) -> Vec<Option<T>> {
    let mut pending = Vec::with_capacity(workers.len());
    for worker in workers {
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

/// Answers queries until the asking side is gone.
pub(super) async fn query_loop(ctx: Rc<WorkerCtx>, mut inbox: mpsc::UnboundedReceiver<Query>) {
    while let Some(query) = inbox.recv().await {
        match query {
            Query::Share(reply) => {
                let _ = reply.send(share(&ctx));
            }
            Query::Allocations { filter, reply } => {
                let _ = reply.send(allocations(&ctx, &filter));
            }
            Query::Kick {
                filter,
                stop_for,
                reply,
            } => {
                let _ = reply.send(kick(&ctx, &filter, stop_for));
            }
            Query::Drain { draining, reply } => {
                let mut server = ctx.server.borrow_mut();
                server.set_draining(draining);
                let _ = reply.send(server.allocation_count());
            }
            Query::Alternates { alternates, reply } => {
                ctx.server.borrow_mut().set_alternates(alternates);
                let _ = reply.send(());
            }
            Query::AllocationCount(reply) => {
                let _ = reply.send(ctx.server.borrow().allocation_count());
            }
            Query::RelayedBytes(reply) => {
                let relayed = ctx.server.borrow().stats().relayed;
                let _ = reply.send(relayed.to_peer_bytes + relayed.to_client_bytes);
            }
            Query::Reconfigure { change, reply } => {
                let _ = reply.send(reconfigure(&ctx, &change));
            }
        }
    }
}

fn share(ctx: &WorkerCtx) -> WorkerShare {
    let server = ctx.server.borrow();
    let mut allocations = AllocationGauges::default();
    server.visit_allocations(Instant::now(), |a| {
        let transport = TransportLabel::from(a.client().transport).index();
        let kind = usize::from(a.protocol() == RelayProtocol::Tcp);
        for (family, relay) in a.relays().iter().enumerate() {
            if relay.is_some() {
                allocations.by_kind[transport][family][kind] += 1;
            }
        }
        allocations.total += 1;
        allocations.channels += a.channels().count() as u64;
        allocations.permissions += a.permissions().count() as u64;
    });
    WorkerShare {
        core: server.stats(),
        shell: ctx.shell_stats.get(),
        allocations,
    }
}

/// Whether allocation `a` is one `filter` names.
fn matches(separator: char, filter: &AllocationFilter, a: &AllocationView<'_>) -> bool {
    filter
        .id
        .as_ref()
        .is_none_or(|id| *id == allocation_id(a.serial()))
        && filter
            .user
            .as_ref()
            .is_none_or(|user| user_names(a.username(), separator).any(|n| n == user))
}

fn allocations(ctx: &WorkerCtx, filter: &AllocationFilter) -> Vec<AllocationInfo> {
    let server = ctx.server.borrow();
    let realm = server
        .config()
        .turn
        .as_ref()
        .map_or(String::new(), |t| t.realm.clone());
    let (now, wall) = (Instant::now(), SystemTime::now());
    let separator = separator(&server);
    let mut list = Vec::new();
    server.visit_allocations(now, |a| {
        if !matches(separator, filter, a) {
            return;
        }
        let mut traffic = a.traffic();
        traffic += ctx.fast_path_traffic(a.client(), a.routes());
        let created = wall - now.saturating_duration_since(a.created());
        list.push(AllocationInfo {
            id: allocation_id(a.serial()),
            user: a.username().to_owned(),
            realm: realm.clone(),
            client: a.client().client,
            transport: TransportLabel::from(a.client().transport).as_str(),
            relayed: a.relays().iter().flatten().copied().collect(),
            relay_kind: relay_kind(a.protocol()),
            created: date::format_rfc3339(created),
            lifetime_left: a.lifetime_left().as_secs(),
            permissions: a.permissions().collect(),
            channels: a
                .channels()
                .map(|(number, peer): (u16, SocketAddr)| ChannelInfo { number, peer })
                .collect(),
            to_peer_packets: traffic.to_peer_packets,
            to_peer_bytes: traffic.to_peer_bytes,
            to_client_packets: traffic.to_client_packets,
            to_client_bytes: traffic.to_client_bytes,
        });
    });
    list
}

fn kick(ctx: &Rc<WorkerCtx>, filter: &AllocationFilter, stop_for: Duration) -> usize {
    let now = Instant::now();
    let ended = {
        let mut server = ctx.server.borrow_mut();
        if let Some(user) = &filter.user {
            server.stop_user(user, now + stop_for);
        }
        let separator = separator(&server);
        server.end_allocations(now, EndReason::Kicked, |a| matches(separator, filter, a))
    };
    // Their relays, connections and routes go; the accounting lines are
    // written.
    ctx.process_pending();
    ended
}

/// Takes a reload's change: the shard's configuration and static users,
/// the limits of new connections. Allocations, connections and sessions
/// stay; what the shard withdraws (routes of channels to peers now
/// refused) is carried out.
fn reconfigure(ctx: &Rc<WorkerCtx>, change: &WorkerChange) -> bool {
    let now = Instant::now();
    {
        let mut server = ctx.server.borrow_mut();
        if !server.reconfigure(now, Arc::clone(&change.core)) {
            return false;
        }
        for name in &change.forget {
            server.remove_credentials(name);
        }
        for (name, keys) in &change.learn {
            server.insert_credentials(now, name, keys.clone());
        }
        server.set_alternates(change.drain.clone());
    }
    ctx.limits.set(change.limits);
    ctx.queued.set_max(change.limits.max_buffered_per_worker);
    ctx.process_pending();
    true
}

/// The separator of time-limited usernames (`expiry:user id`).
fn separator(server: &Server) -> char {
    server
        .config()
        .turn
        .as_ref()
        .map_or(':', |t| t.rest_separator)
}
