//! What `sekisho demo` prints: the live progress line, and at the end the table (or
//! one JSON object) — sessions, setup rate, throughput per direction, latency
//! percentiles, the gateway's drops by reason and its CPU per thread.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

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
        "sekisho demo: {} clients, {} world, io {}, {} s of traffic, inner size {}\n",
        s.clients, s.world, s.io, s.seconds, s.size
    );
    o += "  ----------------------------------------------------------------\n";
    o += &format!(
        "  sessions       {} up, {} failed (IKEv1 MM+QM, L2TP, PPP MS-CHAPv2)\n",
        s.sessions_up, s.sessions_failed
    );
    o += &format!(
        "  setup          {:.2} s for all, {:.0} sessions/s\n",
        s.setup_seconds, s.setup_per_s
    );
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
    if !s.failures.is_empty() {
        let mut f: Vec<_> = s.failures.iter().collect();
        f.sort_by(|a, b| b.1.cmp(a.1));
        for (why, n) in f.iter().take(5) {
            o += &format!("  failed         {n} × {why}\n");
        }
    }
    o
}
