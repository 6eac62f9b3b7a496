//! Per-shard cache of long-term credential keys, and the requests waiting
//! for a lookup.
//!
//! The core never sees passwords and never waits for a database: the shell
//! fills this cache (static users at start, forever; database users on
//! demand, see [`crate::Event::NeedCredentials`], each for as long as the
//! shell says) and the authentication path only reads it. Keys are the
//! RFC 8489 §9.2.2 long-term keys, pre-keyed as HMAC states so each check
//! costs one HMAC pass.
//!
//! A request naming a user the cache does not know is held (a bounded copy)
//! while the shell looks the user up, then replayed: a client that sent one
//! Allocate gets its answer as soon as the database does, not after its
//! first retransmission (and TCP clients never retransmit).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use turnpike_codec::integrity::{self, Sha1Key, Sha256Key};

use crate::packet::{Packet, Transport};
use crate::rate::PerSourceRate;

/// The long-term keys of one user in one realm. A key may be missing when
/// the user was imported from a store that kept only the other one (coturn
/// keeps one hash per user); requests needing it then fail with 401.
#[derive(Clone, Debug)]
pub struct UserKeys {
    /// HMAC-SHA1 key: MD5(username ":" realm ":" password).
    pub sha1: Option<Sha1Key>,
    /// HMAC-SHA256 key: SHA-256(username ":" realm ":" password).
    pub sha256: Option<Sha256Key>,
}

impl UserKeys {
    /// Keys derived from a password (static users, ephemeral credentials).
    pub fn from_password(username: &str, realm: &str, password: &str) -> Self {
        UserKeys {
            sha1: Some(Sha1Key::new(&integrity::long_term_key_md5(
                username, realm, password,
            ))),
            sha256: Some(Sha256Key::new(&integrity::long_term_key_sha256(
                username, realm, password,
            ))),
        }
    }

    /// Keys from stored key material (a database keeps keys, not passwords).
    pub fn from_keys(md5: Option<&[u8; 16]>, sha256: Option<&[u8; 32]>) -> Self {
        UserKeys {
            sha1: md5.map(|k| Sha1Key::new(k)),
            sha256: sha256.map(|k| Sha256Key::new(k)),
        }
    }
}

/// What the shell found when it looked a user up.
// One per lookup, moved once into the cache: boxing the keys would only add
// an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Lookup {
    /// The user exists with these keys.
    Found(UserKeys),
    /// No such user: requests naming it get 401.
    NotFound,
    /// The store could not be asked (database down, and the user not seen
    /// recently enough to trust older keys): requests get 500.
    Unavailable,
}

/// A user as the authentication path sees it.
#[derive(Debug)]
pub(crate) struct User {
    pub(crate) name: Arc<str>,
    pub(crate) keys: UserKeys,
    /// Unix time after which the credential is refused (ephemeral
    /// credentials only).
    pub(crate) expires: Option<u64>,
}

/// A cache entry's verdict on a username.
#[derive(Debug)]
pub(crate) enum Known {
    User(Arc<User>),
    Absent,
    Unavailable,
}

#[derive(Debug)]
struct Entry {
    known: Known,
    /// `None`: static, never expires.
    valid_until: Option<Instant>,
}

impl Entry {
    fn is_valid(&self, now: Instant) -> bool {
        self.valid_until.is_none_or(|t| now < t)
    }
}

/// Usernames and USERHASHes to keys, each for a limited time unless static.
#[derive(Debug)]
pub(crate) struct KeyCache {
    by_name: FxHashMap<Arc<str>, Entry>,
    by_userhash: FxHashMap<[u8; 32], Arc<str>>,
    capacity: usize,
}

/// Entries per shard: generous for real users (the shell's own cache is the
/// one that spares the database), and a bound for usernames invented by
/// clients that completed a nonce round trip.
const DEFAULT_CAPACITY: usize = 65_536;

impl Default for KeyCache {
    fn default() -> Self {
        KeyCache {
            by_name: FxHashMap::default(),
            by_userhash: FxHashMap::default(),
            capacity: DEFAULT_CAPACITY,
        }
    }
}

impl KeyCache {
    /// Records what is known about `username` until `valid_until` (`None`:
    /// for good).
    pub(crate) fn insert(
        &mut self,
        now: Instant,
        username: &str,
        realm: &str,
        lookup: Lookup,
        valid_until: Option<Instant>,
    ) {
        self.remove(username, realm);
        if self.by_name.len() >= self.capacity {
            self.evict(now);
        }
        let name: Arc<str> = Arc::from(username);
        let known = match lookup {
            Lookup::Found(keys) => {
                self.by_userhash
                    .insert(integrity::userhash(username, realm), Arc::clone(&name));
                Known::User(Arc::new(User {
                    name: Arc::clone(&name),
                    keys,
                    expires: None,
                }))
            }
            Lookup::NotFound => Known::Absent,
            Lookup::Unavailable => Known::Unavailable,
        };
        self.by_name.insert(name, Entry { known, valid_until });
    }

    pub(crate) fn remove(&mut self, username: &str, realm: &str) {
        if self.by_name.remove(username).is_some() {
            self.by_userhash
                .remove(&integrity::userhash(username, realm));
        }
    }

    /// Drops the "unavailable" verdicts (they have no USERHASH entry).
    pub(crate) fn forget_unavailable(&mut self) {
        self.by_name
            .retain(|_, e| !matches!(e.known, Known::Unavailable));
    }

    /// What is known about `username` now; `None` when it must be looked up.
    pub(crate) fn by_name(&self, username: &str, now: Instant) -> Option<&Known> {
        self.by_name
            .get(username)
            .filter(|e| e.is_valid(now))
            .map(|e| &e.known)
    }

    pub(crate) fn by_userhash(&self, hash: &[u8; 32], now: Instant) -> Option<&Arc<User>> {
        let name = self.by_userhash.get(hash)?;
        match self.by_name(name, now)? {
            Known::User(user) => Some(user),
            Known::Absent | Known::Unavailable => None,
        }
    }

    /// Makes room: expired entries go first; if every entry is current, one
    /// expiring entry is dropped (static users never are). Runs only when
    /// the cache is full.
    fn evict(&mut self, now: Instant) {
        self.by_name.retain(|_, e| e.is_valid(now));
        if self.by_name.len() >= self.capacity {
            let victim = self
                .by_name
                .iter()
                .find(|(_, e)| e.valid_until.is_some())
                .map(|(name, _)| Arc::clone(name));
            if let Some(victim) = victim {
                self.by_name.remove(&victim);
            }
        }
        self.by_userhash
            .retain(|_, name| self.by_name.contains_key(name));
    }
}

/// Requests held per shard while their users are looked up.
const MAX_HELD: usize = 256;
/// Largest request held; longer ones are dropped and the client's
/// retransmission is answered once the lookup completes. Real TURN requests
/// are a few hundred bytes.
pub(crate) const MAX_HELD_LEN: usize = 1280;
/// Lookups in flight per shard.
pub(crate) const MAX_LOOKUPS: usize = 64;
/// Requests held per source ([`SourcePrefix`](crate::SourcePrefix) key).
pub(crate) const MAX_HELD_PER_SOURCE: usize = 16;
/// Lookups in flight per source.
pub(crate) const MAX_LOOKUPS_PER_SOURCE: usize = 4;
/// Lookups a source may start per second.
pub(crate) const LOOKUPS_PER_SOURCE_PER_SECOND: u16 = 20;
/// A lookup the shell has not answered by then is forgotten with its
/// requests (the shell answers within its own database timeout).
pub(crate) const LOOKUP_TIMEOUT: Duration = Duration::from_secs(15);

/// A request waiting for its user's keys.
#[derive(Debug)]
pub(crate) struct Held {
    username: Box<str>,
    /// Its source's [`SourcePrefix`](crate::SourcePrefix) key.
    source: IpAddr,
    pub(crate) transport: Transport,
    pub(crate) local: SocketAddr,
    pub(crate) remote: SocketAddr,
    pub(crate) data: Box<[u8]>,
}

/// Lookups in flight and the requests waiting on them.
///
/// A lookup starts before MESSAGE-INTEGRITY can be checked (the keys are
/// what is being looked up), so a source that sends random usernames
/// costs a database query each. Per source, at most
/// [`MAX_LOOKUPS_PER_SOURCE`] lookups are in flight,
/// [`LOOKUPS_PER_SOURCE_PER_SECOND`] start per second and
/// [`MAX_HELD_PER_SOURCE`] requests wait: one source cannot fill the
/// shard's budget ([`MAX_LOOKUPS`], [`MAX_HELD`]) and starve the new users
/// of others.
#[derive(Debug)]
pub(crate) struct Waiting {
    /// When each lookup started, and for which source.
    lookups: FxHashMap<Box<str>, (Instant, IpAddr)>,
    held: Vec<Held>,
    ready: VecDeque<Held>,
    started: PerSourceRate,
}

/// What [`Waiting::hold`] did with a request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Hold {
    /// Held; the user must be looked up (a new lookup).
    Lookup,
    /// Held behind a lookup already in flight.
    Queued,
    /// Not held (full, or too large): the client's retransmission will be.
    Dropped,
}

impl Waiting {
    /// Nothing waiting; the rate table keyed with `rate_key`.
    pub(crate) fn new(rate_key: [u64; 2]) -> Self {
        Waiting {
            lookups: FxHashMap::default(),
            held: Vec::new(),
            ready: VecDeque::new(),
            started: PerSourceRate::new(rate_key),
        }
    }

    /// Holds `packet`, which named `username`, from `source` (its
    /// [`SourcePrefix`](crate::SourcePrefix) key), until the lookup
    /// completes. The request has passed the nonce check, so its source
    /// completed a round trip with us; it is still unauthenticated, hence
    /// the bounds.
    pub(crate) fn hold(
        &mut self,
        now: Instant,
        username: &str,
        packet: &Packet<'_>,
        source: IpAddr,
    ) -> Hold {
        let in_flight = self.lookups.contains_key(username);
        let held_by_source = self.held.iter().filter(|h| h.source == source).count();
        if packet.data.len() > MAX_HELD_LEN
            || self.held.len() >= MAX_HELD
            || held_by_source >= MAX_HELD_PER_SOURCE
        {
            return Hold::Dropped;
        }
        if !in_flight {
            let looked_up_by_source = self.lookups.values().filter(|l| l.1 == source).count();
            if self.lookups.len() >= MAX_LOOKUPS
                || looked_up_by_source >= MAX_LOOKUPS_PER_SOURCE
                || !self
                    .started
                    .allow(source, now, LOOKUPS_PER_SOURCE_PER_SECOND)
            {
                return Hold::Dropped;
            }
        }
        // A retransmission of a request already held adds nothing.
        let duplicate = self.held.iter().any(|h| {
            h.remote == packet.remote && h.local == packet.local && *h.data == *packet.data
        });
        if !duplicate {
            self.held.push(Held {
                username: username.into(),
                source,
                transport: packet.transport,
                local: packet.local,
                remote: packet.remote,
                data: packet.data.into(),
            });
        }
        if in_flight {
            Hold::Queued
        } else {
            self.lookups.insert(username.into(), (now, source));
            Hold::Lookup
        }
    }

    /// The lookup of `username` completed: its requests become ready.
    pub(crate) fn complete(&mut self, username: &str) {
        self.lookups.remove(username);
        let mut i = 0;
        while i < self.held.len() {
            if *self.held[i].username == *username {
                self.ready.push_back(self.held.swap_remove(i));
            } else {
                i += 1;
            }
        }
    }

    pub(crate) fn next_ready(&mut self) -> Option<Held> {
        self.ready.pop_front()
    }

    /// Forgets lookups older than [`LOOKUP_TIMEOUT`] and their requests.
    pub(crate) fn expire(&mut self, now: Instant) {
        self.lookups
            .retain(|_, (started, _)| now.saturating_duration_since(*started) < LOOKUP_TIMEOUT);
        let lookups = &self.lookups;
        self.held.retain(|h| lookups.contains_key(&h.username));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lookups.is_empty() && self.ready.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> UserKeys {
        UserKeys::from_password("u", "r", "p")
    }

    #[test]
    fn entries_expire_and_static_ones_do_not() {
        let now = Instant::now();
        let mut c = KeyCache::default();
        c.insert(now, "static", "r", Lookup::Found(keys()), None);
        c.insert(
            now,
            "db",
            "r",
            Lookup::Found(keys()),
            Some(now + Duration::from_secs(60)),
        );
        c.insert(
            now,
            "gone",
            "r",
            Lookup::NotFound,
            Some(now + Duration::from_secs(5)),
        );
        let later = now + Duration::from_secs(61);
        assert!(matches!(c.by_name("static", later), Some(Known::User(_))));
        assert!(matches!(c.by_name("db", now), Some(Known::User(_))));
        assert!(c.by_name("db", later).is_none());
        assert!(matches!(c.by_name("gone", now), Some(Known::Absent)));
        assert!(c.by_name("gone", later).is_none());
        let hash = integrity::userhash("db", "r");
        assert!(c.by_userhash(&hash, now).is_some());
        assert!(c.by_userhash(&hash, later).is_none());
    }

    #[test]
    fn forgetting_unavailable_verdicts_keeps_the_others() {
        let now = Instant::now();
        let later = Some(now + Duration::from_secs(60));
        let mut c = KeyCache::default();
        c.insert(now, "static", "r", Lookup::Found(keys()), None);
        c.insert(now, "db", "r", Lookup::Found(keys()), later);
        c.insert(now, "gone", "r", Lookup::NotFound, later);
        c.insert(now, "down", "r", Lookup::Unavailable, later);
        assert!(matches!(c.by_name("down", now), Some(Known::Unavailable)));
        c.forget_unavailable();
        assert!(c.by_name("down", now).is_none(), "looked up again");
        assert!(matches!(c.by_name("static", now), Some(Known::User(_))));
        assert!(matches!(c.by_name("db", now), Some(Known::User(_))));
        assert!(matches!(c.by_name("gone", now), Some(Known::Absent)));
        assert!(
            c.by_userhash(&integrity::userhash("db", "r"), now)
                .is_some()
        );
    }

    #[test]
    fn a_full_cache_evicts_but_keeps_static_users() {
        let now = Instant::now();
        let mut c = KeyCache {
            capacity: 3,
            ..KeyCache::default()
        };
        c.insert(now, "static", "r", Lookup::Found(keys()), None);
        let soon = Some(now + Duration::from_secs(60));
        for name in ["a", "b", "c", "d", "e"] {
            c.insert(now, name, "r", Lookup::NotFound, soon);
            assert!(c.by_name.len() <= 3);
        }
        assert!(matches!(c.by_name("static", now), Some(Known::User(_))));
        assert!(matches!(c.by_name("e", now), Some(Known::Absent)));
        assert!(c.by_userhash.len() <= 1);
    }

    #[test]
    fn holding_is_bounded_and_deduplicated() {
        let now = Instant::now();
        let mut w = Waiting::new([1, 2]);
        let addr: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let packet = |data: &'static [u8]| Packet {
            transport: Transport::Udp,
            local: addr,
            remote: addr,
            data,
        };
        let src = addr.ip();
        assert_eq!(w.hold(now, "alice", &packet(b"one"), src), Hold::Lookup);
        assert_eq!(w.hold(now, "alice", &packet(b"one"), src), Hold::Queued);
        assert_eq!(w.hold(now, "alice", &packet(b"two"), src), Hold::Queued);
        assert_eq!(w.held.len(), 2);
        let big = vec![0u8; MAX_HELD_LEN + 1].leak();
        assert_eq!(w.hold(now, "bob", &packet(big), src), Hold::Dropped);
        w.complete("alice");
        assert_eq!(w.next_ready().map(|h| h.data.len()), Some(3));
        assert!(w.next_ready().is_some());
        assert!(w.next_ready().is_none());
        assert!(w.is_empty());

        // The shard's budget, from many sources.
        for i in 0..MAX_LOOKUPS {
            let source = IpAddr::from([10, 0, 0, i as u8]);
            assert_eq!(
                w.hold(now, &format!("u{i}"), &packet(b"x"), source),
                Hold::Lookup
            );
        }
        let fresh = IpAddr::from([10, 0, 1, 1]);
        assert_eq!(
            w.hold(now, "one-too-many", &packet(b"x"), fresh),
            Hold::Dropped
        );
        w.expire(now + LOOKUP_TIMEOUT);
        assert!(w.is_empty() && w.held.is_empty());
    }

    /// One source flooding random usernames gets 4 lookups in flight, 20
    /// started per second and 16 held requests; the shard's other sources
    /// keep theirs.
    #[test]
    fn one_source_cannot_take_the_shards_lookups() {
        let now = Instant::now();
        let mut w = Waiting::new([1, 2]);
        let flooder: SocketAddr = "198.51.100.7:5000".parse().unwrap();
        let packet = |remote: SocketAddr, data: &'static [u8]| Packet {
            transport: Transport::Udp,
            local: "192.0.2.10:3478".parse().unwrap(),
            remote,
            data,
        };
        let source = flooder.ip();
        let outcomes: Vec<Hold> = (0..100)
            .map(|i| w.hold(now, &format!("random{i}"), &packet(flooder, b"x"), source))
            .collect();
        let lookups = outcomes.iter().filter(|h| **h == Hold::Lookup).count();
        assert_eq!(lookups, MAX_LOOKUPS_PER_SOURCE);
        // A legitimate new user from elsewhere is looked up at once.
        let user: SocketAddr = "203.0.113.9:6000".parse().unwrap();
        assert_eq!(
            w.hold(now, "new-user", &packet(user, b"y"), user.ip()),
            Hold::Lookup
        );
        // Completed lookups free the flooder's slots, up to its rate.
        for i in 0..100 {
            w.complete(&format!("random{i}"));
        }
        let mut started = MAX_LOOKUPS_PER_SOURCE;
        for round in 0..10 {
            for i in 0..10 {
                let name = format!("again{round}-{i}");
                if w.hold(now, &name, &packet(flooder, b"x"), source) == Hold::Lookup {
                    started += 1;
                    w.complete(&name);
                }
            }
        }
        assert_eq!(
            started,
            usize::from(LOOKUPS_PER_SOURCE_PER_SECOND),
            "per second"
        );
        let later = now + Duration::from_secs(1);
        assert_eq!(
            w.hold(later, "next-second", &packet(flooder, b"x"), source),
            Hold::Lookup
        );
        // Held requests per source: behind one slow lookup, 16 at most.
        let mut w = Waiting::new([1, 2]);
        let held = (0..40u8)
            .filter(|i| {
                let data: &'static [u8] = vec![*i].leak();
                w.hold(now, "slow", &packet(flooder, data), source) != Hold::Dropped
            })
            .count();
        assert_eq!(held, MAX_HELD_PER_SOURCE);
    }
}
