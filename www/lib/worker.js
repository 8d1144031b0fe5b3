// The Web Worker that owns the wasm engine: all model work happens here, so the page never freezes. One
// worker holds either the λ model (`load`) or the local decoder (`loadDecoder`): decoding runs in a worker
// of its own, so computing an embedding and decoding never wait for each other.
// Protocol: {id, op, args} in; {id, ok: true, result} | {id, ok: false, error, name, fatal?} | {id, progress} out.
// `cancel` may arrive while `load`/`loadDecoder` runs: it aborts the load's fetches, and the load answers
// with an AbortError; during `decode` it stops the decode before its next step (also an AbortError).
// `decode` reports each step as a progress message. A wasm trap (out of memory, a bug) leaves the instance
// unusable (a decoder stays "busy" for ever): the answer then says `fatal: true` (its id is null when the trap
// came outside a call's own code) and the client stops this worker.
import init, { Decoder, Engine, version } from '../../pkg/lambda_eclipse.js';
import { ModelReader } from './model-reader.js';

let engine = null;
let decoder = null;
let reader = null;
let wasm = null;
const ready = init().then((exports) => { wasm = exports; });

/** Bytes of the wasm instance's linear memory (it grows and never shrinks: this is its peak). */
const memoryBytes = () => wasm?.memory?.buffer.byteLength ?? 0;

/** The buffers of the typed arrays in `value`, each once (postMessage rejects a buffer listed twice). */
function transferables(value, out = new Set()) {
  if (ArrayBuffer.isView(value)) out.add(value.buffer);
  else if (Array.isArray(value)) value.forEach((v) => transferables(v, out));
  else if (value && typeof value === 'object') Object.values(value).forEach((v) => transferables(v, out));
  return [...out];
}

/** Loads a model through a fresh ModelReader (progress, cache, cancel): `open(reader)` builds the engine. */
async function loadThrough(id, cache, open) {
  if (reader) throw new Error('this worker has already loaded a model');
  reader = new ModelReader({ cache, memoryBytes, onProgress: (progress) => postMessage({ id, progress }) });
  await ready;
  const t0 = performance.now();
  let loaded;
  try {
    loaded = await open(reader);
  } catch (e) {
    const message = String(e?.message ?? e);
    await reader.failed(message);
    if (reader.cancelled) throw new DOMException('loading was cancelled', 'AbortError');
    throw e;
  }
  const progress = await reader.commit();
  return {
    loaded,
    info: {
      version: version(),
      loadSeconds: (performance.now() - t0) / 1000,
      memoryBytes: memoryBytes(),
      downloadedBytes: progress.downloaded,
      cachedBytes: progress.fromCache,
      weightBytes: progress.total,
      cacheWarning: progress.cacheWarning,
    },
  };
}

const ops = {
  async load(id, { manifest, backend, cache = true }) {
    const { loaded, info } = await loadThrough(id, cache, (io) => Engine.load(manifest, backend, io));
    engine = loaded;
    return { ...info, backend: engine.backend, fallbackReason: engine.fallbackReason ?? null, embeddingDim: engine.embeddingDim };
  },
  async loadDecoder(id, { manifest, backend, weights, cache = true }) {
    const { loaded, info } = await loadThrough(id, cache, (io) => Decoder.load(manifest, backend, io, weights));
    decoder = loaded;
    return {
      ...info,
      backend: decoder.backend,
      fallbackReason: decoder.fallbackReason ?? null,
      adapter: decoder.backend === 'webgpu' ? await adapterInWords(decoder.adapter) : null,
      embeddingDim: decoder.embeddingDim,
      latentScale: decoder.latentScale,
      sizeMultiple: decoder.sizeMultiple,
      defaultScheduler: decoder.defaultScheduler,
      weights: decoder.weights,
    };
  },
  decode: (id, { request }) => decoder.decode(request, (step) => postMessage({ id, progress: step }, transferables(step))),
  cancel() {
    if (decoder) decoder.cancel(); else reader?.cancel();
    return true;
  },
  memoryBytes: () => memoryBytes(),
  embedText: (id, { prompt }) => engine.embedText(prompt),
  embedImages: (id, { images }) => engine.embedImages(images),
  prior: (id, { request }) => engine.prior(request),
  matchKeywords: (id, { prompt, keywords }) => engine.matchKeywords(prompt, keywords),
  describe: async () => ({ backend: engine.backend, adapter: engine.backend === 'webgpu' ? await adapterInWords(engine.adapter) : null, fallbackReason: engine.fallbackReason ?? null, embeddingDim: engine.embeddingDim, version: version() }),
};

/** The WebGPU adapter as the browser names it (wgpu's own description is empty in browsers): the default
 * high-performance adapter, the one the engine requested. */
async function adapterInWords(fallback) {
  try {
    const info = (await navigator.gpu?.requestAdapter({ powerPreference: 'high-performance' }))?.info;
    const words = [info?.vendor, info?.architecture, info?.device, info?.description].filter(Boolean);
    if (words.length) return [...new Set(words)].join(' · ');
  } catch { /* fall back to wgpu's description */ }
  return fallback ?? null;
}

/** Operations that need no loaded model, and the one that needs the decoder rather than the λ model. */
const ANYTIME = new Set(['load', 'loadDecoder', 'cancel', 'memoryBytes']);
const NEEDS_DECODER = new Set(['decode']);

self.onmessage = async ({ data: { id, op, args } }) => {
  try {
    if (!ops[op]) throw new Error(`unknown operation ${op}`);
    if (NEEDS_DECODER.has(op) ? !decoder : !ANYTIME.has(op) && !engine) throw new Error(`the ${NEEDS_DECODER.has(op) ? 'decoder' : 'model'} is not loaded yet`);
    const result = await ops[op](id, args ?? {});
    postMessage({ id, ok: true, result }, transferables(result));
  } catch (e) {
    if (e instanceof WebAssembly.RuntimeError) postMessage({ id, ok: false, fatal: true, error: String(e), name: 'RuntimeError' });
    else postMessage({ id, ok: false, error: String(e && e.message ? e.message : e), name: e?.name ?? 'Error' });
  }
};

// A trap inside an async wasm call can surface as a rejection no call awaits (an uncaught exception reaches the
// page's worker.onerror by itself, a rejection does not).
self.addEventListener('unhandledrejection', (ev) => {
  if (ev.reason instanceof WebAssembly.RuntimeError) postMessage({ id: null, ok: false, fatal: true, error: String(ev.reason), name: 'RuntimeError' });
});
