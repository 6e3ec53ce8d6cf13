//! The client side of an established L2TP/IPsec session's data path: builds what a
//! client sends (inner IPv4 in PPP in L2TP in UDP 1701 in ESP) and opens what the
//! gateway sends back. Used by the tests, the benches, `sekisho bench` and the load
//! generator; it runs the same pure functions as the gateway, mirrored.

use std::net::Ipv4Addr;
use std::time::Instant;

use crate::crypto::{Backend, Transform};
use crate::esp::decap::{self, Classified};
use crate::esp::encap::{self, OuterParams};
use crate::esp::sa::{Direction, Encap, Lifetime, Mode, Sa, SaBuildError, SaConfig, TunnelAddrs};
use crate::esp::shard::{SpiLayout, SpiTable};
use crate::wire::{l2tp, ppp};

use super::chain::{L2TP_PPP_UDP_HEADROOM, Shard, l2tp_ppp_udp_out, tunnel_ipv4_out};
use super::session::{Session, SessionError};

/// Why a simulated session could not be installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EstablishError {
    /// Key material or replay window refused.
    Sa(SaBuildError),
    /// The worker's SPI table is full.
    TableFull,
    /// Session ids or inner address already in use.
    Session(SessionError),
}

impl From<SaBuildError> for EstablishError {
    fn from(e: SaBuildError) -> Self {
        EstablishError::Sa(e)
    }
}

/// Octets a test frame keeps in front of the inner packet: Ethernet, outer IPv4,
/// UDP 4500, ESP header, the largest IV, UDP 1701, L2TP, PPP, with slack.
pub const FRAME_HEADROOM: usize = 128;
/// Octets a test frame keeps behind the inner packet: padding, trailer and ICV.
pub const FRAME_TAILROOM: usize = 64;

/// What both ends agree on for one simulated session.
#[derive(Clone, Debug)]
pub struct PeerParams {
    /// ESP transform.
    pub transform: Transform,
    /// UDP-encapsulated ESP (NAT-T) or raw.
    pub natt: bool,
    /// Gateway outer address.
    pub gateway: Ipv4Addr,
    /// Client outer address (after NAT).
    pub client: Ipv4Addr,
    /// Client's UDP source port for NAT-T (distinct per client behind one NAT).
    pub client_port: u16,
    /// Client's inner (PPP) address.
    pub inner: Ipv4Addr,
    /// Gateway's tunnel and session ids.
    pub gw_ids: (u16, u16),
    /// Client's tunnel and session ids.
    pub client_ids: (u16, u16),
    /// Crypto backend of both ends.
    pub backend: Backend,
}

/// The client's SPI of simulated session `seed` (the gateway's outbound SPI).
pub fn client_spi(seed: u8) -> u32 {
    0xc000_0000 | u32::from(seed) << 8 | 0x11
}

#[allow(clippy::too_many_arguments)]
fn sa_config(
    p: &PeerParams,
    mode: Mode,
    spi: u32,
    direction: Direction,
    encap: Encap,
    local: Ipv4Addr,
    remote: Ipv4Addr,
) -> SaConfig {
    SaConfig {
        spi,
        direction,
        transform: p.transform,
        esn: false,
        mode,
        encap,
        local,
        remote,
        replay_window: 1024,
        lifetime: Lifetime::default(),
        backend: p.backend,
    }
}

/// One end's view of a transport-mode L2TP session over UDP 1701: our ids, the
/// peer's ids and the client's inner address (SAs are filled in when installed).
fn session_between(local: (u16, u16), peer: (u16, u16), inner: Ipv4Addr) -> Session {
    Session {
        local_tunnel_id: local.0,
        local_session_id: local.1,
        peer_tunnel_id: peer.0,
        peer_session_id: peer.1,
        peer_port: 1701,
        inbound_spi: None,
        prev_inbound_spi: None,
        outbound: None,
        inner_addr: Some(inner),
        acfc: false,
        pfc: false,
        plain: None,
        counters: Default::default(),
    }
}

/// UDP encapsulation between `local_port` and `remote_port` when NAT-T is on.
fn encap_for(p: &PeerParams, local_port: u16, remote_port: u16) -> Encap {
    if p.natt {
        Encap::Udp {
            local_port,
            remote_port,
        }
    } else {
        Encap::None
    }
}

/// The gateway's half of a simulated session, as the control thread would hand it to
/// a worker: SAs keyed from the deterministic KEYMAT and the session (its inbound SPI
/// and outbound SA are filled in when installed).
pub struct GatewaySide {
    /// Inbound SA (SPI 0 until the worker allocates one).
    pub inbound: Sa,
    /// Outbound SA (the client's SPI).
    pub outbound: Sa,
    /// The session.
    pub session: Session,
}

impl GatewaySide {
    /// Builds the gateway side of session `seed` (transport mode).
    pub fn new(p: &PeerParams, seed: u8) -> Result<GatewaySide, EstablishError> {
        Self::with_mode(p, seed, Mode::Transport)
    }

    /// Builds the gateway side of session `seed` with SAs in `mode`.
    pub fn with_mode(p: &PeerParams, seed: u8, mode: Mode) -> Result<GatewaySide, EstablishError> {
        let now = Instant::now();
        let t = p.transform;
        let encap = encap_for(p, 4500, p.client_port);
        let inbound = Sa::new(
            &sa_config(p, mode, 0, Direction::Inbound, encap, p.gateway, p.client),
            &keymat(t, seed),
            [seed; 16],
            now,
        )?;
        let outbound = Sa::new(
            &sa_config(
                p,
                mode,
                client_spi(seed),
                Direction::Outbound,
                encap,
                p.gateway,
                p.client,
            ),
            &keymat(t, seed ^ 0x5a),
            [seed ^ 1; 16],
            now,
        )?;
        let session = session_between(p.gw_ids, p.client_ids, p.inner);
        Ok(GatewaySide {
            inbound,
            outbound,
            session,
        })
    }
}

/// A simulated client with its two SAs.
pub struct SimPeer {
    /// What was agreed.
    pub params: PeerParams,
    /// Client → gateway (SPI allocated by the gateway).
    pub out_sa: Sa,
    /// Gateway → client (the client's SPI).
    pub in_sa: Sa,
    session_view: Session,
    ident: u16,
    /// Tunnel mode: the client's inner header addresses (local = the client's own
    /// address behind its NAT, peer = the gateway).
    tunnel: Option<TunnelAddrs>,
}

/// The deterministic key material of simulated session `seed` (gateway inbound uses
/// `keymat(t, seed)`, gateway outbound `keymat(t, seed ^ 0x5a)`), for tests that hand the
/// keys to an independent decoder.
pub fn keymat(t: Transform, seed: u8) -> Vec<u8> {
    (0..t.keymat_len())
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

impl SimPeer {
    /// Installs a session on the gateway shard (inbound SA, outbound SA, session) the
    /// way the control thread will, and returns the matching client.
    pub fn establish(
        shard: &mut Shard,
        p: PeerParams,
        seed: u8,
    ) -> Result<SimPeer, EstablishError> {
        Self::establish_mode(shard, p, seed, None)
    }

    /// [`SimPeer::establish`] with host-to-host tunnel-mode SAs, as strongSwan with
    /// kernel-libipsec does: the client's L2TP goes in an inner IPv4 header from
    /// `client_inner` (its own address behind the NAT) to the gateway.
    pub fn establish_tunnel(
        shard: &mut Shard,
        p: PeerParams,
        seed: u8,
        client_inner: Ipv4Addr,
    ) -> Result<SimPeer, EstablishError> {
        Self::establish_mode(shard, p, seed, Some(client_inner))
    }

    fn establish_mode(
        shard: &mut Shard,
        p: PeerParams,
        seed: u8,
        tunnel: Option<Ipv4Addr>,
    ) -> Result<SimPeer, EstablishError> {
        let mode = if tunnel.is_some() {
            Mode::Tunnel
        } else {
            Mode::Transport
        };
        let gw = GatewaySide::with_mode(&p, seed, mode)?;
        let GatewaySide {
            inbound,
            outbound,
            mut session,
        } = gw;
        let gw_in = shard
            .inbound
            .insert_with(|spi| inbound.with_spi(spi))
            .map_err(|_| EstablishError::TableFull)?;
        let oid = shard.outbound.insert(outbound);
        session.inbound_spi = Some(gw_in);
        session.outbound = Some(oid);
        shard
            .sessions
            .insert(session)
            .map_err(EstablishError::Session)?;
        match tunnel {
            Some(inner) => SimPeer::tunnel_client(p, gw_in, seed, inner),
            None => SimPeer::client(p, gw_in, seed),
        }
    }

    /// [`SimPeer::client`] in tunnel mode, from inner address `client_inner`.
    pub fn tunnel_client(
        p: PeerParams,
        gw_in: u32,
        seed: u8,
        client_inner: Ipv4Addr,
    ) -> Result<SimPeer, EstablishError> {
        let gateway = p.gateway;
        let mut c = Self::client_mode(p, gw_in, seed, Mode::Tunnel)?;
        c.tunnel = Some(TunnelAddrs {
            local: client_inner,
            peer: gateway,
        });
        Ok(c)
    }

    /// The client of a session whose gateway side was built by [`GatewaySide::new`] with
    /// the same parameters and seed and installed under inbound SPI `gw_in`.
    pub fn client(p: PeerParams, gw_in: u32, seed: u8) -> Result<SimPeer, EstablishError> {
        Self::client_mode(p, gw_in, seed, Mode::Transport)
    }

    fn client_mode(
        p: PeerParams,
        gw_in: u32,
        seed: u8,
        mode: Mode,
    ) -> Result<SimPeer, EstablishError> {
        let now = Instant::now();
        let t = p.transform;
        let cl_encap = encap_for(&p, p.client_port, 4500);
        let out_sa = Sa::new(
            &sa_config(
                &p,
                mode,
                gw_in,
                Direction::Outbound,
                cl_encap,
                p.client,
                p.gateway,
            ),
            &keymat(t, seed),
            [seed ^ 2; 16],
            now,
        )?;
        let in_sa = Sa::new(
            &sa_config(
                &p,
                mode,
                client_spi(seed),
                Direction::Inbound,
                cl_encap,
                p.client,
                p.gateway,
            ),
            &keymat(t, seed ^ 0x5a),
            [seed ^ 3; 16],
            now,
        )?;
        let session_view = session_between(p.client_ids, p.gw_ids, p.inner);
        Ok(SimPeer {
            params: p,
            out_sa,
            in_sa,
            session_view,
            ident: 0,
            tunnel: None,
        })
    }

    /// Writes an inner IPv4/UDP packet of `size` octets from the client's inner
    /// address to `dst` at `frame[FRAME_HEADROOM..]`; returns its range.
    pub fn inner_packet(
        &self,
        frame: &mut [u8],
        dst: Ipv4Addr,
        size: usize,
    ) -> std::ops::Range<usize> {
        write_inner_udp(frame, FRAME_HEADROOM, self.params.inner, dst, size)
    }

    /// Client → gateway: wraps the inner packet at `frame[r]` all the way to the outer
    /// IPv4 packet and seals it. Returns the outer packet's range.
    pub fn seal(
        &mut self,
        frame: &mut [u8],
        r: std::ops::Range<usize>,
    ) -> Option<std::ops::Range<usize>> {
        let udp = l2tp_ppp_udp_out(frame, r, &self.session_view).ok()?;
        let seq = self.out_sa.take_seq().ok()?;
        self.ident = self.ident.wrapping_add(1);
        let (payload, next_header) = match self.tunnel {
            Some(addrs) => (tunnel_ipv4_out(frame, udp, addrs, self.ident).ok()?, 4),
            None => (udp, 17),
        };
        let e = encap::encap(
            frame,
            payload,
            &OuterParams::of(&self.out_sa),
            seq,
            next_header,
            self.ident,
        )
        .ok()?;
        self.out_sa
            .cipher()
            .seal(&mut frame[e.esp.clone()], seq)
            .ok()?;
        Some(e.packet)
    }

    /// Gateway → client: opens an outer packet the gateway produced and returns the
    /// inner IPv4 packet's range, checking every layer on the way.
    pub fn open(
        &mut self,
        frame: &mut [u8],
        r: std::ops::Range<usize>,
    ) -> Option<std::ops::Range<usize>> {
        if self.params.natt {
            // The client's NAT maps its public port back to 4500 on the way in.
            let ihl = usize::from(frame.get(r.start)? & 0x0f) * 4;
            let at = r.start + ihl + 2;
            frame
                .get_mut(at..at + 2)?
                .copy_from_slice(&4500u16.to_be_bytes());
        }
        let Classified::Esp(o) = decap::classify(frame, r).ok()? else {
            return None;
        };
        if o.spi != self.in_sa.spi() {
            return None;
        }
        let seq = self.in_sa.check_replay(o.seq_lo).ok()?;
        self.in_sa
            .cipher()
            .open(&mut frame[o.esp.clone()], seq)
            .ok()?;
        self.in_sa.accept_replay(seq).ok()?;
        let inner = decap::strip_trailer(frame, o.esp, self.in_sa.transform()).ok()?;
        let udp_r = match (self.tunnel, inner.next_header) {
            (None, 17) => inner.payload,
            (Some(t), 4) => {
                // The inner IPv4 header: UDP from the gateway to the client's own
                // address, inside the ESP payload.
                let ip = frame.get(inner.payload.clone())?;
                let hl = usize::from(*ip.first()? & 0x0f) * 4;
                if ip.len() < hl.max(20)
                    || ip[9] != 17
                    || ip[12..16] != t.peer.octets()
                    || ip[16..20] != t.local.octets()
                    || !decap::ipv4_header_ok(&ip[..hl])
                {
                    return None;
                }
                inner.payload.start + hl..inner.payload.end
            }
            _ => return None,
        };
        let udp = &frame[udp_r.clone()];
        let ulen = usize::from(u16::from_be_bytes([*udp.get(4)?, *udp.get(5)?]));
        let l2 = udp_r.start + 8..udp_r.start + ulen;
        let pkt = l2tp::Packet::new_checked(&frame[l2.clone()]).ok()?;
        if pkt.is_control() || (pkt.tunnel_id(), pkt.session_id()) != self.params.client_ids {
            return None;
        }
        let ppp_r = l2.start + pkt.header_len()..l2.end;
        let f = ppp::Frame::new_checked(&frame[ppp_r.clone()]).ok()?;
        if f.protocol() != ppp::Protocol::IPV4 {
            return None;
        }
        Some(ppp_r.start + f.payload_offset()..ppp_r.end)
    }
}

/// Writes an IPv4/UDP packet of `size` octets (≥ 28) at `frame[at..]` with a valid
/// header checksum and a counting payload.
pub fn write_inner_udp(
    frame: &mut [u8],
    at: usize,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    size: usize,
) -> std::ops::Range<usize> {
    let size = size.max(28);
    let p = &mut frame[at..at + size];
    encap::write_ipv4_header(&mut p[..20], size as u16, 0x1234, 17, src, dst);
    p[20..22].copy_from_slice(&40000u16.to_be_bytes());
    p[22..24].copy_from_slice(&9u16.to_be_bytes());
    p[24..26].copy_from_slice(&((size - 20) as u16).to_be_bytes());
    p[26..28].copy_from_slice(&[0, 0]);
    for (i, b) in p[28..].iter_mut().enumerate() {
        *b = i as u8;
    }
    at..at + size
}

/// A shard for worker 0 with the default SPI layout, IPsec required.
pub fn new_shard(capacity: usize) -> Shard {
    Shard::new(SpiTable::new(0, SpiLayout::DEFAULT, capacity), true)
}

/// Frame size for a given inner packet size.
pub fn frame_len(inner: usize) -> usize {
    FRAME_HEADROOM + inner.max(28) + FRAME_TAILROOM + L2TP_PPP_UDP_HEADROOM
}
