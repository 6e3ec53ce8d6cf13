//! Session setup rate of the control plane, with the sans-IO machines in memory: one
//! LNS and one LAC exchange SCCRQ…ICCN, then a PPP server link and a PPP client link
//! run LCP, MS-CHAPv2 (verified by the local users backend) and IPCP (pool address).
//! One "setup" is a complete L2TP + PPP session from ICRQ to both links up; tunnels
//! carry 100 sessions each. IKE is not included (that is issue 5's part).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sekisho::aaa::pool::Pool;
use sekisho::aaa::users::LocalUsers;
use sekisho::aaa::{AuthBackend, AuthResult, Password, RequestId};
use sekisho::l2tp::{self, Lac, LacConfig, Lns, LnsConfig};
use sekisho::ppp::{self, Link};

const PER_TUNNEL: usize = 100;

/// Sets up `PER_TUNNEL` sessions over one tunnel; returns how many came up.
fn one_tunnel(users: &mut LocalUsers, pool: &mut Pool) -> usize {
    let now = Instant::now();
    let lns_peer = l2tp::PeerKey::plain(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 1701));
    let lac_peer = l2tp::PeerKey::plain(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 1701));
    let mut lns = Lns::new(LnsConfig::default());
    let mut lac = Lac::new(
        now,
        LacConfig {
            tunnel: l2tp::TunnelConfig::default(),
            peer: lns_peer,
        },
    );
    let mut servers: HashMap<(u16, u16), Link> = HashMap::new();
    let mut clients: HashMap<u16, Link> = HashMap::new();
    // LAC local session id → LNS (tunnel, session) once both sides know it.
    let mut pairs: HashMap<u16, (u16, u16)> = HashMap::new();
    let mut up = 0;
    let mut opened = 0;
    let mut next_req = 0u64;
    let mut pending: HashMap<RequestId, (u16, u16)> = HashMap::new();
    for _round in 0..10_000 {
        let mut moved = false;
        if lac.is_established() && opened < PER_TUNNEL {
            while opened < PER_TUNNEL && lac.open_session(now).is_some() {
                opened += 1;
            }
        }
        while let Some(ev) = lac.poll_event() {
            moved = true;
            match ev {
                l2tp::Event::Transmit { bytes, .. } => lns.input(now, lac_peer, &bytes, 0),
                l2tp::Event::SessionUp(info) => {
                    let mut l = Link::client(
                        ppp::ClientConfig::new("u1", Password::new(b"secret-password".to_vec())),
                        now,
                    );
                    l.handle_timeout(now);
                    clients.insert(info.local_session_id, l);
                }
                _ => {}
            }
        }
        while let Some(ev) = lns.poll_event() {
            moved = true;
            match ev {
                l2tp::Event::Transmit { bytes, .. } => lac.input(now, &bytes),
                l2tp::Event::SessionUp(info) => {
                    let mut l =
                        Link::server(ppp::ServerConfig::new(Ipv4Addr::new(10, 99, 0, 1)), now);
                    l.handle_timeout(now);
                    servers.insert((info.local_tunnel_id, info.local_session_id), l);
                    pairs.insert(
                        info.peer_session_id,
                        (info.local_tunnel_id, info.local_session_id),
                    );
                }
                _ => {}
            }
        }
        for (lac_sid, lns_ids) in pairs.iter() {
            let (Some(s), Some(c)) = (servers.get_mut(lns_ids), clients.get_mut(lac_sid)) else {
                continue;
            };
            while let Some(ev) = s.poll_event() {
                moved = true;
                match ev {
                    ppp::Event::Send(f) => c.input(now, &f),
                    ppp::Event::Authenticate(req) => {
                        let id = RequestId(next_req);
                        next_req += 1;
                        pending.insert(id, *lns_ids);
                        users.submit(id, req);
                        while let Some((id, mut r)) = users.poll() {
                            if let AuthResult::Accept { attributes } = &mut r {
                                let _ = pool.assign(attributes);
                            }
                            if pending.remove(&id).is_some() {
                                s.auth_result(now, r);
                            }
                        }
                    }
                    ppp::Event::Up(_) => up += 1,
                    _ => {}
                }
            }
            while let Some(ev) = c.poll_event() {
                moved = true;
                if let ppp::Event::Send(f) = ev {
                    s.input(now, &f);
                }
            }
        }
        if up == PER_TUNNEL {
            break;
        }
        if !moved {
            // Delayed ZLB acks and the like: let the machines' timers run.
            let later = now + Duration::from_millis(300);
            lns.handle_timeout(later);
            lac.handle_timeout(later);
        }
    }
    for s in servers.values() {
        if let Some(a) = s.assigned_address() {
            pool.release(a);
        }
    }
    up
}

fn setup(c: &mut Criterion) {
    let mut users = LocalUsers::new();
    users
        .add("u1", Password::new(b"secret-password".to_vec()), None)
        .unwrap();
    let mut pool = Pool::parse("10.99.0.0/16").unwrap();
    assert_eq!(
        one_tunnel(&mut users, &mut pool),
        PER_TUNNEL,
        "every session comes up"
    );
    let mut g = c.benchmark_group("setup");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(PER_TUNNEL as u64));
    g.bench_function("l2tp+ppp-mschapv2/100-per-tunnel", |b| {
        b.iter(|| one_tunnel(&mut users, &mut pool))
    });
    g.finish();
}

criterion_group!(benches, setup);
criterion_main!(benches);
