//! [`Server`]: one shard of the STUN/TURN server.
//!
//! Each worker thread owns one `Server`. Packets enter through
//! [`Server::handle_packet`], which demultiplexes by first byte (RFC 7983),
//! parses, and dispatches on the method; answers are written into the
//! caller's buffer and described by a [`Transmit`]. There is no shared state
//! between shards and no allocation per packet.

use std::sync::Arc;
use std::time::Instant;

use turnpike_codec::framing::{self, PacketKind};
use turnpike_codec::{Class, DecodeError, Header, Message, Method, TransactionId};

use crate::binding::{self, Outcome};
use crate::config::Config;
use crate::packet::{Packet, Transmit};
use crate::response::{self, ErrorDetails};

/// Per-shard counters. Plain integers: each shard owns its own, and the
/// metrics endpoint sums them, so the packet path never touches shared memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Binding requests answered with a success response.
    pub binding_success: u64,
    /// Requests answered with an error response.
    pub error_responses: u64,
    /// Packets dropped without an answer (garbage, wrong class, bad fingerprint).
    pub dropped: u64,
}

/// One shard of the server.
#[derive(Debug)]
pub struct Server {
    config: Arc<Config>,
    stats: Stats,
}

impl Server {
    /// A shard with the given (shared, read-only) configuration.
    pub fn new(config: Arc<Config>) -> Self {
        Server {
            config,
            stats: Stats::default(),
        }
    }

    /// This shard's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Handles one datagram, or one message framed from a stream. If an
    /// answer is due, it is written to the start of `out` and described by
    /// the returned [`Transmit`]. `out` should hold at least 1500 bytes.
    pub fn handle_packet(
        &mut self,
        _now: Instant,
        packet: Packet<'_>,
        out: &mut [u8],
    ) -> Option<Transmit> {
        match framing::classify(packet.data) {
            PacketKind::Stun => self.handle_stun(&packet, out),
            // ChannelData and DTLS are handled once TURN and DTLS exist; until
            // then they are foreign traffic.
            PacketKind::ChannelData | PacketKind::Dtls | PacketKind::Other => self.drop_packet(),
        }
    }

    fn handle_stun(&mut self, packet: &Packet<'_>, out: &mut [u8]) -> Option<Transmit> {
        let message = match Message::parse(packet.data) {
            Ok(message) => message,
            Err(error) => return self.handle_malformed(packet, error, out),
        };
        // RFC 8489 §7.3: a FINGERPRINT that does not match means the packet is
        // not STUN after all.
        if message.fingerprint_matches() == Some(false) {
            return self.drop_packet();
        }
        if message.message_type().class != Class::Request {
            // Binding indications are keepalives; responses are not ours.
            return self.drop_packet();
        }
        match message.message_type().method {
            Method::BINDING => match binding::handle_request(&self.config, &message, packet, out) {
                Ok(Outcome::Success(transmit)) => {
                    self.stats.binding_success += 1;
                    Some(transmit)
                }
                Ok(Outcome::Error(transmit)) => {
                    self.stats.error_responses += 1;
                    Some(transmit)
                }
                Err(_) => self.drop_packet(),
            },
            // A classic RFC 3489 header is too weak a signature to answer
            // anything but Binding: 20 zero bytes would otherwise get a reply.
            _ if message.is_rfc3489() => self.drop_packet(),
            method => {
                let details = ErrorDetails {
                    unknown_attributes: &[],
                    fingerprint: message.has_fingerprint(),
                };
                self.reply_error(packet, method, message.transaction_id(), 400, details, out)
            }
        }
    }

    /// A message whose header is valid but whose body is not: a request with
    /// the magic cookie and a consistent length gets 400 (RFC 8489 §6.3.1);
    /// anything less certain to be STUN is dropped silently.
    fn handle_malformed(
        &mut self,
        packet: &Packet<'_>,
        error: DecodeError,
        out: &mut [u8],
    ) -> Option<Transmit> {
        let header = Header::peek(packet.data)?;
        let body_fits =
            usize::from(header.length) + turnpike_codec::HEADER_LEN == packet.data.len();
        let answerable = matches!(
            error,
            DecodeError::AttributeOverrun
                | DecodeError::TooManyAttributes
                | DecodeError::FingerprintNotLast
        ) && body_fits
            && header.message_type.class == Class::Request
            && !header.transaction_id.is_rfc3489();
        if !answerable {
            return self.drop_packet();
        }
        self.reply_error(
            packet,
            header.message_type.method,
            header.transaction_id,
            400,
            ErrorDetails::default(),
            out,
        )
    }

    fn reply_error(
        &mut self,
        packet: &Packet<'_>,
        method: Method,
        transaction_id: TransactionId,
        code: u16,
        details: ErrorDetails<'_>,
        out: &mut [u8],
    ) -> Option<Transmit> {
        let len = response::write_error(out, method, transaction_id, code, details).ok()?;
        self.stats.error_responses += 1;
        Some(Transmit::reply(packet, len))
    }

    fn drop_packet(&mut self) -> Option<Transmit> {
        self.stats.dropped += 1;
        None
    }
}
