//! Where credentials come from at run time, between the core's per-shard
//! caches and the database.
//!
//! - Static users (config file) are handed to every shard once, for good.
//! - Database users are looked up when a shard meets a username it has no
//!   current keys for ([`turnpike_core::Event::NeedCredentials`]). Answers
//!   go through one cache shared by the workers, so a user is read once per
//!   `cache_ttl` however many shards see it, and the keys last read are what
//!   keeps users authenticating for `grace_period` while the database is
//!   unreachable.
//! - Shared secrets (config file and database) are reloaded every
//!   `secrets_refresh` and published to the shards as one immutable set.
//!
//! Database calls run on the control runtime, never on a worker thread: a
//! slow database delays the lookups waiting for it, not the packet path.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use rustc_hash::FxHashMap;
use tokio::runtime::Handle;
use tokio::sync::watch;
use turnpike_core::{Lookup, Secrets, SharedSecret, UserKeys};
use turnpike_store::{Store, StoreError};

use crate::observe::CredentialStats;

/// How long answers are trusted; see `[database]` in the example config.
#[derive(Clone, Copy, Debug)]
pub struct CacheOptions {
    /// A user's keys, once read, are used this long.
    pub ttl: Duration,
    /// An unknown username is remembered this long.
    pub negative_ttl: Duration,
    /// Keys read within this time are used while the database is down.
    pub grace: Duration,
    /// A lookup taking longer means the database is unreachable.
    pub timeout: Duration,
    /// Users remembered at most (beyond it, the oldest reads are dropped).
    pub capacity: usize,
}

/// While the database is down, how soon a shard asks again about a user it
/// was told about from the grace cache or told is unavailable: recovery
/// shows within seconds without a lookup per request.
const RETRY_WHILE_DOWN: Duration = Duration::from_secs(2);

/// What a shard is told about a username, and for how long.
#[derive(Debug)]
pub struct Resolved {
    /// The verdict.
    pub lookup: Lookup,
    /// How long the shard may rely on it.
    pub valid_for: Duration,
}

#[derive(Debug)]
struct Cached {
    keys: Option<UserKeys>,
    read_at: Instant,
}

/// The credential sources of one server.
#[derive(Debug)]
pub struct CredentialSource {
    realm: String,
    static_users: Vec<(String, UserKeys)>,
    static_secrets: Vec<SharedSecret>,
    store: Store,
    control: Handle,
    options: CacheOptions,
    cache: Mutex<FxHashMap<String, Cached>>,
    /// Since when the database has been unreachable (the last call
    /// failed), if it is: state changes are logged once, not per lookup.
    down: Mutex<Option<SystemTime>>,
    /// Cache hits, misses and database latencies, for the metrics:
    /// touched per lookup (a new user per `cache_ttl`), never per packet.
    counters: Mutex<CredentialStats>,
}

impl CredentialSource {
    /// Credentials for `realm` from the config file's users and secrets and
    /// from `store`, whose calls run on `control`.
    pub fn new(
        realm: &str,
        static_users: Vec<(String, UserKeys)>,
        static_secrets: &[String],
        store: Store,
        control: Handle,
        options: CacheOptions,
    ) -> Self {
        let static_secrets = static_secrets
            .iter()
            .enumerate()
            .map(|(i, s)| SharedSecret {
                key_index: u32::try_from(i).unwrap_or(u32::MAX),
                value: s.as_bytes().into(),
            })
            .collect();
        CredentialSource {
            realm: realm.to_owned(),
            static_users,
            static_secrets,
            store,
            control,
            options,
            cache: Mutex::new(FxHashMap::default()),
            down: Mutex::new(None),
            counters: Mutex::new(CredentialStats {
                database_up: true,
                ..CredentialStats::default()
            }),
        }
    }

    /// The users every shard knows from the start.
    pub fn static_users(&self) -> &[(String, UserKeys)] {
        &self.static_users
    }

    /// Cache and database figures for the metrics and `/readyz`.
    pub fn stats(&self) -> CredentialStats {
        let mut stats = *self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        let down_since = *self.down.lock().unwrap_or_else(PoisonError::into_inner);
        stats.database_up = down_since.is_none();
        stats.down_since = down_since;
        stats
    }

    /// How long a database outage may last before new users cannot be
    /// served: the grace period of the keys already read.
    pub fn grace(&self) -> Duration {
        self.options.grace
    }

    fn count(&self, update: impl FnOnce(&mut CredentialStats)) {
        update(&mut self.counters.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// What the shards should know about `username` now.
    pub async fn lookup(&self, username: &str) -> Resolved {
        let now = Instant::now();
        match self.cached(username, now) {
            Some((Some(keys), age)) if age < self.options.ttl => {
                self.count(|c| c.cache_hits += 1);
                return Resolved {
                    lookup: Lookup::Found(keys),
                    valid_for: self.options.ttl - age,
                };
            }
            Some((None, age)) if age < self.options.negative_ttl => {
                self.count(|c| c.cache_hits += 1);
                return Resolved {
                    lookup: Lookup::NotFound,
                    valid_for: self.options.negative_ttl - age,
                };
            }
            _ => self.count(|c| c.cache_misses += 1),
        }
        let store = self.store.clone();
        let (realm, name) = (self.realm.clone(), username.to_owned());
        let started = Instant::now();
        let mut query = self
            .control
            .spawn(async move { store.user_keys(&realm, &name).await });
        let result = match tokio::time::timeout(self.options.timeout, &mut query).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(StoreError::Unavailable(format!(
                "lookup task failed: {join}"
            ))),
            Err(_) => {
                // Nobody waits for it any more: stop it, so slow lookups
                // cannot pile up behind the ones still wanted (PostgreSQL
                // also cancels the statement itself, see turnpike-store).
                query.abort();
                Err(self.timed_out())
            }
        };
        let now = Instant::now();
        let took = now.saturating_duration_since(started);
        self.count(|c| c.lookup_seconds.record(took));
        match result {
            Ok(found) => {
                self.set_down(false, None);
                tracing::debug!(username, found = found.is_some(), "credential lookup");
                let keys = found.map(|k| UserKeys::from_keys(k.md5.as_ref(), k.sha256.as_ref()));
                let resolved = match &keys {
                    Some(keys) => Resolved {
                        lookup: Lookup::Found(keys.clone()),
                        valid_for: self.options.ttl,
                    },
                    None => Resolved {
                        lookup: Lookup::NotFound,
                        valid_for: self.options.negative_ttl,
                    },
                };
                self.remember(username, keys, now);
                resolved
            }
            Err(err) => {
                self.set_down(true, Some(&err));
                // Only keys are trusted through an outage: a name unknown
                // before may have been added since.
                let lookup = match self.cached(username, now) {
                    Some((Some(keys), age)) if age < self.options.grace => Lookup::Found(keys),
                    _ => Lookup::Unavailable,
                };
                tracing::debug!(
                    username,
                    from_cache = matches!(lookup, Lookup::Found(_)),
                    "credential lookup while the database is unreachable"
                );
                Resolved {
                    lookup,
                    valid_for: RETRY_WHILE_DOWN,
                }
            }
        }
    }

    /// The last answer about `username` and how old it is.
    fn cached(&self, username: &str, now: Instant) -> Option<(Option<UserKeys>, Duration)> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = cache.get(username)?;
        Some((
            entry.keys.clone(),
            now.saturating_duration_since(entry.read_at),
        ))
    }

    fn timed_out(&self) -> StoreError {
        StoreError::Unavailable(format!(
            "no answer within {} s",
            self.options.timeout.as_secs()
        ))
    }

    fn remember(&self, username: &str, keys: Option<UserKeys>, now: Instant) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= self.options.capacity && !cache.contains_key(username) {
            // Entries older than the grace period serve no purpose at all;
            // if every entry is younger, the oldest goes.
            let grace = self.options.grace.max(self.options.ttl);
            cache.retain(|_, c| now.saturating_duration_since(c.read_at) < grace);
            if cache.len() >= self.options.capacity {
                let oldest = cache
                    .iter()
                    .min_by_key(|(_, c)| c.read_at)
                    .map(|(name, _)| name.clone());
                if let Some(oldest) = oldest {
                    cache.remove(&oldest);
                }
            }
        }
        cache.insert(username.to_owned(), Cached { keys, read_at: now });
    }

    fn set_down(&self, down: bool, err: Option<&StoreError>) {
        let mut state = self.down.lock().unwrap_or_else(PoisonError::into_inner);
        if state.is_some() == down {
            return;
        }
        *state = down.then(SystemTime::now);
        match err {
            Some(err) => tracing::error!(
                "credential database unreachable: {err}; users seen in the last {} s keep authenticating, others get 500 until it is back",
                self.options.grace.as_secs()
            ),
            None => tracing::info!("credential database reachable again"),
        }
    }

    /// The secrets now: the config file's, then the database's.
    async fn load_secrets(&self) -> Result<Secrets, StoreError> {
        let stored = self.store.secrets(&self.realm).await?;
        let all = self
            .static_secrets
            .iter()
            .cloned()
            .chain(stored.into_iter().map(|s| SharedSecret {
                key_index: s.key_index,
                value: s.value.into_bytes().into_boxed_slice(),
            }));
        Ok(Secrets::new(all))
    }

    /// Reads the secrets once, for the start: an unreachable database at
    /// start is an error the operator must see.
    pub async fn initial_secrets(&self) -> Result<Secrets, StoreError> {
        self.load_secrets().await
    }

    /// Reloads the secrets every `every` and publishes changes, until every
    /// receiver is gone. While the database is unreachable the last set
    /// stays in force.
    pub async fn refresh_secrets(
        self: Arc<Self>,
        publish: watch::Sender<Secrets>,
        every: Duration,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            match tokio::time::timeout(self.options.timeout, self.load_secrets()).await {
                Ok(Ok(secrets)) => {
                    self.set_down(false, None);
                    publish.send_if_modified(|current| {
                        let changed = *current != secrets;
                        if changed {
                            tracing::info!(secrets = secrets.len(), "shared secrets updated");
                            *current = secrets;
                        }
                        changed
                    });
                    if publish.is_closed() {
                        return;
                    }
                }
                Ok(Err(err)) => self.set_down(true, Some(&err)),
                Err(_) => self.set_down(true, Some(&self.timed_out())),
            }
        }
    }
}
