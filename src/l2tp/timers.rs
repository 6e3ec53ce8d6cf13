//! Deadlines of many tunnels in one binary heap.
//!
//! Each tunnel knows its own next deadline; the heap holds one live entry per tunnel
//! (the one matching the deadline remembered in the tunnel as `scheduled`) plus stale
//! ones left behind when a deadline moved, which are dropped when they reach the top
//! and compacted away if they pile up. `next_timeout` is O(1) and exact, a due tunnel
//! costs O(log n), and an idle tunnel costs one entry for its HELLO timer.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// A min-heap of (deadline, key).
#[derive(Debug)]
pub(crate) struct Timers<K: Ord + Copy> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
}

impl<K: Ord + Copy> Timers<K> {
    pub(crate) fn new() -> Timers<K> {
        Timers {
            heap: BinaryHeap::new(),
        }
    }

    /// Makes `deadline` the live entry of `key` (`scheduled` remembers it; the entry
    /// it replaces goes stale).
    pub(crate) fn schedule(
        &mut self,
        key: K,
        deadline: Option<Instant>,
        scheduled: &mut Option<Instant>,
    ) {
        if *scheduled == deadline {
            return;
        }
        *scheduled = deadline;
        if let Some(deadline) = deadline {
            self.heap.push(Reverse((deadline, key)));
        }
    }

    /// The earliest queued instant (exact after [`Timers::purge`]).
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns every entry due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Vec<(Instant, K)> {
        let mut due = Vec::new();
        while let Some(Reverse((at, key))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            due.push((at, key));
        }
        due
    }

    /// Pops stale entries off the top (`live(key, at)` is false for them), so that
    /// [`Timers::next`] is exact.
    pub(crate) fn purge(&mut self, live: impl Fn(K, Instant) -> bool) {
        while let Some(Reverse((at, key))) = self.heap.peek().copied() {
            if live(key, at) {
                break;
            }
            self.heap.pop();
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Rebuilds the heap from the live entries only.
    pub(crate) fn rebuild(&mut self, live: impl Iterator<Item = (K, Instant)>) {
        self.heap = live.map(|(key, at)| Reverse((at, key))).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn live_entries_and_stale_ones() {
        let base = Instant::now();
        let at = |s| Some(base + Duration::from_secs(s));
        let mut timers = Timers::new();
        let (mut a, mut b) = (None, None);
        timers.schedule(1u16, at(1), &mut a);
        timers.schedule(1u16, at(1), &mut a); // unchanged: nothing queued
        assert_eq!(timers.len(), 1);
        timers.schedule(1u16, at(60), &mut a); // moved later: the 1 s entry goes stale
        timers.schedule(2u16, at(5), &mut b);
        assert_eq!((a, b), (at(60), at(5)));
        assert_eq!(timers.next(), at(1));
        timers.purge(|key, t| Some(t) == if key == 1 { a } else { b });
        assert_eq!(timers.next(), at(5), "exact after purge");
        let due = timers.pop_due(base + Duration::from_secs(5));
        assert_eq!(due.iter().map(|(_, k)| *k).collect::<Vec<_>>(), [2]);
        timers.schedule(2u16, None, &mut b);
        assert_eq!((timers.len(), b), (1, None));
        timers.rebuild(std::iter::empty());
        assert_eq!(timers.next(), None);
    }
}
