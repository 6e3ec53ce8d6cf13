//! Phase 2 rekeys the gateway starts (RFC 2409 §5.5 with us as Quick Mode
//! initiator): at 90 % of a pair's lifetime, unless the peer already replaced it, we
//! offer the same transform, mode and selectors under a new SPI. The new pair is
//! installed as soon as QM2 verifies, so the peer's first packets on it are accepted;
//! our own traffic moves to it a moment after QM3, once the peer had time to install
//! its side. The old pair stays until the peer deletes it or it expires, so no packet
//! is lost in either direction.

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use crate::crypto::Transform as EspTransform;
use crate::wire::isakmp::Identification;

use super::super::natd::NatT;
use super::super::proposal::EncapMode;
use super::super::quick_mode::{self, ChildSa, Qm1Offer, Qm1Sent};
use super::{Action, Cookies, Datagram, Install, Responder, Timer};

/// How long our side waits after QM3 before sending on the new pair.
const SWITCH_DELAY: Duration = Duration::from_secs(1);
/// Our QM1 is resent this often, this many times.
const QM_RESEND: Duration = Duration::from_secs(2);
const QM_TRIES: u8 = 4;

/// What a rekey of a pair offers again.
#[derive(Clone, Debug)]
pub(super) struct Reoffer {
    transform: EspTransform,
    encap: EncapMode,
    lifetime: Duration,
    /// Our selector and the peer's.
    ids: Option<(Identification, Identification)>,
}

impl Reoffer {
    /// The offer that renews `child`.
    pub(super) fn of(child: &ChildSa, natt: Option<NatT>) -> Reoffer {
        let encap = if child.udp {
            EncapMode::Udp {
                mode: child.mode,
                draft: natt == Some(NatT::Draft),
            }
        } else {
            EncapMode::Plain(child.mode)
        };
        Reoffer {
            transform: child.transform,
            encap,
            lifetime: child.lifetime,
            ids: child.local_ts.clone().zip(child.peer_ts.clone()),
        }
    }
}

/// A Quick Mode we started.
pub(super) struct Initiated {
    qm: Box<Qm1Sent>,
    spi: u32,
    old: u32,
    msg: Vec<u8>,
    tries: u8,
}

impl Responder {
    /// Starts our rekey of pair `old` if it still needs one.
    pub(super) fn start_rekey(&mut self, now: Instant, old: u32) {
        let Some(c) = self.children.get(&old) else {
            return;
        };
        if !c.active || c.replaced_by.is_some() {
            return;
        }
        let (worker, cookies, offer) = (c.worker, c.ike, c.offer.clone());
        let Some(ike) = self.ikes.get(&cookies) else {
            return;
        };
        if ike.initiated.values().any(|i| i.old == old) {
            return;
        }
        let Some(spi) = self.spis.allocate(worker) else {
            return;
        };
        let q = Qm1Offer {
            transforms: vec![offer.transform],
            encap: offer.encap,
            pfs: None,
            lifetime: offer.lifetime,
            ids: offer.ids,
            natoa: None,
        };
        let Some(ike) = self.ikes.get_mut(&cookies) else {
            return;
        };
        match quick_mode::initiate(&ike.p1, q, spi) {
            Ok((qm, msg)) => {
                let mid = qm.message_id;
                tracing::info!(peer = %ike.peer, spi_in = format_args!("{old:08x}"), "IPsec SA rekey started by us");
                let (w, p, l) = (ike.worker, ike.peer, ike.local);
                ike.initiated.insert(
                    mid,
                    Initiated {
                        qm: Box::new(qm),
                        spi,
                        old,
                        msg: msg.clone(),
                        tries: 1,
                    },
                );
                self.send(w, p, l, msg);
                self.timers
                    .push(Reverse((now + QM_RESEND, Timer::QmResend(cookies, mid))));
            }
            Err(e) => {
                tracing::warn!("IPsec rekey not started: {e}");
                self.spis.release(spi);
            }
        }
    }

    /// Resends our QM1, or gives up after a few tries.
    pub(super) fn resend_qm1(&mut self, now: Instant, cookies: Cookies, mid: u32) {
        let Some(ike) = self.ikes.get_mut(&cookies) else {
            return;
        };
        let Some(init) = ike.initiated.get_mut(&mid) else {
            return;
        };
        if init.tries >= QM_TRIES {
            let spi = init.spi;
            ike.initiated.remove(&mid);
            self.spis.release(spi);
            return;
        }
        init.tries += 1;
        let (w, p, l, m) = (ike.worker, ike.peer, ike.local, init.msg.clone());
        self.stats.retransmits += 1;
        self.send(w, p, l, m);
        self.timers
            .push(Reverse((now + QM_RESEND, Timer::QmResend(cookies, mid))));
    }

    /// QM2 of a rekey we started: install the pair, answer QM3, switch a moment later.
    pub(super) fn on_qm2(&mut self, now: Instant, cookies: Cookies, mid: u32, d: Datagram<'_>) {
        let Some(ike) = self.ikes.get_mut(&cookies) else {
            return;
        };
        let Some(init) = ike.initiated.remove(&mid) else {
            return;
        };
        let result = init.qm.on_qm2(&ike.p1, d.data, &self.cfg.algs);
        let (child, qm3) = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(peer = %ike.peer, "our rekey failed: {e}");
                self.spis.release(init.spi);
                self.stats.dropped += 1;
                return;
            }
        };
        ike.last_heard = now;
        let (w, peer, local) = (ike.worker, ike.peer, ike.local);
        let peer_id = ike.p1.peer_id.data.clone();
        let natt = ike.p1.natt;
        let worker = self.children.get(&init.old).map_or(w, |c| c.worker);
        let rekeys = self
            .add_child(now, cookies, worker, (peer, peer_id), &child, natt)
            .or(Some(init.old));
        self.timers.push(Reverse((
            now + child.lifetime,
            Timer::Child(child.inbound_spi),
        )));
        self.timers.push(Reverse((
            now + SWITCH_DELAY,
            Timer::Activate(child.inbound_spi),
        )));
        self.stats.qm_done += 1;
        // The new pair first, then QM3: the peer may send on it once it has QM3.
        self.actions.push_back(Action::Install(Box::new(Install {
            worker,
            peer,
            local,
            child,
            rekeys,
        })));
        self.send(w, peer, local, qm3);
    }
}
