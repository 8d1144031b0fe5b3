//! Local decoding: the Kandinsky 2.2 decoder (UNet + MoVQ + sampler) turning an image embedding into a picture,
//! as diffusers' `KandinskyV22Pipeline` does. One API for the CLI (`decode-local`), the wasm bindings and tests.
//!
//! Model folder (the `kandinsky-2-2-decoder` layout): `unet/` (config.json + diffusion_pytorch_model
//! safetensors), `movq/` (same), `scheduler/scheduler_config.json`.
//!
//! Latents are kept on the host in PyTorch's layout `[1, C, h, w]` (so injected noise and goldens compare
//! directly); the UNet and MoVQ see them channels-last. The sampler runs on the host in f32, op by op as
//! diffusers does; each step reads the UNet's output back once (which is also where a progress preview and a
//! cancellation check happen).

use super::noise::GaussianStream;
use super::schedulers::{Scheduler, SchedulerConfig, SchedulerKind};
use super::{read_config, Progress};
use crate::error::{Error, Result};
use crate::models::conv::{nchw_to_rows, rows_to_nchw};
use crate::models::movq::{is_decoder_tensor, MoVq, MoVqConfig};
use crate::models::unet::{UNet, UNetConfig};
use crate::ops::Backend;
use crate::timing::{now_ms, yield_to_event_loop};
use crate::weights::{load_component_weights, load_component_weights_where, ModelFiles};
use std::sync::atomic::{AtomicBool, Ordering};

pub const UNET_CONFIG: &str = "unet/config.json";
pub const MOVQ_CONFIG: &str = "movq/config.json";
pub const SCHEDULER_CONFIG: &str = "scheduler/scheduler_config.json";
/// Largest image side accepted (pixels).
pub const MAX_SIDE: usize = 4096;

/// Where the decoder's random numbers come from.
#[derive(Clone, Debug)]
pub enum DecoderNoise {
    /// One stream from [`gaussian_noise`]`(seed, ·)`: its first `C·h·w` values are the initial latents
    /// `[1, C, h, w]`; for DDPM the next `C·h·w` values are step 1's noise, then step 2's, and so on.
    Seed(u64),
    /// Given tensors (diffusers' own draws, e.g. from the goldens): `initial_latents [1, C, h, w]` and, for
    /// DDPM, `step_noise [steps, 1, C, h, w]` (flattened, row-major).
    Explicit { initial_latents: Vec<f32>, step_noise: Option<Vec<f32>> },
}

#[derive(Clone, Debug)]
pub struct DecodeRequest {
    /// `[D]`: the image embedding (λ-ECLIPSE prior output).
    pub image_embeds: Vec<f32>,
    /// `[D]`: the unconditional embedding (the zero-image embedding); used when `guidance > 1`.
    pub negative_image_embeds: Vec<f32>,
    pub noise: DecoderNoise,
    pub steps: usize,
    /// Classifier-free guidance scale; ≤ 1 runs the positive embedding alone.
    pub guidance: f32,
    pub width: usize,
    pub height: usize,
    /// `None`: the class named in `scheduler_config.json`.
    pub scheduler: Option<SchedulerKind>,
    /// Keep the latents after every step in [`DecodedImage::step_latents`] (tests, debugging).
    pub keep_step_latents: bool,
}

impl DecodeRequest {
    /// The demo's defaults: 50 steps, guidance 4, 512×512, the config's scheduler.
    pub fn new(image_embeds: Vec<f32>, negative_image_embeds: Vec<f32>, noise: DecoderNoise) -> Self {
        DecodeRequest {
            image_embeds,
            negative_image_embeds,
            noise,
            steps: 50,
            guidance: 4.0,
            width: 512,
            height: 512,
            scheduler: None,
            keep_step_latents: false,
        }
    }
}

/// A cheap look at the latents during sampling: their first three channels as RGB at latent resolution, each
/// mapped linearly from [−3, 3] to 0..=255.
#[derive(Clone, Debug)]
pub struct LatentPreview {
    pub width: usize,
    pub height: usize,
    /// `[height, width, 3]`.
    pub rgb: Vec<u8>,
}

#[derive(Clone, Debug)]
pub struct DecodedImage {
    pub width: usize,
    pub height: usize,
    pub latent_width: usize,
    pub latent_height: usize,
    pub latent_channels: usize,
    pub scheduler: SchedulerKind,
    pub timesteps: Vec<i64>,
    /// Final latents `[1, C, h, w]`.
    pub latents: Vec<f32>,
    /// Latents after each step (only with [`DecodeRequest::keep_step_latents`]).
    pub step_latents: Vec<Vec<f32>>,
    /// The MoVQ's raw output `[1, 3, H, W]`.
    pub decoded: Vec<f32>,
    /// `clamp(decoded·0.5 + 0.5, 0, 1)` as `[H, W, 3]`.
    pub image: Vec<f32>,
    /// `round(image·255)` (half to even, as numpy) as `[H, W, 3]`.
    pub rgb: Vec<u8>,
    /// (stage, milliseconds) in order.
    pub timings: Vec<(String, f64)>,
}

pub struct DecoderEngine<B: Backend> {
    pub backend: B,
    pub unet: UNet<B>,
    pub movq: MoVq<B>,
    pub configs: DecoderConfigs,
}

async fn require<F: ModelFiles>(files: &F, path: &str, folder: &str) -> Result<()> {
    if files.exists(path).await {
        Ok(())
    } else {
        Err(Error::io(
            path,
            format!("not found: the decoder model folder needs {folder}/ (unet/, movq/ and scheduler/)"),
        ))
    }
}

/// The common multiple of `a` and `b`.
fn lcm(a: usize, b: usize) -> usize {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    a / gcd(a, b) * b
}

/// The three configs of a decoder folder, read and checked before any weight: enough to validate a request.
#[derive(Clone, Debug)]
pub struct DecoderConfigs {
    pub unet: UNetConfig,
    pub movq: MoVqConfig,
    pub scheduler: SchedulerConfig,
    /// The sampler named in `scheduler_config.json`.
    pub default_scheduler: SchedulerKind,
}

/// A request checked against the configs: sizes, the schedule and the initial noise.
pub struct Prepared {
    pub latent_height: usize,
    pub latent_width: usize,
    pub channels: usize,
    pub scheduler: Scheduler,
    /// `[1, C, h, w]`, already scaled by `init_noise_sigma`.
    pub latents: Vec<f32>,
    /// DDPM: each step's noise `[1, C, h, w]`.
    pub step_noise: Option<StepNoise>,
    pub guided: bool,
}

/// DDPM's per-step noise: given (`[steps, 1, C, h, w]`), or drawn from the seeded stream when the step needs
/// it (a whole run's noise at once would be steps × the latents).
pub enum StepNoise {
    Given(Vec<f32>),
    Seeded(GaussianStream),
}

impl StepNoise {
    /// Step `i`'s `n` values.
    fn for_step(&mut self, i: usize, n: usize) -> Vec<f32> {
        match self {
            StepNoise::Given(all) => all[i * n..(i + 1) * n].to_vec(),
            StepNoise::Seeded(stream) => stream.take(n),
        }
    }
}

impl DecoderConfigs {
    /// Reads and validates `unet/config.json`, `movq/config.json` and `scheduler/scheduler_config.json`.
    pub async fn read<F: ModelFiles>(files: &F) -> Result<Self> {
        require(files, UNET_CONFIG, "unet").await?;
        require(files, MOVQ_CONFIG, "movq").await?;
        require(files, SCHEDULER_CONFIG, "scheduler").await?;
        let unet: UNetConfig = read_config(files, UNET_CONFIG).await?;
        unet.validate(UNET_CONFIG)?;
        let movq: MoVqConfig = read_config(files, MOVQ_CONFIG).await?;
        movq.validate(MOVQ_CONFIG)?;
        let scheduler = SchedulerConfig::parse(&files.read_text(SCHEDULER_CONFIG).await?, SCHEDULER_CONFIG)?;
        let default_scheduler = scheduler.default_kind(SCHEDULER_CONFIG)?;
        // A bad scheduler config fails here, not at the first decode.
        Scheduler::new(default_scheduler, &scheduler, SCHEDULER_CONFIG)?;
        if unet.in_channels != movq.vq_dim() || unet.out_channels < unet.in_channels {
            return Err(Error::config(
                UNET_CONFIG,
                format!(
                    "the UNet denoises {} channels into {} but the MoVQ decodes {}-channel latents",
                    unet.in_channels,
                    unet.out_channels,
                    movq.vq_dim()
                ),
            ));
        }
        Ok(DecoderConfigs { unet, movq, scheduler, default_scheduler })
    }

    /// Width of the image embeddings the UNet takes (1280 for the real decoder).
    pub fn embedding_dim(&self) -> usize {
        self.unet.image_embed_dim()
    }

    /// Image pixels per latent along a side (8 for the real MoVQ).
    pub fn latent_scale(&self) -> usize {
        self.movq.scale_factor()
    }

    /// Image sides must be multiples of this: the MoVQ's factor squared (diffusers rounds latents up to it,
    /// which would change the size) and what the UNet's down-sampling needs.
    pub fn size_multiple(&self) -> usize {
        let f = self.latent_scale();
        lcm(f * f, f * self.unet.size_multiple())
    }

    /// Bytes of the largest activation of a `width×height` decode (f32) and which model holds it: both models'
    /// real forwards run on shapes only ([`UNetConfig::forward_cost`], [`MoVqConfig::decode_cost`]).
    pub fn largest_activation(&self, width: usize, height: usize) -> Result<(u64, &'static str)> {
        let (lh, lw) = self.latent_size(height, width)?;
        let unet = self.unet.forward_cost(lh, lw)?.largest_activation_bytes;
        let movq = self.movq.decode_cost(lh, lw)?.largest_activation_bytes;
        Ok(if unet > movq { (unet, "UNet") } else { (movq, "MoVQ") })
    }

    /// Latent `(height, width)` of an image size, as diffusers' `downscale_height_and_width`.
    pub fn latent_size(&self, height: usize, width: usize) -> Result<(usize, usize)> {
        let m = self.size_multiple();
        for (what, v) in [("width", width), ("height", height)] {
            if v == 0 || v % m != 0 || v > MAX_SIDE {
                return Err(Error::Input(format!(
                    "{what} {v} must be a positive multiple of {m} (the latent factor {} squared) up to {MAX_SIDE}",
                    self.latent_scale()
                )));
            }
        }
        let f = self.latent_scale();
        Ok((height / f, width / f))
    }

    fn check_embeds(&self, name: &str, v: &[f32]) -> Result<()> {
        let d = self.embedding_dim();
        if v.len() != d {
            return Err(Error::Input(format!(
                "{name} has {} values but this decoder's UNet takes embeddings of {d} (encoder_hid_dim)",
                v.len()
            )));
        }
        if v.iter().any(|x| !x.is_finite()) {
            return Err(Error::Input(format!("{name} contains NaN or infinity")));
        }
        Ok(())
    }

    /// Checks a request (sizes, embeddings, sampler, steps, noise) and draws or takes its noise.
    pub fn prepare(&self, req: &DecodeRequest) -> Result<Prepared> {
        let (lh, lw) = self.latent_size(req.height, req.width)?;
        let c = self.unet.in_channels;
        let n = c * lh * lw;
        if !req.guidance.is_finite() {
            return Err(Error::Input(format!("guidance must be a finite number, got {}", req.guidance)));
        }
        let guided = req.guidance > 1.0;
        self.check_embeds("image_embeds", &req.image_embeds)?;
        if guided {
            self.check_embeds("negative_image_embeds", &req.negative_image_embeds)?;
        }
        let kind = req.scheduler.unwrap_or(self.default_scheduler);
        let mut scheduler = Scheduler::new(kind, &self.scheduler, SCHEDULER_CONFIG)?;
        scheduler.set_timesteps(req.steps)?;
        let total = scheduler.timesteps().len();
        let wants_noise = kind == SchedulerKind::Ddpm;
        let (mut latents, step_noise) = match &req.noise {
            DecoderNoise::Seed(seed) => {
                let mut stream = GaussianStream::new(*seed);
                (stream.take(n), wants_noise.then_some(StepNoise::Seeded(stream)))
            }
            DecoderNoise::Explicit { initial_latents, step_noise } => {
                if initial_latents.len() != n {
                    return Err(Error::Input(format!(
                        "initial_latents has {} values; a {}×{} image needs [1, {c}, {lh}, {lw}] = {n}",
                        initial_latents.len(),
                        req.width,
                        req.height
                    )));
                }
                let step_noise = match step_noise {
                    Some(s) if wants_noise && s.len() != n * total => {
                        return Err(Error::Input(format!(
                        "step_noise has {} values; DDPM with {total} steps needs [{total}, 1, {c}, {lh}, {lw}] = {}",
                        s.len(),
                        n * total
                    )))
                    }
                    None if wants_noise => {
                        return Err(Error::Input(
                            "DDPM needs step_noise (one N(0,1) sample per step) with explicit initial latents".into(),
                        ))
                    }
                    s => s.clone(),
                };
                if initial_latents.iter().chain(step_noise.iter().flatten()).any(|x| !x.is_finite()) {
                    return Err(Error::Input("the noise contains NaN or infinity".into()));
                }
                (initial_latents.clone(), step_noise.map(StepNoise::Given))
            }
        };
        let sigma = scheduler.init_noise_sigma();
        for v in &mut latents {
            *v *= sigma;
        }
        Ok(Prepared { latent_height: lh, latent_width: lw, channels: c, scheduler, latents, step_noise, guided })
    }
}

impl<B: Backend> DecoderEngine<B> {
    /// Loads `unet/`, `movq/` (decoder half only) and `scheduler/` and checks that they fit together.
    pub async fn load<F: ModelFiles>(backend: B, files: &F, progress: Progress<'_>) -> Result<Self> {
        let configs = DecoderConfigs::read(files).await?;
        Self::load_with(backend, files, configs, progress).await
    }

    /// [`DecoderEngine::load`] with configs already read (e.g. to validate a request before the weights).
    pub async fn load_with<F: ModelFiles>(
        backend: B,
        files: &F,
        configs: DecoderConfigs,
        progress: Progress<'_>,
    ) -> Result<Self> {
        let store =
            load_component_weights(&backend, files, "unet", "diffusion_pytorch_model", |d, t| progress("unet", d, t))
                .await?;
        let unet = UNet::new(&backend, &store.root(), &configs.unet)?;
        store.finish(&[])?;
        drop(store);
        let store = load_component_weights_where(
            &backend,
            files,
            "movq",
            "diffusion_pytorch_model",
            is_decoder_tensor,
            |d, t| progress("movq", d, t),
        )
        .await?;
        let movq = MoVq::new(&backend, &store.root(), &configs.movq)?;
        store.finish(&[])?;
        drop(store);
        // Uploads are only recorded: an out-of-memory device says so here, not at the first step.
        backend.sync().await.map_err(|e| Error::Backend(format!("loading the decoder: {e}")))?;
        Ok(DecoderEngine { backend, unet, movq, configs })
    }

    /// The backend the decoder computes on.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Image sides must be multiples of this (64 for the real decoder).
    pub fn size_multiple(&self) -> usize {
        self.configs.size_multiple()
    }

    /// The sampler `scheduler_config.json` names (used when a request names none).
    pub fn default_scheduler(&self) -> SchedulerKind {
        self.configs.default_scheduler
    }

    /// Width of the image embeddings the UNet takes (1280 for the real decoder).
    pub fn embedding_dim(&self) -> usize {
        self.configs.embedding_dim()
    }

    /// Image pixels per latent along a side (8 for the real MoVQ).
    pub fn latent_scale(&self) -> usize {
        self.configs.latent_scale()
    }

    /// Bytes of the largest activation of a `width×height` decode (f32) and which model holds it
    /// ([`DecoderConfigs::largest_activation`]).
    pub fn largest_activation(&self, width: usize, height: usize) -> Result<(u64, &'static str)> {
        self.configs.largest_activation(width, height)
    }

    /// Whether a `width×height` decode fits the backend's per-activation limit (the GPU's storage-binding
    /// size: the MoVQ's last level at 512 px is 256 MiB, above WebGPU's default 128 MiB). Checked by
    /// [`DecoderEngine::decode`] before the first step, so a size that cannot fit fails at once, with the
    /// largest square size that does.
    pub fn check_fits(&self, width: usize, height: usize) -> Result<()> {
        let Some(limit) = self.backend.max_activation_bytes() else { return Ok(()) };
        let (need, model) = self.largest_activation(width, height)?;
        if need <= limit {
            return Ok(());
        }
        let m = self.configs.size_multiple();
        let fits = |s: usize| self.configs.largest_activation(s, s).is_ok_and(|(b, _)| b <= limit);
        let largest_square = (1..=width.max(height) / m).map(|k| k * m).take_while(|&s| fits(s)).last();
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        let advice = match largest_square {
            Some(s) => format!("the largest square image that fits is {s}×{s}"),
            None => "no image size fits".into(),
        };
        Err(Error::Input(format!(
            "a {width}×{height} image needs a {:.0} MiB GPU buffer (the {model}'s largest feature map), above this \
             device's {:.0} MiB per-buffer limit: {advice}",
            mib(need),
            mib(limit)
        )))
    }

    /// Runs the sampler and the MoVQ. `on_step(step, total, preview)` is called after every denoising step
    /// (1-based); `cancel` is checked before each step and before the MoVQ ([`Error::Cancelled`]). Between
    /// steps the browser's event loop runs once ([`yield_to_event_loop`]), so a cancel request can arrive.
    pub async fn decode(
        &self,
        req: &DecodeRequest,
        on_step: &mut dyn FnMut(usize, usize, &LatentPreview),
        cancel: &AtomicBool,
    ) -> Result<DecodedImage> {
        let be = &self.backend;
        // The size first: a size that cannot fit is refused before its noise is drawn.
        self.check_fits(req.width, req.height)?;
        let Prepared {
            latent_height: lh,
            latent_width: lw,
            channels: c,
            mut scheduler,
            mut latents,
            mut step_noise,
            guided,
        } = self.configs.prepare(req)?;
        let n = c * lh * lw;
        let kind = scheduler.kind();
        let timesteps = scheduler.timesteps().to_vec();
        let total = timesteps.len();

        let d = self.embedding_dim();
        let positive = be.from_f32(&req.image_embeds, &[1, d])?;
        let negative = if guided { Some(be.from_f32(&req.negative_image_embeds, &[1, d])?) } else { None };
        let out_c = self.unet.config.out_channels;
        let mut timings = Vec::with_capacity(total + 1);
        let mut step_latents = Vec::new();
        for (i, &t) in timesteps.iter().enumerate() {
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::Cancelled);
            }
            let t0 = now_ms();
            let x = be.from_f32(&nchw_to_rows(&latents, c, lh, lw), &[lh * lw, c])?;
            let eps_pos = self.unet.forward(be, &x, lh, lw, t as f32, &positive)?;
            let eps_neg = match &negative {
                Some(neg) => Some(self.unet.forward(be, &x, lh, lw, t as f32, neg)?),
                None => None,
            };
            let pos = rows_to_nchw(&be.read_f32(&eps_pos).await?, out_c, lh, lw, c);
            let eps: Vec<f32> = match eps_neg {
                Some(e) => {
                    let neg = rows_to_nchw(&be.read_f32(&e).await?, out_c, lh, lw, c);
                    // ε_uncond + g·(ε_cond − ε_uncond), op by op as PyTorch.
                    neg.iter().zip(&pos).map(|(&u, &p)| u + req.guidance * (p - u)).collect()
                }
                None => pos,
            };
            let noise = match (&mut step_noise, scheduler.needs_noise()) {
                (Some(s), true) => Some(s.for_step(i, n)),
                _ => None,
            };
            latents = scheduler.step(&eps, &latents, noise.as_deref())?;
            // A NaN never recovers: stop at the step that made it instead of decoding a black image.
            super::ensure_finite(&format!("decoder step {}/{total} (t={t}): the latents", i + 1), &latents)?;
            if req.keep_step_latents {
                step_latents.push(latents.clone());
            }
            timings.push((format!("step {}/{total} (t={t})", i + 1), now_ms() - t0));
            on_step(i + 1, total, &preview(&latents, c, lh, lw));
            // In the browser, lets a `cancel` that arrived during the step reach `cancel` before the next one.
            yield_to_event_loop().await;
        }
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        let t0 = now_ms();
        let Decoded { height: h, width: w, decoded, image, rgb } = self.decode_latents(&latents, lh, lw).await?;
        timings.push(("movq decode".into(), now_ms() - t0));
        Ok(DecodedImage {
            width: w,
            height: h,
            latent_width: lw,
            latent_height: lh,
            latent_channels: c,
            scheduler: kind,
            timesteps,
            latents,
            step_latents,
            decoded,
            image,
            rgb,
            timings,
        })
    }
}

/// The MoVQ stage on its own: raw output `[1, 3, H, W]`, image `[H, W, 3]` in 0..1, 8-bit image.
#[derive(Clone, Debug)]
pub struct Decoded {
    pub height: usize,
    pub width: usize,
    pub decoded: Vec<f32>,
    pub image: Vec<f32>,
    pub rgb: Vec<u8>,
}

impl<B: Backend> DecoderEngine<B> {
    /// Decodes latents `[1, C, h, w]` with the MoVQ: `image = clamp(x·0.5 + 0.5, 0, 1)`, `rgb = round(image·255)`.
    pub async fn decode_latents(&self, latents: &[f32], lh: usize, lw: usize) -> Result<Decoded> {
        let be = &self.backend;
        let c = self.movq.config.vq_dim();
        if latents.len() != c * lh * lw {
            return Err(Error::Input(format!("latents have {} values, not [1, {c}, {lh}, {lw}]", latents.len())));
        }
        let x = be.from_f32(&nchw_to_rows(latents, c, lh, lw), &[lh * lw, c])?;
        let out = self.movq.decode(be, &x, lh, lw)?;
        let rows = be.read_f32(&out).await?;
        // clamp() keeps a NaN and `as u8` turns it into 0: check before either.
        super::ensure_finite("MoVQ decode", &rows)?;
        let f = self.latent_scale();
        let (h, w, oc) = (lh * f, lw * f, self.movq.config.out_channels);
        if rows.len() != h * w * oc {
            return Err(Error::Backend(format!("the MoVQ returned {} values for a {w}×{h}×{oc} image", rows.len())));
        }
        let decoded = rows_to_nchw(&rows, oc, h, w, oc);
        // PyTorch: image·0.5 + 0.5, clamp; numpy: (·255).round() (half to even).
        let image: Vec<f32> = rows.iter().map(|&v| (v * 0.5 + 0.5).clamp(0.0, 1.0)).collect();
        let rgb = image.iter().map(|&v| (v * 255.0).round_ties_even() as u8).collect();
        Ok(Decoded { height: h, width: w, decoded, image, rgb })
    }
}

/// The latents' first three channels (channel 0 repeated when there are fewer) as RGB, [−3, 3] → 0..=255.
pub fn preview(latents: &[f32], c: usize, h: usize, w: usize) -> LatentPreview {
    let mut rgb = Vec::with_capacity(h * w * 3);
    for p in 0..h * w {
        for k in 0..3 {
            let ch = if k < c { k } else { 0 };
            let v = latents[ch * h * w + p];
            rgb.push((((v + 3.0) / 6.0).clamp(0.0, 1.0) * 255.0).round() as u8);
        }
    }
    LatentPreview { width: w, height: h, rgb }
}
