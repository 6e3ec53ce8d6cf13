//! Outbound: wrap a payload in ESP (RFC 4303 §2) and an outer IPv4 header, with UDP
//! encapsulation (RFC 3948 §2.1) when NAT was detected.
//!
//! The payload sits in a frame at `buf[range]`; the headers are written into the
//! headroom in front of it and padding, pad length and next header into the tailroom
//! behind it, so nothing moves. The ESP region is left ready for
//! [`crate::crypto::EspCipher::seal`] (or a batch seal): header and trailer written,
//! IV and ICV still to fill. The outer IPv4 header is final, since lengths do not
//! change when sealing.

use std::net::Ipv4Addr;
use std::ops::Range;

use crate::crypto::{ESP_HEADER_LEN, Transform};
use crate::wire::checksum;

use super::sa::{Encap, Sa};

/// Outer IPv4 header octets (no options).
pub const IPV4_HEADER_LEN: usize = 20;
/// UDP header octets.
pub const UDP_HEADER_LEN: usize = 8;
/// TTL of the packets the gateway originates.
pub const DEFAULT_TTL: u8 = 64;

/// Octets needed in front of a payload: outer IPv4, UDP (if encapsulated), ESP header, IV.
pub fn headroom(t: Transform, encap: Encap) -> usize {
    IPV4_HEADER_LEN + udp_len(encap) + ESP_HEADER_LEN + t.iv_len()
}

/// Octets needed behind a payload: the most padding, pad length, next header, ICV.
pub fn tailroom(t: Transform) -> usize {
    t.block_len() - 1 + 2 + t.icv_len()
}

fn udp_len(encap: Encap) -> usize {
    match encap {
        Encap::None => 0,
        Encap::Udp { .. } => UDP_HEADER_LEN,
    }
}

/// Where the encapsulated packet lies after [`encap`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encapsulated {
    /// The whole outer IPv4 packet.
    pub packet: Range<usize>,
    /// The ESP region to seal (SPI .. end of ICV).
    pub esp: Range<usize>,
}

/// Not enough room around the payload for the headers or the trailer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncapError {
    /// Fewer than [`headroom`] octets in front of the payload.
    Headroom,
    /// Fewer than [`tailroom`] octets behind the payload.
    Tailroom,
    /// The result would exceed 65 535 octets.
    TooLong,
}

/// Everything of the SA that the outer headers need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OuterParams {
    /// SPI on the wire.
    pub spi: u32,
    /// Transform (IV, block and ICV sizes).
    pub transform: Transform,
    /// Raw or UDP.
    pub encap: Encap,
    /// Outer source.
    pub src: Ipv4Addr,
    /// Outer destination.
    pub dst: Ipv4Addr,
}

impl OuterParams {
    /// The outer parameters of an outbound SA.
    pub fn of(sa: &Sa) -> OuterParams {
        OuterParams {
            spi: sa.spi(),
            transform: sa.transform(),
            encap: sa.encap(),
            src: sa.local(),
            dst: sa.remote(),
        }
    }
}

/// Wraps `buf[payload]` in ESP with sequence `seq` and next header `next_header`
/// (17 for the UDP datagram of transport mode, 4 for an IPv4 packet in tunnel mode),
/// then UDP/4500 if the SA is encapsulated, then IPv4 with identification `ident`.
pub fn encap(
    buf: &mut [u8],
    payload: Range<usize>,
    p: &OuterParams,
    seq: u64,
    next_header: u8,
    ident: u16,
) -> Result<Encapsulated, EncapError> {
    let t = p.transform;
    let front = headroom(t, p.encap);
    let start = payload
        .start
        .checked_sub(front)
        .ok_or(EncapError::Headroom)?;
    let plen = payload.len();
    let ct_len = t.padded_len(plen);
    let pad = ct_len - plen - 2;
    let end = payload.end + pad + 2 + t.icv_len();
    if end > buf.len() {
        return Err(EncapError::Tailroom);
    }
    let total = end - start;
    let total16 = u16::try_from(total).map_err(|_| EncapError::TooLong)?;

    // Trailer: 1, 2, 3, … then pad length and next header (RFC 4303 §2.4).
    let trailer = &mut buf[payload.end..payload.end + pad + 2];
    for (i, b) in trailer[..pad].iter_mut().enumerate() {
        *b = (i + 1) as u8;
    }
    trailer[pad] = pad as u8;
    trailer[pad + 1] = next_header;

    // ESP header: SPI and the low half of the sequence number.
    let esp_start = start + IPV4_HEADER_LEN + udp_len(p.encap);
    buf[esp_start..esp_start + 4].copy_from_slice(&p.spi.to_be_bytes());
    buf[esp_start + 4..esp_start + 8].copy_from_slice(&(seq as u32).to_be_bytes());

    // UDP/4500 with checksum 0 (RFC 3948 §2.1: SHOULD be zero for IPv4).
    let protocol = match p.encap {
        Encap::None => 50,
        Encap::Udp {
            local_port,
            remote_port,
        } => {
            let u = &mut buf[start + IPV4_HEADER_LEN..esp_start];
            u[0..2].copy_from_slice(&local_port.to_be_bytes());
            u[2..4].copy_from_slice(&remote_port.to_be_bytes());
            u[4..6].copy_from_slice(&((total - IPV4_HEADER_LEN) as u16).to_be_bytes());
            u[6..8].copy_from_slice(&[0, 0]);
            17
        }
    };
    write_ipv4_header(
        &mut buf[start..start + IPV4_HEADER_LEN],
        total16,
        ident,
        protocol,
        p.src,
        p.dst,
    );
    Ok(Encapsulated {
        packet: start..end,
        esp: esp_start..end,
    })
}

/// Writes a 20-octet IPv4 header (DF clear, TTL 64) with its checksum.
pub fn write_ipv4_header(
    h: &mut [u8],
    total_len: u16,
    ident: u16,
    protocol: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
) {
    h[0] = 0x45;
    h[1] = 0;
    h[2..4].copy_from_slice(&total_len.to_be_bytes());
    h[4..6].copy_from_slice(&ident.to_be_bytes());
    h[6..8].copy_from_slice(&[0, 0]);
    h[8] = DEFAULT_TTL;
    h[9] = protocol;
    h[10..12].copy_from_slice(&[0, 0]);
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let c = !checksum::fold(checksum::sum(&h[..20]));
    h[10..12].copy_from_slice(&c.to_be_bytes());
}
