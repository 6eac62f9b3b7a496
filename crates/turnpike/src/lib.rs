//! The Turnpike server binary's library half: everything between the sans-IO
//! core (`turnpike-core`) and the operating system.
//!
//! - [`admin`]: `turnpike user|secret|credentials`, the credential
//!   database's administration commands.
//! - [`admin_client`]: `turnpike status|allocations|kick|drain|undrain|reload`,
//!   the admin endpoint's client.
//! - [`admin_http`]: the admin HTTP endpoint (probes, `/metrics`, status,
//!   allocations, kicks, drain, reloads).
//! - [`bench`]: `turnpike bench`, the TURN load generator's command line.
//! - [`cli`]: command-line parsing (clap); `main.rs` dispatches the subcommands.
//! - [`config`]: the operator's settings, each declared once: file,
//!   environment and flags, validation, and what they become for the core.
//! - [`credentials`]: where long-term credentials come from.
//! - [`date`]: calendar arithmetic and UTC time formatting.
//! - [`logging`]: tracing subscriber set-up (text or JSON).
//! - [`net`]: sockets: batched UDP I/O and TCP stream framing.
//! - [`runtime`]: worker threads that own sockets and a core shard each.
//! - [`service`]: what systemd is told (`READY=1`, `STATUS=`, the
//!   watchdog), through `NOTIFY_SOCKET`.
//! - [`tls`]: TLS certificates, their checks and hot reload.

pub mod admin;
pub mod admin_client;
pub mod admin_http;
pub mod bench;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod date;
pub mod fleet_registry;
pub mod ice;
pub mod logging;
pub mod net;
pub mod observe;
pub mod runtime;
pub mod service;
pub mod tls;
