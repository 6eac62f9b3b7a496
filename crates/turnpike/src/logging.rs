//! Logging set-up: a global `tracing` subscriber writing to stderr, as human
//! text or as one JSON object per line.
//!
//! Logs go to stderr so stdout stays free for command output
//! (`check-config`, `version`) and because systemd and container runtimes
//! capture stderr anyway. The filter comes from `[log] level`; `RUST_LOG`,
//! when set and non-empty, replaces it, which is the convention Rust
//! operators expect for a quick debugging session without editing the file.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

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

/// The filter to use: `RUST_LOG` if set and non-empty, else `config.level`.
fn select_filter(config: &LogConfig) -> Result<EnvFilter, LoggingError> {
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
            parse_filter(&config.level).map_err(|reason| LoggingError::InvalidFilter {
                origin: "log.level",
                directives: config.level.clone(),
                reason,
                hint: " (use a level such as info or directives such as info,turnpike_core=debug)",
            })
        }
        Err(std::env::VarError::NotUnicode(_)) => Err(LoggingError::NotUnicode),
    }
}

/// Installs the global subscriber. Call once, early in `main`.
pub fn init(config: &LogConfig) -> Result<(), LoggingError> {
    let filter = select_filter(config)?;
    let result = match config.format {
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
mod tests {
    use super::*;

    #[test]
    fn valid_filters_parse() {
        for ok in ["info", "warn,turnpike_core=debug", "turnpike=trace", "off"] {
            parse_filter(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn invalid_filters_are_errors_not_panics() {
        for bad in ["info,turnpike=loud", "=info", "foo[bar"] {
            let err = parse_filter(bad).unwrap_err();
            assert!(!err.contains('\n'), "{bad}: {err}");
        }
    }
}
