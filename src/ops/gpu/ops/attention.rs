//! Multi-head attention with an optional additive bias: one fused flash-style kernel (flash_attention.wgsl:
//! online softmax over tiles of 32 keys, any number of keys) for head dims up to 256 (CLIP, the prior, the
//! UNet); wider heads (the MoVQ's single 512-wide head) go per head and block of queries through the tiled
//! GEMM for the scores, an in-place softmax (softmax_rows.wgsl) and the GEMM again for P·V.

use super::gemm::{self, Gemm};
use crate::error::Result;
use crate::ops::gpu::kernels::params::{AttentionParams, SoftmaxRowsParams};
use crate::ops::gpu::kernels::Kernel;
use crate::ops::gpu::tensor::{dims2, GpuTensor};
use crate::ops::gpu::{backend_err, u32_of, GpuBackend};

/// flash_attention.wgsl keeps two queries' heads in 16 registers each per invocation of 16 (`MAX_D`).
const FLASH_MAX_HEAD_DIM: usize = 256;
/// Queries per workgroup of flash_attention.wgsl (`BQ`).
const FLASH_QUERY_BLOCK: usize = 32;
/// Scores of one block of queries (for one head) stay below this, whatever the sequence length: MoVQ's
/// single-head attention over 9216 positions would otherwise need a 340 MB score matrix.
const ATTENTION_SCORE_BLOCK_BYTES: usize = 64 << 20;

pub fn attention(
    be: &GpuBackend,
    q: &GpuTensor,
    k: &GpuTensor,
    v: &GpuTensor,
    heads: usize,
    scale: f32,
    bias: Option<&GpuTensor>,
) -> Result<GpuTensor> {
    let (t, width) = dims2(q, "attention")?;
    let (s, kw) = dims2(k, "attention")?;
    if kw != width || v.shape != [s, width] || heads == 0 || width % heads != 0 {
        return Err(backend_err(format!(
            "attention: q {:?}, k {:?}, v {:?} do not fit {heads} heads",
            q.shape, k.shape, v.shape
        )));
    }
    if let Some(b) = bias {
        if b.numel() != t * s {
            return Err(backend_err(format!("attention: bias {:?} is not [{t}, {s}]", b.shape)));
        }
    }
    let d = width / heads;
    let (q, k, v) = (be.as_f32(q)?, be.as_f32(k)?, be.as_f32(v)?);
    let bias = bias.map(|b| be.as_f32(b)).transpose()?;
    if t > 0 && s > 0 && (d > FLASH_MAX_HEAD_DIM || be.inner.blocked_attention) {
        // Beyond the fused kernel's registers (MoVQ's 512-wide head), or asked for (GpuOptions).
        return blocked(be, &q, &k, &v, heads, scale, bias.as_ref());
    }
    let out = be.alloc_f32(&[t, width], "attention")?;
    if t == 0 || width == 0 {
        return Ok(out);
    }
    if s == 0 {
        return Err(backend_err("attention: no keys"));
    }
    let params = AttentionParams {
        t: u32_of(t, "queries")?,
        s: u32_of(s, "keys")?,
        d: u32_of(d, "head dim")?,
        width: u32_of(width, "width")?,
        has_bias: bias.is_some() as u32,
        scale,
        ..Default::default()
    };
    let bias_buf = bias.as_ref().map_or(&be.inner.dummy, |b| b.buffer());
    let groups = [u32_of(t.div_ceil(FLASH_QUERY_BLOCK), "queries")?, u32_of(heads, "heads")?, 1];
    be.dispatch(Kernel::Attention, &params, &[q.buffer(), k.buffer(), v.buffer(), bias_buf, out.buffer()], groups);
    Ok(out)
}

/// Attention for any length and head dim, unfused: per head and block of queries, scores by the tiled
/// GEMM into a bounded buffer, softmax in place, then P·V by the GEMM into the head's output columns.
/// Inputs as [`Backend::attention`](crate::ops::Backend::attention), already checked and f32.
fn blocked(
    be: &GpuBackend,
    q: &GpuTensor,
    k: &GpuTensor,
    v: &GpuTensor,
    heads: usize,
    scale: f32,
    bias: Option<&GpuTensor>,
) -> Result<GpuTensor> {
    let (t, width) = dims2(q, "attention")?;
    let s = k.shape[0];
    let d = width / heads;
    let out = be.alloc_f32(&[t, width], "attention")?;
    let budget = ATTENTION_SCORE_BLOCK_BYTES.min(be.inner.limits.max_storage_buffer_binding_size as usize);
    let max_groups = be.inner.limits.max_compute_workgroups_per_dimension as usize;
    let block = (budget / (s * 4)).clamp(1, max_groups).min(t);
    for h in 0..heads {
        for q0 in (0..t).step_by(block) {
            let rows = block.min(t - q0);
            let scores = be.alloc_f32(&[rows, s], "attention scores")?;
            gemm::dispatch(
                be,
                &Gemm {
                    x_stride: width,
                    x_off: q0 * width + h * d,
                    w_sn: width,
                    w_off: h * d,
                    ..Gemm::linear(rows, d, s, q.buffer(), k, scores.buffer())
                },
            )?;
            let params = SoftmaxRowsParams {
                rows: rows as u32,
                cols: u32_of(s, "keys")?,
                has_bias: bias.is_some() as u32,
                bias_off: u32_of(q0 * s, "bias offset")?,
                scale,
                ..Default::default()
            };
            let bias_buf = bias.map_or(&be.inner.dummy, |b| b.buffer());
            be.dispatch(
                Kernel::SoftmaxRows(be.inner.reduction),
                &params,
                &[bias_buf, scores.buffer()],
                [rows as u32, 1, 1],
            );
            gemm::dispatch(
                be,
                &Gemm {
                    w_sn: 1,
                    w_sk: width,
                    w_off: h * d,
                    out_stride: width,
                    out_off: q0 * width + h * d,
                    ..Gemm::linear(rows, s, d, scores.buffer(), v, out.buffer())
                },
            )?;
        }
    }
    Ok(out)
}
