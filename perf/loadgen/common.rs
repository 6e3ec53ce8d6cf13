//! What the four subcommands share: the session table file, the test payload, the
//! clock, signals, CPU pinning, AF_XDP sockets and their kernel counters.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::time::{ClockId, clock_gettime};
use serde::{Deserialize, Serialize};

use sekisho::dataplane::xdp::xsk::{Xsk, XskConfig};

/// Errors of this tool are reported as text and end the subcommand.
pub type Res<T> = Result<T, String>;

/// Adds context to any displayable error.
pub trait Ctx<T> {
    /// `what: error`.
    fn ctx(self, what: &str) -> Res<T>;
}

impl<T, E: std::fmt::Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Res<T> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

/// The session table the gateway writes and the generator and sink read.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeysFile {
    /// ESP transform name (`aes128-gcm`, …).
    pub transform: String,
    /// The gateway's outer address (destination of client traffic).
    pub gateway: Ipv4Addr,
    /// The gateway's NAT-T port.
    pub gateway_port: u16,
    /// Workers of the gateway (= queues of the outside link that carry traffic).
    pub workers: u16,
    /// The client address pool, `a.b.c.d/len`.
    pub pool: String,
    /// One entry per installed session, in installation order.
    pub sessions: Vec<SessionEntry>,
}

/// One session as installed on the gateway, with everything a client needs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionEntry {
    /// Position in the table.
    pub index: u32,
    /// The worker that owns it.
    pub worker: u16,
    /// The receive queue of that worker: clients' packets must arrive on it.
    pub queue: u32,
    /// Client outer address (as after NAT).
    pub client_addr: Ipv4Addr,
    /// Client outer UDP port (distinct per client behind one NAT address).
    pub client_port: u16,
    /// The inner address IPCP gave the client.
    pub inner_addr: Ipv4Addr,
    /// The gateway's (our) L2TP tunnel id.
    pub gw_tunnel: u16,
    /// The gateway's L2TP session id.
    pub gw_session: u16,
    /// The client's L2TP tunnel id.
    pub client_tunnel: u16,
    /// The client's L2TP session id.
    pub client_session: u16,
    /// The gateway's inbound SPI, allocated by the worker: client → gateway ESP.
    pub spi_in: u32,
    /// The client's SPI: gateway → client ESP.
    pub spi_out: u32,
    /// The seed both KEYMATs were drawn from (informational; the hex is authoritative).
    pub keymat_seed: u64,
    /// KEYMAT of the client → gateway SA (key | salt | integrity key), hex.
    pub keymat_in: String,
    /// KEYMAT of the gateway → client SA, hex.
    pub keymat_out: String,
}

impl KeysFile {
    /// Reads and parses a session table.
    pub fn load(path: &str) -> Res<KeysFile> {
        let text = std::fs::read_to_string(path).ctx(&format!("read {path}"))?;
        serde_json::from_str(&text).ctx(&format!("parse {path}"))
    }

    /// Writes the table atomically (readers poll for the file to appear).
    pub fn store(&self, path: &str) -> Res<()> {
        let tmp = format!("{path}.tmp");
        let text = serde_json::to_string_pretty(self).ctx("serialize session table")?;
        std::fs::write(&tmp, text).ctx(&format!("write {tmp}"))?;
        std::fs::rename(&tmp, path).ctx(&format!("rename {tmp}"))
    }
}

/// A deterministic 64-bit generator (splitmix64): keys and IV seeds for test SAs.
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// `n` octets.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Parses lower- or upper-case hex.
pub fn unhex(s: &str) -> Res<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return Err(format!("odd-length hex {s:?}"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ctx("hex"))
        .collect()
}

/// Parses `a.b.c.d/len`.
pub fn parse_net(s: &str) -> Res<(Ipv4Addr, u8)> {
    let (a, l) = s
        .split_once('/')
        .ok_or(format!("{s:?}: expected a.b.c.d/len"))?;
    let a: Ipv4Addr = a.parse().ctx(s)?;
    let l: u8 = l.parse().ctx(s)?;
    if l > 32 {
        return Err(format!("{s:?}: prefix longer than 32"));
    }
    Ok((a, l))
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Res<[u8; 6]> {
    let v: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .ctx(s)?;
    v.try_into()
        .map_err(|_| format!("{s:?}: not a MAC address"))
}

/// The first IPv4 address of an interface, asked in this thread's namespace.
pub fn interface_ipv4(name: &str) -> Option<Ipv4Addr> {
    nix::ifaddrs::getifaddrs().ok()?.find_map(|ifa| {
        if ifa.interface_name != name {
            return None;
        }
        Some(ifa.address?.as_sockaddr_in()?.ip())
    })
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for every network namespace of the host
/// (namespaces made by `ip netns` share the time namespace), so a timestamp taken by
/// the generator can be compared with one taken by the sink.
pub fn now_ns() -> u64 {
    match clock_gettime(ClockId::CLOCK_MONOTONIC) {
        Ok(t) => t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64,
        Err(_) => 0,
    }
}

/// The payload every generated inner UDP packet carries right after its UDP header:
/// magic | flags | position | send timestamp. The position is the packet's global
/// index in the generator's schedule (session = position mod sessions, ESP sequence
/// number = position / sessions + 1). The timestamp is 0 for bulk packets, which are
/// sealed before the run, and the send time for probes, which are sealed as they
/// are sent.
pub mod payload {
    /// Marks our packets.
    pub const MAGIC: [u8; 4] = *b"SKPF";
    /// Flag: a latency probe with a real send timestamp.
    pub const PROBE: u32 = 1;
    /// Octets of the payload.
    pub const LEN: usize = 24;
    /// Offset of the payload in an inner IPv4/UDP packet built by `write_inner_udp`
    /// (20-octet IPv4 header, 8-octet UDP header).
    pub const AT: usize = 28;
    /// Smallest inner packet that holds it.
    pub const MIN_INNER: usize = AT + LEN;

    /// Writes the payload at the start of `b`.
    pub fn write(b: &mut [u8], flags: u32, position: u64, ts: u64) {
        b[0..4].copy_from_slice(&MAGIC);
        b[4..8].copy_from_slice(&flags.to_be_bytes());
        b[8..16].copy_from_slice(&position.to_be_bytes());
        b[16..24].copy_from_slice(&ts.to_be_bytes());
    }

    /// Reads (flags, position, timestamp) if `b` starts with our payload.
    pub fn read(b: &[u8]) -> Option<(u32, u64, u64)> {
        let b = b.get(..LEN)?;
        if b[0..4] != MAGIC {
            return None;
        }
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_be_bytes(a)
        };
        Some((u32_at(4), u64_at(8), u64_at(16)))
    }
}

/// Whether global position `i` of the schedule is a latency probe.
pub fn is_probe(i: u64, probe_every: u64) -> bool {
    probe_every > 0 && i % probe_every == probe_every - 1
}

/// SIGINT and SIGTERM, blocked in every thread and read from a signalfd, so the main
/// loop can end cleanly (print its counters, detach XDP) without a signal handler.
pub struct Signals(SignalFd);

impl Signals {
    /// Blocks the signals in the calling thread (threads spawned later inherit the
    /// mask): call first thing in main.
    pub fn block() -> Res<Signals> {
        let mut m = SigSet::empty();
        m.add(Signal::SIGINT);
        m.add(Signal::SIGTERM);
        m.thread_block().ctx("block SIGINT/SIGTERM")?;
        let fd = SignalFd::with_flags(&m, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .ctx("signalfd")?;
        Ok(Signals(fd))
    }

    /// Unblocks the signals again in the calling thread (and the threads it spawns
    /// from now on), for code that handles SIGINT/SIGTERM itself.
    pub fn unblock(&self) -> Res<()> {
        let mut m = SigSet::empty();
        m.add(Signal::SIGINT);
        m.add(Signal::SIGTERM);
        m.thread_unblock().ctx("unblock SIGINT/SIGTERM")
    }

    /// Whether a signal came (does not block).
    pub fn pending(&self) -> bool {
        matches!(self.0.read_signal(), Ok(Some(_)))
    }

    /// Waits up to `d` for a signal; true if one came.
    pub fn wait(&self, d: Duration) -> bool {
        let ms = d.as_millis().min(60_000) as u16;
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(ms));
        self.pending()
    }
}

/// Pins the calling thread to a CPU.
pub fn pin(cpu: usize) -> Res<()> {
    let ids = core_affinity::get_core_ids().ok_or("cannot list CPUs")?;
    let id = ids
        .into_iter()
        .find(|c| c.id == cpu)
        .ok_or(format!("no CPU {cpu}"))?;
    if core_affinity::set_for_current(id) {
        Ok(())
    } else {
        Err(format!("cannot pin to CPU {cpu}"))
    }
}

/// Parses a CPU list `1,3`.
pub fn parse_cpus(s: &str) -> Res<Vec<usize>> {
    s.split(',').map(|c| c.trim().parse().ctx(s)).collect()
}

/// The CPU for worker `i`: from the list, else CPU i+1 (CPU 0 is left to the
/// generator and the sink), wrapping around.
pub fn cpu_for(list: &Option<Vec<usize>>, i: usize) -> usize {
    let n = core_affinity::get_core_ids().map_or(1, |v| v.len()).max(1);
    match list {
        Some(l) if !l.is_empty() => l[i % l.len()],
        _ => (i + 1) % n,
    }
}

/// Ring and UMEM sizes of every socket this tool opens.
#[derive(Clone, Copy, Debug)]
pub struct XskSizes {
    /// Frames in the UMEM.
    pub frames: u32,
    /// Entries per ring.
    pub ring: u32,
}

/// Opens an AF_XDP socket on (interface, queue): zero-copy if the driver can, copy
/// mode otherwise (veth). Returns it and whether it is zero-copy.
pub fn open_xsk(ifname: &str, queue: u32, sizes: XskSizes) -> Res<(Xsk, bool)> {
    let ifindex = sekisho::dataplane::xdp::loader::ifindex(ifname).ctx(ifname)?;
    let mut cfg = XskConfig {
        ifindex,
        queue,
        frames: sizes.frames,
        frame_size: 2048,
        ring_size: sizes.ring,
        zero_copy: true,
    };
    if let Ok(x) = Xsk::new(&cfg) {
        return Ok((x, true));
    }
    cfg.zero_copy = false;
    Xsk::new(&cfg)
        .map(|x| (x, false))
        .ctx(&format!("AF_XDP socket on {ifname} queue {queue}"))
}

/// The kernel's counters of an AF_XDP socket (XDP_STATISTICS).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct KernelXsk {
    /// Dropped on receive: frame too big, or no frame in the fill ring.
    pub rx_dropped: u64,
    /// Invalid descriptors on the rx ring.
    pub rx_invalid_descs: u64,
    /// Invalid descriptors on the tx ring.
    pub tx_invalid_descs: u64,
    /// Dropped on receive because the rx ring was full.
    pub rx_ring_full: u64,
    /// Times the fill ring was empty when a frame arrived (overlaps rx_dropped).
    pub rx_fill_ring_empty_descs: u64,
    /// Times the kernel found the tx ring empty (not a drop).
    pub tx_ring_empty_descs: u64,
}

impl KernelXsk {
    /// Reads a socket's counters (zero if the kernel refuses).
    pub fn of(x: &Xsk) -> KernelXsk {
        x.kernel_stats().map(KernelXsk::from).unwrap_or_default()
    }

    /// Sums.
    pub fn add(&mut self, o: &KernelXsk) {
        self.rx_dropped += o.rx_dropped;
        self.rx_invalid_descs += o.rx_invalid_descs;
        self.tx_invalid_descs += o.tx_invalid_descs;
        self.rx_ring_full += o.rx_ring_full;
        self.rx_fill_ring_empty_descs += o.rx_fill_ring_empty_descs;
        self.tx_ring_empty_descs += o.tx_ring_empty_descs;
    }

    /// Packets the socket lost: dropped or refused for a full ring, plus invalid
    /// descriptors (rx_fill_ring_empty_descs is contained in rx_dropped).
    pub fn lost(&self) -> u64 {
        self.rx_dropped + self.rx_ring_full + self.rx_invalid_descs + self.tx_invalid_descs
    }

    fn fields(&self) -> [u64; 6] {
        [
            self.rx_dropped,
            self.rx_invalid_descs,
            self.tx_invalid_descs,
            self.rx_ring_full,
            self.rx_fill_ring_empty_descs,
            self.tx_ring_empty_descs,
        ]
    }

    fn from_fields(f: [u64; 6]) -> KernelXsk {
        KernelXsk {
            rx_dropped: f[0],
            rx_invalid_descs: f[1],
            tx_invalid_descs: f[2],
            rx_ring_full: f[3],
            rx_fill_ring_empty_descs: f[4],
            tx_ring_empty_descs: f[5],
        }
    }
}

impl From<libc::xdp_statistics> for KernelXsk {
    fn from(s: libc::xdp_statistics) -> KernelXsk {
        KernelXsk {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: s.tx_ring_empty_descs,
        }
    }
}

/// CPU time of the calling thread, in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    match clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID) {
        Ok(t) => t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64,
        Err(_) => 0,
    }
}

/// The CPU time a thread spends while traffic flows. The machine is shared: a thread
/// may get only part of its core, so packets per CPU-second of the thread that does
/// the work (what one core of its own would carry) is steadier than packets per
/// second. Ticked every few milliseconds by the thread itself: an interval in which
/// packets came counts whole.
#[derive(Default)]
pub struct BusyClock {
    prev: u64,
    prev_wall: u64,
    /// CPU nanoseconds of intervals with traffic.
    pub busy_ns: u64,
    /// Wall-clock nanoseconds of intervals with traffic.
    pub wall_ns: u64,
    traffic: bool,
}

impl BusyClock {
    /// Starts counting from now.
    pub fn start() -> BusyClock {
        BusyClock {
            prev: thread_cpu_ns(),
            prev_wall: now_ns(),
            ..BusyClock::default()
        }
    }

    /// Notes that packets were handled in the current interval.
    #[inline]
    pub fn saw(&mut self, packets: usize) {
        self.traffic |= packets > 0;
    }

    /// Ends the current interval.
    pub fn tick(&mut self) {
        let now = thread_cpu_ns();
        let wall = now_ns();
        if self.traffic {
            self.busy_ns += now.saturating_sub(self.prev);
            self.wall_ns += wall.saturating_sub(self.prev_wall);
        }
        self.prev = now;
        self.prev_wall = wall;
        self.traffic = false;
    }
}

impl PortSnap {
    /// Sums.
    pub fn add(&mut self, o: &PortSnap) {
        self.kernel.add(&o.kernel);
        self.user.rx += o.user.rx;
        self.user.tx += o.user.tx;
        self.user.tx_ring_full += o.user.tx_ring_full;
        self.user.wakeups += o.user.wakeups;
        self.busy_cpu_ns += o.busy_cpu_ns;
        self.busy_wall_ns += o.busy_wall_ns;
    }
}

/// Counters of one socket that its owning thread publishes for the main thread, with
/// the CPU time that thread spent while packets flowed.
#[derive(Default)]
pub struct SharedXsk {
    kernel: [AtomicU64; 6],
    user: [AtomicU64; 4],
    busy: [AtomicU64; 2],
}

/// What [`SharedXsk`] holds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct PortSnap {
    /// The kernel's counters of the socket.
    pub kernel: KernelXsk,
    /// The socket's own counters.
    pub user: UserXsk,
    /// CPU nanoseconds the owning thread spent while traffic flowed.
    pub busy_cpu_ns: u64,
    /// Wall-clock nanoseconds of those intervals.
    pub busy_wall_ns: u64,
}

/// The user-space side of an [`Xsk`]'s counters.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct UserXsk {
    /// Frames received.
    pub rx: u64,
    /// Frames queued for transmit.
    pub tx: u64,
    /// Transmit attempts refused because the tx ring was full.
    pub tx_ring_full: u64,
    /// Wakeup syscalls.
    pub wakeups: u64,
}

impl SharedXsk {
    /// Stores a socket's current counters and the owner's busy clock.
    pub fn publish(&self, x: &Xsk, busy: Option<&BusyClock>) {
        for (a, v) in self.kernel.iter().zip(KernelXsk::of(x).fields()) {
            a.store(v, Ordering::Relaxed);
        }
        let c = x.counters;
        for (a, v) in self
            .user
            .iter()
            .zip([c.rx, c.tx, c.tx_ring_full, c.wakeups])
        {
            a.store(v, Ordering::Relaxed);
        }
        if let Some(b) = busy {
            self.busy[0].store(b.busy_ns, Ordering::Relaxed);
            self.busy[1].store(b.wall_ns, Ordering::Relaxed);
        }
    }

    /// The last published values.
    pub fn snapshot(&self) -> PortSnap {
        let g =
            |a: &[AtomicU64]| -> Vec<u64> { a.iter().map(|x| x.load(Ordering::Relaxed)).collect() };
        let (k, u, b) = (g(&self.kernel), g(&self.user), g(&self.busy));
        PortSnap {
            kernel: KernelXsk::from_fields([k[0], k[1], k[2], k[3], k[4], k[5]]),
            user: UserXsk {
                rx: u[0],
                tx: u[1],
                tx_ring_full: u[2],
                wakeups: u[3],
            },
            busy_cpu_ns: b[0],
            busy_wall_ns: b[1],
        }
    }
}

/// Drop counters by name, for JSON.
pub type Drops = BTreeMap<String, u64>;

/// Inner packet sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeMix {
    /// Every inner IPv4 packet this long.
    Fixed(usize),
    /// 7 × 64, 4 × 576, 1 × 1400 octets, interleaved.
    Imix,
}

/// The IMIX cycle (inner IPv4 sizes). The classic 7:4:1 mix with 1400 instead of
/// 1500 as the large size: 1400 is the largest inner packet whose ESP-in-UDP
/// encapsulation fits a 1500-octet outer MTU (1480 octets of outer IPv4).
pub const IMIX: [usize; 12] = [64, 576, 64, 64, 576, 64, 1400, 64, 576, 64, 576, 64];

impl SizeMix {
    /// `64`, `1400`, `imix`.
    pub fn parse(s: &str) -> Res<SizeMix> {
        if s == "imix" {
            return Ok(SizeMix::Imix);
        }
        let n: usize = s.parse().ctx(&format!("--size {s}"))?;
        if !(payload::MIN_INNER..=1400).contains(&n) {
            return Err(format!(
                "--size {n}: inner packets of {}..=1400 octets (or imix)",
                payload::MIN_INNER
            ));
        }
        Ok(SizeMix::Fixed(n))
    }

    /// The inner size at global position `i`.
    pub fn at(&self, i: u64) -> usize {
        match self {
            SizeMix::Fixed(n) => *n,
            SizeMix::Imix => IMIX[(i % IMIX.len() as u64) as usize],
        }
    }

    /// The name in reports.
    pub fn name(&self) -> String {
        match self {
            SizeMix::Fixed(n) => n.to_string(),
            SizeMix::Imix => "imix".into(),
        }
    }
}

/// Writes `path` (if given) when a subcommand is ready for traffic.
pub fn mark_ready(path: &Option<String>) -> Res<()> {
    if let Some(p) = path {
        std::fs::write(p, b"ready\n").ctx(&format!("write {p}"))?;
    }
    Ok(())
}
