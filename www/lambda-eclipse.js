// λ-ECLIPSE in the browser: the JavaScript API. All model work runs in a Web Worker (worker.js).
//
//   import { load, cacheUsage, clearCache } from './www/lambda-eclipse.js';
//   const engine = await load({ model: 'https://…/model/', backend: 'auto', onProgress, signal });
//   const r = await engine.prior({ prompt, subjects: [{ keyword: 'cat', image: blob }], seed: 42 });
import { cacheUsage as usageOf, clearCache } from './weight-cache.js';

export { clearCache };

const KANDINSKY = 'https://huggingface.co/kandinsky-community/kandinsky-2-2-prior/resolve/main/';

import { spawnWorker } from './spawn-worker.js';

/** Default model: the real Hugging Face files. The tokenizer, CLIP towers and image processor come from
 * Kandinsky 2.2's prior repository; the λ prior from its own repository (files at its root). */
export const DEFAULT_MODEL = KANDINSKY;
export const DEFAULT_PRIOR = 'https://huggingface.co/ECLIPSE-Community/Lambda-ECLIPSE-Prior-v1.0/resolve/main/';

/** The folders of a model; a manifest gives each its URL. */
export const MODEL_FOLDERS = Object.freeze(['tokenizer', 'text_encoder', 'image_encoder', 'image_processor', 'prior']);

/** Where the default model's files are: one URL per component folder. */
export const DEFAULT_MANIFEST = Object.freeze({
  tokenizer: `${KANDINSKY}tokenizer/`,
  text_encoder: `${KANDINSKY}text_encoder/`,
  image_encoder: `${KANDINSKY}image_encoder/`,
  image_processor: `${KANDINSKY}image_processor/`,
  prior: DEFAULT_PRIOR,
});

const absolute = (u) => new URL(u, globalThis.location?.href).href;
const folderUrl = (u) => absolute(u.endsWith('/') ? u : `${u}/`);

/**
 * The manifest (`{ tokenizer, text_encoder, image_encoder, image_processor, prior }`: absolute folder URLs)
 * of a `model` option: nothing (the default model), a base URL whose folders are `base/tokenizer/` and so
 * on, or a manifest object, possibly partial with a `base` for the rest. `prior` overrides the prior's URL.
 */
export function resolveManifest(model, prior) {
  let m;
  if (model === undefined || model === null || model === '') m = { ...DEFAULT_MANIFEST };
  else if (typeof model === 'string') m = Object.fromEntries(MODEL_FOLDERS.map((f) => [f, `${folderUrl(model)}${f}/`]));
  else if (typeof model === 'object') {
    m = {};
    for (const f of MODEL_FOLDERS) {
      const url = model[f] ?? (model.base ? `${folderUrl(model.base)}${f}/` : undefined);
      if (typeof url !== 'string' || !url) throw new TypeError(`model manifest: no URL for the \`${f}\` folder (give it, or a \`base\` URL)`);
      m[f] = url;
    }
  } else throw new TypeError('model must be a base URL or a manifest object');
  if (prior) m.prior = prior;
  return Object.fromEntries(MODEL_FOLDERS.map((f) => [f, folderUrl(m[f])]));
}

/**
 * Bytes of model files kept in this browser's cache: `{ bytes, entries, files, available }`. With a `model`
 * (as `load` takes it), only that model's files count.
 */
export function cacheUsage(model) {
  return usageOf(model === undefined ? undefined : Object.values(resolveManifest(model)));
}

async function toBytes(image, what) {
  if (image instanceof Uint8Array) return image;
  if (image instanceof ArrayBuffer) return new Uint8Array(image);
  if (image && typeof image.arrayBuffer === 'function') return new Uint8Array(await image.arrayBuffer());
  throw new TypeError(`${what} must be a Blob, File, ArrayBuffer or Uint8Array`);
}

class WorkerEngine {
  #worker; #next = 1; #pending = new Map();
  backend = 'cpu';
  /** Why 'auto' ran on the CPU (no WebGPU in this browser, no adapter), or null. */
  fallbackReason = null;
  embeddingDim = 0;
  /** How the load went: `{ loadSeconds, weightBytes, downloadedBytes, cachedBytes, memoryBytes, cacheWarning }`. */
  loadInfo = null;

  constructor(worker) {
    this.#worker = worker;
    worker.onmessage = ({ data }) => {
      const p = this.#pending.get(data.id);
      if (!p) return;
      if (data.progress) { try { p.onProgress?.(data.progress); } catch (e) { console.error(e); } return; }
      this.#pending.delete(data.id);
      if (data.ok) p.resolve(data.result);
      else p.reject(data.name === 'AbortError' ? new DOMException(data.error, 'AbortError') : new Error(data.error));
    };
    worker.onerror = (e) => {
      for (const p of this.#pending.values()) p.reject(new Error(`engine worker failed: ${e.message}`));
      this.#pending.clear();
    };
  }

  call(op, args, onProgress) {
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, onProgress });
      this.#worker.postMessage({ id, op, args });
    });
  }

  /** Tokenize and run the text tower. */
  embedText(prompt) { return this.call('embedText', { prompt }); }

  /** Image embeddings of photos (Blob/File/ArrayBuffer/Uint8Array). */
  async embedImages(images) {
    const bytes = await Promise.all(images.map((img, i) => toBytes(img, `image ${i + 1}`)));
    return this.call('embedImages', { images: bytes });
  }

  /** The λ-ECLIPSE embedding of a prompt with subjects and optional edge control. */
  async prior({ prompt, subjects = [], control, seed, noise, cannyLow, cannyHigh }) {
    const request = {
      prompt,
      subjects: await Promise.all(subjects.map(async (s, i) => ({ keyword: s.keyword, image: await toBytes(s.image, `subject ${i + 1} image`) }))),
      control: control ? await toBytes(control, 'control image') : undefined,
      seed, noise, cannyLow, cannyHigh,
    };
    return this.call('prior', { request });
  }

  /**
   * For each keyword, whether the pipeline will find it in `prompt` (else its result warns "couldn't find
   * keyword") and which characters its subject replaces: `[{ found, empty, spans: [[start, end], …] }]` with
   * JS string indices. Runs only the tokenizer.
   */
  matchKeywords(prompt, keywords) { return this.call('matchKeywords', { prompt, keywords }); }

  /** `{ backend, adapter, fallbackReason, embeddingDim, version }`: what computes (adapter: the WebGPU adapter in words, or null on the CPU). */
  describe() { return this.call('describe', {}); }

  /** Bytes of the engine's wasm memory (its peak: wasm memory never shrinks). */
  memoryBytes() { return this.call('memoryBytes'); }

  /** Stops the worker and frees the model. */
  dispose() { this.#worker.terminate(); }
}

/**
 * Loads the model in a Web Worker. `model`: a base URL, a manifest (see `resolveManifest`) or nothing for the
 * real model on Hugging Face. Weights are kept in the browser cache (`cache: false` to skip it): a reload
 * downloads nothing, and a load after an interruption fetches only what is missing. `onProgress(p)` reports
 * the weight files (`p.files`), bytes, speed and ETA. Aborting `signal` cancels the load: the fetches stop
 * and the promise rejects with an AbortError. `backend`: 'auto' (WebGPU when the browser has an adapter,
 * else the CPU) | 'webgpu' | 'cpu'.
 */
export async function load({ model, prior, backend = 'auto', onProgress, signal, cache = true } = {}) {
  signal?.throwIfAborted();
  const manifest = resolveManifest(model, prior);
  const worker = spawnWorker(new URL('./worker.js', import.meta.url));
  const engine = new WorkerEngine(worker);
  const cancelled = () => new DOMException('loading was cancelled', 'AbortError');
  let onAbort;
  // The worker answers a cancel within moments; should it not (stuck in a long step), give up after 5 s.
  const abandoned = new Promise((_, reject) => {
    onAbort = () => { engine.call('cancel').catch(() => {}); setTimeout(() => reject(cancelled()), 5000); };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
  abandoned.catch(() => {});
  try {
    const info = await Promise.race([engine.call('load', { manifest, backend, cache }, onProgress), abandoned]);
    if (signal?.aborted) throw cancelled();
    engine.backend = info.backend;
    engine.fallbackReason = info.fallbackReason;
    engine.embeddingDim = info.embeddingDim;
    engine.loadInfo = {
      loadSeconds: info.loadSeconds,
      weightBytes: info.weightBytes,
      downloadedBytes: info.downloadedBytes,
      cachedBytes: info.cachedBytes,
      memoryBytes: info.memoryBytes,
      cacheWarning: info.cacheWarning,
    };
    return engine;
  } catch (e) {
    engine.dispose();
    throw signal?.aborted ? cancelled() : e;
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

// ---- Model-free tools, in their own worker (tools-worker.js), started on first use. ----

let tools = null;

function toolsCall(op, args) {
  if (!tools) {
    const worker = spawnWorker(new URL('./tools-worker.js', import.meta.url));
    const pending = new Map();
    tools = { worker, pending, next: 1 };
    const current = tools;
    worker.onmessage = ({ data }) => {
      const p = pending.get(data.id);
      if (!p) return;
      pending.delete(data.id);
      if (data.fatal && tools === current) { tools = null; worker.terminate(); for (const q of pending.values()) q.reject(new Error(data.error)); }
      data.ok ? p.resolve(data.result) : p.reject(new Error(data.error));
    };
    worker.onerror = (e) => {
      for (const q of pending.values()) q.reject(new Error(`the engine's tools worker failed: ${e.message ?? 'could not start'}`));
      pending.clear();
      if (tools === current) tools = null;
    };
  }
  const t = tools;
  const id = t.next++;
  return new Promise((resolve, reject) => {
    t.pending.set(id, { resolve, reject });
    t.worker.postMessage({ id, op, args });
  });
}

/**
 * Checks that an image file decodes as the engine decodes subject photos (PNG, JPEG, WebP, GIF, BMP; at most
 * 16384 px a side and 512 MiB of pixels): `{ width, height }`, or rejects with the reason. Needs no model.
 */
export async function inspectImage(image) {
  return toolsCall('inspectImage', { image: await toBytes(image, 'image') });
}

/**
 * The edge map the engine derives from an edge-control image: OpenCV's `IMREAD_GRAYSCALE` + `Canny(low, high)`,
 * bit-exact (the same wasm code as the pipeline). `{ width, height, edges: Uint8Array (0|255), rgba:
 * Uint8ClampedArray }` — `new ImageData(rgba, width, height)` draws it. Needs no model.
 */
export async function cannyPreview(image, { low = 100, high = 200 } = {}) {
  return toolsCall('cannyPreview', { image: await toBytes(image, 'control image'), low, high });
}

/**
 * The bilinear grid between four corner embeddings `[topLeft, topRight, bottomLeft, bottomRight]` as the
 * reference interpolates (rows top → bottom, then columns left → right, `v1·(1−t) + v2·t`): `(steps+1)²`
 * Float32Arrays, row-major. Computed by the engine's wasm (`pipeline::interpolate`). Needs no model.
 */
export function interpolateGrid(corners, steps = 4) {
  return toolsCall('interpolateGrid', { corners: corners.map((c) => Float32Array.from(c)), steps });
}
