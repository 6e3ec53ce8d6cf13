//! ESP transforms with batch APIs.
//!
//! - AES-GCM-128/256 with a 16-octet ICV (RFC 4106): 4-octet salt from KEYMAT, 8-octet
//!   explicit IV (the 64-bit sequence number, which is unique per SA), AAD = SPI | seq
//!   (SPI | seq_hi | seq_lo with ESN, §5).
//! - AES-CBC-128/256 (RFC 3602) with HMAC-SHA1-96 (RFC 2404) or HMAC-SHA-256-128
//!   (RFC 4868), encrypt-then-MAC over SPI | seq | IV | ciphertext (| seq_hi with ESN,
//!   RFC 4303 §3.3.2.1).
//!
//! The transform acts on an *ESP region*: the bytes from the SPI to the end of the ICV.
//! The caller writes SPI and the low 32 bits of the sequence number, places the
//! plaintext (payload, padding, pad length, next header) after the IV and leaves room
//! for the ICV; [`EspCipher::seal`] fills IV, ciphertext and ICV in place.
//! [`EspCipher::open`] checks the ICV in constant time and decrypts in place.
//!
//! Dispatch is an enum over (transform, backend), never a trait object. The default
//! backend is aws-lc-rs; the RustCrypto crates are a second backend (feature
//! `rustcrypto`) and the differential oracle of the tests. CBC encryption of a batch
//! interleaves up to eight packets' CBC chains (see [`multibuf`]).

mod cbc;
mod gcm;
pub mod multibuf;

use std::fmt;

use zeroize::Zeroizing;

/// Octets of the ESP header the transform authenticates: SPI and sequence number.
pub const ESP_HEADER_LEN: usize = 8;

/// The ESP transforms sekisho negotiates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transform {
    /// ENCR_AES_GCM_16 with a 128-bit key.
    Aes128Gcm,
    /// ENCR_AES_GCM_16 with a 256-bit key.
    Aes256Gcm,
    /// AES-CBC-128 with HMAC-SHA1-96.
    Aes128CbcSha1,
    /// AES-CBC-256 with HMAC-SHA1-96.
    Aes256CbcSha1,
    /// AES-CBC-128 with HMAC-SHA-256-128.
    Aes128CbcSha256,
    /// AES-CBC-256 with HMAC-SHA-256-128.
    Aes256CbcSha256,
}

impl Transform {
    /// Every transform, in the order `sekisho bench` reports them.
    pub const ALL: [Transform; 6] = [
        Transform::Aes128Gcm,
        Transform::Aes256Gcm,
        Transform::Aes128CbcSha1,
        Transform::Aes256CbcSha1,
        Transform::Aes128CbcSha256,
        Transform::Aes256CbcSha256,
    ];

    /// The name used in config, logs and `sekisho bench` (strongSwan's spelling).
    pub fn name(self) -> &'static str {
        match self {
            Transform::Aes128Gcm => "aes128-gcm",
            Transform::Aes256Gcm => "aes256-gcm",
            Transform::Aes128CbcSha1 => "aes128-sha1",
            Transform::Aes256CbcSha1 => "aes256-sha1",
            Transform::Aes128CbcSha256 => "aes128-sha256",
            Transform::Aes256CbcSha256 => "aes256-sha256",
        }
    }

    /// Parses [`Transform::name`].
    pub fn from_name(name: &str) -> Option<Transform> {
        Transform::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Whether this is a combined-mode (AEAD) transform.
    pub fn is_aead(self) -> bool {
        matches!(self, Transform::Aes128Gcm | Transform::Aes256Gcm)
    }

    /// AES key length in octets.
    pub fn enc_key_len(self) -> usize {
        match self {
            Transform::Aes128Gcm | Transform::Aes128CbcSha1 | Transform::Aes128CbcSha256 => 16,
            _ => 32,
        }
    }

    /// Salt octets taken from KEYMAT after the key (RFC 4106 §8.1).
    pub fn salt_len(self) -> usize {
        if self.is_aead() { 4 } else { 0 }
    }

    /// Integrity key length in octets (0 for AEAD).
    pub fn auth_key_len(self) -> usize {
        match self {
            Transform::Aes128Gcm | Transform::Aes256Gcm => 0,
            Transform::Aes128CbcSha1 | Transform::Aes256CbcSha1 => 20,
            Transform::Aes128CbcSha256 | Transform::Aes256CbcSha256 => 32,
        }
    }

    /// KEYMAT octets this transform consumes: encryption key (| salt) | integrity key.
    pub fn keymat_len(self) -> usize {
        self.enc_key_len() + self.salt_len() + self.auth_key_len()
    }

    /// Explicit IV octets on the wire.
    pub fn iv_len(self) -> usize {
        if self.is_aead() { 8 } else { 16 }
    }

    /// ICV octets on the wire.
    pub fn icv_len(self) -> usize {
        match self {
            Transform::Aes128Gcm | Transform::Aes256Gcm => 16,
            Transform::Aes128CbcSha1 | Transform::Aes256CbcSha1 => 12,
            Transform::Aes128CbcSha256 | Transform::Aes256CbcSha256 => 16,
        }
    }

    /// The ciphertext (payload | padding | pad length | next header) must be a multiple
    /// of this: the cipher block for CBC, 4 octets for GCM (RFC 4303 §2.4).
    pub fn block_len(self) -> usize {
        if self.is_aead() { 4 } else { 16 }
    }

    /// Octets the transform adds around a plaintext: header, IV and ICV (not padding).
    pub fn overhead(self) -> usize {
        ESP_HEADER_LEN + self.iv_len() + self.icv_len()
    }

    /// Ciphertext length for `payload_len` octets of payload: payload, RFC 4303 padding
    /// (1, 2, 3, …), pad length and next header, rounded up to [`Transform::block_len`].
    pub fn padded_len(self, payload_len: usize) -> usize {
        let b = self.block_len();
        (payload_len + 2).div_ceil(b) * b
    }
}

impl fmt::Display for Transform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which implementation carries out the AES and HMAC work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Backend {
    /// aws-lc-rs (default: AES-NI/VAES + PCLMUL assembly).
    #[default]
    AwsLc,
    /// The RustCrypto crates `aes-gcm`, `aes`, `cbc`, `hmac`, `sha1`, `sha2`.
    #[cfg(feature = "rustcrypto")]
    RustCrypto,
}

impl Backend {
    /// Every backend compiled into this build.
    pub fn all() -> &'static [Backend] {
        #[cfg(feature = "rustcrypto")]
        {
            &[Backend::AwsLc, Backend::RustCrypto]
        }
        #[cfg(not(feature = "rustcrypto"))]
        {
            &[Backend::AwsLc]
        }
    }

    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Backend::AwsLc => "aws-lc-rs",
            #[cfg(feature = "rustcrypto")]
            Backend::RustCrypto => "rustcrypto",
        }
    }
}

/// Why a transform refused a key or a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CryptoError {
    /// KEYMAT of the wrong length for the transform.
    KeyLength { expected: usize, got: usize },
    /// The ESP region is shorter than header + IV + ICV, or its ciphertext is not a
    /// multiple of the block length.
    Length,
    /// The integrity check failed (tampered, wrong key or wrong sequence high bits).
    Icv,
    /// The backend rejected the operation.
    Backend,
}

impl fmt::Display for CryptoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CryptoError::KeyLength { expected, got } => {
                write!(
                    f,
                    "key material is {got} octets, the transform needs {expected}"
                )
            }
            CryptoError::Length => f.write_str("ESP packet length does not fit the transform"),
            CryptoError::Icv => f.write_str("integrity check failed"),
            CryptoError::Backend => f.write_str("crypto backend error"),
        }
    }
}

impl std::error::Error for CryptoError {}

/// A packet in a batch handed to [`EspCipher::seal_batch`] / [`EspCipher::open_batch`].
///
/// The data path implements it for its frame type, so the batch call works on UMEM
/// frames in place; [`EspBuf`] is the plain implementation for tests and benches.
pub trait EspPacket {
    /// The ESP region: SPI .. end of ICV.
    fn esp_mut(&mut self) -> &mut [u8];
    /// The full (ESN-inferred) sequence number of this packet.
    fn seq(&self) -> u64;
    /// Whether an earlier stage already failed this packet (it is skipped).
    fn failed(&self) -> bool;
    /// Marks the packet failed with `err`; it is dropped and counted by the caller.
    fn fail(&mut self, err: CryptoError);
}

/// A borrowed ESP region with its sequence number and outcome.
#[derive(Debug)]
pub struct EspBuf<'a> {
    /// SPI .. end of ICV.
    pub esp: &'a mut [u8],
    /// Full sequence number.
    pub seq: u64,
    /// Outcome of the last batch call.
    pub status: Result<(), CryptoError>,
}

impl<'a> EspBuf<'a> {
    /// Wraps an ESP region.
    pub fn new(esp: &'a mut [u8], seq: u64) -> Self {
        EspBuf {
            esp,
            seq,
            status: Ok(()),
        }
    }
}

impl EspPacket for EspBuf<'_> {
    fn esp_mut(&mut self) -> &mut [u8] {
        self.esp
    }
    fn seq(&self) -> u64 {
        self.seq
    }
    fn failed(&self) -> bool {
        self.status.is_err()
    }
    fn fail(&mut self, err: CryptoError) {
        self.status = Err(err);
    }
}

/// How a batch of CBC packets is encrypted. Multi-buffer is the default; serial is
/// kept so `sekisho bench` and the benches can show what interleaving buys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CbcSchedule {
    /// Interleave up to eight packets' CBC chains per AES call.
    #[default]
    MultiBuffer,
    /// One packet after the other through the backend's CBC.
    Serial,
}

/// The keyed transform of one SA direction.
pub struct EspCipher {
    transform: Transform,
    esn: bool,
    imp: Imp,
}

enum Imp {
    Gcm(gcm::Gcm),
    Cbc(Box<cbc::CbcHmac>),
}

impl fmt::Debug for EspCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EspCipher")
            .field("transform", &self.transform)
            .field("esn", &self.esn)
            .finish_non_exhaustive()
    }
}

impl EspCipher {
    /// Keys a transform from KEYMAT (encryption key | salt | integrity key, as IKE
    /// derives it). `iv_seed` keys the CBC IV generator (IV = AES(iv_seed, seq)), so
    /// IVs are unpredictable (RFC 3602 §2) yet cost one block per packet; pass 16
    /// random octets. GCM ignores it: its IV is the sequence number.
    pub fn new(
        transform: Transform,
        keymat: &[u8],
        esn: bool,
        backend: Backend,
        iv_seed: [u8; 16],
    ) -> Result<EspCipher, CryptoError> {
        if keymat.len() != transform.keymat_len() {
            return Err(CryptoError::KeyLength {
                expected: transform.keymat_len(),
                got: keymat.len(),
            });
        }
        let keymat = Zeroizing::new(keymat.to_vec());
        let (enc, rest) = keymat.split_at(transform.enc_key_len());
        let imp = if transform.is_aead() {
            Imp::Gcm(gcm::Gcm::new(enc, rest, backend)?)
        } else {
            Imp::Cbc(Box::new(cbc::CbcHmac::new(
                transform, enc, rest, backend, iv_seed,
            )?))
        };
        Ok(EspCipher {
            transform,
            esn,
            imp,
        })
    }

    /// The negotiated transform.
    pub fn transform(&self) -> Transform {
        self.transform
    }

    /// Whether 64-bit extended sequence numbers are in use.
    pub fn esn(&self) -> bool {
        self.esn
    }

    /// Checks the ESP region's shape and returns the ciphertext range.
    fn ciphertext_range(&self, len: usize) -> Result<std::ops::Range<usize>, CryptoError> {
        let t = self.transform;
        let start = ESP_HEADER_LEN + t.iv_len();
        let end = len.checked_sub(t.icv_len()).ok_or(CryptoError::Length)?;
        if end <= start || !(end - start).is_multiple_of(t.block_len()) {
            return Err(CryptoError::Length);
        }
        Ok(start..end)
    }

    /// Encrypts one ESP region in place: writes the IV, the ciphertext and the ICV.
    pub fn seal(&self, esp: &mut [u8], seq: u64) -> Result<(), CryptoError> {
        let ct = self.ciphertext_range(esp.len())?;
        match &self.imp {
            Imp::Gcm(g) => g.seal(esp, ct, seq, self.esn),
            Imp::Cbc(c) => c.seal(esp, ct, seq, self.esn),
        }
    }

    /// Verifies the ICV (constant time) and decrypts one ESP region in place. The
    /// plaintext is at `esp[8 + iv_len .. len - icv_len]`.
    pub fn open(&self, esp: &mut [u8], seq: u64) -> Result<(), CryptoError> {
        let ct = self.ciphertext_range(esp.len())?;
        match &self.imp {
            Imp::Gcm(g) => g.open(esp, ct, seq, self.esn),
            Imp::Cbc(c) => c.open(esp, ct, seq, self.esn),
        }
    }

    /// Seals every packet of a batch that has not failed yet; a packet that cannot be
    /// sealed is marked with [`EspPacket::fail`].
    pub fn seal_batch<P: EspPacket>(&self, pkts: &mut [P]) {
        self.seal_batch_with(pkts, CbcSchedule::default());
    }

    /// [`EspCipher::seal_batch`] with an explicit CBC schedule (benchmarks).
    pub fn seal_batch_with<P: EspPacket>(&self, pkts: &mut [P], schedule: CbcSchedule) {
        match &self.imp {
            Imp::Gcm(g) => {
                for p in pkts.iter_mut().filter(|p| !p.failed()) {
                    let seq = p.seq();
                    let r = self
                        .ciphertext_range(p.esp_mut().len())
                        .and_then(|ct| g.seal(p.esp_mut(), ct, seq, self.esn));
                    if let Err(e) = r {
                        p.fail(e);
                    }
                }
            }
            Imp::Cbc(c) => c.seal_batch(self, pkts, schedule),
        }
    }

    /// Opens every packet of a batch that has not failed yet; failures (ICV, length)
    /// are marked with [`EspPacket::fail`].
    pub fn open_batch<P: EspPacket>(&self, pkts: &mut [P]) {
        for p in pkts.iter_mut().filter(|p| !p.failed()) {
            let seq = p.seq();
            if let Err(e) = self.open(p.esp_mut(), seq) {
                p.fail(e);
            }
        }
    }
}

/// The AAD / ICV input of the ESP header: SPI | seq_lo, and seq_hi when ESN is on.
fn seq_hi(seq: u64) -> [u8; 4] {
    ((seq >> 32) as u32).to_be_bytes()
}

#[cfg(test)]
mod kat;
#[cfg(all(test, feature = "rustcrypto"))]
mod oracle;
