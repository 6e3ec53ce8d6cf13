//! The whole data path of one worker, one call per batch (VPP's vector model):
//!
//! - [`Shard::decap_batch`]: IPv4 / [UDP 4500] / ESP / UDP 1701 / L2TP / PPP / IPv4 →
//!   the inner IPv4 packet, in place. Stages over the batch: parse + SA lookup +
//!   replay check, one crypto call per run of packets of the same SA, then replay
//!   update, trailer, L2TP and PPP.
//! - [`Shard::encap_batch`]: inner IPv4 → PPP / L2TP / UDP 1701 / ESP / [UDP 4500] /
//!   IPv4, written into the frame's headroom and tailroom, one seal call per run.
//!
//! Every packet ends with a [`Verdict`]: forwarded, handed to the control thread,
//! consumed (NAT keepalive) or dropped with a [`DropReason`] that is also counted.

use std::net::Ipv4Addr;
use std::ops::Range;

use crate::crypto::{CryptoError, EspPacket};
use crate::esp::decap::{self, Classified, DecapError};
use crate::esp::encap::{self, EncapError, OuterParams};
use crate::esp::sa::{Encap, Mode, Sa, SaError, TunnelAddrs};
use crate::esp::shard::SpiTable;
use crate::wire::{l2tp, ppp, udp_encap};

use super::session::{OutboundId, OutboundTable, Session, SessionTable};
use super::stats::{DropReason, Stats};

/// What the control thread receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlKind {
    /// An IKE message (UDP 500, or 4500 after the non-ESP marker).
    Ike,
    /// An L2TP control message (T bit set), after ESP was removed.
    L2tpControl,
    /// A PPP frame that is not IPv4 (LCP, authentication, IPCP, …).
    PppControl,
}

/// The outcome of a packet after a batch call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not processed yet (or still in flight between stages).
    Pending,
    /// Ready to leave: `start..end` is the inner IPv4 packet (decap) or the outer IPv4
    /// packet (encap).
    Forward,
    /// `start..end` is a control message for the control thread.
    ToControl(ControlKind),
    /// Handled; nothing to send (NAT keepalive).
    Consumed,
    /// Dropped and counted.
    Drop(DropReason),
}

/// One frame in a batch. `buf` is the frame (a UMEM frame or an owned buffer);
/// `start..end` is the packet the current stage sees. Decap leaves the inner packet
/// there; encap needs headroom in front of `start` and tailroom after `end`.
#[derive(Debug)]
pub struct Pkt<B> {
    /// The frame.
    pub buf: B,
    /// First octet of the packet.
    pub start: usize,
    /// One past its last octet.
    pub end: usize,
    /// Outcome.
    pub verdict: Verdict,
    /// Outer source address (decap: the peer after NAT).
    pub outer_src: Ipv4Addr,
    /// Outer UDP source port when ESP/IKE came over UDP.
    pub outer_sport: u16,
    /// Outer destination address (decap: our address the peer sent to).
    pub outer_dst: Ipv4Addr,
    /// Outer UDP destination port (decap: 500 or 4500 for IKE, 4500 for NAT-T ESP,
    /// 1701 for plain L2TP, 0 for raw ESP).
    pub outer_dport: u16,
    /// SPI of the SA that carried the packet (decap: inbound SPI; 0 without IPsec).
    pub spi: u32,
    /// Index of the L2TP session in the worker's table, once known.
    pub session: Option<u32>,
    seq: u64,
    esp: Range<usize>,
    out_sa: Option<OutboundId>,
    inner_len: usize,
}

impl<B> Pkt<B> {
    /// A frame whose packet is `buf[start..end]`.
    pub fn new(buf: B, start: usize, end: usize) -> Pkt<B> {
        Pkt {
            buf,
            start,
            end,
            verdict: Verdict::Pending,
            outer_src: Ipv4Addr::UNSPECIFIED,
            outer_sport: 0,
            outer_dst: Ipv4Addr::UNSPECIFIED,
            outer_dport: 0,
            spi: 0,
            session: None,
            seq: 0,
            esp: 0..0,
            out_sa: None,
            inner_len: 0,
        }
    }

    /// Resets the per-batch state so the frame can be reused.
    pub fn reset(&mut self, start: usize, end: usize) {
        self.start = start;
        self.end = end;
        self.verdict = Verdict::Pending;
        self.session = None;
        self.spi = 0;
        self.out_sa = None;
    }

    fn pending(&self) -> bool {
        self.verdict == Verdict::Pending
    }
}

impl<B: AsMut<[u8]>> EspPacket for Pkt<B> {
    fn esp_mut(&mut self) -> &mut [u8] {
        let r = self.esp.clone();
        &mut self.buf.as_mut()[r]
    }
    fn seq(&self) -> u64 {
        self.seq
    }
    fn failed(&self) -> bool {
        !self.pending()
    }
    fn fail(&mut self, err: CryptoError) {
        self.verdict = Verdict::Drop(match err {
            CryptoError::Icv => DropReason::Icv,
            _ => DropReason::Malformed,
        });
    }
}

/// What one worker owns: its inbound SAs (by our SPI), outbound SAs, sessions and
/// counters. Installed and removed only through the control thread's commands.
pub struct Shard {
    /// Inbound SAs by SPI.
    pub inbound: SpiTable<Sa>,
    /// Outbound SAs.
    pub outbound: OutboundTable<Sa>,
    /// L2TP sessions.
    pub sessions: SessionTable,
    /// Counters.
    pub stats: Stats,
    /// Refuse L2TP that did not arrive under an SA.
    pub require_ipsec: bool,
    /// Clamp the MSS of TCP SYNs in both directions to this (PPP MTU − 40).
    pub mss_clamp: Option<u16>,
    ident: u16,
}

impl Shard {
    /// An empty shard for worker `worker`.
    pub fn new(inbound: SpiTable<Sa>, require_ipsec: bool) -> Shard {
        Shard {
            inbound,
            outbound: OutboundTable::default(),
            sessions: SessionTable::new(),
            stats: Stats::default(),
            require_ipsec,
            mss_clamp: None,
            ident: 1,
        }
    }

    fn set_drop<B>(stats: &mut Stats, p: &mut Pkt<B>, r: DropReason) {
        stats.drop(r);
        p.verdict = Verdict::Drop(r);
    }

    /// Decapsulates a batch of outer IPv4 packets in place.
    pub fn decap_batch<B: AsRef<[u8]> + AsMut<[u8]>>(&mut self, pkts: &mut [Pkt<B>]) {
        // Stage 1: outer headers, SA lookup, replay check.
        for p in pkts.iter_mut().filter(|p| p.pending()) {
            self.stats.decap_in += 1;
            match decap::classify(p.buf.as_ref(), p.start..p.end) {
                Ok(Classified::Esp(o)) => {
                    p.outer_src = o.src;
                    p.outer_sport = o.udp.map_or(0, |u| u.0);
                    p.outer_dst = o.dst;
                    p.outer_dport = o.udp.map_or(0, |u| u.1);
                    p.spi = o.spi;
                    let Some(sa) = self.inbound.get(o.spi) else {
                        Self::set_drop(&mut self.stats, p, DropReason::UnknownSpi);
                        continue;
                    };
                    let encap_ok = match (sa.encap(), o.udp) {
                        (Encap::None, None) => true,
                        (Encap::Udp { remote_port, .. }, Some((sport, _))) => sport == remote_port,
                        _ => false,
                    };
                    if !encap_ok || sa.remote() != o.src {
                        Self::set_drop(&mut self.stats, p, DropReason::SaAddressMismatch);
                        continue;
                    }
                    if sa.volume_exhausted() {
                        Self::set_drop(&mut self.stats, p, DropReason::SaExpired);
                        continue;
                    }
                    match sa.check_replay(o.seq_lo) {
                        Ok(seq) => {
                            p.seq = seq;
                            p.esp = o.esp;
                        }
                        Err(_) => Self::set_drop(&mut self.stats, p, DropReason::Replay),
                    }
                }
                Ok(Classified::Ike {
                    src,
                    dst,
                    sport,
                    dport,
                    msg,
                }) => {
                    p.outer_src = src;
                    p.outer_sport = sport;
                    p.outer_dst = dst;
                    p.outer_dport = dport;
                    p.start = msg.start;
                    p.end = msg.end;
                    p.verdict = Verdict::ToControl(ControlKind::Ike);
                    self.stats.to_control += 1;
                }
                Ok(Classified::NatKeepalive) => {
                    p.verdict = Verdict::Consumed;
                    self.stats.nat_keepalives += 1;
                }
                Ok(Classified::Other { protocol, payload }) => {
                    self.plain_udp(p, protocol, payload);
                }
                Err(e) => {
                    let r = match e {
                        DecapError::NotIpv4 => DropReason::NotIpv4,
                        DecapError::BadChecksum => DropReason::BadChecksum,
                        DecapError::Fragment => DropReason::Fragment,
                        _ => DropReason::Malformed,
                    };
                    Self::set_drop(&mut self.stats, p, r);
                }
            }
        }

        // Stage 2: one crypto call per run of consecutive packets of the same SA.
        let mut i = 0;
        while i < pkts.len() {
            if !pkts[i].pending() || pkts[i].esp.is_empty() {
                i += 1;
                continue;
            }
            let spi = pkts[i].spi;
            let mut j = i + 1;
            while j < pkts.len() && (pkts[j].spi == spi || !pkts[j].pending()) {
                j += 1;
            }
            if let Some(sa) = self.inbound.get(spi) {
                sa.cipher().open_batch(&mut pkts[i..j]);
            }
            i = j;
        }

        // Stage 3: replay update, trailer, then L2TP / PPP / inner IPv4.
        for p in pkts.iter_mut() {
            match p.verdict {
                Verdict::Drop(r @ DropReason::Icv) | Verdict::Drop(r @ DropReason::Malformed)
                    if !p.esp.is_empty() =>
                {
                    // Failed in the crypto stage: count it here.
                    self.stats.drop(r);
                    p.esp = 0..0;
                    continue;
                }
                Verdict::Pending if !p.esp.is_empty() => {}
                _ => continue,
            }
            let esp = std::mem::replace(&mut p.esp, 0..0);
            let Some(sa) = self.inbound.get_mut(p.spi) else {
                Self::set_drop(&mut self.stats, p, DropReason::UnknownSpi);
                continue;
            };
            if let Err(e) = sa.accept_replay(p.seq) {
                let r = match e {
                    SaError::Replay(_) => DropReason::Replay,
                    _ => DropReason::Malformed,
                };
                Self::set_drop(&mut self.stats, p, r);
                continue;
            }
            sa.count(esp.len());
            let transform = sa.transform();
            let mode = sa.mode();
            let inner = match decap::strip_trailer(p.buf.as_ref(), esp, transform) {
                Ok(i) => i,
                Err(e) => {
                    let r = match e {
                        DecapError::BadPadding => DropReason::BadPadding,
                        DecapError::Dummy => DropReason::Dummy,
                        _ => DropReason::Malformed,
                    };
                    Self::set_drop(&mut self.stats, p, r);
                    continue;
                }
            };
            match (mode, inner.next_header) {
                (Mode::Transport, 17) => {
                    self.l2tp_in(p, inner.payload, true);
                }
                (Mode::Tunnel, 4) => self.tunnel_inner(p, inner.payload),
                _ => Self::set_drop(&mut self.stats, p, DropReason::BadNextHeader),
            }
        }
        if let Some(mss) = self.mss_clamp {
            for p in pkts.iter_mut().filter(|p| p.verdict == Verdict::Forward) {
                let (s, e) = (p.start, p.end);
                super::mss::clamp(&mut p.buf.as_mut()[s..e], mss);
            }
        }
    }

    /// UDP that is not ESP or IKE: plain L2TP when allowed.
    fn plain_udp<B: AsRef<[u8]>>(&mut self, p: &mut Pkt<B>, protocol: u8, udp: Range<usize>) {
        if protocol != 17 {
            Self::set_drop(&mut self.stats, p, DropReason::NotL2tp);
            return;
        }
        if self.require_ipsec {
            Self::set_drop(&mut self.stats, p, DropReason::PlainL2tpRefused);
            return;
        }
        let b = p.buf.as_ref();
        if let Some(h) = b.get(udp.start..udp.start + 4) {
            p.outer_src = ip_src(b, p.start);
            p.outer_sport = u16::from_be_bytes([h[0], h[1]]);
            p.outer_dst = ip_dst(b, p.start);
            p.outer_dport = u16::from_be_bytes([h[2], h[3]]);
        }
        p.spi = 0;
        self.l2tp_in(p, udp, false);
    }

    /// Tunnel mode: the payload is an inner IPv4 packet; L2TP inside it (UDP to 1701,
    /// host-to-host tunnel mode as strongSwan's kernel-libipsec does it) goes through
    /// the L2TP path, and its inner addresses are learned by the inbound SA for the way
    /// back; anything else is forwarded as it is.
    fn tunnel_inner<B: AsRef<[u8]>>(&mut self, p: &mut Pkt<B>, ip: Range<usize>) {
        let b = p.buf.as_ref();
        let Some((hl, total, proto)) = inner_ipv4(b, ip.clone()) else {
            Self::set_drop(&mut self.stats, p, DropReason::InnerMalformed);
            return;
        };
        let ip = ip.start..ip.start + total;
        let is_l2tp = proto == 17
            && b.get(ip.start + hl + 2..ip.start + hl + 4)
                == Some(&udp_encap::L2TP_PORT.to_be_bytes()[..]);
        if is_l2tp {
            let addrs = TunnelAddrs {
                local: ip_dst(b, ip.start),
                peer: ip_src(b, ip.start),
            };
            if let Some(sa) = self.inbound.get_mut(p.spi) {
                sa.learn_tunnel_addrs(addrs);
            }
            self.l2tp_in(p, ip.start + hl..ip.end, true);
        } else {
            p.start = ip.start;
            p.end = ip.end;
            p.verdict = Verdict::Forward;
            self.stats.decap_out += 1;
            self.stats.decap_out_bytes += (ip.end - ip.start) as u64;
        }
    }

    /// `udp` is a UDP datagram that should carry L2TP; `ipsec` says whether it came
    /// out of an SA (`p.spi`).
    fn l2tp_in<B: AsRef<[u8]>>(&mut self, p: &mut Pkt<B>, udp: Range<usize>, ipsec: bool) {
        let b = p.buf.as_ref();
        let Some(u) = b.get(udp.clone()).filter(|u| u.len() >= 8) else {
            Self::set_drop(&mut self.stats, p, DropReason::Malformed);
            return;
        };
        let dport = u16::from_be_bytes([u[2], u[3]]);
        let ulen = usize::from(u16::from_be_bytes([u[4], u[5]]));
        if dport != udp_encap::L2TP_PORT {
            Self::set_drop(&mut self.stats, p, DropReason::NotL2tp);
            return;
        }
        if ulen < 8 || ulen > u.len() {
            Self::set_drop(&mut self.stats, p, DropReason::Malformed);
            return;
        }
        let l2 = udp.start + 8..udp.start + ulen;
        let Ok(pkt) = l2tp::Packet::new_checked(&b[l2.clone()]) else {
            Self::set_drop(&mut self.stats, p, DropReason::L2tpMalformed);
            return;
        };
        if pkt.is_control() {
            p.start = l2.start;
            p.end = l2.end;
            p.verdict = Verdict::ToControl(ControlKind::L2tpControl);
            self.stats.to_control += 1;
            return;
        }
        let Some(idx) = self.sessions.find_by_ids(pkt.tunnel_id(), pkt.session_id()) else {
            Self::set_drop(&mut self.stats, p, DropReason::UnknownSession);
            return;
        };
        let ppp = l2.start + pkt.header_len()..l2.end;
        let Some(s) = self.sessions.get(idx) else {
            Self::set_drop(&mut self.stats, p, DropReason::UnknownSession);
            return;
        };
        let bound = if ipsec {
            s.accepts_spi(p.spi)
        } else {
            s.inbound_spi.is_none()
        };
        if !bound {
            Self::set_drop(&mut self.stats, p, DropReason::SessionSaMismatch);
            return;
        }
        p.session = Some(idx);
        let Ok(frame) = ppp::Frame::new_checked(&b[ppp.clone()]) else {
            Self::set_drop(&mut self.stats, p, DropReason::PppMalformed);
            return;
        };
        if frame.protocol() != ppp::Protocol::IPV4 {
            p.start = ppp.start;
            p.end = ppp.end;
            p.verdict = Verdict::ToControl(ControlKind::PppControl);
            self.stats.to_control += 1;
            return;
        }
        let ip = ppp.start + frame.payload_offset()..ppp.end;
        let Some((_, total, _)) = inner_ipv4(b, ip.clone()) else {
            Self::set_drop(&mut self.stats, p, DropReason::InnerMalformed);
            return;
        };
        if s.inner_addr != Some(ip_src(b, ip.start)) {
            Self::set_drop(&mut self.stats, p, DropReason::SpoofedSource);
            return;
        }
        p.start = ip.start;
        p.end = ip.start + total;
        p.verdict = Verdict::Forward;
        self.stats.decap_out += 1;
        self.stats.decap_out_bytes += total as u64;
        if let Some(s) = self.sessions.get_mut(idx) {
            s.counters.in_packets += 1;
            s.counters.in_bytes += total as u64;
        }
    }

    /// Encapsulates a batch of inner IPv4 packets (towards clients) in place.
    pub fn encap_batch<B: AsRef<[u8]> + AsMut<[u8]>>(&mut self, pkts: &mut [Pkt<B>]) {
        // Stage 1: session, PPP / L2TP / UDP headers, ESP framing and outer headers.
        for p in pkts.iter_mut().filter(|p| p.pending()) {
            self.stats.encap_in += 1;
            let b = p.buf.as_ref();
            let Some((_, total, _)) = inner_ipv4(b, p.start..p.end) else {
                Self::set_drop(&mut self.stats, p, DropReason::InnerMalformed);
                continue;
            };
            p.end = p.start + total;
            p.inner_len = total;
            let dst = ip_dst(b, p.start);
            let Some(idx) = self.sessions.find_by_inner(dst) else {
                Self::set_drop(&mut self.stats, p, DropReason::NoSession);
                continue;
            };
            let Some(s) = self.sessions.get(idx) else {
                Self::set_drop(&mut self.stats, p, DropReason::NoSession);
                continue;
            };
            p.session = Some(idx);
            let spis = [s.inbound_spi, s.prev_inbound_spi];
            if let Some(mss) = self.mss_clamp {
                let (s0, e0) = (p.start, p.end);
                super::mss::clamp(&mut p.buf.as_mut()[s0..e0], mss);
            }
            let udp = match l2tp_ppp_udp_out(p.buf.as_mut(), p.start..p.end, s) {
                Ok(r) => r,
                Err(r) => {
                    Self::set_drop(&mut self.stats, p, r);
                    continue;
                }
            };
            let Some(oid) = s.outbound else {
                // Plain L2TP (trusted network): outer IPv4 + UDP only.
                self.ident = self.ident.wrapping_add(1);
                match plain_out(p.buf.as_mut(), udp, s, self.ident) {
                    Ok(r) => {
                        p.start = r.start;
                        p.end = r.end;
                        p.verdict = Verdict::Forward;
                        self.stats.encap_out += 1;
                        self.stats.encap_out_bytes += r.len() as u64;
                        if let Some(s) = self.sessions.get_mut(idx) {
                            s.counters.out_packets += 1;
                            s.counters.out_bytes += p.inner_len as u64;
                        }
                    }
                    Err(r) => Self::set_drop(&mut self.stats, p, r),
                }
                continue;
            };
            let Some(sa) = self.outbound.get_mut(oid) else {
                Self::set_drop(&mut self.stats, p, DropReason::NoOutboundSa);
                continue;
            };
            if sa.volume_exhausted() {
                Self::set_drop(&mut self.stats, p, DropReason::SaExpired);
                continue;
            }
            let seq = match sa.take_seq() {
                Ok(s) => s,
                Err(_) => {
                    Self::set_drop(&mut self.stats, p, DropReason::SeqExhausted);
                    continue;
                }
            };
            self.ident = self.ident.wrapping_add(1);
            // Transport mode carries the UDP datagram; tunnel mode an inner IPv4 header
            // in front of it (host-to-host, for peers that only do tunnel mode).
            let (payload, next_header) = match sa.mode() {
                Mode::Transport => (udp, 17),
                Mode::Tunnel => {
                    let addrs = tunnel_addrs_for(&self.inbound, spis, sa);
                    match tunnel_ipv4_out(p.buf.as_mut(), udp, addrs, self.ident) {
                        Ok(r) => (r, 4),
                        Err(r) => {
                            Self::set_drop(&mut self.stats, p, r);
                            continue;
                        }
                    }
                }
            };
            let params = OuterParams::of(sa);
            match encap::encap(
                p.buf.as_mut(),
                payload,
                &params,
                seq,
                next_header,
                self.ident,
            ) {
                Ok(e) => {
                    sa.count(e.esp.len());
                    p.start = e.packet.start;
                    p.end = e.packet.end;
                    p.esp = e.esp;
                    p.seq = seq;
                    p.out_sa = Some(oid);
                }
                Err(e) => {
                    let r = match e {
                        EncapError::TooLong => DropReason::TooLong,
                        _ => DropReason::NoRoom,
                    };
                    Self::set_drop(&mut self.stats, p, r);
                }
            }
        }

        // Stage 2: one seal call per run of consecutive packets of the same SA.
        let mut i = 0;
        while i < pkts.len() {
            let Some(oid) = pkts[i].out_sa.filter(|_| pkts[i].pending()) else {
                i += 1;
                continue;
            };
            let mut j = i + 1;
            while j < pkts.len() && (pkts[j].out_sa == Some(oid) || !pkts[j].pending()) {
                j += 1;
            }
            if let Some(sa) = self.outbound.get(oid) {
                sa.cipher().seal_batch(&mut pkts[i..j]);
            }
            i = j;
        }

        // Stage 3: verdicts.
        for p in pkts.iter_mut() {
            if p.out_sa.take().is_none() {
                continue;
            }
            p.esp = 0..0;
            match p.verdict {
                Verdict::Pending => {
                    p.verdict = Verdict::Forward;
                    self.stats.encap_out += 1;
                    self.stats.encap_out_bytes += (p.end - p.start) as u64;
                    if let Some(s) = p.session.and_then(|i| self.sessions.get_mut(i)) {
                        s.counters.out_packets += 1;
                        s.counters.out_bytes += p.inner_len as u64;
                    }
                }
                Verdict::Drop(r) => self.stats.drop(r),
                _ => {}
            }
        }
    }
}

/// Checks an inner IPv4 header at `b[r]`: returns (header length, total length,
/// protocol) when version, lengths and header fit.
fn inner_ipv4(b: &[u8], r: Range<usize>) -> Option<(usize, usize, u8)> {
    let ip = b.get(r)?;
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return None;
    }
    let hl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    (hl >= 20 && total >= hl && total <= ip.len()).then_some((hl, total, ip[9]))
}

fn ip_src(b: &[u8], ip: usize) -> Ipv4Addr {
    b.get(ip + 12..ip + 16)
        .and_then(|a| <[u8; 4]>::try_from(a).ok())
        .map_or(Ipv4Addr::UNSPECIFIED, Ipv4Addr::from)
}

fn ip_dst(b: &[u8], ip: usize) -> Ipv4Addr {
    b.get(ip + 16..ip + 20)
        .and_then(|a| <[u8; 4]>::try_from(a).ok())
        .map_or(Ipv4Addr::UNSPECIFIED, Ipv4Addr::from)
}

/// Octets in front of an inner IPv4 packet for PPP (≤ 4), L2TP data (6) and UDP (8).
pub const L2TP_PPP_UDP_HEADROOM: usize = 4 + 6 + 8;

/// Prepends PPP (address/control unless ACFC, protocol 0x0021 or 0x21 with PFC), an
/// L2TP data header (RFC 2661 §3.1: no length, no sequence) with the peer's ids, and a
/// UDP header 1701 → peer port with checksum 0 (IPv4 allows it; NAT-T transport mode
/// would make any checksum wrong anyway, RFC 3948 §3.1.2). Returns the UDP datagram.
pub fn l2tp_ppp_udp_out(
    buf: &mut [u8],
    ip: Range<usize>,
    s: &Session,
) -> Result<Range<usize>, DropReason> {
    let ppp_len = if s.acfc { 0 } else { 2 } + if s.pfc { 1 } else { 2 };
    let start = ip
        .start
        .checked_sub(ppp_len + 6 + 8)
        .ok_or(DropReason::NoRoom)?;
    let ulen = u16::try_from(ip.end - start).map_err(|_| DropReason::TooLong)?;
    let h = &mut buf[start..ip.start];
    h[0..2].copy_from_slice(&udp_encap::L2TP_PORT.to_be_bytes());
    h[2..4].copy_from_slice(&s.peer_port.to_be_bytes());
    h[4..6].copy_from_slice(&ulen.to_be_bytes());
    h[6..8].copy_from_slice(&[0, 0]);
    h[8..10].copy_from_slice(&[0x00, 0x02]); // T=0 L=0 S=0 O=0 P=0, version 2
    h[10..12].copy_from_slice(&s.peer_tunnel_id.to_be_bytes());
    h[12..14].copy_from_slice(&s.peer_session_id.to_be_bytes());
    let mut k = 14;
    if !s.acfc {
        h[k] = ppp::ADDRESS;
        h[k + 1] = ppp::CONTROL;
        k += 2;
    }
    if s.pfc {
        h[k] = 0x21;
    } else {
        h[k..k + 2].copy_from_slice(&ppp::Protocol::IPV4.0.to_be_bytes());
    }
    Ok(start..ip.end)
}

/// The inner addresses of a tunnel-mode packet to the peer of `out`: those the
/// session's inbound SA learned or was given (the current one, else the one before a
/// rekey), else the outer addresses of `out` (host-to-host without NAT).
pub fn tunnel_addrs_for(inbound: &SpiTable<Sa>, spis: [Option<u32>; 2], out: &Sa) -> TunnelAddrs {
    spis.into_iter()
        .flatten()
        .find_map(|spi| inbound.get(spi).and_then(Sa::tunnel_addrs))
        .unwrap_or(TunnelAddrs {
            local: out.local(),
            peer: out.remote(),
        })
}

/// Tunnel mode: writes an inner IPv4 header (protocol UDP, `addrs.local` →
/// `addrs.peer`) in front of the UDP datagram at `udp`; returns the inner packet.
pub fn tunnel_ipv4_out(
    buf: &mut [u8],
    udp: Range<usize>,
    addrs: TunnelAddrs,
    ident: u16,
) -> Result<Range<usize>, DropReason> {
    let start = udp
        .start
        .checked_sub(encap::IPV4_HEADER_LEN)
        .ok_or(DropReason::NoRoom)?;
    let total = u16::try_from(udp.end - start).map_err(|_| DropReason::TooLong)?;
    let h = buf.get_mut(start..udp.start).ok_or(DropReason::NoRoom)?;
    encap::write_ipv4_header(h, total, ident, 17, addrs.local, addrs.peer);
    Ok(start..udp.end)
}

/// Plain L2TP (no IPsec): wraps the UDP datagram in an outer IPv4 header towards the
/// session's outer peer. The UDP source address is ours, taken from the session.
fn plain_out(
    buf: &mut [u8],
    udp: Range<usize>,
    s: &Session,
    ident: u16,
) -> Result<Range<usize>, DropReason> {
    let plain = s.plain.ok_or(DropReason::NoOutboundSa)?;
    let start = udp
        .start
        .checked_sub(encap::IPV4_HEADER_LEN)
        .ok_or(DropReason::NoRoom)?;
    let total = u16::try_from(udp.end - start).map_err(|_| DropReason::TooLong)?;
    buf[udp.start + 2..udp.start + 4].copy_from_slice(&plain.port.to_be_bytes());
    encap::write_ipv4_header(
        &mut buf[start..udp.start],
        total,
        ident,
        17,
        plain.local,
        plain.peer,
    );
    Ok(start..udp.end)
}
