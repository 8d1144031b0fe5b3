// End-to-end: the app page in headless Chromium against the tiny golden model served locally with Range
// support. Needs `bash .ci/build-wasm.sh` first (pkg/). Screenshots go to tests/output/ (not committed).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { IMAGES, SCREENSHOTS, TINY_MODEL, openSite } from './browser.mjs';
import { golden } from './helpers.mjs';

let site, browser, base;

before(async () => ({ browser, base } = site = await openSite()));
after(() => site?.close());

for (const backend of ['auto', 'cpu']) {
  test(`cat_glasses through the page on the ${backend} backend matches the golden within 1e-3`, async () => {
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${base}/index.html?model=${TINY_MODEL}&backend=${backend}`);
    await page.waitForFunction(() => document.body.dataset.ready, null, { timeout: 120_000 });
    assert.equal(await page.evaluate(() => document.body.dataset.ready), 'true', await page.textContent('#status'));
    const facts = await page.textContent('#facts');
    assert.match(facts, backend === 'cpu' ? /CPU \(wasm\)/ : /WebGPU/, facts);
    const inputs = await page.$$('.subject .image');
    await inputs[0].setInputFiles(path.join(IMAGES, 'chelsea.png'));
    await inputs[1].setInputFiles(path.join(IMAGES, 'coffee.png'));
    // The golden noise is injected through the page's engine hook rather than the seed box.
    const noise = Array.from(golden('cat_glasses.safetensors', 'noise').data);
    await page.evaluate((n) => { window.__lambdaNoise = new Float32Array(n); }, noise);
    await page.click('#compute');
    await page.waitForFunction(() => document.body.dataset.result === 'ready' || document.querySelector('#status').classList.contains('error'), null, { timeout: 120_000 });
    assert.equal(await page.evaluate(() => document.body.dataset.result), 'ready', await page.textContent('#status'));
    const got = await page.evaluate(() => Array.from(window.__lambdaResult.imageEmbeds));
    const want = golden('cat_glasses.safetensors', 'image_embeds').data;
    const diff = Math.max(...got.map((v, i) => Math.abs(v - want[i])));
    assert.ok(diff <= 1e-3, `image_embeds differ from the golden by ${diff}`);
    await page.screenshot({ path: path.join(SCREENSHOTS, `app-result-${backend}.png`), fullPage: true });
    assert.deepEqual(errors, []);
    await page.close();
  });
}

test('a model URL that does not exist is reported in words with the URL', async () => {
  const page = await browser.newPage();
  await page.goto(`${base}/index.html?model=/no/such/model/&backend=cpu`);
  await page.waitForFunction(() => document.body.dataset.ready, null, { timeout: 60_000 });
  assert.equal(await page.evaluate(() => document.body.dataset.ready), 'error');
  const status = await page.textContent('#status');
  assert.match(status, /\/no\/such\/model\/tokenizer\/.*(not found|404)/, status);
  await page.screenshot({ path: path.join(SCREENSHOTS, 'app-404.png'), fullPage: true });
  await page.close();
});
