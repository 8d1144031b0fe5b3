enable f16;
// fma_peak.wgsl in f16 arithmetic (adapters with `shader-f16`): the same 8 independent vec4 chains, each FMA
// on vec4<f16>, for the f16 "% of peak". b and c are exact in f16; the chains stay bounded and normal.

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
    let s = f16(f32(gid.x & 1023u) * 1e-3);
    var a0 = vec4<f16>(s, s + 0.1h, s + 0.2h, s + 0.3h);
    var a1 = a0 + 0.01h;
    var a2 = a0 + 0.02h;
    var a3 = a0 + 0.03h;
    var a4 = a0 + 0.04h;
    var a5 = a0 + 0.05h;
    var a6 = a0 + 0.06h;
    var a7 = a0 + 0.07h;
    let b = vec4<f16>(0.9990234h);
    let c = vec4<f16>(0.0009765625h);
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
    let t = vec4<f32>(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7);
    out[gid.x] = t.x + t.y + t.z + t.w;
}
