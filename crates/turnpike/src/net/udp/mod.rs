//! Batched UDP socket for Linux: the relay's packet path.
//!
//! A TURN relay moves many small datagrams between many peers. With one
//! `recvfrom`/`sendto` system call per datagram the syscall cost dominates, so
//! this module moves datagrams in batches:
//!
//! - [`BatchUdpSocket::recv_batch`] makes one `recvmmsg(2)` call that fills up
//!   to [`RecvBatch::capacity`] preallocated slots, and receives every
//!   datagram whole, whatever its size (see *Large datagrams*);
//! - [`BatchUdpSocket::send_batch`] hands every queued datagram of a
//!   [`SendBatch`] to `sendmmsg(2)`, usually in a single call, even when every
//!   datagram goes to a different peer (which GSO cannot do).
//!
//! Every received datagram reports the local address it was sent to
//! (`IP_PKTINFO` / `IPV6_RECVPKTINFO`) and every queued datagram may name the
//! local address to send from (an `IP_PKTINFO` / `IPV6_PKTINFO` control
//! message), so a socket bound to a wildcard address answers each client from
//! the address the client talked to.
//!
//! # Hot path
//!
//! All buffers (payload slots, `iovec`s, `mmsghdr`s, socket addresses and
//! control-message buffers) are allocated once, in [`RecvBatch::new`] and
//! [`SendBatch::new`]. Receiving and sending allocate nothing, take no locks
//! and log nothing. A batch belongs to one worker; it is `Send` so it can be
//! built on one thread and moved to its worker, but it is not shared.
//!
//! Readiness comes from tokio's [`AsyncFd`] (edge-triggered epoll): a call
//! first tries the system call and only waits when the kernel says `EAGAIN`.
//!
//! # Large datagrams
//!
//! Media datagrams fit an Ethernet MTU, so receive slots are small (the
//! caller picks `slot_size`, 2 KiB in the server) and packed, which keeps a
//! batch in a few dozen cache lines. But a relay must also carry the rare
//! datagram up to UDP's limit (65,507 bytes over IPv4, 65,527 over IPv6),
//! and a datagram larger than its buffers is cut by the kernel and lost. So
//! each slot is followed, for the kernel, by a second `iovec` into a spill
//! area of its own: [`MAX_DATAGRAM`] bytes per slot of address space,
//! mapped but not backed by memory until a large datagram is written there
//! (an anonymous `MAP_NORESERVE` mapping; untouched pages cost nothing). A
//! datagram that overflows its slot is made contiguous in the spill area
//! (its first `slot_size` bytes are copied there: one small copy, only for
//! large datagrams). Memory therefore grows only with large datagrams
//! actually received, and at most to `capacity * MAX_DATAGRAM` per batch.
//!
//! A [`SendBatch`] packs datagrams of any size into one buffer with room
//! for `capacity` datagrams of `slot_size` bytes plus one of
//! [`MAX_DATAGRAM`]: small datagrams fill it as before, a large one simply
//! takes more of it, and the batch reports itself full sooner.
//!
//! # Addresses
//!
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, which only a dual-stack IPv6
//! socket sees; [`BatchUdpSocket::bind`] never makes one) are reported as plain
//! IPv4 addresses, and an IPv4 destination or source given to an IPv6 socket is
//! mapped back, so addresses round-trip. The IPv6 flow label is not reported
//! (`flowinfo` is always 0), so the same peer always yields an equal
//! [`SocketAddr`].
//!
//! Linux only (`recvmmsg`, `sendmmsg`, `IP_PKTINFO`).
//!
//! # Layout
//!
//! This file is the safe API: the socket, its options and the batches'
//! bookkeeping. Everything that hands pointers to the kernel or reads what it
//! wrote (socket addresses, control messages, `recvmmsg`/`sendmmsg`, the
//! lazily backed spill mapping, `setsockopt`) lives in [`sys`], the only
//! module here allowed `unsafe` code (`net` denies it everywhere else).

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;

use sys::{
    CmsgBuf, LazyBytes, SockAddrBuf, empty_cmsg, empty_iovec, empty_sockaddr, set_int_option,
    zeroed_mmsghdr,
};

mod sys;
#[cfg(test)]
mod tests;

/// The most datagrams one `recvmmsg`/`sendmmsg` call handles (the kernel
/// clamps `vlen` to `UIO_MAXIOV`).
const MAX_BATCH: usize = libc::UIO_MAXIOV as usize;

/// The largest datagram a batch receives or queues: UDP's 16-bit length
/// bounds every payload (65,507 bytes over IPv4, 65,527 over IPv6).
pub const MAX_DATAGRAM: usize = 65_535;

/// Spill area per receive slot: room for [`MAX_DATAGRAM`], in whole pages.
const SPILL_STRIDE: usize = 65_536;

/// Send datagrams start on cache-line boundaries.
const SEND_ALIGN: usize = 64;

/// Source reported when the kernel hands back an address that is neither
/// IPv4 nor IPv6 (it does not happen on a UDP socket). Sending to it fails
/// with a per-datagram error.
const UNSPECIFIED_SOURCE: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

/// How [`BatchUdpSocket::bind`] sets up its socket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UdpOptions {
    /// Set `SO_REUSEPORT`, so that several sockets (one per worker thread,
    /// each created with this option, by the same user) bind the same address
    /// and the kernel spreads flows across them by a hash of the 4-tuple.
    pub reuse_port: bool,
    /// Receive buffer size in bytes, passed as is to `SO_RCVBUFFORCE` (which
    /// needs `CAP_NET_ADMIN`) or else `SO_RCVBUF` (which the kernel caps at
    /// `net.core.rmem_max`); Linux then doubles it for its bookkeeping.
    /// `None` keeps the system default. Read the result with
    /// [`BatchUdpSocket::recv_buffer_size`].
    pub recv_buffer_size: Option<usize>,
    /// Send buffer size in bytes, set like
    /// [`recv_buffer_size`](Self::recv_buffer_size) with `SO_SNDBUFFORCE` /
    /// `SO_SNDBUF` (capped at `net.core.wmem_max`). `None` keeps the system
    /// default.
    pub send_buffer_size: Option<usize>,
    /// Set the Don't Fragment bit on every datagram sent
    /// (`IP_MTU_DISCOVER` / `IPV6_MTU_DISCOVER` = `PMTUDISC_DO`): a TURN
    /// relay socket whose client asked for DONT-FRAGMENT.
    pub dont_fragment: bool,
}

/// A nonblocking UDP socket that receives and sends datagrams in batches.
///
/// It is `Send + Sync`; the usual set-up is one socket per worker thread, all
/// bound to the same address with [`UdpOptions::reuse_port`].
#[derive(Debug)]
pub struct BatchUdpSocket {
    fd: AsyncFd<Socket>,
    local_addr: SocketAddr,
    ipv6: bool,
}

impl BatchUdpSocket {
    /// Creates a nonblocking, close-on-exec UDP socket bound to `addr` and
    /// registers it with the current tokio runtime.
    ///
    /// - `SO_REUSEPORT` when [`UdpOptions::reuse_port`] is set, so each worker
    ///   thread binds its own socket to the same address and the kernel
    ///   spreads flows between them. `SO_REUSEADDR` is deliberately *not*
    ///   set: for UDP on Linux it lets any other process, of any user, bind
    ///   the same address and take the unicast traffic, and UDP has no
    ///   `TIME_WAIT` that would need it. Without `reuse_port` a second bind
    ///   of the same address fails with `AddrInUse`.
    /// - `IPV6_V6ONLY` on IPv6 sockets, so `[::]:3478` and `0.0.0.0:3478`
    ///   coexist as two sockets.
    /// - `IP_PKTINFO` / `IPV6_RECVPKTINFO`, so every received datagram
    ///   reports its local destination address ([`RecvMeta::destination`]),
    ///   which a socket bound to a wildcard address needs to answer from the
    ///   right address.
    /// - The buffer sizes of `opts`.
    ///
    /// # Errors
    ///
    /// Any failing system call, and an error (not a panic) when called outside
    /// a tokio runtime. The runtime must have I/O enabled (tokio panics
    /// otherwise).
    pub fn bind(addr: SocketAddr, opts: &UdpOptions) -> io::Result<Self> {
        // AsyncFd::register panics outside a runtime; make that an error.
        tokio::runtime::Handle::try_current().map_err(io::Error::other)?;

        let ipv6 = addr.is_ipv6();
        let socket = Socket::new(
            Domain::for_address(addr),
            Type::DGRAM.nonblocking().cloexec(),
            Some(Protocol::UDP),
        )?;
        if opts.reuse_port {
            socket.set_reuse_port(true)?;
        }
        if ipv6 {
            socket.set_only_v6(true)?;
            set_int_option(&socket, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
        } else {
            set_int_option(&socket, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)?;
        }
        if opts.dont_fragment {
            set_dont_fragment(&socket, ipv6, true)?;
        }
        if let Some(size) = opts.recv_buffer_size {
            set_buffer_size(&socket, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, size)?;
        }
        if let Some(size) = opts.send_buffer_size {
            set_buffer_size(&socket, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, size)?;
        }
        socket.bind(&addr.into())?;
        let local_addr = socket.local_addr()?.as_socket().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "bound UDP socket has a non-IP local address",
            )
        })?;
        let fd = sys::register(socket)?;
        Ok(Self {
            fd,
            local_addr,
            ipv6,
        })
    }

    /// The address the socket is bound to, with the actual port when bound
    /// to port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether datagrams sent from now on may be fragmented (RFC 8656 §14,
    /// "IPv4 Fragmentation" and "IPv6 Fragmentation"): with `true` the DF
    /// bit is set (IPv4, `IP_PMTUDISC_DO`) or the kernel never fragments
    /// (IPv6, `IPV6_DONTFRAG`), and a datagram larger than the path MTU
    /// fails with `EMSGSIZE`; with `false` the socket is back to the
    /// kernel's default (`IP_PMTUDISC_WANT`: DF on datagrams that fit the
    /// path MTU, larger ones fragmented by the kernel).
    ///
    /// # Errors
    ///
    /// The `setsockopt` error.
    pub fn set_dont_fragment(&self, dont_fragment: bool) -> io::Result<()> {
        set_dont_fragment(self.fd.get_ref(), self.ipv6, dont_fragment)
    }

    /// The kernel's receive buffer size (`SO_RCVBUF`; Linux reports twice
    /// the size that was set, to account for its bookkeeping).
    ///
    /// # Errors
    ///
    /// The `getsockopt` error.
    pub fn recv_buffer_size(&self) -> io::Result<usize> {
        self.fd.get_ref().recv_buffer_size()
    }

    /// The kernel's send buffer size (`SO_SNDBUF`, reported like
    /// [`recv_buffer_size`](Self::recv_buffer_size)).
    ///
    /// # Errors
    ///
    /// The `getsockopt` error.
    pub fn send_buffer_size(&self) -> io::Result<usize> {
        self.fd.get_ref().send_buffer_size()
    }

    /// Waits until the socket is readable, then receives up to
    /// [`batch.capacity()`](RecvBatch::capacity) datagrams with one
    /// `recvmmsg` call. Returns how many (at least 1); read them with
    /// [`RecvBatch::get`].
    ///
    /// `EAGAIN` waits for readiness again and `EINTR` is retried. ICMP errors
    /// that Linux may queue on the socket (`ECONNREFUSED`, `EHOSTUNREACH`,
    /// ...) concern some earlier send, not this receive, so they are skipped
    /// too.
    ///
    /// Cancel safe: if the future is dropped, no datagram has been taken from
    /// the socket (the batch's previous contents may be gone).
    ///
    /// # Errors
    ///
    /// Any other `recvmmsg` error, or a failure of the tokio reactor.
    pub async fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| batch.recv_from(fd.as_raw_fd())) {
                Ok(Ok(n)) => {
                    // A short batch means the queue is empty: clearing
                    // readiness now saves the `recvmmsg` that would only
                    // return EAGAIN. Safe: tokio clears only if no new
                    // readiness event arrived since this guard was taken.
                    if n < batch.capacity() {
                        guard.clear_ready();
                    }
                    return Ok(n);
                }
                Ok(Err(e)) if is_stale_icmp_error(&e) => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
    }

    /// Sends every datagram queued in `batch` with as few `sendmmsg` calls
    /// as possible (one per [`libc::UIO_MAXIOV`] datagrams when nothing
    /// fails), waiting for writability when the kernel says `EAGAIN`.
    /// Returns how many datagrams were sent; the batch is empty afterwards.
    ///
    /// A datagram that fails on its own — an error that depends on its
    /// destination, source or size: `EHOSTUNREACH`, `ENETUNREACH`, `EACCES`,
    /// `EPERM`, `EINVAL`, `EMSGSIZE`, `ECONNREFUSED`, `EADDRNOTAVAIL`,
    /// `EAFNOSUPPORT`, `ENOBUFS`, ... — or that cannot be expressed on this
    /// socket (an IPv6 destination or source on an IPv4 socket) is dropped and
    /// counted in [`SendBatch::failed_count`]; the other datagrams are still
    /// sent. Sending to an IPv4 destination from an IPv6 socket uses the
    /// IPv4-mapped address, which a `V6ONLY` socket rejects per datagram.
    ///
    /// Cancel safe: the batch remembers how far it got, so if the future is
    /// dropped the datagrams already sent are gone from the batch and the
    /// next call sends only the rest.
    ///
    /// # Errors
    ///
    /// Errors of the socket itself (`EBADF`, `ENOTSOCK`, `EFAULT`, unknown
    /// errors) and reactor failures. The batch is cleared then too: the
    /// datagrams not yet sent are dropped.
    pub async fn send_batch(&self, batch: &mut SendBatch) -> io::Result<usize> {
        let mut sent = 0;
        while !batch.is_empty() {
            let mut guard = match self.fd.writable().await {
                Ok(guard) => guard,
                Err(e) => {
                    batch.clear();
                    return Err(e);
                }
            };
            match guard.try_io(|fd| batch.send_to(fd.as_raw_fd(), self.ipv6, &mut sent)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    batch.clear();
                    return Err(e);
                }
                Err(_would_block) => {}
            }
        }
        batch.clear();
        Ok(sent)
    }

    /// Like [`recv_batch`](Self::recv_batch), for a batch shared by many
    /// sockets of one worker (TURN relay sockets: one per allocation, so a
    /// batch each would cost kilobytes per allocation). The batch is borrowed
    /// only inside the system call, never across an `.await`; read it right
    /// after this returns, before awaiting anything else.
    ///
    /// # Errors
    ///
    /// As for `recv_batch`.
    pub async fn recv_batch_shared(
        &self,
        batch: &std::cell::RefCell<RecvBatch>,
    ) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| batch.borrow_mut().recv_from(fd.as_raw_fd())) {
                Ok(Ok(n)) => {
                    // As in `recv_batch`: a short batch drained the queue.
                    if n < batch.borrow().capacity() {
                        guard.clear_ready();
                    }
                    return Ok(n);
                }
                Ok(Err(e)) if is_stale_icmp_error(&e) => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
    }

    /// Sends what `batch` holds without waiting: datagrams the kernel cannot
    /// take right now (`EAGAIN`) are dropped, as a router drops on a full
    /// queue. For paths that must not await (the relay fast path sends
    /// while it holds the worker's shared buffers). Clears the batch and
    /// returns how many were sent.
    ///
    /// # Errors
    ///
    /// Errors of the socket itself.
    pub fn try_send_batch(&self, batch: &mut SendBatch) -> io::Result<usize> {
        let mut sent = 0;
        let result = batch.send_to(self.fd.as_raw_fd(), self.ipv6, &mut sent);
        let dropped = batch.len().saturating_sub(sent);
        batch.failed += dropped as u64;
        batch.clear();
        match result {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(sent),
        }
    }

    /// Sends one datagram without waiting (`sendto`); `WouldBlock` when the
    /// kernel's buffer is full.
    ///
    /// # Errors
    ///
    /// The `sendto` error.
    pub fn try_send_to(&self, payload: &[u8], destination: SocketAddr) -> io::Result<usize> {
        self.fd.get_ref().send_to(payload, &destination.into())
    }

    /// Gives the socket back, deregistered from the runtime (to park a
    /// reserved relay socket, or hand it to another worker).
    ///
    /// # Errors
    ///
    /// Deregistration failure.
    pub fn into_socket(self) -> Socket {
        self.fd.into_inner()
    }

    /// Wraps a socket made by [`into_socket`](Self::into_socket) for the
    /// current runtime.
    ///
    /// # Errors
    ///
    /// Outside a runtime, or if the socket has no IP address.
    pub fn from_socket(socket: Socket) -> io::Result<Self> {
        tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        let local_addr = socket.local_addr()?.as_socket().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "socket has a non-IP local address",
            )
        })?;
        let fd = sys::register(socket)?;
        Ok(Self {
            fd,
            local_addr,
            ipv6: local_addr.is_ipv6(),
        })
    }
}

/// Metadata of one received datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvMeta {
    /// The peer that sent the datagram (IPv4-mapped IPv6 addresses are
    /// reported as IPv4; the IPv6 flow label is not reported).
    pub source: SocketAddr,
    /// The local address the datagram was sent to, from `IP_PKTINFO` /
    /// `IPV6_PKTINFO` (the header's destination address, so for a broadcast
    /// or multicast datagram that group address). `None` if the kernel did
    /// not report it.
    pub destination: Option<IpAddr>,
    /// The datagram was larger than the slot and its spill area together
    /// (`MSG_TRUNC`), which a UDP datagram never is: the bytes returned
    /// are its first [`MAX_DATAGRAM`] bytes and the rest is lost.
    pub truncated: bool,
}

impl RecvMeta {
    const EMPTY: Self = Self {
        source: UNSPECIFIED_SOURCE,
        destination: None,
        truncated: false,
    };
}

/// Preallocated buffers for [`BatchUdpSocket::recv_batch`]: `capacity`
/// slots of `slot_size` bytes each, their spill areas (see the module's
/// *Large datagrams*), with their `iovec`s, `mmsghdr`s, source address and
/// control-message buffers, all allocated once in [`new`](Self::new).
///
/// `Send` (build it, then move it to its worker thread) but not `Sync`.
/// The kernel-facing pointers point into the batch's own heap buffers and are
/// rewritten right before every system call, so moving the batch is harmless.
pub struct RecvBatch {
    capacity: usize,
    slot_size: usize,
    /// `capacity * slot_size` payload bytes.
    buf: Box<[u8]>,
    /// `capacity * SPILL_STRIDE` bytes of address space: slot `i`'s
    /// overflow, and then its whole datagram, at `i * SPILL_STRIDE`.
    spill: LazyBytes,
    /// Two per slot: the slot, then its spill area past the slot's length.
    iovecs: Box<[[libc::iovec; 2]]>,
    hdrs: Box<[libc::mmsghdr]>,
    names: Box<[SockAddrBuf]>,
    cmsgs: Box<[CmsgBuf]>,
    /// Decoded metadata of the datagrams of the last receive.
    metas: Box<[RecvMeta]>,
    /// Number of datagrams of the last receive.
    len: usize,
}

impl RecvBatch {
    /// Allocates a batch of `capacity` slots of `slot_size` bytes each,
    /// and reserves (without backing it) the spill area that lets every
    /// slot take a datagram of up to [`MAX_DATAGRAM`] bytes.
    ///
    /// `capacity` is clamped to `1..=`[`libc::UIO_MAXIOV`] (the kernel's own
    /// limit per call) and `slot_size` to `1..=`[`MAX_DATAGRAM`]. Choose a
    /// `slot_size` that holds the common datagram (an Ethernet MTU's worth):
    /// larger ones still arrive whole, at the cost of one copy of
    /// `slot_size` bytes.
    ///
    /// # Panics
    ///
    /// If the buffers cannot be allocated or the spill area not mapped.
    pub fn new(capacity: usize, slot_size: usize) -> Self {
        let capacity = capacity.clamp(1, MAX_BATCH);
        let slot_size = slot_size.clamp(1, MAX_DATAGRAM);
        let spill = LazyBytes::new(capacity * SPILL_STRIDE).unwrap_or_else(|err| {
            panic!("cannot map {capacity} x 64 KiB for large datagrams: {err}")
        });
        Self {
            capacity,
            slot_size,
            buf: zeroed_bytes(capacity, slot_size),
            spill,
            iovecs: (0..capacity).map(|_| [empty_iovec(); 2]).collect(),
            hdrs: (0..capacity).map(|_| zeroed_mmsghdr()).collect(),
            names: (0..capacity).map(|_| empty_sockaddr()).collect(),
            cmsgs: (0..capacity).map(|_| empty_cmsg()).collect(),
            metas: (0..capacity).map(|_| RecvMeta::EMPTY).collect(),
            len: 0,
        }
    }

    /// The most datagrams one receive can return.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The size of each slot: the longest datagram received without a copy.
    pub fn slot_size(&self) -> usize {
        self.slot_size
    }

    /// The number of datagrams of the last receive (0 before the first one
    /// and after a failed one).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the last receive left no datagram.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Datagram `i` of the last receive: all its bytes, and its metadata.
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`, like slice indexing.
    pub fn get(&self, i: usize) -> (&[u8], RecvMeta) {
        let meta = self.metas[..self.len][i];
        let received = usize::try_from(self.hdrs[i].msg_len).unwrap_or(usize::MAX);
        if received <= self.slot_size {
            let start = i * self.slot_size;
            return (&self.buf[start..start + received], meta);
        }
        // `recv_from` made it contiguous in the spill area.
        let start = i * SPILL_STRIDE;
        let len = received.min(SPILL_STRIDE);
        (&self.spill.as_slice()[start..start + len], meta)
    }

    /// The datagrams of the last receive, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&[u8], RecvMeta)> + '_ {
        (0..self.len).map(|i| self.get(i))
    }
}

impl fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvBatch")
            .field("capacity", &self.capacity)
            .field("slot_size", &self.slot_size)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// Preallocated buffers for [`BatchUdpSocket::send_batch`]: room for
/// `capacity` datagrams of `slot_size` bytes, or fewer larger ones (each up
/// to [`MAX_DATAGRAM`]), each with its destination, optional source address
/// and the kernel structures to send it, all allocated once in
/// [`new`](Self::new).
///
/// Datagrams are written in place with [`push_with`](Self::push_with) (or
/// copied with [`push`](Self::push)) and sent with
/// [`BatchUdpSocket::send_batch`]. They are packed one after the other, so
/// a large datagram takes more room and the batch is full sooner
/// ([`is_full`](Self::is_full)).
///
/// `Send` (build it, then move it to its worker thread) but not `Sync`.
/// The kernel-facing pointers point into the batch's own heap buffers and are
/// rewritten right before every system call, so moving the batch is harmless.
pub struct SendBatch {
    capacity: usize,
    slot_size: usize,
    /// `capacity * slot_size + MAX_DATAGRAM` payload bytes (a little more
    /// for alignment).
    buf: Box<[u8]>,
    /// Where the next datagram is written in `buf`.
    end: usize,
    offsets: Box<[usize]>,
    lens: Box<[usize]>,
    destinations: Box<[SocketAddr]>,
    sources: Box<[Option<IpAddr>]>,
    iovecs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    names: Box<[SockAddrBuf]>,
    cmsgs: Box<[CmsgBuf]>,
    /// Datagrams `head..len` are queued; those before `head` were sent or
    /// dropped by a send that has not finished (it was cancelled).
    head: usize,
    len: usize,
    failed: u64,
}

impl SendBatch {
    /// Allocates a batch with room for `capacity` datagrams of `slot_size`
    /// bytes each (both clamped to at least 1, `slot_size` to at most
    /// [`MAX_DATAGRAM`]), plus one of [`MAX_DATAGRAM`]: whatever is queued
    /// before, the batch takes a datagram of any size until it is full. A
    /// capacity above [`libc::UIO_MAXIOV`] works but needs one `sendmmsg`
    /// per `UIO_MAXIOV` datagrams.
    ///
    /// # Panics
    ///
    /// If the buffer size overflows `usize` or cannot be allocated.
    pub fn new(capacity: usize, slot_size: usize) -> Self {
        let capacity = capacity.max(1);
        let slot_size = slot_size.clamp(1, MAX_DATAGRAM);
        // Each datagram starts aligned, which costs up to SEND_ALIGN - 1
        // bytes of padding behind it.
        let room = (slot_size + SEND_ALIGN - 1) & !(SEND_ALIGN - 1);
        let Some(size) = capacity
            .checked_mul(room)
            .and_then(|n| n.checked_add(MAX_DATAGRAM))
        else {
            panic!("UDP send batch of {capacity} datagrams of {slot_size} bytes overflows usize");
        };
        Self {
            capacity,
            slot_size,
            buf: vec![0; size].into_boxed_slice(),
            end: 0,
            offsets: vec![0; capacity].into_boxed_slice(),
            lens: vec![0; capacity].into_boxed_slice(),
            destinations: vec![UNSPECIFIED_SOURCE; capacity].into_boxed_slice(),
            sources: vec![None; capacity].into_boxed_slice(),
            iovecs: (0..capacity).map(|_| empty_iovec()).collect(),
            hdrs: (0..capacity).map(|_| zeroed_mmsghdr()).collect(),
            names: (0..capacity).map(|_| empty_sockaddr()).collect(),
            cmsgs: (0..capacity).map(|_| empty_cmsg()).collect(),
            head: 0,
            len: 0,
            failed: 0,
        }
    }

    /// The most datagrams the batch holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The room per datagram when all are this small: the batch holds
    /// [`capacity`](Self::capacity) of them.
    pub fn slot_size(&self) -> usize {
        self.slot_size
    }

    /// The number of queued datagrams.
    pub fn len(&self) -> usize {
        self.len - self.head
    }

    /// Whether no datagram is queued.
    pub fn is_empty(&self) -> bool {
        self.head == self.len
    }

    /// Whether no more datagram can be queued before the batch is sent:
    /// `capacity` are queued, or the room left might not hold one of
    /// [`MAX_DATAGRAM`] bytes.
    pub fn is_full(&self) -> bool {
        self.len == self.capacity || self.buf.len() - self.end < MAX_DATAGRAM
    }

    /// How many datagrams [`BatchUdpSocket::send_batch`] has dropped because
    /// of a per-datagram error, over the life of this batch (a plain
    /// per-worker counter, to be aggregated by whoever owns the batch).
    pub fn failed_count(&self) -> u64 {
        self.failed
    }

    /// Drops every queued datagram.
    pub fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
        self.end = 0;
    }

    /// The free room for the next datagram: [`MAX_DATAGRAM`] bytes
    /// holding stale data. Only when not [`is_full`](Self::is_full).
    fn free_room(&mut self) -> &mut [u8] {
        &mut self.buf[self.end..self.end + MAX_DATAGRAM]
    }

    /// Queues one datagram, written in place: `fill` gets the free room
    /// ([`MAX_DATAGRAM`] bytes, holding stale data) and returns how many
    /// bytes it wrote; 0 queues nothing (and a larger value is clamped to
    /// the room).
    ///
    /// `source_ip`, when set, is the local address to send from (an
    /// `IP_PKTINFO` / `IPV6_PKTINFO` control message): typically the
    /// [`RecvMeta::destination`] of the request, so that a socket bound to a
    /// wildcard address answers from the address the client used.
    ///
    /// Returns `false`, without calling `fill`, if the batch is full.
    pub fn push_with(
        &mut self,
        destination: SocketAddr,
        source_ip: Option<IpAddr>,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> bool {
        if self.is_full() {
            return false;
        }
        let written = fill(self.free_room());
        if written > 0 {
            self.enqueue(destination, source_ip, written.min(MAX_DATAGRAM));
        }
        true
    }

    /// Queues a copy of `payload` (an empty payload queues an empty
    /// datagram). See [`push_with`](Self::push_with) for `source_ip`.
    ///
    /// Returns `false`, queueing nothing, if the batch is full or `payload`
    /// is longer than [`MAX_DATAGRAM`].
    pub fn push(
        &mut self,
        destination: SocketAddr,
        source_ip: Option<IpAddr>,
        payload: &[u8],
    ) -> bool {
        if self.is_full() || payload.len() > MAX_DATAGRAM {
            return false;
        }
        self.free_room()[..payload.len()].copy_from_slice(payload);
        self.enqueue(destination, source_ip, payload.len());
        true
    }

    /// Queues a datagram written in place whose addresses are known only
    /// once it is written, as when the sans-IO core writes an answer straight
    /// into the batch. `fill` gets the free room ([`MAX_DATAGRAM`] bytes)
    /// and returns the length, destination and source IP, or `None` to
    /// queue nothing (the room is then reused).
    ///
    /// Returns `false`, without calling `fill`, if the batch is full.
    pub fn push_in_place(
        &mut self,
        fill: impl FnOnce(&mut [u8]) -> Option<(usize, SocketAddr, Option<IpAddr>)>,
    ) -> bool {
        if self.is_full() {
            return false;
        }
        if let Some((written, destination, source_ip)) = fill(self.free_room())
            && written > 0
        {
            self.enqueue(destination, source_ip, written.min(MAX_DATAGRAM));
        }
        true
    }

    /// Records the datagram just written at `self.end`.
    fn enqueue(&mut self, destination: SocketAddr, source_ip: Option<IpAddr>, len: usize) {
        let i = self.len;
        self.offsets[i] = self.end;
        self.lens[i] = len;
        self.destinations[i] = destination;
        self.sources[i] = source_ip;
        self.len += 1;
        // An empty datagram still takes one aligned unit, so that offsets
        // stay distinct.
        self.end += (len.max(1) + SEND_ALIGN - 1) & !(SEND_ALIGN - 1);
    }
}

impl fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendBatch")
            .field("capacity", &self.capacity)
            .field("slot_size", &self.slot_size)
            .field("len", &self.len())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

/// Errors a receive may report that are left-overs of earlier sends (queued
/// ICMP errors) rather than a problem of the socket.
fn is_stale_icmp_error(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(
            libc::ECONNREFUSED
                | libc::ECONNRESET
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::EHOSTDOWN
                | libc::ENETDOWN
                | libc::EPROTO
        )
    )
}

/// See [`BatchUdpSocket::set_dont_fragment`].
fn set_dont_fragment(socket: &Socket, ipv6: bool, dont_fragment: bool) -> io::Result<()> {
    if ipv6 {
        set_int_option(
            socket,
            libc::IPPROTO_IPV6,
            libc::IPV6_DONTFRAG,
            libc::c_int::from(dont_fragment),
        )
    } else {
        let mode = if dont_fragment {
            libc::IP_PMTUDISC_DO
        } else {
            libc::IP_PMTUDISC_WANT
        };
        set_int_option(socket, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, mode)
    }
}

/// Sets a buffer size with the privileged `force` option (which ignores the
/// `rmem_max`/`wmem_max` caps) when allowed, else with the plain one.
fn set_buffer_size(
    socket: &Socket,
    force: libc::c_int,
    plain: libc::c_int,
    size: usize,
) -> io::Result<()> {
    // Passed as given, like every other program does (the kernel doubles
    // it for its bookkeeping); the option takes an int.
    let value = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    match set_int_option(socket, libc::SOL_SOCKET, force, value) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            set_int_option(socket, libc::SOL_SOCKET, plain, value)
        }
        Err(e) => Err(e),
    }
}

/// `capacity * slot_size` zero bytes.
fn zeroed_bytes(capacity: usize, slot_size: usize) -> Box<[u8]> {
    let Some(total) = capacity.checked_mul(slot_size) else {
        panic!("UDP batch of {capacity} slots of {slot_size} bytes overflows usize");
    };
    vec![0; total].into_boxed_slice()
}
