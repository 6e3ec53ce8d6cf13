//! The outside interface over AF_XDP for one worker: one socket on the worker's
//! queue, Ethernet framing, and the next hop's MAC address — learned from the frames
//! peers send us (replies go back the way requests came), else from the kernel's
//! neighbour table.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, BorrowedFd};

use crate::dataplane::chain::{Pkt, Verdict};
use crate::dataplane::stats::{DropReason, Stats};
use crate::dataplane::worker::{Outside, SendResult};

use super::xsk::{XDP_PACKET_HEADROOM, XdpFrame, Xsk};

const ETH_LEN: usize = 14;

/// One worker's AF_XDP port.
pub struct XdpPort {
    xsk: Xsk,
    mac: [u8; 6],
    neigh: HashMap<Ipv4Addr, [u8; 6]>,
    rx: Vec<(XdpFrame, usize, usize)>,
    tx: Vec<(XdpFrame, usize, usize)>,
    /// Drops counted here, moved into the worker's counters by `take_drops`.
    pending: [u64; crate::dataplane::stats::DropReason::COUNT],
    seen_invalid: u64,
}

/// The MAC address of an interface, asked in the calling thread's namespace.
pub fn interface_mac(name: &str) -> Option<[u8; 6]> {
    nix::ifaddrs::getifaddrs().ok()?.find_map(|ifa| {
        if ifa.interface_name != name {
            return None;
        }
        let link = ifa.address?.as_link_addr()?.addr()?;
        Some(link)
    })
}

/// Entries of the kernel's ARP table for this thread's namespace.
pub fn kernel_neighbours() -> HashMap<Ipv4Addr, [u8; 6]> {
    let text = std::fs::read_to_string("/proc/thread-self/net/arp").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let ip: Ipv4Addr = f.first()?.parse().ok()?;
            let mac = parse_mac(f.get(3)?)?;
            (mac != [0; 6]).then_some((ip, mac))
        })
        .collect()
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut m {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(m)
}

impl XdpPort {
    /// A port over a bound socket; `mac` is the interface's address.
    pub fn new(xsk: Xsk, mac: [u8; 6]) -> XdpPort {
        XdpPort {
            xsk,
            mac,
            neigh: kernel_neighbours(),
            rx: Vec::with_capacity(256),
            tx: Vec::with_capacity(256),
            pending: [0; crate::dataplane::stats::DropReason::COUNT],
            seen_invalid: 0,
        }
    }

    /// The socket (statistics, registration in the XSKMAP).
    pub fn xsk(&self) -> &Xsk {
        &self.xsk
    }

    fn next_hop_mac(&mut self, dst: Ipv4Addr) -> Option<[u8; 6]> {
        if let Some(m) = self.neigh.get(&dst) {
            return Some(*m);
        }
        // Not learned yet: refresh from the kernel once.
        self.neigh.extend(kernel_neighbours());
        self.neigh.get(&dst).copied()
    }
}

impl Outside for XdpPort {
    type Frame = XdpFrame;

    fn recv(&mut self, out: &mut Vec<Pkt<XdpFrame>>, max: usize) -> usize {
        self.rx.clear();
        self.xsk.rx_batch(&mut self.rx, max);
        let mut n = 0;
        for (f, s, e) in self.rx.drain(..) {
            let b = f.as_ref();
            let ipv4 = e >= s + ETH_LEN + 20 && b[s + 12..s + 14] == [0x08, 0x00];
            if !ipv4 {
                self.pending[DropReason::NotIpv4 as usize] += 1;
                self.xsk.recycle(f);
                continue;
            }
            // Learn the sender's MAC for its source address: replies go back to it.
            let src = Ipv4Addr::new(b[s + 26], b[s + 27], b[s + 28], b[s + 29]);
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&b[s + 6..s + 12]);
            self.neigh.insert(src, mac);
            out.push(Pkt::new(f, s + ETH_LEN, e));
            n += 1;
        }
        n
    }

    fn send(&mut self, pkts: &mut Vec<Pkt<XdpFrame>>) -> SendResult {
        let mut r = SendResult::default();
        for mut p in pkts.drain(..) {
            if p.verdict != Verdict::Forward {
                self.xsk.recycle(p.buf);
                continue;
            }
            if p.start < ETH_LEN || p.end < p.start + 20 {
                self.pending[DropReason::NoRoom as usize] += 1;
                self.xsk.recycle(p.buf);
                continue;
            }
            let b = p.buf.as_ref();
            let dst = Ipv4Addr::new(
                b[p.start + 16],
                b[p.start + 17],
                b[p.start + 18],
                b[p.start + 19],
            );
            let Some(dmac) = self.next_hop_mac(dst) else {
                r.no_neighbour += 1;
                self.xsk.recycle(p.buf);
                continue;
            };
            let s = p.start - ETH_LEN;
            let h = &mut p.buf.as_mut()[s..s + ETH_LEN];
            h[0..6].copy_from_slice(&dmac);
            h[6..12].copy_from_slice(&self.mac);
            h[12..14].copy_from_slice(&[0x08, 0x00]);
            self.tx.push((p.buf, s, p.end));
        }
        let want = self.tx.len() as u64;
        r.sent = self.xsk.tx_batch(self.tx.drain(..)) as u64;
        r.tx_full = want - r.sent;
        r
    }

    fn alloc(&mut self) -> Option<XdpFrame> {
        self.xsk.alloc()
    }

    fn recycle(&mut self, f: XdpFrame) {
        self.xsk.recycle(f);
    }

    fn headroom(&self) -> usize {
        XDP_PACKET_HEADROOM
    }

    fn fds(&self) -> Vec<BorrowedFd<'_>> {
        vec![self.xsk.as_fd()]
    }

    fn take_drops(&mut self, stats: &mut Stats) {
        self.drain_drops(stats);
    }
}

impl XdpPort {
    fn drain_drops(&mut self, stats: &mut Stats) {
        let invalid = self.xsk.counters.rx_invalid;
        self.pending[DropReason::Malformed as usize] += invalid - self.seen_invalid;
        self.seen_invalid = invalid;
        for (a, b) in stats.drops.iter_mut().zip(self.pending.iter_mut()) {
            *a += *b;
            *b = 0;
        }
    }
}

/// The inside interface over AF_XDP (router mode): inner IPv4 packets to and from the
/// next hop on the inside network. It has its own UMEM, so packets are copied between
/// it and the outside port's frames (one copy per packet, the price of two UMEMs).
pub struct XdpInside {
    port: XdpPort,
    // Scratch kept across batches (no allocation on the data path).
    rx: Vec<Pkt<XdpFrame>>,
    tx: Vec<Pkt<XdpFrame>>,
}

impl XdpInside {
    /// The socket (statistics).
    pub fn xsk(&self) -> &Xsk {
        &self.port.xsk
    }

    /// An inside port over a bound socket on the inside interface.
    pub fn new(xsk: Xsk, mac: [u8; 6]) -> XdpInside {
        XdpInside {
            port: XdpPort::new(xsk, mac),
            rx: Vec::with_capacity(256),
            tx: Vec::with_capacity(256),
        }
    }
}

impl<F: AsRef<[u8]> + AsMut<[u8]>> crate::dataplane::worker::Inside<F> for XdpInside {
    fn recv(
        &mut self,
        frames: &mut dyn crate::dataplane::worker::FrameSource<F>,
        out: &mut Vec<Pkt<F>>,
        max: usize,
    ) -> usize {
        let headroom = frames.headroom();
        let mut own = std::mem::take(&mut self.rx);
        self.port.recv(&mut own, max);
        let mut n = 0;
        for p in own.drain(..) {
            let len = p.end - p.start;
            if let Some(mut f) = frames.alloc() {
                let b = f.as_mut();
                if headroom + len <= b.len() {
                    b[headroom..headroom + len].copy_from_slice(&p.buf.as_ref()[p.start..p.end]);
                    out.push(Pkt::new(f, headroom, headroom + len));
                    n += 1;
                } else {
                    self.port.pending[DropReason::TooLong as usize] += 1;
                    frames.recycle(f);
                }
            } else {
                self.port.pending[DropReason::NoRoom as usize] += 1;
            }
            self.port.recycle(p.buf);
        }
        self.rx = own;
        n
    }

    fn send(&mut self, pkts: &[Pkt<F>]) -> usize {
        let mut batch = std::mem::take(&mut self.tx);
        for p in pkts.iter().filter(|p| p.verdict == Verdict::Forward) {
            let Some(mut f) = self.port.alloc() else {
                break;
            };
            let len = p.end - p.start;
            let h = XDP_PACKET_HEADROOM;
            if h + len > f.as_ref().len() {
                self.port.recycle(f);
                continue;
            }
            f.as_mut()[h..h + len].copy_from_slice(&p.buf.as_ref()[p.start..p.end]);
            let mut q = Pkt::new(f, h, h + len);
            q.verdict = Verdict::Forward;
            batch.push(q);
        }
        let r = self.port.send(&mut batch);
        self.tx = batch;
        self.port.pending[DropReason::TxFull as usize] += r.tx_full;
        self.port.pending[DropReason::NoNeighbour as usize] += r.no_neighbour;
        r.sent as usize
    }

    fn fds(&self) -> Vec<BorrowedFd<'_>> {
        vec![self.port.xsk.as_fd()]
    }

    fn take_drops(&mut self, stats: &mut Stats) {
        self.port.drain_drops(stats);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_macs() {
        assert_eq!(
            parse_mac("02:00:0a:0b:0c:ff"),
            Some([2, 0, 10, 11, 12, 255])
        );
        assert_eq!(parse_mac("02:00:0a:0b:0c"), None);
        assert_eq!(parse_mac("02:00:0a:0b:0c:ff:01"), None);
        assert_eq!(parse_mac("zz:00:0a:0b:0c:ff"), None);
    }
}
