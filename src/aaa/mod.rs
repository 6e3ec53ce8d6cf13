//! Authentication, authorization and address assignment for PPP links.
//!
//! A PPP link on the server side never verifies a password itself: it emits
//! an [`AuthRequest`] (the user name and the credentials the peer sent, by method) and
//! goes on serving its other frames and timers. The control thread hands the request
//! to an [`AuthBackend`] with [`AuthBackend::submit`], which returns at once, and later
//! collects the answer with [`AuthBackend::poll`] and feeds it back to the link. The
//! local user table ([`LocalUsers`]) answers on the spot; a RADIUS client will answer
//! after a round trip, behind the same trait.
//!
//! [`Pool`] hands out the inner IPv4 addresses (a range or a CIDR, statics reserved).

use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use zeroize::Zeroizing;

pub mod pool;
pub mod users;

pub use pool::{Pool, PoolError};
pub use users::{LocalUsers, UserError};

/// A password (or other shared secret): zeroized on drop, never printed.
#[derive(Clone, Default)]
pub struct Password(Zeroizing<Vec<u8>>);

impl Password {
    /// Takes the bytes of a password.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Password {
        Password(Zeroizing::new(bytes.into()))
    }

    /// The secret bytes. Callers must not log or copy them into unzeroized memory.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in octets.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the password is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Password {
    fn from(text: &str) -> Password {
        Password::new(text.as_bytes())
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// The credentials a peer presented, by authentication method.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// PAP (RFC 1334): the password in clear.
    Pap {
        /// The password the peer sent.
        password: Password,
    },
    /// CHAP with MD5 (RFC 1994): Response = MD5(Identifier | secret | Challenge).
    Chap {
        /// Identifier of the Challenge/Response.
        id: u8,
        /// The challenge we sent.
        challenge: Vec<u8>,
        /// The 16-octet response value the peer sent.
        response: [u8; 16],
    },
    /// MS-CHAPv2 (RFC 2759).
    MsChapV2 {
        /// The 16-octet challenge we sent.
        auth_challenge: [u8; 16],
        /// The peer's 16-octet challenge (first field of its Response).
        peer_challenge: [u8; 16],
        /// The 24-octet NT-Response.
        nt_response: [u8; 24],
    },
}

/// What a server-side link asks the backend to verify.
#[derive(Clone, Debug)]
pub struct AuthRequest {
    /// The name the peer presented (PAP Peer-ID or CHAP Name), as sent (for
    /// MS-CHAPv2 possibly `DOMAIN\user`). Invalid UTF-8 is replaced (U+FFFD).
    pub user: String,
    /// The credentials.
    pub method: Credentials,
}

/// Identifies one submitted request until its answer is polled. Chosen by the caller
/// (the control thread), e.g. a link index and a sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// The 20-octet MS-CHAPv2 authenticator response (RFC 2759 §8.7), sent to the peer as
/// `S=<40 hex digits>` in the Success packet. RADIUS carries it in MS-CHAP2-Success.
pub type AuthenticatorResponse = [u8; 20];

/// What the backend grants an accepted user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    /// The inner address the peer must get (a static user address, RADIUS
    /// Framed-IP-Address). `None` means "from the pool": before handing an Accept to
    /// the link the caller fills it in, see [`Pool::assign`].
    pub framed_address: Option<Ipv4Addr>,
    /// For MS-CHAPv2: the authenticator response that proves to the peer that we know
    /// its password too. Required for MS-CHAPv2 (a link treats an Accept without it as
    /// a failure); ignored for the other methods.
    pub authenticator_response: Option<AuthenticatorResponse>,
    /// Longest the session may last (RADIUS Session-Timeout); the link closes it with
    /// "session timeout" after that.
    pub session_timeout: Option<Duration>,
}

/// The backend's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthResult {
    /// The credentials are good.
    Accept {
        /// What the user is granted.
        attributes: Attributes,
    },
    /// They are not (or the user is unknown, or the backend failed).
    Reject {
        /// Why, in words, for the log and the accounting record (never the password).
        reason: String,
    },
}

impl AuthResult {
    /// A reject with a reason.
    pub fn reject(reason: impl Into<String>) -> AuthResult {
        AuthResult::Reject {
            reason: reason.into(),
        }
    }
}

/// An authentication backend that answers asynchronously.
///
/// `submit` must return at once (queue the work, send the RADIUS packet); answers are
/// collected with `poll`, in any order. Every submitted request must be answered
/// exactly once (a backend that gives up answers [`AuthResult::Reject`]): links count
/// on it to tell a stale answer from a current one.
pub trait AuthBackend {
    /// Queues a request.
    fn submit(&mut self, id: RequestId, req: AuthRequest);
    /// The next answer that is ready, if any.
    fn poll(&mut self) -> Option<(RequestId, AuthResult)>;
}
