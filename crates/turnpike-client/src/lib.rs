//! TURN client and load generator.
