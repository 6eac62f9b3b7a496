//! The worker runtime: `workers` OS threads, each running a current-thread
//! tokio runtime that owns one [`turnpike_core::Server`] shard and its own
//! `SO_REUSEPORT` UDP sockets and TCP listeners.
//!
//! The kernel spreads datagrams (by 4-tuple hash) and connections across the
//! workers' sockets, so a client's packets always reach the same shard and no
//! lock is taken on the packet path. Datagrams are received and sent in
//! batches (`recvmmsg`/`sendmmsg`). The main thread binds nothing itself
//! beyond a short probe (to report "address in use" clearly), then waits for
//! a signal and shuts the workers down ([`until_stopped`]): SIGINT at once;
//! SIGTERM after draining for `shutdown.grace_period` (or until the last
//! allocation ended, or a second SIGTERM or a SIGINT); a drain started from
//! the admin endpoint once the last allocation ended, with
//! `drain.exit_when_empty`. SIGHUP reloads the configuration ([`reload`]).

mod alternates;
mod binder;
mod context;
mod dtls;
mod handle;
mod queries;
mod reload;
mod stream;
mod task;
mod tcp_relay;
mod udp_relay;
mod worker;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use rand::RngCore;
use socket2::{Domain, Socket, Type};
use tokio::sync::watch;
use turnpike_core::{PerSourceRate, Secrets, WallClock};
use turnpike_store::Store;
use turnpike_xdp::FastPath;

use crate::admin_http::ListenerInfo;
use crate::config::{Listener, Loaded, Settings, SettingsSource, XdpMode};
use crate::credentials::{CACHE_CAPACITY, CacheOptions, CredentialSource};
use crate::tls::Certificates;
use handle::Sources;
use stream::conn::{ConnectionCounts, StreamLimits};
use udp_relay::socket::Reservations;
use worker::{DtlsSettings, Secure, Worker};

pub use handle::RelayHandle;

/// Loads the XDP fast path and attaches it to `xdp.interfaces`, if any.
fn start_fast_path(config: &Settings) -> anyhow::Result<Option<Arc<Mutex<FastPath>>>> {
    let xdp = &config.xdp;
    if xdp.interfaces.is_empty() {
        return Ok(None);
    }
    let mode = match xdp.mode {
        XdpMode::Auto => turnpike_xdp::Mode::Auto,
        XdpMode::Native => turnpike_xdp::Mode::Native,
        XdpMode::Generic => turnpike_xdp::Mode::Generic,
    };
    let ports = (config.turn.min_port, config.turn.max_port);
    let fast_path = FastPath::attach(&xdp.interfaces, mode, ports).map_err(|err| match err {
        turnpike_xdp::Error::ForwardingOff(_) => anyhow!("{err}"),
        _ => anyhow!(
            "{err}; the XDP fast path needs root (or CAP_BPF and CAP_NET_ADMIN) and Linux 5.12 or newer: run it so, set xdp.mode = \"generic\" if the driver lacks XDP, or leave xdp.interfaces empty"
        ),
    })?;
    tracing::info!(
        interfaces = %xdp.interfaces.join(","),
        mode = xdp.mode.as_str(),
        "XDP fast path attached"
    );
    for name in fast_path.ipv6_forwarding_off() {
        tracing::warn!(
            interface = %name,
            "net.ipv6.conf.{name}.forwarding is 0: the kernel gives the XDP program no IPv6 next hop there, so IPv6 channels take the socket path; run `sysctl -w net.ipv6.conf.{name}.forwarding=1` (and accept_ra = 2 if the host's IPv6 route comes from router advertisements)"
        );
    }
    Ok(Some(Arc::new(Mutex::new(fast_path))))
}

/// Runs the server until SIGTERM or SIGINT, with the settings `loaded`
/// from `source`, which a reload reads again.
pub fn serve(loaded: Loaded, source: SettingsSource) -> anyhow::Result<()> {
    let Loaded {
        settings: config,
        file_sha256,
    } = loaded;
    // The nonce secret lives only in this process: nonces do not survive a
    // restart, and clients recover with one 438.
    let mut nonce_secret = [0u8; 32];
    rand::rng().fill_bytes(&mut nonce_secret);
    let now = Instant::now();
    let mut core = config.core(&nonce_secret, now);
    let fast_path = start_fast_path(&config)?;
    if let (Some(turn), Some(_)) = (core.turn.as_mut(), &fast_path) {
        turn.channel_routes = true;
    }
    if let Some(turn) = core.turn.as_mut() {
        turn.wall_clock = Some(WallClock {
            instant: now,
            // A clock before 1970 makes every time-limited credential
            // expired, which is the safe reading of a broken clock.
            unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        });
    }
    let core = Arc::new(core);
    // Database calls, secret reloads and signals run here, off the workers.
    let control = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("turnpike-control")
        .enable_all()
        .build()
        .context("cannot start the control runtime")?;
    let (credentials, secrets, publish) = if config.turn.enabled {
        let (credentials, publish, secrets) = open_credentials(&config, &control)?;
        (Some(credentials), Some(secrets), Some(publish))
    } else {
        (None, None, None)
    };
    // The fleet view of [discovery]: the ICE-server endpoint hands it out,
    // and this relay sends clients it will not take to its relays.
    let fleet = start_fleet(&config, &control, credentials.as_ref().map(|c| c.store()))?;
    // The ICE-server endpoint (validation made sure TURN, and so the
    // credentials, are on).
    let ice = match (&credentials, &fleet, config.ice.enabled) {
        (Some(credentials), Some(fleet), true) => Some(start_ice(&config, credentials, fleet)?),
        _ => None,
    };
    let host_addresses = if config.turn.enabled {
        Some(watch_host_addresses(&control)?)
    } else {
        None
    };
    let reservations = Arc::new(Reservations::default());
    let connections = Arc::new(ConnectionCounts::new(
        config.sources(),
        config.limits.max_connections,
    ));
    let listeners = config.listeners();
    let (udp, tcp) = (config.stun.udp, config.stun.tcp);
    probe_listeners(&listeners, udp, tcp)?;
    let workers = config.worker_threads();
    let secure = start_tls(&config, &control, workers)?;
    // This relay's heartbeat row (fleet.register; validation made sure
    // TURN, and so the database and the host's addresses, are there).
    let registration = match (&credentials, &host_addresses, config.fleet.register) {
        (Some(credentials), Some(host), true) => {
            let listening = crate::fleet_registry::Listeners {
                stun: listeners.iter().map(|l| l.addr).collect(),
                udp,
                tcp,
                tls: secure
                    .as_ref()
                    .map(|s| s.tls_listen.clone())
                    .unwrap_or_default(),
                dtls: secure
                    .as_ref()
                    .map(|s| s.dtls_listen.clone())
                    .unwrap_or_default(),
            };
            let row = crate::fleet_registry::registration(&config, &listening, &host.borrow())
                .map_err(|e| anyhow!(e))?;
            Some((
                credentials.store().clone(),
                row,
                Arc::new(AtomicU64::new(0)),
            ))
        }
        _ => None,
    };
    let (query_senders, mut query_inboxes): (Vec<_>, Vec<_>) = (0..workers)
        .map(|_| tokio::sync::mpsc::unbounded_channel())
        .unzip();
    let query_senders_for_fleet = query_senders.clone();
    let allocation_ended = Arc::new(tokio::sync::Notify::new());
    let cut_short = Arc::new(AtomicUsize::new(0));
    let drain = Arc::new(alternates::Alternates::new(
        config.drain.alternate_servers.clone(),
    ));
    let reloader = Arc::new(reload::Reloader::new(
        source,
        reload::Running {
            settings: config.clone(),
            core: Arc::clone(&core),
            sha256: file_sha256,
            nonce_secret,
            epoch: now,
        },
        reload::Targets {
            workers: query_senders.clone(),
            drain: Arc::clone(&drain),
            credentials: credentials.clone().zip(publish),
            certs: secure.as_ref().map(|s| Arc::clone(&s.certs)),
            connections: Arc::clone(&connections),
            ice: ice.clone(),
            fleet: fleet.clone(),
        },
    ));
    let relay = RelayHandle::new(
        query_senders,
        Sources {
            credentials: credentials.clone(),
            quotas: core.turn.as_ref().map(|t| Arc::clone(&t.quotas)),
            fast_path: fast_path.clone(),
            certs: secure.as_ref().map(|s| Arc::clone(&s.certs)),
            stop_for: Duration::from_secs(config.database.cache_ttl.into()),
            drain: Arc::clone(&drain),
            changed: Arc::clone(&allocation_ended),
            reloader: Arc::clone(&reloader),
            heartbeat_failures: registration.as_ref().map(|(_, _, f)| Arc::clone(f)),
        },
    );
    let admin = crate::admin_http::AdminState {
        started: now,
        certs: secure.as_ref().map(|s| Arc::clone(&s.certs)),
        fast_path: fast_path.clone(),
        relay: Arc::new(relay.clone()),
        listeners: listener_infos(&listeners, udp, tcp, secure.as_ref()),
        ice,
    };
    crate::admin_http::start(&config.admin, admin, &control)?;
    crate::observe::restund::start(&config.admin, Arc::new(relay.clone()), &control)?;
    let limits = stream_limits(&config, workers);
    // SIGHUP reloads the configuration (and the certificate with it).
    let hangup = {
        let _entered = control.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot install a SIGHUP handler")?
    };
    control.spawn(reload::on_hangup(Arc::clone(&reloader), hangup));

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<()>>();
    let (failed_tx, mut failed_rx) = tokio::sync::mpsc::unbounded_channel::<anyhow::Error>();
    let mut handles = Vec::with_capacity(workers);
    let (mailboxes, mut inboxes): (Vec<_>, Vec<_>) = (0..workers)
        .map(|_| tokio::sync::mpsc::unbounded_channel())
        .unzip();
    let mailboxes: Arc<[_]> = mailboxes.into();
    for ((id, inbox), queries) in inboxes.drain(..).enumerate().zip(query_inboxes.drain(..)) {
        let worker = Worker {
            id,
            workers,
            core: Arc::clone(&core),
            credentials: credentials.clone(),
            secrets: secrets.clone(),
            host_addresses: host_addresses.clone(),
            reservations: Arc::clone(&reservations),
            connections: Arc::clone(&connections),
            limits,
            secure: secure.clone(),
            listeners: listeners.clone(),
            udp,
            tcp,
            shutdown: shutdown_rx.clone(),
            mailboxes: Arc::clone(&mailboxes),
            inbox: Some(inbox),
            fast_path: fast_path.clone(),
            queries: Some(queries),
            allocation_ended: Arc::clone(&allocation_ended),
            cut_short: Arc::clone(&cut_short),
        };
        let ready = ready_tx.clone();
        let failed = failed_tx.clone();
        let handle = thread::Builder::new()
            .name(format!("turnpike-worker-{id}"))
            .spawn(move || {
                if let Err(err) = worker.run(ready) {
                    let _ = failed.send(err);
                }
            })
            .context("cannot start a worker thread")?;
        handles.push(handle);
    }
    drop(ready_tx);

    let stop = |handles: Vec<thread::JoinHandle<()>>| {
        let _ = shutdown_tx.send(true);
        for handle in handles {
            let _ = handle.join();
        }
    };
    for _ in 0..workers {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                stop(handles);
                return Err(err);
            }
            Err(_) => {
                stop(handles);
                return Err(anyhow!("a worker thread stopped while starting"));
            }
        }
    }
    // One line per listener and transport, so an operator sees every
    // port the relay answers on (the admin endpoint logs its own).
    for l in &listeners {
        for (on, transport) in [(udp, "udp"), (tcp, "tcp")] {
            if on {
                tracing::info!(address = %l.addr, transport, "listening (STUN/TURN)");
            }
        }
    }
    if let Some(secure) = &secure {
        for &address in &secure.tls_listen {
            tracing::info!(%address, transport = "tls", "listening (STUN/TURN over TLS)");
        }
        for &address in &secure.dtls_listen {
            tracing::info!(%address, transport = "dtls", "listening (STUN/TURN over DTLS)");
        }
    }
    relay.set_started();
    control.block_on(relay.push_alternates());
    if let Some(fleet) = fleet {
        let own = alternates::Own {
            ports: listeners
                .iter()
                .map(|l| l.addr.port())
                .chain(config.tls.listen.iter().map(SocketAddr::port))
                .collect(),
            ips: listeners
                .iter()
                .map(|l| l.addr.ip())
                .chain(config.turn.relay_ips.iter().copied())
                .chain(config.turn.external_ips.iter().map(|e| e.public))
                .filter(|ip| !ip.is_unspecified())
                .map(|ip| ip.to_canonical())
                .collect(),
            host: host_addresses.clone(),
        };
        control.spawn(alternates::follow_fleet(
            fleet,
            own,
            Arc::clone(&drain),
            query_senders_for_fleet,
        ));
    }
    let timing = crate::fleet_registry::Timing::from_settings(&config);
    let heartbeat = registration.map(|(store, row, failures)| {
        let beat = crate::fleet_registry::Heartbeat::new(
            store.clone(),
            row,
            timing,
            relay.clone(),
            failures,
        );
        let id = beat.id().to_owned();
        (store, id, control.spawn(beat.run()))
    });
    tracing::info!(workers, "turnpike ready");
    // systemd (crate::service): READY=1 now that every listener is bound,
    // then STATUS= and the watchdog's pings from the control runtime.
    crate::service::ready();
    control.spawn(crate::service::supervise(Arc::new(relay.clone())));
    if let Some(turn) = &core.turn {
        control.spawn(relay.clone().measure_relayed_rate(Arc::clone(&turn.quotas)));
    }

    let stopping = StopRules {
        grace: Duration::from_secs(config.shutdown.grace_period.into()),
        exit_when_empty: config.drain.exit_when_empty,
    };
    let result = control.block_on(until_stopped(&relay, &mut failed_rx, stopping));
    // systemd (crate::service): shutdown begins, if no SIGTERM's drain
    // began it already.
    crate::service::stopping();
    let why = match &result {
        Ok(why) => why.clone(),
        Err(err) => format!("a worker failed: {err:#}"),
    };
    tracing::info!(reason = %why, "shutting down");
    // Out of the fleet first: ICE endpoints stop handing this relay out
    // before its ports close.
    if let Some((store, id, task)) = heartbeat {
        task.abort();
        control.block_on(crate::fleet_registry::Heartbeat::withdraw(
            &store, &id, timing,
        ));
    }
    stop(handles);
    // Every worker has ended what it held (one accounting line each), closed
    // its sockets, and withdrawn its fast-path routes; the XDP program goes
    // with the last reference to it, below.
    match cut_short.load(Ordering::Relaxed) {
        0 => tracing::info!(
            allocations = 0,
            "stopped ({why}): no allocation was cut short"
        ),
        n => tracing::warn!(
            allocations = n,
            "stopped ({why}): {n} allocation{} cut short",
            if n == 1 { " was" } else { "s were" }
        ),
    }
    // A database call stuck on a dead connection must not hold up the exit.
    control.shutdown_timeout(Duration::from_secs(1));
    result.map(drop)
}

/// The limits of client connections, as `settings` give them to each of
/// `workers` workers.
pub(super) fn stream_limits(settings: &Settings, workers: usize) -> StreamLimits {
    let l = &settings.limits;
    StreamLimits {
        per_ip: l.max_connections_per_ip,
        auth_timeout: Duration::from_secs(l.auth_timeout.into()),
        idle_timeout: Duration::from_secs(l.idle_timeout.into()),
        max_buffered: usize::try_from(l.max_buffered_bytes).unwrap_or(usize::MAX),
        max_buffered_per_worker: usize::try_from(
            l.max_buffered_bytes_total / workers.max(1) as u64,
        )
        .unwrap_or(usize::MAX),
    }
}

/// How long the credential cache trusts its answers, from `[database]`.
pub(crate) fn cache_options(settings: &Settings) -> CacheOptions {
    let db = &settings.database;
    CacheOptions {
        ttl: Duration::from_secs(db.cache_ttl.into()),
        negative_ttl: Duration::from_secs(db.negative_cache_ttl.into()),
        grace: Duration::from_secs(db.grace_period.into()),
        timeout: Duration::from_secs(db.timeout.into()),
        capacity: CACHE_CAPACITY,
        secrets_refresh: Duration::from_secs(db.secrets_refresh.into()),
    }
}

/// Every client listener with its transport, for `/v1/status`.
fn listener_infos(
    listeners: &[Listener],
    udp: bool,
    tcp: bool,
    secure: Option<&Secure>,
) -> Vec<ListenerInfo> {
    let mut infos = Vec::new();
    for l in listeners {
        for (on, transport) in [(udp, "udp"), (tcp, "tcp")] {
            if on {
                infos.push(ListenerInfo {
                    transport,
                    address: l.addr,
                });
            }
        }
    }
    if let Some(secure) = secure {
        for (transport, addresses) in [("tls", &secure.tls_listen), ("dtls", &secure.dtls_listen)] {
            infos.extend(
                addresses
                    .iter()
                    .map(|&address| ListenerInfo { transport, address }),
            );
        }
    }
    infos
}

/// The ICE-server endpoint (`ice.enabled`): its configuration over the
/// fleet it hands out.
fn start_ice(
    config: &Settings,
    credentials: &Arc<CredentialSource>,
    fleet: &turnpike_fleet::Fleet,
) -> anyhow::Result<Arc<crate::ice::IceService>> {
    let ice_config = crate::ice::IceConfig::from_settings(config).map_err(|e| anyhow!(e))?;
    Ok(crate::ice::IceService::new(
        ice_config,
        fleet.clone(),
        Arc::clone(credentials),
    ))
}

/// The fleet of `[discovery]` (discovered and probed on `control`), when
/// the ICE endpoint is on or `[discovery]` names relays or the database;
/// `None` otherwise.
pub(crate) fn start_fleet(
    config: &Settings,
    control: &tokio::runtime::Runtime,
    store: Option<&Store>,
) -> anyhow::Result<Option<turnpike_fleet::Fleet>> {
    let d = &config.discovery;
    if !config.ice.enabled && d.relays.is_empty() && d.srv_domain.trim().is_empty() && !d.database {
        return Ok(None);
    }
    run_fleet(config, control, store).map(Some)
}

/// The fleet of `[discovery]`, with the database's registered relays when
/// `discovery.database` is on (`store` is the database then).
pub(crate) fn run_fleet(
    config: &Settings,
    control: &tokio::runtime::Runtime,
    store: Option<&Store>,
) -> anyhow::Result<turnpike_fleet::Fleet> {
    let d = &config.discovery;
    let registry = match (d.database, store) {
        (false, _) => None,
        (true, Some(store)) => Some(Arc::new(crate::fleet_registry::StoreRegistry::new(
            store.clone(),
            crate::fleet_registry::Timing::from_settings(config),
        )) as Arc<dyn turnpike_fleet::Registry>),
        (true, None) => {
            return Err(anyhow!(
                "discovery.database lists the relays registered in the database, which is opened for TURN only; set turn.enabled = true"
            ));
        }
    };
    let _entered = control.enter();
    turnpike_fleet::Fleet::start_with(crate::ice::fleet_config(config), registry, control.handle())
        .map_err(|e| anyhow!("cannot start relay discovery: {e}"))
}

/// Opens the credential database (creating or migrating it), registers the
/// realm, reads the shared secrets and starts reloading them. At start an
/// unreachable database is an error: the operator is there to see it.
/// Returns the sources, and the secrets' channel to the shards (both ends:
/// a reload publishes too).
pub(crate) fn open_credentials(
    config: &Settings,
    control: &tokio::runtime::Runtime,
) -> anyhow::Result<(
    Arc<CredentialSource>,
    watch::Sender<Secrets>,
    watch::Receiver<Secrets>,
)> {
    let options = config.store_options(true).map_err(|e| anyhow!("{e}"))?;
    let location = options.location.redacted();
    let db = &config.database;
    let timeout = Duration::from_secs(db.timeout.into());
    let store = control
        .block_on(async {
            let store = tokio::time::timeout(timeout, Store::open(options))
                .await
                .map_err(|_| anyhow!("no answer within {} s", db.timeout))??;
            store.ensure_realm(&config.turn.realm).await?;
            anyhow::Ok(store)
        })
        .map_err(|e| anyhow!("cannot open the credential database {location}: {e}"))?;
    let credentials = Arc::new(CredentialSource::new(
        &config.turn.realm,
        config.user_keys(),
        &config.turn.secrets,
        store,
        control.handle().clone(),
        cache_options(config),
    ));
    let secrets = control
        .block_on(credentials.initial_secrets())
        .map_err(|e| anyhow!("cannot read shared secrets from {location}: {e}"))?;
    tracing::info!(database = %location, secrets = secrets.len(), "credential database open");
    let (publish, receive) = watch::channel(secrets);
    control.spawn(Arc::clone(&credentials).refresh_secrets(publish.clone()));
    Ok((credentials, publish, receive))
}

/// Reads the host's addresses, which the peer policy refuses (its
/// listeners, and every port outside the relay range) whatever the
/// configuration names, and keeps them current. Not knowing them at start
/// is an error: the policy would have a hole where the wildcard listeners
/// are.
fn watch_host_addresses(
    control: &tokio::runtime::Runtime,
) -> anyhow::Result<watch::Receiver<Arc<[IpAddr]>>> {
    let addresses = crate::net::host::addresses()
        .map_err(|e| anyhow!("cannot read this host's IP addresses (getifaddrs): {e}"))?;
    tracing::debug!(?addresses, "the host's addresses");
    let (publish, receive) = watch::channel(addresses.into());
    control.spawn(crate::net::host::watch(publish));
    Ok(receive)
}

/// Loads the TLS certificate (when `tls.certificate` is set), checks that
/// the TLS and DTLS addresses are free, and starts watching the files for
/// renewals (SIGHUP reloads it with the configuration: [`reload`]). A
/// missing or broken certificate at start is an error.
fn start_tls(
    config: &Settings,
    control: &tokio::runtime::Runtime,
    workers: usize,
) -> anyhow::Result<Option<Secure>> {
    let tls = &config.tls;
    if tls.certificate.is_none() {
        return Ok(None);
    }
    let certs = Certificates::load(tls).map_err(|e| anyhow!("{e}"))?;
    for &addr in &tls.listen {
        probe(addr, Type::STREAM).map_err(|e| bind_error("tls", addr, &e))?;
    }
    for &addr in &tls.dtls_listen {
        probe(addr, Type::DGRAM).map_err(|e| bind_error("dtls", addr, &e))?;
    }
    tracing::info!("{}", certs.summary());
    let interval =
        (tls.reload_interval > 0).then(|| Duration::from_secs(tls.reload_interval.into()));
    control.spawn(crate::tls::watch(
        Arc::clone(&certs),
        interval,
        crate::tls::NoTrigger,
    ));
    let l = &config.limits;
    let mut cookie_secret = [0u8; 32];
    rand::rng().fill_bytes(&mut cookie_secret);
    let handshake_timeout = Duration::from_secs(l.handshake_timeout.into());
    let max_handshakes = usize::try_from(l.max_handshakes).unwrap_or(usize::MAX);
    Ok(Some(Secure {
        certs,
        tls_listen: tls.listen.clone(),
        dtls_listen: tls.dtls_listen.clone(),
        handshakes: Arc::default(),
        max_handshakes,
        handshake_rate: Arc::new(Mutex::new(PerSourceRate::new(rand::random()))),
        handshakes_per_second: u16::try_from(l.handshakes_per_second_per_ip).unwrap_or(u16::MAX),
        sources: config.sources(),
        handshake_timeout,
        dtls: DtlsSettings {
            cookie_secret,
            // Each worker holds its share of the server-wide cap.
            max_half_open: (max_handshakes / workers.max(1)).max(1),
            // Sessions count against max_connections_per_ip server-wide, in
            // the shell, once established (runtime/dtls.rs); a per-worker
            // cap here as well would refuse handshakes the server-wide
            // count has room for, and a session it counts as over would
            // never be told so.
            max_sessions_per_ip: 0,
            ipv6_prefix: l.ipv6_prefix,
            // A client's datagrams reach one worker, so the per-worker rate
            // is the source's.
            handshakes_per_second_per_ip: u16::try_from(l.handshakes_per_second_per_ip)
                .unwrap_or(u16::MAX),
            handshake_timeout,
            idle_timeout: Duration::from_secs(l.idle_timeout.into()),
        },
    }))
}

/// Binds each address once without `SO_REUSEPORT` and closes it again.
///
/// Our workers share ports through `SO_REUSEPORT`, which would also let them
/// silently share a port with another running Turnpike. A socket without the
/// option cannot bind a port anyone holds, so this turns that case (and
/// coturn on the same port) into a clear error before any worker starts.
fn probe_listeners(listeners: &[Listener], udp: bool, tcp: bool) -> anyhow::Result<()> {
    for l in listeners {
        if udp {
            probe(l.addr, Type::DGRAM).map_err(|e| bind_error("udp", l.addr, &e))?;
        }
        if tcp {
            probe(l.addr, Type::STREAM).map_err(|e| bind_error("tcp", l.addr, &e))?;
        }
    }
    Ok(())
}

fn probe(addr: SocketAddr, ty: Type) -> io::Result<()> {
    let socket = Socket::new(Domain::for_address(addr), ty, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if ty == Type::STREAM {
        // Lingering TIME_WAIT connections from a previous run are no conflict.
        socket.set_reuse_address(true)?;
    }
    socket.bind(&addr.into())
}

/// One line saying what failed and what to do about it.
pub(crate) fn bind_error(transport: &str, addr: SocketAddr, err: &io::Error) -> anyhow::Error {
    // The setting that names the address, so the hint points at the right key.
    let key = match transport {
        "tls" => "tls.listen",
        "dtls" => "tls.dtls_listen",
        _ => "stun.listen",
    };
    let hint = match err.kind() {
        io::ErrorKind::AddrInUse => format!(
            "another process (another turnpike, coturn?) is using it: stop it or change {key}"
        ),
        io::ErrorKind::AddrNotAvailable => format!(
            "no interface of this host has that IP: check {key}{}",
            if key == "stun.listen" { " and stun.alternate_ip" } else { "" }
        ),
        io::ErrorKind::PermissionDenied => "ports below 1024 need root or CAP_NET_BIND_SERVICE (setcap cap_net_bind_service=+ep on the binary)".to_owned(),
        _ => format!("check {key}"),
    };
    let reason = crate::config::io_message(err).to_lowercase();
    anyhow!("cannot listen on {transport} {addr}: {reason}; {hint}")
}

/// When to stop, besides a signal.
#[derive(Clone, Copy, Debug)]
struct StopRules {
    /// How long SIGTERM drains before exiting (`shutdown.grace_period`).
    grace: Duration,
    /// Exit once a drain (from the admin endpoint) has emptied the server.
    exit_when_empty: bool,
}

/// Runs until the server should stop, and says why:
/// - SIGINT (Ctrl-C): at once, as an interactive user expects;
/// - SIGTERM: drains for `rules.grace` (new Allocates refused, existing
///   allocations kept), then stops; earlier when the last allocation
///   ends, or at a second SIGTERM or a SIGINT; at once with no grace;
/// - with `rules.exit_when_empty`, once a drain started from the admin
///   endpoint has seen the last allocation end;
/// - a worker that failed: its error.
async fn until_stopped(
    relay: &RelayHandle,
    failed: &mut tokio::sync::mpsc::UnboundedReceiver<anyhow::Error>,
    rules: StopRules,
) -> anyhow::Result<String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot install a SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install a SIGINT handler")?;
    tokio::select! {
        _ = int.recv() => return Ok("SIGINT".to_owned()),
        Some(err) = failed.recv() => return Err(err),
        () = relay.drained(), if rules.exit_when_empty => {
            return Ok("drained: the last allocation ended (drain.exit_when_empty)".to_owned());
        }
        _ = term.recv() => {}
    }
    // systemd (crate::service): SIGTERM starts the stop; the drain is part
    // of it (TimeoutStopSec covers the grace period).
    crate::service::stopping();
    if rules.grace.is_zero() {
        return Ok("SIGTERM, shutdown.grace_period = 0".to_owned());
    }
    let grace = rules.grace.as_secs();
    let state = relay.set_draining(true).await;
    tracing::info!(
        allocations = state.allocations,
        grace_period = grace,
        "SIGTERM: draining (new allocations refused) until the last allocation ends, for {grace} s at most; SIGTERM again or SIGINT stops at once"
    );
    tokio::select! {
        _ = term.recv() => Ok("a second SIGTERM during the grace period".to_owned()),
        _ = int.recv() => Ok("SIGINT during the grace period".to_owned()),
        Some(err) = failed.recv() => Err(err),
        () = relay.drained() => Ok("SIGTERM, and the last allocation ended".to_owned()),
        () = tokio::time::sleep(rules.grace) => {
            Ok(format!("SIGTERM, and the grace period ({grace} s) is over"))
        }
    }
}
