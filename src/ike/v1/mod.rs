//! IKEv1 (RFC 2409 over RFC 2408/2407) with NAT-T (RFC 3947/3948) and DPD (RFC 3706),
//! one exchange or concern per file, after strongSwan's task model.

pub mod crypto;
pub mod informational;
pub mod initiator;
pub mod keys;
pub mod main_mode;
pub mod message;
pub mod natd;
pub mod proposal;
pub mod quick_mode;
pub mod responder;

#[cfg(test)]
mod tests;

pub use responder::{Responder, ResponderConfig};
