//! One simulated L2TP/IPsec client of `sekisho demo`: the project's own machines in
//! the order a real client runs them — IKEv1 Main Mode + Quick Mode
//! ([`crate::ike::v1::initiator::Client`], ESP forced into UDP 4500 like strongSwan's
//! `encap = yes`), then L2TP ([`crate::l2tp::Lac`]) and PPP MS-CHAPv2 + IPCP
//! ([`crate::ppp::Link::client`]) over ESP ([`crate::dataplane::peer::SimPeer`]).
//! One connected UDP socket per client; sans-IO machines, so this file is only glue.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::ops::Range;
use std::time::{Duration, Instant};

use crate::aaa::Password;
use crate::control::ike::{SaSettings, build_pair};
use crate::crypto::{Backend, Transform};
use crate::dataplane::peer::{FRAME_HEADROOM, PeerParams, SimPeer};
use crate::esp::encap::write_ipv4_header;
use crate::ike::v1::crypto::{DhGroup, HashAlg, IkeCipher};
use crate::ike::v1::initiator::{Client as IkeClient, ClientConfig};
use crate::ike::v1::proposal::Phase1Choice;
use crate::ike::v1::responder::Install;
use crate::l2tp::{self, Lac, LacConfig};
use crate::ppp::{self, Link};
use crate::wire;

/// The non-ESP marker in front of IKE on UDP 4500 (RFC 3948 §2.2).
const NON_ESP_MARKER: [u8; 4] = [0; 4];
/// Where a received UDP payload goes in a frame: behind room for the outer IPv4 and
/// UDP headers that [`SimPeer::open_l2tp`] expects.
pub const RX_AT: usize = 28;
/// PPP restart timer of the demo clients (RFC 1661 default: 3 s).
const PPP_RESTART_MS: u64 = 300;
/// Retransmissions of an unanswered IKE message (1 s apart, then doubling).
const IKE_TRIES: u32 = 5;

/// How far a client got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Main Mode and Quick Mode.
    Ike,
    /// L2TP tunnel and session over ESP.
    L2tp,
    /// LCP, MS-CHAPv2, IPCP.
    Ppp,
    /// PPP is up: the session carries traffic.
    Up,
    /// Gave up (see `failure`).
    Failed,
}

/// What an arriving datagram turned out to be, for the traffic counters.
pub enum Delivered {
    /// Nothing for the counters (IKE, L2TP or PPP control, or dropped).
    Nothing,
    /// An inner IPv4 packet at this range of the frame.
    Inner(Range<usize>),
}

/// One client.
pub struct DemoClient {
    /// Index in the fleet.
    pub k: usize,
    sock: UdpSocket,
    local: SocketAddrV4,
    gateway: Ipv4Addr,
    connected_to: SocketAddrV4,
    ike: IkeClient,
    last_ike: Option<(Vec<u8>, SocketAddrV4)>,
    ike_retry_at: Option<Instant>,
    ike_tries: u32,
    esp: Option<SimPeer>,
    lac: Option<Lac>,
    session: Option<u16>,
    link: Option<Link>,
    /// Where the client is.
    pub stage: Stage,
    /// Our inner address once PPP is up.
    pub inner: Option<Ipv4Addr>,
    /// When the client started.
    pub started: Instant,
    /// When PPP came up.
    pub up_at: Option<Instant>,
    /// Why it failed.
    pub failure: Option<String>,
}

/// The IKE proposal of the demo clients: AES-128-CBC, SHA-256 and the DH group asked
/// for (Curve25519 by default: cheap, so thousands of clients set up in seconds); ESP
/// AES-128-GCM.
fn ike_config(local: SocketAddrV4, gateway: Ipv4Addr, group: DhGroup) -> ClientConfig {
    ClientConfig {
        local,
        gateway: SocketAddrV4::new(gateway, 500),
        psk: super::world::PSK.as_bytes().to_vec(),
        ike: vec![Phase1Choice {
            cipher: IkeCipher::AesCbc { key_len: 16 },
            hash: HashAlg::Sha256,
            group,
            lifetime: Duration::from_secs(3600),
        }],
        esp: vec![Transform::Aes128Gcm],
        esp_lifetime: Duration::from_secs(3600),
        initial_contact: true,
        natt_port: 4500,
    }
}

impl DemoClient {
    /// Opens the client's socket on `local` and sends MM1 offering DH `group`.
    pub fn start(
        k: usize,
        local: SocketAddrV4,
        gateway: Ipv4Addr,
        group: DhGroup,
        now: Instant,
    ) -> Result<Self, String> {
        let sock = UdpSocket::bind(local).map_err(|e| format!("bind {local}: {e}"))?;
        sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        let our_spi = 0x5e00_0000 | k as u32;
        let (mut ike, mm1) = IkeClient::start(ike_config(local, gateway, group), our_spi)
            .map_err(|e| format!("IKE start: {e}"))?;
        ike.force_encap();
        let mut c = DemoClient {
            k,
            sock,
            local,
            gateway,
            connected_to: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
            ike,
            last_ike: None,
            ike_retry_at: None,
            ike_tries: 0,
            esp: None,
            lac: None,
            session: None,
            link: None,
            stage: Stage::Ike,
            inner: None,
            started: now,
            up_at: None,
            failure: None,
        };
        c.send_ike(now, mm1.data, mm1.to);
        Ok(c)
    }

    /// The socket (for poll).
    pub fn socket(&self) -> &UdpSocket {
        &self.sock
    }

    fn fail(&mut self, why: String) {
        if self.stage != Stage::Failed {
            self.stage = Stage::Failed;
            self.failure = Some(why);
        }
    }

    fn connect(&mut self, to: SocketAddrV4) {
        if self.connected_to != to {
            if let Err(e) = self.sock.connect(to) {
                self.fail(format!("connect {to}: {e}"));
            }
            self.connected_to = to;
        }
    }

    fn send_ike(&mut self, now: Instant, data: Vec<u8>, to: SocketAddrV4) {
        self.connect(to);
        let wire = if to.port() == 500 {
            data.clone()
        } else {
            [&NON_ESP_MARKER[..], &data].concat()
        };
        let _ = self.sock.send(&wire);
        self.last_ike = Some((data, to));
        self.ike_tries = 0;
        self.ike_retry_at = Some(now + Duration::from_secs(1));
    }

    /// Reads every datagram waiting on the socket into `frame` and handles it; calls
    /// `on_inner` with each inner IPv4 packet (traffic and probes). Returns how many
    /// datagrams were read.
    pub fn receive(
        &mut self,
        now: Instant,
        frame: &mut [u8],
        mut on_inner: impl FnMut(&[u8]),
    ) -> usize {
        let mut n = 0;
        loop {
            let len = match self.sock.recv(&mut frame[RX_AT..]) {
                Ok(len) => len,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return n,
                // ICMP errors surface as recv errors on connected sockets: ignore.
                Err(_) => continue,
            };
            n += 1;
            if let Delivered::Inner(r) = self.input(now, frame, len) {
                on_inner(&frame[r]);
            }
            if n >= 256 {
                return n;
            }
        }
    }

    /// Handles one datagram of `len` octets at `frame[RX_AT..]`.
    fn input(&mut self, now: Instant, frame: &mut [u8], len: usize) -> Delivered {
        let from_4500 = self.connected_to.port() != 500;
        let data = &frame[RX_AT..RX_AT + len];
        if !from_4500 {
            let d = data.to_vec();
            self.ike_input(now, &d);
            return Delivered::Nothing;
        }
        if len >= 4 && data[..4] == NON_ESP_MARKER {
            let d = data[4..].to_vec();
            self.ike_input(now, &d);
            return Delivered::Nothing;
        }
        if len <= 1 {
            return Delivered::Nothing; // NAT keepalive
        }
        self.esp_input(now, frame, len)
    }

    fn ike_input(&mut self, now: Instant, data: &[u8]) {
        match self.ike.input(data) {
            Ok(Some(out)) => {
                let to = out.to;
                if self.ike.is_up() && self.esp.is_none() {
                    // QM3 is the last message: nothing to retransmit after it.
                    self.connect(to);
                    let _ = self.sock.send(&[&NON_ESP_MARKER[..], &out.data].concat());
                    self.last_ike = None;
                    self.ike_retry_at = None;
                    self.child_up(now);
                } else if self.esp.is_some() {
                    // A DPD answer.
                    let _ = self.sock.send(&[&NON_ESP_MARKER[..], &out.data].concat());
                } else {
                    self.send_ike(now, out.data, to);
                }
            }
            Ok(None) => {}
            // A retransmitted gateway message that fits no state: the real answer
            // follows (or our retransmission fixes it).
            Err(crate::ike::v1::initiator::ClientError::Unexpected) => {}
            Err(e) => self.fail(format!("IKE: {e}")),
        }
    }

    /// Quick Mode done: build the ESP SA pair and start L2TP over it.
    fn child_up(&mut self, now: Instant) {
        let Some(child) = self.ike.take_child() else {
            return self.fail("IKE up without an SA pair".into());
        };
        let transform = child.transform;
        let install = Install {
            worker: 0,
            peer: SocketAddrV4::new(self.gateway, 4500),
            local: self.local,
            child,
            rekeys: None,
        };
        let settings = SaSettings {
            replay_window: 1024,
            backend: Backend::default(),
        };
        let (inbound, outbound) = match build_pair(&install, settings, now) {
            Ok(p) => p,
            Err(e) => return self.fail(format!("ESP: {e}")),
        };
        let params = PeerParams {
            transform,
            natt: true,
            gateway: self.gateway,
            client: *self.local.ip(),
            client_port: self.local.port(),
            inner: Ipv4Addr::UNSPECIFIED,
            gw_ids: (0, 0),
            client_ids: (0, 0),
            backend: Backend::default(),
        };
        self.esp = Some(SimPeer::from_sas(params, outbound, inbound));
        let gw = SocketAddrV4::new(self.gateway, 1701);
        self.lac = Some(Lac::new(
            now,
            LacConfig {
                tunnel: l2tp::TunnelConfig::default(),
                peer: l2tp::PeerKey::plain(gw),
            },
        ));
        self.stage = Stage::L2tp;
    }

    fn esp_input(&mut self, now: Instant, frame: &mut [u8], len: usize) -> Delivered {
        let Some(esp) = self.esp.as_mut() else {
            return Delivered::Nothing;
        };
        // SimPeer opens whole outer packets: put back the IPv4 and UDP headers the
        // socket took off.
        let total = RX_AT + len;
        write_ipv4_header(
            &mut frame[..20],
            total as u16,
            0,
            17,
            self.gateway,
            *self.local.ip(),
        );
        frame[20..22].copy_from_slice(&4500u16.to_be_bytes());
        frame[22..24].copy_from_slice(&self.local.port().to_be_bytes());
        frame[24..26].copy_from_slice(&((len + 8) as u16).to_be_bytes());
        frame[26..28].copy_from_slice(&[0, 0]);
        let Some(l2) = esp.open_l2tp(frame, 0..total) else {
            return Delivered::Nothing;
        };
        let Ok(pkt) = wire::l2tp::Packet::new_checked(&frame[l2.clone()]) else {
            return Delivered::Nothing;
        };
        if pkt.is_control() {
            if let Some(lac) = self.lac.as_mut() {
                lac.input(now, &frame[l2]);
            }
            return Delivered::Nothing;
        }
        let ppp_r = l2.start + pkt.header_len()..l2.end;
        let Ok(f) = wire::ppp::Frame::new_checked(&frame[ppp_r.clone()]) else {
            return Delivered::Nothing;
        };
        if f.protocol() == wire::ppp::Protocol::IPV4 {
            return Delivered::Inner(ppp_r.start + f.payload_offset()..ppp_r.end);
        }
        if let Some(link) = self.link.as_mut() {
            link.input(now, &frame[ppp_r]);
        }
        Delivered::Nothing
    }

    /// Runs the timers and sends what the machines want sent; `frame` is scratch.
    pub fn service(&mut self, now: Instant, frame: &mut [u8]) {
        if let Some(at) = self.ike_retry_at
            && at <= now
            && self.stage == Stage::Ike
        {
            if self.ike_tries >= IKE_TRIES {
                return self.fail("IKE: no answer from the gateway".into());
            }
            self.ike_tries += 1;
            if let Some((data, to)) = self.last_ike.clone() {
                let wire = if to.port() == 500 {
                    data
                } else {
                    [&NON_ESP_MARKER[..], &data].concat()
                };
                let _ = self.sock.send(&wire);
            }
            self.ike_retry_at = Some(now + Duration::from_secs(1 << self.ike_tries));
        }
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut events = Vec::new();
        if let Some(lac) = self.lac.as_mut() {
            if lac.is_established() && self.session.is_none() {
                self.session = lac.open_session(now);
            }
            if lac.next_timeout().is_some_and(|t| t <= now) {
                lac.handle_timeout(now);
            }
            while let Some(ev) = lac.poll_event() {
                events.push(ev);
            }
        }
        for ev in events {
            match ev {
                l2tp::Event::Transmit { bytes, .. } => out.push(bytes),
                l2tp::Event::SessionUp(info) => {
                    if let Some(esp) = self.esp.as_mut() {
                        esp.set_session(
                            (info.peer_tunnel_id, info.peer_session_id),
                            (info.local_tunnel_id, info.local_session_id),
                            Ipv4Addr::UNSPECIFIED,
                        );
                    }
                    let mut cfg = ppp::ClientConfig::new(
                        &super::world::user(self.k),
                        Password::new(super::world::PASSWORD.as_bytes().to_vec()),
                    );
                    // Our first LCP Configure-Request can race the ICCN to the gateway
                    // (data path vs control thread) and be dropped as unknown_session;
                    // a short restart timer (pppd's lcp-restart) resends it soon.
                    cfg.timing.restart = Duration::from_millis(PPP_RESTART_MS);
                    let mut l = Link::client(cfg, now);
                    l.handle_timeout(now);
                    self.link = Some(l);
                    self.stage = Stage::Ppp;
                }
                l2tp::Event::SessionDown { cause, .. } | l2tp::Event::TunnelDown { cause, .. }
                    if self.stage != Stage::Up =>
                {
                    self.fail(format!("L2TP: {cause}"));
                }
                _ => {}
            }
        }
        for bytes in out {
            self.send_l2tp(frame, &bytes);
        }
        let Some(link) = self.link.as_mut() else {
            return;
        };
        if link.next_timeout().is_some_and(|t| t <= now) {
            link.handle_timeout(now);
        }
        let mut frames = Vec::new();
        let mut up = None;
        let mut down = None;
        while let Some(ev) = link.poll_event() {
            match ev {
                ppp::Event::Send(f) => frames.push(f),
                ppp::Event::Up(u) => up = Some(u),
                ppp::Event::Down(r) => down = Some(r.to_string()),
                _ => {}
            }
        }
        let ids = self
            .esp
            .as_ref()
            .map(|e| (e.params.gw_ids, e.params.client_ids));
        for f in frames {
            if let Some(((ptid, psid), _)) = ids {
                let mut m = Vec::with_capacity(6 + f.len());
                m.extend_from_slice(&[0x00, 0x02]);
                m.extend_from_slice(&ptid.to_be_bytes());
                m.extend_from_slice(&psid.to_be_bytes());
                m.extend_from_slice(&f);
                self.send_l2tp(frame, &m);
            }
        }
        if let (Some(u), Some((gw_ids, client_ids))) = (up, ids) {
            if let Some(esp) = self.esp.as_mut() {
                esp.set_session(gw_ids, client_ids, u.local_address);
            }
            self.inner = Some(u.local_address);
            self.up_at = Some(now);
            self.stage = Stage::Up;
        }
        if let Some(why) = down {
            self.fail(format!("PPP: {why}"));
        }
    }

    /// Seals one L2TP message (control, or data carrying a PPP frame) in UDP 1701 and
    /// ESP and sends it.
    fn send_l2tp(&mut self, frame: &mut [u8], msg: &[u8]) {
        let Some(esp) = self.esp.as_mut() else { return };
        let at = FRAME_HEADROOM;
        let Some(dst) = frame.get_mut(at..at + msg.len()) else {
            return;
        };
        dst.copy_from_slice(msg);
        if let Some(r) = esp.seal_l2tp(frame, at..at + msg.len()) {
            let _ = self.sock.send(&frame[r.start + RX_AT..r.end]);
        }
    }

    /// Seals inner packets and sends them in one `sendmmsg`: `fill(frame) -> range`
    /// writes the k-th inner packet. Returns how many the kernel took.
    pub fn send_inner(
        &mut self,
        frames: &mut [Vec<u8>],
        mut fill: impl FnMut(usize, &SimPeer, &mut [u8]) -> Range<usize>,
    ) -> usize {
        let Some(esp) = self.esp.as_mut() else {
            return 0;
        };
        let mut ranges: Vec<Range<usize>> = Vec::with_capacity(frames.len());
        for (i, f) in frames.iter_mut().enumerate() {
            let r = fill(i, esp, f);
            match esp.seal(f, r) {
                Some(out) => ranges.push(out.start + RX_AT..out.end),
                None => break,
            }
        }
        let iovs: Vec<[std::io::IoSlice<'_>; 1]> = frames
            .iter()
            .zip(&ranges)
            .map(|(f, r)| [std::io::IoSlice::new(&f[r.clone()])])
            .collect();
        let mut controls: Vec<rustix::net::SendAncillaryBuffer<'_, '_, '_>> = (0..iovs.len())
            .map(|_| rustix::net::SendAncillaryBuffer::default())
            .collect();
        let mut msgs: Vec<rustix::net::MMsgHdr<'_>> = iovs
            .iter()
            .zip(controls.iter_mut())
            .map(|(iov, c)| rustix::net::MMsgHdr::new(iov, c))
            .collect();
        rustix::net::sendmmsg(&self.sock, &mut msgs, rustix::net::SendFlags::DONTWAIT).unwrap_or(0)
    }
}
