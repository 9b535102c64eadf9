//! What the standard library would otherwise provide, for the `.wasm` built without feature
//! `std` (the npm package).
//!
//! - A panic handler that aborts at once. A panic is a bug in this crate; the standard library's
//!   handler would format its message for a stderr the browser does not have, and linking it
//!   ships `core::fmt` in the `.wasm`.
//! - A TLSF allocator ([`rlsf`]), a fraction of `dlmalloc`'s code, with constant-time
//!   allocation and release.

/// The global allocator.
#[global_allocator]
static ALLOCATOR: rlsf::SmallGlobalTlsf = rlsf::SmallGlobalTlsf::new();

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}
