//! The data path of a worker: batch stages from the outer IPv4 packet to the inner one
//! and back ([`chain`]), the sessions it serves ([`session`]) and its counters
//! ([`stats`]).

pub mod backends;
pub mod chain;
pub mod handoff;
pub mod io;
pub mod mss;
pub mod peer;
pub mod ports;
pub mod runtime;
pub mod session;
pub mod stats;
pub mod worker;
pub mod xdp;

pub use chain::{ControlKind, Pkt, Shard, Verdict};
pub use stats::{DropReason, Stats};

#[cfg(test)]
mod tests;
