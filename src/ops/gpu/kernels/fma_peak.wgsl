// The adapter's f32 FMA throughput, for the bench's "% of peak": every invocation runs 8 independent vec4
// FMA chains (32 FMAs, 64 FLOPs per iteration; independent so that latency hides behind throughput) and
// writes their sum so that none is optimised away. x ← x·b + c with b < 1 stays bounded, never denormal.

struct Params {
    iters: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let s = f32(gid.x & 1023u) * 1e-3;
    var a0 = vec4<f32>(s, s + 0.1, s + 0.2, s + 0.3);
    var a1 = a0 + 0.01;
    var a2 = a0 + 0.02;
    var a3 = a0 + 0.03;
    var a4 = a0 + 0.04;
    var a5 = a0 + 0.05;
    var a6 = a0 + 0.06;
    var a7 = a0 + 0.07;
    let b = vec4<f32>(0.9990234);
    let c = vec4<f32>(0.0009765625);
    for (var i = 0u; i < p.iters; i++) {
        a0 = fma(a0, b, c);
        a1 = fma(a1, b, c);
        a2 = fma(a2, b, c);
        a3 = fma(a3, b, c);
        a4 = fma(a4, b, c);
        a5 = fma(a5, b, c);
        a6 = fma(a6, b, c);
        a7 = fma(a7, b, c);
    }
    let t = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
    out[gid.x] = t.x + t.y + t.z + t.w;
}
