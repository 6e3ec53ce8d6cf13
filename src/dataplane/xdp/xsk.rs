//! AF_XDP sockets: UMEM, the four rings and batched rx/tx (the kernel's
//! Documentation/networking/af_xdp.rst). The only module of sekisho with `unsafe`:
//! every block says why it is sound.
//!
//! One [`Xsk`] owns one socket bound to one (interface, queue), its own UMEM of
//! `frames × frame_size` octets and a free list of frame addresses. Frames move
//! free → fill ring → (kernel) → rx ring → [`XdpFrame`] in a batch → tx ring →
//! (kernel) → completion ring → free. A frame is owned by exactly one of those places
//! at a time, which is what makes handing out `&mut [u8]` over UMEM sound.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// Frame sizes the kernel accepts for aligned UMEM (measured: 1024/8192 give EINVAL).
pub const FRAME_SIZES: [u32; 2] = [2048, 4096];

/// The kernel leaves this much in front of received data in each frame.
pub const XDP_PACKET_HEADROOM: usize = 256;

/// Socket configuration.
#[derive(Clone, Debug)]
pub struct XskConfig {
    /// Interface index.
    pub ifindex: u32,
    /// Queue to bind.
    pub queue: u32,
    /// Frames in the UMEM.
    pub frames: u32,
    /// 2048 or 4096.
    pub frame_size: u32,
    /// Entries of each ring (power of two).
    pub ring_size: u32,
    /// Ask for zero-copy (fails where the driver cannot, e.g. veth).
    pub zero_copy: bool,
}

/// A UMEM frame handed to the data path. `addr` is the frame's UMEM offset; the
/// packet lies at `data[start..end]` as set by the pipeline.
pub struct XdpFrame {
    addr: u64,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: an XdpFrame is the only handle to its frame while it exists (see module
// docs), so moving it to another thread moves exclusive access with it.
unsafe impl Send for XdpFrame {}

impl XdpFrame {
    /// The frame's UMEM address.
    pub fn addr(&self) -> u64 {
        self.addr
    }
}

impl AsRef<[u8]> for XdpFrame {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: ptr..ptr+len is one frame inside the live UMEM mapping (the Xsk that
        // made this frame keeps the mapping until it is dropped, and frames are only
        // used inside the worker that owns that Xsk); this handle is the frame's only
        // owner, so no one writes it concurrently.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl AsMut<[u8]> for XdpFrame {
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in as_ref; &mut self makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

/// A memory mapping released on drop.
struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mmap {
    fn anonymous(len: usize) -> io::Result<Mmap> {
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        Mmap::checked(p, len)
    }

    fn ring(fd: RawFd, len: usize, offset: libc::off_t) -> io::Result<Mmap> {
        // SAFETY: maps the kernel's ring for this socket at the documented page offset;
        // len comes from XDP_MMAP_OFFSETS and the ring size we configured.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                offset,
            )
        };
        Mmap::checked(p, len)
    }

    fn checked(p: *mut libc::c_void, len: usize) -> io::Result<Mmap> {
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        NonNull::new(p.cast::<u8>())
            .map(|ptr| Mmap { ptr, len })
            .ok_or_else(|| io::Error::other("mmap returned null"))
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned; nothing uses the mapping after
        // drop (frames and rings are owned by the Xsk being dropped).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// One of the four single-producer single-consumer rings shared with the kernel.
struct Ring {
    map: Mmap,
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<u32>,
    desc: NonNull<u8>,
    mask: u32,
    size: u32,
    cached_prod: u32,
    cached_cons: u32,
}

impl Ring {
    fn new(map: Mmap, off: &libc::xdp_ring_offset, size: u32) -> Ring {
        let base = map.ptr.as_ptr();
        // SAFETY: the offsets come from XDP_MMAP_OFFSETS for this mapping, so each
        // pointer is inside it and suitably aligned (the kernel lays them out so).
        let (producer, consumer, flags, desc) = unsafe {
            (
                NonNull::new_unchecked(base.add(off.producer as usize).cast::<AtomicU32>()),
                NonNull::new_unchecked(base.add(off.consumer as usize).cast::<AtomicU32>()),
                NonNull::new_unchecked(base.add(off.flags as usize).cast::<u32>()),
                NonNull::new_unchecked(base.add(off.desc as usize)),
            )
        };
        Ring {
            map,
            producer,
            consumer,
            flags,
            desc,
            mask: size - 1,
            size,
            cached_prod: 0,
            cached_cons: 0,
        }
    }

    fn prod(&self) -> &AtomicU32 {
        // SAFETY: points into the live ring mapping owned by self.
        unsafe { self.producer.as_ref() }
    }

    fn cons(&self) -> &AtomicU32 {
        // SAFETY: as in prod.
        unsafe { self.consumer.as_ref() }
    }

    fn needs_wakeup(&self) -> bool {
        // SAFETY: the flags word lives in the ring mapping; the kernel updates it, so
        // read it volatile.
        unsafe { self.flags.as_ptr().read_volatile() & libc::XDP_RING_NEED_WAKEUP != 0 }
    }

    /// Producer side: free slots (refreshing the consumer index when short).
    fn free(&mut self, want: u32) -> u32 {
        let free = self.size - self.cached_prod.wrapping_sub(self.cached_cons);
        if free >= want {
            return free;
        }
        self.cached_cons = self.cons().load(Ordering::Acquire);
        self.size - self.cached_prod.wrapping_sub(self.cached_cons)
    }

    /// Consumer side: entries available (refreshing the producer index when empty).
    fn available(&mut self) -> u32 {
        let avail = self.cached_prod.wrapping_sub(self.cached_cons);
        if avail > 0 {
            return avail;
        }
        self.cached_prod = self.prod().load(Ordering::Acquire);
        self.cached_prod.wrapping_sub(self.cached_cons)
    }

    fn addr_slot(&self, idx: u32) -> *mut u64 {
        // SAFETY (of the add): idx & mask < size, and the desc area holds `size` u64s
        // for fill/completion rings (mapped length = desc offset + size × 8).
        unsafe {
            self.desc
                .as_ptr()
                .cast::<u64>()
                .add((idx & self.mask) as usize)
        }
    }

    fn desc_slot(&self, idx: u32) -> *mut libc::xdp_desc {
        // SAFETY (of the add): as addr_slot, for rx/tx rings of xdp_desc entries.
        unsafe {
            self.desc
                .as_ptr()
                .cast::<libc::xdp_desc>()
                .add((idx & self.mask) as usize)
        }
    }

    fn submit(&mut self, n: u32) {
        self.cached_prod = self.cached_prod.wrapping_add(n);
        self.prod().store(self.cached_prod, Ordering::Release);
    }

    fn release(&mut self, n: u32) {
        self.cached_cons = self.cached_cons.wrapping_add(n);
        self.cons().store(self.cached_cons, Ordering::Release);
    }

    fn len_bytes(&self) -> usize {
        self.map.len
    }
}

/// Counters of one socket (the kernel's XDP_STATISTICS are read separately).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XskCounters {
    /// Frames received.
    pub rx: u64,
    /// Frames queued for transmit.
    pub tx: u64,
    /// Transmit attempts refused because the tx ring was full.
    pub tx_ring_full: u64,
    /// Wakeup syscalls made.
    pub wakeups: u64,
    /// Received descriptors with an address or length outside our UMEM (dropped).
    pub rx_invalid: u64,
}

/// An AF_XDP socket with its own UMEM.
pub struct Xsk {
    fd: OwnedFd,
    umem: Mmap,
    frame_size: u32,
    free: Vec<u64>,
    fill: Ring,
    comp: Ring,
    rx: Ring,
    tx: Ring,
    zero_copy: bool,
    /// Counters.
    pub counters: XskCounters,
}

// SAFETY: the socket, its mappings and frames are used by one thread at a time (the
// worker that owns it); moving the whole Xsk to that thread is sound.
unsafe impl Send for Xsk {}

fn setsockopt<T>(fd: RawFd, opt: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: val points to a live T of the size we pass.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            opt,
            (val as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Xsk {
    /// Creates the socket, registers a UMEM, maps the rings, fills the fill ring and
    /// binds to (ifindex, queue) in zero-copy or copy mode with need_wakeup.
    pub fn new(cfg: &XskConfig) -> io::Result<Xsk> {
        if !FRAME_SIZES.contains(&cfg.frame_size) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("frame size {} is not 2048 or 4096", cfg.frame_size),
            ));
        }
        if !cfg.ring_size.is_power_of_two() || cfg.frames < 2 * cfg.ring_size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "ring size must be a power of two and frames ≥ 2 × ring size",
            ));
        }
        // SAFETY: plain socket(2); the result is checked before it is wrapped.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let umem_len = cfg.frames as usize * cfg.frame_size as usize;
        let umem = Mmap::anonymous(umem_len)?;
        let reg = libc::xdp_umem_reg {
            addr: umem.ptr.as_ptr() as u64,
            len: umem_len as u64,
            chunk_size: cfg.frame_size,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setsockopt(raw, libc::XDP_UMEM_REG, &reg)?;
        setsockopt(raw, libc::XDP_UMEM_FILL_RING, &cfg.ring_size)?;
        setsockopt(raw, libc::XDP_UMEM_COMPLETION_RING, &cfg.ring_size)?;
        setsockopt(raw, libc::XDP_RX_RING, &cfg.ring_size)?;
        setsockopt(raw, libc::XDP_TX_RING, &cfg.ring_size)?;

        // SAFETY: zeroed is a valid xdp_mmap_offsets (plain integers).
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut optlen = std::mem::size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: off/optlen are valid for writes of the advertised size.
        let r = unsafe {
            libc::getsockopt(
                raw,
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                (&mut off as *mut libc::xdp_mmap_offsets).cast(),
                &mut optlen,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        let n = cfg.ring_size as usize;
        let addr_ring = |o: &libc::xdp_ring_offset| o.desc as usize + n * 8;
        let desc_ring = |o: &libc::xdp_ring_offset| o.desc as usize + n * 16;
        let fill = Ring::new(
            Mmap::ring(
                raw,
                addr_ring(&off.fr),
                libc::XDP_UMEM_PGOFF_FILL_RING as libc::off_t,
            )?,
            &off.fr,
            cfg.ring_size,
        );
        let comp = Ring::new(
            Mmap::ring(
                raw,
                addr_ring(&off.cr),
                libc::XDP_UMEM_PGOFF_COMPLETION_RING as libc::off_t,
            )?,
            &off.cr,
            cfg.ring_size,
        );
        let rx = Ring::new(
            Mmap::ring(raw, desc_ring(&off.rx), libc::XDP_PGOFF_RX_RING)?,
            &off.rx,
            cfg.ring_size,
        );
        let tx = Ring::new(
            Mmap::ring(raw, desc_ring(&off.tx), libc::XDP_PGOFF_TX_RING)?,
            &off.tx,
            cfg.ring_size,
        );
        let free = (0..cfg.frames)
            .rev()
            .map(|i| u64::from(i) * u64::from(cfg.frame_size))
            .collect();
        let mut xsk = Xsk {
            fd,
            umem,
            frame_size: cfg.frame_size,
            free,
            fill,
            comp,
            rx,
            tx,
            zero_copy: cfg.zero_copy,
            counters: XskCounters::default(),
        };
        xsk.refill();

        let mut sa = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as libc::sa_family_t,
            sxdp_flags: libc::XDP_USE_NEED_WAKEUP
                | if cfg.zero_copy {
                    libc::XDP_ZEROCOPY
                } else {
                    libc::XDP_COPY
                },
            sxdp_ifindex: cfg.ifindex,
            sxdp_queue_id: cfg.queue,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: sa is a valid sockaddr_xdp of the size passed.
        let r = unsafe {
            libc::bind(
                raw,
                (&mut sa as *mut libc::sockaddr_xdp).cast(),
                std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(xsk)
    }

    /// Whether the socket runs zero-copy.
    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// Octets per frame.
    pub fn frame_size(&self) -> u32 {
        self.frame_size
    }

    /// Frames not in any ring or batch.
    pub fn free_frames(&self) -> usize {
        self.free.len()
    }

    /// Bytes mapped for the four rings (for diagnostics).
    pub fn ring_bytes(&self) -> usize {
        self.fill.len_bytes() + self.comp.len_bytes() + self.rx.len_bytes() + self.tx.len_bytes()
    }

    fn frame(&self, base: u64) -> XdpFrame {
        // SAFETY (of the add): base is a frame offset < UMEM length (all frame
        // addresses come from our own free list or from descriptors the kernel returns
        // for our UMEM, masked to the frame start), so ptr..ptr+frame_size is inside
        // the mapping.
        let ptr = unsafe { NonNull::new_unchecked(self.umem.ptr.as_ptr().add(base as usize)) };
        XdpFrame {
            addr: base,
            ptr,
            len: self.frame_size as usize,
        }
    }

    fn valid_frame(&self, addr: u64) -> Option<u64> {
        let base = addr - addr % u64::from(self.frame_size);
        (base < self.umem.len as u64).then_some(base)
    }

    /// Moves free frames into the fill ring so the kernel can receive into them.
    pub fn refill(&mut self) {
        let want = self.free.len().min(self.fill.size as usize) as u32;
        let n = self.fill.free(want).min(want);
        if n == 0 {
            return;
        }
        let start = self.fill.cached_prod;
        for i in 0..n {
            let Some(addr) = self.free.pop() else { break };
            // SAFETY: the slot is inside the fill ring and owned by us (producer side)
            // until submit publishes it.
            unsafe { self.fill.addr_slot(start.wrapping_add(i)).write(addr) };
        }
        self.fill.submit(n);
    }

    /// Takes received frames (up to `max`) into `out` as (frame, start, end).
    pub fn rx_batch(&mut self, out: &mut Vec<(XdpFrame, usize, usize)>, max: usize) -> usize {
        let n = self.rx.available().min(max as u32);
        let start = self.rx.cached_cons;
        let mut got = 0;
        for i in 0..n {
            // SAFETY: slots between cached_cons and cached_prod were published by the
            // kernel (Acquire load of producer) and are ours until release.
            let d = unsafe { self.rx.desc_slot(start.wrapping_add(i)).read() };
            let Some(base) = self.valid_frame(d.addr) else {
                continue;
            };
            let off = (d.addr - base) as usize;
            let end = off + d.len as usize;
            if end > self.frame_size as usize {
                self.free.push(base);
                continue;
            }
            out.push((self.frame(base), off, end));
            got += 1;
        }
        self.rx.release(n);
        self.counters.rx += got as u64;
        if n > 0 {
            self.refill();
        } else if self.fill.needs_wakeup() {
            self.wakeup_rx();
        }
        got
    }

    /// Queues frames for transmit; frames that do not fit in the tx ring are returned
    /// to the free list and counted. `frames` yields (frame, start, end).
    pub fn tx_batch(
        &mut self,
        frames: impl IntoIterator<Item = (XdpFrame, usize, usize)>,
    ) -> usize {
        self.reap_completions();
        let mut sent = 0u32;
        let start = self.tx.cached_prod;
        for (f, s, e) in frames {
            if self.tx.free(sent + 1) < sent + 1 || e <= s || e > f.len {
                self.counters.tx_ring_full += u64::from(e > s && e <= f.len);
                self.free.push(f.addr);
                continue;
            }
            let d = libc::xdp_desc {
                addr: f.addr + s as u64,
                len: (e - s) as u32,
                options: 0,
            };
            // SAFETY: the slot is free (checked above) and ours until submit.
            unsafe { self.tx.desc_slot(start.wrapping_add(sent)).write(d) };
            sent += 1;
        }
        if sent > 0 {
            self.tx.submit(sent);
            self.counters.tx += u64::from(sent);
        }
        self.kick_tx();
        sent as usize
    }

    /// Gives a frame back (dropped packet).
    pub fn recycle(&mut self, f: XdpFrame) {
        self.free.push(f.addr);
    }

    /// A free frame for a packet the worker originates (control traffic, hairpin).
    pub fn alloc(&mut self) -> Option<XdpFrame> {
        if self.free.is_empty() {
            self.reap_completions();
        }
        self.free.pop().map(|a| self.frame(a))
    }

    /// Moves transmitted frames from the completion ring back to the free list.
    pub fn reap_completions(&mut self) {
        let n = self.comp.available();
        let start = self.comp.cached_cons;
        for i in 0..n {
            // SAFETY: published by the kernel, ours until release.
            let a = unsafe { self.comp.addr_slot(start.wrapping_add(i)).read() };
            if let Some(base) = self.valid_frame(a) {
                self.free.push(base);
            }
        }
        self.comp.release(n);
    }

    fn wakeup_rx(&mut self) {
        self.counters.wakeups += 1;
        // SAFETY: recvfrom with a null buffer is the documented AF_XDP rx kick.
        unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            );
        }
    }

    /// Makes the kernel drain the tx ring. In copy mode one `sendto` sends at most a
    /// small budget of descriptors (32 on these kernels), so keep kicking while the
    /// kernel makes progress and entries remain.
    fn kick_tx(&mut self) {
        for _ in 0..16 {
            let pending = self
                .tx
                .cached_prod
                .wrapping_sub(self.tx.cons().load(Ordering::Acquire));
            if pending == 0 || (self.zero_copy && !self.tx.needs_wakeup()) {
                return;
            }
            self.wakeup_tx();
            let after = self
                .tx
                .cached_prod
                .wrapping_sub(self.tx.cons().load(Ordering::Acquire));
            if after >= pending {
                return; // no progress (EAGAIN): try again next batch
            }
        }
    }

    fn wakeup_tx(&mut self) {
        self.counters.wakeups += 1;
        // SAFETY: sendto with a null buffer is the documented AF_XDP tx kick.
        unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            );
        }
    }

    /// Waits up to `timeout_ms` for received frames (poll on the socket).
    pub fn wait_rx(&mut self, timeout_ms: i32) {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe {
            libc::poll(&mut p, 1, timeout_ms);
        }
    }

    /// The kernel's drop counters for this socket (XDP_STATISTICS).
    pub fn kernel_stats(&self) -> io::Result<libc::xdp_statistics> {
        // SAFETY: zeroed is valid for plain integers.
        let mut s: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::xdp_statistics>() as libc::socklen_t;
        // SAFETY: s/len valid for writes of that size.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_STATISTICS,
                (&mut s as *mut libc::xdp_statistics).cast(),
                &mut len,
            )
        };
        if r == 0 {
            Ok(s)
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl AsRawFd for Xsk {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Xsk {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
