//! The types that cross the boundary between the core and the I/O shell.

use std::net::SocketAddr;

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
}

impl Transmit {
    /// An answer of `len` bytes to `packet`, from the address it arrived on.
    pub fn reply(packet: &Packet<'_>, len: usize) -> Transmit {
        Transmit {
            transport: packet.transport,
            source: packet.local,
            destination: packet.remote,
            len,
        }
    }
}
