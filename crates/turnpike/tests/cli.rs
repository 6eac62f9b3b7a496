//! End-to-end tests of the `turnpike` binary's command line: exit statuses,
//! stdout/stderr contents, and environment-variable overrides.
//!
//! Each run gets a cleared environment (so a developer's `RUST_LOG` or
//! `TURNPIKE_*` cannot change the outcome) and a time limit. None of these
//! commands binds a socket: `serve` is only run with configurations that
//! fail validation first.

mod support;

use std::path::Path;

use support::cli::run;

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("turnpike.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn version_subcommand_prints_the_crate_version() {
    let out = run(&["version"], &[]);
    assert_eq!(out.status, 0);
    assert_eq!(
        out.stdout,
        format!("turnpike {}\n", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(out.stderr, "");
}

#[test]
fn version_works_even_with_a_broken_config() {
    let out = run(
        &["version"],
        &[("TURNPIKE_CONFIG", "/nonexistent/turnpike.toml")],
    );
    assert_eq!(out.status, 0);
    assert!(out.stdout.starts_with("turnpike "));
}

#[test]
fn check_config_accepts_a_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "[server]\nworkers = 2\n[stun]\nlisten = [\"127.0.0.1:3478\"]\n",
    );
    let out = run(&["--config", &path, "check-config"], &[]);
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{:?}", out.stdout);
    assert!(
        lines[0].starts_with("turnpike: configuration OK ("),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains(&path));
    assert!(lines[0].contains("listen 127.0.0.1:3478"), "{}", lines[0]);
    assert!(lines[0].contains("workers 2"), "{}", lines[0]);
    assert_eq!(out.stderr, "");
}

#[test]
fn check_config_accepts_the_example_file() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../turnpike.example.toml");
    let out = run(&["check-config", "-c", example], &[]);
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
}

#[test]
fn check_config_without_a_file_uses_defaults() {
    let out = run(&["check-config"], &[]);
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    assert!(out.stdout.contains("(built-in defaults)"), "{}", out.stdout);
    assert!(out.stdout.contains("listen 0.0.0.0:3478 [::]:3478"));
}

#[test]
fn unknown_key_is_one_line_with_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "[server]\nworkers = 1\n[stun]\nlisen = []\n");
    let out = run(&["check-config", "--config", &path], &[]);
    assert_eq!(out.status, 2);
    let line = out.single_error_line();
    assert!(
        line.contains(&format!("{path} line 4: unknown key `lisen` in [stun]")),
        "{line}"
    );
    assert!(line.contains("listen"), "{line}");
    assert_eq!(out.stdout, "");
}

#[test]
fn missing_file_is_one_line() {
    let out = run(
        &["check-config", "--config", "/nonexistent/turnpike.toml"],
        &[],
    );
    assert_eq!(out.status, 2);
    let line = out.single_error_line();
    assert_eq!(
        line,
        "turnpike: error: cannot read config file /nonexistent/turnpike.toml: No such file or directory (pass an existing file with --config or omit it to run with defaults)"
    );
}

#[test]
fn config_path_from_environment() {
    let out = run(
        &["check-config"],
        &[("TURNPIKE_CONFIG", "/nonexistent/from-env.toml")],
    );
    assert_eq!(out.status, 2);
    assert!(
        out.single_error_line()
            .contains("/nonexistent/from-env.toml")
    );
}

#[test]
fn environment_overrides_the_file_and_flags_override_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "[server]\nworkers = 2\nsoftware = \"from-file\"\n[stun]\nlisten = [\"127.0.0.1:3478\"]\n",
    );
    let env = [
        ("TURNPIKE_WORKERS", "7"),
        ("TURNPIKE_LISTEN", "127.0.0.1:4000,127.0.0.2:4000"),
        ("TURNPIKE_TCP", "false"),
    ];
    let out = run(&["check-config", "-c", &path], &env);
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    let s = out.stdout;
    assert!(s.contains("workers 7"), "{s}");
    assert!(
        s.contains("listen 127.0.0.1:4000 127.0.0.2:4000 (udp,"),
        "{s}"
    );
    assert!(s.contains("software \"from-file\""), "{s}");

    // A flag beats its environment variable, including --tcp over
    // TURNPIKE_TCP=false and --no-software over the file.
    let out = run(
        &[
            "check-config",
            "-c",
            &path,
            "--workers",
            "3",
            "--tcp",
            "--no-software",
        ],
        &env,
    );
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    let s = out.stdout;
    assert!(s.contains("workers 3"), "{s}");
    assert!(s.contains("(udp+tcp,"), "{s}");
    assert!(s.contains("software off"), "{s}");

    // --no-X beats TURNPIKE_X (it used to be refused as a conflict).
    let out = run(
        &["check-config", "-c", &path, "--no-tcp", "--no-software"],
        &[("TURNPIKE_TCP", "true"), ("TURNPIKE_SOFTWARE", "from-env")],
    );
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    let s = out.stdout;
    assert!(s.contains("(udp,"), "{s}");
    assert!(s.contains("software off"), "{s}");
}

#[test]
fn bad_environment_value_names_the_variable() {
    let out = run(&["check-config"], &[("TURNPIKE_WORKERS", "lots")]);
    assert_eq!(out.status, 2);
    let line = out.single_error_line();
    assert!(line.contains("TURNPIKE_WORKERS"), "{line}");
    assert!(line.contains("lots"), "{line}");
}

#[test]
fn bad_flag_value_is_one_line() {
    let out = run(&["check-config", "--listen", "localhost:3478"], &[]);
    assert_eq!(out.status, 2);
    let line = out.single_error_line();
    assert!(line.contains("not an IP:PORT"), "{line}");
    assert!(!line.contains("environment"), "{line}");
}

#[test]
fn unknown_flag_is_one_line_with_a_tip() {
    let out = run(&["--lisen", "127.0.0.1:3478"], &[]);
    assert_eq!(out.status, 2);
    let line = out.single_error_line();
    assert!(line.contains("--lisen"), "{line}");
    assert!(line.contains("--listen"), "{line}");
}

#[test]
fn validation_error_is_one_line() {
    let out = run(&["check-config", "--alternate-ip", "192.0.2.2"], &[]);
    assert_eq!(out.status, 2);
    let line = out.single_error_line();
    assert!(line.contains("wildcard"), "{line}");
}

#[test]
fn invalid_rust_log_is_a_config_error() {
    let out = run(&["check-config"], &[("RUST_LOG", "info,turnpike=loud")]);
    assert_eq!(out.status, 2);
    assert!(out.single_error_line().contains("RUST_LOG"));
}

/// `serve` (the default command) must stop at a bad configuration before
/// binding anything.
#[test]
fn serve_with_a_bad_config_exits_2_without_starting() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "[server]\nworkers = \"four\"\n");
    for args in [
        &["-c", path.as_str()][..],
        &["serve", "-c", path.as_str()][..],
    ] {
        let out = run(args, &[]);
        assert_eq!(out.status, 2, "{args:?}");
        let line = out.single_error_line();
        assert!(line.contains("line 2"), "{line}");
        assert!(line.contains("`workers`"), "{line}");
    }
}

#[test]
fn help_goes_to_stdout_and_exits_0() {
    let out = run(&["--help"], &[]);
    assert_eq!(out.status, 0);
    assert!(out.stdout.contains("check-config"));
    assert!(out.stdout.contains("TURNPIKE_LISTEN"));
}

#[test]
fn check_config_summarises_turn() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "[server]\nworkers = 2\n[stun]\nlisten = [\"127.0.0.1:3478\"]\n[turn]\nrealm = \"example.org\"\nrelay_ips = [\"127.0.0.1\", \"::1\"]\nmin_port = 61000\nmax_port = 65000\n[[turn.users]]\nusername = \"alice\"\npassword = \"wonderland\"\n[[turn.users]]\nusername = \"bob\"\npassword = \"builder\"\n",
    );
    let out = run(&["check-config", "-c", &path], &[]);
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{:?}", out.stdout);
    assert!(
        lines[0].ends_with(
            "turn on (realm \"example.org\", 2 users, relay ips 127.0.0.1 ::1, ports 61000-65000)"
        ),
        "{}",
        lines[0]
    );
    assert!(!out.stdout.contains("wonderland") && !out.stdout.contains("builder"));

    let out = run(&["check-config", "-c", &path, "--no-turn"], &[]);
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    assert!(
        out.stdout.trim_end().ends_with("; turn off"),
        "{}",
        out.stdout
    );
}

/// Users from TURNPIKE_USERS replace the file's list, and --user replaces
/// TURNPIKE_USERS.
#[test]
fn users_from_environment_and_flags_replace_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "[[turn.users]]\nusername = \"alice\"\npassword = \"from-file\"\n",
    );
    let env = [("TURNPIKE_USERS", "bob:pw1,carol:pw:2,dave:pw3")];
    let out = run(&["check-config", "-c", &path], &env);
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    assert!(out.stdout.contains("3 users"), "{}", out.stdout);

    let out = run(&["check-config", "-c", &path, "--user", "erin:pw4"], &env);
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    assert!(out.stdout.contains("1 user,"), "{}", out.stdout);

    // The file's user is gone: a flag user of the same name is no duplicate.
    let out = run(&["check-config", "-c", &path, "--user", "alice:other"], &[]);
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);

    // Duplicates among the replacement users are still caught.
    let out = run(&["check-config"], &[("TURNPIKE_USERS", "bob:x,bob:y")]);
    assert_eq!(out.status, 2);
    let line = out.single_error_line();
    assert!(line.contains("duplicate user \"bob\""), "{line}");
}

#[test]
fn turn_settings_from_environment() {
    let env = [
        ("TURNPIKE_REALM", "env.example"),
        ("TURNPIKE_RELAY_IPS", "127.0.0.1,::1"),
        ("TURNPIKE_MIN_PORT", "50000"),
        ("TURNPIKE_MAX_PORT", "50999"),
        ("TURNPIKE_ALLOWED_PEER_RANGES", "127.0.0.0/8,::1"),
        ("TURNPIKE_DENIED_PEER_RANGES", "10.0.0.0/8"),
        ("TURNPIKE_EXTERNAL_IPS", "203.0.113.5/127.0.0.1"),
        ("TURNPIKE_DEFAULT_LIFETIME", "60"),
        ("TURNPIKE_MAX_LIFETIME", "120"),
        ("TURNPIKE_NONCE_LIFETIME", "30"),
        ("TURNPIKE_USER_QUOTA", "1"),
        ("TURNPIKE_TOTAL_QUOTA", "2"),
        ("TURNPIKE_CHALLENGES_PER_SECOND", "3"),
    ];
    let out = run(&["check-config", "--workers", "2"], &env);
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    assert!(
        out.stdout.contains(
            "turn on (realm \"env.example\", 0 users, relay ips 127.0.0.1 (external 203.0.113.5) ::1, ports 50000-50999)"
        ),
        "{}",
        out.stdout
    );
    let out = run(&["check-config"], &[("TURNPIKE_TURN", "false")]);
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    assert!(
        out.stdout.trim_end().ends_with("turn off"),
        "{}",
        out.stdout
    );
}

#[test]
fn turn_validation_errors_are_one_line() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--relay-ip", "0.0.0.0"],
            "turn.relay_ips: 0.0.0.0 is a wildcard; give the specific IP",
        ),
        (&["--min-port", "80"], "turn.min_port = 80 is below 1024"),
        (
            &[
                "--relay-ip",
                "10.0.0.5",
                "--external-ip",
                "203.0.113.5/10.0.0.9",
            ],
            "PRIVATE 10.0.0.9 (in \"203.0.113.5/10.0.0.9\") is not one of turn.relay_ips",
        ),
        (
            &["--default-lifetime", "7200"],
            "turn.default_lifetime = 7200 is above turn.max_lifetime = 3600",
        ),
        (&["--realm="], "turn.realm is empty"),
    ];
    for (args, needle) in cases {
        let mut full = vec!["check-config"];
        full.extend_from_slice(args);
        let out = run(&full, &[]);
        assert_eq!(out.status, 2, "{args:?}");
        let line = out.single_error_line();
        assert!(line.contains(needle), "{args:?}: {line}");
    }
    // A bad CIDR is caught by the flag parser, and in the file with its line.
    let out = run(
        &["check-config", "--allowed-peer-range", "10.0.0.0/33"],
        &[],
    );
    assert_eq!(out.status, 2);
    assert!(out.single_error_line().contains("not a CIDR range"));
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "[turn]\ndenied_peer_ranges = [\"10.0.0.1/8\"]\n",
    );
    let out = run(&["check-config", "-c", &path], &[]);
    assert_eq!(out.status, 2);
    let line = out.single_error_line();
    assert!(line.contains("line 2"), "{line}");
    assert!(
        line.contains("write the network address 10.0.0.0/8"),
        "{line}"
    );
}

/// A rejected user value may contain a password: the error names the
/// variable but never repeats the value.
#[test]
fn bad_user_value_never_prints_the_password() {
    let out = run(&["check-config"], &[("TURNPIKE_USERS", "s3cr3t-no-colon")]);
    assert_eq!(out.status, 2);
    let line = out.single_error_line();
    assert!(line.contains("TURNPIKE_USERS"), "{line}");
    assert!(line.contains("USER:PASSWORD"), "{line}");
    assert!(!line.contains("s3cr3t"), "{line}");

    let out = run(&["check-config", "--user", ":s3cr3t"], &[]);
    assert_eq!(out.status, 2);
    let line = out.single_error_line();
    assert!(!line.contains("s3cr3t"), "{line}");
    assert!(!line.contains("environment"), "{line}");
}

#[test]
fn help_never_prints_the_users_variable() {
    let out = run(&["--help"], &[("TURNPIKE_USERS", "alice:s3cr3t")]);
    assert_eq!(out.status, 0);
    assert!(out.stdout.contains("TURNPIKE_USERS"), "{}", out.stdout);
    assert!(out.stdout.contains("--user <USER:PASSWORD>"));
    assert!(!out.stdout.contains("s3cr3t"), "{}", out.stdout);
    // Other variables' values are shown, as clap does by default.
    let out = run(&["--help"], &[("TURNPIKE_REALM", "shown.example")]);
    assert!(out.stdout.contains("shown.example"));
}

/// The summary names the database, never with its password.
#[test]
fn check_config_summarises_the_database() {
    let out = run(&["check-config"], &[]);
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    assert!(
        out.stdout
            .contains("; database /var/lib/turnpike/turnpike.db (turnpike schema); turn on"),
        "{}",
        out.stdout
    );
    let env = [
        (
            "TURNPIKE_DATABASE",
            "postgres://turnpike:hunter2@db.example:5432/turn",
        ),
        ("TURNPIKE_DATABASE_SCHEMA", "coturn"),
    ];
    let out = run(&["check-config"], &env);
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    assert!(
        out.stdout.contains(
            "; database postgres://turnpike:***@db.example:5432/turn (coturn schema, read-only);"
        ),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("hunter2"), "{}", out.stdout);
    let out = run(&["check-config", "--data-dir", "/srv/tp"], &[]);
    assert!(
        out.stdout
            .contains("; database /srv/tp/turnpike.db (turnpike schema);"),
        "{}",
        out.stdout
    );
}

/// Every new key is read from its environment variable and its flag: a
/// good value is accepted (and shows in the summary where it is shown), an
/// out-of-range one is refused by name, and a flag beats its variable.
#[test]
fn database_and_secret_settings_from_environment_and_flags() {
    let env = [
        ("TURNPIKE_SECRETS", "sec-one,sec-two"),
        ("TURNPIKE_REST_SEPARATOR", "-"),
        ("TURNPIKE_STRICT_EXPIRY", "true"),
        ("TURNPIKE_DATA_DIR", "/srv/env"),
        ("TURNPIKE_DATABASE_SCHEMA", "turnpike"),
        ("TURNPIKE_DATABASE_POOL_SIZE", "64"),
        ("TURNPIKE_DATABASE_TIMEOUT", "60"),
        ("TURNPIKE_CACHE_TTL", "86400"),
        ("TURNPIKE_NEGATIVE_CACHE_TTL", "0"),
        ("TURNPIKE_GRACE_PERIOD", "604800"),
        ("TURNPIKE_SECRETS_REFRESH", "3600"),
    ];
    let out = run(&["check-config"], &env);
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    let s = &out.stdout;
    assert!(s.contains("database /srv/env/turnpike.db"), "{s}");
    assert!(s.contains("0 users, 2 secrets, strict expiry,"), "{s}");
    assert!(!s.contains("sec-"), "{s}");
    let out = run(
        &[
            "check-config",
            "--secret",
            "x",
            "--no-strict-expiry",
            "--data-dir",
            "/srv/flag",
        ],
        &env,
    );
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    let s = &out.stdout;
    assert!(s.contains("database /srv/flag/turnpike.db"), "{s}");
    assert!(s.contains("0 users, 1 secret, relay"), "{s}");

    // Out of range, from the environment and from the flag.
    let cases = [
        (
            "TURNPIKE_DATABASE_POOL_SIZE",
            "--database-pool-size",
            "65",
            "database.pool_size = 65 is out of range; use 1 to 64",
        ),
        (
            "TURNPIKE_DATABASE_TIMEOUT",
            "--database-timeout",
            "0",
            "database.timeout = 0 is out of range; use 1 to 60",
        ),
        (
            "TURNPIKE_CACHE_TTL",
            "--cache-ttl",
            "86401",
            "database.cache_ttl = 86401 is out of range; use 1 to 86400",
        ),
        (
            "TURNPIKE_NEGATIVE_CACHE_TTL",
            "--negative-cache-ttl",
            "3601",
            "database.negative_cache_ttl = 3601 is out of range; use 0 to 3600",
        ),
        (
            "TURNPIKE_GRACE_PERIOD",
            "--grace-period",
            "604801",
            "database.grace_period = 604801 is out of range; use 0 to 604800",
        ),
        (
            "TURNPIKE_SECRETS_REFRESH",
            "--secrets-refresh",
            "0",
            "database.secrets_refresh = 0 is out of range; use 1 to 3600",
        ),
        (
            "TURNPIKE_REST_SEPARATOR",
            "--rest-separator",
            "5",
            "turn.rest_separator '5' cannot separate",
        ),
        (
            "TURNPIKE_DATABASE",
            "--database",
            "ftp://x",
            "database.url: unsupported database URL scheme \"ftp\"",
        ),
    ];
    for (var, flag, value, needle) in cases {
        let out = run(&["check-config"], &[(var, value)]);
        assert_eq!(out.status, 2, "{var}");
        let line = out.single_error_line();
        assert!(line.contains(needle), "{var}: {line}");
        let out = run(&["check-config", flag, value], &[]);
        assert_eq!(out.status, 2, "{flag}");
        assert!(out.single_error_line().contains(needle), "{flag}");
    }
    // Parse errors name the variable.
    for (var, value, needle) in [
        ("TURNPIKE_DATABASE_SCHEMA", "mysql", "mysql"),
        ("TURNPIKE_STRICT_EXPIRY", "maybe", "maybe"),
        ("TURNPIKE_REST_SEPARATOR", "::", "not one character"),
        ("TURNPIKE_DATABASE_TIMEOUT", "soon", "soon"),
    ] {
        let out = run(&["check-config"], &[(var, value)]);
        assert_eq!(out.status, 2, "{var}");
        let line = out.single_error_line();
        assert!(line.contains(needle) && line.contains(var), "{var}: {line}");
    }
}

/// Secrets and database URLs are never printed: not in validation errors,
/// not in --help.
#[test]
fn secrets_are_never_printed() {
    let out = run(
        &["check-config"],
        &[("TURNPIKE_SECRETS", "s3cr3t,other,s3cr3t")],
    );
    assert_eq!(out.status, 2);
    let line = out.single_error_line();
    assert!(
        line.contains("turn.secrets entries 0 and 2 are the same secret"),
        "{line}"
    );
    assert!(!line.contains("s3cr3t"), "{line}");
    let out = run(
        &["--help"],
        &[
            ("TURNPIKE_SECRETS", "s3cr3t"),
            ("TURNPIKE_DATABASE", "postgres://u:hunter2@h/db"),
        ],
    );
    assert_eq!(out.status, 0);
    assert!(out.stdout.contains("TURNPIKE_SECRETS") && out.stdout.contains("TURNPIKE_DATABASE"));
    assert!(
        !out.stdout.contains("s3cr3t") && !out.stdout.contains("hunter2"),
        "{}",
        out.stdout
    );
}

#[test]
fn help_lists_the_admin_commands() {
    let out = run(&["--help"], &[]);
    assert_eq!(out.status, 0);
    for command in ["user", "secret", "credentials"] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.trim_start().starts_with(command)),
            "{command} missing from --help"
        );
    }
    let out = run(&["user", "add", "--help"], &[]);
    assert_eq!(out.status, 0);
    assert!(out.stdout.contains("--password-file"), "{}", out.stdout);
    assert!(out.stdout.contains("--create-realm"), "{}", out.stdout);
}

/// The [tls] and [limits] keys from their environment variables and flags:
/// good values show in the summary, out-of-range ones are refused by name
/// (from the variable and from the flag), a flag beats its variable, and
/// "none" empties a listener list.
#[test]
fn tls_and_limits_settings_from_environment_and_flags() {
    let pki = support::pki::Pki::new();
    let leaf = pki.leaf("a.turn.test", support::pki::KeyType::EcP256Sec1, 10);
    let chain = leaf.chain.to_str().unwrap();
    let key = leaf.key.to_str().unwrap();
    let env = [
        ("TURNPIKE_TLS_CERTIFICATE", chain),
        ("TURNPIKE_TLS_PRIVATE_KEY", key),
        ("TURNPIKE_TLS_LISTEN", "127.0.0.1:5349,[::1]:5349"),
        ("TURNPIKE_DTLS_LISTEN", "none"),
        ("TURNPIKE_TLS_MIN_VERSION", "1.3"),
        ("TURNPIKE_TLS_RELOAD_INTERVAL", "0"),
        ("TURNPIKE_MAX_CONNECTIONS_PER_IP", "0"),
        ("TURNPIKE_MAX_HANDSHAKES", "1000000"),
        ("TURNPIKE_HANDSHAKE_TIMEOUT", "3600"),
        ("TURNPIKE_AUTH_TIMEOUT", "1"),
        ("TURNPIKE_IDLE_TIMEOUT", "3600"),
        ("TURNPIKE_MAX_BUFFERED_BYTES", "67108864"),
        ("TURNPIKE_MAX_PEER_CONNECTIONS_PER_ALLOCATION", "1024"),
        ("TURNPIKE_MAX_PEER_CONNECTIONS", "0"),
    ];
    let out = run(&["check-config"], &env);
    let lines = out.ok_lines();
    assert!(
        lines[0].contains(&format!(
            "; tls on (certificate {chain}, key {key}, tls 127.0.0.1:5349 [::1]:5349, dtls none, min version 1.3, reload on SIGHUP);"
        )),
        "{}",
        lines[0]
    );
    let out = run(
        &[
            "check-config",
            "--dtls-listen",
            "127.0.0.1:5350",
            "--tls-listen=none",
            "--tls-min-version=1.2",
            "--tls-reload-interval=60",
        ],
        &env,
    );
    let lines = out.ok_lines();
    assert!(
        lines[0].contains("tls none, dtls 127.0.0.1:5350, min version 1.2, reload on change (checked every 60 s) or SIGHUP);"),
        "{}",
        lines[0]
    );

    // Out of range, from the environment and from the flag.
    let cases = [
        (
            "TURNPIKE_MAX_HANDSHAKES",
            "--max-handshakes",
            "0",
            "limits.max_handshakes = 0 is out of range; use 1 to 1000000 handshakes",
        ),
        (
            "TURNPIKE_HANDSHAKE_TIMEOUT",
            "--handshake-timeout",
            "0",
            "limits.handshake_timeout = 0 is out of range; use 1 to 3600 seconds",
        ),
        (
            "TURNPIKE_AUTH_TIMEOUT",
            "--auth-timeout",
            "3601",
            "limits.auth_timeout = 3601 is out of range",
        ),
        (
            "TURNPIKE_IDLE_TIMEOUT",
            "--idle-timeout",
            "0",
            "limits.idle_timeout = 0 is out of range",
        ),
        (
            "TURNPIKE_MAX_BUFFERED_BYTES",
            "--max-buffered-bytes",
            "1024",
            "limits.max_buffered_bytes = 1024 is out of range; use 16384 to 67108864 bytes",
        ),
        (
            "TURNPIKE_MAX_PEER_CONNECTIONS_PER_ALLOCATION",
            "--max-peer-connections-per-allocation",
            "0",
            "limits.max_peer_connections_per_allocation = 0 is out of range; use 1 to 1024 connections",
        ),
        (
            "TURNPIKE_TLS_RELOAD_INTERVAL",
            "--tls-reload-interval",
            "86401",
            "tls.reload_interval = 86401 is out of range",
        ),
        (
            "TURNPIKE_TLS_PRIVATE_KEY",
            "--tls-private-key",
            "/k.pem",
            "tls.private_key is set but tls.certificate is not",
        ),
    ];
    for (var, flag, value, needle) in cases {
        let out = run(&["check-config"], &[(var, value)]);
        assert!(out.error_line(2).contains(needle), "{var}: {}", out.stderr);
        let out = run(&["check-config", flag, value], &[]);
        assert!(out.error_line(2).contains(needle), "{flag}: {}", out.stderr);
    }
    // A TLS listener on a STUN one: refused before the files are read.
    let out = run(
        &[
            "check-config",
            "--tls-certificate",
            "/nonexistent.pem",
            "--tls-listen",
            "[::]:3478",
        ],
        &[],
    );
    assert!(
        out.error_line(2).contains("tls.listen address [::]:3478 collides with the STUN listener [::]:3478 (both TCP, port 3478)"),
        "{}",
        out.stderr
    );
    // Parse errors name the variable.
    for (var, value, needle) in [
        ("TURNPIKE_TLS_MIN_VERSION", "1.1", "1.1"),
        (
            "TURNPIKE_TLS_LISTEN",
            "localhost:5349",
            "or none for no listener",
        ),
        ("TURNPIKE_DTLS_LISTEN", "5349", "5349"),
        ("TURNPIKE_MAX_HANDSHAKES", "many", "many"),
        ("TURNPIKE_MAX_PEER_CONNECTIONS", "-1", "-1"),
    ] {
        let out = run(&["check-config"], &[(var, value)]);
        let line = out.error_line(2);
        assert!(line.contains(needle) && line.contains(var), "{var}: {line}");
    }
}
