//! The worker's [`RelayBinder`]: what the core of one worker calls to bind
//! relayed addresses (UDP sockets with their relay task, TCP listeners),
//! to reserve one for EVEN-PORT, and to take over a reservation.

use std::io;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Instant;

use turnpike_core::{RelayBinder, RelayOptions, RelayProtocol, RelayedAddress};

use super::context::WorkerCtx;
use super::udp_relay::socket::{RelaySocket, Reservations};
use crate::net::udp::{BatchUdpSocket, UdpOptions};

/// The [`RelayBinder`] the core of one worker calls.
pub(super) struct ShellRelayBinder {
    ctx: Weak<WorkerCtx>,
    reservations: Arc<Reservations>,
}

impl ShellRelayBinder {
    pub(super) fn new(ctx: Weak<WorkerCtx>, reservations: Arc<Reservations>) -> Self {
        ShellRelayBinder { ctx, reservations }
    }

    fn ctx(&self) -> io::Result<Rc<WorkerCtx>> {
        self.ctx
            .upgrade()
            .ok_or_else(|| io::Error::other("worker is shutting down"))
    }

    /// Files a UDP relay socket and starts its task, which carries peer
    /// data to the client of `options`.
    fn start(
        ctx: &Rc<WorkerCtx>,
        socket: BatchUdpSocket,
        options: &RelayOptions,
    ) -> io::Result<RelayedAddress> {
        let client = ctx
            .client_path(&options.client)
            .ok_or_else(no_client_path)?;
        let addr = socket.local_addr();
        let socket = Rc::new(socket);
        let task = super::udp_relay::start(ctx, Rc::clone(&socket), client);
        ctx.relays
            .borrow_mut()
            .insert(addr, RelaySocket::new(socket, options.dont_fragment, task));
        Ok(RelayedAddress(addr))
    }
}

impl RelayBinder for ShellRelayBinder {
    fn bind(&mut self, relay: RelayedAddress, options: RelayOptions) -> io::Result<()> {
        let ctx = self.ctx()?;
        if options.protocol == RelayProtocol::Tcp {
            // Peer connections reach the client through the core's events;
            // only the control connection must still be here.
            ctx.client_path(&options.client)
                .ok_or_else(no_client_path)?;
            return super::tcp_relay::listen(&ctx, relay.0);
        }
        let udp = UdpOptions {
            dont_fragment: options.dont_fragment,
            ..UdpOptions::default()
        };
        let socket = BatchUdpSocket::bind(relay.0, &udp)?;
        Self::start(&ctx, socket, &options).map(drop)
    }

    fn reserve(&mut self, relay: RelayedAddress, token: [u8; 8], until: Instant) -> io::Result<()> {
        let ctx = self.ctx()?;
        let socket = BatchUdpSocket::bind(relay.0, &UdpOptions::default())?;
        self.reservations.put(token, socket.into_socket(), until);
        // This worker's timer closes it if nobody claims it.
        ctx.timer.wake.notify_one();
        Ok(())
    }

    fn take_reserved(
        &mut self,
        token: [u8; 8],
        now: Instant,
        options: RelayOptions,
    ) -> Option<RelayedAddress> {
        let ctx = self.ctx().ok()?;
        // Checked before the reservation is taken: a client with no path
        // here leaves it for a retry.
        ctx.client_path(&options.client)?;
        let socket = BatchUdpSocket::from_socket(self.reservations.take(&token, now)?).ok()?;
        // Reserved without DONT-FRAGMENT; this Allocate may ask for it.
        socket.set_dont_fragment(options.dont_fragment).ok()?;
        Self::start(&ctx, socket, &options).ok()
    }
}

/// The allocation's client is on no listener or connection of this worker
/// (it closed while its Allocate was being handled).
fn no_client_path() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the allocation's client has no listener or connection here",
    )
}
