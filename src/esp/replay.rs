//! Anti-replay window (RFC 4303 §3.4.3, Appendix A).
//!
//! The receiver keeps the highest sequence number it has authenticated (`top`, "T" in
//! the RFC) and a bitmap of the `size` ("W") sequence numbers `T-W+1 ..= T`. A packet is
//! new if it lies above `T`, or inside the window with its bit clear; anything below the
//! window is too old.
//!
//! With Extended Sequence Numbers only the low 32 bits travel on the wire; the high 32
//! bits ("Seqh") are inferred from the window position as in Appendix A2.2, and the
//! full 64-bit number is what the ICV covers. [`ReplayWindow::check`] therefore runs
//! before the integrity check and hands back that 64-bit number without marking it;
//! [`ReplayWindow::accept`] runs only after the ICV verified.
//!
//! The bitmap is a ring of `u64` words, as in RFC 6479 and the Linux and VPP
//! implementations: sequence `s` lives in bit `s % 64` of word `(s / 64) % words`, the
//! ring holds at least one word more than the window, and sliding the window forward
//! zeroes only the words it passes over (at most the whole ring), never shifting the
//! bitmap. Both calls are O(1) in the packet rate and never allocate.

use std::fmt;

use thiserror::Error;

/// Window size used when the configuration names none.
pub const DEFAULT_WINDOW: u32 = 1024;
/// Smallest accepted window size: one bitmap word, the size RFC 4303 §3.4.3 prefers
/// (it requires 32 without ESN, 64 with).
pub const MIN_WINDOW: u32 = 64;
/// Largest accepted window size.
pub const MAX_WINDOW: u32 = 4096;

const WORD_BITS: u64 = u64::BITS as u64;

/// Why a sequence number was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ReplayError {
    /// Inside the window and already received.
    #[error("sequence number already received (replay)")]
    Replayed,
    /// Outside the window: below its bottom edge, before the first sequence number of the
    /// SA (ESN inference landed below 1), or past the end of the sequence space (above
    /// 2^32-1 without ESN, above 2^64-1 with it).
    #[error("sequence number outside the anti-replay window")]
    TooOld,
    /// Sequence number 0: the first packet of an SA carries 1 (RFC 4303 §3.3.3), so 0 is
    /// valid only as the low half of an ESN number after the low 32 bits wrapped.
    #[error("sequence number 0 is never sent")]
    SeqZero,
}

/// A window size that is not a multiple of 64 in `64..=4096`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("anti-replay window size {0} is not a multiple of 64 in 64..=4096")]
pub struct WindowSizeError(pub u32);

/// Receive-side anti-replay state of one inbound SA.
#[derive(Clone)]
pub struct ReplayWindow {
    /// "W": how many sequence numbers at and below `top` are tracked.
    size: u32,
    esn: bool,
    /// "T": highest sequence number accepted; 0 while nothing has been.
    top: u64,
    /// Ring length in words minus one; the ring length is a power of two.
    mask: u64,
    bitmap: Box<[u64]>,
}

impl ReplayWindow {
    /// A window of `size` sequence numbers (a multiple of 64 in `64..=4096`) for an SA
    /// with (`esn`) or without Extended Sequence Numbers. Nothing is received yet.
    pub fn new(size: u32, esn: bool) -> Result<Self, WindowSizeError> {
        if !(MIN_WINDOW..=MAX_WINDOW).contains(&size) || !size.is_multiple_of(64) {
            return Err(WindowSizeError(size));
        }
        // One word more than the window so the partly valid oldest word and the partly
        // filled newest word never share a slot; a power of two so the index is a mask.
        let words = (size / 64 + 1).next_power_of_two();
        Ok(Self {
            size,
            esn,
            top: 0,
            mask: u64::from(words - 1),
            bitmap: vec![0; words as usize].into_boxed_slice(),
        })
    }

    /// Window size "W".
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Whether the SA uses Extended Sequence Numbers.
    pub fn esn(&self) -> bool {
        self.esn
    }

    /// Highest sequence number accepted so far (64-bit when ESN); 0 before the first.
    pub fn top(&self) -> u64 {
        self.top
    }

    /// Before integrity check: is the 32-bit wire sequence acceptable? Returns the full
    /// (ESN-inferred) 64-bit sequence number to feed into the ICV (seq_hi) — does NOT
    /// mark it.
    pub fn check(&self, seq_lo: u32) -> Result<u64, ReplayError> {
        let seq = if self.esn {
            self.infer_esn(seq_lo)?
        } else {
            u64::from(seq_lo)
        };
        self.check_full(seq)?;
        Ok(seq)
    }

    /// After the ICV verified: mark `seq` as received, sliding the window. Re-checks (a
    /// batch may hold the same sequence twice) and returns `Err(Replayed)` if it was
    /// already marked.
    pub fn accept(&mut self, seq: u64) -> Result<(), ReplayError> {
        if !self.esn && seq > u64::from(u32::MAX) {
            return Err(ReplayError::TooOld);
        }
        self.check_full(seq)?;
        if seq > self.top {
            self.advance(seq);
        }
        let (word, bit) = self.position(seq);
        self.bitmap[word] |= bit;
        Ok(())
    }

    /// Appendix A2.2: choose Seqh so that the full number falls in the 2^32 sequence
    /// numbers starting at the window's bottom `T-W+1`.
    fn infer_esn(&self, seq_lo: u32) -> Result<u64, ReplayError> {
        let top_lo = self.top as u32; // Tl: the low half, truncation intended
        let top_hi = self.top >> 32; // Th
        let bottom_lo = top_lo.wrapping_sub(self.size - 1); // Bl = Tl - W + 1
        let seq_hi = if top_lo >= self.size - 1 {
            // Case A: the window lies within one 2^32 subspace.
            if seq_lo >= bottom_lo {
                top_hi
            } else {
                top_hi + 1
            }
        } else if seq_lo >= bottom_lo {
            // Case B, the window spans two subspaces; this number is in the lower one,
            // which does not exist while Th is 0.
            top_hi.checked_sub(1).ok_or(ReplayError::TooOld)?
        } else {
            top_hi
        };
        if seq_hi > u64::from(u32::MAX) {
            // The 64-bit counter would cycle; the sender must have rekeyed long before.
            return Err(ReplayError::TooOld);
        }
        Ok(seq_hi << 32 | u64::from(seq_lo))
    }

    /// The window test on a full sequence number, without marking.
    fn check_full(&self, seq: u64) -> Result<(), ReplayError> {
        if seq == 0 {
            return Err(ReplayError::SeqZero);
        }
        if seq > self.top {
            return Ok(());
        }
        if self.top - seq >= u64::from(self.size) {
            return Err(ReplayError::TooOld);
        }
        let (word, bit) = self.position(seq);
        if self.bitmap[word] & bit != 0 {
            return Err(ReplayError::Replayed);
        }
        Ok(())
    }

    /// Move `top` up to `seq`, zeroing the ring words entered on the way: they hold
    /// sequence numbers a whole ring below, all under the new bottom edge.
    fn advance(&mut self, seq: u64) {
        let old_word = self.top / WORD_BITS;
        let new_word = seq / WORD_BITS;
        if new_word - old_word > self.mask {
            self.bitmap.fill(0);
        } else {
            for w in old_word + 1..=new_word {
                self.bitmap[(w & self.mask) as usize] = 0;
            }
        }
        self.top = seq;
    }

    /// Ring word index and bit mask of `seq`.
    fn position(&self, seq: u64) -> (usize, u64) {
        (
            ((seq / WORD_BITS) & self.mask) as usize,
            1 << (seq % WORD_BITS),
        )
    }
}

impl fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("size", &self.size)
            .field("esn", &self.esn)
            .field("top", &self.top)
            .field("ring_words", &self.bitmap.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use ReplayError::{Replayed, SeqZero, TooOld};

    const TWO32: u64 = 1 << 32;

    fn window(size: u32, esn: bool) -> ReplayWindow {
        ReplayWindow::new(size, esn).unwrap()
    }

    /// Accept a full sequence number, as after a verified ICV.
    fn take(w: &mut ReplayWindow, seq: u64) {
        w.accept(seq).unwrap();
    }

    /// Check the wire value and, if acceptable, accept it.
    fn receive(w: &mut ReplayWindow, seq_lo: u32) -> Result<u64, ReplayError> {
        let seq = w.check(seq_lo)?;
        w.accept(seq)?;
        Ok(seq)
    }

    #[test]
    fn window_sizes() {
        for bad in [0, 1, 32, 63, 65, 100, 4095, 4097, 4160, u32::MAX] {
            assert_eq!(
                ReplayWindow::new(bad, false).unwrap_err(),
                WindowSizeError(bad)
            );
        }
        for good in (64..=4096).step_by(64) {
            let w = window(good, true);
            assert_eq!((w.size(), w.esn(), w.top()), (good, true, 0));
        }
        assert_eq!(window(DEFAULT_WINDOW, false).size(), 1024);
    }

    #[test]
    fn first_packet_and_zero() {
        for esn in [false, true] {
            let mut w = window(64, esn);
            assert_eq!(w.check(0), Err(SeqZero));
            assert_eq!(w.accept(0), Err(SeqZero));
            assert_eq!(receive(&mut w, 1), Ok(1));
            assert_eq!(w.top(), 1);
            assert_eq!(w.check(1), Err(Replayed));
            assert_eq!(w.check(0), Err(SeqZero));
        }
    }

    #[test]
    fn check_does_not_mark_and_accept_rechecks() {
        let mut w = window(64, false);
        assert_eq!(w.check(7), Ok(7));
        assert_eq!(w.check(7), Ok(7));
        assert_eq!(w.accept(7), Ok(()));
        // The same sequence twice in one batch: both passed `check`, only one goes in.
        assert_eq!(w.accept(7), Err(Replayed));
        assert_eq!(w.top(), 7);
    }

    #[test]
    fn exact_window_edges() {
        for size in [64, 128, 192, 1024, 4032, 4096] {
            for esn in [false, true] {
                let mut w = window(size, esn);
                let top = 10_000;
                take(&mut w, top);
                let bottom = top - u64::from(size) + 1;
                assert_eq!(w.check(bottom as u32), Ok(bottom), "size {size}");
                // Without ESN one below the window is too old; with ESN its low 32 bits
                // are inferred as the next subspace (A2.2 case A), so only the full
                // number is refused.
                let below = w.check((bottom - 1) as u32);
                if esn {
                    assert_eq!(below, Ok(TWO32 + bottom - 1), "size {size}");
                } else {
                    assert_eq!(below, Err(TooOld), "size {size}");
                }
                assert_eq!(w.accept(bottom - 1), Err(TooOld));
                take(&mut w, bottom);
                assert_eq!(w.check(bottom as u32), Err(Replayed));
                // One step up pushes the old bottom out.
                take(&mut w, top + 1);
                assert_eq!(w.accept(bottom), Err(TooOld));
                assert_eq!(w.check((bottom + 1) as u32), Ok(bottom + 1));
            }
        }
    }

    #[test]
    fn edges_while_top_is_below_window() {
        let mut w = window(64, false);
        take(&mut w, 64);
        assert_eq!(w.check(1), Ok(1)); // 64 - 64 + 1
        take(&mut w, 65);
        assert_eq!(w.check(1), Err(TooOld));
        assert_eq!(w.check(2), Ok(2));
    }

    #[test]
    fn jump_clears_stale_bits() {
        let size = 256;
        let mut w = window(size, false);
        for s in 1..=1000 {
            take(&mut w, s);
        }
        // Jumps of every length up to past the ring: numbers inside the new window that
        // were never received must not look received.
        let mut top = 1000u64;
        for jump in 1..=600u64 {
            top += jump;
            take(&mut w, top);
            let lowest = top + 1 - u64::from(size);
            for s in lowest.max(top - jump + 1)..top {
                assert_eq!(w.check(s as u32), Ok(s), "jump {jump} seq {s}");
            }
            assert_eq!(w.check(top as u32), Err(Replayed));
        }
    }

    #[test]
    fn non_esn_end_of_sequence_space() {
        let mut w = window(64, false);
        take(&mut w, u64::from(u32::MAX));
        assert_eq!(w.check(0), Err(SeqZero));
        assert_eq!(w.check(1), Err(TooOld));
        assert_eq!(w.check(u32::MAX - 1), Ok(u64::from(u32::MAX) - 1));
        assert_eq!(w.accept(TWO32), Err(TooOld));
        assert_eq!(w.top(), u64::from(u32::MAX));
    }

    /// RFC 4303 A2.2 Case A (Tl >= W-1): the window sits inside one subspace, Seqh is Th
    /// for Seql >= Bl and Th+1 below it.
    #[test]
    fn esn_case_a() {
        let mut w = window(64, true);
        let top = TWO32 + 0x100; // Th = 1, Tl = 0x100
        take(&mut w, top);
        let bl = 0x100 - 63; // Bl = Tl - W + 1
        assert_eq!(w.check(bl), Ok(TWO32 + u64::from(bl)));
        assert_eq!(w.check(0x100), Err(Replayed));
        assert_eq!(w.check(0x101), Ok(TWO32 + 0x101));
        assert_eq!(w.check(u32::MAX), Ok(TWO32 + u64::from(u32::MAX)));
        // Below Bl: the next subspace, far ahead.
        assert_eq!(w.check(bl - 1), Ok(2 * TWO32 + u64::from(bl - 1)));
        assert_eq!(w.check(0), Ok(2 * TWO32));
        // Tl exactly W-1 is still case A, with Bl = 0.
        let mut w = window(64, true);
        take(&mut w, TWO32 + 63);
        assert_eq!(w.check(0), Ok(TWO32));
        assert_eq!(w.check(1), Ok(TWO32 + 1));
    }

    /// RFC 4303 A2.2 Case B (Tl < W-1): the window spans the previous subspace, Seqh is
    /// Th-1 for Seql >= Bl and Th below it.
    #[test]
    fn esn_case_b() {
        let mut w = window(64, true);
        let top = TWO32 + 0x10; // Th = 1, Tl = 16
        take(&mut w, top);
        let bl = 0x10u32.wrapping_sub(63); // 0xFFFF_FFD1
        assert_eq!(w.check(bl), Ok(u64::from(bl))); // Th - 1: bottom edge, in window
        assert_eq!(w.check(u32::MAX), Ok(u64::from(u32::MAX)));
        assert_eq!(w.check(0), Ok(TWO32)); // seq_lo 0 is fine past the wrap
        assert_eq!(w.check(0x10), Err(Replayed));
        assert_eq!(w.check(0x11), Ok(TWO32 + 0x11));
        // Just under Bl: not the old subspace but far ahead in this one.
        assert_eq!(w.check(bl - 1), Ok(TWO32 + u64::from(bl - 1)));
        // Case B while Th = 0: the "previous subspace" does not exist.
        let mut w = window(64, true);
        take(&mut w, 5);
        assert_eq!(w.check(u32::MAX), Err(TooOld));
        assert_eq!(w.check(0), Err(SeqZero));
        assert_eq!(w.check(3), Ok(3));
    }

    #[test]
    fn esn_rollover_in_order_and_late() {
        let mut w = window(128, true);
        take(&mut w, 0xFFFF_FF00);
        for lo in 0xFFFF_FFC0u32..=u32::MAX {
            if lo % 3 != 0 {
                receive(&mut w, lo).unwrap();
            }
        }
        for lo in 0..64u32 {
            assert_eq!(receive(&mut w, lo), Ok(TWO32 + u64::from(lo)));
        }
        assert_eq!(w.top(), TWO32 + 63);
        // Late packets from before the wrap (those skipped above: lo % 3 == 0) are still
        // placed in subspace 0; the bottom edge is 2^32 + 63 - 127 = 0xFFFF_FFC0.
        assert_eq!(w.check(u32::MAX), Ok(u64::from(u32::MAX)));
        assert_eq!(w.check(u32::MAX - 1), Err(Replayed));
        assert_eq!(w.check(0xFFFF_FFC0), Ok(0xFFFF_FFC0));
        // One below Bl is not "too old" but inferred a whole subspace ahead.
        assert_eq!(w.check(0xFFFF_FFBF), Ok(TWO32 + 0xFFFF_FFBF));
    }

    #[test]
    fn esn_end_of_sequence_space() {
        let mut w = window(64, true);
        take(&mut w, u64::MAX - 1);
        assert_eq!(w.check(u32::MAX), Ok(u64::MAX));
        assert_eq!(w.check(0), Err(TooOld)); // would be 2^64
        take(&mut w, u64::MAX);
        assert_eq!(w.check(u32::MAX), Err(Replayed));
        assert_eq!(w.check(u32::MAX - 63), Ok(u64::MAX - 63)); // bottom edge
        assert_eq!(w.check(u32::MAX - 64), Err(TooOld)); // would be 2^64 + ..
        assert_eq!(w.accept(u64::MAX), Err(Replayed));
        assert_eq!(w.accept(u64::MAX - 64), Err(TooOld));
    }

    // ---- model -------------------------------------------------------------------

    /// The RFC's rules written naively: every accepted number in a set, no bitmap.
    struct Model {
        size: u64,
        esn: bool,
        top: u64,
        seen: HashSet<u64>,
    }

    impl Model {
        fn new(size: u32, esn: bool) -> Self {
            Model {
                size: u64::from(size),
                esn,
                top: 0,
                seen: HashSet::new(),
            }
        }

        /// ESN: the one number with these low 32 bits among the 2^32 numbers that start
        /// at the window bottom T-W+1 (which A2.2's two cases spell out).
        fn full(&self, seq_lo: u32) -> Result<u64, ReplayError> {
            if !self.esn {
                return Ok(u64::from(seq_lo));
            }
            let bottom = i128::from(self.top) - i128::from(self.size) + 1;
            let offset = (i128::from(seq_lo) - bottom).rem_euclid(1 << 32);
            let seq = bottom + offset;
            match u64::try_from(seq) {
                Ok(s) => Ok(s),
                Err(_) => Err(TooOld),
            }
        }

        fn verdict(&self, seq: u64) -> Result<(), ReplayError> {
            if seq == 0 {
                Err(SeqZero)
            } else if !self.esn && seq > u64::from(u32::MAX) {
                Err(TooOld)
            } else if seq > self.top {
                Ok(())
            } else if seq + self.size <= self.top {
                Err(TooOld)
            } else if self.seen.contains(&seq) {
                Err(Replayed)
            } else {
                Ok(())
            }
        }

        fn check(&self, seq_lo: u32) -> Result<u64, ReplayError> {
            let seq = self.full(seq_lo)?;
            self.verdict(seq).map(|()| seq)
        }

        fn accept(&mut self, seq: u64) -> Result<(), ReplayError> {
            self.verdict(seq)?;
            self.seen.insert(seq);
            self.top = self.top.max(seq);
            Ok(())
        }
    }

    /// What the receiver is fed; the wire value is `top_lo + delta` (wrapping), so
    /// "behind" and "ahead" stay meaningful as the window moves.
    #[derive(Debug, Clone, Copy)]
    enum Op {
        /// Check, and accept what passes (ICV good).
        Receive(u32),
        /// Check only (ICV bad): must change nothing.
        Forged(u32),
        /// Check, then accept twice (the same packet twice in one batch).
        Twice(u32),
    }

    fn run(size: u32, esn: bool, ops: &[Op]) {
        let mut w = window(size, esn);
        let mut m = Model::new(size, esn);
        for (i, op) in ops.iter().enumerate() {
            let (Op::Receive(d) | Op::Forged(d) | Op::Twice(d)) = *op;
            let seq_lo = (w.top() as u32).wrapping_add(d);
            let got = w.check(seq_lo);
            assert_eq!(got, m.check(seq_lo), "op {i} {op:?} top {:#x}", m.top);
            if let Ok(seq) = got {
                let times = match op {
                    Op::Receive(_) => 1,
                    Op::Forged(_) => 0,
                    Op::Twice(_) => 2,
                };
                for _ in 0..times {
                    assert_eq!(w.accept(seq), m.accept(seq), "op {i} {op:?}");
                }
            }
            assert_eq!(w.top(), m.top, "op {i} {op:?}");
        }
        // Finally every number in and just below the window agrees.
        let low = m.top.saturating_sub(m.size + 64);
        for seq in low..=m.top.saturating_add(64) {
            assert_eq!(
                w.check(seq as u32),
                m.check(seq as u32),
                "final seq {seq:#x}"
            );
        }
    }

    /// Offsets from the current top's low 32 bits: mostly near the window, sometimes far.
    fn delta(size: u32) -> impl Strategy<Value = u32> {
        let span = size + 128;
        prop_oneof![
            4 => 1..=192u32,                                        // ahead, in order-ish
            4 => (0..=span).prop_map(|b| 0u32.wrapping_sub(b)),     // behind: dups, edges
            1 => any::<u32>(),                                      // far jumps, wraps
            1 => (0..=span).prop_map(|b| (1u32 << 31).wrapping_sub(b)),
        ]
    }

    fn ops(size: u32) -> impl Strategy<Value = Vec<Op>> {
        let op = delta(size).prop_flat_map(|d| {
            prop_oneof![
                8 => Just(Op::Receive(d)),
                1 => Just(Op::Forged(d)),
                1 => Just(Op::Twice(d)),
            ]
        });
        prop::collection::vec(op, 1..400)
    }

    fn sized_ops() -> impl Strategy<Value = (u32, bool, Vec<Op>)> {
        (1u32..=64, any::<bool>()).prop_flat_map(|(k, esn)| (Just(k * 64), Just(esn), ops(k * 64)))
    }

    proptest! {
        #[test]
        fn matches_model((size, esn, ops) in sized_ops()) {
            run(size, esn, &ops);
        }
    }

    /// Every allowed size, ESN on and off, with a fixed-seed random walk.
    #[test]
    fn every_window_size_matches_model() {
        let mut rng = StdRng::seed_from_u64(4303);
        for size in (64..=4096).step_by(64) {
            for esn in [false, true] {
                let span = size + 128;
                let ops: Vec<Op> = (0..600)
                    .map(|_| {
                        let d = match rng.random_range(0..10) {
                            0..4 => rng.random_range(1..=192),
                            4..8 => 0u32.wrapping_sub(rng.random_range(0..=span)),
                            8 => rng.random(),
                            _ => (1u32 << 31).wrapping_sub(rng.random_range(0..=span)),
                        };
                        match rng.random_range(0..10) {
                            0 => Op::Forged(d),
                            1 => Op::Twice(d),
                            _ => Op::Receive(d),
                        }
                    })
                    .collect();
                run(size, esn, &ops);
            }
        }
    }

    #[test]
    fn debug_is_short() {
        let s = format!("{:?}", window(1024, true));
        assert!(s.contains("size: 1024") && s.contains("esn: true"), "{s}");
    }
}
