//! CHAP (RFC 1994) with MD5 or MS-CHAPv2 (RFC 2759): Challenge, Response, Success,
//! Failure.
//!
//! The authenticator sends a Challenge and retransmits on the Restart timer — with a
//! new Identifier and a new challenge each time (RFC 1994 §4.1) — up to its try limit;
//! it answers a retransmitted Response with the same Success or Failure (§4.2: "the
//! Success might be lost"). The peer answers each new Challenge, repeats its Response
//! for a repeated one and on its own Restart timer until an answer comes, and for
//! MS-CHAPv2 checks that the Success proves the server knows the password.

use std::fmt;
use std::time::Instant;

use md5::{Digest as _, Md5};
use zeroize::Zeroizing;

use super::mschapv2::{self, ResponseValue};
use super::{AuthFailure, AuthMethod, AuthOutput, AuthTiming, Granted, Outbox, printable};
use crate::aaa::{Attributes, AuthRequest, AuthResult, Credentials, Password};
use crate::ppp::Entropy;
use crate::ppp::fsm::packet;
use crate::wire::ppp::{Packet, Protocol, chap_code};

/// Message of our CHAP-MD5 Success (and the M= of MS-CHAPv2's).
pub const SUCCESS_MESSAGE: &str = "Access granted";
/// Message of our Failure (and the M= of MS-CHAPv2's).
pub const FAILURE_MESSAGE: &str = "Authentication failed";

/// The CHAP-MD5 response: MD5(Identifier | secret | Challenge) (RFC 1994 §4.1).
pub fn md5_response(id: u8, secret: &[u8], challenge: &[u8]) -> [u8; 16] {
    let mut md5 = Md5::new();
    md5.update([id]);
    md5.update(secret);
    md5.update(challenge);
    md5.finalize().into()
}

/// Challenge or Response data: Value-Size, Value, Name (§4.1).
fn value_and_name(code: u8, id: u8, value: &[u8], name: &[u8]) -> Vec<u8> {
    let value = &value[..value.len().min(255)];
    let mut data = Vec::with_capacity(1 + value.len() + name.len());
    data.push(value.len() as u8);
    data.extend_from_slice(value);
    data.extend_from_slice(name);
    packet(code, id, &data)
}

#[derive(Debug)]
enum ServerState {
    Challenging,
    Verifying { user: String },
    Done { answer: Option<Vec<u8>> },
}

/// The authenticator side, for CHAP-MD5 or MS-CHAPv2.
#[derive(Debug)]
pub struct ChapAuthenticator {
    method: AuthMethod,
    name: Vec<u8>,
    timing: AuthTiming,
    id: u8,
    challenge: [u8; 16],
    tries_left: u32,
    state: ServerState,
    ob: Outbox,
}

impl ChapAuthenticator {
    /// Sends the first Challenge. `method` is [`AuthMethod::Chap`] or
    /// [`AuthMethod::MsChapV2`].
    pub fn start(
        method: AuthMethod,
        name: &str,
        timing: AuthTiming,
        now: Instant,
        entropy: &mut dyn Entropy,
    ) -> ChapAuthenticator {
        let mut auth = ChapAuthenticator {
            method,
            name: name.as_bytes().to_vec(),
            timing,
            id: 0,
            challenge: [0; 16],
            tries_left: timing.max_tries.saturating_sub(1),
            state: ServerState::Challenging,
            ob: Outbox::default(),
        };
        let mut id = [0u8; 1];
        entropy.fill(&mut id);
        auth.id = id[0];
        auth.challenge(now, entropy);
        auth
    }

    fn challenge(&mut self, now: Instant, entropy: &mut dyn Entropy) {
        self.id = self.id.wrapping_add(1);
        entropy.fill(&mut self.challenge);
        let pkt = value_and_name(chap_code::CHALLENGE, self.id, &self.challenge, &self.name);
        self.ob.send(Protocol::CHAP, pkt);
        self.ob.deadline = Some(now + self.timing.restart);
    }

    /// The challenge now outstanding (for tests and logs).
    pub fn current_challenge(&self) -> (u8, [u8; 16]) {
        (self.id, self.challenge)
    }

    /// A CHAP packet from the peer.
    pub fn input(&mut self, now: Instant, bytes: &[u8]) {
        let Ok(pkt) = Packet::new_checked(bytes) else {
            return;
        };
        if pkt.code() != chap_code::RESPONSE || pkt.identifier() != self.id {
            return;
        }
        match &self.state {
            ServerState::Challenging => {}
            ServerState::Verifying { .. } => return,
            ServerState::Done { answer } => {
                if let Some(answer) = answer {
                    self.ob.send(Protocol::CHAP, answer.clone());
                }
                return;
            }
        }
        let Ok((value, name)) = pkt.chap_value_and_name() else {
            return;
        };
        let method = match self.method {
            AuthMethod::MsChapV2 => {
                let Some(response) = ResponseValue::parse(value) else {
                    return;
                };
                Credentials::MsChapV2 {
                    auth_challenge: self.challenge,
                    peer_challenge: response.peer_challenge,
                    nt_response: response.nt_response,
                }
            }
            _ => {
                let Ok(response) = <[u8; 16]>::try_from(value) else {
                    return;
                };
                Credentials::Chap {
                    id: self.id,
                    challenge: self.challenge.to_vec(),
                    response,
                }
            }
        };
        let user = String::from_utf8_lossy(name).into_owned();
        self.ob.out.push_back(AuthOutput::Verify(AuthRequest {
            user: user.clone(),
            method,
        }));
        self.ob.deadline = Some(now + self.timing.timeout);
        self.state = ServerState::Verifying { user };
    }

    /// Whether a backend answer is awaited.
    pub fn is_verifying(&self) -> bool {
        matches!(self.state, ServerState::Verifying { .. })
    }

    fn failure(&self, entropy: &mut dyn Entropy) -> Vec<u8> {
        let message = match self.method {
            AuthMethod::MsChapV2 => {
                let mut next = [0u8; 16];
                entropy.fill(&mut next);
                mschapv2::failure_message(&next, FAILURE_MESSAGE)
            }
            _ => FAILURE_MESSAGE.to_string(),
        };
        packet(chap_code::FAILURE, self.id, message.as_bytes())
    }

    /// The backend's answer.
    pub fn result(&mut self, _now: Instant, result: AuthResult, entropy: &mut dyn Entropy) {
        let ServerState::Verifying { user } = &self.state else {
            return;
        };
        let user = user.clone();
        let (answer, outcome) = match result {
            AuthResult::Accept { attributes } => {
                let message = match (self.method, attributes.authenticator_response) {
                    (AuthMethod::MsChapV2, Some(response)) => {
                        Some(mschapv2::success_message(&response, SUCCESS_MESSAGE))
                    }
                    (AuthMethod::MsChapV2, None) => None,
                    _ => Some(SUCCESS_MESSAGE.to_string()),
                };
                match message {
                    Some(message) => (
                        packet(chap_code::SUCCESS, self.id, message.as_bytes()),
                        Ok(Granted {
                            user: Some(user),
                            attributes,
                        }),
                    ),
                    None => (
                        self.failure(entropy),
                        Err(AuthFailure::NoAuthenticatorResponse),
                    ),
                }
            }
            AuthResult::Reject { reason } => {
                (self.failure(entropy), Err(AuthFailure::Rejected(reason)))
            }
        };
        self.ob.send(Protocol::CHAP, answer.clone());
        self.state = ServerState::Done {
            answer: Some(answer),
        };
        self.ob.done(outcome);
    }

    /// Retransmits the Challenge (fresh randomness from `entropy`), or gives up (no
    /// Response, no backend answer).
    pub fn handle_timeout(&mut self, now: Instant, entropy: &mut dyn Entropy) {
        if !self.ob.expired(now) {
            return;
        }
        match self.state {
            ServerState::Challenging if self.tries_left > 0 => {
                self.tries_left -= 1;
                self.challenge(now, entropy);
            }
            ServerState::Challenging => {
                self.state = ServerState::Done { answer: None };
                self.ob.done(Err(AuthFailure::Timeout));
            }
            ServerState::Verifying { .. } => {
                let answer = packet(chap_code::FAILURE, self.id, FAILURE_MESSAGE.as_bytes());
                self.ob.send(Protocol::CHAP, answer.clone());
                self.state = ServerState::Done {
                    answer: Some(answer),
                };
                self.ob.done(Err(AuthFailure::Timeout));
            }
            ServerState::Done { .. } => {}
        }
    }

    /// When [`ChapAuthenticator::handle_timeout`] wants to run.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.ob.deadline
    }

    /// The next output.
    pub fn poll(&mut self) -> Option<AuthOutput> {
        self.ob.out.pop_front()
    }
}

/// The peer (client) side, for CHAP-MD5 or MS-CHAPv2.
pub struct ChapPeer {
    method: AuthMethod,
    user: Vec<u8>,
    password: Password,
    nt_hash: Zeroizing<[u8; 16]>,
    timing: AuthTiming,
    /// The last Challenge answered (Identifier, value) and our Response to it.
    last: Option<(u8, Vec<u8>, Vec<u8>)>,
    expected: Option<[u8; 20]>,
    tries_left: u32,
    done: bool,
    ob: Outbox,
}

impl fmt::Debug for ChapPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChapPeer")
            .field("method", &self.method)
            .field("user", &printable(&self.user))
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl ChapPeer {
    /// Waits for the authenticator's Challenge.
    pub fn start(
        method: AuthMethod,
        user: &str,
        password: &Password,
        timing: AuthTiming,
        now: Instant,
    ) -> ChapPeer {
        ChapPeer {
            method,
            user: user.as_bytes().to_vec(),
            nt_hash: mschapv2::nt_password_hash(password.expose()),
            password: password.clone(),
            timing,
            last: None,
            expected: None,
            tries_left: 0,
            done: false,
            ob: Outbox {
                deadline: Some(now + timing.timeout),
                ..Outbox::default()
            },
        }
    }

    /// A CHAP packet from the authenticator.
    pub fn input(&mut self, now: Instant, bytes: &[u8], entropy: &mut dyn Entropy) {
        let Ok(pkt) = Packet::new_checked(bytes) else {
            return;
        };
        if self.done {
            return;
        }
        let id = pkt.identifier();
        match pkt.code() {
            chap_code::CHALLENGE => {
                let Ok((value, _name)) = pkt.chap_value_and_name() else {
                    return;
                };
                if let Some((last_id, last_value, response)) = &self.last
                    && *last_id == id
                    && last_value == value
                {
                    let response = response.clone();
                    self.ob.send(Protocol::CHAP, response);
                    return;
                }
                if let Some(response) = self.respond(id, value, entropy) {
                    self.ob.send(Protocol::CHAP, response.clone());
                    self.last = Some((id, value.to_vec(), response));
                    self.tries_left = self.timing.max_tries.saturating_sub(1);
                    self.ob.deadline = Some(now + self.timing.restart);
                }
            }
            chap_code::SUCCESS if self.last_id() == Some(id) => {
                let good = match (self.method, &self.expected) {
                    (AuthMethod::MsChapV2, Some(expected)) => {
                        mschapv2::check_success_message(pkt.data(), expected)
                    }
                    (AuthMethod::MsChapV2, None) => false,
                    _ => true,
                };
                self.done = true;
                self.ob.done(if good {
                    Ok(Granted {
                        user: None,
                        attributes: Attributes::default(),
                    })
                } else {
                    Err(AuthFailure::BadAuthenticatorResponse)
                });
            }
            chap_code::FAILURE if self.last_id() == Some(id) => {
                self.done = true;
                self.ob
                    .done(Err(AuthFailure::Rejected(printable(pkt.data()))));
            }
            _ => {}
        }
    }

    fn last_id(&self) -> Option<u8> {
        self.last.as_ref().map(|(id, _, _)| *id)
    }

    fn respond(&mut self, id: u8, challenge: &[u8], entropy: &mut dyn Entropy) -> Option<Vec<u8>> {
        match self.method {
            AuthMethod::MsChapV2 => {
                let auth_challenge = <[u8; 16]>::try_from(challenge).ok()?;
                let mut peer_challenge = [0u8; 16];
                entropy.fill(&mut peer_challenge);
                let nt_response = mschapv2::generate_nt_response(
                    &auth_challenge,
                    &peer_challenge,
                    &self.user,
                    &self.nt_hash,
                );
                self.expected = Some(mschapv2::generate_authenticator_response(
                    &self.nt_hash,
                    &nt_response,
                    &peer_challenge,
                    &auth_challenge,
                    &self.user,
                ));
                let value = ResponseValue {
                    peer_challenge,
                    nt_response,
                };
                Some(value_and_name(
                    chap_code::RESPONSE,
                    id,
                    &value.to_bytes(),
                    &self.user,
                ))
            }
            _ => {
                if challenge.is_empty() {
                    return None;
                }
                let response = md5_response(id, self.password.expose(), challenge);
                Some(value_and_name(
                    chap_code::RESPONSE,
                    id,
                    &response,
                    &self.user,
                ))
            }
        }
    }

    /// Repeats the Response while no answer comes; gives up when the authenticator
    /// falls silent.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.done || !self.ob.expired(now) {
            return;
        }
        match &self.last {
            Some((_, _, response)) if self.tries_left > 0 => {
                let response = response.clone();
                self.tries_left -= 1;
                self.ob.send(Protocol::CHAP, response);
                self.ob.deadline = Some(now + self.timing.restart);
            }
            _ => {
                self.done = true;
                self.ob.done(Err(AuthFailure::Timeout));
            }
        }
    }

    /// When [`ChapPeer::handle_timeout`] wants to run.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.ob.deadline
    }

    /// The next output.
    pub fn poll(&mut self) -> Option<AuthOutput> {
        self.ob.out.pop_front()
    }
}

#[cfg(test)]
mod tests;
