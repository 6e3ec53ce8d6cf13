//! The private world of `sekisho demo`: three network namespaces joined by veth pairs
//! (clients ⇄ gateway ⇄ inside host), or, without root, one user + network namespace
//! on loopback; the gateway (`sekisho run` with a generated configuration) as a child
//! process; and the teardown of everything created, by name and by PID.
//!
//! ```text
//!  clients ns                gateway ns                          inside ns
//!  skdc0 10.77.0.2/24 ── skdg0 10.77.0.254/24   TUN 10.99.0.1   skdi1 10.88.0.2/24
//!                             (AF_XDP here)     skdi0 10.88.0.1/24 ──┘
//! ```

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{IoChoice, Options};

/// The gateway's outside address.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 254);
/// The clients' outer address (netns world).
pub const CLIENTS: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// The inside host (netns world).
pub const INSIDE: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 2);
/// The gateway's inner (PPP) address; the inside host in the loopback world.
pub const INNER_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
/// The pre-shared key of the demo.
pub const PSK: &str = "sekisho-demo-pre-shared-key";
/// The password of every demo user.
pub const PASSWORD: &str = "demo-password";

/// The demo user of client `k`.
pub fn user(k: usize) -> String {
    format!("demo{k}")
}

/// Which world was built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Network namespaces and veth pairs (root).
    Netns {
        /// Clients, gateway, inside host.
        ns: [String; 3],
    },
    /// One user + network namespace on loopback (no root): socket backend only.
    Loopback,
}

/// Addresses and namespaces the fleet and the inside host use.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Which world.
    pub kind: Kind,
    /// The gateway's outside address.
    pub gateway: Ipv4Addr,
    /// The clients' outer address.
    pub clients: Ipv4Addr,
    /// The inside host's address (the traffic's far end).
    pub inside: Ipv4Addr,
}

impl Layout {
    /// The namespace of the clients (`None`: stay where we are).
    pub fn client_ns(&self) -> Option<&str> {
        match &self.kind {
            Kind::Netns { ns } => Some(&ns[0]),
            Kind::Loopback => None,
        }
    }

    /// The namespace of the inside host.
    pub fn inside_ns(&self) -> Option<&str> {
        match &self.kind {
            Kind::Netns { ns } => Some(&ns[2]),
            Kind::Loopback => None,
        }
    }
}

/// Everything the demo created; dropping it removes all of it.
pub struct World {
    /// Addresses and namespaces.
    pub layout: Layout,
    /// The gateway process.
    gateway: Option<Child>,
    /// Scratch directory: configuration, gateway log, stats file.
    pub dir: PathBuf,
}

impl World {
    /// The gateway's PID.
    pub fn gateway_pid(&self) -> Option<u32> {
        self.gateway.as_ref().map(Child::id)
    }

    /// Where the gateway writes its counters.
    pub fn stats_file(&self) -> PathBuf {
        self.dir.join("stats.json")
    }

    /// The gateway's log (stderr).
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("gateway.log")
    }

    /// Asks the gateway to stop (SIGTERM) and waits up to `grace`, then kills it.
    pub fn stop_gateway(&mut self, grace: Duration) {
        let Some(mut g) = self.gateway.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(g.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if let Ok(Some(_)) = g.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = g.kill();
        let _ = g.wait();
    }

    /// Whether the gateway is still running; its log tail when not.
    pub fn gateway_exited(&mut self) -> Option<String> {
        let g = self.gateway.as_mut()?;
        match g.try_wait() {
            Ok(Some(st)) => Some(format!("sekisho run exited ({st}):\n{}", self.log_tail())),
            _ => None,
        }
    }

    /// The last lines of the gateway's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_file()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop_gateway(Duration::from_secs(3));
        if let Kind::Netns { ns } = &self.layout.kind {
            for n in ns {
                let _ = Command::new("ip")
                    .args(["netns", "del", n])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        if std::env::var_os("SEKISHO_DEMO_KEEP").is_some() {
            eprintln!("sekisho demo: kept {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e} (is iproute2 installed?)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn sysctl(ns: &str, key: &str, value: &str) -> Result<(), String> {
    ip(&[
        "netns",
        "exec",
        ns,
        "sysctl",
        "-qw",
        &format!("{key}={value}"),
    ])
}

/// Moves the calling thread into network namespace `ns` (a name under /var/run/netns).
pub fn enter(ns: Option<&str>) -> Result<(), String> {
    let Some(ns) = ns else { return Ok(()) };
    let f = std::fs::File::open(format!("/var/run/netns/{ns}"))
        .map_err(|e| format!("netns {ns}: {e}"))?;
    nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("setns {ns}: {e}"))
}

/// The smallest pool (a CIDR) with room for `clients` addresses, in 10.98.0.0/16.
pub fn pool_for(clients: usize) -> String {
    let need = (clients + 8).next_power_of_two().max(256);
    let len = 32 - need.trailing_zeros();
    format!("10.98.0.0/{}", len.max(16))
}

/// The gateway's configuration for this run.
pub fn config(o: &Options, layout: &Layout, stats: &std::path::Path) -> String {
    let (interface, io, tun) = match (&layout.kind, o.io) {
        (Kind::Loopback, _) => (None, "socket", "skdt0"),
        (Kind::Netns { .. }, IoChoice::Socket) => (Some("skdg0"), "socket", "skdt0"),
        (Kind::Netns { .. }, IoChoice::Xdp) => (Some("skdg0"), "xdp", "skdt0"),
        (Kind::Netns { .. }, IoChoice::Auto) => (Some("skdg0"), "auto", "skdt0"),
    };
    let mut c = format!(
        "# written by `sekisho demo`; stats go to {}\n[gateway]\nlisten = \"{}\"\n",
        stats.display(),
        layout.gateway
    );
    if let Some(i) = interface {
        c += &format!("interface = \"{i}\"\n");
    }
    c += &format!(
        "io = \"{io}\"\nworkers = {}\ntun_name = \"{tun}\"\n",
        o.workers
    );
    if o.inside_xdp && matches!(layout.kind, Kind::Netns { .. }) {
        // Router mode: the inside veth through AF_XDP too, no TUN device.
        c += "inside = \"skdi0\"\n";
    }
    c += &format!(
        "[ipsec]\npsk = \"{PSK}\"\nmax_half_open = {}\nmax_half_open_per_peer = {}\n\
         dh_per_second = 100000\n",
        o.clients + 64,
        o.clients + 64
    );
    c += "[l2tp]\nrequire_ipsec = true\n";
    c +=
        &format!("[ppp]\nauth = [\"mschapv2\"]\nlocal_address = \"{INNER_GATEWAY}\"\nmtu = 1400\n");
    c += &format!("[pool]\nrange = \"{}\"\n", pool_for(o.clients));
    for k in 0..o.clients {
        c += &format!(
            "[[user]]\nname = \"{}\"\npassword = \"{PASSWORD}\"\n",
            user(k)
        );
    }
    c
}

/// Builds the world and starts the gateway in it; waits until the gateway writes its
/// first stats (it is then up), at most 15 s.
pub fn build(o: &Options, exe: &std::path::Path, root: bool) -> Result<World, String> {
    let id = std::process::id();
    let dir = std::env::temp_dir().join(format!("sekisho-demo-{id}"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let layout = if root {
        Layout {
            kind: Kind::Netns {
                ns: [
                    format!("skdc{id}"),
                    format!("skdg{id}"),
                    format!("skdi{id}"),
                ],
            },
            gateway: GATEWAY,
            clients: CLIENTS,
            inside: INSIDE,
        }
    } else {
        Layout {
            kind: Kind::Loopback,
            gateway: Ipv4Addr::LOCALHOST,
            clients: Ipv4Addr::LOCALHOST,
            inside: INNER_GATEWAY,
        }
    };
    // From here on, Drop removes whatever was made.
    let mut w = World {
        layout,
        gateway: None,
        dir,
    };
    match w.layout.kind.clone() {
        Kind::Netns { ns } => netns(&ns, o.workers)?,
        Kind::Loopback => ip(&["link", "set", "lo", "up"])?,
    }
    let stats = w.stats_file();
    let cfg_path = w.dir.join("sekisho.toml");
    std::fs::write(&cfg_path, config(o, &w.layout, &stats)).map_err(|e| e.to_string())?;
    let log = std::fs::File::create(w.log_file()).map_err(|e| e.to_string())?;
    let mut cmd = match &w.layout.kind {
        Kind::Netns { ns } => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &ns[1]]).arg(exe);
            c
        }
        Kind::Loopback => Command::new(exe),
    };
    cmd.arg("run")
        .arg("-c")
        .arg(&cfg_path)
        .arg("--stats")
        .arg(&stats)
        .env(
            "RUST_LOG",
            std::env::var("SEKISHO_DEMO_LOG").unwrap_or("warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // `ip netns exec` execs the command: the child's PID is the gateway's.
    w.gateway = Some(cmd.spawn().map_err(|e| format!("start sekisho run: {e}"))?);
    let t0 = Instant::now();
    while !stats.exists() {
        if let Some(e) = w.gateway_exited() {
            return Err(e);
        }
        if t0.elapsed() > Duration::from_secs(15) {
            return Err(format!(
                "the gateway did not come up in 15 s:\n{}",
                w.log_tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(w)
}

fn netns(ns: &[String; 3], workers: usize) -> Result<(), String> {
    let [c, g, i] = ns;
    for n in ns {
        ip(&["netns", "add", n])?;
        ip(&["-n", n, "link", "set", "lo", "up"])?;
    }
    // Outside: clients ⇄ gateway, one queue per gateway worker (the steering program
    // redirects each queue to its worker's AF_XDP socket; a queue without one drops).
    let q = workers.max(1).to_string();
    // A veth pair from `ns:dev` to `peer_ns:peer`, `q` queues on both ends.
    let veth = |ns: &str, dev: &str, peer_ns: &str, peer: &str| {
        ip(&[
            "-n",
            ns,
            "link",
            "add",
            dev,
            "numrxqueues",
            &q,
            "numtxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            peer,
            "netns",
            peer_ns,
            "numrxqueues",
            &q,
            "numtxqueues",
            &q,
        ])
    };
    veth(g, "skdg0", c, "skdc0")?;
    ip(&["-n", g, "addr", "add", "10.77.0.254/24", "dev", "skdg0"])?;
    ip(&["-n", c, "addr", "add", "10.77.0.2/24", "dev", "skdc0"])?;
    // Inside: gateway ⇄ inside host (queues for router mode's AF_XDP sockets).
    veth(g, "skdi0", i, "skdi1")?;
    ip(&["-n", g, "addr", "add", "10.88.0.1/24", "dev", "skdi0"])?;
    ip(&["-n", i, "addr", "add", "10.88.0.2/24", "dev", "skdi1"])?;
    for (n, d) in [(g, "skdg0"), (c, "skdc0"), (g, "skdi0"), (i, "skdi1")] {
        ip(&["-n", n, "link", "set", d, "mtu", "1500", "up"])?;
    }
    ip(&["-n", i, "route", "add", "10.98.0.0/16", "via", "10.88.0.1"])?;
    ip(&["-n", i, "route", "add", "10.99.0.0/24", "via", "10.88.0.1"])?;
    for n in ns {
        sysctl(n, "net.ipv6.conf.all.disable_ipv6", "1")?;
        sysctl(n, "net.ipv6.conf.default.disable_ipv6", "1")?;
    }
    sysctl(g, "net.ipv4.ip_forward", "1")?;
    // Many clients' sockets: room for bursts.
    for n in [c, i] {
        sysctl(n, "net.core.rmem_default", "1048576")?;
        sysctl(n, "net.core.wmem_default", "1048576")?;
    }
    // Static neighbours: no ARP races at start, nothing for the steering to pass.
    let mac = |n: &str, d: &str| -> Result<String, String> {
        let out = Command::new("ip")
            .args(["-n", n, "-br", "link", "show", d])
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.split_whitespace()
            .nth(2)
            .map(str::to_string)
            .ok_or_else(|| format!("no MAC for {d}"))
    };
    let (mg, mc) = (mac(g, "skdg0")?, mac(c, "skdc0")?);
    let (mgi, mi) = (mac(g, "skdi0")?, mac(i, "skdi1")?);
    // Both ends of both links; the inside host's entry is what router mode's
    // XdpInside reads from the kernel's neighbour table.
    for (n, addr, lladdr, dev) in [
        (c, "10.77.0.254", &mg, "skdc0"),
        (g, "10.77.0.2", &mc, "skdg0"),
        (g, "10.88.0.2", &mi, "skdi0"),
        (i, "10.88.0.1", &mgi, "skdi1"),
    ] {
        ip(&[
            "-n",
            n,
            "neigh",
            "replace",
            addr,
            "lladdr",
            lladdr,
            "dev",
            dev,
            "nud",
            "permanent",
        ])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn layout(kind: Kind) -> Layout {
        Layout {
            kind,
            gateway: GATEWAY,
            clients: CLIENTS,
            inside: INSIDE,
        }
    }

    #[test]
    fn the_pool_holds_every_client() {
        assert_eq!(pool_for(1), "10.98.0.0/24");
        assert_eq!(pool_for(200), "10.98.0.0/24");
        assert_eq!(pool_for(250), "10.98.0.0/23");
        assert_eq!(pool_for(10_000), "10.98.0.0/18");
        assert_eq!(pool_for(40_000), "10.98.0.0/16");
    }

    #[test]
    fn the_generated_configuration_is_one_the_gateway_accepts() {
        for (kind, io) in [
            (
                Kind::Netns {
                    ns: ["a".into(), "b".into(), "c".into()],
                },
                IoChoice::Auto,
            ),
            (Kind::Loopback, IoChoice::Socket),
        ] {
            let o = Options {
                clients: 300,
                io,
                ..Options::default()
            };
            let text = config(&o, &layout(kind), std::path::Path::new("/tmp/x"));
            let (cfg, _) = Config::parse(&text).expect("parses");
            let (pool, users) = crate::daemon::check(&cfg).expect("checks");
            assert_eq!(users.len(), 300);
            assert!(pool.contains(Ipv4Addr::new(10, 98, 1, 30)));
            assert!(cfg.l2tp.require_ipsec);
            assert!(cfg.ipsec.max_half_open_per_peer >= 300);
        }
    }
}
