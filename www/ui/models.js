// The model catalogue the picker offers: each variant is one entry `{ id, name, url, bytes, needs, note }`.
//   url    what `load({ model })` / `loadDecoder({ model })` take: a base URL or a manifest ({ folder: URL })
//   bytes  the download (the weight files the engine reads), or null when unknown until its headers are read
//   needs  what the device must have: { webgpu (no CPU fallback at this size), wasmBytes (engine memory),
//          gpuBytes (weights held on the GPU, shown only), maxBindingBytes (+ maxBindingWhat) }
// A model given by address (`?model=`) whose root lists its quantized copies (`variants.json`, written by
// `lambda-eclipse quantize --list`: README) offers each of them (`listedVariants`): `listed` is the listing's
// entry (its URL, download bytes, memory on the CPU), `model` + `variant` what `load` takes. No quantized copy
// of the real model is hosted by this project, so the catalogue below has only the originals.
//
// Sizes of the hub's files (../shared/docs/lambda-eclipse-spec.md, decoder-spec.md): the bigG text tower
// 2.78 GB (f32), the vision tower 3.69 GB (f16), the λ prior 139 MB (f32); the decoder's UNet 5.01 GB (f32)
// and MoVQ 271 MB (f32, 67.8 M parameters; the engine reads only its decoder half, so this bounds it).
import { DEFAULT_DECODER, DEFAULT_MANIFEST } from '../lib/lambda-eclipse.js';

const MIB = 1024 ** 2;

export const MODEL_VARIANTS = Object.freeze([
  {
    id: 'full',
    name: 'λ-ECLIPSE, full files (as on Hugging Face)',
    url: DEFAULT_MANIFEST,
    bytes: 2.78e9 + 3.69e9 + 139e6,
    needs: { webgpu: true, gpuBytes: 6.61e9, wasmBytes: 256 * MIB },
    note: 'CLIP ViT-bigG text and vision towers + the λ prior.',
  },
]);

export const DECODER_VARIANTS = Object.freeze([
  {
    id: 'full',
    name: 'Kandinsky 2.2 decoder, full files (as on Hugging Face)',
    url: DEFAULT_DECODER,
    bytes: 5.01e9 + 271e6,
    // The UNet is kept as f16 on the GPU (2.51 GB); the MoVQ at 512×512 needs 256 MiB buffers.
    needs: { webgpu: true, gpuBytes: 2.8e9, wasmBytes: 256 * MIB, maxBindingBytes: 256 * MIB, maxBindingWhat: 'A 512×512 picture' },
    note: 'Turns the embedding into a picture, on this device. Downloaded at your first picture.',
  },
]);

/** The entry for a model given by address (`?model=`, `?decoder=`): its size is known once its headers are read. */
export function customVariant(url, what) {
  return { id: 'custom', name: `The ${what} at ${url}`, url, bytes: null, needs: {}, note: 'Given in the page address.' };
}

const TYPE_NOTES = {
  q8_0: '8-bit blocks: about a third of f32 (half of f16); embeddings within a cosine of 0.999 of the original.',
  q4_m: '4-bit blocks for most weights, 8-bit where precision matters (text layers, prior): embeddings within a cosine of 0.99 of the original.',
  q4_0: '4-bit blocks: the smallest download; an approximation (embeddings ~0.98 cosine of the original).',
};

/** The picker's entries of a model's listed variants (www/lib/variants.js `listVariants`): the original and
 * its quantized copies, each with its download size and the listing's entry for the CPU's memory check. */
export function listedVariants(model, entries) {
  // What `load` takes for any of them: the model with its listing given, so a load does not read it again.
  const source = { base: model, variants: Object.fromEntries(entries.map((e) => [e.id, { url: e.url, type: e.type ?? undefined, bytes: e.bytes ?? undefined, cpuBytes: e.cpuBytes ?? undefined }])) };
  return entries.map((e) => ({
    source,
    id: e.id,
    name: e.id === 'original' ? `The model at ${model} (original files)` : `${e.id}: quantized copy of the model at ${model}`,
    url: e.url,
    model,
    variant: e.id,
    bytes: e.bytes,
    needs: {},
    listed: e,
    note: e.id === 'original' ? 'As published: full precision.' : TYPE_NOTES[e.type] ?? `Weights in ${e.type ?? e.id}.`,
  }));
}

const choiceKey = (model) => `lambda-eclipse.variant:${new URL(model, globalThis.location?.href).href}`;

/** The variant last chosen for `model` in this browser (an id such as 'q8_0'), or null. */
export function rememberedVariant(model) {
  try { return localStorage.getItem(choiceKey(model)); } catch { return null; }
}

/** Remembers the variant chosen for `model` (the app's and the widget's next visit start from it). */
export function rememberVariant(model, id) {
  try { if (id) localStorage.setItem(choiceKey(model), id); } catch { /* no storage */ }
}

const listingKey = (model) => `lambda-eclipse.listing:${new URL(model, globalThis.location?.href).href}`;

/** The variants listing last read for `model` (entries, or null: it has none), or undefined when never read. */
export function rememberedListing(model) {
  try {
    const text = localStorage.getItem(listingKey(model));
    return text === null ? undefined : JSON.parse(text);
  } catch { return undefined; }
}

/** Remembers `model`'s listing (entries or null), so that a visit whose choice is cached asks the network nothing. */
export function rememberListing(model, entries) {
  try { localStorage.setItem(listingKey(model), JSON.stringify(entries ?? null)); } catch { /* no storage */ }
}
