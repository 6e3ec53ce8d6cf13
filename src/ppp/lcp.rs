//! LCP (RFC 1661 §5–6): the options MRU, ACCM, Authentication-Protocol, Magic-Number,
//! PFC and ACFC, and the LCP-only codes Protocol-Reject, Echo-Request/Reply and
//! Discard-Request.
//!
//! * MRU: we request ours when it differs from 1500; the peer's is accepted down to
//!   [`MIN_MRU`] (Nak below).
//! * ACCM: accepted and ignored (no async framing in L2TP, RFC 2661 §5.2).
//! * Authentication-Protocol: the authenticator requests the configured methods in
//!   order; on a Nak it moves to the peer's suggestion if allowed and untried, else to
//!   its next untried method, and gives up when none is left. The peer Acks a method
//!   it supports and Naks anything else with its first choice. The authenticator
//!   Rejects a peer asking to be authenticated by us.
//! * Magic-Number (§6.4): a request carrying our own magic number is Nak-ed with a new
//!   one (alone, so the Nak comes back to us on a looped line); after `loopback_limit`
//!   Naks of our magic in a row the link is declared looped back.
//! * PFC, ACFC: accepted when configured (then we may send compressed frames).

use std::time::Instant;

use super::auth::AuthMethod;
use super::fsm::{Extended, Fsm, FsmConfig, Judgement, Negotiate, Output, State, Verdict};
use super::keepalive::{Keepalive, Tick};
use super::{Entropy, SeededEntropy};
use crate::wire::ppp::{OptionIter, Protocol, code, lcp_option};

/// The MRU assumed until negotiated (RFC 1661 §6.1).
pub const DEFAULT_MRU: u16 = 1500;
/// The smallest MRU we accept from a peer.
pub const MIN_MRU: u16 = 128;
/// Why LCP gave up: no authentication method both sides accept.
pub const NO_COMMON_AUTH: &str = "no common authentication method";
/// Why LCP gave up: the peer rejected the Authentication-Protocol option.
pub const AUTH_REFUSED: &str = "peer refused to authenticate";
/// Why LCP gave up: our own Configure-Requests keep coming back.
pub const LOOPBACK: &str = "loopback detected";

/// What LCP negotiates on our side.
#[derive(Clone, Debug)]
pub struct LcpConfig {
    /// Our MRU.
    pub mru: u16,
    /// Authenticator: methods to request, in order. Peer: methods we accept, the
    /// first being our suggestion.
    pub auth: Vec<AuthMethod>,
    /// Whether we authenticate the peer (server) or not (client).
    pub authenticator: bool,
    /// Ack the peer's PFC/ACFC.
    pub accept_compression: bool,
    /// Request PFC/ACFC ourselves.
    pub request_compression: bool,
    /// Naks of our magic number in a row that mean a looped-back line.
    pub loopback_limit: u32,
}

/// What the peer asked for and we acked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerOptions {
    /// The peer's MRU: the largest information field we may send it.
    pub mru: u16,
    /// The peer's magic number (0: none).
    pub magic: u32,
    /// The method the peer (as authenticator) wants us to authenticate with.
    pub auth: Option<AuthMethod>,
    /// We may send one-octet protocol fields.
    pub pfc: bool,
    /// We may leave out `FF 03`.
    pub acfc: bool,
}

impl Default for PeerOptions {
    fn default() -> PeerOptions {
        PeerOptions {
            mru: DEFAULT_MRU,
            magic: 0,
            auth: None,
            pfc: false,
            acfc: false,
        }
    }
}

/// The LCP option logic.
#[derive(Debug)]
pub struct LcpOptions {
    cfg: LcpConfig,
    rng: SeededEntropy,
    mru: Option<u16>,
    magic: u32,
    auth: Option<AuthMethod>,
    tried: Vec<AuthMethod>,
    pfc: bool,
    acfc: bool,
    peer: PeerOptions,
    loop_naks: u32,
}

impl LcpOptions {
    /// Option logic for `cfg`; magic numbers come from a generator seeded by `entropy`.
    pub fn new(cfg: LcpConfig, entropy: &mut dyn Entropy) -> LcpOptions {
        let mut seed = [0u8; 8];
        entropy.fill(&mut seed);
        let mut options = LcpOptions {
            cfg,
            rng: SeededEntropy::new(u64::from_le_bytes(seed)),
            mru: None,
            magic: 0,
            auth: None,
            tried: Vec::new(),
            pfc: false,
            acfc: false,
            peer: PeerOptions::default(),
            loop_naks: 0,
        };
        options.reset();
        options
    }

    fn fresh_magic(&mut self) -> u32 {
        loop {
            let m = self.rng.next_u64() as u32;
            if m != 0 && m != self.magic {
                return m;
            }
        }
    }

    /// What the peer asked for and we acked.
    pub fn peer(&self) -> &PeerOptions {
        &self.peer
    }

    /// Our magic number (0: not negotiated).
    pub fn magic(&self) -> u32 {
        self.magic
    }

    /// Our MRU as requested (the default when the peer rejected the option).
    pub fn mru(&self) -> u16 {
        self.mru.unwrap_or(DEFAULT_MRU)
    }

    /// Authenticator: the method we request (once Opened: the one the peer acked).
    pub fn auth(&self) -> Option<AuthMethod> {
        self.auth
    }

    fn next_method(&mut self, suggestion: Option<AuthMethod>) -> Option<AuthMethod> {
        let untried = |m: &AuthMethod| !self.tried.contains(m);
        match suggestion {
            Some(m) if self.cfg.auth.contains(&m) && untried(&m) => Some(m),
            _ => self.cfg.auth.iter().copied().find(untried),
        }
    }
}

impl Negotiate for LcpOptions {
    fn reset(&mut self) {
        self.mru = (self.cfg.mru != DEFAULT_MRU).then_some(self.cfg.mru);
        self.magic = self.fresh_magic();
        self.tried.clear();
        self.auth = if self.cfg.authenticator {
            self.cfg.auth.first().copied()
        } else {
            None
        };
        self.pfc = self.cfg.request_compression;
        self.acfc = self.cfg.request_compression;
        self.peer = PeerOptions::default();
    }

    fn request(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(mru) = self.mru {
            super::fsm::put_option(&mut out, lcp_option::MRU, &mru.to_be_bytes());
        }
        if let Some(auth) = self.auth {
            super::fsm::put_option(&mut out, lcp_option::AUTH_PROTOCOL, auth.option_value());
        }
        if self.magic != 0 {
            super::fsm::put_option(
                &mut out,
                lcp_option::MAGIC_NUMBER,
                &self.magic.to_be_bytes(),
            );
        }
        if self.pfc {
            super::fsm::put_option(&mut out, lcp_option::PFC, &[]);
        }
        if self.acfc {
            super::fsm::put_option(&mut out, lcp_option::ACFC, &[]);
        }
        out
    }

    fn judge(&mut self, options: &[u8], nak_to_reject: bool) -> Verdict {
        // Our own magic number coming back: answer with a Nak of it alone.
        let looped = OptionIter::new(options).flatten().find(|o| {
            o.option_type == lcp_option::MAGIC_NUMBER
                && self.magic != 0
                && o.value_u32() == Some(self.magic)
        });
        if let Some(option) = looped {
            let mut j = Judgement::new(nak_to_reject);
            let suggestion = self.fresh_magic();
            j.nak(&option, &suggestion.to_be_bytes());
            return j.verdict();
        }
        let mut j = Judgement::new(nak_to_reject);
        let mut peer = PeerOptions::default();
        for option in OptionIter::new(options).flatten() {
            match option.option_type {
                lcp_option::MRU => match option.value_u16() {
                    Some(mru) if mru >= MIN_MRU => peer.mru = mru,
                    Some(_) => j.nak(&option, &MIN_MRU.to_be_bytes()),
                    None => j.reject(&option),
                },
                lcp_option::ACCM if option.value.len() == 4 => {}
                lcp_option::AUTH_PROTOCOL if !self.cfg.authenticator => {
                    match AuthMethod::from_option(option.value) {
                        Some(m) if self.cfg.auth.contains(&m) => peer.auth = Some(m),
                        _ => match self.cfg.auth.first() {
                            Some(preferred) => j.nak(&option, preferred.option_value()),
                            None => j.reject(&option),
                        },
                    }
                }
                lcp_option::MAGIC_NUMBER => match option.value_u32() {
                    Some(0) => {
                        let suggestion = self.fresh_magic();
                        j.nak(&option, &suggestion.to_be_bytes());
                    }
                    Some(magic) => peer.magic = magic,
                    None => j.reject(&option),
                },
                lcp_option::PFC if option.value.is_empty() && self.cfg.accept_compression => {
                    peer.pfc = true;
                }
                lcp_option::ACFC if option.value.is_empty() && self.cfg.accept_compression => {
                    peer.acfc = true;
                }
                _ => j.reject(&option),
            }
        }
        if j.is_ack() {
            self.peer = peer;
        }
        j.verdict()
    }

    fn naked(&mut self, options: &[u8]) -> Result<(), &'static str> {
        let mut magic_naked = false;
        for option in OptionIter::new(options).flatten() {
            match option.option_type {
                lcp_option::MRU => {
                    if let Some(mru) = option.value_u16().filter(|&m| m >= MIN_MRU) {
                        self.mru = Some(mru);
                    }
                }
                lcp_option::AUTH_PROTOCOL if self.cfg.authenticator => {
                    if let Some(current) = self.auth {
                        self.tried.push(current);
                    }
                    let suggestion = AuthMethod::from_option(option.value);
                    self.auth = Some(self.next_method(suggestion).ok_or(NO_COMMON_AUTH)?);
                }
                lcp_option::MAGIC_NUMBER => {
                    magic_naked = true;
                    self.magic = self.fresh_magic();
                }
                _ => {}
            }
        }
        if magic_naked {
            self.loop_naks += 1;
            if self.loop_naks >= self.cfg.loopback_limit.max(1) {
                return Err(LOOPBACK);
            }
        } else {
            self.loop_naks = 0;
        }
        Ok(())
    }

    fn rejected(&mut self, options: &[u8]) -> Result<(), &'static str> {
        for option in OptionIter::new(options).flatten() {
            match option.option_type {
                lcp_option::MRU => self.mru = None,
                lcp_option::AUTH_PROTOCOL if self.cfg.authenticator => return Err(AUTH_REFUSED),
                lcp_option::MAGIC_NUMBER => self.magic = 0,
                lcp_option::PFC => self.pfc = false,
                lcp_option::ACFC => self.acfc = false,
                _ => {}
            }
        }
        Ok(())
    }

    fn extended_code(&self, code: u8) -> bool {
        (code::PROTOCOL_REJECT..=code::DISCARD_REQUEST).contains(&code)
    }
}

/// What LCP tells the link besides the automaton's signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LcpEvent {
    /// The peer Protocol-Rejected a protocol we sent.
    ProtocolRejected(Protocol),
    /// Echo-Requests went unanswered: the link is dead.
    EchoTimeout,
}

/// LCP: the automaton with [`LcpOptions`], plus Echo and Protocol-Reject.
#[derive(Debug)]
pub struct Lcp {
    fsm: Fsm<LcpOptions>,
    keepalive: Keepalive,
}

fn magic_of(data: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(data.get(..4)?.try_into().ok()?))
}

impl Lcp {
    /// LCP in Initial.
    pub fn new(
        cfg: LcpConfig,
        fsm_cfg: FsmConfig,
        keepalive: Keepalive,
        entropy: &mut dyn Entropy,
    ) -> Lcp {
        let mut first_id = [0u8; 1];
        entropy.fill(&mut first_id);
        Lcp {
            fsm: Fsm::new(LcpOptions::new(cfg, entropy), fsm_cfg, first_id[0]),
            keepalive,
        }
    }

    /// The automaton.
    pub fn fsm(&self) -> &Fsm<LcpOptions> {
        &self.fsm
    }

    /// The automaton, for Open/Close/Up/Down.
    pub fn fsm_mut(&mut self) -> &mut Fsm<LcpOptions> {
        &mut self.fsm
    }

    /// The negotiated options.
    pub fn options(&self) -> &LcpOptions {
        self.fsm.negotiator()
    }

    /// Echo-Requests sent and not answered.
    pub fn echo_missed(&self) -> u32 {
        self.keepalive.missed()
    }

    /// The next action; starts and stops keepalives as LCP opens and closes.
    pub fn poll_output(&mut self, now: Instant) -> Option<Output> {
        let out = self.fsm.poll_output()?;
        match out {
            Output::Up => {
                let mru = usize::from(self.options().peer().mru);
                self.fsm.set_max_packet(mru);
                self.keepalive.start(now);
            }
            Output::Down | Output::Finished => self.keepalive.stop(),
            _ => {}
        }
        Some(out)
    }

    /// An LCP packet from the peer.
    pub fn input(&mut self, now: Instant, payload: &[u8]) -> Option<LcpEvent> {
        match self.fsm.input(now, payload)? {
            Extended::CodeRejected(code::ECHO_REQUEST) => {
                self.keepalive.stop();
                None
            }
            Extended::CodeRejected(_) => None,
            Extended::Code {
                code,
                identifier,
                data,
            } => self.extended(now, code, identifier, data),
        }
    }

    fn extended(&mut self, now: Instant, code: u8, id: u8, data: &[u8]) -> Option<LcpEvent> {
        if self.fsm.state() != State::Opened {
            return None;
        }
        let ours = self.options().magic();
        let looped = ours != 0 && magic_of(data) == Some(ours);
        match code {
            code::ECHO_REQUEST if !looped => {
                let mut reply = ours.to_be_bytes().to_vec();
                reply.extend_from_slice(data.get(4..).unwrap_or_default());
                self.fsm.send(code::ECHO_REPLY, id, &reply);
            }
            code::ECHO_REPLY if !looped => self.keepalive.alive(),
            code::PROTOCOL_REJECT => {
                let protocol = Protocol(u16::from_be_bytes(data.get(..2)?.try_into().ok()?));
                if protocol == Protocol::LCP {
                    self.fsm.rxj_minus(now);
                }
                return Some(LcpEvent::ProtocolRejected(protocol));
            }
            _ => {}
        }
        None
    }

    /// Sends a Protocol-Reject for a frame of an unsupported protocol (only when
    /// Opened, RFC 1661 §5.7).
    pub fn protocol_reject(&mut self, protocol: Protocol, information: &[u8]) {
        if self.fsm.state() != State::Opened {
            return;
        }
        let mut data = protocol.0.to_be_bytes().to_vec();
        data.extend_from_slice(information);
        let id = self.fsm.new_id();
        self.fsm.send(code::PROTOCOL_REJECT, id, &data);
    }

    /// The Restart timer and the keepalive timer.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<LcpEvent> {
        self.fsm.handle_timeout(now);
        match self.keepalive.tick(now) {
            Tick::Idle => None,
            Tick::Dead => Some(LcpEvent::EchoTimeout),
            Tick::Send => {
                let id = self.fsm.new_id();
                let magic = self.options().magic().to_be_bytes();
                self.fsm.send(code::ECHO_REQUEST, id, &magic);
                None
            }
        }
    }

    /// The earliest timer.
    pub fn next_timeout(&self) -> Option<Instant> {
        match (self.fsm.next_timeout(), self.keepalive.next_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests;
