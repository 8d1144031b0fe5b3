// End-to-end: the λ UI in headless Chromium on the tiny golden model — photos by drag & drop and paste,
// keywords highlighted in the prompt and missing ones warned about before computing, the engine's exact Canny
// preview, per-stage timings, exports read back by numpy/safetensors, the interpolation grid, and the CPU
// notice and switch. Screenshots of each state go to tests/output/screenshots/ (not committed).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { IMAGES, SCREENSHOTS, openSite } from './browser.mjs';
import { downloadOf, dropFiles, golden, imageFile, maxDiff, openApp, openPanel, pasteFiles, photoStates, readWithPython } from './helpers.mjs';
import { chromium } from 'playwright-core';

let site, browser, base;
const shot = (page, name) => page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`), fullPage: true });

before(async () => ({ browser, base } = site = await openSite()));
after(() => site?.close());

/** The highlighted words of the prompt preview: [[text, subject], …]. */
const marks = (page) => page.$$eval('#prompt-preview mark', (ms) => ms.map((m) => [m.textContent, Number(m.dataset.subject)]));

/** Waits for the keyword check of the current prompt and keywords. */
async function keywordsChecked(page) {
  await page.waitForTimeout(200); // the check runs 120 ms after the last keystroke
  await page.waitForFunction(() => document.getElementById('prompt-preview').dataset.checked, null, { timeout: 30_000 });
}

test('photos dropped and pasted into the subject slots compute cat_glasses exactly, with keywords highlighted and timings per stage', async () => {
  const { page, errors } = await openApp(browser, base);
  await keywordsChecked(page);
  assert.deepEqual(await marks(page), [['cat', 1], ['glasses', 2]]);
  await shot(page, '01-empty');

  const slots = page.locator('.subject');
  await dropFiles(page, slots.nth(0), [imageFile('chelsea.png')]);
  await pasteFiles(page, slots.nth(1).locator('.keyword'), [imageFile('coffee.png')]);
  assert.deepEqual(await photoStates(page), ['ok', 'ok']);
  assert.match(await slots.nth(0).textContent(), /chelsea\.png: 451×300/);
  assert.match(await slots.nth(1).textContent(), /coffee\.png: 600×400/);
  assert.equal(await slots.nth(0).locator('.thumb').isVisible(), true);

  // A repeated keyword is highlighted at each occurrence, in its subject's colour.
  await page.fill('#prompt', 'a Cat wearing glasses at a park, next to another cat');
  await keywordsChecked(page);
  assert.deepEqual(await marks(page), [['Cat', 1], ['glasses', 2], ['cat', 1]]);
  assert.equal(await page.textContent('#keyword-warnings'), '');
  await shot(page, '02-subjects-highlighted');
  await page.fill('#prompt', 'a cat wearing glasses at a park');
  await keywordsChecked(page);

  const noise = Array.from(golden('cat_glasses.safetensors', 'noise').data);
  await page.evaluate((n) => { window.__lambdaNoise = new Float32Array(n); }, noise);
  await page.click('#compute');
  await page.waitForFunction(() => ['ready', 'error'].includes(document.body.dataset.result), null, { timeout: 120_000 });
  assert.equal(await page.evaluate(() => document.body.dataset.result), 'ready', await page.textContent('#status'));
  const got = await page.evaluate(() => Array.from(window.__lambdaResult.imageEmbeds));
  const diff = maxDiff(got, golden('cat_glasses.safetensors', 'image_embeds').data);
  assert.ok(diff <= 1e-3, `image_embeds differ from the golden by ${diff}`);

  const stages = await page.$$eval('#timings dt', (dts) => dts.map((d) => d.textContent));
  assert.deepEqual(stages, ['computed on', 'tokenize', 'text encoder', 'subject 1 (cat)', 'subject 2 (glasses)', 'prior', 'total']);
  const timings = await page.$$eval('#timings dd', (dds) => dds.map((d) => d.textContent));
  assert.equal(timings[0], 'WebGPU');
  assert.ok(timings.slice(1).every((t) => /^\d+\.\d ms$/.test(t)), timings.join(' | '));
  assert.match(await page.textContent('#facts'), /WebGPU adapter.*swiftshader/i);
  await shot(page, '03-result');
  assert.deepEqual(errors, []);
  await page.close();
});

test('a keyword missing from the prompt is warned about before computing, and by the engine after', async () => {
  const { page, errors } = await openApp(browser, base, '&backend=cpu');
  const slots = page.locator('.subject');
  await slots.nth(0).locator('.image').setInputFiles(path.join(IMAGES, 'chelsea.png'));
  await slots.nth(1).locator('.keyword').fill('unicorn');
  await dropFiles(page, slots.nth(1), [imageFile('coffee.png')]);
  await photoStates(page);
  await keywordsChecked(page);
  assert.match(await page.textContent('#keyword-warnings'), /Subject 2: keyword “unicorn” is not in the prompt/);
  assert.match(await slots.nth(1).locator('.note.kw').textContent(), /not in the prompt: subject 2's photo will not be used/);
  assert.deepEqual(await marks(page), [['cat', 1]]);
  await shot(page, '04-keyword-missing');

  await page.click('#compute');
  await page.waitForFunction(() => ['ready', 'error'].includes(document.body.dataset.result), null, { timeout: 120_000 });
  assert.equal(await page.evaluate(() => document.body.dataset.result), 'ready');
  assert.match(await page.textContent('#warnings'), /subject 2: couldn't find keyword "unicorn" in the prompt/);
  assert.match(await page.textContent('#status'), /Done, with 1 warning/);

  // Typing the word into the prompt clears the warning.
  await page.fill('#prompt', 'a cat wearing glasses next to a unicorn');
  await keywordsChecked(page);
  assert.equal(await page.textContent('#keyword-warnings'), '');
  assert.deepEqual(await marks(page), [['cat', 1], ['unicorn', 2]]);
  assert.deepEqual(errors, []);
  await page.close();
});

test('the edge-control preview is the engine\'s Canny map, equal to the golden canny_edges pixel for pixel', async () => {
  const { page, errors } = await openApp(browser, base);
  await dropFiles(page, page.locator('#control-zone'), [imageFile('astronaut.png')]);
  await page.waitForFunction(() => ['ok', 'error'].includes(document.getElementById('canny-preview').dataset.state), null, { timeout: 60_000 });
  assert.match(await page.textContent('#control-status'), /Edge map the engine will use \(Canny 100, 200\): 512×512/);
  const red = await page.evaluate(() => {
    const c = document.getElementById('canny-preview');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    return Array.from(d.filter((_, i) => i % 4 === 0));
  });
  const want = golden('horse_rgba_canny.safetensors', 'canny_edges');
  assert.deepEqual(want.shape, [512, 512]);
  assert.equal(red.length, want.data.length);
  assert.equal(red.filter((v, i) => v !== want.data[i]).length, 0, 'pixels differ from cv2.Canny');
  await shot(page, '05-canny-preview');

  // Other thresholds give another map.
  const share = async () => Number(/([\d.]+)% edge pixels/.exec(await page.textContent('#control-status'))[1]);
  const before = await share();
  await page.fill('#canny-low', '10');
  await page.fill('#canny-high', '20');
  await page.dispatchEvent('#canny-high', 'change');
  await page.waitForFunction(() => /Canny 10, 20/.test(document.getElementById('control-status').textContent), null, { timeout: 60_000 });
  assert.ok((await share()) > before, 'lower thresholds find more edges');
  assert.deepEqual(errors, []);
  await page.close();
});

test('a result exports as safetensors, .npy and JSON that numpy and safetensors read back', async () => {
  const { page, errors } = await openApp(browser, base, '&backend=cpu');
  const slots = page.locator('.subject');
  await dropFiles(page, slots.nth(0), [imageFile('chelsea.png')]);
  await dropFiles(page, slots.nth(1), [imageFile('coffee.png')]);
  await photoStates(page);
  await page.click('#compute');
  await page.waitForFunction(() => document.body.dataset.result === 'ready', null, { timeout: 120_000 });
  const r = await page.evaluate(() => ({ e: Array.from(window.__lambdaResult.imageEmbeds), n: Array.from(window.__lambdaResult.negativeImageEmbeds), h: Array.from(window.__lambdaResult.encoderHiddenStates), noise: Array.from(window.__lambdaResult.noise) }));

  const st = await downloadOf(page, '#export-safetensors', 'result');
  assert.equal(st.name, 'lambda-eclipse-embedding.safetensors');
  const t = readWithPython(st.file);
  assert.deepEqual(t.image_embeds.shape, [1, 32]);
  assert.equal(t.image_embeds.dtype, 'float32');
  assert.deepEqual(t.image_embeds.values, r.e.map(Math.fround));
  assert.deepEqual(t.negative_image_embeds.values, r.n);
  assert.deepEqual(t.encoder_hidden_states.shape, [1, 77, 32]);
  assert.deepEqual(t.encoder_hidden_states.values, r.h);
  assert.deepEqual(t.noise.values, r.noise);
  assert.equal(t.__metadata__.prompt, 'a cat wearing glasses at a park');
  assert.equal(t.__metadata__.seed, '42');
  assert.deepEqual(JSON.parse(t.__metadata__.keywords), ['cat', 'glasses']);

  const npy = await downloadOf(page, '#export-npy', 'result');
  assert.equal(npy.name, 'lambda-eclipse-embedding.npy');
  const a = readWithPython(npy.file).array;
  assert.deepEqual([a.shape, a.dtype], [[1, 32], 'float32']);
  assert.deepEqual(a.values, r.e);

  const json = await downloadOf(page, '#export-json', 'result');
  const j = JSON.parse(json.bytes.toString('utf8'));
  assert.deepEqual(j.image_embeds, r.e);
  assert.deepEqual(j.negative_image_embeds, r.n);
  assert.equal(j.seed, 42);
  assert.deepEqual(Object.keys(j.timings), ['tokenize', 'text encoder', 'subject 1 (cat)', 'subject 2 (glasses)', 'prior']);
  assert.deepEqual(errors, []);
  await page.close();
});

test('the interpolation grid takes corners from results and files and blends them as the reference does; the grid exports', async () => {
  const { page, errors } = await openApp(browser, base, '&backend=cpu');
  // Three results: the prompt alone at seeds 1, 2, 3. Result 2 is exported as .npy, result 3 as JSON.
  for (const slot of await page.$$('.subject .remove')) await slot.click();
  const results = [];
  let npyFile, jsonFile;
  for (const seed of [1, 2, 3]) {
    await page.fill('#seed', String(seed));
    await page.evaluate(() => { delete document.body.dataset.result; });
    await page.click('#compute');
    await page.waitForFunction(() => document.body.dataset.result === 'ready', null, { timeout: 120_000 });
    results.push(await page.evaluate(() => Array.from(window.__lambdaResult.imageEmbeds)));
    if (seed === 2) npyFile = (await downloadOf(page, '#export-npy', 'corner-seed2')).file;
    if (seed === 3) jsonFile = (await downloadOf(page, '#export-json', 'corner-seed3')).file;
  }
  await openPanel(page, 'interpolation-panel');
  const corner = (name) => page.locator(`#interpolation .corner[data-corner="${name}"]`);
  assert.equal(await corner('top-left').locator('select').inputValue(), '0');
  assert.equal(await corner('top-right').locator('select').inputValue(), '1');
  await corner('bottom-left').locator('select').selectOption('upload');
  await corner('bottom-left').locator('.corner-file').setInputFiles(npyFile);
  await corner('bottom-right').locator('select').selectOption('upload');
  await corner('bottom-right').locator('.corner-file').setInputFiles(jsonFile);
  await page.waitForFunction(() => document.querySelectorAll('#interpolation .corner-status.ok').length === 2, null, { timeout: 10_000 });
  await page.fill('#interpolation .steps', '4');
  await page.click('#interpolation .interpolate');
  await page.waitForFunction(() => document.getElementById('interpolation').dataset.grid, null, { timeout: 30_000 });
  assert.equal(await page.evaluate(() => document.getElementById('interpolation').dataset.grid), 'ready', await page.textContent('#interpolation .interp-status'));
  const grid = await page.evaluate(() => window.__lambdaGrid.embeddings.map((e) => Array.from(e)));
  assert.equal(grid.length, 25);
  assert.equal(await page.locator('#interpolation td').count(), 25);
  const [tl, tr, br] = results;
  const bl = results[1];
  // Corners are the inputs (the files round-trip exactly); row i, column j is the reference's bilinear blend.
  for (const [k, want] of [[0, tl], [4, tr], [20, bl], [24, br]]) assert.equal(maxDiff(grid[k], want), 0, `corner ${k}`);
  const lerp = (a, b, t) => a.map((v, i) => Math.fround(Math.fround(v * (1 - t)) + Math.fround(b[i] * t)));
  for (let i = 0; i <= 4; i++) {
    for (let j = 0; j <= 4; j++) {
      const want = lerp(lerp(tl, bl, i / 4), lerp(tr, br, i / 4), j / 4);
      assert.ok(maxDiff(grid[i * 5 + j], want) <= 1e-6, `cell ${i},${j}`);
    }
  }
  const mean = tl.map((_, i) => (tl[i] + tr[i] + bl[i] + br[i]) / 4);
  assert.ok(maxDiff(grid[12], mean) <= 1e-6, 'the centre is the mean of the corners');
  await shot(page, '06-interpolation');

  const st = readWithPython((await downloadOf(page, '#interpolation .export-grid[data-format="safetensors"]', 'grid')).file);
  assert.deepEqual(st.grid.shape, [25, 32]);
  assert.deepEqual(st.grid.values, grid.flat());
  assert.deepEqual(st.negative_image_embeds.shape, [1, 32]);
  const gn = readWithPython((await downloadOf(page, '#interpolation .export-grid[data-format="npy"]', 'grid')).file).array;
  assert.deepEqual(gn.shape, [25, 32]);
  assert.deepEqual(gn.values, grid.flat());
  const gj = JSON.parse((await downloadOf(page, '#interpolation .export-grid[data-format="json"]', 'grid')).bytes.toString('utf8'));
  assert.deepEqual([gj.rows, gj.cols], [5, 5]);
  assert.deepEqual(gj.embeddings, grid);
  assert.deepEqual(errors, []);
  await page.close();
});

test('forcing the CPU shows a notice, and the switch reloads on WebGPU', async () => {
  const { page, errors } = await openApp(browser, base, '&backend=cpu');
  assert.equal(await page.isVisible('#backend-notice'), true);
  assert.match(await page.textContent('#backend-notice'), /Computing on the CPU \(WebAssembly\), as chosen/);
  assert.equal(await page.inputValue('#backend-choice'), 'cpu');
  await shot(page, '07-cpu-forced');
  await openPanel(page, 'setup');
  await Promise.all([page.waitForNavigation(), page.selectOption('#backend-choice', 'auto')]);
  await page.waitForFunction(() => document.body.dataset.ready, null, { timeout: 120_000 });
  assert.match(page.url(), /backend=auto/);
  assert.match(await page.textContent('#facts'), /Compute backendWebGPU/);
  assert.equal(await page.isVisible('#backend-notice'), false);
  assert.deepEqual(errors, []);
  await page.close();
});

test('without WebGPU in the browser the page computes on the CPU and says why', async () => {
  // Chromium on Linux offers no WebGPU without --enable-unsafe-webgpu.
  const plain = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'] });
  try {
    const { page, errors } = await openApp(plain, base);
    assert.equal(await page.isVisible('#backend-notice'), true);
    assert.match(await page.textContent('#backend-notice'), /WebGPU is not available here \(.+\): computing on the CPU \(WebAssembly\) instead/);
    assert.match(await page.textContent('#facts'), /Compute backendCPU \(wasm\) — WebGPU unavailable/);
    await page.locator('.subject').nth(0).locator('.image').setInputFiles(path.join(IMAGES, 'chelsea.png'));
    await page.locator('.subject').nth(1).locator('.image').setInputFiles(path.join(IMAGES, 'coffee.png'));
    const noise = Array.from(golden('cat_glasses.safetensors', 'noise').data);
    await page.evaluate((n) => { window.__lambdaNoise = new Float32Array(n); }, noise);
    await page.click('#compute');
    await page.waitForFunction(() => ['ready', 'error'].includes(document.body.dataset.result), null, { timeout: 120_000 });
    assert.equal(await page.evaluate(() => document.body.dataset.result), 'ready', await page.textContent('#status'));
    const got = await page.evaluate(() => Array.from(window.__lambdaResult.imageEmbeds));
    assert.ok(maxDiff(got, golden('cat_glasses.safetensors', 'image_embeds').data) <= 1e-4);
    assert.equal(await page.textContent('#timings dd'), 'CPU (wasm)');
    await shot(page, '08-no-webgpu-notice');
    assert.deepEqual(errors, []);
  } finally {
    await plain.close();
  }
});
