// The λ-ECLIPSE page: loads the model (?model=URL overrides the default Hugging Face files), then computes
// the embedding of a prompt with subject photos. All model work runs in the engine's Web Worker.
import { decode } from './decoder-client.js';
import { loadModel } from './load-panel.js';

const $ = (id) => document.getElementById(id);
const status = (text, kind = '') => { $('status').textContent = text; $('status').className = `status ${kind}`; };
const fact = (list, k, v) => { const dt = document.createElement('dt'); dt.textContent = k; const dd = document.createElement('dd'); dd.textContent = v; list.append(dt, dd); };
let lastResult = null;

function addSubject(keyword = '') {
  const row = document.createElement('div');
  row.className = 'subject';
  row.innerHTML = '<input class="keyword" placeholder="keyword"> <input class="image" type="file" accept="image/*"> <span class="warn"></span> <button type="button">Remove</button>';
  row.querySelector('.keyword').value = keyword;
  row.querySelector('button').onclick = () => row.remove();
  $('subjects').append(row);
}

async function main() {
  const engine = await loadModel();
  fact($('facts'), 'Compute backend', engine.backend === 'webgpu' ? 'WebGPU' : `CPU (wasm)${engine.fallbackReason ? ` — WebGPU unavailable: ${engine.fallbackReason}` : ''}`);
  fact($('facts'), 'Embedding size', engine.embeddingDim);
  $('compose').hidden = false;
  addSubject('cat');
  addSubject('glasses');
  $('add-subject').onclick = () => { if ($('subjects').querySelectorAll('.subject').length < 4) addSubject(); };
  $('compose').onsubmit = async (ev) => {
    ev.preventDefault();
    const subjects = [];
    for (const row of $('subjects').querySelectorAll('.subject')) {
      const file = row.querySelector('.image').files[0];
      const keyword = row.querySelector('.keyword').value.trim();
      if (file && keyword) subjects.push({ keyword, image: file });
    }
    const control = $('control').files[0];
    $('compute').disabled = true;
    status('Computing…');
    try {
      // window.__lambdaNoise: an explicit ε (tests inject the golden noise); otherwise the seed box.
      const noise = window.__lambdaNoise instanceof Float32Array ? window.__lambdaNoise : undefined;
      const r = await engine.prior({ prompt: $('prompt').value, subjects, control, seed: Number($('seed').value), noise });
      lastResult = r;
      window.__lambdaResult = r;
      $('warnings').replaceChildren(...r.warnings.map((w) => Object.assign(document.createElement('li'), { textContent: w })));
      $('timings').replaceChildren();
      for (const [stage, ms] of Object.entries(r.timings)) fact($('timings'), stage, `${ms.toFixed(1)} ms`);
      const norm = Math.hypot(...r.imageEmbeds);
      $('summary').textContent = `image_embeds: ${r.imageEmbeds.length} values, L2 norm ${norm.toFixed(4)}; first: ${Array.from(r.imageEmbeds.slice(0, 4), (x) => x.toFixed(4)).join(', ')}…`;
      $('result').hidden = false;
      $('decoder').hidden = false;
      document.body.dataset.result = 'ready';
      status('Done.', 'ok');
    } catch (e) {
      status(`Could not compute: ${e.message}`, 'error');
    } finally {
      $('compute').disabled = false;
    }
  };
  $('export-json').onclick = () => {
    if (!lastResult) return;
    const json = JSON.stringify({ image_embeds: Array.from(lastResult.imageEmbeds), negative_image_embeds: Array.from(lastResult.negativeImageEmbeds), warnings: lastResult.warnings });
    const a = Object.assign(document.createElement('a'), { href: URL.createObjectURL(new Blob([json], { type: 'application/json' })), download: 'lambda-eclipse-embedding.json' });
    a.click();
  };
  setupDecoder();
  document.body.dataset.ready = 'true';
}

/** The decoder panel: endpoint and token are remembered in localStorage. */
function setupDecoder() {
  for (const id of ['endpoint', 'token']) {
    $(id).value = localStorage.getItem(`lambda-eclipse.${id}`) || '';
    $(id).onchange = () => localStorage.setItem(`lambda-eclipse.${id}`, $(id).value.trim());
  }
  const show = (text, kind) => { const el = $('decode-status'); el.hidden = false; el.textContent = text; el.className = `status ${kind}`; };
  $('decode').onclick = async () => {
    if (!lastResult) return;
    const endpoint = $('endpoint').value.trim();
    if (!endpoint) { show('Enter the decoder endpoint URL first.', 'error'); return; }
    const settings = { seed: Number($('seed').value), steps: Number($('steps').value), guidance: Number($('guidance').value), width: Number($('width').value), height: Number($('height').value) };
    $('decode').disabled = true;
    document.body.dataset.decoded = 'pending';
    show(`Decoding on ${endpoint}…`, '');
    try {
      const r = await decode({ endpoint, token: $('token').value.trim(), imageEmbeds: lastResult.imageEmbeds, negativeImageEmbeds: lastResult.negativeImageEmbeds, ...settings });
      const img = $('decoded-image');
      if (img.src) URL.revokeObjectURL(img.src);
      img.src = URL.createObjectURL(r.blob);
      await img.decode();
      $('decoded-caption').textContent = `${settings.width}×${settings.height}, ${settings.steps} steps, guidance ${settings.guidance}, seed ${r.seed}, decoded in ${Math.round(r.decodeMs)} ms`;
      $('decoded').hidden = false;
      show('Decoded.', 'ok');
      document.body.dataset.decoded = 'ok';
    } catch (e) {
      show(e.message, 'error');
      document.body.dataset.decoded = 'error';
    } finally {
      $('decode').disabled = false;
    }
  };
}

main().catch((e) => { $('progress').hidden = true; status(`The model failed to load: ${e.message}`, 'error'); document.body.dataset.ready = 'error'; });
