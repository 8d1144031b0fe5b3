//! Pillow parity of image decoding and bicubic resizing.
//!
//! Expected outputs were made by Pillow with tests/fixtures/pillow/make_fixtures.py
//! (`python3 tests/fixtures/pillow/make_fixtures.py`). Everything is compared byte for byte, JPEG
//! included (decoded by the libjpeg-turbo-exact decoder in `src/image/jpeg.rs`).
#![cfg(not(target_arch = "wasm32"))]

use lambda_eclipse::image::decode::{decode_rgb, DecodeLimits};
use lambda_eclipse::image::resize::resize_bicubic;

use image::RgbImage;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pillow/");
const PHOTOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/assets/images/");

fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn decode_file(path: &str) -> RgbImage {
    decode_rgb(&read(path), &DecodeLimits::default()).unwrap_or_else(|e| panic!("decoding {path}: {e}"))
}

fn fixture(name: &str) -> RgbImage {
    decode_file(&format!("{FIXTURES}{name}"))
}

/// (number of differing channel values, largest absolute difference)
fn diff(actual: &RgbImage, expected: &RgbImage, what: &str) -> (usize, u8) {
    assert_eq!(actual.dimensions(), expected.dimensions(), "{what}: size differs from Pillow's");
    actual.as_raw().iter().zip(expected.as_raw()).fold((0, 0), |(n, max), (&a, &b)| {
        let d = a.abs_diff(b);
        (n + usize::from(d > 0), max.max(d))
    })
}

fn assert_identical(actual: &RgbImage, expected: &RgbImage, what: &str) {
    let (n, max) = diff(actual, expected, what);
    if n > 0 {
        let first = actual.as_raw().iter().zip(expected.as_raw()).position(|(a, b)| a != b).unwrap_or(0);
        let w = actual.width() as usize;
        panic!(
            "{what}: {n} of {} values differ from Pillow (max difference {max}); first at x={}, y={}, channel {}: {} instead of {}",
            actual.as_raw().len(),
            first / 3 % w,
            first / 3 / w,
            first % 3,
            actual.as_raw()[first],
            expected.as_raw()[first]
        );
    }
}

/// Decodes `dec_<case>.<ext>` and compares with Pillow's `convert("RGB")` in `dec_<case>.rgb.png`.
fn check_decode(input: &str, expected: &str) {
    assert_identical(&fixture(input), &fixture(expected), input);
}

/// Resizes `src` to `w`×`h` and compares with Pillow's `resize((w, h), Image.BICUBIC)`.
fn check_resize(src: &str, w: u32, h: u32) {
    let out = resize_bicubic(&fixture(&format!("{src}.png")), w, h).expect("resize");
    assert_identical(&out, &fixture(&format!("resize_{src}_{w}x{h}.png")), &format!("{src} -> {w}x{h}"));
}

// ------------------------------------------------------------------------------------------ resize

#[test]
fn resize_integer_downscale_both_axes_matches_pillow() {
    check_resize("src_64x48", 32, 24);
}

#[test]
fn resize_non_integer_downscale_both_axes_matches_pillow() {
    check_resize("src_64x48", 23, 17);
    check_resize("src_37x23", 18, 11);
}

#[test]
fn resize_strong_downscale_with_wide_antialias_kernel_matches_pillow() {
    check_resize("src_64x48", 7, 5);
}

#[test]
fn resize_non_integer_upscale_both_axes_matches_pillow() {
    check_resize("src_64x48", 100, 70);
    check_resize("src_37x23", 224, 139);
}

#[test]
fn resize_integer_upscale_matches_pillow() {
    check_resize("src_37x23", 74, 46);
}

#[test]
fn resize_with_width_unchanged_runs_only_the_vertical_pass() {
    check_resize("src_64x48", 64, 30);
    check_resize("src_37x23", 37, 61);
}

#[test]
fn resize_with_height_unchanged_runs_only_the_horizontal_pass() {
    check_resize("src_64x48", 40, 48);
}

#[test]
fn resize_up_in_one_axis_and_down_in_the_other_matches_pillow() {
    check_resize("src_64x48", 97, 20);
}

#[test]
fn resize_runs_the_vertical_pass_first_when_height_shrinks_much_more_like_pillow_13() {
    check_resize("src_64x48", 60, 10);
    check_resize("src_64x48", 40, 12);
}

#[test]
fn resize_to_a_single_pixel_matches_pillow() {
    check_resize("src_64x48", 1, 1);
}

#[test]
fn resize_to_the_same_size_returns_an_identical_copy() {
    let src = fixture("src_64x48.png");
    assert_identical(&resize_bicubic(&src, 64, 48).expect("resize"), &src, "same-size resize");
}

#[test]
fn resize_rejects_zero_target_sizes() {
    let src = fixture("src_37x23.png");
    for (w, h) in [(0, 10), (10, 0), (0, 0)] {
        let e = resize_bicubic(&src, w, h).expect_err("zero size must be refused").to_string();
        assert!(e.contains("at least 1"), "unclear message: {e}");
    }
}

#[test]
fn resize_rejects_huge_target_sizes() {
    let src = fixture("src_37x23.png");
    for (w, h) in [(100_000, 10), (10, u32::MAX), (16384, 16384)] {
        let e = resize_bicubic(&src, w, h).expect_err("huge size must be refused").to_string();
        assert!(e.contains("limit"), "unclear message: {e}");
    }
}

#[test]
fn resize_rejects_an_empty_source_image() {
    let e = resize_bicubic(&RgbImage::new(0, 0), 10, 10).expect_err("empty source").to_string();
    assert!(e.contains("empty"), "unclear message: {e}");
}

/// CLIP preprocessing: shortest edge to 224, the other edge `int(edge * 224 / short)`.
fn clip_size(w: u32, h: u32) -> (u32, u32) {
    let short = w.min(h);
    let other = (f64::from(w.max(h)) * 224.0 / f64::from(short)) as u32;
    if w <= h {
        (224, other)
    } else {
        (other, 224)
    }
}

/// (photo, width, height, sha256 of Pillow's output) from clip_photos.txt.
fn clip_cases() -> Vec<(String, u32, u32, String)> {
    let text = String::from_utf8(read(&format!("{FIXTURES}clip_photos.txt"))).expect("utf-8");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[1].parse().expect("width"), f[2].parse().expect("height"), f[3].to_string())
        })
        .collect()
}

#[test]
fn clip_resize_of_png_photos_is_byte_identical_to_pillow() {
    let cases: Vec<_> = clip_cases().into_iter().filter(|c| c.0.ends_with(".png")).collect();
    assert_eq!(cases.len(), 4);
    for (name, w, h, sha) in cases {
        let img = decode_file(&format!("{PHOTOS}{name}"));
        assert_eq!(clip_size(img.width(), img.height()), (w, h), "{name}: CLIP size");
        let out = resize_bicubic(&img, w, h).expect("resize");
        assert_eq!(sha256_hex(out.as_raw()), sha, "{name}: resized bytes differ from Pillow's");
    }
}

#[test]
fn clip_resize_of_jpeg_photos_is_within_jpeg_decoder_tolerance_of_pillow() {
    let cases: Vec<_> = clip_cases().into_iter().filter(|c| c.0.ends_with(".jpg")).collect();
    assert_eq!(cases.len(), 2);
    for (name, w, h, _) in cases {
        let img = decode_file(&format!("{PHOTOS}{name}"));
        assert_eq!(clip_size(img.width(), img.height()), (w, h), "{name}: CLIP size");
        let out = resize_bicubic(&img, w, h).expect("resize");
        let stem = name.trim_end_matches(".jpg");
        let expected = fixture(&format!("clip_{stem}.center.rgb.png"));
        let (x0, y0) = (w / 2 - 32, h / 2 - 32);
        let center = image::imageops::crop_imm(&out, x0, y0, 64, 64).to_image();
        let (n, max) = diff(&center, &expected, &name);
        eprintln!("{name}: CLIP-resized centre 64x64: {n} of {} values differ from Pillow, max {max}", 64 * 64 * 3);
        assert_eq!((n, max), (0, 0), "{name}: {n} values differ, max {max}");
    }
}

// ------------------------------------------------------------------------------------------ decode, exact

#[test]
fn decode_rgb_png_is_unchanged() {
    check_decode("dec_rgb.png", "dec_rgb.rgb.png");
}

#[test]
fn decode_rgba_png_drops_alpha_without_compositing() {
    check_decode("dec_rgba.png", "dec_rgba.rgb.png");
}

#[test]
fn decode_la_png_drops_alpha_and_replicates_grey() {
    check_decode("dec_la.png", "dec_la.rgb.png");
}

#[test]
fn decode_l_png_replicates_grey() {
    check_decode("dec_l.png", "dec_l.rgb.png");
}

#[test]
fn decode_low_bit_depth_grey_png_expands_like_pillow() {
    check_decode("dec_1bit.png", "dec_1bit.rgb.png");
    check_decode("dec_gray2.png", "dec_gray2.rgb.png");
    check_decode("dec_gray4.png", "dec_gray4.rgb.png");
}

#[test]
fn decode_palette_png_looks_up_the_palette() {
    check_decode("dec_p.png", "dec_p.rgb.png");
}

#[test]
fn decode_palette_and_rgb_png_ignore_trns_transparency() {
    check_decode("dec_p_trns.png", "dec_p_trns.rgb.png");
    check_decode("dec_rgb_trns.png", "dec_rgb_trns.rgb.png");
}

#[test]
fn decode_16bit_rgb_and_rgba_png_keep_the_high_byte() {
    check_decode("dec_rgb16.png", "dec_rgb16.rgb.png");
    check_decode("dec_rgba16.png", "dec_rgba16.rgb.png");
}

#[test]
fn decode_16bit_grey_alpha_png_keeps_the_high_byte() {
    check_decode("dec_la16.png", "dec_la16.rgb.png");
}

#[test]
fn decode_16bit_grey_png_clips_to_255_like_pillow_i16() {
    check_decode("dec_gray16.png", "dec_gray16.rgb.png");
    check_decode("dec_gray16_trns.png", "dec_gray16_trns.rgb.png");
}

#[test]
fn decode_gif_takes_the_first_frame_through_the_palette() {
    check_decode("dec_anim.gif", "dec_anim.rgb.png");
}

#[test]
fn decode_bmp_24bit_8bit_palette_and_1bit_match_pillow() {
    check_decode("dec_rgb24.bmp", "dec_rgb24.rgb.png");
    check_decode("dec_p8.bmp", "dec_p8.rgb.png");
    check_decode("dec_1bit.bmp", "dec_1bit_bmp.rgb.png");
}

#[test]
fn decode_bmp_32bit_ignores_the_fourth_byte() {
    check_decode("dec_rgba32.bmp", "dec_rgba32.rgb.png");
}

#[test]
fn decode_bmp_16bit_expands_5_and_6_bit_samples_like_pillow() {
    check_decode("dec_rgb555.bmp", "dec_rgb555.rgb.png");
    check_decode("dec_rgb565.bmp", "dec_rgb565.rgb.png");
}

#[test]
fn decode_lossless_webp_matches_pillow() {
    check_decode("dec_lossless.webp", "dec_lossless.rgb.png");
    check_decode("dec_lossless_rgba.webp", "dec_lossless_rgba.rgb.png");
}

#[test]
fn decode_lossy_webp_matches_pillow() {
    check_decode("dec_lossy.webp", "dec_lossy.rgb.png");
}

// ------------------------------------------------------------------------------------------ decode, JPEG

/// JPEGs decode through the libjpeg-turbo-exact decoder (`image::jpeg`): identical to Pillow.
fn check_jpeg(input: &str, expected: &str) {
    let (n, max) = diff(&fixture(input), &fixture(expected), input);
    assert_eq!((n, max), (0, 0), "{input}: {n} values differ from Pillow, max difference {max}");
}

#[test]
fn decode_jpeg_444_matches_pillow_exactly() {
    check_jpeg("dec_baseline444.jpg", "dec_baseline444.rgb.png");
}

#[test]
fn decode_jpeg_420_and_progressive_match_pillow_exactly() {
    check_jpeg("dec_baseline420.jpg", "dec_baseline420.rgb.png");
    check_jpeg("dec_progressive.jpg", "dec_progressive.rgb.png");
}

#[test]
fn decode_grey_and_cmyk_jpeg_match_pillow_exactly() {
    check_jpeg("dec_gray.jpg", "dec_gray_jpg.rgb.png");
    check_jpeg("dec_cmyk.jpg", "dec_cmyk.rgb.png");
}

#[test]
fn decode_of_shared_jpeg_photos_matches_pillow_exactly() {
    // (photo, crop box stored by make_fixtures.py)
    for (name, x, y) in [("franz-kafka", 200, 300), ("grace_hopper", 220, 200)] {
        let img = decode_file(&format!("{PHOTOS}{name}.jpg"));
        let crop = image::imageops::crop_imm(&img, x, y, 64, 64).to_image();
        let (n, max) = diff(&crop, &fixture(&format!("jpegcrop_{name}.rgb.png")), name);
        assert_eq!((n, max), (0, 0), "{name}.jpg 64x64 crop: {n} values differ from Pillow, max difference {max}");
    }
}

// ------------------------------------------------------------------------------------------ bad input

fn decode_err(bytes: &[u8]) -> String {
    match decode_rgb(bytes, &DecodeLimits::default()) {
        Ok(img) => panic!("expected an error, decoded a {:?} image", img.dimensions()),
        Err(e) => e.to_string(),
    }
}

fn png_chunk(tag: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(tag);
    out.extend_from_slice(data);
    let crc = crc32(&out[4..]);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// A PNG with only a signature and an IHDR (valid CRC) claiming `w`×`h` 8-bit RGB.
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(png_chunk(b"IHDR", &ihdr));
    png
}

#[test]
fn decode_rejects_an_empty_file() {
    let e = decode_err(&[]);
    assert!(e.contains("empty") && e.contains("0 bytes"), "unclear message: {e}");
}

#[test]
fn decode_rejects_random_bytes_as_unsupported_format() {
    let mut state = 0x1234_5678_9abc_def0u64;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect();
    let e = decode_err(&bytes);
    assert!(e.contains("unsupported format"), "unclear message: {e}");
}

#[test]
fn decode_rejects_a_truncated_png() {
    let bytes = read(&format!("{FIXTURES}dec_rgb.png"));
    for len in [4, 20, 40, bytes.len() / 2, bytes.len() - 13] {
        let e = decode_err(&bytes[..len]);
        assert!(
            e.contains("PNG") && (e.contains("corrupt") || e.contains("truncated")),
            "{len} bytes: unclear message: {e}"
        );
    }
}

#[test]
fn decode_rejects_a_png_with_corrupt_image_data() {
    let mut bytes = read(&format!("{FIXTURES}dec_rgb.png"));
    let idat = bytes.windows(4).position(|w| w == b"IDAT").expect("IDAT chunk");
    for b in &mut bytes[idat + 10..idat + 40] {
        *b ^= 0x5a;
    }
    let e = decode_err(&bytes);
    assert!(e.contains("corrupt PNG"), "unclear message: {e}");
}

#[test]
fn decode_rejects_a_30000x30000_png_header_before_allocating() {
    let start = std::time::Instant::now();
    let e = decode_err(&png_header_only(30000, 30000));
    assert!(e.contains("30000×30000") && e.contains("limit"), "unclear message: {e}");
    assert!(start.elapsed().as_secs() < 2, "refusing a huge header took {:?}", start.elapsed());
}

#[test]
fn decode_rejects_huge_bmp_and_gif_headers() {
    // BMP: 30000x30000, 24 bits per pixel, no pixel data.
    let mut bmp = b"BM".to_vec();
    bmp.extend_from_slice(&[0; 4]);
    bmp.extend_from_slice(&[0; 4]);
    bmp.extend_from_slice(&54u32.to_le_bytes());
    for v in [40u32, 30000, 30000] {
        bmp.extend_from_slice(&v.to_le_bytes());
    }
    bmp.extend_from_slice(&1u16.to_le_bytes());
    bmp.extend_from_slice(&24u16.to_le_bytes());
    bmp.extend_from_slice(&[0; 24]);
    let e = decode_err(&bmp);
    assert!(e.contains("30000×30000") && e.contains("limit"), "BMP: unclear message: {e}");

    // GIF: a 30000x30000 logical screen with one 30000x30000 frame descriptor, no data.
    let mut gif = b"GIF89a".to_vec();
    gif.extend_from_slice(&30000u16.to_le_bytes());
    gif.extend_from_slice(&30000u16.to_le_bytes());
    gif.extend_from_slice(&[0, 0, 0, b',', 0, 0, 0, 0]);
    gif.extend_from_slice(&30000u16.to_le_bytes());
    gif.extend_from_slice(&30000u16.to_le_bytes());
    gif.extend_from_slice(&[0, 8]);
    let e = decode_err(&gif);
    assert!(e.contains("GIF image is 30000×30000") && e.contains("limit"), "GIF: unclear message: {e}");
}

#[test]
fn decode_respects_custom_limits() {
    let bytes = read(&format!("{FIXTURES}dec_rgb.png"));
    let small = DecodeLimits { max_width: 32, ..DecodeLimits::default() };
    let e = decode_rgb(&bytes, &small).expect_err("40 px wide is over 32").to_string();
    assert!(e.contains("40×30") && e.contains("limit"), "unclear message: {e}");
    let tight = DecodeLimits { max_alloc_bytes: 1000, ..DecodeLimits::default() };
    let e = decode_rgb(&read(&format!("{FIXTURES}dec_baseline420.jpg")), &tight).expect_err("over alloc").to_string();
    assert!(e.contains("limit"), "unclear message: {e}");
}

#[test]
fn decode_never_panics_on_truncated_or_bit_flipped_files_of_any_format() {
    for name in [
        "dec_rgb.png",
        "dec_p.png",
        "dec_rgb16.png",
        "dec_anim.gif",
        "dec_rgb24.bmp",
        "dec_p8.bmp",
        "dec_rgb565.bmp",
        "dec_lossless.webp",
        "dec_lossy.webp",
        "dec_baseline420.jpg",
        "dec_progressive.jpg",
        "dec_cmyk.jpg",
    ] {
        let bytes = read(&format!("{FIXTURES}{name}"));
        for len in (0..bytes.len()).step_by(bytes.len() / 37 + 1) {
            let _ = decode_rgb(&bytes[..len], &DecodeLimits::default());
        }
        for i in (0..bytes.len()).step_by(bytes.len() / 53 + 1) {
            let mut b = bytes.clone();
            b[i] ^= 0xff;
            let _ = decode_rgb(&b, &DecodeLimits::default());
        }
    }
}

// ------------------------------------------------------------------------------------------ helpers

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// SHA-256 (FIPS 180-4), enough for comparing with the digests in clip_photos.txt without a new dependency.
fn sha256_hex(data: &[u8]) -> String {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
        0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
        0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
        0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
        0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
        0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
        0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] =
        [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh.wrapping_add(s1).wrapping_add(ch).wrapping_add(K[i]).wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            (hh, g, f, e, d, c, b, a) = (g, f, e, d.wrapping_add(t1), c, b, a, t1.wrapping_add(t2));
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
}

#[test]
fn sha256_helper_matches_known_digests() {
    assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}
