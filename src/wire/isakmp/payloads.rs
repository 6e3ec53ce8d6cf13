//! Identification (RFC 2407 §4.6.2), Notification (RFC 2408 §3.14) and Delete (§3.15)
//! payload bodies, and the Vendor IDs this gateway recognises.

use super::{Malformed, put_u16};
use crate::wire::{Error, read_u16, read_u32};

/// Identification types of the IPsec DOI (RFC 2407 §4.6.2.1).
pub mod id_type {
    pub const IPV4_ADDR: u8 = 1;
    pub const FQDN: u8 = 2;
    pub const USER_FQDN: u8 = 3;
    pub const IPV4_ADDR_SUBNET: u8 = 4;
    pub const IPV4_ADDR_RANGE: u8 = 7;
    pub const KEY_ID: u8 = 11;
}

/// An Identification payload body (RFC 2407 §4.6.2): in Main Mode the peer's identity
/// (protocol and port 0 or UDP/500), in Quick Mode the traffic selector.
///
/// ```text
/// ID Type (1) | Protocol ID (1) | Port (2) | Identification Data…
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identification {
    pub id_type: u8,
    /// IP protocol (17 for L2TP's UDP), 0 for any.
    pub protocol: u8,
    /// 0 for any.
    pub port: u16,
    pub data: Vec<u8>,
}

impl Identification {
    /// Parses an ID payload body.
    pub fn parse(body: &[u8]) -> Result<Identification, Malformed> {
        if body.len() < 4 {
            return Err(Malformed::new("ID", Error::Truncated));
        }
        Ok(Identification {
            id_type: body[0],
            protocol: body[1],
            port: read_u16(&body[2..4]),
            data: body[4..].to_vec(),
        })
    }

    /// The ID payload body (`IDii_b` / `IDir_b` of RFC 2409 §5).
    pub fn emit(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.data.len());
        out.extend_from_slice(&[self.id_type, self.protocol]);
        out.extend_from_slice(&self.port.to_be_bytes());
        out.extend_from_slice(&self.data);
        out
    }
}

/// A Notification payload body (RFC 2408 §3.14).
///
/// ```text
/// DOI (4) | Protocol-ID (1) | SPI Size (1) | Notify Message Type (2) | SPI | Notification Data
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    pub doi: u32,
    pub protocol: u8,
    /// For phase 1 status notifications the 16 octets CKY-I | CKY-R (as strongSwan and
    /// Windows send INITIAL-CONTACT and R-U-THERE), else an ESP SPI or empty.
    pub spi: Vec<u8>,
    /// See [`super::notify`].
    pub message_type: u16,
    pub data: Vec<u8>,
}

impl Notification {
    /// Parses a Notification payload body.
    pub fn parse(body: &[u8]) -> Result<Notification, Malformed> {
        let err = |why| Malformed::new("N", why);
        if body.len() < 8 {
            return Err(err(Error::Truncated));
        }
        let spi_end = 8 + usize::from(body[5]);
        let spi = body.get(8..spi_end).ok_or(err(Error::Truncated))?;
        Ok(Notification {
            doi: read_u32(&body[0..4]),
            protocol: body[4],
            spi: spi.to_vec(),
            message_type: read_u16(&body[6..8]),
            data: body[spi_end..].to_vec(),
        })
    }

    /// The Notification payload body. An SPI over 255 octets is cut to 255.
    pub fn emit(&self) -> Vec<u8> {
        let spi_len = u8::try_from(self.spi.len()).unwrap_or(u8::MAX);
        let mut out = Vec::with_capacity(8 + self.spi.len() + self.data.len());
        out.extend_from_slice(&self.doi.to_be_bytes());
        out.extend_from_slice(&[self.protocol, spi_len]);
        out.extend_from_slice(&self.message_type.to_be_bytes());
        out.extend_from_slice(&self.spi[..usize::from(spi_len)]);
        out.extend_from_slice(&self.data);
        out
    }
}

/// A Delete payload body (RFC 2408 §3.15).
///
/// ```text
/// DOI (4) | Protocol-Id (1) | SPI Size (1) | # of SPIs (2) | SPIs (# × SPI Size)
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delete {
    pub doi: u32,
    pub protocol: u8,
    /// 4 for ESP; 16 (CKY-I | CKY-R) for the ISAKMP SA.
    pub spi_size: u8,
    /// Each `spi_size` octets.
    pub spis: Vec<Vec<u8>>,
}

impl Delete {
    /// Parses a Delete payload body; the SPIs must fill it exactly.
    pub fn parse(body: &[u8]) -> Result<Delete, Malformed> {
        let err = |why| Malformed::new("D", why);
        if body.len() < 8 {
            return Err(err(Error::Truncated));
        }
        let spi_size = body[5];
        let count = usize::from(read_u16(&body[6..8]));
        let spis = &body[8..];
        if spis.len() != count * usize::from(spi_size) {
            return Err(err(Error::BadLength));
        }
        let spis = if spi_size == 0 {
            vec![Vec::new(); count]
        } else {
            spis.chunks_exact(usize::from(spi_size))
                .map(<[u8]>::to_vec)
                .collect()
        };
        Ok(Delete {
            doi: read_u32(&body[0..4]),
            protocol: body[4],
            spi_size,
            spis,
        })
    }

    /// The Delete payload body. Every SPI is written as `spi_size` octets (cut or
    /// zero-extended if a caller built one of another length).
    pub fn emit(&self) -> Vec<u8> {
        let size = usize::from(self.spi_size);
        let mut out = Vec::with_capacity(8 + self.spis.len() * size);
        out.extend_from_slice(&self.doi.to_be_bytes());
        out.extend_from_slice(&[self.protocol, self.spi_size]);
        put_u16(&mut out, self.spis.len());
        for spi in &self.spis {
            let start = out.len();
            out.resize(start + size, 0);
            let n = spi.len().min(size);
            out[start..start + n].copy_from_slice(&spi[..n]);
        }
        out
    }
}

/// Vendor ID payload bodies (16-octet MD5 hashes unless noted), as in strongSwan's
/// `isakmp_vendor.c`; the NAT-T ones are MD5 of the RFC / draft name (RFC 3947 §3.1).
pub mod vendor {
    /// MD5("RFC 3947").
    pub const NAT_T_RFC3947: [u8; 16] =
        *b"\x4a\x13\x1c\x81\x07\x03\x58\x45\x5c\x57\x28\xf2\x0e\x95\x45\x2f";
    /// MD5("draft-ietf-ipsec-nat-t-ike-02").
    pub const NAT_T_DRAFT_02: [u8; 16] =
        *b"\xcd\x60\x46\x43\x35\xdf\x21\xf8\x7c\xfd\xb2\xfc\x68\xb6\xa4\x48";
    /// MD5("draft-ietf-ipsec-nat-t-ike-02\n"): the draft's own typo, sent by many.
    pub const NAT_T_DRAFT_02_N: [u8; 16] =
        *b"\x90\xcb\x80\x91\x3e\xbb\x69\x6e\x08\x63\x81\xb5\xec\x42\x7b\x1f";
    /// MD5("draft-ietf-ipsec-nat-t-ike-03").
    pub const NAT_T_DRAFT_03: [u8; 16] =
        *b"\x7d\x94\x19\xa6\x53\x10\xca\x6f\x2c\x17\x9d\x92\x15\x52\x9d\x56";
    /// MD5("draft-ietf-ipsec-nat-t-ike-08"), sent by macOS/iOS beside RFC 3947; not a
    /// variant this gateway speaks (drafts 04–08 are not recognised by strongSwan
    /// either).
    pub const NAT_T_DRAFT_08: [u8; 16] =
        *b"\x8f\x8d\x83\x82\x6d\x24\x6b\x6f\xc7\xa8\xa6\xa4\x28\xc1\x1d\xe8";
    /// Dead Peer Detection version 1.0 (RFC 3706 §5.2).
    pub const DPD: [u8; 16] = *b"\xaf\xca\xd7\x13\x68\xa1\xf1\xc9\x6b\x86\x96\xfc\x77\x57\x01\x00";
    /// MD5("MS NT5 ISAKMPOAKLEY"): the 16-octet prefix of the 20-octet VID Windows
    /// sends (a 4-octet version follows).
    pub const MS_NT5_ISAKMPOAKLEY: [u8; 16] =
        *b"\x1e\x2b\x51\x69\x05\x99\x1c\x7d\x7c\x96\xfc\xbf\xb5\x87\xe4\x61";
    /// IKE fragmentation (proprietary, Windows and Cisco): the 16-octet prefix; 4
    /// octets of capabilities may follow.
    pub const FRAGMENTATION: [u8; 16] =
        *b"\x40\x48\xb7\xd5\x6e\xbc\xe8\x85\x25\xe7\xde\x7f\x00\xd6\xc2\xd3";
    /// XAUTH: the first 8 octets of MD5("draft-ietf-ipsra-isakmp-xauth-06.txt").
    pub const XAUTH: [u8; 8] = *b"\x09\x00\x26\x89\xdf\xd6\xb7\x12";
}

/// Which NAT traversal encoding a peer announced: RFC 3947 (payloads 20/21,
/// encapsulation modes 3/4) or draft-ietf-ipsec-nat-t-ike-02/03 (payloads 130/131,
/// modes 61443/61444).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NatTVariant {
    Rfc,
    Draft,
}

/// The NAT-T variant a Vendor ID body announces, if any: RFC 3947, or drafts 02, 02\n
/// and 03. Peers send several (Windows and macOS send RFC 3947 and drafts): answer in
/// RFC form if any of them is [`NatTVariant::Rfc`], as strongSwan does.
pub fn is_nat_t(vid: &[u8]) -> Option<NatTVariant> {
    if vid == vendor::NAT_T_RFC3947 {
        Some(NatTVariant::Rfc)
    } else if [
        vendor::NAT_T_DRAFT_02,
        vendor::NAT_T_DRAFT_02_N,
        vendor::NAT_T_DRAFT_03,
    ]
    .iter()
    .any(|known| vid == known)
    {
        Some(NatTVariant::Draft)
    } else {
        None
    }
}
