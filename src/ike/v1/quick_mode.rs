//! Quick Mode (RFC 2409 §5.5), both roles:
//!
//! ```text
//! QM1 HDR*, HASH(1), SA, Ni [, KE] [, IDci, IDcr] [, NAT-OAi, NAT-OAr]  ──▶
//!                     ◀──  QM2 HDR*, HASH(2), SA, Nr [, KE] [, IDci, IDcr]
//! QM3 HDR*, HASH(3)                                                     ──▶
//! ```
//! HASH(1) = prf(SKEYID_a, M-ID | everything after HASH), HASH(2) = prf(SKEYID_a,
//! M-ID | Ni_b | everything after HASH), HASH(3) = prf(SKEYID_a, 0 | M-ID | Ni_b |
//! Nr_b). KEYMAT per direction uses the receiver's SPI. The first IV of the exchange
//! is hash(last phase 1 block | M-ID); each later message chains on the last block of
//! the previous one.

use std::net::Ipv4Addr;
use std::time::Duration;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::crypto::Transform as EspTransform;
use crate::esp::sa::Mode;
use crate::wire::isakmp::{
    ChainBuilder, Header, Identification, Notification, SaPayload, exchange, flags, notify, payload,
};

use super::crypto::DhGroup;
use super::keys::{decrypt_message, encrypt_message, phase2_iv};
use super::main_mode::Phase1Done;
use super::message::{Chain, with_hash_first};
use super::natd;
use super::proposal::{self, Algorithms, EncapMode, PROTO_ESP};

/// Why a Quick Mode message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QmError {
    /// Missing or malformed payload.
    #[error("malformed: {0}")]
    Malformed(&'static str),
    /// HASH(1/2/3) did not verify.
    #[error("hash mismatch")]
    Hash,
    /// Nothing acceptable; names what was offered.
    #[error("no proposal chosen; offered {0}")]
    NoProposal(String),
    /// PFS key exchange failed.
    #[error("invalid key exchange payload")]
    BadKe,
    /// Crypto failure.
    #[error("crypto: {0}")]
    Crypto(String),
}

/// A negotiated ESP SA pair, from our point of view.
pub struct ChildSa {
    /// Our SPI (the peer sends to it).
    pub inbound_spi: u32,
    /// The peer's SPI (we send to it).
    pub outbound_spi: u32,
    /// Transform.
    pub transform: EspTransform,
    /// Transport or tunnel.
    pub mode: Mode,
    /// ESP in UDP (RFC 3948).
    pub udp: bool,
    /// Time lifetime.
    pub lifetime: Duration,
    /// Volume lifetime (kilobytes).
    pub lifetime_kb: Option<u64>,
    /// KEYMAT of the inbound SA (enc key | salt | integrity key).
    pub inbound_keymat: Zeroizing<Vec<u8>>,
    /// KEYMAT of the outbound SA.
    pub outbound_keymat: Zeroizing<Vec<u8>>,
    /// Our traffic selector (IDcr for the responder), if sent.
    pub local_ts: Option<Identification>,
    /// The peer's traffic selector (IDci for the responder), if sent.
    pub peer_ts: Option<Identification>,
    /// The peer's original address (NAT-OA) when it is behind a NAT.
    pub peer_original: Option<Ipv4Addr>,
}

impl ChildSa {
    /// The peer's inner address for tunnel mode (its single-address selector).
    pub fn peer_inner(&self) -> Option<Ipv4Addr> {
        let ts = self.peer_ts.as_ref()?;
        (ts.id_type == crate::wire::isakmp::id_type::IPV4_ADDR && ts.data.len() == 4)
            .then(|| Ipv4Addr::new(ts.data[0], ts.data[1], ts.data[2], ts.data[3]))
    }

    /// Our inner address for tunnel mode (our single-address selector).
    pub fn local_inner(&self) -> Option<Ipv4Addr> {
        let ts = self.local_ts.as_ref()?;
        (ts.id_type == crate::wire::isakmp::id_type::IPV4_ADDR && ts.data.len() == 4)
            .then(|| Ipv4Addr::new(ts.data[0], ts.data[1], ts.data[2], ts.data[3]))
    }

    /// Same selectors as `other` (a rekey of it).
    pub fn same_selectors(&self, other: &ChildSa) -> bool {
        self.local_ts == other.local_ts && self.peer_ts == other.peer_ts && self.mode == other.mode
    }
}

fn header(p1: &Phase1Done, mid: u32) -> Header {
    Header {
        initiator_cookie: p1.icookie,
        responder_cookie: p1.rcookie,
        next_payload: 0,
        version: 0x10,
        exchange: exchange::QUICK,
        flags: flags::ENCRYPTION,
        message_id: mid,
        length: 0,
    }
}

fn nonce(chain: &Chain<'_>) -> Result<Vec<u8>, QmError> {
    let n = chain
        .get(payload::NONCE)
        .ok_or(QmError::Malformed("no nonce"))?;
    if !(8..=256).contains(&n.len()) {
        return Err(QmError::Malformed("nonce length"));
    }
    Ok(n.to_vec())
}

fn rand32() -> Result<Vec<u8>, QmError> {
    let mut b = vec![0u8; 32];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| QmError::Crypto("no randomness".into()))?;
    Ok(b)
}

/// A random non-zero message id.
pub fn new_message_id() -> Result<u32, QmError> {
    loop {
        let mut b = [0u8; 4];
        SystemRandom::new()
            .fill(&mut b)
            .map_err(|_| QmError::Crypto("no randomness".into()))?;
        let m = u32::from_be_bytes(b);
        if m != 0 {
            return Ok(m);
        }
    }
}

fn ids(chain: &Chain<'_>) -> Result<Option<(Identification, Identification)>, QmError> {
    let v: Vec<&[u8]> = chain.all(payload::ID).collect();
    match v.as_slice() {
        [] => Ok(None),
        [i, r] => Ok(Some((
            Identification::parse(i).map_err(|_| QmError::Malformed("IDci"))?,
            Identification::parse(r).map_err(|_| QmError::Malformed("IDcr"))?,
        ))),
        _ => Err(QmError::Malformed("ID payload count")),
    }
}

fn pfs_exchange(group: Option<DhGroup>, chain: &Chain<'_>) -> Result<Option<PfsResult>, QmError> {
    let Some(g) = group else {
        return Ok(None);
    };
    let peer = chain
        .get(payload::KE)
        .ok_or(QmError::Malformed("PFS without KE"))?;
    let s = g.generate().map_err(|e| QmError::Crypto(e.to_string()))?;
    let public = s.public().to_vec();
    let gxy = s.agree(peer).map_err(|_| QmError::BadKe)?;
    Ok(Some((public, gxy)))
}

/// Our PFS public value and g^xy.
type PfsResult = (Vec<u8>, Zeroizing<Vec<u8>>);

/// Header, plaintext chain and last cipher block of a decrypted message.
type Opened = (Header, Zeroizing<Vec<u8>>, Vec<u8>);

/// RESPONDER-LIFETIME (RFC 2407 §4.6.3.1) carrying our time lifetime.
fn responder_lifetime(our_spi: u32, lifetime: Duration) -> Vec<u8> {
    let secs = u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX);
    let mut data = vec![0x80, 0x01, 0x00, 0x01]; // SA life type: seconds
    data.extend_from_slice(&[0x00, 0x02, 0x00, 0x04]); // SA life duration, 4 octets
    data.extend_from_slice(&secs.to_be_bytes());
    Notification {
        doi: proposal::DOI_IPSEC,
        protocol: PROTO_ESP,
        spi: our_spi.to_be_bytes().to_vec(),
        message_type: notify::RESPONDER_LIFETIME,
        data,
    }
    .emit()
}

/// The responder after QM2, waiting for QM3.
pub struct Qm2Sent {
    /// M-ID.
    pub message_id: u32,
    iv: Vec<u8>,
    ni: Vec<u8>,
    nr: Vec<u8>,
}

/// The pair both roles derive: KEYMAT per direction keyed by the receiver's SPI
/// (RFC 2409 §5.5), and the selectors as (ours, the peer's).
fn child_sa(
    p1: &Phase1Done,
    c: &proposal::Phase2Choice,
    our_spi: u32,
    pfs_gxy: Option<&[u8]>,
    (ni, nr): (&[u8], &[u8]),
    selectors: Option<(Identification, Identification)>,
    peer_original: Option<Ipv4Addr>,
) -> ChildSa {
    let klen = c.transform.keymat_len();
    let (local_ts, peer_ts) = selectors.unzip();
    ChildSa {
        inbound_spi: our_spi,
        outbound_spi: c.peer_spi,
        transform: c.transform,
        mode: c.encap.mode(),
        udp: c.encap.udp(),
        lifetime: c.lifetime,
        lifetime_kb: c.lifetime_kb,
        inbound_keymat: p1.keys.keymat(pfs_gxy, PROTO_ESP, our_spi, ni, nr, klen),
        outbound_keymat: p1.keys.keymat(pfs_gxy, PROTO_ESP, c.peer_spi, ni, nr, klen),
        local_ts,
        peer_ts,
        peer_original,
    }
}

/// Decrypts a Quick Mode or informational message under phase 1 keys.
fn open(p1: &Phase1Done, iv: &[u8], msg: &[u8]) -> Result<Opened, QmError> {
    decrypt_message(p1.choice.cipher, &p1.keys.ka, iv, msg)
        .map_err(|_| QmError::Malformed("ciphertext length"))
}

/// Responder: QM1 → QM2, and the SA pair to install as QM2 leaves (it is activated
/// on QM3). `our_spi` is already allocated (KEYMAT depends on it).
pub fn on_qm1(
    p1: &Phase1Done,
    msg: &[u8],
    message_id: u32,
    algs: &Algorithms,
    our_spi: u32,
) -> Result<(Qm2Sent, ChildSa, Vec<u8>), QmError> {
    let iv0 = phase2_iv(
        p1.choice.hash,
        p1.choice.cipher,
        &p1.p1_last_block,
        message_id,
    );
    let (h, plain, last) = open(p1, &iv0, msg)?;
    let chain = Chain::parse(h.next_payload, &plain).map_err(|_| QmError::Hash)?;
    if !chain.starts_with(payload::HASH) {
        return Err(QmError::Malformed("QM1 does not start with HASH"));
    }
    let hash1 = chain.get(payload::HASH).unwrap_or_default();
    let want = p1.keys.hash_a(message_id, &[chain.after_first()]);
    if !bool::from(want.as_slice().ct_eq(hash1)) {
        return Err(QmError::Hash);
    }
    let sa = chain
        .get(payload::SA)
        .ok_or(QmError::Malformed("QM1 without SA"))?;
    let sa = SaPayload::parse(sa).map_err(|_| QmError::Malformed("QM1 SA payload"))?;
    let sel = proposal::select_phase2(&sa, algs, our_spi)
        .ok_or_else(|| QmError::NoProposal(proposal::describe_offer(&sa)))?;
    let ni = nonce(&chain)?;
    let nr = rand32()?;
    let pfs = pfs_exchange(sel.choice.pfs, &chain)?;
    let ts = ids(&chain)?;
    let peer_original = p1
        .natt
        .and_then(|n| chain.all(n.natoa_type()).next())
        .and_then(natd::parse_natoa);

    let mut rest = ChainBuilder::new();
    rest.push(payload::SA, &sel.reply);
    rest.push(payload::NONCE, &nr);
    if let Some((public, _)) = &pfs {
        rest.push(payload::KE, public);
    }
    if let Some((i, r)) = &ts {
        rest.push(payload::ID, &i.emit());
        rest.push(payload::ID, &r.emit());
    }
    if sel.choice.shortened {
        rest.push(
            payload::N,
            &responder_lifetime(our_spi, sel.choice.lifetime),
        );
    }
    let hash2 = p1.keys.hash_a(message_id, &[&ni, rest.bytes()]);
    let b = with_hash_first(&hash2, &rest);
    let (qm2, iv) = encrypt_message(
        p1.choice.cipher,
        &p1.keys.ka,
        &last,
        header(p1, message_id),
        &b,
    )
    .map_err(|e| QmError::Crypto(e.to_string()))?;

    let gxy = pfs.as_ref().map(|(_, g)| g.as_slice());
    // We are the responder: IDci is the peer's selector, IDcr ours.
    let child = child_sa(
        p1,
        &sel.choice,
        our_spi,
        gxy,
        (&ni, &nr),
        ts.map(|(i, r)| (r, i)),
        peer_original,
    );
    Ok((
        Qm2Sent {
            message_id,
            iv,
            ni,
            nr,
        },
        child,
        qm2,
    ))
}

impl Qm2Sent {
    /// Responder: checks QM3.
    pub fn on_qm3(&self, p1: &Phase1Done, msg: &[u8]) -> Result<(), QmError> {
        let (h, plain, _) = open(p1, &self.iv, msg)?;
        let chain = Chain::parse(h.next_payload, &plain).map_err(|_| QmError::Hash)?;
        let got = chain
            .get(payload::HASH)
            .ok_or(QmError::Malformed("QM3 without HASH"))?;
        let want = p1.keys.qm_hash3(self.message_id, &self.ni, &self.nr);
        if bool::from(want.as_slice().ct_eq(got)) {
            Ok(())
        } else {
            Err(QmError::Hash)
        }
    }
}

// ---------------------------------------------------------------- initiator side

/// What an initiator proposes.
#[derive(Clone, Debug)]
pub struct Qm1Offer {
    /// ESP transforms in order of preference.
    pub transforms: Vec<EspTransform>,
    /// Mode and encapsulation.
    pub encap: EncapMode,
    /// PFS group.
    pub pfs: Option<DhGroup>,
    /// Requested lifetime.
    pub lifetime: Duration,
    /// Our traffic selector and the peer's (IDci, IDcr).
    pub ids: Option<(Identification, Identification)>,
    /// NAT-OAi and NAT-OAr (transport mode behind a NAT).
    pub natoa: Option<(Ipv4Addr, Ipv4Addr)>,
}

/// The initiator after QM1.
pub struct Qm1Sent {
    /// M-ID.
    pub message_id: u32,
    iv: Vec<u8>,
    ni: Vec<u8>,
    our_spi: u32,
    pfs: Option<super::crypto::DhSecret>,
    offer: Qm1Offer,
}

/// Initiator: builds QM1 with `our_spi` (our inbound SPI for the new pair).
pub fn initiate(
    p1: &Phase1Done,
    offer: Qm1Offer,
    our_spi: u32,
) -> Result<(Qm1Sent, Vec<u8>), QmError> {
    let message_id = new_message_id()?;
    let ni = rand32()?;
    let pfs = match offer.pfs {
        Some(g) => Some(g.generate().map_err(|e| QmError::Crypto(e.to_string()))?),
        None => None,
    };
    let mut rest = ChainBuilder::new();
    let sa = proposal::offer_phase2(
        &offer.transforms,
        offer.encap,
        offer.pfs,
        offer.lifetime,
        our_spi,
    );
    rest.push(payload::SA, &sa);
    rest.push(payload::NONCE, &ni);
    if let Some(s) = &pfs {
        rest.push(payload::KE, s.public());
    }
    if let Some((i, r)) = &offer.ids {
        rest.push(payload::ID, &i.emit());
        rest.push(payload::ID, &r.emit());
    }
    if let (Some((oai, oar)), Some(n)) = (offer.natoa, p1.natt) {
        rest.push(n.natoa_type(), &natd::natoa_body(oai));
        rest.push(n.natoa_type(), &natd::natoa_body(oar));
    }
    let hash1 = p1.keys.hash_a(message_id, &[rest.bytes()]);
    let b = with_hash_first(&hash1, &rest);
    let iv0 = phase2_iv(
        p1.choice.hash,
        p1.choice.cipher,
        &p1.p1_last_block,
        message_id,
    );
    let (qm1, iv) = encrypt_message(
        p1.choice.cipher,
        &p1.keys.ka,
        &iv0,
        header(p1, message_id),
        &b,
    )
    .map_err(|e| QmError::Crypto(e.to_string()))?;
    Ok((
        Qm1Sent {
            message_id,
            iv,
            ni,
            our_spi,
            pfs,
            offer,
        },
        qm1,
    ))
}

impl Qm1Sent {
    /// Initiator: QM2 → QM3 and the SA pair.
    pub fn on_qm2(
        self,
        p1: &Phase1Done,
        msg: &[u8],
        algs: &Algorithms,
    ) -> Result<(ChildSa, Vec<u8>), QmError> {
        let (h, plain, last) = open(p1, &self.iv, msg)?;
        let chain = Chain::parse(h.next_payload, &plain).map_err(|_| QmError::Hash)?;
        if !chain.starts_with(payload::HASH) {
            return Err(QmError::Malformed("QM2 does not start with HASH"));
        }
        let nr = nonce(&chain)?;
        let got = chain.get(payload::HASH).unwrap_or_default();
        let want = p1
            .keys
            .hash_a(self.message_id, &[&self.ni, chain.after_first()]);
        if !bool::from(want.as_slice().ct_eq(got)) {
            return Err(QmError::Hash);
        }
        let sa = chain
            .get(payload::SA)
            .ok_or(QmError::Malformed("QM2 without SA"))?;
        let sa = SaPayload::parse(sa).map_err(|_| QmError::Malformed("QM2 SA payload"))?;
        let c = proposal::accept_phase2_reply(&sa, algs)
            .ok_or_else(|| QmError::NoProposal(proposal::describe_offer(&sa)))?;
        let gxy = match self.pfs {
            Some(s) => {
                let ke = chain
                    .get(payload::KE)
                    .ok_or(QmError::Malformed("PFS without KE"))?;
                Some(s.agree(ke).map_err(|_| QmError::BadKe)?)
            }
            None => None,
        };
        let child = child_sa(
            p1,
            &c,
            self.our_spi,
            gxy.as_ref().map(|g| g.as_slice()),
            (&self.ni, &nr),
            self.offer.ids,
            None,
        );
        let hash3 = p1.keys.qm_hash3(self.message_id, &self.ni, &nr);
        let mut b = ChainBuilder::new();
        b.push(payload::HASH, &hash3);
        let (qm3, _) = encrypt_message(
            p1.choice.cipher,
            &p1.keys.ka,
            &last,
            header(p1, self.message_id),
            &b,
        )
        .map_err(|e| QmError::Crypto(e.to_string()))?;
        Ok((child, qm3))
    }
}
