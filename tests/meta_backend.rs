//! The shape-only `MetaBackend` gives the figures the decoder's size check and the benchmarks use: the largest
//! activation equals the largest tensor a real CPU decode actually makes (measured independently, by watching
//! every op of the CPU backend), and the FLOPs equal those of the hand-written `cost()` functions it replaced,
//! plus exactly the one-row linear layers those left out.

mod common;
use common::*;
use lambda_eclipse::error::Result;
use lambda_eclipse::models::movq::MoVqConfig;
use lambda_eclipse::models::parse_config;
use lambda_eclipse::models::unet::UNetConfig;
use lambda_eclipse::ops::cpu::CpuBackend;
use lambda_eclipse::ops::{Activation, Backend, WeightDType};
use lambda_eclipse::pipeline::{DecodeRequest, DecoderEngine, DecoderNoise};
use lambda_eclipse::weights::safetensors::header_from_bytes;
use lambda_eclipse::weights::DirFiles;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

type T = <CpuBackend as Backend>::Tensor;

/// The CPU backend, noting the bytes of every tensor its ops return (the largest since the last `take`).
#[derive(Clone, Default)]
struct Watched {
    cpu: CpuBackend,
    largest: Arc<AtomicU64>,
}

impl Watched {
    fn seen(&self, t: Result<T>) -> Result<T> {
        let t = t?;
        self.largest.fetch_max(self.cpu.byte_size(&t) as u64, Ordering::Relaxed);
        Ok(t)
    }
    fn take(&self) -> u64 {
        self.largest.swap(0, Ordering::Relaxed)
    }
}

impl Backend for Watched {
    type Tensor = T;
    fn name(&self) -> &'static str {
        "watched cpu"
    }
    fn with_int8_weights(&self) -> Self {
        Watched { cpu: self.cpu.with_int8_weights(), largest: self.largest.clone() }
    }
    fn upload_weight(&self, raw: &[u8], dtype: WeightDType, shape: &[usize]) -> Result<T> {
        self.cpu.upload_weight(raw, dtype, shape)
    }
    fn from_f32(&self, data: &[f32], shape: &[usize]) -> Result<T> {
        self.seen(self.cpu.from_f32(data, shape))
    }
    fn shape(&self, t: &T) -> Vec<usize> {
        self.cpu.shape(t)
    }
    async fn read_f32(&self, t: &T) -> Result<Vec<f32>> {
        self.cpu.read_f32(t).await
    }
    fn byte_size(&self, t: &T) -> usize {
        self.cpu.byte_size(t)
    }
    fn matmul(&self, a: &T, b: &T) -> Result<T> {
        self.seen(self.cpu.matmul(a, b))
    }
    fn linear(&self, x: &T, w: &T, bias: Option<&T>, act: Activation) -> Result<T> {
        self.seen(self.cpu.linear(x, w, bias, act))
    }
    fn layer_norm(&self, x: &T, gamma: &T, beta: &T, eps: f64) -> Result<T> {
        self.seen(self.cpu.layer_norm(x, gamma, beta, eps))
    }
    fn attention(&self, q: &T, k: &T, v: &T, heads: usize, scale: f32, bias: Option<&T>) -> Result<T> {
        self.seen(self.cpu.attention(q, k, v, heads, scale, bias))
    }
    fn add(&self, a: &T, b: &T) -> Result<T> {
        self.seen(self.cpu.add(a, b))
    }
    fn activation(&self, x: &T, act: Activation) -> Result<T> {
        self.seen(self.cpu.activation(x, act))
    }
    fn gather_rows(&self, table: &T, ids: &[u32]) -> Result<T> {
        self.seen(self.cpu.gather_rows(table, ids))
    }
    fn concat_rows(&self, parts: &[&T]) -> Result<T> {
        self.seen(self.cpu.concat_rows(parts))
    }
    fn slice_rows(&self, x: &T, start: usize, len: usize) -> Result<T> {
        self.seen(self.cpu.slice_rows(x, start, len))
    }
    fn reshape(&self, x: &T, shape: &[usize]) -> Result<T> {
        self.seen(self.cpu.reshape(x, shape))
    }
    fn image_patches(&self, image: &T, patch: usize) -> Result<T> {
        self.seen(self.cpu.image_patches(image, patch))
    }
    fn conv2d(&self, x: &T, height: usize, width: usize, weight: &T, bias: Option<&T>, kernel: usize) -> Result<T> {
        self.seen(self.cpu.conv2d(x, height, width, weight, bias, kernel))
    }
    fn group_norm(&self, x: &T, groups: usize, gamma: &T, beta: &T, eps: f64) -> Result<T> {
        self.seen(self.cpu.group_norm(x, groups, gamma, beta, eps))
    }
    fn avg_pool_2x2(&self, x: &T, height: usize, width: usize) -> Result<T> {
        self.seen(self.cpu.avg_pool_2x2(x, height, width))
    }
    fn resize_nearest(&self, x: &T, height: usize, width: usize, out_height: usize, out_width: usize) -> Result<T> {
        self.seen(self.cpu.resize_nearest(x, height, width, out_height, out_width))
    }
    fn concat_cols(&self, parts: &[&T]) -> Result<T> {
        self.seen(self.cpu.concat_cols(parts))
    }
    fn mul(&self, a: &T, b: &T) -> Result<T> {
        self.seen(self.cpu.mul(a, b))
    }
    fn scale_shift(&self, x: &T, scale: &T, shift: &T) -> Result<T> {
        self.seen(self.cpu.scale_shift(x, scale, shift))
    }
}

fn tiny() -> PathBuf {
    shared().join("goldens/kandinsky-tiny/model")
}

fn student() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/decoder/student")
}

fn real_configs() -> (UNetConfig, MoVqConfig) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/bench/real_configs");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    (parse_config("unet.json", &read("unet.json")).unwrap(), parse_config("movq.json", &read("movq.json")).unwrap())
}

fn configs_of(dir: &Path) -> (UNetConfig, MoVqConfig) {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    (parse_config("unet", &read("unet/config.json")).unwrap(), parse_config("movq", &read("movq/config.json")).unwrap())
}

#[test]
fn the_size_check_is_the_largest_tensor_a_real_cpu_decode_makes() {
    for (dir, sizes) in [(tiny(), [(32, 32), (24, 40)]), (student(), [(32, 32), (64, 32)])] {
        let be = Watched::default();
        let engine =
            pollster::block_on(DecoderEngine::load(be.clone(), &DirFiles::new(&dir), &mut |_, _, _| {})).unwrap();
        for (width, height) in sizes {
            let d = engine.embedding_dim();
            let mut req = DecodeRequest::new(vec![0.5; d], vec![0.0; d], DecoderNoise::Seed(3));
            (req.width, req.height, req.steps) = (width, height, 2);
            be.take(); // loading reshaped weights (views): not activations
            pollster::block_on(engine.decode(&req, &mut |_, _, _| {}, &AtomicBool::new(false))).unwrap();
            let watched = be.take();
            let (predicted, _) = engine.largest_activation(width, height).unwrap();
            eprintln!("{} {width}×{height}: largest tensor {watched} B, predicted {predicted} B", dir.display());
            assert_eq!(predicted, watched, "{} at {width}×{height}", dir.display());

            // Each model alone, too.
            let (lh, lw) = engine.configs.latent_size(height, width).unwrap();
            let f = engine.latent_scale();
            let x = be
                .from_f32(
                    &vec![0.1; lh * lw * engine.configs.unet.in_channels],
                    &[lh * lw, engine.configs.unet.in_channels],
                )
                .unwrap();
            let emb = be.from_f32(&vec![0.5; d], &[1, d]).unwrap();
            be.take();
            engine.unet.forward(&be, &x, lh, lw, 500.0, &emb).unwrap();
            assert_eq!(engine.configs.unet.forward_cost(lh, lw).unwrap().largest_activation_bytes, be.take());
            let latents = vec![0.1; lh * lw * engine.configs.movq.vq_dim()];
            let decoded = pollster::block_on(engine.decode_latents(&latents, lh, lw)).unwrap();
            assert_eq!((decoded.height, decoded.width), (lh * f, lw * f));
            assert_eq!(engine.configs.movq.decode_cost(lh, lw).unwrap().largest_activation_bytes, be.take());
        }
    }
}

/// `2·out·in` of every linear layer applied to a single row in the UNet: the time embedding's two layers, the
/// image projection, the context projection and each resnet's `time_emb_proj`, as the checkpoint's weights
/// give their shapes. These are the FLOPs the hand-written `cost()` did not count.
fn one_row_linear_flops(unet_weights: &Path) -> f64 {
    let bytes = std::fs::read(unet_weights).unwrap();
    let header = header_from_bytes("unet", &bytes).unwrap();
    let one_row = |n: &str| {
        n.ends_with("time_emb_proj.weight")
            || n.starts_with("time_embedding.linear_")
            || n == "add_embedding.image_proj.weight"
            || n == "encoder_hid_proj.image_embeds.weight"
    };
    let flops: usize = header
        .tensors
        .iter()
        .filter(|t| t.shape.len() == 2 && one_row(&t.name))
        .map(|t| 2 * t.shape[0] * t.shape[1])
        .sum();
    flops as f64
}

/// (latent h, w, UNet FLOPs, UNet largest bytes, MoVQ FLOPs, MoVQ largest bytes) by the hand-written
/// `UNet::cost` and `MoVq::cost` (their largest activation in elements × 4), as they stood at commit de9e8db,
/// printed for these configs (models built on shape placeholders) just before those functions were deleted.
type OldCost = (usize, usize, f64, u64, f64, u64);
const OLD_TINY: [OldCost; 4] = [
    (8, 8, 38_912_000.0, 24_576, 92_358_656.0, 65_536),
    (16, 16, 156_434_432.0, 98_304, 407_183_360.0, 262_144),
    (8, 12, 58_171_392.0, 36_864, 140_897_280.0, 98_304),
    (512, 512, 4_553_135_882_240.0, 100_663_296, 53_141_974_286_336.0, 268_435_456),
];
const OLD_STUDENT: [OldCost; 2] =
    [(8, 8, 9_516_032.0, 10_240, 150_915_072.0, 131_072), (16, 24, 58_488_832.0, 61_440, 1_408_806_912.0, 786_432)];
const OLD_REAL: [OldCost; 3] = [
    (64, 64, 855_763_845_120.0, 18_874_368, 1_993_435_381_760.0, 268_435_456),
    (96, 64, 1_301_029_060_608.0, 28_311_552, 3_093_232_287_744.0, 402_653_184),
    (128, 128, 3_713_833_893_888.0, 75_497_472, 9_623_008_968_704.0, 1_073_741_824),
];

/// The real Kandinsky 2.2 UNet's one-row linears (no checkpoint here to read them from), from its config
/// (block_out_channels [384, 768, 1152, 1536], 3 layers a block, time embedding 1536, image embedding 1280,
/// 32 context tokens of 768, scale-shift resnets): time embedding 2·(384·1536 + 1536·1536) = 5,898,240;
/// image projection 2·1280·1536 = 3,932,160; context projection 2·1280·(32·768) = 62,914,560; the resnets'
/// `time_emb_proj` 2·1536·(2·cout) summed over their 35,712 output channels (down 13,824, mid 3,072,
/// up 18,816) = 219,414,528.
const REAL_ONE_ROW_FLOPS: f64 = 5_898_240.0 + 3_932_160.0 + 62_914_560.0 + 219_414_528.0;

fn check_against_old(name: &str, (unet, movq): (UNetConfig, MoVqConfig), old: &[OldCost], unet_one_row_flops: f64) {
    unet.validate(name).unwrap();
    movq.validate(name).unwrap();
    for &(h, w, unet_flops, unet_bytes, movq_flops, movq_bytes) in old {
        let u = unet.forward_cost(h, w).unwrap();
        let m = movq.decode_cost(h, w).unwrap();
        assert_eq!(u.largest_activation_bytes, unet_bytes, "{name} UNet {h}×{w}");
        assert_eq!(m.largest_activation_bytes, movq_bytes, "{name} MoVQ {h}×{w}");
        assert_eq!(m.flops, movq_flops, "{name} MoVQ {h}×{w}");
        assert_eq!(u.flops, unet_flops + unet_one_row_flops, "{name} UNet {h}×{w}");
    }
}

#[test]
fn meta_figures_equal_the_old_hand_written_costs_plus_the_one_row_linears_they_left_out() {
    let tiny_extra = one_row_linear_flops(&tiny().join("unet/diffusion_pytorch_model.safetensors"));
    let student_extra = one_row_linear_flops(&student().join("unet/diffusion_pytorch_model.safetensors"));
    assert!(tiny_extra > 0.0 && student_extra > 0.0);
    check_against_old("tiny", configs_of(&tiny()), &OLD_TINY, tiny_extra);
    check_against_old("student", configs_of(&student()), &OLD_STUDENT, student_extra);
    check_against_old("real", real_configs(), &OLD_REAL, REAL_ONE_ROW_FLOPS);
}

#[test]
fn a_size_the_unet_cannot_halve_is_refused_by_the_shape_run_naming_it() {
    let (unet, movq) = configs_of(&tiny());
    assert_eq!(unet.size_multiple(), 2);
    let err = unet.forward_cost(7, 8).unwrap_err().to_string();
    assert!(err.contains("multiples of 2, got 7×8"), "{err}");
    assert!(movq.decode_cost(0, 8).is_err());
}
