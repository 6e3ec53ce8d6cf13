//! Quick Mode and informational exchanges of established ISAKMP SAs, and the
//! bookkeeping of SA pairs: install on QM2, activate (or rekey) on QM3, remove on
//! delete or expiry with the successor that takes over their sessions.

use std::cmp::Reverse;
use std::time::Instant;

use crate::wire::isakmp::{Header, flags, notify};

use super::super::informational::{self, Info};
use super::super::quick_mode::{self, QmError};
use super::{Action, Child, Cookies, Datagram, Install, Responder, Timer, digest, remember};

impl Responder {
    pub(super) fn quick_mode(&mut self, now: Instant, h: &Header, d: Datagram<'_>) {
        let cookies = (h.initiator_cookie, h.responder_cookie);
        let req = digest(d.data);
        let Some(ike) = self.ikes.get_mut(&cookies) else {
            self.stats.dropped += 1;
            return;
        };
        if h.message_id == 0 || h.flags & flags::ENCRYPTION == 0 {
            self.stats.dropped += 1;
            return;
        }
        if let Some((_, r)) = ike.responses.iter().find(|(q, _)| *q == req) {
            let (w, p, l, r) = (ike.worker, ike.peer, ike.local, r.clone());
            self.stats.retransmits += 1;
            self.send(w, p, l, r);
            return;
        }
        let mid = h.message_id;
        if ike.initiated.contains_key(&mid) {
            self.on_qm2(now, cookies, mid, d);
            return;
        }
        if let Some((qm, spi)) = ike.pending_qm.get(&mid) {
            let spi = *spi;
            if qm.on_qm3(&ike.p1, d.data).is_err() {
                self.stats.dropped += 1;
                return;
            }
            ike.pending_qm.remove(&mid);
            ike.last_heard = now;
            self.activate(spi);
            self.stats.qm_done += 1;
            return;
        }
        if ike.done_mids.contains(&mid) {
            self.stats.dropped += 1;
            return;
        }
        let worker = d.worker;
        let Some(spi) = self.spis.allocate(worker) else {
            tracing::warn!("IKE: no inbound SPI left on worker {worker}");
            self.stats.dropped += 1;
            return;
        };
        let Some(ike) = self.ikes.get_mut(&cookies) else {
            return;
        };
        match quick_mode::on_qm1(&ike.p1, d.data, mid, &self.cfg.algs, spi) {
            Ok((wait, child, qm2)) => {
                ike.last_heard = now;
                ike.pending_qm.insert(mid, (wait, spi));
                if ike.done_mids.len() >= 32 {
                    ike.done_mids.pop_front();
                }
                ike.done_mids.push_back(mid);
                remember(&mut ike.responses, req, &qm2);
                let (peer, local, ike_worker) = (ike.peer, ike.local, ike.worker);
                let peer_id = ike.p1.peer_id.data.clone();
                let natt = ike.p1.natt;
                let expires = now + child.lifetime;
                tracing::info!(
                    peer = %peer,
                    spi_in = format_args!("{:08x}", child.inbound_spi),
                    spi_out = format_args!("{:08x}", child.outbound_spi),
                    transform = child.transform.name(),
                    udp = child.udp,
                    lifetime_s = child.lifetime.as_secs(),
                    "IPsec SA negotiated"
                );
                let rekeys = self.add_child(now, cookies, worker, (peer, peer_id), &child, natt);
                self.timers.push(Reverse((
                    now + self.cfg.exchange_timeout,
                    Timer::Child(spi),
                )));
                self.timers.push(Reverse((expires, Timer::Child(spi))));
                // The pair first, then QM2: the peer sends ESP as soon as it has sent
                // QM3, and the worker must hold the SPI by then.
                self.actions.push_back(Action::Install(Box::new(Install {
                    worker,
                    peer,
                    local,
                    child,
                    rekeys,
                })));
                self.send(ike_worker, peer, local, qm2);
            }
            Err(e) => {
                self.spis.release(spi);
                match e {
                    QmError::NoProposal(offered) => {
                        tracing::warn!(peer = %d.peer, "IPsec: no acceptable proposal; offered {offered}");
                        self.stats.no_proposal += 1;
                        let n = crate::wire::isakmp::Notification {
                            doi: super::super::proposal::DOI_IPSEC,
                            protocol: super::super::proposal::PROTO_ESP,
                            spi: Vec::new(),
                            message_type: notify::NO_PROPOSAL_CHOSEN,
                            data: Vec::new(),
                        };
                        if let Ok(m) = informational::build(
                            &ike.p1,
                            &[(crate::wire::isakmp::payload::N, n.emit())],
                        ) {
                            let (w, p, l) = (ike.worker, ike.peer, ike.local);
                            self.send(w, p, l, m);
                        }
                    }
                    e => {
                        tracing::debug!(peer = %d.peer, "QM1 dropped: {e}");
                        self.stats.dropped += 1;
                    }
                }
            }
        }
    }

    /// Records a new, not yet active pair; returns the active pair it would replace
    /// (same peer and selectors), and arms our own rekey of it at 90 % of its lifetime.
    pub(super) fn add_child(
        &mut self,
        now: Instant,
        ike: Cookies,
        worker: u16,
        (peer, peer_id): (std::net::SocketAddrV4, Vec<u8>),
        child: &quick_mode::ChildSa,
        natt: Option<super::super::natd::NatT>,
    ) -> Option<u32> {
        let spi = child.inbound_spi;
        let selectors = (
            child.local_ts.as_ref().map(|t| t.emit()),
            child.peer_ts.as_ref().map(|t| t.emit()),
            child.mode == crate::esp::sa::Mode::Tunnel,
        );
        let set = self.peers.entry((peer, peer_id.clone())).or_default();
        let old = set.children.iter().copied().find(|s| {
            self.children
                .get(s)
                .is_some_and(|o| o.active && o.replaced_by.is_none() && o.selectors == selectors)
        });
        set.children.push(spi);
        let expires = now + child.lifetime;
        self.children.insert(
            spi,
            Child {
                worker,
                ike,
                peer,
                peer_id,
                outbound_spi: child.outbound_spi,
                selectors,
                offer: super::rekey::Reoffer::of(child, natt),
                active: false,
                replaced_by: None,
                expires,
            },
        );
        self.timers.push(Reverse((
            now + child.lifetime.mul_f32(0.9),
            Timer::Rekey(spi),
        )));
        old
    }

    /// The other children of `spi`'s peer.
    pub(super) fn siblings(&self, spi: u32) -> Vec<u32> {
        let Some(c) = self.children.get(&spi) else {
            return Vec::new();
        };
        self.peers
            .get(&(c.peer, c.peer_id.clone()))
            .map(|p| p.children.iter().copied().filter(|s| *s != spi).collect())
            .unwrap_or_default()
    }

    pub(super) fn activate(&mut self, spi: u32) {
        let Some(c) = self.children.get(&spi) else {
            return;
        };
        let (sel, worker) = (c.selectors.clone(), c.worker);
        let old = self
            .siblings(spi)
            .into_iter()
            .filter_map(|s| self.children.get(&s).map(|o| (s, o)))
            .filter(|(_, o)| o.active && o.replaced_by.is_none() && o.selectors == sel)
            .max_by_key(|(_, o)| o.expires)
            .map(|(s, _)| s);
        if let Some(o) = old
            && let Some(oc) = self.children.get_mut(&o)
        {
            oc.replaced_by = Some(spi);
        }
        if let Some(c) = self.children.get_mut(&spi) {
            c.active = true;
        }
        self.actions.push_back(Action::Activate {
            worker,
            inbound_spi: spi,
            replaces: old,
        });
    }

    pub(super) fn informational(&mut self, now: Instant, h: &Header, d: Datagram<'_>) {
        let cookies = (h.initiator_cookie, h.responder_cookie);
        let Some(ike) = self.ikes.get_mut(&cookies) else {
            // Plain notifications during Main Mode (e.g. the peer's own
            // NO-PROPOSAL-CHOSEN) end the half-open exchange.
            if h.flags & flags::ENCRYPTION == 0 && self.half.contains_key(&cookies) {
                self.drop_half(cookies);
            }
            self.stats.dropped += 1;
            return;
        };
        if h.flags & flags::ENCRYPTION == 0 || h.message_id == 0 {
            self.stats.dropped += 1;
            return;
        }
        let items = match informational::open(&ike.p1, d.data, h.message_id) {
            Ok(i) => i,
            Err(_) => {
                self.stats.dropped += 1;
                return;
            }
        };
        ike.last_heard = now;
        ike.dpd.asked_since = None;
        for item in items {
            match item {
                Info::RUThere(seq) => {
                    if let Some(ike) = self.ikes.get(&cookies)
                        && let Ok(m) = informational::dpd(&ike.p1, true, seq)
                    {
                        let (w, p, l) = (ike.worker, ike.peer, ike.local);
                        self.send(w, p, l, m);
                    }
                }
                Info::RUThereAck(_) => {}
                Info::DeleteIke => {
                    tracing::info!(peer = %d.peer, "IKE SA deleted by peer");
                    self.remove_ike(cookies, false, "deleted by peer");
                }
                Info::DeleteEsp(spis) => {
                    let Some(ike) = self.ikes.get(&cookies) else {
                        continue;
                    };
                    let mine = self
                        .peers
                        .get(&(ike.peer, ike.p1.peer_id.data.clone()))
                        .map(|p| p.children.clone())
                        .unwrap_or_default();
                    for s in spis {
                        let found = mine.iter().copied().find(|i| {
                            *i == s || self.children.get(i).is_some_and(|c| c.outbound_spi == s)
                        });
                        if let Some(i) = found {
                            self.remove_child(i, "deleted by peer");
                        }
                    }
                }
                Info::InitialContact | Info::Other(_) => {}
            }
        }
    }

    /// Removes an SA pair and says so to the data plane.
    pub(super) fn remove_child(&mut self, spi: u32, reason: &'static str) {
        let siblings = self.siblings(spi);
        let Some(c) = self.children.remove(&spi) else {
            return;
        };
        if let Some(set) = self.peers.get_mut(&(c.peer, c.peer_id.clone())) {
            set.children.retain(|s| *s != spi);
            if set.children.is_empty() && set.ikes.is_empty() {
                self.peers.remove(&(c.peer, c.peer_id.clone()));
            }
        }
        // A successor is the pair that replaced it, or another active pair with the
        // same selectors.
        let mut successor = c.replaced_by.filter(|s| self.children.contains_key(s));
        if successor.is_none() && c.active {
            successor = siblings.iter().copied().find(|s| {
                self.children
                    .get(s)
                    .is_some_and(|o| o.active && o.selectors == c.selectors)
            });
        }
        for s in &siblings {
            if let Some(o) = self.children.get_mut(s)
                && o.replaced_by == Some(spi)
            {
                o.replaced_by = successor;
            }
        }
        tracing::info!(
            spi_in = format_args!("{spi:08x}"),
            reason,
            "IPsec SA removed"
        );
        self.stats.children_removed += 1;
        self.actions.push_back(Action::Remove {
            worker: c.worker,
            inbound_spi: spi,
            successor: if c.active { successor } else { None },
            reason,
        });
        self.spis.release(spi);
    }

    /// Removes an ISAKMP SA. Its children move to another SA with the same peer when
    /// there is one (IKEv1 deletes do not cascade, RFC 2408 §4.8), unless `with_children`.
    pub(super) fn remove_ike(
        &mut self,
        cookies: Cookies,
        with_children: bool,
        reason: &'static str,
    ) {
        let Some(ike) = self.ikes.remove(&cookies) else {
            return;
        };
        let key = (ike.peer, ike.p1.peer_id.data.clone());
        let (heir, children) = match self.peers.get_mut(&key) {
            Some(set) => {
                set.ikes.retain(|c| *c != cookies);
                (set.ikes.last().copied(), set.children.clone())
            }
            None => (None, Vec::new()),
        };
        let pending: Vec<u32> = ike.pending_qm.values().map(|(_, s)| *s).collect();
        for s in children {
            let mine = self.children.get(&s).is_some_and(|c| c.ike == cookies);
            if !mine {
                continue;
            }
            match heir {
                Some(h) if !with_children && !pending.contains(&s) => {
                    if let Some(c) = self.children.get_mut(&s) {
                        c.ike = h;
                    }
                }
                None if !with_children && !pending.contains(&s) => {}
                _ => self.remove_child(s, reason),
            }
        }
        if self
            .peers
            .get(&key)
            .is_some_and(|p| p.ikes.is_empty() && p.children.is_empty())
        {
            self.peers.remove(&key);
        }
    }
}
