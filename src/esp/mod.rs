//! Security associations, anti-replay and in-place ESP encapsulation (RFC 4303).
//!
//! - [`sa`]: one direction of an SA: keys, SPI, sequence, lifetimes, counters.
//! - [`replay`]: the anti-replay window (§3.4.3, Appendix A, ESN).
//! - [`shard`]: O(1) lookup of a worker's inbound SAs by the SPI it allocated.
//! - [`decap`] / [`encap`]: pure functions over byte slices for transport and tunnel
//!   mode, raw ESP (IP protocol 50) and UDP-encapsulated ESP (RFC 3948).

pub mod decap;
pub mod encap;
pub mod replay;
pub mod sa;
pub mod shard;

#[cfg(test)]
mod tests;
