//! Which peer addresses a client may relay to.
//!
//! # The threat
//!
//! A TURN server sends whatever its clients ask to whatever address they
//! name, from inside the operator's network. Without a policy, a client can
//! use CreatePermission, ChannelBind, Send or (RFC 6062) Connect to reach
//! the server's loopback services, the private network behind it, or the
//! cloud metadata service at `169.254.169.254` / `fd00:ec2::254`: SSRF
//! through TURN, the most common class of TURN vulnerability. Filters that
//! compare the address as written are routinely bypassed by writing an IPv4
//! address in one of its IPv6 forms (`::ffff:127.0.0.1`, `2002:7f00:1::`,
//! `64:ff9b::a9fe:a9fe`, a Teredo address hiding `10.0.0.1` XOR-ed).
//!
//! # Canonicalisation
//!
//! Every decision looks at all the *forms* of a peer address: the address as
//! written, plus every IPv4 address that [`embedded_ipv4`] finds in it
//! (IPv4-mapped, IPv4-compatible, IPv4-translated, 6to4, Teredo server and
//! client, NAT64 `64:ff9b::/96` and `64:ff9b:1::/48`, ISATAP). The rules:
//!
//! 1. **Operator deny list**: refused if *any* form is in it
//!    ([`PeerDenied::OperatorDenied`]). It wins over everything else.
//! 2. **Server sockets** ([`PeerPolicy::check`] only, it needs the port):
//!    refused if any form, with the peer port, is one of this server's own
//!    sockets ([`PeerDenied::ServerSocket`]). A socket bound to a wildcard
//!    address is on every IP of the host, which is why the shell teaches
//!    the policy the host's addresses as they are
//!    ([`PeerPolicy::with_host_ips`]), not only those written in the
//!    configuration. For a Teredo address the client IPv4 and its
//!    (de-obfuscated) UDP port are checked too, since that is where a
//!    Teredo relay would deliver the packet. The allow list does not
//!    override this.
//! 3. **Host services** ([`PeerPolicy::check`] only): on an IP of this host
//!    that the allow list does not cover, only the relay ports are open
//!    ([`PeerDenied::HostService`]). Two clients of the server reach each
//!    other's relayed addresses there, which is all relaying to the host
//!    is for; any other port is a service of the host (a database, an
//!    exporter, a Docker socket) bound to a wildcard address, which traffic
//!    from the host to itself reaches through `lo`, past the firewall that
//!    keeps it from the outside. (coturn leaves these open unless
//!    `denied-peer-ip` lists the public IP.)
//! 4. **Reserved ranges**: refused if any form falls in a built-in reserved
//!    range ([`PeerDenied::Reserved`]) that the operator's allow list does not
//!    cover. An embedded IPv4 is covered if the allow list contains it. The
//!    written IPv6 address is covered if the allow list contains it, or, when
//!    its range is refused only *because* it is an IPv4 representation
//!    (mapped, compatible, translated, Teredo, local-use NAT64), if it
//!    embeds at least one IPv4 address and the allow list contains all of
//!    them. So allowing `127.0.0.0/8` allows `127.0.0.1` in every form.
//!
//! The allow list is not a whitelist: addresses outside every reserved range
//! are allowed without it. Operator entries written as IPv4-mapped IPv6
//! (`::ffff:10.0.0.0/104`) are converted to the IPv4 network they denote, so
//! they apply to every form (and allowing `::ffff:0:0/96` allows all IPv4).
//! Server sockets and local IPs given in mapped form are converted likewise.
//!
//! # Decisions
//!
//! - **IPv4-mapped `::ffff:0:0/96` is refused outright** (as are the
//!   deprecated IPv4-compatible `::/96` and IPv4-translated
//!   `::ffff:0:0:0/96`), even when the IPv4 address inside is public. These
//!   are API representations of IPv4 addresses, not IPv6 destinations:
//!   RFC 6890 marks `::ffff:0:0/96` neither forwardable nor global, and
//!   RFC 4291 §2.5.5 deprecates the compatible form. Sent from a dual-stack
//!   IPv6 relay socket, a mapped address silently becomes IPv4 traffic, which
//!   would let an IPv6 allocation relay to IPv4 peers and defeat RFC 8656's
//!   rule that the peer's family must match the relayed address (443 Peer
//!   Address Family Mismatch); a client that wants an IPv4 peer must ask for
//!   an IPv4 allocation. RFC 8656 lets the server restrict the peer addresses
//!   it accepts (403 Forbidden) and mapped forms are where SSRF filters are
//!   usually bypassed, so the strict rule costs legitimate clients nothing.
//! - **Teredo `2001::/32` is refused outright**. Traffic to a Teredo address
//!   leaves as IPv6 but is delivered over IPv4/UDP by whichever Teredo relay
//!   is nearest, to an IPv4 address and port that are obfuscated in the
//!   address: the policy cannot vouch for where it lands, and Teredo (with
//!   6to4 and ISATAP) is the vehicle of the tunnel amplification / routing
//!   loop attacks of RFC 6156 §9.1 (carried into RFC 8656's security
//!   considerations) and RFC 6324. Teredo is also all but extinct, and it
//!   sits inside `2001::/23`, which is refused anyway. Its embedded addresses
//!   are still extracted, so deny lists, server sockets and the reported
//!   reason see them.
//! - **6to4 `2002::/16`, NAT64 `64:ff9b::/96` and ISATAP interface
//!   identifiers are judged by their embedded IPv4**: they are routable, and
//!   `64:ff9b::/96` is how every IPv4 peer looks to a server on an IPv6-only
//!   network with DNS64, so refusing them would break real deployments.
//! - **Local-use NAT64 `64:ff9b:1::/48`** (RFC 8215) is refused outright: it
//!   leads to the operator's own translator, i.e. into its network.
//! - **IPv6 outside `2000::/3`** (the only space IANA allocates for global
//!   unicast), except `64:ff9b::/96`, is refused as `"outside 2000::/3"`
//!   after the named ranges: it is all special-purpose or unassigned.
//! - **The server's own IPs are not refused wholesale**: a peer on one of
//!   the server's relay addresses is another client's allocation (two clients
//!   of the same server talking through it), which must keep working. The
//!   server's listening sockets, and every port outside the relay range,
//!   are refused there. CreatePermission, which names no port, accepts the
//!   host's IPs for that reason; the port is judged on every Send and at
//!   ChannelBind.
//!
//! Not covered: a NAT64 *network-specific* prefix (RFC 6052) cannot be told
//! from ordinary IPv6, so an operator running one must put it in the deny
//! list; likewise provider endpoints on public addresses, such as Azure's
//! `168.63.129.16`, and the operator's own internal public ranges.
//!
//! # Cost
//!
//! [`PeerPolicy::check`] runs on every Send indication and ChannelData
//! message, so it allocates nothing: an address has at most four forms, each
//! compared against 15 IPv4 or 15 IPv6 built-in ranges and the operator's
//! lists, all stored as `(network, mask)` integer pairs (one AND and one
//! compare per entry). A few dozen integer comparisons per packet.

use std::fmt;
use std::iter::FusedIterator;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

/// Why a peer address may not be relayed to. Every variant is a policy
/// refusal: requests get 403 (Forbidden), indications and ChannelData are
/// dropped (RFC 8656).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerDenied {
    /// The address, or an IPv4 address embedded in it, is in a built-in
    /// reserved range that the operator's allow list does not cover. `range`
    /// is the range as CIDR text (`"169.254.0.0/16"`), or `"outside 2000::/3"`
    /// for IPv6 that is not global unicast.
    Reserved {
        /// The reserved range that matched.
        range: &'static str,
    },
    /// The address, or an IPv4 address embedded in it, is in the operator's
    /// deny list.
    OperatorDenied,
    /// The peer is one of this server's own sockets.
    ServerSocket,
    /// The peer is on one of this host's IPs, outside the relay port range:
    /// a service of the host, not another client's relayed address.
    HostService,
}

impl fmt::Display for PeerDenied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerDenied::Reserved { range } => {
                write!(
                    f,
                    "peer address is reserved ({range}, {})",
                    range_name(range)
                )
            }
            PeerDenied::OperatorDenied => f.write_str("peer address is denied by the operator"),
            PeerDenied::ServerSocket => {
                f.write_str("peer address is one of the server's own sockets")
            }
            PeerDenied::HostService => {
                f.write_str("peer address is a port of this host outside the relay range")
            }
        }
    }
}

impl std::error::Error for PeerDenied {}

/// Decides whether a peer address may be relayed to; see the
/// [module documentation](self) for the rules. Built once from the
/// configuration and shared read-only; checking allocates nothing.
#[derive(Clone, Debug)]
pub struct PeerPolicy {
    allowed: NetList,
    denied: NetList,
    /// Server sockets bound to a specific IP (canonical: no mapped forms).
    exact_sockets: Box<[SocketAddr]>,
    /// Ports of server sockets bound to a wildcard address.
    wildcard_ports: Box<[u16]>,
    /// IPs of this host named in the configuration (canonical).
    configured_ips: Box<[IpAddr]>,
    /// Those and the host's own addresses (canonical, sorted).
    local_ips: Box<[IpAddr]>,
    /// The relay port range: the only ports open on the host's IPs. `None`
    /// leaves every port but the server sockets open.
    relay_ports: Option<(u16, u16)>,
}

impl PeerPolicy {
    /// Builds a policy.
    ///
    /// - `allowed`: operator allow list; overrides the built-in
    ///   reserved-range refusal for the addresses it covers, in every form
    ///   (e.g. `127.0.0.0/8` and `::1/128` for a test setup with local peers).
    /// - `denied`: operator deny list; always refused, in every form, even if
    ///   also allowed.
    /// - `server_sockets`: this server's own sockets (STUN/TURN listeners,
    ///   admin and metrics ports); always refused, even if allowed. A wildcard
    ///   entry (`0.0.0.0:P` or `[::]:P`) means port P on any of `local_ips`
    ///   and on any loopback or unspecified address, of either family (a
    ///   `[::]` socket usually accepts IPv4 too).
    /// - `local_ips`: IPs of this host: listen IPs, relay IPs, advertised
    ///   external IPs.
    ///
    /// IPv4-mapped entries in any list are converted to IPv4 (see the
    /// [module documentation](self#canonicalisation)).
    #[must_use]
    pub fn new(
        allowed: Vec<IpNet>,
        denied: Vec<IpNet>,
        server_sockets: Vec<SocketAddr>,
        local_ips: Vec<IpAddr>,
    ) -> Self {
        let mut exact_sockets = Vec::new();
        let mut wildcard_ports = Vec::new();
        for socket in server_sockets {
            let ip = canonical_ip(socket.ip());
            if ip.is_unspecified() {
                wildcard_ports.push(socket.port());
            } else {
                exact_sockets.push(SocketAddr::new(ip, socket.port()));
            }
        }
        exact_sockets.sort_unstable();
        exact_sockets.dedup();
        wildcard_ports.sort_unstable();
        wildcard_ports.dedup();
        let configured_ips = canonical_ips(local_ips);
        PeerPolicy {
            allowed: NetList::new(allowed),
            denied: NetList::new(denied),
            exact_sockets: exact_sockets.into(),
            wildcard_ports: wildcard_ports.into(),
            local_ips: configured_ips.clone(),
            configured_ips,
            relay_ports: None,
        }
    }

    /// This policy with the relay port range `min..=max`: on the host's IPs
    /// only those ports may be relayed to (rule 3 of the
    /// [module documentation](self)).
    #[must_use]
    pub fn with_relay_ports(mut self, min: u16, max: u16) -> Self {
        self.relay_ports = Some((min, max));
        self
    }

    /// This policy with the host's addresses as they are now (every
    /// interface's, from the shell), added to those of the configuration.
    /// The addresses of an earlier call are replaced.
    #[must_use]
    pub fn with_host_ips(&self, host: &[IpAddr]) -> Self {
        let ips = self.configured_ips.iter().chain(host).copied().collect();
        PeerPolicy {
            local_ips: canonical_ips(ips),
            ..self.clone()
        }
    }

    /// The IPs the policy takes for this host's.
    pub fn local_ips(&self) -> &[IpAddr] {
        &self.local_ips
    }

    /// The IP-level check, for CreatePermission (permissions are per IP,
    /// RFC 8656 §9): the deny list, then the reserved ranges.
    pub fn check_ip(&self, peer: IpAddr) -> Result<(), PeerDenied> {
        let embedded = embedded_of(peer);
        self.check_denied(peer, &embedded)?;
        self.check_reserved(peer, &embedded)
    }

    /// The full check, for ChannelBind, Send, ChannelData and TCP Connect:
    /// the deny list, then the server's own sockets, then the host's other
    /// ports, then the reserved ranges.
    pub fn check(&self, peer: SocketAddr) -> Result<(), PeerDenied> {
        let ip = peer.ip();
        let embedded = embedded_of(ip);
        self.check_denied(ip, &embedded)?;
        self.check_server_socket(ip, peer.port(), &embedded)?;
        self.check_host_service(ip, peer.port(), &embedded)?;
        self.check_reserved(ip, &embedded)
    }

    fn check_host_service(
        &self,
        ip: IpAddr,
        port: u16,
        embedded: &EmbeddedIpv4,
    ) -> Result<(), PeerDenied> {
        let Some((min, max)) = self.relay_ports else {
            return Ok(());
        };
        if (min..=max).contains(&port) {
            return Ok(());
        }
        let host = |ip: IpAddr| self.local_ips.contains(&ip) && !self.allowed.contains(ip);
        if host(ip) || embedded.as_slice().iter().any(|&v4| host(IpAddr::V4(v4))) {
            Err(PeerDenied::HostService)
        } else {
            Ok(())
        }
    }

    fn check_denied(&self, ip: IpAddr, embedded: &EmbeddedIpv4) -> Result<(), PeerDenied> {
        let denied = self.denied.contains(ip)
            || embedded
                .as_slice()
                .iter()
                .any(|&v4| self.denied.contains_v4(v4));
        if denied {
            Err(PeerDenied::OperatorDenied)
        } else {
            Ok(())
        }
    }

    fn check_server_socket(
        &self,
        ip: IpAddr,
        port: u16,
        embedded: &EmbeddedIpv4,
    ) -> Result<(), PeerDenied> {
        let mut own = self.is_server_socket(ip, port)
            || embedded
                .as_slice()
                .iter()
                .any(|&v4| self.is_server_socket(IpAddr::V4(v4), port));
        if let IpAddr::V6(v6) = ip
            && let Some((client, client_port)) = teredo_client(v6)
        {
            own |= self.is_server_socket(IpAddr::V4(client), client_port);
        }
        if own {
            Err(PeerDenied::ServerSocket)
        } else {
            Ok(())
        }
    }

    fn is_server_socket(&self, ip: IpAddr, port: u16) -> bool {
        self.exact_sockets.contains(&SocketAddr::new(ip, port))
            || (self.wildcard_ports.contains(&port)
                && (ip.is_loopback() || ip.is_unspecified() || self.local_ips.contains(&ip)))
    }

    fn check_reserved(&self, ip: IpAddr, embedded: &EmbeddedIpv4) -> Result<(), PeerDenied> {
        // Embedded addresses first: when one is reserved, its range is the
        // more telling reason (`127.0.0.0/8` rather than `::ffff:0:0/96`).
        for &v4 in embedded.as_slice() {
            if let Some(range) = reserved_v4(v4)
                && !self.allowed.contains_v4(v4)
            {
                return Err(PeerDenied::Reserved { range });
            }
        }
        match ip {
            IpAddr::V4(v4) => match reserved_v4(v4) {
                Some(range) if !self.allowed.contains_v4(v4) => Err(PeerDenied::Reserved { range }),
                _ => Ok(()),
            },
            IpAddr::V6(v6) => match reserved_v6(v6) {
                Some(range) => {
                    let embedded = embedded.as_slice();
                    let covered = self.allowed.contains_v6(v6)
                        || (range.via_embedded
                            && !embedded.is_empty()
                            && embedded.iter().all(|&v4| self.allowed.contains_v4(v4)));
                    if covered {
                        Ok(())
                    } else {
                        Err(PeerDenied::Reserved { range: range.range })
                    }
                }
                None => Ok(()),
            },
        }
    }
}

/// The IPv4 addresses embedded in an IPv6 address: returned by
/// [`embedded_ipv4`]. A fixed-capacity iterator; no heap allocation.
#[derive(Clone, Debug)]
pub struct EmbeddedIpv4 {
    addrs: [Ipv4Addr; EmbeddedIpv4::CAPACITY],
    len: u8,
    next: u8,
}

impl EmbeddedIpv4 {
    /// At most three: the prefix-based forms exclude one another and yield at
    /// most two (Teredo), and an ISATAP interface identifier adds one.
    const CAPACITY: usize = 3;

    const fn empty() -> Self {
        EmbeddedIpv4 {
            addrs: [Ipv4Addr::UNSPECIFIED; Self::CAPACITY],
            len: 0,
            next: 0,
        }
    }

    fn push(&mut self, addr: Ipv4Addr) {
        let len = usize::from(self.len);
        if self.addrs[..len].contains(&addr) {
            return;
        }
        // Cannot overflow (see CAPACITY); indexing would panic rather than
        // drop an address silently if it ever did.
        self.addrs[len] = addr;
        self.len += 1;
    }

    /// The addresses not yet yielded, in the order they would be.
    #[must_use]
    pub fn as_slice(&self) -> &[Ipv4Addr] {
        &self.addrs[usize::from(self.next)..usize::from(self.len)]
    }
}

impl Iterator for EmbeddedIpv4 {
    type Item = Ipv4Addr;

    fn next(&mut self) -> Option<Ipv4Addr> {
        let addr = self.as_slice().first().copied()?;
        self.next += 1;
        Some(addr)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.as_slice().len();
        (n, Some(n))
    }
}

impl ExactSizeIterator for EmbeddedIpv4 {}
impl FusedIterator for EmbeddedIpv4 {}

/// Every IPv4 address that `addr` embeds or maps to, without duplicates:
///
/// - IPv4-mapped `::ffff:a.b.c.d` (RFC 4291 §2.5.5.2);
/// - IPv4-compatible `::a.b.c.d` (RFC 4291 §2.5.5.1, deprecated), except
///   `::` and `::1`;
/// - IPv4-translated `::ffff:0:a.b.c.d` (RFC 2765 §2.1);
/// - 6to4 `2002:AABB:CCDD::/48`, bits 16..48 (RFC 3056);
/// - Teredo `2001::/32` (RFC 4380): the server in bits 32..64, then the
///   client, which is the last 32 bits XOR `0xFFFFFFFF`;
/// - NAT64 `64:ff9b::/96` (RFC 6052) and local-use `64:ff9b:1::/48`
///   (RFC 8215): the last 32 bits;
/// - ISATAP interface identifiers (RFC 5214) `…:0:5efe:a.b.c.d` and
///   `…:200:5efe:a.b.c.d` (and the group-bit variants `100`, `300`), under
///   any prefix: the last 32 bits.
///
/// A 6to4 or Teredo address with an ISATAP-looking interface identifier
/// yields both readings; it errs towards finding more.
#[must_use]
pub fn embedded_ipv4(addr: Ipv6Addr) -> EmbeddedIpv4 {
    let s = addr.segments();
    let last32 = ipv4_from(s[6], s[7]);
    let mut out = EmbeddedIpv4::empty();
    if s[..5] == [0; 5] {
        match s[5] {
            0xffff => out.push(last32),                    // mapped
            0 if u128::from(addr) > 1 => out.push(last32), // compatible
            _ => {}
        }
    } else if s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0 {
        out.push(last32); // translated
    } else if s[0] == 0x2002 {
        out.push(ipv4_from(s[1], s[2])); // 6to4
    } else if s[0] == 0x2001 && s[1] == 0 {
        out.push(ipv4_from(s[2], s[3])); // Teredo server
        out.push(ipv4_from(!s[6], !s[7])); // Teredo client
    } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || s[..3] == [0x64, 0xff9b, 1] {
        out.push(last32); // NAT64, well-known and local-use
    }
    if s[4] & 0xfcff == 0 && s[5] == 0x5efe {
        out.push(last32); // ISATAP
    }
    out
}

/// The Teredo client's IPv4 address and UDP port (RFC 4380 §4): where a
/// Teredo relay would deliver a packet sent to `addr`.
fn teredo_client(addr: Ipv6Addr) -> Option<(Ipv4Addr, u16)> {
    let s = addr.segments();
    (s[0] == 0x2001 && s[1] == 0).then(|| (ipv4_from(!s[6], !s[7]), !s[5]))
}

fn embedded_of(ip: IpAddr) -> EmbeddedIpv4 {
    match ip {
        IpAddr::V4(_) => EmbeddedIpv4::empty(),
        IpAddr::V6(v6) => embedded_ipv4(v6),
    }
}

fn ipv4_from(high: u16, low: u16) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(high) << 16) | u32::from(low))
}

/// Canonical (no mapped forms), sorted and without duplicates.
fn canonical_ips(ips: Vec<IpAddr>) -> Box<[IpAddr]> {
    let mut ips: Vec<IpAddr> = ips.into_iter().map(canonical_ip).collect();
    ips.sort_unstable();
    ips.dedup();
    ips.into()
}

/// IPv4-mapped IPv6 to IPv4; anything else unchanged.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

// ---------------------------------------------------------------------------
// Built-in reserved ranges
// ---------------------------------------------------------------------------

struct V4Range {
    net: u32,
    mask: u32,
    range: &'static str,
    name: &'static str,
}

const fn v4_range(net: [u8; 4], len: u32, range: &'static str, name: &'static str) -> V4Range {
    let mask = mask32(len);
    V4Range {
        net: u32::from_be_bytes(net) & mask,
        mask,
        range,
        name,
    }
}

/// RFC 6890 and the IANA IPv4 special-purpose registry: everything that is
/// not globally reachable unicast.
static RESERVED_V4: [V4Range; 15] = [
    v4_range([0, 0, 0, 0], 8, "0.0.0.0/8", "\"this network\" (RFC 791)"),
    v4_range([10, 0, 0, 0], 8, "10.0.0.0/8", "private (RFC 1918)"),
    v4_range(
        [100, 64, 0, 0],
        10,
        "100.64.0.0/10",
        "shared address space, CGNAT (RFC 6598)",
    ),
    v4_range([127, 0, 0, 0], 8, "127.0.0.0/8", "loopback (RFC 1122)"),
    v4_range(
        [169, 254, 0, 0],
        16,
        "169.254.0.0/16",
        "link-local, cloud metadata (RFC 3927)",
    ),
    v4_range([172, 16, 0, 0], 12, "172.16.0.0/12", "private (RFC 1918)"),
    v4_range(
        [192, 0, 0, 0],
        24,
        "192.0.0.0/24",
        "IETF protocol assignments (RFC 6890)",
    ),
    v4_range(
        [192, 0, 2, 0],
        24,
        "192.0.2.0/24",
        "documentation, TEST-NET-1 (RFC 5737)",
    ),
    v4_range(
        [192, 88, 99, 0],
        24,
        "192.88.99.0/24",
        "6to4 relay anycast (RFC 7526)",
    ),
    v4_range([192, 168, 0, 0], 16, "192.168.0.0/16", "private (RFC 1918)"),
    v4_range(
        [198, 18, 0, 0],
        15,
        "198.18.0.0/15",
        "benchmarking (RFC 2544)",
    ),
    v4_range(
        [198, 51, 100, 0],
        24,
        "198.51.100.0/24",
        "documentation, TEST-NET-2 (RFC 5737)",
    ),
    v4_range(
        [203, 0, 113, 0],
        24,
        "203.0.113.0/24",
        "documentation, TEST-NET-3 (RFC 5737)",
    ),
    v4_range([224, 0, 0, 0], 4, "224.0.0.0/4", "multicast (RFC 5771)"),
    v4_range(
        [240, 0, 0, 0],
        4,
        "240.0.0.0/4",
        "reserved and broadcast (RFC 1112, RFC 919)",
    ),
];

struct V6Range {
    net: u128,
    mask: u128,
    range: &'static str,
    name: &'static str,
    /// Refused because it represents IPv4 addresses: covered by an allow list
    /// covering every IPv4 address it embeds.
    via_embedded: bool,
}

const fn v6_range(
    net: [u16; 8],
    len: u32,
    range: &'static str,
    name: &'static str,
    via_embedded: bool,
) -> V6Range {
    let mask = mask128(len);
    let mut bits = 0u128;
    let mut i = 0;
    while i < 8 {
        bits = (bits << 16) | net[i] as u128;
        i += 1;
    }
    V6Range {
        net: bits & mask,
        mask,
        range,
        name,
        via_embedded,
    }
}

/// RFC 6890 and the IANA IPv6 special-purpose registry, most specific first
/// where ranges nest (the first match names the reason).
static RESERVED_V6: [V6Range; 15] = [
    v6_range([0; 8], 128, "::/128", "unspecified (RFC 4291)", false),
    v6_range(
        [0, 0, 0, 0, 0, 0, 0, 1],
        128,
        "::1/128",
        "loopback (RFC 4291)",
        false,
    ),
    v6_range(
        [0, 0, 0, 0, 0, 0xffff, 0, 0],
        96,
        "::ffff:0:0/96",
        "IPv4-mapped (RFC 4291)",
        true,
    ),
    v6_range(
        [0, 0, 0, 0, 0xffff, 0, 0, 0],
        96,
        "::ffff:0:0:0/96",
        "IPv4-translated (RFC 2765)",
        true,
    ),
    v6_range(
        [0; 8],
        96,
        "::/96",
        "IPv4-compatible, deprecated (RFC 4291)",
        true,
    ),
    v6_range(
        [0x64, 0xff9b, 1, 0, 0, 0, 0, 0],
        48,
        "64:ff9b:1::/48",
        "local-use NAT64 (RFC 8215)",
        true,
    ),
    v6_range(
        [0x100, 0, 0, 0, 0, 0, 0, 0],
        64,
        "100::/64",
        "discard-only (RFC 6666)",
        false,
    ),
    v6_range(
        [0x2001, 0, 0, 0, 0, 0, 0, 0],
        32,
        "2001::/32",
        "Teredo (RFC 4380)",
        true,
    ),
    v6_range(
        [0x2001, 0, 0, 0, 0, 0, 0, 0],
        23,
        "2001::/23",
        "IETF protocol assignments (RFC 2928)",
        false,
    ),
    v6_range(
        [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0],
        32,
        "2001:db8::/32",
        "documentation (RFC 3849)",
        false,
    ),
    v6_range(
        [0x3fff, 0, 0, 0, 0, 0, 0, 0],
        20,
        "3fff::/20",
        "documentation (RFC 9637)",
        false,
    ),
    v6_range(
        [0xfc00, 0, 0, 0, 0, 0, 0, 0],
        7,
        "fc00::/7",
        "unique local, incl. AWS IMDS (RFC 4193)",
        false,
    ),
    v6_range(
        [0xfe80, 0, 0, 0, 0, 0, 0, 0],
        10,
        "fe80::/10",
        "link-local (RFC 4291)",
        false,
    ),
    v6_range(
        [0xfec0, 0, 0, 0, 0, 0, 0, 0],
        10,
        "fec0::/10",
        "site-local, deprecated (RFC 3879)",
        false,
    ),
    v6_range(
        [0xff00, 0, 0, 0, 0, 0, 0, 0],
        8,
        "ff00::/8",
        "multicast (RFC 4291)",
        false,
    ),
];

/// Everything else outside global unicast `2000::/3`, except NAT64.
static OUTSIDE_GLOBAL: V6Range = v6_range(
    [0x2000, 0, 0, 0, 0, 0, 0, 0],
    3,
    "outside 2000::/3",
    "not global unicast (RFC 4291)",
    false,
);
static NAT64_WELL_KNOWN: V6Range = v6_range(
    [0x64, 0xff9b, 0, 0, 0, 0, 0, 0],
    96,
    "64:ff9b::/96",
    "NAT64 well-known prefix (RFC 6052)",
    false,
);

fn reserved_v4(addr: Ipv4Addr) -> Option<&'static str> {
    let bits = u32::from(addr);
    RESERVED_V4
        .iter()
        .find(|r| bits & r.mask == r.net)
        .map(|r| r.range)
}

fn reserved_v6(addr: Ipv6Addr) -> Option<&'static V6Range> {
    let bits = u128::from(addr);
    let matches = |r: &V6Range| bits & r.mask == r.net;
    RESERVED_V6.iter().find(|r| matches(r)).or_else(|| {
        (!matches(&OUTSIDE_GLOBAL) && !matches(&NAT64_WELL_KNOWN)).then_some(&OUTSIDE_GLOBAL)
    })
}

/// The human name of a reserved range, for messages.
fn range_name(range: &str) -> &'static str {
    RESERVED_V4
        .iter()
        .map(|r| (r.range, r.name))
        .chain(RESERVED_V6.iter().map(|r| (r.range, r.name)))
        .chain([(OUTSIDE_GLOBAL.range, OUTSIDE_GLOBAL.name)])
        .find_map(|(r, name)| (r == range).then_some(name))
        .unwrap_or("reserved")
}

const fn mask32(len: u32) -> u32 {
    if len == 0 { 0 } else { u32::MAX << (32 - len) }
}

const fn mask128(len: u32) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    }
}

// ---------------------------------------------------------------------------
// Operator lists
// ---------------------------------------------------------------------------

/// An operator's CIDR list, as `(network, mask)` pairs per family.
#[derive(Clone, Default)]
struct NetList {
    v4: Box<[(u32, u32)]>,
    v6: Box<[(u128, u128)]>,
}

impl NetList {
    fn new(nets: Vec<IpNet>) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in nets {
            match net {
                IpNet::V4(net) => {
                    let mask = mask32(u32::from(net.prefix_len()));
                    v4.push((u32::from(net.addr()) & mask, mask));
                }
                IpNet::V6(net) => match net.addr().to_ipv4_mapped() {
                    // An IPv4-mapped network denotes IPv4 addresses.
                    Some(mapped) if net.prefix_len() >= 96 => {
                        let mask = mask32(u32::from(net.prefix_len() - 96));
                        v4.push((u32::from(mapped) & mask, mask));
                    }
                    _ => {
                        let mask = mask128(u32::from(net.prefix_len()));
                        v6.push((u128::from(net.addr()) & mask, mask));
                    }
                },
            }
        }
        v4.sort_unstable();
        v4.dedup();
        v6.sort_unstable();
        v6.dedup();
        NetList {
            v4: v4.into(),
            v6: v6.into(),
        }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => self.contains_v4(v4),
            IpAddr::V6(v6) => self.contains_v6(v6),
        }
    }

    fn contains_v4(&self, addr: Ipv4Addr) -> bool {
        let bits = u32::from(addr);
        self.v4.iter().any(|&(net, mask)| bits & mask == net)
    }

    fn contains_v6(&self, addr: Ipv6Addr) -> bool {
        let bits = u128::from(addr);
        self.v6.iter().any(|&(net, mask)| bits & mask == net)
    }
}

impl fmt::Debug for NetList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v4 = self
            .v4
            .iter()
            .map(|&(net, mask)| CidrDebug(IpAddr::V4(net.into()), mask.count_ones()));
        let v6 = self
            .v6
            .iter()
            .map(|&(net, mask)| CidrDebug(IpAddr::V6(net.into()), mask.count_ones()));
        f.debug_list().entries(v4).entries(v6).finish()
    }
}

struct CidrDebug(IpAddr, u32);

impl fmt::Debug for CidrDebug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0, self.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnet::Ipv4Net;
    use proptest::prelude::*;

    const PUBLIC_A: Ipv4Addr = Ipv4Addr::new(8, 8, 4, 4);
    const PUBLIC_B: Ipv4Addr = Ipv4Addr::new(1, 1, 1, 1);
    const TEREDO_PORT: u16 = 40000;

    /// Wildcard listeners, no IP in the configuration: the host's address
    /// is known only once the shell reports it. Then its listener ports
    /// and every port outside the relay range are refused there, in every
    /// form, while relayed addresses (another client's allocation) and the
    /// IP itself (CreatePermission) stay open.
    #[test]
    fn the_hosts_own_addresses_expose_only_relay_ports() {
        let config = PeerPolicy::new(
            vec![],
            vec![],
            vec![
                sock("0.0.0.0:3478"),
                sock("[::]:3478"),
                sock("0.0.0.0:5349"),
            ],
            vec![],
        )
        .with_relay_ports(49152, 65535);
        let public = "11.22.33.44";
        assert_eq!(
            config.check(sock("11.22.33.44:3478")),
            Ok(()),
            "unknown host IP"
        );
        let host = config.with_host_ips(&[ip(public), ip("2001:db8:1::7"), ip("127.0.0.1")]);
        for peer in [
            "11.22.33.44:3478",
            "11.22.33.44:5349",
            "[2002:b16:212c::]:3478",
        ] {
            assert_eq!(
                host.check(sock(peer)),
                Err(PeerDenied::ServerSocket),
                "{peer}"
            );
        }
        for peer in [
            "11.22.33.44:6379",
            "11.22.33.44:22",
            "[2002:b16:212c::]:5432",
        ] {
            assert_eq!(
                host.check(sock(peer)),
                Err(PeerDenied::HostService),
                "{peer}"
            );
        }
        assert_eq!(host.check(sock("11.22.33.44:49152")), Ok(()));
        assert_eq!(host.check(sock("11.22.33.44:65535")), Ok(()));
        assert_eq!(host.check_ip(ip(public)), Ok(()));
        // Other public peers keep every port.
        assert_eq!(host.check(sock("93.184.216.34:6379")), Ok(()));
        // A later report replaces the host's addresses.
        let moved = host.with_host_ips(&[ip("11.22.33.45")]);
        assert_eq!(moved.check(sock("11.22.33.44:6379")), Ok(()));
        assert_eq!(
            moved.check(sock("11.22.33.45:6379")),
            Err(PeerDenied::HostService)
        );

        // The configuration's IPs stay whatever the host reports, and the
        // operator's allow list opens a host IP's ports (a test setup
        // relaying to its own loopback) but never the listeners.
        let allowing = PeerPolicy::new(
            vec![net("127.0.0.0/8")],
            vec![],
            vec![sock("127.0.0.1:3478")],
            vec![ip("127.0.0.1"), ip("198.51.100.1")],
        )
        .with_relay_ports(49152, 65535)
        .with_host_ips(&[]);
        assert_eq!(allowing.check(sock("127.0.0.1:6379")), Ok(()));
        assert_eq!(
            allowing.check(sock("127.0.0.1:3478")),
            Err(PeerDenied::ServerSocket)
        );
        assert_eq!(
            allowing.check(sock("198.51.100.1:6379")),
            Err(PeerDenied::HostService)
        );
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sock(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn hi(v: Ipv4Addr) -> u16 {
        (u32::from(v) >> 16) as u16
    }

    fn lo(v: Ipv4Addr) -> u16 {
        u32::from(v) as u16
    }

    fn teredo(server: Ipv4Addr, client: Ipv4Addr, port: u16) -> Ipv6Addr {
        let c = !u32::from(client);
        Ipv6Addr::new(
            0x2001,
            0,
            hi(server),
            lo(server),
            0x8000,
            !port,
            (c >> 16) as u16,
            c as u16,
        )
    }

    // Every form an IPv4 address `v` can take. `other` is the second address
    // of a Teredo address (server for the client form and vice versa).
    fn plain(v: Ipv4Addr, _: Ipv4Addr) -> IpAddr {
        IpAddr::V4(v)
    }
    fn mapped(v: Ipv4Addr, _: Ipv4Addr) -> IpAddr {
        v.to_ipv6_mapped().into()
    }
    fn compatible(v: Ipv4Addr, _: Ipv4Addr) -> IpAddr {
        v.to_ipv6_compatible().into()
    }
    fn translated(v: Ipv4Addr, _: Ipv4Addr) -> IpAddr {
        Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, hi(v), lo(v)).into()
    }
    fn six_to_four(v: Ipv4Addr, _: Ipv4Addr) -> IpAddr {
        Ipv6Addr::new(0x2002, hi(v), lo(v), 0, 0, 0, 0, 1).into()
    }
    fn teredo_as_client(v: Ipv4Addr, other: Ipv4Addr) -> IpAddr {
        teredo(other, v, TEREDO_PORT).into()
    }
    fn teredo_as_server(v: Ipv4Addr, other: Ipv4Addr) -> IpAddr {
        teredo(v, other, TEREDO_PORT).into()
    }
    fn nat64(v: Ipv4Addr, _: Ipv4Addr) -> IpAddr {
        Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, hi(v), lo(v)).into()
    }
    fn nat64_local(v: Ipv4Addr, _: Ipv4Addr) -> IpAddr {
        Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, hi(v), lo(v)).into()
    }
    fn isatap(v: Ipv4Addr, _: Ipv4Addr) -> IpAddr {
        Ipv6Addr::new(0x2606, 0x4700, 1, 0, 0, 0x5efe, hi(v), lo(v)).into()
    }
    fn isatap_global(v: Ipv4Addr, _: Ipv4Addr) -> IpAddr {
        Ipv6Addr::new(0x2606, 0x4700, 1, 0, 0x200, 0x5efe, hi(v), lo(v)).into()
    }

    struct Form {
        name: &'static str,
        make: fn(Ipv4Addr, Ipv4Addr) -> IpAddr,
        /// The IPv6 prefix is itself refused, whatever it embeds.
        prefix_reserved: bool,
    }

    const FORMS: [Form; 11] = [
        Form {
            name: "plain IPv4",
            make: plain,
            prefix_reserved: false,
        },
        Form {
            name: "IPv4-mapped ::ffff:a.b.c.d",
            make: mapped,
            prefix_reserved: true,
        },
        Form {
            name: "IPv4-compatible ::a.b.c.d",
            make: compatible,
            prefix_reserved: true,
        },
        Form {
            name: "IPv4-translated ::ffff:0:a.b.c.d",
            make: translated,
            prefix_reserved: true,
        },
        Form {
            name: "6to4 2002:AABB:CCDD::1",
            make: six_to_four,
            prefix_reserved: false,
        },
        Form {
            name: "Teredo client",
            make: teredo_as_client,
            prefix_reserved: true,
        },
        Form {
            name: "Teredo server",
            make: teredo_as_server,
            prefix_reserved: true,
        },
        Form {
            name: "NAT64 64:ff9b::a.b.c.d",
            make: nat64,
            prefix_reserved: false,
        },
        Form {
            name: "NAT64 local-use 64:ff9b:1::a.b.c.d",
            make: nat64_local,
            prefix_reserved: true,
        },
        Form {
            name: "ISATAP ::0:5efe:a.b.c.d",
            make: isatap,
            prefix_reserved: false,
        },
        Form {
            name: "ISATAP ::200:5efe:a.b.c.d",
            make: isatap_global,
            prefix_reserved: false,
        },
    ];

    /// Representatives of every built-in IPv4 range: its edges and notable
    /// addresses. (0.0.0.0 and 0.0.0.1 are left out: their compatible forms
    /// are `::` and `::1`, tested with IPv6.)
    const V4_TABLE: &[(&str, &[&str])] = &[
        ("0.0.0.0/8", &["0.1.2.3", "0.255.255.255"]),
        ("10.0.0.0/8", &["10.0.0.0", "10.1.2.3", "10.255.255.255"]),
        (
            "100.64.0.0/10",
            &["100.64.0.0", "100.100.100.200", "100.127.255.255"],
        ),
        ("127.0.0.0/8", &["127.0.0.1", "127.255.255.255"]),
        (
            "169.254.0.0/16",
            &["169.254.0.0", "169.254.169.254", "169.254.255.255"],
        ),
        ("172.16.0.0/12", &["172.16.0.0", "172.31.255.255"]),
        ("192.0.0.0/24", &["192.0.0.0", "192.0.0.10", "192.0.0.255"]),
        ("192.0.2.0/24", &["192.0.2.0", "192.0.2.255"]),
        ("192.88.99.0/24", &["192.88.99.0", "192.88.99.255"]),
        ("192.168.0.0/16", &["192.168.0.1", "192.168.255.255"]),
        ("198.18.0.0/15", &["198.18.0.0", "198.19.255.255"]),
        ("198.51.100.0/24", &["198.51.100.0", "198.51.100.255"]),
        ("203.0.113.0/24", &["203.0.113.0", "203.0.113.255"]),
        ("224.0.0.0/4", &["224.0.0.1", "239.255.255.250"]),
        ("240.0.0.0/4", &["240.0.0.0", "255.255.255.255"]),
    ];

    /// IPv6 addresses refused for their own range (the IPv4 they embed, if
    /// any, is public).
    const V6_TABLE: &[(&str, &[&str])] = &[
        ("::/128", &["::"]),
        ("::1/128", &["::1"]),
        ("::ffff:0:0/96", &["::ffff:8.8.8.8", "::ffff:1.1.1.1"]),
        ("::ffff:0:0:0/96", &["::ffff:0:8.8.8.8"]),
        ("::/96", &["::8.8.8.8", "::1.1.1.1"]),
        (
            "64:ff9b:1::/48",
            &["64:ff9b:1::808:808", "64:ff9b:1:abcd::101:101"],
        ),
        ("100::/64", &["100::", "100::ffff:ffff:ffff:ffff"]),
        (
            "2001::/32",
            &[
                "2001:0:808:808:8000:63bf:fefe:fefe",
                "2001:0:101:101::f7f7:f7f7",
            ],
        ),
        (
            "2001::/23",
            &["2001:1::1", "2001:2::1", "2001:1ff:ffff:ffff::1"],
        ),
        ("2001:db8::/32", &["2001:db8::1", "2001:db8:ffff:ffff::1"]),
        ("3fff::/20", &["3fff::1", "3fff:fff:ffff::1"]),
        ("fc00::/7", &["fc00::1", "fd00:ec2::254", "fdff:ffff::1"]),
        ("fe80::/10", &["fe80::1", "febf:ffff::1"]),
        ("fec0::/10", &["fec0::1", "feff:ffff::1"]),
        ("ff00::/8", &["ff02::1", "ff05::1:3", "ffff::1"]),
        (
            "outside 2000::/3",
            &[
                "::2:0:0:1",
                "1::1",
                "64:ff9b:0:1::1",
                "64:ff9b::1:0:808:808",
                "4000::1",
                "5f00::1",
                "e000::1",
            ],
        ),
    ];

    const PUBLIC: &[&str] = &[
        "8.8.8.8",
        "1.1.1.1",
        "1.0.0.0",
        "9.255.255.255",
        "11.0.0.0",
        "100.63.255.255",
        "100.128.0.0",
        "126.255.255.255",
        "128.0.0.0",
        "169.253.255.255",
        "169.255.0.0",
        "172.15.255.255",
        "172.32.0.0",
        "191.255.255.255",
        "192.0.1.255",
        "192.0.3.0",
        "192.88.98.255",
        "192.88.100.0",
        "192.167.255.255",
        "192.169.0.0",
        "198.17.255.255",
        "198.20.0.0",
        "198.51.99.255",
        "198.51.101.0",
        "203.0.112.255",
        "203.0.114.0",
        "223.255.255.255",
        "2606:4700::1111",
        "2001:4860:4860::8888",
        "2000::1",
        "2001:200::1",
        "2001:db7:ffff::1",
        "2001:db9::1",
        "3fff:1000::1",
        "3fff:ffff::1",
        "2002:808:808::1",
        "64:ff9b::808:808",
        "2606:4700:1::5efe:808:808",
        "2606:4700:1::200:5efe:808:808",
        "2c0f:ffff::1",
    ];

    fn open() -> PeerPolicy {
        PeerPolicy::new(vec![], vec![], vec![], vec![])
    }

    /// The operator configuration the allow/deny/socket tests share.
    fn configured() -> PeerPolicy {
        PeerPolicy::new(
            vec![net("127.0.0.0/8"), net("::1/128"), net("10.0.0.0/8")],
            vec![
                net("127.0.0.53/32"),
                net("10.1.0.0/16"),
                net("8.8.8.0/24"),
                net("::ffff:9.9.9.0/120"),
            ],
            vec![
                sock("127.0.0.1:3478"),
                sock("[::1]:3479"),
                sock("1.2.3.4:3478"),
                sock("0.0.0.0:9090"),
                sock("[::]:5349"),
            ],
            vec![ip("1.2.3.4"), ip("2606:4700:10::7"), ip("::ffff:5.6.7.8")],
        )
    }

    /// Runs `(row name, outcome, expected)` rows and reports every mismatch.
    fn assert_rows(
        rows: impl IntoIterator<Item = (String, Result<(), PeerDenied>, Result<(), PeerDenied>)>,
    ) -> usize {
        let mut count = 0;
        let failures: Vec<String> = rows
            .into_iter()
            .inspect(|_| count += 1)
            .filter(|(_, got, want)| got != want)
            .map(|(name, got, want)| format!("{name}: got {got:?}, want {want:?}"))
            .collect();
        assert!(
            failures.is_empty(),
            "{} of {count} rows failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
        count
    }

    const fn reserved(range: &'static str) -> Result<(), PeerDenied> {
        Err(PeerDenied::Reserved { range })
    }

    #[test]
    fn every_reserved_ipv4_range_is_refused_in_every_form() {
        let policy = open();
        let rows = V4_TABLE.iter().flat_map(|&(range, addrs)| {
            addrs.iter().flat_map(move |a| {
                FORMS.iter().map(move |form| {
                    let peer = (form.make)(v4(a), PUBLIC_A);
                    let name = format!("{range} {a} as {} ({peer})", form.name);
                    (name, open().check_ip(peer), reserved(range))
                })
            })
        });
        let n = assert_rows(rows);
        assert_eq!(n, 34 * FORMS.len());
        // Through `check` too (with a port), and with the reserved address in
        // the other Teredo position.
        for &(range, addrs) in V4_TABLE {
            for a in addrs {
                let peer = SocketAddr::new(teredo_as_client(PUBLIC_B, v4(a)), 443);
                assert_eq!(
                    policy.check(peer),
                    reserved(range),
                    "{range} {a} as Teredo server, check"
                );
                let peer = SocketAddr::new(teredo_as_server(PUBLIC_B, v4(a)), 443);
                assert_eq!(
                    policy.check(peer),
                    reserved(range),
                    "{range} {a} as Teredo client, check"
                );
            }
        }
    }

    #[test]
    fn every_reserved_ipv6_range_is_refused() {
        let rows = V6_TABLE.iter().flat_map(|&(range, addrs)| {
            addrs.iter().flat_map(move |a| {
                let peer = ip(a);
                [
                    (
                        format!("{range} {a} check_ip"),
                        open().check_ip(peer),
                        reserved(range),
                    ),
                    (
                        format!("{range} {a} check"),
                        open().check(SocketAddr::new(peer, 3478)),
                        reserved(range),
                    ),
                ]
            })
        });
        assert_rows(rows);
    }

    #[test]
    fn tables_cover_every_built_in_range() {
        for r in &RESERVED_V4 {
            assert!(
                V4_TABLE.iter().any(|(range, _)| *range == r.range),
                "{} untested",
                r.range
            );
        }
        for r in RESERVED_V6.iter().chain([&OUTSIDE_GLOBAL]) {
            assert!(
                V6_TABLE.iter().any(|(range, _)| *range == r.range),
                "{} untested",
                r.range
            );
        }
    }

    #[test]
    fn built_in_ranges_match_their_cidr_text() {
        for r in &RESERVED_V4 {
            let IpNet::V4(parsed) = net(r.range) else {
                panic!("{} is not IPv4", r.range)
            };
            assert_eq!(
                (
                    u32::from(parsed.network()),
                    mask32(parsed.prefix_len().into())
                ),
                (r.net, r.mask),
                "{}",
                r.range
            );
        }
        for r in RESERVED_V6.iter().chain([&NAT64_WELL_KNOWN]) {
            let IpNet::V6(parsed) = net(r.range) else {
                panic!("{} is not IPv6", r.range)
            };
            assert_eq!(
                (
                    u128::from(parsed.network()),
                    mask128(parsed.prefix_len().into())
                ),
                (r.net, r.mask),
                "{}",
                r.range
            );
        }
        assert_eq!(
            (OUTSIDE_GLOBAL.net, OUTSIDE_GLOBAL.mask),
            (0x2000 << 112, 0b111 << 125)
        );
    }

    #[test]
    fn public_addresses_are_allowed() {
        let allowing = PeerPolicy::new(
            vec![net("127.0.0.0/8"), net("::1/128")],
            vec![],
            vec![],
            vec![],
        );
        let rows = PUBLIC.iter().flat_map(|a| {
            let peer = ip(a);
            [
                (format!("{a} check_ip"), open().check_ip(peer), Ok(())),
                (
                    format!("{a} check"),
                    open().check(SocketAddr::new(peer, 3478)),
                    Ok(()),
                ),
                (
                    format!("{a} check_ip, with an allow list"),
                    allowing.check_ip(peer),
                    Ok(()),
                ),
            ]
        });
        assert_rows(rows);
    }

    #[test]
    fn the_unspecified_ipv4_address_and_metadata_services_are_refused() {
        let policy = open();
        assert_eq!(policy.check_ip(ip("0.0.0.0")), reserved("0.0.0.0/8"));
        assert_eq!(policy.check_ip(ip("::ffff:0.0.0.0")), reserved("0.0.0.0/8"));
        assert_eq!(
            policy.check(sock("169.254.169.254:80")),
            reserved("169.254.0.0/16")
        );
        assert_eq!(
            policy.check(sock("[::ffff:169.254.169.254]:80")),
            reserved("169.254.0.0/16")
        );
        assert_eq!(
            policy.check(sock("[64:ff9b::a9fe:a9fe]:80")),
            reserved("169.254.0.0/16")
        );
        assert_eq!(
            policy.check(sock("[fd00:ec2::254]:80")),
            reserved("fc00::/7")
        );
        // An ISATAP link-local address is refused for the loopback inside
        // it, and still refused for fe80::/10 once loopback is allowed.
        assert_eq!(
            policy.check_ip(ip("fe80::5efe:127.0.0.1")),
            reserved("127.0.0.0/8")
        );
        assert_eq!(
            configured().check_ip(ip("fe80::5efe:127.0.0.1")),
            reserved("fe80::/10")
        );
        // 6to4 of the 6to4 anycast relay.
        assert_eq!(
            policy.check_ip(ip("2002:c058:6301::1")),
            reserved("192.88.99.0/24")
        );
    }

    #[test]
    fn the_allow_list_admits_loopback_in_every_form() {
        let policy = configured();
        let rows = ["127.0.0.1", "127.8.9.10"].into_iter().flat_map(|a| {
            let policy = policy.clone();
            FORMS.iter().flat_map(move |form| {
                // Teredo's other address is loopback too: a Teredo address is
                // covered only if everything it embeds is allowed.
                let peer = (form.make)(v4(a), v4("127.0.0.2"));
                [
                    (
                        format!("{a} as {} ({peer}) check_ip", form.name),
                        policy.check_ip(peer),
                        Ok(()),
                    ),
                    (
                        format!("{a} as {} ({peer}) check", form.name),
                        policy.check(SocketAddr::new(peer, 40000)),
                        Ok(()),
                    ),
                ]
            })
        });
        assert_rows(rows);
        assert_eq!(policy.check(sock("[::1]:40000")), Ok(()));
        assert_eq!(policy.check_ip(ip("10.2.3.4")), Ok(()));
        assert_eq!(policy.check_ip(ip("::ffff:10.2.3.4")), Ok(()));
        // Strict forms stay refused when what they embed is not all allowed.
        let teredo_half_public = teredo_as_client(v4("127.0.0.1"), PUBLIC_B);
        assert_eq!(policy.check_ip(teredo_half_public), reserved("2001::/32"));
        assert_eq!(
            policy.check_ip(ip("::ffff:1.1.1.1")),
            reserved("::ffff:0:0/96")
        );
        // The allow list does not reach other reserved ranges.
        assert_eq!(
            policy.check_ip(ip("192.168.1.1")),
            reserved("192.168.0.0/16")
        );
        assert_eq!(policy.check_ip(ip("::2")), reserved("0.0.0.0/8"));
    }

    #[test]
    fn the_servers_own_sockets_are_refused_even_when_allowed() {
        let policy = configured();
        // Exact 127.0.0.1:3478, in every form.
        let rows = FORMS.iter().map(|form| {
            let peer = (form.make)(v4("127.0.0.1"), v4("127.0.0.1"));
            let name = format!("127.0.0.1:3478 as {} ({peer})", form.name);
            (
                name,
                policy.check(SocketAddr::new(peer, 3478)),
                Err(PeerDenied::ServerSocket),
            )
        });
        assert_rows(rows);
        // Wildcard port 9090 on every loopback, unspecified and local address,
        // in every form, across families.
        let wildcard_hits = ["127.0.0.1", "127.1.2.3", "0.0.0.0", "1.2.3.4", "5.6.7.8"];
        let rows = wildcard_hits.into_iter().flat_map(|a| {
            let policy = policy.clone();
            FORMS.iter().flat_map(move |form| {
                let peer = (form.make)(v4(a), v4(a));
                [9090, 5349].map(|port| {
                    let name = format!("{a}:{port} as {} ({peer})", form.name);
                    (
                        name,
                        policy.check(SocketAddr::new(peer, port)),
                        Err(PeerDenied::ServerSocket),
                    )
                })
            })
        });
        assert_rows(rows);
        for s in [
            "[::1]:3479",
            "[::1]:9090",
            "[::]:9090",
            "[2606:4700:10::7]:9090",
            "[2606:4700:10::7]:5349",
        ] {
            assert_eq!(policy.check(sock(s)), Err(PeerDenied::ServerSocket), "{s}");
        }
        // Other ports and other loopback addresses are not the server's.
        for s in [
            "127.0.0.2:3478",
            "127.0.0.1:3477",
            "[::1]:3478",
            "[::1]:40000",
        ] {
            assert_eq!(policy.check(sock(s)), Ok(()), "{s}");
        }
        // The server's public IPs on relay ports: another client's allocation.
        for s in ["1.2.3.4:50000", "5.6.7.8:50000", "[2606:4700:10::7]:50000"] {
            assert_eq!(policy.check(sock(s)), Ok(()), "{s}");
        }
        // check_ip knows no ports.
        assert_eq!(policy.check_ip(ip("127.0.0.1")), Ok(()));
        assert_eq!(policy.check_ip(ip("1.2.3.4")), Ok(()));
        // A Teredo address delivers to its client's IPv4 and port.
        let to_listener = SocketAddr::new(teredo(PUBLIC_B, v4("1.2.3.4"), 3478).into(), 40000);
        assert_eq!(policy.check(to_listener), Err(PeerDenied::ServerSocket));
        let elsewhere = SocketAddr::new(teredo(PUBLIC_B, v4("1.2.3.4"), 3479).into(), 40000);
        assert_eq!(policy.check(elsewhere), reserved("2001::/32"));
    }

    #[test]
    fn the_deny_list_beats_the_allow_list_in_every_form() {
        let policy = configured();
        let rows = [
            ("127.0.0.53", "127.0.0.53"),
            ("10.1.2.3", "10.1.0.1"),
            ("8.8.8.8", "8.8.8.9"),
            ("9.9.9.9", "9.9.9.10"),
        ]
        .into_iter()
        .flat_map(|(a, other)| {
            let policy = policy.clone();
            FORMS.iter().flat_map(move |form| {
                let peer = (form.make)(v4(a), v4(other));
                [
                    (
                        format!("{a} as {} ({peer}) check_ip", form.name),
                        policy.check_ip(peer),
                        Err(PeerDenied::OperatorDenied),
                    ),
                    (
                        format!("{a} as {} ({peer}) check", form.name),
                        policy.check(SocketAddr::new(peer, 3478)),
                        Err(PeerDenied::OperatorDenied),
                    ),
                ]
            })
        });
        assert_rows(rows);
        // A denied address inside an otherwise allowed range.
        assert_eq!(
            policy.check_ip(ip("10.1.255.255")),
            Err(PeerDenied::OperatorDenied)
        );
        assert_eq!(policy.check_ip(ip("10.2.0.0")), Ok(()));
    }

    #[test]
    fn embedded_ipv4_finds_every_form() {
        let cases: &[(&str, &[&str])] = &[
            // RFC 4380 §4's example: server 65.54.227.120, client 192.0.2.45.
            (
                "2001:0:4136:e378:8000:63bf:3fff:fdd2",
                &["65.54.227.120", "192.0.2.45"],
            ),
            ("2002:c000:204::1", &["192.0.2.4"]),
            ("64:ff9b::192.0.2.33", &["192.0.2.33"]),
            ("64:ff9b:1::192.0.2.33", &["192.0.2.33"]),
            ("::ffff:192.0.2.1", &["192.0.2.1"]),
            ("::192.0.2.1", &["192.0.2.1"]),
            ("::ffff:0:192.0.2.1", &["192.0.2.1"]),
            ("::2", &["0.0.0.2"]),
            ("fe80::5efe:192.0.2.1", &["192.0.2.1"]),
            ("fe80::200:5efe:192.0.2.1", &["192.0.2.1"]),
            ("2606:4700::100:5efe:192.0.2.1", &["192.0.2.1"]),
            ("2002:c000:204::5efe:a00:1", &["192.0.2.4", "10.0.0.1"]),
            (
                "2001:0:4136:e378:0:5efe:3fff:fdd2",
                &["65.54.227.120", "192.0.2.45", "63.255.253.210"],
            ),
            ("64:ff9b:1::5efe:192.0.2.33", &["192.0.2.33"]),
            ("::", &[]),
            ("::1", &[]),
            ("2606:4700::1111", &[]),
            ("64:ff9b:0:1::1", &[]),
            ("fe80::1:5efe:a00:1", &[]),
        ];
        for (addr, want) in cases {
            let got: Vec<Ipv4Addr> = embedded_ipv4(v6(addr)).collect();
            let want: Vec<Ipv4Addr> = want.iter().map(|a| v4(a)).collect();
            assert_eq!(got, want, "{addr}");
            assert_eq!(embedded_ipv4(v6(addr)).len(), want.len(), "{addr}");
        }
        assert_eq!(
            super::teredo_client(v6("2001:0:4136:e378:8000:63bf:3fff:fdd2")),
            Some((v4("192.0.2.45"), 40000))
        );
        assert_eq!(super::teredo_client(v6("2002::1")), None);
    }

    #[test]
    fn operator_lists_canonicalise_mapped_entries() {
        let policy = PeerPolicy::new(
            vec![net("::ffff:192.168.0.0/112")],
            vec![net("::ffff:192.168.7.0/120")],
            vec![
                sock("[::ffff:192.168.0.1]:3478"),
                sock("[::ffff:0.0.0.0]:9090"),
            ],
            vec![ip("::ffff:192.168.0.2")],
        );
        assert_eq!(policy.check_ip(ip("192.168.1.1")), Ok(()));
        assert_eq!(policy.check_ip(ip("::ffff:192.168.1.1")), Ok(()));
        assert_eq!(
            policy.check_ip(ip("192.168.7.1")),
            Err(PeerDenied::OperatorDenied)
        );
        assert_eq!(
            policy.check(sock("192.168.0.1:3478")),
            Err(PeerDenied::ServerSocket)
        );
        assert_eq!(
            policy.check(sock("192.168.0.2:9090")),
            Err(PeerDenied::ServerSocket)
        );
        assert_eq!(policy.check(sock("192.168.0.3:9090")), Ok(()));
        // An operator can allow a reserved IPv6 range directly.
        let ula = PeerPolicy::new(vec![net("fd00::/8")], vec![], vec![], vec![]);
        assert_eq!(ula.check_ip(ip("fd12::1")), Ok(()));
        assert_eq!(ula.check_ip(ip("fc12::1")), reserved("fc00::/7"));
        // The mapped prefix denotes all of IPv4: allowing it allows all
        // reserved IPv4, in every form.
        let all_v4 = PeerPolicy::new(vec![net("::ffff:0:0/96")], vec![], vec![], vec![]);
        assert_eq!(all_v4.check_ip(ip("10.0.0.1")), Ok(()));
        assert_eq!(all_v4.check_ip(ip("::ffff:8.8.8.8")), Ok(()));
    }

    #[test]
    fn reasons_read_well() {
        let text = PeerDenied::Reserved {
            range: "169.254.0.0/16",
        }
        .to_string();
        assert!(
            text.contains("169.254.0.0/16") && text.contains("metadata"),
            "{text}"
        );
        let text = PeerDenied::Reserved {
            range: "outside 2000::/3",
        }
        .to_string();
        assert!(text.contains("not global unicast"), "{text}");
        assert!(PeerDenied::ServerSocket.to_string().contains("own sockets"));
        assert!(PeerDenied::OperatorDenied.to_string().contains("operator"));
        let debug = format!("{:?}", configured());
        assert!(
            debug.contains("10.1.0.0/16") && debug.contains("9.9.9.0/24"),
            "{debug}"
        );
    }

    /// IPv4 addresses worth hitting more often than chance would.
    fn interesting_v4() -> impl Strategy<Value = Ipv4Addr> {
        prop_oneof![
            any::<u32>().prop_map(Ipv4Addr::from),
            proptest::sample::select(vec![
                "127.0.0.1",
                "127.0.0.53",
                "10.1.2.3",
                "10.2.3.4",
                "8.8.8.8",
                "9.9.9.9",
                "1.2.3.4",
                "5.6.7.8",
                "0.0.0.0",
                "169.254.169.254",
                "192.88.99.1",
                "255.255.255.255",
            ])
            .prop_map(v4),
        ]
    }

    proptest! {
        /// Where the IPv6 prefix is not itself refused, an IPv6 form of `v`
        /// gets exactly the verdict `v` gets, with or without operator lists.
        #[test]
        fn forms_with_open_prefixes_agree_with_plain_ipv4(
            v in interesting_v4(),
            port in prop_oneof![Just(3478u16), Just(5349), Just(9090), Just(40000), any::<u16>()],
        ) {
            for policy in [open(), configured()] {
                let plain_ip = policy.check_ip(IpAddr::V4(v));
                let plain_socket = policy.check(SocketAddr::new(IpAddr::V4(v), port));
                for form in FORMS.iter().filter(|f| !f.prefix_reserved) {
                    let peer = (form.make)(v, PUBLIC_A);
                    prop_assert_eq!(policy.check_ip(peer), plain_ip, "{} as {} ({})", v, form.name, peer);
                    prop_assert_eq!(
                        policy.check(SocketAddr::new(peer, port)),
                        plain_socket,
                        "{}:{} as {} ({})", v, port, form.name, peer
                    );
                }
            }
        }

        /// Forms whose prefix is refused are refused whatever they embed,
        /// absent an allow list.
        #[test]
        fn forms_with_reserved_prefixes_are_always_refused(v in interesting_v4(), other in interesting_v4()) {
            for form in FORMS.iter().filter(|f| f.prefix_reserved) {
                let peer = (form.make)(v, other);
                prop_assert!(open().check_ip(peer).is_err(), "{} as {} ({})", v, form.name, peer);
            }
        }

        /// Allowing `v` allows it in every form.
        #[test]
        fn allowing_an_address_allows_all_its_forms(v in interesting_v4()) {
            // `::0.0.0.0` and `::0.0.0.1` are `::` and `::1`, not forms of v.
            prop_assume!(u32::from(v) > 1);
            let policy = PeerPolicy::new(vec![IpNet::V4(Ipv4Net::new(v, 32).unwrap())], vec![], vec![], vec![]);
            for form in &FORMS {
                let peer = (form.make)(v, v);
                prop_assert_eq!(policy.check_ip(peer), Ok(()), "{} as {} ({})", v, form.name, peer);
            }
        }

        /// Every IPv6 form of `v` is seen to embed `v`.
        #[test]
        fn every_ipv6_form_embeds_its_address(v in interesting_v4(), other in interesting_v4()) {
            prop_assume!(u32::from(v) > 1);
            for form in &FORMS[1..] {
                let IpAddr::V6(peer) = (form.make)(v, other) else { unreachable!() };
                prop_assert!(embedded_ipv4(peer).any(|e| e == v), "{} as {} ({})", v, form.name, peer);
            }
        }
    }
}
