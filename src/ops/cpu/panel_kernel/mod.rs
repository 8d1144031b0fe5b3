//! The hand-written kernels for one panel's product (`y [m, 64] = x [m, k] · panel`, panels.rs's layout):
//! AVX-512 on x86-64 where the CPU has it (detected at run time), simd128 in wasm (the browser build's
//! baseline). Elsewhere — x86-64 with AVX2 only, ARM — gemm computes the panels (panels.rs), and
//! [`available`] says so.
//!
//! Why by hand at all: gemm has no entry point for an operand already in its packed layout, so it copies
//! every block of a panel into its own buffer before multiplying it — the weight's first touch from memory,
//! a pass that computes nothing. The kernels read the panel where it lies.

#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
pub use avx512::{available, panel_times};

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub use simd128::{available, panel_times};

/// No hand-written kernel for this target: gemm computes every panel.
#[cfg(not(any(target_arch = "x86_64", all(target_arch = "wasm32", target_feature = "simd128"))))]
pub fn available() -> bool {
    false
}

/// Never called: [`available`] is false here.
///
/// # Safety
/// None needed; it panics.
#[cfg(not(any(target_arch = "x86_64", all(target_arch = "wasm32", target_feature = "simd128"))))]
pub unsafe fn panel_times(_: *const f32, _: usize, _: usize, _: *const f32, _: *mut f32, _: usize) {
    unreachable!("no hand-written panel kernel on this target (`available` is false)")
}
