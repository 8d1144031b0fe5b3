// End-to-end: from the app, compute the embedding, decode it through the reference decoder server (tiny random
// Kandinsky 2.2, CPU) on 127.0.0.1, and see the image; then the endpoint goes away → a clear message, and the
// app keeps working. Needs pkg/ (bash .ci/build-wasm.sh) and server/requirements.txt installed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { IMAGES, ROOT, SCREENSHOTS, freePort, launchChromium, startStaticServer, waitFor } from './browser.mjs';
import { openPanel } from './helpers.mjs';

let staticServer, decoder, browser, base, endpoint;

before(async () => {
  mkdirSync(SCREENSHOTS, { recursive: true });
  ({ process: staticServer, base } = await startStaticServer());
  const decoderPort = await freePort();
  endpoint = `http://127.0.0.1:${decoderPort}`;
  decoder = spawn('python3', ['-m', 'lambda_decoder', '--tiny-random', '--port', String(decoderPort), '--cors-origin', base, '--log-level', 'warning'],
    { cwd: path.join(ROOT, 'server'), stdio: 'inherit' });
  await waitFor(`${endpoint}/v1/health`, 120);
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  staticServer?.kill();
  decoder?.kill();
});

test('the app decodes its embedding on the endpoint, then reports the endpoint gone and keeps working', async () => {
  const page = await browser.newPage();
  await page.goto(`${base}/index.html?model=/shared/goldens/lambda-tiny/model/&backend=cpu`);
  await page.waitForFunction(() => document.body.dataset.ready, null, { timeout: 120_000 });
  assert.equal(await page.evaluate(() => document.body.dataset.ready), 'true', await page.textContent('#status'));
  const inputs = await page.$$('.subject .image');
  await inputs[0].setInputFiles(path.join(IMAGES, 'chelsea.png'));
  await inputs[1].setInputFiles(path.join(IMAGES, 'coffee.png'));
  await page.click('#compute');
  await page.waitForFunction(() => document.body.dataset.result === 'ready', null, { timeout: 120_000 });

  await openPanel(page, 'settings-panel');
  await page.fill('#endpoint', endpoint);
  await page.fill('#width', '64');
  await page.fill('#height', '128');
  await page.fill('#steps', '2');
  await page.click('#decode');
  await page.waitForFunction(() => ['ok', 'error'].includes(document.body.dataset.decoded), null, { timeout: 120_000 });
  assert.equal(await page.evaluate(() => document.body.dataset.decoded), 'ok', await page.textContent('#decode-status'));
  const size = await page.evaluate(() => [document.getElementById('decoded-image').naturalWidth, document.getElementById('decoded-image').naturalHeight]);
  assert.deepEqual(size, [64, 128]);
  assert.match(await page.textContent('#decoded-caption'), /64×128, 2 steps/);
  await page.screenshot({ path: path.join(SCREENSHOTS, 'app-decoded.png'), fullPage: true });

  // The endpoint goes away: a clear message naming it, and computing still works.
  decoder.kill();
  await new Promise((r) => decoder.once('exit', r));
  await page.click('#decode');
  await page.waitForFunction(() => ['ok', 'error'].includes(document.body.dataset.decoded), null, { timeout: 60_000 });
  assert.equal(await page.evaluate(() => document.body.dataset.decoded), 'error');
  const message = await page.textContent('#decode-status');
  assert.match(message, new RegExp(`cannot reach the decoder endpoint at ${endpoint}/v1/decode`), message);
  await page.screenshot({ path: path.join(SCREENSHOTS, 'app-endpoint-down.png'), fullPage: true });
  await page.evaluate(() => { delete document.body.dataset.result; });
  await page.fill('#prompt', 'a cat wearing glasses in the snow');
  await page.click('#compute');
  await page.waitForFunction(() => document.body.dataset.result === 'ready', null, { timeout: 120_000 });
  assert.match(await page.textContent('#status'), /Done/);
  await page.close();
});

test('the interpolation grid decodes cell by cell on the endpoint with the same seed', async () => {
  // This runs after the endpoint was stopped above: start another one for this test.
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const second = spawn('python3', ['-m', 'lambda_decoder', '--tiny-random', '--port', String(port), '--cors-origin', base, '--log-level', 'warning'],
    { cwd: path.join(ROOT, 'server'), stdio: 'inherit' });
  try {
    await waitFor(`${url}/v1/health`, 120);
    const page = await browser.newPage();
    await page.goto(`${base}/index.html?model=/shared/goldens/lambda-tiny/model/&backend=cpu`);
    await page.waitForFunction(() => document.body.dataset.ready, null, { timeout: 120_000 });
    for (const seed of ['1', '2']) {
      await page.fill('#seed', seed);
      await page.evaluate(() => { delete document.body.dataset.result; });
      await page.click('#compute');
      await page.waitForFunction(() => document.body.dataset.result === 'ready', null, { timeout: 120_000 });
    }
    await openPanel(page, 'settings-panel');
    await openPanel(page, 'interpolation-panel');
    await page.fill('#endpoint', url);
    await page.fill('#width', '64');
    await page.fill('#height', '64');
    await page.fill('#steps', '2');
    await page.fill('#interpolation .steps', '1');
    await page.click('#interpolation .interpolate');
    await page.waitForFunction(() => document.getElementById('interpolation').dataset.grid === 'ready', null, { timeout: 30_000 });
    await page.click('#interpolation .decode-grid');
    await page.waitForFunction(() => /Decoded all|stopped|Set the decoder/.test(document.querySelector('#interpolation .interp-status').textContent), null, { timeout: 120_000 });
    assert.match(await page.textContent('#interpolation .interp-status'), /Decoded all 4 cells with the same seed/);
    const sizes = await page.$$eval('#interpolation td img', (imgs) => Promise.all(imgs.map(async (i) => { await i.decode(); return [i.naturalWidth, i.naturalHeight]; })));
    assert.deepEqual(sizes, [[64, 64], [64, 64], [64, 64], [64, 64]]);
    await page.screenshot({ path: path.join(SCREENSHOTS, 'app-grid-decoded.png'), fullPage: true });
    await page.close();
  } finally {
    second.kill();
  }
});
