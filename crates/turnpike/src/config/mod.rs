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

use std::path::Path;

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
        let mut settings = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
                    path: path.to_owned(),
                    error,
                })?;
                Settings::parse_toml(&text, Some(path))?
            }
            None => Settings::default(),
        };
        settings.apply(overrides);
        settings.validate()?;
        Ok(settings)
    }
}
