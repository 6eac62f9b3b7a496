//! A blocking client for TCP allocations (RFC 6062), over TCP.
//!
//! [`TcpRelayClient`] is one control connection: Allocate with
//! REQUESTED-TRANSPORT TCP, CreatePermission, Connect, and the
//! ConnectionAttempt indications the server sends when a peer connects in.
//! [`TcpRelayClient::bind_data_connection`] opens a data connection and
//! binds it with ConnectionBind; afterwards that `TcpStream` carries the
//! peer's bytes. Errors from the server come back as [`Reply`]s, so callers
//! (tests, the `--tcp-relay` load generator) see exact codes.
//!
//! Indications and responses share the control connection: an indication
//! that arrives while a response is awaited is kept for
//! [`TcpRelayClient::next_indication`].

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use turnpike_codec::attr::protocol;
use turnpike_codec::{
    AttrType, Attribute, Class, HEADER_LEN, Message, MessageBuilder, MessageType, Method,
    TransactionId,
};

use crate::auth::{AuthState, Credentials};

/// One message from the server, as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply(pub Vec<u8>);

impl Reply {
    /// The parsed message (replies are checked to parse when read).
    pub fn message(&self) -> Message<'_> {
        // `read_message` only returns messages that parse.
        Message::parse(&self.0).expect("a Reply holds a parsed message")
    }

    /// The method.
    pub fn method(&self) -> Method {
        self.message().message_type().method
    }

    /// Success, error or indication.
    pub fn class(&self) -> Class {
        self.message().message_type().class
    }

    /// The ERROR-CODE number of an error response.
    pub fn code(&self) -> Option<u16> {
        match self.message().get(AttrType::ERROR_CODE)? {
            Ok(Attribute::ErrorCode(e)) => Some(e.code),
            _ => None,
        }
    }

    /// The CONNECTION-ID (Connect success, ConnectionAttempt).
    pub fn connection_id(&self) -> Option<u32> {
        match self.message().get(AttrType::CONNECTION_ID)? {
            Ok(Attribute::ConnectionId(id)) => Some(id),
            _ => None,
        }
    }

    /// The XOR-PEER-ADDRESS (ConnectionAttempt).
    pub fn peer(&self) -> Option<SocketAddr> {
        match self.message().get(AttrType::XOR_PEER_ADDRESS)? {
            Ok(Attribute::XorPeerAddress(a)) => Some(a),
            _ => None,
        }
    }

    /// Every XOR-RELAYED-ADDRESS (Allocate success).
    pub fn relayed(&self) -> Vec<SocketAddr> {
        self.message()
            .decoded()
            .filter_map(|a| match a {
                Ok(Attribute::XorRelayedAddress(r)) => Some(r),
                _ => None,
            })
            .collect()
    }

    fn realm_and_nonce(&self) -> (Option<String>, Option<String>) {
        let message = self.message();
        let realm = match message.get(AttrType::REALM) {
            Some(Ok(Attribute::Realm(r))) => Some(r.to_owned()),
            _ => None,
        };
        let nonce = match message.get(AttrType::NONCE) {
            Some(Ok(Attribute::Nonce(n))) => Some(n.to_owned()),
            _ => None,
        };
        (realm, nonce)
    }
}

/// Reads one STUN message framed from a stream.
///
/// # Errors
///
/// The stream's errors; `InvalidData` for something that is not STUN.
pub fn read_message(stream: &mut impl Read) -> io::Result<Reply> {
    let mut buf = vec![0u8; HEADER_LEN];
    stream.read_exact(&mut buf)?;
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    buf.resize(HEADER_LEN + len, 0);
    stream.read_exact(&mut buf[HEADER_LEN..])?;
    Message::parse(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(Reply(buf))
}

/// A control connection to a TURN server over TCP.
#[derive(Debug)]
pub struct TcpRelayClient {
    stream: TcpStream,
    server: SocketAddr,
    auth: AuthState,
    timeout: Duration,
    next_tid: u64,
    indications: VecDeque<Reply>,
}

impl TcpRelayClient {
    /// Connects; every read waits at most `timeout`.
    ///
    /// # Errors
    ///
    /// Connection errors.
    pub fn connect(
        server: SocketAddr,
        credentials: Credentials,
        timeout: Duration,
    ) -> io::Result<TcpRelayClient> {
        let stream = TcpStream::connect_timeout(&server, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(TcpRelayClient {
            stream,
            server,
            auth: AuthState::new(credentials),
            timeout,
            next_tid: rand::random(),
            indications: VecDeque::new(),
        })
    }

    /// Allocates a TCP relay, with `extra` attributes (e.g.
    /// ADDITIONAL-ADDRESS-FAMILY): the answer (see [`Reply::relayed`]).
    ///
    /// # Errors
    ///
    /// Connection errors.
    pub fn allocate(&mut self, extra: &[Attribute<'_>]) -> io::Result<Reply> {
        let mut attrs = vec![Attribute::RequestedTransport(protocol::TCP)];
        attrs.extend_from_slice(extra);
        self.request(Method::ALLOCATE, &attrs)
    }

    /// CreatePermission for `peer`'s IP.
    ///
    /// # Errors
    ///
    /// Connection errors.
    pub fn create_permission(&mut self, peer: SocketAddr) -> io::Result<Reply> {
        self.request(
            Method::CREATE_PERMISSION,
            &[Attribute::XorPeerAddress(peer)],
        )
    }

    /// Connect to `peer`: success with a CONNECTION-ID, or 403/446/447/….
    ///
    /// # Errors
    ///
    /// Connection errors.
    pub fn connect_peer(&mut self, peer: SocketAddr) -> io::Result<Reply> {
        self.request(Method::CONNECT, &[Attribute::XorPeerAddress(peer)])
    }

    /// Refresh with LIFETIME 0: deletes the allocation.
    ///
    /// # Errors
    ///
    /// Connection errors.
    pub fn release(&mut self) -> io::Result<Reply> {
        self.request(Method::REFRESH, &[Attribute::Lifetime(0)])
    }

    /// A request signed with the credentials, answered; a 401 or 438 is
    /// followed by one retry with the realm and nonce it carries.
    ///
    /// # Errors
    ///
    /// Connection errors.
    pub fn request(&mut self, method: Method, attrs: &[Attribute<'_>]) -> io::Result<Reply> {
        let mut reply = self.exchange(method, attrs)?;
        if matches!(reply.code(), Some(401 | 438)) && self.learn(&reply) {
            reply = self.exchange(method, attrs)?;
        }
        Ok(reply)
    }

    /// The next indication (ConnectionAttempt), waiting at most the timeout.
    ///
    /// # Errors
    ///
    /// Connection errors and timeouts; `InvalidData` for a response nobody
    /// asked for.
    pub fn next_indication(&mut self) -> io::Result<Reply> {
        if let Some(i) = self.indications.pop_front() {
            return Ok(i);
        }
        let reply = read_message(&mut self.stream)?;
        if reply.class() != Class::Indication {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a response while waiting for an indication",
            ));
        }
        Ok(reply)
    }

    /// Opens a data connection and binds it to connection `id`, signed with
    /// the control connection's nonce as `turnutils_uclient` does (after a
    /// 438, once more with the nonce it carries). On success the stream
    /// carries the peer's bytes; its reads still time out as the control
    /// connection's do.
    ///
    /// # Errors
    ///
    /// Connection errors.
    pub fn bind_data_connection(&self, id: u32) -> io::Result<(TcpStream, Reply)> {
        let mut data = TcpStream::connect_timeout(&self.server, self.timeout)?;
        data.set_read_timeout(Some(self.timeout))?;
        data.set_nodelay(true)?;
        let mut auth = self.auth.clone();
        let tid = self.next_tid ^ u64::from(id);
        let mut reply = None;
        for attempt in 0..2 {
            let request = build(
                Method::CONNECTION_BIND,
                &[Attribute::ConnectionId(id)],
                &auth,
                tid + attempt,
            )?;
            data.write_all(&request)?;
            let answer = read_message(&mut data)?;
            let (_, nonce) = answer.realm_and_nonce();
            match (answer.code(), nonce) {
                (Some(438), Some(nonce)) if attempt == 0 => auth.set_nonce(&nonce),
                _ => {
                    reply = Some(answer);
                    break;
                }
            }
        }
        // The loop answers on its second pass at the latest.
        let reply = reply.ok_or_else(|| io::Error::other("no ConnectionBind answer"))?;
        Ok((data, reply))
    }

    /// The control connection's stream (to close it, or read what the
    /// server sends unasked).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    fn learn(&mut self, challenge: &Reply) -> bool {
        match challenge.realm_and_nonce() {
            (Some(realm), Some(nonce)) => {
                self.auth.challenge(&realm, &nonce);
                true
            }
            (None, Some(nonce)) => {
                self.auth.set_nonce(&nonce);
                true
            }
            _ => false,
        }
    }

    fn exchange(&mut self, method: Method, attrs: &[Attribute<'_>]) -> io::Result<Reply> {
        self.next_tid = self.next_tid.wrapping_add(1);
        let request = build(method, attrs, &self.auth, self.next_tid)?;
        let tid = Message::parse(&request)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            .transaction_id();
        self.stream.write_all(&request)?;
        loop {
            let reply = read_message(&mut self.stream)?;
            if reply.class() == Class::Indication {
                self.indications.push_back(reply);
                continue;
            }
            if reply.message().transaction_id() == tid {
                return Ok(reply);
            }
        }
    }
}

/// A request, signed when `auth` knows a realm and nonce.
fn build(
    method: Method,
    attrs: &[Attribute<'_>],
    auth: &AuthState,
    tid: u64,
) -> io::Result<Vec<u8>> {
    let mut id = [0u8; 12];
    id[..8].copy_from_slice(&tid.to_be_bytes());
    let mut buf = vec![0u8; 1024];
    let kind = MessageType::new(method, Class::Request);
    let encode = |e| io::Error::new(io::ErrorKind::InvalidInput, e);
    let mut msg =
        MessageBuilder::new(&mut buf, kind, TransactionId::Rfc5389(id)).map_err(encode)?;
    for a in attrs {
        msg.add(a).map_err(encode)?;
    }
    auth.sign(&mut msg).map_err(encode)?;
    let len = msg.finish();
    buf.truncate(len);
    Ok(buf)
}
