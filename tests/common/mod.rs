//! Shared helpers for the golden-parity tests.
#![allow(dead_code)]

use lambda_eclipse::pipeline::lambda::Noise;
use lambda_eclipse::pipeline::{self, PriorRequest};
use lambda_eclipse::tensor_file;
use std::path::PathBuf;
use std::process::{Command, Output};

pub fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared")
}
pub fn lambda_tiny() -> PathBuf {
    shared().join("goldens/lambda-tiny")
}
pub fn tiny_model() -> PathBuf {
    lambda_tiny().join("model")
}
pub fn asset(name: &str) -> PathBuf {
    shared().join("assets/images").join(name)
}

#[derive(serde::Deserialize, Debug, Clone)]
pub struct Subject {
    pub keyword: String,
    pub image: String,
}

#[derive(serde::Deserialize, Debug, Clone)]
pub struct Case {
    pub name: String,
    pub prompt: String,
    pub subjects: Vec<Subject>,
    pub canny: Option<String>,
    pub tensors: String,
}

#[derive(serde::Deserialize)]
struct Manifest {
    cases: Vec<Case>,
}

pub fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(lambda_tiny().join("manifest.json")).expect("golden manifest");
    let m: Manifest = serde_json::from_str(&text).expect("manifest JSON");
    assert!(m.cases.len() >= 5, "expected the 5 golden cases");
    m.cases
}

pub struct Golden {
    bytes: Vec<u8>,
    name: String,
}

impl Golden {
    pub fn open(case: &Case) -> Self {
        let path = lambda_tiny().join(&case.tensors);
        Golden { bytes: std::fs::read(&path).expect("golden tensors"), name: path.display().to_string() }
    }
    pub fn f32(&self, tensor: &str) -> (Vec<usize>, Vec<f32>) {
        tensor_file::read_f32(&self.bytes, tensor, &self.name).unwrap()
    }
    pub fn has(&self, tensor: &str) -> bool {
        tensor_file::read_f32(&self.bytes, tensor, &self.name).is_ok()
    }
    pub fn i64(&self, tensor: &str) -> Vec<i64> {
        tensor_file::read_i64(&self.bytes, tensor, &self.name).unwrap().1
    }
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    let d = max_abs_diff(got, want);
    assert!(d <= tol, "{what}: max-abs difference {d:e} exceeds {tol:e}");
}

/// The pipeline request of a golden case, from its photos and with the given noise.
pub fn golden_request(case: &Case, noise: Noise) -> PriorRequest {
    let mut req = PriorRequest::new(&case.prompt, noise);
    req.subjects = case
        .subjects
        .iter()
        .map(|s| pipeline::Subject { keyword: s.keyword.clone(), image: std::fs::read(asset(&s.image)).unwrap() })
        .collect();
    req.control = case.canny.as_ref().map(|c| std::fs::read(asset(c)).unwrap());
    req
}

/// The `lambda-eclipse` binary built for the integration tests.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lambda-eclipse"))
}

/// An empty scratch folder under the target dir, named for the test.
pub fn scratch(group: &str, name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(group).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[track_caller]
pub fn ok(out: Output) -> Output {
    assert!(out.status.success(), "command failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Exit code ≠ 0, exactly one stderr line, no panic, containing every `needle`.
#[track_caller]
pub fn fails_clearly(out: Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr: {err}");
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "panic: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line expected: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr should mention {n:?}: {err}");
    }
}

/// Opens the GPU for a test. Without an adapter the test fails with what to install, unless
/// `LAMBDA_ECLIPSE_SKIP_GPU=1` (then `None`: the caller returns early).
#[cfg(feature = "gpu")]
pub fn open_gpu_or_skip() -> Option<lambda_eclipse::ops::gpu::GpuBackend> {
    match pollster::block_on(lambda_eclipse::ops::gpu::GpuBackend::new()) {
        Ok(be) => Some(be),
        Err(e) if std::env::var("LAMBDA_ECLIPSE_SKIP_GPU").as_deref() == Ok("1") => {
            eprintln!("LAMBDA_ECLIPSE_SKIP_GPU=1: skipping GPU test ({e})");
            None
        }
        Err(e) => panic!(
            "{e}\nThe GPU tests need a WebGPU-capable adapter (on Linux without a GPU: apt-get install \
             mesa-vulkan-drivers for lavapipe). Set LAMBDA_ECLIPSE_SKIP_GPU=1 to skip them."
        ),
    }
}
