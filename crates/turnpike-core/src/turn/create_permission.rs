//! CreatePermission (RFC 8656 §9.2). Every XOR-PEER-ADDRESS is checked
//! against the peer policy, and the allocation's table for room, before any
//! permission is installed, so a request naming one forbidden peer, or one
//! peer too many, installs nothing.

use turnpike_codec::Attribute;

use super::{Request, TurnState, same_family};

pub(crate) fn handle(req: &Request<'_, '_>, turn: &mut TurnState, out: &mut [u8]) -> Option<usize> {
    let id = match req.own_allocation(&turn.allocations) {
        Ok(id) => id,
        Err(code) => return req.error(out, code),
    };
    let relays = turn.allocations.get(id)?.relays;
    let mut peers = Vec::new();
    for attr in req.message.decoded() {
        match attr {
            Ok(Attribute::XorPeerAddress(peer)) => {
                peers.push(peer.ip());
                if !same_family(&relays, peer.ip()) {
                    return req.error(out, 443);
                }
                if turn.peer_policy.check_ip(peer.ip()).is_err() {
                    turn.stats.peers_refused += 1;
                    return req.error(out, 403);
                }
            }
            Ok(_) => {}
            Err(_) => return req.error(out, 400),
        }
    }
    if peers.is_empty() {
        return req.error(out, 400);
    }
    let expires = req.now + req.config.permission_lifetime;
    let allocation = turn.allocations.get_mut(id)?;
    if !allocation.permit_all(&peers, expires, req.now, req.config.max_permissions) {
        return req.error(out, 508);
    }
    turn.route_channels(req.config, id, req.now, None);
    req.success(out, |_| Ok(()))
}
