// Shared pointwise activations, prepended to every kernel that applies one (WGSL has no #include).
// Codes match `Activation` on the host: 0 identity, 1 exact-erf GELU, 2 quick GELU, 3 SiLU.

// erf for f32, max error ≈ 1 ulp (N. Juffa's minimax erff; measured 6.1e-8 abs against libm's erf).
// WGSL has no erf builtin; Abramowitz–Stegun 7.1.26 (1.5e-7) is too coarse to match PyTorch.
fn erf_f32(a: f32) -> f32 {
    let t = abs(a);
    let s = a * a;
    if (t > 0.927734375) {
        var r = fma(-1.72853470e-5, t, 3.83197126e-4);
        let u = fma(-3.88396438e-3, t, 2.42546219e-2);
        r = fma(r, s, u);
        r = fma(r, t, -1.06777877e-1);
        r = fma(r, t, -6.34846687e-1);
        r = fma(r, t, -1.28717512e-1);
        r = fma(r, t, -t);
        // r ≤ −t here, so exp never overflows; it underflows to 0 for large |a| and erf saturates to ±1.
        r = 1.0 - exp(r);
        return select(r, -r, a < 0.0);
    }
    var r = -5.96761703e-4;
    r = fma(r, s, 4.99119423e-3);
    r = fma(r, s, -2.67681349e-2);
    r = fma(r, s, 1.12819925e-1);
    r = fma(r, s, -3.76125336e-1);
    r = fma(r, s, 1.28379166e-1);
    return fma(r, a, a);
}

// e^x to about 1 ulp for x ≤ 0 (all sigmoid needs). Some drivers' exp is several ulp off (llvmpipe: 6), and
// the decoders amplify rounding a few hundred times. Cody–Waite reduction x = n·ln2 + r, |r| ≤ ln2/2, then
// the degree-7 Taylor polynomial (truncation 5e-9 relative) and ldexp.
fn exp_f32(x: f32) -> f32 {
    if (x < -87.0) {
        return 0.0;
    }
    let n = round(x * 1.44269504088896341);
    var r = fma(-n, 0.693145751953125, x);
    r = fma(-n, 1.42860682030941723e-6, r);
    var q = fma(r, 1.98412698412698413e-4, 1.38888888888888889e-3);
    q = fma(q, r, 8.33333333333333333e-3);
    q = fma(q, r, 4.16666666666666667e-2);
    q = fma(q, r, 1.66666666666666667e-1);
    q = fma(q, r, 0.5);
    q = fma(q, r, 1.0);
    q = fma(q, r, 1.0);
    return ldexp(q, i32(n));
}

// Logistic function without overflow: exp only ever sees a non-positive argument.
fn sigmoid_f32(z: f32) -> f32 {
    let e = exp_f32(-abs(z));
    return select(e / (1.0 + e), 1.0 / (1.0 + e), z >= 0.0);
}

fn apply_activation(x: f32, act: u32) -> f32 {
    switch act {
        case 1u: { return 0.5 * x * (1.0 + erf_f32(x * 0.70710678118654752)); }
        case 2u: { return x * sigmoid_f32(1.702 * x); }
        case 3u: { return x * sigmoid_f32(x); }
        default: { return x; }
    }
}
