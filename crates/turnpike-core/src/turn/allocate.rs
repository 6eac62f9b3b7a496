//! Allocate (RFC 8656 §7.2, RFC 6156 §4.2, RFC 8656 §7 for dual stack).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rand::{Rng, RngCore};
use turnpike_codec::attr::protocol;
use turnpike_codec::{AddressFamily, AttrType, Attribute, ErrorCode};

use super::{Request, TurnState, granted_lifetime, lifetime_secs};
use crate::allocation::{Allocation, QuotaLimits};
use crate::bandwidth::AllocationBandwidth;
use crate::config::TurnConfig;
use crate::drain::{DRAINING_REASON, Redirect};
use crate::ids::RelayedAddress;
use crate::output::{AllocationRecord, Event};
use crate::relay::{RelayOptions, RelayProtocol};
use crate::response::reason_phrase;
use crate::stats::{AuthFailure, Traffic};

/// ADDITIONAL-ADDRESS-FAMILY under its draft-ietf-tram-turnbis code point.
/// RFC 8656 assigned 0x8000, but coturn's clients (turnutils_uclient 4.6,
/// `-Z`) still send 0x8032, so dual-stack requests from them would silently
/// get one family.
const ADDITIONAL_ADDRESS_FAMILY_DRAFT: AttrType = AttrType(0x8032);

/// How long a port reserved by EVEN-PORT's R bit waits for its allocation.
const RESERVATION_TIME: Duration = Duration::from_secs(30);
/// Ports tried before answering 508.
const BIND_ATTEMPTS: usize = 16;

/// What the request asked for.
#[derive(Default)]
struct Asked {
    transport: Option<u8>,
    dont_fragment: bool,
    even_port: Option<bool>,
    token: Option<[u8; 8]>,
    family: Option<AddressFamily>,
    additional: Option<AddressFamily>,
    lifetime: Option<u32>,
}

pub(crate) fn handle(req: &Request<'_, '_>, turn: &mut TurnState, out: &mut [u8]) -> Option<usize> {
    let five_tuple = req.five_tuple();
    if let Some(id) = turn.allocations.id_by_five_tuple(&five_tuple) {
        let existing = turn.allocations.get(id)?;
        if existing.created_by == req.message.transaction_id()
            && existing.user.name == req.user.name
        {
            // A retransmitted Allocate: answer it again (RFC 8656 §7.2).
            let remaining = existing.expires.saturating_duration_since(req.now);
            let relays = existing.relays;
            return success(req, out, relays, remaining, None, None);
        }
        return req.error(out, 437);
    }

    let mut asked = Asked::default();
    for attr in req.message.decoded() {
        match attr {
            Ok(Attribute::RequestedTransport(p)) => asked.transport = asked.transport.or(Some(p)),
            Ok(Attribute::DontFragment) => asked.dont_fragment = true,
            Ok(Attribute::EvenPort(r)) => asked.even_port = asked.even_port.or(Some(r)),
            Ok(Attribute::ReservationToken(t)) => asked.token = asked.token.or(Some(*t)),
            Ok(Attribute::RequestedAddressFamily(f)) => asked.family = asked.family.or(Some(f)),
            Ok(Attribute::AdditionalAddressFamily(f)) => {
                asked.additional = asked.additional.or(Some(f))
            }
            Ok(Attribute::Unknown {
                attr_type: ADDITIONAL_ADDRESS_FAMILY_DRAFT,
                value,
            }) => {
                let family = match value {
                    [0x01, 0, 0, 0] => AddressFamily::V4,
                    [0x02, 0, 0, 0] => AddressFamily::V6,
                    _ => return req.error(out, 400),
                };
                asked.additional = asked.additional.or(Some(family));
            }
            Ok(Attribute::Lifetime(s)) => asked.lifetime = asked.lifetime.or(Some(s)),
            Ok(_) => {}
            Err(_) => return req.error(out, 400),
        }
    }
    let Some(transport) = asked.transport else {
        return req.error(out, 400);
    };
    let relay_protocol = match transport {
        protocol::UDP => RelayProtocol::Udp,
        // RFC 6062 §5.1: TCP relays are for clients on a TCP or TLS
        // connection ("MUST reject … with a 400" otherwise, not 442, which
        // is for protocols the server does not relay at all).
        protocol::TCP if req.packet.transport.is_stream() => RelayProtocol::Tcp,
        protocol::TCP => return req.error(out, 400),
        _ => return req.error(out, 442),
    };
    // RFC 6062 §5.1: no fragmentation control or port pairs for TCP.
    if relay_protocol == RelayProtocol::Tcp
        && (asked.dont_fragment || asked.even_port.is_some() || asked.token.is_some())
    {
        return req.error(out, 400);
    }
    // RFC 8656 §7.2: a token excludes EVEN-PORT and the family attributes,
    // the two family attributes exclude each other, and only IPv6 may be
    // the additional family.
    if (asked.token.is_some()
        && (asked.even_port.is_some() || asked.family.is_some() || asked.additional.is_some()))
        || (asked.family.is_some() && asked.additional.is_some())
        || asked.additional == Some(AddressFamily::V4)
    {
        return req.error(out, 400);
    }

    if turn.draining.is_some() {
        return refuse_while_draining(req, turn, out);
    }
    let config = req.config;
    if turn.is_stopped(&req.user.name, config.rest_separator, req.now) {
        turn.stats.auth_failures.record(AuthFailure::Stopped);
        return req.error(out, 403);
    }
    let quota_name = crate::allocation::quota_name(
        &req.user.name,
        req.user.expires.is_some(),
        config.rest_separator,
    );
    let limits = QuotaLimits {
        per_user: config.user_quota,
        total: config.total_quota,
        bps_capacity: config.bps_capacity,
    };
    let quota = match config.quotas.acquire(quota_name, limits, req.now) {
        Ok(quota) => quota,
        Err(code) => {
            // At capacity (508: allocations or relayed bandwidth, not the
            // user's own quota): another relay of the fleet with room, if
            // one is known.
            if code == 508
                && let Some(redirect) = turn.alternates.pick(&mut turn.next_alternate, req.packet)
            {
                return redirect_to(req, out, &redirect);
            }
            return req.error(out, code);
        }
    };
    let options = RelayOptions {
        protocol: relay_protocol,
        dont_fragment: asked.dont_fragment,
        client: req.five_tuple(),
    };
    let primary = asked.family.unwrap_or(AddressFamily::V4);
    let mut relays = [None, None];
    let mut reservation = None;
    let bound = match (asked.token, asked.even_port) {
        (Some(token), _) => turn
            .relays
            .take_reserved(token, req.now, options)
            .map(|relay| relay.0)
            .ok_or(508),
        (None, Some(true)) => {
            bind_reserved_pair(req, turn, primary, options).map(|(addr, token)| {
                reservation = Some(token);
                addr
            })
        }
        (None, even) => bind_relay(req, turn, primary, even.is_some(), options),
    };
    let first = match bound {
        Ok(addr) => addr,
        Err(code) => {
            config.quotas.release(&quota.name);
            return req.error(out, code);
        }
    };
    relays[crate::allocation::family_index(first.ip())] = Some(first);
    let mut address_error = None;
    if asked.additional == Some(AddressFamily::V6) {
        match bind_relay(req, turn, AddressFamily::V6, false, options) {
            Ok(addr) => relays[1] = Some(addr),
            Err(code) => address_error = Some(code),
        }
    }

    let lifetime = granted_lifetime(req, asked.lifetime);
    turn.wake_at(req.now + lifetime);
    let serial = turn.next_serial();
    turn.allocations.insert(Allocation {
        five_tuple,
        user: std::sync::Arc::clone(&req.user),
        quota: quota.name,
        relays,
        protocol: relay_protocol,
        dont_fragment: asked.dont_fragment,
        connections: Vec::new(),
        expires: req.now + lifetime,
        permissions: Vec::new(),
        channels: Vec::new(),
        created_by: req.message.transaction_id(),
        serial,
        created: req.now,
        traffic: Traffic::default(),
        bandwidth: AllocationBandwidth::new(quota.bandwidth),
    });
    turn.stats.allocations_created += 1;
    turn.events
        .push_back(Event::AllocationCreated(Box::new(AllocationRecord {
            serial,
            user: std::sync::Arc::clone(&req.user.name),
            client: five_tuple,
            relays,
            protocol: relay_protocol,
        })));
    success(req, out, relays, lifetime, reservation, address_error)
}

/// A new Allocate while the shard drains: 300 with an alternate of the
/// client's family, else 508 (see [`crate::drain`] for why these codes).
/// Signed, as this comes after authentication: RFC 8489 §14.8 requires a
/// 300 to be, and forbids it for unauthenticated requests.
fn refuse_while_draining(
    req: &Request<'_, '_>,
    turn: &mut TurnState,
    out: &mut [u8],
) -> Option<usize> {
    let draining = turn.draining.as_ref()?;
    match draining.pick(&mut turn.next_alternate, req.packet) {
        Some(redirect) => redirect_to(req, out, &redirect),
        None => req.error_with(out, 508, DRAINING_REASON, |_| Ok(())),
    }
}

/// 300 (Try Alternate) with ALTERNATE-SERVER, and ALTERNATE-DOMAIN for a
/// TLS client (RFC 8489 §14.15, §14.16), signed.
fn redirect_to(req: &Request<'_, '_>, out: &mut [u8], redirect: &Redirect) -> Option<usize> {
    req.error_with(out, 300, reason_phrase(300), |msg| {
        msg.add(&Attribute::AlternateServer(redirect.address))?;
        if let Some(domain) = &redirect.domain {
            msg.add(&Attribute::AlternateDomain(domain))?;
        }
        Ok(())
    })
}

fn success(
    req: &Request<'_, '_>,
    out: &mut [u8],
    relays: [Option<SocketAddr>; 2],
    lifetime: Duration,
    reservation: Option<[u8; 8]>,
    address_error: Option<u16>,
) -> Option<usize> {
    let config = req.config;
    req.success(out, |msg| {
        for relay in relays.into_iter().flatten() {
            msg.add(&Attribute::XorRelayedAddress(config.advertise(relay)))?;
        }
        if let Some(code) = address_error {
            msg.add(&Attribute::AddressErrorCode {
                family: AddressFamily::V6,
                error: ErrorCode {
                    code,
                    reason: reason_phrase(code),
                },
            })?;
        }
        msg.add(&Attribute::Lifetime(lifetime_secs(lifetime)))?;
        if let Some(token) = &reservation {
            msg.add(&Attribute::ReservationToken(token))?;
        }
        msg.add(&Attribute::XorMappedAddress(req.packet.remote))
    })
}

/// EVEN-PORT with the R bit: an even port for this allocation and the odd
/// one above it reserved under a fresh token for the client's next (RTCP)
/// allocation. Pairs are this shard's own, but the odd port may still be
/// taken by another program: then try another pair.
fn bind_reserved_pair(
    req: &Request<'_, '_>,
    turn: &mut TurnState,
    family: AddressFamily,
    options: RelayOptions,
) -> Result<(SocketAddr, [u8; 8]), u16> {
    for _ in 0..BIND_ATTEMPTS {
        let even = bind_relay(req, turn, family, true, options)?;
        let odd = SocketAddr::new(even.ip(), even.port() + 1);
        let mut token = [0u8; 8];
        turn.secure_rng.fill_bytes(&mut token);
        let until = req.now + RESERVATION_TIME;
        if turn
            .relays
            .reserve(RelayedAddress(odd), token, until)
            .is_ok()
        {
            return Ok((even, token));
        }
        turn.events.push_back(Event::ReleaseRelay {
            relay: RelayedAddress(even),
            protocol: RelayProtocol::Udp,
        });
    }
    Err(508)
}

/// The relay IPs of a family: configured ones, or the IP the request came in on.
fn relay_ips(config: &TurnConfig, family: AddressFamily, arrived_on: IpAddr) -> Vec<IpAddr> {
    let configured: Vec<IpAddr> = config
        .relay_ips
        .iter()
        .copied()
        .filter(|ip| AddressFamily::of(*ip) == family)
        .collect();
    if !configured.is_empty() || !config.relay_ips.is_empty() {
        return configured;
    }
    if AddressFamily::of(arrived_on) == family && !arrived_on.is_unspecified() {
        vec![arrived_on]
    } else {
        Vec::new()
    }
}

/// Binds a relayed address of `family`: 440 if the server has no relay IP
/// of that family, 508 if no port could be bound.
fn bind_relay(
    req: &Request<'_, '_>,
    turn: &mut TurnState,
    family: AddressFamily,
    even: bool,
    options: RelayOptions,
) -> Result<SocketAddr, u16> {
    let ips = relay_ips(req.config, family, req.packet.local.ip());
    if ips.is_empty() {
        return Err(440);
    }
    for _ in 0..BIND_ATTEMPTS {
        let ip = ips[turn.rng.random_range(0..ips.len())];
        let Some(port) = turn.ports.pick(&mut turn.rng, even) else {
            return Err(508);
        };
        let addr = SocketAddr::new(ip, port);
        if turn.allocations.is_relay(options.protocol, addr) {
            continue;
        }
        match turn.relays.bind(RelayedAddress(addr), options) {
            Ok(()) => return Ok(addr),
            // Taken by another program or a reservation: try another port.
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(_) => return Err(508),
        }
    }
    Err(508)
}
