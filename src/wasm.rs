//! The JavaScript API (wasm32). Errors cross the boundary as JS `Error`s with the engine's message;
//! panics are routed to the console and never unwind into JS.

use wasm_bindgen::prelude::*;

#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

/// Crate version.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// Name of the backend the engine will use: `"cpu"` until the WebGPU backend lands.
#[wasm_bindgen(js_name = backendName)]
pub fn backend_name() -> String {
    "cpu".to_string()
}
