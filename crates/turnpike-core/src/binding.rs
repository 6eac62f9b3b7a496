//! Binding requests: where a client learns its server-reflexive address.
//!
//! - RFC 8489 §7.3.1: XOR-MAPPED-ADDRESS, SOFTWARE, FINGERPRINT if asked.
//! - RFC 3489 (classic clients, no magic cookie): MAPPED-ADDRESS,
//!   SOURCE-ADDRESS, CHANGED-ADDRESS. RESPONSE-ADDRESS is never honoured: it
//!   would let anyone aim our answers at a third party (RFC 5389 removed it).
//! - RFC 5780 NAT behaviour discovery when the server has an alternate
//!   address: OTHER-ADDRESS and RESPONSE-ORIGIN in every answer, CHANGE-REQUEST
//!   answered from the alternate IP and/or port; RESPONSE-PORT and PADDING only
//!   when the operator enabled them.
//!
//! Requests using a feature this server cannot or may not honour get 420
//! naming the attribute, which is how RFC 5780 §7.2 tells a client that the
//! server lacks an alternate address.

use std::net::SocketAddr;

use turnpike_codec::{AttrType, Attribute, EncodeError, Message, MessageBuilder};

use crate::config::Config;
use crate::output::{Destination, Transmit};
use crate::packet::{FiveTuple, Packet};
use crate::response::{self, ErrorDetails};

/// What a Binding request turned into.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A success response is in the buffer.
    Success(Transmit),
    /// An error response is in the buffer.
    Error(Transmit),
}

/// The request attributes that change how a Binding request is answered.
#[derive(Default)]
struct Options<'a> {
    change_ip: bool,
    change_port: bool,
    response_port: Option<u16>,
    padding: Option<&'a [u8]>,
}

/// Answers a Binding request. `out` receives the response.
pub(crate) fn handle_request(
    config: &Config,
    request: &Message<'_>,
    packet: &Packet<'_>,
    out: &mut [u8],
) -> Result<Outcome, EncodeError> {
    let method = request.message_type().method;
    let tid = request.transaction_id();
    let fingerprint = request.has_fingerprint();
    let reply_error =
        |out: &mut [u8], code: u16, unknown: &[u16]| -> Result<Outcome, EncodeError> {
            let details = ErrorDetails {
                unknown_attributes: unknown,
                fingerprint,
            };
            let len = response::write_error(out, method, tid, code, details)?;
            Ok(Outcome::Error(Transmit::reply(packet, len)))
        };

    let unknown = response::UnknownAttributes::of(request);
    if !unknown.is_empty() {
        return reply_error(out, 420, unknown.as_slice());
    }

    let mut options = Options::default();
    for attr in request.decoded() {
        match attr {
            Ok(Attribute::ChangeRequest(c)) => {
                options.change_ip |= c.change_ip;
                options.change_port |= c.change_port;
            }
            Ok(Attribute::ResponsePort(port)) => options.response_port = Some(port),
            Ok(Attribute::Padding(padding)) => options.padding = Some(padding),
            Ok(_) => {}
            Err(_) => return reply_error(out, 400, &[]),
        }
    }

    let changes_path = options.change_ip || options.change_port || options.response_port.is_some();
    if changes_path && packet.transport.is_connection() {
        // An answer on a connection can only go back on that connection.
        return reply_error(out, 400, &[]);
    }
    let role = config.role_of(packet.local);
    let mut refused = [0u16; 3];
    let mut refused_len = 0;
    let mut refuse = |t: AttrType| {
        refused[refused_len] = t.0;
        refused_len += 1;
    };
    if (options.change_ip || options.change_port) && role.is_none() {
        refuse(AttrType::CHANGE_REQUEST);
    }
    if options.response_port.is_some() && !config.allow_response_port {
        refuse(AttrType::RESPONSE_PORT);
    }
    if options.padding.is_some() && !config.allow_padding {
        refuse(AttrType::PADDING);
    }
    if refused_len > 0 {
        return reply_error(out, 420, &refused[..refused_len]);
    }

    let source = role.map_or(packet.local, |r| {
        r.changed(options.change_ip, options.change_port)
    });
    let destination = match options.response_port {
        Some(port) => SocketAddr::new(packet.remote.ip(), port),
        None => packet.remote,
    };

    let mut msg = MessageBuilder::new(out, request.message_type().success(), tid)?;
    if request.is_rfc3489() {
        msg.add(&Attribute::MappedAddress(packet.remote))?;
        msg.add(&Attribute::SourceAddress(source))?;
        if let Some(role) = role {
            msg.add(&Attribute::ChangedAddress(role.other()))?;
        }
    } else {
        msg.add(&Attribute::XorMappedAddress(packet.remote))?;
        if let Some(role) = role {
            msg.add(&Attribute::ResponseOrigin(source))?;
            msg.add(&Attribute::OtherAddress(role.other()))?;
        }
    }
    if let Some(software) = &config.software {
        msg.add(&Attribute::Software(software))?;
    }
    if let Some(padding) = options.padding.filter(|_| !packet.transport.is_stream()) {
        // Never larger than what the client sent: PADDING must not amplify.
        msg.add_with(AttrType::PADDING, padding.len(), |value| value.fill(0))?;
    }
    if fingerprint {
        msg.add_fingerprint()?;
    }
    let len = msg.finish();
    let five_tuple = FiveTuple {
        transport: packet.transport,
        client: destination,
        server: source,
    };
    let to = if source == packet.local {
        Destination::Client(five_tuple)
    } else {
        Destination::Alternate(five_tuple)
    };
    Ok(Outcome::Success(Transmit { to, len }))
}
