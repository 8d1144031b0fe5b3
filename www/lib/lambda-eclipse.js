// λ-ECLIPSE in the browser: the JavaScript API. All model work runs in a Web Worker (worker.js).
//
//   import { load, cacheUsage, clearCache } from 'lambda-eclipse';   // or './www/lib/lambda-eclipse.js'
//   const engine = await load({ model: 'https://…/model/', backend: 'auto', onProgress, signal });
//   const r = await engine.prior({ prompt, subjects: [{ keyword: 'cat', image: blob }], seed: 42 });
//   const decoder = await loadDecoder({ onProgress, signal });          // Kandinsky 2.2, in its own worker
//   const img = await decoder.decode({ imageEmbeds: r.imageEmbeds, negativeImageEmbeds: r.negativeImageEmbeds, onStep });
import { cacheUsage as usageOf, clearCache } from './weight-cache.js';
import { blobWorker, isCrossOrigin } from './spawn-worker.js';
import { computesOnCpu, cpuFitProblem, probeWasmMemory, resolveVariant } from './variants.js';

export { clearCache };
export { listVariants, resolveVariant, cpuFitProblem, LISTING_FILE } from './variants.js';

const KANDINSKY = 'https://huggingface.co/kandinsky-community/kandinsky-2-2-prior/resolve/main/';

// The workers start with the literal `new Worker(new URL('./…', import.meta.url), { type: 'module' })`: bundlers
// (Vite, webpack 5) recognise exactly this form and bundle the worker with its imports and the wasm. Served
// from another origin than the page (the widget from a CDN), a blob worker imports the script instead; its
// URL is built from a variable so that bundlers do not copy the unbundled script as an asset too.
const ENGINE_WORKER = './worker.js';
const TOOLS_WORKER = './tools-worker.js';
const engineWorker = () => (isCrossOrigin(import.meta.url)
  ? blobWorker(new URL(ENGINE_WORKER, import.meta.url))
  : new Worker(new URL('./worker.js', import.meta.url), { type: 'module' }));
const toolsWorker = () => (isCrossOrigin(import.meta.url)
  ? blobWorker(new URL(TOOLS_WORKER, import.meta.url))
  : new Worker(new URL('./tools-worker.js', import.meta.url), { type: 'module' }));

/** Default model: the real Hugging Face files. The tokenizer, CLIP towers and image processor come from
 * Kandinsky 2.2's prior repository; the λ prior from its own repository (files at its root). */
export const DEFAULT_MODEL = KANDINSKY;
export const DEFAULT_PRIOR = 'https://huggingface.co/ECLIPSE-Community/Lambda-ECLIPSE-Prior-v1.0/resolve/main/';

/** Default decoder: Kandinsky 2.2's decoder on Hugging Face (folders unet/, movq/, scheduler/). */
export const DEFAULT_DECODER = 'https://huggingface.co/kandinsky-community/kandinsky-2-2-decoder/resolve/main/';

/** The folders of a decoder; a decoder manifest gives each its URL. */
export const DECODER_FOLDERS = Object.freeze(['unet', 'movq', 'scheduler']);

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

/** `{ folder: URL }` of a base URL (`base/folder/`) or of a manifest object (each folder's URL, or a `base`
 * for the rest); `what` names the thing in errors. */
function folderManifest(model, folders, what) {
  if (typeof model === 'string') return Object.fromEntries(folders.map((f) => [f, `${folderUrl(model)}${f}/`]));
  if (model && typeof model === 'object') {
    const m = {};
    for (const f of folders) {
      const url = model[f] ?? (model.base ? `${folderUrl(model.base)}${f}/` : undefined);
      if (typeof url !== 'string' || !url) throw new TypeError(`${what} manifest: no URL for the \`${f}\` folder (give it, or a \`base\` URL)`);
      m[f] = url;
    }
    return m;
  }
  throw new TypeError(`${what} must be a base URL or a manifest object`);
}

/**
 * The manifest (`{ tokenizer, text_encoder, image_encoder, image_processor, prior }`: absolute folder URLs)
 * of a `model` option: nothing (the default model), a base URL whose folders are `base/tokenizer/` and so
 * on, or a manifest object, possibly partial with a `base` for the rest. `prior` overrides the prior's URL.
 */
export function resolveManifest(model, prior) {
  const m = model === undefined || model === null || model === '' ? { ...DEFAULT_MANIFEST } : folderManifest(model, MODEL_FOLDERS, 'model');
  if (prior) m.prior = prior;
  return Object.fromEntries(MODEL_FOLDERS.map((f) => [f, folderUrl(m[f])]));
}

/** The decoder manifest (`{ unet, movq, scheduler }`: absolute folder URLs) of a `model` option of
 * `loadDecoder`: nothing (DEFAULT_DECODER), a base URL, or a manifest object (possibly with a `base`). */
export function resolveDecoderManifest(model) {
  const m = folderManifest(model === undefined || model === null || model === '' ? DEFAULT_DECODER : model, DECODER_FOLDERS, 'decoder');
  return Object.fromEntries(DECODER_FOLDERS.map((f) => [f, folderUrl(m[f])]));
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

/** One worker and its request/answer protocol (see worker.js). `what` names what the worker holds ('the
 * model', 'the decoder') in errors. A crash of the worker (a wasm trap: out of memory, a bug) leaves its wasm
 * instance unusable: the client then stops the worker, rejects every pending call with the reason, and
 * rejects every later call at once (`alive` is false); so does `dispose()`, with an AbortError. */
class WorkerClient {
  #worker; #what; #next = 1; #pending = new Map();
  /** Why the worker is gone (`{ message, name }`), or null while it works. */
  #gone = null;

  constructor(worker, what) {
    this.#worker = worker;
    this.#what = what;
    worker.onmessage = ({ data }) => {
      // A fatal answer: the wasm instance trapped (worker.js says so), whatever the call (its id may be null).
      if (data.fatal) { this.#end({ message: this.#crashed(data.error) }); return; }
      const p = this.#pending.get(data.id);
      if (!p) return;
      if (data.progress) { try { p.onProgress?.(data.progress); } catch (e) { console.error(e); } return; }
      this.#pending.delete(data.id);
      if (data.ok) p.resolve(data.result);
      else p.reject(data.name === 'AbortError' ? new DOMException(data.error, 'AbortError') : new Error(data.error));
    };
    worker.onerror = (e) => {
      e.preventDefault?.(); // handled: the calls reject with it
      this.#end({ message: e.message ? this.#crashed(e.message) : `${this.#what}'s worker could not start (is worker.js served, with CORS headers when from another origin?)` });
    };
  }

  #crashed(reason) { return `${this.#what}'s worker crashed (probably out of memory): ${reason}`; }

  #error() { return this.#gone.name ? new DOMException(this.#gone.message, this.#gone.name) : new Error(this.#gone.message); }

  /** Stops the worker for good: every pending call and every later one rejects with `gone`. */
  #end(gone) {
    if (this.#gone) return;
    this.#gone = gone;
    this.#worker.terminate();
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) p.reject(this.#error());
  }

  /** False once the worker crashed or the client was disposed: every call then rejects at once. */
  get alive() { return !this.#gone; }

  call(op, args, onProgress) {
    if (this.#gone) return Promise.reject(this.#error());
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, onProgress });
      try {
        this.#worker.postMessage({ id, op, args });
      } catch (e) {
        this.#pending.delete(id);
        throw e;
      }
    });
  }

  /** Stops the worker and frees what it holds; pending calls reject with an AbortError. */
  dispose() { this.#end({ message: `${this.#what} was disposed`, name: 'AbortError' }); }
}

/** How a load went: `{ loadSeconds, weightBytes, downloadedBytes, cachedBytes, memoryBytes, cacheWarning }`. */
const loadInfoOf = (info) => ({
  loadSeconds: info.loadSeconds,
  weightBytes: info.weightBytes,
  downloadedBytes: info.downloadedBytes,
  cachedBytes: info.cachedBytes,
  memoryBytes: info.memoryBytes,
  cacheWarning: info.cacheWarning,
});

/** Runs a load op (`load` | `loadDecoder`) in `client`'s worker; aborting `signal` cancels it (AbortError).
 * Disposes the worker when the load fails. Resolves the worker's answer. */
async function loadInWorker(client, op, args, { onProgress, signal }) {
  const cancelled = () => new DOMException('loading was cancelled', 'AbortError');
  let onAbort;
  // The worker answers a cancel within moments; should it not (stuck in a long step), give up after 5 s.
  const abandoned = new Promise((_, reject) => {
    onAbort = () => { client.call('cancel').catch(() => {}); setTimeout(() => reject(cancelled()), 5000); };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
  abandoned.catch(() => {});
  try {
    const info = await Promise.race([client.call(op, args, onProgress), abandoned]);
    if (signal?.aborted) throw cancelled();
    return info;
  } catch (e) {
    client.dispose();
    throw signal?.aborted ? cancelled() : e;
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

class WorkerEngine extends WorkerClient {
  backend = 'cpu';
  /** Why 'auto' ran on the CPU (no WebGPU in this browser, no adapter), or null. */
  fallbackReason = null;
  embeddingDim = 0;
  /** How the load went: `{ loadSeconds, weightBytes, downloadedBytes, cachedBytes, memoryBytes, cacheWarning }`. */
  loadInfo = null;
  /** The variant loaded ('original', 'q8_0', …: `load`'s `variant`), or null when none was asked for. */
  variant = null;
  /** The folder URL (or manifest) the weights came from. */
  source = null;

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
}

/**
 * Loads the model in a Web Worker. `model`: a base URL, a manifest (see `resolveManifest`) or nothing for the
 * real model on Hugging Face. `variant`: one of the copies its `variants.json` lists ('q8_0', 'q4_m', …: see
 * variants.js), or 'original' / nothing for the model itself; an unknown one is refused naming those that
 * exist, and, when the load would compute on the CPU (`backend` 'cpu', or 'auto' without WebGPU), so is one
 * whose listed memory exceeds this browser's WebAssembly memory — before anything is downloaded, naming the
 * variants that fit. A copy's folder URL also loads as a plain `model`. Weights are kept in the browser cache
 * (`cache: false` to skip it): a reload downloads nothing, and a load after an interruption fetches only
 * what is missing. `onProgress(p)` reports the weight files (`p.files`), bytes, speed and ETA. Aborting
 * `signal` cancels the load: the fetches stop and the promise rejects with an AbortError. `backend`: 'auto'
 * (WebGPU when the browser has an adapter, else the CPU) | 'webgpu' | 'cpu'.
 */
export async function load({ model, variant, prior, backend = 'auto', onProgress, signal, cache = true } = {}) {
  signal?.throwIfAborted();
  const chosen = await resolveVariant(model, variant, { signal });
  if (chosen.entry?.cpuBytes != null && await computesOnCpu(backend)) {
    const problem = cpuFitProblem(chosen.entry, chosen.variants, probeWasmMemory());
    if (problem) throw new Error(`${problem[0].toUpperCase()}${problem.slice(1)}.`);
  }
  const manifest = resolveManifest(chosen.model, prior);
  const engine = new WorkerEngine(engineWorker(), 'the model');
  const info = await loadInWorker(engine, 'load', { manifest, backend, cache }, { onProgress, signal });
  engine.backend = info.backend;
  engine.fallbackReason = info.fallbackReason;
  engine.embeddingDim = info.embeddingDim;
  engine.loadInfo = loadInfoOf(info);
  engine.variant = chosen.entry?.id ?? (variant ? String(variant) : null);
  engine.source = chosen.model ?? null;
  return engine;
}

/** A loaded Kandinsky 2.2 decoder in its own worker (see `loadDecoder`). */
class WorkerDecoder extends WorkerClient {
  backend = 'cpu';
  fallbackReason = null;
  /** The WebGPU adapter in words, or null on the CPU. */
  adapter = null;
  /** Width of the embeddings it decodes (1280 for the real decoder). */
  embeddingDim = 0;
  /** Image pixels per latent (8 for the real MoVQ). */
  latentScale = 0;
  /** Image sides must be multiples of this (64 for the real decoder). */
  sizeMultiple = 0;
  /** The sampler its scheduler config names: 'ddpm' | 'ddim' | 'dpmpp'. */
  defaultScheduler = 'ddpm';
  /** How it keeps its weight matrices: 'f16' | 'int8' | 'f32' (the CPU keeps f32 whatever was asked). */
  weights = 'f32';
  loadInfo = null;

  /**
   * Decodes an embedding to an image: `{ width, height, rgba: Uint8ClampedArray, steps, scheduler, stepMs,
   * msPerStep, movqMs, seconds }`. `noise` (`{ initialLatents, stepNoise }`, the golden / CLI `--noise`
   * layout) replaces the seed's draws. `onStep({ step, total, msPerStep, preview: { width, height, rgba } })`
   * after every denoising step. Aborting `signal` stops the decode before its next step: the promise then
   * rejects with an AbortError (the decoder stays loaded).
   */
  async decode({ imageEmbeds, negativeImageEmbeds, seed, steps, guidance, width, height, scheduler, noise, onStep, signal } = {}) {
    signal?.throwIfAborted();
    const f32 = (v) => (v === undefined || v === null ? undefined : Float32Array.from(v));
    const request = {
      imageEmbeds: f32(imageEmbeds), negativeImageEmbeds: f32(negativeImageEmbeds), seed, steps, guidance, width, height, scheduler,
      noise: noise ? { initialLatents: f32(noise.initialLatents), stepNoise: f32(noise.stepNoise) } : undefined,
    };
    const onAbort = () => { this.call('cancel').catch(() => {}); };
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const image = await this.call('decode', { request }, onStep);
      // Cancelled after the last step (during the MoVQ): the caller asked for no image.
      if (signal?.aborted) throw new DOMException('decoding was cancelled', 'AbortError');
      return image;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }
}

/**
 * Loads the Kandinsky 2.2 decoder (UNet + MoVQ + scheduler) in a Web Worker of its own, streamed and kept
 * in the browser cache like the λ model. `model`: a base URL with `unet/`, `movq/`, `scheduler/`, a manifest
 * `{ unet, movq, scheduler }` or nothing for DEFAULT_DECODER. `weights`: 'f16' (default; on WebGPU the f32
 * weight matrices are kept as f16, half the memory) | 'int8' (quantised per output channel at load, a quarter:
 * the real UNet in 1.26 GB; approximate) | 'f32' (exactly as stored). Other options as `load`.
 */
export async function loadDecoder({ model, backend = 'auto', weights, onProgress, signal, cache = true } = {}) {
  signal?.throwIfAborted();
  const manifest = resolveDecoderManifest(model);
  const decoder = new WorkerDecoder(engineWorker(), 'the decoder');
  const info = await loadInWorker(decoder, 'loadDecoder', { manifest, backend, weights, cache }, { onProgress, signal });
  for (const key of ['backend', 'fallbackReason', 'adapter', 'embeddingDim', 'latentScale', 'sizeMultiple', 'defaultScheduler', 'weights']) decoder[key] = info[key];
  decoder.loadInfo = loadInfoOf(info);
  return decoder;
}

// ---- Model-free tools, in their own worker (tools-worker.js), started on first use. ----

let tools = null;

function toolsCall(op, args) {
  if (!tools) {
    const worker = toolsWorker();
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
