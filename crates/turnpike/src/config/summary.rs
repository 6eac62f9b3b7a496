//! The one-line summary `check-config` prints: what the server would run
//! with, in words, never with a password or secret.

use std::net::SocketAddr;

use super::settings::Settings;
use super::values::DatabaseSchema;

impl Settings {
    /// One-line human summary, printed by `check-config`.
    pub fn summary(&self) -> String {
        let listen = self
            .stun
            .listen
            .iter()
            .map(SocketAddr::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        let transports = match (self.stun.udp, self.stun.tcp) {
            (true, true) => "udp+tcp",
            (true, false) => "udp",
            _ => "tcp",
        };
        let workers = match self.server.workers {
            0 => format!("{} (one per CPU)", self.worker_threads()),
            n => n.to_string(),
        };
        let software = match self.software() {
            Some(s) => format!("{s:?}"),
            None => "off".to_owned(),
        };
        let nat = match self.nat_discovery() {
            Some(nat) => format!(
                "{} and {} ports {}",
                nat.primary_ip,
                nat.alternate_ip,
                nat.ports
                    .iter()
                    .map(|p| format!("{}/{}", p.primary, p.alternate))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            None => "off".to_owned(),
        };
        let on_off = |b: bool| if b { "on" } else { "off" };
        format!(
            "listen {listen} ({transports}, {} sockets); workers {workers}; software {software}; log {} {}; nat discovery {nat}; response-port {}; padding {}; tls {}; admin {}; xdp {}; database {}; turn {}",
            self.listeners().len(),
            self.log.format,
            self.log.level,
            on_off(self.stun.response_port),
            on_off(self.stun.padding),
            self.tls_summary(),
            self.admin_summary(),
            self.xdp_summary(),
            self.database_summary(),
            self.turn_summary(),
        )
    }

    /// The TLS part of [`Settings::summary`]: the files, listeners, minimum
    /// version and how reloads happen.
    fn tls_summary(&self) -> String {
        let tls = &self.tls;
        let Some(certificate) = &tls.certificate else {
            return "off".to_owned();
        };
        let addrs = |list: &[SocketAddr]| {
            if list.is_empty() {
                "none".to_owned()
            } else {
                list.iter()
                    .map(SocketAddr::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        };
        let key = match &tls.private_key {
            Some(key) => format!("key {}", key.display()),
            None => "key in the certificate file".to_owned(),
        };
        let reload = match tls.reload_interval {
            0 => "reload on SIGHUP".to_owned(),
            n => format!("reload on change (checked every {n} s) or SIGHUP"),
        };
        format!(
            "on (certificate {}, {key}, tls {}, dtls {}, min version {}, {reload})",
            certificate.display(),
            addrs(&tls.listen),
            addrs(&tls.dtls_listen),
            tls.min_version,
        )
    }

    /// The XDP part of [`Settings::summary`]: `off`, or the interfaces and mode.
    fn xdp_summary(&self) -> String {
        if self.xdp.interfaces.is_empty() {
            "off".to_owned()
        } else {
            format!(
                "on ({}, {})",
                self.xdp.interfaces.join(" "),
                self.xdp.mode.as_str()
            )
        }
    }

    /// The admin part of [`Settings::summary`]: `off`, or its addresses,
    /// whether a token guards them, and restund's command port.
    fn admin_summary(&self) -> String {
        let restund = self
            .admin
            .restund_listen
            .map(|addr| format!(", restund udp {addr}"))
            .unwrap_or_default();
        if self.admin.listen.is_empty() {
            return format!("off{restund}");
        }
        let urls = self
            .admin
            .listen
            .iter()
            .map(|addr| format!("http://{addr}"))
            .collect::<Vec<_>>()
            .join(" ");
        let token = match &self.admin.token_file {
            Some(path) => format!("token {}", path.display()),
            None => "no token".to_owned(),
        };
        format!("on ({urls}; {token}){restund}")
    }

    /// The database part of [`Settings::summary`]: where (a PostgreSQL URL
    /// without its password) and which schema.
    fn database_summary(&self) -> String {
        let location = match self.location() {
            Ok(location) => location.redacted(),
            Err(_) => "<invalid url>".to_owned(),
        };
        let access = match self.database.schema {
            DatabaseSchema::Turnpike => "",
            DatabaseSchema::Coturn => ", read-only",
        };
        format!("{location} ({} schema{access})", self.database.schema)
    }

    /// The TURN part of [`Settings::summary`]. Never shows passwords.
    fn turn_summary(&self) -> String {
        let t = &self.turn;
        if !t.enabled {
            return "off".to_owned();
        }
        let mut users = match t.users.len() {
            1 => "1 user".to_owned(),
            n => format!("{n} users"),
        };
        match t.secrets.len() {
            0 => {}
            1 => users.push_str(", 1 secret"),
            n => users.push_str(&format!(", {n} secrets")),
        }
        if t.strict_expiry {
            users.push_str(", strict expiry");
        }
        let relay = if t.relay_ips.is_empty() {
            "relay on the IP each request arrived on".to_owned()
        } else {
            let advertised = self.advertised().unwrap_or_default();
            let ips = t
                .relay_ips
                .iter()
                .map(
                    |ip| match advertised.iter().find(|(relay, _)| relay == ip) {
                        Some((_, public)) => format!("{ip} (external {public})"),
                        None => ip.to_string(),
                    },
                )
                .collect::<Vec<_>>()
                .join(" ");
            format!("relay ips {ips}")
        };
        format!(
            "on (realm {:?}, {users}, {relay}, ports {}-{})",
            t.realm, t.min_port, t.max_port
        )
    }
}
