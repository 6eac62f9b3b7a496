//! Allocations (RFC 8656 §5), their permissions (§9) and channel bindings
//! (§12), and the per-shard table that finds them by 5-tuple and by relayed
//! address.
//!
//! Permissions and channels live in small vectors inside their allocation:
//! a WebRTC allocation has a handful, a linear scan of a few entries beats
//! hashing, and the per-allocation bounds cap what one client can make us
//! store. Expired entries are ignored on lookup and removed by the sweep.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use turnpike_codec::TransactionId;

use crate::bandwidth::{AllocationBandwidth, UserBandwidth};
use crate::credentials::User;
use crate::ids::{AllocationId, ConnectionId, PeerSocket, RelayedAddress};
use crate::output::ChannelRoute;
use crate::packet::{FiveTuple, Transport};
use crate::relay::RelayProtocol;
use crate::stats::Traffic;

/// How long a channel number and its peer stay reserved after the binding
/// expires (RFC 8656 §12: no rebinding to something else for 5 minutes).
pub const CHANNEL_COOLDOWN: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, Debug)]
pub(crate) struct Permission {
    pub(crate) ip: IpAddr,
    pub(crate) expires: Instant,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Channel {
    pub(crate) number: u16,
    pub(crate) peer: SocketAddr,
    pub(crate) expires: Instant,
}

/// Why a channel could not be bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BindError {
    /// The number is bound to another peer, or the peer to another number.
    Conflict,
    /// The allocation has as many channels as it may.
    Full,
}

/// One allocation.
#[derive(Debug)]
pub(crate) struct Allocation {
    pub(crate) five_tuple: FiveTuple,
    pub(crate) user: Arc<User>,
    /// The name its quota is counted under ([`quota_name`]), as taken at
    /// its creation, so that it is given back under that name whatever
    /// a reload does to the separator.
    pub(crate) quota: Arc<str>,
    /// Relayed addresses as bound (index 0 IPv4, 1 IPv6).
    pub(crate) relays: [Option<SocketAddr>; 2],
    /// UDP relays datagrams; TCP (RFC 6062) relays peer connections.
    pub(crate) protocol: RelayProtocol,
    /// Datagrams to peers carry the Don't Fragment bit (DONT-FRAGMENT).
    pub(crate) dont_fragment: bool,
    /// Peer connections of a TCP allocation, whatever their state.
    pub(crate) connections: Vec<ConnectionId>,
    pub(crate) expires: Instant,
    pub(crate) permissions: Vec<Permission>,
    pub(crate) channels: Vec<Channel>,
    /// The Allocate that created it, so a retransmission gets the same answer
    /// instead of 437 (RFC 8656 §7.2).
    pub(crate) created_by: TransactionId,
    /// Its identity for operators: unique for the life of the process
    /// (slot numbers are reused, serials are not).
    pub(crate) serial: u64,
    pub(crate) created: Instant,
    /// Data relayed through the core (a fast path counts its own).
    pub(crate) traffic: Traffic,
    /// Its bandwidth buckets and its user's.
    pub(crate) bandwidth: AllocationBandwidth,
}

pub(crate) const fn family_index(ip: IpAddr) -> usize {
    match ip {
        IpAddr::V4(_) => 0,
        IpAddr::V6(_) => 1,
    }
}

impl Allocation {
    /// The relayed address of `peer`'s family, if the allocation has one.
    pub(crate) fn relay_for(&self, peer: IpAddr) -> Option<SocketAddr> {
        self.relays[family_index(peer)]
    }

    pub(crate) fn has_permission(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions
            .iter()
            .any(|p| p.ip == ip && p.expires > now)
    }

    /// Installs or refreshes a permission. `false` if the table is full.
    pub(crate) fn permit(
        &mut self,
        ip: IpAddr,
        expires: Instant,
        now: Instant,
        max: usize,
    ) -> bool {
        if let Some(p) = self.permissions.iter_mut().find(|p| p.ip == ip) {
            p.expires = expires;
            return true;
        }
        self.permissions.retain(|p| p.expires > now);
        if self.permissions.len() >= max {
            return false;
        }
        self.permissions.push(Permission { ip, expires });
        true
    }

    /// Whether [`permit`](Self::permit) would install or refresh `ip`'s
    /// permission at `now`.
    pub(crate) fn can_permit(&self, ip: IpAddr, now: Instant, max: usize) -> bool {
        self.permissions.iter().any(|p| p.ip == ip)
            || self.permissions.iter().filter(|p| p.expires > now).count() < max
    }

    /// Installs or refreshes a permission for each of `ips`, or, if the
    /// table has no room for the new ones, changes nothing and returns
    /// `false`: a CreatePermission succeeds whole or not at all (RFC 8656
    /// §9.2 answers 508 instead of installing).
    pub(crate) fn permit_all(
        &mut self,
        ips: &[IpAddr],
        expires: Instant,
        now: Instant,
        max: usize,
    ) -> bool {
        // Expired entries are dead already; dropping them first makes
        // "new" mean "not in the table".
        self.permissions.retain(|p| p.expires > now);
        let new = ips
            .iter()
            .enumerate()
            .filter(|&(i, ip)| {
                !ips[..i].contains(ip) && !self.permissions.iter().any(|p| p.ip == *ip)
            })
            .count();
        if self.permissions.len() + new > max {
            return false;
        }
        for &ip in ips {
            // Cannot fail: there is room for every new one.
            self.permit(ip, expires, now, max);
        }
        true
    }

    /// The peer of a live channel.
    pub(crate) fn channel_peer(&self, number: u16, now: Instant) -> Option<SocketAddr> {
        self.channels
            .iter()
            .find(|c| c.number == number && c.expires > now)
            .map(|c| c.peer)
    }

    /// The live channel bound to `peer`.
    pub(crate) fn channel_for_peer(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        self.channels
            .iter()
            .find(|c| c.peer == peer && c.expires > now)
            .map(|c| c.number)
    }

    /// Binds or refreshes a channel, enforcing RFC 8656 §12's rules: a number
    /// stays with its peer and a peer with its number, including for
    /// [`CHANNEL_COOLDOWN`] after expiry.
    /// Binds `number` to `peer` (or refreshes the binding). Channels past
    /// their cool-down are dropped first and go to `dropped`, whose fast-path
    /// routes must be withdrawn as the sweep's are.
    pub(crate) fn bind_channel(
        &mut self,
        number: u16,
        peer: SocketAddr,
        (expires, now): (Instant, Instant),
        max: usize,
        dropped: &mut Vec<Channel>,
    ) -> Result<(), BindError> {
        self.drop_cooled_channels(now, dropped);
        for c in &mut self.channels {
            match (c.number == number, c.peer == peer) {
                (true, true) => {
                    c.expires = expires;
                    return Ok(());
                }
                (true, false) | (false, true) => return Err(BindError::Conflict),
                (false, false) => {}
            }
        }
        if self.channels.len() >= max {
            return Err(BindError::Full);
        }
        self.channels.push(Channel {
            number,
            peer,
            expires,
        });
        Ok(())
    }

    /// Withdraws the permissions of the IPs `refused_ip` names and the
    /// live channels to the peers `refused_peer` names, as if they had
    /// expired at `now` (a channel's number stays reserved for its
    /// cool-down). The channels withdrawn go to `withdrawn`.
    pub(crate) fn withdraw(
        &mut self,
        now: Instant,
        refused_ip: impl Fn(IpAddr) -> bool,
        refused_peer: impl Fn(SocketAddr) -> bool,
        withdrawn: &mut Vec<Channel>,
    ) {
        self.permissions.retain(|p| !refused_ip(p.ip));
        for channel in &mut self.channels {
            if channel.expires > now && refused_peer(channel.peer) {
                withdrawn.push(*channel);
                channel.expires = now;
            }
        }
    }

    /// Drops expired permissions and channels past their cool-down; the
    /// channels dropped go to `dropped`.
    pub(crate) fn sweep(&mut self, now: Instant, dropped: &mut Vec<Channel>) {
        self.permissions.retain(|p| p.expires > now);
        self.drop_cooled_channels(now, dropped);
    }

    /// Drops the channels whose cool-down (RFC 8656 §12) is over.
    fn drop_cooled_channels(&mut self, now: Instant, dropped: &mut Vec<Channel>) {
        self.channels.retain(|c| {
            let keep = c.expires + CHANNEL_COOLDOWN > now;
            if !keep {
                dropped.push(*c);
            }
            keep
        });
    }

    /// The fast-path route of one of this allocation's channels, if it can
    /// have one.
    pub(crate) fn route(&self, channel: &Channel) -> Option<ChannelRoute> {
        if self.five_tuple.transport != Transport::Udp || self.protocol != RelayProtocol::Udp {
            return None;
        }
        Some(ChannelRoute {
            client: self.five_tuple,
            channel: channel.number,
            relay: RelayedAddress(self.relay_for(channel.peer.ip())?),
            peer: PeerSocket(channel.peer),
            dont_fragment: self.dont_fragment,
        })
    }

    /// Until when a channel relays (RFC 8656 §12): while it, the peer's
    /// permission and the allocation all last. `None` if it relays no more.
    pub(crate) fn channel_relays_until(&self, channel: &Channel, now: Instant) -> Option<Instant> {
        let permission = self
            .permissions
            .iter()
            .find(|p| p.ip == channel.peer.ip())?
            .expires;
        let until = channel.expires.min(permission).min(self.expires);
        (until > now).then_some(until)
    }
}

/// A live allocation as operators see it (`GET /v1/allocations`, kicks):
/// a read-only view, valid for one call.
#[derive(Debug)]
pub struct AllocationView<'a> {
    allocation: &'a Allocation,
    now: Instant,
}

impl<'a> AllocationView<'a> {
    pub(crate) fn new(allocation: &'a Allocation, now: Instant) -> Self {
        AllocationView { allocation, now }
    }

    /// Unique for the life of the process.
    pub fn serial(&self) -> u64 {
        self.allocation.serial
    }

    /// The USERNAME it was made with.
    pub fn username(&self) -> &'a str {
        &self.allocation.user.name
    }

    /// The client's 5-tuple.
    pub fn client(&self) -> &'a FiveTuple {
        &self.allocation.five_tuple
    }

    /// Relayed addresses as bound (index 0 IPv4, 1 IPv6).
    pub fn relays(&self) -> [Option<SocketAddr>; 2] {
        self.allocation.relays
    }

    /// UDP or TCP (RFC 6062).
    pub fn protocol(&self) -> RelayProtocol {
        self.allocation.protocol
    }

    /// When it was made.
    pub fn created(&self) -> Instant {
        self.allocation.created
    }

    /// Lifetime left.
    pub fn lifetime_left(&self) -> Duration {
        self.allocation.expires.saturating_duration_since(self.now)
    }

    /// Peer IPs with a live permission.
    pub fn permissions(&self) -> impl Iterator<Item = IpAddr> + 'a {
        let now = self.now;
        self.allocation
            .permissions
            .iter()
            .filter(move |p| p.expires > now)
            .map(|p| p.ip)
    }

    /// Live channels: number and peer.
    pub fn channels(&self) -> impl Iterator<Item = (u16, SocketAddr)> + 'a {
        let now = self.now;
        self.allocation
            .channels
            .iter()
            .filter(move |c| c.expires > now)
            .map(|c| (c.number, c.peer))
    }

    /// The fast-path routes of its live channels (see
    /// [`ChannelRoute`]), to add what a fast path relayed for it.
    pub fn routes(&self) -> impl Iterator<Item = ChannelRoute> + 'a {
        let now = self.now;
        let allocation = self.allocation;
        allocation
            .channels
            .iter()
            .filter(move |c| c.expires > now)
            .filter_map(|c| allocation.route(c))
    }

    /// What the core relayed for it.
    pub fn traffic(&self) -> Traffic {
        self.allocation.traffic
    }
}

/// A shard's allocations with their indexes.
#[derive(Debug, Default)]
pub(crate) struct Allocations {
    slots: Vec<Option<Allocation>>,
    free: Vec<AllocationId>,
    by_five_tuple: FxHashMap<FiveTuple, AllocationId>,
    /// UDP and TCP relays may share a port number: keyed by both.
    by_relay: FxHashMap<(RelayProtocol, SocketAddr), AllocationId>,
}

impl Allocations {
    pub(crate) fn len(&self) -> usize {
        self.by_five_tuple.len()
    }

    pub(crate) fn insert(&mut self, allocation: Allocation) -> AllocationId {
        let five_tuple = allocation.five_tuple;
        let relays = allocation.relays;
        let protocol = allocation.protocol;
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(allocation);
                id
            }
            None => {
                // Shards hold far fewer than 2^32 allocations (quotas and
                // the port range bound them).
                let id = AllocationId::try_from(self.slots.len()).unwrap_or(AllocationId::MAX);
                self.slots.push(Some(allocation));
                id
            }
        };
        self.by_five_tuple.insert(five_tuple, id);
        for relay in relays.into_iter().flatten() {
            self.by_relay.insert((protocol, relay), id);
        }
        id
    }

    pub(crate) fn remove(&mut self, id: AllocationId) -> Option<Allocation> {
        let allocation = self.slots.get_mut(id as usize)?.take()?;
        self.by_five_tuple.remove(&allocation.five_tuple);
        for relay in allocation.relays.iter().flatten() {
            self.by_relay.remove(&(allocation.protocol, *relay));
        }
        self.free.push(id);
        Some(allocation)
    }

    pub(crate) fn id_by_five_tuple(&self, five_tuple: &FiveTuple) -> Option<AllocationId> {
        self.by_five_tuple.get(five_tuple).copied()
    }

    pub(crate) fn id_by_relay(
        &self,
        protocol: RelayProtocol,
        relay: SocketAddr,
    ) -> Option<AllocationId> {
        self.by_relay.get(&(protocol, relay)).copied()
    }

    pub(crate) fn get(&self, id: AllocationId) -> Option<&Allocation> {
        self.slots.get(id as usize)?.as_ref()
    }

    pub(crate) fn get_mut(&mut self, id: AllocationId) -> Option<&mut Allocation> {
        self.slots.get_mut(id as usize)?.as_mut()
    }

    /// Every live allocation with its id.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (AllocationId, &Allocation)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, a)| Some((AllocationId::try_from(i).ok()?, a.as_ref()?)))
    }

    /// Every live allocation, to change.
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut Allocation> {
        self.slots.iter_mut().flatten()
    }

    pub(crate) fn is_relay(&self, protocol: RelayProtocol, addr: SocketAddr) -> bool {
        self.by_relay.contains_key(&(protocol, addr))
    }

    /// Ids of allocations whose lifetime is over.
    /// When the next allocation expires.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.slots.iter().flatten().map(|a| a.expires).min()
    }

    pub(crate) fn expired(&self, now: Instant) -> Vec<AllocationId> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, a)| match a {
                Some(a) if a.expires <= now => AllocationId::try_from(i).ok(),
                _ => None,
            })
            .collect()
    }

    /// Sweeps every allocation; calls `dropped` with each allocation's
    /// channels that ended their cool-down.
    pub(crate) fn sweep(&mut self, now: Instant, mut dropped: impl FnMut(&Allocation, &[Channel])) {
        let mut channels = Vec::new();
        for allocation in self.slots.iter_mut().flatten() {
            allocation.sweep(now, &mut channels);
            if !channels.is_empty() {
                dropped(allocation, &channels);
                channels.clear();
            }
        }
    }
}

/// The name a user's allocations are counted under for `user_quota`: the
/// user id of a time-limited credential (`expiry<separator>user id`), so
/// that minting credentials of several expiries does not multiply the
/// quota, else the username itself (long-term users, Wire-format
/// credentials, which carry no user id). A long-term user and the
/// time-limited credentials of the same user id share one count, as they
/// share the operator's `stop`.
pub(crate) fn quota_name(username: &str, time_limited: bool, separator: char) -> &str {
    if !time_limited {
        return username;
    }
    crate::ephemeral::user_id(username, separator).unwrap_or(username)
}

/// Allocation counts shared by all shards, for the per-user (486) and
/// server-wide (508) quotas, the count of TCP allocations' peer
/// connections and the relayed rate the shell measured (for
/// `bps_capacity`). Touched only when an allocation or a peer connection
/// is created or deleted, and by the shell once a second, never per
/// packet. It also hands each user's bandwidth buckets to the user's
/// allocations, which hold them from then on (see
/// [`crate::bandwidth`]).
#[derive(Debug, Default)]
pub struct Quotas {
    counts: Mutex<(usize, FxHashMap<Arc<str>, UserEntry>)>,
    connections: AtomicUsize,
    /// Relayed payload bytes per second, all workers and paths together.
    relayed_rate: AtomicU64,
}

/// A user with allocations: how many, and the buckets they share.
#[derive(Debug)]
struct UserEntry {
    allocations: u32,
    bandwidth: Arc<UserBandwidth>,
}

/// What a user's new allocation takes from [`Quotas`]: the name it is
/// counted under (for [`Quotas::release`]) and the user's bandwidth.
#[derive(Debug)]
pub(crate) struct Quota {
    pub(crate) name: Arc<str>,
    pub(crate) bandwidth: Arc<UserBandwidth>,
}

/// The limits an Allocate is checked against; 0 = unlimited.
#[derive(Clone, Copy, Debug)]
pub(crate) struct QuotaLimits {
    /// Allocations per user (486 beyond).
    pub(crate) per_user: u32,
    /// Allocations server-wide (508 beyond).
    pub(crate) total: usize,
    /// Relayed bytes per second server-wide (508 at or beyond).
    pub(crate) bps_capacity: u64,
}

impl Quotas {
    /// Takes one peer connection if fewer than `limit` (0 = unlimited) exist.
    pub(crate) fn acquire_connection(&self, limit: usize) -> bool {
        let taken = self.connections.fetch_add(1, Ordering::Relaxed);
        if limit != 0 && taken >= limit {
            self.connections.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    pub(crate) fn release_connection(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Peer connections of TCP allocations, all shards together.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// The relayed rate, all workers and paths together, in payload bytes
    /// per second: the shell measures it about once a second, and a new
    /// Allocate is refused while it is at `bps_capacity` or above.
    pub fn set_relayed_rate(&self, bytes_per_second: u64) {
        self.relayed_rate.store(bytes_per_second, Ordering::Relaxed);
    }

    /// Takes one allocation for `user` (its quota name, see
    /// [`quota_name`]) if `limits` allow. `Err(486)` or `Err(508)`
    /// otherwise. Allocates only for a user without allocations yet (once
    /// per Allocate at most, never per packet); `now` starts that user's
    /// bandwidth clock.
    pub(crate) fn acquire(
        &self,
        user: &str,
        limits: QuotaLimits,
        now: Instant,
    ) -> Result<Quota, u16> {
        let Ok(mut counts) = self.counts.lock() else {
            return Err(508);
        };
        let (all, by_user) = &mut *counts;
        // The user's own limit first: it tells the client something it can act on.
        let mine = by_user.get(user).map_or(0, |u| u.allocations);
        if limits.per_user != 0 && mine >= limits.per_user {
            return Err(486);
        }
        let full = limits.total != 0 && *all >= limits.total;
        let busy = limits.bps_capacity != 0
            && self.relayed_rate.load(Ordering::Relaxed) >= limits.bps_capacity;
        if full || busy {
            return Err(508);
        }
        let quota = match by_user.get_key_value(user) {
            Some((name, entry)) => Quota {
                name: Arc::clone(name),
                bandwidth: Arc::clone(&entry.bandwidth),
            },
            None => Quota {
                name: Arc::from(user),
                bandwidth: Arc::new(UserBandwidth::new(now)),
            },
        };
        by_user
            .entry(Arc::clone(&quota.name))
            .or_insert_with(|| UserEntry {
                allocations: 0,
                bandwidth: Arc::clone(&quota.bandwidth),
            })
            .allocations += 1;
        *all += 1;
        Ok(quota)
    }

    /// Gives back one allocation of `user`, as [`Quotas::acquire`] named it.
    pub(crate) fn release(&self, user: &str) {
        let Ok(mut counts) = self.counts.lock() else {
            return;
        };
        let (all, by_user) = &mut *counts;
        *all = all.saturating_sub(1);
        if let Some(entry) = by_user.get_mut(user) {
            entry.allocations -= 1;
            if entry.allocations == 0 {
                by_user.remove(user);
            }
        }
    }
}
