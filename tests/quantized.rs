//! Quantized model folders (`lambda-eclipse quantize`, GGUF with ggml block types): the tiny λ model quantized
//! to q8_0 and q4_m reproduces the f32 goldens' text, image and prior stages within the issue's acceptance
//! (cosine ≥ 0.999 for q8_0, ≥ 0.99 for the 4-bit q4_m; all-q4_0 as far as its steps predict) on the CPU
//! and on WebGPU; both backends dequantise blocks to the
//! same values; the folder keeps the original's layout and loads through every loader; corrupt GGUF files
//! are refused with the file and the tensor named.
//!
//! Why cosine, and these bounds: quantisation is an approximation, not a rounding of the reference's
//! arithmetic, so the goldens' 1e-4 max-abs bounds do not apply. The acceptance is the issue's: an embedding
//! that points the same way (cosine ≥ 0.999 at 8 bits) decodes to the same picture; 4 bits (≈ 16× the error
//! of 8) is allowed 10× the angle.

mod common;
use common::*;
use lambda_eclipse::ops::blocks::cosine;
use lambda_eclipse::ops::cpu::CpuBackend;
use lambda_eclipse::ops::{Backend, WeightDType};
use lambda_eclipse::pipeline::lambda::Noise;
use lambda_eclipse::pipeline::LambdaEngine;
use lambda_eclipse::quantize::{quantize_folder, Recipe, Report};
use lambda_eclipse::weights::DirFiles;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The tiny λ model quantized once per recipe for all tests of this binary, and what `quantize` reported.
fn quantized_with_report(recipe: impl Into<Recipe>) -> &'static (PathBuf, Report) {
    static Q8: OnceLock<(PathBuf, Report)> = OnceLock::new();
    static Q4: OnceLock<(PathBuf, Report)> = OnceLock::new();
    static Q4M: OnceLock<(PathBuf, Report)> = OnceLock::new();
    let recipe = recipe.into();
    let cell = match recipe {
        Recipe::Uniform(WeightDType::Q8_0) => &Q8,
        Recipe::Uniform(_) => &Q4,
        Recipe::Q4Mixed => &Q4M,
    };
    cell.get_or_init(|| {
        let out = scratch("quantized", recipe.name()).join("model");
        let report = quantize_folder(&tiny_model(), &out, recipe, |_| {}).expect("quantize the tiny model");
        (out, report)
    })
}

fn quantized(recipe: impl Into<Recipe>) -> PathBuf {
    quantized_with_report(recipe).0.clone()
}

fn engine<B: Backend>(be: B, dir: &Path) -> LambdaEngine<B> {
    pollster::block_on(LambdaEngine::load(be, &DirFiles::new(dir), &mut |_, _, _| {})).unwrap()
}

/// The lowest cosine over every golden case of each stage: text (`last_hidden_state`), image (each subject's
/// `image_embeds`), prior (`image_embeds` from the golden noise).
fn stage_cosines<B: Backend>(engine: &LambdaEngine<B>) -> [(&'static str, f64); 3] {
    let (mut text, mut image, mut prior) = (1f64, 1f64, 1f64);
    for case in cases() {
        let g = Golden::open(&case);
        let t = pollster::block_on(engine.embed_text(&case.prompt)).unwrap();
        text = text.min(cosine(&t.last_hidden_state, &g.f32("last_hidden_state").1));
        for (i, s) in case.subjects.iter().enumerate() {
            let got = pollster::block_on(engine.subject_embedding(&std::fs::read(asset(&s.image)).unwrap())).unwrap();
            image = image.min(cosine(&got, &g.f32(&format!("subject{i}_image_embeds")).1));
        }
        let out = pollster::block_on(engine.run(&golden_request(&case, Noise::Explicit(g.f32("noise").1)))).unwrap();
        prior = prior.min(cosine(&out.image_embeds, &g.f32("image_embeds").1));
    }
    [("text", text), ("image", image), ("prior", prior)]
}

/// The q8_0 folder: every stage at cosine ≥ 0.999 (the issue's acceptance). The q4_0 folder: every stage as
/// far from the goldens as its coarser steps predict, and no further. For small perturbations a stage's
/// output error is linear in the weights' error, so `1 − cosine` (∝ error² for small angles) grows with the
/// square of the weights' relative RMS error: `1 − cos₄ ≤ (rms₄ / rms₈)² · (1 − cos₈)`, both RMS errors as
/// `quantize` measured them on these weights (Q4_0's step is 127/8 ≈ 16× Q8_0's, so the factor is ≈ 16²).
/// That holds in expectation; each folder's rounding errors are one random draw, whose projection on a
/// stage's output varies from draw to draw (the tiny vision tower has a single quantisable matrix, so little
/// averaging: its WebGPU image stage lands at 0.98 of the expected ratio), so the bound allows twice it.
/// A q4_0 bug (a nibble order, a scale) would point the output elsewhere and fail this. All-Q4_0 does not
/// reach the issue's 0.99 on this tiny random model (text 0.978, prior 0.953 on the CPU): its layers pass a
/// perturbation on amplified (as the tiny decoder does, see tests/golden_decoder.rs). The 4-bit variant
/// offered to users is `q4_m` (Q8_0 for the text tower's layers and the prior, Q4_0 elsewhere: see
/// `quantize::Recipe::Q4Mixed`), held to the issue's 0.99 on every stage.
#[track_caller]
fn check_q8_0_and_q4_0<B: Backend>(be: B) {
    let q8 = stage_cosines(&engine(be.clone(), &quantized(WeightDType::Q8_0)));
    let q4 = stage_cosines(&engine(be.clone(), &quantized(WeightDType::Q4_0)));
    let q4m = stage_cosines(&engine(be.clone(), &quantized(Recipe::Q4Mixed)));
    let worst_rms = |d| quantized_with_report(d).1.files.iter().map(|f| f.relative_rms_error).fold(0f64, f64::max);
    let factor = 2.0 * (worst_rms(WeightDType::Q4_0) / worst_rms(WeightDType::Q8_0)).powi(2);
    for (((stage, c8), (_, c4)), (_, c4m)) in q8.into_iter().zip(q4).zip(q4m) {
        let bound4 = 1.0 - factor * (1.0 - c8);
        eprintln!(
            "[{}] {stage}: lowest cosine vs the f32 goldens: q8_0 {c8:.6}, q4_m {c4m:.6}, q4_0 {c4:.6} (bound {bound4:.6} = 1 − 2·{:.0}·(1 − q8_0's))",
            be.name(),
            factor / 2.0
        );
        assert!(c8 >= 0.999, "[{} Q8_0] {stage}: cosine {c8} < 0.999", be.name());
        assert!(c4m >= 0.99, "[{} q4_m] {stage}: cosine {c4m} < 0.99", be.name());
        assert!(c4 >= bound4, "[{} Q4_0] {stage}: cosine {c4} < {bound4}", be.name());
    }
}

#[test]
fn cpu_quantized_folders_reproduce_every_stage_q8_0_within_0_999_q4_m_within_0_99_and_q4_0_as_its_steps_predict() {
    check_q8_0_and_q4_0(CpuBackend::new());
}

#[cfg(feature = "gpu")]
#[test]
fn gpu_quantized_folders_reproduce_every_stage_within_the_same_bounds() {
    let Some(be) = open_gpu_or_skip() else { return };
    check_q8_0_and_q4_0(be);
}

/// Random values of a q8_0 and a q4_0 matrix `[8, 64]` as a file would hold them.
fn block_weights() -> Vec<(WeightDType, Vec<u8>, Vec<usize>)> {
    let shape = vec![8, 64];
    let values: Vec<f32> = (0..8 * 64).map(|i| ((i * 37 % 101) as f32 - 50.0) / 97.0).collect();
    [WeightDType::Q8_0, WeightDType::Q4_0]
        .into_iter()
        .map(|d| (d, lambda_eclipse::ops::blocks::quantize(d, &values, &shape).unwrap(), shape.clone()))
        .collect()
}

#[test]
fn the_cpu_holds_blocks_reads_them_as_the_host_dequantises_them_and_multiplies_them() {
    let be = CpuBackend::new();
    for (dtype, raw, shape) in block_weights() {
        let w = be.upload_weight(&raw, dtype, &shape).unwrap();
        let values = dtype.to_f32(&raw);
        assert_eq!(pollster::block_on(be.read_f32(&w)).unwrap(), values, "{}", dtype.name());
        // Held as blocks: the bytes of the file, not 4 per value.
        assert_eq!(be.byte_size(&w), raw.len(), "{}", dtype.name());
        // Embedding rows come out of the blocks exactly.
        let rows = be.gather_rows(&w, &[5, 0]).unwrap();
        let got = pollster::block_on(be.read_f32(&rows)).unwrap();
        assert_eq!(got, [&values[5 * 64..6 * 64], &values[..64]].concat(), "{}", dtype.name());
    }
}

/// `linear` with a block weight `[n, k]` — through candle's integer kernels where they pay (activations
/// rounded to 8-bit blocks, as ggml does: on x86 with VNNI for Q8_0 rows of 256-multiples, on ARM with dot
/// products), else through the weight's values for the call — is within that rounding of the product with the
/// dequantised weights: each of the k activations off by at most half a step (its block's largest |x| / 127),
/// so each output by at most k · step/2 · max|w|.
#[test]
fn the_cpu_multiplies_blocks_within_the_activation_rounding_on_either_route() {
    use lambda_eclipse::ops::Activation::Identity;
    let be = CpuBackend::new();
    for (n, k) in [(8, 64), (16, 256)] {
        let values: Vec<f32> = (0..n * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 97.0).collect();
        let x: Vec<f32> = (0..3 * k).map(|i| ((i * 13 % 29) as f32 - 14.0) / 7.0).collect();
        let xt = be.from_f32(&x, &[3, k]).unwrap();
        for dtype in [WeightDType::Q8_0, WeightDType::Q4_0] {
            let raw = lambda_eclipse::ops::blocks::quantize(dtype, &values, &[n, k]).unwrap();
            let w = be.upload_weight(&raw, dtype, &[n, k]).unwrap();
            let exact = be.from_f32(&dtype.to_f32(&raw), &[n, k]).unwrap();
            let got = pollster::block_on(be.read_f32(&be.linear(&xt, &w, None, Identity).unwrap())).unwrap();
            let want = pollster::block_on(be.read_f32(&be.linear(&xt, &exact, None, Identity).unwrap())).unwrap();
            let x_step = 2.0f32 / 127.0; // |x| ≤ 2
            let bound = k as f32 * x_step / 2.0 * values.iter().fold(0f32, |m, v| m.max(v.abs())) * 1.01;
            let d = max_abs_diff(&got, &want);
            assert!(d <= bound, "{} [{n}, {k}]: {d} > {bound}", dtype.name());
        }
    }
}

/// Where no integer kernel pays (widths not a multiple of 4: no CPU takes that route for them), a block
/// weight is dequantised one 64-row panel at a time for the product: the result is the f32 product with
/// the dequantised values up to the order of the f32 sums, (k + 1)·2⁻²⁴·Σ|x·w| per output (Higham's γₖ, to
/// first order, once for each of the two orders). n = 70 and 150 end in a partial panel, 150 has two
/// whole ones before it; a value dequantised into the wrong place moves an output by ~|x·w| ≫ the bound.
#[test]
fn the_cpu_multiplies_dequantised_panels_as_the_f32_product_of_the_blocks_values() {
    use lambda_eclipse::ops::Activation::Identity;
    let be = CpuBackend::new();
    for (n, k) in [(70, 64), (150, 96)] {
        let values: Vec<f32> = (0..n * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 97.0).collect();
        let x: Vec<f32> = (0..5 * k).map(|i| ((i * 13 % 29) as f32 - 14.0) / 7.0).collect();
        let xt = be.from_f32(&x, &[5, k]).unwrap();
        for dtype in [WeightDType::Q8_0, WeightDType::Q4_0] {
            let raw = lambda_eclipse::ops::blocks::quantize(dtype, &values, &[n, k]).unwrap();
            let w = be.upload_weight(&raw, dtype, &[n, k]).unwrap();
            let wv = dtype.to_f32(&raw);
            let got = pollster::block_on(be.read_f32(&be.linear(&xt, &w, None, Identity).unwrap())).unwrap();
            for (idx, g) in got.iter().enumerate() {
                let (i, j) = (idx / n, idx % n);
                let terms = (0..k).map(|c| x[i * k + c] as f64 * wv[j * k + c] as f64);
                let exact: f64 = terms.clone().sum();
                let bound = 2.0 * (k + 1) as f64 * 2f64.powi(-24) * terms.map(f64::abs).sum::<f64>();
                assert!((*g as f64 - exact).abs() <= bound, "{} [{n}, {k}] ({i}, {j}): {g} vs {exact}", dtype.name());
            }
        }
    }
}

#[cfg(feature = "gpu")]
#[test]
fn the_gpu_keeps_the_files_blocks_and_dequantises_them_to_the_cpus_values_exactly() {
    use lambda_eclipse::ops::Activation::Identity;
    let Some(gpu) = open_gpu_or_skip() else { return };
    let cpu = CpuBackend::new();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    fn read<B: Backend>(be: &B, t: &B::Tensor) -> Vec<f32> {
        pollster::block_on(be.read_f32(t)).unwrap()
    }
    for (dtype, raw, shape) in block_weights() {
        let w = gpu.upload_weight(&raw, dtype, &shape).unwrap();
        // On the device as the file's bytes (plus one padding word), not expanded.
        assert!(gpu.byte_size(&w) <= raw.len() + 8, "{}: {} bytes for {}", dtype.name(), gpu.byte_size(&w), raw.len());
        let on_cpu = pollster::block_on(cpu.read_f32(&cpu.upload_weight(&raw, dtype, &shape).unwrap())).unwrap();
        assert_eq!(bits(&read(&gpu, &w)), bits(&on_cpu), "{}", dtype.name());
        assert_eq!(
            bits(&read(&gpu, &gpu.gather_rows(&w, &[5, 0, 5]).unwrap())),
            bits(&[&on_cpu[320..384], &on_cpu[..64], &on_cpu[320..384]].concat())
        );
        // The GEMM reading blocks computes what it computes from the same values in f32, in the same order:
        // the four-at-a-time path ([3, 64]) and the one-at-a-time path (k = 64 through a strided view: matmul
        // of x by the weight read transposed) alike.
        let dense = gpu.from_f32(&on_cpu, &shape).unwrap();
        let x: Vec<f32> = (0..3 * 64).map(|i| ((i * 13 % 29) as f32 - 14.0) / 7.0).collect();
        let xt = gpu.from_f32(&x, &[3, 64]).unwrap();
        let from_blocks = read(&gpu, &gpu.linear(&xt, &w, None, Identity).unwrap());
        let from_values = read(&gpu, &gpu.linear(&xt, &dense, None, Identity).unwrap());
        assert_eq!(bits(&from_blocks), bits(&from_values), "{} linear", dtype.name());
        let y: Vec<f32> = (0..5 * 8).map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0).collect();
        let yt = gpu.from_f32(&y, &[5, 8]).unwrap();
        let from_blocks = read(&gpu, &gpu.matmul(&yt, &w).unwrap());
        let from_values = read(&gpu, &gpu.matmul(&yt, &dense).unwrap());
        assert_eq!(bits(&from_blocks), bits(&from_values), "{} matmul", dtype.name());
    }
}

#[test]
fn a_quantized_folder_keeps_the_layout_and_is_three_times_smaller_at_q8_0() {
    let dir = quantized(WeightDType::Q8_0);
    for f in [
        "text_encoder/model.gguf",
        "text_encoder/config.json",
        "image_encoder/model.gguf",
        "prior/diffusion_pytorch_model.gguf",
        "tokenizer/tokenizer.json",
        "image_processor/preprocessor_config.json",
    ] {
        assert!(dir.join(f).is_file(), "{f} is missing");
    }
    assert!(!dir.join("text_encoder/model.safetensors").exists());
    // The text tower dominates the tiny model (its 49,408-row token table): its matrices shrink 3.76× at q8_0
    // (34 bytes per 32 values instead of 128), diluted by the vectors kept in f32.
    let size = |p: PathBuf| std::fs::metadata(p).unwrap().len() as f64;
    let ratio = size(tiny_model().join("text_encoder/model.safetensors")) / size(dir.join("text_encoder/model.gguf"));
    assert!(ratio > 3.0, "text tower only {ratio:.2}× smaller");
}

#[test]
fn a_gguf_with_a_shifted_tensor_or_cut_short_is_refused_naming_the_file() {
    let good = std::fs::read(quantized(WeightDType::Q8_0).join("prior/diffusion_pytorch_model.gguf")).unwrap();
    let header = lambda_eclipse::weights::gguf::header_from_bytes("prior.gguf", &good).unwrap();
    assert!(header.tensors.iter().any(|t| t.dtype == WeightDType::Q8_0));
    // Cut short: the last tensor's bytes lie outside the file.
    let cut = &good[..good.len() - 40];
    let e = lambda_eclipse::weights::gguf::header_from_bytes("prior.gguf", cut).unwrap_err().to_string();
    assert!(e.starts_with("prior.gguf: ") && (e.contains("outside") || e.contains("ends at")), "{e}");
    // Not a GGUF at all.
    let e =
        lambda_eclipse::weights::gguf::header_from_bytes("prior.gguf", b"PK\x03\x04 not gguf").unwrap_err().to_string();
    assert!(e.contains("not a GGUF file"), "{e}");
}

#[test]
fn the_quantize_command_prints_its_summary_and_refuses_bad_folders_in_one_line() {
    let root = scratch("quantized", "cli");
    let out = root.join("q8");
    let run = ok(bin()
        .args(["quantize", "--model"])
        .arg(tiny_model())
        .arg("--out")
        .arg(&out)
        .args(["--type", "q8_0"])
        .output()
        .unwrap());
    let text = String::from_utf8_lossy(&run.stdout);
    for needle in ["text_encoder/model.gguf", "all weights", "cosine 0.99"] {
        assert!(text.contains(needle), "the summary should mention {needle:?}: {text}");
    }
    assert!(out.join("prior/diffusion_pytorch_model.gguf").is_file());
    // The output exists and is not empty now: refused, and the folder is left as it was.
    let again =
        bin().args(["quantize", "--model"]).arg(tiny_model()).arg("--out").arg(&out).args(["--type", "q4_0"]).output();
    fails_clearly(again.unwrap(), &["not empty"]);
    assert!(out.join("prior/diffusion_pytorch_model.gguf").is_file());
    // A folder without weights: nothing is written.
    let empty = root.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let none = bin()
        .args(["quantize", "--model"])
        .arg(&empty)
        .arg("--out")
        .arg(root.join("none"))
        .args(["--type", "q8_0"])
        .output();
    fails_clearly(none.unwrap(), &["no safetensors weights"]);
    assert!(!root.join("none").exists() && !root.join(".none.partial").exists());
    // A type the engine does not compute.
    let bad = bin()
        .args(["quantize", "--model"])
        .arg(tiny_model())
        .arg("--out")
        .arg(root.join("k"))
        .args(["--type", "q4_k"])
        .output()
        .unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("q8_0"));
}

#[test]
fn a_sharded_component_becomes_one_gguf_and_its_shards_are_not_copied() {
    use safetensors::tensor::{serialize, TensorView};
    let root = scratch("quantized", "sharded");
    let (model, out) = (root.join("model"), root.join("q8"));
    std::fs::create_dir_all(model.join("comp")).unwrap();
    let weight: Vec<u8> = (0..32 * 64).flat_map(|i| ((i % 17) as f32 / 17.0 - 0.5).to_le_bytes()).collect();
    let bias: Vec<u8> = (0..32).flat_map(|i| (i as f32 / 100.0).to_le_bytes()).collect();
    let shard = |name: &str, shape: Vec<usize>, data: &[u8]| {
        let view = TensorView::new(safetensors::Dtype::F32, shape, data).unwrap();
        serialize([(name, view)], None).unwrap()
    };
    std::fs::write(model.join("comp/model-00001-of-00002.safetensors"), shard("a.weight", vec![32, 64], &weight))
        .unwrap();
    std::fs::write(model.join("comp/model-00002-of-00002.safetensors"), shard("a.bias", vec![32], &bias)).unwrap();
    let index = r#"{"weight_map": {"a.weight": "model-00001-of-00002.safetensors", "a.bias": "model-00002-of-00002.safetensors"}}"#;
    std::fs::write(model.join("comp/model.safetensors.index.json"), index).unwrap();
    std::fs::write(model.join("comp/config.json"), "{}").unwrap();
    let report = quantize_folder(&model, &out, WeightDType::Q8_0, |_| {}).unwrap();
    assert_eq!(report.files.len(), 1);
    assert_eq!(report.files[0].path, "comp/model.gguf");
    assert_eq!(
        report.files[0].sources,
        ["comp/model-00001-of-00002.safetensors", "comp/model-00002-of-00002.safetensors"]
    );
    assert_eq!(report.copied, ["comp/config.json"]);
    let header =
        lambda_eclipse::weights::gguf::header_from_bytes("m", &std::fs::read(out.join("comp/model.gguf")).unwrap())
            .unwrap();
    let types: Vec<(String, WeightDType)> = header.tensors.iter().map(|t| (t.name.clone(), t.dtype)).collect();
    assert!(
        types.contains(&("a.weight".into(), WeightDType::Q8_0)) && types.contains(&("a.bias".into(), WeightDType::F32)),
        "{types:?}"
    );
}

/// `quantize --list` (`update_listing`): copies written into the model's own folder, as README's hub layout
/// has them, are listed in its `variants.json` with the original — URL relative to the model, download bytes
/// and the CPU's bytes — and a second copy neither converts nor copies the first one.
#[test]
fn copies_in_the_models_folder_are_listed_with_the_original_and_not_quantized_again() {
    use lambda_eclipse::quantize::{read_listing, update_listing, ListedVariant};
    let model = scratch("quantized", "listed").join("lambda");
    std::fs::create_dir_all(&model).unwrap();
    for entry in ["text_encoder", "image_encoder", "image_processor", "prior", "tokenizer"] {
        let (from, to) = (tiny_model().join(entry), model.join(entry));
        std::fs::create_dir_all(&to).unwrap();
        for f in std::fs::read_dir(&from).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
        }
    }
    let q8 = quantize_folder(&model, &model.join("q8_0"), WeightDType::Q8_0, |_| {}).unwrap();
    update_listing(&model, &model.join("q8_0"), "q8_0", &q8).unwrap();
    let q4 = quantize_folder(&model, &model.join("q4_0"), WeightDType::Q4_0, |_| {}).unwrap();
    update_listing(&model, &model.join("q4_0"), "q4_0", &q4).unwrap();
    // The second run saw only the original: the same files, nothing under q8_0/, no listing copied.
    let names = |r: &Report| r.files.iter().map(|f| f.path.clone()).chain(r.copied.iter().cloned()).collect::<Vec<_>>();
    assert_eq!(names(&q4), names(&q8));
    assert!(!names(&q4).iter().any(|n| n.starts_with("q8_0/") || n == "variants.json"), "{:?}", names(&q4));
    let listing = read_listing(&model).unwrap().expect("variants.json");
    let entry = |id: &str| serde_json::from_value::<ListedVariant>(listing[id].clone()).unwrap();
    let folder_bytes = |dir: &Path| -> u64 {
        let mut n = 0;
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    n += e.metadata().unwrap().len();
                }
            }
        }
        n
    };
    let (original, q8e, q4e) = (entry("original"), entry("q8_0"), entry("q4_0"));
    assert_eq!((original.url.as_str(), q8e.url.as_str(), q4e.url.as_str()), ("./", "q8_0/", "q4_0/"));
    assert_eq!((q8e.kind.as_deref(), q4e.kind.as_deref()), (Some("q8_0"), Some("q4_0")));
    // A copy's download is every file of its folder; the original's every file of the tiny model.
    assert_eq!(q8e.bytes, folder_bytes(&model.join("q8_0")));
    assert_eq!(q4e.bytes, folder_bytes(&model.join("q4_0")));
    assert_eq!(original.bytes, folder_bytes(&tiny_model()));
    // The tiny model is f32: on the CPU its weights take their file's tensor bytes, plus the largest tensor once
    // more (its conversion at load); blocks stay blocks, so the copies need less, q4_0 least.
    let tensor_bytes: u64 = q8.files.iter().map(|f| f.cpu_bytes_before).sum();
    let largest = q8.files.iter().map(|f| f.largest_values).max().unwrap();
    assert_eq!(original.cpu_bytes, tensor_bytes + 4 * largest);
    assert!(q4e.cpu_bytes < q8e.cpu_bytes && q8e.cpu_bytes < original.cpu_bytes, "{q4e:?} {q8e:?} {original:?}");
}

/// `q4_m` puts each matrix where `quantize::Recipe::Q4Mixed` says: Q8_0 for the text tower's transformer
/// layers and every matrix of the prior; Q4_0 for the token embedding, the projections and the vision
/// tower. Vectors and position embeddings stay as stored, as in every copy.
#[test]
fn q4_m_keeps_the_text_layers_and_the_prior_in_q8_0_and_the_rest_in_q4_0() {
    use lambda_eclipse::weights::{gguf::read_header, ModelFiles};
    let dir = quantized(Recipe::Q4Mixed);
    let files = DirFiles::new(&dir);
    let mut seen = std::collections::BTreeMap::new();
    for stem in ["text_encoder/model", "image_encoder/model", "prior/diffusion_pytorch_model"] {
        let header = pollster::block_on(read_header(&files.open(&format!("{stem}.gguf")))).unwrap();
        for t in header.tensors.iter().filter(|t| t.dtype.is_quantized()) {
            let expected = if stem.starts_with("prior") || t.name.contains("text_model.encoder.layers.") {
                WeightDType::Q8_0
            } else {
                WeightDType::Q4_0
            };
            assert_eq!(t.dtype, expected, "{stem}: {}", t.name);
            *seen.entry((stem, t.dtype.name())).or_insert(0) += 1;
        }
    }
    // Each part of the rule applied somewhere: the text tower has both kinds, the others one each.
    let count = |stem, d| seen.get(&(stem, d)).copied().unwrap_or(0);
    assert!(count("text_encoder/model", "Q8_0") > 0 && count("text_encoder/model", "Q4_0") > 0, "{seen:?}");
    assert!(count("prior/diffusion_pytorch_model", "Q8_0") > 0, "{seen:?}");
    assert!(count("image_encoder/model", "Q4_0") > 0, "{seen:?}");
}
