//! One load-generator worker: a thread that owns a set of allocations (one
//! connected UDP socket each) and, in echo mode, its own echo peer socket,
//! all polled by one level-triggered `epoll` instance.
//!
//! Per wake-up it
//! 1. sends what the pacing schedule (or the closed-loop window) allows,
//!    grouping each socket's share into one `sendmmsg`;
//! 2. drains every readable socket with `recvmmsg`, taking timestamps once per
//!    batch, and echoes the peer socket's datagrams back in place;
//! 3. runs due maintenance transactions (Refresh, ChannelBind or
//!    CreatePermission refreshes) through the sans-IO [`ClientTransaction`].
//!
//! Nothing on the per-message path allocates, locks or logs: messages are
//! written into preallocated batch slots by the codec, and counters are plain
//! fields merged after the run.
//!
//! # Payload
//!
//! Every message's application data starts with a 24-byte header (magic,
//! sender allocation, sequence number, send time in nanoseconds since a
//! shared origin), which is how the receiving side measures loss, reordering
//! and latency without any shared state.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use turnpike_codec::ChannelData;

use crate::sys::{BATCH, Epoll, MsgBatch};
use turnpike_client::auth::AuthState;
use turnpike_client::data::{self, Incoming};
use turnpike_client::transaction::{
    ClientTransaction, Request, ResponseAction, RetransmitPolicy, TimeoutAction,
};

/// Bytes of the measurement header at the start of each payload.
pub(crate) const PAYLOAD_HEADER_LEN: usize = 24;
const MAGIC: [u8; 4] = *b"TPb1";

/// `epoll` token of the echo peer socket (client sockets use their index).
const PEER_TOKEN: u64 = u64::MAX;

/// Paced sending wakes up about once per this many due messages (worker
/// total): waking per message costs a context switch each (the largest cost
/// at low rates, measured), while a few messages per wake-up are still far
/// from a burst that could overflow a server's socket buffer.
const MESSAGES_PER_TICK: f64 = 8.0;
/// Bounds of the pacing tick: never busier than every 50 µs, never coarser
/// than 1 ms.
const MIN_TICK: Duration = Duration::from_micros(50);
const MAX_TICK: Duration = Duration::from_millis(1);

/// How many batches one readable socket may yield per wake-up, so one busy
/// socket cannot starve the others (epoll is level-triggered: the rest is
/// picked up next time).
const MAX_ROUNDS: usize = 4;

/// How often the closed-loop mode looks for windows stalled by loss.
const STALL_CHECK: Duration = Duration::from_millis(50);

/// How often pending maintenance transactions are checked for retransmission.
const MAINTENANCE_TICK: Duration = Duration::from_millis(20);

/// How an allocation sends.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Target {
    /// The channel bound to `peer` (unused with Send indications).
    pub channel: u16,
    /// The destination: the echo peer, or the next allocation's relayed address.
    pub peer: SocketAddr,
}

/// One allocation, as handed to a worker.
#[derive(Debug)]
pub(crate) struct Conn {
    /// Nonblocking, connected to the server.
    pub socket: UdpSocket,
    /// Learned at set-up; used to sign refreshes.
    pub auth: AuthState,
    /// Index in the whole run; carried in payloads as the sender.
    pub id: u32,
    /// Granted allocation lifetime, requested again on refresh.
    pub lifetime: u32,
    /// `None`: set-up failed to bind, so this allocation only receives.
    pub target: Option<Target>,
    /// Channels to refresh (channel mode).
    pub channels: Vec<(u16, SocketAddr)>,
    /// Permissions to refresh (Send-indication mode).
    pub permissions: Vec<SocketAddr>,
}

/// Sending discipline for one worker.
#[derive(Clone, Copy, Debug)]
pub(crate) enum WorkerLoad {
    /// Messages per second spread over this worker's sending allocations.
    Paced(f64),
    /// Messages in flight per allocation.
    ClosedLoop(u32),
}

/// What a worker does and when. All instants are shared by every worker.
#[derive(Clone, Debug)]
pub(crate) struct WorkerPlan {
    pub payload_len: usize,
    pub send_indications: bool,
    pub load: WorkerLoad,
    /// Origin of payload timestamps.
    pub base: Instant,
    pub start: Instant,
    pub warmup_end: Instant,
    pub stop: Instant,
    pub drain_end: Instant,
    /// When the first maintenance round is due; then every `refresh_every`.
    pub first_refresh: Instant,
    pub refresh_every: Duration,
    pub retransmit: RetransmitPolicy,
    /// Closed loop: a window with nothing received for this long is
    /// declared lost and refilled.
    pub stall_timeout: Duration,
}

/// A worker's counters; merged across workers after the run.
#[derive(Debug)]
pub(crate) struct WorkerStats {
    /// Messages sent inside the measurement window.
    pub sent: u64,
    pub bytes_sent: u64,
    /// Messages received that were sent inside the window.
    pub received: u64,
    pub bytes_received: u64,
    pub reordered: u64,
    pub duplicates: u64,
    /// Datagrams the kernel refused to send (full buffers, ICMP errors).
    pub send_errors: u64,
    /// Receive-side socket errors (e.g. ECONNREFUSED from an ICMP error).
    pub recv_errors: u64,
    /// Datagrams that were neither our payloads nor STUN responses.
    pub invalid: u64,
    pub echoed: u64,
    pub echo_drops: u64,
    pub stall_resets: u64,
    pub maintenance_ok: u64,
    pub maintenance_failed: u64,
    pub first_error: Option<String>,
    /// Latency in nanoseconds.
    pub latency: Histogram<u64>,
}

impl WorkerStats {
    pub(crate) fn new() -> Self {
        WorkerStats {
            sent: 0,
            bytes_sent: 0,
            received: 0,
            bytes_received: 0,
            reordered: 0,
            duplicates: 0,
            send_errors: 0,
            recv_errors: 0,
            invalid: 0,
            echoed: 0,
            echo_drops: 0,
            stall_resets: 0,
            maintenance_ok: 0,
            maintenance_failed: 0,
            first_error: None,
            // 1 ns .. 1 h at 3 significant digits: ~200 KiB per worker.
            latency: Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
                .expect("constant histogram bounds are valid"),
        }
    }

    fn note_error(&mut self, what: impl FnOnce() -> String) {
        if self.first_error.is_none() {
            self.first_error = Some(what());
        }
    }

    pub(crate) fn merge(&mut self, other: &WorkerStats) {
        self.sent += other.sent;
        self.bytes_sent += other.bytes_sent;
        self.received += other.received;
        self.bytes_received += other.bytes_received;
        self.reordered += other.reordered;
        self.duplicates += other.duplicates;
        self.send_errors += other.send_errors;
        self.recv_errors += other.recv_errors;
        self.invalid += other.invalid;
        self.echoed += other.echoed;
        self.echo_drops += other.echo_drops;
        self.stall_resets += other.stall_resets;
        self.maintenance_ok += other.maintenance_ok;
        self.maintenance_failed += other.maintenance_failed;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
    }
}

/// Per-allocation hot state, kept apart from [`Conn`] so the loop touches
/// small, dense records.
#[derive(Debug)]
struct ConnState {
    next_seq: u64,
    /// Highest sequence number received from this allocation as a sender.
    max_seq_rx: u64,
    inflight: u32,
    credit: u32,
    last_progress: Instant,
    next_refresh: Instant,
    maintenance: Option<ClientTransaction>,
    queue: VecDeque<Request>,
}

fn nanos_since(base: Instant, t: Instant) -> u64 {
    t.saturating_duration_since(base)
        .as_nanos()
        .min(u128::from(u64::MAX)) as u64
}

/// Writes the measurement header.
fn write_payload_header(out: &mut [u8], sender: u32, seq: u64, sent_ns: u64) {
    if out.len() < PAYLOAD_HEADER_LEN {
        return;
    }
    out[0..4].copy_from_slice(&MAGIC);
    out[4..8].copy_from_slice(&sender.to_le_bytes());
    out[8..16].copy_from_slice(&seq.to_le_bytes());
    out[16..24].copy_from_slice(&sent_ns.to_le_bytes());
}

/// Reads the measurement header: (sender, seq, sent_ns).
fn read_payload_header(data: &[u8]) -> Option<(u32, u64, u64)> {
    let h = data.get(..PAYLOAD_HEADER_LEN)?;
    if h[0..4] != MAGIC {
        return None;
    }
    let sender = u32::from_le_bytes(h[4..8].try_into().ok()?);
    let seq = u64::from_le_bytes(h[8..16].try_into().ok()?);
    let sent = u64::from_le_bytes(h[16..24].try_into().ok()?);
    Some((sender, seq, sent))
}

struct Worker<'a> {
    plan: &'a WorkerPlan,
    conns: &'a mut [Conn],
    state: Vec<ConnState>,
    stats: WorkerStats,
    /// Sender id of `conns[0]`; ids are contiguous within a worker.
    first_id: u32,
    /// Indices of allocations that send (have a target).
    senders: Vec<usize>,
    /// Round-robin position in `senders` for paced sends.
    cursor: usize,
    /// Closed loop: allocations with credit to send.
    dirty: Vec<usize>,
    tx: MsgBatch,
    maintenance_buf: Vec<u8>,
    warmup_ns: u64,
    stop_ns: u64,
}

/// Runs a worker to `plan.drain_end`. The caller's `conns` come back with
/// their authentication state up to date (for the final release).
pub(crate) fn run(
    plan: &WorkerPlan,
    conns: &mut [Conn],
    peer: Option<&UdpSocket>,
) -> io::Result<WorkerStats> {
    crate::sys::set_timer_slack(1_000);
    let epoll = Epoll::new()?;
    for (i, c) in conns.iter().enumerate() {
        epoll.add(c.socket.as_raw_fd(), i as u64)?;
    }
    if let Some(p) = peer {
        epoll.add(p.as_raw_fd(), PEER_TOKEN)?;
    }
    // Room for the payload plus the largest framing (a Data indication with
    // an IPv6 peer and some slack for extra attributes a server may add).
    let slot_len = plan.payload_len + 256;
    let mut rx = MsgBatch::new(slot_len, false);
    let mut peer_batch = MsgBatch::new(slot_len, true);
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 512];

    let now = Instant::now();
    let n = conns.len().max(1);
    let state = (0..conns.len())
        .map(|i| ConnState {
            next_seq: 1,
            max_seq_rx: 0,
            inflight: 0,
            credit: 0,
            last_progress: now,
            // Staggered over a tenth of the interval so that refreshes do not
            // arrive at the server as one burst.
            next_refresh: plan.first_refresh
                + plan.refresh_every.mul_f64(0.1 * i as f64 / n as f64),
            maintenance: None,
            queue: VecDeque::new(),
        })
        .collect();
    let senders = conns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.target.is_some())
        .map(|(i, _)| i)
        .collect();
    let first_id = conns.first().map_or(0, |c| c.id);
    let mut w = Worker {
        plan,
        state,
        stats: WorkerStats::new(),
        first_id,
        senders,
        cursor: 0,
        dirty: Vec::new(),
        tx: MsgBatch::new(slot_len, false),
        maintenance_buf: vec![0; 2048],
        warmup_ns: nanos_since(plan.base, plan.warmup_end),
        stop_ns: nanos_since(plan.base, plan.stop),
        conns,
    };

    let tick = match plan.load {
        WorkerLoad::Paced(rate) => {
            Duration::from_secs_f64(MESSAGES_PER_TICK / rate.max(1.0)).clamp(MIN_TICK, MAX_TICK)
        }
        WorkerLoad::ClosedLoop(_) => MIN_TICK,
    };
    let mut scheduled: u64 = 0;
    let mut primed = false;
    let mut next_stall_check = plan.start + STALL_CHECK;
    let mut next_maintenance = plan.first_refresh;

    loop {
        let now = Instant::now();
        if now >= plan.drain_end {
            break;
        }
        let sending = now >= plan.start && now < plan.stop;
        let mut wake = plan.drain_end;
        if now < plan.start {
            wake = plan.start;
        }
        if sending {
            match plan.load {
                WorkerLoad::Paced(rate) => {
                    let due = (now.duration_since(plan.start).as_secs_f64() * rate) as u64;
                    if due > scheduled {
                        w.send_spread(due - scheduled, now);
                        scheduled = due;
                    }
                    let next_due =
                        plan.start + Duration::from_secs_f64((scheduled + 1) as f64 / rate);
                    wake = wake.min(next_due.max(now + tick)).min(plan.stop);
                }
                WorkerLoad::ClosedLoop(window) => {
                    if !primed {
                        primed = true;
                        for i in 0..w.senders.len() {
                            let c = w.senders[i];
                            w.state[c].credit = window;
                            w.state[c].last_progress = now;
                            w.dirty.push(c);
                        }
                    }
                    if now >= next_stall_check {
                        w.reset_stalled(window, now);
                        next_stall_check = now + STALL_CHECK;
                    }
                    w.flush_credits(now);
                    wake = wake.min(next_stall_check).min(plan.stop);
                }
            }
        }
        if now >= next_maintenance {
            next_maintenance = w.maintain(now);
        }
        wake = wake.min(next_maintenance);

        let n = epoll.wait(&mut events, wake.saturating_duration_since(now))?;
        for ev in &events[..n] {
            let token = ev.u64;
            if token == PEER_TOKEN {
                if let Some(p) = peer {
                    w.echo(p, &mut peer_batch);
                }
            } else {
                w.on_readable(token as usize, &mut rx);
            }
        }
        if let WorkerLoad::ClosedLoop(_) = plan.load
            && now < plan.stop
        {
            w.flush_credits(Instant::now());
        }
    }
    Ok(w.stats)
}

impl Worker<'_> {
    /// Sends `count` paced messages round-robin over the sending allocations,
    /// each allocation's share in one `sendmmsg` batch.
    fn send_spread(&mut self, count: u64, now: Instant) {
        let n = self.senders.len();
        if n == 0 {
            return;
        }
        let per = (count / n as u64) as usize;
        let rem = (count % n as u64) as usize;
        let visits = if per == 0 { rem } else { n };
        for k in 0..visits {
            let c = self.senders[(self.cursor + k) % n];
            let share = per + usize::from(k < rem);
            self.send_burst(c, share, now);
        }
        self.cursor = (self.cursor + rem) % n;
    }

    /// Sends `count` messages on allocation `c`; returns how many went out.
    fn send_burst(&mut self, c: usize, count: usize, now: Instant) -> usize {
        let Some(target) = self.conns[c].target else {
            return 0;
        };
        let sent_ns = nanos_since(self.plan.base, now);
        let counted = now >= self.plan.warmup_end;
        let sender = self.conns[c].id;
        let payload_len = self.plan.payload_len;
        let fd = self.conns[c].socket.as_raw_fd();
        let mut total = 0;
        let mut left = count;
        while left > 0 {
            let k = left.min(BATCH);
            let seq0 = self.state[c].next_seq;
            for j in 0..k {
                let seq = seq0 + j as u64;
                let slot = self.tx.slot_mut(j);
                let len = if self.plan.send_indications {
                    // The ID only has to be unique; sender and sequence are.
                    let mut id = [0u8; 12];
                    id[..4].copy_from_slice(&sender.to_le_bytes());
                    id[4..].copy_from_slice(&seq.to_le_bytes());
                    data::encode_send_indication_with(slot, id, target.peer, payload_len, |v| {
                        write_payload_header(v, sender, seq, sent_ns)
                    })
                } else {
                    let len = ChannelData::write_header(slot, target.channel, payload_len, false);
                    let body = &mut slot[data::CHANNEL_DATA_HEADER_LEN..];
                    write_payload_header(body, sender, seq, sent_ns);
                    len
                };
                // Slots are sized for the payload, so encoding cannot fail.
                self.tx.set_len(j, len.unwrap_or(0));
            }
            let sent = match self.tx.send(fd, k) {
                Ok(s) => s,
                Err(e) => {
                    self.stats.note_error(|| format!("send: {e}"));
                    0
                }
            };
            self.state[c].next_seq += sent as u64;
            total += sent;
            if counted {
                self.stats.sent += sent as u64;
                self.stats.bytes_sent += (sent * payload_len) as u64;
            }
            if sent < k {
                self.stats.send_errors += (k - sent) as u64;
                break;
            }
            left -= k;
        }
        total
    }

    /// Closed loop: refills each allocation's window with the credits earned.
    fn flush_credits(&mut self, now: Instant) {
        while let Some(c) = self.dirty.pop() {
            let credit = std::mem::take(&mut self.state[c].credit) as usize;
            if credit > 0 {
                let sent = self.send_burst(c, credit, now);
                self.state[c].inflight += sent as u32;
            }
        }
    }

    /// Closed loop: a window that has not moved for `stall_timeout` lost its
    /// messages; refill it so the allocation keeps sending.
    fn reset_stalled(&mut self, window: u32, now: Instant) {
        for i in 0..self.senders.len() {
            let c = self.senders[i];
            let st = &mut self.state[c];
            if st.inflight > 0 && now.duration_since(st.last_progress) >= self.plan.stall_timeout {
                st.inflight = 0;
                st.credit = window;
                st.last_progress = now;
                self.stats.stall_resets += 1;
                self.dirty.push(c);
            }
        }
    }

    /// Drains allocation `c`'s socket.
    fn on_readable(&mut self, c: usize, rx: &mut MsgBatch) {
        let Some(fd) = self.conns.get(c).map(|conn| conn.socket.as_raw_fd()) else {
            return;
        };
        for _ in 0..MAX_ROUNDS {
            let n = match rx.recv(fd) {
                Ok(n) => n,
                Err(e) => {
                    // Typically ECONNREFUSED: an ICMP error for an earlier
                    // send. Reading it clears it; try again next wake-up.
                    self.stats.recv_errors += 1;
                    self.stats.note_error(|| format!("receive: {e}"));
                    return;
                }
            };
            if n == 0 {
                return;
            }
            let now = Instant::now();
            let now_ns = nanos_since(self.plan.base, now);
            for j in 0..n {
                match data::parse_incoming(rx.received(j)) {
                    Incoming::ChannelData { data, .. } | Incoming::Data { data, .. } => {
                        self.on_payload(data, now, now_ns)
                    }
                    Incoming::Stun(msg) => self.on_stun(c, &msg, now),
                    Incoming::Invalid => self.stats.invalid += 1,
                }
            }
            if n < BATCH {
                return;
            }
        }
    }

    fn on_payload(&mut self, data: &[u8], now: Instant, now_ns: u64) {
        let Some((sender, seq, sent_ns)) = read_payload_header(data) else {
            self.stats.invalid += 1;
            return;
        };
        let local = sender.wrapping_sub(self.first_id) as usize;
        let Some(st) = self.state.get_mut(local) else {
            self.stats.invalid += 1;
            return;
        };
        if let WorkerLoad::ClosedLoop(window) = self.plan.load {
            st.inflight = st.inflight.saturating_sub(1);
            st.last_progress = now;
            if st.inflight + st.credit < window {
                if st.credit == 0 {
                    self.dirty.push(local);
                }
                st.credit += 1;
            }
        }
        let counted = sent_ns >= self.warmup_ns && sent_ns < self.stop_ns;
        let order = seq.cmp(&st.max_seq_rx);
        if order.is_gt() {
            st.max_seq_rx = seq;
        }
        if !counted {
            return;
        }
        match order {
            std::cmp::Ordering::Greater => {}
            std::cmp::Ordering::Equal => self.stats.duplicates += 1,
            std::cmp::Ordering::Less => self.stats.reordered += 1,
        }
        self.stats.received += 1;
        self.stats.bytes_received += data.len() as u64;
        let latency = now_ns.saturating_sub(sent_ns).max(1);
        self.stats.latency.saturating_record(latency);
    }

    /// The echo peer: send every datagram back where it came from.
    fn echo(&mut self, peer: &UdpSocket, batch: &mut MsgBatch) {
        let fd = peer.as_raw_fd();
        for _ in 0..MAX_ROUNDS * 2 {
            let n = match batch.recv(fd) {
                Ok(n) => n,
                Err(e) => {
                    self.stats.recv_errors += 1;
                    self.stats.note_error(|| format!("echo peer receive: {e}"));
                    return;
                }
            };
            if n == 0 {
                return;
            }
            let sent = batch.echo(fd, n).unwrap_or(0);
            self.stats.echoed += sent as u64;
            self.stats.echo_drops += (n - sent) as u64;
            if n < BATCH {
                return;
            }
        }
    }

    // --- Maintenance: keeping allocations, permissions and channels alive ---

    /// Starts due refresh rounds, retransmits or expires pending
    /// transactions; returns when to look again.
    fn maintain(&mut self, now: Instant) -> Instant {
        let mut next = now + self.plan.refresh_every;
        for c in 0..self.conns.len() {
            if self.state[c].maintenance.is_none() && now >= self.state[c].next_refresh {
                let conn = &self.conns[c];
                let st = &mut self.state[c];
                st.next_refresh = now + self.plan.refresh_every;
                st.queue.push_back(Request::Refresh {
                    lifetime: conn.lifetime,
                });
                for &(channel, peer) in &conn.channels {
                    st.queue.push_back(Request::ChannelBind { channel, peer });
                }
                if !conn.permissions.is_empty() {
                    st.queue.push_back(Request::CreatePermission {
                        peers: conn.permissions.clone(),
                    });
                }
                self.start_next(c, now);
            }
            if let Some(tx) = &mut self.state[c].maintenance {
                match tx.handle_timeout(now) {
                    Ok(TimeoutAction::Wait) => {}
                    Ok(TimeoutAction::Retransmit) => self.transmit(c, now),
                    Err(e) => {
                        self.stats.maintenance_failed += 1;
                        self.stats.note_error(|| format!("refresh: {e}"));
                        self.state[c].maintenance = None;
                        self.start_next(c, now);
                    }
                }
            }
            let st = &self.state[c];
            next = next.min(if st.maintenance.is_some() {
                now + MAINTENANCE_TICK
            } else {
                st.next_refresh
            });
        }
        next
    }

    fn start_next(&mut self, c: usize, now: Instant) {
        let st = &mut self.state[c];
        st.maintenance = st
            .queue
            .pop_front()
            .map(|req| ClientTransaction::new(req, self.plan.retransmit));
        if st.maintenance.is_some() {
            self.transmit(c, now);
        }
    }

    fn transmit(&mut self, c: usize, now: Instant) {
        let Some(tx) = &mut self.state[c].maintenance else {
            return;
        };
        let conn = &self.conns[c];
        match tx.transmit(&conn.auth, &mut self.maintenance_buf, now) {
            Ok(len) => {
                // A lost send is retransmitted on the timer like a lost datagram.
                let _ = conn.socket.send(&self.maintenance_buf[..len]);
            }
            Err(e) => {
                self.stats.maintenance_failed += 1;
                self.stats.note_error(|| format!("refresh: {e}"));
                self.state[c].maintenance = None;
            }
        }
    }

    fn on_stun(&mut self, c: usize, msg: &turnpike_codec::Message<'_>, now: Instant) {
        let Some(tx) = &mut self.state[c].maintenance else {
            // A late response to a finished transaction.
            return;
        };
        match tx.handle_response(&mut self.conns[c].auth, msg) {
            ResponseAction::Ignore => {}
            ResponseAction::Retry => self.transmit(c, now),
            ResponseAction::Done(result) => {
                match result {
                    Ok(_) => self.stats.maintenance_ok += 1,
                    Err(e) => {
                        self.stats.maintenance_failed += 1;
                        self.stats.note_error(|| format!("refresh: {e}"));
                    }
                }
                self.state[c].maintenance = None;
                self.start_next(c, now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_header_round_trip() {
        let mut buf = [0u8; 40];
        write_payload_header(&mut buf, 7, 42, 123_456);
        assert_eq!(read_payload_header(&buf), Some((7, 42, 123_456)));
        assert_eq!(read_payload_header(&buf[..23]), None);
        buf[0] = b'x';
        assert_eq!(read_payload_header(&buf), None);
    }
}
