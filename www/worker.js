// The Web Worker that owns the wasm engine: all model work happens here, so the page never freezes.
// Protocol: {id, op, args} in; {id, ok: true, result} | {id, ok: false, error} | {id, progress} out.
import init, { Engine, version } from '../pkg/lambda_eclipse.js';

let engine = null;
const ready = init();

function transferables(value, out = []) {
  if (value instanceof Float32Array || value instanceof Int32Array || value instanceof Uint8Array) out.push(value.buffer);
  else if (Array.isArray(value)) value.forEach((v) => transferables(v, out));
  else if (value && typeof value === 'object') Object.values(value).forEach((v) => transferables(v, out));
  return out;
}

const ops = {
  async load(id, { model, prior, backend }) {
    await ready;
    const onProgress = (component, done, total) => postMessage({ id, progress: { component, done, total } });
    engine = await Engine.load(model, prior ?? null, backend, onProgress);
    return { backend: engine.backend, fallbackReason: engine.fallbackReason ?? null, embeddingDim: engine.embeddingDim, version: version() };
  },
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

self.onmessage = async ({ data: { id, op, args } }) => {
  try {
    if (!ops[op]) throw new Error(`unknown operation ${op}`);
    if (op !== 'load' && !engine) throw new Error('the model is not loaded yet');
    const result = await ops[op](id, args);
    postMessage({ id, ok: true, result }, transferables(result));
  } catch (e) {
    postMessage({ id, ok: false, error: String(e && e.message ? e.message : e) });
  }
};
