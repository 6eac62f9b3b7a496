//! Per-source rates in constant memory: how many times a source did
//! something in the current second (challenges answered, credential lookups
//! started). A fixed table of buckets indexed by a keyed hash of the source,
//! so memory stays constant however many (spoofed) sources there are;
//! colliding sources share a bucket, which errs on the strict side.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::Instant;

const BUCKETS: usize = 4096;

/// Counts events per source and second.
#[derive(Debug)]
pub struct PerSourceRate {
    buckets: Box<[(u64, u16)]>,
    hasher: std::hash::RandomState,
    origin: Option<Instant>,
}

impl Default for PerSourceRate {
    fn default() -> Self {
        PerSourceRate {
            buckets: vec![(0, 0); BUCKETS].into_boxed_slice(),
            hasher: std::hash::RandomState::new(),
            origin: None,
        }
    }
}

impl PerSourceRate {
    /// Counts one event of `source` (a [`SourcePrefix`](crate::SourcePrefix)
    /// key) at `now`, unless it already had `per_second` this second.
    pub fn allow(&mut self, source: IpAddr, now: Instant, per_second: u16) -> bool {
        let origin = *self.origin.get_or_insert(now);
        let second = now.saturating_duration_since(origin).as_secs() + 1;
        // The modulo keeps the index in range whatever the hash.
        let bucket = (self.hasher.hash_one(source) % BUCKETS as u64) as usize;
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
