// The app's model-loading panel: Load / Cancel, per-file progress with speed and ETA, the browser cache's
// usage with a "Clear cached models" button, and errors in words. `loadModel()` resolves with the engine
// once a load succeeds; a cancelled or failed load leaves the panel ready to load again (resuming from what
// the cache kept).
//
// What it loads is the model picker's choice (welcome.js: a variant of models.js, or the ?model= address).
// Page options: ?model=BASE_URL (a folder in the Hugging Face layout; default: the real model on Hugging
// Face), &prior=URL, &backend=auto|webgpu|cpu, &autoload=0|1 (default: load at once when ?model= is given or
// the model is already in the browser cache; the multi-GB default model otherwise waits for the user's click).
// A model with listed variants (variants.json) loads as `load({ model, variant })`; the panel says which
// variant is chosen, which of them this browser keeps, and which one loaded (remembered for the next visit).
// State for tests: body[data-ready] = 'true' | 'error' | 'cancelled' after a load attempt, body[data-loading]
// during one, body[data-variant] = the variant loaded, window.__lambdaLoadProgress = the latest progress snapshot.
import { load, cacheUsage, clearCache } from '../lib/lambda-eclipse.js';
import { formatBytes, formatSeconds, rememberSpeed } from '../ui/capability.js';
import { withAdvice } from '../ui/advice.js';
import { rememberVariant } from '../ui/models.js';

export { formatBytes, formatSeconds };

const $ = (id) => document.getElementById(id);

/** The header row of a weight-file table (`renderLoadProgress`'s `view.table`). */
export const LOAD_FILES_HEAD = '<thead><tr><th>Weight file</th><th>Loaded</th><th>Size</th><th>From this browser</th></tr></thead><tbody></tbody>';

const PANEL = `
  <p class="load-source">Model: <span id="load-source"></span></p>
  <p class="load-variants" id="load-variants" hidden></p>
  <p class="load-buttons">
    <button type="button" id="load-model" class="primary">Load the model</button>
    <button type="button" id="cancel-load" hidden>Cancel</button>
  </p>
  <p id="load-summary" class="load-summary"></p>
  <table id="load-files" class="load-files" hidden>${LOAD_FILES_HEAD}</table>
  <p class="cache-line"><span id="cache-usage">Cached models: …</span>
    <button type="button" id="clear-cache">Clear cached models</button></p>`;

function status(text, kind = '') {
  $('status').textContent = text;
  $('status').className = `status ${kind}`;
}

let lastProgress = null;

/** What the panel says once every weight is on the device and only the λ engine's last step remains. */
const MODEL_FINISHING = 'All weights are loaded; the engine is computing its empty-image embedding';

/**
 * Renders one progress snapshot (see ModelReader.snapshot in model-reader.js) into `view` = `{ bar, summary,
 * table, warning }` (a <progress>, a <p>, a .load-files <table> with a <tbody>, a <p>): bytes, speed,
 * cache, ETA and one row per weight file. `finishing`: what to say once every weight is loaded.
 */
export function renderLoadProgress(view, p, finishing = MODEL_FINISHING) {
  if (p.total) {
    view.bar.hidden = false;
    view.bar.value = p.done / p.total;
  }
  const parts = [];
  if (p.phase === 'finishing') parts.push(finishing);
  else if (p.total) parts.push(`${formatBytes(p.done)} of ${formatBytes(p.total)} of weights`);
  else parts.push('reading the model files…');
  if (p.bytesPerSecond && p.phase === 'weights') parts.push(`${formatBytes(p.bytesPerSecond)}/s`);
  if (p.fromCache) parts.push(`${formatBytes(p.fromCache)} from this browser's cache`);
  if (p.phase === 'weights' && p.etaSeconds != null && p.etaSeconds > 0) parts.push(`about ${formatSeconds(p.etaSeconds)} left`);
  view.summary.textContent = parts.join(' · ');
  const rows = p.files.map((f) => {
    const tr = document.createElement('tr');
    tr.dataset.file = f.file;
    if (f.done >= f.total) tr.className = 'complete';
    const cells = [f.file, formatBytes(f.done), formatBytes(f.total), f.cached ? formatBytes(f.cached) : '—'];
    for (const c of cells) tr.append(Object.assign(document.createElement('td'), { textContent: c }));
    tr.children[0].title = f.url;
    return tr;
  });
  view.table.tBodies[0].replaceChildren(...rows);
  view.table.hidden = rows.length === 0;
  const warning = p.cacheWarning ? `${p.cacheWarning[0].toUpperCase()}${p.cacheWarning.slice(1)}.` : '';
  view.warning.hidden = !warning;
  view.warning.textContent = warning;
}

/** Shows one progress snapshot of the model's load in the panel. */
function showProgress(p) {
  lastProgress = p;
  window.__lambdaLoadProgress = p;
  renderLoadProgress({ bar: $('progress'), summary: $('load-summary'), table: $('load-files'), warning: $('cache-warning') }, p);
}

/** Shows how much this browser keeps (every model, the decoder's files too) beside "Clear cached models". */
export async function showCacheUsage() {
  if (!$('cache-usage')) return null;
  try {
    const u = await cacheUsage();
    $('cache-usage').textContent = u.available
      ? `Cached models in this browser: ${formatBytes(u.bytes)}`
      : 'This page cannot keep models (the browser cache needs https:// or localhost).';
    $('clear-cache').disabled = !u.available || u.entries === 0;
    return u;
  } catch (e) {
    $('cache-usage').textContent = `The browser cache cannot be read: ${e.message}`;
    return null;
  }
}

/** The text of the Load button for a picker choice: what a click downloads. */
function loadLabel(variant, assessment) {
  if (!variant) return 'Nothing here can run';
  if (variant.bytes == null) return 'Load the model';
  const left = assessment?.toDownload ?? variant.bytes;
  return left > 0 ? `Download ${formatBytes(left)} and start` : 'Start (already in this browser)';
}

/**
 * Renders the panel into the #model section (after #progress) and resolves with the loaded engine. `picker`
 * (welcome.js) says which model to load; `onCacheChange()` is called after a load or a clear (the pickers'
 * cached amounts change).
 */
export function loadModel({ params = new URLSearchParams(location.search), picker, onCacheChange = () => {} } = {}) {
  const prior = params.get('prior') || undefined;
  const backend = params.get('backend') || 'auto';
  const panel = Object.assign(document.createElement('div'), { id: 'load-panel', className: 'load-panel', innerHTML: PANEL });
  $('progress').after(panel);
  let controller = null;
  let loaded = false;

  /** The chosen variant: `{ variant, model, variantId, name }` (model, variantId: what load() takes). */
  const choice = () => {
    const variant = picker.selected;
    const name = variant?.id === 'custom' ? variant.url : variant?.variant ? `${variant.model} · variant ${variant.variant}` : variant?.name;
    return { variant, model: variant?.source ?? variant?.url ?? undefined, variantId: variant?.variant, name };
  };
  /** Which listed variants this browser keeps ("original: not in this browser · q8_0: in this browser, 7.2 MB"). */
  const showCachedVariants = () => {
    const listed = picker.variants.filter((v) => v.variant);
    $('load-variants').hidden = listed.length === 0;
    $('load-variants').textContent = listed.length ? `In this browser: ${listed.map((v) => {
      const cached = picker.assessments.get(v.id)?.cachedBytes ?? 0;
      return `${v.variant} ${cached > 0 ? `cached (${formatBytes(cached)})` : 'not cached'}`;
    }).join(' · ')}.` : '';
  };
  const showChoice = () => {
    showCachedVariants();
    if (controller || loaded) return;
    const { variant, name } = choice();
    $('load-source').textContent = name ?? 'none';
    $('load-model').disabled = !variant;
    const label = loadLabel(variant, variant && picker.assessments.get(variant.id));
    if ($('load-model').dataset.again !== 'true') $('load-model').textContent = label;
    $('load-model').title = label;
  };
  picker.addEventListener('change', showChoice);
  showChoice();

  return new Promise((resolve) => {
    async function start() {
      const { variant, model, variantId, name } = choice();
      if (!variant) return;
      controller = new AbortController();
      lastProgress = null;
      delete document.body.dataset.ready;
      document.body.dataset.loading = 'true';
      picker.disabled = true;
      $('load-model').hidden = true;
      $('cancel-load').hidden = false;
      $('cancel-load').disabled = false;
      $('clear-cache').disabled = true;
      $('load-files').hidden = true;
      $('load-summary').textContent = '';
      status(variant.id === 'custom' ? `Loading the model from ${name}…` : `Loading ${name}: it downloads once, then stays in this browser. You can keep this tab in the background.`);
      try {
        const engine = await load({ model, variant: variantId, prior, backend, signal: controller.signal, onProgress: showProgress });
        const info = engine.loadInfo;
        loaded = true;
        if (engine.variant) {
          rememberVariant(variant.model, engine.variant);
          document.body.dataset.variant = engine.variant;
          $('load-source').textContent = `${name} (loaded${info.downloadedBytes === 0 || info.cachedBytes >= info.weightBytes ? ' from this browser\'s cache' : ''})`;
        }
        status('Model loaded. Try an example, or type a prompt and give a photo for each subject.', 'ok');
        $('progress').hidden = true;
        $('cancel-load').hidden = true;
        $('load-summary').textContent = `Loaded ${formatBytes(info.weightBytes)} of weights in ${info.loadSeconds.toFixed(1)} s: `
          + `${formatBytes(info.downloadedBytes)} downloaded, ${formatBytes(info.cachedBytes)} from this browser's cache. `
          + `Engine memory (wasm): ${formatBytes(info.memoryBytes)}.`;
        // A real download's speed makes the next estimate of the wait (small ones say little about the line).
        if (info.downloadedBytes > 20e6) rememberSpeed(info.downloadedBytes / info.loadSeconds);
        document.body.dataset.ready = 'true';
        // Ask the browser not to evict the cached model under storage pressure (it may say no).
        navigator.storage?.persist?.().catch(() => {});
        resolve(engine);
      } catch (e) {
        $('cancel-load').hidden = true;
        $('load-model').hidden = false;
        $('load-model').textContent = 'Load again';
        $('load-model').dataset.again = 'true';
        picker.disabled = false;
        const p = lastProgress;
        $('load-summary').textContent = p?.total ? `Stopped at ${formatBytes(p.done)} of ${formatBytes(p.total)} of weights.` : '';
        if (e.name === 'AbortError') {
          status('Loading cancelled. What was already downloaded is kept in this browser: Load again continues from there.', 'warn');
          document.body.dataset.ready = 'cancelled';
        } else {
          status(`The model failed to load: ${withAdvice(e.message).replace(/[.\s]*$/, '.')} Then press Load again.`, 'error');
          document.body.dataset.ready = 'error';
        }
      } finally {
        delete document.body.dataset.loading;
        controller = null;
        await showCacheUsage();
        onCacheChange();
      }
    }

    $('load-model').onclick = () => { if (!controller) start(); };
    $('cancel-load').onclick = () => {
      $('cancel-load').disabled = true;
      status('Cancelling…');
      controller?.abort();
    };
    $('clear-cache').onclick = async () => {
      $('clear-cache').disabled = true;
      try {
        const freed = await clearCache();
        status(`Cleared ${formatBytes(freed)} of cached models.`, document.body.dataset.ready === 'true' ? 'ok' : '');
      } catch (e) {
        status(`Could not clear the cached models: ${e.message}`, 'error');
      }
      await showCacheUsage();
      onCacheChange();
    };

    (async () => {
      await showCacheUsage();
      const auto = params.get('autoload');
      const { variant } = choice();
      const cached = variant ? (picker.assessments.get(variant.id)?.cachedBytes ?? 0) > 0 : false;
      // A model given by address (?model=, with ?variant= when it lists variants) loads at once, as a cached one.
      const addressed = variant?.id === 'custom' || (variant?.variant && variant.variant === params.get('variant'));
      if (variant && (auto === '1' || (auto !== '0' && (addressed || cached)))) start();
      else if (!variant) status('None of the models can run on this device: see why under each of them below.', 'error');
      else status(`Nothing is downloaded yet. Check what this device can run, choose a model, then press “${$('load-model').textContent}”.`);
    })();
  });
}
