// The browser cache of model files (Cache API): one entry per tensor, per header range and per small file,
// so a reload downloads nothing and an interrupted download resumes tensor by tensor. Used by the engine's
// worker (model-reader.js) and by the page (cacheUsage / clearCache, exported from lambda-eclipse.js).
//
// Keys are the file's URL with query parameters added (the Cache API ignores #fragments):
//   URL?lambda-size                                  → JSON {size, version}: the file's size (-1: HTTP 404)
//   URL?lambda-version=V&lambda-offset=S&lambda-length=L → L bytes at S of version V of the file
// V is the server's ETag when it exposes one, else the file size, so a file that changed on the server
// never mixes with parts cached from its earlier version. Lengths are in the keys: usage is summed from the
// keys alone.

export const CACHE_NAME = 'lambda-eclipse-weights-v1';

const withParams = (url, params) => `${url}${url.includes('?') ? '&' : '?'}${new URLSearchParams(params)}`;

/** Key of the remembered size of `url`. */
export const sizeKey = (url) => withParams(url, { 'lambda-size': '' });

/** Key of `len` bytes at `start` of version `version` of `url`. */
export const rangeKey = (url, version, start, len) =>
  withParams(url, { 'lambda-version': version, 'lambda-offset': start, 'lambda-length': len });

/** `{ url, length }` of a cache key (length 0 for size entries). */
function parseKey(key) {
  const u = new URL(key);
  const length = Number(u.searchParams.get('lambda-length') ?? 0);
  for (const p of ['lambda-size', 'lambda-version', 'lambda-offset', 'lambda-length']) u.searchParams.delete(p);
  return { url: u.href.replace(/\?$/, ''), length: Number.isFinite(length) ? length : 0 };
}

const hasCaches = () => typeof caches !== 'undefined';

/**
 * Bytes of model files kept in this browser: `{ bytes, entries, files, available }`; `bytes` counts only the
 * URLs that start with one of `prefixes` when given. `available` is false where the Cache API is missing
 * (a page not served from https:// or localhost).
 */
export async function cacheUsage(prefixes) {
  if (!hasCaches()) return { bytes: 0, entries: 0, files: 0, available: false };
  if (!(await caches.has(CACHE_NAME))) return { bytes: 0, entries: 0, files: 0, available: true };
  const keys = await (await caches.open(CACHE_NAME)).keys();
  let bytes = 0;
  let entries = 0;
  const files = new Set();
  for (const request of keys) {
    const { url, length } = parseKey(request.url);
    if (prefixes && !prefixes.some((p) => url.startsWith(p))) continue;
    bytes += length;
    entries += 1;
    files.add(url);
  }
  return { bytes, entries, files: files.size, available: true };
}

/** Deletes every cached model file; resolves to the bytes that were freed. */
export async function clearCache() {
  if (!hasCaches()) return 0;
  const { bytes } = await cacheUsage();
  await caches.delete(CACHE_NAME);
  return bytes;
}

const describe = (e) => (e && e.message ? e.message : String(e));

/**
 * The cache as the loader uses it. Reads never fail (a broken entry is a miss); a write that fails turns the
 * cache off for the rest of the load and sets `warning` (quota exceeded: the model keeps loading uncached).
 */
export class WeightCache {
  #cache = null;
  #enabled;
  #pending = new Set();
  /** Why the model is not being kept in this browser, or null. */
  warning = null;
  /** Entries that failed the size check and were dropped (then fetched again). */
  rejected = 0;

  constructor(enabled = true) {
    this.#enabled = enabled && hasCaches();
    if (enabled && !hasCaches()) {
      this.warning = 'this page has no browser cache (the Cache API needs https:// or localhost): the model is not kept for next time';
    }
  }

  get enabled() { return this.#enabled; }

  async #open() {
    this.#cache ??= await caches.open(CACHE_NAME);
    return this.#cache;
  }

  /** The remembered `{ size, version }` of `url`, or null. */
  async getSize(url) {
    if (!this.#enabled) return null;
    try {
      const hit = await (await this.#open()).match(sizeKey(url));
      if (!hit) return null;
      const meta = await hit.json();
      return Number.isInteger(meta?.size) && typeof meta.version === 'string' ? meta : null;
    } catch {
      return null;
    }
  }

  putSize(url, meta) {
    this.#put(sizeKey(url), new Response(JSON.stringify(meta), { headers: { 'Content-Type': 'application/json' } }));
  }

  /** The cached bytes, or null when absent or of the wrong size (such an entry is deleted: refetch it). */
  async getRange(url, version, start, len) {
    if (!this.#enabled) return null;
    const key = rangeKey(url, version, start, len);
    try {
      const cache = await this.#open();
      const hit = await cache.match(key);
      if (!hit) return null;
      const bytes = new Uint8Array(await hit.arrayBuffer());
      if (bytes.length === len) return bytes;
      this.rejected += 1;
      await cache.delete(key);
      return null;
    } catch {
      return null;
    }
  }

  /** Stores the bytes in the background (the Response copies them); `flush()` waits for all writes. */
  putRange(url, version, start, bytes) {
    this.#put(rangeKey(url, version, start, bytes.length), new Response(bytes, {
      headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(bytes.length) },
    }));
  }

  /** Drops every entry of `url` (its size and all its parts). */
  async forget(url) {
    if (!hasCaches() || !(await caches.has(CACHE_NAME))) return;
    const cache = await this.#open();
    for (const request of await cache.keys()) {
      if (parseKey(request.url).url === url) await cache.delete(request);
    }
  }

  #put(key, response) {
    if (!this.#enabled) return;
    const write = this.#open()
      .then((cache) => cache.put(key, response))
      .catch((e) => {
        if (!this.#enabled) return;
        this.#enabled = false;
        this.warning = e?.name === 'QuotaExceededError'
          ? 'the browser storage is full (quota exceeded): the model keeps loading but is not kept for next time'
          : `the browser cache refused to store the model (${describe(e)}): it keeps loading but is not kept for next time`;
      })
      .finally(() => this.#pending.delete(write));
    this.#pending.add(write);
  }

  /** Waits for the writes in progress. */
  async flush() {
    while (this.#pending.size) await Promise.allSettled([...this.#pending]);
  }
}
