//! IKEv1 key derivation and message encryption (RFC 2409 §5 and App. B; NAT-D: RFC 3947
//! §3.2).
//!
//! With pre-shared keys (§5.4):
//!
//! ```text
//! SKEYID   = prf(pre-shared-key, Ni_b | Nr_b)
//! SKEYID_d = prf(SKEYID, g^xy | CKY-I | CKY-R | 0)
//! SKEYID_a = prf(SKEYID, SKEYID_d | g^xy | CKY-I | CKY-R | 1)
//! SKEYID_e = prf(SKEYID, SKEYID_a | g^xy | CKY-I | CKY-R | 2)
//! HASH_I   = prf(SKEYID, g^xi | g^xr | CKY-I | CKY-R | SAi_b | IDii_b)
//! HASH_R   = prf(SKEYID, g^xr | g^xi | CKY-R | CKY-I | SAi_b | IDir_b)
//! ```
//!
//! The encryption key Ka is SKEYID_e truncated, or K1 | K2 | … with K1 = prf(SKEYID_e,
//! 0) and Kn = prf(SKEYID_e, Kn-1) when SKEYID_e is shorter than the key (App. B). The
//! first IV of phase 1 is hash(g^xi | g^xr); each later message of an exchange uses the
//! last ciphertext block of the one before; the first IV of a phase-2 or informational
//! exchange is hash(last phase-1 ciphertext block | M-ID). All truncated to the block
//! size.
//!
//! Encrypted messages are padded as strongSwan pads them: with zeros, always at least
//! one octet (a whole block when the chain is already aligned). RFC 2409 §5.3 asks for
//! the pad length in the last octet, but nothing reads it: receivers walk the payload
//! chain and ignore what follows, and re-encrypting a captured strongSwan message gives
//! back its exact octets only with strongSwan's padding.

use std::fmt;
use std::net::Ipv4Addr;

use zeroize::Zeroizing;

use super::crypto::{CryptoError, HashAlg, IkeCipher};
use crate::wire::isakmp::{self, ChainBuilder, HEADER_LEN, Header, flags};

/// Phase-1 keys for pre-shared key authentication. `Debug` prints only the algorithms.
pub struct Phase1Keys {
    /// The PRF (the HMAC of the negotiated hash).
    pub prf: HashAlg,
    pub cipher: IkeCipher,
    pub skeyid: Zeroizing<Vec<u8>>,
    pub skeyid_d: Zeroizing<Vec<u8>>,
    pub skeyid_a: Zeroizing<Vec<u8>>,
    pub skeyid_e: Zeroizing<Vec<u8>>,
    /// The phase-1 encryption key, [`IkeCipher::key_len`] octets.
    pub ka: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Phase1Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Phase1Keys")
            .field("prf", &self.prf)
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}

/// prf+ of RFC 2409: K1 = prf(key, seed0 | seed), Kn = prf(key, Kn-1 | seed), …,
/// concatenated and cut to `len`. `first_prefix` is what K1 has instead of Kn-1 (empty
/// for KEYMAT, a zero octet for Ka).
fn expand(
    prf: HashAlg,
    key: &[u8],
    first_prefix: &[u8],
    seed: &[&[u8]],
    len: usize,
) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(len + prf.len()));
    let mut previous = Zeroizing::new(first_prefix.to_vec());
    while out.len() < len {
        let mut parts: Vec<&[u8]> = Vec::with_capacity(seed.len() + 1);
        parts.push(&previous);
        parts.extend_from_slice(seed);
        let block = prf.prf(key, &parts);
        out.extend_from_slice(&block);
        previous = block;
    }
    out.truncate(len);
    out
}

impl Phase1Keys {
    /// Derives SKEYID, SKEYID_d/a/e and Ka for pre-shared key authentication.
    #[allow(clippy::too_many_arguments)]
    pub fn derive_psk(
        prf: HashAlg,
        cipher: IkeCipher,
        psk: &[u8],
        ni: &[u8],
        nr: &[u8],
        gxy: &[u8],
        cky_i: &[u8; 8],
        cky_r: &[u8; 8],
    ) -> Phase1Keys {
        let skeyid = prf.prf(psk, &[ni, nr]);
        let skeyid_d = prf.prf(&skeyid, &[gxy, cky_i, cky_r, &[0]]);
        let skeyid_a = prf.prf(&skeyid, &[&skeyid_d, gxy, cky_i, cky_r, &[1]]);
        let skeyid_e = prf.prf(&skeyid, &[&skeyid_a, gxy, cky_i, cky_r, &[2]]);
        let ka = if skeyid_e.len() >= cipher.key_len() {
            Zeroizing::new(skeyid_e[..cipher.key_len()].to_vec())
        } else {
            expand(prf, &skeyid_e, &[0], &[], cipher.key_len())
        };
        Phase1Keys {
            prf,
            cipher,
            skeyid,
            skeyid_d,
            skeyid_a,
            skeyid_e,
            ka,
        }
    }

    /// HASH_I = prf(SKEYID, g^xi | g^xr | CKY-I | CKY-R | SAi_b | IDii_b): the
    /// initiator's HASH payload in MM5. `sai_b` is the initiator's whole SA payload body
    /// and `idii_b` its ID payload body (both without the generic header).
    pub fn hash_i(
        &self,
        gxi: &[u8],
        gxr: &[u8],
        cky_i: &[u8; 8],
        cky_r: &[u8; 8],
        sai_b: &[u8],
        idii_b: &[u8],
    ) -> Zeroizing<Vec<u8>> {
        self.prf
            .prf(&self.skeyid, &[gxi, gxr, cky_i, cky_r, sai_b, idii_b])
    }

    /// HASH_R = prf(SKEYID, g^xr | g^xi | CKY-R | CKY-I | SAi_b | IDir_b): the
    /// responder's HASH payload in MM6 (`sai_b` is still the *initiator's* SA body).
    pub fn hash_r(
        &self,
        gxr: &[u8],
        gxi: &[u8],
        cky_r: &[u8; 8],
        cky_i: &[u8; 8],
        sai_b: &[u8],
        idir_b: &[u8],
    ) -> Zeroizing<Vec<u8>> {
        self.prf
            .prf(&self.skeyid, &[gxr, gxi, cky_r, cky_i, sai_b, idir_b])
    }

    /// prf(SKEYID_a, M-ID | parts…): Quick Mode HASH(1) (parts = the message after the
    /// HASH payload, generic headers included, padding excluded), HASH(2) (parts = Ni_b,
    /// then the message after the HASH payload) (RFC 2409 §5.5), and the HASH(1) of
    /// informational exchanges (§5.7).
    pub fn hash_a(&self, message_id: u32, parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
        let mid = message_id.to_be_bytes();
        let mut all: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
        all.push(&mid);
        all.extend_from_slice(parts);
        self.prf.prf(&self.skeyid_a, &all)
    }

    /// Quick Mode HASH(3) = prf(SKEYID_a, 0 | M-ID | Ni_b | Nr_b) (§5.5).
    pub fn qm_hash3(&self, message_id: u32, ni: &[u8], nr: &[u8]) -> Zeroizing<Vec<u8>> {
        self.prf
            .prf(&self.skeyid_a, &[&[0], &message_id.to_be_bytes(), ni, nr])
    }

    /// KEYMAT for one direction of an ESP SA (§5.5): K1 | K2 | … cut to `len` octets,
    /// K1 = prf(SKEYID_d, [g(qm)^xy |] protocol | SPI | Ni_b | Nr_b) and Kn =
    /// prf(SKEYID_d, Kn-1 | [g(qm)^xy |] protocol | SPI | Ni_b | Nr_b). `spi` is the SPI
    /// of the receiving end (the one it chose in its proposal); `ni`, `nr` are the
    /// Quick Mode nonces. The encryption key comes first, then the integrity key (for
    /// GCM: key | 4-octet salt).
    pub fn keymat(
        &self,
        pfs_gxy: Option<&[u8]>,
        protocol: u8,
        spi: u32,
        ni: &[u8],
        nr: &[u8],
        len: usize,
    ) -> Zeroizing<Vec<u8>> {
        let spi = spi.to_be_bytes();
        let protocol = [protocol];
        let mut seed: Vec<&[u8]> = Vec::with_capacity(5);
        if let Some(gxy) = pfs_gxy {
            seed.push(gxy);
        }
        seed.extend_from_slice(&[&protocol, &spi, ni, nr]);
        expand(self.prf, &self.skeyid_d, &[], &seed, len)
    }
}

/// The first IV of phase 1: hash(g^xi | g^xr) cut to the block size (App. B).
pub fn initial_iv(hash: HashAlg, cipher: IkeCipher, gxi: &[u8], gxr: &[u8]) -> Vec<u8> {
    let mut iv = hash.hash(&[gxi, gxr]);
    iv.truncate(cipher.block_len());
    iv
}

/// The first IV of a phase-2 or informational exchange: hash(last phase-1 CBC block |
/// M-ID) cut to the block size (App. B). `phase1_last_block` is the last ciphertext
/// block of the last phase-1 message (MM6 for a responder that has sent it).
pub fn phase2_iv(
    hash: HashAlg,
    cipher: IkeCipher,
    phase1_last_block: &[u8],
    message_id: u32,
) -> Vec<u8> {
    let mut iv = hash.hash(&[phase1_last_block, &message_id.to_be_bytes()]);
    iv.truncate(cipher.block_len());
    iv
}

/// The NAT-D payload data for one end (RFC 3947 §3.2): HASH(CKY-I | CKY-R | IP | Port)
/// with the negotiated hash.
pub fn natd_hash(
    hash: HashAlg,
    cky_i: &[u8; 8],
    cky_r: &[u8; 8],
    addr: Ipv4Addr,
    port: u16,
) -> Vec<u8> {
    hash.hash(&[cky_i, cky_r, &addr.octets(), &port.to_be_bytes()])
}

/// Encrypts `header` + `chain` into a whole message: pads the chain with zeros to the
/// next block boundary (1 to block-size octets, as strongSwan does), sets Next Payload,
/// the E flag and Length, and CBC-encrypts with `iv`. Returns the message and its last
/// ciphertext block, the IV of the next message of this exchange.
pub fn encrypt_message(
    cipher: IkeCipher,
    ka: &[u8],
    iv: &[u8],
    header: Header,
    chain: &ChainBuilder,
) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
    let block_len = cipher.block_len();
    let plain_len = chain.bytes().len();
    let padded = plain_len + (block_len - plain_len % block_len);
    let mut header = header;
    header.next_payload = chain.first();
    header.flags |= flags::ENCRYPTION;
    header.length = u32::try_from(HEADER_LEN + padded).map_err(|_| CryptoError::Backend)?;
    let mut message = Vec::with_capacity(HEADER_LEN + padded);
    message.extend_from_slice(&header.to_bytes());
    message.extend_from_slice(chain.bytes());
    message.resize(HEADER_LEN + padded, 0);
    cipher.encrypt(ka, iv, &mut message[HEADER_LEN..])?;
    let last_block = message[message.len() - block_len..].to_vec();
    Ok((message, last_block))
}

/// What [`decrypt_message`] returns: the header, the plaintext chain with its padding,
/// and the last ciphertext block.
pub type Decrypted = (Header, Zeroizing<Vec<u8>>, Vec<u8>);

/// Decrypts a whole message whose header is in clear: returns the header, the
/// plaintext payload chain with its padding (walk it with [`isakmp::payloads`], which
/// stops at the last payload), and the last ciphertext block (the IV of the next
/// message of this exchange). The E flag is not required here: the caller knows
/// whether the exchange is encrypted. Errors on a malformed header, a body that is
/// empty or not whole blocks, and a key or IV of the wrong length.
pub fn decrypt_message(
    cipher: IkeCipher,
    ka: &[u8],
    iv: &[u8],
    msg: &[u8],
) -> Result<Decrypted, CryptoError> {
    let (header, body) = isakmp::parse_message(msg).map_err(CryptoError::from)?;
    let block_len = cipher.block_len();
    if body.is_empty() || !body.len().is_multiple_of(block_len) {
        return Err(CryptoError::NotBlockAligned {
            len: body.len(),
            block_len,
        });
    }
    let last_block = body[body.len() - block_len..].to_vec();
    let mut plain = Zeroizing::new(body.to_vec());
    cipher.decrypt(ka, iv, &mut plain)?;
    Ok((header, plain, last_block))
}

#[cfg(test)]
mod tests;
