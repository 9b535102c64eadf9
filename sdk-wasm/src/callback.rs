//! JS callbacks the library hands to the browser, counted so tests can prove none outlive their
//! owner. Every one is held by the struct that registered it and released in that struct's `Drop`.

use core::sync::atomic::{AtomicUsize, Ordering};

use alloc::boxed::Box;

use wasm_bindgen::closure::{Closure, WasmClosure};
use wasm_bindgen::prelude::{JsValue, wasm_bindgen};

use crate::decode::Field;

#[wasm_bindgen]
extern "C" {
    // On the global object of both windows and workers.
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(handler: &js_sys::Function, ms: u32) -> f64;
    #[wasm_bindgen(js_name = clearTimeout)]
    fn clear_timeout(id: f64);
    // Windows and dedicated workers; checked for before use.
    #[wasm_bindgen(js_name = requestAnimationFrame)]
    fn request_animation_frame(handler: &js_sys::Function) -> f64;
    #[wasm_bindgen(js_name = cancelAnimationFrame)]
    fn cancel_animation_frame(id: f64);
}

// `settle`: a promise's outcome into one callback, `f(true, value)` or `f(false, error)`.
// `global`: the global object of windows and workers alike (one import, where `js_sys::global`
// probes four names).
#[wasm_bindgen(
    inline_js = "export function settle(p, f) { p.then((v) => f(true, v), (e) => f(false, e)); }
export function global() { return globalThis; }"
)]
extern "C" {
    #[wasm_bindgen(js_name = settle)]
    fn settle_with(promise: &js_sys::Promise, f: JsValue);
    /// `globalThis`.
    pub fn global() -> js_sys::Object;
}

/// Calls `f` with what `promise` settles to, from a microtask (never before this returns).
///
/// One callback, freed once called, instead of `wasm-bindgen-futures`' task queue and wakers:
/// a promise that never settles keeps `f` (and what it holds, weakly held clients included).
pub fn settle(promise: &js_sys::Promise, f: impl FnOnce(Result<JsValue, JsValue>) + 'static) {
    settle_with(
        promise,
        Closure::once_into_js(move |ok: bool, v: JsValue| f(if ok { Ok(v) } else { Err(v) })),
    );
}

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

/// A `setTimeout` or `requestAnimationFrame` that counts itself; dropping it cancels it and
/// releases its callback.
#[derive(Debug)]
pub struct HeldTimeout {
    id: f64,
    frame: bool,
    _callback: Held<dyn FnMut()>,
}

impl HeldTimeout {
    /// Calls `f` after `ms` milliseconds.
    pub fn new(ms: u32, f: impl FnOnce() + 'static) -> Self {
        let callback = once(f);
        let id = set_timeout(callback.function(), ms);
        Self {
            id,
            frame: false,
            _callback: callback,
        }
    }

    /// Calls `f` before the next frame is painted (browsers pause frames in hidden tabs). On a
    /// global without `requestAnimationFrame`, calls it after 16 ms.
    pub fn next_frame(f: impl FnOnce() + 'static) -> Self {
        let has_frames = crate::js::option(&global(), Field::RequestAnimationFrame).is_function();
        if !has_frames {
            return Self::new(16, f);
        }
        let callback = once(f);
        let id = request_animation_frame(callback.function());
        Self {
            id,
            frame: true,
            _callback: callback,
        }
    }
}

fn once(f: impl FnOnce() + 'static) -> Held<dyn FnMut()> {
    let mut f = Some(f);
    Held::new(Closure::<dyn FnMut()>::wrap(Box::new(move || {
        if let Some(f) = f.take() {
            f();
        }
    })))
}

impl Drop for HeldTimeout {
    fn drop(&mut self) {
        if self.frame {
            cancel_animation_frame(self.id);
        } else {
            clear_timeout(self.id);
        }
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
