//! A security association (RFC 4301 §4.4.2): keys, SPI, sequence state, lifetimes and
//! counters of one direction of an ESP SA.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::crypto::{Backend, CryptoError, EspCipher, Transform};

use super::replay::{ReplayError, ReplayWindow, WindowSizeError};

/// What the ESP payload is (RFC 4303 §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The payload is the upper-layer datagram of the outer IP header (L2TP/IPsec:
    /// UDP to port 1701).
    Transport,
    /// The payload is a whole inner IPv4 packet (next header 4).
    Tunnel,
}

/// How ESP is carried between the peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encap {
    /// IP protocol 50.
    None,
    /// UDP-encapsulated ESP (RFC 3948), normally port 4500 on both sides; the ports are
    /// the peer's as seen on the wire, so several clients behind one NAT address work.
    Udp {
        /// Our UDP port (4500).
        local_port: u16,
        /// The peer's UDP port after NAT.
        remote_port: u16,
    },
}

/// The addresses of the inner IPv4 header of a host-to-host tunnel-mode SA carrying
/// L2TP: the L2TP endpoints as the peer sees them. With NAT-T the peer's inner address
/// is its own (private) address, not the outer one the NAT shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelAddrs {
    /// Ours (source of the inner header we send).
    pub local: Ipv4Addr,
    /// The peer's (destination of the inner header we send).
    pub peer: Ipv4Addr,
}

/// Which way the SA carries traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Peer → gateway: the SPI is ours, the replay window applies.
    Inbound,
    /// Gateway → peer: the SPI is the peer's, we count the sequence number.
    Outbound,
}

/// Soft and hard limits of an SA (RFC 4301 §4.4.2.1). `None` means no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Limits {
    /// Octets of protected payload.
    pub bytes: Option<u64>,
    /// Packets.
    pub packets: Option<u64>,
    /// Time since the SA was installed.
    pub time: Option<Duration>,
}

/// Soft limits start a rekey; hard limits end the SA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Lifetime {
    /// Rekey when crossed.
    pub soft: Limits,
    /// Stop using the SA when crossed.
    pub hard: Limits,
}

/// Where an SA stands against its lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LifetimeState {
    /// Within the soft limits.
    Fresh,
    /// A soft limit is crossed: the control thread should rekey.
    Soft,
    /// A hard limit is crossed: the SA must not be used.
    Hard,
}

/// Per-SA traffic counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counters {
    /// Packets protected or verified.
    pub packets: u64,
    /// Octets of ESP payload protected or verified.
    pub bytes: u64,
}

/// Parameters to build an [`Sa`].
#[derive(Clone, Debug)]
pub struct SaConfig {
    /// The SPI on the wire (ours for inbound, the peer's for outbound).
    pub spi: u32,
    /// Which way.
    pub direction: Direction,
    /// The transform.
    pub transform: Transform,
    /// Extended (64-bit) sequence numbers.
    pub esn: bool,
    /// Transport or tunnel.
    pub mode: Mode,
    /// Raw ESP or UDP/4500.
    pub encap: Encap,
    /// Our outer address.
    pub local: Ipv4Addr,
    /// The peer's outer address (after NAT).
    pub remote: Ipv4Addr,
    /// Replay window size (inbound), 64..=4096.
    pub replay_window: u32,
    /// Soft/hard limits.
    pub lifetime: Lifetime,
    /// Which crypto implementation.
    pub backend: Backend,
}

/// The sequence state of one direction.
#[derive(Clone, Debug)]
enum SeqState {
    Outbound { next: u64 },
    Inbound { replay: ReplayWindow },
}

/// Why an SA refused to carry a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaError {
    /// The sequence number was seen or is left of the window.
    Replay(ReplayError),
    /// The outbound sequence number space is used up (RFC 4303 §3.3.3: never cycle).
    SeqExhausted,
    /// A hard lifetime is crossed.
    Expired,
    /// Wrong direction for the operation.
    Direction,
}

/// One direction of an ESP SA.
#[derive(Debug)]
pub struct Sa {
    spi: u32,
    mode: Mode,
    encap: Encap,
    local: Ipv4Addr,
    remote: Ipv4Addr,
    cipher: EspCipher,
    seq: SeqState,
    lifetime: Lifetime,
    installed: Instant,
    counters: Counters,
    tunnel: Option<TunnelAddrs>,
}

impl Sa {
    /// Builds an SA from KEYMAT (encryption key | salt | integrity key). `iv_seed` must
    /// be 16 random octets (see [`EspCipher::new`]).
    pub fn new(
        cfg: &SaConfig,
        keymat: &[u8],
        iv_seed: [u8; 16],
        now: Instant,
    ) -> Result<Sa, SaBuildError> {
        let cipher = EspCipher::new(cfg.transform, keymat, cfg.esn, cfg.backend, iv_seed)?;
        let seq = match cfg.direction {
            Direction::Outbound => SeqState::Outbound { next: 1 },
            Direction::Inbound => SeqState::Inbound {
                replay: ReplayWindow::new(cfg.replay_window, cfg.esn)?,
            },
        };
        Ok(Sa {
            spi: cfg.spi,
            mode: cfg.mode,
            encap: cfg.encap,
            local: cfg.local,
            remote: cfg.remote,
            cipher,
            seq,
            lifetime: cfg.lifetime,
            installed: now,
            counters: Counters::default(),
            tunnel: None,
        })
    }

    /// The same SA under another SPI: inbound SAs are keyed first and then stored
    /// under the SPI the worker's table allocates.
    pub fn with_spi(mut self, spi: u32) -> Sa {
        self.spi = spi;
        self
    }

    /// Tunnel mode: the inner addresses of L2TP packets (from the Quick Mode
    /// identities). On an inbound SA the data path also learns them from each verified
    /// L2TP packet ([`Sa::learn_tunnel_addrs`]); the gateway's outbound tunnel-mode
    /// packets use the inbound SA's, or the outer addresses when there are none.
    pub fn with_tunnel_addrs(mut self, addrs: TunnelAddrs) -> Sa {
        self.tunnel = Some(addrs);
        self
    }

    /// The tunnel-mode inner addresses, configured or learned.
    #[inline]
    pub fn tunnel_addrs(&self) -> Option<TunnelAddrs> {
        self.tunnel
    }

    /// Records the inner addresses of a verified tunnel-mode L2TP packet (source: the
    /// peer, destination: us). A compare per packet; a write only when they change.
    #[inline]
    pub fn learn_tunnel_addrs(&mut self, addrs: TunnelAddrs) {
        if self.tunnel != Some(addrs) {
            self.tunnel = Some(addrs);
        }
    }

    /// The SPI on the wire.
    pub fn spi(&self) -> u32 {
        self.spi
    }
    /// Transport or tunnel.
    pub fn mode(&self) -> Mode {
        self.mode
    }
    /// Raw ESP or UDP-encapsulated.
    pub fn encap(&self) -> Encap {
        self.encap
    }
    /// Our outer address.
    pub fn local(&self) -> Ipv4Addr {
        self.local
    }
    /// The peer's outer address.
    pub fn remote(&self) -> Ipv4Addr {
        self.remote
    }
    /// The keyed transform.
    pub fn cipher(&self) -> &EspCipher {
        &self.cipher
    }
    /// The transform.
    pub fn transform(&self) -> Transform {
        self.cipher.transform()
    }
    /// Traffic so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }
    /// Which way the SA carries traffic.
    pub fn direction(&self) -> Direction {
        match self.seq {
            SeqState::Outbound { .. } => Direction::Outbound,
            SeqState::Inbound { .. } => Direction::Inbound,
        }
    }

    /// The next outbound sequence number to be used (1 for a new SA).
    pub fn next_seq(&self) -> Option<u64> {
        match self.seq {
            SeqState::Outbound { next } => Some(next),
            SeqState::Inbound { .. } => None,
        }
    }

    /// Takes the next outbound sequence number. Without ESN the 32-bit space must not
    /// cycle (RFC 4303 §3.3.3): the SA is exhausted at 2^32 − 1.
    pub fn take_seq(&mut self) -> Result<u64, SaError> {
        let limit = if self.cipher.esn() {
            u64::MAX
        } else {
            u64::from(u32::MAX)
        };
        match &mut self.seq {
            SeqState::Outbound { next } => {
                if *next > limit || *next == 0 {
                    return Err(SaError::SeqExhausted);
                }
                let s = *next;
                *next = next.wrapping_add(1);
                Ok(s)
            }
            SeqState::Inbound { .. } => Err(SaError::Direction),
        }
    }

    /// Inbound: the full sequence number for a wire value, if the window allows it.
    pub fn check_replay(&self, seq_lo: u32) -> Result<u64, SaError> {
        match &self.seq {
            SeqState::Inbound { replay } => replay.check(seq_lo).map_err(SaError::Replay),
            SeqState::Outbound { .. } => Err(SaError::Direction),
        }
    }

    /// Inbound, after the ICV verified: marks `seq` received.
    pub fn accept_replay(&mut self, seq: u64) -> Result<(), SaError> {
        match &mut self.seq {
            SeqState::Inbound { replay } => replay.accept(seq).map_err(SaError::Replay),
            SeqState::Outbound { .. } => Err(SaError::Direction),
        }
    }

    /// Counts a protected or verified packet of `bytes` octets.
    #[inline]
    pub fn count(&mut self, bytes: usize) {
        self.counters.packets += 1;
        self.counters.bytes += bytes as u64;
    }

    /// Where the SA stands against its limits at `now`.
    pub fn lifetime_state(&self, now: Instant) -> LifetimeState {
        let age = now.saturating_duration_since(self.installed);
        let crossed = |l: &Limits| {
            l.bytes.is_some_and(|b| self.counters.bytes >= b)
                || l.packets.is_some_and(|p| self.counters.packets >= p)
                || l.time.is_some_and(|t| age >= t)
        };
        if crossed(&self.lifetime.hard) {
            LifetimeState::Hard
        } else if crossed(&self.lifetime.soft) {
            LifetimeState::Soft
        } else {
            LifetimeState::Fresh
        }
    }

    /// Hard byte/packet limits only: checked per packet on the data path (time limits
    /// are enforced by the control thread's timers, which remove the SA).
    #[inline]
    pub fn volume_exhausted(&self) -> bool {
        let h = &self.lifetime.hard;
        h.bytes.is_some_and(|b| self.counters.bytes >= b)
            || h.packets.is_some_and(|p| self.counters.packets >= p)
    }
}

/// Why an SA could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaBuildError {
    /// Bad key material.
    Crypto(CryptoError),
    /// Replay window outside 64..=4096 or not a multiple of 64.
    Window(u32),
}

impl From<CryptoError> for SaBuildError {
    fn from(e: CryptoError) -> Self {
        SaBuildError::Crypto(e)
    }
}

impl From<WindowSizeError> for SaBuildError {
    fn from(e: WindowSizeError) -> Self {
        SaBuildError::Window(e.0)
    }
}

impl std::fmt::Display for SaBuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SaBuildError::Crypto(e) => write!(f, "{e}"),
            SaBuildError::Window(w) => {
                write!(f, "replay window {w} is not a multiple of 64 in 64..=4096")
            }
        }
    }
}

impl std::error::Error for SaBuildError {}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn cfg(direction: Direction) -> SaConfig {
        SaConfig {
            spi: 0x1234_5678,
            direction,
            transform: Transform::Aes128Gcm,
            esn: false,
            mode: Mode::Transport,
            encap: Encap::None,
            local: Ipv4Addr::new(10, 0, 0, 1),
            remote: Ipv4Addr::new(10, 0, 0, 2),
            replay_window: 1024,
            lifetime: Lifetime::default(),
            backend: Backend::AwsLc,
        }
    }

    #[test]
    fn outbound_sequence_never_cycles_without_esn() {
        let now = Instant::now();
        let mut sa = Sa::new(&cfg(Direction::Outbound), &[0; 20], [0; 16], now).unwrap();
        assert_eq!(sa.take_seq(), Ok(1));
        assert_eq!(sa.take_seq(), Ok(2));
        sa.seq = SeqState::Outbound {
            next: u64::from(u32::MAX),
        };
        assert_eq!(sa.take_seq(), Ok(u64::from(u32::MAX)));
        assert_eq!(sa.take_seq(), Err(SaError::SeqExhausted));
        assert_eq!(sa.check_replay(1), Err(SaError::Direction));
    }

    #[test]
    fn esn_sequence_crosses_32_bits() {
        let mut c = cfg(Direction::Outbound);
        c.esn = true;
        let mut sa = Sa::new(&c, &[0; 20], [0; 16], Instant::now()).unwrap();
        sa.seq = SeqState::Outbound {
            next: u64::from(u32::MAX),
        };
        assert_eq!(sa.take_seq(), Ok(u64::from(u32::MAX)));
        assert_eq!(sa.take_seq(), Ok(1 << 32));
    }

    #[test]
    fn lifetimes_soft_then_hard() {
        let mut c = cfg(Direction::Inbound);
        c.lifetime = Lifetime {
            soft: Limits {
                bytes: Some(1000),
                packets: None,
                time: Some(Duration::from_secs(50)),
            },
            hard: Limits {
                bytes: Some(2000),
                packets: Some(10),
                time: Some(Duration::from_secs(60)),
            },
        };
        let t0 = Instant::now();
        let mut sa = Sa::new(&c, &[0; 20], [0; 16], t0).unwrap();
        assert_eq!(sa.lifetime_state(t0), LifetimeState::Fresh);
        sa.count(1000);
        assert_eq!(sa.lifetime_state(t0), LifetimeState::Soft);
        assert!(!sa.volume_exhausted());
        sa.count(1000);
        assert_eq!(sa.lifetime_state(t0), LifetimeState::Hard);
        assert!(sa.volume_exhausted());

        let sa = Sa::new(&c, &[0; 20], [0; 16], t0).unwrap();
        assert_eq!(
            sa.lifetime_state(t0 + Duration::from_secs(55)),
            LifetimeState::Soft
        );
        assert_eq!(
            sa.lifetime_state(t0 + Duration::from_secs(60)),
            LifetimeState::Hard
        );
        let mut sa = Sa::new(&c, &[0; 20], [0; 16], t0).unwrap();
        for _ in 0..10 {
            sa.count(1);
        }
        assert!(sa.volume_exhausted());
    }

    #[test]
    fn bad_config_is_an_error() {
        let mut c = cfg(Direction::Inbound);
        assert!(matches!(
            Sa::new(&c, &[0; 3], [0; 16], Instant::now()),
            Err(SaBuildError::Crypto(CryptoError::KeyLength { .. }))
        ));
        c.replay_window = 100;
        assert_eq!(
            Sa::new(&c, &[0; 20], [0; 16], Instant::now()).unwrap_err(),
            SaBuildError::Window(100)
        );
    }
}
