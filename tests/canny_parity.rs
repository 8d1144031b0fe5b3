//! Parity of `lambda_eclipse::image::canny` with OpenCV:
//! `cv2.imread(path, cv2.IMREAD_GRAYSCALE)` followed by `cv2.Canny(gray, low, high)`.
//! Fixtures are produced by `python3 tests/fixtures/canny/make_fixtures.py` (see its docstring).

use lambda_eclipse::image::canny::{canny, edges_to_rgb, grayscale_like_opencv};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/canny/");
const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/assets/images/");

fn manifest() -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(format!("{FIXTURES}manifest.tsv"))
        .expect("tests/fixtures/canny/manifest.tsv missing: run make_fixtures.py");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn load_gray_png(path: &str) -> image::GrayImage {
    image::load_from_memory(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}")).to_luma8()
}

fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3))
}

fn count_diff(a: &image::GrayImage, b: &image::GrayImage) -> usize {
    assert_eq!(a.dimensions(), b.dimensions(), "dimensions differ");
    a.as_raw().iter().zip(b.as_raw()).filter(|(x, y)| x != y).count()
}

fn parse_f64(s: &str) -> f64 {
    s.parse().unwrap_or_else(|_| panic!("bad threshold {s:?} in manifest"))
}

#[test]
fn photo_grayscale_is_bit_exact_with_imread() {
    let mut checked = 0;
    for row in manifest().iter().filter(|r| r[0] == "photo_gray") {
        let gray = grayscale_like_opencv(&read(&format!("{SHARED}{}", row[1]))).unwrap();
        let (w, h): (u32, u32) = (row[3].parse().unwrap(), row[4].parse().unwrap());
        assert_eq!(gray.dimensions(), (w, h), "{}", row[1]);
        let hash = format!("{:016x}", fnv1a64(gray.as_raw()));
        assert_eq!(hash, row[2], "{}: gray differs from cv2.imread(IMREAD_GRAYSCALE)", row[1]);
        checked += 1;
    }
    assert_eq!(checked, 7, "expected 5 PNG and 2 JPEG photos in the manifest");
}

#[test]
fn photo_canny_100_200_matches_opencv_end_to_end() {
    let mut checked = 0;
    for row in manifest().iter().filter(|r| r[0] == "photo_edges") {
        let gray = grayscale_like_opencv(&read(&format!("{SHARED}{}", row[1]))).unwrap();
        let edges = canny(&gray, parse_f64(&row[2]), parse_f64(&row[3])).unwrap();
        let expected = load_gray_png(&format!("{FIXTURES}{}", row[4]));
        let diff = count_diff(&edges, &expected);
        assert_eq!(diff, 0, "{}: {diff} edge pixels differ from cv2.Canny", row[1]);
        checked += 1;
    }
    assert_eq!(checked, 7);
}

#[test]
fn astronaut_golden_edges_are_exact() {
    let gray = grayscale_like_opencv(&read(&format!("{SHARED}astronaut.png"))).unwrap();
    let edges = canny(&gray, 100.0, 200.0).unwrap();
    let expected = load_gray_png(&format!("{FIXTURES}photo_astronaut_edges.png"));
    assert_eq!(count_diff(&edges, &expected), 0);
}

#[test]
fn synthetic_files_decode_like_imread_grayscale() {
    let mut checked = 0;
    for row in manifest().iter().filter(|r| r[0] == "decode") {
        let gray = grayscale_like_opencv(&read(&format!("{FIXTURES}{}", row[1])))
            .unwrap_or_else(|e| panic!("{}: {e}", row[1]));
        let expected = load_gray_png(&format!("{FIXTURES}{}", row[2]));
        let allowed: usize = row[3].parse().unwrap();
        let diff = count_diff(&gray, &expected);
        assert!(diff <= allowed, "{}: {diff} gray pixels differ from cv2.imread (allowed {allowed})", row[1]);
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} decode cases");
}

#[test]
fn canny_matches_opencv_on_synthetic_images_and_odd_thresholds() {
    let mut checked = 0;
    for row in manifest().iter().filter(|r| r[0] == "canny") {
        let src = load_gray_png(&format!("{FIXTURES}{}", row[1]));
        let (low, high) = (parse_f64(&row[2]), parse_f64(&row[3]));
        let stacked = load_gray_png(&format!("{FIXTURES}{}", row[4]));
        let index: u32 = row[5].parse().unwrap();
        let (w, h) = src.dimensions();
        let expected = image::imageops::crop_imm(&stacked, 0, index * h, w, h).to_image();
        let edges = canny(&src, low, high).unwrap();
        assert_eq!(count_diff(&edges, &expected), 0, "{} {w}x{h} Canny({low}, {high})", row[1]);
        checked += 1;
    }
    assert!(checked >= 100, "only {checked} canny cases");
}

#[test]
fn canny_output_is_binary_0_or_255() {
    let gray = load_gray_png(&format!("{FIXTURES}cn_camera.png"));
    let edges = canny(&gray, 10.0, 30.0).unwrap();
    assert!(edges.as_raw().iter().all(|&v| v == 0 || v == 255));
    assert!(edges.as_raw().contains(&255));
}

#[test]
fn canny_swaps_thresholds_when_low_exceeds_high() {
    let gray = load_gray_png(&format!("{FIXTURES}cn_camera.png"));
    assert_eq!(canny(&gray, 200.0, 100.0).unwrap(), canny(&gray, 100.0, 200.0).unwrap());
}

#[test]
fn edges_to_rgb_replicates_the_channel() {
    let gray = load_gray_png(&format!("{FIXTURES}cn_camera.png"));
    let edges = canny(&gray, 100.0, 200.0).unwrap();
    let rgb = edges_to_rgb(&edges);
    assert_eq!(rgb.dimensions(), edges.dimensions());
    for (p, q) in rgb.pixels().zip(edges.pixels()) {
        assert_eq!(p.0, [q[0]; 3]);
    }
}

#[test]
fn empty_bytes_are_an_error() {
    assert!(grayscale_like_opencv(&[]).is_err());
}

#[test]
fn corrupt_and_truncated_files_are_errors_not_panics() {
    let png = read(&format!("{SHARED}horse.png"));
    let jpg = read(&format!("{SHARED}rocket.jpg"));
    let cases: Vec<Vec<u8>> = vec![
        b"not an image at all".to_vec(),
        png[..8].to_vec(),
        png[..33].to_vec(),
        png[..png.len() / 2].to_vec(),
        jpg[..2].to_vec(),
        jpg[..600].to_vec(),
        [&png[..8], b"garbage garbage garbage garbage".as_slice()].concat(),
        vec![0u8; 1000],
    ];
    for (i, bytes) in cases.iter().enumerate() {
        assert!(grayscale_like_opencv(bytes).is_err(), "case {i} should be an error");
    }
}

#[test]
fn one_pixel_image_decodes_and_has_no_edges() {
    let mut buf = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_pixel(1, 1, image::Rgb([10, 200, 30])).write_to(&mut buf, image::ImageFormat::Png).unwrap();
    let gray = grayscale_like_opencv(buf.get_ref()).unwrap();
    assert_eq!(gray.dimensions(), (1, 1));
    // libpng: (10*9797 + 200*19234 + 30*3737) >> 15 = 123
    assert_eq!(gray.get_pixel(0, 0)[0], 123);
    let edges = canny(&gray, 100.0, 200.0).unwrap();
    assert_eq!(edges.as_raw(), &vec![0u8]);
}

#[test]
fn canny_on_empty_image_is_an_error() {
    assert!(canny(&image::GrayImage::new(0, 0), 100.0, 200.0).is_err());
    assert!(canny(&image::GrayImage::new(5, 0), 100.0, 200.0).is_err());
}
