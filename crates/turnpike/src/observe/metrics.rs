//! `GET /metrics`: a [`Snapshot`] in the Prometheus text format (version
//! 0.0.4), encoded by `prometheus-client` at scrape time.
//!
//! Nothing here runs on the packet path. The workers count in plain
//! integers of their own ([`Stats`](turnpike_core::Stats),
//! [`ShellStats`](super::ShellStats)); a scrape sums their shares into one
//! [`Snapshot`] and [`render`] writes it out through a fresh
//! `prometheus_client` [`Registry`] holding a single [`Collector`] that owns
//! a copy of the snapshot. No atomics, no long-lived registry, no
//! `Family::get_or_create`.
//!
//! Why the 0.0.4 text format rather than OpenMetrics: it is what
//! `/metrics` has served since the start (`text/plain; version=0.0.4`, which
//! scrapers and the tests expect), `promtool check metrics` lints exactly
//! this format, and it keeps the counters' `# TYPE` lines named as their
//! samples (`…_total`), which older tooling wants. Prometheus scrapes both.
//!
//! Names follow the Prometheus conventions: base units (`_seconds`,
//! `_bytes`), counters end in `_total`, and every label value comes from a
//! fixed set (an enum of the core, or a literal here). No username,
//! address, realm or allocation id ever becomes a label, so what a scraper
//! stores is bounded whatever clients send. The only free-text values are
//! the three info metrics' `version`, `subject` and `sha256`, one series
//! each, set by the operator (a reload moves `sha256` to a new series).
//!
//! # Metrics
//!
//! Label sets: `transport` udp, tcp, tls, dtls (connections: tcp, tls,
//! dtls; handshakes: tls, dtls); `family` ipv4, ipv6; `relay_transport` udp,
//! tcp; `direction` to_peer, to_client; `path` sockets, xdp; `method`
//! binding, allocate, refresh, create_permission, channel_bind, connect,
//! connection_bind, other; `code` 300, 400, 401, 403, 420, 437, 438, 440,
//! 441, 442, 443, 446, 447, 486, 500, 508, other; auth failure `reason`
//! unknown_user, bad_integrity, stale_nonce, expired_credential, stopped,
//! database_unavailable; allocation end `reason` refresh, expired,
//! connection_closed, kicked, drained; reload `result` applied, refused;
//! drop `reason` malformed,
//! rate_limited, no_permission, peer_refused, too_big_for_client,
//! too_big_for_peer, path_mtu, queue_full, bandwidth_cap (the sockets' and
//! the XDP program's drops together).
//!
//! Always present:
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `turnpike_build_info` | gauge | version | Turnpike's version; always 1. |
//! | `turnpike_workers` | gauge | | Workers running. |
//! | `turnpike_workers_silent` | gauge | | Workers that did not answer this scrape in time (their counters are missing from it). |
//! | `turnpike_draining` | gauge | | 1 while draining (new allocations refused), else 0. |
//! | `turnpike_config_reloads_total` | counter | result | Configuration reloads (SIGHUP, `POST /v1/reload`): applied (settings that need a restart kept), or refused (the file did not parse or validate). |
//! | `turnpike_config_info` | gauge | sha256 | SHA-256 of the configuration file in service (what `sha256sum` prints); always 1. |
//! | `turnpike_requests_total` | counter | method | STUN/TURN requests received (dropped ones included). |
//! | `turnpike_error_responses_total` | counter | method, code | Error responses sent. |
//! | `turnpike_binding_requests_total` | counter | transport | Binding requests answered with a success. |
//! | `turnpike_auth_successes_total` | counter | | Requests whose credentials verified. |
//! | `turnpike_auth_failures_total` | counter | reason | Requests whose credentials were refused. |
//! | `turnpike_challenges_total` | counter | | 401/438 challenges (with a fresh NONCE) sent. |
//! | `turnpike_challenges_rate_limited_total` | counter | | Answers (challenges) held back by the per-source rate limit or the amplification budget. |
//! | `turnpike_quota_rejections_total` | counter | code (486, 508) | Allocate requests refused by the per-user quota (486) or the total capacity (508). |
//! | `turnpike_peers_refused_total` | counter | | Requests and data refused because the peer policy forbids the peer. |
//! | `turnpike_dropped_packets_total` | counter | reason | Packets dropped without an answer. |
//! | `turnpike_allocations` | gauge | transport, family, relay_transport | Live allocations; a dual-stack one counts once per family. |
//! | `turnpike_channels` | gauge | | Channels bound now. |
//! | `turnpike_permissions` | gauge | | Permissions installed now. |
//! | `turnpike_allocations_created_total` | counter | | Allocations created. |
//! | `turnpike_allocations_ended_total` | counter | reason | Allocations ended. Created minus ended is the live count, each allocation once. |
//! | `turnpike_allocation_duration_seconds` | histogram | | How long the ended allocations lasted. |
//! | `turnpike_relayed_packets_total` | counter | direction, path | Datagrams relayed (path xdp only with the fast path on). |
//! | `turnpike_relayed_bytes_total` | counter | direction, path | Payload bytes relayed, without TURN framing. |
//! | `turnpike_connections` | gauge | transport | Client connections open now. |
//! | `turnpike_connections_accepted_total` | counter | transport | Client connections accepted. |
//! | `turnpike_connections_refused_total` | counter | transport | Client connections refused by a limit (per source, in all, handshakes in progress). |
//! | `turnpike_handshakes_total` | counter | transport | TLS and DTLS handshakes completed. |
//! | `turnpike_handshake_failures_total` | counter | transport | TLS and DTLS handshakes that failed or timed out. |
//! | `turnpike_peer_connections` | gauge | | RFC 6062 peer connections open now. |
//! | `turnpike_peer_connections_connected_total` | counter | | RFC 6062 peer connections opened by Connect. |
//! | `turnpike_peer_connections_accepted_total` | counter | | RFC 6062 peer connections accepted from peers. |
//! | `process_cpu_seconds_total` | counter | | User and system CPU time (Linux). |
//! | `process_resident_memory_bytes` | gauge | | Resident memory. |
//! | `process_virtual_memory_bytes` | gauge | | Virtual memory. |
//! | `process_open_fds` | gauge | | Open file descriptors. |
//! | `process_max_fds` | gauge | | The open file descriptor limit (soft; absent when unlimited). |
//! | `process_start_time_seconds` | gauge | | Start time, Unix seconds. |
//!
//! With TURN (the credential cache and database):
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `turnpike_credential_cache_hits_total` | counter | | Key lookups answered from the cache. |
//! | `turnpike_credential_cache_misses_total` | counter | | Key lookups that went to the database. |
//! | `turnpike_database_lookup_duration_seconds` | histogram | | Database lookup latency. |
//! | `turnpike_database_up` | gauge | | 1 if the last database call succeeded, else 0. |
//!
//! With `fleet.register`:
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `turnpike_fleet_heartbeat_failures_total` | counter | | Heartbeats the database did not take (one log line per outage). |
//!
//! With TLS:
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `turnpike_tls_certificate_not_after_seconds` | gauge | | Expiry (notAfter) of the server certificate in service, Unix time. |
//! | `turnpike_tls_certificate_reloads_total` | counter | | Reloads that changed the certificate or key. |
//! | `turnpike_tls_certificate_reloads_refused_total` | counter | | Renewals refused (did not parse, or key and certificate did not match); the previous certificate stays. |
//! | `turnpike_tls_certificate_info` | gauge | subject | Subject of the certificate in service; always 1. |
//!
//! With the XDP fast path:
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `turnpike_xdp_routes` | gauge | | Channel routes installed. |
//! | `turnpike_xdp_route_capacity` | gauge | | Routes it holds per address family. |
//! | `turnpike_xdp_relayed_packets_total` | counter | direction | Datagrams relayed in the driver (also in `turnpike_relayed_packets_total{path="xdp"}`). |
//! | `turnpike_xdp_relayed_bytes_total` | counter | direction | Their payload bytes. |
//! | `turnpike_xdp_passed_packets_total` | counter | | Packets of a route left to the sockets (route past its time, padding, MTU, unknown next hop). |
//!
//! With the ICE-server endpoint (`ice.enabled`, and `turnpike ice-config`):
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `turnpike_ice_requests_total` | counter | route (ice_servers, calls_config_v2, calls_config), outcome (served, unauthorized, rate_limited, bad_request, unavailable) | ICE-server requests. |
//! | `turnpike_fleet_relays` | gauge | state (healthy, unhealthy, unknown, draining) | Relays known to the endpoint; unknown: not probed yet. |
//! | `turnpike_fleet_all_unhealthy` | gauge | | 1 while every relay is unhealthy, so all are handed out rather than none. |
//! | `turnpike_fleet_registered_relays` | gauge | | Relays listed from the database (`discovery.database`), seen within `fleet.expire_after`. |
//! | `turnpike_discovery_lookups_total` | counter | | DNS SRV discovery rounds. |
//! | `turnpike_discovery_failures_total` | counter | | Rounds where none of the three SRV names answered (the last good set was kept). |

use std::fmt;
use std::time::SystemTime;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeMetric, MetricEncoder,
    NoLabelSet, prometheus_text,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use turnpike_core::stats::{
    DURATION_BUCKETS, DropReason, ErrorCode, Label, RequestMethod, Tally, Traffic, TransportLabel,
};

use super::{
    FLEET_STATES, IceFacts, IceOutcome, IceRoute, LATENCY_BUCKETS, LatencyHistogram, Snapshot,
};
use crate::tls::Certificates;

/// The `Content-Type` of what [`render`] returns.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Transports with connections (and so connection counters).
const STREAM_TRANSPORTS: [TransportLabel; 3] = [
    TransportLabel::Tcp,
    TransportLabel::Tls,
    TransportLabel::Dtls,
];

/// Transports with handshakes.
const SECURE_TRANSPORTS: [TransportLabel; 2] = [TransportLabel::Tls, TransportLabel::Dtls];

/// [`super::AllocationGauges::by_kind`]'s second index.
const FAMILIES: [&str; 2] = ["ipv4", "ipv6"];

/// [`super::AllocationGauges::by_kind`]'s third index.
const RELAY_TRANSPORTS: [&str; 2] = ["udp", "tcp"];

/// The Allocate error codes that are quota rejections.
const QUOTA_CODES: [ErrorCode; 2] = [ErrorCode::QuotaReached, ErrorCode::InsufficientCapacity];

/// Linux reports CPU times and the start time in clock ticks of `USER_HZ`,
/// which the kernel fixes at 100 for user space on every architecture
/// (what `sysconf(_SC_CLK_TCK)` returns; the Go client assumes it too).
const USER_HZ: f64 = 100.0;

/// The whole `/metrics` body: `snapshot`, the certificate in service if
/// any, and this process' own figures read from `/proc` now.
pub fn render(snapshot: &Snapshot, certs: Option<&Certificates>) -> String {
    let certificate = certs.map(CertificateFacts::of);
    render_parts(
        snapshot,
        certificate.as_ref(),
        ProcessStats::read().as_ref(),
    )
}

/// [`render`] with the certificate and process figures given rather than
/// read (tests use fixed ones).
pub fn render_parts(
    snapshot: &Snapshot,
    certificate: Option<&CertificateFacts>,
    process: Option<&ProcessStats>,
) -> String {
    // A registry per scrape: the collector owns its copy of the snapshot
    // (a `Collector` is `'static`), and is dropped with the registry.
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Exposition {
        snapshot: snapshot.clone(),
        certificate: certificate.cloned(),
        process: process.cloned(),
    }));
    let mut out = String::with_capacity(32 * 1024);
    // Writing to a String never fails, and the collector's own errors are
    // the writer's: nothing can fail here.
    let _ = prometheus_text::encode(&mut out, &registry);
    out
}

/// What the metrics say about the TLS certificate in service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateFacts {
    /// Its subject (`CN=…, O=…`).
    pub subject: String,
    /// Its notAfter.
    pub not_after: SystemTime,
    /// Reloads that changed the certificate or key since the start.
    pub generation: u64,
}

impl CertificateFacts {
    /// Reads them from the certificates in service.
    pub fn of(certs: &Certificates) -> Self {
        CertificateFacts {
            subject: certs.subject(),
            not_after: certs.not_after(),
            generation: certs.generation(),
        }
    }
}

/// The process' own figures, as the Prometheus client libraries export
/// them (`process_*`). Linux only: read from `/proc`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessStats {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory, in bytes.
    pub resident_memory_bytes: u64,
    /// Virtual memory, in bytes.
    pub virtual_memory_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on open file descriptors; `None` when unlimited.
    pub max_fds: Option<u64>,
    /// When the process started, Unix seconds.
    pub start_time_seconds: f64,
}

impl ProcessStats {
    /// Reads `/proc/self/{stat,status,limits,fd}` and `/proc/stat`; `None`
    /// if one cannot be read or understood (not Linux, or no `/proc`):
    /// the scrape then has no `process_*` metrics rather than wrong ones.
    pub fn read() -> Option<ProcessStats> {
        let file = |path: &str| std::fs::read_to_string(path).ok();
        // The directory's own descriptor is among those listed, as for the
        // other client libraries.
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        ProcessStats::parse(
            &file("/proc/self/stat")?,
            &file("/proc/self/status")?,
            &file("/proc/self/limits")?,
            &file("/proc/stat")?,
            open_fds,
        )
    }

    /// The figures from the texts of `/proc/self/stat`, `/proc/self/status`,
    /// `/proc/self/limits` and `/proc/stat` (see proc(5)).
    pub fn parse(
        stat: &str,
        status: &str,
        limits: &str,
        system_stat: &str,
        open_fds: u64,
    ) -> Option<ProcessStats> {
        // The command name (field 2) is in parentheses and may hold spaces
        // and parentheses itself: the fields after it start after the last
        // ')'. The first of those is field 3.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        let (utime, stime, start_ticks, vsize) = (field(14)?, field(15)?, field(22)?, field(23)?);
        // `VmRSS:    1234 kB`: in KiB, so no page size is needed.
        let resident_kib = status.lines().find_map(|line| {
            line.strip_prefix("VmRSS:")?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })?;
        // `Max open files            1024                 1048576              files`:
        // the soft limit, then the hard one.
        let max_fds = match limits.lines().find_map(|line| {
            line.strip_prefix("Max open files")?
                .split_whitespace()
                .next()
        })? {
            "unlimited" => None,
            soft => Some(soft.parse::<u64>().ok()?),
        };
        let boot_time = system_stat
            .lines()
            .find_map(|line| line.strip_prefix("btime ")?.trim().parse::<u64>().ok())?;
        Some(ProcessStats {
            cpu_seconds: (utime + stime) as f64 / USER_HZ,
            resident_memory_bytes: resident_kib * 1024,
            virtual_memory_bytes: vsize,
            open_fds,
            max_fds,
            start_time_seconds: boot_time as f64 + start_ticks as f64 / USER_HZ,
        })
    }
}

/// The one collector of a scrape's registry.
#[derive(Debug)]
struct Exposition {
    snapshot: Snapshot,
    certificate: Option<CertificateFacts>,
    process: Option<ProcessStats>,
}

impl Collector for Exposition {
    fn encode(&self, mut out: DescriptorEncoder) -> fmt::Result {
        let out = &mut out;
        let s = &self.snapshot;
        let core = &s.workers.core;
        let shell = &s.workers.shell;
        let gauges = &s.workers.allocations;

        info(
            out,
            "turnpike_build_info",
            "Turnpike version; always 1.",
            ("version", env!("CARGO_PKG_VERSION")),
        )?;
        gauge(out, "turnpike_workers", "Workers running.", s.worker_count)?;
        gauge(
            out,
            "turnpike_workers_silent",
            "Workers that did not answer this scrape in time; their counters are missing from it.",
            s.workers_silent,
        )?;
        gauge(
            out,
            "turnpike_draining",
            "1 while the server drains (refuses new allocations), else 0.",
            u64::from(s.draining),
        )?;
        counters(
            out,
            "turnpike_config_reloads_total",
            "Configuration reloads (SIGHUP, POST /v1/reload), by result: applied (settings that need a restart kept), or refused (the file did not parse or validate).",
            [
                ([("result", "applied")], s.config.reloads_applied),
                ([("result", "refused")], s.config.reloads_refused),
            ],
        )?;
        info(
            out,
            "turnpike_config_info",
            "SHA-256 of the configuration file in service (what sha256sum prints); always 1.",
            ("sha256", s.config.sha256.as_str()),
        )?;

        // Requests and answers.
        counters(
            out,
            "turnpike_requests_total",
            "STUN and TURN requests received, by method (those dropped unanswered included).",
            tally("method", &core.requests),
        )?;
        counters(
            out,
            "turnpike_error_responses_total",
            "Error responses sent, by request method and error code.",
            RequestMethod::ALL.iter().flat_map(|&method| {
                core.errors(method).iter().map(move |(code, n)| {
                    ([("method", method.as_str()), ("code", code.as_str())], n)
                })
            }),
        )?;
        counters(
            out,
            "turnpike_binding_requests_total",
            "STUN Binding requests answered with a success, by client transport.",
            tally("transport", &core.bindings),
        )?;
        counter(
            out,
            "turnpike_auth_successes_total",
            "Requests whose credentials verified.",
            core.auth_successes,
        )?;
        counters(
            out,
            "turnpike_auth_failures_total",
            "Requests whose credentials were refused, by reason.",
            tally("reason", &core.auth_failures),
        )?;
        counter(
            out,
            "turnpike_challenges_total",
            "401 and 438 challenges (with a fresh NONCE) sent.",
            core.challenges_sent,
        )?;
        counter(
            out,
            "turnpike_challenges_rate_limited_total",
            "Answers (challenges) held back by the per-source rate limit or the amplification budget.",
            core.drops.get(DropReason::RateLimited),
        )?;
        let allocate_errors = core.errors(RequestMethod::Allocate);
        counters(
            out,
            "turnpike_quota_rejections_total",
            "Allocate requests refused by the per-user quota (486) or the server's capacity (508).",
            QUOTA_CODES.map(|code| ([("code", code.as_str())], allocate_errors.get(code))),
        )?;
        counter(
            out,
            "turnpike_peers_refused_total",
            "Requests and data refused because the peer policy forbids the peer.",
            core.peers_refused,
        )?;
        // The XDP program's drops over a cap are the core's reason too: one
        // cap, wherever it is enforced.
        let mut drops = core.drops;
        if let Some(fast) = &s.fast_path {
            drops.add(DropReason::BandwidthCap, fast.capped);
        }
        counters(
            out,
            "turnpike_dropped_packets_total",
            "Packets and relayed data dropped without an answer, by reason.",
            tally("reason", &drops),
        )?;

        // Allocations.
        let mut by_kind = Vec::with_capacity(TransportLabel::ALL.len() * 4);
        for (&transport, families) in TransportLabel::ALL.iter().zip(&gauges.by_kind) {
            for (family, kinds) in FAMILIES.into_iter().zip(families) {
                for (relay, &n) in RELAY_TRANSPORTS.into_iter().zip(kinds) {
                    let labels = [
                        ("transport", transport.as_str()),
                        ("family", family),
                        ("relay_transport", relay),
                    ];
                    by_kind.push((labels, n));
                }
            }
        }
        gauges_of(
            out,
            "turnpike_allocations",
            "Live allocations by client transport, relayed address family and relay transport; a dual-stack allocation counts once per family.",
            by_kind,
        )?;
        gauge(
            out,
            "turnpike_channels",
            "Channels bound now.",
            gauges.channels,
        )?;
        gauge(
            out,
            "turnpike_permissions",
            "Permissions installed now.",
            gauges.permissions,
        )?;
        counter(
            out,
            "turnpike_allocations_created_total",
            "Allocations created.",
            core.allocations_created,
        )?;
        counters(
            out,
            "turnpike_allocations_ended_total",
            "Allocations ended, by reason.",
            tally("reason", &core.allocations_ended),
        )?;
        let duration = &core.allocation_duration;
        histogram(
            out,
            "turnpike_allocation_duration_seconds",
            "How long the ended allocations lasted.",
            &DURATION_BUCKETS.map(|b| b as f64),
            &duration.buckets,
            duration.sum_ms as f64 / 1e3,
        )?;

        // Relayed traffic, by path.
        let mut paths = vec![("sockets", core.relayed)];
        if let Some(fast) = &s.fast_path {
            paths.push(("xdp", fast.relayed));
        }
        counters(
            out,
            "turnpike_relayed_packets_total",
            "Datagrams relayed, by direction and path (the sockets, or the XDP fast path).",
            traffic(&paths, |t| (t.to_peer_packets, t.to_client_packets)),
        )?;
        counters(
            out,
            "turnpike_relayed_bytes_total",
            "Payload bytes relayed (without TURN framing), by direction and path.",
            traffic(&paths, |t| (t.to_peer_bytes, t.to_client_bytes)),
        )?;

        // Client connections and RFC 6062 peer connections.
        gauges_of(
            out,
            "turnpike_connections",
            "Client connections open now, by transport.",
            by_transport(&STREAM_TRANSPORTS, &shell.connections_open),
        )?;
        counters(
            out,
            "turnpike_connections_accepted_total",
            "Client connections accepted, by transport.",
            by_transport(&STREAM_TRANSPORTS, &shell.connections_accepted),
        )?;
        counters(
            out,
            "turnpike_connections_refused_total",
            "Client connections refused by a limit (per source, in all, handshakes in progress), by transport.",
            by_transport(&STREAM_TRANSPORTS, &shell.connections_refused),
        )?;
        counters(
            out,
            "turnpike_handshakes_total",
            "TLS and DTLS handshakes completed, by transport.",
            by_transport(&SECURE_TRANSPORTS, &shell.handshakes),
        )?;
        counters(
            out,
            "turnpike_handshake_failures_total",
            "TLS and DTLS handshakes that failed or timed out, by transport.",
            by_transport(&SECURE_TRANSPORTS, &shell.handshake_failures),
        )?;
        gauge(
            out,
            "turnpike_peer_connections",
            "RFC 6062 peer connections open now.",
            s.peer_connections_open,
        )?;
        counter(
            out,
            "turnpike_peer_connections_connected_total",
            "RFC 6062 peer connections opened by Connect requests.",
            core.peer_connections_connected,
        )?;
        counter(
            out,
            "turnpike_peer_connections_accepted_total",
            "RFC 6062 peer connections accepted from peers.",
            core.peer_connections_accepted,
        )?;

        if let Some(credentials) = &s.credentials {
            counter(
                out,
                "turnpike_credential_cache_hits_total",
                "Key lookups answered from the credential cache.",
                credentials.cache_hits,
            )?;
            counter(
                out,
                "turnpike_credential_cache_misses_total",
                "Key lookups that went to the credential database.",
                credentials.cache_misses,
            )?;
            latency_histogram(
                out,
                "turnpike_database_lookup_duration_seconds",
                "Credential database lookup latency.",
                &credentials.lookup_seconds,
            )?;
            gauge(
                out,
                "turnpike_database_up",
                "1 if the last credential database call succeeded, else 0.",
                u64::from(credentials.database_up),
            )?;
        }
        if let Some(failures) = s.heartbeat_failures {
            counter(
                out,
                "turnpike_fleet_heartbeat_failures_total",
                "Heartbeats of this relay (fleet.register) the database did not take.",
                failures,
            )?;
        }

        if let Some(cert) = &self.certificate {
            gauge(
                out,
                "turnpike_tls_certificate_not_after_seconds",
                "Expiry (notAfter) of the TLS server certificate in service, Unix time.",
                crate::date::unix_seconds(cert.not_after),
            )?;
            counter(
                out,
                "turnpike_tls_certificate_reloads_total",
                "Reloads that changed the TLS certificate or key since the start.",
                cert.generation,
            )?;
            counter(
                out,
                "turnpike_tls_certificate_reloads_refused_total",
                "TLS certificate renewals refused (unreadable, or key and certificate not matching); the previous certificate stays in service.",
                s.certificate_reloads_refused,
            )?;
            info(
                out,
                "turnpike_tls_certificate_info",
                "Subject of the TLS server certificate in service; always 1.",
                ("subject", &cert.subject),
            )?;
        }

        if let Some(fast) = &s.fast_path {
            gauge(
                out,
                "turnpike_xdp_routes",
                "Channel routes installed in the XDP fast path.",
                fast.routes,
            )?;
            gauge(
                out,
                "turnpike_xdp_route_capacity",
                "Channel routes the XDP fast path holds per address family; when full, routes past their time are evicted first.",
                fast.capacity,
            )?;
            let xdp = [("xdp", fast.relayed)];
            counters(
                out,
                "turnpike_xdp_relayed_packets_total",
                "Datagrams relayed by the XDP fast path.",
                traffic(&xdp, |t| (t.to_peer_packets, t.to_client_packets))
                    .map(|([direction, _path], n)| ([direction], n)),
            )?;
            counters(
                out,
                "turnpike_xdp_relayed_bytes_total",
                "Payload bytes relayed by the XDP fast path.",
                traffic(&xdp, |t| (t.to_peer_bytes, t.to_client_bytes))
                    .map(|([direction, _path], n)| ([direction], n)),
            )?;
            counter(
                out,
                "turnpike_xdp_passed_packets_total",
                "Packets of a route the XDP fast path left to the sockets (route past its time, padding, MTU, unknown next hop).",
                fast.passed,
            )?;
        }

        if let Some(p) = &self.process {
            process(out, p)?;
        }
        Ok(())
    }
}

/// This process' own figures, read from `/proc`.
fn process(out: &mut DescriptorEncoder<'_>, p: &ProcessStats) -> fmt::Result {
    counter(
        out,
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
        p.cpu_seconds,
    )?;
    gauge(
        out,
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        p.resident_memory_bytes,
    )?;
    gauge(
        out,
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        p.virtual_memory_bytes,
    )?;
    gauge(
        out,
        "process_open_fds",
        "Number of open file descriptors.",
        p.open_fds,
    )?;
    if let Some(max) = p.max_fds {
        gauge(
            out,
            "process_max_fds",
            "Maximum number of open file descriptors.",
            max,
        )?;
    }
    gauge(
        out,
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        p.start_time_seconds,
    )?;
    Ok(())
}

/// The `/metrics` body of `turnpike ice-config` (the ICE endpoint without a
/// relay): the version, [`render_ice`]'s and this process' figures.
pub fn render_ice_service(facts: &IceFacts) -> String {
    render_collector(IceExposition {
        facts: *facts,
        standalone: true,
        process: ProcessStats::read(),
    })
}

/// The ICE endpoint's and its fleet's metrics, appended to the relay's
/// when `turnpike serve` runs the endpoint.
pub fn render_ice(facts: &IceFacts) -> String {
    render_collector(IceExposition {
        facts: *facts,
        standalone: false,
        process: None,
    })
}

fn render_collector(collector: impl Collector) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collector));
    let mut out = String::with_capacity(4 * 1024);
    // Writing to a String never fails.
    let _ = prometheus_text::encode(&mut out, &registry);
    out
}

/// The ICE endpoint's collector.
#[derive(Debug)]
struct IceExposition {
    facts: IceFacts,
    /// Without a relay: the build info and process figures too.
    standalone: bool,
    process: Option<ProcessStats>,
}

impl Collector for IceExposition {
    fn encode(&self, mut out: DescriptorEncoder) -> fmt::Result {
        let out = &mut out;
        let f = &self.facts;
        if self.standalone {
            info(
                out,
                "turnpike_build_info",
                "Turnpike version; always 1.",
                ("version", env!("CARGO_PKG_VERSION")),
            )?;
        }
        counters(
            out,
            "turnpike_ice_requests_total",
            "ICE-server requests, by route and outcome.",
            IceRoute::ALL.into_iter().flat_map(|route| {
                IceOutcome::ALL.into_iter().map(move |outcome| {
                    (
                        [("route", route.label()), ("outcome", outcome.label())],
                        f.requests[route.index()][outcome.index()],
                    )
                })
            }),
        )?;
        gauges_of(
            out,
            "turnpike_fleet_relays",
            "Relays known to the ICE endpoint, by state (healthy, unhealthy, unknown: not probed yet, draining).",
            FLEET_STATES
                .into_iter()
                .zip(f.relays)
                .map(|(state, n)| ([("state", state)], n)),
        )?;
        gauge(
            out,
            "turnpike_fleet_all_unhealthy",
            "1 while every relay is unhealthy, so all of them are handed out rather than none.",
            u64::from(f.all_unhealthy),
        )?;
        gauge(
            out,
            "turnpike_fleet_registered_relays",
            "Relays listed from the database (discovery.database), seen within fleet.expire_after.",
            f.registered_relays,
        )?;
        counter(
            out,
            "turnpike_discovery_lookups_total",
            "DNS SRV discovery rounds.",
            f.dns_lookups,
        )?;
        counter(
            out,
            "turnpike_discovery_failures_total",
            "DNS SRV discovery rounds where none of the three names answered (the last good set was kept).",
            f.dns_failures,
        )?;
        if let Some(p) = &self.process {
            process(out, p)?;
        }
        Ok(())
    }
}

/// A label name and value; values are `'static` (fixed sets) except the
/// info metrics'.
type Pair<'a> = (&'static str, &'a str);

/// The `# HELP` and `# TYPE` lines of one metric. Names are written here
/// whole, as scrapers see them; `prometheus-client` appends a counter's
/// `_total` and an info metric's `_info` itself, so they are taken off
/// first.
fn descriptor<'s>(
    out: &'s mut DescriptorEncoder<'_>,
    name: &'s str,
    help: &str,
    kind: MetricType,
) -> Result<MetricEncoder<'s>, fmt::Error> {
    let suffix = match kind {
        MetricType::Counter => "_total",
        MetricType::Info => "_info",
        _ => "",
    };
    let stem = name.strip_suffix(suffix);
    debug_assert!(stem.is_some(), "{name} must end in {suffix}");
    out.encode_descriptor(stem.unwrap_or(name), help, None, kind)
}

/// A counter without labels.
fn counter<N: EncodeCounterValue>(
    out: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: N,
) -> fmt::Result {
    ConstCounter::new(value).encode(descriptor(out, name, help, MetricType::Counter)?)
}

/// A gauge without labels.
fn gauge<N: EncodeGaugeValue>(
    out: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: N,
) -> fmt::Result {
    ConstGauge::new(value).encode(descriptor(out, name, help, MetricType::Gauge)?)
}

/// A counter with one sample per label set.
fn counters<const L: usize>(
    out: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = ([Pair<'static>; L], u64)>,
) -> fmt::Result {
    let mut metric = descriptor(out, name, help, MetricType::Counter)?;
    for (labels, value) in samples {
        ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A gauge with one sample per label set.
fn gauges_of<const L: usize>(
    out: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = ([Pair<'static>; L], u64)>,
) -> fmt::Result {
    let mut metric = descriptor(out, name, help, MetricType::Gauge)?;
    for (labels, value) in samples {
        ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// An info metric: one sample, value 1, that carries a label.
fn info(out: &mut DescriptorEncoder<'_>, name: &str, help: &str, label: Pair<'_>) -> fmt::Result {
    descriptor(out, name, help, MetricType::Info)?.encode_info(&[label])
}

/// A histogram from non-cumulative bucket counts (the last, past every
/// bound, is `+Inf`'s own): the encoder sums them into the cumulative
/// `_bucket` series, and writes `+Inf` as the count of all.
fn histogram(
    out: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    bounds: &[f64],
    counts: &[u64],
    sum: f64,
) -> fmt::Result {
    debug_assert_eq!(counts.len(), bounds.len() + 1);
    let buckets: Vec<(f64, u64)> = bounds.iter().copied().zip(counts.iter().copied()).collect();
    let count = counts.iter().sum();
    descriptor(out, name, help, MetricType::Histogram)?
        .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
}

/// A [`LatencyHistogram`] (microseconds) in seconds.
fn latency_histogram(
    out: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    h: &LatencyHistogram,
) -> fmt::Result {
    histogram(
        out,
        name,
        help,
        &LATENCY_BUCKETS,
        &h.buckets,
        h.sum_us as f64 / 1e6,
    )
}

/// A [`Tally`]'s counts under one label.
fn tally<'a, L: Label>(
    name: &'static str,
    t: &'a Tally<L>,
) -> impl Iterator<Item = ([Pair<'static>; 1], u64)> + 'a {
    t.iter().map(move |(l, n)| ([(name, l.as_str())], n))
}

/// A [`Tally`] by transport, for some transports only.
fn by_transport<'a>(
    only: &'a [TransportLabel],
    t: &'a Tally<TransportLabel>,
) -> impl Iterator<Item = ([Pair<'static>; 1], u64)> + 'a {
    only.iter()
        .map(move |&l| ([("transport", l.as_str())], t.get(l)))
}

/// Per path, one sample each way; `pick` chooses packets or bytes.
fn traffic<'a>(
    paths: &'a [(&'static str, Traffic)],
    pick: impl Fn(&Traffic) -> (u64, u64) + 'a,
) -> impl Iterator<Item = ([Pair<'static>; 2], u64)> + 'a {
    paths.iter().flat_map(move |(path, t)| {
        let (to_peer, to_client) = pick(t);
        [
            ([("direction", "to_peer"), ("path", *path)], to_peer),
            ([("direction", "to_client"), ("path", *path)], to_client),
        ]
    })
}

// The snapshot every exposition test uses; see the file for why the path.
#[cfg(test)]
use crate::observe;
#[cfg(test)]
#[path = "../../tests/support/populated_snapshot.rs"]
mod populated_snapshot;

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::{Duration, UNIX_EPOCH};

    use turnpike_core::stats::{AuthFailure, EndReason};

    use super::populated_snapshot::populated;
    use super::*;
    use crate::observe::CredentialStats;

    /// Fixed figures for the certificate and the process.
    fn certificate(subject: &str) -> CertificateFacts {
        CertificateFacts {
            subject: subject.to_owned(),
            not_after: UNIX_EPOCH + Duration::from_secs(1_798_761_600),
            generation: 3,
        }
    }

    fn process() -> ProcessStats {
        ProcessStats {
            cpu_seconds: 1.5,
            resident_memory_bytes: 4096,
            virtual_memory_bytes: 8192,
            open_fds: 12,
            max_fds: Some(1024),
            start_time_seconds: 1_700_000_000.25,
        }
    }

    /// Everything: the populated snapshot, a certificate, the process.
    fn everything() -> String {
        let mut text = render_parts(
            &populated(),
            Some(&certificate("CN=turn.example.test, O=Tests")),
            Some(&process()),
        );
        // With the ICE-server endpoint on, its families follow.
        text.push_str(&render_ice(&IceFacts {
            requests: [[7, 1, 2, 3, 0], [5, 0, 0, 1, 0], [1, 0, 0, 0, 0]],
            relays: [2, 1, 0, 1],
            all_unhealthy: false,
            registered_relays: 2,
            dns_lookups: 40,
            dns_failures: 3,
        }));
        text
    }

    /// One sample line: name, labels in order, value.
    #[derive(Debug)]
    struct Line {
        name: String,
        labels: Vec<(String, String)>,
        value: String,
    }

    /// The sample lines, parsed strictly (quoted values with `\\`, `\"` and
    /// `\n` escapes); panics on anything else.
    fn samples(text: &str) -> Vec<Line> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| parse_sample(l).unwrap_or_else(|| panic!("not a sample line: {l:?}")))
            .collect()
    }

    fn parse_sample(line: &str) -> Option<Line> {
        let name_end = line.find(['{', ' '])?;
        let (name, mut rest) = line.split_at(name_end);
        let mut labels = Vec::new();
        if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices();
            loop {
                let (start, _) = chars.next()?;
                if body[start..].starts_with('}') {
                    rest = &body[start + 1..];
                    break;
                }
                let eq = start + body[start..].find("=\"")?;
                let key = body[start..eq].trim_start_matches(',').to_owned();
                // Skip to the opening quote's end.
                while chars.next()?.0 < eq + 1 {}
                let mut value = String::new();
                loop {
                    match chars.next()?.1 {
                        '\\' => match chars.next()?.1 {
                            '\\' => value.push('\\'),
                            '"' => value.push('"'),
                            'n' => value.push('\n'),
                            _ => return None,
                        },
                        '"' => break,
                        c => value.push(c),
                    }
                }
                labels.push((key, value));
                // Either `,` (next label) or `}` follows.
                let next = body[chars.clone().next()?.0..].chars().next()?;
                if next == ',' {
                    chars.next();
                }
            }
        }
        let value = rest.strip_prefix(' ')?;
        if value.contains(' ') || value.is_empty() {
            return None;
        }
        Some(Line {
            name: name.to_owned(),
            labels,
            value: value.to_owned(),
        })
    }

    /// Metric families from the `# TYPE` lines, in order.
    fn families(text: &str) -> Vec<(String, String)> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| {
                let (name, kind) = l.split_once(' ').expect("# TYPE name kind");
                (name.to_owned(), kind.to_owned())
            })
            .collect()
    }

    #[test]
    fn known_values_render_these_lines() {
        let mut s = Snapshot {
            worker_count: 2,
            ..Snapshot::default()
        };
        let core = &mut s.workers.core;
        core.requests.add(RequestMethod::Allocate, 7);
        core.errors[RequestMethod::Allocate.index()].add(ErrorCode::QuotaReached, 2);
        core.errors[RequestMethod::Allocate.index()].add(ErrorCode::InsufficientCapacity, 1);
        core.errors[RequestMethod::Refresh.index()].add(ErrorCode::QuotaReached, 50);
        core.drops.add(DropReason::RateLimited, 4);
        core.auth_failures.add(AuthFailure::BadIntegrity, 5);
        core.allocations_ended.add(EndReason::Expired, 6);
        for secs in [0.5, 45.0, 45.0, 100_000.0] {
            core.allocation_duration
                .record(Duration::from_secs_f64(secs));
        }
        s.workers.allocations.by_kind[TransportLabel::Tls.index()][1][1] = 3;
        core.drops.add(DropReason::BandwidthCap, 2);
        s.fast_path = Some(crate::observe::FastPathStats {
            relayed: Traffic {
                to_peer_bytes: 1000,
                ..Traffic::default()
            },
            capped: 5,
            ..Default::default()
        });
        let mut credentials = CredentialStats::default();
        credentials.lookup_seconds.record(Duration::from_millis(3));
        s.credentials = Some(credentials);
        s.config = crate::observe::ConfigFacts {
            sha256: "ab12".to_owned(),
            reloads_applied: 3,
            reloads_refused: 1,
        };
        let text = render_parts(&s, None, Some(&process()));

        for block in [
            "# HELP turnpike_build_info Turnpike version; always 1.\n\
             # TYPE turnpike_build_info gauge\n",
            "# HELP turnpike_workers Workers running.\n\
             # TYPE turnpike_workers gauge\n\
             turnpike_workers 2\n",
            "turnpike_draining 0\n",
            "# TYPE turnpike_config_reloads_total counter\n\
             turnpike_config_reloads_total{result=\"applied\"} 3\n\
             turnpike_config_reloads_total{result=\"refused\"} 1\n",
            "# TYPE turnpike_config_info gauge\n\
             turnpike_config_info{sha256=\"ab12\"} 1\n",
            "# TYPE turnpike_requests_total counter\n\
             turnpike_requests_total{method=\"binding\"} 0\n\
             turnpike_requests_total{method=\"allocate\"} 7\n",
            "\nturnpike_error_responses_total{method=\"allocate\",code=\"486\"} 2\n",
            "\nturnpike_error_responses_total{method=\"refresh\",code=\"486\"} 50\n",
            // Allocate's only: Refresh's 486 is not a quota rejection.
            "# TYPE turnpike_quota_rejections_total counter\n\
             turnpike_quota_rejections_total{code=\"486\"} 2\n\
             turnpike_quota_rejections_total{code=\"508\"} 1\n",
            "\nturnpike_challenges_rate_limited_total 4\n",
            "\nturnpike_dropped_packets_total{reason=\"rate_limited\"} 4\n",
            // The sockets' and the XDP program's.
            "\nturnpike_dropped_packets_total{reason=\"bandwidth_cap\"} 7\n",
            "\nturnpike_auth_failures_total{reason=\"bad_integrity\"} 5\n",
            "\nturnpike_allocations_ended_total{reason=\"expired\"} 6\n",
            "\nturnpike_allocations{transport=\"tls\",family=\"ipv6\",relay_transport=\"tcp\"} 3\n",
            "\nturnpike_allocations{transport=\"tls\",family=\"ipv6\",relay_transport=\"udp\"} 0\n",
            "# TYPE turnpike_allocation_duration_seconds histogram\n\
             turnpike_allocation_duration_seconds_bucket{le=\"1\"} 1\n\
             turnpike_allocation_duration_seconds_bucket{le=\"10\"} 1\n\
             turnpike_allocation_duration_seconds_bucket{le=\"30\"} 1\n\
             turnpike_allocation_duration_seconds_bucket{le=\"60\"} 3\n\
             turnpike_allocation_duration_seconds_bucket{le=\"120\"} 3\n\
             turnpike_allocation_duration_seconds_bucket{le=\"300\"} 3\n\
             turnpike_allocation_duration_seconds_bucket{le=\"600\"} 3\n\
             turnpike_allocation_duration_seconds_bucket{le=\"1800\"} 3\n\
             turnpike_allocation_duration_seconds_bucket{le=\"3600\"} 3\n\
             turnpike_allocation_duration_seconds_bucket{le=\"7200\"} 3\n\
             turnpike_allocation_duration_seconds_bucket{le=\"21600\"} 3\n\
             turnpike_allocation_duration_seconds_bucket{le=\"86400\"} 3\n\
             turnpike_allocation_duration_seconds_bucket{le=\"+Inf\"} 4\n\
             turnpike_allocation_duration_seconds_sum 100090.5\n\
             turnpike_allocation_duration_seconds_count 4\n",
            "\nturnpike_relayed_bytes_total{direction=\"to_peer\",path=\"sockets\"} 0\n",
            "\nturnpike_relayed_bytes_total{direction=\"to_peer\",path=\"xdp\"} 1000\n",
            "\nturnpike_xdp_relayed_bytes_total{direction=\"to_peer\"} 1000\n",
            "\nturnpike_database_lookup_duration_seconds_bucket{le=\"0.0025\"} 0\n\
             turnpike_database_lookup_duration_seconds_bucket{le=\"0.005\"} 1\n",
            "\nturnpike_database_lookup_duration_seconds_sum 0.003\n\
             turnpike_database_lookup_duration_seconds_count 1\n",
            "# TYPE turnpike_database_up gauge\nturnpike_database_up 0\n",
            "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.5\n",
            "\nprocess_resident_memory_bytes 4096\n",
            "\nprocess_virtual_memory_bytes 8192\n",
            "\nprocess_open_fds 12\n",
            "\nprocess_max_fds 1024\n",
        ] {
            assert!(text.contains(block), "missing\n{block}\nin\n{text}");
        }
        // The start time, whatever the float's spelling.
        let start = samples(&text)
            .into_iter()
            .find(|l| l.name == "process_start_time_seconds")
            .expect("process_start_time_seconds");
        assert_eq!(start.value.parse::<f64>(), Ok(1_700_000_000.25));
        // A whole exposition: HELP, TYPE, samples; no OpenMetrics EOF. It
        // is what the admin endpoint says it serves.
        assert!(text.ends_with('\n') && !text.contains("# EOF"), "{text}");
        assert_eq!(CONTENT_TYPE, crate::admin_http::METRICS_CONTENT_TYPE);
    }

    #[test]
    fn certificate_metrics_and_escaping() {
        let text = render_parts(
            &Snapshot {
                certificate_reloads_refused: 4,
                ..Snapshot::default()
            },
            Some(&certificate("CN=\"q\\\"\nx, O=b")),
            None,
        );
        for line in [
            "\nturnpike_tls_certificate_not_after_seconds 1798761600\n",
            "\nturnpike_tls_certificate_reloads_total 3\n",
            "\nturnpike_tls_certificate_reloads_refused_total 4\n",
            // Backslash, double quote and line feed escaped.
            "\nturnpike_tls_certificate_info{subject=\"CN=\\\"q\\\\\\\"\\nx, O=b\"} 1\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        let info = samples(&text)
            .into_iter()
            .find(|l| l.name == "turnpike_tls_certificate_info")
            .expect("info");
        assert_eq!(
            info.labels,
            [("subject".to_owned(), "CN=\"q\\\"\nx, O=b".to_owned())]
        );
    }

    /// What is there depends on the snapshot's optional parts only.
    #[test]
    fn optional_families_follow_the_snapshot() {
        let bare = render_parts(&Snapshot::default(), None, None);
        for prefix in [
            "turnpike_tls_",
            "turnpike_xdp_",
            "turnpike_credential_",
            "turnpike_database_",
            "process_",
            "path=\"xdp\"",
        ] {
            assert!(!bare.contains(prefix), "{prefix} in\n{bare}");
        }
        let full = everything();
        for prefix in [
            "turnpike_tls_certificate_info{",
            "turnpike_xdp_routes ",
            "turnpike_credential_cache_hits_total ",
            "turnpike_database_up 1",
            "process_open_fds ",
            "path=\"xdp\"",
        ] {
            assert!(full.contains(prefix), "{prefix} missing in\n{full}");
        }
        // Everything the bare one has, the full one has too.
        let names = |text: &str| -> BTreeSet<String> {
            families(text).into_iter().map(|(name, _)| name).collect()
        };
        assert!(names(&bare).is_subset(&names(&full)));
    }

    /// Label values come from the fixed sets of the core's label enums and
    /// of this module, so clients cannot make new series.
    #[test]
    fn label_values_come_from_fixed_sets() {
        fn all<L: Label>() -> BTreeSet<&'static str> {
            L::ALL.iter().map(|l| l.as_str()).collect()
        }
        let text = everything();
        let fixed: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::from([
            ("method", all::<RequestMethod>()),
            ("code", all::<ErrorCode>()),
            ("transport", all::<TransportLabel>()),
            ("family", FAMILIES.into()),
            ("relay_transport", RELAY_TRANSPORTS.into()),
            ("direction", ["to_peer", "to_client"].into()),
            ("path", ["sockets", "xdp"].into()),
            ("result", ["applied", "refused"].into()),
            ("route", IceRoute::ALL.map(IceRoute::label).into()),
            ("outcome", IceOutcome::ALL.map(IceOutcome::label).into()),
            ("state", FLEET_STATES.into()),
        ]);
        let reasons: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::from([
            ("turnpike_auth_failures_total", all::<AuthFailure>()),
            ("turnpike_allocations_ended_total", all::<EndReason>()),
            ("turnpike_dropped_packets_total", all::<DropReason>()),
        ]);
        let mut seen = BTreeSet::new();
        let lines = samples(&text);
        assert!(lines.len() > 250, "{}", lines.len());
        for line in &lines {
            assert!(
                seen.insert((line.name.clone(), format!("{:?}", line.labels))),
                "duplicate series {line:?}"
            );
            for (key, value) in &line.labels {
                let ok = match key.as_str() {
                    "le" => value == "+Inf" || value.parse::<f64>().is_ok(),
                    "reason" => reasons
                        .get(line.name.as_str())
                        .is_some_and(|s| s.contains(value.as_str())),
                    "version" => {
                        line.name == "turnpike_build_info" && value == env!("CARGO_PKG_VERSION")
                    }
                    "subject" => line.name == "turnpike_tls_certificate_info",
                    "sha256" => {
                        line.name == "turnpike_config_info"
                            && value.len() == 64
                            && value.bytes().all(|b| b.is_ascii_hexdigit())
                    }
                    key => fixed.get(key).is_some_and(|s| s.contains(value.as_str())),
                };
                assert!(ok, "{key}={value:?} in {line:?}");
            }
        }
        // And every value of every set is there (so a dashboard's series
        // exist before their first event).
        for (key, values) in &fixed {
            for value in values {
                assert!(
                    lines
                        .iter()
                        .any(|l| l.labels.iter().any(|(k, v)| k == key && v == value)),
                    "{key}={value} never shown"
                );
            }
        }
    }

    /// Buckets are cumulative, bounds rise, the last is `+Inf` and equals
    /// `_count`; with the populated snapshot (one in every bucket) each
    /// bucket holds one more than the one before.
    #[test]
    fn histograms_are_cumulative_and_end_with_inf() {
        let text = everything();
        let lines = samples(&text);
        let histograms: Vec<String> = families(&text)
            .into_iter()
            .filter(|(_, kind)| kind == "histogram")
            .map(|(name, _)| name)
            .collect();
        assert_eq!(
            histograms,
            [
                "turnpike_allocation_duration_seconds",
                "turnpike_database_lookup_duration_seconds"
            ]
        );
        for name in histograms {
            let bucket = format!("{name}_bucket");
            let buckets: Vec<(f64, u64)> = lines
                .iter()
                .filter(|l| l.name == bucket)
                .map(|l| {
                    let [(key, le)] = &l.labels[..] else {
                        panic!("{l:?}")
                    };
                    assert_eq!(key, "le");
                    let le = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().expect("a bound")
                    };
                    (le, l.value.parse().expect("a count"))
                })
                .collect();
            let value = |suffix: &str| {
                let n = format!("{name}{suffix}");
                let line = lines.iter().find(|l| l.name == n).expect(&n);
                line.value.clone()
            };
            let count: u64 = value("_count").parse().expect("count");
            assert_eq!(buckets.last(), Some(&(f64::INFINITY, count)), "{name}");
            for (i, pair) in buckets.windows(2).enumerate() {
                assert!(pair[0].0 < pair[1].0, "{name}: bounds {pair:?}");
                assert_eq!(pair[1].1, pair[0].1 + 1, "{name}: bucket {i} {pair:?}");
            }
            assert_eq!(buckets[0].1, 1, "{name}");
            assert!(value("_sum").parse::<f64>().expect("sum") > 0.0);
        }
    }

    /// The whole output through a real exposition parser
    /// (`prometheus-parse`). It skips what it does not understand rather
    /// than failing, so the test also checks that it understood every line
    /// and recovered every sample.
    #[test]
    fn a_real_parser_reads_every_line() {
        use prometheus_parse::{LineInfo, Scrape, Value};

        let text = everything();
        for line in text.lines() {
            assert!(
                !matches!(LineInfo::parse(line), LineInfo::Ignored | LineInfo::Empty),
                "not understood: {line:?}"
            );
        }
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parse");
        let families = families(&text);
        let lines = samples(&text);
        let value_of = |metric: &str| -> f64 {
            let sample = scrape.samples.iter().find(|s| s.metric == metric);
            match sample.map(|s| &s.value) {
                Some(Value::Untyped(v)) => *v,
                other => panic!("{metric}: {other:?}"),
            }
        };
        let mut expected = 0;
        for (name, kind) in &families {
            assert!(scrape.docs.contains_key(name), "no HELP for {name}");
            let of_family: Vec<_> = scrape
                .samples
                .iter()
                .filter(|s| &s.metric == name)
                .collect();
            assert!(!of_family.is_empty(), "no samples for {name}");
            for sample in &of_family {
                let ok = match (kind.as_str(), &sample.value) {
                    ("counter", Value::Counter(v)) | ("gauge", Value::Gauge(v)) => v.is_finite(),
                    ("histogram", Value::Histogram(buckets)) => {
                        let count = value_of(&format!("{name}_count"));
                        buckets.last().map(|b| (b.less_than, b.count))
                            == Some((f64::INFINITY, count))
                    }
                    _ => false,
                };
                assert!(ok, "{name} ({kind}): {sample:?}");
            }
            // A histogram's buckets make one parsed sample; its `_sum` and
            // `_count` are two more (untyped: the parser knows no family
            // of theirs).
            expected += if kind == "histogram" {
                3
            } else {
                lines.iter().filter(|l| &l.name == name).count()
            };
        }
        assert_eq!(scrape.samples.len(), expected);
        // The lines of no family are the histograms' buckets, sums and
        // counts.
        let histogram_lines = lines
            .iter()
            .filter(|l| !families.iter().any(|(name, _)| &l.name == name))
            .count();
        let histogram_buckets = DURATION_BUCKETS.len() + LATENCY_BUCKETS.len() + 2;
        assert_eq!(histogram_lines, histogram_buckets + 4);
        // Counts and values come through.
        let value = |metric: &str, label: Option<(&str, &str)>| {
            scrape
                .samples
                .iter()
                .find(|s| {
                    s.metric == metric && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v))
                })
                .map(|s| s.value.clone())
        };
        assert_eq!(
            value("turnpike_requests_total", Some(("method", "allocate"))),
            Some(Value::Counter(1001.0))
        );
        assert_eq!(value("turnpike_workers", None), Some(Value::Gauge(2.0)));
        assert_eq!(
            value("turnpike_quota_rejections_total", Some(("code", "508"))),
            populated()
                .workers
                .core
                .errors(RequestMethod::Allocate)
                .get(ErrorCode::InsufficientCapacity)
                .to_string()
                .parse()
                .ok()
                .map(Value::Counter)
        );
    }

    /// Every family is described in this module's documentation, and the
    /// README's "Metrics" section, and nothing there is stale.
    #[test]
    fn every_metric_is_documented() {
        let rendered: BTreeSet<String> = families(&everything())
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        // Rows of the tables: "| `name` | type | …".
        let documented = |text: &str, prefix: &str| -> BTreeMap<String, String> {
            text.lines()
                .filter_map(|l| l.strip_prefix(prefix)?.strip_prefix("| `"))
                .filter_map(|l| {
                    let (name, rest) = l.split_once("` | ")?;
                    let kind = rest.split(' ').next()?;
                    Some((name.to_owned(), kind.to_owned()))
                })
                .collect()
        };
        let types: BTreeMap<String, String> = families(&everything()).into_iter().collect();
        let readme = include_str!("../../../../README.md");
        let section = readme
            .split_once("\n## Metrics\n")
            .map(|(_, rest)| rest.split("\n## ").next().unwrap_or(rest))
            .expect("README.md has a Metrics section");
        for (source, table) in [
            ("metrics.rs", documented(include_str!("metrics.rs"), "//! ")),
            ("README.md", documented(section, "")),
        ] {
            let names: BTreeSet<String> = table.keys().cloned().collect();
            assert_eq!(names, rendered, "{source}'s table");
            for (name, kind) in &table {
                assert_eq!(Some(kind), types.get(name), "{source}: {name}");
            }
        }
    }

    #[test]
    fn process_figures_from_proc_texts() {
        // A command name with a space and a parenthesis.
        let stat = "4242 (turn pike) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 125 0 0 20 0 5 0 987654 123456789 2048 18446744073709551615 \
                    1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";
        let status = "Name:\tturnpike\nVmPeak:\t  200000 kB\nVmSize:\t  120564 kB\n\
                      VmRSS:\t    8192 kB\nThreads:\t5\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            65536                524288               files     \n";
        let system = "cpu  1 2 3 4\nbtime 1700000000\nprocesses 99\n";
        assert_eq!(
            ProcessStats::parse(stat, status, limits, system, 9),
            Some(ProcessStats {
                cpu_seconds: 3.75,
                resident_memory_bytes: 8192 * 1024,
                virtual_memory_bytes: 123_456_789,
                open_fds: 9,
                max_fds: Some(65_536),
                start_time_seconds: 1_700_000_000.0 + 9_876.54,
            })
        );
        let unlimited = limits.replace("65536               ", "unlimited           ");
        assert_eq!(
            ProcessStats::parse(stat, status, &unlimited, system, 9).map(|p| p.max_fds),
            Some(None)
        );
        // Anything missing: no figures rather than wrong ones.
        assert_eq!(
            ProcessStats::parse("4242 (x", status, limits, system, 9),
            None
        );
        assert_eq!(
            ProcessStats::parse(stat, "Name:\tx\n", limits, system, 9),
            None
        );
        assert_eq!(ProcessStats::parse(stat, status, "", system, 9), None);
        assert_eq!(
            ProcessStats::parse(stat, status, limits, "cpu 1\n", 9),
            None
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_figures_of_this_process() {
        let p = ProcessStats::read().expect("/proc is readable");
        let now = crate::date::unix_seconds(std::time::SystemTime::now()) as f64;
        // This test process started within the last hour.
        assert!(
            p.start_time_seconds <= now + 1.0 && p.start_time_seconds > now - 3600.0,
            "{p:?} now {now}"
        );
        assert!(p.open_fds >= 3, "{p:?}");
        assert!(p.resident_memory_bytes > 0, "{p:?}");
        assert!(p.virtual_memory_bytes >= p.resident_memory_bytes, "{p:?}");
        assert!(p.cpu_seconds >= 0.0, "{p:?}");
        assert!(p.max_fds.is_none_or(|max| max >= p.open_fds), "{p:?}");
    }
}
