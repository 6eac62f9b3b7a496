//! Validation: everything about the settings that can be checked without
//! binding sockets or reading files. The ranges declared with each setting
//! are checked first (generated from the declarations); what follows are
//! the rules a single range cannot say — lengths in characters, lists
//! without duplicates, settings that must agree with each other, listener
//! collisions. Every message names the key, says what is wrong and how to
//! fix it, on one line.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use super::errors::ConfigError;
use super::plan::{addresses_overlap, is_broadcast};
use super::settings::{
    DatabaseSettings, LimitsSettings, MAX_REALM_CHARS, MAX_SECRET_BYTES, MAX_SOFTWARE_CHARS,
    MAX_USERNAME_BYTES, MAX_WORKERS, MIN_RELAY_PORT, Settings, TurnSettings,
};
use super::values::IceAuth;

impl Settings {
    /// Checks everything that can be checked without binding sockets.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check_declared_ranges()?;
        self.validate_server()?;
        self.validate_log()?;
        if !self.stun.udp && !self.stun.tcp {
            return Err(ConfigError::invalid(
                "stun.udp and stun.tcp are both false, so nothing would be served; enable at least one",
            ));
        }
        self.plan_listeners()?;
        self.validate_turn()?;
        self.validate_database()?;
        self.validate_tls()?;
        self.validate_limits()?;
        self.validate_admin()?;
        self.validate_drain()?;
        self.validate_ice()?;
        self.validate_fleet()?;
        self.validate_xdp()
    }

    /// `[fleet]`: a registering relay relays (its row is what clients are
    /// given), and a row outlives a late heartbeat or two.
    fn validate_fleet(&self) -> Result<(), ConfigError> {
        let fleet = &self.fleet;
        if fleet.register && !self.turn.enabled {
            return Err(ConfigError::invalid(
                "fleet.register hands this relay out to clients, but turn.enabled is false; enable TURN or leave fleet.register off",
            ));
        }
        if fleet.expire_after < 2 * fleet.heartbeat_interval {
            return Err(ConfigError::invalid(format!(
                "fleet.expire_after = {} is less than twice fleet.heartbeat_interval = {}: one late heartbeat would drop the relay; raise expire_after (default 30) or lower heartbeat_interval (default 5)",
                fleet.expire_after, fleet.heartbeat_interval
            )));
        }
        let name = fleet.name.trim();
        if !name.is_empty()
            && let Err(why) = turnpike_fleet::check_host_name(name)
        {
            return Err(ConfigError::invalid(format!(
                "fleet.name = {name:?}: {why}; give the name clients reach this relay by, e.g. \"turn1.example.com\", or \"\" for its first address"
            )));
        }
        Ok(())
    }

    /// `[server]`: a worker count that cannot be a typo for tens of
    /// thousands of threads, and a SOFTWARE value STUN can carry.
    fn validate_server(&self) -> Result<(), ConfigError> {
        if self.server.workers > MAX_WORKERS {
            return Err(ConfigError::invalid(format!(
                "server.workers = {} is more than the maximum {MAX_WORKERS}; use 0 for one worker per CPU",
                self.server.workers
            )));
        }
        let software_chars = self.server.software.chars().count();
        if software_chars > MAX_SOFTWARE_CHARS {
            return Err(ConfigError::invalid(format!(
                "server.software is {software_chars} characters long; STUN allows at most {MAX_SOFTWARE_CHARS} (RFC 8489 section 14.14)"
            )));
        }
        Ok(())
    }

    /// `[log]`: a filter that parses, so a typo cannot quietly turn logging
    /// off.
    fn validate_log(&self) -> Result<(), ConfigError> {
        if self.log.level.trim().is_empty() {
            return Err(ConfigError::invalid(
                "log.level is empty; use a level such as \"info\" or directives such as \"info,turnpike_core=debug\"",
            ));
        }
        if let Err(err) = crate::logging::parse_filter(&self.log.level) {
            return Err(ConfigError::invalid(format!(
                "log.level {:?} is not a valid filter: {err}; use a level (error, warn, info, debug, trace) or directives such as \"info,turnpike_core=debug\"",
                self.log.level
            )));
        }
        Ok(())
    }

    /// The `[turn]` rules (checked whether or not TURN is enabled, so that
    /// turning it on later cannot reveal old mistakes).
    fn validate_turn(&self) -> Result<(), ConfigError> {
        self.check_realm()?;
        self.check_relay_ips()?;
        self.advertised()?;
        self.check_relay_ports()?;
        self.check_lifetimes()?;
        self.check_users()?;
        self.check_secrets()?;
        self.check_rest_separator()
    }

    /// `turn.realm`: set, short enough for STUN, printable.
    fn check_realm(&self) -> Result<(), ConfigError> {
        let t = &self.turn;
        let realm_chars = t.realm.chars().count();
        if t.realm.trim().is_empty() {
            return Err(ConfigError::invalid(
                "turn.realm is empty; set the realm clients authenticate in, e.g. \"example.com\"",
            ));
        }
        if realm_chars > MAX_REALM_CHARS {
            return Err(ConfigError::invalid(format!(
                "turn.realm is {realm_chars} characters long; STUN allows at most {MAX_REALM_CHARS} (RFC 8489 section 14.9)"
            )));
        }
        if t.realm.chars().any(char::is_control) {
            return Err(ConfigError::invalid(
                "turn.realm contains a control character; use printable text",
            ));
        }
        Ok(())
    }

    /// `turn.relay_ips`: specific unicast IPs of this host, each once, IPv4
    /// written as IPv4.
    fn check_relay_ips(&self) -> Result<(), ConfigError> {
        let t = &self.turn;
        let mut seen = BTreeSet::new();
        for &ip in &t.relay_ips {
            if ip.is_unspecified() {
                return Err(ConfigError::invalid(format!(
                    "turn.relay_ips: {ip} is a wildcard; give the specific IP of this host to relay on, or leave relay_ips empty to relay on the IP each request arrived on"
                )));
            }
            if ip.is_multicast() || is_broadcast(ip) {
                return Err(ConfigError::invalid(format!(
                    "turn.relay_ips: {ip} is not a unicast address; give an IP address of this host"
                )));
            }
            if let IpAddr::V6(v6) = ip
                && let Some(v4) = v6.to_ipv4_mapped()
            {
                return Err(ConfigError::invalid(format!(
                    "turn.relay_ips: {ip} is an IPv4-mapped IPv6 address; write it as {v4}"
                )));
            }
            if !seen.insert(ip) {
                return Err(ConfigError::invalid(format!(
                    "turn.relay_ips contains {ip} twice; remove the duplicate"
                )));
            }
        }
        Ok(())
    }

    /// `turn.min_port`..`turn.max_port`: unprivileged, in order, and with a
    /// port pair for every worker.
    fn check_relay_ports(&self) -> Result<(), ConfigError> {
        let t = &self.turn;
        let default = TurnSettings::default();
        if t.min_port < MIN_RELAY_PORT {
            return Err(ConfigError::invalid(format!(
                "turn.min_port = {} is below {MIN_RELAY_PORT}; relay ports must be unprivileged (the default range is {}-{})",
                t.min_port, default.min_port, default.max_port
            )));
        }
        if t.min_port > t.max_port {
            return Err(ConfigError::invalid(format!(
                "turn.min_port = {} is above turn.max_port = {}; the relay port range is min_port to max_port inclusive",
                t.min_port, t.max_port
            )));
        }
        // Each worker relays on its own share of the port pairs (2k, 2k+1).
        let pairs = usize::from(t.max_port / 2 - t.min_port / 2) + 1;
        let workers = self.worker_threads();
        if t.enabled && pairs < workers {
            return Err(ConfigError::invalid(format!(
                "turn relay port range {}-{} has {pairs} port pairs for {workers} workers, which each need their own; widen the range or lower server.workers",
                t.min_port, t.max_port
            )));
        }
        Ok(())
    }

    /// The allocation lifetimes agree (their ranges are declared).
    fn check_lifetimes(&self) -> Result<(), ConfigError> {
        let t = &self.turn;
        if t.default_lifetime > t.max_lifetime {
            return Err(ConfigError::invalid(format!(
                "turn.default_lifetime = {} is above turn.max_lifetime = {}; lower default_lifetime or raise max_lifetime",
                t.default_lifetime, t.max_lifetime
            )));
        }
        Ok(())
    }

    /// `turn.users`: named, short and printable names, each once, each
    /// with a password. Passwords never appear in the messages.
    fn check_users(&self) -> Result<(), ConfigError> {
        let t = &self.turn;
        let mut names = BTreeSet::new();
        for (index, user) in t.users.iter().enumerate() {
            let n = index + 1;
            if user.username.is_empty() {
                return Err(ConfigError::invalid(format!(
                    "turn.users entry {n} has an empty username; give each user a name"
                )));
            }
            if user.username.len() > MAX_USERNAME_BYTES {
                return Err(ConfigError::invalid(format!(
                    "turn.users entry {n}: username is {} bytes long; STUN allows at most {MAX_USERNAME_BYTES} (RFC 8489 section 14.3)",
                    user.username.len()
                )));
            }
            if user.username.chars().any(char::is_control) {
                return Err(ConfigError::invalid(format!(
                    "turn.users entry {n}: username {:?} contains a control character; use printable text",
                    user.username
                )));
            }
            if user.password.is_empty() {
                return Err(ConfigError::invalid(format!(
                    "turn.users: user {:?} has an empty password; set one",
                    user.username
                )));
            }
            if !names.insert(user.username.as_str()) {
                return Err(ConfigError::invalid(format!(
                    "turn.users: duplicate user {:?}; each username may appear once",
                    user.username
                )));
            }
        }
        Ok(())
    }

    /// `turn.secrets`: none empty, too long or repeated. Secrets are named
    /// by their position, never by their value.
    fn check_secrets(&self) -> Result<(), ConfigError> {
        let t = &self.turn;
        for (index, secret) in t.secrets.iter().enumerate() {
            if secret.is_empty() {
                return Err(ConfigError::invalid(format!(
                    "turn.secrets entry {index} is empty; remove it or give a secret (e.g. from `turnpike secret add --generate`)"
                )));
            }
            if secret.len() > MAX_SECRET_BYTES {
                return Err(ConfigError::invalid(format!(
                    "turn.secrets entry {index} is {} bytes long; at most {MAX_SECRET_BYTES} are allowed",
                    secret.len()
                )));
            }
            if let Some(first) = t.secrets[..index].iter().position(|s| s == secret) {
                return Err(ConfigError::invalid(format!(
                    "turn.secrets entries {first} and {index} are the same secret; remove the duplicate"
                )));
            }
        }
        Ok(())
    }

    /// `turn.rest_separator`: a character that cannot be part of the expiry
    /// time or blur the user id.
    fn check_rest_separator(&self) -> Result<(), ConfigError> {
        let t = &self.turn;
        let sep = t.rest_separator;
        if sep.is_ascii_digit() || sep.is_whitespace() || sep.is_control() {
            return Err(ConfigError::invalid(format!(
                "turn.rest_separator {sep:?} cannot separate the expiry time from the user id; use a character that is not a digit, whitespace or a control character, such as \":\""
            )));
        }
        Ok(())
    }

    /// The `[drain]` rules: alternates a client can be sent to (a unicast
    /// IP and a port), each once.
    fn validate_drain(&self) -> Result<(), ConfigError> {
        let alternates = &self.drain.alternate_servers;
        for (i, addr) in alternates.iter().enumerate() {
            let ip = addr.ip();
            if ip.is_unspecified() || ip.is_multicast() || is_broadcast(ip) || addr.port() == 0 {
                return Err(ConfigError::invalid(format!(
                    "drain.alternate_servers contains {addr}, which no client can be sent to; give another relay's unicast IP and port, e.g. \"203.0.113.7:3478\""
                )));
            }
            if alternates[..i].contains(addr) {
                return Err(ConfigError::invalid(format!(
                    "drain.alternate_servers contains {addr} twice; remove the duplicate"
                )));
            }
        }
        Ok(())
    }

    /// The `[ice]` and `[discovery]` rules: a listener and secrets to serve
    /// with, what each `auth` mode needs, relay URLs that parse, origins
    /// that are origins. (The token file is read when the endpoint starts,
    /// like the admin one.)
    fn validate_ice(&self) -> Result<(), ConfigError> {
        let ice = &self.ice;
        if ice.enabled && self.admin.listen.is_empty() {
            return Err(ConfigError::invalid(
                "ice.enabled serves the ICE-server endpoint on the admin listener, but admin.listen is empty; set admin.listen (e.g. [\"127.0.0.1:9641\"])",
            ));
        }
        if ice.enabled && !self.turn.enabled {
            return Err(ConfigError::invalid(
                "ice.enabled hands out credentials for this server's relays, but turn.enabled is false; enable TURN or run `turnpike ice-config` on its own",
            ));
        }
        match ice.auth {
            IceAuth::Token if ice.token_file.is_none() => {
                return Err(ConfigError::invalid(
                    "ice.auth = \"token\" needs ice.token_file: write a token to a file (openssl rand -hex 32 > /etc/turnpike/ice.token) and name it there",
                ));
            }
            IceAuth::Header if ice.user_header.trim().is_empty() => {
                return Err(ConfigError::invalid(
                    "ice.auth = \"header\" needs ice.user_header: the header your proxy sets to the authenticated user's id (e.g. \"X-User-Id\")",
                ));
            }
            _ => {}
        }
        let header = ice.user_header.trim();
        if !header.is_empty() && axum::http::HeaderName::try_from(header).is_err() {
            return Err(ConfigError::invalid(format!(
                "ice.user_header = {header:?} is not a valid HTTP header name; use letters, digits and dashes, e.g. \"X-User-Id\""
            )));
        }
        for origin in &ice.cors_origins {
            let scheme_ok = origin.starts_with("https://") || origin.starts_with("http://");
            if origin != "*" && (!scheme_ok || origin.trim_end_matches('/') != origin) {
                return Err(ConfigError::invalid(format!(
                    "ice.cors_origins contains {origin:?}, which is not an origin; write scheme, host and port without a path, e.g. \"https://app.example.com\", or \"*\""
                )));
            }
        }
        for url in &self.discovery.relays {
            if let Err(why) = turnpike_fleet::parse_relay_url(url) {
                return Err(ConfigError::invalid(format!(
                    "discovery.relays contains {url:?}: {why}; write TURN URLs such as \"turn:turn1.example.com:3478?transport=udp\" or \"turns:turn1.example.com:5349?transport=tcp\""
                )));
            }
        }
        let domain = self.discovery.srv_domain.trim();
        if !domain.is_empty()
            && (domain.len() > 253
                || domain.contains(|c: char| !(c.is_ascii_alphanumeric() || "-._".contains(c))))
        {
            return Err(ConfigError::invalid(format!(
                "discovery.srv_domain = {domain:?} is not a domain name; give the base of the SRV names, e.g. \"example.com\" for _turn._udp.example.com"
            )));
        }
        Ok(())
    }

    /// The `[xdp]` rules: interface names as the kernel allows them, no
    /// duplicate, and TURN on (the fast path relays TURN channels).
    fn validate_xdp(&self) -> Result<(), ConfigError> {
        let interfaces = &self.xdp.interfaces;
        for (i, name) in interfaces.iter().enumerate() {
            if name.is_empty()
                || name.len() > 15
                || name.contains(['/', ' ', '\0'])
                || name == "."
                || name == ".."
            {
                return Err(ConfigError::invalid(format!(
                    "xdp.interfaces contains {name:?}, which is not an interface name (at most 15 characters, no '/' or spaces); list names as `ip link` shows them"
                )));
            }
            if interfaces[..i].contains(name) {
                return Err(ConfigError::invalid(format!(
                    "xdp.interfaces contains {name} twice; remove the duplicate"
                )));
            }
        }
        if !interfaces.is_empty() && !self.turn.enabled {
            return Err(ConfigError::invalid(
                "xdp.interfaces is set but TURN is off, and the XDP fast path only relays TURN channels; turn TURN on or leave xdp.interfaces empty",
            ));
        }
        Ok(())
    }

    /// The `[database]` rules: a URL Turnpike can use (the ranges are
    /// declared).
    fn validate_database(&self) -> Result<(), ConfigError> {
        let db = &self.database;
        if db.url.trim().is_empty() && db.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid(format!(
                "database.data_dir is empty; give the directory of the default SQLite database (default {}) or set database.url",
                DatabaseSettings::default().data_dir.display()
            )));
        }
        self.location()?;
        Ok(())
    }

    /// The `[tls]` rules: paths that are not empty, a key only with a
    /// certificate, listen lists without duplicates, and — when TLS is on —
    /// no TLS or DTLS listener on a STUN listener of the same transport.
    /// The files themselves are checked by [`crate::tls::Certificates::load`].
    fn validate_tls(&self) -> Result<(), ConfigError> {
        let tls = &self.tls;
        if tls
            .certificate
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(ConfigError::invalid(
                "tls.certificate is empty; give the path of the PEM certificate chain, or remove the key to leave TLS and DTLS off",
            ));
        }
        if tls
            .private_key
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(ConfigError::invalid(
                "tls.private_key is empty; give the path of the PEM private key, or remove the key when the key follows the chain in tls.certificate",
            ));
        }
        if tls.private_key.is_some() && tls.certificate.is_none() {
            return Err(ConfigError::invalid(
                "tls.private_key is set but tls.certificate is not; set tls.certificate to the PEM certificate chain (TLS and DTLS stay off without it)",
            ));
        }
        for (key, list) in [("listen", &tls.listen), ("dtls_listen", &tls.dtls_listen)] {
            let mut seen = BTreeSet::new();
            for addr in list {
                if !seen.insert(*addr) {
                    return Err(ConfigError::invalid(format!(
                        "tls.{key} contains {addr} twice; remove the duplicate"
                    )));
                }
                if addr.ip().is_multicast() {
                    return Err(ConfigError::invalid(format!(
                        "tls.{key} address {addr} is a multicast address; use a unicast address of this host or a wildcard (0.0.0.0 / [::])"
                    )));
                }
            }
        }
        if !tls.enabled() {
            return Ok(());
        }
        if tls.listen.is_empty() && tls.dtls_listen.is_empty() {
            return Err(ConfigError::invalid(
                "tls.certificate is set but tls.listen and tls.dtls_listen are both empty, so nothing would use it; list addresses such as \"0.0.0.0:5349\" or remove tls.certificate",
            ));
        }
        // Listeners are bound with SO_REUSEPORT (one per worker), so a TLS
        // listener on a STUN listener's address would not fail to bind: the
        // kernel would silently split connections between the two.
        let stun: Vec<SocketAddr> = self.listeners().iter().map(|l| l.addr).collect();
        for (key, list, what, transport, stun_key, stun_on) in [
            (
                "listen",
                &tls.listen,
                "TLS",
                "TCP",
                "stun.tcp",
                self.stun.tcp,
            ),
            (
                "dtls_listen",
                &tls.dtls_listen,
                "DTLS",
                "UDP",
                "stun.udp",
                self.stun.udp,
            ),
        ] {
            if !stun_on {
                continue;
            }
            for &addr in list {
                if let Some(other) = stun.iter().find(|&&s| addresses_overlap(s, addr)) {
                    return Err(ConfigError::invalid(format!(
                        "tls.{key} address {addr} collides with the STUN listener {other} (both {transport}, port {}); give {what} another port (5349 is the standard one) or turn {stun_key} off",
                        addr.port()
                    )));
                }
            }
        }
        Ok(())
    }

    /// The `[limits]` rules beyond the declared ranges: the total buffer
    /// holds at least one connection's.
    fn validate_limits(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let default = LimitsSettings::default().max_buffered_bytes_total;
        if l.max_buffered_bytes_total < u64::from(l.max_buffered_bytes) {
            return Err(ConfigError::invalid(format!(
                "limits.max_buffered_bytes_total = {} is below limits.max_buffered_bytes = {}; give it at least that (default {default}: {} MiB)",
                l.max_buffered_bytes_total,
                l.max_buffered_bytes,
                default >> 20
            )));
        }
        Ok(())
    }

    /// The `[admin]` rules: no duplicate, no multicast, a token for any
    /// address other than loopback, no address that a STUN or TLS listener
    /// (both TCP) would share, and restund's command port on loopback, off
    /// the UDP listeners.
    fn validate_admin(&self) -> Result<(), ConfigError> {
        let admin = &self.admin;
        if admin
            .token_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(ConfigError::invalid(
                "admin.token_file is empty; give the path of a file holding the admin bearer token (e.g. made with `openssl rand -hex 32`), or remove the key",
            ));
        }
        let mut seen = BTreeSet::new();
        for &addr in &admin.listen {
            if !seen.insert(addr) {
                return Err(ConfigError::invalid(format!(
                    "admin.listen contains {addr} twice; remove the duplicate"
                )));
            }
            let ip = addr.ip().to_canonical();
            if ip.is_multicast() || is_broadcast(ip) {
                return Err(ConfigError::invalid(format!(
                    "admin.listen address {addr} is not a unicast address; use 127.0.0.1:PORT or [::1]:PORT"
                )));
            }
            if !ip.is_loopback() && admin.token_file.is_none() {
                return Err(ConfigError::invalid(format!(
                    "admin.listen address {addr} is not a loopback address, and admin.token_file is not set; set admin.token_file to a file holding a bearer token (e.g. `openssl rand -hex 32 > /etc/turnpike/admin.token`), or use 127.0.0.1:PORT or [::1]:PORT"
                )));
            }
        }
        let mut tcp: Vec<(SocketAddr, &str)> = Vec::new();
        if self.stun.tcp {
            tcp.extend(self.listeners().iter().map(|l| (l.addr, "STUN")));
        }
        if self.tls.enabled() {
            tcp.extend(self.tls.listen.iter().map(|&a| (a, "TLS")));
        }
        for &addr in &admin.listen {
            if let Some((other, what)) = tcp.iter().find(|(s, _)| addresses_overlap(*s, addr)) {
                return Err(ConfigError::invalid(format!(
                    "admin.listen address {addr} collides with the {what} listener {other} (both TCP, port {}); give the admin endpoint another port",
                    addr.port()
                )));
            }
        }
        self.validate_restund()
    }

    /// `admin.restund_listen`: restund's command port has no
    /// authentication, so loopback only (as restund's default,
    /// 127.0.0.1:33000), and not on a UDP listener's port.
    fn validate_restund(&self) -> Result<(), ConfigError> {
        let Some(addr) = self.admin.restund_listen else {
            return Ok(());
        };
        if !addr.ip().to_canonical().is_loopback() {
            return Err(ConfigError::invalid(format!(
                "admin.restund_listen address {addr} is not a loopback address, and restund's command port has no authentication; use 127.0.0.1:PORT or [::1]:PORT (restund's default is 127.0.0.1:33000)"
            )));
        }
        let mut udp: Vec<(SocketAddr, &str)> = Vec::new();
        if self.stun.udp {
            udp.extend(self.listeners().iter().map(|l| (l.addr, "STUN")));
        }
        if self.tls.enabled() {
            udp.extend(self.tls.dtls_listen.iter().map(|&a| (a, "DTLS")));
        }
        if let Some((other, what)) = udp.iter().find(|(s, _)| addresses_overlap(*s, addr)) {
            return Err(ConfigError::invalid(format!(
                "admin.restund_listen address {addr} collides with the {what} listener {other} (both UDP, port {}); give restund's command port another port",
                addr.port()
            )));
        }
        Ok(())
    }
}
