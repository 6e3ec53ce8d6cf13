//! The LNS: many control connections from many peers, incoming calls only.
//!
//! Sans-IO: the caller hands in each control message with the time and the transport
//! it came on ([`Lns::input`]), calls [`Lns::handle_timeout`] when
//! [`Lns::next_timeout`] passes, and drains [`Lns::poll_event`] for packets to send and
//! tunnels and sessions that came up or went down. Nothing inside reads a clock,
//! opens a socket or spawns a thread.
//!
//! Control connection setup as the responder (RFC 2661 §5.1, §7.2.1): SCCRQ → SCCRP
//! (with a Challenge Response when the SCCRQ carried a Challenge, and a Challenge of
//! ours when a secret is configured, §5.1.1) → SCCCN (its response checked) →
//! established.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use crate::wire::l2tp::{MessageType, Packet, Sequence, avp_type};

use super::build::Builder;
use super::config::{Entropy, SystemEntropy, TunnelConfig, random_16};
use super::event::{Event, PeerKey};
use super::hidden::{challenge_response, verify_response};
use super::ids::IdAllocator;
use super::message::{self, Kind, Message};
use super::result::{ResultCode, error, printable, stopccn};
use super::stats::Stats;
use super::timers::Timers;
use super::tunnel::{Ctx, State, Tunnel};

/// Configuration of an [`Lns`].
#[derive(Clone, Debug)]
pub struct LnsConfig {
    /// What we say about ourselves and how the control connections stay reliable.
    pub tunnel: TunnelConfig,
    /// Top bits of every tunnel and session id that name the owning worker (0..=8).
    pub worker_bits: u8,
    /// A new SCCRQ (a new Assigned Tunnel ID) from a transport that already has a
    /// tunnel replaces that tunnel: the peer restarted. With `false`, one peer may
    /// hold several tunnels and a restarted peer's old tunnel dies by keepalive.
    pub one_tunnel_per_peer: bool,
}

impl Default for LnsConfig {
    fn default() -> LnsConfig {
        LnsConfig {
            tunnel: TunnelConfig::default(),
            worker_bits: 0,
            one_tunnel_per_peer: true,
        }
    }
}

/// An L2TPv2 LNS for incoming calls (see the module docs).
pub struct Lns {
    cfg: LnsConfig,
    tunnels: HashMap<u16, Tunnel>,
    /// (transport, the peer's tunnel id) → our tunnel id: recognises a retransmitted
    /// SCCRQ and finds the tunnels of a transport.
    by_peer: BTreeMap<(PeerKey, u16), u16>,
    tunnel_ids: IdAllocator,
    timers: Timers<u16>,
    events: VecDeque<Event>,
    stats: Stats,
    entropy: Box<dyn Entropy>,
}

impl Lns {
    /// An LNS drawing randomness from the operating system.
    pub fn new(config: LnsConfig) -> Lns {
        Lns::with_entropy(config, Box::new(SystemEntropy))
    }

    /// An LNS drawing randomness from `entropy` (tests, replays). The tunnel
    /// configuration is [`TunnelConfig::sanitized`].
    pub fn with_entropy(mut config: LnsConfig, mut entropy: Box<dyn Entropy>) -> Lns {
        config.tunnel = config.tunnel.sanitized();
        let start = super::config::random_u16(&mut *entropy);
        Lns {
            tunnel_ids: IdAllocator::new(config.worker_bits, start),
            cfg: config,
            tunnels: HashMap::new(),
            by_peer: BTreeMap::new(),
            timers: Timers::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            entropy,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &LnsConfig {
        &self.cfg
    }

    /// Takes one L2TP control message (header included) that arrived from `peer`.
    /// `worker` is the worker that should own a tunnel this message creates (an
    /// SCCRQ): normally the one whose queue received the peer's IKE and first packet.
    /// Data messages and garbage are counted and dropped; nothing panics.
    pub fn input(&mut self, now: Instant, peer: PeerKey, msg: &[u8], worker: u16) {
        self.stats.messages_in += 1;
        let packet = match Packet::new_checked(msg) {
            Ok(packet) if packet.is_control() => packet,
            _ => {
                self.stats.malformed += 1;
                return;
            }
        };
        let Ok(kind) = message::preflight(&packet) else {
            self.stats.malformed += 1;
            return;
        };
        let local_id = match packet.tunnel_id() {
            0 if kind == Some(Kind::Known(MessageType::Sccrq)) => {
                match self.tunnel_for_sccrq(now, peer, &packet, worker) {
                    Some(id) => id,
                    None => return,
                }
            }
            0 => {
                self.stats.unknown_tunnel += 1;
                return;
            }
            id => id,
        };
        let Some(tunnel) = self.tunnels.get_mut(&local_id) else {
            self.stats.unknown_tunnel += 1;
            tracing::debug!(tunnel = local_id, "l2tp: message for an unknown tunnel");
            return;
        };
        if tunnel.peer != peer {
            self.stats.wrong_peer += 1;
            tracing::debug!(
                tunnel = local_id,
                ?peer,
                "l2tp: message for a tunnel of another transport"
            );
            return;
        }
        let mut ctx = Ctx {
            cfg: &self.cfg.tunnel,
            events: &mut self.events,
            stats: &mut self.stats,
            entropy: &mut *self.entropy,
        };
        for bytes in tunnel.receive(now, &mut ctx, &packet) {
            dispatch(tunnel, now, &mut ctx, &bytes);
        }
        tunnel.poll(now, &mut ctx);
        self.settle(local_id);
    }

    /// Finds the tunnel a tunnel-id-0 SCCRQ belongs to, creating it for a new one.
    fn tunnel_for_sccrq(
        &mut self,
        now: Instant,
        peer: PeerKey,
        packet: &Packet<&[u8]>,
        worker: u16,
    ) -> Option<u16> {
        let message = message::parse(packet, self.cfg.tunnel.secret_bytes());
        let Some(message) = message.filter(|_| packet.ns() == Some(0)) else {
            self.stats.malformed += 1;
            return None;
        };
        let assigned = message.avps.assigned_tunnel_id;
        if let Some(&id) = assigned.and_then(|a| self.by_peer.get(&(peer, a))) {
            return Some(id); // a retransmission: the channel re-acknowledges it
        }
        if self.cfg.one_tunnel_per_peer {
            self.drop_peer(peer, "peer restarted: new SCCRQ from the same transport");
        }
        let workers = self.tunnel_ids.workers();
        let worker = if u32::from(worker) < workers {
            worker
        } else {
            tracing::warn!(worker, workers, "l2tp: worker out of range for the id bits");
            (u32::from(worker) % workers) as u16
        };
        let tunnels = &self.tunnels;
        let Some(local_id) = self
            .tunnel_ids
            .allocate(worker, |id| tunnels.contains_key(&id))
        else {
            self.stats.no_ids += 1;
            let result = ResultCode::general_error(error::NO_RESOURCES, "no free tunnel id");
            self.refuse(peer, assigned.unwrap_or(0), &result);
            return None;
        };
        let mut ctx = Ctx {
            cfg: &self.cfg.tunnel,
            events: &mut self.events,
            stats: &mut self.stats,
            entropy: &mut *self.entropy,
        };
        let bits = self.cfg.worker_bits;
        let mut tunnel = Tunnel::new(now, &mut ctx, local_id, peer, worker, bits, State::Idle);
        tunnel.set_peer(assigned.unwrap_or(0), message.avps.receive_window_size);
        self.by_peer.insert((peer, tunnel.peer_id), local_id);
        self.tunnels.insert(local_id, tunnel);
        Some(local_id)
    }

    /// Answers an SCCRQ we cannot hold state for with a one-off StopCCN.
    fn refuse(&mut self, peer: PeerKey, peer_tunnel_id: u16, result: &ResultCode) {
        let mut stop = Builder::new(MessageType::StopCcn);
        stop.u16(true, avp_type::ASSIGNED_TUNNEL_ID, 0);
        stop.result_code(result);
        if let Some(mut bytes) = stop.finish(peer_tunnel_id, 0) {
            let _ = Packet::new_unchecked(&mut bytes[..]).set_sequence(Sequence { ns: 0, nr: 1 });
            self.stats.messages_out += 1;
            self.events.push_back(Event::Transmit { peer, bytes });
        }
    }

    /// Forgets every tunnel of `peer` without a StopCCN (the peer has forgotten it).
    fn drop_peer(&mut self, peer: PeerKey, cause: &str) {
        for id in self.tunnel_ids_of(peer) {
            if let Some(tunnel) = self.tunnels.get_mut(&id) {
                let mut ctx = Ctx {
                    cfg: &self.cfg.tunnel,
                    events: &mut self.events,
                    stats: &mut self.stats,
                    entropy: &mut *self.entropy,
                };
                tunnel.report_down(&mut ctx, cause.to_string());
                tunnel.state = State::Dead;
            }
            self.settle(id);
        }
    }

    fn tunnel_ids_of(&self, peer: PeerKey) -> Vec<u16> {
        self.by_peer
            .range((peer, 0)..=(peer, u16::MAX))
            .map(|(_, &id)| id)
            .collect()
    }

    /// Drops stale timer entries off the top of the heap.
    fn purge_timers(&mut self) {
        let tunnels = &self.tunnels;
        self.timers
            .purge(|id, at| tunnels.get(&id).is_some_and(|t| t.scheduled == Some(at)));
    }

    /// Removes a dead tunnel, or queues its next deadline.
    fn settle(&mut self, id: u16) {
        let Some(tunnel) = self.tunnels.get_mut(&id) else {
            return;
        };
        if tunnel.is_dead() {
            let key = (tunnel.peer, tunnel.peer_id);
            if self.by_peer.get(&key) == Some(&id) {
                self.by_peer.remove(&key);
            }
            self.tunnels.remove(&id);
            self.purge_timers();
            return;
        }
        let deadline = tunnel.deadline();
        self.timers.schedule(id, deadline, &mut tunnel.scheduled);
        self.purge_timers();
    }

    /// Runs the timers due at `now`: retransmissions, delayed acknowledgements,
    /// HELLOs, lingering and setup timeouts. Touches only the tunnels that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = self.timers.pop_due(now);
        due.sort_by_key(|&(_, id)| id);
        due.dedup_by_key(|&mut (_, id)| id);
        for (_, id) in due {
            let Some(tunnel) = self.tunnels.get_mut(&id) else {
                continue;
            };
            if tunnel.scheduled.is_none_or(|at| at > now) {
                continue; // stale entry
            }
            tunnel.scheduled = None;
            let mut ctx = Ctx {
                cfg: &self.cfg.tunnel,
                events: &mut self.events,
                stats: &mut self.stats,
                entropy: &mut *self.entropy,
            };
            tunnel.poll(now, &mut ctx);
            self.settle(id);
        }
        if self.timers.len() > 2 * self.tunnels.len() + 64 {
            let live = self
                .tunnels
                .iter()
                .filter_map(|(&id, t)| t.scheduled.map(|at| (id, at)));
            self.timers.rebuild(live);
        }
        self.purge_timers();
    }

    /// When [`Lns::handle_timeout`] should next be called.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// The next packet to send or change to act on.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Runs `f` on tunnel `id` with a context, then settles it. `false` if absent.
    fn with_tunnel(&mut self, id: u16, f: impl FnOnce(&mut Tunnel, &mut Ctx<'_>) -> bool) -> bool {
        let Some(tunnel) = self.tunnels.get_mut(&id) else {
            return false;
        };
        let mut ctx = Ctx {
            cfg: &self.cfg.tunnel,
            events: &mut self.events,
            stats: &mut self.stats,
            entropy: &mut *self.entropy,
        };
        let done = f(tunnel, &mut ctx);
        self.settle(id);
        done
    }

    /// Clears session `session` of tunnel `tunnel` (our ids) with a CDN carrying
    /// `result` (e.g. PPP authentication failed, admin kick). A `SessionDown` event
    /// follows if the session was up. `false` if there is no such session.
    pub fn close_session(
        &mut self,
        now: Instant,
        tunnel: u16,
        session: u16,
        result: ResultCode,
    ) -> bool {
        self.with_tunnel(tunnel, |t, ctx| {
            !t.is_closing() && t.close_session(now, ctx, session, &result)
        })
    }

    /// Tears down tunnel `tunnel` (our id) and its sessions with a StopCCN carrying
    /// `result`. `false` if there is no such tunnel or it is already closing.
    pub fn close_tunnel(&mut self, now: Instant, tunnel: u16, result: ResultCode) -> bool {
        self.with_tunnel(tunnel, |t, ctx| {
            let open = !t.is_closing();
            t.stop(now, ctx, result);
            open
        })
    }

    /// Tears down every tunnel of `peer` (e.g. its IKE SA died); returns how many.
    pub fn close_peer(&mut self, now: Instant, peer: PeerKey, result: ResultCode) -> usize {
        let ids = self.tunnel_ids_of(peer);
        ids.into_iter()
            .filter(|&id| self.close_tunnel(now, id, result.clone()))
            .count()
    }

    /// Tears down every tunnel (result 6, "requester is being shut down").
    pub fn shutdown(&mut self, now: Instant) {
        let result = ResultCode::new(stopccn::SHUTTING_DOWN, None, "LNS shutting down");
        let mut ids: Vec<u16> = self.tunnels.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.close_tunnel(now, id, result.clone());
        }
    }

    /// Moves the tunnels of transport `old` to `new` (an IPsec rekey changed our
    /// inbound SPI, or NAT rebinding changed the port). Returns how many moved.
    pub fn rekey_peer(&mut self, old: PeerKey, new: PeerKey) -> usize {
        let ids = self.tunnel_ids_of(old);
        for &id in &ids {
            if let Some(tunnel) = self.tunnels.get_mut(&id) {
                self.by_peer.remove(&(old, tunnel.peer_id));
                tunnel.peer = new;
                self.by_peer.insert((new, tunnel.peer_id), id);
            }
        }
        ids.len()
    }

    /// The transport of tunnel `tunnel` (our id).
    pub fn peer_of(&self, tunnel: u16) -> Option<PeerKey> {
        self.tunnels.get(&tunnel).map(|t| t.peer)
    }

    /// Counters, with the current numbers of tunnels and sessions.
    pub fn stats(&self) -> Stats {
        Stats {
            tunnels: self.tunnels.len(),
            sessions: self.tunnels.values().map(|t| t.sessions.len()).sum(),
            ..self.stats
        }
    }
}

/// Acts on one in-order message of `tunnel`.
fn dispatch(tunnel: &mut Tunnel, now: Instant, ctx: &mut Ctx<'_>, bytes: &[u8]) {
    let Ok(packet) = Packet::new_checked(bytes) else {
        return;
    };
    let Some(message) = message::parse(&packet, ctx.cfg.secret_bytes()) else {
        return;
    };
    if tunnel.handle_common(now, ctx, &message) {
        return;
    }
    match message.kind {
        Kind::Known(MessageType::Sccrq) => on_sccrq(tunnel, now, ctx, &message),
        Kind::Known(MessageType::Scccn) => on_scccn(tunnel, now, ctx, &message),
        kind if kind.is_session_level() => {
            if tunnel.state == State::Established {
                tunnel.lns_call_message(now, ctx, packet.session_id(), &message);
            } else {
                ctx.stats.unexpected += 1;
                let result = ResultCode::new(
                    stopccn::FSM_ERROR,
                    None,
                    "call message before the control connection is established",
                );
                tunnel.stop(now, ctx, result);
            }
        }
        _ => ctx.stats.unexpected += 1,
    }
}

/// Answers an SCCRQ with an SCCRP (§6.1, §6.2, §5.1.1).
fn on_sccrq(tunnel: &mut Tunnel, now: Instant, ctx: &mut Ctx<'_>, message: &Message) {
    if tunnel.state != State::Idle {
        ctx.stats.unexpected += 1;
        return;
    }
    let avps = &message.avps;
    tunnel.host_name = printable(avps.host_name.as_deref().unwrap_or(&[]));
    let secret = ctx.cfg.secret_bytes();
    let response = match (&avps.challenge, secret) {
        (Some(challenge), Some(secret)) => Some(challenge_response(
            MessageType::Sccrp as u8,
            secret,
            challenge,
        )),
        (Some(_), None) => {
            ctx.stats.auth_failures += 1;
            let result = ResultCode::new(
                stopccn::NOT_AUTHORIZED,
                None,
                "tunnel authentication requested but no secret is configured",
            );
            tunnel.stop(now, ctx, result);
            return;
        }
        (None, _) => None,
    };
    let challenge = secret.map(|_| random_16(ctx.entropy));
    let mut sccrp = tunnel.builder(ctx, MessageType::Sccrp);
    sccrp.bytes(true, avp_type::PROTOCOL_VERSION, &[1, 0]);
    sccrp.u32(true, avp_type::FRAMING_CAPABILITIES, 0b11);
    sccrp.u32(true, avp_type::BEARER_CAPABILITIES, 0);
    sccrp.u16(false, avp_type::FIRMWARE_REVISION, 0x0100);
    let host_name = ctx.cfg.host_name.as_bytes();
    sccrp.bytes(
        true,
        avp_type::HOST_NAME,
        &host_name[..host_name.len().min(255)],
    );
    sccrp.bytes(false, avp_type::VENDOR_NAME, ctx.cfg.vendor_name.as_bytes());
    sccrp.u16(true, avp_type::ASSIGNED_TUNNEL_ID, tunnel.local_id);
    sccrp.u16(true, avp_type::RECEIVE_WINDOW_SIZE, ctx.cfg.window());
    if let Some(response) = response {
        sccrp.bytes(true, avp_type::CHALLENGE_RESPONSE, &response);
    }
    if let Some(challenge) = challenge {
        sccrp.bytes(true, avp_type::CHALLENGE, &challenge);
    }
    tunnel.send(now, ctx, sccrp, 0);
    tunnel.state = State::WaitCtlConn { challenge };
}

/// Completes the control connection on SCCCN, checking the peer's answer to our
/// challenge (§5.1.1): a wrong or missing one is result 4, "not authorized".
fn on_scccn(tunnel: &mut Tunnel, now: Instant, ctx: &mut Ctx<'_>, message: &Message) {
    let State::WaitCtlConn { challenge } = tunnel.state else {
        ctx.stats.unexpected += 1;
        return;
    };
    if let (Some(challenge), Some(secret)) = (challenge, ctx.cfg.secret_bytes()) {
        let response = message.avps.challenge_response.as_deref();
        let scccn = MessageType::Scccn as u8;
        if !response.is_some_and(|r| verify_response(scccn, secret, &challenge, r)) {
            ctx.stats.auth_failures += 1;
            let result = ResultCode::new(
                stopccn::NOT_AUTHORIZED,
                None,
                "tunnel authentication failed: wrong or missing Challenge Response",
            );
            tunnel.stop(now, ctx, result);
            return;
        }
    }
    tunnel.established(now, ctx);
}
