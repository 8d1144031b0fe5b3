// Signed bytes packed four per u32 (element 4i in the low byte, as the host packs int8 weights), unpacked
// with shifts: core WGSL only, since unpack4xI8 and the packed-integer builtins are missing in some browsers.

// Byte `byte` (0..3) of `word` as a signed value: moved to the top 8 bits, an arithmetic shift back down
// extends its sign.
fn int8_at(word: u32, byte: u32) -> f32 {
    return f32(bitcast<i32>(word << (24u - 8u * byte)) >> 24u);
}

// All four bytes of `word`, element 4i + j in lane j.
fn int8x4(word: u32) -> vec4<f32> {
    let top = vec4<u32>(word) << vec4<u32>(24u, 16u, 8u, 0u);
    return vec4<f32>(bitcast<vec4<i32>>(top) >> vec4<u32>(24u));
}
