//! A small blocking TURN client over TCP for the RFC 6062 tests: a control
//! connection (Allocate with REQUESTED-TRANSPORT TCP, CreatePermission,
//! Connect) and data connections (ConnectionBind), built with the project's
//! codec. coturn's `turnutils_uclient -T` is the third-party reference;
//! this client reaches what it does not: peers that connect in, data sent
//! before the bind, refused peers, and exact error codes.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use turnpike_codec::attr::protocol;
use turnpike_codec::integrity::long_term_key_md5;
use turnpike_codec::{
    AttrType, Attribute, Class, HEADER_LEN, Message, MessageBuilder, MessageType, Method, Sha1Key,
    TransactionId,
};

use super::{TURN_PASSWORD, TURN_REALM, TURN_USER};

/// How long any one read from the server may take.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One message from the server.
#[derive(Debug, Clone)]
pub struct Reply(pub Vec<u8>);

impl Reply {
    pub fn message(&self) -> Message<'_> {
        Message::parse(&self.0).expect("the server's message parses")
    }

    pub fn method(&self) -> Method {
        self.message().message_type().method
    }

    pub fn class(&self) -> Class {
        self.message().message_type().class
    }

    pub fn code(&self) -> Option<u16> {
        match self.message().get(AttrType::ERROR_CODE)? {
            Ok(Attribute::ErrorCode(e)) => Some(e.code),
            _ => None,
        }
    }

    pub fn connection_id(&self) -> Option<u32> {
        match self.message().get(AttrType::CONNECTION_ID)? {
            Ok(Attribute::ConnectionId(id)) => Some(id),
            _ => None,
        }
    }

    pub fn peer(&self) -> Option<SocketAddr> {
        match self.message().get(AttrType::XOR_PEER_ADDRESS)? {
            Ok(Attribute::XorPeerAddress(a)) => Some(a),
            _ => None,
        }
    }

    pub fn relayed(&self) -> Vec<SocketAddr> {
        self.message()
            .decoded()
            .filter_map(|a| match a {
                Ok(Attribute::XorRelayedAddress(r)) => Some(r),
                _ => None,
            })
            .collect()
    }

    fn nonce(&self) -> Option<String> {
        match self.message().get(AttrType::NONCE)? {
            Ok(Attribute::Nonce(n)) => Some(n.to_owned()),
            _ => None,
        }
    }

    fn transaction_id(&self) -> TransactionId {
        self.message().transaction_id()
    }
}

/// Reads one STUN message framed from a stream.
pub fn read_message(stream: &mut TcpStream) -> std::io::Result<Reply> {
    let mut buf = vec![0u8; HEADER_LEN];
    stream.read_exact(&mut buf)?;
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    buf.resize(HEADER_LEN + len, 0);
    stream.read_exact(&mut buf[HEADER_LEN..])?;
    Ok(Reply(buf))
}

/// A client's control connection, authenticated as the test user.
pub struct Control {
    pub stream: TcpStream,
    server: SocketAddr,
    nonce: String,
    key: Sha1Key,
    next_tid: u64,
    /// Indications that arrived while a response was awaited.
    indications: VecDeque<Reply>,
}

impl Control {
    /// Connects and learns a nonce (an unauthenticated Allocate's 401).
    pub fn connect(server: SocketAddr) -> Control {
        let stream = TcpStream::connect(server).expect("connect to the server");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let mut control = Control {
            stream,
            server,
            nonce: String::new(),
            key: Sha1Key::new(&long_term_key_md5(TURN_USER, TURN_REALM, TURN_PASSWORD)),
            next_tid: 1,
            indications: VecDeque::new(),
        };
        let challenge = control.send(
            Method::ALLOCATE,
            &[Attribute::RequestedTransport(protocol::TCP)],
            false,
        );
        assert_eq!(challenge.code(), Some(401), "unauthenticated Allocate");
        control.nonce = challenge.nonce().expect("401 carries a NONCE");
        control
    }

    /// Allocates a TCP relay (with `extra` attributes); its relayed addresses.
    pub fn allocate_tcp(&mut self, extra: &[Attribute<'_>]) -> Vec<SocketAddr> {
        let mut attrs = vec![Attribute::RequestedTransport(protocol::TCP)];
        attrs.extend_from_slice(extra);
        let reply = self.request(Method::ALLOCATE, &attrs);
        assert_eq!(
            reply.class(),
            Class::Success,
            "TCP Allocate failed: {:?}",
            reply.code()
        );
        reply.relayed()
    }

    pub fn permit(&mut self, peer: SocketAddr) {
        let reply = self.request(
            Method::CREATE_PERMISSION,
            &[Attribute::XorPeerAddress(peer)],
        );
        assert_eq!(reply.class(), Class::Success, "CreatePermission {peer}");
    }

    pub fn connect_peer(&mut self, peer: SocketAddr) -> Reply {
        self.request(Method::CONNECT, &[Attribute::XorPeerAddress(peer)])
    }

    /// An authenticated request and its response (indications that come
    /// first are kept for [`next_indication`](Self::next_indication)).
    pub fn request(&mut self, method: Method, attrs: &[Attribute<'_>]) -> Reply {
        self.send(method, attrs, true)
    }

    /// The next indication (ConnectionAttempt), waiting at most
    /// [`READ_TIMEOUT`].
    pub fn next_indication(&mut self) -> Reply {
        if let Some(i) = self.indications.pop_front() {
            return i;
        }
        let reply = read_message(&mut self.stream).expect("an indication from the server");
        assert_eq!(reply.class(), Class::Indication, "unexpected {reply:?}");
        reply
    }

    /// Opens a data connection and binds it to `id`, signed with this
    /// control connection's nonce (as `turnutils_uclient` does); after a
    /// 438, once more with the nonce it carries (as a client does).
    pub fn bind_data_connection(&self, id: u32) -> (TcpStream, Reply) {
        let mut data = TcpStream::connect(self.server).expect("data connection");
        data.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let mut nonce = self.nonce.clone();
        for attempt in 0..2 {
            let request = self.build_with(
                Method::CONNECTION_BIND,
                &[Attribute::ConnectionId(id)],
                Some(&nonce),
                u64::from(id) << 16 | attempt,
            );
            data.write_all(&request).unwrap();
            let reply = read_message(&mut data).expect("ConnectionBind answer");
            match (reply.code(), reply.nonce()) {
                (Some(438), Some(fresh)) if attempt == 0 => nonce = fresh,
                _ => return (data, reply),
            }
        }
        unreachable!("the second attempt returns")
    }

    fn send(&mut self, method: Method, attrs: &[Attribute<'_>], signed: bool) -> Reply {
        self.next_tid += 1;
        let request = self.build(method, attrs, signed, self.next_tid);
        let tid = Message::parse(&request).unwrap().transaction_id();
        self.stream.write_all(&request).expect("send a request");
        loop {
            let reply = read_message(&mut self.stream).expect("a response from the server");
            if reply.class() == Class::Indication {
                self.indications.push_back(reply);
                continue;
            }
            assert_eq!(reply.transaction_id(), tid, "response to another request");
            return reply;
        }
    }

    fn build(&self, method: Method, attrs: &[Attribute<'_>], signed: bool, tid: u64) -> Vec<u8> {
        self.build_with(method, attrs, signed.then_some(&self.nonce), tid)
    }

    /// A request, signed with `nonce` if there is one.
    fn build_with(
        &self,
        method: Method,
        attrs: &[Attribute<'_>],
        nonce: Option<&String>,
        tid: u64,
    ) -> Vec<u8> {
        let mut id = [0u8; 12];
        id[..8].copy_from_slice(&tid.to_be_bytes());
        let mut buf = vec![0u8; 1024];
        let kind = MessageType::new(method, Class::Request);
        let mut msg = MessageBuilder::new(&mut buf, kind, TransactionId::Rfc5389(id)).unwrap();
        for a in attrs {
            msg.add(a).unwrap();
        }
        if let Some(nonce) = nonce {
            msg.add(&Attribute::Username(TURN_USER)).unwrap();
            msg.add(&Attribute::Realm(TURN_REALM)).unwrap();
            msg.add(&Attribute::Nonce(nonce)).unwrap();
            msg.add_message_integrity(&self.key).unwrap();
        }
        let len = msg.finish();
        buf.truncate(len);
        buf
    }
}
