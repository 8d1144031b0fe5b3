//! `lambda-eclipse`: the native command-line tool (batch embeddings, parity checks, benchmarks).

use clap::{Parser, Subcommand, ValueEnum};
use lambda_eclipse::error::{Error, Result};
use lambda_eclipse::ops::cpu::CpuBackend;
use lambda_eclipse::ops::gpu::{GpuBackend, GpuOptions};
use lambda_eclipse::ops::{AnyBackend, Backend, BackendChoice, WeightStorage};
use lambda_eclipse::pipeline::lambda::Noise;
use lambda_eclipse::pipeline::{self, interpolate, LambdaEngine, PriorRequest, Subject};
use lambda_eclipse::pipeline::{DecodeRequest, DecoderConfigs, DecoderEngine, DecoderNoise, SchedulerKind};
use lambda_eclipse::tensor_file::{self, to_bytes, OutTensor};
use lambda_eclipse::weights::DirFiles;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(name = "lambda-eclipse", version, about = "λ-ECLIPSE embeddings: CLIP towers, the λ prior, decoding")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BenchItem {
    Matmul,
    /// Attention at the towers' and the UNet's shapes.
    Attention,
    Text,
    Vision,
    Prior,
    /// One decoder UNet step (2 forwards, classifier-free guidance).
    Unet,
    /// One MoVQ decode.
    Movq,
}

#[derive(Clone, Copy, ValueEnum)]
enum DTypeChoice {
    F32,
    F16,
    /// f32 in the file, quantised at load to int8 per output channel (`Backend::with_int8_weights`).
    Int8,
    /// Matrices in ggml's Q8_0 blocks, as a `quantize --type q8_0` folder holds them (the CPU multiplies the
    /// blocks; the table adds the CPU in f32, timed in the same run, and the ratio).
    #[value(name = "q8_0")]
    Q8_0,
    /// Matrices in ggml's Q4_0 blocks (as q8_0).
    #[value(name = "q4_0")]
    Q4_0,
}

/// The bench's split-K setting (`GpuOptions::split_k`).
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SplitKChoice {
    /// By shape and adapter (the default rule).
    Auto,
    /// Every tiled product whose K holds two K-tiles.
    On,
    /// Never.
    Off,
    /// Matmul rows timed twice in the same run: split forced on (the gpu column) and off (a line below).
    Compare,
}

#[derive(Subcommand)]
enum Command {
    /// Tokenize a prompt and run the CLIP text tower.
    EmbedText {
        /// Model folder in the Hugging Face layout (tokenizer/, text_encoder/, ...).
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        prompt: String,
        /// Output safetensors: input_ids, attention_mask, last_hidden_state, text_embeds.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "auto")]
        backend: BackendChoice,
    },
    /// Preprocess images and run the CLIP vision tower.
    EmbedImage {
        #[arg(long)]
        model: PathBuf,
        /// Output safetensors: pixel_values [N,3,S,S], image_embeds [N,D].
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "auto")]
        backend: BackendChoice,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// The whole λ-ECLIPSE pipeline: prompt + subjects (+ edge control) + noise → image embedding.
    Prior {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        prompt: String,
        /// KEYWORD=IMAGE; the keyword may contain spaces ("franz kafka=kafka.jpg"). Repeatable, in order.
        #[arg(long = "subject", value_name = "KEYWORD=IMAGE")]
        subjects: Vec<String>,
        /// Edge-control image (its Canny edges condition the prior).
        #[arg(long)]
        control: Option<PathBuf>,
        /// Seed of ε (portable generator, see ARCHITECTURE.md). Default 0.
        #[arg(long, conflicts_with = "noise")]
        seed: Option<u64>,
        /// Safetensors file whose tensor `noise` is ε.
        #[arg(long)]
        noise: Option<PathBuf>,
        #[arg(long, default_value_t = 100.0)]
        canny_low: f64,
        #[arg(long, default_value_t = 200.0)]
        canny_high: f64,
        /// Output safetensors: image_embeds, negative_image_embeds, encoder_hidden_states, noise.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "auto")]
        backend: BackendChoice,
        /// Print the time of each stage to stderr.
        #[arg(long)]
        timings: bool,
    },
    /// Matmul GFLOP/s at the bigG shapes and forward ms of the real-size towers, prior and decoder parts (random
    /// weights of the real configs), per backend, printed as a table.
    Bench {
        /// What to time (repeatable): matmul, attention, text, vision, prior, unet, movq. Default: all.
        #[arg(long = "only", value_enum)]
        only: Vec<BenchItem>,
        /// Image side in pixels for the decoder items (unet, movq): a multiple of 64.
        #[arg(long, default_value_t = 512)]
        size: usize,
        /// Timed iterations per item (median reported, after one warm-up).
        #[arg(long, default_value_t = 3)]
        iters: usize,
        /// Weight storage type (int8: f32 weights quantised per output channel at load; the CPU computes from
        /// the same values in f32).
        #[arg(long, value_enum, default_value = "f32")]
        dtype: DTypeChoice,
        /// GPU: force the GEMM's 64×64 or 128×128 output tiling (default: by output size).
        #[arg(long)]
        gemm_tile: Option<u32>,
        /// GPU: read f16 weights through the packed-u32 path even where the adapter has shader-f16.
        #[arg(long)]
        packed_f16: bool,
        /// GPU: GEMM loads one element at a time (no four-at-a-time loads).
        #[arg(long)]
        scalar_loads: bool,
        /// GPU: request the adapter's own limits (bindings above WebGPU's default 128 MiB), as a page could.
        #[arg(long)]
        adapter_limits: bool,
        /// GPU: attention through the tiled GEMM and a softmax instead of the fused flash kernel.
        #[arg(long)]
        blocked_attention: bool,
        /// GPU: GEMM tiles in f16 arithmetic (needs shader-f16; f32 totals per K-tile).
        #[arg(long)]
        f16_math: bool,
        /// GPU: split-K for the tiled GEMM (slices of K in separate workgroups, then a reduce).
        #[arg(long, value_enum, default_value = "auto")]
        split_k: SplitKChoice,
        /// GPU: reduce in the norms, softmax and GEMV through workgroup memory even where the adapter has
        /// subgroup operations.
        #[arg(long)]
        no_subgroups: bool,
        /// GPU: after each row, where its time went per kernel variant (each dispatch submitted and waited for
        /// on its own, so the row's own figure is slower; the shares are what to read).
        #[arg(long)]
        profile_kernels: bool,
        /// Time the GPU only (the CPU column stays empty): for kernel work, where the CPU's minutes are noise.
        #[arg(long)]
        gpu_only: bool,
    },
    /// Canny edge map as cv2.imread(GRAYSCALE) + cv2.Canny(img, low, high).
    Canny {
        image: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 100.0)]
        low: f64,
        #[arg(long, default_value_t = 200.0)]
        high: f64,
    },
    /// Decode an image embedding (written by `prior`) to an image on a GPU decoder endpoint (see server/).
    Decode {
        /// Base URL of the endpoint, e.g. http://127.0.0.1:8765 (POST /v1/decode is appended).
        #[arg(long)]
        endpoint: String,
        /// Bearer token, when the endpoint requires one (default: $LAMBDA_DECODER_TOKEN).
        #[arg(long)]
        token: Option<String>,
        /// Safetensors with `image_embeds` [1,D] and, if present, `negative_image_embeds` (the zero-image
        /// embedding, the decoder's negative).
        #[arg(long)]
        embeds: PathBuf,
        /// Output image; its extension picks the format (.png, .webp, .jpg/.jpeg).
        #[arg(long)]
        out: PathBuf,
        /// Seed of the decoder's noise (default: chosen by the server and printed).
        #[arg(long)]
        seed: Option<u64>,
        /// Denoising steps (server default 50).
        #[arg(long)]
        steps: Option<u32>,
        /// Classifier-free guidance scale (server default 4.0).
        #[arg(long)]
        guidance: Option<f32>,
        /// Image width in pixels, a multiple of 64 (server default 512).
        #[arg(long)]
        width: Option<u32>,
        /// Image height in pixels, a multiple of 64 (server default 512).
        #[arg(long)]
        height: Option<u32>,
        /// Seconds to wait for the reply (queue wait + decode).
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Decode an image embedding (written by `prior`) to an image here, with the Kandinsky 2.2 decoder (UNet +
    /// MoVQ) on this machine's GPU or CPU.
    DecodeLocal {
        /// Decoder folder with unet/, movq/ and scheduler/ (kandinsky-2-2-decoder layout).
        #[arg(long)]
        model: PathBuf,
        /// Safetensors with `image_embeds` [1, D] and `negative_image_embeds` [1, D] (as `prior` writes them).
        #[arg(long)]
        embeds: PathBuf,
        /// Output: .png/.jpg/.webp (the picture) or .safetensors (`latents` [1,C,h,w] and `image` [H,W,3], f32).
        #[arg(long)]
        out: PathBuf,
        /// Denoising steps.
        #[arg(long, default_value_t = 50)]
        steps: usize,
        /// Classifier-free guidance scale (≤ 1: the positive embedding alone).
        #[arg(long, default_value_t = 4.0)]
        guidance: f32,
        /// Seed of the latents and of DDPM's per-step noise (portable generator). Default 0.
        #[arg(long, conflicts_with = "noise")]
        seed: Option<u64>,
        /// Sampler: ddpm, ddim or dpmpp (default: the class in scheduler/scheduler_config.json).
        #[arg(long)]
        scheduler: Option<String>,
        /// Image width in pixels (default 512, or what --noise implies).
        #[arg(long)]
        width: Option<usize>,
        /// Image height in pixels (default 512, or what --noise implies).
        #[arg(long)]
        height: Option<usize>,
        /// Safetensors with `initial_latents` [1,C,h,w] and, for DDPM, `step_noise` [steps,1,C,h,w].
        #[arg(long)]
        noise: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "auto")]
        backend: BackendChoice,
        /// On the GPU keep f32 weights in f32 (default: f16 on the device, half the memory, ~1e-3 relative).
        #[arg(long, conflicts_with = "int8_weights")]
        f32_weights: bool,
        /// Quantise weight matrices to int8 per output channel at load (a quarter of f32's memory, the real
        /// UNet in 1.26 GB; an approximation, the picture changes slightly). The CPU computes from the same
        /// values but keeps them in f32.
        #[arg(long)]
        int8_weights: bool,
    },
    /// Writes a copy of a model folder (the λ model, or the decoder's unet/ and movq/) whose weight matrices
    /// are in a ggml block type, each component's weights in one GGUF file; configs, tokenizer and
    /// processor files are copied. Prints each file's size before and after and the weights' error, and
    /// for a λ model the embedding of a fixed prompt and photo from both folders (cosine, CPU).
    Quantize {
        /// The original model folder (Hugging Face layout, safetensors).
        #[arg(long)]
        model: PathBuf,
        /// The folder to write (must not exist, or be empty).
        #[arg(long)]
        out: PathBuf,
        #[arg(long = "type", value_enum)]
        quant_type: QuantChoice,
        /// Also list the copy in `variants.json` at the model's root (created, or updated: other entries
        /// are kept), with the original: its URL relative to the model, download size and memory on the
        /// browser's CPU. The app, the widget and `load({ model, variant })` offer what it lists.
        #[arg(long)]
        list: bool,
    },
    /// Bilinear grid of embeddings between four corners (tensor `image_embeds` of four files, e.g. written
    /// by `prior`): writes `grid` [(n+1)², D] and `negative_image_embeds` from the first corner if present.
    Interpolate {
        #[arg(long)]
        top_left: PathBuf,
        #[arg(long)]
        top_right: PathBuf,
        #[arg(long)]
        bottom_left: PathBuf,
        #[arg(long)]
        bottom_right: PathBuf,
        #[arg(long, default_value_t = 4)]
        steps: usize,
        /// Output: .safetensors, or .json ({"rows": n+1, "cols": n+1, "embeddings": [[...], ...]}).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum QuantChoice {
    /// 8-bit blocks of 32 (34 bytes a block: 1.06 bytes a weight, about 0.4 % of a block's largest value).
    #[value(name = "q8_0")]
    Q8_0,
    /// 4-bit blocks of 32 (18 bytes a block: 0.56 bytes a weight, about 7 % of a block's largest value).
    #[value(name = "q4_0")]
    Q4_0,
    /// 4 bits where the λ model bears them, 8 where it does not: the text tower's transformer layers and
    /// the prior in Q8_0, the rest (the vision tower: most of the model) in Q4_0. Embeddings stay within
    /// 0.99 cosine of the original where all-Q4_0 does not (see `quantize::Recipe::Q4Mixed`).
    #[value(name = "q4_m")]
    Q4M,
}

/// Splits `KEYWORD=IMAGE` at the last `=` (keywords may hold spaces; paths rarely hold `=`).
fn parse_subject(spec: &str) -> Result<(String, PathBuf)> {
    match spec.rsplit_once('=') {
        Some((k, p)) if !k.trim().is_empty() && !p.is_empty() => Ok((k.trim().to_string(), PathBuf::from(p))),
        _ => Err(Error::Input(format!("--subject \"{spec}\": expected KEYWORD=IMAGE"))),
    }
}

fn read_embeds(path: &Path, name: &str) -> Result<Vec<f32>> {
    let bytes = read_file(path)?;
    Ok(tensor_file::read_f32(&bytes, name, &path.display().to_string())?.1)
}

/// The backend a command runs on (`auto`: the GPU when there is a usable one, else the CPU; `gpu`: the GPU or
/// a clear error). `adapter_limits`: open the GPU with the adapter's own buffer limits (the decoder: the MoVQ
/// at 512 px needs 256 MiB activations, above WebGPU's default 128 MiB).
fn select_backend(choice: BackendChoice, adapter_limits: bool) -> Result<AnyBackend> {
    let options = GpuOptions { adapter_limits, ..Default::default() };
    Ok(pollster::block_on(choice.open(options))?.backend)
}

fn no_progress() -> impl FnMut(&str, u64, u64) {
    |_: &str, _: u64, _: u64| {}
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path.display(), e))
}

fn write_tensors(path: &Path, tensors: BTreeMap<String, OutTensor>) -> Result<()> {
    write_output(path, &to_bytes(&tensors)?)
}

/// Writes an output file whole or not at all: the bytes go to a temporary file in the same folder, which is
/// flushed to disk and then renamed over `path`. A failed write (disk full, no permission, the file-size limit)
/// leaves the previous file as it was and removes the temporary one. Every file the CLI writes goes through here.
fn write_output(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let fail = |e: &dyn std::fmt::Display| {
        Error::io(path.display(), format!("cannot write the output: {e} (an existing file there is unchanged)"))
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    // As `std::fs::write` would create it: 0o666 less the umask (tempfile's own default is 0o600).
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    // On any error below, dropping `tmp` deletes the temporary file.
    let mut tmp = builder.tempfile_in(dir).map_err(|e| fail(&e))?;
    tmp.write_all(bytes).and_then(|()| tmp.as_file().sync_all()).map_err(|e| fail(&e))?;
    tmp.persist(path).map_err(|e| fail(&e.error))?;
    Ok(())
}

/// `image` encoded in the format `format`, in memory (then written with [`write_output`]).
fn encode_image<P, C>(image: &image::ImageBuffer<P, C>, format: image::ImageFormat, out: &Path) -> Result<Vec<u8>>
where
    P: image::PixelWithColorType,
    [P::Subpixel]: image::EncodableLayout,
    C: std::ops::Deref<Target = [P::Subpixel]>,
{
    let mut bytes = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut bytes, format)
        .map_err(|e| Error::io(out.display(), format!("cannot encode the image: {e}")))?;
    Ok(bytes.into_inner())
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::EmbedText { model, prompt, out, backend } => {
            embed_text(select_backend(backend, false)?, &model, &prompt, &out)
        }
        Command::EmbedImage { model, out, backend, images } => {
            embed_image(select_backend(backend, false)?, &model, &out, &images)
        }
        Command::Prior {
            model,
            prompt,
            subjects,
            control,
            seed,
            noise,
            canny_low,
            canny_high,
            out,
            backend,
            timings,
        } => {
            let noise = match noise {
                Some(path) => Noise::Explicit(read_embeds(&path, "noise")?),
                None => Noise::Seed(seed.unwrap_or(0)),
            };
            let mut req = PriorRequest::new(prompt, noise);
            req.canny_low = canny_low;
            req.canny_high = canny_high;
            for spec in &subjects {
                let (keyword, path) = parse_subject(spec)?;
                req.subjects.push(Subject { keyword, image: read_file(&path)? });
            }
            req.control = control.as_deref().map(read_file).transpose()?;
            prior(select_backend(backend, false)?, &model, &req, &out, timings)
        }
        Command::Bench {
            only,
            iters,
            dtype,
            size,
            gemm_tile,
            packed_f16,
            scalar_loads,
            adapter_limits,
            blocked_attention,
            f16_math,
            split_k,
            no_subgroups,
            profile_kernels,
            gpu_only,
        } => {
            let choices = GpuChoices {
                gemm_tile,
                packed_f16,
                scalar_loads,
                adapter_limits,
                blocked_attention,
                f16_math,
                split_k,
                no_subgroups,
                profile_kernels,
            };
            run_bench(&only, iters, dtype, size, choices, gpu_only)
        }
        Command::Canny { image, out, low, high } => {
            lambda_eclipse::pipeline::lambda::check_canny_thresholds(low, high)?;
            let gray = lambda_eclipse::image::canny::grayscale_like_opencv(&read_file(&image)?)
                .map_err(|e| Error::Input(format!("{}: {e}", image.display())))?;
            let edges = lambda_eclipse::image::canny::canny(&gray, low, high)?;
            let format = image::ImageFormat::from_path(&out).map_err(|_| {
                Error::Input(format!(
                    "--out {}: the extension must name an image format (.png, .jpg, .webp, .bmp, .gif)",
                    out.display()
                ))
            })?;
            write_output(&out, &encode_image(&edges, format, &out)?)
        }
        Command::Decode { endpoint, token, embeds, out, seed, steps, guidance, width, height, timeout } => {
            use lambda_eclipse::decoder_client::{DecodeRequest, DecoderClient, ImageFormat, DEFAULT_CONNECT_TIMEOUT};
            let ext = out.extension().and_then(|e| e.to_str()).unwrap_or("");
            let format = ImageFormat::from_extension(ext).ok_or_else(|| {
                Error::Input(format!("--out {}: the extension must be .png, .webp, .jpg or .jpeg", out.display()))
            })?;
            let bytes = read_file(&embeds)?;
            let name = embeds.display().to_string();
            let (shape, image_embeds) = tensor_file::read_f32(&bytes, "image_embeds", &name)?;
            if shape.len() > 1 && shape[..shape.len() - 1].iter().product::<usize>() != 1 {
                return Err(Error::Input(format!(
                    "{name}: `image_embeds` has shape {shape:?}; decode takes one embedding [1, D]"
                )));
            }
            // The zero-image embedding `prior` writes; older or hand-made files may lack it (the server then
            // uses its own default, see server/README.md).
            let negative = match tensor_file::read_f32(&bytes, "negative_image_embeds", &name) {
                Ok((_, v)) => Some(v),
                Err(_) => None,
            };
            let mut req = DecodeRequest::new(image_embeds);
            req.negative_image_embeds = negative;
            req.seed = seed;
            req.num_inference_steps = steps;
            req.guidance_scale = guidance;
            req.width = width;
            req.height = height;
            req.format = format;
            let timeout = std::time::Duration::from_secs(timeout);
            // From the environment too, so the token stays out of shell history and `ps`.
            let token = token.or_else(|| std::env::var("LAMBDA_DECODER_TOKEN").ok());
            let client = DecoderClient::with_timeouts(&endpoint, token, DEFAULT_CONNECT_TIMEOUT, timeout);
            let decoded = client.decode(&req)?;
            write_output(&out, &decoded.bytes)?;
            let seed = decoded.seed.map_or("?".to_string(), |s| s.to_string());
            let ms = decoded.decode_ms.map_or("?".to_string(), |m| format!("{m:.0}"));
            println!(
                "{}: {} bytes of {}, seed {seed}, decoded in {ms} ms",
                out.display(),
                decoded.bytes.len(),
                decoded.content_type
            );
            Ok(())
        }
        Command::DecodeLocal {
            model,
            embeds,
            out,
            steps,
            guidance,
            seed,
            scheduler,
            width,
            height,
            noise,
            backend,
            f32_weights,
            int8_weights,
        } => {
            let format = OutputFormat::of(&out)?;
            let scheduler = scheduler.map(|s| s.parse::<SchedulerKind>()).transpose()?;
            let bytes = read_file(&embeds)?;
            let name = embeds.display().to_string();
            let one_row = |tensor: &str| -> Result<Vec<f32>> {
                let (shape, v) = tensor_file::read_f32(&bytes, tensor, &name)?;
                if shape.len() > 1 && shape[..shape.len() - 1].iter().product::<usize>() != 1 {
                    return Err(Error::Input(format!(
                        "{name}: `{tensor}` has shape {shape:?}; decode-local takes one embedding [1, D]"
                    )));
                }
                Ok(v)
            };
            let image_embeds = one_row("image_embeds")?;
            let negative = if guidance > 1.0 {
                one_row("negative_image_embeds")
                    .map_err(|e| Error::Input(format!("{e} (needed for guidance {guidance} > 1)")))?
            } else {
                Vec::new()
            };
            let noise = match &noise {
                None => NoiseArg::Seed(seed.unwrap_or(0)),
                Some(path) => {
                    let bytes = read_file(path)?;
                    let name = path.display().to_string();
                    let (shape, initial) = tensor_file::read_f32(&bytes, "initial_latents", &name)?;
                    let step_noise = tensor_file::read_f32(&bytes, "step_noise", &name).ok().map(|(_, v)| v);
                    NoiseArg::File { shape, initial, step_noise }
                }
            };
            let args = DecodeArgs { image_embeds, negative, noise, steps, guidance, width, height, scheduler, format };
            let weights = if int8_weights {
                WeightStorage::Int8
            } else if f32_weights {
                WeightStorage::AsStored
            } else {
                WeightStorage::F16
            };
            decode_local(weights.apply(select_backend(backend, true)?), &model, args, &out)
        }
        Command::Quantize { model, out, quant_type, list } => quantize(&model, &out, quant_type, list),
        Command::Interpolate { top_left, top_right, bottom_left, bottom_right, steps, out } => {
            let corners = [&top_left, &top_right, &bottom_left, &bottom_right].map(|p| read_embeds(p, "image_embeds"));
            let [a, b, c, d] = corners;
            let grid = interpolate::bilinear_grid(&a?, &b?, &c?, &d?, steps)?;
            if out.extension().is_some_and(|e| e == "json") {
                let json = serde_json::json!({"rows": steps + 1, "cols": steps + 1, "embeddings": grid});
                write_output(&out, json.to_string().as_bytes())
            } else {
                let dim = grid[0].len();
                let mut t = BTreeMap::new();
                t.insert("grid".into(), OutTensor::F32(vec![grid.len(), dim], grid.concat()));
                if let Ok(neg) = read_embeds(&top_left, "negative_image_embeds") {
                    t.insert("negative_image_embeds".into(), OutTensor::F32(vec![1, neg.len()], neg));
                }
                write_tensors(&out, t)
            }
        }
    }
}

/// What `decode-local` writes.
enum OutputFormat {
    Image(image::ImageFormat),
    Tensors,
}

impl OutputFormat {
    fn of(out: &Path) -> Result<Self> {
        match out.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("png") => Ok(OutputFormat::Image(image::ImageFormat::Png)),
            Some("jpg" | "jpeg") => Ok(OutputFormat::Image(image::ImageFormat::Jpeg)),
            Some("webp") => Ok(OutputFormat::Image(image::ImageFormat::WebP)),
            Some("safetensors") => Ok(OutputFormat::Tensors),
            _ => Err(Error::Input(format!(
                "--out {}: the extension must be .png, .jpg, .jpeg, .webp or .safetensors",
                out.display()
            ))),
        }
    }
}

enum NoiseArg {
    Seed(u64),
    File { shape: Vec<usize>, initial: Vec<f32>, step_noise: Option<Vec<f32>> },
}

struct DecodeArgs {
    image_embeds: Vec<f32>,
    negative: Vec<f32>,
    noise: NoiseArg,
    steps: usize,
    guidance: f32,
    width: Option<usize>,
    height: Option<usize>,
    scheduler: Option<SchedulerKind>,
    format: OutputFormat,
}

fn decode_local<B: Backend>(be: B, model: &Path, args: DecodeArgs, out: &Path) -> Result<()> {
    let t0 = lambda_eclipse::timing::now_ms();
    let files = DirFiles::new(model);
    // Configs first: a bad request fails with one line before gigabytes of weights are read.
    let configs = pollster::block_on(DecoderConfigs::read(&files))?;
    let f = configs.latent_scale();
    // Without --width/--height, the size the noise file implies (its latents × the MoVQ factor), else 512.
    let implied = match &args.noise {
        NoiseArg::File { shape, .. } if shape.len() == 4 => Some((shape[2] * f, shape[3] * f)),
        NoiseArg::File { shape, .. } => {
            return Err(Error::Input(format!("--noise: `initial_latents` has shape {shape:?}, expected [1, C, h, w]")))
        }
        NoiseArg::Seed(_) => None,
    };
    let height = args.height.or(implied.map(|s| s.0)).unwrap_or(512);
    let width = args.width.or(implied.map(|s| s.1)).unwrap_or(512);
    let noise = match args.noise {
        NoiseArg::Seed(s) => DecoderNoise::Seed(s),
        NoiseArg::File { initial, step_noise, .. } => DecoderNoise::Explicit { initial_latents: initial, step_noise },
    };
    let mut req = DecodeRequest::new(args.image_embeds, args.negative, noise);
    req.steps = args.steps;
    req.guidance = args.guidance;
    req.width = width;
    req.height = height;
    req.scheduler = args.scheduler;
    configs.prepare(&req)?;
    let mut last_report = 0.0;
    let mut progress = |component: &str, done: u64, total: u64| {
        let now = lambda_eclipse::timing::now_ms();
        if done == total || now - last_report > 1000.0 {
            last_report = now;
            eprintln!("loading {component}: {:.0} of {:.0} MB", done as f64 / 1e6, total as f64 / 1e6);
        }
    };
    let engine = pollster::block_on(DecoderEngine::load_with(be, &files, configs, &mut progress))?;
    eprintln!("loaded in {:.0} ms on {}", lambda_eclipse::timing::now_ms() - t0, engine.backend.name());
    let mut last = lambda_eclipse::timing::now_ms();
    let mut on_step = |step: usize, total: usize, _: &lambda_eclipse::pipeline::LatentPreview| {
        let now = lambda_eclipse::timing::now_ms();
        eprintln!("step {step}/{total}: {:.0} ms", now - last);
        last = now;
    };
    let r = pollster::block_on(engine.decode(&req, &mut on_step, &std::sync::atomic::AtomicBool::new(false)))?;
    if let Some((_, ms)) = r.timings.last() {
        eprintln!(
            "movq decode: {ms:.0} ms; {} steps of {} in {:.1} s",
            r.timesteps.len(),
            r.scheduler,
            (lambda_eclipse::timing::now_ms() - t0) / 1000.0
        );
    }
    match args.format {
        OutputFormat::Tensors => {
            let mut t = BTreeMap::new();
            t.insert(
                "latents".into(),
                OutTensor::F32(vec![1, r.latent_channels, r.latent_height, r.latent_width], r.latents),
            );
            t.insert("image".into(), OutTensor::F32(vec![r.height, r.width, 3], r.image));
            write_tensors(out, t)
        }
        OutputFormat::Image(format) => {
            let img = image::RgbImage::from_raw(r.width as u32, r.height as u32, r.rgb)
                .ok_or_else(|| Error::Input("decoded image has the wrong size".into()))?;
            write_output(out, &encode_image(&img, format, out)?)
        }
    }
}

fn embed_text<B: Backend>(be: B, model: &Path, prompt: &str, out: &Path) -> Result<()> {
    let files = DirFiles::new(model);
    let tok = pollster::block_on(pipeline::load_tokenizer(&files))?;
    let text = pollster::block_on(pipeline::load_text_encoder(&be, &files, &mut no_progress()))?;
    let emb = pollster::block_on(pipeline::embed_text(&be, &tok, &text, prompt))?;
    if emb.encoded.truncated {
        eprintln!("warning: the prompt is longer than {} tokens; its end was dropped", tok.max_length);
    }
    let seq = emb.encoded.input_ids.len();
    let ids = |v: &[u32]| OutTensor::I64(vec![1, seq], v.iter().map(|&x| x as i64).collect());
    let mut t = BTreeMap::new();
    t.insert("input_ids".into(), ids(&emb.encoded.input_ids));
    t.insert("attention_mask".into(), ids(&emb.encoded.attention_mask));
    t.insert("last_hidden_state".into(), OutTensor::F32(vec![1, seq, emb.hidden_size], emb.last_hidden_state));
    t.insert("text_embeds".into(), OutTensor::F32(vec![1, emb.text_embeds.len()], emb.text_embeds));
    write_tensors(out, t)
}

fn embed_image<B: Backend>(be: B, model: &Path, out: &Path, images: &[PathBuf]) -> Result<()> {
    let files = DirFiles::new(model);
    let processor = pollster::block_on(pipeline::load_image_processor(&files))?;
    let vision = pollster::block_on(pipeline::load_image_encoder(&be, &files, &mut no_progress()))?;
    pipeline::check_processor_fits(&processor, vision.config.image_size)?;
    let (mut pixels, mut embeds) = (Vec::new(), Vec::new());
    for path in images {
        let bytes = read_file(path)?;
        let pv = pipeline::pixel_values_from_bytes(&bytes, &processor)
            .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
        embeds.extend(pollster::block_on(pipeline::embed_pixels(&be, &vision, &pv))?);
        pixels.extend(pv);
    }
    let (n, s, d) = (images.len(), vision.config.image_size, vision.config.projection_dim);
    let mut t = BTreeMap::new();
    t.insert("pixel_values".into(), OutTensor::F32(vec![n, vision.config.num_channels, s, s], pixels));
    t.insert("image_embeds".into(), OutTensor::F32(vec![n, d], embeds));
    write_tensors(out, t)
}

fn prior<B: Backend>(be: B, model: &Path, req: &PriorRequest, out: &Path, timings: bool) -> Result<()> {
    let engine = pollster::block_on(LambdaEngine::load(be, &DirFiles::new(model), &mut no_progress()))?;
    let r = pollster::block_on(engine.run(req))?;
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    if timings {
        eprintln!("timing: backend {}", engine.backend.name());
        for (stage, ms) in &r.timings {
            eprintln!("timing: {stage}: {ms:.2} ms");
        }
    }
    let d = r.image_embeds.len();
    let seq = r.input_ids.len();
    let mut t = BTreeMap::new();
    t.insert("image_embeds".into(), OutTensor::F32(vec![1, d], r.image_embeds));
    t.insert("negative_image_embeds".into(), OutTensor::F32(vec![1, d], r.negative_image_embeds));
    t.insert(
        "encoder_hidden_states".into(),
        OutTensor::F32(vec![1, seq, r.encoder_hidden_states.len() / seq], r.encoder_hidden_states),
    );
    t.insert("noise".into(), OutTensor::F32(vec![1, d], r.noise));
    write_tensors(out, t)
}

/// Times one bench item on a backend: GFLOP/s for a matmul shape, ms for a model (and the FLOPs of one call
/// when they are counted).
/// The row's value (GF/s or ms) and, for decoder parts, their FLOPs and weight bytes.
fn bench_item<B: Backend>(
    be: &B,
    item: &BenchRow,
    dtype: lambda_eclipse::ops::WeightDType,
    iters: usize,
) -> Result<(f64, Option<lambda_eclipse::bench::DecoderTiming>)> {
    use lambda_eclipse::bench;
    match item {
        BenchRow::Matmul(shape) => Ok((pollster::block_on(bench::matmul_gflops(be, *shape, dtype, iters))?, None)),
        BenchRow::Attention(_, shape) => Ok((pollster::block_on(bench::attention_gflops(be, *shape, iters))?, None)),
        BenchRow::Model(model) => Ok((pollster::block_on(bench::forward_ms(be, *model, dtype, iters))?, None)),
        BenchRow::Decoder(part, size) => {
            let t = pollster::block_on(bench::decoder_ms(be, *part, *size, dtype, iters))?;
            Ok((t.ms, Some(t)))
        }
    }
}

enum BenchRow {
    Matmul((usize, usize, usize)),
    Attention(&'static str, lambda_eclipse::bench::AttentionShape),
    Model(lambda_eclipse::bench::Model),
    Decoder(lambda_eclipse::bench::DecoderPart, usize),
}

/// The bench's GPU variations (see `GpuOptions`).
struct GpuChoices {
    gemm_tile: Option<u32>,
    packed_f16: bool,
    scalar_loads: bool,
    adapter_limits: bool,
    blocked_attention: bool,
    f16_math: bool,
    split_k: SplitKChoice,
    no_subgroups: bool,
    profile_kernels: bool,
}

fn run_bench(
    only: &[BenchItem],
    iters: usize,
    dtype: DTypeChoice,
    size: usize,
    choices: GpuChoices,
    gpu_only: bool,
) -> Result<()> {
    let GpuChoices {
        gemm_tile,
        packed_f16,
        scalar_loads,
        adapter_limits,
        blocked_attention,
        f16_math,
        split_k,
        no_subgroups,
        profile_kernels,
    } = choices;
    use lambda_eclipse::bench::{self, DecoderPart, Model};
    use lambda_eclipse::ops::WeightDType;
    let want = |item| only.is_empty() || only.contains(&item);
    // int8: random f32 weights, quantised by the backends as they load them.
    let int8 = matches!(dtype, DTypeChoice::Int8);
    let dtype = match dtype {
        DTypeChoice::F32 | DTypeChoice::Int8 => WeightDType::F32,
        DTypeChoice::F16 => WeightDType::F16,
        DTypeChoice::Q8_0 => WeightDType::Q8_0,
        DTypeChoice::Q4_0 => WeightDType::Q4_0,
    };
    // Block types: the CPU in f32 is timed beside them, row by row (the machine's speed drifts).
    let baseline = dtype.is_quantized();
    let mut rows = Vec::new();
    if want(BenchItem::Matmul) {
        rows.extend(bench::BIGG_MATMULS.map(BenchRow::Matmul));
        rows.extend(bench::SKINNY_MATMULS.map(BenchRow::Matmul));
    }
    if want(BenchItem::Attention) {
        rows.extend(bench::ATTENTION_SHAPES.map(|(what, shape)| BenchRow::Attention(what, shape)));
    }
    for (item, model) in
        [(BenchItem::Text, Model::TextTower), (BenchItem::Vision, Model::VisionTower), (BenchItem::Prior, Model::Prior)]
    {
        if want(item) {
            rows.push(BenchRow::Model(model));
        }
    }
    for (item, part) in [(BenchItem::Unet, DecoderPart::UnetStep), (BenchItem::Movq, DecoderPart::MovqDecode)] {
        if want(item) {
            rows.push(BenchRow::Decoder(part, size));
        }
    }
    let storage = if int8 { WeightStorage::Int8 } else { WeightStorage::AsStored };
    let cpu = storage.apply(CpuBackend::new());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let options = GpuOptions {
        gemm_tile,
        use_shader_f16: !packed_f16,
        vec4_loads: !scalar_loads,
        adapter_limits,
        blocked_attention,
        f16_math,
        split_k: match split_k {
            SplitKChoice::Auto => None,
            SplitKChoice::On | SplitKChoice::Compare => Some(true),
            SplitKChoice::Off => Some(false),
        },
        use_subgroups: !no_subgroups,
        profile_kernels,
        ..Default::default()
    };
    // A build without the `gpu` feature gets the stand-in's "built without the gpu feature" here.
    let mut profiled = None;
    let (gpu, gpu_name) = match pollster::block_on(GpuBackend::with_options(options)) {
        Ok(g) => {
            profiled = profile_kernels.then(|| g.clone());
            let name = format!(
                "{} (shader-f16 {}, subgroups {}, GEMM tile {}, split-K {}, {} math, {} loads, {} attention{})",
                g.adapter_description(),
                if g.has_shader_f16() { "on" } else { "off" },
                g.subgroup_sizes().map_or("off".to_string(), |(lo, hi)| format!("{lo}–{hi}")),
                gemm_tile.map_or("auto".to_string(), |t| t.to_string()),
                match split_k {
                    SplitKChoice::Auto => "auto",
                    SplitKChoice::On => "on",
                    SplitKChoice::Off => "off",
                    SplitKChoice::Compare => "on (and off below each matmul)",
                },
                if g.has_f16_math() { "f16" } else { "f32" },
                if scalar_loads { "scalar" } else { "vec4" },
                if blocked_attention { "blocked" } else { "flash" },
                if adapter_limits { ", adapter limits" } else { "" }
            ) + if profile_kernels { " | profiling: each dispatch waited for" } else { "" };
            (Some(storage.apply(g)), name)
        }
        Err(e) => (None, format!("none ({e})")),
    };
    // `--split-k compare`: a second device with split-K off times each matmul again in this run.
    let unsplit = match (&gpu, split_k) {
        (Some(_), SplitKChoice::Compare) => {
            let off = GpuOptions { split_k: Some(false), ..options };
            Some(storage.apply(pollster::block_on(GpuBackend::with_options(off))?))
        }
        _ => None,
    };
    let weights = if int8 { "F32 quantised to int8".to_string() } else { format!("{dtype:?}") };
    let cpu_name =
        if gpu_only { "not timed (--gpu-only)".to_string() } else { format!("candle-core, {threads} threads") };
    println!("cpu: {cpu_name} | gpu: {gpu_name} | weights {weights} | median of {iters} after a warm-up");
    // The GPU's FMA throughput, measured now: every kernel does its arithmetic in f32, so "% peak" is of the
    // f32 figure; the f16 one shows what f16 arithmetic could reach.
    let peak = match &gpu {
        Some(g) => {
            let f32_peak = pollster::block_on(g.fma_peak_gflops(false))?;
            let f16_peak = pollster::block_on(g.fma_peak_gflops(true))?;
            let f16_text = f16_peak.map_or("— (no shader-f16)".to_string(), |p| format!("{p:.0} GF/s"));
            println!("gpu FMA peak, measured: f32 {:.0} GF/s, f16 {f16_text}", f32_peak.unwrap_or(0.0));
            f32_peak
        }
        None => None,
    };
    if let Some(p) = &profiled {
        p.take_kernel_profile(); // not the peak's dispatches in the first row's lines
    }
    let of_peak = |gflops: Option<f64>| match (gflops, peak) {
        (Some(g), Some(p)) if p > 0.0 => format!("{:.1} %", 100.0 * g / p),
        _ => "—".to_string(),
    };
    print!("{:<34} {:>16} {:>16} {:>9} {:>8}", "benchmark", "cpu", "gpu", "gpu/cpu", "% peak");
    if baseline {
        print!(" {:>16} {:>12}", "cpu f32", format!("{dtype:?}/f32"));
    }
    println!();
    for row in &rows {
        let (label, unit) = match row {
            BenchRow::Matmul((m, k, n)) => (format!("linear [{m}×{k}]·[{k}×{n}]"), "GF/s"),
            BenchRow::Attention(what, (t, s, h, d)) => (format!("attention {what} {t}×{s}, {h}×{d}"), "GF/s"),
            BenchRow::Model(model) => (model.label().to_string(), "ms"),
            BenchRow::Decoder(part, size) => (part.label(*size), "ms"),
        };
        let cpu_result = if gpu_only { None } else { Some(bench_item(&cpu, row, dtype, iters)?) };
        let c = cpu_result.map(|r| r.0);
        // A GPU failure (e.g. an op without a kernel yet) leaves the GPU cell empty and says why.
        let gpu_result = gpu.as_ref().and_then(|g| match bench_item(g, row, dtype, iters) {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("gpu: {label}: {e}");
                None
            }
        });
        let g = gpu_result.map(|r| r.0);
        let profile = profiled.as_ref().map(|p| p.take_kernel_profile());
        // A ratio > 1 means the GPU is better: throughput ratio for GF/s, time ratio cpu/gpu for ms.
        let ratio = c.zip(g).map(|(c, g)| if unit == "ms" { c / g } else { g / c });
        // Two significant digits below 10 (lavapipe's GF/s), one decimal above.
        let cell = |v: Option<f64>| {
            v.map_or("—".to_string(), |v| if v < 10.0 { format!("{v:.2} {unit}") } else { format!("{v:.1} {unit}") })
        };
        print!(
            "{label:<34} {:>16} {:>16} {:>9} {:>8}",
            cell(c),
            cell(g),
            ratio.map_or("—".to_string(), |r| format!("{r:.2}×")),
            if unit == "GF/s" { of_peak(g) } else { String::new() }
        );
        if let (true, Some(c)) = (baseline, c) {
            let (f, _) = bench_item(&cpu, row, WeightDType::F32, iters)?;
            // > 1: the block type is faster than f32 on the CPU.
            let speedup = if unit == "ms" { f / c } else { c / f };
            print!(" {:>16} {:>12}", cell(Some(f)), format!("{speedup:.2}×"));
        }
        println!();
        if let (BenchRow::Matmul(_), Some(off), Some(on)) = (row, &unsplit, g) {
            let (off, _) = bench_item(off, row, dtype, iters)?;
            println!(
                "{:<34} {:>16} {:>16} {:>9} {:>8}",
                "  split-K off (on/off)",
                "",
                cell(Some(off)),
                format!("{:.2}×", on / off),
                of_peak(Some(off))
            );
        }
        let part = cpu_result.and_then(|r| r.1).or(gpu_result.and_then(|r| r.1));
        if let Some(part) = part {
            let f = part.flops;
            let rate = |ms: Option<f64>| ms.map(|ms| f / (ms * 1e6));
            let text = |r: Option<f64>| r.map_or("—".to_string(), |r| format!("{r:.1} GF/s"));
            println!(
                "{:<34} {:>16} {:>16} {:>9} {:>8}",
                format!("  ({:.1} GFLOP per call)", f / 1e9),
                text(rate(c)),
                text(rate(g)),
                "",
                of_peak(rate(g))
            );
            let gb = |b: usize| format!("{:.3} GB", b as f64 / 1e9);
            let bytes = |r: Option<(f64, Option<lambda_eclipse::bench::DecoderTiming>)>| {
                r.and_then(|r| r.1).map_or("—".to_string(), |t| gb(t.weight_bytes))
            };
            println!("{:<34} {:>16} {:>16}", "  weights held", bytes(cpu_result), bytes(gpu_result));
        }
        if let Some(profile) = profile.filter(|p| !p.is_empty()) {
            print_kernel_profile(&profile);
        }
    }
    Ok(())
}

/// The bench's `--profile-kernels` lines for one row: kernel variants by total time (warm-up and timed calls
/// together), the first 15 and the rest summed.
fn print_kernel_profile(profile: &lambda_eclipse::ops::gpu::KernelProfile) {
    let mut by_time: Vec<_> = profile.iter().collect();
    by_time.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
    let total: f64 = by_time.iter().map(|(_, (_, ms))| ms).sum();
    println!("  {:<70} {:>9} {:>12} {:>7}", "kernel variant (each dispatch waited for)", "dispatches", "ms", "share");
    for (name, (calls, ms)) in by_time.iter().take(15) {
        println!("  {name:<70} {calls:>9} {ms:>12.2} {:>6.1} %", 100.0 * ms / total.max(1e-9));
    }
    if by_time.len() > 15 {
        let (calls, ms) = by_time[15..].iter().fold((0, 0.0), |(c, t), (_, (n, ms))| (c + n, t + ms));
        println!("  {:<70} {calls:>9} {ms:>12.2} {:>6.1} %", "(the rest)", 100.0 * ms / total.max(1e-9));
    }
}

fn quantize(model: &Path, out: &Path, quant_type: QuantChoice, list: bool) -> Result<()> {
    use lambda_eclipse::ops::WeightDType;
    use lambda_eclipse::quantize::Recipe;
    let recipe = match quant_type {
        QuantChoice::Q8_0 => Recipe::Uniform(WeightDType::Q8_0),
        QuantChoice::Q4_0 => Recipe::Uniform(WeightDType::Q4_0),
        QuantChoice::Q4M => Recipe::Q4Mixed,
    };
    let kind = recipe.name();
    let report = lambda_eclipse::quantize::quantize_folder(model, out, recipe, |f| eprintln!("quantizing {f} ..."))?;
    let mb = |b: u64| b as f64 / 1e6;
    println!(
        "{:<42} {:>11} {:>11} {:>6} {:>10} {:>8} {:>10}  worst tensor",
        "file", "MB before", "MB after", "ratio", "quantized", "kept", "rel. RMS"
    );
    let (mut before, mut after) = (0, 0);
    for f in &report.files {
        before += f.bytes_before;
        after += f.bytes_after;
        let worst = f.worst.as_ref().map(|(n, e)| format!("{n} ({e:.2e})")).unwrap_or_default();
        println!(
            "{:<42} {:>11.1} {:>11.1} {:>5.2}× {:>10} {:>8} {:>10.2e}  {worst}",
            f.path,
            mb(f.bytes_before),
            mb(f.bytes_after),
            f.bytes_before as f64 / f.bytes_after.max(1) as f64,
            f.tensors_quantized,
            f.tensors_kept,
            f.relative_rms_error
        );
    }
    println!(
        "{:<42} {:>11.1} {:>11.1} {:>5.2}×",
        "all weights",
        mb(before),
        mb(after),
        before as f64 / after.max(1) as f64
    );
    println!(
        "copied {} file(s); left out {}",
        report.copied.len(),
        if report.skipped.is_empty() { "none".to_string() } else { report.skipped.join(", ") }
    );
    println!(
        "download: {:.1} MB (original {:.1} MB); the browser's CPU holds {:.1} MB for the weights (original {:.1} MB)",
        mb(report.download_bytes(true)),
        mb(report.download_bytes(false)),
        mb(report.cpu_bytes(true)),
        mb(report.cpu_bytes(false))
    );
    if list {
        let (path, _, copy) = lambda_eclipse::quantize::update_listing(model, out, kind, &report)?;
        println!("listed as `{kind}` (url {}) in {}", copy.url, path.display());
    }
    if model.join("prior").is_dir() && model.join("text_encoder").is_dir() {
        let (cosine, prompt) = compare_lambda(model, out)?;
        println!("λ embedding of “{prompt}” with a synthetic photo as “cat”, seed 0, CPU: cosine {cosine:.6} (quantized vs original)");
    }
    Ok(())
}

/// The λ pipeline's embedding from the original and the quantized folder on the CPU, for a fixed prompt, a
/// synthetic photo (a colour gradient, so the vision tower sees structure) and seed 0: their cosine.
fn compare_lambda(model: &Path, quantized: &Path) -> Result<(f64, &'static str)> {
    let prompt = "a cat sitting on a wooden table";
    let photo =
        image::RgbImage::from_fn(96, 80, |x, y| image::Rgb([(x * 2) as u8, (y * 3) as u8, ((x + y) % 256) as u8]));
    let photo = encode_image(&photo, image::ImageFormat::Png, Path::new("synthetic.png"))?;
    let embed = |dir: &Path| -> Result<Vec<f32>> {
        let engine =
            pollster::block_on(LambdaEngine::load(CpuBackend::new(), &DirFiles::new(dir), &mut no_progress()))?;
        let mut req = PriorRequest::new(prompt, Noise::Seed(0));
        req.subjects.push(Subject { keyword: "cat".into(), image: photo.clone() });
        Ok(pollster::block_on(engine.run(&req))?.image_embeds)
    };
    let (a, b) = (embed(model)?, embed(quantized)?);
    Ok((lambda_eclipse::ops::blocks::cosine(&a, &b), prompt))
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
