//! The socket fallback and the TUN inside path ([`super::io`]) behind the worker's
//! [`Outside`] and [`Inside`] traits.

use std::os::fd::BorrowedFd;

use super::chain::Pkt;
use super::io::frame::{FRAME_SIZE, FramePool, HEADROOM};
use super::io::socket::OutsideSockets;
use super::io::tun::TunQueue;
use super::io::{IoDrop, IoStats};
use super::stats::{DropReason, Stats};
use super::worker::{FrameSource, Inside, Outside, SendResult};

/// Where each socket-layer drop is counted in the worker's reasons.
pub fn reason_of(d: IoDrop) -> DropReason {
    match d {
        IoDrop::Truncated | IoDrop::TooLong => DropReason::TooLong,
        IoDrop::Malformed => DropReason::Malformed,
        IoDrop::NotIpv4 => DropReason::NotIpv4,
        IoDrop::Fragment => DropReason::Fragment,
        IoDrop::Protocol => DropReason::NotL2tp,
        IoDrop::WouldBlock | IoDrop::NoBuffers => DropReason::TxFull,
        IoDrop::NoSocket | IoDrop::NoRawSocket | IoDrop::SourceMismatch | IoDrop::SendError => {
            DropReason::TxError
        }
    }
}

fn fold_drops(seen: &mut IoStats, now: &IoStats, stats: &mut Stats) {
    for d in IoDrop::ALL {
        let delta = now.drops(d).saturating_sub(seen.drops(d));
        if delta > 0 {
            stats.drops[reason_of(d) as usize] += delta;
        }
    }
    *seen = now.clone();
}

/// UDP (and raw ESP) sockets as the outside of a worker.
pub struct SocketOutside {
    sockets: OutsideSockets,
    pool: FramePool,
    scratch: Vec<Pkt<Box<[u8]>>>,
    seen: IoStats,
}

impl SocketOutside {
    /// Wraps opened sockets with a pool of `frames` frames.
    pub fn new(sockets: OutsideSockets, frames: usize) -> SocketOutside {
        SocketOutside {
            sockets,
            pool: FramePool::new(frames),
            scratch: Vec::new(),
            seen: IoStats::default(),
        }
    }

    /// The sockets (addresses, statistics).
    pub fn sockets(&self) -> &OutsideSockets {
        &self.sockets
    }
}

impl Outside for SocketOutside {
    type Frame = Box<[u8]>;

    fn recv(&mut self, out: &mut Vec<Pkt<Box<[u8]>>>, max: usize) -> usize {
        while self.scratch.len() < max {
            match self.pool.get() {
                Some(f) => self.scratch.push(Pkt::new(f, HEADROOM, HEADROOM)),
                None => break,
            }
        }
        let n = self.sockets.recv_batch(&mut self.scratch).unwrap_or(0);
        out.extend(self.scratch.drain(..n));
        n
    }

    fn send(&mut self, pkts: &mut Vec<Pkt<Box<[u8]>>>) -> SendResult {
        let st = self.sockets.send_batch(pkts);
        for p in pkts.drain(..) {
            self.pool.put(p.buf);
        }
        SendResult {
            sent: st.tx_packets,
            // Failures are counted per reason by take_drops.
            tx_full: 0,
            no_neighbour: 0,
        }
    }

    fn alloc(&mut self) -> Option<Box<[u8]>> {
        self.pool.get()
    }

    fn recycle(&mut self, f: Box<[u8]>) {
        if f.len() == FRAME_SIZE {
            self.pool.put(f);
        }
    }

    fn headroom(&self) -> usize {
        HEADROOM
    }

    fn fds(&self) -> Vec<BorrowedFd<'_>> {
        self.sockets.fds().collect()
    }

    fn take_drops(&mut self, stats: &mut Stats) {
        let now = self.sockets.stats().clone();
        fold_drops(&mut self.seen, &now, stats);
    }
}

/// One queue of the TUN device as the inside of a worker.
pub struct TunInside {
    q: TunQueue,
    seen: IoStats,
}

impl TunInside {
    /// Wraps an opened queue.
    pub fn new(q: TunQueue) -> TunInside {
        TunInside {
            q,
            seen: IoStats::default(),
        }
    }
}

impl<F: AsRef<[u8]> + AsMut<[u8]>> Inside<F> for TunInside {
    fn recv(
        &mut self,
        frames: &mut dyn FrameSource<F>,
        out: &mut Vec<Pkt<F>>,
        max: usize,
    ) -> usize {
        // Frames are lent at the end of `out` itself (no vector per call); the ones the
        // read did not fill go back.
        let base = out.len();
        while out.len() - base < max {
            match frames.alloc() {
                Some(f) => out.push(Pkt::new(f, HEADROOM, HEADROOM)),
                None => break,
            }
        }
        let n = self.q.read_batch(&mut out[base..]).unwrap_or(0);
        for p in out.drain(base + n..) {
            frames.recycle(p.buf);
        }
        n
    }

    fn send(&mut self, pkts: &[Pkt<F>]) -> usize {
        self.q.write_batch(pkts)
    }

    fn fds(&self) -> Vec<BorrowedFd<'_>> {
        vec![self.q.fd()]
    }

    fn take_drops(&mut self, stats: &mut Stats) {
        let now = self.q.stats().clone();
        fold_drops(&mut self.seen, &now, stats);
    }
}
