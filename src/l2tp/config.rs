//! Configuration shared by both ends of a control connection, the tunnel secret, and
//! the entropy source the machines draw challenges, random vectors and ids from.

use std::fmt;
use std::time::Duration;

use zeroize::Zeroizing;

/// The tunnel shared secret (§5.1.1): zeroized on drop, never printed.
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Wraps the secret's octets.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(Zeroizing::new(bytes.into()))
    }

    /// The octets, for the MD5 computations of §4.3 and §5.1.1 only.
    pub(crate) fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Retransmission of unacknowledged control messages (§5.8): the timeout starts at
/// `initial` and doubles up to `max`; after `max_retries` retransmissions without an
/// acknowledgement the peer is declared dead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retransmit {
    /// First retransmission timeout (RFC 2661 recommends 1 s).
    pub initial: Duration,
    /// Cap of the exponential backoff (RFC 2661: at least 8 s).
    pub max: Duration,
    /// Retransmissions before giving up (RFC 2661 recommends 5).
    pub max_retries: u32,
}

impl Default for Retransmit {
    fn default() -> Retransmit {
        Retransmit {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(8),
            max_retries: 5,
        }
    }
}

impl Retransmit {
    /// The timeout after `retries` retransmissions: `initial * 2^retries`, capped.
    pub fn timeout(&self, retries: u32) -> Duration {
        let factor = 1u32.checked_shl(retries.min(31)).unwrap_or(u32::MAX);
        self.initial
            .saturating_mul(factor)
            .min(self.max.max(self.initial))
    }

    /// The whole retransmission cycle: from the first transmission until the peer is
    /// declared dead (1 + 2 + 4 + 8 + 8 + 8 = 31 s with the defaults). The receiver of
    /// a StopCCN keeps the tunnel this long to re-acknowledge retransmissions (§5.7).
    pub fn full_cycle(&self) -> Duration {
        (0..=self.max_retries.min(64)).fold(Duration::ZERO, |sum, retries| {
            sum.saturating_add(self.timeout(retries))
        })
    }
}

/// What one end of a control connection says about itself and how it keeps the
/// connection reliable. Shared by [`crate::l2tp::Lns`] and [`crate::l2tp::Lac`].
#[derive(Clone, Debug)]
pub struct TunnelConfig {
    /// Host Name AVP (§4.4.3); truncated to 255 octets on the wire.
    pub host_name: String,
    /// Vendor Name AVP (§4.4.3).
    pub vendor_name: String,
    /// Send a HELLO after this long without hearing from the peer (§6.5); also the
    /// period of the housekeeping that drops half-open sessions. `None` disables both.
    pub hello_interval: Option<Duration>,
    /// Retransmission timeouts and retry limit.
    pub retransmit: Retransmit,
    /// Our Receive Window Size (§4.4.3, §5.8): how many messages the peer may have in
    /// flight towards us. At least 1.
    pub recv_window: u16,
    /// How long to wait for a message to piggyback an acknowledgement on before
    /// sending a ZLB (§5.8).
    pub ack_delay: Duration,
    /// Tunnel shared secret: enables tunnel authentication (§5.1.1) and hidden AVPs.
    pub secret: Option<Secret>,
    /// Hide sensitive AVPs (§4.3) when a secret is set.
    pub hidden_avps: bool,
}

impl Default for TunnelConfig {
    fn default() -> TunnelConfig {
        TunnelConfig {
            host_name: "sekisho".into(),
            vendor_name: "sekisho".into(),
            hello_interval: Some(Duration::from_secs(60)),
            retransmit: Retransmit::default(),
            recv_window: 4,
            ack_delay: Duration::from_millis(200),
            secret: None,
            hidden_avps: false,
        }
    }
}

/// Bounds that keep every deadline a sane distance from now (no `Instant` overflow,
/// no busy loop), whatever the configuration says.
const MAX_HELLO: Duration = Duration::from_secs(24 * 3600);
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
const MIN_TIMEOUT: Duration = Duration::from_millis(1);
const MAX_ACK_DELAY: Duration = Duration::from_secs(10);
const MAX_RETRIES: u32 = 100;

impl TunnelConfig {
    /// The configuration with every duration clamped to sane bounds: HELLO at most
    /// daily (a zero interval disables it), retransmission timeouts between 1 ms and
    /// 1 h, at most 100 retries, acknowledgement delay at most 10 s, window >= 1.
    pub fn sanitized(mut self) -> TunnelConfig {
        self.hello_interval = self
            .hello_interval
            .filter(|d| !d.is_zero())
            .map(|d| d.min(MAX_HELLO));
        let rt = &mut self.retransmit;
        rt.initial = rt.initial.clamp(MIN_TIMEOUT, MAX_TIMEOUT);
        rt.max = rt.max.clamp(rt.initial, MAX_TIMEOUT);
        rt.max_retries = rt.max_retries.min(MAX_RETRIES);
        self.ack_delay = self.ack_delay.min(MAX_ACK_DELAY);
        self.recv_window = self.recv_window.max(1);
        self
    }

    /// The secret's octets, if a non-empty secret is configured.
    pub(crate) fn secret_bytes(&self) -> Option<&[u8]> {
        self.secret
            .as_ref()
            .map(Secret::expose)
            .filter(|s| !s.is_empty())
    }

    /// Whether outgoing sensitive AVPs are hidden.
    pub(crate) fn hides(&self) -> bool {
        self.hidden_avps && self.secret_bytes().is_some()
    }

    /// Our receive window, at least 1.
    pub(crate) fn window(&self) -> u16 {
        self.recv_window.max(1)
    }
}

/// A source of unpredictable octets (challenges, random vectors, id cursors).
///
/// The machines never read a clock or a socket; randomness is the one thing they
/// draw from outside, through this trait, so tests can make it deterministic.
pub trait Entropy: Send {
    /// Fills `out` with random octets.
    fn fill(&mut self, out: &mut [u8]);
}

/// The operating system's CSPRNG (through aws-lc-rs). The default.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemEntropy;

impl Entropy for SystemEntropy {
    fn fill(&mut self, out: &mut [u8]) {
        if aws_lc_rs::rand::fill(out).is_err() {
            // aws-lc aborts rather than fail on a healthy system; never hand out a
            // predictable all-zero challenge silently.
            tracing::error!("l2tp: system RNG failed; using a weak fallback");
            let mut fallback = SeededEntropy::new(std::process::id().into());
            fallback.fill(out);
        }
    }
}

/// A deterministic generator (splitmix64) for tests, replays and load generators.
/// Not for production: its output is predictable from the seed.
#[derive(Debug, Clone)]
pub struct SeededEntropy {
    state: u64,
}

impl SeededEntropy {
    /// Starts from `seed`.
    pub fn new(seed: u64) -> SeededEntropy {
        SeededEntropy { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl Entropy for SeededEntropy {
    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let word = self.next_u64().to_be_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// Draws a `u16` from `entropy`.
pub(crate) fn random_u16(entropy: &mut dyn Entropy) -> u16 {
    let mut bytes = [0u8; 2];
    entropy.fill(&mut bytes);
    u16::from_be_bytes(bytes)
}

/// Draws 16 octets from `entropy` (challenges and random vectors).
pub(crate) fn random_16(entropy: &mut dyn Entropy) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    entropy.fill(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let r = Retransmit::default();
        let timeouts: Vec<u64> = (0..7).map(|n| r.timeout(n).as_secs()).collect();
        assert_eq!(timeouts, [1, 2, 4, 8, 8, 8, 8]);
        assert_eq!(r.full_cycle(), Duration::from_secs(31));
        let huge = Retransmit {
            max_retries: u32::MAX,
            ..Retransmit::default()
        };
        assert!(huge.full_cycle() > Duration::from_secs(31));
    }

    #[test]
    fn sanitized_bounds_every_duration() {
        let wild = TunnelConfig {
            hello_interval: Some(Duration::MAX),
            retransmit: Retransmit {
                initial: Duration::ZERO,
                max: Duration::MAX,
                max_retries: u32::MAX,
            },
            ack_delay: Duration::MAX,
            recv_window: 0,
            ..TunnelConfig::default()
        }
        .sanitized();
        assert_eq!(wild.hello_interval, Some(MAX_HELLO));
        assert_eq!(wild.retransmit.initial, MIN_TIMEOUT);
        assert_eq!(wild.retransmit.max, MAX_TIMEOUT);
        assert_eq!(wild.retransmit.max_retries, MAX_RETRIES);
        assert_eq!((wild.ack_delay, wild.recv_window), (MAX_ACK_DELAY, 1));
        let off = TunnelConfig {
            hello_interval: Some(Duration::ZERO),
            ..TunnelConfig::default()
        };
        assert_eq!(off.sanitized().hello_interval, None);
        assert_eq!(
            TunnelConfig::default().sanitized().retransmit,
            Retransmit::default()
        );
    }

    #[test]
    fn secret_is_not_printed() {
        let secret = Secret::new("hunter2-tunnel");
        let config = TunnelConfig {
            secret: Some(secret),
            ..TunnelConfig::default()
        };
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("redacted"));
    }

    #[test]
    fn seeded_entropy_is_deterministic() {
        let (mut a, mut b) = (SeededEntropy::new(7), SeededEntropy::new(7));
        let (mut x, mut y) = ([0u8; 13], [0u8; 13]);
        a.fill(&mut x);
        b.fill(&mut y);
        assert_eq!(x, y);
        assert_ne!(x, [0u8; 13]);
    }
}
