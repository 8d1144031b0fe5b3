// A model's variants: the original and its quantized copies (`lambda-eclipse quantize --list`), listed in
// `variants.json` at the model's root:
//   { "variants": { "original": { "url": "./", "bytes": …, "cpuBytes": … },
//                   "q8_0": { "url": "q8_0/", "type": "q8_0", "bytes": …, "cpuBytes": … }, … } }
// URLs are relative to the model's base. `bytes` is the download, `cpuBytes` the memory the CPU backend needs
// for the weights (f16/bf16 files become f32 there, ggml blocks stay as stored; plus one tensor's f32 values
// while it loads: src/quantize.rs `Report::cpu_bytes`). A manifest object may carry the listing itself
// (`variants: { … }`) or its URL (`variants: 'https://…/variants.json'`); a base URL's listing is looked up
// only when a variant is asked for, so a plain load fetches nothing more.

export const LISTING_FILE = 'variants.json';

const MIB = 1024 ** 2;
const GIB = 1024 ** 3;

/** What the wasm engine holds besides the weights when it computes on the CPU: its code and data, the
 * tokenizer, the reader's buffers and the activations (measured on the tiny model: ~20 MB besides its
 * weights; the bigG vision tower's activations at batch 1 add ~30 MB). */
export const ENGINE_BYTES = 64 * MIB;

/** 1234567 → "1.2 MB" (SI units, like download tools). */
export function formatBytes(n) {
  if (!Number.isFinite(n)) return '?';
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (Math.abs(n) >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
  return `${i ? n.toFixed(1) : Math.round(n)} ${units[i]}`;
}

/** Binary sizes for limits that are powers of two: 134217728 → "128 MiB", 1073741824 → "1 GiB". */
export function formatLimit(n) {
  if (!Number.isFinite(n)) return '?';
  if (n >= GIB) return `${+(n / GIB).toFixed(2)} GiB`;
  return `${+(n / MIB).toFixed(1)} MiB`;
}

/**
 * The most memory a WebAssembly instance may grow to here (wasm32 ends at 4 GiB; phones and 32-bit browsers
 * give less). Probed by growing a throw-away `WebAssembly.Memory`: the pages are reserved, not written, and
 * the memory is dropped at once. Below 4 GiB the limit is narrowed to 1 MiB between the largest size that
 * worked and the next that did not (a dozen tries at most), so that a variant's fit is judged on the limit.
 */
export function probeWasmMemory() {
  const PAGE = 65536;
  const works = (bytes) => {
    const pages = Math.min(65536, Math.floor(bytes / PAGE));
    try {
      const memory = new WebAssembly.Memory({ initial: 1, maximum: pages });
      if (pages > 1) memory.grow(pages - 1);
      return true;
    } catch { return false; }
  };
  const steps = [4 * GIB, 3 * GIB, 2 * GIB, GIB, 512 * MIB, 256 * MIB, 128 * MIB, 64 * MIB, 32 * MIB, 16 * MIB];
  const i = steps.findIndex(works);
  if (i < 0) return 0;
  if (i === 0) return steps[0];
  let [lo, hi] = [steps[i] / MIB, steps[i - 1] / MIB];
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (works(mid * MIB)) lo = mid; else hi = mid;
  }
  return lo * MIB;
}

const absolute = (u, base = globalThis.location?.href) => new URL(u, base).href;
const folderUrl = (u) => absolute(u.endsWith('/') ? u : `${u}/`);

/** Where a `model` option's listing is (or the listing object itself), or null when it cannot have one. */
function listingSource(model) {
  if (typeof model === 'string' && model) return { url: `${folderUrl(model)}${LISTING_FILE}`, base: folderUrl(model) };
  if (model && typeof model === 'object') {
    const base = model.base ? folderUrl(model.base) : globalThis.location?.href;
    if (typeof model.variants === 'string') return { url: absolute(model.variants, base), base: null };
    if (model.variants && typeof model.variants === 'object') return { listing: { variants: model.variants }, base };
    if (model.base) return { url: `${base}${LISTING_FILE}`, base };
  }
  return null;
}

/** The listing's entries, checked: `[{ id, url (absolute folder URL), type, bytes, cpuBytes }]`, the original
 * first, then the larger downloads first. `where` names the listing in errors. */
function entriesOf(listing, base, where) {
  const variants = listing?.variants;
  if (!variants || typeof variants !== 'object' || Array.isArray(variants)) throw new Error(`${where}: no \`variants\` object`);
  const entries = Object.entries(variants).map(([id, v]) => {
    if (!v || typeof v.url !== 'string' || !v.url) throw new Error(`${where}: variant \`${id}\` has no \`url\``);
    for (const key of ['bytes', 'cpuBytes']) {
      if (v[key] !== undefined && !(Number.isFinite(v[key]) && v[key] >= 0)) throw new Error(`${where}: variant \`${id}\`: \`${key}\` is not a byte count`);
    }
    return { id, url: folderUrl(absolute(v.url, base)), type: v.type ?? (id === 'original' ? null : id), bytes: v.bytes ?? null, cpuBytes: v.cpuBytes ?? null };
  });
  if (!entries.some((e) => e.id === 'original')) entries.push({ id: 'original', url: base ?? null, type: null, bytes: null, cpuBytes: null });
  return entries.sort((a, b) => (a.id === 'original' ? -1 : b.id === 'original' ? 1 : (b.bytes ?? 0) - (a.bytes ?? 0)));
}

/**
 * The variants a `model` option (a base URL or a manifest, as `load` takes it) lists: the entries of its
 * `variants.json` (see the top of this file), or null when it has none (a 404: a model without copies).
 * Rejects with the URL and the reason when the listing cannot be read or is malformed.
 */
export async function listVariants(model, { signal } = {}) {
  const source = listingSource(model);
  if (!source) return null;
  if (source.listing) return entriesOf(source.listing, source.base, 'the manifest\'s variants');
  let response;
  try {
    response = await fetch(source.url, { signal });
  } catch (e) {
    if (e?.name === 'AbortError') throw e;
    throw new Error(`${source.url}: the variants listing could not be fetched (${e.message})`);
  }
  if (response.status === 404) return null;
  if (!response.ok) throw new Error(`${source.url}: the variants listing answered HTTP ${response.status}`);
  let listing;
  try { listing = await response.json(); } catch (e) { throw new Error(`${source.url}: the variants listing is not JSON (${e.message})`); }
  return entriesOf(listing, source.base ?? new URL('./', source.url).href, source.url);
}

/**
 * `variant` of `model` → `{ model, entry, variants }`: what `load` loads (the copy's folder URL, or `model`
 * itself for 'original' / none), the listing's entry (null without a variant) and every entry. An unknown
 * variant is refused naming the ones that exist.
 */
export async function resolveVariant(model, variant, { signal } = {}) {
  if (variant === undefined || variant === null || variant === '') return { model, entry: null, variants: null };
  if (typeof variant !== 'string') throw new TypeError('variant must be a string such as "q8_0", or "original"');
  const variants = await listVariants(model, { signal });
  const what = typeof model === 'string' ? model : model?.base ?? 'the model';
  if (!variants) {
    if (variant === 'original') return { model, entry: null, variants: null };
    throw new Error(`unknown variant "${variant}": ${what} lists no variants (no ${LISTING_FILE} at its root), so only "original" exists`);
  }
  const entry = variants.find((v) => v.id === variant);
  if (!entry) throw new Error(`unknown variant "${variant}": ${what} lists ${variants.map((v) => `"${v.id}"`).join(', ')}`);
  return { model: entry.id === 'original' ? model : entry.url, entry, variants };
}

/** Memory the CPU backend needs for `entry` (null when its listing does not say). */
export const cpuNeed = (entry) => (entry?.cpuBytes == null ? null : entry.cpuBytes + ENGINE_BYTES);

const label = (entry) => (entry.id === 'original' ? 'the original' : entry.id);

/**
 * Why `entry` cannot compute on the CPU with `limit` bytes of wasm memory, naming the variants of `variants`
 * that fit — "the original needs ~10.5 GB on the CPU, more than this browser's 4 GiB; q8_0 (2.9 GB) fits" —
 * or null when it fits (or its need is not listed).
 */
export function cpuFitProblem(entry, variants, limit) {
  const need = cpuNeed(entry);
  if (need == null || !(limit > 0) || need <= limit) return null;
  const fits = (variants ?? []).filter((v) => v !== entry && cpuNeed(v) != null && cpuNeed(v) <= limit);
  const instead = fits.length
    ? `${fits.map((v) => `${v.id} (${formatBytes(v.bytes)} download, ~${formatBytes(cpuNeed(v))} on the CPU)`).join(' or ')} ${fits.length > 1 ? 'fit' : 'fits'}`
    : 'none of its variants fits: use a browser with WebGPU';
  return `${label(entry)} needs ~${formatBytes(need)} on the CPU, more than this browser's ${formatLimit(limit)} of WebAssembly memory; ${instead}`;
}

/** Whether a load with `backend` computes on the CPU: asked for, or 'auto' without a WebGPU adapter. */
export async function computesOnCpu(backend, gpu = globalThis.navigator?.gpu) {
  if (backend === 'cpu') return true;
  if (backend !== 'auto' || !gpu) return backend === 'auto';
  try { return !(await gpu.requestAdapter({ powerPreference: 'high-performance' })); } catch { return true; }
}
