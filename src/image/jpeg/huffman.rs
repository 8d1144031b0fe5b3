//! Huffman tables and the bit reader over entropy-coded data.

/// The standard (JPEG Annex K) Huffman tables libjpeg-turbo installs when a sequential file has no DHT
/// (Motion-JPEG frames): (bits[1..=16], values).
pub(super) const STD_DC_LUMA: ([u8; 16], &[u8]) =
    ([0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
pub(super) const STD_DC_CHROMA: ([u8; 16], &[u8]) =
    ([0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
pub(super) const STD_AC_LUMA: ([u8; 16], &[u8]) = (
    [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d],
    &[
        0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07, 0x22, 0x71,
        0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0, 0x24, 0x33, 0x62, 0x72,
        0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x34, 0x35, 0x36, 0x37,
        0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59,
        0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83,
        0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3,
        0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3,
        0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2,
        0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa,
    ],
);
pub(super) const STD_AC_CHROMA: ([u8; 16], &[u8]) = (
    [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77],
    &[
        0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71, 0x13, 0x22,
        0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0, 0x15, 0x62, 0x72, 0xd1,
        0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x35, 0x36,
        0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58,
        0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a,
        0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a,
        0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba,
        0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda,
        0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa,
    ],
);

// ---------------------------------------------------------------------------------------------------------
// Huffman tables
// ---------------------------------------------------------------------------------------------------------

const LOOKAHEAD: u32 = 9;

#[derive(Clone)]
pub(super) struct Huffman {
    /// Indexed by the next LOOKAHEAD bits: (code length << 8) | symbol, or 0 when the code is longer.
    lookup: Vec<u16>,
    /// Largest code of each length (index 1..=16), -1 when that length has no codes.
    maxcode: [i32; 18],
    /// symbol index = code + valoffset[len].
    valoffset: [i32; 18],
    values: Vec<u8>,
}

impl Huffman {
    /// Builds a decoding table; Err for tables libjpeg rejects (over-subscribed codes, DC symbols > 15).
    pub(super) fn build(bits: &[u8; 16], values: &[u8], is_dc: bool) -> std::result::Result<Huffman, &'static str> {
        let total: usize = bits.iter().map(|&b| b as usize).sum();
        if total > 256 || total > values.len() {
            return Err("bad Huffman table");
        }
        if is_dc && values[..total].iter().any(|&v| v > 15) {
            return Err("bad Huffman table (DC symbol > 15)");
        }
        let mut maxcode = [-1i32; 18];
        let mut valoffset = [0i32; 18];
        let mut lookup = vec![0u16; 1 << LOOKAHEAD];
        let mut code: u32 = 0;
        let mut k = 0usize;
        for len in 1..=16usize {
            let n = bits[len - 1] as usize;
            if n > 0 {
                valoffset[len] = k as i32 - code as i32;
                for _ in 0..n {
                    if len as u32 <= LOOKAHEAD {
                        let shift = LOOKAHEAD - len as u32;
                        let start = (code << shift) as usize;
                        let entry = ((len as u16) << 8) | values[k] as u16;
                        for slot in lookup.iter_mut().skip(start).take(1 << shift) {
                            *slot = entry;
                        }
                    }
                    code += 1;
                    k += 1;
                }
                maxcode[len] = code as i32 - 1;
            }
            if code >= 1u32 << len {
                return Err("bad Huffman table (over-subscribed)");
            }
            code <<= 1;
        }
        Ok(Huffman { lookup, maxcode, valoffset, values: values[..total].to_vec() })
    }

    #[inline]
    pub(super) fn decode(&self, br: &mut BitReader) -> u8 {
        br.ensure(16);
        let peek = br.peek16();
        let e = self.lookup[(peek >> (16 - LOOKAHEAD)) as usize];
        if e != 0 {
            br.consume((e >> 8) as u32);
            return e as u8;
        }
        for len in (LOOKAHEAD as usize + 1)..=16 {
            let code = (peek >> (16 - len)) as i32;
            if code <= self.maxcode[len] {
                br.consume(len as u32);
                let idx = (code + self.valoffset[len]) as usize;
                return self.values.get(idx).copied().unwrap_or(0);
            }
        }
        // Bad code (corrupt data): libjpeg warns and uses symbol 0.
        br.consume(16);
        0
    }
}

// ---------------------------------------------------------------------------------------------------------
// Bit reader over entropy-coded data (handles byte stuffing, markers, zero fill like libjpeg)
// ---------------------------------------------------------------------------------------------------------

pub(super) struct BitReader<'a> {
    data: &'a [u8],
    /// Next unread byte; when a marker stopped reading, the position of the 0xFF before the marker code.
    pub(super) pos: usize,
    acc: u64,
    nbits: u32,
    /// How many of the buffered bits came from the file (the rest are zero fill).
    real: u32,
    at_marker: bool,
    at_eof: bool,
    /// Zero fill past the end of the file was consumed: the file is truncated.
    pub(super) overran_eof: bool,
    /// Zero fill after a marker was consumed (libjpeg's `insufficient_data`): the rest of the segment (up to
    /// the next restart) is left as it is, as libjpeg leaves it, instead of being decoded from zeros.
    pub(super) insufficient: bool,
    /// A restart found a marker that is not a restart marker and left it unread: every later restart of this
    /// scan stops at the same marker, so the whole rest of the scan is left as it is.
    pub(super) stuck: bool,
}

impl<'a> BitReader<'a> {
    pub(super) fn new(data: &'a [u8], pos: usize) -> Self {
        BitReader {
            data,
            pos,
            acc: 0,
            nbits: 0,
            real: 0,
            at_marker: false,
            at_eof: false,
            overran_eof: false,
            insufficient: false,
            stuck: false,
        }
    }

    #[inline]
    fn next_byte(&mut self) -> Option<u8> {
        if self.at_marker || self.at_eof {
            return None;
        }
        let Some(&b) = self.data.get(self.pos) else {
            self.at_eof = true;
            return None;
        };
        if b != 0xFF {
            self.pos += 1;
            return Some(b);
        }
        let mut p = self.pos + 1;
        while p < self.data.len() && self.data[p] == 0xFF {
            p += 1;
        }
        if p >= self.data.len() {
            self.at_eof = true;
            return None;
        }
        if self.data[p] == 0 {
            self.pos = p + 1;
            Some(0xFF)
        } else {
            self.pos = p - 1;
            self.at_marker = true;
            None
        }
    }

    #[inline]
    fn ensure(&mut self, n: u32) {
        if self.nbits >= n {
            return;
        }
        while self.nbits <= 56 {
            match self.next_byte() {
                Some(b) => {
                    self.acc |= (b as u64) << (56 - self.nbits);
                    self.nbits += 8;
                    self.real += 8;
                }
                None => {
                    // zero fill (libjpeg inserts zeros after a marker or at the end of data)
                    self.nbits += 8;
                }
            }
        }
    }

    #[inline]
    fn peek16(&self) -> u32 {
        (self.acc >> 48) as u32
    }

    #[inline]
    fn consume(&mut self, n: u32) {
        let n = n.min(self.nbits);
        self.acc = if n >= 64 { 0 } else { self.acc << n };
        self.nbits -= n;
        if n > self.real {
            if self.at_eof {
                self.overran_eof = true;
            }
            self.insufficient = true;
            self.real = 0;
        } else {
            self.real -= n;
        }
    }

    #[inline]
    pub(super) fn bits(&mut self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        self.ensure(n);
        let v = (self.acc >> (64 - n)) as u32;
        self.consume(n);
        v
    }

    /// Receives `s` bits and sign-extends them (JPEG "EXTEND").
    #[inline]
    pub(super) fn receive_extend(&mut self, s: u32) -> i32 {
        if s == 0 {
            return 0;
        }
        let s = s.min(16);
        let v = self.bits(s) as i32;
        if v < (1 << (s - 1)) {
            v - (1 << s) + 1
        } else {
            v
        }
    }

    /// Handles a restart point: drops buffered bits and consumes the RST marker, resynchronising
    /// like libjpeg's default `jpeg_resync_to_restart` when it is missing or out of order.
    pub(super) fn restart(&mut self, expected: u8) {
        self.acc = 0;
        self.nbits = 0;
        self.real = 0;
        self.at_marker = false;
        if self.at_eof {
            return;
        }
        loop {
            // find the next marker (skipping garbage)
            let Some((marker_pos, marker)) = find_marker(self.data, self.pos) else {
                self.pos = self.data.len();
                self.at_eof = true;
                return;
            };
            let rst = 0xD0 + (expected & 7);
            let action = if marker == rst {
                1
            } else if marker < 0xC0 {
                2
            } else if !(0xD0..=0xD7).contains(&marker)
                || marker == 0xD0 + ((expected + 1) & 7)
                || marker == 0xD0 + ((expected + 2) & 7)
            {
                // a non-restart marker, or one of the next two restarts: leave it, zero-fill this interval
                3
            } else if marker == 0xD0 + (expected.wrapping_sub(1) & 7) || marker == 0xD0 + (expected.wrapping_sub(2) & 7)
            {
                2
            } else {
                1
            };
            match action {
                1 => {
                    self.pos = marker_pos + 2;
                    // libjpeg's process_restart: data follows again (unless a marker was left unread).
                    self.insufficient = false;
                    return;
                }
                2 => {
                    self.pos = marker_pos + 2;
                }
                _ => {
                    self.pos = marker_pos;
                    self.at_marker = true;
                    self.stuck = !(0xD0..=0xD7).contains(&marker);
                    return;
                }
            }
        }
    }
}

/// Finds the next marker at or after `pos`: (position of its 0xFF, marker code). Skips garbage and fill bytes.
pub(super) fn find_marker(data: &[u8], mut pos: usize) -> Option<(usize, u8)> {
    loop {
        while pos < data.len() && data[pos] != 0xFF {
            pos += 1;
        }
        let mut p = pos + 1;
        while p < data.len() && data[p] == 0xFF {
            p += 1;
        }
        if p >= data.len() {
            return None;
        }
        if data[p] == 0 {
            pos = p + 1;
            continue;
        }
        return Some((p - 1, data[p]));
    }
}
