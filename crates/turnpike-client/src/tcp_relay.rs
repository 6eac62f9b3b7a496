//! A blocking TURN client over a stream: TCP allocations (RFC 6062) over
//! TCP, and UDP allocations over TCP or TLS (or any other byte stream).
//!
//! [`TcpRelayClient`] is one control connection: Allocate with
//! REQUESTED-TRANSPORT TCP, CreatePermission, Connect, and the
//! ConnectionAttempt indications the server sends when a peer connects in.
//! [`TcpRelayClient::bind_data_connection`] opens a data connection and
//! binds it with ConnectionBind; afterwards that `TcpStream` carries the
//! peer's bytes. Errors from the server come back as [`Reply`]s, so callers
//! (tests, the `--tcp-relay` load generator) see exact codes.
//!
//! Over a connection made with [`TcpRelayClient::over`] (a TLS stream, say)
//! it also makes UDP allocations ([`TcpRelayClient::allocate_udp`]) and
//! carries their data: ChannelData (padded to 4 bytes, RFC 8656 §12.5) and
//! Send indications out, ChannelData and Data indications in
//! ([`TcpRelayClient::next_data`]).
//!
//! Indications, relayed data and responses share the control connection:
//! what arrives while a response is awaited is kept for
//! [`TcpRelayClient::next_indication`] and [`TcpRelayClient::next_data`].

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use turnpike_codec::attr::protocol;
use turnpike_codec::framing::{self, Frame, PacketKind};
use turnpike_codec::{
    AttrType, Attribute, ChannelData, Class, Message, MessageBuilder, MessageType, Method,
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
    match read_frame(stream)? {
        Received::Message(reply) => Ok(reply),
        Received::Data(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "ChannelData where a STUN message was expected",
        )),
    }
}

/// Relayed data received on a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamData {
    /// ChannelData on `channel`.
    Channel {
        /// The channel number.
        channel: u16,
        /// The application data.
        data: Vec<u8>,
    },
    /// A Data indication from `peer`.
    Indication {
        /// The peer.
        peer: SocketAddr,
        /// The application data.
        data: Vec<u8>,
    },
}

/// One frame of the stream: a STUN message (a Data indication is relayed
/// data, not a message), or ChannelData.
enum Received {
    Message(Reply),
    Data(StreamData),
}

/// Reads one STUN or ChannelData frame (RFC 8656 §12.5: ChannelData is
/// padded to 4 bytes on streams).
fn read_frame(stream: &mut impl Read) -> io::Result<Received> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let mut buf = vec![0u8; 4];
    stream.read_exact(&mut buf)?;
    let consumed = match framing::next_frame(&buf) {
        Frame::Incomplete { needed } => needed,
        Frame::Complete { consumed, .. } => consumed,
        Frame::Invalid => return Err(invalid("neither STUN nor ChannelData on the stream")),
    };
    // At least the 4 bytes read: a frame is never shorter.
    buf.resize(consumed, 0);
    stream.read_exact(&mut buf[4..])?;
    let Frame::Complete { kind, len, .. } = framing::next_frame(&buf) else {
        return Err(invalid("a frame that does not hold together"));
    };
    match kind {
        PacketKind::ChannelData => {
            let message =
                ChannelData::parse(&buf[..len]).map_err(|_| invalid("bad ChannelData"))?;
            Ok(Received::Data(StreamData::Channel {
                channel: message.channel,
                data: message.data.to_vec(),
            }))
        }
        _ => {
            buf.truncate(len);
            let message =
                Message::parse(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let kind = message.message_type();
            if (kind.method, kind.class) == (Method::DATA, Class::Indication) {
                let (mut peer, mut data) = (None, None);
                for attr in message.decoded() {
                    match attr {
                        Ok(Attribute::XorPeerAddress(a)) => peer = Some(a),
                        Ok(Attribute::Data(d)) => data = Some(d.to_vec()),
                        _ => {}
                    }
                }
                return match (peer, data) {
                    (Some(peer), Some(data)) => {
                        Ok(Received::Data(StreamData::Indication { peer, data }))
                    }
                    _ => Err(invalid(
                        "a Data indication without XOR-PEER-ADDRESS or DATA",
                    )),
                };
            }
            Ok(Received::Message(Reply(buf)))
        }
    }
}

/// A control connection to a TURN server over TCP (or, made with
/// [`over`](Self::over), any byte stream such as TLS).
#[derive(Debug)]
pub struct TcpRelayClient<S = TcpStream> {
    stream: S,
    server: SocketAddr,
    auth: AuthState,
    timeout: Duration,
    next_tid: u64,
    indications: VecDeque<Reply>,
    data: VecDeque<StreamData>,
}

impl TcpRelayClient<TcpStream> {
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
        Ok(TcpRelayClient::over(stream, server, credentials, timeout))
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
}

impl<S: Read + Write> TcpRelayClient<S> {
    /// A client on a connection to `server` already made (and, for TLS,
    /// handshaken). Reads must time out by themselves (`timeout` is what
    /// the caller set, used for data connections).
    pub fn over(
        stream: S,
        server: SocketAddr,
        credentials: Credentials,
        timeout: Duration,
    ) -> Self {
        TcpRelayClient {
            stream,
            server,
            auth: AuthState::new(credentials),
            timeout,
            next_tid: rand::random(),
            indications: VecDeque::new(),
            data: VecDeque::new(),
        }
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

    /// Allocates a UDP relay, with `extra` attributes (e.g.
    /// REQUESTED-ADDRESS-FAMILY).
    ///
    /// # Errors
    ///
    /// Connection errors.
    pub fn allocate_udp(&mut self, extra: &[Attribute<'_>]) -> io::Result<Reply> {
        let mut attrs = vec![Attribute::RequestedTransport(protocol::UDP)];
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

    /// ChannelBind `channel` to `peer`.
    ///
    /// # Errors
    ///
    /// Connection errors.
    pub fn channel_bind(&mut self, channel: u16, peer: SocketAddr) -> io::Result<Reply> {
        self.request(
            Method::CHANNEL_BIND,
            &[
                Attribute::ChannelNumber(channel),
                Attribute::XorPeerAddress(peer),
            ],
        )
    }

    /// Sends `data` as ChannelData on `channel`, padded for the stream.
    ///
    /// # Errors
    ///
    /// Connection errors; `InvalidInput` for more than 65,535 bytes.
    pub fn send_channel_data(&mut self, channel: u16, data: &[u8]) -> io::Result<()> {
        let mut buf = vec![0u8; ChannelData::encoded_len(data.len(), true)];
        let len = ChannelData { channel, data }
            .encode(&mut buf, true)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.stream.write_all(&buf[..len])
    }

    /// Sends `data` to `peer` in a Send indication.
    ///
    /// # Errors
    ///
    /// Connection errors; `InvalidInput` if it does not fit a STUN message.
    pub fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) -> io::Result<()> {
        let mut buf = vec![0u8; crate::data::send_indication_len(peer, data.len())];
        let len = crate::data::encode_send_indication(&mut buf, rand::random(), peer, data)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.stream.write_all(&buf[..len])
    }

    /// The next relayed data (ChannelData or a Data indication), waiting as
    /// long as the stream's reads do. Other indications are kept for
    /// [`next_indication`](Self::next_indication).
    ///
    /// # Errors
    ///
    /// Connection errors and timeouts; `InvalidData` for a response nobody
    /// asked for.
    pub fn next_data(&mut self) -> io::Result<StreamData> {
        if let Some(d) = self.data.pop_front() {
            return Ok(d);
        }
        loop {
            match read_frame(&mut self.stream)? {
                Received::Data(d) => return Ok(d),
                Received::Message(reply) if reply.class() == Class::Indication => {
                    self.indications.push_back(reply);
                }
                Received::Message(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a response while waiting for relayed data",
                    ));
                }
            }
        }
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
    /// Relayed data arriving meanwhile is kept for
    /// [`next_data`](Self::next_data).
    ///
    /// # Errors
    ///
    /// Connection errors and timeouts; `InvalidData` for a response nobody
    /// asked for.
    pub fn next_indication(&mut self) -> io::Result<Reply> {
        if let Some(i) = self.indications.pop_front() {
            return Ok(i);
        }
        loop {
            match read_frame(&mut self.stream)? {
                Received::Data(d) => self.data.push_back(d),
                Received::Message(reply) if reply.class() == Class::Indication => {
                    return Ok(reply);
                }
                Received::Message(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a response while waiting for an indication",
                    ));
                }
            }
        }
    }

    /// The control connection's stream (to close it, or read what the
    /// server sends unasked).
    pub fn stream(&self) -> &S {
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
            let reply = match read_frame(&mut self.stream)? {
                Received::Data(d) => {
                    self.data.push_back(d);
                    continue;
                }
                Received::Message(reply) => reply,
            };
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
