//! Per-source rates in constant memory: how many times a source did
//! something in the current second (challenges answered, credential lookups
//! started, handshakes). A fixed table of buckets indexed by a keyed hash
//! (SipHash-1-3) of the source, so memory stays constant however many
//! (spoofed) sources there are; colliding sources share a bucket, which
//! errs on the strict side, and without the key nobody can choose to
//! collide with someone else's. The key is given, so a shard seeded for a
//! test behaves the same in every run.

use std::hash::{Hash, Hasher};
use std::time::Instant;

use siphasher::sip::SipHasher13;

const BUCKETS: usize = 4096;

/// Counts events per source and second.
#[derive(Debug)]
pub struct PerSourceRate {
    buckets: Box<[(u64, u16)]>,
    key: [u64; 2],
    origin: Option<Instant>,
}

impl PerSourceRate {
    /// An empty table whose buckets are chosen by SipHash keyed with `key`
    /// (random in production).
    pub fn new(key: [u64; 2]) -> Self {
        PerSourceRate {
            buckets: vec![(0, 0); BUCKETS].into_boxed_slice(),
            key,
            origin: None,
        }
    }

    /// Counts one event of `source` (a [`SourcePrefix`](crate::SourcePrefix)
    /// key, or any other caller identity) at `now`, unless it already had `per_second` this second.
    pub fn allow(&mut self, source: impl Hash, now: Instant, per_second: u16) -> bool {
        let origin = *self.origin.get_or_insert(now);
        let second = now.saturating_duration_since(origin).as_secs() + 1;
        let mut hasher = SipHasher13::new_with_keys(self.key[0], self.key[1]);
        source.hash(&mut hasher);
        // The modulo keeps the index in range whatever the hash.
        let bucket = (hasher.finish() % BUCKETS as u64) as usize;
        let entry = &mut self.buckets[bucket];
        if entry.0 != second {
            *entry = (second, 0);
        }
        if entry.1 >= per_second {
            return false;
        }
        entry.1 += 1;
        true
    }
}
