// The optional edge-control image: its Canny edge map is previewed as soon as it is chosen, computed by the
// engine's own OpenCV-exact code (wasm, in the tools worker; no model needed), with the thresholds the
// pipeline will use. A bad file is named at once.
import { cannyPreview } from '../lib/lambda-eclipse.js';
import { withAdvice } from '../ui/advice.js';

export class EdgeControl {
  /** Elements: file `input`, threshold inputs `low`/`high`, `canvas`, `status`, `clear` button, drop `zone`. */
  constructor({ input, low, high, canvas, status, clear, zone }) {
    Object.assign(this, { input, low, high, canvas, status, clear, zone });
    this.file = null;
    input.addEventListener('change', () => this.set(input.files[0] ?? null, { fromInput: true }));
    for (const el of [low, high]) el.addEventListener('change', () => this.refresh());
    clear.addEventListener('click', () => this.set(null));
    zone?.addEventListener('dragover', (e) => { if ([...e.dataTransfer.types].includes('Files')) e.preventDefault(); });
    zone?.addEventListener('drop', (e) => {
      const f = e.dataTransfer.files[0];
      if (!f) return;
      e.preventDefault();
      this.set(f);
    });
  }

  /** Thresholds as the pipeline takes them. */
  get thresholds() { return { low: Number(this.low.value), high: Number(this.high.value) }; }

  set(file, { fromInput = false } = {}) {
    this.file = file;
    if (!fromInput) {
      if (file) { try { const dt = new DataTransfer(); dt.items.add(file); this.input.files = dt.files; } catch { /* display only */ } } else this.input.value = '';
    }
    this.clear.hidden = !file;
    // An edge image given by drop or by an example: open its panel, so its preview and Remove are in view.
    if (file) this.zone?.closest('details')?.setAttribute('open', '');
    return this.refresh();
  }

  async refresh() {
    const token = (this.token = {});
    const show = (text, kind) => { this.status.textContent = text; this.status.className = `note ${kind}`; };
    if (!this.file) {
      this.canvas.hidden = true;
      delete this.canvas.dataset.state;
      show('', '');
      return;
    }
    const { low, high } = this.thresholds;
    this.canvas.dataset.state = 'checking';
    show(`Computing the edge map of ${this.file.name || 'the image'}…`, '');
    try {
      const p = await cannyPreview(this.file, { low, high });
      if (this.token !== token) return;
      this.canvas.width = p.width;
      this.canvas.height = p.height;
      this.canvas.getContext('2d').putImageData(new ImageData(p.rgba, p.width, p.height), 0, 0);
      this.canvas.hidden = false;
      this.canvas.dataset.state = 'ok';
      const share = p.edges.reduce((n, v) => n + (v ? 1 : 0), 0) / p.edges.length;
      show(`Edge map the engine will use (Canny ${low}, ${high}): ${p.width}×${p.height}, ${(100 * share).toFixed(1)}% edge pixels.`, 'ok');
    } catch (e) {
      if (this.token !== token) return;
      this.canvas.hidden = true;
      this.canvas.dataset.state = 'error';
      show(`${this.file.name || 'This file'} cannot be used as the edge-control image: ${withAdvice(e.message)}`, 'error');
    }
  }

  /** Whether the chosen file passed the preview (or there is none). */
  get usable() { return !this.file || this.canvas.dataset.state === 'ok'; }
}
