//! Reliable delivery of control messages (RFC 2661 §5.8).
//!
//! Every message but a ZLB carries Ns, numbered from 0 per control connection; every
//! message carries Nr, the next Ns expected from the peer, which acknowledges all
//! before it. This channel keeps the unacknowledged messages (at most the peer's
//! Receive Window Size in flight, the rest queued), retransmits them with exponential
//! backoff, delivers received messages in order (holding those that arrive early but
//! within our window), drops duplicates and re-acknowledges them at once with a ZLB,
//! and acknowledges with a ZLB after `ack_delay` when no message of ours carried the
//! Nr in the meantime. Sequence numbers compare modulo 2^16.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::wire::l2tp::{Packet, Sequence};

use super::build::zlb;
use super::config::Retransmit;
use super::stats::Stats;

/// One of our messages not yet acknowledged.
#[derive(Debug)]
struct Outgoing {
    ns: u16,
    bytes: Vec<u8>,
    sent: bool,
}

/// The peer stopped acknowledging: retries are exhausted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exhausted;

/// The reliable control channel of one tunnel.
#[derive(Debug)]
pub(crate) struct Channel {
    peer_tunnel_id: u16,
    next_ns: u16,
    /// Unacknowledged messages in Ns order; the sent ones form a prefix.
    outstanding: VecDeque<Outgoing>,
    peer_window: u16,
    /// Next Ns expected from the peer (our Nr).
    nr: u16,
    window: u16,
    /// Messages received ahead of `nr`, within our window.
    early: Vec<(u16, Vec<u8>)>,
    retries: u32,
    retransmit_at: Option<Instant>,
    ack_at: Option<Instant>,
}

/// Sets Ns/Nr in a message we built (it always has the sequence fields).
fn stamp(bytes: &mut [u8], ns: u16, nr: u16) {
    // Cannot fail: the builder emits control headers with the S bit.
    let _ = Packet::new_unchecked(bytes).set_sequence(Sequence { ns, nr });
}

impl Channel {
    /// A channel advertising receive window `window`; the peer's window is 4 until
    /// it tells otherwise (§4.4.3).
    pub(crate) fn new(window: u16) -> Channel {
        Channel {
            peer_tunnel_id: 0,
            next_ns: 0,
            outstanding: VecDeque::new(),
            peer_window: 4,
            nr: 0,
            window: window.max(1),
            early: Vec::new(),
            retries: 0,
            retransmit_at: None,
            ack_at: None,
        }
    }

    /// The tunnel id ZLBs are addressed to.
    pub(crate) fn set_peer_tunnel_id(&mut self, id: u16) {
        self.peer_tunnel_id = id;
    }

    /// The peer's Receive Window Size (0 is taken as 1).
    pub(crate) fn set_peer_window(&mut self, window: u16) {
        self.peer_window = window.max(1);
    }

    /// Next Ns expected from the peer.
    #[cfg(test)]
    pub(crate) fn nr(&self) -> u16 {
        self.nr
    }

    /// Whether every message we sent has been acknowledged.
    pub(crate) fn is_idle(&self) -> bool {
        self.outstanding.is_empty()
    }

    /// Queues `bytes` (a built message) with the next Ns and sends it if the peer's
    /// window has room.
    pub(crate) fn send(
        &mut self,
        now: Instant,
        bytes: Vec<u8>,
        rt: &Retransmit,
        out: &mut Vec<Vec<u8>>,
        stats: &mut Stats,
    ) {
        self.outstanding.push_back(Outgoing {
            ns: self.next_ns,
            bytes,
            sent: false,
        });
        self.next_ns = self.next_ns.wrapping_add(1);
        self.pump(now, rt, out, stats);
    }

    /// Sends the queued messages the peer's window admits.
    fn pump(&mut self, now: Instant, rt: &Retransmit, out: &mut Vec<Vec<u8>>, stats: &mut Stats) {
        let nr = self.nr;
        let mut sent_any = false;
        let window = usize::from(self.peer_window);
        for message in self.outstanding.iter_mut().take(window).filter(|m| !m.sent) {
            stamp(&mut message.bytes, message.ns, nr);
            out.push(message.bytes.clone());
            message.sent = true;
            sent_any = true;
            stats.messages_out += 1;
        }
        if sent_any {
            self.ack_at = None;
            if self.retransmit_at.is_none() {
                self.retransmit_at = Some(now + rt.timeout(self.retries));
            }
        }
    }

    /// Takes the peer's Nr: drops what it acknowledges and opens the window.
    fn acknowledge(
        &mut self,
        now: Instant,
        nr: u16,
        rt: &Retransmit,
        out: &mut Vec<Vec<u8>>,
        stats: &mut Stats,
    ) {
        let oldest = self.outstanding.front().map_or(self.next_ns, |m| m.ns);
        let acked = usize::from(nr.wrapping_sub(oldest));
        let in_flight = self.outstanding.iter().take_while(|m| m.sent).count();
        if acked > in_flight {
            stats.bad_nr += 1;
            return;
        }
        if acked == 0 {
            return;
        }
        self.outstanding.drain(..acked);
        self.retries = 0;
        self.retransmit_at = None;
        self.pump(now, rt, out, stats);
        if self.retransmit_at.is_none() && self.outstanding.front().is_some_and(|m| m.sent) {
            self.retransmit_at = Some(now + rt.timeout(0));
        }
    }

    /// Takes a received message with sequence numbers `ns`/`nr` (`zlb`: it has no
    /// AVPs and only acknowledges). Returns the messages now deliverable, in order.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn receive(
        &mut self,
        now: Instant,
        sequence: Sequence,
        bytes: &[u8],
        zlb: bool,
        rt: &Retransmit,
        ack_delay: Duration,
        out: &mut Vec<Vec<u8>>,
        stats: &mut Stats,
    ) -> Vec<Vec<u8>> {
        self.acknowledge(now, sequence.nr, rt, out, stats);
        let mut delivered = Vec::new();
        if zlb {
            return delivered;
        }
        let ahead = sequence.ns.wrapping_sub(self.nr);
        if ahead == 0 {
            delivered.push(bytes.to_vec());
            self.nr = self.nr.wrapping_add(1);
            while let Some(at) = self.early.iter().position(|(ns, _)| *ns == self.nr) {
                delivered.push(self.early.swap_remove(at).1);
                self.nr = self.nr.wrapping_add(1);
            }
            self.ack_at.get_or_insert(now + ack_delay);
        } else if ahead >= 0x8000 {
            // Ns before the expected one: a retransmission of something we have.
            stats.duplicates += 1;
            self.ack_at = Some(now);
        } else if ahead < self.window {
            if !self.early.iter().any(|(ns, _)| *ns == sequence.ns) {
                self.early.push((sequence.ns, bytes.to_vec()));
                stats.reordered += 1;
            }
        } else {
            stats.out_of_window += 1;
        }
        delivered
    }

    /// Forgets our unacknowledged messages: the peer has stopped the connection.
    pub(crate) fn abandon(&mut self) {
        self.outstanding.clear();
        self.retransmit_at = None;
        self.retries = 0;
    }

    /// Makes the acknowledgement due now (a StopCCN is acknowledged at once, §5.7).
    pub(crate) fn ack_now(&mut self, now: Instant) {
        self.ack_at = Some(now);
    }

    /// Does what is due at `now`: retransmissions, then a ZLB if an acknowledgement
    /// is still owed. `Err` when the retries are exhausted.
    pub(crate) fn poll(
        &mut self,
        now: Instant,
        rt: &Retransmit,
        out: &mut Vec<Vec<u8>>,
        stats: &mut Stats,
    ) -> Result<(), Exhausted> {
        if self.retransmit_at.is_some_and(|at| at <= now) {
            self.retries += 1;
            if self.retries > rt.max_retries {
                self.retransmit_at = None;
                return Err(Exhausted);
            }
            let nr = self.nr;
            for message in self.outstanding.iter_mut().filter(|m| m.sent) {
                stamp(&mut message.bytes, message.ns, nr);
                out.push(message.bytes.clone());
                stats.retransmits += 1;
                stats.messages_out += 1;
                self.ack_at = None;
            }
            self.retransmit_at = Some(now + rt.timeout(self.retries));
        }
        if self.ack_at.is_some_and(|at| at <= now) {
            self.ack_at = None;
            let ns = self
                .outstanding
                .iter()
                .find(|m| !m.sent)
                .map_or(self.next_ns, |m| m.ns);
            out.push(zlb(self.peer_tunnel_id, Sequence { ns, nr: self.nr }));
            stats.zlbs_sent += 1;
            stats.messages_out += 1;
        }
        Ok(())
    }

    /// When [`Channel::poll`] has something to do.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match (self.retransmit_at, self.ack_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l2tp::build::Builder;
    use crate::wire::l2tp::MessageType;

    const DELAY: Duration = Duration::from_millis(200);

    fn hello(tunnel: u16) -> Vec<u8> {
        Builder::new(MessageType::Hello).finish(tunnel, 0).unwrap()
    }

    fn seq(bytes: &[u8]) -> (u16, u16, bool) {
        let p = Packet::new_checked(bytes).unwrap();
        (p.ns().unwrap(), p.nr().unwrap(), p.is_zlb())
    }

    fn sequence(bytes: &[u8]) -> Sequence {
        let (ns, nr, _) = seq(bytes);
        Sequence { ns, nr }
    }

    struct Pair {
        a: Channel,
        b: Channel,
        rt: Retransmit,
        stats: Stats,
        now: Instant,
    }

    impl Pair {
        fn new() -> Pair {
            let mut a = Channel::new(4);
            let mut b = Channel::new(4);
            a.set_peer_tunnel_id(2);
            b.set_peer_tunnel_id(1);
            Pair {
                a,
                b,
                rt: Retransmit::default(),
                stats: Stats::default(),
                now: Instant::now(),
            }
        }

        fn a_to_b(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
            let (_, _, zlb) = seq(bytes);
            let mut out = Vec::new();
            self.b.receive(
                self.now,
                sequence(bytes),
                bytes,
                zlb,
                &self.rt,
                DELAY,
                &mut out,
                &mut self.stats,
            )
        }
    }

    #[test]
    fn window_limits_flight_and_acks_open_it() {
        let mut p = Pair::new();
        let mut out = Vec::new();
        for _ in 0..6 {
            p.a.send(p.now, hello(2), &p.rt, &mut out, &mut p.stats);
        }
        assert_eq!(
            out.iter().map(|m| seq(m).0).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        for m in &out {
            assert_eq!(p.a_to_b(m).len(), 1);
        }
        assert_eq!(p.b.nr(), 4);
        // b owes an ack: a ZLB after the delay, not before.
        let mut zlbs = Vec::new();
        p.b.poll(p.now, &p.rt, &mut zlbs, &mut p.stats).unwrap();
        assert!(zlbs.is_empty());
        assert_eq!(p.b.deadline(), Some(p.now + DELAY));
        p.now += DELAY;
        p.b.poll(p.now, &p.rt, &mut zlbs, &mut p.stats).unwrap();
        assert_eq!(zlbs.len(), 1);
        assert_eq!(seq(&zlbs[0]), (0, 4, true));
        let mut more = Vec::new();
        let zlb = zlbs[0].clone();
        p.a.receive(
            p.now,
            sequence(&zlb),
            &zlb,
            true,
            &p.rt,
            DELAY,
            &mut more,
            &mut p.stats,
        );
        assert_eq!(more.iter().map(|m| seq(m).0).collect::<Vec<_>>(), [4, 5]);
        assert_eq!(seq(&more[0]).1, 0, "a has received nothing from b");
    }

    #[test]
    fn backoff_then_exhaustion() {
        let mut p = Pair::new();
        let mut out = Vec::new();
        let start = p.now;
        p.a.send(p.now, hello(2), &p.rt, &mut out, &mut p.stats);
        let mut at = Vec::new();
        while let Some(deadline) = p.a.deadline() {
            p.now = deadline;
            out.clear();
            if p.a.poll(p.now, &p.rt, &mut out, &mut p.stats).is_err() {
                break;
            }
            assert_eq!(out.len(), 1, "the message again");
            assert_eq!(seq(&out[0]).0, 0);
            at.push((p.now - start).as_secs());
        }
        assert_eq!(at, [1, 3, 7, 15, 23]);
        assert_eq!(p.now - start, Duration::from_secs(31));
        assert_eq!(p.stats.retransmits, 5);
    }

    #[test]
    fn duplicates_are_reacked_at_once_and_early_ones_held() {
        let mut p = Pair::new();
        let mut out = Vec::new();
        for _ in 0..3 {
            p.a.send(p.now, hello(2), &p.rt, &mut out, &mut p.stats);
        }
        // 2 and 1 arrive before 0: held, then delivered in order.
        assert!(p.a_to_b(&out[2]).is_empty());
        assert!(p.a_to_b(&out[1]).is_empty());
        assert!(p.a_to_b(&out[1]).is_empty()); // held twice, kept once
        let delivered = p.a_to_b(&out[0]);
        assert_eq!(
            delivered.iter().map(|m| seq(m).0).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(p.stats.reordered, 2);
        // A duplicate of 1: nothing delivered, ZLB now.
        assert!(p.a_to_b(&out[1]).is_empty());
        assert_eq!(p.stats.duplicates, 1);
        let mut zlb = Vec::new();
        p.b.poll(p.now, &p.rt, &mut zlb, &mut p.stats).unwrap();
        assert_eq!(seq(&zlb[0]), (0, 3, true));
        // Beyond the window (Ns 3 + 4 = 7): dropped.
        let mut far = hello(2);
        stamp(&mut far, 7, 0);
        assert!(p.a_to_b(&far).is_empty());
        assert_eq!(p.stats.out_of_window, 1);
    }

    #[test]
    fn piggybacked_nr_cancels_the_zlb() {
        let mut p = Pair::new();
        let mut out = Vec::new();
        p.a.send(p.now, hello(2), &p.rt, &mut out, &mut p.stats);
        p.a_to_b(&out[0]);
        let mut reply = Vec::new();
        p.b.send(p.now, hello(1), &p.rt, &mut reply, &mut p.stats);
        assert_eq!(seq(&reply[0]), (0, 1, false));
        assert_eq!(
            p.b.deadline(),
            Some(p.now + Duration::from_secs(1)),
            "only the retransmission"
        );
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut p = Pair::new();
        p.a.next_ns = 0xfffe;
        p.b.nr = 0xfffe;
        let mut out = Vec::new();
        for _ in 0..4 {
            p.a.send(p.now, hello(2), &p.rt, &mut out, &mut p.stats);
        }
        assert_eq!(
            out.iter().map(|m| seq(m).0).collect::<Vec<_>>(),
            [0xfffe, 0xffff, 0, 1]
        );
        assert_eq!(p.a_to_b(&out[3]).len(), 0);
        assert_eq!(p.a_to_b(&out[0]).len(), 1);
        assert_eq!(p.a_to_b(&out[1]).len(), 1);
        assert_eq!(p.a_to_b(&out[2]).len(), 2);
        assert_eq!(p.b.nr(), 2);
        let mut ack = Vec::new();
        p.now += DELAY;
        p.b.poll(p.now, &p.rt, &mut ack, &mut p.stats).unwrap();
        let zlb = ack[0].clone();
        p.a.receive(
            p.now,
            sequence(&zlb),
            &zlb,
            true,
            &p.rt,
            DELAY,
            &mut ack,
            &mut p.stats,
        );
        assert!(p.a.is_idle());
        // An Nr acknowledging what was never sent is ignored.
        let mut bogus = zlb.clone();
        stamp(&mut bogus, 0, 9);
        p.a.receive(
            p.now,
            sequence(&bogus),
            &bogus,
            true,
            &p.rt,
            DELAY,
            &mut ack,
            &mut p.stats,
        );
        assert_eq!(p.stats.bad_nr, 1);
    }
}
