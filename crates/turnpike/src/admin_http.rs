//! The admin HTTP endpoint (`[admin] listen`): a few read-only answers for
//! monitoring, served by axum over plain HTTP/1.1 on the control runtime.
//!
//! - `GET /metrics`: Prometheus text format (version 0.0.4), written by
//!   [`crate::observe::metrics`] (every metric is listed there).
//! - `GET /status`: one JSON object, `{"version", "uptime_seconds", "tls"}`
//!   where `tls` is `{"subject", "not_after" (RFC 3339, UTC),
//!   "not_after_unix", "generation"}` or `null` without TLS.
//!
//! The certificate values are read from [`Certificates`] at each request,
//! so they are those of the certificate actually served: after a refused
//! (broken) renewal they are still the previous certificate's.
//!
//! There is no authentication, so [`crate::config::Settings::validate`]
//! refuses non-loopback addresses unless `admin.allow_remote`, the TURN
//! peer policy refuses the admin addresses as peers, and connections are
//! bounded: at most [`MAX_CONNECTIONS`] at once (more wait in the kernel's
//! backlog), each must send a whole request within [`REQUEST_TIMEOUT`] of
//! connecting or of starting it (bytes trickled in do not extend that),
//! and an idle keep-alive connection is closed after [`IDLE_TIMEOUT`]. So
//! a forgotten or hostile client cannot pile up descriptors the relay
//! needs, and clients holding every slot with unfinished requests delay a
//! scraper (waiting in the backlog, served in turn) by at most
//! [`REQUEST_TIMEOUT`], never lock it out.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use anyhow::anyhow;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use turnpike_core::stats::Traffic;
use turnpike_xdp::FastPath;

use crate::config::AdminSettings;
use crate::date;
use crate::observe::{FastPathStats, Snapshot};
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

/// What the endpoint reports on.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// When the server started (for `uptime_seconds`).
    pub started: Instant,
    /// The TLS certificates in service, `None` without TLS.
    pub certs: Option<Arc<Certificates>>,
    /// The XDP fast path, `None` when off.
    pub fast_path: Option<Arc<Mutex<FastPath>>>,
}

impl AdminState {
    /// The `/metrics` body: [`crate::observe::metrics::render`] of what
    /// this state can read — the certificates and the XDP fast path's
    /// counters; the workers' counters stay zero here.
    pub fn metrics(&self) -> String {
        let fast_path = self.fast_path.as_ref().map(|fast_path| {
            let fast_path = fast_path.lock().unwrap_or_else(PoisonError::into_inner);
            let c = fast_path.counters();
            FastPathStats {
                relayed: Traffic {
                    to_peer_packets: c.to_peer_packets,
                    to_peer_bytes: c.to_peer_bytes,
                    to_client_packets: c.to_client_packets,
                    to_client_bytes: c.to_client_bytes,
                },
                passed: c.passed,
                routes: fast_path.routes() as u64,
                capacity: FastPath::capacity() as u64,
            }
        });
        let snapshot = Snapshot {
            fast_path,
            ..Snapshot::default()
        };
        crate::observe::metrics::render(&snapshot, self.certs.as_deref())
    }

    /// The `/status` body.
    pub fn status(&self) -> Status {
        Status {
            version: env!("CARGO_PKG_VERSION"),
            uptime_seconds: self.started.elapsed().as_secs(),
            tls: self.certs.as_ref().map(|certs| {
                let not_after = certs.not_after();
                TlsStatus {
                    subject: certs.subject(),
                    not_after: rfc3339(not_after),
                    not_after_unix: unix_seconds(not_after),
                    generation: certs.generation(),
                }
            }),
        }
    }
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

/// The routes: `GET /metrics`, `GET /status`; 404 for anything else (405
/// for another method on those two).
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .fallback(not_found)
        .with_state(state)
}

async fn metrics(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        state.metrics(),
    )
}

async fn status(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    // Serializing plain strings and numbers cannot fail.
    let mut body = serde_json::to_string(&state.status()).unwrap_or_default();
    body.push('\n');
    ([(header::CONTENT_TYPE, "application/json")], body)
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        "not found; this endpoint serves GET /metrics and GET /status\n",
    )
}

/// Binds every `admin.listen` address (an error is one line saying what to
/// do, as for the other listeners) and serves them on `runtime`. Nothing
/// when the list is empty.
pub fn start(
    admin: &AdminSettings,
    state: AdminState,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    if admin.listen.is_empty() {
        return Ok(());
    }
    let _entered = runtime.enter();
    let mut listeners = Vec::with_capacity(admin.listen.len());
    for &addr in &admin.listen {
        let listener = bind(addr).map_err(|e| bind_error(addr, &e))?;
        listeners.push(listener);
    }
    let app = router(Arc::new(state));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    for listener in listeners {
        let local = listener.local_addr().ok();
        let bounded = Bounded {
            inner: listener,
            slots: Arc::clone(&slots),
        };
        let app = app.clone();
        runtime.spawn(async move {
            if let Err(err) = axum::serve(bounded, app).await {
                tracing::error!(address = ?local, error = %err, "admin endpoint stopped");
            }
        });
        if let Some(local) = local {
            tracing::info!(address = %local, "admin endpoint listening (GET /metrics, /status)");
        }
    }
    Ok(())
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
struct Bounded {
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
struct Connection {
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
        };
        let version = env!("CARGO_PKG_VERSION");
        let metrics = state.metrics();
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
