//! The interface between a worker and its I/O backends: where outer packets come from
//! and go to ([`Outside`]: AF_XDP or sockets), where inner packets do ([`Inside`]: TUN
//! or AF_XDP on an inside interface), and how the inside borrows the outside's frames.

use std::os::fd::BorrowedFd;

use super::chain::Pkt;
use super::stats::Stats;

/// Where outer packets come from and go to.
pub trait Outside {
    /// The frame type of this backend.
    type Frame: AsRef<[u8]> + AsMut<[u8]>;
    /// Receives up to `max` packets into `out`, each an outer IPv4 packet at
    /// `start..end` of its frame. Returns how many.
    fn recv(&mut self, out: &mut Vec<Pkt<Self::Frame>>, max: usize) -> usize;
    /// Sends every packet with verdict Forward (an outer IPv4 packet), recycling all
    /// frames; returns what happened to them.
    fn send(&mut self, pkts: &mut Vec<Pkt<Self::Frame>>) -> SendResult;
    /// A free frame, for packets from the inside or originated by the worker.
    fn alloc(&mut self) -> Option<Self::Frame>;
    /// Returns a frame.
    fn recycle(&mut self, f: Self::Frame);
    /// Where a packet should start in a fresh frame (room for all encapsulation).
    fn headroom(&self) -> usize;
    /// Descriptors to wait on when idle.
    fn fds(&self) -> Vec<BorrowedFd<'_>>;
    /// Moves drops the backend counted itself (truncated datagrams, send errors) into
    /// the worker's counters.
    fn take_drops(&mut self, _stats: &mut Stats) {}
}

/// What [`Outside::send`] did with a batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendResult {
    /// Handed to the kernel or NIC.
    pub sent: u64,
    /// Refused: transmit ring or socket buffer full.
    pub tx_full: u64,
    /// No MAC address for the next hop.
    pub no_neighbour: u64,
}

/// Free frames of the outside backend, lent to the inside path.
pub trait FrameSource<F> {
    /// A free frame.
    fn alloc(&mut self) -> Option<F>;
    /// Gives a frame back.
    fn recycle(&mut self, f: F);
    /// Where a packet should start in a fresh frame.
    fn headroom(&self) -> usize;
}

impl<O: Outside> FrameSource<O::Frame> for O {
    fn alloc(&mut self) -> Option<O::Frame> {
        Outside::alloc(self)
    }
    fn recycle(&mut self, f: O::Frame) {
        Outside::recycle(self, f)
    }
    fn headroom(&self) -> usize {
        Outside::headroom(self)
    }
}

/// Where inner packets come from and go to (TUN, or AF_XDP on an inside interface).
pub trait Inside<F> {
    /// Reads up to `max` inner IPv4 packets into frames from `frames`, each at
    /// `frames.headroom()` or later; unused frames go back to `frames`.
    fn recv(&mut self, frames: &mut dyn FrameSource<F>, out: &mut Vec<Pkt<F>>, max: usize)
    -> usize;
    /// Delivers inner packets (verdict Forward, inner IPv4 at start..end). Returns how
    /// many were written.
    fn send(&mut self, pkts: &[Pkt<F>]) -> usize;
    /// Descriptors to wait on when idle.
    fn fds(&self) -> Vec<BorrowedFd<'_>>;
    /// Moves drops the backend counted itself into the worker's counters.
    fn take_drops(&mut self, _stats: &mut Stats) {}
}
