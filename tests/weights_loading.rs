//! Checkpoints in other layouts than the goldens' single f32 file load to the same model: sharded
//! (`model.safetensors.index.json`), and f16 / bf16 tensors converted to the compute dtype.

mod common;
mod panel_products;
use common::*;
use lambda_eclipse::ops::cpu::CpuBackend;
use lambda_eclipse::ops::{Backend, WeightDType};
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

/// The CPU keeps a product weight in 64-row panels and multiplies them by a hand-written kernel where it has
/// one: see `panel_products::check_panels` (shared with the in-browser tests, which run the wasm kernel).
#[test]
fn cpu_product_weights_laid_out_in_panels_keep_their_values_and_products() {
    for shape in panel_products::SHAPES {
        pollster::block_on(panel_products::check_panels(shape));
    }
    for shape in panel_products::Q8_0_SHAPES {
        pollster::block_on(panel_products::check_q8_0_panels(shape));
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
