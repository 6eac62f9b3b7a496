//! The ICE-server configuration endpoint: WebRTC applications ask it which
//! relays to use and get a fresh, randomly ordered list of TURN URLs with
//! time-limited credentials, leaving out relays that are down or draining.
//!
//! Operators of coturn, restund or eturnal write this service themselves
//! (Wire's `/calls/config/v2` is one); here it ships with the relay:
//!
//! - the relays come from [`turnpike_fleet`]: the `[discovery]` static list
//!   and DNS SRV records, each probed (STUN Binding, `/readyz`) and left out
//!   while it fails or drains;
//! - the credentials are minted per request ([`turnpike_core::ephemeral::mint`])
//!   in the REST or Wire format with the newest shared secret, the one every
//!   relay of the fleet shares ([`CredentialSource::signing_secret`]), so
//!   rotating secrets works fleet-wide;
//! - callers are admitted by [`caller`] (loopback, bearer token, or a
//!   header set by the application's proxy) and rate-limited per caller;
//! - the answers take the shapes of [`answer`];
//! - [`selftest`] serves a page that checks every relay and transport of
//!   the fleet from the operator's browser.
//!
//! `turnpike serve` mounts [`IceService::routes`] on its admin listener
//! (`ice.enabled`); `turnpike ice-config` ([`standalone`]) serves them
//! without a relay. Nothing here is on the packet path: a request costs a
//! snapshot read, a few HMACs and a small JSON body.

pub mod answer;
pub mod caller;
pub mod selftest;
pub mod standalone;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use turnpike_core::PerSourceRate;
use turnpike_core::ephemeral::{self, Mint};
use turnpike_fleet::{Fleet, FleetConfig};

use self::answer::{RtcConfiguration, WireConfig};
use self::caller::{CallerPolicy, Refusal};
use crate::admin_http::{PeerAddr, Token};
use crate::config::{CredentialFormat, IceAuth, Settings};
use crate::credentials::CredentialSource;
use crate::observe::{IceFacts, IceOutcome, IceRoute};

/// Wire's bounds on `limit` for `/calls/config/v2`.
const WIRE_LIMIT: std::ops::RangeInclusive<usize> = 1..=10;

/// What the endpoint runs with, from the settings (replaced whole on
/// reload).
#[derive(Debug, Clone)]
pub struct IceConfig {
    /// Who is admitted, CORS.
    pub policy: CallerPolicy,
    /// `ice.credential_format`.
    pub format: CredentialFormat,
    /// `ice.ttl`.
    pub ttl: u32,
    /// `ice.requests_per_second`.
    pub requests_per_second: u16,
    /// `ice.relay_only`.
    pub relay_only: bool,
    /// `ice.max_urls`; `None` for all.
    pub max_urls: Option<usize>,
    /// `turn.rest_separator`, which the relays parse REST usernames with.
    pub separator: char,
}

impl IceConfig {
    /// The endpoint's configuration from `settings`, reading
    /// `ice.token_file`; an error is one line naming the file.
    pub fn from_settings(settings: &Settings) -> Result<IceConfig, String> {
        let ice = &settings.ice;
        let token = match (&ice.token_file, ice.auth) {
            (Some(path), _) => {
                Some(Token::load_setting(path, "ice.token_file").map_err(|e| e.to_string())?)
            }
            (None, IceAuth::Token) => {
                return Err(
                    "ice.auth = \"token\" needs ice.token_file: write a token to a file (openssl rand -hex 32 > /etc/turnpike/ice.token) and name it there"
                        .to_owned(),
                );
            }
            (None, _) => None,
        };
        let user_header = match ice.user_header.trim() {
            "" if ice.auth == IceAuth::Header => {
                return Err(
                    "ice.auth = \"header\" needs ice.user_header: the header your proxy sets to the authenticated user's id (e.g. \"X-User-Id\")"
                        .to_owned(),
                );
            }
            "" => None,
            name => Some(HeaderName::try_from(name).map_err(|_| {
                format!("ice.user_header = {name:?} is not a valid HTTP header name")
            })?),
        };
        Ok(IceConfig {
            policy: CallerPolicy {
                auth: ice.auth,
                token,
                user_header,
                cors_origins: ice.cors_origins.clone(),
            },
            format: ice.credential_format,
            ttl: ice.ttl,
            requests_per_second: ice.requests_per_second,
            relay_only: ice.relay_only,
            max_urls: usize::try_from(ice.max_urls).ok().filter(|&n| n > 0),
            separator: settings.turn.rest_separator,
        })
    }
}

/// The fleet's configuration from `[discovery]`.
pub fn fleet_config(settings: &Settings) -> FleetConfig {
    let d = &settings.discovery;
    let secs = |s: u32| Duration::from_secs(u64::from(s));
    FleetConfig {
        static_relays: d.relays.clone(),
        srv_domain: Some(d.srv_domain.trim().trim_end_matches('.'))
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        name_servers: d.name_servers.clone(),
        discovery_interval: secs(d.interval),
        probe_interval: (d.probe_interval > 0).then(|| secs(d.probe_interval)),
        probe_timeout: secs(d.probe_timeout),
        unhealthy_after: d.unhealthy_after,
        healthy_after: d.healthy_after,
        admin_port: (d.admin_port > 0).then_some(d.admin_port),
        registry_interval: Duration::from_secs(settings.fleet.heartbeat_interval.into()),
    }
}

/// Requests answered, by route and outcome.
type Counts = [[u64; IceOutcome::COUNT]; IceRoute::COUNT];

/// The endpoint: its configuration, the fleet it hands out, the secrets it
/// mints with, and its counters.
#[derive(Debug)]
pub struct IceService {
    config: ArcSwap<IceConfig>,
    fleet: Fleet,
    credentials: Arc<CredentialSource>,
    /// Per caller and second; a request takes the lock for a few
    /// nanoseconds.
    limiter: Mutex<PerSourceRate>,
    counts: Mutex<Counts>,
}

impl IceService {
    /// The endpoint over `fleet`, minting with `credentials`' secrets.
    pub fn new(
        config: IceConfig,
        fleet: Fleet,
        credentials: Arc<CredentialSource>,
    ) -> Arc<IceService> {
        Arc::new(IceService {
            config: ArcSwap::from_pointee(config),
            fleet,
            credentials,
            limiter: Mutex::new(PerSourceRate::new(rand::random())),
            counts: Mutex::new([[0; IceOutcome::COUNT]; IceRoute::COUNT]),
        })
    }

    /// The settings of `[ice]` after a reload, replaced whole (the fleet's,
    /// `[discovery]`, are its owner's to apply). An unreadable token file
    /// keeps the running configuration and says why.
    pub fn reconfigure(&self, settings: &Settings) -> Result<(), String> {
        let config = IceConfig::from_settings(settings)?;
        self.config.store(Arc::new(config));
        Ok(())
    }

    /// The relays and their health.
    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// The figures `/metrics` shows.
    pub fn facts(&self) -> IceFacts {
        let snapshot = self.fleet.snapshot();
        let (_, all_unhealthy) = snapshot.serving();
        IceFacts {
            requests: *self.counts.lock().unwrap_or_else(PoisonError::into_inner),
            relays: relays_by_state(&snapshot),
            all_unhealthy: all_unhealthy && !snapshot.relays.is_empty(),
            registered_relays: snapshot
                .relays
                .iter()
                .filter(|r| r.relay.source == turnpike_fleet::Source::Database)
                .count() as u64,
            dns_lookups: snapshot.dns.lookups,
            dns_failures: snapshot.dns.failures,
        }
    }

    /// The public routes: `/ice-servers`, `/calls/config/v2`,
    /// `/calls/config` (each with `OPTIONS` for CORS preflights). They
    /// admit callers themselves ([`caller`]), not with the admin token.
    /// And `/selftest`, a static page without a secret: the tokens are the
    /// user's to type in ([`selftest`]).
    pub fn routes(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/selftest", get(selftest::page))
            .route(
                "/ice-servers",
                get(|s, r| answer_route(s, r, IceRoute::IceServers)).options(preflight),
            )
            .route(
                "/calls/config/v2",
                get(|s, r| answer_route(s, r, IceRoute::CallsConfigV2)).options(preflight),
            )
            .route(
                "/calls/config",
                get(|s, r| answer_route(s, r, IceRoute::CallsConfig)).options(preflight),
            )
            .with_state(Arc::clone(self))
    }

    /// `GET /v1/fleet`, for the admin side (behind the admin token).
    pub fn fleet_routes(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v1/fleet", get(fleet_status))
            .with_state(Arc::clone(self))
    }

    fn count(&self, route: IceRoute, outcome: IceOutcome) {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)[route.index()]
            [outcome.index()] += 1;
    }

    /// The answer to one request of `route`.
    fn answer(&self, route: IceRoute, request: &Request) -> (IceOutcome, Response) {
        let config = self.config.load();
        let peer = request
            .extensions()
            .get::<ConnectInfo<PeerAddr>>()
            .map(|c| c.0.0);
        let caller = match config.policy.admit(peer, request.headers()) {
            Ok(caller) => caller,
            Err(Refusal::Unauthorized(why)) => {
                let mut response = plain(StatusCode::UNAUTHORIZED, why);
                if config.policy.auth == IceAuth::Token {
                    response
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                }
                return (IceOutcome::Unauthorized, response);
            }
            Err(Refusal::BadUserId(why)) => {
                return (IceOutcome::BadRequest, plain(StatusCode::BAD_REQUEST, why));
            }
        };
        let allowed = self
            .limiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .allow(&caller.key, Instant::now(), config.requests_per_second);
        if !allowed {
            let mut response = plain(
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests from this caller; ask again in a second (ice.requests_per_second)",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return (IceOutcome::RateLimited, response);
        }
        let limit = match limit(request.uri().query(), route) {
            Ok(limit) => limit,
            Err(why) => return (IceOutcome::BadRequest, plain(StatusCode::BAD_REQUEST, &why)),
        };
        let limit = match (limit, config.max_urls) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let Some(secret) = self.credentials.signing_secret() else {
            return (
                IceOutcome::Unavailable,
                plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no shared secret to mint credentials with: set turn.secrets or add one with `turnpike secret add`",
                ),
            );
        };
        let snapshot = self.fleet.snapshot();
        let (serving, _) = snapshot.serving();
        let ordered = answer::shuffled(&serving, &mut rand::rng());
        let groups = match route {
            IceRoute::CallsConfig => answer::v1_urls(&ordered, limit),
            _ => answer::urls_per_relay(&ordered, limit),
        };
        if groups.is_empty() {
            return (
                IceOutcome::Unavailable,
                plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no relay is known: list some in discovery.relays or set discovery.srv_domain",
                ),
            );
        }
        let expires = unix_now() + u64::from(config.ttl);
        let random = ephemeral::wire_random(&mut rand::rng());
        let how = match config.format {
            CredentialFormat::Rest => Mint::Rest {
                user_id: caller.user_id.as_deref(),
                separator: config.separator,
            },
            CredentialFormat::Wire => Mint::Wire { random: &random },
        };
        let minted = ephemeral::mint(how, &secret, expires);
        let ice_servers = answer::ice_servers(groups, &minted);
        let body = match route {
            IceRoute::IceServers => serde_json::to_string(&RtcConfiguration {
                ice_servers,
                ice_transport_policy: config.relay_only.then_some("relay"),
            }),
            IceRoute::CallsConfigV2 | IceRoute::CallsConfig => serde_json::to_string(&WireConfig {
                ice_servers,
                ttl: config.ttl,
            }),
        };
        // Serializing strings and numbers cannot fail.
        let mut body = body.unwrap_or_default();
        body.push('\n');
        let response = (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/json"),
                // Credentials: never from a cache, never shared.
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response();
        (IceOutcome::Served, response)
    }
}

/// Counts of the snapshot's relays by state: healthy, unhealthy, unknown
/// (not probed yet), draining.
fn relays_by_state(snapshot: &turnpike_fleet::Snapshot) -> [u64; 4] {
    let mut counts = [0u64; 4];
    for relay in &snapshot.relays {
        let state = if relay.draining {
            3
        } else {
            match relay.health {
                turnpike_fleet::Health::Healthy => 0,
                turnpike_fleet::Health::Unhealthy => 1,
                turnpike_fleet::Health::Unknown => 2,
            }
        };
        counts[state] += 1;
    }
    counts
}

async fn answer_route(
    State(service): State<Arc<IceService>>,
    request: Request,
    route: IceRoute,
) -> Response {
    let (outcome, mut response) = service.answer(route, &request);
    service.count(route, outcome);
    let config = service.config.load();
    for (name, value) in config.policy.cors(request.headers().get(header::ORIGIN)) {
        response.headers_mut().insert(name, value);
    }
    response
}

/// A CORS preflight: 204 with the CORS headers for an allowed origin, 403
/// otherwise.
async fn preflight(State(service): State<Arc<IceService>>, request: Request) -> Response {
    let config = service.config.load();
    let cors = config.policy.cors(request.headers().get(header::ORIGIN));
    if cors.is_empty() {
        return plain(
            StatusCode::FORBIDDEN,
            "this origin may not call the ICE endpoint from a browser (ice.cors_origins)",
        );
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    for (name, value) in cors {
        response.headers_mut().insert(name, value);
    }
    response
}

async fn fleet_status(State(service): State<Arc<IceService>>) -> Response {
    let snapshot = service.fleet.snapshot();
    let (_, all_unhealthy) = snapshot.serving();
    let body = serde_json::json!({
        "relays": snapshot.relays,
        "dns": snapshot.dns,
        "registry": snapshot.registry,
        "probing": snapshot.probing,
        "all_unhealthy": all_unhealthy && !snapshot.relays.is_empty(),
    });
    let mut text = body.to_string();
    text.push('\n');
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        text,
    )
        .into_response()
}

/// `limit=N` of the query: 1 to 10 on `/calls/config/v2` (Wire's range),
/// 1 or more elsewhere; other parameters are ignored (clients add their
/// own).
fn limit(query: Option<&str>, route: IceRoute) -> Result<Option<usize>, String> {
    let Some(value) = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("limit="))
    else {
        return Ok(None);
    };
    let parsed = value
        .parse::<usize>()
        .ok()
        .filter(|&n| n >= 1)
        .filter(|n| route != IceRoute::CallsConfigV2 || WIRE_LIMIT.contains(n));
    match (parsed, route) {
        (Some(n), _) => Ok(Some(n)),
        (None, IceRoute::CallsConfigV2) => Err(format!(
            "limit {value:?} is not a whole number from 1 to 10"
        )),
        (None, _) => Err(format!("limit {value:?} is not a positive whole number")),
    }
}

/// A one-line text answer.
fn plain(status: StatusCode, text: &str) -> Response {
    (status, format!("{text}\n")).into_response()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
