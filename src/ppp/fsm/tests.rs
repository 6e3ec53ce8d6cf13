//! The automaton against the state table of RFC 1661 §4.1, with a toy protocol whose
//! one option (type 1) must carry a value the receiver likes.

use super::*;
use crate::wire::ppp::OptionIter;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct Toy {
    /// What we request for option 1.
    ours: u8,
    /// Values of option 1 we accept from the peer; a Nak suggests the first.
    accept: Vec<u8>,
    /// Give up when naked.
    fail_on_nak: bool,
    /// Never change our request when naked (for the non-convergence test).
    stubborn: bool,
    resets: u32,
    peer: Option<u8>,
}

impl Negotiate for Toy {
    fn reset(&mut self) {
        self.resets += 1;
        self.peer = None;
    }
    fn request(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        put_option(&mut out, 1, &[self.ours]);
        out
    }
    fn judge(&mut self, options: &[u8], nak_to_reject: bool) -> Verdict {
        let mut j = Judgement::new(nak_to_reject);
        let mut value = None;
        for option in OptionIter::new(options).flatten() {
            match (option.option_type, option.value) {
                (1, [v]) if self.accept.contains(v) => value = Some(*v),
                (1, _) => j.nak(&option, &self.accept[..1]),
                _ => j.reject(&option),
            }
        }
        if j.is_ack() {
            self.peer = value;
        }
        j.verdict()
    }
    fn naked(&mut self, options: &[u8]) -> Result<(), &'static str> {
        if self.fail_on_nak {
            return Err("toy gives up");
        }
        if !self.stubborn {
            for option in OptionIter::new(options).flatten() {
                if let (1, [v]) = (option.option_type, option.value) {
                    self.ours = *v;
                }
            }
        }
        Ok(())
    }
    fn rejected(&mut self, _options: &[u8]) -> Result<(), &'static str> {
        Ok(())
    }
}

fn toy(ours: u8, accept: &[u8]) -> Fsm<Toy> {
    let neg = Toy {
        ours,
        accept: accept.to_vec(),
        ..Toy::default()
    };
    Fsm::new(neg, FsmConfig::default(), 0)
}

/// Drains `from`, returning the packets sent and the layer signals.
fn drain(from: &mut Fsm<Toy>) -> (Vec<Vec<u8>>, Vec<Output>) {
    let (mut sent, mut signals) = (Vec::new(), Vec::new());
    while let Some(out) = from.poll_output() {
        match out {
            Output::Send(p) => sent.push(p),
            other => signals.push(other),
        }
    }
    (sent, signals)
}

/// Delivers everything each side sends to the other until both are quiet.
fn converge(a: &mut Fsm<Toy>, b: &mut Fsm<Toy>, now: Instant) -> (Vec<Output>, Vec<Output>) {
    let (mut sig_a, mut sig_b) = (Vec::new(), Vec::new());
    for _ in 0..100 {
        let (to_b, s) = drain(a);
        sig_a.extend(s);
        let (to_a, s) = drain(b);
        sig_b.extend(s);
        if to_a.is_empty() && to_b.is_empty() {
            break;
        }
        for p in to_b {
            b.input(now, &p);
        }
        for p in to_a {
            a.input(now, &p);
        }
    }
    (sig_a, sig_b)
}

fn opened_pair(now: Instant) -> (Fsm<Toy>, Fsm<Toy>) {
    let (mut a, mut b) = (toy(7, &[9]), toy(9, &[7]));
    for f in [&mut a, &mut b] {
        f.open(now);
        f.up(now);
    }
    converge(&mut a, &mut b, now);
    assert_eq!((a.state(), b.state()), (State::Opened, State::Opened));
    drain(&mut a);
    drain(&mut b);
    (a, b)
}

#[test]
fn open_then_up_reaches_opened_on_both_sides() {
    let now = Instant::now();
    let (mut a, mut b) = (toy(7, &[9]), toy(9, &[7]));
    a.open(now);
    assert_eq!(a.state(), State::Starting);
    assert_eq!(a.poll_output(), Some(Output::Started));
    a.up(now);
    assert_eq!(a.state(), State::ReqSent);
    b.up(now);
    assert_eq!(b.state(), State::Closed);
    b.open(now);
    let (sa, sb) = converge(&mut a, &mut b, now);
    assert_eq!((a.state(), b.state()), (State::Opened, State::Opened));
    assert!(sa.contains(&Output::Up) && sb.contains(&Output::Up));
    assert_eq!(a.negotiator().peer, Some(9));
    assert_eq!(b.negotiator().peer, Some(7));
    assert_eq!(a.next_timeout(), None, "restart timer stops in Opened");
}

#[test]
fn nak_brings_the_request_in_line() {
    let now = Instant::now();
    let (mut a, mut b) = (toy(1, &[9]), toy(9, &[7]));
    for f in [&mut a, &mut b] {
        f.open(now);
        f.up(now);
    }
    converge(&mut a, &mut b, now);
    assert_eq!((a.state(), b.state()), (State::Opened, State::Opened));
    assert_eq!(a.negotiator().ours, 7);
}

#[test]
fn unanswered_requests_time_out_after_max_configure() {
    let start = Instant::now();
    let mut a = toy(7, &[9]);
    a.open(start);
    a.up(start);
    let mut sent = drain(&mut a).0.len();
    let mut now = start;
    while let Some(t) = a.next_timeout() {
        now = t;
        a.handle_timeout(now);
        sent += drain(&mut a).0.len();
    }
    assert_eq!(sent, 10, "Max-Configure requests");
    assert_eq!(a.state(), State::Stopped);
    assert_eq!(a.cause(), Some(&Cause::Timeout));
    assert_eq!(now - start, Duration::from_secs(30));
}

#[test]
fn early_timeout_call_does_nothing() {
    let now = Instant::now();
    let mut a = toy(7, &[9]);
    a.open(now);
    a.up(now);
    drain(&mut a);
    a.handle_timeout(now + Duration::from_secs(1));
    assert!(a.poll_output().is_none());
    assert_eq!(a.next_timeout(), Some(now + Duration::from_secs(3)));
}

#[test]
fn duplicate_ack_does_not_renegotiate() {
    let now = Instant::now();
    let (mut a, mut b) = (toy(7, &[9]), toy(9, &[7]));
    for f in [&mut a, &mut b] {
        f.open(now);
        f.up(now);
    }
    // Capture b's Ack of a's request and replay it once a is Opened.
    let req_a = drain(&mut a).0;
    let req_b = drain(&mut b).0;
    b.input(now, &req_a[0]);
    let ack_from_b = drain(&mut b).0;
    a.input(now, &req_b[0]);
    let ack_from_a = drain(&mut a).0;
    a.input(now, &ack_from_b[0]);
    b.input(now, &ack_from_a[0]);
    assert_eq!((a.state(), b.state()), (State::Opened, State::Opened));
    drain(&mut a);
    a.input(now, &ack_from_b[0]);
    assert_eq!(a.state(), State::Opened);
    assert!(a.poll_output().is_none());
    assert_eq!(a.discarded(), 1);
}

#[test]
fn reply_with_wrong_identifier_or_options_is_discarded() {
    let now = Instant::now();
    let mut a = toy(7, &[9]);
    a.open(now);
    a.up(now);
    let req = drain(&mut a).0.remove(0);
    let mut ack = req.clone();
    ack[0] = code::CONFIGURE_ACK;
    ack[1] ^= 0x55;
    a.input(now, &ack);
    let mut ack2 = req.clone();
    ack2[0] = code::CONFIGURE_ACK;
    *ack2.last_mut().unwrap() ^= 1;
    a.input(now, &ack2);
    assert_eq!(a.state(), State::ReqSent);
    assert_eq!(a.discarded(), 2);
    let mut ack3 = req;
    ack3[0] = code::CONFIGURE_ACK;
    a.input(now, &ack3);
    assert_eq!(a.state(), State::AckRcvd);
}

#[test]
fn peer_terminate_in_opened_stops_after_one_restart_period() {
    let now = Instant::now();
    let (mut a, _b) = opened_pair(now);
    a.input(now, &packet(code::TERMINATE_REQUEST, 42, b"bye"));
    let (sent, signals) = drain(&mut a);
    assert_eq!(signals, [Output::Down]);
    assert_eq!(sent, [packet(code::TERMINATE_ACK, 42, &[])]);
    assert_eq!(a.state(), State::Stopping);
    assert_eq!(a.cause(), Some(&Cause::PeerTerminated(b"bye".to_vec())));
    let t = a.next_timeout().unwrap();
    a.handle_timeout(t);
    assert_eq!(drain(&mut a).1, [Output::Finished]);
    assert_eq!(a.state(), State::Stopped);
}

#[test]
fn close_sends_terminate_requests_then_finishes() {
    let now = Instant::now();
    let (mut a, mut b) = opened_pair(now);
    a.close(now);
    let (sent, signals) = drain(&mut a);
    assert_eq!(signals, [Output::Down]);
    assert_eq!(sent[0][0], code::TERMINATE_REQUEST);
    assert_eq!(a.state(), State::Closing);
    // Nobody answers: Max-Terminate requests in all, then tlf.
    let mut requests = 1;
    while let Some(t) = a.next_timeout() {
        a.handle_timeout(t);
        let (sent, signals) = drain(&mut a);
        requests += sent.len();
        if signals.contains(&Output::Finished) {
            break;
        }
    }
    assert_eq!(requests, 2);
    assert_eq!(a.state(), State::Closed);
    // With an answer it finishes at once.
    b.close(now);
    let req = drain(&mut b).0;
    let mut c = toy(7, &[9]);
    c.up(now);
    c.input(now, &req[0]);
    let ack = drain(&mut c).0;
    assert_eq!(ack, [packet(code::TERMINATE_ACK, req[0][1], &[])]);
    b.input(now, &ack[0]);
    assert_eq!(drain(&mut b).1, [Output::Finished]);
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn unknown_code_is_code_rejected_and_rxj_minus_finishes() {
    let now = Instant::now();
    let (mut a, _b) = opened_pair(now);
    let odd = packet(0x42, 3, b"xyz");
    a.input(now, &odd);
    let (sent, _) = drain(&mut a);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0][0], code::CODE_REJECT);
    assert_eq!(&sent[0][4..], &odd[..]);
    // A Code-Reject of Configure-Request is catastrophic.
    let mut rejected = packet(code::CONFIGURE_REQUEST, 1, &[]);
    rejected.truncate(4);
    a.input(now, &packet(code::CODE_REJECT, 9, &rejected));
    let (sent, signals) = drain(&mut a);
    assert_eq!(signals, [Output::Down]);
    assert_eq!(sent[0][0], code::TERMINATE_REQUEST);
    assert_eq!(a.state(), State::Stopping);
    assert_eq!(a.cause(), Some(&Cause::PeerRejected));
    // Code-Reject of an extended code is RXJ+ and handed back.
    assert_eq!(
        a.input(now, &packet(code::CODE_REJECT, 10, &[9, 1, 0, 4])),
        Some(Extended::CodeRejected(9))
    );
}

#[test]
fn max_failure_turns_naks_into_rejects() {
    let now = Instant::now();
    let mut a = toy(7, &[9]);
    a.open(now);
    a.up(now);
    drain(&mut a);
    let mut bad = Vec::new();
    put_option(&mut bad, 1, &[3]);
    let codes: Vec<u8> = (0..6)
        .map(|i| {
            a.input(now, &packet(code::CONFIGURE_REQUEST, i, &bad));
            drain(&mut a).0[0][0]
        })
        .collect();
    assert_eq!(
        codes,
        [3, 3, 3, 3, 3, 4],
        "five Naks (Max-Failure), then Reject"
    );
}

#[test]
fn endless_naks_are_given_up_on() {
    let now = Instant::now();
    let mut a = toy(7, &[9]);
    a.negotiator_mut().stubborn = true;
    a.open(now);
    a.up(now);
    for _ in 0..20 {
        let sent = drain(&mut a).0;
        let Some(req) = sent.iter().find(|p| p[0] == code::CONFIGURE_REQUEST) else {
            break;
        };
        let mut nak = req.clone();
        nak[0] = code::CONFIGURE_NAK;
        a.input(now, &nak);
    }
    assert_eq!(a.cause(), Some(&Cause::NotConverging));
    assert_eq!(a.state(), State::Closing);
}

#[test]
fn negotiator_giving_up_closes() {
    let now = Instant::now();
    let mut a = toy(7, &[9]);
    a.negotiator_mut().fail_on_nak = true;
    a.open(now);
    a.up(now);
    let req = drain(&mut a).0.remove(0);
    let mut nak = req;
    nak[0] = code::CONFIGURE_NAK;
    a.input(now, &nak);
    assert_eq!(a.cause(), Some(&Cause::Failed("toy gives up")));
    assert_eq!(a.state(), State::Closing);
    assert_eq!(drain(&mut a).0[0][0], code::TERMINATE_REQUEST);
}

#[test]
fn reject_must_only_hold_options_we_sent() {
    let now = Instant::now();
    let mut a = toy(7, &[9]);
    a.open(now);
    a.up(now);
    let req = drain(&mut a).0.remove(0);
    let mut foreign = Vec::new();
    put_option(&mut foreign, 2, &[1, 2]);
    a.input(now, &packet(code::CONFIGURE_REJECT, req[1], &foreign));
    assert!(a.poll_output().is_none());
    assert_eq!(a.discarded(), 1);
}

#[test]
fn renegotiation_from_opened_resets_and_goes_down() {
    let now = Instant::now();
    let (mut a, mut b) = opened_pair(now);
    let resets = a.negotiator().resets;
    let mut opt = Vec::new();
    put_option(&mut opt, 1, &[9]);
    a.input(now, &packet(code::CONFIGURE_REQUEST, 77, &opt));
    let (sent, signals) = drain(&mut a);
    assert_eq!(signals, [Output::Down]);
    assert_eq!(sent.len(), 2, "scr then sca");
    assert_eq!(sent[0][0], code::CONFIGURE_REQUEST);
    assert_eq!(sent[1][0], code::CONFIGURE_ACK);
    assert_eq!(a.state(), State::AckSent);
    assert_eq!(a.negotiator().resets, resets + 1);
    b.input(now, &sent[0]);
    let reply = drain(&mut b).0;
    for p in reply {
        a.input(now, &p);
    }
    assert_eq!(a.state(), State::Opened);
}

#[test]
fn packets_before_up_and_garbage_are_discarded() {
    let now = Instant::now();
    let mut a = toy(7, &[9]);
    a.input(now, &packet(code::CONFIGURE_REQUEST, 1, &[]));
    a.input(now, &[1, 2]);
    a.input(now, &[1, 2, 0, 9]);
    assert_eq!(a.discarded(), 3);
    a.open(now);
    a.up(now);
    drain(&mut a);
    // Truncated option list in a Configure-Request.
    a.input(now, &packet(code::CONFIGURE_REQUEST, 1, &[1, 9, 0]));
    assert!(a.poll_output().is_none());
    a.down();
    assert_eq!(a.state(), State::Starting);
    assert_eq!(a.next_timeout(), None);
}

#[test]
fn closed_answers_requests_with_terminate_ack() {
    let now = Instant::now();
    let mut a = toy(7, &[9]);
    a.up(now);
    a.input(now, &packet(code::CONFIGURE_REQUEST, 5, &[]));
    assert_eq!(drain(&mut a).0, [packet(code::TERMINATE_ACK, 5, &[])]);
}

#[test]
fn retransmission_keeps_the_identifier_and_options() {
    let now = Instant::now();
    let mut a = toy(7, &[9]);
    a.open(now);
    a.up(now);
    let first = drain(&mut a).0.remove(0);
    a.handle_timeout(now + Duration::from_secs(3));
    assert_eq!(drain(&mut a).0, std::slice::from_ref(&first));
    // An Ack of it is still good after the retransmission.
    let mut ack = first;
    ack[0] = code::CONFIGURE_ACK;
    a.input(now, &ack);
    assert_eq!(a.state(), State::AckRcvd);
}

#[test]
fn repeated_request_in_opened_is_acked_again_without_renegotiating() {
    let now = Instant::now();
    let (mut a, mut b) = (toy(7, &[9]), toy(9, &[7]));
    for f in [&mut a, &mut b] {
        f.open(now);
        f.up(now);
    }
    let req_a = drain(&mut a).0.remove(0);
    let req_b = drain(&mut b).0.remove(0);
    b.input(now, &req_a);
    a.input(now, &req_b);
    let ack_for_b = drain(&mut a).0.remove(0);
    let ack_for_a = drain(&mut b).0.remove(0);
    a.input(now, &ack_for_a);
    assert_eq!(a.state(), State::Opened);
    drain(&mut a);
    // a's Ack to b got lost: b retransmits the same request; a acks it again.
    b.handle_timeout(now + Duration::from_secs(3));
    let again = drain(&mut b).0.remove(0);
    assert_eq!(again, req_b);
    a.input(now, &again);
    let (sent, signals) = drain(&mut a);
    assert!(signals.is_empty(), "no tld");
    assert_eq!(sent, [ack_for_b]);
    assert_eq!(a.state(), State::Opened);
    b.input(now, &sent[0]);
    assert_eq!(b.state(), State::Opened);
    // A new request (new Identifier) does renegotiate.
    let mut renew = req_b;
    renew[1] = renew[1].wrapping_add(1);
    a.input(now, &renew);
    assert_eq!(drain(&mut a).1, [Output::Down]);
    assert_eq!(a.state(), State::AckSent);
}
