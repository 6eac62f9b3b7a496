//! Why settings could not be loaded: [`ConfigError`], always one line,
//! because operators read it in `journalctl` and container logs, where
//! multi-line snippets with carets come out mangled.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Why a configuration could not be loaded. `Display` is always one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read. (The `io::Error` is part of the message
    /// rather than `source()`, so that `{:#}` chains do not print it twice.)
    #[error(
        "cannot read config file {}: {} ({})",
        path.display(),
        io_message(error),
        read_hint(error)
    )]
    Read {
        /// The path as given.
        path: PathBuf,
        /// The underlying error.
        error: io::Error,
    },
    /// TOML syntax error, unknown key, or a value of the wrong type.
    #[error("{}{message}", Location { origin: origin.as_deref(), line: *line })]
    Parse {
        /// The file, when loaded from one.
        origin: Option<PathBuf>,
        /// 1-based line of the error, when toml reported a position.
        line: Option<usize>,
        /// Flattened, single-line description.
        message: String,
    },
    /// Every value parsed but the combination is not usable.
    #[error("invalid configuration: {message}")]
    Invalid {
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            message: message.into(),
        }
    }
}

/// `"<path> line N: "` prefix for parse errors.
struct Location<'a> {
    origin: Option<&'a Path>,
    line: Option<usize>,
}

impl fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.origin, self.line) {
            (Some(path), Some(line)) => write!(f, "{} line {line}: ", path.display()),
            (Some(path), None) => write!(f, "{}: ", path.display()),
            (None, Some(line)) => write!(f, "config line {line}: "),
            (None, None) => f.write_str("config: "),
        }
    }
}

/// How to fix a config file read error.
fn read_hint(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::PermissionDenied => "make the file readable by the user turnpike runs as",
        io::ErrorKind::InvalidData => "the config file must be UTF-8 text",
        _ => "pass an existing file with --config or omit it to run with defaults",
    }
}

/// `io::Error` text without the `(os error N)` suffix, which means nothing
/// to an operator.
pub fn io_message(error: &io::Error) -> String {
    let text = error.to_string();
    match text.rfind(" (os error ") {
        Some(cut) if text.ends_with(')') => text[..cut].to_owned(),
        _ => text,
    }
}
