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
pub use hidden::{challenge_response, hide, unhide};
pub use ids::{IdAllocator, MAX_WORKER_BITS, worker_of};
pub use lac::{Lac, LacConfig};
pub use lns::{Lns, LnsConfig};
pub use result::{ResultCode, cdn, error, stopccn};
pub use stats::Stats;

/// The UDP port of L2TP (§8.1).
pub const L2TP_PORT: u16 = 1701;
