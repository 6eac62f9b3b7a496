//! The host's own IP addresses, which the peer policy must know: a socket
//! bound to a wildcard address (the default listeners, `0.0.0.0:3478` and
//! `[::]:3478`) is reachable on every one of them, and so is any other
//! service of the host bound that way. The configuration names none of
//! them when the listeners are wildcards and `turn.relay_ips` is empty, so
//! they are read from the kernel (`getifaddrs`) at start and re-read every
//! [`REFRESH`] while the server runs ([`watch`]), for addresses added by
//! DHCP, SLAAC or an operator later on.

// `getifaddrs` and the `sockaddr`s it returns.
#![allow(unsafe_code)]

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ptr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// How often the addresses are read again while the server runs.
pub const REFRESH: Duration = Duration::from_secs(5);

/// The IPv4 and IPv6 addresses of every interface of the host (in this
/// network namespace), sorted, without duplicates.
///
/// # Errors
///
/// The `getifaddrs` error.
pub fn addresses() -> io::Result<Vec<IpAddr>> {
    let mut list: *mut libc::ifaddrs = ptr::null_mut();
    // SAFETY: `getifaddrs` writes a pointer to a list it allocated into
    // `list` (a valid `*mut` to a local), or fails and leaves it alone.
    if unsafe { libc::getifaddrs(&raw mut list) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut found = BTreeSet::new();
    let mut entry = list;
    while !entry.is_null() {
        // SAFETY: `entry` is `list` or an `ifa_next` of the list
        // `getifaddrs` returned, which stays valid until `freeifaddrs`
        // below; entries are only read.
        let ifa = unsafe { &*entry };
        // SAFETY: `ifa_addr` is null or points at a `sockaddr` of the
        // list; its family says which larger struct it is, and only
        // `AF_INET`/`AF_INET6` ones (of their full size) are read.
        if let Some(ip) = unsafe { sockaddr_ip(ifa.ifa_addr) } {
            found.insert(ip);
        }
        entry = ifa.ifa_next;
    }
    // SAFETY: `list` came from a successful `getifaddrs` and is freed once;
    // no reference into it outlives this point.
    unsafe { libc::freeifaddrs(list) };
    Ok(found.into_iter().collect())
}

/// The IP of a `sockaddr` from `getifaddrs`, if it is IPv4 or IPv6.
///
/// # Safety
///
/// `addr` is null or points at a valid `sockaddr` whose `sa_family` tells
/// its real type (`sockaddr_in` for `AF_INET`, `sockaddr_in6` for
/// `AF_INET6`).
unsafe fn sockaddr_ip(addr: *const libc::sockaddr) -> Option<IpAddr> {
    if addr.is_null() {
        return None;
    }
    // SAFETY: non-null and valid by the caller's contract; `sa_family` is
    // the first field of every socket address.
    let family = i32::from(unsafe { (*addr).sa_family });
    match family {
        libc::AF_INET => {
            // SAFETY: the family says it is a `sockaddr_in`.
            let v4 = unsafe { &*addr.cast::<libc::sockaddr_in>() };
            Some(IpAddr::V4(Ipv4Addr::from(v4.sin_addr.s_addr.to_ne_bytes())))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it is a `sockaddr_in6`.
            let v6 = unsafe { &*addr.cast::<libc::sockaddr_in6>() };
            Some(IpAddr::V6(Ipv6Addr::from(v6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

/// Reads the addresses every [`REFRESH`] and publishes them when they
/// change. A failed read keeps the last known addresses (logged once per
/// failing spell).
pub async fn watch(publish: watch::Sender<Arc<[IpAddr]>>) {
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        match addresses() {
            Ok(now) => {
                failing = false;
                if publish.borrow()[..] != now[..] {
                    tracing::info!(addresses = ?now, "the host's addresses changed");
                    if publish.send(now.into()).is_err() {
                        return;
                    }
                }
            }
            Err(err) if !failing => {
                failing = true;
                tracing::warn!(%err, "cannot read the host's addresses; keeping the last known");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_among_the_hosts_addresses() {
        let found = addresses().unwrap();
        assert!(
            found.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "{found:?}"
        );
        let mut sorted = found.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(found, sorted);
    }
}
