//! What the core needs to know about its deployment. The binary turns the
//! operator's configuration file into this.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::allocation::Quotas;
use crate::bandwidth::Caps;
use crate::nonce::NonceKey;
use crate::peer_policy::PeerPolicy;

/// Core configuration, shared read-only by every worker's [`Server`](crate::Server).
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// SOFTWARE attribute for success responses; `None` sends none.
    pub software: Option<String>,
    /// Address sets for RFC 3489 CHANGE-REQUEST and RFC 5780 behaviour
    /// discovery. Empty: the server has no alternate address, and requests
    /// needing one are refused with 420.
    pub nat_discovery: Vec<NatDiscovery>,
    /// Honour RFC 5780 RESPONSE-PORT. Off by default: it lets an unauthenticated
    /// client point answers at another port of its address.
    pub allow_response_port: bool,
    /// Honour RFC 5780 PADDING. Even when on, a response is never padded
    /// beyond the padding its request carried, so it cannot amplify.
    pub allow_padding: bool,
    /// TURN; `None` serves STUN only.
    pub turn: Option<TurnConfig>,
    /// Which client addresses share a per-source budget (challenges per
    /// second, held credential lookups).
    pub sources: crate::source::SourcePrefix,
}

/// TURN settings (RFC 8656).
#[derive(Clone, Debug)]
pub struct TurnConfig {
    /// REALM of the long-term credential mechanism.
    pub realm: String,
    /// Mints and checks nonces; shared by all shards.
    pub nonces: NonceKey,
    /// Relay IPs (several per family allowed). Empty: relay on the IP the
    /// client's request arrived on.
    pub relay_ips: Vec<IpAddr>,
    /// Relay IP → address advertised in XOR-RELAYED-ADDRESS (servers behind
    /// 1:1 NAT; coturn's `external-ip`).
    pub advertised: Vec<(IpAddr, IpAddr)>,
    /// Lowest relay port.
    pub min_port: u16,
    /// Highest relay port.
    pub max_port: u16,
    /// Allocation lifetime when the client asks for less (RFC 8656: 600 s).
    pub default_lifetime: Duration,
    /// Longest allocation lifetime granted.
    pub max_lifetime: Duration,
    /// Permission lifetime (RFC 8656: 300 s).
    pub permission_lifetime: Duration,
    /// Channel binding lifetime (RFC 8656: 600 s).
    pub channel_lifetime: Duration,
    /// Allocations per user, 0 = unlimited (486 beyond).
    pub user_quota: u32,
    /// Allocations server-wide, 0 = unlimited (508 beyond).
    pub total_quota: usize,
    /// Relayed payload bytes per second per allocation, each direction on
    /// its own (coturn's `max-bps`); 0 = unlimited. See [`crate::bandwidth`].
    pub max_bps: u64,
    /// Relayed payload bytes per second per user (as [`Self::user_quota`]
    /// counts users), all the user's allocations together, each direction
    /// on its own; 0 = unlimited.
    pub user_max_bps: u64,
    /// Relayed payload bytes per second server-wide (coturn's
    /// `bps-capacity`), as the shell measures it
    /// ([`Quotas::set_relayed_rate`]): at or above it, a new Allocate is
    /// refused as at `total_quota` (508, or 300 to an alternate); 0 =
    /// unlimited.
    pub bps_capacity: u64,
    /// Permissions per allocation (508 beyond).
    pub max_permissions: usize,
    /// Channels per allocation (508 beyond).
    pub max_channels: usize,
    /// Peer connections per TCP allocation, in any state (508 beyond).
    pub max_connections_per_allocation: usize,
    /// Peer connections of TCP allocations server-wide, 0 = unlimited (508
    /// beyond).
    pub max_connections: usize,
    /// Which peers may be relayed to.
    pub peer_policy: PeerPolicy,
    /// Counts shared by all shards for the quotas.
    pub quotas: Arc<Quotas>,
    /// Unauthenticated error answers (401/438) per source address and second.
    pub challenges_per_second: u16,
    /// Separator of TURN REST API usernames (`expiry:user-id`; coturn's
    /// `rest-api-separator`).
    pub rest_separator: char,
    /// Ephemeral credentials: re-check expiry on every request, and cap
    /// allocation lifetimes at the credential's expiry. Off: expiry is
    /// checked when an allocation is made, and a call outlives the
    /// credential it started with (what browsers expect: they do not renew
    /// credentials mid-call).
    pub strict_expiry: bool,
    /// Unix time, for the expiry of ephemeral credentials. `None`: they are
    /// all treated as expired.
    pub wall_clock: Option<WallClock>,
    /// Announce channel routes ([`Event::RouteChannel`] and
    /// [`Event::UnrouteChannel`]) for a relay fast path outside the core.
    ///
    /// [`Event::RouteChannel`]: crate::Event::RouteChannel
    /// [`Event::UnrouteChannel`]: crate::Event::UnrouteChannel
    pub channel_routes: bool,
}

/// Maps the monotonic clock the core runs on to Unix time, so the core stays
/// deterministic: the shell reads the system clock once, tests pick a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WallClock {
    /// A monotonic instant…
    pub instant: Instant,
    /// …and the Unix time it corresponds to.
    pub unix: Duration,
}

impl WallClock {
    /// Unix time, in whole seconds, at `now`.
    pub fn unix_secs(&self, now: Instant) -> u64 {
        (self.unix + now.saturating_duration_since(self.instant)).as_secs()
    }
}

impl TurnConfig {
    /// RFC 8656 defaults around the given realm, nonce key and peer policy.
    pub fn new(realm: impl Into<String>, nonces: NonceKey, peer_policy: PeerPolicy) -> Self {
        TurnConfig {
            realm: realm.into(),
            nonces,
            relay_ips: Vec::new(),
            advertised: Vec::new(),
            min_port: 49152,
            max_port: 65535,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            user_quota: 0,
            total_quota: 0,
            max_bps: 0,
            user_max_bps: 0,
            bps_capacity: 0,
            max_permissions: 64,
            max_channels: 64,
            max_connections_per_allocation: 32,
            max_connections: 16384,
            peer_policy,
            quotas: Arc::default(),
            challenges_per_second: 1000,
            rest_separator: ':',
            strict_expiry: false,
            wall_clock: None,
            channel_routes: false,
        }
    }

    /// The bandwidth caps on relayed data.
    pub(crate) fn caps(&self) -> Caps {
        Caps {
            allocation: self.max_bps,
            user: self.user_max_bps,
        }
    }

    /// The address to advertise for a relayed address.
    pub(crate) fn advertise(&self, relay: SocketAddr) -> SocketAddr {
        match self.advertised.iter().find(|(ip, _)| *ip == relay.ip()) {
            Some((_, public)) => SocketAddr::new(*public, relay.port()),
            None => relay,
        }
    }
}

/// Two IP addresses and two ports of this server: answering from the other
/// IP, the other port or both is how NAT behaviour is probed (RFC 5780 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatDiscovery {
    /// Primary and alternate IP (same family).
    pub ips: [IpAddr; 2],
    /// Primary and alternate port.
    pub ports: [u16; 2],
}

/// Where a local address sits in a [`NatDiscovery`] set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AddressRole<'a> {
    set: &'a NatDiscovery,
    ip: usize,
    port: usize,
}

impl NatDiscovery {
    /// The role of `local` in this set, if it is one of its four addresses.
    pub(crate) fn role_of(&self, local: SocketAddr) -> Option<AddressRole<'_>> {
        let ip = self.ips.iter().position(|ip| *ip == local.ip())?;
        let port = self.ports.iter().position(|p| *p == local.port())?;
        Some(AddressRole {
            set: self,
            ip,
            port,
        })
    }
}

impl AddressRole<'_> {
    /// The address differing in both IP and port: OTHER-ADDRESS (RFC 5780)
    /// and CHANGED-ADDRESS (RFC 3489).
    pub(crate) fn other(&self) -> SocketAddr {
        SocketAddr::new(self.set.ips[1 - self.ip], self.set.ports[1 - self.port])
    }

    /// The address to answer from for a CHANGE-REQUEST with these flags.
    pub(crate) fn changed(&self, change_ip: bool, change_port: bool) -> SocketAddr {
        let ip = if change_ip { 1 - self.ip } else { self.ip };
        let port = if change_port {
            1 - self.port
        } else {
            self.port
        };
        SocketAddr::new(self.set.ips[ip], self.set.ports[port])
    }
}

impl Config {
    /// A configuration for running shards: this one (the configuration
    /// they run with) with everything a running shard can change taken
    /// from `new`: SOFTWARE, RESPONSE-PORT and PADDING, and for TURN the
    /// lifetimes (allocations, nonces, permissions, channels), the quotas'
    /// limits, the bandwidth caps and capacity, the per-allocation bounds, the peer policy, the challenge
    /// rate, the REST separator and strict expiry. What sockets, relays or
    /// other shards depend on stays as it is: the NAT discovery
    /// addresses, the source prefix, whether TURN is on, the realm, the
    /// nonce secret and epoch, the relay IPs, advertised addresses and
    /// ports, the shared quota counts, the wall clock and the channel
    /// routes. Hand the result to every shard's
    /// [`Server::reconfigure`](crate::Server::reconfigure).
    #[must_use]
    pub fn reconfigured(&self, new: &Config) -> Config {
        let mut next = self.clone();
        next.software.clone_from(&new.software);
        next.allow_response_port = new.allow_response_port;
        next.allow_padding = new.allow_padding;
        if let (Some(t), Some(n)) = (next.turn.as_mut(), new.turn.as_ref()) {
            t.nonces = t.nonces.with_lifetime(n.nonces.lifetime());
            t.default_lifetime = n.default_lifetime;
            t.max_lifetime = n.max_lifetime;
            t.permission_lifetime = n.permission_lifetime;
            t.channel_lifetime = n.channel_lifetime;
            t.user_quota = n.user_quota;
            t.total_quota = n.total_quota;
            t.max_bps = n.max_bps;
            t.user_max_bps = n.user_max_bps;
            t.bps_capacity = n.bps_capacity;
            t.max_permissions = n.max_permissions;
            t.max_channels = n.max_channels;
            t.max_connections_per_allocation = n.max_connections_per_allocation;
            t.max_connections = n.max_connections;
            t.peer_policy = n.peer_policy.clone();
            t.challenges_per_second = n.challenges_per_second;
            t.rest_separator = n.rest_separator;
            t.strict_expiry = n.strict_expiry;
        }
        next
    }

    /// Whether a shard running with `running` can take this configuration:
    /// it changes only what [`Config::reconfigured`] takes.
    pub fn can_replace(&self, running: &Config) -> bool {
        let turn = match (&self.turn, &running.turn) {
            (None, None) => true,
            (Some(new), Some(old)) => {
                new.realm == old.realm
                    && new.relay_ips == old.relay_ips
                    && new.advertised == old.advertised
                    && (new.min_port, new.max_port) == (old.min_port, old.max_port)
                    && Arc::ptr_eq(&new.quotas, &old.quotas)
                    && new.wall_clock == old.wall_clock
                    && new.channel_routes == old.channel_routes
            }
            _ => false,
        };
        turn && self.nat_discovery == running.nat_discovery && self.sources == running.sources
    }

    /// The NAT discovery role of a local address, if any.
    pub(crate) fn role_of(&self, local: SocketAddr) -> Option<AddressRole<'_>> {
        self.nat_discovery.iter().find_map(|set| set.role_of(local))
    }
}
