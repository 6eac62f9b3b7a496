//! The third source of relays, beside static URLs and DNS SRV: relays that
//! register themselves in a shared database (`fleet.register`), listed
//! through a [`Registry`] every [`FleetConfig::registry_interval`].
//!
//! The fleet does not know the database: the binary implements
//! [`Registry`] over its store, and tests over a plain list. A row carries
//! what a `/readyz` probe would report (allocations, capacity, draining),
//! written by the relay itself when it changes, so a registered relay's
//! room and drain state are known without waiting for a probe; probes still
//! decide whether it is alive.
//!
//! [`FleetConfig::registry_interval`]: crate::FleetConfig::registry_interval

use std::cmp::Reverse;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use crate::{MAX_RELAYS, Relay};

/// A relay as its heartbeat row describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// Its name, endpoints and addresses ([`crate::Source::Database`]).
    pub relay: Relay,
    /// Allocations it holds.
    pub allocations: u64,
    /// Allocations it takes at most; `None`: no limit.
    pub capacity: Option<u64>,
    /// Whether it refuses new allocations.
    pub draining: bool,
}

impl Registered {
    /// Allocations it has room for; `u64::MAX` without a limit.
    fn spare(&self) -> u64 {
        self.capacity
            .map_or(u64::MAX, |c| c.saturating_sub(self.allocations))
    }
}

/// The boxed future of [`Registry::list`].
pub type ListFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<Registered>, String>> + Send + 'a>>;

/// Where registered relays are listed from: the rows seen within the
/// registry's expiry, or why they could not be read (one line).
pub trait Registry: Send + Sync + fmt::Debug + 'static {
    fn list(&self) -> ListFuture<'_>;
}

/// The relays of one listing, at most [`MAX_RELAYS`] less `taken` (by the
/// other sources): those with the most room first when some must be left
/// out, then sorted by name; and how many were left out.
pub(crate) fn select(mut rows: Vec<Registered>, taken: usize) -> (Vec<Registered>, usize) {
    let room = MAX_RELAYS.saturating_sub(taken);
    let dropped = rows.len().saturating_sub(room);
    if dropped > 0 {
        rows.sort_by_key(|r| (r.draining, Reverse(r.spare())));
        rows.truncate(room);
    }
    rows.sort_by(|a, b| a.relay.name.cmp(&b.relay.name));
    (rows, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Source;

    fn row(name: &str, allocations: u64, capacity: Option<u64>, draining: bool) -> Registered {
        Registered {
            relay: Relay {
                name: name.into(),
                source: Source::Database,
                endpoints: vec![],
                addresses: vec![],
            },
            allocations,
            capacity,
            draining,
        }
    }

    #[test]
    fn beyond_the_cap_the_relays_with_most_room_stay() {
        let mut rows: Vec<Registered> = (0..MAX_RELAYS as u64 + 2)
            .map(|i| row(&format!("r{i:03}"), i, Some(1000), false))
            .collect();
        rows.push(row("unlimited", 5000, None, false));
        rows.push(row("draining", 0, Some(1000), true));
        let (kept, dropped) = select(rows, 0);
        assert_eq!(dropped, 4);
        assert_eq!(kept.len(), MAX_RELAYS);
        let names: Vec<&str> = kept.iter().map(|r| r.relay.name.as_str()).collect();
        // The fullest and the draining are left out; sorted by name.
        assert!(names.contains(&"unlimited") && names.contains(&"r000"));
        assert!(!names.contains(&"draining"));
        assert!(!names.contains(&"r257") && !names.contains(&"r256"));
        assert!(names.windows(2).all(|w| w[0] < w[1]));
        // Static and DNS relays take their share of the cap first.
        let (kept, dropped) = select(
            vec![row("b", 0, None, false), row("a", 0, None, false)],
            MAX_RELAYS - 1,
        );
        assert_eq!((kept.len(), dropped), (1, 1));
        let (kept, dropped) = select(vec![row("b", 0, None, false), row("a", 0, None, false)], 0);
        assert_eq!(dropped, 0);
        assert_eq!(kept[0].relay.name, "a");
    }
}
