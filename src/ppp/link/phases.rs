//! The phase handlers of [`Link`]: what each machine's output means for the link
//! (LCP up/down/finished, authentication done, IPCP up/down), and the Down causes
//! derived from an automaton's [`Cause`].

use std::net::Ipv4Addr;
use std::time::Instant;

use super::{Auth, Link, Phase, Side};
use crate::ppp::auth::{AuthFailure, AuthOutput, AuthPeer, Authenticator};
use crate::ppp::event::{DownReason, Event, LinkUp};
use crate::ppp::fsm::{Cause, Fsm, Output, State};
use crate::ppp::ipcp::{IpcpOptions, IpcpRole};
use crate::ppp::lcp;
use crate::wire::ppp::Protocol;

pub(super) fn lcp_reason(cause: Option<&Cause>) -> DownReason {
    match cause {
        Some(Cause::Timeout) => DownReason::NegotiationTimeout("LCP"),
        Some(Cause::PeerTerminated(text)) => {
            DownReason::PeerTerminated(crate::ppp::auth::printable(text))
        }
        Some(Cause::PeerRejected) => DownReason::ProtocolRejected("LCP"),
        Some(Cause::NotConverging) => DownReason::NegotiationFailed("LCP did not converge".into()),
        Some(Cause::Failed(lcp::NO_COMMON_AUTH)) => DownReason::NoCommonAuth,
        Some(Cause::Failed(lcp::AUTH_REFUSED)) => DownReason::AuthRefused,
        Some(Cause::Failed(lcp::LOOPBACK)) => DownReason::Loopback,
        Some(Cause::Failed(why)) => DownReason::NegotiationFailed((*why).into()),
        None => DownReason::NegotiationFailed("LCP finished".into()),
    }
}

pub(super) fn ipcp_reason(cause: Option<&Cause>) -> DownReason {
    match cause {
        Some(Cause::Timeout) => DownReason::NegotiationTimeout("IPCP"),
        Some(Cause::PeerTerminated(text)) => {
            DownReason::PeerTerminated(crate::ppp::auth::printable(text))
        }
        Some(Cause::PeerRejected) => DownReason::ProtocolRejected("IPCP"),
        Some(Cause::Failed(crate::ppp::ipcp::NO_ADDRESS)) => DownReason::NoAddress,
        Some(Cause::NotConverging) => DownReason::NegotiationFailed("IPCP did not converge".into()),
        Some(Cause::Failed(why)) => DownReason::NegotiationFailed((*why).into()),
        None => DownReason::NegotiationFailed("IPCP finished".into()),
    }
}

impl Link {
    pub(super) fn on_lcp(&mut self, now: Instant, out: Output) {
        match out {
            Output::Send(p) => self.emit(Protocol::LCP, &p),
            Output::Up => self.lcp_up(now),
            Output::Down => self.lcp_down(now),
            Output::Finished => {
                let reason = lcp_reason(self.lcp.fsm().cause());
                self.emit_down(reason);
                if self.phase != Phase::Dead {
                    self.finish();
                }
            }
            Output::Started => {}
        }
    }

    pub(super) fn lcp_up(&mut self, now: Instant) {
        if self.phase != Phase::Establish {
            return;
        }
        let timing = match &self.side {
            Side::Server(cfg) => cfg.timing.auth(),
            Side::Client(cfg) => cfg.timing.auth(),
        };
        match &self.side {
            Side::Server(cfg) => match self.lcp.options().auth() {
                Some(method) => {
                    self.method = Some(method);
                    self.phase = Phase::Authenticate;
                    let a =
                        Authenticator::start(method, &cfg.name, timing, now, self.entropy.as_mut());
                    self.auth = Auth::Server(a);
                }
                None => self.shutdown(now, DownReason::NoCommonAuth),
            },
            Side::Client(cfg) => match self.lcp.options().peer().auth {
                Some(method) => {
                    self.method = Some(method);
                    self.phase = Phase::Authenticate;
                    let a = AuthPeer::start(
                        method,
                        &cfg.user,
                        &cfg.password,
                        timing,
                        now,
                        self.entropy.as_mut(),
                    );
                    self.auth = Auth::Client(a);
                }
                None => self.start_ipcp(now, None),
            },
        }
    }

    pub(super) fn lcp_down(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Terminate | Phase::Dead) {
            return;
        }
        let cause = self.lcp.fsm().cause().cloned();
        let terminal = matches!(cause, Some(Cause::PeerTerminated(_) | Cause::PeerRejected))
            || matches!(self.lcp.fsm().state(), State::Closing | State::Stopping);
        if terminal {
            self.shutdown(now, lcp_reason(cause.as_ref()));
        } else if self.up.is_some() || self.granted.is_some() {
            // After authentication: a second one would have to reach the data plane
            // and the pool; end the link instead.
            self.shutdown(
                now,
                DownReason::NegotiationFailed("peer renegotiated LCP".into()),
            );
        } else {
            // Renegotiation before the link is up: start over from Establish.
            if let Auth::Server(a) = &self.auth
                && a.is_verifying()
            {
                self.stale_results += 1;
            }
            self.auth = Auth::None;
            self.granted = None;
            self.ipcp = None;
            self.phase = Phase::Establish;
        }
    }

    pub(super) fn on_auth(&mut self, now: Instant, out: AuthOutput) {
        match out {
            AuthOutput::Send(protocol, p) => self.emit(protocol, &p),
            AuthOutput::Verify(request) => self.events.push_back(Event::Authenticate(request)),
            AuthOutput::Done(Ok(granted)) if self.phase == Phase::Authenticate => {
                let address = granted.attributes.framed_address;
                let server = matches!(self.side, Side::Server(_));
                self.session_deadline = granted.attributes.session_timeout.map(|t| now + t);
                self.granted = Some(granted);
                match (server, address) {
                    (true, None) => self.shutdown(now, DownReason::NoAddress),
                    _ => self.start_ipcp(now, address),
                }
            }
            AuthOutput::Done(Ok(_)) => {}
            AuthOutput::Done(Err(failure)) => {
                let reason = match failure {
                    AuthFailure::Timeout => DownReason::AuthTimeout,
                    AuthFailure::Rejected(why) => DownReason::AuthFailed(why),
                    other => DownReason::AuthFailed(other.to_string()),
                };
                self.shutdown(now, reason);
            }
        }
    }

    pub(super) fn start_ipcp(&mut self, now: Instant, assigned: Option<Ipv4Addr>) {
        let (role, timing) = match &self.side {
            Side::Server(cfg) => {
                let two = |list: &[Ipv4Addr]| [list.first().copied(), list.get(1).copied()];
                let role = IpcpRole::Server {
                    local: cfg.local_address,
                    assigned: assigned.unwrap_or(Ipv4Addr::UNSPECIFIED),
                    dns: two(&cfg.dns),
                    nbns: two(&cfg.nbns),
                };
                (role, cfg.timing)
            }
            Side::Client(cfg) => (
                IpcpRole::Client {
                    request_dns: cfg.request_dns,
                },
                cfg.timing,
            ),
        };
        let mut id = [0u8; 1];
        self.entropy.fill(&mut id);
        let mut ipcp = Fsm::new(IpcpOptions::new(role), timing.fsm(), id[0]);
        ipcp.set_max_packet(usize::from(self.lcp.options().peer().mru));
        ipcp.open(now);
        ipcp.up(now);
        self.ipcp = Some(ipcp);
        self.phase = Phase::Network;
    }

    pub(super) fn on_ipcp(&mut self, now: Instant, out: Output) {
        match out {
            Output::Send(p) => self.emit(Protocol::IPCP, &p),
            Output::Up => self.ipcp_up(now),
            Output::Down | Output::Finished => {
                let cause = self.ipcp.as_ref().and_then(|i| i.cause().cloned());
                if out == Output::Finished
                    || matches!(cause, Some(Cause::PeerTerminated(_) | Cause::PeerRejected))
                {
                    self.shutdown(now, ipcp_reason(cause.as_ref()));
                }
            }
            Output::Started => {}
        }
    }

    pub(super) fn ipcp_up(&mut self, now: Instant) {
        let Some(ipcp) = &self.ipcp else {
            return;
        };
        let options = ipcp.negotiator();
        if options.local_address().is_unspecified() {
            return self.shutdown(now, DownReason::NoAddress);
        }
        let lcp = self.lcp.options();
        let user = match &self.side {
            Side::Server(_) => self.granted.as_ref().and_then(|g| g.user.clone()),
            Side::Client(cfg) => Some(cfg.user.clone()),
        };
        let up = LinkUp {
            peer_address: options.peer_address(),
            local_address: options.local_address(),
            dns: options.dns(),
            mru: lcp.peer().mru,
            local_mru: lcp.mru(),
            acfc: lcp.peer().acfc,
            pfc: lcp.peer().pfc,
            user,
            auth: self.method,
        };
        match &self.up {
            None => {
                self.up = Some(up.clone());
                self.events.push_back(Event::Up(up));
            }
            Some(previous) if *previous == up => {}
            Some(_) => self.shutdown(
                now,
                DownReason::NegotiationFailed("IPCP renegotiated other addresses".into()),
            ),
        }
    }

    pub(super) fn protocol_rejected(&mut self, now: Instant, protocol: Protocol) {
        match protocol {
            Protocol::IPCP => self.shutdown(now, DownReason::ProtocolRejected("IPCP")),
            Protocol::PAP | Protocol::CHAP if self.phase == Phase::Authenticate => self.shutdown(
                now,
                DownReason::AuthFailed("peer rejected the authentication protocol".into()),
            ),
            _ => {}
        }
    }
}
