//! ChannelBind (RFC 8656 §12.2): binds a channel number to a peer and
//! installs or refreshes the peer's permission.

use turnpike_codec::Attribute;
use turnpike_codec::channel_data::is_channel_number;

use super::{Request, TurnState, same_family};
use crate::allocation::BindError;
use crate::output::Event;
use crate::relay::RelayProtocol;

pub(crate) fn handle(req: &Request<'_, '_>, turn: &mut TurnState, out: &mut [u8]) -> Option<usize> {
    let id = match req.own_allocation(&turn.allocations) {
        Ok(id) => id,
        Err(code) => return req.error(out, code),
    };
    let mut number = None;
    let mut peer = None;
    for attr in req.message.decoded() {
        match attr {
            Ok(Attribute::ChannelNumber(n)) => number = number.or(Some(n)),
            Ok(Attribute::XorPeerAddress(p)) => peer = peer.or(Some(p)),
            Ok(_) => {}
            Err(_) => return req.error(out, 400),
        }
    }
    let (Some(number), Some(peer)) = (number, peer) else {
        return req.error(out, 400);
    };
    if !is_channel_number(number) {
        return req.error(out, 400);
    }
    let config = req.config;
    let allocation = turn.allocations.get_mut(id)?;
    // Channels carry datagrams; a TCP allocation has none (RFC 6062 §5).
    if allocation.protocol != RelayProtocol::Udp {
        return req.error(out, 400);
    }
    if !same_family(&allocation.relays, peer.ip()) {
        return req.error(out, 443);
    }
    if turn.peer_policy.check(peer).is_err() {
        turn.stats.peers_refused += 1;
        return req.error(out, 403);
    }
    let now = req.now;
    // The binding installs the peer's permission: without room for it,
    // 508 before anything is bound, as an error answer changes nothing.
    if !allocation.can_permit(peer.ip(), now, config.max_permissions) {
        return req.error(out, 508);
    }
    let mut cooled = Vec::new();
    let bound = allocation.bind_channel(
        number,
        peer,
        (now + config.channel_lifetime, now),
        config.max_channels,
        &mut cooled,
    );
    // Bindings that ended their cool-down here rather than in the sweep
    // leave the fast path too; a rebinding of the number would otherwise
    // overwrite its client-side route but strand the peer-side one.
    if config.channel_routes {
        for channel in &cooled {
            if let Some(route) = allocation.route(channel) {
                turn.events.push_back(Event::UnrouteChannel { route });
            }
        }
    }
    match bound {
        Ok(()) => {}
        Err(BindError::Conflict) => return req.error(out, 400),
        Err(BindError::Full) => return req.error(out, 508),
    }
    // Room was checked above; this refreshes or installs.
    if !allocation.permit(
        peer.ip(),
        now + config.permission_lifetime,
        now,
        config.max_permissions,
    ) {
        return req.error(out, 508);
    }
    turn.route_channels(config, id, now, Some(peer));
    req.success(out, |_| Ok(()))
}
