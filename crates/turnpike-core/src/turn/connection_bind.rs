//! ConnectionBind (RFC 6062 §5.4): the client opens a new connection to the
//! server and binds it to a peer connection by its CONNECTION-ID; after the
//! success answer, that connection carries the peer's bytes both ways.
//!
//! The request is authenticated like any other, and only the user who owns
//! the allocation can bind its connections; a wrong, unknown, already bound
//! or still connecting identifier is 400, so the answer tells nobody whether
//! an identifier exists.

use std::net::SocketAddr;

use turnpike_codec::{AttrType, Attribute, Message};

use super::{Request, TurnState};
use crate::connection::State;
use crate::ids::ConnectionId;
use crate::output::Event;

pub(crate) fn handle(req: &Request<'_, '_>, turn: &mut TurnState, out: &mut [u8]) -> Option<usize> {
    // A data connection is a connection of its own, never the control
    // connection of an allocation, and never a datagram transport.
    let five_tuple = req.five_tuple();
    if !five_tuple.transport.is_stream() || turn.allocations.id_by_five_tuple(&five_tuple).is_some()
    {
        return req.error(out, 400);
    }
    let mut id = None;
    for attr in req.message.decoded() {
        match attr {
            Ok(Attribute::ConnectionId(c)) => id = id.or(Some(ConnectionId(c))),
            Ok(_) => {}
            Err(_) => return req.error(out, 400),
        }
    }
    let Some(id) = id else {
        return req.error(out, 400);
    };
    let Some(connection) = turn.connections.get_mut(id) else {
        return req.error(out, 400);
    };
    let owner = turn
        .allocations
        .get(connection.allocation)
        .map(|a| &a.user.name);
    if !matches!(connection.state, State::Unbound { .. }) || owner != Some(&req.user.name) {
        return req.error(out, 400);
    }
    connection.state = State::Bound;
    turn.events.push_back(Event::ConnectionBound {
        id,
        client: five_tuple,
    });
    req.success(out, |_| Ok(()))
}

/// The client address of the control connection whose allocation owns the
/// connection a ConnectionBind names, if it is on this shard.
pub(crate) fn control_client(turn: &TurnState, message: &Message<'_>) -> Option<SocketAddr> {
    let Ok(Attribute::ConnectionId(id)) = message.get(AttrType::CONNECTION_ID)? else {
        return None;
    };
    let connection = turn.connections.get(ConnectionId(id))?;
    Some(
        turn.allocations
            .get(connection.allocation)?
            .five_tuple
            .client,
    )
}
