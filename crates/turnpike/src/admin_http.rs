//! The admin HTTP endpoint (`[admin] listen`): health probes, metrics,
//! status, live allocations, kicks and reloads, served by axum over plain HTTP/1.1
//! on the control runtime. The answers come from the running relay through
//! [`Relay`] (each worker asked between two batches).
//!
//! - `GET /healthz`: `200 ok` while every worker answers
//!   ([`Health::alive`]), else 503 with a one-line reason.
//! - `GET /readyz`: `200 ready` once started, not draining and with the
//!   credential database reachable ([`Health::ready`]), else 503 naming
//!   why ([`not_ready_reasons`]).
//! - `GET /metrics`: Prometheus text format (version 0.0.4), written by
//!   [`crate::observe::metrics`] from a snapshot of every worker's
//!   counters (every metric is listed there).
//! - `GET /v1/status`: [`StatusV1`] as JSON: version, uptime, readiness,
//!   workers, listeners, allocations by transport and family, draining,
//!   the credential database, the certificate, the configuration in
//!   service (its file's SHA-256) and its reloads.
//! - `GET /status`: the older, smaller answer, unchanged: `{"version",
//!   "uptime_seconds", "tls"}` where `tls` is `{"subject", "not_after"
//!   (RFC 3339, UTC), "not_after_unix", "generation"}` or `null` without
//!   TLS. It does not ask the workers.
//! - `GET /v1/allocations?user=NAME&limit=N&cursor=ID`: live allocations
//!   ([`AllocationInfo`]) ordered by id, those after `cursor`, at most
//!   `limit` (default [`DEFAULT_PAGE`], at most [`MAX_PAGE`]):
//!   `{"allocations": […], "next_cursor": ID or null}`.
//! - `DELETE /v1/allocations/{id}`: ends it; `{"ended": 1}`, or 404.
//! - `DELETE /v1/users/{name}/allocations`: ends the user's allocations
//!   and refuses the user new ones for `database.cache_ttl`;
//!   `{"ended": N}`, 200 even for 0.
//! - `POST /v1/drain`: starts draining (new Allocates refused, existing
//!   allocations kept, `/readyz` 503; [`Relay::set_draining`]);
//!   `DELETE /v1/drain` stops it; `GET /v1/drain` asks. Each answers
//!   [`DrainState`](crate::observe::DrainState): `{"draining",
//!   "allocations", "workers_silent"}`, once
//!   every worker has applied the change.
//! - `POST /v1/reload`: reloads the configuration as SIGHUP does
//!   ([`crate::runtime`]'s reload) and answers what it did
//!   ([`ReloadReport`](crate::observe::ReloadReport): `{"result": "applied" | "refused", "error",
//!   "warnings", "changed", "config_sha256"}`): 200 when applied, 422 when
//!   refused (the file does not parse or validate; nothing changed).
//!
//! The certificate values are read from [`Certificates`] at each request,
//! so they are those of the certificate actually served: after a refused
//! (broken) renewal they are still the previous certificate's.
//!
//! Access ([`Access`]): with `admin.token_file`, every request must carry
//! `Authorization: Bearer <token>` (compared in constant time), else 401
//! with `WWW-Authenticate: Bearer`; `/healthz` and `/readyz` are exempt
//! while `admin.probes_without_token`. Without a token,
//! [`crate::config::Settings::validate`] allows loopback addresses only.
//! The TURN peer policy refuses the admin addresses as peers, and
//! connections are bounded: at most [`MAX_CONNECTIONS`] at once (more wait
//! in the kernel's backlog), each must send a whole request within
//! [`REQUEST_TIMEOUT`] of connecting or of starting it (bytes trickled in
//! do not extend that), and an idle keep-alive connection is closed after
//! [`IDLE_TIMEOUT`]. So a forgotten or hostile client cannot pile up
//! descriptors the relay needs, and clients holding every slot with
//! unfinished requests delay a scraper (waiting in the backlog, served in
//! turn) by at most [`REQUEST_TIMEOUT`], never lock it out. A question to
//! the workers that takes longer than [`RELAY_TIMEOUT`] is answered 503.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use anyhow::anyhow;
use axum::Router;
use axum::extract::{Path as UrlPath, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use socket2::{Domain, Protocol, Socket, Type};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use zeroize::Zeroizing;

use turnpike_core::stats::{Label, TransportLabel};
use turnpike_xdp::FastPath;

use crate::config::{AdminSettings, ConfigError};
use crate::date;
use crate::observe::{
    AllocationFilter, AllocationInfo, ConfigFacts, Health, Relay, ReloadResult, Snapshot,
};
use crate::tls::Certificates;

/// Admin connections open at once, over all admin addresses.
pub const MAX_CONNECTIONS: usize = 32;

/// An idle keep-alive connection is closed after this long without the
/// start of a new request (a scraper's connection between scrapes
/// included; it reconnects).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A request (its headers and body) must arrive whole within this long of
/// the connection's opening or of its own first byte.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// `Content-Type` of `/metrics`: the Prometheus text format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A question to the workers ([`Relay`]) unanswered after this long is
/// answered 503 (a stuck worker must not hold admin connections forever).
pub const RELAY_TIMEOUT: Duration = Duration::from_secs(10);

/// `limit` of `GET /v1/allocations` when none is given.
pub const DEFAULT_PAGE: usize = 100;

/// Largest `limit` of `GET /v1/allocations`; a larger one is lowered to it.
pub const MAX_PAGE: usize = 1000;

/// Shortest admin token accepted, in bytes.
pub const MIN_TOKEN_LEN: usize = 16;

/// One listening socket of the server, as `/v1/status` lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ListenerInfo {
    /// `udp`, `tcp`, `tls` or `dtls`.
    pub transport: &'static str,
    /// The address it is bound to.
    pub address: SocketAddr,
}

/// What the endpoint reports on.
#[derive(Clone)]
pub struct AdminState {
    /// When the server started (for `uptime_seconds`).
    pub started: Instant,
    /// The TLS certificates in service, `None` without TLS.
    pub certs: Option<Arc<Certificates>>,
    /// The XDP fast path, `None` when off.
    pub fast_path: Option<Arc<Mutex<FastPath>>>,
    /// The running relay: counters, health, allocations, kicks.
    pub relay: Arc<dyn Relay>,
    /// The client listeners (STUN/TURN over UDP and TCP, TLS, DTLS).
    pub listeners: Vec<ListenerInfo>,
    /// The ICE-server endpoint (`ice.enabled`), whose routes are served
    /// beside these.
    pub ice: Option<Arc<crate::ice::IceService>>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("started", &self.started)
            .field("certs", &self.certs)
            .field("fast_path", &self.fast_path.is_some())
            .field("listeners", &self.listeners)
            .finish_non_exhaustive()
    }
}

impl AdminState {
    /// The `/metrics` body for `snapshot` (every worker's counters, read
    /// by the caller).
    pub fn metrics(&self, snapshot: &Snapshot) -> String {
        let mut text = crate::observe::metrics::render(snapshot, self.certs.as_deref());
        if let Some(ice) = &self.ice {
            text.push_str(&crate::observe::metrics::render_ice(&ice.facts()));
        }
        text
    }

    /// The `/status` body.
    pub fn status(&self) -> Status {
        Status {
            version: env!("CARGO_PKG_VERSION"),
            uptime_seconds: self.started.elapsed().as_secs(),
            tls: self.tls_status(),
        }
    }

    /// The certificate in service, `None` without TLS.
    fn tls_status(&self) -> Option<TlsStatus> {
        self.certs.as_ref().map(|certs| {
            let not_after = certs.not_after();
            TlsStatus {
                subject: certs.subject(),
                not_after: rfc3339(not_after),
                not_after_unix: unix_seconds(not_after),
                generation: certs.generation(),
            }
        })
    }

    /// The `/v1/status` body, from a snapshot and the health read at the
    /// same time.
    pub fn status_v1(&self, snapshot: &Snapshot, health: &Health) -> StatusV1 {
        let gauges = &snapshot.workers.allocations;
        let mut by_kind = Vec::new();
        for (t, families) in gauges.by_kind.iter().enumerate() {
            for (f, kinds) in families.iter().enumerate() {
                for (k, &count) in kinds.iter().enumerate() {
                    if count == 0 {
                        continue;
                    }
                    by_kind.push(AllocationCount {
                        transport: TransportLabel::ALL.get(t).map_or("other", |l| l.as_str()),
                        family: ["ipv4", "ipv6"][f],
                        relay: ["udp", "tcp"][k],
                        allocations: count,
                    });
                }
            }
        }
        StatusV1 {
            version: env!("CARGO_PKG_VERSION"),
            uptime_seconds: self.started.elapsed().as_secs(),
            ready: health.ready(),
            not_ready: not_ready_reasons(health),
            workers: WorkersStatus {
                running: snapshot.worker_count,
                silent: snapshot.workers_silent,
            },
            listeners: self.listeners.clone(),
            allocations: AllocationsStatus {
                total: gauges.total,
                channels: gauges.channels,
                permissions: gauges.permissions,
                by_kind,
            },
            draining: snapshot.draining,
            database: snapshot.credentials.as_ref().map(|c| DatabaseStatus {
                up: c.database_up,
                down_since: c.down_since.map(rfc3339),
                cache_hits: c.cache_hits,
                cache_misses: c.cache_misses,
            }),
            tls: self.tls_status(),
            config: snapshot.config.clone(),
        }
    }
}

/// Why the server is not ready, in words (empty when it is): `starting`,
/// `draining`, `database unreachable`, `N of M workers silent`.
pub fn not_ready_reasons(health: &Health) -> Vec<String> {
    let mut reasons = Vec::new();
    if !health.started {
        reasons.push("starting".to_owned());
    }
    if health.draining {
        reasons.push("draining".to_owned());
    }
    if health.database_down {
        reasons.push("database unreachable".to_owned());
    }
    if !health.alive() {
        reasons.push(silent_workers(health));
    }
    reasons
}

/// `N of M workers silent`.
fn silent_workers(health: &Health) -> String {
    format!(
        "{} of {} workers silent",
        health.workers_silent, health.workers
    )
}

/// The `/v1/status` answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StatusV1 {
    /// Turnpike's version.
    pub version: &'static str,
    /// Whole seconds since the server started.
    pub uptime_seconds: u64,
    /// What `/readyz` says.
    pub ready: bool,
    /// Why not ready ([`not_ready_reasons`]); empty when ready.
    pub not_ready: Vec<String>,
    /// The worker threads.
    pub workers: WorkersStatus,
    /// The client listeners.
    pub listeners: Vec<ListenerInfo>,
    /// Live allocations.
    pub allocations: AllocationsStatus,
    /// Whether the server is draining (refusing new allocations).
    pub draining: bool,
    /// The credential database; `None` (`null`) with TURN off.
    pub database: Option<DatabaseStatus>,
    /// The certificate in service; `None` (`null`) without TLS.
    pub tls: Option<TlsStatus>,
    /// The configuration in service (its file's SHA-256) and how many
    /// reloads were applied and refused.
    pub config: ConfigFacts,
}

/// The workers part of [`StatusV1`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct WorkersStatus {
    /// Worker threads running.
    pub running: usize,
    /// Workers that did not answer in time (their counts are missing).
    pub silent: usize,
}

/// The allocations part of [`StatusV1`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AllocationsStatus {
    /// Live allocations, each counted once.
    pub total: u64,
    /// Channels bound now.
    pub channels: u64,
    /// Permissions installed now.
    pub permissions: u64,
    /// By client transport, relay family and relay kind; only the kinds
    /// with allocations. A dual-stack allocation counts once per family.
    pub by_kind: Vec<AllocationCount>,
}

/// One row of [`AllocationsStatus::by_kind`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AllocationCount {
    /// The client's transport: udp, tcp, tls or dtls.
    pub transport: &'static str,
    /// The relayed address's family: ipv4 or ipv6.
    pub family: &'static str,
    /// udp, or tcp (RFC 6062).
    pub relay: &'static str,
    /// How many.
    pub allocations: u64,
}

/// The database part of [`StatusV1`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DatabaseStatus {
    /// Whether the last database call succeeded.
    pub up: bool,
    /// Since when it has been unreachable (RFC 3339, UTC), if it is.
    pub down_since: Option<String>,
    /// Lookups answered from the cache.
    pub cache_hits: u64,
    /// Lookups that went to the database.
    pub cache_misses: u64,
}

/// The `/status` answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    /// Turnpike's version.
    pub version: &'static str,
    /// Whole seconds since the server started.
    pub uptime_seconds: u64,
    /// The certificate in service; `None` (`null`) without TLS.
    pub tls: Option<TlsStatus>,
}

/// The certificate part of [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TlsStatus {
    /// Subject of the server certificate (`CN=…, O=…`).
    pub subject: String,
    /// Its notAfter, RFC 3339 in UTC (`2027-01-31T12:00:00Z`).
    pub not_after: String,
    /// Its notAfter, Unix time.
    pub not_after_unix: i64,
    /// Reloads that changed the certificate or key since the start.
    pub generation: u64,
}

/// Whole seconds since 1970 (negative before).
pub fn unix_seconds(time: SystemTime) -> i64 {
    date::unix_seconds(time)
}

/// `2027-01-31T12:00:00Z`.
pub fn rfc3339(time: SystemTime) -> String {
    date::format_rfc3339(time)
}

/// The admin bearer token (`admin.token_file`), wiped from memory when
/// dropped; never printed.
#[derive(Clone)]
pub struct Token(Arc<Zeroizing<String>>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

impl Token {
    /// A token from the text of its file (surrounding whitespace
    /// trimmed): at least [`MIN_TOKEN_LEN`] printable ASCII characters
    /// without spaces (what an `Authorization` header carries). The error
    /// says what is wrong, never the token.
    pub fn parse(text: &str) -> Result<Token, String> {
        let token = text.trim();
        if token.is_empty() {
            return Err("is empty".to_owned());
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "holds a space, a line break or a character that is not printable ASCII inside the token"
                    .to_owned(),
            );
        }
        if token.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "holds a token of {} characters; use at least {MIN_TOKEN_LEN}",
                token.len()
            ));
        }
        Ok(Token(Arc::new(Zeroizing::new(token.to_owned()))))
    }

    /// Reads `admin.token_file`. Errors are one line naming the key, the
    /// file and the fix.
    pub fn load(path: &Path) -> Result<Token, ConfigError> {
        Token::load_setting(path, "admin.token_file")
    }

    /// Reads the token file of the setting `key` (`ice.token_file`).
    pub fn load_setting(path: &Path, key: &str) -> Result<Token, ConfigError> {
        let make = format!("`openssl rand -hex 32 > {}`", path.display());
        let text = std::fs::read(path).map_err(|err| {
            let hint = match err.kind() {
                io::ErrorKind::NotFound => format!("create it, e.g. with {make}"),
                io::ErrorKind::PermissionDenied => {
                    "make it readable by the user turnpike runs as".to_owned()
                }
                _ => format!("check {key}"),
            };
            ConfigError::invalid(format!(
                "{key} {}: cannot read it: {}; {hint}",
                path.display(),
                crate::config::io_message(&err).to_lowercase()
            ))
        })?;
        let text = Zeroizing::new(String::from_utf8(text).map_err(|_| {
            ConfigError::invalid(format!(
                "{key} {} is not text; write a token into it, e.g. with {make}",
                path.display()
            ))
        })?);
        Token::parse(&text).map_err(|why| {
            ConfigError::invalid(format!(
                "{key} {} {why}; write a token into it, e.g. with {make}",
                path.display()
            ))
        })
    }

    /// The token, for a client's `Authorization` header.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// Whether `presented` is the token, in time that depends on its
    /// length only.
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }
}

/// Who may ask what: the token, when one is configured, and whether the
/// probes answer without it.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// The bearer token every request must carry; `None`: no check.
    pub token: Option<Token>,
    /// `/healthz` and `/readyz` answer without the token.
    pub probes_without_token: bool,
}

impl Access {
    /// From the settings, reading `admin.token_file`.
    pub fn from_settings(admin: &AdminSettings) -> Result<Access, ConfigError> {
        Ok(Access {
            token: admin.token_file.as_deref().map(Token::load).transpose()?,
            probes_without_token: admin.probes_without_token,
        })
    }

    /// Whether a request for `path` with `headers` may be answered.
    pub fn allows(&self, path: &str, headers: &HeaderMap) -> Result<(), Refusal> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        if self.probes_without_token && matches!(path, "/healthz" | "/readyz") {
            return Ok(());
        }
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(Refusal::Missing);
        };
        let presented = value
            .as_bytes()
            .split_first_chunk::<7>()
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(b"bearer "))
            .map(|(_, rest)| rest.trim_ascii());
        match presented {
            Some(presented) if token.matches(presented) => Ok(()),
            Some(_) => Err(Refusal::Wrong),
            None => Err(Refusal::Missing),
        }
    }
}

/// Why [`Access::allows`] said no.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A bearer token, not ours.
    Wrong,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (challenge, body) = match self {
            Refusal::Missing => (
                "Bearer realm=\"turnpike\"",
                "unauthorized: send Authorization: Bearer <the token in admin.token_file>\n",
            ),
            Refusal::Wrong => (
                "Bearer realm=\"turnpike\", error=\"invalid_token\"",
                "unauthorized: wrong token; send the one in admin.token_file\n",
            ),
        };
        (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            )],
            body,
        )
            .into_response()
    }
}

async fn check_access(State(access): State<Arc<Access>>, request: Request, next: Next) -> Response {
    match access.allows(request.uri().path(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            tracing::debug!(path = %request.uri().path(), ?refusal, "admin request refused");
            refusal.into_response()
        }
    }
}

/// The routes (see the module documentation); 404 for anything else, 405
/// for another method on a route, 401 without the token when one is
/// configured.
pub fn router(state: Arc<AdminState>, access: Access) -> Router {
    let ice = state.ice.clone();
    let mut admin = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/v1/status", get(status_v1))
        .route("/v1/allocations", get(allocations))
        .route("/v1/allocations/{id}", delete(kick_allocation))
        .route("/v1/users/{name}/allocations", delete(kick_user))
        .route(
            "/v1/drain",
            get(drain_state).post(start_draining).delete(stop_draining),
        )
        .route("/v1/reload", post(reload))
        .fallback(not_found)
        .with_state(state);
    if let Some(ice) = &ice {
        admin = admin.merge(ice.fleet_routes());
    }
    guarded(admin, access, ice.map(|ice| ice.routes()))
}

/// `admin` behind the admin token (`access`), beside `public` routes that
/// admit callers themselves (the ICE endpoint's).
pub fn guarded(admin: Router, access: Access, public: Option<Router>) -> Router {
    let admin = admin.layer(axum::middleware::from_fn_with_state(
        Arc::new(access),
        check_access,
    ));
    match public {
        Some(public) => public.merge(admin),
        None => admin,
    }
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    let snapshot = match ask(state.relay.snapshot()).await {
        Ok(snapshot) => snapshot,
        Err(response) => return response,
    };
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        state.metrics(&snapshot),
    )
        .into_response()
}

/// A JSON answer, one line.
fn json(status: StatusCode, value: &impl serde::Serialize) -> Response {
    // Serializing strings, numbers and addresses cannot fail.
    let mut body = serde_json::to_string(value).unwrap_or_default();
    body.push('\n');
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `{"error": message}`.
fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    json(status, &serde_json::json!({ "error": message.into() }))
}

/// Asks the relay, within [`RELAY_TIMEOUT`].
async fn ask<T>(question: impl Future<Output = T>) -> Result<T, Response> {
    tokio::time::timeout(RELAY_TIMEOUT, question)
        .await
        .map_err(|_| {
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the workers did not answer within {} s",
                    RELAY_TIMEOUT.as_secs()
                ),
            )
        })
}

async fn status(State(state): State<Arc<AdminState>>) -> Response {
    json(StatusCode::OK, &state.status())
}

async fn healthz(State(state): State<Arc<AdminState>>) -> Response {
    match tokio::time::timeout(RELAY_TIMEOUT, state.relay.health()).await {
        Ok(health) if health.alive() => (StatusCode::OK, "ok\n").into_response(),
        Ok(health) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: {}\n", silent_workers(&health)),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "unhealthy: the workers did not answer within {} s\n",
                RELAY_TIMEOUT.as_secs()
            ),
        )
            .into_response(),
    }
}

async fn readyz(State(state): State<Arc<AdminState>>) -> Response {
    match tokio::time::timeout(RELAY_TIMEOUT, state.relay.health()).await {
        Ok(health) => {
            let mut response = if health.ready() {
                (StatusCode::OK, "ready\n").into_response()
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {}\n", not_ready_reasons(&health).join("; ")),
                )
                    .into_response()
            };
            // For the ICE endpoint's probes (turnpike_fleet): draining
            // is not down, and how full the relay is.
            let headers = response.headers_mut();
            headers.insert(
                DRAINING_HEADER,
                HeaderValue::from_static(if health.draining { "true" } else { "false" }),
            );
            headers.insert(ALLOCATIONS_HEADER, HeaderValue::from(health.allocations));
            if let Some(capacity) = health.capacity {
                headers.insert(CAPACITY_HEADER, HeaderValue::from(capacity));
            }
            response
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: the workers did not answer within {} s\n",
                RELAY_TIMEOUT.as_secs()
            ),
        )
            .into_response(),
    }
}

/// `/readyz`'s header saying whether the relay drains.
pub const DRAINING_HEADER: &str = "x-turnpike-draining";

/// `/readyz`'s header with the live allocations.
pub const ALLOCATIONS_HEADER: &str = "x-turnpike-allocations";

/// `/readyz`'s header with the allocations the relay takes at most
/// (`turn.total_quota`), when it has a limit: a relay of the fleet at it
/// is no alternate for the others.
pub const CAPACITY_HEADER: &str = "x-turnpike-capacity";

async fn status_v1(State(state): State<Arc<AdminState>>) -> Response {
    let relay = &state.relay;
    match ask(async { tokio::join!(relay.snapshot(), relay.health()) }).await {
        Ok((snapshot, health)) => json(StatusCode::OK, &state.status_v1(&snapshot, &health)),
        Err(response) => response,
    }
}

/// The query of `GET /v1/allocations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageQuery {
    /// `user`: only this user's.
    pub user: Option<String>,
    /// `limit`: at most this many (1 to [`MAX_PAGE`]).
    pub limit: usize,
    /// `cursor`: only ids greater than this.
    pub cursor: Option<String>,
}

impl PageQuery {
    /// Parses `user=…&limit=…&cursor=…` (percent-encoded, `+` for a
    /// space; each at most once). A `limit` above [`MAX_PAGE`] is lowered
    /// to it.
    pub fn parse(query: Option<&str>) -> Result<PageQuery, String> {
        let mut page = PageQuery {
            user: None,
            limit: DEFAULT_PAGE,
            cursor: None,
        };
        let mut seen = Vec::new();
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = decode_query_value(value)
                .ok_or_else(|| format!("the value of {name} is not UTF-8 once decoded"))?;
            if seen.contains(&name) {
                return Err(format!("{name} is given twice; give it once"));
            }
            seen.push(name);
            match name {
                "user" => page.user = Some(value),
                "cursor" => page.cursor = Some(value),
                "limit" => {
                    page.limit = match value.parse::<usize>() {
                        Ok(0) | Err(_) => {
                            return Err(format!(
                                "limit {value:?} is not a positive whole number; give 1 to {MAX_PAGE} (default {DEFAULT_PAGE})"
                            ));
                        }
                        Ok(n) => n.min(MAX_PAGE),
                    }
                }
                other => {
                    return Err(format!(
                        "unknown query parameter {other:?}; use user, limit and cursor"
                    ));
                }
            }
        }
        Ok(page)
    }
}

/// A query value: `+` is a space, then percent-decoding.
fn decode_query_value(value: &str) -> Option<String> {
    let spaced = value.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|v| v.into_owned())
}

/// One page of `GET /v1/allocations`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AllocationPage {
    /// The allocations, ordered by id.
    pub allocations: Vec<AllocationInfo>,
    /// The `cursor` of the next page; `None` (`null`) on the last.
    pub next_cursor: Option<String>,
}

/// The page of `all` (any order) after `cursor`, at most `limit` long.
pub fn paginate(
    mut all: Vec<AllocationInfo>,
    cursor: Option<&str>,
    limit: usize,
) -> AllocationPage {
    // The relay answers ordered by id; sorting again costs one pass then,
    // and keeps the pages right if it ever does not.
    all.sort_by(|a, b| a.id.cmp(&b.id));
    let mut allocations: Vec<AllocationInfo> = all
        .into_iter()
        .filter(|a| cursor.is_none_or(|c| a.id.as_str() > c))
        .take(limit.saturating_add(1))
        .collect();
    let next_cursor = if allocations.len() > limit {
        allocations.truncate(limit);
        allocations.last().map(|a| a.id.clone())
    } else {
        None
    };
    AllocationPage {
        allocations,
        next_cursor,
    }
}

async fn allocations(State(state): State<Arc<AdminState>>, RawQuery(query): RawQuery) -> Response {
    let page = match PageQuery::parse(query.as_deref()) {
        Ok(page) => page,
        Err(message) => return json_error(StatusCode::BAD_REQUEST, message),
    };
    let filter = AllocationFilter {
        user: page.user.clone(),
        id: None,
    };
    match ask(state.relay.allocations(filter)).await {
        Ok(all) => json(
            StatusCode::OK,
            &paginate(all, page.cursor.as_deref(), page.limit),
        ),
        Err(response) => response,
    }
}

/// The answer to a kick.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
struct Ended {
    ended: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

async fn kick_allocation(
    State(state): State<Arc<AdminState>>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let filter = AllocationFilter {
        user: None,
        id: Some(id.clone()),
    };
    match ask(state.relay.kick(filter)).await {
        Ok(0) => json(
            StatusCode::NOT_FOUND,
            &Ended {
                ended: 0,
                error: Some(format!("no live allocation has id {id:?}")),
            },
        ),
        Ok(ended) => {
            tracing::info!(id = %id, ended, "allocation kicked from the admin endpoint");
            json(StatusCode::OK, &Ended { ended, error: None })
        }
        Err(response) => response,
    }
}

async fn kick_user(
    State(state): State<Arc<AdminState>>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    let filter = AllocationFilter {
        user: Some(name.clone()),
        id: None,
    };
    match ask(state.relay.kick(filter)).await {
        Ok(ended) => {
            tracing::info!(user = %name, ended, "user kicked from the admin endpoint");
            json(StatusCode::OK, &Ended { ended, error: None })
        }
        Err(response) => response,
    }
}

async fn drain_state(State(state): State<Arc<AdminState>>) -> Response {
    match ask(state.relay.drain_state()).await {
        Ok(drain) => json(StatusCode::OK, &drain),
        Err(response) => response,
    }
}

async fn start_draining(State(state): State<Arc<AdminState>>) -> Response {
    match ask(state.relay.set_draining(true)).await {
        Ok(drain) => {
            tracing::info!(
                allocations = drain.allocations,
                "draining, from the admin endpoint: new allocations are refused, the live ones keep working"
            );
            json(StatusCode::OK, &drain)
        }
        Err(response) => response,
    }
}

async fn stop_draining(State(state): State<Arc<AdminState>>) -> Response {
    match ask(state.relay.set_draining(false)).await {
        Ok(drain) => {
            tracing::info!(
                allocations = drain.allocations,
                "draining stopped, from the admin endpoint: new allocations are made again"
            );
            json(StatusCode::OK, &drain)
        }
        Err(response) => response,
    }
}

/// `POST /v1/reload`: the report, 200 when applied, 422 when refused.
async fn reload(State(state): State<Arc<AdminState>>) -> Response {
    match ask(state.relay.reload()).await {
        Ok(report) => {
            let status = match report.result {
                ReloadResult::Applied => StatusCode::OK,
                ReloadResult::Refused => StatusCode::UNPROCESSABLE_ENTITY,
            };
            json(status, &report)
        }
        Err(response) => response,
    }
}

/// The 404 text, listing the routes.
pub const NOT_FOUND: &str = "not found; this endpoint serves GET /healthz, /readyz, /metrics, /status, /v1/status, /v1/allocations (?user=&limit=&cursor=), DELETE /v1/allocations/ID, DELETE /v1/users/NAME/allocations, GET, POST and DELETE /v1/drain, and POST /v1/reload; with ice.enabled also GET /v1/fleet, /ice-servers, /calls/config/v2, /calls/config and /selftest\n";

async fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, NOT_FOUND)
}

/// Binds every `admin.listen` address (an error is one line saying what to
/// do, as for the other listeners), reads `admin.token_file`, and serves
/// them on `runtime`. Returns the addresses bound (port 0 resolved);
/// nothing when the list is empty.
pub fn start(
    admin: &AdminSettings,
    state: AdminState,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<Vec<SocketAddr>> {
    if admin.listen.is_empty() {
        return Ok(Vec::new());
    }
    let access = Access::from_settings(admin)?;
    let guarded = match access.token.is_some() {
        true => "token required",
        false => "no token",
    };
    let app = router(Arc::new(state), access);
    serve_on(&admin.listen, app, runtime, guarded)
}

/// Binds every address of `listen` and serves `app` on them (bounded
/// connections, request and idle timeouts, the peer's address as
/// [`PeerAddr`]); what `turnpike serve` and `turnpike ice-config` share.
/// `access` says in the log line whether the token is required.
pub fn serve_on(
    listen: &[SocketAddr],
    app: Router,
    runtime: &tokio::runtime::Runtime,
    access: &str,
) -> anyhow::Result<Vec<SocketAddr>> {
    let _entered = runtime.enter();
    let mut listeners = Vec::with_capacity(listen.len());
    for &addr in listen {
        let listener = bind(addr).map_err(|e| bind_error(addr, &e))?;
        listeners.push(listener);
    }
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut bound = Vec::with_capacity(listeners.len());
    for listener in listeners {
        let local = listener.local_addr().ok();
        bound.extend(local);
        let bounded = Bounded {
            inner: listener,
            slots: Arc::clone(&slots),
        };
        let app = app.clone();
        runtime.spawn(async move {
            let service = app.into_make_service_with_connect_info::<PeerAddr>();
            if let Err(err) = axum::serve(bounded, service).await {
                tracing::error!(address = ?local, error = %err, "admin endpoint stopped");
            }
        });
        if let Some(local) = local {
            tracing::info!(address = %local, access, "admin endpoint listening (/healthz, /readyz, /metrics, /status, /v1/…)");
        }
    }
    Ok(bound)
}

/// The address an admin request came from (for the ICE endpoint's
/// loopback-only callers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Bounded>> for PeerAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Bounded>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// A listening TCP socket: IPv6 ones IPv6-only (like every other listener),
/// `SO_REUSEADDR` so a restart is not held up by TIME_WAIT, never
/// `SO_REUSEPORT` (so a port someone holds is an error).
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // (An IPv4-mapped address, `[::ffff:127.0.0.1]:P`, only binds on a
    // dual-stack socket.)
    if addr.is_ipv6() && addr.ip().to_canonical().is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    TcpListener::from_std(socket.into())
}

/// One line: what failed and what to do about it.
fn bind_error(addr: SocketAddr, err: &io::Error) -> anyhow::Error {
    let hint = match err.kind() {
        io::ErrorKind::AddrInUse => "another process is using it: stop it or change admin.listen",
        io::ErrorKind::AddrNotAvailable => {
            "no interface of this host has that IP: check admin.listen"
        }
        io::ErrorKind::PermissionDenied => {
            "ports below 1024 need root or CAP_NET_BIND_SERVICE: pick a port above 1023 for admin.listen"
        }
        _ => "check admin.listen",
    };
    let reason = crate::config::io_message(err).to_lowercase();
    anyhow!("cannot listen on admin http {addr}: {reason}; {hint}")
}

/// A listener that holds a slot of a shared semaphore per open connection.
pub(crate) struct Bounded {
    inner: TcpListener,
    slots: Arc<Semaphore>,
}

impl axum::serve::Listener for Bounded {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Connection, SocketAddr) {
        // Waiting for a slot before accepting leaves further clients in
        // the kernel's backlog. The semaphore is never closed.
        let slot = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .expect("the admin connection semaphore is never closed");
        loop {
            match self.inner.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let connection = Connection {
                        stream,
                        deadline: Box::pin(tokio::time::sleep(REQUEST_TIMEOUT)),
                        between_requests: false,
                        _slot: slot,
                    };
                    return (connection, peer);
                }
                // Out of descriptors, or a connection reset before it was
                // accepted: try again shortly rather than spin.
                Err(err) => {
                    tracing::debug!(error = %err, "admin endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An accepted admin connection: fails with `TimedOut` when a request takes
/// longer than [`REQUEST_TIMEOUT`] to arrive, or the connection idles for
/// [`IDLE_TIMEOUT`] between requests, and frees its slot when dropped.
pub(crate) struct Connection {
    stream: TcpStream,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// A response went out and the next request has not started: the next
    /// byte read starts the request's own deadline.
    between_requests: bool,
    _slot: OwnedSemaphorePermit,
}

impl Connection {
    fn check_deadline(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "admin request too slow, or connection idle",
            )),
            Poll::Pending => Ok(()),
        }
    }

    fn restart_deadline(&mut self, after: Duration) {
        let deadline = tokio::time::Instant::now() + after;
        self.deadline.as_mut().reset(deadline);
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let result = Pin::new(&mut this.stream).poll_read(cx, buf);
        match &result {
            // Only the first byte of a request sets its deadline: bytes
            // trickled in afterwards do not move it.
            Poll::Ready(Ok(())) if buf.filled().len() > before && this.between_requests => {
                this.between_requests = false;
                this.restart_deadline(REQUEST_TIMEOUT);
            }
            Poll::Pending => this.check_deadline(cx)?,
            _ => {}
        }
        result
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.check_deadline(cx)?;
        let result = Pin::new(&mut this.stream).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            // A response is going out: the connection now waits for the
            // next request.
            this.between_requests = true;
            this.restart_deadline(IDLE_TIMEOUT);
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.check_deadline(cx)?;
        let result = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.between_requests = true;
            this.restart_deadline(IDLE_TIMEOUT);
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod route_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn times() {
        let t = UNIX_EPOCH + Duration::from_secs(1_798_761_600);
        assert_eq!(rfc3339(t), "2027-01-01T00:00:00Z");
        assert_eq!(unix_seconds(t), 1_798_761_600);
        let t = UNIX_EPOCH + Duration::from_secs(1_769_862_896);
        assert_eq!(rfc3339(t), "2026-01-31T12:34:56Z");
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_secs(5)), -5);
    }

    #[test]
    fn without_tls_no_certificate_metrics() {
        let state = AdminState {
            started: Instant::now(),
            certs: None,
            fast_path: None,
            relay: Arc::new(testing::FakeRelay::default()),
            listeners: Vec::new(),
            ice: None,
        };
        let version = env!("CARGO_PKG_VERSION");
        let metrics = state.metrics(&Snapshot::default());
        assert!(
            metrics.starts_with(&format!(
                "# HELP turnpike_build_info Turnpike version; always 1.\n# TYPE turnpike_build_info gauge\nturnpike_build_info{{version=\"{version}\"}} 1\n"
            )),
            "{metrics}"
        );
        assert!(!metrics.contains("turnpike_tls_"), "{metrics}");
        assert!(!metrics.contains("turnpike_xdp_"), "{metrics}");
        let status = state.status();
        assert_eq!((status.version, status.tls.as_ref()), (version, None));
        assert_eq!(
            serde_json::to_string(&status).unwrap(),
            format!(
                "{{\"version\":\"{version}\",\"uptime_seconds\":{},\"tls\":null}}",
                status.uptime_seconds
            )
        );
    }
}
