//! The responder's clock: half-open and Quick Mode expiry, lifetimes, DPD (RFC 3706,
//! on demand), and the polite shutdown.

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use super::super::informational;
use super::{Cookies, Responder, Timer};

impl Responder {
    /// Runs due timers: half-open expiry, lifetimes, DPD.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((t, timer))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            match timer {
                Timer::Half(c) => {
                    if self.half.get(&c).is_some_and(|h| h.expires <= now) {
                        self.drop_half(c);
                    }
                }
                Timer::Child(spi) => self.child_timer(now, spi),
                Timer::Ike(c) => self.ike_timer(now, c),
                Timer::Rekey(spi) => self.start_rekey(now, spi),
                Timer::Reauth(c) => self.start_reauth(now, c),
                Timer::ReauthResend(cky) => self.resend_reauth(now, cky),
                Timer::QmResend(c, mid) => self.resend_qm1(now, c, mid),
                Timer::Activate(spi) => {
                    if self.children.get(&spi).is_some_and(|c| !c.active) {
                        self.activate(spi);
                    }
                }
            }
        }
    }

    fn child_timer(&mut self, now: Instant, spi: u32) {
        let Some(c) = self.children.get(&spi) else {
            return;
        };
        if !c.active {
            // QM3 never came within the exchange timeout (or the lifetime).
            if let Some(ike) = self.ikes.get_mut(&c.ike) {
                ike.pending_qm.retain(|_, (_, s)| *s != spi);
            }
            self.remove_child(spi, "quick mode not completed");
        } else if c.expires <= now {
            self.remove_child(spi, "lifetime expired");
        }
    }

    fn ike_timer(&mut self, now: Instant, cookies: Cookies) {
        let Some(ike) = self.ikes.get_mut(&cookies) else {
            return;
        };
        if ike.expires <= now {
            tracing::info!(peer = %ike.peer, "IKE SA expired");
            if let Ok(m) = informational::delete_ike(&ike.p1) {
                let (w, p, l) = (ike.worker, ike.peer, ike.local);
                self.send(w, p, l, m);
            }
            self.remove_ike(cookies, false, "ike expired");
            return;
        }
        let Some(interval) = self.cfg.dpd_interval else {
            return;
        };
        if !ike.p1.peer_dpd {
            return;
        }
        let idle = now.saturating_duration_since(ike.last_heard);
        let mut next = ike.last_heard + interval;
        if idle >= interval {
            let since = *ike.dpd.asked_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= interval * 3 / 2 {
                let peer = ike.peer;
                tracing::warn!(peer = %peer, "peer dead (DPD): removing its SAs");
                self.stats.dpd_dead += 1;
                let key = (peer, ike.p1.peer_id.data.clone());
                let all = self
                    .peers
                    .get(&key)
                    .map(|p| p.ikes.clone())
                    .unwrap_or_default();
                for c in all {
                    self.remove_ike(c, true, "peer dead (DPD)");
                }
                let orphans = self
                    .peers
                    .get(&key)
                    .map(|p| p.children.clone())
                    .unwrap_or_default();
                for s in orphans {
                    self.remove_child(s, "peer dead (DPD)");
                }
                return;
            }
            if ike.dpd.last_asked + interval / 2 <= now || ike.dpd.last_asked < since {
                ike.dpd.seq = ike.dpd.seq.wrapping_add(1);
                ike.dpd.last_asked = now;
                if let Ok(m) = informational::dpd(&ike.p1, false, ike.dpd.seq) {
                    let (w, p, l) = (ike.worker, ike.peer, ike.local);
                    self.send(w, p, l, m);
                }
            }
            next = (now + interval / 2).min(since + interval * 3 / 2);
        }
        self.timers.push(Reverse((
            next.max(now + Duration::from_millis(100)),
            Timer::Ike(cookies),
        )));
    }

    /// Deletes everything politely (shutdown): ESP deletes and the ISAKMP delete to
    /// every peer, and a `Remove` per pair.
    pub fn shutdown(&mut self) {
        let all: Vec<Cookies> = self.ikes.keys().copied().collect();
        for c in all {
            let mut out = Vec::new();
            if let Some(ike) = self.ikes.get(&c) {
                let spis: Vec<u32> = self
                    .children
                    .iter()
                    .filter(|(_, ch)| ch.ike == c)
                    .map(|(s, _)| *s)
                    .collect();
                let (w, p, l) = (ike.worker, ike.peer, ike.local);
                if !spis.is_empty()
                    && let Ok(m) = informational::delete_esp(&ike.p1, &spis)
                {
                    out.push((w, p, l, m));
                }
                if let Ok(m) = informational::delete_ike(&ike.p1) {
                    out.push((w, p, l, m));
                }
            }
            for (w, p, l, m) in out {
                self.send(w, p, l, m);
            }
            self.remove_ike(c, true, "gateway shutdown");
        }
        let rest: Vec<u32> = self.children.keys().copied().collect();
        for s in rest {
            self.remove_child(s, "gateway shutdown");
        }
    }
}
