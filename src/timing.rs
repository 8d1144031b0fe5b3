//! Time and the event loop, on native and in the browser: milliseconds since an arbitrary origin
//! (`std::time::Instant` panics on wasm32-unknown-unknown) and a yield to the browser's event loop.

#[cfg(not(target_arch = "wasm32"))]
pub fn now_ms() -> f64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_secs_f64() * 1000.0
}

#[cfg(target_arch = "wasm32")]
pub fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// Lets the browser's event loop run once (a `setTimeout(0)` macrotask) before going on, so messages that
/// arrived meanwhile — a worker's `cancel` — are handled during a long computation. Needed where nothing
/// else yields: the wasm CPU backend computes a whole decoding step synchronously, whereas WebGPU already
/// yields while it waits for a read-back. Costs at most a few milliseconds (timers nested this deep are
/// clamped to 4 ms). Natively a no-op.
#[cfg(not(target_arch = "wasm32"))]
pub async fn yield_to_event_loop() {}

#[cfg(target_arch = "wasm32")]
pub async fn yield_to_event_loop() {
    use wasm_bindgen::{JsCast, JsValue};
    let timer = js_sys::Promise::new(&mut |resolve, _reject| {
        // `setTimeout` of whatever global runs us (a worker or a window).
        let global = js_sys::global();
        let set_timeout = js_sys::Reflect::get(&global, &JsValue::from_str("setTimeout"))
            .ok()
            .and_then(|f| f.dyn_into::<js_sys::Function>().ok());
        let scheduled = set_timeout.is_some_and(|f| f.call2(&global, &resolve, &JsValue::from(0)).is_ok());
        if !scheduled {
            let _ = resolve.call0(&JsValue::UNDEFINED);
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(timer).await;
}
