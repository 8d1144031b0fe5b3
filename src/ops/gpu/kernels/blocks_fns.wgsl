// ggml's Q8_0 and Q4_0 blocks (src/ops/blocks.rs) read from u32 words, as the GGUF file holds them: a block
// is an f16 scale d and 32 values (Q8_0: 34 bytes, a signed byte each; Q4_0: 18 bytes, nibbles: values 0..15
// in the low nibbles of bytes 0..15, values 16..31 in their high nibbles, each minus 8). A block starts at an
// even byte, not always at a word. Value = q · d: an integer of ≤ 8 bits times an f16, exact in f32, so the
// GPU's values are the CPU's bit for bit.

// Where element e of a [rows, row_len] matrix in blocks lives: x = its block's first byte (the scale), y = the
// byte holding its value, z = the bit shift of its value in that byte (Q4_0's high nibbles: 4).
fn block_bytes(e: u32, row_len: u32, q4: bool) -> vec3<u32> {
    let c = e % row_len;
    let block = (e / row_len) * (row_len / 32u) + c / 32u;
    let j = c % 32u;
    if (q4) {
        let o = block * 18u;
        return vec3<u32>(o, o + 2u + j % 16u, select(0u, 4u, j >= 16u));
    }
    let o = block * 34u;
    return vec3<u32>(o, o + 2u + j, 0u);
}

// The f16 at even byte `o`, from the word holding it.
fn half_at(word: u32, o: u32) -> f32 {
    return select(unpack2x16float(word).x, unpack2x16float(word).y, (o & 2u) != 0u);
}

// Bytes o .. o+3 (o even) as one word, from the word holding byte o and the next one.
fn word_at(lo: u32, hi: u32, o: u32) -> u32 {
    return select((lo >> 16u) | (hi << 16u), lo, (o & 3u) == 0u);
}

// The value whose byte sits in `word` at byte position `at` (block_bytes' y), shift `shift`: Q8_0's signed
// byte, or Q4_0's nibble minus 8.
fn block_q(word: u32, at: u32, shift: u32, q4: bool) -> f32 {
    if (q4) {
        return f32(i32((word >> ((at & 3u) * 8u + shift)) & 15u) - 8);
    }
    return int8_at(word, at & 3u);
}

// Four consecutive values (element e a multiple of 4, rows whole blocks: one block) from the word holding
// their bytes (word_at of block_bytes' y).
fn block_q4(word: u32, shift: u32, q4: bool) -> vec4<f32> {
    if (q4) {
        let n = (vec4<u32>(word) >> (vec4<u32>(0u, 8u, 16u, 24u) + vec4<u32>(shift))) & vec4<u32>(15u);
        return vec4<f32>(vec4<i32>(n) - vec4<i32>(8));
    }
    return int8x4(word);
}
