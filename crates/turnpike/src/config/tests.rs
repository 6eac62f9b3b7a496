//! Unit tests of the settings: defaults, the file, overrides, validation
//! messages, planning, the summary and the example file.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::plan::addresses_overlap;
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
    match Settings::from_toml_str(text) {
        Err(ConfigError::Invalid { message }) => message,
        other => panic!("expected a validation error for {text:?}, got {other:?}"),
    }
}

fn parse_error(text: &str) -> (Option<usize>, String) {
    match Settings::from_toml_str(text) {
        Err(ConfigError::Parse { line, message, .. }) => (line, message),
        other => panic!("expected a parse error for {text:?}, got {other:?}"),
    }
}

#[test]
fn defaults_are_the_documented_ones() {
    let c = Settings::default();
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
    assert_eq!(Settings::from_toml_str("").unwrap(), Settings::default());
    assert_eq!(
        Settings::from_toml_str("[server]\n[log]\n[stun]\n").unwrap(),
        Settings::default()
    );
}

#[test]
fn file_values_are_read() {
    let c = Settings::from_toml_str(
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
    let mut c = Settings::parse_toml(
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
        Settings::load(&path),
        Err(ConfigError::Invalid { .. })
    ));
    // ...but fixed by an override of listen.
    let c = Settings::resolve(
        Some(&path),
        &Overrides {
            listen: Some(vec![sa("192.0.2.1:3478")]),
            ..Overrides::default()
        },
    )
    .unwrap();
    assert_eq!(c.listeners().len(), 4);
    // No file at all: defaults plus overrides.
    let c = Settings::resolve(
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
    let err = Settings::load(Path::new("/nonexistent/turnpike.toml")).unwrap_err();
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
    let err = Settings::parse_toml("[stun]\nlisen = []\n", Some(Path::new("/etc/t.toml")))
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
    let t = Settings::default().turn;
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
        Settings::from_toml_str("[turn]\n").unwrap(),
        Settings::default()
    );
}

#[test]
fn turn_file_values_are_read() {
    let c = Settings::from_toml_str(
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
    let c = Settings::default();
    let db = &c.database;
    assert_eq!(db.url, "");
    assert_eq!(db.data_dir, PathBuf::from("/var/lib/turnpike"));
    assert_eq!(db.schema, DatabaseSchema::Turnpike);
    assert_eq!((db.pool_size, db.timeout), (4, 5));
    assert_eq!(db.ca_file, None);
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
    assert_eq!(o.ca_file, None);
    assert!(!o.create);
    assert!(c.store_options(true).unwrap().create);
    assert_eq!(
        Settings::from_toml_str("[database]\n").unwrap(),
        Settings::default()
    );
}

#[test]
fn database_and_secret_file_values_are_read() {
    let c = Settings::from_toml_str(
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
        ca_file = "/etc/turnpike/pg-ca.pem"
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
        turnpike_store::Location::Postgres("postgres://turnpike:pw@db.example:5433/turn".into())
    );
    assert_eq!(o.schema, turnpike_store::Schema::Coturn);
    assert_eq!(o.pool_size, 64);
    assert_eq!(o.connect_timeout, Duration::from_secs(60));
    assert_eq!(o.ca_file, Some(PathBuf::from("/etc/turnpike/pg-ca.pem")));
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
    let c = Settings::from_toml_str("[database]\nurl = \"sqlite:/tmp/x.db\"\n").unwrap();
    assert!(
        c.summary()
            .contains("; database /tmp/x.db (turnpike schema);")
    );
}

#[test]
fn database_and_secret_overrides_replace_the_file_values() {
    let mut c = Settings::parse_toml(
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
    Settings::from_toml_str(&format!("[turn]\nsecrets = [\"{}\"]\n", "s".repeat(256))).unwrap();
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
    let c = Settings::from_toml_str(
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
    assert!(Settings::default().advertised().unwrap().is_empty());
}

#[test]
fn core_turn_carries_every_setting() {
    let c = Settings::from_toml_str(
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
    let off = Settings::from_toml_str(
        "[turn]\nenabled = false\n[[turn.users]]\nusername = \"a\"\npassword = \"b\"\n",
    )
    .unwrap();
    assert!(off.core(&SECRET, epoch).turn.is_none());
    assert!(off.users().is_empty());
    assert!(off.user_keys().is_empty());
    assert!(off.summary().ends_with("; turn off"), "{}", off.summary());
    // Default: on.
    assert!(Settings::default().core(&SECRET, epoch).turn.is_some());
}

#[test]
fn turn_overrides_replace_the_file_values() {
    let mut c = Settings::parse_toml(
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
        Settings::from_toml_str("[[turn.users]]\nusername = \"alice\"\npassword = \"hunter2\"\n")
            .unwrap();
    assert!(!format!("{c:?}").contains("hunter2"));
    assert!(!c.summary().contains("hunter2"));
}

#[test]
fn wildcard_of_the_other_family_is_fine_with_an_alternate_ip() {
    let c = Settings::from_toml_str(
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
    assert_eq!(c.listeners()[4].role, ListenerRole::PRIMARY);
}

#[test]
fn listeners_without_alternate_are_the_listen_addresses() {
    let c = Settings::default();
    let l = c.listeners();
    assert_eq!(l.len(), 2);
    assert!(
        l.iter()
            .all(|l| l.role == ListenerRole::PRIMARY && l.configured == l.addr)
    );
}

#[test]
fn listeners_expand_to_the_rfc5780_quartet() {
    use Slot::*;
    let c = Settings::from_toml_str(
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
    let c = Settings::from_toml_str(
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
    let c = Settings::from_toml_str(
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
    let default = Settings::default().core(&SECRET, Instant::now());
    assert!(default.nat_discovery.is_empty());
    assert_eq!(default.software.as_deref(), Some("Turnpike"));
}

#[test]
fn summary_is_one_line() {
    let s = Settings::default().summary();
    assert!(!s.contains('\n'));
    assert!(s.contains("listen 0.0.0.0:3478 [::]:3478"), "{s}");
    assert!(s.contains("nat discovery off"), "{s}");
    assert!(
        s.ends_with(
            "; turn on (realm \"turnpike\", 0 users, relay on the IP each request arrived on, ports 49152-65535)"
        ),
        "{s}"
    );
    let c = Settings::from_toml_str(
        "[turn]\nrealm = \"r\"\nrelay_ips = [\"127.0.0.1\", \"::1\"]\nmin_port = 61000\nmax_port = 65000\n[[turn.users]]\nusername = \"alice\"\npassword = \"wonderland\"\n",
    )
    .unwrap();
    let s = c.summary();
    assert!(!s.contains('\n'));
    assert!(
        s.ends_with("; turn on (realm \"r\", 1 user, relay ips 127.0.0.1 ::1, ports 61000-65000)"),
        "{s}"
    );
    assert!(!s.contains("wonderland"), "{s}");
}

#[test]
fn non_utf8_file_gets_its_own_hint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin1.toml");
    std::fs::write(&path, b"software = \"caf\xe9\"\n").unwrap();
    let text = Settings::load(&path).unwrap_err().to_string();
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

const EXAMPLE: &str = include_str!("../../../../turnpike.example.toml");

/// The example file documents the defaults: parsed as-is it must equal
/// `Settings::default()`, so it cannot drift from the code.
#[test]
fn example_file_is_the_defaults() {
    assert_eq!(
        Settings::from_toml_str(EXAMPLE).unwrap(),
        Settings::default()
    );
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
                if rest.starts_with(|c: char| c.is_ascii_lowercase()) || rest.starts_with("[[") =>
            {
                uncommented += 1;
                format!("{rest}\n")
            }
            _ => format!("{line}\n"),
        })
        .collect();
    assert!(uncommented >= 2, "expected commented-out settings");
    let c = Settings::parse_toml(&doc, None).unwrap();
    assert!(c.stun.alternate_ip.is_some());
    assert!(c.stun.alternate_port.is_some());
    assert_eq!(c.turn.users.len(), 2, "the [[turn.users]] examples");
    assert!(c.tls.certificate.is_some() && c.tls.private_key.is_some());
    // The uncommented users are the only difference from the defaults.
    assert_eq!(
        c.turn,
        TurnSettings {
            users: c.turn.users.clone(),
            ..TurnSettings::default()
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

/// The text of `[section]` in the example file, up to the next table.
fn example_section(section: &str) -> &'static str {
    let header = format!("\n[{section}]\n");
    let start = EXAMPLE
        .find(&header)
        .unwrap_or_else(|| panic!("[{section}] missing from example"));
    let body = &EXAMPLE[start + 1..];
    let end = body[1..].find("\n[").map_or(body.len(), |i| i + 1);
    &body[..end]
}

/// Whether `text` has `word` on its own, not as the start of a longer
/// name (`--max-connections` is not in `--max-connections-per-ip`).
fn mentions(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(at, _)| {
        !text[at + word.len()..]
            .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    })
}

/// Every declared setting is documented in the example file, in its
/// section: its key (set, or commented out when it has no default), its
/// environment variable and its flags. With `example_file_is_the_defaults`
/// (the values there are the declared defaults), a setting cannot be
/// added, renamed or given another default without the example following.
#[test]
fn example_file_documents_every_declared_setting() {
    for d in DECLARED {
        let body = example_section(d.section);
        let name = format!("{}.{}", d.section, d.key);
        let key_line = body.lines().any(|l| {
            let l = l.trim_start_matches('#');
            l.starts_with(&format!("{} = ", d.key)) || l == format!("[[{name}]]")
        });
        assert!(
            key_line,
            "{name} missing from [{}] in the example",
            d.section
        );
        assert!(
            mentions(body, d.env),
            "{} ({name}) missing from the example",
            d.env
        );
        let flag = format!("--{}", d.flag);
        assert!(
            mentions(body, &flag),
            "{flag} ({name}) missing from the example"
        );
        if d.negation {
            let negation = format!("--no-{}", d.flag);
            assert!(
                mentions(body, &negation),
                "{negation} ({name}) missing from the example"
            );
        }
    }
}

#[test]
fn tls_and_limits_defaults_are_the_documented_ones() {
    let c = Settings::default();
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
        Settings::from_toml_str("[tls]\n[limits]\n").unwrap(),
        Settings::default()
    );
}

#[test]
fn tls_and_limits_file_values_are_read() {
    let c = Settings::from_toml_str(
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
        LimitsSettings {
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
    let c = Settings::from_toml_str("[tls]\ncertificate = \"/c.pem\"\n").unwrap();
    assert!(
        c.summary().contains("; tls on (certificate /c.pem, key in the certificate file, tls 0.0.0.0:5349 [::]:5349, dtls 0.0.0.0:5349 [::]:5349, min version 1.2, reload on change (checked every 5 s) or SIGHUP);"),
        "{}",
        c.summary()
    );
    // Versions written as TOML numbers mean the same.
    for (text, want) in [("1.2", TlsVersion::Tls12), ("1.3", TlsVersion::Tls13)] {
        let c = Settings::from_toml_str(&format!("[tls]\nmin_version = {text}\n")).unwrap();
        assert_eq!(c.tls.min_version, want);
    }
}

#[test]
fn tls_and_limits_overrides_replace_the_file_values() {
    let mut c = Settings::parse_toml(
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
    Settings::from_toml_str("[stun]\nlisten = [\"0.0.0.0:5349\"]\n").unwrap();
    Settings::from_toml_str(&format!("[stun]\nlisten = [\"0.0.0.0:5349\"]\nudp = false\n{cert}dtls_listen = [\"0.0.0.0:5349\"]\nlisten = []\n")).unwrap();
    // Other transports, other families and other ports are fine.
    Settings::from_toml_str(&format!("[stun]\nlisten = [\"0.0.0.0:3478\"]\n{cert}listen = [\"[::]:3478\", \"0.0.0.0:3479\"]\ndtls_listen = []\n")).unwrap();
    Settings::from_toml_str(&format!(
        "[stun]\ntcp = false\n{cert}listen = [\"0.0.0.0:3478\"]\n"
    ))
    .unwrap();
}

#[test]
fn admin_defaults_file_values_and_overrides() {
    let c = Settings::default();
    assert_eq!(c.admin, AdminSettings::default());
    assert!(c.admin.listen.is_empty());
    assert_eq!(c.admin.token_file, None);
    assert!(c.admin.probes_without_token);
    assert_eq!(c.admin.restund_listen, None);
    assert!(c.summary().contains("; admin off; "), "{}", c.summary());
    assert_eq!(Settings::from_toml_str("[admin]\n").unwrap(), c);
    let mut c = Settings::from_toml_str(
        "[admin]\nlisten = [\"127.0.0.1:9090\", \"[::1]:9090\"]\nprobes_without_token = false\nrestund_listen = \"127.0.0.1:33000\"\n",
    )
    .unwrap();
    assert_eq!(c.admin.listen, vec![sa("127.0.0.1:9090"), sa("[::1]:9090")]);
    assert!(!c.admin.probes_without_token);
    assert_eq!(c.admin.restund_listen, Some(sa("127.0.0.1:33000")));
    assert!(
        c.summary().contains(
            "; tls off; admin on (http://127.0.0.1:9090 http://[::1]:9090; no token), restund udp 127.0.0.1:33000; xdp off; database "
        ),
        "{}",
        c.summary()
    );
    c.apply(&Overrides {
        admin_listen: Some(vec![sa("192.0.2.1:80")]),
        admin_token_file: Some(PathBuf::from("/etc/turnpike/admin.token")),
        admin_probes_without_token: Some(true),
        admin_restund_listen: Some(sa("[::1]:33001")),
        ..Overrides::default()
    });
    assert_eq!(
        c.admin,
        AdminSettings {
            listen: vec![sa("192.0.2.1:80")],
            token_file: Some(PathBuf::from("/etc/turnpike/admin.token")),
            probes_without_token: true,
            restund_listen: Some(sa("[::1]:33001")),
        }
    );
    c.validate().unwrap();
    assert!(
        c.summary().contains(
            "; admin on (http://192.0.2.1:80; token /etc/turnpike/admin.token), restund udp [::1]:33001; "
        ),
        "{}",
        c.summary()
    );
    // An empty override list turns it off.
    c.apply(&Overrides {
        admin_listen: Some(Vec::new()),
        ..Overrides::default()
    });
    assert!(c.admin.listen.is_empty());
    assert!(
        c.summary()
            .contains("; admin off, restund udp [::1]:33001; "),
        "{}",
        c.summary()
    );
    assert_eq!(
        parse_error("[admin]\nlisten = [\"localhost:9090\"]\n"),
        (
            Some(2),
            "bad value for `listen`: `localhost:9090` is not an IP:PORT address (examples: 0.0.0.0:3478, 192.0.2.1:3478, [::]:3478)"
                .to_owned()
        )
    );
    assert_eq!(
        parse_error("[admin]\nrestund_listen = \"localhost\"\n"),
        (
            Some(2),
            "bad value for `restund_listen`: `localhost` is not an IP:PORT address (examples: 0.0.0.0:3478, 192.0.2.1:3478, [::]:3478)"
                .to_owned()
        )
    );
}

/// `admin.allow_remote` was replaced by the token: an old file says what
/// to do instead.
#[test]
fn admin_allow_remote_was_removed() {
    assert_eq!(
        parse_error("[admin]\nlisten = [\"0.0.0.0:9090\"]\nallow_remote = true\n"),
        (
            Some(3),
            "admin.allow_remote was removed: an admin.listen address other than loopback now needs admin.token_file (a bearer token) instead; remove allow_remote and set token_file"
                .to_owned()
        )
    );
    // In another section it is just an unknown key.
    let (_, message) = parse_error("[server]\nallow_remote = true\n");
    assert!(
        message.starts_with("unknown key `allow_remote` in [server]"),
        "{message}"
    );
}

#[test]
fn xdp_defaults_file_values_overrides_and_errors() {
    let c = Settings::default();
    assert_eq!(c.xdp, XdpSettings::default());
    assert!(c.xdp.interfaces.is_empty() && c.xdp.mode == XdpMode::Auto);
    assert_eq!(Settings::from_toml_str("[xdp]\n").unwrap(), c);
    let mut c = Settings::from_toml_str(
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
        XdpSettings {
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
    let token = "token_file = \"/etc/turnpike/admin.token\"\n";
    let cases: &[(String, &str)] = &[
        (
            "[admin]\nlisten = [\"0.0.0.0:9090\"]\n".to_owned(),
            "admin.listen address 0.0.0.0:9090 is not a loopback address, and admin.token_file is not set; set admin.token_file to a file holding a bearer token (e.g. `openssl rand -hex 32 > /etc/turnpike/admin.token`), or use 127.0.0.1:PORT or [::1]:PORT",
        ),
        (
            "[admin]\nlisten = [\"127.0.0.1:9090\", \"192.0.2.1:9090\"]\n".to_owned(),
            "admin.listen address 192.0.2.1:9090 is not a loopback address, and admin.token_file is not set",
        ),
        (
            "[admin]\nlisten = [\"[::]:9090\"]\n".to_owned(),
            "admin.listen address [::]:9090 is not a loopback address",
        ),
        (
            "[admin]\nlisten = [\"[2001:db8::1]:9090\"]\n".to_owned(),
            "admin.listen address [2001:db8::1]:9090 is not a loopback address",
        ),
        (
            "[admin]\nlisten = [\"127.0.0.1:9090\", \"127.0.0.1:9090\"]\n".to_owned(),
            "admin.listen contains 127.0.0.1:9090 twice; remove the duplicate",
        ),
        (
            format!("[admin]\n{token}listen = [\"224.0.0.1:9090\"]\n"),
            "admin.listen address 224.0.0.1:9090 is not a unicast address",
        ),
        (
            format!("[admin]\n{token}listen = [\"255.255.255.255:9090\"]\n"),
            "is not a unicast address",
        ),
        (
            "[admin]\ntoken_file = \"\"\n".to_owned(),
            "admin.token_file is empty; give the path of a file holding the admin bearer token",
        ),
        // The admin endpoint is TCP: STUN over TCP and TLS share the port.
        (
            "[admin]\nlisten = [\"127.0.0.1:3478\"]\n".to_owned(),
            "admin.listen address 127.0.0.1:3478 collides with the STUN listener 0.0.0.0:3478 (both TCP, port 3478); give the admin endpoint another port",
        ),
        (
            "[tls]\ncertificate = \"/c.pem\"\n[admin]\nlisten = [\"[::1]:5349\"]\n".to_owned(),
            "admin.listen address [::1]:5349 collides with the TLS listener [::]:5349",
        ),
        (
            "[stun]\nlisten = [\"127.0.0.1:3478\"]\nalternate_ip = \"127.0.0.2\"\n[admin]\nlisten = [\"127.0.0.1:3479\"]\n".to_owned(),
            "collides with the STUN listener 127.0.0.1:3479",
        ),
        // restund's command port has no authentication at all.
        (
            format!("[admin]\n{token}restund_listen = \"0.0.0.0:33000\"\n"),
            "admin.restund_listen address 0.0.0.0:33000 is not a loopback address, and restund's command port has no authentication; use 127.0.0.1:PORT or [::1]:PORT (restund's default is 127.0.0.1:33000)",
        ),
        (
            "[admin]\nrestund_listen = \"192.0.2.1:33000\"\n".to_owned(),
            "admin.restund_listen address 192.0.2.1:33000 is not a loopback address",
        ),
        (
            "[admin]\nrestund_listen = \"[::]:33000\"\n".to_owned(),
            "admin.restund_listen address [::]:33000 is not a loopback address",
        ),
        // It is UDP: STUN over UDP and DTLS share the port.
        (
            "[admin]\nrestund_listen = \"127.0.0.1:3478\"\n".to_owned(),
            "admin.restund_listen address 127.0.0.1:3478 collides with the STUN listener 0.0.0.0:3478 (both UDP, port 3478); give restund's command port another port",
        ),
        (
            "[tls]\ncertificate = \"/c.pem\"\n[admin]\nrestund_listen = \"[::1]:5349\"\n".to_owned(),
            "admin.restund_listen address [::1]:5349 collides with the DTLS listener [::]:5349",
        ),
    ];
    for (doc, needle) in cases {
        let message = invalid(doc);
        assert!(message.contains(needle), "{doc:?}: {message}");
        assert!(!message.contains('\n'));
    }
    // Loopback in every spelling, without a token; anything with one.
    for listen in [
        "127.0.0.1:9090",
        "127.1.2.3:9090",
        "[::1]:9090",
        "[::ffff:127.0.0.1]:9090",
    ] {
        Settings::from_toml_str(&format!("[admin]\nlisten = [\"{listen}\"]\n")).unwrap();
        Settings::from_toml_str(&format!("[admin]\nrestund_listen = \"{listen}\"\n")).unwrap();
    }
    Settings::from_toml_str(&format!(
        "[admin]\n{token}listen = [\"0.0.0.0:9090\", \"[::]:9090\"]\n"
    ))
    .unwrap();
    // No collision without STUN over TCP, or with TLS off, or over UDP.
    Settings::from_toml_str("[stun]\ntcp = false\n[admin]\nlisten = [\"127.0.0.1:3478\"]\n")
        .unwrap();
    Settings::from_toml_str("[admin]\nlisten = [\"127.0.0.1:5349\"]\n").unwrap();
    Settings::from_toml_str(
        "[tls]\ncertificate = \"/c.pem\"\nlisten = []\n[admin]\nlisten = [\"127.0.0.1:5349\"]\n",
    )
    .unwrap();
    // restund's port: no collision without STUN over UDP, nor with TLS
    // off, nor with the admin endpoint (TCP).
    Settings::from_toml_str("[stun]\nudp = false\n[admin]\nrestund_listen = \"127.0.0.1:3478\"\n")
        .unwrap();
    Settings::from_toml_str("[admin]\nrestund_listen = \"127.0.0.1:5349\"\n").unwrap();
    Settings::from_toml_str(
        "[admin]\nlisten = [\"127.0.0.1:9090\"]\nrestund_listen = \"127.0.0.1:9090\"\n",
    )
    .unwrap();
}

/// A relayed client cannot reach the admin endpoint nor restund's command
/// port (which answers anyone who can send to it), not even with loopback
/// peers allowed.
#[test]
fn admin_addresses_are_refused_as_peers() {
    use turnpike_core::peer_policy::PeerDenied;
    let doc = "[turn]\nallowed_peer_ranges = [\"127.0.0.0/8\", \"::1/128\"]\n";
    let without = Settings::from_toml_str(doc).unwrap();
    let with = Settings::from_toml_str(&format!(
        "{doc}[admin]\nlisten = [\"127.0.0.1:9090\", \"[::1]:9091\"]\nrestund_listen = \"127.0.0.1:33000\"\n"
    ))
    .unwrap();
    let policy = |c: &Settings| c.core_turn(&SECRET, Instant::now()).peer_policy;
    let (without, with) = (policy(&without), policy(&with));
    for peer in [
        "127.0.0.1:9090",
        "[::1]:9091",
        "[::ffff:127.0.0.1]:9090",
        "127.0.0.1:33000",
    ] {
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
        Settings::from_toml_str(text)
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

#[test]
fn drain_and_shutdown_defaults_file_values_overrides_and_errors() {
    let c = Settings::default();
    assert!(c.drain.alternate_servers.is_empty());
    assert!(!c.drain.exit_when_empty);
    assert_eq!(c.shutdown.grace_period, 25);
    let mut c = Settings::from_toml_str(
        "[drain]\nalternate_servers = [\"203.0.113.7:3478\", \"[2001:db8::7]:3478\"]\nexit_when_empty = true\n[shutdown]\ngrace_period = 7200\n",
    )
    .unwrap();
    assert_eq!(
        c.drain.alternate_servers,
        [sa("203.0.113.7:3478"), sa("[2001:db8::7]:3478")]
    );
    assert!(c.drain.exit_when_empty);
    assert_eq!(c.shutdown.grace_period, 7200);
    c.apply(&Overrides {
        drain_alternate_servers: Some(vec![sa("198.51.100.9:3478")]),
        drain_exit_when_empty: Some(false),
        shutdown_grace_period: Some(0),
        ..Overrides::default()
    });
    assert_eq!(c.drain.alternate_servers, [sa("198.51.100.9:3478")]);
    assert!(!c.drain.exit_when_empty);
    assert_eq!(c.shutdown.grace_period, 0);
    c.validate().unwrap();
    for (doc, needle) in [
        (
            "[drain]\nalternate_servers = [\"203.0.113.7:3478\", \"203.0.113.7:3478\"]\n",
            "drain.alternate_servers contains 203.0.113.7:3478 twice; remove the duplicate",
        ),
        (
            "[drain]\nalternate_servers = [\"0.0.0.0:3478\"]\n",
            "drain.alternate_servers contains 0.0.0.0:3478, which no client can be sent to",
        ),
        (
            "[drain]\nalternate_servers = [\"203.0.113.7:0\"]\n",
            "which no client can be sent to",
        ),
        (
            "[drain]\nalternate_servers = [\"[ff02::1]:3478\"]\n",
            "which no client can be sent to",
        ),
        (
            "[shutdown]\ngrace_period = 86401\n",
            "shutdown.grace_period = 86401 is out of range",
        ),
    ] {
        let message = invalid(doc);
        assert!(message.contains(needle), "{doc:?}: {message}");
        assert!(!message.contains('\n'));
    }
}

/// A reload takes the `reload live` settings and keeps the running value
/// of the others, naming them.
#[test]
fn reload_keeps_restart_only_settings_and_names_them() {
    let running = Settings::default();
    let mut new = Settings::default();
    new.stun.listen = vec![sa("127.0.0.1:3479")];
    new.server.workers = 3;
    new.turn.denied_peer_ranges = vec![net("10.0.0.0/8")];
    new.turn.users = vec![user("alice", "secret")];
    new.log.level = "debug".to_owned();
    assert_eq!(
        new.changed_keys(&running),
        [
            "server.workers",
            "log.level",
            "stun.listen",
            "turn.denied_peer_ranges",
            "turn.users"
        ]
    );
    let kept = new.keep_restart_only(&running);
    assert_eq!(kept, ["server.workers", "stun.listen"]);
    assert_eq!(new.stun.listen, running.stun.listen);
    assert_eq!(new.server.workers, 0);
    assert_eq!(new.turn.denied_peer_ranges, vec![net("10.0.0.0/8")]);
    assert_eq!(
        new.changed_keys(&running),
        ["log.level", "turn.denied_peer_ranges", "turn.users"]
    );
    assert!(new.keep_restart_only(&running).is_empty());
}

/// Every setting said to change live is one the reload applies; this is
/// the list `runtime/reload.rs` was written against. A setting moved to
/// `reload live` must be applied there (and added here).
#[test]
fn the_live_settings_are_the_applied_ones() {
    let live: Vec<String> = DECLARED
        .iter()
        .filter(|d| d.reload == Reload::Live)
        .map(|d| format!("{}.{}", d.section, d.key))
        .collect();
    assert_eq!(
        live,
        [
            "server.software",
            "log.level",
            "log.format",
            "stun.response_port",
            "stun.padding",
            "turn.default_lifetime",
            "turn.max_lifetime",
            "turn.nonce_lifetime",
            "turn.user_quota",
            "turn.total_quota",
            "turn.max_bps",
            "turn.user_max_bps",
            "turn.bps_capacity",
            "turn.allowed_peer_ranges",
            "turn.denied_peer_ranges",
            "turn.challenges_per_second",
            "turn.users",
            "turn.secrets",
            "turn.rest_separator",
            "turn.strict_expiry",
            "database.cache_ttl",
            "database.negative_cache_ttl",
            "database.grace_period",
            "database.secrets_refresh",
            "limits.max_connections_per_ip",
            "limits.max_connections",
            "limits.auth_timeout",
            "limits.max_buffered_bytes",
            "limits.max_buffered_bytes_total",
            "limits.max_peer_connections_per_allocation",
            "limits.max_peer_connections",
            "drain.alternate_servers",
            "ice.credential_format",
            "ice.ttl",
            "ice.auth",
            "ice.token_file",
            "ice.user_header",
            "ice.requests_per_second",
            "ice.cors_origins",
            "ice.relay_only",
            "ice.max_urls",
            "discovery.relays",
            "discovery.srv_domain",
            "discovery.name_servers",
            "discovery.interval",
            "discovery.probe_interval",
            "discovery.probe_timeout",
            "discovery.unhealthy_after",
            "discovery.healthy_after",
            "discovery.admin_port",
        ]
    );
}

const README: &str = include_str!("../../../../README.md");

/// The README's "Live reconfiguration" section lists every setting, the
/// live ones from "Changes live" to "Needs a restart" and the others
/// after it.
#[test]
fn readme_lists_what_changes_live_and_what_needs_a_restart() {
    let start = README
        .find("\n## Live reconfiguration\n")
        .expect("README has a Live reconfiguration section");
    let section = &README[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let live_from = section
        .find("Changes live")
        .expect("the section says what changes live");
    let split = section
        .find("Needs a restart")
        .expect("the section says what needs a restart");
    let (live, restart) = (&section[live_from..split], &section[split..]);
    for d in DECLARED {
        let key = format!("`{}.{}`", d.section, d.key);
        let (right, wrong) = match d.reload {
            Reload::Live => (live, restart),
            Reload::Restart => (restart, live),
        };
        assert!(
            right.contains(&key) && !wrong.contains(&key),
            "{key} ({}) is not listed where the README's Live reconfiguration section says",
            d.reload.as_str()
        );
    }
}

/// The file's identity is the SHA-256 of its bytes (what `sha256sum`
/// prints); no file hashes as an empty one.
#[test]
fn settings_source_hashes_the_file_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("turnpike.toml");
    std::fs::write(&path, "[server]\nworkers = 2\n").unwrap();
    let source = SettingsSource {
        path: Some(path.clone()),
        overrides: Overrides::default(),
    };
    let loaded = source.load().unwrap();
    assert_eq!(loaded.settings.server.workers, 2);
    assert_eq!(loaded.file_sha256, sha256_hex(b"[server]\nworkers = 2\n"));
    assert_eq!(
        SettingsSource::default().load().unwrap().file_sha256,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    // The overrides apply on top, as at start; a broken file is an error.
    let source = SettingsSource {
        path: Some(path.clone()),
        overrides: Overrides {
            workers: Some(4),
            ..Overrides::default()
        },
    };
    assert_eq!(source.load().unwrap().settings.server.workers, 4);
    std::fs::write(&path, "[server]\nworkers = \"many\"\n").unwrap();
    assert!(source.load().is_err());
}

/// The example file says of every setting whether a reload applies it,
/// on the line before its key, as the declaration does.
#[test]
fn example_file_says_what_a_reload_applies() {
    for d in DECLARED {
        let lines: Vec<&str> = example_section(d.section).lines().collect();
        let name = format!("{}.{}", d.section, d.key);
        let at = lines
            .iter()
            .position(|l| {
                let l = l.trim_start_matches('#');
                l.starts_with(&format!("{} = ", d.key)) || *l == format!("[[{name}]]")
            })
            .unwrap_or_else(|| panic!("{name} missing from the example"));
        let expected = match d.reload {
            Reload::Live => "# Reload: applied live.",
            Reload::Restart => "# Reload: needs a restart.",
        };
        assert_eq!(
            at.checked_sub(1).map(|i| lines[i]),
            Some(expected),
            "{name} ({}) in the example",
            d.reload.as_str()
        );
    }
}

/// `[fleet]`: a relay registers only with TURN on, its rows outlive a late
/// heartbeat, and its name is a host name.
#[test]
fn fleet_registration_rules() {
    let ok = Settings::from_toml_str(
        "[fleet]\nregister = true\nname = \"turn1.example.com\"\nheartbeat_interval = 2\nexpire_after = 4\n\n[discovery]\ndatabase = true\n",
    )
    .unwrap();
    assert!(ok.fleet.register && ok.discovery.database);
    assert_eq!((ok.fleet.heartbeat_interval, ok.fleet.expire_after), (2, 4));
    assert!(
        invalid("[turn]\nenabled = false\n\n[fleet]\nregister = true\n").starts_with(
            "fleet.register hands this relay out to clients, but turn.enabled is false"
        )
    );
    assert_eq!(
        invalid("[fleet]\nheartbeat_interval = 10\nexpire_after = 15\n"),
        "fleet.expire_after = 15 is less than twice fleet.heartbeat_interval = 10: one late heartbeat would drop the relay; raise expire_after (default 30) or lower heartbeat_interval (default 5)"
    );
    let bad_name = invalid("[fleet]\nname = \"turn 1\"\n");
    assert!(
        bad_name.starts_with("fleet.name = \"turn 1\": "),
        "{bad_name}"
    );
}
