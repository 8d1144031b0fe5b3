// What this device can run, checked before anything is downloaded: the WebGPU adapter (its name, shader-f16,
// its buffer limits), the storage this browser lets the site keep (navigator.storage.estimate), how much
// memory a WebAssembly engine may grow to, and the connection's speed for an estimate of the wait. `assess`
// holds one model variant ({ name, url, bytes, needs }, see models.js) against it and says, in words, whether
// it runs here, what would go wrong and how long the download takes. Nothing here downloads a model.

import { cpuFitProblem, formatBytes, formatLimit, probeWasmMemory } from '../lib/variants.js';

const GIB = 1024 ** 3;

// The byte formats and the memory probe live with the JS API (www/lib/variants.js), which refuses a variant
// the CPU cannot hold with the same words the picker shows.
export { formatBytes, formatLimit, probeWasmMemory };

/** 75 → "1 min 15 s". */
export function formatSeconds(s) {
  if (!Number.isFinite(s)) return '?';
  s = Math.max(0, Math.round(s));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min${s % 60 && m < 10 ? ` ${s % 60} s` : ''}`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** The WebGPU adapter: `{ available, name, shaderF16, maxBindingBytes, maxBufferBytes, fallback, reason }`. */
async function checkWebGpu(gpu) {
  if (!gpu) {
    const why = globalThis.isSecureContext === false
      ? 'WebGPU needs a secure page (https:// or localhost)'
      : 'this browser does not offer WebGPU (or it is turned off)';
    return { available: false, reason: why };
  }
  try {
    const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
    if (!adapter) return { available: false, reason: 'WebGPU is there, but it offers no graphics adapter (the GPU is blocked or unsupported)' };
    const info = adapter.info ?? {};
    const parts = [info.description, [info.vendor, info.architecture].filter(Boolean).join(' '), info.device].filter((s) => s && s.trim());
    return {
      available: true,
      name: parts[0] || 'an unnamed adapter',
      details: parts.slice(1).join(' · '),
      shaderF16: adapter.features.has('shader-f16'),
      maxBindingBytes: adapter.limits.maxStorageBufferBindingSize,
      maxBufferBytes: adapter.limits.maxBufferSize,
      fallback: Boolean(info.isFallbackAdapter ?? adapter.isFallbackAdapter),
    };
  } catch (e) {
    return { available: false, reason: `asking for a WebGPU adapter failed: ${e.message}` };
  }
}

/** `{ quota, usage, free, persisted }` from navigator.storage, or `{ unknown: true, reason }`. */
async function checkStorage(storage) {
  if (!storage?.estimate) return { unknown: true, reason: 'this browser does not say how much it can keep' };
  try {
    const { quota = NaN, usage = 0 } = await storage.estimate();
    const persisted = storage.persisted ? await storage.persisted().catch(() => false) : false;
    return { quota, usage, free: Math.max(0, quota - usage), persisted };
  } catch (e) {
    return { unknown: true, reason: `the storage estimate failed: ${e.message}` };
  }
}

/**
 * Checks this device. `{ webgpu, storage, wasmBytes, deviceMemoryGB, cores, downlinkMbps, measuredBytesPerSecond }`.
 * `measuredBytesPerSecond`: the speed of this browser's last model download here (see `rememberSpeed`).
 */
export async function checkDevice({ gpu = globalThis.navigator?.gpu, storage = globalThis.navigator?.storage } = {}) {
  const [webgpu, store] = await Promise.all([checkWebGpu(gpu), checkStorage(storage)]);
  const nav = globalThis.navigator ?? {};
  let measured = NaN;
  try { measured = Number(localStorage.getItem(SPEED_KEY)); } catch { /* no storage */ }
  return {
    webgpu,
    storage: store,
    wasmBytes: probeWasmMemory(),
    deviceMemoryGB: nav.deviceMemory ?? null,
    cores: nav.hardwareConcurrency ?? null,
    downlinkMbps: nav.connection?.downlink || null,
    measuredBytesPerSecond: measured > 0 ? measured : null,
  };
}

const SPEED_KEY = 'lambda-eclipse.download-speed';

/** Remembers a measured download speed (bytes/s) for the next estimate of the wait. */
export function rememberSpeed(bytesPerSecond) {
  if (!(bytesPerSecond > 0)) return;
  try { localStorage.setItem(SPEED_KEY, String(Math.round(bytesPerSecond))); } catch { /* no storage */ }
}

/** An assumed line speed when nothing better is known, said as such. */
const ASSUMED_MBPS = 50;

/** How long `bytes` take to download: `{ seconds, basis }` (basis: where the speed comes from, in words). */
export function estimateWait(bytes, device) {
  if (!(bytes > 0)) return { seconds: 0, basis: 'nothing to download' };
  if (device.measuredBytesPerSecond) return { seconds: bytes / device.measuredBytesPerSecond, basis: `at the ${formatBytes(device.measuredBytesPerSecond)}/s of your last download here` };
  if (device.downlinkMbps) return { seconds: bytes / (device.downlinkMbps * 125_000), basis: `at the ${device.downlinkMbps} Mbit/s your connection reports` };
  return { seconds: bytes / (ASSUMED_MBPS * 125_000), basis: `on a ${ASSUMED_MBPS} Mbit/s connection` };
}

/**
 * Holds a variant against the device: `{ verdict, lines, problems, waitSeconds, toDownload }`.
 * verdict: 'ok' (runs here), 'warn' (runs, with the caveats in `problems`), 'no' (cannot run here: `problems`
 * says why and what to do), 'unknown' (a model given by address: its size and needs are read when it loads).
 * `cachedBytes`: what this browser already keeps of it. `siblings`: the other variants of the same model
 * (models.js entries with `listed`, the variants.json entry): when the engine would compute on the CPU (no
 * WebGPU, or `device.backend` 'cpu') a variant whose listed CPU memory exceeds the WebAssembly limit is
 * refused naming those that fit. Every problem is a sentence the page shows as is.
 */
export function assess(variant, device, { cachedBytes = 0, siblings = [] } = {}) {
  const needs = variant.needs ?? {};
  const problems = [];
  const no = (text) => problems.push({ level: 'no', text });
  const warn = (text) => problems.push({ level: 'warn', text });
  const gpu = device.webgpu;
  if (variant.bytes == null) {
    return { verdict: 'unknown', problems, toDownload: null, waitSeconds: null, summary: 'Its size and needs are read from its files when it loads.' };
  }
  // The engine computes on the CPU without WebGPU, or when the page address asks for it (?backend=cpu).
  const onCpu = !gpu.available || device.backend === 'cpu';
  if (onCpu) {
    const why = gpu.available ? 'but this page is set to compute on the CPU (backend=cpu in its address)' : `which is not available here (${gpu.reason})`;
    if (needs.webgpu) no(`It needs WebGPU, ${why}, and it is too large for the CPU fallback (a web page's engine has at most ${formatLimit(device.wasmBytes || 4 * GIB)}). Open this page in a browser with WebGPU (a recent Chrome or Edge; Safari 26; Firefox 141 on Windows).`);
    else warn(gpu.available ? 'It computes on the CPU, as the page address asks (backend=cpu): much slower than WebGPU.' : `No WebGPU here (${gpu.reason}): it computes on the CPU, which is much slower.`);
  } else {
    if (gpu.fallback) warn('The WebGPU adapter is a software fallback (no GPU): it works, slowly.');
    if (needs.maxBindingBytes && gpu.maxBindingBytes < needs.maxBindingBytes) {
      warn(`${needs.maxBindingWhat ?? 'It'} needs GPU buffers of ${formatLimit(needs.maxBindingBytes)}; this adapter allows ${formatLimit(gpu.maxBindingBytes)}: choose a smaller picture size.`);
    }
  }
  if (variant.listed && onCpu) {
    const problem = cpuFitProblem(variant.listed, siblings.map((v) => v.listed).filter(Boolean), device.wasmBytes);
    if (problem) no(`${problem[0].toUpperCase()}${problem.slice(1)}.`);
  }
  if (needs.wasmBytes && device.wasmBytes < needs.wasmBytes) {
    no(`It needs ${formatLimit(needs.wasmBytes)} of engine memory; this browser allowed ${formatLimit(device.wasmBytes)}. Close other tabs, or use a desktop browser.`);
  }
  const toDownload = Math.max(0, variant.bytes - cachedBytes);
  const store = device.storage;
  if (toDownload > 0 && !store.unknown && toDownload > store.free) {
    warn(`This browser lets the page keep ${formatBytes(store.free)} more; it needs ${formatBytes(toDownload)}: it will load, but not be kept, so your next visit downloads it again. Free some disk space (or clear other sites' data) to keep it.`);
  }
  const wait = estimateWait(toDownload, device);
  // The browser's own figure is capped (Chromium: 10 Mbit/s) or a guess: a fast line's time beside it.
  const fast = wait.basis.startsWith('at the') && !wait.basis.includes('last download') ? `; ${formatSeconds(toDownload / 12.5e6)} on a 100 Mbit/s line` : '';
  const verdict = problems.some((p) => p.level === 'no') ? 'no' : problems.length ? 'warn' : 'ok';
  const where = onCpu ? 'on the CPU' : `with WebGPU on ${gpu.name}`;
  const summary = verdict === 'no' ? 'Cannot run on this device.'
    : toDownload === 0 ? `Already in this browser: starts without downloading, ${where}.`
      : `Runs on this device ${where}. Download: about ${formatSeconds(wait.seconds)} ${wait.basis}${fast}${cachedBytes > 0 ? ` (${formatBytes(cachedBytes)} already here)` : ''}.`;
  return { verdict, problems, toDownload, waitSeconds: wait.seconds, summary };
}
