//! `sekisho-perf hold`: opens many L2TP + PPP (MS-CHAPv2) sessions against a running
//! `sekisho run` over plain L2TP, with the project's own sans-IO LAC and PPP client
//! machines on real UDP sockets (one socket, so one tunnel, per `--per-tunnel`
//! sessions), keeps them up (answers LCP echoes and HELLOs), and reports the setup
//! rate. Run it next to the gateway and read the gateway's CPU time while the sessions
//! sit idle.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use sekisho::aaa::Password;
use sekisho::l2tp::{self, Lac, LacConfig};
use sekisho::ppp::{self, Link};

use crate::common::{Ctx, Res, Signals};

/// Arguments of `hold`.
pub struct Args {
    pub gateway: Ipv4Addr,
    pub local: Ipv4Addr,
    pub port_base: u16,
    pub sessions: usize,
    pub per_tunnel: usize,
    pub user: String,
    pub password: String,
    pub hold_seconds: u64,
}

struct Tunnel {
    sock: UdpSocket,
    lac: Lac,
    links: HashMap<u16, Link>,
    up: usize,
    opened: usize,
    want: usize,
}

pub fn run(a: Args, signals: &Signals) -> Res<()> {
    let gw = SocketAddrV4::new(a.gateway, 1701);
    let t0 = Instant::now();
    let tunnels_n = a.sessions.div_ceil(a.per_tunnel.max(1));
    let mut tunnels = Vec::new();
    for i in 0..tunnels_n {
        let sock =
            UdpSocket::bind(SocketAddrV4::new(a.local, a.port_base + i as u16)).ctx("bind")?;
        sock.set_nonblocking(true).ctx("nonblocking")?;
        let want = a.per_tunnel.min(a.sessions - i * a.per_tunnel);
        tunnels.push(Tunnel {
            sock,
            lac: Lac::new(
                t0,
                LacConfig {
                    tunnel: l2tp::TunnelConfig::default(),
                    peer: l2tp::PeerKey::plain(gw),
                },
            ),
            links: HashMap::new(),
            up: 0,
            opened: 0,
            want,
        });
    }
    let mut buf = [0u8; 2048];
    let mut all_up_at = None;
    let mut last_report = Instant::now();
    loop {
        if signals.pending() {
            break;
        }
        let now = Instant::now();
        let mut busy = false;
        let mut up_total = 0;
        for t in tunnels.iter_mut() {
            if t.lac.is_established() && t.opened < t.want {
                // Open calls in small steps so the LNS's window is not flooded.
                for _ in 0..8 {
                    if t.opened < t.want && t.lac.open_session(now).is_some() {
                        t.opened += 1;
                    }
                }
            }
            if t.lac.next_timeout().is_some_and(|d| d <= now) {
                t.lac.handle_timeout(now);
            }
            while let Ok((n, _)) = t.sock.recv_from(&mut buf) {
                busy = true;
                let msg = &buf[..n];
                if msg.first().is_some_and(|b| b & 0x80 != 0) {
                    t.lac.input(now, msg);
                } else if n > 6 {
                    let sid = u16::from_be_bytes([msg[4], msg[5]]);
                    if let Some(l) = t.links.get_mut(&sid) {
                        l.input(now, &msg[6..]);
                    }
                }
            }
            while let Some(ev) = t.lac.poll_event() {
                match ev {
                    l2tp::Event::Transmit { bytes, .. } => {
                        let _ = t.sock.send_to(&bytes, gw);
                    }
                    l2tp::Event::SessionUp(info) => {
                        let mut l = Link::client(
                            ppp::ClientConfig::new(
                                &a.user,
                                Password::new(a.password.as_bytes().to_vec()),
                            ),
                            now,
                        );
                        l.handle_timeout(now);
                        t.links.insert(info.local_session_id, l);
                    }
                    l2tp::Event::SessionDown { session, .. } => {
                        t.links.remove(&session.local_session_id);
                    }
                    _ => {}
                }
            }
            let ptid = t.lac.peer_tunnel_id();
            let mut ups = 0;
            for (sid, l) in t.links.iter_mut() {
                if l.next_timeout().is_some_and(|d| d <= now) {
                    l.handle_timeout(now);
                }
                while let Some(ev) = l.poll_event() {
                    match ev {
                        ppp::Event::Send(frame) => {
                            let psid = t.lac.peer_session_id(*sid).unwrap_or(0);
                            let mut p = Vec::with_capacity(6 + frame.len());
                            p.extend_from_slice(&[0x00, 0x02]);
                            p.extend_from_slice(&ptid.to_be_bytes());
                            p.extend_from_slice(&psid.to_be_bytes());
                            p.extend_from_slice(&frame);
                            let _ = t.sock.send_to(&p, gw);
                        }
                        ppp::Event::Up(_) | ppp::Event::Down(_) | ppp::Event::Finished => {}
                        ppp::Event::Authenticate(_) => {}
                    }
                }
                if l.is_up() {
                    ups += 1;
                }
            }
            t.up = ups;
            up_total += ups;
        }
        if all_up_at.is_none() && up_total >= a.sessions {
            let d = t0.elapsed();
            all_up_at = Some(Instant::now());
            println!(
                "{{\"sessions_up\":{up_total},\"setup_seconds\":{:.3},\"setup_per_s\":{:.0}}}",
                d.as_secs_f64(),
                up_total as f64 / d.as_secs_f64()
            );
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "hold: {up_total}/{} sessions up after {:.1} s",
                a.sessions,
                t0.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        if all_up_at.is_some_and(|t| t.elapsed() > Duration::from_secs(a.hold_seconds)) {
            break;
        }
        if t0.elapsed() > Duration::from_secs(600) && all_up_at.is_none() {
            return Err(format!(
                "only {up_total}/{} sessions came up in 600 s",
                a.sessions
            ));
        }
        if !busy {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    Ok(())
}
