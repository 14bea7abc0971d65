//! Output buffers that parallel kernels fill through raw pointers.

use std::mem::MaybeUninit;

/// An f32 output buffer that the caller fills completely before [`OutBuf::assume_init`]:
/// no zeroing pass (memset was ~6% of an SD frame).
pub(crate) struct OutBuf(Vec<MaybeUninit<f32>>);

impl OutBuf {
    pub(crate) fn new(n: usize) -> Self {
        let mut v = Vec::with_capacity(n);
        // SAFETY: MaybeUninit needs no initialisation.
        unsafe { v.set_len(n) };
        Self(v)
    }

    pub(crate) fn ptr(&mut self) -> OutPtr {
        OutPtr(self.0.as_mut_ptr().cast())
    }

    /// # Safety
    /// Every element must have been written.
    pub(crate) unsafe fn assume_init(self) -> Vec<f32> {
        let mut v = std::mem::ManuallyDrop::new(self.0);
        Vec::from_raw_parts(v.as_mut_ptr().cast(), v.len(), v.capacity())
    }
}

/// Raw output pointer shared by tasks that write disjoint parts of one buffer.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(*mut f32);

// SAFETY: the kernels that share it write disjoint elements.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    // A method (not field access) so closures capture the Send wrapper, not the raw pointer.
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}
