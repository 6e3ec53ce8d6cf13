//! The project's own L2TP/PPP client — the sans-IO LAC and the PPP client link — driven
//! over a real UDP socket: tunnel, session, LCP, authentication, IPCP, then an ICMP echo
//! to the gateway's inner address through the session. Shared by the system tests that
//! run it against `sekisho run` (plain UDP, or under a peer's IPsec SA: the socket does
//! not care, the kernel or strongSwan's libipsec puts the packets in ESP).

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use sekisho::aaa::Password;
use sekisho::l2tp::{self, Lac, LacConfig};
use sekisho::ppp::{self, Link};

/// What the client does once the echo reply came back.
pub enum AfterPong {
    /// Stop: the outcome is complete.
    Stop,
    /// Keep the session and wait for the gateway to tear it down (the caller asked it to).
    WaitTeardown,
}

/// What the client saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// PPP came up: the addresses IPCP settled.
    pub up: Option<ppp::LinkUp>,
    /// The echo to the gateway's inner address was answered through the session.
    pub pong: bool,
    /// The first teardown cause seen (L2TP session/tunnel down or PPP down).
    pub torn_down: Option<String>,
    /// When PPP came up and when the echo reply arrived, since the client started.
    pub up_after: Option<Duration>,
    pub pong_after: Option<Duration>,
}

/// An ICMP echo request `src` → `dst` with sequence number `seq`.
pub fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, seq: u16) -> Vec<u8> {
    let mut p = vec![0u8; 20 + 8 + 32];
    sekisho::esp::encap::write_ipv4_header(&mut p[..20], 60, seq, 1, src, dst);
    p[20] = 8;
    p[24..26].copy_from_slice(&0x5e5eu16.to_be_bytes());
    p[26..28].copy_from_slice(&seq.to_be_bytes());
    let sum = !sekisho::wire::checksum::fold(sekisho::wire::checksum::sum(&p[20..]));
    p[22..24].copy_from_slice(&sum.to_be_bytes());
    p
}

/// Runs the client on `sock` (bound to the LAC's address and port, in the caller's
/// network namespace) against the LNS at `gw` as `user`, for at most `limit`.
/// `on_pong` runs once, when the echo reply arrives.
pub fn run(
    sock: &UdpSocket,
    gw: SocketAddrV4,
    user: &str,
    password: &str,
    limit: Duration,
    mut on_pong: impl FnMut() -> AfterPong,
) -> Outcome {
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("socket read timeout");
    let t0 = Instant::now();
    let mut lac = Lac::new(
        t0,
        LacConfig {
            tunnel: l2tp::TunnelConfig::default(),
            peer: l2tp::PeerKey::plain(gw),
        },
    );
    let mut out = Outcome::default();
    let mut session: Option<u16> = None;
    let mut link: Option<Link> = None;
    let mut buf = [0u8; 2048];
    let mut opened = false;
    let mut wait_teardown = false;
    while t0.elapsed() < limit {
        let now = Instant::now();
        if lac.is_established() && !opened {
            session = lac.open_session(now);
            opened = true;
        }
        if lac.next_timeout().is_some_and(|t| t <= now) {
            lac.handle_timeout(now);
        }
        if let Some(l) = &mut link
            && l.next_timeout().is_some_and(|t| t <= now)
        {
            l.handle_timeout(now);
        }
        while let Some(ev) = lac.poll_event() {
            match ev {
                l2tp::Event::Transmit { bytes, .. } => {
                    let _ = sock.send_to(&bytes, gw);
                }
                l2tp::Event::SessionUp(_) => {
                    let mut l = Link::client(
                        ppp::ClientConfig::new(user, Password::new(password.as_bytes().to_vec())),
                        now,
                    );
                    l.handle_timeout(now);
                    link = Some(l);
                }
                l2tp::Event::SessionDown { cause, .. } | l2tp::Event::TunnelDown { cause, .. } => {
                    out.torn_down.get_or_insert(cause);
                }
                _ => {}
            }
        }
        if let (Some(l), Some(sid)) = (&mut link, session) {
            let peer_sid = lac.peer_session_id(sid).unwrap_or(0);
            let header = |lac: &Lac| {
                let mut p = vec![0x00, 0x02];
                p.extend_from_slice(&lac.peer_tunnel_id().to_be_bytes());
                p.extend_from_slice(&peer_sid.to_be_bytes());
                p
            };
            while let Some(ev) = l.poll_event() {
                match ev {
                    ppp::Event::Send(frame) => {
                        let mut p = header(&lac);
                        p.extend_from_slice(&frame);
                        let _ = sock.send_to(&p, gw);
                    }
                    ppp::Event::Up(u) => {
                        // Ping the gateway's inner address through the tunnel. On the client
                        // side, local_address is ours and peer_address the gateway's.
                        let mut p = header(&lac);
                        p.extend_from_slice(&[0xff, 0x03, 0x00, 0x21]);
                        p.extend_from_slice(&icmp_echo(u.local_address, u.peer_address, 1));
                        let _ = sock.send_to(&p, gw);
                        out.up_after = Some(t0.elapsed());
                        out.up = Some(u);
                    }
                    ppp::Event::Down(r) => {
                        out.torn_down.get_or_insert(r.to_string());
                    }
                    _ => {}
                }
            }
        }
        if wait_teardown && out.torn_down.is_some() {
            break;
        }
        let Ok((n, _)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let msg = &buf[..n];
        let now = Instant::now();
        if msg.first().is_some_and(|b| b & 0x80 != 0) {
            lac.input(now, msg);
        } else if let Some(l) = &mut link {
            // Data: 6-octet header (no length, no sequence) then PPP.
            let Some(ppp) = msg.get(6..) else { continue };
            if ppp.len() > 4 + 20 && ppp[..4] == [0xff, 0x03, 0x00, 0x21] {
                let ip = &ppp[4..];
                if ip[9] == 1 && ip[20] == 0 && !out.pong {
                    out.pong = true;
                    out.pong_after = Some(t0.elapsed());
                    match on_pong() {
                        AfterPong::Stop => break,
                        AfterPong::WaitTeardown => wait_teardown = true,
                    }
                }
            } else {
                l.input(now, ppp);
            }
        }
    }
    out
}
