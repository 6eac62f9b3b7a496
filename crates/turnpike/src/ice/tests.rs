//! The ICE routes driven in process: a fleet of three static relays (no
//! probes), the secrets of a throw-away SQLite database and the file, and
//! requests from chosen peer addresses.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt as _;
use turnpike_core::ephemeral::{self, Format};

use super::{IceConfig, IceService, fleet_config};
use crate::admin_http::PeerAddr;
use crate::config::{CredentialFormat, IceAuth, Settings};

const SECRETS: [&str; 2] = ["old-secret", "new-secret"];
const LOOPBACK: &str = "127.0.0.1:40000";
const REMOTE: &str = "198.51.100.9:40000";

struct Endpoint {
    service: Arc<IceService>,
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn settings(edit: impl FnOnce(&mut Settings)) -> (Settings, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Settings::default();
    s.database.data_dir = dir.path().to_owned();
    s.turn.secrets = SECRETS.iter().map(|s| (*s).to_owned()).collect();
    s.discovery.relays = ["turn1.example", "turn2.example", "turn3.example"]
        .iter()
        .flat_map(|h| {
            [
                format!("turn:{h}:3478?transport=udp"),
                format!("turn:{h}:3478?transport=tcp"),
                format!("turns:{h}:5349?transport=tcp"),
            ]
        })
        .collect();
    s.discovery.probe_interval = 0;
    // Tests ask many times a second; the limit has its own test.
    s.ice.requests_per_second = 10_000;
    edit(&mut s);
    (s, dir)
}

impl Endpoint {
    fn start(edit: impl FnOnce(&mut Settings)) -> Endpoint {
        let (settings, dir) = settings(edit);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (credentials, _, _) = crate::runtime::open_credentials(&settings, &runtime).unwrap();
        let fleet = {
            let _entered = runtime.enter();
            turnpike_fleet::Fleet::start(fleet_config(&settings), runtime.handle()).unwrap()
        };
        let config = IceConfig::from_settings(&settings).unwrap();
        Endpoint {
            service: IceService::new(config, fleet, credentials),
            runtime,
            _dir: dir,
        }
    }

    fn ask(&self, method: Method, path: &str, peer: &str, headers: &[(&str, &str)]) -> Answer {
        let mut request = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut request = request.body(Body::empty()).unwrap();
        let peer: SocketAddr = peer.parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(PeerAddr(peer)));
        let routes = self.service.routes();
        self.runtime.block_on(async move {
            let response = routes.oneshot(request).await.unwrap();
            let status = response.status();
            let headers = response.headers().clone();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            Answer {
                status,
                headers,
                body: String::from_utf8(body.to_vec()).unwrap(),
            }
        })
    }

    fn get(&self, path: &str) -> Answer {
        self.ask(Method::GET, path, LOOPBACK, &[])
    }
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        assert_eq!(self.status, StatusCode::OK, "{}", self.body);
        serde_json::from_str(&self.body).unwrap()
    }
}

fn urls(server: &Value) -> Vec<String> {
    server["urls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn rtc_configuration_lists_every_transport_of_every_relay_with_a_working_credential() {
    let endpoint = Endpoint::start(|_| {});
    let answer = endpoint.get("/ice-servers");
    assert_eq!(
        answer.headers.get(header::CACHE_CONTROL).unwrap(),
        "no-store"
    );
    let config = answer.json();
    assert!(config.get("iceTransportPolicy").is_none(), "{config}");
    let servers = config["iceServers"].as_array().unwrap();
    assert_eq!(servers.len(), 3, "{config}");
    let mut hosts = Vec::new();
    for server in servers {
        let urls = urls(server);
        let host = urls[0].split(':').nth(1).unwrap().to_owned();
        assert_eq!(
            urls,
            [
                format!("turn:{host}:3478?transport=udp"),
                format!("turn:{host}:3478?transport=tcp"),
                format!("turns:{host}:5349?transport=tcp"),
            ]
        );
        hosts.push(host);
        // The newest secret (the file's last) signed it, as the relays
        // check: base64(HMAC-SHA1(secret, username)).
        let username = server["username"].as_str().unwrap();
        let expiry: u64 = username.parse().unwrap();
        let now = super::unix_now();
        assert!((now + 86_390..=now + 86_400).contains(&expiry), "{expiry}");
        assert_eq!(
            server["credential"].as_str().unwrap(),
            ephemeral::password(Format::Rest, SECRETS[1].as_bytes(), username)
        );
    }
    hosts.sort();
    assert_eq!(hosts, ["turn1.example", "turn2.example", "turn3.example"]);
}

#[test]
fn the_order_is_random_per_request() {
    let endpoint = Endpoint::start(|_| {});
    let mut firsts = std::collections::BTreeSet::new();
    for _ in 0..60 {
        let config = endpoint.get("/ice-servers").json();
        firsts.insert(urls(&config["iceServers"][0])[0].clone());
    }
    assert_eq!(firsts.len(), 3, "{firsts:?}");
}

#[test]
fn wire_shapes_limit_and_v1() {
    let endpoint = Endpoint::start(|s| {
        s.ice.credential_format = CredentialFormat::Wire;
        s.ice.ttl = 600;
        s.discovery.relays = vec![
            "turn:127.0.0.2:3478?transport=udp".into(),
            "turn:127.0.0.2:3478?transport=tcp".into(),
            "turns:127.0.0.2:5349?transport=tcp".into(),
            "turn:[::1]:3479?transport=udp".into(),
            "turns:127.0.0.4:443?transport=tcp".into(),
        ];
    });
    let config = endpoint.get("/calls/config/v2").json();
    assert_eq!(config["ttl"], 600);
    let servers = config["ice_servers"].as_array().unwrap();
    assert_eq!(servers.len(), 3);
    let username = servers[0]["username"].as_str().unwrap();
    // Wire's format, naming the signing secret's key index (the file's
    // second secret is index 1).
    assert_eq!(
        ephemeral::parse(username, ':').map(|e| e.format),
        Some(Format::Wire { key_index: 1 })
    );
    assert_eq!(
        servers[0]["credential"].as_str().unwrap(),
        ephemeral::password(
            Format::Wire { key_index: 1 },
            SECRETS[1].as_bytes(),
            username
        )
    );

    // limit=3: three URLs, one per transport, over three relays.
    for _ in 0..10 {
        let config = endpoint.get("/calls/config/v2?limit=3").json();
        let all: Vec<String> = config["ice_servers"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(urls)
            .collect();
        assert_eq!(all.len(), 3, "{config}");
        assert_eq!(all.iter().filter(|u| u.starts_with("turns:")).count(), 1);
        assert_eq!(
            all.iter().filter(|u| u.ends_with("transport=udp")).count(),
            1,
            "{all:?}"
        );
    }
    for bad in ["0", "11", "x", ""] {
        let answer = endpoint.get(&format!("/calls/config/v2?limit={bad}"));
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "limit={bad}");
    }
    assert_eq!(endpoint.get("/ice-servers?limit=50").status, StatusCode::OK);

    // v1: the UDP relays as IP URLs, nothing else.
    let config = endpoint.get("/calls/config").json();
    let mut all: Vec<String> = config["ice_servers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(urls)
        .collect();
    all.sort();
    assert_eq!(all, ["turn:127.0.0.2:3478", "turn:[::1]:3479"]);
}

#[test]
fn callers_are_admitted_by_address_token_or_proxy_header() {
    let endpoint = Endpoint::start(|_| {});
    assert_eq!(endpoint.get("/ice-servers").status, StatusCode::OK);
    let stranger = endpoint.ask(Method::GET, "/ice-servers", REMOTE, &[]);
    assert_eq!(
        stranger.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        stranger.body
    );

    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("ice.token");
    std::fs::write(&token_file, "0123456789abcdef-ice\n").unwrap();
    let endpoint = Endpoint::start(|s| {
        s.ice.auth = IceAuth::Token;
        s.ice.token_file = Some(token_file.clone());
    });
    let without = endpoint.ask(Method::GET, "/ice-servers", LOOPBACK, &[]);
    assert_eq!(without.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        without.headers.get(header::WWW_AUTHENTICATE).unwrap(),
        "Bearer"
    );
    let with = endpoint.ask(
        Method::GET,
        "/ice-servers",
        REMOTE,
        &[("authorization", "Bearer 0123456789abcdef-ice")],
    );
    assert_eq!(with.status, StatusCode::OK, "{}", with.body);

    let endpoint = Endpoint::start(|s| {
        s.ice.auth = IceAuth::Header;
        s.ice.user_header = "X-User-Id".into();
    });
    let direct = endpoint.ask(Method::GET, "/ice-servers", REMOTE, &[]);
    assert_eq!(direct.status, StatusCode::UNAUTHORIZED);
    let proxied = endpoint
        .ask(
            Method::GET,
            "/ice-servers",
            REMOTE,
            &[("x-user-id", "alice")],
        )
        .json();
    let username = proxied["iceServers"][0]["username"].as_str().unwrap();
    assert!(username.ends_with(":alice"), "{username}");
}

#[test]
fn each_caller_is_rate_limited_and_counted() {
    let endpoint = Endpoint::start(|s| s.ice.requests_per_second = 3);
    let statuses: Vec<StatusCode> = (0..5)
        .map(|_| endpoint.get("/ice-servers").status)
        .collect();
    // Within one second (these take microseconds) at most three; a second
    // boundary may fall between them, so at least one is refused.
    let refused = statuses
        .iter()
        .filter(|&&s| s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!((1..=2).contains(&refused), "{statuses:?}");
    let limited = endpoint.get("/ice-servers");
    if limited.status == StatusCode::TOO_MANY_REQUESTS {
        assert_eq!(limited.headers.get(header::RETRY_AFTER).unwrap(), "1");
    }
    let facts = endpoint.service.facts();
    let route = crate::observe::IceRoute::IceServers.index();
    let served = facts.requests[route][crate::observe::IceOutcome::Served.index()];
    let limited = facts.requests[route][crate::observe::IceOutcome::RateLimited.index()];
    assert_eq!(served + limited, 6);
    assert!(limited >= 1);
    assert_eq!(facts.relays, [0, 0, 3, 0], "three relays, not probed");
}

#[test]
fn cors_is_off_unless_the_origin_is_listed() {
    let endpoint = Endpoint::start(|_| {});
    let origin = [("origin", "https://app.example")];
    let answer = endpoint.ask(Method::GET, "/ice-servers", LOOPBACK, &origin);
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer
            .headers
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none()
    );
    let preflight = endpoint.ask(Method::OPTIONS, "/ice-servers", LOOPBACK, &origin);
    assert_eq!(preflight.status, StatusCode::FORBIDDEN);

    let endpoint = Endpoint::start(|s| s.ice.cors_origins = vec!["https://app.example".into()]);
    let preflight = endpoint.ask(Method::OPTIONS, "/ice-servers", REMOTE, &origin);
    assert_eq!(preflight.status, StatusCode::NO_CONTENT);
    assert_eq!(
        preflight
            .headers
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .unwrap(),
        "https://app.example"
    );
    let answer = endpoint.ask(Method::GET, "/ice-servers", LOOPBACK, &origin);
    assert_eq!(
        answer
            .headers
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .unwrap(),
        "https://app.example"
    );
}

#[test]
fn without_a_secret_or_a_relay_the_answer_says_what_is_missing() {
    let endpoint = Endpoint::start(|s| s.turn.secrets.clear());
    let answer = endpoint.get("/ice-servers");
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        answer.body.contains("turnpike secret add"),
        "{}",
        answer.body
    );
    let endpoint = Endpoint::start(|s| s.discovery.relays.clear());
    let answer = endpoint.get("/ice-servers");
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.body.contains("discovery.relays"), "{}", answer.body);
}

#[test]
fn relay_only_adds_the_transport_policy() {
    let endpoint = Endpoint::start(|s| s.ice.relay_only = true);
    let config = endpoint.get("/ice-servers").json();
    assert_eq!(config["iceTransportPolicy"], "relay");
}

/// `/selftest` is the page, to anyone (it holds no secret: `/ice-servers`
/// still wants the token), with nothing to load from elsewhere: no URL of
/// another site in it, and a Content-Security-Policy that would block one.
#[test]
fn the_selftest_page_is_served_to_anyone_and_loads_nothing_from_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("ice.token");
    std::fs::write(&token_file, "0123456789abcdef-ice\n").unwrap();
    let endpoint = Endpoint::start(|s| {
        s.ice.auth = IceAuth::Token;
        s.ice.token_file = Some(token_file.clone());
    });
    let page = endpoint.ask(Method::GET, "/selftest", REMOTE, &[]);
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(
        page.headers.get(header::CONTENT_TYPE).unwrap(),
        "text/html; charset=utf-8"
    );
    let csp = page.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    for directive in ["default-src 'none'", "script-src 'unsafe-inline'"] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert_eq!(page.headers[header::REFERRER_POLICY], "no-referrer");
    assert_eq!(page.body, super::selftest::PAGE);
    for external in ["http://", "https://", "//cdn", "<link", " src="] {
        assert!(
            !page.body.contains(external),
            "the page refers to something outside it: {external:?}"
        );
    }
    for route in ["\"/ice-servers\"", "\"/v1/fleet\""] {
        assert!(page.body.contains(route), "the page does not fetch {route}");
    }
    // The answer it fetches stays behind the token.
    let answer = endpoint.ask(Method::GET, "/ice-servers", REMOTE, &[]);
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
}
