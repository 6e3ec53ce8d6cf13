//! One control connection, as both the LNS and the LAC hold it: ids, state, the
//! reliable channel, the sessions, keepalive (HELLO, §6.5) and teardown (StopCCN,
//! §5.7). What each role does with SCCRQ/SCCRP/SCCCN and with calls lives in
//! `lns.rs`, `session.rs` and `lac.rs`.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::wire::l2tp::{MessageType, Packet, Sequence, avp_type};

use super::build::Builder;
use super::config::{Entropy, TunnelConfig, random_16};
use super::event::{Event, PeerKey, SessionInfo, SessionRef};
use super::ids::IdAllocator;
use super::message::{Kind, Message};
use super::reliable::Channel;
use super::result::{ResultCode, cdn, error};
use super::session::{CallState, Session};
use super::stats::Stats;

/// Where a control connection is in its life (§7.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// LNS: created for an SCCRQ not yet processed.
    Idle,
    /// LAC: SCCRQ sent; our challenge, if we sent one, to check in the SCCRP.
    WaitCtlReply { challenge: Option<[u8; 16]> },
    /// LNS: SCCRP sent; our challenge, if we sent one, to check in the SCCCN.
    WaitCtlConn { challenge: Option<[u8; 16]> },
    /// Calls may be placed.
    Established,
    /// We sent a StopCCN and wait for its acknowledgement.
    Closing,
    /// The peer sent a StopCCN; we re-acknowledge its retransmissions until then.
    Lingering { until: Instant },
    /// Nothing left to do: the owner removes the tunnel.
    Dead,
}

/// What a tunnel needs from its owner while it handles something.
pub(crate) struct Ctx<'a> {
    pub cfg: &'a TunnelConfig,
    pub events: &'a mut VecDeque<Event>,
    pub stats: &'a mut Stats,
    pub entropy: &'a mut dyn Entropy,
}

/// One control connection and its sessions.
#[derive(Debug)]
pub(crate) struct Tunnel {
    pub local_id: u16,
    pub peer_id: u16,
    pub peer: PeerKey,
    pub worker: u16,
    pub state: State,
    /// The peer's Host Name, printable.
    pub host_name: String,
    /// Sessions by the id we assigned.
    pub sessions: HashMap<u16, Session>,
    pub session_ids: IdAllocator,
    channel: Channel,
    last_heard: Instant,
    /// Next housekeeping: setup timeout, HELLO, half-open sessions.
    tick_at: Option<Instant>,
    /// Earliest instant the owner's timer heap holds for this tunnel.
    pub scheduled: Option<Instant>,
    down_reported: bool,
}

/// How long a control connection may take to establish: twice a full retransmission
/// cycle, by when a live peer has either finished or given up.
fn setup_timeout(cfg: &TunnelConfig) -> Duration {
    cfg.retransmit.full_cycle().saturating_mul(2)
}

impl Tunnel {
    /// A tunnel with our id `local_id` towards `peer`, in `state`.
    pub(crate) fn new(
        now: Instant,
        ctx: &mut Ctx<'_>,
        local_id: u16,
        peer: PeerKey,
        worker: u16,
        worker_bits: u8,
        state: State,
    ) -> Tunnel {
        let start = super::config::random_u16(ctx.entropy);
        Tunnel {
            local_id,
            peer_id: 0,
            peer,
            worker,
            state,
            host_name: String::new(),
            sessions: HashMap::new(),
            session_ids: IdAllocator::new(worker_bits, start),
            channel: Channel::new(ctx.cfg.window()),
            last_heard: now,
            tick_at: Some(now + setup_timeout(ctx.cfg)),
            scheduled: None,
            down_reported: false,
        }
    }

    /// Records the peer's Assigned Tunnel ID and Receive Window Size.
    pub(crate) fn set_peer(&mut self, peer_id: u16, window: Option<u16>) {
        self.peer_id = peer_id;
        self.channel.set_peer_tunnel_id(peer_id);
        self.channel.set_peer_window(window.unwrap_or(4));
    }

    /// The control connection is up: keepalive from now on.
    pub(crate) fn established(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        self.state = State::Established;
        self.tick_at = ctx.cfg.hello_interval.map(|interval| now + interval);
        ctx.stats.tunnels_established += 1;
        tracing::debug!(tunnel = self.local_id, peer = ?self.peer, "l2tp: tunnel up");
        ctx.events.push_back(Event::TunnelUp {
            peer: self.peer,
            worker: self.worker,
            local_tunnel_id: self.local_id,
            peer_tunnel_id: self.peer_id,
            host_name: self.host_name.clone(),
        });
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.state == State::Dead
    }

    /// Whether the tunnel is going away (StopCCN sent or received).
    pub(crate) fn is_closing(&self) -> bool {
        matches!(
            self.state,
            State::Closing | State::Lingering { .. } | State::Dead
        )
    }

    /// A builder for a message of `message_type`, hiding sensitive AVPs if configured.
    pub(crate) fn builder(&self, ctx: &mut Ctx<'_>, message_type: MessageType) -> Builder {
        let builder = Builder::new(message_type);
        match &ctx.cfg.secret {
            Some(secret) if ctx.cfg.hides() => builder.hiding(secret, random_16(ctx.entropy)),
            _ => builder,
        }
    }

    /// Sends a message reliably to the peer's tunnel and `session_id`.
    pub(crate) fn send(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        builder: Builder,
        session_id: u16,
    ) {
        let Some(bytes) = builder.finish(self.peer_id, session_id) else {
            return;
        };
        let mut out = Vec::new();
        self.channel
            .send(now, bytes, &ctx.cfg.retransmit, &mut out, ctx.stats);
        self.transmit(ctx, out);
    }

    fn transmit(&self, ctx: &mut Ctx<'_>, out: Vec<Vec<u8>>) {
        for bytes in out {
            ctx.events.push_back(Event::Transmit {
                peer: self.peer,
                bytes,
            });
        }
    }

    /// Hands a received message (checked, for this tunnel) to the reliable layer;
    /// returns the messages to act on, in order.
    pub(crate) fn receive(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        packet: &Packet<&[u8]>,
    ) -> Vec<Vec<u8>> {
        let (Some(ns), Some(nr)) = (packet.ns(), packet.nr()) else {
            return Vec::new();
        };
        self.last_heard = now;
        let mut out = Vec::new();
        let bytes = packet.clone().into_inner();
        let delivered = self.channel.receive(
            now,
            Sequence { ns, nr },
            bytes,
            packet.is_zlb(),
            &ctx.cfg.retransmit,
            ctx.cfg.ack_delay,
            &mut out,
            ctx.stats,
        );
        self.transmit(ctx, out);
        delivered
    }

    /// Does what is due at `now`: retransmissions, acknowledgements, keepalive,
    /// timeouts. Called after every input and when the tunnel's deadline passes.
    pub(crate) fn poll(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        if self.tick_at.is_some_and(|at| at <= now) {
            self.tick(now, ctx);
        }
        let mut out = Vec::new();
        let result = self
            .channel
            .poll(now, &ctx.cfg.retransmit, &mut out, ctx.stats);
        self.transmit(ctx, out);
        if result.is_err() {
            if !self.is_closing() {
                ctx.stats.retransmit_exhausted += 1;
                let retries = ctx.cfg.retransmit.max_retries;
                self.report_down(
                    ctx,
                    format!(
                        "peer not responding: no acknowledgement after {retries} retransmissions"
                    ),
                );
            }
            self.state = State::Dead;
        }
        match self.state {
            State::Closing if self.channel.is_idle() => self.state = State::Dead,
            State::Lingering { until } if until <= now => self.state = State::Dead,
            _ => {}
        }
    }

    /// When [`Tunnel::poll`] next has something to do.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let linger = match self.state {
            State::Lingering { until } => Some(until),
            _ => None,
        };
        [self.channel.deadline(), self.tick_at, linger]
            .into_iter()
            .flatten()
            .min()
    }

    fn tick(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        self.tick_at = None;
        match self.state {
            State::Idle | State::WaitCtlReply { .. } | State::WaitCtlConn { .. } => {
                let result =
                    ResultCode::general_error(error::NONE, "control connection setup timed out");
                self.stop(now, ctx, result);
            }
            State::Established => {
                let Some(interval) = ctx.cfg.hello_interval else {
                    return;
                };
                let quiet_until = self.last_heard + interval;
                if quiet_until <= now && self.channel.is_idle() {
                    let hello = self.builder(ctx, MessageType::Hello);
                    self.send(now, ctx, hello, 0);
                }
                self.expire_half_open(now, ctx, interval);
                self.tick_at = Some(if quiet_until > now {
                    quiet_until
                } else {
                    now + interval
                });
            }
            _ => {}
        }
    }

    /// Clears calls that started more than `limit` ago and never came up.
    fn expire_half_open(&mut self, now: Instant, ctx: &mut Ctx<'_>, limit: Duration) {
        let stale: Vec<u16> = self
            .sessions
            .values()
            .filter(|s| s.state != CallState::Established && s.state != CallState::Pending)
            .filter(|s| s.created + limit <= now)
            .map(|s| s.local_id)
            .collect();
        for id in stale {
            let result = ResultCode::new(cdn::TIMEOUT, None, "call not established in time");
            self.close_session(now, ctx, id, &result);
        }
    }

    /// Tears the tunnel down with a StopCCN carrying `result` (§5.7). Sessions end
    /// with it. Does nothing if the tunnel is already going away.
    pub(crate) fn stop(&mut self, now: Instant, ctx: &mut Ctx<'_>, result: ResultCode) {
        if self.is_closing() {
            return;
        }
        self.report_down(ctx, format!("StopCCN sent: {}", result.describe(true)));
        let mut stop = self.builder(ctx, MessageType::StopCcn);
        stop.u16(true, avp_type::ASSIGNED_TUNNEL_ID, self.local_id);
        stop.result_code(&result);
        self.send(now, ctx, stop, 0);
        self.state = State::Closing;
        self.tick_at = None;
    }

    /// The peer sent a StopCCN: acknowledge at once and linger a full retransmission
    /// cycle to acknowledge its retransmissions (§5.7).
    fn peer_stopped(&mut self, now: Instant, ctx: &mut Ctx<'_>, message: &Message) {
        let cause = match &message.avps.result_code {
            Some(result) => format!("peer StopCCN: {}", result.describe(true)),
            None => "peer StopCCN without a result code".to_string(),
        };
        self.report_down(ctx, cause);
        self.channel.abandon();
        self.channel.ack_now(now);
        self.state = State::Lingering {
            until: now + ctx.cfg.retransmit.full_cycle(),
        };
        self.tick_at = None;
    }

    /// Reports the tunnel (and its sessions) down, once.
    pub(crate) fn report_down(&mut self, ctx: &mut Ctx<'_>, cause: String) {
        if self.down_reported {
            return;
        }
        self.down_reported = true;
        let session_cause = format!("tunnel down: {cause}");
        let mut sessions: Vec<Session> = self.sessions.drain().map(|(_, s)| s).collect();
        sessions.sort_by_key(|s| s.local_id);
        for session in sessions {
            self.session_down(ctx, &session, session_cause.clone());
        }
        ctx.stats.tunnels_down += 1;
        tracing::debug!(tunnel = self.local_id, peer = ?self.peer, %cause, "l2tp: tunnel down");
        ctx.events.push_back(Event::TunnelDown {
            peer: self.peer,
            local_tunnel_id: self.local_id,
            peer_tunnel_id: self.peer_id,
            cause,
        });
    }

    /// Handles what every role handles alike. Returns `false` for the messages the
    /// role must look at (after checking the message's problem for tunnel messages).
    pub(crate) fn handle_common(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        message: &Message,
    ) -> bool {
        match message.kind {
            Kind::Known(MessageType::StopCcn) => {
                if !matches!(self.state, State::Lingering { .. } | State::Dead) {
                    self.peer_stopped(now, ctx, message);
                }
                true
            }
            _ if self.is_closing() => {
                ctx.stats.unexpected += 1;
                true
            }
            Kind::Unknown { value, mandatory } => {
                if mandatory {
                    ctx.stats.invalid += 1;
                    let result = ResultCode::general_error(
                        error::BAD_VALUE,
                        format!("unknown message type {value} with the M bit"),
                    );
                    self.stop(now, ctx, result);
                } else {
                    ctx.stats.unexpected += 1;
                }
                true
            }
            kind if !kind.is_session_level() => match &message.problem {
                Some(problem) => {
                    ctx.stats.invalid += 1;
                    self.stop(now, ctx, problem.result_code());
                    true
                }
                None => kind == Kind::Known(MessageType::Hello),
            },
            _ => false,
        }
    }

    /// Our ids and the peer's for `session`.
    pub(crate) fn session_ref(&self, session: &Session) -> SessionRef {
        SessionRef {
            peer: self.peer,
            local_tunnel_id: self.local_id,
            local_session_id: session.local_id,
            peer_tunnel_id: self.peer_id,
            peer_session_id: session.peer_id,
        }
    }

    /// Reports a session up.
    pub(crate) fn session_up(&self, ctx: &mut Ctx<'_>, session: &Session, message: &Message) {
        let avps = &message.avps;
        let text = |bytes: &Option<Vec<u8>>| bytes.as_deref().map(super::result::printable);
        ctx.stats.sessions_established += 1;
        ctx.events.push_back(Event::SessionUp(SessionInfo {
            peer: self.peer,
            worker: self.worker,
            local_tunnel_id: self.local_id,
            local_session_id: session.local_id,
            peer_tunnel_id: self.peer_id,
            peer_session_id: session.peer_id,
            call_serial_number: session.call_serial,
            framing_type: avps.framing_type.unwrap_or(0),
            tx_connect_speed: avps.tx_connect_speed.unwrap_or(0),
            calling_number: text(&session.calling_number).or_else(|| text(&avps.calling_number)),
            called_number: text(&session.called_number).or_else(|| text(&avps.called_number)),
            sequencing_required: avps.sequencing_required,
        }));
    }

    /// Reports a session down if it was up.
    pub(crate) fn session_down(&self, ctx: &mut Ctx<'_>, session: &Session, cause: String) {
        if session.state != CallState::Established {
            return;
        }
        ctx.stats.sessions_down += 1;
        ctx.events.push_back(Event::SessionDown {
            session: self.session_ref(session),
            cause,
        });
    }

    /// Sends a CDN (§6.11) for our session `local_id` to the peer's `peer_session_id`.
    pub(crate) fn send_cdn(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        local_id: u16,
        peer_session_id: u16,
        result: &ResultCode,
    ) {
        let mut message = self.builder(ctx, MessageType::Cdn);
        message.result_code(result);
        message.u16(true, avp_type::ASSIGNED_SESSION_ID, local_id);
        self.send(now, ctx, message, peer_session_id);
    }

    /// Clears our session `local_id` with a CDN; `false` if there is no such session.
    pub(crate) fn close_session(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        local_id: u16,
        result: &ResultCode,
    ) -> bool {
        let Some(session) = self.sessions.remove(&local_id) else {
            return false;
        };
        if session.state == CallState::Pending {
            return true; // the peer never heard of it
        }
        self.send_cdn(now, ctx, session.local_id, session.peer_id, result);
        let cause = format!("CDN sent: {}", result.describe(false));
        self.session_down(ctx, &session, cause);
        true
    }
}
