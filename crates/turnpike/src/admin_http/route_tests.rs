//! The routes, asked through the router itself (`tower::ServiceExt::oneshot`)
//! with a [`FakeRelay`]: access with and without the token, the probes
//! following the relay's health, `/v1/status`, the pages of
//! `/v1/allocations`, and kicks.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::testing::{FakeRelay, allocation};
use super::*;
use crate::observe::{
    AllocationGauges, ConfigFacts, CredentialStats, Health, ReloadReport, ReloadResult, Snapshot,
    WorkerShare,
};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }
}

struct Endpoint {
    relay: Arc<FakeRelay>,
    access: Access,
}

impl Endpoint {
    fn new(relay: FakeRelay) -> Endpoint {
        Endpoint {
            relay: Arc::new(relay),
            access: Access::default(),
        }
    }

    fn with_token(mut self, probes_without_token: bool) -> Endpoint {
        self.access = Access {
            token: Some(Token::parse(TOKEN).unwrap()),
            probes_without_token,
        };
        self
    }

    fn router(&self) -> Router {
        let state = AdminState {
            started: Instant::now(),
            certs: None,
            fast_path: None,
            relay: Arc::clone(&self.relay) as Arc<dyn Relay>,
            listeners: vec![
                ListenerInfo {
                    transport: "udp",
                    address: "0.0.0.0:3478".parse().unwrap(),
                },
                ListenerInfo {
                    transport: "tcp",
                    address: "[::]:3478".parse().unwrap(),
                },
            ],
            ice: None,
        };
        router(Arc::new(state), self.access.clone())
    }

    /// One request, with `authorization` as the header's value if given.
    async fn ask(&self, method: Method, uri: &str, authorization: Option<&str>) -> Answer {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let response = self
            .router()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }

    async fn get(&self, uri: &str) -> Answer {
        self.ask(Method::GET, uri, Some(&format!("Bearer {TOKEN}")))
            .await
    }

    async fn delete(&self, uri: &str) -> Answer {
        self.ask(Method::DELETE, uri, Some(&format!("Bearer {TOKEN}")))
            .await
    }

    async fn post(&self, uri: &str) -> Answer {
        self.ask(Method::POST, uri, Some(&format!("Bearer {TOKEN}")))
            .await
    }
}

fn healthy() -> Health {
    Health {
        workers: 4,
        workers_silent: 0,
        started: true,
        draining: false,
        database_down: false,
        allocations: 0,
        capacity: None,
    }
}

const EVERY_ROUTE: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/status"),
    ("GET", "/v1/status"),
    ("GET", "/v1/allocations"),
    ("DELETE", "/v1/allocations/0000000000000001"),
    ("DELETE", "/v1/users/alice/allocations"),
    ("GET", "/v1/drain"),
    ("POST", "/v1/drain"),
    ("DELETE", "/v1/drain"),
    ("POST", "/v1/reload"),
    ("GET", "/nowhere"),
];

#[tokio::test]
async fn every_route_needs_the_token_when_one_is_configured() {
    let endpoint = Endpoint::new(FakeRelay::with(vec![allocation(1, "alice")])).with_token(false);
    for &(method, path) in EVERY_ROUTE {
        let method: Method = method.parse().unwrap();
        for (authorization, challenge) in [
            (None, "Bearer realm=\"turnpike\""),
            (Some(TOKEN.to_owned()), "Bearer realm=\"turnpike\""),
            (Some(format!("Basic {TOKEN}")), "Bearer realm=\"turnpike\""),
            (Some("Bearer".to_owned()), "Bearer realm=\"turnpike\""),
            (
                Some(format!("Bearer {TOKEN}x")),
                "Bearer realm=\"turnpike\", error=\"invalid_token\"",
            ),
            (
                Some(format!("Bearer {}", &TOKEN[1..])),
                "Bearer realm=\"turnpike\", error=\"invalid_token\"",
            ),
            (
                Some("Bearer wrong-token-of-some-length".to_owned()),
                "Bearer realm=\"turnpike\", error=\"invalid_token\"",
            ),
            (
                Some("Bearer ".to_owned()),
                "Bearer realm=\"turnpike\", error=\"invalid_token\"",
            ),
        ] {
            let answer = endpoint
                .ask(method.clone(), path, authorization.as_deref())
                .await;
            assert_eq!(
                answer.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} {authorization:?}: {}",
                answer.body
            );
            assert_eq!(
                answer.headers.get(header::WWW_AUTHENTICATE).unwrap(),
                challenge,
                "{method} {path} {authorization:?}"
            );
            assert!(answer.body.starts_with("unauthorized: "), "{}", answer.body);
        }
    }
    // Nothing was kicked, drained or reloaded by the refused requests.
    assert!(endpoint.relay.kicks().is_empty());
    assert!(!*endpoint.relay.draining.lock().unwrap());
    assert_eq!(*endpoint.relay.reloads.lock().unwrap(), 0);
    // With the token (the scheme in any case, spaces around it), answered.
    for authorization in [
        format!("Bearer {TOKEN}"),
        format!("bearer {TOKEN}"),
        format!("BEARER   {TOKEN} "),
    ] {
        for &(method, path) in EVERY_ROUTE {
            let answer = endpoint
                .ask(method.parse().unwrap(), path, Some(&authorization))
                .await;
            assert_ne!(answer.status, StatusCode::UNAUTHORIZED, "{method} {path}");
        }
    }
}

#[tokio::test]
async fn probes_answer_without_the_token_if_allowed() {
    let open = Endpoint::new(FakeRelay::with(Vec::new())).with_token(true);
    for path in ["/healthz", "/readyz"] {
        let answer = open.ask(Method::GET, path, None).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        // A wrong token does not matter either.
        let answer = open.ask(Method::GET, path, Some("Bearer nope")).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
    }
    // Not the others, nor a path that only starts like a probe.
    for path in [
        "/metrics",
        "/status",
        "/v1/status",
        "/healthz/x",
        "/readyzz",
    ] {
        let answer = open.ask(Method::GET, path, None).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{path}");
    }
}

#[tokio::test]
async fn without_a_token_everything_answers() {
    let endpoint = Endpoint::new(FakeRelay::with(Vec::new()));
    for path in ["/healthz", "/readyz", "/metrics", "/status", "/v1/status"] {
        let answer = endpoint.ask(Method::GET, path, None).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn healthz_and_readyz_follow_the_health() {
    let endpoint = Endpoint::new(FakeRelay::with(Vec::new())).with_token(true);
    let probe = |path: &'static str| {
        let endpoint = &endpoint;
        async move {
            let answer = endpoint.ask(Method::GET, path, None).await;
            (answer.status.as_u16(), answer.body)
        }
    };
    endpoint.relay.set_health(healthy());
    assert_eq!(probe("/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(probe("/readyz").await, (200, "ready\n".to_owned()));

    for (health, ready) in [
        (
            Health {
                started: false,
                ..healthy()
            },
            "not ready: starting\n",
        ),
        (
            Health {
                draining: true,
                ..healthy()
            },
            "not ready: draining\n",
        ),
        (
            Health {
                database_down: true,
                ..healthy()
            },
            "not ready: database unreachable\n",
        ),
        (
            Health {
                draining: true,
                database_down: true,
                ..healthy()
            },
            "not ready: draining; database unreachable\n",
        ),
    ] {
        endpoint.relay.set_health(health.clone());
        // Alive all the same.
        assert_eq!(
            probe("/healthz").await,
            (200, "ok\n".to_owned()),
            "{health:?}"
        );
        assert_eq!(
            probe("/readyz").await,
            (503, ready.to_owned()),
            "{health:?}"
        );
    }

    endpoint.relay.set_health(Health {
        workers_silent: 1,
        ..healthy()
    });
    assert_eq!(
        probe("/healthz").await,
        (503, "unhealthy: 1 of 4 workers silent\n".to_owned())
    );
    assert_eq!(
        probe("/readyz").await,
        (503, "not ready: 1 of 4 workers silent\n".to_owned())
    );

    endpoint.relay.set_health(healthy());
    assert_eq!(probe("/healthz").await.0, 200);
    assert_eq!(probe("/readyz").await.0, 200);
}

#[tokio::test]
async fn v1_status_reports_the_snapshot() {
    let relay = FakeRelay::with(Vec::new());
    let mut by_kind = [[[0u64; 2]; 2]; 4];
    by_kind[0][0][0] = 5; // udp, ipv4, udp relay
    by_kind[0][1][0] = 2; // udp, ipv6
    by_kind[2][0][1] = 1; // tls, ipv4, tcp relay (RFC 6062)
    *relay.snapshot.lock().unwrap() = Snapshot {
        workers: WorkerShare {
            allocations: AllocationGauges {
                by_kind,
                total: 7,
                channels: 3,
                permissions: 9,
            },
            ..WorkerShare::default()
        },
        worker_count: 4,
        workers_silent: 0,
        draining: true,
        credentials: Some(CredentialStats {
            cache_hits: 10,
            cache_misses: 2,
            database_up: false,
            down_since: Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_769_862_896)),
            ..CredentialStats::default()
        }),
        config: ConfigFacts {
            sha256: "5e".repeat(32),
            reloads_applied: 2,
            reloads_refused: 1,
        },
        ..Snapshot::default()
    };
    relay.set_health(Health {
        draining: true,
        ..healthy()
    });
    let endpoint = Endpoint::new(relay).with_token(true);
    let answer = endpoint.get("/v1/status").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.headers.get(header::CONTENT_TYPE).unwrap(),
        "application/json"
    );
    let mut status = answer.json();
    assert!(status["uptime_seconds"].as_u64().is_some());
    status["uptime_seconds"] = 0.into();
    assert_eq!(
        status,
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": 0,
            "ready": false,
            "not_ready": ["draining"],
            "workers": {"running": 4, "silent": 0},
            "listeners": [
                {"transport": "udp", "address": "0.0.0.0:3478"},
                {"transport": "tcp", "address": "[::]:3478"},
            ],
            "allocations": {
                "total": 7,
                "channels": 3,
                "permissions": 9,
                "by_kind": [
                    {"transport": "udp", "family": "ipv4", "relay": "udp", "allocations": 5},
                    {"transport": "udp", "family": "ipv6", "relay": "udp", "allocations": 2},
                    {"transport": "tls", "family": "ipv4", "relay": "tcp", "allocations": 1},
                ],
            },
            "draining": true,
            "database": {
                "up": false,
                "down_since": "2026-01-31T12:34:56Z",
                "cache_hits": 10,
                "cache_misses": 2,
            },
            "tls": null,
            "config": {
                "sha256": "5e".repeat(32),
                "reloads_applied": 2,
                "reloads_refused": 1,
            },
        })
    );
    // The old /status is unchanged: three keys, no question to the workers.
    let old = endpoint.get("/status").await.json();
    let keys: Vec<&String> = old.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["tls", "uptime_seconds", "version"]);
}

/// 25 allocations of three users, ids 1 to 25 (16 hex digits each).
fn population() -> Vec<AllocationInfo> {
    (1..=25u64)
        .rev()
        .map(|i| allocation(i, ["alice", "bob", "carol"][(i % 3) as usize]))
        .collect()
}

fn ids(page: &serde_json::Value) -> Vec<u64> {
    page["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| u64::from_str_radix(a["id"].as_str().unwrap(), 16).unwrap())
        .collect()
}

#[tokio::test]
async fn allocations_come_in_pages_ordered_by_id() {
    let endpoint = Endpoint::new(FakeRelay::with(population())).with_token(true);
    // The default page holds them all.
    let all = endpoint.get("/v1/allocations").await;
    assert_eq!(all.status, StatusCode::OK);
    let all = all.json();
    assert_eq!(ids(&all), (1..=25).collect::<Vec<_>>());
    assert!(all["next_cursor"].is_null());
    let first = &all["allocations"][0];
    assert_eq!(first["id"], "0000000000000001");
    assert_eq!(first["user"], "bob");
    assert_eq!(first["client"], "192.0.2.7:40001");
    assert_eq!(first["relayed"], serde_json::json!(["203.0.113.1:50001"]));
    assert_eq!(
        first["channels"],
        serde_json::json!([{"number": 16384, "peer": "198.51.100.9:9000"}])
    );

    // Walk them ten at a time.
    let mut seen = Vec::new();
    let mut uri = "/v1/allocations?limit=10".to_owned();
    let mut pages = 0;
    loop {
        let page = endpoint.get(&uri).await.json();
        pages += 1;
        let got = ids(&page);
        assert!(got.len() <= 10);
        seen.extend(got);
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                assert_eq!(cursor, format!("{:016x}", seen.last().unwrap()));
                uri = format!("/v1/allocations?limit=10&cursor={cursor}");
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, (1..=25).collect::<Vec<_>>());

    // A cursor that is no id starts after where it would be; at the end,
    // an empty last page.
    let page = endpoint
        .get("/v1/allocations?cursor=0000000000000014&limit=3")
        .await
        .json();
    assert_eq!(ids(&page), [21, 22, 23]);
    assert_eq!(page["next_cursor"], "0000000000000017");
    let page = endpoint
        .get("/v1/allocations?cursor=0000000000000019")
        .await
        .json();
    assert_eq!(ids(&page), Vec::<u64>::new());
    assert!(page["next_cursor"].is_null());
    // Exactly a page left: no next page.
    let page = endpoint
        .get("/v1/allocations?cursor=0000000000000014&limit=5")
        .await
        .json();
    assert_eq!(ids(&page), [21, 22, 23, 24, 25]);
    assert!(page["next_cursor"].is_null());

    // One user's (names percent-encoded or not), in pages too.
    let page = endpoint
        .get("/v1/allocations?user=alice&limit=4")
        .await
        .json();
    assert_eq!(ids(&page), [3, 6, 9, 12]);
    assert_eq!(page["next_cursor"], "000000000000000c");
    let page = endpoint
        .get("/v1/allocations?user=%61lice&cursor=000000000000000c")
        .await
        .json();
    assert_eq!(ids(&page), [15, 18, 21, 24]);
    let page = endpoint.get("/v1/allocations?user=nobody").await.json();
    assert_eq!(ids(&page), Vec::<u64>::new());
}

#[tokio::test]
async fn allocations_limits() {
    let many: Vec<AllocationInfo> = (1..=1205u64).map(|i| allocation(i, "u")).collect();
    let endpoint = Endpoint::new(FakeRelay::with(many)).with_token(true);
    // Default 100.
    let page = endpoint.get("/v1/allocations").await.json();
    assert_eq!(ids(&page).len(), 100);
    assert_eq!(page["next_cursor"], format!("{:016x}", 100));
    // At most 1000, whatever is asked.
    let page = endpoint.get("/v1/allocations?limit=5000").await.json();
    assert_eq!(ids(&page).len(), 1000);
    assert_eq!(page["next_cursor"], format!("{:016x}", 1000));
    // Bad queries are 400 with a JSON reason.
    for (query, needle) in [
        ("limit=0", "limit \"0\" is not a positive whole number"),
        ("limit=-1", "is not a positive whole number"),
        ("limit=ten", "is not a positive whole number"),
        (
            "users=alice",
            "unknown query parameter \"users\"; use user, limit and cursor",
        ),
        ("user=a&user=b", "user is given twice"),
        ("user=%ff", "not UTF-8"),
    ] {
        let answer = endpoint.get(&format!("/v1/allocations?{query}")).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{query}");
        let error = answer.json()["error"].as_str().unwrap().to_owned();
        assert!(error.contains(needle), "{query}: {error}");
    }
}

#[test]
fn page_queries() {
    let parse = |q: &str| PageQuery::parse(Some(q)).unwrap();
    assert_eq!(
        PageQuery::parse(None).unwrap(),
        PageQuery {
            user: None,
            limit: 100,
            cursor: None
        }
    );
    assert_eq!(parse(""), PageQuery::parse(None).unwrap());
    assert_eq!(
        parse("user=1767225600%3Aal+ice&limit=7&cursor=00ff"),
        PageQuery {
            user: Some("1767225600:al ice".to_owned()),
            limit: 7,
            cursor: Some("00ff".to_owned())
        }
    );
    assert_eq!(parse("limit=1000").limit, 1000);
    assert_eq!(parse("limit=1001").limit, 1000);
    assert_eq!(parse("user=a%2Bb").user.as_deref(), Some("a+b"));
    assert_eq!(parse("user=").user.as_deref(), Some(""));
}

#[tokio::test]
async fn kicking_one_allocation() {
    let endpoint = Endpoint::new(FakeRelay::with(population())).with_token(true);
    let answer = endpoint.delete("/v1/allocations/0000000000000007").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.json(), serde_json::json!({"ended": 1}));
    assert_eq!(
        endpoint.relay.kicks(),
        [AllocationFilter {
            user: None,
            id: Some("0000000000000007".to_owned())
        }]
    );
    // Gone: a second kick finds nothing.
    let answer = endpoint.delete("/v1/allocations/0000000000000007").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    let body = answer.json();
    assert_eq!(body["ended"], 0);
    assert_eq!(
        body["error"],
        "no live allocation has id \"0000000000000007\""
    );
    let left = endpoint.get("/v1/allocations").await.json();
    assert_eq!(ids(&left).len(), 24);
    // GET on it is not a route.
    let answer = endpoint.get("/v1/allocations/0000000000000008").await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn kicking_a_user() {
    let endpoint = Endpoint::new(FakeRelay::with(population())).with_token(true);
    let answer = endpoint.delete("/v1/users/carol/allocations").await;
    assert_eq!(answer.status, StatusCode::OK);
    // Ids 2, 5, …, 23 are carol's.
    assert_eq!(answer.json(), serde_json::json!({"ended": 8}));
    // No allocation left: still 200 (the user is stopped all the same).
    let answer = endpoint.delete("/v1/users/carol/allocations").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json(), serde_json::json!({"ended": 0}));
    // A time-limited credential's user id, percent-encoded in the path.
    let answer = endpoint
        .delete("/v1/users/1767225600%3Adave/allocations")
        .await;
    assert_eq!(answer.json(), serde_json::json!({"ended": 0}));
    let user = |name: &str| AllocationFilter {
        user: Some(name.to_owned()),
        id: None,
    };
    assert_eq!(
        endpoint.relay.kicks(),
        [user("carol"), user("carol"), user("1767225600:dave")]
    );
    let left = endpoint.get("/v1/allocations").await.json();
    assert_eq!(ids(&left).len(), 17);
}

#[tokio::test]
async fn draining_starts_and_stops_and_readiness_follows() {
    let endpoint = Endpoint::new(FakeRelay::with(vec![
        allocation(1, "alice"),
        allocation(2, "bob"),
    ]))
    .with_token(true);
    let bearer = format!("Bearer {TOKEN}");
    let state = endpoint.get("/v1/drain").await;
    assert_eq!(state.status, StatusCode::OK);
    assert_eq!(
        state.json(),
        serde_json::json!({"draining": false, "allocations": 2, "workers_silent": 0})
    );
    assert_eq!(endpoint.get("/readyz").await.status, StatusCode::OK);

    let started = endpoint.ask(Method::POST, "/v1/drain", Some(&bearer)).await;
    assert_eq!(started.status, StatusCode::OK);
    assert_eq!(
        started.json(),
        serde_json::json!({"draining": true, "allocations": 2, "workers_silent": 0})
    );
    let ready = endpoint.ask(Method::GET, "/readyz", None).await;
    assert_eq!(
        (ready.status, ready.body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: draining\n")
    );
    assert_eq!(endpoint.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(endpoint.get("/v1/status").await.json()["draining"], true);
    assert!(
        endpoint
            .get("/metrics")
            .await
            .body
            .contains("\nturnpike_draining 1\n"),
        "the metric follows"
    );
    // Starting again changes nothing.
    let again = endpoint.ask(Method::POST, "/v1/drain", Some(&bearer)).await;
    assert_eq!(again.json()["draining"], true);

    let stopped = endpoint.delete("/v1/drain").await;
    assert_eq!(stopped.status, StatusCode::OK);
    assert_eq!(stopped.json()["draining"], false);
    assert_eq!(endpoint.get("/readyz").await.status, StatusCode::OK);
    assert!(
        endpoint
            .get("/metrics")
            .await
            .body
            .contains("\nturnpike_draining 0\n"),
        "the metric follows"
    );
    assert_eq!(
        endpoint
            .ask(Method::PUT, "/v1/drain", Some(&bearer))
            .await
            .status,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test]
async fn unknown_paths_list_the_routes() {
    let endpoint = Endpoint::new(FakeRelay::with(Vec::new())).with_token(true);
    for path in ["/", "/v2/status", "/v1/users/alice"] {
        let answer = endpoint.get(path).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(answer.body, NOT_FOUND);
    }
    assert!(NOT_FOUND.contains("GET /healthz, /readyz, /metrics, /status, /v1/status"));
    assert_eq!(
        endpoint
            .ask(Method::POST, "/v1/status", Some(&format!("Bearer {TOKEN}")))
            .await
            .status,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[test]
fn tokens() {
    let token = Token::parse("  0123456789abcdef\n").unwrap();
    assert_eq!(token.as_str(), "0123456789abcdef");
    assert!(token.matches(b"0123456789abcdef"));
    assert!(!token.matches(b"0123456789abcdeF"));
    assert!(!token.matches(b"0123456789abcde"));
    assert!(!token.matches(b""));
    assert_eq!(format!("{token:?}"), "Token(…)");
    for (text, why) in [
        ("", "is empty"),
        (" \n", "is empty"),
        ("0123456789 abcdef", "holds a space"),
        ("0123456789abcdef\n0123", "holds a space, a line break"),
        ("0123456789abcdé", "not printable ASCII"),
        ("short", "holds a token of 5 characters; use at least 16"),
    ] {
        let err = Token::parse(text).unwrap_err();
        assert!(err.contains(why), "{text:?}: {err}");
    }
}

#[test]
fn token_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    assert_eq!(Token::load(&path).unwrap().as_str(), TOKEN);
    let admin = AdminSettings {
        token_file: Some(path.clone()),
        probes_without_token: false,
        ..AdminSettings::default()
    };
    let access = Access::from_settings(&admin).unwrap();
    assert!(access.token.is_some() && !access.probes_without_token);
    assert!(
        Access::from_settings(&AdminSettings::default())
            .unwrap()
            .token
            .is_none()
    );

    let message = |path: &std::path::Path| {
        let message = Token::load(path).unwrap_err().to_string();
        assert!(!message.contains('\n'), "{message}");
        assert!(!message.contains(TOKEN), "{message}");
        message
    };
    let missing = dir.path().join("missing.token");
    assert_eq!(
        message(&missing),
        format!(
            "invalid configuration: admin.token_file {0}: cannot read it: no such file or directory; create it, e.g. with `openssl rand -hex 32 > {0}`",
            missing.display()
        )
    );
    std::fs::write(&path, "\n\n").unwrap();
    assert_eq!(
        message(&path),
        format!(
            "invalid configuration: admin.token_file {0} is empty; write a token into it, e.g. with `openssl rand -hex 32 > {0}`",
            path.display()
        )
    );
    std::fs::write(&path, [0xff, 0xfe]).unwrap();
    assert!(message(&path).contains("is not text"));
    // A directory cannot be read as a file.
    assert!(message(dir.path()).contains("cannot read it"));
}

/// `POST /v1/reload` reloads and answers the report: 200 when applied,
/// 422 when refused; another method is 405 and reloads nothing.
#[tokio::test]
async fn reload_answers_the_report() {
    let endpoint = Endpoint::new(FakeRelay::with(Vec::new())).with_token(false);
    *endpoint.relay.reload.lock().unwrap() = Some(ReloadReport {
        result: ReloadResult::Applied,
        error: None,
        warnings: vec!["stun.listen changed in turnpike.toml but needs a restart".to_owned()],
        changed: vec!["turn.users".to_owned()],
        config_sha256: "ab".repeat(32),
    });
    let answer = endpoint.post("/v1/reload").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(
        answer.json(),
        serde_json::json!({
            "result": "applied",
            "error": null,
            "warnings": ["stun.listen changed in turnpike.toml but needs a restart"],
            "changed": ["turn.users"],
            "config_sha256": "ab".repeat(32),
        })
    );
    *endpoint.relay.reload.lock().unwrap() = Some(ReloadReport {
        result: ReloadResult::Refused,
        error: Some("turnpike.toml line 3: unknown key `lissen` in [stun]".to_owned()),
        warnings: Vec::new(),
        changed: Vec::new(),
        config_sha256: "ab".repeat(32),
    });
    let answer = endpoint.post("/v1/reload").await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer.json()["result"], "refused");
    assert_eq!(
        answer.json()["error"],
        "turnpike.toml line 3: unknown key `lissen` in [stun]"
    );
    assert_eq!(*endpoint.relay.reloads.lock().unwrap(), 2);
    assert_eq!(
        endpoint.get("/v1/reload").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(*endpoint.relay.reloads.lock().unwrap(), 2);
}
