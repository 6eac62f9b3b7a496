//! Command-line interface: `turnpike [FLAGS] [serve|check-config|version|…]`.
//!
//! Every setting has a flag and a `TURNPIKE_*` environment variable
//! (clap's `env` feature; a flag beats its variable), made from its
//! declaration in [`crate::config::settings`]: this module only adds
//! `--config`, the subcommands and the error messages. The values are
//! collected into [`Overrides`] and laid over the config file by
//! [`Settings::resolve`](crate::config::Settings::resolve), giving
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
use std::path::{Path, PathBuf};

use clap::builder::{BoolishValueParser, TypedValueParser};
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::Overrides;

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
    /// The settings' flags and `--config`, valid before or after the
    /// subcommand.
    #[command(flatten)]
    pub settings: SettingFlags,
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
    /// Serve the ICE-server configuration endpoint alone, without a relay:
    /// the relays of [discovery] with fresh credentials ([ice]), on
    /// admin.listen, for a fleet's front end.
    IceConfig,
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
    /// Ask the running server (its admin endpoint: the first admin.listen
    /// address, with admin.token_file) how it is: readiness, workers,
    /// listeners, allocations, database, certificate.
    Status(crate::admin_client::StatusArgs),
    /// List the running server's live allocations, all or one user's.
    Allocations(crate::admin_client::AllocationsArgs),
    /// End allocations of the running server: one (--id) or all of a
    /// user's (--username), who then cannot allocate for
    /// database.cache_ttl.
    Kick(crate::admin_client::KickArgs),
    /// Start draining the running server: new allocations are refused
    /// (sent to drain.alternate_servers, else 508), the live ones keep
    /// working, /readyz fails. With --wait, return once the last one ended.
    Drain(crate::admin_client::DrainArgs),
    /// Stop draining the running server: new allocations are made again.
    Undrain(crate::admin_client::UndrainArgs),
    /// Make the running server read its configuration file again and
    /// apply what can change while it runs (as SIGHUP does); print what
    /// it did. Exit 2 if the file was refused.
    Reload(crate::admin_client::ReloadArgs),
}

/// The flags of every setting (from the declarations, see
/// [`crate::config::settings`]) and `--config`. The flags are `global`, so
/// they work before and after the subcommand.
#[derive(Debug, Clone, Default)]
pub struct SettingFlags {
    /// Configuration file (TOML): `--config` / `TURNPIKE_CONFIG`.
    pub config: Option<PathBuf>,
    /// The settings' flags and variables that were given.
    pub overrides: Overrides,
}

impl SettingFlags {
    /// `--config`, which is not a setting: it says where the settings are.
    fn config_arg() -> Arg {
        Arg::new("config")
            .short('c')
            .long("config")
            .global(true)
            .env("TURNPIKE_CONFIG")
            .value_name("PATH")
            .value_parser(clap::value_parser!(PathBuf))
            .help_heading("Configuration")
            .help("Configuration file (TOML). Without it the built-in defaults are used.")
    }
}

impl Args for SettingFlags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.arg(SettingFlags::config_arg()).args(Overrides::flags())
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        SettingFlags::augment_args(cmd)
    }
}

impl FromArgMatches for SettingFlags {
    /// Without the command line itself, a `--no-X` given together with
    /// `--X` wins; [`Cli::parse_from_args`] settles such pairs by their
    /// order.
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(SettingFlags {
            config: matches.get_one::<PathBuf>("config").cloned(),
            overrides: Overrides::from_flags(matches, &[]),
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = SettingFlags::from_arg_matches(matches)?;
        Ok(())
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
                cli.settings.overrides = Overrides::from_flags(&matches, &args);
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
        self.settings.overrides.clone()
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
            .overrides
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
    // `credentials --user ID` (or `allocations`, `kick`) reads naturally
    // but --user is the server's USER:PASSWORD flag.
    if let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg)
        && arg.starts_with("--user ")
    {
        if args.iter().any(|a| a == "credentials") {
            message.push_str("; `turnpike credentials` takes the user id as --user-id ID");
        } else if let Some(command) = args.iter().find(|a| *a == "allocations" || *a == "kick") {
            message.push_str(&format!(
                "; `turnpike {}` takes the user as --username NAME",
                command.to_string_lossy()
            ));
        }
    }
    // The flag of a setting that was removed.
    if err.kind() == ErrorKind::UnknownArgument
        && let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg)
        && arg
            .split('=')
            .next()
            .is_some_and(|flag| flag.ends_with("-admin-allow-remote"))
    {
        message.push_str("; admin.allow_remote was removed: an admin.listen address other than loopback now needs admin.token_file (--admin-token-file PATH)");
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
mod tests;
