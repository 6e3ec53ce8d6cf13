//! Starts the data plane: chooses the I/O backend (`io = auto` tries AF_XDP on the
//! outside interface and falls back to sockets, saying why), opens the TUN device
//! with one queue per worker, and runs one pinned worker thread per queue.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::config::IoMode;
use crate::esp::shard::{SpiAllocators, SpiLayout, SpiTable, WorkerIdError};

use super::backends::{SocketOutside, TunInside};
use super::chain::Shard;
use super::handoff::HandoffPorts;
use super::io::socket::{OutsideConfig, OutsideSockets};
use super::io::tun::TunConfig;
use super::stats::Stats;
use super::worker::{ControlMsg, Inside, Outside, SharedStats, Worker, WorkerCmd, WorkerConfig};
use super::xdp::loader::{Side, SteerConfig, Steering, XdpError, ifindex};
use super::xdp::port::{XdpInside, XdpPort, interface_mac};
use super::xdp::xsk::{Xsk, XskConfig};

/// What the data plane needs to start.
#[derive(Clone, Debug)]
pub struct PlaneConfig {
    /// Outside address.
    pub listen: Ipv4Addr,
    /// Outside interface (for XDP).
    pub interface: Option<String>,
    /// Backend choice.
    pub io: IoMode,
    /// Worker threads.
    pub workers: usize,
    /// IKE, NAT-T and L2TP ports.
    pub ports: (u16, u16, u16),
    /// The TUN device (address = the gateway's inner address); its queues carry the
    /// inside traffic unless `router` is set.
    pub tun: TunConfig,
    /// Router mode: AF_XDP on this inside interface towards the next hop, with the
    /// client pool (network, prefix length) steered to the workers.
    pub router: Option<(String, Ipv4Addr, u8)>,
    /// Refuse L2TP outside IPsec.
    pub require_ipsec: bool,
    /// MSS clamp for TCP SYNs.
    pub mss_clamp: Option<u16>,
    /// Open the raw ESP socket in socket mode (IP protocol 50).
    pub raw_esp: bool,
}

/// Which backend runs, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChosenIo {
    /// AF_XDP on the named interface, in the mode the kernel accepted.
    Xdp {
        /// Interface.
        interface: String,
        /// "native" or "generic".
        mode: &'static str,
    },
    /// UDP/raw sockets; `why` says why not XDP.
    Socket {
        /// The reason XDP was not used.
        why: String,
    },
}

/// A running data plane.
pub struct DataPlane {
    /// Command queue of each worker.
    pub cmds: Vec<Sender<WorkerCmd>>,
    /// Control packets from all workers.
    pub up: Receiver<ControlMsg>,
    /// Each worker's published counters.
    pub stats: Vec<Arc<SharedStats>>,
    /// The backend in use.
    pub io: ChosenIo,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    _steering: Option<Steering>,
    inside_steering: Option<Steering>,
    handoff: Vec<HandoffPorts>,
}

/// The SPI layout of the workers' inbound tables for a data plane of `workers`
/// workers: the control thread's [`SpiAllocators`] must use the same one (see
/// [`DataPlane::spi_allocators`]). Today the default layout (up to 64 workers) whatever
/// the count, so SPIs keep their meaning across restarts with another worker count.
pub fn spi_layout(_workers: usize) -> SpiLayout {
    SpiLayout::DEFAULT
}

/// Top bits of L2TP tunnel ids that name the owning worker.
pub fn tunnel_bits(workers: usize) -> u8 {
    if workers <= 1 {
        0
    } else {
        (usize::BITS - (workers - 1).leading_zeros()) as u8
    }
}

impl DataPlane {
    /// The SPI layout the workers' tables use.
    pub fn spi_layout(&self) -> SpiLayout {
        spi_layout(self.cmds.len())
    }

    /// One SPI allocator per worker, in the workers' layout, for the control thread
    /// (create it once: two sets would hand out the same SPIs).
    pub fn spi_allocators(&self) -> Result<SpiAllocators, WorkerIdError> {
        SpiAllocators::new(self.spi_layout(), self.cmds.len() as u16)
    }

    /// Sum of all workers' counters.
    pub fn totals(&self) -> Stats {
        let mut t = Stats::default();
        for s in &self.stats {
            t.add(&s.snapshot());
        }
        t
    }

    /// Stops the workers, waits for them and returns their final counters.
    pub fn shutdown(mut self) -> Stats {
        // Stop travels behind every command already queued, so the last control
        // messages (CDN, StopCCN) are sent before a worker leaves.
        for c in &self.cmds {
            let _ = c.send(WorkerCmd::Stop);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.stop.store(true, Ordering::Relaxed);
        self.totals()
    }
}

/// Starts the data plane.
pub fn start(cfg: &PlaneConfig) -> Result<DataPlane, String> {
    let mut tun_queues = match cfg.router {
        None => cfg.tun.open().map_err(|e| e.to_string())?,
        Some(_) => Vec::new(),
    };
    // The kernel would send its own IPv6 (router solicitations…) into the device; the
    // gateway carries IPv4 only.
    let _ = std::fs::write(
        format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", cfg.tun.name),
        "1",
    );
    let (up_tx, up_rx) = bounded::<ControlMsg>(16 * 1024);
    let stop = Arc::new(AtomicBool::new(false));

    let xdp_reason = match (cfg.io, &cfg.interface) {
        (IoMode::Socket, _) => Err("io = \"socket\" in the configuration".to_string()),
        (_, None) => Err("no gateway.interface configured".to_string()),
        (_, Some(ifname)) => try_xdp(cfg, ifname).map_err(|e| e.to_string()),
    };
    let mut plane = DataPlane {
        cmds: Vec::new(),
        up: up_rx,
        stats: Vec::new(),
        io: ChosenIo::Socket { why: String::new() },
        stop: stop.clone(),
        threads: Vec::new(),
        _steering: None,
        inside_steering: None,
        // Popped from the back by spawn: reverse so worker i gets ports i.
        handoff: if cfg.workers > 1 {
            HandoffPorts::mesh(cfg.workers, 4096)
                .into_iter()
                .rev()
                .collect()
        } else {
            Vec::new()
        },
    };
    match xdp_reason {
        Ok((steering, ports)) => {
            plane.io = ChosenIo::Xdp {
                interface: steering.interface.clone(),
                mode: match steering.mode {
                    aya::programs::XdpMode::Skb => "generic",
                    _ => "native",
                },
            };
            plane._steering = Some(steering);
            let mut insides = inside_ports(cfg, &mut plane, &mut tun_queues)?.into_iter();
            for (i, port) in ports.into_iter().enumerate() {
                let inside = insides
                    .next()
                    .ok_or_else(|| format!("no inside path for worker {i}"))?;
                spawn(&mut plane, cfg, i, move || Ok((port, inside)), &up_tx)?;
            }
        }
        Err(why) => {
            if cfg.io == IoMode::Xdp {
                return Err(format!("io = \"xdp\" but AF_XDP is unavailable: {why}"));
            }
            plane.io = ChosenIo::Socket { why };
            let insides = inside_ports(cfg, &mut plane, &mut tun_queues)?;
            for (i, q) in insides.into_iter().enumerate() {
                let mut oc = OutsideConfig::standard(cfg.listen);
                oc.ike = Some(cfg.ports.0);
                oc.natt = Some(cfg.ports.1);
                oc.l2tp = Some(cfg.ports.2);
                oc.reuse_port = cfg.workers > 1;
                let raw_esp = cfg.raw_esp && i == 0;
                // The sockets hold recvmmsg scratch that must stay on one thread: they
                // are opened by the worker itself.
                let make = move || {
                    let mut sockets = OutsideSockets::open(&oc).map_err(|e| e.to_string())?;
                    if raw_esp && let Err(e) = sockets.open_raw_esp() {
                        tracing::warn!("raw ESP socket unavailable, NAT-T only: {e}");
                    }
                    Ok((SocketOutside::new(sockets, 4096), q))
                };
                spawn(&mut plane, cfg, i, make, &up_tx)?;
            }
        }
    }
    match &plane.io {
        ChosenIo::Xdp { interface, mode } => {
            tracing::info!(%interface, mode, workers = cfg.workers, "data plane: AF_XDP")
        }
        ChosenIo::Socket { why } => {
            tracing::info!(
                workers = cfg.workers,
                "data plane: sockets (not XDP: {why})"
            )
        }
    }
    Ok(plane)
}

/// An AF_XDP socket on (interface, queue): zero-copy where the driver allows it, copy
/// mode otherwise (veth, most virtual NICs).
fn open_xsk(ifindex: u32, queue: u32) -> std::io::Result<Xsk> {
    let mut cfg = XskConfig {
        ifindex,
        queue,
        frames: 4096,
        frame_size: 2048,
        ring_size: 1024,
        zero_copy: true,
    };
    match Xsk::new(&cfg) {
        Ok(x) => {
            tracing::info!(queue, "AF_XDP zero-copy");
            Ok(x)
        }
        Err(zc) => {
            cfg.zero_copy = false;
            let x = Xsk::new(&cfg)?;
            tracing::debug!(queue, "AF_XDP copy mode (zero-copy refused: {zc})");
            Ok(x)
        }
    }
}

/// The inside path of each worker: a TUN queue, or an AF_XDP socket on the inside
/// interface (router mode, with the steering program attached there).
fn inside_ports(
    cfg: &PlaneConfig,
    plane: &mut DataPlane,
    tun_queues: &mut Vec<super::io::tun::TunQueue>,
) -> Result<Vec<AnyInside>, String> {
    let Some((ifname, net, prefix)) = &cfg.router else {
        return Ok(tun_queues
            .drain(..)
            .map(|q| AnyInside::Tun(TunInside::new(q)))
            .collect());
    };
    let steer = SteerConfig {
        ike_port: cfg.ports.0,
        natt_port: cfg.ports.1,
        l2tp_port: cfg.ports.2,
        pool: Some((*net, *prefix)),
    };
    let mut steering = Steering::attach(ifname, Side::Inside, &steer).map_err(|e| e.to_string())?;
    let ifi = ifindex(ifname).map_err(|e| e.to_string())?;
    let mac = interface_mac(ifname).ok_or_else(|| format!("no MAC address for {ifname}"))?;
    let mut out = Vec::new();
    for q in 0..cfg.workers as u32 {
        let xsk = open_xsk(ifi, q)
            .map_err(|e| format!("AF_XDP socket on inside {ifname} queue {q}: {e}"))?;
        steering.register(q, &xsk).map_err(|e| e.to_string())?;
        out.push(AnyInside::Router(Box::new(XdpInside::new(xsk, mac))));
    }
    plane.inside_steering = Some(steering);
    Ok(out)
}

/// The inside path of a worker, either kind.
// One per worker, built once and never moved on the packet path.
#[allow(clippy::large_enum_variant)]
pub enum AnyInside {
    /// TUN queue.
    Tun(TunInside),
    /// AF_XDP on the inside interface.
    Router(Box<XdpInside>),
}

impl<F: AsRef<[u8]> + AsMut<[u8]>> Inside<F> for AnyInside {
    fn recv(
        &mut self,
        frames: &mut dyn super::worker::FrameSource<F>,
        out: &mut Vec<super::chain::Pkt<F>>,
        max: usize,
    ) -> usize {
        match self {
            AnyInside::Tun(t) => t.recv(frames, out, max),
            AnyInside::Router(r) => r.recv(frames, out, max),
        }
    }
    fn send(&mut self, pkts: &[super::chain::Pkt<F>]) -> usize {
        match self {
            AnyInside::Tun(t) => Inside::<F>::send(t, pkts),
            AnyInside::Router(r) => Inside::<F>::send(r.as_mut(), pkts),
        }
    }
    fn fds(&self) -> Vec<std::os::fd::BorrowedFd<'_>> {
        match self {
            AnyInside::Tun(t) => Inside::<F>::fds(t),
            AnyInside::Router(r) => Inside::<F>::fds(r.as_ref()),
        }
    }
    fn take_drops(&mut self, stats: &mut Stats) {
        match self {
            AnyInside::Tun(t) => Inside::<F>::take_drops(t, stats),
            AnyInside::Router(r) => Inside::<F>::take_drops(r.as_mut(), stats),
        }
    }
}

fn try_xdp(cfg: &PlaneConfig, ifname: &str) -> Result<(Steering, Vec<XdpPort>), XdpError> {
    let steer_cfg = SteerConfig {
        ike_port: cfg.ports.0,
        natt_port: cfg.ports.1,
        l2tp_port: cfg.ports.2,
        pool: None,
    };
    let ifi = ifindex(ifname)?;
    let mac = interface_mac(ifname).ok_or_else(|| XdpError::NoInterface(ifname.into()))?;
    let mut steering = Steering::attach(ifname, Side::Outside, &steer_cfg)?;
    let mut ports = Vec::new();
    for q in 0..cfg.workers as u32 {
        let xsk = open_xsk(ifi, q)
            .map_err(|e| XdpError::Load(format!("AF_XDP socket on {ifname} queue {q}: {e}")))?;
        steering.register(q, &xsk)?;
        ports.push(XdpPort::new(xsk, mac));
    }
    Ok((steering, ports))
}

fn spawn<O, I, M>(
    plane: &mut DataPlane,
    cfg: &PlaneConfig,
    index: usize,
    make: M,
    up: &Sender<ControlMsg>,
) -> Result<(), String>
where
    O: Outside + 'static,
    I: Inside<O::Frame> + 'static,
    M: FnOnce() -> Result<(O, I), String> + Send + 'static,
{
    let (cmd_tx, cmd_rx) = bounded::<WorkerCmd>(4096);
    let stats = Arc::new(SharedStats::default());
    let inbound = SpiTable::try_new(index as u16, spi_layout(cfg.workers), 1024)
        .map_err(|e| format!("worker {index}: {e}"))?;
    let mut shard = Shard::new(inbound, cfg.require_ipsec);
    shard.mss_clamp = cfg.mss_clamp;
    let wcfg = WorkerConfig {
        id: index as u16,
        batch: 64,
        // Handoff rings and commands have no descriptor to wake poll: keep naps short.
        idle_wait: Duration::from_millis(5),
        workers: cfg.workers,
        tunnel_bits: tunnel_bits(cfg.workers),
        answer_ping_on: cfg.router.as_ref().map(|_| cfg.tun.addr),
    };
    let handoff = plane.handoff.pop();
    let (up, st, stop) = (up.clone(), stats.clone(), plane.stop.clone());
    let core =
        core_affinity::get_core_ids().and_then(|ids| ids.get(index % ids.len().max(1)).copied());
    let (ready_tx, ready_rx) = bounded::<Result<(), String>>(1);
    let t = std::thread::Builder::new()
        .name(format!("sekisho-w{index}"))
        .spawn(move || {
            if let Some(c) = core {
                core_affinity::set_for_current(c);
            }
            let (outside, inside) = match make() {
                Ok(io) => {
                    let _ = ready_tx.send(Ok(()));
                    io
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let mut w = Worker::new(wcfg, shard, outside, inside, cmd_rx, up, st, stop);
            if let Some(h) = handoff {
                w = w.with_handoff(h);
            }
            w.run();
        })
        .map_err(|e| format!("worker thread: {e}"))?;
    ready_rx
        .recv()
        .map_err(|_| format!("worker {index} exited during start"))?
        .map_err(|e| format!("worker {index}: {e}"))?;
    plane.cmds.push(cmd_tx);
    plane.stats.push(stats);
    plane.threads.push(t);
    Ok(())
}
