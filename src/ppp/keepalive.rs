//! LCP Echo keepalives (RFC 1661 §5.8): while LCP is Opened, send an Echo-Request
//! every interval; when the configured number of them in a row went unanswered, the
//! link is considered dead ("echo timeout"), as pppd's `lcp-echo-failure` does.

use std::time::{Duration, Instant};

/// Echo-Request scheduling and the count of unanswered requests.
#[derive(Clone, Debug)]
pub struct Keepalive {
    interval: Option<Duration>,
    max_missed: u32,
    next: Option<Instant>,
    missed: u32,
}

/// What the timer asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tick {
    /// Nothing due.
    Idle,
    /// Send an Echo-Request now.
    Send,
    /// `max_missed` requests went unanswered: the link is dead.
    Dead,
}

impl Keepalive {
    /// `interval` `None` (or zero) disables keepalives.
    pub fn new(interval: Option<Duration>, max_missed: u32) -> Keepalive {
        Keepalive {
            interval: interval.filter(|d| !d.is_zero()),
            max_missed: max_missed.max(1),
            next: None,
            missed: 0,
        }
    }

    /// LCP reached Opened.
    pub fn start(&mut self, now: Instant) {
        self.missed = 0;
        self.next = self.interval.map(|i| now + i);
    }

    /// LCP left Opened, or the peer Code-Rejected Echo-Request.
    pub fn stop(&mut self) {
        self.next = None;
    }

    /// An Echo-Reply came back (or anything else proving the peer is alive).
    pub fn alive(&mut self) {
        self.missed = 0;
    }

    /// Unanswered requests so far.
    pub fn missed(&self) -> u32 {
        self.missed
    }

    /// When [`Keepalive::tick`] wants to run.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.next
    }

    /// Runs the timer.
    pub fn tick(&mut self, now: Instant) -> Tick {
        let (Some(next), Some(interval)) = (self.next, self.interval) else {
            return Tick::Idle;
        };
        if now < next {
            return Tick::Idle;
        }
        if self.missed >= self.max_missed {
            self.next = None;
            return Tick::Dead;
        }
        self.missed += 1;
        self.next = Some(now + interval);
        Tick::Send
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_unanswered_then_dead() {
        let t0 = Instant::now();
        let s = Duration::from_secs(10);
        let mut k = Keepalive::new(Some(s), 3);
        assert_eq!(k.tick(t0), Tick::Idle, "not started");
        k.start(t0);
        assert_eq!(k.tick(t0 + s / 2), Tick::Idle);
        let mut ticks = Vec::new();
        while let Some(t) = k.next_timeout() {
            ticks.push((t - t0, k.tick(t)));
        }
        assert_eq!(
            ticks,
            [
                (s, Tick::Send),
                (s * 2, Tick::Send),
                (s * 3, Tick::Send),
                (s * 4, Tick::Dead)
            ]
        );
    }

    #[test]
    fn replies_keep_it_alive_and_zero_disables() {
        let t0 = Instant::now();
        let s = Duration::from_secs(5);
        let mut k = Keepalive::new(Some(s), 2);
        k.start(t0);
        for i in 1..10 {
            assert_eq!(k.tick(t0 + s * i), Tick::Send);
            k.alive();
        }
        let mut off = Keepalive::new(Some(Duration::ZERO), 2);
        off.start(t0);
        assert_eq!(off.next_timeout(), None);
    }
}
