//! Bandwidth caps (coturn's `max-bps`): bytes per second per allocation
//! and per user, each direction on its own, enforced where the core relays
//! data. Data over a cap is dropped and counted
//! ([`DropReason::BandwidthCap`](crate::stats::DropReason::BandwidthCap)),
//! never queued: queueing media only turns a rate problem into a latency
//! one.
//!
//! Each cap is a token bucket of [`BURST`] (one second's worth of bytes at
//! the cap), so the jitter of a call's media under its cap is not chopped.
//! It is kept in the GCRA form (the "theoretical arrival time" of the next
//! byte): one word of state, so the per-user bucket, which a user's
//! allocations on different shards share, is one atomic updated with a
//! compare-and-swap instead of a lock. The rate is not stored in a bucket
//! but passed in with every packet from the running configuration, so a
//! reload reaches the buckets of existing allocations at once.
//!
//! What is counted is payload bytes, without TURN framing, as in the
//! traffic counters and the accounting lines. RFC 6062 TCP relays move
//! bytes in the shell, outside the core, and are not capped.
//!
//! The fast path: while only `max_bps` is set, the core announces channel
//! routes with the cap ([`Event::RouteChannel`](crate::Event::RouteChannel)),
//! and the fast path enforces it with buckets of its own (the XDP program
//! keeps one per allocation and direction that all the allocation's
//! channels share, as here). Those are not the buckets here: an allocation
//! relaying through both at once (ChannelData in the fast path, Send
//! indications or what the fast path passes to the sockets here) can get up
//! to twice its cap each way. Ordinary clients use one or the other: a
//! channel once bound carries the data. A per-user bucket cannot be shared
//! with a fast path, so while `user_max_bps` is set no routes are announced
//! and every relayed datagram comes through the core.
//!
//! A datagram larger than a cap's burst never fits it: a cap below the
//! largest datagram a client sends (in practice ~1,200 bytes of media)
//! relays nothing of that size, which is the cap's meaning.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How far ahead of the cap a bucket lets data go: one second's worth.
pub const BURST: Duration = Duration::from_secs(1);

/// [`BURST`] in nanoseconds, for the shared buckets' arithmetic.
const BURST_NANOS: u64 = 1_000_000_000;

/// Which way relayed data goes; each has buckets of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Client → peer: Send indications, ChannelData from the client.
    ToPeer = 0,
    /// Peer → client: datagrams that arrived on a relayed address.
    ToClient = 1,
}

/// The caps in force, in bytes per second; 0 = none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Caps {
    /// Per allocation (`turn.max_bps`).
    pub(crate) allocation: u64,
    /// Per user, all the user's allocations together (`turn.user_max_bps`).
    pub(crate) user: u64,
}

/// How long sending `bytes` takes at `rate` bytes per second, in
/// nanoseconds (saturating: a datagram is at most 64 KiB, so this only
/// saturates for absurd inputs).
fn cost_nanos(bytes: usize, rate: u64) -> u64 {
    let nanos = (bytes as u128 * 1_000_000_000) / u128::from(rate.max(1));
    u64::try_from(nanos).unwrap_or(u64::MAX)
}

/// One shard's bucket (an allocation's own cap, one direction).
#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    /// When the data admitted so far would have drained at the cap;
    /// `None` before the first datagram.
    drained_at: Option<Instant>,
}

impl Bucket {
    /// The new drain time if `bytes` at `now` fit under `rate`, else `None`.
    fn admit(&self, now: Instant, bytes: usize, rate: u64) -> Option<Instant> {
        let start = self.drained_at.map_or(now, |t| t.max(now));
        let drained_at = start.checked_add(Duration::from_nanos(cost_nanos(bytes, rate)))?;
        (drained_at <= now + BURST).then_some(drained_at)
    }
}

/// A user's buckets, both directions, shared by the user's allocations on
/// every shard. Made once per user with the user's quota entry
/// ([`Quotas`](crate::allocation::Quotas)) and consulted only while
/// `user_max_bps` is set: without a per-user cap, the packet path never
/// touches it.
#[derive(Debug)]
pub struct UserBandwidth {
    /// Times are kept in nanoseconds since this instant.
    epoch: Instant,
    /// Drain times by [`Direction`], nanoseconds since `epoch`.
    drained_at: [AtomicU64; 2],
}

impl UserBandwidth {
    pub(crate) fn new(epoch: Instant) -> Self {
        UserBandwidth {
            epoch,
            drained_at: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    /// Takes `bytes` from the bucket of `direction` if they fit under
    /// `rate`. Lock-free: a compare-and-swap that retries only while
    /// another shard takes from the same user's bucket at the same moment.
    fn admit(&self, direction: Direction, now: Instant, bytes: usize, rate: u64) -> bool {
        // A shard's `now` may trail the epoch by a hair: count it as the epoch.
        let now =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        let cost = cost_nanos(bytes, rate);
        let cell = &self.drained_at[direction as usize];
        let mut current = cell.load(Ordering::Relaxed);
        loop {
            let next = current.max(now).saturating_add(cost);
            if next > now.saturating_add(BURST_NANOS) {
                return false;
            }
            // Relaxed: the cell is the whole state; nothing else is published.
            match cell.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
    }
}

/// An allocation's buckets: its own, both directions, and its user's.
#[derive(Debug)]
pub(crate) struct AllocationBandwidth {
    own: [Bucket; 2],
    user: std::sync::Arc<UserBandwidth>,
}

impl AllocationBandwidth {
    pub(crate) fn new(user: std::sync::Arc<UserBandwidth>) -> Self {
        AllocationBandwidth {
            own: [Bucket::default(); 2],
            user,
        }
    }

    /// Whether `bytes` going `direction` at `now` fit under `caps`; if so,
    /// they are taken from every bucket that applies. Data refused by one
    /// cap takes nothing from the other.
    pub(crate) fn admit(
        &mut self,
        direction: Direction,
        now: Instant,
        bytes: usize,
        caps: Caps,
    ) -> bool {
        let own = &mut self.own[direction as usize];
        let drained_at = match caps.allocation {
            0 => None,
            rate => match own.admit(now, bytes, rate) {
                Some(t) => Some(t),
                None => return false,
            },
        };
        if caps.user != 0 && !self.user.admit(direction, now, bytes, caps.user) {
            return false;
        }
        if drained_at.is_some() {
            own.drained_at = drained_at;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Bytes of `size`-byte datagrams, sent every `every`, that `admit`
    /// lets through in `span`.
    fn passed(
        span: Duration,
        every: Duration,
        size: usize,
        mut admit: impl FnMut(Instant) -> bool,
    ) -> usize {
        let start = Instant::now();
        let mut t = Duration::ZERO;
        let mut total = 0;
        while t < span {
            if admit(start + t) {
                total += size;
            }
            t += every;
        }
        total
    }

    /// An allocation's buckets under `cap` alone.
    fn capped(cap: u64) -> (AllocationBandwidth, Caps) {
        let user = Arc::new(UserBandwidth::new(Instant::now()));
        let caps = Caps {
            allocation: cap,
            user: 0,
        };
        (AllocationBandwidth::new(user), caps)
    }

    #[test]
    fn an_allocation_gets_its_rate_and_one_burst() {
        let (mut bandwidth, caps) = capped(10_000);
        // 1,000-byte datagrams at 40,000 B/s for 3 s: 10,000 of burst and
        // 30,000 of rate, give or take one datagram.
        let total = passed(
            Duration::from_secs(3),
            Duration::from_micros(25_000),
            1000,
            |now| bandwidth.admit(Direction::ToPeer, now, 1000, caps),
        );
        assert!((39_000..=41_000).contains(&total), "{total}");
    }

    #[test]
    fn directions_are_capped_apart() {
        let (mut bandwidth, caps) = capped(1000);
        let now = Instant::now();
        assert!(bandwidth.admit(Direction::ToPeer, now, 1000, caps));
        assert!(!bandwidth.admit(Direction::ToPeer, now, 1, caps));
        assert!(bandwidth.admit(Direction::ToClient, now, 1000, caps));
    }

    #[test]
    fn a_user_cap_is_shared_and_a_refusal_takes_nothing_from_the_allocation() {
        let now = Instant::now();
        let user = Arc::new(UserBandwidth::new(now));
        let mut a = AllocationBandwidth::new(Arc::clone(&user));
        let mut b = AllocationBandwidth::new(user);
        let caps = Caps {
            allocation: 1500,
            user: 1000,
        };
        assert!(a.admit(Direction::ToClient, now, 600, caps));
        // The user's bucket has 400 left: b's 600 are refused, and its own
        // bucket keeps its 1,500.
        assert!(!b.admit(Direction::ToClient, now, 600, caps));
        let later = now + Duration::from_secs(1);
        assert!(b.admit(Direction::ToClient, later, 1500, Caps { user: 0, ..caps }));
    }

    #[test]
    fn no_cap_admits_everything() {
        let (mut bandwidth, caps) = capped(0);
        let now = Instant::now();
        for _ in 0..1000 {
            assert!(bandwidth.admit(Direction::ToPeer, now, 65_000, caps));
        }
    }
}
