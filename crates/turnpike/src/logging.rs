//! Logging set-up: a global `tracing` subscriber writing to stderr, as human
//! text or as one JSON object per line.
//!
//! Logs go to stderr so stdout stays free for command output
//! (`check-config`, `version`) and because systemd and container runtimes
//! capture stderr anyway. The filter comes from `[log] level`; `RUST_LOG`,
//! when set and non-empty, replaces it, which is the convention Rust
//! operators expect for a quick debugging session without editing the file.
//!
//! This module knows nothing of the settings: [`init`] takes the level and
//! the [`LogFormat`], and the `[log]` section (in [`crate::config`]) uses
//! [`LogFormat`] and [`parse_filter`], so the dependency runs one way.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Log output format (`log.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// Why logging could not be set up. `Display` is one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoggingError {
    /// A filter directive did not parse.
    #[error("invalid log filter {directives:?} from {origin}: {reason}{hint}")]
    InvalidFilter {
        /// `RUST_LOG` or `log.level`.
        origin: &'static str,
        /// The rejected directives.
        directives: String,
        /// The parser's explanation.
        reason: String,
        /// How to fix it.
        hint: &'static str,
    },
    /// `RUST_LOG` is not valid UTF-8.
    #[error("RUST_LOG is not valid UTF-8; unset it or fix its value")]
    NotUnicode,
    /// A global subscriber was already installed (a programming error, but
    /// reported rather than panicking).
    #[error("logging was already initialised: {0}")]
    AlreadyInitialised(String),
}

/// Parses EnvFilter directives strictly: an invalid directive is an error
/// rather than silently dropped (which is what `EnvFilter::new` does), so a
/// typo in the level cannot quietly turn logging off.
pub fn parse_filter(directives: &str) -> Result<EnvFilter, String> {
    EnvFilter::builder()
        .parse(directives)
        .map_err(|err| err.to_string())
}

/// The filter to use: `RUST_LOG` if set and non-empty, else `level`
/// (`log.level`).
fn select_filter(level: &str) -> Result<EnvFilter, LoggingError> {
    match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => {
            parse_filter(&value).map_err(|reason| LoggingError::InvalidFilter {
                origin: "RUST_LOG",
                directives: value,
                reason,
                hint: " (fix or unset RUST_LOG to use [log] level)",
            })
        }
        Ok(_) | Err(std::env::VarError::NotPresent) => {
            parse_filter(level).map_err(|reason| LoggingError::InvalidFilter {
                origin: "log.level",
                directives: level.to_owned(),
                reason,
                hint: " (use a level such as info or directives such as info,turnpike_core=debug)",
            })
        }
        Err(std::env::VarError::NotUnicode(_)) => Err(LoggingError::NotUnicode),
    }
}

/// Installs the global subscriber with `log.level` and `log.format`. Call
/// once, early in `main`.
pub fn init(level: &str, format: LogFormat) -> Result<(), LoggingError> {
    let filter = select_filter(level)?;
    let result = match format {
        LogFormat::Text => {
            // Colour only for a person at a terminal: escape codes in
            // journald or a log file are noise. NO_COLOR per no-color.org.
            let ansi = std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(ansi)
                .try_init()
        }
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            // Event fields at the top level of the object, which is what
            // log collectors index without extra mapping.
            .flatten_event(true)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .try_init(),
    };
    result.map_err(|err| LoggingError::AlreadyInitialised(err.to_string()))
}

#[cfg(test)]
mod tests;
