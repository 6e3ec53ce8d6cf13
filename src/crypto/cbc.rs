//! AES-CBC (RFC 3602) with HMAC-SHA1-96 (RFC 2404) or HMAC-SHA-256-128 (RFC 4868).
//!
//! Encrypt-then-MAC: the ICV covers SPI | seq | IV | ciphertext, and with ESN the
//! high-order 32 bits of the sequence number appended after it (RFC 4303 §3.3.2.1),
//! truncated to 12 or 16 octets. On receive the ICV is checked, in constant time,
//! before anything is decrypted.
//!
//! The IV must be unpredictable (RFC 3602 §2): it is AES(iv_key, 0^64 | seq) with a
//! random per-SA `iv_key`, which costs one block instead of a call into a RNG.

use std::ops::Range;

use aws_lc_rs::cipher::{
    AES_128, AES_256, DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext,
    UnboundCipherKey,
};
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use subtle::ConstantTimeEq;

use super::multibuf::{self, BlockCipher};
use super::{Backend, CbcSchedule, CryptoError, ESP_HEADER_LEN, EspCipher, EspPacket, Transform};

const IV_LEN: usize = 16;

pub(super) struct CbcHmac {
    icv_len: usize,
    /// Keys the IV generator.
    iv_gen: BlockCipher,
    /// The encryption key as a block cipher, for multi-buffer CBC.
    multi: BlockCipher,
    imp: Imp,
}

// The aws-lc-rs variant is the large one and the one on the hot path: boxing it would
// add a pointer chase per packet; the whole CbcHmac is boxed once by EspCipher.
#[allow(clippy::large_enum_variant)]
enum Imp {
    Aws {
        enc: EncryptingKey,
        dec: DecryptingKey,
        mac: hmac::Key,
    },
    #[cfg(feature = "rustcrypto")]
    Rc { cipher: RcAes, mac: RcMac },
}

#[cfg(feature = "rustcrypto")]
enum RcAes {
    A128(Box<aes::Aes128>),
    A256(Box<aes::Aes256>),
}

#[cfg(feature = "rustcrypto")]
enum RcMac {
    Sha1(Box<hmac_rc::Hmac<sha1::Sha1>>),
    Sha256(Box<hmac_rc::Hmac<sha2::Sha256>>),
}

#[cfg(feature = "rustcrypto")]
use ::hmac as hmac_rc;

/// HMAC with a pre-keyed RustCrypto state over `authed` (| seq_hi), into `out`.
#[cfg(feature = "rustcrypto")]
fn rc_mac<M: hmac_rc::Mac + Clone>(
    key: &M,
    authed: &[u8],
    hi: Option<&[u8; 4]>,
    out: &mut [u8; 32],
) {
    let mut m = key.clone();
    m.update(authed);
    if let Some(hi) = hi {
        m.update(hi);
    }
    let tag = m.finalize().into_bytes();
    out[..tag.len()].copy_from_slice(&tag);
}

impl CbcHmac {
    pub(super) fn new(
        transform: Transform,
        enc: &[u8],
        auth: &[u8],
        backend: Backend,
        iv_seed: [u8; 16],
    ) -> Result<CbcHmac, CryptoError> {
        let sha1 = matches!(
            transform,
            Transform::Aes128CbcSha1 | Transform::Aes256CbcSha1
        );
        let imp = match backend {
            Backend::AwsLc => {
                let alg = if enc.len() == 16 { &AES_128 } else { &AES_256 };
                let ek = UnboundCipherKey::new(alg, enc).map_err(|_| CryptoError::Backend)?;
                let dk = UnboundCipherKey::new(alg, enc).map_err(|_| CryptoError::Backend)?;
                let mac_alg = if sha1 {
                    hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY
                } else {
                    hmac::HMAC_SHA256
                };
                Imp::Aws {
                    enc: EncryptingKey::cbc(ek).map_err(|_| CryptoError::Backend)?,
                    dec: DecryptingKey::cbc(dk).map_err(|_| CryptoError::Backend)?,
                    mac: hmac::Key::new(mac_alg, auth),
                }
            }
            #[cfg(feature = "rustcrypto")]
            Backend::RustCrypto => {
                use aes::cipher::KeyInit;
                let cipher = if enc.len() == 16 {
                    RcAes::A128(Box::new(
                        aes::Aes128::new_from_slice(enc).map_err(|_| CryptoError::Backend)?,
                    ))
                } else {
                    RcAes::A256(Box::new(
                        aes::Aes256::new_from_slice(enc).map_err(|_| CryptoError::Backend)?,
                    ))
                };
                let mac = if sha1 {
                    RcMac::Sha1(Box::new(
                        hmac_rc::Hmac::new_from_slice(auth).map_err(|_| CryptoError::Backend)?,
                    ))
                } else {
                    RcMac::Sha256(Box::new(
                        hmac_rc::Hmac::new_from_slice(auth).map_err(|_| CryptoError::Backend)?,
                    ))
                };
                Imp::Rc { cipher, mac }
            }
        };
        Ok(CbcHmac {
            icv_len: transform.icv_len(),
            iv_gen: BlockCipher::new(&iv_seed)?,
            multi: BlockCipher::new(enc)?,
            imp,
        })
    }

    fn iv(&self, seq: u64) -> [u8; 16] {
        let mut b = [aes::Block::default()];
        b[0][8..].copy_from_slice(&seq.to_be_bytes());
        self.iv_gen.encrypt_blocks(&mut b);
        b[0].into()
    }

    /// HMAC over `esp[..ct_end]` (| seq_hi), truncated, into `out`.
    pub(super) fn mac(&self, authed: &[u8], seq: u64, esn: bool, out: &mut [u8; 32]) {
        let hi = super::seq_hi(seq);
        match &self.imp {
            Imp::Aws { mac, .. } => {
                let mut ctx = hmac::Context::with_key(mac);
                ctx.update(authed);
                if esn {
                    ctx.update(&hi);
                }
                let tag = ctx.sign();
                let t = tag.as_ref();
                out[..t.len()].copy_from_slice(t);
            }
            #[cfg(feature = "rustcrypto")]
            Imp::Rc { mac, .. } => match mac {
                RcMac::Sha1(k) => rc_mac(k.as_ref(), authed, esn.then_some(&hi), out),
                RcMac::Sha256(k) => rc_mac(k.as_ref(), authed, esn.then_some(&hi), out),
            },
        }
    }

    pub(super) fn encrypt_serial(&self, data: &mut [u8], iv: [u8; 16]) -> Result<(), CryptoError> {
        match &self.imp {
            Imp::Aws { enc, .. } => {
                enc.less_safe_encrypt(data, EncryptionContext::Iv128(FixedLength::from(iv)))
                    .map_err(|_| CryptoError::Backend)?;
            }
            #[cfg(feature = "rustcrypto")]
            Imp::Rc { cipher, .. } => {
                use aes::cipher::{BlockModeEncrypt, InnerIvInit};
                let (blocks, rest) = aes::Block::slice_as_chunks_mut(data);
                if !rest.is_empty() {
                    return Err(CryptoError::Length);
                }
                match cipher {
                    RcAes::A128(c) => {
                        cbc::Encryptor::inner_iv_init((**c).clone(), &iv.into())
                            .encrypt_blocks(blocks);
                    }
                    RcAes::A256(c) => {
                        cbc::Encryptor::inner_iv_init((**c).clone(), &iv.into())
                            .encrypt_blocks(blocks);
                    }
                }
            }
        }
        Ok(())
    }

    pub(super) fn decrypt(&self, data: &mut [u8], iv: [u8; 16]) -> Result<(), CryptoError> {
        match &self.imp {
            Imp::Aws { dec, .. } => {
                dec.decrypt(data, DecryptionContext::Iv128(FixedLength::from(iv)))
                    .map_err(|_| CryptoError::Backend)?;
            }
            #[cfg(feature = "rustcrypto")]
            Imp::Rc { cipher, .. } => {
                use aes::cipher::{BlockModeDecrypt, InnerIvInit};
                let (blocks, rest) = aes::Block::slice_as_chunks_mut(data);
                if !rest.is_empty() {
                    return Err(CryptoError::Length);
                }
                match cipher {
                    RcAes::A128(c) => {
                        cbc::Decryptor::inner_iv_init((**c).clone(), &iv.into())
                            .decrypt_blocks(blocks);
                    }
                    RcAes::A256(c) => {
                        cbc::Decryptor::inner_iv_init((**c).clone(), &iv.into())
                            .decrypt_blocks(blocks);
                    }
                }
            }
        }
        Ok(())
    }

    fn write_icv(&self, esp: &mut [u8], ct_end: usize, seq: u64, esn: bool) {
        let mut tag = [0u8; 32];
        self.mac(&esp[..ct_end], seq, esn, &mut tag);
        esp[ct_end..ct_end + self.icv_len].copy_from_slice(&tag[..self.icv_len]);
    }

    pub(super) fn seal(
        &self,
        esp: &mut [u8],
        ct: Range<usize>,
        seq: u64,
        esn: bool,
    ) -> Result<(), CryptoError> {
        self.seal_with_iv(esp, ct, self.iv(seq), seq, esn)
    }

    /// Seals with a given IV (the tests re-seal captured packets with the peer's IV).
    pub(super) fn seal_with_iv(
        &self,
        esp: &mut [u8],
        ct: Range<usize>,
        iv: [u8; 16],
        seq: u64,
        esn: bool,
    ) -> Result<(), CryptoError> {
        esp[ESP_HEADER_LEN..ESP_HEADER_LEN + IV_LEN].copy_from_slice(&iv);
        self.encrypt_serial(&mut esp[ct.clone()], iv)?;
        self.write_icv(esp, ct.end, seq, esn);
        Ok(())
    }

    pub(super) fn open(
        &self,
        esp: &mut [u8],
        ct: Range<usize>,
        seq: u64,
        esn: bool,
    ) -> Result<(), CryptoError> {
        let mut tag = [0u8; 32];
        self.mac(&esp[..ct.end], seq, esn, &mut tag);
        let good: bool = tag[..self.icv_len]
            .ct_eq(&esp[ct.end..ct.end + self.icv_len])
            .into();
        if !good {
            return Err(CryptoError::Icv);
        }
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&esp[ESP_HEADER_LEN..ESP_HEADER_LEN + IV_LEN]);
        self.decrypt(&mut esp[ct], iv)
    }

    /// Seals a batch: IVs, then all CBC chains interleaved, then the MACs.
    pub(super) fn seal_batch<P: EspPacket>(
        &self,
        owner: &EspCipher,
        pkts: &mut [P],
        schedule: CbcSchedule,
    ) {
        let esn = owner.esn();
        if schedule == CbcSchedule::Serial || pkts.len() < 2 {
            for p in pkts.iter_mut().filter(|p| !p.failed()) {
                let seq = p.seq();
                let r = owner
                    .ciphertext_range(p.esp_mut().len())
                    .and_then(|ct| self.seal(p.esp_mut(), ct, seq, esn));
                if let Err(e) = r {
                    p.fail(e);
                }
            }
            return;
        }
        // 1. Shape checks and IVs.
        for p in pkts.iter_mut().filter(|p| !p.failed()) {
            let seq = p.seq();
            match owner.ciphertext_range(p.esp_mut().len()) {
                Ok(_) => {
                    let iv = self.iv(seq);
                    p.esp_mut()[ESP_HEADER_LEN..ESP_HEADER_LEN + IV_LEN].copy_from_slice(&iv);
                }
                Err(e) => p.fail(e),
            }
        }
        // 2. CBC chains, interleaved. Shapes were checked above.
        let icv_len = self.icv_len;
        let jobs = pkts.iter_mut().filter(|p| !p.failed()).map(|p| {
            let esp = p.esp_mut();
            let end = esp.len() - icv_len;
            let mut iv = [0u8; 16];
            iv.copy_from_slice(&esp[ESP_HEADER_LEN..ESP_HEADER_LEN + IV_LEN]);
            (&mut esp[ESP_HEADER_LEN + IV_LEN..end], iv)
        });
        multibuf::cbc_encrypt(&self.multi, jobs, |_| {});
        // 3. ICVs.
        for p in pkts.iter_mut().filter(|p| !p.failed()) {
            let seq = p.seq();
            let esp = p.esp_mut();
            let end = esp.len() - icv_len;
            self.write_icv(esp, end, seq, esn);
        }
    }
}
