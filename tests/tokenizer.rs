//! The CLIP tokenizer matches Hugging Face's on tricky prompts, both when loaded from `tokenizer.json` and
//! when built from `vocab.json` + `merges.txt` (the layout of the real kandinsky-2-2-prior tokenizer).

mod common;
use common::*;
use lambda_eclipse::tokenizer::ClipTokenizer;
use lambda_eclipse::weights::{DirFiles, MemFiles};

#[derive(serde::Deserialize)]
struct Expected {
    pad_id: u32,
    cases: Vec<ExpectedCase>,
}
#[derive(serde::Deserialize)]
struct ExpectedCase {
    prompt: String,
    input_ids: Vec<u32>,
    attention_mask: Vec<u32>,
}

fn expected() -> Expected {
    load_expected("expected_ids.json")
}

fn load_expected(name: &str) -> Expected {
    let path = format!("{}/tests/fixtures/tokenizer/{name}", env!("CARGO_MANIFEST_DIR"));
    let e: Expected = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(e.cases.len() >= 40);
    e
}

fn vocab_merges_files(pad_token_config: &str) -> MemFiles {
    let dir = tiny_model().join("tokenizer");
    let mut f = MemFiles::new();
    f.insert("tokenizer/vocab.json", std::fs::read(dir.join("vocab.json")).unwrap());
    f.insert("tokenizer/merges.txt", std::fs::read(dir.join("merges.txt")).unwrap());
    f.insert("tokenizer/tokenizer_config.json", pad_token_config.as_bytes().to_vec());
    f
}

#[test]
fn tokenizer_json_matches_hugging_face_on_tricky_prompts() {
    let tok = pollster::block_on(ClipTokenizer::load(&DirFiles::new(tiny_model()), "tokenizer")).unwrap();
    let exp = expected();
    assert_eq!(tok.pad_id, exp.pad_id);
    for case in &exp.cases {
        let enc = tok.encode(&case.prompt).unwrap();
        assert_eq!(enc.input_ids, case.input_ids, "ids of {:?}", case.prompt);
        assert_eq!(enc.attention_mask, case.attention_mask, "mask of {:?}", case.prompt);
    }
}

#[test]
fn vocab_and_merges_build_the_same_tokenizer_with_the_configured_pad() {
    // Same pad as the golden tokenizer_config ("!"): identical ids.
    let tok = pollster::block_on(ClipTokenizer::load(
        &vocab_merges_files(r#"{"pad_token": "!", "model_max_length": 77}"#),
        "tokenizer",
    ))
    .unwrap();
    for case in &expected().cases {
        assert_eq!(tok.encode(&case.prompt).unwrap().input_ids, case.input_ids, "ids of {:?}", case.prompt);
    }
    // The real kandinsky-2-2-prior tokenizer pads with <|endoftext|> (given as an AddedToken object).
    let tok = pollster::block_on(ClipTokenizer::load(
        &vocab_merges_files(r#"{"pad_token": {"content": "<|endoftext|>", "lstrip": false}, "model_max_length": 77}"#),
        "tokenizer",
    ))
    .unwrap();
    let exp = load_expected("expected_ids_eos_pad.json");
    assert_eq!(tok.pad_id, exp.pad_id);
    for case in &exp.cases {
        let enc = tok.encode(&case.prompt).unwrap();
        assert_eq!(enc.input_ids, case.input_ids, "ids of {:?}", case.prompt);
        assert_eq!(enc.attention_mask, case.attention_mask, "mask of {:?}", case.prompt);
    }
}

#[test]
fn over_long_prompt_is_truncated_keeping_eos_last() {
    let tok = pollster::block_on(ClipTokenizer::load(&DirFiles::new(tiny_model()), "tokenizer")).unwrap();
    let enc = tok.encode(&"word ".repeat(200)).unwrap();
    assert!(enc.truncated);
    assert_eq!(enc.input_ids.len(), 77);
    assert_eq!(enc.input_ids[0], tok.bos_id);
    assert_eq!(enc.input_ids[76], tok.eos_id);
    assert!(!tok.encode("a cat").unwrap().truncated);
}

#[test]
fn missing_tokenizer_files_are_a_clear_error() {
    let err = pollster::block_on(ClipTokenizer::load(&MemFiles::new(), "tokenizer")).err().expect("must fail");
    assert!(err.to_string().contains("tokenizer/vocab.json"), "{err}");
}

/// Found by fuzz/tokenizer_folder (corpus/tokenizer_folder/crash-decoder-json-syntax.folder): the tokenizers
/// crate panics (`expect("Helper")`) on a JSON syntax error inside the `decoder` value of `tokenizer.json`; the
/// CLI exited 101 with a panic, and in the browser it is a wasm trap. It must be a clear error.
#[test]
fn a_tokenizer_json_with_a_syntax_error_in_its_decoder_is_a_clear_error_not_a_panic() {
    // Bad syntax, and invalid UTF-8 in a key (crash-decoder-invalid-utf8.folder).
    for json in [
        &br#"{"version": "1.0", "decoder": {"type": "ByteLevel", "trim_offsets": tru}}"#[..],
        b"{\"decoder\": {\"type\": \"ByteLevel\", \"add\xff\xff\": true}}",
    ] {
        let mut files = MemFiles::new();
        files.insert("tokenizer/tokenizer.json", json.to_vec());
        let err = pollster::block_on(ClipTokenizer::load(&files, "tokenizer")).err().expect("must fail");
        let msg = err.to_string();
        assert!(
            msg.contains("tokenizer/tokenizer.json") && msg.contains("invalid JSON") && msg.contains("line 1"),
            "{msg}"
        );
    }
}
