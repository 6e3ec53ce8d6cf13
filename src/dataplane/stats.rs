//! Per-worker counters: one per drop reason, so every packet the data path does not
//! forward is accounted for (`drops{reason="replay"}` …).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

/// Why the data path dropped a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// Truncated or inconsistent outer headers.
    Malformed,
    /// Not IPv4.
    NotIpv4,
    /// Outer IPv4 header checksum wrong.
    BadChecksum,
    /// An IP fragment reached the data path.
    Fragment,
    /// No inbound SA with this SPI on this worker.
    UnknownSpi,
    /// Outer address or UDP port does not match the SA.
    SaAddressMismatch,
    /// Sequence number replayed or left of the window.
    Replay,
    /// ICV check failed.
    Icv,
    /// ESP padding malformed.
    BadPadding,
    /// RFC 4303 dummy packet (next header 59).
    Dummy,
    /// A hard byte/packet lifetime of the SA is crossed.
    SaExpired,
    /// The outbound sequence number space is used up.
    SeqExhausted,
    /// ESP next header is neither UDP (transport) nor IPv4 (tunnel).
    BadNextHeader,
    /// The decrypted datagram is not L2TP (UDP port 1701).
    NotL2tp,
    /// The L2TP header is malformed or not version 2.
    L2tpMalformed,
    /// No session with this tunnel and session id.
    UnknownSession,
    /// The session exists but belongs to another SA (or arrived without IPsec).
    SessionSaMismatch,
    /// The PPP frame is malformed.
    PppMalformed,
    /// The inner IPv4 packet is malformed.
    InnerMalformed,
    /// The inner source address is not the one assigned to the session.
    SpoofedSource,
    /// L2TP without IPsec while `require_ipsec` is set.
    PlainL2tpRefused,
    /// Inside → client: no session holds the destination address.
    NoSession,
    /// Inside → client: the session has no outbound SA installed.
    NoOutboundSa,
    /// Not enough headroom or tailroom in the frame to encapsulate.
    NoRoom,
    /// The encapsulated packet would be too long.
    TooLong,
    /// Handed-off packet ring full (data-plane handoff).
    HandoffFull,
    /// Channel to the control thread full.
    ControlBusy,
    /// Transmit ring full.
    TxFull,
    /// No MAC address known for the next hop.
    NoNeighbour,
    /// The kernel refused to send (no socket for the port, send error).
    TxError,
    /// To the gateway's own inner address in router mode, other than ICMP echo.
    LocalUnsupported,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 31] = [
        DropReason::Malformed,
        DropReason::NotIpv4,
        DropReason::BadChecksum,
        DropReason::Fragment,
        DropReason::UnknownSpi,
        DropReason::SaAddressMismatch,
        DropReason::Replay,
        DropReason::Icv,
        DropReason::BadPadding,
        DropReason::Dummy,
        DropReason::SaExpired,
        DropReason::SeqExhausted,
        DropReason::BadNextHeader,
        DropReason::NotL2tp,
        DropReason::L2tpMalformed,
        DropReason::UnknownSession,
        DropReason::SessionSaMismatch,
        DropReason::PppMalformed,
        DropReason::InnerMalformed,
        DropReason::SpoofedSource,
        DropReason::PlainL2tpRefused,
        DropReason::NoSession,
        DropReason::NoOutboundSa,
        DropReason::NoRoom,
        DropReason::TooLong,
        DropReason::HandoffFull,
        DropReason::ControlBusy,
        DropReason::TxFull,
        DropReason::NoNeighbour,
        DropReason::TxError,
        DropReason::LocalUnsupported,
    ];

    /// Number of reasons.
    pub const COUNT: usize = DropReason::ALL.len();

    /// The label used in metrics and reports.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::NotIpv4 => "not_ipv4",
            DropReason::BadChecksum => "bad_checksum",
            DropReason::Fragment => "fragment",
            DropReason::UnknownSpi => "unknown_spi",
            DropReason::SaAddressMismatch => "sa_address_mismatch",
            DropReason::Replay => "replay",
            DropReason::Icv => "icv",
            DropReason::BadPadding => "bad_padding",
            DropReason::Dummy => "dummy",
            DropReason::SaExpired => "sa_expired",
            DropReason::SeqExhausted => "seq_exhausted",
            DropReason::BadNextHeader => "bad_next_header",
            DropReason::NotL2tp => "not_l2tp",
            DropReason::L2tpMalformed => "l2tp_malformed",
            DropReason::UnknownSession => "unknown_session",
            DropReason::SessionSaMismatch => "session_sa_mismatch",
            DropReason::PppMalformed => "ppp_malformed",
            DropReason::InnerMalformed => "inner_malformed",
            DropReason::SpoofedSource => "spoofed_source",
            DropReason::PlainL2tpRefused => "plain_l2tp_refused",
            DropReason::NoSession => "no_session",
            DropReason::NoOutboundSa => "no_outbound_sa",
            DropReason::NoRoom => "no_room",
            DropReason::TooLong => "too_long",
            DropReason::HandoffFull => "handoff_full",
            DropReason::ControlBusy => "control_busy",
            DropReason::TxFull => "tx_full",
            DropReason::NoNeighbour => "no_neighbour",
            DropReason::TxError => "tx_error",
            DropReason::LocalUnsupported => "local_unsupported",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Counters of one worker. Plain integers: each worker owns its `Stats`; the data
/// plane publishes snapshots for readers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets that entered the decap path.
    pub decap_in: u64,
    /// Inner packets delivered towards the inside.
    pub decap_out: u64,
    /// Inner octets delivered towards the inside.
    pub decap_out_bytes: u64,
    /// Packets that entered the encap path.
    pub encap_in: u64,
    /// Encapsulated packets ready for the outside.
    pub encap_out: u64,
    /// Encapsulated octets ready for the outside.
    pub encap_out_bytes: u64,
    /// Packets passed up to the control thread (IKE, L2TP control, PPP control).
    pub to_control: u64,
    /// NAT keepalives received (consumed, not dropped).
    pub nat_keepalives: u64,
    /// Packets handed to the worker that owns them.
    pub handoff_out: u64,
    /// Packets other workers handed to this one.
    pub handoff_in: u64,
    /// Control-thread commands the worker refused (SA pair under a taken or foreign
    /// SPI, rekey to an SA pair that is not installed); each is also logged.
    pub cmd_errors: u64,
    /// Drops by reason, indexed by `DropReason as usize`.
    pub drops: [u64; DropReason::COUNT],
}

impl Stats {
    /// Counts one drop.
    #[inline]
    pub fn drop(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }

    /// The count for one reason.
    pub fn drops_for(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// All drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Non-zero drop counters with their names.
    pub fn nonzero_drops(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .into_iter()
            .map(|r| (r, self.drops_for(r)))
            .filter(|&(_, n)| n > 0)
    }

    /// Adds another worker's counters.
    pub fn add(&mut self, o: &Stats) {
        self.decap_in += o.decap_in;
        self.decap_out += o.decap_out;
        self.decap_out_bytes += o.decap_out_bytes;
        self.encap_in += o.encap_in;
        self.encap_out += o.encap_out;
        self.encap_out_bytes += o.encap_out_bytes;
        self.to_control += o.to_control;
        self.nat_keepalives += o.nat_keepalives;
        self.handoff_out += o.handoff_out;
        self.handoff_in += o.handoff_in;
        self.cmd_errors += o.cmd_errors;
        for (a, b) in self.drops.iter_mut().zip(o.drops.iter()) {
            *a += b;
        }
    }
}

/// Counters a worker publishes for readers, without locks: one cache-padded atomic
/// per counter, written by the worker after each batch.
pub struct SharedStats {
    values: Vec<CachePadded<AtomicU64>>,
}

const FIXED: usize = 11;

impl Default for SharedStats {
    fn default() -> Self {
        SharedStats {
            values: (0..FIXED + DropReason::COUNT)
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
        }
    }
}

impl SharedStats {
    /// Publishes a worker's counters (the worker calls this after each batch).
    pub fn publish(&self, s: &Stats) {
        let fixed = [
            s.decap_in,
            s.decap_out,
            s.decap_out_bytes,
            s.encap_in,
            s.encap_out,
            s.encap_out_bytes,
            s.to_control,
            s.nat_keepalives,
            s.handoff_out,
            s.handoff_in,
            s.cmd_errors,
        ];
        for (v, x) in self.values.iter().zip(fixed.iter().chain(s.drops.iter())) {
            v.store(*x, Ordering::Relaxed);
        }
    }

    /// A snapshot of the worker's counters.
    pub fn snapshot(&self) -> Stats {
        let v: Vec<u64> = self
            .values
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect();
        let mut s = Stats {
            decap_in: v[0],
            decap_out: v[1],
            decap_out_bytes: v[2],
            encap_in: v[3],
            encap_out: v[4],
            encap_out_bytes: v[5],
            to_control: v[6],
            nat_keepalives: v[7],
            handoff_out: v[8],
            handoff_in: v[9],
            cmd_errors: v[10],
            ..Stats::default()
        };
        s.drops.copy_from_slice(&v[FIXED..]);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_a_distinct_slot_and_name() {
        let mut names: Vec<&str> = DropReason::ALL.iter().map(|r| r.name()).collect();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
    }

    #[test]
    fn counts_and_sums() {
        let mut a = Stats::default();
        a.drop(DropReason::Replay);
        a.drop(DropReason::Replay);
        a.drop(DropReason::Icv);
        let mut b = Stats::default();
        b.add(&a);
        b.add(&a);
        assert_eq!(b.drops_for(DropReason::Replay), 4);
        assert_eq!(b.total_drops(), 6);
        assert_eq!(b.nonzero_drops().count(), 2);
    }
}
