//! Where model files come from. Everything is async because in the browser every read is a fetch.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

/// One file that can be read by byte range.
// `len` is an async, fallible look-up (file metadata, or a question to the server in the browser); nobody asks
// "is it empty" apart from the size (`read_header` refuses anything under 8 bytes), so no `is_empty`.
#[allow(clippy::len_without_is_empty)]
pub trait ByteSource {
    /// The bytes of one tensor as [`ByteSource::read_tensor`] delivers them.
    type Chunk: TensorBytes;
    /// Name used in error messages (path or URL).
    fn name(&self) -> String;
    /// Total length in bytes.
    fn len(&self) -> impl Future<Output = Result<u64>>;
    /// Exactly `len` bytes from `start`; a short read is an error naming the file.
    fn read_range(&self, start: u64, len: usize) -> impl Future<Output = Result<Vec<u8>>>;
    /// The `len` bytes of a tensor at `start`. Several are requested at once while loading, so a source
    /// may keep them outside the wasm heap until [`TensorBytes::with_bytes`] (the browser keeps them in a
    /// JS buffer); files and memory just read the range.
    fn read_tensor(&self, start: u64, len: usize) -> impl Future<Output = Result<Self::Chunk>>;
}

/// Tensor bytes that may live outside this program's memory until they are used.
pub trait TensorBytes {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Runs `f` on the bytes (copying them into this program's memory first if they live elsewhere).
    fn with_bytes<R>(self, f: impl FnOnce(&[u8]) -> R) -> R;
}

impl TensorBytes for Vec<u8> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn with_bytes<R>(self, f: impl FnOnce(&[u8]) -> R) -> R {
        f(&self)
    }
}

/// A model folder in the Hugging Face layout (`text_encoder/config.json`, ...).
pub trait ModelFiles {
    type Source: ByteSource;
    /// Opens a file by its path relative to the model root; errors surface on first read.
    fn open(&self, rel_path: &str) -> Self::Source;
    /// Whether the file exists (used to choose between sharded and single-file checkpoints).
    fn exists(&self, rel_path: &str) -> impl Future<Output = bool>;
    /// Reads a whole (small) file such as a config.
    fn read(&self, rel_path: &str) -> impl Future<Output = Result<Vec<u8>>> {
        async move {
            let src = self.open(rel_path);
            let len = src.len().await?;
            let len = usize::try_from(len).map_err(|_| Error::io(src.name(), "file too large to read whole"))?;
            src.read_range(0, len).await
        }
    }
    /// Reads a whole file as UTF-8 text.
    fn read_text(&self, rel_path: &str) -> impl Future<Output = Result<String>> {
        async move {
            let bytes = self.read(rel_path).await?;
            String::from_utf8(bytes).map_err(|_| Error::io(rel_path, "not valid UTF-8 text"))
        }
    }
}

/// Files held in memory (tests, wasm callers that already have the bytes).
#[derive(Clone, Default)]
pub struct MemFiles {
    files: HashMap<String, Arc<[u8]>>,
}

impl MemFiles {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn insert(&mut self, rel_path: &str, bytes: impl Into<Arc<[u8]>>) {
        self.files.insert(rel_path.to_string(), bytes.into());
    }
}

pub struct MemSource {
    name: String,
    bytes: Option<Arc<[u8]>>,
}

impl ByteSource for MemSource {
    type Chunk = Vec<u8>;
    fn name(&self) -> String {
        self.name.clone()
    }
    async fn len(&self) -> Result<u64> {
        self.bytes.as_ref().map(|b| b.len() as u64).ok_or_else(|| Error::io(&self.name, "file not found"))
    }
    async fn read_range(&self, start: u64, len: usize) -> Result<Vec<u8>> {
        let bytes = self.bytes.as_ref().ok_or_else(|| Error::io(&self.name, "file not found"))?;
        let start = usize::try_from(start).unwrap_or(usize::MAX);
        match start.checked_add(len) {
            Some(end) if end <= bytes.len() => Ok(bytes[start..end].to_vec()),
            _ => Err(Error::io(
                &self.name,
                format!("read past the end ({} bytes at {start}, file has {})", len, bytes.len()),
            )),
        }
    }
    async fn read_tensor(&self, start: u64, len: usize) -> Result<Vec<u8>> {
        self.read_range(start, len).await
    }
}

impl ModelFiles for MemFiles {
    type Source = MemSource;
    fn open(&self, rel_path: &str) -> MemSource {
        MemSource { name: rel_path.to_string(), bytes: self.files.get(rel_path).cloned() }
    }
    async fn exists(&self, rel_path: &str) -> bool {
        self.files.contains_key(rel_path)
    }
}

/// A model folder on the local disk (native builds).
#[cfg(not(target_arch = "wasm32"))]
#[derive(Clone, Debug)]
pub struct DirFiles {
    root: std::path::PathBuf,
}

#[cfg(not(target_arch = "wasm32"))]
impl DirFiles {
    pub fn new(root: impl Into<std::path::PathBuf>) -> Self {
        DirFiles { root: root.into() }
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub struct FileSource {
    path: std::path::PathBuf,
}

#[cfg(not(target_arch = "wasm32"))]
impl ByteSource for FileSource {
    type Chunk = Vec<u8>;
    fn name(&self) -> String {
        self.path.display().to_string()
    }
    async fn len(&self) -> Result<u64> {
        std::fs::metadata(&self.path).map(|m| m.len()).map_err(|e| Error::io(self.name(), describe_io(&e)))
    }
    async fn read_range(&self, start: u64, len: usize) -> Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(&self.path).map_err(|e| Error::io(self.name(), describe_io(&e)))?;
        f.seek(SeekFrom::Start(start)).map_err(|e| Error::io(self.name(), e))?;
        let mut buf = vec![0u8; len];
        f.read_exact(&mut buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                Error::io(self.name(), format!("file is truncated: wanted {len} bytes at offset {start}"))
            }
            _ => Error::io(self.name(), e),
        })?;
        Ok(buf)
    }
    async fn read_tensor(&self, start: u64, len: usize) -> Result<Vec<u8>> {
        self.read_range(start, len).await
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn describe_io(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "file not found".to_string(),
        _ => e.to_string(),
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl ModelFiles for DirFiles {
    type Source = FileSource;
    fn open(&self, rel_path: &str) -> FileSource {
        FileSource { path: self.root.join(rel_path) }
    }
    async fn exists(&self, rel_path: &str) -> bool {
        self.root.join(rel_path).is_file()
    }
}
