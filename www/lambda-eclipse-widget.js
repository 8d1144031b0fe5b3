// <lambda-eclipse-widget>: λ-ECLIPSE on any page with one script tag.
//
//   <script type="module" src="https://your.host/lambda-eclipse/www/lambda-eclipse-widget.js"></script>
//   <lambda-eclipse-widget model="https://…/model/" endpoint="https://decoder.example" token="…"></lambda-eclipse-widget>
//
// Attributes: model, prior (model folders; default: the real Hugging Face files), backend (auto | webgpu |
// cpu), autoload (load at once instead of on the first click), endpoint + token (a decoder endpoint: enables
// "Decode"), prompt, seed, width, height, steps, guidance (decoder settings). Shadow DOM with its own styles;
// its worker and wasm resolve against this module's URL (another origin works when it sends CORS headers).
// Model work runs in a Web Worker. Events: lambda-ready, lambda-result, lambda-decoded, lambda-error
// (detail: the engine description, the result, { blob }, { message }). Typed in lambda-eclipse-widget.d.ts.
import { load } from './lambda-eclipse.js';
import { decode } from './decoder-client.js';
import { SubjectList, SUBJECTS_CSS, bindKeywordCheck } from './subjects.js';

const CSS = `
:host { display: block; font: 15px/1.45 system-ui, sans-serif; color: #222; border: 1px solid #d0d7de;
  border-radius: 10px; padding: .9rem 1rem; max-width: 40rem; background: #fff; }
:host([hidden]) { display: none; }
h2 { font-size: 1.05rem; margin: 0 0 .5rem; }
label { display: block; margin: .4rem 0; }
input.prompt { width: 100%; box-sizing: border-box; }
.row { display: flex; gap: .5rem; align-items: center; flex-wrap: wrap; margin: .5rem 0; }
.status { padding: .5rem .75rem; border-radius: 6px; background: #eef3fb; margin: .5rem 0; }
.status.ok { background: #eef6ee; } .status.warn { background: #fff4e0; } .status.error { background: #fbeaea; }
progress { width: 100%; }
.warnings { color: #8a4b00; margin: .25rem 0; padding-left: 1.2rem; }
.warnings:empty { display: none; }
.timings { font-size: .85em; color: #555; }
figure { margin: .5rem 0; } figure img { max-width: 100%; min-width: 128px; image-rendering: pixelated; border: 1px solid #ccc; }
[hidden] { display: none !important; }
`;

const TEMPLATE = `
<h2>λ-ECLIPSE <small class="backend"></small></h2>
<div class="status" role="status">Photos stay on this device.</div>
<progress max="1" value="0" hidden></progress>
<div class="row"><button type="button" class="load">Load the model</button></div>
<form class="compose" hidden>
  <label>Prompt <input class="prompt" autocomplete="off"></label>
  <div class="prompt-preview" aria-label="The prompt with the words each subject replaces highlighted"></div>
  <ul class="keyword-warnings"></ul>
  <div class="subjects"></div>
  <div class="row">
    <button type="button" class="add">Add a subject</button>
    <label>Seed <input class="seed" type="number" min="0" step="1" value="42" style="width:7rem"></label>
  </div>
  <div class="row"><button type="submit" class="compute">Compute</button><button type="button" class="decode" hidden>Decode</button></div>
</form>
<ul class="warnings"></ul>
<div class="timings"></div>
<figure hidden><img class="result-image" alt="decoded image"><figcaption></figcaption></figure>
`;

export class LambdaEclipseWidget extends HTMLElement {
  static observedAttributes = ['endpoint', 'prompt', 'seed'];
  #root; #engine = null; #loading = null; #list = null; #result = null; #checkKeywords = null;

  constructor() {
    super();
    this.#root = this.attachShadow({ mode: 'open' });
    this.#root.innerHTML = `<style>${CSS}${SUBJECTS_CSS}</style>${TEMPLATE}`;
    this.#q('.load').addEventListener('click', () => this.load().catch(() => {}));
    this.#q('.compose').addEventListener('submit', (e) => { e.preventDefault(); this.compute().catch(() => {}); });
    this.#q('.decode').addEventListener('click', () => this.decode().catch(() => {}));
    this.#q('.add').addEventListener('click', () => this.#list.add());
  }

  connectedCallback() {
    this.#q('.prompt').value ||= this.getAttribute('prompt') ?? 'a cat wearing glasses at a park';
    if (this.hasAttribute('seed')) this.#q('.seed').value = this.getAttribute('seed');
    this.#q('.decode').hidden = !this.getAttribute('endpoint');
    if (this.hasAttribute('autoload')) this.load().catch(() => {});
  }

  attributeChangedCallback(name, _old, value) {
    if (name === 'endpoint') this.#q('.decode').hidden = !value;
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
    this.#status(`${prefix}: ${e.message}`, 'error');
    this.dispatchEvent(new CustomEvent('lambda-error', { detail: { message: e.message } }));
    throw e;
  }

  /** Loads the model (once); resolves the engine. */
  load() {
    this.#loading ??= this.#load();
    return this.#loading;
  }

  async #load() {
    const model = this.getAttribute('model') || undefined;
    const prior = this.getAttribute('prior') || undefined;
    const backend = this.getAttribute('backend') || 'auto';
    this.#q('.load').disabled = true;
    const progress = this.#q('progress');
    progress.hidden = false;
    this.#status(`Loading the model from ${model || 'Hugging Face'}…`);
    const totals = {};
    try {
      this.#engine = await load({
        model, prior, backend,
        onProgress: ({ component, done, total }) => {
          totals[component] = [done, total];
          const [d, t] = Object.values(totals).reduce(([a, b], [x, y]) => [a + x, b + y], [0, 0]);
          progress.value = t ? d / t : 0;
        },
      });
    } catch (e) {
      this.#loading = null;
      this.#q('.load').disabled = false;
      progress.hidden = true;
      this.#fail('The model failed to load', e);
    }
    progress.hidden = true;
    this.#q('.load').hidden = true;
    const info = await this.#engine.describe();
    this.#q('.backend').textContent = info.backend === 'webgpu' ? `· WebGPU${info.adapter ? ` (${info.adapter})` : ''}` : '· CPU (wasm)';
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
      this.#q('.timings').textContent = `${Object.entries(r.timings).map(([k, v]) => `${k} ${v.toFixed(0)} ms`).join(' · ')} · total ${total.toFixed(0)} ms`;
      this.#status(`Embedding ready (${r.imageEmbeds.length} values).${this.getAttribute('endpoint') ? ' Decode it into an image.' : ''}`, r.warnings.length ? 'warn' : 'ok');
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
    const num = (name, dflt) => (this.hasAttribute(name) ? Number(this.getAttribute(name)) : dflt);
    const settings = { seed: Number(this.#q('.seed').value), width: num('width', 512), height: num('height', 512), steps: num('steps', 50), guidance: num('guidance', 4) };
    const button = this.#q('.decode');
    button.disabled = true;
    this.#status(`Decoding on ${endpoint}…`);
    try {
      const out = await decode({ endpoint, token: this.getAttribute('token') || undefined, imageEmbeds: r.imageEmbeds, negativeImageEmbeds: r.negativeImageEmbeds, ...settings });
      const img = this.#q('.result-image');
      if (img.src) URL.revokeObjectURL(img.src);
      img.src = URL.createObjectURL(out.blob);
      await img.decode();
      this.#q('figcaption').textContent = `${settings.width}×${settings.height}, ${settings.steps} steps, seed ${out.seed}, decoded in ${Math.round(out.decodeMs)} ms`;
      this.#q('figure').hidden = false;
      this.#status('Decoded.', 'ok');
      this.dispatchEvent(new CustomEvent('lambda-decoded', { detail: out }));
      return out;
    } catch (e) {
      this.#fail('Could not decode', e);
    } finally {
      button.disabled = false;
    }
  }
}

if (!customElements.get('lambda-eclipse-widget')) customElements.define('lambda-eclipse-widget', LambdaEclipseWidget);
