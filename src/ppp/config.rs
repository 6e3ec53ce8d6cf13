//! What a [`super::Link`] is configured with: the `[ppp]` section for the server side
//! ([`ServerConfig`]), the user and accepted methods for the client side
//! ([`ClientConfig`]), and the timers both share ([`Timing`]).

use std::net::Ipv4Addr;
use std::time::Duration;

use super::auth::{AuthMethod, AuthTiming};
use super::fsm::FsmConfig;
use crate::aaa::Password;

/// Timers and counters (RFC 1661 §4.6 and keepalives).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Restart timer of LCP, IPCP and the Challenge / Authenticate-Request (3 s).
    pub restart: Duration,
    /// Max-Configure; also the tries of a Challenge or Authenticate-Request (10).
    pub max_configure: u32,
    /// Max-Terminate (2).
    pub max_terminate: u32,
    /// Max-Failure; also the Naks of our magic number that mean loopback (5).
    pub max_failure: u32,
    /// LCP Echo-Request interval while up; `None` disables keepalives (30 s).
    pub echo_interval: Option<Duration>,
    /// Unanswered Echo-Requests in a row that take the link down (4).
    pub echo_failures: u32,
    /// How long to wait for the peer to authenticate, or for the backend (30 s).
    pub auth_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            restart: Duration::from_secs(3),
            max_configure: 10,
            max_terminate: 2,
            max_failure: 5,
            echo_interval: Some(Duration::from_secs(30)),
            echo_failures: 4,
            auth_timeout: Duration::from_secs(30),
        }
    }
}

impl Timing {
    /// The automaton's part.
    pub fn fsm(&self) -> FsmConfig {
        FsmConfig {
            restart: self.restart,
            max_configure: self.max_configure.max(1),
            max_terminate: self.max_terminate.max(1),
            max_failure: self.max_failure.max(1),
        }
    }

    /// The authentication machines' part.
    pub fn auth(&self) -> AuthTiming {
        AuthTiming {
            restart: self.restart,
            max_tries: self.max_configure.max(1),
            timeout: self.auth_timeout,
        }
    }
}

/// The gateway side (`[ppp]` in the config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Methods offered, in order (`auth = ["mschapv2", "chap", "pap"]`). Must not be
    /// empty: the pool address comes with the backend's Accept.
    pub auth: Vec<AuthMethod>,
    /// Our CHAP name (the Name field of Challenges).
    pub name: String,
    /// The gateway's own inner address (IPCP IP-Address we request).
    pub local_address: Ipv4Addr,
    /// DNS servers handed out (RFC 1877): first primary, second secondary.
    pub dns: Vec<Ipv4Addr>,
    /// NBNS (WINS) servers handed out.
    pub nbns: Vec<Ipv4Addr>,
    /// Our MRU (`mtu` in the config).
    pub mru: u16,
    /// Ack the peer's PFC and ACFC.
    pub accept_compression: bool,
    /// Timers.
    pub timing: Timing,
}

/// A [`ServerConfig`] that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `auth` is empty.
    #[error("ppp.auth: at least one of \"mschapv2\", \"chap\", \"pap\" is needed")]
    NoAuth,
    /// `mtu` is below the smallest MRU a peer must accept.
    #[error("ppp.mtu: {0} is below {min}", min = super::lcp::MIN_MRU)]
    MtuTooSmall(u16),
    /// `local_address` is not a host address.
    #[error("ppp.local_address: {0} is not a usable address")]
    BadLocalAddress(Ipv4Addr),
}

impl ServerConfig {
    /// Defaults: `[mschapv2, chap, pap]`, name `sekisho`, MRU 1400, no DNS.
    pub fn new(local_address: Ipv4Addr) -> ServerConfig {
        ServerConfig {
            auth: vec![AuthMethod::MsChapV2, AuthMethod::Chap, AuthMethod::Pap],
            name: "sekisho".to_string(),
            local_address,
            dns: Vec::new(),
            nbns: Vec::new(),
            mru: 1400,
            accept_compression: true,
            timing: Timing::default(),
        }
    }

    /// Checks what a link cannot work without.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.auth.is_empty() {
            return Err(ConfigError::NoAuth);
        }
        if self.mru < super::lcp::MIN_MRU {
            return Err(ConfigError::MtuTooSmall(self.mru));
        }
        let a = self.local_address;
        if a.is_unspecified() || a.is_broadcast() || a.is_multicast() {
            return Err(ConfigError::BadLocalAddress(a));
        }
        Ok(())
    }
}

/// A client (the test peer, the load generator, `sekisho demo`).
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// User name.
    pub user: String,
    /// Password.
    pub password: Password,
    /// Methods we accept; the first is what we suggest in a Nak.
    pub auth: Vec<AuthMethod>,
    /// Our MRU.
    pub mru: u16,
    /// Ask for DNS servers (RFC 1877).
    pub request_dns: bool,
    /// Request PFC and ACFC.
    pub request_compression: bool,
    /// Timers.
    pub timing: Timing,
}

impl ClientConfig {
    /// Defaults: every method (MS-CHAPv2 first), MRU 1400, DNS requested.
    pub fn new(user: &str, password: Password) -> ClientConfig {
        ClientConfig {
            user: user.to_string(),
            password,
            auth: vec![AuthMethod::MsChapV2, AuthMethod::Chap, AuthMethod::Pap],
            mru: 1400,
            request_dns: true,
            request_compression: false,
            timing: Timing::default(),
        }
    }
}
