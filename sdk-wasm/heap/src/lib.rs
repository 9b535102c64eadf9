//! The allocator of runwire's browser SDK in WebAssembly (`sdk-wasm/src/bare.rs`): the smallest
//! code that still gives memory back, since every byte of it ships in the npm package.
//!
//! Every block is a power of two, from 8 bytes up, and each size has its own free list: an
//! allocation takes the last block freed of its size, or else carves a new one from memory the
//! heap grows by whole pages; a release puts the block back on its list. Both are a few
//! instructions, in constant time. A block is aligned to its size, up to [`MAX_ALIGN`]; a
//! `realloc` within the block's size is free.
//!
//! What it gives up against a general allocator (TLSF, `dlmalloc`): blocks are never split or
//! merged, so a request may take up to twice its size, and memory freed in one size serves only
//! that size. The SDK's heap is small (frames and states of the runs it follows) and its sizes
//! recur from one event to the next, and WebAssembly memory never shrinks anyway: docs/benchmarks.md
//! (section 6) has its measurements.
//!
//! The heap is generic over where its pages come from ([`Source`]), so that native tests drive it
//! over an arena; in the browser it is [`WasmMemory`].
#![no_std]
#![deny(missing_docs)]

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;
use core::ptr;

/// The largest alignment served (that of any WebAssembly type); a layout asking for more gets no
/// memory.
pub const MAX_ALIGN: usize = 16;

/// The unit in which the heap grows: a WebAssembly page.
pub const PAGE: usize = 65_536;

/// The smallest block, `1 << MIN_CLASS` bytes: room for a free block's link, on 32- and 64-bit
/// targets alike.
const MIN_CLASS: u32 = 3;

/// The largest request served, a quarter of the address space (1 GiB on wasm32): its block, the
/// next power of two, stays addressable.
const MAX_SIZE: usize = 1 << (usize::BITS - 2);

/// Where a heap's memory comes from.
pub trait Source {
    /// `bytes` more bytes (a multiple of [`PAGE`]) of writable memory that nothing else uses, as
    /// the address of the first; `None` when there is no more.
    fn grow(&self, bytes: usize) -> Option<usize>;
}

/// The instance's linear memory, grown with `memory.grow`.
#[cfg(target_arch = "wasm32")]
#[derive(Debug, Default, Clone, Copy)]
pub struct WasmMemory;

#[cfg(target_arch = "wasm32")]
impl Source for WasmMemory {
    fn grow(&self, bytes: usize) -> Option<usize> {
        let previous = core::arch::wasm32::memory_grow(0, bytes / PAGE);
        (previous != usize::MAX).then(|| previous * PAGE)
    }
}

/// A heap of power-of-two blocks (see the crate's documentation).
#[derive(Debug)]
pub struct Heap<S> {
    /// The first free block of each size class (`1 << class` bytes), 0 for none. A free block
    /// holds the address of the next one of its class in its first word.
    free: [Cell<usize>; usize::BITS as usize],
    /// The memory grown but not yet carved into blocks: `next..end`.
    next: Cell<usize>,
    end: Cell<usize>,
    source: S,
}

#[allow(unsafe_code)]
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
// SAFETY: a WebAssembly instance without the `atomics` feature runs on one thread, so the heap's
// cells are never reached from two threads. Only there is the heap `Sync`, as the global allocator
// must be.
unsafe impl<S: Source> Sync for Heap<S> {}

impl<S: Source> Heap<S> {
    /// An empty heap: it grows on the first allocation.
    pub const fn new(source: S) -> Self {
        Self {
            free: [const { Cell::new(0) }; usize::BITS as usize],
            next: Cell::new(0),
            end: Cell::new(0),
            source,
        }
    }

    /// A new block of `1 << class` bytes, aligned to its size up to [`MAX_ALIGN`], from the memory
    /// not yet carved, which grows when it is short; null when the source has no more.
    fn carve(&self, class: usize) -> *mut u8 {
        let size = 1usize << class;
        let align = size.min(MAX_ALIGN);
        loop {
            let start = (self.next.get() + align - 1) & !(align - 1);
            if self
                .end
                .get()
                .checked_sub(start)
                .is_some_and(|room| room >= size)
            {
                self.next.set(start + size);
                return start as *mut u8;
            }
            // Enough for the block wherever the new memory starts.
            let bytes = (size + MAX_ALIGN).next_multiple_of(PAGE);
            // Memory that ends at the very top of the address space is not used, so that `start`
            // above cannot overflow.
            let Some(at) = self
                .source
                .grow(bytes)
                .filter(|at| at.checked_add(bytes + MAX_ALIGN).is_some())
            else {
                return ptr::null_mut();
            };
            if at != self.end.get() {
                // Not after the memory still uncarved: that rest stays unused.
                self.next.set(at);
            }
            self.end.set(at + bytes);
        }
    }
}

/// The size class of a layout: its size, at least its alignment and 8 bytes, rounded up to a
/// power of two `1 << class`; `None` for a layout the heap does not serve.
fn class(layout: Layout) -> Option<usize> {
    if layout.align() > MAX_ALIGN || layout.size() > MAX_SIZE {
        return None;
    }
    let size = layout.size().max(layout.align()).max(1 << MIN_CLASS);
    Some((usize::BITS - (size - 1).leading_zeros()) as usize)
}

#[allow(unsafe_code)]
// SAFETY: a block handed out is `1 << class` bytes, at least the layout's size, aligned to its
// size up to MAX_ALIGN, so to the layout's alignment (`class` refuses larger ones), and it belongs to nothing else until it is released: it comes either from memory the source
// gave this heap alone and carved once, or from a free list, where only `dealloc` puts blocks the
// caller no longer uses.
unsafe impl<S: Source> GlobalAlloc for Heap<S> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class(layout) else {
            return ptr::null_mut();
        };
        let head = self.free[class].get();
        if head == 0 {
            return self.carve(class);
        }
        // SAFETY: `head` is a free block of this class: `dealloc` wrote the next one's address in
        // its first word, which is aligned and in bounds (blocks are at least 8 bytes, 8-aligned).
        self.free[class].set(unsafe { (head as *const usize).read() });
        head as *mut u8
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        // `alloc` gave `block` for this layout, so its class exists.
        if let Some(class) = class(layout) {
            // SAFETY: the block is the caller's no more, and holds at least an aligned word.
            unsafe { block.cast::<usize>().write(self.free[class].get()) };
            self.free[class].set(block as usize);
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new) = Layout::from_size_align(new_size, layout.align()) else {
            return ptr::null_mut();
        };
        if class(new) == class(layout) {
            // The block already has room for the new size.
            return block;
        }
        // SAFETY: `new` is a valid layout of non-zero size (the caller's contract for `realloc`).
        let moved = unsafe { self.alloc(new) };
        if !moved.is_null() {
            // SAFETY: both blocks are valid for the smaller size and distinct (`block` is in use,
            // so on no free list); `block` is released once, after the copy.
            unsafe {
                ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                self.dealloc(block, layout);
            }
        }
        moved
    }
}

#[cfg(test)]
mod tests;
