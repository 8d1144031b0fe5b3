// End-to-end: a model that lists its quantized copies (issue #15, item 4). The tiny golden model is copied into
// tests/output/variants-site/ and quantized there to q8_0 and q4_m by `lambda-eclipse quantize --list`
// (README's hub layout: the copies in the model's folder, `variants.json` at its root), then served at
// /variants/. Checked: the JS API's `load({ model, variant })` (the copy loads and reproduces the goldens at
// cosine ≥ 0.999 — the bound for 8 bits, as quantized.test.mjs — an unknown variant is refused naming
// those listed); the app's picker offers original / q8_0 / q4_m with their download sizes, loads the one
// chosen, remembers it across a reload and says which is cached; and on the CPU, in a browser whose
// WebAssembly memory is smaller than the original needs, the original is refused before any weight is
// fetched, naming the variants that fit — in the picker and in the API.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { CHROMIUM, GOLDENS, IMAGES, SCREENSHOTS, chromium, startStaticServer } from './browser.mjs';
import { golden, makeVariantsSite } from './helpers.mjs';

const MIB = 1024 ** 2;
let server, browser, base, listing;

before(async () => {
  let dir;
  ({ dir, listing } = makeVariantsSite());
  ({ process: server, base } = await startStaticServer({ args: ['--mount', `/variants/=${dir}`] }));
  mkdirSync(SCREENSHOTS, { recursive: true });
  browser = await chromium.launch(CHROMIUM);
});
after(async () => {
  await browser?.close();
  server?.kill();
});

const stats = async () => (await fetch(`${base}/__stats`)).json();
const resetStats = () => fetch(`${base}/__stats/reset`, { method: 'POST' });
/** Requests for weight files under `prefix`. */
const weightRequests = (s, prefix) => Object.entries(s).filter(([p]) => p.startsWith(prefix) && /\.(safetensors|gguf)$/.test(p)).reduce((a, [, n]) => a + n, 0);

const cosine = (a, b) => {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  return dot / Math.sqrt(na * nb);
};

/** "12.0 MB" as the page writes sizes (SI, one decimal). */
const mb = (bytes) => `${(bytes / 1e6).toFixed(1)} MB`;

/** A browser whose WebAssembly memory ends at `limit` bytes (as on a phone or a 32-bit browser): a memory
 * whose maximum exceeds it cannot be made. Only the page's own memories are affected (the engine's worker
 * keeps its own), so it is what the page's check sees before any download. */
async function pageWithWasmLimit(limit) {
  const context = await browser.newContext();
  await context.addInitScript((pages) => {
    const Real = WebAssembly.Memory;
    WebAssembly.Memory = function Memory(desc) {
      if ((desc.maximum ?? desc.initial) > pages) throw new RangeError('WebAssembly.Memory(): could not allocate memory');
      return new Real(desc);
    };
  }, limit / 65536);
  const page = await context.newPage();
  return { page, context };
}

/** The picker's rows: `{ id, verdict, disabled, checked, cached, size, text }`. */
const rows = (page) => page.$$eval('#model-picker .variant', (list) => list.map((r) => ({
  id: r.dataset.variant, verdict: r.dataset.verdict, cached: r.dataset.cached, disabled: r.querySelector('input').disabled,
  checked: r.querySelector('input').checked, size: r.querySelector('.size').textContent, text: r.querySelector('.variant-desc').innerText,
})));

test('quantize --list lists the original and both copies with their download and CPU bytes', () => {
  assert.deepEqual(Object.keys(listing).sort(), ['original', 'q4_m', 'q8_0']);
  assert.deepEqual([listing.original.url, listing.q8_0.url, listing.q4_m.url], ['./', 'q8_0/', 'q4_m/']);
  assert.ok(listing.q4_m.bytes < listing.q8_0.bytes && listing.q8_0.bytes < listing.original.bytes, JSON.stringify(listing));
  assert.ok(listing.q4_m.cpuBytes < listing.q8_0.cpuBytes && listing.q8_0.cpuBytes < listing.original.cpuBytes, JSON.stringify(listing));
});

test('load({ model, variant }) loads the listed copy, which reproduces the goldens at cosine ≥ 0.999; unknown variants are refused by name', async () => {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${base}/index.html?autoload=0`);
  const manifest = JSON.parse(readFileSync(path.join(GOLDENS, 'manifest.json'), 'utf8'));
  const c = manifest.cases.find((x) => x.subjects.length > 0);
  await resetStats();
  const out = await page.evaluate(async ({ c, noise }) => {
    const { load, listVariants } = await import('/www/lib/lambda-eclipse.js');
    const bytes = async (url) => new Uint8Array(await (await fetch(url)).arrayBuffer());
    const refusal = async (options) => { try { (await load(options)).dispose(); return null; } catch (e) { return e.message; } };
    const listed = (await listVariants('/variants/')).map((v) => ({ id: v.id, url: new URL(v.url).pathname }));
    const engine = await load({ model: '/variants/', variant: 'q8_0', backend: 'cpu', cache: false });
    const photos = await Promise.all(c.subjects.map((s) => bytes(`/shared/assets/images/${s.image}`)));
    const text = await engine.embedText(c.prompt);
    const prior = await engine.prior({ prompt: c.prompt, subjects: c.subjects.map((s, i) => ({ keyword: s.keyword, image: photos[i] })), noise: new Float32Array(noise) });
    const got = { variant: engine.variant, backend: engine.backend, info: engine.loadInfo, lastHiddenState: Array.from(text.lastHiddenState), imageEmbeds: Array.from(prior.imageEmbeds) };
    engine.dispose();
    // The copy's folder is also a plain model URL; 'original' is the model itself.
    const plain = await load({ model: '/variants/q8_0/', backend: 'cpu', cache: false });
    got.plainWeightBytes = plain.loadInfo.weightBytes;
    plain.dispose();
    const original = await load({ model: '/variants/', variant: 'original', backend: 'cpu', cache: false });
    got.original = { variant: original.variant, weightBytes: original.loadInfo.weightBytes };
    original.dispose();
    return {
      listed, got,
      unknown: await refusal({ model: '/variants/', variant: 'q5_1', backend: 'cpu', cache: false }),
      unlisted: await refusal({ model: '/shared/goldens/lambda-tiny/model/', variant: 'q8_0', backend: 'cpu', cache: false }),
    };
  }, { c, noise: Array.from(golden(c.tensors, 'noise').data) });
  await page.close();
  assert.deepEqual(errors, []);
  assert.deepEqual(out.listed, [{ id: 'original', url: '/variants/' }, { id: 'q8_0', url: '/variants/q8_0/' }, { id: 'q4_m', url: '/variants/q4_m/' }]);
  assert.equal(out.got.variant, 'q8_0');
  assert.equal(out.got.backend, 'cpu');
  const s = await stats();
  assert.ok(weightRequests(s, '/variants/q8_0/') > 0, JSON.stringify(s));
  assert.equal(out.got.plainWeightBytes, out.got.info.weightBytes, 'the copy by variant and by folder URL are the same files');
  assert.equal(out.got.original.variant, 'original');
  assert.ok(out.got.original.weightBytes > 3 * out.got.info.weightBytes, JSON.stringify(out.got));
  const text = cosine(out.got.lastHiddenState, golden(c.tensors, 'last_hidden_state').data);
  const prior = cosine(out.got.imageEmbeds, golden(c.tensors, 'image_embeds').data);
  console.log(`# q8_0 by variant, ${c.name}: cosine vs the f32 goldens: text ${text.toFixed(6)}, prior ${prior.toFixed(6)}; wasm memory ${out.got.info.memoryBytes} bytes (listed need ${listing.q8_0.cpuBytes} + 64 MiB engine)`);
  assert.ok(text >= 0.999 && prior >= 0.999, `cosines ${text} ${prior}`);
  // The listed need is an upper bound of what the CPU engine really took.
  assert.ok(out.got.info.memoryBytes <= listing.q8_0.cpuBytes + 64 * MIB, `wasm memory ${out.got.info.memoryBytes} > listed need`);
  assert.match(out.unknown, /^unknown variant "q5_1": \/variants\/ lists "original", "q8_0", "q4_m"$/);
  assert.match(out.unlisted, /^unknown variant "q8_0": \/shared\/goldens\/lambda-tiny\/model\/ lists no variants \(no variants\.json at its root\), so only "original" exists$/);
});

test('the app offers original / q8_0 / q4_m with sizes, loads the choice, remembers it across a reload and says it is cached', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${base}/index.html?model=/variants/&backend=cpu`);
  await page.waitForFunction(() => document.querySelectorAll('#model-picker .variant').length > 0 && !document.body.dataset.loading, null, { timeout: 60_000 });
  let list = await rows(page);
  assert.deepEqual(list.map((r) => r.id).slice(0, 3), ['original', 'q8_0', 'q4_m']);
  assert.deepEqual(list.slice(0, 3).map((r) => r.size), ['original', 'q8_0', 'q4_m'].map((id) => `${mb(listing[id].bytes)} download`));
  assert.deepEqual(list.slice(0, 3).map((r) => [r.verdict, r.checked, r.cached]), [['warn', true, 'false'], ['warn', false, 'false'], ['warn', false, 'false']], JSON.stringify(list));
  // Nothing loads before a click (a model with variants waits for the choice).
  assert.equal(await page.evaluate(() => document.body.dataset.ready), undefined);
  await page.click('#model-picker .variant[data-variant="q8_0"] label');
  assert.match(await page.textContent('#load-source'), /\/variants\/ · variant q8_0/);
  assert.match(await page.textContent('#load-variants'), /original not cached · q8_0 not cached · q4_m not cached/);
  await resetStats();
  await page.click('#load-model');
  await page.waitForFunction(() => document.body.dataset.ready, null, { timeout: 120_000 });
  assert.equal(await page.evaluate(() => document.body.dataset.ready), 'true', await page.textContent('#status'));
  assert.equal(await page.evaluate(() => document.body.dataset.variant), 'q8_0');
  const s = await stats();
  assert.ok(weightRequests(s, '/variants/q8_0/') > 0 && weightRequests(s, '/variants/text_encoder/') === 0, JSON.stringify(s));
  // The page's embedding from q8_0 points where the golden does.
  const inputs = await page.$$('.subject .image');
  await inputs[0].setInputFiles(path.join(IMAGES, 'chelsea.png'));
  await inputs[1].setInputFiles(path.join(IMAGES, 'coffee.png'));
  await page.evaluate((n) => { window.__lambdaNoise = new Float32Array(n); }, Array.from(golden('cat_glasses.safetensors', 'noise').data));
  await page.click('#compute');
  await page.waitForFunction(() => document.body.dataset.result === 'ready' || document.querySelector('#status').classList.contains('error'), null, { timeout: 120_000 });
  assert.equal(await page.evaluate(() => document.body.dataset.result), 'ready', await page.textContent('#status'));
  const cos = cosine(await page.evaluate(() => Array.from(window.__lambdaResult.imageEmbeds)), golden('cat_glasses.safetensors', 'image_embeds').data);
  assert.ok(cos >= 0.999, `the app's q8_0 embedding: cosine ${cos}`);
  assert.match(await page.textContent('#load-variants'), /q8_0 cached \([\d.]+ MB\)/);

  // Reload: the choice is remembered, the panel says it is cached, and it loads from the cache at once.
  await resetStats();
  await page.reload();
  await page.waitForFunction(() => document.body.dataset.ready, null, { timeout: 120_000 });
  assert.equal(await page.evaluate(() => document.body.dataset.ready), 'true', await page.textContent('#status'));
  assert.equal(await page.evaluate(() => document.body.dataset.variant), 'q8_0');
  list = await rows(page);
  assert.deepEqual(list.slice(0, 3).map((r) => [r.id, r.checked, r.cached]), [['original', false, 'false'], ['q8_0', true, 'true'], ['q4_m', false, 'false']]);
  assert.match(await page.textContent('#load-variants'), /original not cached · q8_0 cached \([\d.]+ MB\) · q4_m not cached/);
  assert.match(await page.textContent('#load-source'), /variant q8_0 \(loaded from this browser's cache\)/);
  // Nothing at all from the model: its files and the listing (remembered from the last visit) come from the browser.
  assert.deepEqual(Object.keys(await stats()).filter((p) => p.startsWith('/variants/')), [], 'a reload asked the model for files');
  await page.screenshot({ path: path.join(SCREENSHOTS, 'variants-reloaded.png'), fullPage: true });

  // ?variant= in the address wins over the remembered choice.
  await page.goto(`${base}/index.html?model=/variants/&backend=cpu&variant=q4_m&autoload=0`);
  await page.waitForFunction(() => document.querySelectorAll('#model-picker .variant').length > 0 && document.querySelector('#load-source').textContent, null, { timeout: 60_000 });
  assert.equal((await rows(page)).find((r) => r.checked)?.id, 'q4_m');
  assert.deepEqual(errors, []);
  await context.close();
});

test('on the CPU, a variant larger than the WebAssembly memory is refused before downloading, naming those that fit', async () => {
  // 74 MiB: the copies' listed needs (weights + 64 MiB for the engine) fit, the original's does not.
  const limit = 74 * MIB;
  const need = (id) => listing[id].cpuBytes + 64 * MIB;
  assert.ok(need('original') > limit && need('q8_0') <= limit && need('q4_m') <= limit, JSON.stringify(listing));
  const { page, context } = await pageWithWasmLimit(limit);
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await resetStats();
  await page.goto(`${base}/index.html?model=/variants/&backend=cpu&autoload=0`);
  await page.waitForFunction(() => document.querySelectorAll('#model-picker .variant').length > 0 && document.querySelector('#load-source').textContent, null, { timeout: 60_000 });
  const list = await rows(page);
  const [original, q8, q4] = list;
  const fits = `q8_0 \\(${mb(listing.q8_0.bytes)} download, ~${mb(need('q8_0'))} on the CPU\\) or q4_m \\(${mb(listing.q4_m.bytes)} download, ~${mb(need('q4_m'))} on the CPU\\) fit`;
  const words = new RegExp(`The original needs ~${mb(need('original'))} on the CPU, more than this browser's 74 MiB of WebAssembly memory; ${fits}\\.`);
  assert.equal(original.verdict, 'no');
  assert.equal(original.disabled, true);
  assert.match(original.text, words);
  assert.deepEqual([q8.verdict, q8.disabled, q8.checked, q4.disabled], ['warn', false, true, false], JSON.stringify(list));
  await page.screenshot({ path: path.join(SCREENSHOTS, 'variants-cpu-limit.png'), fullPage: true });
  // The API refuses it too, with the same words, before a weight is fetched.
  const refused = await page.evaluate(async () => {
    const { load } = await import('/www/lib/lambda-eclipse.js');
    try { await load({ model: '/variants/', variant: 'original', backend: 'cpu', cache: false }); return null; } catch (e) { return e.message; }
  });
  assert.match(refused ?? 'loaded', words);
  assert.equal(weightRequests(await stats(), '/variants/'), 0, 'weights were fetched before the refusal');
  assert.deepEqual(errors, []);
  await context.close();
});
