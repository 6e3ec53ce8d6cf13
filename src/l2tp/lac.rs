//! A LAC built from the same machines as the LNS: one control connection as the
//! initiator (SCCRQ → SCCRP → SCCCN, §5.1) over which it places incoming calls
//! (ICRQ → ICRP → ICCN, §5.2.1). The tests drive it against the [`crate::l2tp::Lns`];
//! the load generator and `sekisho demo` use it as many simulated clients.
//!
//! Sans-IO like the LNS: [`Lac::input`], [`Lac::handle_timeout`],
//! [`Lac::next_timeout`], [`Lac::poll_event`].

use std::collections::VecDeque;
use std::time::Instant;

use crate::wire::l2tp::{MessageType, Packet, avp_type};

use super::config::{Entropy, SystemEntropy, TunnelConfig, random_16, random_u16};
use super::event::{Event, PeerKey};
use super::hidden::{challenge_response, verify_response};
use super::ids::IdAllocator;
use super::message::{self, Kind, Message};
use super::result::{ResultCode, printable, stopccn};
use super::session::{CallState, Session};
use super::stats::Stats;
use super::tunnel::{Ctx, State, Tunnel};

/// Configuration of a [`Lac`].
#[derive(Clone, Debug)]
pub struct LacConfig {
    /// What we say about ourselves and how the control connection stays reliable.
    pub tunnel: TunnelConfig,
    /// The LNS's transport; events carry it.
    pub peer: PeerKey,
}

/// One LAC control connection and its calls.
pub struct Lac {
    cfg: TunnelConfig,
    tunnel: Tunnel,
    events: VecDeque<Event>,
    stats: Stats,
    entropy: Box<dyn Entropy>,
    next_serial: u32,
}

macro_rules! ctx {
    ($self:ident) => {
        Ctx {
            cfg: &$self.cfg,
            events: &mut $self.events,
            stats: &mut $self.stats,
            entropy: &mut *$self.entropy,
        }
    };
}

impl Lac {
    /// Starts a control connection: the SCCRQ is the first event.
    pub fn new(now: Instant, config: LacConfig) -> Lac {
        Lac::with_entropy(now, config, Box::new(SystemEntropy))
    }

    /// As [`Lac::new`], drawing randomness from `entropy`.
    pub fn with_entropy(now: Instant, config: LacConfig, mut entropy: Box<dyn Entropy>) -> Lac {
        let cfg = config.tunnel.sanitized();
        let start = random_u16(&mut *entropy);
        let local_id = IdAllocator::new(0, start)
            .allocate(0, |_| false)
            .unwrap_or(1);
        let mut events = VecDeque::new();
        let mut stats = Stats::default();
        let challenge = cfg.secret_bytes().map(|_| random_16(&mut *entropy));
        let mut ctx = Ctx {
            cfg: &cfg,
            events: &mut events,
            stats: &mut stats,
            entropy: &mut *entropy,
        };
        let state = State::WaitCtlReply { challenge };
        let mut tunnel = Tunnel::new(now, &mut ctx, local_id, config.peer, 0, 0, state);
        let mut sccrq = tunnel.builder(&mut ctx, MessageType::Sccrq);
        sccrq.bytes(true, avp_type::PROTOCOL_VERSION, &[1, 0]);
        sccrq.u32(true, avp_type::FRAMING_CAPABILITIES, 0b11);
        sccrq.u32(true, avp_type::BEARER_CAPABILITIES, 0);
        sccrq.u16(false, avp_type::FIRMWARE_REVISION, 0x0100);
        sccrq.bytes(true, avp_type::HOST_NAME, cfg.host_name.as_bytes());
        sccrq.bytes(false, avp_type::VENDOR_NAME, cfg.vendor_name.as_bytes());
        sccrq.u16(true, avp_type::ASSIGNED_TUNNEL_ID, local_id);
        sccrq.u16(true, avp_type::RECEIVE_WINDOW_SIZE, cfg.window());
        if let Some(challenge) = challenge {
            sccrq.bytes(true, avp_type::CHALLENGE, &challenge);
        }
        tunnel.send(now, &mut ctx, sccrq, 0);
        Lac {
            cfg,
            tunnel,
            events,
            stats,
            entropy,
            next_serial: 1,
        }
    }

    /// Our tunnel id.
    pub fn local_tunnel_id(&self) -> u16 {
        self.tunnel.local_id
    }

    /// The LNS's tunnel id (0 until the SCCRP).
    pub fn peer_tunnel_id(&self) -> u16 {
        self.tunnel.peer_id
    }

    /// Whether the control connection is established.
    pub fn is_established(&self) -> bool {
        self.tunnel.state == State::Established
    }

    /// Whether the control connection is gone or going (StopCCN either way, peer
    /// dead): open a new [`Lac`] to reconnect.
    pub fn is_closed(&self) -> bool {
        self.tunnel.is_closing()
    }

    /// Whether nothing is left to do (closed and done lingering).
    pub fn is_finished(&self) -> bool {
        self.tunnel.is_dead()
    }

    /// The LNS's session id for our session `local_id`, once it answered (ICRP).
    pub fn peer_session_id(&self, local_id: u16) -> Option<u16> {
        self.tunnel
            .sessions
            .get(&local_id)
            .map(|s| s.peer_id)
            .filter(|&id| id != 0)
    }

    /// Places an incoming call: the ICRQ goes out now, or once the control connection
    /// is established. Returns our session id; `None` if the tunnel is closing or no
    /// id is free.
    pub fn open_session(&mut self, now: Instant) -> Option<u16> {
        if self.tunnel.is_closing() {
            return None;
        }
        let sessions = &self.tunnel.sessions;
        let local_id = self
            .tunnel
            .session_ids
            .allocate(0, |id| sessions.contains_key(&id))?;
        let serial = self.next_serial;
        self.next_serial = self.next_serial.wrapping_add(1);
        let session = Session {
            local_id,
            peer_id: 0,
            state: CallState::Pending,
            call_serial: serial,
            created: now,
            calling_number: None,
            called_number: None,
        };
        self.tunnel.sessions.insert(local_id, session);
        if self.is_established() {
            let mut ctx = ctx!(self);
            send_icrq(&mut self.tunnel, now, &mut ctx, local_id);
        }
        Some(local_id)
    }

    /// Clears our session `local_id` with a CDN; `false` if there is none.
    pub fn close_session(&mut self, now: Instant, local_id: u16, result: ResultCode) -> bool {
        let mut ctx = ctx!(self);
        !self.tunnel.is_closing() && self.tunnel.close_session(now, &mut ctx, local_id, &result)
    }

    /// Tears the control connection down with a StopCCN.
    pub fn close(&mut self, now: Instant, result: ResultCode) {
        let mut ctx = ctx!(self);
        self.tunnel.stop(now, &mut ctx, result);
    }

    /// Takes one L2TP control message from the LNS.
    pub fn input(&mut self, now: Instant, msg: &[u8]) {
        self.stats.messages_in += 1;
        let packet = match Packet::new_checked(msg) {
            Ok(packet) if packet.is_control() && message::preflight(&packet).is_ok() => packet,
            _ => {
                self.stats.malformed += 1;
                return;
            }
        };
        if packet.tunnel_id() != self.tunnel.local_id {
            self.stats.unknown_tunnel += 1;
            return;
        }
        let mut ctx = ctx!(self);
        for bytes in self.tunnel.receive(now, &mut ctx, &packet) {
            dispatch(&mut self.tunnel, now, &mut ctx, &bytes);
        }
        self.tunnel.poll(now, &mut ctx);
    }

    /// Runs what is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut ctx = ctx!(self);
        self.tunnel.poll(now, &mut ctx);
    }

    /// When [`Lac::handle_timeout`] should next be called.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.tunnel.deadline()
    }

    /// The next packet to send or change to act on.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Counters, with the current number of sessions.
    pub fn stats(&self) -> Stats {
        Stats {
            tunnels: usize::from(!self.tunnel.is_dead()),
            sessions: self.tunnel.sessions.len(),
            ..self.stats
        }
    }
}

/// Default connect speed reported in ICCN, as xl2tpd does.
const CONNECT_SPEED: u32 = 10_000_000;

fn send_icrq(tunnel: &mut Tunnel, now: Instant, ctx: &mut Ctx<'_>, local_id: u16) {
    let Some(session) = tunnel.sessions.get_mut(&local_id) else {
        return;
    };
    session.state = CallState::WaitReply;
    session.created = now;
    let serial = session.call_serial;
    let mut icrq = tunnel.builder(ctx, MessageType::Icrq);
    icrq.u16(true, avp_type::ASSIGNED_SESSION_ID, local_id);
    icrq.u32(true, avp_type::CALL_SERIAL_NUMBER, serial);
    icrq.u32(true, avp_type::BEARER_TYPE, 0);
    tunnel.send(now, ctx, icrq, 0);
}

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
    let session_id = packet.session_id();
    match message.kind {
        Kind::Known(MessageType::Sccrp) => on_sccrp(tunnel, now, ctx, &message),
        _ if message.kind.is_session_level() && tunnel.state != State::Established => {
            ctx.stats.unexpected += 1;
            let result = ResultCode::new(stopccn::FSM_ERROR, None, "call message before SCCRP");
            tunnel.stop(now, ctx, result);
        }
        Kind::Known(MessageType::Icrp) => on_icrp(tunnel, now, ctx, session_id, &message),
        Kind::Known(MessageType::Cdn) => tunnel.on_cdn(ctx, session_id, &message),
        _ => ctx.stats.unexpected += 1,
    }
}

fn on_sccrp(tunnel: &mut Tunnel, now: Instant, ctx: &mut Ctx<'_>, message: &Message) {
    let State::WaitCtlReply { challenge } = tunnel.state else {
        ctx.stats.unexpected += 1;
        return;
    };
    let avps = &message.avps;
    tunnel.set_peer(
        avps.assigned_tunnel_id.unwrap_or(0),
        avps.receive_window_size,
    );
    tunnel.host_name = printable(avps.host_name.as_deref().unwrap_or(&[]));
    let secret = ctx.cfg.secret_bytes();
    let refuse = |why: &str| ResultCode::new(stopccn::NOT_AUTHORIZED, None, why);
    if let (Some(challenge), Some(secret)) = (challenge, secret) {
        let response = avps.challenge_response.as_deref();
        let sccrp = MessageType::Sccrp as u8;
        if !response.is_some_and(|r| verify_response(sccrp, secret, &challenge, r)) {
            ctx.stats.auth_failures += 1;
            let result =
                refuse("tunnel authentication failed: wrong or missing Challenge Response");
            tunnel.stop(now, ctx, result);
            return;
        }
    }
    let response = match (&avps.challenge, secret) {
        (Some(theirs), Some(secret)) => {
            Some(challenge_response(MessageType::Scccn as u8, secret, theirs))
        }
        (Some(_), None) => {
            ctx.stats.auth_failures += 1;
            let result = refuse("tunnel authentication requested but no secret is configured");
            tunnel.stop(now, ctx, result);
            return;
        }
        (None, _) => None,
    };
    let mut scccn = tunnel.builder(ctx, MessageType::Scccn);
    if let Some(response) = response {
        scccn.bytes(true, avp_type::CHALLENGE_RESPONSE, &response);
    }
    tunnel.send(now, ctx, scccn, 0);
    tunnel.established(now, ctx);
    let mut pending: Vec<u16> = tunnel
        .sessions
        .values()
        .filter(|s| s.state == CallState::Pending)
        .map(|s| s.local_id)
        .collect();
    pending.sort_unstable();
    for local_id in pending {
        send_icrq(tunnel, now, ctx, local_id);
    }
}

fn on_icrp(
    tunnel: &mut Tunnel,
    now: Instant,
    ctx: &mut Ctx<'_>,
    session_id: u16,
    message: &Message,
) {
    let Some(session) = tunnel.sessions.get_mut(&session_id) else {
        ctx.stats.unknown_session += 1;
        return;
    };
    if session.state != CallState::WaitReply {
        ctx.stats.unexpected += 1;
        return;
    }
    if let Some(problem) = &message.problem {
        ctx.stats.invalid += 1;
        tunnel.close_session(now, ctx, session_id, &problem.result_code());
        return;
    }
    session.peer_id = message.avps.assigned_session_id.unwrap_or(0);
    session.state = CallState::Established;
    let session = session.clone();
    let mut iccn = tunnel.builder(ctx, MessageType::Iccn);
    iccn.u32(true, avp_type::TX_CONNECT_SPEED, CONNECT_SPEED);
    iccn.u32(true, avp_type::FRAMING_TYPE, 0b01);
    iccn.u32(false, avp_type::RX_CONNECT_SPEED, CONNECT_SPEED);
    tunnel.send(now, ctx, iccn, session.peer_id);
    tunnel.session_up(ctx, &session, message);
}
