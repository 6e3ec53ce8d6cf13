//! TCP MSS clamping of SYNs crossing the tunnel (the classic L2TP/IPsec breakage:
//! endpoints advertise an MSS for a 1500-octet path, the tunnel carries less, and
//! path MTU discovery is often blocked). The checksum is updated incrementally
//! (RFC 1624).

use crate::wire::checksum;

/// Clamps the MSS option of a TCP SYN in the IPv4 packet `ip` to `max_mss`. Returns
/// whether the packet was changed. Anything that is not a well-formed IPv4/TCP SYN with
/// an MSS option above the limit is left alone.
pub fn clamp(ip: &mut [u8], max_mss: u16) -> bool {
    if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 6 {
        return false;
    }
    // Only first fragments carry the TCP header.
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0 {
        return false;
    }
    let hl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
    if hl < 20 || total < hl + 20 {
        return false;
    }
    let tcp = &mut ip[hl..total];
    let flags = tcp[13];
    if flags & 0x02 == 0 {
        return false; // not a SYN
    }
    let doff = usize::from(tcp[12] >> 4) * 4;
    if doff < 20 || doff > tcp.len() {
        return false;
    }
    let mut i = 20;
    while i < doff {
        match tcp[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let Some(&len) = tcp.get(i + 1) else { break };
                let len = usize::from(len);
                if len < 2 || i + len > doff {
                    break;
                }
                if kind == 2 && len == 4 {
                    let mss = u16::from_be_bytes([tcp[i + 2], tcp[i + 3]]);
                    if mss <= max_mss {
                        return false;
                    }
                    tcp[i + 2..i + 4].copy_from_slice(&max_mss.to_be_bytes());
                    let old = u16::from_be_bytes([tcp[16], tcp[17]]);
                    // MSS sits at an even offset in the options only if i is even; the
                    // RFC 1624 update works on the aligned 16-bit word either way.
                    let new = if i % 2 == 0 {
                        checksum::update(old, mss, max_mss)
                    } else {
                        let w_old = u16::from_be_bytes([tcp[i + 1], (mss >> 8) as u8]);
                        let w_new = u16::from_be_bytes([tcp[i + 1], (max_mss >> 8) as u8]);
                        let w2_old = u16::from_be_bytes([(mss & 0xff) as u8, tcp[i + 4]]);
                        let w2_new = u16::from_be_bytes([(max_mss & 0xff) as u8, tcp[i + 4]]);
                        checksum::update(checksum::update(old, w_old, w_new), w2_old, w2_new)
                    };
                    tcp[16..18].copy_from_slice(&new.to_be_bytes());
                    return true;
                }
                i += len;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum as ck;
    use std::net::Ipv4Addr;

    fn syn(mss: u16, nops: usize) -> Vec<u8> {
        let opt_len = (nops + 4).div_ceil(4) * 4;
        let total = 20 + 20 + opt_len;
        let mut p = vec![0u8; total];
        crate::esp::encap::write_ipv4_header(
            &mut p[..20],
            total as u16,
            1,
            6,
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
        );
        let t = &mut p[20..];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&443u16.to_be_bytes());
        t[12] = (((20 + opt_len) / 4) << 4) as u8;
        t[13] = 0x02;
        for b in &mut t[20..20 + nops] {
            *b = 1;
        }
        t[20 + nops..24 + nops].copy_from_slice(&[2, 4, (mss >> 8) as u8, mss as u8]);
        let c = tcp_checksum(&p);
        p[36..38].copy_from_slice(&c.to_be_bytes());
        p
    }

    fn tcp_checksum(p: &[u8]) -> u16 {
        let mut q = p.to_vec();
        q[36] = 0;
        q[37] = 0;
        let seg = &q[20..];
        let s = ck::combine(
            ck::pseudo_header_v4(
                Ipv4Addr::new(10, 0, 0, 1),
                Ipv4Addr::new(10, 0, 0, 2),
                6,
                seg.len() as u16,
            ),
            ck::sum(seg),
        );
        !ck::fold(s)
    }

    #[test]
    fn clamps_and_keeps_the_checksum_valid_at_any_alignment() {
        for nops in 0..4 {
            let mut p = syn(1460, nops);
            assert!(clamp(&mut p, 1360), "nops {nops}");
            let at = 40 + nops + 2;
            assert_eq!(u16::from_be_bytes([p[at], p[at + 1]]), 1360);
            assert_eq!(
                u16::from_be_bytes([p[36], p[37]]),
                tcp_checksum(&p),
                "nops {nops}"
            );
        }
    }

    #[test]
    fn leaves_small_mss_non_syn_and_garbage_alone() {
        let mut p = syn(1200, 0);
        let before = p.clone();
        assert!(!clamp(&mut p, 1360));
        assert_eq!(p, before);
        let mut p = syn(1460, 0);
        p[33] = 0x10; // ACK only
        assert!(!clamp(&mut p, 1360));
        for len in 0..60 {
            let mut g = vec![0x46u8; len];
            let _ = clamp(&mut g, 1000);
        }
    }
}
