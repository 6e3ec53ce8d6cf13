//! sekisho — an L2TP/IPsec edge gateway.
//!
//! The library holds everything the `sekisho` binary runs: zero-copy wire views
//! ([`wire`]), ESP transforms with batch APIs ([`crypto`]), security associations,
//! anti-replay and in-place encapsulation ([`esp`]), and the per-batch data path
//! that takes IPv4/UDP/ESP/UDP/L2TP/PPP/IPv4 apart and puts it back together
//! ([`dataplane`]). The PPP option automaton
//! ([`ppp`]); the address pool and the authentication backend interface ([`aaa`]).

pub mod aaa;
pub mod bench;
pub mod config;
pub mod control;
pub mod crypto;
pub mod daemon;
pub mod dataplane;
pub mod esp;
pub mod ike;
pub mod l2tp;
pub mod ppp;
pub mod wire;
