//! `sekisho-perf report`: turns the JSON that one `perf/run.sh` left in its work
//! directory into the Markdown table. Each case directory holds `gen.json`,
//! `sink.json`, `server.json` (gateway or forwarder) and `ip -s -j link` dumps of the
//! three namespaces before and after the case.
//!
//! Every packet the generator handed to the kernel ends up delivered to the sink or
//! counted under a reason: the gateway's drop reasons (or the forwarder's), the
//! kernel's AF_XDP socket counters on the gateway and on the sink (ring full, no fill
//! frame, invalid descriptor), and the veth transmit drops. What is left over is
//! printed as `unaccounted` (a packet still in flight at the end would be one).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::common::*;

/// Options of `report`.
pub struct Args {
    pub dir: String,
    pub out: Option<String>,
    pub date: String,
    pub command: String,
}

fn load(p: &Path) -> Res<Value> {
    let text = std::fs::read_to_string(p).ctx(&p.display().to_string())?;
    // The last JSON line is the result (logs go to stderr, but be lenient).
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or(format!("{}: no JSON", p.display()))?;
    serde_json::from_str(line).ctx(&p.display().to_string())
}

fn u(v: &Value, path: &[&str]) -> u64 {
    let mut x = v;
    for k in path {
        x = &x[*k];
    }
    x.as_u64().unwrap_or(0)
}

fn f(v: &Value, path: &[&str]) -> f64 {
    let mut x = v;
    for k in path {
        x = &x[*k];
    }
    x.as_f64().unwrap_or(0.0)
}

/// (ifname → (rx_dropped, tx_dropped)) from an `ip -s -j link` dump.
fn veth(p: &Path) -> BTreeMap<String, (u64, u64)> {
    let Ok(text) = std::fs::read_to_string(p) else {
        return BTreeMap::new();
    };
    let mut m = BTreeMap::new();
    for arr in text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
    {
        for l in arr.as_array().into_iter().flatten() {
            let name = l["ifname"].as_str().unwrap_or("").to_string();
            if name == "lo" {
                continue;
            }
            m.insert(
                name,
                (
                    u(l, &["stats64", "rx", "dropped"]),
                    u(l, &["stats64", "tx", "dropped"]),
                ),
            );
        }
    }
    m
}

/// One measured case.
pub struct Case {
    pub size: String,
    pub path: String,
    pub sessions: u64,
    pub offered: u64,
    pub offered_mpps: f64,
    pub delivered: u64,
    pub mpps: f64,
    pub worker_cpu_s: f64,
    pub worker_wall_s: f64,
    pub worker_out: u64,
    pub batch: Option<u64>,
    pub gbps: f64,
    pub lat: [f64; 3],
    pub probes: u64,
    pub drops: BTreeMap<String, u64>,
    pub unaccounted: i64,
    pub notes: Vec<String>,
}

fn case(dir: &Path) -> Res<Case> {
    let gen_ = load(&dir.join("gen.json"))?;
    let sink = load(&dir.join("sink.json"))?;
    let server = load(&dir.join("server.json"))?;
    let mode = server["mode"].as_str().unwrap_or("?").to_string();
    let mut drops: BTreeMap<String, u64> = BTreeMap::new();
    let mut add = |k: String, v: u64| {
        if v > 0 {
            *drops.entry(k).or_default() += v;
        }
    };
    if let Some(d) = server["stats"]["drops"].as_object() {
        let who = if mode == "gateway" { "gw" } else { "fwd" };
        for (k, v) in d {
            add(format!("{who}:{k}"), v.as_u64().unwrap_or(0));
        }
    }
    let gk = &server["outside"]["kernel"];
    add("gw-xsk:rx_ring_full".into(), u(gk, &["rx_ring_full"]));
    add("gw-xsk:rx_dropped".into(), u(gk, &["rx_dropped"]));
    add(
        "gw-xsk:invalid_descs".into(),
        u(gk, &["rx_invalid_descs"]) + u(gk, &["tx_invalid_descs"]),
    );
    // Not drops: still queued when the gateway (sink) stopped.
    add(
        "gw-ring:left_at_stop".into(),
        server["left_in_rx_ring"].as_i64().unwrap_or(0).max(0) as u64,
    );
    add(
        "sink-ring:left_at_stop".into(),
        sink["left_in_rx_ring"].as_i64().unwrap_or(0).max(0) as u64,
    );
    // Received from the socket but never reached the pipeline's counters: a drop
    // the port does not count (see perf/README.md).
    add(
        "gw-port:uncounted".into(),
        server["port_uncounted"].as_i64().unwrap_or(0).max(0) as u64,
    );
    let sk = &sink["xsk_kernel"];
    add("sink-xsk:rx_ring_full".into(), u(sk, &["rx_ring_full"]));
    add("sink-xsk:rx_dropped".into(), u(sk, &["rx_dropped"]));
    add(
        "sink-xsk:invalid_descs".into(),
        u(sk, &["rx_invalid_descs"]) + u(sk, &["tx_invalid_descs"]),
    );
    add("sink:other".into(), u(&sink, &["other_packets"]));
    add(
        "gen-xsk:tx_invalid_descs".into(),
        u(&gen_, &["xsk_kernel", "tx_invalid_descs"]),
    );
    // veth: packets the transmitting end could not hand to its peer.
    let mut veth_rx_dropped = 0;
    for ns in ["gen", "gw", "sink"] {
        let before = veth(&dir.join(format!("veth-{ns}-before.json")));
        let after = veth(&dir.join(format!("veth-{ns}-after.json")));
        for (name, (rx, tx)) in after {
            let (rx0, tx0) = before.get(&name).copied().unwrap_or((0, 0));
            add(format!("veth:{name}:tx_dropped"), tx.saturating_sub(tx0));
            veth_rx_dropped += rx.saturating_sub(rx0);
        }
    }
    let offered = u(&gen_, &["sent"]);
    let delivered = u(&sink, &["packets"]);
    let counted: u64 = drops.values().sum::<u64>() - drops.get("sink:other").copied().unwrap_or(0);
    let unaccounted = offered as i64 - delivered as i64 - counted as i64;
    let mut notes = Vec::new();
    if veth_rx_dropped > 0 {
        // XDP redirect failures show up here as well as in the socket counters.
        notes.push(format!(
            "veth rx_dropped {veth_rx_dropped} (overlaps the xsk counters)"
        ));
    }
    if let Some(s) = gen_["stopped_by"].as_str()
        && s != "seconds"
    {
        notes.push(format!(
            "generator: {s} after {:.1} s",
            f(&gen_, &["send_s"])
        ));
    }
    let failed = u(&sink, &["probe_open_failed"]) + u(&sink, &["clock_backwards"]);
    if failed > 0 {
        notes.push(format!("{failed} probes unreadable"));
    }
    let lat = &sink["latency_ns"];
    Ok(Case {
        size: gen_["size"].as_str().unwrap_or("?").to_string(),
        path: match gen_["rate"].as_f64() {
            Some(r) => format!("{mode} @{:.0} kpps", r / 1e3),
            None => mode,
        },
        sessions: u(&gen_, &["sessions"]),
        offered,
        offered_mpps: f(&gen_, &["offered_mpps"]),
        delivered,
        mpps: f(&sink, &["mpps"]),
        worker_cpu_s: f(&server, &["outside", "busy_cpu_ns"]) / 1e9,
        worker_wall_s: f(&server, &["outside", "busy_wall_ns"]) / 1e9,
        worker_out: u(&server, &["out_packets"]),
        batch: server["batch"].as_u64(),
        gbps: f(&sink, &["gbps"]),
        lat: [
            f(lat, &["p50"]) / 1e3,
            f(lat, &["p99"]) / 1e3,
            f(lat, &["p999"]) / 1e3,
        ],
        probes: u(lat, &["count"]),
        drops,
        unaccounted,
        notes,
    })
}

impl Case {
    /// Packets the worker (forwarder) handed to the inside link per CPU-second of its
    /// thread, in Mpps: what one core of its own would carry.
    pub fn per_core(&self) -> Option<f64> {
        (self.worker_cpu_s > 0.0).then(|| self.worker_out as f64 / self.worker_cpu_s / 1e6)
    }

    /// The worker's share of its core while traffic flowed.
    pub fn cpu_share(&self) -> Option<f64> {
        (self.worker_wall_s > 0.0).then(|| self.worker_cpu_s / self.worker_wall_s)
    }
}

fn machine() -> (usize, String, String) {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    (nproc, cpu, kernel)
}

fn fmt_drops(c: &Case) -> String {
    let v: Vec<String> = c.drops.iter().map(|(k, n)| format!("{k}={n}")).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Builds the Markdown report.
pub fn run(a: Args) -> Res<()> {
    let mut dirs: Vec<_> = std::fs::read_dir(&a.dir)
        .ctx(&a.dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("gen.json").exists())
        .collect();
    dirs.sort();
    let mut cases = Vec::new();
    for d in &dirs {
        match case(d) {
            Ok(c) => cases.push((
                d.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string(),
                c,
            )),
            Err(e) => eprintln!("report: {}: {e}", d.display()),
        }
    }
    let (nproc, cpu, kernel) = machine();
    let mut md = String::new();
    let _ = writeln!(md, "# sekisho perf run {}\n", a.date);
    let _ = writeln!(
        md,
        "- machine: {nproc} CPUs (`nproc`), {cpu}, Linux {kernel}"
    );
    let _ = writeln!(md, "- command: `{}`", a.command);
    let batches: Vec<String> = {
        let mut b: Vec<u64> = cases.iter().filter_map(|(_, c)| c.batch).collect();
        b.sort();
        b.dedup();
        b.iter().map(u64::to_string).collect()
    };
    let _ = writeln!(
        md,
        "- topology: gen ⇄ veth ⇄ gw ⇄ veth ⇄ sink, one namespace each, AF_XDP copy mode on every veth \
         (1 queue); 1 worker pinned to CPU 1, batch {}; generator and sink on CPU 0; aes128-gcm, NAT-T\n\
         - sizes are inner IPv4 packets (imix = 7×64, 4×576, 1×1400); Mpps and Gbps are what the sink \
         received over its active window, Gbps counting IPv4 octets (inner packets behind the gateway, \
         the whole ESP packets behind the forwarder)\n\
         - worker CPU: the share of its core the worker (forwarder) thread got while traffic flowed; \
         Mpps per worker core: packets that thread handed to the inside link per CPU-second of it\n\
         - latency: one-way, CLOCK_MONOTONIC, from probes (every 64th packet, sealed at send time), in µs; \
         rows without a rate run the generator flat out, so their latency is that of a full receive ring \
         (ring size / rate); the @kpps rows are below saturation\n\
         - drops: gw = the worker's drop reasons, fwd = the forwarder's, gw-xsk / sink-xsk = the kernel's \
         AF_XDP counters of the gateway's outside socket / the sink's socket, veth = transmit drops, \
         *-ring:left_at_stop = still queued when the gateway / sink was stopped (not a drop); \
         unaccounted = sent − delivered − all of these\n\
         - a shared, noisy 2-core VM: figures are reported, never asserted\n",
        if batches.is_empty() {
            "?".into()
        } else {
            batches.join("/")
        }
    );
    let _ = writeln!(
        md,
        "| case | size | path | sessions | offered Mpps | Mpps | Gbps | worker CPU | Mpps per worker core | p50 µs | p99 µs | p999 µs | probes | delivered/offered | drops by reason | unaccounted |"
    );
    let _ = writeln!(
        md,
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"
    );
    for (name, c) in &cases {
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} | {:.3} | {:.3} | {:.3} | {} | {} | {:.1} | {:.1} | {:.1} | {} | {:.1} % | {} | {} |",
            c.size,
            c.path,
            c.sessions,
            c.offered_mpps,
            c.mpps,
            c.gbps,
            c.cpu_share()
                .map_or("–".into(), |x| format!("{:.0} %", 100.0 * x)),
            c.per_core().map_or("–".into(), |x| format!("{x:.3}")),
            c.lat[0],
            c.lat[1],
            c.lat[2],
            c.probes,
            if c.offered > 0 {
                100.0 * c.delivered as f64 / c.offered as f64
            } else {
                0.0
            },
            fmt_drops(c),
            c.unaccounted
        );
    }
    let notes: Vec<String> = cases
        .iter()
        .flat_map(|(n, c)| c.notes.iter().map(move |x| format!("- {n}: {x}")))
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(md, "\n{}", notes.join("\n"));
    }
    // Ratios per size.
    let mut sizes: Vec<String> = Vec::new();
    for (_, c) in &cases {
        if !sizes.contains(&c.size) {
            sizes.push(c.size.clone());
        }
    }
    // Medians over repeats (run.sh --repeat), per size, path and session count.
    let median = |mut v: Vec<f64>| -> Option<f64> {
        v.retain(|x| x.is_finite());
        if v.is_empty() {
            return None;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        Some(if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        })
    };
    let group = |size: &str, path: &str, many: Option<bool>| -> Vec<&Case> {
        cases
            .iter()
            .map(|(_, c)| c)
            .filter(|c| {
                c.size == size && c.path == path && many.is_none_or(|m| (c.sessions > 1) == m)
            })
            .collect()
    };
    let repeats = cases
        .iter()
        .map(|(_, c)| group(&c.size, &c.path, Some(c.sessions > 1)).len())
        .max()
        .unwrap_or(0);
    let _ = writeln!(
        md,
        "\nRatios at full load (the generator flat out){}. Raw: sink Mpps over sink Mpps. \
         Per core: packets out of the worker (forwarder) thread per CPU-second of that \
         thread, which does not depend on how much of its core the shared machine left it.\n",
        if repeats > 1 {
            format!(", medians of {repeats} runs each")
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        md,
        "| size | gateway / forwarder (raw) | gateway / forwarder (per core) | 10k / 1 sessions (raw) | 10k / 1 sessions (per core) |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|");
    for s in &sizes {
        let raw = |g: &[&Case]| median(g.iter().map(|c| c.mpps).collect());
        let core = |g: &[&Case]| median(g.iter().filter_map(|c| c.per_core()).collect());
        let g1 = group(s, "gateway", Some(false));
        let fw = group(s, "forward", None);
        let g10 = group(s, "gateway", Some(true));
        let r = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.0} %", 100.0 * a / b),
            _ => "–".into(),
        };
        let _ = writeln!(
            md,
            "| {s} | {} | {} | {} | {} |",
            r(raw(&g1), raw(&fw)),
            r(core(&g1), core(&fw)),
            r(raw(&g10), raw(&g1)),
            r(core(&g10), core(&g1)),
        );
    }
    print!("{md}");
    if let Some(o) = &a.out {
        std::fs::write(o, &md).ctx(o)?;
    }
    Ok(())
}
