// The model catalogue the picker offers: each variant is one entry `{ id, name, url, bytes, needs, note }`.
//   url    what `load({ model })` / `loadDecoder({ model })` take: a base URL or a manifest ({ folder: URL })
//   bytes  the download (the weight files the engine reads), or null when unknown until its headers are read
//   needs  what the device must have: { webgpu (no CPU fallback at this size), wasmBytes (engine memory),
//          gpuBytes (weights held on the GPU, shown only), maxBindingBytes (+ maxBindingWhat) }
// A quantized variant (a `lambda-eclipse quantize` folder, q8_0 or q4_0, hosted somewhere: README) is one more
// entry in each list, with its URL, bytes and needs.
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
