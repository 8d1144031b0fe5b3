//! CLIP tokenizer on the `tokenizers` crate: `tokenizer.json` when the folder has one, otherwise the same
//! pipeline built from `vocab.json` + `merges.txt` (what the real `kandinsky-2-2-prior/tokenizer` holds).
//! Sequences are BOS, BPE ids, EOS, then the configured pad token up to 77.

use crate::error::{Error, Result};
use crate::weights::ModelFiles;
use serde_json::{json, Value};
use tokenizers::Tokenizer;

pub const BOS_TOKEN: &str = "<|startoftext|>";
pub const EOS_TOKEN: &str = "<|endoftext|>";

/// CLIP's pre-tokenizer split: special tokens, English contractions, letters, single digits, other runs.
const CLIP_SPLIT_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// `max_length` ids: BOS, tokens, EOS, pads.
    pub input_ids: Vec<u32>,
    /// 1 for BOS..EOS, 0 for pads.
    pub attention_mask: Vec<u32>,
    /// The prompt had more tokens than fit; its tail was dropped.
    pub truncated: bool,
}

pub struct ClipTokenizer {
    inner: Tokenizer,
    pub bos_id: u32,
    pub eos_id: u32,
    pub pad_id: u32,
    pub max_length: usize,
}

/// `"pad_token": "!"` or `"pad_token": {"content": "!", ...}`.
fn token_content(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(m) => m.get("content").and_then(|c| c.as_str()).map(str::to_string),
        _ => None,
    }
}

/// The `tokenizer.json` that Hugging Face's converter writes for a CLIP BPE vocabulary.
fn clip_tokenizer_json(vocab: Value, merges: Vec<String>, specials: &[(u32, String)]) -> Value {
    let added: Vec<Value> = specials
        .iter()
        .map(|(id, content)| {
            json!({"id": id, "content": content, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
            {"type": "Lowercase"}
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": CLIP_SPLIT_PATTERN}, "behavior": "Removed", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
        ]},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": EOS_TOKEN, "continuing_subword_prefix": "",
            "end_of_word_suffix": "</w>", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges}
    })
}

impl ClipTokenizer {
    /// Loads `{dir}/tokenizer.json`, or builds from `{dir}/vocab.json` + `{dir}/merges.txt`; the pad token
    /// comes from `tokenizer_config.json` or `special_tokens_map.json` (default: EOS).
    pub async fn load<F: ModelFiles>(files: &F, dir: &str) -> Result<Self> {
        let path = |name: &str| format!("{dir}/{name}");
        let mut pad_token = None;
        let mut max_length = 77;
        for name in ["tokenizer_config.json", "special_tokens_map.json"] {
            if !files.exists(&path(name)).await {
                continue;
            }
            let text = files.read_text(&path(name)).await?;
            let v: Value =
                serde_json::from_str(&text).map_err(|e| Error::config(path(name), format!("invalid JSON: {e}")))?;
            pad_token = pad_token.or_else(|| v.get("pad_token").and_then(token_content));
            if let Some(n) = v.get("model_max_length").and_then(|v| v.as_u64()).filter(|&n| (3..=4096).contains(&n)) {
                max_length = n as usize;
            }
        }
        let pad_token = pad_token.unwrap_or_else(|| EOS_TOKEN.to_string());

        let inner = if files.exists(&path("tokenizer.json")).await {
            let bytes = files.read(&path("tokenizer.json")).await?;
            // The tokenizers crate panics (`expect("Helper")`) on any JSON error inside the `decoder` value (bad
            // syntax, invalid UTF-8 in a string) instead of returning it (found by fuzz/tokenizer_folder): parse
            // the JSON first, fully (`IgnoredAny` would skip strings without checking them).
            serde_json::from_slice::<Value>(&bytes)
                .map_err(|e| Error::config(path("tokenizer.json"), format!("invalid JSON: {e}")))?;
            Tokenizer::from_bytes(&bytes)
                .map_err(|e| Error::config(path("tokenizer.json"), format!("cannot load: {e}")))?
        } else {
            let vocab_text = files.read_text(&path("vocab.json")).await?;
            let vocab: Value = serde_json::from_str(&vocab_text)
                .map_err(|e| Error::config(path("vocab.json"), format!("invalid JSON: {e}")))?;
            let merges_text = files.read_text(&path("merges.txt")).await?;
            // First line is a `#version` header; each other line is one merge "a b".
            let merges: Vec<String> = merges_text
                .lines()
                .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
                .map(str::to_string)
                .collect();
            let lookup = |tok: &str| vocab.get(tok).and_then(|v| v.as_u64()).map(|v| v as u32);
            let mut specials = Vec::new();
            for tok in [pad_token.as_str(), BOS_TOKEN, EOS_TOKEN] {
                let id = lookup(tok).ok_or_else(|| {
                    Error::config(path("vocab.json"), format!("special token `{tok}` is not in the vocabulary"))
                })?;
                if !specials.iter().any(|(i, _)| *i == id) {
                    specials.push((id, tok.to_string()));
                }
            }
            let json = clip_tokenizer_json(vocab, merges, &specials);
            Tokenizer::from_bytes(json.to_string().as_bytes())
                .map_err(|e| Error::config(path("merges.txt"), format!("cannot build the CLIP tokenizer: {e}")))?
        };
        let id = |tok: &str| {
            inner
                .token_to_id(tok)
                .ok_or_else(|| Error::Tokenizer(format!("token `{tok}` is not in the vocabulary of {dir}")))
        };
        Ok(ClipTokenizer { bos_id: id(BOS_TOKEN)?, eos_id: id(EOS_TOKEN)?, pad_id: id(&pad_token)?, max_length, inner })
    }

    /// BPE ids of `text` without BOS/EOS (used for subject keywords).
    pub fn bpe_ids(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// BPE ids of `text` without BOS/EOS, each with the `[start, end)` character range (Unicode scalar
    /// values, in the original text) it came from. Same ids as [`Self::bpe_ids`].
    pub fn bpe_ids_with_char_offsets(&self, text: &str) -> Result<Vec<(u32, usize, usize)>> {
        let enc = self.inner.encode_char_offsets(text, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().iter().zip(enc.get_offsets()).map(|(&id, &(s, e))| (id, s, e)).collect())
    }

    /// BOS + ids + EOS, truncated to `max_length` (EOS kept last) and padded with the pad token.
    pub fn encode(&self, prompt: &str) -> Result<Encoded> {
        let mut ids = self.bpe_ids(prompt)?;
        let room = self.max_length.saturating_sub(2);
        let truncated = ids.len() > room;
        ids.truncate(room);
        let mut input_ids = Vec::with_capacity(self.max_length);
        input_ids.push(self.bos_id);
        input_ids.extend_from_slice(&ids);
        input_ids.push(self.eos_id);
        let real = input_ids.len();
        input_ids.resize(self.max_length, self.pad_id);
        let attention_mask = (0..self.max_length).map(|i| u32::from(i < real)).collect();
        Ok(Encoded { input_ids, attention_mask, truncated })
    }
}
