//! Tunnel and session ids that name their owning worker.
//!
//! The gateway chooses its own L2TP ids, so the top `worker_bits` bits of every id it
//! assigns carry the index of the worker that owns the tunnel (../shared/DESIGN.md §2):
//! a data message that lands on another worker's queue is handed to the owner without
//! a table lookup. Ids are never 0 (§3.1 reserves tunnel and session id 0).

/// Most worker bits an allocator takes: with 8, each worker still has 255 ids.
pub const MAX_WORKER_BITS: u8 = 8;

/// The worker encoded in `id` by an allocator with `worker_bits` worker bits.
pub fn worker_of(id: u16, worker_bits: u8) -> u16 {
    match worker_bits.min(MAX_WORKER_BITS) {
        0 => 0,
        bits => id >> (16 - bits),
    }
}

/// Hands out 16-bit ids whose top bits name a worker.
///
/// The index part advances by an odd stride (a permutation of the index space), so
/// consecutive ids differ and a restarted gateway is unlikely to reuse the ids of the
/// previous run when started from a random cursor.
#[derive(Clone, Debug)]
pub struct IdAllocator {
    worker_bits: u8,
    cursor: u32,
}

impl IdAllocator {
    /// An allocator with `worker_bits` (at most [`MAX_WORKER_BITS`], clamped) worker
    /// bits, starting its cursor at `start`.
    pub fn new(worker_bits: u8, start: u16) -> IdAllocator {
        IdAllocator {
            worker_bits: worker_bits.min(MAX_WORKER_BITS),
            cursor: u32::from(start),
        }
    }

    /// Worker bits in use.
    pub fn worker_bits(&self) -> u8 {
        self.worker_bits
    }

    /// How many workers the ids can name.
    pub fn workers(&self) -> u32 {
        1 << self.worker_bits
    }

    /// The worker encoded in `id`.
    pub fn worker_of(&self, id: u16) -> u16 {
        worker_of(id, self.worker_bits)
    }

    fn index_bits(&self) -> u32 {
        16 - u32::from(self.worker_bits)
    }

    /// A fresh id for `worker` that `in_use` does not claim, or `None` if `worker`
    /// cannot be encoded or all of its ids are taken.
    pub fn allocate(&mut self, worker: u16, in_use: impl Fn(u16) -> bool) -> Option<u16> {
        if u32::from(worker) >= self.workers() {
            return None;
        }
        let index_bits = self.index_bits();
        let mask = (1u32 << index_bits) - 1;
        let stride = 0x9e37 & mask | 1;
        let base = u32::from(worker) << index_bits;
        for _ in 0..=mask {
            self.cursor = (self.cursor + stride) & mask;
            let id = (base | self.cursor) as u16;
            if id != 0 && !in_use(id) {
                return Some(id);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_name_their_worker_and_are_never_zero() {
        for bits in [0u8, 1, 2, 4, 8] {
            let mut ids = IdAllocator::new(bits, 0);
            for worker in 0..ids.workers() as u16 {
                for _ in 0..50 {
                    let id = ids.allocate(worker, |_| false).unwrap();
                    assert_ne!(id, 0);
                    assert_eq!(ids.worker_of(id), worker, "bits {bits}");
                    assert_eq!(worker_of(id, bits), worker);
                }
            }
            assert_eq!(ids.allocate(ids.workers() as u16, |_| false), None);
        }
    }

    #[test]
    fn allocation_avoids_ids_in_use_until_full() {
        let mut ids = IdAllocator::new(8, 1234);
        let mut used = HashSet::new();
        // Worker 0 has 255 usable ids (index 0 would be id 0).
        for _ in 0..255 {
            let id = ids.allocate(0, |id| used.contains(&id)).unwrap();
            assert!(used.insert(id), "{id} handed out twice");
        }
        assert_eq!(ids.allocate(0, |id| used.contains(&id)), None);
        // Worker 3 has all 256.
        let mut used3 = HashSet::new();
        for _ in 0..256 {
            let id = ids.allocate(3, |id| used3.contains(&id)).unwrap();
            assert!(used3.insert(id));
            assert_eq!(id >> 8, 3);
        }
        assert_eq!(ids.allocate(3, |id| used3.contains(&id)), None);
        // Freed ids come back.
        used3.remove(&0x0342);
        assert_eq!(ids.allocate(3, |id| used3.contains(&id)), Some(0x0342));
    }

    #[test]
    fn whole_space_without_worker_bits() {
        let mut ids = IdAllocator::new(0, 0xffff);
        let mut seen = HashSet::new();
        for _ in 0..65535 {
            assert!(seen.insert(ids.allocate(0, |_| false).unwrap()));
        }
        assert!(!seen.contains(&0));
        assert_eq!(worker_of(0xffff, 0), 0);
        assert_eq!(IdAllocator::new(12, 0).worker_bits(), MAX_WORKER_BITS);
    }
}
