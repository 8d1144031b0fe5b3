// Multi-head attention for any number of keys, flash-style: one workgroup per (block of 32 queries, head),
// 16×16 invocations. Keys are taken 32 at a time; the softmax is computed
// online (running row maximum m and sum l, earlier partial outputs rescaled by exp(m_old − m_new)), so no
// t×s score matrix exists anywhere and the workgroup memory does not grow with the number of keys.
// Preceded by activation_fns.wgsl (exp_f32):
//   out[i, h·d + c] = Σ_j softmax_j(scale · q_i·k_j + bias[i, j]) · v[j, h·d + c]
// q [t, width], k and v [s, width], width = heads·d, bias [t, s] shared by all heads (optional); d ≤ 256
// (each invocation keeps d/16 output columns of two queries in registers: checked on the host).
//
// Numerics: a score is one dot product over d, four columns at a time (dot of vec4s, added in order); each
// key tile's 32 products P·V are summed on their own (four keys at a time) and then added to the rescaled
// total, so rounding grows with s/32 + 32 rather than s (the two-level sum of the GEMM). Keys past s, and
// queries past t, are masked explicitly, never by a sentinel that could reach exp.

struct Params {
    t: u32,
    s: u32,
    d: u32,
    width: u32,
    has_bias: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

// Invocation (lx, ly) computes the scores of queries ly and ly + 16 against keys lx and lx + 16, and owns
// output columns lx + 16·r of those two queries. Shared memory is read as vec4s along the sum's own axis
// (columns for the scores, keys for P·V): 16 FMAs per four 16-byte loads.
const BQ: u32 = 32u;
const BK: u32 = 32u;
// Columns of q, k and v staged at a time (head dims above 32 take several chunks).
const DC: u32 = 32u;
const MAX_D: u32 = 256u;
// Below every score WGSL can write as a literal; exp_f32 of (NEG − anything finite) is 0.
const NEG: f32 = -3.0e38;

// 14.5 KiB in all (WebGPU's default workgroup-memory limit is 16 KiB).
// qs[query][c / 4]: the queries' staged columns (read broadcast across a row of invocations).
var<workgroup> qs: array<array<vec4<f32>, DC / 4u>, BQ>;
// kv[key][c / 4] while scoring, then kv[c][key / 4] (V transposed) for P·V; one vec4 of padding per row, so
// that the 16 invocations of a row, reading 16 rows at once, do not all hit the same memory bank.
var<workgroup> kv: array<array<vec4<f32>, DC / 4u + 1u>, 32u>;
// Each row's maximum over one invocation's two keys, then (at the end) each invocation's share of the sums.
var<workgroup> rm: array<array<f32, 16>, BQ>;
// The tile's probabilities, pr[query][key / 4].
var<workgroup> pr: array<array<vec4<f32>, BK / 4u>, BQ>;

// Stages columns c0 .. c0 + DC of the 32 rows from r0 of `src` ([rows, width], head offset `head`), zero
// outside rows < `rows` and columns < d: q and k by rows, v transposed (for P·V). Consecutive invocations
// read consecutive columns of a row.
fn stage(which: u32, r0: u32, rows: u32, head: u32, c0: u32, li: u32) {
    for (var e = 0u; e < BK * DC / 256u; e++) {
        let idx = li + 256u * e;
        let r = idx / DC;
        let c = idx % DC;
        var x = 0.0;
        if (r0 + r < rows && c0 + c < p.d) {
            let at = (r0 + r) * p.width + head + c0 + c;
            if (which == 0u) {
                x = q[at];
            } else if (which == 1u) {
                x = k[at];
            } else {
                x = v[at];
            }
        }
        if (which == 0u) {
            qs[r][c / 4u][c % 4u] = x;
        } else if (which == 1u) {
            kv[r][c / 4u][c % 4u] = x;
        } else {
            kv[c][r / 4u][r % 4u] = x;
        }
    }
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let q0 = wg.x * BQ;
    let head = wg.y * p.d;
    let lx = lid.x;
    let ly = lid.y;
    let chunks = (p.d + DC - 1u) / DC;

    // Output columns lx + 16·r of queries ly (oa) and ly + 16 (ob).
    var oa: array<f32, 16>;
    var ob: array<f32, 16>;
    for (var r = 0u; r < MAX_D / 16u; r++) {
        oa[r] = 0.0;
        ob[r] = 0.0;
    }
    // Running maxima of the two rows, and this invocation's share of their sums (its own keys' terms, all
    // rescaled alike: the shares are added up once, at the end).
    var ma = NEG;
    var mb = NEG;
    var la = 0.0;
    var lb = 0.0;

    for (var j0 = 0u; j0 < p.s; j0 += BK) {
        var s00 = 0.0;
        var s01 = 0.0;
        var s10 = 0.0;
        var s11 = 0.0;
        for (var ch = 0u; ch < chunks; ch++) {
            let c0 = ch * DC;
            // The queries' columns only change with the chunk: staged once when the head fits one chunk.
            if (chunks > 1u || j0 == 0u) {
                stage(0u, q0, p.t, head, c0, li);
            }
            stage(1u, j0, p.s, head, c0, li);
            workgroupBarrier();
            // Staged columns past d are zero: only the groups of four that hold some of d are read.
            for (var c4 = 0u; c4 < (min(DC, p.d - c0) + 3u) / 4u; c4++) {
                let qa = qs[ly][c4];
                let qb = qs[ly + 16u][c4];
                let ka = kv[lx][c4];
                let kb = kv[lx + 16u][c4];
                s00 += dot(qa, ka);
                s01 += dot(qa, kb);
                s10 += dot(qb, ka);
                s11 += dot(qb, kb);
            }
            workgroupBarrier();
        }
        let ja = j0 + lx;
        let jb = j0 + lx + 16u;
        let ia = q0 + ly;
        let ib = q0 + ly + 16u;
        let sa0 = score(s00, ia, ja);
        let sa1 = score(s01, ia, jb);
        let sb0 = score(s10, ib, ja);
        let sb1 = score(s11, ib, jb);
        // Each row's maximum: every invocation's over its two keys, then the 16 of the row, read by each.
        rm[ly][lx] = max(sa0, sa1);
        rm[ly + 16u][lx] = max(sb0, sb1);
        workgroupBarrier();
        var ta = NEG;
        var tb = NEG;
        for (var x = 0u; x < 16u; x++) {
            ta = max(ta, rm[ly][x]);
            tb = max(tb, rm[ly + 16u][x]);
        }
        let na = max(ma, ta);
        let nb = max(mb, tb);
        let alpha_a = exp_f32(ma - na);
        let alpha_b = exp_f32(mb - nb);
        ma = na;
        mb = nb;
        let pa0 = select(0.0, exp_f32(sa0 - na), ja < p.s);
        let pa1 = select(0.0, exp_f32(sa1 - na), jb < p.s);
        let pb0 = select(0.0, exp_f32(sb0 - nb), ja < p.s);
        let pb1 = select(0.0, exp_f32(sb1 - nb), jb < p.s);
        pr[ly][lx / 4u][lx % 4u] = pa0;
        pr[ly][lx / 4u + 4u][lx % 4u] = pa1;
        pr[ly + 16u][lx / 4u][lx % 4u] = pb0;
        pr[ly + 16u][lx / 4u + 4u][lx % 4u] = pb1;
        la = fma(la, alpha_a, pa0 + pa1);
        lb = fma(lb, alpha_b, pb0 + pb1);

        // o = alpha·o + P·V, V staged DC columns at a time (the first barrier also publishes pr); this
        // invocation's columns in a chunk are lx and lx + 16.
        for (var ch = 0u; ch < chunks; ch++) {
            stage(2u, j0, p.s, head, ch * DC, li);
            workgroupBarrier();
            // Each probability is read once per key for both of this invocation's columns.
            var a0 = 0.0;
            var a1 = 0.0;
            var b0 = 0.0;
            var b1 = 0.0;
            for (var j4 = 0u; j4 < BK / 4u; j4++) {
                let pa = pr[ly][j4];
                let pb = pr[ly + 16u][j4];
                let x0 = kv[lx][j4];
                let x1 = kv[lx + 16u][j4];
                a0 += dot(pa, x0);
                a1 += dot(pa, x1);
                b0 += dot(pb, x0);
                b1 += dot(pb, x1);
            }
            let r = 2u * ch;
            oa[r] = fma(oa[r], alpha_a, a0);
            oa[r + 1u] = fma(oa[r + 1u], alpha_a, a1);
            ob[r] = fma(ob[r], alpha_b, b0);
            ob[r + 1u] = fma(ob[r + 1u], alpha_b, b1);
            workgroupBarrier();
        }
    }

    // The rows' sums: the 16 shares of each row, through rm (free after the last barrier above).
    rm[ly][lx] = la;
    rm[ly + 16u][lx] = lb;
    workgroupBarrier();
    var suma = 0.0;
    var sumb = 0.0;
    for (var x = 0u; x < 16u; x++) {
        suma += rm[ly][x];
        sumb += rm[ly + 16u][x];
    }
    let ia = q0 + ly;
    let ib = q0 + ly + 16u;
    for (var r = 0u; r < chunks * (DC / 16u); r++) {
        let c = lx + 16u * r;
        if (c < p.d) {
            if (ia < p.t) {
                out[ia * p.width + head + c] = oa[r] / suma;
            }
            if (ib < p.t) {
                out[ib * p.width + head + c] = ob[r] / sumb;
            }
        }
    }
}

// The scaled, biased score of query i and key j; NEG for a key past s (its probability is then forced to 0).
fn score(dot: f32, i: u32, j: u32) -> f32 {
    if (j >= p.s) {
        return NEG;
    }
    var x = dot * p.scale;
    if (p.has_bias != 0u && i < p.t) {
        x += bias[i * p.s + j];
    }
    return x;
}
