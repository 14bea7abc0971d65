//! A global allocator that keeps recently freed large blocks for reuse.
//!
//! Every candle op allocates its output; for SD-size activations (tens to hundreds of MB)
//! the system allocator maps fresh pages each time and unmaps them on free, and `perf`
//! showed a fifth of a CPU frame spent in the kernel faulting and clearing those pages.
//! Frames repeat the same shapes, so a small cache of freed blocks, matched by size class,
//! removes most of that. Small blocks go straight to the system allocator.
//!
//! Binaries opt in with `#[global_allocator] static A: CachingAlloc = CachingAlloc::new();`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;

/// Blocks below this go to the system allocator untouched.
const MIN_CACHED: usize = 256 << 10;
/// Most bytes kept in the cache; older blocks are returned to the system beyond it.
const DEFAULT_CAPACITY: usize = 256 << 20;
const ALIGN: usize = 64;
const MAX_BLOCKS: usize = 64;

/// Rounds up to 1/16 of the size's power of two, so that near-equal requests share blocks
/// (at most 6.25% slack).
fn size_class(size: usize) -> usize {
    let step = (size.next_power_of_two() / 16).max(4096);
    size.div_ceil(step) * step
}

struct Cache {
    /// (class size, block), oldest first.
    blocks: [(usize, usize); MAX_BLOCKS],
    len: usize,
    bytes: usize,
}

pub struct CachingAlloc {
    cache: Mutex<Cache>,
    capacity: usize,
}

impl CachingAlloc {
    pub const fn new() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    pub const fn with_capacity(capacity: usize) -> Self {
        Self {
            cache: Mutex::new(Cache {
                blocks: [(0, 0); MAX_BLOCKS],
                len: 0,
                bytes: 0,
            }),
            capacity,
        }
    }

    fn cached(layout: &Layout) -> bool {
        layout.size() >= MIN_CACHED && layout.align() <= ALIGN
    }

    fn class_layout(layout: &Layout) -> Layout {
        // SAFETY: ALIGN is a power of two and the class size is >= MIN_CACHED, far from
        // overflowing isize once rounded.
        unsafe { Layout::from_size_align_unchecked(size_class(layout.size()), ALIGN) }
    }

    /// A cached block of exactly `class` bytes, if any (newest first).
    fn take(&self, class: usize) -> Option<*mut u8> {
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let i = (0..c.len).rev().find(|&i| c.blocks[i].0 == class)?;
        let (_, p) = c.blocks[i];
        let len = c.len;
        c.blocks.copy_within(i + 1..len, i);
        c.len -= 1;
        c.bytes -= class;
        Some(p as *mut u8)
    }

    /// Number of blocks and bytes held.
    pub fn held(&self) -> (usize, usize) {
        let c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        (c.len, c.bytes)
    }
}

impl Default for CachingAlloc {
    fn default() -> Self {
        Self::new()
    }
}

unsafe impl GlobalAlloc for CachingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !Self::cached(&layout) {
            return System.alloc(layout);
        }
        let cl = Self::class_layout(&layout);
        match self.take(cl.size()) {
            Some(p) => p,
            None => System.alloc(cl),
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !Self::cached(&layout) {
            return System.alloc_zeroed(layout);
        }
        let cl = Self::class_layout(&layout);
        match self.take(cl.size()) {
            Some(p) => {
                std::ptr::write_bytes(p, 0, layout.size());
                p
            }
            // Fresh pages from the system are already zero.
            None => System.alloc_zeroed(cl),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !Self::cached(&layout) {
            return System.dealloc(ptr, layout);
        }
        let cl = Self::class_layout(&layout);
        let class = cl.size();
        if class > self.capacity {
            return System.dealloc(ptr, cl);
        }
        let mut evicted = [(0usize, 0usize); MAX_BLOCKS];
        let n_evicted = {
            let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            // Make room: drop the oldest blocks until this one fits.
            let mut drop_n = 0;
            let mut bytes = c.bytes;
            while drop_n < c.len && (bytes + class > self.capacity || c.len - drop_n == MAX_BLOCKS)
            {
                bytes -= c.blocks[drop_n].0;
                drop_n += 1;
            }
            evicted[..drop_n].copy_from_slice(&c.blocks[..drop_n]);
            let len = c.len;
            c.blocks.copy_within(drop_n..len, 0);
            c.len -= drop_n;
            c.bytes = bytes + class;
            let at = c.len;
            c.blocks[at] = (class, ptr as usize);
            c.len += 1;
            drop_n
        };
        // Returned outside the lock.
        for &(size, p) in &evicted[..n_evicted] {
            System.dealloc(p as *mut u8, Layout::from_size_align_unchecked(size, ALIGN));
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = Layout::from_size_align_unchecked(new_size, layout.align());
        if !Self::cached(&layout) && !Self::cached(&new) {
            return System.realloc(ptr, layout, new_size);
        }
        if Self::cached(&layout)
            && Self::cached(&new)
            && size_class(new_size) == size_class(layout.size())
        {
            return ptr;
        }
        let p = self.alloc(new);
        if !p.is_null() {
            std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes_bound_the_slack() {
        for size in [
            MIN_CACHED,
            MIN_CACHED + 1,
            1 << 20,
            (1 << 20) + 5,
            134_217_728,
            3 << 27,
        ] {
            let c = size_class(size);
            assert!(
                c >= size && (c - size) * 16 <= size.next_power_of_two(),
                "{size} -> {c}"
            );
            assert_eq!(c % 4096, 0);
        }
        assert_eq!(size_class(1 << 20), 1 << 20);
    }

    #[test]
    fn freed_blocks_are_reused_zeroed_and_bounded() {
        let a = CachingAlloc::with_capacity(3 << 20);
        let l = Layout::from_size_align(1 << 20, 8).unwrap();
        unsafe {
            let p = a.alloc_zeroed(l);
            assert!(!p.is_null());
            std::ptr::write_bytes(p, 0xAB, l.size());
            a.dealloc(p, l);
            assert_eq!(a.held(), (1, 1 << 20));
            // Same class: the same block comes back, cleared for alloc_zeroed.
            let q = a.alloc_zeroed(Layout::from_size_align(1_000_000, 8).unwrap());
            assert_eq!(q, p);
            assert!(std::slice::from_raw_parts(q, 1_000_000)
                .iter()
                .all(|&b| b == 0));
            assert_eq!(a.held(), (0, 0));
            // Fill beyond the capacity: the oldest blocks are released.
            let blocks: Vec<_> = (0..5).map(|_| a.alloc(l)).collect();
            a.dealloc(q, Layout::from_size_align(1_000_000, 8).unwrap());
            for &b in &blocks {
                a.dealloc(b, l);
            }
            let (n, bytes) = a.held();
            assert_eq!((n, bytes), (3, 3 << 20));
            // Realloc within a class keeps the block; across classes it copies.
            let r = a.alloc(l);
            std::ptr::write_bytes(r, 7, l.size());
            assert_eq!(a.realloc(r, l, (1 << 20) - 100), r);
            let big = a.realloc(
                r,
                Layout::from_size_align((1 << 20) - 100, 8).unwrap(),
                2 << 20,
            );
            assert!(std::slice::from_raw_parts(big, (1 << 20) - 100)
                .iter()
                .all(|&b| b == 7));
            a.dealloc(big, Layout::from_size_align(2 << 20, 8).unwrap());
            // Small blocks bypass the cache.
            let s = Layout::from_size_align(64, 8).unwrap();
            let sp = a.alloc(s);
            a.dealloc(sp, s);
            assert!(a.held().1 <= 3 << 20);
        }
    }
}
