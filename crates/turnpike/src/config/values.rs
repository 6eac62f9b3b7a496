//! The types of setting values that are more than a number or a string
//! (TLS versions, database schemas, XDP modes, users, external IPs, …) and
//! the text parsers shared by the config file, the `TURNPIKE_*` variables
//! and the flags, so that all three accept the same spellings and give the
//! same messages; also the deserializers of the values that TOML spells as
//! strings (addresses, ranges, one-character separators).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

/// The lowest TLS version offered over TCP. DTLS is always DTLS 1.2 (the
/// DTLS counterpart of TLS 1.2): OpenSSL 3.0, which the DTLS side uses, has
/// no DTLS 1.3 (RFC 9147).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, clap::ValueEnum)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3 (the default: browsers and coturn's clients speak
    /// both, older VoIP stacks only 1.2).
    #[default]
    #[value(name = "1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[value(name = "1.3")]
    Tls13,
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        })
    }
}

impl TlsVersion {
    /// Parses `"1.2"` or `"1.3"`; the message for anything else says what
    /// is accepted (and why 1.0 and 1.1 are not).
    pub fn parse(text: &str) -> Result<TlsVersion, String> {
        match text.trim() {
            "1.2" => Ok(TlsVersion::Tls12),
            "1.3" => Ok(TlsVersion::Tls13),
            old @ ("1.0" | "1" | "1.1") => Err(format!(
                "TLS {} is not offered (RFC 8996 deprecates TLS 1.0 and 1.1); use \"1.2\" or \"1.3\"",
                if old == "1" { "1.0" } else { old }
            )),
            _ => Err(format!(
                "{text:?} is not a TLS version; use \"1.2\" or \"1.3\""
            )),
        }
    }
}

/// `"1.2"` or `"1.3"`; also the bare TOML floats `1.2` and `1.3`, which is
/// what people write.
impl<'de> Deserialize<'de> for TlsVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = TlsVersion;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"1.2\" or \"1.3\"")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<TlsVersion, E> {
                TlsVersion::parse(text).map_err(E::custom)
            }
            fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<TlsVersion, E> {
                TlsVersion::parse(&value.to_string()).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<TlsVersion, E> {
                TlsVersion::parse(&value.to_string()).map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Which tables the credential database has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseSchema {
    /// Turnpike's own, created and migrated automatically.
    #[default]
    Turnpike,
    /// An existing coturn database (`turnusers_lt`, `turn_secret`), read-only.
    Coturn,
}

impl fmt::Display for DatabaseSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DatabaseSchema::Turnpike => "turnpike",
            DatabaseSchema::Coturn => "coturn",
        })
    }
}

impl From<DatabaseSchema> for turnpike_store::Schema {
    fn from(schema: DatabaseSchema) -> Self {
        match schema {
            DatabaseSchema::Turnpike => turnpike_store::Schema::Turnpike,
            DatabaseSchema::Coturn => turnpike_store::Schema::Coturn,
        }
    }
}

/// Username format of minted time-limited credentials (`ice.credential_format`,
/// `turnpike credentials --format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CredentialFormat {
    /// TURN REST API: `EXPIRY:USER-ID`, password base64(HMAC-SHA1).
    #[default]
    Rest,
    /// Wire's restund: `d=EXPIRY.v=1.k=INDEX.t=s.r=RANDOM`, password
    /// base64(HMAC-SHA512).
    Wire,
}

impl fmt::Display for CredentialFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CredentialFormat::Rest => "rest",
            CredentialFormat::Wire => "wire",
        })
    }
}

/// Who may ask the ICE endpoint for credentials (`ice.auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum IceAuth {
    /// Callers on a loopback address only (an application server on the
    /// same host, or a proxy in front of it).
    #[default]
    Loopback,
    /// Callers sending `Authorization: Bearer` with the token of
    /// `ice.token_file`.
    Token,
    /// Callers whose request carries `ice.user_header`, which the
    /// application's proxy sets after authenticating them (and strips from
    /// what clients send).
    Header,
}

impl fmt::Display for IceAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IceAuth::Loopback => "loopback",
            IceAuth::Token => "token",
            IceAuth::Header => "header",
        })
    }
}

/// `xdp.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// In the driver where it supports XDP, generic elsewhere.
    #[default]
    Auto,
    /// In the driver only (an interface whose driver lacks XDP is an error).
    Native,
    /// Generic XDP (any device, smaller gain).
    Generic,
}

impl XdpMode {
    /// As `xdp.mode` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        }
    }
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses `xdp.mode` (`--xdp-mode`, `TURNPIKE_XDP_MODE`).
pub fn parse_xdp_mode(text: &str) -> Result<XdpMode, String> {
    match text.trim() {
        "auto" => Ok(XdpMode::Auto),
        "native" => Ok(XdpMode::Native),
        "generic" => Ok(XdpMode::Generic),
        other => Err(format!("{other:?} is not auto, native or generic")),
    }
}

/// One `[[turn.users]]` entry: a static long-term credential.
///
/// `Debug` prints the password as `<redacted>`, so a configuration can be
/// logged or shown in a panic message without leaking it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[turn.users]] table")]
pub struct UserEntry {
    /// USERNAME.
    pub username: String,
    /// Password (the long-term keys are derived from it with the realm).
    pub password: String,
}

impl fmt::Debug for UserEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserEntry")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// One `turn.external_ips` entry, in coturn's syntax: `PUBLIC` or
/// `PUBLIC/PRIVATE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExternalIp {
    /// The address clients reach this host on (advertised in
    /// XOR-RELAYED-ADDRESS).
    pub public: IpAddr,
    /// The relay IP it stands for; `None` means every relay IP of the
    /// public address's family that has no `PUBLIC/PRIVATE` entry of its own.
    pub private: Option<IpAddr>,
}

impl fmt::Display for ExternalIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.private {
            Some(private) => write!(f, "{}/{private}", self.public),
            None => write!(f, "{}", self.public),
        }
    }
}
/// Parses `IP:PORT` with a message that says what is expected. Hostnames are
/// refused on purpose: a server binds addresses, and resolving a name at
/// start-up would make the bound set depend on DNS.
pub fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!(
            "`{text}` is not an IP:PORT address (examples: 0.0.0.0:3478, 192.0.2.1:3478, [::]:3478)"
        )
    })
}

/// Parses an IP address with a message that says what is expected.
pub fn parse_ip(text: &str) -> Result<IpAddr, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("`{text}` is not an IP address (examples: 192.0.2.2, 2001:db8::2)"))
}

/// Parses `PUBLIC` or `PUBLIC/PRIVATE` (`turn.external_ips`, coturn's
/// `external-ip` syntax). Both addresses must be of the same family.
pub fn parse_external_ip(text: &str) -> Result<ExternalIp, String> {
    let trimmed = text.trim();
    let bad = || {
        format!(
            "`{text}` is not PUBLIC or PUBLIC/PRIVATE (examples: 203.0.113.5, 203.0.113.5/10.0.0.5)"
        )
    };
    let (public, private) = match trimmed.split_once('/') {
        Some((public, private)) => (public, Some(private)),
        None => (trimmed, None),
    };
    let public: IpAddr = public.trim().parse().map_err(|_| bad())?;
    let private: Option<IpAddr> = match private {
        Some(private) => Some(private.trim().parse().map_err(|_| bad())?),
        None => None,
    };
    if let Some(private) = private
        && private.is_ipv4() != public.is_ipv4()
    {
        return Err(format!(
            "`{text}` mixes IPv4 and IPv6; PUBLIC and PRIVATE must be of the same family"
        ));
    }
    Ok(ExternalIp { public, private })
}

/// Parses a CIDR range (`10.0.0.0/8`, `fd00::/8`) or a bare IP, which means
/// that one address (`/32` or `/128`). A range with host bits set
/// (`10.0.0.1/8`) is refused, since it usually means a mistyped prefix.
pub fn parse_ip_net(text: &str) -> Result<IpNet, String> {
    let trimmed = text.trim();
    if let Ok(ip) = trimmed.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    let net: IpNet = trimmed.parse().map_err(|_| {
        format!(
            "`{text}` is not a CIDR range or IP address (examples: 10.0.0.0/8, fd00::/8, 192.0.2.7)"
        )
    })?;
    if net.trunc() != net {
        return Err(format!(
            "`{text}` has host bits set; write the network address {}",
            net.trunc()
        ));
    }
    Ok(net)
}

/// Parses `USER:PASSWORD` (split at the first colon, so the password may
/// contain colons). Error messages never repeat the input, which may be a
/// password.
pub fn parse_user(text: &str) -> Result<UserEntry, String> {
    let Some((username, password)) = text.split_once(':') else {
        return Err(
            "expected USER:PASSWORD, with a colon between the user name and the password"
                .to_owned(),
        );
    };
    if username.is_empty() {
        return Err("the user name before the colon of USER:PASSWORD is empty".to_owned());
    }
    if password.is_empty() {
        return Err(format!("user {username:?} has an empty password"));
    }
    Ok(UserEntry {
        username: username.to_owned(),
        password: password.to_owned(),
    })
}
/// Parses a string of exactly one character (`--rest-separator`).
pub fn parse_char(text: &str) -> Result<char, String> {
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Ok(c),
        _ => Err(format!(
            "{text:?} is not one character; write a single character such as \":\""
        )),
    }
}

/// A list element type read from a TOML string.
pub(super) trait FromConfigStr: Sized {
    /// What the string should look like, for type errors.
    const EXPECTING: &'static str;
    fn from_config_str(text: &str) -> Result<Self, String>;
}

impl FromConfigStr for SocketAddr {
    const EXPECTING: &'static str = "an \"IP:PORT\" string";
    fn from_config_str(text: &str) -> Result<Self, String> {
        parse_socket_addr(text)
    }
}

impl FromConfigStr for IpAddr {
    const EXPECTING: &'static str = "an IP address string";
    fn from_config_str(text: &str) -> Result<Self, String> {
        parse_ip(text)
    }
}

impl FromConfigStr for ExternalIp {
    const EXPECTING: &'static str = "a \"PUBLIC\" or \"PUBLIC/PRIVATE\" string";
    fn from_config_str(text: &str) -> Result<Self, String> {
        parse_external_ip(text)
    }
}

impl FromConfigStr for IpNet {
    const EXPECTING: &'static str = "a CIDR range string such as \"10.0.0.0/8\"";
    fn from_config_str(text: &str) -> Result<Self, String> {
        parse_ip_net(text)
    }
}

/// A list of strings, each parsed with [`FromConfigStr`].
pub(super) fn de_list<'de, D: Deserializer<'de>, T: FromConfigStr>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    /// One element, parsed inside its visitor: toml attaches its position
    /// to errors raised while the element is being deserialized, so this
    /// reports the element's own line rather than the array's first line.
    struct Element<T>(T);
    impl<'de, T: FromConfigStr> Deserialize<'de> for Element<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visitor<T>(std::marker::PhantomData<T>);
            impl<T: FromConfigStr> serde::de::Visitor<'_> for Visitor<T> {
                type Value = Element<T>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str(T::EXPECTING)
                }
                fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Element<T>, E> {
                    T::from_config_str(text).map(Element).map_err(E::custom)
                }
            }
            d.deserialize_str(Visitor(std::marker::PhantomData))
        }
    }
    Ok(Vec::<Element<T>>::deserialize(d)?
        .into_iter()
        .map(|e| e.0)
        .collect())
}

/// A one-character string (`rest_separator = ":"`), with a message that says
/// so (serde's own speaks of "a character", which TOML has no type for).
pub(super) fn de_char<'de, D: Deserializer<'de>>(d: D) -> Result<char, D::Error> {
    let text = String::deserialize(d)?;
    parse_char(&text).map_err(serde::de::Error::custom)
}

pub(super) fn de_opt_ip<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpAddr>, D::Error> {
    let text = String::deserialize(d)?;
    parse_ip(&text).map(Some).map_err(serde::de::Error::custom)
}

pub(super) fn de_opt_socket_addr<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    parse_socket_addr(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}
