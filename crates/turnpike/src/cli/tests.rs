//! Parsing tests. They read the real environment (clap's `env`), so
//! they assume no `TURNPIKE_*` variables are set; the environment paths
//! are covered by the integration tests, which control it per process.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use super::*;
use crate::config::{
    CredentialFormat, DECLARED, DatabaseSchema, ExternalIp, IceAuth, LogFormat, TlsVersion,
    UserEntry, XdpMode,
};

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
        "--max-bps=64000",
        "--user-max-bps=128000",
        "--bps-capacity=125000000",
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
        "--database-ca-file=/etc/tp/pg-ca.pem",
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
        "--admin-token-file=/etc/turnpike/admin.token",
        "--no-admin-probes-without-token",
        "--admin-restund-listen=127.0.0.1:33000",
        "--drain-alternate-server=203.0.113.7:3478,none",
        "--drain-alternate-server=[2001:db8::7]:3478",
        "--drain-exit-when-empty",
        "--shutdown-grace-period=3600",
        "--xdp-interface=eth0,none",
        "--xdp-interface=eth1",
        "--xdp-mode=native",
        "--ice",
        "--ice-credential-format=wire",
        "--ice-ttl=600",
        "--ice-auth=token",
        "--ice-token-file=/etc/turnpike/ice.token",
        "--ice-user-header=X-User-Id",
        "--ice-requests-per-second=3",
        "--ice-cors-origin=https://a.example,none",
        "--ice-cors-origin=https://b.example",
        "--ice-relay-only",
        "--ice-max-urls=6",
        "--relay-url=turn:127.0.0.2:3478?transport=udp",
        "--srv-domain=example.test",
        "--name-server=127.0.0.1:5353",
        "--discovery-interval=7",
        "--probe-interval=0",
        "--probe-timeout=3",
        "--unhealthy-after=4",
        "--healthy-after=5",
        "--probe-admin-port=9641",
        "--discover-database",
        "--register",
        "--fleet-name=turn1.example.test",
        "--heartbeat-interval=2",
        "--expire-after=9",
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
            max_bps: Some(64_000),
            user_max_bps: Some(128_000),
            bps_capacity: Some(125_000_000),
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
            database_ca_file: Some(PathBuf::from("/etc/tp/pg-ca.pem")),
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
            admin_token_file: Some("/etc/turnpike/admin.token".into()),
            admin_probes_without_token: Some(false),
            admin_restund_listen: Some(addr("127.0.0.1:33000")),
            drain_alternate_servers: Some(vec![
                addr("203.0.113.7:3478"),
                addr("[2001:db8::7]:3478")
            ]),
            drain_exit_when_empty: Some(true),
            shutdown_grace_period: Some(3600),
            ice: Some(true),
            ice_credential_format: Some(CredentialFormat::Wire),
            ice_ttl: Some(600),
            ice_auth: Some(IceAuth::Token),
            ice_token_file: Some("/etc/turnpike/ice.token".into()),
            ice_user_header: Some("X-User-Id".into()),
            ice_requests_per_second: Some(3),
            ice_cors_origins: Some(vec!["https://a.example".into(), "https://b.example".into()]),
            ice_relay_only: Some(true),
            ice_max_urls: Some(6),
            discovery_relays: Some(vec!["turn:127.0.0.2:3478?transport=udp".into()]),
            discovery_srv_domain: Some("example.test".into()),
            discovery_name_servers: Some(vec![addr("127.0.0.1:5353")]),
            discovery_interval: Some(7),
            discovery_probe_interval: Some(0),
            discovery_probe_timeout: Some(3),
            discovery_unhealthy_after: Some(4),
            discovery_healthy_after: Some(5),
            discovery_admin_port: Some(9641),
            discovery_database: Some(true),
            fleet_register: Some(true),
            fleet_name: Some("turn1.example.test".into()),
            fleet_heartbeat_interval: Some(2),
            fleet_expire_after: Some(9),
            xdp_interfaces: Some(vec!["eth0".into(), "eth1".into()]),
            xdp_mode: Some(XdpMode::Native),
        }
    );
}

#[test]
fn admin_subcommands() {
    use crate::admin::{SecretCommand, UserCommand};
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

/// `turnpike status`, `allocations` and `kick`, with the global flags that
/// point them at a server.
#[test]
fn admin_endpoint_subcommands() {
    use crate::admin_client::{AllocationsArgs, KickArgs, StatusArgs};
    assert_eq!(
        parse(&["status"]).subcommand(),
        Command::Status(StatusArgs { json: false })
    );
    let cli = parse(&[
        "status",
        "--json",
        "--admin-listen",
        "[::1]:9641",
        "--admin-token-file=/t",
    ]);
    assert_eq!(cli.subcommand(), Command::Status(StatusArgs { json: true }));
    assert_eq!(
        cli.overrides().admin_listen,
        Some(vec!["[::1]:9641".parse().unwrap()])
    );
    assert_eq!(cli.overrides().admin_token_file, Some(PathBuf::from("/t")));
    assert_eq!(
        parse(&["allocations"]).subcommand(),
        Command::Allocations(AllocationsArgs {
            username: None,
            json: false
        })
    );
    assert_eq!(
        parse(&[
            "-c",
            "/x.toml",
            "allocations",
            "--username",
            "1767225600:alice",
            "--json"
        ])
        .subcommand(),
        Command::Allocations(AllocationsArgs {
            username: Some("1767225600:alice".to_owned()),
            json: true
        })
    );
    assert_eq!(
        parse(&["kick", "--id", "00000000000000ff"]).subcommand(),
        Command::Kick(KickArgs {
            username: None,
            id: Some("00000000000000ff".to_owned()),
            json: false
        })
    );
    assert_eq!(
        parse(&["kick", "--username=alice", "--json"]).subcommand(),
        Command::Kick(KickArgs {
            username: Some("alice".to_owned()),
            id: None,
            json: true
        })
    );
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
        (
            &["kick"],
            "the following required arguments were not provided: <--username <NAME>|--id <ID>>",
        ),
        (
            &["kick", "--id", "1", "--username", "a"],
            "cannot be used with",
        ),
        (&["allocations", "alice"], "unexpected argument 'alice'"),
        (
            &["status", "--username", "a"],
            "unexpected argument '--username'",
        ),
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

/// Every declared negation is a real flag next to its flag, and the two
/// settle by their order on the command line (the later wins).
#[test]
fn negations_are_real_flags() {
    let cmd = Cli::command();
    let negated: Vec<_> = DECLARED.iter().filter(|d| d.negation).collect();
    assert!(!negated.is_empty());
    for d in negated {
        let negation = format!("no_{}", d.id);
        for id in [d.id, negation.as_str()] {
            assert!(
                cmd.get_arguments().any(|a| a.get_id() == id),
                "{id} is not an argument"
            );
        }
        let value = if d.value_name == "BOOL" { "true" } else { "x" };
        let flag = format!("--{}={value}", d.flag);
        let no = format!("--no-{}", d.flag);
        assert_ne!(
            parse(&[&flag, &no]).overrides(),
            parse(&[&no, &flag]).overrides(),
            "--{} and --no-{} do not settle by their order",
            d.flag,
            d.flag
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
        parse(&[
            "--admin-probes-without-token",
            "--no-admin-probes-without-token"
        ])
        .overrides()
        .admin_probes_without_token,
        Some(false)
    );
    assert_eq!(
        parse(&[
            "--no-admin-probes-without-token",
            "--admin-probes-without-token=yes"
        ])
        .overrides()
        .admin_probes_without_token,
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
        (&["--admin-probes-without-token=maybe"], "maybe"),
        (
            &["--admin-restund-listen", "localhost"],
            "`localhost` is not an IP:PORT address",
        ),
        (
            &["--admin-allow-remote"],
            "admin.allow_remote was removed: an admin.listen address other than loopback now needs admin.token_file",
        ),
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
    // `allocations` and `kick` at --username (--user is the server's
    // USER:PASSWORD).
    for command in ["allocations", "kick"] {
        let message = usage_error(&[command, "--user", "alice"]);
        assert!(
            message.contains(&format!(
                "; `turnpike {command}` takes the user as --username NAME"
            )),
            "{message}"
        );
    }
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
    let example = include_str!("../../../../turnpike.example.toml");
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

/// `--help` shows the defaults the server uses: it says them from the
/// declarations (it once said 20 challenges per second while the server
/// used 1000).
#[test]
fn help_shows_the_real_defaults() {
    let cmd = Cli::command();
    let help = |id: &str| {
        cmd.get_arguments()
            .find(|a| a.get_id() == id)
            .and_then(|a| a.get_help())
            .map(ToString::to_string)
            .unwrap_or_else(|| panic!("{id} has no help"))
    };
    let defaults = crate::config::Settings::default();
    assert!(
        help("challenges_per_second").ends_with(&format!(
            "[default: {}]",
            defaults.turn.challenges_per_second
        )),
        "{}",
        help("challenges_per_second")
    );
    assert!(help("max_buffered_bytes").ends_with(&format!(
        "[default: {}]",
        defaults.limits.max_buffered_bytes
    )));
    for d in DECLARED {
        assert!(help(d.id).contains("[default: "), "{}", d.id);
        assert!(
            help(d.id).starts_with(&format!("{}.{}: ", d.section, d.key)),
            "{}",
            d.id
        );
    }
}
