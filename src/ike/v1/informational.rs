//! Informational exchanges under an established ISAKMP SA (RFC 2409 §5.7): one
//! encrypted message, HASH(1) = prf(SKEYID_a, M-ID | N/D), a fresh message id and its
//! own IV. They carry deletes (RFC 2408 §3.15), notifications and DPD (RFC 3706).

use subtle::ConstantTimeEq;

use crate::wire::isakmp::{
    ChainBuilder, Delete, Header, Notification, exchange, flags, notify, payload,
};

use super::keys::{decrypt_message, encrypt_message, phase2_iv};
use super::main_mode::Phase1Done;
use super::message::{Chain, with_hash_first};
use super::proposal::{DOI_IPSEC, PROTO_ESP, PROTO_ISAKMP};
use super::quick_mode::{QmError, new_message_id};

/// What an informational message said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Info {
    /// Delete the ISAKMP SA itself.
    DeleteIke,
    /// Delete ESP SAs; the SPIs are the sender's inbound ones (our outbound).
    DeleteEsp(Vec<u32>),
    /// DPD R-U-THERE with its sequence number.
    RUThere(u32),
    /// DPD R-U-THERE-ACK.
    RUThereAck(u32),
    /// INITIAL-CONTACT.
    InitialContact,
    /// Another notification (logged).
    Other(u16),
}

/// Builds an encrypted informational message with `payloads` (type, body).
pub fn build(p1: &Phase1Done, payloads: &[(u8, Vec<u8>)]) -> Result<Vec<u8>, QmError> {
    let mid = new_message_id()?;
    let mut rest = ChainBuilder::new();
    for (ty, body) in payloads {
        rest.push(*ty, body);
    }
    let hash = p1.keys.hash_a(mid, &[rest.bytes()]);
    let b = with_hash_first(&hash, &rest);
    let h = Header {
        initiator_cookie: p1.icookie,
        responder_cookie: p1.rcookie,
        next_payload: 0,
        version: 0x10,
        exchange: exchange::INFORMATIONAL,
        flags: flags::ENCRYPTION,
        message_id: mid,
        length: 0,
    };
    let iv = phase2_iv(p1.choice.hash, p1.choice.cipher, &p1.p1_last_block, mid);
    encrypt_message(p1.choice.cipher, &p1.keys.ka, &iv, h, &b)
        .map(|(m, _)| m)
        .map_err(|e| QmError::Crypto(e.to_string()))
}

fn cookies(p1: &Phase1Done) -> Vec<u8> {
    [p1.icookie, p1.rcookie].concat()
}

/// A DPD notification (RFC 3706 §5): protocol ISAKMP, SPI = the cookies, data = seq.
pub fn dpd(p1: &Phase1Done, ack: bool, seq: u32) -> Result<Vec<u8>, QmError> {
    let n = Notification {
        doi: DOI_IPSEC,
        protocol: PROTO_ISAKMP,
        spi: cookies(p1),
        message_type: if ack {
            notify::R_U_THERE_ACK
        } else {
            notify::R_U_THERE
        },
        data: seq.to_be_bytes().to_vec(),
    };
    build(p1, &[(payload::N, n.emit())])
}

/// Delete of the ISAKMP SA.
pub fn delete_ike(p1: &Phase1Done) -> Result<Vec<u8>, QmError> {
    let d = Delete {
        doi: DOI_IPSEC,
        protocol: PROTO_ISAKMP,
        spi_size: 16,
        spis: vec![cookies(p1)],
    };
    build(p1, &[(payload::D, d.emit())])
}

/// Delete of ESP SAs by our inbound SPIs.
pub fn delete_esp(p1: &Phase1Done, spis: &[u32]) -> Result<Vec<u8>, QmError> {
    let d = Delete {
        doi: DOI_IPSEC,
        protocol: PROTO_ESP,
        spi_size: 4,
        spis: spis.iter().map(|s| s.to_be_bytes().to_vec()).collect(),
    };
    build(p1, &[(payload::D, d.emit())])
}

/// Decrypts an informational message and checks HASH(1). Unknown payloads are
/// ignored; a message without a valid hash is refused (RFC 2409 §5.7: notifications
/// are only believed under the hash).
pub fn open(p1: &Phase1Done, msg: &[u8], mid: u32) -> Result<Vec<Info>, QmError> {
    let iv = phase2_iv(p1.choice.hash, p1.choice.cipher, &p1.p1_last_block, mid);
    let (h, plain, _) = decrypt_message(p1.choice.cipher, &p1.keys.ka, &iv, msg)
        .map_err(|_| QmError::Malformed("ciphertext length"))?;
    let chain = Chain::parse(h.next_payload, &plain).map_err(|_| QmError::Hash)?;
    if !chain.starts_with(payload::HASH) {
        return Err(QmError::Malformed("informational without HASH"));
    }
    let got = chain.get(payload::HASH).unwrap_or_default();
    let want = p1.keys.hash_a(mid, &[chain.after_first()]);
    if !bool::from(want.as_slice().ct_eq(got)) {
        return Err(QmError::Hash);
    }
    let mut out = Vec::new();
    for item in &chain.items[1..] {
        match item.ty {
            payload::D => {
                let Ok(d) = Delete::parse(item.body) else {
                    continue;
                };
                match d.protocol {
                    PROTO_ISAKMP => out.push(Info::DeleteIke),
                    PROTO_ESP => out.push(Info::DeleteEsp(
                        d.spis
                            .iter()
                            .filter_map(|s| <[u8; 4]>::try_from(s.as_slice()).ok())
                            .map(u32::from_be_bytes)
                            .collect(),
                    )),
                    _ => {}
                }
            }
            payload::N => {
                let Ok(n) = Notification::parse(item.body) else {
                    continue;
                };
                let seq = <[u8; 4]>::try_from(n.data.as_slice())
                    .ok()
                    .map(u32::from_be_bytes);
                out.push(match (n.message_type, seq) {
                    (notify::R_U_THERE, Some(s)) => Info::RUThere(s),
                    (notify::R_U_THERE_ACK, Some(s)) => Info::RUThereAck(s),
                    (notify::INITIAL_CONTACT, _) => Info::InitialContact,
                    (t, _) => Info::Other(t),
                });
            }
            _ => {}
        }
    }
    Ok(out)
}
