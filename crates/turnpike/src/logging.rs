//! Logging set-up: a global `tracing` subscriber writing to stderr, as human
//! text or as one JSON object per line.
//!
//! Logs go to stderr so stdout stays free for command output
//! (`check-config`, `version`) and because systemd and container runtimes
//! capture stderr anyway. The filter comes from `[log] level`; `RUST_LOG`,
//! when set and non-empty, replaces it, which is the convention Rust
//! operators expect for a quick debugging session without editing the file.
//!
//! Both can change while the server runs ([`reconfigure`], on reload): the
//! filter sits in a `tracing_subscriber::reload` layer, and a text and a
//! JSON output are both installed, one of them writing.
//!
//! This module knows nothing of the settings: [`init`] takes the level and
//! the [`LogFormat`], and the `[log]` section (in [`crate::config`]) uses
//! [`LogFormat`] and [`parse_filter`], so the dependency runs one way.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

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
/// (`log.level`); and whether it is `RUST_LOG`'s.
fn select_filter(level: &str) -> Result<(EnvFilter, bool), LoggingError> {
    match rust_log()? {
        Some(value) => parse_filter(&value)
            .map(|filter| (filter, true))
            .map_err(|reason| LoggingError::InvalidFilter {
                origin: "RUST_LOG",
                directives: value,
                reason,
                hint: " (fix or unset RUST_LOG to use [log] level)",
            }),
        None => level_filter(level).map(|filter| (filter, false)),
    }
}

/// `RUST_LOG` when set and not empty.
fn rust_log() -> Result<Option<String>, LoggingError> {
    match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => Ok(Some(value)),
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(LoggingError::NotUnicode),
    }
}

/// `log.level` as a filter.
fn level_filter(level: &str) -> Result<EnvFilter, LoggingError> {
    parse_filter(level).map_err(|reason| LoggingError::InvalidFilter {
        origin: "log.level",
        directives: level.to_owned(),
        reason,
        hint: " (use a level such as info or directives such as info,turnpike_core=debug)",
    })
}

/// What changes the running subscriber: its filter, and which of its two
/// outputs (text, JSON) writes.
#[derive(Debug, Clone)]
pub struct LogControl {
    filter: reload::Handle<EnvFilter, Registry>,
    json: Arc<AtomicBool>,
    /// The filter is `RUST_LOG`'s, which `log.level` does not replace.
    rust_log: bool,
}

/// The running subscriber's [`LogControl`], once [`init`] installed it.
static CONTROL: OnceLock<LogControl> = OnceLock::new();

impl LogControl {
    /// Uses `level` and `format` from now on. With `RUST_LOG` in effect
    /// the filter stays `RUST_LOG`'s, and the answer says so (one line
    /// for the log); the format changes either way.
    pub fn apply(&self, level: &str, format: LogFormat) -> Result<Option<String>, LoggingError> {
        let filter = level_filter(level)?;
        self.json
            .store(format == LogFormat::Json, Ordering::Relaxed);
        if self.rust_log {
            return Ok(Some(format!(
                "log.level {level:?} is not applied: RUST_LOG is set and wins over it; unset RUST_LOG (and restart) to use log.level"
            )));
        }
        // Fails only if the subscriber is gone, when there is nothing to
        // filter any more.
        let _ = self.filter.reload(filter);
        Ok(None)
    }
}

/// The subscriber [`init`] installs (its filter from `level` or
/// `RUST_LOG`, `rust_log` saying which), writing to `writer`, and what
/// changes it. Both outputs are there from the start and see every span,
/// so switching between them leaves no span without the fields its
/// format recorded; only the one `format` picks writes events.
fn subscriber<W>(
    filter: EnvFilter,
    rust_log: bool,
    format: LogFormat,
    writer: W,
    ansi: bool,
) -> (impl Subscriber + Send + Sync + 'static, LogControl)
where
    W: for<'w> MakeWriter<'w> + Clone + Send + Sync + 'static,
{
    let (filter, handle) = reload::Layer::new(filter);
    let json = Arc::new(AtomicBool::new(format == LogFormat::Json));
    let text_layer = tracing_subscriber::fmt::layer()
        .with_writer(writer.clone())
        .with_ansi(ansi);
    let json_layer = tracing_subscriber::fmt::layer()
        .json()
        // Event fields at the top level of the object, which is what
        // log collectors index without extra mapping.
        .flatten_event(true)
        .with_writer(writer)
        .with_ansi(false);
    let subscriber = tracing_subscriber::registry()
        .with(filter)
        .with(Switch {
            inner: text_layer,
            on: Arc::clone(&json),
            when: false,
        })
        .with(Switch {
            inner: json_layer,
            on: Arc::clone(&json),
            when: true,
        });
    let control = LogControl {
        filter: handle,
        json,
        rust_log,
    };
    (subscriber, control)
}

/// A layer that writes events only while `on` is `when`, and sees every
/// span whatever `on` says.
struct Switch<L> {
    inner: L,
    on: Arc<AtomicBool>,
    when: bool,
}

impl<S: Subscriber, L: Layer<S>> Layer<S> for Switch<L> {
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.inner.on_register_dispatch(subscriber);
    }

    fn on_layer(&mut self, subscriber: &mut S) {
        self.inner.on_layer(subscriber);
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        self.inner.on_new_span(attrs, id, ctx);
    }

    fn on_record(&self, span: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        self.inner.on_record(span, values, ctx);
    }

    fn on_follows_from(&self, span: &Id, follows: &Id, ctx: Context<'_, S>) {
        self.inner.on_follows_from(span, follows, ctx);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if self.on.load(Ordering::Relaxed) == self.when {
            self.inner.on_event(event, ctx);
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        self.inner.on_enter(id, ctx);
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        self.inner.on_exit(id, ctx);
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        self.inner.on_close(id, ctx);
    }

    fn on_id_change(&self, old: &Id, new: &Id, ctx: Context<'_, S>) {
        self.inner.on_id_change(old, new, ctx);
    }
}

/// Installs the global subscriber with `log.level` and `log.format`. Call
/// once, early in `main`. [`reconfigure`] changes both later.
pub fn init(level: &str, format: LogFormat) -> Result<(), LoggingError> {
    let (filter, rust_log) = select_filter(level)?;
    // Colour only for a person at a terminal: escape codes in journald or
    // a log file are noise. NO_COLOR per no-color.org.
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let (subscriber, control) = subscriber(filter, rust_log, format, std::io::stderr, ansi);
    subscriber
        .try_init()
        .map_err(|err| LoggingError::AlreadyInitialised(err.to_string()))?;
    let _ = CONTROL.set(control);
    Ok(())
}

/// Uses `level` and `format` from now on (a reload): see
/// [`LogControl::apply`]. Nothing to do before [`init`] (tests, tools).
pub fn reconfigure(level: &str, format: LogFormat) -> Result<Option<String>, LoggingError> {
    match CONTROL.get() {
        Some(control) => control.apply(level, format),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests;
