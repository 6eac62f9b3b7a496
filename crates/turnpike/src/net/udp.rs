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

use std::fmt;
use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};
use std::ptr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;

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

/// Bytes of control-message space per datagram: room for one
/// `in6_pktinfo` (40 bytes with its header) plus a small extra message.
const CMSG_CAP: usize = 64;

/// Source reported when the kernel hands back an address that is neither
/// IPv4 nor IPv6 (it does not happen on a UDP socket). Sending to it fails
/// with a per-datagram error.
const UNSPECIFIED_SOURCE: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

/// A control-message buffer, aligned for `cmsghdr`.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct CmsgBuf([u8; CMSG_CAP]);

/// Room for either socket address family this module deals with.
#[repr(C)]
#[derive(Clone, Copy)]
union SockAddrBuf {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

const _: () = {
    assert!(mem::align_of::<CmsgBuf>() >= mem::align_of::<libc::cmsghdr>());
    // SAFETY: CMSG_SPACE is plain arithmetic on its argument.
    let v6 = unsafe { libc::CMSG_SPACE(mem::size_of::<libc::in6_pktinfo>() as libc::c_uint) };
    // SAFETY: as above.
    let v4 = unsafe { libc::CMSG_SPACE(mem::size_of::<libc::in_pktinfo>() as libc::c_uint) };
    assert!(v6 as usize <= CMSG_CAP && v4 as usize <= CMSG_CAP);
};

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
        // SAFETY: `socket` owns its descriptor (closed only when the socket is
        // dropped), `Socket::as_raw_fd` always returns that same descriptor,
        // and the `AsyncFd` owns the socket for its whole life without ever
        // handing out a mutable reference or the socket itself.
        let fd = unsafe { AsyncFd::register(socket) }?;
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
        // SAFETY: as in `bind`: the AsyncFd owns the socket and its descriptor.
        let fd = unsafe { AsyncFd::register(socket) }?;
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

// SAFETY: the only non-`Send` fields are the raw pointers inside `iovecs`,
// `hdrs` and `spill`. They only ever point into this batch's own buffers
// (`buf`, `spill`, `iovecs`, `names`, `cmsgs`: heap or mapped memory that
// moves with it and is freed only with it); the kernel-facing ones are
// rewritten from `&mut self` right before each system call and only
// dereferenced (by the kernel and by the control-message parser) during
// that same `&mut self` call. No pointer to anything outside the batch, and
// no shared state, is ever stored, so handing the whole batch to another
// thread is sound.
unsafe impl Send for RecvBatch {}

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
            cmsgs: (0..capacity).map(|_| CmsgBuf([0; CMSG_CAP])).collect(),
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

    /// Points every header at its slot, spill area, address and control
    /// buffers and resets the lengths the kernel overwrites.
    fn prepare(&mut self) {
        let buf = self.buf.as_mut_ptr();
        let spill = self.spill.as_mut_ptr();
        let iovecs = self.iovecs.as_mut_ptr();
        let names = self.names.as_mut_ptr();
        let cmsgs = self.cmsgs.as_mut_ptr();
        for (i, hdr) in self.hdrs.iter_mut().enumerate() {
            let iov = iovecs.wrapping_add(i);
            // SAFETY: `i < capacity == iovecs.len()`, so `iov` is in bounds
            // of the `iovecs` allocation, and nothing else borrows it now.
            // The spill pointer stays inside slot `i`'s own `SPILL_STRIDE`
            // bytes of the mapping (`slot_size <= MAX_DATAGRAM <
            // SPILL_STRIDE`), so the two vectors never overlap another
            // slot's.
            unsafe {
                *iov = [
                    libc::iovec {
                        iov_base: buf.wrapping_add(i * self.slot_size).cast(),
                        iov_len: self.slot_size,
                    },
                    libc::iovec {
                        iov_base: spill.wrapping_add(i * SPILL_STRIDE + self.slot_size).cast(),
                        iov_len: SPILL_STRIDE - self.slot_size,
                    },
                ];
            }
            hdr.msg_hdr.msg_name = names.wrapping_add(i).cast();
            hdr.msg_hdr.msg_namelen = mem::size_of::<SockAddrBuf>() as libc::socklen_t;
            hdr.msg_hdr.msg_iov = iov.cast();
            hdr.msg_hdr.msg_iovlen = 2;
            hdr.msg_hdr.msg_control = cmsgs.wrapping_add(i).cast();
            hdr.msg_hdr.msg_controllen = CMSG_CAP as _;
            hdr.msg_hdr.msg_flags = 0;
            hdr.msg_len = 0;
        }
    }

    /// One `recvmmsg` call (retried on `EINTR`); decodes the metadata and
    /// makes large datagrams contiguous.
    fn recv_from(&mut self, fd: RawFd) -> io::Result<usize> {
        self.len = 0;
        let received = loop {
            self.prepare();
            // SAFETY: `prepare` just pointed every header at buffers owned by
            // `self` with the right lengths (slot and spill area,
            // `SockAddrBuf`, `CMSG_CAP`), and `&mut self` keeps them alive
            // and unaliased for the call. `vlen` is the length of `hdrs`. A
            // null timeout is allowed.
            let rc = unsafe {
                libc::recvmmsg(
                    fd,
                    self.hdrs.as_mut_ptr(),
                    self.capacity as libc::c_uint,
                    0,
                    ptr::null_mut(),
                )
            };
            match usize::try_from(rc) {
                // 0 cannot happen for a UDP socket and `vlen >= 1`; make it
                // a would-block so readiness is cleared instead of spinning.
                Ok(0) => return Err(io::ErrorKind::WouldBlock.into()),
                Ok(n) => break n.min(self.capacity),
                Err(_) => {
                    let err = io::Error::last_os_error();
                    if err.kind() != io::ErrorKind::Interrupted {
                        return Err(err);
                    }
                }
            }
        };
        for i in 0..received {
            let hdr = &self.hdrs[i];
            let source = decode_sockaddr(&self.names[i], hdr.msg_hdr.msg_namelen)
                .unwrap_or(UNSPECIFIED_SOURCE);
            // SAFETY: `hdr.msg_hdr` was set up by `prepare` in this call:
            // its control pointer points at `self.cmsgs[i]`, still alive, and
            // the kernel set `msg_controllen` to the bytes it wrote there.
            let destination = unsafe { parse_pktinfo(&hdr.msg_hdr) };
            self.metas[i] = RecvMeta {
                source,
                destination,
                truncated: hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            };
            if usize::try_from(hdr.msg_len).unwrap_or(usize::MAX) > self.slot_size {
                // The kernel wrote the rest behind the slot's spot in the
                // spill area: put the head in front of it.
                let slot = &self.buf[i * self.slot_size..(i + 1) * self.slot_size];
                self.spill.as_mut_slice()[i * SPILL_STRIDE..][..self.slot_size]
                    .copy_from_slice(slot);
            }
        }
        self.len = received;
        Ok(received)
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

// SAFETY: the only non-`Send` fields are the raw pointers inside `iovecs` and
// `hdrs`. They only ever point into this batch's own boxed buffers (`buf`,
// `iovecs`, `names`, `cmsgs`), which move with it; they are rewritten from
// `&mut self` right before each system call and only dereferenced (by the
// kernel) during that same `&mut self` call. No pointer to anything outside
// the batch, and no shared state, is ever stored, so handing the whole batch
// to another thread is sound.
unsafe impl Send for SendBatch {}

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
            cmsgs: (0..capacity).map(|_| CmsgBuf([0; CMSG_CAP])).collect(),
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

    /// Fills the kernel structures of datagrams `start..end` (at most
    /// `MAX_BATCH` of them). Stops at the first datagram whose addresses
    /// cannot be expressed on this socket and returns its index (or `end`).
    fn prepare(&mut self, start: usize, end: usize, ipv6_socket: bool) -> usize {
        // First the values (through safe indexing), then the pointers (all
        // derived after the last safe write, so they stay valid).
        let mut valid_end = end;
        for i in start..end {
            let Some((name, namelen)) = encode_sockaddr(self.destinations[i], ipv6_socket) else {
                valid_end = i;
                break;
            };
            let controllen = match self.sources[i] {
                None => 0,
                Some(ip) => match write_pktinfo(&mut self.cmsgs[i], ip, ipv6_socket) {
                    Some(n) => n,
                    None => {
                        valid_end = i;
                        break;
                    }
                },
            };
            self.names[i] = name;
            let msg = &mut self.hdrs[i].msg_hdr;
            msg.msg_namelen = namelen;
            msg.msg_controllen = controllen as _;
        }
        let buf = self.buf.as_mut_ptr();
        let iovecs = self.iovecs.as_mut_ptr();
        let names = self.names.as_mut_ptr();
        let cmsgs = self.cmsgs.as_mut_ptr();
        for i in start..valid_end {
            let iov = iovecs.wrapping_add(i);
            // SAFETY: `i < len <= capacity == iovecs.len()`, so `iov` is in
            // bounds of the `iovecs` allocation, and nothing else borrows it.
            unsafe {
                *iov = libc::iovec {
                    iov_base: buf.wrapping_add(self.offsets[i]).cast(),
                    iov_len: self.lens[i],
                };
            }
            let hdr = &mut self.hdrs[i];
            hdr.msg_hdr.msg_name = names.wrapping_add(i).cast();
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_control = if hdr.msg_hdr.msg_controllen == 0 {
                ptr::null_mut()
            } else {
                cmsgs.wrapping_add(i).cast()
            };
            hdr.msg_hdr.msg_flags = 0;
            hdr.msg_len = 0;
        }
        valid_end
    }

    /// Sends queued datagrams until none is left (`Ok`) or the socket would
    /// block or fails (`Err`), adding the number sent to `sent`.
    fn send_to(&mut self, fd: RawFd, ipv6_socket: bool, sent: &mut usize) -> io::Result<()> {
        while self.head < self.len {
            let start = self.head;
            let end = self.len.min(start + MAX_BATCH);
            let valid_end = self.prepare(start, end, ipv6_socket);
            if valid_end == start {
                // The first datagram cannot be sent from this socket at all.
                self.failed += 1;
                self.head += 1;
                continue;
            }
            let msgs = &mut self.hdrs[start..valid_end];
            // SAFETY: `prepare` just pointed these headers at buffers owned
            // by `self` (payload slots with their lengths, encoded addresses,
            // control messages), and `&mut self` keeps them alive and
            // unaliased for the call. `vlen` is the length of `msgs`.
            let rc =
                unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), msgs.len() as libc::c_uint, 0) };
            match usize::try_from(rc) {
                // 0 only happens for `vlen == 0`; never spin on it.
                Ok(0) => return Err(io::ErrorKind::WouldBlock.into()),
                Ok(n) => {
                    self.head += n;
                    *sent += n;
                }
                Err(_) => {
                    // Nothing was sent: the error belongs to datagram `start`.
                    let err = io::Error::last_os_error();
                    match err.raw_os_error() {
                        Some(libc::EINTR) => {}
                        Some(code) if is_per_datagram_error(code) => {
                            self.failed += 1;
                            self.head += 1;
                        }
                        _ => return Err(err),
                    }
                }
            }
        }
        Ok(())
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

/// Errors of `sendmmsg` that concern one datagram (its destination, source
/// or size, or a transient shortage) rather than the socket: the datagram is
/// dropped and the rest of the batch is sent.
fn is_per_datagram_error(code: i32) -> bool {
    matches!(
        code,
        libc::EHOSTUNREACH
            | libc::ENETUNREACH
            | libc::EHOSTDOWN
            | libc::ENETDOWN
            | libc::EACCES
            | libc::EPERM
            | libc::EINVAL
            | libc::EMSGSIZE
            | libc::ECONNREFUSED
            | libc::ECONNRESET
            | libc::EADDRNOTAVAIL
            | libc::EAFNOSUPPORT
            | libc::EDESTADDRREQ
            | libc::ENOBUFS
            | libc::ENOMEM
    )
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

/// `setsockopt(fd, level, name, &value, sizeof(int))`.
fn set_int_option(
    socket: &Socket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the descriptor is open (borrowed from `socket`), and the option
    // value points to a live `c_int` whose size is passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
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

/// Anonymous private memory whose pages the kernel provides on first touch
/// (`mmap` with `MAP_NORESERVE`): address space reserved up front, memory
/// spent only where something is written. Reads of untouched pages see
/// zeros. Unmapped when dropped.
struct LazyBytes {
    ptr: ptr::NonNull<u8>,
    len: usize,
}

impl LazyBytes {
    fn new(len: usize) -> io::Result<Self> {
        // SAFETY: a fresh anonymous mapping: no address hint, no descriptor;
        // the kernel picks the address and returns MAP_FAILED on error.
        let addr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len.max(1),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            ptr::NonNull::new(addr.cast()).ok_or_else(|| io::Error::other("mmap gave NULL"))?;
        Ok(Self { ptr, len })
    }

    fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is the start of a live, readable mapping of `len`
        // bytes (at least 1) owned by `self`, zero-filled where never
        // written; `&self` rules out a concurrent `&mut` from this type.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the borrow
        // exclusive (the kernel writes through raw pointers only inside a
        // system call that has returned by now).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for LazyBytes {
    fn drop(&mut self) {
        // SAFETY: the mapping `new` made, unmapped once; no borrow of it
        // outlives `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len.max(1));
        }
    }
}

/// `capacity * slot_size` zero bytes.
fn zeroed_bytes(capacity: usize, slot_size: usize) -> Box<[u8]> {
    let Some(total) = capacity.checked_mul(slot_size) else {
        panic!("UDP batch of {capacity} slots of {slot_size} bytes overflows usize");
    };
    vec![0; total].into_boxed_slice()
}

fn empty_iovec() -> libc::iovec {
    libc::iovec {
        iov_base: ptr::null_mut(),
        iov_len: 0,
    }
}

fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: `mmsghdr` is a C struct of integers and raw pointers (plus
    // private padding on some libcs), for which all-zero bytes are valid.
    unsafe { mem::zeroed() }
}

fn empty_sockaddr() -> SockAddrBuf {
    SockAddrBuf {
        v6: libc::sockaddr_in6 {
            sin6_family: 0,
            sin6_port: 0,
            sin6_flowinfo: 0,
            sin6_addr: libc::in6_addr { s6_addr: [0; 16] },
            sin6_scope_id: 0,
        },
    }
}

fn ipv4_from_in_addr(addr: libc::in_addr) -> Ipv4Addr {
    Ipv4Addr::from(addr.s_addr.to_ne_bytes())
}

fn in_addr_from_ipv4(ip: Ipv4Addr) -> libc::in_addr {
    libc::in_addr {
        s_addr: u32::from_ne_bytes(ip.octets()),
    }
}

/// An IPv6 address as IPv4 if it is IPv4-mapped (`::ffff:a.b.c.d`).
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Decodes a socket address written by the kernel (`len` bytes of `addr`).
fn decode_sockaddr(addr: &SockAddrBuf, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    if len < mem::size_of::<libc::sa_family_t>() {
        return None;
    }
    // SAFETY: both variants start with the family field, and both are plain
    // integers, valid for any bit pattern (the buffer is always initialised).
    let family = libc::c_int::from(unsafe { addr.v4.sin_family });
    match family {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: plain-integer variant; the family says the kernel wrote it.
            let sin = unsafe { addr.v4 };
            Some(SocketAddr::V4(SocketAddrV4::new(
                ipv4_from_in_addr(sin.sin_addr),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: plain-integer variant; the family says the kernel wrote it.
            let sin6 = unsafe { addr.v6 };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                None => SocketAddr::V6(SocketAddrV6::new(ip, port, 0, sin6.sin6_scope_id)),
            })
        }
        _ => None,
    }
}

/// Encodes a destination for a socket of the given family; `None` if it
/// cannot be expressed there (an IPv6 destination on an IPv4 socket).
fn encode_sockaddr(addr: SocketAddr, ipv6_socket: bool) -> Option<(SockAddrBuf, libc::socklen_t)> {
    let v6 = |ip: Ipv6Addr, port: u16, flowinfo: u32, scope_id: u32| {
        (
            SockAddrBuf {
                v6: libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: port.to_be(),
                    sin6_flowinfo: flowinfo.to_be(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: ip.octets(),
                    },
                    sin6_scope_id: scope_id,
                },
            },
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        )
    };
    let v4 = |ip: Ipv4Addr, port: u16| {
        (
            SockAddrBuf {
                v4: libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: port.to_be(),
                    sin_addr: in_addr_from_ipv4(ip),
                    sin_zero: [0; 8],
                },
            },
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    match (addr, ipv6_socket) {
        (SocketAddr::V4(a), false) => Some(v4(*a.ip(), a.port())),
        (SocketAddr::V4(a), true) => Some(v6(a.ip().to_ipv6_mapped(), a.port(), 0, 0)),
        (SocketAddr::V6(a), true) => Some(v6(*a.ip(), a.port(), a.flowinfo(), a.scope_id())),
        (SocketAddr::V6(a), false) => a.ip().to_ipv4_mapped().map(|ip| v4(ip, a.port())),
    }
}

/// Writes an `IP_PKTINFO` / `IPV6_PKTINFO` control message asking to send
/// from `source` into `buf`; returns its length (for `msg_controllen`), or
/// `None` if `source` cannot be expressed on this socket (an IPv6 address on
/// an IPv4 socket).
fn write_pktinfo(buf: &mut CmsgBuf, source: IpAddr, ipv6_socket: bool) -> Option<usize> {
    // SAFETY: `cmsghdr` is a C struct of integers (plus private padding on
    // some libcs) for which all-zero bytes are valid.
    let mut header: libc::cmsghdr = unsafe { mem::zeroed() };
    let base = ptr::from_mut(buf).cast::<libc::cmsghdr>();
    // SAFETY: pure pointer arithmetic: the data follows the header, inside
    // the buffer (which fits a header plus an `in6_pktinfo`, checked at
    // compile time).
    let data = unsafe { libc::CMSG_DATA(base) };
    let payload_len = if ipv6_socket {
        // SAFETY: `in6_pktinfo` is a C struct of integers; all-zero is valid.
        let mut info: libc::in6_pktinfo = unsafe { mem::zeroed() };
        info.ipi6_addr.s6_addr = match source {
            IpAddr::V6(ip) => ip.octets(),
            IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
        };
        header.cmsg_level = libc::IPPROTO_IPV6;
        header.cmsg_type = libc::IPV6_PKTINFO;
        // SAFETY: `data` points into `buf` with room for an `in6_pktinfo`
        // (see above); the write tolerates any alignment.
        unsafe { ptr::write_unaligned(data.cast(), info) };
        mem::size_of::<libc::in6_pktinfo>()
    } else {
        let IpAddr::V4(ip) = canonical_ip(source) else {
            return None;
        };
        // SAFETY: `in_pktinfo` is a C struct of integers; all-zero is valid.
        let mut info: libc::in_pktinfo = unsafe { mem::zeroed() };
        info.ipi_spec_dst = in_addr_from_ipv4(ip);
        header.cmsg_level = libc::IPPROTO_IP;
        header.cmsg_type = libc::IP_PKTINFO;
        // SAFETY: as above, for the smaller `in_pktinfo`.
        unsafe { ptr::write_unaligned(data.cast(), info) };
        mem::size_of::<libc::in_pktinfo>()
    };
    // SAFETY: CMSG_LEN / CMSG_SPACE are plain arithmetic.
    let (cmsg_len, space) = unsafe {
        (
            libc::CMSG_LEN(payload_len as libc::c_uint),
            libc::CMSG_SPACE(payload_len as libc::c_uint),
        )
    };
    header.cmsg_len = cmsg_len as _;
    // SAFETY: `base` is the start of `buf`, which is aligned for `cmsghdr`
    // and longer than one.
    unsafe { ptr::write(base, header) };
    Some(space as usize)
}

/// Finds the destination address in the `IP_PKTINFO` / `IPV6_PKTINFO`
/// control message of a received datagram.
///
/// # Safety
///
/// `msg.msg_control` must point to at least `msg.msg_controllen` readable,
/// `cmsghdr`-aligned bytes (or `msg_controllen` must be 0).
unsafe fn parse_pktinfo(msg: &libc::msghdr) -> Option<IpAddr> {
    // SAFETY: per the contract, the control buffer is valid for
    // `msg_controllen` bytes; CMSG_FIRSTHDR/CMSG_NXTHDR only return headers
    // that lie entirely within it.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !cmsg.is_null() {
        // SAFETY: `cmsg` is a non-null header within the buffer (see above);
        // the read is unaligned-tolerant anyway.
        let header = unsafe { ptr::read_unaligned(cmsg) };
        let cmsg_len = header.cmsg_len as usize;
        // SAFETY: pure pointer arithmetic within the same header.
        let data = unsafe { libc::CMSG_DATA(cmsg) };
        // SAFETY: `CMSG_LEN` is plain arithmetic.
        let (v4_len, v6_len) = unsafe {
            (
                libc::CMSG_LEN(mem::size_of::<libc::in_pktinfo>() as libc::c_uint) as usize,
                libc::CMSG_LEN(mem::size_of::<libc::in6_pktinfo>() as libc::c_uint) as usize,
            )
        };
        match (header.cmsg_level, header.cmsg_type) {
            (libc::IPPROTO_IP, libc::IP_PKTINFO) if cmsg_len >= v4_len => {
                // SAFETY: the kernel wrote `cmsg_len` bytes for this message,
                // enough for an `in_pktinfo` after the header.
                let info = unsafe { ptr::read_unaligned(data.cast::<libc::in_pktinfo>()) };
                return Some(IpAddr::V4(ipv4_from_in_addr(info.ipi_addr)));
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) if cmsg_len >= v6_len => {
                // SAFETY: as above, for an `in6_pktinfo`.
                let info = unsafe { ptr::read_unaligned(data.cast::<libc::in6_pktinfo>()) };
                return Some(canonical_ip(IpAddr::V6(Ipv6Addr::from(
                    info.ipi6_addr.s6_addr,
                ))));
            }
            _ => {}
        }
        // SAFETY: `msg` and `cmsg` satisfy CMSG_NXTHDR's requirements (see
        // above); it returns null past the end of the buffer.
        cmsg = unsafe { libc::CMSG_NXTHDR(msg, cmsg) };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::time::Duration;

    const TIMEOUT: Duration = Duration::from_secs(5);

    async fn within<F: Future>(future: F) -> F::Output {
        tokio::time::timeout(TIMEOUT, future)
            .await
            .expect("timed out")
    }

    fn bind(addr: &str) -> BatchUdpSocket {
        BatchUdpSocket::bind(addr.parse().unwrap(), &UdpOptions::default()).unwrap()
    }

    /// Receives until `count` datagrams have arrived; returns payloads and metas.
    async fn recv_n(
        socket: &BatchUdpSocket,
        batch: &mut RecvBatch,
        count: usize,
    ) -> Vec<(Vec<u8>, RecvMeta)> {
        let mut out = Vec::new();
        while out.len() < count {
            let n = within(socket.recv_batch(batch)).await.unwrap();
            assert!(n >= 1 && n == batch.len());
            out.extend(batch.iter().map(|(bytes, meta)| (bytes.to_vec(), meta)));
        }
        assert_eq!(out.len(), count, "more datagrams than expected");
        out
    }

    fn payload(i: usize) -> Vec<u8> {
        let len = 1 + (i * 97) % 1400;
        (0..len).map(|j| (i * 31 + j) as u8).collect()
    }

    #[tokio::test]
    async fn batch_to_several_receivers_v4() {
        let sender = bind("127.0.0.1:0");
        let receivers: Vec<_> = (0..3).map(|_| bind("127.0.0.1:0")).collect();
        let mut send = SendBatch::new(32, 1500);
        for i in 0..20 {
            let to = receivers[i % 3].local_addr();
            assert!(send.push(to, None, &payload(i)));
        }
        assert_eq!(send.len(), 20);
        assert_eq!(within(sender.send_batch(&mut send)).await.unwrap(), 20);
        assert!(send.is_empty());
        assert_eq!(send.failed_count(), 0);

        let mut recv = RecvBatch::new(8, 1500);
        for (r, receiver) in receivers.iter().enumerate() {
            let expected: Vec<_> = (0..20).filter(|i| i % 3 == r).map(payload).collect();
            let got = recv_n(receiver, &mut recv, expected.len()).await;
            for ((bytes, meta), want) in got.iter().zip(&expected) {
                assert_eq!(bytes, want);
                assert_eq!(meta.source, sender.local_addr());
                assert_eq!(meta.destination, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
                assert!(!meta.truncated);
            }
        }
    }

    #[tokio::test]
    async fn wildcard_socket_answers_from_chosen_address() {
        let server = bind("0.0.0.0:0");
        let port = server.local_addr().port();
        assert!(server.local_addr().ip().is_unspecified());
        let client = bind("127.0.0.1:0");
        let mut send = SendBatch::new(4, 1500);
        let mut recv = RecvBatch::new(4, 1500);

        // Request to 127.0.0.1, answer from 127.0.0.2.
        assert!(send.push(SocketAddr::from(([127, 0, 0, 1], port)), None, b"ping"));
        assert_eq!(within(client.send_batch(&mut send)).await.unwrap(), 1);
        let got = recv_n(&server, &mut recv, 1).await;
        assert_eq!(got[0].0, b"ping");
        assert_eq!(got[0].1.source, client.local_addr());
        assert_eq!(got[0].1.destination, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        assert!(send.push_with(got[0].1.source, Some(other), |buf| {
            buf[..4].copy_from_slice(b"pong");
            4
        }));
        assert_eq!(within(server.send_batch(&mut send)).await.unwrap(), 1);
        let reply = recv_n(&client, &mut recv, 1).await;
        assert_eq!(reply[0].0, b"pong");
        assert_eq!(reply[0].1.source, SocketAddr::new(other, port));

        // Request to 127.0.0.2, answer from where it arrived.
        assert!(send.push(SocketAddr::new(other, port), None, b"ping2"));
        assert_eq!(within(client.send_batch(&mut send)).await.unwrap(), 1);
        let got = recv_n(&server, &mut recv, 1).await;
        assert_eq!(got[0].1.destination, Some(other));
        assert!(send.push(got[0].1.source, got[0].1.destination, b"pong2"));
        assert_eq!(within(server.send_batch(&mut send)).await.unwrap(), 1);
        let reply = recv_n(&client, &mut recv, 1).await;
        assert_eq!(reply[0].0, b"pong2");
        assert_eq!(reply[0].1.source, SocketAddr::new(other, port));
    }

    fn int_option(socket: &BatchUdpSocket, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        let mut value: libc::c_int = -1;
        let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `value`.
        let rc = unsafe {
            libc::getsockopt(
                socket.fd.as_raw_fd(),
                level,
                name,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "getsockopt({level}, {name})");
        value
    }

    #[tokio::test]
    async fn dont_fragment_is_switched_per_datagram() {
        let v4 = bind("127.0.0.1:0");
        v4.set_dont_fragment(true).unwrap();
        let mode = int_option(&v4, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER);
        assert_eq!(mode, libc::IP_PMTUDISC_DO, "DF set");
        v4.set_dont_fragment(false).unwrap();
        let mode = int_option(&v4, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER);
        assert_eq!(mode, libc::IP_PMTUDISC_WANT, "back to the kernel's default");
        let v6 = bind("[::1]:0");
        v6.set_dont_fragment(true).unwrap();
        assert_eq!(int_option(&v6, libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG), 1);
        v6.set_dont_fragment(false).unwrap();
        assert_eq!(int_option(&v6, libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG), 0);
    }

    #[tokio::test]
    async fn reuse_port_and_dual_stack_binds() {
        let opts = UdpOptions {
            reuse_port: true,
            recv_buffer_size: Some(1 << 20),
            send_buffer_size: Some(1 << 20),
            dont_fragment: true,
        };
        let a = BatchUdpSocket::bind("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
        assert_eq!(
            int_option(&a, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER),
            libc::IP_PMTUDISC_DO,
            "DONT-FRAGMENT sets the DF bit"
        );
        let b = BatchUdpSocket::bind(a.local_addr(), &opts).unwrap();
        assert_eq!(a.local_addr(), b.local_addr());
        assert!(a.recv_buffer_size().unwrap() > 0);
        assert!(a.send_buffer_size().unwrap() > 0);

        // Without SO_REUSEPORT a second socket cannot take the address.
        let c = bind("127.0.0.1:0");
        let err = BatchUdpSocket::bind(c.local_addr(), &UdpOptions::default()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);

        // IPV6_V6ONLY: [::]:p and 0.0.0.0:p are separate sockets.
        let v6 = bind("[::]:0");
        let port = v6.local_addr().port();
        let v4 = BatchUdpSocket::bind(
            SocketAddr::from(([0, 0, 0, 0], port)),
            &UdpOptions::default(),
        )
        .unwrap();
        assert_eq!(v4.local_addr().port(), port);
    }

    #[tokio::test]
    async fn ipv6_loopback() {
        let a = bind("[::1]:0");
        let b = bind("[::]:0");
        let b_port = b.local_addr().port();
        let mut send = SendBatch::new(8, 1500);
        let mut recv = RecvBatch::new(8, 1500);
        for i in 0..5 {
            assert!(send.push(
                SocketAddr::from((Ipv6Addr::LOCALHOST, b_port)),
                None,
                &payload(i)
            ));
        }
        assert_eq!(within(a.send_batch(&mut send)).await.unwrap(), 5);
        let got = recv_n(&b, &mut recv, 5).await;
        for (i, (bytes, meta)) in got.iter().enumerate() {
            assert_eq!(*bytes, payload(i));
            assert_eq!(meta.source, a.local_addr());
            assert_eq!(meta.destination, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        }
        // Reply from the wildcard socket with an explicit IPv6 source.
        assert!(send.push(got[0].1.source, got[0].1.destination, b"back"));
        assert_eq!(within(b.send_batch(&mut send)).await.unwrap(), 1);
        let reply = recv_n(&a, &mut recv, 1).await;
        assert_eq!(reply[0].0, b"back");
        assert_eq!(
            reply[0].1.source,
            SocketAddr::from((Ipv6Addr::LOCALHOST, b_port))
        );
        assert_eq!(
            reply[0].1.destination,
            Some(IpAddr::V6(Ipv6Addr::LOCALHOST))
        );
    }

    #[tokio::test]
    async fn datagrams_larger_than_a_slot_arrive_whole() {
        let a = bind("127.0.0.1:0");
        let b = bind("127.0.0.1:0");
        // Larger than the slots, interleaved with small ones, several in
        // one receive: each has its own spill area.
        let sizes = [200, 64, 0, 65_507, 65, 9_000, 1];
        let datagram = |n: usize| -> Vec<u8> { (0..n).map(|i| (i * 7 + n) as u8).collect() };
        let mut send = SendBatch::new(8, 10_000);
        for &n in &sizes {
            assert!(
                send.push(b.local_addr(), None, &datagram(n)),
                "{n} bytes queued"
            );
        }
        assert_eq!(within(a.send_batch(&mut send)).await.unwrap(), sizes.len());
        let mut recv = RecvBatch::new(8, 64);
        let got = recv_n(&b, &mut recv, sizes.len()).await;
        for (&n, (bytes, meta)) in sizes.iter().zip(&got) {
            assert_eq!(bytes.len(), n);
            assert!(*bytes == datagram(n), "{n}-byte datagram intact");
            assert!(!meta.truncated);
        }
        // The slots are reused for small datagrams afterwards.
        assert!(send.push(b.local_addr(), None, b"small"));
        within(a.send_batch(&mut send)).await.unwrap();
        let got = recv_n(&b, &mut recv, 1).await;
        assert_eq!(got[0].0, b"small");
    }

    #[tokio::test]
    async fn bad_destinations_do_not_fail_the_batch() {
        let a = bind("127.0.0.1:0");
        let b = bind("127.0.0.1:0");
        let to = b.local_addr();
        let mut send = SendBatch::new(16, 1500);
        assert!(send.push(to, None, b"0"));
        assert!(send.push("0.0.0.0:0".parse().unwrap(), None, b"x")); // EINVAL
        assert!(send.push(to, None, b"1"));
        assert!(send.push("[::1]:9".parse().unwrap(), None, b"x")); // IPv6 on IPv4 socket
        assert!(send.push(to, Some("::1".parse().unwrap()), b"x")); // IPv6 source on IPv4 socket
        assert!(send.push(to, Some("203.0.113.7".parse().unwrap()), b"x")); // not a local address
        assert!(send.push("[::ffff:127.0.0.1]:0".parse().unwrap(), None, b"x")); // mapped, port 0
        assert!(send.push(
            SocketAddr::V6(format!("[::ffff:127.0.0.1]:{}", to.port()).parse().unwrap()),
            None,
            b"2"
        ));
        assert!(send.push(to, Some("::ffff:127.0.0.1".parse().unwrap()), b"3"));
        assert_eq!(within(a.send_batch(&mut send)).await.unwrap(), 4);
        assert_eq!(send.failed_count(), 5);
        assert!(send.is_empty());
        let got = recv_n(&b, &mut recv_batch(), 4).await;
        let bodies: Vec<_> = got.iter().map(|(bytes, _)| bytes.clone()).collect();
        assert_eq!(bodies, [b"0", b"1", b"2", b"3"]);

        // IPv6 socket (V6ONLY): IPv4 destinations fail one by one.
        let c = bind("[::1]:0");
        let d = bind("[::1]:0");
        assert!(send.push(d.local_addr(), None, b"a"));
        assert!(send.push(to, None, b"x")); // ENETUNREACH
        assert!(send.push(d.local_addr(), None, b"b"));
        assert!(send.push(d.local_addr(), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)), b"x"));
        assert!(send.push(d.local_addr(), None, b"c"));
        assert_eq!(within(c.send_batch(&mut send)).await.unwrap(), 3);
        assert_eq!(send.failed_count(), 5 + 2);
        let got = recv_n(&d, &mut recv_batch(), 3).await;
        let bodies: Vec<_> = got.iter().map(|(bytes, _)| bytes.clone()).collect();
        assert_eq!(bodies, [b"a", b"b", b"c"]);

        // Too large for UDP: EMSGSIZE.
        let mut huge = SendBatch::new(2, 70_000);
        assert!(huge.push_with(to, None, |buf| buf.len()));
        assert!(huge.push(to, None, b"ok"));
        assert_eq!(within(a.send_batch(&mut huge)).await.unwrap(), 1);
        assert_eq!(huge.failed_count(), 1);
        let got = recv_n(&b, &mut recv_batch(), 1).await;
        assert_eq!(got[0].0, b"ok");
    }

    fn recv_batch() -> RecvBatch {
        RecvBatch::new(16, 2048)
    }

    #[tokio::test]
    async fn push_limits() {
        let mut send = SendBatch::new(2, 8);
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert!(!send.push(to, None, &vec![0; MAX_DATAGRAM + 1]));
        assert!(send.push_with(to, None, |_| 0));
        assert!(send.is_empty());
        assert!(send.push(to, None, b"12345678"));
        assert!(send.push_with(to, None, |buf| buf.len() + 100));
        assert!(send.is_full());
        assert_eq!(send.len(), 2);
        assert!(!send.push(to, None, b"x"));
        assert!(!send.push_with(to, None, |_| unreachable!()));
        send.clear();
        // A large datagram takes the room of many small ones: the batch
        // is full after it although it holds fewer than `capacity`.
        let mut batch = SendBatch::new(4, 1000);
        assert!(batch.push(to, None, &[1; 1000]));
        assert!(batch.push(to, None, &[2; 60_000]));
        assert!(batch.is_full());
        assert_eq!(batch.len(), 2);
        assert!(!batch.push(to, None, b"x"));
        batch.clear();
        for _ in 0..4 {
            assert!(
                batch.push(to, None, &[3; 1000]),
                "small ones: `capacity` fit"
            );
        }
        assert!(batch.is_full());
        let socket = bind("127.0.0.1:0");
        let mut empty = SendBatch::new(1, 1);
        assert_eq!(within(socket.send_batch(&mut empty)).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn push_in_place_sends_what_fill_wrote_to_where_it_said() {
        let receiver = bind("127.0.0.1:0");
        let to = receiver.local_addr();
        let mut send = SendBatch::new(2, 16);
        assert!(send.push_in_place(|_| None));
        assert!(send.is_empty(), "None queues nothing");
        assert!(send.push_in_place(|slot| {
            slot[..5].copy_from_slice(b"hello");
            Some((5, to, None))
        }));
        assert_eq!(send.len(), 1);
        let socket = bind("127.0.0.1:0");
        assert_eq!(within(socket.send_batch(&mut send)).await.unwrap(), 1);
        let mut recv = RecvBatch::new(4, 64);
        assert_eq!(within(receiver.recv_batch(&mut recv)).await.unwrap(), 1);
        let (data, meta) = recv.get(0);
        assert_eq!(data, b"hello");
        assert_eq!(meta.source, socket.local_addr());
    }

    #[tokio::test]
    async fn batches_survive_moves_between_threads() {
        fn assert_send<T: Send>(_: &T) {}
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<BatchUdpSocket>();

        let (mut send, mut recv) =
            std::thread::spawn(|| (SendBatch::new(4, 64), RecvBatch::new(4, 64)))
                .join()
                .unwrap();
        let a = bind("127.0.0.1:0");
        let b = bind("127.0.0.1:0");
        assert!(send.push(b.local_addr(), None, b"first"));
        {
            let future = a.send_batch(&mut send);
            assert_send(&future);
            within(future).await.unwrap();
        }
        {
            let future = b.recv_batch(&mut recv);
            assert_send(&future);
            within(future).await.unwrap();
        }
        assert_eq!(recv.get(0).0, b"first");

        // Move both batches (their boxes stay put, the structs move) and reuse.
        let mut moved = Box::new((send, recv));
        assert!(moved.0.push(b.local_addr(), None, b"second"));
        within(a.send_batch(&mut moved.0)).await.unwrap();
        within(b.recv_batch(&mut moved.1)).await.unwrap();
        assert_eq!(moved.1.get(0).0, b"second");
    }

    #[test]
    fn bind_outside_runtime_is_an_error() {
        let err = BatchUdpSocket::bind("127.0.0.1:0".parse().unwrap(), &UdpOptions::default())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Other);
    }
}
