//! `sekisho-perf gateway`: sekisho's real data path on two interfaces. Steering on
//! both (outside: ESP and UDP 500/4500/1701; inside: the client pool), one pinned
//! [`Worker`] per worker core over [`XdpPort`] (outside) and [`XdpInside`] (inside),
//! sessions installed through [`WorkerCmd`] as the control thread installs them
//! (the inbound SPI allocated here, as the control thread does, then InstallSaPair;
//! InstallSession at ICCN without an address; SetSessionAddress when IPCP is up).

use std::net::Ipv4Addr;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use serde_json::json;

use sekisho::crypto::{Backend, Transform};
use sekisho::dataplane::chain::{Pkt, Shard};
use sekisho::dataplane::session::Session;
use sekisho::dataplane::stats::{DropReason, Stats};
use sekisho::dataplane::worker::{
    ControlMsg, Outside, SendResult, SharedStats, Worker, WorkerCmd, WorkerConfig,
};
use sekisho::dataplane::xdp::loader::{Side, SteerConfig, Steering};
use sekisho::dataplane::xdp::port::{XdpInside, XdpPort, interface_mac};
use sekisho::dataplane::xdp::xsk::XdpFrame;
use sekisho::esp::sa::{Direction, Encap, Lifetime, Mode, Sa, SaConfig};
use sekisho::esp::shard::{SpiAllocators, SpiLayout, SpiTable};

use crate::common::*;

/// Options of `gateway`.
pub struct Args {
    pub outside: String,
    pub inside: String,
    pub sessions: u32,
    pub transform: String,
    pub workers: u16,
    pub keys: String,
    pub seconds: Option<f64>,
    pub cpus: Option<Vec<usize>>,
    pub pool: String,
    pub client_addr: Ipv4Addr,
    pub client_port_base: u16,
    pub local: Option<Ipv4Addr>,
    pub sizes: XskSizes,
    pub batch: usize,
    pub seed: u64,
}

/// [`XdpPort`] with its socket's counters published for the main thread: the kernel
/// counts what the steering program could not hand to the socket (rx ring full, no
/// fill frame), which no [`DropReason`] can see. It also clocks the CPU time of the
/// thread that polls it (the worker) while packets flow. Everything else is
/// delegated.
pub struct Observed {
    port: XdpPort,
    shared: Arc<SharedXsk>,
    last: Option<Instant>,
    busy: Option<BusyClock>,
}

impl Observed {
    /// Wraps a port.
    pub fn new(port: XdpPort, shared: Arc<SharedXsk>) -> Observed {
        shared.publish(port.xsk(), None);
        Observed {
            port,
            shared,
            last: None,
            busy: None,
        }
    }

    fn publish(&mut self) {
        if let Some(b) = self.busy.as_mut() {
            b.tick();
        }
        self.shared.publish(self.port.xsk(), self.busy.as_ref());
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        self.publish();
    }
}

impl Outside for Observed {
    type Frame = XdpFrame;

    fn recv(&mut self, out: &mut Vec<Pkt<XdpFrame>>, max: usize) -> usize {
        let n = self.port.recv(out, max);
        // Started on the first call: that is the polling thread.
        let busy = self.busy.get_or_insert_with(BusyClock::start);
        busy.saw(n);
        let now = Instant::now();
        if self
            .last
            .is_none_or(|l| now.duration_since(l) >= Duration::from_millis(20))
        {
            self.last = Some(now);
            self.publish();
        }
        n
    }
    fn send(&mut self, pkts: &mut Vec<Pkt<XdpFrame>>) -> SendResult {
        self.port.send(pkts)
    }
    fn alloc(&mut self) -> Option<XdpFrame> {
        self.port.alloc()
    }
    fn recycle(&mut self, f: XdpFrame) {
        self.port.recycle(f)
    }
    fn headroom(&self) -> usize {
        self.port.headroom()
    }
    fn fds(&self) -> Vec<BorrowedFd<'_>> {
        self.port.fds()
    }
}

struct WorkerHandle {
    cmds: Sender<WorkerCmd>,
    up: Receiver<ControlMsg>,
    stats: Arc<SharedStats>,
    xsk_out: Arc<SharedXsk>,
    thread: std::thread::JoinHandle<()>,
    cpu: usize,
}

fn sa_config(
    spi: u32,
    direction: Direction,
    t: Transform,
    encap: Encap,
    local: Ipv4Addr,
    remote: Ipv4Addr,
) -> SaConfig {
    SaConfig {
        spi,
        direction,
        transform: t,
        esn: false,
        mode: Mode::Transport,
        encap,
        local,
        remote,
        replay_window: 1024,
        lifetime: Lifetime::default(),
        backend: Backend::default(),
    }
}

/// Runs the gateway until a signal or `--seconds`.
pub fn run(a: Args, signals: &Signals) -> Res<()> {
    let t = Transform::from_name(&a.transform).ok_or(format!(
        "unknown transform {:?} (known: {})",
        a.transform,
        Transform::ALL.map(|t| t.name()).join(", ")
    ))?;
    let (pool_net, pool_len) = parse_net(&a.pool)?;
    let pool_size = 1u64 << (32 - u32::from(pool_len));
    if a.sessions == 0 || u64::from(a.sessions) + 2 > pool_size || a.sessions > 65_000 {
        return Err(format!(
            "--sessions {}: 1..=65000 and fewer than the pool {} holds",
            a.sessions, a.pool
        ));
    }
    if u32::from(a.client_port_base) + a.sessions > 65_535 {
        return Err("--client-port-base + --sessions exceeds 65535".into());
    }
    if a.workers == 0 || u32::from(a.workers) > SpiLayout::DEFAULT.workers() {
        return Err(format!("--workers {}: 1..=64", a.workers));
    }
    let local = match a.local {
        Some(l) => l,
        None => interface_ipv4(&a.outside).ok_or(format!(
            "{} has no IPv4 address (or pass --local)",
            a.outside
        ))?,
    };
    let mac_out = interface_mac(&a.outside).ok_or(format!("no MAC for {}", a.outside))?;
    let mac_in = interface_mac(&a.inside).ok_or(format!("no MAC for {}", a.inside))?;
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
    eprintln!(
        "gateway: XDP attached to {} ({:?}) and {} ({:?})",
        a.outside, steer_out.mode, a.inside, steer_in.mode
    );

    // Workers: one socket per (interface, queue = worker), registered in the
    // steering programs' maps, a shard each, pinned threads.
    let per_worker = (a.sessions as usize).div_ceil(usize::from(a.workers));
    let mut workers = Vec::new();
    let stop = Arc::new(AtomicBool::new(false));
    for w in 0..a.workers {
        let q = u32::from(w);
        let (xo, zc_o) = open_xsk(&a.outside, q, a.sizes)?;
        steer_out.register(q, &xo).ctx("register outside socket")?;
        let (xi, zc_i) = open_xsk(&a.inside, q, a.sizes)?;
        steer_in.register(q, &xi).ctx("register inside socket")?;
        let xsk_out = Arc::new(SharedXsk::default());
        let outside = Observed::new(XdpPort::new(xo, mac_out), xsk_out.clone());
        let inside = XdpInside::new(xi, mac_in);
        let (cmd_tx, cmd_rx) = unbounded();
        let (up_tx, up_rx) = bounded(1024);
        let stats = Arc::new(SharedStats::default());
        let cpu = cpu_for(&a.cpus, usize::from(w));
        let shard = Shard::new(SpiTable::new(w, SpiLayout::DEFAULT, per_worker), true);
        let cfg = WorkerConfig {
            id: w,
            batch: a.batch,
            idle_wait: Duration::from_millis(1),
            workers: usize::from(a.workers),
            tunnel_bits: sekisho::dataplane::runtime::tunnel_bits(usize::from(a.workers)),
            answer_ping_on: None,
        };
        let (st, sp) = (stats.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name(format!("worker-{w}"))
            .spawn(move || {
                if let Err(e) = pin(cpu) {
                    eprintln!("worker {w}: {e} (running unpinned)");
                }
                let mut worker = Worker::new(cfg, shard, outside, inside, cmd_rx, up_tx, st, sp);
                worker.run();
            })
            .ctx("spawn worker")?;
        eprintln!(
            "gateway: worker {w} on CPU {cpu}, queue {q}: outside {} inside {}",
            if zc_o { "zero-copy" } else { "copy mode" },
            if zc_i { "zero-copy" } else { "copy mode" }
        );
        workers.push(WorkerHandle {
            cmds: cmd_tx,
            up: up_rx,
            stats,
            xsk_out,
            thread,
            cpu,
        });
    }

    // Sessions, as the control thread installs them.
    let installed = Instant::now();
    let mut rng = SplitMix(a.seed);
    let now = Instant::now();
    let mut entries = Vec::with_capacity(a.sessions as usize);
    let mut spis = SpiAllocators::new(SpiLayout::DEFAULT, a.workers).map_err(|e| e.to_string())?;
    for k in 0..a.sessions {
        let w = (k % u32::from(a.workers)) as u16;
        let keymat_seed = rng.next_u64();
        let mut kr = SplitMix(keymat_seed);
        let k_in = kr.bytes(t.keymat_len());
        let k_out = kr.bytes(t.keymat_len());
        let client_port = a.client_port_base + k as u16;
        let e = SessionEntry {
            index: k,
            worker: w,
            queue: u32::from(w),
            client_addr: a.client_addr,
            client_port,
            inner_addr: Ipv4Addr::from(u32::from(pool_net) + 2 + k),
            gw_tunnel: (k + 1) as u16,
            gw_session: 1,
            client_tunnel: (k % 60_000 + 1000) as u16,
            client_session: 7,
            spi_in: 0,
            spi_out: 0xc000_0000 | k,
            keymat_seed,
            keymat_in: hex(&k_in),
            keymat_out: hex(&k_out),
        };
        let gw_encap = Encap::Udp {
            local_port: 4500,
            remote_port: client_port,
        };
        let inbound = Sa::new(
            &sa_config(0, Direction::Inbound, t, gw_encap, local, a.client_addr),
            &k_in,
            rng.bytes(16).try_into().unwrap_or([1; 16]),
            now,
        )
        .map_err(|e| format!("inbound SA: {e:?}"))?;
        let outbound = Sa::new(
            &sa_config(
                e.spi_out,
                Direction::Outbound,
                t,
                gw_encap,
                local,
                a.client_addr,
            ),
            &k_out,
            rng.bytes(16).try_into().unwrap_or([2; 16]),
            now,
        )
        .map_err(|e| format!("outbound SA: {e:?}"))?;
        let spi = spis
            .allocate(w)
            .map_err(|_| format!("worker {w}: no SPI left"))?;
        workers[usize::from(w)]
            .cmds
            .send(WorkerCmd::InstallSaPair {
                inbound: Box::new(inbound.with_spi(spi)),
                outbound: Box::new(outbound),
            })
            .ctx("worker gone")?;
        let mut e = e;
        e.spi_in = spi;
        entries.push(e);
    }
    for e in &entries {
        let spi = e.spi_in;
        workers[usize::from(e.worker)]
            .cmds
            .send(WorkerCmd::InstallSession(Box::new(Session {
                local_tunnel_id: e.gw_tunnel,
                local_session_id: e.gw_session,
                peer_tunnel_id: e.client_tunnel,
                peer_session_id: e.client_session,
                peer_port: 1701,
                inbound_spi: Some(spi),
                prev_inbound_spi: None,
                outbound: None,
                inner_addr: None,
                acfc: false,
                pfc: false,
                plain: None,
                counters: Default::default(),
            })))
            .ctx("worker gone")?;
    }
    for e in &entries {
        workers[usize::from(e.worker)]
            .cmds
            .send(WorkerCmd::SetSessionAddress {
                tunnel: e.gw_tunnel,
                session: e.gw_session,
                addr: e.inner_addr,
            })
            .ctx("worker gone")?;
    }
    // The commands are applied in order between batches; wait until every worker has
    // drained its queue before telling the generator to go.
    let deadline = Instant::now() + Duration::from_secs(30);
    while workers.iter().any(|w| !w.cmds.is_empty()) {
        if Instant::now() > deadline {
            return Err("workers did not apply the session commands".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    eprintln!(
        "gateway: {} sessions ({}) installed in {:.0} ms on {} worker(s); local {local}, pool {}",
        a.sessions,
        t,
        installed.elapsed().as_secs_f64() * 1e3,
        a.workers,
        a.pool
    );
    KeysFile {
        transform: t.name().into(),
        gateway: local,
        gateway_port: 4500,
        workers: a.workers,
        pool: a.pool.clone(),
        sessions: entries,
    }
    .store(&a.keys)?;

    // Stats every second until a signal or --seconds.
    let started = Instant::now();
    let end = a.seconds.map(|s| started + Duration::from_secs_f64(s));
    let mut prev = Stats::default();
    let mut to_control = 0u64;
    loop {
        let left = end.map_or(Duration::from_secs(1), |e| {
            e.saturating_duration_since(Instant::now())
                .min(Duration::from_secs(1))
        });
        let sig = signals.wait(left);
        for w in &workers {
            to_control += w.up.try_iter().count() as u64;
        }
        let s = total(&workers);
        eprintln!(
            "gateway t={:.0}s {}",
            started.elapsed().as_secs_f64(),
            line(&s, &prev, &workers, &steer_out)
        );
        prev = s;
        if sig || end.is_some_and(|e| Instant::now() >= e) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let mut per_worker = Vec::new();
    for w in workers.iter() {
        let _ = w.cmds.send(WorkerCmd::Stop);
    }
    let mut sum = Stats::default();
    let mut port = PortSnap::default();
    for w in workers {
        let _ = w.thread.join();
        to_control += w.up.try_iter().count() as u64;
        let s = w.stats.snapshot();
        let p = w.xsk_out.snapshot();
        per_worker.push(json!({
            "cpu": w.cpu,
            "stats": sekisho::daemon::stats_json(&s),
            "outside": p,
        }));
        sum.add(&s);
        port.add(&p);
    }
    let (redirected, passed, malformed) = steer_out.counters();
    let (in_red, in_pass, in_mal) = steer_in.counters();
    let out = json!({
        "mode": "gateway",
        "sessions": a.sessions,
        "workers": a.workers,
        "transform": t.name(),
        "seconds": elapsed,
        "batch": a.batch,
        "stats": sekisho::daemon::stats_json(&sum),
        // What the worker handed to the inside link.
        "out_packets": sum.decap_out - sum.drops_for(DropReason::TxFull),
        "control_msgs_received": to_control,
        "outside": port,
        "left_in_rx_ring": left_in_ring(redirected, &port),
        "port_uncounted": port.user.rx as i64 - sum.decap_in as i64,
        "steer_outside": {"redirected": redirected, "passed": passed, "malformed": malformed},
        "steer_inside": {"redirected": in_red, "passed": in_pass, "malformed": in_mal},
        "per_worker": per_worker,
    });
    println!("{out}");
    eprintln!(
        "gateway: final {}",
        line(&sum, &Stats::default(), &[], &steer_out)
    );
    Ok(())
}

fn total(ws: &[WorkerHandle]) -> Stats {
    let mut s = Stats::default();
    for w in ws {
        s.add(&w.stats.snapshot());
    }
    s
}

/// Packets the steering program redirected to the outside sockets that were neither
/// dropped by the kernel nor received by the worker: still in the rx ring at stop.
pub fn left_in_ring(redirected: u64, p: &PortSnap) -> i64 {
    redirected as i64
        - p.kernel.rx_ring_full as i64
        - p.kernel.rx_dropped as i64
        - p.kernel.rx_invalid_descs as i64
        - p.user.rx as i64
}

fn line(s: &Stats, prev: &Stats, ws: &[WorkerHandle], steer: &Steering) -> String {
    let mut out = format!(
        "decap_in={} (+{}) decap_out={} (+{}) encap_in={} encap_out={} to_control={}",
        s.decap_in,
        s.decap_in - prev.decap_in,
        s.decap_out,
        s.decap_out - prev.decap_out,
        s.encap_in,
        s.encap_out,
        s.to_control
    );
    let drops: Vec<String> = DropReason::ALL
        .iter()
        .filter(|r| s.drops_for(**r) > 0)
        .map(|r| format!("{}={}", r.name(), s.drops_for(*r)))
        .collect();
    if !drops.is_empty() {
        out += &format!(" drops{{{}}}", drops.join(","));
    }
    let mut k = KernelXsk::default();
    for w in ws {
        k.add(&w.xsk_out.snapshot().kernel);
    }
    if k.lost() > 0 {
        out += &format!(
            " xsk_outside{{rx_ring_full={},rx_dropped={}}}",
            k.rx_ring_full, k.rx_dropped
        );
    }
    let (r, p, m) = steer.counters();
    out += &format!(" steer_outside{{redirected={r},passed={p},malformed={m}}}");
    out
}
