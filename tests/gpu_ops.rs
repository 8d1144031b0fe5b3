//! Every op of the WebGPU backend against the CPU reference on random inputs and awkward shapes.
//! Runs natively on whatever adapter wgpu finds (lavapipe on CI machines: `mesa-vulkan-drivers`). Without an
//! adapter these tests fail, unless `LAMBDA_ECLIPSE_SKIP_GPU=1`.
#![cfg(all(feature = "gpu", not(target_arch = "wasm32")))]

mod common;

use lambda_eclipse::ops::cpu::CpuBackend;
use lambda_eclipse::ops::gpu::{GpuBackend, GpuOptions};
use lambda_eclipse::ops::{Activation, Backend, Int8Rows, WeightDType, CLIP_MASKED};
use std::sync::OnceLock;

fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    pollster::block_on(f)
}

/// One backend shared by the tests (they record into its one encoder; every read submits in order).
fn gpu() -> Option<&'static GpuBackend> {
    static GPU: OnceLock<Option<GpuBackend>> = OnceLock::new();
    GPU.get_or_init(|| {
        let be = common::open_gpu_or_skip();
        if let Some(be) = &be {
            eprintln!("GPU adapter: {}", be.adapter_description());
        }
        be
    })
    .as_ref()
}

/// Deterministic uniform values in [-1, 1) (SplitMix64).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
fn f16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect()
}

fn read_gpu(be: &GpuBackend, t: &<GpuBackend as Backend>::Tensor) -> Vec<f32> {
    block(be.read_f32(t)).unwrap()
}
fn read_cpu(t: &<CpuBackend as Backend>::Tensor) -> Vec<f32> {
    block(CpuBackend::new().read_f32(t)).unwrap()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// f32 parity: max-abs ≤ 1e-4 · max(1, output scale). Returns the difference relative to that scale.
#[track_caller]
fn assert_f32_close(what: &str, got: &[f32], want: &[f32]) -> f32 {
    assert!(got.iter().all(|x| x.is_finite()), "{what}: non-finite output");
    let scale = want.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    let d = max_abs(got, want);
    assert!(d <= 1e-4 * scale, "{what}: max-abs difference {d:e} exceeds 1e-4 × {scale}");
    d / scale
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-30)
}

const ACTS: [Activation; 3] = [Activation::Identity, Activation::GeluErf, Activation::QuickGelu];

#[test]
fn linear_f32_matches_cpu_for_awkward_shapes_bias_and_activations() {
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::new();
    let mut rng = Rng(1);
    let dims = [1, 3, 5, 31, 33, 77, 130, 257];
    let mut worst = 0.0f32;
    let mut case = 0;
    for m in [1, 77, 81, 257] {
        for k in dims {
            for n in dims {
                case += 1;
                let act = ACTS[case % 3];
                let with_bias = case % 2 == 0;
                let (x, w, b) = (rng.vec(m * k, 2.0), rng.vec(n * k, 0.5), rng.vec(n, 1.0));
                let cbias = cpu.from_f32(&b, &[n]).unwrap();
                let want = read_cpu(
                    &cpu.linear(
                        &cpu.from_f32(&x, &[m, k]).unwrap(),
                        &cpu.upload_weight(&f32_bytes(&w), WeightDType::F32, &[n, k]).unwrap(),
                        with_bias.then_some(&cbias),
                        act,
                    )
                    .unwrap(),
                );
                let bias = gpu.from_f32(&b, &[n]).unwrap();
                let y = gpu
                    .linear(
                        &gpu.from_f32(&x, &[m, k]).unwrap(),
                        &gpu.upload_weight(&f32_bytes(&w), WeightDType::F32, &[n, k]).unwrap(),
                        with_bias.then_some(&bias),
                        act,
                    )
                    .unwrap();
                assert_eq!(gpu.shape(&y), vec![m, n]);
                worst = worst.max(assert_f32_close(
                    &format!("linear m={m} k={k} n={n} {act:?} bias={with_bias}"),
                    &read_gpu(gpu, &y),
                    &want,
                ));
            }
        }
    }
    eprintln!("linear f32: worst max-abs / scale = {worst:e} over {case} shapes");
}

#[test]
fn linear_with_f16_weights_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::new();
    let mut rng = Rng(2);
    let (mut worst_same, mut worst_rel, mut worst_cos) = (0.0f32, 0.0f32, 1.0f64);
    // Odd k (rows start mid-u32) and odd k·n (padded last word) included.
    for (m, k, n) in
        [(1, 1, 1), (77, 33, 31), (81, 130, 77), (257, 257, 130), (1, 1280, 1024), (257, 5, 3), (3, 64, 257)]
    {
        let (x, w, b) = (rng.vec(m * k, 1.0), rng.vec(n * k, 0.2), rng.vec(n, 0.5));
        let wb = f16_bytes(&w);
        let gw = gpu.upload_weight(&wb, WeightDType::F16, &[n, k]).unwrap();
        assert_eq!(gpu.byte_size(&gw), (n * k).div_ceil(2) * 4, "f16 weights stay packed");
        let got = read_gpu(
            gpu,
            &gpu.linear(
                &gpu.from_f32(&x, &[m, k]).unwrap(),
                &gw,
                Some(&gpu.from_f32(&b, &[n]).unwrap()),
                Activation::GeluErf,
            )
            .unwrap(),
        );
        let cpu_lin = |w: &[u8], dt| {
            let y = cpu
                .linear(
                    &cpu.from_f32(&x, &[m, k]).unwrap(),
                    &cpu.upload_weight(w, dt, &[n, k]).unwrap(),
                    Some(&cpu.from_f32(&b, &[n]).unwrap()),
                    Activation::GeluErf,
                )
                .unwrap();
            read_cpu(&y)
        };
        // Same f16 values on both sides: f32 accuracy.
        worst_same = worst_same.max(assert_f32_close(
            &format!("linear f16 m={m} k={k} n={n}"),
            &got,
            &cpu_lin(&wb, WeightDType::F16),
        ));
        // Against the f32 weights the f16 rounding shows: within 1e-2 relative, cosine ≥ 0.9999.
        let exact = cpu_lin(&f32_bytes(&w), WeightDType::F32);
        let scale = exact.iter().fold(1e-6f32, |s, v| s.max(v.abs()));
        let rel = max_abs(&got, &exact) / scale;
        let cos = cosine(&got, &exact);
        assert!(rel <= 1e-2 && cos >= 0.9999, "linear f16 vs f32 m={m} k={k} n={n}: rel {rel:e}, cosine {cos}");
        worst_rel = worst_rel.max(rel);
        worst_cos = worst_cos.min(cos);
    }
    eprintln!(
        "linear f16: vs CPU on the same f16 {worst_same:e}; vs f32 weights rel {worst_rel:e}, cosine ≥ {worst_cos}"
    );
}

#[test]
fn matmul_matches_cpu_with_f32_and_f16_right_operand() {
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::new();
    let mut rng = Rng(3);
    for (m, k, n) in [(1, 1, 1), (77, 31, 33), (257, 130, 5), (81, 64, 257)] {
        let (a, b) = (rng.vec(m * k, 1.0), rng.vec(k * n, 1.0));
        for dt in [WeightDType::F32, WeightDType::F16] {
            let bytes = if dt == WeightDType::F32 { f32_bytes(&b) } else { f16_bytes(&b) };
            let want = read_cpu(
                &cpu.matmul(&cpu.from_f32(&a, &[m, k]).unwrap(), &cpu.upload_weight(&bytes, dt, &[k, n]).unwrap())
                    .unwrap(),
            );
            let got = read_gpu(
                gpu,
                &gpu.matmul(&gpu.from_f32(&a, &[m, k]).unwrap(), &gpu.upload_weight(&bytes, dt, &[k, n]).unwrap())
                    .unwrap(),
            );
            assert_f32_close(&format!("matmul {m}×{k}·{k}×{n} {dt:?}"), &got, &want);
        }
    }
}

#[test]
fn layer_norm_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::new();
    let mut rng = Rng(4);
    let mut worst = 0.0f32;
    for rows in [1, 77, 257] {
        for cols in [1, 3, 33, 130, 257, 1280, 1664] {
            // Offset mean and a large spread, as in real residual streams.
            let x: Vec<f32> = rng.vec(rows * cols, 8.0).iter().map(|v| v + 3.0).collect();
            let (g, b) = (rng.vec(cols, 1.5), rng.vec(cols, 0.5));
            for dt in [WeightDType::F32, WeightDType::F16] {
                let enc = |v: &[f32]| if dt == WeightDType::F32 { f32_bytes(v) } else { f16_bytes(v) };
                let want = read_cpu(
                    &cpu.layer_norm(
                        &cpu.from_f32(&x, &[rows, cols]).unwrap(),
                        &cpu.upload_weight(&enc(&g), dt, &[cols]).unwrap(),
                        &cpu.upload_weight(&enc(&b), dt, &[cols]).unwrap(),
                        1e-5,
                    )
                    .unwrap(),
                );
                let got = read_gpu(
                    gpu,
                    &gpu.layer_norm(
                        &gpu.from_f32(&x, &[rows, cols]).unwrap(),
                        &gpu.upload_weight(&enc(&g), dt, &[cols]).unwrap(),
                        &gpu.upload_weight(&enc(&b), dt, &[cols]).unwrap(),
                        1e-5,
                    )
                    .unwrap(),
                );
                worst = worst.max(assert_f32_close(&format!("layer_norm {rows}×{cols} {dt:?}"), &got, &want));
            }
        }
    }
    eprintln!("layer_norm: worst max-abs / scale = {worst:e}");
}

/// The masks the models build: CLIP causal + padding with −1e9, the prior's −10000 terms that add to −20000.
fn biases(t: usize, s: usize, rng: &mut Rng) -> Vec<(&'static str, Option<Vec<f32>>)> {
    let causal: Vec<f32> = (0..t * s).map(|i| if i % s > i / s { CLIP_MASKED } else { 0.0 }).collect();
    let pad = s.saturating_sub(3).max(1);
    let padding: Vec<f32> = (0..t * s).map(|i| if i % s >= pad { CLIP_MASKED } else { 0.0 }).collect();
    let both: Vec<f32> = causal.iter().zip(&padding).map(|(a, b)| a + b).collect();
    let prior: Vec<f32> = (0..t * s)
        .map(|i| (if i % s > i / s { -10000.0 } else { 0.0 }) + (if i % s >= pad { -10000.0 } else { 0.0 }))
        .collect();
    vec![
        ("none", None),
        ("random", Some(rng.vec(t * s, 3.0))),
        ("causal", Some(causal)),
        ("causal+padding", Some(both)),
        ("prior -10000", Some(prior)),
    ]
}

#[test]
fn attention_matches_cpu_for_head_dims_lengths_and_masks() {
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::new();
    let mut rng = Rng(5);
    let mut worst = 0.0f32;
    let heads_dims = [(1, 8), (2, 12), (4, 32), (8, 64), (16, 104), (3, 5), (2, 130), (1, 256)];
    for (i, &(heads, d)) in heads_dims.iter().enumerate() {
        for (t, s) in [(1, 1), (77, 77), (81, 81), (257, 257), (5, 257), (257, 3)] {
            // Keep the big-shape runs bounded: every (heads, d) gets all masks at t = s = 77, others rotate.
            let width = heads * d;
            let (q, k, v) = (rng.vec(t * width, 2.0), rng.vec(s * width, 2.0), rng.vec(s * width, 1.0));
            let scale = 1.0 / (d as f32).sqrt();
            for (j, (name, bias)) in biases(t, s, &mut rng).into_iter().enumerate() {
                if t != 77 && (i + j) % 3 != 0 {
                    continue;
                }
                let cb = bias.as_ref().map(|b| cpu.from_f32(b, &[t, s]).unwrap());
                let want = read_cpu(
                    &cpu.attention(
                        &cpu.from_f32(&q, &[t, width]).unwrap(),
                        &cpu.from_f32(&k, &[s, width]).unwrap(),
                        &cpu.from_f32(&v, &[s, width]).unwrap(),
                        heads,
                        scale,
                        cb.as_ref(),
                    )
                    .unwrap(),
                );
                let gb = bias.as_ref().map(|b| gpu.from_f32(b, &[t, s]).unwrap());
                let got = read_gpu(
                    gpu,
                    &gpu.attention(
                        &gpu.from_f32(&q, &[t, width]).unwrap(),
                        &gpu.from_f32(&k, &[s, width]).unwrap(),
                        &gpu.from_f32(&v, &[s, width]).unwrap(),
                        heads,
                        scale,
                        gb.as_ref(),
                    )
                    .unwrap(),
                );
                worst = worst.max(assert_f32_close(
                    &format!("attention heads={heads} d={d} t={t} s={s} bias={name}"),
                    &got,
                    &want,
                ));
            }
        }
    }
    eprintln!("attention: worst max-abs / scale = {worst:e}");
}

/// One attention call on both backends: (GPU, CPU) outputs.
fn attention_both(
    gpu: &GpuBackend,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    (t, s, width): (usize, usize, usize),
    heads: usize,
    bias: Option<&Vec<f32>>,
) -> (Vec<f32>, Vec<f32>) {
    let cpu = CpuBackend::new();
    let scale = 1.0 / ((width / heads) as f32).sqrt();
    let cb = bias.map(|b| cpu.from_f32(b, &[t, s]).unwrap());
    let want = cpu
        .attention(
            &cpu.from_f32(q, &[t, width]).unwrap(),
            &cpu.from_f32(k, &[s, width]).unwrap(),
            &cpu.from_f32(v, &[s, width]).unwrap(),
            heads,
            scale,
            cb.as_ref(),
        )
        .unwrap();
    let gb = bias.map(|b| gpu.from_f32(b, &[t, s]).unwrap());
    let got = gpu
        .attention(
            &gpu.from_f32(q, &[t, width]).unwrap(),
            &gpu.from_f32(k, &[s, width]).unwrap(),
            &gpu.from_f32(v, &[s, width]).unwrap(),
            heads,
            scale,
            gb.as_ref(),
        )
        .unwrap();
    (read_gpu(gpu, &got), read_cpu(&want))
}

#[test]
fn attention_matches_cpu_for_any_number_of_keys() {
    let Some(gpu) = gpu() else { return };
    let blocked =
        block(GpuBackend::with_options(GpuOptions { blocked_attention: true, ..GpuOptions::default() })).unwrap();
    let mut rng = Rng(6);
    // The flash kernel takes keys 32 at a time: 1 key, a tile minus/plus one, the old fused kernel's limit of
    // 1024 and one past it, the UNet's self-attention at 768 px (48² = 2304 positions + 32 context keys) and
    // 4096 keys; head dims of one staged chunk (7, 32), more (64, 104 = CLIP vision), and the most (256); queries that
    // do not fill a block of 32.
    for (t, s, heads, d, with_bias) in [
        (1, 1, 1, 64, false),
        (33, 31, 2, 64, true),
        (32, 32, 1, 104, false),
        (31, 33, 3, 7, true),
        (5, 40, 2, 32, true),
        (70, 1024, 2, 64, true),
        (64, 1025, 1, 256, false),
        (2304, 2336, 1, 64, false),
        (40, 4096, 2, 104, true),
        (4096, 4096, 1, 64, false),
    ] {
        let width = heads * d;
        let (q, k, v) = (rng.vec(t * width, 2.0), rng.vec(s * width, 2.0), rng.vec(s * width, 1.0));
        let bias = with_bias.then(|| rng.vec(t * s, 3.0));
        let (got, want) = attention_both(gpu, &q, &k, &v, (t, s, width), heads, bias.as_ref());
        assert_f32_close(&format!("attention t={t} s={s} heads={heads} d={d} bias={with_bias}"), &got, &want);
        // The GEMM path the bench compares it with (GpuOptions::blocked_attention) computes the same.
        let (got, _) = attention_both(&blocked, &q, &k, &v, (t, s, width), heads, bias.as_ref());
        assert_f32_close(&format!("blocked attention t={t} s={s} heads={heads} d={d}"), &got, &want);
    }
}

#[test]
fn attention_with_heads_wider_than_256_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng(7);
    // Past the flash kernel's registers: the MoVQ's single 512-wide head, and one just past the bound; the
    // per-head GEMM path with a softmax in between.
    for (t, s, heads, d, with_bias) in [(300, 300, 1, 512, false), (5, 2, 1, 257, true), (40, 1100, 2, 260, true)] {
        let width = heads * d;
        let (q, k, v) = (rng.vec(t * width, 1.0), rng.vec(s * width, 1.0), rng.vec(s * width, 1.0));
        let bias = with_bias.then(|| rng.vec(t * s, 3.0));
        let (got, want) = attention_both(gpu, &q, &k, &v, (t, s, width), heads, bias.as_ref());
        assert_f32_close(&format!("wide-head attention t={t} s={s} heads={heads} d={d} bias={with_bias}"), &got, &want);
    }
}

#[test]
fn activations_match_cpu_including_extremes() {
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::new();
    let mut rng = Rng(6);
    let mut x = rng.vec(70_001, 6.0);
    x.extend([
        0.0, -0.0, 1e-30, -1e-30, 0.5, -0.5, 0.9277, 0.92775, 3.0, -3.0, 10.0, -10.0, 100.0, -100.0, 1e30, -1e30,
    ]);
    let n = x.len();
    for act in ACTS {
        let want = read_cpu(&cpu.activation(&cpu.from_f32(&x, &[n]).unwrap(), act).unwrap());
        let got = read_gpu(gpu, &gpu.activation(&gpu.from_f32(&x, &[n]).unwrap(), act).unwrap());
        // Elementwise: compare each value against its own magnitude (1e30 inputs keep 1e30 outputs).
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{act:?}({}) = {g}, CPU {w}", x[i]);
        }
    }
}

#[test]
fn add_gather_concat_slice_reshape_match_cpu_for_f32_and_f16() {
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::new();
    let mut rng = Rng(7);
    for dt in [WeightDType::F32, WeightDType::F16] {
        let enc = |v: &[f32]| if dt == WeightDType::F32 { f32_bytes(v) } else { f16_bytes(v) };
        for (rows, cols) in [(1, 1), (77, 33), (257, 31), (49, 1280), (3, 5)] {
            let table = rng.vec(rows * cols, 2.0);
            let other = rng.vec(rows * cols, 2.0);
            let (ct, gt) = (
                cpu.upload_weight(&enc(&table), dt, &[rows, cols]).unwrap(),
                gpu.upload_weight(&enc(&table), dt, &[rows, cols]).unwrap(),
            );
            let (co, go) = (cpu.from_f32(&other, &[rows, cols]).unwrap(), gpu.from_f32(&other, &[rows, cols]).unwrap());
            let tag = format!("{dt:?} {rows}×{cols}");

            // add: weight + activation, both orders
            assert_f32_close(
                &format!("add {tag}"),
                &read_gpu(gpu, &gpu.add(&go, &gt).unwrap()),
                &read_cpu(&cpu.add(&co, &ct).unwrap()),
            );
            assert_f32_close(
                &format!("add' {tag}"),
                &read_gpu(gpu, &gpu.add(&gt, &go).unwrap()),
                &read_cpu(&cpu.add(&ct, &co).unwrap()),
            );

            // gather: repeats, last row, first row
            let ids: Vec<u32> =
                (0..(rows as u32 + 5)).map(|i| (i * 7 + 3) % rows as u32).chain([0, rows as u32 - 1]).collect();
            let g = gpu.gather_rows(&gt, &ids).unwrap();
            assert_eq!(gpu.shape(&g), vec![ids.len(), cols]);
            assert_eq!(read_gpu(gpu, &g), read_cpu(&cpu.gather_rows(&ct, &ids).unwrap()), "gather {tag}");
            assert!(gpu.gather_rows(&gt, &[rows as u32]).is_err());

            // slice: odd starts (mid-u32 for f16), full range, empty
            for (start, len) in [(0, rows), (rows / 2, rows - rows / 2), (rows - 1, 1), (rows / 3, 0)] {
                let got = gpu.slice_rows(&gt, start, len).unwrap();
                assert_eq!(gpu.shape(&got), vec![len, cols]);
                assert_eq!(
                    read_gpu(gpu, &got),
                    read_cpu(&cpu.slice_rows(&ct, start, len).unwrap()),
                    "slice {start}+{len} {tag}"
                );
            }
            assert!(gpu.slice_rows(&gt, rows, 1).is_err());

            // concat: weight between activations, and a 1-row weight (like class/prd embeddings)
            let one = rng.vec(cols, 1.0);
            let (c1, g1) = (
                cpu.upload_weight(&enc(&one), dt, &[1, cols]).unwrap(),
                gpu.upload_weight(&enc(&one), dt, &[1, cols]).unwrap(),
            );
            let want = read_cpu(&cpu.concat_rows(&[&c1, &co, &ct, &c1]).unwrap());
            let got = gpu.concat_rows(&[&g1, &go, &gt, &g1]).unwrap();
            assert_eq!(gpu.shape(&got), vec![2 * rows + 2, cols]);
            assert_eq!(read_gpu(gpu, &got), want, "concat {tag}");

            // reshape keeps data (and dtype) and checks the count
            let r = gpu.reshape(&gt, &[rows * cols, 1]).unwrap();
            assert_eq!(gpu.shape(&r), vec![rows * cols, 1]);
            assert_eq!(read_gpu(gpu, &r), read_cpu(&ct), "reshape {tag}");
            assert!(gpu.reshape(&gt, &[rows * cols + 1]).is_err());
        }
    }
    let a = gpu.from_f32(&[1.0; 6], &[2, 3]).unwrap();
    let b = gpu.from_f32(&[1.0; 6], &[3, 2]).unwrap();
    assert!(gpu.add(&a, &b).is_err());
    assert!(gpu.concat_rows(&[&a, &b]).is_err());
}

#[test]
fn weights_of_every_dtype_read_back_like_cpu() {
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::new();
    let v = Rng(8).vec(2 * 77 + 1, 3.0);
    let bf16: Vec<u8> = v.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect();
    for (dt, bytes) in [(WeightDType::F32, f32_bytes(&v)), (WeightDType::F16, f16_bytes(&v)), (WeightDType::BF16, bf16)]
    {
        for shape in [vec![v.len()], vec![1, v.len()], vec![1, 1, v.len()]] {
            let want = read_cpu(&cpu.upload_weight(&bytes, dt, &shape).unwrap());
            let t = gpu.upload_weight(&bytes, dt, &shape).unwrap();
            assert_eq!(gpu.shape(&t), shape);
            assert_eq!(read_gpu(gpu, &t), want, "{dt:?} {shape:?}");
        }
        assert!(gpu.upload_weight(&bytes[1..], dt, &[v.len()]).is_err());
    }
}

#[test]
fn image_patches_match_cpu() {
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::new();
    let mut rng = Rng(9);
    for (c, h, w, p) in [(3, 28, 28, 14), (3, 224, 224, 14), (1, 6, 4, 2), (3, 32, 32, 32), (2, 5, 5, 1)] {
        let img = rng.vec(c * h * w, 1.0);
        let want = read_cpu(&cpu.image_patches(&cpu.from_f32(&img, &[c, h, w]).unwrap(), p).unwrap());
        let got = gpu.image_patches(&gpu.from_f32(&img, &[c, h, w]).unwrap(), p).unwrap();
        assert_eq!(gpu.shape(&got), vec![(h / p) * (w / p), c * p * p]);
        assert_eq!(read_gpu(gpu, &got), want, "image_patches {c}×{h}×{w} p={p}");
    }
    assert!(gpu.image_patches(&gpu.from_f32(&[0.0; 30], &[1, 6, 5]).unwrap(), 2).is_err());
}

#[test]
fn a_tensor_over_the_storage_binding_limit_is_a_clear_error() {
    let Some(gpu) = gpu() else { return };
    // 9000 × 4096 f32 = 147 MB > 128 MiB, from a 16 KiB table.
    let table = gpu.from_f32(&vec![0.5; 4096], &[1, 4096]).unwrap();
    let err = gpu.gather_rows(&table, &vec![0; 9000]).unwrap_err().to_string();
    assert!(err.contains("storage-binding limit") && err.contains("activations must fit one"), "{err}");
}

/// A second device whose weights split above 4 KiB, so splitting is exercised with small tensors.
fn gpu_splitting_at_4k() -> Option<GpuBackend> {
    gpu()?;
    let options = GpuOptions { max_tensor_bytes: Some(4096), ..GpuOptions::default() };
    Some(block(GpuBackend::with_options(options)).unwrap())
}

#[test]
fn weights_above_the_binding_limit_are_split_by_rows_and_linear_and_gather_match_cpu() {
    let Some(gpu) = gpu_splitting_at_4k() else { return };
    let cpu = CpuBackend::new();
    let mut rng = Rng(11);
    // f16 with an odd row length: chunks must hold an even number of rows to start on a u32 boundary.
    for (dtype, m, k, n) in
        [(WeightDType::F32, 3, 40, 77), (WeightDType::F16, 77, 33, 301), (WeightDType::F32, 1, 1024, 9)]
    {
        let (x, w, b) = (rng.vec(m * k, 1.0), rng.vec(n * k, 0.3), rng.vec(n, 0.5));
        let raw = if dtype == WeightDType::F32 { f32_bytes(&w) } else { f16_bytes(&w) };
        let gw = gpu.upload_weight(&raw, dtype, &[n, k]).unwrap();
        let cw = cpu.upload_weight(&raw, dtype, &[n, k]).unwrap();
        assert!(gw.buffer_count() > 1, "{dtype:?} [{n}, {k}] ({} bytes) should be split", raw.len());
        assert!(gpu.byte_size(&gw) >= raw.len() && gpu.byte_size(&gw) <= raw.len() + 4 * gw.buffer_count());
        let what = format!("split {dtype:?} linear m={m} k={k} n={n} in {} buffers", gw.buffer_count());
        let got = gpu
            .linear(
                &gpu.from_f32(&x, &[m, k]).unwrap(),
                &gw,
                Some(&gpu.from_f32(&b, &[n]).unwrap()),
                Activation::QuickGelu,
            )
            .unwrap();
        let want = cpu
            .linear(
                &cpu.from_f32(&x, &[m, k]).unwrap(),
                &cw,
                Some(&cpu.from_f32(&b, &[n]).unwrap()),
                Activation::QuickGelu,
            )
            .unwrap();
        assert_f32_close(&what, &read_gpu(&gpu, &got), &read_cpu(&want));
        // Ids from every chunk, repeated and out of order.
        let ids: Vec<u32> = [n - 1, 0, n / 2, 1, n - 1, n / 3].iter().map(|&i| i as u32).collect();
        let got = read_gpu(&gpu, &gpu.gather_rows(&gw, &ids).unwrap());
        assert_eq!(got, read_cpu(&cpu.gather_rows(&cw, &ids).unwrap()), "split {dtype:?} gather_rows");
        // A reshape that keeps the row split is fine; ops that read one buffer refuse clearly.
        assert!(gpu.reshape(&gw, &[n, k, 1]).is_ok());
        let err = gpu.add(&gw, &gw).unwrap_err().to_string();
        assert!(err.contains("split across") && err.contains("binding limit"), "{err}");
        assert!(gpu.reshape(&gw, &[n * k]).unwrap_err().to_string().contains("split by rows"));
    }
}

#[test]
fn a_253_mb_f32_token_embedding_loads_split_and_gathers_exactly() {
    let Some(gpu) = gpu() else { return };
    // The real bigG text tower's f32 token embedding, [49408, 1280]: above WebGPU's 128 MiB binding limit.
    let (rows, cols) = (49408usize, 1280usize);
    let table: Vec<f32> = (0..rows * cols).map(|i| (i % 1_000_003) as f32 * 1e-3).collect();
    let t = gpu.upload_weight(&f32_bytes(&table), WeightDType::F32, &[rows, cols]).unwrap();
    assert_eq!(t.buffer_count(), 2);
    assert_eq!(gpu.byte_size(&t), rows * cols * 4, "GPU bytes equal weight bytes");
    let ids = [49407u32, 0, 26214, 26215, 49406, 320, 49407];
    let got = read_gpu(gpu, &gpu.gather_rows(&t, &ids).unwrap());
    let want: Vec<f32> = ids.iter().flat_map(|&i| table[i as usize * cols..(i as usize + 1) * cols].to_vec()).collect();
    assert_eq!(got, want);
}

#[test]
fn shader_f16_and_packed_f16_linear_both_match_cpu() {
    let Some(native) = gpu() else { return };
    let packed =
        block(GpuBackend::with_options(GpuOptions { use_shader_f16: false, ..GpuOptions::default() })).unwrap();
    assert!(!packed.has_shader_f16());
    eprintln!("adapter shader-f16: {}", native.has_shader_f16());
    let cpu = CpuBackend::new();
    let mut rng = Rng(12);
    for (m, k, n) in [(1, 1280, 77), (77, 33, 31), (257, 130, 65)] {
        let (x, w) = (rng.vec(m * k, 1.0), f16_bytes(&rng.vec(n * k, 0.2)));
        let want = read_cpu(
            &cpu.linear(
                &cpu.from_f32(&x, &[m, k]).unwrap(),
                &cpu.upload_weight(&w, WeightDType::F16, &[n, k]).unwrap(),
                None,
                Activation::Identity,
            )
            .unwrap(),
        );
        for be in [native, &packed] {
            let got = be
                .linear(
                    &be.from_f32(&x, &[m, k]).unwrap(),
                    &be.upload_weight(&w, WeightDType::F16, &[n, k]).unwrap(),
                    None,
                    Activation::Identity,
                )
                .unwrap();
            assert_f32_close(
                &format!("f16 linear (shader-f16 {}) m={m} k={k} n={n}", be.has_shader_f16()),
                &read_gpu(be, &got),
                &want,
            );
        }
    }
}

/// A small transformer-block-shaped forward touching every op.
fn forward(be: &GpuBackend, w: &[<GpuBackend as Backend>::Tensor], input: &[f32]) -> Vec<f32> {
    let (t, d) = (9, 48);
    let x = be.from_f32(input, &[t, d]).unwrap();
    let x = be.add(&x, &be.slice_rows(&w[4], 0, t).unwrap()).unwrap();
    let h = be.layer_norm(&x, &w[2], &w[3], 1e-5).unwrap();
    let qkv = be.linear(&h, &w[0], Some(&w[1]), Activation::Identity).unwrap();
    let bias: Vec<f32> = (0..t * t).map(|i| if i % t > i / t { CLIP_MASKED } else { 0.0 }).collect();
    let a = be.attention(&qkv, &qkv, &qkv, 4, 0.25, Some(&be.from_f32(&bias, &[t, t]).unwrap())).unwrap();
    let x = be.add(&x, &be.linear(&a, &w[0], None, Activation::GeluErf).unwrap()).unwrap();
    let x = be.concat_rows(&[&be.gather_rows(&w[4], &[3, 1]).unwrap(), &x]).unwrap();
    let x = be.activation(&x, Activation::QuickGelu).unwrap();
    let p = be.image_patches(&be.reshape(&x, &[1, t + 2, d]).unwrap(), 1).unwrap();
    block(be.read_f32(&be.slice_rows(&p, 2, 3).unwrap())).unwrap()
}

#[test]
fn repeated_forwards_reuse_pooled_buffers() {
    let Some(be) = common::open_gpu_or_skip() else { return };
    let mut rng = Rng(10);
    let d = 48;
    let w = vec![
        be.upload_weight(&f16_bytes(&rng.vec(d * d, 0.3)), WeightDType::F16, &[d, d]).unwrap(),
        be.upload_weight(&f32_bytes(&rng.vec(d, 0.1)), WeightDType::F32, &[d]).unwrap(),
        be.upload_weight(&f16_bytes(&rng.vec(d, 1.0)), WeightDType::F16, &[d]).unwrap(),
        be.upload_weight(&f32_bytes(&rng.vec(d, 0.1)), WeightDType::F32, &[d]).unwrap(),
        be.upload_weight(&f16_bytes(&rng.vec(16 * d, 1.0)), WeightDType::F16, &[16, d]).unwrap(),
    ];
    let input = rng.vec(9 * d, 1.0);
    let first = forward(&be, &w, &input);
    let (pool, uniforms) = (be.pool_stats(), be.uniform_buffers());
    assert!(pool.buffers > 0);
    for _ in 0..100 {
        assert_eq!(forward(&be, &w, &input), first, "forwards are deterministic");
    }
    assert_eq!(be.pool_stats(), pool, "100 more forwards allocated no new pool buffers");
    assert_eq!(be.uniform_buffers(), uniforms);
    assert_eq!(pool.free, pool.buffers, "every activation went back to the pool");
    eprintln!("pool after 101 forwards: {pool:?}, {uniforms} uniform buffers");
}

/// Bind groups are cached by kernel and bound buffers: once the pool hands a repeated forward the same
/// activation buffers, it creates no bind group at all; and a freed weight takes its bind groups with it (a
/// cached bind group would otherwise keep the buffer alive).
#[test]
fn repeated_forwards_reuse_bind_groups_and_a_freed_weight_drops_its_own() {
    let Some(be) = common::open_gpu_or_skip() else { return };
    let mut rng = Rng(12);
    let (t, d) = (9, 32);
    let up = |v: Vec<f32>, shape: &[usize]| be.upload_weight(&f32_bytes(&v), WeightDType::F32, shape).unwrap();
    let (w, b) = (up(rng.vec(d * d, 0.3), &[d, d]), up(rng.vec(d, 0.1), &[d]));
    let (gamma, beta) = (up(rng.vec(d, 1.0), &[d]), up(rng.vec(d, 0.1), &[d]));
    let x = be.from_f32(&rng.vec(t * d, 1.0), &[t, d]).unwrap();
    let forward = || {
        let h = be.layer_norm(&x, &gamma, &beta, 1e-5).unwrap();
        let q = be.linear(&h, &w, Some(&b), Activation::GeluErf).unwrap();
        let a = be.attention(&q, &q, &q, 4, 0.25, None).unwrap();
        let y = be.add(&be.mul(&a, &h).unwrap(), &x).unwrap();
        block(be.read_f32(&y)).unwrap()
    };
    let first = forward();
    let after_first = be.bind_group_stats();
    let dispatches = after_first.dispatches;
    assert_eq!(dispatches, 5, "one dispatch per op: {after_first:?}");
    for _ in 0..10 {
        assert_eq!(forward(), first, "forwards are deterministic");
    }
    let after = be.bind_group_stats();
    eprintln!("bind groups: after one forward {after_first:?}, after 10 more {after:?}");
    assert_eq!(after.dispatches, 11 * dispatches);
    assert_eq!(after.created, after_first.created, "10 more forwards created no bind group");
    assert_eq!(after.cached, after_first.cached);

    // A weight used once, then freed with its output: its one bind group leaves the cache.
    let w2 = up(rng.vec(d * d, 0.3), &[d, d]);
    let y2 = be.linear(&x, &w2, None, Activation::Identity).unwrap();
    block(be.read_f32(&y2)).unwrap();
    let with_w2 = be.bind_group_stats();
    assert_eq!((with_w2.created, with_w2.cached), (after.created + 1, after.cached + 1));
    drop((w2, y2));
    assert_eq!(be.bind_group_stats().cached, after.cached, "the freed weight's bind group was dropped");
}

// ---- The decoder's ops (feature maps are channels-last [h·w, c]) ----

#[test]
fn conv2d_matches_cpu_for_3x3_and_1x1_f32_and_f16_awkward_sizes() {
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::new();
    let mut rng = Rng(21);
    for (h, w, cin, cout, k, dtype) in [
        (1, 1, 3, 5, 3, WeightDType::F32),
        (7, 5, 4, 8, 3, WeightDType::F32),
        (8, 8, 33, 65, 3, WeightDType::F16),
        (9, 3, 17, 3, 1, WeightDType::F16),
        (16, 16, 32, 32, 3, WeightDType::F32),
        (64, 64, 4, 32, 3, WeightDType::F32),
    ] {
        let (x, wt, b) = (rng.vec(h * w * cin, 1.0), rng.vec(cout * cin * k * k, 0.3), rng.vec(cout, 0.5));
        let raw = if dtype == WeightDType::F32 { f32_bytes(&wt) } else { f16_bytes(&wt) };
        let shape = [cout, cin * k * k];
        let want = cpu
            .conv2d(
                &cpu.from_f32(&x, &[h * w, cin]).unwrap(),
                h,
                w,
                &cpu.upload_weight(&raw, dtype, &shape).unwrap(),
                Some(&cpu.from_f32(&b, &[cout]).unwrap()),
                k,
            )
            .unwrap();
        let got = gpu
            .conv2d(
                &gpu.from_f32(&x, &[h * w, cin]).unwrap(),
                h,
                w,
                &gpu.upload_weight(&raw, dtype, &shape).unwrap(),
                Some(&gpu.from_f32(&b, &[cout]).unwrap()),
                k,
            )
            .unwrap();
        assert_f32_close(
            &format!("conv2d {h}×{w} {cin}→{cout} k={k} {dtype:?}"),
            &read_gpu(gpu, &got),
            &read_cpu(&want),
        );
    }
    let x = gpu.from_f32(&[0.0; 12], &[6, 2]).unwrap();
    assert!(gpu.conv2d(&x, 2, 2, &gpu.from_f32(&[0.0; 18], &[1, 18]).unwrap(), None, 3).is_err(), "6 rows are not 2×2");
    assert!(gpu.conv2d(&x, 2, 3, &gpu.from_f32(&[0.0; 8], &[1, 8]).unwrap(), None, 2).is_err(), "even kernel");
}

#[test]
fn conv2d_with_a_weight_split_across_buffers_matches_cpu() {
    let Some(gpu) = gpu_splitting_at_4k() else { return };
    let cpu = CpuBackend::new();
    let mut rng = Rng(22);
    let (h, w, cin, cout) = (6, 7, 9, 40);
    let (x, wt, b) = (rng.vec(h * w * cin, 1.0), rng.vec(cout * cin * 9, 0.3), rng.vec(cout, 0.5));
    let gw = gpu.upload_weight(&f32_bytes(&wt), WeightDType::F32, &[cout, cin, 3, 3]).unwrap();
    assert!(gw.buffer_count() > 1);
    let gw = gpu.reshape(&gw, &[cout, cin * 9]).unwrap();
    let got = gpu
        .conv2d(&gpu.from_f32(&x, &[h * w, cin]).unwrap(), h, w, &gw, Some(&gpu.from_f32(&b, &[cout]).unwrap()), 3)
        .unwrap();
    let want = cpu
        .conv2d(
            &cpu.from_f32(&x, &[h * w, cin]).unwrap(),
            h,
            w,
            &cpu.from_f32(&wt, &[cout, cin * 9]).unwrap(),
            Some(&cpu.from_f32(&b, &[cout]).unwrap()),
            3,
        )
        .unwrap();
    assert_f32_close("split conv2d", &read_gpu(&gpu, &got), &read_cpu(&want));
}

#[test]
fn group_norm_matches_cpu_for_group_counts_and_sizes() {
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::new();
    let mut rng = Rng(23);
    for (positions, channels, groups, eps) in
        [(1, 8, 8, 1e-5), (64, 32, 8, 1e-5), (4096, 64, 32, 1e-6), (7, 96, 32, 1e-5), (100, 6, 1, 1e-5)]
    {
        let mut x = rng.vec(positions * channels, 2.0);
        x.iter_mut().enumerate().for_each(|(i, v)| *v += (i % channels) as f32 * 0.1); // groups with offsets
        let (g, b) = (rng.vec(channels, 1.5), rng.vec(channels, 0.5));
        let want = cpu
            .group_norm(
                &cpu.from_f32(&x, &[positions, channels]).unwrap(),
                groups,
                &cpu.from_f32(&g, &[channels]).unwrap(),
                &cpu.from_f32(&b, &[channels]).unwrap(),
                eps,
            )
            .unwrap();
        let got = gpu
            .group_norm(
                &gpu.from_f32(&x, &[positions, channels]).unwrap(),
                groups,
                &gpu.from_f32(&g, &[channels]).unwrap(),
                &gpu.from_f32(&b, &[channels]).unwrap(),
                eps,
            )
            .unwrap();
        assert_f32_close(
            &format!("group_norm {positions}×{channels} groups={groups}"),
            &read_gpu(gpu, &got),
            &read_cpu(&want),
        );
    }
}

#[test]
fn group_norm_with_its_activation_fused_equals_the_two_ops_bit_for_bit() {
    if gpu().is_none() {
        return;
    }
    // A backend of its own: the shared one counts other tests' dispatches too.
    let gpu = &block(GpuBackend::new()).unwrap();
    let mut rng = Rng(29);
    let (positions, channels, groups) = (300, 64, 8);
    let x = gpu.from_f32(&rng.vec(positions * channels, 3.0), &[positions, channels]).unwrap();
    let (g, b) = (
        gpu.from_f32(&rng.vec(channels, 1.5), &[channels]).unwrap(),
        gpu.from_f32(&rng.vec(channels, 0.5), &[channels]).unwrap(),
    );
    let before = gpu.bind_group_stats().dispatches;
    let normed = gpu.group_norm(&x, groups, &g, &b, 1e-5).unwrap();
    assert_eq!(gpu.bind_group_stats().dispatches - before, 1);
    for act in [Activation::Silu, Activation::GeluErf, Activation::QuickGelu, Activation::Identity] {
        let before = gpu.bind_group_stats().dispatches;
        let fused = read_gpu(gpu, &gpu.group_norm_act(&x, groups, &g, &b, 1e-5, act).unwrap());
        assert_eq!(gpu.bind_group_stats().dispatches - before, 1, "{act:?}: one dispatch");
        let two = match act {
            Activation::Identity => read_gpu(gpu, &normed),
            act => read_gpu(gpu, &gpu.activation(&normed, act).unwrap()),
        };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&fused), bits(&two), "{act:?}");
    }
}

#[test]
fn a_linear_with_its_residual_fused_equals_linear_then_add_bit_for_bit() {
    if gpu().is_none() {
        return;
    }
    let gpu =
        &block(GpuBackend::with_options(GpuOptions { max_tensor_bytes: Some(4096), ..GpuOptions::default() })).unwrap();
    let mut rng = Rng(31);
    // m = 1 and 5 (GEMV), 77 and 257 (tiles); n = 130 with weights split by rows into 4 KiB chunks (8 rows of
    // 128 f32, 10 of 96), so each chunk's epilogue adds its own columns of the residual.
    for (m, k, n) in [(1, 128, 130), (5, 64, 16), (77, 128, 130), (257, 96, 64)] {
        let x = gpu.from_f32(&rng.vec(m * k, 1.0), &[m, k]).unwrap();
        let w = gpu.upload_weight(&f32_bytes(&rng.vec(n * k, 0.2)), WeightDType::F32, &[n, k]).unwrap();
        let b = gpu.from_f32(&rng.vec(n, 0.5), &[n]).unwrap();
        let r = gpu.from_f32(&rng.vec(m * n, 2.0), &[m, n]).unwrap();
        let before = gpu.bind_group_stats().dispatches;
        let fused = gpu.linear_residual(&x, &w, Some(&b), &r).unwrap();
        let dispatches = gpu.bind_group_stats().dispatches - before;
        let two = gpu.add(&r, &gpu.linear(&x, &w, Some(&b), Activation::Identity).unwrap()).unwrap();
        let chunks = n.div_ceil((4096 / (k * 4)).max(1)) as u64;
        assert_eq!(dispatches, chunks, "m={m}: one GEMM per chunk of rows, no add");
        let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
        assert_eq!(bits(read_gpu(gpu, &fused)), bits(read_gpu(gpu, &two)), "m={m} k={k} n={n}");
    }
    let x = gpu.from_f32(&[0.0; 6], &[2, 3]).unwrap();
    let w = gpu.from_f32(&[0.0; 12], &[4, 3]).unwrap();
    let err = gpu.linear_residual(&x, &w, None, &gpu.from_f32(&[0.0; 6], &[2, 3]).unwrap()).unwrap_err();
    assert!(err.to_string().contains("residual [2, 3] is not the output's [2, 4]"), "{err}");
}

#[test]
fn consecutive_dispatches_share_one_compute_pass_until_a_copy_or_a_read() {
    if gpu().is_none() {
        return;
    }
    let gpu = &block(GpuBackend::new()).unwrap();
    let mut rng = Rng(37);
    let x = gpu.from_f32(&rng.vec(40 * 16, 1.0), &[40, 16]).unwrap();
    let w = gpu.from_f32(&rng.vec(16 * 16, 0.3), &[16, 16]).unwrap();
    block(gpu.sync()).unwrap();
    let passes = || gpu.bind_group_stats().compute_passes;
    let start = passes();
    let mut h = x.clone();
    for _ in 0..10 {
        h = gpu.linear(&h, &w, None, Activation::Silu).unwrap();
    }
    assert_eq!(passes() - start, 1, "ten linears, one pass");
    // A concat is a buffer copy: it ends the pass; the next dispatch opens another.
    let both = gpu.concat_rows(&[&h, &x]).unwrap();
    let y = gpu.linear(&both, &w, None, Activation::Identity).unwrap();
    assert_eq!(passes() - start, 2, "the copy ended the first pass");
    // And the values are those of the same ops recorded one pass each (the CPU's, within f32 parity).
    let cpu = CpuBackend::new();
    let mut c = cpu.from_f32(&read_gpu(gpu, &x), &[40, 16]).unwrap();
    let cw = cpu.from_f32(&read_gpu(gpu, &w), &[16, 16]).unwrap();
    let cx = c.clone();
    for _ in 0..10 {
        c = cpu.linear(&c, &cw, None, Activation::Silu).unwrap();
    }
    let want = cpu.linear(&cpu.concat_rows(&[&c, &cx]).unwrap(), &cw, None, Activation::Identity).unwrap();
    assert_f32_close("ten linears, a concat and a linear in two passes", &read_gpu(gpu, &y), &read_cpu(&want));
}

#[test]
fn pooling_resizing_concat_mul_scale_shift_and_silu_match_cpu() {
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::new();
    let mut rng = Rng(24);
    let (h, w, c) = (6, 10, 5);
    let x = rng.vec(h * w * c, 2.0);
    let (gx, cx) = (gpu.from_f32(&x, &[h * w, c]).unwrap(), cpu.from_f32(&x, &[h * w, c]).unwrap());
    assert_eq!(
        read_gpu(gpu, &gpu.avg_pool_2x2(&gx, h, w).unwrap()),
        read_cpu(&cpu.avg_pool_2x2(&cx, h, w).unwrap()),
        "avg_pool_2x2"
    );
    assert!(gpu.avg_pool_2x2(&gpu.from_f32(&x[..3 * w * c], &[3 * w, c]).unwrap(), 3, w).is_err(), "odd height");
    for (oh, ow) in [(12, 20), (24, 40), (3, 5), (7, 13), (1, 1)] {
        let got = read_gpu(gpu, &gpu.resize_nearest(&gx, h, w, oh, ow).unwrap());
        assert_eq!(
            got,
            read_cpu(&cpu.resize_nearest(&cx, h, w, oh, ow).unwrap()),
            "resize_nearest {h}×{w} → {oh}×{ow}"
        );
    }
    let parts: Vec<Vec<f32>> = [3usize, 1, 7].iter().map(|&cols| rng.vec(11 * cols, 1.0)).collect();
    let gp: Vec<_> = parts.iter().map(|p| gpu.from_f32(p, &[11, p.len() / 11]).unwrap()).collect();
    let cp: Vec<_> = parts.iter().map(|p| cpu.from_f32(p, &[11, p.len() / 11]).unwrap()).collect();
    let got = read_gpu(gpu, &gpu.concat_cols(&gp.iter().collect::<Vec<_>>()).unwrap());
    assert_eq!(got, read_cpu(&cpu.concat_cols(&cp.iter().collect::<Vec<_>>()).unwrap()), "concat_cols");
    assert!(gpu.concat_cols(&[&gp[0], &gpu.from_f32(&[0.0; 3], &[1, 3]).unwrap()]).is_err(), "row counts differ");
    let y = rng.vec(h * w * c, 2.0);
    let (gy, cy) = (gpu.from_f32(&y, &[h * w, c]).unwrap(), cpu.from_f32(&y, &[h * w, c]).unwrap());
    assert_eq!(read_gpu(gpu, &gpu.mul(&gx, &gy).unwrap()), read_cpu(&cpu.mul(&cx, &cy).unwrap()), "mul");
    let (sc, sh) = (rng.vec(c, 1.0), rng.vec(c, 1.0));
    let got = gpu.scale_shift(&gx, &gpu.from_f32(&sc, &[1, c]).unwrap(), &gpu.from_f32(&sh, &[1, c]).unwrap()).unwrap();
    let want =
        cpu.scale_shift(&cx, &cpu.from_f32(&sc, &[1, c]).unwrap(), &cpu.from_f32(&sh, &[1, c]).unwrap()).unwrap();
    assert_f32_close("scale_shift", &read_gpu(gpu, &got), &read_cpu(&want));
    let mut extremes = x.clone();
    extremes[..4].copy_from_slice(&[-100.0, 100.0, -1e-3, 0.0]);
    let got = read_gpu(gpu, &gpu.activation(&gpu.from_f32(&extremes, &[h * w, c]).unwrap(), Activation::Silu).unwrap());
    let want = read_cpu(&cpu.activation(&cpu.from_f32(&extremes, &[h * w, c]).unwrap(), Activation::Silu).unwrap());
    assert_f32_close("silu", &got, &want);
    // SiLU fused into the GEMM epilogue (conv2d → SiLU is not fused, but linear may be).
    let wt = rng.vec(4 * c, 0.5);
    let got = gpu.linear(&gx, &gpu.from_f32(&wt, &[4, c]).unwrap(), None, Activation::Silu).unwrap();
    let want = cpu.linear(&cx, &cpu.from_f32(&wt, &[4, c]).unwrap(), None, Activation::Silu).unwrap();
    assert_f32_close("linear + silu", &read_gpu(gpu, &got), &read_cpu(&want));
}

#[test]
fn every_gemm_variant_matches_cpu_for_linear_matmul_and_conv() {
    let Some(_) = gpu() else { return };
    let cpu = CpuBackend::new();
    let mut rng = Rng(25);
    // Both tilings, with and without four-at-a-time loads, f16 weights packed and (where the adapter has it)
    // through shader-f16; k multiple of 4 or not.
    for (tile, vec4_loads, use_shader_f16) in
        [(64, true, true), (128, true, true), (64, false, true), (128, false, false), (128, true, false)]
    {
        let options = GpuOptions { gemm_tile: Some(tile), vec4_loads, use_shader_f16, ..GpuOptions::default() };
        let gpu = block(GpuBackend::with_options(options)).unwrap();
        let tile = format!("{tile} vec4 {vec4_loads} shader-f16 {}", gpu.has_shader_f16());
        for (m, k, n) in [(1, 7, 3), (77, 1280, 130), (129, 9, 257), (257, 64, 128), (300, 516, 200)] {
            let (x, w) = (rng.vec(m * k, 1.0), f16_bytes(&rng.vec(n * k, 0.2)));
            let got = gpu
                .linear(
                    &gpu.from_f32(&x, &[m, k]).unwrap(),
                    &gpu.upload_weight(&w, WeightDType::F16, &[n, k]).unwrap(),
                    None,
                    Activation::Identity,
                )
                .unwrap();
            let want = cpu
                .linear(
                    &cpu.from_f32(&x, &[m, k]).unwrap(),
                    &cpu.upload_weight(&w, WeightDType::F16, &[n, k]).unwrap(),
                    None,
                    Activation::Identity,
                )
                .unwrap();
            assert_f32_close(
                &format!("f16 linear tile {tile} m={m} k={k} n={n}"),
                &read_gpu(&gpu, &got),
                &read_cpu(&want),
            );
            let (x, w, b) = (rng.vec(m * k, 1.0), rng.vec(n * k, 0.2), rng.vec(n, 0.5));
            let got = gpu
                .linear(
                    &gpu.from_f32(&x, &[m, k]).unwrap(),
                    &gpu.from_f32(&w, &[n, k]).unwrap(),
                    Some(&gpu.from_f32(&b, &[n]).unwrap()),
                    Activation::GeluErf,
                )
                .unwrap();
            let want = cpu
                .linear(
                    &cpu.from_f32(&x, &[m, k]).unwrap(),
                    &cpu.from_f32(&w, &[n, k]).unwrap(),
                    Some(&cpu.from_f32(&b, &[n]).unwrap()),
                    Activation::GeluErf,
                )
                .unwrap();
            assert_f32_close(&format!("linear tile {tile} m={m} k={k} n={n}"), &read_gpu(&gpu, &got), &read_cpu(&want));
            let got = gpu.matmul(&gpu.from_f32(&x, &[m, k]).unwrap(), &gpu.from_f32(&w, &[k, n]).unwrap()).unwrap();
            let want = cpu.matmul(&cpu.from_f32(&x, &[m, k]).unwrap(), &cpu.from_f32(&w, &[k, n]).unwrap()).unwrap();
            assert_f32_close(&format!("matmul tile {tile} m={m} k={k} n={n}"), &read_gpu(&gpu, &got), &read_cpu(&want));
        }
        let (h, w, cin, cout) = (16, 12, 20, 130);
        let (x, wt) = (rng.vec(h * w * cin, 1.0), rng.vec(cout * cin * 9, 0.2));
        let got = gpu
            .conv2d(
                &gpu.from_f32(&x, &[h * w, cin]).unwrap(),
                h,
                w,
                &gpu.from_f32(&wt, &[cout, cin * 9]).unwrap(),
                None,
                3,
            )
            .unwrap();
        let want = cpu
            .conv2d(
                &cpu.from_f32(&x, &[h * w, cin]).unwrap(),
                h,
                w,
                &cpu.from_f32(&wt, &[cout, cin * 9]).unwrap(),
                None,
                3,
            )
            .unwrap();
        assert_f32_close(&format!("conv2d tile {tile}"), &read_gpu(&gpu, &got), &read_cpu(&want));
    }
}

#[test]
fn gemms_of_at_most_8_rows_take_the_gemv_kernel_and_match_cpu() {
    let Some(_) = gpu() else { return };
    let cpu = CpuBackend::new();
    let mut rng = Rng(27);
    // Default tiling choice (GEMV for m ≤ 8), with and without four-at-a-time loads, f32 and f16 weights; k
    // shorter than, equal to and far past the 32 (or 128) k one pass of the workgroup covers; n not a multiple
    // of the 8 columns per workgroup. The K-split shares added through subgroup operations where the adapter
    // has them (gemm_tile_gemv_subgroup.wgsl) and in workgroup memory (use_subgroups off); the bound holds for
    // either order: K/32 serial terms per lane, then 32 adds at most (a subgroup sum and its totals, or the
    // lanes in order), each rounding once.
    for (vec4_loads, use_shader_f16, use_subgroups) in
        [(true, true, true), (false, true, true), (true, false, true), (true, true, false), (false, false, false)]
    {
        let options = GpuOptions { vec4_loads, use_shader_f16, use_subgroups, ..GpuOptions::default() };
        let gpu = block(GpuBackend::with_options(options)).unwrap();
        for (m, k, n) in [(1, 7, 3), (1, 1280, 1283), (2, 128, 9), (5, 516, 130), (8, 1664, 64), (8, 33, 8)] {
            let (x, w, b) = (rng.vec(m * k, 1.0), rng.vec(n * k, 0.2), rng.vec(n, 0.5));
            let w16 = f16_bytes(&w);
            for (what, dtype, bytes) in [("f32", WeightDType::F32, f32_bytes(&w)), ("f16", WeightDType::F16, w16)] {
                let before = gpu.bind_group_stats().dispatches;
                let got = gpu
                    .linear(
                        &gpu.from_f32(&x, &[m, k]).unwrap(),
                        &gpu.upload_weight(&bytes, dtype, &[n, k]).unwrap(),
                        Some(&gpu.from_f32(&b, &[n]).unwrap()),
                        Activation::Silu,
                    )
                    .unwrap();
                assert_eq!(gpu.bind_group_stats().dispatches - before, 1, "one dispatch");
                let want = cpu
                    .linear(
                        &cpu.from_f32(&x, &[m, k]).unwrap(),
                        &cpu.upload_weight(&bytes, dtype, &[n, k]).unwrap(),
                        Some(&cpu.from_f32(&b, &[n]).unwrap()),
                        Activation::Silu,
                    )
                    .unwrap();
                let sub = gpu.subgroup_sizes();
                let tag = format!("gemv {what} linear vec4 {vec4_loads} subgroups {sub:?} m={m} k={k} n={n}");
                assert_f32_close(&tag, &read_gpu(&gpu, &got), &read_cpu(&want));
            }
            let got = gpu.matmul(&gpu.from_f32(&x, &[m, k]).unwrap(), &gpu.from_f32(&w, &[k, n]).unwrap()).unwrap();
            let want = cpu.matmul(&cpu.from_f32(&x, &[m, k]).unwrap(), &cpu.from_f32(&w, &[k, n]).unwrap()).unwrap();
            assert_f32_close(&format!("gemv matmul m={m} k={k} n={n}"), &read_gpu(&gpu, &got), &read_cpu(&want));
        }
        // A 2×3 image: 6 positions, through the conv gather.
        let (h, w, cin, cout) = (2, 3, 20, 13);
        let (x, wt) = (rng.vec(h * w * cin, 1.0), rng.vec(cout * cin * 9, 0.2));
        let got = gpu
            .conv2d(
                &gpu.from_f32(&x, &[h * w, cin]).unwrap(),
                h,
                w,
                &gpu.from_f32(&wt, &[cout, cin * 9]).unwrap(),
                None,
                3,
            )
            .unwrap();
        let want = cpu
            .conv2d(
                &cpu.from_f32(&x, &[h * w, cin]).unwrap(),
                h,
                w,
                &cpu.from_f32(&wt, &[cout, cin * 9]).unwrap(),
                None,
                3,
            )
            .unwrap();
        assert_f32_close("gemv conv2d 2×3", &read_gpu(&gpu, &got), &read_cpu(&want));
    }
}

#[test]
fn gemm_tiles_in_f16_arithmetic_stay_within_f16_rounding_of_the_exact_product() {
    if gpu().is_none() {
        return;
    }
    let mut rng = Rng(28);
    for (tile, vec4_loads) in [(64, true), (128, true), (64, false), (128, false)] {
        let options = GpuOptions { gemm_tile: Some(tile), vec4_loads, f16_math: true, ..GpuOptions::default() };
        let gpu = block(GpuBackend::with_options(options)).unwrap();
        if !gpu.has_shader_f16() {
            // Without shader-f16 the option is refused silently and the f32 tiles run (what the packed path
            // and the goldens test); nothing f16 to check here.
            assert!(!gpu.has_f16_math());
            continue;
        }
        assert!(gpu.has_f16_math());
        // K-tile of the tiling: 16 products summed in f16 for 64×64, 8 for 128×128.
        let tk = if tile == 64 { 16.0 } else { 8.0 };
        let mut worst = 0.0f64;
        for (m, k, n) in [(9, 7, 3), (77, 1280, 130), (129, 516, 257), (300, 64, 200)] {
            let (x, w, b) = (rng.vec(m * k, 2.0), rng.vec(n * k, 0.3), rng.vec(n, 0.5));
            let got = read_gpu(
                &gpu,
                &gpu.linear(
                    &gpu.from_f32(&x, &[m, k]).unwrap(),
                    &gpu.from_f32(&w, &[n, k]).unwrap(),
                    Some(&gpu.from_f32(&b, &[n]).unwrap()),
                    Activation::Identity,
                )
                .unwrap(),
            );
            // Bound from the arithmetic, per output: x and w rounded to f16 (2 roundings of 2⁻¹¹ per product),
            // tk FMAs in f16 (one rounding each, on partial sums bounded by Σ|x·w|), then f32 for the total
            // across K-tiles, the bias and the store (≤ (k/tk + 4)·2⁻²⁴·(Σ|x·w| + |b|)).
            for i in 0..m {
                for j in 0..n {
                    let (mut exact, mut abs) = (b[j] as f64, 0.0f64);
                    for kk in 0..k {
                        let p = x[i * k + kk] as f64 * w[j * k + kk] as f64;
                        exact += p;
                        abs += p.abs();
                    }
                    let f16_part = (tk + 2.0) * 2f64.powi(-11) * abs;
                    let f32_part = (k as f64 / tk + 4.0) * 2f64.powi(-24) * (abs + b[j].abs() as f64);
                    let err = (got[i * n + j] as f64 - exact).abs();
                    worst = worst.max(err / (f16_part + f32_part));
                    assert!(
                        err <= f16_part + f32_part,
                        "f16 math tile {tile} vec4 {vec4_loads} m={m} k={k} n={n} [{i},{j}]: error {err:e} > {:e}",
                        f16_part + f32_part
                    );
                }
            }
        }
        eprintln!("f16 math tile {tile} vec4 {vec4_loads}: worst error / bound = {worst:.3}");
        // It is f16 arithmetic: a product whose exact value needs more than f16's 11 bits comes back rounded.
        let x = 1.0 + 2f32.powi(-10);
        let got = read_gpu(
            &gpu,
            &gpu.linear(
                &gpu.from_f32(&[x], &[1, 1]).unwrap(),
                &gpu.from_f32(&[x], &[1, 1]).unwrap(),
                None,
                Activation::Identity,
            )
            .unwrap(),
        );
        assert_ne!(got[0], x * x, "tile {tile}: (1 + 2⁻¹⁰)² = 1 + 2⁻⁹ + 2⁻²⁰ in f32, 1 + 2⁻⁹ in f16");
    }
}

#[test]
fn f32_weights_kept_as_f16_take_half_the_bytes_and_stay_close() {
    let Some(gpu) = gpu() else { return };
    let half = gpu.with_f16_weights();
    let cpu = CpuBackend::new();
    let mut rng = Rng(26);
    let (m, k, n) = (64, 96, 130);
    let (x, w, b) = (rng.vec(m * k, 1.0), rng.vec(n * k, 0.2), rng.vec(n, 0.5));
    let w16 = half.upload_weight(&f32_bytes(&w), WeightDType::F32, &[n, k]).unwrap();
    assert_eq!(half.byte_size(&w16), n * k * 2, "an f32 matrix is stored as f16");
    let b16 = half.upload_weight(&f32_bytes(&b), WeightDType::F32, &[n]).unwrap();
    assert_eq!(half.byte_size(&b16), n * 4, "vectors stay f32");
    assert_eq!(
        gpu.byte_size(&gpu.upload_weight(&f32_bytes(&w), WeightDType::F32, &[n, k]).unwrap()),
        n * k * 4,
        "the original handle keeps f32"
    );
    let got = read_gpu(
        &half,
        &half.linear(&half.from_f32(&x, &[m, k]).unwrap(), &w16, Some(&b16), Activation::Identity).unwrap(),
    );
    let want = read_cpu(
        &cpu.linear(
            &cpu.from_f32(&x, &[m, k]).unwrap(),
            &cpu.from_f32(&w, &[n, k]).unwrap(),
            Some(&cpu.from_f32(&b, &[n]).unwrap()),
            Activation::Identity,
        )
        .unwrap(),
    );
    let scale = want.iter().fold(1e-6f32, |s, v| s.max(v.abs()));
    let (rel, cos) = (max_abs(&got, &want) / scale, cosine(&got, &want));
    assert!(rel <= 1e-2 && cos >= 0.9999, "f16-stored weights: rel {rel:e}, cosine {cos}");
}

#[test]
fn int8_quantisation_is_symmetric_per_row() {
    let q = Int8Rows::quantize(&[1.0, -0.5, 0.25, 0.0, 0.0, 0.0, -2.0, 1.0, 0.004], 3);
    assert_eq!(q.scales, vec![1.0 / 127.0, 0.0, 2.0 / 127.0]);
    // −0.5·127 = −63.5 rounds away from zero; 0.004 / (2/127) = 0.254 → 0.
    assert_eq!(q.q, vec![127, -64, 32, 0, 0, 0, -127, 64, 0]);
    let back = q.dequantize();
    assert_eq!(back[0], 1.0);
    assert_eq!(back[6], -2.0);
    assert!((back[1] + 0.5).abs() <= 0.5 / 127.0 + 1e-7);
}

/// Differences of an int8 result from the f32 one: (max-abs relative to the output's largest value, cosine).
fn int8_vs_f32(got: &[f32], want: &[f32]) -> (f32, f64) {
    let scale = want.iter().fold(1e-6f32, |s, v| s.max(v.abs()));
    (max_abs(got, want) / scale, cosine(got, want))
}

#[test]
fn int8_weights_match_cpu_dequantised_and_f32_within_quantisation_error() {
    let Some(_) = gpu() else { return };
    let cpu = CpuBackend::new();
    let cpu8 = cpu.with_int8_weights();
    let mut rng = Rng(41);
    let mut worst = (0.0f32, 1.0f64);
    // Both tilings, element and four-at-a-time loads; k a multiple of 4 or not (scalar path).
    for (tile, vec4_loads) in [(64, true), (128, true), (64, false), (128, false)] {
        let options = GpuOptions { gemm_tile: Some(tile), vec4_loads, ..GpuOptions::default() };
        let gpu8 = block(GpuBackend::with_options(options)).unwrap().with_int8_weights();
        let what = |op: &str, dims: String| format!("int8 {op} tile {tile} vec4 {vec4_loads} {dims}");
        for (m, k, n) in [(1, 7, 3), (77, 1280, 130), (129, 9, 257), (300, 516, 200)] {
            let (x, w, b) = (rng.vec(m * k, 1.0), rng.vec(n * k, 0.2), rng.vec(n, 0.5));
            let gx = gpu8.from_f32(&x, &[m, k]).unwrap();
            let cx = cpu.from_f32(&x, &[m, k]).unwrap();
            let gw = gpu8.upload_weight(&f32_bytes(&w), WeightDType::F32, &[n, k]).unwrap();
            let cw8 = cpu8.upload_weight(&f32_bytes(&w), WeightDType::F32, &[n, k]).unwrap();
            let (gb, cb) = (gpu8.from_f32(&b, &[n]).unwrap(), cpu.from_f32(&b, &[n]).unwrap());
            let got = read_gpu(&gpu8, &gpu8.linear(&gx, &gw, Some(&gb), Activation::GeluErf).unwrap());
            let want8 = read_cpu(&cpu.linear(&cx, &cw8, Some(&cb), Activation::GeluErf).unwrap());
            assert_f32_close(&what("linear", format!("m={m} k={k} n={n}")), &got, &want8);
            let want32 = read_cpu(
                &cpu.linear(&cx, &cpu.from_f32(&w, &[n, k]).unwrap(), Some(&cb), Activation::GeluErf).unwrap(),
            );
            let (rel, cos) = int8_vs_f32(&got, &want32);
            worst = (worst.0.max(rel), worst.1.min(cos));
            assert!(
                rel <= 1e-2 && cos >= 0.999,
                "{}: vs f32 rel {rel:e}, cosine {cos}",
                what("linear", format!("m={m} k={k} n={n}"))
            );
            // A weight as matmul's right operand [k, n]: its rows (scales) run along k, not the outputs.
            let gb = gpu8.upload_weight(&f32_bytes(&w), WeightDType::F32, &[k, n]).unwrap();
            let cb8 = cpu8.upload_weight(&f32_bytes(&w), WeightDType::F32, &[k, n]).unwrap();
            let got = read_gpu(&gpu8, &gpu8.matmul(&gx, &gb).unwrap());
            assert_f32_close(
                &what("matmul", format!("m={m} k={k} n={n}")),
                &got,
                &read_cpu(&cpu.matmul(&cx, &cb8).unwrap()),
            );
        }
        // 3×3 and 1×1 convolutions: the implicit-im2col input with the int8 reader; a [cout, cin, 3, 3] weight
        // from f16 bytes, viewed as [cout, cin·9] like models/conv.rs does.
        for (h, w, cin, cout, ks) in [(16, 12, 20, 130, 3), (9, 7, 33, 65, 1)] {
            let (x, wt, b) = (rng.vec(h * w * cin, 1.0), rng.vec(cout * cin * ks * ks, 0.2), rng.vec(cout, 0.5));
            let raw = f16_bytes(&wt);
            let gw = gpu8.upload_weight(&raw, WeightDType::F16, &[cout, cin, ks, ks]).unwrap();
            let gw = gpu8.reshape(&gw, &[cout, cin * ks * ks]).unwrap();
            let cw8 = cpu8.upload_weight(&raw, WeightDType::F16, &[cout, cin, ks, ks]).unwrap();
            let cw8 = cpu.reshape(&cw8, &[cout, cin * ks * ks]).unwrap();
            let cw32 = cpu.upload_weight(&raw, WeightDType::F16, &[cout, cin * ks * ks]).unwrap();
            let (gx, cx) = (gpu8.from_f32(&x, &[h * w, cin]).unwrap(), cpu.from_f32(&x, &[h * w, cin]).unwrap());
            let (gb, cb) = (gpu8.from_f32(&b, &[cout]).unwrap(), cpu.from_f32(&b, &[cout]).unwrap());
            let got = read_gpu(&gpu8, &gpu8.conv2d(&gx, h, w, &gw, Some(&gb), ks).unwrap());
            assert_f32_close(
                &what("conv2d", format!("{ks}×{ks} {h}×{w}×{cin}→{cout}")),
                &got,
                &read_cpu(&cpu.conv2d(&cx, h, w, &cw8, Some(&cb), ks).unwrap()),
            );
            let (rel, cos) = int8_vs_f32(&got, &read_cpu(&cpu.conv2d(&cx, h, w, &cw32, Some(&cb), ks).unwrap()));
            worst = (worst.0.max(rel), worst.1.min(cos));
            assert!(
                rel <= 1e-2 && cos >= 0.999,
                "{}: vs f32 rel {rel:e}, cosine {cos}",
                what("conv2d", format!("{ks}×{ks}"))
            );
        }
    }
    eprintln!("int8 vs f32 (random weights): worst max-abs / scale {:e}, lowest cosine {}", worst.0, worst.1);
}

#[test]
fn int8_weights_take_a_quarter_of_f32_and_other_ops_dequantise() {
    let Some(gpu) = gpu() else { return };
    let gpu8 = gpu.with_int8_weights();
    let cpu8 = CpuBackend::new().with_int8_weights();
    let mut rng = Rng(42);
    let (n, k) = (130, 96);
    let w = rng.vec(n * k, 0.2);
    let w8 = gpu8.upload_weight(&f32_bytes(&w), WeightDType::F32, &[n, k]).unwrap();
    let w32 = gpu.upload_weight(&f32_bytes(&w), WeightDType::F32, &[n, k]).unwrap();
    let (bytes8, bytes32) = (gpu8.byte_size(&w8), gpu.byte_size(&w32));
    eprintln!(
        "[{n}, {k}] matrix on the GPU: f32 {bytes32} bytes, int8 {bytes8} bytes (q {} + scales {})",
        n * k,
        n * 4
    );
    assert_eq!(bytes8, n * k + n * 4, "one byte per element plus an f32 scale per row");
    assert!(bytes8 * 4 <= bytes32 + 16 * n, "int8 is about a quarter of f32");
    let b = rng.vec(n, 0.5);
    assert_eq!(
        gpu8.byte_size(&gpu8.upload_weight(&f32_bytes(&b), WeightDType::F32, &[n]).unwrap()),
        n * 4,
        "vectors stay f32"
    );
    // gather_rows reads int8 in place, other ops (slice_rows, the read-back) dequantise first
    // (dequantize_i8.wgsl): the same values as the CPU's.
    let c8 = cpu8.upload_weight(&f32_bytes(&w), WeightDType::F32, &[n, k]).unwrap();
    let ids = [n as u32 - 1, 0, 7, 7];
    assert_eq!(
        read_gpu(&gpu8, &gpu8.gather_rows(&w8, &ids).unwrap()),
        read_cpu(&cpu8.gather_rows(&c8, &ids).unwrap()),
        "gather_rows"
    );
    assert_eq!(
        read_gpu(&gpu8, &gpu8.slice_rows(&w8, 3, 5).unwrap()),
        read_cpu(&cpu8.slice_rows(&c8, 3, 5).unwrap()),
        "slice_rows"
    );
    assert_eq!(read_gpu(&gpu8, &w8), read_cpu(&c8), "read back");
}

#[test]
fn split_int8_weights_use_their_rows_scales_in_linear_and_conv() {
    let Some(gpu) = gpu_splitting_at_4k() else { return };
    let gpu8 = gpu.with_int8_weights();
    let cpu = CpuBackend::new();
    let cpu8 = cpu.with_int8_weights();
    let mut rng = Rng(43);
    // Odd row lengths, so chunks start mid-word in the unsplit layout; row scales differ widely so a chunk
    // reading another chunk's scales would show.
    for (m, k, n) in [(5, 33, 301), (64, 100, 130)] {
        let (x, mut w) = (rng.vec(m * k, 1.0), rng.vec(n * k, 0.3));
        for (r, row) in w.chunks_mut(k).enumerate() {
            row.iter_mut().for_each(|v| *v *= 1.0 + (r % 7) as f32);
        }
        let gw = gpu8.upload_weight(&f32_bytes(&w), WeightDType::F32, &[n, k]).unwrap();
        assert!(gw.buffer_count() > 1, "int8 [{n}, {k}] ({} bytes) should be split", n * k);
        let bytes = gpu8.byte_size(&gw);
        assert!(bytes >= n * k + n * 4 && bytes <= n * k + n * 4 + 4 * gw.buffer_count(), "split int8: {bytes} bytes");
        let cw = cpu8.upload_weight(&f32_bytes(&w), WeightDType::F32, &[n, k]).unwrap();
        let got = read_gpu(
            &gpu8,
            &gpu8.linear(&gpu8.from_f32(&x, &[m, k]).unwrap(), &gw, None, Activation::Identity).unwrap(),
        );
        let want = read_cpu(&cpu.linear(&cpu.from_f32(&x, &[m, k]).unwrap(), &cw, None, Activation::Identity).unwrap());
        assert_f32_close(&format!("split int8 linear m={m} k={k} n={n} in {} buffers", gw.buffer_count()), &got, &want);
        let ids: Vec<u32> = [n - 1, 0, n / 2, 1, n - 1, n / 3].iter().map(|&i| i as u32).collect();
        let got = read_gpu(&gpu8, &gpu8.gather_rows(&gw, &ids).unwrap());
        assert_eq!(got, read_cpu(&cpu8.gather_rows(&cw, &ids).unwrap()), "split int8 gather_rows");
    }
    let (h, w, cin, cout) = (8, 6, 11, 70);
    let (x, wt) = (rng.vec(h * w * cin, 1.0), rng.vec(cout * cin * 9, 0.2));
    let gw = gpu8.upload_weight(&f32_bytes(&wt), WeightDType::F32, &[cout, cin * 9]).unwrap();
    assert!(gw.buffer_count() > 1, "conv weight should be split");
    let cw = cpu8.upload_weight(&f32_bytes(&wt), WeightDType::F32, &[cout, cin * 9]).unwrap();
    let got = read_gpu(&gpu8, &gpu8.conv2d(&gpu8.from_f32(&x, &[h * w, cin]).unwrap(), h, w, &gw, None, 3).unwrap());
    let want = read_cpu(&cpu.conv2d(&cpu.from_f32(&x, &[h * w, cin]).unwrap(), h, w, &cw, None, 3).unwrap());
    assert_f32_close(&format!("split int8 conv2d in {} buffers", gw.buffer_count()), &got, &want);
}

#[test]
fn fma_peak_is_measured_in_f32_and_in_f16_only_with_shader_f16() {
    let Some(gpu) = gpu() else { return };
    let f32_peak = block(gpu.fma_peak_gflops(false)).unwrap().expect("f32 peak");
    assert!(f32_peak.is_finite() && f32_peak > 0.0, "f32 FMA peak {f32_peak}");
    let f16_peak = block(gpu.fma_peak_gflops(true)).unwrap();
    assert_eq!(f16_peak.is_some(), gpu.has_shader_f16(), "f16 peak {f16_peak:?}");
    let packed =
        block(GpuBackend::with_options(GpuOptions { use_shader_f16: false, ..GpuOptions::default() })).unwrap();
    assert_eq!(block(packed.fma_peak_gflops(true)).unwrap(), None, "no f16 arithmetic without shader-f16");
}

/// A GPU backend with split-K forced on (every tiled product whose K holds two K-tiles), and the given loads and
/// f16 path.
fn gpu_split_k(vec4_loads: bool, use_shader_f16: bool) -> GpuBackend {
    let options = GpuOptions { split_k: Some(true), vec4_loads, use_shader_f16, ..GpuOptions::default() };
    block(GpuBackend::with_options(options)).unwrap()
}

/// Split-K: the tiled GEMM computes each K slice's partial sums into scratch and a reduce adds them in slice
/// order, then applies the epilogue. Forced on, every weight reader (f32, f16 native where the adapter has it and
/// packed, int8, Q8_0, Q4_0) × both load paths, against the CPU within the file's f32 bound: outputs not
/// multiples of the 64² tile, K never a multiple of slices × 16 (K = 1056: 14 slices, the last 16 long; 300:
/// 10, the last 12; 2080: 15, the last 64; 1001: odd, element-wise loads), with bias + activation (linear) and
/// bias + residual (linear_residual). Two dispatches (the slices, the reduce) show the split was taken.
#[test]
fn split_k_gemms_match_cpu_for_every_weight_type_with_bias_activation_and_residual() {
    if gpu().is_none() {
        return;
    }
    use lambda_eclipse::ops::blocks;
    let cpu = CpuBackend::new();
    let cpu8 = cpu.with_int8_weights();
    let mut rng = Rng(51);
    for (vec4_loads, use_shader_f16) in [(true, true), (false, false)] {
        let gpu = gpu_split_k(vec4_loads, use_shader_f16);
        let gpu8 = gpu.with_int8_weights();
        let path = format!("vec4 {vec4_loads} shader-f16 {}", gpu.has_shader_f16());
        for (m, k, n) in [(77, 1056, 130), (33, 300, 70), (129, 2080, 65), (40, 1001, 97)] {
            let (x, w, b, r) = (rng.vec(m * k, 1.0), rng.vec(n * k, 0.2), rng.vec(n, 0.5), rng.vec(m * n, 2.0));
            let (gx, gb, gr) = (
                gpu.from_f32(&x, &[m, k]).unwrap(),
                gpu.from_f32(&b, &[n]).unwrap(),
                gpu.from_f32(&r, &[m, n]).unwrap(),
            );
            let (cx, cb, cr) = (
                cpu.from_f32(&x, &[m, k]).unwrap(),
                cpu.from_f32(&b, &[n]).unwrap(),
                cpu.from_f32(&r, &[m, n]).unwrap(),
            );
            let mut weights = vec![
                (
                    "f32",
                    gpu.upload_weight(&f32_bytes(&w), WeightDType::F32, &[n, k]).unwrap(),
                    cpu.from_f32(&w, &[n, k]).unwrap(),
                ),
                (
                    "f16",
                    gpu.upload_weight(&f16_bytes(&w), WeightDType::F16, &[n, k]).unwrap(),
                    cpu.upload_weight(&f16_bytes(&w), WeightDType::F16, &[n, k]).unwrap(),
                ),
                (
                    "int8",
                    gpu8.upload_weight(&f32_bytes(&w), WeightDType::F32, &[n, k]).unwrap(),
                    cpu8.upload_weight(&f32_bytes(&w), WeightDType::F32, &[n, k]).unwrap(),
                ),
            ];
            // ggml blocks run along rows of 32: the CPU reference multiplies the host's dequantised values
            // (the GPU's reader reproduces them bit for bit, tests/quantized.rs).
            if k % 32 == 0 {
                for dtype in [WeightDType::Q8_0, WeightDType::Q4_0] {
                    let raw = blocks::quantize(dtype, &w, &[n, k]).unwrap();
                    let on_cpu = read_cpu(&cpu.upload_weight(&raw, dtype, &[n, k]).unwrap());
                    weights.push((
                        dtype.name(),
                        gpu.upload_weight(&raw, dtype, &[n, k]).unwrap(),
                        cpu.from_f32(&on_cpu, &[n, k]).unwrap(),
                    ));
                }
            }
            for (what, gw, cw) in &weights {
                let tag = format!("split-K {what} {path} m={m} k={k} n={n}");
                let before = gpu.bind_group_stats().dispatches;
                let got = gpu.linear(&gx, gw, Some(&gb), Activation::GeluErf).unwrap();
                assert_eq!(gpu.bind_group_stats().dispatches - before, 2, "{tag}: slices + reduce");
                let want = cpu.linear(&cx, cw, Some(&cb), Activation::GeluErf).unwrap();
                assert_f32_close(&format!("{tag} linear + bias + GELU"), &read_gpu(&gpu, &got), &read_cpu(&want));
                let got = gpu.linear_residual(&gx, gw, Some(&gb), &gr).unwrap();
                let want = cpu.linear_residual(&cx, cw, Some(&cb), &cr).unwrap();
                assert_f32_close(&format!("{tag} linear + bias + residual"), &read_gpu(&gpu, &got), &read_cpu(&want));
            }
            // matmul's right operand at strides (1, n): the weight reader's strided path.
            let got = gpu.matmul(&gx, &gpu.from_f32(&w, &[k, n]).unwrap()).unwrap();
            let want = cpu.matmul(&cx, &cpu.from_f32(&w, &[k, n]).unwrap()).unwrap();
            assert_f32_close(
                &format!("split-K matmul {path} m={m} k={k} n={n}"),
                &read_gpu(&gpu, &got),
                &read_cpu(&want),
            );
        }
    }
}

/// Split-K in the f16-math tilings (adapters with shader-f16): each K-tile's f16 products are the unsplit
/// kernel's exactly (slices start on K-tile boundaries), only the f32 totals are grouped by slice, so split and
/// unsplit differ by f32 rounding of those totals alone: at most (K/TK + S)·2⁻²⁴·Σ|x·w| ≈ 1e-5 of the scale
/// here, within the file's f32 bound.
#[test]
fn split_k_in_f16_arithmetic_equals_the_unsplit_f16_tiles_within_f32_rounding() {
    if gpu().is_none() {
        return;
    }
    let mut rng = Rng(54);
    for tile in [64, 128] {
        let open = |split_k| {
            let options = GpuOptions { gemm_tile: Some(tile), f16_math: true, split_k, ..GpuOptions::default() };
            block(GpuBackend::with_options(options)).unwrap()
        };
        let (split, whole) = (open(Some(true)), open(Some(false)));
        if !split.has_f16_math() {
            eprintln!("no shader-f16: the f16-math tilings cannot run here");
            return;
        }
        for (m, k, n) in [(77, 1056, 130), (129, 300, 65)] {
            let (x, w, b) = (rng.vec(m * k, 1.0), rng.vec(n * k, 0.2), rng.vec(n, 0.5));
            let run = |be: &GpuBackend| {
                let before = be.bind_group_stats().dispatches;
                let y = be
                    .linear(
                        &be.from_f32(&x, &[m, k]).unwrap(),
                        &be.from_f32(&w, &[n, k]).unwrap(),
                        Some(&be.from_f32(&b, &[n]).unwrap()),
                        Activation::GeluErf,
                    )
                    .unwrap();
                (be.bind_group_stats().dispatches - before, read_gpu(be, &y))
            };
            let ((d_split, got), (d_whole, want)) = (run(&split), run(&whole));
            assert_eq!((d_split, d_whole), (2, 1), "tile {tile}: split into slices + reduce, unsplit one dispatch");
            assert_f32_close(&format!("f16-math split-K tile {tile} m={m} k={k} n={n}"), &got, &want);
        }
    }
}

/// The implicit-GEMM conv splits K (= cin·9) like a linear, and a weight split by rows across buffers splits
/// each chunk's product: every chunk's reduce writes its own output columns, bias and residual.
#[test]
fn split_k_conv2d_and_row_split_weights_match_cpu() {
    if gpu().is_none() {
        return;
    }
    let cpu = CpuBackend::new();
    let mut rng = Rng(52);
    let gpu = gpu_split_k(true, true);
    for (h, w, cin, cout) in [(9, 11, 130, 70), (16, 12, 37, 65)] {
        let (x, wt, b) = (rng.vec(h * w * cin, 1.0), rng.vec(cout * cin * 9, 0.2), rng.vec(cout, 0.5));
        let before = gpu.bind_group_stats().dispatches;
        let got = gpu
            .conv2d(
                &gpu.from_f32(&x, &[h * w, cin]).unwrap(),
                h,
                w,
                &gpu.from_f32(&wt, &[cout, cin * 9]).unwrap(),
                Some(&gpu.from_f32(&b, &[cout]).unwrap()),
                3,
            )
            .unwrap();
        assert_eq!(gpu.bind_group_stats().dispatches - before, 2, "conv {h}×{w}×{cin}: slices + reduce");
        let want = cpu
            .conv2d(
                &cpu.from_f32(&x, &[h * w, cin]).unwrap(),
                h,
                w,
                &cpu.from_f32(&wt, &[cout, cin * 9]).unwrap(),
                Some(&cpu.from_f32(&b, &[cout]).unwrap()),
                3,
            )
            .unwrap();
        assert_f32_close(&format!("split-K conv2d 3×3 {h}×{w}×{cin}→{cout}"), &read_gpu(&gpu, &got), &read_cpu(&want));
    }
    // 16 KiB chunks of a [70, 600] f32 weight: 6 rows each, 12 chunks, each split into K slices.
    let options = GpuOptions { split_k: Some(true), max_tensor_bytes: Some(16384), ..GpuOptions::default() };
    let gpu = block(GpuBackend::with_options(options)).unwrap();
    let (m, k, n) = (77, 600, 70);
    let (x, w, b, r) = (rng.vec(m * k, 1.0), rng.vec(n * k, 0.2), rng.vec(n, 0.5), rng.vec(m * n, 2.0));
    let gw = gpu.upload_weight(&f32_bytes(&w), WeightDType::F32, &[n, k]).unwrap();
    let before = gpu.bind_group_stats().dispatches;
    let got = gpu
        .linear_residual(
            &gpu.from_f32(&x, &[m, k]).unwrap(),
            &gw,
            Some(&gpu.from_f32(&b, &[n]).unwrap()),
            &gpu.from_f32(&r, &[m, n]).unwrap(),
        )
        .unwrap();
    assert_eq!(gpu.bind_group_stats().dispatches - before, 2 * 12, "12 chunks, each slices + reduce");
    let want = cpu
        .linear_residual(
            &cpu.from_f32(&x, &[m, k]).unwrap(),
            &cpu.from_f32(&w, &[n, k]).unwrap(),
            Some(&cpu.from_f32(&b, &[n]).unwrap()),
            &cpu.from_f32(&r, &[m, n]).unwrap(),
        )
        .unwrap();
    assert_f32_close("split-K linear_residual, weight in 12 row chunks", &read_gpu(&gpu, &got), &read_cpu(&want));
}

/// The automatic rule never splits on a CPU adapter (lavapipe, SwiftShader: a few workgroups fill its cores)
/// and does on a GPU adapter where 2 tiles would each walk K = 5120 (the rule's unit tests: ops/gpu/ops/gemm.rs);
/// forced off never splits, forced on does.
#[test]
fn split_k_stays_off_when_forced_off_and_on_cpu_adapters_by_default() {
    let Some(gpu) = gpu() else { return };
    let (m, k, n) = (77, 5120, 64);
    let mut rng = Rng(53);
    let (x, w) = (rng.vec(m * k, 1.0), rng.vec(n * k, 0.2));
    let off = block(GpuBackend::with_options(GpuOptions { split_k: Some(false), ..GpuOptions::default() })).unwrap();
    let on = gpu_split_k(true, true);
    let mut results = Vec::new();
    // Automatic: 2 tiles of 64² with K = 5120 → 10 slices on a GPU adapter; none on a CPU adapter.
    let auto = if gpu.is_cpu_adapter() { 1 } else { 2 };
    for (be, expect, what) in [(gpu, auto, "auto"), (&off, 1, "forced off"), (&on, 2, "forced on")] {
        let before = be.bind_group_stats().dispatches;
        let y = be
            .linear(&be.from_f32(&x, &[m, k]).unwrap(), &be.from_f32(&w, &[n, k]).unwrap(), None, Activation::Identity)
            .unwrap();
        let cpu = be.is_cpu_adapter();
        assert_eq!(be.bind_group_stats().dispatches - before, expect, "{what}, CPU adapter {cpu}");
        results.push(read_gpu(be, &y));
    }
    // Same values within the f32 bound whichever path: the slices only regroup the sum.
    assert_f32_close("split-K on vs off", &results[2], &results[1]);
}

/// The norms' and the softmax's workgroup reductions through subgroup operations (where the adapter has the
/// feature) and through workgroup memory (forced: GpuOptions::use_subgroups off), each against the CPU within the
/// file's f32 bound (max-abs ≤ 1e-4 · scale). Why that bound holds for either order: a sum is cols/256 serial
/// terms per invocation, then the tree's 8 levels, or a subgroup sum (at most 127 adds in whatever order the
/// adapter uses) and at most 63 serial adds of the subgroup totals; each add rounds once, so a mean (and a
/// variance) is off by at most (cols/256 + 190)·2⁻²⁴ ≈ 1.2e-5 of Σ|x|/n for the widest row here (4097) — below
/// 1e-4 after the division by the spread (≥ 1 here) — and a maximum is exact in any order. The softmax runs
/// through blocked attention (scores, softmax_rows, P·V), rows of 2 to 1100.
#[test]
fn norms_and_softmax_reduce_through_subgroups_and_workgroup_memory_alike() {
    let Some(default) = gpu() else { return };
    let cpu = CpuBackend::new();
    let mut rng = Rng(61);
    let open = |use_subgroups| {
        let options = GpuOptions { use_subgroups, blocked_attention: true, ..GpuOptions::default() };
        block(GpuBackend::with_options(options)).unwrap()
    };
    let (with, without) = (open(true), open(false));
    assert_eq!(without.subgroup_sizes(), None, "forced portable");
    assert_eq!(with.subgroup_sizes(), default.subgroup_sizes(), "subgroups are on by default where offered");
    eprintln!("adapter {}: subgroup sizes {:?}", with.adapter_description(), with.subgroup_sizes());
    for gpu in [&with, &without] {
        let path = format!("subgroups {:?}", gpu.subgroup_sizes());
        for (rows, cols) in [(1, 1), (77, 1280), (3, 4097), (257, 33)] {
            let x: Vec<f32> = rng.vec(rows * cols, 8.0).iter().map(|v| v + 3.0).collect();
            let (g, b) = (rng.vec(cols, 1.5), rng.vec(cols, 0.5));
            let want = cpu
                .layer_norm(
                    &cpu.from_f32(&x, &[rows, cols]).unwrap(),
                    &cpu.from_f32(&g, &[cols]).unwrap(),
                    &cpu.from_f32(&b, &[cols]).unwrap(),
                    1e-5,
                )
                .unwrap();
            let got = gpu
                .layer_norm(
                    &gpu.from_f32(&x, &[rows, cols]).unwrap(),
                    &gpu.from_f32(&g, &[cols]).unwrap(),
                    &gpu.from_f32(&b, &[cols]).unwrap(),
                    1e-5,
                )
                .unwrap();
            assert_f32_close(&format!("layer_norm {rows}×{cols} {path}"), &read_gpu(gpu, &got), &read_cpu(&want));
        }
        for (positions, channels, groups) in [(4096, 64, 32), (7, 96, 32), (100, 6, 1), (1, 8, 8)] {
            let mut x = rng.vec(positions * channels, 2.0);
            x.iter_mut().enumerate().for_each(|(i, v)| *v += (i % channels) as f32 * 0.1);
            let (g, b) = (rng.vec(channels, 1.5), rng.vec(channels, 0.5));
            let want = cpu
                .group_norm(
                    &cpu.from_f32(&x, &[positions, channels]).unwrap(),
                    groups,
                    &cpu.from_f32(&g, &[channels]).unwrap(),
                    &cpu.from_f32(&b, &[channels]).unwrap(),
                    1e-5,
                )
                .unwrap();
            let got = gpu
                .group_norm(
                    &gpu.from_f32(&x, &[positions, channels]).unwrap(),
                    groups,
                    &gpu.from_f32(&g, &[channels]).unwrap(),
                    &gpu.from_f32(&b, &[channels]).unwrap(),
                    1e-5,
                )
                .unwrap();
            let tag = format!("group_norm {positions}×{channels} groups={groups} {path}");
            assert_f32_close(&tag, &read_gpu(gpu, &got), &read_cpu(&want));
        }
        for (t, s, heads, d, with_bias) in [(300, 300, 1, 512, false), (5, 2, 1, 64, true), (40, 1100, 2, 260, true)] {
            let width = heads * d;
            let (q, k, v) = (rng.vec(t * width, 1.0), rng.vec(s * width, 1.0), rng.vec(s * width, 1.0));
            let bias = with_bias.then(|| rng.vec(t * s, 3.0));
            let (got, want) = attention_both(gpu, &q, &k, &v, (t, s, width), heads, bias.as_ref());
            assert_f32_close(&format!("softmax_rows via attention t={t} s={s} d={d} {path}"), &got, &want);
        }
    }
}

/// GpuOptions::profile_kernels (the bench's --profile-kernels): every dispatch is counted under its kernel
/// variant with its time, the results are the unprofiled device's bit for bit (it only waits between
/// dispatches), and taking the profile starts it over.
#[test]
fn profiled_dispatches_are_counted_per_kernel_variant_and_compute_the_same_values() {
    let Some(plain) = gpu() else { return };
    let profiled =
        block(GpuBackend::with_options(GpuOptions { profile_kernels: true, ..GpuOptions::default() })).unwrap();
    let mut rng = Rng(41);
    let (m, k, n) = (77, 64, 130);
    let (x, w) = (rng.vec(m * k, 1.0), f32_bytes(&rng.vec(n * k, 0.5)));
    let run = |be: &GpuBackend| {
        let y = be
            .linear(
                &be.from_f32(&x, &[m, k]).unwrap(),
                &be.upload_weight(&w, WeightDType::F32, &[n, k]).unwrap(),
                None,
                Activation::GeluErf,
            )
            .unwrap();
        let y = be.add(&y, &y).unwrap();
        read_gpu(be, &y)
    };
    assert!(plain.take_kernel_profile().is_empty(), "an unprofiled device records nothing");
    assert_eq!(run(&profiled), run(plain));
    let profile = profiled.take_kernel_profile();
    let gemm: Vec<_> = profile.iter().filter(|(name, _)| name.starts_with("Gemm(")).collect();
    assert_eq!(gemm.len(), 1, "one GEMM variant in {profile:?}");
    assert_eq!(gemm[0].1 .0, 1, "one GEMM dispatch in {profile:?}");
    assert_eq!(profile.get("Add").map(|e| e.0), Some(1), "one add in {profile:?}");
    assert!(profile.values().all(|&(_, ms)| ms >= 0.0 && ms.is_finite()), "{profile:?}");
    assert!(profiled.take_kernel_profile().is_empty(), "taking the profile starts it over");
}
