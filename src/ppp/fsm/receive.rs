//! The receive events of RFC 1661 §4.1: RCR±, RCA, RCN, RTR, RTA, RUC and RXJ from
//! an incoming packet.

use std::time::Instant;

use super::{Cause, Counter, Extended, Fsm, Negotiate, Output, State, Verdict, packet};
use crate::wire::ppp::{HEADER_LEN, OptionIter, Packet, code};

fn options_valid(options: &[u8]) -> bool {
    OptionIter::new(options).all(|o| o.is_ok())
}

fn is_subset(rejected: &[u8], request: &[u8]) -> bool {
    OptionIter::new(rejected).all(|option| {
        option.is_ok_and(|option| {
            OptionIter::new(request).any(|ours| ours.is_ok_and(|ours| ours == option))
        })
    })
}

impl<N: Negotiate> Fsm<N> {
    /// Takes one control packet (the payload of a PPP frame of this protocol).
    /// Returns what the protocol must handle itself.
    pub fn input<'a>(&mut self, now: Instant, payload: &'a [u8]) -> Option<Extended<'a>> {
        let Ok(pkt) = Packet::new_checked(payload) else {
            self.discarded += 1;
            return None;
        };
        let (code, id) = (pkt.code(), pkt.identifier());
        let data = payload
            .get(HEADER_LEN..usize::from(pkt.len()))
            .unwrap_or_default();
        if matches!(self.state, State::Initial | State::Starting) {
            self.discarded += 1;
            return None;
        }
        match code {
            code::CONFIGURE_REQUEST if options_valid(data) => self.rcr(now, id, data),
            code::CONFIGURE_ACK => self.rca(now, id, data),
            code::CONFIGURE_NAK | code::CONFIGURE_REJECT => self.rcn(now, code, id, data),
            code::TERMINATE_REQUEST => self.rtr(now, id, data),
            code::TERMINATE_ACK => self.rta(now),
            code::CODE_REJECT => match data.first() {
                Some(&rejected) if rejected <= code::CODE_REJECT => self.rxj_minus(now),
                Some(&rejected) => return Some(Extended::CodeRejected(rejected)),
                None => self.discarded += 1,
            },
            code::CONFIGURE_REQUEST => self.discarded += 1,
            _ if self.neg.extended_code(code) => {
                return Some(Extended::Code {
                    code,
                    identifier: id,
                    data,
                });
            }
            _ => {
                let id = self.new_id();
                self.send(code::CODE_REJECT, id, &payload[..usize::from(pkt.len())]);
            }
        }
        None
    }

    fn rcr(&mut self, now: Instant, id: u8, options: &[u8]) {
        match self.state {
            State::Closed => return self.sta(id),
            State::Closing | State::Stopping | State::Initial | State::Starting => return,
            _ => {}
        }
        let repeat = self
            .last_ack
            .as_ref()
            .is_some_and(|(ack_id, acked)| *ack_id == id && acked == options);
        if self.state == State::Opened && repeat {
            let pkt = packet(code::CONFIGURE_ACK, id, options);
            return self.out.push_back(Output::Send(pkt));
        }
        let restart = matches!(self.state, State::Stopped | State::Opened);
        if restart {
            self.neg.reset();
            self.last_ack = None;
        }
        let verdict = self
            .neg
            .judge(options, self.failures >= self.cfg.max_failure);
        let good = verdict == Verdict::Ack;
        if restart {
            if self.state == State::Opened {
                self.tld();
            }
            self.irc(Counter::Configure);
            self.scr(now);
        }
        match verdict {
            Verdict::Ack => {
                self.failures = 0;
                self.last_ack = Some((id, options.to_vec()));
                self.out
                    .push_back(Output::Send(packet(code::CONFIGURE_ACK, id, options)));
            }
            Verdict::Nak(naks) => {
                self.failures += 1;
                self.out
                    .push_back(Output::Send(packet(code::CONFIGURE_NAK, id, &naks)));
            }
            Verdict::Reject(rejects) => {
                self.out
                    .push_back(Output::Send(packet(code::CONFIGURE_REJECT, id, &rejects)));
            }
        }
        self.state = match (self.state, good) {
            (State::AckRcvd, true) => {
                self.tlu();
                State::Opened
            }
            (State::AckRcvd, false) => State::AckRcvd,
            (_, true) => State::AckSent,
            (_, false) => State::ReqSent,
        };
    }

    fn is_reply_to_current(&mut self, id: u8) -> bool {
        if id != self.req_id || self.reply_seen {
            self.discarded += 1;
            return false;
        }
        true
    }

    fn rca(&mut self, now: Instant, id: u8, options: &[u8]) {
        match self.state {
            State::Closed | State::Stopped => return self.sta(id),
            State::ReqSent | State::AckRcvd | State::AckSent | State::Opened => {}
            _ => return,
        }
        if !self.is_reply_to_current(id) {
            return;
        }
        if options != self.request.as_slice() {
            self.discarded += 1;
            return;
        }
        self.reply_seen = true;
        self.neg.acked(options);
        match self.state {
            State::ReqSent => {
                self.irc(Counter::Configure);
                self.state = State::AckRcvd;
            }
            State::AckRcvd => {
                self.scr(now);
                self.state = State::ReqSent;
            }
            State::AckSent => {
                self.irc(Counter::Configure);
                self.tlu();
                self.state = State::Opened;
            }
            _ => {
                self.tld();
                self.fresh_scr(now);
                self.state = State::ReqSent;
            }
        }
    }

    fn rcn(&mut self, now: Instant, code: u8, id: u8, options: &[u8]) {
        match self.state {
            State::Closed | State::Stopped => return self.sta(id),
            State::ReqSent | State::AckRcvd | State::AckSent | State::Opened => {}
            _ => return,
        }
        if !self.is_reply_to_current(id) {
            return;
        }
        let valid = options_valid(options)
            && (code == code::CONFIGURE_NAK || is_subset(options, &self.request));
        if !valid {
            self.discarded += 1;
            return;
        }
        self.reply_seen = true;
        if self.state == State::Opened {
            self.tld();
            self.fresh_scr(now);
            self.state = State::ReqSent;
            return;
        }
        self.naks_received += 1;
        if self.naks_received > self.cfg.max_configure {
            return self.give_up(now, Cause::NotConverging, "negotiation not converging");
        }
        let result = if code == code::CONFIGURE_NAK {
            self.neg.naked(options)
        } else {
            self.neg.rejected(options)
        };
        if let Err(why) = result {
            return self.give_up(now, Cause::Failed(why), why);
        }
        match self.state {
            State::ReqSent | State::AckSent => {
                self.irc(Counter::Configure);
                self.scr(now);
            }
            _ => {
                self.scr(now);
                self.state = State::ReqSent;
            }
        }
    }

    /// The protocol cannot go on: Close, telling the peer why.
    fn give_up(&mut self, now: Instant, cause: Cause, text: &str) {
        self.cause = Some(cause);
        self.set_terminate_data(text.as_bytes());
        self.close(now);
    }

    fn rtr(&mut self, now: Instant, id: u8, data: &[u8]) {
        match self.state {
            State::ReqSent | State::AckRcvd | State::AckSent => {
                self.cause = Some(Cause::PeerTerminated(data.to_vec()));
                self.sta(id);
                self.state = State::ReqSent;
            }
            State::Opened => {
                self.cause = Some(Cause::PeerTerminated(data.to_vec()));
                self.tld();
                self.zrc(now);
                self.sta(id);
                self.state = State::Stopping;
            }
            State::Initial | State::Starting => {}
            _ => self.sta(id),
        }
    }

    fn rta(&mut self, now: Instant) {
        match self.state {
            State::Closing => {
                self.tlf();
                self.state = State::Closed;
            }
            State::Stopping => {
                self.tlf();
                self.state = State::Stopped;
            }
            State::AckRcvd => self.state = State::ReqSent,
            State::Opened => {
                self.tld();
                self.fresh_scr(now);
                self.state = State::ReqSent;
            }
            _ => {}
        }
    }
}
