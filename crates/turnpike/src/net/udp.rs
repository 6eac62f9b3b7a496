//! Batched UDP socket.
