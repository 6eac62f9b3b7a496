//! The system-call side of [`super`]: everything that hands the kernel
//! pointers or reads what it wrote, and so the only `unsafe` code of the UDP
//! socket.
//!
//! - socket addresses ([`SockAddrBuf`]) and `IP_PKTINFO` / `IPV6_PKTINFO`
//!   control messages ([`CmsgBuf`]), encoded for `sendmmsg` and decoded
//!   after `recvmmsg`;
//! - the kernel-facing half of [`RecvBatch`] and [`SendBatch`]: pointing
//!   their `mmsghdr`s and `iovec`s at the batch's own buffers right before
//!   each `recvmmsg` / `sendmmsg` call, and why the batches may move between
//!   threads (`Send`);
//! - [`LazyBytes`], the `mmap`ed spill area for large datagrams;
//! - `setsockopt`, and registering a socket with tokio's reactor.
//!
//! Each `unsafe` block states the invariant it relies on in its `SAFETY:`
//! comment; what this module exports is safe to call.

#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};
use std::ptr;

use socket2::Socket;
use tokio::io::unix::AsyncFd;

use super::{MAX_BATCH, RecvBatch, RecvMeta, SPILL_STRIDE, SendBatch, UNSPECIFIED_SOURCE};

/// Bytes of control-message space per datagram: room for one
/// `in6_pktinfo` (40 bytes with its header) plus a small extra message.
const CMSG_CAP: usize = 64;

/// A control-message buffer, aligned for `cmsghdr`.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub(super) struct CmsgBuf([u8; CMSG_CAP]);

/// Room for either socket address family this module deals with.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) union SockAddrBuf {
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
    pub(super) fn recv_from(&mut self, fd: RawFd) -> io::Result<usize> {
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

// SAFETY: the only non-`Send` fields are the raw pointers inside `iovecs` and
// `hdrs`. They only ever point into this batch's own boxed buffers (`buf`,
// `iovecs`, `names`, `cmsgs`), which move with it; they are rewritten from
// `&mut self` right before each system call and only dereferenced (by the
// kernel) during that same `&mut self` call. No pointer to anything outside
// the batch, and no shared state, is ever stored, so handing the whole batch
// to another thread is sound.
unsafe impl Send for SendBatch {}

impl SendBatch {
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
    pub(super) fn send_to(
        &mut self,
        fd: RawFd,
        ipv6_socket: bool,
        sent: &mut usize,
    ) -> io::Result<()> {
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

/// `setsockopt(fd, level, name, &value, sizeof(int))`.
pub(super) fn set_int_option(
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

/// `getsockopt(fd, level, name)` of an `int` option: the tests read back
/// what [`set_int_option`] set.
#[cfg(test)]
pub(super) fn get_int_option(
    socket: &Socket,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = -1;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Registers `socket` with the current tokio runtime's reactor (tokio
/// panics outside a runtime: callers check first).
pub(super) fn register(socket: Socket) -> io::Result<AsyncFd<Socket>> {
    // SAFETY: `socket` owns its descriptor (closed only when the socket is
    // dropped), `Socket::as_raw_fd` always returns that same descriptor,
    // and the `AsyncFd` owns the socket for its whole life without ever
    // handing out a mutable reference or the socket itself.
    Ok(unsafe { AsyncFd::register(socket) }?)
}

/// Anonymous private memory whose pages the kernel provides on first touch
/// (`mmap` with `MAP_NORESERVE`): address space reserved up front, memory
/// spent only where something is written. Reads of untouched pages see
/// zeros. Unmapped when dropped.
pub(super) struct LazyBytes {
    ptr: ptr::NonNull<u8>,
    len: usize,
}

impl LazyBytes {
    pub(super) fn new(len: usize) -> io::Result<Self> {
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

    pub(super) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(super) fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is the start of a live, readable mapping of `len`
        // bytes (at least 1) owned by `self`, zero-filled where never
        // written; `&self` rules out a concurrent `&mut` from this type.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub(super) fn as_mut_slice(&mut self) -> &mut [u8] {
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

pub(super) fn empty_iovec() -> libc::iovec {
    libc::iovec {
        iov_base: ptr::null_mut(),
        iov_len: 0,
    }
}

pub(super) fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: `mmsghdr` is a C struct of integers and raw pointers (plus
    // private padding on some libcs), for which all-zero bytes are valid.
    unsafe { mem::zeroed() }
}

/// A zeroed control-message buffer.
pub(super) fn empty_cmsg() -> CmsgBuf {
    CmsgBuf([0; CMSG_CAP])
}

pub(super) fn empty_sockaddr() -> SockAddrBuf {
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
