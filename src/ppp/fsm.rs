//! The option-negotiation automaton of RFC 1661 §4, shared by LCP and IPCP.
//!
//! [`Fsm`] holds the state (Initial … Opened), the Restart timer and counter, and the
//! Max-Configure / Max-Terminate / Max-Failure limits, and turns the events of §4.1
//! (Up, Down, Open, Close, TO±, RCR±, RCA, RCN, RTR, RTA, RUC, RXJ±) into the actions
//! of §4.4 (tlu, tld, tls, tlf, irc, zrc, scr, sca, scn, str, sta, scj). What to
//! request and how to judge the peer's options is the protocol's business, behind
//! [`Negotiate`]. Actions come out of [`Fsm::poll_output`]: control packets to send
//! (without the PPP header: the owner knows its protocol number) and the four layer
//! signals.
//!
//! Readings of the RFC that keep a lossy link from flapping:
//!
//! * a reply (Ack, Nak, Reject) is taken once per Configure-Request — a duplicate is
//!   discarded, so a duplicated Configure-Ack cannot take an Opened link down (pppd);
//! * a retransmission (TO+) repeats the Configure-Request with its Identifier (§5.1
//!   allows it, pppd does it), and in Opened a Configure-Request identical in
//!   Identifier and options to the one we last acked is a retransmission whose Ack
//!   was lost: it is acked again instead of restarting the negotiation (RCR in
//!   Opened is otherwise tld, scr, sca/n). Without this, losing every other frame
//!   can keep both sides renegotiating forever, each one's retransmission knocking
//!   the other out of Opened;
//! * a peer that keeps sending Naks or Rejects is given up on after Max-Configure of
//!   them ("not converging"), because RCN re-arms the Restart counter and would
//!   otherwise never time out.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::wire::ppp::{ConfigOption, HEADER_LEN, Packet, Repr, code};

/// The Restart timer and the three counters (RFC 1661 §4.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsmConfig {
    /// Restart timer (default 3 s).
    pub restart: Duration,
    /// Configure-Requests sent without an answer before giving up (default 10).
    pub max_configure: u32,
    /// Terminate-Requests sent without a Terminate-Ack (default 2).
    pub max_terminate: u32,
    /// Configure-Naks sent without a Configure-Ack before Naks turn into Rejects
    /// (default 5).
    pub max_failure: u32,
}

impl Default for FsmConfig {
    fn default() -> FsmConfig {
        FsmConfig {
            restart: Duration::from_secs(3),
            max_configure: 10,
            max_terminate: 2,
            max_failure: 5,
        }
    }
}

/// The ten states of §4.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Lower layer down, no Open.
    Initial,
    /// Open, waiting for the lower layer.
    Starting,
    /// Lower layer up, no Open.
    Closed,
    /// Negotiation ended (Terminate, timeout), waiting for the peer.
    Stopped,
    /// Terminate-Request sent after Close.
    Closing,
    /// Terminate-Request sent (or received) while open.
    Stopping,
    /// Configure-Request sent.
    ReqSent,
    /// Configure-Request sent and acked.
    AckRcvd,
    /// Configure-Request sent, peer's acked.
    AckSent,
    /// Both acked.
    Opened,
}

/// The answer to a peer's Configure-Request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// All options acceptable: Configure-Ack with the options as received.
    Ack,
    /// Configure-Nak with these options (suggested values).
    Nak(Vec<u8>),
    /// Configure-Reject with these options (copied as received).
    Reject(Vec<u8>),
}

/// Builds a [`Verdict`] option by option, applying Max-Failure: once it is reached,
/// what would be Nak-ed is Rejected instead and options we would ask the peer to add
/// are dropped (RFC 1661 §4.6).
#[derive(Debug)]
pub struct Judgement {
    naks: Vec<u8>,
    rejects: Vec<u8>,
    nak_to_reject: bool,
}

/// Appends one option (Type, Length, Value) to `out`; values over 253 octets are
/// not representable and are left out.
pub fn put_option(out: &mut Vec<u8>, option_type: u8, value: &[u8]) {
    let option = ConfigOption { option_type, value };
    let mut buf = [0u8; 255];
    if let Ok(len) = option.emit(&mut buf) {
        out.extend_from_slice(&buf[..len]);
    }
}

impl Judgement {
    /// Starts judging; `nak_to_reject` is true once Max-Failure is reached.
    pub fn new(nak_to_reject: bool) -> Judgement {
        Judgement {
            naks: Vec::new(),
            rejects: Vec::new(),
            nak_to_reject,
        }
    }

    /// Rejects an option as received.
    pub fn reject(&mut self, option: &ConfigOption<'_>) {
        put_option(&mut self.rejects, option.option_type, option.value);
    }

    /// Naks an option, suggesting `value`.
    pub fn nak(&mut self, option: &ConfigOption<'_>, value: &[u8]) {
        if self.nak_to_reject {
            self.reject(option);
        } else {
            put_option(&mut self.naks, option.option_type, value);
        }
    }

    /// Asks the peer to add an option it did not request.
    pub fn nak_missing(&mut self, option_type: u8, value: &[u8]) {
        if !self.nak_to_reject {
            put_option(&mut self.naks, option_type, value);
        }
    }

    /// Whether everything so far is acceptable.
    pub fn is_ack(&self) -> bool {
        self.naks.is_empty() && self.rejects.is_empty()
    }

    /// The verdict: Reject if anything is rejected, else Nak if anything is Nak-ed.
    pub fn verdict(self) -> Verdict {
        if !self.rejects.is_empty() {
            Verdict::Reject(self.rejects)
        } else if !self.naks.is_empty() {
            Verdict::Nak(self.naks)
        } else {
            Verdict::Ack
        }
    }
}

/// The per-protocol option logic of LCP, IPCP, ….
///
/// Option lists handed to these methods have been checked to parse (every option's
/// Length is sane), so implementations may skip `Err` items.
pub trait Negotiate {
    /// A new negotiation starts (tls, or renegotiation from Opened/Stopped): forget
    /// what was learnt from the peer and go back to the configured requests.
    fn reset(&mut self);
    /// The options of our next Configure-Request.
    fn request(&mut self) -> Vec<u8>;
    /// Judges the peer's Configure-Request. Record the peer's values only when the
    /// verdict is Ack. `nak_to_reject`: Max-Failure reached (use [`Judgement`]).
    fn judge(&mut self, options: &[u8], nak_to_reject: bool) -> Verdict;
    /// The peer acked our request (the options are what we sent).
    fn acked(&mut self, _options: &[u8]) {}
    /// The peer Nak-ed our request; adjust the next one. `Err` gives up with a reason.
    fn naked(&mut self, options: &[u8]) -> Result<(), &'static str>;
    /// The peer rejected some of our options (all of them ones we sent).
    fn rejected(&mut self, options: &[u8]) -> Result<(), &'static str>;
    /// Whether `code` beyond 1–7 belongs to this protocol (LCP: 8–11); such packets
    /// are handed back by [`Fsm::input`] instead of being Code-Rejected.
    fn extended_code(&self, _code: u8) -> bool {
        false
    }
}

/// What the automaton asks of its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send this control packet (Code, Identifier, Length, Data).
    Send(Vec<u8>),
    /// This-Layer-Up.
    Up,
    /// This-Layer-Down.
    Down,
    /// This-Layer-Started.
    Started,
    /// This-Layer-Finished.
    Finished,
}

/// Why the automaton left (or could not reach) Opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cause {
    /// Max-Configure Configure-Requests went unanswered (TO-).
    Timeout,
    /// The peer sent Terminate-Request (its data, usually a reason text).
    PeerTerminated(Vec<u8>),
    /// The peer Code-Rejected a code we need, or Protocol-Rejected the protocol.
    PeerRejected,
    /// The peer kept Nak-ing or Rejecting our requests.
    NotConverging,
    /// The protocol gave up on the peer's Nak or Reject.
    Failed(&'static str),
}

/// A packet the automaton leaves to its owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extended<'a> {
    /// A code the protocol claimed with [`Negotiate::extended_code`].
    Code {
        /// Code.
        code: u8,
        /// Identifier.
        identifier: u8,
        /// Data up to Length.
        data: &'a [u8],
    },
    /// The peer Code-Rejected an extended code (RXJ+).
    CodeRejected(u8),
}

enum Counter {
    Configure,
    Terminate,
}

/// One instance of the automaton with its protocol's option logic.
#[derive(Debug)]
pub struct Fsm<N> {
    neg: N,
    state: State,
    cfg: FsmConfig,
    restart_count: u32,
    failures: u32,
    naks_received: u32,
    deadline: Option<Instant>,
    next_id: u8,
    req_id: u8,
    request: Vec<u8>,
    reply_seen: bool,
    last_ack: Option<(u8, Vec<u8>)>,
    term_data: Vec<u8>,
    cause: Option<Cause>,
    out: VecDeque<Output>,
    max_packet: usize,
    discarded: u64,
}

/// Encodes a control packet.
pub fn packet(code: u8, identifier: u8, data: &[u8]) -> Vec<u8> {
    let data = &data[..data.len().min(usize::from(u16::MAX) - HEADER_LEN)];
    let repr = Repr {
        code,
        identifier,
        data_len: data.len(),
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    let mut view = Packet::new_unchecked(&mut buf[..]);
    if repr.emit(&mut view).is_err() {
        return Vec::new();
    }
    buf[HEADER_LEN..].copy_from_slice(data);
    buf
}

impl<N: Negotiate> Fsm<N> {
    /// A new automaton in Initial; `first_id` seeds the Identifiers it sends.
    pub fn new(neg: N, cfg: FsmConfig, first_id: u8) -> Fsm<N> {
        Fsm {
            neg,
            state: State::Initial,
            cfg,
            restart_count: 0,
            failures: 0,
            naks_received: 0,
            deadline: None,
            next_id: first_id,
            req_id: first_id,
            request: Vec::new(),
            reply_seen: false,
            last_ack: None,
            term_data: Vec::new(),
            cause: None,
            out: VecDeque::new(),
            max_packet: 1500,
            discarded: 0,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The protocol's option logic.
    pub fn negotiator(&self) -> &N {
        &self.neg
    }

    /// The protocol's option logic, writable.
    pub fn negotiator_mut(&mut self) -> &mut N {
        &mut self.neg
    }

    /// Why the automaton last left Opened or failed to reach it (cleared on tlu).
    pub fn cause(&self) -> Option<&Cause> {
        self.cause.as_ref()
    }

    /// Packets silently discarded (malformed, unexpected Identifier, duplicate).
    pub fn discarded(&self) -> u64 {
        self.discarded
    }

    /// The data of our Terminate-Requests (a reason text, e.g. "User request").
    pub fn set_terminate_data(&mut self, data: &[u8]) {
        self.term_data = data[..data.len().min(64)].to_vec();
    }

    /// Caps packets built from peer data (Code-Reject) to the peer's MRU.
    pub fn set_max_packet(&mut self, mru: usize) {
        self.max_packet = mru.max(HEADER_LEN + 1);
    }

    /// When [`Fsm::handle_timeout`] wants to be called.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// The next action.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// A fresh Identifier (for packets the owner sends itself: Echo-Request, …).
    pub fn new_id(&mut self) -> u8 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    /// Queues a packet the owner built (Echo-Reply, Protocol-Reject, …).
    pub fn send(&mut self, code: u8, identifier: u8, data: &[u8]) {
        let limit = self.max_packet.saturating_sub(HEADER_LEN);
        let data = &data[..data.len().min(limit)];
        self.out
            .push_back(Output::Send(packet(code, identifier, data)));
    }

    // ---- actions (§4.4) ----

    fn tlu(&mut self) {
        self.deadline = None;
        self.naks_received = 0;
        self.cause = None;
        self.out.push_back(Output::Up);
    }

    fn tld(&mut self) {
        self.out.push_back(Output::Down);
    }

    fn tls(&mut self) {
        self.out.push_back(Output::Started);
    }

    fn tlf(&mut self) {
        self.deadline = None;
        self.out.push_back(Output::Finished);
    }

    fn irc(&mut self, counter: Counter) {
        self.restart_count = match counter {
            Counter::Configure => self.cfg.max_configure,
            Counter::Terminate => self.cfg.max_terminate,
        };
    }

    fn zrc(&mut self, now: Instant) {
        self.restart_count = 0;
        self.deadline = Some(now + self.cfg.restart);
    }

    fn scr(&mut self, now: Instant) {
        self.req_id = self.new_id();
        self.request = self.neg.request();
        self.reply_seen = false;
        let pkt = packet(code::CONFIGURE_REQUEST, self.req_id, &self.request);
        self.out.push_back(Output::Send(pkt));
        self.restart_count = self.restart_count.saturating_sub(1);
        self.deadline = Some(now + self.cfg.restart);
    }

    /// TO+: the same Configure-Request again, same Identifier.
    fn rescr(&mut self, now: Instant) {
        self.reply_seen = false;
        let pkt = packet(code::CONFIGURE_REQUEST, self.req_id, &self.request);
        self.out.push_back(Output::Send(pkt));
        self.restart_count = self.restart_count.saturating_sub(1);
        self.deadline = Some(now + self.cfg.restart);
    }

    fn str(&mut self, now: Instant) {
        let id = self.new_id();
        let pkt = packet(code::TERMINATE_REQUEST, id, &self.term_data);
        self.out.push_back(Output::Send(pkt));
        self.restart_count = self.restart_count.saturating_sub(1);
        self.deadline = Some(now + self.cfg.restart);
    }

    fn sta(&mut self, id: u8) {
        self.out
            .push_back(Output::Send(packet(code::TERMINATE_ACK, id, &[])));
    }

    fn fresh_scr(&mut self, now: Instant) {
        self.neg.reset();
        self.last_ack = None;
        self.irc(Counter::Configure);
        self.scr(now);
    }

    // ---- administrative events ----

    /// The lower layer is up (Up).
    pub fn up(&mut self, now: Instant) {
        match self.state {
            State::Initial => self.state = State::Closed,
            State::Starting => {
                self.fresh_scr(now);
                self.state = State::ReqSent;
            }
            _ => {}
        }
    }

    /// The lower layer went down (Down).
    pub fn down(&mut self) {
        self.deadline = None;
        self.state = match self.state {
            State::Closed | State::Closing => State::Initial,
            State::Stopped => {
                self.tls();
                State::Starting
            }
            State::Opened => {
                self.tld();
                State::Starting
            }
            State::Stopping | State::ReqSent | State::AckRcvd | State::AckSent => State::Starting,
            other => other,
        };
    }

    /// The administrator opened the link (Open).
    pub fn open(&mut self, now: Instant) {
        match self.state {
            State::Initial => {
                self.tls();
                self.state = State::Starting;
            }
            State::Closed => {
                self.fresh_scr(now);
                self.state = State::ReqSent;
            }
            State::Closing => self.state = State::Stopping,
            _ => {}
        }
    }

    /// The administrator closed the link (Close): Terminate-Request if negotiating
    /// or open.
    pub fn close(&mut self, now: Instant) {
        match self.state {
            State::Starting => {
                self.tlf();
                self.state = State::Initial;
            }
            State::Stopped => self.state = State::Closed,
            State::Stopping => self.state = State::Closing,
            State::ReqSent | State::AckRcvd | State::AckSent | State::Opened => {
                if self.state == State::Opened {
                    self.tld();
                }
                self.irc(Counter::Terminate);
                self.str(now);
                self.state = State::Closing;
            }
            _ => {}
        }
    }

    /// The Restart timer, if it has expired (TO+ / TO-).
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.deadline {
            Some(deadline) if deadline <= now => self.deadline = None,
            _ => return,
        }
        if self.restart_count > 0 {
            match self.state {
                State::Closing | State::Stopping => self.str(now),
                State::ReqSent | State::AckRcvd => {
                    self.rescr(now);
                    self.state = State::ReqSent;
                }
                State::AckSent => self.rescr(now),
                _ => {}
            }
        } else {
            match self.state {
                State::Closing => {
                    self.tlf();
                    self.state = State::Closed;
                }
                State::Stopping => {
                    self.tlf();
                    self.state = State::Stopped;
                }
                State::ReqSent | State::AckRcvd | State::AckSent => {
                    if !matches!(self.cause, Some(Cause::PeerTerminated(_))) {
                        self.cause = Some(Cause::Timeout);
                    }
                    self.tlf();
                    self.state = State::Stopped;
                }
                _ => {}
            }
        }
    }

    /// The peer Protocol-Rejected this protocol, or Code-Rejected a code it needs
    /// (RXJ-).
    pub fn rxj_minus(&mut self, now: Instant) {
        self.cause = Some(Cause::PeerRejected);
        match self.state {
            State::Closed | State::Stopped => self.tlf(),
            State::Closing => {
                self.tlf();
                self.state = State::Closed;
            }
            State::Stopping | State::ReqSent | State::AckRcvd | State::AckSent => {
                self.tlf();
                self.state = State::Stopped;
            }
            State::Opened => {
                self.tld();
                self.irc(Counter::Terminate);
                self.str(now);
                self.state = State::Stopping;
            }
            State::Initial | State::Starting => {}
        }
    }
}

mod receive;

#[cfg(test)]
mod tests;
