//! What the standard library would otherwise provide, for the `.wasm` built without feature
//! `std` (the npm package).
//!
//! - A panic handler that aborts at once. A panic is a bug in this crate; the standard library's
//!   handler would format its message for a stderr the browser does not have, and linking it
//!   ships `core::fmt` in the `.wasm`.
//! - An allocator of power-of-two blocks with a free list per size ([`runwire_heap`]): less code
//!   than a general allocator (TLSF, `dlmalloc`), with constant-time allocation and release, for
//!   some more memory (docs/benchmarks.md, section 6).

/// The global allocator.
#[global_allocator]
static ALLOCATOR: runwire_heap::Heap<runwire_heap::WasmMemory> =
    runwire_heap::Heap::new(runwire_heap::WasmMemory);

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}
