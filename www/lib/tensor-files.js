// Small readers and writers of the tensor files the app exports and imports: safetensors (the CLI's format:
// `lambda-eclipse decode --embeds` and `interpolate` read what this writes), NumPy .npy (v1.0) and JSON.
// Plain functions on Uint8Array; no dependencies, usable on the page, in a worker and in Node.

const DTYPES = {
  F32: { size: 4, array: Float32Array },
  F64: { size: 8, array: Float64Array },
  I64: { size: 8, array: BigInt64Array },
  I32: { size: 4, array: Int32Array },
  U8: { size: 1, array: Uint8Array },
  F16: { size: 2, array: null },
  BF16: { size: 2, array: null },
};

const product = (shape) => shape.reduce((a, b) => a * b, 1);

function f16ToF32(h) {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

/** Copies `n` elements of `dtype` at `bytes[offset..]` into a fresh typed array (F16/BF16 become Float32Array). */
function typedCopy(bytes, offset, dtype, n) {
  const view = new DataView(bytes.buffer, bytes.byteOffset + offset, n * DTYPES[dtype].size);
  if (dtype === 'F16' || dtype === 'BF16') {
    const out = new Float32Array(n);
    const f = new Float32Array(1), u = new Uint32Array(f.buffer);
    for (let i = 0; i < n; i++) {
      const h = view.getUint16(2 * i, true);
      if (dtype === 'F16') out[i] = f16ToF32(h); else { u[0] = h << 16; out[i] = f[0]; }
    }
    return out;
  }
  const A = DTYPES[dtype].array;
  const out = new A(n);
  const raw = new Uint8Array(out.buffer);
  raw.set(new Uint8Array(bytes.buffer, bytes.byteOffset + offset, n * A.BYTES_PER_ELEMENT));
  return out; // little-endian hosts (every browser platform) need no swap
}

/**
 * Parses a safetensors file: `{ tensors: { name: { dtype, shape, data } }, metadata }`. `data` is a typed array
 * (Float32Array for F32/F16/BF16, BigInt64Array for I64, Int32Array, Uint8Array, Float64Array).
 * Throws an Error naming `what` when the file is not valid safetensors.
 */
export function readSafetensors(bytes, what = 'safetensors file') {
  if (!(bytes instanceof Uint8Array)) bytes = new Uint8Array(bytes);
  const fail = (m) => { throw new Error(`${what}: ${m}`); };
  if (bytes.length < 8) fail(`only ${bytes.length} bytes, not a safetensors file`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const n = Number(dv.getBigUint64(0, true));
  if (n < 2 || 8 + n > bytes.length) fail(`header length ${n} does not fit the ${bytes.length}-byte file (not safetensors, or truncated)`);
  let header;
  try { header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))); } catch (e) { fail(`the header is not JSON (${e.message})`); }
  const base = 8 + n, dataLen = bytes.length - base;
  const tensors = {};
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const spec = DTYPES[t?.dtype];
    if (!spec) fail(`tensor ${name}: unsupported dtype ${t?.dtype}`);
    const [b, e] = t.data_offsets || [];
    const count = product(t.shape || []);
    if (!(Number.isInteger(b) && Number.isInteger(e) && b >= 0 && e <= dataLen && e - b === count * spec.size)) {
      fail(`tensor ${name}: data_offsets ${JSON.stringify(t.data_offsets)} do not hold ${JSON.stringify(t.shape)} ${t.dtype} in ${dataLen} data bytes`);
    }
    tensors[name] = { dtype: t.dtype, shape: t.shape, data: typedCopy(bytes, base + b, t.dtype, count) };
  }
  return { tensors, metadata: header.__metadata__ || {} };
}

/**
 * Writes a safetensors file. `tensors`: `{ name: { shape, data } }` with `data` a Float32Array (F32), Int32Array
 * (I32), BigInt64Array (I64) or Uint8Array (U8); `metadata`: string values. Returns a Uint8Array.
 */
export function writeSafetensors(tensors, metadata) {
  const names = Object.keys(tensors).sort();
  const header = {};
  if (metadata && Object.keys(metadata).length) header.__metadata__ = Object.fromEntries(Object.entries(metadata).map(([k, v]) => [k, String(v)]));
  let offset = 0;
  for (const name of names) {
    const { shape, data } = tensors[name];
    const dtype = data instanceof Float32Array ? 'F32' : data instanceof Int32Array ? 'I32' : data instanceof BigInt64Array ? 'I64' : data instanceof Uint8Array ? 'U8' : null;
    if (!dtype) throw new TypeError(`tensor ${name}: data must be a Float32Array, Int32Array, BigInt64Array or Uint8Array`);
    if (product(shape) !== data.length) throw new Error(`tensor ${name}: shape ${JSON.stringify(shape)} does not hold ${data.length} values`);
    header[name] = { dtype, shape, data_offsets: [offset, offset + data.byteLength] };
    offset += data.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + new TextEncoder().encode(json).length) % 8)) % 8); // data starts 8-aligned
  const head = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + head.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(head.length), true);
  out.set(head, 8);
  let at = 8 + head.length;
  for (const name of names) {
    const { data } = tensors[name];
    out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), at);
    at += data.byteLength;
  }
  return out;
}

const NPY_MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY
const NPY_TYPES = { '<f4': Float32Array, '<f8': Float64Array, '<i4': Int32Array, '<i8': BigInt64Array, '|u1': Uint8Array };

/** Writes a C-order little-endian float32 (or int32/uint8) array as NumPy .npy version 1.0: a Uint8Array. */
export function writeNpy(data, shape) {
  const descr = data instanceof Float32Array ? '<f4' : data instanceof Int32Array ? '<i4' : data instanceof Uint8Array ? '|u1' : null;
  if (!descr) throw new TypeError('npy data must be a Float32Array, Int32Array or Uint8Array');
  if (product(shape) !== data.length) throw new Error(`shape ${JSON.stringify(shape)} does not hold ${data.length} values`);
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shapeText}, }`;
  header += ' '.repeat((64 - ((10 + header.length + 1) % 64)) % 64) + '\n'; // total header 64-aligned
  const out = new Uint8Array(10 + header.length + data.byteLength);
  out.set(NPY_MAGIC, 0);
  out[6] = 1; out[7] = 0;
  new DataView(out.buffer).setUint16(8, header.length, true);
  for (let i = 0; i < header.length; i++) out[10 + i] = header.charCodeAt(i);
  out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), 10 + header.length);
  return out;
}

/** Parses a NumPy .npy file (v1/v2/v3, C order, <f4 <f8 <i4 <i8 |u1): `{ shape, data }`. */
export function readNpy(bytes, what = '.npy file') {
  if (!(bytes instanceof Uint8Array)) bytes = new Uint8Array(bytes);
  const fail = (m) => { throw new Error(`${what}: ${m}`); };
  if (bytes.length < 10 || NPY_MAGIC.some((b, i) => bytes[i] !== b)) fail('not a NumPy .npy file (no \\x93NUMPY magic)');
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const major = bytes[6];
  const [hlen, hstart] = major === 1 ? [dv.getUint16(8, true), 10] : [dv.getUint32(8, true), 12];
  if (hstart + hlen > bytes.length) fail('the header is truncated');
  const header = new TextDecoder().decode(bytes.subarray(hstart, hstart + hlen));
  const descr = /'descr'\s*:\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape'\s*:\s*\(([^)]*)\)/.exec(header)?.[1];
  if (!descr || !fortran || shapeText === undefined) fail(`cannot read the header ${JSON.stringify(header.trim())}`);
  if (fortran === 'True') fail('Fortran-order arrays are not supported');
  const A = NPY_TYPES[descr];
  if (!A) fail(`unsupported dtype ${descr} (expected <f4, <f8, <i4, <i8 or |u1)`);
  const shape = shapeText.split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  const n = product(shape), start = hstart + hlen;
  if (start + n * A.BYTES_PER_ELEMENT > bytes.length) fail(`shape (${shape}) needs ${n * A.BYTES_PER_ELEMENT} data bytes, the file has ${bytes.length - start}`);
  const data = new A(n);
  new Uint8Array(data.buffer).set(bytes.subarray(start, start + n * A.BYTES_PER_ELEMENT));
  return { shape, data };
}

/**
 * One embedding read from a file the app (or the CLI) wrote: safetensors (`image_embeds`, its first row; or a
 * `grid`'s first row), .npy (the first row of a [1, D] or [D] array) or JSON (`image_embeds`, or
 * `embeddings[0]`). Returns `{ embeds: Float32Array, negative: Float32Array | null }` (the decoder's negative
 * when the file has `negative_image_embeds`).
 */
export function readEmbedding(bytes, name) {
  if (!(bytes instanceof Uint8Array)) bytes = new Uint8Array(bytes);
  const lower = name.toLowerCase();
  const firstRow = (data, shape) => {
    const d = shape.length ? shape[shape.length - 1] : data.length;
    return Float32Array.from(data.subarray(0, d), Number);
  };
  if (lower.endsWith('.npy') || bytes[0] === 0x93) {
    const { shape, data } = readNpy(bytes, name);
    if (data instanceof BigInt64Array) throw new Error(`${name}: integer data, not an embedding`);
    return { embeds: firstRow(data, shape), negative: null };
  }
  if (lower.endsWith('.json') || bytes[0] === 0x7b) {
    let j;
    try { j = JSON.parse(new TextDecoder().decode(bytes)); } catch (e) { throw new Error(`${name}: not valid JSON (${e.message})`); }
    const row = (v) => (Array.isArray(v) && Array.isArray(v[0]) ? v[0] : v);
    const v = row(j.image_embeds ?? j.embeddings?.[0]);
    if (!Array.isArray(v) || !v.length || v.some((x) => typeof x !== 'number')) throw new Error(`${name}: no "image_embeds" array of numbers`);
    const n = row(j.negative_image_embeds);
    return { embeds: Float32Array.from(v), negative: Array.isArray(n) && n.length === v.length ? Float32Array.from(n) : null };
  }
  const { tensors } = readSafetensors(bytes, name);
  const t = tensors.image_embeds ?? tensors.grid;
  if (!t) throw new Error(`${name}: no image_embeds tensor (it has ${Object.keys(tensors).join(', ') || 'none'})`);
  if (t.data instanceof BigInt64Array || t.data instanceof Uint8Array || t.data instanceof Int32Array) throw new Error(`${name}: image_embeds is ${t.dtype}, not floating point`);
  const n = tensors.negative_image_embeds;
  return { embeds: firstRow(t.data, t.shape), negative: n && !(n.data instanceof BigInt64Array) ? firstRow(n.data, n.shape) : null };
}

/** Starts a download of `bytes` (Uint8Array or string) as `filename`. */
export function download(bytes, filename, type = 'application/octet-stream') {
  const url = URL.createObjectURL(new Blob([bytes], { type }));
  const a = Object.assign(document.createElement('a'), { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
