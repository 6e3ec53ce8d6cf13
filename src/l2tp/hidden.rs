//! Hidden AVPs (RFC 2661 §4.3) and the tunnel authentication response (§5.1.1), the
//! two uses of MD5 and the tunnel shared secret.
//!
//! Hiding: the Hidden AVP Subformat (original length, 2 octets | value | padding) is
//! XORed with a key stream of 16-octet blocks: b1 = MD5(attribute type | secret |
//! random vector), b(i) = MD5(secret | c(i-1)) where c(i-1) is the previous 16 octets
//! of *ciphertext*; the last block may be partial. The random vector is the value of
//! the most recent Random Vector AVP before the hidden one in the same message.
//!
//! Tunnel authentication: a Challenge Response is MD5(message type | secret |
//! challenge), CHAP-style (RFC 1994) with the message type of the message carrying it
//! (2 for SCCRP, 3 for SCCCN) as the CHAP identifier.

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Length of an MD5 digest, a key-stream block and a Challenge Response.
pub const DIGEST_LEN: usize = 16;

fn md5(parts: &[&[u8]]) -> [u8; DIGEST_LEN] {
    let mut hasher = Md5::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// XORs `data` in place with the §4.3 key stream. Each block after the first is
/// derived from the previous 16 octets of ciphertext: the output when hiding, the
/// input when unhiding.
fn apply(attribute_type: u16, secret: &[u8], random_vector: &[u8], data: &mut [u8], unhide: bool) {
    let mut block = md5(&[&attribute_type.to_be_bytes(), secret, random_vector]);
    let mut previous = [0u8; DIGEST_LEN];
    for (index, chunk) in data.chunks_mut(DIGEST_LEN).enumerate() {
        if index > 0 {
            block = md5(&[secret, &previous]);
        }
        if unhide && chunk.len() == DIGEST_LEN {
            previous.copy_from_slice(chunk);
        }
        for (octet, key) in chunk.iter_mut().zip(block) {
            *octet ^= key;
        }
        if !unhide && chunk.len() == DIGEST_LEN {
            previous.copy_from_slice(chunk);
        }
    }
}

/// Hides `value` of AVP `attribute_type` (§4.3), appending `padding` to mask its
/// length. Returns the hidden AVP value (2 + value + padding octets).
pub fn hide(
    attribute_type: u16,
    secret: &[u8],
    random_vector: &[u8],
    value: &[u8],
    padding: &[u8],
) -> Vec<u8> {
    let length = u16::try_from(value.len()).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(2 + value.len() + padding.len());
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&value[..usize::from(length)]);
    out.extend_from_slice(padding);
    apply(attribute_type, secret, random_vector, &mut out, false);
    out
}

/// Recovers the value of a hidden AVP, or `None` if it is shorter than the subformat
/// or its original-length field points past its end (wrong secret, tampering).
pub fn unhide(
    attribute_type: u16,
    secret: &[u8],
    random_vector: &[u8],
    hidden: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    if hidden.len() < 2 {
        return None;
    }
    let mut plain = Zeroizing::new(hidden.to_vec());
    apply(attribute_type, secret, random_vector, &mut plain, true);
    let length = usize::from(u16::from_be_bytes([plain[0], plain[1]]));
    let value = plain.get(2..2 + length)?;
    Some(Zeroizing::new(value.to_vec()))
}

/// The Challenge Response (§4.4.3) for `challenge`, sent in the message of type
/// `message_type` (2 = SCCRP, 3 = SCCCN).
pub fn challenge_response(message_type: u8, secret: &[u8], challenge: &[u8]) -> [u8; DIGEST_LEN] {
    md5(&[&[message_type], secret, challenge])
}

/// Whether `response` answers `challenge` in a message of type `message_type`,
/// compared in constant time.
pub fn verify_response(message_type: u8, secret: &[u8], challenge: &[u8], response: &[u8]) -> bool {
    let expected = challenge_response(message_type, secret, challenge);
    response.len() == DIGEST_LEN && bool::from(expected.ct_eq(response))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_util::hex;

    // RFC 1321 appendix A.5 test suite, through our helper.
    #[test]
    fn md5_known_answers() {
        assert_eq!(
            md5(&[b""]).to_vec(),
            hex("d41d8cd98f00b204e9800998ecf8427e")
        );
        assert_eq!(
            md5(&[b"a", b"bc"]).to_vec(),
            hex("900150983cd24fb0d6963f7d28e17f72")
        );
        assert_eq!(
            md5(&[b"message ", b"digest"]).to_vec(),
            hex("f96b697d7cb7938d525a2f31aaf161d0")
        );
    }

    // Computed independently with Python's hashlib from the §4.3 text (no published
    // vector exists): secret "tunnel-secret", random vector 00 01 .. 0f, Assigned
    // Session ID (14) = 0x1234 padded with 4 zero octets; and a 40-octet Calling
    // Number (22) that spans three key-stream blocks, the last one partial.
    #[test]
    fn hide_known_answers() {
        let secret = b"tunnel-secret";
        let rv: Vec<u8> = (0u8..16).collect();
        let hidden = hide(14, secret, &rv, &[0x12, 0x34], &[0; 4]);
        assert_eq!(hidden, hex(HIDDEN_SESSION_ID));
        let number: Vec<u8> = (b'0'..=b'9').cycle().take(40).collect();
        let hidden = hide(22, secret, &rv, &number, &[]);
        assert_eq!(hidden, hex(HIDDEN_CALLING_NUMBER));
        assert_eq!(
            unhide(22, secret, &rv, &hidden).unwrap().as_slice(),
            &number[..]
        );
    }

    const HIDDEN_SESSION_ID: &str = "cb6b626e52813067";
    const HIDDEN_CALLING_NUMBER: &str = concat!(
        "9474968a368fb6fafaaa07ad2bdfddae45faf5e494271009f11b5f51c9df47e0",
        "79040f65bce5ad800add"
    );

    // Recorded against xl2tpd 1.3.18 (Debian) as LNS on loopback, `challenge = yes`,
    // secret "golden-tunnel-secret": our SCCRQ carried Challenge 20 21 .. 2f and its
    // SCCRP answered with this Challenge Response; it then accepted an ICRQ whose
    // Assigned Session ID 0x5678 and Call Serial Number 7 were hidden with Random
    // Vector 11 .. 11 as below (its ICRP went to session 0x5678).
    #[test]
    fn xl2tpd_vectors() {
        let secret = b"golden-tunnel-secret";
        let challenge: Vec<u8> = (0x20u8..0x30).collect();
        assert_eq!(
            challenge_response(2, secret, &challenge).to_vec(),
            hex("959aacf949261d59c92a98cc5f9ef9cb")
        );
        let rv = [0x11u8; 16];
        assert_eq!(hide(14, secret, &rv, &[0x56, 0x78], &[]), hex("5728d514"));
        assert_eq!(
            hide(15, secret, &rv, &7u32.to_be_bytes(), &[]),
            hex("e48c62dd00ea")
        );
        assert_eq!(
            unhide(14, secret, &rv, &hex("5728d514"))
                .unwrap()
                .as_slice(),
            [0x56, 0x78]
        );
    }

    #[test]
    fn round_trip_every_length() {
        let secret = b"s3cr3t";
        let rv = [0xa5u8; 16];
        for len in 0..80 {
            let value: Vec<u8> = (0..len as u8).collect();
            for pad in [0usize, 1, 15] {
                let hidden = hide(9, secret, &rv, &value, &vec![0x5a; pad]);
                assert_eq!(hidden.len(), 2 + len + pad);
                assert_eq!(
                    unhide(9, secret, &rv, &hidden).unwrap().as_slice(),
                    &value[..]
                );
            }
        }
    }

    #[test]
    fn wrong_key_material_is_detected_or_garbled() {
        let rv = [1u8; 16];
        let hidden = hide(14, b"right", &rv, &[0xab, 0xcd], &[]);
        // With a 4-octet subformat a wrong key almost always yields a length > 2.
        assert_eq!(unhide(14, b"wrong", &rv, &hidden), None);
        assert_eq!(unhide(15, b"right", &rv, &hidden), None);
        assert_eq!(unhide(14, b"right", &[2u8; 16], &hidden), None);
        assert_eq!(unhide(14, b"right", &rv, &hidden[..1]), None);
    }

    #[test]
    fn challenge_response_is_chap_md5() {
        let challenge = [0x11u8; 16];
        let response = challenge_response(2, b"secret", &challenge);
        let mut chap = vec![2u8];
        chap.extend_from_slice(b"secret");
        chap.extend_from_slice(&challenge);
        assert_eq!(response, md5(&[&chap]));
        assert!(verify_response(2, b"secret", &challenge, &response));
        assert!(!verify_response(3, b"secret", &challenge, &response));
        assert!(!verify_response(2, b"secreT", &challenge, &response));
        assert!(!verify_response(2, b"secret", &challenge, &response[..15]));
    }
}
