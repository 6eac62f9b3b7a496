//! The bookkeeping of client connections, shared by everything that
//! writes to them or counts them: the per-connection write queue
//! ([`StreamConn`]), the worker's budget for all queues ([`QueueBudget`]),
//! and the connection counts per source and in all, across workers
//! ([`ConnectionCounts`]). DTLS sessions are counted here too.

use std::cell::{Cell, RefCell};
use std::collections::hash_map::Entry;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustc_hash::FxHashMap;
use tokio::sync::Notify;
use turnpike_core::SourcePrefix;

/// Limits on client connections; see `[limits]` in the example config.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamLimits {
    /// Connections from one source IP, all workers together; 0: no limit.
    pub(crate) per_ip: u32,
    /// A connection without an allocation this long after it opened is
    /// closed.
    pub(crate) auth_timeout: Duration,
    /// A connection that sends nothing for this long is closed.
    pub(crate) idle_timeout: Duration,
    /// Bytes queued for writing per connection; beyond, relayed data is
    /// dropped.
    pub(crate) max_buffered: usize,
    /// Bytes queued for writing over all of one worker's connections (its
    /// share of `limits.max_buffered_bytes_total`); beyond, relayed data is
    /// dropped.
    pub(crate) max_buffered_per_worker: usize,
}

/// Connections per source and in all, shared by the workers (touched on
/// accept and close only). A source is an IPv4 address or an IPv6 prefix
/// ([`SourcePrefix`]).
#[derive(Debug, Default)]
pub(crate) struct ConnectionCounts {
    counts: Mutex<Counts>,
    sources: SourcePrefix,
    /// Connections in all; 0: no limit. A reload changes it.
    max_total: AtomicU32,
}

#[derive(Debug, Default)]
struct Counts {
    by_source: FxHashMap<IpAddr, u32>,
    total: u32,
}

/// One counted connection; uncounted when dropped.
#[derive(Debug)]
pub(crate) struct Counted {
    counts: Arc<ConnectionCounts>,
    ip: IpAddr,
}

impl ConnectionCounts {
    /// Counts connections per source as `sources` says, and at most
    /// `max_total` in all (0: no limit).
    pub(crate) fn new(sources: SourcePrefix, max_total: u32) -> Self {
        ConnectionCounts {
            counts: Mutex::default(),
            sources,
            max_total: AtomicU32::new(max_total),
        }
    }

    /// At most `max_total` connections in all from now on (0: no limit);
    /// those open beyond it stay.
    pub(crate) fn set_max_total(&self, max_total: u32) {
        self.max_total.store(max_total, Ordering::Relaxed);
    }

    /// Counts a connection from `ip`, unless its source already has `limit`
    /// (0: no limit) or the server its total.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr, limit: u32) -> Option<Counted> {
        let ip = self.sources.key(ip);
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let max_total = self.max_total.load(Ordering::Relaxed);
        if max_total != 0 && counts.total >= max_total {
            return None;
        }
        let count = counts.by_source.entry(ip).or_insert(0);
        if limit != 0 && *count >= limit {
            return None;
        }
        *count += 1;
        counts.total += 1;
        Some(Counted {
            counts: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut counts = self
            .counts
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Entry::Occupied(mut e) = counts.by_source.entry(self.ip) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

/// Bytes queued towards the clients of one worker's connections, and how
/// many may be: slow clients together cannot make a worker hold more than
/// its share, however many connections they open. Single-threaded, like
/// the worker.
#[derive(Debug)]
pub(crate) struct QueueBudget {
    pub(crate) used: Cell<usize>,
    max: Cell<usize>,
}

impl QueueBudget {
    pub(crate) fn new(max: usize) -> Self {
        QueueBudget {
            used: Cell::new(0),
            max: Cell::new(max),
        }
    }

    /// At most `max` bytes from now on; what is queued beyond it is
    /// written, and nothing more is queued until it fits.
    pub(crate) fn set_max(&self, max: usize) {
        self.max.set(max);
    }

    /// Takes `n` bytes, unless that would exceed the budget.
    fn take(&self, n: usize) -> bool {
        let used = self.used.get() + n;
        if used > self.max.get() {
            return false;
        }
        self.used.set(used);
        true
    }

    fn give_back(&self, n: usize) {
        self.used.set(self.used.get().saturating_sub(n));
    }
}

/// Bytes taken from a [`QueueBudget`], given back when dropped (written, or
/// abandoned with the connection).
pub(crate) struct Taken<'a> {
    pub(crate) budget: &'a QueueBudget,
    pub(crate) bytes: usize,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

/// The write side of one client connection, shared by its reader, its
/// writer and the relay tasks of its allocation.
#[derive(Debug)]
pub(crate) struct StreamConn {
    pub(crate) queue: RefCell<Vec<u8>>,
    limit: usize,
    /// The worker's budget, which every byte in `queue` (and in the
    /// writer's hands) is taken from.
    pub(crate) budget: Rc<QueueBudget>,
    pub(crate) wake: Notify,
    pub(crate) closed: Cell<bool>,
    /// The writer sends what is queued, then hands its half of the stream
    /// back (the connection is becoming a data connection).
    pub(crate) handover: Cell<bool>,
}

impl StreamConn {
    pub(crate) fn new(limit: usize, budget: Rc<QueueBudget>) -> Self {
        StreamConn {
            queue: RefCell::new(Vec::new()),
            limit,
            budget,
            wake: Notify::new(),
            closed: Cell::new(false),
            handover: Cell::new(false),
        }
    }

    /// Queues one whole message for the client; drops it (returning
    /// `false`) when the connection's queue or the worker's budget is full,
    /// or the connection closed.
    pub(crate) fn push(&self, message: &[u8]) -> bool {
        let mut queue = self.queue.borrow_mut();
        if self.closed.get()
            || queue.len() + message.len() > self.limit
            || !self.budget.take(message.len())
        {
            return false;
        }
        queue.extend_from_slice(message);
        true
    }

    /// Wakes the writer after one or more [`push`](Self::push)es.
    pub(crate) fn flush(&self) {
        self.wake.notify_one();
    }
}

impl Drop for StreamConn {
    fn drop(&mut self) {
        self.budget.give_back(self.queue.get_mut().len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One worker's connections share its budget: a slow client's queue
    /// counts against the others', and what is written or abandoned is
    /// given back.
    #[test]
    fn queued_bytes_are_bounded_per_worker() {
        let budget = Rc::new(QueueBudget::new(1000));
        let a = StreamConn::new(600, Rc::clone(&budget));
        let b = StreamConn::new(600, Rc::clone(&budget));
        assert!(a.push(&[0; 600]));
        assert!(!a.push(&[0; 1]), "the connection's own limit");
        assert!(b.push(&[0; 400]));
        assert!(!b.push(&[0; 1]), "the worker's budget");
        // Written: swapped out by the writer and given back.
        let written = std::mem::take(&mut *a.queue.borrow_mut());
        drop(Taken {
            budget: &budget,
            bytes: written.len(),
        });
        assert!(b.push(&[0; 200]));
        // Abandoned with the connection.
        drop(b);
        assert_eq!(budget.used.get(), 0);
        assert!(a.push(&[0; 600]));
    }
}
