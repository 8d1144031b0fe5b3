// The browser half of loading the model: the `ModelIo` object the wasm engine reads every model file through
// (src/weights/http.rs). Each read is a fetch with a Range header; tensors and headers are kept in the
// browser cache (weight-cache.js) and taken from it on the next load; progress is reported per file with
// the download speed and an ETA; cancel() aborts every fetch in flight. Runs in the engine's worker.
import { WeightCache } from './weight-cache.js';

/** Seconds of history behind the speed and the ETA. */
const RATE_WINDOW_S = 4;
/** Least time between two progress reports. */
const REPORT_EVERY_MS = 100;

const now = () => performance.now();
const aborted = () => new DOMException('loading was cancelled', 'AbortError');

/** An Error for an HTTP status, in words. */
function httpError(response) {
  const s = response.status;
  if (s === 404) return new Error('file not found (HTTP 404)');
  if (s === 401 || s === 403) return new Error(`access denied (HTTP ${s}): the repository may be gated or private`);
  if (s === 416) return new Error('the server cannot serve this byte range (HTTP 416): the file is shorter than expected');
  return new Error(`the server answered HTTP ${s}${response.statusText ? ` ${response.statusText}` : ''}`);
}

/** The file's version: its ETag when the server exposes one, else its size. */
function versionOf(response, size) {
  const etag = response.headers.get('ETag');
  return etag ? etag.replace(/^W\//, '').replaceAll('"', '') : `size-${size}`;
}

/** Total size of the file from a 206's Content-Range or a 200's Content-Length. */
function totalSize(response) {
  if (response.status === 206) {
    const total = (response.headers.get('Content-Range') || '').split('/')[1];
    return total && total !== '*' ? Number(total) : NaN;
  }
  return Number(response.headers.get('Content-Length') ?? NaN);
}

export class ModelReader {
  #controller = new AbortController();
  #cache;
  #onProgress;
  /** url → Promise<{ size, version }> */
  #meta = new Map();
  /** Small reads (configs, headers) of this load, so the plan and the load read them once. */
  #memo = new Map();
  /** URLs the server said 404 to: remembered in the cache only once the load succeeds. */
  #absent = new Set();
  /** url → { component, file, url, total, done, cached } for each weight file. */
  #files = new Map();
  /** component → all its tensors are on the backend */
  #uploaded = new Map();
  #memoryBytes;
  #samples = [];
  #downloaded = 0;
  #fromCache = 0;
  #lastReport = -Infinity;
  #started = now();
  #phase = 'preparing';
  #current = null;
  /** True once cancel() was called. */
  cancelled = false;

  /** `memoryBytes()`: the engine's wasm memory, reported with the progress. */
  constructor({ cache = true, onProgress = () => {}, memoryBytes = () => null } = {}) {
    this.#cache = new WeightCache(cache);
    this.#onProgress = onProgress;
    this.#memoryBytes = memoryBytes;
  }

  /** Aborts every fetch in flight; every read from now on rejects with an AbortError. */
  cancel() {
    this.cancelled = true;
    this.#controller.abort();
  }

  /** Stops the fetches still running after the load failed (not a user cancel). */
  stop() { this.#controller.abort(); }

  #check() {
    if (this.#controller.signal.aborted) throw aborted();
  }

  // ---- the ModelIo interface (called by the wasm engine) ----

  /** Size in bytes of the file at `url` (from the cache when known). */
  async size(url) {
    const meta = await this.#metaOf(url);
    if (meta.size < 0) throw new Error('file not found (HTTP 404)');
    return meta.size;
  }

  /** `len` bytes at `start` of `url`; `tensor` marks weight data, counted in the progress. */
  async read(url, start, len, tensor) {
    this.#check();
    if (tensor) return this.#readRange(url, start, len, true);
    const key = `${start}+${len} ${url}`;
    if (!this.#memo.has(key)) {
      const p = this.#readRange(url, start, len, false);
      this.#memo.set(key, p);
      p.catch(() => this.#memo.delete(key));
    }
    return this.#memo.get(key);
  }

  /** After each tensor upload: bytes of `component` on the backend so far. Once every planned component is
   * complete the load is in its last step (the engine computes the empty-image embedding). */
  uploaded(component, done, total) {
    this.#uploaded.set(component, done >= total);
    const components = new Set([...this.#files.values()].map((f) => f.component));
    if (this.#phase === 'weights' && components.size && [...components].every((c) => this.#uploaded.get(c))) {
      this.#phase = 'finishing';
      this.#report(true);
    }
  }

  /** The weight files about to load: `[{ component, file, url, bytes }]`. */
  plan(files) {
    for (const f of files) {
      const old = this.#files.get(f.url);
      this.#files.set(f.url, { component: f.component, file: f.file, url: f.url, total: f.bytes, done: old?.done ?? 0, cached: old?.cached ?? 0 });
    }
    this.#phase = 'weights';
    this.#report(true);
  }

  // ---- reading ----

  #metaOf(url) {
    this.#check();
    if (!this.#meta.has(url)) {
      const p = this.#fetchMeta(url);
      this.#meta.set(url, p);
      p.catch((e) => { if (e.status !== 404) this.#meta.delete(url); }); // a 404 stays a 404 for this load
    }
    return this.#meta.get(url);
  }

  async #fetchMeta(url) {
    const cached = await this.#cache.getSize(url);
    if (cached) return cached;
    let response;
    try {
      response = await this.#get(url, 0, 0);
    } catch (e) {
      if (e.status === 404) this.#absent.add(url);
      throw e;
    }
    response.body?.cancel().catch(() => {}); // a server without Range support would send the whole file
    const size = totalSize(response);
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new Error('the server reports no file size (it sent neither Content-Range nor Content-Length, or hides them from this page: CORS Access-Control-Expose-Headers)');
    }
    const meta = { size, version: versionOf(response, size) };
    this.#cache.putSize(url, meta);
    return meta;
  }

  async #readRange(url, start, len, tensor) {
    const meta = await this.#metaOf(url);
    if (meta.size < 0) throw new Error('file not found (HTTP 404)');
    if (tensor) this.#current = url;
    const hit = await this.#cache.getRange(url, meta.version, start, len);
    this.#check();
    if (hit) {
      this.#count(url, len, tensor, true);
      return hit;
    }
    const response = await this.#get(url, start, start + len - 1);
    const size = response.status === 206 ? totalSize(response) : NaN;
    const version = versionOf(response, Number.isFinite(size) ? size : meta.size);
    if ((Number.isFinite(size) && size !== meta.size) || (response.headers.get('ETag') && version !== meta.version)) {
      response.body?.cancel().catch(() => {});
      await this.#cache.forget(url);
      throw new Error('the file changed on the server since part of it was kept in this browser; those parts were dropped: load again');
    }
    const bytes = await this.#body(response, start, len, (n) => this.#count(url, n, tensor, false));
    this.#cache.putRange(url, meta.version, start, bytes);
    return bytes;
  }

  /** GET with an inclusive byte range; HTTP errors and network failures become Errors in words. */
  async #get(url, first, last) {
    this.#check();
    let response;
    try {
      response = await fetch(url, { headers: { Range: `bytes=${first}-${last}` }, signal: this.#controller.signal, cache: 'no-store' });
    } catch (e) {
      if (this.#controller.signal.aborted) throw aborted();
      throw new Error(`network error: the server cannot be reached, the connection dropped, or the server does not let this page read it (CORS) (${e.message})`);
    }
    if (response.status === 200 || response.status === 206) return response;
    response.body?.cancel().catch(() => {});
    throw Object.assign(httpError(response), { status: response.status });
  }

  /** Exactly `len` bytes of the body (skipping to `start` when the server ignored the Range header). */
  async #body(response, start, len, onBytes) {
    const out = new Uint8Array(len);
    let skip = response.status === 200 ? start : 0;
    let got = 0;
    const reader = response.body.getReader();
    try {
      while (got < len) {
        const { done, value } = await reader.read();
        if (done) break;
        let chunk = value;
        if (skip) {
          if (chunk.length <= skip) { skip -= chunk.length; continue; }
          chunk = chunk.subarray(skip);
          skip = 0;
        }
        const n = Math.min(chunk.length, len - got);
        out.set(chunk.subarray(0, n), got);
        got += n;
        onBytes(n);
      }
    } catch (e) {
      if (this.#controller.signal.aborted) throw aborted();
      throw new Error(`download interrupted after ${got} of ${len} bytes at offset ${start}: the server went away or the network dropped (${e.message})`);
    } finally {
      reader.cancel().catch(() => {});
    }
    if (got < len) throw new Error(`file is truncated: wanted ${len} bytes at offset ${start}, the server sent ${got}`);
    return out;
  }

  // ---- progress ----

  #count(url, n, tensor, fromCache) {
    if (fromCache) this.#fromCache += n; else this.#downloaded += n;
    const file = tensor ? this.#files.get(url) : null;
    if (file) {
      file.done += n;
      if (fromCache) file.cached += n;
    }
    this.#report(file ? file.done >= file.total : false);
  }

  #report(force = false) {
    const t = now();
    if (!force && t - this.#lastReport < REPORT_EVERY_MS) return;
    this.#lastReport = t;
    try { this.#onProgress(this.snapshot()); } catch { /* a broken listener must not break loading */ }
  }

  /** Where the load stands: files, bytes, speed and ETA. */
  snapshot() {
    const t = now();
    const files = [...this.#files.values()].map((f) => ({ ...f }));
    const total = files.reduce((a, f) => a + f.total, 0);
    const done = files.reduce((a, f) => a + Math.min(f.done, f.total), 0);
    this.#samples.push({ t, downloaded: this.#downloaded, done });
    while (this.#samples.length > 2 && t - this.#samples[1].t > RATE_WINDOW_S * 1000) this.#samples.shift();
    const first = this.#samples[0];
    const span = (t - first.t) / 1000;
    const bytesPerSecond = span >= 0.25 ? (this.#downloaded - first.downloaded) / span : null;
    const doneRate = span >= 0.25 ? (done - first.done) / span : null;
    const remaining = Math.max(0, total - done);
    const current = this.#files.get(this.#current);
    return {
      phase: this.#phase,
      component: current?.component ?? null,
      file: current?.file ?? null,
      files,
      done,
      total,
      downloaded: this.#downloaded,
      fromCache: this.#fromCache,
      bytesPerSecond,
      etaSeconds: this.#phase === 'done' || (total && !remaining) ? 0 : doneRate > 0 ? remaining / doneRate : null,
      elapsedSeconds: (t - this.#started) / 1000,
      memoryBytes: this.#memoryBytes(),
      cacheWarning: this.#cache.warning,
      cacheEnabled: this.#cache.enabled,
    };
  }

  // ---- the end of a load ----

  /** After a successful load: remembers the files the server does not have, waits for the cache writes,
   * and reports the final progress. */
  async commit() {
    for (const url of this.#absent) this.#cache.putSize(url, { size: -1, version: '' });
    await this.#cache.flush();
    this.#memo.clear();
    this.#phase = 'done';
    this.#report(true);
    return this.snapshot();
  }

  /** After a failed or cancelled load: stops the other fetches, keeps what was stored (a later load
   * resumes from it) except the files whose content made the load fail (`message` names their URL): those
   * are dropped from the cache so the next load fetches them again. */
  async failed(message) {
    this.stop();
    await this.#cache.flush();
    this.#memo.clear();
    if (this.cancelled || /network error|download interrupted/.test(message)) return;
    const urls = new Set([...this.#meta.keys(), ...this.#files.keys()]);
    for (const url of urls) {
      if (message.includes(url)) await this.#cache.forget(url);
    }
  }
}
