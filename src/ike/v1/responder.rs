//! The IKEv1 responder: every ISAKMP SA of the gateway, sans-IO. Datagrams and the
//! time go in ([`Responder::input`], [`Responder::handle_timeout`]); what to send and
//! what to install or remove in the data plane comes out ([`Responder::poll_action`]).
//!
//! It composes the exchanges (`main_mode`, `quick_mode`, `informational`) and the
//! concerns around them: cookies and message ids checked, our last response resent on
//! a duplicate request, a cap on half-open exchanges per source address and in total,
//! a token bucket on Diffie-Hellman work (a flood of MM3 cannot starve established
//! users: it is dropped, counted, and the initiator retransmits), INITIAL-CONTACT,
//! DPD (RFC 3706, on demand: only a peer silent for an interval is asked), lifetimes,
//! and rekeying: a new Quick Mode with the same selectors replaces the old pair, which
//! stays installed until the peer deletes it or it expires, so no packet is lost; a
//! new Main Mode from the same peer adopts the children of the one it replaces.

use std::cmp::Reverse;
mod phase2;
mod reauth;
mod rekey;
mod timers;

use std::collections::hash_map::DefaultHasher;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use crate::wire::isakmp::{Header, exchange, flags, notify};

use super::crypto::{DhGroup, DhSecret};
use super::main_mode::{self, Mm2Sent, Mm4Sent, MmError, Phase1Done, PskCandidate};
use super::message::Chain;
use super::proposal::Algorithms;
use super::quick_mode::{ChildSa, Qm2Sent};

/// A pre-shared key bound to a peer address or identity.
pub struct PeerPsk {
    /// The peer's outer address (before any NAT, as we see it).
    pub address: Option<Ipv4Addr>,
    /// The ID payload data the peer sends (an IPv4 address as 4 octets, an FQDN…).
    pub id: Option<Vec<u8>>,
    /// The key.
    pub psk: Zeroizing<Vec<u8>>,
}

/// Responder settings.
pub struct ResponderConfig {
    /// Our outer address (our ID).
    pub local: Ipv4Addr,
    /// What we accept.
    pub algs: Algorithms,
    /// The shared key for everyone not matched by `peers`.
    pub psk: Option<Zeroizing<Vec<u8>>>,
    /// Per-peer keys (by address first, then by ID).
    pub peers: Vec<PeerPsk>,
    /// DPD interval; `None` disables DPD.
    pub dpd_interval: Option<Duration>,
    /// Half-open (not yet authenticated) exchanges in total.
    pub max_half_open: usize,
    /// Half-open exchanges per source address.
    pub max_half_open_per_peer: usize,
    /// Diffie-Hellman computations per second (token bucket, burst = one second).
    pub dh_per_second: u32,
    /// A half-open exchange or an unfinished Quick Mode is forgotten after this.
    pub exchange_timeout: Duration,
}

impl ResponderConfig {
    /// Defaults around a shared key.
    pub fn new(local: Ipv4Addr, psk: Option<Zeroizing<Vec<u8>>>) -> ResponderConfig {
        ResponderConfig {
            local,
            algs: Algorithms::default(),
            psk,
            peers: Vec::new(),
            dpd_interval: Some(Duration::from_secs(30)),
            max_half_open: 10_000,
            max_half_open_per_peer: 64,
            dh_per_second: 20_000,
            exchange_timeout: Duration::from_secs(30),
        }
    }
}

/// Hands out our inbound SPIs (they encode the worker that owns the SA).
pub trait SpiSource {
    /// A fresh SPI owned by `worker`.
    fn allocate(&mut self, worker: u16) -> Option<u32>;
    /// Returns an SPI after its SA is removed (or was never installed).
    fn release(&mut self, spi: u32);
}

/// One received datagram.
#[derive(Clone, Copy, Debug)]
pub struct Datagram<'a> {
    /// The worker whose queue received it.
    pub worker: u16,
    /// The peer's address and port as seen on the wire.
    pub peer: SocketAddrV4,
    /// Our address and port it was sent to (500, or 4500 after the float).
    pub local: SocketAddrV4,
    /// The ISAKMP message (after the non-ESP marker on 4500).
    pub data: &'a [u8],
}

/// An SA pair to install.
pub struct Install {
    /// The worker that owns it.
    pub worker: u16,
    /// The peer's IKE endpoint (its address, and its NAT-T port for ESP in UDP).
    pub peer: SocketAddrV4,
    /// Our endpoint.
    pub local: SocketAddrV4,
    /// Keys, SPIs, transform, mode.
    pub child: ChildSa,
    /// Our SPI of the pair this one is negotiated to replace (a rekey): sessions over
    /// it may accept the new pair's packets at once.
    pub rekeys: Option<u32>,
}

/// What the control thread must do.
pub enum Action {
    /// Send an ISAKMP message (the data plane adds the non-ESP marker on 4500).
    Send {
        /// Worker whose transmit path to use.
        worker: u16,
        /// Destination.
        peer: SocketAddrV4,
        /// Source.
        local: SocketAddrV4,
        /// The message.
        data: Vec<u8>,
    },
    /// Install an SA pair (the peer may use it as soon as it gets QM2).
    Install(Box<Install>),
    /// The pair is confirmed (QM3). When it rekeys an older pair, sessions bound to
    /// that pair move to this one.
    Activate {
        /// Worker.
        worker: u16,
        /// Our SPI of the new pair.
        inbound_spi: u32,
        /// Our SPI of the pair it replaces.
        replaces: Option<u32>,
    },
    /// Remove an SA pair. `successor` is the pair that took over its sessions; when
    /// `None` and the pair was active, the sessions over it are gone.
    Remove {
        /// Worker.
        worker: u16,
        /// Our SPI.
        inbound_spi: u32,
        /// The pair that replaced it.
        successor: Option<u32>,
        /// Why (for the log).
        reason: &'static str,
    },
}

/// Counters of the responder.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IkeStats {
    /// Main Modes that reached MM2.
    pub mm_started: u64,
    /// ISAKMP SAs established.
    pub ike_established: u64,
    /// Quick Modes completed.
    pub qm_done: u64,
    /// NO-PROPOSAL-CHOSEN answers.
    pub no_proposal: u64,
    /// MM5 that no key authenticated.
    pub auth_failed: u64,
    /// MM1 refused: half-open caps.
    pub half_open_refused: u64,
    /// MM3 dropped by the DH rate limit.
    pub dh_limited: u64,
    /// Our last response resent on a duplicate request.
    pub retransmits: u64,
    /// Datagrams dropped: malformed, unknown cookies, wrong state, bad hash.
    pub dropped: u64,
    /// Peers declared dead by DPD.
    pub dpd_dead: u64,
    /// SA pairs removed.
    pub children_removed: u64,
}

enum HalfState {
    Mm2(Mm2Sent),
    Mm4(Box<Mm4Sent>),
    Gone,
}

struct HalfOpen {
    peer: SocketAddrV4,
    local: SocketAddrV4,
    worker: u16,
    state: HalfState,
    expires: Instant,
    last: Option<(u64, Vec<u8>)>,
}

struct Dpd {
    seq: u32,
    asked_since: Option<Instant>,
    last_asked: Instant,
}

struct IkeSa {
    p1: Phase1Done,
    peer: SocketAddrV4,
    local: SocketAddrV4,
    worker: u16,
    expires: Instant,
    last_heard: Instant,
    dpd: Dpd,
    pending_qm: HashMap<u32, (Qm2Sent, u32)>,
    initiated: HashMap<u32, rekey::Initiated>,
    done_mids: VecDeque<u32>,
    responses: VecDeque<(u64, Vec<u8>)>,
}

struct Child {
    worker: u16,
    ike: Cookies,
    peer: SocketAddrV4,
    peer_id: Vec<u8>,
    outbound_spi: u32,
    selectors: (Option<Vec<u8>>, Option<Vec<u8>>, bool),
    offer: rekey::Reoffer,
    active: bool,
    replaced_by: Option<u32>,
    expires: Instant,
}

type Cookies = ([u8; 8], [u8; 8]);

/// Where an ISAKMP SA runs.
#[derive(Clone, Copy)]
struct Endpoints {
    peer: SocketAddrV4,
    local: SocketAddrV4,
}

/// How long one DH private value may serve new exchanges.
const DH_REUSE: Duration = Duration::from_secs(10);
/// How many exchanges one DH private value may serve.
const DH_REUSE_COUNT: u32 = 1000;

/// A peer as IKEv1 knows it: its endpoint (distinct per client behind one NAT) and
/// the identity it authenticated with.
type PeerRef = (SocketAddrV4, Vec<u8>);

/// What we hold for one peer: an index so that nothing scans every SA.
#[derive(Default)]
struct PeerSet {
    ikes: Vec<Cookies>,
    children: Vec<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Half(Cookies),
    Ike(Cookies),
    Child(u32),
    /// Start a Quick Mode rekey of this pair (our side).
    Rekey(u32),
    /// Re-authenticate this ISAKMP SA with a new Main Mode (our side).
    Reauth(Cookies),
    /// Resend our last Main Mode message of a re-authentication (by our CKY-I).
    ReauthResend([u8; 8]),
    /// Resend our QM1 of this exchange if unanswered.
    QmResend(Cookies, u32),
    /// Switch the sessions to this pair (a rekey we started, once the peer had time
    /// to take QM3).
    Activate(u32),
}

/// The IKEv1 responder.
pub struct Responder {
    cfg: ResponderConfig,
    half: HashMap<Cookies, HalfOpen>,
    half_by_mm1: HashMap<([u8; 8], SocketAddrV4), [u8; 8]>,
    half_per_addr: HashMap<Ipv4Addr, usize>,
    ikes: HashMap<Cookies, IkeSa>,
    children: HashMap<u32, Child>,
    peers: HashMap<PeerRef, PeerSet>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    actions: VecDeque<Action>,
    spis: Box<dyn SpiSource + Send>,
    tokens: f64,
    refilled: Option<Instant>,
    dh: HashMap<DhGroup, (DhSecret, Instant, u32)>,
    reauth: HashMap<[u8; 8], reauth::Reauth>,
    /// Counters.
    pub stats: IkeStats,
}

fn digest(data: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    data.hash(&mut h);
    h.finish()
}

fn remember(responses: &mut VecDeque<(u64, Vec<u8>)>, req: u64, resp: &[u8]) {
    if responses.len() >= 4 {
        responses.pop_front();
    }
    responses.push_back((req, resp.to_vec()));
}

impl Responder {
    /// A responder with no SAs.
    pub fn new(cfg: ResponderConfig, spis: Box<dyn SpiSource + Send>) -> Responder {
        let tokens = f64::from(cfg.dh_per_second);
        Responder {
            cfg,
            half: HashMap::new(),
            half_by_mm1: HashMap::new(),
            half_per_addr: HashMap::new(),
            ikes: HashMap::new(),
            children: HashMap::new(),
            peers: HashMap::new(),
            timers: BinaryHeap::new(),
            actions: VecDeque::new(),
            spis,
            tokens,
            refilled: None,
            dh: HashMap::new(),
            reauth: HashMap::new(),
            stats: IkeStats::default(),
        }
    }

    /// Replaces the keys and algorithm settings (SIGHUP); established SAs are kept.
    pub fn reconfigure(&mut self, cfg: ResponderConfig) {
        self.tokens = self.tokens.min(f64::from(cfg.dh_per_second));
        self.cfg = cfg;
    }

    /// ISAKMP SAs established.
    pub fn ike_sas(&self) -> usize {
        self.ikes.len()
    }

    /// Exchanges not yet authenticated.
    pub fn half_open(&self) -> usize {
        self.half.len()
    }

    /// SA pairs installed (active or waiting for QM3).
    pub fn children(&self) -> usize {
        self.children.len()
    }

    /// The next action for the control thread.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When to call [`Responder::handle_timeout`] next.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    fn send(&mut self, worker: u16, peer: SocketAddrV4, local: SocketAddrV4, data: Vec<u8>) {
        self.actions.push_back(Action::Send {
            worker,
            peer,
            local,
            data,
        });
    }

    /// ESP arrived on this inbound SA since the last call: the peer is alive.
    pub fn child_activity(&mut self, inbound_spi: u32, now: Instant) {
        if let Some(c) = self.children.get(&inbound_spi)
            && let Some(ike) = self.ikes.get_mut(&c.ike)
        {
            ike.last_heard = now;
            ike.dpd.asked_since = None;
        }
    }

    /// Our inbound SPIs of active pairs (for activity polling).
    pub fn active_spis(&self) -> impl Iterator<Item = (u16, u32)> + '_ {
        self.children
            .iter()
            .filter(|(_, c)| c.active)
            .map(|(s, c)| (c.worker, *s))
    }

    /// Handles one datagram.
    pub fn input(&mut self, now: Instant, d: Datagram<'_>) {
        let Ok(h) = Header::parse(d.data) else {
            self.stats.dropped += 1;
            return;
        };
        if h.version >> 4 != 1 || h.initiator_cookie == [0; 8] {
            // IKEv2 (major 2) and nonsense are not ours.
            self.stats.dropped += 1;
            return;
        }
        match h.exchange {
            exchange::MAIN => self.main_mode(now, &h, d),
            exchange::QUICK => self.quick_mode(now, &h, d),
            exchange::INFORMATIONAL => self.informational(now, &h, d),
            _ => {
                // Aggressive Mode with PSK exposes the key to offline guessing: refused.
                self.stats.dropped += 1;
            }
        }
    }

    fn take_token(&mut self, now: Instant) -> bool {
        let rate = f64::from(self.cfg.dh_per_second);
        if let Some(t) = self.refilled {
            let add = now.saturating_duration_since(t).as_secs_f64() * rate;
            self.tokens = (self.tokens + add).min(rate);
        }
        self.refilled = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn main_mode(&mut self, now: Instant, h: &Header, d: Datagram<'_>) {
        let req = digest(d.data);
        let cookies = (h.initiator_cookie, h.responder_cookie);
        if h.message_id != 0 {
            self.stats.dropped += 1;
            return;
        }
        if h.responder_cookie == [0; 8] {
            self.mm1(now, h, d, req);
            return;
        }
        if self.reauth.contains_key(&h.initiator_cookie) {
            self.reauth_input(now, h, d);
            return;
        }
        // A duplicate of MM5 after we answered: resend MM6.
        if let Some(ike) = self.ikes.get(&cookies) {
            if let Some((_, r)) = ike.responses.iter().find(|(q, _)| *q == req) {
                let (w, p, l, r) = (ike.worker, ike.peer, ike.local, r.clone());
                self.stats.retransmits += 1;
                self.send(w, p, l, r);
            } else {
                self.stats.dropped += 1;
            }
            return;
        }
        let Some(half) = self.half.get_mut(&cookies) else {
            self.stats.dropped += 1;
            return;
        };
        if let Some((q, r)) = &half.last
            && *q == req
        {
            let (w, p, l, r) = (half.worker, half.peer, half.local, r.clone());
            self.stats.retransmits += 1;
            self.send(w, p, l, r);
            return;
        }
        let encrypted = h.flags & flags::ENCRYPTION != 0;
        match std::mem::replace(&mut half.state, HalfState::Gone) {
            HalfState::Mm2(s) if !encrypted => {
                let chain = match Chain::parse(
                    h.next_payload,
                    &d.data[crate::wire::isakmp::HEADER_LEN..],
                ) {
                    Ok(c) => c,
                    Err(_) => {
                        self.restore(cookies, HalfState::Mm2(s));
                        self.stats.dropped += 1;
                        return;
                    }
                };
                if !self.take_token(now) {
                    self.restore(cookies, HalfState::Mm2(s));
                    self.stats.dh_limited += 1;
                    return;
                }
                let group = s.choice.group;
                let Some(secret) = self.dh_secret(group, now) else {
                    self.restore(cookies, HalfState::Mm2(s));
                    self.stats.dropped += 1;
                    return;
                };
                match s.on_mm3(&chain, d.local, d.peer, secret) {
                    Ok((next, mm4)) => {
                        if let Some(half) = self.half.get_mut(&cookies) {
                            half.state = HalfState::Mm4(Box::new(next));
                            half.last = Some((req, mm4.clone()));
                            let (w, p, l) = (half.worker, half.peer, half.local);
                            self.send(w, p, l, mm4);
                        }
                    }
                    Err(e) => {
                        tracing::info!(peer = %d.peer, "IKE MM3 refused: {e}");
                        self.drop_half(cookies);
                        self.stats.dropped += 1;
                    }
                }
            }
            HalfState::Mm4(s) if encrypted => {
                let mut cands: Vec<PskCandidate<'_>> = Vec::new();
                for p in &self.cfg.peers {
                    if p.address == Some(*d.peer.ip()) {
                        cands.push(PskCandidate {
                            psk: &p.psk,
                            id: p.id.as_deref(),
                        });
                    }
                }
                for p in &self.cfg.peers {
                    if p.address.is_none() && p.id.is_some() {
                        cands.push(PskCandidate {
                            psk: &p.psk,
                            id: p.id.as_deref(),
                        });
                    }
                }
                if let Some(k) = &self.cfg.psk {
                    cands.push(PskCandidate { psk: k, id: None });
                }
                match s.on_mm5(d.data, &cands, self.cfg.local) {
                    Ok((p1, mm6)) => {
                        drop(cands);
                        self.established(now, cookies, p1, d, req, mm6);
                    }
                    Err(MmError::Malformed(_)) => {
                        drop(cands);
                        self.restore(cookies, HalfState::Mm4(s));
                        self.stats.dropped += 1;
                    }
                    Err(e) => {
                        drop(cands);
                        tracing::warn!(peer = %d.peer, "IKE Main Mode failed: {e} (wrong pre-shared key?)");
                        self.stats.auth_failed += 1;
                        self.drop_half(cookies);
                    }
                }
            }
            other => {
                self.restore(cookies, other);
                self.stats.dropped += 1;
            }
        }
    }

    /// Our DH private value for `group`: one is reused for at most [`DH_REUSE`] and
    /// [`DH_REUSE_COUNT`] exchanges, which halves the MODP cost under load and changes
    /// nothing for a lone client (RFC 7296 §2.12 discusses the trade-off).
    fn dh_secret(&mut self, group: DhGroup, now: Instant) -> Option<&DhSecret> {
        let fresh = match self.dh.get_mut(&group) {
            Some((_, born, uses))
                if now.saturating_duration_since(*born) < DH_REUSE && *uses < DH_REUSE_COUNT =>
            {
                *uses += 1;
                false
            }
            _ => true,
        };
        if fresh {
            let s = group.generate().ok()?;
            self.dh.insert(group, (s, now, 1));
        }
        self.dh.get(&group).map(|(s, _, _)| s)
    }

    fn restore(&mut self, cookies: Cookies, state: HalfState) {
        if let Some(h) = self.half.get_mut(&cookies) {
            h.state = state;
        }
    }

    fn drop_half(&mut self, cookies: Cookies) {
        if let Some(h) = self.half.remove(&cookies) {
            self.half_by_mm1.remove(&(cookies.0, h.peer));
            if let Some(n) = self.half_per_addr.get_mut(h.peer.ip()) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.half_per_addr.remove(h.peer.ip());
                }
            }
        }
    }

    fn mm1(&mut self, now: Instant, h: &Header, d: Datagram<'_>, req: u64) {
        if let Some(r) = self.half_by_mm1.get(&(h.initiator_cookie, d.peer)).copied() {
            if let Some(half) = self.half.get(&(h.initiator_cookie, r))
                && let Some((q, resp)) = &half.last
                && *q == req
            {
                let (w, p, l, resp) = (half.worker, half.peer, half.local, resp.clone());
                self.stats.retransmits += 1;
                self.send(w, p, l, resp);
            } else {
                self.stats.dropped += 1;
            }
            return;
        }
        let per = self.half_per_addr.get(d.peer.ip()).copied().unwrap_or(0);
        if self.half.len() >= self.cfg.max_half_open || per >= self.cfg.max_half_open_per_peer {
            self.stats.half_open_refused += 1;
            return;
        }
        let Ok(chain) = Chain::parse(h.next_payload, &d.data[crate::wire::isakmp::HEADER_LEN..])
        else {
            self.stats.dropped += 1;
            return;
        };
        let Ok(rcookie) = main_mode::new_cookie() else {
            self.stats.dropped += 1;
            return;
        };
        match main_mode::on_mm1(h, &chain, &self.cfg.algs, rcookie) {
            Ok((s, mm2)) => {
                let cookies = (h.initiator_cookie, rcookie);
                let expires = now + self.cfg.exchange_timeout;
                self.half.insert(
                    cookies,
                    HalfOpen {
                        peer: d.peer,
                        local: d.local,
                        worker: d.worker,
                        state: HalfState::Mm2(s),
                        expires,
                        last: Some((req, mm2.clone())),
                    },
                );
                self.half_by_mm1
                    .insert((h.initiator_cookie, d.peer), rcookie);
                *self.half_per_addr.entry(*d.peer.ip()).or_insert(0) += 1;
                self.timers.push(Reverse((expires, Timer::Half(cookies))));
                self.stats.mm_started += 1;
                self.send(d.worker, d.peer, d.local, mm2);
            }
            Err(MmError::NoProposal(offered)) => {
                tracing::warn!(peer = %d.peer, "IKE: no acceptable proposal; offered {offered}");
                self.stats.no_proposal += 1;
                let n =
                    main_mode::notify_plain(h.initiator_cookie, [0; 8], notify::NO_PROPOSAL_CHOSEN);
                self.send(d.worker, d.peer, d.local, n);
            }
            Err(_) => self.stats.dropped += 1,
        }
    }

    fn established(
        &mut self,
        now: Instant,
        cookies: Cookies,
        p1: Phase1Done,
        d: Datagram<'_>,
        req: u64,
        mm6: Vec<u8>,
    ) {
        let worker = self.half.get(&cookies).map_or(d.worker, |h| h.worker);
        self.drop_half(cookies);
        self.install_ike(
            now,
            cookies,
            p1,
            (d.peer, d.local, worker),
            Some((req, mm6)),
        );
    }

    /// Records an established ISAKMP SA (ours as responder, or a re-authentication we
    /// started), answers with `reply` if any, and moves the peer's children to it.
    fn install_ike(
        &mut self,
        now: Instant,
        cookies: Cookies,
        p1: Phase1Done,
        (peer, local, worker): (SocketAddrV4, SocketAddrV4, u16),
        reply: Option<(u64, Vec<u8>)>,
    ) {
        let d = Endpoints { peer, local };
        let peer_id = p1.peer_id.data.clone();
        if p1.initial_contact {
            // The peer has no state: whatever we hold for it (same endpoint and ID)
            // is stale.
            let stale: Vec<Cookies> = self
                .peers
                .get(&(d.peer, peer_id.clone()))
                .map(|p| p.ikes.clone())
                .unwrap_or_default();
            for c in stale {
                self.remove_ike(c, true, "initial contact");
            }
        }
        let expires = now + p1.choice.lifetime;
        tracing::info!(
            peer = %d.peer,
            cipher = p1.choice.cipher.name(),
            hash = p1.choice.hash.name(),
            group = p1.choice.group.name(),
            nat = p1.nat.any(),
            "IKE SA established"
        );
        let mut ike = IkeSa {
            p1,
            peer: d.peer,
            local: d.local,
            worker,
            expires,
            last_heard: now,
            dpd: Dpd {
                seq: 1,
                asked_since: None,
                last_asked: now,
            },
            pending_qm: HashMap::new(),
            initiated: HashMap::new(),
            done_mids: VecDeque::new(),
            responses: VecDeque::new(),
        };
        if let Some((req, mm6)) = reply {
            remember(&mut ike.responses, req, &mm6);
            self.send(worker, d.peer, d.local, mm6);
        }
        self.ikes.insert(cookies, ike);
        self.timers.push(Reverse((
            now + expires.saturating_duration_since(now).mul_f32(0.9),
            Timer::Reauth(cookies),
        )));
        let set = self.peers.entry((d.peer, peer_id.clone())).or_default();
        set.ikes.push(cookies);
        self.timers.push(Reverse((expires, Timer::Ike(cookies))));
        if let Some(i) = self.cfg.dpd_interval {
            self.timers.push(Reverse((now + i, Timer::Ike(cookies))));
        }
        // Children of an older SA with this peer now answer to the newest one.
        if let Some(set) = self.peers.get(&(d.peer, peer_id)) {
            for s in &set.children {
                if let Some(c) = self.children.get_mut(s) {
                    c.ike = cookies;
                }
            }
        }
        self.stats.ike_established += 1;
    }
}
