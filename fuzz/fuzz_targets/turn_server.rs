//! The sans-IO TURN server (`turnpike_core::Server`) driven the way a shell
//! drives it, with invariants checked after every step.
//!
//! The input decodes (through `arbitrary`) into a sequence of operations:
//! a client (five fixed 5-tuples: UDP, TCP and DTLS, IPv4 and IPv6, two
//! sharing an address) sends a request built from structured fields
//! (Allocate, Refresh, CreatePermission, ChannelBind, Connect,
//! ConnectionBind, Binding, or an unknown method) signed like a real client
//! (the long-term key of a known user and the nonce the server last gave
//! that client, most of the time), a Send indication, ChannelData, a
//! mutated request or raw bytes; a peer sends a datagram to a relayed
//! address or connects to a TCP relay; the clock advances (firing the
//! core's timer when it is due, as a shell does); a pending credential
//! lookup completes (found, wrong keys, not found, unavailable); a
//! connection closes; the shard starts or stops draining.
//!
//! After every step the harness drains `poll_output`, acting on the events
//! as the shell would (relay sockets, lookups, RFC 6062 connections), and
//! checks:
//!
//! - no panic (implicitly);
//! - relayed addresses: each live allocation's relays are bound, no two
//!   allocations share one, every socket a `ReleaseRelay` closes was bound,
//!   and the allocations the server lists are exactly those its accounting
//!   events announced and did not end;
//! - permissions: every datagram to a peer, every peer datagram delivered to
//!   a client, every RFC 6062 connection a peer opens, and every fast-path
//!   route's lifetime is covered by a permission the harness's own model
//!   holds (a connection the core opens needs none, RFC 6062 §5.2: it must
//!   leave a live TCP allocation for a peer the policy allows). The model installs permissions from the success
//!   answers to CreatePermission and ChannelBind requests it sent (for the
//!   peers the request named, for the configured lifetime from the answer's
//!   time) and forgets an allocation's when its end is announced. The
//!   model's expiry is exact, so the boundary instant is allowed and
//!   nothing beyond;
//! - channels: every channel the server lists was bound by a ChannelBind
//!   it answered with success, and has not outlived that answer's
//!   lifetime (an error answer changes no binding);
//! - memory: allocations within the total and per-user quotas,
//!   permissions and channels per allocation within their limits, peer
//!   connections within theirs, a bounded number of outputs per step, and
//!   a timer that, once fired, is not due again at the same instant (a
//!   shell would spin);
//! - every message sent to a client parses, and goes to a 5-tuple a client
//!   used.
//!
//! Violations panic with a message starting `invariant:`; the harness
//! itself never panics (what it cannot build, it skips).

#![no_main]

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use turnpike_codec::attr::{PasswordAlgorithm, PasswordAlgorithms, password_algorithm, protocol};
use turnpike_codec::integrity::{long_term_key_md5, long_term_key_sha256};
use turnpike_codec::{
    AddressFamily, AttrType, Attribute, ChannelData, Class, Message, MessageBuilder, MessageType,
    Method, Sha1Key, Sha256Key, TransactionId,
};
use turnpike_core::output::AllocationRecord;
use turnpike_core::{
    Config, ConnectionId, Destination, Draining, Event, FiveTuple, Lookup, NonceKey, Output,
    Packet, PeerPolicy, PeerSocket, RelayBinder, RelayOptions, RelayProtocol, RelayedAddress,
    Server, Shard, Transport, TurnConfig, UserKeys,
};

const REALM: &str = "turnpike.fuzz";
/// `alice` is a static user; `bob` is looked up (and exists); `carol` is
/// looked up and, in the store's truth, does not exist.
const USERS: [(&str, &str); 3] = [
    ("alice", "wonderland"),
    ("bob", "builder"),
    ("carol", "christmas"),
];
const SERVER_V4: &str = "192.0.2.10:3478";
const SERVER_V6: &str = "[2001:db8::10]:3478";
const SERVER_DTLS: &str = "192.0.2.10:5349";

/// Small limits, so that the fuzzer reaches them.
const TOTAL_QUOTA: usize = 4;
const USER_QUOTA: u32 = 2;
const MAX_PERMISSIONS: usize = 2;
const MAX_CHANNELS: usize = 3;
const MAX_CONNECTIONS: usize = 4;
/// Twelve relay ports: ports run out and collide.
const MIN_PORT: u16 = 50_000;
const MAX_PORT: u16 = 50_011;
const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);

/// Operations per input: enough for an allocation's life, few enough to
/// keep executions fast.
const MAX_OPS: usize = 64;
/// Outputs one input may cause: the held requests a lookup releases
/// (at most 256 per shard), each with an answer and a few events, and an
/// allocation's deletion (its relays, routes, connections). Past this the
/// queues are not bounded.
const MAX_OUTPUTS_PER_STEP: usize = 2048;
/// Timer firings one clock advance may cause. The sweep runs each second
/// while anything lives: an allocation at most its 3600 s maximum lifetime
/// (nothing refreshes it during an advance), lookups and connections less;
/// deadlines fire between. Twice that is generous; a loop past it is a
/// timer that never settles.
const MAX_FIRINGS_PER_ADVANCE: usize = 2 * 3600;

/// The 5-tuples clients use: index 1 shares index 0's address (per-source
/// budgets), index 4 is a second TCP connection of index 2's host (a data
/// connection for ConnectionBind).
fn clients() -> [FiveTuple; 5] {
    let tuple = |transport, client: &str, server: &str| FiveTuple {
        transport,
        client: addr(client),
        server: addr(server),
    };
    [
        tuple(Transport::Udp, "198.51.100.20:40000", SERVER_V4),
        tuple(Transport::Udp, "198.51.100.20:40001", SERVER_V4),
        tuple(Transport::Tcp, "[2001:db8:2::20]:40000", SERVER_V6),
        tuple(Transport::Dtls, "198.51.100.30:40000", SERVER_DTLS),
        tuple(Transport::Tcp, "[2001:db8:2::20]:40002", SERVER_V6),
    ]
}

/// Peers: two ports of one IP (permissions are per IP), another IPv4 and
/// an IPv6 peer, and two the peer policy refuses (the server's own socket,
/// loopback), which must never be reached.
fn peers() -> [SocketAddr; 6] {
    [
        addr("93.184.216.34:6000"),
        addr("93.184.216.34:6001"),
        addr("93.184.216.35:6000"),
        addr("[2606:2800:220:1::1]:6000"),
        addr(SERVER_V4),
        addr("127.0.0.1:6000"),
    ]
}

/// Indexes in [`peers`] of those the peer policy refuses.
const FORBIDDEN: [Option<usize>; 2] = [Some(4), Some(5)];

fn addr(s: &str) -> SocketAddr {
    // The literals above are valid addresses; a typo fails every input at
    // once, not as a finding.
    s.parse()
        .unwrap_or_else(|_| unreachable!("harness address {s}"))
}

/// Panics with a message that tells a finding from a harness problem.
macro_rules! violated {
    ($($arg:tt)*) => { panic!("invariant: {}", format_args!($($arg)*)) };
}

// ---------------------------------------------------------------------------
// The input.

/// An operation, after the clock moved by `wait` (see [`wait`]): every
/// step can let time pass, so lifetimes lapse without the fuzzer having to
/// insert an [`Op::Advance`] at the right place.
#[derive(Arbitrary, Debug)]
struct Step {
    wait: u8,
    op: Op,
}

/// Half the steps happen at once; the others after up to 6.4 s (a
/// retransmission, a sweep), in multiples of 15 s up to 12 min (which land
/// exactly on the 300 s and 600 s lifetimes), or in multiples of 5 min up
/// to 80 min.
fn wait(byte: u8) -> Duration {
    match byte {
        0..=127 => Duration::ZERO,
        128..=191 => Duration::from_millis(100 * u64::from(byte - 127)),
        192..=239 => Duration::from_secs(15 * u64::from(byte - 191)),
        240..=255 => Duration::from_secs(300 * u64::from(byte - 239)),
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Request(Request),
    /// The client's last request again, byte for byte (a retransmission).
    Retransmit {
        client: u8,
    },
    /// A request with some bytes changed after it was signed.
    Mutated {
        request: Request,
        flips: Vec<(u16, u8)>,
    },
    Raw {
        client: u8,
        bytes: Vec<u8>,
    },
    Indication {
        client: u8,
        peer: u8,
        data: Payload,
        dont_fragment: bool,
    },
    ChannelData {
        client: u8,
        channel: u8,
        data: Payload,
    },
    PeerSends {
        peer: u8,
        relay: u8,
        data: Payload,
    },
    PeerConnects {
        peer: u8,
        relay: u8,
    },
    /// The shell's report on a connection it was asked to open.
    ConnectFinished {
        which: u8,
        established: bool,
    },
    /// A peer connection (or its data connection) closed in the shell.
    PeerConnectionClosed {
        which: u8,
    },
    /// A client's connection (TCP, DTLS) closed.
    ClientClosed {
        client: u8,
    },
    /// The clock moves by a number of milliseconds: finer than
    /// [`Step::wait`], for instants between its steps.
    Advance {
        millis: u16,
    },
    Lookup {
        which: u8,
        verdict: Verdict,
        valid_secs: u8,
    },
    ForgetUnavailable,
    Drain(bool),
}

#[derive(Arbitrary, Debug)]
struct Request {
    client: u8,
    method: MethodPick,
    /// First, so that they win over the defaults the harness adds (the
    /// core takes the first of a repeated attribute).
    attrs: Vec<AttrPick>,
    /// Leave out the attributes the method needs (REQUESTED-TRANSPORT,
    /// XOR-PEER-ADDRESS, CHANNEL-NUMBER) unless `attrs` has them.
    bare: bool,
    auth: Auth,
    fingerprint: bool,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum MethodPick {
    Allocate,
    Refresh,
    CreatePermission,
    ChannelBind,
    Connect,
    ConnectionBind,
    Binding,
    Other(u16),
}

#[derive(Arbitrary, Debug)]
enum AttrPick {
    /// UDP (`false`) or TCP (`true`).
    Transport(bool),
    TransportCode(u8),
    Lifetime(u32),
    /// LIFETIME 0: a Refresh deletes the allocation.
    Delete,
    Peer(u8),
    /// 0x4000 plus a small number: a few channels, reused.
    Channel(u8),
    ChannelRaw(u16),
    DontFragment,
    EvenPort(bool),
    /// A RESERVATION-TOKEN the server gave, or made up.
    Token(u8),
    /// REQUESTED-ADDRESS-FAMILY IPv6 (`true`) or IPv4.
    Family(bool),
    AdditionalFamily(bool),
    /// A CONNECTION-ID the server gave, or made up.
    ConnectionId(u8),
    Data(Vec<u8>),
    Unknown(u16, Vec<u8>),
}

/// How a request is signed, out of 16: as the client's own user
/// ([`user_of`]) with MD5/HMAC-SHA1, the right password and the nonce it
/// was given (11), the same with SHA-256 as RFC 8489 offers it (1), as
/// `other` of the users (1), without integrity (1), with a wrong password
/// (1), with a nonce the server never gave (1).
#[derive(Arbitrary, Debug, Clone, Copy)]
struct Auth {
    mode: u8,
    other: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signing {
    Sha1,
    Sha256,
    None,
    WrongPassword,
    WrongNonce,
}

impl Auth {
    fn signing(self) -> Signing {
        match self.mode % 16 {
            0..=11 => Signing::Sha1,
            12 => Signing::Sha256,
            13 => Signing::None,
            14 => Signing::WrongPassword,
            _ => Signing::WrongNonce,
        }
    }

    /// Whose credentials sign a request from `client`.
    fn user(self, client: usize) -> (&'static str, &'static str) {
        if self.mode % 16 == 11 {
            USERS[usize::from(self.other) % USERS.len()]
        } else {
            USERS[user_of(client)]
        }
    }
}

/// Each client has a user of its own, as real clients do, so the fuzzer
/// need not match users between the requests of one allocation: the two
/// UDP clients and the DTLS one are alice (static), the TCP host is bob
/// (looked up). Other users come through [`Auth::user`].
fn user_of(client: usize) -> usize {
    [0, 0, 1, 0, 1][client % 5]
}

#[derive(Arbitrary, Debug)]
enum Payload {
    Bytes(Vec<u8>),
    /// `len` copies of a byte: large datagrams without large inputs.
    Filled(u16, u8),
}

impl Payload {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Payload::Bytes(b) => b.clone(),
            Payload::Filled(len, byte) => vec![*byte; usize::from(*len)],
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Verdict {
    /// The store's truth: the right keys for alice and bob, not found for
    /// anyone else.
    Truth,
    WrongKeys,
    NotFound,
    Unavailable,
}

// ---------------------------------------------------------------------------
// The fake shell's relay sockets.

#[derive(Debug, Default)]
struct Sockets {
    bound: HashSet<(RelayProtocol, SocketAddr)>,
    /// EVEN-PORT reservations: bound, owned by no allocation until taken.
    reserved: HashMap<[u8; 8], SocketAddr>,
}

#[derive(Clone, Default)]
struct Binder(Rc<RefCell<Sockets>>);

impl RelayBinder for Binder {
    fn bind(&mut self, relay: RelayedAddress, options: RelayOptions) -> io::Result<()> {
        if self
            .0
            .borrow_mut()
            .bound
            .insert((options.protocol, relay.0))
        {
            Ok(())
        } else {
            Err(io::ErrorKind::AddrInUse.into())
        }
    }

    fn reserve(&mut self, relay: RelayedAddress, token: [u8; 8], _: Instant) -> io::Result<()> {
        let mut sockets = self.0.borrow_mut();
        if !sockets.bound.insert((RelayProtocol::Udp, relay.0)) {
            return Err(io::ErrorKind::AddrInUse.into());
        }
        sockets.reserved.insert(token, relay.0);
        Ok(())
    }

    fn take_reserved(
        &mut self,
        token: [u8; 8],
        _: Instant,
        _: RelayOptions,
    ) -> Option<RelayedAddress> {
        self.0
            .borrow_mut()
            .reserved
            .remove(&token)
            .map(RelayedAddress)
    }
}

// ---------------------------------------------------------------------------
// The harness: a shell around the server, and a model of what it promised.

/// What a CreatePermission or ChannelBind asks for, as the core reads it.
#[derive(Debug, Default)]
struct Asked {
    /// Peer IPs to permit: every XOR-PEER-ADDRESS of a CreatePermission,
    /// the first of a ChannelBind.
    ips: Vec<IpAddr>,
    /// A ChannelBind's first CHANNEL-NUMBER and first XOR-PEER-ADDRESS.
    channels: Vec<(u16, SocketAddr)>,
}

struct Harness {
    server: Server,
    sockets: Binder,
    clients: [FiveTuple; 5],
    peers: [SocketAddr; 6],
    now: Instant,
    timeout: Option<Instant>,
    /// The output buffer, as large as the shell's.
    out: Vec<u8>,
    next_tid: u64,
    /// Per client: the nonce the server last gave it, the
    /// PASSWORD-ALGORITHMS it came with (the attribute's value), its last
    /// request.
    nonces: [Option<String>; 5],
    algorithms: [Option<Vec<u8>>; 5],
    last_request: [Option<Vec<u8>>; 5],
    /// CreatePermission and ChannelBind requests sent, by transaction ID:
    /// what a success installs (a union if the fuzzer reuses an ID).
    asked: HashMap<TransactionId, Asked>,
    /// Live allocations as the accounting events announced them.
    allocations: HashMap<u64, AllocationRecord>,
    /// The model's permissions, by allocation 5-tuple: peer IP → expiry.
    permissions: HashMap<FiveTuple, HashMap<IpAddr, Instant>>,
    /// The model's channels, by allocation 5-tuple: (number, peer) →
    /// expiry.
    channels: HashMap<FiveTuple, HashMap<(u16, SocketAddr), Instant>>,
    /// Usernames the server asked the shell to look up.
    lookups: Vec<Box<str>>,
    /// RFC 6062: connections the core asked to open, connections open.
    opening: Vec<ConnectionId>,
    open: Vec<ConnectionId>,
    /// RESERVATION-TOKENs and CONNECTION-IDs the server gave out.
    tokens: Vec<[u8; 8]>,
    connection_ids: Vec<u32>,
}

impl Harness {
    fn new() -> Harness {
        let now = Instant::now();
        let sockets = Binder::default();
        let nonces = NonceKey::new(&[7; 32], now, Duration::from_secs(600));
        let policy = PeerPolicy::new(
            vec![],
            vec![],
            vec![addr(SERVER_V4), addr(SERVER_V6), addr(SERVER_DTLS)],
            vec![],
        );
        let mut turn = TurnConfig::new(REALM, nonces, policy);
        turn.relay_ips = vec![addr(SERVER_V4).ip(), addr(SERVER_V6).ip()];
        turn.min_port = MIN_PORT;
        turn.max_port = MAX_PORT;
        turn.total_quota = TOTAL_QUOTA;
        turn.user_quota = USER_QUOTA;
        turn.max_permissions = MAX_PERMISSIONS;
        turn.max_channels = MAX_CHANNELS;
        turn.max_connections = MAX_CONNECTIONS;
        turn.max_connections_per_allocation = 2;
        turn.permission_lifetime = PERMISSION_LIFETIME;
        turn.channel_lifetime = CHANNEL_LIFETIME;
        turn.channel_routes = true;
        let config = Config {
            software: Some("fuzz".into()),
            turn: Some(turn),
            ..Config::default()
        };
        let mut server = Server::with_relays(
            Arc::new(config),
            Shard::default(),
            Box::new(sockets.clone()),
        );
        let (user, pass) = USERS[0];
        server.insert_credentials(now, user, UserKeys::from_password(user, REALM, pass));
        Harness {
            server,
            sockets,
            clients: clients(),
            peers: peers(),
            now,
            timeout: None,
            out: vec![0; turnpike_codec::framing::MAX_FRAME_LEN],
            next_tid: 0,
            nonces: Default::default(),
            algorithms: Default::default(),
            last_request: Default::default(),
            asked: HashMap::new(),
            allocations: HashMap::new(),
            permissions: HashMap::new(),
            channels: HashMap::new(),
            lookups: Vec::new(),
            opening: Vec::new(),
            open: Vec::new(),
            tokens: Vec::new(),
            connection_ids: Vec::new(),
        }
    }

    fn run(&mut self, op: &Op) {
        match op {
            Op::Request(request) => {
                let client = self.client(request.client);
                if let Some(bytes) = self.build(request) {
                    self.client_sends(client, bytes);
                }
            }
            Op::Retransmit { client } => {
                let client = self.client(*client);
                if let Some(bytes) = self.last_request[client].clone() {
                    self.client_sends(client, bytes);
                }
            }
            Op::Mutated { request, flips } => {
                let client = self.client(request.client);
                if let Some(mut bytes) = self.build(request) {
                    for &(at, xor) in flips {
                        let len = bytes.len();
                        if let Some(b) = bytes.get_mut(usize::from(at) % len.max(1)) {
                            *b ^= xor;
                        }
                    }
                    self.client_sends(client, bytes);
                }
            }
            Op::Raw { client, bytes } => {
                let client = self.client(*client);
                self.client_sends(client, bytes.clone());
            }
            Op::Indication {
                client,
                peer,
                data,
                dont_fragment,
            } => {
                let client = self.client(*client);
                let peer = self.peers[usize::from(*peer) % self.peers.len()];
                let data = data.bytes();
                let mut attrs = vec![Attribute::XorPeerAddress(peer), Attribute::Data(&data)];
                if *dont_fragment {
                    attrs.push(Attribute::DontFragment);
                }
                let kind = MessageType::new(Method::SEND, Class::Indication);
                let tid = self.tid();
                if let Some(bytes) = encode(kind, tid, &attrs, |_| Ok(())) {
                    self.client_sends(client, bytes);
                }
            }
            Op::ChannelData {
                client,
                channel,
                data,
            } => {
                let client = self.client(*client);
                let data = data.bytes();
                let stream = self.clients[client].transport.is_stream();
                let message = ChannelData {
                    channel: channel_number(*channel),
                    data: &data,
                };
                let mut bytes = vec![0; ChannelData::encoded_len(data.len(), stream)];
                if message.encode(&mut bytes, stream).is_ok() {
                    self.client_sends(client, bytes);
                }
            }
            Op::PeerSends { peer, relay, data } => {
                let peer = self.peers[usize::from(*peer) % self.peers.len()];
                let relay = self.relay(*relay);
                self.peer_sends(peer, relay, &data.bytes());
            }
            Op::PeerConnects { peer, relay } => {
                let peer = self.peers[usize::from(*peer) % self.peers.len()];
                let relay = self.relay(*relay);
                let accepted =
                    self.server
                        .peer_connected(self.now, RelayedAddress(relay), PeerSocket(peer));
                if let Some(id) = accepted {
                    self.check_permitted(RelayProtocol::Tcp, relay, peer, "accepted connection");
                    self.open.push(id);
                }
                self.drain();
            }
            Op::ConnectFinished { which, established } => {
                if let Some(id) = take(&mut self.opening, *which) {
                    self.server.connect_finished(self.now, id, *established);
                    if *established {
                        self.open.push(id);
                    }
                    self.drain();
                }
            }
            Op::PeerConnectionClosed { which } => {
                if let Some(id) = take(&mut self.open, *which) {
                    self.server.peer_connection_closed(id);
                    self.drain();
                }
            }
            Op::ClientClosed { client } => {
                let tuple = self.clients[self.client(*client)];
                if tuple.transport.is_connection() {
                    self.server.connection_closed(self.now, &tuple);
                    self.drain();
                }
            }
            Op::Advance { millis } => self.advance(Duration::from_millis(u64::from(*millis))),
            Op::Lookup {
                which,
                verdict,
                valid_secs,
            } => {
                if let Some(username) = take(&mut self.lookups, *which) {
                    let lookup = answer_lookup(&username, *verdict);
                    let valid_until = self.now + Duration::from_secs(u64::from(*valid_secs));
                    self.server
                        .resolve_credentials(self.now, &username, lookup, valid_until);
                    self.drain();
                }
            }
            Op::ForgetUnavailable => {
                self.server.forget_unavailable_credentials();
                self.drain();
            }
            Op::Drain(on) => {
                let draining = on.then(|| Draining::new([addr("192.0.2.99:3478")]));
                self.server.set_draining(draining);
                self.drain();
            }
        }
        self.check_state();
    }

    /// Half the picks are client 0, so that the operations of one
    /// allocation's life meet more often.
    fn client(&self, pick: u8) -> usize {
        [0, 0, 0, 0, 1, 2, 3, 4][usize::from(pick % 8)]
    }

    /// A relayed address: one a live allocation has (most of the time), or
    /// one in the range that may have none.
    fn relay(&self, pick: u8) -> SocketAddr {
        let mut live: Vec<SocketAddr> = self
            .allocations
            .values()
            .flat_map(|a| a.relays.into_iter().flatten())
            .collect();
        live.sort_unstable();
        if pick < 224 && !live.is_empty() {
            live[usize::from(pick) % live.len()]
        } else {
            SocketAddr::new(addr(SERVER_V4).ip(), MIN_PORT + u16::from(pick % 12))
        }
    }

    fn tid(&mut self) -> TransactionId {
        self.next_tid += 1;
        let mut id = [0xF0; 12];
        id[..8].copy_from_slice(&self.next_tid.to_be_bytes());
        TransactionId::Rfc5389(id)
    }

    /// Encodes a request as a client would. A client that has no nonce yet
    /// first sends what real clients send, an unauthenticated Allocate, and
    /// learns one from the 401.
    fn build(&mut self, request: &Request) -> Option<Vec<u8>> {
        let client = self.client(request.client);
        let signing = request.auth.signing();
        if signing != Signing::None && self.nonces[client].is_none() {
            let tid = self.tid();
            let kind = MessageType::new(Method::ALLOCATE, Class::Request);
            // Long enough that the 401 may carry everything (the server
            // keeps challenges within 3 times the request): the nonce that
            // offers SHA-256, and PASSWORD-ALGORITHMS.
            let attrs = [
                Attribute::RequestedTransport(protocol::UDP),
                Attribute::Software("turnpike fuzz client, asking for a nonce"),
            ];
            let hello = encode(kind, tid, &attrs, |_| Ok(()))?;
            self.client_sends(client, hello);
        }

        let method = match request.method {
            MethodPick::Allocate => Method::ALLOCATE,
            MethodPick::Refresh => Method::REFRESH,
            MethodPick::CreatePermission => Method::CREATE_PERMISSION,
            MethodPick::ChannelBind => Method::CHANNEL_BIND,
            MethodPick::Connect => Method::CONNECT,
            MethodPick::ConnectionBind => Method::CONNECTION_BIND,
            MethodPick::Binding => Method::BINDING,
            MethodPick::Other(m) => Method::new(m & 0x0FFF)?,
        };
        let tokens: Vec<[u8; 8]> = request
            .attrs
            .iter()
            .map(|a| match a {
                AttrPick::Token(i) => self.tokens.get(usize::from(*i)).copied().unwrap_or([*i; 8]),
                _ => [0; 8],
            })
            .collect();
        let mut attrs: Vec<Attribute<'_>> = Vec::new();
        for (pick, token) in request.attrs.iter().zip(&tokens) {
            attrs.push(match pick {
                AttrPick::Transport(tcp) => {
                    Attribute::RequestedTransport(if *tcp { protocol::TCP } else { protocol::UDP })
                }
                AttrPick::TransportCode(code) => Attribute::RequestedTransport(*code),
                AttrPick::Lifetime(s) => Attribute::Lifetime(*s),
                AttrPick::Delete => Attribute::Lifetime(0),
                AttrPick::Peer(p) => {
                    Attribute::XorPeerAddress(self.peers[usize::from(*p) % self.peers.len()])
                }
                AttrPick::Channel(n) => Attribute::ChannelNumber(channel_number(*n)),
                AttrPick::ChannelRaw(n) => Attribute::ChannelNumber(*n),
                AttrPick::DontFragment => Attribute::DontFragment,
                AttrPick::EvenPort(r) => Attribute::EvenPort(*r),
                AttrPick::Token(_) => Attribute::ReservationToken(token),
                AttrPick::Family(v6) => Attribute::RequestedAddressFamily(family(*v6)),
                AttrPick::AdditionalFamily(v6) => Attribute::AdditionalAddressFamily(family(*v6)),
                AttrPick::ConnectionId(i) => Attribute::ConnectionId(
                    self.connection_ids
                        .get(usize::from(*i))
                        .copied()
                        .unwrap_or(u32::from(*i)),
                ),
                AttrPick::Data(d) => Attribute::Data(d),
                AttrPick::Unknown(t, v) => Attribute::Unknown {
                    attr_type: AttrType(*t),
                    value: v,
                },
            });
        }
        if !request.bare {
            let has = |t: AttrType| attrs.iter().any(|a| a.attr_type() == t);
            let mut needed = Vec::new();
            match request.method {
                MethodPick::Allocate if !has(AttrType::REQUESTED_TRANSPORT) => {
                    let tcp = self.clients[client].transport.is_stream();
                    needed.push(Attribute::RequestedTransport(if tcp {
                        protocol::TCP
                    } else {
                        protocol::UDP
                    }));
                }
                MethodPick::ChannelBind if !has(AttrType::CHANNEL_NUMBER) => {
                    needed.push(Attribute::ChannelNumber(channel_number(0)));
                }
                _ => {}
            }
            if matches!(
                request.method,
                MethodPick::CreatePermission | MethodPick::ChannelBind | MethodPick::Connect
            ) && !has(AttrType::XOR_PEER_ADDRESS)
            {
                needed.push(Attribute::XorPeerAddress(self.peers[0]));
            }
            attrs.extend(needed);
        }

        let (name, password) = request.auth.user(client);
        let password = match signing {
            Signing::WrongPassword => "not the password",
            _ => password,
        };
        let nonce = match signing {
            Signing::WrongNonce => "obviously-not-a-nonce".to_owned(),
            _ => self.nonces[client].clone().unwrap_or_default(),
        };
        let algorithms = self.algorithms[client].clone().unwrap_or_default();
        if signing != Signing::None {
            attrs.push(Attribute::Username(name));
            attrs.push(Attribute::Realm(REALM));
            attrs.push(Attribute::Nonce(&nonce));
            // RFC 8489 §9.2.4: echo the server's list, and pick from it.
            if signing == Signing::Sha256 {
                attrs.push(Attribute::PasswordAlgorithms(PasswordAlgorithms::Wire(
                    &algorithms,
                )));
                attrs.push(Attribute::PasswordAlgorithm(PasswordAlgorithm {
                    algorithm: password_algorithm::SHA256,
                    params: &[],
                }));
            }
        }
        let kind = MessageType::new(method, Class::Request);
        let tid = self.tid();
        let bytes = encode(kind, tid, &attrs, |msg| {
            match signing {
                Signing::None => {}
                Signing::Sha256 => msg.add_message_integrity_sha256(&Sha256Key::new(
                    &long_term_key_sha256(name, REALM, password),
                ))?,
                _ => msg.add_message_integrity(&Sha1Key::new(&long_term_key_md5(
                    name, REALM, password,
                )))?,
            }
            if request.fingerprint {
                msg.add_fingerprint()?;
            }
            Ok(())
        })?;
        self.last_request[client] = Some(bytes.clone());
        Some(bytes)
    }

    fn client_sends(&mut self, client: usize, bytes: Vec<u8>) {
        self.note_request(&bytes);
        let tuple = self.clients[client];
        let packet = Packet {
            transport: tuple.transport,
            local: tuple.server,
            remote: tuple.client,
            data: &bytes,
        };
        self.server
            .handle_client_packet(self.now, packet, &mut self.out);
        self.drain();
    }

    /// Remembers what a CreatePermission or ChannelBind asks for (see
    /// [`Asked`]), from the bytes as sent, mutated ones included.
    fn note_request(&mut self, bytes: &[u8]) {
        let Ok(message) = Message::parse(bytes) else {
            return;
        };
        let method = message.message_type().method;
        if message.message_type().class != Class::Request
            || !(method == Method::CREATE_PERMISSION || method == Method::CHANNEL_BIND)
        {
            return;
        }
        let peers: Vec<SocketAddr> = message
            .decoded()
            .filter_map(|a| match a {
                Ok(Attribute::XorPeerAddress(peer)) => Some(peer),
                _ => None,
            })
            .collect();
        let asked = self.asked.entry(message.transaction_id()).or_default();
        if method == Method::CREATE_PERMISSION {
            asked.ips.extend(peers.iter().map(SocketAddr::ip));
            return;
        }
        let number = message.decoded().find_map(|a| match a {
            Ok(Attribute::ChannelNumber(n)) => Some(n),
            _ => None,
        });
        if let (Some(number), Some(&peer)) = (number, peers.first()) {
            asked.ips.push(peer.ip());
            asked.channels.push((number, peer));
        }
    }

    fn peer_sends(&mut self, peer: SocketAddr, relay: SocketAddr, data: &[u8]) {
        self.server.handle_peer_packet(
            self.now,
            RelayedAddress(relay),
            PeerSocket(peer),
            data,
            &mut self.out,
        );
        // The answer to the input comes first: that is the delivery.
        let Some(to) = self.drain() else {
            return;
        };
        let Destination::Client(to) = to else {
            violated!("a peer datagram caused a transmit to {to:?}");
        };
        let owner = self.check_permitted(RelayProtocol::Udp, relay, peer, "delivery to client");
        if owner != to {
            violated!("data for {relay}'s allocation of {owner:?} went to {to:?}");
        }
    }

    /// Polls until the timeout, acting on each output like the shell.
    /// Returns where the first output went if it was a transmit: the answer
    /// to the input.
    fn drain(&mut self) -> Option<Destination> {
        let mut first = None;
        for polled in 0..MAX_OUTPUTS_PER_STEP {
            match self.server.poll_output(&mut self.out) {
                Output::Transmit(transmit) => {
                    let Some(bytes) = self.out.get(..transmit.len) else {
                        violated!("transmit longer than the buffer: {transmit:?}");
                    };
                    let bytes = bytes.to_vec();
                    self.on_transmit(transmit.to, &bytes);
                    if polled == 0 {
                        first = Some(transmit.to);
                    }
                }
                Output::Event(event) => self.on_event(event),
                Output::Timeout(at) => {
                    self.timeout = at;
                    return first;
                }
            }
        }
        violated!("more than {MAX_OUTPUTS_PER_STEP} outputs for one input");
    }

    fn on_transmit(&mut self, to: Destination, bytes: &[u8]) {
        match to {
            Destination::Peer { relay, peer, .. } => {
                self.check_permitted(RelayProtocol::Udp, relay.0, peer.0, "datagram to peer");
            }
            // RFC 5780 answers from another address: only to Binding.
            Destination::Alternate(_) => {}
            Destination::Client(tuple) => {
                if !self.clients.contains(&tuple) {
                    violated!("transmit to a 5-tuple no client used: {tuple:?}");
                }
                self.on_client_message(tuple, bytes);
            }
        }
    }

    /// Learns from a message to a client what a client would: nonces,
    /// tokens, CONNECTION-IDs, and which permissions it now holds.
    fn on_client_message(&mut self, tuple: FiveTuple, bytes: &[u8]) {
        // Relayed data is checked where it is relayed.
        if ChannelData::parse(bytes).is_ok() {
            return;
        }
        let message = match Message::parse(bytes) {
            Ok(message) => message,
            Err(e) => violated!("the server sent an unparsable message ({e:?}): {bytes:02x?}"),
        };
        let Some(client) = self.clients.iter().position(|c| *c == tuple) else {
            return;
        };
        if let Some(algorithms) = message.raw(AttrType::PASSWORD_ALGORITHMS) {
            self.algorithms[client] = Some(algorithms.value.to_vec());
        }
        for attr in message.decoded().flatten() {
            match attr {
                Attribute::Nonce(nonce) => self.nonces[client] = Some(nonce.to_owned()),
                Attribute::ReservationToken(token) => self.tokens.push(*token),
                Attribute::ConnectionId(id) => self.connection_ids.push(id),
                _ => {}
            }
        }
        let kind = message.message_type();
        if kind.class == Class::Success
            && (kind.method == Method::CREATE_PERMISSION || kind.method == Method::CHANNEL_BIND)
        {
            let Some(asked) = self.asked.get(&message.transaction_id()) else {
                violated!("success for a request never sent: {kind:?}");
            };
            let expires = self.now + PERMISSION_LIFETIME;
            let permissions = self.permissions.entry(tuple).or_default();
            for &ip in &asked.ips {
                permissions.insert(ip, expires);
            }
            let expires = self.now + CHANNEL_LIFETIME;
            let channels = self.channels.entry(tuple).or_default();
            for &channel in &asked.channels {
                channels.insert(channel, expires);
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::NeedCredentials { username } => {
                if !self.lookups.contains(&username) {
                    self.lookups.push(username);
                }
            }
            Event::ReleaseRelay { relay, protocol } => {
                if !self
                    .sockets
                    .0
                    .borrow_mut()
                    .bound
                    .remove(&(protocol, relay.0))
                {
                    violated!("released {relay:?} ({protocol:?}), which was not bound");
                }
            }
            Event::OpenConnection { id, relay, peer } => {
                // A Connect needs no permission (RFC 6062 §5.2), only an
                // allocation of the client's and a peer the policy allows.
                self.owner(RelayProtocol::Tcp, relay.0, "connection opened");
                if FORBIDDEN.contains(&peers().iter().position(|p| *p == peer.0)) {
                    violated!("connection opened to the forbidden {peer:?}");
                }
                self.opening.push(id);
            }
            Event::CloseConnection { id } => {
                self.opening.retain(|&c| c != id);
                self.open.retain(|&c| c != id);
            }
            Event::ConnectionBound { .. } => {}
            Event::RouteChannel {
                route,
                until,
                max_bps,
            } => {
                // No bandwidth cap is configured here: a route must not
                // carry one (the program would drop what it should relay).
                if max_bps != 0 {
                    violated!("route {route:?} carries a cap of {max_bps} B/s none configured");
                }
                let expiry = self
                    .permissions
                    .get(&route.client)
                    .and_then(|p| p.get(&route.peer.0.ip()));
                if expiry.is_none_or(|&e| e < until) {
                    violated!(
                        "route {route:?} until {:?} from now outlives its permission ({:?})",
                        until.saturating_duration_since(self.now),
                        expiry.map(|e| e.saturating_duration_since(self.now))
                    );
                }
            }
            Event::UnrouteChannel { .. } => {}
            Event::AllocationCreated(record) => {
                if self.allocations.values().any(|a| a.client == record.client) {
                    violated!("a second allocation for {:?}", record.client);
                }
                // A new allocation starts without permissions or channels.
                self.permissions.remove(&record.client);
                self.channels.remove(&record.client);
                self.allocations.insert(record.serial, *record);
            }
            Event::AllocationEnded { record, .. } => {
                if self.allocations.remove(&record.serial).is_none() {
                    violated!("end of an allocation never created: {record:?}");
                }
                self.permissions.remove(&record.client);
                self.channels.remove(&record.client);
            }
        }
    }

    /// The live allocation that owns `relay`; there must be one.
    fn owner(&self, protocol: RelayProtocol, relay: SocketAddr, what: &str) -> &AllocationRecord {
        let owner = self
            .allocations
            .values()
            .find(|a| a.protocol == protocol && a.relays.contains(&Some(relay)));
        match owner {
            Some(owner) => owner,
            None => violated!("{what}: {relay} ({protocol:?}) belongs to no live allocation"),
        }
    }

    /// The 5-tuple of the allocation that owns `relay`, which must hold a
    /// live permission for `peer` in the model.
    fn check_permitted(
        &self,
        protocol: RelayProtocol,
        relay: SocketAddr,
        peer: SocketAddr,
        what: &str,
    ) -> FiveTuple {
        let owner = self.owner(protocol, relay, what);
        let expiry = self
            .permissions
            .get(&owner.client)
            .and_then(|p| p.get(&peer.ip()));
        // The model's expiry is exact: the boundary instant is tolerated,
        // nothing after it.
        if expiry.is_none_or(|&e| e < self.now) {
            violated!(
                "{what}: {relay} → {peer} without a live permission (model: {:?})",
                self.permissions.get(&owner.client)
            );
        }
        owner.client
    }

    /// Moves the clock to `now + by`, firing the core's timer at each
    /// instant it asks for on the way, as a shell's timer does.
    fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        for _ in 0..MAX_FIRINGS_PER_ADVANCE {
            let Some(at) = self.timeout.filter(|&at| at <= target) else {
                self.now = target;
                return;
            };
            self.now = self.now.max(at);
            self.server.handle_timeout(self.now);
            self.drain();
            self.check_state();
            if self.timeout.is_some_and(|t| t <= self.now) {
                violated!("the timer is due again right after it fired");
            }
        }
        violated!("more than {MAX_FIRINGS_PER_ADVANCE} timer firings in {by:?}");
    }

    /// What the server holds, against the model and the limits.
    fn check_state(&self) {
        let mut relays = HashSet::new();
        let mut serials = HashSet::new();
        let mut by_user: HashMap<String, u32> = HashMap::new();
        let sockets = self.sockets.0.borrow();
        self.server.visit_allocations(self.now, |a| {
            serials.insert(a.serial());
            *by_user.entry(a.username().to_owned()).or_default() += 1;
            for relay in a.relays().into_iter().flatten() {
                if !relays.insert((a.protocol(), relay)) {
                    violated!("{relay} ({:?}) is owned by two allocations", a.protocol());
                }
                if !sockets.bound.contains(&(a.protocol(), relay)) {
                    violated!("{relay} ({:?}) is relayed but not bound", a.protocol());
                }
            }
            if a.permissions().count() > MAX_PERMISSIONS {
                violated!("{} permissions", a.permissions().count());
            }
            if a.channels().count() > MAX_CHANNELS {
                violated!("{} channels", a.channels().count());
            }
            let bound = self.channels.get(a.client());
            for channel in a.channels() {
                let expiry = bound.and_then(|c| c.get(&channel));
                if expiry.is_none_or(|&e| e < self.now) {
                    violated!(
                        "channel {channel:?} of {:?} never bound (model: {bound:?})",
                        a.client()
                    );
                }
            }
        });
        let announced: HashSet<u64> = self.allocations.keys().copied().collect();
        if serials != announced {
            violated!("allocations {serials:?}, but the events announced {announced:?}");
        }
        // Every bound socket is some allocation's or a reservation's: none leaks.
        let reserved: HashSet<SocketAddr> = sockets.reserved.values().copied().collect();
        for (protocol, relay) in &sockets.bound {
            if !relays.contains(&(*protocol, *relay)) && !reserved.contains(relay) {
                violated!("{relay} ({protocol:?}) is bound but owned by nothing");
            }
        }
        if self.server.allocation_count() > TOTAL_QUOTA {
            violated!("{} allocations", self.server.allocation_count());
        }
        if let Some((user, n)) = by_user.iter().find(|(_, n)| **n > USER_QUOTA) {
            violated!("{user} holds {n} allocations");
        }
        if self.server.peer_connection_count() > MAX_CONNECTIONS {
            violated!("{} peer connections", self.server.peer_connection_count());
        }
    }
}

/// Encodes a message: `attrs`, then what `finish` adds (integrity,
/// FINGERPRINT). `None` if it does not fit a STUN message.
fn encode(
    kind: MessageType,
    tid: TransactionId,
    attrs: &[Attribute<'_>],
    finish: impl FnOnce(&mut MessageBuilder<'_>) -> Result<(), turnpike_codec::EncodeError>,
) -> Option<Vec<u8>> {
    let len = turnpike_codec::HEADER_LEN
        + attrs
            .iter()
            .map(|a| 4 + a.value_len().next_multiple_of(4))
            .sum::<usize>()
        + 256;
    let mut buf = vec![0; len];
    let mut msg = MessageBuilder::new(&mut buf, kind, tid).ok()?;
    for a in attrs {
        msg.add(a).ok()?;
    }
    finish(&mut msg).ok()?;
    let n = msg.finish();
    buf.truncate(n);
    Some(buf)
}

fn channel_number(n: u8) -> u16 {
    0x4000 + u16::from(n % 4)
}

fn family(v6: bool) -> AddressFamily {
    if v6 {
        AddressFamily::V6
    } else {
        AddressFamily::V4
    }
}

/// Removes and returns the `which`-th entry (modulo the length).
fn take<T>(list: &mut Vec<T>, which: u8) -> Option<T> {
    if list.is_empty() {
        return None;
    }
    Some(list.remove(usize::from(which) % list.len()))
}

fn answer_lookup(username: &str, verdict: Verdict) -> Lookup {
    let known = USERS[..2].iter().find(|(name, _)| *name == username);
    match (verdict, known) {
        (Verdict::Truth, Some((name, pass))) => {
            Lookup::Found(UserKeys::from_password(name, REALM, pass))
        }
        (Verdict::Truth, None) | (Verdict::NotFound, _) => Lookup::NotFound,
        (Verdict::WrongKeys, _) => Lookup::Found(UserKeys::from_password(username, REALM, "wrong")),
        (Verdict::Unavailable, _) => Lookup::Unavailable,
    }
}

fuzz_target!(|steps: Vec<Step>| {
    let mut harness = Harness::new();
    harness.drain();
    for step in steps.iter().take(MAX_OPS) {
        harness.advance(wait(step.wait));
        harness.run(&step.op);
    }
});
