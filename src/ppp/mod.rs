//! PPP over L2TP, as sans-IO machines: the RFC 1661 option automaton ([`fsm`]), LCP
//! ([`lcp`], with Echo keepalives in [`keepalive`]), authentication ([`auth`]: PAP,
//! CHAP-MD5, MS-CHAPv2, both sides), IPCP ([`ipcp`]) and the [`Link`] that composes
//! them through the phases of RFC 1661 §3.2 (Establish → Authenticate → Network →
//! Terminate).
//!
//! Nothing here owns a socket, a thread or a clock: the caller passes `now` and the
//! PPP frames it took out of L2TP data messages, calls [`Link::handle_timeout`] at
//! [`Link::next_timeout`], and drains [`Link::poll_event`] for frames to send and for
//! what happened (authenticate this user, the link is up with these addresses, the
//! link went down and why). Control frames are parsed with [`crate::wire::ppp`].

pub mod auth;
pub mod config;
pub mod event;
pub mod fsm;
pub mod ipcp;
pub mod keepalive;
pub mod lcp;
pub mod link;

pub use auth::AuthMethod;
pub use config::{ClientConfig, ServerConfig, Timing};
pub use event::{DownReason, Event, LinkUp};
pub use link::{Link, LinkStats, Phase};

use crate::wire::ppp::{ADDRESS, CONTROL, Protocol};

/// A source of random octets for challenges, magic numbers and identifiers.
pub trait Entropy: Send {
    /// Fills `buf` with random octets.
    fn fill(&mut self, buf: &mut [u8]);
}

/// The system's CSPRNG (aws-lc `RAND_bytes`).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemEntropy;

impl Entropy for SystemEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        if aws_lc_rs::rand::fill(buf).is_err() {
            // RAND_bytes does not fail on a working system; if it ever does, do not
            // send zeros: stretch the clock through SHA-1 rather than panic.
            use sha1::{Digest, Sha1};
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            for (i, chunk) in buf.chunks_mut(20).enumerate() {
                let digest: [u8; 20] = Sha1::new()
                    .chain_update(nanos.to_le_bytes())
                    .chain_update(i.to_le_bytes())
                    .finalize()
                    .into();
                chunk.copy_from_slice(&digest[..chunk.len()]);
            }
        }
    }
}

/// A reproducible, NOT cryptographic generator (SplitMix64) for tests, simulations
/// and the load generator, where runs must repeat.
#[derive(Debug, Clone)]
pub struct SeededEntropy(u64);

impl SeededEntropy {
    /// Starts from `seed`.
    pub fn new(seed: u64) -> SeededEntropy {
        SeededEntropy(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl Entropy for SeededEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// A complete PPP frame for L2TP: `FF 03`, the two-octet protocol, the packet.
/// Control protocols are always sent this way (RFC 1661 §6.5–6.6: no compression of
/// LCP frames; we do not compress the others either).
pub fn frame(protocol: Protocol, packet: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + packet.len());
    out.extend_from_slice(&[ADDRESS, CONTROL]);
    out.extend_from_slice(&protocol.0.to_be_bytes());
    out.extend_from_slice(packet);
    out
}

#[cfg(test)]
mod tests;
