//! Refresh (RFC 8656 §8.2): extends an allocation, or deletes it with LIFETIME 0.

use turnpike_codec::{AddressFamily, Attribute};

use super::{Request, TurnState, granted_lifetime, lifetime_secs};
use crate::stats::EndReason;

pub(crate) fn handle(req: &Request<'_, '_>, turn: &mut TurnState, out: &mut [u8]) -> Option<usize> {
    let id = match req.own_allocation(&turn.allocations) {
        Ok(id) => id,
        Err(code) => return req.error(out, code),
    };
    let mut lifetime = None;
    let mut family = None;
    for attr in req.message.decoded() {
        match attr {
            Ok(Attribute::Lifetime(s)) => lifetime = lifetime.or(Some(s)),
            Ok(Attribute::RequestedAddressFamily(f)) => family = family.or(Some(f)),
            Ok(_) => {}
            Err(_) => return req.error(out, 400),
        }
    }
    if let Some(family) = family {
        let index = match family {
            AddressFamily::V4 => 0,
            AddressFamily::V6 => 1,
        };
        if turn.allocations.get(id)?.relays[index].is_none() {
            return req.error(out, 443);
        }
    }
    if lifetime == Some(0) {
        turn.delete(req.config, id, req.now, EndReason::Refresh);
        return req.success(out, |msg| msg.add(&Attribute::Lifetime(0)));
    }
    let granted = granted_lifetime(req, lifetime);
    turn.allocations.get_mut(id)?.expires = req.now + granted;
    turn.wake_at(req.now + granted);
    turn.route_channels(req.config, id, req.now, None);
    req.success(out, |msg| {
        msg.add(&Attribute::Lifetime(lifetime_secs(granted)))
    })
}
