// λ-ECLIPSE in the browser: the JavaScript API. All model work runs in a Web Worker (worker.js).
//
//   import { load } from './www/lambda-eclipse.js';
//   const engine = await load({ model: 'https://…/model/', backend: 'auto', onProgress });
//   const r = await engine.prior({ prompt, subjects: [{ keyword: 'cat', image: blob }], seed: 42 });

/** Default model: the real Hugging Face files. The tokenizer, CLIP towers and image processor come from
 * Kandinsky 2.2's prior repository; the λ prior from its own repository (files at its root). */
export const DEFAULT_MODEL = 'https://huggingface.co/kandinsky-community/kandinsky-2-2-prior/resolve/main/';
export const DEFAULT_PRIOR = 'https://huggingface.co/ECLIPSE-Community/Lambda-ECLIPSE-Prior-v1.0/resolve/main/';

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

  constructor(worker) {
    this.#worker = worker;
    worker.onmessage = ({ data }) => {
      const p = this.#pending.get(data.id);
      if (!p) return;
      if (data.progress) { p.onProgress?.(data.progress); return; }
      this.#pending.delete(data.id);
      data.ok ? p.resolve(data.result) : p.reject(new Error(data.error));
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

  /** Stops the worker and frees the model. */
  dispose() { this.#worker.terminate(); }
}

/**
 * Loads the model in a Web Worker. `onProgress({component, done, total})` reports weight bytes.
 * `backend`: 'auto' (WebGPU when the browser has an adapter, else the CPU) | 'webgpu' | 'cpu'.
 */
export async function load({ model, prior, backend = 'auto', onProgress } = {}) {
  // A custom `model` folder holds its own prior/ unless `prior` says otherwise.
  if (!model) { model = DEFAULT_MODEL; prior ??= DEFAULT_PRIOR; }
  const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
  const engine = new WorkerEngine(worker);
  const abs = (u) => (u ? new URL(u, location.href).href : undefined);
  const info = await engine.call('load', { model: abs(model), prior: abs(prior), backend }, onProgress);
  engine.backend = info.backend;
  engine.fallbackReason = info.fallbackReason;
  engine.embeddingDim = info.embeddingDim;
  return engine;
}
