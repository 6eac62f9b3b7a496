//! restund's UDP command port (`admin.restund_listen`): `turnstats` in
//! restund's plain-text format, for runbooks and munin plugins written for
//! restund (`echo turnstats | nc -u -q1 127.0.0.1 33000`).
//!
//! What restund does (its `status` module and `cmd.c`), and so this port:
//!
//! - the command is the datagram's first line, up to the first `\n`, at
//!   most [`MAX_COMMAND`] bytes (longer ones are cut). A trailing `\r` is
//!   dropped too (restund would keep it, and answer "not found");
//! - the answer goes back to the sender in datagrams of at most
//!   [`CHUNK_SIZE`] bytes;
//! - an unknown command answers `<command>: command not found\n`.
//!
//! `turnstats` answers, in this order:
//!
//! ```text
//! allocs_cur <allocations now>
//! allocs_tot <allocations made since the start>
//! bytes_tx <payload bytes relayed to peers>
//! bytes_rx <payload bytes relayed to clients>
//! bytes_tot <bytes_tx + bytes_rx>
//! chan_cur <channels now>
//! ```
//!
//! restund's `bytec_tx` counts what an allocation's relay socket sent to
//! a peer (Send indications and ChannelData from the client), its
//! `bytec_rx` what the relay socket received from peers and passed on to
//! the client; so `bytes_tx` is [`Traffic::to_peer_bytes`] and `bytes_rx`
//! [`Traffic::to_client_bytes`], the XDP fast path's included
//! ([`Snapshot::relayed`]).
//!
//! The port has no authentication, so [`crate::config::Settings::validate`]
//! allows loopback addresses only, and the TURN peer policy refuses it as
//! a peer. One datagram is answered at a time; only `turnstats` asks the
//! workers.
//!
//! [`Traffic::to_peer_bytes`]: turnpike_core::stats::Traffic::to_peer_bytes
//! [`Traffic::to_client_bytes`]: turnpike_core::stats::Traffic::to_client_bytes

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use super::{Relay, Snapshot};
use crate::config::AdminSettings;

/// Longest command read (restund's buffer), in bytes.
pub const MAX_COMMAND: usize = 32;

/// Largest datagram of an answer (restund's `CHUNK_SIZE`).
pub const CHUNK_SIZE: usize = 1024;

/// The snapshot of a `turnstats` is given up after this long (no answer
/// is sent: the sender times out, as with a busy restund).
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(5);

/// The commands this port knows.
const TURNSTATS: &[u8] = b"turnstats";

/// The command of a datagram: its first line (without `\r`), at most
/// [`MAX_COMMAND`] bytes. Empty when the datagram is empty or starts
/// with a line break.
pub fn command(datagram: &[u8]) -> &[u8] {
    let line = datagram.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = &line[..line.len().min(MAX_COMMAND)];
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Whether answering `datagram` needs a [`Snapshot`] (asking the workers).
pub fn needs_snapshot(datagram: &[u8]) -> bool {
    command(datagram) == TURNSTATS
}

/// The answer to `command` (a datagram, or the command read from one:
/// see [`command`]), as restund would give it.
pub fn answer(command: &[u8], snapshot: &Snapshot) -> String {
    let command = self::command(command);
    if command != TURNSTATS {
        return format!("{}: command not found\n", String::from_utf8_lossy(command));
    }
    let gauges = &snapshot.workers.allocations;
    let relayed = snapshot.relayed();
    let (tx, rx) = (relayed.to_peer_bytes, relayed.to_client_bytes);
    let mut out = String::with_capacity(128);
    let _ = writeln!(out, "allocs_cur {}", gauges.total);
    let _ = writeln!(
        out,
        "allocs_tot {}",
        snapshot.workers.core.allocations_created
    );
    let _ = writeln!(out, "bytes_tx {tx}");
    let _ = writeln!(out, "bytes_rx {rx}");
    let _ = writeln!(out, "bytes_tot {}", tx.wrapping_add(rx));
    let _ = writeln!(out, "chan_cur {}", gauges.channels);
    out
}

/// Answers datagrams on `socket` until the runtime stops, one at a time.
/// Empty commands are ignored; nothing a sender sends makes it stop.
pub async fn serve(socket: UdpSocket, relay: Arc<dyn Relay>) {
    // Only the first line's first bytes matter; a longer datagram is cut.
    let mut buf = [0u8; 512];
    loop {
        let (len, from) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            // An ICMP error for an earlier answer, or a shortage: carry on
            // after a breath rather than spin.
            Err(err) => {
                tracing::debug!(error = %err, "restund command port: receive failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let datagram = &buf[..len];
        if command(datagram).is_empty() {
            continue;
        }
        let snapshot = if needs_snapshot(datagram) {
            match tokio::time::timeout(SNAPSHOT_TIMEOUT, relay.snapshot()).await {
                Ok(snapshot) => snapshot,
                Err(_) => {
                    tracing::warn!("restund command port: the workers did not answer turnstats");
                    continue;
                }
            }
        } else {
            Snapshot::default()
        };
        let reply = answer(datagram, &snapshot);
        for chunk in reply.as_bytes().chunks(CHUNK_SIZE) {
            if let Err(err) = socket.send_to(chunk, from).await {
                tracing::debug!(error = %err, to = %from, "restund command port: send failed");
                break;
            }
        }
    }
}

/// Binds `admin.restund_listen` (an error is one line saying what to do)
/// and serves it on `runtime`. Nothing when it is unset.
pub fn start(
    admin: &AdminSettings,
    relay: Arc<dyn Relay>,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    let Some(addr) = admin.restund_listen else {
        return Ok(());
    };
    let _entered = runtime.enter();
    let socket = bind(addr).map_err(|e| bind_error(addr, &e))?;
    let local = socket.local_addr().unwrap_or(addr);
    runtime.spawn(serve(socket, relay));
    tracing::info!(address = %local, "restund command port listening (turnstats)");
    Ok(())
}

/// A UDP socket on `addr`: IPv6 ones IPv6-only, never `SO_REUSEPORT` (so
/// a port someone holds is an error).
fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() && addr.ip().to_canonical().is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// One line: what failed and what to do about it.
fn bind_error(addr: SocketAddr, err: &io::Error) -> anyhow::Error {
    let hint = match err.kind() {
        io::ErrorKind::AddrInUse => {
            "another process is using it (a restund still running?): stop it or change admin.restund_listen"
        }
        io::ErrorKind::AddrNotAvailable => {
            "no interface of this host has that IP: check admin.restund_listen"
        }
        io::ErrorKind::PermissionDenied => {
            "ports below 1024 need root or CAP_NET_BIND_SERVICE: pick a port above 1023 for admin.restund_listen"
        }
        _ => "check admin.restund_listen",
    };
    let reason = crate::config::io_message(err).to_lowercase();
    anyhow!("cannot listen on restund command port udp {addr}: {reason}; {hint}")
}

#[cfg(test)]
mod tests;
