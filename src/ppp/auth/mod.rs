//! PPP authentication, both sides: PAP (RFC 1334, [`pap`]), CHAP with MD5 (RFC 1994)
//! and MS-CHAPv2 (RFC 2759) ([`chap`], crypto in [`mschapv2`]).
//!
//! The authenticator (server) never checks a password itself: it emits
//! [`AuthOutput::Verify`] with the credentials and waits — serving duplicates and
//! timers meanwhile — for [`Authenticator::result`]. The peer (client) side computes
//! its responses from the configured password.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::aaa::{Attributes, AuthRequest, AuthResult, Password};
use crate::wire::ppp::{Protocol, lcp_option};

use super::Entropy;

pub mod chap;
pub mod mschapv2;
pub mod pap;

/// An authentication method, as named in the config and negotiated in the LCP
/// Authentication-Protocol option.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    /// PAP (RFC 1334): `c0 23`.
    Pap,
    /// CHAP with MD5 (RFC 1994): `c2 23 05`.
    Chap,
    /// MS-CHAPv2 (RFC 2759): `c2 23 81`.
    MsChapV2,
}

/// The Authentication-Protocol option data of each method.
const PAP_OPTION: [u8; 2] = [0xc0, 0x23];
const CHAP_OPTION: [u8; 3] = [0xc2, 0x23, lcp_option::CHAP_MD5];
const MSCHAPV2_OPTION: [u8; 3] = [0xc2, 0x23, lcp_option::CHAP_MSCHAPV2];

impl AuthMethod {
    /// The data of the LCP Authentication-Protocol option asking for this method.
    pub fn option_value(self) -> &'static [u8] {
        match self {
            AuthMethod::Pap => &PAP_OPTION,
            AuthMethod::Chap => &CHAP_OPTION,
            AuthMethod::MsChapV2 => &MSCHAPV2_OPTION,
        }
    }

    /// The method an Authentication-Protocol option asks for, if we know it.
    pub fn from_option(value: &[u8]) -> Option<AuthMethod> {
        match value {
            v if v == PAP_OPTION => Some(AuthMethod::Pap),
            v if v == CHAP_OPTION => Some(AuthMethod::Chap),
            v if v == MSCHAPV2_OPTION => Some(AuthMethod::MsChapV2),
            _ => None,
        }
    }

    /// The PPP protocol its packets use.
    pub fn protocol(self) -> Protocol {
        match self {
            AuthMethod::Pap => Protocol::PAP,
            AuthMethod::Chap | AuthMethod::MsChapV2 => Protocol::CHAP,
        }
    }

    /// The config name: `pap`, `chap`, `mschapv2`.
    pub fn name(self) -> &'static str {
        match self {
            AuthMethod::Pap => "pap",
            AuthMethod::Chap => "chap",
            AuthMethod::MsChapV2 => "mschapv2",
        }
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An authentication method name that is not `pap`, `chap` or `mschapv2`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown authentication method {0:?} (expected \"mschapv2\", \"chap\" or \"pap\")")]
pub struct UnknownMethod(pub String);

impl FromStr for AuthMethod {
    type Err = UnknownMethod;

    fn from_str(text: &str) -> Result<AuthMethod, UnknownMethod> {
        match text.to_ascii_lowercase().as_str() {
            "pap" => Ok(AuthMethod::Pap),
            "chap" | "chap-md5" | "md5" => Ok(AuthMethod::Chap),
            "mschapv2" | "ms-chap-v2" | "mschap-v2" => Ok(AuthMethod::MsChapV2),
            _ => Err(UnknownMethod(text.to_string())),
        }
    }
}

/// Why authentication did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// The backend (server side) or the authenticator (client side, its message)
    /// said no.
    Rejected(String),
    /// The peer stopped answering, or the backend did not answer in time.
    Timeout,
    /// Client side: the server's MS-CHAPv2 Success did not prove it knows the password.
    BadAuthenticatorResponse,
    /// Server side: the backend accepted MS-CHAPv2 without an authenticator response.
    NoAuthenticatorResponse,
}

impl fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthFailure::Rejected(why) if why.is_empty() => f.write_str("rejected"),
            AuthFailure::Rejected(why) => write!(f, "rejected: {why}"),
            AuthFailure::Timeout => f.write_str("timed out"),
            AuthFailure::BadAuthenticatorResponse => {
                f.write_str("server's MS-CHAPv2 authenticator response is wrong")
            }
            AuthFailure::NoAuthenticatorResponse => {
                f.write_str("backend gave no MS-CHAPv2 authenticator response")
            }
        }
    }
}

/// A successful authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Granted {
    /// The user name the peer presented (server side).
    pub user: Option<String>,
    /// What the backend granted (server side; default on the client side).
    pub attributes: Attributes,
}

/// What an authentication machine asks of the link.
#[derive(Debug)]
pub enum AuthOutput {
    /// Send this control packet with this protocol.
    Send(Protocol, Vec<u8>),
    /// Server: have the backend verify this.
    Verify(AuthRequest),
    /// Authentication finished.
    Done(Result<Granted, AuthFailure>),
}

/// Timers and limits the machines share.
#[derive(Clone, Copy, Debug)]
pub struct AuthTiming {
    /// Retransmission interval of Challenge / Authenticate-Request.
    pub restart: Duration,
    /// Transmissions of a Challenge / Authenticate-Request before giving up.
    pub max_tries: u32,
    /// How long to wait for the peer's first packet, or for the backend's answer.
    pub timeout: Duration,
}

/// Peer-supplied text (a CHAP/PAP message, a user name) made safe for logs:
/// printable ASCII, at most 120 characters.
pub fn printable(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(120)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            }
        })
        .collect()
}

/// The server side of whichever method LCP negotiated.
#[derive(Debug)]
pub enum Authenticator {
    /// PAP.
    Pap(pap::PapAuthenticator),
    /// CHAP-MD5 or MS-CHAPv2.
    Chap(chap::ChapAuthenticator),
}

impl Authenticator {
    /// Starts authenticating the peer with `method`; `name` is our CHAP name.
    pub fn start(
        method: AuthMethod,
        name: &str,
        timing: AuthTiming,
        now: Instant,
        entropy: &mut dyn Entropy,
    ) -> Authenticator {
        match method {
            AuthMethod::Pap => Authenticator::Pap(pap::PapAuthenticator::start(timing, now)),
            AuthMethod::Chap | AuthMethod::MsChapV2 => Authenticator::Chap(
                chap::ChapAuthenticator::start(method, name, timing, now, entropy),
            ),
        }
    }

    /// The protocol of its packets.
    pub fn protocol(&self) -> Protocol {
        match self {
            Authenticator::Pap(_) => Protocol::PAP,
            Authenticator::Chap(_) => Protocol::CHAP,
        }
    }

    /// A packet of [`Authenticator::protocol`] from the peer.
    pub fn input(&mut self, now: Instant, packet: &[u8]) {
        match self {
            Authenticator::Pap(m) => m.input(now, packet),
            Authenticator::Chap(m) => m.input(now, packet),
        }
    }

    /// The backend's answer.
    pub fn result(&mut self, now: Instant, result: AuthResult, entropy: &mut dyn Entropy) {
        match self {
            Authenticator::Pap(m) => m.result(now, result),
            Authenticator::Chap(m) => m.result(now, result, entropy),
        }
    }

    /// Whether a backend answer is awaited.
    pub fn is_verifying(&self) -> bool {
        match self {
            Authenticator::Pap(m) => m.is_verifying(),
            Authenticator::Chap(m) => m.is_verifying(),
        }
    }

    /// Retransmissions (with fresh challenges) and timeouts.
    pub fn handle_timeout(&mut self, now: Instant, entropy: &mut dyn Entropy) {
        match self {
            Authenticator::Pap(m) => m.handle_timeout(now),
            Authenticator::Chap(m) => m.handle_timeout(now, entropy),
        }
    }

    /// When [`Authenticator::handle_timeout`] wants to run.
    pub fn next_timeout(&self) -> Option<Instant> {
        match self {
            Authenticator::Pap(m) => m.next_timeout(),
            Authenticator::Chap(m) => m.next_timeout(),
        }
    }

    /// The next output.
    pub fn poll(&mut self) -> Option<AuthOutput> {
        match self {
            Authenticator::Pap(m) => m.poll(),
            Authenticator::Chap(m) => m.poll(),
        }
    }
}

/// The client side of whichever method the server asked for.
#[derive(Debug)]
pub enum AuthPeer {
    /// PAP.
    Pap(pap::PapPeer),
    /// CHAP-MD5 or MS-CHAPv2.
    Chap(chap::ChapPeer),
}

impl AuthPeer {
    /// Starts authenticating ourselves as `user` with `method`.
    pub fn start(
        method: AuthMethod,
        user: &str,
        password: &Password,
        timing: AuthTiming,
        now: Instant,
        entropy: &mut dyn Entropy,
    ) -> AuthPeer {
        match method {
            AuthMethod::Pap => {
                AuthPeer::Pap(pap::PapPeer::start(user, password, timing, now, entropy))
            }
            AuthMethod::Chap | AuthMethod::MsChapV2 => {
                AuthPeer::Chap(chap::ChapPeer::start(method, user, password, timing, now))
            }
        }
    }

    /// The protocol of its packets.
    pub fn protocol(&self) -> Protocol {
        match self {
            AuthPeer::Pap(_) => Protocol::PAP,
            AuthPeer::Chap(_) => Protocol::CHAP,
        }
    }

    /// A packet of [`AuthPeer::protocol`] from the authenticator.
    pub fn input(&mut self, now: Instant, packet: &[u8], entropy: &mut dyn Entropy) {
        match self {
            AuthPeer::Pap(m) => m.input(now, packet),
            AuthPeer::Chap(m) => m.input(now, packet, entropy),
        }
    }

    /// Retransmissions and timeouts.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self {
            AuthPeer::Pap(m) => m.handle_timeout(now),
            AuthPeer::Chap(m) => m.handle_timeout(now),
        }
    }

    /// When [`AuthPeer::handle_timeout`] wants to run.
    pub fn next_timeout(&self) -> Option<Instant> {
        match self {
            AuthPeer::Pap(m) => m.next_timeout(),
            AuthPeer::Chap(m) => m.next_timeout(),
        }
    }

    /// The next output.
    pub fn poll(&mut self) -> Option<AuthOutput> {
        match self {
            AuthPeer::Pap(m) => m.poll(),
            AuthPeer::Chap(m) => m.poll(),
        }
    }
}

/// The queue and deadline every machine carries.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    pub(crate) out: VecDeque<AuthOutput>,
    pub(crate) deadline: Option<Instant>,
}

impl Outbox {
    pub(crate) fn send(&mut self, protocol: Protocol, packet: Vec<u8>) {
        self.out.push_back(AuthOutput::Send(protocol, packet));
    }

    pub(crate) fn done(&mut self, result: Result<Granted, AuthFailure>) {
        self.deadline = None;
        self.out.push_back(AuthOutput::Done(result));
    }

    pub(crate) fn expired(&mut self, now: Instant) -> bool {
        match self.deadline {
            Some(deadline) if deadline <= now => {
                self.deadline = None;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_and_options_round_trip() {
        for m in [AuthMethod::Pap, AuthMethod::Chap, AuthMethod::MsChapV2] {
            assert_eq!(AuthMethod::from_option(m.option_value()), Some(m));
            assert_eq!(m.name().parse::<AuthMethod>(), Ok(m));
        }
        assert_eq!("MSCHAPv2".parse::<AuthMethod>(), Ok(AuthMethod::MsChapV2));
        assert!("eap".parse::<AuthMethod>().is_err());
        assert_eq!(AuthMethod::from_option(&[0xc2, 0x23, 0x80]), None);
        assert_eq!(AuthMethod::from_option(&[0xc2]), None);
    }

    #[test]
    fn printable_cleans_peer_text() {
        assert_eq!(printable(b"ok \x1b[31m\xff"), "ok ?[31m?");
    }
}
