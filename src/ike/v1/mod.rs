//! IKEv1 (RFC 2409): crypto primitives and key derivation.

pub mod crypto;
pub mod keys;
