//! `lambda-eclipse decode-local`: golden cases through the command line (PNG and safetensors outputs), seeds,
//! and bad inputs failing with one clear line.

mod common;
use common::*;
use lambda_eclipse::tensor_file::{self, to_bytes, OutTensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn kandinsky() -> PathBuf {
    shared().join("goldens/kandinsky-tiny")
}

fn model() -> PathBuf {
    kandinsky().join("model")
}

fn case(name: &str) -> PathBuf {
    kandinsky().join(format!("{name}.safetensors"))
}

fn scratch(name: &str) -> PathBuf {
    common::scratch("cli_decode_local", name)
}

fn golden(name: &str, tensor: &str) -> (Vec<usize>, Vec<f32>) {
    tensor_file::read_f32(&std::fs::read(case(name)).unwrap(), tensor, name).unwrap()
}

/// The golden 8-bit image `[1, 3, H, W]` as RGB bytes `[H, W, 3]`.
fn golden_rgb(name: &str) -> (u32, u32, Vec<u8>) {
    let (s, v) = golden(name, "image_uint8");
    let (h, w) = (s[2], s[3]);
    let mut rgb = vec![0u8; h * w * 3];
    for c in 0..3 {
        for p in 0..h * w {
            rgb[p * 3 + c] = v[c * h * w + p] as u8;
        }
    }
    (w as u32, h as u32, rgb)
}

/// diffusers' own float64 distance from its golden: 8-bit values off by one end to end.
fn floor_off_by_one(name: &str) -> usize {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/decoder/reference_floor.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["cases"][name]["end_to_end"]["uint8_off_by_one"].as_u64().unwrap() as usize
}

#[track_caller]
fn assert_png_matches(png: &Path, name: &str) {
    let img = image::open(png).unwrap().to_rgb8();
    let (w, h, want) = golden_rgb(name);
    assert_eq!(img.dimensions(), (w, h), "{name}: PNG size");
    let off: Vec<i32> = img.as_raw().iter().zip(&want).map(|(&a, &b)| (a as i32 - b as i32).abs()).collect();
    let ones = off.iter().filter(|&&d| d == 1).count();
    assert!(off.iter().all(|&d| d <= 1), "{name}: PNG values off by more than one");
    // 0.1 % of the values, or twice diffusers' own float64 count where that is larger (see golden_decoder.rs).
    let allowed = (off.len() / 1000).max(2 * floor_off_by_one(name));
    assert!(ones <= allowed, "{name}: {ones} values off by one (allowed {allowed})");
}

fn decode_local(args: &[&str]) -> std::process::Output {
    bin().arg("decode-local").arg("--model").arg(model()).args(["--backend", "cpu"]).args(args).output().unwrap()
}

#[test]
fn golden_case_through_the_cli_writes_the_png_of_image_uint8() {
    let out = scratch("png").join("nocfg.png");
    let c = case("ddpm_nocfg");
    let c = c.to_str().unwrap();
    // The case file holds image_embeds, negative_image_embeds, initial_latents and step_noise.
    let o = ok(decode_local(&[
        "--embeds",
        c,
        "--noise",
        c,
        "--steps",
        "3",
        "--guidance",
        "1",
        "--scheduler",
        "ddpm",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert_png_matches(&out, "ddpm_nocfg");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("step 3/3"), "per-step progress on stderr: {err}");
}

#[test]
fn guided_ddim_case_with_the_size_given_explicitly() {
    let out = scratch("ddim").join("ddim.png");
    let c = case("ddim_cfg");
    let c = c.to_str().unwrap();
    ok(decode_local(&[
        "--embeds",
        c,
        "--noise",
        c,
        "--steps",
        "5",
        "--guidance",
        "7.5",
        "--scheduler",
        "ddim",
        "--width",
        "64",
        "--height",
        "64",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert_png_matches(&out, "ddim_cfg");
}

#[test]
fn safetensors_output_holds_the_latents_and_the_image() {
    let out = scratch("tensors").join("out.safetensors");
    let c = case("ddpm_cfg");
    let c = c.to_str().unwrap();
    ok(decode_local(&["--embeds", c, "--noise", c, "--steps", "4", "--out", out.to_str().unwrap()]));
    let bytes = std::fs::read(&out).unwrap();
    let (shape, latents) = tensor_file::read_f32(&bytes, "latents", "out").unwrap();
    assert_eq!(shape, vec![1, 4, 32, 32]);
    let (ls, after) = golden("ddpm_cfg", "latents_after_step");
    let per = after.len() / ls[0];
    assert_close("final latents", &latents, &after[after.len() - per..], 1e-3);
    let (shape, image) = tensor_file::read_f32(&bytes, "image", "out").unwrap();
    assert_eq!(shape, vec![64, 64, 3]);
    assert!(image.iter().all(|v| (0.0..=1.0).contains(v)));
}

#[test]
fn same_seed_same_picture_other_seed_other_picture() {
    let dir = scratch("seeds");
    let c = case("ddpm_cfg");
    let run = |seed: &str, file: &str| {
        let out = dir.join(file);
        ok(decode_local(&[
            "--embeds",
            c.to_str().unwrap(),
            "--seed",
            seed,
            "--steps",
            "2",
            "--scheduler",
            "dpmpp",
            "--width",
            "32",
            "--height",
            "32",
            "--out",
            out.to_str().unwrap(),
        ]));
        std::fs::read(out).unwrap()
    };
    let (a, b, c2) = (run("5", "a.png"), run("5", "b.png"), run("6", "c.png"));
    assert_eq!(a, b);
    assert_ne!(a, c2);
    assert_eq!(image::load_from_memory(&a).unwrap().to_rgb8().dimensions(), (32, 32));
}

fn write(dir: &Path, file: &str, tensors: BTreeMap<String, OutTensor>) -> PathBuf {
    let path = dir.join(file);
    std::fs::write(&path, to_bytes(&tensors).unwrap()).unwrap();
    path
}

#[test]
fn bad_inputs_fail_with_one_clear_line() {
    let dir = scratch("bad");
    let out = dir.join("x.png");
    let out = out.to_str().unwrap();
    let good = case("ddpm_cfg");
    let good = good.to_str().unwrap();

    // No decoder folder.
    let o = bin()
        .args(["decode-local", "--backend", "cpu", "--model"])
        .arg(&dir)
        .args(["--embeds", good, "--out", out])
        .output()
        .unwrap();
    fails_clearly(o, &["unet/config.json", "not found"]);
    // Embedding of the wrong width.
    let mut t = BTreeMap::new();
    t.insert("image_embeds".to_string(), OutTensor::F32(vec![1, 16], vec![0.5; 16]));
    t.insert("negative_image_embeds".to_string(), OutTensor::F32(vec![1, 16], vec![0.0; 16]));
    let short = write(&dir, "short.safetensors", t);
    fails_clearly(
        decode_local(&[
            "--embeds",
            short.to_str().unwrap(),
            "--steps",
            "1",
            "--width",
            "32",
            "--height",
            "32",
            "--out",
            out,
        ]),
        &["image_embeds has 16 values", "32", "encoder_hid_dim"],
    );
    // No negative embedding with guidance > 1.
    let mut t = BTreeMap::new();
    t.insert("image_embeds".to_string(), OutTensor::F32(vec![1, 32], vec![0.5; 32]));
    let positive_only = write(&dir, "positive.safetensors", t);
    fails_clearly(
        decode_local(&["--embeds", positive_only.to_str().unwrap(), "--out", out]),
        &["negative_image_embeds", "guidance"],
    );
    // A size the latents cannot have.
    fails_clearly(
        decode_local(&["--embeds", good, "--width", "30", "--height", "32", "--out", out]),
        &["width 30", "multiple of 4"],
    );
    // Unknown sampler, unknown output type.
    fails_clearly(
        decode_local(&["--embeds", good, "--scheduler", "euler", "--out", out]),
        &["euler", "ddpm, ddim or dpmpp"],
    );
    fails_clearly(decode_local(&["--embeds", good, "--out", dir.join("x.bmp").to_str().unwrap()]), &["--out", ".png"]);
    // Noise for another number of steps.
    fails_clearly(
        decode_local(&["--embeds", good, "--noise", good, "--steps", "5", "--out", out]),
        &["step_noise", "5 steps"],
    );
    // Embeddings file without image_embeds.
    let mut t = BTreeMap::new();
    t.insert("something_else".to_string(), OutTensor::F32(vec![1, 32], vec![0.5; 32]));
    let other = write(&dir, "other.safetensors", t);
    fails_clearly(decode_local(&["--embeds", other.to_str().unwrap(), "--out", out]), &["image_embeds"]);
    // Zero steps.
    fails_clearly(
        decode_local(&["--embeds", good, "--steps", "0", "--width", "32", "--height", "32", "--out", out]),
        &["steps"],
    );
}
