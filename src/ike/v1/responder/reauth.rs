//! Phase 1 rekeys the gateway starts: an IKEv1 ISAKMP SA cannot be rekeyed in place,
//! so at 90 % of its lifetime, unless the peer already authenticated a newer one, we
//! run a new Main Mode as initiator (same transform, the key that authenticated the
//! peer) on the endpoints the old SA uses. When it is established the peer's ESP pairs
//! move to it and the old SA is deleted; the pairs themselves are not touched, so no
//! packet is lost.

use std::cmp::Reverse;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use crate::wire::isakmp::{HEADER_LEN, Header, flags};

use super::super::informational;
use super::super::main_mode::{self, Mm1Sent, Mm3Sent, Mm5Sent};
use super::super::message::Chain;
use super::{Cookies, Datagram, Responder, Timer};

/// Our Main Mode messages are resent this often, this many times.
const RESEND: Duration = Duration::from_secs(2);
const TRIES: u8 = 4;

enum Step {
    Mm1(Mm1Sent),
    Mm3(Box<Mm3Sent>),
    Mm5(Box<Mm5Sent>),
}

/// A re-authentication in progress.
pub(super) struct Reauth {
    step: Option<Step>,
    old: Cookies,
    peer: SocketAddrV4,
    local: SocketAddrV4,
    worker: u16,
    msg: Vec<u8>,
    tries: u8,
}

impl Responder {
    /// The key that authenticates `peer_id` at `addr` (the order MM5 tries them in).
    fn psk_for(&self, addr: std::net::Ipv4Addr, peer_id: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let by_addr = self.cfg.peers.iter().find(|p| p.address == Some(addr));
        let by_id = self
            .cfg
            .peers
            .iter()
            .find(|p| p.address.is_none() && p.id.as_deref() == Some(peer_id));
        by_addr
            .or(by_id)
            .map(|p| p.psk.clone())
            .or_else(|| self.cfg.psk.clone())
    }

    /// Starts our new Main Mode for ISAKMP SA `old` if the peer has not made one.
    pub(super) fn start_reauth(&mut self, now: Instant, old: Cookies) {
        let Some(ike) = self.ikes.get(&old) else {
            return;
        };
        let key = (ike.peer, ike.p1.peer_id.data.clone());
        let newer = self
            .peers
            .get(&key)
            .is_some_and(|p| p.ikes.iter().any(|c| *c != old));
        if newer || self.reauth.values().any(|r| r.old == old) {
            return;
        }
        let (peer, local, worker) = (ike.peer, ike.local, ike.worker);
        let choice = ike.p1.choice;
        match main_mode::start(&[choice]) {
            Ok((s, mm1)) => {
                tracing::info!(%peer, "IKE SA re-authentication started by us");
                let cky = s.icookie();
                self.reauth.insert(
                    cky,
                    Reauth {
                        step: Some(Step::Mm1(s)),
                        old,
                        peer,
                        local,
                        worker,
                        msg: mm1.clone(),
                        tries: 1,
                    },
                );
                self.send(worker, peer, local, mm1);
                self.timers
                    .push(Reverse((now + RESEND, Timer::ReauthResend(cky))));
            }
            Err(e) => tracing::warn!("IKE re-authentication not started: {e}"),
        }
    }

    /// Resends our last message, or gives up (the old SA stays until it expires).
    pub(super) fn resend_reauth(&mut self, now: Instant, cky: [u8; 8]) {
        let Some(r) = self.reauth.get_mut(&cky) else {
            return;
        };
        if r.tries >= TRIES {
            self.reauth.remove(&cky);
            return;
        }
        r.tries += 1;
        let (w, p, l, m) = (r.worker, r.peer, r.local, r.msg.clone());
        self.stats.retransmits += 1;
        self.send(w, p, l, m);
        self.timers
            .push(Reverse((now + RESEND, Timer::ReauthResend(cky))));
    }

    /// The peer's MM2, MM4 or MM6 of our re-authentication.
    pub(super) fn reauth_input(&mut self, now: Instant, h: &Header, d: Datagram<'_>) {
        let cky = h.initiator_cookie;
        let Some(peer_id) = self
            .reauth
            .get(&cky)
            .and_then(|r| self.ikes.get(&r.old))
            .map(|i| i.p1.peer_id.data.clone())
        else {
            self.reauth.remove(&cky);
            self.stats.dropped += 1;
            return;
        };
        let psk = self.psk_for(*d.peer.ip(), &peer_id);
        let algs = self.cfg.algs.clone();
        let Some(r) = self.reauth.get_mut(&cky) else {
            return;
        };
        let encrypted = h.flags & flags::ENCRYPTION != 0;
        let chain = (!encrypted)
            .then(|| {
                Chain::parse(h.next_payload, d.data.get(HEADER_LEN..).unwrap_or_default()).ok()
            })
            .flatten();
        let next = match (r.step.take(), chain) {
            (Some(Step::Mm1(s)), Some(c)) => s
                .on_mm2(h, &c, &algs, r.local, r.peer)
                .map(|(n, m)| (Some(Step::Mm3(Box::new(n))), Some(m))),
            (Some(Step::Mm3(s)), Some(c)) => match &psk {
                Some(k) => s.on_mm4(&c, k, r.local, r.peer, false).map(|(n, m)| {
                    if n.nat().any() && r.local.port() == 500 {
                        r.local.set_port(4500);
                        if r.peer.port() == 500 {
                            r.peer.set_port(4500);
                        }
                    }
                    (Some(Step::Mm5(Box::new(n))), Some(m))
                }),
                None => Err(main_mode::MmError::Auth),
            },
            (Some(Step::Mm5(s)), None) if encrypted => match s.on_mm6(d.data) {
                Ok(p1) => {
                    let r = self.reauth.remove(&cky);
                    if let Some(r) = r {
                        let cookies = (cky, h.responder_cookie);
                        self.install_ike(now, cookies, p1, (r.peer, r.local, r.worker), None);
                        // The pairs moved to the new SA; the old one goes.
                        if let Some(old) = self.ikes.get(&r.old)
                            && let Ok(m) = informational::delete_ike(&old.p1)
                        {
                            let (w, p, l) = (old.worker, old.peer, old.local);
                            self.send(w, p, l, m);
                        }
                        self.remove_ike(r.old, false, "re-authenticated");
                    }
                    return;
                }
                Err(e) => Err(e),
            },
            (step, _) => {
                r.step = step;
                self.stats.dropped += 1;
                return;
            }
        };
        match next {
            Ok((step, Some(m))) => {
                r.step = step;
                r.msg = m.clone();
                r.tries = 1;
                let (w, p, l) = (r.worker, r.peer, r.local);
                self.send(w, p, l, m);
            }
            Ok((step, None)) => r.step = step,
            Err(e) => {
                tracing::info!(peer = %d.peer, "our IKE re-authentication failed: {e}");
                self.reauth.remove(&cky);
                self.stats.dropped += 1;
            }
        }
    }
}
