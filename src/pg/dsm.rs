//! Handing bytes to a background worker through a dynamic shared memory segment that outlives
//! the process (and the transaction) that wrote it.

use pgrx::pg_sys;

/// A segment handed over: what the worker is told to find.
pub type Handle = u32;

/// Copies `bytes` into a new segment that stays until [`take`] or [`discard`] unpins it; the
/// writer keeps no mapping. `None` when no segment can be created (too many segments).
pub fn hand_over(bytes: &[u8]) -> Option<Handle> {
    let size = bytes.len() + std::mem::size_of::<u64>();
    // SAFETY: dsm_create with DSM_CREATE_NULL_IF_MAXSEGMENTS returns a mapped segment of at
    // least `size` bytes or null; the length and the bytes are written inside it; pinning
    // keeps it after the detach, which forgets this process's mapping.
    unsafe {
        let segment = pg_sys::dsm_create(size, pg_sys::DSM_CREATE_NULL_IF_MAXSEGMENTS as i32);
        if segment.is_null() {
            return None;
        }
        let base = pg_sys::dsm_segment_address(segment).cast::<u8>();
        std::ptr::copy_nonoverlapping((bytes.len() as u64).to_ne_bytes().as_ptr(), base, 8);
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), base.add(8), bytes.len());
        let handle = pg_sys::dsm_segment_handle(segment);
        pg_sys::dsm_pin_segment(segment);
        pg_sys::dsm_detach(segment);
        Some(handle)
    }
}

/// The bytes of a segment handed over, which is then destroyed; `None` when it is gone.
pub fn take(handle: Handle) -> Option<Vec<u8>> {
    // SAFETY: dsm_attach returns null for a segment that no longer exists; one that exists
    // was written by `hand_over`: a length, then that many bytes, inside its size.
    unsafe {
        let segment = pg_sys::dsm_attach(handle);
        if segment.is_null() {
            return None;
        }
        let base = pg_sys::dsm_segment_address(segment).cast::<u8>();
        let size = pg_sys::dsm_segment_map_length(segment);
        let mut length = [0u8; 8];
        std::ptr::copy_nonoverlapping(base, length.as_mut_ptr(), 8);
        let length = usize::try_from(u64::from_ne_bytes(length)).unwrap_or(usize::MAX);
        let bytes = (length <= size.saturating_sub(8))
            .then(|| std::slice::from_raw_parts(base.add(8), length).to_vec());
        pg_sys::dsm_unpin_segment(handle);
        pg_sys::dsm_detach(segment);
        bytes
    }
}

/// Destroys a segment handed over that no worker will take.
pub fn discard(handle: Handle) {
    // SAFETY: unpinning a pinned segment that nobody maps destroys it.
    unsafe { pg_sys::dsm_unpin_segment(handle) };
}
