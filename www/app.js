// The λ-ECLIPSE page: loads the model (?model=URL overrides the default Hugging Face files), then computes
// the embedding of a prompt with subject photos. All model work runs in the engine's Web Worker.
import { decode } from './decoder-client.js';
import { SubjectList, SUBJECTS_CSS, bindKeywordCheck } from './subjects.js';
import { EdgeControl } from './control.js';
import { InterpolationPanel } from './interpolation.js';
import { exportResult } from './export.js';
import { showBackend } from './backend.js';
import { loadModel } from './load-panel.js';

const $ = (id) => document.getElementById(id);
const status = (text, kind = '') => { $('status').textContent = text; $('status').className = `status ${kind}`; };
const fact = (list, k, v) => { const dt = document.createElement('dt'); dt.textContent = k; const dd = document.createElement('dd'); dd.textContent = v; list.append(dt, dd); };
let lastResult = null;
let lastInfo = null;

async function main() {
  const engine = await loadModel();
  fact($('facts'), 'Compute backend', engine.backend === 'webgpu' ? 'WebGPU' : `CPU (wasm)${engine.fallbackReason ? ` — WebGPU unavailable: ${engine.fallbackReason}` : ''}`);
  fact($('facts'), 'Embedding size', engine.embeddingDim);
  await showBackend({ engine, facts: $('facts'), notice: $('backend-notice'), select: $('backend-choice') });
  $('backend').hidden = false;
  setupCompose(engine);
  setupDecoder();
  document.body.dataset.ready = 'true';
}

/** Prompt, subjects, edge control, seed → Compute; the result with its warnings, timings and exports. */
function setupCompose(engine) {
  document.head.append(Object.assign(document.createElement('style'), { textContent: SUBJECTS_CSS }));
  const list = new SubjectList($('subjects'));
  list.attachPaste(document);
  list.add('cat');
  list.add('glasses');
  $('add-subject').onclick = () => { if (!list.add()) status('Four subjects at most.', 'error'); };
  list.addEventListener('change', () => { $('add-subject').disabled = list.slots.length >= 4; });
  const checkKeywords = bindKeywordCheck({ engine, prompt: $('prompt'), list, preview: $('prompt-preview'), warnings: $('keyword-warnings') });
  const control = new EdgeControl({ input: $('control'), low: $('canny-low'), high: $('canny-high'), canvas: $('canny-preview'), status: $('control-status'), clear: $('control-clear'), zone: $('control-zone') });
  const interpolation = new InterpolationPanel($('interpolation'), { decodeCell: decodeEmbedding });
  $('interpolation').hidden = false;
  $('compose').hidden = false;

  $('compose').onsubmit = async (ev) => {
    ev.preventDefault();
    const { subjects, problems } = list.collect();
    if (problems.length) { status(problems.join(' '), 'error'); return; }
    const prompt = $('prompt').value;
    const seed = Number($('seed').value);
    $('compute').disabled = true;
    document.body.dataset.result = 'pending';
    status('Computing…');
    try {
      await Promise.all([list.settled(), checkKeywords()]);
      // window.__lambdaNoise: an explicit ε (tests inject the golden noise); otherwise the seed box.
      const noise = window.__lambdaNoise instanceof Float32Array ? window.__lambdaNoise : undefined;
      const { low, high } = control.thresholds;
      const r = await engine.prior({ prompt, subjects, control: control.file ?? undefined, cannyLow: low, cannyHigh: high, seed, noise });
      lastResult = r;
      lastInfo = { prompt, seed: noise ? 'explicit noise' : seed, keywords: subjects.map((s) => s.keyword), backend: engine.backend };
      window.__lambdaResult = r;
      showResult(r, engine);
      interpolation.addResult(`“${prompt}”${subjects.length ? ` with ${subjects.map((s) => s.keyword).join(', ')}` : ''}, seed ${lastInfo.seed}`, r);
      $('result').hidden = false;
      $('decoder').hidden = false;
      document.body.dataset.result = 'ready';
      status(r.warnings.length ? `Done, with ${r.warnings.length} warning${r.warnings.length > 1 ? 's' : ''} (see the result).` : 'Done.', r.warnings.length ? 'warn' : 'ok');
    } catch (e) {
      document.body.dataset.result = 'error';
      status(`Could not compute: ${e.message}`, 'error');
    } finally {
      $('compute').disabled = false;
    }
  };
  for (const format of ['safetensors', 'npy', 'json']) {
    $(`export-${format}`).onclick = () => { if (lastResult) exportResult(lastResult, lastInfo, format); };
  }
}

function showResult(r, engine) {
  $('warnings').replaceChildren(...r.warnings.map((w) => Object.assign(document.createElement('li'), { textContent: w })));
  $('timings').replaceChildren();
  fact($('timings'), 'computed on', engine.backend === 'webgpu' ? 'WebGPU' : 'CPU (wasm)');
  let total = 0;
  for (const [stage, ms] of Object.entries(r.timings)) { fact($('timings'), stage, `${ms.toFixed(1)} ms`); total += ms; }
  fact($('timings'), 'total', `${total.toFixed(1)} ms`);
  $('timings').lastElementChild.className = 'total';
  const norm = Math.hypot(...r.imageEmbeds);
  $('summary').textContent = `image_embeds: ${r.imageEmbeds.length} values, L2 norm ${norm.toFixed(4)}; first: ${Array.from(r.imageEmbeds.slice(0, 4), (x) => x.toFixed(4)).join(', ')}…`;
}

/** The decoder panel's settings: `{ endpoint, token, seed, steps, guidance, width, height }`. */
function decoderSettings() {
  return { endpoint: $('endpoint').value.trim(), token: $('token').value.trim(), seed: Number($('seed').value), steps: Number($('steps').value), guidance: Number($('guidance').value), width: Number($('width').value), height: Number($('height').value) };
}

/** Decodes one embedding with the panel's settings (the interpolation grid uses it): a Blob, or null without an endpoint. */
async function decodeEmbedding(imageEmbeds, negativeImageEmbeds) {
  const s = decoderSettings();
  if (!s.endpoint) return null;
  return (await decode({ ...s, imageEmbeds, negativeImageEmbeds: negativeImageEmbeds ?? undefined })).blob;
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
    const { endpoint, token, ...settings } = decoderSettings();
    if (!endpoint) { show('Enter the decoder endpoint URL first.', 'error'); return; }
    $('decode').disabled = true;
    document.body.dataset.decoded = 'pending';
    show(`Decoding on ${endpoint}…`, '');
    try {
      const r = await decode({ endpoint, token, imageEmbeds: lastResult.imageEmbeds, negativeImageEmbeds: lastResult.negativeImageEmbeds, ...settings });
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
