//! The socket fallback of the outside interface (DESIGN §2 "Fallback I/O", issue 3
//! item 5): UDP sockets for IKE (500), NAT-T (4500) and L2TP (1701), and a raw socket
//! for ESP not in UDP (IP protocol 50), feeding the same batch pipeline as AF_XDP.
//!
//! Receiving uses `recvmmsg` with `IP_PKTINFO` (ip(7)) to learn the local address each
//! datagram was sent to, and synthesizes the outer IPv4 + UDP headers in front of the
//! payload ([`super::headers::synthesize_udp`]), so the pipeline gets the outer IPv4
//! packet the XDP backend would give it. The UDP destination port written is the
//! role's well-known port (500, 4500, 1701) even when a socket is bound elsewhere
//! (tests on ephemeral ports), because the pipeline classifies by it. A raw ESP socket
//! delivers the IPv4 header itself (raw(7)).
//!
//! Sending takes the pipeline's outer IPv4 packets and hands the UDP payload to the
//! socket of its source port, or the IPv4 payload to the raw socket, with `sendmmsg`.
//! The kernel writes the outer headers again; the source address is the one the socket
//! is bound to (with 0.0.0.0, the kernel picks it by route).

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use rustix::net::{AddressFamily, SocketFlags, SocketType, ipproto};

use crate::dataplane::chain::{Pkt, Verdict};
use crate::esp::encap::IPV4_HEADER_LEN;

use super::frame::HEADROOM;
use super::headers::{Outbound, parse_outbound, synthesize_udp};
use super::stats::{IoDrop, IoStats, SendStats};
use super::sys::{
    Control, NO_META, open_udp, recv_chunk, renew_pktinfo_headers, send_chunk, set_buffers,
};

/// Datagrams per `recvmmsg` / `sendmmsg` call.
pub const MAX_BATCH: usize = 64;
/// Socket buffer size asked for by default (the kernel caps it at `rmem_max` /
/// `wmem_max` unless the process may force it).
pub const DEFAULT_SOCKET_BUFFER: usize = 4 << 20;

/// What a UDP socket of the outside interface carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// IKE on UDP 500.
    Ike,
    /// NAT traversal on UDP 4500: ESP in UDP, IKE after the non-ESP marker, keepalives.
    NatT,
    /// L2TP on UDP 1701 without IPsec (trusted networks only).
    L2tp,
}

impl Role {
    /// The well-known port of the role, written as the destination port of the
    /// synthesized header and matched against the source port of outbound packets.
    pub fn port(self) -> u16 {
        match self {
            Role::Ike => 500,
            Role::NatT => 4500,
            Role::L2tp => 1701,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Role::Ike => "IKE (UDP 500)",
            Role::NatT => "NAT-T (UDP 4500)",
            Role::L2tp => "L2TP (UDP 1701)",
        };
        f.write_str(s)
    }
}

/// Which sockets to open and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutsideConfig {
    /// Local address to bind (0.0.0.0 for all; then `IP_PKTINFO` tells the
    /// destination of each datagram and the kernel picks the source of replies).
    pub local: Ipv4Addr,
    /// Port of the IKE socket (`Some(500)` in production, `Some(0)` for an ephemeral
    /// port, `None` for no socket).
    pub ike: Option<u16>,
    /// Port of the NAT-T socket.
    pub natt: Option<u16>,
    /// Port of the plain L2TP socket.
    pub l2tp: Option<u16>,
    /// `SO_RCVBUF` to ask for.
    pub rcvbuf: usize,
    /// `SO_SNDBUF` to ask for.
    pub sndbuf: usize,
    /// `SO_REUSEPORT`, so each worker can bind its own set and the kernel spreads
    /// flows over them by 4-tuple.
    pub reuse_port: bool,
}

impl OutsideConfig {
    /// The well-known ports 500, 4500 and 1701 on `local`.
    pub fn standard(local: Ipv4Addr) -> OutsideConfig {
        OutsideConfig {
            local,
            ike: Some(Role::Ike.port()),
            natt: Some(Role::NatT.port()),
            l2tp: Some(Role::L2tp.port()),
            rcvbuf: DEFAULT_SOCKET_BUFFER,
            sndbuf: DEFAULT_SOCKET_BUFFER,
            reuse_port: false,
        }
    }

    /// All three roles on ephemeral ports of `local` (tests, no privilege needed).
    pub fn ephemeral(local: Ipv4Addr) -> OutsideConfig {
        OutsideConfig {
            ike: Some(0),
            natt: Some(0),
            l2tp: Some(0),
            ..OutsideConfig::standard(local)
        }
    }
}

/// Why a socket could not be opened or set up.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// A UDP socket failed at `step` (socket, an option, bind).
    #[error("{role} socket on {addr}: {step} failed: {source}")]
    Udp {
        /// Which socket.
        role: Role,
        /// The address it was to be bound to.
        addr: SocketAddrV4,
        /// What failed.
        step: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The raw ESP socket needs CAP_NET_RAW, which this process lacks.
    #[error(
        "raw ESP socket (IP protocol 50) not permitted: it needs CAP_NET_RAW ({source}); \
         ESP not in UDP will not be received, NAT-T (UDP 4500) still works"
    )]
    RawNotPermitted {
        /// EPERM or EACCES.
        source: io::Error,
    },
    /// The raw ESP socket failed at `step`.
    #[error("raw ESP socket (IP protocol 50) on {addr}: {step} failed: {source}")]
    Raw {
        /// The address it was to be bound to.
        addr: Ipv4Addr,
        /// What failed.
        step: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

struct UdpPort {
    role: Role,
    fd: OwnedFd,
    bound: SocketAddrV4,
}

struct RawEsp {
    fd: OwnedFd,
    bound: Ipv4Addr,
}

/// The outside sockets of one worker: opened on any thread (the control thread at
/// start-up), then moved to the worker that owns them (`Send`). Each worker has its
/// own set (with `reuse_port`), or one worker owns the only set.
pub struct OutsideSockets {
    udp: Vec<UdpPort>,
    raw: Option<RawEsp>,
    local: Ipv4Addr,
    rcvbuf: usize,
    sndbuf: usize,
    next: usize,
    stats: IoStats,
}

impl std::fmt::Debug for OutsideSockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("OutsideSockets");
        for u in &self.udp {
            d.field(&u.role.to_string(), &u.bound);
        }
        d.field("raw_esp", &self.raw.as_ref().map(|r| r.bound))
            .field("stats", &self.stats)
            .finish()
    }
}

impl OutsideSockets {
    /// Opens the UDP sockets of `cfg` (non-blocking, `SO_REUSEADDR`, `IP_PKTINFO`,
    /// large buffers). The raw ESP socket is opened separately with
    /// [`OutsideSockets::open_raw_esp`], so its failure leaves the UDP sockets usable.
    pub fn open(cfg: &OutsideConfig) -> Result<OutsideSockets, SocketError> {
        let mut udp = Vec::new();
        for (role, port) in [
            (Role::Ike, cfg.ike),
            (Role::NatT, cfg.natt),
            (Role::L2tp, cfg.l2tp),
        ] {
            if let Some(port) = port {
                let (fd, bound) = open_udp(role, SocketAddrV4::new(cfg.local, port), cfg)?;
                udp.push(UdpPort { role, fd, bound });
            }
        }
        Ok(OutsideSockets {
            udp,
            raw: None,
            local: cfg.local,
            rcvbuf: cfg.rcvbuf,
            sndbuf: cfg.sndbuf,
            next: 0,
            stats: IoStats::default(),
        })
    }

    /// Opens the raw socket for IP protocol 50, bound to the local address. Needs
    /// CAP_NET_RAW: without it this returns [`SocketError::RawNotPermitted`] and the
    /// sockets go on without raw ESP (outbound ESP is then counted as
    /// [`IoDrop::NoRawSocket`]).
    ///
    /// Every raw socket receives a copy of every ESP packet: open it in one worker only.
    pub fn open_raw_esp(&mut self) -> Result<(), SocketError> {
        let addr = self.local;
        let err = |step, e: rustix::io::Errno| SocketError::Raw {
            addr,
            step,
            source: e.into(),
        };
        let fd = rustix::net::socket_with(
            AddressFamily::INET,
            SocketType::RAW,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            Some(ipproto::ESP),
        )
        .map_err(|e| {
            if e == rustix::io::Errno::PERM || e == rustix::io::Errno::ACCESS {
                SocketError::RawNotPermitted { source: e.into() }
            } else {
                err("socket", e)
            }
        })?;
        set_buffers(&fd, self.rcvbuf, self.sndbuf).map_err(|(s, e)| err(s, e))?;
        rustix::net::bind(&fd, &SocketAddrV4::new(addr, 0)).map_err(|e| err("bind", e))?;
        self.raw = Some(RawEsp { fd, bound: addr });
        Ok(())
    }

    /// The address a role's socket is bound to (its real port when it was 0).
    pub fn local_addr(&self, role: Role) -> Option<SocketAddrV4> {
        self.udp.iter().find(|u| u.role == role).map(|u| u.bound)
    }

    /// Whether the raw ESP socket is open.
    pub fn has_raw_esp(&self) -> bool {
        self.raw.is_some()
    }

    /// Counters since the sockets were opened.
    pub fn stats(&self) -> &IoStats {
        &self.stats
    }

    /// Every socket, to wait on together with other descriptors (a TUN queue).
    pub fn fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.udp
            .iter()
            .map(|u| u.fd.as_fd())
            .chain(self.raw.iter().map(|r| r.fd.as_fd()))
    }

    /// The raw descriptors, for an epoll set of the caller's.
    pub fn raw_fds(&self) -> Vec<RawFd> {
        self.fds().map(|f| f.as_raw_fd()).collect()
    }

    /// Waits until a socket is readable or `timeout` passes; returns whether one is.
    pub fn wait(&self, timeout: Duration) -> io::Result<bool> {
        let fds: Vec<BorrowedFd<'_>> = self.fds().collect();
        super::wait_readable(&fds, timeout)
    }

    /// Receives up to `pkts.len()` packets: one `recvmmsg` per socket, starting with a
    /// different socket each call so none starves. `pkts[..n]` then hold outer IPv4
    /// packets with verdict `Pending`; their frames must be longer than [`HEADROOM`]
    /// (a [`super::frame::FRAME_SIZE`] frame takes a 1792-octet datagram).
    ///
    /// Datagrams that did not fit are dropped and counted ([`IoDrop::Truncated`]).
    /// Fails only when nothing was received and a socket reported an error other
    /// than EAGAIN; `Ok(0)` means nothing was waiting.
    pub fn recv_batch<B: AsMut<[u8]>>(&mut self, pkts: &mut [Pkt<B>]) -> io::Result<usize> {
        if let Some(len) = pkts
            .iter_mut()
            .map(|p| p.buf.as_mut().len())
            .find(|&l| l <= HEADROOM)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "frame of {len} octets: frames must be longer than the {HEADROOM}-octet headroom"
                ),
            ));
        }
        let count = self.udp.len() + usize::from(self.raw.is_some());
        if count == 0 {
            return Ok(0);
        }
        let first = self.next % count;
        self.next = self.next.wrapping_add(1);
        let mut n = 0;
        let mut error = None;
        for k in 0..count {
            if n == pkts.len() {
                break;
            }
            let idx = (first + k) % count;
            let got = if idx < self.udp.len() {
                self.recv_udp(idx, &mut pkts[n..])
            } else {
                self.recv_raw(&mut pkts[n..])
            };
            match got {
                Ok(g) => n += g,
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    self.stats.rx_errors += 1;
                    error = Some(e);
                }
            }
        }
        match error {
            Some(e) if n == 0 => Err(e.into()),
            _ => Ok(n),
        }
    }

    /// One `recvmmsg` on UDP socket `idx` into `pkts`; returns how many packets are
    /// ready at the front of `pkts`.
    fn recv_udp<B: AsMut<[u8]>>(&mut self, idx: usize, pkts: &mut [Pkt<B>]) -> nix::Result<usize> {
        let mut meta = [NO_META; MAX_BATCH];
        let port = &self.udp[idx];
        let got = recv_chunk(port.fd.as_fd(), Control::Pktinfo, pkts, HEADROOM, &mut meta)?;
        let (role, bound) = (port.role, port.bound);
        let mut heal = false;
        let mut ready = 0;
        for (i, m) in meta[..got].iter().enumerate() {
            if m.truncated {
                self.stats.drop(IoDrop::Truncated);
                continue;
            }
            // IP_PKTINFO is always there for an IPv4 UDP socket that asked for it; if
            // not, the preallocated control buffers are suspect: rebuild them.
            let dst = m.dst.unwrap_or_else(|| {
                heal = true;
                *bound.ip()
            });
            let p = &mut pkts[i];
            let payload = HEADROOM..HEADROOM + m.len;
            match synthesize_udp(
                p.buf.as_mut(),
                payload,
                m.src,
                SocketAddrV4::new(dst, role.port()),
            ) {
                Ok(r) => {
                    p.reset(r.start, r.end);
                    p.outer_src = *m.src.ip();
                    p.outer_sport = m.src.port();
                    self.stats.rx_packets += 1;
                    self.stats.rx_bytes += m.len as u64;
                    pkts.swap(ready, i);
                    ready += 1;
                }
                Err(r) => self.stats.drop(r),
            }
        }
        if heal {
            renew_pktinfo_headers();
        }
        Ok(ready)
    }

    /// One `recvmmsg` on the raw ESP socket: the IPv4 header arrives with the packet,
    /// placed so that a 20-octet header ends at [`HEADROOM`].
    fn recv_raw<B: AsMut<[u8]>>(&mut self, pkts: &mut [Pkt<B>]) -> nix::Result<usize> {
        let Some(raw) = &self.raw else {
            return Ok(0);
        };
        let at = HEADROOM - IPV4_HEADER_LEN;
        let mut meta = [NO_META; MAX_BATCH];
        let got = recv_chunk(raw.fd.as_fd(), Control::None, pkts, at, &mut meta)?;
        let mut ready = 0;
        for (i, m) in meta[..got].iter().enumerate() {
            if m.truncated {
                self.stats.drop(IoDrop::Truncated);
                continue;
            }
            let p = &mut pkts[i];
            p.reset(at, at + m.len);
            p.outer_src = *m.src.ip();
            p.outer_sport = 0;
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += m.len as u64;
            pkts.swap(ready, i);
            ready += 1;
        }
        Ok(ready)
    }

    /// Sends every packet of `pkts` whose verdict is `Forward` (an outer IPv4 packet
    /// at `start..end`): UDP from the socket of its source port to its destination,
    /// ESP through the raw socket. Consecutive packets for the same socket go out in
    /// one `sendmmsg`. Everything that cannot be sent is counted under an [`IoDrop`]
    /// in the returned stats (also added to [`OutsideSockets::stats`]); packets with
    /// another verdict are not looked at.
    pub fn send_batch<B: AsRef<[u8]>>(&mut self, pkts: &[Pkt<B>]) -> SendStats {
        let mut st = IoStats::default();
        let mut run = Run::default();
        for (i, p) in pkts.iter().enumerate() {
            if p.verdict != Verdict::Forward {
                continue;
            }
            let (sock, payload, dst) = match self.route(p.buf.as_ref(), p.start..p.end) {
                Ok(t) => t,
                Err(r) => {
                    st.drop(r);
                    continue;
                }
            };
            if run.len == MAX_BATCH || (run.len > 0 && run.sock != sock) {
                self.flush(&mut run, pkts, &mut st);
            }
            run.sock = sock;
            run.items[run.len] = (i, payload, dst);
            run.len += 1;
        }
        self.flush(&mut run, pkts, &mut st);
        self.stats.merge(&st);
        st
    }

    /// Which socket sends the packet at `buf[r]`, what and where.
    fn route(
        &self,
        buf: &[u8],
        r: Range<usize>,
    ) -> Result<(Sock, Range<usize>, SocketAddrV4), IoDrop> {
        match parse_outbound(buf, r)? {
            Outbound::Udp {
                src,
                sport,
                dst,
                payload,
            } => {
                let idx = self
                    .udp
                    .iter()
                    .position(|u| u.role.port() == sport || u.bound.port() == sport)
                    .ok_or(IoDrop::NoSocket)?;
                let bound = *self.udp[idx].bound.ip();
                if !bound.is_unspecified() && src != bound {
                    return Err(IoDrop::SourceMismatch);
                }
                Ok((Sock::Udp(idx), payload, dst))
            }
            Outbound::Esp { src, dst, payload } => {
                let raw = self.raw.as_ref().ok_or(IoDrop::NoRawSocket)?;
                if !raw.bound.is_unspecified() && src != raw.bound {
                    return Err(IoDrop::SourceMismatch);
                }
                Ok((Sock::Raw, payload, SocketAddrV4::new(dst, 0)))
            }
        }
    }

    /// Sends the run with as few `sendmmsg` calls as errors allow; empties it.
    fn flush<B: AsRef<[u8]>>(&self, run: &mut Run, pkts: &[Pkt<B>], st: &mut IoStats) {
        let fd = match run.sock {
            Sock::Udp(i) => self.udp.get(i).map(|u| u.fd.as_fd()),
            Sock::Raw => self.raw.as_ref().map(|r| r.fd.as_fd()),
        };
        let items = &run.items[..run.len];
        run.len = 0;
        let Some(fd) = fd else {
            // Unreachable by construction (route found the socket); counted all the same.
            st.drop_n(IoDrop::NoSocket, items.len() as u64);
            return;
        };
        let mut off = 0;
        let mut interrupted = 0;
        while off < items.len() {
            let rest = &items[off..];
            match send_chunk(fd, pkts, rest) {
                Ok(sent) if sent > 0 => {
                    for (_, payload, _) in &rest[..sent.min(rest.len())] {
                        st.tx_packets += 1;
                        st.tx_bytes += payload.len() as u64;
                    }
                    off += sent;
                }
                Ok(_) => {
                    st.drop_n(IoDrop::WouldBlock, rest.len() as u64);
                    return;
                }
                Err(e) if e == rustix::io::Errno::INTR && interrupted < 3 => interrupted += 1,
                Err(e) => match IoDrop::of_errno(e) {
                    // The socket buffer is full: the rest would fail the same way.
                    r @ (IoDrop::WouldBlock | IoDrop::NoBuffers) => {
                        st.drop_n(r, rest.len() as u64);
                        return;
                    }
                    // Specific to the first message (EMSGSIZE, unreachable, …): skip it.
                    r => {
                        st.drop(r);
                        off += 1;
                    }
                },
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sock {
    Udp(usize),
    Raw,
}

/// Consecutive packets for one socket: (index in the batch, payload, destination).
struct Run {
    sock: Sock,
    items: [(usize, Range<usize>, SocketAddrV4); MAX_BATCH],
    len: usize,
}

impl Default for Run {
    fn default() -> Run {
        Run {
            sock: Sock::Raw,
            items: std::array::from_fn(|_| (0, 0..0, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))),
            len: 0,
        }
    }
}
