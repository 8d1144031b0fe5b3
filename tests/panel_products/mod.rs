//! The CPU's products with weights laid out in panels, checked against the exact (f64) product: shared by
//! the native tests (weights_loading.rs: the AVX-512 kernel, or gemm) and the in-browser ones (wasm_golden.rs:
//! the simd128 kernel).
#![allow(dead_code)]

use lambda_eclipse::ops::cpu::{CpuBackend, CpuTensor};
use lambda_eclipse::ops::{Activation, Backend};

/// `(n, k, m)`: n = 45 is less than one panel, 150 two panels and a part; m = 13 is two groups of six rows
/// and a row (the AVX-512 kernel), six groups of two and a row (simd128); k = 600 is two blocks of 256 and a
/// part (both kernels), 257 one block and one row.
pub const SHAPES: [(usize, usize, usize); 4] = [(45, 70, 5), (150, 70, 5), (150, 600, 13), (64, 257, 6)];

/// Values in ±1 that are not round numbers (so a product's rounding is exercised).
pub fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n as u32).map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 20_011) as f32 / 10_005.5 - 1.0).collect()
}

/// A product weight `w [n, k]` laid out in 64-row panels shows the same shape and values, and `x · wᵀ + b`
/// matches the exact (f64) product as closely as the plain layout does. The kernels (a hand-written one where
/// there is one, src/ops/cpu/panel_kernel/, else gemm) sum in different orders; each order is within
/// (k + 1)·2⁻²⁴·(Σ|x·w| + |b|) of the exact value (k products summed, one bias add, and in wasm each product
/// rounded before its add: Higham's γ to first order). A wrong element in a panel, a panel's output in the
/// wrong columns, a block of K added to the wrong rows or a lost partial block moves a product by ~|x·w| ≫
/// the bound. The bias and a GELU finish each panel's columns inside the product (its epilogue; a product not
/// by panels gets it in one pass after): the same f32 operations as the separate passes, so the same values
/// bit for bit. A bias of the wrong length is refused
/// in words.
pub async fn check_panels((n, k, m): (usize, usize, usize)) {
    let be = CpuBackend::new();
    let (wv, bv, xv) = (values(n * k, 1), values(n, 2), values(m * k, 3));
    let w = be.from_f32(&wv, &[n, k]).unwrap();
    let bias = be.from_f32(&bv, &[n]).unwrap();
    let x = be.from_f32(&xv, &[m, k]).unwrap();
    let laid_out = be.layout_for_products(w.clone()).unwrap();
    assert_eq!(be.shape(&laid_out), vec![n, k]);
    let read = |t: CpuTensor| {
        let be = be.clone();
        async move { be.read_f32(&t).await.unwrap() }
    };
    assert_eq!(read(laid_out.clone()).await, read(w.clone()).await);
    let check = |got: Vec<f32>, what: &str| {
        for (idx, g) in got.iter().enumerate() {
            let (i, j) = (idx / n, idx % n);
            let terms = (0..k).map(|c| xv[i * k + c] as f64 * wv[j * k + c] as f64);
            let exact = terms.clone().sum::<f64>() + bv[j] as f64;
            let bound = (k + 1) as f64 * 2f64.powi(-24) * (terms.map(f64::abs).sum::<f64>() + (bv[j] as f64).abs());
            assert!((*g as f64 - exact).abs() <= bound, "{what} [{i}, {j}]: {g} vs exact {exact} (bound {bound:e})");
        }
    };
    for (wt, what) in [(&w, "plain"), (&laid_out, "laid out")] {
        check(read(be.linear(&x, wt, Some(&bias), Activation::Identity).unwrap()).await, what);
        // A 1×1 convolution is the same product over a feature map's rows.
        check(read(be.conv2d(&x, 1, m, wt, Some(&bias), 1).unwrap()).await, what);
    }
    for (wt, what) in [(&w, "plain"), (&laid_out, "laid out")] {
        let fused = read(be.linear(&x, wt, Some(&bias), Activation::GeluErf).unwrap()).await;
        let product = be.linear(&x, wt, Some(&bias), Activation::Identity).unwrap();
        let separate = read(be.activation(&product, Activation::GeluErf).unwrap()).await;
        assert_eq!(fused, separate, "{what}: GELU in the epilogue");
    }
    let short_bias = be.from_f32(&bv[1..], &[n - 1]).unwrap();
    let err = be.linear(&x, &laid_out, Some(&short_bias), Activation::Identity).expect_err("a short bias").to_string();
    assert!(err.contains(&format!("{} values for {n} outputs", n - 1)), "{err}");
}

/// `(n, k, m)` for Q8_0 weights (rows of whole 32-value blocks; none of candle's integer-kernel shapes —
/// k a multiple of 256 and n of 16 — so the product goes through f32 panels on every CPU).
pub const Q8_0_SHAPES: [(usize, usize, usize); 2] = [(45, 96, 5), (150, 640, 13)];

/// A Q8_0 weight laid out for products is kept 8-bit in panel order (src/ops/cpu/panels.rs): it reads back
/// as exactly the values of its blocks, and `x · wᵀ` matches the exact product of those values within the
/// bound of [`check_panels`]. A scale or a byte in the wrong panel place changes values outright.
pub async fn check_q8_0_panels((n, k, m): (usize, usize, usize)) {
    use lambda_eclipse::ops::{blocks, WeightDType};
    let be = CpuBackend::new();
    let xv = values(m * k, 5);
    let raw = blocks::quantize(WeightDType::Q8_0, &values(n * k, 4), &[n, k]).unwrap();
    let stored = be.upload_weight(&raw, WeightDType::Q8_0, &[n, k]).unwrap();
    let laid_out = be.layout_for_products(stored.clone()).unwrap();
    assert_eq!(be.shape(&laid_out), vec![n, k]);
    let wv = be.read_f32(&stored).await.unwrap();
    assert_eq!(be.read_f32(&laid_out).await.unwrap(), wv, "the Q8_0 panels' values");
    let x = be.from_f32(&xv, &[m, k]).unwrap();
    let got = be.read_f32(&be.linear(&x, &laid_out, None, Activation::Identity).unwrap()).await.unwrap();
    for (idx, g) in got.iter().enumerate() {
        let (i, j) = (idx / n, idx % n);
        let terms = (0..k).map(|c| xv[i * k + c] as f64 * wv[j * k + c] as f64);
        let exact = terms.clone().sum::<f64>();
        let bound = (k + 1) as f64 * 2f64.powi(-24) * terms.map(f64::abs).sum::<f64>();
        assert!((*g as f64 - exact).abs() <= bound, "Q8_0 [{i}, {j}]: {g} vs exact {exact} (bound {bound:e})");
    }
}
