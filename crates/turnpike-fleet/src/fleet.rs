//! [`Fleet`]: the tokio shell around discovery and probing. Tasks (DNS
//! rounds, registry listings, probe rounds) update one state under a mutex
//! and publish a whole [`Snapshot`] after each change; readers take it
//! lock-free.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use hickory_resolver::TokioResolver;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::dns::{self, DnsTracker, Outage};
use crate::health::{HealthState, Thresholds, Transition};
use crate::registry::{self, Registered, Registry};
use crate::url::check_host_name;
use crate::{
    FleetConfig, MAX_RELAYS, Relay, RelayStatus, Snapshot, Source, parse_relay_url, probe,
};

/// Why [`Fleet::start`] refused a configuration.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("static relay {url:?}: {message}")]
    BadUrl { url: String, message: String },
    #[error("srv_domain {domain:?}: {message}")]
    BadDomain { domain: String, message: String },
    #[error("{0}")]
    Resolver(String),
}

/// The relay fleet. Cheap to clone; the tasks end with [`Fleet::stop`] or
/// when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Fleet {
    shared: Arc<Shared>,
    _guard: Arc<StopOnDrop>,
}

#[derive(Debug)]
struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

#[derive(Debug)]
struct Shared {
    snapshot: ArcSwap<Snapshot>,
    /// Bumped at each publication; [`Fleet::changed`] waits on it.
    version: watch::Sender<u64>,
    /// The configuration in force; the tasks wake when it changes.
    config: watch::Sender<FleetConfig>,
    state: Mutex<State>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    stopped: AtomicBool,
}

type Key = (Source, String);

#[derive(Debug, Default)]
struct State {
    static_relays: Vec<Relay>,
    dns_relays: Vec<Relay>,
    /// The last good listing of the registry: what each row says.
    registered: Vec<Registered>,
    health: HashMap<Key, Tracked>,
    dns: DnsTracker,
    registry: DnsTracker,
    probing: bool,
    /// Relays last left out for [`MAX_RELAYS`], so the warning is logged
    /// when that changes, not every round.
    dropped: usize,
    /// The same for registered relays.
    registered_dropped: usize,
}

#[derive(Debug, Default)]
struct Tracked {
    state: HealthState,
    last_probe: Option<SystemTime>,
}

fn key(relay: &Relay) -> Key {
    (relay.source, relay.name.clone())
}

impl State {
    /// Every relay of every source, in snapshot order.
    fn relays(&self) -> impl Iterator<Item = &Relay> {
        self.static_relays
            .iter()
            .chain(&self.dns_relays)
            .chain(self.registered.iter().map(|r| &r.relay))
    }
}

impl Fleet {
    /// Checks the configuration, publishes the static relays at once, and
    /// spawns the discovery and probe tasks on `runtime`.
    pub fn start(
        config: FleetConfig,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Fleet, FleetError> {
        Fleet::start_with(config, None, runtime)
    }

    /// [`Fleet::start`], listing `registry` as well (every
    /// [`FleetConfig::registry_interval`]).
    pub fn start_with(
        config: FleetConfig,
        registry: Option<Arc<dyn Registry>>,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Fleet, FleetError> {
        for url in &config.static_relays {
            parse_relay_url(url).map_err(|message| FleetError::BadUrl {
                url: url.clone(),
                message,
            })?;
        }
        if let Some(domain) = &config.srv_domain {
            check_host_name(domain.trim_end_matches('.')).map_err(|message| {
                FleetError::BadDomain {
                    domain: domain.clone(),
                    message,
                }
            })?;
            // The resolver is made again in the task; this catches an
            // unreadable resolv.conf here, where it can be reported.
            let _enter = runtime.enter();
            dns::resolver(&config.name_servers, dns_timeout(&config))
                .map_err(FleetError::Resolver)?;
        }
        let state = State {
            static_relays: static_relays(&config.static_relays),
            probing: config.probe_interval.is_some(),
            ..State::default()
        };
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            version: watch::Sender::new(0),
            config: watch::Sender::new(config),
            state: Mutex::new(state),
            tasks: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
        });
        {
            let mut state = shared.lock();
            state.registry.status.enabled = registry.is_some();
            shared.publish(&mut state);
        }
        let mut tasks = vec![
            runtime.spawn(discovery(shared.clone())),
            runtime.spawn(probing(shared.clone())),
        ];
        if let Some(registry) = registry {
            tasks.push(runtime.spawn(listing(shared.clone(), registry)));
        }
        *shared.tasks.lock().unwrap_or_else(|e| e.into_inner()) = tasks;
        Ok(Fleet {
            _guard: Arc::new(StopOnDrop(shared.clone())),
            shared,
        })
    }

    /// The fleet now; lock-free.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot.load_full()
    }

    /// Takes a new configuration (SIGHUP): the static list is replaced at
    /// once, a DNS round and a probe round start at once, and relays still
    /// present keep their health. Bad static URLs are logged and left out
    /// (configuration validation should have refused them already).
    pub fn reconfigure(&self, config: FleetConfig) {
        // The configuration first: a DNS round finishing meanwhile checks it
        // under the state lock, and so cannot bring back a domain replaced.
        self.shared.config.send_replace(config.clone());
        {
            let mut state = self.shared.lock();
            let mut relays = static_relays(&config.static_relays);
            // A relay given by name keeps its addresses until resolved again.
            for relay in relays.iter_mut().filter(|r| r.addresses.is_empty()) {
                if let Some(old) = state.static_relays.iter().find(|o| o.name == relay.name) {
                    relay.addresses = old.addresses.clone();
                }
            }
            state.static_relays = relays;
            if config.srv_domain.is_none() {
                state.dns_relays.clear();
            }
            state.dns.status.enabled = config.srv_domain.is_some();
            state.probing = config.probe_interval.is_some();
            if !state.probing {
                // Health from probes that no longer run would never change.
                state.health.clear();
            }
            self.shared.publish(&mut state);
        }
    }

    /// Resolves when the next snapshot is published (at once if stopped).
    pub async fn changed(&self) {
        let mut rx = self.shared.version.subscribe();
        if self.shared.stopped.load(Ordering::Acquire) {
            return;
        }
        let _ = rx.changed().await;
    }

    /// Whether [`Fleet::stop`] was called (or the last clone dropped).
    pub fn is_stopped(&self) -> bool {
        self.shared.stopped.load(Ordering::Acquire)
    }

    /// Ends the tasks; the last snapshot stays readable.
    pub fn stop(&self) {
        self.shared.stop();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data, still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
        self.version.send_modify(|v| *v += 1);
    }

    /// Drops the health of relays gone, then publishes the whole state.
    fn publish(&self, state: &mut State) {
        // A task's round may finish while stop() aborts it: the snapshot a
        // stopped fleet shows is final.
        if self.stopped.load(Ordering::Acquire) {
            return;
        }
        let present: std::collections::HashSet<Key> = state.relays().map(key).collect();
        state.health.retain(|k, _| present.contains(k));
        let relays: Vec<&Relay> = state.relays().collect();
        let empty = Tracked::default();
        let statuses = relays
            .iter()
            .map(|relay| {
                let t = state.health.get(&key(relay)).unwrap_or(&empty);
                let mut status = RelayStatus {
                    relay: (*relay).clone(),
                    health: t.state.health,
                    draining: t.state.draining,
                    last_probe: t.last_probe,
                    last_error: t.state.last_error.clone(),
                    allocations: t.state.allocations,
                    capacity: t.state.capacity,
                    consecutive_failures: t.state.consecutive_failures,
                    consecutive_successes: t.state.consecutive_successes,
                };
                // A registered relay's own row is the fresher word on its
                // load and drain state (it writes at once when draining
                // starts); a /readyz probe only adds a draining it saw.
                if relay.source == Source::Database
                    && let Some(row) = state.registered.iter().find(|r| r.relay.name == relay.name)
                {
                    status.draining |= row.draining;
                    status.allocations = Some(row.allocations);
                    status.capacity = row.capacity;
                }
                status
            })
            .collect();
        let mut dns = state.dns.status.clone();
        dns.enabled = self.config.borrow().srv_domain.is_some();
        self.snapshot.store(Arc::new(Snapshot {
            relays: statuses,
            dns,
            registry: state.registry.status.clone(),
            probing: state.probing,
        }));
        self.version.send_modify(|v| *v += 1);
    }
}

/// Static URLs grouped by host, in the order first written.
fn static_relays(urls: &[String]) -> Vec<Relay> {
    let mut relays: Vec<Relay> = Vec::new();
    for url in urls {
        let endpoint = match parse_relay_url(url) {
            Ok(e) => e,
            Err(message) => {
                tracing::warn!(url = %url, "static relay left out: {message}");
                continue;
            }
        };
        if let Some(relay) = relays.iter_mut().find(|r| r.name == endpoint.host) {
            if !relay.endpoints.contains(&endpoint) {
                relay.endpoints.push(endpoint);
            }
            continue;
        }
        if relays.len() == MAX_RELAYS {
            tracing::warn!(url = %url, "static relay left out: at most {MAX_RELAYS} relays");
            continue;
        }
        relays.push(Relay {
            name: endpoint.host.clone(),
            source: Source::Static,
            addresses: endpoint.host.parse().into_iter().collect(),
            endpoints: vec![endpoint],
        });
    }
    relays
}

/// One DNS round may take at most this long: the interval, within 0.5-5 s.
fn dns_timeout(config: &FleetConfig) -> Duration {
    config
        .discovery_interval
        .clamp(Duration::from_millis(500), Duration::from_secs(5))
}

/// Shortest pause between rounds, whatever the configuration says: an
/// interval of zero would otherwise query DNS and the relays in a loop.
const MIN_INTERVAL: Duration = Duration::from_millis(50);

/// Sleeps `interval`, or until the configuration changes; `false` when the
/// fleet is gone.
async fn pause(rx: &mut watch::Receiver<FleetConfig>, interval: Option<Duration>) -> bool {
    match interval {
        Some(interval) => tokio::select! {
            () = tokio::time::sleep(interval.max(MIN_INTERVAL)) => true,
            changed = rx.changed() => changed.is_ok(),
        },
        None => rx.changed().await.is_ok(),
    }
}

async fn discovery(shared: Arc<Shared>) {
    let mut rx = shared.config.subscribe();
    let mut resolver: Option<(Vec<std::net::SocketAddr>, Duration, TokioResolver)> = None;
    loop {
        let config = rx.borrow_and_update().clone();
        let named = resolve_static(&shared, dns_timeout(&config)).await;
        let Some(domain) = config.srv_domain.clone() else {
            let interval = named.then_some(config.discovery_interval);
            if !pause(&mut rx, interval).await {
                return;
            }
            continue;
        };
        let timeout = dns_timeout(&config);
        if !matches!(&resolver, Some((ns, t, _)) if *ns == config.name_servers && *t == timeout) {
            match dns::resolver(&config.name_servers, timeout) {
                Ok(r) => resolver = Some((config.name_servers.clone(), timeout, r)),
                Err(e) => tracing::error!("DNS discovery: {e}"),
            }
        }
        if let Some((_, _, r)) = &resolver {
            let previous = shared.lock().dns_relays.clone();
            let result = dns::discover(r, &domain, &previous).await;
            apply_discovery(&shared, &domain, result);
        }
        if !pause(&mut rx, Some(config.discovery_interval)).await {
            return;
        }
    }
}

/// Resolves the static relays given by name (through the system, as their
/// clients will), so that they have addresses to probe and to list; a
/// failed lookup keeps the addresses known. `false` when no static relay
/// is given by name.
async fn resolve_static(shared: &Shared, timeout: Duration) -> bool {
    let names: Vec<(String, u16)> = shared
        .lock()
        .static_relays
        .iter()
        .filter(|r| r.name.parse::<IpAddr>().is_err())
        .map(|r| {
            (
                r.name.clone(),
                r.endpoints.first().map_or(crate::TURN_PORT, |e| e.port),
            )
        })
        .collect();
    if names.is_empty() {
        return false;
    }
    let mut lookups = JoinSet::new();
    for (name, port) in names {
        lookups.spawn(async move {
            let result =
                tokio::time::timeout(timeout, tokio::net::lookup_host((name.clone(), port))).await;
            let addresses = match result {
                Ok(Ok(found)) => {
                    let mut ips: Vec<IpAddr> = Vec::new();
                    for ip in found.map(|a| a.ip()) {
                        if !ips.contains(&ip) {
                            ips.push(ip);
                        }
                    }
                    ips.sort_by_key(IpAddr::is_ipv6);
                    ips.truncate(crate::MAX_ADDRESSES);
                    Some(ips)
                }
                Ok(Err(e)) => {
                    tracing::debug!(relay = %name, "cannot resolve a static relay: {e}");
                    None
                }
                Err(_) => None,
            };
            (name, addresses)
        });
    }
    let mut found = HashMap::new();
    while let Some(joined) = lookups.join_next().await {
        if let Ok((name, Some(addresses))) = joined {
            found.insert(name, addresses);
        }
    }
    let mut state = shared.lock();
    let mut changed = false;
    for relay in &mut state.static_relays {
        if let Some(addresses) = found.remove(&relay.name)
            && addresses != relay.addresses
        {
            relay.addresses = addresses;
            changed = true;
        }
    }
    if changed {
        shared.publish(&mut state);
    }
    true
}

fn apply_discovery(shared: &Shared, domain: &str, result: Result<dns::Discovered, String>) {
    let now = SystemTime::now();
    let mut state = shared.lock();
    // A round for a domain replaced meanwhile is stale.
    if shared.config.borrow().srv_domain.as_deref() != Some(domain) {
        return;
    }
    match result {
        Ok(found) => {
            if let Some(Outage::Ended { lasted }) = state.dns.success(now) {
                tracing::info!(
                    domain,
                    "DNS discovery works again after {} s",
                    lasted.as_secs()
                );
            }
            for failure in &found.partial_failures {
                tracing::debug!(
                    domain,
                    "SRV lookup failed, its last records kept: {failure}"
                );
            }
            let room = MAX_RELAYS.saturating_sub(state.static_relays.len());
            let mut relays = found.relays;
            let dropped = found.dropped + relays.len().saturating_sub(room);
            relays.truncate(room);
            if dropped != state.dropped {
                if dropped > 0 {
                    tracing::warn!(
                        domain,
                        "{dropped} SRV targets left out: at most {MAX_RELAYS} relays"
                    );
                }
                state.dropped = dropped;
            }
            state.dns_relays = relays;
        }
        Err(e) => {
            if state.dns.failure(now) == Some(Outage::Started) {
                tracing::warn!(
                    domain,
                    "DNS discovery failing, keeping the last good relays: {e}"
                );
            }
        }
    }
    shared.publish(&mut state);
}

/// Lists the registry every [`FleetConfig::registry_interval`]. A failed
/// listing keeps the last good relays (rows expire in the database, not
/// here: an outage of the database is not an outage of the relays), with
/// one log line when the failures start and one when they end.
async fn listing(shared: Arc<Shared>, registry: Arc<dyn Registry>) {
    let mut rx = shared.config.subscribe();
    loop {
        let interval = rx.borrow_and_update().registry_interval;
        let result = registry.list().await;
        apply_listing(&shared, result);
        if !pause(&mut rx, Some(interval)).await {
            return;
        }
    }
}

fn apply_listing(shared: &Shared, result: Result<Vec<Registered>, String>) {
    let now = SystemTime::now();
    let mut state = shared.lock();
    match result {
        Ok(rows) => {
            if let Some(Outage::Ended { lasted }) = state.registry.success(now) {
                tracing::info!(
                    "registered relays listed again after {} s",
                    lasted.as_secs()
                );
            }
            let taken = state.static_relays.len() + state.dns_relays.len();
            let (rows, dropped) = registry::select(rows, taken);
            if dropped != state.registered_dropped {
                if dropped > 0 {
                    tracing::warn!(
                        "{dropped} registered relays left out (the fullest): at most {MAX_RELAYS} relays"
                    );
                }
                state.registered_dropped = dropped;
            }
            state.registered = rows;
        }
        Err(e) => {
            if state.registry.failure(now) == Some(Outage::Started) {
                tracing::warn!("cannot list registered relays, keeping the last listed: {e}");
            }
        }
    }
    shared.publish(&mut state);
}

async fn probing(shared: Arc<Shared>) {
    let mut rx = shared.config.subscribe();
    loop {
        let config = rx.borrow_and_update().clone();
        let Some(interval) = config.probe_interval else {
            if !pause(&mut rx, None).await {
                return;
            }
            continue;
        };
        let relays: Vec<Relay> = shared.lock().relays().cloned().collect();
        let mut probes = JoinSet::new();
        for relay in relays {
            let (admin_port, timeout) = (config.admin_port, config.probe_timeout);
            probes.spawn(async move {
                let outcome = probe::probe(&relay, admin_port, timeout).await;
                (relay, outcome)
            });
        }
        let mut results = Vec::new();
        while let Some(joined) = probes.join_next().await {
            if let Ok(result) = joined {
                results.push(result);
            }
        }
        let thresholds = Thresholds {
            unhealthy_after: config.unhealthy_after,
            healthy_after: config.healthy_after,
        };
        {
            let (now, wall) = (Instant::now(), SystemTime::now());
            let mut state = shared.lock();
            if state.probing {
                for (relay, outcome) in results {
                    let present = state.relays().any(|r| key(r) == key(&relay));
                    if !present {
                        continue;
                    }
                    let tracked = state.health.entry(key(&relay)).or_default();
                    tracked.last_probe = Some(wall);
                    for transition in tracked.state.observe(outcome, now, thresholds) {
                        log_transition(&relay.name, transition);
                    }
                }
                shared.publish(&mut state);
            }
        }
        if !pause(&mut rx, Some(interval)).await {
            return;
        }
    }
}

fn log_transition(relay: &str, transition: Transition) {
    match transition {
        Transition::BecameUnhealthy { reason } => {
            tracing::warn!(relay, "relay unhealthy, left out: {reason}")
        }
        Transition::BecameHealthy { down_for: Some(d) } => {
            tracing::info!(relay, "relay healthy again after {} s", d.as_secs());
        }
        Transition::BecameHealthy { down_for: None } => tracing::info!(relay, "relay healthy"),
        Transition::DrainingStarted => tracing::info!(relay, "relay draining, left out"),
        Transition::DrainingEnded => tracing::info!(relay, "relay no longer draining"),
    }
}
