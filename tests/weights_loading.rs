//! Checkpoints in other layouts than the goldens' single f32 file load to the same model: sharded
//! (`model.safetensors.index.json`), and f16 / bf16 tensors converted to the compute dtype.

mod common;
use common::*;
use lambda_eclipse::ops::cpu::{CpuBackend, CpuTensor};
use lambda_eclipse::ops::{Activation, Backend, WeightDType};
use lambda_eclipse::pipeline;
use lambda_eclipse::tensor_file::{to_bytes, OutTensor};
use lambda_eclipse::weights::{ByteSource, MemFiles, ModelFiles, WeightStore};
use safetensors::SafeTensors;
use std::collections::BTreeMap;

#[derive(Clone, Copy)]
enum Store {
    F32,
    F16,
    BF16,
}

/// The tiny text encoder re-saved as two shards with an index; tensors alternate between `dtypes`.
fn sharded_text_encoder(dtypes: [Store; 2]) -> MemFiles {
    let dir = tiny_model();
    let bytes = std::fs::read(dir.join("text_encoder/model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut shards = [BTreeMap::new(), BTreeMap::new()];
    let mut weight_map = serde_json::Map::new();
    let mut names: Vec<String> = st.names().into_iter().map(|n| n.to_string()).collect();
    names.sort();
    for (i, name) in names.iter().enumerate() {
        let view = st.tensor(name).unwrap();
        let shape = view.shape().to_vec();
        let values: Vec<f32> = view.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        let shard = i % 2;
        // Half words are written as U8 with a doubled last dimension, then relabelled below.
        let mut byte_shape = shape.clone();
        *byte_shape.last_mut().unwrap() *= 2;
        let t = match dtypes[shard] {
            Store::F32 => OutTensor::F32(shape, values),
            Store::F16 => {
                OutTensor::U8(byte_shape, values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect())
            }
            Store::BF16 => {
                OutTensor::U8(byte_shape, values.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect())
            }
        };
        shards[shard].insert(name.clone(), t);
        weight_map.insert(name.clone(), format!("model-0000{}-of-00002.safetensors", shard + 1).into());
    }
    let mut files = MemFiles::new();
    for (k, shard) in shards.iter().enumerate() {
        let mut raw = to_bytes(shard).unwrap();
        let label = match dtypes[k] {
            Store::F32 => None,
            Store::F16 => Some("F16"),
            Store::BF16 => Some("BF16"),
        };
        if let Some(label) = label {
            raw = relabel_u8_as(&raw, label);
        }
        files.insert(&format!("text_encoder/model-0000{}-of-00002.safetensors", k + 1), raw);
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    files.insert("text_encoder/model.safetensors.index.json", index.to_string().into_bytes());
    files.insert("text_encoder/config.json", std::fs::read(dir.join("text_encoder/config.json")).unwrap());
    files.insert("tokenizer/tokenizer.json", std::fs::read(dir.join("tokenizer/tokenizer.json")).unwrap());
    files
        .insert("tokenizer/tokenizer_config.json", std::fs::read(dir.join("tokenizer/tokenizer_config.json")).unwrap());
    files
}

/// Rewrites a safetensors header whose tensors were written as U8 bytes [.., 2·n] into `dtype` [.., n].
fn relabel_u8_as(raw: &[u8], dtype: &str) -> Vec<u8> {
    let n = u64::from_le_bytes(raw[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&raw[8..8 + n]).unwrap();
    for (name, entry) in header.as_object_mut().unwrap() {
        if name == "__metadata__" {
            continue;
        }
        entry["dtype"] = dtype.into();
        let shape = entry["shape"].as_array_mut().unwrap();
        let last = shape.last_mut().unwrap();
        *last = (last.as_u64().unwrap() / 2).into();
    }
    let text = header.to_string().into_bytes();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(&raw[8 + n..]);
    out
}

fn text_embeds(files: &MemFiles) -> Vec<f32> {
    let be = CpuBackend::new();
    let tok = pollster::block_on(pipeline::load_tokenizer(files)).unwrap();
    let model = pollster::block_on(pipeline::load_text_encoder(&be, files, &mut |_, _, _| {})).unwrap();
    pollster::block_on(pipeline::embed_text(&be, &tok, &model, &cases()[0].prompt)).unwrap().text_embeds
}

#[test]
fn sharded_f32_checkpoint_loads_to_the_same_model() {
    let got = text_embeds(&sharded_text_encoder([Store::F32, Store::F32]));
    assert_close("sharded text_embeds", &got, &Golden::open(&cases()[0]).f32("text_embeds").1, 1e-4);
}

#[test]
fn f16_and_bf16_shards_are_converted_to_f32() {
    let want = Golden::open(&cases()[0]).f32("text_embeds").1;
    let got = text_embeds(&sharded_text_encoder([Store::F16, Store::BF16]));
    // Half-precision weights change the result by their rounding only: close, but not identical.
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = max_abs_diff(&got, &want);
    assert!(d > 0.0, "f16/bf16 rounding should show");
    assert!(d <= 0.05 * scale, "text_embeds from f16/bf16 weights differ by {d} (scale {scale})");
}

/// A model folder whose tensor reads take a different number of polls each (the first of every four the
/// longest), as HTTP responses arrive out of order in the browser; it records how many run at once.
struct OutOfOrderFiles {
    dir: lambda_eclipse::weights::DirFiles,
    log: std::rc::Rc<ReadLog>,
}

#[derive(Default)]
struct ReadLog {
    started: std::cell::Cell<usize>,
    in_flight: std::cell::Cell<usize>,
    max_in_flight: std::cell::Cell<usize>,
    finished: std::cell::RefCell<Vec<usize>>,
}

struct OutOfOrderSource {
    inner: <lambda_eclipse::weights::DirFiles as ModelFiles>::Source,
    log: std::rc::Rc<ReadLog>,
}

impl ByteSource for OutOfOrderSource {
    type Chunk = Vec<u8>;
    fn name(&self) -> String {
        self.inner.name()
    }
    async fn len(&self) -> lambda_eclipse::Result<u64> {
        self.inner.len().await
    }
    async fn read_range(&self, start: u64, len: usize) -> lambda_eclipse::Result<Vec<u8>> {
        self.inner.read_range(start, len).await
    }
    async fn read_tensor(&self, start: u64, len: usize) -> lambda_eclipse::Result<Vec<u8>> {
        let log = &self.log;
        let id = log.started.get();
        log.started.set(id + 1);
        log.in_flight.set(log.in_flight.get() + 1);
        log.max_in_flight.set(log.max_in_flight.get().max(log.in_flight.get()));
        let mut polls = 2 * (4 - id % 4);
        std::future::poll_fn(|cx| {
            if polls == 0 {
                return std::task::Poll::Ready(());
            }
            polls -= 1;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        })
        .await;
        log.in_flight.set(log.in_flight.get() - 1);
        log.finished.borrow_mut().push(id);
        self.inner.read_range(start, len).await
    }
}

impl ModelFiles for OutOfOrderFiles {
    type Source = OutOfOrderSource;
    fn open(&self, rel_path: &str) -> OutOfOrderSource {
        OutOfOrderSource { inner: self.dir.open(rel_path), log: self.log.clone() }
    }
    async fn exists(&self, rel_path: &str) -> bool {
        self.dir.exists(rel_path).await
    }
}

#[test]
fn tensors_read_four_at_a_time_and_arriving_out_of_order_load_to_the_same_model() {
    let files = OutOfOrderFiles { dir: lambda_eclipse::weights::DirFiles::new(tiny_model()), log: Default::default() };
    let be = CpuBackend::new();
    let tok = pollster::block_on(pipeline::load_tokenizer(&files)).unwrap();
    let mut reports = Vec::new();
    let model =
        pollster::block_on(pipeline::load_text_encoder(&be, &files, &mut |_, done, total| reports.push((done, total))))
            .unwrap();
    let got = pollster::block_on(pipeline::embed_text(&be, &tok, &model, &cases()[0].prompt)).unwrap().text_embeds;
    assert_close("text_embeds", &got, &Golden::open(&cases()[0]).f32("text_embeds").1, 1e-4);

    let log = &files.log;
    assert_eq!(log.max_in_flight.get(), lambda_eclipse::weights::TENSORS_IN_FLIGHT);
    let finished = log.finished.borrow();
    assert_eq!(finished.len(), log.started.get());
    assert!(finished.windows(2).any(|w| w[0] > w[1]), "reads should have finished out of order: {finished:?}");
    // Progress only grows, one report per tensor (plus the first), and ends complete.
    assert_eq!(reports.len(), log.started.get() + 1);
    assert!(reports.windows(2).all(|w| w[0].0 < w[1].0 || (w[0].0 == w[1].0 && w[1].0 == 0)));
    let (done, total) = *reports.last().unwrap();
    assert_eq!(done, total);
}

/// Values in ±1 that are not round numbers (so a product's rounding is exercised).
fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n as u32).map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 20_011) as f32 / 10_005.5 - 1.0).collect()
}

/// The CPU keeps a product weight `w [n, k]` in 64-row panels (so gemm reads it without repacking it per
/// call): the tensor shows the same shape and values, and `x · wᵀ + b` matches the exact (f64) product as
/// closely as the plain layout does. gemm may pick another kernel for another stride, so the order of the
/// f32 sums can differ; each order is within (k + 1)·2⁻²⁴·(Σ|x·w| + |b|) of the exact value (k products
/// summed, one bias add; Higham's γₖ to first order). n = 45 is less than one panel, 150 two panels and a
/// part; a wrong element in a panel, or a panel's output in the wrong columns, moves a product by ~|x·w| ≫
/// the bound. On AVX-512 the panels go through the hand-written kernel (src/ops/cpu/panel_kernel.rs: groups of
/// six rows of x, K in blocks of 256): m = 13 is two groups and a row, k = 600 two blocks and a part, so a
/// block added to the wrong rows or a lost partial block fails too; elsewhere gemm computes them.
#[test]
fn cpu_product_weights_laid_out_in_panels_keep_their_values_and_products() {
    for (n, k, m) in [(45, 70, 5), (150, 70, 5), (150, 600, 13), (64, 257, 6)] {
        check_panels(n, k, m);
    }
}

#[track_caller]
fn check_panels(n: usize, k: usize, m: usize) {
    let be = CpuBackend::new();
    let (wv, bv, xv) = (values(n * k, 1), values(n, 2), values(m * k, 3));
    let w = be.from_f32(&wv, &[n, k]).unwrap();
    let bias = be.from_f32(&bv, &[n]).unwrap();
    let x = be.from_f32(&xv, &[m, k]).unwrap();
    let laid_out = be.layout_for_products(w.clone()).unwrap();
    assert_eq!(be.shape(&laid_out), vec![n, k]);
    let read = |t: &CpuTensor| pollster::block_on(be.read_f32(t)).unwrap();
    assert_eq!(read(&laid_out), read(&w));
    let check = |got: Vec<f32>, what: &str| {
        for (idx, g) in got.iter().enumerate() {
            let (i, j) = (idx / n, idx % n);
            let terms = (0..k).map(|c| xv[i * k + c] as f64 * wv[j * k + c] as f64);
            let exact = terms.clone().sum::<f64>() + bv[j] as f64;
            let bound = (k + 1) as f64 * 2f64.powi(-24) * (terms.map(f64::abs).sum::<f64>() + (bv[j] as f64).abs());
            assert!((*g as f64 - exact).abs() <= bound, "{what} [{i}, {j}]: {g} vs exact {exact} (bound {bound:e})");
        }
    };
    for (wt, what) in [(&w, "plain"), (&laid_out, "laid out")] {
        check(read(&be.linear(&x, wt, Some(&bias), Activation::Identity).unwrap()), what);
        // A 1×1 convolution is the same product over a feature map's rows.
        check(read(&be.conv2d(&x, 1, m, wt, Some(&bias), 1).unwrap()), what);
    }
}

/// A layer lays out its weight in the store's place (the store never holds the original beside it: a real
/// tower's weights are not held twice), so the same tensor cannot be taken a second time, and says so.
#[test]
fn a_weight_laid_out_for_products_is_taken_once_and_a_second_taking_is_a_clear_error() {
    let store = WeightStore::random(CpuBackend::new(), WeightDType::F32, 7);
    let vb = store.root().pp("fc1");
    let w = vb.get("weight", &[64, 96]).unwrap();
    let laid_out = vb.lay_out_for_products("weight", w).unwrap();
    assert_eq!(store.device_bytes(&CpuBackend::new()), 64 * 96 * 4);
    assert_eq!(CpuBackend::new().shape(&laid_out), vec![64, 96]);
    let err = vb.get("weight", &[64, 96]).expect_err("a second taking must fail").to_string();
    assert!(err.contains("fc1.weight") && err.contains("already taken"), "{err}");
}
