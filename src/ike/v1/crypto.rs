//! IKEv1 crypto primitives: the hash and HMAC PRF (RFC 2409 §5, RFC 2104), the phase-1
//! CBC ciphers (RFC 2409 App. A, AES-CBC per RFC 3602, 3DES-CBC), and Diffie-Hellman
//! over MODP groups 2 and 14 (RFC 2409 §6.2, RFC 3526 §3), ECP groups 19 and 20
//! (RFC 5903) and Curve25519 (RFC 8031).
//!
//! Hash, HMAC and the elliptic-curve groups come from aws-lc-rs. CBC is a plain loop
//! over the RustCrypto `aes` / `des` block ciphers: IKEv1 encrypts a handful of short
//! messages per SA and pads them itself, so there is nothing to gain from a batch API.
//! MODP exponentiation uses `crypto-bigint`'s constant-time Montgomery arithmetic with
//! a 256-bit private exponent (RFC 3526 §8 puts group 14 at 110–160 bits of strength).
//!
//! Key material is returned in [`Zeroizing`] buffers; [`DhSecret`] wipes its private
//! value on drop and has no `Debug` output of it.

use std::fmt;
use std::sync::OnceLock;

use aes::cipher::{Block, BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::{digest, hmac};
use crypto_bigint::modular::{MontyForm, MontyParams};
use crypto_bigint::{Encoding, Odd, U256, U1024, U2048, Uint};
use zeroize::{Zeroize, Zeroizing};

use crate::wire::isakmp::Malformed;

/// Why a crypto operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// A key is not the length the algorithm takes.
    #[error("key is {got} octets, {algorithm} takes {expected}")]
    BadKeyLength {
        algorithm: &'static str,
        expected: usize,
        got: usize,
    },
    /// An IV is not one cipher block.
    #[error("IV is {got} octets, the cipher block is {expected}")]
    BadIvLength { expected: usize, got: usize },
    /// CBC input that is not a whole number of blocks (or, for a message, not at least
    /// one block).
    #[error("{len} octets are not a whole number of {block_len}-octet blocks")]
    NotBlockAligned { len: usize, block_len: usize },
    /// A peer's Diffie-Hellman public value is the wrong length, out of range (MODP:
    /// not 1 < y < p-1) or not on the curve.
    #[error("invalid {group} public value")]
    InvalidPublicValue { group: &'static str },
    /// The system random generator failed.
    #[error("random generator failed")]
    Rng,
    /// The crypto library refused an operation that should not fail.
    #[error("crypto backend failure")]
    Backend,
    /// The cleartext header of a message to decrypt is malformed.
    #[error(transparent)]
    Malformed(#[from] Malformed),
}

/// Phase-1 hash algorithm, also the PRF (HMAC) when no PRF attribute is negotiated
/// (RFC 2409 §5: "the HMAC version of the negotiated hash").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashAlg {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    /// From the phase-1 Hash Algorithm attribute value (RFC 2409 App. A; SHA-2: IANA
    /// "IPSEC Hash Algorithm"). MD5 (1) is not offered.
    pub fn from_p1(id: u16) -> Option<HashAlg> {
        match id {
            2 => Some(HashAlg::Sha1),
            4 => Some(HashAlg::Sha256),
            5 => Some(HashAlg::Sha384),
            6 => Some(HashAlg::Sha512),
            _ => None,
        }
    }

    /// The phase-1 Hash Algorithm attribute value.
    pub fn p1_id(self) -> u16 {
        match self {
            HashAlg::Sha1 => 2,
            HashAlg::Sha256 => 4,
            HashAlg::Sha384 => 5,
            HashAlg::Sha512 => 6,
        }
    }

    /// Output length in octets (also the length of SKEYID and HASH payloads).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    /// strongSwan's name, e.g. `SHA2_256`.
    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "SHA1",
            HashAlg::Sha256 => "SHA2_256",
            HashAlg::Sha384 => "SHA2_384",
            HashAlg::Sha512 => "SHA2_512",
        }
    }

    fn digest_alg(self) -> &'static digest::Algorithm {
        match self {
            HashAlg::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            HashAlg::Sha256 => &digest::SHA256,
            HashAlg::Sha384 => &digest::SHA384,
            HashAlg::Sha512 => &digest::SHA512,
        }
    }

    fn hmac_alg(self) -> hmac::Algorithm {
        match self {
            HashAlg::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            HashAlg::Sha256 => hmac::HMAC_SHA256,
            HashAlg::Sha384 => hmac::HMAC_SHA384,
            HashAlg::Sha512 => hmac::HMAC_SHA512,
        }
    }

    /// The hash of the concatenation of `parts`.
    pub fn hash(self, parts: &[&[u8]]) -> Vec<u8> {
        let mut context = digest::Context::new(self.digest_alg());
        for part in parts {
            context.update(part);
        }
        context.finish().as_ref().to_vec()
    }

    /// prf(key, parts…): HMAC with this hash over the concatenation of `parts`.
    pub fn prf(self, key: &[u8], parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
        let key = hmac::Key::new(self.hmac_alg(), key);
        let mut context = hmac::Context::with_key(&key);
        for part in parts {
            context.update(part);
        }
        Zeroizing::new(context.sign().as_ref().to_vec())
    }
}

/// Phase-1 encryption algorithm: CBC without padding (IKEv1 pads the payload chain
/// itself, RFC 2409 App. B).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IkeCipher {
    /// AES-CBC with a 16, 24 or 32-octet key.
    AesCbc { key_len: usize },
    /// 3DES-EDE-CBC, 24-octet key.
    TripleDesCbc,
}

impl IkeCipher {
    /// From the phase-1 Encryption Algorithm and Key Length attributes. AES without a
    /// Key Length is AES-128, as strongSwan takes it (some peers omit it for 128).
    pub fn from_p1(enc_id: u16, key_bits: Option<u16>) -> Option<IkeCipher> {
        match (enc_id, key_bits) {
            (7, None | Some(128)) => Some(IkeCipher::AesCbc { key_len: 16 }),
            (7, Some(192)) => Some(IkeCipher::AesCbc { key_len: 24 }),
            (7, Some(256)) => Some(IkeCipher::AesCbc { key_len: 32 }),
            (5, None | Some(192)) => Some(IkeCipher::TripleDesCbc),
            _ => None,
        }
    }

    /// The phase-1 Encryption Algorithm attribute value.
    pub fn p1_id(self) -> u16 {
        match self {
            IkeCipher::AesCbc { .. } => 7,
            IkeCipher::TripleDesCbc => 5,
        }
    }

    /// The Key Length attribute value: key bits for AES, `None` for 3DES (fixed).
    pub fn key_bits(self) -> Option<u16> {
        match self {
            IkeCipher::AesCbc { key_len } => u16::try_from(key_len * 8).ok(),
            IkeCipher::TripleDesCbc => None,
        }
    }

    /// Key length in octets (the length of Ka).
    pub fn key_len(self) -> usize {
        match self {
            IkeCipher::AesCbc { key_len } => key_len,
            IkeCipher::TripleDesCbc => 24,
        }
    }

    /// Block length in octets (the length of IVs).
    pub fn block_len(self) -> usize {
        match self {
            IkeCipher::AesCbc { .. } => 16,
            IkeCipher::TripleDesCbc => 8,
        }
    }

    /// strongSwan's name, e.g. `AES_CBC_128`, `3DES_CBC`.
    pub fn name(self) -> String {
        match self {
            IkeCipher::AesCbc { key_len } => format!("AES_CBC_{}", key_len * 8),
            IkeCipher::TripleDesCbc => "3DES_CBC".to_string(),
        }
    }

    fn check(self, key: &[u8], iv: &[u8], len: usize) -> Result<(), CryptoError> {
        if key.len() != self.key_len() {
            return Err(CryptoError::BadKeyLength {
                algorithm: match self {
                    IkeCipher::AesCbc { .. } => "AES-CBC",
                    IkeCipher::TripleDesCbc => "3DES-CBC",
                },
                expected: self.key_len(),
                got: key.len(),
            });
        }
        if iv.len() != self.block_len() {
            return Err(CryptoError::BadIvLength {
                expected: self.block_len(),
                got: iv.len(),
            });
        }
        if !len.is_multiple_of(self.block_len()) {
            return Err(CryptoError::NotBlockAligned {
                len,
                block_len: self.block_len(),
            });
        }
        Ok(())
    }

    /// CBC-encrypts `buf` in place, without padding; `buf.len()` must be a multiple of
    /// [`IkeCipher::block_len`].
    pub fn encrypt(self, key: &[u8], iv: &[u8], buf: &mut [u8]) -> Result<(), CryptoError> {
        self.check(key, iv, buf.len())?;
        match self {
            IkeCipher::AesCbc { key_len: 16 } => {
                cbc_encrypt(&key_schedule::<aes::Aes128>(key)?, iv, buf)
            }
            IkeCipher::AesCbc { key_len: 24 } => {
                cbc_encrypt(&key_schedule::<aes::Aes192>(key)?, iv, buf)
            }
            IkeCipher::AesCbc { .. } => cbc_encrypt(&key_schedule::<aes::Aes256>(key)?, iv, buf),
            IkeCipher::TripleDesCbc => cbc_encrypt(&key_schedule::<des::TdesEde3>(key)?, iv, buf),
        }
        Ok(())
    }

    /// CBC-decrypts `buf` in place; `buf.len()` must be a multiple of
    /// [`IkeCipher::block_len`].
    pub fn decrypt(self, key: &[u8], iv: &[u8], buf: &mut [u8]) -> Result<(), CryptoError> {
        self.check(key, iv, buf.len())?;
        match self {
            IkeCipher::AesCbc { key_len: 16 } => {
                cbc_decrypt(&key_schedule::<aes::Aes128>(key)?, iv, buf)
            }
            IkeCipher::AesCbc { key_len: 24 } => {
                cbc_decrypt(&key_schedule::<aes::Aes192>(key)?, iv, buf)
            }
            IkeCipher::AesCbc { .. } => cbc_decrypt(&key_schedule::<aes::Aes256>(key)?, iv, buf),
            IkeCipher::TripleDesCbc => cbc_decrypt(&key_schedule::<des::TdesEde3>(key)?, iv, buf),
        }
        Ok(())
    }
}

/// A block cipher key schedule (AES or 3DES; both crates wipe it on drop).
fn key_schedule<C: KeyInit>(key: &[u8]) -> Result<C, CryptoError> {
    C::new_from_slice(key).map_err(|_| CryptoError::Backend)
}

/// CBC encryption; `iv` is one block and `buf` whole blocks (checked by the caller).
fn cbc_encrypt<C: BlockCipherEncrypt>(cipher: &C, iv: &[u8], buf: &mut [u8]) {
    let mut chain = Block::<C>::default();
    chain.copy_from_slice(iv);
    for chunk in buf.chunks_exact_mut(chain.len()) {
        chain
            .iter_mut()
            .zip(chunk.iter())
            .for_each(|(c, p)| *c ^= p);
        cipher.encrypt_block(&mut chain);
        chunk.copy_from_slice(&chain);
    }
}

/// CBC decryption; `iv` is one block and `buf` whole blocks (checked by the caller).
fn cbc_decrypt<C: BlockCipherDecrypt>(cipher: &C, iv: &[u8], buf: &mut [u8]) {
    let mut chain = Block::<C>::default();
    chain.copy_from_slice(iv);
    let mut block = Block::<C>::default();
    for chunk in buf.chunks_exact_mut(chain.len()) {
        block.copy_from_slice(chunk);
        cipher.decrypt_block(&mut block);
        block
            .iter_mut()
            .zip(chain.iter())
            .for_each(|(b, c)| *b ^= c);
        chain.copy_from_slice(chunk);
        chunk.copy_from_slice(&block);
    }
    block.zeroize();
}

/// Diffie-Hellman groups (RFC 2409 §6, RFC 3526, RFC 5903, RFC 8031).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DhGroup {
    /// Group 2, 1024-bit MODP (RFC 2409 §6.2).
    Modp1024,
    /// Group 14, 2048-bit MODP (RFC 3526 §3).
    Modp2048,
    /// Group 19, NIST P-256 (RFC 5903).
    Ecp256,
    /// Group 20, NIST P-384 (RFC 5903).
    Ecp384,
    /// Group 31, Curve25519 (RFC 8031).
    Curve25519,
}

impl DhGroup {
    /// From the Group Description attribute value.
    pub fn from_id(id: u16) -> Option<DhGroup> {
        match id {
            2 => Some(DhGroup::Modp1024),
            14 => Some(DhGroup::Modp2048),
            19 => Some(DhGroup::Ecp256),
            20 => Some(DhGroup::Ecp384),
            31 => Some(DhGroup::Curve25519),
            _ => None,
        }
    }

    /// The Group Description attribute value.
    pub fn id(self) -> u16 {
        match self {
            DhGroup::Modp1024 => 2,
            DhGroup::Modp2048 => 14,
            DhGroup::Ecp256 => 19,
            DhGroup::Ecp384 => 20,
            DhGroup::Curve25519 => 31,
        }
    }

    /// Length of the KE payload data: the prime length for MODP, x | y for ECP
    /// (RFC 5903 §7), the u coordinate for Curve25519.
    pub fn public_len(self) -> usize {
        match self {
            DhGroup::Modp1024 => 128,
            DhGroup::Modp2048 => 256,
            DhGroup::Ecp256 => 64,
            DhGroup::Ecp384 => 96,
            DhGroup::Curve25519 => 32,
        }
    }

    /// strongSwan's name, e.g. `MODP_2048`, `CURVE_25519`.
    pub fn name(self) -> &'static str {
        match self {
            DhGroup::Modp1024 => "MODP_1024",
            DhGroup::Modp2048 => "MODP_2048",
            DhGroup::Ecp256 => "ECP_256",
            DhGroup::Ecp384 => "ECP_384",
            DhGroup::Curve25519 => "CURVE_25519",
        }
    }

    fn ecdh_alg(self) -> Option<&'static agreement::Algorithm> {
        match self {
            DhGroup::Ecp256 => Some(&agreement::ECDH_P256),
            DhGroup::Ecp384 => Some(&agreement::ECDH_P384),
            DhGroup::Curve25519 => Some(&agreement::X25519),
            DhGroup::Modp1024 | DhGroup::Modp2048 => None,
        }
    }

    fn invalid(self) -> CryptoError {
        CryptoError::InvalidPublicValue { group: self.name() }
    }

    /// A fresh private value and its public value.
    pub fn generate(self) -> Result<DhSecret, CryptoError> {
        let rng = SystemRandom::new();
        match self {
            DhGroup::Modp1024 | DhGroup::Modp2048 => {
                let mut bytes = Zeroizing::new([0u8; 32]);
                rng.fill(&mut bytes[..]).map_err(|_| CryptoError::Rng)?;
                // The top bit set keeps x away from 0 and 1 at the cost of one bit.
                bytes[0] |= 0x80;
                let exponent = Zeroizing::new(U256::from_be_slice(&bytes[..]));
                let public = match self {
                    DhGroup::Modp1024 => modp_public(modp1024(), &exponent),
                    _ => modp_public(modp2048(), &exponent),
                };
                Ok(DhSecret {
                    group: self,
                    public,
                    private: Private::Modp(exponent),
                })
            }
            DhGroup::Ecp256 | DhGroup::Ecp384 | DhGroup::Curve25519 => {
                let alg = self.ecdh_alg().ok_or(CryptoError::Backend)?;
                let key = PrivateKey::generate(alg).map_err(|_| CryptoError::Rng)?;
                let public = key.compute_public_key().map_err(|_| CryptoError::Backend)?;
                let public = match self {
                    // Uncompressed SEC1 point 0x04 | x | y; the KE payload carries x | y.
                    DhGroup::Curve25519 => public.as_ref().to_vec(),
                    _ => public.as_ref().get(1..).unwrap_or_default().to_vec(),
                };
                if public.len() != self.public_len() {
                    return Err(CryptoError::Backend);
                }
                Ok(DhSecret {
                    group: self,
                    public,
                    private: Private::Ecdh(key),
                })
            }
        }
    }
}

/// The modulus of group 2 (RFC 2409 §6.2): 2^1024 - 2^960 - 1 + 2^64 * ([2^894 pi] + 129093).
const MODP1024_P: Odd<U1024> = Odd::<U1024>::from_be_hex(concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381FFFFFFFFFFFFFFFF",
));

/// The modulus of group 14 (RFC 3526 §3): 2^2048 - 2^1984 - 1 + 2^64 * ([2^1918 pi] + 124476).
const MODP2048_P: Odd<U2048> = Odd::<U2048>::from_be_hex(concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718",
    "3995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF",
));

/// Montgomery parameters of a MODP prime (public), computed once.
fn monty_params<const L: usize>(
    cell: &'static OnceLock<MontyParams<L>>,
    p: &Odd<Uint<L>>,
) -> &'static MontyParams<L> {
    cell.get_or_init(|| MontyParams::new_vartime(*p))
}

fn modp1024() -> &'static MontyParams<{ U1024::LIMBS }> {
    static PARAMS: OnceLock<MontyParams<{ U1024::LIMBS }>> = OnceLock::new();
    monty_params(&PARAMS, &MODP1024_P)
}

fn modp2048() -> &'static MontyParams<{ U2048::LIMBS }> {
    static PARAMS: OnceLock<MontyParams<{ U2048::LIMBS }>> = OnceLock::new();
    monty_params(&PARAMS, &MODP2048_P)
}

/// Bits of the MODP private exponent.
const MODP_EXPONENT_BITS: u32 = 256;

/// g^x mod p with g = 2, as big-endian octets of the prime's length.
fn modp_public<const L: usize>(params: &MontyParams<L>, x: &U256) -> Vec<u8>
where
    Uint<L>: Encoding,
{
    let base = MontyForm::new(&Uint::<L>::from_u8(2), *params);
    let public = base.pow_bounded_exp(x, MODP_EXPONENT_BITS).retrieve();
    public.to_be_bytes().as_ref().to_vec()
}

/// y^x mod p after checking 1 < y < p - 1 (RFC 2631 §2.1.5 style range check; with a
/// safe prime that rules out the small subgroup {1, p-1}).
fn modp_agree<const L: usize>(
    params: &MontyParams<L>,
    x: &U256,
    peer: &[u8],
    group: DhGroup,
) -> Result<Zeroizing<Vec<u8>>, CryptoError>
where
    Uint<L>: Encoding,
{
    if peer.len() != Uint::<L>::BYTES {
        return Err(group.invalid());
    }
    let y = Uint::<L>::from_be_slice(peer);
    let p_minus_1 = params.modulus().as_ref().wrapping_sub(&Uint::ONE);
    if y <= Uint::ONE || y >= p_minus_1 {
        return Err(group.invalid());
    }
    let mut shared = MontyForm::new(&y, *params)
        .pow_bounded_exp(x, MODP_EXPONENT_BITS)
        .retrieve();
    let mut bytes = shared.to_be_bytes();
    let out = Zeroizing::new(bytes.as_ref().to_vec());
    shared.zeroize();
    bytes.as_mut().zeroize();
    Ok(out)
}

enum Private {
    Modp(Zeroizing<U256>),
    Ecdh(PrivateKey),
}

/// A Diffie-Hellman private value with its public value. The private value is wiped
/// on drop (aws-lc-rs frees EC keys with `EVP_PKEY_free`, which clears them) and never
/// printed.
pub struct DhSecret {
    group: DhGroup,
    public: Vec<u8>,
    private: Private,
}

impl fmt::Debug for DhSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DhSecret")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl DhSecret {
    /// The group.
    pub fn group(&self) -> DhGroup {
        self.group
    }

    /// The public value: the KE payload data, [`DhGroup::public_len`] octets.
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// g^xy from the peer's KE payload data: for MODP left-padded to the prime length,
    /// for ECP the x coordinate only (RFC 5903 §9, as strongSwan and Windows do), for
    /// Curve25519 the 32-octet shared u coordinate. The peer value is checked: length,
    /// MODP 1 < y < p-1, ECP point on the curve, X25519 not of small order (an all-zero
    /// result is refused by aws-lc).
    pub fn agree(self, peer_public: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        self.agree_ref(peer_public)
    }

    /// [`DhSecret::agree`] without consuming the private value: a responder may use
    /// one private value for several exchanges within a short window (RFC 7296 §2.12
    /// allows it; the responder bounds the reuse in time and count).
    pub fn agree_ref(&self, peer_public: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let group = self.group;
        if peer_public.len() != group.public_len() {
            return Err(group.invalid());
        }
        match &self.private {
            Private::Modp(x) => match group {
                DhGroup::Modp1024 => modp_agree(modp1024(), x, peer_public, group),
                _ => modp_agree(modp2048(), x, peer_public, group),
            },
            Private::Ecdh(key) => {
                let alg = group.ecdh_alg().ok_or(CryptoError::Backend)?;
                let mut encoded = Zeroizing::new(Vec::with_capacity(1 + peer_public.len()));
                if group != DhGroup::Curve25519 {
                    encoded.push(0x04);
                }
                encoded.extend_from_slice(peer_public);
                let peer = UnparsedPublicKey::new(alg, &encoded[..]);
                agreement::agree(key, peer, group.invalid(), |secret| {
                    Ok(Zeroizing::new(secret.to_vec()))
                })
            }
        }
    }
}

#[cfg(test)]
pub(crate) fn modp_public_for_test(group: DhGroup, x: &U256) -> Vec<u8> {
    match group {
        DhGroup::Modp1024 => modp_public(modp1024(), x),
        _ => modp_public(modp2048(), x),
    }
}

#[cfg(test)]
mod tests;
