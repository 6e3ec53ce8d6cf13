//! `sekisho-perf handshake`: thousands of simulated L2TP/IPsec clients connecting as
//! fast as the gateway accepts them. It is `sekisho demo` without the traffic phase:
//! the same private world (three network namespaces), the same `sekisho run` gateway
//! and the same fleet of the project's own client machines (IKEv1 Main + Quick Mode,
//! L2TP, PPP MS-CHAPv2), with the DH group and the number of handshakes in flight
//! chosen here. What it adds is the gateway's side of the bill: CPU seconds of the
//! control thread per step of sessions (is the cost flat as sessions accumulate?),
//! sessions per control-core second, and RSS per session. One JSON object on stdout.

use std::path::PathBuf;

use sekisho::demo::{FleetArgs, Options, Size};

use crate::common::{Res, Signals};

/// Arguments of `handshake`.
pub struct Args {
    pub clients: usize,
    pub fleet: FleetArgs,
    pub sekisho: Option<PathBuf>,
}

pub fn run(a: Args, signals: &Signals) -> Res<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err("handshake needs root (network namespaces)".into());
    }
    // The demo world handles SIGINT/SIGTERM itself (and tears everything down).
    signals.unblock()?;
    let exe = match a.sekisho {
        Some(p) => p,
        None => std::env::current_exe()
            .map_err(|e| format!("current_exe: {e}"))?
            .with_file_name("sekisho"),
    };
    if !exe.exists() {
        return Err(format!(
            "{} missing: build it (cargo build --release --bin sekisho) or pass --sekisho",
            exe.display()
        ));
    }
    // No traffic phase: the inner size is never used.
    let o = Options::new(a.clients, 0.0, Size::Fixed(64), &a.fleet);
    let s = sekisho::demo::run(&o, &exe)?;
    eprintln!();
    eprint!("{}", sekisho::demo::report::table(&s));
    let out = serde_json::json!({
        "mode": "handshake",
        "clients": s.clients,
        "group": s.group,
        "window": a.fleet.window,
        "io": s.io,
        "sessions_up": s.sessions_up,
        "sessions_failed": s.sessions_failed,
        "setup_seconds": s.setup_seconds,
        "setup_per_s": s.setup_per_s,
        "control_cpu_s": s.setup_cost.control_cpu_s,
        "gateway_cpu_s": s.setup_cost.gateway_cpu_s,
        "per_control_core_s": s.setup_cost.per_control_core_s,
        "rss_kb_start": s.setup_cost.rss_kb_start,
        "rss_kb_end": s.setup_cost.rss_kb_end,
        "rss_bytes_per_session": s.setup_cost.rss_bytes_per_session,
        "steps": s.setup_cost.steps,
        "failures": s.failures,
    });
    println!("{out}");
    Ok(())
}
