//! Security associations, anti-replay and in-place ESP encapsulation (RFC 4303).

pub mod replay;
pub mod shard;
