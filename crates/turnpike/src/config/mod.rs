//! The operator's settings: where each is declared, how the config file,
//! the `TURNPIKE_*` environment and the flags combine, how they are checked,
//! and what they become for the runtime and the sans-IO core.
//!
//! - [`settings`]: every setting declared once (key, type, default, flag,
//!   variable, range, help), in a table the `settings!` macro
//!   ([`declare`]) turns into the TOML sections, [`Overrides`], the flags,
//!   the range checks and the known keys.
//! - [`mod@file`]: TOML text to [`Settings`], with one-line errors.
//! - [`overrides`]: the layering — built-in defaults < config file <
//!   environment < flags.
//! - [`validate`]: the rules beyond the declared ranges.
//! - [`plan`]: listeners, NAT discovery sets, the core's configuration and
//!   the database options, from validated settings.
//! - [`summary`]: `check-config`'s one-line summary.
//! - [`values`]: value types and their text parsers, shared by all three
//!   sources.
//! - [`errors`]: [`ConfigError`], why settings could not be loaded.
//!
//! Loading is split into pure steps so each is unit-testable without files or
//! processes: parse ([`Settings::parse_toml`]), overlay ([`Settings::apply`]),
//! validate ([`Settings::validate`]). [`Settings::resolve`] chains them in the
//! order that gives the documented precedence.
//!
//! The names say "settings" because the workspace has other configurations:
//! [`Settings`] is what the operator wrote; [`Settings::core`] turns it into
//! the core's [`turnpike_core::Config`]. The core never sees passwords: the
//! static users are handed to the shards as keys ([`Settings::user_keys`]).

pub mod declare;
pub mod errors;
pub mod file;
pub mod overrides;
pub mod plan;
pub mod settings;
pub mod summary;
pub mod validate;
pub mod values;

#[cfg(test)]
mod tests;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use declare::Reload;
pub use errors::{ConfigError, io_message};
pub use plan::{Listener, ListenerRole, NatDiscoveryPlan, PortPair, Slot};
pub use settings::*;
pub use values::*;

pub use crate::logging::LogFormat;

impl Settings {
    /// Parses and validates a TOML document (no file, no overrides).
    pub fn from_toml_str(text: &str) -> Result<Settings, ConfigError> {
        let settings = Settings::parse_toml(text, None)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Reads, parses and validates a file (no overrides).
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        Settings::resolve(Some(path), &Overrides::default())
    }

    /// What the binary does: the file if one is given (else the built-in
    /// defaults), then the overrides, then validation. Validation runs last
    /// so that an override can repair a file (or break it) and the check
    /// sees the values that will actually be used.
    pub fn resolve(path: Option<&Path>, overrides: &Overrides) -> Result<Settings, ConfigError> {
        Settings::resolve_text(path, overrides).map(|(settings, _)| settings)
    }

    /// [`Settings::resolve`], and the file's text as read (empty without
    /// a file).
    fn resolve_text(
        path: Option<&Path>,
        overrides: &Overrides,
    ) -> Result<(Settings, String), ConfigError> {
        let (mut settings, text) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
                    path: path.to_owned(),
                    error,
                })?;
                (Settings::parse_toml(&text, Some(path))?, text)
            }
            None => (Settings::default(), String::new()),
        };
        settings.apply(overrides);
        settings.validate()?;
        Ok((settings, text))
    }
}

/// Where a server's settings come from: the config file (if any) and the
/// environment and flags it was started with. Kept by the server, which
/// reads it again on reload: the file is re-read; the overrides are the
/// ones of the start (a process's environment cannot change from outside,
/// and the command line does not change), laid over the new file as they
/// were over the old one.
#[derive(Debug, Clone, Default)]
pub struct SettingsSource {
    /// `--config`, if given.
    pub path: Option<PathBuf>,
    /// `TURNPIKE_*` variables and flags.
    pub overrides: Overrides,
}

/// Settings as loaded, with the identity of the file they came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated settings (file, then overrides).
    pub settings: Settings,
    /// SHA-256 of the config file's bytes, in lower-case hex: what
    /// `sha256sum turnpike.toml` prints for the file the server read, so a
    /// fleet can be checked against what configuration management wrote.
    /// Without a file, the hash of no bytes (as of an empty file, which
    /// also means "the defaults").
    pub file_sha256: String,
}

impl SettingsSource {
    /// Reads, parses, overlays and validates, as at start.
    pub fn load(&self) -> Result<Loaded, ConfigError> {
        let (settings, text) = Settings::resolve_text(self.path.as_deref(), &self.overrides)?;
        Ok(Loaded {
            settings,
            file_sha256: sha256_hex(text.as_bytes()),
        })
    }

    /// The file's path for messages, or `built-in defaults`.
    pub fn describe(&self) -> String {
        match &self.path {
            Some(path) => path.display().to_string(),
            None => "built-in defaults".to_owned(),
        }
    }
}

/// SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for byte in digest {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}
