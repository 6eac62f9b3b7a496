//! The `turnpike` executable: parse the command line, load the
//! configuration, set up logging and run the subcommand.
//!
//! Every failure ends here as exactly one line on stderr,
//! `turnpike: error: <what is wrong and how to fix it>`, and an exit status
//! that lets scripts and service managers tell the cases apart:
//! 2 for usage and configuration errors (fix the input, retrying will not
//! help), 1 for runtime errors (e.g. an address already in use).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use turnpike::admin::AdminError;
use turnpike::cli::{Cli, CliError, Command};
use turnpike::config::{Settings, SettingsSource};

/// Exit status for command-line and configuration errors (clap's own
/// convention for usage errors, so both kinds agree).
const EXIT_CONFIG: u8 = 2;
/// Exit status for errors while running.
const EXIT_RUNTIME: u8 = 1;

/// What a command that loads the configuration does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `check-config`: validate and print a summary.
    Check,
    /// `serve`: run the relay.
    Relay,
    /// `ice-config`: run the ICE-server endpoint alone.
    IceConfig,
}

/// A failure with its exit status and one-line message.
struct Failure {
    status: u8,
    message: String,
}

impl Failure {
    fn config(err: impl std::fmt::Display) -> Self {
        Failure {
            status: EXIT_CONFIG,
            message: err.to_string(),
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            // Flatten defensively: an error from anywhere below (a source
            // chain, an OS message) must still come out as one line.
            let message = failure
                .message
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            eprintln!("turnpike: error: {message}");
            ExitCode::from(failure.status)
        }
    }
}

fn run() -> Result<(), Failure> {
    let cli = match Cli::parse_args() {
        Ok(cli) => cli,
        // --help / --version: clap prints to stdout and exits 0.
        Err(CliError::Info(info)) => info.exit(),
        Err(err @ CliError::Usage(_)) => return Err(Failure::config(err)),
    };

    let mode = match cli.subcommand() {
        // `version` must work even with a broken config or environment, so
        // it returns before anything is loaded.
        Command::Version => {
            print_line(&format!("turnpike {}", env!("CARGO_PKG_VERSION")));
            return Ok(());
        }
        // The load generator talks to some server; it needs no configuration.
        Command::Bench(args) => {
            return turnpike::bench::run(*args).map_err(|message| Failure {
                status: EXIT_RUNTIME,
                message,
            });
        }
        Command::User(command) => {
            return run_admin(&cli, |ctx| turnpike::admin::user(command, ctx));
        }
        Command::Secret(command) => {
            return run_admin(&cli, |ctx| turnpike::admin::secret(command, ctx));
        }
        Command::Credentials(args) => {
            return run_admin(&cli, |ctx| turnpike::admin::credentials(&args, ctx));
        }
        Command::Status(args) => {
            return run_client(&cli, |settings| {
                turnpike::admin_client::status(&args, settings)
            });
        }
        Command::Allocations(args) => {
            return run_client(&cli, |settings| {
                turnpike::admin_client::allocations(&args, settings)
            });
        }
        Command::Kick(args) => {
            return run_client(&cli, |settings| {
                turnpike::admin_client::kick(&args, settings)
            });
        }
        Command::Drain(args) => {
            return run_client(&cli, |settings| {
                turnpike::admin_client::drain(&args, settings)
            });
        }
        Command::Undrain(args) => {
            return run_client(&cli, |settings| {
                turnpike::admin_client::undrain(&args, settings)
            });
        }
        Command::Reload(args) => return run_reload(&cli, &args),
        Command::CheckConfig => Mode::Check,
        Command::Serve => Mode::Relay,
        Command::IceConfig => Mode::IceConfig,
    };

    // Kept by the server: a reload reads the file again, with the same
    // environment and flags.
    let source = SettingsSource {
        path: cli.config_path().map(Path::to_owned),
        overrides: cli.overrides(),
    };
    let loaded = source.load().map_err(Failure::config)?;
    let settings = &loaded.settings;
    // Logging comes after the config (it is configured by it), so config
    // errors above are printed directly rather than logged. An invalid
    // RUST_LOG is a configuration error too.
    turnpike::logging::init(&settings.log.level, settings.log.format).map_err(Failure::config)?;

    let origin = match cli.config_path() {
        Some(path) => path.display().to_string(),
        None => "built-in defaults".to_owned(),
    };
    if mode == Mode::Check {
        // The admin token and the certificate files are read and checked
        // here too, so that a renewal can be checked before SIGHUP; an
        // error prints nothing on stdout, like any other configuration
        // error.
        if !settings.admin.listen.is_empty() {
            turnpike::admin_http::Access::from_settings(&settings.admin)
                .map_err(Failure::config)?;
        }
        let certificates = match settings.tls.enabled() {
            true => {
                Some(turnpike::tls::Certificates::load(&settings.tls).map_err(Failure::config)?)
            }
            false => None,
        };
        print_line(&format!(
            "turnpike: configuration OK ({origin}): {}",
            settings.summary()
        ));
        if let Some(certificates) = certificates {
            print_line(&format!(
                "turnpike: TLS certificate OK ({}): {}",
                certificates.certificate_path().display(),
                certificates.summary()
            ));
        }
        return Ok(());
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %origin,
        "starting turnpike"
    );
    let result = match mode {
        Mode::IceConfig => turnpike::ice::standalone::run(loaded, source),
        _ => turnpike::runtime::serve(loaded, source),
    };
    result.map_err(|err| Failure {
        status: EXIT_RUNTIME,
        // `{:#}` prints the anyhow context chain as "a: b: c".
        message: format!("{err:#}"),
    })
}

/// `turnpike user|secret|credentials`: the configuration a server would run
/// with (so `--realm` on the command line picks the realm to work on rather
/// than changing the server's), no logging (stdout carries only data).
fn run_admin(
    cli: &Cli,
    command: impl FnOnce(&turnpike::admin::Context) -> Result<(), AdminError>,
) -> Result<(), Failure> {
    let settings =
        Settings::resolve(cli.config_path(), &cli.server_overrides()).map_err(Failure::config)?;
    let ctx = turnpike::admin::Context::new(settings, cli.realm_on_command_line());
    command(&ctx).map_err(|err| match err {
        AdminError::Usage(message) => Failure {
            status: EXIT_CONFIG,
            message,
        },
        AdminError::Runtime(message) => Failure {
            status: EXIT_RUNTIME,
            message,
        },
    })
}

/// `turnpike status|allocations|kick|drain|undrain`: the configuration `serve` would
/// run with, no logging; the command's output on stdout.
fn run_client(
    cli: &Cli,
    command: impl FnOnce(&Settings) -> Result<String, AdminError>,
) -> Result<(), Failure> {
    let settings =
        Settings::resolve(cli.config_path(), &cli.overrides()).map_err(Failure::config)?;
    let output = command(&settings).map_err(|err| match err {
        AdminError::Usage(message) => Failure {
            status: EXIT_CONFIG,
            message,
        },
        AdminError::Runtime(message) => Failure {
            status: EXIT_RUNTIME,
            message,
        },
    })?;
    let _ = std::io::stdout().lock().write_all(output.as_bytes());
    Ok(())
}

/// `turnpike reload`: like [`run_client`], and a refused reload is a
/// configuration error (exit 2, its error on stderr) after its report on
/// stdout. A file this command cannot load is not sent for: the server
/// would refuse it the same way.
fn run_reload(cli: &Cli, args: &turnpike::admin_client::ReloadArgs) -> Result<(), Failure> {
    let settings = Settings::resolve(cli.config_path(), &cli.overrides()).map_err(|err| {
        Failure::config(format!(
            "configuration not reloaded: {err}; the server was not asked (it would refuse this file too)"
        ))
    })?;
    let (output, refused) =
        turnpike::admin_client::reload(args, &settings).map_err(|err| match err {
            AdminError::Usage(message) => Failure {
                status: EXIT_CONFIG,
                message,
            },
            AdminError::Runtime(message) => Failure {
                status: EXIT_RUNTIME,
                message,
            },
        })?;
    let _ = std::io::stdout().lock().write_all(output.as_bytes());
    match refused {
        Some(message) => Err(Failure::config(message)),
        None => Ok(()),
    }
}

/// Prints a line to stdout, ignoring write errors: `println!` would panic on
/// a closed pipe (`turnpike version | true`), and the exit status already
/// carries the result.
fn print_line(line: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}
