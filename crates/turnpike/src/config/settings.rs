//! Every setting, declared once: its key, type, default, flag, `TURNPIKE_*`
//! variable, allowed range and `--help` text. The `settings!` macro
//! ([`super::declare`]) makes the TOML sections, the overrides and their
//! layering, the flags, the range checks and the known-keys list from this
//! table.
//!
//! Adding a setting: add its entry here, document it in
//! `turnpike.example.toml` (a test checks that every declared key, flag and
//! variable is there, and that the file's values are the defaults), and
//! use the value where it is consumed. Every entry ends with `reload live`
//! or `reload restart`: whether a running server takes a new value on
//! reload (then `runtime/reload.rs` must apply it) or keeps the one it
//! started with and warns. The README's "Live reconfiguration" lists are
//! checked against these. Rules a single range cannot express
//! (one setting against another, lists without duplicates) go in
//! `validate.rs`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use ipnet::IpNet;

use super::declare::settings;
use super::overrides::ListOrNone;
use super::values::{
    CredentialFormat, DatabaseSchema, ExternalIp, IceAuth, TlsVersion, UserEntry, XdpMode, de_char,
    de_list, de_opt_ip, de_opt_socket_addr,
};
use crate::logging::LogFormat;

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

/// Upper bound on `ice.ttl` (a week): credentials handed out live at most
/// this long.
pub const MAX_ICE_TTL_SECS: u32 = 7 * 86_400;

/// Upper bound on `ice.max_urls`.
pub const MAX_ICE_URLS: u32 = 1_000;

/// Upper bound on `discovery.interval` and `discovery.probe_interval` (a
/// day).
pub const MAX_DISCOVERY_INTERVAL_SECS: u32 = 86_400;

/// Upper bound on `turn.max_lifetime`, `turn.default_lifetime` and
/// `turn.nonce_lifetime` (one day). Clients refresh long before; it exists
/// so a typo such as `max_lifetime = 36000000` fails at start-up.
pub const MAX_LIFETIME_SECS: u32 = 86_400;

/// Upper bound on `shutdown.grace_period` (a day): long drains are for
/// `turnpike drain --wait`, but a grace of hours is allowed.
pub const MAX_GRACE_PERIOD_SECS: u32 = 86_400;

/// Both families on one port: the runtime sets IPV6_V6ONLY on the `[::]`
/// socket so the two do not collide.
fn on_both_families(port: u16) -> Vec<SocketAddr> {
    vec![
        SocketAddr::from(([0, 0, 0, 0], port)),
        SocketAddr::from(([0u16; 8], port)),
    ]
}

settings! {
    /// `[server]`: process-wide settings.
    [server] ServerSettings, heading "Server", expecting "a [server] table" {
        /// Worker threads; 0 means one per CPU. See [`Settings::worker_threads`].
        workers: usize = 0;
            flag workers "workers" "N", env "TURNPIKE_WORKERS";
            help "worker threads, 0 = one per CPU";
            reload restart;
        /// SOFTWARE attribute value; empty disables it. See [`Settings::software`].
        // Deliberately without the version: advertising exact versions to
        // every client helps attackers pick exploits.
        software: String = "Turnpike".to_owned();
            flag software "software" "STR", env "TURNPIKE_SOFTWARE",
            negation String::new() => "Do not send the SOFTWARE attribute (software = \"\")";
            help "SOFTWARE attribute value";
            reload live;
    }

    /// `[log]`: logging (see [`crate::logging`]).
    [log] LogSettings, heading "Logging", expecting "a [log] table" {
        /// `tracing` EnvFilter directives, e.g. `info,turnpike_core=debug`.
        /// `RUST_LOG`, when set, replaces this (see [`crate::logging`]).
        level: String = "info".to_owned();
            flag log_level "log-level" "FILTER", env "TURNPIKE_LOG_LEVEL";
            help "tracing filter directives; RUST_LOG wins if set";
            reload live;
        /// Output format.
        format: LogFormat = LogFormat::Text;
            flag log_format "log-format" "FORMAT", env "TURNPIKE_LOG_FORMAT";
            help "text or json";
            reload live;
    }

    /// `[stun]`: STUN listeners and RFC 5780 behaviour.
    [stun] StunSettings, heading "STUN", expecting "a [stun] table" {
        /// Addresses served on UDP and/or TCP (see `udp`, `tcp`).
        #[serde(deserialize_with = "de_list")]
        listen: Vec<SocketAddr> = on_both_families(3478);
            flag listen "listen" "ADDR", env "TURNPIKE_LISTEN";
            help "IP:PORT to serve; repeat the flag or separate with commas. Replaces the file's list.";
            reload restart;
        /// Serve STUN over UDP.
        udp: bool = true;
            flag udp "udp" "BOOL", env "TURNPIKE_UDP",
            negation false => "Do not serve over UDP (udp = false)";
            help "serve over UDP";
            reload restart;
        /// Serve STUN over TCP.
        tcp: bool = true;
            flag tcp "tcp" "BOOL", env "TURNPIKE_TCP",
            negation false => "Do not serve over TCP (tcp = false)";
            help "serve over TCP";
            reload restart;
        /// Second IP address of this host. Enables RFC 3489 CHANGE-REQUEST and
        /// RFC 5780 NAT behaviour discovery.
        #[serde(deserialize_with = "de_opt_ip")]
        alternate_ip: Option<IpAddr> = None;
            flag alternate_ip "alternate-ip" "IP", env "TURNPIKE_ALTERNATE_IP";
            help "second IP of this host; enables CHANGE-REQUEST and RFC 5780 NAT discovery";
            reload restart;
        /// Alternate port; when unset and `alternate_ip` is set, each listen port
        /// P uses P + 1.
        alternate_port: Option<u16> = None;
            flag alternate_port "alternate-port" "PORT", env "TURNPIKE_ALTERNATE_PORT",
            shown "each listen port + 1";
            help "the port paired with the listen port for NAT discovery";
            reload restart;
        /// Honour RFC 5780 RESPONSE-PORT. Off by default because it lets a
        /// client aim our answers at another port of its address.
        response_port: bool = false;
            flag response_port "response-port" "BOOL", env "TURNPIKE_RESPONSE_PORT",
            negation false => "Ignore RESPONSE-PORT (response_port = false)";
            help "honour RFC 5780 RESPONSE-PORT";
            reload live;
        /// Honour RFC 5780 PADDING. Off by default; even when on, an answer is
        /// never padded beyond the request's own PADDING (no amplification).
        padding: bool = false;
            flag padding "padding" "BOOL", env "TURNPIKE_PADDING",
            negation false => "Ignore PADDING (padding = false)";
            help "honour RFC 5780 PADDING";
            reload live;
    }

    /// `[turn]`: TURN relaying (RFC 8656) and its long-term credentials.
    /// Turned into the core's [`turnpike_core::TurnConfig`] by
    /// [`Settings::core`].
    [turn] TurnSettings, heading "TURN", expecting "a [turn] table" {
        /// Serve TURN; `false` serves STUN only (TURN requests get 400).
        enabled: bool = true;
            flag turn "turn" "BOOL", env "TURNPIKE_TURN",
            negation false => "Serve STUN only; TURN requests get 400 (enabled = false)";
            help "serve TURN; off = STUN only";
            reload restart;
        /// REALM of the long-term credential mechanism.
        realm: String = "turnpike".to_owned();
            flag realm "realm" "REALM", env "TURNPIKE_REALM";
            help "REALM clients authenticate in";
            reload restart;
        /// IPs to bind relayed addresses on. Empty: the IP each request
        /// arrived on.
        #[serde(deserialize_with = "de_list")]
        relay_ips: Vec<IpAddr> = Vec::new();
            flag relay_ips "relay-ip" "IP", env "TURNPIKE_RELAY_IPS",
            shown "the IP each request arrived on";
            help "IP to relay on; repeat or separate with commas. Replaces the file's list.";
            reload restart;
        /// Public addresses for 1:1 NAT (coturn's `external-ip`).
        #[serde(deserialize_with = "de_list")]
        external_ips: Vec<ExternalIp> = Vec::new();
            flag external_ips "external-ip" "PUBLIC[/PRIVATE]", env "TURNPIKE_EXTERNAL_IPS";
            help "PUBLIC or PUBLIC/PRIVATE for 1:1 NAT; repeat or separate with commas. Replaces the file's list.";
            reload restart;
        /// Lowest relay port (inclusive).
        min_port: u16 = 49152;
            flag min_port "min-port" "PORT", env "TURNPIKE_MIN_PORT";
            help "lowest relay port";
            reload restart;
        /// Highest relay port (inclusive).
        max_port: u16 = 65535;
            flag max_port "max-port" "PORT", env "TURNPIKE_MAX_PORT";
            help "highest relay port";
            reload restart;
        /// Allocation lifetime in seconds when the client asks for less (at
        /// most `max_lifetime`).
        default_lifetime: u32 = 600;
            flag default_lifetime "default-lifetime" "SECONDS", env "TURNPIKE_DEFAULT_LIFETIME",
            range(1, MAX_LIFETIME_SECS) "seconds";
            help "allocation lifetime in seconds";
            reload live;
        /// Longest allocation lifetime granted, in seconds.
        max_lifetime: u32 = 3600;
            flag max_lifetime "max-lifetime" "SECONDS", env "TURNPIKE_MAX_LIFETIME",
            range(1, MAX_LIFETIME_SECS) "seconds";
            help "longest allocation lifetime in seconds";
            reload live;
        /// Seconds a nonce stays valid before 438 (Stale Nonce).
        nonce_lifetime: u32 = 600;
            flag nonce_lifetime "nonce-lifetime" "SECONDS", env "TURNPIKE_NONCE_LIFETIME",
            range(1, MAX_LIFETIME_SECS) "seconds";
            help "seconds a nonce stays valid";
            reload live;
        /// Allocations per user (per user id for REST credentials); 0 = unlimited.
        user_quota: u32 = 0;
            flag user_quota "user-quota" "N", env "TURNPIKE_USER_QUOTA";
            help "allocations per user, 0 = unlimited";
            reload live;
        /// Allocations server-wide; 0 = unlimited.
        total_quota: u32 = 0;
            flag total_quota "total-quota" "N", env "TURNPIKE_TOTAL_QUOTA";
            help "allocations server-wide, 0 = unlimited";
            reload live;
        /// Relayed payload bytes per second per allocation, each direction
        /// on its own (coturn's `max-bps`); over it data is dropped; 0 =
        /// unlimited.
        max_bps: u64 = 0;
            flag max_bps "max-bps" "BYTES", env "TURNPIKE_MAX_BPS";
            help "relayed bytes per second per allocation and direction, 0 = unlimited";
            reload live;
        /// Relayed payload bytes per second per user (per user id for REST
        /// credentials), all the user's allocations together, each direction
        /// on its own; 0 = unlimited.
        user_max_bps: u64 = 0;
            flag user_max_bps "user-max-bps" "BYTES", env "TURNPIKE_USER_MAX_BPS";
            help "relayed bytes per second per user and direction, 0 = unlimited";
            reload live;
        /// Relayed payload bytes per second server-wide (coturn's
        /// `bps-capacity`): at it, new allocations are refused (508, or 300
        /// to an alternate); 0 = unlimited.
        bps_capacity: u64 = 0;
            flag bps_capacity "bps-capacity" "BYTES", env "TURNPIKE_BPS_CAPACITY";
            help "relayed bytes per second server-wide beyond which new allocations are refused, 0 = unlimited";
            reload live;
        /// Ranges the built-in refusal of loopback/private/reserved peers does
        /// not apply to.
        #[serde(deserialize_with = "de_list")]
        allowed_peer_ranges: Vec<IpNet> = Vec::new();
            flag allowed_peer_ranges "allowed-peer-range" "CIDR", env "TURNPIKE_ALLOWED_PEER_RANGES";
            help "CIDR (or IP) exempt from the refusal of loopback/private/reserved peers; repeat or separate with commas. Replaces the file's list.";
            reload live;
        /// Ranges always refused (beats `allowed_peer_ranges`).
        #[serde(deserialize_with = "de_list")]
        denied_peer_ranges: Vec<IpNet> = Vec::new();
            flag denied_peer_ranges "denied-peer-range" "CIDR", env "TURNPIKE_DENIED_PEER_RANGES";
            help "CIDR (or IP) never relayed to; repeat or separate with commas. Replaces the file's list.";
            reload live;
        /// 401/438 answers per source address and second; 0 would refuse
        /// every client the challenge it needs to authenticate.
        challenges_per_second: u16 = 1000;
            flag challenges_per_second "challenges-per-second" "N", env "TURNPIKE_CHALLENGES_PER_SECOND",
            range(1, u16::MAX) "answers per second";
            help "401/438 answers per source address and second";
            reload live;
        /// Static long-term users (`[[turn.users]]`).
        users: Vec<UserEntry> = Vec::new();
            flag users "user" "USER:PASSWORD", env "TURNPIKE_USERS", secret = true;
            help "static user USER:PASSWORD; repeat or separate with commas. Replaces the file's [[turn.users]].";
            reload live;
        /// Static shared secrets for time-limited credentials (TURN REST API,
        /// Wire's restund format); `k=N` of Wire usernames names the N-th.
        secrets: Vec<String> = Vec::new();
            flag secrets "secret" "SECRET", env "TURNPIKE_SECRETS", secret = true;
            help "shared secret for time-limited credentials (TURN REST API); repeat or separate with commas. Replaces the file's list.";
            reload live;
        /// Separator of TURN REST API usernames (`expiry:user-id`); a
        /// one-character string in TOML.
        #[serde(deserialize_with = "de_char")]
        rest_separator: char = ':';
            flag rest_separator "rest-separator" "CHAR", env "TURNPIKE_REST_SEPARATOR";
            help "between expiry and user id in REST usernames";
            reload live;
        /// Re-check the expiry of time-limited credentials on every request
        /// and end allocations with their credential.
        strict_expiry: bool = false;
            flag strict_expiry "strict-expiry" "BOOL", env "TURNPIKE_STRICT_EXPIRY",
            negation false => "Let allocations outlive their credential (strict_expiry = false)";
            help "end allocations when their time-limited credential expires";
            reload live;
    }

    /// `[database]`: where users and shared secrets are stored, and their
    /// cache.
    [database] DatabaseSettings, heading "Database", expecting "a [database] table" {
        /// `""`: SQLite file `turnpike.db` in `data_dir`; `sqlite:PATH`; or
        /// `postgres://user:password@host:port/dbname`.
        url: String = String::new();
            flag database_url "database" "URL", env "TURNPIKE_DATABASE", secret = true;
            help "\"\" (SQLite turnpike.db in the data dir), sqlite:PATH or postgres://USER:PASSWORD@HOST:PORT/DB";
            reload restart;
        /// Directory of the default SQLite database, created if missing.
        data_dir: PathBuf = PathBuf::from("/var/lib/turnpike");
            flag data_dir "data-dir" "DIR", env "TURNPIKE_DATA_DIR";
            help "directory of the default SQLite database";
            reload restart;
        /// `turnpike` or `coturn` (read-only use of a coturn database).
        schema: DatabaseSchema = DatabaseSchema::Turnpike;
            flag database_schema "database-schema" "SCHEMA", env "TURNPIKE_DATABASE_SCHEMA";
            help "turnpike, or coturn (an existing coturn database, read-only)";
            reload restart;
        /// PostgreSQL connections kept open.
        pool_size: usize = 4;
            flag database_pool_size "database-pool-size" "N", env "TURNPIKE_DATABASE_POOL_SIZE",
            range(1, MAX_POOL_SIZE) "connections";
            help "PostgreSQL connections";
            reload restart;
        /// Seconds to wait for a connection or a query before calling the
        /// database unreachable.
        timeout: u32 = 5;
            flag database_timeout "database-timeout" "SECONDS", env "TURNPIKE_DATABASE_TIMEOUT",
            range(1, 60) "seconds";
            help "seconds before the database counts as unreachable";
            reload restart;
        /// PEM file of the CA certificates PostgreSQL's TLS certificate is
        /// checked against (`sslmode` in `url`); `None`: the system's CA
        /// bundle. Read when the database is opened.
        ca_file: Option<PathBuf> = None;
            flag database_ca_file "database-ca-file" "PATH", env "TURNPIKE_DATABASE_CA_FILE",
            shown "unset, the system's CA bundle";
            help "PEM CA certificates that PostgreSQL's TLS certificate must chain to (sslmode=verify-ca|verify-full in the URL)";
            reload restart;
        /// Seconds a looked-up user's keys are used before asking again.
        cache_ttl: u32 = 60;
            flag cache_ttl "cache-ttl" "SECONDS", env "TURNPIKE_CACHE_TTL",
            range(1, 86_400) "seconds";
            help "seconds a user's keys are used before asking again";
            reload live;
        /// Seconds an unknown username is remembered as unknown.
        negative_cache_ttl: u32 = 5;
            flag negative_cache_ttl "negative-cache-ttl" "SECONDS", env "TURNPIKE_NEGATIVE_CACHE_TTL",
            range(0, 3_600) "seconds";
            help "seconds an unknown username is remembered";
            reload live;
        /// Seconds, while the database is unreachable, that users seen within
        /// that time keep authenticating with the keys last read.
        grace_period: u32 = 3600;
            flag grace_period "grace-period" "SECONDS", env "TURNPIKE_GRACE_PERIOD",
            range(0, 604_800) "seconds";
            help "seconds known users keep authenticating while the database is unreachable";
            reload live;
        /// Seconds between reloads of the shared secrets.
        secrets_refresh: u32 = 10;
            flag secrets_refresh "secrets-refresh" "SECONDS", env "TURNPIKE_SECRETS_REFRESH",
            range(1, 3_600) "seconds";
            help "seconds between reloads of the shared secrets";
            reload live;
    }

    /// `[tls]`: STUN/TURN over TLS (RFC 8489 section 6.2.2, "turns:" URLs)
    /// and DTLS (RFC 7350). Both are off until `certificate` is set. The
    /// files are read and checked by [`crate::tls::Certificates`] (at
    /// start, by `check-config`, and on every reload), not by
    /// [`Settings::validate`].
    [tls] TlsSettings, heading "TLS", expecting "a [tls] table" {
        /// PEM file with the server certificate, then its intermediates,
        /// optionally followed by the private key (restund's layout). `None`:
        /// TLS and DTLS off.
        certificate: Option<PathBuf> = None;
            flag tls_certificate "tls-certificate" "PATH", env "TURNPIKE_TLS_CERTIFICATE",
            shown "unset, TLS and DTLS off";
            help "PEM certificate chain (server certificate first), optionally followed by the private key; turns TLS and DTLS on";
            reload restart;
        /// PEM file with the private key; `None`: the key is in `certificate`.
        private_key: Option<PathBuf> = None;
            flag tls_private_key "tls-private-key" "PATH", env "TURNPIKE_TLS_PRIVATE_KEY",
            shown "the key in the certificate file";
            help "PEM private key";
            reload restart;
        /// Addresses served with TLS over TCP (only when `certificate` is set).
        /// RFC 8489 section 18.1: 5349 is the default port of "stuns" and
        /// "turns", over TLS and DTLS alike.
        #[serde(deserialize_with = "de_list")]
        listen: Vec<SocketAddr> = on_both_families(5349);
            flag tls_listen "tls-listen" "ADDR", env "TURNPIKE_TLS_LISTEN", via ListOrNone;
            help "IP:PORT to serve TLS over TCP on; repeat or separate with commas; `none` for no TLS over TCP. Replaces the file's list.";
            reload restart;
        /// Addresses served with DTLS over UDP (only when `certificate` is
        /// set); empty: no DTLS.
        #[serde(deserialize_with = "de_list")]
        dtls_listen: Vec<SocketAddr> = on_both_families(5349);
            flag dtls_listen "dtls-listen" "ADDR", env "TURNPIKE_DTLS_LISTEN", via ListOrNone;
            help "IP:PORT to serve DTLS over UDP on; repeat or separate with commas; `none` for no DTLS. Replaces the file's list.";
            reload restart;
        /// Lowest TLS version offered; TLS 1.0 and 1.1 never are.
        min_version: TlsVersion = TlsVersion::Tls12;
            flag tls_min_version "tls-min-version" "VERSION", env "TURNPIKE_TLS_MIN_VERSION";
            help "lowest TLS version offered, 1.2 or 1.3";
            reload restart;
        /// Seconds between checks of the files for changes; 0: reload only on
        /// SIGHUP. See [`TlsSettings::reload_every`].
        reload_interval: u32 = 5;
            flag tls_reload_interval "tls-reload-interval" "SECONDS", env "TURNPIKE_TLS_RELOAD_INTERVAL",
            range(0, MAX_RELOAD_INTERVAL_SECS) "seconds", zero "reload only on SIGHUP";
            help "seconds between checks of the certificate files for changes";
            reload restart;
    }

    /// `[limits]`: how much one source and the handshakes may hold, for the
    /// TCP, TLS and DTLS transports (UDP has its own rate limits).
    [limits] LimitsSettings, heading "Limits", expecting "a [limits] table" {
        /// TCP, TLS and DTLS connections from one source IP; 0 = unlimited.
        max_connections_per_ip: u32 = 64;
            flag max_connections_per_ip "max-connections-per-ip" "N", env "TURNPIKE_MAX_CONNECTIONS_PER_IP";
            help "TCP, TLS and DTLS connections from one source IP, 0 = unlimited";
            reload live;
        /// TCP, TLS and DTLS connections in all; 0 = unlimited.
        max_connections: u32 = 50_000;
            flag max_connections "max-connections" "N", env "TURNPIKE_MAX_CONNECTIONS";
            help "TCP, TLS and DTLS connections in all, 0 = unlimited";
            reload live;
        /// IPv6 clients count as one source per prefix of this many bits for
        /// every per-source limit (connections, challenges, DTLS handshakes).
        ipv6_prefix: u8 = turnpike_core::SourcePrefix::DEFAULT_IPV6_BITS;
            flag ipv6_prefix "ipv6-prefix" "BITS", env "TURNPIKE_IPV6_PREFIX",
            range(16, 128) "bits", because "a host's /64 is one source";
            help "IPv6 clients count as one source per prefix of this many bits, for every per-source limit";
            reload restart;
        /// TLS and DTLS handshakes in progress, server-wide.
        max_handshakes: u32 = 1024;
            flag max_handshakes "max-handshakes" "N", env "TURNPIKE_MAX_HANDSHAKES",
            range(1, MAX_HANDSHAKES) "handshakes";
            help "TLS and DTLS handshakes in progress, server-wide";
            reload restart;
        /// TLS and DTLS handshakes one source may start per second.
        handshakes_per_second_per_ip: u32 = 100;
            flag handshakes_per_second_per_ip "handshakes-per-second-per-ip" "N", env "TURNPIKE_HANDSHAKES_PER_SECOND_PER_IP",
            range(1, u32::from(u16::MAX)) "handshakes";
            help "TLS and DTLS handshakes one source may start per second";
            reload restart;
        /// Seconds a TLS or DTLS handshake may take.
        handshake_timeout: u32 = 10;
            flag handshake_timeout "handshake-timeout" "SECONDS", env "TURNPIKE_HANDSHAKE_TIMEOUT",
            range(1, MAX_CONNECTION_TIMEOUT_SECS) "seconds";
            help "seconds a TLS or DTLS handshake may take";
            reload restart;
        /// Seconds a connection may stay open without a successful
        /// authenticated request (against slowloris-style exhaustion).
        auth_timeout: u32 = 30;
            flag auth_timeout "auth-timeout" "SECONDS", env "TURNPIKE_AUTH_TIMEOUT",
            range(1, MAX_CONNECTION_TIMEOUT_SECS) "seconds";
            help "seconds a connection may stay open without a successful authenticated request";
            reload live;
        /// Seconds without any data after which a connection is closed.
        idle_timeout: u32 = 600;
            flag idle_timeout "idle-timeout" "SECONDS", env "TURNPIKE_IDLE_TIMEOUT",
            range(1, MAX_CONNECTION_TIMEOUT_SECS) "seconds";
            help "seconds without data before a connection is closed";
            reload restart;
        /// Outgoing bytes queued per connection before relayed data is dropped.
        max_buffered_bytes: u32 = 262_144;
            flag max_buffered_bytes "max-buffered-bytes" "BYTES", env "TURNPIKE_MAX_BUFFERED_BYTES",
            range(MIN_BUFFERED_BYTES, MAX_BUFFERED_BYTES) "bytes";
            help "outgoing bytes queued per connection before relayed data is dropped";
            reload live;
        /// Outgoing bytes queued over all connections (split between the
        /// workers) before relayed data is dropped.
        max_buffered_bytes_total: u64 = 268_435_456;
            flag max_buffered_bytes_total "max-buffered-bytes-total" "BYTES", env "TURNPIKE_MAX_BUFFERED_BYTES_TOTAL";
            help "outgoing bytes queued over all connections before relayed data is dropped";
            reload live;
        /// TCP connections to or from peers (RFC 6062) that one TCP allocation
        /// may hold at once, in any state (connecting, waiting for
        /// ConnectionBind, relaying); a Connect beyond it gets 508 and a peer
        /// connecting beyond it is refused.
        max_peer_connections_per_allocation: u32 = 32;
            flag max_peer_connections_per_allocation "max-peer-connections-per-allocation" "N", env "TURNPIKE_MAX_PEER_CONNECTIONS_PER_ALLOCATION",
            range(1, MAX_PEER_CONNECTIONS_PER_ALLOCATION) "connections";
            help "TCP connections to or from peers (RFC 6062) one TCP allocation may hold";
            reload live;
        /// The same counted server-wide (each holds two sockets and up to
        /// 32 KiB of pipe buffers); 0 = unlimited.
        max_peer_connections: u32 = 16_384;
            flag max_peer_connections "max-peer-connections" "N", env "TURNPIKE_MAX_PEER_CONNECTIONS";
            help "TCP connections to or from peers (RFC 6062), server-wide, 0 = unlimited";
            reload live;
    }

    /// `[admin]`: the admin HTTP endpoint ([`crate::admin_http`]): health
    /// probes, Prometheus metrics, status, live allocations and kicks. Off
    /// while `listen` is empty. Requests carry `Authorization: Bearer` with
    /// the token of `token_file`; [`Settings::validate`] refuses an address
    /// other than a loopback one without it. Also restund's UDP command
    /// port ([`crate::observe::restund`]), loopback only.
    [admin] AdminSettings, heading "Admin", expecting "an [admin] table" {
        /// Addresses (IP:PORT) served over plain HTTP/1.1; empty: off.
        #[serde(deserialize_with = "de_list")]
        listen: Vec<SocketAddr> = Vec::new();
            flag admin_listen "admin-listen" "ADDR", env "TURNPIKE_ADMIN_LISTEN", via ListOrNone,
            shown "none, off";
            help "IP:PORT to serve the admin HTTP endpoint on; repeat or separate with commas; `none` for off. Replaces the file's list.";
            reload restart;
        /// File holding the bearer token requests must carry (surrounding
        /// whitespace trimmed), read at start; `None`: no token, and only
        /// loopback addresses in `listen`.
        token_file: Option<PathBuf> = None;
            flag admin_token_file "admin-token-file" "PATH", env "TURNPIKE_ADMIN_TOKEN_FILE",
            shown "unset, no token: loopback only";
            help "file holding the bearer token admin requests must send (Authorization: Bearer); required for admin.listen addresses other than loopback";
            reload restart;
        /// `/healthz` and `/readyz` answer without the token (for load
        /// balancers and orchestrators that cannot send one).
        probes_without_token: bool = true;
            flag admin_probes_without_token "admin-probes-without-token" "BOOL", env "TURNPIKE_ADMIN_PROBES_WITHOUT_TOKEN",
            negation false => "Require the admin token for /healthz and /readyz too (probes_without_token = false)";
            help "let /healthz and /readyz answer without the admin token";
            reload restart;
        /// restund's UDP command port (`echo turnstats | nc -u -q1 127.0.0.1
        /// 33000`), on a loopback address; `None`: off.
        #[serde(deserialize_with = "de_opt_socket_addr")]
        restund_listen: Option<SocketAddr> = None;
            flag admin_restund_listen "admin-restund-listen" "ADDR", env "TURNPIKE_ADMIN_RESTUND_LISTEN",
            shown "unset, off";
            help "loopback IP:PORT for restund's UDP command port (turnstats)";
            reload restart;
    }

    /// `[drain]`: how the server drains (`POST /v1/drain`, `turnpike drain`,
    /// SIGTERM): new Allocates are refused while the allocations it holds
    /// keep working until they end ([`turnpike_core::drain`]).
    [drain] DrainSettings, heading "Drain", expecting "a [drain] table" {
        /// Other relays (IP:PORT) a new Allocate over UDP or TCP is sent to
        /// while draining (300 with ALTERNATE-SERVER, one of the client's
        /// address family, in turn); empty, or none of the family: 508.
        #[serde(deserialize_with = "de_list")]
        alternate_servers: Vec<SocketAddr> = Vec::new();
            flag drain_alternate_servers "drain-alternate-server" "ADDR", env "TURNPIKE_DRAIN_ALTERNATE_SERVERS", via ListOrNone,
            shown "none, 508 for everyone";
            help "IP:PORT of another relay new allocations are sent to while draining; repeat or separate with commas; `none` for none. Replaces the file's list.";
            reload live;
        /// Exit (status 0) once the last allocation has ended while
        /// draining.
        exit_when_empty: bool = false;
            flag drain_exit_when_empty "drain-exit-when-empty" "BOOL", env "TURNPIKE_DRAIN_EXIT_WHEN_EMPTY",
            negation false => "Keep running once drained (exit_when_empty = false)";
            help "exit once the last allocation ends while draining";
            reload restart;
    }

    /// `[shutdown]`: what SIGTERM does.
    [shutdown] ShutdownSettings, heading "Shutdown", expecting "a [shutdown] table" {
        /// Seconds SIGTERM drains for before the process exits (earlier
        /// when the last allocation ends); 0: exit at once.
        grace_period: u32 = 25;
            flag shutdown_grace_period "shutdown-grace-period" "SECONDS", env "TURNPIKE_SHUTDOWN_GRACE_PERIOD",
            range(0, MAX_GRACE_PERIOD_SECS) "seconds", zero "exit at once";
            help "seconds SIGTERM drains for before exiting";
            reload restart;
    }

    /// `[xdp]`: the relay fast path ([`turnpike_xdp`]). An XDP program on the
    /// listed interfaces relays ChannelData between UDP clients and their
    /// peers (IPv4 or IPv6) in the driver, without the sockets; everything
    /// else still goes through them. Off while `interfaces` is empty. Needs
    /// root (or CAP_BPF and CAP_NET_ADMIN) and Linux 5.12 or newer.
    [xdp] XdpSettings, heading "XDP", expecting "an [xdp] table" {
        /// Network interfaces that clients' and peers' traffic arrives on
        /// (`eth0`; `lo` for tests); empty: off.
        interfaces: Vec<String> = Vec::new();
            flag xdp_interfaces "xdp-interface" "NAME", env "TURNPIKE_XDP_INTERFACES", via ListOrNone,
            shown "none, off";
            help "interfaces to attach the XDP relay fast path to (needs root); repeat or separate with commas; `none` for off. Replaces the file's list.";
            reload restart;
        /// How the program is attached.
        mode: XdpMode = XdpMode::Auto;
            flag xdp_mode "xdp-mode" "MODE", env "TURNPIKE_XDP_MODE";
            help "auto (in the driver where supported), native or generic";
            reload restart;
    }

    /// `[ice]`: the ICE-server configuration endpoint ([`crate::ice`]): hands
    /// WebRTC clients the relays of `[discovery]` with freshly minted
    /// time-limited credentials. `turnpike serve` adds its routes to the
    /// admin listener when `enabled`; `turnpike ice-config` serves them
    /// on their own.
    [ice] IceSettings, heading "ICE servers", expecting "an [ice] table" {
        /// Serve `/ice-servers`, `/calls/config/v2` and `/calls/config` on the
        /// admin listener of `turnpike serve`.
        enabled: bool = false;
            flag ice "ice" "BOOL", env "TURNPIKE_ICE",
            negation false => "Do not serve the ICE-server endpoint (enabled = false)";
            help "serve the ICE-server configuration endpoint on the admin listener";
            reload restart;
        /// Username format of the credentials handed out.
        credential_format: CredentialFormat = CredentialFormat::Rest;
            flag ice_credential_format "ice-credential-format" "FORMAT", env "TURNPIKE_ICE_CREDENTIAL_FORMAT";
            help "rest (EXPIRY:USER-ID, HMAC-SHA1) or wire (d=EXPIRY.v=1.k=INDEX..., HMAC-SHA512)";
            reload live;
        /// Seconds the credentials handed out stay valid (also the `ttl` of
        /// the answer).
        ttl: u32 = 86_400;
            flag ice_ttl "ice-ttl" "SECONDS", env "TURNPIKE_ICE_TTL",
            range(60, MAX_ICE_TTL_SECS) "seconds";
            help "seconds the credentials handed out stay valid";
            reload live;
        /// Who may ask: loopback callers, callers with the token, or callers
        /// with `user_header` set by a proxy.
        auth: IceAuth = IceAuth::Loopback;
            flag ice_auth "ice-auth" "MODE", env "TURNPIKE_ICE_AUTH";
            help "loopback, token (Authorization: Bearer, ice.token_file) or header (ice.user_header set by a proxy)";
            reload live;
        /// File holding the bearer token callers send with `auth = "token"`
        /// (surrounding whitespace trimmed), read at start and on reload.
        token_file: Option<PathBuf> = None;
            flag ice_token_file "ice-token-file" "PATH", env "TURNPIKE_ICE_TOKEN_FILE",
            shown "unset";
            help "file holding the bearer token ICE callers send (ice.auth = token)";
            reload live;
        /// Request header carrying the caller's user id, set by the
        /// application's proxy (`X-User-Id`); it goes into REST usernames.
        /// `""`: none.
        user_header: String = String::new();
            flag ice_user_header "ice-user-header" "NAME", env "TURNPIKE_ICE_USER_HEADER";
            help "request header carrying the caller's user id, set by the application's proxy";
            reload live;
        /// Requests per second and caller (user id, else address).
        requests_per_second: u16 = 10;
            flag ice_requests_per_second "ice-requests-per-second" "N", env "TURNPIKE_ICE_REQUESTS_PER_SECOND",
            range(1, u16::MAX) "requests";
            help "ICE-server requests per second and caller before 429";
            reload live;
        /// Origins (`https://app.example.com`) whose pages may call the
        /// endpoint from the browser (CORS); empty: none.
        cors_origins: Vec<String> = Vec::new();
            flag ice_cors_origins "ice-cors-origin" "ORIGIN", env "TURNPIKE_ICE_CORS_ORIGINS", via ListOrNone,
            shown "none, CORS off";
            help "origin allowed to call the ICE endpoint from a browser; repeat or separate with commas; `none` for none";
            reload live;
        /// Add `"iceTransportPolicy": "relay"` to the RTCConfiguration answer.
        relay_only: bool = false;
            flag ice_relay_only "ice-relay-only" "BOOL", env "TURNPIKE_ICE_RELAY_ONLY",
            negation false => "Leave iceTransportPolicy out (relay_only = false)";
            help "answer iceTransportPolicy \"relay\" in the RTCConfiguration shape";
            reload live;
        /// URLs per answer at most (a `limit` query may ask for fewer); 0:
        /// every URL of every relay served.
        max_urls: u32 = 0;
            flag ice_max_urls "ice-max-urls" "N", env "TURNPIKE_ICE_MAX_URLS",
            range(0, MAX_ICE_URLS) "URLs", zero "all";
            help "URLs per answer at most, 0 for all";
            reload live;
    }

    /// `[discovery]`: the relays the ICE endpoint hands out
    /// ([`turnpike_fleet`]): a static list and DNS SRV records, each relay
    /// probed and left out while down or draining.
    [discovery] DiscoverySettings, heading "Relay discovery", expecting "a [discovery] table" {
        /// Relays as TURN URLs (RFC 7065): `turn:HOST:PORT?transport=udp`,
        /// `turn:HOST:PORT?transport=tcp`, `turns:HOST:PORT?transport=tcp`.
        relays: Vec<String> = Vec::new();
            flag discovery_relays "relay-url" "URL", env "TURNPIKE_DISCOVERY_RELAYS", via ListOrNone,
            shown "none";
            help "relay TURN URL handed out by the ICE endpoint; repeat or separate with commas; `none` for none. Replaces the file's list.";
            reload live;
        /// Base domain of `_turn._udp.`, `_turn._tcp.` and `_turns._tcp.` SRV
        /// records; `""`: no DNS discovery.
        srv_domain: String = String::new();
            flag discovery_srv_domain "srv-domain" "DOMAIN", env "TURNPIKE_DISCOVERY_SRV_DOMAIN";
            help "base domain of the relays' _turn._udp, _turn._tcp and _turns._tcp SRV records";
            reload live;
        /// DNS servers (IP:PORT) asked; empty: those of /etc/resolv.conf.
        #[serde(deserialize_with = "de_list")]
        name_servers: Vec<SocketAddr> = Vec::new();
            flag discovery_name_servers "name-server" "ADDR", env "TURNPIKE_DISCOVERY_NAME_SERVERS", via ListOrNone,
            shown "none, the system's";
            help "DNS server IP:PORT for SRV discovery; repeat or separate with commas; `none` for the system's";
            reload live;
        /// Seconds between SRV lookups.
        interval: u32 = 30;
            flag discovery_interval "discovery-interval" "SECONDS", env "TURNPIKE_DISCOVERY_INTERVAL",
            range(1, MAX_DISCOVERY_INTERVAL_SECS) "seconds";
            help "seconds between DNS SRV lookups";
            reload live;
        /// Seconds between health probes of each relay (a STUN Binding, and
        /// `/readyz` with `admin_port`); 0: no probes, every relay served.
        probe_interval: u32 = 5;
            flag discovery_probe_interval "probe-interval" "SECONDS", env "TURNPIKE_DISCOVERY_PROBE_INTERVAL",
            range(0, MAX_DISCOVERY_INTERVAL_SECS) "seconds", zero "no probes";
            help "seconds between health probes of each relay, 0 for none";
            reload live;
        /// Seconds a probe may take.
        probe_timeout: u32 = 2;
            flag discovery_probe_timeout "probe-timeout" "SECONDS", env "TURNPIKE_DISCOVERY_PROBE_TIMEOUT",
            range(1, 60) "seconds";
            help "seconds a health probe may take";
            reload live;
        /// Failed probes in a row before a relay is left out.
        unhealthy_after: u32 = 2;
            flag discovery_unhealthy_after "unhealthy-after" "N", env "TURNPIKE_DISCOVERY_UNHEALTHY_AFTER",
            range(1, 100) "probes";
            help "failed probes in a row before a relay is left out";
            reload live;
        /// Passed probes in a row before a left-out relay is served again.
        healthy_after: u32 = 2;
            flag discovery_healthy_after "healthy-after" "N", env "TURNPIKE_DISCOVERY_HEALTHY_AFTER",
            range(1, 100) "probes";
            help "passed probes in a row before a relay is served again";
            reload live;
        /// The relays' admin port: each is also probed at
        /// `http://ADDRESS:PORT/readyz`, which tells draining apart from down;
        /// 0: STUN probes only.
        admin_port: u16 = 0;
            flag discovery_admin_port "probe-admin-port" "PORT", env "TURNPIKE_DISCOVERY_ADMIN_PORT",
            range(0, u16::MAX) "port", zero "STUN probes only";
            help "relays' admin port, probed at /readyz; 0 for STUN probes only";
            reload live;
        /// Also hand out the relays registered in the database
        /// (`[fleet] register` on each relay), seen within
        /// `fleet.expire_after`.
        database: bool = false;
            flag discovery_database "discover-database" "BOOL", env "TURNPIKE_DISCOVERY_DATABASE",
            negation false => "Do not hand out registered relays (database = false)";
            help "also hand out the relays registered in the database (fleet.register)";
            reload restart;
    }

    /// `[fleet]`: this relay's heartbeat row in the shared database, which
    /// the ICE endpoints of the fleet list (`discovery.database`).
    [fleet] FleetSettings, heading "Fleet registration", expecting "a [fleet] table" {
        /// Write a heartbeat row (addresses, transports, allocations,
        /// capacity, draining, version) to the database every
        /// `heartbeat_interval`, at once when draining starts or stops, and
        /// delete it at a clean exit.
        register: bool = false;
            flag fleet_register "register" "BOOL", env "TURNPIKE_FLEET_REGISTER",
            negation false => "Do not register in the database (register = false)";
            help "register this relay in the database for the fleet's ICE endpoints";
            reload restart;
        /// The host name clients are given for this relay (`turns:` URLs
        /// need the name its certificate carries); `""`: its first public
        /// address.
        name: String = String::new();
            flag fleet_name "fleet-name" "NAME", env "TURNPIKE_FLEET_NAME";
            help "host name the ICE endpoints give clients for this relay; \"\" for its first public address";
            reload restart;
        /// Seconds between heartbeats (and between the ICE endpoint's
        /// listings of the rows).
        heartbeat_interval: u32 = 5;
            flag fleet_heartbeat_interval "heartbeat-interval" "SECONDS", env "TURNPIKE_FLEET_HEARTBEAT_INTERVAL",
            range(1, 300) "seconds";
            help "seconds between heartbeats of a registered relay";
            reload restart;
        /// Seconds without a heartbeat after which a row is ignored and
        /// deleted; at least twice `heartbeat_interval`.
        expire_after: u32 = 30;
            flag fleet_expire_after "expire-after" "SECONDS", env "TURNPIKE_FLEET_EXPIRE_AFTER",
            range(2, 86_400) "seconds";
            help "seconds without a heartbeat after which a registered relay is ignored";
            reload restart;
    }

    nested tables {
        // An array of tables (`[[turn.users]]`), not a plain table.
        "turn.users": ["username", "password"],
    }
}
