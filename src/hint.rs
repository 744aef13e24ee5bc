//! # CPU hints
//!
//! [`prefetch`]: asks the CPU to start loading memory that is about to be read. A hint
//! changes no behaviour: it never faults, whatever the address, and is a no-op on targets
//! without one. The persister's fanout uses it to fetch the next subscribers' send queues
//! and sockets while the kernel sends to the current one (docs/architecture.md).
//!
//! Owns nothing. Calls nothing of ours.

/// Cache line size assumed (x86-64).
const LINE: usize = 64;

/// Starts loading the cache lines holding `bytes` bytes from `p` into every cache level.
#[inline]
pub fn prefetch<T: ?Sized>(p: *const T, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let base = p.cast::<u8>();
        let mut off = 0;
        while off < bytes.max(1) {
            // SAFETY: a prefetch reads and writes no memory and never faults, whatever the
            // address; `wrapping_add` keeps the address computation itself defined.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(base.wrapping_add(off).cast::<i8>()) };
            off += LINE;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hint never faults, whatever it is given; the memory it hints at is unchanged.
    #[test]
    fn prefetching_any_address_is_harmless() {
        prefetch(std::ptr::null::<u8>(), 4096);
        prefetch(usize::MAX as *const u64, 256);
        let v: Vec<u8> = (0..=255).collect();
        prefetch(v.as_ptr(), v.len());
        assert!(v.iter().enumerate().all(|(i, b)| usize::from(*b) == i));
    }
}
