//! AES-GCM-16 for ESP (RFC 4106).
//!
//! Nonce = salt (4, from KEYMAT) | explicit IV (8, on the wire). The explicit IV is the
//! 64-bit sequence number: unique per SA, as §3.1 requires, and free to produce.
//! AAD (§5) = SPI | seq_lo, or SPI | seq_hi | seq_lo with extended sequence numbers.

use std::ops::Range;

use aws_lc_rs::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

use super::{Backend, CryptoError, ESP_HEADER_LEN, seq_hi};

const IV_LEN: usize = 8;
const ICV_LEN: usize = 16;

pub(super) struct Gcm {
    salt: [u8; 4],
    key: Key,
}

enum Key {
    Aws(LessSafeKey),
    #[cfg(feature = "rustcrypto")]
    Rc128(Box<aes_gcm::Aes128Gcm>),
    #[cfg(feature = "rustcrypto")]
    Rc256(Box<aes_gcm::Aes256Gcm>),
}

impl Gcm {
    /// `enc` is the 16/32-octet AES key, `salt` the 4 octets that follow it in KEYMAT.
    pub(super) fn new(enc: &[u8], salt: &[u8], backend: Backend) -> Result<Gcm, CryptoError> {
        let salt: [u8; 4] = salt.try_into().map_err(|_| CryptoError::KeyLength {
            expected: enc.len() + 4,
            got: enc.len() + salt.len(),
        })?;
        let key = match backend {
            Backend::AwsLc => {
                let alg = if enc.len() == 16 {
                    &AES_128_GCM
                } else {
                    &AES_256_GCM
                };
                let unbound = UnboundKey::new(alg, enc).map_err(|_| CryptoError::Backend)?;
                Key::Aws(LessSafeKey::new(unbound))
            }
            #[cfg(feature = "rustcrypto")]
            Backend::RustCrypto => {
                use aes_gcm::KeyInit;
                if enc.len() == 16 {
                    Key::Rc128(Box::new(
                        aes_gcm::Aes128Gcm::new_from_slice(enc)
                            .map_err(|_| CryptoError::Backend)?,
                    ))
                } else {
                    Key::Rc256(Box::new(
                        aes_gcm::Aes256Gcm::new_from_slice(enc)
                            .map_err(|_| CryptoError::Backend)?,
                    ))
                }
            }
        };
        Ok(Gcm { salt, key })
    }

    /// AAD into a stack buffer; returns its length (8, or 12 with ESN).
    fn aad(esp: &[u8], seq: u64, esn: bool, out: &mut [u8; 12]) -> usize {
        out[..4].copy_from_slice(&esp[..4]);
        if esn {
            out[4..8].copy_from_slice(&seq_hi(seq));
            out[8..12].copy_from_slice(&esp[4..8]);
            12
        } else {
            out[4..8].copy_from_slice(&esp[4..8]);
            8
        }
    }

    pub(super) fn seal(
        &self,
        esp: &mut [u8],
        ct: Range<usize>,
        seq: u64,
        esn: bool,
    ) -> Result<(), CryptoError> {
        self.seal_with_iv(esp, ct, seq.to_be_bytes(), seq, esn)
    }

    /// Seals with a given explicit IV (the tests re-seal captured packets with the
    /// peer's IV and expect identical bytes).
    pub(super) fn seal_with_iv(
        &self,
        esp: &mut [u8],
        ct: Range<usize>,
        iv: [u8; 8],
        seq: u64,
        esn: bool,
    ) -> Result<(), CryptoError> {
        esp[ESP_HEADER_LEN..ESP_HEADER_LEN + IV_LEN].copy_from_slice(&iv);
        let mut nonce = [0u8; 12];
        nonce[..4].copy_from_slice(&self.salt);
        nonce[4..].copy_from_slice(&iv);
        let mut aad_buf = [0u8; 12];
        let aad_len = Self::aad(esp, seq, esn, &mut aad_buf);
        let (body, icv) = esp.split_at_mut(ct.end);
        self.seal_raw(&nonce, &aad_buf[..aad_len], &mut body[ct.start..], icv)
    }

    /// GCM encryption of `body` in place with a full nonce and any AAD; the tag goes
    /// to the first 16 octets of `icv`.
    pub(super) fn seal_raw(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        body: &mut [u8],
        icv: &mut [u8],
    ) -> Result<(), CryptoError> {
        if icv.len() < ICV_LEN {
            return Err(CryptoError::Length);
        }
        match &self.key {
            Key::Aws(k) => {
                let tag = k
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(*nonce),
                        Aad::from(aad),
                        body,
                    )
                    .map_err(|_| CryptoError::Backend)?;
                icv[..ICV_LEN].copy_from_slice(tag.as_ref());
            }
            #[cfg(feature = "rustcrypto")]
            Key::Rc128(k) => rc_seal(k.as_ref(), nonce, aad, body, icv)?,
            #[cfg(feature = "rustcrypto")]
            Key::Rc256(k) => rc_seal(k.as_ref(), nonce, aad, body, icv)?,
        }
        Ok(())
    }

    pub(super) fn open(
        &self,
        esp: &mut [u8],
        ct: Range<usize>,
        seq: u64,
        esn: bool,
    ) -> Result<(), CryptoError> {
        let mut nonce = [0u8; 12];
        nonce[..4].copy_from_slice(&self.salt);
        nonce[4..].copy_from_slice(&esp[ESP_HEADER_LEN..ESP_HEADER_LEN + IV_LEN]);
        let mut aad_buf = [0u8; 12];
        let aad_len = Self::aad(esp, seq, esn, &mut aad_buf);
        self.open_raw(&nonce, &aad_buf[..aad_len], &mut esp[ct.start..])
    }

    /// GCM decryption in place of ciphertext | 16-octet tag with a full nonce and AAD.
    pub(super) fn open_raw(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        ct_and_icv: &mut [u8],
    ) -> Result<(), CryptoError> {
        if ct_and_icv.len() < ICV_LEN {
            return Err(CryptoError::Length);
        }
        match &self.key {
            Key::Aws(k) => {
                k.open_in_place(
                    Nonce::assume_unique_for_key(*nonce),
                    Aad::from(aad),
                    ct_and_icv,
                )
                .map_err(|_| CryptoError::Icv)?;
            }
            #[cfg(feature = "rustcrypto")]
            Key::Rc128(k) => rc_open(k.as_ref(), nonce, aad, ct_and_icv)?,
            #[cfg(feature = "rustcrypto")]
            Key::Rc256(k) => rc_open(k.as_ref(), nonce, aad, ct_and_icv)?,
        }
        Ok(())
    }
}

#[cfg(feature = "rustcrypto")]
fn rc_seal<A: aes_gcm::aead::AeadInOut<NonceSize = aes_gcm::aead::consts::U12>>(
    k: &A,
    nonce: &[u8; 12],
    aad: &[u8],
    body: &mut [u8],
    icv: &mut [u8],
) -> Result<(), CryptoError> {
    let tag = k
        .encrypt_inout_detached(nonce.into(), aad, body.into())
        .map_err(|_| CryptoError::Backend)?;
    icv[..ICV_LEN].copy_from_slice(&tag);
    Ok(())
}

#[cfg(feature = "rustcrypto")]
fn rc_open<A: aes_gcm::aead::AeadInOut<NonceSize = aes_gcm::aead::consts::U12>>(
    k: &A,
    nonce: &[u8; 12],
    aad: &[u8],
    ct_and_icv: &mut [u8],
) -> Result<(), CryptoError> {
    let split = ct_and_icv.len() - ICV_LEN;
    let (body, icv) = ct_and_icv.split_at_mut(split);
    let tag = aes_gcm::aead::Tag::<A>::try_from(&icv[..]).map_err(|_| CryptoError::Length)?;
    k.decrypt_inout_detached(nonce.into(), aad, body.into(), &tag)
        .map_err(|_| CryptoError::Icv)
}
