//! The inside path over a TUN device (issue 3 item 4a; Linux
//! Documentation/networking/tuntap.rst): inner IPv4 packets leave through the kernel's
//! routing, and traffic routed to the address pool comes back in.
//!
//! The device is `IFF_TUN | IFF_NO_PI` (a read or write is exactly one IP packet), with
//! `IFF_MULTI_QUEUE` and one queue per worker when asked for more than one. tun-rs
//! does `TUNSETIFF` and the address, netmask, MTU and up ioctls, so this file needs no
//! `unsafe` and no `ip` command. The device disappears when its last queue is dropped.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use tun_rs::{DeviceBuilder, SyncDevice};

use crate::dataplane::chain::{Pkt, Verdict};

use super::frame::{FRAME_SIZE, HEADROOM, TAILROOM};
use super::stats::{IoDrop, IoStats};

/// The largest MTU whose packets leave [`HEADROOM`] and [`TAILROOM`] free in a
/// [`FRAME_SIZE`] frame, so every packet read can be encapsulated in place.
pub const MAX_TUN_MTU: u16 = (FRAME_SIZE - HEADROOM - TAILROOM) as u16;
/// The smallest MTU IPv4 allows (RFC 791).
pub const MIN_TUN_MTU: u16 = 68;
/// Most queues a TUN device can have (the kernel's MAX_TAP_QUEUES).
pub const MAX_TUN_QUEUES: usize = 256;
/// Longest interface name (IFNAMSIZ less the NUL).
pub const MAX_NAME_LEN: usize = 15;

/// The TUN device to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunConfig {
    /// Interface name, e.g. `sekisho0`.
    pub name: String,
    /// MTU, at most [`MAX_TUN_MTU`] (1728). Inner packets of the clients' PPP links
    /// should fit it (PPP MRU is typically 1400).
    pub mtu: u16,
    /// The gateway's own inner address.
    pub addr: Ipv4Addr,
    /// Prefix length of the connected route (the address pool).
    pub prefix: u8,
    /// Queues to open: one per worker, at most [`MAX_TUN_QUEUES`]. More than one sets
    /// `IFF_MULTI_QUEUE`.
    pub queues: usize,
}

/// Why the TUN device could not be created or set up.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    /// The name is empty, too long or has characters an interface name cannot have.
    #[error(
        "TUN name {0:?} is not a valid interface name (1 to 15 octets, no '/', ':', NUL or space)"
    )]
    InvalidName(String),
    /// The MTU is out of range.
    #[error(
        "TUN MTU {0} is outside {MIN_TUN_MTU}..={MAX_TUN_MTU} (frames of {FRAME_SIZE} octets keep \
         {HEADROOM} in front and {TAILROOM} behind for encapsulation)"
    )]
    InvalidMtu(u16),
    /// The prefix length is over 32.
    #[error("IPv4 prefix length {0} is over 32")]
    InvalidPrefix(u8),
    /// No queue, or more than [`MAX_TUN_QUEUES`], asked for.
    #[error("a TUN device has 1 to {MAX_TUN_QUEUES} queues, not {0}")]
    Queues(usize),
    /// Creating or configuring the device failed.
    #[error(
        "creating TUN device {name} ({addr}/{prefix}, MTU {mtu}) failed: {source} \
         (needs CAP_NET_ADMIN and /dev/net/tun; an existing device of that name in use by another \
         process gives EBUSY)"
    )]
    Create {
        /// Interface name.
        name: String,
        /// Its address.
        addr: Ipv4Addr,
        /// Prefix length.
        prefix: u8,
        /// MTU.
        mtu: u16,
        /// The OS error.
        source: io::Error,
    },
    /// Opening queue `index` (or making it non-blocking) failed.
    #[error("opening queue {index} of TUN device {name} failed: {source}")]
    Queue {
        /// Interface name.
        name: String,
        /// Queue number.
        index: usize,
        /// The OS error.
        source: io::Error,
    },
}

/// One queue of the TUN device, owned by one worker.
pub struct TunQueue {
    dev: SyncDevice,
    name: String,
    index: usize,
    stats: IoStats,
}

impl std::fmt::Debug for TunQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunQueue")
            .field("name", &self.name)
            .field("index", &self.index)
            .field("stats", &self.stats)
            .finish()
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
}

impl TunConfig {
    /// Checks name, MTU, prefix and queue count before anything touches the system.
    pub fn validate(&self) -> Result<(), TunError> {
        if !valid_name(&self.name) {
            return Err(TunError::InvalidName(self.name.clone()));
        }
        if !(MIN_TUN_MTU..=MAX_TUN_MTU).contains(&self.mtu) {
            return Err(TunError::InvalidMtu(self.mtu));
        }
        if self.prefix > 32 {
            return Err(TunError::InvalidPrefix(self.prefix));
        }
        if !(1..=MAX_TUN_QUEUES).contains(&self.queues) {
            return Err(TunError::Queues(self.queues));
        }
        Ok(())
    }

    /// Creates the device in the calling thread's network namespace, configures
    /// address, prefix and MTU, brings it up and returns its queues, all non-blocking.
    /// Needs CAP_NET_ADMIN.
    pub fn open(&self) -> Result<Vec<TunQueue>, TunError> {
        self.validate()?;
        let dev = DeviceBuilder::new()
            .name(self.name.as_str())
            .mtu(self.mtu)
            .ipv4(self.addr, self.prefix, None::<Ipv4Addr>)
            .multi_queue(self.queues > 1)
            .enable(true)
            .build_sync()
            .map_err(|source| TunError::Create {
                name: self.name.clone(),
                addr: self.addr,
                prefix: self.prefix,
                mtu: self.mtu,
                source,
            })?;
        let queue_err = |index, source| TunError::Queue {
            name: self.name.clone(),
            index,
            source,
        };
        let mut devs = Vec::with_capacity(self.queues);
        for index in 1..self.queues {
            devs.push(dev.try_clone().map_err(|e| queue_err(index, e))?);
        }
        devs.insert(0, dev);
        devs.into_iter()
            .enumerate()
            .map(|(index, dev)| {
                dev.set_nonblocking(true).map_err(|e| queue_err(index, e))?;
                Ok(TunQueue {
                    dev,
                    name: self.name.clone(),
                    index,
                    stats: IoStats::default(),
                })
            })
            .collect()
    }
}

impl TunQueue {
    /// Reads up to `pkts.len()` packets the kernel routed into the device. Each IPv4
    /// packet lands at [`HEADROOM`] with verdict `Pending`, ready for encap;
    /// anything else (IPv6 the kernel sends on its own, runts) is dropped and counted.
    /// Frames must be longer than [`HEADROOM`] + [`TAILROOM`]. Fails only when nothing
    /// was read and the device reported an error other than EAGAIN.
    pub fn read_batch<B: AsMut<[u8]>>(&mut self, pkts: &mut [Pkt<B>]) -> io::Result<usize> {
        if let Some(len) = pkts
            .iter_mut()
            .map(|p| p.buf.as_mut().len())
            .find(|&l| l <= HEADROOM + TAILROOM)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "frame of {len} octets: TUN frames must be longer than {} octets",
                    HEADROOM + TAILROOM
                ),
            ));
        }
        let mut n = 0;
        // Each read takes one packet off the device; bound them so a flood of packets
        // we drop cannot keep us here.
        for _ in 0..2 * pkts.len() + 1 {
            let Some(p) = pkts.get_mut(n) else { break };
            let buf = p.buf.as_mut();
            let end = buf.len() - TAILROOM;
            let Some(room) = buf.get_mut(HEADROOM..end) else {
                break;
            };
            match self.dev.recv(room) {
                Ok(len) => {
                    if len >= room.len() {
                        self.stats.drop(IoDrop::TooLong);
                    } else if len < 20 || room[0] >> 4 != 4 {
                        self.stats.drop(IoDrop::NotIpv4);
                    } else {
                        p.reset(HEADROOM, HEADROOM + len);
                        self.stats.rx_packets += 1;
                        self.stats.rx_bytes += len as u64;
                        n += 1;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.stats.rx_errors += 1;
                    if n == 0 {
                        return Err(e);
                    }
                    break;
                }
            }
        }
        Ok(n)
    }

    /// Writes every packet with verdict `Forward` (an inner IPv4 packet at
    /// `start..end`, as decap leaves it) to the kernel. Returns how many were written;
    /// the others are counted under an [`IoDrop`].
    pub fn write_batch<B: AsRef<[u8]>>(&mut self, pkts: &[Pkt<B>]) -> usize {
        let mut written = 0;
        for p in pkts.iter().filter(|p| p.verdict == Verdict::Forward) {
            let Some(ip) = p.buf.as_ref().get(p.start..p.end) else {
                self.stats.drop(IoDrop::Malformed);
                continue;
            };
            if ip.len() < 20 || ip[0] >> 4 != 4 {
                self.stats.drop(IoDrop::NotIpv4);
                continue;
            }
            match self.dev.send(ip) {
                Ok(_) => {
                    self.stats.tx_packets += 1;
                    self.stats.tx_bytes += ip.len() as u64;
                    written += 1;
                }
                Err(e) => self.stats.drop(match e.kind() {
                    io::ErrorKind::WouldBlock => IoDrop::WouldBlock,
                    _ if e.raw_os_error() == Some(rustix::io::Errno::NOBUFS.raw_os_error()) => {
                        IoDrop::NoBuffers
                    }
                    _ => IoDrop::SendError,
                }),
            }
        }
        written
    }

    /// The queue's descriptor, to wait on together with the sockets.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.dev.as_fd()
    }

    /// Waits until the queue is readable or `timeout` passes.
    pub fn wait(&self, timeout: Duration) -> io::Result<bool> {
        super::wait_readable(&[self.fd()], timeout)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The queue number (0 for the first).
    pub fn index(&self) -> usize {
        self.index
    }

    /// Counters of this queue.
    pub fn stats(&self) -> &IoStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> TunConfig {
        TunConfig {
            name: "sk-test0".into(),
            mtu: 1400,
            addr: Ipv4Addr::new(198, 51, 100, 1),
            prefix: 24,
            queues: 1,
        }
    }

    #[test]
    fn config_is_checked_before_touching_the_system() {
        assert!(cfg().validate().is_ok());
        for name in ["", "a-name-longer-than-15", "a/b", "a b", "a:b", ".."] {
            let c = TunConfig {
                name: name.into(),
                ..cfg()
            };
            assert!(
                matches!(c.open(), Err(TunError::InvalidName(_))),
                "{name:?}"
            );
        }
        for mtu in [0, 67, MAX_TUN_MTU + 1, u16::MAX] {
            let c = TunConfig { mtu, ..cfg() };
            let e = c.open().unwrap_err();
            assert!(matches!(e, TunError::InvalidMtu(m) if m == mtu));
            assert!(e.to_string().contains("1728"), "{e}");
        }
        let c = TunConfig {
            prefix: 33,
            ..cfg()
        };
        assert!(matches!(c.validate(), Err(TunError::InvalidPrefix(33))));
        for queues in [0, MAX_TUN_QUEUES + 1, usize::MAX] {
            let c = TunConfig { queues, ..cfg() };
            assert!(matches!(c.open(), Err(TunError::Queues(q)) if q == queues));
        }
    }

    #[test]
    fn largest_mtu_leaves_room_for_encap() {
        use crate::crypto::Transform;
        use crate::dataplane::chain::L2TP_PPP_UDP_HEADROOM;
        use crate::esp::encap::{headroom, tailroom};
        use crate::esp::sa::Encap;
        let udp = Encap::Udp {
            local_port: 4500,
            remote_port: 4500,
        };
        for t in Transform::ALL {
            assert!(L2TP_PPP_UDP_HEADROOM + headroom(t, udp) <= HEADROOM, "{t}");
            assert!(tailroom(t) <= TAILROOM, "{t}");
        }
        assert_eq!(usize::from(MAX_TUN_MTU) + HEADROOM + TAILROOM, FRAME_SIZE);
    }
}
