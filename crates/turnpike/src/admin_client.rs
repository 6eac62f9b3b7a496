//! `turnpike status`, `turnpike allocations`, `turnpike kick`, `turnpike
//! drain`, `turnpike undrain` and `turnpike reload`: the admin endpoint
//! ([`crate::admin_http`]) of a running server, asked from the shell. The
//! address and the token come from the same configuration as `serve`
//! (file, `TURNPIKE_*`, flags): the first `admin.listen` address
//! (a wildcard one asked on the loopback address of its family) and
//! `admin.token_file`.
//!
//! The HTTP client is hyper's own HTTP/1 client connection
//! (`hyper::client::conn::http1`) over a tokio `TcpStream`: hyper is
//! already built for axum, and one request per connection needs no pool.
//!
//! Tables for people by default, JSON (as the endpoint gives it) with
//! `--json`. Every failure is one line: [`AdminError::Usage`] (exit 2)
//! for what the configuration or command line must fix,
//! [`AdminError::Runtime`] (exit 1) for an endpoint that cannot be reached
//! or says no.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use tokio::net::TcpStream;

use crate::admin::AdminError;
use crate::admin_http::{MAX_PAGE, Token};
use crate::config::{Settings, io_message};

/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a whole exchange may take (the endpoint gives up on the
/// workers after [`crate::admin_http::RELAY_TIMEOUT`]).
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// `turnpike status`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct StatusArgs {
    /// Print the endpoint's JSON (`GET /v1/status`) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `turnpike allocations`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct AllocationsArgs {
    /// Only this user's: the whole USERNAME, or the user id of time-limited
    /// credentials (`alice` for `1767225600:alice`).
    #[arg(long, value_name = "NAME")]
    pub username: Option<String>,
    /// Print a JSON array of the allocations instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `turnpike kick`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["username", "id"])))]
pub struct KickArgs {
    /// End every allocation of this user (USERNAME, or the user id of
    /// time-limited credentials), and refuse the user new ones for
    /// database.cache_ttl.
    #[arg(long, value_name = "NAME")]
    pub username: Option<String>,
    /// End the allocation with this id (as `turnpike allocations` shows).
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// Print the endpoint's JSON answer (`{"ended": N}`).
    #[arg(long)]
    pub json: bool,
}

/// `turnpike drain`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct DrainArgs {
    /// Return only once the last allocation has ended (asking every
    /// half second), or fail at --timeout with the count left.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this long (`90`, `90s`, `15m`, `2h`),
    /// exiting with status 1 and the number of allocations left; the server
    /// keeps draining.
    #[arg(long, value_name = "DURATION", requires = "wait", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Print the endpoint's JSON answer
    /// (`{"draining", "allocations", "workers_silent"}`).
    #[arg(long)]
    pub json: bool,
}

/// `turnpike reload`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ReloadArgs {
    /// Print the endpoint's JSON answer (`POST /v1/reload`).
    #[arg(long)]
    pub json: bool,
}

/// `turnpike undrain`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct UndrainArgs {
    /// Print the endpoint's JSON answer.
    #[arg(long)]
    pub json: bool,
}

/// How often `turnpike drain --wait` asks for the allocations left.
pub const DRAIN_POLL: Duration = Duration::from_millis(500);

/// `90`, `90s`, `15m`, `2h`: whole seconds, minutes or hours.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => {
            return Err(format!(
                "{text:?} is not a duration; use seconds (90, 90s), minutes (15m) or hours (2h)"
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(seconds))
        .map(Duration::from_secs)
        .ok_or_else(|| {
            format!(
                "{text:?} is not a duration; use seconds (90, 90s), minutes (15m) or hours (2h)"
            )
        })
}

/// The admin endpoint of the configured server.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The bearer token, if the configuration has one.
    pub token: Option<Token>,
}

/// The address to connect to for `listen`: the same, or for a wildcard
/// address the loopback address of its family.
pub fn connect_address(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, listen.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, listen.port()).into(),
        _ => listen,
    }
}

/// A path segment or query value: everything but unreserved characters
/// percent-encoded.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn encode(text: &str) -> String {
    utf8_percent_encode(text, COMPONENT).to_string()
}

impl Endpoint {
    /// The first `admin.listen` address and the token of
    /// `admin.token_file`.
    pub fn from_settings(settings: &Settings) -> Result<Endpoint, AdminError> {
        let Some(&listen) = settings.admin.listen.first() else {
            return Err(AdminError::Usage(
                "admin.listen is not set, so there is no admin endpoint to ask; use the server's configuration (--config), or give its address with --admin-listen ADDR".to_owned(),
            ));
        };
        let token = settings
            .admin
            .token_file
            .as_deref()
            .map(Token::load)
            .transpose()
            .map_err(|e| AdminError::Usage(e.to_string()))?;
        Ok(Endpoint {
            addr: connect_address(listen),
            token,
        })
    }

    /// One request, one connection: the status and the body.
    pub async fn exchange(
        &self,
        method: Method,
        target: &str,
    ) -> Result<(StatusCode, String), AdminError> {
        let addr = self.addr;
        let unreachable = |why: String| {
            AdminError::Runtime(format!(
                "cannot reach the admin endpoint at {addr}: {why}; is turnpike serve running with admin.listen set?"
            ))
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| unreachable("timed out".to_owned()))?
            .map_err(|e| unreachable(io_message(&e).to_lowercase()))?;
        let _ = stream.set_nodelay(true);
        let broken = |e: hyper::Error| {
            AdminError::Runtime(format!(
                "the admin endpoint at {addr} broke off the exchange: {e}"
            ))
        };
        let mut request = Request::builder()
            .method(method)
            .uri(target)
            .header(header::HOST, addr.to_string());
        if let Some(token) = &self.token {
            let mut value =
                HeaderValue::from_str(&format!("Bearer {}", token.as_str())).map_err(|_| {
                    AdminError::Usage(
                        "admin.token_file holds a token that cannot be sent in a header".to_owned(),
                    )
                })?;
            value.set_sensitive(true);
            request = request.header(header::AUTHORIZATION, value);
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| AdminError::Usage(format!("cannot ask for {target}: {e}")))?;
        let exchange = async {
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(broken)?;
            let driver = tokio::spawn(connection);
            let response = sender.send_request(request).await.map_err(broken)?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(broken)?
                .to_bytes();
            driver.abort();
            Ok::<_, AdminError>((status, String::from_utf8_lossy(&body).into_owned()))
        };
        tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                AdminError::Runtime(format!(
                    "the admin endpoint at {addr} did not answer within {} s",
                    EXCHANGE_TIMEOUT.as_secs()
                ))
            })?
    }

    /// [`Endpoint::exchange`], with any answer but `expected` made an
    /// error, and the body parsed as JSON.
    async fn json(
        &self,
        method: Method,
        target: &str,
    ) -> Result<(StatusCode, serde_json::Value), AdminError> {
        let (status, body) = self.exchange(method, target).await?;
        let addr = self.addr;
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(&body);
        if status == StatusCode::UNAUTHORIZED {
            let fix = match &self.token {
                Some(_) => {
                    "the token in admin.token_file is not the server's; use the server's token file"
                }
                None => {
                    "it needs a token: set admin.token_file (or --admin-token-file) to the server's token file"
                }
            };
            return Err(AdminError::Usage(format!(
                "the admin endpoint at {addr} refused the request (401 unauthorized): {fix}"
            )));
        }
        if matches!(
            status,
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
        ) && parsed.is_err()
        {
            return Err(AdminError::Runtime(format!(
                "the admin endpoint at {addr} does not serve {target} (an older turnpike?)"
            )));
        }
        let value = parsed.map_err(|_| {
            AdminError::Runtime(format!(
                "the admin endpoint at {addr} answered {status} with something other than JSON: {}",
                first_line(&body)
            ))
        })?;
        // 404 (no such allocation) and 422 (a reload refused) carry
        // answers of their own.
        if !status.is_success()
            && status != StatusCode::NOT_FOUND
            && status != StatusCode::UNPROCESSABLE_ENTITY
        {
            let why = value["error"]
                .as_str()
                .map_or_else(|| first_line(&body), str::to_owned);
            return Err(AdminError::Runtime(format!(
                "the admin endpoint at {addr} answered {status}: {why}"
            )));
        }
        Ok((status, value))
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<serde_json::Value, AdminError> {
        let (status, value) = self.json(Method::GET, "/v1/status").await?;
        self.expect_success(status, "/v1/status")?;
        Ok(value)
    }

    /// Every page of `GET /v1/allocations`, for one user or all.
    pub async fn allocations(
        &self,
        username: Option<&str>,
    ) -> Result<Vec<serde_json::Value>, AdminError> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut target = format!("/v1/allocations?limit={MAX_PAGE}");
            if let Some(user) = username {
                let _ = write!(target, "&user={}", encode(user));
            }
            if let Some(cursor) = &cursor {
                let _ = write!(target, "&cursor={}", encode(cursor));
            }
            let (status, mut page) = self.json(Method::GET, &target).await?;
            self.expect_success(status, "/v1/allocations")?;
            match page["allocations"].take() {
                serde_json::Value::Array(list) => all.extend(list),
                _ => return Err(self.unexpected("/v1/allocations")),
            }
            match page["next_cursor"].take() {
                serde_json::Value::String(next) if Some(&next) != cursor.as_ref() => {
                    cursor = Some(next);
                }
                _ => break,
            }
        }
        Ok(all)
    }

    /// `DELETE /v1/allocations/ID` or `DELETE /v1/users/NAME/allocations`:
    /// how many ended. An id with no live allocation is an error.
    pub async fn kick(&self, args: &KickArgs) -> Result<(u64, serde_json::Value), AdminError> {
        let target = match (&args.id, &args.username) {
            (Some(id), _) => format!("/v1/allocations/{}", encode(id)),
            (None, Some(user)) => format!("/v1/users/{}/allocations", encode(user)),
            (None, None) => {
                return Err(AdminError::Usage(
                    "say what to end: --username NAME or --id ID".to_owned(),
                ));
            }
        };
        let (status, value) = self.json(Method::DELETE, &target).await?;
        if status == StatusCode::NOT_FOUND {
            let id = args.id.as_deref().unwrap_or_default();
            return Err(AdminError::Runtime(format!(
                "no live allocation has id {id:?} (see turnpike allocations)"
            )));
        }
        self.expect_success(status, &target)?;
        let ended = value["ended"]
            .as_u64()
            .ok_or_else(|| self.unexpected(&target))?;
        Ok((ended, value))
    }

    /// `GET`, `POST` or `DELETE /v1/drain`: the state after.
    pub async fn drain(&self, method: Method) -> Result<DrainReport, AdminError> {
        let (status, value) = self.json(method, "/v1/drain").await?;
        self.expect_success(status, "/v1/drain")?;
        serde_json::from_value(value).map_err(|_| self.unexpected("/v1/drain"))
    }

    /// `POST /v1/reload`: the report, whether applied (200) or refused
    /// (422).
    pub async fn reload(&self) -> Result<ReloadReply, AdminError> {
        let (status, value) = self.json(Method::POST, "/v1/reload").await?;
        if status != StatusCode::UNPROCESSABLE_ENTITY {
            self.expect_success(status, "/v1/reload")?;
        }
        let report: ReloadReply =
            serde_json::from_value(value.clone()).map_err(|_| self.unexpected("/v1/reload"))?;
        Ok(ReloadReply {
            json: value,
            ..report
        })
    }

    fn expect_success(&self, status: StatusCode, target: &str) -> Result<(), AdminError> {
        match status.is_success() {
            true => Ok(()),
            false => Err(AdminError::Runtime(format!(
                "the admin endpoint at {} answered {status} for {target}",
                self.addr
            ))),
        }
    }

    fn unexpected(&self, target: &str) -> AdminError {
        AdminError::Runtime(format!(
            "the admin endpoint at {} gave an answer to {target} this turnpike does not understand (another version?)",
            self.addr
        ))
    }
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default().trim();
    line.chars().take(200).collect()
}

/// Runs `future` on a small runtime of its own.
fn block_on<T>(future: impl Future<Output = Result<T, AdminError>>) -> Result<T, AdminError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AdminError::Runtime(format!("cannot start a runtime: {e}")))?
        .block_on(future)
}

/// `turnpike status`: what to print.
pub fn status(args: &StatusArgs, settings: &Settings) -> Result<String, AdminError> {
    let endpoint = Endpoint::from_settings(settings)?;
    let value = block_on(endpoint.status())?;
    if args.json {
        return Ok(pretty(&value));
    }
    let report: StatusReport =
        serde_json::from_value(value).map_err(|_| endpoint.unexpected("/v1/status"))?;
    Ok(report.render())
}

/// `turnpike allocations`: what to print.
pub fn allocations(args: &AllocationsArgs, settings: &Settings) -> Result<String, AdminError> {
    let endpoint = Endpoint::from_settings(settings)?;
    let all = block_on(endpoint.allocations(args.username.as_deref()))?;
    if args.json {
        return Ok(pretty(&serde_json::Value::Array(all)));
    }
    let rows: Vec<AllocationRow> = all
        .into_iter()
        .map(serde_json::from_value)
        .collect::<Result<_, _>>()
        .map_err(|_| endpoint.unexpected("/v1/allocations"))?;
    Ok(render_allocations(&rows, args.username.as_deref()))
}

/// `turnpike kick`: what to print.
pub fn kick(args: &KickArgs, settings: &Settings) -> Result<String, AdminError> {
    let endpoint = Endpoint::from_settings(settings)?;
    let (ended, value) = block_on(endpoint.kick(args))?;
    if args.json {
        return Ok(pretty(&value));
    }
    let plural = if ended == 1 { "" } else { "s" };
    Ok(match (&args.id, &args.username) {
        (Some(id), _) => format!("ended allocation {id}\n"),
        (None, Some(user)) => format!(
            "ended {ended} allocation{plural} of user {user:?}; the user cannot make new ones for {} s (database.cache_ttl)\n",
            settings.database.cache_ttl
        ),
        (None, None) => String::new(),
    })
}

/// `turnpike drain`: starts draining; with `--wait`, returns once no
/// allocation is left (printing each new count on stdout as it goes), or
/// fails at `--timeout` saying how many are left.
pub fn drain(args: &DrainArgs, settings: &Settings) -> Result<String, AdminError> {
    let endpoint = Endpoint::from_settings(settings)?;
    block_on(async {
        let started = tokio::time::Instant::now();
        let mut state = endpoint.drain(Method::POST).await?;
        if !args.wait {
            return Ok(match args.json {
                true => pretty(&serde_json::to_value(state).unwrap_or_default()),
                false => format!(
                    "draining: new allocations are refused; {} left (turnpike undrain to stop)\n",
                    state.left()
                ),
            });
        }
        let deadline = args.timeout.map(|t| started + t);
        let mut shown = None;
        loop {
            if state.drained() {
                return Ok(match args.json {
                    true => pretty(&serde_json::to_value(state).unwrap_or_default()),
                    false => "drained: no allocation left\n".to_owned(),
                });
            }
            if !args.json && shown != Some(state) {
                // Progress for whoever watches; the last line is the result.
                let line = format!("draining: {} left\n", state.left());
                let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), line.as_bytes());
                shown = Some(state);
            }
            let now = tokio::time::Instant::now();
            if let (Some(deadline), Some(timeout)) = (deadline, args.timeout)
                && now >= deadline
            {
                return Err(AdminError::Runtime(format!(
                    "still {} after {} s of draining; the server keeps draining (turnpike undrain to stop it)",
                    state.left(),
                    timeout.as_secs()
                )));
            }
            let pause = deadline.map_or(DRAIN_POLL, |d| DRAIN_POLL.min(d - now));
            tokio::time::sleep(pause).await;
            state = endpoint.drain(Method::GET).await?;
        }
    })
}

/// `turnpike undrain`: stops draining.
pub fn undrain(args: &UndrainArgs, settings: &Settings) -> Result<String, AdminError> {
    let endpoint = Endpoint::from_settings(settings)?;
    let state = block_on(endpoint.drain(Method::DELETE))?;
    Ok(match args.json {
        true => pretty(&serde_json::to_value(state).unwrap_or_default()),
        false => format!(
            "not draining: new allocations are made again; {} live\n",
            state.left()
        ),
    })
}

/// `/v1/drain` as this client reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct DrainReport {
    /// New allocations are refused.
    pub draining: bool,
    /// Live allocations.
    pub allocations: u64,
    /// Workers that did not answer (their allocations are not counted).
    #[serde(default)]
    pub workers_silent: u64,
}

impl DrainReport {
    /// Draining, and known to be empty.
    pub fn drained(&self) -> bool {
        self.draining && self.allocations == 0 && self.workers_silent == 0
    }

    /// `3 allocations`, `1 allocation`, with the silent workers if any.
    fn left(&self) -> String {
        let plural = if self.allocations == 1 { "" } else { "s" };
        let mut text = format!("{} allocation{plural}", self.allocations);
        if self.workers_silent > 0 {
            let _ = write!(
                text,
                " (and those of {} worker{} that did not answer)",
                self.workers_silent,
                if self.workers_silent == 1 { "" } else { "s" }
            );
        }
        text
    }
}

/// `POST /v1/reload`'s answer as this client reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct ReloadReply {
    /// `applied` or `refused`.
    pub result: String,
    /// Why refused.
    #[serde(default)]
    pub error: Option<String>,
    /// What was not applied.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The settings applied.
    #[serde(default)]
    pub changed: Vec<String>,
    /// The file in service after it.
    #[serde(default)]
    pub config_sha256: String,
    /// The whole answer, for `--json`.
    #[serde(skip)]
    pub json: serde_json::Value,
}

impl ReloadReply {
    /// Whether the new configuration is in service.
    pub fn applied(&self) -> bool {
        self.result == "applied"
    }

    /// What `turnpike reload` prints: the outcome, then one line per
    /// warning.
    pub fn render(&self) -> String {
        let mut out = if self.applied() {
            let changed = match self.changed.is_empty() {
                true => "nothing changed".to_owned(),
                false => format!("changed {}", self.changed.join(", ")),
            };
            format!(
                "configuration reloaded (sha256 {}): {changed}\n",
                self.config_sha256
            )
        } else {
            format!(
                "configuration not reloaded: {}; still running sha256 {}\n",
                self.error.as_deref().unwrap_or("refused"),
                self.config_sha256
            )
        };
        for warning in &self.warnings {
            let _ = writeln!(out, "warning: {warning}");
        }
        out
    }
}

/// `turnpike reload`: what to print on stdout, and whether the new
/// configuration was applied (`Err` only when the endpoint could not be
/// asked). A refused reload's error is also in the second part, for the
/// exit status and the one line on stderr.
pub fn reload(
    args: &ReloadArgs,
    settings: &Settings,
) -> Result<(String, Option<String>), AdminError> {
    let endpoint = Endpoint::from_settings(settings)?;
    let reply = block_on(endpoint.reload())?;
    let output = match args.json {
        true => pretty(&reply.json),
        false => reply.render(),
    };
    let refused = (!reply.applied()).then(|| {
        format!(
            "configuration not reloaded: {}",
            reply.error.as_deref().unwrap_or("refused")
        )
    });
    Ok((output, refused))
}

fn pretty(value: &serde_json::Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// `/v1/status` as this client reads it (unknown fields ignored, so a
/// newer server still answers an older client).
#[derive(Debug, Clone, Deserialize)]
pub struct StatusReport {
    version: String,
    uptime_seconds: u64,
    ready: bool,
    not_ready: Vec<String>,
    workers: WorkersReport,
    listeners: Vec<ListenerReport>,
    allocations: AllocationsReport,
    draining: bool,
    database: Option<DatabaseReport>,
    tls: Option<TlsReport>,
    /// `None` from a server older than live reconfiguration.
    #[serde(default)]
    config: Option<ConfigReport>,
}

#[derive(Debug, Clone, Deserialize)]
struct ConfigReport {
    sha256: String,
    reloads_applied: u64,
    reloads_refused: u64,
}

#[derive(Debug, Clone, Deserialize)]
struct WorkersReport {
    running: u64,
    silent: u64,
}

#[derive(Debug, Clone, Deserialize)]
struct ListenerReport {
    transport: String,
    address: String,
}

#[derive(Debug, Clone, Deserialize)]
struct AllocationsReport {
    total: u64,
    channels: u64,
    permissions: u64,
    by_kind: Vec<KindReport>,
}

#[derive(Debug, Clone, Deserialize)]
struct KindReport {
    transport: String,
    family: String,
    relay: String,
    allocations: u64,
}

#[derive(Debug, Clone, Deserialize)]
struct DatabaseReport {
    up: bool,
    down_since: Option<String>,
    cache_hits: u64,
    cache_misses: u64,
}

#[derive(Debug, Clone, Deserialize)]
struct TlsReport {
    subject: String,
    not_after: String,
}

/// `3d 4h 5m 6s`, without the leading zero units.
pub fn duration_words(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    let mut out = String::new();
    for (n, unit) in [(d, "d"), (h, "h"), (m, "m")] {
        if n > 0 || !out.is_empty() {
            let _ = write!(out, "{n}{unit} ");
        }
    }
    let _ = write!(out, "{s}s");
    out
}

impl StatusReport {
    /// The table `turnpike status` prints.
    pub fn render(&self) -> String {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        let ready = match self.ready {
            true => "yes".to_owned(),
            false => format!("no ({})", self.not_ready.join("; ")),
        };
        let database = match &self.database {
            None => "none (TURN off)".to_owned(),
            Some(db) => {
                let state = match (db.up, &db.down_since) {
                    (true, _) => "up".to_owned(),
                    (false, Some(since)) => format!("unreachable since {since}"),
                    (false, None) => "unreachable".to_owned(),
                };
                format!(
                    "{state}; cache {} hits, {} misses",
                    db.cache_hits, db.cache_misses
                )
            }
        };
        let certificate = match &self.tls {
            None => "none (TLS off)".to_owned(),
            Some(tls) => format!("{}, expires {}", tls.subject, tls.not_after),
        };
        let listeners = match self.listeners.is_empty() {
            true => "none".to_owned(),
            false => self
                .listeners
                .iter()
                .map(|l| format!("{} {}", l.transport, l.address))
                .collect::<Vec<_>>()
                .join(", "),
        };
        let a = &self.allocations;
        let rows = [
            ("version", self.version.clone()),
            ("uptime", duration_words(self.uptime_seconds)),
            ("ready", ready),
            ("draining", yes_no(self.draining).to_owned()),
            (
                "workers",
                format!(
                    "{} running, {} silent",
                    self.workers.running, self.workers.silent
                ),
            ),
            ("listeners", listeners),
            ("database", database),
            ("certificate", certificate),
            (
                "config",
                match &self.config {
                    Some(c) => format!(
                        "sha256 {}; reloads {} applied, {} refused",
                        c.sha256, c.reloads_applied, c.reloads_refused
                    ),
                    None => "unknown (an older turnpike)".to_owned(),
                },
            ),
            (
                "allocations",
                format!(
                    "{} ({} channels, {} permissions)",
                    a.total, a.channels, a.permissions
                ),
            ),
        ];
        let mut out = String::new();
        for (name, value) in rows {
            let _ = writeln!(out, "{:<12} {value}", format!("{name}:"));
        }
        if !a.by_kind.is_empty() {
            out.push('\n');
            let table: Vec<Vec<String>> = a
                .by_kind
                .iter()
                .map(|k| {
                    vec![
                        k.transport.clone(),
                        k.family.clone(),
                        k.relay.clone(),
                        k.allocations.to_string(),
                    ]
                })
                .collect();
            out.push_str(&render_table(
                &["TRANSPORT", "FAMILY", "RELAY", "ALLOCATIONS"],
                &table,
            ));
        }
        out
    }
}

/// One allocation as this client reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct AllocationRow {
    id: String,
    user: String,
    client: String,
    transport: String,
    relayed: Vec<String>,
    relay_kind: String,
    lifetime_left: u64,
    permissions: Vec<serde_json::Value>,
    channels: Vec<serde_json::Value>,
    to_peer_bytes: u64,
    to_client_bytes: u64,
}

/// The table `turnpike allocations` prints, and a count.
pub fn render_allocations(rows: &[AllocationRow], username: Option<&str>) -> String {
    let of = username
        .map(|u| format!(" of user {u:?}"))
        .unwrap_or_default();
    if rows.is_empty() {
        return format!("no allocations{of}\n");
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.user.clone(),
                format!("{} {}", r.transport, r.client),
                format!("{} {}", r.relay_kind, r.relayed.join(",")),
                format!("{}s", r.lifetime_left),
                r.permissions.len().to_string(),
                r.channels.len().to_string(),
                r.to_peer_bytes.to_string(),
                r.to_client_bytes.to_string(),
            ]
        })
        .collect();
    let mut out = render_table(
        &[
            "ID",
            "USER",
            "CLIENT",
            "RELAYED",
            "LEFT",
            "PERMS",
            "CHANS",
            "BYTES_TO_PEER",
            "BYTES_TO_CLIENT",
        ],
        &table,
    );
    let plural = if rows.len() == 1 { "" } else { "s" };
    let _ = writeln!(out, "{} allocation{plural}{of}", rows.len());
    out
}

/// Columns left-aligned, two spaces apart, no trailing spaces.
fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let headers: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&headers).chain(rows) {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;
