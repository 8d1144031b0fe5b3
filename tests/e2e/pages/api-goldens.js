// Every lambda-tiny golden case through the public JS API (www/lib/lambda-eclipse.js), compared with the golden
// safetensors parsed in JS (www/lib/tensor-files.js). Result in window.__goldenReport (and the table).
import { load, cannyPreview } from '../../../www/lib/lambda-eclipse.js';
import { readSafetensors } from '../../../www/lib/tensor-files.js';

const GOLDENS = '/shared/goldens/lambda-tiny/';
const IMAGES = '/shared/assets/images/';
const params = new URLSearchParams(location.search);
const backend = params.get('backend') || 'webgpu';
// Embeddings: 1e-3 on WebGPU (f32 kernels in another summation order), 1e-4 on the CPU. Ids and edges: exact.
const TOL = Number(params.get('tol') || (backend === 'cpu' ? 1e-4 : 1e-3));
const corrupt = params.get('corrupt'); // "case:tensor"

const checks = [];
const rows = document.getElementById('rows');

function record(caseName, what, diff, tol, detail = '') {
  const pass = Number.isFinite(diff) && diff <= tol;
  checks.push({ case: caseName, what, diff, tol, pass, detail });
  const tr = rows.insertRow();
  tr.className = pass ? 'pass' : 'fail';
  for (const v of [caseName, what, Number.isFinite(diff) ? diff.toExponential(2) : String(diff), tol === 0 ? 'exact' : tol.toExponential(0), pass ? 'pass' : `FAIL ${detail}`]) tr.insertCell().textContent = v;
}

/** max |a − b| over equal-length arrays (NaN-safe: a NaN anywhere gives Infinity); Infinity when lengths differ. */
function maxDiff(got, want) {
  if (!got || got.length !== want.length) return Infinity;
  let m = 0;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(Number(got[i]) - Number(want[i]));
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}

const compare = (c, what, got, want, tol = TOL) => record(c, what, maxDiff(got, want), tol, got ? (got.length !== want.length ? `length ${got.length} ≠ ${want.length}` : '') : 'missing');

async function bytesOf(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

async function main() {
  const manifest = await (await fetch(`${GOLDENS}manifest.json`)).json();
  const engine = await load({ model: `${GOLDENS}model/`, backend });
  const info = await engine.describe();
  document.getElementById('summary').textContent = `Running on ${info.backend}${info.adapter ? ` (${info.adapter})` : ''}…`;
  for (const c of manifest.cases) {
    const g = readSafetensors(await bytesOf(GOLDENS + c.tensors), c.tensors).tensors;
    if (corrupt?.startsWith(`${c.name}:`)) {
      const t = g[corrupt.slice(c.name.length + 1)];
      if (!t) throw new Error(`?corrupt: ${c.name} has no tensor ${corrupt}`);
      if (t.data instanceof BigInt64Array) t.data[0] += 1n;
      else if (t.data instanceof Uint8Array) t.data[0] = 255 - t.data[0];
      else t.data[0] += 0.01;
    }
    const G = (name) => { if (!g[name]) throw new Error(`${c.tensors} has no ${name}`); return g[name].data; };

    // Text: tokenizer ids and mask exactly, then the text tower.
    const text = await engine.embedText(c.prompt);
    compare(c.name, 'input_ids', text.inputIds, G('input_ids'), 0);
    compare(c.name, 'attention_mask', text.attentionMask, G('attention_mask'), 0);
    compare(c.name, 'text_embeds', text.textEmbeds, G('text_embeds'));
    compare(c.name, 'last_hidden_state', text.lastHiddenState, G('last_hidden_state'));

    // Subjects: the vision tower on each photo.
    const photos = await Promise.all(c.subjects.map((s) => bytesOf(IMAGES + s.image)));
    if (photos.length) {
      const { imageEmbeds } = await engine.embedImages(photos.map((p) => p.slice()));
      c.subjects.forEach((s, j) => compare(c.name, `subject${j}_image_embeds (${s.keyword})`, imageEmbeds[j], G(`subject${j}_image_embeds`)));
    }

    // The whole pipeline with the golden ε.
    const control = c.canny ? await bytesOf(IMAGES + c.canny) : undefined;
    const r = await engine.prior({
      prompt: c.prompt,
      subjects: c.subjects.map((s, j) => ({ keyword: s.keyword, image: photos[j] })),
      control, noise: Float32Array.from(G('noise')),
    });
    compare(c.name, 'noise (passed through)', r.noise, G('noise'), 0);
    compare(c.name, 'encoder_hidden_states', r.encoderHiddenStates, G('encoder_hidden_states'));
    compare(c.name, 'control_embeds', r.controlEmbeds, G(c.canny ? 'control_embeds' : 'zero_image_embeds'));
    compare(c.name, 'negative_image_embeds', r.negativeImageEmbeds, G('negative_image_embeds'));
    compare(c.name, 'image_embeds', r.imageEmbeds, G('image_embeds'));
    if (c.canny) {
      const want = G('canny_edges');
      const [h, w] = g.canny_edges.shape;
      const e = r.cannyEdges;
      compare(c.name, 'canny_edges (pipeline)', e && e.width === w && e.height === h ? e.data : null, want, 0);
      const p = await cannyPreview(control, { low: 100, high: 200 });
      compare(c.name, 'canny_edges (cannyPreview)', p.width === w && p.height === h ? p.edges : null, want, 0);
      compare(c.name, 'canny preview RGBA red channel', p.rgba.filter((_, i) => i % 4 === 0), want, 0);
    }

    // Keyword warnings: a subject's photo is used exactly when its embedding appears among the golden
    // encoder_hidden_states rows; the result must warn for the others, and matchKeywords must agree.
    const d = G('image_embeds').length;
    const ehs = G('encoder_hidden_states');
    const used = c.subjects.map((s, j) => {
      const e = G(`subject${j}_image_embeds`);
      for (let row = 0; row * d < ehs.length; row++) if (maxDiff(ehs.subarray(row * d, row * d + d), e) === 0) return true;
      return false;
    });
    const warned = c.subjects.map((s) => r.warnings.some((w) => w.includes(`couldn't find keyword "${s.keyword}"`)));
    const matches = await engine.matchKeywords(c.prompt, c.subjects.map((s) => s.keyword));
    const wrong = c.subjects.filter((s, j) => warned[j] === used[j] || matches[j].found !== used[j]).map((s) => s.keyword);
    record(c.name, `keyword warnings (${c.subjects.map((s, j) => `${s.keyword}: ${used[j] ? 'used' : 'missing'}`).join(', ') || 'no subjects'})`, wrong.length, 0, wrong.length ? `wrong for ${wrong.join(', ')}; warnings: ${JSON.stringify(r.warnings)}` : '');
  }
  const failed = checks.filter((c) => !c.pass);
  document.getElementById('summary').textContent = `${info.backend}${info.adapter ? ` (${info.adapter})` : ''}: ${checks.length - failed.length} of ${checks.length} checks passed${failed.length ? `; FAILED: ${failed.map((f) => `${f.case}/${f.what}`).join(', ')}` : ''}.`;
  window.__goldenReport = { done: true, backend: info.backend, adapter: info.adapter, tolerance: TOL, cases: manifest.cases.map((c) => c.name), checks, failed: failed.length };
  engine.dispose();
}

main().catch((e) => {
  document.getElementById('summary').textContent = `Error: ${e.message}`;
  window.__goldenReport = { done: true, error: e.message, checks, failed: checks.filter((c) => !c.pass).length };
});
