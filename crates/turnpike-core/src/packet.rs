//! The types that cross the boundary between the core and the I/O shell.

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

/// An answer the shell must send. Its bytes are the first `len` bytes of the
/// buffer the caller passed to the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The transport to send on.
    pub transport: Transport,
    /// The local address to send from. For connection transports it is the
    /// connection's own local address; for UDP it may be another of the
    /// server's addresses (RFC 5780 CHANGE-REQUEST).
    pub source: SocketAddr,
    /// Where to send it.
    pub destination: SocketAddr,
    /// How many bytes of the output buffer to send.
    pub len: usize,
    /// Send it with the DF bit set (IPv4) or unfragmented (IPv6): data for
    /// a peer whose Send indication, or whose allocation's Allocate,
    /// carried DONT-FRAGMENT (RFC 8656 §7.2, §11.2, §14). Larger than the
    /// path MTU, it is dropped rather than fragmented.
    pub dont_fragment: bool,
}

impl Transmit {
    /// An answer of `len` bytes to `packet`, from the address it arrived on.
    pub fn reply(packet: &Packet<'_>, len: usize) -> Transmit {
        Transmit {
            transport: packet.transport,
            source: packet.local,
            destination: packet.remote,
            len,
            dont_fragment: false,
        }
    }
}
