//! Model files over HTTP in the browser: every read is a `fetch` with a `Range` header, so a multi-GB
//! safetensors file is read header first and then tensor by tensor, never whole (wasm memory ≤ 4 GiB).
//! Works in a window and in a worker (uses the global `fetch`).

use super::files::{ByteSource, ModelFiles};
use crate::error::{Error, Result};
use js_sys::{Promise, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Request, RequestInit, Response};

#[wasm_bindgen]
extern "C" {
    /// The global `fetch` of a window or a worker.
    #[wasm_bindgen(js_name = fetch)]
    fn global_fetch(request: &Request) -> Promise;
}

/// A model folder at `base_url` (ending in `/` or not) in the Hugging Face layout; single components may
/// live elsewhere (the real λ prior is its own repository, with its files at the root).
#[derive(Clone, Debug)]
pub struct HttpFiles {
    base_url: String,
    /// (folder prefix such as `prior`, URL that holds that folder's files)
    component_urls: Vec<(String, String)>,
}

impl HttpFiles {
    pub fn new(base_url: &str) -> Self {
        HttpFiles { base_url: base_url.trim_end_matches('/').to_string(), component_urls: Vec::new() }
    }

    /// Serves `{folder}/…` from `url/…` instead of `base_url/{folder}/…`.
    pub fn with_component(mut self, folder: &str, url: &str) -> Self {
        self.component_urls.push((folder.trim_matches('/').to_string(), url.trim_end_matches('/').to_string()));
        self
    }
}

pub struct HttpSource {
    url: String,
}

fn js_message(v: &JsValue) -> String {
    v.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message())).or_else(|| v.as_string()).unwrap_or_else(|| format!("{v:?}"))
}

impl HttpSource {
    /// GET with an inclusive byte range.
    async fn get(&self, first: u64, last: u64) -> Result<Response> {
        let init = RequestInit::new();
        init.set_method("GET");
        let request = Request::new_with_str_and_init(&self.url, &init).map_err(|e| Error::io(&self.url, js_message(&e)))?;
        request
            .headers()
            .set("Range", &format!("bytes={first}-{last}"))
            .map_err(|e| Error::io(&self.url, js_message(&e)))?;
        let response = JsFuture::from(global_fetch(&request)).await.map_err(|e| {
            Error::io(&self.url, format!("network error (offline, blocked by CORS, or the server went away): {}", js_message(&e)))
        })?;
        let response: Response = response.dyn_into().map_err(|_| Error::io(&self.url, "fetch did not return a Response"))?;
        match response.status() {
            200 | 206 => Ok(response),
            404 => Err(Error::io(&self.url, "file not found (HTTP 404)")),
            s => Err(Error::io(&self.url, format!("HTTP {s} {}", response.status_text()))),
        }
    }

    async fn body(&self, response: &Response) -> Result<Vec<u8>> {
        let buffer = response.array_buffer().map_err(|e| Error::io(&self.url, js_message(&e)))?;
        let buffer = JsFuture::from(buffer)
            .await
            .map_err(|e| Error::io(&self.url, format!("download interrupted: {}", js_message(&e))))?;
        Ok(Uint8Array::new(&buffer).to_vec())
    }
}

impl ByteSource for HttpSource {
    fn name(&self) -> String {
        self.url.clone()
    }

    async fn len(&self) -> Result<u64> {
        let response = self.get(0, 0).await?;
        let headers = response.headers();
        let total = if response.status() == 206 {
            // "bytes 0-0/123456"
            headers.get("Content-Range").ok().flatten().and_then(|v| v.rsplit('/').next().and_then(|t| t.trim().parse().ok()))
        } else {
            headers.get("Content-Length").ok().flatten().and_then(|v| v.trim().parse().ok())
        };
        if let Some(body) = response.body() {
            let _ = body.cancel(); // a server without Range support would otherwise send the whole file
        }
        total.ok_or_else(|| Error::io(&self.url, "the server reports no file size (Content-Range/Content-Length)"))
    }

    async fn read_range(&self, start: u64, len: usize) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let response = self.get(start, start + len as u64 - 1).await?;
        let bytes = self.body(&response).await?;
        let bytes = if response.status() == 206 {
            bytes
        } else if let Some(slice) = bytes.get(start as usize..start as usize + len) {
            // The server ignored Range and sent the whole file: fine for small files only.
            slice.to_vec()
        } else {
            return Err(Error::io(&self.url, format!("the server sent {} bytes, fewer than asked for", bytes.len())));
        };
        if bytes.len() != len {
            return Err(Error::io(&self.url, format!("file is truncated: wanted {len} bytes at offset {start}, got {}", bytes.len())));
        }
        Ok(bytes)
    }
}

impl ModelFiles for HttpFiles {
    type Source = HttpSource;

    fn open(&self, rel_path: &str) -> HttpSource {
        for (folder, url) in &self.component_urls {
            if let Some(rest) = rel_path.strip_prefix(folder.as_str()).and_then(|r| r.strip_prefix('/')) {
                return HttpSource { url: format!("{url}/{rest}") };
            }
        }
        HttpSource { url: format!("{}/{}", self.base_url, rel_path) }
    }

    async fn exists(&self, rel_path: &str) -> bool {
        self.open(rel_path).len().await.is_ok()
    }
}
