//! The TOML configuration: its schema and defaults, overrides from the
//! environment and the command line, validation, and the resolved forms
//! ([`Listener`], [`NatDiscovery`]) the runtime consumes.
//!
//! Loading is split into pure steps so each is unit-testable without files or
//! processes: parse ([`Config::parse_toml`]), overlay ([`Config::apply`]),
//! validate ([`Config::validate`]). [`Config::resolve`] chains them in the
//! order that gives the documented precedence:
//! built-in defaults < config file < environment < command-line flags.
//! (clap already merges environment and flags into one [`Overrides`] with
//! flags winning, so this module only sees "file" and "overrides".)
//!
//! Every error is a single line that names the file, line and key where it
//! can, because operators read these in `journalctl` and container logs, where
//! toml's multi-line snippets with carets come out mangled.
//!
//! The schema is a struct per `[section]`, each `deny_unknown_fields`, so a
//! misspelt key is an error rather than a silently ignored setting. New
//! sections (credential databases, TLS, metrics) slot in as new fields of
//! [`Config`] plus an entry in `SECTIONS`.
//!
//! `[turn]` ([`TurnConfig`]) becomes the core's
//! [`turnpike_core::TurnConfig`] through [`Config::core`]; its static users
//! are handed to the shards separately ([`Config::users`],
//! [`Config::user_keys`]) because the core never sees passwords.

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

/// Upper bound on `server.workers`. Far above any real core count; it exists
/// so a typo like `workers = 80000` fails at start-up instead of trying to
/// spawn tens of thousands of threads.
pub const MAX_WORKERS: usize = 1024;

/// RFC 8489 §14.14: SOFTWARE "MUST be a UTF-8 encoded sequence of fewer than
/// 128 characters".
pub const MAX_SOFTWARE_CHARS: usize = 127;

/// RFC 8489 §14.9: REALM "MUST be a UTF-8 encoded sequence of fewer than
/// 128 characters".
pub const MAX_REALM_CHARS: usize = 127;

/// RFC 8489 §14.3: USERNAME "MUST contain a UTF-8-encoded sequence of fewer
/// than 509 bytes".
pub const MAX_USERNAME_BYTES: usize = 508;

/// Longest `turn.secrets` entry, in bytes (the database's limit, which is
/// coturn's).
pub const MAX_SECRET_BYTES: usize = turnpike_store::MAX_SECRET_LEN;

/// Upper bound on `database.pool_size`.
pub const MAX_POOL_SIZE: usize = 64;

/// Lowest allowed `turn.min_port`: relay ports are unprivileged ports.
pub const MIN_RELAY_PORT: u16 = 1024;

/// Upper bound on `tls.reload_interval` (one day).
pub const MAX_RELOAD_INTERVAL_SECS: u32 = 86_400;

/// Upper bound on `limits.max_handshakes`.
pub const MAX_HANDSHAKES: u32 = 1_000_000;

/// Upper bound on the `limits` timeouts (an hour).
pub const MAX_CONNECTION_TIMEOUT_SECS: u32 = 3_600;

/// Lower bound on `limits.max_buffered_bytes`: one full-size TLS record.
pub const MIN_BUFFERED_BYTES: u32 = 16_384;

/// Upper bound on `limits.max_buffered_bytes` (64 MiB per connection).
pub const MAX_BUFFERED_BYTES: u32 = 64 << 20;

/// Upper bound on `limits.max_peer_connections_per_allocation`.
pub const MAX_PEER_CONNECTIONS_PER_ALLOCATION: u32 = 1024;

/// Upper bound on `turn.max_lifetime` and `turn.nonce_lifetime` (one day).
/// Clients refresh long before; it exists so a typo such as
/// `max_lifetime = 36000000` fails at start-up.
pub const MAX_LIFETIME_SECS: u32 = 86_400;

/// The whole configuration file. Field names are the TOML section names.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[server]`: process-wide settings.
    pub server: ServerConfig,
    /// `[log]`: logging.
    pub log: LogConfig,
    /// `[stun]`: STUN listeners and RFC 5780 behaviour.
    pub stun: StunConfig,
    /// `[turn]`: TURN relaying (RFC 8656) and its long-term credentials.
    pub turn: TurnConfig,
    /// `[database]`: where users and shared secrets are stored.
    pub database: DatabaseConfig,
    /// `[tls]`: certificates and listeners for TLS (over TCP) and DTLS
    /// (over UDP).
    pub tls: TlsConfig,
    /// `[limits]`: per-connection and handshake limits of the stream and
    /// DTLS transports.
    pub limits: LimitsConfig,
    /// `[admin]`: the admin HTTP endpoint (`/metrics`, `/status`).
    pub admin: AdminConfig,
    /// `[xdp]`: the XDP relay fast path.
    pub xdp: XdpConfig,
}

/// `[xdp]` section: the relay fast path ([`turnpike_xdp`]). An XDP program
/// on the listed interfaces relays ChannelData between UDP clients and their
/// peers (IPv4 or IPv6) in the driver, without the sockets; everything else still
/// goes through them. Off while `interfaces` is empty. Needs root (or
/// CAP_BPF and CAP_NET_ADMIN) and Linux 5.12 or newer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "an [xdp] table")]
pub struct XdpConfig {
    /// Network interfaces that clients' and peers' traffic arrives on
    /// (`eth0`; `lo` for tests); empty: off.
    pub interfaces: Vec<String>,
    /// How the program is attached.
    pub mode: XdpMode,
}

/// `xdp.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// In the driver where it supports XDP, generic elsewhere.
    #[default]
    Auto,
    /// In the driver only (an interface whose driver lacks XDP is an error).
    Native,
    /// Generic XDP (any device, smaller gain).
    Generic,
}

impl XdpMode {
    /// As `xdp.mode` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        }
    }
}

/// `[admin]` section: a small HTTP endpoint for monitoring
/// ([`crate::admin_http`]): `GET /metrics` (Prometheus text) and
/// `GET /status` (JSON). Off while `listen` is empty. It has no
/// authentication, so [`Config::validate`] refuses an address other than a
/// loopback one unless `allow_remote` is set (for a management network).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "an [admin] table")]
pub struct AdminConfig {
    /// Addresses (IP:PORT) served over plain HTTP/1.1; empty: off.
    #[serde(deserialize_with = "de_list")]
    pub listen: Vec<SocketAddr>,
    /// Allow `listen` addresses other than loopback ones.
    pub allow_remote: bool,
}

/// `[tls]` section: STUN/TURN over TLS (RFC 8489 section 6.2.2,
/// "turns:" URLs) and DTLS (RFC 7350). Both are off until `certificate` is
/// set. The files are read and checked by [`crate::tls::Certificates`]
/// (at start, by `check-config`, and on every reload), not by
/// [`Config::validate`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a [tls] table")]
pub struct TlsConfig {
    /// PEM file with the server certificate, then its intermediates,
    /// optionally followed by the private key (restund's layout). `None`:
    /// TLS and DTLS off.
    pub certificate: Option<PathBuf>,
    /// PEM file with the private key; `None`: the key is in `certificate`.
    pub private_key: Option<PathBuf>,
    /// Addresses served with TLS over TCP (only when `certificate` is set).
    #[serde(deserialize_with = "de_list")]
    pub listen: Vec<SocketAddr>,
    /// Addresses served with DTLS over UDP (only when `certificate` is
    /// set); empty: no DTLS.
    #[serde(deserialize_with = "de_list")]
    pub dtls_listen: Vec<SocketAddr>,
    /// Lowest TLS version offered; TLS 1.0 and 1.1 never are.
    pub min_version: TlsVersion,
    /// Seconds between checks of the files for changes; 0: reload only on
    /// SIGHUP. See [`TlsConfig::reload_every`].
    pub reload_interval: u32,
}

impl Default for TlsConfig {
    fn default() -> Self {
        // RFC 8489 section 18.1: 5349 is the default port of "stuns" and
        // "turns", over TLS and DTLS alike.
        let both = vec![
            SocketAddr::from(([0, 0, 0, 0], 5349)),
            SocketAddr::from(([0u16; 8], 5349)),
        ];
        Self {
            certificate: None,
            private_key: None,
            listen: both.clone(),
            dtls_listen: both,
            min_version: TlsVersion::Tls12,
            reload_interval: 5,
        }
    }
}

impl TlsConfig {
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

/// The lowest TLS version offered over TCP. DTLS is always DTLS 1.2 (the
/// DTLS counterpart of TLS 1.2): OpenSSL 3.0, which the DTLS side uses, has
/// no DTLS 1.3 (RFC 9147).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, clap::ValueEnum)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3 (the default: browsers and coturn's clients speak
    /// both, older VoIP stacks only 1.2).
    #[default]
    #[value(name = "1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[value(name = "1.3")]
    Tls13,
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        })
    }
}

impl TlsVersion {
    /// Parses `"1.2"` or `"1.3"`; the message for anything else says what
    /// is accepted (and why 1.0 and 1.1 are not).
    pub fn parse(text: &str) -> Result<TlsVersion, String> {
        match text.trim() {
            "1.2" => Ok(TlsVersion::Tls12),
            "1.3" => Ok(TlsVersion::Tls13),
            old @ ("1.0" | "1" | "1.1") => Err(format!(
                "TLS {} is not offered (RFC 8996 deprecates TLS 1.0 and 1.1); use \"1.2\" or \"1.3\"",
                if old == "1" { "1.0" } else { old }
            )),
            _ => Err(format!(
                "{text:?} is not a TLS version; use \"1.2\" or \"1.3\""
            )),
        }
    }
}

/// `"1.2"` or `"1.3"`; also the bare TOML floats `1.2` and `1.3`, which is
/// what people write.
impl<'de> Deserialize<'de> for TlsVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = TlsVersion;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"1.2\" or \"1.3\"")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<TlsVersion, E> {
                TlsVersion::parse(text).map_err(E::custom)
            }
            fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<TlsVersion, E> {
                TlsVersion::parse(&value.to_string()).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<TlsVersion, E> {
                TlsVersion::parse(&value.to_string()).map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `[limits]` section: how much one source and the handshakes may hold,
/// for the TCP, TLS and DTLS transports (UDP has its own rate limits).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a [limits] table")]
pub struct LimitsConfig {
    /// TCP, TLS and DTLS connections from one source IP; 0 = unlimited.
    pub max_connections_per_ip: u32,
    /// TCP, TLS and DTLS connections in all; 0 = unlimited.
    pub max_connections: u32,
    /// IPv6 clients count as one source per prefix of this many bits for
    /// every per-source limit (connections, challenges, DTLS handshakes).
    pub ipv6_prefix: u8,
    /// TLS and DTLS handshakes in progress, server-wide.
    pub max_handshakes: u32,
    /// TLS and DTLS handshakes one source may start per second.
    pub handshakes_per_second_per_ip: u32,
    /// Seconds a TLS or DTLS handshake may take.
    pub handshake_timeout: u32,
    /// Seconds a connection may stay open without a successful
    /// authenticated request (against slowloris-style exhaustion).
    pub auth_timeout: u32,
    /// Seconds without any data after which a connection is closed.
    pub idle_timeout: u32,
    /// Outgoing bytes queued per connection before relayed data is dropped.
    pub max_buffered_bytes: u32,
    /// Outgoing bytes queued over all connections (split between the
    /// workers) before relayed data is dropped.
    pub max_buffered_bytes_total: u64,
    /// TCP connections to or from peers (RFC 6062) that one TCP allocation
    /// may hold at once, in any state (connecting, waiting for
    /// ConnectionBind, relaying); a Connect beyond it gets 508 and a peer
    /// connecting beyond it is refused.
    pub max_peer_connections_per_allocation: u32,
    /// The same counted server-wide (each holds two sockets and up to
    /// 32 KiB of pipe buffers); 0 = unlimited.
    pub max_peer_connections: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections_per_ip: 64,
            max_connections: 50_000,
            ipv6_prefix: turnpike_core::SourcePrefix::DEFAULT_IPV6_BITS,
            max_handshakes: 1024,
            handshakes_per_second_per_ip: 100,
            handshake_timeout: 10,
            auth_timeout: 30,
            idle_timeout: 600,
            max_buffered_bytes: 262_144,
            max_buffered_bytes_total: 268_435_456,
            max_peer_connections_per_allocation: 32,
            max_peer_connections: 16_384,
        }
    }
}

impl LimitsConfig {
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

/// Which tables the credential database has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseSchema {
    /// Turnpike's own, created and migrated automatically.
    #[default]
    Turnpike,
    /// An existing coturn database (`turnusers_lt`, `turn_secret`), read-only.
    Coturn,
}

impl fmt::Display for DatabaseSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DatabaseSchema::Turnpike => "turnpike",
            DatabaseSchema::Coturn => "coturn",
        })
    }
}

impl From<DatabaseSchema> for turnpike_store::Schema {
    fn from(schema: DatabaseSchema) -> Self {
        match schema {
            DatabaseSchema::Turnpike => turnpike_store::Schema::Turnpike,
            DatabaseSchema::Coturn => turnpike_store::Schema::Coturn,
        }
    }
}

/// `[database]` section: the credential store and its cache.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a [database] table")]
pub struct DatabaseConfig {
    /// `""`: SQLite file `turnpike.db` in `data_dir`; `sqlite:PATH`; or
    /// `postgres://user:password@host:port/dbname`.
    pub url: String,
    /// Directory of the default SQLite database, created if missing.
    pub data_dir: PathBuf,
    /// `turnpike` or `coturn` (read-only use of a coturn database).
    pub schema: DatabaseSchema,
    /// PostgreSQL connections kept open.
    pub pool_size: usize,
    /// Seconds to wait for a connection or a query before calling the
    /// database unreachable.
    pub timeout: u32,
    /// Seconds a looked-up user's keys are used before asking again.
    pub cache_ttl: u32,
    /// Seconds an unknown username is remembered as unknown.
    pub negative_cache_ttl: u32,
    /// Seconds, while the database is unreachable, that users seen within
    /// that time keep authenticating with the keys last read.
    pub grace_period: u32,
    /// Seconds between reloads of the shared secrets.
    pub secrets_refresh: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            data_dir: PathBuf::from("/var/lib/turnpike"),
            schema: DatabaseSchema::Turnpike,
            pool_size: 4,
            timeout: 5,
            cache_ttl: 60,
            negative_cache_ttl: 5,
            grace_period: 3600,
            secrets_refresh: 10,
        }
    }
}

/// `[server]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a [server] table")]
pub struct ServerConfig {
    /// Worker threads; 0 means one per CPU. See [`Config::worker_threads`].
    pub workers: usize,
    /// SOFTWARE attribute value; empty disables it. See [`Config::software`].
    pub software: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            workers: 0,
            // Deliberately without the version: advertising exact versions
            // to every client helps attackers pick exploits.
            software: "Turnpike".to_owned(),
        }
    }
}

/// `[log]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a [log] table")]
pub struct LogConfig {
    /// `tracing` EnvFilter directives, e.g. `info,turnpike_core=debug`.
    /// `RUST_LOG`, when set, replaces this (see [`crate::logging`]).
    pub level: String,
    /// Output format.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// `[stun]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a [stun] table")]
pub struct StunConfig {
    /// Addresses served on UDP and/or TCP (see `udp`, `tcp`).
    #[serde(deserialize_with = "de_list")]
    pub listen: Vec<SocketAddr>,
    /// Serve STUN over UDP.
    pub udp: bool,
    /// Serve STUN over TCP.
    pub tcp: bool,
    /// Second IP address of this host. Enables RFC 3489 CHANGE-REQUEST and
    /// RFC 5780 NAT behaviour discovery.
    #[serde(deserialize_with = "de_opt_ip")]
    pub alternate_ip: Option<IpAddr>,
    /// Alternate port; when unset and `alternate_ip` is set, each listen port
    /// P uses P + 1.
    pub alternate_port: Option<u16>,
    /// Honour RFC 5780 RESPONSE-PORT. Off by default because it lets a
    /// client aim our answers at another port of its address.
    pub response_port: bool,
    /// Honour RFC 5780 PADDING. Off by default; even when on, an answer is
    /// never padded beyond the request's own PADDING (no amplification).
    pub padding: bool,
}

impl Default for StunConfig {
    fn default() -> Self {
        Self {
            // Both families by default; the runtime sets IPV6_V6ONLY on the
            // [::] socket so the two do not collide.
            listen: vec![
                SocketAddr::from(([0, 0, 0, 0], 3478)),
                SocketAddr::from(([0u16; 8], 3478)),
            ],
            udp: true,
            tcp: true,
            alternate_ip: None,
            alternate_port: None,
            response_port: false,
            padding: false,
        }
    }
}

/// `[turn]` section. Turned into the core's [`turnpike_core::TurnConfig`] by
/// [`Config::core`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a [turn] table")]
pub struct TurnConfig {
    /// Serve TURN; `false` serves STUN only (TURN requests get 400).
    pub enabled: bool,
    /// REALM of the long-term credential mechanism.
    pub realm: String,
    /// IPs to bind relayed addresses on. Empty: the IP each request
    /// arrived on.
    #[serde(deserialize_with = "de_list")]
    pub relay_ips: Vec<IpAddr>,
    /// Public addresses for 1:1 NAT (coturn's `external-ip`).
    #[serde(deserialize_with = "de_list")]
    pub external_ips: Vec<ExternalIp>,
    /// Lowest relay port (inclusive).
    pub min_port: u16,
    /// Highest relay port (inclusive).
    pub max_port: u16,
    /// Allocation lifetime in seconds when the client asks for less.
    pub default_lifetime: u32,
    /// Longest allocation lifetime granted, in seconds.
    pub max_lifetime: u32,
    /// Seconds a nonce stays valid before 438 (Stale Nonce).
    pub nonce_lifetime: u32,
    /// Allocations per user; 0 = unlimited.
    pub user_quota: u32,
    /// Allocations server-wide; 0 = unlimited.
    pub total_quota: u32,
    /// Ranges the built-in refusal of loopback/private/reserved peers does
    /// not apply to.
    #[serde(deserialize_with = "de_list")]
    pub allowed_peer_ranges: Vec<IpNet>,
    /// Ranges always refused (beats `allowed_peer_ranges`).
    #[serde(deserialize_with = "de_list")]
    pub denied_peer_ranges: Vec<IpNet>,
    /// 401/438 answers per source address and second.
    pub challenges_per_second: u16,
    /// Static long-term users (`[[turn.users]]`).
    pub users: Vec<UserEntry>,
    /// Static shared secrets for time-limited credentials (TURN REST API,
    /// Wire's restund format); `k=N` of Wire usernames names the N-th.
    pub secrets: Vec<String>,
    /// Separator of TURN REST API usernames (`expiry:user-id`); a
    /// one-character string in TOML.
    #[serde(deserialize_with = "de_char")]
    pub rest_separator: char,
    /// Re-check the expiry of time-limited credentials on every request
    /// and end allocations with their credential.
    pub strict_expiry: bool,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            realm: "turnpike".to_owned(),
            relay_ips: Vec::new(),
            external_ips: Vec::new(),
            min_port: 49152,
            max_port: 65535,
            // RFC 8656 section 3.2's default lifetime.
            default_lifetime: 600,
            max_lifetime: 3600,
            nonce_lifetime: 600,
            user_quota: 0,
            total_quota: 0,
            allowed_peer_ranges: Vec::new(),
            denied_peer_ranges: Vec::new(),
            challenges_per_second: 1000,
            users: Vec::new(),
            secrets: Vec::new(),
            rest_separator: ':',
            strict_expiry: false,
        }
    }
}

/// One `[[turn.users]]` entry: a static long-term credential.
///
/// `Debug` prints the password as `<redacted>`, so a configuration can be
/// logged or shown in a panic message without leaking it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[turn.users]] table")]
pub struct UserEntry {
    /// USERNAME.
    pub username: String,
    /// Password (the long-term keys are derived from it with the realm).
    pub password: String,
}

impl fmt::Debug for UserEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserEntry")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// One `turn.external_ips` entry, in coturn's syntax: `PUBLIC` or
/// `PUBLIC/PRIVATE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExternalIp {
    /// The address clients reach this host on (advertised in
    /// XOR-RELAYED-ADDRESS).
    pub public: IpAddr,
    /// The relay IP it stands for; `None` means every relay IP of the
    /// public address's family that has no `PUBLIC/PRIVATE` entry of its own.
    pub private: Option<IpAddr>,
}

impl fmt::Display for ExternalIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.private {
            Some(private) => write!(f, "{}/{private}", self.public),
            None => write!(f, "{}", self.public),
        }
    }
}

/// Values from the environment and command line, overlaid on the file by
/// [`Config::apply`]. `None` means "not given: keep the file's value".
///
/// This is plain data so that this module does not depend on clap; the CLI
/// fills it (see `crate::cli`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `server.workers`.
    pub workers: Option<usize>,
    /// `server.software` (`Some("")` disables the attribute).
    pub software: Option<String>,
    /// `log.level`.
    pub log_level: Option<String>,
    /// `log.format`.
    pub log_format: Option<LogFormat>,
    /// `stun.listen`: replaces the file's list, it does not extend it, so an
    /// override can also remove an address.
    pub listen: Option<Vec<SocketAddr>>,
    /// `stun.udp`.
    pub udp: Option<bool>,
    /// `stun.tcp`.
    pub tcp: Option<bool>,
    /// `stun.alternate_ip`.
    pub alternate_ip: Option<IpAddr>,
    /// `stun.alternate_port`.
    pub alternate_port: Option<u16>,
    /// `stun.response_port`.
    pub response_port: Option<bool>,
    /// `stun.padding`.
    pub padding: Option<bool>,
    /// `turn.enabled`.
    pub turn: Option<bool>,
    /// `turn.realm`.
    pub realm: Option<String>,
    /// `turn.relay_ips` (replaces the file's list).
    pub relay_ips: Option<Vec<IpAddr>>,
    /// `turn.external_ips` (replaces the file's list).
    pub external_ips: Option<Vec<ExternalIp>>,
    /// `turn.min_port`.
    pub min_port: Option<u16>,
    /// `turn.max_port`.
    pub max_port: Option<u16>,
    /// `turn.default_lifetime`.
    pub default_lifetime: Option<u32>,
    /// `turn.max_lifetime`.
    pub max_lifetime: Option<u32>,
    /// `turn.nonce_lifetime`.
    pub nonce_lifetime: Option<u32>,
    /// `turn.user_quota`.
    pub user_quota: Option<u32>,
    /// `turn.total_quota`.
    pub total_quota: Option<u32>,
    /// `turn.allowed_peer_ranges` (replaces the file's list).
    pub allowed_peer_ranges: Option<Vec<IpNet>>,
    /// `turn.denied_peer_ranges` (replaces the file's list).
    pub denied_peer_ranges: Option<Vec<IpNet>>,
    /// `turn.challenges_per_second`.
    pub challenges_per_second: Option<u16>,
    /// `turn.users` (replaces the file's list).
    pub users: Option<Vec<UserEntry>>,
    /// `turn.secrets` (replaces the file's list).
    pub secrets: Option<Vec<String>>,
    /// `turn.rest_separator`.
    pub rest_separator: Option<char>,
    /// `turn.strict_expiry`.
    pub strict_expiry: Option<bool>,
    /// `database.url`.
    pub database_url: Option<String>,
    /// `database.data_dir`.
    pub data_dir: Option<PathBuf>,
    /// `database.schema`.
    pub database_schema: Option<DatabaseSchema>,
    /// `database.pool_size`.
    pub database_pool_size: Option<usize>,
    /// `database.timeout`.
    pub database_timeout: Option<u32>,
    /// `database.cache_ttl`.
    pub cache_ttl: Option<u32>,
    /// `database.negative_cache_ttl`.
    pub negative_cache_ttl: Option<u32>,
    /// `database.grace_period`.
    pub grace_period: Option<u32>,
    /// `database.secrets_refresh`.
    pub secrets_refresh: Option<u32>,
    /// `tls.certificate`.
    pub tls_certificate: Option<PathBuf>,
    /// `tls.private_key`.
    pub tls_private_key: Option<PathBuf>,
    /// `tls.listen` (replaces the file's list; may be empty).
    pub tls_listen: Option<Vec<SocketAddr>>,
    /// `tls.dtls_listen` (replaces the file's list; may be empty).
    pub dtls_listen: Option<Vec<SocketAddr>>,
    /// `tls.min_version`.
    pub tls_min_version: Option<TlsVersion>,
    /// `tls.reload_interval`.
    pub tls_reload_interval: Option<u32>,
    /// `limits.max_connections_per_ip`.
    pub max_connections_per_ip: Option<u32>,
    /// `limits.max_connections`.
    pub max_connections: Option<u32>,
    /// `limits.ipv6_prefix`.
    pub ipv6_prefix: Option<u8>,
    /// `limits.max_handshakes`.
    pub max_handshakes: Option<u32>,
    /// `limits.handshakes_per_second_per_ip`.
    pub handshakes_per_second_per_ip: Option<u32>,
    /// `limits.handshake_timeout`.
    pub handshake_timeout: Option<u32>,
    /// `limits.auth_timeout`.
    pub auth_timeout: Option<u32>,
    /// `limits.idle_timeout`.
    pub idle_timeout: Option<u32>,
    /// `limits.max_buffered_bytes`.
    pub max_buffered_bytes: Option<u32>,
    /// `limits.max_buffered_bytes_total`.
    pub max_buffered_bytes_total: Option<u64>,
    /// `limits.max_peer_connections_per_allocation`.
    pub max_peer_connections_per_allocation: Option<u32>,
    /// `limits.max_peer_connections`.
    pub max_peer_connections: Option<u32>,
    /// `admin.listen` (replaces the file's list; may be empty).
    pub admin_listen: Option<Vec<SocketAddr>>,
    /// `admin.allow_remote`.
    pub admin_allow_remote: Option<bool>,
    /// `xdp.interfaces` (replaces the file's list; may be empty).
    pub xdp_interfaces: Option<Vec<String>>,
    /// `xdp.mode`.
    pub xdp_mode: Option<XdpMode>,
}

/// Which of the two IP addresses, or which of the two ports, an address uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    /// The configured (`listen`) IP or port.
    Primary,
    /// `alternate_ip`, or the alternate port.
    Alternate,
}

/// The RFC 5780 role of a local address: which IP and which port it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddressRole {
    /// Primary or alternate IP.
    pub ip: Slot,
    /// Primary or alternate port.
    pub port: Slot,
}

impl AddressRole {
    /// A plain listen address (also the role of every listener when NAT
    /// discovery is off).
    pub const PRIMARY: AddressRole = AddressRole {
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
    pub role: AddressRole,
    /// The `stun.listen` entry this listener was derived from (equal to
    /// `addr` for the primary role). Lets the runtime group the quartet.
    pub configured: SocketAddr,
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
pub struct NatDiscovery {
    /// The single IP all same-family listen addresses use.
    pub primary_ip: IpAddr,
    /// `stun.alternate_ip`.
    pub alternate_ip: IpAddr,
    /// One pair per distinct same-family listen port.
    pub ports: Vec<PortPair>,
}

/// Why a configuration could not be loaded. `Display` is always one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read. (The `io::Error` is part of the message
    /// rather than `source()`, so that `{:#}` chains do not print it twice.)
    #[error(
        "cannot read config file {}: {} ({})",
        path.display(),
        io_message(error),
        read_hint(error)
    )]
    Read {
        /// The path as given.
        path: PathBuf,
        /// The underlying error.
        error: io::Error,
    },
    /// TOML syntax error, unknown key, or a value of the wrong type.
    #[error("{}{message}", Location { origin: origin.as_deref(), line: *line })]
    Parse {
        /// The file, when loaded from one.
        origin: Option<PathBuf>,
        /// 1-based line of the error, when toml reported a position.
        line: Option<usize>,
        /// Flattened, single-line description.
        message: String,
    },
    /// Every value parsed but the combination is not usable.
    #[error("invalid configuration: {message}")]
    Invalid {
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl ConfigError {
    fn invalid(message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            message: message.into(),
        }
    }
}

/// `"<path> line N: "` prefix for parse errors.
struct Location<'a> {
    origin: Option<&'a Path>,
    line: Option<usize>,
}

impl fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.origin, self.line) {
            (Some(path), Some(line)) => write!(f, "{} line {line}: ", path.display()),
            (Some(path), None) => write!(f, "{}: ", path.display()),
            (None, Some(line)) => write!(f, "config line {line}: "),
            (None, None) => f.write_str("config: "),
        }
    }
}

/// How to fix a config file read error.
fn read_hint(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::PermissionDenied => "make the file readable by the user turnpike runs as",
        io::ErrorKind::InvalidData => "the config file must be UTF-8 text",
        _ => "pass an existing file with --config or omit it to run with defaults",
    }
}

/// `io::Error` text without the `(os error N)` suffix, which means nothing
/// to an operator.
pub(crate) fn io_message(error: &io::Error) -> String {
    let text = error.to_string();
    match text.rfind(" (os error ") {
        Some(cut) if text.ends_with(')') => text[..cut].to_owned(),
        _ => text,
    }
}

/// Known keys per section, used to name the section in unknown-key errors
/// (serde reports only the offending key and the expected list; matching the
/// list tells us which table it came from, even for dotted keys or inline
/// tables). The empty name is the top level. A unit test keeps this in sync
/// with the structs.
const SECTIONS: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "server", "log", "stun", "turn", "database", "tls", "limits", "admin", "xdp",
        ],
    ),
    ("server", &["workers", "software"]),
    ("log", &["level", "format"]),
    (
        "stun",
        &[
            "listen",
            "udp",
            "tcp",
            "alternate_ip",
            "alternate_port",
            "response_port",
            "padding",
        ],
    ),
    (
        "turn",
        &[
            "enabled",
            "realm",
            "relay_ips",
            "external_ips",
            "min_port",
            "max_port",
            "default_lifetime",
            "max_lifetime",
            "nonce_lifetime",
            "user_quota",
            "total_quota",
            "allowed_peer_ranges",
            "denied_peer_ranges",
            "challenges_per_second",
            "users",
            "secrets",
            "rest_separator",
            "strict_expiry",
        ],
    ),
    (
        "database",
        &[
            "url",
            "data_dir",
            "schema",
            "pool_size",
            "timeout",
            "cache_ttl",
            "negative_cache_ttl",
            "grace_period",
            "secrets_refresh",
        ],
    ),
    (
        "tls",
        &[
            "certificate",
            "private_key",
            "listen",
            "dtls_listen",
            "min_version",
            "reload_interval",
        ],
    ),
    (
        "limits",
        &[
            "max_connections_per_ip",
            "max_connections",
            "ipv6_prefix",
            "max_handshakes",
            "handshakes_per_second_per_ip",
            "handshake_timeout",
            "auth_timeout",
            "idle_timeout",
            "max_buffered_bytes",
            "max_buffered_bytes_total",
            "max_peer_connections_per_allocation",
            "max_peer_connections",
        ],
    ),
    ("admin", &["listen", "allow_remote"]),
    ("xdp", &["interfaces", "mode"]),
    // An array of tables (`[[turn.users]]`), not a plain table.
    ("turn.users", &["username", "password"]),
];

impl Config {
    /// Parses and validates a TOML document (no file, no overrides).
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let config = Config::parse_toml(text, None)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a file (no overrides).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::resolve(Some(path), &Overrides::default())
    }

    /// What the binary does: the file if one is given (else the built-in
    /// defaults), then the overrides, then validation. Validation runs last
    /// so that an override can repair a file (or break it) and the check
    /// sees the values that will actually be used.
    pub fn resolve(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
                    path: path.to_owned(),
                    error,
                })?;
                Config::parse_toml(&text, Some(path))?
            }
            None => Config::default(),
        };
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML without validating. Missing keys and sections take their
    /// defaults. `origin` is only used in error messages.
    pub fn parse_toml(text: &str, origin: Option<&Path>) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|err| ConfigError::Parse {
            origin: origin.map(Path::to_owned),
            line: err.span().map(|span| line_of(text, span.start)),
            message: describe_toml_error(text, &err),
        })
    }

    /// Overlays environment / command-line values onto this configuration.
    pub fn apply(&mut self, overrides: &Overrides) {
        fn set<T>(slot: &mut T, value: Option<T>) {
            if let Some(value) = value {
                *slot = value;
            }
        }
        let o = overrides.clone();
        set(&mut self.server.workers, o.workers);
        set(&mut self.server.software, o.software);
        set(&mut self.log.level, o.log_level);
        set(&mut self.log.format, o.log_format);
        set(&mut self.stun.listen, o.listen);
        set(&mut self.stun.udp, o.udp);
        set(&mut self.stun.tcp, o.tcp);
        set(&mut self.stun.response_port, o.response_port);
        set(&mut self.stun.padding, o.padding);
        if o.alternate_ip.is_some() {
            self.stun.alternate_ip = o.alternate_ip;
        }
        if o.alternate_port.is_some() {
            self.stun.alternate_port = o.alternate_port;
        }
        let turn = &mut self.turn;
        set(&mut turn.enabled, o.turn);
        set(&mut turn.realm, o.realm);
        set(&mut turn.relay_ips, o.relay_ips);
        set(&mut turn.external_ips, o.external_ips);
        set(&mut turn.min_port, o.min_port);
        set(&mut turn.max_port, o.max_port);
        set(&mut turn.default_lifetime, o.default_lifetime);
        set(&mut turn.max_lifetime, o.max_lifetime);
        set(&mut turn.nonce_lifetime, o.nonce_lifetime);
        set(&mut turn.user_quota, o.user_quota);
        set(&mut turn.total_quota, o.total_quota);
        set(&mut turn.allowed_peer_ranges, o.allowed_peer_ranges);
        set(&mut turn.denied_peer_ranges, o.denied_peer_ranges);
        set(&mut turn.challenges_per_second, o.challenges_per_second);
        set(&mut turn.users, o.users);
        set(&mut turn.secrets, o.secrets);
        set(&mut turn.rest_separator, o.rest_separator);
        set(&mut turn.strict_expiry, o.strict_expiry);
        let db = &mut self.database;
        set(&mut db.url, o.database_url);
        set(&mut db.data_dir, o.data_dir);
        set(&mut db.schema, o.database_schema);
        set(&mut db.pool_size, o.database_pool_size);
        set(&mut db.timeout, o.database_timeout);
        set(&mut db.cache_ttl, o.cache_ttl);
        set(&mut db.negative_cache_ttl, o.negative_cache_ttl);
        set(&mut db.grace_period, o.grace_period);
        set(&mut db.secrets_refresh, o.secrets_refresh);
        let tls = &mut self.tls;
        if o.tls_certificate.is_some() {
            tls.certificate = o.tls_certificate;
        }
        if o.tls_private_key.is_some() {
            tls.private_key = o.tls_private_key;
        }
        set(&mut tls.listen, o.tls_listen);
        set(&mut tls.dtls_listen, o.dtls_listen);
        set(&mut tls.min_version, o.tls_min_version);
        set(&mut tls.reload_interval, o.tls_reload_interval);
        let limits = &mut self.limits;
        set(&mut limits.max_connections_per_ip, o.max_connections_per_ip);
        set(&mut limits.max_connections, o.max_connections);
        set(&mut limits.ipv6_prefix, o.ipv6_prefix);
        set(&mut limits.max_handshakes, o.max_handshakes);
        set(
            &mut limits.handshakes_per_second_per_ip,
            o.handshakes_per_second_per_ip,
        );
        set(&mut limits.handshake_timeout, o.handshake_timeout);
        set(&mut limits.auth_timeout, o.auth_timeout);
        set(&mut limits.idle_timeout, o.idle_timeout);
        set(&mut limits.max_buffered_bytes, o.max_buffered_bytes);
        set(
            &mut limits.max_buffered_bytes_total,
            o.max_buffered_bytes_total,
        );
        set(
            &mut limits.max_peer_connections_per_allocation,
            o.max_peer_connections_per_allocation,
        );
        set(&mut limits.max_peer_connections, o.max_peer_connections);
        set(&mut self.admin.listen, o.admin_listen);
        set(&mut self.admin.allow_remote, o.admin_allow_remote);
        set(&mut self.xdp.interfaces, o.xdp_interfaces);
        set(&mut self.xdp.mode, o.xdp_mode);
    }

    /// Checks everything that can be checked without binding sockets.
    pub fn validate(&self) -> Result<(), ConfigError> {
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
        if !self.stun.udp && !self.stun.tcp {
            return Err(ConfigError::invalid(
                "stun.udp and stun.tcp are both false, so nothing would be served; enable at least one",
            ));
        }
        self.plan()?;
        self.validate_turn()?;
        self.validate_database()?;
        self.validate_tls()?;
        self.validate_limits()?;
        self.validate_admin()?;
        self.validate_xdp()
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

    /// Every address the runtime must bind, in `stun.listen` order; with
    /// `stun.alternate_ip` set, each same-family listen address `A:P` is
    /// followed by `A:P2`, `ALT:P` and `ALT:P2`.
    ///
    /// Meant for a validated configuration. On an invalid one it does not
    /// panic but returns just the listen addresses.
    pub fn listeners(&self) -> Vec<Listener> {
        match self.plan() {
            Ok(plan) => plan.listeners,
            Err(_) => self
                .stun
                .listen
                .iter()
                .map(|&addr| Listener {
                    addr,
                    role: AddressRole::PRIMARY,
                    configured: addr,
                })
                .collect(),
        }
    }

    /// The RFC 5780 address sets, or `None` when `stun.alternate_ip` is unset
    /// (or the configuration is invalid).
    pub fn nat_discovery(&self) -> Option<NatDiscovery> {
        self.plan().ok().and_then(|plan| plan.nat)
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
    /// and the TURN settings when `turn.enabled` (see [`Config::core_turn`]).
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
    /// policy refuses every listener address and admin endpoint address
    /// (`server_sockets`) and knows the host's IPs as their specific IPs,
    /// the relay IPs and the external public IPs. The quota counters are
    /// fresh.
    pub fn core_turn(&self, nonce_secret: &[u8; 32], epoch: Instant) -> turnpike_core::TurnConfig {
        let t = &self.turn;
        let mut server_sockets: Vec<SocketAddr> = self.listeners().iter().map(|l| l.addr).collect();
        // A relayed client must not reach the admin endpoint, which answers
        // anyone who can connect to it.
        server_sockets.extend(self.admin.listen.iter().copied());
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

    /// [`Config::users`] with their long-term keys for `turn.realm`, ready
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
    fn advertised(&self) -> Result<Vec<(IpAddr, IpAddr)>, ConfigError> {
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

    /// The `[turn]` rules (checked whether or not TURN is enabled, so that
    /// turning it on later cannot reveal old mistakes).
    fn validate_turn(&self) -> Result<(), ConfigError> {
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
        self.advertised()?;

        if t.min_port < MIN_RELAY_PORT {
            return Err(ConfigError::invalid(format!(
                "turn.min_port = {} is below {MIN_RELAY_PORT}; relay ports must be unprivileged (the default range is 49152-65535)",
                t.min_port
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

        for (key, value) in [
            ("max_lifetime", t.max_lifetime),
            ("nonce_lifetime", t.nonce_lifetime),
        ] {
            if value == 0 || value > MAX_LIFETIME_SECS {
                return Err(ConfigError::invalid(format!(
                    "turn.{key} = {value} is out of range; use 1 to {MAX_LIFETIME_SECS} seconds (default 600 for nonce_lifetime, 3600 for max_lifetime)"
                )));
            }
        }
        if t.default_lifetime == 0 {
            return Err(ConfigError::invalid(
                "turn.default_lifetime = 0 is out of range; use at least 1 second (RFC 8656 recommends 600)",
            ));
        }
        if t.default_lifetime > t.max_lifetime {
            return Err(ConfigError::invalid(format!(
                "turn.default_lifetime = {} is above turn.max_lifetime = {}; lower default_lifetime or raise max_lifetime",
                t.default_lifetime, t.max_lifetime
            )));
        }
        if t.challenges_per_second == 0 {
            return Err(ConfigError::invalid(
                "turn.challenges_per_second = 0 would refuse every client the 401 challenge it needs to authenticate; use at least 1 (default 1000)",
            ));
        }

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

        // Secrets are named by their position, never by their value.
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
        let sep = t.rest_separator;
        if sep.is_ascii_digit() || sep.is_whitespace() || sep.is_control() {
            return Err(ConfigError::invalid(format!(
                "turn.rest_separator {sep:?} cannot separate the expiry time from the user id; use a character that is not a digit, whitespace or a control character, such as \":\""
            )));
        }
        Ok(())
    }

    /// The `[database]` rules: documented ranges, and a URL Turnpike can use.
    fn validate_database(&self) -> Result<(), ConfigError> {
        let db = &self.database;
        if db.url.trim().is_empty() && db.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "database.data_dir is empty; give the directory of the default SQLite database (default /var/lib/turnpike) or set database.url",
            ));
        }
        self.location()?;
        if !(1..=MAX_POOL_SIZE).contains(&db.pool_size) {
            return Err(ConfigError::invalid(format!(
                "database.pool_size = {} is out of range; use 1 to {MAX_POOL_SIZE} connections (default 4)",
                db.pool_size
            )));
        }
        for (key, value, min, max, default) in [
            ("timeout", db.timeout, 1, 60, 5),
            ("cache_ttl", db.cache_ttl, 1, 86_400, 60),
            ("negative_cache_ttl", db.negative_cache_ttl, 0, 3_600, 5),
            ("grace_period", db.grace_period, 0, 604_800, 3_600),
            ("secrets_refresh", db.secrets_refresh, 1, 3_600, 10),
        ] {
            if !(min..=max).contains(&value) {
                return Err(ConfigError::invalid(format!(
                    "database.{key} = {value} is out of range; use {min} to {max} seconds (default {default})"
                )));
            }
        }
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
        if tls.reload_interval > MAX_RELOAD_INTERVAL_SECS {
            return Err(ConfigError::invalid(format!(
                "tls.reload_interval = {} is out of range; use 0 (reload only on SIGHUP) to {MAX_RELOAD_INTERVAL_SECS} seconds (default 5)",
                tls.reload_interval
            )));
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

    /// The `[limits]` ranges.
    fn validate_limits(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        if l.max_buffered_bytes_total < u64::from(l.max_buffered_bytes) {
            return Err(ConfigError::invalid(format!(
                "limits.max_buffered_bytes_total = {} is below limits.max_buffered_bytes = {}; give it at least that (default 268435456: 256 MiB)",
                l.max_buffered_bytes_total, l.max_buffered_bytes
            )));
        }
        if !(16..=128).contains(&l.ipv6_prefix) {
            return Err(ConfigError::invalid(format!(
                "limits.ipv6_prefix = {} is out of range; use 16 to 128 bits (default 64: a host's /64 is one source)",
                l.ipv6_prefix
            )));
        }
        for (key, value, min, max, default, unit) in [
            (
                "max_handshakes",
                l.max_handshakes,
                1,
                MAX_HANDSHAKES,
                1024,
                "handshakes",
            ),
            (
                "handshakes_per_second_per_ip",
                l.handshakes_per_second_per_ip,
                1,
                u32::from(u16::MAX),
                100,
                "handshakes",
            ),
            (
                "handshake_timeout",
                l.handshake_timeout,
                1,
                MAX_CONNECTION_TIMEOUT_SECS,
                10,
                "seconds",
            ),
            (
                "auth_timeout",
                l.auth_timeout,
                1,
                MAX_CONNECTION_TIMEOUT_SECS,
                30,
                "seconds",
            ),
            (
                "idle_timeout",
                l.idle_timeout,
                1,
                MAX_CONNECTION_TIMEOUT_SECS,
                600,
                "seconds",
            ),
            (
                "max_buffered_bytes",
                l.max_buffered_bytes,
                MIN_BUFFERED_BYTES,
                MAX_BUFFERED_BYTES,
                262_144,
                "bytes",
            ),
            (
                "max_peer_connections_per_allocation",
                l.max_peer_connections_per_allocation,
                1,
                MAX_PEER_CONNECTIONS_PER_ALLOCATION,
                32,
                "connections",
            ),
        ] {
            if !(min..=max).contains(&value) {
                return Err(ConfigError::invalid(format!(
                    "limits.{key} = {value} is out of range; use {min} to {max} {unit} (default {default})"
                )));
            }
        }
        Ok(())
    }

    /// The `[admin]` rules: no duplicate, no multicast, loopback only
    /// unless `allow_remote` (the endpoint has no authentication), and no
    /// address that a STUN or TLS listener (both TCP) would share.
    fn validate_admin(&self) -> Result<(), ConfigError> {
        let admin = &self.admin;
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
            if !ip.is_loopback() && !admin.allow_remote {
                return Err(ConfigError::invalid(format!(
                    "admin.listen address {addr} is not a loopback address, and the admin endpoint has no authentication; use 127.0.0.1:PORT or [::1]:PORT, or set admin.allow_remote = true to serve it on a management network only a firewall lets in"
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
        Ok(())
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
            create,
        })
    }

    /// One-line human summary, printed by `check-config`.
    pub fn summary(&self) -> String {
        let listen = self
            .stun
            .listen
            .iter()
            .map(SocketAddr::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        let transports = match (self.stun.udp, self.stun.tcp) {
            (true, true) => "udp+tcp",
            (true, false) => "udp",
            _ => "tcp",
        };
        let workers = match self.server.workers {
            0 => format!("{} (one per CPU)", self.worker_threads()),
            n => n.to_string(),
        };
        let software = match self.software() {
            Some(s) => format!("{s:?}"),
            None => "off".to_owned(),
        };
        let nat = match self.nat_discovery() {
            Some(nat) => format!(
                "{} and {} ports {}",
                nat.primary_ip,
                nat.alternate_ip,
                nat.ports
                    .iter()
                    .map(|p| format!("{}/{}", p.primary, p.alternate))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            None => "off".to_owned(),
        };
        let on_off = |b: bool| if b { "on" } else { "off" };
        format!(
            "listen {listen} ({transports}, {} sockets); workers {workers}; software {software}; log {} {}; nat discovery {nat}; response-port {}; padding {}; tls {}; admin {}; xdp {}; database {}; turn {}",
            self.listeners().len(),
            self.log.format,
            self.log.level,
            on_off(self.stun.response_port),
            on_off(self.stun.padding),
            self.tls_summary(),
            self.admin_summary(),
            self.xdp_summary(),
            self.database_summary(),
            self.turn_summary(),
        )
    }

    /// The TLS part of [`Config::summary`]: the files, listeners, minimum
    /// version and how reloads happen.
    fn tls_summary(&self) -> String {
        let tls = &self.tls;
        let Some(certificate) = &tls.certificate else {
            return "off".to_owned();
        };
        let addrs = |list: &[SocketAddr]| {
            if list.is_empty() {
                "none".to_owned()
            } else {
                list.iter()
                    .map(SocketAddr::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        };
        let key = match &tls.private_key {
            Some(key) => format!("key {}", key.display()),
            None => "key in the certificate file".to_owned(),
        };
        let reload = match tls.reload_interval {
            0 => "reload on SIGHUP".to_owned(),
            n => format!("reload on change (checked every {n} s) or SIGHUP"),
        };
        format!(
            "on (certificate {}, {key}, tls {}, dtls {}, min version {}, {reload})",
            certificate.display(),
            addrs(&tls.listen),
            addrs(&tls.dtls_listen),
            tls.min_version,
        )
    }

    /// The XDP part of [`Config::summary`]: `off`, or the interfaces and mode.
    fn xdp_summary(&self) -> String {
        if self.xdp.interfaces.is_empty() {
            "off".to_owned()
        } else {
            format!(
                "on ({}, {})",
                self.xdp.interfaces.join(" "),
                self.xdp.mode.as_str()
            )
        }
    }

    /// The admin part of [`Config::summary`]: `off`, or its addresses.
    fn admin_summary(&self) -> String {
        if self.admin.listen.is_empty() {
            return "off".to_owned();
        }
        let urls = self
            .admin
            .listen
            .iter()
            .map(|addr| format!("http://{addr}"))
            .collect::<Vec<_>>()
            .join(" ");
        format!("on ({urls}; /metrics, /status)")
    }

    /// The database part of [`Config::summary`]: where (a PostgreSQL URL
    /// without its password) and which schema.
    fn database_summary(&self) -> String {
        let location = match self.location() {
            Ok(location) => location.redacted(),
            Err(_) => "<invalid url>".to_owned(),
        };
        let access = match self.database.schema {
            DatabaseSchema::Turnpike => "",
            DatabaseSchema::Coturn => ", read-only",
        };
        format!("{location} ({} schema{access})", self.database.schema)
    }

    /// The TURN part of [`Config::summary`]. Never shows passwords.
    fn turn_summary(&self) -> String {
        let t = &self.turn;
        if !t.enabled {
            return "off".to_owned();
        }
        let mut users = match t.users.len() {
            1 => "1 user".to_owned(),
            n => format!("{n} users"),
        };
        match t.secrets.len() {
            0 => {}
            1 => users.push_str(", 1 secret"),
            n => users.push_str(&format!(", {n} secrets")),
        }
        if t.strict_expiry {
            users.push_str(", strict expiry");
        }
        let relay = if t.relay_ips.is_empty() {
            "relay on the IP each request arrived on".to_owned()
        } else {
            let advertised = self.advertised().unwrap_or_default();
            let ips = t
                .relay_ips
                .iter()
                .map(
                    |ip| match advertised.iter().find(|(relay, _)| relay == ip) {
                        Some((_, public)) => format!("{ip} (external {public})"),
                        None => ip.to_string(),
                    },
                )
                .collect::<Vec<_>>()
                .join(" ");
            format!("relay ips {ips}")
        };
        format!(
            "on (realm {:?}, {users}, {relay}, ports {}-{})",
            t.realm, t.min_port, t.max_port
        )
    }

    /// Validates the listen / alternate-address rules and expands the
    /// listeners. Shared by `validate`, `listeners` and `nat_discovery` so
    /// the checked rules and the produced addresses cannot diverge.
    fn plan(&self) -> Result<Plan, ConfigError> {
        let stun = &self.stun;
        if stun.listen.is_empty() {
            return Err(ConfigError::invalid(
                "stun.listen is empty; give at least one address such as \"0.0.0.0:3478\"",
            ));
        }
        let mut seen = BTreeSet::new();
        for addr in &stun.listen {
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

        let Some(alt_ip) = stun.alternate_ip else {
            if let Some(port) = stun.alternate_port {
                return Err(ConfigError::invalid(format!(
                    "stun.alternate_port = {port} has no effect without stun.alternate_ip; set alternate_ip too or remove alternate_port"
                )));
            }
            return Ok(Plan {
                listeners: stun
                    .listen
                    .iter()
                    .map(|&addr| Listener {
                        addr,
                        role: AddressRole::PRIMARY,
                        configured: addr,
                    })
                    .collect(),
                nat: None,
            });
        };

        let family = if alt_ip.is_ipv4() { "IPv4" } else { "IPv6" };
        if alt_ip.is_unspecified() || alt_ip.is_multicast() {
            return Err(ConfigError::invalid(format!(
                "stun.alternate_ip = {alt_ip} is not a specific unicast address; it must be a second IP address of this host"
            )));
        }
        let same_family: Vec<SocketAddr> = stun
            .listen
            .iter()
            .copied()
            .filter(|a| a.is_ipv4() == alt_ip.is_ipv4())
            .collect();
        if same_family.is_empty() {
            return Err(ConfigError::invalid(format!(
                "stun.alternate_ip = {alt_ip} is {family} but stun.listen has no {family} address; add the primary {family} address to listen"
            )));
        }
        // RFC 5780 responses must leave from a known IP (and OTHER-ADDRESS
        // must name one), which a wildcard socket cannot guarantee.
        if let Some(wild) = same_family.iter().find(|a| a.ip().is_unspecified()) {
            return Err(ConfigError::invalid(format!(
                "stun.listen address {wild} is a wildcard, but with stun.alternate_ip set every {family} listen address must be a specific IP of this host (e.g. \"192.0.2.1:3478\"), so responses leave from a known address"
            )));
        }
        let primary_ip = same_family[0].ip();
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

        let mut primary_ports: Vec<u16> = Vec::new();
        for addr in &same_family {
            if !primary_ports.contains(&addr.port()) {
                primary_ports.push(addr.port());
            }
        }
        if primary_ports.contains(&0) {
            return Err(ConfigError::invalid(
                "stun.listen uses port 0 (any free port), which cannot be combined with stun.alternate_ip; use fixed ports",
            ));
        }
        let ports: Vec<PortPair> = match stun.alternate_port {
            Some(alt_port) => {
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
                        join(&primary_ports)
                    )));
                }
                vec![PortPair {
                    primary: primary_ports[0],
                    alternate: alt_port,
                }]
            }
            None => {
                let mut pairs = Vec::with_capacity(primary_ports.len());
                for &port in &primary_ports {
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
                pairs
            }
        };

        let mut listeners = Vec::with_capacity(stun.listen.len() * 4);
        for &addr in &stun.listen {
            listeners.push(Listener {
                addr,
                role: AddressRole::PRIMARY,
                configured: addr,
            });
            if addr.is_ipv4() != alt_ip.is_ipv4() {
                continue;
            }
            let alt_port = ports
                .iter()
                .find(|p| p.primary == addr.port())
                .map(|p| p.alternate)
                .expect("every same-family listen port has a pair");
            for (ip, ip_slot) in [(addr.ip(), Slot::Primary), (alt_ip, Slot::Alternate)] {
                for (port, port_slot) in [(addr.port(), Slot::Primary), (alt_port, Slot::Alternate)]
                {
                    let role = AddressRole {
                        ip: ip_slot,
                        port: port_slot,
                    };
                    if role != AddressRole::PRIMARY {
                        listeners.push(Listener {
                            addr: SocketAddr::new(ip, port),
                            role,
                            configured: addr,
                        });
                    }
                }
            }
        }
        Ok(Plan {
            listeners,
            nat: Some(NatDiscovery {
                primary_ip,
                alternate_ip: alt_ip,
                ports,
            }),
        })
    }
}

/// Whether two listeners of one transport would claim the same port: the
/// same port and family, and the same IP or a wildcard on either side
/// (`[::]` is bound IPv6-only, so it does not cover IPv4). Port 0 means a
/// free port chosen by the kernel, which never collides.
fn addresses_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Result of [`Config::plan`].
struct Plan {
    listeners: Vec<Listener>,
    nat: Option<NatDiscovery>,
}

fn join(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses `IP:PORT` with a message that says what is expected. Hostnames are
/// refused on purpose: a server binds addresses, and resolving a name at
/// start-up would make the bound set depend on DNS.
pub fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!(
            "`{text}` is not an IP:PORT address (examples: 0.0.0.0:3478, 192.0.2.1:3478, [::]:3478)"
        )
    })
}

/// Parses an IP address with a message that says what is expected.
pub fn parse_ip(text: &str) -> Result<IpAddr, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("`{text}` is not an IP address (examples: 192.0.2.2, 2001:db8::2)"))
}

/// Parses `PUBLIC` or `PUBLIC/PRIVATE` (`turn.external_ips`, coturn's
/// `external-ip` syntax). Both addresses must be of the same family.
pub fn parse_external_ip(text: &str) -> Result<ExternalIp, String> {
    let trimmed = text.trim();
    let bad = || {
        format!(
            "`{text}` is not PUBLIC or PUBLIC/PRIVATE (examples: 203.0.113.5, 203.0.113.5/10.0.0.5)"
        )
    };
    let (public, private) = match trimmed.split_once('/') {
        Some((public, private)) => (public, Some(private)),
        None => (trimmed, None),
    };
    let public: IpAddr = public.trim().parse().map_err(|_| bad())?;
    let private: Option<IpAddr> = match private {
        Some(private) => Some(private.trim().parse().map_err(|_| bad())?),
        None => None,
    };
    if let Some(private) = private
        && private.is_ipv4() != public.is_ipv4()
    {
        return Err(format!(
            "`{text}` mixes IPv4 and IPv6; PUBLIC and PRIVATE must be of the same family"
        ));
    }
    Ok(ExternalIp { public, private })
}

/// Parses a CIDR range (`10.0.0.0/8`, `fd00::/8`) or a bare IP, which means
/// that one address (`/32` or `/128`). A range with host bits set
/// (`10.0.0.1/8`) is refused, since it usually means a mistyped prefix.
pub fn parse_ip_net(text: &str) -> Result<IpNet, String> {
    let trimmed = text.trim();
    if let Ok(ip) = trimmed.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    let net: IpNet = trimmed.parse().map_err(|_| {
        format!(
            "`{text}` is not a CIDR range or IP address (examples: 10.0.0.0/8, fd00::/8, 192.0.2.7)"
        )
    })?;
    if net.trunc() != net {
        return Err(format!(
            "`{text}` has host bits set; write the network address {}",
            net.trunc()
        ));
    }
    Ok(net)
}

/// Parses `USER:PASSWORD` (split at the first colon, so the password may
/// contain colons). Error messages never repeat the input, which may be a
/// password.
pub fn parse_user(text: &str) -> Result<UserEntry, String> {
    let Some((username, password)) = text.split_once(':') else {
        return Err(
            "expected USER:PASSWORD, with a colon between the user name and the password"
                .to_owned(),
        );
    };
    if username.is_empty() {
        return Err("the user name before the colon of USER:PASSWORD is empty".to_owned());
    }
    if password.is_empty() {
        return Err(format!("user {username:?} has an empty password"));
    }
    Ok(UserEntry {
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

/// A list element type read from a TOML string.
trait FromConfigStr: Sized {
    /// What the string should look like, for type errors.
    const EXPECTING: &'static str;
    fn from_config_str(text: &str) -> Result<Self, String>;
}

impl FromConfigStr for SocketAddr {
    const EXPECTING: &'static str = "an \"IP:PORT\" string";
    fn from_config_str(text: &str) -> Result<Self, String> {
        parse_socket_addr(text)
    }
}

impl FromConfigStr for IpAddr {
    const EXPECTING: &'static str = "an IP address string";
    fn from_config_str(text: &str) -> Result<Self, String> {
        parse_ip(text)
    }
}

impl FromConfigStr for ExternalIp {
    const EXPECTING: &'static str = "a \"PUBLIC\" or \"PUBLIC/PRIVATE\" string";
    fn from_config_str(text: &str) -> Result<Self, String> {
        parse_external_ip(text)
    }
}

impl FromConfigStr for IpNet {
    const EXPECTING: &'static str = "a CIDR range string such as \"10.0.0.0/8\"";
    fn from_config_str(text: &str) -> Result<Self, String> {
        parse_ip_net(text)
    }
}

/// A list of strings, each parsed with [`FromConfigStr`].
fn de_list<'de, D: Deserializer<'de>, T: FromConfigStr>(d: D) -> Result<Vec<T>, D::Error> {
    /// One element, parsed inside its visitor: toml attaches its position
    /// to errors raised while the element is being deserialized, so this
    /// reports the element's own line rather than the array's first line.
    struct Element<T>(T);
    impl<'de, T: FromConfigStr> Deserialize<'de> for Element<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visitor<T>(std::marker::PhantomData<T>);
            impl<T: FromConfigStr> serde::de::Visitor<'_> for Visitor<T> {
                type Value = Element<T>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str(T::EXPECTING)
                }
                fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Element<T>, E> {
                    T::from_config_str(text).map(Element).map_err(E::custom)
                }
            }
            d.deserialize_str(Visitor(std::marker::PhantomData))
        }
    }
    Ok(Vec::<Element<T>>::deserialize(d)?
        .into_iter()
        .map(|e| e.0)
        .collect())
}

fn is_broadcast(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

fn family_name(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// `a b c`, or `empty` for an empty list.
fn list_or_empty(ips: &[IpAddr]) -> String {
    if ips.is_empty() {
        "empty".to_owned()
    } else {
        ips.iter()
            .map(IpAddr::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A one-character string (`rest_separator = ":"`), with a message that says
/// so (serde's own speaks of "a character", which TOML has no type for).
fn de_char<'de, D: Deserializer<'de>>(d: D) -> Result<char, D::Error> {
    let text = String::deserialize(d)?;
    parse_char(&text).map_err(serde::de::Error::custom)
}

/// Parses a string of exactly one character (`--rest-separator`).
pub fn parse_char(text: &str) -> Result<char, String> {
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Ok(c),
        _ => Err(format!(
            "{text:?} is not one character; write a single character such as \":\""
        )),
    }
}

fn de_opt_ip<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpAddr>, D::Error> {
    let text = String::deserialize(d)?;
    parse_ip(&text).map(Some).map_err(serde::de::Error::custom)
}

/// 1-based line number of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Turns a toml error into one line: unknown keys get the section and the
/// valid keys spelt out; value errors get the key name when it is on the
/// same line; Rust type names become words.
fn describe_toml_error(text: &str, err: &toml::de::Error) -> String {
    let raw = err.message().trim();
    // The table header the error points at, if it points at one.
    let header = err
        .span()
        .and_then(|span| text.get(span.start..)?.lines().next())
        .map(str::trim)
        .filter(|line| line.starts_with('['));
    let message = if let Some(rest) = raw.strip_prefix("unknown field ") {
        describe_unknown_key(rest).unwrap_or_else(|| raw.to_owned())
    } else if let Some(table) = header
        .filter(|h| !h.starts_with("[[") && raw.ends_with("expected a sequence"))
        .and_then(|h| h.strip_prefix('[')?.split(']').next())
    {
        format!("[{table}] is a list of tables; write each entry as [[{table}]]")
    } else if let Some(header) = header.filter(|_| raw.starts_with("missing field ")) {
        format!("{raw} in {header}")
    } else {
        let mut message = raw
            .replace("expected usize", "expected a non-negative integer")
            .replace("expected u16", "expected an integer from 0 to 65535")
            .replace("expected u32", "expected an integer from 0 to 4294967295");
        if let Some(key) = err.span().and_then(|span| key_before(text, span.start)) {
            message = format!("bad value for `{key}`: {message}");
        }
        message
    };
    flatten(&message)
}

/// `rest` is serde's "`x`, expected one of `a`, `b`" (after "unknown field ").
fn describe_unknown_key(rest: &str) -> Option<String> {
    let mut quoted = rest.split('`').skip(1).step_by(2);
    let key = quoted.next()?;
    let expected: Vec<&str> = quoted.collect();
    let section = SECTIONS.iter().find(|(_, keys)| {
        keys.len() == expected.len() && keys.iter().all(|k| expected.contains(k))
    });
    let home = SECTIONS
        .iter()
        .find(|(name, keys)| !name.is_empty() && keys.contains(&key))
        .map(|(name, _)| *name);
    Some(match section {
        Some(("", _)) => {
            let sections = expected
                .iter()
                .map(|s| format!("[{s}]"))
                .collect::<Vec<_>>()
                .join(", ");
            let hint = home
                .map(|h| format!(" (`{key}` belongs in [{h}])"))
                .unwrap_or_default();
            format!("unknown section or top-level key `{key}`; expected one of {sections}{hint}")
        }
        Some((name, _)) => {
            let hint = home
                .filter(|h| h != name)
                .map(|h| format!(" (`{key}` belongs in [{h}])"))
                .unwrap_or_default();
            format!(
                "unknown key `{key}` in [{name}]; expected one of {}{hint}",
                expected.join(", ")
            )
        }
        None => format!(
            "unknown key `{key}`; expected one of {}",
            expected.join(", ")
        ),
    })
}

/// The key of a `key = value` line when `offset` points into the value.
fn key_before(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let before = &text[line_start..offset];
    let (key, _) = before.split_once('=')?;
    let key = key.trim().trim_matches('"');
    let valid = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    valid.then(|| key.to_owned())
}

/// Collapses all whitespace runs (including newlines) into single spaces.
fn flatten(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: [u8; 32] = [7; 32];

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn user(name: &str, password: &str) -> UserEntry {
        UserEntry {
            username: name.to_owned(),
            password: password.to_owned(),
        }
    }

    fn invalid(text: &str) -> String {
        match Config::from_toml_str(text) {
            Err(ConfigError::Invalid { message }) => message,
            other => panic!("expected a validation error for {text:?}, got {other:?}"),
        }
    }

    fn parse_error(text: &str) -> (Option<usize>, String) {
        match Config::from_toml_str(text) {
            Err(ConfigError::Parse { line, message, .. }) => (line, message),
            other => panic!("expected a parse error for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::default();
        assert_eq!(c.server.workers, 0);
        assert_eq!(c.server.software, "Turnpike");
        assert_eq!(c.log.level, "info");
        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(c.stun.listen, vec![sa("0.0.0.0:3478"), sa("[::]:3478")]);
        assert!(c.stun.udp && c.stun.tcp);
        assert_eq!(c.stun.alternate_ip, None);
        assert_eq!(c.stun.alternate_port, None);
        assert!(!c.stun.response_port && !c.stun.padding);
        c.validate().unwrap();
        assert_eq!(c.software(), Some("Turnpike"));
        assert!(c.worker_threads() >= 1);
        assert_eq!(c.nat_discovery(), None);
    }

    #[test]
    fn empty_file_and_empty_sections_are_defaults() {
        assert_eq!(Config::from_toml_str("").unwrap(), Config::default());
        assert_eq!(
            Config::from_toml_str("[server]\n[log]\n[stun]\n").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn file_values_are_read() {
        let c = Config::from_toml_str(
            r#"
            [server]
            workers = 3
            software = ""
            [log]
            level = "warn,turnpike_core=debug"
            format = "json"
            [stun]
            listen = ["127.0.0.1:3478"]
            udp = true
            tcp = false
            response_port = true
            padding = true
            "#,
        )
        .unwrap();
        assert_eq!(c.server.workers, 3);
        assert_eq!(c.worker_threads(), 3);
        assert_eq!(c.software(), None);
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.stun.listen, vec![sa("127.0.0.1:3478")]);
        assert!(!c.stun.tcp && c.stun.response_port && c.stun.padding);
    }

    #[test]
    fn overrides_win_over_file_and_unset_ones_keep_it() {
        let mut c = Config::parse_toml(
            "[server]\nworkers = 2\nsoftware = \"X\"\n[stun]\nlisten = [\"127.0.0.1:1000\", \"127.0.0.1:2000\"]\ntcp = false\n",
            None,
        )
        .unwrap();
        c.apply(&Overrides {
            workers: Some(5),
            listen: Some(vec![sa("127.0.0.2:3000")]),
            tcp: Some(true),
            udp: Some(false),
            log_format: Some(LogFormat::Json),
            ..Overrides::default()
        });
        c.validate().unwrap();
        assert_eq!(c.server.workers, 5);
        assert_eq!(c.server.software, "X", "not overridden: file value kept");
        // listen is replaced, not appended to.
        assert_eq!(c.stun.listen, vec![sa("127.0.0.2:3000")]);
        assert!(c.stun.tcp && !c.stun.udp);
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.level, "info", "default kept");
    }

    #[test]
    fn resolve_applies_overrides_before_validating() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        // Invalid on its own (alternate IP with a wildcard listen address)...
        std::fs::write(&path, "[stun]\nalternate_ip = \"192.0.2.2\"\n").unwrap();
        assert!(matches!(
            Config::load(&path),
            Err(ConfigError::Invalid { .. })
        ));
        // ...but fixed by an override of listen.
        let c = Config::resolve(
            Some(&path),
            &Overrides {
                listen: Some(vec![sa("192.0.2.1:3478")]),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(c.listeners().len(), 4);
        // No file at all: defaults plus overrides.
        let c = Config::resolve(
            None,
            &Overrides {
                software: Some(String::new()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(c.software(), None);
    }

    #[test]
    fn missing_file_is_a_read_error_with_a_hint() {
        let err = Config::load(Path::new("/nonexistent/turnpike.toml")).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ConfigError::Read { .. }));
        assert_eq!(
            text,
            "cannot read config file /nonexistent/turnpike.toml: No such file or directory (pass an existing file with --config or omit it to run with defaults)"
        );
    }

    #[test]
    fn unknown_key_names_line_section_and_valid_keys() {
        let (line, message) = parse_error("[server]\nworkers = 1\n\n[stun]\nlisen = []\n");
        assert_eq!(line, Some(5));
        assert_eq!(
            message,
            "unknown key `lisen` in [stun]; expected one of listen, udp, tcp, alternate_ip, alternate_port, response_port, padding"
        );
        let err = Config::parse_toml("[stun]\nlisen = []\n", Some(Path::new("/etc/t.toml")))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("/etc/t.toml line 2: unknown key `lisen` in [stun];"),
            "{err}"
        );
        assert!(!err.contains('\n'));
    }

    #[test]
    fn unknown_key_in_dotted_and_inline_form_still_names_the_section() {
        let (line, message) = parse_error("stun.lisen = 1\n");
        assert_eq!(line, Some(1));
        assert!(message.contains("in [stun]"), "{message}");
        let (_, message) = parse_error("log = { levle = \"x\" }\n");
        assert!(
            message.contains("unknown key `levle` in [log]"),
            "{message}"
        );
    }

    #[test]
    fn key_in_the_wrong_section_gets_a_hint() {
        let (line, message) = parse_error("workers = 4\n");
        assert_eq!(line, Some(1));
        assert!(
            message.contains("`workers` belongs in [server]"),
            "{message}"
        );
        let (_, message) = parse_error("[stun]\nlevel = \"debug\"\n");
        assert!(message.contains("`level` belongs in [log]"), "{message}");
        let (line, message) = parse_error("\n[stunn]\n");
        assert_eq!(line, Some(2));
        assert!(message.contains("`stunn`"), "{message}");
        assert!(message.contains("[server], [log], [stun]"), "{message}");
    }

    /// Keeps `SECTIONS` in sync with the structs: an unknown key in each
    /// section must be attributed to that section with exactly its keys.
    #[test]
    fn sections_table_matches_the_structs() {
        for (name, keys) in SECTIONS {
            let doc = match *name {
                "" => "bogus_key = 1\n".to_owned(),
                "turn.users" => "[[turn.users]]\nbogus_key = 1\n".to_owned(),
                _ => format!("[{name}]\nbogus_key = 1\n"),
            };
            let (_, message) = parse_error(&doc);
            let want = if name.is_empty() {
                keys.iter()
                    .map(|k| format!("[{k}]"))
                    .collect::<Vec<_>>()
                    .join(", ")
            } else {
                format!("in [{name}]; expected one of {}", keys.join(", "))
            };
            assert!(message.contains(&want), "{name}: {message}");
        }
    }

    #[test]
    fn syntax_and_type_errors_are_one_line_with_a_line_number() {
        let cases = [
            ("[server]\nworkers = \"four\"\n", 2, "`workers`"),
            ("[server]\nworkers = -1\n", 2, "`workers`"),
            ("[stun]\nalternate_port = 70000\n", 2, "0 to 65535"),
            ("[stun]\nudp = \"yes\"\n", 2, "`udp`"),
            ("[log]\nformat = \"xml\"\n", 2, "`xml`"),
            ("[stun]\nlisten = [\"nope\"]\n", 2, "not an IP:PORT"),
            (
                "[stun]\nlisten = [\"localhost:3478\"]\n",
                2,
                "not an IP:PORT",
            ),
            (
                "[stun]\nalternate_ip = \"192.0.2\"\n",
                2,
                "not an IP address",
            ),
            (
                "[stun]\nlisten = [\n  \"0.0.0.0:3478\",\n  \"x\",\n]\n",
                4,
                "`x`",
            ),
            ("[server\nworkers = 1\n", 1, ""),
            ("[server]\nworkers = = 1\n", 2, ""),
            ("[server]\nworkers = 1\nworkers = 2\n", 3, ""),
            ("stun = 5\n", 1, "[stun] table"),
            ("turn = 5\n", 1, "[turn] table"),
            ("[turn]\nrelay_ips = [\"10.0.0\"]\n", 2, "not an IP address"),
            ("[turn]\nmin_port = 70000\n", 2, "0 to 65535"),
            ("[turn]\nmax_lifetime = -1\n", 2, "`max_lifetime`"),
            ("[turn]\nenabled = \"no\"\n", 2, "`enabled`"),
            (
                "[turn]\nexternal_ips = [\"203.0.113.5/10.0.0\"]\n",
                2,
                "not PUBLIC or PUBLIC/PRIVATE",
            ),
            (
                "[turn]\nexternal_ips = [\"203.0.113.5/fd00::5\"]\n",
                2,
                "mixes IPv4 and IPv6",
            ),
            (
                "[turn]\nallowed_peer_ranges = [\n  \"10.0.0.0/8\",\n  \"10.0.0.0/33\",\n]\n",
                4,
                "`10.0.0.0/33` is not a CIDR range or IP address",
            ),
            (
                "[turn]\ndenied_peer_ranges = [\"10.1.2.3/8\"]\n",
                2,
                "host bits set; write the network address 10.0.0.0/8",
            ),
            ("[turn]\ndenied_peer_ranges = [\"x\"]\n", 2, "`x`"),
            ("[turn]\nrealm = 5\n", 2, "`realm`"),
            (
                "[[turn.users]]\nusername = \"a\"\n",
                1,
                "missing field `password` in [[turn.users]]",
            ),
            (
                "[turn]\nrealm = \"x\"\n\n[turn.users]\nusername = \"a\"\n",
                4,
                "[turn.users] is a list of tables; write each entry as [[turn.users]]",
            ),
            ("[turn]\nmax_lifetime = -1\n", 2, "from 0 to 4294967295"),
            (
                "[[turn.users]]\nusername = \"a\"\npassword = \"b\"\nrole = \"x\"\n",
                4,
                "unknown key `role` in [turn.users]",
            ),
            (
                "[turn]\npassword = \"b\"\n",
                2,
                "`password` belongs in [turn.users]",
            ),
        ];
        for (doc, want_line, needle) in cases {
            let (line, message) = parse_error(doc);
            assert_eq!(line, Some(want_line), "{doc:?}: {message}");
            assert!(message.contains(needle), "{doc:?}: {message}");
            assert!(!message.contains('\n'), "{doc:?}: {message}");
            assert!(!message.is_empty());
        }
    }

    #[test]
    fn validation_errors() {
        let cases: &[(&str, &str)] = &[
            ("[server]\nworkers = 1025\n", "more than the maximum 1024"),
            (
                &format!("[server]\nsoftware = \"{}\"\n", "x".repeat(128)),
                "at most 127",
            ),
            ("[log]\nlevel = \"\"\n", "log.level is empty"),
            (
                "[log]\nlevel = \"info,foo=notalevel\"\n",
                "not a valid filter",
            ),
            ("[stun]\nudp = false\ntcp = false\n", "enable at least one"),
            ("[stun]\nlisten = []\n", "stun.listen is empty"),
            (
                "[stun]\nlisten = [\"127.0.0.1:1\", \"127.0.0.1:1\"]\n",
                "twice",
            ),
            ("[stun]\nlisten = [\"224.0.0.1:3478\"]\n", "multicast"),
            (
                "[stun]\nalternate_port = 3479\n",
                "no effect without stun.alternate_ip",
            ),
            (
                "[stun]\nalternate_ip = \"192.0.2.2\"\n",
                "0.0.0.0:3478 is a wildcard",
            ),
            (
                "[stun]\nlisten = [\"192.0.2.1:3478\"]\nalternate_ip = \"0.0.0.0\"\n",
                "not a specific unicast address",
            ),
            (
                "[stun]\nlisten = [\"[2001:db8::1]:3478\"]\nalternate_ip = \"192.0.2.2\"\n",
                "has no IPv4 address",
            ),
            (
                "[stun]\nlisten = [\"192.0.2.1:3478\"]\nalternate_ip = \"192.0.2.1\"\n",
                "is also the listen IP",
            ),
            (
                "[stun]\nlisten = [\"192.0.2.1:3478\", \"192.0.2.5:3478\"]\nalternate_ip = \"192.0.2.2\"\n",
                "two IPv4 IPs",
            ),
            (
                "[stun]\nlisten = [\"192.0.2.1:3478\"]\nalternate_ip = \"192.0.2.2\"\nalternate_port = 3478\n",
                "is also a listen port",
            ),
            (
                "[stun]\nlisten = [\"192.0.2.1:3478\", \"192.0.2.1:5000\"]\nalternate_ip = \"192.0.2.2\"\nalternate_port = 3479\n",
                "only one listen port",
            ),
            (
                "[stun]\nlisten = [\"192.0.2.1:3478\"]\nalternate_ip = \"192.0.2.2\"\nalternate_port = 0\n",
                "alternate_port = 0",
            ),
            (
                "[stun]\nlisten = [\"192.0.2.1:3478\", \"192.0.2.1:3479\"]\nalternate_ip = \"192.0.2.2\"\n",
                "3478 and 3479 collide",
            ),
            (
                "[stun]\nlisten = [\"192.0.2.1:65535\"]\nalternate_ip = \"192.0.2.2\"\n",
                "no port + 1",
            ),
            (
                "[stun]\nlisten = [\"192.0.2.1:0\"]\nalternate_ip = \"192.0.2.2\"\n",
                "port 0",
            ),
            ("[turn]\nrealm = \"\"\n", "turn.realm is empty"),
            ("[turn]\nrealm = \"  \"\n", "turn.realm is empty"),
            (
                &format!("[turn]\nrealm = \"{}\"\n", "r".repeat(128)),
                "turn.realm is 128 characters long; STUN allows at most 127",
            ),
            ("[turn]\nrealm = \"a\\nb\"\n", "control character"),
            (
                "[turn]\nrelay_ips = [\"0.0.0.0\"]\n",
                "turn.relay_ips: 0.0.0.0 is a wildcard; give the specific IP",
            ),
            ("[turn]\nrelay_ips = [\"::\"]\n", ":: is a wildcard"),
            (
                "[turn]\nrelay_ips = [\"224.0.0.1\"]\n",
                "224.0.0.1 is not a unicast address",
            ),
            (
                "[turn]\nrelay_ips = [\"255.255.255.255\"]\n",
                "not a unicast address",
            ),
            (
                "[turn]\nrelay_ips = [\"::ffff:10.0.0.5\"]\n",
                "IPv4-mapped IPv6 address; write it as 10.0.0.5",
            ),
            (
                "[turn]\nrelay_ips = [\"10.0.0.5\", \"10.0.0.5\"]\n",
                "turn.relay_ips contains 10.0.0.5 twice",
            ),
            (
                "[turn]\nrelay_ips = [\"10.0.0.5\"]\nexternal_ips = [\"203.0.113.5/10.0.0.9\"]\n",
                "turn.external_ips: PRIVATE 10.0.0.9 (in \"203.0.113.5/10.0.0.9\") is not one of turn.relay_ips (10.0.0.5)",
            ),
            (
                "[turn]\nexternal_ips = [\"203.0.113.5/10.0.0.9\"]\n",
                "is not one of turn.relay_ips (empty)",
            ),
            (
                "[turn]\nexternal_ips = [\"203.0.113.5\"]\n",
                "turn.relay_ips has no IPv4 address",
            ),
            (
                "[turn]\nrelay_ips = [\"10.0.0.5\"]\nexternal_ips = [\"2001:db8::5\"]\n",
                "turn.relay_ips has no IPv6 address",
            ),
            (
                "[turn]\nrelay_ips = [\"10.0.0.5\"]\nexternal_ips = [\"203.0.113.5\", \"203.0.113.6\"]\n",
                "two IPv4 addresses without a PRIVATE part (203.0.113.5 and 203.0.113.6)",
            ),
            (
                "[turn]\nrelay_ips = [\"10.0.0.5\"]\nexternal_ips = [\"203.0.113.5/10.0.0.5\", \"203.0.113.6/10.0.0.5\"]\n",
                "maps relay IP 10.0.0.5 twice (to 203.0.113.5 and 203.0.113.6)",
            ),
            (
                "[turn]\nrelay_ips = [\"10.0.0.5\"]\nexternal_ips = [\"0.0.0.0\"]\n",
                "PUBLIC 0.0.0.0 is not a specific unicast address",
            ),
            (
                "[turn]\nmin_port = 80\n",
                "turn.min_port = 80 is below 1024",
            ),
            (
                "[turn]\nmin_port = 60000\nmax_port = 50000\n",
                "turn.min_port = 60000 is above turn.max_port = 50000",
            ),
            (
                "[server]\nworkers = 4\n[turn]\nmin_port = 50000\nmax_port = 50005\n",
                "50000-50005 has 3 port pairs for 4 workers",
            ),
            (
                "[turn]\ndefault_lifetime = 0\n",
                "turn.default_lifetime = 0 is out of range",
            ),
            (
                "[turn]\ndefault_lifetime = 3601\n",
                "turn.default_lifetime = 3601 is above turn.max_lifetime = 3600",
            ),
            (
                "[turn]\nmax_lifetime = 0\n",
                "turn.max_lifetime = 0 is out of range; use 1 to 86400",
            ),
            (
                "[turn]\nmax_lifetime = 86401\n",
                "turn.max_lifetime = 86401 is out of range",
            ),
            (
                "[turn]\nnonce_lifetime = 0\n",
                "turn.nonce_lifetime = 0 is out of range",
            ),
            (
                "[turn]\nchallenges_per_second = 0\n",
                "turn.challenges_per_second = 0",
            ),
            (
                "[[turn.users]]\nusername = \"\"\npassword = \"p\"\n",
                "turn.users entry 1 has an empty username",
            ),
            (
                &format!(
                    "[[turn.users]]\nusername = \"{}\"\npassword = \"p\"\n",
                    "u".repeat(509)
                ),
                "username is 509 bytes long; STUN allows at most 508",
            ),
            (
                "[[turn.users]]\nusername = \"a\\tb\"\npassword = \"p\"\n",
                "control character",
            ),
            (
                "[[turn.users]]\nusername = \"alice\"\npassword = \"\"\n",
                "user \"alice\" has an empty password",
            ),
            (
                "[[turn.users]]\nusername = \"alice\"\npassword = \"p1\"\n[[turn.users]]\nusername = \"alice\"\npassword = \"p2\"\n",
                "duplicate user \"alice\"",
            ),
            // Checked even with TURN off, so turning it on cannot reveal
            // old mistakes.
            (
                "[turn]\nenabled = false\nrelay_ips = [\"0.0.0.0\"]\n",
                "wildcard",
            ),
        ];
        for (doc, needle) in cases {
            let message = invalid(doc);
            assert!(message.contains(needle), "{doc:?}: {message}");
            assert!(!message.contains('\n'));
            // Passwords never appear in errors.
            assert!(
                !message.contains("p1") && !message.contains("p2"),
                "{message}"
            );
        }
    }

    #[test]
    fn turn_defaults_are_the_documented_ones() {
        let t = Config::default().turn;
        assert!(t.enabled);
        assert_eq!(t.realm, "turnpike");
        assert!(t.relay_ips.is_empty() && t.external_ips.is_empty());
        assert_eq!((t.min_port, t.max_port), (49152, 65535));
        assert_eq!(t.default_lifetime, 600);
        assert_eq!(t.max_lifetime, 3600);
        assert_eq!(t.nonce_lifetime, 600);
        assert_eq!((t.user_quota, t.total_quota), (0, 0));
        assert!(t.allowed_peer_ranges.is_empty() && t.denied_peer_ranges.is_empty());
        assert_eq!(t.challenges_per_second, 1000);
        assert!(t.users.is_empty());
        assert_eq!(
            Config::from_toml_str("[turn]\n").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn turn_file_values_are_read() {
        let c = Config::from_toml_str(
            r#"
            [turn]
            enabled = true
            realm = "example.org"
            relay_ips = ["10.0.0.5", "fd00::5"]
            external_ips = ["203.0.113.5/10.0.0.5"]
            min_port = 40000
            max_port = 40999
            default_lifetime = 300
            max_lifetime = 1200
            nonce_lifetime = 60
            user_quota = 3
            total_quota = 1000
            allowed_peer_ranges = ["10.0.0.0/8", "fd00::1"]
            denied_peer_ranges = ["10.9.0.0/16"]
            challenges_per_second = 5

            [[turn.users]]
            username = "alice"
            password = "secret:with:colons"

            [[turn.users]]
            username = "bob"
            password = "hunter2"
            "#,
        )
        .unwrap();
        let t = &c.turn;
        assert_eq!(t.realm, "example.org");
        assert_eq!(t.relay_ips, vec![ip("10.0.0.5"), ip("fd00::5")]);
        assert_eq!(
            t.external_ips,
            vec![ExternalIp {
                public: ip("203.0.113.5"),
                private: Some(ip("10.0.0.5"))
            }]
        );
        assert_eq!((t.min_port, t.max_port), (40000, 40999));
        assert_eq!(
            (t.default_lifetime, t.max_lifetime, t.nonce_lifetime),
            (300, 1200, 60)
        );
        assert_eq!((t.user_quota, t.total_quota), (3, 1000));
        assert_eq!(
            t.allowed_peer_ranges,
            vec![net("10.0.0.0/8"), net("fd00::1/128")]
        );
        assert_eq!(t.denied_peer_ranges, vec![net("10.9.0.0/16")]);
        assert_eq!(t.challenges_per_second, 5);
        assert_eq!(
            c.users(),
            &[user("alice", "secret:with:colons"), user("bob", "hunter2")]
        );
        let keys = c.user_keys();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].0, "alice");
    }

    #[test]
    fn database_and_secret_defaults_are_the_documented_ones() {
        let c = Config::default();
        let db = &c.database;
        assert_eq!(db.url, "");
        assert_eq!(db.data_dir, PathBuf::from("/var/lib/turnpike"));
        assert_eq!(db.schema, DatabaseSchema::Turnpike);
        assert_eq!((db.pool_size, db.timeout), (4, 5));
        assert_eq!((db.cache_ttl, db.negative_cache_ttl), (60, 5));
        assert_eq!((db.grace_period, db.secrets_refresh), (3600, 10));
        assert!(c.turn.secrets.is_empty());
        assert_eq!(c.turn.rest_separator, ':');
        assert!(!c.turn.strict_expiry);
        let o = c.store_options(false).unwrap();
        assert_eq!(
            o.location,
            turnpike_store::Location::Sqlite(PathBuf::from("/var/lib/turnpike/turnpike.db"))
        );
        assert_eq!(o.schema, turnpike_store::Schema::Turnpike);
        assert_eq!(o.pool_size, 4);
        assert_eq!(o.connect_timeout, Duration::from_secs(5));
        assert!(!o.create);
        assert!(c.store_options(true).unwrap().create);
        assert_eq!(
            Config::from_toml_str("[database]\n").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn database_and_secret_file_values_are_read() {
        let c = Config::from_toml_str(
            r#"
            [turn]
            secrets = ["old", "new"]
            rest_separator = "-"
            strict_expiry = true
            [database]
            url = "postgres://turnpike:pw@db.example:5433/turn"
            data_dir = "/srv/t"
            schema = "coturn"
            pool_size = 64
            timeout = 60
            cache_ttl = 86400
            negative_cache_ttl = 0
            grace_period = 0
            secrets_refresh = 3600
            "#,
        )
        .unwrap();
        assert_eq!(c.turn.secrets, vec!["old".to_owned(), "new".to_owned()]);
        assert_eq!(c.turn.rest_separator, '-');
        assert!(c.turn.strict_expiry);
        let db = &c.database;
        assert_eq!(db.data_dir, PathBuf::from("/srv/t"));
        assert_eq!((db.pool_size, db.timeout, db.cache_ttl), (64, 60, 86_400));
        assert_eq!(
            (db.negative_cache_ttl, db.grace_period, db.secrets_refresh),
            (0, 0, 3600)
        );
        let o = c.store_options(true).unwrap();
        assert_eq!(
            o.location,
            turnpike_store::Location::Postgres(
                "postgres://turnpike:pw@db.example:5433/turn".into()
            )
        );
        assert_eq!(o.schema, turnpike_store::Schema::Coturn);
        assert_eq!(o.pool_size, 64);
        assert_eq!(o.connect_timeout, Duration::from_secs(60));
        let core = c.core_turn(&SECRET, Instant::now());
        assert_eq!(core.rest_separator, '-');
        assert!(core.strict_expiry);
        // The summary names the database without its password, and counts
        // the secrets without showing them.
        let s = c.summary();
        assert!(
            s.contains("; database postgres://turnpike:***@db.example:5433/turn (coturn schema, read-only); turn on (realm \"turnpike\", 0 users, 2 secrets, strict expiry,"),
            "{s}"
        );
        assert!(
            !s.contains("pw@") && !s.contains("old") && !s.contains("new"),
            "{s}"
        );
        let c = Config::from_toml_str("[database]\nurl = \"sqlite:/tmp/x.db\"\n").unwrap();
        assert!(
            c.summary()
                .contains("; database /tmp/x.db (turnpike schema);")
        );
    }

    #[test]
    fn database_and_secret_overrides_replace_the_file_values() {
        let mut c = Config::parse_toml(
            "[turn]\nsecrets = [\"file\"]\n[database]\nurl = \"sqlite:/file.db\"\ncache_ttl = 7\n",
            None,
        )
        .unwrap();
        c.apply(&Overrides {
            secrets: Some(vec!["flag".into()]),
            rest_separator: Some('/'),
            strict_expiry: Some(true),
            database_url: Some(String::new()),
            data_dir: Some(PathBuf::from("/d")),
            database_schema: Some(DatabaseSchema::Coturn),
            database_pool_size: Some(2),
            database_timeout: Some(3),
            negative_cache_ttl: Some(4),
            grace_period: Some(5),
            secrets_refresh: Some(6),
            ..Overrides::default()
        });
        c.validate().unwrap();
        assert_eq!(c.turn.secrets, vec!["flag".to_owned()]);
        assert_eq!(c.turn.rest_separator, '/');
        assert!(c.turn.strict_expiry);
        let db = &c.database;
        assert_eq!(db.cache_ttl, 7, "not overridden: file value kept");
        assert_eq!(db.schema, DatabaseSchema::Coturn);
        assert_eq!((db.pool_size, db.timeout), (2, 3));
        assert_eq!(
            (db.negative_cache_ttl, db.grace_period, db.secrets_refresh),
            (4, 5, 6)
        );
        // An empty URL override means the default file in data_dir.
        assert_eq!(
            c.location().unwrap(),
            turnpike_store::Location::Sqlite(PathBuf::from("/d/turnpike.db"))
        );
    }

    #[test]
    fn database_and_secret_validation_errors() {
        let long = "s".repeat(257);
        let cases: &[(&str, &str)] = &[
            (
                "[database]\npool_size = 0\n",
                "database.pool_size = 0 is out of range; use 1 to 64 connections",
            ),
            ("[database]\npool_size = 65\n", "database.pool_size = 65"),
            (
                "[database]\ntimeout = 0\n",
                "database.timeout = 0 is out of range; use 1 to 60 seconds (default 5)",
            ),
            ("[database]\ntimeout = 61\n", "database.timeout = 61"),
            (
                "[database]\ncache_ttl = 0\n",
                "database.cache_ttl = 0 is out of range; use 1 to 86400 seconds",
            ),
            (
                "[database]\ncache_ttl = 86401\n",
                "database.cache_ttl = 86401",
            ),
            (
                "[database]\nnegative_cache_ttl = 3601\n",
                "database.negative_cache_ttl = 3601 is out of range; use 0 to 3600 seconds",
            ),
            (
                "[database]\ngrace_period = 604801\n",
                "database.grace_period = 604801 is out of range; use 0 to 604800 seconds",
            ),
            (
                "[database]\nsecrets_refresh = 0\n",
                "database.secrets_refresh = 0 is out of range; use 1 to 3600 seconds",
            ),
            (
                "[database]\nsecrets_refresh = 3601\n",
                "database.secrets_refresh = 3601",
            ),
            (
                "[database]\nurl = \"mysql://root:pw1@db/turn\"\n",
                "database.url: unsupported database URL scheme \"mysql\"",
            ),
            (
                "[database]\nurl = \"postgres://u:pw1@db:notaport/turn\"\n",
                "database.url: invalid PostgreSQL URL",
            ),
            (
                "[database]\ndata_dir = \"\"\n",
                "database.data_dir is empty",
            ),
            (
                "[turn]\nsecrets = [\"pw1\", \"\"]\n",
                "turn.secrets entry 1 is empty",
            ),
            (
                &format!("[turn]\nsecrets = [\"{long}\"]\n"),
                "turn.secrets entry 0 is 257 bytes long; at most 256 are allowed",
            ),
            (
                "[turn]\nsecrets = [\"pw1\", \"pw2\", \"pw1\"]\n",
                "turn.secrets entries 0 and 2 are the same secret; remove the duplicate",
            ),
            (
                "[turn]\nrest_separator = \"7\"\n",
                "turn.rest_separator '7' cannot separate",
            ),
            (
                "[turn]\nrest_separator = \" \"\n",
                "not a digit, whitespace or a control character",
            ),
        ];
        for (doc, needle) in cases {
            let message = invalid(doc);
            assert!(message.contains(needle), "{doc:?}: {message}");
            assert!(!message.contains('\n'));
            // Neither secrets nor database passwords appear in errors.
            assert!(
                !message.contains("pw1") && !message.contains("pw2") && !message.contains("sss"),
                "{message}"
            );
        }
        // A separator must be one character; the line is named.
        let (line, message) = parse_error("[turn]\nrest_separator = \"::\"\n");
        assert_eq!(line, Some(2));
        assert!(message.contains("not one character"), "{message}");
        let (_, message) = parse_error("[database]\nschema = \"mysql\"\n");
        assert!(
            message.contains("turnpike") && message.contains("coturn"),
            "{message}"
        );
        // A 256-byte secret is fine.
        Config::from_toml_str(&format!("[turn]\nsecrets = [\"{}\"]\n", "s".repeat(256))).unwrap();
    }

    #[test]
    fn cidr_ranges_and_bare_ips() {
        assert_eq!(parse_ip_net("10.0.0.0/8"), Ok(net("10.0.0.0/8")));
        assert_eq!(parse_ip_net(" 192.0.2.7 "), Ok(net("192.0.2.7/32")));
        assert_eq!(parse_ip_net("::1"), Ok(net("::1/128")));
        assert_eq!(parse_ip_net("fd00::/8"), Ok(net("fd00::/8")));
        assert_eq!(parse_ip_net("0.0.0.0/0"), Ok(net("0.0.0.0/0")));
        assert_eq!(
            parse_ip_net("::ffff:10.0.0.0/104"),
            Ok(net("::ffff:10.0.0.0/104"))
        );
        let err = parse_ip_net("10.0.0.1/8").unwrap_err();
        assert!(
            err.contains("write the network address 10.0.0.0/8"),
            "{err}"
        );
        let err = parse_ip_net("fd00::1/8").unwrap_err();
        assert!(err.contains("fd00::/8"), "{err}");
        for bad in [
            "",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10/8",
            "example.com",
        ] {
            let err = parse_ip_net(bad).unwrap_err();
            assert!(
                err.contains("is not a CIDR range or IP address"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn external_ip_forms() {
        assert_eq!(
            parse_external_ip("203.0.113.5"),
            Ok(ExternalIp {
                public: ip("203.0.113.5"),
                private: None
            })
        );
        let e = parse_external_ip(" 2001:db8::5/fd00::5 ").unwrap();
        assert_eq!(e.public, ip("2001:db8::5"));
        assert_eq!(e.private, Some(ip("fd00::5")));
        assert_eq!(e.to_string(), "2001:db8::5/fd00::5");
        for bad in [
            "",
            "/",
            "203.0.113.5/",
            "x/10.0.0.5",
            "203.0.113.5/10.0.0.5/8",
        ] {
            assert!(parse_external_ip(bad).is_err(), "{bad}");
        }
        assert!(
            parse_external_ip("203.0.113.5/fd00::5")
                .unwrap_err()
                .contains("same family")
        );
    }

    /// A `PUBLIC/PRIVATE` entry maps its relay IP, a bare `PUBLIC` maps every
    /// other relay IP of its family; relay IPs without a match are not
    /// advertised differently.
    #[test]
    fn external_ips_become_advertised_pairs() {
        let c = Config::from_toml_str(
            r#"
            [turn]
            relay_ips = ["10.0.0.5", "10.0.0.6", "10.0.0.7", "fd00::5", "2001:db8::9"]
            external_ips = ["203.0.113.5", "203.0.113.6/10.0.0.6", "2001:db8::5/fd00::5"]
            "#,
        )
        .unwrap();
        let pairs = vec![
            (ip("10.0.0.5"), ip("203.0.113.5")),
            (ip("10.0.0.6"), ip("203.0.113.6")),
            (ip("10.0.0.7"), ip("203.0.113.5")),
            (ip("fd00::5"), ip("2001:db8::5")),
        ];
        assert_eq!(c.advertised().unwrap(), pairs);
        let core = c.core_turn(&SECRET, Instant::now());
        assert_eq!(core.advertised, pairs);
        assert!(c.summary().contains(
            "relay ips 10.0.0.5 (external 203.0.113.5) 10.0.0.6 (external 203.0.113.6) 10.0.0.7 (external 203.0.113.5) fd00::5 (external 2001:db8::5) 2001:db8::9,"
        ), "{}", c.summary());
        // No external IPs: nothing advertised.
        assert!(Config::default().advertised().unwrap().is_empty());
    }

    #[test]
    fn core_turn_carries_every_setting() {
        let c = Config::from_toml_str(
            r#"
            [stun]
            listen = ["192.0.2.1:3478", "[::]:3478"]
            [turn]
            realm = "example.org"
            relay_ips = ["192.0.2.1", "10.0.0.5"]
            external_ips = ["11.0.0.5/10.0.0.5"]
            min_port = 40000
            max_port = 40999
            default_lifetime = 300
            max_lifetime = 1200
            nonce_lifetime = 60
            user_quota = 3
            total_quota = 1000
            allowed_peer_ranges = ["10.0.0.0/8"]
            denied_peer_ranges = ["10.9.0.0/16"]
            challenges_per_second = 5
            [limits]
            max_peer_connections_per_allocation = 7
            max_peer_connections = 0
            "#,
        )
        .unwrap();
        let epoch = Instant::now();
        let core = c.core(&SECRET, epoch);
        let t = core.turn.expect("TURN is enabled");
        assert_eq!(t.realm, "example.org");
        assert_eq!(t.relay_ips, vec![ip("192.0.2.1"), ip("10.0.0.5")]);
        assert_eq!(t.advertised, vec![(ip("10.0.0.5"), ip("11.0.0.5"))]);
        assert_eq!((t.min_port, t.max_port), (40000, 40999));
        assert_eq!(t.default_lifetime, Duration::from_secs(300));
        assert_eq!(t.max_lifetime, Duration::from_secs(1200));
        assert_eq!((t.user_quota, t.total_quota), (3, 1000));
        assert_eq!(t.challenges_per_second, 5);
        assert_eq!(
            (t.max_connections_per_allocation, t.max_connections),
            (7, 0)
        );
        // The RFC 8656 defaults the file has no key for.
        assert_eq!(t.permission_lifetime, Duration::from_secs(300));
        assert_eq!(t.channel_lifetime, Duration::from_secs(600));

        // Nonces: minted with the given secret and lifetime.
        let client = sa("198.51.100.1:5000");
        let nonce = t.nonces.mint(epoch, client, true);
        let same_key = turnpike_core::NonceKey::new(&SECRET, epoch, Duration::from_secs(60));
        assert!(matches!(
            same_key.check(nonce.as_str(), epoch, client),
            turnpike_core::nonce::NonceCheck::Valid { .. }
        ));
        assert_eq!(
            t.nonces
                .check(nonce.as_str(), epoch + Duration::from_secs(62), client),
            turnpike_core::nonce::NonceCheck::Stale
        );
        let other_key = turnpike_core::NonceKey::new(&[8; 32], epoch, Duration::from_secs(60));
        assert_eq!(
            other_key.check(nonce.as_str(), epoch, client),
            turnpike_core::nonce::NonceCheck::Invalid
        );

        // Peer policy: allowed and denied ranges, the built-in refusals,
        // and the server's own listeners (specific and wildcard).
        let p = &t.peer_policy;
        assert_eq!(p.check(sa("10.1.2.3:9")), Ok(()));
        assert!(p.check(sa("10.9.1.1:9")).is_err());
        assert!(p.check(sa("192.168.1.1:9")).is_err());
        assert!(p.check(sa("127.0.0.1:9")).is_err());
        assert_eq!(p.check(sa("8.8.8.8:9")), Ok(()));
        // [::]:3478 covers port 3478 on every local IP, e.g. the relay IP
        // (even though allowed_peer_ranges covers it) and the external one.
        use turnpike_core::peer_policy::PeerDenied;
        assert_eq!(p.check(sa("10.0.0.5:3478")), Err(PeerDenied::ServerSocket));
        assert_eq!(p.check(sa("10.0.0.5:3479")), Ok(()));
        assert_eq!(p.check(sa("11.0.0.5:3478")), Err(PeerDenied::ServerSocket));
        assert_eq!(p.check(sa("11.0.0.5:3479")), Ok(()));

        // TURN off: STUN only.
        let off = Config::from_toml_str(
            "[turn]\nenabled = false\n[[turn.users]]\nusername = \"a\"\npassword = \"b\"\n",
        )
        .unwrap();
        assert!(off.core(&SECRET, epoch).turn.is_none());
        assert!(off.users().is_empty());
        assert!(off.user_keys().is_empty());
        assert!(off.summary().ends_with("; turn off"), "{}", off.summary());
        // Default: on.
        assert!(Config::default().core(&SECRET, epoch).turn.is_some());
    }

    #[test]
    fn turn_overrides_replace_the_file_values() {
        let mut c = Config::parse_toml(
            r#"
            [turn]
            realm = "file"
            relay_ips = ["10.0.0.5", "10.0.0.6"]
            min_port = 50000
            [[turn.users]]
            username = "alice"
            password = "from-file"
            [[turn.users]]
            username = "bob"
            password = "from-file"
            "#,
            None,
        )
        .unwrap();
        c.apply(&Overrides {
            turn: Some(false),
            realm: Some("flag".into()),
            relay_ips: Some(vec![ip("10.0.0.7")]),
            external_ips: Some(vec![parse_external_ip("203.0.113.7").unwrap()]),
            max_port: Some(60000),
            default_lifetime: Some(60),
            max_lifetime: Some(120),
            nonce_lifetime: Some(30),
            user_quota: Some(1),
            total_quota: Some(2),
            allowed_peer_ranges: Some(vec![net("127.0.0.0/8")]),
            denied_peer_ranges: Some(vec![net("10.0.0.0/8")]),
            challenges_per_second: Some(3),
            users: Some(vec![user("carol", "from-flag")]),
            ..Overrides::default()
        });
        c.validate().unwrap();
        let t = &c.turn;
        assert!(!t.enabled);
        assert_eq!(t.realm, "flag");
        assert_eq!(t.relay_ips, vec![ip("10.0.0.7")]);
        assert_eq!(t.min_port, 50000, "not overridden: file value kept");
        assert_eq!(t.max_port, 60000);
        assert_eq!(
            (t.default_lifetime, t.max_lifetime, t.nonce_lifetime),
            (60, 120, 30)
        );
        assert_eq!((t.user_quota, t.total_quota), (1, 2));
        assert_eq!(t.allowed_peer_ranges, vec![net("127.0.0.0/8")]);
        assert_eq!(t.denied_peer_ranges, vec![net("10.0.0.0/8")]);
        assert_eq!(t.challenges_per_second, 3);
        // Users from flags/env replace the file's list.
        assert_eq!(t.users, vec![user("carol", "from-flag")]);
        // An empty override list clears the file's.
        c.apply(&Overrides {
            users: Some(Vec::new()),
            ..Overrides::default()
        });
        assert!(c.turn.users.is_empty());
    }

    #[test]
    fn user_parsing_and_redaction() {
        assert_eq!(parse_user("alice:pa:ss"), Ok(user("alice", "pa:ss")));
        assert_eq!(parse_user("a:b"), Ok(user("a", "b")));
        for (bad, needle) in [
            ("alicesecret", "expected USER:PASSWORD"),
            (":secret", "user name before the colon"),
            ("alice:", "user \"alice\" has an empty password"),
        ] {
            let err = parse_user(bad).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
            assert!(!err.contains("secret"), "{err}");
        }
        let debug = format!("{:?}", user("alice", "hunter2"));
        assert!(
            debug.contains("alice") && !debug.contains("hunter2"),
            "{debug}"
        );
        let c =
            Config::from_toml_str("[[turn.users]]\nusername = \"alice\"\npassword = \"hunter2\"\n")
                .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!c.summary().contains("hunter2"));
    }

    #[test]
    fn wildcard_of_the_other_family_is_fine_with_an_alternate_ip() {
        let c = Config::from_toml_str(
            "[stun]\nlisten = [\"192.0.2.1:3478\", \"[::]:3478\"]\nalternate_ip = \"192.0.2.2\"\n",
        )
        .unwrap();
        let addrs: Vec<_> = c.listeners().iter().map(|l| l.addr).collect();
        assert_eq!(
            addrs,
            vec![
                sa("192.0.2.1:3478"),
                sa("192.0.2.1:3479"),
                sa("192.0.2.2:3478"),
                sa("192.0.2.2:3479"),
                sa("[::]:3478"),
            ]
        );
        assert_eq!(c.listeners()[4].role, AddressRole::PRIMARY);
    }

    #[test]
    fn listeners_without_alternate_are_the_listen_addresses() {
        let c = Config::default();
        let l = c.listeners();
        assert_eq!(l.len(), 2);
        assert!(
            l.iter()
                .all(|l| l.role == AddressRole::PRIMARY && l.configured == l.addr)
        );
    }

    #[test]
    fn listeners_expand_to_the_rfc5780_quartet() {
        use Slot::*;
        let c = Config::from_toml_str(
            "[stun]\nlisten = [\"192.0.2.1:3478\", \"192.0.2.1:5000\"]\nalternate_ip = \"192.0.2.2\"\n",
        )
        .unwrap();
        let got: Vec<_> = c
            .listeners()
            .into_iter()
            .map(|l| (l.addr, l.role.ip, l.role.port, l.configured))
            .collect();
        let p1 = sa("192.0.2.1:3478");
        let p2 = sa("192.0.2.1:5000");
        assert_eq!(
            got,
            vec![
                (p1, Primary, Primary, p1),
                (sa("192.0.2.1:3479"), Primary, Alternate, p1),
                (sa("192.0.2.2:3478"), Alternate, Primary, p1),
                (sa("192.0.2.2:3479"), Alternate, Alternate, p1),
                (p2, Primary, Primary, p2),
                (sa("192.0.2.1:5001"), Primary, Alternate, p2),
                (sa("192.0.2.2:5000"), Alternate, Primary, p2),
                (sa("192.0.2.2:5001"), Alternate, Alternate, p2),
            ]
        );
        let nat = c.nat_discovery().unwrap();
        assert_eq!(nat.primary_ip, "192.0.2.1".parse::<IpAddr>().unwrap());
        assert_eq!(nat.alternate_ip, "192.0.2.2".parse::<IpAddr>().unwrap());
        assert_eq!(
            nat.ports,
            vec![
                PortPair {
                    primary: 3478,
                    alternate: 3479
                },
                PortPair {
                    primary: 5000,
                    alternate: 5001
                },
            ]
        );
    }

    #[test]
    fn explicit_alternate_port_and_ipv6() {
        let c = Config::from_toml_str(
            "[stun]\nlisten = [\"[2001:db8::1]:3478\"]\nalternate_ip = \"2001:db8::2\"\nalternate_port = 3490\n",
        )
        .unwrap();
        let addrs: Vec<_> = c.listeners().iter().map(|l| l.addr).collect();
        assert_eq!(
            addrs,
            vec![
                sa("[2001:db8::1]:3478"),
                sa("[2001:db8::1]:3490"),
                sa("[2001:db8::2]:3478"),
                sa("[2001:db8::2]:3490"),
            ]
        );
    }

    #[test]
    fn core_config_carries_one_nat_discovery_set_per_port_pair() {
        let c = Config::from_toml_str(
            "[server]\nsoftware = \"\"\n[stun]\nlisten = [\"192.0.2.1:3478\", \"[::1]:3478\"]\nalternate_ip = \"192.0.2.2\"\nresponse_port = true\n",
        )
        .unwrap();
        let core = c.core(&SECRET, Instant::now());
        assert_eq!(core.software, None);
        assert!(core.allow_response_port && !core.allow_padding);
        assert_eq!(
            core.nat_discovery,
            vec![turnpike_core::NatDiscovery {
                ips: ["192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap()],
                ports: [3478, 3479],
            }]
        );
        let default = Config::default().core(&SECRET, Instant::now());
        assert!(default.nat_discovery.is_empty());
        assert_eq!(default.software.as_deref(), Some("Turnpike"));
    }

    #[test]
    fn summary_is_one_line() {
        let s = Config::default().summary();
        assert!(!s.contains('\n'));
        assert!(s.contains("listen 0.0.0.0:3478 [::]:3478"), "{s}");
        assert!(s.contains("nat discovery off"), "{s}");
        assert!(
            s.ends_with(
                "; turn on (realm \"turnpike\", 0 users, relay on the IP each request arrived on, ports 49152-65535)"
            ),
            "{s}"
        );
        let c = Config::from_toml_str(
            "[turn]\nrealm = \"r\"\nrelay_ips = [\"127.0.0.1\", \"::1\"]\nmin_port = 61000\nmax_port = 65000\n[[turn.users]]\nusername = \"alice\"\npassword = \"wonderland\"\n",
        )
        .unwrap();
        let s = c.summary();
        assert!(!s.contains('\n'));
        assert!(
            s.ends_with(
                "; turn on (realm \"r\", 1 user, relay ips 127.0.0.1 ::1, ports 61000-65000)"
            ),
            "{s}"
        );
        assert!(!s.contains("wonderland"), "{s}");
    }

    #[test]
    fn non_utf8_file_gets_its_own_hint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("latin1.toml");
        std::fs::write(&path, b"software = \"caf\xe9\"\n").unwrap();
        let text = Config::load(&path).unwrap_err().to_string();
        assert!(
            text.ends_with("(the config file must be UTF-8 text)"),
            "{text}"
        );
    }

    #[test]
    fn io_message_drops_the_os_error_code() {
        let e = io::Error::from_raw_os_error(2);
        assert_eq!(io_message(&e), "No such file or directory");
        let e = io::Error::other("plain");
        assert_eq!(io_message(&e), "plain");
    }

    const EXAMPLE: &str = include_str!("../../../turnpike.example.toml");

    /// The example file documents the defaults: parsed as-is it must equal
    /// `Config::default()`, so it cannot drift from the code.
    #[test]
    fn example_file_is_the_defaults() {
        assert_eq!(Config::from_toml_str(EXAMPLE).unwrap(), Config::default());
    }

    /// Settings shown commented out (`#key = value`, no space after `#`)
    /// must be real keys with well-typed values once uncommented.
    #[test]
    fn example_file_commented_settings_parse() {
        let mut uncommented = 0;
        let doc: String = EXAMPLE
            .lines()
            .map(|line| match line.strip_prefix('#') {
                Some(rest)
                    if rest.starts_with(|c: char| c.is_ascii_lowercase())
                        || rest.starts_with("[[") =>
                {
                    uncommented += 1;
                    format!("{rest}\n")
                }
                _ => format!("{line}\n"),
            })
            .collect();
        assert!(uncommented >= 2, "expected commented-out settings");
        let c = Config::parse_toml(&doc, None).unwrap();
        assert!(c.stun.alternate_ip.is_some());
        assert!(c.stun.alternate_port.is_some());
        assert_eq!(c.turn.users.len(), 2, "the [[turn.users]] examples");
        assert!(c.tls.certificate.is_some() && c.tls.private_key.is_some());
        // The uncommented users are the only difference from the defaults.
        assert_eq!(
            c.turn,
            TurnConfig {
                users: c.turn.users.clone(),
                ..TurnConfig::default()
            }
        );
    }

    /// Every key appears in the example, in its section.
    #[test]
    fn example_file_mentions_every_key() {
        for (name, keys) in SECTIONS.iter().filter(|(n, _)| !n.is_empty()) {
            // `[[turn.users]]` is shown commented out.
            let header = if *name == "turn.users" {
                format!("\n#[[{name}]]\n")
            } else {
                format!("\n[{name}]\n")
            };
            let start = EXAMPLE
                .find(&header)
                .unwrap_or_else(|| panic!("[{name}] missing from example"));
            let body = &EXAMPLE[start + 1..];
            let end = body[1..].find("\n[").map_or(body.len(), |i| i + 1);
            let body = &body[..end];
            for key in *keys {
                let present = body.lines().any(|l| {
                    let l = l.trim_start_matches('#');
                    l.starts_with(&format!("{key} = ")) || l == format!("[[{name}.{key}]]")
                });
                assert!(present, "{name}.{key} missing from example");
            }
        }
    }

    #[test]
    fn tls_and_limits_defaults_are_the_documented_ones() {
        let c = Config::default();
        let tls = &c.tls;
        assert_eq!(tls.certificate, None);
        assert_eq!(tls.private_key, None);
        assert!(!tls.enabled());
        assert_eq!(tls.listen, vec![sa("0.0.0.0:5349"), sa("[::]:5349")]);
        assert_eq!(tls.dtls_listen, tls.listen);
        assert_eq!(tls.min_version, TlsVersion::Tls12);
        assert_eq!(tls.reload_interval, 5);
        assert_eq!(tls.reload_every(), Some(Duration::from_secs(5)));
        let l = &c.limits;
        assert_eq!(l.max_connections_per_ip, 64);
        assert_eq!(l.max_handshakes, 1024);
        assert_eq!(l.handshake_timeout(), Duration::from_secs(10));
        assert_eq!(l.auth_timeout(), Duration::from_secs(30));
        assert_eq!(l.idle_timeout(), Duration::from_secs(600));
        assert_eq!(l.max_buffered_bytes, 262_144);
        assert_eq!(l.max_peer_connections_per_allocation, 32);
        assert_eq!(l.max_peer_connections, 16_384);
        assert!(
            c.summary()
                .contains("; padding off; tls off; admin off; xdp off; database ")
        );
        assert_eq!(
            Config::from_toml_str("[tls]\n[limits]\n").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn tls_and_limits_file_values_are_read() {
        let c = Config::from_toml_str(
            r#"
            [tls]
            certificate = "/etc/tp/fullchain.pem"
            private_key = "/etc/tp/privkey.pem"
            listen = ["192.0.2.1:443"]
            dtls_listen = []
            min_version = "1.3"
            reload_interval = 0
            [limits]
            max_connections_per_ip = 0
            max_connections = 7
            ipv6_prefix = 48
            max_handshakes = 1
            handshakes_per_second_per_ip = 3
            handshake_timeout = 3600
            auth_timeout = 1
            idle_timeout = 3600
            max_buffered_bytes = 16384
            max_buffered_bytes_total = 1048576
            max_peer_connections_per_allocation = 1024
            max_peer_connections = 0
            "#,
        )
        .unwrap();
        let tls = &c.tls;
        assert!(tls.enabled());
        assert_eq!(
            tls.certificate.as_deref(),
            Some(Path::new("/etc/tp/fullchain.pem"))
        );
        assert_eq!(
            tls.private_key.as_deref(),
            Some(Path::new("/etc/tp/privkey.pem"))
        );
        assert_eq!(tls.listen, vec![sa("192.0.2.1:443")]);
        assert!(tls.dtls_listen.is_empty());
        assert_eq!(tls.min_version, TlsVersion::Tls13);
        assert_eq!(tls.reload_every(), None);
        assert_eq!(
            c.limits,
            LimitsConfig {
                max_connections_per_ip: 0,
                max_connections: 7,
                ipv6_prefix: 48,
                max_handshakes: 1,
                handshakes_per_second_per_ip: 3,
                handshake_timeout: 3600,
                auth_timeout: 1,
                idle_timeout: 3600,
                max_buffered_bytes: 16384,
                max_buffered_bytes_total: 1_048_576,
                max_peer_connections_per_allocation: 1024,
                max_peer_connections: 0,
            }
        );
        let s = c.summary();
        assert!(
            s.contains("; tls on (certificate /etc/tp/fullchain.pem, key /etc/tp/privkey.pem, tls 192.0.2.1:443, dtls none, min version 1.3, reload on SIGHUP); admin off; xdp off; database "),
            "{s}"
        );
        // The key in the certificate file, default listeners.
        let c = Config::from_toml_str("[tls]\ncertificate = \"/c.pem\"\n").unwrap();
        assert!(
            c.summary().contains("; tls on (certificate /c.pem, key in the certificate file, tls 0.0.0.0:5349 [::]:5349, dtls 0.0.0.0:5349 [::]:5349, min version 1.2, reload on change (checked every 5 s) or SIGHUP);"),
            "{}",
            c.summary()
        );
        // Versions written as TOML numbers mean the same.
        for (text, want) in [("1.2", TlsVersion::Tls12), ("1.3", TlsVersion::Tls13)] {
            let c = Config::from_toml_str(&format!("[tls]\nmin_version = {text}\n")).unwrap();
            assert_eq!(c.tls.min_version, want);
        }
    }

    #[test]
    fn tls_and_limits_overrides_replace_the_file_values() {
        let mut c = Config::parse_toml(
            "[tls]\ncertificate = \"/file/c.pem\"\nprivate_key = \"/file/k.pem\"\nlisten = [\"192.0.2.1:5349\"]\nreload_interval = 60\n[limits]\nidle_timeout = 300\nauth_timeout = 20\n",
            None,
        )
        .unwrap();
        c.apply(&Overrides {
            tls_certificate: Some(PathBuf::from("/flag/c.pem")),
            tls_listen: Some(Vec::new()),
            dtls_listen: Some(vec![sa("192.0.2.1:5350")]),
            tls_min_version: Some(TlsVersion::Tls13),
            tls_reload_interval: Some(0),
            max_connections_per_ip: Some(7),
            max_handshakes: Some(8),
            handshake_timeout: Some(9),
            idle_timeout: Some(11),
            max_buffered_bytes: Some(65_536),
            max_peer_connections_per_allocation: Some(1),
            max_peer_connections: Some(100),
            ..Overrides::default()
        });
        c.validate().unwrap();
        let tls = &c.tls;
        assert_eq!(tls.certificate.as_deref(), Some(Path::new("/flag/c.pem")));
        assert_eq!(
            tls.private_key.as_deref(),
            Some(Path::new("/file/k.pem")),
            "not overridden: file value kept"
        );
        assert!(tls.listen.is_empty(), "an empty override list clears it");
        assert_eq!(tls.dtls_listen, vec![sa("192.0.2.1:5350")]);
        assert_eq!(
            (tls.min_version, tls.reload_interval),
            (TlsVersion::Tls13, 0)
        );
        let l = &c.limits;
        assert_eq!((l.max_connections_per_ip, l.max_handshakes), (7, 8));
        assert_eq!(
            (l.handshake_timeout, l.auth_timeout, l.idle_timeout),
            (9, 20, 11)
        );
        assert_eq!(l.max_buffered_bytes, 65_536);
        assert_eq!(
            (
                l.max_peer_connections_per_allocation,
                l.max_peer_connections
            ),
            (1, 100)
        );
    }

    #[test]
    fn tls_parse_errors() {
        let cases = [
            (
                "[tls]\nmin_version = \"1.1\"\n",
                2,
                "TLS 1.1 is not offered (RFC 8996",
            ),
            ("[tls]\nmin_version = 1.0\n", 2, "TLS 1.0 is not offered"),
            ("[tls]\nmin_version = 1\n", 2, "TLS 1.0 is not offered"),
            (
                "[tls]\nmin_version = \"TLSv1.3\"\n",
                2,
                "\"TLSv1.3\" is not a TLS version; use \"1.2\" or \"1.3\"",
            ),
            (
                "[tls]\nmin_version = true\n",
                2,
                "expected \"1.2\" or \"1.3\"",
            ),
            ("[tls]\nlisten = [\"0.0.0.0\"]\n", 2, "not an IP:PORT"),
            (
                "[tls]\ndtls_listen = \"0.0.0.0:5349\"\n",
                2,
                "`dtls_listen`",
            ),
            ("[tls]\ncertificate = 5\n", 2, "`certificate`"),
            (
                "[tls]\ncert = \"/c.pem\"\n",
                2,
                "unknown key `cert` in [tls]; expected one of certificate, private_key,",
            ),
            ("[limits]\nidle_timeout = -1\n", 2, "from 0 to 4294967295"),
            (
                "[limits]\nmax_conections_per_ip = 1\n",
                2,
                "unknown key `max_conections_per_ip` in [limits]",
            ),
            ("tls = 1\n", 1, "[tls] table"),
            (
                "[server]\nhandshake_timeout = 1\n",
                2,
                "`handshake_timeout` belongs in [limits]",
            ),
        ];
        for (doc, want_line, needle) in cases {
            let (line, message) = parse_error(doc);
            assert_eq!(line, Some(want_line), "{doc:?}: {message}");
            assert!(message.contains(needle), "{doc:?}: {message}");
            assert!(!message.contains('\n'), "{doc:?}: {message}");
        }
    }

    #[test]
    fn tls_and_limits_validation_errors() {
        let cert = "[tls]\ncertificate = \"/c.pem\"\n";
        let cases: &[(String, &str)] = &[
            (
                "[tls]\ncertificate = \"\"\n".into(),
                "tls.certificate is empty; give the path of the PEM certificate chain",
            ),
            (
                format!("{cert}private_key = \"\"\n"),
                "tls.private_key is empty;",
            ),
            (
                "[tls]\nprivate_key = \"/k.pem\"\n".into(),
                "tls.private_key is set but tls.certificate is not; set tls.certificate",
            ),
            (
                "[tls]\nlisten = [\"0.0.0.0:5349\", \"0.0.0.0:5349\"]\n".into(),
                "tls.listen contains 0.0.0.0:5349 twice",
            ),
            (
                "[tls]\ndtls_listen = [\"[ff02::1]:5349\"]\n".into(),
                "tls.dtls_listen address [ff02::1]:5349 is a multicast address",
            ),
            (
                "[tls]\nreload_interval = 86401\n".into(),
                "tls.reload_interval = 86401 is out of range; use 0 (reload only on SIGHUP) to 86400 seconds",
            ),
            (
                format!("{cert}listen = []\ndtls_listen = []\n"),
                "tls.listen and tls.dtls_listen are both empty, so nothing would use it",
            ),
            // Same address, and wildcards covering specific addresses, on
            // the same transport; the RFC 5780 alternate listeners count.
            (
                format!("{cert}listen = [\"0.0.0.0:3478\"]\n"),
                "tls.listen address 0.0.0.0:3478 collides with the STUN listener 0.0.0.0:3478 (both TCP, port 3478); give TLS another port (5349 is the standard one) or turn stun.tcp off",
            ),
            (
                format!("{cert}listen = [\"[2001:db8::1]:3478\"]\n"),
                "collides with the STUN listener [::]:3478",
            ),
            (
                format!("[stun]\nlisten = [\"192.0.2.1:5349\"]\n{cert}"),
                "tls.listen address 0.0.0.0:5349 collides with the STUN listener 192.0.2.1:5349",
            ),
            (
                format!("[stun]\ntcp = false\nlisten = [\"192.0.2.1:5349\"]\n{cert}"),
                "tls.dtls_listen address 0.0.0.0:5349 collides with the STUN listener 192.0.2.1:5349 (both UDP, port 5349); give DTLS another port (5349 is the standard one) or turn stun.udp off",
            ),
            (
                format!(
                    "[stun]\nlisten = [\"192.0.2.1:3478\"]\nalternate_ip = \"192.0.2.2\"\n{cert}listen = [\"192.0.2.2:3479\"]\n"
                ),
                "collides with the STUN listener 192.0.2.2:3479",
            ),
            (
                "[limits]\nmax_buffered_bytes_total = 1000\n".into(),
                "limits.max_buffered_bytes_total = 1000 is below limits.max_buffered_bytes = 262144; give it at least that (default 268435456: 256 MiB)",
            ),
            (
                "[limits]\nipv6_prefix = 8\n".into(),
                "limits.ipv6_prefix = 8 is out of range; use 16 to 128 bits (default 64: a host's /64 is one source)",
            ),
            (
                "[limits]\nmax_handshakes = 0\n".into(),
                "limits.max_handshakes = 0 is out of range; use 1 to 1000000 handshakes (default 1024)",
            ),
            (
                "[limits]\nhandshake_timeout = 0\n".into(),
                "limits.handshake_timeout = 0 is out of range; use 1 to 3600 seconds (default 10)",
            ),
            (
                "[limits]\nauth_timeout = 3601\n".into(),
                "limits.auth_timeout = 3601 is out of range; use 1 to 3600 seconds (default 30)",
            ),
            (
                "[limits]\nidle_timeout = 0\n".into(),
                "limits.idle_timeout = 0 is out of range; use 1 to 3600 seconds (default 600)",
            ),
            (
                "[limits]\nmax_buffered_bytes = 1000\n".into(),
                "limits.max_buffered_bytes = 1000 is out of range; use 16384 to 67108864 bytes (default 262144)",
            ),
            (
                "[limits]\nmax_peer_connections_per_allocation = 0\n".into(),
                "limits.max_peer_connections_per_allocation = 0 is out of range; use 1 to 1024 connections (default 32)",
            ),
            (
                "[limits]\nmax_peer_connections_per_allocation = 1025\n".into(),
                "limits.max_peer_connections_per_allocation = 1025 is out of range; use 1 to 1024 connections (default 32)",
            ),
        ];
        for (doc, needle) in cases {
            let message = invalid(doc);
            assert!(message.contains(needle), "{doc:?}: {message}");
            assert!(!message.contains('\n'));
        }
        // Listener shapes are checked with TLS off too; collisions only
        // matter once TLS is on.
        Config::from_toml_str("[stun]\nlisten = [\"0.0.0.0:5349\"]\n").unwrap();
        Config::from_toml_str(&format!("[stun]\nlisten = [\"0.0.0.0:5349\"]\nudp = false\n{cert}dtls_listen = [\"0.0.0.0:5349\"]\nlisten = []\n")).unwrap();
        // Other transports, other families and other ports are fine.
        Config::from_toml_str(&format!("[stun]\nlisten = [\"0.0.0.0:3478\"]\n{cert}listen = [\"[::]:3478\", \"0.0.0.0:3479\"]\ndtls_listen = []\n")).unwrap();
        Config::from_toml_str(&format!(
            "[stun]\ntcp = false\n{cert}listen = [\"0.0.0.0:3478\"]\n"
        ))
        .unwrap();
    }

    #[test]
    fn admin_defaults_file_values_and_overrides() {
        let c = Config::default();
        assert_eq!(c.admin, AdminConfig::default());
        assert!(c.admin.listen.is_empty() && !c.admin.allow_remote);
        assert_eq!(Config::from_toml_str("[admin]\n").unwrap(), c);
        let mut c = Config::from_toml_str(
            "[admin]\nlisten = [\"127.0.0.1:9090\", \"[::1]:9090\"]\nallow_remote = false\n",
        )
        .unwrap();
        assert_eq!(c.admin.listen, vec![sa("127.0.0.1:9090"), sa("[::1]:9090")]);
        assert!(
            c.summary().contains(
                "; tls off; admin on (http://127.0.0.1:9090 http://[::1]:9090; /metrics, /status); xdp off; database "
            ),
            "{}",
            c.summary()
        );
        c.apply(&Overrides {
            admin_listen: Some(vec![sa("192.0.2.1:80")]),
            admin_allow_remote: Some(true),
            ..Overrides::default()
        });
        assert_eq!(
            c.admin,
            AdminConfig {
                listen: vec![sa("192.0.2.1:80")],
                allow_remote: true,
            }
        );
        c.validate().unwrap();
        // An empty override list turns it off.
        c.apply(&Overrides {
            admin_listen: Some(Vec::new()),
            ..Overrides::default()
        });
        assert!(c.admin.listen.is_empty() && c.admin.allow_remote);
        assert_eq!(
            parse_error("[admin]\nlisten = [\"localhost:9090\"]\n"),
            (
                Some(2),
                "bad value for `listen`: `localhost:9090` is not an IP:PORT address (examples: 0.0.0.0:3478, 192.0.2.1:3478, [::]:3478)"
                    .to_owned()
            )
        );
    }

    #[test]
    fn xdp_defaults_file_values_overrides_and_errors() {
        let c = Config::default();
        assert_eq!(c.xdp, XdpConfig::default());
        assert!(c.xdp.interfaces.is_empty() && c.xdp.mode == XdpMode::Auto);
        assert_eq!(Config::from_toml_str("[xdp]\n").unwrap(), c);
        let mut c = Config::from_toml_str(
            "[turn]\n[[turn.users]]\nusername = \"a\"\npassword = \"b\"\n[xdp]\ninterfaces = [\"eth0\", \"lo\"]\nmode = \"generic\"\n",
        )
        .unwrap();
        assert_eq!(c.xdp.interfaces, ["eth0", "lo"]);
        assert_eq!(c.xdp.mode, XdpMode::Generic);
        assert!(
            c.summary().contains("; xdp on (eth0 lo, generic); "),
            "{}",
            c.summary()
        );
        c.apply(&Overrides {
            xdp_interfaces: Some(vec!["ens5".into()]),
            xdp_mode: Some(XdpMode::Native),
            ..Overrides::default()
        });
        assert_eq!(
            c.xdp,
            XdpConfig {
                interfaces: vec!["ens5".into()],
                mode: XdpMode::Native,
            }
        );
        c.validate().unwrap();
        let users = "[turn]\n[[turn.users]]\nusername = \"a\"\npassword = \"b\"\n";
        for (doc, needle) in [
            (
                format!("{users}[xdp]\ninterfaces = [\"eth0\", \"eth0\"]\n"),
                "xdp.interfaces contains eth0 twice; remove the duplicate",
            ),
            (
                format!("{users}[xdp]\ninterfaces = [\"a-name-far-too-long\"]\n"),
                "xdp.interfaces contains \"a-name-far-too-long\", which is not an interface name",
            ),
            (
                format!("{users}[xdp]\ninterfaces = [\"\"]\n"),
                "which is not an interface name",
            ),
            (
                "[turn]\nenabled = false\n[xdp]\ninterfaces = [\"eth0\"]\n".to_owned(),
                "xdp.interfaces is set but TURN is off",
            ),
        ] {
            let message = invalid(&doc);
            assert!(message.contains(needle), "{doc:?}: {message}");
            assert!(!message.contains('\n'));
        }
        assert_eq!(
            parse_error("[xdp]\nmode = \"fast\"\n").0,
            Some(2),
            "an unknown mode is refused at its line"
        );
    }

    #[test]
    fn admin_validation_errors() {
        let cases: &[(&str, &str)] = &[
            (
                "[admin]\nlisten = [\"0.0.0.0:9090\"]\n",
                "admin.listen address 0.0.0.0:9090 is not a loopback address, and the admin endpoint has no authentication; use 127.0.0.1:PORT or [::1]:PORT, or set admin.allow_remote = true",
            ),
            (
                "[admin]\nlisten = [\"127.0.0.1:9090\", \"192.0.2.1:9090\"]\n",
                "admin.listen address 192.0.2.1:9090 is not a loopback address",
            ),
            (
                "[admin]\nlisten = [\"[::]:9090\"]\n",
                "admin.listen address [::]:9090 is not a loopback address",
            ),
            (
                "[admin]\nlisten = [\"[2001:db8::1]:9090\"]\n",
                "admin.listen address [2001:db8::1]:9090 is not a loopback address",
            ),
            (
                "[admin]\nlisten = [\"127.0.0.1:9090\", \"127.0.0.1:9090\"]\n",
                "admin.listen contains 127.0.0.1:9090 twice; remove the duplicate",
            ),
            (
                "[admin]\nallow_remote = true\nlisten = [\"224.0.0.1:9090\"]\n",
                "admin.listen address 224.0.0.1:9090 is not a unicast address",
            ),
            (
                "[admin]\nallow_remote = true\nlisten = [\"255.255.255.255:9090\"]\n",
                "is not a unicast address",
            ),
            // The admin endpoint is TCP: STUN over TCP and TLS share the port.
            (
                "[admin]\nlisten = [\"127.0.0.1:3478\"]\n",
                "admin.listen address 127.0.0.1:3478 collides with the STUN listener 0.0.0.0:3478 (both TCP, port 3478); give the admin endpoint another port",
            ),
            (
                "[tls]\ncertificate = \"/c.pem\"\n[admin]\nlisten = [\"[::1]:5349\"]\n",
                "admin.listen address [::1]:5349 collides with the TLS listener [::]:5349",
            ),
            (
                "[stun]\nlisten = [\"127.0.0.1:3478\"]\nalternate_ip = \"127.0.0.2\"\n[admin]\nlisten = [\"127.0.0.1:3479\"]\n",
                "collides with the STUN listener 127.0.0.1:3479",
            ),
        ];
        for (doc, needle) in cases {
            let message = invalid(doc);
            assert!(message.contains(needle), "{doc:?}: {message}");
            assert!(!message.contains('\n'));
        }
        // Loopback in every spelling; anything with allow_remote.
        for listen in [
            "127.0.0.1:9090",
            "127.1.2.3:9090",
            "[::1]:9090",
            "[::ffff:127.0.0.1]:9090",
        ] {
            Config::from_toml_str(&format!("[admin]\nlisten = [\"{listen}\"]\n")).unwrap();
        }
        Config::from_toml_str(
            "[admin]\nallow_remote = true\nlisten = [\"0.0.0.0:9090\", \"[::]:9090\"]\n",
        )
        .unwrap();
        // No collision without STUN over TCP, or with TLS off, or over UDP.
        Config::from_toml_str("[stun]\ntcp = false\n[admin]\nlisten = [\"127.0.0.1:3478\"]\n")
            .unwrap();
        Config::from_toml_str("[admin]\nlisten = [\"127.0.0.1:5349\"]\n").unwrap();
        Config::from_toml_str(
            "[tls]\ncertificate = \"/c.pem\"\nlisten = []\n[admin]\nlisten = [\"127.0.0.1:5349\"]\n",
        )
        .unwrap();
    }

    /// A relayed client cannot reach the admin endpoint (it answers anyone
    /// who connects), not even with loopback peers allowed.
    #[test]
    fn admin_addresses_are_refused_as_peers() {
        use turnpike_core::peer_policy::PeerDenied;
        let doc = "[turn]\nallowed_peer_ranges = [\"127.0.0.0/8\", \"::1/128\"]\n";
        let without = Config::from_toml_str(doc).unwrap();
        let with = Config::from_toml_str(&format!(
            "{doc}[admin]\nlisten = [\"127.0.0.1:9090\", \"[::1]:9091\"]\n"
        ))
        .unwrap();
        let policy = |c: &Config| c.core_turn(&SECRET, Instant::now()).peer_policy;
        let (without, with) = (policy(&without), policy(&with));
        for peer in ["127.0.0.1:9090", "[::1]:9091", "[::ffff:127.0.0.1]:9090"] {
            assert_eq!(without.check(sa(peer)), Ok(()), "{peer}");
            assert_eq!(
                with.check(sa(peer)),
                Err(PeerDenied::ServerSocket),
                "{peer}"
            );
        }
        // Other ports of the same IPs stay allowed.
        assert_eq!(with.check(sa("127.0.0.1:9091")), Ok(()));
        assert_eq!(with.check(sa("[::1]:9090")), Ok(()));
    }

    /// Nor the TLS and DTLS listeners, once TLS is on.
    #[test]
    fn tls_and_dtls_listeners_are_refused_as_peers() {
        use turnpike_core::peer_policy::PeerDenied;
        let doc = "[turn]\nallowed_peer_ranges = [\"127.0.0.0/8\"]\n";
        let tls = "[tls]\ncertificate = \"/c.pem\"\nlisten = [\"127.0.0.1:5349\"]\ndtls_listen = [\"127.0.0.1:5350\"]\n";
        let policy = |text: &str| {
            Config::from_toml_str(text)
                .unwrap()
                .core_turn(&SECRET, Instant::now())
                .peer_policy
        };
        let (without, with) = (policy(doc), policy(&format!("{doc}{tls}")));
        for peer in ["127.0.0.1:5349", "127.0.0.1:5350"] {
            assert_eq!(without.check(sa(peer)), Ok(()), "{peer}");
            assert_eq!(
                with.check(sa(peer)),
                Err(PeerDenied::ServerSocket),
                "{peer}"
            );
        }
    }

    #[test]
    fn overlap_of_listeners() {
        for (a, b, want) in [
            ("0.0.0.0:1", "0.0.0.0:1", true),
            ("0.0.0.0:1", "192.0.2.1:1", true),
            ("192.0.2.1:1", "0.0.0.0:1", true),
            ("192.0.2.1:1", "192.0.2.2:1", false),
            ("192.0.2.1:1", "192.0.2.1:2", false),
            ("[::]:1", "0.0.0.0:1", false),
            ("[::]:1", "[::1]:1", true),
            ("0.0.0.0:0", "0.0.0.0:0", false),
        ] {
            assert_eq!(addresses_overlap(sa(a), sa(b)), want, "{a} {b}");
        }
    }
}
