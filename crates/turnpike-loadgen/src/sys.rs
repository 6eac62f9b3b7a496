//! The operating-system side of the load generator (Linux only): `epoll` with
//! a nanosecond timeout, batched `recvmmsg`/`sendmmsg`, CPU and memory
//! readings from `getrusage` and `/proc`, and the file-descriptor limit.
//!
//! The generator moves as many datagrams as the server under test, so it
//! cannot afford a system call and an allocation per datagram: batches are
//! allocated once per worker and reused for every call.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Datagrams per `recvmmsg`/`sendmmsg` call.
pub(crate) const BATCH: usize = 64;

/// Whether `epoll_pwait2` (Linux 5.11+) failed with `ENOSYS`, so waits fall
/// back to `epoll_wait`'s millisecond timeouts.
static NO_EPOLL_PWAIT2: AtomicBool = AtomicBool::new(false);

/// An `epoll` instance; tokens are the `u64` given to [`Epoll::add`].
#[derive(Debug)]
pub(crate) struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: plain system call; the result is checked before use.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(Epoll {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Watches `fd` for readability (level-triggered: a socket not drained
    /// completely is reported again, so the loop may cap work per socket).
    pub(crate) fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `ev` is a valid, initialised event for the duration of the call.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout` for events; returns how many were written to
    /// `events` (0 on timeout or signal interruption).
    ///
    /// Paced sending needs sub-millisecond wake-ups, hence `epoll_pwait2`;
    /// without it, the timeout is rounded up to whole milliseconds.
    pub(crate) fn wait(
        &self,
        events: &mut [libc::epoll_event],
        timeout: Duration,
    ) -> io::Result<usize> {
        let max = events.len().min(i32::MAX as usize) as libc::c_int;
        let rc = if NO_EPOLL_PWAIT2.load(Ordering::Relaxed) {
            self.wait_ms(events, max, timeout)
        } else {
            let ts = libc::timespec {
                tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
                tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
            };
            // SAFETY: `events` has room for `max` entries; `ts` outlives the
            // call; a null sigmask means "leave the mask alone".
            let rc = unsafe {
                libc::epoll_pwait2(
                    self.fd.as_raw_fd(),
                    events.as_mut_ptr(),
                    max,
                    &ts,
                    ptr::null(),
                )
            };
            if rc < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
                NO_EPOLL_PWAIT2.store(true, Ordering::Relaxed);
                self.wait_ms(events, max, timeout)
            } else {
                rc
            }
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(e);
        }
        Ok(rc as usize)
    }

    fn wait_ms(
        &self,
        events: &mut [libc::epoll_event],
        max: libc::c_int,
        t: Duration,
    ) -> libc::c_int {
        let ms = t.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
        // SAFETY: `events` has room for `max` entries.
        unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), max, ms) }
    }
}

/// A reusable batch of datagram slots for `recvmmsg`/`sendmmsg`.
///
/// The `mmsghdr`s point at the batch's own `iovec`s, addresses and buffers.
/// Those pointers are set once, in [`MsgBatch::new`]: the vectors are never
/// resized, so their heap storage never moves, even when the batch does.
/// Afterwards only lengths are patched, and only for the slots the previous
/// call used: at one datagram per wake-up (low rates), rebuilding all
/// `BATCH` headers per call would cost more than the system call's entry.
/// The pointed-to arrays are only ever written through raw pointers derived
/// from `as_mut_ptr`, so the stored pointers stay valid.
pub(crate) struct MsgBatch {
    slot_len: usize,
    bufs: Vec<u8>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// Source/destination addresses; empty for connected sockets.
    names: Vec<libc::sockaddr_storage>,
    /// Datagram lengths: received, or to send.
    lens: Vec<usize>,
    /// Leading slots whose `iov_len`/`msg_namelen` differ from the receive
    /// defaults (set by a send, or by the kernel on receive).
    touched: usize,
}

impl std::fmt::Debug for MsgBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsgBatch")
            .field("slots", &self.lens.len())
            .field("slot_len", &self.slot_len)
            .finish()
    }
}

const NAME_LEN: libc::socklen_t = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;

impl MsgBatch {
    /// `BATCH` slots of `slot_len` bytes; `with_names` keeps per-datagram
    /// addresses (for the unconnected echo peer).
    pub(crate) fn new(slot_len: usize, with_names: bool) -> Self {
        // SAFETY: these libc structs are plain data for which all-zero bytes
        // are a valid (empty) value.
        let zero_iov: libc::iovec = unsafe { mem::zeroed() };
        // SAFETY: as above.
        let zero_hdr: libc::mmsghdr = unsafe { mem::zeroed() };
        // SAFETY: as above.
        let zero_name: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let mut b = MsgBatch {
            slot_len,
            bufs: vec![0; slot_len * BATCH],
            iovs: vec![zero_iov; BATCH],
            hdrs: vec![zero_hdr; BATCH],
            names: if with_names {
                vec![zero_name; BATCH]
            } else {
                Vec::new()
            },
            lens: vec![0; BATCH],
            touched: 0,
        };
        let bufs = b.bufs.as_mut_ptr();
        let iovs = b.iovs.as_mut_ptr();
        let hdrs = b.hdrs.as_mut_ptr();
        let names = b.names.as_mut_ptr();
        for i in 0..BATCH {
            // SAFETY: every index is below BATCH, the length of each vector
            // (and `bufs` holds BATCH slots of `slot_len`).
            unsafe {
                *iovs.add(i) = libc::iovec {
                    iov_base: bufs.add(i * slot_len).cast(),
                    iov_len: slot_len,
                };
                let h = &mut (*hdrs.add(i)).msg_hdr;
                h.msg_iov = iovs.add(i);
                h.msg_iovlen = 1;
                if with_names {
                    h.msg_name = names.add(i).cast();
                    h.msg_namelen = NAME_LEN;
                }
            }
        }
        b
    }

    /// The whole of slot `i`, for writing a datagram to send.
    pub(crate) fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.bufs[i * self.slot_len..(i + 1) * self.slot_len]
    }

    /// Sets the length of the datagram in slot `i`.
    pub(crate) fn set_len(&mut self, i: usize, len: usize) {
        self.lens[i] = len.min(self.slot_len);
    }

    /// The datagram received in slot `i`.
    pub(crate) fn received(&self, i: usize) -> &[u8] {
        &self.bufs[i * self.slot_len..i * self.slot_len + self.lens[i]]
    }

    /// Receives up to a batch without blocking; returns how many datagrams
    /// arrived (0 when none were waiting).
    pub(crate) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let iovs = self.iovs.as_mut_ptr();
        let hdrs = self.hdrs.as_mut_ptr();
        let with_names = !self.names.is_empty();
        for i in 0..self.touched {
            // SAFETY: i < touched <= BATCH.
            unsafe {
                (*iovs.add(i)).iov_len = self.slot_len;
                if with_names {
                    (*hdrs.add(i)).msg_hdr.msg_namelen = NAME_LEN;
                }
            }
        }
        self.touched = 0;
        // SAFETY: the headers point at live buffers of the stated sizes (set
        // up in `new`), and `BATCH` headers exist.
        let rc = unsafe {
            libc::recvmmsg(
                fd,
                hdrs,
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                ptr::null_mut(),
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        let n = rc as usize;
        for i in 0..n {
            // SAFETY: i < n <= BATCH; the kernel has written these headers.
            let len = unsafe { (*hdrs.add(i)).msg_len } as usize;
            self.lens[i] = len.min(self.slot_len);
        }
        if with_names {
            // The kernel shortened msg_namelen to each source's size.
            self.touched = n;
        }
        Ok(n)
    }

    /// Sends slots `0..count` (lengths from [`set_len`](Self::set_len) or the
    /// last receive; destinations from the last receive when the batch has
    /// addresses); returns how many the kernel took, stopping at the first
    /// failure. An error is returned only when not even the first datagram
    /// could be sent for a reason other than a full buffer.
    pub(crate) fn send(&mut self, fd: RawFd, count: usize) -> io::Result<usize> {
        let count = count.min(BATCH);
        let iovs = self.iovs.as_mut_ptr();
        let hdrs = self.hdrs.as_mut_ptr();
        for i in 0..count {
            // SAFETY: i < count <= BATCH.
            unsafe { (*iovs.add(i)).iov_len = self.lens[i] };
        }
        self.touched = self.touched.max(count);
        let mut done = 0;
        while done < count {
            // SAFETY: headers `done..count` point at live buffers with the
            // lengths just set.
            let rc = unsafe {
                libc::sendmmsg(
                    fd,
                    hdrs.add(done),
                    (count - done) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if rc < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => return Ok(done),
                    _ if done > 0 => return Ok(done),
                    _ => return Err(e),
                }
            }
            if rc == 0 {
                break;
            }
            done += rc as usize;
        }
        Ok(done)
    }

    /// Sends the `count` datagrams just received back to where they came
    /// from, in place: the echo peer's whole job.
    pub(crate) fn echo(&mut self, fd: RawFd, count: usize) -> io::Result<usize> {
        self.send(fd, count)
    }
}

/// CPU time (user + system) of this process so far.
pub(crate) fn own_cpu_time() -> Duration {
    // SAFETY: `usage` is written by the call; zeroed bytes are a valid rusage.
    let mut usage: libc::rusage = unsafe { mem::zeroed() };
    // SAFETY: valid pointer to a rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The CPUs this thread may run on (`sched_getaffinity`); empty if unknown.
pub(crate) fn allowed_cpus() -> Vec<usize> {
    // SAFETY: zeroed cpu_set_t is a valid empty set; the call fills it.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    // SAFETY: valid pointer and size.
    let rc = unsafe { libc::sched_getaffinity(0, mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Vec::new();
    }
    // SAFETY: CPU_ISSET only reads the set.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Every CPU `/proc/stat` lists (the online ones).
pub(crate) fn online_cpus() -> Vec<usize> {
    std::fs::read_to_string("/proc/stat")
        .map(|stat| {
            stat.lines()
                .filter_map(|line| {
                    line.split_ascii_whitespace()
                        .next()?
                        .strip_prefix("cpu")?
                        .parse()
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Idle time (idle + iowait) of the given CPUs so far, from `/proc/stat`.
///
/// Busy time is then wall time minus this: the busy fields of `/proc/stat`
/// are sampled at timer ticks and undercount activity that wakes between
/// ticks (the paced loop does exactly that), while idle time is measured
/// precisely on tickless kernels. Softirq work and other processes count as
/// busy: this says whether the cores were saturated, by anyone.
pub(crate) fn cpu_idle(cpus: &[usize]) -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks = parse_idle_ticks(&stat, cpus)?;
    Some(Duration::from_nanos(
        ticks.saturating_mul(1_000_000_000) / clock_ticks_per_sec().max(1),
    ))
}

fn parse_idle_ticks(stat: &str, cpus: &[usize]) -> Option<u64> {
    let mut idle = 0u64;
    let mut found = 0;
    for line in stat.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(cpu) = fields.next().and_then(|n| n.strip_prefix("cpu")) else {
            continue;
        };
        let Ok(index) = cpu.parse::<usize>() else {
            continue;
        };
        if !cpus.contains(&index) {
            continue;
        }
        found += 1;
        // Fields: user nice system idle iowait irq softirq steal ...
        let mut values = fields.skip(3).filter_map(|v| v.parse::<u64>().ok());
        idle += values.next().unwrap_or(0) + values.next().unwrap_or(0);
    }
    (found > 0).then_some(idle)
}

/// CPU time (utime + stime, all threads) of process `pid`, from
/// `/proc/PID/stat`. Resolution: one clock tick (10 ms here).
pub(crate) fn process_cpu_time(pid: u32) -> io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat_cpu(&stat, clock_ticks_per_sec()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected /proc/{pid}/stat"),
        )
    })
}

fn clock_ticks_per_sec() -> u64 {
    // SAFETY: plain sysconf query.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// utime + stime from a `/proc/PID/stat` line. The command name (field 2) may
/// contain spaces and parentheses, so fields are counted after the last `)`.
fn parse_stat_cpu(stat: &str, ticks_per_sec: u64) -> Option<Duration> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After ")" come field 3 (state) onwards; utime and stime are 14 and 15.
    let utime: u64 = fields.nth(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = utime + stime;
    Some(Duration::from_nanos(
        ticks.saturating_mul(1_000_000_000) / ticks_per_sec.max(1),
    ))
}

/// Resident set size of process `pid` in KiB (`VmRSS` of `/proc/PID/status`).
pub(crate) fn vm_rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS in /proc status"))
}

/// Raises the soft open-file limit to at least `needed` (up to the hard
/// limit): one socket per allocation quickly exceeds the usual 1024.
pub(crate) fn raise_fd_limit(needed: u64) -> io::Result<()> {
    // SAFETY: zeroed rlimit is valid; getrlimit writes it.
    let mut lim: libc::rlimit = unsafe { mem::zeroed() };
    // SAFETY: valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur >= needed {
        return Ok(());
    }
    if lim.rlim_max < needed {
        return Err(io::Error::other(format!(
            "need {needed} file descriptors but the hard limit (ulimit -Hn) is {}",
            lim.rlim_max
        )));
    }
    lim.rlim_cur = needed;
    // SAFETY: valid pointer to an initialised rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Asks for precise timer wake-ups on this thread (the default slack of
/// 50 µs would make paced sending burstier than it needs to be).
pub(crate) fn set_timer_slack(nanos: u64) {
    // SAFETY: PR_SET_TIMERSLACK takes an unsigned long and affects only this
    // thread; failure is harmless.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, nanos as libc::c_ulong, 0, 0, 0);
    }
}

/// Sets a socket buffer size, trying the privileged `*FORCE` option first
/// (it ignores `net.core.[rw]mem_max`).
pub(crate) fn set_buffer(socket: &socket2::Socket, recv: bool, bytes: usize) {
    let (force, plain) = if recv {
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF)
    } else {
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)
    };
    let value = bytes.min(i32::MAX as usize) as libc::c_int;
    for opt in [force, plain] {
        // SAFETY: `value` is a valid c_int for the duration of the call.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&value as *const libc::c_int).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_fields_counted_after_the_command_name() {
        let line =
            "1234 (turn server) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1 1 1";
        assert_eq!(parse_stat_cpu(line, 100), Some(Duration::from_secs(3)));
        assert_eq!(parse_stat_cpu("garbage", 100), None);
    }

    #[test]
    fn idle_ticks_sum_the_chosen_cpus() {
        let stat =
            "cpu  9 9 9 9 9 9 9 9 0 0\ncpu0 10 0 5 80 5 0 0 0 0 0\ncpu1 1 0 1 1 0 0 0 0 0 0\n";
        assert_eq!(parse_idle_ticks(stat, &[0]), Some(85));
        assert_eq!(parse_idle_ticks(stat, &[0, 1]), Some(86));
        assert_eq!(parse_idle_ticks(stat, &[5]), None);
        assert!(!allowed_cpus().is_empty());
        assert!(cpu_idle(&allowed_cpus()).is_some());
    }

    #[test]
    fn own_process_readings() {
        let pid = std::process::id();
        assert!(vm_rss_kib(pid).unwrap() > 0);
        process_cpu_time(pid).unwrap();
    }

    #[test]
    fn batch_round_trip_over_loopback() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        a.connect(b.local_addr().unwrap()).unwrap();
        let mut tx = MsgBatch::new(64, false);
        for i in 0..3 {
            tx.slot_mut(i)[..2].copy_from_slice(&[i as u8, 7]);
            tx.set_len(i, 2);
        }
        assert_eq!(tx.send(a.as_raw_fd(), 3).unwrap(), 3);
        let epoll = Epoll::new().unwrap();
        epoll.add(b.as_raw_fd(), 9).unwrap();
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
        assert_eq!(epoll.wait(&mut events, Duration::from_secs(1)).unwrap(), 1);
        let token = events[0].u64;
        assert_eq!(token, 9);
        // The echo path: receive with addresses, send back in place.
        let mut rx = MsgBatch::new(64, true);
        assert_eq!(rx.recv(b.as_raw_fd()).unwrap(), 3);
        assert_eq!(rx.received(2), &[2, 7]);
        assert_eq!(rx.echo(b.as_raw_fd(), 3).unwrap(), 3);
        let mut back = MsgBatch::new(64, false);
        a.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut one = [0u8; 8];
        assert_eq!(a.recv(&mut one).unwrap(), 2);
        assert_eq!(back.recv(a.as_raw_fd()).unwrap(), 2);
        assert_eq!(back.received(1), &[2, 7]);
        assert_eq!(back.recv(a.as_raw_fd()).unwrap(), 0);
    }
}
