//! Main Mode with pre-shared keys (RFC 2409 §5, §5.4), both roles, as states that a
//! message moves forward by value:
//!
//! ```text
//! initiator                          responder
//! MM1 HDR, SA, VID…          ──▶     on_mm1     → Mm2Sent
//!            ◀──  MM2 HDR, SA, VID…
//! MM3 HDR, KE, Ni, NAT-D…    ──▶     on_mm3     → Mm4Sent   (DH here)
//!            ◀──  MM4 HDR, KE, Nr, NAT-D…
//! MM5 HDR*, IDii, HASH_I     ──▶     on_mm5     → Phase1Done
//!            ◀──  MM6 HDR*, IDir, HASH_R
//! ```
//! NAT-D and the NAT-T vendor IDs follow RFC 3947 (see `natd`); after MM4 both sides
//! float to UDP 4500 when a NAT was detected.

use std::net::{Ipv4Addr, SocketAddrV4};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::wire::isakmp::{
    ChainBuilder, Header, Identification, Notification, SaPayload, build_message, exchange,
    id_type, notify, payload, vendor,
};

use super::crypto::{DhGroup, DhSecret};
use super::keys::{Phase1Keys, decrypt_message, encrypt_message, initial_iv};
use super::message::Chain;
use super::natd::{self, NatStatus, NatT};
use super::proposal::{self, Algorithms, Phase1Choice};

/// Why a Main Mode message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MmError {
    /// A payload is missing or malformed.
    #[error("malformed: {0}")]
    Malformed(&'static str),
    /// No acceptable transform; the text names what was offered.
    #[error("no proposal chosen; offered {0}")]
    NoProposal(String),
    /// Bad DH public value.
    #[error("invalid key exchange payload")]
    BadKe,
    /// HASH_I/HASH_R did not verify with any key (or the message did not decrypt).
    #[error("authentication failed")]
    Auth,
    /// Crypto failure.
    #[error("crypto: {0}")]
    Crypto(String),
}

fn rand_bytes<const N: usize>() -> Result<[u8; N], MmError> {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| MmError::Crypto("no randomness".into()))?;
    Ok(b)
}

/// A fresh non-zero cookie (RFC 2408 §2.5.3: unique per peer; random is what every
/// implementation does).
pub fn new_cookie() -> Result<[u8; 8], MmError> {
    loop {
        let c = rand_bytes::<8>()?;
        if c != [0; 8] {
            return Ok(c);
        }
    }
}

fn header(icookie: [u8; 8], rcookie: [u8; 8]) -> Header {
    Header {
        initiator_cookie: icookie,
        responder_cookie: rcookie,
        next_payload: 0,
        version: 0x10,
        exchange: exchange::MAIN,
        flags: 0,
        message_id: 0,
        length: 0,
    }
}

/// What Phase 1 leaves for Quick Mode, informational exchanges and DPD.
pub struct Phase1Done {
    /// CKY-I.
    pub icookie: [u8; 8],
    /// CKY-R.
    pub rcookie: [u8; 8],
    /// The transform.
    pub choice: Phase1Choice,
    /// SKEYID_d/a/e and Ka.
    pub keys: Phase1Keys,
    /// The last CBC block of MM6: seeds every phase 2 IV.
    pub p1_last_block: Vec<u8>,
    /// The peer's identification.
    pub peer_id: Identification,
    /// NAT-D result.
    pub nat: NatStatus,
    /// NAT-T dialect both sides speak.
    pub natt: Option<NatT>,
    /// The peer sent the DPD vendor ID.
    pub peer_dpd: bool,
    /// The peer sent INITIAL-CONTACT.
    pub initial_contact: bool,
}

/// The responder after MM2.
pub struct Mm2Sent {
    /// CKY-I.
    pub icookie: [u8; 8],
    /// CKY-R.
    pub rcookie: [u8; 8],
    sai_b: Vec<u8>,
    /// The transform.
    pub choice: Phase1Choice,
    natt: Option<NatT>,
    peer_dpd: bool,
}

/// Responder: MM1 → MM2.
pub fn on_mm1(
    h: &Header,
    chain: &Chain<'_>,
    algs: &Algorithms,
    rcookie: [u8; 8],
) -> Result<(Mm2Sent, Vec<u8>), MmError> {
    let sai_b = chain
        .get(payload::SA)
        .ok_or(MmError::Malformed("MM1 without SA"))?;
    let sa = SaPayload::parse(sai_b).map_err(|_| MmError::Malformed("MM1 SA payload"))?;
    let sel = proposal::select_phase1(&sa, algs)
        .ok_or_else(|| MmError::NoProposal(proposal::describe_offer(&sa)))?;
    let natt = NatT::from_vids(chain.all(payload::VID));
    let peer_dpd = chain.all(payload::VID).any(|v| v == vendor::DPD);
    let mut b = ChainBuilder::new();
    b.push(payload::SA, &sel.reply);
    if let Some(n) = natt {
        b.push(payload::VID, n.vid());
    }
    b.push(payload::VID, &vendor::DPD);
    let msg = build_message(header(h.initiator_cookie, rcookie), &b);
    Ok((
        Mm2Sent {
            icookie: h.initiator_cookie,
            rcookie,
            sai_b: sai_b.to_vec(),
            choice: sel.choice,
            natt,
            peer_dpd,
        },
        msg,
    ))
}

/// Builds a NO-PROPOSAL-CHOSEN (or other) notification answer in the clear, as a
/// responder sends it to an unacceptable MM1.
pub fn notify_plain(icookie: [u8; 8], rcookie: [u8; 8], message_type: u16) -> Vec<u8> {
    let mut h = header(icookie, rcookie);
    h.exchange = exchange::INFORMATIONAL;
    let n = Notification {
        doi: proposal::DOI_IPSEC,
        protocol: proposal::PROTO_ISAKMP,
        spi: [icookie, rcookie].concat(),
        message_type,
        data: Vec::new(),
    };
    let mut b = ChainBuilder::new();
    b.push(payload::N, &n.emit());
    build_message(h, &b)
}

fn nonce(chain: &Chain<'_>) -> Result<Vec<u8>, MmError> {
    let n = chain
        .get(payload::NONCE)
        .ok_or(MmError::Malformed("no nonce"))?;
    // RFC 2409 §5: 8..=256 octets.
    if !(8..=256).contains(&n.len()) {
        return Err(MmError::Malformed("nonce length"));
    }
    Ok(n.to_vec())
}

fn ke(chain: &Chain<'_>, group: DhGroup) -> Result<Vec<u8>, MmError> {
    let k = chain.get(payload::KE).ok_or(MmError::Malformed("no KE"))?;
    if k.len() != group.public_len() {
        return Err(MmError::BadKe);
    }
    Ok(k.to_vec())
}

/// The responder after MM4: everything needed to check MM5 with one or more candidate
/// pre-shared keys.
pub struct Mm4Sent {
    icookie: [u8; 8],
    rcookie: [u8; 8],
    sai_b: Vec<u8>,
    /// The transform.
    pub choice: Phase1Choice,
    natt: Option<NatT>,
    peer_dpd: bool,
    gxi: Vec<u8>,
    gxr: Vec<u8>,
    ni: Vec<u8>,
    nr: Vec<u8>,
    gxy: Zeroizing<Vec<u8>>,
    /// NAT-D result.
    pub nat: NatStatus,
}

impl Mm2Sent {
    /// Responder: MM3 → MM4. This is where the Diffie-Hellman work happens; `secret`
    /// is our private value of the chosen group (the caller may reuse one briefly).
    pub fn on_mm3(
        self,
        chain: &Chain<'_>,
        local: SocketAddrV4,
        peer: SocketAddrV4,
        secret: &DhSecret,
    ) -> Result<(Mm4Sent, Vec<u8>), MmError> {
        if secret.group() != self.choice.group {
            return Err(MmError::Crypto("DH group mismatch".into()));
        }
        let gxi = ke(chain, self.choice.group)?;
        let ni = nonce(chain)?;
        let gxr = secret.public().to_vec();
        let gxy = secret.agree_ref(&gxi).map_err(|_| MmError::BadKe)?;
        let nr = rand_bytes::<32>()?.to_vec();
        let hash = self.choice.hash;
        let mut b = ChainBuilder::new();
        b.push(payload::KE, &gxr);
        b.push(payload::NONCE, &nr);
        let mut nat = NatStatus::default();
        if let Some(n) = self.natt {
            let received: Vec<&[u8]> = chain.all(n.natd_type()).collect();
            nat = natd::detect(hash, &self.icookie, &self.rcookie, &received, local, peer);
            for d in natd::natd_payloads(hash, &self.icookie, &self.rcookie, peer, local) {
                b.push(n.natd_type(), &d);
            }
        }
        let msg = build_message(header(self.icookie, self.rcookie), &b);
        Ok((
            Mm4Sent {
                icookie: self.icookie,
                rcookie: self.rcookie,
                sai_b: self.sai_b,
                choice: self.choice,
                natt: self.natt,
                peer_dpd: self.peer_dpd,
                gxi,
                gxr,
                ni,
                nr,
                gxy,
                nat,
            },
            msg,
        ))
    }
}

/// A pre-shared key to try on MM5, optionally bound to the identity the peer must
/// show (per-peer keys by ID).
pub struct PskCandidate<'a> {
    /// The key.
    pub psk: &'a [u8],
    /// The ID payload data the peer must send with this key (`None`: any).
    pub id: Option<&'a [u8]>,
}

/// Our identification: our IPv4 address, with the protocol and port the peer used in
/// its own (RFC 2407 §4.6.2 allows 0/0 or 17/500; Windows sends 17/500).
pub fn our_id(addr: Ipv4Addr, like: &Identification) -> Identification {
    Identification {
        id_type: id_type::IPV4_ADDR,
        protocol: like.protocol,
        port: like.port,
        data: addr.octets().to_vec(),
    }
}

impl Mm4Sent {
    /// Responder: MM5 → MM6. Each candidate key is tried in order; the first under
    /// which MM5 decrypts and HASH_I verifies (and the ID matches, if bound) wins.
    pub fn on_mm5(
        &self,
        msg: &[u8],
        candidates: &[PskCandidate<'_>],
        local: Ipv4Addr,
    ) -> Result<(Phase1Done, Vec<u8>), MmError> {
        let iv = initial_iv(self.choice.hash, self.choice.cipher, &self.gxi, &self.gxr);
        for cand in candidates {
            let keys = Phase1Keys::derive_psk(
                self.choice.hash,
                self.choice.cipher,
                cand.psk,
                &self.ni,
                &self.nr,
                &self.gxy,
                &self.icookie,
                &self.rcookie,
            );
            let Ok((h, plain, last)) = decrypt_message(self.choice.cipher, &keys.ka, &iv, msg)
            else {
                return Err(MmError::Malformed("MM5 length"));
            };
            let Ok(chain) = Chain::parse(h.next_payload, &plain) else {
                continue;
            };
            let (Some(idii_b), Some(hash_i)) = (chain.get(payload::ID), chain.get(payload::HASH))
            else {
                continue;
            };
            let want = keys.hash_i(
                &self.gxi,
                &self.gxr,
                &self.icookie,
                &self.rcookie,
                &self.sai_b,
                idii_b,
            );
            if !bool::from(want.as_slice().ct_eq(hash_i)) {
                continue;
            }
            let Ok(peer_id) = Identification::parse(idii_b) else {
                continue;
            };
            if cand
                .id
                .is_some_and(|id| !bool::from(id.ct_eq(&peer_id.data)))
            {
                continue;
            }
            let initial_contact = chain.all(payload::N).any(|n| {
                Notification::parse(n).is_ok_and(|n| n.message_type == notify::INITIAL_CONTACT)
            });
            let idir_b = our_id(local, &peer_id).emit();
            let hash_r = keys.hash_r(
                &self.gxr,
                &self.gxi,
                &self.rcookie,
                &self.icookie,
                &self.sai_b,
                &idir_b,
            );
            let mut b = ChainBuilder::new();
            b.push(payload::ID, &idir_b);
            b.push(payload::HASH, &hash_r);
            let (mm6, p1_last_block) = encrypt_message(
                self.choice.cipher,
                &keys.ka,
                &last,
                header(self.icookie, self.rcookie),
                &b,
            )
            .map_err(|e| MmError::Crypto(e.to_string()))?;
            return Ok((
                Phase1Done {
                    icookie: self.icookie,
                    rcookie: self.rcookie,
                    choice: self.choice,
                    keys,
                    p1_last_block,
                    peer_id,
                    nat: self.nat,
                    natt: self.natt,
                    peer_dpd: self.peer_dpd,
                    initial_contact,
                },
                mm6,
            ));
        }
        Err(MmError::Auth)
    }
}

// ---------------------------------------------------------------- initiator side

/// Initiator after MM1.
pub struct Mm1Sent {
    icookie: [u8; 8],
    sai_b: Vec<u8>,
}

/// Initiator: builds MM1 offering `offer` (in order), with the NAT-T and DPD vendor IDs.
pub fn start(offer: &[Phase1Choice]) -> Result<(Mm1Sent, Vec<u8>), MmError> {
    let icookie = new_cookie()?;
    let sai_b = proposal::offer_phase1(offer);
    let mut b = ChainBuilder::new();
    b.push(payload::SA, &sai_b);
    b.push(payload::VID, &vendor::NAT_T_RFC3947);
    b.push(payload::VID, &vendor::DPD);
    let msg = build_message(header(icookie, [0; 8]), &b);
    Ok((Mm1Sent { icookie, sai_b }, msg))
}

/// Initiator after MM3.
pub struct Mm3Sent {
    icookie: [u8; 8],
    rcookie: [u8; 8],
    sai_b: Vec<u8>,
    choice: Phase1Choice,
    natt: Option<NatT>,
    peer_dpd: bool,
    secret: DhSecret,
    ni: Vec<u8>,
}

impl Mm1Sent {
    /// CKY-I.
    pub fn icookie(&self) -> [u8; 8] {
        self.icookie
    }

    /// Initiator: MM2 → MM3.
    pub fn on_mm2(
        self,
        h: &Header,
        chain: &Chain<'_>,
        algs: &Algorithms,
        local: SocketAddrV4,
        peer: SocketAddrV4,
    ) -> Result<(Mm3Sent, Vec<u8>), MmError> {
        let sa = chain
            .get(payload::SA)
            .ok_or(MmError::Malformed("MM2 without SA"))?;
        let sa = SaPayload::parse(sa).map_err(|_| MmError::Malformed("MM2 SA payload"))?;
        let choice = proposal::accept_phase1_reply(&sa, algs)
            .ok_or_else(|| MmError::NoProposal(proposal::describe_offer(&sa)))?;
        let natt = NatT::from_vids(chain.all(payload::VID));
        let peer_dpd = chain.all(payload::VID).any(|v| v == vendor::DPD);
        let rcookie = h.responder_cookie;
        let secret = choice
            .group
            .generate()
            .map_err(|e| MmError::Crypto(e.to_string()))?;
        let ni = rand_bytes::<32>()?.to_vec();
        let mut b = ChainBuilder::new();
        b.push(payload::KE, secret.public());
        b.push(payload::NONCE, &ni);
        if let Some(n) = natt {
            for d in natd::natd_payloads(choice.hash, &self.icookie, &rcookie, peer, local) {
                b.push(n.natd_type(), &d);
            }
        }
        let msg = build_message(header(self.icookie, rcookie), &b);
        Ok((
            Mm3Sent {
                icookie: self.icookie,
                rcookie,
                sai_b: self.sai_b,
                choice,
                natt,
                peer_dpd,
                secret,
                ni,
            },
            msg,
        ))
    }
}

/// Initiator after MM5.
pub struct Mm5Sent {
    done: Phase1Done,
    gxi: Vec<u8>,
    gxr: Vec<u8>,
    sai_b: Vec<u8>,
    iv: Vec<u8>,
}

impl Mm3Sent {
    /// Initiator: MM4 → MM5. `float` in the result says whether to move to UDP 4500.
    pub fn on_mm4(
        self,
        chain: &Chain<'_>,
        psk: &[u8],
        local: SocketAddrV4,
        peer: SocketAddrV4,
        initial_contact: bool,
    ) -> Result<(Mm5Sent, Vec<u8>), MmError> {
        let gxr = ke(chain, self.choice.group)?;
        let nr = nonce(chain)?;
        let gxi = self.secret.public().to_vec();
        let gxy = self.secret.agree(&gxr).map_err(|_| MmError::BadKe)?;
        let mut nat = NatStatus::default();
        if let Some(n) = self.natt {
            let received: Vec<&[u8]> = chain.all(n.natd_type()).collect();
            nat = natd::detect(
                self.choice.hash,
                &self.icookie,
                &self.rcookie,
                &received,
                local,
                peer,
            );
        }
        let keys = Phase1Keys::derive_psk(
            self.choice.hash,
            self.choice.cipher,
            psk,
            &self.ni,
            &nr,
            &gxy,
            &self.icookie,
            &self.rcookie,
        );
        let id = Identification {
            id_type: id_type::IPV4_ADDR,
            protocol: 0,
            port: 0,
            data: local.ip().octets().to_vec(),
        };
        let idii_b = id.emit();
        let hash_i = keys.hash_i(
            &gxi,
            &gxr,
            &self.icookie,
            &self.rcookie,
            &self.sai_b,
            &idii_b,
        );
        let mut b = ChainBuilder::new();
        b.push(payload::ID, &idii_b);
        b.push(payload::HASH, &hash_i);
        if initial_contact {
            let n = Notification {
                doi: proposal::DOI_IPSEC,
                protocol: proposal::PROTO_ISAKMP,
                spi: [self.icookie, self.rcookie].concat(),
                message_type: notify::INITIAL_CONTACT,
                data: Vec::new(),
            };
            b.push(payload::N, &n.emit());
        }
        let iv = initial_iv(self.choice.hash, self.choice.cipher, &gxi, &gxr);
        let (msg, last) = encrypt_message(
            self.choice.cipher,
            &keys.ka,
            &iv,
            header(self.icookie, self.rcookie),
            &b,
        )
        .map_err(|e| MmError::Crypto(e.to_string()))?;
        Ok((
            Mm5Sent {
                done: Phase1Done {
                    icookie: self.icookie,
                    rcookie: self.rcookie,
                    choice: self.choice,
                    keys,
                    p1_last_block: Vec::new(),
                    peer_id: id,
                    nat,
                    natt: self.natt,
                    peer_dpd: self.peer_dpd,
                    initial_contact,
                },
                gxi,
                gxr,
                sai_b: self.sai_b,
                iv: last,
            },
            msg,
        ))
    }
}

impl Mm5Sent {
    /// NAT-D result (float to 4500 when `any()`).
    pub fn nat(&self) -> NatStatus {
        self.done.nat
    }

    /// The NAT-T dialect.
    pub fn natt(&self) -> Option<NatT> {
        self.done.natt
    }

    /// Initiator: MM6 → established.
    pub fn on_mm6(self, msg: &[u8]) -> Result<Phase1Done, MmError> {
        let d = &self.done;
        let (h, plain, last) = decrypt_message(d.choice.cipher, &d.keys.ka, &self.iv, msg)
            .map_err(|_| MmError::Malformed("MM6 length"))?;
        let chain = Chain::parse(h.next_payload, &plain).map_err(|_| MmError::Auth)?;
        let (Some(idir_b), Some(hash_r)) = (chain.get(payload::ID), chain.get(payload::HASH))
        else {
            return Err(MmError::Auth);
        };
        let want = d.keys.hash_r(
            &self.gxr,
            &self.gxi,
            &d.rcookie,
            &d.icookie,
            &self.sai_b,
            idir_b,
        );
        if !bool::from(want.as_slice().ct_eq(hash_r)) {
            return Err(MmError::Auth);
        }
        let peer_id = Identification::parse(idir_b).map_err(|_| MmError::Malformed("IDir"))?;
        let mut done = self.done;
        done.peer_id = peer_id;
        done.p1_last_block = last;
        Ok(done)
    }
}
