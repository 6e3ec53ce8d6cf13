//! Users from the configuration (`[[user]]` name + password, optional static address),
//! verifying PAP, CHAP-MD5 and MS-CHAPv2 credentials in constant time.
//!
//! Passwords and NT hashes are zeroized on drop and never printed. An unknown user
//! costs the same work as a wrong password (a dummy entry is checked), and both get
//! the same reason, so the answer does not tell which names exist.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::Ipv4Addr;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{Attributes, AuthBackend, AuthRequest, AuthResult, Credentials, Password, RequestId};
use crate::ppp::auth::{chap, mschapv2};

/// The reason given for every failed verification.
pub const REJECT_REASON: &str = "unknown user or wrong password";

/// Why a user could not be added.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// The name is empty or longer than 255 octets (PAP and CHAP carry it in one
    /// octet's length).
    #[error("user name {0:?} must be 1 to 255 octets")]
    BadName(String),
    /// The password is longer than 255 octets (PAP) or 256 UTF-16 characters
    /// (MS-CHAPv2).
    #[error("password of user {0:?} is longer than 255 octets")]
    PasswordTooLong(String),
    /// The name is there already.
    #[error("user {0:?} is defined twice")]
    Duplicate(String),
    /// Two users share a static address.
    #[error("user {user:?}: static address {address} is already given to {other:?}")]
    DuplicateAddress {
        /// The user being added.
        user: String,
        /// The address.
        address: Ipv4Addr,
        /// Who has it.
        other: String,
    },
}

struct User {
    password: Password,
    nt_hash: Zeroizing<[u8; 16]>,
    address: Option<Ipv4Addr>,
}

impl User {
    fn new(password: Password, address: Option<Ipv4Addr>) -> User {
        let nt_hash = mschapv2::nt_password_hash(password.expose());
        User {
            password,
            nt_hash,
            address,
        }
    }
}

/// The local user table. Implements [`AuthBackend`] by answering at submit time.
pub struct LocalUsers {
    users: HashMap<String, User>,
    dummy: User,
    answers: VecDeque<(RequestId, AuthResult)>,
}

impl fmt::Debug for LocalUsers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalUsers")
            .field("users", &self.users.len())
            .field("pending_answers", &self.answers.len())
            .finish_non_exhaustive()
    }
}

impl Default for LocalUsers {
    fn default() -> LocalUsers {
        LocalUsers::new()
    }
}

impl LocalUsers {
    /// An empty table.
    pub fn new() -> LocalUsers {
        LocalUsers {
            users: HashMap::new(),
            dummy: User::new(Password::from("\u{1}not-a-real-password\u{1}"), None),
            answers: VecDeque::new(),
        }
    }

    /// Adds a user. `address` is a static inner address (reserve it in the pool with
    /// [`crate::aaa::Pool::reserve`] too).
    pub fn add(
        &mut self,
        name: &str,
        password: Password,
        address: Option<Ipv4Addr>,
    ) -> Result<(), UserError> {
        if name.is_empty() || name.len() > 255 {
            return Err(UserError::BadName(name.to_string()));
        }
        if password.len() > 255 {
            return Err(UserError::PasswordTooLong(name.to_string()));
        }
        if self.users.contains_key(name) {
            return Err(UserError::Duplicate(name.to_string()));
        }
        if let Some(address) = address
            && let Some((other, _)) = self.users.iter().find(|(_, u)| u.address == Some(address))
        {
            return Err(UserError::DuplicateAddress {
                user: name.to_string(),
                address,
                other: other.clone(),
            });
        }
        self.users
            .insert(name.to_string(), User::new(password, address));
        Ok(())
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The static addresses of all users (to reserve in the pool).
    pub fn static_addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.users.values().filter_map(|u| u.address)
    }

    /// The entry for a presented name: exact, else without a `DOMAIN\` prefix.
    fn lookup(&self, name: &str) -> Option<&User> {
        self.users.get(name).or_else(|| {
            let (_, bare) = name.rsplit_once('\\')?;
            self.users.get(bare)
        })
    }

    /// Verifies a request on the spot.
    pub fn verify(&self, req: &AuthRequest) -> AuthResult {
        let (user, known) = match self.lookup(&req.user) {
            Some(user) => (user, true),
            None => (&self.dummy, false),
        };
        let (good, authenticator_response) = match &req.method {
            Credentials::Pap { password } => {
                let good: bool = password.expose().ct_eq(user.password.expose()).into();
                (good, None)
            }
            Credentials::Chap {
                id,
                challenge,
                response,
            } => {
                let expected = chap::md5_response(*id, user.password.expose(), challenge);
                (bool::from(expected.ct_eq(response)), None)
            }
            Credentials::MsChapV2 {
                auth_challenge,
                peer_challenge,
                nt_response,
            } => {
                let name = req.user.as_bytes();
                let expected = mschapv2::generate_nt_response(
                    auth_challenge,
                    peer_challenge,
                    name,
                    &user.nt_hash,
                );
                let good = bool::from(expected.ct_eq(nt_response));
                let response = good.then(|| {
                    mschapv2::generate_authenticator_response(
                        &user.nt_hash,
                        nt_response,
                        peer_challenge,
                        auth_challenge,
                        name,
                    )
                });
                (good, response)
            }
        };
        if good && known {
            AuthResult::Accept {
                attributes: Attributes {
                    framed_address: user.address,
                    authenticator_response,
                    session_timeout: None,
                },
            }
        } else {
            AuthResult::reject(REJECT_REASON)
        }
    }
}

impl AuthBackend for LocalUsers {
    fn submit(&mut self, id: RequestId, req: AuthRequest) {
        let answer = self.verify(&req);
        self.answers.push_back((id, answer));
    }

    fn poll(&mut self) -> Option<(RequestId, AuthResult)> {
        self.answers.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> LocalUsers {
        let mut users = LocalUsers::new();
        users
            .add("alice", Password::from("alicepass"), None)
            .unwrap();
        users
            .add(
                "bob",
                Password::from("bobpass"),
                Some(Ipv4Addr::new(10, 99, 0, 5)),
            )
            .unwrap();
        users
    }

    fn pap(user: &str, password: &str) -> AuthRequest {
        AuthRequest {
            user: user.to_string(),
            method: Credentials::Pap {
                password: Password::from(password),
            },
        }
    }

    #[test]
    fn pap_accepts_the_right_password_only() {
        let users = users();
        assert!(matches!(
            users.verify(&pap("alice", "alicepass")),
            AuthResult::Accept { .. }
        ));
        assert_eq!(
            users.verify(&pap("alice", "alicepas")),
            AuthResult::reject(REJECT_REASON)
        );
        assert_eq!(
            users.verify(&pap("mallory", "alicepass")),
            AuthResult::reject(REJECT_REASON)
        );
    }

    #[test]
    fn static_address_is_granted() {
        let users = users();
        let AuthResult::Accept { attributes } = users.verify(&pap("bob", "bobpass")) else {
            panic!("bob rejected");
        };
        assert_eq!(attributes.framed_address, Some(Ipv4Addr::new(10, 99, 0, 5)));
        assert_eq!(users.static_addresses().count(), 1);
    }

    #[test]
    fn domain_prefix_is_ignored_for_lookup() {
        let users = users();
        assert!(matches!(
            users.verify(&pap("CORP\\alice", "alicepass")),
            AuthResult::Accept { .. }
        ));
    }

    #[test]
    fn add_rejects_bad_entries() {
        let mut users = users();
        assert_eq!(
            users.add("alice", Password::from("x"), None),
            Err(UserError::Duplicate("alice".into()))
        );
        assert_eq!(
            users.add("", Password::from("x"), None),
            Err(UserError::BadName(String::new()))
        );
        assert!(matches!(
            users.add(
                "carol",
                Password::from("x"),
                Some(Ipv4Addr::new(10, 99, 0, 5))
            ),
            Err(UserError::DuplicateAddress { .. })
        ));
        assert!(matches!(
            users.add("dave", Password::new(vec![b'a'; 256]), None),
            Err(UserError::PasswordTooLong(_))
        ));
    }

    #[test]
    fn backend_answers_through_poll() {
        let mut users = users();
        users.submit(RequestId(7), pap("alice", "alicepass"));
        users.submit(RequestId(8), pap("alice", "nope"));
        assert!(matches!(
            users.poll(),
            Some((RequestId(7), AuthResult::Accept { .. }))
        ));
        assert!(matches!(
            users.poll(),
            Some((RequestId(8), AuthResult::Reject { .. }))
        ));
        assert!(users.poll().is_none());
    }

    #[test]
    fn secrets_are_not_printed() {
        let text = format!("{:?} {:?}", users(), pap("alice", "alicepass"));
        assert!(!text.contains("alicepass"), "{text}");
    }
}
