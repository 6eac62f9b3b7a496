//! Test support (cargo feature `testing`): a real PostgreSQL server in a
//! temporary directory, for this crate's tests and for crates that test
//! against a database (`turnpike-store = { …, features = ["testing"] }` as a
//! dev-dependency).
//!
//! [`TestPostgres`] runs Debian's PostgreSQL server binaries (package
//! `postgresql`, which `scripts/test` installs) from
//! `/usr/lib/postgresql/<version>/bin`. Each instance has its own data
//! directory, Unix socket directory and TCP port on 127.0.0.1, so any number
//! of test processes can run side by side (nextest runs every test in its own
//! process). It is tuned for speed, not durability (`fsync=off`).
//!
//! `initdb` refuses to run as root, and tests often run as root in
//! containers: then the server runs as the `postgres` OS user (through
//! `runuser`), and the temporary directory is handed to that user.
//!
//! [`TestPostgres::start_with`] can serve TLS (`ssl=on` with a
//! certificate the test made) and ask TCP clients for their password
//! (SCRAM), for the tests of `sslmode` and channel binding.
//!
//! [`TestPostgres::stop`] and [`TestPostgres::start_again`] make an outage
//! that refuses connections; [`TestPostgres::pause`] and
//! [`TestPostgres::resume`] one that does not (the processes frozen with
//! SIGSTOP).
//!
//! An instance whose test process was killed (so `Drop` never ran) is
//! stopped and removed by the next `TestPostgres::start` on the machine: each
//! directory records its owner's process id.

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The role and database every instance has.
const ROLE: &str = "turnpike";
/// The role's password, so that URLs look like production ones (the test
/// server trusts loopback connections and does not check it).
const PASSWORD: &str = "turnpike-test-password";
const DATABASE: &str = "turnpike";
/// Temporary directories are named with this prefix (see the orphan sweep).
const DIR_PREFIX: &str = "turnpike-pg-";
const OWNER_FILE: &str = "owner.pid";
/// Generous, because a loaded 2-core CI machine runs several at once.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How to start a [`TestPostgres`]; the default is [`TestPostgres::start`]'s
/// server (no TLS, every connection trusted).
#[derive(Clone, Debug, Default)]
pub struct TestPostgresOptions {
    /// Serve TLS (`ssl=on`) with these PEM files.
    pub tls: Option<TestPostgresTls>,
    /// TCP connections must log in with the role's password over SCRAM
    /// (`scram-sha-256` in `pg_hba.conf`), so that channel binding is used
    /// over TLS; the Unix socket the test's psql uses stays trusted.
    pub password_over_tcp: bool,
}

/// The server certificate of a [`TestPostgres`].
#[derive(Clone, Debug)]
pub struct TestPostgresTls {
    /// The certificate, optionally followed by its intermediates.
    pub certificate: PathBuf,
    /// Its private key (unencrypted PEM).
    pub private_key: PathBuf,
}

/// A PostgreSQL server for one test. Stopped (`-m immediate`) and deleted
/// when dropped.
#[derive(Debug)]
pub struct TestPostgres {
    /// `None` only while dropping.
    dir: Option<TempDir>,
    bin: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
    port: u16,
    /// Whether commands run as the `postgres` OS user (we are root).
    as_postgres: bool,
    running: bool,
    /// Stopped with SIGSTOP by [`TestPostgres::pause`]: the processes to
    /// continue.
    paused: Vec<libc::pid_t>,
    /// `ssl=on` with `server.crt` and `server.key` in the directory.
    tls: bool,
}

impl TestPostgres {
    /// Creates and starts a new server with a database `turnpike` owned by
    /// the role `turnpike`.
    ///
    /// # Panics
    ///
    /// If PostgreSQL is not installed, or does not start; the message says
    /// why (with the server's log).
    pub fn start() -> TestPostgres {
        TestPostgres::start_with(TestPostgresOptions::default())
    }

    /// [`TestPostgres::start`] with TLS or password checks.
    ///
    /// # Panics
    ///
    /// As [`TestPostgres::start`], and if the certificate files cannot be
    /// read.
    pub fn start_with(options: TestPostgresOptions) -> TestPostgres {
        let bin = find_bin_dir().unwrap_or_else(|| {
            panic!(
                "PostgreSQL server binaries not found: install Debian package postgresql (scripts/test does)"
            )
        });
        sweep_orphans(&bin);
        let as_postgres = running_as_root();
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .unwrap_or_else(|e| panic!("TestPostgres: cannot create a temporary directory: {e}"));
        let root = dir.path().to_path_buf();
        fs::write(root.join(OWNER_FILE), std::process::id().to_string())
            .unwrap_or_else(|e| panic!("TestPostgres: cannot write {OWNER_FILE}: {e}"));
        let socket_dir = root.join("socket");
        fs::create_dir(&socket_dir)
            .unwrap_or_else(|e| panic!("TestPostgres: cannot create the socket directory: {e}"));
        if let Some(tls) = &options.tls {
            // Copies, so that the server's user owns them (chown below) and
            // the key is private: PostgreSQL refuses a key others can read.
            for (from, to) in [
                (&tls.certificate, "server.crt"),
                (&tls.private_key, "server.key"),
            ] {
                fs::copy(from, root.join(to)).unwrap_or_else(|e| {
                    panic!("TestPostgres: cannot copy {}: {e}", from.display())
                });
                set_mode(&root.join(to), 0o600);
            }
        }
        if as_postgres {
            let out = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&root)
                .output()
                .unwrap_or_else(|e| panic!("TestPostgres: cannot run chown: {e}"));
            check(
                &out,
                "chown -R postgres:postgres (is there a postgres user?)",
            );
        }
        let mut pg = TestPostgres {
            dir: Some(dir),
            data: root.join("data"),
            log: root.join("server.log"),
            socket_dir,
            bin,
            port: 0,
            as_postgres,
            running: false,
            paused: Vec::new(),
            tls: options.tls.is_some(),
        };
        pg.initdb();
        if options.password_over_tcp {
            pg.require_password_over_tcp();
        }
        // The port is picked by binding port 0 and releasing it, so another
        // process may take it before the server binds: then pick again.
        let mut attempts = 0;
        loop {
            attempts += 1;
            pg.port = free_port();
            match pg.pg_ctl_start() {
                Ok(()) => break,
                Err(log) if attempts < 5 && log.contains("could not bind") => continue,
                Err(log) => panic!("TestPostgres: the server did not start:\n{log}"),
            }
        }
        pg.wait_until_ready();
        pg.psql_in(
            "postgres",
            "postgres",
            &format!("CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'"),
        );
        pg.psql_in(
            "postgres",
            "postgres",
            &format!("CREATE DATABASE {DATABASE} OWNER {ROLE}"),
        );
        pg
    }

    /// `postgres://turnpike:…@127.0.0.1:PORT/turnpike`.
    pub fn url(&self) -> String {
        format!(
            "postgres://{ROLE}:{PASSWORD}@127.0.0.1:{}/{DATABASE}",
            self.port
        )
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs SQL in the `turnpike` database as the role `turnpike` (its
    /// owner, the role [`TestPostgres::url`] logs in as, so that tables made
    /// here are usable through the URL) and returns the output (unaligned,
    /// tuples only: one row per line, `|` between columns). For setting up
    /// tables a test needs (coturn's, say) and for looking at what the code
    /// under test wrote.
    ///
    /// # Panics
    ///
    /// If the statement fails.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in(ROLE, DATABASE, sql)
    }

    /// Stops the server (`pg_ctl stop -m fast`), keeping its data and port
    /// for [`TestPostgres::start_again`].
    pub fn stop(&mut self) {
        self.resume();
        let out = self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", "60"]);
        check(&out, "pg_ctl stop");
        self.running = false;
    }

    /// Starts the stopped server again, on the same port with the same data.
    pub fn start_again(&mut self) {
        if let Err(log) = self.pg_ctl_start() {
            panic!("TestPostgres: the server did not start again:\n{log}");
        }
        self.wait_until_ready();
    }

    /// Freezes the server without closing anything: SIGSTOP to the
    /// postmaster, then to its children (the backends and the background
    /// processes). Connections stay open and new ones are still accepted
    /// by the kernel, but nothing answers, as with a hung host or a
    /// network that drops packets. [`TestPostgres::resume`] undoes it
    /// (and so does dropping the instance).
    ///
    /// # Panics
    ///
    /// If the server is not running, or a process cannot be signalled.
    pub fn pause(&mut self) {
        assert!(
            self.running,
            "TestPostgres::pause: the server is not running"
        );
        assert!(
            self.paused.is_empty(),
            "TestPostgres::pause: already paused"
        );
        let postmaster = self.postmaster_pid();
        // The postmaster first, so that it forks no child after the list of
        // its children is read.
        signal(postmaster, libc::SIGSTOP);
        self.paused.push(postmaster);
        for child in children_of(postmaster) {
            // A child that exited meanwhile is no longer there to stop.
            // SAFETY: kill(2) has no memory-safety preconditions.
            if unsafe { libc::kill(child, libc::SIGSTOP) } == 0 {
                self.paused.push(child);
            }
        }
    }

    /// Continues the processes [`TestPostgres::pause`] stopped (children
    /// first, the postmaster last). Does nothing if it is not paused.
    pub fn resume(&mut self) {
        for pid in self.paused.drain(..).rev() {
            // SAFETY: kill(2) has no memory-safety preconditions. A process
            // gone meanwhile (ESRCH) has nothing left to continue.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
    }

    /// The postmaster's process id, from `postmaster.pid` (first line).
    fn postmaster_pid(&self) -> libc::pid_t {
        let file = self.data.join("postmaster.pid");
        let text = fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("TestPostgres: cannot read {}: {e}", file.display()));
        text.lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("TestPostgres: no process id in {}", file.display()))
    }

    /// [`TestPostgres::stop`] then [`TestPostgres::start_again`].
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    fn root(&self) -> &Path {
        // `dir` is only taken in `drop`, after which no method runs.
        self.dir
            .as_ref()
            .map_or(Path::new("/nonexistent"), |d| d.path())
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        };
        // The postgres user may not be allowed into the caller's working
        // directory; the C locale avoids depending on installed locales.
        cmd.current_dir(self.root())
            .env("LC_ALL", "C")
            .env("LANG", "C")
            .stdin(Stdio::null());
        cmd
    }

    fn initdb(&self) {
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(&self.data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .unwrap_or_else(|e| panic!("TestPostgres: cannot run initdb: {e}"));
        check(&out, "initdb");
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        self.command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("TestPostgres: cannot run pg_ctl: {e}"))
    }

    /// Replaces `pg_hba.conf` before the first start (so no reload race):
    /// the socket trusted, TCP with SCRAM.
    fn require_password_over_tcp(&self) {
        let hba = "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n";
        // Written in place: the file keeps its owner (the server's user).
        fs::write(self.data.join("pg_hba.conf"), hba)
            .unwrap_or_else(|e| panic!("TestPostgres: cannot write pg_hba.conf: {e}"));
    }

    /// `pg_ctl start -w` (which waits until the server accepts connections);
    /// on failure, the server log.
    fn pg_ctl_start(&mut self) -> Result<(), String> {
        let mut options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c shared_buffers=16MB -c max_connections=40",
            self.port,
            self.socket_dir.display()
        );
        if self.tls {
            let root = self.root();
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                root.join("server.crt").display(),
                root.join("server.key").display()
            ));
        }
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .output()
            .unwrap_or_else(|e| panic!("TestPostgres: cannot run pg_ctl: {e}"));
        if out.status.success() {
            self.running = true;
            return Ok(());
        }
        // pg_ctl may have left a half-started server behind.
        let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        Err(format!("{}\n{log}", String::from_utf8_lossy(&out.stderr)))
    }

    /// Polls with a real connection until the server answers (pg_ctl's own
    /// wait has already done most of this; a restart can still be finishing
    /// recovery).
    fn wait_until_ready(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let out = self.run_psql("postgres", "postgres", "SELECT 1");
            if out.status.success() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "TestPostgres: no connection within {START_TIMEOUT:?}: {}\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts psql running `sql` in the `turnpike` database as the role
    /// `turnpike`, without waiting for it: for a session that holds a lock
    /// while the code under test runs. Kill the child when done.
    ///
    /// # Panics
    ///
    /// If psql cannot be started.
    pub fn psql_in_background(&self, sql: &str) -> std::process::Child {
        self.psql_command(ROLE, DATABASE, sql)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("TestPostgres: cannot run psql: {e}"))
    }

    fn psql_command(&self, role: &str, database: &str, sql: &str) -> Command {
        // psql is a client: it needs no special OS user, and connects through
        // the instance's own socket directory (trusted: no password).
        let mut command = Command::new(self.bin.join("psql"));
        command
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string(), "-U", role, "-d", database])
            .args(["-c", sql])
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        command
    }

    fn run_psql(&self, role: &str, database: &str, sql: &str) -> Output {
        self.psql_command(role, database, sql)
            .output()
            .unwrap_or_else(|e| panic!("TestPostgres: cannot run psql: {e}"))
    }

    fn psql_in(&self, role: &str, database: &str, sql: &str) -> String {
        let out = self.run_psql(role, database, sql);
        check(&out, &format!("psql -c {sql:?}"));
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        // A stopped process would not act on pg_ctl's shutdown signal.
        self.resume();
        if self.running {
            // Immediate: the data is about to be deleted anyway.
            let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "30"]);
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

fn check(out: &Output, what: &str) {
    if !out.status.success() {
        panic!(
            "TestPostgres: {what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has `initdb`.
fn find_bin_dir() -> Option<PathBuf> {
    let mut best: Option<(Vec<u32>, PathBuf)> = None;
    for entry in fs::read_dir("/usr/lib/postgresql").ok()?.flatten() {
        let name = entry.file_name();
        let Some(version) = name.to_str().and_then(|v| {
            v.split('.')
                .map(|p| p.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()
        }) else {
            continue;
        };
        let bin = entry.path().join("bin");
        if !bin.join("initdb").is_file() || !bin.join("pg_ctl").is_file() {
            continue;
        }
        if best.as_ref().is_none_or(|(v, _)| version > *v) {
            best = Some((version, bin));
        }
    }
    best.map(|(_, bin)| bin)
}

fn signal(pid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    if unsafe { libc::kill(pid, signal) } != 0 {
        panic!(
            "TestPostgres: cannot send signal {signal} to process {pid}: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The processes whose parent is `parent`, from `/proc/<pid>/stat`.
fn children_of(parent: libc::pid_t) -> Vec<libc::pid_t> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: libc::pid_t = entry.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(entry.path().join("stat")).ok()?;
            // "pid (comm) state ppid ...": comm may hold spaces and
            // parentheses, so the fields start after the last ')'.
            let after = &stat[stat.rfind(')')? + 1..];
            let ppid: libc::pid_t = after.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == parent).then_some(pid)
        })
        .collect()
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("TestPostgres: cannot chmod {}: {e}", path.display()));
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions, touches no memory of ours and
    // cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap_or_else(|e| panic!("TestPostgres: cannot bind a port on 127.0.0.1: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("TestPostgres: cannot read the bound port: {e}"))
        .port()
}

/// Stops and deletes instances left behind by test processes that died
/// without dropping them (killed by a timeout, say): leaked servers would
/// otherwise pile up across test runs. An instance is an orphan when the
/// process id in its directory no longer exists; one being set up (no id
/// yet) is left alone.
fn sweep_orphans(bin: &Path) {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let dir = entry.path();
        let Some(owner) = fs::read_to_string(dir.join(OWNER_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        else {
            continue;
        };
        if owner == std::process::id() || Path::new(&format!("/proc/{owner}")).exists() {
            continue;
        }
        let data = dir.join("data");
        if data.join("postmaster.pid").exists() {
            let mut cmd = if running_as_root() {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", "postgres", "--"]).arg(bin.join("pg_ctl"));
                cmd
            } else {
                Command::new(bin.join("pg_ctl"))
            };
            let _ = cmd
                .arg("-D")
                .arg(&data)
                .args(["stop", "-m", "immediate", "-w", "-t", "10"])
                .current_dir("/")
                .stdin(Stdio::null())
                .output();
        }
        let _ = fs::remove_dir_all(&dir);
    }
}
