//! Owned frames for the socket and TUN backends: the same shape as a UMEM frame, so
//! the pipeline sees the same `Pkt` whichever backend fills it.
//!
//! A frame is [`FRAME_SIZE`] octets. A received packet is placed so that what the
//! kernel hands us starts at [`HEADROOM`]: the socket backend writes the outer IPv4
//! and UDP headers it synthesizes in front of it, and encap writes PPP, L2TP, UDP, ESP
//! and the outer headers into the same room. [`TAILROOM`] is kept free behind an inner
//! packet for ESP padding, trailer and ICV.

use crate::dataplane::chain::Pkt;

/// Octets in one frame.
pub const FRAME_SIZE: usize = 2048;
/// Octets in front of what the kernel delivers: room to synthesize outer IPv4 + UDP
/// and, on the inside path, for PPP / L2TP / UDP / ESP / UDP / IPv4 (encap needs 70 at
/// most).
pub const HEADROOM: usize = 256;
/// Octets kept free behind an inner packet for ESP padding, pad length, next header
/// and ICV (at most 15 + 2 + 16).
pub const TAILROOM: usize = 64;

/// A preallocated free list of frames. Taking and returning frames never allocates:
/// the list is created with room for every frame it owns, and frames of another size
/// are refused instead of stored.
#[derive(Debug)]
pub struct FramePool {
    free: Vec<Box<[u8]>>,
    capacity: usize,
}

impl FramePool {
    /// A pool holding `capacity` zeroed frames of [`FRAME_SIZE`] octets.
    pub fn new(capacity: usize) -> FramePool {
        let mut free = Vec::with_capacity(capacity);
        free.extend((0..capacity).map(|_| vec![0u8; FRAME_SIZE].into_boxed_slice()));
        FramePool { free, capacity }
    }

    /// Takes a frame, or `None` when all frames are out.
    pub fn get(&mut self) -> Option<Box<[u8]>> {
        self.free.pop()
    }

    /// Returns a frame. A frame that is not [`FRAME_SIZE`] octets, or one more than the
    /// pool was built with, is dropped and `false` returned (it did not come from
    /// here).
    pub fn put(&mut self, frame: Box<[u8]>) -> bool {
        if frame.len() != FRAME_SIZE || self.free.len() >= self.capacity {
            return false;
        }
        self.free.push(frame);
        true
    }

    /// Takes a frame wrapped in an empty [`Pkt`] (`start == end == HEADROOM`).
    pub fn pkt(&mut self) -> Option<Pkt<Box<[u8]>>> {
        self.get().map(|f| Pkt::new(f, HEADROOM, HEADROOM))
    }

    /// Takes up to `n` frames as packets; fewer when the pool runs out.
    pub fn batch(&mut self, n: usize) -> Vec<Pkt<Box<[u8]>>> {
        let n = n.min(self.free.len());
        (0..n).filter_map(|_| self.pkt()).collect()
    }

    /// Frames available now.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Frames the pool was built with.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_hands_out_and_takes_back_without_growing() {
        let mut pool = FramePool::new(4);
        assert_eq!(pool.available(), 4);
        let a = pool.get().unwrap();
        let b = pool.get().unwrap();
        assert_eq!(a.len(), FRAME_SIZE);
        assert_eq!(pool.available(), 2);
        let cap = pool.free.capacity();
        assert!(pool.put(a));
        assert!(pool.put(b));
        assert_eq!(pool.available(), 4);
        assert_eq!(pool.free.capacity(), cap, "no reallocation");
    }

    #[test]
    fn pool_refuses_foreign_and_surplus_frames() {
        let mut pool = FramePool::new(1);
        assert!(!pool.put(vec![0u8; 100].into_boxed_slice()));
        assert!(
            !pool.put(vec![0u8; FRAME_SIZE].into_boxed_slice()),
            "already full"
        );
        let f = pool.get().unwrap();
        assert!(pool.get().is_none());
        assert!(pool.put(f));
    }

    #[test]
    fn batch_wraps_frames_at_headroom() {
        let mut pool = FramePool::new(3);
        let b = pool.batch(5);
        assert_eq!(b.len(), 3);
        assert!(b.iter().all(|p| p.start == HEADROOM && p.end == HEADROOM));
        assert_eq!(pool.available(), 0);
    }
}
