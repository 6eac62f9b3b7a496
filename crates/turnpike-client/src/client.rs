//! [`TurnClient`]: a thin tokio driver for one allocation over UDP.
//!
//! It owns a UDP socket connected to the server (one socket = one 5-tuple =
//! one allocation) and runs [`ClientTransaction`]s on it one at a time:
//! transmit, wait for a response or the retransmission timer, feed the
//! response back. All protocol decisions live in the sans-IO
//! [`crate::transaction`] module.
//!
//! While a transaction is waiting for its response, relayed data arriving on
//! the socket is dropped: this client suits set-up and functional tests, not a
//! data path that must not lose packets during a Refresh. The load generator
//! drives its sockets itself for that reason.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use tokio::net::UdpSocket;
use turnpike_codec::Message;

use crate::auth::{AuthState, Credentials};
use crate::data::{self, Incoming};
use crate::error::ClientError;
use crate::transaction::{
    AllocateParams, Allocated, ClientTransaction, Request, ResponseAction, RetransmitPolicy,
    Success, TimeoutAction,
};

/// The largest datagram the client receives.
const RECV_BUF_LEN: usize = 65_536;

/// Room for any request this client writes (a CreatePermission for about 100
/// IPv6 peers).
const SEND_BUF_LEN: usize = 4096;

/// Relayed data received by [`TurnClient::recv`], borrowing the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relayed<'a> {
    /// Arrived as ChannelData on `channel`.
    Channel {
        /// The channel number.
        channel: u16,
        /// The application data.
        data: &'a [u8],
    },
    /// Arrived in a Data indication from `peer`.
    Indication {
        /// The peer's address.
        peer: SocketAddr,
        /// The application data.
        data: &'a [u8],
    },
}

/// A TURN client for one allocation over UDP.
#[derive(Debug)]
pub struct TurnClient {
    socket: UdpSocket,
    server: SocketAddr,
    auth: AuthState,
    policy: RetransmitPolicy,
    send_buf: Vec<u8>,
    recv_buf: Vec<u8>,
}

impl TurnClient {
    /// Binds a UDP socket to an ephemeral port (on the unspecified address of
    /// the server's family) and connects it to `server`.
    pub async fn bind(server: SocketAddr, credentials: Credentials) -> Result<Self, ClientError> {
        let local: SocketAddr = if server.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local).await?;
        socket.connect(server).await?;
        Self::from_socket(socket, AuthState::new(credentials))
    }

    /// Wraps a socket already connected to the server, with what is known of
    /// the authentication (use [`AuthState::new`] for a fresh client, or the
    /// state of an earlier client on the same socket).
    ///
    /// # Errors
    ///
    /// `NotConnected` when the socket is not connected.
    pub fn from_socket(socket: UdpSocket, auth: AuthState) -> Result<Self, ClientError> {
        let server = socket.peer_addr()?;
        Ok(TurnClient {
            socket,
            server,
            auth,
            policy: RetransmitPolicy::default(),
            send_buf: vec![0; SEND_BUF_LEN],
            recv_buf: vec![0; RECV_BUF_LEN],
        })
    }

    /// Replaces the retransmission policy (default: RFC 8489's).
    pub fn set_retransmit_policy(&mut self, policy: RetransmitPolicy) {
        self.policy = policy;
    }

    /// The server's address.
    pub fn server_addr(&self) -> SocketAddr {
        self.server
    }

    /// The socket's local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The authentication state (realm and nonce learned so far).
    pub fn auth(&self) -> &AuthState {
        &self.auth
    }

    /// The socket, e.g. for readiness-based use.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// Takes the client apart, keeping the socket and what it learned, so the
    /// allocation can be driven by other code (and later rebuilt with
    /// [`from_socket`](Self::from_socket)).
    pub fn into_parts(self) -> (UdpSocket, AuthState) {
        (self.socket, self.auth)
    }

    /// Runs one request to completion: authentication retries and
    /// retransmissions included.
    ///
    /// # Errors
    ///
    /// The transaction's failure ([`ClientError`]); `Io` with
    /// `ConnectionRefused` when an ICMP error says nothing listens at the
    /// server address (failing fast rather than retransmitting into the void).
    pub async fn execute(&mut self, request: Request) -> Result<Success, ClientError> {
        let mut tx = ClientTransaction::new(request, self.policy);
        let TurnClient {
            socket,
            auth,
            send_buf,
            recv_buf,
            ..
        } = self;
        loop {
            let len = tx.transmit(auth, send_buf, Instant::now())?;
            socket.send(&send_buf[..len]).await?;
            // Wait for the response, a timer expiry, or a retry.
            loop {
                let deadline = tx.poll_timeout().ok_or(ClientError::Timeout)?;
                let received =
                    tokio::time::timeout_at(deadline.into(), socket.recv(recv_buf)).await;
                match received {
                    Err(_elapsed) => match tx.handle_timeout(Instant::now())? {
                        TimeoutAction::Retransmit => break,
                        TimeoutAction::Wait => continue,
                    },
                    Ok(Err(e)) => return Err(e.into()),
                    Ok(Ok(n)) => {
                        // Relayed data and garbage are not for this transaction.
                        let Ok(msg) = Message::parse(&recv_buf[..n]) else {
                            continue;
                        };
                        match tx.handle_response(auth, &msg) {
                            ResponseAction::Ignore => continue,
                            ResponseAction::Retry => break,
                            ResponseAction::Done(result) => return result,
                        }
                    }
                }
            }
        }
    }

    /// Allocates a relayed address (REQUESTED-TRANSPORT UDP).
    pub async fn allocate(&mut self, params: AllocateParams) -> Result<Allocated, ClientError> {
        match self.execute(Request::Allocate(params)).await? {
            Success::Allocate(a) => Ok(a),
            _ => Err(ClientError::InvalidResponse("unexpected success type")),
        }
    }

    /// Refreshes the allocation; returns the granted lifetime. A lifetime of 0
    /// deletes the allocation.
    pub async fn refresh(&mut self, lifetime: u32) -> Result<u32, ClientError> {
        match self.execute(Request::Refresh { lifetime }).await? {
            Success::Refresh { lifetime } => Ok(lifetime),
            _ => Err(ClientError::InvalidResponse("unexpected success type")),
        }
    }

    /// Installs or refreshes permissions for the peers' IP addresses.
    pub async fn create_permission(&mut self, peers: &[SocketAddr]) -> Result<(), ClientError> {
        self.execute(Request::CreatePermission {
            peers: peers.to_vec(),
        })
        .await
        .map(drop)
    }

    /// Binds (or refreshes) `channel` to `peer`.
    pub async fn channel_bind(
        &mut self,
        channel: u16,
        peer: SocketAddr,
    ) -> Result<(), ClientError> {
        self.execute(Request::ChannelBind { channel, peer })
            .await
            .map(drop)
    }

    /// Sends `data` to `peer` in a Send indication (needs a permission).
    pub async fn send_indication(
        &mut self,
        peer: SocketAddr,
        data: &[u8],
    ) -> Result<(), ClientError> {
        let needed = data::send_indication_len(peer, data.len());
        if self.send_buf.len() < needed {
            self.send_buf.resize(needed, 0);
        }
        let len = data::encode_send_indication(&mut self.send_buf, rand::random(), peer, data)?;
        self.socket.send(&self.send_buf[..len]).await?;
        Ok(())
    }

    /// Sends `data` as ChannelData on a bound channel.
    pub async fn send_channel_data(
        &mut self,
        channel: u16,
        data: &[u8],
    ) -> Result<(), ClientError> {
        if self.send_buf.len() < data::CHANNEL_DATA_HEADER_LEN + data.len() {
            self.send_buf
                .resize(data::CHANNEL_DATA_HEADER_LEN + data.len(), 0);
        }
        let len = data::encode_channel_data(&mut self.send_buf, channel, data)?;
        self.socket.send(&self.send_buf[..len]).await?;
        Ok(())
    }

    /// Waits for the next relayed data, skipping STUN messages that are not
    /// Data indications (late responses) and garbage.
    pub async fn recv<'a>(&mut self, buf: &'a mut [u8]) -> Result<Relayed<'a>, ClientError> {
        // Parse first to find the data's position, then re-borrow: returning
        // a borrow of `buf` from inside the loop would keep it borrowed for
        // every iteration.
        enum Source {
            Channel(u16),
            Peer(SocketAddr),
        }
        let (from, start, len) = loop {
            let n = self.socket.recv(buf).await?;
            let base = buf.as_ptr() as usize;
            match data::parse_incoming(&buf[..n]) {
                Incoming::ChannelData { channel, data } => {
                    break (
                        Source::Channel(channel),
                        data.as_ptr() as usize - base,
                        data.len(),
                    );
                }
                Incoming::Data { peer, data } => {
                    break (
                        Source::Peer(peer),
                        data.as_ptr() as usize - base,
                        data.len(),
                    );
                }
                Incoming::Stun(_) | Incoming::Invalid => continue,
            }
        };
        let data = &buf[start..start + len];
        Ok(match from {
            Source::Channel(channel) => Relayed::Channel { channel, data },
            Source::Peer(peer) => Relayed::Indication { peer, data },
        })
    }
}
