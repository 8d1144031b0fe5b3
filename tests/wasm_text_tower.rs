//! In the browser (wasm-bindgen-test, headless Chromium): the tiny text tower, loaded from in-memory files,
//! reproduces the golden `text_embeds` of every case that the engine tokenizes.
#![cfg(target_arch = "wasm32")]

use lambda_eclipse::ops::cpu::CpuBackend;
use lambda_eclipse::pipeline;
use lambda_eclipse::tensor_file;
use lambda_eclipse::weights::MemFiles;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

macro_rules! golden {
    ($p:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/goldens/lambda-tiny/", $p)).as_slice()
    };
}

fn tiny_text_files() -> MemFiles {
    let mut f = MemFiles::new();
    f.insert("tokenizer/tokenizer.json", golden!("model/tokenizer/tokenizer.json"));
    f.insert("tokenizer/tokenizer_config.json", golden!("model/tokenizer/tokenizer_config.json"));
    f.insert("text_encoder/config.json", golden!("model/text_encoder/config.json"));
    f.insert("text_encoder/model.safetensors", golden!("model/text_encoder/model.safetensors"));
    f
}

#[wasm_bindgen_test]
async fn tiny_text_tower_in_browser_matches_golden_text_embeds() {
    let be = CpuBackend::new();
    let files = tiny_text_files();
    let tok = pipeline::load_tokenizer(&files).await.unwrap();
    let model = pipeline::load_text_encoder(&be, &files, &mut |_, _, _| {}).await.unwrap();
    let golden = golden!("cat_glasses.safetensors");
    let emb = pipeline::embed_text(&be, &tok, &model, "a cat wearing glasses at a park").await.unwrap();
    let (_, want) = tensor_file::read_f32(golden, "text_embeds", "cat_glasses").unwrap();
    let diff = emb.text_embeds.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert_eq!(emb.text_embeds.len(), want.len());
    assert!(diff <= 1e-4, "text_embeds differ by {diff}");
    let (_, hidden) = tensor_file::read_f32(golden, "last_hidden_state", "cat_glasses").unwrap();
    let diff = emb.last_hidden_state.iter().zip(&hidden).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(diff <= 1e-4, "last_hidden_state differs by {diff}");
}
