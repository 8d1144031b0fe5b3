//! `lambda-eclipse quantize`: a model folder → the same folder with each component's weights in a GGUF file
//! whose weight matrices are in a ggml block type (Q8_0 or Q4_0). Configs, tokenizer, image processor and
//! scheduler files are copied, so the result is a model folder every loader of the engine reads as it reads
//! the original (`{dir}/{stem}.gguf` where `{dir}/{stem}.safetensors` was; see `weights::open_component`).
//!
//! Which tensors get blocks: weights of the matrix products (`linear`, `conv2d` kernels, the token
//! embedding table), i.e. a `*.weight` of rank ≥ 2 whose rows are whole blocks of 32. Kept as stored (f32,
//! f16, bf16): biases and norms (vectors), position embeddings (added to activations, never multiplied, and
//! small), and any matrix whose rows are not whole blocks — as llama.cpp's converters do.
//!
//! A component is converted in memory one at a time: its quantised tensors are held until the GGUF is
//! written (candle's writer takes them all at once), so the peak is about the component's output size plus
//! one original tensor.

use crate::error::{Error, Result};
use crate::ops::blocks;
use crate::ops::WeightDType;
use crate::weights::gguf::{self, SHAPES_KEY};
use crate::weights::{ByteSource, DirFiles, ModelFiles};
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Which block type each weight matrix of a copy gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recipe {
    /// Every matrix in one block type (`q8_0`, `q4_0`).
    Uniform(WeightDType),
    /// `q4_m`: 4 bits where the embeddings bear it, 8 where they do not (llama.cpp's `_M` mixes do the
    /// same with their own rule). Q8_0 for the text tower's transformer layers and for the whole prior:
    /// the prior attends over all 77 text states and is the last stage errors compound through, while the
    /// vision tower reaches it as one pooled vector per photo. Q4_0 for everything else — the vision tower
    /// (71 % of the λ model's parameters), the token embedding, the projections, the decoder. On the tiny
    /// goldens (lowest cosine vs f32 over the cases; CPU): all Q4_0 gives text 0.978, image 0.9995,
    /// prior 0.953; Q8_0 attention alone text 0.991 / prior 0.965; Q8_0 text tower without the prior
    /// 0.985 on the prior; this mix text 0.998, image 0.9995, prior 0.996. Real size: ~1.8 GB against
    /// ~1.45 GB for all Q4_0, ~2.6 GB for Q8_0 and ~6.5 GB for the original files.
    Q4Mixed,
}

impl Recipe {
    /// The name `--type` and a listing use: `q8_0`, `q4_0`, `q4_m`.
    pub fn name(self) -> &'static str {
        match self {
            Recipe::Uniform(WeightDType::Q8_0) => "q8_0",
            Recipe::Uniform(WeightDType::Q4_0) => "q4_0",
            Recipe::Uniform(_) => "unquantized",
            Recipe::Q4Mixed => "q4_m",
        }
    }

    /// The block type of the matrix `name` in the weight file `stem` (e.g. `text_encoder/model`).
    pub fn block_type(self, stem: &str, name: &str) -> WeightDType {
        match self {
            Recipe::Uniform(dtype) => dtype,
            Recipe::Q4Mixed => {
                let component = stem.rsplit_once('/').map_or("", |(dir, _)| dir);
                let text_layer = component.ends_with("text_encoder") && name.contains(".encoder.layers.");
                if text_layer || component.ends_with("prior") {
                    WeightDType::Q8_0
                } else {
                    WeightDType::Q4_0
                }
            }
        }
    }

    /// Every block type the recipe may give (each must be one ggml writes).
    fn block_types(self) -> Vec<WeightDType> {
        match self {
            Recipe::Uniform(dtype) => vec![dtype],
            Recipe::Q4Mixed => vec![WeightDType::Q8_0, WeightDType::Q4_0],
        }
    }
}

impl From<WeightDType> for Recipe {
    fn from(dtype: WeightDType) -> Recipe {
        Recipe::Uniform(dtype)
    }
}

/// What one weight file became.
#[derive(Clone, Debug)]
pub struct FileReport {
    /// Path of the GGUF relative to the output folder, e.g. `text_encoder/model.gguf`.
    pub path: String,
    /// The original's weight files it was made from (one, or a shard index's shards), relative paths.
    pub sources: Vec<String>,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub tensors_quantized: usize,
    pub tensors_kept: usize,
    /// Root-mean-square error of the quantised weights over all their values, relative to their RMS.
    pub relative_rms_error: f64,
    /// The tensor with the largest relative RMS error, and that error.
    pub worst: Option<(String, f64)>,
    /// Bytes the CPU backend holds for the weights of the original and of the copy (see [`cpu_held_bytes`]).
    pub cpu_bytes_before: u64,
    pub cpu_bytes_after: u64,
    /// Values of the file's largest tensor.
    pub largest_values: u64,
}

/// What the whole folder became.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub files: Vec<FileReport>,
    /// Files copied unchanged (configs, tokenizer, ...), relative paths.
    pub copied: Vec<String>,
    /// Files left out (other weight formats such as `*.bin`), relative paths.
    pub skipped: Vec<String>,
    /// Bytes of the copied files (the same in the original and the copy).
    pub copied_bytes: u64,
}

impl Report {
    /// Bytes a load of the original (`quantized` false) or of the copy downloads: weight files and the rest.
    pub fn download_bytes(&self, quantized: bool) -> u64 {
        self.files.iter().map(|f| if quantized { f.bytes_after } else { f.bytes_before }).sum::<u64>()
            + self.copied_bytes
    }

    /// Memory the CPU backend needs for the weights of the original or of the copy while it loads and
    /// computes: what it holds ([`cpu_held_bytes`]) plus one tensor as f32 values — the largest one's bytes
    /// while they are converted at load, or a block matrix dequantised for one product (`ops::cpu`). The
    /// engine's own memory (code, tokenizer, activations) comes on top: the page adds it (www/lib/variants.js).
    pub fn cpu_bytes(&self, quantized: bool) -> u64 {
        let held: u64 = self.files.iter().map(|f| if quantized { f.cpu_bytes_after } else { f.cpu_bytes_before }).sum();
        held + 4 * self.files.iter().map(|f| f.largest_values).max().unwrap_or(0)
    }
}

/// Bytes the CPU backend holds for one weight (`ops::cpu::CpuBackend::upload_weight`): a block type as stored,
/// any float type as f32 values (f16 and bf16 files double on the CPU).
pub fn cpu_held_bytes(dtype: WeightDType, shape: &[usize], stored_bytes: u64) -> u64 {
    if dtype.is_quantized() {
        stored_bytes
    } else {
        4 * shape.iter().product::<usize>() as u64
    }
}

/// Whether a tensor of the original gets blocks (see the module's documentation).
pub fn gets_blocks(name: &str, dtype: WeightDType, shape: &[usize]) -> bool {
    !dtype.is_quantized() && name.ends_with("weight") && !name.contains("position") && blocks::can_quantize(shape)
}

/// Converts the model folder `model` into `out` (created; must not exist or be empty) with weight matrices
/// in the block types of `recipe` (a [`WeightDType`]: all in `Q8_0` or `Q4_0`; or [`Recipe::Q4Mixed`]). `on_file(path)` is called as each weight file starts. The folder is
/// written as `.{out}.partial` beside `out` and renamed when complete: a failed run (a corrupt original, a
/// full disk) leaves no half-written model that would load.
pub fn quantize_folder(
    model: &Path,
    out: &Path,
    recipe: impl Into<Recipe>,
    on_file: impl FnMut(&str),
) -> Result<Report> {
    let recipe = recipe.into();
    for dtype in recipe.block_types() {
        blocks::ggml_dtype(dtype)?;
    }
    if !model.is_dir() {
        return Err(Error::io(model.display(), "not a folder"));
    }
    if out.exists() && std::fs::read_dir(out).map_err(|e| Error::io(out.display(), e))?.next().is_some() {
        return Err(Error::io(out.display(), "the output folder exists and is not empty"));
    }
    let name = out.file_name().ok_or_else(|| Error::io(out.display(), "not a folder name"))?;
    let partial = out.with_file_name(format!(".{}.partial", name.to_string_lossy()));
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|e| Error::io(partial.display(), e))?;
    }
    let result = convert_folder(model, &partial, recipe, on_file);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&partial);
        return result;
    }
    if out.exists() {
        std::fs::remove_dir(out).map_err(|e| Error::io(out.display(), e))?;
    }
    std::fs::rename(&partial, out).map_err(|e| Error::io(out.display(), e))?;
    result
}

fn convert_folder(model: &Path, out: &Path, recipe: Recipe, mut on_file: impl FnMut(&str)) -> Result<Report> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out.display(), e))?;
    let mut report = Report::default();
    let mut files = Vec::new();
    let skip = listed_folders(model, out)?;
    walk(model, Path::new(""), &skip, &mut files)?;
    // A shard index first: its shards are converted through it (one GGUF for the component) and skipped below.
    let is_index = |name: &str| name.ends_with(".safetensors.index.json");
    let mut consumed = std::collections::BTreeSet::new();
    for rel in &files {
        let name = rel.to_string_lossy().replace('\\', "/");
        if let Some(stem) = name.strip_suffix(".safetensors.index.json") {
            on_file(&name);
            let converted = convert(model, out, &name, stem, recipe)?;
            consumed.extend(converted.sources.iter().cloned());
            report.files.push(converted);
        }
    }
    for rel in files {
        let name = rel.to_string_lossy().replace('\\', "/");
        if is_index(&name) || consumed.contains(&name) || name == LISTING_FILE {
            continue;
        }
        if let Some(stem) = name.strip_suffix(".safetensors") {
            on_file(&name);
            report.files.push(convert(model, out, &name, stem, recipe)?);
        } else if [".bin", ".pt", ".pth", ".ckpt", ".onnx", ".gguf", ".msgpack", ".h5"]
            .iter()
            .any(|e| name.ends_with(e))
        {
            report.skipped.push(name);
        } else {
            let to = out.join(&rel);
            create_parent(&to)?;
            report.copied_bytes += std::fs::copy(model.join(&rel), &to).map_err(|e| Error::io(to.display(), e))?;
            report.copied.push(name);
        }
    }
    if report.files.is_empty() {
        return Err(Error::io(model.display(), "no safetensors weights found in the folder"));
    }
    Ok(report)
}

/// Relative paths of the files under `dir` (hidden entries such as `.git` and the folders in `skip` left
/// out), sorted.
fn walk(root: &Path, rel: &Path, skip: &[PathBuf], out: &mut Vec<PathBuf>) -> Result<()> {
    let dir = root.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| Error::io(dir.display(), e))?
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io(dir.display(), e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = rel.join(&name);
        if entry.file_type().map_err(|e| Error::io(path.display(), e))?.is_dir() {
            if !skip.contains(&path) {
                walk(root, &path, skip, out)?;
            }
        } else {
            out.push(path);
        }
    }
    Ok(())
}

fn create_parent(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent.display(), e))?;
    }
    Ok(())
}

/// One component's weights (`{stem}.safetensors` or its shard index) → `{stem}.gguf`.
fn convert(model: &Path, out: &Path, rel: &str, stem: &str, recipe: Recipe) -> Result<FileReport> {
    let files = DirFiles::new(model);
    let (dir, file_stem) = match stem.rsplit_once('/') {
        Some((d, s)) => (d.to_string(), s.to_string()),
        // Weights at the folder's root (a component folder given by itself): "." keeps paths relative.
        None => (".".to_string(), stem.to_string()),
    };
    let weight_files = pollster::block_on(crate::weights::open_component(&files, &dir, &file_stem))?.1;
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let mut shapes = BTreeMap::new();
    let (mut bytes_before, mut quantized, mut kept) = (0u64, 0usize, 0usize);
    let (mut cpu_bytes_before, mut cpu_bytes_after, mut largest_values) = (0u64, 0u64, 0u64);
    let (mut err_sq, mut ref_sq) = (0f64, 0f64);
    let mut worst: Option<(String, f64)> = None;
    for file in &weight_files {
        bytes_before += pollster::block_on(file.source.len())?;
        for entry in &file.header.tensors {
            let raw = pollster::block_on(file.source.read_range(entry.offset, entry.len))?;
            crate::weights::safetensors::check_finite(&raw, entry.dtype)
                .map_err(|e| Error::weights(&file.header.source_name, format!("tensor `{}`: {e}", entry.name)))?;
            let values = entry.dtype.to_f32(&raw);
            let shape = entry.shape.clone();
            cpu_bytes_before += cpu_held_bytes(entry.dtype, &shape, raw.len() as u64);
            largest_values = largest_values.max(values.len() as u64);
            let stored = if gets_blocks(&entry.name, entry.dtype, &shape) {
                let matrix = (shape[0], shape[1..].iter().product::<usize>());
                let dtype = recipe.block_type(stem, &entry.name);
                let q =
                    QTensor::quantize(&Tensor::from_slice(&values, matrix, &Device::Cpu)?, blocks::ggml_dtype(dtype)?)?;
                let back = dtype.to_f32(&q.data()?);
                let (e, r) = values
                    .iter()
                    .zip(&back)
                    .fold((0f64, 0f64), |(e, r), (&a, &b)| (e + f64::from(a - b).powi(2), r + f64::from(a).powi(2)));
                err_sq += e;
                ref_sq += r;
                let rel_err = if r > 0.0 { (e / r).sqrt() } else { 0.0 };
                if worst.as_ref().is_none_or(|(_, w)| rel_err > *w) {
                    worst = Some((entry.name.clone(), rel_err));
                }
                quantized += 1;
                if shape.len() != 2 {
                    shapes.insert(entry.name.clone(), shape.clone());
                }
                cpu_bytes_after += q.storage_size_in_bytes() as u64;
                q
            } else {
                kept += 1;
                cpu_bytes_after += 4 * values.len() as u64;
                let t = Tensor::from_vec(values, shape.as_slice(), &Device::Cpu)?;
                // Kept as stored: f16 stays f16, f32 stays f32 (bf16 as f32: exact, and GGUF readers vary on it).
                let ggml = if entry.dtype == WeightDType::F16 { GgmlDType::F16 } else { GgmlDType::F32 };
                QTensor::quantize(&t, ggml)?
            };
            tensors.push((entry.name.clone(), stored));
        }
    }
    let out_rel = format!("{stem}.gguf");
    let path = out.join(&out_rel);
    create_parent(&path)?;
    let shapes_json = Value::String(serde_json::to_string(&shapes).map_err(|e| Error::Input(e.to_string()))?);
    let arch = Value::String("lambda-eclipse".into());
    let source = Value::String(rel.to_string());
    let version = Value::U32(2);
    let metadata: Vec<(&str, &Value)> = vec![
        ("general.architecture", &arch),
        ("general.quantization_version", &version),
        ("lambda_eclipse.source", &source),
        (SHAPES_KEY, &shapes_json),
    ];
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).map_err(|e| Error::io(path.display(), e))?);
    gguf_file::write(&mut file, &metadata, &refs).map_err(|e| Error::io(path.display(), e))?;
    drop(refs);
    drop(tensors);
    std::io::Write::flush(&mut file).map_err(|e| Error::io(path.display(), e))?;
    drop(file);
    // Read back through the engine's own reader: the file must pass every check a load makes.
    let written = DirFiles::new(out);
    let header = pollster::block_on(gguf::read_header(&written.open(&out_rel)))?;
    let bytes_after = std::fs::metadata(&path).map_err(|e| Error::io(path.display(), e))?.len();
    if header.tensors.len() != quantized + kept {
        return Err(Error::weights(&out_rel, "the written file does not list every tensor"));
    }
    Ok(FileReport {
        path: out_rel,
        sources: weight_files.iter().map(|f| f.path.trim_start_matches("./").to_string()).collect(),
        bytes_before,
        bytes_after,
        tensors_quantized: quantized,
        tensors_kept: kept,
        relative_rms_error: if ref_sq > 0.0 { (err_sq / ref_sq).sqrt() } else { 0.0 },
        worst,
        cpu_bytes_before,
        cpu_bytes_after,
        largest_values,
    })
}

/// The listing of a model's quantized copies, at the model's root: `{ "variants": { "original": { "url": "./",
/// "bytes", "cpuBytes" }, "q8_0": { "url": "q8_0/", "type": "q8_0", "bytes", "cpuBytes" }, … } }` (URLs
/// relative to the model's base). The app, the widget and `load({ model, variant })` read it to offer the
/// copies with their download size and to refuse, before downloading, one the browser's CPU cannot hold.
pub const LISTING_FILE: &str = "variants.json";

/// One listed variant (`bytes`: its download; `cpuBytes`: [`Report::cpu_bytes`]).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ListedVariant {
    pub url: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub bytes: u64,
    #[serde(rename = "cpuBytes")]
    pub cpu_bytes: u64,
}

/// The folders under `model` (relative paths) that are not part of it: `out` when it is inside, and the
/// copies its listing names (a copy written into the model's folder, as README's hub layout has them).
fn listed_folders(model: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    let model = model.canonicalize().map_err(|e| Error::io(model.display(), e))?;
    let mut folders = vec![out.to_path_buf()];
    if let Some(listing) = read_listing(&model)? {
        for (id, v) in listing {
            let v: ListedVariant = serde_json::from_value(v).map_err(|e| Error::Input(e.to_string()))?;
            let url = v.url.trim_end_matches('/');
            if id != "original" && !url.is_empty() && !url.contains("://") && !url.starts_with('/') {
                folders.push(model.join(url));
            }
        }
    }
    Ok(folders
        .into_iter()
        .filter_map(|f| f.canonicalize().ok()?.strip_prefix(&model).ok().map(Path::to_path_buf))
        .filter(|f| !f.as_os_str().is_empty())
        .collect())
}

/// The variants of `{model}/variants.json` in their order, or None when there is no listing.
pub fn read_listing(model: &Path) -> Result<Option<serde_json::Map<String, serde_json::Value>>> {
    let path = model.join(LISTING_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(path.display(), e))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::io(path.display(), e))?;
    let variants = json.get("variants").cloned().unwrap_or_else(|| serde_json::json!({}));
    let serde_json::Value::Object(map) = variants else {
        return Err(Error::io(path.display(), "`variants` is not an object"));
    };
    for (id, v) in &map {
        serde_json::from_value::<ListedVariant>(v.clone())
            .map_err(|e| Error::io(path.display(), format!("variant `{id}`: {e}")))?;
    }
    Ok(Some(map))
}

/// The URL of `target` relative to the folder `base` (both existing): `q8_0/`, `../lambda-q8_0/`, `./`.
fn relative_url(base: &Path, target: &Path) -> Result<String> {
    let base = base.canonicalize().map_err(|e| Error::io(base.display(), e))?;
    let target = target.canonicalize().map_err(|e| Error::io(target.display(), e))?;
    let common = base.components().zip(target.components()).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = base.components().skip(common).map(|_| "..".to_string()).collect();
    parts.extend(target.components().skip(common).map(|c| c.as_os_str().to_string_lossy().into_owned()));
    Ok(if parts.is_empty() { "./".to_string() } else { format!("{}/", parts.join("/")) })
}

/// Adds the copy `out` of `model` (made as `report` says, in block type `kind`, e.g. "q8_0") to the listing
/// at the model's root, with the original, creating the listing when there is none; other entries are kept.
/// Returns the listing's path and the two entries written.
pub fn update_listing(
    model: &Path,
    out: &Path,
    kind: &str,
    report: &Report,
) -> Result<(PathBuf, ListedVariant, ListedVariant)> {
    let path = model.join(LISTING_FILE);
    let mut variants = read_listing(model)?.unwrap_or_default();
    let original = ListedVariant {
        url: "./".into(),
        kind: None,
        bytes: report.download_bytes(false),
        cpu_bytes: report.cpu_bytes(false),
    };
    let copy = ListedVariant {
        url: relative_url(model, out)?,
        kind: Some(kind.to_string()),
        bytes: report.download_bytes(true),
        cpu_bytes: report.cpu_bytes(true),
    };
    let value = |v: &ListedVariant| serde_json::to_value(v).map_err(|e| Error::Input(e.to_string()));
    variants.insert("original".into(), value(&original)?);
    variants.insert(kind.into(), value(&copy)?);
    let text = serde_json::to_string_pretty(&serde_json::json!({ "variants": variants }))
        .map_err(|e| Error::Input(e.to_string()))?;
    let partial = model.join(format!(".{LISTING_FILE}.partial"));
    std::fs::write(&partial, text + "\n").map_err(|e| Error::io(partial.display(), e))?;
    std::fs::rename(&partial, &path).map_err(|e| Error::io(path.display(), e))?;
    Ok((path, original, copy))
}
