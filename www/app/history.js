// The history strip: this session's results, newest last. Choosing one brings it back (prompt, subjects,
// seed, embedding, picture: `onRestore(entry)`); "Compare two" puts two side by side; "Export all" saves the
// session as one .zip (each picture as PNG, each embedding as safetensors, and session.json). Results live in
// memory only: nothing is stored or sent.
import { download } from '../lib/tensor-files.js';
import { resultFiles } from './export.js';
import { zipFiles } from './zip.js';

/** A 68×68 picture of an embedding (its first values as a colour strip), for results without a picture. */
function embeddingThumb(values) {
  const canvas = Object.assign(document.createElement('canvas'), { width: 68, height: 68 });
  const ctx = canvas.getContext('2d');
  const n = Math.min(values.length, 68);
  let max = 1e-9;
  for (let i = 0; i < n; i++) max = Math.max(max, Math.abs(values[i]));
  for (let i = 0; i < n; i++) {
    const v = values[i] / max;
    ctx.fillStyle = `hsl(${v >= 0 ? 265 : 30} 70% ${Math.round(92 - 50 * Math.abs(v))}%)`;
    ctx.fillRect(Math.floor((i * 68) / n), 0, Math.ceil(68 / n), 68);
  }
  return canvas.toDataURL();
}

const cosine = (a, b) => {
  let ab = 0, aa = 0, bb = 0;
  for (let i = 0; i < a.length; i++) { ab += a[i] * b[i]; aa += a[i] * a[i]; bb += b[i] * b[i]; }
  return ab / Math.sqrt(aa * bb);
};

const slug = (s) => (s || 'result').toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 60) || 'result';

export class SessionHistory {
  /** `el`: the elements (ids of index.html's #history and #compare); `onRestore(entry)`; `announce(text)`. */
  constructor(el, { onRestore, announce }) {
    Object.assign(this, { el, onRestore, announce });
    this.entries = [];
    this.current = null;
    this.comparing = false;
    this.picks = [];
    el.compareToggle.addEventListener('click', () => this.setCompare(!this.comparing));
    el.compareClose.addEventListener('click', () => this.setCompare(false));
    el.exportButton.addEventListener('click', () => this.exportAll());
  }

  /** Adds a result: `{ prompt, seed, subjects, control, result, info, settings, image? }`; returns the entry. */
  add(fields) {
    const entry = { id: this.entries.length + 1, image: null, ...fields };
    this.entries.push(entry);
    this.current = entry;
    this.#render();
    return entry;
  }

  /** Gives `entry` its picture: `{ blob, url, width, height, caption }`. */
  setImage(entry, image) {
    entry.image = image;
    this.#render();
    if (this.comparing && this.picks.includes(entry)) this.#renderCompare();
  }

  /** Marks `entry` as the one shown. */
  setCurrent(entry) { this.current = entry; this.#render(); }

  describe(entry) {
    const who = entry.prompt != null ? `“${entry.prompt}”` : entry.label;
    return `Result ${entry.id}: ${who}${entry.seed != null && entry.seed !== '' ? `, seed ${entry.seed}` : ''}${entry.image ? '' : ' (embedding only)'}`;
  }

  #render() {
    const { root, list, count, hint } = this.el;
    root.hidden = this.entries.length === 0;
    root.dataset.compare = String(this.comparing);
    count.textContent = `(${this.entries.length})`;
    hint.textContent = this.comparing
      ? (this.picks.length < 2 ? `Choose ${2 - this.picks.length} result${this.picks.length ? '' : 's'} to compare.` : 'Shown side by side below. Choose another to swap it in.')
      : 'Choose a result to bring it back.';
    this.el.compareToggle.disabled = this.entries.length < 2 && !this.comparing;
    list.replaceChildren(...this.entries.map((entry) => {
      const li = document.createElement('li');
      const button = Object.assign(document.createElement('button'), { type: 'button', className: 'history-item' });
      button.dataset.entry = String(entry.id);
      const img = Object.assign(document.createElement('img'), { alt: '', src: entry.image?.url ?? (entry.thumb ??= embeddingThumb(entry.result?.imageEmbeds ?? [])) });
      button.append(img, Object.assign(document.createElement('span'), { textContent: `#${entry.id}` }));
      if (this.comparing) {
        const pick = this.picks.indexOf(entry);
        button.setAttribute('aria-pressed', String(pick >= 0));
        button.dataset.pick = pick >= 0 ? ['A', 'B'][pick] : '';
        button.setAttribute('aria-label', `Compare ${this.describe(entry)}`);
      } else {
        if (entry === this.current) button.setAttribute('aria-current', 'true');
        button.setAttribute('aria-label', `Bring back ${this.describe(entry)}`);
      }
      button.title = this.describe(entry);
      button.addEventListener('click', () => this.#choose(entry));
      li.append(button);
      return li;
    }));
  }

  #choose(entry) {
    if (this.comparing) {
      const at = this.picks.indexOf(entry);
      if (at >= 0) this.picks.splice(at, 1);
      else {
        this.picks.push(entry);
        if (this.picks.length > 2) this.picks.shift();
      }
      this.#render();
      this.#renderCompare();
      this.el.list.querySelector(`[data-entry="${entry.id}"]`)?.focus();
      return;
    }
    this.current = entry;
    this.#render();
    this.el.list.querySelector(`[data-entry="${entry.id}"]`)?.focus();
    this.onRestore(entry);
  }

  /** Turns compare mode on (the current result and the one before it are picked first) or off. */
  setCompare(on) {
    this.comparing = on;
    this.el.compareToggle.setAttribute('aria-pressed', String(on));
    this.el.compareToggle.textContent = on ? 'Stop comparing' : 'Compare two';
    if (on) {
      const i = Math.max(0, this.entries.indexOf(this.current));
      this.picks = [this.entries[i - 1] ?? this.entries[i + 1], this.entries[i]].filter(Boolean).slice(0, 2);
    } else this.picks = [];
    this.#render();
    this.#renderCompare();
    this.announce(on ? 'Compare: choose two results in the strip.' : 'Comparing ended.');
  }

  #renderCompare() {
    const { compare, compareGrid } = this.el;
    compare.hidden = !(this.comparing && this.picks.length === 2);
    if (compare.hidden) { compareGrid.replaceChildren(); return; }
    const [a, b] = this.picks;
    const figures = [a, b].map((entry, k) => {
      const fig = document.createElement('figure');
      fig.dataset.entry = String(entry.id);
      if (entry.image) fig.append(Object.assign(document.createElement('img'), { src: entry.image.url, alt: `Picture of result ${entry.id}: ${entry.prompt ?? entry.label}` }));
      else fig.append(Object.assign(document.createElement('div'), { className: 'placeholder', textContent: 'Embedding only: no picture yet' }));
      const cap = document.createElement('figcaption');
      const seconds = entry.info?.seconds;
      cap.textContent = `${['A', 'B'][k]} · ${this.describe(entry)}${seconds ? ` · ${seconds.toFixed(1)} s` : ''}`;
      fig.append(cap);
      return fig;
    });
    const same = a.result && b.result && a.result.imageEmbeds.length === b.result.imageEmbeds.length;
    const note = Object.assign(document.createElement('p'), {
      className: 'note compare-note',
      textContent: same ? `Embeddings: cosine similarity ${cosine(a.result.imageEmbeds, b.result.imageEmbeds).toFixed(4)} (1 = the same).` : '',
    });
    compareGrid.replaceChildren(...figures, note);
    note.style.gridColumn = '1 / -1';
    this.announce(`Comparing result ${a.id} and result ${b.id}.`);
  }

  /** The session as one .zip: NN-prompt.png and NN-prompt.safetensors per result, and session.json. */
  async exportAll() {
    const files = [];
    const session = [];
    for (const entry of this.entries) {
      const base = `${String(entry.id).padStart(2, '0')}-${slug(entry.prompt ?? entry.label)}`;
      const record = { result: entry.id, prompt: entry.prompt ?? null, seed: entry.seed ?? null, keywords: entry.info?.keywords ?? [], files: [] };
      if (entry.image) {
        files.push({ name: `${base}.png`, bytes: new Uint8Array(await entry.image.blob.arrayBuffer()) });
        record.files.push(`${base}.png`);
        record.picture = entry.image.caption;
      }
      if (entry.result) {
        files.push({ name: `${base}.safetensors`, bytes: resultFiles(entry.result, entry.info).safetensors });
        record.files.push(`${base}.safetensors`);
        record.timings = entry.result.timings;
        record.warnings = entry.result.warnings;
      }
      session.push(record);
    }
    files.push({ name: 'session.json', bytes: JSON.stringify({ app: 'lambda-eclipse studio', results: session }, null, 2) });
    download(zipFiles(files), 'lambda-eclipse-session.zip', 'application/zip');
    this.announce(`Exported ${this.entries.length} result${this.entries.length > 1 ? 's' : ''} as lambda-eclipse-session.zip.`);
  }
}
