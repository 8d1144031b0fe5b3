//! Model files over HTTP in the browser. The engine decides *what* to read (configs whole, a safetensors
//! header, then each tensor's byte range, a few at once); the page's JavaScript decides *how*: a
//! [`ModelIo`] object (`ModelReader` in `www/lib/model-reader.js`) answers every read with a `fetch` carrying a
//! `Range` header, keeps tensors in the browser cache so a reload or a resumed download does not fetch them
//! again, reports progress, and aborts everything when the user cancels. A multi-GB safetensors file is
//! never read whole (wasm memory ≤ 4 GiB), and tensors waiting for their turn stay in JS buffers.

use super::files::{ByteSource, ModelFiles, TensorBytes};
use crate::error::{Error, Result};
use js_sys::{Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

#[wasm_bindgen]
extern "C" {
    /// The browser side of loading (see `www/lib/model-reader.js`). Its promises reject with an `Error` whose
    /// message says what went wrong in words (`file not found (HTTP 404)`, `download interrupted …`); the
    /// engine prefixes the URL.
    #[derive(Clone, Debug)]
    pub type ModelIo;

    /// Size in bytes of the file at `url`.
    #[wasm_bindgen(method, catch)]
    fn size(this: &ModelIo, url: &str) -> std::result::Result<Promise, JsValue>;

    /// Exactly `len` bytes of `url` from `start`, as a `Uint8Array`; `tensor` marks weight data (cached,
    /// counted in the progress).
    #[wasm_bindgen(method, catch)]
    fn read(this: &ModelIo, url: &str, start: f64, len: f64, tensor: bool) -> std::result::Result<Promise, JsValue>;
}

/// The message of a JS rejection value (an `Error`, a `DOMException` or anything else).
pub fn js_message(v: &JsValue) -> String {
    if let Some(e) = v.dyn_ref::<js_sys::Error>() {
        return String::from(e.message());
    }
    if let Some(m) = Reflect::get(v, &JsValue::from_str("message")).ok().and_then(|m| m.as_string()) {
        return m;
    }
    v.as_string().unwrap_or_else(|| format!("{v:?}"))
}

/// A model given as one URL per component folder (`tokenizer`, `text_encoder`, `image_encoder`,
/// `image_processor`, `prior`): the real model's components live in two Hugging Face repositories.
#[derive(Clone, Debug)]
pub struct HttpFiles {
    io: ModelIo,
    /// (folder such as `prior`, URL of the folder that holds its files, without a trailing `/`)
    folders: Vec<(String, String)>,
}

impl HttpFiles {
    pub fn new(io: ModelIo) -> Self {
        HttpFiles { io, folders: Vec::new() }
    }

    /// Serves `{folder}/…` from `url/…`.
    pub fn with_folder(mut self, folder: &str, url: &str) -> Self {
        self.folders.push((folder.trim_matches('/').to_string(), url.trim_end_matches('/').to_string()));
        self
    }
}

pub struct HttpSource {
    io: ModelIo,
    /// The file's URL, or why it has none (a folder the manifest does not give).
    url: std::result::Result<String, String>,
    rel_path: String,
}

/// A tensor's bytes, still in a JS buffer: copied into wasm memory only when uploaded.
pub struct JsChunk(Uint8Array);

impl TensorBytes for JsChunk {
    fn len(&self) -> usize {
        self.0.length() as usize
    }
    fn with_bytes<R>(self, f: impl FnOnce(&[u8]) -> R) -> R {
        f(&self.0.to_vec())
    }
}

impl HttpSource {
    fn url(&self) -> Result<&str> {
        self.url.as_deref().map_err(|why| Error::io(&self.rel_path, why))
    }

    async fn call(&self, what: std::result::Result<Promise, JsValue>) -> Result<JsValue> {
        let url = self.url()?;
        let promise = what.map_err(|e| Error::io(url, js_message(&e)))?;
        JsFuture::from(promise).await.map_err(|e| Error::io(url, js_message(&e)))
    }

    async fn read_js(&self, start: u64, len: usize, tensor: bool) -> Result<Uint8Array> {
        let url = self.url()?;
        let value = self.call(self.io.read(url, start as f64, len as f64, tensor)).await?;
        let bytes: Uint8Array = value.dyn_into().map_err(|_| Error::io(url, "the loader returned no bytes"))?;
        if bytes.length() as usize != len {
            return Err(Error::io(
                url,
                format!("file is truncated: wanted {len} bytes at offset {start}, got {}", bytes.length()),
            ));
        }
        Ok(bytes)
    }
}

impl ByteSource for HttpSource {
    type Chunk = JsChunk;

    fn name(&self) -> String {
        self.url.clone().unwrap_or_else(|_| self.rel_path.clone())
    }

    async fn len(&self) -> Result<u64> {
        let url = self.url()?;
        let size = self.call(self.io.size(url)).await?;
        match size.as_f64() {
            Some(n) if n >= 0.0 && n.fract() == 0.0 => Ok(n as u64),
            _ => Err(Error::io(url, "the server reports no file size")),
        }
    }

    async fn read_range(&self, start: u64, len: usize) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        Ok(self.read_js(start, len, false).await?.to_vec())
    }

    async fn read_tensor(&self, start: u64, len: usize) -> Result<JsChunk> {
        if len == 0 {
            return Ok(JsChunk(Uint8Array::new_with_length(0)));
        }
        Ok(JsChunk(self.read_js(start, len, true).await?))
    }
}

impl ModelFiles for HttpFiles {
    type Source = HttpSource;

    fn open(&self, rel_path: &str) -> HttpSource {
        let (folder, rest) = rel_path.split_once('/').unwrap_or(("", rel_path));
        let url = match self.folders.iter().find(|(f, _)| f == folder) {
            Some((_, base)) => Ok(format!("{base}/{rest}")),
            None => Err(format!("the model manifest gives no URL for the `{folder}` folder")),
        };
        HttpSource { io: self.io.clone(), url, rel_path: rel_path.to_string() }
    }

    async fn exists(&self, rel_path: &str) -> bool {
        self.open(rel_path).len().await.is_ok()
    }
}
