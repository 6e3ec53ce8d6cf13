//! One PPP link: LCP, then authentication, then IPCP (RFC 1661 §3.2 phases).
//!
//! Establish: LCP negotiates (both sides open actively, as L2TP peers do). When LCP
//! opens, Authenticate: the server starts the method the peer acked and hands the
//! peer's credentials out as [`Event::Authenticate`]; the client answers with its
//! password. Network: IPCP, and [`Event::Up`] when it opens. Terminate: on any
//! failure, peer Terminate, echo timeout or [`Link::close`], one [`Event::Down`]
//! with the cause, LCP's Terminate exchange, then [`Event::Finished`].
//!
//! LCP renegotiating before the link is up (a lost Configure-Ack makes the peer
//! retransmit its request after we opened) restarts from Establish; after
//! [`Event::Up`] it takes the link down ("peer renegotiated LCP"): the data plane
//! would have to be told about a second authentication. IPCP renegotiating to the
//! same addresses is silent.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::Instant;

use super::auth::{AuthMethod, AuthOutput, AuthPeer, Authenticator, Granted};
use super::config::{ClientConfig, ServerConfig};
use super::event::{DownReason, Event, LinkUp};
use super::fsm::{Fsm, State};
use super::ipcp::IpcpOptions;
use super::keepalive::Keepalive;
use super::lcp::{Lcp, LcpConfig, LcpEvent};
use super::{Entropy, SystemEntropy, frame};
use crate::aaa::AuthResult;
use crate::wire::ppp::{Frame, Protocol};

/// The link phases of RFC 1661 §3.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// LCP is negotiating.
    Establish,
    /// Authenticating (the backend may be working).
    Authenticate,
    /// IPCP is negotiating, or open ([`Link::is_up`]).
    Network,
    /// Going down: LCP's Terminate exchange.
    Terminate,
    /// Finished.
    Dead,
}

/// Frames the link did not act on, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Frames given to [`Link::input`].
    pub frames_in: u64,
    /// Frames with a broken PPP header.
    pub malformed: u64,
    /// Frames of a protocol not expected in the current phase.
    pub out_of_phase: u64,
    /// Frames of unknown protocols answered with Protocol-Reject.
    pub protocol_rejected: u64,
}

#[derive(Debug)]
enum Side {
    Server(ServerConfig),
    Client(ClientConfig),
}

#[derive(Debug)]
enum Auth {
    None,
    Server(Authenticator),
    Client(AuthPeer),
}

/// One PPP link, sans-IO. See the module docs.
pub struct Link {
    side: Side,
    phase: Phase,
    lcp: Lcp,
    auth: Auth,
    method: Option<AuthMethod>,
    ipcp: Option<Fsm<IpcpOptions>>,
    entropy: Box<dyn Entropy>,
    events: VecDeque<Event>,
    granted: Option<Granted>,
    stale_results: u32,
    up: Option<LinkUp>,
    down: bool,
    session_deadline: Option<Instant>,
    stats: LinkStats,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("phase", &self.phase)
            .field("lcp", &self.lcp.fsm().state())
            .field("up", &self.up)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// The gateway side, starting LCP now (random challenges from the system).
    pub fn server(cfg: ServerConfig, now: Instant) -> Link {
        Link::server_with_entropy(cfg, now, Box::new(SystemEntropy))
    }

    /// The gateway side with a given randomness source.
    pub fn server_with_entropy(
        cfg: ServerConfig,
        now: Instant,
        mut entropy: Box<dyn Entropy>,
    ) -> Link {
        let lcp_cfg = LcpConfig {
            mru: cfg.mru,
            auth: cfg.auth.clone(),
            authenticator: true,
            accept_compression: cfg.accept_compression,
            request_compression: false,
            loopback_limit: cfg.timing.max_failure,
        };
        let keepalive = Keepalive::new(cfg.timing.echo_interval, cfg.timing.echo_failures);
        let lcp = Lcp::new(lcp_cfg, cfg.timing.fsm(), keepalive, entropy.as_mut());
        Link::start(Side::Server(cfg), lcp, entropy, now)
    }

    /// A client, starting LCP now.
    pub fn client(cfg: ClientConfig, now: Instant) -> Link {
        Link::client_with_entropy(cfg, now, Box::new(SystemEntropy))
    }

    /// A client with a given randomness source.
    pub fn client_with_entropy(
        cfg: ClientConfig,
        now: Instant,
        mut entropy: Box<dyn Entropy>,
    ) -> Link {
        let lcp_cfg = LcpConfig {
            mru: cfg.mru,
            auth: cfg.auth.clone(),
            authenticator: false,
            accept_compression: true,
            request_compression: cfg.request_compression,
            loopback_limit: cfg.timing.max_failure,
        };
        let keepalive = Keepalive::new(cfg.timing.echo_interval, cfg.timing.echo_failures);
        let lcp = Lcp::new(lcp_cfg, cfg.timing.fsm(), keepalive, entropy.as_mut());
        Link::start(Side::Client(cfg), lcp, entropy, now)
    }

    fn start(side: Side, lcp: Lcp, entropy: Box<dyn Entropy>, now: Instant) -> Link {
        let mut link = Link {
            side,
            phase: Phase::Establish,
            lcp,
            auth: Auth::None,
            method: None,
            ipcp: None,
            entropy,
            events: VecDeque::new(),
            granted: None,
            stale_results: 0,
            up: None,
            down: false,
            session_deadline: None,
            stats: LinkStats::default(),
        };
        link.lcp.fsm_mut().open(now);
        link.lcp.fsm_mut().up(now);
        link.pump(now);
        link
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether [`Event::Up`] was emitted and the link is not going down.
    pub fn is_up(&self) -> bool {
        self.up.is_some() && !self.down
    }

    /// What [`Event::Up`] said.
    pub fn link_up(&self) -> Option<&LinkUp> {
        self.up.as_ref()
    }

    /// Server: the address from the backend's Accept that the link took (release it
    /// to the pool after [`Event::Down`]).
    pub fn assigned_address(&self) -> Option<Ipv4Addr> {
        self.granted
            .as_ref()
            .and_then(|g| g.attributes.framed_address)
    }

    /// Counters of frames not acted on.
    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Link::handle_timeout`] wants to be called (none once finished).
    pub fn next_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Dead {
            return None;
        }
        let auth = match &self.auth {
            Auth::Server(a) => a.next_timeout(),
            Auth::Client(a) => a.next_timeout(),
            Auth::None => None,
        };
        let ipcp = self.ipcp.as_ref().and_then(Fsm::next_timeout);
        [self.lcp.next_timeout(), auth, ipcp, self.session_deadline]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs the timers that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Dead {
            return;
        }
        if self.lcp.handle_timeout(now) == Some(LcpEvent::EchoTimeout) {
            self.shutdown(now, DownReason::EchoTimeout);
        }
        match &mut self.auth {
            Auth::Server(a) => a.handle_timeout(now, self.entropy.as_mut()),
            Auth::Client(a) => a.handle_timeout(now),
            Auth::None => {}
        }
        if let Some(ipcp) = &mut self.ipcp {
            ipcp.handle_timeout(now);
        }
        if self.session_deadline.is_some_and(|d| d <= now) {
            self.session_deadline = None;
            self.shutdown(now, DownReason::SessionTimeout);
        }
        self.pump(now);
    }

    /// A PPP frame from the L2TP session (with or without `FF 03`, protocol field
    /// compressed or not). Anything may come in; nothing panics.
    pub fn input(&mut self, now: Instant, bytes: &[u8]) {
        if self.phase == Phase::Dead {
            return;
        }
        self.stats.frames_in += 1;
        let Ok(ppp) = Frame::new_checked(bytes) else {
            self.stats.malformed += 1;
            return;
        };
        let payload = ppp.payload();
        match ppp.protocol() {
            Protocol::LCP => {
                if let Some(LcpEvent::ProtocolRejected(p)) = self.lcp.input(now, payload) {
                    self.protocol_rejected(now, p);
                }
            }
            p @ (Protocol::PAP | Protocol::CHAP) => match &mut self.auth {
                Auth::Server(a) if a.protocol() == p => a.input(now, payload),
                Auth::Client(a) if a.protocol() == p => {
                    a.input(now, payload, self.entropy.as_mut());
                }
                _ => self.stats.out_of_phase += 1,
            },
            Protocol::IPCP => match &mut self.ipcp {
                Some(ipcp) => {
                    ipcp.input(now, payload);
                }
                None => self.stats.out_of_phase += 1,
            },
            p if self.phase == Phase::Network && p != Protocol::IPV4 => {
                self.stats.protocol_rejected += 1;
                self.lcp.protocol_reject(p, payload);
            }
            _ => self.stats.out_of_phase += 1,
        }
        self.pump(now);
    }

    /// Server: the backend's answer to the last [`Event::Authenticate`]. Returns
    /// whether the link took it; if not (the link is going down, the answer is stale
    /// or late) and it was an Accept with an address from the pool, release it.
    pub fn auth_result(&mut self, now: Instant, result: AuthResult) -> bool {
        if self.stale_results > 0 {
            self.stale_results -= 1;
            return false;
        }
        let taken = match &mut self.auth {
            Auth::Server(a) if a.is_verifying() && self.phase == Phase::Authenticate => {
                a.result(now, result, self.entropy.as_mut());
                true
            }
            _ => false,
        };
        self.pump(now);
        taken
    }

    /// Closes the link (Terminate-Request); `reason` becomes the Down cause, e.g.
    /// "admin close".
    pub fn close(&mut self, now: Instant, reason: &str) {
        self.shutdown(now, DownReason::Closed(reason.to_string()));
        self.pump(now);
    }

    /// The L2TP session under the link is gone: down and finished at once.
    pub fn lower_down(&mut self, _now: Instant) {
        if self.phase == Phase::Dead {
            return;
        }
        self.emit_down(DownReason::LowerLayerDown);
        self.finish();
    }

    // ---- internals (the phase handlers are in link/phases.rs) ----

    fn emit(&mut self, protocol: Protocol, packet: &[u8]) {
        self.events.push_back(Event::Send(frame(protocol, packet)));
    }

    fn emit_down(&mut self, reason: DownReason) {
        if !self.down {
            self.down = true;
            self.events.push_back(Event::Down(reason));
        }
    }

    fn finish(&mut self) {
        self.phase = Phase::Dead;
        self.ipcp = None;
        self.auth = Auth::None;
        self.session_deadline = None;
        self.events.push_back(Event::Finished);
    }

    /// Goes down for `reason`: one Down event, then LCP's Terminate exchange.
    fn shutdown(&mut self, now: Instant, reason: DownReason) {
        if matches!(self.phase, Phase::Terminate | Phase::Dead) {
            return;
        }
        if let Auth::Server(a) = &self.auth
            && a.is_verifying()
        {
            self.stale_results += 1;
        }
        let text = match &reason {
            DownReason::Closed(text) => text.clone(),
            other => other.to_string(),
        };
        self.lcp.fsm_mut().set_terminate_data(text.as_bytes());
        self.emit_down(reason);
        self.phase = Phase::Terminate;
        self.ipcp = None;
        self.session_deadline = None;
        self.lcp.fsm_mut().close(now);
    }

    /// Drains the machines' outputs until nothing moves.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut moved = false;
            while let Some(out) = self.lcp.poll_output(now) {
                moved = true;
                self.on_lcp(now, out);
            }
            while let Some(out) = self.poll_auth() {
                moved = true;
                self.on_auth(now, out);
            }
            while let Some(out) = self.ipcp.as_mut().and_then(Fsm::poll_output) {
                moved = true;
                self.on_ipcp(now, out);
            }
            if !moved && !self.check_giving_up(now) {
                break;
            }
        }
    }

    /// An automaton that gave up by itself (Nak loop, no common method, loopback,
    /// IPCP refused) is in Closing/Stopping before its tlf: go down at once. Once
    /// terminating, a closed LCP means finished. Returns whether it acted.
    fn check_giving_up(&mut self, now: Instant) -> bool {
        let lcp_state = self.lcp.fsm().state();
        match self.phase {
            Phase::Dead => false,
            Phase::Terminate => {
                let closed = matches!(lcp_state, State::Closed | State::Stopped | State::Initial);
                if closed {
                    self.finish();
                }
                closed
            }
            _ if matches!(lcp_state, State::Closing | State::Stopping) => {
                let reason = lcp_reason(self.lcp.fsm().cause());
                self.shutdown(now, reason);
                true
            }
            _ => {
                let ipcp = self.ipcp.as_ref().map(|i| (i.state(), i.cause().cloned()));
                match ipcp {
                    Some((State::Closing | State::Stopping | State::Stopped, cause)) => {
                        self.shutdown(now, ipcp_reason(cause.as_ref()));
                        true
                    }
                    _ => false,
                }
            }
        }
    }

    fn poll_auth(&mut self) -> Option<AuthOutput> {
        match &mut self.auth {
            Auth::Server(a) => a.poll(),
            Auth::Client(a) => a.poll(),
            Auth::None => None,
        }
    }
}

mod phases;

use phases::{ipcp_reason, lcp_reason};
