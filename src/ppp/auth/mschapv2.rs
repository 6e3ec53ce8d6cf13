//! MS-CHAPv2 (RFC 2759): the response and authenticator-response computations, and
//! the text of the Success and Failure messages.
//!
//! The Response value (§4) is PeerChallenge (16) | Reserved (8, zero) | NT-Response
//! (24) | Flags (1, zero). The exchange itself is CHAP's ([`super::chap`]) with
//! algorithm 0x81.

use std::fmt::Write as _;

use des::Des;
use des::cipher::{BlockCipherEncrypt, KeyInit};
use md4::{Digest as _, Md4};
use sha1::Sha1;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

/// Length of the Response value (§4).
pub const RESPONSE_LEN: usize = 49;
/// Length of the authenticator's and the peer's challenges.
pub const CHALLENGE_LEN: usize = 16;

/// "Magic server to client signing constant" (§8.7).
const MAGIC1: &[u8; 39] = b"Magic server to client signing constant";
/// "Pad to make it do more than one iteration" (§8.7).
const MAGIC2: &[u8; 41] = b"Pad to make it do more than one iteration";

/// The user name that goes into ChallengeHash: without a `DOMAIN\` prefix (§8.2).
pub fn bare_user_name(user: &[u8]) -> &[u8] {
    match user.iter().rposition(|&b| b == b'\\') {
        Some(pos) => &user[pos + 1..],
        None => user,
    }
}

/// ChallengeHash (§8.2): SHA1(PeerChallenge | AuthenticatorChallenge | UserName)[..8],
/// the user name taken without a domain prefix.
pub fn challenge_hash(
    peer_challenge: &[u8; 16],
    auth_challenge: &[u8; 16],
    user: &[u8],
) -> [u8; 8] {
    let mut sha = Sha1::new();
    sha.update(peer_challenge);
    sha.update(auth_challenge);
    sha.update(bare_user_name(user));
    let digest: [u8; 20] = sha.finalize().into();
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// NtPasswordHash (§8.3): MD4 of the password in UTF-16LE. The password bytes are
/// read as UTF-8 (invalid sequences become U+FFFD, as Windows would never send them).
pub fn nt_password_hash(password: &[u8]) -> Zeroizing<[u8; 16]> {
    let text = Zeroizing::new(String::from_utf8_lossy(password).into_owned());
    let mut unicode = Zeroizing::new(Vec::with_capacity(text.len() * 2));
    for unit in text.encode_utf16() {
        unicode.extend_from_slice(&unit.to_le_bytes());
    }
    let mut md4 = Md4::new();
    md4.update(&unicode[..]);
    Zeroizing::new(md4.finalize().into())
}

/// HashNtPasswordHash (§8.4): MD4 of the NT hash.
pub fn hash_nt_password_hash(hash: &[u8; 16]) -> Zeroizing<[u8; 16]> {
    Zeroizing::new(Md4::digest(hash).into())
}

/// The 7-to-8 octet DES key expansion (§8.6 DesEncrypt): seven key bits in the top of
/// each octet, the low (parity) bit left zero; DES ignores it.
fn des_key(key7: &[u8; 7]) -> Zeroizing<[u8; 8]> {
    let k = key7;
    Zeroizing::new([
        k[0] & 0xfe,
        (k[0] << 7) | (k[1] >> 1),
        (k[1] << 6) | (k[2] >> 2),
        (k[2] << 5) | (k[3] >> 3),
        (k[3] << 4) | (k[4] >> 4),
        (k[4] << 3) | (k[5] >> 5),
        (k[5] << 2) | (k[6] >> 6),
        k[6] << 1,
    ])
}

fn des_encrypt(clear: &[u8; 8], key7: &[u8; 7]) -> [u8; 8] {
    let key = des_key(key7);
    // Borrow the key as the cipher's array type: no unzeroized copy of it.
    let Ok(cipher) = Des::new_from_slice(&key[..]) else {
        return [0; 8]; // unreachable: the key is 8 octets
    };
    let mut block = (*clear).into();
    cipher.encrypt_block(&mut block);
    block.into()
}

/// ChallengeResponse (§8.5): the 8-octet challenge DES-encrypted under the three
/// 7-octet thirds of the NT hash padded with five zeros.
pub fn challenge_response(challenge: &[u8; 8], password_hash: &[u8; 16]) -> [u8; 24] {
    let mut z = Zeroizing::new([0u8; 21]);
    z[..16].copy_from_slice(password_hash);
    let mut out = [0u8; 24];
    for (third, chunk) in z.chunks_exact(7).zip(out.chunks_exact_mut(8)) {
        let mut key = [0u8; 7];
        key.copy_from_slice(third);
        chunk.copy_from_slice(&des_encrypt(challenge, &key));
        key.zeroize();
    }
    out
}

/// GenerateNTResponse (§8.1) from the NT hash.
pub fn generate_nt_response(
    auth_challenge: &[u8; 16],
    peer_challenge: &[u8; 16],
    user: &[u8],
    password_hash: &[u8; 16],
) -> [u8; 24] {
    let challenge = challenge_hash(peer_challenge, auth_challenge, user);
    challenge_response(&challenge, password_hash)
}

/// GenerateAuthenticatorResponse (§8.7) from the NT hash: the 20 octets that go into
/// the Success message as `S=<40 hex>`.
pub fn generate_authenticator_response(
    password_hash: &[u8; 16],
    nt_response: &[u8; 24],
    peer_challenge: &[u8; 16],
    auth_challenge: &[u8; 16],
    user: &[u8],
) -> [u8; 20] {
    let hash_hash = hash_nt_password_hash(password_hash);
    let mut sha = Sha1::new();
    sha.update(&hash_hash[..]);
    sha.update(nt_response);
    sha.update(MAGIC1);
    let digest: [u8; 20] = sha.finalize().into();
    let challenge = challenge_hash(peer_challenge, auth_challenge, user);
    let mut sha = Sha1::new();
    sha.update(digest);
    sha.update(challenge);
    sha.update(MAGIC2);
    sha.finalize().into()
}

/// Upper-case hex, as the S= and C= fields use.
pub fn hex_upper(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02X}");
    }
    out
}

/// The Success message (§5): `S=<40 hex> M=<message>`.
pub fn success_message(authenticator_response: &[u8; 20], message: &str) -> String {
    format!("S={} M={message}", hex_upper(authenticator_response))
}

/// The Failure message (§6) for a wrong password with no retry:
/// `E=691 R=0 C=<32 hex> V=3 M=<message>`; `challenge` is a fresh 16-octet challenge.
pub fn failure_message(challenge: &[u8; 16], message: &str) -> String {
    format!("E=691 R=0 C={} V=3 M={message}", hex_upper(challenge))
}

/// Checks the `S=` field of a Success message against the expected authenticator
/// response, in constant time (case-insensitive hex). False if absent or malformed.
pub fn check_success_message(message: &[u8], expected: &[u8; 20]) -> bool {
    let Some(field) = message.strip_prefix(b"S=") else {
        return false;
    };
    let Some((hex, rest)) = field.split_at_checked(40) else {
        return false;
    };
    if rest.first().is_some_and(|&b| b != b' ') {
        return false;
    }
    let mut got = [0u8; 20];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        match (digit(pair[0]), digit(pair[1])) {
            (Some(h), Some(l)) => got[i] = (h * 16 + l) as u8,
            _ => return false,
        }
    }
    bool::from(got.ct_eq(expected))
}

/// The parts of a Response value (§4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseValue {
    /// The peer's challenge.
    pub peer_challenge: [u8; 16],
    /// The NT-Response.
    pub nt_response: [u8; 24],
}

impl ResponseValue {
    /// Splits a 49-octet value; `None` for any other length.
    pub fn parse(value: &[u8]) -> Option<ResponseValue> {
        if value.len() != RESPONSE_LEN {
            return None;
        }
        let mut peer_challenge = [0u8; 16];
        peer_challenge.copy_from_slice(&value[..16]);
        let mut nt_response = [0u8; 24];
        nt_response.copy_from_slice(&value[24..48]);
        Some(ResponseValue {
            peer_challenge,
            nt_response,
        })
    }

    /// The 49-octet encoding (reserved and flags zero).
    pub fn to_bytes(&self) -> [u8; RESPONSE_LEN] {
        let mut out = [0u8; RESPONSE_LEN];
        out[..16].copy_from_slice(&self.peer_challenge);
        out[24..48].copy_from_slice(&self.nt_response);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_util::hex;

    fn arr<const N: usize>(text: &str) -> [u8; N] {
        hex(text).try_into().unwrap()
    }

    // RFC 2759 §9.2.
    const AUTH_CHALLENGE: &str = "5b5d7c7d7b3f2f3e3c2c602132262628";
    const PEER_CHALLENGE: &str = "21402324255e262a28295f2b3a337c7e";

    #[test]
    fn rfc2759_section_9_2_vectors() {
        let auth: [u8; 16] = arr(AUTH_CHALLENGE);
        let peer: [u8; 16] = arr(PEER_CHALLENGE);
        assert_eq!(
            challenge_hash(&peer, &auth, b"User"),
            arr::<8>("d02e4386bce91226")
        );
        let hash = nt_password_hash(b"clientPass");
        assert_eq!(*hash, arr::<16>("44ebba8d5312b8d611474411f56989ae"));
        assert_eq!(
            *hash_nt_password_hash(&hash),
            arr::<16>("41c00c584bd2d91c4017a2a12fa59f3f")
        );
        let nt = generate_nt_response(&auth, &peer, b"User", &hash);
        assert_eq!(
            nt,
            arr::<24>("82309ecd8d708b5ea08faa3981cd83544233114a3d85d6df")
        );
        let response = generate_authenticator_response(&hash, &nt, &peer, &auth, b"User");
        assert_eq!(
            format!("S={}", hex_upper(&response)),
            "S=407A5589115FD0D6209F510FE9C04566932CDA56"
        );
    }

    #[test]
    fn des_key_expansion_matches_rfc_2759_worked_thirds() {
        // §9.2 ChallengeResponse: the first third of the padded hash is 44EBBA8D5312B8
        // and must encrypt D02E4386BCE91226 to 82309ECD8D708B5E.
        assert_eq!(
            des_encrypt(&arr("d02e4386bce91226"), &arr("44ebba8d5312b8")),
            arr::<8>("82309ecd8d708b5e")
        );
    }

    #[test]
    fn domain_prefix_is_left_out_of_the_challenge_hash() {
        let auth: [u8; 16] = arr(AUTH_CHALLENGE);
        let peer: [u8; 16] = arr(PEER_CHALLENGE);
        assert_eq!(
            challenge_hash(&peer, &auth, b"CORP\\User"),
            challenge_hash(&peer, &auth, b"User")
        );
    }

    // ikev1-natt.KEYS.md: alice / alicepass, frames 23-25.
    #[test]
    fn capture_exchange_values() {
        let auth: [u8; 16] = arr("8ba5021fd4b0413bbdfc5f5078a5aefe");
        let value = hex(
            "7d1f07b96a8afefca6c0a674dfa122a30000000000000000a557788e6371cdb4b106443e72fc85de82226cd33012fde700",
        );
        let parsed = ResponseValue::parse(&value).unwrap();
        assert_eq!(parsed.to_bytes().to_vec(), value);
        assert_eq!(
            challenge_hash(&parsed.peer_challenge, &auth, b"alice"),
            arr::<8>("f4837b2bb1a90a60")
        );
        let hash = nt_password_hash(b"alicepass");
        assert_eq!(*hash, arr::<16>("1b90225920343afc6d9acb0998bd0edd"));
        assert_eq!(
            *hash_nt_password_hash(&hash),
            arr::<16>("b75c9b2212e169ba248daadfa6597528")
        );
        let nt = generate_nt_response(&auth, &parsed.peer_challenge, b"alice", &hash);
        assert_eq!(nt, parsed.nt_response);
        let response =
            generate_authenticator_response(&hash, &nt, &parsed.peer_challenge, &auth, b"alice");
        assert_eq!(
            success_message(&response, "Access granted"),
            "S=43D7231E14390C62E041FBA29F42CB6B29F2EE31 M=Access granted"
        );
        assert!(check_success_message(
            b"S=43d7231e14390c62e041fba29f42cb6b29f2ee31 M=Access granted",
            &response
        ));
        assert!(check_success_message(
            b"S=43D7231E14390C62E041FBA29F42CB6B29F2EE31",
            &response
        ));
        assert!(!check_success_message(
            b"S=43D7231E14390C62E041FBA29F42CB6B29F2EE30 M=x",
            &response
        ));
        assert!(!check_success_message(b"S=43D7", &response));
        assert!(!check_success_message(b"M=Access granted", &response));
    }

    #[test]
    fn failure_message_format() {
        assert_eq!(
            failure_message(&[0xab; 16], "Authentication failed"),
            "E=691 R=0 C=ABABABABABABABABABABABABABABABAB V=3 M=Authentication failed"
        );
    }

    #[test]
    fn response_value_needs_49_octets() {
        assert!(ResponseValue::parse(&[0; 48]).is_none());
        assert!(ResponseValue::parse(&[0; 50]).is_none());
    }
}
