//! The client fleet of `sekisho demo`: a few threads, each owning a slice of the
//! clients and their sockets. A thread starts its clients a window at a time (so the
//! gateway sees a steady stream of handshakes, not one burst), waits on all its
//! sockets with one epoll, runs the machines' timers, and in the traffic phase sends bursts of
//! sealed packets per client with one `sendmmsg`, a latency probe every millisecond,
//! and counts what comes back.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use nix::poll::PollTimeout;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

use super::client::{DemoClient, Stage};
use super::world::{Layout, enter};
use super::{Phase, Shared, Size};

/// Clients in handshake at once, over the whole fleet (the default of
/// [`Options::window`](super::Options)).
pub const WINDOW: usize = 256;
/// Inner packets per client per `sendmmsg`.
const BURST: usize = 16;
/// Clients served per send round before the sockets are polled again.
const CLIENTS_PER_ROUND: usize = 16;
/// UDP port of the inside host's discard service (bulk traffic).
pub const DISCARD_PORT: u16 = 9;
/// UDP port of the inside host's echo service (latency probes).
pub const ECHO_PORT: u16 = 7;
/// First client UDP port.
pub const PORT_BASE: u16 = 20_000;

/// What one fleet thread reports at the end.
pub struct ThreadResult {
    /// Round-trip times of the probes under load, microseconds.
    pub rtt_us: Histogram<u64>,
    /// Round-trip times of the probes before the bulk traffic (idle gateway).
    pub idle_rtt_us: Histogram<u64>,
    /// Failure reasons and how many clients gave each.
    pub failures: HashMap<String, usize>,
    /// The last session that came up.
    pub last_up: Option<Instant>,
}

/// What every fleet thread needs.
#[derive(Clone)]
pub struct FleetCtx {
    /// Namespaces and addresses.
    pub layout: Layout,
    /// Counters and phase.
    pub shared: Arc<Shared>,
    /// Inner packet sizes.
    pub size: Size,
    /// Fleet threads (for the window share).
    pub threads: usize,
    /// Clients in handshake at once, over the whole fleet.
    pub window: usize,
    /// The DH group the clients offer.
    pub group: crate::ike::v1::crypto::DhGroup,
}

/// Runs clients `ks` until the phase is `Stop`.
pub fn run(ctx: FleetCtx, ks: std::ops::Range<usize>) -> Result<ThreadResult, String> {
    enter(ctx.layout.client_ns())?;
    let sh = &ctx.shared;
    let window = (ctx.window / ctx.threads).max(1);
    let mut clients: Vec<DemoClient> = Vec::with_capacity(ks.len());
    let mut counted: Vec<bool> = Vec::with_capacity(ks.len());
    let mut next_k = ks.start;
    let mut in_handshake = 0usize;
    let mut failures: HashMap<String, usize> = HashMap::new();
    let mut last_up = None;
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let mut idle_hist = hist.clone();
    let mut frame = vec![0u8; 4096];
    let mut burst: Vec<Vec<u8>> = (0..BURST).map(|_| vec![0u8; 2048]).collect();
    let mut cursor = 0usize;
    let mut sizes = ctx.size.iter();
    let mut next_probe = Instant::now();
    let mut next_service = Instant::now();
    let mut ready: Vec<usize> = Vec::new();
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| format!("epoll: {e}"))?;
    let mut events = vec![EpollEvent::empty(); 1024];
    let mut credit = super::Window::new(super::IN_FLIGHT / ctx.threads as u64);
    loop {
        let phase = sh.phase();
        if phase == Phase::Stop {
            break;
        }
        let now = Instant::now();
        // Start clients while the window has room.
        while next_k < ks.end && in_handshake < window && phase == Phase::Setup {
            let local = SocketAddrV4::new(ctx.layout.clients, PORT_BASE + next_k as u16);
            match DemoClient::start(next_k, local, ctx.layout.gateway, ctx.group, now) {
                Ok(c) => {
                    let ev = EpollEvent::new(EpollFlags::EPOLLIN, clients.len() as u64);
                    epoll
                        .add(c.socket(), ev)
                        .map_err(|e| format!("epoll: {e}"))?;
                    clients.push(c);
                    counted.push(false);
                    in_handshake += 1;
                }
                Err(e) => {
                    *failures.entry(e).or_default() += 1;
                    sh.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            next_k += 1;
        }
        // The sockets with something to read (epoll: the cost is what is ready).
        ready.clear();
        let wait = if phase == Phase::Setup { 2u8 } else { 0 };
        let n = epoll
            .wait(&mut events, PollTimeout::from(wait))
            .unwrap_or(0);
        ready.extend(events[..n].iter().map(|e| e.data() as usize));
        let epoch = sh.epoch;
        let h = if phase == Phase::Idle {
            &mut idle_hist
        } else {
            &mut hist
        };
        for &i in &ready {
            let c = &mut clients[i];
            c.receive(now, &mut frame, |inner| account(inner, sh, epoch, h));
        }
        // Timers and what the machines want sent: handshakes every round, everyone
        // (keepalives) every 20 ms.
        let all = now >= next_service;
        if all {
            next_service = now + Duration::from_millis(20);
        }
        for (i, c) in clients.iter_mut().enumerate() {
            if !(all || matches!(c.stage, Stage::Ike | Stage::L2tp | Stage::Ppp)) {
                continue;
            }
            c.service(now, &mut frame);
            if counted[i] {
                continue;
            }
            match c.stage {
                Stage::Up => {
                    counted[i] = true;
                    in_handshake -= 1;
                    last_up = c.up_at;
                    sh.up.fetch_add(1, Ordering::Relaxed);
                    if let Some(a) = c.inner {
                        sh.inner.lock().map_err(|e| e.to_string())?.push(a);
                    }
                }
                Stage::Failed => {
                    counted[i] = true;
                    in_handshake -= 1;
                    let why = c.failure.clone().unwrap_or_default();
                    *failures.entry(why).or_default() += 1;
                    sh.failed.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
        let inside = ctx.layout.inside;
        if phase == Phase::Idle && now >= next_probe && !clients.is_empty() {
            // Probes alone: the round trip of an idle gateway.
            next_probe = now + Duration::from_millis(1);
            cursor = (cursor + 1) % clients.len();
            let c = &mut clients[cursor];
            if c.stage == Stage::Up
                && c.send_inner(&mut burst[..1], |_, esp, f| {
                    probe_packet(esp, f, inside, epoch)
                }) > 0
            {
                sh.probes_sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        let room = credit.room(
            sh.up_sent.load(Ordering::Relaxed),
            sh.up_pkts.load(Ordering::Relaxed),
            now,
        );
        if phase == Phase::Traffic && !clients.is_empty() && room >= BURST as u64 {
            let rounds = (room / BURST as u64) as usize;
            for _ in 0..CLIENTS_PER_ROUND.min(clients.len()).min(rounds) {
                cursor = (cursor + 1) % clients.len();
                let c = &mut clients[cursor];
                if c.stage != Stage::Up {
                    continue;
                }
                let probe = now >= next_probe;
                if probe {
                    next_probe = now + Duration::from_millis(1);
                }
                let sent = c.send_inner(&mut burst, |j, esp, f| {
                    if probe && j == 0 {
                        probe_packet(esp, f, inside, epoch)
                    } else {
                        esp.inner_packet(f, inside, sizes.next_size())
                    }
                });
                if probe && sent > 0 {
                    sh.probes_sent.fetch_add(1, Ordering::Relaxed);
                }
                let bulk = sent.saturating_sub(usize::from(probe)) as u64;
                sh.up_sent.fetch_add(bulk, Ordering::Relaxed);
            }
        }
    }
    for c in &clients {
        if c.stage != Stage::Up && c.stage != Stage::Failed {
            *failures
                .entry(format!("not up in time (stuck in {:?})", c.stage))
                .or_default() += 1;
        }
    }
    Ok(ThreadResult {
        rtt_us: hist,
        idle_rtt_us: idle_hist,
        failures,
        last_up,
    })
}

/// A latency probe: UDP to the echo port with the send time (ns since `epoch`).
fn probe_packet(
    esp: &crate::dataplane::peer::SimPeer,
    f: &mut [u8],
    dst: Ipv4Addr,
    epoch: Instant,
) -> std::ops::Range<usize> {
    let r = esp.inner_packet(f, dst, 64);
    let p = &mut f[r.clone()];
    p[22..24].copy_from_slice(&ECHO_PORT.to_be_bytes());
    let t = epoch.elapsed().as_nanos() as u64;
    p[28..36].copy_from_slice(&t.to_be_bytes());
    r
}

/// Counts one inner packet a client received: an echoed probe (its round trip goes
/// into the histogram) or bulk traffic from the inside host.
fn account(inner: &[u8], sh: &Shared, epoch: Instant, hist: &mut Histogram<u64>) {
    if inner.len() >= 36 && inner[9] == 17 && inner[20..22] == ECHO_PORT.to_be_bytes() {
        let mut t = [0u8; 8];
        t.copy_from_slice(&inner[28..36]);
        let sent = u64::from_be_bytes(t);
        let now = epoch.elapsed().as_nanos() as u64;
        let _ = hist.record((now.saturating_sub(sent) / 1000).max(1));
        sh.probes_back.fetch_add(1, Ordering::Relaxed);
    } else {
        sh.down_pkts.fetch_add(1, Ordering::Relaxed);
        sh.down_bytes
            .fetch_add(inner.len() as u64, Ordering::Relaxed);
    }
}
