//! Loaded weights of one component, looked up by Hugging Face name with a shape check, like candle's
//! `VarBuilder`. After a model is built, [`WeightStore::finish`] reports any tensor the model did not use.

use super::files::{ByteSource, ModelFiles, TensorBytes};
use super::gguf;
use super::safetensors::{check_finite, read_header, Header};
use crate::error::{Error, Result};
use crate::ops::{blocks, Backend, WeightDType};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

/// The tensors a store holds, by full Hugging Face name, each with its shape.
type TensorsByName<T> = HashMap<String, (T, Vec<usize>)>;

pub struct WeightStore<B: Backend> {
    /// What the weights came from, for error messages (e.g. `text_encoder/model.safetensors`).
    pub source_name: String,
    tensors: RefCell<TensorsByName<B::Tensor>>,
    used: RefCell<BTreeSet<String>>,
    /// Non-float tensors in the files (e.g. `position_ids`), which models never read.
    pub skipped: BTreeMap<String, String>,
    /// Benchmarks and shape-only models: make up any tensor a model asks for.
    invent: Option<Invent<B>>,
    /// The backend that made the tensors, whose [`Backend::layout_for_products`] a layer applies to its
    /// product weights ([`Weights::lay_out_for_products`]); `None` for a store filled by hand (kept as is).
    backend: Option<B>,
    /// Tensors replaced by their product layout: taken once, by the layer that laid them out.
    laid_out: RefCell<BTreeSet<String>>,
}

/// How a store makes up a tensor no file holds.
enum Invent<B: Backend> {
    /// Random values through the real upload path ([`WeightStore::random`]).
    Random(RandomWeights<B>),
    /// A tensor of the shape without values ([`WeightStore::placeholders`]).
    Placeholder(fn(&[usize]) -> B::Tensor),
}

struct RandomWeights<B: Backend> {
    backend: B,
    dtype: WeightDType,
    state: Cell<u64>,
}

impl<B: Backend> RandomWeights<B> {
    /// Small uniform values in ±0.02 (xorshift64*), encoded as `dtype`, through the real upload path. A
    /// block type applies where the quantize command would apply it ([`blocks::can_quantize`]); other
    /// tensors are made in f32.
    fn make(&self, shape: &[usize]) -> Result<B::Tensor> {
        let n: usize = shape.iter().product();
        let mut x = self.state.get();
        let mut values = Vec::with_capacity(n);
        for _ in 0..n {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let u = (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32;
            values.push((u * 2.0 - 1.0) * 0.02);
        }
        self.state.set(x);
        // f32 values are handed over as their bytes, without a copy (little-endian: every target we build).
        let (raw, dtype) = match self.dtype {
            WeightDType::F16 => {
                (values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(), WeightDType::F16)
            }
            WeightDType::BF16 => {
                (values.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect(), WeightDType::BF16)
            }
            q if q.is_quantized() && blocks::can_quantize(shape) => (blocks::quantize(q, &values, shape)?, q),
            _ => return self.backend.upload_weight(bytemuck::cast_slice(&values), WeightDType::F32, shape),
        };
        self.backend.upload_weight(&raw, dtype, shape)
    }
}

impl<B: Backend> WeightStore<B> {
    pub fn new(source_name: impl Into<String>) -> Self {
        WeightStore {
            source_name: source_name.into(),
            tensors: RefCell::default(),
            used: RefCell::default(),
            skipped: BTreeMap::new(),
            invent: None,
            backend: None,
            laid_out: RefCell::default(),
        }
    }

    /// A store that invents every tensor a model asks for, with the shape the config implies: random-weight
    /// models of real configs for benchmarks and memory measurements, without multi-GB files.
    pub fn random(backend: B, dtype: WeightDType, seed: u64) -> Self {
        let mut store = WeightStore::new("random weights");
        store.backend = Some(backend.clone());
        store.invent = Some(Invent::Random(RandomWeights { backend, dtype, state: Cell::new(seed | 1) }));
        store
    }

    /// A store that hands a model a placeholder of the shape its config implies for every tensor (e.g.
    /// [`crate::ops::meta::MetaTensor::weight`]): a model on shapes only, without reading or making any value.
    pub fn placeholders(make: fn(&[usize]) -> B::Tensor) -> Self {
        let mut store = WeightStore::new("placeholder weights");
        store.invent = Some(Invent::Placeholder(make));
        store
    }

    pub fn insert(&mut self, name: String, tensor: B::Tensor, shape: Vec<usize>) {
        self.tensors.get_mut().insert(name, (tensor, shape));
    }

    fn contains(&self, name: &str) -> bool {
        self.tensors.borrow().contains_key(name)
    }

    /// Root view for `new(vb, cfg)`-style constructors.
    pub fn root(&self) -> Weights<'_, B> {
        Weights { store: self, prefix: String::new() }
    }

    /// Bytes held on the backend by all tensors.
    pub fn device_bytes(&self, backend: &B) -> usize {
        self.tensors.borrow().values().map(|(t, _)| backend.byte_size(t)).sum()
    }

    /// Errors when the files hold float tensors that the model did not use: a sign of the wrong checkpoint
    /// for this config (`allowed_unused` names tensors known to be stored but not used by the reference).
    pub fn finish(&self, allowed_unused: &[&str]) -> Result<()> {
        let used = self.used.borrow();
        let tensors = self.tensors.borrow();
        let mut names: Vec<&str> = tensors
            .keys()
            .filter(|k| !used.contains(*k) && !allowed_unused.contains(&k.as_str()))
            .map(|k| k.as_str())
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        names.sort_unstable();
        let shown = names.iter().take(5).copied().collect::<Vec<_>>().join("`, `");
        Err(Error::weights(
            &self.source_name,
            format!(
                "{} unexpected tensor(s) that this model's config does not use: `{shown}`{}",
                names.len(),
                if names.len() > 5 { ", ..." } else { "" }
            ),
        ))
    }
}

/// A prefixed view into a [`WeightStore`].
#[derive(Clone)]
pub struct Weights<'a, B: Backend> {
    store: &'a WeightStore<B>,
    prefix: String,
}

impl<'a, B: Backend> Weights<'a, B> {
    /// Descends into a sub-module: `vb.pp("encoder").pp(3)`.
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        let prefix = if self.prefix.is_empty() { name.to_string() } else { format!("{}.{name}", self.prefix) };
        Weights { store: self.store, prefix }
    }

    fn full_name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// The tensor `name` under this prefix, which must have exactly `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<B::Tensor> {
        let full = self.full_name(name);
        if self.store.laid_out.borrow().contains(&full) {
            return Err(Error::weights(
                &self.store.source_name,
                format!("tensor `{full}` was already taken as a product weight (a model may take it once)"),
            ));
        }
        if let (Some(invent), false) = (&self.store.invent, self.store.contains(&full)) {
            let t = match invent {
                Invent::Random(random) => random.make(shape)?,
                Invent::Placeholder(make) => make(shape),
            };
            self.store.tensors.borrow_mut().insert(full.clone(), (t, shape.to_vec()));
        }
        let tensors = self.store.tensors.borrow();
        match tensors.get(&full) {
            None => Err(Error::weights(
                &self.store.source_name,
                format!("missing tensor `{full}` (expected shape {shape:?})"),
            )),
            Some((_, actual)) if actual.as_slice() != shape => Err(Error::weights(
                &self.store.source_name,
                format!("tensor `{full}` has shape {actual:?} but the config implies {shape:?}"),
            )),
            Some((t, _)) => {
                self.store.used.borrow_mut().insert(full);
                Ok(t.clone())
            }
        }
    }
}

impl<'a, B: Backend> Weights<'a, B> {
    /// `matrix`, the tensor `name` (as [`Weights::get`] gave it, or reshaped to `[n, k]`), laid out for the
    /// backend's products ([`Backend::layout_for_products`]: the CPU keeps `wᵀ` contiguous, so its gemm
    /// packs nothing per call). The store's entry is replaced by the result rather than kept beside it: a
    /// real model's weights are never held twice (the wasm CPU fallback has 4 GiB in all).
    pub fn lay_out_for_products(&self, name: &str, matrix: B::Tensor) -> Result<B::Tensor> {
        let Some(backend) = &self.store.backend else { return Ok(matrix) };
        let full = self.full_name(name);
        let laid_out = backend.layout_for_products(matrix)?;
        if let Some(entry) = self.store.tensors.borrow_mut().get_mut(&full) {
            entry.0 = laid_out.clone();
        }
        self.store.laid_out.borrow_mut().insert(full);
        Ok(laid_out)
    }
}

#[derive(serde::Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

/// Tensors read at the same time while loading (HTTP requests in flight in the browser). Their bytes stay
/// outside the wasm heap until each is uploaded in turn (see [`ByteSource::read_tensor`]).
pub const TENSORS_IN_FLIGHT: usize = 4;

/// One safetensors file of a component, its header read and validated.
pub struct WeightFile<S> {
    /// Path relative to the model root, e.g. `text_encoder/model.safetensors`.
    pub path: String,
    pub source: S,
    pub header: Header,
}

impl<S> WeightFile<S> {
    /// Bytes of this file's tensors whose names `keep` accepts (what the engine reads from it).
    pub fn tensor_bytes_where(&self, keep: impl Fn(&str) -> bool) -> u64 {
        self.header.tensors.iter().filter(|t| keep(&t.name)).map(|t| t.len as u64).sum()
    }
}

/// The weight files of a component folder with their headers: `{dir}/{file_stem}.safetensors.index.json`
/// (sharded) when present, else `{dir}/{file_stem}.safetensors`, else `{dir}/{file_stem}.gguf` (a quantized
/// folder, see `lambda-eclipse quantize`). Returns the name the weights go by in error messages and the
/// files in shard order.
pub async fn open_component<F: ModelFiles>(
    files: &F,
    dir: &str,
    file_stem: &str,
) -> Result<(String, Vec<WeightFile<F::Source>>)> {
    let index_path = format!("{dir}/{file_stem}.safetensors.index.json");
    let shard_paths: Vec<String> = if files.exists(&index_path).await {
        let text = files.read_text(&index_path).await?;
        let index: ShardIndex =
            serde_json::from_str(&text).map_err(|e| Error::config(&index_path, format!("invalid shard index: {e}")))?;
        let shards: BTreeSet<&String> = index.weight_map.values().collect();
        if shards.is_empty() {
            return Err(Error::config(&index_path, "shard index lists no files"));
        }
        shards.into_iter().map(|s| format!("{dir}/{s}")).collect()
    } else {
        let single = format!("{dir}/{file_stem}.safetensors");
        let gguf = format!("{dir}/{file_stem}.gguf");
        if !files.exists(&single).await && files.exists(&gguf).await {
            let source = files.open(&gguf);
            let header = gguf::read_header(&source).await?;
            let name = header.source_name.clone();
            return Ok((name, vec![WeightFile { path: gguf, source, header }]));
        }
        vec![single]
    };
    let mut out = Vec::with_capacity(shard_paths.len());
    for path in shard_paths {
        let source = files.open(&path);
        let header = read_header(&source).await?;
        out.push(WeightFile { path, source, header });
    }
    let name = if out.len() == 1 { out[0].header.source_name.clone() } else { index_path };
    Ok((name, out))
}

/// Loads every float tensor of a component folder (see [`open_component`]). Up to [`TENSORS_IN_FLIGHT`]
/// tensors are read at once; each is handed to the backend as soon as it and those before it have arrived,
/// so memory holds a few tensors, never a file. `on_tensor(bytes_done, bytes_total)` reports progress.
pub async fn load_component_weights<B: Backend, F: ModelFiles>(
    backend: &B,
    files: &F,
    dir: &str,
    file_stem: &str,
    on_tensor: impl FnMut(u64, u64),
) -> Result<WeightStore<B>> {
    load_component_weights_where(backend, files, dir, file_stem, |_| true, on_tensor).await
}

/// [`load_component_weights`] reading only the tensors for which `keep(name)` holds (e.g. the MoVQ's decoder
/// without its encoder): the others are neither read nor uploaded, and `finish` does not see them.
pub async fn load_component_weights_where<B: Backend, F: ModelFiles>(
    backend: &B,
    files: &F,
    dir: &str,
    file_stem: &str,
    keep: impl Fn(&str) -> bool,
    mut on_tensor: impl FnMut(u64, u64),
) -> Result<WeightStore<B>> {
    let (name, weight_files) = open_component(files, dir, file_stem).await?;
    let mut store = WeightStore::new(name);
    store.backend = Some(backend.clone());
    let mut seen = BTreeSet::new();
    let mut jobs = Vec::new();
    for file in &weight_files {
        store.skipped.extend(file.header.skipped.clone());
        for entry in &file.header.tensors {
            if !seen.insert(entry.name.as_str()) {
                return Err(Error::weights(
                    &file.header.source_name,
                    format!("tensor `{}` appears in more than one shard", entry.name),
                ));
            }
            if keep(&entry.name) {
                jobs.push((file, entry));
            }
        }
    }
    let total: u64 = jobs.iter().map(|(_, entry)| entry.len as u64).sum();
    let mut done = 0u64;
    on_tensor(done, total);
    let mut jobs = jobs.into_iter();
    let mut window = InOrder::new();
    loop {
        while window.len() < TENSORS_IN_FLIGHT {
            let Some((file, entry)) = jobs.next() else { break };
            window.push(async move { (file, entry, file.source.read_tensor(entry.offset, entry.len).await) });
        }
        let Some((file, entry, chunk)) = window.next().await else { break };
        let chunk = chunk?;
        if chunk.len() != entry.len {
            return Err(Error::weights(
                &file.header.source_name,
                format!("tensor `{}`: got {} bytes, expected {}", entry.name, chunk.len(), entry.len),
            ));
        }
        // Scanned in host memory on every backend, before the GPU ever sees the bytes: a NaN weight would
        // otherwise surface only as a NaN result.
        let tensor = chunk
            .with_bytes(|raw| {
                check_finite(raw, entry.dtype)?;
                backend.upload_weight(raw, entry.dtype, &entry.shape)
            })
            .map_err(|e| Error::weights(&file.header.source_name, format!("tensor `{}`: {e}", entry.name)))?;
        done += entry.len as u64;
        on_tensor(done, total);
        store.insert(entry.name.clone(), tensor, entry.shape.clone());
    }
    Ok(store)
}

/// Futures that all make progress at once and are taken out in the order they were pushed (a tiny
/// `FuturesOrdered`, without an executor: the browser's fetches run on their own once started).
struct InOrder<'a, T> {
    slots: VecDeque<Slot<'a, T>>,
}

enum Slot<'a, T> {
    Running(Pin<Box<dyn Future<Output = T> + 'a>>),
    Done(T),
}

impl<'a, T> InOrder<'a, T> {
    fn new() -> Self {
        InOrder { slots: VecDeque::new() }
    }
    fn len(&self) -> usize {
        self.slots.len()
    }
    fn push(&mut self, f: impl Future<Output = T> + 'a) {
        self.slots.push_back(Slot::Running(Box::pin(f)));
    }
    /// The output of the oldest future, once it is done (the others keep running meanwhile).
    async fn next(&mut self) -> Option<T> {
        if self.slots.is_empty() {
            return None;
        }
        std::future::poll_fn(|cx| {
            for slot in self.slots.iter_mut() {
                if let Slot::Running(f) = slot {
                    if let Poll::Ready(v) = f.as_mut().poll(cx) {
                        *slot = Slot::Done(v);
                    }
                }
            }
            if let Some(Slot::Done(_)) = self.slots.front() {
                if let Some(Slot::Done(v)) = self.slots.pop_front() {
                    return Poll::Ready(Some(v));
                }
            }
            Poll::Pending
        })
        .await
    }
}
