//! The fuzz targets' bodies, shared by the libFuzzer binaries in `fuzz_targets/` (see README.md).
//!
//! Every target feeds bytes to a public entry point exactly as the CLI or the wasm API would, and checks what
//! a caller relies on when it succeeds. A finding is anything that is not an `Err` with a message: a panic
//! (libfuzzer-sys turns it into an abort), a hang (`-timeout`), or memory beyond the budget: the
//! [`BudgetAlloc`] global allocator aborts on any single allocation over [`MAX_ALLOCATION`] or more than
//! [`MAX_LIVE`] bytes live — far above what a small input may legitimately need under the decode budget the
//! image targets use ([`fuzz_limits`]), so only an allocation sized by an unchecked header field trips it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

use image::ImageFormat;
use lambda_eclipse::image::decode::{decode_rgb, DecodeLimits};
use lambda_eclipse::image::jpeg::{decode_jpeg_like_pillow, decode_jpeg_luma};
use lambda_eclipse::models::clip::{ClipTextConfig, ClipVisionConfig};
use lambda_eclipse::models::parse_config;
use lambda_eclipse::models::prior::PriorConfig;
use lambda_eclipse::ops::cpu::CpuBackend;
use lambda_eclipse::pipeline::lambda::control_edges;
use lambda_eclipse::pipeline::{DecodeRequest, DecoderConfigs, DecoderNoise, SchedulerKind};
use lambda_eclipse::tokenizer::ClipTokenizer;
use lambda_eclipse::weights::{load_component_weights, MemFiles};

// ---------------------------------------------------------------------------------------------------------
// Memory budget
// ---------------------------------------------------------------------------------------------------------

/// Largest single allocation a target may make (4× the image targets' decode budget).
pub const MAX_ALLOCATION: usize = 256 << 20;
/// Most bytes a target may hold at once.
pub const MAX_LIVE: usize = 512 << 20;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting live bytes and aborting past the budget with a message (no allocation on
/// that path), so libFuzzer records the input as a crash.
pub struct BudgetAlloc;

fn over_budget(what: &str, bytes: usize) -> ! {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = bytes;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(b"\n==fuzz== memory budget exceeded: ");
    let _ = err.write_all(what.as_bytes());
    let _ = err.write_all(b" ");
    let _ = err.write_all(&digits[i..]);
    let _ = err.write_all(b" bytes\n");
    std::process::abort()
}

unsafe impl GlobalAlloc for BudgetAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.account(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.account(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            self.account(new_size - layout.size());
            if new_size > MAX_ALLOCATION {
                over_budget("one allocation of", new_size);
            }
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        System.realloc(ptr, layout, new_size)
    }
}

impl BudgetAlloc {
    fn account(&self, size: usize) {
        if size > MAX_ALLOCATION {
            over_budget("one allocation of", size);
        }
        let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
        if live > MAX_LIVE {
            over_budget("live bytes", live);
        }
        PEAK.fetch_max(live, Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: BudgetAlloc = BudgetAlloc;

/// Most bytes held at once so far by this process's Rust code.
pub fn peak_live_bytes() -> usize {
    PEAK.load(Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------------------------------
// Inputs that are folders
// ---------------------------------------------------------------------------------------------------------

/// A model folder written as one file: each file starts with a line `#file <relative path>` and runs until the
/// newline before the next such line. Plain text, so libFuzzer's mutations and dictionaries work on it and a
/// seed can be read and written by hand (`fuzz/seeds/make_seeds.py` packs real folders).
pub fn unpack_folder(data: &[u8]) -> MemFiles {
    let mut files = MemFiles::new();
    let starts: Vec<usize> = (0..data.len())
        .filter(|&i| (i == 0 || data[i - 1] == b'\n') && data[i..].starts_with(b"#file "))
        .collect();
    for (k, &start) in starts.iter().enumerate() {
        let end = starts.get(k + 1).map_or(data.len(), |&next| next - 1);
        let header = &data[start + 6..end];
        let (name, body) = match header.iter().position(|&b| b == b'\n') {
            Some(nl) => (&header[..nl], &header[nl + 1..]),
            None => (header, &[][..]),
        };
        files.insert(&String::from_utf8_lossy(name), body.to_vec());
    }
    files
}

// ---------------------------------------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------------------------------------

/// `weights/`: a component folder `w/` — one `model.safetensors` or, for an input starting with GGUF's magic,
/// one `model.gguf` (the input itself, unless it is a packed folder with a shard index and shards) — through
/// the streaming header reader and the whole CPU load (block weights included).
pub fn safetensors_header(data: &[u8]) {
    let files = if data.starts_with(b"#file ") {
        unpack_folder(data)
    } else {
        let mut files = MemFiles::new();
        // A GGUF file (a quantized folder's) goes where the loader looks for one: the same loading path
        // after its header, including the CPU's block upload.
        let name = if data.starts_with(b"GGUF") { "w/model.gguf" } else { "w/model.safetensors" };
        files.insert(name, data.to_vec());
        files
    };
    let backend = CpuBackend::new();
    if let Ok(store) = pollster::block_on(load_component_weights(&backend, &files, "w", "model", |_, _| {})) {
        let _ = store.finish(&[]);
    }
}

/// Config parsing: the decoder's `unet/`, `movq/` and `scheduler/` configs (validated together, then a small
/// request prepared with each sampler: the schedule, the timesteps and the noise), the image processor's, and
/// the text tower's, vision tower's and prior's `config.json`.
pub fn configs(data: &[u8]) {
    let files = unpack_folder(data);
    if let Ok(cfg) = pollster::block_on(DecoderConfigs::read(&files)) {
        let dim = cfg.embedding_dim();
        let side = cfg.size_multiple();
        // The request's own sizes are the harness's choice: keep them small (a real request is checked by
        // `prepare`, which is what runs here).
        if dim <= 1 << 16 && (1..=1024).contains(&side) {
            for kind in [SchedulerKind::Ddpm, SchedulerKind::Ddim, SchedulerKind::DpmSolverPP] {
                let mut req = DecodeRequest::new(vec![0.5; dim], vec![0.0; dim], DecoderNoise::Seed(7));
                req.steps = 3;
                req.width = side;
                req.height = side;
                req.scheduler = Some(kind);
                if let Ok(mut prepared) = cfg.prepare(&req) {
                    let n = prepared.latents.len();
                    let _ = prepared.scheduler.step(&vec![0.1; n], &prepared.latents.clone(), Some(&vec![0.0; n]));
                }
            }
        }
    }
    let _ = pollster::block_on(lambda_eclipse::pipeline::load_image_processor(&files));
    let text = |path: &str| pollster::block_on(lambda_eclipse::weights::ModelFiles::read_text(&files, path)).ok();
    if let Some(t) = text("text_encoder/config.json") {
        let _ = parse_config::<ClipTextConfig>("text_encoder/config.json", &t);
    }
    if let Some(t) = text("image_encoder/config.json") {
        let _ = parse_config::<ClipVisionConfig>("image_encoder/config.json", &t);
    }
    if let Some(t) = text("prior/config.json") {
        if let Ok(c) = parse_config::<PriorConfig>("prior/config.json", &t) {
            let _ = c.validate("prior/config.json");
        }
    }
}

/// The tokenizer folder loader (`tokenizer.json`, or `vocab.json` + `merges.txt`, with `tokenizer_config.json`
/// / `special_tokens_map.json`), then prompts and keywords through it.
pub fn tokenizer_folder(data: &[u8]) {
    let files = unpack_folder(data);
    let Ok(tok) = pollster::block_on(ClipTokenizer::load(&files, "tokenizer")) else { return };
    if let Ok(enc) = tok.encode("a photo of a cat wearing glasses, with 2 dogs! Ünïcödé 猫 🐈") {
        assert_eq!(enc.input_ids.len(), enc.attention_mask.len());
    }
    let _ = tok.bpe_ids_with_char_offsets("franz kafka");
}

/// The decode budget of the image targets: the engine's limits with 64 MiB of pixel memory instead of 512, so
/// a fuzz run spends its time on many small decodes rather than a few legitimately huge ones (the budget logic
/// is the same code whatever the figure).
pub fn fuzz_limits() -> DecodeLimits {
    DecodeLimits { max_alloc_bytes: 64 << 20, ..DecodeLimits::default() }
}

/// Every decode path on a file of `format` (other inputs are skipped, so each target stays on its format):
/// Pillow-exact RGB (subject photos, `inspectImage`), OpenCV-exact gray + Canny (the edge image, `canny`,
/// `cannyPreview`), and for JPEG our libjpeg-exact decoder directly (its `Ok(None)` cases included).
pub fn image(data: &[u8], format: ImageFormat) {
    if image::guess_format(data).ok() != Some(format) {
        return;
    }
    let limits = fuzz_limits();
    if let Ok(rgb) = decode_rgb(data, &limits) {
        let (w, h) = rgb.dimensions();
        assert!(w >= 1 && h >= 1 && w <= limits.max_width && h <= limits.max_height, "{w}×{h} decoded");
        assert_eq!(rgb.as_raw().len(), w as usize * h as usize * 3);
    }
    if let Ok(edges) = control_edges(data, 100.0, 200.0, &limits) {
        assert!(edges.as_raw().iter().all(|&v| v == 0 || v == 255), "Canny output is not 0/255");
    }
    if format == ImageFormat::Jpeg {
        if let Ok(Some(rgb)) = decode_jpeg_like_pillow(data, &limits) {
            assert_eq!(rgb.as_raw().len(), rgb.width() as usize * rgb.height() as usize * 3);
        }
        let _ = decode_jpeg_luma(data, &limits, 0);
    }
}
