//! The SA payload of the IPsec DOI (RFC 2407 §4.6.1) with its Proposal (RFC 2408 §3.5)
//! and Transform (§3.6) payloads and their data attributes (§3.3).
//!
//! ```text
//! SA body:        DOI (4) | Situation (4) | Proposal payloads…
//! Proposal:       generic header | Proposal # | Protocol-Id | SPI Size | # of Transforms | SPI | Transform payloads…
//! Transform:      generic header | Transform # | Transform-Id | RESERVED2 (2) | SA Attributes…
//! Attribute:      |A|  Type (15)  | Value (2)                 (AF = 1, basic)
//!                 |A|  Type (15)  | Length (2) | Value (Length) (AF = 0, variable)
//! ```
//!
//! Proposals and transforms are chained with the generic header: Next Payload is 2
//! (PROPOSAL) or 3 (TRANSFORM) for all but the last, which has 0. The "# of Transforms"
//! field is not trusted on receipt (the chain is), and [`SaPayload::emit`] writes the
//! real count. Parsing then emitting a well-formed SA body gives back the same octets.

use super::{Malformed, PAYLOAD_HEADER_LEN, payload, put_u16};
use crate::wire::{Error, read_u16, read_u32};

/// Domain of Interpretation of IPsec (RFC 2407 §4.2).
pub const DOI_IPSEC: u32 = 1;
/// Situation SIT_IDENTITY_ONLY (RFC 2407 §4.2), the only one without labelled-domain
/// fields after it.
pub const SIT_IDENTITY_ONLY: u32 = 1;
/// Transform ID KEY_IKE of a phase-1 (protocol ISAKMP) proposal (RFC 2407 §4.4.2).
pub const TRANSFORM_KEY_IKE: u8 = 1;

/// Protocol IDs of proposals, notifications and deletes (RFC 2407 §4.4.1).
pub mod protocol {
    pub const ISAKMP: u8 = 1;
    pub const AH: u8 = 2;
    pub const ESP: u8 = 3;
    pub const IPCOMP: u8 = 4;
}

/// Phase-1 attribute classes (RFC 2409 App. A).
pub mod p1attr {
    pub const ENCRYPTION: u16 = 1;
    pub const HASH: u16 = 2;
    pub const AUTH_METHOD: u16 = 3;
    pub const GROUP: u16 = 4;
    pub const LIFE_TYPE: u16 = 11;
    pub const LIFE_DURATION: u16 = 12;
    pub const PRF: u16 = 13;
    pub const KEY_LENGTH: u16 = 14;
}

/// Phase-1 attribute values (RFC 2409 App. A; AES: RFC 3602 / IANA; SHA-2: RFC 4868 /
/// IANA).
pub mod p1 {
    pub const ENC_DES: u16 = 1;
    pub const ENC_3DES: u16 = 5;
    pub const ENC_AES_CBC: u16 = 7;
    pub const HASH_MD5: u16 = 1;
    pub const HASH_SHA1: u16 = 2;
    pub const HASH_SHA2_256: u16 = 4;
    pub const HASH_SHA2_384: u16 = 5;
    pub const HASH_SHA2_512: u16 = 6;
    pub const AUTH_PSK: u16 = 1;
    pub const LIFE_SECONDS: u16 = 1;
    pub const LIFE_KILOBYTES: u16 = 2;
}

/// Phase-2 (IPsec DOI) attribute classes (RFC 2407 §4.5).
pub mod p2attr {
    pub const LIFE_TYPE: u16 = 1;
    pub const LIFE_DURATION: u16 = 2;
    pub const GROUP: u16 = 3;
    pub const ENCAPSULATION_MODE: u16 = 4;
    pub const AUTH_ALGORITHM: u16 = 5;
    pub const KEY_LENGTH: u16 = 6;
}

/// Phase-2 values: ESP transform IDs (RFC 2407 §4.4.4; AES: RFC 3602; GCM: RFC 4106
/// §8.1), authentication algorithms (§4.5; SHA-2: RFC 4868), encapsulation modes
/// (§4.5; UDP: RFC 3947 §5.1 and the draft-02/03 numbers).
pub mod p2 {
    pub const ESP_3DES: u8 = 3;
    pub const ESP_AES_CBC: u8 = 12;
    pub const ESP_AES_GCM_8: u8 = 18;
    pub const ESP_AES_GCM_12: u8 = 19;
    pub const ESP_AES_GCM_16: u8 = 20;
    pub const AUTH_HMAC_SHA1: u16 = 2;
    pub const AUTH_HMAC_SHA2_256: u16 = 5;
    pub const LIFE_SECONDS: u16 = 1;
    pub const LIFE_KILOBYTES: u16 = 2;
    pub const MODE_TUNNEL: u16 = 1;
    pub const MODE_TRANSPORT: u16 = 2;
    pub const MODE_UDP_TUNNEL_RFC: u16 = 3;
    pub const MODE_UDP_TRANSPORT_RFC: u16 = 4;
    pub const MODE_UDP_TUNNEL_DRAFT: u16 = 61443;
    pub const MODE_UDP_TRANSPORT_DRAFT: u16 = 61444;
}

/// An SA payload body (RFC 2407 §4.6.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaPayload {
    /// [`DOI_IPSEC`].
    pub doi: u32,
    /// [`SIT_IDENTITY_ONLY`].
    pub situation: u32,
    pub proposals: Vec<Proposal>,
}

/// A Proposal payload (RFC 2408 §3.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub number: u8,
    /// [`protocol::ISAKMP`] in phase 1, [`protocol::ESP`] in Quick Mode.
    pub protocol: u8,
    /// Empty in phase 1; the 4-octet inbound SPI of the sender for ESP.
    pub spi: Vec<u8>,
    pub transforms: Vec<Transform>,
}

/// A Transform payload (RFC 2408 §3.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transform {
    pub number: u8,
    /// [`TRANSFORM_KEY_IKE`] in phase 1, an ESP transform ID (see [`p2`]) in phase 2.
    pub id: u8,
    pub attributes: Vec<Attribute>,
}

/// A data attribute (RFC 2408 §3.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribute {
    /// Attribute type without the AF bit.
    pub kind: u16,
    pub value: AttrValue,
}

/// Value of a data attribute: basic (AF = 1, two octets) or variable (AF = 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttrValue {
    Basic(u16),
    Variable(Vec<u8>),
}

const AF: u16 = 0x8000;

impl Attribute {
    /// A basic (TV) attribute.
    pub fn basic(kind: u16, value: u16) -> Attribute {
        Attribute {
            kind,
            value: AttrValue::Basic(value),
        }
    }

    /// The value as a number: a basic value, or a variable one of up to 8 octets read
    /// big-endian (life durations may come either way, RFC 2407 §4.5).
    pub fn as_u64(&self) -> Option<u64> {
        match &self.value {
            AttrValue::Basic(value) => Some(u64::from(*value)),
            AttrValue::Variable(bytes) if bytes.len() <= 8 => Some(
                bytes
                    .iter()
                    .fold(0u64, |acc, &byte| (acc << 8) | u64::from(byte)),
            ),
            AttrValue::Variable(_) => None,
        }
    }

    fn emit(&self, out: &mut Vec<u8>) {
        let kind = self.kind & !AF;
        match &self.value {
            AttrValue::Basic(value) => {
                out.extend_from_slice(&(kind | AF).to_be_bytes());
                out.extend_from_slice(&value.to_be_bytes());
            }
            AttrValue::Variable(bytes) => {
                out.extend_from_slice(&kind.to_be_bytes());
                put_u16(out, bytes.len());
                out.extend_from_slice(bytes);
            }
        }
    }
}

/// Parses the attributes that fill `bytes`.
fn parse_attributes(mut bytes: &[u8]) -> Result<Vec<Attribute>, Malformed> {
    let err = |why| Malformed::new("data attribute", why);
    let mut attributes = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 4 {
            return Err(err(Error::Truncated));
        }
        let raw_kind = read_u16(&bytes[0..2]);
        let field = read_u16(&bytes[2..4]);
        let kind = raw_kind & !AF;
        if raw_kind & AF != 0 {
            attributes.push(Attribute::basic(kind, field));
            bytes = &bytes[4..];
        } else {
            let end = 4 + usize::from(field);
            let value = bytes.get(4..end).ok_or(err(Error::Truncated))?;
            attributes.push(Attribute {
                kind,
                value: AttrValue::Variable(value.to_vec()),
            });
            bytes = &bytes[end..];
        }
    }
    Ok(attributes)
}

impl Transform {
    /// The first attribute of class `kind`.
    pub fn attr(&self, kind: u16) -> Option<&Attribute> {
        self.attributes.iter().find(|attr| attr.kind == kind)
    }

    /// The numeric value of the first attribute of class `kind` (see
    /// [`Attribute::as_u64`]).
    pub fn attr_u64(&self, kind: u16) -> Option<u64> {
        self.attr(kind).and_then(Attribute::as_u64)
    }

    /// Parses a Transform payload body.
    pub fn parse(body: &[u8]) -> Result<Transform, Malformed> {
        if body.len() < 4 {
            return Err(Malformed::new("transform", Error::Truncated));
        }
        Ok(Transform {
            number: body[0],
            id: body[1],
            attributes: parse_attributes(&body[4..])?,
        })
    }

    /// The Transform payload body.
    pub fn emit(&self) -> Vec<u8> {
        let mut out = vec![self.number, self.id, 0, 0];
        for attribute in &self.attributes {
            attribute.emit(&mut out);
        }
        out
    }
}

/// Walks a chain of nested payloads that must all be of type `ty` (proposals in an SA,
/// transforms in a proposal), calling `each` with every body. Octets after the last
/// are ignored.
fn nested<'a>(
    what: &'static str,
    ty: u8,
    bytes: &'a [u8],
    mut each: impl FnMut(&'a [u8]) -> Result<(), Malformed>,
) -> Result<(), Malformed> {
    for item in super::payloads(ty, bytes) {
        let (found, body) = item.map_err(|malformed| Malformed::new(what, malformed.why))?;
        if found != ty {
            return Err(Malformed::new(what, Error::Malformed));
        }
        each(body)?;
    }
    Ok(())
}

/// Appends `items` as a chain of payloads of type `ty`.
fn emit_nested(out: &mut Vec<u8>, ty: u8, items: impl ExactSizeIterator<Item = Vec<u8>>) {
    let count = items.len();
    for (i, body) in items.enumerate() {
        let next = if i + 1 == count { payload::NONE } else { ty };
        out.extend_from_slice(&[next, 0]);
        put_u16(out, body.len() + PAYLOAD_HEADER_LEN);
        out.extend_from_slice(&body);
    }
}

impl Proposal {
    /// Parses a Proposal payload body.
    pub fn parse(body: &[u8]) -> Result<Proposal, Malformed> {
        let err = |why| Malformed::new("proposal", why);
        if body.len() < 4 {
            return Err(err(Error::Truncated));
        }
        let spi_end = 4 + usize::from(body[2]);
        let spi = body.get(4..spi_end).ok_or(err(Error::Truncated))?;
        let mut transforms = Vec::new();
        nested("transform", payload::TRANSFORM, &body[spi_end..], |body| {
            transforms.push(Transform::parse(body)?);
            Ok(())
        })?;
        Ok(Proposal {
            number: body[0],
            protocol: body[1],
            spi: spi.to_vec(),
            transforms,
        })
    }

    /// The Proposal payload body.
    pub fn emit(&self) -> Vec<u8> {
        let spi_len = u8::try_from(self.spi.len()).unwrap_or(u8::MAX);
        let count = u8::try_from(self.transforms.len()).unwrap_or(u8::MAX);
        let mut out = vec![self.number, self.protocol, spi_len, count];
        out.extend_from_slice(&self.spi[..usize::from(spi_len)]);
        emit_nested(
            &mut out,
            payload::TRANSFORM,
            self.transforms.iter().map(Transform::emit),
        );
        out
    }
}

impl SaPayload {
    /// Parses an SA payload body. A DOI other than IPsec or a situation other than
    /// SIT_IDENTITY_ONLY is [`Error::Unsupported`] (DOI-NOT-SUPPORTED,
    /// SITUATION-NOT-SUPPORTED).
    pub fn parse(body: &[u8]) -> Result<SaPayload, Malformed> {
        let err = |why| Malformed::new("SA", why);
        if body.len() < 8 {
            return Err(err(Error::Truncated));
        }
        let doi = read_u32(&body[0..4]);
        let situation = read_u32(&body[4..8]);
        if doi != DOI_IPSEC || situation != SIT_IDENTITY_ONLY {
            return Err(err(Error::Unsupported));
        }
        let mut proposals = Vec::new();
        nested("proposal", payload::PROPOSAL, &body[8..], |body| {
            proposals.push(Proposal::parse(body)?);
            Ok(())
        })?;
        Ok(SaPayload {
            doi,
            situation,
            proposals,
        })
    }

    /// The SA payload body.
    pub fn emit(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&self.doi.to_be_bytes());
        out.extend_from_slice(&self.situation.to_be_bytes());
        emit_nested(
            &mut out,
            payload::PROPOSAL,
            self.proposals.iter().map(Proposal::emit),
        );
        out
    }
}
