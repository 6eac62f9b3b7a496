//! A [`Relay`] with fixed answers for the admin surfaces' tests: the
//! snapshot, health and allocations they are given, a record of the kicks
//! (which end the matching allocations), a draining flag that the health
//! and the snapshot follow, and a record of the reloads (each answered with
//! the report it is given).

use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};

use crate::observe::{
    AllocationFilter, AllocationInfo, BoxFuture, DrainState, Health, Relay, ReloadReport,
    ReloadResult, Snapshot,
};

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct FakeRelay {
    pub snapshot: Mutex<Snapshot>,
    pub health: Mutex<Health>,
    pub allocations: Mutex<Vec<AllocationInfo>>,
    pub kicks: Mutex<Vec<AllocationFilter>>,
    pub draining: Mutex<bool>,
    /// What a reload answers; `None`: applied, nothing changed.
    pub reload: Mutex<Option<ReloadReport>>,
    /// Reloads asked for.
    pub reloads: Mutex<usize>,
}

fn get<T: Clone>(m: &Mutex<T>) -> T {
    m.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

fn matches(filter: &AllocationFilter, a: &AllocationInfo) -> bool {
    filter.user.as_ref().is_none_or(|u| *u == a.user)
        && filter.id.as_ref().is_none_or(|i| *i == a.id)
}

impl FakeRelay {
    /// Healthy and ready, with these allocations.
    pub fn with(allocations: Vec<AllocationInfo>) -> FakeRelay {
        FakeRelay {
            health: Mutex::new(Health {
                workers: 2,
                workers_silent: 0,
                started: true,
                draining: false,
                database_down: false,
                allocations: 0,
                capacity: None,
            }),
            allocations: Mutex::new(allocations),
            ..FakeRelay::default()
        }
    }

    pub fn set_health(&self, health: Health) {
        *self.health.lock().unwrap() = health;
    }

    pub fn kicks(&self) -> Vec<AllocationFilter> {
        get(&self.kicks)
    }
}

impl Relay for FakeRelay {
    fn snapshot(&self) -> BoxFuture<'_, Snapshot> {
        let mut snapshot = get(&self.snapshot);
        snapshot.draining |= get(&self.draining);
        Box::pin(async move { snapshot })
    }

    fn health(&self) -> BoxFuture<'_, Health> {
        let mut health = get(&self.health);
        health.draining |= get(&self.draining);
        Box::pin(async move { health })
    }

    fn set_draining(&self, on: bool) -> BoxFuture<'_, DrainState> {
        *self.draining.lock().unwrap() = on;
        self.drain_state()
    }

    fn drain_state(&self) -> BoxFuture<'_, DrainState> {
        let state = DrainState {
            draining: get(&self.draining),
            allocations: get(&self.allocations).len() as u64,
            workers_silent: 0,
        };
        Box::pin(async move { state })
    }

    fn allocations(&self, filter: AllocationFilter) -> BoxFuture<'_, Vec<AllocationInfo>> {
        let mut found: Vec<AllocationInfo> = get(&self.allocations)
            .into_iter()
            .filter(|a| matches(&filter, a))
            .collect();
        found.sort_by(|a, b| a.id.cmp(&b.id));
        Box::pin(async move { found })
    }

    fn kick(&self, filter: AllocationFilter) -> BoxFuture<'_, usize> {
        let mut all = self.allocations.lock().unwrap();
        let before = all.len();
        all.retain(|a| !matches(&filter, a));
        let ended = before - all.len();
        self.kicks.lock().unwrap().push(filter);
        Box::pin(async move { ended })
    }

    fn reload(&self) -> BoxFuture<'_, ReloadReport> {
        *self.reloads.lock().unwrap() += 1;
        let report = get(&self.reload).unwrap_or_else(|| ReloadReport {
            result: ReloadResult::Applied,
            error: None,
            warnings: Vec::new(),
            changed: Vec::new(),
            config_sha256: String::new(),
        });
        Box::pin(async move { report })
    }
}

/// An allocation of `user` with id `id` (16 hex digits).
pub(crate) fn allocation(id: u64, user: &str) -> AllocationInfo {
    let client: SocketAddr = ([192, 0, 2, 7], 40_000 + (id % 1000) as u16).into();
    AllocationInfo {
        id: format!("{id:016x}"),
        user: user.to_owned(),
        realm: "example.org".to_owned(),
        client,
        transport: "udp",
        relayed: vec![([203, 0, 113, 1], 50_000 + (id % 1000) as u16).into()],
        relay_kind: "udp",
        created: "2026-01-31T12:00:00Z".to_owned(),
        lifetime_left: 540,
        permissions: vec![[198, 51, 100, 9].into()],
        channels: vec![crate::observe::ChannelInfo {
            number: 0x4000,
            peer: ([198, 51, 100, 9], 9000).into(),
        }],
        to_peer_packets: 10,
        to_peer_bytes: 1000,
        to_client_packets: 20,
        to_client_bytes: 2000,
    }
}
