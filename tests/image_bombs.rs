//! Image decode bombs (issue 12, defect 7): small files that claim huge images or metadata are refused from
//! their header, in words, without the memory or the time a decode would take, on every decode path — the
//! CLI's `canny` (edge image: OpenCV-exact gray + Canny) and `embed-image` (subject photos: Pillow-exact RGB),
//! and the library functions behind them and the browser's `inspectImage`/`cannyPreview`.
//!
//! The bombs are generated here (no fixture to commit): PNGs whose zlib streams are written by hand as runs of
//! 258-byte matches (13 bits each, so a 2 GiB inflation fits in 13 MB), JPEGs made by patching the SOF of a
//! 1 KB fixture. Each CLI run is measured in a child process: its peak RSS (`wait4`'s `ru_maxrss`) must stay
//! under [`RSS_BOUND_MIB`] — far below both the 512 MiB budget and the 1.3–5.8 GB these files took before —
//! and the child's data segment is capped at 2 GiB, so a regression fails fast instead of swapping.
#![cfg(all(unix, not(target_arch = "wasm32")))]

mod common;
use common::*;
use lambda_eclipse::image::canny::grayscale_like_opencv;
use lambda_eclipse::image::decode::{decode_rgb, DecodeLimits};
use lambda_eclipse::pipeline::lambda::control_edges;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Peak RSS allowed to a CLI run that refuses a bomb. The tiny model and the binary take ~30–60 MiB; a
/// decode of any of these files needs ≥ 1 GiB.
const RSS_BOUND_MIB: f64 = 200.0;
/// A run still going after this long is killed and fails the test (each refusal takes milliseconds).
const TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------------------
// Bomb makers
// ---------------------------------------------------------------------------------------------------------

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xedb8_8320 } else { c >> 1 };
        }
    }
    !c
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32(&out[4..]).to_be_bytes());
    out
}

/// Bits written least-significant first, as deflate packs them.
#[derive(Default)]
struct Bits {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    fn put(&mut self, value: u32, len: u32) {
        self.acc |= u64::from(value) << self.n;
        self.n += len;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }
    /// A Huffman code: sent most-significant bit first.
    fn code(&mut self, code: u32, len: u32) {
        self.put(code.reverse_bits() >> (32 - len), len);
    }
    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

/// A zlib stream that inflates to `n` ≥ 1 zero bytes: one fixed-Huffman block with a literal 0, then matches
/// of length 258 at distance 1 (13 bits each), then literal zeros for the rest.
fn zlib_zeros(n: u64) -> Vec<u8> {
    let mut b = Bits::default();
    b.put(1, 1); // BFINAL
    b.put(1, 2); // BTYPE = 01, fixed Huffman
    b.code(0x30, 8); // literal 0
    let matches = (n - 1) / 258;
    for _ in 0..matches {
        b.code(0b1100_0101, 8); // length code 285 = 258
        b.code(0, 5); // distance code 0 = 1
    }
    for _ in 0..(n - 1) % 258 {
        b.code(0x30, 8);
    }
    b.code(0, 7); // end of block (256)
    let mut out = vec![0x78, 0x01];
    out.extend(b.finish());
    let adler = ((n % 65521) << 16) as u32 | 1; // a = 1 + Σ 0, b = Σ a = n
    out.extend_from_slice(&adler.to_be_bytes());
    out
}

/// An 8-bit grey PNG of `width`×`height` black pixels, optionally with an iCCP chunk inflating to `iccp` bytes.
fn black_png(width: u32, height: u32, iccp: Option<u64>) -> Vec<u8> {
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(png_chunk(b"IHDR", &ihdr));
    if let Some(n) = iccp {
        let mut data = b"bomb\0\0".to_vec();
        data.extend(zlib_zeros(n));
        png.extend(png_chunk(b"iCCP", &data));
    }
    png.extend(png_chunk(b"IDAT", &zlib_zeros((u64::from(width) + 1) * u64::from(height))));
    png.extend(png_chunk(b"IEND", &[]));
    png
}

/// The 37×29 4:2:0 baseline JPEG fixture (982 bytes) with its SOF claiming `width`×`height`: the entropy data
/// runs out at once and a decoder fills the rest with zeros, so a decode takes the whole image's memory and time.
fn jpeg_claiming(width: u16, height: u16) -> Vec<u8> {
    let mut jpg =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jpeg/baseline_420_q75.jpg")).unwrap();
    let sof = jpg.windows(2).position(|w| w == [0xFF, 0xC0]).expect("SOF0");
    jpg[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    jpg[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    jpg
}

/// The 29×37 grey progressive JPEG fixture claiming `side`×`side`, with `scans` more AC scans that have no data
/// at all before its EOI, coded with a table whose all-zero code means "one coefficient of size 1": decoding
/// the zero fill libjpeg inserts at a marker would set all 63 coefficients of every block, in every scan.
fn jpeg_with_empty_scans(side: u16, scans: usize) -> Vec<u8> {
    let jpg = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jpeg/gray_progressive.jpg")).unwrap();
    let sof = jpg.windows(2).position(|w| w == [0xFF, 0xC2]).expect("SOF2");
    let eoi = jpg.len() - 2;
    assert_eq!(&jpg[eoi..], &[0xFF, 0xD9]);
    let mut out = jpg[..eoi].to_vec();
    out[sof + 5..sof + 7].copy_from_slice(&side.to_be_bytes());
    out[sof + 7..sof + 9].copy_from_slice(&side.to_be_bytes());
    // DHT: AC table 1, a single 1-bit code "0" for symbol 0x01.
    out.extend_from_slice(&[0xFF, 0xC4, 0x00, 0x14, 0x11, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01]);
    for _ in 0..scans {
        // SOS: component 1, DC table 0 / AC table 1, coefficients 1..=63, first pass, no data.
        out.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x01, 0x01, 0x3F, 0x00]);
    }
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

// ---------------------------------------------------------------------------------------------------------
// Measured CLI runs
// ---------------------------------------------------------------------------------------------------------

struct Run {
    success: bool,
    stderr: String,
    peak_rss_mib: f64,
    seconds: f64,
}

/// Runs `cmd` with its data segment capped at 2 GiB; waits with `wait4` for its own resource usage.
fn run_measured(mut cmd: Command) -> Run {
    unsafe {
        cmd.pre_exec(|| {
            let cap = libc::rlimit { rlim_cur: 2 << 30, rlim_max: 2 << 30 };
            if libc::setrlimit(libc::RLIMIT_DATA, &cap) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let start = Instant::now();
    // Reaped by `libc::wait4` below, not `Child::wait`: only `wait4` also reports the child's resource usage.
    #[allow(clippy::zombie_processes)]
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn lambda-eclipse");
    let mut stderr_pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr_pipe.read_to_string(&mut s);
        s
    });
    let pid = child.id() as libc::pid_t;
    let (mut status, mut usage): (libc::c_int, libc::rusage) = (0, unsafe { std::mem::zeroed() });
    loop {
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        assert!(r >= 0, "wait4: {}", std::io::Error::last_os_error());
        if r == pid {
            break;
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
            panic!(
                "still running after {TIMEOUT:?} (peak RSS {} MiB): the image is being decoded",
                usage.ru_maxrss / 1024
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let seconds = start.elapsed().as_secs_f64();
    Run {
        success: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        stderr: reader.join().unwrap(),
        peak_rss_mib: usage.ru_maxrss as f64 / 1024.0,
        seconds,
    }
}

/// Writes `bytes` to a scratch file and runs the CLI's `canny` on it.
fn canny_cli(name: &str, bytes: &[u8]) -> Run {
    let dir = scratch("image_bombs", name);
    let input = dir.join(name);
    std::fs::write(&input, bytes).unwrap();
    let mut cmd = bin();
    cmd.arg("canny").arg(&input).arg("--out").arg(dir.join("edges.png"));
    run_measured(cmd)
}

/// Writes `bytes` to a scratch file and runs the CLI's `embed-image` on it with the tiny model (a subject
/// photo's decode: Pillow-exact RGB).
fn embed_image_cli(name: &str, bytes: &[u8]) -> Run {
    let dir = scratch("image_bombs", &format!("embed_{name}"));
    let input: PathBuf = dir.join(name);
    std::fs::write(&input, bytes).unwrap();
    let mut cmd = bin();
    cmd.args(["embed-image", "--backend", "cpu", "--model"])
        .arg(tiny_model())
        .arg("--out")
        .arg(dir.join("o.safetensors"))
        .arg(&input);
    run_measured(cmd)
}

#[track_caller]
fn refused_quickly_in_little_memory(what: &str, run: &Run, needles: &[&str]) {
    eprintln!(
        "{what}: exit ok = {}, {:.2} s, peak RSS {:.0} MiB: {}",
        run.success,
        run.seconds,
        run.peak_rss_mib,
        run.stderr.trim()
    );
    assert!(!run.success, "{what}: expected a refusal, the command succeeded");
    assert!(!run.stderr.contains("panicked"), "{what}: panic: {}", run.stderr);
    assert_eq!(run.stderr.trim_end().lines().count(), 1, "{what}: one line expected: {}", run.stderr);
    for n in needles {
        assert!(run.stderr.contains(n), "{what}: stderr should mention {n:?}: {}", run.stderr);
    }
    assert!(
        run.peak_rss_mib < RSS_BOUND_MIB,
        "{what}: peak RSS {:.0} MiB, over {RSS_BOUND_MIB} MiB: the image was decoded before it was refused",
        run.peak_rss_mib
    );
}

// ---------------------------------------------------------------------------------------------------------
// The cases, through the CLI
// ---------------------------------------------------------------------------------------------------------

/// Issue: a 522 KB PNG made `canny` use 5.8 GB (here, before the fix: 2.8 GB and 19 s, then edges written).
/// A black 16384×16384 grey PNG is within the side limit but has 268 Mpx, over Pillow's bomb limit, and Canny
/// on it would need 5 GiB.
#[test]
fn canny_refuses_a_16384_square_png_from_its_header_in_little_memory() {
    let png = black_png(16384, 16384, None);
    let run = canny_cli("square.png", &png);
    refused_quickly_in_little_memory(
        &format!("canny, {} KB PNG of 16384×16384", png.len() / 1000),
        &run,
        &[
            "square.png",
            "PNG image is 16384×16384",
            "more than the 16384×16384 / 512 MiB decode limit",
            "268.4 Mpx, more than the 179.0 Mpx",
        ],
    );
}

/// Issue: a 1.6 KB JPEG claiming 30000² kept `canny` busy for more than 60 s.
#[test]
fn canny_refuses_a_1_kb_jpeg_claiming_30000_square_at_once() {
    let run = canny_cli("wide.jpg", &jpeg_claiming(30000, 30000));
    refused_quickly_in_little_memory(
        "canny, 1 KB JPEG claiming 30000×30000",
        &run,
        &["wide.jpg", "JPEG image is 30000×30000", "wider than 16384 px"],
    );
}

/// Issue: a 1×1 PNG whose iCCP chunk inflates to 2 GiB took 2.1 GB (canny); as a photo, up to the 512 MiB
/// pixel budget. Refused after inflating at most 1 MiB (Pillow's MAX_TEXT_CHUNK), like Pillow.
#[test]
fn a_1x1_png_whose_colour_profile_inflates_to_2_gib_is_refused_by_canny_and_as_a_photo() {
    let png = black_png(1, 1, Some(2 << 30));
    let needles = ["profile.png", "PNG colour profile (iCCP chunk) inflates to more than 1024 KiB"];
    refused_quickly_in_little_memory(
        &format!("canny, {} MB 1×1 PNG, 2 GiB iCCP", png.len() >> 20),
        &canny_cli("profile.png", &png),
        &needles,
    );
    refused_quickly_in_little_memory(
        "embed-image, 1×1 PNG, 2 GiB iCCP",
        &embed_image_cli("profile.png", &png),
        &needles,
    );
}

/// Issue: JPEGs of 89–178 Mpx were decoded in full (1.3 GB, 37 s for a 1.5 KB file) and only then refused.
/// 16384×8192 (134 Mpx, 4:2:0) needs ~6.5 bytes a pixel to decode to RGB: refused from its SOF.
#[test]
fn a_1_kb_jpeg_of_134_mpx_is_refused_from_its_sof_as_a_photo_and_by_canny() {
    let jpg = jpeg_claiming(16384, 8192);
    let needles =
        ["big.jpg", "JPEG image is 16384×8192", "more than the 16384×16384 / 512 MiB decode limit", "it would need"];
    refused_quickly_in_little_memory(
        "embed-image, 1 KB JPEG of 16384×8192",
        &embed_image_cli("big.jpg", &jpg),
        &needles,
    );
    refused_quickly_in_little_memory("canny, 1 KB JPEG of 16384×8192", &canny_cli("big.jpg", &jpg), &needles);
    // 10000×9000 (90 Mpx, just over Pillow's MAX_IMAGE_PIXELS): also over the memory budget in colour.
    let jpg = jpeg_claiming(10000, 9000);
    let needles = ["big.jpg", "JPEG image is 10000×9000", "it would need"];
    refused_quickly_in_little_memory(
        "embed-image, 1 KB JPEG of 10000×9000",
        &embed_image_cli("big.jpg", &jpg),
        &needles,
    );
}

/// The budget refuses bombs, not ordinary images: a 3000×2000 edge image and photo still work through the CLI.
#[test]
fn images_within_the_budget_still_decode() {
    let png = black_png(3000, 2000, Some(3000));
    let run = canny_cli("ok.png", &png);
    assert!(run.success, "canny on a 3000×2000 PNG: {}", run.stderr);
    let run = embed_image_cli("ok.png", &png);
    assert!(run.success, "embed-image of a 3000×2000 PNG: {}", run.stderr);
    let run = embed_image_cli("ok.jpg", &jpeg_claiming(1500, 1000));
    assert!(run.success, "embed-image of a 1500×1000 JPEG: {}", run.stderr);
}

// ---------------------------------------------------------------------------------------------------------
// Every library path gives the same refusal (these are what the wasm API calls)
// ---------------------------------------------------------------------------------------------------------

#[test]
fn every_decode_path_refuses_a_bomb_from_its_header_with_the_same_words() {
    let limits = DecodeLimits::default();
    for (name, bytes, needle) in [
        (
            "PNG 16384×12000",
            black_png(16384, 12000, None),
            "PNG image is 16384×12000, more than the 16384×16384 / 512 MiB decode limit",
        ),
        (
            "PNG 20000×10",
            black_png(20000, 10, None),
            "PNG image is 20000×10, more than the 16384×16384 / 512 MiB decode limit (wider than 16384 px)",
        ),
        (
            "JPEG 16384×8192",
            jpeg_claiming(16384, 8192),
            "JPEG image is 16384×8192, more than the 16384×16384 / 512 MiB decode limit",
        ),
        (
            "PNG 1×1, 64 MiB iCCP",
            black_png(1, 1, Some(64 << 20)),
            "PNG colour profile (iCCP chunk) inflates to more than 1024 KiB",
        ),
    ] {
        // decode_rgb: subject photos and inspectImage; control_edges: the edge image and cannyPreview;
        // grayscale_like_opencv: the CLI's canny.
        let photo = decode_rgb(&bytes, &limits).map(|_| ()).expect_err(name).to_string();
        let edges = control_edges(&bytes, 100.0, 200.0, &limits).map(|_| ()).expect_err(name).to_string();
        let gray = grayscale_like_opencv(&bytes).map(|_| ()).expect_err(name).to_string();
        for (path, message) in [("decode_rgb", &photo), ("control_edges", &edges), ("grayscale_like_opencv", &gray)] {
            assert!(message.contains(needle), "{name} through {path}: {message}");
        }
    }
}

#[test]
fn canny_working_memory_counts_against_the_budget_but_a_photo_of_the_same_size_decodes() {
    // 8000×6000 grey: a photo needs 1 + 3 bytes a pixel (183 MiB), Canny 1 + 19 (916 MiB).
    let png = black_png(8000, 6000, None);
    let limits = DecodeLimits::default();
    let rgb = decode_rgb(&png, &limits).expect("48 Mpx grey photo is within the budget");
    assert_eq!(rgb.dimensions(), (8000, 6000));
    drop(rgb);
    let e = control_edges(&png, 100.0, 200.0, &limits).expect_err("Canny on 48 Mpx needs 916 MiB").to_string();
    assert!(e.contains("PNG image is 8000×6000") && e.contains("it would need 916 MiB"), "{e}");
}

#[test]
fn pillow_pixel_limit_applies_whatever_the_memory() {
    // With memory to spare, Pillow's DecompressionBombError threshold (2 × 89,478,485 px) still applies.
    let limits = DecodeLimits { max_alloc_bytes: 64 << 30, ..DecodeLimits::default() };
    let e = decode_rgb(&black_png(16000, 12000, None), &limits).expect_err("192 Mpx").to_string();
    assert!(
        e.contains("PNG image is 16000×12000")
            && e.contains("192.0 Mpx, more than the 179.0 Mpx at which Pillow refuses"),
        "{e}"
    );
}

/// A scan whose data runs out at a marker leaves the rest of its blocks as they are (libjpeg's
/// `insufficient_data`, jdhuff.c/jdphuff.c: "just leave the MCU set to zeroes"), rather than decoding the zero
/// fill block by block: 300 empty scans must cost about what one does, not 300 passes over the image (a
/// 2 KB file could otherwise keep a decoder busy for minutes at the size limit). Timed as a ratio within this
/// run: the best of three decodes of each file.
#[test]
fn a_jpeg_of_hundreds_of_empty_scans_decodes_in_about_the_time_of_one() {
    let limits = DecodeLimits::default();
    let best = |bytes: &[u8]| {
        (0..3)
            .map(|_| {
                let t = Instant::now();
                let rgb = decode_rgb(bytes, &limits).expect("decodes");
                assert_eq!(rgb.dimensions(), (2000, 2000));
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min)
    };
    let one = best(&jpeg_with_empty_scans(2000, 1));
    let many = best(&jpeg_with_empty_scans(2000, 300));
    eprintln!("2000×2000 progressive JPEG: 1 empty scan {one:.3} s, 300 empty scans {many:.3} s");
    assert!(
        many < 3.0 * one + 0.05,
        "300 empty scans took {many:.3} s against {one:.3} s for one: each scan decodes the zero fill"
    );
    // Same pixels: the empty scans change nothing.
    assert_eq!(
        decode_rgb(&jpeg_with_empty_scans(64, 1), &limits).unwrap(),
        decode_rgb(&jpeg_with_empty_scans(64, 300), &limits).unwrap()
    );
}

/// Found by fuzz/image_png (corpus/image_png/crash-plte-49-bytes.png, CRCs valid): a palette of 49 bytes —
/// not a whole number of RGB entries — made png 0.18 panic while expanding it (the CLI exited 101 on `canny`
/// and `embed-image`; a wasm trap in the browser). libpng refuses such a palette; so do we, in words.
#[test]
fn a_png_palette_that_is_not_whole_rgb_entries_is_a_clear_error_not_a_panic() {
    let png =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/image_png/crash-plte-49-bytes.png")).unwrap();
    let limits = DecodeLimits::default();
    for message in [
        decode_rgb(&png, &limits).map(|_| ()).expect_err("PLTE of 49 bytes").to_string(),
        control_edges(&png, 100.0, 200.0, &limits).map(|_| ()).expect_err("PLTE of 49 bytes").to_string(),
    ] {
        assert!(message.contains("corrupt PNG: its palette (PLTE chunk) is 49 bytes"), "{message}");
    }
}
