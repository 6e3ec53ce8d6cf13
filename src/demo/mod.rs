//! `sekisho demo`: the whole gateway working on one machine. It builds a private world
//! (network namespaces as root; without root, a user + network namespace on loopback
//! with the socket backend), starts `sekisho run` in it, brings up N simulated
//! L2TP/IPsec clients — each runs IKEv1 Main Mode + Quick Mode, L2TP and PPP
//! MS-CHAPv2 with the project's own machines — then pushes traffic both ways between
//! the clients and an inside host for S seconds with latency probes, and reports.
//! Everything it made (namespaces, veths, the gateway process) goes at the end and on
//! Ctrl-C.

pub mod client;
pub mod fleet;
pub mod inside;
pub mod report;
pub mod world;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::ike::v1::crypto::DhGroup;
pub use report::{SetupCost, Summary};

/// How long the probes run alone before the bulk traffic.
const IDLE_PROBES: Duration = Duration::from_secs(1);

/// The environment variable that marks the re-executed demo inside its own user and
/// network namespace (no root: loopback world).
pub const USERNS_ENV: &str = "SEKISHO_DEMO_USERNS";

/// Which data-plane backend the gateway should use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum IoChoice {
    /// AF_XDP when it attaches (root), else sockets.
    Auto,
    /// AF_XDP only.
    Xdp,
    /// Sockets only.
    Socket,
}

/// Inner packet sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    /// Every inner IPv4 packet this long (64..=1400).
    Fixed(usize),
    /// 7:4:1 of 64, 576 and 1400 octets.
    Imix,
}

impl std::str::FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Size, String> {
        if s.eq_ignore_ascii_case("imix") {
            return Ok(Size::Imix);
        }
        match s.parse::<usize>() {
            Ok(n) if (64..=1400).contains(&n) => Ok(Size::Fixed(n)),
            _ => Err(format!("size {s:?}: 64..=1400 or imix")),
        }
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Size::Fixed(n) => write!(f, "{n}"),
            Size::Imix => f.write_str("imix"),
        }
    }
}

/// A DH group by name (`x25519`, `ecp256`, `ecp384`, `modp2048`, `modp1024`) or
/// by its IKE number.
pub fn parse_group(s: &str) -> Result<DhGroup, String> {
    let g = match s.to_ascii_lowercase().as_str() {
        "x25519" | "curve25519" | "31" => DhGroup::Curve25519,
        "ecp256" | "p256" | "19" => DhGroup::Ecp256,
        "ecp384" | "p384" | "20" => DhGroup::Ecp384,
        "modp2048" | "14" => DhGroup::Modp2048,
        "modp1024" | "2" => DhGroup::Modp1024,
        _ => {
            return Err(format!(
                "DH group {s:?}: x25519, ecp256, ecp384, modp2048 or modp1024"
            ));
        }
    };
    Ok(g)
}

/// Walks the sizes of a [`Size`].
pub struct Sizes {
    size: Size,
    k: usize,
}

impl Sizes {
    /// The next packet's size.
    pub fn next_size(&mut self) -> usize {
        self.k = self.k.wrapping_add(1);
        match self.size {
            Size::Fixed(n) => n,
            Size::Imix => match self.k % 12 {
                0..=6 => 64,
                7..=10 => 576,
                _ => 1400,
            },
        }
    }
}

impl Size {
    /// An endless walk of sizes.
    pub fn iter(self) -> Sizes {
        Sizes { size: self, k: 0 }
    }
}

/// Packets in flight per direction (sent and not yet received at the far end). The
/// senders are self-clocked, like TCP: they offer as much as the path delivers, not
/// more, so the queues stay short and the probes measure the gateway, not a backlog.
pub const IN_FLIGHT: u64 = 512;

/// A sender's share of [`IN_FLIGHT`]. Lost packets would hold the window forever: a
/// sender blocked for 20 ms writes its packets in flight off as lost.
pub struct Window {
    limit: u64,
    written_off: u64,
    blocked_since: Option<Instant>,
}

impl Window {
    /// A window of `limit` packets.
    pub fn new(limit: u64) -> Window {
        Window {
            limit: limit.max(32),
            written_off: 0,
            blocked_since: None,
        }
    }

    /// How many packets may go now, given the direction's totals sent and received.
    pub fn room(&mut self, sent: u64, received: u64, now: Instant) -> u64 {
        let in_flight = sent.saturating_sub(received + self.written_off);
        if in_flight < self.limit {
            self.blocked_since = None;
            return self.limit - in_flight;
        }
        match self.blocked_since {
            Some(t) if now.duration_since(t) > Duration::from_millis(20) => {
                self.written_off += in_flight;
                self.blocked_since = None;
                self.limit
            }
            Some(_) => 0,
            None => {
                self.blocked_since = Some(now);
                0
            }
        }
    }
}

/// The gateway and fleet settings `sekisho demo` and `sekisho-perf handshake` share
/// (their command-line flags).
#[derive(Clone, Debug, clap::Args)]
pub struct FleetArgs {
    /// Gateway data plane: auto (AF_XDP when root), xdp, socket.
    #[arg(long, value_enum, default_value = "auto")]
    pub io: IoChoice,
    /// Gateway worker threads.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Client fleet threads (0: one per 2500 clients, at most the cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// DH group the clients offer: x25519, ecp256, ecp384, modp2048.
    #[arg(long, default_value = "x25519", value_parser = parse_group)]
    pub group: DhGroup,
    /// Clients in handshake at once.
    #[arg(long, default_value_t = fleet::WINDOW)]
    pub window: usize,
}

impl Options {
    /// Options for `clients` clients, `seconds` of traffic of `size`, with `f`'s
    /// gateway and fleet settings (the TUN inside; progress on).
    pub fn new(clients: usize, seconds: f64, size: Size, f: &FleetArgs) -> Options {
        Options {
            clients,
            seconds,
            size,
            io: f.io,
            workers: f.workers,
            fleet_threads: f.threads,
            progress: true,
            inside_xdp: false,
            group: f.group,
            window: f.window,
        }
    }
}

/// What `sekisho demo` was asked for.
#[derive(Clone, Debug)]
pub struct Options {
    /// Simulated clients.
    pub clients: usize,
    /// Seconds of traffic.
    pub seconds: f64,
    /// Inner packet size.
    pub size: Size,
    /// Backend.
    pub io: IoChoice,
    /// Gateway worker threads.
    pub workers: usize,
    /// Fleet threads (0: one per 2 500 clients, at most the cores).
    pub fleet_threads: usize,
    /// Print the live progress line.
    pub progress: bool,
    /// Router mode: the gateway's inside veth through AF_XDP as well (io xdp, netns
    /// world) instead of the TUN device.
    pub inside_xdp: bool,
    /// The DH group the clients offer.
    pub group: DhGroup,
    /// Clients in handshake at once, over the whole fleet.
    pub window: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            clients: 200,
            seconds: 10.0,
            size: Size::Fixed(1400),
            io: IoChoice::Auto,
            workers: 1,
            fleet_threads: 0,
            progress: true,
            inside_xdp: false,
            group: DhGroup::Curve25519,
            window: fleet::WINDOW,
        }
    }
}

/// The phases of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Clients connecting.
    Setup,
    /// Latency probes alone (one second): the idle round trip.
    Idle,
    /// Traffic both ways.
    Traffic,
    /// Everyone stops.
    Stop,
}

/// Counters shared by the fleet, the inside host and the reporter.
pub struct Shared {
    phase: AtomicU8,
    /// The clock of the probes' timestamps.
    pub epoch: Instant,
    /// Sessions up.
    pub up: AtomicU64,
    /// Clients failed.
    pub failed: AtomicU64,
    /// Inner addresses of the sessions that are up (the inside host sends to them).
    pub inner: Mutex<Vec<Ipv4Addr>>,
    /// Bulk packets the clients sent.
    pub up_sent: AtomicU64,
    /// Bulk packets the inside host received, and their inner octets.
    pub up_pkts: AtomicU64,
    /// Inner octets received by the inside host.
    pub up_bytes: AtomicU64,
    /// Packets the inside host sent.
    pub down_sent: AtomicU64,
    /// Bulk packets the clients received.
    pub down_pkts: AtomicU64,
    /// Inner octets received by the clients.
    pub down_bytes: AtomicU64,
    /// Probes sent.
    pub probes_sent: AtomicU64,
    /// Probes echoed back.
    pub probes_back: AtomicU64,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            phase: AtomicU8::new(0),
            epoch: Instant::now(),
            up: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            inner: Mutex::new(Vec::new()),
            up_sent: AtomicU64::new(0),
            up_pkts: AtomicU64::new(0),
            up_bytes: AtomicU64::new(0),
            down_sent: AtomicU64::new(0),
            down_pkts: AtomicU64::new(0),
            down_bytes: AtomicU64::new(0),
            probes_sent: AtomicU64::new(0),
            probes_back: AtomicU64::new(0),
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Setup,
            1 => Phase::Traffic,
            3 => Phase::Idle,
            _ => Phase::Stop,
        }
    }

    fn set_phase(&self, p: Phase) {
        let v = match p {
            Phase::Setup => 0,
            Phase::Traffic => 1,
            Phase::Stop => 2,
            Phase::Idle => 3,
        };
        self.phase.store(v, Ordering::Release);
    }

    fn rates(&self) -> (u64, u64, u64, u64) {
        (
            self.up_pkts.load(Ordering::Relaxed),
            self.up_bytes.load(Ordering::Relaxed),
            self.down_pkts.load(Ordering::Relaxed),
            self.down_bytes.load(Ordering::Relaxed),
        )
    }
}

/// Whether we may build network namespaces (effective root, and not already the
/// re-executed loopback run).
pub fn have_root() -> bool {
    nix::unistd::geteuid().is_root() && std::env::var_os(USERNS_ENV).is_none()
}

/// Runs the demo: world, gateway, fleet, traffic, report. `exe` is the `sekisho`
/// binary (for `sekisho run`).
pub fn run(o: &Options, exe: &std::path::Path) -> Result<Summary, String> {
    let root = have_root();
    if !root && std::env::var_os(USERNS_ENV).is_none() {
        return Err("not root: re-run under `unshare` (see demo::reexec_in_userns)".into());
    }
    if o.clients == 0 || o.clients > 40_000 {
        return Err("--clients: 1..=40000".into());
    }
    if o.seconds < 0.0 || !o.seconds.is_finite() {
        return Err("--seconds: 0 (handshakes only) or more".into());
    }
    if !root && o.io == IoChoice::Xdp {
        return Err("--io xdp needs root (AF_XDP and network namespaces)".into());
    }
    if o.inside_xdp && (!root || o.io != IoChoice::Xdp) {
        return Err("--inside xdp needs --io xdp and root".into());
    }
    raise_fd_limit(o.clients + 256);
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, interrupted.clone()).map_err(|e| e.to_string())?;
    }
    let mut w = world::build(o, exe, root)?;
    if !root {
        eprintln!(
            "sekisho demo: not root — loopback world in a user namespace, socket backend \
             (run as root for network namespaces and AF_XDP)"
        );
    }
    let sh = Arc::new(Shared::new());
    let result = drive(o, &mut w, &sh, &interrupted);
    sh.set_phase(Phase::Stop);
    result
}

fn drive(
    o: &Options,
    w: &mut world::World,
    sh: &Arc<Shared>,
    interrupted: &AtomicBool,
) -> Result<Summary, String> {
    let layout = w.layout.clone();
    // The inside host first, so the first packets find it.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut threads = Vec::new();
    {
        let (l, s) = (layout.clone(), sh.clone());
        threads.push(std::thread::spawn(move || {
            inside::serve(l, s, ready_tx);
            Ok(())
        }));
    }
    ready_rx
        .recv()
        .map_err(|_| "inside host did not start".to_string())??;
    {
        let (l, s, size) = (layout.clone(), sh.clone(), o.size);
        threads.push(std::thread::spawn(move || inside::send(l, s, size)));
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let nthreads = if o.fleet_threads > 0 {
        o.fleet_threads
    } else {
        o.clients.div_ceil(2500).clamp(1, cores)
    }
    .min(o.clients);
    let ctx = fleet::FleetCtx {
        layout: layout.clone(),
        shared: sh.clone(),
        size: o.size,
        threads: nthreads,
        window: o.window.max(1),
        group: o.group,
    };
    let per = o.clients.div_ceil(nthreads);
    let mut fleet_threads = Vec::new();
    let gw_pid = w.gateway_pid().unwrap_or(0);
    let mut cost = report::SetupMeter::new(gw_pid, o.clients);
    let t0 = Instant::now();
    for t in 0..nthreads {
        let ks = t * per..((t + 1) * per).min(o.clients);
        let c = ctx.clone();
        fleet_threads.push(std::thread::spawn(move || fleet::run(c, ks)));
    }

    // Setup: until every client is up or failed, or the deadline.
    let deadline = t0 + Duration::from_secs(30) + Duration::from_millis(20 * o.clients as u64);
    let mut last = (Instant::now(), sh.rates());
    let mut abort = None;
    let tick = |last: &mut (Instant, (u64, u64, u64, u64))| {
        if !o.progress {
            return;
        }
        let now = Instant::now();
        let r = sh.rates();
        let dt = now.duration_since(last.0).as_secs_f64().max(1e-3);
        let gbps = (
            (r.1 - last.1.1) as f64 * 8.0 / dt / 1e9,
            (r.3 - last.1.3) as f64 * 8.0 / dt / 1e9,
        );
        let mpps = (
            (r.0 - last.1.0) as f64 / dt / 1e6,
            (r.2 - last.1.2) as f64 / dt / 1e6,
        );
        eprint!(
            "{}",
            report::progress(
                t0.elapsed().as_secs_f64(),
                sh.up.load(Ordering::Relaxed),
                sh.failed.load(Ordering::Relaxed),
                o.clients,
                gbps,
                mpps
            )
        );
        *last = (now, r);
    };
    let mut next_tick = Instant::now() + Duration::from_millis(250);
    loop {
        // Sampled often (the gateway's CPU per step of sessions up); printed 4× a second.
        std::thread::sleep(Duration::from_millis(10));
        cost.sample(sh.up.load(Ordering::Relaxed));
        if Instant::now() >= next_tick {
            next_tick += Duration::from_millis(250);
            tick(&mut last);
        }
        let done = sh.up.load(Ordering::Relaxed) + sh.failed.load(Ordering::Relaxed);
        if done >= o.clients as u64 || Instant::now() > deadline {
            break;
        }
        abort = abort_reason(interrupted, w);
        if abort.is_some() {
            break;
        }
    }
    let setup_end = Instant::now();
    let up = sh.up.load(Ordering::Relaxed);
    let setup_cost = cost.finish(up);
    let ticks0 = report::thread_ticks(gw_pid);
    let base = sh.rates();
    let (base_up_sent, base_down_sent) = (
        sh.up_sent.load(Ordering::Relaxed),
        sh.down_sent.load(Ordering::Relaxed),
    );
    let traffic_wanted = o.seconds > 0.0;
    if abort.is_none() && up > 0 && traffic_wanted {
        sh.set_phase(Phase::Idle);
        std::thread::sleep(IDLE_PROBES);
        tick(&mut last);
    }
    let traffic_start = Instant::now();
    if abort.is_none() && up > 0 && traffic_wanted {
        sh.set_phase(Phase::Traffic);
        let end = traffic_start + Duration::from_secs_f64(o.seconds);
        while Instant::now() < end {
            std::thread::sleep(Duration::from_millis(250).min(end - Instant::now()));
            tick(&mut last);
            abort = abort_reason(interrupted, w);
            if abort.is_some() {
                break;
            }
        }
    }
    let traffic = traffic_start.elapsed();
    let ticks1 = report::thread_ticks(gw_pid);
    let end = sh.rates();
    sh.set_phase(Phase::Stop);
    if o.progress {
        eprintln!();
    }
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let mut idle = hist.clone();
    let mut failures: HashMap<String, usize> = HashMap::new();
    let mut last_up = None;
    for t in fleet_threads {
        let r = t
            .join()
            .map_err(|_| "a fleet thread panicked".to_string())??;
        let _ = hist.add(&r.rtt_us);
        let _ = idle.add(&r.idle_rtt_us);
        for (k, v) in r.failures {
            *failures.entry(k).or_default() += v;
        }
        last_up = last_up.max(r.last_up);
    }
    for t in threads {
        if let Ok(Err(e)) = t.join() {
            eprintln!("sekisho demo: inside host: {e}");
        }
    }
    // The gateway's last counters (it writes them every second).
    if abort.is_none() {
        std::thread::sleep(Duration::from_millis(1100));
    }
    let (io, drops) = report::gateway_drops(&w.stats_file());
    w.stop_gateway(Duration::from_secs(10));
    if let Some(why) = abort {
        return Err(why);
    }
    let secs = traffic.as_secs_f64().max(1e-3);
    let setup = last_up
        .unwrap_or(setup_end)
        .duration_since(t0)
        .as_secs_f64();
    let (p50, p99, p999) = report::percentiles(&hist);
    let (idle_p50, idle_p99, _) = report::percentiles(&idle);
    let up_pps = (end.0 - base.0) as f64 / secs;
    let down_pps = (end.2 - base.2) as f64 / secs;
    let up_gbps = (end.1 - base.1) as f64 * 8.0 / secs / 1e9;
    let down_gbps = (end.3 - base.3) as f64 * 8.0 / secs / 1e9;
    let sessions_up = sh.up.load(Ordering::Relaxed);
    Ok(Summary {
        io: io.unwrap_or_else(|| "unknown".into()),
        world: match w.layout.kind {
            world::Kind::Netns { .. } => "netns".into(),
            world::Kind::Loopback => "loopback".into(),
        },
        inside: if o.inside_xdp { "xdp" } else { "tun" }.into(),
        clients: o.clients,
        sessions_up,
        sessions_failed: o.clients as u64 - sessions_up,
        setup_seconds: setup,
        setup_per_s: if setup > 0.0 {
            sessions_up as f64 / setup
        } else {
            0.0
        },
        seconds: (secs * 100.0).round() / 100.0,
        size: o.size.to_string(),
        up_gbps,
        down_gbps,
        gbps: up_gbps + down_gbps,
        up_mpps: up_pps / 1e6,
        down_mpps: down_pps / 1e6,
        mpps: (up_pps + down_pps) / 1e6,
        up_sent: sh.up_sent.load(Ordering::Relaxed) - base_up_sent,
        down_sent: sh.down_sent.load(Ordering::Relaxed) - base_down_sent,
        p50_us: p50,
        p99_us: p99,
        p999_us: p999,
        idle_p50_us: idle_p50,
        idle_p99_us: idle_p99,
        probes_sent: sh.probes_sent.load(Ordering::Relaxed),
        probes_back: sh.probes_back.load(Ordering::Relaxed),
        drops,
        cpu: report::cpu_between(&ticks0, &ticks1, traffic),
        failures,
        group: format!("{:?}", o.group),
        setup_cost,
    })
}

/// Why the run must stop now: Ctrl-C, or the gateway exited (with its log tail).
fn abort_reason(interrupted: &AtomicBool, w: &mut world::World) -> Option<String> {
    if interrupted.load(Ordering::Relaxed) {
        return Some("interrupted".to_string());
    }
    w.gateway_exited()
}

/// Raises the open-file limit to at least `n` (one socket per client), as far as the
/// hard limit allows.
fn raise_fd_limit(n: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let want = (n as u64).max(soft).min(hard);
        if want > soft {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, want, hard);
        }
    }
}

/// Without root: runs `exe demo ARGS` again inside a new user and network namespace
/// (`unshare --user --map-root-user --net`), where it may make a TUN device and bind
/// the gateway's ports on loopback. Returns the child's exit status.
pub fn reexec_in_userns(
    exe: &std::path::Path,
    args: &[String],
) -> Result<std::process::ExitStatus, String> {
    std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--net", "--"])
        .arg(exe)
        .args(args)
        .env(USERNS_ENV, "1")
        .status()
        .map_err(|e| format!("unshare: {e} (util-linux; needed to run the demo without root)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_imix_is_7_4_1() {
        assert_eq!("1400".parse::<Size>(), Ok(Size::Fixed(1400)));
        assert_eq!("IMIX".parse::<Size>(), Ok(Size::Imix));
        assert!("20".parse::<Size>().is_err());
        assert!("1500".parse::<Size>().is_err());
        let mut s = Size::Imix.iter();
        let mut n = HashMap::new();
        for _ in 0..1200 {
            *n.entry(s.next_size()).or_insert(0) += 1;
        }
        assert_eq!((n[&64], n[&576], n[&1400]), (700, 400, 100));
    }

    #[test]
    fn the_window_fills_drains_and_writes_off_losses() {
        let t = Instant::now();
        let mut w = Window::new(100);
        assert_eq!(w.room(0, 0, t), 100);
        assert_eq!(w.room(60, 0, t), 40);
        assert_eq!(w.room(100, 0, t), 0);
        assert_eq!(w.room(100, 50, t), 50);
        // Nothing more arrives: after 20 ms the rest counts as lost.
        assert_eq!(w.room(100, 50, t), 50);
        assert_eq!(w.room(150, 50, t), 0);
        assert_eq!(w.room(150, 50, t + Duration::from_millis(10)), 0);
        assert_eq!(w.room(150, 50, t + Duration::from_millis(30)), 100);
        assert_eq!(w.room(150, 50, t + Duration::from_millis(31)), 100);
    }
}
