//! What a [`super::Link`] reports: frames to send, credentials to verify, the link
//! coming up with its addresses, and the link going down with a cause in words.

use std::fmt;
use std::net::Ipv4Addr;

use super::auth::AuthMethod;
use crate::aaa::AuthRequest;

/// One thing for the caller to do or know.
#[derive(Debug)]
pub enum Event {
    /// Send this PPP frame (`FF 03`, two-octet protocol, packet) in an L2TP data
    /// message of this session.
    Send(Vec<u8>),
    /// Server: verify these credentials with the backend and call
    /// [`super::Link::auth_result`] with the answer (the link keeps running
    /// meanwhile).
    Authenticate(AuthRequest),
    /// IPCP is open: install the session in the data plane, start accounting.
    Up(LinkUp),
    /// The link is down (once): remove the session from the data plane, stop
    /// accounting, release the address. The link may still send Terminate frames.
    Down(DownReason),
    /// Nothing more will happen (after [`Event::Down`]): tear down the L2TP session
    /// and drop the link.
    Finished,
}

/// What the data plane and accounting need once the link is up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkUp {
    /// The peer's inner address: the client's pool address on the server side, the
    /// gateway's on the client side.
    pub peer_address: Ipv4Addr,
    /// Our inner address.
    pub local_address: Ipv4Addr,
    /// DNS servers handed out (server) or received (client).
    pub dns: Vec<Ipv4Addr>,
    /// The peer's MRU: the largest PPP information field we may send (clamp TCP MSS
    /// to it, less the IP and TCP headers).
    pub mru: u16,
    /// Our MRU as negotiated.
    pub local_mru: u16,
    /// We may send frames without `FF 03` (the peer asked for ACFC).
    pub acfc: bool,
    /// We may send one-octet protocol fields (the peer asked for PFC).
    pub pfc: bool,
    /// The authenticated user (server side), or ours (client side).
    pub user: Option<String>,
    /// The authentication method used.
    pub auth: Option<AuthMethod>,
}

/// Why a link went down, for logs and the accounting record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DownReason {
    /// The peer sent Terminate-Request (with its text, e.g. "User request").
    PeerTerminated(String),
    /// Echo-Requests went unanswered.
    EchoTimeout,
    /// The credentials were refused (the backend's reason, or the server's message).
    AuthFailed(String),
    /// The peer did not authenticate in time, or the backend did not answer.
    AuthTimeout,
    /// No authentication method both sides accept.
    NoCommonAuth,
    /// The peer rejected the Authentication-Protocol option.
    AuthRefused,
    /// Closed locally ([`super::Link::close`]) with this reason, e.g. "admin close".
    Closed(String),
    /// A protocol's Configure-Requests went unanswered ("LCP", "IPCP").
    NegotiationTimeout(&'static str),
    /// A protocol's negotiation failed.
    NegotiationFailed(String),
    /// Our own LCP requests came back: the line is looped.
    Loopback,
    /// The L2TP session or tunnel under the link went away.
    LowerLayerDown,
    /// The peer Protocol-Rejected a protocol we need ("LCP", "IPCP").
    ProtocolRejected(&'static str),
    /// The backend's Session-Timeout expired.
    SessionTimeout,
    /// No inner address for the peer (pool exhausted), or none given to us.
    NoAddress,
}

impl fmt::Display for DownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownReason::PeerTerminated(text) if text.is_empty() => f.write_str("peer terminated"),
            DownReason::PeerTerminated(text) => write!(f, "peer terminated ({text})"),
            DownReason::EchoTimeout => f.write_str("echo timeout"),
            DownReason::AuthFailed(why) if why.is_empty() => f.write_str("authentication failed"),
            DownReason::AuthFailed(why) => write!(f, "authentication failed ({why})"),
            DownReason::AuthTimeout => f.write_str("authentication timeout"),
            DownReason::NoCommonAuth => f.write_str("no common authentication method"),
            DownReason::AuthRefused => f.write_str("peer refused to authenticate"),
            DownReason::Closed(why) => f.write_str(why),
            DownReason::NegotiationTimeout(p) => write!(f, "{p} negotiation timeout"),
            DownReason::NegotiationFailed(why) => write!(f, "negotiation failed ({why})"),
            DownReason::Loopback => f.write_str("loopback detected"),
            DownReason::LowerLayerDown => f.write_str("lower layer down"),
            DownReason::ProtocolRejected(p) => write!(f, "peer rejected {p}"),
            DownReason::SessionTimeout => f.write_str("session timeout"),
            DownReason::NoAddress => f.write_str("no address available"),
        }
    }
}
