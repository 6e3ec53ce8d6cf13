//! Loads bpf/steer.c (built by build.rs) with aya and attaches it through a bpf_link,
//! so it detaches when the process exits, however it exits.

use std::fmt;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use aya::Ebpf;
use aya::maps::{Array, XskMap};
use aya::programs::{Xdp, XdpMode};

/// The object file, or empty when clang was missing at build time.
#[cfg(sekisho_bpf)]
static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/steer.o"));
#[cfg(not(sekisho_bpf))]
static OBJECT: &[u8] = &[];

/// Why XDP could not be set up: every variant says what to do about it.
#[derive(Debug)]
pub enum XdpError {
    /// build.rs found no clang.
    NotBuilt,
    /// The interface does not exist or its name is invalid.
    NoInterface(String),
    /// Loading, verifying or attaching failed (permissions, driver, kernel).
    Load(String),
}

impl fmt::Display for XdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XdpError::NotBuilt => f.write_str(
                "the XDP program was not built: clang was missing when sekisho was compiled \
                 (apt-get install clang linux-libc-dev, then rebuild)",
            ),
            XdpError::NoInterface(i) => write!(f, "no interface {i:?}"),
            XdpError::Load(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for XdpError {}

/// Which program of the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// ESP and UDP 500/4500/1701 on the outside interface.
    Outside,
    /// IPv4 to the client pool on the inside interface (router mode).
    Inside,
}

/// Steering configuration written into the program's `config` map.
#[derive(Clone, Copy, Debug)]
pub struct SteerConfig {
    /// IKE port.
    pub ike_port: u16,
    /// NAT-T port.
    pub natt_port: u16,
    /// L2TP port.
    pub l2tp_port: u16,
    /// Pool network and prefix length (inside side).
    pub pool: Option<(Ipv4Addr, u8)>,
}

/// An attached program and its socket map. Dropping it detaches the program.
pub struct Steering {
    bpf: Ebpf,
    xsks: XskMap<aya::maps::MapData>,
    /// Interface it is attached to.
    pub interface: String,
    /// Mode the kernel accepted.
    pub mode: XdpMode,
}

/// Interface index by name.
pub fn ifindex(name: &str) -> Result<u32, XdpError> {
    if name.is_empty() || name.len() > 15 || name.contains('\0') || name.contains('/') {
        return Err(XdpError::NoInterface(name.into()));
    }
    // if_nametoindex asks the kernel in the calling thread's network namespace
    // (sysfs would answer for the namespace it was mounted in).
    nix::net::if_::if_nametoindex(name).map_err(|_| XdpError::NoInterface(name.into()))
}

impl Steering {
    /// Loads and attaches the program for `side` on `interface`: native (driver) mode
    /// first, generic (skb) mode when the driver refuses.
    pub fn attach(interface: &str, side: Side, cfg: &SteerConfig) -> Result<Steering, XdpError> {
        if OBJECT.is_empty() {
            return Err(XdpError::NotBuilt);
        }
        ifindex(interface)?;
        let mut bpf = Ebpf::load(OBJECT).map_err(|e| XdpError::Load(format!("load: {e}")))?;
        {
            let mut config: Array<_, u32> = Array::try_from(
                bpf.map_mut("config")
                    .ok_or_else(|| XdpError::Load("no config map".into()))?,
            )
            .map_err(|e| XdpError::Load(format!("config map: {e}")))?;
            let (net, mask) = match cfg.pool {
                Some((n, len)) if len <= 32 => {
                    let mask = if len == 0 {
                        0
                    } else {
                        u32::MAX << (32 - u32::from(len))
                    };
                    (u32::from(n) & mask, mask)
                }
                _ => (0, 0),
            };
            let values = [
                u32::from(cfg.ike_port),
                u32::from(cfg.natt_port),
                u32::from(cfg.l2tp_port),
                net,
                mask,
            ];
            for (i, v) in values.into_iter().enumerate() {
                config
                    .set(i as u32, v, 0)
                    .map_err(|e| XdpError::Load(format!("config map: {e}")))?;
            }
        }
        let name = match side {
            Side::Outside => "xdp_outside",
            Side::Inside => "xdp_inside",
        };
        let prog: &mut Xdp = bpf
            .program_mut(name)
            .ok_or_else(|| XdpError::Load(format!("no program {name}")))?
            .try_into()
            .map_err(|e| XdpError::Load(format!("{name}: {e}")))?;
        prog.load()
            .map_err(|e| XdpError::Load(format!("verifier refused {name}: {e}")))?;
        let mode = match prog.attach(interface, XdpMode::Driver) {
            Ok(_) => XdpMode::Driver,
            Err(native) => match prog.attach(interface, XdpMode::Skb) {
                Ok(_) => XdpMode::Skb,
                Err(generic) => {
                    return Err(XdpError::Load(format!(
                        "attach to {interface}: native: {native}; generic: {generic} \
                         (needs CAP_BPF/CAP_SYS_ADMIN and CAP_NET_ADMIN)"
                    )));
                }
            },
        };
        let xsks = XskMap::try_from(
            bpf.take_map("xsks_map")
                .ok_or_else(|| XdpError::Load("no xsks_map".into()))?,
        )
        .map_err(|e| XdpError::Load(format!("xsks_map: {e}")))?;
        Ok(Steering {
            bpf,
            xsks,
            interface: interface.into(),
            mode,
        })
    }

    /// Steers queue `queue` to the AF_XDP socket `fd`.
    pub fn register(&mut self, queue: u32, fd: &impl AsRawFd) -> Result<(), XdpError> {
        self.xsks
            .set(queue, fd.as_raw_fd(), 0)
            .map_err(|e| XdpError::Load(format!("xsks_map[{queue}]: {e}")))
    }

    /// The program's counters summed over CPUs: (redirected, passed, malformed).
    pub fn counters(&self) -> (u64, u64, u64) {
        let Some(map) = self.bpf.map("stats") else {
            return (0, 0, 0);
        };
        let Ok(arr) = aya::maps::PerCpuArray::<_, u64>::try_from(map) else {
            return (0, 0, 0);
        };
        let sum = |i: u32| arr.get(&i, 0).map_or(0, |v| v.iter().sum::<u64>());
        (sum(0), sum(1), sum(2))
    }
}
