// "Decode locally", shared by the app and the widget: the decoder kept loaded between decodes (loaded on
// first use, in its own worker: see loadDecoder in lambda-eclipse.js), an embedding file read as decoder
// input, and drawing what the decoder returns (step previews, the final RGBA image, its PNG).
import { loadDecoder } from '../lib/lambda-eclipse.js';
import { readEmbedding, readSafetensors } from '../lib/tensor-files.js';

/** Draws `{ width, height, rgba }` (RGBA bytes, as the decoder returns them) on `canvas`, resizing it. */
export function drawRgba(canvas, { width, height, rgba }) {
  canvas.width = width;
  canvas.height = height;
  canvas.getContext('2d').putImageData(new ImageData(new Uint8ClampedArray(rgba), width, height), 0, 0);
}

/** A PNG Blob of `{ width, height, rgba }` (lossless: the pixels the decoder computed). */
export function pngOf(image) {
  const canvas = document.createElement('canvas');
  drawRgba(canvas, image);
  return new Promise((resolve, reject) => canvas.toBlob((b) => (b ? resolve(b) : reject(new Error('the browser could not encode the image as PNG'))), 'image/png'));
}

/** One step's progress in words: "step 3/50 · 412 ms/step". */
export const stepText = ({ step, total, msPerStep }) => `step ${step}/${total} · ${Math.round(msPerStep)} ms/step`;

/** The result's timing in words: "3 steps of ddpm · 412 ms/step · MoVQ 80 ms · 1.3 s in all". */
export const timingText = (r) => `${r.steps} steps of ${r.scheduler} · ${Math.round(r.msPerStep)} ms/step · MoVQ ${Math.round(r.movqMs)} ms · ${r.seconds.toFixed(1)} s in all`;

/**
 * The decoder input in an embedding file (a safetensors, .npy or JSON export, or the CLI's `prior` output):
 * `{ imageEmbeds, negativeImageEmbeds (or null), noise, steps }`. `noise` is null, or — when a safetensors file
 * holds `initial_latents` [1, C, h, w] (and, for DDPM, `step_noise` [steps, 1, C, h, w]), the CLI's
 * `--noise` layout and that of the decoder goldens — `{ initialLatents, stepNoise, latentHeight, latentWidth }`.
 * `steps`: the number of steps `step_noise` holds draws for (decode with that many), or null without it.
 */
export function readDecoderInput(bytes, name) {
  const { embeds, negative } = readEmbedding(bytes, name);
  let noise = null;
  let steps = null;
  let tensors = null;
  try { ({ tensors } = readSafetensors(bytes, name)); } catch { /* .npy or JSON: embeddings only */ }
  const initial = tensors?.initial_latents;
  if (initial) {
    if (initial.shape.length !== 4 || !(initial.data instanceof Float32Array)) throw new Error(`${name}: initial_latents must be float [1, C, h, w], not ${initial.dtype} ${JSON.stringify(initial.shape)}`);
    const stepNoise = tensors.step_noise;
    if (stepNoise) {
      const [, c, h, w] = initial.shape;
      const ok = stepNoise.data instanceof Float32Array && stepNoise.shape.length === 5 && stepNoise.shape[0] >= 1
        && stepNoise.shape[1] === 1 && stepNoise.shape[2] === c && stepNoise.shape[3] === h && stepNoise.shape[4] === w;
      if (!ok) throw new Error(`${name}: step_noise must be float [steps, 1, ${c}, ${h}, ${w}] (as initial_latents), not ${stepNoise.dtype} ${JSON.stringify(stepNoise.shape)}`);
      steps = stepNoise.shape[0];
    }
    noise = { initialLatents: initial.data, stepNoise: stepNoise ? stepNoise.data : null, latentHeight: initial.shape[2], latentWidth: initial.shape[3] };
  }
  return { imageEmbeds: embeds, negativeImageEmbeds: negative, noise, steps };
}

/** Keeps one loaded decoder, for a given (model, backend, weights); another choice loads anew, and so does the
 * next use after its worker crashed. */
export class LocalDecoder {
  #decoder = null;
  #key = null;
  /** The load under way: `{ key, promise }`, or null. */
  #loading = null;

  /** The decoder already loaded for these options (and still alive), or null. */
  current({ model, backend = 'auto', weights }) {
    return this.#key === JSON.stringify([model, backend, weights]) && this.#decoder?.alive ? this.#decoder : null;
  }

  /** The decoder for these options, loading it first when needed (`onProgress`, `signal` as loadDecoder's). A
   * second call for the same options while it loads waits for that load (with the first call's progress and
   * signal); a load for other options supersedes it: the superseded one rejects with an AbortError. */
  async get({ model, backend = 'auto', weights, onProgress, signal }) {
    const key = JSON.stringify([model, backend, weights]);
    const ready = this.current({ model, backend, weights });
    if (ready) return ready;
    if (this.#loading?.key === key) return this.#loading.promise;
    this.#key = null;
    this.#decoder?.dispose();
    this.#decoder = null;
    const loading = { key, promise: null };
    loading.promise = (async () => {
      let decoder;
      try {
        decoder = await loadDecoder({ model, backend, weights, onProgress, signal });
      } finally {
        if (this.#loading === loading) this.#loading = null;
      }
      if (this.#key !== null || this.#loading) {
        // Another choice was asked for while this one loaded.
        decoder.dispose();
        throw new DOMException('loading this decoder was superseded by another decoder choice', 'AbortError');
      }
      this.#decoder = decoder;
      this.#key = key;
      return decoder;
    })();
    this.#loading = loading;
    return loading.promise;
  }
}
