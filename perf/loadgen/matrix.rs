//! `sekisho-perf matrix`: the report of a `perf/report.sh` work directory — the
//! machine, `sekisho bench`'s raw crypto ceiling, the demo matrix (sizes × sessions ×
//! io), the handshake runs and the peers side by side — as one Markdown file and two
//! SVG plots (plotters).
//!
//! Input files in `--dir` (all written by report.sh; a missing one leaves its section
//! out with a line saying so):
//! - `machine.txt`: free text, copied as is;
//! - `bench.json`: `sekisho bench --json` rows;
//! - `matrix.jsonl`: one `sekisho demo --json` object per line, or
//!   `{"failed": true, "clients", "size", "io", "error"}`;
//! - `handshake.jsonl`: `sekisho-perf handshake` objects;
//! - `peers.jsonl`: `perf/peers.sh` objects, and `sekisho-peer.jsonl`: the demo runs
//!   of sekisho in the same shape (one client, 1400 B).

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde_json::Value;

use crate::common::Res;

/// Arguments of `matrix`.
pub struct Args {
    pub dir: String,
    pub out: String,
    pub date: String,
    pub command: String,
}

/// One row of the demo matrix, with the per-core figures worked out.
#[derive(Clone, Debug)]
struct Cell {
    io: String,
    clients: u64,
    size: String,
    up: u64,
    failed: u64,
    setup_per_s: f64,
    gbps: f64,
    mpps: f64,
    worker_cores: f64,
    gateway_cores: f64,
    p50: f64,
    p99: f64,
    drops: u64,
    error: Option<String>,
}

impl Cell {
    fn from(v: &Value) -> Cell {
        let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
        let (mut workers, mut total) = (0.0, 0.0);
        for t in v["cpu"].as_array().into_iter().flatten() {
            let p = t["percent"].as_f64().unwrap_or(0.0) / 100.0;
            total += p;
            if t["thread"]
                .as_str()
                .is_some_and(|n| n.starts_with("sekisho-w"))
            {
                workers += p;
            }
        }
        let drops = v["drops"]
            .as_object()
            .map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
        Cell {
            io: match v["inside"].as_str() {
                Some("xdp") => format!("{}+router", io_name(v["io"].as_str().unwrap_or("?"))),
                _ => io_name(v["io"].as_str().unwrap_or("?")),
            },
            clients: v["clients"].as_u64().unwrap_or(0),
            size: match &v["size"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            },
            up: v["sessions_up"].as_u64().unwrap_or(0),
            failed: v["sessions_failed"].as_u64().unwrap_or(0),
            setup_per_s: f("setup_per_s"),
            gbps: f("gbps"),
            mpps: f("mpps"),
            worker_cores: workers,
            gateway_cores: total,
            p50: f("p50_us"),
            p99: f("p99_us"),
            drops,
            error: v["failed"]
                .as_bool()
                .filter(|b| *b)
                .map(|_| v["error"].as_str().unwrap_or("failed").to_string()),
        }
    }

    /// Gb/s per second of worker CPU.
    fn per_worker_core(&self) -> f64 {
        per(self.gbps, self.worker_cores)
    }

    /// Gb/s per second of the whole gateway's CPU (control thread included).
    fn per_gateway_core(&self) -> f64 {
        per(self.gbps, self.gateway_cores)
    }
}

fn per(x: f64, cores: f64) -> f64 {
    if cores > 0.0 { x / cores } else { 0.0 }
}

/// `xdp (native)` → `xdp`; the mode in brackets stays in the table's note.
fn io_name(s: &str) -> String {
    s.split_whitespace().next().unwrap_or(s).to_string()
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .map(|t| {
            t.lines()
                .filter(|l| !l.trim().is_empty())
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

const SIZES: [&str; 3] = ["64", "imix", "1400"];

pub fn run(a: Args) -> Res<()> {
    let dir = Path::new(&a.dir);
    let out = Path::new(&a.out);
    let stem = out
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or("--out: a file name ending in .md")?
        .to_string();
    let cells: Vec<Cell> = read_lines(&dir.join("matrix.jsonl"))
        .iter()
        .map(Cell::from)
        .collect();
    let bench: Vec<Value> = std::fs::read_to_string(dir.join("bench.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let handshakes = read_lines(&dir.join("handshake.jsonl"));
    let peers = read_lines(&dir.join("peers.jsonl"));
    let ours: Vec<Cell> = read_lines(&dir.join("sekisho-peer.jsonl"))
        .iter()
        .map(Cell::from)
        .collect();

    let mut md = String::new();
    let _ = writeln!(md, "# sekisho load report {}\n", a.date);
    let _ = writeln!(md, "Produced by `{}`.\n", a.command);
    md += "## Machine\n\n```\n";
    md += std::fs::read_to_string(dir.join("machine.txt"))
        .unwrap_or_else(|_| "(machine.txt missing)\n".into())
        .trim_end();
    md += "\n```\n\n";

    md += &ceiling_section(&bench);
    md += &matrix_section(&cells, &bench, &format!("{stem}-matrix.svg"));
    md += &handshake_section(&handshakes);
    md += &peers_section(&ours, &peers, &format!("{stem}-peers.svg"));

    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let svg_dir = out.parent().unwrap_or(Path::new("."));
    if !cells.is_empty() {
        plot_matrix(&cells, &bench, &svg_dir.join(format!("{stem}-matrix.svg")))?;
    }
    if !ours.is_empty() || !peers.is_empty() {
        plot_peers(&ours, &peers, &svg_dir.join(format!("{stem}-peers.svg")))?;
    }
    std::fs::write(out, &md).map_err(|e| format!("{}: {e}", out.display()))?;
    print!("{md}");
    Ok(())
}

/// The raw ceiling of one core for `size` (aes128-gcm, the demo's transform):
/// `sekisho bench`'s decap + encap chain, Gb/s of IPv4 octets.
fn ceiling(bench: &[Value], size: &str) -> Option<f64> {
    bench
        .iter()
        .find(|r| {
            r["transform"] == "aes128-gcm"
                && match &r["size"] {
                    Value::String(s) => s == size,
                    Value::Number(n) => n.to_string() == size,
                    _ => false,
                }
        })
        .and_then(|r| r["chain_gbps"].as_f64())
}

fn ceiling_section(bench: &[Value]) -> String {
    let mut md = String::from("## Raw crypto ceiling (`sekisho bench`, one core)\n\n");
    if bench.is_empty() {
        return md + "bench.json missing: `sekisho bench --json` did not run.\n\n";
    }
    md += "| transform | size | raw AEAD open+seal Gb/s | decap+encap chain Gb/s | chain ÷ raw |\n";
    md += "|---|---|---:|---:|---:|\n";
    for r in bench {
        let size = match &r["size"] {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {:.2} | {:.2} | {:.0} % |",
            r["transform"].as_str().unwrap_or("?"),
            size,
            r["raw_gbps"].as_f64().unwrap_or(0.0),
            r["chain_gbps"].as_f64().unwrap_or(0.0),
            r["ratio"].as_f64().unwrap_or(0.0) * 100.0
        );
    }
    md + "\n"
}

fn matrix_section(cells: &[Cell], bench: &[Value], svg: &str) -> String {
    let mut md = String::from("## Full stack: `sekisho demo` matrix\n\n");
    if cells.is_empty() {
        return md + "matrix.jsonl missing or empty.\n\n";
    }
    md += "Each row is one `sekisho demo --clients N --size S --io IO --json` run: N \
           simulated clients through IKEv1 MM + QM, L2TP and PPP MS-CHAPv2, then traffic \
           both ways (self-clocked, 512 packets in flight) between the clients and the \
           inside host. Gb/s counts inner IPv4 octets of both directions. *Per worker \
           core* divides by the worker threads' CPU seconds per second, *per gateway \
           core* by every gateway thread's (control included); the client fleet shares \
           the same 2 cores, so raw Gb/s is client-bound and the per-core figures are \
           the ones to compare. *Ceiling* is `sekisho bench`'s decap + encap chain for \
           aes128-gcm on one core.\n\n";
    md += "| io | sessions | size | up / failed | setup/s | Gb/s | Mpps | worker CPU | Gb/s per worker core | Gb/s per gateway core | ÷ ceiling | p50 µs | p99 µs | drops |\n";
    md += "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for c in cells {
        if let Some(e) = &c.error {
            let _ = writeln!(
                md,
                "| {} | {} | {} | failed: {} | | | | | | | | | | |",
                c.io,
                c.clients,
                c.size,
                e.replace('|', "/")
            );
            continue;
        }
        let ceil = ceiling(bench, &c.size)
            .map(|x| format!("{:.0} %", per(c.per_worker_core(), x) * 100.0))
            .unwrap_or_default();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} / {} | {:.0} | {:.3} | {:.4} | {:.0} % | {:.2} | {:.2} | {} | {:.0} | {:.0} | {} |",
            c.io,
            c.clients,
            c.size,
            c.up,
            c.failed,
            c.setup_per_s,
            c.gbps,
            c.mpps,
            c.worker_cores * 100.0,
            c.per_worker_core(),
            c.per_gateway_core(),
            ceil,
            c.p50,
            c.p99,
            c.drops
        );
    }
    let _ = writeln!(md, "\n![Gb/s per worker core]({svg})\n");
    md
}

fn handshake_section(hs: &[Value]) -> String {
    let mut md = String::from("## Handshakes: `sekisho-perf handshake`\n\n");
    if hs.is_empty() {
        return md + "handshake.jsonl missing or empty.\n\n";
    }
    md += "Complete L2TP/IPsec sessions (IKEv1 MM + QM, L2TP, PPP MS-CHAPv2) as fast as \
           the gateway accepts them. *Per control core* is sessions per CPU second of the \
           gateway's control thread (which runs IKE, L2TP, PPP and the pool); the fleet \
           does the clients' DH on the same 2 cores, so wall-clock setup/s is \
           client-bound. The steps are tenths of the run: flat means the cost does not \
           grow with the sessions already up.\n\n";
    md += "| group | sessions up / failed | wall setup/s | control CPU s | per control core /s | RSS per session | per control core /s by step (first → last) |\n";
    md += "|---|---|---:|---:|---:|---:|---|\n";
    for h in hs {
        let steps: Vec<String> = h["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| format!("{:.0}", s["per_control_core_s"].as_f64().unwrap_or(0.0)))
            .collect();
        let _ = writeln!(
            md,
            "| {} | {} / {} | {:.0} | {:.2} | {:.0} | {:.1} kB | {} |",
            h["group"].as_str().unwrap_or("?"),
            h["sessions_up"],
            h["sessions_failed"],
            h["setup_per_s"].as_f64().unwrap_or(0.0),
            h["control_cpu_s"].as_f64().unwrap_or(0.0),
            h["per_control_core_s"].as_f64().unwrap_or(0.0),
            h["rss_bytes_per_session"].as_f64().unwrap_or(0.0) / 1000.0,
            steps.join(" ")
        );
    }
    md + "\n"
}

/// One bar of the peers' chart.
struct PeerBar {
    name: String,
    gbps: f64,
    cores: f64,
}

impl PeerBar {
    fn per_core(&self) -> f64 {
        per(self.gbps, self.cores)
    }
}

fn peer_bars(ours: &[Cell], peers: &[Value]) -> Vec<PeerBar> {
    let mut bars: Vec<PeerBar> = ours
        .iter()
        .filter(|c| c.error.is_none())
        .map(|c| PeerBar {
            name: format!("sekisho ({})", c.io),
            gbps: c.gbps,
            cores: c.gateway_cores,
        })
        .collect();
    bars.extend(peers.iter().filter(|p| p["error"].is_null()).map(|p| {
        PeerBar {
            name: p["peer"].as_str().unwrap_or("?").to_string(),
            // The gateway's own output (its veth counters), not iperf3's
            // receivers: CPU 0 also runs the client tunnel and both iperf3 ends.
            gbps: p["gw_gbps"]
                .as_f64()
                .or_else(|| p["rx_gbps"].as_f64())
                .unwrap_or(0.0),
            cores: p["gw_cpu_cores"].as_f64().unwrap_or(0.0),
        }
    }));
    bars
}

fn peers_section(ours: &[Cell], peers: &[Value], svg: &str) -> String {
    let mut md = String::from("## Peers side by side, 1400 B, per core\n\n");
    if ours.is_empty() && peers.is_empty() {
        return md + "sekisho-peer.jsonl and peers.jsonl missing.\n\n";
    }
    md += "Same machine, same run, the same three namespaces and veth pairs (clients ⇄ \
           gateway ⇄ inside host, `sekisho demo`'s addresses), one tunnel, traffic both \
           ways with 1400-byte inner IPv4 packets. sekisho: `sekisho demo --clients 1` \
           (L2TP/IPsec, ESP aes128-gcm in UDP 4500, self-clocked), Gb/s received at the \
           far ends; `+router` is router mode (the inside veth through AF_XDP too, no \
           TUN). boringtun (WireGuard, ChaCha20-Poly1305) and strongSwan's charon with \
           kernel-libipsec (ESP aes128-gcm in UDP 4500, aesni/openssl crypto plugins) \
           with iperf3 UDP `--bidir` from `perf/peers.sh`, their gateway process pinned \
           to CPU 1; their Gb/s is what the gateway itself sent out (its veth counters, \
           1400-byte packets), since CPU 0 also runs their client tunnel and both iperf3 \
           ends and cannot take it all. *Per core* = that Gb/s ÷ CPU seconds per second \
           of the whole gateway process. No gateway here is saturated (the clients share \
           the 2 cores), so per-core figures include wake-up costs; with veth, the \
           kernel's delivery into the next namespace's sockets is charged to the sender, \
           i.e. to each gateway alike.\n\n";
    let bars = peer_bars(ours, peers);
    let best_ours = bars
        .iter()
        .filter(|b| b.name.starts_with("sekisho"))
        .map(PeerBar::per_core)
        .fold(0.0, f64::max);
    md += "| gateway | Gb/s received | gateway CPU (cores) | Gb/s per core | sekisho ÷ this |\n";
    md += "|---|---:|---:|---:|---:|\n";
    for b in &bars {
        let ratio = if b.name.starts_with("sekisho") || b.per_core() <= 0.0 {
            String::new()
        } else {
            format!("{:.1}×", best_ours / b.per_core())
        };
        let _ = writeln!(
            md,
            "| {} | {:.3} | {:.2} | {:.2} | {} |",
            b.name,
            b.gbps,
            b.cores,
            b.per_core(),
            ratio
        );
    }
    for p in peers.iter().filter(|p| !p["error"].is_null()) {
        let _ = writeln!(
            md,
            "| {} | failed: {} | | | |",
            p["peer"].as_str().unwrap_or("?"),
            p["error"].as_str().unwrap_or("?").replace('|', "/")
        );
    }
    let _ = writeln!(md, "\n![Gb/s per core at 1400 B]({svg})\n");
    md
}

type PlotRes = Result<(), String>;

fn plot_err<E: std::fmt::Display>(e: E) -> String {
    format!("plot: {e}")
}

/// The bottom of the matrix plot's log axis, Gb/s.
const YMIN: f64 = 0.01;

/// Grouped bars: per size, one bar per (io, sessions), height Gb/s per worker core;
/// a black tick marks the bench ceiling of the size.
fn plot_matrix(cells: &[Cell], bench: &[Value], path: &Path) -> PlotRes {
    let mut series: Vec<(String, u64)> = Vec::new();
    for c in cells.iter().filter(|c| c.error.is_none()) {
        if !series.contains(&(c.io.clone(), c.clients)) {
            series.push((c.io.clone(), c.clients));
        }
    }
    let ymax = cells
        .iter()
        .map(Cell::per_worker_core)
        .chain(SIZES.iter().filter_map(|s| ceiling(bench, s)))
        .fold(0.1, f64::max)
        * 1.15;
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "sekisho demo: Gb/s per worker core (inner IPv4, both directions)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..SIZES.len() as f64, (YMIN..ymax).log_scale())
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("Gb/s per worker core (log scale)")
        .draw()
        .map_err(plot_err)?;
    let n = series.len().max(1) as f64;
    let width = 0.8 / n;
    for (si, (io, clients)) in series.iter().enumerate() {
        let color = Palette99::pick(si).to_rgba();
        let rects: Vec<_> = SIZES
            .iter()
            .enumerate()
            .filter_map(|(xi, size)| {
                let c = cells.iter().find(|c| {
                    c.error.is_none() && &c.io == io && c.clients == *clients && c.size == *size
                })?;
                let x0 = xi as f64 + 0.1 + si as f64 * width;
                Some(Rectangle::new(
                    [
                        (x0, YMIN),
                        (x0 + width * 0.9, c.per_worker_core().max(YMIN)),
                    ],
                    color.filled(),
                ))
            })
            .collect();
        chart
            .draw_series(rects)
            .map_err(plot_err)?
            .label(format!("{io}, {clients} session(s)"))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    for (xi, size) in SIZES.iter().enumerate() {
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{size} B"),
                (xi as f64 + 0.45, ymax * 0.8),
                ("sans-serif", 14),
            )))
            .map_err(plot_err)?;
        if let Some(c) = ceiling(bench, size) {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(xi as f64 + 0.05, c), (xi as f64 + 0.95, c)],
                    BLACK.stroke_width(2),
                )))
                .map_err(plot_err)?;
        }
    }
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(0.0, YMIN), (0.0, YMIN)],
            BLACK.stroke_width(2),
        )))
        .map_err(plot_err)?
        .label("sekisho bench ceiling (one core, aes128-gcm)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], BLACK.stroke_width(2)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)
}

/// One bar per gateway: Gb/s per core at 1400 B.
fn plot_peers(ours: &[Cell], peers: &[Value], path: &Path) -> PlotRes {
    let bars = peer_bars(ours, peers);
    let ymax = bars.iter().map(PeerBar::per_core).fold(0.1, f64::max) * 1.15;
    let root = SVGBackend::new(path, (760, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Gb/s per gateway core at 1400 B (same veth topology)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..bars.len().max(1) as f64, 0f64..ymax)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("Gb/s per core")
        .draw()
        .map_err(plot_err)?;
    for (i, b) in bars.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(i as f64 + 0.15, 0.0), (i as f64 + 0.85, b.per_core())],
                color.filled(),
            )))
            .map_err(plot_err)?;
        chart
            .draw_series([
                Text::new(
                    b.name.clone(),
                    (i as f64 + 0.15, ymax * 0.97),
                    ("sans-serif", 13),
                ),
                Text::new(
                    format!("{:.2}", b.per_core()),
                    (i as f64 + 0.4, b.per_core() + ymax * 0.04),
                    ("sans-serif", 13),
                ),
            ])
            .map_err(plot_err)?;
    }
    root.present().map_err(plot_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo_row(io: &str, clients: u64, size: &str) -> Value {
        serde_json::json!({
            "io": io, "clients": clients, "size": size, "sessions_up": clients,
            "sessions_failed": 0, "setup_per_s": 1000.0, "gbps": 1.0, "mpps": 0.1,
            "p50_us": 50.0, "p99_us": 200.0, "drops": {"replay": 2},
            "cpu": [{"thread": "control", "percent": 10.0},
                    {"thread": "sekisho-w0", "percent": 50.0}]
        })
    }

    #[test]
    fn per_core_figures_divide_by_the_right_threads() {
        let c = Cell::from(&demo_row("xdp (native)", 1, "1400"));
        assert_eq!(c.io, "xdp");
        assert!((c.per_worker_core() - 2.0).abs() < 1e-9);
        assert!((c.per_gateway_core() - 1.0 / 0.6).abs() < 1e-9);
        assert_eq!(c.drops, 2);
    }

    #[test]
    fn the_report_and_both_plots_are_written() {
        let dir = std::env::temp_dir().join(format!("skp-matrix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut m = String::new();
        for io in ["xdp (native)", "socket"] {
            for size in SIZES {
                m += &format!("{}\n", demo_row(io, 1000, size));
            }
        }
        m += "{\"failed\": true, \"clients\": 10000, \"size\": \"64\", \"io\": \"socket\", \"error\": \"timeout\"}\n";
        std::fs::write(dir.join("matrix.jsonl"), m).unwrap();
        std::fs::write(
            dir.join("bench.json"),
            r#"[{"transform":"aes128-gcm","size":1400,"raw_gbps":20.0,"chain_gbps":18.0,"ratio":0.9}]"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("sekisho-peer.jsonl"),
            format!("{}\n", demo_row("xdp (native)", 1, "1400")),
        )
        .unwrap();
        std::fs::write(
            dir.join("peers.jsonl"),
            "{\"peer\":\"boringtun\",\"rx_gbps\":0.1,\"gw_gbps\":0.5,\"gw_cpu_cores\":1.0}\n",
        )
        .unwrap();
        let out = dir.join("out/report.md");
        run(Args {
            dir: dir.to_string_lossy().into(),
            out: out.to_string_lossy().into(),
            date: "test".into(),
            command: "test".into(),
        })
        .unwrap();
        let md = std::fs::read_to_string(&out).unwrap();
        assert!(md.contains("| xdp | 1000 | 1400 | 1000 / 0 |"), "{md}");
        assert!(md.contains("failed: timeout"), "{md}");
        // sekisho 1.0 Gb/s on 0.6 cores against boringtun's 0.5 on 1.0.
        assert!(
            md.contains("| boringtun | 0.500 | 1.00 | 0.50 | 3.3× |"),
            "{md}"
        );
        assert!(md.contains("machine.txt missing"), "{md}");
        for svg in ["report-matrix.svg", "report-peers.svg"] {
            let s = std::fs::read_to_string(dir.join("out").join(svg)).unwrap();
            assert!(s.starts_with("<svg"), "{svg}");
            assert!(s.contains("<rect"), "{svg}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
