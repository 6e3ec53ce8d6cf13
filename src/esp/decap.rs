//! Inbound: take the outer IPv4 (and UDP/4500, RFC 3948) apart down to the ESP
//! region, and after the ICV checked, strip the ESP trailer (RFC 4303 §2.4–2.6).
//!
//! Pure functions over `&[u8]` and index ranges: nothing is copied or allocated; the
//! caller moves its window over the frame.

use std::net::Ipv4Addr;
use std::ops::Range;

use crate::crypto::Transform;
use crate::wire::{checksum, ipv4, udp_encap};

/// The outer headers of an ESP packet and where ESP lies in the frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outer {
    /// Outer source (the peer, after NAT).
    pub src: Ipv4Addr,
    /// Outer destination (us).
    pub dst: Ipv4Addr,
    /// UDP ports (source, destination) when ESP came in UDP/4500.
    pub udp: Option<(u16, u16)>,
    /// SPI | seq | IV | ciphertext | ICV.
    pub esp: Range<usize>,
    /// The SPI.
    pub spi: u32,
    /// The low 32 bits of the sequence number.
    pub seq_lo: u32,
}

/// What an outer IPv4 packet on the ESP/IKE ports carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Classified {
    /// ESP, raw or in UDP/4500: goes down the data path.
    Esp(Outer),
    /// IKE on 500, or on 4500 behind the non-ESP marker: goes up to the control thread.
    Ike {
        /// Peer address.
        src: Ipv4Addr,
        /// Our address.
        dst: Ipv4Addr,
        /// Peer port.
        sport: u16,
        /// Our port.
        dport: u16,
        /// The IKE message (after the marker on 4500).
        msg: Range<usize>,
    },
    /// A NAT-keepalive (one 0xFF octet on 4500, RFC 3948 §2.3): nothing to do.
    NatKeepalive,
    /// Plain UDP (e.g. L2TP on 1701 without IPsec) or another protocol: the caller
    /// decides (the data path refuses it when IPsec is required).
    Other {
        /// IP protocol number.
        protocol: u8,
        /// The IP payload.
        payload: Range<usize>,
    },
}

/// Why an inbound packet was dropped before or after decryption.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecapError {
    /// Truncated or inconsistent lengths.
    Malformed,
    /// Not IPv4.
    NotIpv4,
    /// IPv4 header checksum wrong.
    BadChecksum,
    /// A fragment (reassembly happens before the data path, not in it).
    Fragment,
    /// Padding bytes are not 1, 2, 3, … or the pad length does not fit.
    BadPadding,
    /// RFC 4303 §2.6 dummy packet (next header 59): dropped by design.
    Dummy,
}

/// Parses the outer IPv4 packet at `buf[range]` (Ethernet already stripped).
pub fn classify(buf: &[u8], range: Range<usize>) -> Result<Classified, DecapError> {
    let frame = buf.get(range.clone()).ok_or(DecapError::Malformed)?;
    let ip = ipv4::Packet::new_checked(frame).map_err(|e| match e {
        crate::wire::Error::BadVersion => DecapError::NotIpv4,
        _ => DecapError::Malformed,
    })?;
    if !ip.verify_checksum() {
        return Err(DecapError::BadChecksum);
    }
    if ip.more_frags() || ip.frag_offset() != 0 {
        return Err(DecapError::Fragment);
    }
    let src = ip.src_addr();
    let dst = ip.dst_addr();
    let hl = ip.header_len();
    let payload = range.start + hl..range.start + usize::from(ip.total_len());
    match ip.protocol() {
        ipv4::Protocol::ESP => esp_at(buf, payload, src, dst, None),
        ipv4::Protocol::UDP => {
            let udp = buf.get(payload.clone()).ok_or(DecapError::Malformed)?;
            if udp.len() < 8 {
                return Err(DecapError::Malformed);
            }
            let sport = u16::from_be_bytes([udp[0], udp[1]]);
            let dport = u16::from_be_bytes([udp[2], udp[3]]);
            let ulen = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
            if ulen < 8 || ulen > udp.len() {
                return Err(DecapError::Malformed);
            }
            let body = payload.start + 8..payload.start + ulen;
            match dport {
                udp_encap::NAT_T_PORT => {
                    match udp_encap::classify(&buf[body.clone()])
                        .map_err(|_| DecapError::Malformed)?
                    {
                        udp_encap::Encap4500::NatKeepalive => Ok(Classified::NatKeepalive),
                        udp_encap::Encap4500::Ike { offset } => Ok(Classified::Ike {
                            src,
                            dst,
                            sport,
                            dport,
                            msg: body.start + offset..body.end,
                        }),
                        udp_encap::Encap4500::Esp => {
                            esp_at(buf, body, src, dst, Some((sport, dport)))
                        }
                    }
                }
                udp_encap::IKE_PORT => Ok(Classified::Ike {
                    src,
                    dst,
                    sport,
                    dport,
                    msg: body,
                }),
                _ => Ok(Classified::Other {
                    protocol: ipv4::Protocol::UDP.0,
                    payload,
                }),
            }
        }
        p => Ok(Classified::Other {
            protocol: p.0,
            payload,
        }),
    }
}

fn esp_at(
    buf: &[u8],
    esp: Range<usize>,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    udp: Option<(u16, u16)>,
) -> Result<Classified, DecapError> {
    let b = buf.get(esp.clone()).ok_or(DecapError::Malformed)?;
    if b.len() < 8 {
        return Err(DecapError::Malformed);
    }
    let spi = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let seq_lo = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
    if spi == 0 {
        return Err(DecapError::Malformed);
    }
    Ok(Classified::Esp(Outer {
        src,
        dst,
        udp,
        esp,
        spi,
        seq_lo,
    }))
}

/// The decrypted payload and its next-header value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inner {
    /// IP protocol of the payload: 17 (UDP, transport mode L2TP) or 4 (IPv4, tunnel).
    pub next_header: u8,
    /// The payload without ESP header, IV, padding, trailer and ICV.
    pub payload: Range<usize>,
}

/// After [`crate::crypto::EspCipher::open`] succeeded on `buf[esp]`: checks the
/// padding (RFC 4303 §2.4: 1, 2, 3, …) and returns the payload range.
pub fn strip_trailer(buf: &[u8], esp: Range<usize>, t: Transform) -> Result<Inner, DecapError> {
    let start = esp.start + 8 + t.iv_len();
    let end = esp
        .end
        .checked_sub(t.icv_len())
        .ok_or(DecapError::Malformed)?;
    if end < start + 2 || end > buf.len() {
        return Err(DecapError::Malformed);
    }
    let next_header = buf[end - 1];
    let pad_len = usize::from(buf[end - 2]);
    let payload_end = end
        .checked_sub(2 + pad_len)
        .filter(|&e| e >= start)
        .ok_or(DecapError::BadPadding)?;
    let pad = &buf[payload_end..end - 2];
    if !pad
        .iter()
        .enumerate()
        .all(|(i, &b)| usize::from(b) == i + 1)
    {
        return Err(DecapError::BadPadding);
    }
    if next_header == 59 {
        return Err(DecapError::Dummy);
    }
    Ok(Inner {
        next_header,
        payload: start..payload_end,
    })
}

/// Ones-complement check of an IPv4 header, used by tests of the encap side.
pub fn ipv4_header_ok(hdr: &[u8]) -> bool {
    checksum::fold(checksum::sum(hdr)) == 0xffff
}
