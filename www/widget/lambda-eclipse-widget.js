// <lambda-eclipse-widget>: λ-ECLIPSE on any page with one script tag.
//
//   <script type="module" src="https://your.host/lambda-eclipse/www/lambda-eclipse-widget.js"></script>
//   <lambda-eclipse-widget model="https://…/model/" endpoint="https://decoder.example" token="…"></lambda-eclipse-widget>
//
// Attributes: model, prior (model folders; default: the real Hugging Face files), variant (one of the copies the
// model's variants.json lists, e.g. q8_0, or original: when it lists any, the widget offers them with their
// download size and remembers the choice, as the app does; the attribute is the starting choice), backend (auto | webgpu |
// cpu), autoload (load at once instead of on the first click), endpoint + token (a decoder endpoint: enables
// "Decode"), decoder (a decoder folder, or empty for Kandinsky 2.2 on Hugging Face: enables "Decode locally",
// on this device) + decoder-weights (f16 | int8 | f32), prompt, seed, width, height, steps, guidance, scheduler
// (decoder settings). Shadow DOM with its own styles; its workers and wasm resolve against this module's URL
// (another origin works when it sends CORS headers). Model work runs in Web Workers (the decoder in its own).
// Events: lambda-ready, lambda-result, lambda-decoded, lambda-error (detail: the engine description, the
// result, { blob, … }, { message }). Typed in lambda-eclipse-widget.d.ts.
import { load } from '../lib/lambda-eclipse.js';
import { decode } from '../lib/decoder-client.js';
import { LocalDecoder, drawRgba, pngOf, stepText, timingText } from '../ui/local-decoder.js';
import { SubjectList, SUBJECTS_CSS, bindKeywordCheck } from '../ui/subjects.js';
import { formatBytes } from '../ui/capability.js';
import { MODEL_VARIANTS, rememberVariant, rememberedVariant } from '../ui/models.js';
import { listVariants } from '../lib/variants.js';
import { withAdvice } from '../ui/advice.js';

// The shared look: design tokens and control styles (www/ui/tokens.css, also the page's), linked inside the
// shadow root from next to this module, so it works from any origin and bundlers copy it as an asset.
const TOKENS_URL = new URL('../ui/tokens.css', import.meta.url).href;

const CSS = `
:host { display: block; font: 15px/1.5 var(--le-font, system-ui, sans-serif); color: var(--le-text, #1a1e29);
  background: var(--le-surface, #fff); border: 1px solid var(--le-border, #cfd4df); border-radius: var(--le-radius, 12px);
  box-shadow: var(--le-shadow, none); padding: 1rem; max-width: 40rem; box-sizing: border-box; }
:host([hidden]) { display: none; }
h2 { font-size: 1.1rem; margin: 0 0 .5rem; }
h2 small { font-weight: 400; color: var(--le-muted, #4f5769); font-size: .8em; }
label { display: block; margin: .4rem 0; }
label.field { font-weight: 600; }
input.prompt { width: 100%; box-sizing: border-box; font-weight: 400; margin-top: .2rem; }
.row { display: flex; gap: .5rem; align-items: flex-end; flex-wrap: wrap; margin: .6rem 0; }
.row label { margin: 0; font-size: .85rem; color: var(--le-muted, #4f5769); display: flex; flex-direction: column; }
.status { margin: .5rem 0; }
.warnings { color: var(--le-warn, #6e4300); margin: .25rem 0; padding-left: 1.2rem; }
.warnings:empty { display: none; }
.timings { font-size: .85em; color: var(--le-muted, #4f5769); margin: 0; }
figure { margin: .5rem 0; }
figure img { display: block; width: 100%; max-width: 28rem; margin: 0 auto; border-radius: var(--le-radius-sm, 8px); image-rendering: pixelated; background: var(--le-surface-2, #eee); }
figcaption { font-size: .85em; color: var(--le-muted, #4f5769); text-align: center; margin-top: .3rem; }
.progress-row { display: flex; gap: .6rem; align-items: center; }
.decode-step { font-size: .85em; font-variant-numeric: tabular-nums; color: var(--le-muted, #4f5769); margin: .25rem 0; }
.decode-step:empty { display: none; }
canvas.preview { width: 64px; image-rendering: pixelated; border-radius: 6px; display: block; }
details.panel { margin: .5rem 0 0; }
details.panel > .panel-body { padding: 0 1rem .75rem; }
[hidden] { display: none !important; }
`;

const TEMPLATE = `
<h2>λ-ECLIPSE <small class="backend"></small></h2>
<div class="status" role="status">Photos stay on this device.</div>
<progress max="1" value="0" hidden aria-label="Model download"></progress>
<div class="row"><label class="variant-choice" hidden>Variant <select class="variant"></select></label><button type="button" class="load primary">Load the model</button></div>
<figure hidden><img class="result-image" alt="decoded image"><figcaption></figcaption></figure>
<div class="progress-row"><canvas class="preview" hidden role="img" aria-label="The picture forming (a rough preview)"></canvas><p class="decode-step" aria-live="polite"></p></div>
<ul class="warnings"></ul>
<form class="compose" hidden>
  <label class="field">Prompt <input class="prompt" autocomplete="off"></label>
  <p class="prompt-preview"></p>
  <ul class="keyword-warnings" aria-live="polite"></ul>
  <div class="subjects" role="group" aria-label="Subjects: a keyword of the prompt and its photo"></div>
  <div class="row">
    <button type="button" class="add">Add a subject</button>
    <label>Seed <input class="seed" type="number" min="0" step="1" value="42" style="width:7rem"></label>
  </div>
  <div class="row"><button type="submit" class="compute primary">Compute</button><button type="button" class="decode" hidden>Decode</button>
    <button type="button" class="decode-local" hidden>Decode locally</button><button type="button" class="cancel-decode" hidden>Cancel</button></div>
</form>
<details class="panel details" hidden><summary>Details <span class="summary-note">timings</span></summary><div class="panel-body"><p class="timings"></p></div></details>
`;

export class LambdaEclipseWidget extends HTMLElement {
  static observedAttributes = ['endpoint', 'decoder', 'prompt', 'seed'];
  #root; #engine = null; #loading = null; #list = null; #result = null; #checkKeywords = null;
  #localDecoder = new LocalDecoder(); #decodeController = null;

  constructor() {
    super();
    this.#root = this.attachShadow({ mode: 'open' });
    this.#root.innerHTML = `<link rel="stylesheet" href="${TOKENS_URL}"><style>${CSS}${SUBJECTS_CSS}</style>${TEMPLATE}`;
    this.#q('.load').addEventListener('click', () => this.load().catch(() => {}));
    this.#q('.compose').addEventListener('submit', (e) => { e.preventDefault(); this.compute().catch(() => {}); });
    this.#q('.decode').addEventListener('click', () => this.decode().catch(() => {}));
    this.#q('.decode-local').addEventListener('click', () => this.decodeLocally().catch(() => {}));
    this.#q('.cancel-decode').addEventListener('click', () => this.#decodeController?.abort());
    this.#q('.add').addEventListener('click', () => this.#list.add());
  }

  connectedCallback() {
    // The default model is the multi-GB one: the button says what a click downloads.
    if (!this.getAttribute('model') && !this.#engine) this.#q('.load').textContent = `Load the model (${formatBytes(MODEL_VARIANTS[0].bytes)} download, once)`;
    if (this.getAttribute('model') && !this.#engine) this.#offerVariants().catch(() => {});
    this.#q('.prompt').value ||= this.getAttribute('prompt') ?? 'a cat wearing glasses at a park';
    if (this.hasAttribute('seed')) this.#q('.seed').value = this.getAttribute('seed');
    this.#q('.decode').hidden = !this.getAttribute('endpoint');
    this.#q('.decode-local').hidden = !this.hasAttribute('decoder');
    if (this.hasAttribute('autoload')) this.load().catch(() => {});
  }

  attributeChangedCallback(name, _old, value) {
    if (name === 'endpoint') this.#q('.decode').hidden = !value;
    if (name === 'decoder') this.#q('.decode-local').hidden = value === null;
    if (name === 'prompt' && value !== null && !this.#engine) this.#q('.prompt').value = value;
    if (name === 'seed' && value !== null) this.#q('.seed').value = value;
  }

  /** The loaded engine (see lambda-eclipse.d.ts), or null before `load()` finished. */
  get engine() { return this.#engine; }
  /** The last result of `compute()`, or null. */
  get result() { return this.#result; }

  #q(sel) { return this.#root.querySelector(sel); }

  #status(text, kind = '') {
    const el = this.#q('.status');
    el.textContent = text;
    el.className = `status ${kind}`;
    this.dataset.status = kind || 'busy';
  }

  #fail(prefix, e) {
    this.#status(`${prefix}: ${withAdvice(e.message)}`, 'error');
    this.dispatchEvent(new CustomEvent('lambda-error', { detail: { message: e.message } }));
    throw e;
  }

  /** The listed variants of the `model` (variants.json), offered in a chooser with their download sizes:
   * starts from the `variant` attribute, else the choice remembered for that model, else the original. */
  async #offerVariants() {
    const model = this.getAttribute('model');
    const listed = await listVariants(model);
    if (!listed || this.#engine || this.#loading) return;
    const select = this.#q('select.variant');
    const options = listed.map((v) => Object.assign(document.createElement('option'), { value: v.id, textContent: `${v.id}${v.bytes != null ? ` — ${formatBytes(v.bytes)}` : ''}` }));
    select.replaceChildren(...options);
    const wanted = [this.getAttribute('variant'), rememberedVariant(model), 'original'].find((id) => id && listed.some((v) => v.id === id));
    select.value = wanted ?? listed[0].id;
    const label = () => {
      const v = listed.find((x) => x.id === select.value);
      this.#q('.load').textContent = v?.bytes != null ? `Load ${v.id} (${formatBytes(v.bytes)} download, once)` : 'Load the model';
    };
    select.onchange = () => { rememberVariant(model, select.value); label(); };
    label();
    this.#q('.variant-choice').hidden = false;
  }

  /** The variant `load()` asks for: the chooser's, else the `variant` attribute (undefined: the model itself). */
  get variant() {
    const choice = this.#q('.variant-choice');
    return (!choice.hidden && this.#q('select.variant').value) || this.getAttribute('variant') || undefined;
  }

  /** Loads the model (once); resolves the engine. */
  load() {
    this.#loading ??= this.#load();
    return this.#loading;
  }

  async #load() {
    const model = this.getAttribute('model') || undefined;
    const variant = this.variant;
    const prior = this.getAttribute('prior') || undefined;
    const backend = this.getAttribute('backend') || 'auto';
    this.#q('.load').disabled = true;
    const progress = this.#q('progress');
    progress.hidden = false;
    this.#q('select.variant').disabled = true;
    this.#status(`Loading the model${variant ? ` (${variant})` : ''} from ${model || 'Hugging Face'}…`);
    const totals = {};
    try {
      this.#engine = await load({
        model, variant, prior, backend,
        onProgress: ({ component, done, total }) => {
          totals[component] = [done, total];
          const [d, t] = Object.values(totals).reduce(([a, b], [x, y]) => [a + x, b + y], [0, 0]);
          progress.value = t ? d / t : 0;
        },
      });
    } catch (e) {
      this.#loading = null;
      this.#q('.load').disabled = false;
      this.#q('select.variant').disabled = false;
      progress.hidden = true;
      this.#fail('The model failed to load', e);
    }
    progress.hidden = true;
    this.#q('.load').hidden = true;
    this.#q('.variant-choice').hidden = true;
    if (model && this.#engine.variant) rememberVariant(model, this.#engine.variant);
    const info = { ...(await this.#engine.describe()), variant: this.#engine.variant };
    this.#q('.backend').textContent = `${info.backend === 'webgpu' ? `· WebGPU${info.adapter ? ` (${info.adapter})` : ''}` : '· CPU (wasm)'}${info.variant ? ` · ${info.variant}` : ''}`;
    this.#list = new SubjectList(this.#q('.subjects'));
    this.#list.attachPaste(this);
    this.#list.add('cat');
    this.#list.add('glasses');
    this.#checkKeywords = bindKeywordCheck({ engine: this.#engine, prompt: this.#q('.prompt'), list: this.#list, preview: this.#q('.prompt-preview'), warnings: this.#q('.keyword-warnings') });
    this.#q('.compose').hidden = false;
    this.#status(info.backend === 'cpu' ? `Model loaded. WebGPU is not in use (${info.fallbackReason || 'CPU chosen'}): computing on the CPU, slower.` : 'Model loaded.', info.backend === 'cpu' ? 'warn' : 'ok');
    this.dispatchEvent(new CustomEvent('lambda-ready', { detail: info }));
    return this.#engine;
  }

  /** Computes the embedding of the prompt and subjects; resolves the result (see PriorResult). */
  async compute() {
    const engine = await this.load();
    const { subjects, problems } = this.#list.collect();
    if (problems.length) this.#fail('Cannot compute', new Error(problems.join(' ')));
    const compute = this.#q('.compute');
    compute.disabled = true;
    this.#status('Computing…');
    try {
      await Promise.all([this.#list.settled(), this.#checkKeywords()]);
      const r = await engine.prior({ prompt: this.#q('.prompt').value, subjects, seed: Number(this.#q('.seed').value) });
      this.#result = r;
      this.#q('.warnings').replaceChildren(...r.warnings.map((w) => Object.assign(document.createElement('li'), { textContent: w })));
      const total = Object.values(r.timings).reduce((a, b) => a + b, 0);
      this.#q('.details').hidden = false;
      this.#q('.timings').textContent = `${Object.entries(r.timings).map(([k, v]) => `${k} ${v.toFixed(0)} ms`).join(' · ')} · total ${total.toFixed(0)} ms`;
      this.#status(`Embedding ready (${r.imageEmbeds.length} values).${this.getAttribute('endpoint') || this.hasAttribute('decoder') ? ' Decode it into an image.' : ''}`, r.warnings.length ? 'warn' : 'ok');
      this.dispatchEvent(new CustomEvent('lambda-result', { detail: r }));
      return r;
    } catch (e) {
      this.#fail('Could not compute', e);
    } finally {
      compute.disabled = false;
    }
  }

  /** Sends the last result to the `endpoint` decoder and shows the image; resolves `{ blob, seed, decodeMs }`. */
  async decode() {
    const endpoint = this.getAttribute('endpoint');
    if (!endpoint) this.#fail('Cannot decode', new Error('the widget has no endpoint attribute'));
    const r = this.#result ?? (await this.compute());
    const settings = this.#decodeSettings();
    const button = this.#q('.decode');
    button.disabled = true;
    this.#status(`Decoding on ${endpoint}…`);
    try {
      const out = await decode({ endpoint, token: this.getAttribute('token') || undefined, imageEmbeds: r.imageEmbeds, negativeImageEmbeds: r.negativeImageEmbeds, ...settings });
      await this.#showImage(out.blob, `${settings.width}×${settings.height}, ${settings.steps} steps, seed ${out.seed}, decoded in ${Math.round(out.decodeMs)} ms`);
      this.#status('Decoded.', 'ok');
      this.dispatchEvent(new CustomEvent('lambda-decoded', { detail: out }));
      return out;
    } catch (e) {
      this.#fail('Could not decode', e);
    } finally {
      button.disabled = false;
    }
  }

  /** The decoder settings from the attributes and the seed box. */
  #decodeSettings() {
    const num = (name, dflt) => (this.hasAttribute(name) ? Number(this.getAttribute(name)) : dflt);
    return { seed: Number(this.#q('.seed').value), width: num('width', 512), height: num('height', 512), steps: num('steps', 50), guidance: num('guidance', 4) };
  }

  async #showImage(blob, caption) {
    const img = this.#q('.result-image');
    if (img.src) URL.revokeObjectURL(img.src);
    img.src = URL.createObjectURL(blob);
    img.alt = `The picture made from “${this.#q('.prompt').value}”`;
    await img.decode();
    this.#q('figcaption').textContent = caption;
    this.#q('figure').hidden = false;
  }

  /**
   * Decodes the last result (computing one first if needed) on this device with the `decoder` attribute's
   * decoder (loaded on first use, in its own worker), showing the download, each step and a preview; Cancel
   * stops it. Resolves `{ blob, seed, decodeMs, steps, msPerStep, local: true }`.
   */
  async decodeLocally() {
    if (!this.hasAttribute('decoder')) this.#fail('Cannot decode', new Error('the widget has no decoder attribute'));
    if (this.#decodeController) this.#fail('Cannot decode', new Error('a decode is already running'));
    // Claimed before anything is awaited: a second click while the embedding is computed is refused.
    const controller = this.#decodeController = new AbortController();
    const [button, cancel, progress, stepLine, preview] = ['.decode-local', '.cancel-decode', 'progress', '.decode-step', 'canvas.preview'].map((q) => this.#q(q));
    button.disabled = true;
    cancel.hidden = false;
    stepLine.textContent = '';
    let computing = true;
    try {
      const r = this.#result ?? (await this.compute());
      computing = false;
      controller.signal.throwIfAborted(); // Cancel while the embedding was computed
      const settings = this.#decodeSettings();
      const options = { model: this.getAttribute('decoder') || undefined, backend: this.getAttribute('backend') || 'auto', weights: this.getAttribute('decoder-weights') || undefined };
      let decoder = this.#localDecoder.current(options);
      if (!decoder) {
        this.#status(`Loading the decoder from ${options.model || 'Hugging Face'}…`);
        progress.hidden = false;
        decoder = await this.#localDecoder.get({ ...options, signal: controller.signal, onProgress: (p) => { progress.value = p.total ? p.done / p.total : 0; } });
        progress.hidden = true;
      }
      this.#status(`Decoding on this device (${decoder.backend === 'webgpu' ? 'WebGPU' : 'CPU'})…`);
      const out = await decoder.decode({
        imageEmbeds: r.imageEmbeds, negativeImageEmbeds: r.negativeImageEmbeds, ...settings, scheduler: this.getAttribute('scheduler') || undefined,
        signal: controller.signal,
        onStep: (s) => { stepLine.textContent = stepText(s); drawRgba(preview, s.preview); preview.hidden = false; },
      });
      const blob = await pngOf(out);
      await this.#showImage(blob, `${out.width}×${out.height}, seed ${settings.seed}; ${timingText(out)} on this device`);
      this.#status('Decoded on this device.', 'ok');
      const detail = { blob, seed: settings.seed, decodeMs: out.seconds * 1000, steps: out.steps, msPerStep: out.msPerStep, local: true };
      this.dispatchEvent(new CustomEvent('lambda-decoded', { detail }));
      return detail;
    } catch (e) {
      if (computing) throw e; // compute() has said why
      progress.hidden = true;
      if (e.name === 'AbortError') {
        this.#status('Decoding cancelled.', 'warn');
        throw e;
      }
      this.#fail('Could not decode locally', e);
    } finally {
      this.#decodeController = null;
      button.disabled = false;
      cancel.hidden = true;
    }
  }
}

if (!customElements.get('lambda-eclipse-widget')) customElements.define('lambda-eclipse-widget', LambdaEclipseWidget);
