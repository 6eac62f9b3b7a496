//! Layering: built-in defaults < config file < `TURNPIKE_*` environment
//! variables < command-line flags.
//!
//! The file gives a whole [`Settings`](super::Settings); the environment and
//! the flags give an [`Overrides`](super::Overrides), one `Option` per setting
//! (`None`: not given, keep the file's value), which
//! [`Settings::apply`](super::Settings::apply) lays over it. Both structs and
//! the flags are generated from the declarations in [`super::settings`];
//! this module holds what the generated code calls, by the type of the
//! setting:
//!
//! - [`SettingType`]: what an override of that type holds and how it
//!   replaces the file's value (a list replaces the whole list, it does not
//!   extend it, so an override can also remove an entry; an `Option`
//!   setting is overridden by a plain value).
//! - [`FlagCodec`]: how the flag and its variable are defined in clap and
//!   read back. [`Auto`] picks by type (booleans take `--x[=BOOL]` plus the
//!   declared `--no-x`; lists are repeatable and comma-separated);
//!   [`ListOrNone`] is a list where `none` stands for the empty list.
//!
//! clap merges the environment and the flags (a flag beats its variable),
//! so this module only ever sees "file" and "overrides".

use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches};
use ipnet::IpNet;

use super::errors::ConfigError;
use super::values::{
    CredentialFormat, DatabaseSchema, ExternalIp, IceAuth, TlsVersion, UserEntry, XdpMode,
    parse_char, parse_external_ip, parse_ip, parse_ip_net, parse_socket_addr, parse_user,
    parse_xdp_mode,
};
use crate::logging::LogFormat;

/// How overrides of one setting type replace the file's value.
pub trait SettingType: Sized {
    /// What an override holds: the type itself, or `T` for an `Option<T>`
    /// setting (a flag can set it, not unset it).
    type Override: Clone + fmt::Debug + PartialEq + Eq;
    /// Replaces `slot` with `value`.
    fn apply(slot: &mut Self, value: Self::Override);
}

/// How a setting's flag (and its environment variable) is defined in clap
/// and read back from the matches.
pub trait FlagCodec<T: SettingType> {
    /// Sets the value parser, action and delimiter of `arg`.
    fn configure(arg: Arg) -> Arg;
    /// The value given, if any.
    fn read(matches: &ArgMatches, id: &str) -> Option<T::Override>;
}

/// The codec a setting's type implies (see the module documentation).
#[derive(Debug)]
pub struct Auto;

/// A repeatable, comma-separated list where `none` (or an empty value)
/// contributes nothing, so that `--dtls-listen none` gives an empty list.
#[derive(Debug)]
pub struct ListOrNone;

/// A single value parsed from its flag, and what is shown as its default
/// in `--help`.
pub trait FlagScalar: Clone + Send + Sync + 'static {
    /// Sets the value parser of `arg`.
    fn parser(arg: Arg) -> Arg;
}

/// A default as `--help` shows it (`[default: …]`).
pub trait ShowDefault {
    /// The value in the words of a flag.
    fn show(&self) -> String;
}

/// Implements the traits for scalar types, parsed by `$parser` (an
/// expression clap accepts as a value parser).
macro_rules! scalars {
    ($($ty:ty => $parser:expr),* $(,)?) => {$(
        impl SettingType for $ty {
            type Override = $ty;
            fn apply(slot: &mut Self, value: $ty) {
                *slot = value;
            }
        }
        impl FlagScalar for $ty {
            fn parser(arg: Arg) -> Arg {
                arg.value_parser($parser)
            }
        }
        impl FlagCodec<$ty> for Auto {
            fn configure(arg: Arg) -> Arg {
                <$ty as FlagScalar>::parser(arg.action(ArgAction::Set))
            }
            fn read(matches: &ArgMatches, id: &str) -> Option<$ty> {
                matches.get_one::<$ty>(id).cloned()
            }
        }
    )*};
}

scalars! {
    u8 => clap::value_parser!(u8),
    u16 => clap::value_parser!(u16),
    u32 => clap::value_parser!(u32),
    u64 => clap::value_parser!(u64),
    usize => clap::value_parser!(usize),
    String => clap::value_parser!(String),
    PathBuf => clap::value_parser!(PathBuf),
    LogFormat => clap::value_parser!(LogFormat),
    DatabaseSchema => clap::value_parser!(DatabaseSchema),
    TlsVersion => clap::value_parser!(TlsVersion),
    XdpMode => parse_xdp_mode,
    CredentialFormat => clap::value_parser!(CredentialFormat),
    IceAuth => clap::value_parser!(IceAuth),
    char => parse_char,
    IpAddr => parse_ip,
    SocketAddr => parse_socket_addr,
    ExternalIp => parse_external_ip,
    IpNet => parse_ip_net,
    UserEntry => parse_user,
}

impl SettingType for bool {
    type Override = bool;
    fn apply(slot: &mut Self, value: bool) {
        *slot = value;
    }
}

/// `--x` alone means true; a value only after `=` (`--x=false`), which is
/// what lets `TURNPIKE_X=false` say false; yes/no, on/off and 1/0 too.
impl FlagCodec<bool> for Auto {
    fn configure(arg: Arg) -> Arg {
        arg.action(ArgAction::Set)
            .num_args(0..=1)
            .require_equals(true)
            .default_missing_value("true")
            .value_parser(BoolishValueParser::new())
    }
    fn read(matches: &ArgMatches, id: &str) -> Option<bool> {
        matches.get_one::<bool>(id).copied()
    }
}

impl<T: Clone + fmt::Debug + Eq> SettingType for Option<T> {
    type Override = T;
    fn apply(slot: &mut Self, value: T) {
        *slot = Some(value);
    }
}

impl<T: FlagScalar + fmt::Debug + Eq> FlagCodec<Option<T>> for Auto {
    fn configure(arg: Arg) -> Arg {
        T::parser(arg.action(ArgAction::Set))
    }
    fn read(matches: &ArgMatches, id: &str) -> Option<T> {
        matches.get_one::<T>(id).cloned()
    }
}

impl<T: Clone + fmt::Debug + Eq> SettingType for Vec<T> {
    type Override = Vec<T>;
    fn apply(slot: &mut Self, value: Vec<T>) {
        *slot = value;
    }
}

/// Repeat the flag or separate values with commas (also in the variable).
impl<T: FlagScalar + fmt::Debug + Eq> FlagCodec<Vec<T>> for Auto {
    fn configure(arg: Arg) -> Arg {
        T::parser(arg.action(ArgAction::Append).value_delimiter(','))
    }
    fn read(matches: &ArgMatches, id: &str) -> Option<Vec<T>> {
        matches
            .get_many::<T>(id)
            .map(|values| values.cloned().collect())
    }
}

impl ListOrNone {
    /// `none` or an empty value is `None`; anything else goes to `parse`,
    /// trimmed.
    fn parse<T>(
        text: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        match text.trim() {
            "" | "none" => Ok(None),
            value => parse(value).map(Some),
        }
    }

    fn configure(arg: Arg) -> Arg {
        arg.action(ArgAction::Append).value_delimiter(',')
    }

    fn read<T: Clone + Send + Sync + 'static>(matches: &ArgMatches, id: &str) -> Option<Vec<T>> {
        matches
            .get_many::<Option<T>>(id)
            .map(|values| values.flatten().cloned().collect())
    }
}

/// Addresses, or `none` for no listener at all.
impl FlagCodec<Vec<SocketAddr>> for ListOrNone {
    fn configure(arg: Arg) -> Arg {
        ListOrNone::configure(arg).value_parser(|text: &str| {
            ListOrNone::parse(text, |_| {
                parse_socket_addr(text).map_err(|err| format!("{err}, or none for no listener"))
            })
        })
    }
    fn read(matches: &ArgMatches, id: &str) -> Option<Vec<SocketAddr>> {
        ListOrNone::read(matches, id)
    }
}

/// Names (trimmed), or `none`.
impl FlagCodec<Vec<String>> for ListOrNone {
    fn configure(arg: Arg) -> Arg {
        ListOrNone::configure(arg)
            .value_parser(|text: &str| ListOrNone::parse(text, |name| Ok(name.to_owned())))
    }
    fn read(matches: &ArgMatches, id: &str) -> Option<Vec<String>> {
        ListOrNone::read(matches, id)
    }
}

/// The value of a setting with a `--no-x` negation: `value` (from `--x` or
/// `TURNPIKE_X`) unless the negation was given on the command line, in
/// which case `negated`, except when `--x` was on the command line too,
/// after it. (`--no-x` has no variable, so it beats `TURNPIKE_X`.)
pub fn settle_negation<T>(
    matches: &ArgMatches,
    args: &[OsString],
    (id, long): (&str, &str),
    value: Option<T>,
    negated: T,
) -> Option<T> {
    let negation = format!("no_{id}");
    if matches.value_source(&negation) != Some(ValueSource::CommandLine) {
        return value;
    }
    let flag_wins = value.is_some()
        && matches.value_source(id) == Some(ValueSource::CommandLine)
        && last_position(args, long) > last_position(args, &format!("no-{long}"));
    if flag_wins { value } else { Some(negated) }
}

/// Where `--long` or `--long=…` last appears among `args` (after the
/// program name, before `--`).
fn last_position(args: &[OsString], long: &str) -> Option<usize> {
    let flag = format!("--{long}");
    let with_value = format!("{flag}=");
    args.iter()
        .skip(1)
        .map(|a| a.to_string_lossy())
        .take_while(|a| a != "--")
        .enumerate()
        .filter(|(_, a)| *a == flag || a.starts_with(&with_value))
        .map(|(i, _)| i)
        .last()
}

/// The `--help` text of a setting's flag: its key, what it is, its
/// declared range and its default, all from the declaration, so that the
/// help cannot disagree with what the server does.
pub fn flag_help(
    key: &str,
    help: &str,
    range: Option<(String, String, Option<&str>)>,
    default: String,
) -> String {
    let range = match range {
        Some((min, max, zero)) => match zero {
            Some(zero) => format!(", {min} ({zero}) to {max}"),
            None => format!(", {min} to {max}"),
        },
        None => String::new(),
    };
    format!("{key}: {help}{range} [default: {default}]")
}

/// A value outside its declared range, as one line naming the key, the
/// range with its unit and the default.
pub fn check_range<T: PartialOrd + fmt::Display>(
    key: &str,
    value: T,
    (min, max): (T, T),
    unit: &str,
    zero: Option<&str>,
    default: T,
    because: Option<&str>,
) -> Result<(), ConfigError> {
    if min <= value && value <= max {
        return Ok(());
    }
    let zero = zero.map(|z| format!(" ({z})")).unwrap_or_default();
    let because = because.map(|b| format!(": {b}")).unwrap_or_default();
    Err(ConfigError::invalid(format!(
        "{key} = {value} is out of range; use {min}{zero} to {max} {unit} (default {default}{because})"
    )))
}

macro_rules! shown_as_displayed {
    ($($ty:ty),* $(,)?) => {$(
        impl ShowDefault for $ty {
            fn show(&self) -> String {
                self.to_string()
            }
        }
    )*};
}

shown_as_displayed!(
    bool,
    u8,
    u16,
    u32,
    u64,
    usize,
    char,
    IpAddr,
    SocketAddr,
    IpNet,
    ExternalIp,
    LogFormat,
    DatabaseSchema,
    TlsVersion,
    XdpMode,
    CredentialFormat,
    IceAuth,
);

/// The empty string is shown quoted, so it is visible.
impl ShowDefault for String {
    fn show(&self) -> String {
        if self.is_empty() {
            "\"\"".to_owned()
        } else {
            self.clone()
        }
    }
}

impl ShowDefault for PathBuf {
    fn show(&self) -> String {
        self.display().to_string()
    }
}

/// Only the name: a password is never shown.
impl ShowDefault for UserEntry {
    fn show(&self) -> String {
        self.username.clone()
    }
}

/// Comma-separated, as the flag takes it; `none` when empty.
impl<T: ShowDefault> ShowDefault for Vec<T> {
    fn show(&self) -> String {
        if self.is_empty() {
            "none".to_owned()
        } else {
            self.iter().map(T::show).collect::<Vec<_>>().join(",")
        }
    }
}

impl<T: ShowDefault> ShowDefault for Option<T> {
    fn show(&self) -> String {
        self.as_ref().map_or_else(|| "unset".to_owned(), T::show)
    }
}
