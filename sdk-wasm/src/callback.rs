//! JS callbacks the library hands to the browser, counted so tests can prove none outlive their
//! owner. Every one is held by the struct that registered it and released in that struct's `Drop`.

use core::sync::atomic::{AtomicUsize, Ordering};

use wasm_bindgen::closure::{Closure, WasmClosure};

static LIVE_CALLBACKS: AtomicUsize = AtomicUsize::new(0);
static LIVE_CLIENTS: AtomicUsize = AtomicUsize::new(0);

/// How many JS callbacks registered by the library are alive (socket handlers, timers, page
/// listeners). Zero once every client is closed or freed.
pub fn live_callbacks() -> usize {
    LIVE_CALLBACKS.load(Ordering::Relaxed)
}

/// How many clients are alive (not yet freed).
pub fn live_clients() -> usize {
    LIVE_CLIENTS.load(Ordering::Relaxed)
}

/// A [`Closure`] that counts itself.
pub struct Held<T: ?Sized>(Closure<T>);

impl<T: ?Sized> core::fmt::Debug for Held<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Held")
    }
}

impl<T: ?Sized + WasmClosure> Held<T> {
    /// Takes ownership of `closure`.
    pub fn new(closure: Closure<T>) -> Self {
        LIVE_CALLBACKS.fetch_add(1, Ordering::Relaxed);
        Self(closure)
    }

    /// The JS function, to hand to the browser.
    pub fn function(&self) -> &js_sys::Function {
        use wasm_bindgen::JsCast;
        self.0.as_ref().unchecked_ref()
    }
}

impl<T: ?Sized> Drop for Held<T> {
    fn drop(&mut self) {
        LIVE_CALLBACKS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Marks a client alive for [`live_clients`].
#[derive(Debug)]
pub struct ClientToken(());

impl Default for ClientToken {
    fn default() -> Self {
        LIVE_CLIENTS.fetch_add(1, Ordering::Relaxed);
        Self(())
    }
}

impl Drop for ClientToken {
    fn drop(&mut self) {
        LIVE_CLIENTS.fetch_sub(1, Ordering::Relaxed);
    }
}
