// SPDX-License-Identifier: Apache-2.0 OR GPL-2.0-only
//
// Turnpike's XDP relay fast path: ChannelData <-> UDP for channel bindings
// (IPv4 or IPv6, the client and the peer of the same family), rewritten in
// the driver's receive hook and sent straight back out, so relayed media
// never reaches a socket.
//
// The routes are written by the server (crates/turnpike-xdp/src/lib.rs) from
// the core's channel events; a route carries the instant (CLOCK_MONOTONIC,
// what bpf_ktime_get_ns reads) at which its channel, the peer's permission
// or the allocation lapses. Everything this program does not handle, or
// handles no longer, is passed to the kernel's stack unchanged, where the
// server's sockets apply the protocol's rules: the fast path never decides
// anything the core has not decided first.
//
// What it writes is what the sockets would: TTL/hop limit 64, DSCP 0, a
// fresh IPv4 identification (0 for a datagram with DF, as Linux gives an
// unconnected socket's, else random) and no IPv6 flow label, so nothing
// of the sender's headers crosses the relay but the ECN bits, which are
// carried on (RFC 8656 §14's preferred behaviour: congestion marks reach
// the endpoints) and the DF bit (copied, or set for DONT-FRAGMENT). A
// datagram whose IPv4 header checksum or IPv6 UDP checksum is wrong goes to
// the stack, which drops it: the rewrite would otherwise make it valid.
//
// Built with `scripts/build-bpf` (clang -target bpf); the object is
// committed next to this file and checked against a rebuild by the tests.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

// Keys and values: addresses, ports and channel numbers in network byte
// order, as they are on the wire. Layouts are mirrored in src/maps.rs.

// Client -> peer: ChannelData from a client's 5-tuple on a channel.
struct client_key {
	__u32 client_ip;
	__u32 server_ip;
	__u16 client_port;
	__u16 server_port;
	__u16 channel;
	__u16 pad;
};

// Peer -> client: a datagram from a peer to a relayed address.
struct peer_key {
	__u32 peer_ip;
	__u32 relay_ip;
	__u16 peer_port;
	__u16 relay_port;
};

// What one map entry relayed: its direction's datagrams and their payload
// bytes (the ChannelData header not counted, as in struct counters).
//
// Kept in the route's own value, which the packet's one lookup finds, on
// cache lines that lookup has just read. The value is shared by the CPUs,
// hence the atomic adds (BPF_XADD, `lock add` on x86): about 9 ns a relayed
// packet, some 90 ns against 81 with plain adds, timed with
// BPF_PROG_TEST_RUN on one CPU with everything in cache (relayed_packet_cost
// in tests/program.rs). A per-CPU hash keyed like the route, stood in for
// there by a second lookup of the key and plain adds, took as long, but
// would miss the cache where these adds do not once routes outnumber it,
// and would hold a value per CPU per route. Each direction counts in its
// own entry, so the CPUs relaying one way do not write the cache lines the
// other way's CPUs do.
//
// A map update replaces the whole value: the server reads the counts and
// carries them over when it rewrites a route (a refresh), and reads them
// when it removes one; what a CPU adds between that read and the write or
// removal (a system call's time) is lost.
struct route_traffic {
	__u64 packets;
	__u64 bytes;
};

// The route between the two sides; both maps hold the same value but for
// `traffic`: to the peer in CLIENT_ROUTES, to the client in PEER_ROUTES.
// `max_bps` is the allocation's bandwidth cap (turn.max_bps, payload bytes
// per second, each direction on its own; 0 = none), enforced with the
// allocation's entries in BUCKETS.
struct route {
	__u32 client_ip;
	__u32 server_ip;
	__u32 relay_ip;
	__u32 peer_ip;
	__u16 client_port;
	__u16 server_port;
	__u16 relay_port;
	__u16 peer_port;
	__u16 channel;
	__u16 flags;
	__u32 pad;
	__u64 until_ns;
	__u64 max_bps;
	struct route_traffic traffic;
};

// The same for IPv6: addresses as four 32-bit words.
struct client_key6 {
	__u32 client_ip[4];
	__u32 server_ip[4];
	__u16 client_port;
	__u16 server_port;
	__u16 channel;
	__u16 pad;
};

struct peer_key6 {
	__u32 peer_ip[4];
	__u32 relay_ip[4];
	__u16 peer_port;
	__u16 relay_port;
};

struct route6 {
	__u32 client_ip[4];
	__u32 server_ip[4];
	__u32 relay_ip[4];
	__u32 peer_ip[4];
	__u16 client_port;
	__u16 server_port;
	__u16 relay_port;
	__u16 peer_port;
	__u16 channel;
	__u16 flags;
	__u32 pad;
	__u64 until_ns;
	__u64 max_bps;
	struct route_traffic traffic;
};

#define ROUTE_DONT_FRAGMENT 1

struct config {
	// The ifindex of the loopback device the program is attached to, if it
	// is: there every destination is local and XDP_TX delivers it.
	__u32 loopback_ifindex;
	// Relayed ports: a datagram to any other port is not looked up.
	__u16 relay_port_min;
	__u16 relay_port_max;
};

// Per-CPU counters, read and summed by the server.
struct counters {
	__u64 to_peer_packets;
	__u64 to_peer_bytes;
	__u64 to_client_packets;
	__u64 to_client_bytes;
	// Matched a route but left to the stack: lapsed route, padding, IP
	// options or fragments, too big for the MTU, no route or neighbour;
	// a capped route without its bucket.
	__u64 passed;
	// Dropped over the allocation's bandwidth cap.
	__u64 capped;
};

// An allocation's bandwidth cap in one direction: a token bucket of one
// second's burst in GCRA form, as the core keeps it
// (crates/turnpike-core/src/bandwidth.rs): `drained_at_ns` is when the data
// admitted so far would have drained at the cap (CLOCK_MONOTONIC), and a
// datagram of `bytes` is admitted if max(drained_at, now) + its cost
// (bytes / max_bps seconds) is at most a second ahead of now.
//
// One entry per allocation and direction, keyed by the allocation's
// 5-tuple (the client's side, which every route of the allocation carries
// in its value): all its channels, to any peer, take from the one bucket,
// so binding more channels does not multiply the cap. IPv4 addresses fill
// the first word of each address, the family telling them apart. The
// server writes the entries with the allocation's first route and removes
// them with its last, so an allocation reusing a 5-tuple starts full.
//
// The value is shared by the CPUs relaying for the allocation; its drain
// time (read, compare, write) is updated under the entry's spin lock. Only
// capped routes touch it, and it costs them about 60 ns a relayed packet:
// 148 ns against 86, timed as struct route_traffic's figures are
// (relayed_packet_cost, uncontended), mostly the second hash lookup (a
// 40-byte key) and the clock read.
struct bucket_key {
	__u32 client_ip[4];
	__u32 server_ip[4];
	__u16 client_port;
	__u16 server_port;
	__u16 family;
	__u16 direction;
};

#define TO_PEER 0
#define TO_CLIENT 1

struct bucket {
	struct bpf_spin_lock lock;
	__u32 pad;
	__u64 drained_at_ns;
};

#define BURST_NS 1000000000ULL

#define MAX_ROUTES 65536

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ROUTES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct client_key);
	__type(value, struct route);
} CLIENT_ROUTES SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ROUTES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct peer_key);
	__type(value, struct route);
} PEER_ROUTES SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ROUTES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct client_key6);
	__type(value, struct route6);
} CLIENT_ROUTES6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ROUTES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct peer_key6);
	__type(value, struct route6);
} PEER_ROUTES6 SEC(".maps");

// Two per allocation with a route, and each route map holds MAX_ROUTES:
// there cannot be more.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4 * MAX_ROUTES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct bucket_key);
	__type(value, struct bucket);
} BUCKETS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} CONFIG SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counters);
} COUNTERS SEC(".maps");

#define CHANNEL_HEADER_LEN 4
#define IP_DF 0x4000
#define IP_MF_OFFSET 0x3fff

struct headers {
	struct ethhdr eth;
	struct iphdr ip;
	struct udphdr udp;
} __attribute__((packed, aligned(2)));

struct headers6 {
	struct ethhdr eth;
	struct ipv6hdr ip;
	struct udphdr udp;
} __attribute__((packed, aligned(2)));

// Folds a one's complement sum into 16 bits and complements it: four folds
// take any sum below 2^48 down to 16 bits with no carry left.
static __always_inline __u16 csum_fold(__u64 sum)
{
#pragma unroll
	for (int i = 0; i < 4; i++)
		sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

static __always_inline void ip_checksum(struct headers *h)
{
	__u16 *words = (__u16 *)h + sizeof(struct ethhdr) / 2;
	__u64 sum = 0;

	h->ip.check = 0;
#pragma unroll
	for (int i = 0; i < (int)(sizeof(struct iphdr) / 2); i++)
		sum += words[i];
	h->ip.check = csum_fold(sum);
}

// The UDP checksum after the rewrite, updated incrementally (RFC 1624) from
// the 32-bit words that changed: the pseudo-header's addresses and length,
// the ports, the length field (the same 16 bits in both, hence one word
// for the two), and the 4-byte ChannelData header that is removed or
// inserted (32-bit aligned, so the payload after it keeps its alignment and
// its sum).
static __always_inline __u16 udp_check_update(__u16 check, __u32 *from, __u32 *to, __u32 size)
{
	__s64 sum = bpf_csum_diff(from, size, to, size, ~((__u32)check) & 0xffff);
	if (sum < 0)
		return 0;
	check = csum_fold((__u64)sum);
	return check ? check : 0xffff;
}

static __always_inline __u32 ports_word(const struct udphdr *udp)
{
	return ((__u32)udp->source) | ((__u32)udp->dest << 16);
}

static __always_inline __u32 length_word(const struct udphdr *udp)
{
	return ((__u32)udp->len) | ((__u32)udp->len << 16);
}

// IPv4: a zero checksum (none) stays zero.
static __always_inline void udp_checksum(struct headers *old, struct headers *new,
					 __u32 old_channel_word, __u32 new_channel_word)
{
	if (old->udp.check == 0) {
		new->udp.check = 0;
		return;
	}
	__u32 from[5] = { old->ip.saddr, old->ip.daddr, ports_word(&old->udp),
			  length_word(&old->udp), old_channel_word };
	__u32 to[5] = { new->ip.saddr, new->ip.daddr, ports_word(&new->udp),
			length_word(&new->udp), new_channel_word };
	new->udp.check = udp_check_update(old->udp.check, from, to, sizeof(from));
}

// The one's complement sum (32-bit, unfolded) of `len` bytes at `p`, or -1
// if they are not all inside the packet or there are more than 9 KiB. 512-byte blocks go to the kernel's
// csum_partial; the rest, under 512 bytes, is summed here.
static __always_inline __s64 sum_bytes(void *p, void *end, __u32 len)
{
	__s64 sum = 0;
	// Up to 18 blocks (9 KiB, a jumbo frame): the verifier walks each
	// block count separately, and larger datagrams (loopback's 64 KiB MTU)
	// are left to the stack.
	for (int i = 0; i < 18 && len >= 512; i++) {
		if (p + 512 > end)
			return -1;
		sum = bpf_csum_diff(0, 0, p, 512, sum);
		if (sum < 0)
			return -1;
		p += 512;
		len -= 512;
	}
	if (len >= 512)
		return -1;
	// The rest in unrolled steps of constant size: a counted loop here
	// gets rewritten by clang into pointer arithmetic on the packet's end,
	// which the verifier refuses.
#pragma unroll
	for (int i = 0; i < 7; i++) {
		if (len >= 64) {
			if (p + 64 > end)
				return -1;
			sum = bpf_csum_diff(0, 0, p, 64, sum);
			if (sum < 0)
				return -1;
			p += 64;
			len -= 64;
		}
	}
	__u64 tail = (__u32)sum;
#pragma unroll
	for (int i = 0; i < 15; i++) {
		if (len >= 4) {
			if (p + 4 > end)
				return -1;
			tail += *(__u32 *)p;
			p += 4;
			len -= 4;
		}
	}
	if (len >= 2) {
		if (p + 2 > end)
			return -1;
		tail += *(__u16 *)p;
		p += 2;
		len -= 2;
	}
	if (len) {
		if (p + 1 > end)
			return -1;
		// In memory order the odd byte is the first of a zero-padded word.
		tail += *(__u8 *)p;
	}
	tail = (tail & 0xffffffff) + (tail >> 32);
	tail = (tail & 0xffffffff) + (tail >> 32);
	return (__s64)tail;
}

// The IPv6 pseudo-header's sum: addresses, upper-layer length and next
// header (network-order 16-bit words, unfolded).
static __always_inline __u64 pseudo6_sum(const struct headers6 *h)
{
	// Source and destination: 16 16-bit words from offset 22 (Ethernet 14,
	// then 8 bytes of IPv6 header).
	const __u16 *addrs = (const __u16 *)h + (sizeof(struct ethhdr) + 8) / 2;
	__u64 sum = 0;
#pragma unroll
	for (int i = 0; i < 16; i++)
		sum += addrs[i];
	// Upper-layer length (32 bits, the upper half zero) and next header,
	// in network order.
	sum += (__u32)h->udp.len << 16;
	sum += bpf_htonl(IPPROTO_UDP);
	return sum;
}

// Whether an incoming IPv6 datagram's UDP checksum holds, given the sum of
// its payload (`first_word`, the ChannelData header or 0, then
// `payload_sum`): either complete and right, or the pseudo-header's sum
// alone, which a sender on this host leaves for the device to finish
// (CHECKSUM_PARTIAL; the stack trusts those too).
static __always_inline int udp_checksum6_ok(const struct headers6 *h, __u32 first_word,
					    __s64 payload_sum)
{
	if (payload_sum < 0)
		return 0;
	__u64 pseudo = pseudo6_sum(h);
	__u16 full = csum_fold(pseudo + ports_word(&h->udp) + h->udp.len + first_word +
			       (__u64)payload_sum);
	if (full == 0)
		full = 0xffff;
	return h->udp.check == full || h->udp.check == (__u16)~csum_fold(pseudo);
}

// IPv6: the UDP checksum of the rewritten datagram, computed afresh over
// the pseudo-header, the header, `channel_word` (0 when there is none) and
// `payload_sum`. Not updated from the old one: a datagram sent from this
// host (a peer on loopback, a veth) carries only the pseudo-header's sum
// there, for the device to finish, and the receiving stack verifies IPv6
// datagrams the rewrite has moved. Returns -1 when it cannot be computed.
static __always_inline int udp_checksum6(struct headers6 *new, __u32 channel_word,
					 __s64 payload_sum)
{
	if (payload_sum < 0)
		return -1;
	__u64 sum = (__u64)payload_sum + channel_word + pseudo6_sum(new);
	// Then the header with a zero checksum.
	sum += ports_word(&new->udp);
	sum += new->udp.len;
	__u16 check = csum_fold(sum);
	new->udp.check = check ? check : 0xffff;
	return 0;
}

// Where the rewritten packet goes: out of the device it came in on (XDP_TX),
// out of another (redirect), or back to the stack (-1) when the kernel does
// not know the next hop yet (its neighbour entry gets resolved there).
// `fib` holds the family, addresses, ports and length.
static __always_inline int next_hop(struct xdp_md *ctx, struct bpf_fib_lookup *fib,
				    struct ethhdr *eth, const struct config *config)
{
	if (config && config->loopback_ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	fib->l4_protocol = IPPROTO_UDP;
	fib->ifindex = ctx->ingress_ifindex;
	// Needs forwarding on the interface (the loader checks IPv4's).
	if (bpf_fib_lookup(ctx, fib, sizeof(*fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
		return -1;
	__builtin_memcpy(eth->h_dest, fib->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib->smac, ETH_ALEN);
	if (fib->ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(fib->ifindex, 0);
}

static __always_inline int forward(struct xdp_md *ctx, struct headers *h,
				   const struct config *config)
{
	struct bpf_fib_lookup fib = {};
	fib.family = AF_INET;
	fib.sport = h->udp.source;
	fib.dport = h->udp.dest;
	fib.tot_len = bpf_ntohs(h->ip.tot_len);
	fib.ipv4_src = h->ip.saddr;
	fib.ipv4_dst = h->ip.daddr;
	return next_hop(ctx, &fib, &h->eth, config);
}

static __always_inline int forward6(struct xdp_md *ctx, struct headers6 *h,
				    const struct config *config)
{
	struct bpf_fib_lookup fib = {};
	fib.family = AF_INET6;
	fib.sport = h->udp.source;
	fib.dport = h->udp.dest;
	fib.tot_len = sizeof(struct ipv6hdr) + bpf_ntohs(h->ip.payload_len);
	__builtin_memcpy(fib.ipv6_src, &h->ip.saddr, 16);
	__builtin_memcpy(fib.ipv6_dst, &h->ip.daddr, 16);
	return next_hop(ctx, &fib, &h->eth, config);
}

static __always_inline int pass(struct counters *counters)
{
	if (counters)
		counters->passed++;
	return XDP_PASS;
}

// Takes `bytes` from the bucket `key` (see struct bucket) at `max_bps`:
// -1 if they fit and the datagram goes on, else the action to return with
// (XDP_DROP over the cap, counted; XDP_PASS for a bucket that is not there,
// which the server writes right after the route, or failed to write: the
// sockets, which apply the core's bucket, rather than relaying a capped
// route uncapped).
static __always_inline int take(const struct bucket_key *key, __u64 max_bps, __u16 bytes,
				struct counters *counters)
{
	struct bucket *bucket = bpf_map_lookup_elem(&BUCKETS, key);
	if (!bucket)
		return pass(counters);
	__u64 now = bpf_ktime_get_ns();
	__u64 cost = (__u64)bytes * 1000000000ULL / max_bps;
	int fits;
	bpf_spin_lock(&bucket->lock);
	__u64 drained_at = bucket->drained_at_ns > now ? bucket->drained_at_ns : now;
	fits = drained_at + cost <= now + BURST_NS;
	if (fits)
		bucket->drained_at_ns = drained_at + cost;
	bpf_spin_unlock(&bucket->lock);
	if (fits)
		return -1;
	if (counters)
		counters->capped++;
	return XDP_DROP;
}

// The bandwidth cap of an IPv4 route (see take): an uncapped route pays
// this one branch.
static __always_inline int limit(const struct route *route, __u16 direction, __u16 bytes,
				 struct counters *counters)
{
	if (!route->max_bps)
		return -1;
	struct bucket_key key = {
		.client_ip = { route->client_ip },
		.server_ip = { route->server_ip },
		.client_port = route->client_port,
		.server_port = route->server_port,
		.family = AF_INET,
		.direction = direction,
	};
	return take(&key, route->max_bps, bytes, counters);
}

// The same for an IPv6 route.
static __always_inline int limit6(const struct route6 *route, __u16 direction, __u16 bytes,
				  struct counters *counters)
{
	if (!route->max_bps)
		return -1;
	struct bucket_key key = {
		.client_port = route->client_port,
		.server_port = route->server_port,
		.family = AF_INET6,
		.direction = direction,
	};
	__builtin_memcpy(key.client_ip, route->client_ip, 16);
	__builtin_memcpy(key.server_ip, route->server_ip, 16);
	return take(&key, route->max_bps, bytes, counters);
}

// Counts a relayed datagram in its route entry (see struct route_traffic).
static __always_inline void count(struct route_traffic *traffic, __u16 payload_len)
{
	__sync_fetch_and_add(&traffic->packets, 1);
	__sync_fetch_and_add(&traffic->bytes, payload_len);
}

// The last step towards a peer, for either family: drops the channel
// header by moving the rewritten headers (`len` bytes) 4 bytes on, and
// counts the datagram, globally and in its route's entry (`traffic`).
// `len` is a constant once inlined.
static __always_inline int emit_to_peer(struct xdp_md *ctx, const void *headers, __u32 len,
					__u16 data_len, int action, struct counters *counters,
					struct route_traffic *traffic)
{
	if (bpf_xdp_adjust_head(ctx, CHANNEL_HEADER_LEN))
		return pass(counters);
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	if (data + len > end)
		return XDP_DROP;
	__builtin_memcpy(data, headers, len);
	if (counters) {
		counters->to_peer_packets++;
		counters->to_peer_bytes += data_len;
	}
	count(traffic, data_len);
	return action;
}

// The last step towards a client, for either family: makes room for the
// channel header before the payload, writes the rewritten headers and the
// channel header there, and counts the datagram (as emit_to_peer does).
static __always_inline int emit_to_client(struct xdp_md *ctx, const void *headers, __u32 len,
					  const __be16 *channel_header, __u16 payload_len,
					  int action, struct counters *counters,
					  struct route_traffic *traffic)
{
	if (bpf_xdp_adjust_head(ctx, -CHANNEL_HEADER_LEN))
		return pass(counters);
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	if (data + len + CHANNEL_HEADER_LEN > end)
		return XDP_DROP;
	__builtin_memcpy(data, headers, len);
	__builtin_memcpy(data + len, channel_header, CHANNEL_HEADER_LEN);
	if (counters) {
		counters->to_client_packets++;
		counters->to_client_bytes += payload_len;
	}
	count(traffic, payload_len);
	return action;
}

static __always_inline void set_ip(struct headers *h, __u32 saddr, __u32 daddr,
				   __u16 payload_len, int dont_fragment)
{
	h->ip.saddr = saddr;
	h->ip.daddr = daddr;
	h->ip.tot_len = bpf_htons(sizeof(struct iphdr) + sizeof(struct udphdr) + payload_len);
	h->ip.ttl = 64;
	// ECN carried on, DSCP as a socket's (0).
	h->ip.tos &= 0x03;
	// Only DF survives of the flags (fragments never get here).
	h->ip.frag_off &= bpf_htons(IP_DF);
	if (dont_fragment)
		h->ip.frag_off = bpf_htons(IP_DF);
	// The sender's identification would leak its host's counter: 0 for an
	// atomic datagram (RFC 6864), a random one where it may be fragmented.
	h->ip.id = h->ip.frag_off ? 0 : (__u16)bpf_get_prandom_u32();
	h->udp.len = bpf_htons(sizeof(struct udphdr) + payload_len);
}

// Whether an IPv4 header (20 bytes, no options) has a valid checksum.
static __always_inline int ip_checksum_ok(const struct headers *h)
{
	const __u16 *words = (const __u16 *)h + sizeof(struct ethhdr) / 2;
	__u64 sum = 0;

#pragma unroll
	for (int i = 0; i < (int)(sizeof(struct iphdr) / 2); i++)
		sum += words[i];
	return csum_fold(sum) == 0;
}

// ChannelData from a client: strip the channel header, send the payload from
// the relayed address to the peer.
static __always_inline int to_peer(struct xdp_md *ctx, struct headers *h,
				   __u16 payload_len, const struct config *config,
				   struct counters *counters)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__be16 *channel = data + sizeof(*h);

	if ((void *)(channel + 2) > end)
		return XDP_PASS;
	// Only the channel range (0x4000-0x7fff) can be ChannelData.
	if ((((__u8 *)channel)[0] & 0xc0) != 0x40)
		return XDP_PASS;
	struct client_key key = {
		.client_ip = h->ip.saddr,
		.server_ip = h->ip.daddr,
		.client_port = h->udp.source,
		.server_port = h->udp.dest,
		.channel = channel[0],
	};
	struct route *route = bpf_map_lookup_elem(&CLIENT_ROUTES, &key);
	if (!route)
		return XDP_PASS;
	__u16 data_len = bpf_ntohs(channel[1]);
	// Padding after the data (allowed, not needed, over UDP) or a length
	// beyond the datagram: the stack decides.
	if (payload_len != CHANNEL_HEADER_LEN + data_len || bpf_ktime_get_ns() >= route->until_ns)
		return pass(counters);

	__u32 channel_word = *(__u32 *)channel;
	struct headers new = *h;
	new.udp.source = route->relay_port;
	new.udp.dest = route->peer_port;
	set_ip(&new, route->relay_ip, route->peer_ip, data_len,
	       route->flags & ROUTE_DONT_FRAGMENT);
	udp_checksum(h, &new, channel_word, 0);
	ip_checksum(&new);
	int action = forward(ctx, &new, config);
	if (action < 0)
		return pass(counters);
	// Last, so that only what is relayed takes from the bucket.
	int capped = limit(route, TO_PEER, data_len, counters);
	if (capped >= 0)
		return capped;
	return emit_to_peer(ctx, &new, sizeof(new), data_len, action, counters, &route->traffic);
}

// A datagram from a peer to a relayed address with a channel: prepend the
// channel header, send it from the server's address to the client.
static __always_inline int to_client(struct xdp_md *ctx, struct headers *h,
				     __u16 payload_len, const struct config *config,
				     struct counters *counters)
{
	struct peer_key key = {
		.peer_ip = h->ip.saddr,
		.relay_ip = h->ip.daddr,
		.peer_port = h->udp.source,
		.relay_port = h->udp.dest,
	};
	struct route *route = bpf_map_lookup_elem(&PEER_ROUTES, &key);
	if (!route)
		return XDP_PASS;
	// The grown datagram must still fit IPv4's 16-bit total length (a 64 KiB
	// loopback MTU would let it through the MTU check).
	if (bpf_ktime_get_ns() >= route->until_ns ||
	    payload_len > 0xffff - sizeof(struct iphdr) - sizeof(struct udphdr) - CHANNEL_HEADER_LEN)
		return pass(counters);
	__u32 mtu_len = 0;
	if (bpf_check_mtu(ctx, 0, &mtu_len, CHANNEL_HEADER_LEN, 0))
		return pass(counters);

	__be16 channel_header[2] = { route->channel, bpf_htons(payload_len) };
	__u32 channel_word = *(__u32 *)channel_header;
	struct headers new = *h;
	new.udp.source = route->server_port;
	new.udp.dest = route->client_port;
	set_ip(&new, route->server_ip, route->client_ip, CHANNEL_HEADER_LEN + payload_len, 0);
	udp_checksum(h, &new, 0, channel_word);
	ip_checksum(&new);
	int action = forward(ctx, &new, config);
	if (action < 0)
		return pass(counters);
	int capped = limit(route, TO_CLIENT, payload_len, counters);
	if (capped >= 0)
		return capped;
	return emit_to_client(ctx, &new, sizeof(new), channel_header, payload_len, action,
			      counters, &route->traffic);
}

static __always_inline void set_ip6(struct headers6 *h, const __u32 *saddr, const __u32 *daddr,
				    __u16 payload_len)
{
	__builtin_memcpy(&h->ip.saddr, saddr, 16);
	__builtin_memcpy(&h->ip.daddr, daddr, 16);
	h->ip.payload_len = bpf_htons(sizeof(struct udphdr) + payload_len);
	h->ip.hop_limit = 64;
	// Traffic class: DSCP as a socket's (0), ECN carried on (its two low
	// bits, the top of flow_lbl[0]); no flow label (RFC 6437: unlabelled).
	h->ip.priority = 0;
	h->ip.flow_lbl[0] &= 0x30;
	h->ip.flow_lbl[1] = 0;
	h->ip.flow_lbl[2] = 0;
	h->udp.len = h->ip.payload_len;
}

// IPv6 ChannelData from a client (see to_peer). IPv6 has no DF bit: routers
// never fragment, so DONT-FRAGMENT needs nothing here.
static __always_inline int to_peer6(struct xdp_md *ctx, struct headers6 *h,
				    __u16 payload_len, const struct config *config,
				    struct counters *counters)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__be16 *channel = data + sizeof(*h);

	if ((void *)(channel + 2) > end)
		return XDP_PASS;
	if ((((__u8 *)channel)[0] & 0xc0) != 0x40)
		return XDP_PASS;
	struct client_key6 key = {
		.client_port = h->udp.source,
		.server_port = h->udp.dest,
		.channel = channel[0],
	};
	__builtin_memcpy(key.client_ip, &h->ip.saddr, 16);
	__builtin_memcpy(key.server_ip, &h->ip.daddr, 16);
	struct route6 *route = bpf_map_lookup_elem(&CLIENT_ROUTES6, &key);
	if (!route)
		return XDP_PASS;
	__u16 data_len = bpf_ntohs(channel[1]);
	if (payload_len != CHANNEL_HEADER_LEN + data_len || bpf_ktime_get_ns() >= route->until_ns)
		return pass(counters);

	__s64 payload_sum = sum_bytes(channel + 2, end, data_len);
	if (!udp_checksum6_ok(h, *(__u32 *)channel, payload_sum))
		return pass(counters);
	struct headers6 new = *h;
	new.udp.source = route->relay_port;
	new.udp.dest = route->peer_port;
	set_ip6(&new, route->relay_ip, route->peer_ip, data_len);
	if (udp_checksum6(&new, 0, payload_sum))
		return pass(counters);
	int action = forward6(ctx, &new, config);
	if (action < 0)
		return pass(counters);
	int capped = limit6(route, TO_PEER, data_len, counters);
	if (capped >= 0)
		return capped;
	return emit_to_peer(ctx, &new, sizeof(new), data_len, action, counters, &route->traffic);
}

// An IPv6 datagram from a peer to a relayed address (see to_client).
static __always_inline int to_client6(struct xdp_md *ctx, struct headers6 *h,
				      __u16 payload_len, const struct config *config,
				      struct counters *counters)
{
	struct peer_key6 key = {
		.peer_port = h->udp.source,
		.relay_port = h->udp.dest,
	};
	__builtin_memcpy(key.peer_ip, &h->ip.saddr, 16);
	__builtin_memcpy(key.relay_ip, &h->ip.daddr, 16);
	struct route6 *route = bpf_map_lookup_elem(&PEER_ROUTES6, &key);
	if (!route)
		return XDP_PASS;
	// IPv6's 16-bit payload length covers the UDP header and the data.
	if (bpf_ktime_get_ns() >= route->until_ns ||
	    payload_len > 0xffff - sizeof(struct udphdr) - CHANNEL_HEADER_LEN)
		return pass(counters);
	__u32 mtu_len = 0;
	if (bpf_check_mtu(ctx, 0, &mtu_len, CHANNEL_HEADER_LEN, 0))
		return pass(counters);

	__be16 channel_header[2] = { route->channel, bpf_htons(payload_len) };
	__u32 channel_word = *(__u32 *)channel_header;
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__s64 payload_sum = sum_bytes(data + sizeof(*h), end, payload_len);
	if (!udp_checksum6_ok(h, 0, payload_sum))
		return pass(counters);
	struct headers6 new = *h;
	new.udp.source = route->server_port;
	new.udp.dest = route->client_port;
	set_ip6(&new, route->server_ip, route->client_ip, CHANNEL_HEADER_LEN + payload_len);
	if (udp_checksum6(&new, channel_word, payload_sum))
		return pass(counters);
	int action = forward6(ctx, &new, config);
	if (action < 0)
		return pass(counters);
	int capped = limit6(route, TO_CLIENT, payload_len, counters);
	if (capped >= 0)
		return capped;
	return emit_to_client(ctx, &new, sizeof(new), channel_header, payload_len, action,
			      counters, &route->traffic);
}

static __always_inline int is_relay_port(const struct config *config, __be16 port)
{
	__u16 p = bpf_ntohs(port);
	return config && p >= config->relay_port_min && p <= config->relay_port_max;
}

static __always_inline int relay4(struct xdp_md *ctx, const struct config *config,
				  struct counters *counters)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct headers *h = data;

	if ((void *)(h + 1) > end)
		return XDP_PASS;
	if (h->ip.version != 4 || h->ip.ihl != 5 || h->ip.protocol != IPPROTO_UDP)
		return XDP_PASS;
	// Fragments are reassembled by the stack, and a corrupted header is
	// dropped there (recomputing its checksum would make it valid).
	if (h->ip.frag_off & bpf_htons(IP_MF_OFFSET) || !ip_checksum_ok(h))
		return XDP_PASS;
	__u16 udp_len = bpf_ntohs(h->udp.len);
	if (udp_len < sizeof(struct udphdr) || (void *)&h->udp + udp_len > end ||
	    bpf_ntohs(h->ip.tot_len) != sizeof(struct iphdr) + udp_len)
		return XDP_PASS;
	__u16 payload_len = udp_len - sizeof(struct udphdr);
	struct headers copy = *h;
	if (is_relay_port(config, h->udp.dest))
		return to_client(ctx, &copy, payload_len, config, counters);
	return to_peer(ctx, &copy, payload_len, config, counters);
}

static __always_inline int relay6(struct xdp_md *ctx, const struct config *config,
				  struct counters *counters)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct headers6 *h = data;

	if ((void *)(h + 1) > end)
		return XDP_PASS;
	// Extension headers (fragments among them) are the stack's.
	if (h->ip.version != 6 || h->ip.nexthdr != IPPROTO_UDP)
		return XDP_PASS;
	__u16 udp_len = bpf_ntohs(h->udp.len);
	// A zero UDP checksum is invalid over IPv6: the stack drops it.
	if (udp_len < sizeof(struct udphdr) || (void *)&h->udp + udp_len > end ||
	    bpf_ntohs(h->ip.payload_len) != udp_len || h->udp.check == 0)
		return XDP_PASS;
	__u16 payload_len = udp_len - sizeof(struct udphdr);
	struct headers6 copy = *h;
	if (is_relay_port(config, h->udp.dest))
		return to_client6(ctx, &copy, payload_len, config, counters);
	return to_peer6(ctx, &copy, payload_len, config, counters);
}

SEC("xdp")
int turnpike_fast_path(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	__u32 zero = 0;
	const struct config *config = bpf_map_lookup_elem(&CONFIG, &zero);
	struct counters *counters = bpf_map_lookup_elem(&COUNTERS, &zero);
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return relay4(ctx, config, counters);
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return relay6(ctx, config, counters);
	return XDP_PASS;
}

// Dual licensed (see the first line); the kernel is told the GPL option,
// which its GPL-only helpers (bpf_fib_lookup, bpf_redirect) require.
char LICENSE[] SEC("license") = "GPL";
