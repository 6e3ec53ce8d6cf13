//! The system calls of the socket backend, each through a safe wrapper: socket set-up
//! (rustix, nix for `IP_PKTINFO`), one `recvmmsg` (nix, which reads the `IP_PKTINFO`
//! control message) and one `sendmmsg` (rustix, which returns the count sent). The
//! per-call arrays live on the stack, so a batch allocates nothing.

use std::cell::RefCell;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::Range;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrIn, recvmmsg, setsockopt, sockopt,
};
use rustix::net::{
    AddressFamily, MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny, SocketFlags, SocketType,
    ipproto,
};

use crate::dataplane::chain::Pkt;

use super::headers::MAX_UDP_PAYLOAD;
use super::socket::{MAX_BATCH, OutsideConfig, Role, SocketError};

/// What one received datagram looked like.
#[derive(Clone, Copy)]
pub(super) struct Meta {
    /// Octets received (of the datagram, or of the whole IPv4 packet on a raw socket).
    pub len: usize,
    /// Sender.
    pub src: SocketAddrV4,
    /// Local destination address from `IP_PKTINFO`, when the socket asked for it.
    pub dst: Option<Ipv4Addr>,
    /// The datagram did not fit (MSG_TRUNC).
    pub truncated: bool,
}

pub(super) const NO_META: Meta = Meta {
    len: 0,
    src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
    dst: None,
    truncated: false,
};

/// Which preallocated `recvmmsg` headers a socket needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Control {
    /// Room for one `IP_PKTINFO` control message per datagram (UDP sockets).
    Pktinfo,
    /// No control messages (the raw socket).
    None,
}

thread_local! {
    // nix's `MultiHeaders` holds raw pointers, so it is not `Send`; keeping it per
    // thread lets `OutsideSockets` move to its worker and still allocate nothing per
    // call once the thread has received its first batch.
    static PKTINFO_HEADERS: RefCell<Option<MultiHeaders<SockaddrIn>>> = const { RefCell::new(None) };
    static PLAIN_HEADERS: RefCell<Option<MultiHeaders<SockaddrIn>>> = const { RefCell::new(None) };
}

fn new_headers(control: Control) -> MultiHeaders<SockaddrIn> {
    let cmsg = match control {
        Control::Pktinfo => Some(nix::cmsg_space!(nix::libc::in_pktinfo)),
        Control::None => None,
    };
    MultiHeaders::preallocate(MAX_BATCH, cmsg)
}

/// Drops this thread's `IP_PKTINFO` headers, to be built afresh on the next call. The
/// kernel writes back each header's control length; should it ever shrink (a datagram
/// without `IP_PKTINFO`), fresh headers restore the full room.
pub(super) fn renew_pktinfo_headers() {
    PKTINFO_HEADERS.with(|c| {
        if let Ok(mut slot) = c.try_borrow_mut() {
            *slot = None;
        }
    });
}

/// One `sendmmsg` of `items` (at most [`MAX_BATCH`]); returns how many the kernel took.
/// Everything lives on the stack: no allocation per call.
pub(super) fn send_chunk<B: AsRef<[u8]>>(
    fd: BorrowedFd<'_>,
    pkts: &[Pkt<B>],
    items: &[(usize, Range<usize>, SocketAddrV4)],
) -> rustix::io::Result<usize> {
    let m = items.len().min(MAX_BATCH);
    let unused = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0);
    let entry = |k: usize| -> (&[u8], SocketAddrV4) {
        items
            .get(k)
            .and_then(|(i, payload, dst)| {
                Some((pkts.get(*i)?.buf.as_ref().get(payload.clone())?, *dst))
            })
            .unwrap_or((&[], unused))
    };
    let iovs: [[IoSlice<'_>; 1]; MAX_BATCH] = std::array::from_fn(|k| [IoSlice::new(entry(k).0)]);
    let addrs: [SocketAddrAny; MAX_BATCH] =
        std::array::from_fn(|k| SocketAddrAny::from(entry(k).1));
    let mut controls: [SendAncillaryBuffer<'_, '_, '_>; MAX_BATCH] =
        std::array::from_fn(|_| SendAncillaryBuffer::default());
    // `map` runs exactly MAX_BATCH times, so `k` stays in bounds.
    let mut k = 0;
    let mut msgs = controls.each_mut().map(|c| {
        let h = MMsgHdr::new_with_addr(&addrs[k], &iovs[k], c);
        k += 1;
        h
    });
    rustix::net::sendmmsg(fd, &mut msgs[..m], SendFlags::DONTWAIT)
}

/// One `recvmmsg` on `fd` into the frames of `pkts` at `offset` (at most
/// [`MAX_BATCH`] of them); fills `meta` and returns how many datagrams arrived.
pub(super) fn recv_chunk<B: AsMut<[u8]>>(
    fd: BorrowedFd<'_>,
    control: Control,
    pkts: &mut [Pkt<B>],
    offset: usize,
    meta: &mut [Meta; MAX_BATCH],
) -> nix::Result<usize> {
    let key = match control {
        Control::Pktinfo => &PKTINFO_HEADERS,
        Control::None => &PLAIN_HEADERS,
    };
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut slot) => {
            let hdrs = slot.get_or_insert_with(|| new_headers(control));
            recv_with(fd, hdrs, pkts, offset, meta)
        }
        // Only if re-entered on this thread: use headers of its own.
        Err(_) => recv_with(fd, &mut new_headers(control), pkts, offset, meta),
    })
}

fn recv_with<B: AsMut<[u8]>>(
    fd: BorrowedFd<'_>,
    hdrs: &mut MultiHeaders<SockaddrIn>,
    pkts: &mut [Pkt<B>],
    offset: usize,
    meta: &mut [Meta; MAX_BATCH],
) -> nix::Result<usize> {
    let k = pkts.len().min(MAX_BATCH);
    let mut frames = pkts.iter_mut();
    let mut iovs: [[IoSliceMut<'_>; 1]; MAX_BATCH] = std::array::from_fn(|_| {
        let room = frames.next().and_then(|p| {
            let b = p.buf.as_mut();
            let end = b.len().min(offset + MAX_UDP_PAYLOAD);
            b.get_mut(offset..end)
        });
        [IoSliceMut::new(room.unwrap_or(&mut []))]
    });
    let res = recvmmsg(
        fd.as_raw_fd(),
        hdrs,
        iovs[..k].iter_mut(),
        MsgFlags::MSG_DONTWAIT,
        None,
    )?;
    let mut n = 0;
    for (m, r) in meta.iter_mut().zip(res) {
        let dst = r.cmsgs().ok().and_then(|mut c| {
            c.find_map(|c| match c {
                ControlMessageOwned::Ipv4PacketInfo(i) => {
                    Some(Ipv4Addr::from(u32::from_be(i.ipi_addr.s_addr)))
                }
                _ => None,
            })
        });
        let src = r
            .address
            .map_or(NO_META.src, |a| SocketAddrV4::new(a.ip(), a.port()));
        *m = Meta {
            len: r.bytes,
            src,
            dst,
            truncated: r.flags.contains(MsgFlags::MSG_TRUNC),
        };
        n += 1;
    }
    Ok(n)
}

/// Opens, sets up and binds one UDP socket.
pub(super) fn open_udp(
    role: Role,
    addr: SocketAddrV4,
    cfg: &OutsideConfig,
) -> Result<(OwnedFd, SocketAddrV4), SocketError> {
    let err = |step, e: io::Error| SocketError::Udp {
        role,
        addr,
        step,
        source: e,
    };
    let fd = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::DGRAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        Some(ipproto::UDP),
    )
    .map_err(|e| err("socket", e.into()))?;
    rustix::net::sockopt::set_socket_reuseaddr(&fd, true)
        .map_err(|e| err("SO_REUSEADDR", e.into()))?;
    if cfg.reuse_port {
        rustix::net::sockopt::set_socket_reuseport(&fd, true)
            .map_err(|e| err("SO_REUSEPORT", e.into()))?;
    }
    setsockopt(&fd, sockopt::Ipv4PacketInfo, &true).map_err(|e| err("IP_PKTINFO", e.into()))?;
    set_buffers(&fd, cfg.rcvbuf, cfg.sndbuf).map_err(|(s, e)| err(s, e.into()))?;
    rustix::net::bind(&fd, &addr).map_err(|e| err("bind", e.into()))?;
    let bound = rustix::net::getsockname(&fd)
        .map_err(|e| err("getsockname", e.into()))?
        .try_into()
        .map_err(|e: rustix::io::Errno| err("getsockname", e.into()))?;
    Ok((fd, bound))
}

/// Asks for large socket buffers: forced past `rmem_max`/`wmem_max` when the process
/// may (CAP_NET_ADMIN), capped by the kernel otherwise.
pub(super) fn set_buffers(
    fd: &OwnedFd,
    rcvbuf: usize,
    sndbuf: usize,
) -> Result<(), (&'static str, rustix::io::Errno)> {
    use rustix::net::sockopt as so;
    if so::set_socket_recv_buffer_size_force(fd, rcvbuf).is_err() {
        so::set_socket_recv_buffer_size(fd, rcvbuf).map_err(|e| ("SO_RCVBUF", e))?;
    }
    if so::set_socket_send_buffer_size_force(fd, sndbuf).is_err() {
        so::set_socket_send_buffer_size(fd, sndbuf).map_err(|e| ("SO_SNDBUF", e))?;
    }
    Ok(())
}
