//! The administration commands, what coturn's `turnadmin` does:
//!
//! - `turnpike user add|passwd|remove|list`: long-term users in the
//!   credential database. Only the keys derived from the password
//!   ([`StoredKeys::from_password`]) are stored, never the password.
//! - `turnpike secret add|remove|list`: the shared secrets of time-limited
//!   credentials (TURN REST API, Wire's restund format).
//! - `turnpike credentials`: mints a time-limited username and password from
//!   a shared secret, as an application server would, optionally as an
//!   `RTCIceServer` JSON object for a browser.
//!
//! They work on the database of the configuration (`database.url`,
//! `--database`, `TURNPIKE_DATABASE`) and on one realm: `--realm` given on
//! the command line, else `turn.realm`. The server registers its own realm
//! when it starts, so the configuration's realm is always accepted (and
//! registered by `user add` / `secret add` if the server has not run yet);
//! any other realm must already be in the database, or be added with
//! `--create-realm`, so that a typo does not create users nobody can use.
//!
//! The store is async; each command runs on a small current-thread tokio
//! runtime of its own. Write commands create a missing SQLite file, read
//! commands do not (a mistyped path is an error, not an empty database).
//!
//! Every failure is an [`AdminError`]: one line, classified as a usage
//! error (exit 2: fix the input) or a runtime error (exit 1: the database
//! is unreachable, the user exists, …).

use std::fmt;
use std::future::Future;
use std::io::{self, BufRead, IsTerminal, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use clap::{ArgGroup, Args, Subcommand};
use rand::RngCore;
use turnpike_core::SharedSecret;
use turnpike_core::ephemeral::{self, Mint, Minted};
use turnpike_store::{Schema, SecretRef, Store, StoreError, StoredKeys};

pub use crate::config::CredentialFormat;
use crate::config::{Settings, io_message};
use crate::date;

/// `turnpike user …`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum UserCommand {
    /// Add a user. Without --password or --password-file the password is
    /// read from standard input (one line: `echo PW | turnpike user add
    /// alice`).
    Add(UserAddArgs),
    /// Change a user's password (read like `user add`'s).
    Passwd(UserPasswdArgs),
    /// Remove a user.
    Remove(UserNameArgs),
    /// List the realm's users, one per line.
    List(UserListArgs),
}

/// Where a password comes from: the flag, a file, or standard input.
#[derive(Clone, PartialEq, Eq, Args)]
pub struct PasswordArgs {
    /// The password. Other users of this host can see it in the process
    /// list: prefer --password-file or standard input.
    #[arg(long, value_name = "PASSWORD", conflicts_with = "password_file")]
    pub password: Option<String>,
    /// Read the password from the first line of FILE.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

/// Never shows the password.
impl fmt::Debug for PasswordArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordArgs")
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_file", &self.password_file)
            .finish()
    }
}

/// `turnpike user add`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct UserAddArgs {
    /// The username.
    pub username: String,
    #[command(flatten)]
    pub password: PasswordArgs,
    /// Register --realm in the database if it is not known yet.
    #[arg(long)]
    pub create_realm: bool,
}

/// `turnpike user passwd`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct UserPasswdArgs {
    /// The username.
    pub username: String,
    #[command(flatten)]
    pub password: PasswordArgs,
}

/// `turnpike user remove`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct UserNameArgs {
    /// The username.
    pub username: String,
}

/// `turnpike user list`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct UserListArgs {
    /// List the users of every realm, as REALM<TAB>USERNAME.
    #[arg(long)]
    pub all_realms: bool,
}

/// `turnpike secret …`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum SecretCommand {
    /// Add a shared secret. Without SECRET or --generate it is read from
    /// standard input (one line).
    Add(SecretAddArgs),
    /// Remove a shared secret, by value or by key index.
    Remove(SecretRemoveArgs),
    /// List the realm's secrets: KEY-INDEX<TAB>CREATED<TAB>SECRET.
    List,
}

/// `turnpike secret add`.
#[derive(Clone, PartialEq, Eq, Args)]
pub struct SecretAddArgs {
    /// The secret (visible in the process list: prefer --generate or
    /// standard input).
    #[arg(conflicts_with = "generate")]
    pub secret: Option<String>,
    /// Key index (the `k=` of Wire usernames) [default: the lowest free one]
    #[arg(long, value_name = "N")]
    pub key_index: Option<u32>,
    /// Make a random secret (32 bytes, base64url) and print it.
    #[arg(long)]
    pub generate: bool,
    /// Register --realm in the database if it is not known yet.
    #[arg(long)]
    pub create_realm: bool,
}

/// Never shows the secret.
impl fmt::Debug for SecretAddArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretAddArgs")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("key_index", &self.key_index)
            .field("generate", &self.generate)
            .field("create_realm", &self.create_realm)
            .finish()
    }
}

/// `turnpike secret remove`.
#[derive(Clone, PartialEq, Eq, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["secret", "key_index"])))]
pub struct SecretRemoveArgs {
    /// The secret to remove.
    pub secret: Option<String>,
    /// Remove the secret with this key index instead.
    #[arg(long, value_name = "N")]
    pub key_index: Option<u32>,
}

/// Never shows the secret.
impl fmt::Debug for SecretRemoveArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretRemoveArgs")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("key_index", &self.key_index)
            .finish()
    }
}

/// `turnpike credentials`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
#[command(
    after_help = "The secret is --secret SECRET (the global flag, which replaces turn.secrets) \
    or the last of turn.secrets; when the configuration has none, the newest secret of the \
    realm in the database. --key-index N picks another: the N-th of turn.secrets (from 0), \
    or the database secret with that key index."
)]
pub struct CredentialsArgs {
    /// Use the secret with this key index instead of the newest.
    #[arg(long, value_name = "N")]
    pub key_index: Option<u32>,
    /// Seconds the credential is valid.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 86_400,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub ttl: u32,
    /// User id appended to REST usernames (`EXPIRY:ID`).
    /// (`--user` is the server's own USER:PASSWORD flag.)
    #[arg(long, value_name = "ID")]
    pub user_id: Option<String>,
    /// Username format.
    #[arg(long, value_enum, default_value_t)]
    pub format: CredentialFormat,
    /// Print an RTCIceServer object: {"urls":[…],"username":…,"credential":…}.
    #[arg(long)]
    pub json: bool,
    /// TURN URL for --json; repeatable. [default: turn:HOST:PORT?transport=udp
    /// for the first listen port, HOST the system's host name]
    #[arg(long = "url", value_name = "URL")]
    pub urls: Vec<String>,
}

/// What the admin commands work on.
#[derive(Debug, Clone)]
pub struct Context {
    /// The configuration a server would run with (its `turn.realm` is the
    /// server's realm).
    pub config: Settings,
    /// The realm to work on: `--realm`, or `config.turn.realm`.
    pub realm: String,
}

impl Context {
    /// `realm` from the command line, else the configuration's.
    pub fn new(config: Settings, realm: Option<&str>) -> Self {
        let realm = realm.map_or_else(|| config.turn.realm.clone(), str::to_owned);
        Context { config, realm }
    }

    fn is_server_realm(&self) -> bool {
        self.realm == self.config.turn.realm
    }
}

/// Why an admin command failed. `Display` is one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// Bad input or configuration: fix it (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The database refused or could not be reached (exit 1).
    #[error("{0}")]
    Runtime(String),
}

impl From<StoreError> for AdminError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Invalid(_) => AdminError::Usage(err.to_string()),
            _ => AdminError::Runtime(err.to_string()),
        }
    }
}

/// Runs `turnpike user …`.
pub fn user(command: UserCommand, ctx: &Context) -> Result<(), AdminError> {
    match command {
        UserCommand::Add(args) => {
            let password = read_password(&args.password, &args.username)?;
            let keys = StoredKeys::from_password(&args.username, &ctx.realm, &password);
            drop(password);
            block_on(async {
                let store = open_for_write(ctx, args.create_realm).await?;
                store.add_user(&ctx.realm, &args.username, &keys).await?;
                Ok(())
            })?;
            note(&format!(
                "added user {:?} to realm {:?}",
                args.username, ctx.realm
            ));
        }
        UserCommand::Passwd(args) => {
            let password = read_password(&args.password, &args.username)?;
            let keys = StoredKeys::from_password(&args.username, &ctx.realm, &password);
            drop(password);
            block_on(async {
                let store = open_for_write(ctx, false).await?;
                store
                    .set_user_keys(&ctx.realm, &args.username, &keys)
                    .await?;
                Ok(())
            })?;
            note(&format!(
                "changed the password of user {:?} in realm {:?}",
                args.username, ctx.realm
            ));
        }
        UserCommand::Remove(args) => {
            block_on(async {
                let store = open_for_write(ctx, false).await?;
                store.remove_user(&ctx.realm, &args.username).await?;
                Ok(())
            })?;
            note(&format!(
                "removed user {:?} from realm {:?}",
                args.username, ctx.realm
            ));
        }
        UserCommand::List(args) => {
            let users = block_on(async {
                let store = open(ctx, false).await?;
                if args.all_realms {
                    Ok(store.list_users(None).await?)
                } else {
                    check_known_realm(&store, ctx, None).await?;
                    Ok(store.list_users(Some(&ctx.realm)).await?)
                }
            })?;
            let lines = users.iter().map(|u| {
                if args.all_realms {
                    format!("{}\t{}", u.realm, u.username)
                } else {
                    u.username.clone()
                }
            });
            print_lines(lines);
        }
    }
    Ok(())
}

/// Runs `turnpike secret …`.
pub fn secret(command: SecretCommand, ctx: &Context) -> Result<(), AdminError> {
    match command {
        SecretCommand::Add(args) => {
            let value = match (&args.secret, args.generate) {
                (Some(value), _) => value.clone(),
                (None, true) => generate_secret(),
                (None, false) => read_line_from_stdin(
                    "Secret: ",
                    "secret",
                    "echo SECRET | turnpike secret add, or pass --generate",
                )?,
            };
            let index = block_on(async {
                let store = open_for_write(ctx, args.create_realm).await?;
                Ok(store.add_secret(&ctx.realm, args.key_index, &value).await?)
            })?;
            if args.generate {
                print_lines([value]);
            }
            note(&format!(
                "added a secret with key index {index} to realm {:?}",
                ctx.realm
            ));
        }
        SecretCommand::Remove(args) => {
            let which = match (&args.secret, args.key_index) {
                (_, Some(index)) => SecretRef::Index(index),
                (Some(value), None) => SecretRef::Value(value),
                // clap's required group "which" guarantees one of them.
                (None, None) => {
                    return Err(AdminError::Usage(
                        "give the SECRET to remove or --key-index N".to_owned(),
                    ));
                }
            };
            block_on(async {
                let store = open_for_write(ctx, false).await?;
                store.remove_secret(&ctx.realm, which).await?;
                Ok(())
            })?;
            note(&format!("removed the secret from realm {:?}", ctx.realm));
        }
        SecretCommand::List => {
            let secrets = block_on(async {
                let store = open(ctx, false).await?;
                check_known_realm(&store, ctx, None).await?;
                Ok(store.secrets(&ctx.realm).await?)
            })?;
            print_lines(secrets.iter().map(|s| {
                let created = s
                    .created_at
                    .map_or_else(|| "-".to_owned(), format_unix_time);
                format!("{}\t{created}\t{}", s.key_index, s.value)
            }));
        }
    }
    Ok(())
}

/// Runs `turnpike credentials`.
pub fn credentials(args: &CredentialsArgs, ctx: &Context) -> Result<(), AdminError> {
    if args.user_id.is_some() && args.format == CredentialFormat::Wire {
        return Err(AdminError::Usage(
            "--user-id is part of REST usernames only; leave it out with --format wire".to_owned(),
        ));
    }
    if let Some(id) = &args.user_id
        && (id.is_empty() || id.chars().any(char::is_control))
    {
        return Err(AdminError::Usage(
            "--user-id must be non-empty printable text".to_owned(),
        ));
    }
    let (key_index, secret) = pick_secret(args.key_index, ctx)?;
    let expiry = unix_now() + u64::from(args.ttl);
    let random = ephemeral::wire_random(&mut rand::rng());
    let how = match args.format {
        CredentialFormat::Rest => Mint::Rest {
            user_id: args.user_id.as_deref(),
            separator: ctx.config.turn.rest_separator,
        },
        CredentialFormat::Wire => Mint::Wire { random: &random },
    };
    let secret = SharedSecret {
        key_index,
        value: secret.into_bytes().into_boxed_slice(),
    };
    let Minted { username, password } = ephemeral::mint(how, &secret, expiry);
    if args.json {
        let urls = if args.urls.is_empty() {
            default_urls(&ctx.config)
        } else {
            args.urls.clone()
        };
        if urls.is_empty() {
            // An RTCIceServer needs at least one URL.
            return Err(AdminError::Usage(
                "no default TURN URL for --json: stun.udp is off and TURN over TCP is not served yet; pass --url URL".to_owned(),
            ));
        }
        let server = IceServer {
            urls: &urls,
            username: &username,
            credential: &password,
        };
        // Serialising strings into a String cannot fail.
        let json = serde_json::to_string(&server).unwrap_or_default();
        print_lines([json]);
    } else {
        print_lines([
            format!("username: {username}"),
            format!("password: {password}"),
        ]);
    }
    Ok(())
}

/// A WebRTC `RTCIceServer` dictionary, fields in the order the WebRTC
/// specification lists them.
#[derive(serde::Serialize)]
struct IceServer<'a> {
    urls: &'a [String],
    username: &'a str,
    credential: &'a str,
}

/// The secret to mint with, and its key index: from the configuration
/// (`turn.secrets`, including `--secret`) when it has any, numbered by
/// position as the server numbers them; else from the database.
fn pick_secret(key_index: Option<u32>, ctx: &Context) -> Result<(u32, String), AdminError> {
    let configured = &ctx.config.turn.secrets;
    if !configured.is_empty() {
        let index = match key_index {
            Some(index) => index,
            // Not empty, so the last index exists; the list is far shorter
            // than u32::MAX (anything else fails validation long before).
            None => u32::try_from(configured.len() - 1).unwrap_or(u32::MAX),
        };
        let value = usize::try_from(index)
            .ok()
            .and_then(|i| configured.get(i))
            .ok_or_else(|| {
                AdminError::Usage(format!(
                    "no secret with key index {index} in turn.secrets (or --secret), which numbers its {} from 0; pick one of those or leave --key-index out",
                    configured.len()
                ))
            })?;
        return Ok((index, value.clone()));
    }
    let stored = block_on(async {
        let store = open(ctx, false).await?;
        Ok(store.secrets(&ctx.realm).await?)
    })
    .map_err(|err| {
        AdminError::Runtime(format!(
            "no secret in the configuration, and the database's cannot be read: {err}; pass --secret SECRET or set turn.secrets"
        ))
    })?;
    let chosen = match key_index {
        Some(index) => stored.into_iter().find(|s| s.key_index == index),
        None => stored
            .into_iter()
            .max_by_key(|s| (s.created_at.unwrap_or(i64::MIN), s.key_index)),
    };
    match chosen {
        Some(secret) => Ok((secret.key_index, secret.value)),
        None => Err(AdminError::Runtime(match key_index {
            Some(index) => format!(
                "realm {:?} has no secret with key index {index}; see `turnpike secret list`",
                ctx.realm
            ),
            None => format!(
                "no shared secret for realm {:?}: pass --secret SECRET, set turn.secrets, or add one with `turnpike secret add --generate`",
                ctx.realm
            ),
        })),
    }
}

/// `turn:HOST:PORT?transport=udp` for the first listen port, when
/// `stun.udp` is on.
///
/// UDP only, even with `stun.tcp` on: the server refuses TURN over TCP/TLS
/// (400) until it can relay data back on the stream, and a browser given a
/// TCP URL would only waste an attempt on it. Add `?transport=tcp` here once
/// the TCP/TLS transport carries TURN; `--url` can name any URL meanwhile.
fn default_urls(config: &Settings) -> Vec<String> {
    let port = config.stun.listen.first().map_or(3478, |a| a.port());
    let host = host_name()
        .or_else(|| {
            config
                .stun
                .listen
                .iter()
                .map(|a| a.ip())
                .find(|ip| !ip.is_unspecified())
                .map(|ip| match ip {
                    IpAddr::V4(v4) => v4.to_string(),
                    IpAddr::V6(v6) => format!("[{v6}]"),
                })
        })
        .unwrap_or_else(|| "localhost".to_owned());
    let mut urls = Vec::new();
    if config.stun.udp {
        urls.push(format!("turn:{host}:{port}?transport=udp"));
    }
    urls
}

/// The system's host name, if it has a usable one.
fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes; gethostname
    // writes at most that many and does not keep the pointer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = std::str::from_utf8(&buf[..len]).ok()?.trim();
    let usable = !name.is_empty()
        && name != "(none)"
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    usable.then(|| name.to_owned())
}

/// Opens the database for a write: refuses a coturn database up front, and
/// makes sure the realm is registered (see the module documentation).
async fn open_for_write(ctx: &Context, create_realm: bool) -> Result<Store, AdminError> {
    let store = open(ctx, true).await?;
    if store.schema() == Schema::Coturn {
        return Err(AdminError::Runtime(format!(
            "{} ({})",
            StoreError::ReadOnly,
            store.location().redacted()
        )));
    }
    if ctx.is_server_realm() || create_realm {
        store.ensure_realm(&ctx.realm).await?;
    } else {
        check_known_realm(&store, ctx, Some("; pass --create-realm to add it")).await?;
    }
    Ok(store)
}

/// Fails unless the realm is the server's or in the database. `hint` is
/// appended to the message.
async fn check_known_realm(
    store: &Store,
    ctx: &Context,
    hint: Option<&str>,
) -> Result<(), AdminError> {
    if ctx.is_server_realm() {
        return Ok(());
    }
    let known = store.realms().await?;
    if known.contains(&ctx.realm) {
        return Ok(());
    }
    let known = if known.is_empty() {
        "none".to_owned()
    } else {
        known.join(", ")
    };
    Err(AdminError::Runtime(format!(
        "unknown realm {:?} (known: {known}){}",
        ctx.realm,
        hint.unwrap_or_default()
    )))
}

async fn open(ctx: &Context, create: bool) -> Result<Store, AdminError> {
    let options = ctx
        .config
        .store_options(create)
        .map_err(|err| AdminError::Usage(err.to_string()))?;
    Ok(Store::open(options).await?)
}

/// Runs `future` to completion on a fresh current-thread runtime.
fn block_on<T>(future: impl Future<Output = Result<T, AdminError>>) -> Result<T, AdminError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| {
            AdminError::Runtime(format!(
                "cannot start the async runtime: {}",
                io_message(&err)
            ))
        })?;
    runtime.block_on(future)
}

/// The password of `user add` / `user passwd`.
fn read_password(args: &PasswordArgs, username: &str) -> Result<String, AdminError> {
    let password = if let Some(password) = &args.password {
        password.clone()
    } else if let Some(path) = &args.password_file {
        let text = std::fs::read_to_string(path).map_err(|err| {
            AdminError::Usage(format!(
                "cannot read password file {}: {}",
                path.display(),
                io_message(&err)
            ))
        })?;
        first_line(&text).to_owned()
    } else {
        read_line_from_stdin(
            &format!("Password for {username}: "),
            "password",
            &format!("echo PASSWORD | turnpike user … {username}, or pass --password-file FILE"),
        )?
    };
    if password.is_empty() {
        return Err(AdminError::Usage(format!(
            "the password of user {username:?} is empty; give a password"
        )));
    }
    Ok(password)
}

/// One line of standard input, without its line ending. On a terminal the
/// prompt goes to stderr and the typing is not echoed. `how` says how to
/// give one, for the error when there is none.
fn read_line_from_stdin(prompt: &str, what: &str, how: &str) -> Result<String, AdminError> {
    let stdin = io::stdin();
    let terminal = stdin.is_terminal();
    let mut line = String::new();
    let read = if terminal {
        let mut stderr = io::stderr().lock();
        let _ = write!(stderr, "{prompt}");
        let _ = stderr.flush();
        let result = {
            let _echo_off = EchoOff::new();
            stdin.lock().read_line(&mut line)
        };
        let _ = writeln!(stderr);
        result
    } else {
        stdin.lock().read_line(&mut line)
    };
    match read {
        Ok(0) => Err(AdminError::Usage(format!(
            "no {what} on standard input: pipe one in ({how})"
        ))),
        Ok(_) => Ok(first_line(&line).to_owned()),
        Err(err) => Err(AdminError::Usage(format!(
            "cannot read the {what} from standard input: {}",
            io_message(&err)
        ))),
    }
}

/// `text` up to its first line ending.
fn first_line(text: &str) -> &str {
    let line = text.split('\n').next().unwrap_or_default();
    line.strip_suffix('\r').unwrap_or(line)
}

/// Turns terminal echo off on standard input while alive.
struct EchoOff {
    saved: Option<libc::termios>,
}

impl EchoOff {
    fn new() -> Self {
        // SAFETY: termios is plain data for which all-zero is a valid
        // value; tcgetattr fills it and only reads fd 0.
        let mut term: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `term` is a valid, writable termios.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut term) } != 0 {
            return EchoOff { saved: None };
        }
        let saved = term;
        term.c_lflag &= !libc::ECHO;
        // SAFETY: `term` is a valid termios read from this terminal.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &term) } != 0 {
            return EchoOff { saved: None };
        }
        EchoOff { saved: Some(saved) }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            // SAFETY: `saved` is the terminal's own earlier state.
            unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved) };
        }
    }
}

/// 32 random bytes, base64url without padding (43 characters).
fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    // The thread RNG is a CSPRNG seeded from the operating system.
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Unix seconds as RFC 3339 UTC, `2026-11-21T20:22:05Z`.
fn format_unix_time(secs: i64) -> String {
    date::format_rfc3339(date::from_unix_seconds(secs))
}

/// Writes lines to stdout, ignoring write errors (a closed pipe).
fn print_lines(lines: impl IntoIterator<Item = String>) {
    let mut out = io::stdout().lock();
    for line in lines {
        if writeln!(out, "{line}").is_err() {
            return;
        }
    }
}

/// A confirmation on stderr, so that stdout carries only data.
fn note(message: &str) {
    let _ = writeln!(io::stderr().lock(), "turnpike: {message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times() {
        assert_eq!(format_unix_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix_time(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_unix_time(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_unix_time(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn first_line_strips_line_endings() {
        assert_eq!(first_line("pw\n"), "pw");
        assert_eq!(first_line("pw\r\nmore\n"), "pw");
        assert_eq!(first_line("pw"), "pw");
        assert_eq!(first_line(""), "");
    }

    #[test]
    fn generated_secrets_are_32_random_bytes() {
        let a = generate_secret();
        let b = generate_secret();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&a)
            .unwrap();
        assert_eq!(bytes.len(), 32);
    }

    #[test]
    fn default_urls_are_udp_on_the_first_listen_port() {
        let mut config = Settings::default();
        assert!(config.stun.udp && config.stun.tcp);
        // TCP is served, but TURN over it is refused for now: no TCP URL.
        let urls = default_urls(&config);
        assert_eq!(urls.len(), 1, "{urls:?}");
        assert!(urls[0].starts_with("turn:") && urls[0].ends_with(":3478?transport=udp"));
        config.stun.tcp = false;
        config.stun.listen = vec!["127.0.0.1:5000".parse().unwrap()];
        let urls = default_urls(&config);
        assert_eq!(urls.len(), 1);
        assert!(urls[0].ends_with(":5000?transport=udp"), "{urls:?}");
        config.stun.udp = false;
        config.stun.tcp = true;
        assert!(default_urls(&config).is_empty());
    }

    #[test]
    fn debug_never_shows_passwords_or_secrets() {
        let p = PasswordArgs {
            password: Some("hunter2".into()),
            password_file: None,
        };
        assert!(!format!("{p:?}").contains("hunter2"));
        let s = SecretAddArgs {
            secret: Some("hunter2".into()),
            key_index: None,
            generate: false,
            create_realm: false,
        };
        assert!(!format!("{s:?}").contains("hunter2"));
        let r = SecretRemoveArgs {
            secret: Some("hunter2".into()),
            key_index: None,
        };
        assert!(!format!("{r:?}").contains("hunter2"));
    }
}
