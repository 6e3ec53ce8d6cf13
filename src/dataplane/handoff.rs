//! Handoff between workers: ownership is encoded in what the gateway allocates
//! (inbound SPI, L2TP tunnel id, inner address), so any worker can tell who owns a
//! packet, and packets that land on the wrong one travel to the owner over bounded
//! rings (VPP's handoff model; the exception, since RSS keeps a NAT-T client's IKE and
//! ESP on one queue).

use std::net::Ipv4Addr;

use crossbeam_channel::{Receiver, Sender};

/// Which way a handed-off packet is going.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandoffDir {
    /// An outer packet for the owner's decap path.
    Decap,
    /// An inner packet for the owner's encap path.
    Encap,
}

/// A packet that landed on a worker that does not own its SA or session, copied for
/// the owner (handoff is the exception: with NAT-T, RSS keeps a client on one queue).
#[derive(Debug)]
pub struct Handoff {
    /// Decap or encap.
    pub dir: HandoffDir,
    /// The packet (outer IPv4 for decap, inner IPv4 for encap).
    pub data: Vec<u8>,
}

/// The worker that owns an inner (pool) address: the control thread allocates
/// addresses so that this holds.
pub fn inner_owner(addr: Ipv4Addr, workers: usize) -> u16 {
    (u32::from(addr) as usize % workers.max(1)) as u16
}

/// The worker that owns an outer packet, from what the gateway allocated: the
/// inbound SPI of ESP, or the L2TP tunnel id of plain L2TP data. `None` when any
/// worker may take it (IKE and L2TP control go to the control thread).
pub fn outer_owner(
    b: &[u8],
    layout: &crate::esp::shard::SpiLayout,
    tunnel_bits: u8,
) -> Option<u16> {
    let ip = b;
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return None;
    }
    let hl = usize::from(ip[0] & 0x0f) * 4;
    let l4 = ip.get(hl..)?;
    match ip[9] {
        50 => {
            let spi = u32::from_be_bytes(l4.get(..4)?.try_into().ok()?);
            Some(layout.worker_of(spi))
        }
        17 => {
            let dport = u16::from_be_bytes(l4.get(2..4)?.try_into().ok()?);
            let body = l4.get(8..)?;
            match dport {
                4500 if body.len() >= 8 && body[..4] != [0, 0, 0, 0] => {
                    let spi = u32::from_be_bytes(body[..4].try_into().ok()?);
                    Some(layout.worker_of(spi))
                }
                1701 if body.len() >= 6 && body[0] & 0x80 == 0 && tunnel_bits > 0 => {
                    let off = if body[0] & 0x40 != 0 { 4 } else { 2 };
                    let tid = u16::from_be_bytes(body.get(off..off + 2)?.try_into().ok()?);
                    Some(tid >> (16 - u16::from(tunnel_bits)))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// A worker's ends of the handoff rings.
pub struct HandoffPorts {
    /// To each worker, by index (own slot unused).
    pub to: Vec<Sender<Handoff>>,
    /// Packets other workers handed to this one.
    pub from: Receiver<Handoff>,
}

impl HandoffPorts {
    /// Bounded rings between every pair of `n` workers.
    pub fn mesh(n: usize, capacity: usize) -> Vec<HandoffPorts> {
        let (txs, rxs): (Vec<_>, Vec<_>) =
            (0..n).map(|_| crossbeam_channel::bounded(capacity)).unzip();
        rxs.into_iter()
            .map(|from| HandoffPorts {
                to: txs.clone(),
                from,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::esp::shard::SpiLayout;

    #[test]
    fn owners_follow_what_the_gateway_allocated() {
        let layout = SpiLayout::DEFAULT;
        let spi = 3u32 << 26 | 0x1234;
        assert_eq!(layout.worker_of(spi), 3);
        let mut esp = vec![0u8; 40];
        crate::esp::encap::write_ipv4_header(
            &mut esp[..20],
            40,
            1,
            50,
            Ipv4Addr::LOCALHOST,
            Ipv4Addr::LOCALHOST,
        );
        esp[20..24].copy_from_slice(&spi.to_be_bytes());
        assert_eq!(outer_owner(&esp, &layout, 0), Some(3));
        let mut natt = vec![0u8; 48];
        crate::esp::encap::write_ipv4_header(
            &mut natt[..20],
            48,
            1,
            17,
            Ipv4Addr::LOCALHOST,
            Ipv4Addr::LOCALHOST,
        );
        natt[22..24].copy_from_slice(&4500u16.to_be_bytes());
        natt[28..32].copy_from_slice(&spi.to_be_bytes());
        assert_eq!(outer_owner(&natt, &layout, 0), Some(3));
        // The non-ESP marker (IKE) has no owner: it goes to the control thread.
        natt[28..32].copy_from_slice(&[0; 4]);
        assert_eq!(outer_owner(&natt, &layout, 0), None);
        // Plain L2TP data: the tunnel id's top bits.
        let mut l2 = vec![0u8; 48];
        crate::esp::encap::write_ipv4_header(
            &mut l2[..20],
            48,
            1,
            17,
            Ipv4Addr::LOCALHOST,
            Ipv4Addr::LOCALHOST,
        );
        l2[22..24].copy_from_slice(&1701u16.to_be_bytes());
        l2[28..30].copy_from_slice(&[0x00, 0x02]);
        l2[30..32].copy_from_slice(&0xc123u16.to_be_bytes());
        assert_eq!(outer_owner(&l2, &layout, 2), Some(3));
        l2[28] = 0xc8; // control: any worker
        assert_eq!(outer_owner(&l2, &layout, 2), None);
        assert_eq!(outer_owner(&[0u8; 10], &layout, 2), None);
        assert_eq!(inner_owner(Ipv4Addr::new(10, 99, 0, 11), 2), 1);
        assert_eq!(inner_owner(Ipv4Addr::new(10, 99, 0, 11), 1), 0);
        assert_eq!(crate::dataplane::runtime::tunnel_bits(1), 0);
        assert_eq!(crate::dataplane::runtime::tunnel_bits(2), 1);
        assert_eq!(crate::dataplane::runtime::tunnel_bits(3), 2);
        assert_eq!(crate::dataplane::runtime::tunnel_bits(4), 2);
    }
}
