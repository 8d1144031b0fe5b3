// The Web Worker that owns the wasm engine: all model work happens here, so the page never freezes.
// Protocol: {id, op, args} in; {id, ok: true, result} | {id, ok: false, error, name} | {id, progress} out.
// `cancel` may arrive while `load` runs: it aborts the load's fetches, and `load` answers with an AbortError.
import init, { Engine, version } from '../pkg/lambda_eclipse.js';
import { ModelReader } from './model-reader.js';

let engine = null;
let reader = null;
let wasm = null;
const ready = init().then((exports) => { wasm = exports; });

/** Bytes of the wasm instance's linear memory (it grows and never shrinks: this is its peak). */
const memoryBytes = () => wasm?.memory?.buffer.byteLength ?? 0;

function transferables(value, out = []) {
  if (value instanceof Float32Array || value instanceof Int32Array || value instanceof Uint8Array) out.push(value.buffer);
  else if (Array.isArray(value)) value.forEach((v) => transferables(v, out));
  else if (value && typeof value === 'object') Object.values(value).forEach((v) => transferables(v, out));
  return out;
}

const ops = {
  async load(id, { manifest, backend, cache = true }) {
    if (reader) throw new Error('this engine worker has already loaded a model');
    reader = new ModelReader({ cache, memoryBytes, onProgress: (progress) => postMessage({ id, progress }) });
    await ready;
    const t0 = performance.now();
    try {
      engine = await Engine.load(manifest, backend, reader);
    } catch (e) {
      const message = String(e?.message ?? e);
      await reader.failed(message);
      if (reader.cancelled) throw new DOMException('loading was cancelled', 'AbortError');
      throw e;
    }
    const progress = await reader.commit();
    return {
      backend: engine.backend,
      fallbackReason: engine.fallbackReason ?? null,
      embeddingDim: engine.embeddingDim,
      version: version(),
      loadSeconds: (performance.now() - t0) / 1000,
      memoryBytes: memoryBytes(),
      downloadedBytes: progress.downloaded,
      cachedBytes: progress.fromCache,
      weightBytes: progress.total,
      cacheWarning: progress.cacheWarning,
    };
  },
  cancel() {
    reader?.cancel();
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

/** Operations that need no loaded model. */
const ANYTIME = new Set(['load', 'cancel', 'memoryBytes']);

self.onmessage = async ({ data: { id, op, args } }) => {
  try {
    if (!ops[op]) throw new Error(`unknown operation ${op}`);
    if (!ANYTIME.has(op) && !engine) throw new Error('the model is not loaded yet');
    const result = await ops[op](id, args ?? {});
    postMessage({ id, ok: true, result }, transferables(result));
  } catch (e) {
    postMessage({ id, ok: false, error: String(e && e.message ? e.message : e), name: e?.name ?? 'Error' });
  }
};
