//! `turnpike ice-config`: the ICE-server endpoint on its own, without a
//! relay, for a fleet's front end. The same configuration file as the
//! relays: `[ice]` and `[discovery]` say what to serve, `[turn]` and
//! `[database]` where the shared secrets are (the relays' own), `[admin]`
//! where to listen and the admin token.
//!
//! Routes: the public ones of [`IceService::routes`], and behind the admin
//! token `GET /healthz` (200 while running), `GET /readyz` (200 when a
//! relay and a secret are there to answer with), `GET /metrics` and
//! `GET /v1/fleet`. SIGHUP reloads `[ice]`, `[discovery]` and the secrets
//! of `[turn]`; SIGTERM and SIGINT stop it at once (it holds no calls).

use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::signal::unix::{SignalKind, signal};

use super::{IceConfig, IceService, fleet_config};
use crate::admin_http::{Access, METRICS_CONTENT_TYPE, guarded, serve_on};
use crate::config::{Loaded, Settings, SettingsSource};
use crate::credentials::CredentialSource;

/// Runs the endpoint until SIGTERM or SIGINT.
pub fn run(loaded: Loaded, source: SettingsSource) -> anyhow::Result<()> {
    let settings = loaded.settings;
    if settings.admin.listen.is_empty() {
        return Err(anyhow!(
            "turnpike ice-config serves on admin.listen, which is empty; set it (e.g. --admin-listen 127.0.0.1:9641)"
        ));
    }
    let control = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("turnpike-ice")
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let (credentials, _publish, secrets) = crate::runtime::open_credentials(&settings, &control)?;
    let config = IceConfig::from_settings(&settings).map_err(|e| anyhow!(e))?;
    let fleet = crate::runtime::run_fleet(&settings, &control, Some(credentials.store()))?;
    let service = IceService::new(config, fleet, Arc::clone(&credentials));
    let access = Access::from_settings(&settings.admin).map_err(|e| anyhow!("{e}"))?;
    let guarded_by = if access.token.is_some() {
        "token required"
    } else {
        "no token"
    };
    let admin = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Arc::clone(&service))
        .merge(service.fleet_routes());
    let app = guarded(admin, access, Some(service.routes()));
    let bound = serve_on(&settings.admin.listen, app, &control, guarded_by)?;
    tracing::info!(
        listen = ?bound,
        relays = service.fleet().snapshot().relays.len(),
        "ICE-server endpoint running (no relay)"
    );
    crate::service::ready();
    let result = control.block_on(async move {
        let mut term =
            signal(SignalKind::terminate()).context("cannot install a SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot install a SIGINT handler")?;
        let mut hangup = signal(SignalKind::hangup()).context("cannot install a SIGHUP handler")?;
        loop {
            tokio::select! {
                _ = term.recv() => return anyhow::Ok("SIGTERM"),
                _ = int.recv() => return anyhow::Ok("SIGINT"),
                _ = hangup.recv() => reload(&source, &service, &credentials),
            }
        }
    });
    crate::service::stopping();
    // Keep the secrets' channel open until here: the refresh stops when
    // nobody listens.
    drop(secrets);
    let cause = result?;
    tracing::info!("{cause}: ICE-server endpoint stopped");
    control.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(())
}

/// SIGHUP: the file again; a file that does not load changes nothing.
fn reload(source: &SettingsSource, service: &IceService, credentials: &CredentialSource) {
    let _reloading = crate::service::Reloading::begin();
    let new: Settings = match source.load() {
        Ok(loaded) => loaded.settings,
        Err(err) => {
            tracing::error!("configuration not reloaded: {err}; the running one stays");
            return;
        }
    };
    credentials.reconfigure(
        new.user_keys(),
        &new.turn.secrets,
        crate::runtime::cache_options(&new),
    );
    service.fleet().reconfigure(fleet_config(&new));
    match service.reconfigure(&new) {
        Ok(()) => tracing::info!(
            "configuration reloaded (SIGHUP): [ice], [discovery] and the secrets of [turn]"
        ),
        Err(err) => tracing::error!("ICE-server settings not reloaded: {err}"),
    }
}

/// 200 once there is a relay to hand out and a secret to mint with.
async fn readyz(State(service): State<Arc<IceService>>) -> Response {
    let snapshot = service.fleet().snapshot();
    let mut missing = Vec::new();
    if snapshot.relays.is_empty() {
        missing.push("no relay known");
    }
    if service.credentials.signing_secret().is_none() {
        missing.push("no shared secret");
    }
    if missing.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", missing.join("; ")),
        )
            .into_response()
    }
}

async fn metrics(State(service): State<Arc<IceService>>) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        crate::observe::metrics::render_ice_service(&service.facts()),
    )
        .into_response()
}
