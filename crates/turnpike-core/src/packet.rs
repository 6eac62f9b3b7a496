//! What a client packet is as it enters the core (its transport, its
//! 5-tuple), and the size limits of each transport.

use std::net::{IpAddr, SocketAddr};

/// The largest UDP payload to or from an address of `ip`'s family: IPv4's
/// 16-bit total length less its 20-byte header and UDP's 8 (65,507 bytes);
/// IPv6's 16-bit payload length less UDP's 8 (65,527 bytes; jumbograms
/// aside, which no relay path carries).
pub const fn max_udp_payload(ip: IpAddr) -> usize {
    match ip {
        IpAddr::V4(_) => 65_535 - 20 - 8,
        IpAddr::V6(_) => 65_535 - 8,
    }
}

/// The largest plaintext of one DTLS record (RFC 6347 §4.1.1: 2^14 bytes).
/// Over DTLS each STUN or ChannelData message is one record, so this is the
/// longest message a DTLS client can be sent.
pub const MAX_DTLS_MESSAGE: usize = 16_384;

/// The transport a packet arrived on (and its answer leaves on).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Plain UDP.
    Udp,
    /// Plain TCP: messages framed from a stream.
    Tcp,
    /// TLS over TCP.
    Tls,
    /// DTLS over UDP.
    Dtls,
}

impl Transport {
    /// Whether messages are framed from a byte stream (so ChannelData is padded).
    pub const fn is_stream(self) -> bool {
        matches!(self, Transport::Tcp | Transport::Tls)
    }

    /// Whether the transport is connection-oriented, so an answer can only go
    /// back on the connection it came in on (no CHANGE-REQUEST, no RESPONSE-PORT).
    pub const fn is_connection(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// The longest message the server can send to a client at `client` on
    /// this transport: one UDP datagram, one DTLS record; on TCP and TLS
    /// only the messages' own length fields bound it.
    pub const fn max_message_len(self, client: IpAddr) -> usize {
        match self {
            Transport::Udp => max_udp_payload(client),
            Transport::Dtls => MAX_DTLS_MESSAGE,
            Transport::Tcp | Transport::Tls => usize::MAX,
        }
    }
}

/// One datagram, or one message framed from a stream, as received.
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a> {
    /// What it arrived on.
    pub transport: Transport,
    /// The local address it was sent to (for a socket bound to a wildcard
    /// address: the destination address reported by the kernel).
    pub local: SocketAddr,
    /// The address it came from.
    pub remote: SocketAddr,
    /// The message bytes.
    pub data: &'a [u8],
}

impl Packet<'_> {
    /// The 5-tuple it arrived on, the client's side of an allocation.
    pub fn five_tuple(&self) -> FiveTuple {
        FiveTuple {
            transport: self.transport,
            client: self.remote,
            server: self.local,
        }
    }
}

/// The client side of an allocation: transport, client address, and the
/// server address the client talks to (RFC 8656 §2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    /// Client-to-server transport.
    pub transport: Transport,
    /// The client's (server-reflexive) address.
    pub client: SocketAddr,
    /// The server address the client sends to.
    pub server: SocketAddr,
}
