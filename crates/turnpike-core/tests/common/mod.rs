//! The harness of the TURN tests: a sans-IO `Server` with a simulated clock,
//! a fake relay binder, and helpers that build requests the way a client
//! does. Each test binary uses a part of it.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use turnpike_codec::attr::protocol;
use turnpike_codec::integrity::long_term_key_md5;
use turnpike_codec::{
    AttrType, Attribute, Class, Message, MessageBuilder, MessageType, Method, Sha1Key,
    TransactionId,
};
use turnpike_core::ephemeral::{self, Format};
use turnpike_core::{
    Config, ConnectionId, Event, NonceKey, Output, Packet, PeerPolicy, PeerSocket, RelayBinder,
    RelayOptions, RelayedAddress, Server, Shard, SharedSecret, Transmit, Transport, TurnConfig,
    UserKeys, WallClock,
};

pub const REALM: &str = "turnpike.test"; // 13 characters
pub const USER: &str = "alice";
pub const PASS: &str = "wonderland";
pub const SERVER: &str = "192.0.2.10:3478";
pub const CLIENT: &str = "198.51.100.20:40000";

/// The output buffer the shell gives the core for relayed data: the largest
/// message it may write (a STUN message with a 65,532-byte body).
pub const OUT_LEN: usize = turnpike_codec::framing::MAX_FRAME_LEN;

/// ChannelData on `channel` as a UDP client sends it.
pub fn channel_data(channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut packet = channel.to_be_bytes().to_vec();
    packet.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
    packet.extend_from_slice(payload);
    packet
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

/// What the fake shell has bound and reserved.
#[derive(Default, Debug)]
pub struct Sockets {
    pub bound: HashSet<SocketAddr>,
    pub reserved: HashMap<[u8; 8], SocketAddr>,
    pub refuse_all: bool,
    pub released: Vec<SocketAddr>,
    /// How each bind was asked for, in order.
    pub options: Vec<RelayOptions>,
}

#[derive(Clone, Default)]
pub struct FakeRelays(pub Arc<Mutex<Sockets>>);

impl RelayBinder for FakeRelays {
    fn bind(&mut self, relay: RelayedAddress, options: RelayOptions) -> io::Result<()> {
        let mut s = self.0.lock().unwrap();
        s.options.push(options);
        if s.refuse_all || !s.bound.insert(relay.0) {
            return Err(io::ErrorKind::AddrInUse.into());
        }
        Ok(())
    }
    fn reserve(&mut self, relay: RelayedAddress, token: [u8; 8], _: Instant) -> io::Result<()> {
        let mut s = self.0.lock().unwrap();
        if s.refuse_all || !s.bound.insert(relay.0) {
            return Err(io::ErrorKind::AddrInUse.into());
        }
        s.reserved.insert(token, relay.0);
        Ok(())
    }
    fn take_reserved(
        &mut self,
        token: [u8; 8],
        _: Instant,
        _: RelayOptions,
    ) -> Option<RelayedAddress> {
        self.0
            .lock()
            .unwrap()
            .reserved
            .remove(&token)
            .map(RelayedAddress)
    }
}

impl FakeRelays {
    /// Closes a relay socket as the shell does on [`Event::ReleaseRelay`];
    /// `false` for any other event.
    pub fn apply(&self, event: &Event) -> bool {
        let Event::ReleaseRelay { relay, .. } = *event else {
            return false;
        };
        let mut s = self.0.lock().unwrap();
        s.bound.remove(&relay.0);
        s.released.push(relay.0);
        true
    }
}

pub struct Harness {
    pub server: Server,
    pub relays: FakeRelays,
    pub now: Instant,
    pub next_tid: u8,
    /// What client packets arrive over.
    pub transport: Transport,
    /// Events polled from the server and not yet looked at
    /// ([`Event::ReleaseRelay`] is carried out by [`FakeRelays`] instead).
    pub events: VecDeque<Event>,
    /// Messages polled from the server that answered no input of the
    /// harness: replayed answers, deferred Connect answers,
    /// ConnectionAttempts.
    pub outbox: VecDeque<Answer>,
    /// The last timeout the server asked for.
    pub timeout: Option<Instant>,
    /// Accounting events ([`Event::AllocationCreated`],
    /// [`Event::AllocationEnded`]), kept apart so tests of other events
    /// need not step over them.
    pub accounting: Vec<Event>,
}

pub fn turn_config(epoch: Instant, tweak: impl FnOnce(&mut TurnConfig)) -> Config {
    let nonces = NonceKey::new(&[9; 32], epoch, Duration::from_secs(600));
    let policy = PeerPolicy::new(vec![], vec![], vec![addr(SERVER)], vec![]);
    let mut turn = TurnConfig::new(REALM, nonces, policy);
    turn.relay_ips = vec![
        "192.0.2.10".parse().unwrap(),
        "2001:db8::10".parse().unwrap(),
    ];
    turn.min_port = 50000;
    turn.max_port = 50999;
    turn.wall_clock = Some(WallClock {
        instant: epoch,
        unix: Duration::from_secs(UNIX_EPOCH_OF_TESTS),
    });
    tweak(&mut turn);
    Config {
        turn: Some(turn),
        ..Config::default()
    }
}

/// An authenticated request's credentials.
#[derive(Clone)]
pub struct Creds {
    pub user: &'static str,
    pub pass: &'static str,
    pub nonce: String,
}

pub struct Answer {
    pub transmit: Transmit,
    pub bytes: Vec<u8>,
}

impl Answer {
    pub fn message(&self) -> Message<'_> {
        Message::parse(&self.bytes).expect("server output parses")
    }
    pub fn attr(&self, t: AttrType) -> Option<Attribute<'_>> {
        self.message().get(t).map(|r| r.expect("decodes"))
    }
    pub fn attrs(&self, t: AttrType) -> Vec<Attribute<'_>> {
        self.message()
            .decoded()
            .map(|a| a.expect("decodes"))
            .filter(|a| a.attr_type() == t)
            .collect()
    }
    pub fn class(&self) -> Class {
        self.message().message_type().class
    }
    pub fn code(&self) -> Option<u16> {
        match self.attr(AttrType::ERROR_CODE) {
            Some(Attribute::ErrorCode(e)) => Some(e.code),
            _ => None,
        }
    }
    pub fn nonce(&self) -> String {
        match self.attr(AttrType::NONCE) {
            Some(Attribute::Nonce(n)) => n.to_owned(),
            other => panic!("no NONCE: {other:?}"),
        }
    }
    pub fn relayed(&self) -> Vec<SocketAddr> {
        self.attrs(AttrType::XOR_RELAYED_ADDRESS)
            .into_iter()
            .map(|a| match a {
                Attribute::XorRelayedAddress(r) => r,
                _ => unreachable!(),
            })
            .collect()
    }
    pub fn lifetime(&self) -> Option<u32> {
        match self.attr(AttrType::LIFETIME) {
            Some(Attribute::Lifetime(l)) => Some(l),
            _ => None,
        }
    }
}

impl Harness {
    pub fn new(tweak: impl FnOnce(&mut TurnConfig)) -> Harness {
        Harness::with_shard(Shard::default(), tweak)
    }

    /// A harness whose shard is `shard` (its seeds, say).
    pub fn with_shard(shard: Shard, tweak: impl FnOnce(&mut TurnConfig)) -> Harness {
        let now = Instant::now();
        let relays = FakeRelays::default();
        let config = Arc::new(turn_config(now, tweak));
        let mut server = Server::with_relays(config, shard, Box::new(relays.clone()));
        server.insert_credentials(now, USER, UserKeys::from_password(USER, REALM, PASS));
        server.insert_credentials(now, "bob", UserKeys::from_password("bob", REALM, "builder"));
        Harness {
            server,
            relays,
            now,
            next_tid: 0,
            transport: Transport::Udp,
            events: VecDeque::new(),
            accounting: Vec::new(),
            outbox: VecDeque::new(),
            timeout: None,
        }
    }

    /// Polls the server after an input handled with `out`, with that same
    /// buffer, as the shell does: the answer to the input, which comes
    /// first, is returned; events and other messages are kept in
    /// [`events`](Self::events) and [`outbox`](Self::outbox).
    pub fn drain(&mut self, out: &mut [u8]) -> Option<Answer> {
        self.poll_all(out, true)
    }

    /// Polls the server after something other than a packet.
    pub fn drain_owed(&mut self) {
        let mut out = vec![0u8; OUT_LEN];
        self.poll_all(&mut out, false);
    }

    fn poll_all(&mut self, out: &mut [u8], mut first: bool) -> Option<Answer> {
        let mut answer = None;
        loop {
            match self.server.poll_output(out) {
                Output::Transmit(transmit) if first => {
                    answer = Some(Answer {
                        transmit,
                        bytes: out[..transmit.len].to_vec(),
                    });
                }
                Output::Transmit(transmit) => self.outbox.push_back(Answer {
                    transmit,
                    bytes: out[..transmit.len].to_vec(),
                }),
                Output::Event(
                    event @ (Event::AllocationCreated(_) | Event::AllocationEnded { .. }),
                ) => self.accounting.push(event),
                Output::Event(event) => {
                    if !self.relays.apply(&event) {
                        self.events.push_back(event);
                    }
                }
                Output::Timeout(at) => {
                    self.timeout = at;
                    return answer;
                }
            }
            first = false;
        }
    }

    /// The next event the server raised.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.drain_owed();
        self.events.pop_front()
    }

    /// Messages the server sent that answered no input of the harness.
    pub fn owed(&mut self) -> Vec<Answer> {
        self.drain_owed();
        self.outbox.drain(..).collect()
    }

    pub fn tid(&mut self) -> TransactionId {
        self.next_tid = self.next_tid.wrapping_add(1);
        TransactionId::Rfc5389([self.next_tid; 12])
    }

    pub fn advance(&mut self, secs: u64) {
        self.advance_by(Duration::from_secs(secs));
    }

    pub fn advance_by(&mut self, by: Duration) {
        self.now += by;
        self.server.handle_timeout(self.now);
        self.drain_owed();
    }

    pub fn request(
        &mut self,
        method: Method,
        tid: TransactionId,
        attrs: &[Attribute<'_>],
        creds: Option<&Creds>,
    ) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        let mut msg =
            MessageBuilder::new(&mut buf, MessageType::new(method, Class::Request), tid).unwrap();
        for a in attrs {
            msg.add(a).unwrap();
        }
        if let Some(c) = creds {
            msg.add(&Attribute::Username(c.user)).unwrap();
            msg.add(&Attribute::Realm(REALM)).unwrap();
            msg.add(&Attribute::Nonce(&c.nonce)).unwrap();
            msg.add_message_integrity(&Sha1Key::new(&long_term_key_md5(c.user, REALM, c.pass)))
                .unwrap();
        }
        let len = msg.finish();
        buf.truncate(len);
        buf
    }

    pub fn send_from(&mut self, client: &str, data: &[u8]) -> Option<Answer> {
        let mut out = vec![0u8; OUT_LEN];
        let packet = Packet {
            transport: self.transport,
            local: addr(SERVER),
            remote: addr(client),
            data,
        };
        self.server.handle_client_packet(self.now, packet, &mut out);
        self.drain(&mut out)
    }

    pub fn send(&mut self, data: &[u8]) -> Option<Answer> {
        self.send_from(CLIENT, data)
    }

    /// A Send indication from the default client to `peer`.
    pub fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) -> Option<Answer> {
        self.send_indication_with(peer, data, &[])
    }

    /// A Send indication from the default client to `peer`, with `extra`
    /// attributes after DATA.
    pub fn send_indication_with(
        &mut self,
        peer: SocketAddr,
        data: &[u8],
        extra: &[Attribute<'_>],
    ) -> Option<Answer> {
        let tid = self.tid();
        let mut buf = vec![0u8; 256 + data.len()];
        let kind = MessageType::new(Method::SEND, Class::Indication);
        let mut msg = MessageBuilder::new(&mut buf, kind, tid).unwrap();
        msg.add(&Attribute::XorPeerAddress(peer)).unwrap();
        msg.add(&Attribute::Data(data)).unwrap();
        for a in extra {
            msg.add(a).unwrap();
        }
        let len = msg.finish();
        self.send(&buf[..len])
    }

    pub fn peer_sends(&mut self, relay: SocketAddr, peer: &str, data: &[u8]) -> Option<Answer> {
        let mut out = vec![0u8; OUT_LEN];
        let (relay, peer) = (RelayedAddress(relay), PeerSocket(addr(peer)));
        self.server
            .handle_peer_packet(self.now, relay, peer, data, &mut out);
        self.drain(&mut out)
    }

    /// Gets a nonce the way a client does: an unauthenticated Allocate.
    pub fn creds_for(&mut self, client: &str, user: &'static str, pass: &'static str) -> Creds {
        let tid = self.tid();
        let req = self.request(
            Method::ALLOCATE,
            tid,
            &[Attribute::RequestedTransport(protocol::UDP)],
            None,
        );
        let answer = self.send_from(client, &req).expect("401");
        assert_eq!(answer.code(), Some(401));
        Creds {
            user,
            pass,
            nonce: answer.nonce(),
        }
    }

    pub fn creds(&mut self) -> Creds {
        self.creds_for(CLIENT, USER, PASS)
    }

    pub fn authed(&mut self, method: Method, attrs: &[Attribute<'_>], creds: &Creds) -> Answer {
        self.authed_from(CLIENT, method, attrs, creds)
    }

    pub fn authed_from(
        &mut self,
        client: &str,
        method: Method,
        attrs: &[Attribute<'_>],
        creds: &Creds,
    ) -> Answer {
        let tid = self.tid();
        let req = self.request(method, tid, attrs, Some(creds));
        self.send_from(client, &req).expect("an answer")
    }

    /// An authenticated UDP Allocate with a fresh transaction ID.
    pub fn allocate_request(&mut self, creds: &Creds) -> Vec<u8> {
        let tid = self.tid();
        self.request(
            Method::ALLOCATE,
            tid,
            &[Attribute::RequestedTransport(protocol::UDP)],
            Some(creds),
        )
    }

    pub fn allocate(&mut self, creds: &Creds) -> SocketAddr {
        let a = self.authed(
            Method::ALLOCATE,
            &[Attribute::RequestedTransport(protocol::UDP)],
            creds,
        );
        assert_eq!(a.class(), Class::Success, "allocate failed: {:?}", a.code());
        a.relayed()[0]
    }

    /// A peer connects to the TCP relay `relay`.
    pub fn peer_connects(&mut self, relay: SocketAddr, peer: SocketAddr) -> Option<ConnectionId> {
        self.server
            .peer_connected(self.now, RelayedAddress(relay), PeerSocket(peer))
    }

    /// Answers to held requests whose lookups were resolved.
    pub fn replay(&mut self) -> Vec<Answer> {
        self.owed()
    }

    /// Credentials minted from a shared secret, as an application does.
    pub fn ephemeral_creds(
        &mut self,
        client: &str,
        username: String,
        format: Format,
        secret: &str,
    ) -> Creds {
        let pass = ephemeral::password(format, secret.as_bytes(), &username);
        self.creds_for(client, leak(username), leak(pass))
    }

    /// The relay sockets bound now, once the shell has acted on what the
    /// server asked.
    pub fn bound(&mut self) -> HashSet<SocketAddr> {
        self.drain_owed();
        self.relays.0.lock().unwrap().bound.clone()
    }
}

pub fn verify_md5(answer: &Answer, user: &str, pass: &str) {
    let key = Sha1Key::new(&long_term_key_md5(user, REALM, pass));
    answer
        .message()
        .verify_integrity(&key)
        .expect("answer signed with the user's key");
}

pub const PEER: &str = "93.184.216.34:6000";

/// Loopback, private, link-local, metadata and other internal targets, as
/// written plainly and in each IPv6 disguise (mapped, compatible, 6to4,
/// Teredo, NAT64). Every one must be refused on every path that names a
/// peer. The exhaustive range-by-form table lives in `peer_policy`'s tests;
/// this checks the TURN methods actually consult it.
pub const FORBIDDEN_PEERS: &[&str] = &[
    "127.0.0.1:80",
    "10.0.0.1:80",
    "172.16.5.4:80",
    "192.168.1.1:80",
    "100.64.0.1:80",
    "169.254.169.254:80",
    "0.0.0.0:80",
    "224.0.0.1:80",
    "255.255.255.255:80",
    "240.0.0.1:80",
    "198.18.0.1:80",
    "192.0.2.1:80",
    "[::1]:80",
    "[::]:80",
    "[fc00::1]:80",
    "[fd00:ec2::254]:80",
    "[fe80::1]:80",
    "[fec0::1]:80",
    "[ff02::1]:80",
    "[2001:db8::1]:80",
    "[::ffff:127.0.0.1]:80",
    "[::ffff:10.0.0.1]:80",
    "[::127.0.0.1]:80",
    "[2002:7f00:1::1]:80",
    "[2002:a9fe:a9fe::1]:80",
    "[2001:0:4136:e378:8000:63bf:80ff:fffe]:80",
    "[64:ff9b::7f00:1]:80",
    "[64:ff9b::a9fe:a9fe]:80",
    "[64:ff9b:1::a00:1]:80",
    SERVER,
];

/// Unix time at the harness's epoch.
pub const UNIX_EPOCH_OF_TESTS: u64 = 1_800_000_000;

pub fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

pub fn secret(key_index: u32, value: &str) -> SharedSecret {
    SharedSecret {
        key_index,
        value: value.as_bytes().into(),
    }
}
