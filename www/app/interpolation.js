// The interpolation panel: four corner embeddings (results computed on this page, or files exported earlier —
// safetensors, .npy or JSON) → the (n+1)×(n+1) grid of embeddings between them, computed by the engine's wasm
// with the reference's bilinear rule (pipeline::interpolate). The grid exports like a result, and can be
// decoded cell by cell (same seed for every cell, as the reference does) when a decoder endpoint is set.
import { interpolateGrid } from '../lib/lambda-eclipse.js';
import { download, readEmbedding, writeNpy, writeSafetensors } from '../lib/tensor-files.js';

const CORNERS = ['top-left', 'top-right', 'bottom-left', 'bottom-right'];
const UPLOAD = 'upload';

export class InterpolationPanel {
  /** `root`: the panel's section; `decodeCell(embeds, negative)`: resolves a Blob, or null when no endpoint is set. */
  constructor(root, { decodeCell } = {}) {
    this.root = root;
    this.decodeCell = decodeCell;
    this.results = [];
    this.uploads = new Map(); // corner → { embeds, negative, name }
    this.grid = null;
    root.insertAdjacentHTML('beforeend', `
      <div class="corners">${CORNERS.map((c) => `
        <div class="corner" data-corner="${c}">
          <label>${c[0].toUpperCase() + c.slice(1)} <select class="corner-source"></select></label>
          <input type="file" class="corner-file" accept=".safetensors,.npy,.json" hidden aria-label="${c} embedding file">
          <span class="note corner-status"></span>
        </div>`).join('')}
      </div>
      <label>Steps <input class="steps" type="number" min="1" max="16" step="1" value="4"></label>
      <button type="button" class="interpolate">Interpolate</button>
      <p class="status interp-status" hidden></p>
      <div class="grid-out" hidden>
        <table class="grid"></table>
        <button type="button" class="export-grid" data-format="safetensors">Export grid (.safetensors)</button>
        <button type="button" class="export-grid" data-format="npy">Export grid (.npy)</button>
        <button type="button" class="export-grid" data-format="json">Export grid (JSON)</button>
        <button type="button" class="decode-grid">Decode every cell</button>
      </div>`);
    for (const corner of root.querySelectorAll('.corner')) {
      const name = corner.dataset.corner;
      const select = corner.querySelector('.corner-source');
      const file = corner.querySelector('.corner-file');
      select.addEventListener('change', () => { select.dataset.user = 'true'; file.hidden = select.value !== UPLOAD; });
      file.addEventListener('change', async () => {
        const f = file.files[0];
        const status = corner.querySelector('.corner-status');
        this.uploads.delete(name);
        if (!f) { status.textContent = ''; return; }
        try {
          const e = readEmbedding(new Uint8Array(await f.arrayBuffer()), f.name);
          this.uploads.set(name, { ...e, name: f.name });
          status.textContent = `${f.name}: ${e.embeds.length} values`;
          status.className = 'note corner-status ok';
        } catch (err) {
          status.textContent = err.message;
          status.className = 'note corner-status error';
        }
      });
    }
    this.#fillSelects();
    root.querySelector('.interpolate').addEventListener('click', () => this.run());
    for (const b of root.querySelectorAll('.export-grid')) b.addEventListener('click', () => this.export(b.dataset.format));
    root.querySelector('.decode-grid').addEventListener('click', () => this.decodeAll());
  }

  /** Makes a computed result available as a corner. The first four results fill the corners in order. */
  addResult(label, result) {
    this.results.push({ label, embeds: result.imageEmbeds, negative: result.negativeImageEmbeds });
    this.#fillSelects();
  }

  #fillSelects() {
    this.root.querySelectorAll('.corner').forEach((corner, k) => {
      const select = corner.querySelector('.corner-source');
      const before = select.value;
      select.replaceChildren(
        ...this.results.map((r, i) => new Option(`Result ${i + 1}: ${r.label}`, String(i))),
        new Option('A file (safetensors, .npy, JSON)…', UPLOAD),
      );
      // The user's choice stays; otherwise corner k shows result k (or the latest), or a file when none.
      const chosen = select.dataset.user === 'true' && [...select.options].some((o) => o.value === before);
      select.value = chosen ? before : this.results.length ? String(Math.min(k, this.results.length - 1)) : UPLOAD;
      corner.querySelector('.corner-file').hidden = select.value !== UPLOAD;
    });
  }

  #corner(name) {
    const select = this.root.querySelector(`.corner[data-corner="${name}"] .corner-source`);
    if (select.value === UPLOAD) {
      const u = this.uploads.get(name);
      if (!u) throw new Error(`choose the ${name} corner: a result, or a file`);
      return u;
    }
    return this.results[Number(select.value)];
  }

  #status(text, kind) {
    const el = this.root.querySelector('.interp-status');
    el.hidden = !text;
    el.textContent = text;
    el.className = `status interp-status ${kind}`;
  }

  async run() {
    const steps = Number(this.root.querySelector('.steps').value);
    try {
      const corners = CORNERS.map((c) => this.#corner(c));
      const grid = await interpolateGrid(corners.map((c) => c.embeds), steps);
      this.grid = { steps, embeddings: grid, negative: corners.find((c) => c.negative)?.negative ?? null };
      window.__lambdaGrid = this.grid;
      this.#render();
      this.#status(`${grid.length} embeddings: a ${steps + 1}×${steps + 1} grid between the four corners.`, 'ok');
      this.root.dataset.grid = 'ready';
    } catch (e) {
      this.#status(`Cannot interpolate: ${e.message}`, 'error');
      this.root.dataset.grid = 'error';
    }
  }

  #render() {
    const { steps, embeddings } = this.grid;
    const n = steps + 1;
    const table = this.root.querySelector('.grid');
    table.replaceChildren();
    const norm = (v) => Math.hypot(...v);
    for (let i = 0; i < n; i++) {
      const tr = table.insertRow();
      for (let j = 0; j < n; j++) {
        const td = tr.insertCell();
        td.dataset.cell = `${i},${j}`;
        td.title = `row t = ${(i / steps).toFixed(2)}, column t = ${(j / steps).toFixed(2)}`;
        td.innerHTML = `<span class="t">${i},${j}</span><span class="norm">‖e‖ ${norm(embeddings[i * n + j]).toFixed(3)}</span>`;
      }
    }
    this.root.querySelector('.grid-out').hidden = false;
  }

  export(format) {
    if (!this.grid) return;
    const { steps, embeddings, negative } = this.grid;
    const n = steps + 1, d = embeddings[0].length;
    const flat = new Float32Array(n * n * d);
    embeddings.forEach((e, k) => flat.set(e, k * d));
    if (format === 'safetensors') {
      const tensors = { grid: { shape: [n * n, d], data: flat } };
      if (negative) tensors.negative_image_embeds = { shape: [1, d], data: Float32Array.from(negative) };
      download(writeSafetensors(tensors, { rows: n, cols: n, format: 'lambda-eclipse interpolation grid' }), 'lambda-eclipse-grid.safetensors');
    } else if (format === 'npy') {
      download(writeNpy(flat, [n * n, d]), 'lambda-eclipse-grid.npy');
    } else {
      const json = JSON.stringify({ rows: n, cols: n, embeddings: embeddings.map((e) => Array.from(e)), negative_image_embeds: negative ? Array.from(negative) : undefined });
      download(json, 'lambda-eclipse-grid.json', 'application/json');
    }
  }

  async decodeAll() {
    if (!this.grid || !this.decodeCell) return;
    const { steps, embeddings, negative } = this.grid;
    const n = steps + 1;
    const button = this.root.querySelector('.decode-grid');
    button.disabled = true;
    try {
      for (let k = 0; k < embeddings.length; k++) {
        this.#status(`Decoding cell ${k + 1} of ${embeddings.length}…`, '');
        const blob = await this.decodeCell(embeddings[k], negative);
        if (!blob) { this.#status('Set the decoder endpoint (in "Decode to an image") first.', 'error'); return; }
        const td = this.root.querySelector(`td[data-cell="${Math.floor(k / n)},${k % n}"]`);
        const img = Object.assign(document.createElement('img'), { src: URL.createObjectURL(blob), alt: `cell ${Math.floor(k / n)},${k % n}` });
        td.prepend(img);
      }
      this.#status(`Decoded all ${embeddings.length} cells with the same seed.`, 'ok');
    } catch (e) {
      this.#status(`Decoding stopped: ${e.message}`, 'error');
    } finally {
      button.disabled = false;
    }
  }
}
