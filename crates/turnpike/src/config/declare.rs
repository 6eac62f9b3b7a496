//! The `settings!` macro, which turns the table of declarations in
//! [`super::settings`] into everything a setting needs, so that a setting
//! is spelt in one place:
//!
//! - a struct per `[section]` (serde, `deny_unknown_fields`, defaults) and
//!   [`Settings`](super::Settings), the whole file;
//! - [`Overrides`](super::Overrides), one `Option` per setting, and
//!   `Settings::apply_overrides`, which lays it over the file;
//! - the clap flags with their `TURNPIKE_*` variables, `--no-` negations
//!   and `--help` text (key, range, default), and the reading back of
//!   their values;
//! - the declared range checks, with one message shape for all;
//! - `SECTIONS`, the known keys per section for unknown-key messages, and
//!   `DECLARED`, the flag and variable names the example-file test checks;
//! - what a reload may change ([`Reload`]): `Settings::keep_restart_only`
//!   and `Settings::changed_keys`.
//!
//! A declarative macro rather than a build step or a derive crate: it
//! costs no build time (CI builds cold on two cores), and the table stays
//! ordinary Rust that rust-analyzer and rustfmt's neighbours understand.
//!
//! The shape of one entry (the optional parts in this order):
//!
//! ```text
//! /// Field documentation (and any #[serde(...)] attribute).
//! key: Type = default_expression;
//!     flag overrides_field "flag-name" "VALUE", env "TURNPIKE_NAME"
//!     [, via Codec]                      // see overrides::FlagCodec
//!     [, negation value => "help"]       // adds --no-flag-name
//!     [, secret = true]                  // never show the variable's value
//!     [, range(min, max) "unit" [, zero "what 0 means"] [, because "why the default"]]
//!     [, shown "the default in words"];  // when Display does not say it
//!     help "what it is, for --help";
//!     reload live | restart;             // see Reload
//! ```
//!
//! `reload` is not optional: whoever adds a setting decides whether a
//! running server can take a new value of it (`live`, applied by
//! [`crate::runtime`]'s reload) or only a restart can (`restart`: a reload
//! keeps the running value and names the key in one warning line).

/// What the declarations say about one setting's names, for tests that
/// check other places against them (the example file).
#[derive(Debug, Clone, Copy)]
pub struct Declared {
    /// The `[section]`.
    pub section: &'static str,
    /// The key within it.
    pub key: &'static str,
    /// The [`Overrides`](super::Overrides) field and clap id.
    pub id: &'static str,
    /// The long flag, without `--`.
    pub flag: &'static str,
    /// The flag's value name (`N`, `SECONDS`, …).
    pub value_name: &'static str,
    /// The environment variable.
    pub env: &'static str,
    /// Whether `--no-<flag>` exists.
    pub negation: bool,
    /// Whether a reload applies a new value.
    pub reload: Reload,
}

/// Whether a running server takes a new value of a setting on reload
/// (SIGHUP, `POST /v1/reload`, `turnpike reload`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// Applied to the running server: new requests, allocations and
    /// connections see it; what exists keeps going.
    Live,
    /// Needs a restart (sockets, threads, the database connection, the
    /// realm the keys were derived in…): a reload keeps the running value
    /// and warns.
    Restart,
}

impl Reload {
    /// `live` or `restart`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reload::Live => "live",
            Reload::Restart => "restart",
        }
    }
}

/// `$body` for a `reload restart` setting, nothing for a `reload live` one.
macro_rules! when_restart {
    (live $body:block) => {};
    (restart $body:block) => {
        $body
    };
}

/// The [`Reload`] a declaration names; any other word is a compile error.
macro_rules! reload_kind {
    (live) => {
        $crate::config::declare::Reload::Live
    };
    (restart) => {
        $crate::config::declare::Reload::Restart
    };
}

/// `$codec`, or [`Auto`](super::overrides::Auto) when none is declared.
macro_rules! flag_codec {
    () => {
        $crate::config::overrides::Auto
    };
    ($codec:ty) => {
        $codec
    };
}

/// `true` when given any tokens.
macro_rules! given {
    () => {
        false
    };
    ($($tokens:tt)+) => {
        true
    };
}

/// See the module documentation.
macro_rules! settings {
    (
        $(
            $(#[doc = $section_doc:literal])*
            [$section:ident] $Section:ident, heading $heading:literal, expecting $expecting:literal {
                $(
                    $(#[$field_attr:meta])*
                    $key:ident: $ty:ty = $default:expr;
                    flag $id:ident $long:literal $value_name:literal, env $env:literal
                    $(, via $codec:ty)?
                    $(, negation $negated:expr => $negation_help:literal)?
                    $(, secret = $secret:literal)?
                    $(, range($min:expr, $max:expr) $unit:literal
                        $(, zero $zero:literal)? $(, because $because:literal)?)?
                    $(, shown $shown:literal)?;
                    help $help:literal;
                    reload $reload:ident;
                )*
            }
        )*
        nested tables { $($nested:literal: [$($nested_key:literal),* $(,)?]),* $(,)? }
    ) => {
        /// Every setting: the whole config file, one field per `[section]`.
        /// Missing sections and keys take their defaults.
        #[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct Settings {
            $(
                $(#[doc = $section_doc])*
                pub $section: $Section,
            )*
        }

        $(
            $(#[doc = $section_doc])*
            #[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
            #[serde(default, deny_unknown_fields, expecting = $expecting)]
            pub struct $Section {
                $(
                    $(#[$field_attr])*
                    pub $key: $ty,
                )*
            }

            impl Default for $Section {
                fn default() -> Self {
                    Self {
                        $($key: $default,)*
                    }
                }
            }
        )*

        /// Values from the environment and the command line, laid over the
        /// file by [`Settings::apply`]. `None` means "not given: keep the
        /// file's value"; a list replaces the file's list.
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct Overrides {
            $($(
                #[doc = concat!("`", stringify!($section), ".", stringify!($key), "`.")]
                pub $id: Option<<$ty as $crate::config::overrides::SettingType>::Override>,
            )*)*
        }

        impl Settings {
            /// Overlays environment / command-line values onto these
            /// settings.
            pub fn apply(&mut self, overrides: &Overrides) {
                $($(
                    if let Some(value) = &overrides.$id {
                        $crate::config::overrides::SettingType::apply(
                            &mut self.$section.$key,
                            value.clone(),
                        );
                    }
                )*)*
            }

            /// Checks every declared range, in declaration order.
            pub(super) fn check_declared_ranges(&self) -> Result<(), $crate::config::ConfigError> {
                $($(
                    $(
                        $crate::config::overrides::check_range(
                            concat!(stringify!($section), ".", stringify!($key)),
                            self.$section.$key,
                            ($min, $max),
                            $unit,
                            None $(.or(Some($zero)))?,
                            $Section::default().$key,
                            None $(.or(Some($because)))?,
                        )?;
                    )?
                )*)*
                Ok(())
            }
        }

        impl Settings {
            /// Puts every `reload restart` setting whose value differs
            /// from `running`'s back to the running value, and returns
            /// their keys (`section.key`), in declaration order: what a
            /// reload cannot apply.
            pub fn keep_restart_only(&mut self, running: &Settings) -> Vec<&'static str> {
                let mut kept = Vec::new();
                $($(
                    $crate::config::declare::when_restart!($reload {
                        if self.$section.$key != running.$section.$key {
                            self.$section.$key = running.$section.$key.clone();
                            kept.push(concat!(stringify!($section), ".", stringify!($key)));
                        }
                    });
                )*)*
                kept
            }

            /// The keys (`section.key`) whose values differ between `self`
            /// and `other`, in declaration order. Names only: never a
            /// value (some are passwords).
            pub fn changed_keys(&self, other: &Settings) -> Vec<&'static str> {
                let mut changed = Vec::new();
                $($(
                    if self.$section.$key != other.$section.$key {
                        changed.push(concat!(stringify!($section), ".", stringify!($key)));
                    }
                )*)*
                changed
            }
        }

        impl Overrides {
            /// One flag per setting (with its `TURNPIKE_*` variable), plus
            /// the declared `--no-` negations, all global.
            pub fn flags() -> Vec<clap::Arg> {
                let mut flags = Vec::new();
                $($(
                    let range: Option<(String, String, Option<&str>)> = None
                        $(.or(Some((($min).to_string(), ($max).to_string(), None $(.or(Some($zero)))?))))?;
                    let shown: Option<&str> = None $(.or(Some($shown)))?;
                    let default = shown.map_or_else(
                        || $crate::config::overrides::ShowDefault::show(&$Section::default().$key),
                        str::to_owned,
                    );
                    let arg = clap::Arg::new(stringify!($id))
                        .long($long)
                        .env($env)
                        .value_name($value_name)
                        .global(true)
                        .help_heading($heading)
                        .help($crate::config::overrides::flag_help(
                            concat!(stringify!($section), ".", stringify!($key)),
                            $help,
                            range,
                            default,
                        ));
                    let arg = <$crate::config::declare::flag_codec!($($codec)?) as $crate::config::overrides::FlagCodec<$ty>>::configure(arg);
                    $(let arg = arg.hide_env_values($secret);)?
                    $(
                        // Repeating the flag is fine: the last one wins, as
                        // between the flag and its negation.
                        let _: &str = $negation_help;
                        let arg = arg.overrides_with(stringify!($id));
                    )?
                    flags.push(arg);
                    $(
                        flags.push(
                            clap::Arg::new(concat!("no_", stringify!($id)))
                                .long(concat!("no-", $long))
                                .action(clap::ArgAction::SetTrue)
                                .global(true)
                                .help_heading($heading)
                                .help($negation_help)
                                .overrides_with(concat!("no_", stringify!($id))),
                        );
                    )?
                )*)*
                flags
            }

            /// The overrides given as flags and `TURNPIKE_*` variables in
            /// `matches` (parsed with the args of [`Overrides::flags`]).
            /// `args` is the command line itself: when a setting's flag
            /// and its `--no-` negation are both given, the later one wins,
            /// and clap's indices cannot tell (they restart in each
            /// subcommand, and the flags are global). Without `args`, a
            /// negation on the command line wins.
            pub fn from_flags(matches: &clap::ArgMatches, args: &[std::ffi::OsString]) -> Overrides {
                Overrides {
                    $($(
                        $id: {
                            let value = <$crate::config::declare::flag_codec!($($codec)?) as $crate::config::overrides::FlagCodec<$ty>>::read(
                                matches,
                                stringify!($id),
                            );
                            $(
                                let value = $crate::config::overrides::settle_negation(
                                    matches,
                                    args,
                                    (stringify!($id), $long),
                                    value,
                                    $negated,
                                );
                            )?
                            value
                        },
                    )*)*
                }
            }
        }

        /// Known keys per section, used to name the section in unknown-key
        /// errors (serde reports only the offending key and the expected
        /// list; matching the list tells which table it came from, even for
        /// dotted keys or inline tables). The empty name is the top level.
        pub(crate) const SECTIONS: &[(&str, &[&str])] = &[
            ("", &[$(stringify!($section)),*]),
            $((stringify!($section), &[$(stringify!($key)),*]),)*
            $(($nested, &[$($nested_key),*]),)*
        ];

        /// The names of every declared setting, in declaration order.
        pub const DECLARED: &[$crate::config::declare::Declared] = &[
            $($(
                $crate::config::declare::Declared {
                    section: stringify!($section),
                    key: stringify!($key),
                    id: stringify!($id),
                    flag: $long,
                    value_name: $value_name,
                    env: $env,
                    negation: $crate::config::declare::given!($($negation_help)?),
                    reload: $crate::config::declare::reload_kind!($reload),
                },
            )*)*
        ];
    };
}

pub(crate) use {flag_codec, given, reload_kind, settings, when_restart};
