//! Command-line interface: `turnpike [FLAGS] [serve|check-config|version]`.
//!
//! Every configuration key has a flag and a `TURNPIKE_*` environment
//! variable (clap's `env` feature; a flag beats its variable). They are
//! collected into [`Overrides`] and laid over the config file by
//! [`Config::resolve`](crate::config::Config::resolve), giving
//! built-in defaults < config file < environment < flags.
//!
//! The flags are `global`, so `turnpike --workers 2 check-config` and
//! `turnpike check-config --workers 2` mean the same thing.
//!
//! Boolean keys take `--tcp` / `--no-tcp` (last one wins) and
//! `TURNPIKE_TCP=true|false` (also yes/no, on/off, 1/0). `--tcp=false` works
//! too, which is what makes the environment variable able to say "false".
//!
//! Usage errors are reduced to one line (see [`CliError`]) because clap's own
//! multi-line, usage-dumping messages are hard to read in service logs.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use clap::builder::{BoolishValueParser, TypedValueParser};
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use ipnet::IpNet;

use crate::config::{
    DatabaseSchema, ExternalIp, LogFormat, Overrides, TlsVersion, UserEntry, XdpMode, parse_char,
    parse_external_ip, parse_ip, parse_ip_net, parse_socket_addr, parse_user,
};

/// Top-level command line.
#[derive(Debug, Parser)]
#[command(
    name = "turnpike",
    version,
    about = "Turnpike STUN/TURN server",
    long_about = "Turnpike STUN/TURN server.\n\nSettings come from built-in defaults, then the config file (--config), \
                  then TURNPIKE_* environment variables, then flags; later sources win.",
    after_help = "With no subcommand, `serve` runs."
)]
pub struct Cli {
    /// Configuration flags, valid before or after the subcommand.
    #[command(flatten)]
    pub settings: Settings,
    /// What to do; `None` means `serve`.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Whether `--realm` was given on the command line (rather than through
    /// `TURNPIKE_REALM` or not at all); see [`Cli::server_overrides`].
    #[arg(skip)]
    realm_on_command_line: bool,
}

/// Subcommands.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Load and validate the configuration without binding any socket, print
    /// a one-line summary and exit 0 (or print the error and exit 2).
    CheckConfig,
    /// Print `turnpike <version>`.
    Version,
    /// Load-test a TURN server (this one, coturn, any): open authenticated
    /// allocations, relay traffic through them, report rates, loss and
    /// latency.
    Bench(Box<crate::bench::BenchArgs>),
    /// Manage long-term users in the credential database (keys only, never
    /// passwords): add, passwd, remove, list.
    #[command(subcommand)]
    User(crate::admin::UserCommand),
    /// Manage the shared secrets of time-limited credentials in the
    /// credential database: add, remove, list.
    #[command(subcommand)]
    Secret(crate::admin::SecretCommand),
    /// Mint a time-limited username and password (TURN REST API or Wire
    /// format) from a shared secret, e.g. to test a deployment.
    Credentials(Box<crate::admin::CredentialsArgs>),
}

/// One flag per configuration key. `Option`s are `None` when neither the
/// flag nor its environment variable is given, so the file value stands.
#[derive(Debug, Clone, Default, Args)]
pub struct Settings {
    /// Configuration file (TOML). Without it the built-in defaults are used.
    #[arg(
        short = 'c',
        long,
        global = true,
        env = "TURNPIKE_CONFIG",
        value_name = "PATH",
        help_heading = "Configuration"
    )]
    pub config: Option<PathBuf>,

    /// server.workers: worker threads, 0 = one per CPU [default: 0]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_WORKERS",
        value_name = "N",
        help_heading = "Server"
    )]
    pub workers: Option<usize>,

    /// server.software: SOFTWARE attribute value [default: Turnpike]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_SOFTWARE",
        value_name = "STR",
        overrides_with = "software",
        help_heading = "Server"
    )]
    pub software: Option<String>,

    /// Do not send the SOFTWARE attribute (software = "")
    #[arg(
        long,
        global = true,
        overrides_with = "no_software",
        help_heading = "Server"
    )]
    pub no_software: bool,

    /// log.level: tracing filter directives; RUST_LOG wins if set [default: info]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_LOG_LEVEL",
        value_name = "FILTER",
        help_heading = "Logging"
    )]
    pub log_level: Option<String>,

    /// log.format [default: text]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_LOG_FORMAT",
        value_name = "FORMAT",
        help_heading = "Logging"
    )]
    pub log_format: Option<LogFormat>,

    /// stun.listen: IP:PORT to serve; repeat the flag or separate with commas.
    /// Replaces the file's list. [default: 0.0.0.0:3478,[::]:3478]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_LISTEN",
        value_name = "ADDR",
        value_delimiter = ',',
        value_parser = parse_socket_addr,
        help_heading = "STUN"
    )]
    pub listen: Option<Vec<SocketAddr>>,

    /// stun.udp: serve over UDP [default: true]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_UDP",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
        overrides_with = "udp",
        help_heading = "STUN"
    )]
    pub udp: Option<bool>,

    /// Do not serve over UDP (udp = false)
    #[arg(long, global = true, overrides_with = "no_udp", help_heading = "STUN")]
    pub no_udp: bool,

    /// stun.tcp: serve over TCP [default: true]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_TCP",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
        overrides_with = "tcp",
        help_heading = "STUN"
    )]
    pub tcp: Option<bool>,

    /// Do not serve over TCP (tcp = false)
    #[arg(long, global = true, overrides_with = "no_tcp", help_heading = "STUN")]
    pub no_tcp: bool,

    /// stun.alternate_ip: second IP of this host; enables CHANGE-REQUEST and
    /// RFC 5780 NAT discovery [default: unset]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_ALTERNATE_IP",
        value_name = "IP",
        value_parser = parse_ip,
        help_heading = "STUN"
    )]
    pub alternate_ip: Option<IpAddr>,

    /// stun.alternate_port [default: each listen port + 1]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_ALTERNATE_PORT",
        value_name = "PORT",
        help_heading = "STUN"
    )]
    pub alternate_port: Option<u16>,

    /// stun.response_port: honour RFC 5780 RESPONSE-PORT [default: false]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_RESPONSE_PORT",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
        overrides_with = "response_port",
        help_heading = "STUN"
    )]
    pub response_port: Option<bool>,

    /// Ignore RESPONSE-PORT (response_port = false)
    #[arg(
        long,
        global = true,
        overrides_with = "no_response_port",
        help_heading = "STUN"
    )]
    pub no_response_port: bool,

    /// stun.padding: honour RFC 5780 PADDING [default: false]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_PADDING",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
        overrides_with = "padding",
        help_heading = "STUN"
    )]
    pub padding: Option<bool>,

    /// Ignore PADDING (padding = false)
    #[arg(
        long,
        global = true,
        overrides_with = "no_padding",
        help_heading = "STUN"
    )]
    pub no_padding: bool,

    /// turn.enabled: serve TURN; off = STUN only [default: true]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_TURN",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
        overrides_with = "turn",
        help_heading = "TURN"
    )]
    pub turn: Option<bool>,

    /// Serve STUN only; TURN requests get 400 (enabled = false)
    #[arg(long, global = true, overrides_with = "no_turn", help_heading = "TURN")]
    pub no_turn: bool,

    /// turn.realm: REALM clients authenticate in [default: turnpike]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_REALM",
        value_name = "REALM",
        help_heading = "TURN"
    )]
    pub realm: Option<String>,

    /// turn.relay_ips: IP to relay on; repeat or separate with commas.
    /// Replaces the file's list. [default: the IP each request arrived on]
    #[arg(
        long = "relay-ip",
        global = true,
        env = "TURNPIKE_RELAY_IPS",
        value_name = "IP",
        value_delimiter = ',',
        value_parser = parse_ip,
        help_heading = "TURN"
    )]
    pub relay_ips: Option<Vec<IpAddr>>,

    /// turn.external_ips: PUBLIC or PUBLIC/PRIVATE for 1:1 NAT; repeat or
    /// separate with commas. Replaces the file's list. [default: none]
    #[arg(
        long = "external-ip",
        global = true,
        env = "TURNPIKE_EXTERNAL_IPS",
        value_name = "PUBLIC[/PRIVATE]",
        value_delimiter = ',',
        value_parser = parse_external_ip,
        help_heading = "TURN"
    )]
    pub external_ips: Option<Vec<ExternalIp>>,

    /// turn.min_port: lowest relay port [default: 49152]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_MIN_PORT",
        value_name = "PORT",
        help_heading = "TURN"
    )]
    pub min_port: Option<u16>,

    /// turn.max_port: highest relay port [default: 65535]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_MAX_PORT",
        value_name = "PORT",
        help_heading = "TURN"
    )]
    pub max_port: Option<u16>,

    /// turn.default_lifetime: allocation lifetime in seconds [default: 600]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_DEFAULT_LIFETIME",
        value_name = "SECONDS",
        help_heading = "TURN"
    )]
    pub default_lifetime: Option<u32>,

    /// turn.max_lifetime: longest allocation lifetime in seconds [default: 3600]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_MAX_LIFETIME",
        value_name = "SECONDS",
        help_heading = "TURN"
    )]
    pub max_lifetime: Option<u32>,

    /// turn.nonce_lifetime: seconds a nonce stays valid [default: 600]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_NONCE_LIFETIME",
        value_name = "SECONDS",
        help_heading = "TURN"
    )]
    pub nonce_lifetime: Option<u32>,

    /// turn.user_quota: allocations per user, 0 = unlimited [default: 0]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_USER_QUOTA",
        value_name = "N",
        help_heading = "TURN"
    )]
    pub user_quota: Option<u32>,

    /// turn.total_quota: allocations server-wide, 0 = unlimited [default: 0]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_TOTAL_QUOTA",
        value_name = "N",
        help_heading = "TURN"
    )]
    pub total_quota: Option<u32>,

    /// turn.allowed_peer_ranges: CIDR (or IP) exempt from the refusal of
    /// loopback/private/reserved peers; repeat or separate with commas.
    /// Replaces the file's list. [default: none]
    #[arg(
        long = "allowed-peer-range",
        global = true,
        env = "TURNPIKE_ALLOWED_PEER_RANGES",
        value_name = "CIDR",
        value_delimiter = ',',
        value_parser = parse_ip_net,
        help_heading = "TURN"
    )]
    pub allowed_peer_ranges: Option<Vec<IpNet>>,

    /// turn.denied_peer_ranges: CIDR (or IP) never relayed to; repeat or
    /// separate with commas. Replaces the file's list. [default: none]
    #[arg(
        long = "denied-peer-range",
        global = true,
        env = "TURNPIKE_DENIED_PEER_RANGES",
        value_name = "CIDR",
        value_delimiter = ',',
        value_parser = parse_ip_net,
        help_heading = "TURN"
    )]
    pub denied_peer_ranges: Option<Vec<IpNet>>,

    /// turn.challenges_per_second: 401/438 answers per source address and
    /// second [default: 20]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_CHALLENGES_PER_SECOND",
        value_name = "N",
        help_heading = "TURN"
    )]
    pub challenges_per_second: Option<u16>,

    /// turn.users: static user USER:PASSWORD; repeat or separate with commas.
    /// Replaces the file's [[turn.users]]. [default: none]
    #[arg(
        long = "user",
        global = true,
        env = "TURNPIKE_USERS",
        hide_env_values = true,
        value_name = "USER:PASSWORD",
        value_delimiter = ',',
        value_parser = parse_user,
        help_heading = "TURN"
    )]
    pub users: Option<Vec<UserEntry>>,

    /// turn.secrets: shared secret for time-limited credentials (TURN REST
    /// API); repeat or separate with commas. Replaces the file's list.
    /// [default: none]
    #[arg(
        long = "secret",
        global = true,
        env = "TURNPIKE_SECRETS",
        hide_env_values = true,
        value_name = "SECRET",
        value_delimiter = ',',
        help_heading = "TURN"
    )]
    pub secrets: Option<Vec<String>>,

    /// turn.rest_separator: between expiry and user id in REST usernames
    /// [default: :]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_REST_SEPARATOR",
        value_name = "CHAR",
        value_parser = parse_char,
        help_heading = "TURN"
    )]
    pub rest_separator: Option<char>,

    /// turn.strict_expiry: end allocations when their time-limited
    /// credential expires [default: false]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_STRICT_EXPIRY",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
        overrides_with = "strict_expiry",
        help_heading = "TURN"
    )]
    pub strict_expiry: Option<bool>,

    /// Let allocations outlive their credential (strict_expiry = false)
    #[arg(
        long,
        global = true,
        overrides_with = "no_strict_expiry",
        help_heading = "TURN"
    )]
    pub no_strict_expiry: bool,

    /// database.url: "" (SQLite turnpike.db in the data dir), sqlite:PATH or
    /// postgres://USER:PASSWORD@HOST:PORT/DB [default: ""]
    #[arg(
        long = "database",
        global = true,
        env = "TURNPIKE_DATABASE",
        hide_env_values = true,
        value_name = "URL",
        help_heading = "Database"
    )]
    pub database_url: Option<String>,

    /// database.data_dir: directory of the default SQLite database
    /// [default: /var/lib/turnpike]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_DATA_DIR",
        value_name = "DIR",
        help_heading = "Database"
    )]
    pub data_dir: Option<PathBuf>,

    /// database.schema: turnpike, or coturn (an existing coturn database,
    /// read-only) [default: turnpike]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_DATABASE_SCHEMA",
        value_name = "SCHEMA",
        help_heading = "Database"
    )]
    pub database_schema: Option<DatabaseSchema>,

    /// database.pool_size: PostgreSQL connections, 1 to 64 [default: 4]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_DATABASE_POOL_SIZE",
        value_name = "N",
        help_heading = "Database"
    )]
    pub database_pool_size: Option<usize>,

    /// database.timeout: seconds before the database counts as
    /// unreachable, 1 to 60 [default: 5]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_DATABASE_TIMEOUT",
        value_name = "SECONDS",
        help_heading = "Database"
    )]
    pub database_timeout: Option<u32>,

    /// database.cache_ttl: seconds a user's keys are used before asking
    /// again, 1 to 86400 [default: 60]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_CACHE_TTL",
        value_name = "SECONDS",
        help_heading = "Database"
    )]
    pub cache_ttl: Option<u32>,

    /// database.negative_cache_ttl: seconds an unknown username is
    /// remembered, 0 to 3600 [default: 5]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_NEGATIVE_CACHE_TTL",
        value_name = "SECONDS",
        help_heading = "Database"
    )]
    pub negative_cache_ttl: Option<u32>,

    /// database.grace_period: seconds known users keep authenticating while
    /// the database is unreachable, 0 to 604800 [default: 3600]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_GRACE_PERIOD",
        value_name = "SECONDS",
        help_heading = "Database"
    )]
    pub grace_period: Option<u32>,

    /// database.secrets_refresh: seconds between reloads of the shared
    /// secrets, 1 to 3600 [default: 10]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_SECRETS_REFRESH",
        value_name = "SECONDS",
        help_heading = "Database"
    )]
    pub secrets_refresh: Option<u32>,

    /// tls.certificate: PEM certificate chain (server certificate first),
    /// optionally followed by the private key; turns TLS and DTLS on
    /// [default: unset, TLS and DTLS off]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_TLS_CERTIFICATE",
        value_name = "PATH",
        help_heading = "TLS"
    )]
    pub tls_certificate: Option<PathBuf>,

    /// tls.private_key: PEM private key [default: the key in the
    /// certificate file]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_TLS_PRIVATE_KEY",
        value_name = "PATH",
        help_heading = "TLS"
    )]
    pub tls_private_key: Option<PathBuf>,

    /// tls.listen: IP:PORT to serve TLS over TCP on; repeat or separate
    /// with commas; `none` for no TLS over TCP. Replaces the file's list.
    /// [default: 0.0.0.0:5349,[::]:5349]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_TLS_LISTEN",
        value_name = "ADDR",
        value_delimiter = ',',
        value_parser = parse_listen_addr,
        help_heading = "TLS"
    )]
    pub tls_listen: Option<Vec<ListenAddr>>,

    /// tls.dtls_listen: IP:PORT to serve DTLS over UDP on; repeat or
    /// separate with commas; `none` for no DTLS. Replaces the file's list.
    /// [default: 0.0.0.0:5349,[::]:5349]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_DTLS_LISTEN",
        value_name = "ADDR",
        value_delimiter = ',',
        value_parser = parse_listen_addr,
        help_heading = "TLS"
    )]
    pub dtls_listen: Option<Vec<ListenAddr>>,

    /// tls.min_version: lowest TLS version offered, 1.2 or 1.3 [default: 1.2]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_TLS_MIN_VERSION",
        value_name = "VERSION",
        help_heading = "TLS"
    )]
    pub tls_min_version: Option<TlsVersion>,

    /// tls.reload_interval: seconds between checks of the certificate
    /// files for changes, 0 = reload only on SIGHUP [default: 5]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_TLS_RELOAD_INTERVAL",
        value_name = "SECONDS",
        help_heading = "TLS"
    )]
    pub tls_reload_interval: Option<u32>,

    /// limits.max_connections_per_ip: TCP, TLS and DTLS connections from
    /// one source IP, 0 = unlimited [default: 64]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_MAX_CONNECTIONS_PER_IP",
        value_name = "N",
        help_heading = "Limits"
    )]
    pub max_connections_per_ip: Option<u32>,

    /// limits.max_connections: TCP, TLS and DTLS connections in all,
    /// 0 = unlimited [default: 50000]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_MAX_CONNECTIONS",
        value_name = "N",
        help_heading = "Limits"
    )]
    pub max_connections: Option<u32>,

    /// limits.ipv6_prefix: IPv6 clients count as one source per prefix of
    /// this many bits, for every per-source limit [default: 64]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_IPV6_PREFIX",
        value_name = "BITS",
        help_heading = "Limits"
    )]
    pub ipv6_prefix: Option<u8>,

    /// limits.max_handshakes: TLS and DTLS handshakes in progress,
    /// server-wide [default: 1024]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_MAX_HANDSHAKES",
        value_name = "N",
        help_heading = "Limits"
    )]
    pub max_handshakes: Option<u32>,

    /// limits.handshakes_per_second_per_ip: TLS and DTLS handshakes one
    /// source may start per second [default: 100]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_HANDSHAKES_PER_SECOND_PER_IP",
        value_name = "N",
        help_heading = "Limits"
    )]
    pub handshakes_per_second_per_ip: Option<u32>,

    /// limits.handshake_timeout: seconds a TLS or DTLS handshake may take
    /// [default: 10]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_HANDSHAKE_TIMEOUT",
        value_name = "SECONDS",
        help_heading = "Limits"
    )]
    pub handshake_timeout: Option<u32>,

    /// limits.auth_timeout: seconds a connection may stay open without a
    /// successful authenticated request [default: 30]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_AUTH_TIMEOUT",
        value_name = "SECONDS",
        help_heading = "Limits"
    )]
    pub auth_timeout: Option<u32>,

    /// limits.idle_timeout: seconds without data before a connection is
    /// closed [default: 600]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_IDLE_TIMEOUT",
        value_name = "SECONDS",
        help_heading = "Limits"
    )]
    pub idle_timeout: Option<u32>,

    /// limits.max_buffered_bytes: outgoing bytes queued per connection
    /// before relayed data is dropped [default: 262144]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_MAX_BUFFERED_BYTES",
        value_name = "BYTES",
        help_heading = "Limits"
    )]
    pub max_buffered_bytes: Option<u32>,

    /// limits.max_buffered_bytes_total: outgoing bytes queued over all
    /// connections before relayed data is dropped [default: 268435456]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_MAX_BUFFERED_BYTES_TOTAL",
        value_name = "BYTES",
        help_heading = "Limits"
    )]
    pub max_buffered_bytes_total: Option<u64>,

    /// limits.max_peer_connections_per_allocation: TCP connections to or
    /// from peers (RFC 6062) one TCP allocation may hold, 1 to 1024
    /// [default: 32]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_MAX_PEER_CONNECTIONS_PER_ALLOCATION",
        value_name = "N",
        help_heading = "Limits"
    )]
    pub max_peer_connections_per_allocation: Option<u32>,

    /// limits.max_peer_connections: TCP connections to or from peers
    /// (RFC 6062), server-wide, 0 = unlimited [default: 16384]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_MAX_PEER_CONNECTIONS",
        value_name = "N",
        help_heading = "Limits"
    )]
    pub max_peer_connections: Option<u32>,

    /// admin.listen: IP:PORT to serve the admin HTTP endpoint (/metrics,
    /// /status; no authentication) on; repeat or separate with commas;
    /// `none` for off. Replaces the file's list. [default: none, off]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_ADMIN_LISTEN",
        value_name = "ADDR",
        value_delimiter = ',',
        value_parser = parse_listen_addr,
        help_heading = "Admin"
    )]
    pub admin_listen: Option<Vec<ListenAddr>>,

    /// admin.allow_remote: allow admin.listen addresses other than
    /// loopback [default: false]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_ADMIN_ALLOW_REMOTE",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
        overrides_with = "admin_allow_remote",
        help_heading = "Admin"
    )]
    pub admin_allow_remote: Option<bool>,

    /// Refuse admin.listen addresses other than loopback
    /// (allow_remote = false)
    #[arg(
        long,
        global = true,
        overrides_with = "no_admin_allow_remote",
        help_heading = "Admin"
    )]
    pub no_admin_allow_remote: bool,

    /// xdp.interfaces: interfaces to attach the XDP relay fast path to
    /// (needs root); repeat or separate with commas; `none` for off.
    /// Replaces the file's list. [default: none, off]
    #[arg(
        long = "xdp-interface",
        global = true,
        env = "TURNPIKE_XDP_INTERFACES",
        value_name = "NAME",
        value_delimiter = ',',
        help_heading = "XDP"
    )]
    pub xdp_interfaces: Option<Vec<String>>,

    /// xdp.mode: auto (in the driver where supported), native or generic
    /// [default: auto]
    #[arg(
        long,
        global = true,
        env = "TURNPIKE_XDP_MODE",
        value_name = "MODE",
        value_parser = parse_xdp_mode,
        help_heading = "XDP"
    )]
    pub xdp_mode: Option<XdpMode>,
}

/// Parses `xdp.mode`.
fn parse_xdp_mode(text: &str) -> Result<XdpMode, String> {
    match text.trim() {
        "auto" => Ok(XdpMode::Auto),
        "native" => Ok(XdpMode::Native),
        "generic" => Ok(XdpMode::Generic),
        other => Err(format!("{other:?} is not auto, native or generic")),
    }
}

/// One `--tls-listen` / `--dtls-listen` / `--admin-listen` value: an address, or `none`
/// (which contributes nothing, so `--dtls-listen none` gives an empty list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr(pub Option<SocketAddr>);

/// Parses an `IP:PORT` or `none` (also the empty string).
fn parse_listen_addr(text: &str) -> Result<ListenAddr, String> {
    match text.trim() {
        "" | "none" => Ok(ListenAddr(None)),
        _ => parse_socket_addr(text)
            .map(|addr| ListenAddr(Some(addr)))
            .map_err(|err| format!("{err}, or none for no listener")),
    }
}

/// The addresses of a `--tls-listen` / `--dtls-listen` / `--admin-listen`
/// list.
fn listen_addrs(values: Option<&Vec<ListenAddr>>) -> Option<Vec<SocketAddr>> {
    values.map(|values| values.iter().filter_map(|v| v.0).collect())
}

/// `--no-X` can only come from the command line (it has no environment
/// variable), so when it is set it beats an environment `TURNPIKE_X`; when
/// both `--X` and `--no-X` are on the command line,
/// [`Settings::settle_negations`] has already kept only the last one.
fn tri_state(value: Option<bool>, negated: bool) -> Option<bool> {
    if negated { Some(false) } else { value }
}

/// `(--X, --no-X)` pairs, by clap id.
///
/// Not clap's `overrides_with` between the two: it makes a value from
/// `TURNPIKE_X` conflict with `--no-X` ("cannot be used with") instead of
/// losing to it. Each flag only overrides itself, so repeating one is fine.
const NEGATIONS: &[(&str, &str)] = &[
    ("software", "no_software"),
    ("udp", "no_udp"),
    ("tcp", "no_tcp"),
    ("response_port", "no_response_port"),
    ("padding", "no_padding"),
    ("turn", "no_turn"),
    ("strict_expiry", "no_strict_expiry"),
    ("admin_allow_remote", "no_admin_allow_remote"),
];

impl Settings {
    /// For each `--X` / `--no-X` pair given together, drops the one that
    /// loses: the earlier on the command line, or `TURNPIKE_X` against
    /// `--no-X`. (clap's indices restart in each subcommand, and the flags
    /// are global, so the order is read from `args` itself.)
    fn settle_negations(&mut self, matches: &ArgMatches, args: &[OsString]) {
        let last = |id: &str| {
            let long = format!("--{}", id.replace('_', "-"));
            let with_value = format!("{long}=");
            args.iter()
                .skip(1)
                .map(|a| a.to_string_lossy())
                .take_while(|a| a != "--")
                .enumerate()
                .filter(|(_, a)| *a == long || a.starts_with(&with_value))
                .map(|(i, _)| i)
                .last()
        };
        for &(flag, negation) in NEGATIONS {
            let negated = matches.value_source(negation) == Some(ValueSource::CommandLine);
            let given = matches.value_source(flag).is_some();
            if !(negated && given) {
                continue;
            }
            let flag_wins = matches.value_source(flag) == Some(ValueSource::CommandLine)
                && last(flag) > last(negation);
            if flag_wins {
                self.clear(negation);
            } else {
                self.clear(flag);
            }
        }
    }

    /// Forgets one flag of [`NEGATIONS`].
    fn clear(&mut self, id: &str) {
        match id {
            "software" => self.software = None,
            "no_software" => self.no_software = false,
            "udp" => self.udp = None,
            "no_udp" => self.no_udp = false,
            "tcp" => self.tcp = None,
            "no_tcp" => self.no_tcp = false,
            "response_port" => self.response_port = None,
            "no_response_port" => self.no_response_port = false,
            "padding" => self.padding = None,
            "no_padding" => self.no_padding = false,
            "turn" => self.turn = None,
            "no_turn" => self.no_turn = false,
            "strict_expiry" => self.strict_expiry = None,
            "no_strict_expiry" => self.no_strict_expiry = false,
            "admin_allow_remote" => self.admin_allow_remote = None,
            "no_admin_allow_remote" => self.no_admin_allow_remote = false,
            // NEGATIONS lists only the ids above (a unit test checks).
            _ => {}
        }
    }

    /// The overrides to lay over the config file.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            workers: self.workers,
            software: if self.no_software {
                Some(String::new())
            } else {
                self.software.clone()
            },
            log_level: self.log_level.clone(),
            log_format: self.log_format,
            listen: self.listen.clone(),
            udp: tri_state(self.udp, self.no_udp),
            tcp: tri_state(self.tcp, self.no_tcp),
            alternate_ip: self.alternate_ip,
            alternate_port: self.alternate_port,
            response_port: tri_state(self.response_port, self.no_response_port),
            padding: tri_state(self.padding, self.no_padding),
            turn: tri_state(self.turn, self.no_turn),
            realm: self.realm.clone(),
            relay_ips: self.relay_ips.clone(),
            external_ips: self.external_ips.clone(),
            min_port: self.min_port,
            max_port: self.max_port,
            default_lifetime: self.default_lifetime,
            max_lifetime: self.max_lifetime,
            nonce_lifetime: self.nonce_lifetime,
            user_quota: self.user_quota,
            total_quota: self.total_quota,
            allowed_peer_ranges: self.allowed_peer_ranges.clone(),
            denied_peer_ranges: self.denied_peer_ranges.clone(),
            challenges_per_second: self.challenges_per_second,
            users: self.users.clone(),
            secrets: self.secrets.clone(),
            rest_separator: self.rest_separator,
            strict_expiry: tri_state(self.strict_expiry, self.no_strict_expiry),
            database_url: self.database_url.clone(),
            data_dir: self.data_dir.clone(),
            database_schema: self.database_schema,
            database_pool_size: self.database_pool_size,
            database_timeout: self.database_timeout,
            cache_ttl: self.cache_ttl,
            negative_cache_ttl: self.negative_cache_ttl,
            grace_period: self.grace_period,
            secrets_refresh: self.secrets_refresh,
            tls_certificate: self.tls_certificate.clone(),
            tls_private_key: self.tls_private_key.clone(),
            tls_listen: listen_addrs(self.tls_listen.as_ref()),
            dtls_listen: listen_addrs(self.dtls_listen.as_ref()),
            tls_min_version: self.tls_min_version,
            tls_reload_interval: self.tls_reload_interval,
            max_connections_per_ip: self.max_connections_per_ip,
            max_connections: self.max_connections,
            ipv6_prefix: self.ipv6_prefix,
            max_handshakes: self.max_handshakes,
            handshakes_per_second_per_ip: self.handshakes_per_second_per_ip,
            handshake_timeout: self.handshake_timeout,
            auth_timeout: self.auth_timeout,
            idle_timeout: self.idle_timeout,
            max_buffered_bytes: self.max_buffered_bytes,
            max_buffered_bytes_total: self.max_buffered_bytes_total,
            max_peer_connections_per_allocation: self.max_peer_connections_per_allocation,
            max_peer_connections: self.max_peer_connections,
            admin_listen: listen_addrs(self.admin_listen.as_ref()),
            admin_allow_remote: tri_state(self.admin_allow_remote, self.no_admin_allow_remote),
            xdp_interfaces: self.xdp_interfaces.as_ref().map(|names| {
                names
                    .iter()
                    .map(|name| name.trim())
                    .filter(|name| !name.is_empty() && *name != "none")
                    .map(str::to_owned)
                    .collect()
            }),
            xdp_mode: self.xdp_mode,
        }
    }
}

/// A command line that does not lead to running a command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// `--help` or `--version`: not a failure. Print with
    /// [`clap::Error::exit`], which writes to stdout and exits 0.
    #[error("{0}")]
    Info(clap::Error),
    /// A usage error, already flattened to one line; exit 2.
    #[error("{0}")]
    Usage(String),
}

impl Cli {
    /// Parses the process's arguments (see [`Cli::parse_from_args`]).
    pub fn parse_args() -> Result<Cli, CliError> {
        Cli::parse_from_args(std::env::args_os())
    }

    /// Parses `args` (first item is the program name) and the `TURNPIKE_*`
    /// environment.
    pub fn parse_from_args<I, T>(args: I) -> Result<Cli, CliError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let result = Cli::command()
            .try_get_matches_from(&args)
            .and_then(|matches| {
                let mut cli = Cli::from_arg_matches(&matches)?;
                cli.settings.settle_negations(&matches, &args);
                cli.realm_on_command_line =
                    matches.value_source("realm") == Some(ValueSource::CommandLine);
                Ok(cli)
            });
        result.map_err(|err| match err.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => CliError::Info(err),
            _ => CliError::Usage(one_line(&err, &args)),
        })
    }

    /// The subcommand, defaulting to `serve`.
    pub fn subcommand(&self) -> Command {
        self.command.clone().unwrap_or(Command::Serve)
    }

    /// `--config` / `TURNPIKE_CONFIG`, if given.
    pub fn config_path(&self) -> Option<&Path> {
        self.settings.config.as_deref()
    }

    /// Environment and flag values to lay over the config file.
    pub fn overrides(&self) -> Overrides {
        self.settings.overrides()
    }

    /// [`Cli::overrides`] without a `--realm` given on the command line: the
    /// configuration a server started from the same file and environment
    /// would run with. The admin commands take `--realm` as the realm to
    /// work on, and treat the server's own realm (which the server
    /// registers when it starts) differently from any other.
    pub fn server_overrides(&self) -> Overrides {
        let mut overrides = self.overrides();
        if self.realm_on_command_line {
            // What clap would have read had the flag been absent.
            overrides.realm = std::env::var("TURNPIKE_REALM").ok();
        }
        overrides
    }

    /// The realm the admin commands work on: `--realm` from the command
    /// line, else `None` (the configuration's `turn.realm`).
    pub fn realm_on_command_line(&self) -> Option<&str> {
        self.settings
            .realm
            .as_deref()
            .filter(|_| self.realm_on_command_line)
    }
}

/// Reduces a clap error to one line: clap's headline, any "tip:", the
/// environment variable when the bad value came from one (clap names only
/// the flag, which would send the operator looking in the wrong place), and
/// a pointer to `--help`.
fn one_line(err: &clap::Error, args: &[OsString]) -> String {
    let rendered = err.render().to_string();
    let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
    let headline = lines.next().unwrap_or("invalid command line");
    let mut message = redacted_headline(err).unwrap_or_else(|| {
        headline
            .strip_prefix("error: ")
            .unwrap_or(headline)
            .to_owned()
    });
    // "the following required arguments were not provided:" lists them on
    // the lines after (before the usage line).
    if message.ends_with(':') {
        let missing: Vec<&str> = rendered
            .lines()
            .skip(1)
            .map(str::trim)
            .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"))
            .collect();
        message.push(' ');
        message.push_str(&missing.join(", "));
    }
    if let Some(env) = env_source(err, args) {
        message.push_str(&format!(" (from environment variable {env})"));
    }
    for tip in lines.filter(|l| l.starts_with("tip:")) {
        message.push_str("; ");
        message.push_str(tip);
    }
    // `--udp false` parses as `--udp` followed by a subcommand `false`,
    // because boolean flags take their optional value only after `=`.
    if let Some(ContextValue::String(word)) = err.get(ContextKind::InvalidSubcommand)
        && BoolishValueParser::new()
            .parse_ref(&Cli::command(), None, std::ffi::OsStr::new(word))
            .is_ok()
    {
        message.push_str(&format!(
            "; boolean flags take a value only after `=`, e.g. --udp={word} (or use --no-udp)"
        ));
    }
    // `credentials --user ID` reads naturally but --user is the server's
    // USER:PASSWORD flag.
    if let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg)
        && arg.starts_with("--user ")
        && args.iter().any(|a| a == "credentials")
    {
        message.push_str("; `turnpike credentials` takes the user id as --user-id ID");
    }
    message.push_str(" (see turnpike --help)");
    message
}

/// Long flags whose values are secrets (`--user USER:PASSWORD`,
/// `--secret SECRET`, `--password PASSWORD`).
const SECRET_FLAGS: &[&str] = &["user", "secret", "password"];

/// For a rejected value of a [`SECRET_FLAGS`] flag, a headline that leaves
/// the value out (clap's own repeats it, which would print a password to
/// the service log); the value parser's reason never includes it either.
fn redacted_headline(err: &clap::Error) -> Option<String> {
    let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) else {
        return None;
    };
    let long = arg.split([' ', '[', '=']).next()?.strip_prefix("--")?;
    if !SECRET_FLAGS.contains(&long) || err.get(ContextKind::InvalidValue).is_none() {
        return None;
    }
    let reason = std::error::Error::source(err)
        .map_or_else(|| "not a valid value".to_owned(), ToString::to_string);
    Some(format!("invalid value for '{arg}': {reason}"))
}

/// The environment variable that supplied the rejected value, if the
/// offending argument has one and was not on the command line.
fn env_source(err: &clap::Error, args: &[OsString]) -> Option<String> {
    let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) else {
        return None;
    };
    // clap renders the argument as "--workers <N>" or "--udp[=<BOOL>]".
    let long = arg.split([' ', '[', '=']).next()?.strip_prefix("--")?;
    let cmd = Cli::command();
    let def = cmd.get_arguments().find(|a| a.get_long() == Some(long))?;
    let env = def.get_env()?.to_string_lossy().into_owned();
    std::env::var_os(&env)?;
    let short = def.get_short().map(|c| format!("-{c}"));
    let on_command_line = args.iter().skip(1).any(|a| {
        let a = a.to_string_lossy();
        a == format!("--{long}")
            || a.starts_with(&format!("--{long}="))
            || short.as_deref().is_some_and(|s| a.starts_with(s))
    });
    (!on_command_line).then_some(env)
}

#[cfg(test)]
mod tests {
    //! Parsing tests. They read the real environment (clap's `env`), so
    //! they assume no `TURNPIKE_*` variables are set; the environment paths
    //! are covered by the integration tests, which control it per process.

    use super::*;

    fn parse(args: &[&str]) -> Cli {
        let mut full = vec!["turnpike"];
        full.extend_from_slice(args);
        match Cli::parse_from_args(full) {
            Ok(cli) => cli,
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    fn usage_error(args: &[&str]) -> String {
        let mut full = vec!["turnpike"];
        full.extend_from_slice(args);
        match Cli::parse_from_args(full) {
            Err(CliError::Usage(message)) => message,
            other => panic!("{args:?}: expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn default_command_is_serve() {
        assert_eq!(parse(&[]).subcommand(), Command::Serve);
        assert_eq!(parse(&["serve"]).subcommand(), Command::Serve);
        assert_eq!(parse(&["check-config"]).subcommand(), Command::CheckConfig);
        assert_eq!(parse(&["version"]).subcommand(), Command::Version);
    }

    #[test]
    fn no_flags_means_no_overrides() {
        let cli = parse(&[]);
        assert_eq!(cli.overrides(), Overrides::default());
        assert_eq!(cli.config_path(), None);
    }

    #[test]
    fn flags_before_or_after_the_subcommand() {
        for args in [
            &["-c", "/x.toml", "--workers", "3", "check-config"][..],
            &["check-config", "--config", "/x.toml", "--workers=3"][..],
        ] {
            let cli = parse(args);
            assert_eq!(cli.subcommand(), Command::CheckConfig);
            assert_eq!(cli.config_path(), Some(Path::new("/x.toml")));
            assert_eq!(cli.overrides().workers, Some(3));
        }
    }

    #[test]
    fn every_key_has_a_flag() {
        let o = parse(&[
            "--workers=4",
            "--software=S",
            "--log-level=debug",
            "--log-format=json",
            "--listen=127.0.0.1:1,[::1]:2",
            "--listen=127.0.0.1:3",
            "--no-udp",
            "--tcp",
            "--alternate-ip=192.0.2.2",
            "--alternate-port=4000",
            "--response-port",
            "--padding=false",
            "--no-turn",
            "--realm=example.org",
            "--relay-ip=10.0.0.5,fd00::5",
            "--relay-ip=10.0.0.6",
            "--external-ip=203.0.113.5/10.0.0.5",
            "--external-ip=2001:db8::5",
            "--min-port=40000",
            "--max-port=41000",
            "--default-lifetime=60",
            "--max-lifetime=120",
            "--nonce-lifetime=30",
            "--user-quota=2",
            "--total-quota=100",
            "--allowed-peer-range=127.0.0.0/8,::1",
            "--denied-peer-range=10.9.0.0/16",
            "--challenges-per-second=7",
            "--user=alice:pa:ss,bob:b",
            "--user=carol:c",
            "--secret=s1,s2",
            "--secret=s3",
            "--rest-separator=-",
            "--strict-expiry",
            "--database=postgres://u:p@db/turn",
            "--data-dir=/srv/turnpike",
            "--database-schema=coturn",
            "--database-pool-size=8",
            "--database-timeout=9",
            "--cache-ttl=10",
            "--negative-cache-ttl=0",
            "--grace-period=11",
            "--secrets-refresh=12",
            "--tls-certificate=/etc/tp/chain.pem",
            "--tls-private-key=/etc/tp/key.pem",
            "--tls-listen=127.0.0.1:5349,[::1]:5349",
            "--tls-listen=127.0.0.2:443",
            "--dtls-listen=none",
            "--tls-min-version=1.3",
            "--tls-reload-interval=0",
            "--max-connections-per-ip=0",
            "--max-connections=9",
            "--ipv6-prefix=56",
            "--max-handshakes=13",
            "--handshakes-per-second-per-ip=5",
            "--handshake-timeout=14",
            "--auth-timeout=15",
            "--idle-timeout=16",
            "--max-buffered-bytes=65536",
            "--max-buffered-bytes-total=1000000",
            "--max-peer-connections-per-allocation=17",
            "--max-peer-connections=0",
            "--admin-listen=127.0.0.1:9090,none",
            "--admin-listen=[::1]:9090",
            "--admin-allow-remote",
            "--xdp-interface=eth0,none",
            "--xdp-interface=eth1",
            "--xdp-mode=native",
        ])
        .overrides();
        let user = |name: &str, password: &str| UserEntry {
            username: name.into(),
            password: password.into(),
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            o,
            Overrides {
                workers: Some(4),
                software: Some("S".into()),
                log_level: Some("debug".into()),
                log_format: Some(LogFormat::Json),
                listen: Some(vec![
                    addr("127.0.0.1:1"),
                    addr("[::1]:2"),
                    addr("127.0.0.1:3")
                ]),
                udp: Some(false),
                tcp: Some(true),
                alternate_ip: Some("192.0.2.2".parse().unwrap()),
                alternate_port: Some(4000),
                response_port: Some(true),
                padding: Some(false),
                turn: Some(false),
                realm: Some("example.org".into()),
                relay_ips: Some(vec![ip("10.0.0.5"), ip("fd00::5"), ip("10.0.0.6")]),
                external_ips: Some(vec![
                    ExternalIp {
                        public: ip("203.0.113.5"),
                        private: Some(ip("10.0.0.5")),
                    },
                    ExternalIp {
                        public: ip("2001:db8::5"),
                        private: None,
                    },
                ]),
                min_port: Some(40000),
                max_port: Some(41000),
                default_lifetime: Some(60),
                max_lifetime: Some(120),
                nonce_lifetime: Some(30),
                user_quota: Some(2),
                total_quota: Some(100),
                allowed_peer_ranges: Some(vec![net("127.0.0.0/8"), net("::1/128")]),
                denied_peer_ranges: Some(vec![net("10.9.0.0/16")]),
                challenges_per_second: Some(7),
                users: Some(vec![
                    user("alice", "pa:ss"),
                    user("bob", "b"),
                    user("carol", "c"),
                ]),
                secrets: Some(vec!["s1".into(), "s2".into(), "s3".into()]),
                rest_separator: Some('-'),
                strict_expiry: Some(true),
                database_url: Some("postgres://u:p@db/turn".into()),
                data_dir: Some(PathBuf::from("/srv/turnpike")),
                database_schema: Some(DatabaseSchema::Coturn),
                database_pool_size: Some(8),
                database_timeout: Some(9),
                cache_ttl: Some(10),
                negative_cache_ttl: Some(0),
                grace_period: Some(11),
                secrets_refresh: Some(12),
                tls_certificate: Some(PathBuf::from("/etc/tp/chain.pem")),
                tls_private_key: Some(PathBuf::from("/etc/tp/key.pem")),
                tls_listen: Some(vec![
                    addr("127.0.0.1:5349"),
                    addr("[::1]:5349"),
                    addr("127.0.0.2:443")
                ]),
                dtls_listen: Some(Vec::new()),
                tls_min_version: Some(TlsVersion::Tls13),
                tls_reload_interval: Some(0),
                max_connections_per_ip: Some(0),
                max_connections: Some(9),
                ipv6_prefix: Some(56),
                max_handshakes: Some(13),
                handshakes_per_second_per_ip: Some(5),
                handshake_timeout: Some(14),
                auth_timeout: Some(15),
                idle_timeout: Some(16),
                max_buffered_bytes: Some(65536),
                max_buffered_bytes_total: Some(1_000_000),
                max_peer_connections_per_allocation: Some(17),
                max_peer_connections: Some(0),
                admin_listen: Some(vec![addr("127.0.0.1:9090"), addr("[::1]:9090")]),
                admin_allow_remote: Some(true),
                xdp_interfaces: Some(vec!["eth0".into(), "eth1".into()]),
                xdp_mode: Some(XdpMode::Native),
            }
        );
    }

    #[test]
    fn admin_subcommands() {
        use crate::admin::{CredentialFormat, SecretCommand, UserCommand};
        let cli = parse(&["user", "add", "alice", "--password-file", "/pw"]);
        let Command::User(UserCommand::Add(add)) = cli.subcommand() else {
            panic!("{cli:?}");
        };
        assert_eq!(add.username, "alice");
        assert_eq!(add.password.password_file, Some(PathBuf::from("/pw")));
        assert!(add.password.password.is_none() && !add.create_realm);
        // Global flags mix with the subcommand's.
        let cli = parse(&[
            "secret",
            "add",
            "--generate",
            "--key-index",
            "3",
            "--database",
            "sqlite:/x.db",
        ]);
        let Command::Secret(SecretCommand::Add(add)) = cli.subcommand() else {
            panic!("{cli:?}");
        };
        assert!(add.generate && add.secret.is_none());
        assert_eq!(add.key_index, Some(3));
        assert_eq!(
            cli.overrides().database_url.as_deref(),
            Some("sqlite:/x.db")
        );
        let cli = parse(&["credentials", "--format", "wire", "--json", "--ttl=60"]);
        let Command::Credentials(args) = cli.subcommand() else {
            panic!("{cli:?}");
        };
        assert_eq!(args.format, CredentialFormat::Wire);
        assert_eq!((args.ttl, args.json), (60, true));
        assert_eq!(args.user_id, None);
        assert!(args.urls.is_empty());
        let Command::Credentials(args) = parse(&["credentials"]).subcommand() else {
            panic!();
        };
        assert_eq!((args.ttl, args.format), (86_400, CredentialFormat::Rest));
    }

    #[test]
    fn admin_usage_errors() {
        let cases: &[(&[&str], &str)] = &[
            (&["user", "add"], "<USERNAME>"),
            (
                &[
                    "user",
                    "add",
                    "a",
                    "--password",
                    "x",
                    "--password-file",
                    "f",
                ],
                "cannot be used with",
            ),
            (&["secret", "remove"], "<SECRET|--key-index <N>>"),
            (&["secret", "add", "s", "--generate"], "cannot be used with"),
            (&["credentials", "--ttl", "0"], "--ttl"),
            (&["credentials", "--format", "json"], "json"),
            (&["user", "frobnicate"], "frobnicate"),
        ];
        for (args, needle) in cases {
            let message = usage_error(args);
            assert!(!message.contains('\n'), "{args:?}: {message}");
            assert!(message.contains(needle), "{args:?}: {message}");
        }
    }

    /// `--realm` on the command line picks the admin commands' realm without
    /// changing the server's.
    #[test]
    fn realm_from_the_command_line() {
        let cli = parse(&["user", "list", "--realm", "other"]);
        assert_eq!(cli.realm_on_command_line(), Some("other"));
        assert_eq!(cli.overrides().realm.as_deref(), Some("other"));
        // No TURNPIKE_REALM in the test environment.
        assert_eq!(cli.server_overrides().realm, None);
        let cli = parse(&["user", "list"]);
        assert_eq!(cli.realm_on_command_line(), None);
        assert_eq!(cli.server_overrides(), cli.overrides());
    }

    /// Every pair in NEGATIONS is a real flag and its negation, and
    /// `clear` knows both ids.
    #[test]
    fn negations_are_real_flags() {
        let cmd = Cli::command();
        for &(flag, negation) in NEGATIONS {
            for id in [flag, negation] {
                assert!(
                    cmd.get_arguments().any(|a| a.get_id() == id),
                    "{id} is not an argument"
                );
            }
            let all = [
                "--udp",
                "--tcp",
                "--response-port",
                "--padding",
                "--turn",
                "--strict-expiry",
                "--admin-allow-remote",
            ];
            let mut args: Vec<String> = all.iter().map(|s| (*s).to_owned()).collect();
            args.push("--software=x".to_owned());
            args.push(format!("--{}", negation.replace('_', "-")));
            let before = parse(&args.iter().map(String::as_str).collect::<Vec<_>>()).settings;
            let mut cleared = before.clone();
            cleared.clear(flag);
            cleared.clear(negation);
            assert_ne!(
                format!("{before:?}"),
                format!("{cleared:?}"),
                "clear({flag}) / clear({negation}) changed nothing"
            );
        }
    }

    #[test]
    fn last_of_flag_and_negation_wins() {
        assert_eq!(parse(&["--tcp", "--no-tcp"]).overrides().tcp, Some(false));
        assert_eq!(parse(&["--no-turn", "--turn"]).overrides().turn, Some(true));
        assert_eq!(parse(&["--turn=false"]).overrides().turn, Some(false));
        assert_eq!(parse(&["--no-tcp", "--tcp"]).overrides().tcp, Some(true));
        // Also across the subcommand (the flags are global).
        assert_eq!(
            parse(&["--tcp", "check-config", "--no-tcp"])
                .overrides()
                .tcp,
            Some(false)
        );
        assert_eq!(
            parse(&["--no-tcp", "check-config", "--tcp=true"])
                .overrides()
                .tcp,
            Some(true)
        );
        assert_eq!(
            parse(&["--no-padding", "--padding=true", "--no-padding"])
                .overrides()
                .padding,
            Some(false)
        );
        assert_eq!(
            parse(&["--strict-expiry", "--no-strict-expiry"])
                .overrides()
                .strict_expiry,
            Some(false)
        );
        assert_eq!(
            parse(&["--admin-allow-remote", "--no-admin-allow-remote"])
                .overrides()
                .admin_allow_remote,
            Some(false)
        );
        assert_eq!(
            parse(&["--no-admin-allow-remote", "--admin-allow-remote=yes"])
                .overrides()
                .admin_allow_remote,
            Some(true)
        );
        assert_eq!(
            parse(&["--admin-listen=none"]).overrides().admin_listen,
            Some(Vec::new())
        );
        assert_eq!(
            parse(&["--software=x", "--no-software"])
                .overrides()
                .software,
            Some(String::new())
        );
        assert_eq!(
            parse(&["--no-software", "--software=x"])
                .overrides()
                .software,
            Some("x".into())
        );
    }

    #[test]
    fn usage_errors_are_one_line() {
        let cases: &[(&[&str], &str)] = &[
            (&["--workers", "many"], "--workers"),
            (&["--listen", "localhost:3478"], "not an IP:PORT"),
            (&["--alternate-ip", "x"], "not an IP address"),
            (&["--alternate-port", "70000"], "--alternate-port"),
            (&["--log-format", "xml"], "xml"),
            (&["--lisen", "1.2.3.4:5"], "--lisen"),
            (&["frobnicate"], "frobnicate"),
            (&["--udp=maybe"], "maybe"),
            (&["--udp", "false"], "--udp=false"),
            (&["--relay-ip", "10.0.0.x"], "not an IP address"),
            (&["--external-ip", "203.0.113.5/"], "PUBLIC/PRIVATE"),
            (&["--allowed-peer-range", "10.0.0.0/33"], "not a CIDR range"),
            (&["--denied-peer-range", "10.0.0.1/8"], "host bits"),
            (&["--min-port", "70000"], "--min-port"),
            (&["--max-lifetime=-1"], "--max-lifetime"),
            (&["--challenges-per-second", "x"], "--challenges-per-second"),
            (&["--user", "alicesecret"], "expected USER:PASSWORD"),
            (&["--user", "alice:"], "empty password"),
            (&["--turn=maybe"], "maybe"),
            (&["--rest-separator", "::"], "not one character"),
            (&["--database-schema", "mysql"], "mysql"),
            (&["--database-pool-size=-1"], "--database-pool-size"),
            (&["--cache-ttl", "x"], "--cache-ttl"),
            (&["--strict-expiry=maybe"], "maybe"),
            (
                &["--tls-listen", "localhost:5349"],
                "or none for no listener",
            ),
            (&["--dtls-listen", "5349"], "not an IP:PORT"),
            (
                &["--tls-min-version", "1.1"],
                "invalid value '1.1' for '--tls-min-version",
            ),
            (&["--tls-reload-interval=-1"], "--tls-reload-interval"),
            (&["--max-buffered-bytes", "1M"], "--max-buffered-bytes"),
            (
                &["--max-peer-connections-per-allocation=-1"],
                "--max-peer-connections-per-allocation",
            ),
            (&["--max-peer-connections", "x"], "--max-peer-connections"),
            (
                &["--admin-listen", "localhost:9090"],
                "or none for no listener",
            ),
            (&["--admin-allow-remote=maybe"], "maybe"),
        ];
        for (args, needle) in cases {
            let message = usage_error(args);
            assert!(!message.contains('\n'), "{args:?}: {message}");
            assert!(message.contains(needle), "{args:?}: {message}");
            assert!(message.ends_with("(see turnpike --help)"), "{message}");
            assert!(!message.starts_with("error:"), "{message}");
        }
        assert!(usage_error(&["--lisen", "x"]).contains("tip:"));
    }

    /// A rejected `--user` value may be a password: it is never repeated.
    #[test]
    fn user_errors_do_not_repeat_the_value() {
        for value in ["s3cr3tpassword", ":s3cr3tpassword"] {
            let message = usage_error(&["--user", value]);
            assert!(!message.contains("s3cr3t"), "{message}");
            assert!(
                message.starts_with("invalid value for '--user <USER:PASSWORD>': "),
                "{message}"
            );
        }
        let message = usage_error(&["--user=alice:ok", "--user", "bob"]);
        assert!(!message.contains("ok"), "{message}");
        // Other flags still show the rejected value.
        assert!(usage_error(&["--relay-ip", "nope"]).contains("nope"));
        // `credentials --user ID` gets pointed at --user-id.
        assert!(
            usage_error(&["credentials", "--user", "alice"])
                .contains("takes the user id as --user-id ID")
        );
    }

    #[test]
    fn help_and_version_are_not_errors() {
        for flag in ["--help", "--version", "-V"] {
            assert!(matches!(
                Cli::parse_from_args(["turnpike", flag]),
                Err(CliError::Info(_))
            ));
        }
    }

    /// Every environment variable is documented in the example config.
    #[test]
    fn example_file_mentions_every_env_var_and_flag() {
        let example = include_str!("../../../turnpike.example.toml");
        for arg in Cli::command().get_arguments() {
            if let Some(env) = arg.get_env() {
                let env = env.to_string_lossy();
                if env != "TURNPIKE_CONFIG" {
                    assert!(example.contains(&*env), "{env} missing from example");
                }
            }
            if let Some(long) = arg.get_long()
                && !matches!(long, "help" | "version" | "config")
            {
                assert!(
                    example.contains(&format!("--{long}")),
                    "--{long} missing from example"
                );
            }
        }
    }
}
