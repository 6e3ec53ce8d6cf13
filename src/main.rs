//! The `sekisho` command.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use sekisho::bench;
use sekisho::crypto::Transform;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// sekisho — an L2TP/IPsec edge gateway.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway (data plane + control thread) from a configuration file.
    Run {
        /// The configuration file (TOML).
        #[arg(short, long)]
        config: std::path::PathBuf,
        /// Write the data plane's counters (per worker, drops by reason) to this file
        /// as JSON every second and at exit.
        #[arg(long)]
        stats: Option<std::path::PathBuf>,
    },
    /// Check a configuration file: exit 0 when it is good, else name the key and the problem.
    CheckConfig {
        /// The configuration file (TOML).
        #[arg(short, long)]
        config: std::path::PathBuf,
    },
    /// Show the whole gateway on this machine: a private world (network namespaces as
    /// root, else loopback in a user namespace), `sekisho run`, N simulated L2TP/IPsec
    /// clients (IKEv1, L2TP, PPP MS-CHAPv2), traffic both ways with latency probes,
    /// then a table: sessions, setup rate, throughput, latency, drops, CPU.
    Demo {
        /// Simulated clients.
        #[arg(long, default_value_t = 200)]
        clients: usize,
        /// Seconds of traffic once every session is up (0: handshakes only).
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Inner IPv4 packet size: 64..=1400, or imix (7:4:1 of 64/576/1400).
        #[arg(long, default_value = "1400")]
        size: sekisho::demo::Size,
        #[command(flatten)]
        fleet: sekisho::demo::FleetArgs,
        /// The gateway's inside: tun (the TUN device, the kernel routes to the inside
        /// host) or xdp (router mode: the inside veth through AF_XDP; needs --io xdp).
        #[arg(long, default_value = "tun", value_parser = ["tun", "xdp"])]
        inside: String,
        /// Print one JSON object instead of the table (progress stays on stderr).
        #[arg(long)]
        json: bool,
    },
    /// Measure the ESP transforms and the full data path on this machine, one core:
    /// ns per packet and Gbps per core for the raw AEAD calls and for the whole
    /// decap + encap chain, and their ratio.
    Bench {
        /// Print one JSON array of rows instead of the table.
        #[arg(long)]
        json: bool,
        /// Shorter measurements (about 4× faster, noisier).
        #[arg(long)]
        quick: bool,
        /// Only these transforms (e.g. aes128-gcm,aes256-sha1).
        #[arg(long, value_delimiter = ',')]
        transform: Vec<String>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, stats } => {
            match sekisho::daemon::run_with(&config, stats.as_deref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sekisho run: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { config } => check_config(&config),
        Command::Demo {
            clients,
            seconds,
            size,
            fleet,
            inside,
            json,
        } => run_demo(
            &sekisho::demo::Options {
                inside_xdp: inside == "xdp",
                ..sekisho::demo::Options::new(clients, seconds, size, &fleet)
            },
            json,
        ),
        Command::Bench {
            json,
            quick,
            transform,
        } => run_bench(json, quick, &transform),
    }
}

fn run_demo(o: &sekisho::demo::Options, json: bool) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("sekisho demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !nix::unistd::geteuid().is_root() && std::env::var_os(sekisho::demo::USERNS_ENV).is_none() {
        // No root: the same command again in a user + network namespace of its own.
        let args: Vec<String> = std::env::args().skip(1).collect();
        return match sekisho::demo::reexec_in_userns(&exe, &args) {
            Ok(st) if st.success() => ExitCode::SUCCESS,
            Ok(st) => ExitCode::from(st.code().unwrap_or(1) as u8),
            Err(e) => {
                eprintln!("sekisho demo: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let started = Instant::now();
    match sekisho::demo::run(o, &exe) {
        Ok(s) => {
            if json {
                match serde_json::to_string(&s) {
                    Ok(j) => println!("{j}"),
                    Err(e) => eprintln!("sekisho demo: {e}"),
                }
            } else {
                print!("{}", sekisho::demo::report::table(&s));
                println!("done in {:.1} s", started.elapsed().as_secs_f64());
            }
            if s.sessions_failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("sekisho demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_bench(json: bool, quick: bool, names: &[String]) -> ExitCode {
    let mut o = bench::Options::default();
    if quick {
        o.per_measurement = Duration::from_millis(20);
        o.rounds = 2;
    }
    if !names.is_empty() {
        let mut ts = Vec::new();
        for n in names {
            match Transform::from_name(n) {
                Some(t) => ts.push(t),
                None => {
                    let known: Vec<&str> = Transform::ALL.iter().map(|t| t.name()).collect();
                    eprintln!(
                        "sekisho bench: unknown transform {n:?}; known: {}",
                        known.join(", ")
                    );
                    return ExitCode::from(2);
                }
            }
        }
        o.transforms = ts;
    }
    let started = Instant::now();
    if !json {
        println!(
            "sekisho bench: one core, batches of {}; raw = ESP open + seal, chain = decap + encap \
             (IPv4/UDP4500/ESP/UDP1701/L2TP/PPP/IPv4), Gb/s of inner packets per core",
            bench::BATCH
        );
        println!("{}", bench::header());
    }
    let rows = bench::run(&o, |r| {
        if !json {
            println!("{}", bench::format_row(r));
        }
    });
    if json {
        match serde_json::to_string_pretty(&rows) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("sekisho bench: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        for t in [Transform::Aes128CbcSha1, Transform::Aes256CbcSha256] {
            if o.transforms.contains(&t) {
                let (mb, serial) = bench::cbc_schedules(t, 1400, &o);
                println!(
                    "{t} seal at 1400 B: multi-buffer {mb:.1} ns, serial {serial:.1} ns ({:.2}x)",
                    serial / mb
                );
            }
        }
        println!("done in {:.1} s", started.elapsed().as_secs_f64());
    }
    ExitCode::SUCCESS
}

fn check_config(path: &std::path::Path) -> ExitCode {
    let (cfg, warnings) = match sekisho::config::Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::from(1);
        }
    };
    if let Err(e) = sekisho::daemon::check(&cfg) {
        eprintln!("{}: {e}", path.display());
        return ExitCode::from(1);
    }
    for w in &warnings {
        eprintln!("{}: warning: {w}", path.display());
    }
    println!(
        "{}: ok ({} users, pool {}, io {:?}, {} worker(s))",
        path.display(),
        cfg.users.len(),
        cfg.pool.range,
        cfg.gateway.io,
        cfg.gateway.workers
    );
    ExitCode::SUCCESS
}
