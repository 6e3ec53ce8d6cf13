//! PAP (RFC 1334 §2): the peer sends Authenticate-Request (Peer-ID, Password) until it
//! gets Authenticate-Ack or -Nak; the authenticator answers every request, repeating
//! its answer to retransmissions.

use std::time::Instant;

use zeroize::Zeroizing;

use super::{AuthFailure, AuthOutput, AuthTiming, Granted, Outbox, printable};
use crate::aaa::{Attributes, AuthRequest, AuthResult, Credentials, Password};
use crate::ppp::Entropy;
use crate::ppp::fsm::packet;
use crate::wire::ppp::{Packet, Protocol, pap_code};

/// Message of our Authenticate-Ack.
pub const ACK_MESSAGE: &[u8] = b"Access granted";
/// Message of our Authenticate-Nak.
pub const NAK_MESSAGE: &[u8] = b"Authentication failed";

fn reply(code: u8, id: u8, message: &[u8]) -> Vec<u8> {
    let message = &message[..message.len().min(255)];
    let mut data = Vec::with_capacity(1 + message.len());
    data.push(message.len() as u8);
    data.extend_from_slice(message);
    packet(code, id, &data)
}

/// The Message of an Authenticate-Ack/Nak (§2.2.2), clamped to the packet.
fn message(data: &[u8]) -> &[u8] {
    match data.split_first() {
        Some((&len, rest)) => &rest[..rest.len().min(usize::from(len))],
        None => &[],
    }
}

#[derive(Debug)]
enum ServerState {
    Waiting,
    Verifying { user: String },
    Done { code: u8, message: &'static [u8] },
}

/// The authenticator side.
#[derive(Debug)]
pub struct PapAuthenticator {
    timing: AuthTiming,
    state: ServerState,
    last_id: u8,
    ob: Outbox,
}

impl PapAuthenticator {
    /// Waits for the peer's Authenticate-Request.
    pub fn start(timing: AuthTiming, now: Instant) -> PapAuthenticator {
        PapAuthenticator {
            timing,
            state: ServerState::Waiting,
            last_id: 0,
            ob: Outbox {
                deadline: Some(now + timing.timeout),
                ..Outbox::default()
            },
        }
    }

    /// A PAP packet from the peer.
    pub fn input(&mut self, now: Instant, bytes: &[u8]) {
        let Ok(pkt) = Packet::new_checked(bytes) else {
            return;
        };
        if pkt.code() != pap_code::AUTHENTICATE_REQUEST {
            return;
        }
        let Ok((peer_id, password)) = pkt.pap_peer_id_and_password() else {
            return;
        };
        self.last_id = pkt.identifier();
        match &self.state {
            ServerState::Waiting => {
                let user = String::from_utf8_lossy(peer_id).into_owned();
                self.ob.out.push_back(AuthOutput::Verify(AuthRequest {
                    user: user.clone(),
                    method: Credentials::Pap {
                        password: Password::new(password),
                    },
                }));
                self.ob.deadline = Some(now + self.timing.timeout);
                self.state = ServerState::Verifying { user };
            }
            ServerState::Verifying { .. } => {}
            ServerState::Done { code, message } => {
                let answer = reply(*code, self.last_id, message);
                self.ob.send(Protocol::PAP, answer);
            }
        }
    }

    /// Whether a backend answer is awaited.
    pub fn is_verifying(&self) -> bool {
        matches!(self.state, ServerState::Verifying { .. })
    }

    /// The backend's answer.
    pub fn result(&mut self, _now: Instant, result: AuthResult) {
        let ServerState::Verifying { user } = &self.state else {
            return;
        };
        let user = user.clone();
        let (code, message, outcome) = match result {
            AuthResult::Accept { attributes } => (
                pap_code::AUTHENTICATE_ACK,
                ACK_MESSAGE,
                Ok(Granted {
                    user: Some(user),
                    attributes,
                }),
            ),
            AuthResult::Reject { reason } => (
                pap_code::AUTHENTICATE_NAK,
                NAK_MESSAGE,
                Err(AuthFailure::Rejected(reason)),
            ),
        };
        self.ob
            .send(Protocol::PAP, reply(code, self.last_id, message));
        self.state = ServerState::Done { code, message };
        self.ob.done(outcome);
    }

    /// No request, or no backend answer, in time.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.ob.expired(now) {
            return;
        }
        if self.is_verifying() {
            let nak = reply(pap_code::AUTHENTICATE_NAK, self.last_id, NAK_MESSAGE);
            self.ob.send(Protocol::PAP, nak);
        }
        self.state = ServerState::Done {
            code: pap_code::AUTHENTICATE_NAK,
            message: NAK_MESSAGE,
        };
        self.ob.done(Err(AuthFailure::Timeout));
    }

    /// When [`PapAuthenticator::handle_timeout`] wants to run.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.ob.deadline
    }

    /// The next output.
    pub fn poll(&mut self) -> Option<AuthOutput> {
        self.ob.out.pop_front()
    }
}

/// The peer (client) side.
pub struct PapPeer {
    timing: AuthTiming,
    request: Zeroizing<Vec<u8>>,
    id: u8,
    tries_left: u32,
    done: bool,
    ob: Outbox,
}

impl std::fmt::Debug for PapPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PapPeer")
            .field("id", &self.id)
            .field("tries_left", &self.tries_left)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl PapPeer {
    /// Sends the first Authenticate-Request.
    pub fn start(
        user: &str,
        password: &Password,
        timing: AuthTiming,
        now: Instant,
        entropy: &mut dyn Entropy,
    ) -> PapPeer {
        let mut id = [0u8; 1];
        entropy.fill(&mut id);
        let user = &user.as_bytes()[..user.len().min(255)];
        let secret = &password.expose()[..password.len().min(255)];
        let mut data = Zeroizing::new(Vec::with_capacity(2 + user.len() + secret.len()));
        data.push(user.len() as u8);
        data.extend_from_slice(user);
        data.push(secret.len() as u8);
        data.extend_from_slice(secret);
        let request = Zeroizing::new(packet(pap_code::AUTHENTICATE_REQUEST, id[0], &data));
        let mut peer = PapPeer {
            timing,
            request,
            id: id[0],
            tries_left: timing.max_tries.saturating_sub(1),
            done: false,
            ob: Outbox::default(),
        };
        peer.transmit(now);
        peer
    }

    fn transmit(&mut self, now: Instant) {
        self.ob.send(Protocol::PAP, self.request.to_vec());
        self.ob.deadline = Some(now + self.timing.restart);
    }

    /// A PAP packet from the authenticator.
    pub fn input(&mut self, _now: Instant, bytes: &[u8]) {
        let Ok(pkt) = Packet::new_checked(bytes) else {
            return;
        };
        if self.done || pkt.identifier() != self.id {
            return;
        }
        let outcome = match pkt.code() {
            pap_code::AUTHENTICATE_ACK => Ok(Granted {
                user: None,
                attributes: Attributes::default(),
            }),
            pap_code::AUTHENTICATE_NAK => {
                Err(AuthFailure::Rejected(printable(message(pkt.data()))))
            }
            _ => return,
        };
        self.done = true;
        self.ob.done(outcome);
    }

    /// Retransmits, or gives up after the last try.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.done || !self.ob.expired(now) {
            return;
        }
        if self.tries_left > 0 {
            self.tries_left -= 1;
            self.transmit(now);
        } else {
            self.done = true;
            self.ob.done(Err(AuthFailure::Timeout));
        }
    }

    /// When [`PapPeer::handle_timeout`] wants to run.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.ob.deadline
    }

    /// The next output.
    pub fn poll(&mut self) -> Option<AuthOutput> {
        self.ob.out.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ppp::SeededEntropy;
    use std::time::Duration;

    fn timing() -> AuthTiming {
        AuthTiming {
            restart: Duration::from_secs(3),
            max_tries: 3,
            timeout: Duration::from_secs(30),
        }
    }

    fn sends(outs: &mut Vec<AuthOutput>) -> Vec<Vec<u8>> {
        let mut sent = Vec::new();
        outs.retain(|o| match o {
            AuthOutput::Send(_, p) => {
                sent.push(p.clone());
                false
            }
            _ => true,
        });
        sent
    }

    fn drain_peer(p: &mut PapPeer) -> Vec<AuthOutput> {
        std::iter::from_fn(|| p.poll()).collect()
    }

    fn drain_server(s: &mut PapAuthenticator) -> Vec<AuthOutput> {
        std::iter::from_fn(|| s.poll()).collect()
    }

    #[test]
    fn request_ack_round_trip_and_duplicate_answered_again() {
        let now = Instant::now();
        let mut rng = SeededEntropy::new(1);
        let mut peer = PapPeer::start("alice", &Password::from("pw"), timing(), now, &mut rng);
        let mut server = PapAuthenticator::start(timing(), now);
        let req = sends(&mut drain_peer(&mut peer)).remove(0);
        assert_eq!(&req[4..], b"\x05alice\x02pw");
        server.input(now, &req);
        server.input(now, &req);
        let outs = drain_server(&mut server);
        assert_eq!(outs.len(), 1, "one Verify for a duplicated request");
        let AuthOutput::Verify(ar) = &outs[0] else {
            panic!("{outs:?}")
        };
        assert_eq!(ar.user, "alice");
        assert!(matches!(&ar.method, Credentials::Pap { password } if password.expose() == b"pw"));
        server.result(
            now,
            AuthResult::Accept {
                attributes: Attributes::default(),
            },
        );
        let mut outs = drain_server(&mut server);
        let ack = sends(&mut outs).remove(0);
        assert!(matches!(&outs[0], AuthOutput::Done(Ok(g)) if g.user.as_deref() == Some("alice")));
        server.input(now, &req);
        assert_eq!(
            sends(&mut drain_server(&mut server)),
            [ack.clone()].as_slice()
        );
        peer.input(now, &ack);
        assert!(matches!(
            drain_peer(&mut peer)[..],
            [AuthOutput::Done(Ok(_))]
        ));
    }

    #[test]
    fn nak_fails_the_peer_with_the_message() {
        let now = Instant::now();
        let mut rng = SeededEntropy::new(2);
        let mut peer = PapPeer::start("bob", &Password::from("x"), timing(), now, &mut rng);
        let req = sends(&mut drain_peer(&mut peer)).remove(0);
        let mut server = PapAuthenticator::start(timing(), now);
        server.input(now, &req);
        drain_server(&mut server);
        server.result(now, AuthResult::reject("nope"));
        let mut outs = drain_server(&mut server);
        let nak = sends(&mut outs).remove(0);
        assert!(matches!(&outs[0], AuthOutput::Done(Err(AuthFailure::Rejected(r))) if r == "nope"));
        peer.input(now, &nak);
        assert!(matches!(
            &drain_peer(&mut peer)[..],
            [AuthOutput::Done(Err(AuthFailure::Rejected(m)))] if m == "Authentication failed"
        ));
    }

    #[test]
    fn peer_retransmits_then_times_out() {
        let start = Instant::now();
        let mut rng = SeededEntropy::new(3);
        let mut peer = PapPeer::start("bob", &Password::from("x"), timing(), start, &mut rng);
        let mut sent = sends(&mut drain_peer(&mut peer)).len();
        let mut done = None;
        while let Some(t) = peer.next_timeout() {
            peer.handle_timeout(t);
            let mut outs = drain_peer(&mut peer);
            sent += sends(&mut outs).len();
            done = outs.pop();
        }
        assert_eq!(sent, 3);
        assert!(matches!(
            done,
            Some(AuthOutput::Done(Err(AuthFailure::Timeout)))
        ));
    }

    #[test]
    fn server_gives_up_waiting_and_ignores_garbage() {
        let now = Instant::now();
        let mut server = PapAuthenticator::start(timing(), now);
        server.input(now, &[1, 1, 0, 6, 9, 9]);
        server.input(now, &[1]);
        server.input(now, &packet(pap_code::AUTHENTICATE_ACK, 1, &[0]));
        assert!(server.poll().is_none());
        server.handle_timeout(now + Duration::from_secs(30));
        assert!(matches!(
            server.poll(),
            Some(AuthOutput::Done(Err(AuthFailure::Timeout)))
        ));
    }

    #[test]
    fn debug_does_not_show_the_password() {
        let mut rng = SeededEntropy::new(4);
        let peer = PapPeer::start(
            "u",
            &Password::from("hunter2"),
            timing(),
            Instant::now(),
            &mut rng,
        );
        assert!(!format!("{peer:?}").contains("hunter2"));
    }
}
