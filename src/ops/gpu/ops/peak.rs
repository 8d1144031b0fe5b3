//! The adapter's FMA throughput, measured (fma_peak.wgsl, fma_peak_f16.wgsl): the bench's denominator for
//! "% of peak", taken in the same run as the GEMMs it judges, since no API reports a GPU's peak.

use crate::error::Result;
use crate::ops::gpu::kernels::params::FmaPeakParams;
use crate::ops::gpu::kernels::Kernel;
use crate::ops::gpu::GpuBackend;
use crate::ops::Backend;
use crate::timing::now_ms;

/// Invocations per dispatch: 1024 workgroups of 256, enough to fill an H200 (132 SMs × 2048 resident).
const GROUPS: u32 = 1024;
const INVOCATIONS: usize = GROUPS as usize * 256;
/// FLOPs per invocation and loop iteration: 8 vec4 FMAs.
const FLOPS_PER_ITER: f64 = 64.0;
/// A timing counts once the kernel runs at least this long, so submission and read-back are a small part.
const MIN_MS: f64 = 40.0;

/// GFLOP/s of FMAs in f32 (or in f16 arithmetic, `None` where the adapter has no `shader-f16`): the best of
/// three timings at a loop length grown until one dispatch takes `MIN_MS`.
pub async fn fma_peak_gflops(be: &GpuBackend, f16: bool) -> Result<Option<f64>> {
    if f16 && !be.has_shader_f16() {
        return Ok(None);
    }
    let out = be.alloc_f32(&[INVOCATIONS], "fma peak")?;
    let run = |iters: u32| {
        let params = FmaPeakParams { iters, ..Default::default() };
        be.dispatch(Kernel::FmaPeak(f16), &params, &[out.buffer()], [GROUPS, 1, 1]);
        be.read_f32(&out)
    };
    let mut iters = 64u32;
    let mut best = 0.0f64;
    let mut timed = 0;
    while timed < 3 {
        let t = now_ms();
        let values = run(iters).await?;
        let ms = now_ms() - t;
        if values.iter().any(|v| !v.is_finite()) {
            return Err(crate::ops::gpu::backend_err("fma peak: the kernel produced non-finite values"));
        }
        if ms < MIN_MS && iters < 1 << 24 {
            iters *= 2;
            continue;
        }
        best = best.max(INVOCATIONS as f64 * iters as f64 * FLOPS_PER_ITER / (ms * 1e6));
        timed += 1;
    }
    Ok(Some(best))
}
