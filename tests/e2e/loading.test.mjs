// End-to-end: loading the model in the app — progress, the browser cache (a reload fetches nothing; a short
// cache entry is fetched again), cancel, a truncated weight file, the server going away mid-download (the
// next load resumes from the cache), quota exceeded, a sharded checkpoint, clearing the cache, and CORS. The tiny
// golden model is served by .ci/static_server.py, which counts requests per path (/__stats). Needs pkg/
// (bash .ci/build-wasm.sh). Screenshots of the loading states go to tests/output/screenshots/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync, statSync, unlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { IMAGES, OUTPUT, ROOT, launchChromium, startStaticServer } from './browser.mjs';
import { openPanel } from './helpers.mjs';

const TINY = path.resolve(ROOT, '../shared/goldens/lambda-tiny/model');
const MODEL = '/shared/goldens/lambda-tiny/model/';
const WEIGHT_FILES = ['text_encoder/model.safetensors', 'image_encoder/model.safetensors', 'prior/diffusion_pytorch_model.safetensors'];
const SHOTS = path.join(OUTPUT, 'screenshots');
const READY = 120_000;

let browser, server, base, tmp;

/** Header of a safetensors file: `{ headerLen, tensors: { name: { dtype, shape, data_offsets } } }`. */
function header(file) {
  const buf = readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const tensors = JSON.parse(buf.subarray(8, 8 + n).toString());
  delete tensors.__metadata__;
  return { buf, headerLen: n, tensors };
}

const FLOAT = new Set(['F32', 'F16', 'BF16']);
/** Float tensors of a file: the ones the engine reads. */
const floatTensors = (file) => Object.entries(header(file).tensors).filter(([, t]) => FLOAT.has(t.dtype));

/** Tensor bytes the engine loads from the tiny model. */
const WEIGHT_BYTES = WEIGHT_FILES.flatMap((f) => floatTensors(path.join(TINY, f))).reduce((a, [, t]) => a + t.data_offsets[1] - t.data_offsets[0], 0);
/** Requests a cold load makes for the weight files: per file, the size probe, the 8-byte length, the header,
 * then one per tensor. */
const COLD_WEIGHT_REQUESTS = WEIGHT_FILES.reduce((a, f) => a + 3 + floatTensors(path.join(TINY, f)).length, 0);

/** Writes a safetensors file holding `entries` ([name, info, bytes]). */
function writeSafetensors(file, entries) {
  const json = {};
  let offset = 0;
  for (const [name, info, bytes] of entries) {
    json[name] = { dtype: info.dtype, shape: info.shape, data_offsets: [offset, offset + bytes.length] };
    offset += bytes.length;
  }
  const head = Buffer.from(JSON.stringify(json));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(head.length));
  writeFileSync(file, Buffer.concat([len, head, ...entries.map(([, , b]) => b)]));
}

/** A copy of the tiny model in `dir`: every file linked to the original, except those `edit` writes. */
function modelCopy(dir, edit) {
  for (const folder of readdirSync(TINY)) {
    mkdirSync(path.join(dir, folder), { recursive: true });
    for (const f of readdirSync(path.join(TINY, folder))) symlinkSync(path.join(TINY, folder, f), path.join(dir, folder, f));
  }
  edit(dir);
  return dir;
}

async function stats(b = base) {
  return (await fetch(`${b}/__stats`)).json();
}
const resetStats = (b = base) => fetch(`${b}/__stats/reset`, { method: 'POST' });
/** Requests made for paths under `prefix` (`.safetensors` files only when `weights`). */
const requestsUnder = (s, prefix, weights = true) =>
  Object.entries(s).filter(([p]) => p.startsWith(prefix) && (!weights || p.endsWith('.safetensors'))).reduce((a, [, n]) => a + n, 0);

async function openApp(query, { context } = {}) {
  context ??= await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  // Keep every progress snapshot the panel shows (it stores the latest in window.__lambdaLoadProgress).
  await page.addInitScript(() => {
    const seen = [];
    window.__progressHistory = seen;
    Object.defineProperty(window, '__lambdaLoadProgress', { set(v) { seen.push(v); }, get() { return seen.at(-1); } });
  });
  if (query !== null) await page.goto(`${base}/index.html?${query}`);
  return { page, context, errors };
}

const readyState = (page) => page.evaluate(() => document.body.dataset.ready);
async function waitSettled(page, timeout = READY) {
  await page.waitForFunction(() => document.body.dataset.ready, null, { timeout });
  return readyState(page);
}
/** Entries of the weight cache whose URL contains `part`. */
const cacheKeys = (page, part) => page.evaluate(async (p) => {
  const cache = await caches.open('lambda-eclipse-weights-v1');
  return (await cache.keys()).map((r) => r.url).filter((u) => u.includes(p));
}, part);

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  tmp = mkdtempSync(path.join(os.tmpdir(), 'lambda-loading-'));
  // A copy whose prior weights lose their last 1000 bytes.
  modelCopy(path.join(tmp, 'truncated'), (dir) => {
    const f = path.join(dir, 'prior/diffusion_pytorch_model.safetensors');
    const bytes = readFileSync(f);
    unlinkSync(f);
    writeFileSync(f, bytes.subarray(0, bytes.length - 1000));
  });
  // A copy whose text encoder is split into two shards with a model.safetensors.index.json.
  modelCopy(path.join(tmp, 'sharded'), (dir) => {
    const { buf, headerLen, tensors } = header(path.join(TINY, 'text_encoder/model.safetensors'));
    const entries = Object.entries(tensors).map(([name, info]) =>
      [name, info, buf.subarray(8 + headerLen + info.data_offsets[0], 8 + headerLen + info.data_offsets[1])]);
    const half = Math.ceil(entries.length / 2);
    const shards = [entries.slice(0, half), entries.slice(half)];
    const weightMap = {};
    shards.forEach((shard, i) => {
      const name = `model-0000${i + 1}-of-00002.safetensors`;
      writeSafetensors(path.join(dir, 'text_encoder', name), shard);
      for (const [t] of shard) weightMap[t] = name;
    });
    unlinkSync(path.join(dir, 'text_encoder/model.safetensors'));
    writeFileSync(path.join(dir, 'text_encoder/model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  });
  ({ process: server, base } = await startStaticServer({ args: ['--mount', `/tmp-models=${tmp}`] }));
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  server?.kill();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

test('a load shows per-file progress and completes; a reload then requests no model file at all', async () => {
  await resetStats();
  const { page, context, errors } = await openApp(`model=${MODEL}&backend=cpu`);
  assert.equal(await waitSettled(page), 'true', await page.textContent('#status'));

  const history = await page.evaluate(() => window.__progressHistory);
  const last = history.at(-1);
  assert.deepEqual(last.files.map((f) => f.file), WEIGHT_FILES);
  for (const f of last.files) assert.equal(f.done, f.total, `${f.file} is complete`);
  assert.equal(last.total, WEIGHT_BYTES);
  assert.equal(last.done, WEIGHT_BYTES);
  assert.ok(history.some((p) => p.done > 0 && p.done < p.total), 'progress was shown between the start and the end');
  const phases = [...new Set(history.map((p) => p.phase))];
  assert.deepEqual(phases, ['preparing', 'weights', 'finishing', 'done'], 'phases in order');
  assert.ok(last.memoryBytes > 0 && last.memoryBytes < 256e6, `wasm memory ${last.memoryBytes}`);
  assert.ok(last.downloaded >= WEIGHT_BYTES, `downloaded ${last.downloaded} bytes`);
  assert.equal(await page.locator('#load-files tbody tr.complete').count(), 3);
  assert.match(await page.textContent('#load-summary'), /downloaded/);
  assert.match(await page.textContent('#cache-usage'), /Cached models in this browser: [1-9]/);
  await page.screenshot({ path: path.join(SHOTS, 'loaded-cold.png'), fullPage: true });
  const cold = await stats();
  assert.equal(requestsUnder(cold, MODEL), COLD_WEIGHT_REQUESTS, 'a cold load reads each header once and each tensor once');

  await resetStats();
  await page.reload();
  assert.equal(await waitSettled(page), 'true', await page.textContent('#status'));
  const warm = await stats();
  assert.deepEqual(Object.keys(warm).filter((p) => p.startsWith(MODEL)), [], 'no request for any model file after a reload');
  const again = await page.evaluate(() => window.__lambdaLoadProgress);
  assert.equal(again.downloaded, 0);
  assert.ok(again.fromCache >= WEIGHT_BYTES, `${again.fromCache} bytes from the cache`);
  assert.match(await page.textContent('#load-summary'), /0 B downloaded/);
  await page.screenshot({ path: path.join(SHOTS, 'loaded-from-cache.png'), fullPage: true });
  assert.deepEqual(errors, []);
  await context.close();
});

test('a cached tensor of the wrong size is dropped and fetched again, and only it', async () => {
  const { page, context } = await openApp(`model=${MODEL}&backend=cpu`);
  assert.equal(await waitSettled(page), 'true', await page.textContent('#status'));
  const shortened = await page.evaluate(async () => {
    const cache = await caches.open('lambda-eclipse-weights-v1');
    const keys = (await cache.keys()).filter((r) => r.url.includes('prior/diffusion_pytorch_model.safetensors?') && r.url.includes('lambda-length='));
    const largest = keys.sort((a, b) => Number(new URL(b.url).searchParams.get('lambda-length')) - Number(new URL(a.url).searchParams.get('lambda-length')))[0];
    await cache.put(largest, new Response(new Uint8Array(10)));
    return largest.url;
  });
  assert.ok(shortened);
  await resetStats();
  await page.reload();
  assert.equal(await waitSettled(page), 'true', await page.textContent('#status'));
  const s = await stats();
  assert.equal(requestsUnder(s, MODEL), 1, JSON.stringify(s));
  assert.equal(s[`${MODEL}prior/diffusion_pytorch_model.safetensors`], 1);
  await context.close();
});

test('cancel stops the download and Load again completes', async () => {
  await fetch(`${base}/__throttle?delay_ms=150&rate=500000`, { method: 'POST' });
  try {
    const { page, context, errors } = await openApp(`model=${MODEL}&backend=cpu`);
    await page.waitForFunction(() => (window.__lambdaLoadProgress?.done ?? 0) > 0, null, { timeout: READY });
    await page.screenshot({ path: path.join(SHOTS, 'loading-progress.png'), fullPage: true });
    assert.match(await page.textContent('#load-summary'), /of .* of weights/);
    await page.click('#cancel-load');
    assert.equal(await waitSettled(page, 30_000), 'cancelled');
    assert.match(await page.textContent('#status'), /cancelled/i);
    assert.equal(await page.isVisible('#load-model'), true);
    await page.screenshot({ path: path.join(SHOTS, 'cancelled.png'), fullPage: true });
    // Nothing is fetched any more.
    const atCancel = requestsUnder(await stats(), MODEL);
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(requestsUnder(await stats(), MODEL), atCancel, 'no weight request after cancel');

    await fetch(`${base}/__throttle?delay_ms=0&rate=0`, { method: 'POST' });
    await page.click('#load-model');
    assert.equal(await waitSettled(page), 'true', await page.textContent('#status'));
    assert.equal(await page.isVisible('#compose'), true);
    assert.deepEqual(errors, []);
    await context.close();
  } finally {
    await fetch(`${base}/__throttle?delay_ms=0&rate=0`, { method: 'POST' });
  }
});

test('a truncated weight file is reported with its URL; with the file repaired, Load again works', async () => {
  const { page, context } = await openApp('model=/tmp-models/truncated/&backend=cpu');
  assert.equal(await waitSettled(page), 'error');
  const message = await page.textContent('#status');
  assert.match(message, /The model failed to load: http:\/\/127\.0\.0\.1:\d+\/tmp-models\/truncated\/prior\/diffusion_pytorch_model\.safetensors: .*truncated/, message);
  await page.screenshot({ path: path.join(SHOTS, 'error-truncated.png'), fullPage: true });
  // The server gets the good file at the same URL: the failed file was dropped from the cache, so it is
  // fetched again rather than read back truncated.
  const f = path.join(tmp, 'truncated/prior/diffusion_pytorch_model.safetensors');
  unlinkSync(f);
  copyFileSync(path.join(TINY, 'prior/diffusion_pytorch_model.safetensors'), f);
  await page.click('#load-model');
  assert.equal(await waitSettled(page), 'true', await page.textContent('#status'));
  await context.close();
});

test('the server going away mid-download is reported; with it back, Load again resumes from the cache', async () => {
  // Its own server on its own port (the page's origin, hence its cache, stays the same across the restart).
  let down = await startStaticServer({ args: ['--delay-ms', '150'] });
  const b = down.base;
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${b}/index.html?model=${MODEL}&backend=cpu`);
    // Kill the server once about a third of the weight requests were made.
    const third = Math.ceil(COLD_WEIGHT_REQUESTS / 3);
    for (let i = 0; i < 600 && requestsUnder(await stats(b), MODEL) < third; i++) await new Promise((r) => setTimeout(r, 50));
    down.process.kill('SIGKILL');
    await new Promise((r) => down.process.once('exit', r));
    assert.equal(await waitSettled(page), 'error');
    const message = await page.textContent('#status');
    assert.match(message, new RegExp(`The model failed to load: ${b}${MODEL}.*(network error|download interrupted)`), message);
    await page.screenshot({ path: path.join(SHOTS, 'error-server-gone.png'), fullPage: true });
    // What the interrupted load kept: each entry saves exactly one request.
    const kept = (await cacheKeys(page, '.safetensors?')).length;
    assert.ok(kept > 0, 'the interrupted load kept some weights');

    down = await startStaticServer({ port: down.port });
    await page.click('#load-model');
    assert.equal(await waitSettled(page), 'true', await page.textContent('#status'));
    const resumed = requestsUnder(await stats(b), MODEL);
    assert.ok(resumed < COLD_WEIGHT_REQUESTS, `resumed with ${resumed} weight requests, a cold load makes ${COLD_WEIGHT_REQUESTS}`);
    assert.equal(resumed, COLD_WEIGHT_REQUESTS - kept, 'only what the cache lacked was fetched');
    const last = await page.evaluate(() => window.__lambdaLoadProgress);
    assert.ok(last.fromCache > 0, 'part of the weights came from the cache');
    await page.screenshot({ path: path.join(SHOTS, 'resumed.png'), fullPage: true });
    console.log(`# resume: cold load ${COLD_WEIGHT_REQUESTS} weight requests; after the server came back ${resumed} (${kept} cache entries reused)`);
    await context.close();
  } finally {
    down.process.kill();
  }
});

test('when the browser storage quota is exceeded the model still loads, uncached, and the page says so', async () => {
  const { page, context } = await openApp(null);
  const cdp = await context.newCDPSession(page);
  await cdp.send('Storage.overrideQuotaForOrigin', { origin: base, quotaSize: 64 * 1024 });
  await page.goto(`${base}/index.html?model=${MODEL}&backend=cpu`);
  assert.equal(await waitSettled(page), 'true', await page.textContent('#status'));
  const warning = await page.textContent('#cache-warning');
  assert.equal(await page.isVisible('#cache-warning'), true);
  assert.match(warning, /quota exceeded/, warning);
  await page.screenshot({ path: path.join(SHOTS, 'quota-exceeded.png'), fullPage: true });
  await context.close();
});

test('a sharded text encoder loads over HTTP, one progress row per shard, and gives the golden embedding', async () => {
  const { page, context } = await openApp('model=/tmp-models/sharded/&backend=cpu');
  assert.equal(await waitSettled(page), 'true', await page.textContent('#status'));
  const files = await page.$$eval('#load-files tbody tr', (rows) => rows.map((r) => r.dataset.file));
  assert.deepEqual(files.slice(0, 2), ['text_encoder/model-00001-of-00002.safetensors', 'text_encoder/model-00002-of-00002.safetensors']);
  const inputs = await page.$$('.subject .image');
  await inputs[0].setInputFiles(path.join(IMAGES, 'chelsea.png'));
  await inputs[1].setInputFiles(path.join(IMAGES, 'coffee.png'));
  const golden = header(path.resolve(ROOT, '../shared/goldens/lambda-tiny/cat_glasses.safetensors'));
  const f32 = (name) => {
    const [b, e] = golden.tensors[name].data_offsets;
    const bytes = golden.buf.subarray(8 + golden.headerLen + b, 8 + golden.headerLen + e);
    return Array.from(new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length)));
  };
  await page.evaluate((n) => { window.__lambdaNoise = new Float32Array(n); }, f32('noise'));
  await page.click('#compute');
  await page.waitForFunction(() => document.body.dataset.result === 'ready' || document.querySelector('#status').classList.contains('error'), null, { timeout: READY });
  const got = await page.evaluate(() => Array.from(window.__lambdaResult.imageEmbeds));
  const want = f32('image_embeds');
  const diff = Math.max(...got.map((v, i) => Math.abs(v - want[i])));
  assert.ok(diff <= 1e-4, `image_embeds differ from the golden by ${diff}`);
  await context.close();
});

test('Clear cached models empties the cache (cacheUsage() says 0 B) and the next load downloads again', async () => {
  const { page, context } = await openApp(`model=${MODEL}&backend=cpu`);
  assert.equal(await waitSettled(page), 'true', await page.textContent('#status'));
  const usage = () => page.evaluate(async () => (await import('/www/lib/lambda-eclipse.js')).cacheUsage());
  const before = await usage();
  assert.ok(before.bytes >= WEIGHT_BYTES, `${before.bytes} cached bytes`);
  const ofModel = await page.evaluate(async (m) => (await import('/www/lib/lambda-eclipse.js')).cacheUsage(m), MODEL);
  assert.equal(ofModel.bytes, before.bytes);
  const ofOther = await page.evaluate(async () => (await import('/www/lib/lambda-eclipse.js')).cacheUsage('/elsewhere/'));
  assert.equal(ofOther.bytes, 0);
  await openPanel(page, 'setup');
  await page.click('#clear-cache');
  await page.waitForFunction(() => /: 0 B/.test(document.getElementById('cache-usage').textContent));
  assert.equal((await usage()).bytes, 0);
  assert.match(await page.textContent('#status'), /Cleared [1-9].* of cached models/);
  await page.screenshot({ path: path.join(SHOTS, 'cache-cleared.png'), fullPage: true });
  await resetStats();
  await page.reload();
  assert.equal(await waitSettled(page), 'true', await page.textContent('#status'));
  assert.equal(requestsUnder(await stats(), MODEL), COLD_WEIGHT_REQUESTS);
  await context.close();
});

test('a model on another origin loads when its server allows CORS, and is refused in words naming CORS and the URL when not', async () => {
  const open = await startStaticServer({ cors: true });
  const closed = await startStaticServer();
  try {
    let { page, context } = await openApp(`model=${open.base}${MODEL}&backend=cpu`);
    assert.equal(await waitSettled(page), 'true', await page.textContent('#status'));
    assert.equal(requestsUnder(await stats(open.base), MODEL), COLD_WEIGHT_REQUESTS);
    await context.close();

    ({ page, context } = await openApp(`model=${closed.base}${MODEL}&backend=cpu`));
    assert.equal(await waitSettled(page), 'error');
    const message = await page.textContent('#status');
    assert.match(message, new RegExp(`The model failed to load: ${closed.base}${MODEL}\\S+: network error: .*\\(CORS\\)`), message);
    await page.screenshot({ path: path.join(SHOTS, 'error-cors.png'), fullPage: true });
    await context.close();
  } finally {
    open.process.kill();
    closed.process.kill();
  }
});
