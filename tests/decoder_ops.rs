//! The decoder's ops on the CPU backend (feature maps `[h·w, c]`, channels-last) against naive loops and
//! hand-computed values: conv2d, group_norm, avg_pool_2x2, resize_nearest, concat_cols, mul, scale_shift,
//! SiLU, and attention with many keys / wide heads (chunked queries).

use lambda_eclipse::ops::cpu::CpuBackend;
use lambda_eclipse::ops::{Activation, Backend};

type T = <CpuBackend as Backend>::Tensor;

fn be() -> CpuBackend {
    CpuBackend::new()
}

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn t(data: &[f32], shape: &[usize]) -> T {
    be().from_f32(data, shape).unwrap()
}

fn read(x: &T) -> Vec<f32> {
    pollster::block_on(be().read_f32(x)).unwrap()
}

#[track_caller]
fn close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "length");
    let d = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(d <= tol, "max-abs difference {d:e} > {tol:e}\n got {got:?}\nwant {want:?}");
}

/// PyTorch's conv2d (stride 1, zero padding k/2) on channels-last data, weights `[cout, cin, k, k]`.
// Flat slices carry no shape: every size the op reads from its tensors is a parameter of this reference.
#[allow(clippy::too_many_arguments)]
fn naive_conv(
    x: &[f32],
    h: usize,
    w: usize,
    cin: usize,
    weight: &[f32],
    bias: &[f32],
    cout: usize,
    k: usize,
) -> Vec<f32> {
    let pad = (k / 2) as isize;
    let mut out = vec![0f32; h * w * cout];
    for y in 0..h {
        for xx in 0..w {
            for co in 0..cout {
                let mut acc = bias[co] as f64;
                for ci in 0..cin {
                    for ky in 0..k {
                        for kx in 0..k {
                            let (sy, sx) = (y as isize + ky as isize - pad, xx as isize + kx as isize - pad);
                            if sy < 0 || sx < 0 || sy >= h as isize || sx >= w as isize {
                                continue;
                            }
                            let v = x[(sy as usize * w + sx as usize) * cin + ci] as f64;
                            acc += v * weight[((co * cin + ci) * k + ky) * k + kx] as f64;
                        }
                    }
                }
                out[(y * w + xx) * cout + co] = acc as f32;
            }
        }
    }
    out
}

#[test]
fn conv2d_3x3_matches_naive_loop_with_padding() {
    let (h, w, cin, cout) = (5, 4, 3, 6);
    let x = values(h * w * cin, 1);
    let weight = values(cout * cin * 9, 2);
    let bias = values(cout, 3);
    let y =
        be().conv2d(&t(&x, &[h * w, cin]), h, w, &t(&weight, &[cout, cin * 9]), Some(&t(&bias, &[cout])), 3).unwrap();
    assert_eq!(be().shape(&y), vec![h * w, cout]);
    close(&read(&y), &naive_conv(&x, h, w, cin, &weight, &bias, cout, 3), 1e-5);
}

#[test]
fn conv2d_3x3_over_a_map_whose_patches_exceed_64_mib_is_computed_in_bands_seamlessly() {
    // 300 rows × 256 × (64·9) patches = 177 MB: three bands of ≤ 64 MiB (113, 113, 74 rows); every output,
    // the rows at the band edges included, must equal the direct convolution.
    let (h, w, cin, cout) = (300, 256, 64, 2);
    let x = values(h * w * cin, 4);
    let weight = values(cout * cin * 9, 5);
    let bias = values(cout, 6);
    let y =
        be().conv2d(&t(&x, &[h * w, cin]), h, w, &t(&weight, &[cout, cin * 9]), Some(&t(&bias, &[cout])), 3).unwrap();
    assert_eq!(be().shape(&y), vec![h * w, cout]);
    close(&read(&y), &naive_conv(&x, h, w, cin, &weight, &bias, cout, 3), 1e-4);
}

#[test]
fn conv2d_3x3_on_a_single_row_and_column_sees_only_the_centre_taps() {
    for (h, w) in [(1, 1), (1, 5), (4, 1)] {
        let (cin, cout) = (2, 3);
        let x = values(h * w * cin, 4);
        let weight = values(cout * cin * 9, 5);
        let y = be().conv2d(&t(&x, &[h * w, cin]), h, w, &t(&weight, &[cout, cin * 9]), None, 3).unwrap();
        close(&read(&y), &naive_conv(&x, h, w, cin, &weight, &[0.0; 3], cout, 3), 1e-5);
    }
}

#[test]
fn conv2d_1x1_is_a_per_position_linear_map() {
    let (h, w, cin, cout) = (3, 2, 4, 5);
    let x = values(h * w * cin, 6);
    let weight = values(cout * cin, 7);
    let bias = values(cout, 8);
    let y = be().conv2d(&t(&x, &[h * w, cin]), h, w, &t(&weight, &[cout, cin]), Some(&t(&bias, &[cout])), 1).unwrap();
    close(&read(&y), &naive_conv(&x, h, w, cin, &weight, &bias, cout, 1), 1e-6);
}

#[test]
fn conv2d_hand_computed_box_filter_counts_neighbours_inside_the_map() {
    // All-ones 3×3 kernel on an all-ones 3×3 map: each output counts the in-bounds neighbours.
    let y = be().conv2d(&t(&[1.0; 9], &[9, 1]), 3, 3, &t(&[1.0; 9], &[1, 9]), None, 3).unwrap();
    assert_eq!(read(&y), vec![4.0, 6.0, 4.0, 6.0, 9.0, 6.0, 4.0, 6.0, 4.0]);
}

#[test]
fn conv2d_rejects_an_even_kernel_a_wrong_weight_or_a_wrong_map_size() {
    let x = t(&values(12, 9), &[4, 3]);
    assert!(be().conv2d(&x, 2, 2, &t(&values(2 * 12, 1), &[2, 12]), None, 2).is_err());
    assert!(be().conv2d(&x, 2, 2, &t(&values(2 * 26, 1), &[2, 26]), None, 3).is_err());
    assert!(be().conv2d(&x, 3, 2, &t(&values(2 * 27, 1), &[2, 27]), None, 3).is_err());
    assert!(be().conv2d(&x, 2, 2, &t(&values(2 * 27, 1), &[2, 27]), Some(&t(&[0.0; 3], &[3])), 3).is_err());
}

#[test]
fn group_norm_matches_naive_statistics_per_group() {
    let (rows, c, groups, eps) = (7, 6, 3, 1e-5);
    let x: Vec<f32> = values(rows * c, 10).iter().enumerate().map(|(i, v)| v * 3.0 + (i % c) as f32).collect();
    let gamma = values(c, 11);
    let beta = values(c, 12);
    let y = be().group_norm(&t(&x, &[rows, c]), groups, &t(&gamma, &[c]), &t(&beta, &[c]), eps).unwrap();
    let cg = c / groups;
    let mut want = vec![0f32; rows * c];
    for g in 0..groups {
        let vals: Vec<f64> = (0..rows)
            .flat_map(|r| (g * cg..(g + 1) * cg).map(move |ch| (r, ch)))
            .map(|(r, ch)| x[r * c + ch] as f64)
            .collect();
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64;
        for r in 0..rows {
            for ch in g * cg..(g + 1) * cg {
                want[r * c + ch] =
                    (((x[r * c + ch] as f64 - mean) / (var + eps).sqrt()) * gamma[ch] as f64 + beta[ch] as f64) as f32;
            }
        }
    }
    close(&read(&y), &want, 2e-6);
}

#[test]
fn group_norm_hand_computed_two_groups() {
    // Group 0 = channel 0: values 1, 3 → mean 2, variance 1. Group 1 = channel 1: 0, 2 → mean 1, variance 1.
    let y = be()
        .group_norm(&t(&[1.0, 0.0, 3.0, 2.0], &[2, 2]), 2, &t(&[2.0, 1.0], &[2]), &t(&[0.5, 7.0], &[2]), 0.0)
        .unwrap();
    assert_eq!(read(&y), vec![-1.5, 6.0, 2.5, 8.0]);
    // One group over both channels: 1, 0, 3, 2 → mean 1.5, variance 1.25.
    let y = be()
        .group_norm(&t(&[1.0, 0.0, 3.0, 2.0], &[2, 2]), 1, &t(&[1.0, 1.0], &[2]), &t(&[0.0, 0.0], &[2]), 0.0)
        .unwrap();
    let s = 1.25f64.sqrt();
    close(&read(&y), &[(-0.5 / s) as f32, (-1.5 / s) as f32, (1.5 / s) as f32, (0.5 / s) as f32], 5e-7); // a few ulps: applied as x·scale + shift like PyTorch
    assert!(be().group_norm(&t(&[0.0; 6], &[2, 3]), 2, &t(&[1.0; 3], &[3]), &t(&[0.0; 3], &[3]), 1e-6).is_err());
}

#[test]
fn avg_pool_2x2_averages_each_window() {
    // 2×4 map, 2 channels; channel 1 is channel 0 times 10.
    let ch0 = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
    let x: Vec<f32> = ch0.iter().flat_map(|&v| [v, v * 10.0]).collect();
    let y = be().avg_pool_2x2(&t(&x, &[8, 2]), 2, 4).unwrap();
    assert_eq!(be().shape(&y), vec![2, 2]);
    assert_eq!(read(&y), vec![3.5, 35.0, 5.5, 55.0]);
    assert!(be().avg_pool_2x2(&t(&[0.0; 6], &[3, 2]), 3, 1).is_err());
}

#[test]
fn resize_nearest_doubles_like_pytorch() {
    // 2×2 → 4×4: every source pixel becomes a 2×2 block.
    let y = be().resize_nearest(&t(&[1.0, 2.0, 3.0, 4.0], &[4, 1]), 2, 2, 4, 4).unwrap();
    assert_eq!(read(&y), vec![1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 3.0, 3.0, 4.0, 4.0]);
}

#[test]
fn resize_nearest_uses_floor_of_dst_times_in_over_out_for_any_ratio() {
    // 1×3 → 1×5: src = floor(dst·3/5) = 0, 0, 1, 1, 2; 1×4 → 1×2 (down): 0, 2. Two channels travel together.
    let x = t(&[1.0, -1.0, 2.0, -2.0, 3.0, -3.0], &[3, 2]);
    let y = be().resize_nearest(&x, 1, 3, 1, 5).unwrap();
    assert_eq!(read(&y), vec![1.0, -1.0, 1.0, -1.0, 2.0, -2.0, 2.0, -2.0, 3.0, -3.0]);
    let y = be().resize_nearest(&t(&[1.0, 2.0, 3.0, 4.0], &[4, 1]), 1, 4, 1, 2).unwrap();
    assert_eq!(read(&y), vec![1.0, 3.0]);
    let y = be().resize_nearest(&t(&[1.0, 2.0, 3.0, 4.0], &[4, 1]), 2, 2, 2, 2).unwrap();
    assert_eq!(read(&y), vec![1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn concat_cols_places_parts_side_by_side() {
    let a = t(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let b = t(&[5.0, 6.0], &[2, 1]);
    let y = be().concat_cols(&[&a, &b]).unwrap();
    assert_eq!(be().shape(&y), vec![2, 3]);
    assert_eq!(read(&y), vec![1.0, 2.0, 5.0, 3.0, 4.0, 6.0]);
    assert!(be().concat_cols(&[&a, &t(&[1.0; 3], &[3, 1])]).is_err());
}

#[test]
fn mul_is_elementwise_and_checks_shapes() {
    let y = be().mul(&t(&[1.0, -2.0, 3.0, 0.5], &[2, 2]), &t(&[2.0, 3.0, -1.0, 4.0], &[2, 2])).unwrap();
    assert_eq!(read(&y), vec![2.0, -6.0, -3.0, 2.0]);
    assert!(be().mul(&t(&[1.0; 4], &[2, 2]), &t(&[1.0; 4], &[4, 1])).is_err());
}

#[test]
fn scale_shift_broadcasts_one_row_of_scale_and_shift_over_all_rows() {
    let x = t(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2]);
    let y = be().scale_shift(&x, &t(&[0.5, -1.0], &[1, 2]), &t(&[10.0, 1.0], &[1, 2])).unwrap();
    // column 0: x·1.5 + 10, column 1: x·0 + 1
    assert_eq!(read(&y), vec![11.5, 1.0, 14.5, 1.0, 17.5, 1.0]);
    assert!(be().scale_shift(&x, &t(&[0.5, -1.0], &[2, 1]), &t(&[10.0, 1.0], &[1, 2])).is_err());
}

#[test]
fn silu_is_x_times_sigmoid_x_and_maps_from_hf_names() {
    assert_eq!(Activation::from_hf_name("silu"), Some(Activation::Silu));
    assert_eq!(Activation::from_hf_name("swish"), Some(Activation::Silu));
    let x = [-20.0f32, -2.0, -0.5, 0.0, 0.5, 2.0, 20.0];
    let y = read(&be().activation(&t(&x, &[1, 7]), Activation::Silu).unwrap());
    let want: Vec<f32> = x.iter().map(|&v| (v as f64 / (1.0 + (-v as f64).exp())) as f32).collect();
    close(&y, &want, 1e-6);
    // Fused after a linear layer too.
    let y = read(&be().linear(&t(&[1.0, 2.0], &[1, 2]), &t(&[1.0, -1.0], &[1, 2]), None, Activation::Silu).unwrap());
    close(&y, &[(-1.0f64 / (1.0 + 1f64.exp())) as f32], 1e-7);
}

// Flat slices carry no shape: every size the op reads from its tensors is a parameter of this reference.
#[allow(clippy::too_many_arguments)]
fn naive_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    t: usize,
    s: usize,
    heads: usize,
    d: usize,
    scale: f32,
) -> Vec<f32> {
    let w = heads * d;
    let mut out = vec![0f32; t * w];
    let mut scores = vec![0f64; s];
    for h in 0..heads {
        for i in 0..t {
            for j in 0..s {
                scores[j] = (0..d).map(|e| q[i * w + h * d + e] as f64 * k[j * w + h * d + e] as f64).sum::<f64>()
                    * scale as f64;
            }
            let max = scores.iter().cloned().fold(f64::MIN, f64::max);
            let sum: f64 = scores.iter().map(|x| (x - max).exp()).sum();
            for e in 0..d {
                out[i * w + h * d + e] =
                    (0..s).map(|j| (scores[j] - max).exp() / sum * v[j * w + h * d + e] as f64).sum::<f64>() as f32;
            }
        }
    }
    out
}

#[test]
fn attention_takes_any_number_of_keys_and_any_head_dim() {
    // 32 context keys + 9 spatial keys, head dim 96 (not a power of two), 2 heads; and one wide head of 300.
    for (t_, s, heads, d) in [(9, 41, 2, 96), (5, 7, 1, 300)] {
        let w = heads * d;
        let (q, k, v) = (values(t_ * w, 20), values(s * w, 21), values(s * w, 22));
        let scale = (d as f32).powf(-0.5);
        let y = be().attention(&t(&q, &[t_, w]), &t(&k, &[s, w]), &t(&v, &[s, w]), heads, scale, None).unwrap();
        close(&read(&y), &naive_attention(&q, &k, &v, t_, s, heads, d, scale), 2e-6);
    }
}

#[test]
fn attention_with_more_scores_than_one_block_is_chunked_and_still_exact() {
    // 4100² scores of 4 bytes exceed the 64 MiB block: the queries run in two chunks.
    let (n, d) = (4100, 4);
    let (q, k, v) = (values(n * d, 30), values(n * d, 31), values(n * d, 32));
    let y = be().attention(&t(&q, &[n, d]), &t(&k, &[n, d]), &t(&v, &[n, d]), 1, 0.5, None).unwrap();
    close(&read(&y), &naive_attention(&q, &k, &v, n, n, 1, d, 0.5), 2e-6);
}
