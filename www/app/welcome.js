// The first screen: what this device can run (checkDevice) and what to download (a picker per kind of model:
// the λ model, the decoder). Each variant row shows its download size, what this browser already keeps of it,
// whether it runs here — a variant that cannot is shown disabled with the reason and what to do, never left
// out — and an estimate of the wait. Nothing downloads from here: the Load button of the load panel does.
import { cacheUsage } from '../lib/weight-cache.js';
import { resolveDecoderManifest, resolveManifest } from '../lib/lambda-eclipse.js';
import { assess, formatBytes, formatLimit } from '../ui/capability.js';

const MIB = 1024 ** 2;

function fact(list, term, value, note) {
  const dt = document.createElement('dt');
  dt.textContent = term;
  const dd = document.createElement('dd');
  dd.textContent = value;
  if (note) dd.append(Object.assign(document.createElement('span'), { className: 'note', textContent: note }));
  list.append(dt, dd);
}

/** The largest square picture the real decoder makes with this buffer limit (the MoVQ at 512 px needs 256 MiB;
 * the need grows with the pixels), in multiples of 64. */
export function largestSquare(maxBindingBytes) {
  return Math.floor((512 * Math.sqrt(maxBindingBytes / (256 * MIB))) / 64) * 64;
}

/** Fills the device card (`list`: a <dl>) from checkDevice's answer, in words. */
export function renderDeviceFacts(list, device) {
  list.replaceChildren();
  const gpu = device.webgpu;
  if (gpu.available) {
    fact(list, 'Graphics (WebGPU)', gpu.name, [gpu.details, gpu.fallback ? 'a software fallback, without a GPU: slow' : ''].filter(Boolean).join(' · '));
    fact(list, 'Half-precision shaders', gpu.shaderF16 ? 'yes (shader-f16)' : 'no', gpu.shaderF16 ? '' : 'f16 weights are unpacked inside the shaders instead: works, a little slower');
    const side = largestSquare(gpu.maxBindingBytes);
    fact(list, 'Largest GPU buffer', formatLimit(gpu.maxBindingBytes), side >= 64 ? `pictures up to about ${side}×${side} with the real decoder` : 'too small for the real decoder');
  } else {
    fact(list, 'Graphics (WebGPU)', 'not available', `${gpu.reason}. Small models still run on the CPU, slowly.`);
  }
  const s = device.storage;
  if (s.unknown) fact(list, 'Storage for models', 'unknown', s.reason);
  else fact(list, 'Storage for models', `${formatBytes(s.free)} free for this page`, `${formatBytes(s.usage)} used of the ${formatBytes(s.quota)} this browser allows${s.persisted ? '; kept even when the disk fills' : ''}`);
  fact(list, 'Engine memory (WebAssembly)', device.wasmBytes ? `up to ${formatLimit(device.wasmBytes)}` : 'could not be reserved', 'the engine needs about 256 MiB when the model is on the GPU');
  if (device.deviceMemoryGB) fact(list, 'Memory', `${device.deviceMemoryGB >= 8 ? 'at least ' : 'about '}${device.deviceMemoryGB} GB`, device.cores ? `${device.cores} processor threads` : '');
  fact(list, 'Connection', device.measuredBytesPerSecond ? `${formatBytes(device.measuredBytesPerSecond)}/s` : device.downlinkMbps ? `about ${device.downlinkMbps} Mbit/s` : 'unknown',
    device.measuredBytesPerSecond ? 'measured on your last download here' : device.downlinkMbps ? 'as the browser reports it (it caps the figure at 10)' : 'estimates below assume 50 Mbit/s');
}

let uid = 0;

/**
 * One kind of model's choices in `fieldset`: `variants` (models.js entries; plus `{ id: 'none', … }` for "no
 * download") held against `device`. `selected` is the chosen entry (null when none can run); 'change' fires
 * when it changes, 'choose' when the user picked one. `cacheKind`: 'model' | 'decoder' (how a variant's URL maps to cached files).
 */
export class VariantPicker extends EventTarget {
  constructor(fieldset, { name, variants, device, cacheKind, selectedId }) {
    super();
    Object.assign(this, { fieldset, name, variants, device, cacheKind });
    this.selectedId = selectedId ?? variants[0]?.id;
    this.assessments = new Map();
  }

  get selected() { return this.variants.find((v) => v.id === this.selectedId && this.assessments.get(v.id)?.verdict !== 'no') ?? null; }

  /** What this browser keeps of `variant` (bytes). */
  async #cached(variant) {
    if (!variant.url) return 0;
    try {
      const folders = this.cacheKind === 'decoder' ? resolveDecoderManifest(variant.url) : resolveManifest(variant.url);
      return (await cacheUsage(Object.values(folders))).bytes;
    } catch { return 0; }
  }

  /** Re-assesses every variant (cache contents change after a load or a clear) and renders the rows. */
  async refresh() {
    const cached = await Promise.all(this.variants.map((v) => this.#cached(v)));
    this.variants.forEach((v, i) => {
      const a = v.url === null ? { verdict: 'ok', problems: [], summary: 'Nothing to download.' } : assess(v, this.device, { cachedBytes: cached[i], siblings: this.variants });
      this.assessments.set(v.id, { ...a, cachedBytes: cached[i] });
    });
    // The first variant that runs here, when the chosen one cannot.
    if (!this.selected) this.selectedId = this.variants.find((v) => this.assessments.get(v.id).verdict !== 'no')?.id ?? null;
    this.#render();
    this.dispatchEvent(new Event('change'));
  }

  #render() {
    const legend = this.fieldset.querySelector('legend');
    const rows = this.variants.map((v) => {
      const a = this.assessments.get(v.id);
      const id = `${this.name}-${v.id}-${++uid}`;
      const row = document.createElement('div');
      row.className = 'variant';
      row.dataset.variant = v.id;
      row.dataset.verdict = a.verdict;
      row.dataset.cached = String(a.cachedBytes > 0);
      const size = v.url === null ? '' : v.bytes == null ? 'size: read when it loads' : `${formatBytes(v.bytes)} download`;
      row.innerHTML = `<input type="radio" name="${this.name}" id="${id}" aria-describedby="${id}-desc">
        <label for="${id}"><span class="name"></span><span class="size"></span></label>
        <div class="variant-desc" id="${id}-desc"><p class="verdict ${a.verdict === 'unknown' ? 'warn' : a.verdict}"></p><ul class="problems"></ul><p class="note"></p></div>`;
      row.querySelector('.name').textContent = v.name;
      row.querySelector('.size').textContent = size;
      row.querySelector('.verdict').textContent = a.summary;
      row.querySelector('.problems').replaceChildren(...a.problems.map((p) => Object.assign(document.createElement('li'), { className: p.level, textContent: p.text })));
      if (!a.problems.length) row.querySelector('.problems').remove();
      const notes = [v.note, v.needs?.gpuBytes ? `Holds about ${formatBytes(v.needs.gpuBytes)} on the GPU.` : '', a.cachedBytes > 0 ? `${formatBytes(a.cachedBytes)} of it already in this browser.` : ''].filter(Boolean);
      row.querySelector('p.note').textContent = notes.join(' ');
      const radio = row.querySelector('input');
      radio.value = v.id;
      radio.checked = v.id === this.selectedId;
      radio.disabled = a.verdict === 'no';
      radio.addEventListener('change', () => { if (radio.checked) { this.selectedId = v.id; this.dispatchEvent(new Event('change')); this.dispatchEvent(new Event('choose')); } });
      return row;
    });
    this.fieldset.replaceChildren(legend, ...rows);
  }

  /** Disables (during a load) or enables the choice. */
  set disabled(on) { this.fieldset.disabled = on; }
}
