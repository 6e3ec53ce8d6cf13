//! The AF_XDP backend: the steering program's loader ([`loader`]) and the sockets,
//! UMEM and rings ([`xsk`], the only module with `unsafe`).

pub mod loader;
pub mod port;
pub mod xsk;
