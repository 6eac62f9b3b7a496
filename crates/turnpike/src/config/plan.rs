//! Planning: turning validated settings into what the rest of the server
//! consumes — the listeners to bind (with their RFC 5780 roles), the NAT
//! discovery address sets, the sans-IO core's [`turnpike_core::Config`] and
//! [`turnpike_core::TurnConfig`], the static users' keys and the credential
//! database's options.
//!
//! The listener rules are checked here, by `Settings::plan_listeners`,
//! rather than in `validate`, so that the checked rules and the produced
//! addresses cannot diverge: validation runs the same planning.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::errors::ConfigError;
use super::settings::{LimitsSettings, Settings, TlsSettings};
use super::values::UserEntry;

/// Which of the two IP addresses, or which of the two ports, an address uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    /// The configured (`listen`) IP or port.
    Primary,
    /// `alternate_ip`, or the alternate port.
    Alternate,
}

/// The RFC 5780 role of a listener: which IP and which port it uses. (The
/// operator's view; the core keeps its own, private notion of address
/// roles.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerRole {
    /// Primary or alternate IP.
    pub ip: Slot,
    /// Primary or alternate port.
    pub port: Slot,
}

impl ListenerRole {
    /// A plain listen address (also the role of every listener when NAT
    /// discovery is off).
    pub const PRIMARY: ListenerRole = ListenerRole {
        ip: Slot::Primary,
        port: Slot::Primary,
    };
}

/// One address the runtime must bind (on UDP and/or TCP according to
/// `stun.udp` / `stun.tcp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Listener {
    /// Address to bind.
    pub addr: SocketAddr,
    /// Which IP and port of the RFC 5780 quartet this is.
    pub role: ListenerRole,
    /// The `stun.listen` entry this listener was derived from (equal to
    /// `addr` for the primary role). Lets the runtime group the quartet.
    pub configured: SocketAddr,
}

impl Listener {
    /// A listen address as configured, in the primary role.
    fn primary(addr: SocketAddr) -> Listener {
        Listener {
            addr,
            role: ListenerRole::PRIMARY,
            configured: addr,
        }
    }
}

/// A listen port and the alternate port paired with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortPair {
    /// Port from `stun.listen`.
    pub primary: u16,
    /// `stun.alternate_port`, or `primary + 1`.
    pub alternate: u16,
}

/// The address sets for RFC 3489 CHANGE-REQUEST / RFC 5780 NAT behaviour
/// discovery, present when `stun.alternate_ip` is set. Only addresses of
/// `primary_ip`'s family take part; listeners of the other family serve
/// plain STUN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatDiscoveryPlan {
    /// The single IP all same-family listen addresses use.
    pub primary_ip: IpAddr,
    /// `stun.alternate_ip`.
    pub alternate_ip: IpAddr,
    /// One pair per distinct same-family listen port.
    pub ports: Vec<PortPair>,
}

impl Settings {
    /// Every address the runtime must bind, in `stun.listen` order; with
    /// `stun.alternate_ip` set, each same-family listen address `A:P` is
    /// followed by `A:P2`, `ALT:P` and `ALT:P2`.
    ///
    /// Meant for a validated configuration. On an invalid one it does not
    /// panic but returns just the listen addresses.
    pub fn listeners(&self) -> Vec<Listener> {
        match self.plan_listeners() {
            Ok(plan) => plan.listeners,
            Err(_) => self
                .stun
                .listen
                .iter()
                .map(|&addr| Listener::primary(addr))
                .collect(),
        }
    }

    /// The RFC 5780 address sets, or `None` when `stun.alternate_ip` is unset
    /// (or the configuration is invalid).
    pub fn nat_discovery(&self) -> Option<NatDiscoveryPlan> {
        self.plan_listeners().ok().and_then(|plan| plan.nat)
    }

    /// Number of worker threads to start: `server.workers`, or the CPU count
    /// when it is 0 (1 if the CPU count cannot be determined).
    pub fn worker_threads(&self) -> usize {
        match self.server.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// The SOFTWARE attribute value to send, `None` when disabled.
    pub fn software(&self) -> Option<&str> {
        Some(self.server.software.as_str()).filter(|s| !s.is_empty())
    }

    /// The sans-IO core's view of this configuration: one NAT discovery set
    /// (two IPs, two ports) per listen port of the alternate IP's family,
    /// and the TURN settings when `turn.enabled` (see [`Settings::core_turn`]).
    ///
    /// `nonce_secret` keys the nonces (a random secret per process) and
    /// `epoch` is their time origin (the start time); every shard must get
    /// the same core configuration so that a nonce minted by one is accepted
    /// by another.
    ///
    /// Meant for a validated configuration.
    pub fn core(&self, nonce_secret: &[u8; 32], epoch: Instant) -> turnpike_core::Config {
        let nat_discovery = self
            .nat_discovery()
            .map(|nd| {
                nd.ports
                    .iter()
                    .map(|pair| turnpike_core::NatDiscovery {
                        ips: [nd.primary_ip, nd.alternate_ip],
                        ports: [pair.primary, pair.alternate],
                    })
                    .collect()
            })
            .unwrap_or_default();
        turnpike_core::Config {
            software: self.software().map(str::to_owned),
            nat_discovery,
            allow_response_port: self.stun.response_port,
            allow_padding: self.stun.padding,
            turn: self
                .turn
                .enabled
                .then(|| self.core_turn(nonce_secret, epoch)),
            sources: self.sources(),
        }
    }

    /// Which client addresses share a per-source budget.
    pub fn sources(&self) -> turnpike_core::SourcePrefix {
        turnpike_core::SourcePrefix::new(self.limits.ipv6_prefix)
    }

    /// The core's TURN settings (whether or not `turn.enabled`). The peer
    /// policy refuses every listener address, admin endpoint address and
    /// restund command port (`server_sockets`) and knows the host's IPs as their specific IPs,
    /// the relay IPs and the external public IPs. The quota counters are
    /// fresh.
    pub fn core_turn(&self, nonce_secret: &[u8; 32], epoch: Instant) -> turnpike_core::TurnConfig {
        let t = &self.turn;
        let mut server_sockets: Vec<SocketAddr> = self.listeners().iter().map(|l| l.addr).collect();
        // A relayed client must not reach the admin endpoint, nor restund's
        // command port (which answers anyone who can send to it).
        server_sockets.extend(self.admin.listen.iter().copied());
        server_sockets.extend(self.admin.restund_listen);
        // Nor the TLS and DTLS listeners: a relay is no way into our own
        // services, encrypted or not.
        if self.tls.enabled() {
            server_sockets.extend(self.tls.listen.iter().copied());
            server_sockets.extend(self.tls.dtls_listen.iter().copied());
        }
        let mut local_ips: Vec<IpAddr> = server_sockets
            .iter()
            .map(SocketAddr::ip)
            .filter(|ip| !ip.is_unspecified())
            .collect();
        local_ips.extend(t.relay_ips.iter().copied());
        local_ips.extend(t.external_ips.iter().map(|e| e.public));
        local_ips.sort_unstable();
        local_ips.dedup();
        let peer_policy = turnpike_core::PeerPolicy::new(
            t.allowed_peer_ranges.clone(),
            t.denied_peer_ranges.clone(),
            server_sockets,
            local_ips,
        );
        let nonces = turnpike_core::NonceKey::new(
            nonce_secret,
            epoch,
            Duration::from_secs(t.nonce_lifetime.into()),
        );
        let mut core = turnpike_core::TurnConfig::new(t.realm.clone(), nonces, peer_policy);
        core.relay_ips = t.relay_ips.clone();
        core.advertised = self.advertised().unwrap_or_default();
        core.min_port = t.min_port;
        core.max_port = t.max_port;
        core.default_lifetime = Duration::from_secs(t.default_lifetime.into());
        core.max_lifetime = Duration::from_secs(t.max_lifetime.into());
        core.user_quota = t.user_quota;
        let l = &self.limits;
        core.max_connections_per_allocation =
            usize::try_from(l.max_peer_connections_per_allocation).unwrap_or(usize::MAX);
        core.max_connections = usize::try_from(l.max_peer_connections).unwrap_or(usize::MAX);
        core.total_quota = usize::try_from(t.total_quota).unwrap_or(usize::MAX);
        core.max_bps = t.max_bps;
        core.user_max_bps = t.user_max_bps;
        core.bps_capacity = t.bps_capacity;
        core.challenges_per_second = t.challenges_per_second;
        core.rest_separator = t.rest_separator;
        core.strict_expiry = t.strict_expiry;
        core
    }

    /// The static TURN users (`[[turn.users]]`, or `--user` / `TURNPIKE_USERS`
    /// when given); empty when TURN is disabled.
    pub fn users(&self) -> &[UserEntry] {
        if self.turn.enabled {
            &self.turn.users
        } else {
            &[]
        }
    }

    /// [`Settings::users`] with their long-term keys for `turn.realm`, ready
    /// for [`turnpike_core::Server::insert_credentials`]. Derive them once
    /// and clone them into each shard.
    pub fn user_keys(&self) -> Vec<(String, turnpike_core::UserKeys)> {
        self.users()
            .iter()
            .map(|u| {
                let keys = turnpike_core::UserKeys::from_password(
                    &u.username,
                    &self.turn.realm,
                    &u.password,
                );
                (u.username.clone(), keys)
            })
            .collect()
    }

    /// `turn.external_ips` as (relay IP, public IP) pairs, in `relay_ips`
    /// order: a `PUBLIC/PRIVATE` entry maps PRIVATE; a bare `PUBLIC` maps
    /// every relay IP of its family without an entry of its own.
    pub(super) fn advertised(&self) -> Result<Vec<(IpAddr, IpAddr)>, ConfigError> {
        let t = &self.turn;
        let mut explicit: Vec<(IpAddr, IpAddr)> = Vec::new();
        let mut bare: Vec<IpAddr> = Vec::new();
        for ext in &t.external_ips {
            let public = ext.public;
            if public.is_unspecified() || public.is_multicast() || is_broadcast(public) {
                return Err(ConfigError::invalid(format!(
                    "turn.external_ips: PUBLIC {public} is not a specific unicast address; give the public IP clients reach this host on"
                )));
            }
            match ext.private {
                Some(private) => {
                    if !t.relay_ips.contains(&private) {
                        return Err(ConfigError::invalid(format!(
                            "turn.external_ips: PRIVATE {private} (in \"{ext}\") is not one of turn.relay_ips ({}); add it to relay_ips or correct the address",
                            list_or_empty(&t.relay_ips)
                        )));
                    }
                    if let Some((_, first)) = explicit.iter().find(|(ip, _)| *ip == private) {
                        return Err(ConfigError::invalid(format!(
                            "turn.external_ips maps relay IP {private} twice (to {first} and {public}); keep one"
                        )));
                    }
                    explicit.push((private, public));
                }
                None => {
                    let family = family_name(public);
                    if let Some(first) = bare.iter().find(|ip| ip.is_ipv4() == public.is_ipv4()) {
                        return Err(ConfigError::invalid(format!(
                            "turn.external_ips has two {family} addresses without a PRIVATE part ({first} and {public}); write them as PUBLIC/PRIVATE to say which relay IP each stands for"
                        )));
                    }
                    if !t
                        .relay_ips
                        .iter()
                        .any(|ip| ip.is_ipv4() == public.is_ipv4())
                    {
                        return Err(ConfigError::invalid(format!(
                            "turn.external_ips: {public} must stand for a relay IP, but turn.relay_ips has no {family} address; add this host's private {family} address to relay_ips (e.g. relay_ips = [\"10.0.0.5\"])"
                        )));
                    }
                    bare.push(public);
                }
            }
        }
        Ok(t.relay_ips
            .iter()
            .filter_map(|&relay| {
                let public = explicit
                    .iter()
                    .find(|(ip, _)| *ip == relay)
                    .map(|(_, public)| *public)
                    .or_else(|| {
                        bare.iter()
                            .copied()
                            .find(|p| p.is_ipv4() == relay.is_ipv4())
                    })?;
                Some((relay, public))
            })
            .collect())
    }

    /// Where the credential database is (`database.url`, or `turnpike.db`
    /// in `database.data_dir`).
    pub fn location(&self) -> Result<turnpike_store::Location, ConfigError> {
        turnpike_store::Location::parse(&self.database.url, &self.database.data_dir)
            .map_err(|err| ConfigError::invalid(format!("database.url: {err}")))
    }

    /// How to open the credential database. `create`: make the SQLite file
    /// (and its directory) when missing; the server and the admin write
    /// commands pass `true`, read-only commands `false` so that a mistyped
    /// path is an error rather than a new, empty database.
    pub fn store_options(&self, create: bool) -> Result<turnpike_store::StoreOptions, ConfigError> {
        let db = &self.database;
        Ok(turnpike_store::StoreOptions {
            location: self.location()?,
            schema: db.schema.into(),
            pool_size: db.pool_size,
            connect_timeout: Duration::from_secs(db.timeout.into()),
            ca_file: db.ca_file.clone(),
            create,
        })
    }

    /// Checks the listen / alternate-address rules and expands the
    /// listeners. Shared by `validate`, `listeners` and `nat_discovery` so
    /// the checked rules and the produced addresses cannot diverge.
    pub(super) fn plan_listeners(&self) -> Result<ListenerPlan, ConfigError> {
        self.check_listen_addresses()?;
        let Some(alternate_ip) = self.stun.alternate_ip else {
            return self.plain_listeners();
        };
        let same_family = self.listen_addresses_like(alternate_ip);
        let primary_ip = primary_ip(alternate_ip, &same_family)?;
        let primary_ports = primary_ports(&same_family)?;
        let ports = self.port_pairs(&primary_ports, family_name(alternate_ip))?;
        let nat = NatDiscoveryPlan {
            primary_ip,
            alternate_ip,
            ports,
        };
        Ok(ListenerPlan {
            listeners: self.rfc5780_listeners(&nat),
            nat: Some(nat),
        })
    }

    /// `stun.listen`: not empty, no address twice, no multicast address.
    fn check_listen_addresses(&self) -> Result<(), ConfigError> {
        let listen = &self.stun.listen;
        if listen.is_empty() {
            return Err(ConfigError::invalid(
                "stun.listen is empty; give at least one address such as \"0.0.0.0:3478\"",
            ));
        }
        let mut seen = BTreeSet::new();
        for addr in listen {
            if !seen.insert(*addr) {
                return Err(ConfigError::invalid(format!(
                    "stun.listen contains {addr} twice; remove the duplicate"
                )));
            }
            if addr.ip().is_multicast() {
                return Err(ConfigError::invalid(format!(
                    "stun.listen address {addr} is a multicast address; use a unicast address of this host or a wildcard (0.0.0.0 / [::])"
                )));
            }
        }
        Ok(())
    }

    /// Without `stun.alternate_ip`: the listen addresses as they are, all
    /// primary (and `stun.alternate_port` alone is a mistake).
    fn plain_listeners(&self) -> Result<ListenerPlan, ConfigError> {
        if let Some(port) = self.stun.alternate_port {
            return Err(ConfigError::invalid(format!(
                "stun.alternate_port = {port} has no effect without stun.alternate_ip; set alternate_ip too or remove alternate_port"
            )));
        }
        Ok(ListenerPlan {
            listeners: self
                .stun
                .listen
                .iter()
                .map(|&addr| Listener::primary(addr))
                .collect(),
            nat: None,
        })
    }

    /// The listen addresses of `ip`'s family, in order: only these take
    /// part in NAT discovery; the other family serves plain STUN.
    fn listen_addresses_like(&self, ip: IpAddr) -> Vec<SocketAddr> {
        self.stun
            .listen
            .iter()
            .copied()
            .filter(|a| a.is_ipv4() == ip.is_ipv4())
            .collect()
    }

    /// The (primary, alternate) port pairs: `stun.alternate_port` paired
    /// with the one listen port, or each listen port with the next one.
    fn port_pairs(
        &self,
        primary_ports: &[u16],
        family: &str,
    ) -> Result<Vec<PortPair>, ConfigError> {
        let Some(alt_port) = self.stun.alternate_port else {
            return next_port_pairs(primary_ports);
        };
        if alt_port == 0 {
            return Err(ConfigError::invalid(
                "stun.alternate_port = 0 is not a usable port; use a fixed port or leave it unset for listen port + 1",
            ));
        }
        if primary_ports.contains(&alt_port) {
            return Err(ConfigError::invalid(format!(
                "stun.alternate_port = {alt_port} is also a listen port; choose a different port or leave it unset for listen port + 1"
            )));
        }
        if primary_ports.len() > 1 {
            return Err(ConfigError::invalid(format!(
                "stun.alternate_port can pair with only one listen port, but stun.listen has {} {family} ports ({}); leave alternate_port unset to use each port + 1",
                primary_ports.len(),
                join(primary_ports)
            )));
        }
        Ok(vec![PortPair {
            primary: primary_ports[0],
            alternate: alt_port,
        }])
    }

    /// Every listener with NAT discovery on: each listen address `A:P` of
    /// the alternate IP's family followed by `A:P2`, `ALT:P` and `ALT:P2`;
    /// the other family's addresses alone.
    fn rfc5780_listeners(&self, nat: &NatDiscoveryPlan) -> Vec<Listener> {
        let alt_ip = nat.alternate_ip;
        let mut listeners = Vec::with_capacity(self.stun.listen.len() * 4);
        for &addr in &self.stun.listen {
            listeners.push(Listener::primary(addr));
            if addr.is_ipv4() != alt_ip.is_ipv4() {
                continue;
            }
            let alt_port = nat
                .ports
                .iter()
                .find(|p| p.primary == addr.port())
                .map(|p| p.alternate)
                // `port_pairs` made a pair for every same-family listen port.
                .expect("every same-family listen port has a pair");
            for (ip, ip_slot) in [(addr.ip(), Slot::Primary), (alt_ip, Slot::Alternate)] {
                for (port, port_slot) in [(addr.port(), Slot::Primary), (alt_port, Slot::Alternate)]
                {
                    let role = ListenerRole {
                        ip: ip_slot,
                        port: port_slot,
                    };
                    if role != ListenerRole::PRIMARY {
                        listeners.push(Listener {
                            addr: SocketAddr::new(ip, port),
                            role,
                            configured: addr,
                        });
                    }
                }
            }
        }
        listeners
    }
}

/// The single primary IP that `stun.alternate_ip` pairs with: every listen
/// address of its family must be that one specific IP, and it must differ
/// from the alternate one.
fn primary_ip(alt_ip: IpAddr, same_family: &[SocketAddr]) -> Result<IpAddr, ConfigError> {
    let family = family_name(alt_ip);
    if alt_ip.is_unspecified() || alt_ip.is_multicast() {
        return Err(ConfigError::invalid(format!(
            "stun.alternate_ip = {alt_ip} is not a specific unicast address; it must be a second IP address of this host"
        )));
    }
    let Some(first) = same_family.first() else {
        return Err(ConfigError::invalid(format!(
            "stun.alternate_ip = {alt_ip} is {family} but stun.listen has no {family} address; add the primary {family} address to listen"
        )));
    };
    // RFC 5780 responses must leave from a known IP (and OTHER-ADDRESS
    // must name one), which a wildcard socket cannot guarantee.
    if let Some(wild) = same_family.iter().find(|a| a.ip().is_unspecified()) {
        return Err(ConfigError::invalid(format!(
            "stun.listen address {wild} is a wildcard, but with stun.alternate_ip set every {family} listen address must be a specific IP of this host (e.g. \"192.0.2.1:3478\"), so responses leave from a known address"
        )));
    }
    let primary_ip = first.ip();
    if let Some(other) = same_family.iter().find(|a| a.ip() != primary_ip) {
        return Err(ConfigError::invalid(format!(
            "stun.listen has two {family} IPs ({primary_ip} and {}) but stun.alternate_ip pairs with exactly one primary IP; listen on one {family} IP",
            other.ip()
        )));
    }
    if alt_ip == primary_ip {
        return Err(ConfigError::invalid(format!(
            "stun.alternate_ip = {alt_ip} is also the listen IP; it must be a different (second) IP address of this host"
        )));
    }
    Ok(primary_ip)
}

/// The distinct ports of the same-family listen addresses, in order; none
/// may be 0, since the alternate port is derived from it.
fn primary_ports(same_family: &[SocketAddr]) -> Result<Vec<u16>, ConfigError> {
    let mut ports: Vec<u16> = Vec::new();
    for addr in same_family {
        if !ports.contains(&addr.port()) {
            ports.push(addr.port());
        }
    }
    if ports.contains(&0) {
        return Err(ConfigError::invalid(
            "stun.listen uses port 0 (any free port), which cannot be combined with stun.alternate_ip; use fixed ports",
        ));
    }
    Ok(ports)
}

/// Without `stun.alternate_port`: each listen port P pairs with P + 1,
/// which must exist and must not be another listen port.
fn next_port_pairs(primary_ports: &[u16]) -> Result<Vec<PortPair>, ConfigError> {
    let mut pairs = Vec::with_capacity(primary_ports.len());
    for &port in primary_ports {
        let Some(alternate) = port.checked_add(1) else {
            return Err(ConfigError::invalid(format!(
                "stun.listen port {port} has no port + 1 to use as the alternate port; set stun.alternate_port"
            )));
        };
        if primary_ports.contains(&alternate) {
            return Err(ConfigError::invalid(format!(
                "stun.listen ports {port} and {alternate} collide: with stun.alternate_ip set, each listen port P also uses P + 1 as its alternate port; drop one of them or space them further apart"
            )));
        }
        pairs.push(PortPair {
            primary: port,
            alternate,
        });
    }
    Ok(pairs)
}

/// Whether two listeners of one transport would claim the same port: the
/// same port and family, and the same IP or a wildcard on either side
/// (`[::]` is bound IPv6-only, so it does not cover IPv4). Port 0 means a
/// free port chosen by the kernel, which never collides.
pub(super) fn addresses_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Result of [`Settings::plan_listeners`].
pub(super) struct ListenerPlan {
    listeners: Vec<Listener>,
    nat: Option<NatDiscoveryPlan>,
}

/// `a, b, c`.
fn join(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn is_broadcast(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

pub(super) fn family_name(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// `a b c`, or `empty` for an empty list.
pub(super) fn list_or_empty(ips: &[IpAddr]) -> String {
    if ips.is_empty() {
        "empty".to_owned()
    } else {
        ips.iter()
            .map(IpAddr::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl TlsSettings {
    /// Whether TLS and DTLS are served at all (a certificate is set).
    pub fn enabled(&self) -> bool {
        self.certificate.is_some()
    }

    /// How often to check the certificate files for changes; `None` when
    /// `reload_interval` is 0 (reload only on SIGHUP).
    pub fn reload_every(&self) -> Option<Duration> {
        (self.reload_interval > 0).then(|| Duration::from_secs(self.reload_interval.into()))
    }
}

impl LimitsSettings {
    /// `handshake_timeout` as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout.into())
    }

    /// `auth_timeout` as a duration.
    pub fn auth_timeout(&self) -> Duration {
        Duration::from_secs(self.auth_timeout.into())
    }

    /// `idle_timeout` as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout.into())
    }
}
