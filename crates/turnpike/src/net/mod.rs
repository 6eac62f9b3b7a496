//! Sockets.

pub mod udp;
