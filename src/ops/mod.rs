//! The op layer: everything a model may compute, as one trait that each backend implements.
//!
//! Models (CLIP towers, the λ prior) are generic over [`Backend`] and only ever call these methods, so a new
//! backend (the WebGPU one) runs them unchanged. Tensors are deliberately simple: row-major f32 matrices
//! `[rows, cols]` (a sequence of token vectors) plus 1-D vectors for biases and norms. Heads, batches of
//! images and convolutions are expressed through the ops below rather than through general N-d tensors,
//! which keeps every GPU kernel small. Reading a value back is the only async operation: on the GPU it is
//! where the recorded work is submitted and awaited.

pub mod any;
pub mod blocks;
pub mod choice;
pub mod cpu;
#[cfg(feature = "gpu")]
pub mod gpu;
mod gpu_options;
pub mod meta;
// Without the `gpu` feature, `ops::gpu` is a stand-in with the same API whose constructors fail (as candle's
// dummy CUDA and Metal backends), so no caller needs a `cfg` of its own.
#[cfg(not(feature = "gpu"))]
#[path = "gpu_standin.rs"]
pub mod gpu;

pub use any::{AnyBackend, AnyTensor};
pub use choice::{BackendChoice, WeightStorage};

use crate::error::Result;
use std::future::Future;

/// Element type of stored weights. Compute is always f32; weights are converted (CPU) or unpacked in the
/// kernel (GPU) from what the file holds. `Q8_0` and `Q4_0` are ggml's block formats as GGUF files store them
/// (see [`blocks`]): blocks of 32 values along the last dimension, so a matrix `[rows, k]` needs `k % 32 == 0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightDType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
}

impl WeightDType {
    /// Values per block: 1 for the float types.
    pub fn block_values(self) -> usize {
        if self.is_quantized() {
            blocks::BLOCK_VALUES
        } else {
            1
        }
    }

    /// Bytes per block (per value for the float types).
    pub fn block_bytes(self) -> usize {
        match self {
            WeightDType::F32 => 4,
            WeightDType::F16 | WeightDType::BF16 => 2,
            WeightDType::Q8_0 => blocks::block_bytes(false),
            WeightDType::Q4_0 => blocks::block_bytes(true),
        }
    }

    /// Whether this is a block-quantised type.
    pub fn is_quantized(self) -> bool {
        matches!(self, WeightDType::Q8_0 | WeightDType::Q4_0)
    }

    /// Bytes of `numel` values; `None` when they are not whole blocks (or the count overflows).
    pub fn bytes_for(self, numel: usize) -> Option<usize> {
        if !numel.is_multiple_of(self.block_values()) {
            return None;
        }
        (numel / self.block_values()).checked_mul(self.block_bytes())
    }

    /// The name files use: `F32`, `F16`, `BF16`, `Q8_0`, `Q4_0`.
    pub fn name(self) -> &'static str {
        match self {
            WeightDType::F32 => "F32",
            WeightDType::F16 => "F16",
            WeightDType::BF16 => "BF16",
            WeightDType::Q8_0 => "Q8_0",
            WeightDType::Q4_0 => "Q4_0",
        }
    }

    /// Raw little-endian bytes of this type as f32 values (exact for every type: the block formats'
    /// values are small integers times an f16 scale).
    pub fn to_f32(self, raw: &[u8]) -> Vec<f32> {
        match self {
            WeightDType::F32 => raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            WeightDType::F16 => raw.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            WeightDType::BF16 => {
                raw.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
            }
            WeightDType::Q8_0 | WeightDType::Q4_0 => {
                let mut out = Vec::with_capacity(raw.len() / self.block_bytes() * blocks::BLOCK_VALUES);
                self.dequantize_into(raw, &mut out);
                out
            }
        }
    }

    /// Appends the values of whole blocks of a quantised type to `out` (nothing for the float types).
    pub fn dequantize_into(self, raw: &[u8], out: &mut Vec<f32>) {
        match self {
            WeightDType::Q8_0 => blocks::dequantize_q8_0(raw, out),
            WeightDType::Q4_0 => blocks::dequantize_q4_0(raw, out),
            _ => {}
        }
    }

    /// A tensor of this type and `shape` as the backends take it: the byte length `raw` must have. Block
    /// types need a whole number of blocks in each row (the last dimensions after the first).
    pub fn check_bytes(self, raw_len: usize, shape: &[usize]) -> Result<()> {
        let numel: usize = shape.iter().product();
        if self.is_quantized() {
            let k: usize = shape.iter().skip(1).product();
            if shape.len() < 2 || !k.is_multiple_of(blocks::BLOCK_VALUES) {
                return Err(crate::error::Error::Backend(format!(
                    "a {} weight must be a matrix whose rows are whole blocks of {} values; shape {shape:?} is not",
                    self.name(),
                    blocks::BLOCK_VALUES
                )));
            }
        }
        match self.bytes_for(numel) {
            Some(n) if n == raw_len => Ok(()),
            Some(n) => Err(crate::error::Error::Backend(format!(
                "{} weight of shape {shape:?} needs {n} bytes, got {raw_len}",
                self.name()
            ))),
            None => {
                Err(crate::error::Error::Backend(format!("{} weight of shape {shape:?} is too large", self.name())))
            }
        }
    }
}

/// A matrix quantised to int8 per row (per output channel of a linear `[out, in]` or conv `[cout, cin·k·k]`
/// weight): `w[r, c] ≈ q[r·cols + c] · scales[r]`.
pub struct Int8Rows {
    pub q: Vec<i8>,
    pub scales: Vec<f32>,
}

impl Int8Rows {
    /// Symmetric per-row quantisation: `scale = max|row| / 127`, `q = round(w / scale)` in [−127, 127]
    /// (an all-zero row gets scale 0 and q 0). Both backends quantise through this, so they dequantise to the
    /// same values.
    pub fn quantize(values: &[f32], rows: usize) -> Int8Rows {
        let cols = values.len().checked_div(rows).unwrap_or(0);
        let mut q = Vec::with_capacity(values.len());
        let mut scales = Vec::with_capacity(rows);
        for r in 0..rows {
            let row = &values[r * cols..(r + 1) * cols];
            let scale = row.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
            scales.push(scale);
            q.extend(row.iter().map(|v| if scale == 0.0 { 0 } else { (v / scale).round().clamp(-127.0, 127.0) as i8 }));
        }
        Int8Rows { q, scales }
    }

    /// `q · scale` per element, the value the GPU kernels compute.
    pub fn dequantize(&self) -> Vec<f32> {
        let cols = if self.scales.is_empty() { 0 } else { self.q.len() / self.scales.len() };
        self.q.iter().enumerate().map(|(i, &q)| f32::from(q) * self.scales[i / cols]).collect()
    }
}

/// Pointwise activation, applied on its own or fused after a linear layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Identity,
    /// Exact GELU, 0.5·x·(1 + erf(x/√2)) (HF `gelu`).
    GeluErf,
    /// x·σ(1.702·x) (HF `quick_gelu`).
    QuickGelu,
    /// x·σ(x) (HF `silu` / `swish`), the UNet's and the MoVQ's nonlinearity.
    Silu,
}

impl Activation {
    /// Maps a Hugging Face `hidden_act` name.
    pub fn from_hf_name(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Activation::GeluErf),
            "quick_gelu" => Some(Activation::QuickGelu),
            "silu" | "swish" => Some(Activation::Silu),
            _ => None,
        }
    }
}

/// The operations models are written against. Shapes in the docs: `x` is `[m, k]`, weights follow
/// PyTorch's `nn.Linear` layout `[n, k]`.
pub trait Backend: Clone + 'static {
    type Tensor: Clone;

    /// Short name shown to users: `"cpu"` or `"webgpu"`.
    fn name(&self) -> &'static str;

    /// The same backend, but weight matrices stored in f32 are kept in f16 where the backend can compute
    /// from f16 (the GPU: half the memory, about 1e-3 relative error); the CPU keeps f32. Biases and norms
    /// (vectors) stay f32. The decoders load through this by default.
    fn with_f16_weights(&self) -> Self {
        self.clone()
    }

    /// The same backend, but weight matrices (rank ≥ 2, whatever the file stores) are quantised at load to
    /// int8 per output channel ([`Int8Rows`]): about a quarter of f32's memory, dequantised inside the
    /// matmul/conv kernels (the GPU). Vectors stay as [`Backend::with_f16_weights`]'s rules leave them.
    /// An approximation (≈ 0.4 % of each row's largest weight), for fitting a model, not for parity tests.
    fn with_int8_weights(&self) -> Self;

    /// Creates a tensor from raw little-endian weight bytes as stored in a safetensors file.
    fn upload_weight(&self, raw: &[u8], dtype: WeightDType, shape: &[usize]) -> Result<Self::Tensor>;
    /// A weight `[n, k]` that only ever is the right operand of [`Backend::linear`] / [`Backend::conv2d`],
    /// laid out however this backend's products read it fastest; the shape and values it shows are
    /// unchanged. Default: as uploaded (the GPU's kernels read `[n, k]` rows directly).
    fn layout_for_products(&self, w: Self::Tensor) -> Result<Self::Tensor> {
        Ok(w)
    }
    /// Creates a tensor from f32 values (activations, masks, inputs).
    // `self` is the backend the tensor is made on, not the value converted (like candle's
    // `Tensor::from_slice(data, shape, device)`), so the `from_*` convention's "no self" does not apply.
    #[allow(clippy::wrong_self_convention)]
    fn from_f32(&self, data: &[f32], shape: &[usize]) -> Result<Self::Tensor>;
    /// The tensor's shape.
    fn shape(&self, t: &Self::Tensor) -> Vec<usize>;
    /// Reads the values back, row-major. On the GPU this submits the recorded work.
    fn read_f32(&self, t: &Self::Tensor) -> impl Future<Output = Result<Vec<f32>>>;
    /// Bytes held by the tensor on the device (for memory reports).
    fn byte_size(&self, t: &Self::Tensor) -> usize;
    /// Waits for the work and uploads recorded so far and reports what the device refused meanwhile (out of
    /// memory while loading weights); the CPU has nothing to wait for.
    fn sync(&self) -> impl Future<Output = Result<()>> {
        std::future::ready(Ok(()))
    }
    /// The most bytes one activation may occupy: the GPU's storage-binding (and buffer) limit, since only
    /// weights are split across buffers. `None` where only memory bounds it (the CPU).
    fn max_activation_bytes(&self) -> Option<u64> {
        None
    }

    /// `a [m, k] · b [k, n]`.
    fn matmul(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;
    /// `act(x [m, k] · wᵀ + bias)` with `w [n, k]`, `bias [n]`.
    fn linear(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        bias: Option<&Self::Tensor>,
        act: Activation,
    ) -> Result<Self::Tensor>;
    /// `residual + (x · wᵀ + bias)`: a linear layer and the skip connection around it. One pass where a
    /// backend fuses the add into the product's epilogue (the GPU does, with the same f32 sum as `add`).
    fn linear_residual(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        bias: Option<&Self::Tensor>,
        residual: &Self::Tensor,
    ) -> Result<Self::Tensor> {
        self.add(residual, &self.linear(x, w, bias, Activation::Identity)?)
    }
    /// Layer norm over the last dimension with affine `gamma`, `beta` `[k]`.
    fn layer_norm(&self, x: &Self::Tensor, gamma: &Self::Tensor, beta: &Self::Tensor, eps: f64)
        -> Result<Self::Tensor>;
    /// Multi-head attention: `q [t, h·d]`, `k`, `v [s, h·d]` →  `[t, h·d]`, per head
    /// `softmax(scale · q kᵀ + bias) v` with an optional additive `bias [t, s]` shared by all heads.
    fn attention(
        &self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        heads: usize,
        scale: f32,
        bias: Option<&Self::Tensor>,
    ) -> Result<Self::Tensor>;
    /// Elementwise `a + b` (same shape).
    fn add(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;
    /// Pointwise activation.
    fn activation(&self, x: &Self::Tensor, act: Activation) -> Result<Self::Tensor>;
    /// Rows `table[ids[i]]` → `[ids.len(), cols]` (embedding lookup, row substitution).
    fn gather_rows(&self, table: &Self::Tensor, ids: &[u32]) -> Result<Self::Tensor>;
    /// Stacks matrices with equal column counts on top of each other.
    fn concat_rows(&self, parts: &[&Self::Tensor]) -> Result<Self::Tensor>;
    /// Rows `start .. start + len`.
    fn slice_rows(&self, x: &Self::Tensor, start: usize, len: usize) -> Result<Self::Tensor>;
    /// Same data, new shape (element count unchanged).
    fn reshape(&self, x: &Self::Tensor, shape: &[usize]) -> Result<Self::Tensor>;
    /// Non-overlapping `p×p` patches of a `[c, h, w]` image as rows `[(h/p)·(w/p), c·p·p]`, in the order a
    /// stride-`p` convolution visits them, each row flattened as `(channel, y, x)` like a conv weight; so a
    /// patch embedding is `linear(patches, conv_weight.reshape([out, c·p·p]))`.
    fn image_patches(&self, image: &Self::Tensor, patch: usize) -> Result<Self::Tensor>;

    // Feature maps (the decoder's UNet and MoVQ). One sample's map of `h×w` positions and `c` channels is the
    // matrix `[h·w, c]`: channels-last, row-major, the row of position (y, x) is `y·w + x`.

    /// 2-D convolution, stride 1, zero padding `kernel/2` (kernel odd: 1 or 3): `x [h·w, cin]` → `[h·w, cout]`;
    /// `weight [cout, cin·kernel·kernel]` is PyTorch's `[cout, cin, kh, kw]` flattened; `bias [cout]`.
    fn conv2d(
        &self,
        x: &Self::Tensor,
        height: usize,
        width: usize,
        weight: &Self::Tensor,
        bias: Option<&Self::Tensor>,
        kernel: usize,
    ) -> Result<Self::Tensor>;
    /// Group norm of one sample `x [positions, c]`: statistics over all positions × (c/groups) channels of a
    /// group (biased variance), then affine `gamma`, `beta [c]`.
    fn group_norm(
        &self,
        x: &Self::Tensor,
        groups: usize,
        gamma: &Self::Tensor,
        beta: &Self::Tensor,
        eps: f64,
    ) -> Result<Self::Tensor>;
    /// `act(group_norm(x))`, the resnets' `nonlinearity(norm(x))`: one pass where a backend fuses the two (the
    /// GPU does: the activation is applied to the same f32 value the unfused pair would have stored).
    fn group_norm_act(
        &self,
        x: &Self::Tensor,
        groups: usize,
        gamma: &Self::Tensor,
        beta: &Self::Tensor,
        eps: f64,
        act: Activation,
    ) -> Result<Self::Tensor> {
        let y = self.group_norm(x, groups, gamma, beta, eps)?;
        match act {
            Activation::Identity => Ok(y),
            act => self.activation(&y, act),
        }
    }
    /// 2×2 average pool, stride 2: `[h·w, c]` → `[(h/2)·(w/2), c]` (h, w even).
    fn avg_pool_2x2(&self, x: &Self::Tensor, height: usize, width: usize) -> Result<Self::Tensor>;
    /// Nearest-neighbour resize like PyTorch's `mode="nearest"`: `src = floor(dst · in / out)`:
    /// `[h·w, c]` → `[oh·ow, c]`.
    fn resize_nearest(
        &self,
        x: &Self::Tensor,
        height: usize,
        width: usize,
        out_height: usize,
        out_width: usize,
    ) -> Result<Self::Tensor>;
    /// Side-by-side concatenation of matrices with equal row counts (channel concat of feature maps).
    fn concat_cols(&self, parts: &[&Self::Tensor]) -> Result<Self::Tensor>;
    /// Elementwise `a·b` (same shape).
    fn mul(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;
    /// `x [r, c] · (1 + scale) + shift` with `scale`, `shift [1, c]` broadcast over rows (the resnets'
    /// scale-shift time conditioning).
    fn scale_shift(&self, x: &Self::Tensor, scale: &Self::Tensor, shift: &Self::Tensor) -> Result<Self::Tensor>;
}

/// Additive bias that hides a key from a query in CLIP attention. Any value below ≈ −104 makes exp()
/// underflow to exactly 0 in f32, as PyTorch's `finfo.min` does; this one stays finite when two masks add.
pub const CLIP_MASKED: f32 = -1.0e9;
