//! `GET /selftest`: a page that checks the whole fleet from a browser, like
//! the WebRTC "Trickle ICE" sample operators used to validate one relay at
//! a time. It fetches `/ice-servers` (same origin, with the ICE token the
//! user types or passes as `?token=`) and `/v1/fleet` (with `?admin_token=`,
//! else "health unavailable"), then for every relay and transport gathers
//! candidates relay-only with that one URL and opens a data channel between
//! two peer connections through it to time an echo. The table it shows is
//! also in the DOM as JSON (`#results`, `data-done="true"` when finished)
//! and, with `?report=URL`, POSTed there, for automated checks
//! (`tests/selftest.rs`).
//!
//! The page is static and holds no secret, so it is served to anyone who
//! reaches the listener: what it can do is only what the tokens typed into
//! it allow. Everything is inline (`selftest.html`); the
//! `Content-Security-Policy` forbids loading scripts, styles or images from
//! anywhere, so an operator's browser fetches nothing but this page, the two
//! JSON routes and the report. `Referrer-Policy: no-referrer` keeps the
//! tokens of the query string out of the report request (the page also
//! takes them out of the address bar once read).

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The page: HTML, CSS and JavaScript in one file, no build step.
pub const PAGE: &str = include_str!("selftest.html");

/// Inline scripts and styles only; `fetch` anywhere (the report URL is the
/// caller's choice; WebRTC itself is not governed by CSP).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; img-src data:; connect-src *; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// `GET /selftest`.
pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}
