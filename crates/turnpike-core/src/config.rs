//! What the core needs to know about its deployment. The binary turns the
//! operator's configuration file into this.

use std::net::{IpAddr, SocketAddr};

/// Core configuration, shared read-only by every worker's [`Server`](crate::Server).
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// SOFTWARE attribute for success responses; `None` sends none.
    pub software: Option<String>,
    /// Address sets for RFC 3489 CHANGE-REQUEST and RFC 5780 behaviour
    /// discovery. Empty: the server has no alternate address, and requests
    /// needing one are refused with 420.
    pub nat_discovery: Vec<NatDiscovery>,
    /// Honour RFC 5780 RESPONSE-PORT. Off by default: it lets an unauthenticated
    /// client point answers at another port of its address.
    pub allow_response_port: bool,
    /// Honour RFC 5780 PADDING. Even when on, a response is never padded
    /// beyond the padding its request carried, so it cannot amplify.
    pub allow_padding: bool,
}

/// Two IP addresses and two ports of this server: answering from the other
/// IP, the other port or both is how NAT behaviour is probed (RFC 5780 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatDiscovery {
    /// Primary and alternate IP (same family).
    pub ips: [IpAddr; 2],
    /// Primary and alternate port.
    pub ports: [u16; 2],
}

/// Where a local address sits in a [`NatDiscovery`] set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AddressRole<'a> {
    set: &'a NatDiscovery,
    ip: usize,
    port: usize,
}

impl NatDiscovery {
    /// The role of `local` in this set, if it is one of its four addresses.
    pub(crate) fn role_of(&self, local: SocketAddr) -> Option<AddressRole<'_>> {
        let ip = self.ips.iter().position(|ip| *ip == local.ip())?;
        let port = self.ports.iter().position(|p| *p == local.port())?;
        Some(AddressRole {
            set: self,
            ip,
            port,
        })
    }
}

impl AddressRole<'_> {
    /// The address differing in both IP and port: OTHER-ADDRESS (RFC 5780)
    /// and CHANGED-ADDRESS (RFC 3489).
    pub(crate) fn other(&self) -> SocketAddr {
        SocketAddr::new(self.set.ips[1 - self.ip], self.set.ports[1 - self.port])
    }

    /// The address to answer from for a CHANGE-REQUEST with these flags.
    pub(crate) fn changed(&self, change_ip: bool, change_port: bool) -> SocketAddr {
        let ip = if change_ip { 1 - self.ip } else { self.ip };
        let port = if change_port {
            1 - self.port
        } else {
            self.port
        };
        SocketAddr::new(self.set.ips[ip], self.set.ports[port])
    }
}

impl Config {
    /// The NAT discovery role of a local address, if any.
    pub(crate) fn role_of(&self, local: SocketAddr) -> Option<AddressRole<'_>> {
        self.nat_discovery.iter().find_map(|set| set.role_of(local))
    }
}
