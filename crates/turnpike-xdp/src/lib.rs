//! Turnpike's XDP relay fast path.
//!
//! On a busy relay most of the CPU goes to the kernel's UDP stack, not to
//! Turnpike: every relayed datagram is received on one socket and sent from
//! another, with a wake-up, two copies and a socket lookup each way. The
//! program in `bpf/fast_path.bpf.c` moves the bulk of the traffic — ChannelData
//! between UDP clients and their peers, IPv4 or IPv6 — out of that path: it rewrites
//! each datagram in the driver's receive hook (ChannelData → UDP from the
//! relayed address, UDP → ChannelData from the server's address) and sends it
//! straight back out, so it never reaches a socket.
//!
//! The core stays the only place where protocol decisions are made: it
//! announces each channel's route and until when it relays
//! ([`turnpike_core::Event::RouteChannel`]), [`FastPath`] mirrors those into
//! the program's maps, and the program hands everything else — other
//! methods, Send/Data, a client and a peer of different families, padded
//! ChannelData, routes past their time —
//! to the stack unchanged, where the server's sockets handle it as before.
//! If the server dies, the kernel detaches the program with it (a BPF link
//! lives as long as its file descriptor), and the sockets carry everything.
//!
//! What the program relays never reaches the core's counters, so the
//! program counts it itself: for the whole server ([`FastPath::counters`])
//! and per route, in the route's own map entries, so that an allocation's
//! totals can include it ([`FastPath::route_traffic`], and
//! [`FastPath::unroute`], which hands a route's totals back as it removes
//! it).
//!
//! An allocation's bandwidth cap (`turn.max_bps`) travels with its routes
//! and is enforced in the program, with one bucket per allocation and
//! direction that all its channels share (`struct bucket` in the source):
//! the program drops what is over it and counts it
//! ([`Counters::capped`]). Those buckets are not the core's: what the
//! allocation relays through the sockets (Send indications, what the
//! program passes) takes from the core's own, so an allocation using both
//! paths at once can relay up to twice its cap. The per-user cap
//! (`turn.user_max_bps`) is not in the program: while it is set the core
//! announces no routes.
//!
//! Needs `CAP_BPF` and `CAP_NET_ADMIN` (or root), and Linux 5.12 or newer.

mod maps;

use std::fmt;
use std::time::{Duration, Instant};

use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use aya::programs::{TestRun, TestRunOptions, Xdp, XdpMode};
use aya::{Ebpf, include_bytes_aligned};
use turnpike_core::ChannelRoute;

pub use maps::Counters;
use maps::{
    Bucket, BucketKey, ClientKey, Config, Direction, Entries, EntryTraffic, PeerKey, Route,
};

/// The compiled program (built by `scripts/build-bpf`).
static PROGRAM: &[u8] = include_bytes_aligned!("../bpf/fast_path.bpf.o");

const PROGRAM_NAME: &str = "turnpike_fast_path";

/// How the program is attached to an interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// In the driver if it supports XDP, else generic.
    #[default]
    Auto,
    /// In the driver (fails if it does not support XDP).
    Native,
    /// Generic XDP, after the kernel has built its packet buffer: works on
    /// any device (loopback, veth), at a smaller gain.
    Generic,
}

impl Mode {
    fn xdp(self) -> XdpMode {
        match self {
            Mode::Auto => XdpMode::Default,
            Mode::Native => XdpMode::Driver,
            Mode::Generic => XdpMode::Skb,
        }
    }
}

/// Why the fast path could not start or a route could not be written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Loading the program or its maps.
    #[error("cannot load the XDP program: {0}")]
    Load(String),
    /// Attaching it to an interface.
    #[error("cannot attach the XDP program to {interface}: {reason}")]
    Attach {
        /// The interface.
        interface: String,
        /// What the kernel said.
        reason: String,
    },
    /// Writing a map.
    #[error("cannot update the XDP routes: {0}")]
    Map(String),
    /// IPv4 forwarding is off on an interface (see [`FastPath::attach`]).
    #[error(
        "net.ipv4.conf.{0}.forwarding is 0, and the XDP program asks the kernel's routing table for the next hop of each relayed packet (bpf_fib_lookup), which answers only on interfaces with forwarding on: run `sysctl -w net.ipv4.conf.{0}.forwarding=1` (a single-homed relay receives nothing else to forward; keep a FORWARD firewall policy of DROP if unsure)"
    )]
    ForwardingOff(String),
}

fn load_error(err: impl fmt::Display) -> Error {
    Error::Load(err.to_string())
}

fn map_error(err: impl fmt::Display) -> Error {
    Error::Map(err.to_string())
}

/// Routes each family's maps hold (`MAX_ROUTES` in the program's source).
pub const MAX_ROUTES: usize = 65_536;

/// What one route (channel) relayed through the program, both ways: its
/// datagrams and their payload bytes, without the 4-byte ChannelData header
/// (as in [`Counters`]: the application's data, the same either way).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteTraffic {
    /// ChannelData relayed to the peer.
    pub to_peer_packets: u64,
    /// Their payload bytes.
    pub to_peer_bytes: u64,
    /// Peer datagrams relayed to the client as ChannelData.
    pub to_client_packets: u64,
    /// Their payload bytes.
    pub to_client_bytes: u64,
}

impl RouteTraffic {
    /// From a route's entries that still hold it (each side counts its own
    /// direction); `None` if neither does.
    fn of<const N: usize>(client: Option<Route<N>>, peer: Option<Route<N>>) -> Option<Self> {
        if client.is_none() && peer.is_none() {
            return None;
        }
        let to_peer = client.map_or_else(EntryTraffic::default, |route| route.traffic);
        let to_client = peer.map_or_else(EntryTraffic::default, |route| route.traffic);
        Some(RouteTraffic {
            to_peer_packets: to_peer.packets,
            to_peer_bytes: to_peer.bytes,
            to_client_packets: to_client.packets,
            to_client_bytes: to_client.bytes,
        })
    }
}

/// The loaded program and its maps. Dropping it detaches the program.
pub struct FastPath {
    ebpf: Ebpf,
    v4: RouteMaps<4>,
    v6: RouteMaps<16>,
    counters: PerCpuArray<MapData, Counters>,
    buckets: Buckets,
    /// Client-side entries of both families (one per channel), kept here so
    /// a metrics scrape does not walk the maps.
    routes: usize,
    clock: MonotonicClock,
    interfaces: Vec<String>,
}

impl fmt::Debug for FastPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FastPath")
            .field("interfaces", &self.interfaces)
            .finish_non_exhaustive()
    }
}

impl FastPath {
    /// Loads the program for relayed ports `relay_ports` (inclusive) and
    /// attaches it to `interfaces`.
    ///
    /// On loopback every relayed packet goes back out of it. Elsewhere the
    /// program asks the kernel's routing table for the next hop (which
    /// handles gateways, peers on the local network and several interfaces
    /// alike), and the kernel answers that only on interfaces where IPv4
    /// forwarding is on: without it every packet would quietly take the
    /// socket path, so that is an error here rather than a silent loss of
    /// the fast path.
    pub fn attach(
        interfaces: &[String],
        mode: Mode,
        relay_ports: (u16, u16),
    ) -> Result<Self, Error> {
        let loopback = interfaces
            .iter()
            .find(|name| is_loopback(name))
            .map_or(0, |name| if_index(name));
        for name in interfaces.iter().filter(|name| !is_loopback(name)) {
            let forwarding =
                std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{name}/forwarding"));
            if forwarding.is_ok_and(|value| value.trim() == "0") {
                return Err(Error::ForwardingOff(name.clone()));
            }
        }
        let mut fast_path = Self::load(relay_ports, loopback)?;
        let program = fast_path.program_mut()?;
        for interface in interfaces {
            program
                .attach(interface, mode.xdp())
                .map_err(|err| Error::Attach {
                    interface: interface.clone(),
                    reason: error_chain(&err),
                })?;
        }
        fast_path.interfaces = interfaces.to_vec();
        Ok(fast_path)
    }

    /// Loads the program without attaching it ([`FastPath::test_run`] runs
    /// it). `loopback_ifindex`: the loopback device's index, where every
    /// destination is local (0: none).
    pub fn load(relay_ports: (u16, u16), loopback_ifindex: u32) -> Result<Self, Error> {
        let mut ebpf = Ebpf::load(PROGRAM).map_err(|err| Error::Load(error_chain(&err)))?;
        let mut config: Array<MapData, Config> = take_map(&mut ebpf, "CONFIG")?;
        config
            .set(
                0,
                Config {
                    loopback_ifindex,
                    relay_port_min: relay_ports.0,
                    relay_port_max: relay_ports.1,
                },
                0,
            )
            .map_err(map_error)?;
        let v4 = RouteMaps {
            client: take_map(&mut ebpf, "CLIENT_ROUTES")?,
            peer: take_map(&mut ebpf, "PEER_ROUTES")?,
        };
        let v6 = RouteMaps {
            client: take_map(&mut ebpf, "CLIENT_ROUTES6")?,
            peer: take_map(&mut ebpf, "PEER_ROUTES6")?,
        };
        let counters = take_map(&mut ebpf, "COUNTERS")?;
        let buckets = Buckets {
            map: take_map(&mut ebpf, "BUCKETS")?,
            routes: std::collections::HashMap::new(),
        };
        let mut fast_path = FastPath {
            ebpf,
            v4,
            v6,
            counters,
            buckets,
            routes: 0,
            clock: MonotonicClock::now(),
            interfaces: Vec::new(),
        };
        fast_path
            .program_mut()?
            .load()
            .map_err(|err| Error::Load(error_chain(&err)))?;
        Ok(fast_path)
    }

    fn program_mut(&mut self) -> Result<&mut Xdp, Error> {
        self.ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or_else(|| load_error("the object has no program turnpike_fast_path"))?
            .try_into()
            .map_err(load_error)
    }

    /// The interfaces the program is attached to.
    pub fn interfaces(&self) -> &[String] {
        &self.interfaces
    }

    /// The attached interfaces (loopback aside) with IPv6 forwarding off,
    /// where the kernel's routing table answers the program no IPv6 next
    /// hop: IPv6 channels there take the socket path.
    pub fn ipv6_forwarding_off(&self) -> Vec<String> {
        self.interfaces
            .iter()
            .filter(|name| !is_loopback(name))
            .filter(|name| {
                std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{name}/forwarding"))
                    .is_ok_and(|value| value.trim() == "0")
            })
            .cloned()
            .collect()
    }

    /// Installs or moves a channel's route, relayed until `until`, its
    /// allocation capped at `max_bps` payload bytes per second each way
    /// (0: uncapped). Routes the program cannot carry (a client and a peer
    /// of different families) are left to the sockets: `Ok(false)`.
    ///
    /// A capped route's allocation gets its buckets (full) if it has none
    /// yet; they go with its last route, so an allocation that reuses a
    /// 5-tuple starts with full ones. A new `max_bps` on a route that is
    /// in (a reload) applies from its next packet, to the buckets as they
    /// are.
    ///
    /// When the family's map is full, the routes past their `until` are
    /// removed first (the program ignores them anyway): a route whose
    /// unroute never came cannot keep the fast path from everyone else.
    /// Their counts go with them (see [`FastPath::unroute`]).
    ///
    /// Writing a route that is already in (a refresh) keeps what it has
    /// relayed: the write replaces each entry's whole value, so the counts
    /// are read first and carried over, and only what the program adds
    /// between that read and the write (a system call's time) is lost.
    pub fn route(
        &mut self,
        route: &ChannelRoute,
        until: Instant,
        max_bps: u64,
    ) -> Result<bool, Error> {
        let until_ns = self.clock.ns(until);
        let now_ns = self.clock.ns(Instant::now());
        let Some(family) = entries(route) else {
            return Ok(false);
        };
        let allocation = family.allocation();
        let (new, evicted) = match family {
            Family::V4(entries) => self.v4.insert(entries, until_ns, max_bps, now_ns)?,
            Family::V6(entries) => self.v6.insert(entries, until_ns, max_bps, now_ns)?,
        };
        self.routes = self.routes.saturating_sub(evicted.len()) + usize::from(new);
        for gone in evicted {
            self.buckets.unrouted(gone);
        }
        // After the route: until its buckets are in, the program leaves a
        // capped route's packets to the sockets, which hold the cap too.
        self.buckets.routed(allocation, new, max_bps != 0)?;
        Ok(true)
    }

    /// The most routes (channels) each address family's maps hold.
    pub const fn capacity() -> usize {
        MAX_ROUTES
    }

    /// Removes a channel's route, and returns what the program relayed
    /// for it over its life, both ways, refreshes included.
    ///
    /// `None` if the maps held no entry of this route: never routed, left
    /// to the sockets (mixed families), removed already, or evicted.
    ///
    /// Counts can be lost:
    /// - what the program adds between the read of an entry and its
    ///   removal (or a refresh's write), a system call's time;
    /// - the counts of a route evicted from a full map (see
    ///   [`FastPath::route`]): its unroute then returns `None`, or only
    ///   the side that was not evicted;
    /// - the side of a route whose entry another route took over before
    ///   this unroute came (a relayed port reused, or a channel number
    ///   bound to another peer): the new route counts from zero, and this
    ///   route's counts on that side are gone. The core announces a
    ///   route's end before it releases the relayed port or lets the
    ///   number be bound again, so this takes events out of order.
    pub fn unroute(&mut self, route: &ChannelRoute) -> Option<RouteTraffic> {
        let family = entries(route)?;
        let allocation = family.allocation();
        let (removed, traffic) = match family {
            Family::V4(entries) => self.v4.remove(&entries),
            Family::V6(entries) => self.v6.remove(&entries),
        };
        if removed {
            self.routes = self.routes.saturating_sub(1);
            self.buckets.unrouted(allocation);
        }
        traffic
    }

    /// What the program has relayed for a route so far, both ways (a
    /// control-path read: two map lookups). `None` if the maps hold no
    /// entry of it (see [`FastPath::unroute`]). A route past its `until`
    /// counts no more, but keeps its counts until it is removed.
    pub fn route_traffic(&self, route: &ChannelRoute) -> Option<RouteTraffic> {
        match entries(route)? {
            Family::V4(entries) => self.v4.traffic(&entries),
            Family::V6(entries) => self.v6.traffic(&entries),
        }
    }

    /// Removes the bandwidth buckets of `route`'s allocation and leaves
    /// its routes: what the program meets when a capped route's buckets
    /// could not be written. For tests.
    #[doc(hidden)]
    pub fn remove_buckets(&mut self, route: &ChannelRoute) {
        if let Some(family) = entries(route) {
            self.buckets.remove(family.allocation());
        }
    }

    /// Routes installed, client side (one per channel).
    pub fn routes(&self) -> usize {
        self.routes
    }

    /// What the program relayed and passed, all CPUs together.
    pub fn counters(&self) -> Counters {
        let mut sum = Counters::default();
        if let Ok(per_cpu) = self.counters.get(&0, 0) {
            for c in per_cpu.iter() {
                sum.to_peer_packets += c.to_peer_packets;
                sum.to_peer_bytes += c.to_peer_bytes;
                sum.to_client_packets += c.to_client_packets;
                sum.to_client_bytes += c.to_client_bytes;
                sum.passed += c.passed;
                sum.capped += c.capped;
            }
        }
        sum
    }

    /// Runs the program once on `frame` (an Ethernet frame) without any
    /// interface (`BPF_PROG_TEST_RUN`): the XDP action and the frame as the
    /// program left it. For tests.
    pub fn test_run(&mut self, frame: &[u8]) -> Result<(u32, Vec<u8>), Error> {
        let (action, out, _) = self.run(frame, 1)?;
        Ok((action, out))
    }

    /// Runs the program `repeat` times in a row on `frame`, each run on the
    /// frame as the one before left it (the kernel does not reset it), and
    /// returns the last run's XDP action and the mean time of a run. For
    /// measurements: a frame that the routes send round in a cycle is
    /// relayed at every run.
    pub fn time_run(&mut self, frame: &[u8], repeat: u32) -> Result<(u32, Duration), Error> {
        let (action, _, mean) = self.run(frame, repeat)?;
        Ok((action, mean))
    }

    fn run(&mut self, frame: &[u8], repeat: u32) -> Result<(u32, Vec<u8>, Duration), Error> {
        // Room for the program to grow the frame (a channel header).
        let mut out = vec![0u8; frame.len() + 256];
        let program = self.program_mut()?;
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                repeat,
                ..TestRunOptions::default()
            })
            .map_err(|err| Error::Load(error_chain(&err)))?;
        out.truncate(result.data_size_out as usize);
        Ok((result.return_value, out, result.duration))
    }
}

/// XDP actions, as [`FastPath::test_run`] returns them.
pub mod action {
    /// Drop.
    pub const DROP: u32 = 1;
    /// Hand to the kernel's stack.
    pub const PASS: u32 = 2;
    /// Send back out of the receiving device.
    pub const TX: u32 = 3;
    /// Send out of another device.
    pub const REDIRECT: u32 = 4;
}

fn take_map<T>(ebpf: &mut Ebpf, name: &str) -> Result<T, Error>
where
    T: TryFrom<aya::maps::Map>,
    T::Error: fmt::Display,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| load_error(format!("the object has no map {name}")))?;
    T::try_from(map).map_err(load_error)
}

/// The allocations' bandwidth buckets (`BUCKETS`), and how many routes
/// (client-side entries, one per channel) each allocation has in the
/// route maps, so that its buckets go with its last route. Allocations
/// are known by their to-peer bucket's key (their 5-tuple).
struct Buckets {
    map: HashMap<MapData, BucketKey, Bucket>,
    routes: std::collections::HashMap<BucketKey, usize>,
}

impl Buckets {
    /// A route of `allocation` was written, `new` if its channel had no
    /// client-side entry: counts it, and makes the allocation's buckets if
    /// it is `capped` and has none (an existing one keeps its state).
    fn routed(&mut self, allocation: BucketKey, new: bool, capped: bool) -> Result<(), Error> {
        if new {
            *self.routes.entry(allocation).or_default() += 1;
        }
        if !capped {
            return Ok(());
        }
        for direction in Direction::BOTH {
            let key = allocation.toward(direction);
            match self.map.insert(key, Bucket::default(), BPF_NOEXIST) {
                Err(err) if !map_errno(&err, libc::EEXIST) => return Err(map_error(err)),
                _ => {}
            }
        }
        Ok(())
    }

    /// A client-side entry of `allocation`'s was removed (unrouted or
    /// evicted): with its last, its buckets go.
    fn unrouted(&mut self, allocation: BucketKey) {
        let std::collections::hash_map::Entry::Occupied(mut routes) = self.routes.entry(allocation)
        else {
            return;
        };
        *routes.get_mut() -= 1;
        if *routes.get() > 0 {
            return;
        }
        routes.remove();
        self.remove(allocation);
    }

    /// Removes `allocation`'s buckets, if it has any (an allocation that
    /// was never capped has none).
    fn remove(&mut self, allocation: BucketKey) {
        for direction in Direction::BOTH {
            let _ = self.map.remove(&allocation.toward(direction));
        }
    }
}

/// `BPF_NOEXIST`: a map write that only creates.
const BPF_NOEXIST: u64 = 1;

/// One family's route maps.
struct RouteMaps<const N: usize> {
    client: HashMap<MapData, ClientKey<N>, Route<N>>,
    peer: HashMap<MapData, PeerKey<N>, Route<N>>,
}

impl<const N: usize> RouteMaps<N> {
    /// Writes a route; `true` if the channel had none. A full map first
    /// gives up the routes that lapsed (past their `until`, which the
    /// program no longer uses, but which an unroute may never come for),
    /// then the write is tried again. Returns also the allocations (see
    /// [`Buckets`]) of the client-side entries that went, one each.
    fn insert(
        &mut self,
        mut entries: Entries<N>,
        until_ns: u64,
        max_bps: u64,
        now_ns: u64,
    ) -> Result<(bool, Vec<BucketKey>), Error> {
        entries.2.until_ns = until_ns;
        entries.2.max_bps = max_bps;
        match self.write(entries) {
            Err(err) if map_errno(&err, libc::E2BIG) => {
                let evicted = self.evict_lapsed(now_ns);
                Ok((self.write(entries).map_err(map_error)?, evicted))
            }
            result => Ok((result.map_err(map_error)?, Vec::new())),
        }
    }

    fn write(&mut self, (client, peer, route): Entries<N>) -> Result<bool, aya::maps::MapError> {
        // The peer side first: until both are in, ChannelData cannot leave
        // through the program, so a peer cannot answer ahead of its route.
        // Each entry is read right before it is written, to keep the time
        // in which the program's additions are lost short.
        let stored = self.peer.get(&peer, 0).ok();
        self.peer.insert(peer, carried(route, stored), 0)?;
        let stored = self.client.get(&client, 0).ok();
        self.client.insert(client, carried(route, stored), 0)?;
        Ok(stored.is_none())
    }

    /// Removes the entries past their `until`; returns the allocations of
    /// the client-side ones (channels) that went, one each.
    fn evict_lapsed(&mut self, now_ns: u64) -> Vec<BucketKey> {
        let lapsed: Vec<(ClientKey<N>, Route<N>)> = self
            .client
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, route)| route.until_ns <= now_ns)
            .collect();
        let evicted = lapsed
            .iter()
            .filter(|(key, _)| self.client.remove(key).is_ok())
            .map(|(_, route)| BucketKey::of(route, Direction::ToPeer))
            .collect();
        let lapsed: Vec<PeerKey<N>> = self
            .peer
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, route)| route.until_ns <= now_ns)
            .map(|(key, _)| key)
            .collect();
        for key in &lapsed {
            let _ = self.peer.remove(key);
        }
        evicted
    }

    /// Removes a route: whether its client-side entry was there, and what
    /// the entries that held it relayed. An entry is removed only while it
    /// still holds this route: a relayed port freed with its allocation
    /// may already carry a new allocation's route (written by another
    /// worker before this unroute came), which stays, with its counts.
    ///
    /// Each entry is read right before it is removed, as in `write`, and
    /// its counts are handed out only once it is gone: an entry that could
    /// not be removed keeps them for a later unroute.
    fn remove(
        &mut self,
        (client_key, peer_key, route): &Entries<N>,
    ) -> (bool, Option<RouteTraffic>) {
        let ours = |stored: &Route<N>| stored.same_route(route);
        let peer = self
            .peer
            .get(peer_key, 0)
            .ok()
            .filter(ours)
            .filter(|_| self.peer.remove(peer_key).is_ok());
        let client = self
            .client
            .get(client_key, 0)
            .ok()
            .filter(ours)
            .filter(|_| self.client.remove(client_key).is_ok());
        (client.is_some(), RouteTraffic::of(client, peer))
    }

    /// What a route's entries relayed, if either still holds it (not
    /// another route, nor nothing).
    fn traffic(&self, (client_key, peer_key, route): &Entries<N>) -> Option<RouteTraffic> {
        let ours = |stored: &Route<N>| stored.same_route(route);
        RouteTraffic::of(
            self.client.get(client_key, 0).ok().filter(ours),
            self.peer.get(peer_key, 0).ok().filter(ours),
        )
    }
}

/// `route` to write over `stored` (what the entry held, if anything): with
/// its counts if it is the same route (a refresh), else counting afresh, so
/// that a route never inherits another's counts.
fn carried<const N: usize>(mut route: Route<N>, stored: Option<Route<N>>) -> Route<N> {
    route.traffic = stored
        .filter(|stored| stored.same_route(&route))
        .map_or_else(EntryTraffic::default, |stored| stored.traffic);
    route
}

/// Whether a map write failed with `errno` (`E2BIG`: the map is full;
/// `EEXIST`: a `BPF_NOEXIST` write found the key).
fn map_errno(err: &aya::maps::MapError, errno: i32) -> bool {
    matches!(
        err,
        aya::maps::MapError::SyscallError(e) if e.io_error.raw_os_error() == Some(errno)
    )
}

/// A route's map entries, by family.
enum Family {
    V4(Entries<4>),
    V6(Entries<16>),
}

impl Family {
    /// The allocation the route belongs to (see [`Buckets`]).
    fn allocation(&self) -> BucketKey {
        match self {
            Family::V4((_, _, route)) => BucketKey::of(route, Direction::ToPeer),
            Family::V6((_, _, route)) => BucketKey::of(route, Direction::ToPeer),
        }
    }
}

/// The map entries of a route whose four addresses are of one family (an
/// IPv4-mapped address counts as IPv4). `None` for a mixed route.
fn entries(route: &ChannelRoute) -> Option<Family> {
    let addrs = [
        route.client.client,
        route.client.server,
        route.relay.0,
        route.peer.0,
    ];
    let (channel, df) = (route.channel, route.dont_fragment);
    if let [Some(a), Some(b), Some(c), Some(d)] = addrs.map(maps::v4) {
        return Some(Family::V4(Route::entries([a, b, c, d], addrs, channel, df)));
    }
    if let [Some(a), Some(b), Some(c), Some(d)] = addrs.map(maps::v6) {
        return Some(Family::V6(Route::entries([a, b, c, d], addrs, channel, df)));
    }
    None
}

/// Maps [`Instant`]s to `CLOCK_MONOTONIC` nanoseconds, the clock the
/// program reads (`bpf_ktime_get_ns`). Rust's `Instant` is that clock on
/// Linux, but keeps its value private; one reading of both pins the offset.
#[derive(Clone, Copy, Debug)]
struct MonotonicClock {
    instant: Instant,
    ns: u64,
}

impl MonotonicClock {
    fn now() -> Self {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec for the call to write.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let instant = Instant::now();
        let ns = u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000
            + u64::try_from(ts.tv_nsec).unwrap_or(0);
        MonotonicClock { instant, ns }
    }

    fn ns(&self, at: Instant) -> u64 {
        let nanos = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        match at.checked_duration_since(self.instant) {
            Some(ahead) => self.ns.saturating_add(nanos(ahead)),
            None => self.ns.saturating_sub(nanos(self.instant - at)),
        }
    }
}

fn if_index(name: &str) -> u32 {
    let Ok(name) = std::ffi::CString::new(name) else {
        return 0;
    };
    // SAFETY: `name` is a valid NUL-terminated string.
    unsafe { libc::if_nametoindex(name.as_ptr()) }
}

/// Whether `name` is a loopback device (`IFF_LOOPBACK` in sysfs).
fn is_loopback(name: &str) -> bool {
    std::fs::read_to_string(format!("/sys/class/net/{name}/flags"))
        .ok()
        .and_then(|flags| u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).ok())
        .is_some_and(|flags| flags & libc::IFF_LOOPBACK as u32 != 0)
}

/// An error with its causes, on one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
