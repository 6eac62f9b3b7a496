//! Sans-IO DTLS 1.2 server sessions for Turnpike (STUN/TURN over DTLS,
//! RFC 7350, default port 5349/udp), on the system OpenSSL 3.
//!
//! # Shape
//!
//! One [`DtlsServer`] per worker thread holds every DTLS session of that
//! worker's UDP socket. It does no I/O and reads no clock: the runtime
//! feeds each received datagram to [`DtlsServer::handle_datagram`], encrypts
//! with [`DtlsServer::send`], and after every call drains
//! [`DtlsServer::poll_output`] — datagrams to send ([`Output::Transmit`]),
//! decrypted application data ([`Output::Data`]) and session events
//! ([`Output::Established`], [`Output::Closed`]). Timers are the runtime's
//! too: sleep until [`DtlsServer::poll_timeout`], then call
//! [`DtlsServer::handle_timeout`].
//!
//! ```no_run
//! use std::io::ErrorKind;
//! use std::net::UdpSocket;
//! use std::time::{Duration, Instant};
//! use turnpike_dtls::{DtlsConfig, DtlsServer, Output};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = DtlsConfig::new(
//!     std::fs::read("chain.pem")?,
//!     std::fs::read("key.pem")?,
//!     [7; 32], // random, shared by the workers
//! );
//! let mut dtls = DtlsServer::new(config)?;
//! let socket = UdpSocket::bind("0.0.0.0:5349")?;
//! let mut buf = vec![0; 65_536];
//! loop {
//!     let wait = dtls.poll_timeout().map(|t| t.saturating_duration_since(Instant::now()));
//!     socket.set_read_timeout(Some(wait.unwrap_or(Duration::from_secs(1)).max(Duration::from_millis(1))))?;
//!     match socket.recv_from(&mut buf) {
//!         Ok((n, from)) => dtls.handle_datagram(Instant::now(), from, &buf[..n]),
//!         Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
//!         Err(e) => return Err(e.into()),
//!     }
//!     if dtls.poll_timeout().is_some_and(|t| t <= Instant::now()) {
//!         dtls.handle_timeout(Instant::now());
//!     }
//!     while let Some(out) = dtls.poll_output() {
//!         match out {
//!             Output::Transmit { to, data } => drop(socket.send_to(&data, to)),
//!             // STUN/TURN message from `from`; the answer goes back through `send`.
//!             Output::Data { from, data } => drop(dtls.send(Instant::now(), from, &data)),
//!             Output::Established { .. } | Output::Closed { .. } => {}
//!         }
//!     }
//! }
//! # }
//! ```
//!
//! # Handshake admission
//!
//! A datagram from an address without a session is looked at by plain Rust
//! code (`cookie.rs`) and nothing else: unless it is an epoch-0 ClientHello
//! it is dropped; a ClientHello without a valid cookie is answered with a
//! HelloVerifyRequest built on the spot (RFC 6347 §4.2.1). Neither creates
//! any state, so spoofed floods cost one HMAC each. The cookie is
//! HMAC-SHA256(cookie_secret, coarse time ‖ peer address), valid for the
//! current and the previous 30 s period. Only a ClientHello with a valid
//! cookie — proof that the client receives at its address — creates a
//! session, and only within the half-open caps (total, per source IP) and
//! the per-IP session cap; beyond them it is dropped silently, the client
//! retries.
//!
//! # OpenSSL glue (`ossl.rs`)
//!
//! Each session is an `SslStream` over an in-memory datagram pipe (one
//! `Vec` per datagram: OpenSSL 3.0 has no `BIO_s_dgram_mem`). The session is
//! primed with `DTLSv1_listen` on the already-verified ClientHello, which
//! sets OpenSSL's sequence numbers as after its own cookie exchange. The
//! handshake MTU is fixed with `SSL_set_mtu` (no path-MTU queries on the
//! pipe); application data goes out as one record per message, up to 2^14
//! bytes, whatever that MTU (see [`DtlsConfig::mtu`]). DTLS 1.2
//! only, ECDHE with AEAD suites, no compression, no renegotiation, no
//! resumption, no client certificates. ALPN (RFC 7443): a client offering
//! `stun.turn` or `stun.nat-discovery` gets it, one offering only other
//! protocols a fatal no_application_protocol alert, one offering none is
//! served (see [`DtlsConfig::alpn_protocols`]).
//!
//! **Retransmission runs on the caller's clock.** OpenSSL's DTLS timer
//! reads the wall clock and fires by itself inside `SSL_read`, which a
//! sans-IO design cannot allow (and which makes a simulated clock useless).
//! Its duration is therefore parked at an hour (`DTLS_set_timer_cb`); the
//! server records the datagrams of each flight OpenSSL writes while its
//! timer is armed (`SSL_ctrl(DTLS_CTRL_GET_TIMEOUT)`, code 73, says whether
//! the flight awaits an answer) and resends them itself, 1 s doubling to
//! 60 s, until OpenSSL disarms the timer (the peer's next flight arrived) or
//! the handshake times out. Resent datagrams are byte-identical copies:
//! a peer that got the original discards the copy as a replay, one that
//! lost it takes it. The post-handshake case (the client repeats its
//! Finished because our last flight was lost) is still handled inside
//! OpenSSL, which answers a repeated Finished with its own retransmission.
//! `DTLSv1_handle_timeout` (code 74) is therefore not used.
//!
//! # Bounds
//!
//! Every queue is capped: at most [`PER_PEER_OUTPUT_CAP`] undrained
//! `Transmit`/`Data` outputs per session and [`QUEUE_CAP`] in all (past
//! them outputs are dropped like lost datagrams, and no new handshakes or
//! HelloVerifyRequests are started); events are never dropped, and there
//! are at most two per session (plus one uncounted close_notify). A
//! HelloVerifyRequest (45 bytes) is smaller than the smallest ClientHello
//! that earns one (61 bytes): no amplification. Outgoing handshake
//! datagrams never exceed the MTU (≤ 65507), application data records 2^14
//! bytes of plaintext; incoming datagrams over 65535 bytes are ignored.
//! Timers live in
//! one ordered set with exactly one entry per session. No input panics
//! (see the property tests).
//!
//! # Timeouts
//!
//! * `handshake_timeout` from the cookie-valid ClientHello to the end of the
//!   handshake; expiry drops the session with `Closed`.
//! * `idle_timeout` since the last application data received; expiry sends
//!   close_notify and drops the session with `Closed`. Only authenticated
//!   data counts: spoofed garbage from the peer's address cannot keep a
//!   session alive.
//! * A close_notify from the peer is answered with one and gives `Closed`;
//!   so does any fatal alert or error.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openssl::error::ErrorStack;
use openssl::ssl::{ErrorCode, SslContext, SslStream};

mod config;
mod cookie;
mod error;
mod ossl;

pub use config::{ALPN_STUN_NAT_DISCOVERY, ALPN_STUN_TURN, DtlsConfig, MAX_MTU, MIN_MTU};
pub use error::DtlsError;

use cookie::{ClientHello, CookieKey};
use ossl::Pipe;

/// Undrained `Transmit`/`Data` outputs one session may have queued; more
/// are dropped (and [`DtlsServer::send`] returns [`DtlsError::QueueFull`]).
pub const PER_PEER_OUTPUT_CAP: usize = 64;
/// Undrained outputs of the whole server past which `Transmit`/`Data` are
/// dropped and no new handshake (nor HelloVerifyRequest) is started.
pub const QUEUE_CAP: usize = 8192;
/// First retransmission timeout of a handshake flight (RFC 6347 §4.2.4.1).
pub const INITIAL_RTO: Duration = Duration::from_secs(1);
/// Retransmission timeout ceiling (RFC 6347 §4.2.4.1).
pub const MAX_RTO: Duration = Duration::from_secs(60);
/// Datagrams larger than this cannot be UDP and are ignored.
const MAX_INPUT: usize = 65_535;

/// What the runtime must do or know after a call. Drain with
/// [`DtlsServer::poll_output`] after every call into the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `data` (one datagram: handshake fragments of at most the
    /// configured MTU, or one application data record) to `to`.
    Transmit { to: SocketAddr, data: Vec<u8> },
    /// Application data (one DTLS record's plaintext) received from `from`.
    Data { from: SocketAddr, data: Vec<u8> },
    /// The handshake with `peer` finished; [`DtlsServer::send`] works now.
    Established { peer: SocketAddr },
    /// The server forgot `peer`: handshake or idle timeout, close_notify or
    /// a fatal error. Also for sessions that never reached `Established`
    /// (a runtime may ignore those); not after [`DtlsServer::close`].
    Closed { peer: SocketAddr },
}

/// What the runtime needs from a DTLS implementation: sessions driven by
/// datagrams and a clock, nothing else. [`DtlsServer`] (OpenSSL) is the one
/// there is; the runtime holds a `dyn Sessions`, so another (a pure-Rust
/// stack once one covers RSA certificates) can replace it without touching
/// the runtime.
pub trait Sessions {
    /// Serve new handshakes with this certificate; established sessions keep
    /// theirs. On error the previous certificate stays.
    fn set_certificate(&mut self, chain_pem: &[u8], key_pem: &[u8]) -> Result<(), DtlsError>;
    /// A datagram arrived from `from`.
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]);
    /// Encrypt one message for the established session with `to`.
    fn send(&mut self, now: Instant, to: SocketAddr, data: &[u8]) -> Result<(), DtlsError>;
    /// End the session with `peer`.
    fn close(&mut self, peer: SocketAddr);
    /// What to send, deliver or know; drain after every call.
    fn poll_output(&mut self) -> Option<Output>;
    /// When [`handle_timeout`](Self::handle_timeout) is due.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Retransmissions, handshake and idle timeouts.
    fn handle_timeout(&mut self, now: Instant);
}

impl Sessions for DtlsServer {
    fn set_certificate(&mut self, chain_pem: &[u8], key_pem: &[u8]) -> Result<(), DtlsError> {
        DtlsServer::set_certificate(self, chain_pem, key_pem)
    }
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        DtlsServer::handle_datagram(self, now, from, data);
    }
    fn send(&mut self, now: Instant, to: SocketAddr, data: &[u8]) -> Result<(), DtlsError> {
        DtlsServer::send(self, now, to, data)
    }
    fn close(&mut self, peer: SocketAddr) {
        DtlsServer::close(self, peer);
    }
    fn poll_output(&mut self) -> Option<Output> {
        DtlsServer::poll_output(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        DtlsServer::poll_timeout(self)
    }
    fn handle_timeout(&mut self, now: Instant) {
        DtlsServer::handle_timeout(self, now);
    }
}

/// DTLS 1.2 server sessions of one UDP socket (one worker). See the crate
/// documentation for the design. `Send`, not `Sync`; one per thread.
pub struct DtlsServer {
    ctx: SslContext,
    /// The ALPN IDs every context is built with, kept for
    /// [`set_certificate`](Self::set_certificate).
    alpn: Arc<[Vec<u8>]>,
    cookie: CookieKey,
    limits: Limits,
    /// std's SipHash maps, not FxHash: the keys (ports, IPv6 addresses)
    /// are chosen by clients, and one keyed hash per datagram is ~20 ns.
    peers: HashMap<SocketAddr, Peer>,
    per_ip: HashMap<IpAddr, IpCount>,
    /// Handshakes started per source in the second `started_second` (from
    /// the first call's `now`); cleared when the second changes, so it
    /// holds at most the sources of one second, each proven by a cookie.
    started: HashMap<IpAddr, u16>,
    started_second: Option<(Instant, u64)>,
    half_open: usize,
    /// One entry per session: (its earliest deadline, address). For
    /// established sessions the deadline may be early (idle is re-checked
    /// when it fires), so a datagram never has to touch this set.
    timers: BTreeSet<(Instant, SocketAddr)>,
    queue: VecDeque<Queued>,
    next_id: u64,
    /// Received-datagram buffer lent to the session being stepped.
    scratch: Vec<u8>,
    /// Plaintext buffer for `SSL_read`.
    read_buf: Box<[u8]>,
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    max_half_open_total: usize,
    max_half_open_per_ip: usize,
    max_sessions_per_ip: usize,
    ipv6_prefix: u8,
    max_handshakes_per_ip_per_second: u16,
    handshake_timeout: Duration,
    idle_timeout: Duration,
    mtu: usize,
}

impl Limits {
    /// The key `addr`'s per-IP caps are counted under: its IPv4 address,
    /// or its IPv6 address cut to `ipv6_prefix` bits.
    fn source(&self, addr: SocketAddr) -> IpAddr {
        match addr.ip().to_canonical() {
            IpAddr::V6(v6) => {
                let bits = u32::from(self.ipv6_prefix.clamp(1, 128));
                IpAddr::V6((u128::from(v6) & (u128::MAX << (128 - bits))).into())
            }
            v4 => v4,
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct IpCount {
    half_open: usize,
    total: usize,
}

struct Peer {
    /// Distinguishes this session from a later one at the same address
    /// (queued outputs outlive sessions).
    id: u64,
    stream: SslStream<Pipe>,
    phase: Phase,
    /// The ClientHello random that created the session: a ClientHello
    /// repeating it is a retransmission, a different one a new handshake.
    client_random: [u8; 32],
    /// Last application data (or handshake completion).
    last_rx: Instant,
    /// This session's entry in `DtlsServer::timers`.
    timer_key: Option<Instant>,
    /// Its `Transmit`/`Data` outputs still in the queue.
    pending: usize,
    /// The last flight, while it awaits an answer.
    flight: Option<Flight>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Handshaking { deadline: Instant },
    Established,
}

struct Flight {
    datagrams: Vec<Vec<u8>>,
    due: Instant,
    rto: Duration,
}

struct Queued {
    output: Output,
    /// Session id the output counts against, 0 for uncounted ones.
    owner: u64,
}

impl DtlsServer {
    /// A server with `config`'s certificate and limits. Fails on an invalid
    /// limit, an unparsable chain or key, or a key that does not match the
    /// leaf.
    pub fn new(config: DtlsConfig) -> Result<Self, DtlsError> {
        config.validate()?;
        let alpn: Arc<[Vec<u8>]> = config.alpn_protocols.into();
        let ctx = ossl::build_context(&config.chain_pem, &config.key_pem, &alpn)?;
        Ok(DtlsServer {
            ctx,
            alpn,
            cookie: CookieKey::new(&config.cookie_secret),
            limits: Limits {
                max_half_open_total: config.max_half_open_total,
                max_half_open_per_ip: config.max_half_open_per_ip,
                max_sessions_per_ip: config.max_sessions_per_ip,
                ipv6_prefix: config.ipv6_prefix,
                max_handshakes_per_ip_per_second: config.max_handshakes_per_ip_per_second,
                handshake_timeout: config.handshake_timeout,
                idle_timeout: config.idle_timeout,
                mtu: config.mtu,
            },
            peers: HashMap::new(),
            per_ip: HashMap::new(),
            started: HashMap::new(),
            started_second: None,
            half_open: 0,
            timers: BTreeSet::new(),
            queue: VecDeque::new(),
            next_id: 1,
            scratch: Vec::new(),
            read_buf: vec![0; ossl::MAX_PLAINTEXT].into_boxed_slice(),
        })
    }

    /// Replaces the certificate chain and key for handshakes that start
    /// from now on; sessions already established or in progress keep the
    /// old one. On error nothing changes.
    pub fn set_certificate(&mut self, chain_pem: &[u8], key_pem: &[u8]) -> Result<(), DtlsError> {
        self.ctx = ossl::build_context(chain_pem, key_pem, &self.alpn)?;
        Ok(())
    }

    /// Processes one received datagram. Never panics, whatever `data` is.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        if data.len() < cookie::RECORD_HEADER_LEN || data.len() > MAX_INPUT {
            return;
        }
        let hello = cookie::parse_client_hello(data);
        if let Some(peer) = self.peers.get(&from) {
            match hello {
                // A ClientHello with a random this session did not start
                // with: the client (or a new one at the same address) begins
                // a new handshake. RFC 6347 §4.2.8: keep the old session
                // until the new one has proven reachability (a valid
                // cookie), then replace it.
                Some(hello) if hello.random != peer.client_random => {
                    if self.cookie.verify(now, from, hello.cookie) {
                        self.remove_peer(from, true);
                        self.accept(now, from, data, &hello);
                    } else {
                        self.hello_verify(now, from, &hello);
                    }
                }
                // Anything else, including repeats of the session's own
                // ClientHello (OpenSSL discards those), goes to the session.
                _ => self.step(now, from, Some(data)),
            }
            return;
        }
        let Some(hello) = hello else {
            // Not a ClientHello from an unknown address: no state, no reply.
            return;
        };
        if self.cookie.verify(now, from, hello.cookie) {
            self.accept(now, from, data, &hello);
        } else {
            self.hello_verify(now, from, &hello);
        }
    }

    /// Encrypts `data` as one DTLS record for the established session with
    /// `to` and queues the datagram ([`Output::Transmit`]). `data` must fit
    /// one record: at most [`max_payload`](Self::max_payload) bytes.
    /// `now` is not used today; it keeps the signature uniform.
    pub fn send(&mut self, _now: Instant, to: SocketAddr, data: &[u8]) -> Result<(), DtlsError> {
        let max = self.max_payload();
        let peer = self.peers.get_mut(&to).ok_or(DtlsError::NoSession(to))?;
        if peer.phase != Phase::Established {
            return Err(DtlsError::NotEstablished(to));
        }
        if data.len() > max {
            return Err(DtlsError::TooLarge {
                len: data.len(),
                max,
            });
        }
        if data.is_empty() {
            return Ok(());
        }
        if peer.pending >= PER_PEER_OUTPUT_CAP || self.queue.len() >= QUEUE_CAP {
            return Err(DtlsError::QueueFull(to));
        }
        let written = peer.stream.ssl_write(data);
        flush_outbox(&mut self.queue, peer, to);
        match written {
            Ok(_) => Ok(()),
            Err(_) => {
                drop(ErrorStack::get());
                self.remove_peer(to, true);
                Err(DtlsError::SessionFailed(to))
            }
        }
    }

    /// Sends close_notify to an established `peer` and forgets the session
    /// (no [`Output::Closed`] follows). A handshake in progress is just
    /// forgotten. Unknown peers are ignored.
    pub fn close(&mut self, peer: SocketAddr) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if p.phase == Phase::Established {
            self.shutdown(peer);
        }
        self.remove_peer(peer, false);
    }

    /// The next output, oldest first.
    pub fn poll_output(&mut self) -> Option<Output> {
        let Queued { output, owner } = self.queue.pop_front()?;
        if owner != 0 {
            let addr = match &output {
                Output::Transmit { to, .. } => *to,
                Output::Data { from, .. } => *from,
                Output::Established { peer } | Output::Closed { peer } => *peer,
            };
            if let Some(p) = self.peers.get_mut(&addr)
                && p.id == owner
            {
                p.pending = p.pending.saturating_sub(1);
            }
        }
        Some(output)
    }

    /// The earliest retransmission, handshake or idle deadline, if any
    /// session exists. Calling [`handle_timeout`](Self::handle_timeout)
    /// earlier is harmless; idle deadlines may come early and be pushed back.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|&(at, _)| at)
    }

    /// Runs every deadline at or before `now`: retransmits unanswered
    /// handshake flights, drops expired handshakes and idle sessions
    /// ([`Output::Closed`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        // Each session has one entry and re-enters only with a later
        // deadline, but bound the loop anyway in case `now` misbehaves.
        for _ in 0..self.timers.len() {
            let Some(&(at, addr)) = self.timers.first() else {
                break;
            };
            if at > now {
                break;
            }
            self.timers.pop_first();
            let Some(peer) = self.peers.get_mut(&addr) else {
                continue;
            };
            peer.timer_key = None;
            match peer.phase {
                Phase::Handshaking { deadline } if now >= deadline => {
                    self.remove_peer(addr, true);
                    continue;
                }
                Phase::Established if now >= peer.last_rx + self.limits.idle_timeout => {
                    self.shutdown(addr);
                    self.remove_peer(addr, true);
                    continue;
                }
                _ => {}
            }
            if let Some(flight) = peer.flight.as_mut()
                && flight.due <= now
            {
                flight.rto = (flight.rto * 2).min(MAX_RTO);
                flight.due = now + flight.rto;
                for datagram in &flight.datagrams {
                    let out = Output::Transmit {
                        to: addr,
                        data: datagram.clone(),
                    };
                    if !push_counted_parts(&mut self.queue, peer.id, &mut peer.pending, out) {
                        break;
                    }
                }
            }
            self.rekey(addr);
        }
    }

    /// Established sessions.
    pub fn sessions(&self) -> usize {
        self.peers.len() - self.half_open
    }

    /// Handshakes in progress (after the cookie exchange).
    pub fn half_open(&self) -> usize {
        self.half_open
    }

    /// Largest `data` [`send`](Self::send) accepts: one record's plaintext
    /// (2^14 bytes), whatever the handshake MTU.
    pub fn max_payload(&self) -> usize {
        ossl::MAX_PLAINTEXT
    }

    /// Counts a handshake of `from`'s source in the current second, unless
    /// it already started [`DtlsConfig::max_handshakes_per_ip_per_second`].
    fn start_allowed(&mut self, now: Instant, from: SocketAddr) -> bool {
        let (origin, second) = *self.started_second.get_or_insert((now, 0));
        let this_second = now.saturating_duration_since(origin).as_secs();
        if this_second != second {
            self.started.clear();
            self.started_second = Some((origin, this_second));
        }
        let count = self.started.entry(self.limits.source(from)).or_insert(0);
        if *count >= self.limits.max_handshakes_per_ip_per_second {
            return false;
        }
        *count += 1;
        true
    }

    /// Answers a ClientHello without a valid cookie. Stateless.
    fn hello_verify(&mut self, now: Instant, to: SocketAddr, hello: &ClientHello<'_>) {
        if self.queue.len() >= QUEUE_CAP {
            return;
        }
        let cookie = self.cookie.cookie(CookieKey::period(now), to);
        let data = cookie::hello_verify_request(hello, &cookie);
        self.queue.push_back(Queued {
            output: Output::Transmit { to, data },
            owner: 0,
        });
    }

    /// Creates a session for a ClientHello whose cookie is valid, within
    /// the caps, and lets OpenSSL answer it.
    fn accept(&mut self, now: Instant, from: SocketAddr, data: &[u8], hello: &ClientHello<'_>) {
        let l = self.limits;
        let count = self
            .per_ip
            .get(&self.limits.source(from))
            .copied()
            .unwrap_or_default();
        if self.queue.len() >= QUEUE_CAP
            || self.half_open >= l.max_half_open_total
            || count.half_open >= l.max_half_open_per_ip
            || (l.max_sessions_per_ip != 0 && count.total >= l.max_sessions_per_ip)
            || !self.start_allowed(now, from)
        {
            return;
        }
        let Ok(mut stream) = ossl::new_session(&self.ctx, l.mtu) else {
            drop(ErrorStack::get());
            return;
        };
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        buf.extend_from_slice(data);
        let pipe = stream.get_mut();
        pipe.inbox = buf;
        pipe.inbox_full = true;
        let primed = ossl::listen(&mut stream);
        let pipe = stream.get_mut();
        self.scratch = std::mem::take(&mut pipe.inbox);
        pipe.inbox_full = false;
        // DTLSv1_listen writes only a HelloVerifyRequest, and only for a
        // cookie it rejects, which cannot happen here.
        pipe.outbox.clear();
        if !primed {
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.peers.insert(
            from,
            Peer {
                id,
                stream,
                phase: Phase::Handshaking {
                    deadline: now + l.handshake_timeout,
                },
                client_random: hello.random,
                last_rx: now,
                timer_key: None,
                pending: 0,
                flight: None,
            },
        );
        self.half_open += 1;
        let count = self.per_ip.entry(self.limits.source(from)).or_default();
        count.half_open += 1;
        count.total += 1;
        self.step(now, from, None);
    }

    /// Feeds `data` (if any) to the session with `addr` and collects what
    /// OpenSSL makes of it.
    fn step(&mut self, now: Instant, addr: SocketAddr, data: Option<&[u8]>) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        if let Some(data) = data {
            let mut buf = std::mem::take(&mut self.scratch);
            buf.clear();
            buf.extend_from_slice(data);
            let pipe = peer.stream.get_mut();
            pipe.inbox = buf;
            pipe.inbox_full = true;
        }

        let mut fatal = false;
        let mut peer_closed = false;
        if let Phase::Handshaking { .. } = peer.phase {
            match peer.stream.do_handshake() {
                Ok(()) => {
                    peer.phase = Phase::Established;
                    peer.last_rx = now;
                    peer.flight = None;
                    self.half_open -= 1;
                    if let Some(count) = self.per_ip.get_mut(&self.limits.source(addr)) {
                        count.half_open = count.half_open.saturating_sub(1);
                    }
                }
                Err(e) if e.code() == ErrorCode::WANT_READ => {}
                Err(_) => fatal = true,
            }
            if !fatal {
                // Copies of the flight just written, if OpenSSL armed its
                // timer for it (an answer is due); disarmed: answered.
                let armed = ossl::timer_armed(peer.stream.ssl());
                let outbox = &peer.stream.get_ref().outbox;
                if !armed || peer.phase == Phase::Established {
                    peer.flight = None;
                } else if !outbox.is_empty() {
                    peer.flight = Some(Flight {
                        datagrams: outbox.clone(),
                        due: now + INITIAL_RTO,
                        rto: INITIAL_RTO,
                    });
                }
            }
            flush_outbox(&mut self.queue, peer, addr);
            if peer.phase == Phase::Established {
                self.queue.push_back(Queued {
                    output: Output::Established { peer: addr },
                    owner: 0,
                });
            }
        }

        if peer.phase == Phase::Established && !fatal {
            loop {
                match peer.stream.ssl_read(&mut self.read_buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        peer.last_rx = now;
                        let out = Output::Data {
                            from: addr,
                            data: self.read_buf[..n].to_vec(),
                        };
                        push_counted(&mut self.queue, peer, out);
                    }
                    Err(e) if e.code() == ErrorCode::WANT_READ => break,
                    Err(e) if e.code() == ErrorCode::ZERO_RETURN => {
                        peer_closed = true;
                        break;
                    }
                    Err(_) => {
                        fatal = true;
                        break;
                    }
                }
            }
            if peer_closed {
                // Answer close_notify with ours (RFC 5246 §7.2.1).
                let _ = peer.stream.shutdown();
            }
            // Alerts, our close_notify, OpenSSL's answer to a repeated
            // client Finished.
            flush_outbox(&mut self.queue, peer, addr);
        }

        let pipe = peer.stream.get_mut();
        let buf = std::mem::take(&mut pipe.inbox);
        pipe.inbox_full = false;
        pipe.outbox.clear(); // only non-empty after a fatal handshake error: its alert
        if buf.capacity() > self.scratch.capacity() {
            self.scratch = buf;
        }
        if fatal || peer_closed {
            drop(ErrorStack::get());
            self.remove_peer(addr, true);
        } else {
            self.rekey(addr);
        }
    }

    /// close_notify for an established session, queued uncounted (one
    /// datagram per session, once).
    fn shutdown(&mut self, addr: SocketAddr) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        if peer.stream.shutdown().is_err() {
            drop(ErrorStack::get());
        }
        for datagram in peer.stream.get_mut().outbox.drain(..) {
            self.queue.push_back(Queued {
                output: Output::Transmit {
                    to: addr,
                    data: datagram,
                },
                owner: 0,
            });
        }
    }

    /// Moves the session's timer entry to its current earliest deadline.
    fn rekey(&mut self, addr: SocketAddr) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        let at = match peer.phase {
            Phase::Handshaking { deadline } => peer
                .flight
                .as_ref()
                .map_or(deadline, |f| f.due.min(deadline)),
            Phase::Established => peer.last_rx + self.limits.idle_timeout,
        };
        if peer.timer_key == Some(at) {
            return;
        }
        if let Some(old) = peer.timer_key.replace(at) {
            self.timers.remove(&(old, addr));
        }
        self.timers.insert((at, addr));
    }

    /// Forgets the session with `addr`, optionally announcing it.
    fn remove_peer(&mut self, addr: SocketAddr, announce: bool) {
        let Some(peer) = self.peers.remove(&addr) else {
            return;
        };
        if let Some(at) = peer.timer_key {
            self.timers.remove(&(at, addr));
        }
        let handshaking = matches!(peer.phase, Phase::Handshaking { .. });
        if handshaking {
            self.half_open -= 1;
        }
        if let Entry::Occupied(mut e) = self.per_ip.entry(self.limits.source(addr)) {
            let count = e.get_mut();
            if handshaking {
                count.half_open = count.half_open.saturating_sub(1);
            }
            count.total = count.total.saturating_sub(1);
            if count.total == 0 {
                e.remove();
            }
        }
        if announce {
            self.queue.push_back(Queued {
                output: Output::Closed { peer: addr },
                owner: 0,
            });
        }
    }
}

/// Queues what the session wrote as `Transmit` outputs (counted).
fn flush_outbox(queue: &mut VecDeque<Queued>, peer: &mut Peer, to: SocketAddr) {
    let Peer {
        id,
        stream,
        pending,
        ..
    } = peer;
    for data in stream.get_mut().outbox.drain(..) {
        push_counted_parts(queue, *id, pending, Output::Transmit { to, data });
    }
}

/// Queues a `Transmit`/`Data` output of `peer` unless its share or the
/// whole queue is full (then it is dropped, like a lost datagram).
fn push_counted(queue: &mut VecDeque<Queued>, peer: &mut Peer, output: Output) -> bool {
    push_counted_parts(queue, peer.id, &mut peer.pending, output)
}

fn push_counted_parts(
    queue: &mut VecDeque<Queued>,
    owner: u64,
    pending: &mut usize,
    output: Output,
) -> bool {
    if *pending >= PER_PEER_OUTPUT_CAP || queue.len() >= QUEUE_CAP {
        return false;
    }
    *pending += 1;
    queue.push_back(Queued { output, owner });
    true
}

impl fmt::Debug for DtlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsServer")
            .field("sessions", &self.sessions())
            .field("half_open", &self.half_open)
            .field("queued_outputs", &self.queue.len())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>() {}

    #[test]
    fn server_is_send() {
        assert_send::<DtlsServer>();
    }
}
