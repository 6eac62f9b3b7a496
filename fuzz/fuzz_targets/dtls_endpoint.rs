//! The DTLS endpoint (`turnpike_dtls::DtlsServer`, through its `Sessions`
//! trait) driven by real clients whose datagrams the fuzzer loses,
//! duplicates, truncates and mutates, by raw datagrams, and by the clock.
//!
//! Getting past the cookie exchange is the point: three in-process OpenSSL
//! DTLS 1.2 clients (one offering the TURN ALPN, one none, one only a
//! protocol the server refuses) run real handshakes, so their second
//! ClientHello carries a cookie the server made; a mutation of that
//! datagram's other bytes reaches OpenSSL's ClientHello parsing, and later
//! flights, records and alerts reach the established session. Two more
//! sources send only raw bytes. The server's certificate and key are made
//! once per process (`OnceLock`); its limits are small so the input reaches
//! them. (OpenSSL's handshake randomness is not the fuzzer's: an input
//! fixes the datagrams' fates, not their bytes.)
//!
//! Checked after every step:
//!
//! - no panic (implicitly);
//! - no state before a valid cookie: until a source has sent back a cookie
//!   the server gave that very address, the server sends it nothing but
//!   HelloVerifyRequests, no larger than the datagram that caused them, and
//!   has no session for it; sessions and handshakes never outnumber the
//!   sources that proved their address;
//! - sessions bounded: within the configured caps; at most `QUEUE_CAP`
//!   outputs per step; handshake datagrams within the MTU, records within
//!   2^14 bytes of plaintext;
//! - integrity: application data is delivered only from an established
//!   session, and only as the client wrote it (and, the other way, a client
//!   reads only what the server was asked to send it);
//! - the timer, once fired, is not due again at the same instant;
//! - at the end, once every deadline has passed, nothing is left.
//!
//! Violations panic with a message starting `invariant:`; the harness
//! itself never panics (what it cannot set up, it skips).

#![no_main]

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use openssl::asn1::Asn1Time;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions, SslStream, SslVerifyMode,
    SslVersion,
};
use openssl::x509::{X509, X509Name};
use turnpike_dtls::{DtlsConfig, DtlsServer, MIN_MTU, Output, QUEUE_CAP, Sessions};

/// Operations per input.
const MAX_OPS: usize = 48;
/// Small caps, so that the fuzzer reaches them.
const MAX_HALF_OPEN_TOTAL: usize = 3;
const MAX_HALF_OPEN_PER_IP: usize = 2;
const MAX_SESSIONS_PER_IP: usize = 2;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// One record: a header, an explicit nonce, 2^14 bytes of plaintext and
/// the AEAD tag (RFC 6347 §4.1, RFC 5288).
const MAX_RECORD: usize = 13 + 8 + 16_384 + 16;
/// Content type and handshake type of a HelloVerifyRequest.
const HANDSHAKE: u8 = 22;
const HELLO_VERIFY_REQUEST: u8 = 3;
/// Where a HelloVerifyRequest's cookie starts: the record header (13), the
/// handshake header (12), server_version (2), the cookie's length (1).
const HVR_COOKIE_AT: usize = 13 + 12 + 2 + 1;

/// Panics with a message that tells a finding from a harness problem.
macro_rules! violated {
    ($($arg:tt)*) => { panic!("invariant: {}", format_args!($($arg)*)) };
}

fn addr(s: &str) -> SocketAddr {
    // The literals below are valid addresses; a typo fails every input at
    // once, not as a finding.
    s.parse()
        .unwrap_or_else(|_| unreachable!("harness address {s}"))
}

/// Where datagrams come from: the three clients (two sharing an IPv4
/// address, for the per-IP caps), then two raw sources (one in the IPv6
/// client's /64, counted with it).
fn sources() -> [SocketAddr; 5] {
    [
        addr("198.51.100.1:5000"),
        addr("198.51.100.1:5001"),
        addr("[2001:db8::1]:5000"),
        addr("198.51.100.2:6000"),
        addr("[2001:db8::2]:6000"),
    ]
}
const CLIENTS: usize = 3;

// ---------------------------------------------------------------------------
// The input.

#[derive(Arbitrary, Debug)]
struct Input {
    /// The handshake MTU: 256 (heavy fragmentation), 512 or 1200.
    mtu: u8,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// The server's datagrams so far reach the client (unless `lost`); the
    /// client runs its handshake (or reads), and what it writes goes out
    /// with the `fates` (in order; the rest are delivered as they are).
    Exchange {
        client: u8,
        lost: Loss,
        fates: Vec<Fate>,
    },
    /// An established client writes application data.
    ClientWrites {
        client: u8,
        data: Vec<u8>,
    },
    /// The server encrypts data for a client.
    ServerSends {
        client: u8,
        data: Vec<u8>,
    },
    /// A client sends close_notify.
    ClientShutdown {
        client: u8,
    },
    /// A client starts over from the same address (a new ClientHello
    /// random: the server replaces the session once the cookie is valid).
    ClientRestarts {
        client: u8,
    },
    /// The server ends a session.
    ServerCloses {
        source: u8,
    },
    /// A datagram of raw bytes from any source.
    Raw {
        source: u8,
        bytes: Vec<u8>,
    },
    /// The last datagram a client sent, from another source (a spoofer
    /// replaying it, cookie and all).
    Replay {
        client: u8,
        source: u8,
    },
    Advance(Advance),
}

/// Which of the server's pending datagrams a client loses: with the high
/// bit set, the `i`-th (modulo 7) if bit `i` is; otherwise none.
#[derive(Arbitrary, Debug, Clone, Copy)]
struct Loss(u8);

impl Loss {
    fn loses(self, i: usize) -> bool {
        self.0 & 0x80 != 0 && self.0 & (1 << (i % 7)) != 0
    }
}

#[derive(Arbitrary, Debug, Clone)]
enum Fate {
    Deliver,
    Lose,
    Duplicate,
    /// XOR a byte (at an offset modulo the length).
    Flip(u16, u8),
    Truncate(u16),
    /// Bytes added at the end (a second record, say).
    Append(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Advance {
    Millis(u16),
    /// Past retransmission timers, handshake and idle timeouts, cookie
    /// periods.
    Seconds(u8),
}

impl Advance {
    fn duration(&self) -> Duration {
        match self {
            Advance::Millis(ms) => Duration::from_millis(u64::from(*ms)),
            Advance::Seconds(s) => Duration::from_secs(u64::from(*s)),
        }
    }
}

// ---------------------------------------------------------------------------
// Certificates and the client side, made once.

struct Identity {
    chain_pem: Vec<u8>,
    key_pem: Vec<u8>,
    client: SslContext,
}

/// The server's certificate and key (ECDSA P-256, self-signed) and the
/// clients' context, or `None` if OpenSSL cannot make them (then every
/// input is skipped: that is no finding about the server).
fn identity() -> Option<&'static Identity> {
    static IDENTITY: OnceLock<Option<Identity>> = OnceLock::new();
    IDENTITY.get_or_init(|| make_identity().ok()).as_ref()
}

fn make_identity() -> Result<Identity, openssl::error::ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let key = PKey::from_ec_key(EcKey::generate(&group)?)?;
    let mut name = X509Name::builder()?;
    name.append_entry_by_text("CN", "fuzz.turnpike.invalid")?;
    let name = name.build();
    let mut cert = X509::builder()?;
    cert.set_version(2)?;
    cert.set_subject_name(&name)?;
    cert.set_issuer_name(&name)?;
    cert.set_pubkey(&key)?;
    cert.set_not_before(&*Asn1Time::days_from_now(0)?)?;
    cert.set_not_after(&*Asn1Time::days_from_now(30)?)?;
    cert.sign(&key, MessageDigest::sha256())?;
    let cert = cert.build();

    let mut client = SslContextBuilder::new(SslMethod::dtls_client())?;
    client.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
    client.set_options(SslOptions::NO_QUERY_MTU);
    // Whom the client trusts is not under test; the server's handshake is.
    client.set_verify(SslVerifyMode::NONE);
    Ok(Identity {
        chain_pem: cert.to_pem()?,
        key_pem: key.private_key_to_pem_pkcs8()?,
        client: client.build(),
    })
}

/// A client's end of the datagram pipe.
#[derive(Debug, Default)]
struct Pipe {
    inbox: VecDeque<Vec<u8>>,
    outbox: Vec<Vec<u8>>,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(datagram) = self.inbox.pop_front() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let n = datagram.len().min(buf.len());
        buf[..n].copy_from_slice(&datagram[..n]);
        Ok(n)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outbox.push(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Client {
    stream: SslStream<Pipe>,
    /// The handshake finished on the client's side.
    done: bool,
    /// OpenSSL gave up on this session; it stays silent until restarted.
    failed: bool,
}

/// ALPN offers: the TURN one, none, and one the server refuses.
const ALPN: [Option<&[u8]>; CLIENTS] = [Some(b"\x09stun.turn"), None, Some(b"\x02h2")];

impl Client {
    fn new(identity: &Identity, index: usize) -> Option<Client> {
        let mut ssl = Ssl::new(&identity.client).ok()?;
        ssl.set_connect_state();
        ssl.set_mtu(1200).ok()?;
        if let Some(protos) = ALPN[index] {
            ssl.set_alpn_protos(protos).ok()?;
        }
        let stream = SslStream::new(ssl, Pipe::default()).ok()?;
        Some(Client {
            stream,
            done: false,
            failed: false,
        })
    }

    /// Runs the handshake, or reads what arrived once it is done; returns
    /// the application data read.
    fn step(&mut self) -> Vec<Vec<u8>> {
        let mut read = Vec::new();
        if self.failed {
            return read;
        }
        if !self.done {
            match self.stream.do_handshake() {
                Ok(()) => self.done = true,
                Err(e) if e.code() == ErrorCode::WANT_READ => return read,
                Err(_) => {
                    self.failed = true;
                    return read;
                }
            }
        }
        let mut buf = vec![0; 16_384];
        loop {
            match self.stream.ssl_read(&mut buf) {
                Ok(n) => read.push(buf[..n].to_vec()),
                Err(e) if e.code() == ErrorCode::WANT_READ => return read,
                Err(e) if e.code() == ErrorCode::ZERO_RETURN => return read,
                Err(_) => {
                    self.failed = true;
                    return read;
                }
            }
        }
    }

    fn take(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.stream.get_mut().outbox)
    }
}

// ---------------------------------------------------------------------------
// The harness.

struct Harness {
    /// Driven through [`Sessions`], the runtime's view of it (see
    /// [`Harness::endpoint`]); its own counters are read directly.
    server: DtlsServer,
    identity: &'static Identity,
    clients: Vec<Client>,
    sources: [SocketAddr; 5],
    now: Instant,
    mtu: usize,
    /// Server datagrams not yet delivered, per client.
    to_client: [Vec<Vec<u8>>; CLIENTS],
    /// Each client's last datagram.
    last_sent: [Option<Vec<u8>>; CLIENTS],
    /// Cookies the server gave each address.
    cookies: HashMap<SocketAddr, Vec<Vec<u8>>>,
    /// Addresses that sent back a cookie the server gave them.
    proven: HashSet<SocketAddr>,
    established: HashSet<SocketAddr>,
    /// What each client wrote, and what the server was asked to send each.
    written: HashMap<SocketAddr, HashSet<Vec<u8>>>,
    sent: [HashSet<Vec<u8>>; CLIENTS],
}

impl Harness {
    fn new(mtu: u8) -> Option<Harness> {
        let identity = identity()?;
        let mtu = [MIN_MTU, 512, 1200][usize::from(mtu % 3)];
        let mut config = DtlsConfig::new(
            identity.chain_pem.clone(),
            identity.key_pem.clone(),
            [3; 32],
        );
        config.max_half_open_total = MAX_HALF_OPEN_TOTAL;
        config.max_half_open_per_ip = MAX_HALF_OPEN_PER_IP;
        config.max_sessions_per_ip = MAX_SESSIONS_PER_IP;
        config.max_handshakes_per_ip_per_second = 4;
        config.handshake_timeout = HANDSHAKE_TIMEOUT;
        config.idle_timeout = IDLE_TIMEOUT;
        config.mtu = mtu;
        let server = DtlsServer::new(config).ok()?;
        let clients = (0..CLIENTS)
            .map(|i| Client::new(identity, i))
            .collect::<Option<Vec<_>>>()?;
        Some(Harness {
            server,
            identity,
            clients,
            sources: sources(),
            now: Instant::now(),
            mtu,
            to_client: Default::default(),
            last_sent: Default::default(),
            cookies: HashMap::new(),
            proven: HashSet::new(),
            established: HashSet::new(),
            written: HashMap::new(),
            sent: Default::default(),
        })
    }

    fn endpoint(&mut self) -> &mut dyn Sessions {
        &mut self.server
    }

    fn run(&mut self, op: &Op) {
        match op {
            Op::Exchange {
                client,
                lost,
                fates,
            } => {
                let c = usize::from(*client) % CLIENTS;
                let inbox = std::mem::take(&mut self.to_client[c]);
                let pipe = self.clients[c].stream.get_mut();
                for (i, datagram) in inbox.into_iter().enumerate() {
                    if !lost.loses(i) {
                        pipe.inbox.push_back(datagram);
                    }
                }
                for data in self.clients[c].step() {
                    if !self.sent[c].contains(&data) {
                        violated!(
                            "client {c} read {data:02x?}, which the server was not asked to send it"
                        );
                    }
                }
                self.client_sends(c, fates);
            }
            Op::ClientWrites { client, data } => {
                let c = usize::from(*client) % CLIENTS;
                let client = &mut self.clients[c];
                if client.done && !client.failed && !data.is_empty() {
                    if client.stream.ssl_write(data).is_err() {
                        client.failed = true;
                    }
                    self.written
                        .entry(self.sources[c])
                        .or_default()
                        .insert(data.clone());
                    self.client_sends(c, &[]);
                }
            }
            Op::ServerSends { client, data } => {
                let c = usize::from(*client) % CLIENTS;
                let to = self.sources[c];
                let now = self.now;
                let result = self.endpoint().send(now, to, data);
                if result.is_ok() && !data.is_empty() {
                    if !self.established.contains(&to) {
                        violated!("send to {to} succeeded without an established session");
                    }
                    self.sent[c].insert(data.clone());
                }
                self.drain(None);
            }
            Op::ClientShutdown { client } => {
                let c = usize::from(*client) % CLIENTS;
                if self.clients[c].done && !self.clients[c].failed {
                    let _ = self.clients[c].stream.shutdown();
                    self.client_sends(c, &[]);
                }
            }
            Op::ClientRestarts { client } => {
                let c = usize::from(*client) % CLIENTS;
                if let Some(fresh) = Client::new(self.identity, c) {
                    self.clients[c] = fresh;
                    self.to_client[c].clear();
                }
            }
            Op::ServerCloses { source } => {
                let peer = self.sources[usize::from(*source) % self.sources.len()];
                self.endpoint().close(peer);
                self.established.remove(&peer);
                self.drain(None);
            }
            Op::Raw { source, bytes } => {
                let from = self.sources[usize::from(*source) % self.sources.len()];
                self.datagram(from, bytes);
            }
            Op::Replay { client, source } => {
                let c = usize::from(*client) % CLIENTS;
                let from = self.sources[usize::from(*source) % self.sources.len()];
                if let Some(datagram) = self.last_sent[c].clone() {
                    self.datagram(from, &datagram);
                }
            }
            Op::Advance(by) => self.advance(by.duration()),
        }
        self.check_counts();
    }

    /// Sends what client `c` wrote, each datagram with its fate.
    fn client_sends(&mut self, c: usize, fates: &[Fate]) {
        let from = self.sources[c];
        let datagrams = self.clients[c].take();
        for (i, datagram) in datagrams.into_iter().enumerate() {
            self.last_sent[c] = Some(datagram.clone());
            match fates.get(i).cloned().unwrap_or(Fate::Deliver) {
                Fate::Deliver => self.datagram(from, &datagram),
                Fate::Lose => {}
                Fate::Duplicate => {
                    self.datagram(from, &datagram);
                    self.datagram(from, &datagram);
                }
                Fate::Flip(at, xor) => {
                    let mut d = datagram;
                    let len = d.len();
                    if let Some(b) = d.get_mut(usize::from(at) % len.max(1)) {
                        *b ^= xor;
                    }
                    self.datagram(from, &d);
                }
                Fate::Truncate(to) => {
                    let len = usize::from(to) % datagram.len().max(1);
                    self.datagram(from, &datagram[..len]);
                }
                Fate::Append(extra) => {
                    let mut d = datagram;
                    d.extend_from_slice(&extra);
                    self.datagram(from, &d);
                }
            }
        }
    }

    /// One datagram to the server, and what it answers.
    fn datagram(&mut self, from: SocketAddr, data: &[u8]) {
        let echoes_cookie = self
            .cookies
            .get(&from)
            .is_some_and(|cookies| cookies.iter().any(|c| contains(data, c)));
        if echoes_cookie {
            self.proven.insert(from);
        }
        let now = self.now;
        self.endpoint().handle_datagram(now, from, data);
        self.drain(Some(data.len()));
    }

    /// Drains the server's outputs. `input`: the length of the datagram
    /// that caused them, which bounds a HelloVerifyRequest.
    fn drain(&mut self, input: Option<usize>) {
        for _ in 0..=QUEUE_CAP {
            let Some(output) = self.endpoint().poll_output() else {
                return;
            };
            match output {
                Output::Transmit { to, data } => self.on_transmit(to, data, input),
                Output::Data { from, data } => {
                    if !self.established.contains(&from) {
                        violated!("data from {from}, which has no established session");
                    }
                    if !self.written.get(&from).is_some_and(|w| w.contains(&data)) {
                        violated!("data from {from} that it never wrote: {data:02x?}");
                    }
                }
                Output::Established { peer } => {
                    if !self.proven.contains(&peer) {
                        violated!("{peer} established without returning a cookie");
                    }
                    self.established.insert(peer);
                }
                Output::Closed { peer } => {
                    self.established.remove(&peer);
                }
            }
        }
        violated!("more than QUEUE_CAP outputs at once");
    }

    fn on_transmit(&mut self, to: SocketAddr, data: Vec<u8>, input: Option<usize>) {
        let hvr = data.first() == Some(&HANDSHAKE) && data.get(13) == Some(&HELLO_VERIFY_REQUEST);
        if hvr {
            if input.is_none_or(|len| data.len() > len) {
                violated!(
                    "a {}-byte HelloVerifyRequest for {input:?} bytes",
                    data.len()
                );
            }
            if let Some(cookie) = data.get(HVR_COOKIE_AT..) {
                let cookies = self.cookies.entry(to).or_default();
                // A handful per address is plenty: they change every 30 s.
                if cookies.len() < 16 && !cookies.iter().any(|c| c == cookie) {
                    cookies.push(cookie.to_vec());
                }
            }
        } else {
            if !self.proven.contains(&to) {
                violated!(
                    "{} bytes to {to}, which never returned a cookie",
                    data.len()
                );
            }
            if data.len() > self.mtu.max(MAX_RECORD) {
                violated!("a {}-byte datagram (MTU {})", data.len(), self.mtu);
            }
        }
        if let Some(c) = self.sources[..CLIENTS].iter().position(|s| *s == to) {
            self.to_client[c].push(data);
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        let now = self.now;
        if Sessions::poll_timeout(&self.server).is_some_and(|t| t <= now) {
            self.endpoint().handle_timeout(now);
            self.drain(None);
            if Sessions::poll_timeout(&self.server).is_some_and(|t| t <= now) {
                violated!("the timer is due again right after it fired");
            }
        }
    }

    /// Sessions and handshakes against the sources that proved their
    /// address, and the caps.
    fn check_counts(&self) {
        let (sessions, half_open) = (self.server.sessions(), self.server.half_open());
        if sessions + half_open > self.proven.len() {
            violated!(
                "{sessions} sessions and {half_open} handshakes for {} proven sources",
                self.proven.len()
            );
        }
        if self.proven.is_empty() && Sessions::poll_timeout(&self.server).is_some() {
            violated!("a timer, but no source ever returned a cookie");
        }
        if half_open > MAX_HALF_OPEN_TOTAL || sessions != self.established.len() {
            violated!(
                "{half_open} handshakes, {sessions} sessions ({} announced)",
                self.established.len()
            );
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fuzz_target!(|input: Input| {
    let Some(mut harness) = Harness::new(input.mtu) else {
        return;
    };
    for op in input.ops.iter().take(MAX_OPS) {
        harness.run(op);
    }
    // Every deadline passed: nothing may remain.
    harness.advance(Duration::from_secs(86_400));
    let server = &harness.server;
    let left = (
        server.sessions(),
        server.half_open(),
        Sessions::poll_timeout(server),
    );
    if left != (0, 0, None) {
        violated!("state left after every deadline: {left:?}");
    }
});
