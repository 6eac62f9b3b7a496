//! Client transactions: one TURN request until its final response (sans-IO).
//!
//! A [`ClientTransaction`] writes its request into a caller's buffer
//! ([`ClientTransaction::transmit`]), is fed whatever STUN message the caller
//! receives ([`ClientTransaction::handle_response`]) and is told when its timer
//! fires ([`ClientTransaction::handle_timeout`]). It never touches a socket or
//! a clock, so the same code drives the async [`crate::TurnClient`] and the
//! load generator's `epoll` loops, and the unit tests below replay canned
//! server answers.
//!
//! What it implements:
//!
//! - Long-term authentication (RFC 8489 §9.2.4–9.2.5): the request goes out
//!   unsigned until the [`AuthState`] knows a realm; a 401 carrying REALM and
//!   NONCE is taken and the request retried, signed, as a new transaction; a
//!   438 carrying a new NONCE likewise. Both loops are bounded.
//! - Response authentication: once the request was signed, a success response
//!   must carry a valid MESSAGE-INTEGRITY, and an error response carrying a
//!   wrong one is dropped "as if never received" (so a forged response cannot
//!   end the transaction; retransmissions continue).
//! - Retransmission (RFC 8489 §6.2.1): RTO starts at 500 ms and doubles after
//!   each retransmission; after Rc = 7 transmissions the client waits Rm = 16
//!   initial RTOs (39.5 s in all) and gives up. See [`RetransmitPolicy`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use turnpike_codec::attr::{AddressFamily, Attribute, protocol};
use turnpike_codec::{
    AttrType, Class, Message, MessageBuilder, MessageType, Method, TransactionId,
};

use crate::auth::AuthState;
use crate::error::ClientError;

/// How many 401 challenges one transaction answers before giving up. Two,
/// so that a request signed with credentials learned earlier (say a Refresh
/// after the server forgot the nonce) can take one fresh challenge.
const MAX_CHALLENGES: u8 = 2;

/// How many 438 (Stale Nonce) answers one transaction retries.
const MAX_STALE_NONCES: u8 = 3;

/// Retransmission timing (RFC 8489 §6.2.1) for requests over UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetransmitPolicy {
    /// The first retransmission timeout (RTO); it doubles after each
    /// retransmission. RFC 8489 recommends 500 ms when the path's RTT is not
    /// known.
    pub initial_rto: Duration,
    /// Rc: the most times a request is sent (the first transmission
    /// included). At least 1.
    pub max_transmissions: u32,
    /// Rm: after the last transmission, the client waits this many initial
    /// RTOs for a response before declaring the transaction failed.
    pub final_wait_factor: u32,
}

impl Default for RetransmitPolicy {
    /// The RFC 8489 defaults: 500 ms, Rc = 7, Rm = 16 (gives up after 39.5 s).
    fn default() -> Self {
        RetransmitPolicy {
            initial_rto: Duration::from_millis(500),
            max_transmissions: 7,
            final_wait_factor: 16,
        }
    }
}

impl RetransmitPolicy {
    /// How long a transaction lasts without any response before it fails.
    pub fn give_up_after(&self) -> Duration {
        let mut total = Duration::ZERO;
        let mut rto = self.initial_rto;
        for _ in 1..self.max_transmissions.max(1) {
            total += rto;
            rto = rto.saturating_mul(2);
        }
        total + self.initial_rto.saturating_mul(self.final_wait_factor)
    }
}

/// Optional parts of an Allocate request (RFC 8656 §7.1). REQUESTED-TRANSPORT
/// is always UDP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocateParams {
    /// REQUESTED-ADDRESS-FAMILY: the relayed address's family (RFC 6156);
    /// `None` lets the server pick (IPv4).
    pub family: Option<AddressFamily>,
    /// LIFETIME in seconds; `None` takes the server's default (600 s).
    pub lifetime: Option<u32>,
    /// DONT-FRAGMENT: ask the server to set DF on relayed packets.
    pub dont_fragment: bool,
}

/// A TURN request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Allocate a relayed transport address.
    Allocate(AllocateParams),
    /// Refresh the allocation; a lifetime of 0 deletes it.
    Refresh {
        /// Requested lifetime in seconds.
        lifetime: u32,
    },
    /// Install (or refresh) permissions for the peers' IP addresses (ports
    /// are ignored by the server).
    CreatePermission {
        /// One XOR-PEER-ADDRESS each.
        peers: Vec<SocketAddr>,
    },
    /// Bind (or refresh) a channel to a peer; also installs a permission.
    ChannelBind {
        /// Channel number, 0x4000–0x4FFF (RFC 8656) or up to 0x7FFF (RFC 5766).
        channel: u16,
        /// The peer's transport address.
        peer: SocketAddr,
    },
}

impl Request {
    /// The request's STUN method.
    pub fn method(&self) -> Method {
        match self {
            Request::Allocate(_) => Method::ALLOCATE,
            Request::Refresh { .. } => Method::REFRESH,
            Request::CreatePermission { .. } => Method::CREATE_PERMISSION,
            Request::ChannelBind { .. } => Method::CHANNEL_BIND,
        }
    }
}

/// The result of a successful Allocate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocated {
    /// XOR-RELAYED-ADDRESS: where peers send to reach this client.
    pub relayed: SocketAddr,
    /// XOR-MAPPED-ADDRESS: the client's address as the server sees it.
    pub mapped: Option<SocketAddr>,
    /// Granted lifetime in seconds.
    pub lifetime: u32,
}

/// A successful final response, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Success {
    /// Allocate succeeded.
    Allocate(Allocated),
    /// Refresh succeeded, granting this lifetime (0: the allocation is gone).
    Refresh {
        /// Granted lifetime in seconds.
        lifetime: u32,
    },
    /// CreatePermission succeeded.
    CreatePermission,
    /// ChannelBind succeeded.
    ChannelBind,
}

/// What the caller does after feeding a response to
/// [`ClientTransaction::handle_response`].
#[derive(Debug)]
pub enum ResponseAction {
    /// Not this transaction's response, or one that failed its integrity
    /// check: drop it and keep waiting (retransmissions continue).
    Ignore,
    /// The server challenged (401) or refreshed the nonce (438): the
    /// [`AuthState`] was updated and the transaction restarted with a new
    /// transaction ID. Call [`ClientTransaction::transmit`] now.
    Retry,
    /// The transaction is over.
    Done(Result<Success, ClientError>),
}

/// What the caller does when the transaction's timer fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutAction {
    /// Not yet due: wait until [`ClientTransaction::poll_timeout`].
    Wait,
    /// Send the request again: call [`ClientTransaction::transmit`].
    Retransmit,
}

/// One request and its retransmissions and authentication retries.
#[derive(Debug)]
pub struct ClientTransaction {
    request: Request,
    id: [u8; 12],
    policy: RetransmitPolicy,
    /// Transmissions of the current transaction ID (0 before the first).
    transmissions: u32,
    /// The interval before the next retransmission.
    rto: Duration,
    deadline: Option<Instant>,
    /// The nonce the last transmission was signed with (`None`: unsigned).
    /// A 401 that repeats exactly this nonce rejects our credentials; one
    /// with another nonce is a fresh challenge worth one more try.
    signed_nonce: Option<String>,
    challenges: u8,
    stale_nonces: u8,
}

impl ClientTransaction {
    /// A transaction with a random transaction ID.
    pub fn new(request: Request, policy: RetransmitPolicy) -> Self {
        Self::with_id(request, policy, rand::random())
    }

    /// A transaction with the given transaction ID (retries after a 401 or
    /// 438 still draw random IDs).
    pub fn with_id(request: Request, policy: RetransmitPolicy, id: [u8; 12]) -> Self {
        ClientTransaction {
            request,
            id,
            policy,
            transmissions: 0,
            rto: policy.initial_rto,
            deadline: None,
            signed_nonce: None,
            challenges: 0,
            stale_nonces: 0,
        }
    }

    /// The request.
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// The current transaction ID.
    pub fn transaction_id(&self) -> TransactionId {
        TransactionId::Rfc5389(self.id)
    }

    /// How many times the current transaction ID has been sent.
    pub fn transmissions(&self) -> u32 {
        self.transmissions
    }

    /// Writes the request into `out` without touching the timers; returns
    /// its length.
    pub fn encode(&self, auth: &AuthState, out: &mut [u8]) -> Result<usize, ClientError> {
        Ok(self.encode_signed(auth, out)?.0)
    }

    fn encode_signed(
        &self,
        auth: &AuthState,
        out: &mut [u8],
    ) -> Result<(usize, bool), ClientError> {
        let message_type = MessageType::new(self.request.method(), Class::Request);
        let mut b = MessageBuilder::new(out, message_type, self.transaction_id())?;
        match &self.request {
            Request::Allocate(p) => {
                b.add(&Attribute::RequestedTransport(protocol::UDP))?;
                if let Some(family) = p.family {
                    b.add(&Attribute::RequestedAddressFamily(family))?;
                }
                if let Some(lifetime) = p.lifetime {
                    b.add(&Attribute::Lifetime(lifetime))?;
                }
                if p.dont_fragment {
                    b.add(&Attribute::DontFragment)?;
                }
            }
            Request::Refresh { lifetime } => b.add(&Attribute::Lifetime(*lifetime))?,
            Request::CreatePermission { peers } => {
                for peer in peers {
                    b.add(&Attribute::XorPeerAddress(*peer))?;
                }
            }
            Request::ChannelBind { channel, peer } => {
                b.add(&Attribute::ChannelNumber(*channel))?;
                b.add(&Attribute::XorPeerAddress(*peer))?;
            }
        }
        let signed = auth.sign(&mut b)?;
        Ok((b.finish(), signed))
    }

    /// Writes the request into `out` for (re)transmission at `now` and arms
    /// the retransmission timer; returns the length to send.
    pub fn transmit(
        &mut self,
        auth: &AuthState,
        out: &mut [u8],
        now: Instant,
    ) -> Result<usize, ClientError> {
        let (len, signed) = self.encode_signed(auth, out)?;
        self.signed_nonce = if signed {
            auth.nonce().map(str::to_owned)
        } else {
            None
        };
        self.transmissions += 1;
        if self.transmissions == 1 {
            self.rto = self.policy.initial_rto;
        } else {
            self.rto = self.rto.saturating_mul(2);
        }
        let wait = if self.transmissions < self.policy.max_transmissions {
            self.rto
        } else {
            self.policy
                .initial_rto
                .saturating_mul(self.policy.final_wait_factor)
        };
        self.deadline = Some(now + wait);
        Ok(len)
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due; `None`
    /// before the first transmission.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// Advances the timer to `now`.
    ///
    /// # Errors
    ///
    /// [`ClientError::Timeout`] once the last transmission has gone
    /// unanswered for the final wait.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<TimeoutAction, ClientError> {
        match self.deadline {
            Some(deadline) if now >= deadline => {
                if self.transmissions >= self.policy.max_transmissions {
                    self.deadline = None;
                    Err(ClientError::Timeout)
                } else {
                    Ok(TimeoutAction::Retransmit)
                }
            }
            _ => Ok(TimeoutAction::Wait),
        }
    }

    /// Whether `msg` is a response to the current transmission (same
    /// transaction ID and method, response class).
    pub fn matches(&self, msg: &Message<'_>) -> bool {
        let t = msg.message_type();
        msg.transaction_id() == self.transaction_id()
            && t.method == self.request.method()
            && matches!(t.class, Class::Success | Class::Error)
    }

    /// Starts over under a new transaction ID: a retry after a challenge is a
    /// new transaction (RFC 8489 §9.2.5), with fresh retransmission timing.
    fn restart(&mut self) {
        self.id = rand::random();
        self.transmissions = 0;
        self.deadline = None;
    }

    /// Feeds a received STUN message. `auth` is updated when the server
    /// challenges or sends a new nonce.
    pub fn handle_response(
        &mut self,
        auth: &mut AuthState,
        response: &Message<'_>,
    ) -> ResponseAction {
        if !self.matches(response) {
            return ResponseAction::Ignore;
        }
        let signed = self.signed_nonce.is_some();
        if response.message_type().class == Class::Success {
            if signed {
                // RFC 8489 §9.2.5: a response to a signed request without a
                // valid MESSAGE-INTEGRITY is discarded as if never received.
                let Some(key) = auth.key() else {
                    return ResponseAction::Ignore;
                };
                if response.verify_integrity(key).is_err() {
                    return ResponseAction::Ignore;
                }
            }
            if let Some(Ok(Attribute::Nonce(nonce))) = response.get(AttrType::NONCE) {
                auth.set_nonce(nonce);
            }
            self.deadline = None;
            return ResponseAction::Done(self.decode_success(response));
        }

        let (code, reason) = match response.get(AttrType::ERROR_CODE) {
            Some(Ok(Attribute::ErrorCode(e))) => (e.code, e.reason),
            _ => {
                return ResponseAction::Done(Err(ClientError::InvalidResponse(
                    "error response without a valid ERROR-CODE",
                )));
            }
        };
        match code {
            401 => self.on_unauthorized(auth, response, reason),
            438 => {
                let Some(Ok(Attribute::Nonce(nonce))) = response.get(AttrType::NONCE) else {
                    return ResponseAction::Done(Err(ClientError::InvalidResponse(
                        "438 Stale Nonce without NONCE",
                    )));
                };
                self.stale_nonces += 1;
                if self.stale_nonces > MAX_STALE_NONCES {
                    return ResponseAction::Done(Err(ClientError::StaleNonceLoop));
                }
                match response.get(AttrType::REALM) {
                    Some(Ok(Attribute::Realm(realm))) => auth.challenge(realm, nonce),
                    _ => auth.set_nonce(nonce),
                }
                self.restart();
                ResponseAction::Retry
            }
            _ => {
                // An error to a signed request may carry MESSAGE-INTEGRITY; if
                // it does and it is wrong, the response is forged or garbled:
                // drop it. Errors without it are accepted (coturn signs some
                // and not others), so that a real refusal is reported as such
                // instead of degenerating into a timeout.
                if signed && response.has_integrity() {
                    let valid = auth
                        .key()
                        .is_some_and(|key| response.verify_integrity(key).is_ok());
                    if !valid {
                        return ResponseAction::Ignore;
                    }
                }
                // RFC 8489 §14.8: a 300 to a signed request must be signed
                // too, and is validated before the client goes elsewhere.
                let alternate = match response.get(AttrType::ALTERNATE_SERVER) {
                    Some(Ok(Attribute::AlternateServer(server))) if code == 300 => Some(server),
                    _ => None,
                };
                if alternate.is_some() && signed && !response.has_integrity() {
                    return ResponseAction::Ignore;
                }
                self.deadline = None;
                ResponseAction::Done(Err(match alternate {
                    Some(server) => ClientError::TryAlternate {
                        server,
                        reason: reason.to_owned(),
                    },
                    None => ClientError::ErrorResponse {
                        code,
                        reason: reason.to_owned(),
                    },
                }))
            }
        }
    }

    fn on_unauthorized(
        &mut self,
        auth: &mut AuthState,
        response: &Message<'_>,
        reason: &str,
    ) -> ResponseAction {
        let realm = match response.get(AttrType::REALM) {
            Some(Ok(Attribute::Realm(r))) => r,
            _ => return self.fail_unauthorized(format!("401 {reason} without REALM")),
        };
        let nonce = match response.get(AttrType::NONCE) {
            Some(Ok(Attribute::Nonce(n))) => n,
            _ => return self.fail_unauthorized(format!("401 {reason} without NONCE")),
        };
        // Signed with this very challenge and refused: the password is wrong
        // (or the user unknown). Retrying would only repeat the refusal.
        let same_challenge =
            self.signed_nonce.as_deref() == Some(nonce) && auth.realm() == Some(realm);
        self.challenges += 1;
        if same_challenge || self.challenges > MAX_CHALLENGES {
            return self.fail_unauthorized(format!(
                "401 {reason}: credentials for user {:?} in realm {realm:?} refused",
                auth.username()
            ));
        }
        auth.challenge(realm, nonce);
        self.restart();
        ResponseAction::Retry
    }

    fn fail_unauthorized(&mut self, why: String) -> ResponseAction {
        self.deadline = None;
        ResponseAction::Done(Err(ClientError::Unauthorized(why)))
    }

    fn decode_success(&self, response: &Message<'_>) -> Result<Success, ClientError> {
        let lifetime = match response.get(AttrType::LIFETIME) {
            Some(Ok(Attribute::Lifetime(l))) => Some(l),
            _ => None,
        };
        Ok(match &self.request {
            Request::Allocate(_) => {
                let Some(Ok(Attribute::XorRelayedAddress(relayed))) =
                    response.get(AttrType::XOR_RELAYED_ADDRESS)
                else {
                    return Err(ClientError::InvalidResponse(
                        "Allocate success without a valid XOR-RELAYED-ADDRESS",
                    ));
                };
                let mapped = match response.get(AttrType::XOR_MAPPED_ADDRESS) {
                    Some(Ok(Attribute::XorMappedAddress(a))) => Some(a),
                    _ => None,
                };
                let lifetime = lifetime.ok_or(ClientError::InvalidResponse(
                    "Allocate success without LIFETIME",
                ))?;
                Success::Allocate(Allocated {
                    relayed,
                    mapped,
                    lifetime,
                })
            }
            // RFC 8656 §7.3 requires LIFETIME; a server that leaves it out
            // granted what was asked.
            Request::Refresh { lifetime: asked } => Success::Refresh {
                lifetime: lifetime.unwrap_or(*asked),
            },
            Request::CreatePermission { .. } => Success::CreatePermission,
            Request::ChannelBind { .. } => Success::ChannelBind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Credentials;
    use turnpike_codec::attr::ErrorCode;
    use turnpike_codec::integrity::long_term_key_md5;
    use turnpike_codec::{Header, Sha1Key};

    const REALM: &str = "bench.test";

    fn key(password: &str) -> Sha1Key {
        Sha1Key::new(&long_term_key_md5("bench", REALM, password))
    }

    fn auth() -> AuthState {
        AuthState::new(Credentials::new("bench", "secret"))
    }

    /// Sends the transaction's request and returns the bytes.
    fn send(tx: &mut ClientTransaction, auth: &AuthState, now: Instant) -> Vec<u8> {
        let mut buf = [0u8; 1500];
        let n = tx.transmit(auth, &mut buf, now).expect("encodes");
        buf[..n].to_vec()
    }

    /// A response from the canned "server": same method and ID as `request`.
    fn respond(
        request: &[u8],
        class: Class,
        attrs: &[Attribute<'_>],
        integrity: Option<&Sha1Key>,
    ) -> Vec<u8> {
        let req = Message::parse(request).expect("request parses");
        let mut buf = [0u8; 1500];
        let mut b = MessageBuilder::new(
            &mut buf,
            MessageType::new(req.message_type().method, class),
            req.transaction_id(),
        )
        .expect("header");
        for a in attrs {
            b.add(a).expect("attribute");
        }
        if let Some(k) = integrity {
            b.add_message_integrity(k).expect("integrity");
        }
        let n = b.finish();
        buf[..n].to_vec()
    }

    fn error(code: u16) -> Attribute<'static> {
        Attribute::ErrorCode(ErrorCode { code, reason: "x" })
    }

    fn feed(tx: &mut ClientTransaction, auth: &mut AuthState, bytes: &[u8]) -> ResponseAction {
        tx.handle_response(auth, &Message::parse(bytes).expect("response parses"))
    }

    fn relayed() -> SocketAddr {
        "127.0.0.1:61000".parse().unwrap()
    }

    #[test]
    fn allocate_challenge_then_signed_success() {
        let now = Instant::now();
        let mut auth = auth();
        let mut tx = ClientTransaction::new(
            Request::Allocate(AllocateParams::default()),
            RetransmitPolicy::default(),
        );

        // First attempt: unsigned, REQUESTED-TRANSPORT UDP.
        let first = send(&mut tx, &auth, now);
        let msg = Message::parse(&first).unwrap();
        assert_eq!(
            msg.message_type(),
            MessageType::new(Method::ALLOCATE, Class::Request)
        );
        assert_eq!(
            msg.get(AttrType::REQUESTED_TRANSPORT),
            Some(Ok(Attribute::RequestedTransport(17)))
        );
        assert!(msg.raw(AttrType::USERNAME).is_none());
        assert!(!msg.has_integrity());

        // 401 with REALM and NONCE: retry, signed, under a new ID.
        let challenge = respond(
            &first,
            Class::Error,
            &[error(401), Attribute::Realm(REALM), Attribute::Nonce("n1")],
            None,
        );
        assert!(matches!(
            feed(&mut tx, &mut auth, &challenge),
            ResponseAction::Retry
        ));
        assert_eq!(auth.realm(), Some(REALM));
        assert_eq!(auth.nonce(), Some("n1"));
        assert!(auth.is_ready());

        let second = send(&mut tx, &auth, now);
        let msg = Message::parse(&second).unwrap();
        assert_ne!(
            msg.transaction_id(),
            Message::parse(&first).unwrap().transaction_id()
        );
        assert_eq!(
            msg.get(AttrType::USERNAME),
            Some(Ok(Attribute::Username("bench")))
        );
        assert_eq!(msg.get(AttrType::REALM), Some(Ok(Attribute::Realm(REALM))));
        assert_eq!(msg.get(AttrType::NONCE), Some(Ok(Attribute::Nonce("n1"))));
        assert_eq!(msg.verify_integrity(&key("secret")), Ok(()));

        // The late answer to the first ID is no longer ours.
        assert!(matches!(
            feed(&mut tx, &mut auth, &challenge),
            ResponseAction::Ignore
        ));

        let mapped: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let ok = respond(
            &second,
            Class::Success,
            &[
                Attribute::XorRelayedAddress(relayed()),
                Attribute::XorMappedAddress(mapped),
                Attribute::Lifetime(600),
            ],
            Some(&key("secret")),
        );
        match feed(&mut tx, &mut auth, &ok) {
            ResponseAction::Done(Ok(Success::Allocate(a))) => {
                assert_eq!(a.relayed, relayed());
                assert_eq!(a.mapped, Some(mapped));
                assert_eq!(a.lifetime, 600);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(tx.poll_timeout(), None);
    }

    #[test]
    fn wrong_password_fails_after_one_signed_attempt() {
        let now = Instant::now();
        let mut auth = AuthState::new(Credentials::new("bench", "wrong"));
        let mut tx = ClientTransaction::new(
            Request::Allocate(AllocateParams::default()),
            RetransmitPolicy::default(),
        );
        let first = send(&mut tx, &auth, now);
        let challenge = [error(401), Attribute::Realm(REALM), Attribute::Nonce("n1")];
        let r = respond(&first, Class::Error, &challenge, None);
        assert!(matches!(
            feed(&mut tx, &mut auth, &r),
            ResponseAction::Retry
        ));
        let second = send(&mut tx, &auth, now);
        // The server cannot verify our MAC and repeats the same challenge.
        let r = respond(&second, Class::Error, &challenge, None);
        match feed(&mut tx, &mut auth, &r) {
            ResponseAction::Done(Err(ClientError::Unauthorized(why))) => {
                assert!(why.contains("refused"), "{why}")
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn challenge_retries_are_bounded_even_with_new_nonces() {
        let now = Instant::now();
        let mut auth = auth();
        let mut tx = ClientTransaction::new(
            Request::Refresh { lifetime: 600 },
            RetransmitPolicy::default(),
        );
        let mut results = Vec::new();
        for nonce in ["a", "b", "c"] {
            let req = send(&mut tx, &auth, now);
            let r = respond(
                &req,
                Class::Error,
                &[error(401), Attribute::Realm(REALM), Attribute::Nonce(nonce)],
                None,
            );
            results.push(feed(&mut tx, &mut auth, &r));
        }
        assert!(matches!(results[0], ResponseAction::Retry));
        assert!(matches!(results[1], ResponseAction::Retry));
        assert!(matches!(
            results[2],
            ResponseAction::Done(Err(ClientError::Unauthorized(_)))
        ));
    }

    #[test]
    fn stale_nonce_updates_the_nonce_and_retries() {
        let now = Instant::now();
        let mut auth = auth();
        auth.challenge(REALM, "old");
        let peer: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        let mut tx = ClientTransaction::new(
            Request::ChannelBind {
                channel: 0x4000,
                peer,
            },
            RetransmitPolicy::default(),
        );
        let first = send(&mut tx, &auth, now);
        let msg = Message::parse(&first).unwrap();
        assert_eq!(
            msg.get(AttrType::CHANNEL_NUMBER),
            Some(Ok(Attribute::ChannelNumber(0x4000)))
        );
        assert_eq!(
            msg.get(AttrType::XOR_PEER_ADDRESS),
            Some(Ok(Attribute::XorPeerAddress(peer)))
        );
        assert_eq!(msg.get(AttrType::NONCE), Some(Ok(Attribute::Nonce("old"))));

        let stale = respond(
            &first,
            Class::Error,
            &[error(438), Attribute::Nonce("new")],
            None,
        );
        assert!(matches!(
            feed(&mut tx, &mut auth, &stale),
            ResponseAction::Retry
        ));
        assert_eq!(auth.nonce(), Some("new"));
        let second = send(&mut tx, &auth, now);
        let msg = Message::parse(&second).unwrap();
        assert_eq!(msg.get(AttrType::NONCE), Some(Ok(Attribute::Nonce("new"))));
        assert_eq!(msg.verify_integrity(&key("secret")), Ok(()));

        let ok = respond(&second, Class::Success, &[], Some(&key("secret")));
        assert!(matches!(
            feed(&mut tx, &mut auth, &ok),
            ResponseAction::Done(Ok(Success::ChannelBind))
        ));
    }

    #[test]
    fn endless_stale_nonces_end_the_transaction() {
        let now = Instant::now();
        let mut auth = auth();
        auth.challenge(REALM, "n0");
        let mut tx = ClientTransaction::new(
            Request::Refresh { lifetime: 0 },
            RetransmitPolicy::default(),
        );
        let mut last = None;
        for i in 0..=MAX_STALE_NONCES {
            let req = send(&mut tx, &auth, now);
            let nonce = format!("n{}", i + 1);
            let r = respond(
                &req,
                Class::Error,
                &[error(438), Attribute::Nonce(&nonce)],
                None,
            );
            last = Some(feed(&mut tx, &mut auth, &r));
        }
        assert!(matches!(
            last,
            Some(ResponseAction::Done(Err(ClientError::StaleNonceLoop)))
        ));
    }

    #[test]
    fn success_without_valid_integrity_is_ignored() {
        let now = Instant::now();
        let mut auth = auth();
        auth.challenge(REALM, "n");
        let mut tx = ClientTransaction::new(
            Request::Refresh { lifetime: 300 },
            RetransmitPolicy::default(),
        );
        let req = send(&mut tx, &auth, now);
        let unsigned = respond(&req, Class::Success, &[Attribute::Lifetime(300)], None);
        assert!(matches!(
            feed(&mut tx, &mut auth, &unsigned),
            ResponseAction::Ignore
        ));
        let forged = respond(
            &req,
            Class::Success,
            &[Attribute::Lifetime(300)],
            Some(&key("other")),
        );
        assert!(matches!(
            feed(&mut tx, &mut auth, &forged),
            ResponseAction::Ignore
        ));
        let forged_err = respond(&req, Class::Error, &[error(437)], Some(&key("other")));
        assert!(matches!(
            feed(&mut tx, &mut auth, &forged_err),
            ResponseAction::Ignore
        ));
        // Still waiting: the timer is armed.
        assert!(tx.poll_timeout().is_some());
        let good = respond(
            &req,
            Class::Success,
            &[Attribute::Lifetime(300)],
            Some(&key("secret")),
        );
        assert!(matches!(
            feed(&mut tx, &mut auth, &good),
            ResponseAction::Done(Ok(Success::Refresh { lifetime: 300 }))
        ));
    }

    #[test]
    fn error_responses_end_the_transaction() {
        let now = Instant::now();
        let mut auth = auth();
        auth.challenge(REALM, "n");
        let mut tx = ClientTransaction::new(
            Request::Allocate(AllocateParams::default()),
            RetransmitPolicy::default(),
        );
        let req = send(&mut tx, &auth, now);
        // Unsigned errors are accepted so that real refusals are reported.
        let r = respond(&req, Class::Error, &[error(437)], None);
        match feed(&mut tx, &mut auth, &r) {
            ResponseAction::Done(Err(e)) => assert_eq!(e.error_code(), Some(437)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_signed_try_alternate_names_the_alternate_an_unsigned_one_is_ignored() {
        let now = Instant::now();
        let mut auth = auth();
        auth.challenge(REALM, "n");
        let alternate: SocketAddr = "192.0.2.7:3478".parse().unwrap();
        let redirect = [error(300), Attribute::AlternateServer(alternate)];
        let mut tx = ClientTransaction::new(
            Request::Allocate(AllocateParams::default()),
            RetransmitPolicy::default(),
        );
        let req = send(&mut tx, &auth, now);
        // RFC 8489 §14.8: not without MESSAGE-INTEGRITY, nor with a wrong one.
        for integrity in [None, Some(&key("not the password"))] {
            let r = respond(&req, Class::Error, &redirect, integrity);
            assert!(matches!(
                feed(&mut tx, &mut auth, &r),
                ResponseAction::Ignore
            ));
        }
        let r = respond(&req, Class::Error, &redirect, Some(&key("secret")));
        match feed(&mut tx, &mut auth, &r) {
            ResponseAction::Done(Err(ClientError::TryAlternate { server, .. })) => {
                assert_eq!(server, alternate)
            }
            other => panic!("unexpected {other:?}"),
        }
        // A 300 without ALTERNATE-SERVER is a plain error.
        let mut tx = ClientTransaction::new(
            Request::Allocate(AllocateParams::default()),
            RetransmitPolicy::default(),
        );
        let req = send(&mut tx, &auth, now);
        let r = respond(&req, Class::Error, &[error(300)], None);
        match feed(&mut tx, &mut auth, &r) {
            ResponseAction::Done(Err(ClientError::ErrorResponse { code: 300, .. })) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    #[test]
    fn responses_to_other_transactions_or_methods_are_ignored() {
        let now = Instant::now();
        let mut auth = auth();
        let mut tx = ClientTransaction::new(
            Request::Allocate(AllocateParams::default()),
            RetransmitPolicy::default(),
        );
        let req = send(&mut tx, &auth, now);
        // Same ID, other method.
        let mut buf = [0u8; 64];
        let id = Header::peek(&req).unwrap().transaction_id;
        let b = MessageBuilder::new(
            &mut buf,
            MessageType::new(Method::REFRESH, Class::Success),
            id,
        )
        .unwrap();
        let n = b.finish();
        assert!(matches!(
            feed(&mut tx, &mut auth, &buf[..n]),
            ResponseAction::Ignore
        ));
        // Other ID.
        let b = MessageBuilder::new(
            &mut buf,
            MessageType::new(Method::ALLOCATE, Class::Success),
            TransactionId::Rfc5389([0xEE; 12]),
        )
        .unwrap();
        let n = b.finish();
        assert!(matches!(
            feed(&mut tx, &mut auth, &buf[..n]),
            ResponseAction::Ignore
        ));
    }

    #[test]
    fn allocate_success_must_name_the_relayed_address() {
        let now = Instant::now();
        let mut auth = auth();
        let mut tx = ClientTransaction::new(
            Request::Allocate(AllocateParams::default()),
            RetransmitPolicy::default(),
        );
        let req = send(&mut tx, &auth, now);
        let r = respond(&req, Class::Success, &[Attribute::Lifetime(600)], None);
        assert!(matches!(
            feed(&mut tx, &mut auth, &r),
            ResponseAction::Done(Err(ClientError::InvalidResponse(_)))
        ));
    }

    #[test]
    fn allocate_parameters_are_encoded() {
        let auth = auth();
        let tx = ClientTransaction::new(
            Request::Allocate(AllocateParams {
                family: Some(AddressFamily::V6),
                lifetime: Some(1200),
                dont_fragment: true,
            }),
            RetransmitPolicy::default(),
        );
        let mut buf = [0u8; 256];
        let n = tx.encode(&auth, &mut buf).unwrap();
        let msg = Message::parse(&buf[..n]).unwrap();
        assert_eq!(
            msg.get(AttrType::REQUESTED_ADDRESS_FAMILY),
            Some(Ok(Attribute::RequestedAddressFamily(AddressFamily::V6)))
        );
        assert_eq!(
            msg.get(AttrType::LIFETIME),
            Some(Ok(Attribute::Lifetime(1200)))
        );
        assert_eq!(
            msg.get(AttrType::DONT_FRAGMENT),
            Some(Ok(Attribute::DontFragment))
        );
    }

    #[test]
    fn retransmissions_follow_rfc_8489_timing() {
        let t0 = Instant::now();
        let auth = auth();
        let policy = RetransmitPolicy::default();
        assert_eq!(policy.give_up_after(), Duration::from_millis(39_500));
        let mut tx = ClientTransaction::new(Request::Refresh { lifetime: 600 }, policy);
        assert_eq!(tx.poll_timeout(), None);
        let mut sent_at = vec![0u64];
        send(&mut tx, &auth, t0);
        loop {
            let due = tx.poll_timeout().expect("armed");
            let just_before = due - Duration::from_millis(1);
            assert_eq!(tx.handle_timeout(just_before).unwrap(), TimeoutAction::Wait);
            match tx.handle_timeout(due) {
                Ok(TimeoutAction::Retransmit) => {
                    sent_at.push((due - t0).as_millis() as u64);
                    send(&mut tx, &auth, due);
                }
                Ok(TimeoutAction::Wait) => panic!("due but waiting"),
                Err(ClientError::Timeout) => {
                    assert_eq!((due - t0).as_millis(), 39_500);
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(sent_at, [0, 500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(tx.transmissions(), 7);
    }

    #[test]
    fn a_retry_restarts_the_timer() {
        let t0 = Instant::now();
        let mut auth = auth();
        let policy = RetransmitPolicy::default();
        let mut tx = ClientTransaction::new(Request::Allocate(AllocateParams::default()), policy);
        send(&mut tx, &auth, t0);
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(tx.handle_timeout(t1).unwrap(), TimeoutAction::Retransmit);
        let req = send(&mut tx, &auth, t1);
        assert_eq!(tx.transmissions(), 2);
        let r = respond(
            &req,
            Class::Error,
            &[error(401), Attribute::Realm(REALM), Attribute::Nonce("n")],
            None,
        );
        assert!(matches!(
            feed(&mut tx, &mut auth, &r),
            ResponseAction::Retry
        ));
        assert_eq!(tx.transmissions(), 0);
        let t2 = t1 + Duration::from_millis(10);
        send(&mut tx, &auth, t2);
        assert_eq!(tx.poll_timeout(), Some(t2 + Duration::from_millis(500)));
    }
}
