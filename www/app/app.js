// The λ-ECLIPSE page: loads the model (?model=URL overrides the default Hugging Face files), then computes
// the embedding of a prompt with subject photos, and decodes an embedding (computed, or from a file) to an
// image on this device (?decoder=URL overrides the default decoder) or on an endpoint. All model work runs
// in Web Workers: the engine's, and the decoder's own.
//
// State for tests: body[data-result], body[data-decoded] (endpoint) and body[data-decoded-local] =
// 'loading' | 'pending' | 'ok' | 'error' | 'cancelled'; #decode-local-step shows the step progress.
import { decode } from '../lib/decoder-client.js';
import { SubjectList, SUBJECTS_CSS, bindKeywordCheck } from '../ui/subjects.js';
import { EdgeControl } from './control.js';
import { InterpolationPanel } from './interpolation.js';
import { exportResult } from './export.js';
import { showBackend } from './backend.js';
import { loadModel, renderLoadProgress, showCacheUsage, formatBytes, LOAD_FILES_HEAD } from './load-panel.js';
import { DEFAULT_DECODER } from '../lib/lambda-eclipse.js';
import { LocalDecoder, drawRgba, pngOf, readDecoderInput, stepText, timingText } from '../ui/local-decoder.js';
import { download } from '../lib/tensor-files.js';

const $ = (id) => document.getElementById(id);
const status = (text, kind = '') => { $('status').textContent = text; $('status').className = `status ${kind}`; };
const fact = (list, k, v) => { const dt = document.createElement('dt'); dt.textContent = k; const dd = document.createElement('dd'); dd.textContent = v; list.append(dt, dd); };
let lastResult = null;
let lastInfo = null;
/** What the decoder panel decodes: `{ label, imageEmbeds, negativeImageEmbeds, noise, steps }` (see readDecoderInput). */
let decodeInput = null;

function setDecodeInput(input) {
  decodeInput = input;
  $('decode-source').textContent = input.label;
}

async function main() {
  // The decoder panel works without the λ model (an embedding file), so it is ready while the model loads.
  setupDecoder();
  const engine = await loadModel();
  fact($('facts'), 'Compute backend', engine.backend === 'webgpu' ? 'WebGPU' : `CPU (wasm)${engine.fallbackReason ? ` — WebGPU unavailable: ${engine.fallbackReason}` : ''}`);
  fact($('facts'), 'Embedding size', engine.embeddingDim);
  await showBackend({ engine, facts: $('facts'), notice: $('backend-notice'), select: $('backend-choice') });
  $('backend').hidden = false;
  setupCompose(engine);
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
      setDecodeInput({ label: `the result above (“${prompt}”, seed ${lastInfo.seed})`, imageEmbeds: r.imageEmbeds, negativeImageEmbeds: r.negativeImageEmbeds, noise: null, steps: null });
      document.body.dataset.result = 'ready';
      status(r.warnings.length ? `Done, with ${r.warnings.length} warning${r.warnings.length > 1 ? 's' : ''} (see the result).` : 'Done.', r.warnings.length ? 'warn' : 'ok');
    } catch (e) {
      document.body.dataset.result = 'error';
      status(`Could not compute: ${e.message}${engine.alive ? '' : '. Reload the page to load the model again.'}`, 'error');
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

/** The decoder panel's settings: `{ endpoint, token, seed, steps, guidance, width, height, scheduler }`. */
function decoderSettings() {
  return { endpoint: $('endpoint').value.trim(), token: $('token').value.trim(), seed: Number($('seed').value), steps: Number($('steps').value), guidance: Number($('guidance').value), width: Number($('width').value), height: Number($('height').value), scheduler: $('scheduler').value || undefined };
}

/** Decodes one embedding with the panel's settings (the interpolation grid uses it): a Blob, or null without an endpoint. */
async function decodeEmbedding(imageEmbeds, negativeImageEmbeds) {
  const s = decoderSettings();
  if (!s.endpoint) return null;
  return (await decode({ ...s, imageEmbeds, negativeImageEmbeds: negativeImageEmbeds ?? undefined })).blob;
}

const showDecodeStatus = (text, kind) => { const el = $('decode-status'); el.hidden = false; el.textContent = text; el.className = `status ${kind}`; };

/** Shows a decoded image (a Blob) in the result area, downloadable. */
async function showDecoded(blob, caption) {
  const img = $('decoded-image');
  if (img.src) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(blob);
  await img.decode();
  $('decoded-caption').textContent = caption;
  $('download-decoded').onclick = () => download(blob, 'lambda-eclipse-decoded.png', 'image/png');
  $('decoded').hidden = false;
}

/** The decoder panel: the embedding to decode (computed, or a file), "Decode locally" and "Decode on endpoint".
 * Endpoint and token are remembered in localStorage. */
function setupDecoder() {
  $('decoder').hidden = false;
  for (const id of ['endpoint', 'token']) {
    $(id).value = localStorage.getItem(`lambda-eclipse.${id}`) || '';
    $(id).onchange = () => localStorage.setItem(`lambda-eclipse.${id}`, $(id).value.trim());
  }
  $('embedding-file').onchange = async () => {
    const file = $('embedding-file').files[0];
    if (!file) return;
    try {
      const input = readDecoderInput(new Uint8Array(await file.arrayBuffer()), file.name);
      setDecodeInput({ ...input, label: `${file.name} (${input.imageEmbeds.length} values${input.noise ? `, with its noise${input.steps ? ` for ${input.steps} steps` : ''}` : ''})` });
    } catch (e) {
      showDecodeStatus(`Cannot use ${file.name}: ${e.message}`, 'error');
    }
  };
  $('decode').onclick = async () => {
    if (!decodeInput) { showDecodeStatus('Compute an embedding or choose an embedding file first.', 'error'); return; }
    const { endpoint, token, scheduler, ...settings } = decoderSettings();
    if (!endpoint) { showDecodeStatus('Enter the decoder endpoint URL first.', 'error'); return; }
    $('decode').disabled = true;
    document.body.dataset.decoded = 'pending';
    showDecodeStatus(`Decoding on ${endpoint}…`, '');
    try {
      const r = await decode({ endpoint, token, imageEmbeds: decodeInput.imageEmbeds, negativeImageEmbeds: decodeInput.negativeImageEmbeds ?? undefined, ...settings });
      await showDecoded(r.blob, `${settings.width}×${settings.height}, ${settings.steps} steps, guidance ${settings.guidance}, seed ${r.seed}, decoded in ${Math.round(r.decodeMs)} ms`);
      showDecodeStatus('Decoded.', 'ok');
      document.body.dataset.decoded = 'ok';
    } catch (e) {
      showDecodeStatus(e.message, 'error');
      document.body.dataset.decoded = 'error';
    } finally {
      $('decode').disabled = false;
    }
  };
  setupLocalDecoder();
}

/** "Decode locally": the decoder (?decoder=URL, default Kandinsky 2.2 on Hugging Face; &backend= as the
 * model's; the weights select, or &decoder-weights=f16|int8|f32, says how WebGPU keeps its weight matrices)
 * loads on first use with per-file progress, then decodes with step progress, a live preview and Cancel. */
function setupLocalDecoder() {
  const params = new URLSearchParams(location.search);
  const backend = params.get('backend') || 'auto';
  $('decoder-url').value = params.get('decoder') || DEFAULT_DECODER;
  if (params.get('decoder-weights')) $('decoder-weights').value = params.get('decoder-weights');
  $('decoder-load-files').innerHTML = LOAD_FILES_HEAD;
  const loadView = { bar: $('decoder-progress'), summary: $('decoder-load-summary'), table: $('decoder-load-files'), warning: $('decoder-cache-warning') };
  const local = new LocalDecoder();
  let controller = null;
  const state = (s) => { document.body.dataset.decodedLocal = s; };

  $('cancel-decode-local').onclick = () => {
    $('cancel-decode-local').disabled = true;
    showDecodeStatus(document.body.dataset.decodedLocal === 'loading' ? 'Cancelling the download…' : 'Cancelling after the current step…', '');
    controller?.abort();
  };
  $('decode-local').onclick = async () => {
    if (!decodeInput) { showDecodeStatus('Compute an embedding or choose an embedding file first.', 'error'); return; }
    const input = decodeInput;
    const model = $('decoder-url').value.trim() || DEFAULT_DECODER;
    const weights = $('decoder-weights').value;
    const { seed, guidance, scheduler } = decoderSettings();
    let { width, height, steps } = decoderSettings();
    controller = new AbortController();
    const { signal } = controller;
    $('decode-local').disabled = true;
    $('cancel-decode-local').hidden = false;
    $('cancel-decode-local').disabled = false;
    $('decode-local-step').textContent = '';
    let phase = 'load';
    let decoder = null;
    try {
      decoder = local.current({ model, backend, weights }) ?? await loadWithProgress();
      phase = 'decode';
      state('pending');
      if (input.noise) {
        // Given latents fix the size, and given step noise the number of steps, as the CLI's --noise does.
        [width, height] = [input.noise.latentWidth * decoder.latentScale, input.noise.latentHeight * decoder.latentScale];
        $('width').value = width;
        $('height').value = height;
      }
      if (input.steps) {
        steps = input.steps;
        $('steps').value = steps;
      }
      showDecodeStatus(`Decoding ${input.label} on this device (${decoder.backend === 'webgpu' ? 'WebGPU' : 'CPU'}), ${width}×${height}…`, '');
      const r = await decoder.decode({
        imageEmbeds: input.imageEmbeds, negativeImageEmbeds: input.negativeImageEmbeds ?? undefined,
        seed, steps, guidance, width, height, scheduler, noise: input.noise ?? undefined, signal,
        onStep: (s) => {
          $('decode-local-step').textContent = stepText(s);
          drawRgba($('decode-preview'), s.preview);
          $('decode-preview').hidden = false;
        },
      });
      await showDecoded(await pngOf(r), `${r.width}×${r.height}, guidance ${guidance}, ${input.noise ? 'noise from the file' : `seed ${seed}`}; ${timingText(r)} on this device (${decoder.backend === 'webgpu' ? 'WebGPU' : 'CPU'})`);
      showDecodeStatus('Decoded on this device.', 'ok');
      state('ok');
    } catch (e) {
      if (e.name === 'AbortError') {
        showDecodeStatus(phase === 'load' ? 'Loading the decoder cancelled; what was downloaded is kept in this browser.' : 'Decoding cancelled.', 'warn');
        state('cancelled');
      } else {
        // A crashed decoder is gone: the next "Decode locally" loads it anew.
        const again = decoder && !decoder.alive ? ' “Decode locally” loads it again.' : '';
        showDecodeStatus(phase === 'load' ? `The decoder at ${model} could not be loaded: ${e.message}` : `Could not decode: ${e.message}${again ? `.${again}` : ''}`, 'error');
        state('error');
      }
    } finally {
      controller = null;
      $('decode-local').disabled = false;
      $('cancel-decode-local').hidden = true;
    }

    /** Loads (or reuses) the decoder, showing the download in the panel. */
    async function loadWithProgress() {
      state('loading');
      showDecodeStatus(`Loading the decoder from ${model}…`, '');
      const decoder = await local.get({ model, backend, weights, signal, onProgress: (p) => renderLoadProgress(loadView, p, 'All weights are loaded') });
      const info = decoder.loadInfo;
      loadView.bar.hidden = true;
      loadView.summary.textContent = `Decoder loaded (${decoder.backend === 'webgpu' ? 'WebGPU' : 'CPU'}, ${decoder.weights} weights): ${formatBytes(info.weightBytes)} of weights in ${info.loadSeconds.toFixed(1)} s, `
        + `${formatBytes(info.downloadedBytes)} downloaded, ${formatBytes(info.cachedBytes)} from this browser's cache.`;
      showCacheUsage();
      return decoder;
    }
  };
}

main().catch((e) => { $('progress').hidden = true; status(`The model failed to load: ${e.message}`, 'error'); document.body.dataset.ready = 'error'; });
