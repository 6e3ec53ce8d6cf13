//! `sekisho-perf forward`: the no-crypto baseline on the same link. The same steering
//! program and outside port as the gateway ([`XdpPort`] receives the outer IPv4
//! packet), then what [`XdpInside`](sekisho::dataplane::xdp::port::XdpInside) does
//! with a decapsulated packet — copy it into a frame of the inside socket's UMEM,
//! write an Ethernet header towards the next hop, transmit — but with the whole outer
//! packet and no decapsulation. Loop shape, batch size and idle wait are the
//! worker's, and the inside socket is polled every round as the worker polls it.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde_json::json;

use sekisho::dataplane::chain::Pkt;
use sekisho::dataplane::worker::Outside;
use sekisho::dataplane::xdp::loader::{Side, SteerConfig, Steering};
use sekisho::dataplane::xdp::port::{XdpPort, interface_mac, kernel_neighbours};
use sekisho::dataplane::xdp::xsk::{XDP_PACKET_HEADROOM, XdpFrame, Xsk};

use crate::common::*;
use crate::gateway::{Observed, left_in_ring};

/// Options of `forward`.
pub struct Args {
    pub outside: String,
    pub inside: String,
    pub workers: u16,
    pub next_hop: Ipv4Addr,
    pub next_hop_mac: Option<[u8; 6]>,
    pub pool: String,
    pub seconds: Option<f64>,
    pub cpus: Option<Vec<usize>>,
    pub ready: Option<String>,
    pub sizes: XskSizes,
    pub batch: usize,
}

/// Forwarder counters, published by each thread.
#[derive(Default)]
struct FwdStats {
    rx: AtomicU64,
    forwarded: AtomicU64,
    bytes: AtomicU64,
    /// No free frame in the inside UMEM.
    no_frame: AtomicU64,
    /// Packet longer than an inside frame.
    too_long: AtomicU64,
    /// Inside tx ring full.
    tx_full: AtomicU64,
    /// Frames that came from the inside (not expected in this test).
    from_inside: AtomicU64,
}

impl FwdStats {
    fn json(&self) -> serde_json::Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut drops = Drops::new();
        for (n, v) in [
            ("no_frame", g(&self.no_frame)),
            ("too_long", g(&self.too_long)),
            ("tx_full", g(&self.tx_full)),
            ("from_inside", g(&self.from_inside)),
        ] {
            if v > 0 {
                drops.insert(n.into(), v);
            }
        }
        let total: u64 = drops.values().sum();
        json!({
            "rx": g(&self.rx),
            "forwarded": g(&self.forwarded),
            "forwarded_bytes": g(&self.bytes),
            "drops": drops,
            "drops_total": total,
        })
    }
}

#[derive(Default)]
struct Local {
    rx: u64,
    forwarded: u64,
    bytes: u64,
    no_frame: u64,
    too_long: u64,
    tx_full: u64,
    from_inside: u64,
}

impl Local {
    fn publish(&self, s: &FwdStats) {
        s.rx.store(self.rx, Ordering::Relaxed);
        s.forwarded.store(self.forwarded, Ordering::Relaxed);
        s.bytes.store(self.bytes, Ordering::Relaxed);
        s.no_frame.store(self.no_frame, Ordering::Relaxed);
        s.too_long.store(self.too_long, Ordering::Relaxed);
        s.tx_full.store(self.tx_full, Ordering::Relaxed);
        s.from_inside.store(self.from_inside, Ordering::Relaxed);
    }
}

const ETH: usize = 14;

#[allow(clippy::too_many_arguments)]
fn forward_loop(
    mut outside: Observed,
    mut inside: Xsk,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    batch: usize,
    stats: Arc<FwdStats>,
    stop: Arc<AtomicBool>,
) {
    let mut rx: Vec<Pkt<XdpFrame>> = Vec::with_capacity(batch);
    let mut tx: Vec<(XdpFrame, usize, usize)> = Vec::with_capacity(batch);
    let mut in_rx: Vec<(XdpFrame, usize, usize)> = Vec::with_capacity(batch);
    let mut l = Local::default();
    let mut last_publish = Instant::now();
    let h = XDP_PACKET_HEADROOM;
    while !stop.load(Ordering::Relaxed) {
        let n = outside.recv(&mut rx, batch);
        l.rx += n as u64;
        for p in rx.drain(..) {
            let len = p.end - p.start;
            match inside.alloc() {
                None => l.no_frame += 1,
                Some(mut f) => {
                    let b = f.as_mut();
                    if h + len > b.len() {
                        l.too_long += 1;
                        inside.recycle(f);
                    } else {
                        b[h..h + len].copy_from_slice(&p.buf.as_ref()[p.start..p.end]);
                        let e = &mut b[h - ETH..h];
                        e[0..6].copy_from_slice(&dst_mac);
                        e[6..12].copy_from_slice(&src_mac);
                        e[12..14].copy_from_slice(&[0x08, 0x00]);
                        l.bytes += len as u64;
                        tx.push((f, h - ETH, h + len));
                    }
                }
            }
            outside.recycle(p.buf);
        }
        if !tx.is_empty() {
            let want = tx.len() as u64;
            let sent = inside.tx_batch(tx.drain(..)) as u64;
            l.forwarded += sent;
            l.tx_full += want - sent;
        }
        // The worker asks its inside port for packets every round: so does this.
        in_rx.clear();
        let m = inside.rx_batch(&mut in_rx, batch);
        for (f, _, _) in in_rx.drain(..) {
            l.from_inside += 1;
            inside.recycle(f);
        }
        if n + m == 0 {
            let fds = outside.fds();
            let mut pf: Vec<PollFd> = fds
                .into_iter()
                .chain(std::iter::once(std::os::fd::AsFd::as_fd(&inside)))
                .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
                .collect();
            let _ = poll(&mut pf, PollTimeout::from(1u16));
        }
        if n + m == 0 || last_publish.elapsed() >= Duration::from_millis(5) {
            l.publish(&stats);
            last_publish = Instant::now();
        }
    }
    l.publish(&stats);
}

/// Runs the forwarder until a signal or `--seconds`.
pub fn run(a: Args, signals: &Signals) -> Res<()> {
    let (pool_net, pool_len) = parse_net(&a.pool)?;
    let mac_out = interface_mac(&a.outside).ok_or(format!("no MAC for {}", a.outside))?;
    let mac_in = interface_mac(&a.inside).ok_or(format!("no MAC for {}", a.inside))?;
    let dst_mac = match a.next_hop_mac {
        Some(m) => m,
        None => *kernel_neighbours().get(&a.next_hop).ok_or(format!(
            "no neighbour entry for {} (add one: ip neigh replace {} lladdr MAC dev {} nud permanent)",
            a.next_hop, a.next_hop, a.inside
        ))?,
    };
    let steer_cfg = SteerConfig {
        ike_port: 500,
        natt_port: 4500,
        l2tp_port: 1701,
        pool: Some((pool_net, pool_len)),
    };
    let mut steer_out = Steering::attach(&a.outside, Side::Outside, &steer_cfg)
        .ctx(&format!("XDP on {}", a.outside))?;
    let mut steer_in = Steering::attach(&a.inside, Side::Inside, &steer_cfg)
        .ctx(&format!("XDP on {}", a.inside))?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for w in 0..a.workers {
        let q = u32::from(w);
        let (xo, zc_o) = open_xsk(&a.outside, q, a.sizes)?;
        steer_out.register(q, &xo).ctx("register outside socket")?;
        let (xi, zc_i) = open_xsk(&a.inside, q, a.sizes)?;
        steer_in.register(q, &xi).ctx("register inside socket")?;
        let xsk_out = Arc::new(SharedXsk::default());
        let outside = Observed::new(XdpPort::new(xo, mac_out), xsk_out.clone());
        let stats = Arc::new(FwdStats::default());
        let cpu = cpu_for(&a.cpus, usize::from(w));
        let (st, sp, batch) = (stats.clone(), stop.clone(), a.batch);
        let th = std::thread::Builder::new()
            .name(format!("forward-{w}"))
            .spawn(move || {
                if let Err(e) = pin(cpu) {
                    eprintln!("forward {w}: {e} (running unpinned)");
                }
                forward_loop(outside, xi, mac_in, dst_mac, batch, st, sp);
            })
            .ctx("spawn forwarder")?;
        eprintln!(
            "forward: thread {w} on CPU {cpu}, queue {q}: outside {} inside {}",
            if zc_o { "zero-copy" } else { "copy mode" },
            if zc_i { "zero-copy" } else { "copy mode" }
        );
        threads.push((th, stats, xsk_out, cpu));
    }
    mark_ready(&a.ready)?;
    eprintln!(
        "forward: ready, {} → {} next hop {}",
        a.outside, a.inside, a.next_hop
    );

    let started = Instant::now();
    let end = a.seconds.map(|s| started + Duration::from_secs_f64(s));
    let mut prev_rx = 0;
    loop {
        let left = end.map_or(Duration::from_secs(1), |e| {
            e.saturating_duration_since(Instant::now())
                .min(Duration::from_secs(1))
        });
        let sig = signals.wait(left);
        let rx: u64 = threads.iter().map(|t| t.1.rx.load(Ordering::Relaxed)).sum();
        let fwd: u64 = threads
            .iter()
            .map(|t| t.1.forwarded.load(Ordering::Relaxed))
            .sum();
        let (r, p, m) = steer_out.counters();
        eprintln!(
            "forward t={:.0}s rx={rx} (+{}) forwarded={fwd} steer_outside{{redirected={r},passed={p},malformed={m}}}",
            started.elapsed().as_secs_f64(),
            rx - prev_rx
        );
        prev_rx = rx;
        if sig || end.is_some_and(|e| Instant::now() >= e) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let mut per = Vec::new();
    let mut port = PortSnap::default();
    let (mut rx, mut fwd, mut bytes, mut drops_total) = (0u64, 0u64, 0u64, 0u64);
    let mut drops = Drops::new();
    for (th, stats, xsk_out, cpu) in threads {
        let _ = th.join();
        let p = xsk_out.snapshot();
        port.add(&p);
        let s = stats.json();
        rx += s["rx"].as_u64().unwrap_or(0);
        fwd += s["forwarded"].as_u64().unwrap_or(0);
        bytes += s["forwarded_bytes"].as_u64().unwrap_or(0);
        drops_total += s["drops_total"].as_u64().unwrap_or(0);
        if let Some(d) = s["drops"].as_object() {
            for (n, v) in d {
                *drops.entry(n.clone()).or_default() += v.as_u64().unwrap_or(0);
            }
        }
        per.push(json!({"cpu": cpu, "stats": s, "outside": p}));
    }
    let (redirected, passed, malformed) = steer_out.counters();
    let out = json!({
        "mode": "forward",
        "workers": a.workers,
        "seconds": elapsed,
        "batch": a.batch,
        "stats": {"rx": rx, "forwarded": fwd, "forwarded_bytes": bytes, "drops": drops, "drops_total": drops_total},
        "out_packets": fwd,
        "outside": port,
        "left_in_rx_ring": left_in_ring(redirected, &port),
        "port_uncounted": port.user.rx as i64 - rx as i64,
        "steer_outside": {"redirected": redirected, "passed": passed, "malformed": malformed},
        "per_worker": per,
    });
    println!("{out}");
    Ok(())
}
