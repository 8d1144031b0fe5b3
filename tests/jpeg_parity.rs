//! Bit-exact JPEG decoding (src/image/jpeg.rs) against Pillow and OpenCV.
//!
//! Expected outputs were made with tests/fixtures/jpeg/make_fixtures.py
//! (`python3 tests/fixtures/jpeg/make_fixtures.py`): `<name>.rgb.png` is Pillow's
//! `Image.open(f).convert("RGB")`, `<name>.luma.png` is OpenCV's `imread(f, IMREAD_GRAYSCALE)`; both must be
//! equal byte for byte. `unsupported_*.jpg` must give `Ok(None)` (the caller falls back to the `image` crate).
//! The three shared photos are checked through FNV-1a hashes of the same outputs (shared_photos.txt).
#![cfg(not(target_arch = "wasm32"))]

use lambda_eclipse::image::jpeg::{decode_jpeg_like_pillow, decode_jpeg_luma};
use lambda_eclipse::image::limits::DecodeLimits;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jpeg/");
const PHOTOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/assets/images/");

fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(FIXTURES)
        .expect("fixture directory")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".jpg").map(str::to_string))
        .collect();
    names.sort();
    assert!(names.len() >= 30, "expected the JPEG fixtures in {FIXTURES}, found {}", names.len());
    names
}

fn supported_fixture_names() -> Vec<String> {
    fixture_names().into_iter().filter(|n| !n.starts_with("unsupported_")).collect()
}

fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

/// Number of pixels that differ (any channel) between two equally sized interleaved buffers.
fn differing_pixels(a: &[u8], b: &[u8], channels: usize) -> usize {
    a.chunks(channels).zip(b.chunks(channels)).filter(|(x, y)| x != y).count()
}

#[test]
fn fixtures_decode_byte_identical_to_pillow_convert_rgb() {
    let mut failures = Vec::new();
    for name in supported_fixture_names() {
        let got = decode_jpeg_like_pillow(&read(&format!("{FIXTURES}{name}.jpg")), &DecodeLimits::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .unwrap_or_else(|| panic!("{name}: decoder returned Ok(None) (unsupported)"));
        let want = image::open(format!("{FIXTURES}{name}.rgb.png")).expect("expected PNG").to_rgb8();
        if got.dimensions() != want.dimensions() {
            failures.push(format!("{name}: size {:?} vs Pillow {:?}", got.dimensions(), want.dimensions()));
        } else if got.as_raw() != want.as_raw() {
            failures.push(format!("{name}: {} pixels differ", differing_pixels(got.as_raw(), want.as_raw(), 3)));
        }
    }
    assert!(failures.is_empty(), "not identical to Pillow:\n{}", failures.join("\n"));
}

#[test]
fn fixtures_luma_byte_identical_to_opencv_imread_grayscale() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for name in supported_fixture_names() {
        let bytes = read(&format!("{FIXTURES}{name}.jpg"));
        let got = decode_jpeg_luma(&bytes, &DecodeLimits::default(), 0).unwrap_or_else(|e| panic!("{name}: {e}"));
        let png = format!("{FIXTURES}{name}.luma.png");
        if !std::path::Path::new(&png).exists() {
            // CMYK/YCCK: libjpeg cannot give grayscale directly, so neither does this decoder.
            assert!(got.is_none(), "{name}: CMYK luma should be Ok(None)");
            continue;
        }
        let got = got.unwrap_or_else(|| panic!("{name}: luma returned Ok(None)"));
        let want = image::open(&png).expect("expected PNG").to_luma8();
        checked += 1;
        if got.dimensions() != want.dimensions() {
            failures.push(format!("{name}: size {:?} vs OpenCV {:?}", got.dimensions(), want.dimensions()));
        } else if got.as_raw() != want.as_raw() {
            failures.push(format!("{name}: {} pixels differ", differing_pixels(got.as_raw(), want.as_raw(), 1)));
        }
    }
    assert!(checked >= 25, "only {checked} luma fixtures");
    assert!(failures.is_empty(), "not identical to OpenCV:\n{}", failures.join("\n"));
}

/// (file name, width, height, hash of Pillow RGB, hash of OpenCV grayscale)
fn shared_photo_hashes() -> Vec<(String, u32, u32, u64, u64)> {
    let text = std::fs::read_to_string(format!("{FIXTURES}shared_photos.txt")).expect("shared_photos.txt");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let hex = |s: &str| u64::from_str_radix(s, 16).expect("hash");
            (f[0].to_string(), f[1].parse().unwrap(), f[2].parse().unwrap(), hex(f[3]), hex(f[4]))
        })
        .collect()
}

#[test]
fn shared_photos_decode_byte_identical_to_pillow() {
    let photos = shared_photo_hashes();
    assert_eq!(photos.len(), 3);
    for (name, w, h, rgb_hash, _) in photos {
        let img = decode_jpeg_like_pillow(&read(&format!("{PHOTOS}{name}")), &DecodeLimits::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .unwrap_or_else(|| panic!("{name}: Ok(None)"));
        assert_eq!(img.dimensions(), (w, h), "{name}");
        assert_eq!(fnv1a64(img.as_raw()), rgb_hash, "{name}: RGB differs from Pillow");
    }
}

#[test]
fn shared_photos_luma_byte_identical_to_opencv_imread_grayscale() {
    for (name, w, h, _, luma_hash) in shared_photo_hashes() {
        let img = decode_jpeg_luma(&read(&format!("{PHOTOS}{name}")), &DecodeLimits::default(), 0)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .unwrap_or_else(|| panic!("{name}: Ok(None)"));
        assert_eq!(img.dimensions(), (w, h), "{name}");
        assert_eq!(fnv1a64(img.as_raw()), luma_hash, "{name}: luma differs from OpenCV");
    }
}

#[test]
fn arithmetic_coded_and_unrefined_progressive_jpegs_return_none_for_fallback() {
    let names: Vec<String> = fixture_names().into_iter().filter(|n| n.starts_with("unsupported_")).collect();
    assert!(names.len() >= 2);
    for name in names {
        let bytes = read(&format!("{FIXTURES}{name}.jpg"));
        assert!(
            matches!(decode_jpeg_like_pillow(&bytes, &DecodeLimits::default()), Ok(None)),
            "{name}: expected Ok(None)"
        );
        assert!(
            matches!(decode_jpeg_luma(&bytes, &DecodeLimits::default(), 0), Ok(None)),
            "{name}: luma: expected Ok(None)"
        );
    }
}

#[test]
fn the_decode_budget_is_checked_from_the_sof_header_before_decoding() {
    let bytes = read(&format!("{FIXTURES}baseline_420_q75.jpg")); // 37x29
    let pixels = |n| DecodeLimits { max_pixels: n, ..DecodeLimits::default() };
    assert!(decode_jpeg_like_pillow(&bytes, &pixels(37 * 29)).unwrap().is_some());
    let e = decode_jpeg_like_pillow(&bytes, &pixels(37 * 29 - 1)).expect_err("one pixel over").to_string();
    assert!(e.contains("JPEG image is 37×29") && e.contains("Mpx"), "unclear message: {e}");
    // The peak memory (coefficients, planes, upsampled chroma, RGB) is several bytes a pixel.
    let memory = |bytes| DecodeLimits { max_alloc_bytes: bytes, ..DecodeLimits::default() };
    let e = decode_jpeg_like_pillow(&bytes, &memory(37 * 29 * 3)).expect_err("RGB alone fills it").to_string();
    assert!(e.contains("JPEG image is 37×29") && e.contains("it would need"), "unclear message: {e}");
    assert!(decode_jpeg_like_pillow(&bytes, &memory(37 * 29 * 12)).unwrap().is_some());
    // What the caller holds per pixel afterwards (Canny) counts too.
    assert!(decode_jpeg_luma(&bytes, &memory(37 * 29 * 20), 19).unwrap().is_some());
    assert!(decode_jpeg_luma(&bytes, &memory(37 * 29 * 20), 21).is_err());
    // a header claiming 65535x65535 is refused without allocating
    let mut huge = bytes.clone();
    let sof = huge.windows(2).position(|w| w == [0xFF, 0xC0]).expect("SOF0");
    huge[sof + 5..sof + 9].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
    let e = decode_jpeg_like_pillow(&huge, &DecodeLimits::default()).expect_err("65535²").to_string();
    assert!(e.contains("65535×65535") && e.contains("wider than 16384 px"), "unclear message: {e}");
}

#[test]
fn non_jpeg_and_empty_input_is_an_error() {
    for bytes in [&b""[..], b"\xFF", b"\xFF\xD8", b"\x89PNG\r\n\x1a\n", b"\xFF\xD8\xFF\xD9"] {
        assert!(decode_jpeg_like_pillow(bytes, &DecodeLimits::default()).is_err(), "{bytes:?}");
        assert!(decode_jpeg_luma(bytes, &DecodeLimits::default(), 0).is_err(), "{bytes:?}");
    }
}

#[test]
fn truncated_files_give_an_error_and_never_panic() {
    for name in ["baseline_420_q75", "progressive_420", "restart_every_mcu_420", "cmyk_progressive", "sampling_411"] {
        let bytes = read(&format!("{FIXTURES}{name}.jpg"));
        for cut in 0..bytes.len() {
            let r = decode_jpeg_like_pillow(&bytes[..cut], &DecodeLimits::default());
            let _ = decode_jpeg_luma(&bytes[..cut], &DecodeLimits::default(), 0);
            // Up to 90% of the file the entropy-coded data is certainly incomplete.
            if cut * 10 < bytes.len() * 9 {
                assert!(r.is_err(), "{name} cut at {cut}/{}: expected an error, got {r:?}", bytes.len());
            }
        }
    }
}

#[test]
fn bit_flipped_and_garbled_files_never_panic() {
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for name in supported_fixture_names().iter().chain(["unsupported_arithmetic".to_string()].iter()) {
        let bytes = read(&format!("{FIXTURES}{name}.jpg"));
        for _ in 0..60 {
            let mut d = bytes.clone();
            for _ in 0..1 + next() % 6 {
                let i = (next() as usize) % d.len();
                match next() % 3 {
                    0 => d[i] ^= 1 << (next() % 8),
                    1 => d[i] = next() as u8,
                    _ => d[i] = 0xFF,
                }
            }
            if let Ok(Some(img)) = decode_jpeg_like_pillow(&d, &DecodeLimits::default()) {
                assert_eq!(img.as_raw().len(), img.width() as usize * img.height() as usize * 3);
            }
            let _ = decode_jpeg_luma(&d, &DecodeLimits::default(), 0);
        }
    }
}
