//! Benchmarks shared by the CLI (`lambda-eclipse bench`) and the browser bench page: matmul throughput at the
//! real bigG shapes and forward times of the real-size towers and prior with random weights of the real
//! configs (`real_configs/`, copied from the Hugging Face repos). Every timing includes the read-back, so
//! queued GPU work is counted.

use crate::error::Result;
use crate::models::clip::{ClipTextConfig, ClipTextModel, ClipVisionConfig, ClipVisionModel};
use crate::models::movq::{MoVq, MoVqConfig};
use crate::models::parse_config;
use crate::models::prior::{LambdaPrior, PriorConfig, PriorInputs};
use crate::models::unet::{UNet, UNetConfig};
use crate::ops::{Activation, Backend, WeightDType};
use crate::timing::now_ms;
use crate::weights::WeightStore;

pub const TEXT_ENCODER_CONFIG: &str = include_str!("real_configs/text_encoder.json");
pub const IMAGE_ENCODER_CONFIG: &str = include_str!("real_configs/image_encoder.json");
pub const PRIOR_CONFIG: &str = include_str!("real_configs/prior.json");
/// The Kandinsky 2.2 decoder's UNet and MoVQ (`kandinsky-community/kandinsky-2-2-decoder`).
pub const UNET_CONFIG: &str = include_str!("real_configs/unet.json");
pub const MOVQ_CONFIG: &str = include_str!("real_configs/movq.json");

/// The matmul shapes of bigG: (m, k, n) for `x [m, k] · wᵀ`, w `[n, k]`: the text tower's MLP in and out, the
/// vision tower's. The MLP outputs (K = 5120, 8192 into few output tiles) are where the GPU splits K.
pub const BIGG_MATMULS: [(usize, usize, usize); 4] =
    [(77, 1280, 5120), (77, 5120, 1280), (257, 1664, 8192), (257, 8192, 1664)];

/// Skinny products (m ≤ 8: the GPU's GEMV kernel): one pooled embedding through bigG's MLP width, and eight.
pub const SKINNY_MATMULS: [(usize, usize, usize); 2] = [(1, 1280, 5120), (8, 1280, 5120)];

fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Median of the timings of `iters` calls of `f` after one warm-up call.
async fn median_ms<F, Fut>(iters: usize, mut f: F) -> Result<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    f().await?;
    let mut times = Vec::with_capacity(iters.max(1));
    for _ in 0..iters.max(1) {
        let t = now_ms();
        f().await?;
        times.push(now_ms() - t);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(times[times.len() / 2])
}

/// Median milliseconds of one call of `op`, timed in batches: `op` is recorded `reps` times before the
/// result of the last is read back, `reps` chosen (1..=64) so that a batch takes about 50 ms. On a GPU one
/// read-back costs a submit and a map (tens to hundreds of µs), more than a small GEMM on a large card, so a
/// figure per single call would measure the round trip; the CPU computes synchronously and gets `reps` = 1.
async fn per_call_ms<B, F>(be: &B, iters: usize, op: F) -> Result<f64>
where
    B: Backend,
    F: Fn() -> Result<B::Tensor>,
{
    let batch = |reps: usize| {
        let op = &op;
        async move {
            let mut last = op()?;
            for _ in 1..reps {
                last = op()?;
            }
            be.read_f32(&last).await.map(|_| ())
        }
    };
    let once = median_ms(1, || batch(1)).await?;
    let reps = ((50.0 / once.max(1e-3)).floor() as usize).clamp(1, 64);
    Ok(median_ms(iters, || batch(reps)).await? / reps as f64)
}

/// GFLOP/s of `linear` at `(m, k, n)` with weights stored as `dtype`.
pub async fn matmul_gflops<B: Backend>(
    be: &B,
    (m, k, n): (usize, usize, usize),
    dtype: WeightDType,
    iters: usize,
) -> Result<f64> {
    let x = be.from_f32(&pseudo_random(m * k, 1), &[m, k])?;
    let store = WeightStore::random(be.clone(), dtype, 2);
    // Laid out as a model's `Linear` lays out its weight.
    let w = store.root().lay_out_for_products("w", store.root().get("w", &[n, k])?)?;
    let ms = per_call_ms(be, iters, || be.linear(&x, &w, None, Activation::Identity)).await?;
    Ok(2.0 * (m * k * n) as f64 / (ms * 1e6))
}

/// (queries, keys, heads, head dim).
pub type AttentionShape = (usize, usize, usize, usize);

/// Attention shapes of the real models: (queries, keys, heads, head dim). The UNet's self-attention takes its
/// 10 image-context tokens as extra keys (SimpleCrossAttn's added keys); 2304 positions is its first attention
/// level at 768 px.
pub const ATTENTION_SHAPES: [(&str, AttentionShape); 4] = [
    ("bigG text", (77, 77, 20, 64)),
    ("bigG vision", (257, 257, 16, 104)),
    ("UNet 512 px", (1024, 1034, 12, 64)),
    ("UNet 768 px", (2304, 2314, 12, 64)),
];

/// GFLOP/s of `attention` (no bias) at `(t, s, heads, d)`: 4·t·s·width FLOPs (scores and P·V).
pub async fn attention_gflops<B: Backend>(
    be: &B,
    (t, s, heads, d): (usize, usize, usize, usize),
    iters: usize,
) -> Result<f64> {
    let width = heads * d;
    let q = be.from_f32(&pseudo_random(t * width, 11), &[t, width])?;
    let k = be.from_f32(&pseudo_random(s * width, 12), &[s, width])?;
    let v = be.from_f32(&pseudo_random(s * width, 13), &[s, width])?;
    let scale = 1.0 / (d as f32).sqrt();
    let ms = per_call_ms(be, iters, || be.attention(&q, &k, &v, heads, scale, None)).await?;
    Ok(4.0 * (t * s * width) as f64 / (ms * 1e6))
}

/// Which real-size model to time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Model {
    TextTower,
    VisionTower,
    Prior,
}

impl Model {
    pub fn label(self) -> &'static str {
        match self {
            Model::TextTower => "bigG text tower (77 tokens)",
            Model::VisionTower => "bigG vision tower (1 image)",
            Model::Prior => "λ prior (81 tokens)",
        }
    }
}

/// Median forward milliseconds of a real-size model with random weights stored as `dtype`.
pub async fn forward_ms<B: Backend>(be: &B, model: Model, dtype: WeightDType, iters: usize) -> Result<f64> {
    let store = WeightStore::random(be.clone(), dtype, 3);
    let vb = store.root();
    match model {
        Model::TextTower => {
            let cfg: ClipTextConfig = parse_config("real text_encoder config", TEXT_ENCODER_CONFIG)?;
            let m = ClipTextModel::new(&vb, &cfg)?;
            let ids: Vec<u32> = (0..77u32)
                .map(|i| {
                    if i == 0 {
                        49406
                    } else if i < 10 {
                        320 + i
                    } else {
                        49407
                    }
                })
                .collect();
            let mask: Vec<u32> = (0..77).map(|i| u32::from(i < 11)).collect();
            median_ms(iters, || async {
                let out = m.forward(be, &ids, Some(&mask))?;
                be.read_f32(&out.text_embeds).await.map(|_| ())
            })
            .await
        }
        Model::VisionTower => {
            let cfg: ClipVisionConfig = parse_config("real image_encoder config", IMAGE_ENCODER_CONFIG)?;
            let m = ClipVisionModel::new(be, &vb, &cfg)?;
            let pixels = pseudo_random(3 * cfg.image_size * cfg.image_size, 4);
            median_ms(iters, || async {
                let out = m.forward(be, &pixels)?;
                be.read_f32(&out).await.map(|_| ())
            })
            .await
        }
        Model::Prior => {
            let cfg: PriorConfig = parse_config("real prior config", PRIOR_CONFIG)?;
            let m = LambdaPrior::new(be, &vb, &cfg)?;
            let d = cfg.embedding_dim;
            let hidden = be.from_f32(&pseudo_random(cfg.num_embeddings * d, 5), &[cfg.num_embeddings, d])?;
            let one = |seed| be.from_f32(&pseudo_random(d, seed), &[1, d]);
            let (control, text, noise) = (one(6)?, one(7)?, one(8)?);
            let mask: Vec<u32> = (0..cfg.num_embeddings).map(|i| u32::from(i < 12)).collect();
            median_ms(iters, || async {
                let inputs = PriorInputs {
                    encoder_hidden_states: &hidden,
                    attention_mask: &mask,
                    control_embeds: &control,
                    text_embeds: &text,
                    noise: &noise,
                };
                let out = m.forward(be, &inputs)?;
                be.read_f32(&out).await.map(|_| ())
            })
            .await
        }
    }
}

/// Which part of the real-size decoder to time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecoderPart {
    /// One denoising step with classifier-free guidance: two UNet forwards (negative, positive).
    UnetStep,
    /// One MoVQ decode of the final latents.
    MovqDecode,
}

impl DecoderPart {
    pub fn label(self, size: usize) -> String {
        match self {
            DecoderPart::UnetStep => format!("UNet step, 2 forwards ({size} px)"),
            DecoderPart::MovqDecode => format!("MoVQ decode ({size} px)"),
        }
    }
}

/// Timing of a decoder part: median milliseconds, the FLOPs of one call (for FLOP/s) and the bytes its
/// weights occupy on the backend (f16, int8, … as the backend's weight rules keep them).
#[derive(Clone, Copy, Debug)]
pub struct DecoderTiming {
    pub ms: f64,
    pub flops: f64,
    pub weight_bytes: usize,
}

/// Median milliseconds of a real-size decoder part at `size`×`size` pixels (a multiple of 64) with random
/// weights stored as `dtype`, and its FLOP count.
pub async fn decoder_ms<B: Backend>(
    be: &B,
    part: DecoderPart,
    size: usize,
    dtype: WeightDType,
    iters: usize,
) -> Result<DecoderTiming> {
    if size == 0 || !size.is_multiple_of(64) {
        return Err(crate::Error::Input(format!("bench size {size} must be a positive multiple of 64")));
    }
    let store = WeightStore::random(be.clone(), dtype, 5);
    let vb = store.root();
    let latent = size / 8;
    let n = latent * latent;
    match part {
        DecoderPart::UnetStep => {
            let cfg: UNetConfig = parse_config("real unet config", UNET_CONFIG)?;
            cfg.validate("real unet config")?;
            let m = UNet::new(be, &vb, &cfg)?;
            let d = cfg.image_embed_dim();
            let x = be.from_f32(&pseudo_random(n * cfg.in_channels, 9), &[n, cfg.in_channels])?;
            let (pos, neg) =
                (be.from_f32(&pseudo_random(d, 10), &[1, d])?, be.from_f32(&pseudo_random(d, 11), &[1, d])?);
            let ms = median_ms(iters, || async {
                let a = m.forward(be, &x, latent, latent, 981.0, &neg)?;
                let b = m.forward(be, &x, latent, latent, 981.0, &pos)?;
                be.read_f32(&a).await?;
                be.read_f32(&b).await.map(|_| ())
            })
            .await?;
            // Two UNet forwards a step (classifier-free guidance); FLOPs from the forward run on shapes.
            Ok(DecoderTiming {
                ms,
                flops: 2.0 * cfg.forward_cost(latent, latent)?.flops,
                weight_bytes: store.device_bytes(be),
            })
        }
        DecoderPart::MovqDecode => {
            let cfg: MoVqConfig = parse_config("real movq config", MOVQ_CONFIG)?;
            cfg.validate("real movq config")?;
            let m = MoVq::new(be, &vb, &cfg)?;
            let c = cfg.vq_dim();
            let x = be.from_f32(&pseudo_random(n * c, 12), &[n, c])?;
            let ms = median_ms(iters, || async {
                let y = m.decode(be, &x, latent, latent)?;
                be.read_f32(&y).await.map(|_| ())
            })
            .await?;
            Ok(DecoderTiming {
                ms,
                flops: cfg.decode_cost(latent, latent)?.flops,
                weight_bytes: store.device_bytes(be),
            })
        }
    }
}
