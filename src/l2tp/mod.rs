//! L2TPv2 control plane (RFC 2661): an LNS for incoming calls, and a LAC built from
//! the same machines for tests, the load generator and `sekisho demo`.
//!
//! Everything here is sans-IO (../shared/STYLE.md, boringtun/quinn-proto style): the
//! caller passes the time and the bytes of each control message in, calls
//! `handle_timeout` when `next_timeout` passes, and drains `poll_event` for
//! [`Event::Transmit`] (a complete L2TP control message for a [`PeerKey`]) and for
//! tunnels and sessions coming up and going down. Data messages never come here: the
//! data plane carries them, keyed by the ids of [`SessionInfo`].
//!
//! | concern | file | RFC 2661 |
//! |---|---|---|
//! | the LNS: routing, SCCRQ/SCCRP/SCCCN, timers, API | `lns.rs` | §5.1, §7.2 |
//! | the LAC (initiator) | `lac.rs` | §5.1, §5.2.1 |
//! | one control connection: state, HELLO, StopCCN | `tunnel.rs` | §5.5, §5.7, §6.5 |
//! | calls: ICRQ/ICRP/ICCN, CDN, WEN, SLI, OCRQ refused | `session.rs` | §5.2.1, §5.6, §6 |
//! | Ns/Nr, windows, retransmission, ZLB | `reliable.rs` | §5.8 |
//! | reading and checking AVPs | `message.rs` | §4.1, §4.4, §6 |
//! | writing messages | `build.rs` | §4.1 |
//! | hidden AVPs, tunnel authentication (MD5) | `hidden.rs` | §4.3, §5.1.1 |
//! | Result Code AVP | `result.rs` | §4.4.2 |
//! | ids naming the owning worker | `ids.rs` | §3.1 |
//! | deadlines of many tunnels | `timers.rs` | |
//!
//! # For the control thread
//!
//! ```text
//! loop {
//!     wait until a control message arrives or lns.next_timeout() passes;
//!     lns.input(now, peer, l2tp_bytes, worker)   // control messages only (T bit)
//!     lns.handle_timeout(now)
//!     while let Some(event) = lns.poll_event() { … }
//! }
//! ```
//!
//! - [`PeerKey`] is the transport: outer address and port plus our inbound SPI (0 for
//!   plain L2TP). Tunnels are bound to it; a message for a tunnel arriving on another
//!   key is dropped (`Stats::wrong_peer`). When a Quick Mode rekey changes the inbound
//!   SPI, or NAT rebinding the port, call [`Lns::rekey_peer`]; when the IKE SA dies
//!   (DPD, delete), [`Lns::close_peer`]. Enforcing `require_ipsec` is the caller's job.
//! - `worker` in [`Lns::input`] only matters for an SCCRQ: it is the worker the new
//!   tunnel's and its sessions' ids will name ([`worker_of`] with
//!   [`LnsConfig::worker_bits`]); pass the one whose queue received the peer's IKE.
//! - [`Event::Transmit`] is a complete L2TP control message: send it from UDP 1701 to
//!   the peer's L2TP port, under its SA when `spi != 0`.
//! - [`Event::SessionUp`] (after ICCN) is when PPP starts and the data plane learns
//!   the session ([`SessionInfo`] has all four ids). [`Event::SessionDown`] is raised
//!   only for sessions that were up; [`Event::TunnelDown`] for every tunnel we
//!   allocated an id for (also ones refused during setup), after the SessionDowns of
//!   its sessions. Causes are words for logs and accounting.
//! - PPP failing (authentication, IPCP) or an admin kick: [`Lns::close_session`] with a
//!   [`cdn`] result code; [`Lns::shutdown`] on exit.
//! - Calls that never complete (ICRP sent, no ICCN) are cleared after one
//!   `hello_interval`; a control connection that does not complete in two
//!   retransmission cycles (62 s) is stopped.
//! - With a shared secret the LNS always challenges the LAC (§5.1.1): set one only if
//!   the clients are configured with it (Windows, macOS, iOS, Android clients have
//!   none). The secret is zeroized on drop and never printed.
//! - With [`LnsConfig::one_tunnel_per_peer`] (default) a new SCCRQ from a transport
//!   that has a tunnel replaces it (the client restarted), without a StopCCN.
//! - Nothing here reads a clock, a socket or the process RNG except through
//!   [`Entropy`] ([`SystemEntropy`] by default).

mod build;
mod config;
mod event;
mod hidden;
mod ids;
mod lac;
mod lns;
mod message;
mod reliable;
mod result;
mod session;
mod stats;
mod timers;
mod tunnel;

#[cfg(test)]
mod tests;

pub use config::{Entropy, Retransmit, Secret, SeededEntropy, SystemEntropy, TunnelConfig};
pub use event::{Event, PeerKey, SessionInfo, SessionRef};
pub use hidden::{challenge_response, hide, unhide, verify_response};
pub use ids::{IdAllocator, MAX_WORKER_BITS, worker_of};
pub use lac::{Lac, LacConfig};
pub use lns::{Lns, LnsConfig};
pub use result::{ResultCode, cdn, error, stopccn};
pub use stats::Stats;

/// The UDP port of L2TP (§8.1).
pub const L2TP_PORT: u16 = 1701;
