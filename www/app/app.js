// The λ-ECLIPSE studio page. Two screens:
//  1. Setup (first visit): what this device can run (welcome.js: WebGPU adapter, storage, engine memory) and
//     a picker of what to download, with sizes and the wait; nothing large downloads before the user's click
//     (load-panel.js). ?model=URL, ?decoder=URL add the models at those addresses (and load ?model= at once).
//  2. The studio: prompt (keywords highlighted) and subject cards on one side, the picture large on the other,
//     with a history strip of this session (restore, compare, export), one-click examples, and panels that
//     open when wanted (edge control, picture settings, interpolation, details).
// "Create the picture" computes the embedding, then decodes it as the settings say: on this device (the
// decoder in its own worker, loaded on first use), on an endpoint, or not at all. All model work runs in Web
// Workers. Page options: see README ("The web app").
//
// State for tests: body[data-ready], body[data-result] = 'pending' | 'ready' | 'error', body[data-decoded]
// (endpoint) and body[data-decoded-local] = 'loading' | 'pending' | 'ok' | 'error' | 'cancelled',
// body[data-created] = 'pending' | 'ok' | 'error' (the whole Create); window.__lambdaResult (the result shown).
import { decode } from '../lib/decoder-client.js';
import { DEFAULT_DECODER, cacheUsage } from '../lib/lambda-eclipse.js';
import { download } from '../lib/tensor-files.js';
import { SubjectList, SUBJECTS_CSS, bindKeywordCheck } from '../ui/subjects.js';
import { LocalDecoder, drawRgba, pngOf, readDecoderInput, stepText, timingText } from '../ui/local-decoder.js';
import { checkDevice, formatBytes, formatSeconds } from '../ui/capability.js';
import { DECODER_VARIANTS, MODEL_VARIANTS, customVariant, listedVariants, rememberListing, rememberVariant, rememberedListing, rememberedVariant } from '../ui/models.js';
import { listVariants } from '../lib/variants.js';
import { withAdvice } from '../ui/advice.js';
import { EdgeControl } from './control.js';
import { InterpolationPanel } from './interpolation.js';
import { exportResult } from './export.js';
import { showBackend } from './backend.js';
import { loadModel, renderLoadProgress, showCacheUsage, LOAD_FILES_HEAD } from './load-panel.js';
import { VariantPicker, renderDeviceFacts } from './welcome.js';
import { SessionHistory } from './history.js';
import { EXAMPLE_IMAGES, exampleFiles, renderExamples } from './examples.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const status = (text, kind = '') => { $('status').textContent = text; $('status').className = `status ${kind}`; };
const fact = (list, k, v) => { const dt = document.createElement('dt'); dt.textContent = k; const dd = document.createElement('dd'); dd.textContent = v; list.append(dt, dd); };
const backendName = (b) => (b === 'webgpu' ? 'WebGPU' : 'CPU (wasm)');

let lastResult = null;
let lastInfo = null;
/** What "Decode" decodes: `{ label, imageEmbeds, negativeImageEmbeds, noise, steps, entry }` (see readDecoderInput). */
let decodeInput = null;
let history = null;
let decoderPicker = null;
const localDecoder = new LocalDecoder();

function setDecodeInput(input) {
  decodeInput = input;
  $('decode-source').textContent = input.label;
  if ($('stage').dataset.state === 'empty') setStage('embedding');
}

/** The result stage: 'empty' | 'computing' | 'embedding' | 'decoding' | 'picture'. */
function setStage(state) {
  const stage = $('stage');
  stage.dataset.state = state;
  $('stage-empty').hidden = !['empty', 'embedding', 'computing'].includes(state);
  $('stage-empty').textContent = {
    empty: 'Your picture appears here.',
    computing: 'Computing the embedding of your prompt and photos…',
    embedding: 'The embedding is ready. Decode it into a picture below, or save it.',
  }[state] ?? '';
  $('decoded').hidden = state !== 'picture';
  // After a local decode the last step's line and latent preview stay, small, under the picture.
  $('stage-progress').hidden = state !== 'decoding' && state !== 'picture';
}

/** Page options that preset the picture settings: &width= &height= &steps= &guidance= &scheduler= &seed=. */
function applyPageOptions() {
  for (const id of ['width', 'height', 'steps', 'guidance', 'scheduler', 'seed']) if (params.has(id)) $(id).value = params.get(id);
}

async function main() {
  applyPageOptions();
  // The decoder works without the λ model (an embedding file), so it is ready while the model loads.
  setupDecoder();
  history = new SessionHistory({
    root: $('history'), list: $('history-list'), hint: $('history-hint'), count: $('history-count'), compareToggle: $('compare-toggle'),
    compare: $('compare'), compareGrid: $('compare-grid'), compareClose: $('compare-close'), exportButton: $('export-session'),
  }, { onRestore: (entry) => (entry.result ? restore(entry) : restorePicture(entry)), announce: (t) => status(t) });

  const device = { ...(await checkDevice()), backend: params.get('backend') || 'auto' };
  window.__lambdaDevice = device;
  renderDeviceFacts($('device-facts'), device);
  $('capability').setAttribute('aria-busy', 'false');
  $('device-badge').textContent = device.webgpu.available ? `WebGPU · ${device.webgpu.name}` : 'No WebGPU: CPU only';
  $('device-badge').hidden = false;

  const model = params.get('model');
  // A model given by address may list its quantized copies (variants.json): the picker then offers each, and
  // starts from ?variant=, else the choice remembered for that model, else the original.
  // The listing is read from the network unless the variant this visit would load is in the browser cache
  // already: then the one remembered from the last read serves, and a reload asks the network nothing.
  const asked = params.get('variant');
  let listed = null;
  if (model) {
    const remembered = rememberedListing(model);
    const wanted = remembered === undefined ? undefined : remembered?.find((v) => v.id === (asked ?? rememberedVariant(model) ?? 'original'));
    const cached = remembered !== undefined && (await cacheUsage(wanted?.url ?? model).catch(() => ({ bytes: 0 }))).bytes > 0;
    if (cached) listed = remembered;
    else {
      try {
        listed = await listVariants(model);
        rememberListing(model, listed);
      } catch (e) {
        listed = remembered ?? null;
        if (!listed) status(`The model's list of variants cannot be read: ${e.message}`, 'warn');
      }
    }
  }
  if (asked && listed && !listed.some((v) => v.id === asked)) status(`The model at ${model} has no variant “${asked}”: it lists ${listed.map((v) => v.id).join(', ')}.`, 'error');
  const modelPicker = new VariantPicker($('model-picker'), {
    name: 'model-variant', device, cacheKind: 'model',
    variants: model ? [...(listed ? listedVariants(model, listed) : [customVariant(model, 'model')]), ...MODEL_VARIANTS] : MODEL_VARIANTS,
    selectedId: listed ? asked ?? rememberedVariant(model) ?? 'original' : model ? 'custom' : undefined,
  });
  if (listed) modelPicker.addEventListener('choose', () => rememberVariant(model, modelPicker.selected?.variant));
  const decoderUrl = params.get('decoder');
  decoderPicker = new VariantPicker($('decoder-picker'), {
    name: 'decoder-variant', device, cacheKind: 'decoder',
    variants: [...(decoderUrl ? [customVariant(decoderUrl, 'decoder')] : []), ...DECODER_VARIANTS,
      { id: 'none', name: 'Not now: embeddings only (or a decoder endpoint, set in Picture settings)', url: null, bytes: 0, needs: {} }],
    selectedId: decoderUrl ? 'custom' : undefined,
  });
  decoderPicker.addEventListener('change', applyDecoderChoice);
  await Promise.all([modelPicker.refresh(), decoderPicker.refresh()]);

  const engine = await loadModel({ params, picker: modelPicker, onCacheChange: () => { modelPicker.refresh(); decoderPicker.refresh(); } });
  fact($('facts'), 'Compute backend', engine.backend === 'webgpu' ? 'WebGPU' : `CPU (wasm)${engine.fallbackReason ? ` — WebGPU unavailable: ${engine.fallbackReason}` : ''}`);
  fact($('facts'), 'Embedding size', engine.embeddingDim);
  const info = await showBackend({ engine, facts: $('facts'), notice: $('backend-notice'), select: $('backend-choice') });
  $('backend').hidden = false;
  $('device-badge').textContent = engine.backend === 'webgpu' ? `Computing with WebGPU${info.adapter ? ` · ${info.adapter}` : ''}` : 'Computing on the CPU (WebAssembly)';
  const chosen = modelPicker.selected;
  $('setup-title').textContent = 'Model and device';
  $('setup-note').textContent = `${chosen?.id === 'custom' ? chosen.url : chosen?.variant ? `${chosen.model} · ${chosen.variant}` : chosen?.name ?? 'model'} · loaded · ${backendName(engine.backend)}`;
  $('setup').open = false;
  setupCompose(engine);
  document.body.dataset.ready = 'true';
}

let appliedDecoder;
/** The decoder picker's choice → the settings: the decoder's address and whether Create decodes here. */
function applyDecoderChoice() {
  const v = decoderPicker.selected;
  if (appliedDecoder === (v?.id ?? null)) { updateCreateHint(); return; }
  appliedDecoder = v?.id ?? null;
  if (!v || v.id === 'none') {
    if (document.querySelector('input[name="decode-with"]:checked')?.value === 'local') $(localStorage.getItem('lambda-eclipse.endpoint') ? 'decode-with-endpoint' : 'decode-with-none').checked = true;
  } else {
    $('decoder-url').value = typeof v.url === 'string' ? v.url : DEFAULT_DECODER;
    $('decode-with-local').checked = true;
  }
  updateCreateHint();
}

const decodeWith = () => document.querySelector('input[name="decode-with"]:checked')?.value ?? 'local';

/** The Create button's words and the line under it: what a click does, and what it downloads. */
function updateCreateHint() {
  const mode = decodeWith();
  $('create').textContent = mode === 'none' ? 'Create the embedding' : 'Create the picture';
  const s = decoderSettings();
  let hint;
  if (mode === 'none') hint = 'Makes the embedding only (Picture settings says how to make a picture).';
  else if (mode === 'endpoint') hint = s.endpoint ? `Makes the embedding here, then the picture on ${s.endpoint} (only the embedding is sent, never your photos).` : 'Set the decoder endpoint in Picture settings first.';
  else {
    const model = $('decoder-url').value.trim() || DEFAULT_DECODER;
    const loaded = localDecoder.current({ model, backend: params.get('backend') || 'auto', weights: $('decoder-weights').value });
    const v = decoderPicker?.selected;
    const a = v && decoderPicker.assessments.get(v.id);
    const known = v && v.url === model && v.bytes != null;
    hint = loaded ? 'Makes the embedding, then the picture on this device.'
      : known && a.toDownload > 0 ? `Makes the embedding, then the picture on this device. The first picture downloads the decoder: ${formatBytes(a.toDownload)}, once${a.waitSeconds ? ` (about ${formatSeconds(a.waitSeconds)})` : ''}.`
        : 'Makes the embedding, then the picture on this device (the decoder loads first).';
  }
  $('create-hint').textContent = hint;
  $('settings-note').textContent = `${s.width}×${s.height} · ${s.steps} steps · ${mode === 'local' ? 'on this device' : mode === 'endpoint' ? 'on the endpoint' : 'embedding only'}`;
}

/** Prompt, subjects, edge control, seed → Create (embedding, then picture) or Embedding only. */
function setupCompose(engine) {
  document.head.append(Object.assign(document.createElement('style'), { textContent: SUBJECTS_CSS }));
  const list = new SubjectList($('subjects'));
  list.attachPaste(document);
  list.add('cat');
  list.add('glasses');
  $('add-subject').onclick = () => {
    const slot = list.add();
    if (!slot) status('Four subjects at most.', 'error'); else slot.querySelector('.keyword').focus();
  };
  list.addEventListener('change', () => { $('add-subject').disabled = list.slots.length >= 4; });
  const checkKeywords = bindKeywordCheck({ engine, prompt: $('prompt'), list, preview: $('prompt-preview'), warnings: $('keyword-warnings') });
  const control = new EdgeControl({ input: $('control'), low: $('canny-low'), high: $('canny-high'), canvas: $('canny-preview'), status: $('control-status'), clear: $('control-clear'), zone: $('control-zone') });
  const interpolation = new InterpolationPanel($('interpolation'), { decodeCell: decodeEmbedding });
  $('interpolation').hidden = false;
  $('compose-waiting').hidden = true;
  $('compose').hidden = false;
  $('examples').hidden = false;
  let busy = false;
  let computing = false;
  // Busy buttons are marked aria-disabled, not disabled: a disabled button loses the keyboard focus.
  const markBusy = () => {
    $('compute').setAttribute('aria-disabled', String(computing));
    $('create').setAttribute('aria-disabled', String(computing || busy));
  };

  /** Computes the embedding of the form; resolves the history entry, or null (the status says why). */
  async function compute() {
    const { subjects, problems } = list.collect();
    if (problems.length) { status(problems.join(' '), 'error'); return null; }
    if (computing) return null;
    const prompt = $('prompt').value;
    const seed = Number($('seed').value);
    computing = true;
    markBusy();
    document.body.dataset.result = 'pending';
    setStage('computing');
    status('Computing the embedding…');
    const t0 = performance.now();
    try {
      await Promise.all([list.settled(), checkKeywords()]);
      // window.__lambdaNoise: an explicit ε (tests inject the golden noise); otherwise the seed box.
      const noise = window.__lambdaNoise instanceof Float32Array ? window.__lambdaNoise : undefined;
      const { low, high } = control.thresholds;
      const r = await engine.prior({ prompt, subjects, control: control.file ?? undefined, cannyLow: low, cannyHigh: high, seed, noise });
      lastResult = r;
      lastInfo = { prompt, seed: noise ? 'explicit noise' : seed, keywords: subjects.map((s) => s.keyword), backend: engine.backend, seconds: (performance.now() - t0) / 1000 };
      window.__lambdaResult = r;
      const entry = history.add({ prompt, seed: lastInfo.seed, subjects: list.slots.map((s) => ({ keyword: s.querySelector('.keyword').value, file: s.file ?? null })), control: control.file, result: r, info: lastInfo });
      showResult(r, engine.backend, entry);
      interpolation.addResult(`“${prompt}”${subjects.length ? ` with ${subjects.map((s) => s.keyword).join(', ')}` : ''}, seed ${lastInfo.seed}`, r);
      setDecodeInput({ label: `the result above (“${prompt}”, seed ${lastInfo.seed})`, imageEmbeds: r.imageEmbeds, negativeImageEmbeds: r.negativeImageEmbeds, noise: null, steps: null, entry });
      setStage('embedding');
      document.body.dataset.result = 'ready';
      status(r.warnings.length ? `Done, with ${r.warnings.length} warning${r.warnings.length > 1 ? 's' : ''} (see the result).` : 'Done.', r.warnings.length ? 'warn' : 'ok');
      return entry;
    } catch (e) {
      document.body.dataset.result = 'error';
      setStage(lastResult ? 'embedding' : 'empty');
      status(`Could not compute: ${withAdvice(e.message)}${engine.alive ? '' : ' Reload the page to load the model again.'}`, 'error');
      return null;
    } finally {
      computing = false;
      markBusy();
    }
  }

  /** The whole Create: the embedding, then the picture as the settings say. */
  async function create() {
    if (busy) return;
    busy = true;
    markBusy();
    document.body.dataset.created = 'pending';
    try {
      const entry = await compute();
      if (!entry) { document.body.dataset.created = 'error'; return; }
      const mode = decodeWith();
      const warned = entry.result.warnings.length ? ` Note: ${entry.result.warnings.join(' ')}` : '';
      let ok = true;
      if (mode === 'local') ok = await decodeLocally();
      else if (mode === 'endpoint') ok = await decodeOnEndpoint();
      if (ok && mode !== 'none') status(`Done: your picture is ready (result ${entry.id} in this session).${warned}`, warned ? 'warn' : 'ok');
      document.body.dataset.created = ok ? 'ok' : 'error';
    } finally {
      busy = false;
      markBusy();
    }
  }

  $('compose').onsubmit = (ev) => { ev.preventDefault(); create(); };
  $('compute').onclick = () => compute();
  for (const format of ['safetensors', 'npy', 'json']) {
    $(`export-${format}`).onclick = () => { if (lastResult) exportResult(lastResult, lastInfo, format); };
  }

  /** Brings a history entry back: the form, the embedding, the picture. */
  restore = async (entry) => {
    $('prompt').value = entry.prompt ?? '';
    $('prompt').dispatchEvent(new Event('input'));
    if (entry.seed != null && entry.seed !== 'explicit noise') $('seed').value = entry.seed;
    await list.setSubjects(entry.subjects?.length ? entry.subjects : []);
    await control.set(entry.control ?? null);
    lastResult = entry.result;
    lastInfo = entry.info;
    window.__lambdaResult = entry.result;
    showResult(entry.result, entry.info.backend, entry);
    setDecodeInput({ label: `the result above (“${entry.prompt}”, seed ${entry.seed})`, imageEmbeds: entry.result.imageEmbeds, negativeImageEmbeds: entry.result.negativeImageEmbeds, noise: null, steps: null, entry });
    if (entry.image) showPicture(entry.image); else setStage('embedding');
    status(`${history.describe(entry)} is back.`, 'ok');
  };

  const base = new URL(params.get('examples') || EXAMPLE_IMAGES, document.baseURI);
  renderExamples($('example-list'), base, async (example, button) => {
    if (busy) return;
    for (const b of $('example-list').querySelectorAll('button')) b.disabled = true;
    try {
      status(`Example “${example.title}”: fetching its photos…`);
      const files = await exampleFiles(example, base);
      $('prompt').value = example.prompt;
      $('prompt').dispatchEvent(new Event('input'));
      await list.setSubjects(files.subjects);
      await control.set(files.control);
      await create();
    } catch (e) {
      status(`The example could not start: ${e.message}.`, 'error');
    } finally {
      for (const b of $('example-list').querySelectorAll('button')) b.disabled = false;
      button.focus();
    }
  });
  $('decode-with-local').closest('fieldset').addEventListener('change', updateCreateHint);
  for (const id of ['width', 'height', 'steps', 'endpoint', 'decoder-url', 'decoder-weights']) $(id).addEventListener('input', updateCreateHint);
  updateCreateHint();
}

/** Brings back a full result (set up with the compose form, once the model is loaded). */
let restore = restorePicture;

/** Brings back a result that is only a picture (an embedding file decoded). */
function restorePicture(entry) {
  if (entry.image) showPicture(entry.image);
  status(`${history.describe(entry)} is back.`, 'ok');
}

/** The result's details (embedding, seed, timings, engine) and its warnings. */
function showResult(r, backend, entry) {
  $('result').hidden = false;
  $('warnings').replaceChildren(...r.warnings.map((w) => Object.assign(document.createElement('li'), { textContent: w })));
  $('timings').replaceChildren();
  fact($('timings'), 'computed on', backendName(backend));
  let total = 0;
  for (const [stage, ms] of Object.entries(r.timings)) { fact($('timings'), stage, `${ms.toFixed(1)} ms`); total += ms; }
  fact($('timings'), 'total', `${total.toFixed(1)} ms`);
  $('timings').lastElementChild.className = 'total';
  $('timings').lastElementChild.previousElementSibling.className = 'total';
  const norm = Math.hypot(...r.imageEmbeds);
  $('summary').textContent = `Result ${entry?.id ?? ''} · seed ${entry?.seed ?? lastInfo?.seed} · image_embeds: ${r.imageEmbeds.length} values, L2 norm ${norm.toFixed(4)}; first: ${Array.from(r.imageEmbeds.slice(0, 4), (x) => x.toFixed(4)).join(', ')}…`;
}

/** The picture settings: `{ endpoint, token, seed, steps, guidance, width, height, scheduler }`. */
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

/** Shows a picture `{ blob, url, caption, alt }` large in the stage (in view), downloadable. `local`: it was
 * just decoded on this device (its last step and latent preview stay shown). */
function showPicture(picture, { local = false } = {}) {
  if (!local) {
    $('decode-local-step').textContent = '';
    $('decode-preview').hidden = true;
  }
  const img = $('decoded-image');
  img.src = picture.url;
  img.alt = picture.alt;
  $('decoded-caption').textContent = picture.caption;
  $('download-decoded').hidden = false;
  $('download-decoded').onclick = () => download(picture.blob, 'lambda-eclipse-picture.png', 'image/png');
  $('result').hidden = false;
  setStage('picture');
  return img.decode().catch(() => {}).then(() => {
    const r = img.getBoundingClientRect();
    if (r.top < 0 || r.bottom > innerHeight) img.scrollIntoView({ block: 'nearest' });
  });
}

/** A decoded Blob → the stage and the history entry of what was decoded. */
async function showDecoded(blob, caption, input, { local = false } = {}) {
  const entry = input.entry ?? history.add({ label: input.label, prompt: null, seed: null, result: null, info: null });
  const who = entry.prompt != null ? `“${entry.prompt}”${entry.info?.keywords?.length ? ` with your photos for ${entry.info.keywords.join(', ')}` : ''}` : input.label;
  const picture = { blob, url: URL.createObjectURL(blob), caption, alt: `The picture made from ${who}` };
  history.setImage(entry, picture);
  history.setCurrent(entry);
  await showPicture(picture, { local });
}

/** Decodes the current input on the endpoint; resolves whether it worked. */
async function decodeOnEndpoint() {
  if (!decodeInput) { showDecodeStatus('Compute an embedding or choose an embedding file first.', 'error'); return false; }
  const { endpoint, token, scheduler, ...settings } = decoderSettings();
  if (!endpoint) { showDecodeStatus('Enter the decoder endpoint URL first (Picture settings).', 'error'); return false; }
  const input = decodeInput;
  if ($('decode').getAttribute('aria-disabled') === 'true') return false;
  $('decode').setAttribute('aria-disabled', 'true');
  document.body.dataset.decoded = 'pending';
  showDecodeStatus(`Decoding on ${endpoint}…`, '');
  try {
    const r = await decode({ endpoint, token, imageEmbeds: input.imageEmbeds, negativeImageEmbeds: input.negativeImageEmbeds ?? undefined, ...settings });
    await showDecoded(r.blob, `${settings.width}×${settings.height}, ${settings.steps} steps, guidance ${settings.guidance}, seed ${r.seed}, decoded in ${Math.round(r.decodeMs)} ms`, input);
    showDecodeStatus('Decoded.', 'ok');
    document.body.dataset.decoded = 'ok';
    return true;
  } catch (e) {
    showDecodeStatus(withAdvice(e.message), 'error');
    document.body.dataset.decoded = 'error';
    return false;
  } finally {
    $('decode').setAttribute('aria-disabled', 'false');
  }
}

/** The decoder side: the embedding to decode (computed, or a file), the endpoint fields (remembered). */
function setupDecoder() {
  $('decoder-url').value = params.get('decoder') || DEFAULT_DECODER;
  for (const id of ['endpoint', 'token']) {
    $(id).value = localStorage.getItem(`lambda-eclipse.${id}`) || '';
    $(id).onchange = () => localStorage.setItem(`lambda-eclipse.${id}`, $(id).value.trim());
  }
  const showEndpointButton = () => { $('decode').hidden = !$('endpoint').value.trim(); };
  $('endpoint').addEventListener('input', showEndpointButton);
  showEndpointButton();
  $('embedding-file').onchange = async () => {
    const file = $('embedding-file').files[0];
    if (!file) return;
    try {
      const input = readDecoderInput(new Uint8Array(await file.arrayBuffer()), file.name);
      setDecodeInput({ ...input, label: `${file.name} (${input.imageEmbeds.length} values${input.noise ? `, with its noise${input.steps ? ` for ${input.steps} steps` : ''}` : ''})` });
      showDecodeStatus(`Ready to decode ${file.name}.`, '');
    } catch (e) {
      showDecodeStatus(`Cannot use ${file.name}: ${e.message}`, 'error');
    }
  };
  $('decode').onclick = () => decodeOnEndpoint();
  $('decoder-load-files').innerHTML = LOAD_FILES_HEAD;
  $('cancel-decode-local').onclick = () => {
    $('cancel-decode-local').disabled = true;
    showDecodeStatus(document.body.dataset.decodedLocal === 'loading' ? 'Cancelling the download…' : 'Cancelling after the current step…', '');
    localController?.abort();
  };
  $('decode-local').onclick = () => decodeLocally();
  if (params.get('decoder-weights')) $('decoder-weights').value = params.get('decoder-weights');
}

let localController = null;

/**
 * Decodes the current input on this device: the decoder (#decoder-url, default Kandinsky 2.2 on Hugging
 * Face; &backend= as the model's; the weights select, or &decoder-weights=f16|int8|f32) loads on first use
 * with its download shown, then decodes with step progress, a live preview and Cancel. Resolves whether it
 * worked.
 */
async function decodeLocally() {
  if (!decodeInput) { showDecodeStatus('Compute an embedding or choose an embedding file first.', 'error'); return false; }
  if (localController) return false;
  const backend = params.get('backend') || 'auto';
  const input = decodeInput;
  const model = $('decoder-url').value.trim() || DEFAULT_DECODER;
  const weights = $('decoder-weights').value;
  const { seed, guidance, scheduler } = decoderSettings();
  let { width, height, steps } = decoderSettings();
  const loadView = { bar: $('decoder-progress'), summary: $('decoder-load-summary'), table: $('decoder-load-files'), warning: $('decoder-cache-warning') };
  const state = (s) => { document.body.dataset.decodedLocal = s; };
  localController = new AbortController();
  const { signal } = localController;
  $('decode-local').setAttribute('aria-disabled', 'true');
  $('cancel-decode-local').hidden = false;
  $('cancel-decode-local').disabled = false;
  $('decode-local-step').textContent = '';
  $('decode-preview').hidden = true;
  setStage('decoding');
  let phase = 'load';
  let decoder = null;
  try {
    decoder = localDecoder.current({ model, backend, weights }) ?? await loadWithProgress();
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
    const where = decoder.backend === 'webgpu' ? 'WebGPU' : 'CPU';
    showDecodeStatus(`Decoding ${input.label} on this device (${where}), ${width}×${height}…`, '');
    $('stage-progress-text').textContent = `Making the picture on this device (${where}), ${width}×${height}, ${steps} steps…`;
    const r = await decoder.decode({
      imageEmbeds: input.imageEmbeds, negativeImageEmbeds: input.negativeImageEmbeds ?? undefined,
      seed, steps, guidance, width, height, scheduler, noise: input.noise ?? undefined, signal,
      onStep: (s) => {
        $('decode-local-step').textContent = stepText(s);
        const left = (s.total - s.step) * s.msPerStep / 1000;
        $('stage-progress-text').textContent = `Making the picture on this device (${where}): step ${s.step} of ${s.total}${left >= 1 ? `, about ${formatSeconds(left)} left` : ''}.`;
        drawRgba($('decode-preview'), s.preview);
        $('decode-preview').hidden = false;
      },
    });
    await showDecoded(await pngOf(r), `${r.width}×${r.height}, guidance ${guidance}, ${input.noise ? 'noise from the file' : `seed ${seed}`}; ${timingText(r)} on this device (${where})`, input, { local: true });
    showDecodeStatus('Decoded on this device.', 'ok');
    state('ok');
    return true;
  } catch (e) {
    setStage($('decoded-image').getAttribute('src') && input.entry?.image ? 'picture' : 'embedding');
    if (e.name === 'AbortError') {
      showDecodeStatus(phase === 'load' ? 'Loading the decoder cancelled; what was downloaded is kept in this browser.' : 'Decoding cancelled.', 'warn');
      state('cancelled');
    } else {
      // A crashed decoder is gone: the next "Decode locally" loads it anew.
      const again = decoder && !decoder.alive ? ' “Decode locally” loads it again.' : '';
      showDecodeStatus(phase === 'load' ? `The decoder at ${model} could not be loaded: ${withAdvice(e.message)}` : again ? `Could not decode: ${e.message}.${again}` : `Could not decode: ${withAdvice(e.message)}`, 'error');
      state('error');
    }
    return false;
  } finally {
    localController = null;
    $('decode-local').setAttribute('aria-disabled', 'false');
    $('cancel-decode-local').hidden = true;
    $('decoder-progress').hidden = true;
    updateCreateHint();
  }

  /** Loads (or reuses) the decoder, showing the download in the stage and the details. */
  async function loadWithProgress() {
    state('loading');
    showDecodeStatus(`Loading the decoder from ${model}…`, '');
    $('stage-progress-text').textContent = 'Getting the decoder ready (downloaded once, then kept in this browser)…';
    const decoder = await localDecoder.get({
      model, backend, weights, signal,
      onProgress: (p) => {
        renderLoadProgress(loadView, p, 'All weights are loaded');
        if (p.total && p.phase === 'weights') {
          const eta = p.etaSeconds > 0 ? `, about ${formatSeconds(p.etaSeconds)} left` : '';
          $('stage-progress-text').textContent = `Downloading the decoder (once): ${Math.round((100 * p.done) / p.total)} % of ${formatBytes(p.total)}${eta}.`;
        }
      },
    });
    const info = decoder.loadInfo;
    loadView.bar.hidden = true;
    loadView.summary.textContent = `Decoder loaded (${decoder.backend === 'webgpu' ? 'WebGPU' : 'CPU'}, ${decoder.weights} weights): ${formatBytes(info.weightBytes)} of weights in ${info.loadSeconds.toFixed(1)} s, `
      + `${formatBytes(info.downloadedBytes)} downloaded, ${formatBytes(info.cachedBytes)} from this browser's cache.`;
    showCacheUsage();
    return decoder;
  }
}

main().catch((e) => { $('progress').hidden = true; status(`The page could not start: ${withAdvice(e.message)}`, 'error'); document.body.dataset.ready = 'error'; });
