//! What `sekisho demo` prints: the live progress line, and at the end the table (or
//! one JSON object) — sessions, setup rate, throughput per direction, latency
//! percentiles, the gateway's drops by reason and its CPU per thread.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// CPU time of one gateway thread over the traffic phase.
#[derive(Clone, Debug, Serialize)]
pub struct ThreadCpu {
    /// Thread name (`sekisho-w0` … for workers, `control` for the main thread).
    pub thread: String,
    /// Percent of one core.
    pub percent: f64,
}

/// The outcome of one demo run.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Data-plane backend of the gateway (`xdp (native)`, `socket` …).
    pub io: String,
    /// `netns` or `loopback`.
    pub world: String,
    /// The gateway's inside: `tun`, or `xdp` (router mode).
    pub inside: String,
    /// Clients asked for.
    pub clients: usize,
    /// Sessions whose PPP came up.
    pub sessions_up: u64,
    /// Clients that failed or were not up in time.
    pub sessions_failed: u64,
    /// Seconds from the first client's MM1 to the last session up.
    pub setup_seconds: f64,
    /// Sessions set up per second.
    pub setup_per_s: f64,
    /// Traffic phase length.
    pub seconds: f64,
    /// Inner packet size (octets, or `imix`).
    pub size: String,
    /// Clients → inside host: inner IPv4 Gb/s received by the inside host.
    pub up_gbps: f64,
    /// Inside host → clients: inner IPv4 Gb/s received by the clients.
    pub down_gbps: f64,
    /// Both directions.
    pub gbps: f64,
    /// Clients → inside, Mpps.
    pub up_mpps: f64,
    /// Inside → clients, Mpps.
    pub down_mpps: f64,
    /// Both directions.
    pub mpps: f64,
    /// Packets offered upstream and downstream, and the share that arrived.
    pub up_sent: u64,
    /// Downstream packets sent by the inside host.
    pub down_sent: u64,
    /// Round trip client → gateway → inside host → gateway → client, µs.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Round trip of the probes sent before the bulk traffic (idle gateway), p50, µs.
    pub idle_p50_us: f64,
    /// Idle round trip, p99, µs.
    pub idle_p99_us: f64,
    /// Probes sent (idle and under load).
    pub probes_sent: u64,
    /// Probes answered.
    pub probes_back: u64,
    /// Gateway drops by reason.
    pub drops: HashMap<String, u64>,
    /// Gateway CPU per thread over the traffic phase.
    pub cpu: Vec<ThreadCpu>,
    /// Why clients failed (reason → count).
    pub failures: HashMap<String, usize>,
    /// The DH group the clients offered.
    pub group: String,
    /// What the setup cost the gateway.
    pub setup_cost: SetupCost,
}

/// What setting the sessions up cost the gateway, from its CPU clocks and RSS.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SetupCost {
    /// CPU seconds of the control thread (IKE, L2TP, PPP, RADIUS, pool) during setup.
    pub control_cpu_s: f64,
    /// CPU seconds of every gateway thread during setup (control and workers).
    pub gateway_cpu_s: f64,
    /// Sessions set up per second of control-thread CPU: what one control core
    /// sustains when it has the core to itself.
    pub per_control_core_s: f64,
    /// The gateway's resident set when the first client started, kB.
    pub rss_kb_start: u64,
    /// … and when the last session came up, kB.
    pub rss_kb_end: u64,
    /// RSS growth per session up, bytes.
    pub rss_bytes_per_session: f64,
    /// The same per step of sessions (a tenth of the clients each): is the cost flat
    /// as sessions accumulate?
    pub steps: Vec<SetupStep>,
}

/// One step of [`SetupCost::steps`].
#[derive(Clone, Debug, Serialize)]
pub struct SetupStep {
    /// Sessions up at the end of the step.
    pub up_to: u64,
    /// Sessions that came up in the step.
    pub sessions: u64,
    /// Sessions per wall-clock second in the step.
    pub per_s: f64,
    /// Sessions per second of control-thread CPU in the step.
    pub per_control_core_s: f64,
}

/// Samples the gateway's control-thread CPU clock each time another step of sessions
/// is up (the thread's `schedstat`: nanoseconds on CPU).
pub struct SetupMeter {
    pid: u32,
    step: u64,
    next_mark: u64,
    start: (u64, Instant, u64),
    last: (u64, Instant, u64),
    total_start: u64,
    rss_kb_start: u64,
    steps: Vec<SetupStep>,
}

impl SetupMeter {
    /// Starts measuring gateway `pid` for `clients` clients.
    pub fn new(pid: u32, clients: usize) -> SetupMeter {
        let step = (clients as u64 / 10).max(1);
        let now = (0, Instant::now(), control_ns(pid));
        SetupMeter {
            pid,
            step,
            next_mark: step,
            start: now,
            last: now,
            total_start: process_ns(pid),
            rss_kb_start: rss_kb(pid),
            steps: Vec::new(),
        }
    }

    /// Called often with the sessions up so far.
    pub fn sample(&mut self, up: u64) {
        if up < self.next_mark {
            return;
        }
        while self.next_mark <= up {
            self.next_mark += self.step;
        }
        self.close_step(up);
    }

    fn close_step(&mut self, up: u64) {
        let now = (up, Instant::now(), control_ns(self.pid));
        let n = up.saturating_sub(self.last.0);
        if n > 0 {
            let wall = now.1.duration_since(self.last.1).as_secs_f64().max(1e-6);
            let cpu = now.2.saturating_sub(self.last.2) as f64 / 1e9;
            self.steps.push(SetupStep {
                up_to: up,
                sessions: n,
                per_s: n as f64 / wall,
                per_control_core_s: if cpu > 0.0 { n as f64 / cpu } else { 0.0 },
            });
        }
        self.last = now;
    }

    /// The cost of the whole setup, `up` sessions.
    pub fn finish(mut self, up: u64) -> SetupCost {
        if up > self.last.0 {
            self.close_step(up);
        }
        let control = self.last.2.saturating_sub(self.start.2) as f64 / 1e9;
        let total = process_ns(self.pid).saturating_sub(self.total_start) as f64 / 1e9;
        let rss_kb_end = rss_kb(self.pid);
        SetupCost {
            control_cpu_s: control,
            gateway_cpu_s: total,
            per_control_core_s: if control > 0.0 {
                up as f64 / control
            } else {
                0.0
            },
            rss_kb_start: self.rss_kb_start,
            rss_kb_end,
            rss_bytes_per_session: if up > 0 {
                rss_kb_end.saturating_sub(self.rss_kb_start) as f64 * 1024.0 / up as f64
            } else {
                0.0
            },
            steps: self.steps,
        }
    }
}

/// Nanoseconds on CPU of thread `tid` of process `pid` (`schedstat`, first field).
fn task_ns(pid: u32, tid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The control thread's CPU nanoseconds (it is the main thread: TID = PID).
fn control_ns(pid: u32) -> u64 {
    task_ns(pid, &pid.to_string())
}

/// CPU nanoseconds of every thread of `pid` still running.
fn process_ns(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    dir.flatten()
        .map(|e| task_ns(pid, &e.file_name().to_string_lossy()))
        .sum()
}

/// Resident set of `pid`, kB.
fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Percentiles of the round-trip histogram (µs).
pub fn percentiles(h: &Histogram<u64>) -> (f64, f64, f64) {
    if h.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let q = |p: f64| h.value_at_quantile(p) as f64;
    (q(0.50), q(0.99), q(0.999))
}

/// Drops by reason from the gateway's stats file (`totals.drops`).
pub fn gateway_drops(path: &Path) -> (Option<String>, HashMap<String, u64>) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return (None, HashMap::new());
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return (None, HashMap::new());
    };
    let io = v["io"].as_str().map(str::to_string);
    let drops = v["totals"]["drops"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, n)| Some((k.clone(), n.as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    (io, drops)
}

/// CPU ticks (user + system) of each thread of `pid`, by name.
pub fn thread_ticks(pid: u32) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for e in dir.flatten() {
        let tid = e.file_name().to_string_lossy().to_string();
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // "tid (comm) state …": fields after the closing parenthesis, 14 and 15 overall.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map_or("", |(_, c)| c).to_string();
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        let name = if tid == pid.to_string() {
            "control".to_string()
        } else {
            comm
        };
        out.push((name, ticks));
    }
    out.sort();
    out
}

/// Percent of one core per gateway thread between two [`thread_ticks`] readings.
pub fn cpu_between(a: &[(String, u64)], b: &[(String, u64)], over: Duration) -> Vec<ThreadCpu> {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let secs = over.as_secs_f64().max(1e-3);
    b.iter()
        .filter(|(n, _)| n == "control" || n.starts_with("sekisho-w"))
        .map(|(n, t1)| {
            let t0 = a.iter().find(|(m, _)| m == n).map_or(0, |(_, t)| *t);
            ThreadCpu {
                thread: n.clone(),
                percent: (t1.saturating_sub(t0)) as f64 / hz / secs * 100.0,
            }
        })
        .collect()
}

/// The live line: sessions and the last interval's rates.
pub fn progress(
    t: f64,
    up: u64,
    failed: u64,
    n: usize,
    gbps: (f64, f64),
    mpps: (f64, f64),
) -> String {
    format!(
        "\r[demo {t:5.1}s] sessions {up}/{n} up, {failed} failed | up {:.3} Gb/s {:.3} Mpps | down {:.3} Gb/s {:.3} Mpps   ",
        gbps.0, mpps.0, gbps.1, mpps.1
    )
}

/// The final table.
pub fn table(s: &Summary) -> String {
    let mut o = String::new();
    let pct = |a: u64, b: u64| {
        if b == 0 {
            0.0
        } else {
            a as f64 * 100.0 / b as f64
        }
    };
    o += &format!(
        "sekisho demo: {} clients, {} world, io {} (inside: {}), {} s of traffic, inner size {}\n",
        s.clients, s.world, s.io, s.inside, s.seconds, s.size
    );
    o += "  ----------------------------------------------------------------\n";
    o += &format!(
        "  sessions       {} up, {} failed (IKEv1 MM+QM, L2TP, PPP MS-CHAPv2)\n",
        s.sessions_up, s.sessions_failed
    );
    o += &format!(
        "  setup          {:.2} s for all, {:.0} sessions/s ({}); control thread {:.2} CPU-s = {:.0} sessions per control-core second\n",
        s.setup_seconds,
        s.setup_per_s,
        s.group,
        s.setup_cost.control_cpu_s,
        s.setup_cost.per_control_core_s
    );
    o += &format!(
        "  memory         gateway RSS {} → {} kB, {:.1} kB per session\n",
        s.setup_cost.rss_kb_start,
        s.setup_cost.rss_kb_end,
        s.setup_cost.rss_bytes_per_session / 1000.0
    );
    if s.seconds == 0.0 {
        o += "  traffic        none (--seconds 0: handshakes only)\n";
        return o + &failures_lines(s);
    }
    o += &format!(
        "  clients→inside {:8.3} Gb/s {:8.4} Mpps   ({:.1}% of {} sent arrived)\n",
        s.up_gbps,
        s.up_mpps,
        pct((s.up_mpps * 1e6 * s.seconds) as u64, s.up_sent),
        s.up_sent
    );
    o += &format!(
        "  inside→clients {:8.3} Gb/s {:8.4} Mpps   ({:.1}% of {} sent arrived)\n",
        s.down_gbps,
        s.down_mpps,
        pct((s.down_mpps * 1e6 * s.seconds) as u64, s.down_sent),
        s.down_sent
    );
    o += &format!(
        "  total          {:8.3} Gb/s {:8.4} Mpps   (inner IPv4 octets)\n",
        s.gbps, s.mpps
    );
    o += &format!(
        "  RTT under load p50 {:.0} µs  p99 {:.0} µs  p99.9 {:.0} µs   ({} of {} probes answered)\n",
        s.p50_us, s.p99_us, s.p999_us, s.probes_back, s.probes_sent
    );
    o += &format!(
        "  RTT idle       p50 {:.0} µs  p99 {:.0} µs   (client → gateway → inside host and back)\n",
        s.idle_p50_us, s.idle_p99_us
    );
    if s.drops.is_empty() {
        o += "  gateway drops  none\n";
    } else {
        let mut d: Vec<_> = s.drops.iter().collect();
        d.sort_by(|a, b| b.1.cmp(a.1));
        let d: Vec<String> = d.iter().map(|(k, v)| format!("{k}={v}")).collect();
        o += &format!("  gateway drops  {}\n", d.join(", "));
    }
    let cpu: Vec<String> = s
        .cpu
        .iter()
        .map(|c| format!("{} {:.0}%", c.thread, c.percent))
        .collect();
    o += &format!(
        "  gateway CPU    {} (of one core, traffic phase)\n",
        cpu.join(", ")
    );
    o + &failures_lines(s)
}

/// The five commonest failure reasons, one line each.
fn failures_lines(s: &Summary) -> String {
    let mut o = String::new();
    let mut f: Vec<_> = s.failures.iter().collect();
    f.sort_by(|a, b| b.1.cmp(a.1));
    for (why, n) in f.iter().take(5) {
        o += &format!("  failed         {n} × {why}\n");
    }
    o
}
