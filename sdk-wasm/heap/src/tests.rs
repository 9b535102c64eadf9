//! The heap over an arena of host memory: what it hands out is aligned, in the arena, never
//! shared, kept intact until released, and reused by size class.
// The tests call the allocator's functions and read and write its blocks, all of which is unsafe.
#![allow(unsafe_code, clippy::undocumented_unsafe_blocks)]

extern crate std;

use std::boxed::Box;
use std::vec;
use std::vec::Vec;

use super::*;

/// Pages of host memory handed out in order, up to a limit; with `gap`, a page is skipped before
/// each grant after the first, so that no grant follows the one before it.
#[derive(Debug)]
struct Arena {
    memory: Box<[u128]>,
    used: Cell<usize>,
    gap: bool,
}

impl Arena {
    fn new(pages: usize, gap: bool) -> Self {
        Self {
            memory: vec![0u128; pages * PAGE / 16].into_boxed_slice(),
            used: Cell::new(0),
            gap,
        }
    }

    fn base(&self) -> usize {
        self.memory.as_ptr() as usize
    }

    fn contains(&self, block: *mut u8, size: usize) -> bool {
        let at = block as usize;
        at >= self.base() && at + size <= self.base() + self.memory.len() * 16
    }
}

impl Source for &Arena {
    fn grow(&self, bytes: usize) -> Option<usize> {
        assert_eq!(bytes % PAGE, 0, "whole pages");
        let skip = if self.gap && self.used.get() > 0 {
            PAGE
        } else {
            0
        };
        let at = self.used.get() + skip;
        if at + bytes > self.memory.len() * 16 {
            return None;
        }
        self.used.set(at + bytes);
        Some(self.base() + at)
    }
}

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

/// Fills a block with a pattern of its own, and checks it later: blocks that overlapped, or that
/// the heap wrote into while they were in use, would not keep it.
fn fill(block: *mut u8, size: usize, tag: u8) {
    for i in 0..size {
        unsafe { block.add(i).write(tag ^ (i as u8)) };
    }
}

fn holds(block: *mut u8, size: usize, tag: u8) -> bool {
    (0..size).all(|i| unsafe { block.add(i).read() } == tag ^ (i as u8))
}

#[test]
fn blocks_are_aligned_distinct_and_kept() {
    let arena = Arena::new(64, false);
    let heap = Heap::new(&arena);
    let mut live = Vec::new();
    for (i, (size, align)) in [
        (1, 1),
        (7, 1),
        (8, 8),
        (9, 1),
        (24, 4),
        (100, 8),
        (3, 16),
        (40_000, 16),
        (70_000, 1),
        (5, 2),
    ]
    .into_iter()
    .cycle()
    .take(60)
    .enumerate()
    {
        let l = layout(size, align);
        let block = unsafe { heap.alloc(l) };
        assert!(!block.is_null());
        assert!(arena.contains(block, size), "in the arena");
        let class_size = (size.max(align).max(8)).next_power_of_two();
        assert_eq!(
            block as usize % class_size.min(MAX_ALIGN),
            0,
            "aligned to its size"
        );
        assert_eq!(block as usize % align, 0, "aligned as asked");
        fill(block, size, i as u8);
        live.push((block, l, i as u8));
    }
    for &(block, l, tag) in &live {
        assert!(holds(block, l.size(), tag), "{l:?} kept");
    }
}

#[test]
fn a_freed_block_serves_its_size_class_only() {
    let arena = Arena::new(4, false);
    let heap = Heap::new(&arena);
    unsafe {
        let a = heap.alloc(layout(20, 4));
        let b = heap.alloc(layout(20, 4));
        heap.dealloc(a, layout(20, 4));
        // Another class does not take it…
        let c = heap.alloc(layout(64, 8));
        assert_ne!(c, a);
        // …the same class does (17 to 32 bytes), last freed first.
        heap.dealloc(b, layout(20, 4));
        assert_eq!(heap.alloc(layout(32, 1)), b);
        assert_eq!(heap.alloc(layout(17, 8)), a);
        assert_ne!(heap.alloc(layout(20, 4)), a);
    }
}

#[test]
fn realloc_keeps_the_block_within_its_class_and_moves_the_contents_out_of_it() {
    let arena = Arena::new(8, false);
    let heap = Heap::new(&arena);
    unsafe {
        let a = heap.alloc(layout(40, 8));
        fill(a, 40, 7);
        let same = heap.realloc(a, layout(40, 8), 64);
        assert_eq!(same, a, "40 and 64 bytes: one class");
        let moved = heap.realloc(same, layout(64, 8), 1_000);
        assert_ne!(moved, a);
        assert!(holds(moved, 40, 7), "the contents moved");
        // The old block went back on its list.
        assert_eq!(heap.alloc(layout(64, 8)), a);
        let shrunk = heap.realloc(moved, layout(1_000, 8), 10);
        assert!(holds(shrunk, 10, 7), "shrinking keeps what fits");
    }
}

#[test]
fn grows_by_pages_and_reports_when_memory_runs_out() {
    let arena = Arena::new(3, false);
    let heap = Heap::new(&arena);
    unsafe {
        // Two pages for the block, and one more so that it fits wherever the memory starts.
        let a = heap.alloc(layout(PAGE + 1, 1));
        assert!(!a.is_null() && arena.contains(a, PAGE + 1));
        assert_eq!(arena.used.get(), 3 * PAGE);
        // The rest of what was grown serves the next blocks…
        let b = heap.alloc(layout(PAGE / 2, 8));
        let c = heap.alloc(layout(PAGE / 2, 8));
        assert!(!b.is_null() && !c.is_null() && arena.contains(c, PAGE / 2));
        // …and once it is used up and the source has no more, there is no block.
        assert!(heap.alloc(layout(16, 16)).is_null());
        // What is released still serves its class.
        heap.dealloc(b, layout(PAGE / 2, 8));
        assert_eq!(heap.alloc(layout(PAGE / 2, 1)), b);
    }
}

#[test]
fn memory_that_does_not_follow_the_last_is_carved_from_its_start() {
    let arena = Arena::new(16, true);
    let heap = Heap::new(&arena);
    let mut blocks = Vec::new();
    unsafe {
        for i in 0..200u8 {
            let b = heap.alloc(layout(1_000, 8));
            assert!(!b.is_null() && arena.contains(b, 1_000));
            fill(b, 1_000, i);
            blocks.push((b, i));
        }
    }
    for (b, i) in blocks {
        assert!(holds(b, 1_000, i));
    }
}

#[test]
fn refuses_what_it_cannot_serve() {
    let arena = Arena::new(1, false);
    let heap = Heap::new(&arena);
    unsafe {
        assert!(heap.alloc(layout(8, 32)).is_null(), "alignment over 16");
        assert!(
            heap.alloc(layout(MAX_SIZE + 1, 1)).is_null(),
            "over the largest size"
        );
        assert!(heap.alloc(layout(8, 8)).cast::<u8>() as usize != 0);
    }
}

/// A long random mix of allocations, reallocations and releases (a fixed seed, a bounded count):
/// every block keeps its contents until it is released, and freed blocks are reused: the heap
/// grows no more than the most blocks of each size class ever live at once need.
#[test]
fn random_use_keeps_every_block() {
    let arena = Arena::new(256, false);
    let heap = Heap::new(&arena);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
    let class_of = |l: Layout| class(l).unwrap();
    let mut count = [0usize; 64];
    let mut peak = [0usize; 64];
    let mut count_in = |c: usize, n: isize| {
        count[c] = count[c].checked_add_signed(n).unwrap();
        peak[c] = peak[c].max(count[c]);
    };
    for _ in 0..40_000 {
        let size = [1, 3, 8, 12, 24, 31, 33, 100, 200, 500, 4_000][next(11)];
        let align = [1, 2, 4, 8, 16][next(5)];
        match next(3) {
            0 if !live.is_empty() => {
                let (b, l, tag) = live.swap_remove(next(live.len()));
                assert!(holds(b, l.size(), tag));
                unsafe { heap.dealloc(b, l) };
                count_in(class_of(l), -1);
            }
            1 if !live.is_empty() => {
                let i = next(live.len());
                let (b, l, tag) = live[i];
                let grown = unsafe { heap.realloc(b, l, size) };
                assert!(!grown.is_null());
                assert!(holds(grown, l.size().min(size), tag));
                let new = layout(size, l.align());
                count_in(class_of(l), -1);
                count_in(class_of(new), 1);
                fill(grown, size, tag);
                live[i] = (grown, new, tag);
            }
            _ if live.len() < 500 => {
                let l = layout(size, align);
                let b = unsafe { heap.alloc(l) };
                assert!(!b.is_null() && arena.contains(b, size));
                assert_eq!(b as usize % align, 0);
                let tag = next(256) as u8;
                fill(b, size, tag);
                live.push((b, l, tag));
                count_in(class_of(l), 1);
            }
            _ => {}
        }
    }
    for (b, l, tag) in live {
        assert!(holds(b, l.size(), tag));
    }
    // Each block at most 15 bytes of alignment away from the one before; a page of slack.
    let bound: usize = (0..64)
        .map(|c| peak[c] * ((1 << c) + MAX_ALIGN - 1))
        .sum::<usize>()
        + PAGE;
    assert!(
        arena.used.get() <= bound,
        "{} bytes grown for at most {bound}",
        arena.used.get()
    );
}
