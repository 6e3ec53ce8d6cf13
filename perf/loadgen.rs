//! `sekisho-perf`: load generator, sink, gateway and no-crypto forwarder for
//! measuring sekisho's AF_XDP data path in network namespaces (see perf/README.md
//! and perf/run.sh).
//!
//! - `gateway`: sekisho's real data path (steering, pinned workers, XdpPort outside,
//!   XdpInside inside), sessions installed through the workers' command queues; writes
//!   the session table for the generator.
//! - `forward`: the no-crypto baseline on the same link (AF_XDP rx outside, copy into
//!   the inside UMEM, Ethernet rewrite, tx inside).
//! - `gen`: clients' ESP-in-UDP traffic, pre-sealed in parallel, with latency probes
//!   sealed at send time, over AF_XDP TX.
//! - `sink`: counts what arrives on the inside link and builds the latency histogram.
//! - `report`: the Markdown table of a `perf/run.sh` work directory.

#![forbid(unsafe_code)]

use std::net::Ipv4Addr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[path = "loadgen/common.rs"]
mod common;
#[path = "loadgen/forward.rs"]
mod forward;
#[path = "loadgen/gateway.rs"]
mod gateway;
#[path = "loadgen/generator.rs"]
mod generator;
#[path = "loadgen/handshake.rs"]
mod handshake;
#[path = "loadgen/hold.rs"]
mod hold;
#[path = "loadgen/matrix.rs"]
mod matrix;
#[path = "loadgen/report.rs"]
mod report;
#[path = "loadgen/sink.rs"]
mod sink;

use common::{Res, Signals, XskSizes, parse_cpus, parse_mac};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "sekisho-perf",
    version,
    about = "sekisho data-path load generator, sink, gateway and baseline forwarder"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Debug, Clone, Copy)]
struct XskArgs {
    /// UMEM frames per AF_XDP socket (2048 octets each).
    #[arg(long, default_value_t = 4096)]
    frames: u32,
    /// Entries of each AF_XDP ring (power of two, at most frames / 2).
    #[arg(long, default_value_t = 2048)]
    ring: u32,
}

impl From<XskArgs> for XskSizes {
    fn from(a: XskArgs) -> XskSizes {
        XskSizes {
            frames: a.frames,
            ring: a.ring,
        }
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run sekisho's data path: XDP steering, pinned workers, sessions installed through
    /// the worker commands; writes the session table to --keys.
    Gateway {
        /// Outside interface (clients, ESP in UDP 4500).
        #[arg(long)]
        outside: String,
        /// Inside interface (router mode).
        #[arg(long)]
        inside: String,
        /// Sessions to install.
        #[arg(long, default_value_t = 1)]
        sessions: u32,
        /// ESP transform.
        #[arg(long, default_value = "aes128-gcm")]
        transform: String,
        /// Workers (one per queue, each pinned).
        #[arg(long, default_value_t = 1)]
        workers: u16,
        /// Where to write the session table (JSON).
        #[arg(long)]
        keys: String,
        /// Stop after this long (default: at SIGINT/SIGTERM).
        #[arg(long)]
        seconds: Option<f64>,
        /// CPUs for the workers, e.g. `1` (default: worker i on CPU i+1 mod nproc).
        #[arg(long)]
        cpus: Option<String>,
        /// Client address pool (inner addresses; the inside steering network).
        #[arg(long, default_value = "198.19.0.0/16")]
        pool: String,
        /// The clients' outer address (as after NAT).
        #[arg(long, default_value = "198.18.0.2")]
        client_addr: Ipv4Addr,
        /// Client k uses outer UDP port base + k.
        #[arg(long, default_value_t = 10_000)]
        client_port_base: u16,
        /// Our outer address (default: the outside interface's).
        #[arg(long)]
        local: Option<Ipv4Addr>,
        /// Packets per batch.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Seed of the session keys (default: the clock).
        #[arg(long)]
        seed: Option<u64>,
        #[command(flatten)]
        xsk: XskArgs,
    },
    /// The no-crypto baseline: AF_XDP rx outside, Ethernet rewrite, tx inside.
    Forward {
        /// Outside interface.
        #[arg(long)]
        outside: String,
        /// Inside interface.
        #[arg(long)]
        inside: String,
        /// Threads (one per queue, each pinned).
        #[arg(long, default_value_t = 1)]
        workers: u16,
        /// The next hop on the inside: its MAC comes from the neighbour table.
        #[arg(long, default_value = "198.18.1.2")]
        next_hop: Ipv4Addr,
        /// The next hop's MAC (instead of the neighbour table).
        #[arg(long)]
        next_hop_mac: Option<String>,
        /// Network the inside steering program takes (as the gateway's pool).
        #[arg(long, default_value = "198.19.0.0/16")]
        pool: String,
        /// Stop after this long (default: at SIGINT/SIGTERM).
        #[arg(long)]
        seconds: Option<f64>,
        /// CPUs for the threads (default: thread i on CPU i+1 mod nproc).
        #[arg(long)]
        cpus: Option<String>,
        /// Write this file once the sockets are bound.
        #[arg(long)]
        ready: Option<String>,
        /// Packets per batch.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        #[command(flatten)]
        xsk: XskArgs,
    },
    /// Play the sessions of a session table: pre-sealed ESP-in-UDP over AF_XDP TX.
    Gen {
        /// Interface towards the gateway.
        #[arg(long)]
        ifname: String,
        /// Session table written by `gateway`.
        #[arg(long)]
        keys: String,
        /// Inner IPv4 packet size: 52..=1400, or imix.
        #[arg(long, default_value = "64")]
        size: String,
        /// Packets per second, or `max`.
        #[arg(long, default_value = "max")]
        rate: String,
        /// How long to send.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Destination of the inner packets (the sink).
        #[arg(long, default_value = "198.18.1.2")]
        inner_dst: Ipv4Addr,
        /// The gateway's MAC (default: the neighbour table entry of its address).
        #[arg(long)]
        dst_mac: Option<String>,
        /// Every N-th packet is a latency probe sealed at send time (0: none).
        #[arg(long, default_value_t = 64)]
        probe_every: u64,
        /// Memory for pre-sealed packets.
        #[arg(long, default_value_t = 3072)]
        pool_mb: usize,
        /// With --rate max, seal for at most this rate × --seconds.
        #[arg(long, default_value_t = 1_500_000.0)]
        max_pps: f64,
        /// Pin the sending thread (after sealing, which uses every CPU).
        #[arg(long)]
        cpu: Option<usize>,
        /// Frames per transmit call (the kernel sends at most 32 per wakeup in copy mode).
        #[arg(long, default_value_t = 32)]
        batch: usize,
        #[command(flatten)]
        xsk: XskArgs,
    },
    /// Count what arrives on the inside link; one-way latency of the probes.
    Sink {
        /// Interface to receive on.
        #[arg(long)]
        ifname: String,
        /// Give up after this long.
        #[arg(long, default_value_t = 60.0)]
        seconds: f64,
        /// Receive queues to bind.
        #[arg(long, default_value_t = 1)]
        queues: u32,
        /// IPv4 destinations to take (everything else goes to the kernel).
        #[arg(long, default_value = "198.18.0.0/15")]
        capture: String,
        /// Session table: lets the sink open the probes among ESP packets (forwarder).
        #[arg(long)]
        keys: Option<String>,
        /// Stop this many seconds after the last packet (0: only at --seconds or a
        /// signal; the sink reads what is queued before it stops).
        #[arg(long, default_value_t = 0.0)]
        idle_exit: f64,
        /// Pin to this CPU.
        #[arg(long)]
        cpu: Option<usize>,
        /// Must match the generator's --probe-every.
        #[arg(long, default_value_t = 64)]
        probe_every: u64,
        /// Write this file once the sockets are bound.
        #[arg(long)]
        ready: Option<String>,
        /// Packets per batch.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        #[command(flatten)]
        xsk: XskArgs,
    },
    /// Opens and holds L2TP + PPP sessions against `sekisho run` (plain L2TP), reports
    /// the setup rate; measure the gateway's idle CPU meanwhile.
    Hold {
        /// Gateway address (UDP 1701).
        #[arg(long)]
        gateway: Ipv4Addr,
        /// Local address to send from.
        #[arg(long)]
        local: Ipv4Addr,
        /// First local UDP port (one per tunnel).
        #[arg(long, default_value_t = 20000)]
        port_base: u16,
        /// Sessions in all.
        #[arg(long, default_value_t = 10_000)]
        sessions: usize,
        /// Sessions per tunnel.
        #[arg(long, default_value_t = 100)]
        per_tunnel: usize,
        /// PPP user.
        #[arg(long, default_value = "vpnuser")]
        user: String,
        /// PPP password.
        #[arg(long, default_value = "vpnpass123")]
        password: String,
        /// Seconds to hold the sessions after all are up.
        #[arg(long, default_value_t = 30)]
        hold_seconds: u64,
    },
    /// Connects --clients simulated L2TP/IPsec clients (full IKEv1 MM + QM, L2TP,
    /// PPP MS-CHAPv2) as fast as a `sekisho run` gateway in namespaces of its own
    /// accepts them; reports setups per second and per control-core second, step by
    /// step, and RSS per session, as JSON.
    Handshake {
        /// Simulated clients.
        #[arg(long, default_value_t = 10_000)]
        clients: usize,
        #[command(flatten)]
        fleet: sekisho::demo::FleetArgs,
        /// The `sekisho` binary (default: next to this one).
        #[arg(long)]
        sekisho: Option<std::path::PathBuf>,
    },
    /// The report of a perf/report.sh work directory: Markdown plus two SVG plots.
    Matrix {
        /// Work directory (machine.txt, bench.json, matrix.jsonl, handshake.jsonl,
        /// peers.jsonl, sekisho-peer.jsonl).
        #[arg(long)]
        dir: String,
        /// The Markdown file; the plots go beside it as <stem>-matrix.svg and
        /// <stem>-peers.svg.
        #[arg(long)]
        out: String,
        /// Date line.
        #[arg(long, default_value = "")]
        date: String,
        /// The command that produced the run.
        #[arg(long, default_value = "perf/report.sh")]
        command: String,
    },
    /// Markdown table of a perf/run.sh work directory.
    Report {
        /// Work directory with one subdirectory per case.
        #[arg(long)]
        dir: String,
        /// Also write the table here.
        #[arg(long)]
        out: Option<String>,
        /// Date line.
        #[arg(long, default_value = "")]
        date: String,
        /// The command that produced the run.
        #[arg(long, default_value = "perf/run.sh")]
        command: String,
    },
}

fn parse_rate(s: &str) -> Res<Option<f64>> {
    if s == "max" {
        return Ok(None);
    }
    match s.parse::<f64>() {
        Ok(r) if r > 0.0 => Ok(Some(r)),
        _ => Err(format!("--rate {s:?}: packets per second, or max")),
    }
}

fn run(cli: Cli, signals: &Signals) -> Res<()> {
    let seed = || common::now_ns() ^ u64::from(std::process::id()) << 32;
    match cli.cmd {
        Cmd::Gateway {
            outside,
            inside,
            sessions,
            transform,
            workers,
            keys,
            seconds,
            cpus,
            pool,
            client_addr,
            client_port_base,
            local,
            batch,
            seed: s,
            xsk,
        } => gateway::run(
            gateway::Args {
                outside,
                inside,
                sessions,
                transform,
                workers,
                keys,
                seconds,
                cpus: cpus.as_deref().map(parse_cpus).transpose()?,
                pool,
                client_addr,
                client_port_base,
                local,
                sizes: xsk.into(),
                batch,
                seed: s.unwrap_or_else(seed),
            },
            signals,
        ),
        Cmd::Forward {
            outside,
            inside,
            workers,
            next_hop,
            next_hop_mac,
            pool,
            seconds,
            cpus,
            ready,
            batch,
            xsk,
        } => forward::run(
            forward::Args {
                outside,
                inside,
                workers,
                next_hop,
                next_hop_mac: next_hop_mac.as_deref().map(parse_mac).transpose()?,
                pool,
                seconds,
                cpus: cpus.as_deref().map(parse_cpus).transpose()?,
                ready,
                sizes: xsk.into(),
                batch,
            },
            signals,
        ),
        Cmd::Gen {
            ifname,
            keys,
            size,
            rate,
            seconds,
            inner_dst,
            dst_mac,
            probe_every,
            pool_mb,
            max_pps,
            cpu,
            batch,
            xsk,
        } => generator::run(
            generator::Args {
                ifname,
                keys,
                size,
                rate: parse_rate(&rate)?,
                seconds,
                inner_dst,
                dst_mac: dst_mac.as_deref().map(parse_mac).transpose()?,
                probe_every,
                pool_mb,
                max_pps,
                cpu,
                batch,
                sizes: xsk.into(),
            },
            signals,
        ),
        Cmd::Sink {
            ifname,
            seconds,
            queues,
            capture,
            keys,
            idle_exit,
            cpu,
            probe_every,
            ready,
            batch,
            xsk,
        } => sink::run(
            sink::Args {
                ifname,
                seconds,
                queues,
                capture,
                keys,
                idle_exit,
                cpu,
                probe_every,
                ready,
                sizes: xsk.into(),
                batch,
            },
            signals,
        ),
        Cmd::Hold {
            gateway,
            local,
            port_base,
            sessions,
            per_tunnel,
            user,
            password,
            hold_seconds,
        } => hold::run(
            hold::Args {
                gateway,
                local,
                port_base,
                sessions,
                per_tunnel,
                user,
                password,
                hold_seconds,
            },
            signals,
        ),
        Cmd::Handshake {
            clients,
            fleet,
            sekisho,
        } => handshake::run(
            handshake::Args {
                clients,
                fleet,
                sekisho,
            },
            signals,
        ),
        Cmd::Matrix {
            dir,
            out,
            date,
            command,
        } => matrix::run(matrix::Args {
            dir,
            out,
            date,
            command,
        }),
        Cmd::Report {
            dir,
            out,
            date,
            command,
        } => report::run(report::Args {
            dir,
            out,
            date,
            command,
        }),
    }
}

fn main() -> ExitCode {
    // Before any thread exists, so every thread inherits the blocked mask.
    let signals = match Signals::block() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sekisho-perf: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse(), &signals) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sekisho-perf: {e}");
            ExitCode::FAILURE
        }
    }
}
