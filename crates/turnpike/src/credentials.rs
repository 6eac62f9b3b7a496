//! Where credentials come from at run time, between the core's per-shard
//! caches and the database.
//!
//! - Static users (config file) are handed to every shard at its start,
//!   for good, and again on reload (the runtime tells the shards what
//!   changed).
//! - Database users are looked up when a shard meets a username it has no
//!   current keys for ([`turnpike_core::Event::NeedCredentials`]). Answers
//!   go through one cache shared by the workers, so a user is read once per
//!   `cache_ttl` however many shards see it, and the keys last read are what
//!   keeps users authenticating for `grace_period` while the database is
//!   unreachable.
//! - Shared secrets (config file and database) are reloaded every
//!   `secrets_refresh` and published to the shards as one immutable set.
//!   A reload ([`CredentialSource::reconfigure`]) replaces the config
//!   file's users, secrets and cache options; the new set of secrets is
//!   the new file's with the database's as last read.
//!
//! Database calls run on the control runtime, never on a worker thread: a
//! slow database delays the lookups waiting for it, not the packet path.
//!
//! Outages. The first call that fails (a lookup, or the secrets' refresh)
//! marks the database down, logged once. From then on lookups do not ask
//! it (each would wait for a connect or query timeout): they answer from
//! the keys last read (`grace_period`) or "unavailable" (500) at once,
//! while a health probe, on the task that refreshes the secrets, asks the
//! database twice a second, one attempt at a time. The probe's first
//! success marks it up again (logged once) and bumps the *recovery
//! generation*, which every worker watches: each shard then drops the
//! "unavailable" verdicts it holds, so that no worker keeps answering 500
//! after another has reached the database. A verdict reached before a
//! recovery but handed to a shard after it is recognised by its generation
//! and not kept ([`CredentialSource::outdated`]).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use rustc_hash::FxHashMap;
use tokio::runtime::Handle;
use tokio::sync::{Notify, watch};
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
    /// How often the shared secrets are read again.
    pub secrets_refresh: Duration,
}

/// Users whose keys the shared credential cache holds at most.
pub const CACHE_CAPACITY: usize = 100_000;

/// While the database is down, how soon a shard asks again about a user it
/// was told about from the grace cache or told is unavailable: recovery
/// shows within seconds without a lookup per request.
const RETRY_WHILE_DOWN: Duration = Duration::from_secs(2);

/// While the database is down, how long the health probe waits between
/// attempts: recovery shows within about this (plus a connection set-up),
/// and the database sees at most two connection attempts a second from a
/// server however many users knock.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// What a shard is told about a username, and for how long.
#[derive(Debug)]
pub struct Resolved {
    /// The verdict.
    pub lookup: Lookup,
    /// How long the shard may rely on it.
    pub valid_for: Duration,
    /// The recovery generation the verdict was reached in (see the module
    /// docs).
    generation: u64,
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
    /// The config file's: replaced whole on reload.
    static_users: Mutex<Arc<[(String, UserKeys)]>>,
    static_secrets: Mutex<Vec<SharedSecret>>,
    /// The database's secrets as last read.
    stored_secrets: Mutex<Vec<SharedSecret>>,
    /// The newest of them (by creation time, then key index): the one
    /// credentials are minted with when the file has none.
    newest_stored: Mutex<Option<SharedSecret>>,
    store: Store,
    control: Handle,
    options: Mutex<CacheOptions>,
    /// Wakes the secrets' refresh when its interval changed.
    refresh_changed: Notify,
    cache: Mutex<FxHashMap<String, Cached>>,
    /// Since when the database has been unreachable (the last call
    /// failed), if it is: state changes are logged once, not per lookup.
    down: Mutex<Option<SystemTime>>,
    /// Wakes the secrets' task when the database goes down, to start
    /// probing it.
    went_down: Notify,
    /// The recovery generation: bumped each time the database is
    /// reachable again; the workers watch it.
    recovered: watch::Sender<u64>,
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
        CredentialSource {
            realm: realm.to_owned(),
            static_users: Mutex::new(static_users.into()),
            static_secrets: Mutex::new(shared_secrets(static_secrets)),
            stored_secrets: Mutex::default(),
            newest_stored: Mutex::default(),
            store,
            control,
            options: Mutex::new(options),
            refresh_changed: Notify::new(),
            cache: Mutex::new(FxHashMap::default()),
            down: Mutex::new(None),
            went_down: Notify::new(),
            recovered: watch::Sender::new(0),
            counters: Mutex::new(CredentialStats {
                database_up: true,
                ..CredentialStats::default()
            }),
        }
    }

    /// The users every shard knows from its start (the config file's, as
    /// of the last reload).
    pub fn static_users(&self) -> Arc<[(String, UserKeys)]> {
        Arc::clone(
            &self
                .static_users
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Takes a reloaded config file's users (with their keys), secrets and
    /// cache options. Cached answers are kept (each is used for the
    /// lifetime it was given, then read again under the new options). The
    /// shards learn the users from the runtime, the secrets from
    /// [`CredentialSource::secrets_now`].
    pub fn reconfigure(
        &self,
        static_users: Vec<(String, UserKeys)>,
        static_secrets: &[String],
        options: CacheOptions,
    ) {
        *self
            .static_users
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = static_users.into();
        *self
            .static_secrets
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = shared_secrets(static_secrets);
        let before = std::mem::replace(
            &mut *self.options.lock().unwrap_or_else(PoisonError::into_inner),
            options,
        );
        if before.secrets_refresh != options.secrets_refresh {
            self.refresh_changed.notify_one();
        }
    }

    /// The secrets to use now: the config file's, then the database's as
    /// last read (without asking it).
    pub fn secrets_now(&self) -> Secrets {
        let stored = self
            .stored_secrets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        self.with_static_secrets(stored)
    }

    /// The secret to mint new credentials with (the ICE endpoint), as
    /// `turnpike credentials` picks it: the last of the config file's
    /// (`turn.secrets`), else the newest of the database's as last read;
    /// `None` without any.
    pub fn signing_secret(&self) -> Option<SharedSecret> {
        let statics = self
            .static_secrets
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(last) = statics.last() {
            return Some(last.clone());
        }
        drop(statics);
        self.newest_stored
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The config file's secrets, then `stored`.
    fn with_static_secrets(&self, stored: Vec<SharedSecret>) -> Secrets {
        let statics = self
            .static_secrets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Secrets::new(statics.into_iter().chain(stored))
    }

    /// The cache options in force.
    pub fn options(&self) -> CacheOptions {
        *self.options.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The database behind the cache (the fleet's registry uses it too).
    pub fn store(&self) -> &Store {
        &self.store
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
        self.options().grace
    }

    fn count(&self, update: impl FnOnce(&mut CredentialStats)) {
        update(&mut self.counters.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// The recovery generation now, for the workers: a change means the
    /// database is reachable again, and every "unavailable" verdict a shard
    /// holds is to be dropped.
    pub fn recoveries(&self) -> watch::Receiver<u64> {
        self.recovered.subscribe()
    }

    fn generation(&self) -> u64 {
        *self.recovered.borrow()
    }

    fn is_down(&self) -> bool {
        self.down
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Whether `resolved` says "unavailable" from before the database came
    /// back: the shard must not keep it (it was reached, or its call
    /// failed, before a recovery its shard may already have acted on).
    pub fn outdated(&self, resolved: &Resolved) -> bool {
        matches!(resolved.lookup, Lookup::Unavailable) && resolved.generation != self.generation()
    }

    /// What the shards should know about `username` now.
    pub async fn lookup(&self, username: &str) -> Resolved {
        let options = self.options();
        // Before anything else: a recovery from here on makes an
        // "unavailable" verdict outdated.
        let generation = self.generation();
        let now = Instant::now();
        match self.cached(username, now) {
            Some((Some(keys), age)) if age < options.ttl => {
                self.count(|c| c.cache_hits += 1);
                return Resolved {
                    lookup: Lookup::Found(keys),
                    valid_for: options.ttl - age,
                    generation,
                };
            }
            Some((None, age)) if age < options.negative_ttl => {
                self.count(|c| c.cache_hits += 1);
                return Resolved {
                    lookup: Lookup::NotFound,
                    valid_for: options.negative_ttl - age,
                    generation,
                };
            }
            _ => self.count(|c| c.cache_misses += 1),
        }
        if self.is_down() {
            // The probe is what asks the database now.
            return self.while_down(username, now, options, generation);
        }
        let store = self.store.clone();
        let (realm, name) = (self.realm.clone(), username.to_owned());
        let started = Instant::now();
        let mut query = self
            .control
            .spawn(async move { store.user_keys(&realm, &name).await });
        let result = match tokio::time::timeout(options.timeout, &mut query).await {
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
                        valid_for: options.ttl,
                        generation,
                    },
                    None => Resolved {
                        lookup: Lookup::NotFound,
                        valid_for: options.negative_ttl,
                        generation,
                    },
                };
                self.remember(username, keys, now);
                resolved
            }
            Err(err) => {
                // A failure that ends after a recovery (the probe got
                // through while this call was failing) is not a new
                // outage; its verdict is outdated and will not be kept.
                if self.generation() == generation {
                    self.set_down(true, Some(&err));
                }
                self.while_down(username, now, options, generation)
            }
        }
    }

    /// The answer about `username` while the database cannot be asked:
    /// only keys are trusted through an outage (a name unknown before may
    /// have been added since), and only for the grace period.
    fn while_down(
        &self,
        username: &str,
        now: Instant,
        options: CacheOptions,
        generation: u64,
    ) -> Resolved {
        let lookup = match self.cached(username, now) {
            Some((Some(keys), age)) if age < options.grace => Lookup::Found(keys),
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
            generation,
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
            self.options().timeout.as_secs()
        ))
    }

    fn remember(&self, username: &str, keys: Option<UserKeys>, now: Instant) {
        let options = self.options();
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= options.capacity && !cache.contains_key(username) {
            // Entries older than the grace period serve no purpose at all;
            // if every entry is younger, the oldest goes.
            let grace = options.grace.max(options.ttl);
            cache.retain(|_, c| now.saturating_duration_since(c.read_at) < grace);
            if cache.len() >= options.capacity {
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
            Some(err) => {
                tracing::error!(
                    "credential database unreachable: {err}; users seen in the last {} s keep authenticating, others get 500 until it is back",
                    self.options().grace.as_secs()
                );
                self.went_down.notify_one();
            }
            None => {
                tracing::info!("credential database reachable again");
                // Under the state's lock, so that the generation and the
                // state change together for whoever reads both.
                self.recovered.send_modify(|generation| *generation += 1);
            }
        }
    }

    /// The secrets now: the config file's, then the database's (read now,
    /// and remembered for [`CredentialSource::secrets_now`]).
    async fn load_secrets(&self) -> Result<Secrets, StoreError> {
        let read = self.store.secrets(&self.realm).await?;
        let newest = read
            .iter()
            .max_by_key(|s| (s.created_at.unwrap_or(i64::MIN), s.key_index))
            .map(shared_secret);
        let stored: Vec<SharedSecret> = read.iter().map(shared_secret).collect();
        *self
            .newest_stored
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = newest;
        self.stored_secrets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone_from(&stored);
        Ok(self.with_static_secrets(stored))
    }

    /// Reads the secrets once, for the start: an unreachable database at
    /// start is an error the operator must see.
    pub async fn initial_secrets(&self) -> Result<Secrets, StoreError> {
        self.load_secrets().await
    }

    /// Reloads the secrets every `secrets_refresh` (as it is when each
    /// wait starts; a reload that changes it starts a new wait) and
    /// publishes changes, until every receiver is gone. While the database
    /// is unreachable the last set stays in force, and this is the health
    /// probe instead: every [`PROBE_EVERY`], one attempt bounded by
    /// `database.timeout`; the first success marks the database up, and
    /// the secrets are read at once.
    pub async fn refresh_secrets(self: Arc<Self>, publish: watch::Sender<Secrets>) {
        loop {
            if self.is_down() {
                tokio::time::sleep(PROBE_EVERY).await;
                match tokio::time::timeout(self.options().timeout, self.store.ping()).await {
                    Ok(Ok(())) => self.set_down(false, None),
                    // Still down: said once already.
                    Ok(Err(err)) => {
                        tracing::debug!(%err, "credential database probe failed");
                        continue;
                    }
                    Err(_) => {
                        tracing::debug!("credential database probe timed out");
                        continue;
                    }
                }
            } else {
                let every = self.options().secrets_refresh;
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = self.refresh_changed.notified() => continue,
                    // A lookup failed: probe from now on.
                    () = self.went_down.notified() => continue,
                }
            }
            match tokio::time::timeout(self.options().timeout, self.load_secrets()).await {
                Ok(Ok(secrets)) => {
                    self.set_down(false, None);
                    publish_secrets(&publish, secrets);
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

/// Publishes `secrets` to the shards if they differ from the set they
/// have; whether they did.
pub fn publish_secrets(publish: &watch::Sender<Secrets>, secrets: Secrets) -> bool {
    publish.send_if_modified(|current| {
        let changed = *current != secrets;
        if changed {
            tracing::info!(secrets = secrets.len(), "shared secrets updated");
            *current = secrets;
        }
        changed
    })
}

/// A database secret as the shards use it.
fn shared_secret(secret: &turnpike_store::Secret) -> SharedSecret {
    SharedSecret {
        key_index: secret.key_index,
        value: secret.value.as_bytes().into(),
    }
}

/// The config file's secrets (`turn.secrets`), numbered in order (`k=N` of
/// Wire's usernames names the N-th).
fn shared_secrets(secrets: &[String]) -> Vec<SharedSecret> {
    secrets
        .iter()
        .enumerate()
        .map(|(i, s)| SharedSecret {
            key_index: u32::try_from(i).unwrap_or(u32::MAX),
            value: s.as_bytes().into(),
        })
        .collect()
}
