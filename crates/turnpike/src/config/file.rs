//! The config file: TOML text to [`Settings`], with every error reduced to
//! one line that names the file, line and key, and unknown keys named with
//! their section and the keys it does have (from the declarations' known
//! keys, `SECTIONS`).

use std::path::Path;

use super::errors::ConfigError;
use super::settings::{SECTIONS, Settings};

impl Settings {
    /// Parses TOML without validating. Missing keys and sections take their
    /// defaults. `origin` is only used in error messages.
    pub fn parse_toml(text: &str, origin: Option<&Path>) -> Result<Settings, ConfigError> {
        toml::from_str(text).map_err(|err| ConfigError::Parse {
            origin: origin.map(Path::to_owned),
            line: err.span().map(|span| line_of(text, span.start)),
            message: describe_toml_error(text, &err),
        })
    }
}

/// 1-based line number of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Turns a toml error into one line: unknown keys get the section and the
/// valid keys spelt out; value errors get the key name when it is on the
/// same line; Rust type names become words.
fn describe_toml_error(text: &str, err: &toml::de::Error) -> String {
    let raw = err.message().trim();
    // The table header the error points at, if it points at one.
    let header = err
        .span()
        .and_then(|span| text.get(span.start..)?.lines().next())
        .map(str::trim)
        .filter(|line| line.starts_with('['));
    let message = if let Some(rest) = raw.strip_prefix("unknown field ") {
        describe_unknown_key(rest).unwrap_or_else(|| raw.to_owned())
    } else if let Some(table) = header
        .filter(|h| !h.starts_with("[[") && raw.ends_with("expected a sequence"))
        .and_then(|h| h.strip_prefix('[')?.split(']').next())
    {
        format!("[{table}] is a list of tables; write each entry as [[{table}]]")
    } else if let Some(header) = header.filter(|_| raw.starts_with("missing field ")) {
        format!("{raw} in {header}")
    } else {
        let mut message = raw
            .replace("expected usize", "expected a non-negative integer")
            .replace("expected u16", "expected an integer from 0 to 65535")
            .replace("expected u32", "expected an integer from 0 to 4294967295");
        if let Some(key) = err.span().and_then(|span| key_before(text, span.start)) {
            message = format!("bad value for `{key}`: {message}");
        }
        message
    };
    flatten(&message)
}

/// Keys that were removed, with what to do instead: `(section, key, why)`.
const REMOVED: &[(&str, &str, &str)] = &[(
    "admin",
    "allow_remote",
    "admin.allow_remote was removed: an admin.listen address other than loopback now needs admin.token_file (a bearer token) instead; remove allow_remote and set token_file",
)];

/// `rest` is serde's "`x`, expected one of `a`, `b`" (after "unknown field ").
fn describe_unknown_key(rest: &str) -> Option<String> {
    let mut quoted = rest.split('`').skip(1).step_by(2);
    let key = quoted.next()?;
    let expected: Vec<&str> = quoted.collect();
    let section = SECTIONS.iter().find(|(_, keys)| {
        keys.len() == expected.len() && keys.iter().all(|k| expected.contains(k))
    });
    if let Some((_, _, why)) = REMOVED
        .iter()
        .find(|(s, k, _)| *k == key && section.is_some_and(|(name, _)| name == s))
    {
        return Some((*why).to_owned());
    }
    let home = SECTIONS
        .iter()
        .find(|(name, keys)| !name.is_empty() && keys.contains(&key))
        .map(|(name, _)| *name);
    Some(match section {
        Some(("", _)) => {
            let sections = expected
                .iter()
                .map(|s| format!("[{s}]"))
                .collect::<Vec<_>>()
                .join(", ");
            let hint = home
                .map(|h| format!(" (`{key}` belongs in [{h}])"))
                .unwrap_or_default();
            format!("unknown section or top-level key `{key}`; expected one of {sections}{hint}")
        }
        Some((name, _)) => {
            let hint = home
                .filter(|h| h != name)
                .map(|h| format!(" (`{key}` belongs in [{h}])"))
                .unwrap_or_default();
            format!(
                "unknown key `{key}` in [{name}]; expected one of {}{hint}",
                expected.join(", ")
            )
        }
        None => format!(
            "unknown key `{key}`; expected one of {}",
            expected.join(", ")
        ),
    })
}

/// The key of a `key = value` line when `offset` points into the value.
fn key_before(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let before = &text[line_start..offset];
    let (key, _) = before.split_once('=')?;
    let key = key.trim().trim_matches('"');
    let valid = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    valid.then(|| key.to_owned())
}

/// Collapses all whitespace runs (including newlines) into single spaces.
fn flatten(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}
