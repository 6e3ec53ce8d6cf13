//! The two header transformations of the socket backend, as pure functions over a
//! frame:
//!
//! - [`synthesize_udp`]: a UDP socket hands us only the payload, addresses and ports;
//!   we write the outer IPv4 header (RFC 791, valid header checksum) and UDP header
//!   (RFC 768, checksum 0 as IPv4 allows) in front of it, so the pipeline sees the
//!   packet exactly as the XDP backend would give it.
//! - [`parse_outbound`]: the pipeline emits whole outer IPv4 packets; a socket sends
//!   only what follows the headers, so we find the destination, the source port (which
//!   socket) and the payload.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::Range;

use crate::esp::encap::{IPV4_HEADER_LEN, UDP_HEADER_LEN, write_ipv4_header};

use super::stats::IoDrop;

/// Octets synthesized in front of a UDP payload.
pub const SYNTH_LEN: usize = IPV4_HEADER_LEN + UDP_HEADER_LEN;
/// The largest UDP payload that fits one IPv4 packet.
pub const MAX_UDP_PAYLOAD: usize = u16::MAX as usize - SYNTH_LEN;

/// IPv4 protocol number of UDP.
const PROTO_UDP: u8 = 17;
/// IPv4 protocol number of ESP.
const PROTO_ESP: u8 = 50;

/// Writes IPv4 + UDP headers in front of the datagram payload at `buf[payload]`:
/// `src` → `dst`, identification 0, TTL 64, UDP checksum 0. Returns the whole packet's
/// range.
pub fn synthesize_udp(
    buf: &mut [u8],
    payload: Range<usize>,
    src: SocketAddrV4,
    dst: SocketAddrV4,
) -> Result<Range<usize>, IoDrop> {
    if payload.start > payload.end || payload.end > buf.len() {
        return Err(IoDrop::Malformed);
    }
    let start = payload
        .start
        .checked_sub(SYNTH_LEN)
        .ok_or(IoDrop::Malformed)?;
    let total = u16::try_from(payload.end - start).map_err(|_| IoDrop::TooLong)?;
    let udp_len = total - IPV4_HEADER_LEN as u16;
    write_ipv4_header(
        &mut buf[start..start + IPV4_HEADER_LEN],
        total,
        0,
        PROTO_UDP,
        *src.ip(),
        *dst.ip(),
    );
    let u = &mut buf[start + IPV4_HEADER_LEN..payload.start];
    u[0..2].copy_from_slice(&src.port().to_be_bytes());
    u[2..4].copy_from_slice(&dst.port().to_be_bytes());
    u[4..6].copy_from_slice(&udp_len.to_be_bytes());
    u[6..8].copy_from_slice(&[0, 0]);
    Ok(start..payload.end)
}

/// What a socket must do with one outer IPv4 packet of the pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outbound {
    /// Send `payload` from the UDP socket of port `sport` to `dst`.
    Udp {
        /// IPv4 source address (ours).
        src: Ipv4Addr,
        /// UDP source port: selects the socket.
        sport: u16,
        /// Destination address and port.
        dst: SocketAddrV4,
        /// The UDP payload in the frame.
        payload: Range<usize>,
    },
    /// Send `payload` (SPI onwards) through the raw ESP socket to `dst`.
    Esp {
        /// IPv4 source address (ours).
        src: Ipv4Addr,
        /// Destination address.
        dst: Ipv4Addr,
        /// The IPv4 payload in the frame.
        payload: Range<usize>,
    },
}

/// Reads the outer IPv4 (and UDP) header of the packet at `buf[r]`. Never panics:
/// anything that is not a whole unfragmented IPv4 UDP or ESP packet is an [`IoDrop`].
pub fn parse_outbound(buf: &[u8], r: Range<usize>) -> Result<Outbound, IoDrop> {
    let ip = buf.get(r.clone()).ok_or(IoDrop::Malformed)?;
    let Some(&b0) = ip.first() else {
        return Err(IoDrop::Malformed);
    };
    if b0 >> 4 != 4 {
        return Err(IoDrop::NotIpv4);
    }
    if ip.len() < IPV4_HEADER_LEN {
        return Err(IoDrop::Malformed);
    }
    let hl = usize::from(b0 & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if hl < IPV4_HEADER_LEN || total < hl || total > ip.len() {
        return Err(IoDrop::Malformed);
    }
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    if frag & 0x3fff != 0 {
        return Err(IoDrop::Fragment);
    }
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let payload = r.start + hl..r.start + total;
    match ip[9] {
        PROTO_UDP => {
            let u = &ip[hl..total];
            if u.len() < UDP_HEADER_LEN {
                return Err(IoDrop::Malformed);
            }
            let sport = u16::from_be_bytes([u[0], u[1]]);
            let dport = u16::from_be_bytes([u[2], u[3]]);
            let ulen = usize::from(u16::from_be_bytes([u[4], u[5]]));
            if ulen < UDP_HEADER_LEN || ulen > u.len() || dport == 0 {
                return Err(IoDrop::Malformed);
            }
            Ok(Outbound::Udp {
                src,
                sport,
                dst: SocketAddrV4::new(dst, dport),
                payload: payload.start + UDP_HEADER_LEN..payload.start + ulen,
            })
        }
        PROTO_ESP => Ok(Outbound::Esp { src, dst, payload }),
        _ => Err(IoDrop::Protocol),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::esp::decap::{Classified, classify};
    use crate::wire::checksum;

    const A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
    const B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

    #[test]
    fn synthesized_header_is_what_the_pipeline_classifies() {
        let mut f = vec![0u8; 2048];
        // IKE behind the non-ESP marker on 4500.
        let mut body = [0u8; 4 + 28];
        body[4..]
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = i as u8 + 1);
        f[256..256 + body.len()].copy_from_slice(&body);
        let r = synthesize_udp(
            &mut f,
            256..256 + body.len(),
            SocketAddrV4::new(A, 40001),
            SocketAddrV4::new(B, 4500),
        )
        .unwrap();
        assert_eq!(r, 256 - 28..256 + body.len());
        let ip = &f[r.clone()];
        assert_eq!(ip[0], 0x45);
        assert_eq!(usize::from(u16::from_be_bytes([ip[2], ip[3]])), r.len());
        assert_eq!(ip[9], 17);
        assert_eq!(checksum::fold(checksum::sum(&ip[..20])), 0xffff);
        assert_eq!(&ip[12..16], &A.octets());
        assert_eq!(&ip[16..20], &B.octets());
        assert_eq!(u16::from_be_bytes([ip[20], ip[21]]), 40001);
        assert_eq!(u16::from_be_bytes([ip[22], ip[23]]), 4500);
        assert_eq!(
            usize::from(u16::from_be_bytes([ip[24], ip[25]])),
            8 + body.len()
        );
        assert_eq!(&ip[26..28], &[0, 0]);
        match classify(&f, r).unwrap() {
            Classified::Ike {
                src,
                dst,
                sport,
                dport,
                msg,
            } => {
                assert_eq!((src, dst, sport, dport), (A, B, 40001, 4500));
                assert_eq!(&f[msg], &body[4..]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn empty_datagram_and_keepalive() {
        let mut f = vec![0u8; 300];
        let r = synthesize_udp(
            &mut f,
            256..256,
            SocketAddrV4::new(A, 1),
            SocketAddrV4::new(B, 1701),
        )
        .unwrap();
        assert_eq!(r.len(), 28);
        f[256] = 0xff;
        let r = synthesize_udp(
            &mut f,
            256..257,
            SocketAddrV4::new(A, 4500),
            SocketAddrV4::new(B, 4500),
        )
        .unwrap();
        assert_eq!(classify(&f, r).unwrap(), Classified::NatKeepalive);
    }

    #[test]
    fn synthesize_refuses_missing_room() {
        let mut f = vec![0u8; 100];
        let s = SocketAddrV4::new(A, 1);
        assert_eq!(synthesize_udp(&mut f, 10..20, s, s), Err(IoDrop::Malformed));
        assert_eq!(
            synthesize_udp(&mut f, 50..200, s, s),
            Err(IoDrop::Malformed)
        );
        #[allow(clippy::reversed_empty_ranges)]
        let backwards = 60..50;
        assert_eq!(
            synthesize_udp(&mut f, backwards, s, s),
            Err(IoDrop::Malformed)
        );
        let mut big = vec![0u8; 70_000];
        assert_eq!(
            synthesize_udp(&mut big, 28..66_000, s, s),
            Err(IoDrop::TooLong)
        );
    }

    #[test]
    fn outbound_udp_and_esp_round_trip() {
        let mut f = vec![0u8; 400];
        f[100..110].copy_from_slice(b"0123456789");
        let r = synthesize_udp(
            &mut f,
            100..110,
            SocketAddrV4::new(B, 4500),
            SocketAddrV4::new(A, 40001),
        )
        .unwrap();
        assert_eq!(
            parse_outbound(&f, r.clone()),
            Ok(Outbound::Udp {
                src: B,
                sport: 4500,
                dst: SocketAddrV4::new(A, 40001),
                payload: 100..110,
            })
        );
        // The same bytes as ESP.
        f[r.start + 9] = 50;
        assert_eq!(
            parse_outbound(&f, r.clone()),
            Ok(Outbound::Esp {
                src: B,
                dst: A,
                payload: r.start + 20..r.end,
            })
        );
        // Trailing octets beyond total length are ignored.
        let r2 = r.start..r.end + 5;
        assert!(
            matches!(parse_outbound(&f, r2), Ok(Outbound::Esp { payload, .. }) if payload.end == r.end)
        );
    }

    #[test]
    fn outbound_refusals() {
        let mut f = vec![0u8; 200];
        let r = synthesize_udp(
            &mut f,
            100..120,
            SocketAddrV4::new(B, 500),
            SocketAddrV4::new(A, 500),
        )
        .unwrap();
        let check = |edit: &dyn Fn(&mut [u8]), want: IoDrop| {
            let mut g = f.clone();
            edit(&mut g[r.clone()]);
            assert_eq!(parse_outbound(&g, r.clone()), Err(want));
        };
        check(&|p| p[0] = 0x60, IoDrop::NotIpv4);
        check(&|p| p[0] = 0x44, IoDrop::Malformed);
        check(
            &|p| p[2..4].copy_from_slice(&500u16.to_be_bytes()),
            IoDrop::Malformed,
        );
        check(&|p| p[6] = 0x20, IoDrop::Fragment);
        check(&|p| p[7] = 1, IoDrop::Fragment);
        check(&|p| p[9] = 6, IoDrop::Protocol);
        check(
            &|p| p[24..26].copy_from_slice(&7u16.to_be_bytes()),
            IoDrop::Malformed,
        );
        check(
            &|p| p[24..26].copy_from_slice(&99u16.to_be_bytes()),
            IoDrop::Malformed,
        );
        check(&|p| p[22..24].copy_from_slice(&[0, 0]), IoDrop::Malformed);
        assert_eq!(parse_outbound(&f, 0..0), Err(IoDrop::Malformed));
        assert_eq!(parse_outbound(&f, 190..300), Err(IoDrop::Malformed));
        assert_eq!(
            parse_outbound(&f, r.start..r.start + 10),
            Err(IoDrop::Malformed)
        );
    }

    #[test]
    fn parse_outbound_never_panics() {
        // Every length and a spread of first octets over a mostly random buffer.
        let mut state = 0x1234_5678u32;
        let mut buf = vec![0u8; 128];
        for round in 0..2000 {
            for b in buf.iter_mut() {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                *b = state as u8;
            }
            buf[0] = 0x40 | (round as u8 & 0x0f);
            let len = round % buf.len();
            let _ = parse_outbound(&buf, 0..len);
            let _ = parse_outbound(&buf, len..buf.len() + round % 3);
        }
    }
}
