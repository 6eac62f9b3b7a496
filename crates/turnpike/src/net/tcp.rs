//! TCP listeners and per-connection message framing.
//!
//! Every worker binds its own `SO_REUSEPORT` listener for each address, so
//! the kernel spreads accepted connections across workers and no accept lock
//! is shared. A connection's bytes are cut into STUN and ChannelData messages
//! by [`turnpike_codec::framing`]; the receive buffer grows only as far as the
//! message being assembled needs, up to the largest possible frame.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use turnpike_codec::framing::{self, Frame, MAX_FRAME_LEN};

/// Pending connections the kernel may queue per listener.
const LISTEN_BACKLOG: i32 = 1024;

/// Binds a nonblocking TCP listener. Must be called inside a tokio runtime.
///
/// `SO_REUSEADDR` lets a restarted server bind while old connections linger
/// in `TIME_WAIT` (on Linux it does not allow two live listeners);
/// `SO_REUSEPORT` lets each worker have its own listener on the same address.
pub fn bind_listener(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = listening_socket(addr)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// A nonblocking TCP socket for a listener on `addr`, not bound yet: IPv6
/// only for an IPv6 address, `SO_REUSEADDR` (see [`bind_listener`]).
fn listening_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    Ok(socket)
}

/// Pending peer connections the kernel may queue per TCP relayed address.
const RELAY_BACKLOG: i32 = 64;

/// Binds the listening socket of a TCP relayed address (RFC 6062). Must be
/// called inside a tokio runtime.
///
/// The port must be ours alone, so the socket is bound without
/// `SO_REUSEPORT` (binding fails with `AddrInUse` if any socket holds the
/// port); `SO_REUSEPORT` is set only afterwards, so that connections to
/// peers can be opened from the same address ([`connect_from`]).
pub fn bind_relay_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = listening_socket(addr)?;
    socket.bind(&addr.into())?;
    socket.listen(RELAY_BACKLOG)?;
    socket.set_reuse_port(true)?;
    TcpListener::from_std(socket.into())
}

/// Opens a TCP connection to `peer` from `local`, a TCP relayed address
/// whose listener [`bind_relay_listener`] bound (RFC 6062 §5.2: the peer
/// sees the relayed address). Must be called inside a tokio runtime.
pub async fn connect_from(local: SocketAddr, peer: SocketAddr) -> io::Result<TcpStream> {
    let socket = if local.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(local)?;
    let stream = socket.connect(peer).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Accumulates a byte stream and yields whole messages.
///
/// The buffer grows only as far as the message being assembled needs, and
/// only up to a limit: [`UNAUTHENTICATED_FRAME_LEN`] until
/// [`allow_large_frames`](Self::allow_large_frames) (a client that has not
/// authenticated has no business sending more than a TURN request), then
/// [`MAX_FRAME_LEN`]. A larger frame makes the stream invalid. Whenever
/// everything received has been cut into messages, a grown buffer shrinks
/// back to its initial size, so an idle connection does not keep 64 KiB
/// because of one large message.
#[derive(Debug)]
pub struct FrameBuffer {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    initial: usize,
    limit: usize,
}

/// The largest frame a connection may send before it has authenticated
/// (made an allocation): room for any TURN request, not for relayed data.
pub const UNAUTHENTICATED_FRAME_LEN: usize = 4096;

/// What [`FrameBuffer::next_frame`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum NextFrame<'a> {
    /// A whole message (without ChannelData padding).
    Frame(&'a [u8]),
    /// More bytes are needed: call [`FrameBuffer::read_slot`] and read.
    NeedMore,
    /// The stream is not STUN/ChannelData, or a frame is larger than
    /// allowed: close the connection.
    Invalid,
}

impl FrameBuffer {
    /// Starts with `initial` bytes of room; grows to at most
    /// [`UNAUTHENTICATED_FRAME_LEN`] until told otherwise.
    pub fn new(initial: usize) -> Self {
        let initial = initial.clamp(64, MAX_FRAME_LEN);
        FrameBuffer {
            buf: vec![0; initial],
            start: 0,
            end: 0,
            initial,
            limit: UNAUTHENTICATED_FRAME_LEN.max(initial),
        }
    }

    /// Lets frames grow to [`MAX_FRAME_LEN`]: the client has authenticated.
    pub fn allow_large_frames(&mut self) {
        self.limit = MAX_FRAME_LEN;
    }

    /// Cuts the next message off the front of the buffer.
    pub fn next_frame(&mut self) -> NextFrame<'_> {
        match framing::next_frame(&self.buf[self.start..self.end]) {
            Frame::Complete { len, consumed, .. } => {
                let frame_start = self.start;
                self.start += consumed;
                NextFrame::Frame(&self.buf[frame_start..frame_start + len])
            }
            Frame::Incomplete { needed } if needed > self.limit => NextFrame::Invalid,
            Frame::Incomplete { needed } => {
                self.make_room(needed);
                NextFrame::NeedMore
            }
            Frame::Invalid => NextFrame::Invalid,
        }
    }

    /// Ensures a whole frame of `needed` bytes fits from the buffer's start.
    fn make_room(&mut self, needed: usize) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if needed > self.buf.len() {
            // `needed` is at most the limit, which bounds the growth.
            self.buf.resize(needed.min(self.limit), 0);
        }
    }

    /// Free space to read into; call [`filled`](Self::filled) after reading.
    pub fn read_slot(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > self.initial {
                self.buf.truncate(self.initial);
                self.buf.shrink_to_fit();
            }
        }
        if self.end == self.buf.len() {
            self.make_room(self.buf.len());
        }
        &mut self.buf[self.end..]
    }

    /// Records `n` bytes read into [`read_slot`](Self::read_slot).
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// The bytes received but not yet cut into messages: what a client
    /// sent after its ConnectionBind, which belongs to the peer.
    pub fn remaining(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_reads() {
        let mut stream = vec![0x00, 0x01, 0x00, 0x04, 0x21, 0x12, 0xA4, 0x42];
        stream.extend_from_slice(&[7; 12]);
        stream.extend_from_slice(&[0x80, 0x22, 0x00, 0x00]); // empty SOFTWARE
        stream.extend_from_slice(&[0x40, 0x00, 0x00, 0x01, 0xAB, 0, 0, 0]);
        let mut fb = FrameBuffer::new(64);
        let mut frames = Vec::new();
        for chunk in stream.chunks(3) {
            let slot = fb.read_slot();
            slot[..chunk.len()].copy_from_slice(chunk);
            fb.filled(chunk.len());
            while let NextFrame::Frame(f) = fb.next_frame() {
                frames.push(f.to_vec());
            }
        }
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].len(), 24);
        assert_eq!(frames[1], vec![0x40, 0x00, 0x00, 0x01, 0xAB]);
    }

    #[test]
    fn grows_for_a_large_frame_and_rejects_garbage() {
        let mut fb = FrameBuffer::new(64);
        let head = [0x00, 0x01, 0x03, 0xE8]; // a 1000-byte body
        fb.read_slot()[..4].copy_from_slice(&head);
        fb.filled(4);
        assert_eq!(fb.next_frame(), NextFrame::NeedMore);
        assert!(fb.read_slot().len() >= 1016);

        let mut bad = FrameBuffer::new(64);
        bad.read_slot()[..4].copy_from_slice(&[0xFF; 4]);
        bad.filled(4);
        assert_eq!(bad.next_frame(), NextFrame::Invalid);
    }

    /// Before authentication a frame may not exceed a TURN request's size,
    /// after it any size; a grown buffer shrinks back once drained.
    #[test]
    fn frames_are_bounded_until_authenticated_and_the_buffer_shrinks() {
        // A STUN header announcing a 60,000-byte body.
        let huge = [0x00, 0x01, 0xEA, 0x60];
        let mut fb = FrameBuffer::new(2048);
        fb.read_slot()[..4].copy_from_slice(&huge);
        fb.filled(4);
        assert_eq!(fb.next_frame(), NextFrame::Invalid, "unauthenticated");

        let mut fb = FrameBuffer::new(2048);
        fb.allow_large_frames();
        fb.read_slot()[..4].copy_from_slice(&huge);
        fb.filled(4);
        assert_eq!(fb.next_frame(), NextFrame::NeedMore);
        let mut left = 20 + 60_000 - 4;
        while left > 0 {
            let slot = fb.read_slot();
            let n = slot.len().min(left);
            slot[..n].fill(0);
            fb.filled(n);
            left -= n;
        }
        assert!(matches!(fb.next_frame(), NextFrame::Frame(f) if f.len() == 60_020));
        assert_eq!(fb.next_frame(), NextFrame::NeedMore);
        assert_eq!(fb.read_slot().len(), 2048, "shrunk back once drained");
    }
}
