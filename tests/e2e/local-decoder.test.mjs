// End-to-end: "Decode locally" in the app — the tiny Kandinsky 2.2 decoder served by the static server,
// streamed into the decoder's own worker and run in headless Chromium (WebGPU on SwiftShader, and the wasm
// CPU). The golden case ddpm_nocfg goes in as an embedding file (it holds the embeddings and diffusers' own
// noise, the CLI's --noise layout) and the picture must equal the golden image_uint8; an embedding the app
// computes decodes with a seed; Cancel stops a decode between steps; a wrong decoder URL is named; the
// widget decodes locally too.
// Needs pkg/ (bash .ci/build-wasm.sh).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { DECODER_GOLDENS, IMAGES, SCREENSHOTS, TINY_DECODER, TINY_MODEL, openSite } from './browser.mjs';
import { golden, openApp } from './helpers.mjs';
import { writeSafetensors } from '../../www/tensor-files.js';

let site, browser, base;

before(async () => ({ browser, base } = site = await openSite()));
after(() => site?.close());

/** Records every text #decode-local-step shows (steps can pass faster than a poll). */
const recordSteps = (page) => page.evaluate(() => {
  window.__stepTexts = [];
  new MutationObserver(() => window.__stepTexts.push(document.getElementById('decode-local-step').textContent))
    .observe(document.getElementById('decode-local-step'), { childList: true, characterData: true, subtree: true });
});

/** Clicks "Decode locally" and waits until it settles: 'ok' | 'error' | 'cancelled'. */
async function decodeLocally(page, timeout = 180_000) {
  await page.evaluate(() => { delete document.body.dataset.decodedLocal; });
  await page.click('#decode-local');
  await page.waitForFunction(() => ['ok', 'error', 'cancelled'].includes(document.body.dataset.decodedLocal), null, { timeout });
  return page.evaluate(() => document.body.dataset.decodedLocal);
}

/** The shown image's pixels as RGB, row-major [H, W, 3], read back through a canvas. */
const shownRgb = (page) => page.evaluate(() => {
  const img = document.getElementById('decoded-image');
  const c = Object.assign(document.createElement('canvas'), { width: img.naturalWidth, height: img.naturalHeight });
  const ctx = c.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const rgba = ctx.getImageData(0, 0, c.width, c.height).data;
  return { width: c.width, height: c.height, rgb: Array.from(rgba).filter((_, i) => i % 4 !== 3) };
});

async function setDecoderFields(page, { steps, guidance, width, height, scheduler }) {
  await page.fill('#steps', String(steps));
  await page.fill('#guidance', String(guidance));
  await page.fill('#width', String(width));
  await page.fill('#height', String(height));
  await page.selectOption('#scheduler', scheduler);
}

for (const backend of ['auto', 'cpu']) {
  test(`the golden ddpm_nocfg file decodes locally on the ${backend} backend to the golden image`, async () => {
    // f32 weights: the tiny random decoder amplifies rounding ~250×, so f16 weights would not match diffusers' f32.
    const { page, errors } = await openApp(browser, base, `&backend=${backend}&decoder=${TINY_DECODER}&decoder-weights=f32`);
    await page.setInputFiles('#embedding-file', path.join(DECODER_GOLDENS, 'ddpm_nocfg.safetensors'));
    await page.waitForFunction(() => /ddpm_nocfg\.safetensors .*with its noise/.test(document.getElementById('decode-source').textContent));
    await setDecoderFields(page, { steps: 3, guidance: 1, width: 64, height: 64, scheduler: 'ddpm' });
    await recordSteps(page);
    const t0 = Date.now();
    assert.equal(await decodeLocally(page), 'ok', await page.textContent('#decode-status'));
    const seconds = (Date.now() - t0) / 1000;
    const steps = await page.evaluate(() => window.__stepTexts);
    assert.ok(steps.some((s) => /^step 1\/3 · \d+ ms\/step$/.test(s)), `step texts: ${steps}`);
    assert.match(await page.textContent('#decode-local-step'), /^step 3\/3 · \d+ ms\/step$/);
    assert.equal(await page.locator('#decode-preview').isVisible(), true, 'the latent preview is shown');
    assert.deepEqual(await page.evaluate(() => [document.getElementById('decode-preview').width, document.getElementById('decode-preview').height]), [32, 32]);
    assert.match(await page.textContent('#decoder-load-summary'), /Decoder loaded \((WebGPU|CPU)\)/);
    const caption = await page.textContent('#decoded-caption');
    assert.match(caption, /64×64, guidance 1, noise from the file; 3 steps of ddpm · \d+ ms\/step · MoVQ \d+ ms/, caption);
    assert.match(caption, backend === 'cpu' ? /\(CPU\)$/ : /\(WebGPU\)$/, caption);

    const shown = await shownRgb(page);
    assert.deepEqual([shown.width, shown.height], [64, 64]);
    const { shape, data } = golden('ddpm_nocfg.safetensors', 'image_uint8', DECODER_GOLDENS);
    const [, c, h, w] = shape;
    let offByOne = 0;
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let k = 0; k < c; k++) {
      const want = data[(k * h + y) * w + x]; // NCHW
      const got = shown.rgb[(y * w + x) * 3 + k]; // HWC
      const d = Math.abs(got - want);
      assert.ok(d <= 1, `pixel (${x}, ${y}) channel ${k}: ${got}, golden ${want}`);
      offByOne += d;
    }
    assert.ok(offByOne <= data.length / 1000, `${offByOne} of ${data.length} 8-bit values off by one (≤ 0.1 % allowed)`);
    console.log(`# ${backend}: ddpm_nocfg decoded in the app in ${seconds.toFixed(1)} s, ${offByOne} of ${data.length} values off by one`);
    await page.screenshot({ path: path.join(SCREENSHOTS, `local-decoder-golden-${backend}.png`), fullPage: true });
    assert.deepEqual(errors, []);
    await page.close();
  });
}

test('an embedding computed in the app decodes locally with a seed; Cancel stops a long decode and the next one works', async () => {
  const { page, errors } = await openApp(browser, base, `&backend=cpu&decoder=${TINY_DECODER}`);
  const inputs = await page.$$('.subject .image');
  await inputs[0].setInputFiles(path.join(IMAGES, 'chelsea.png'));
  await inputs[1].setInputFiles(path.join(IMAGES, 'coffee.png'));
  await page.click('#compute');
  await page.waitForFunction(() => document.body.dataset.result === 'ready', null, { timeout: 120_000 });
  assert.match(await page.textContent('#decode-source'), /the result above/);

  // The CPU computes a whole step without yielding: Cancel must still get through between two steps.
  await setDecoderFields(page, { steps: 400, guidance: 4, width: 64, height: 64, scheduler: 'ddim' });
  await page.click('#decode-local');
  await page.waitForFunction(() => /^step [2-9]\d*\/400/.test(document.getElementById('decode-local-step').textContent), null, { timeout: 120_000 });
  await page.click('#cancel-decode-local');
  await page.waitForFunction(() => ['ok', 'error', 'cancelled'].includes(document.body.dataset.decodedLocal), null, { timeout: 60_000 });
  assert.equal(await page.evaluate(() => document.body.dataset.decodedLocal), 'cancelled', await page.textContent('#decode-status'));
  assert.match(await page.textContent('#decode-status'), /Decoding cancelled/);
  const stoppedAt = Number((await page.textContent('#decode-local-step')).match(/^step (\d+)/)[1]);
  assert.ok(stoppedAt < 400, `stopped at step ${stoppedAt}`);

  await setDecoderFields(page, { steps: 2, guidance: 4, width: 64, height: 128, scheduler: 'ddpm' });
  await recordSteps(page);
  assert.equal(await decodeLocally(page), 'ok', await page.textContent('#decode-status'));
  const seen = await page.evaluate(() => window.__stepTexts.filter(Boolean).map((s) => s.replace(/ · .*/, '')));
  assert.deepEqual([...new Set(seen)], ['step 1/2', 'step 2/2']);
  const shown = await shownRgb(page);
  assert.deepEqual([shown.width, shown.height], [64, 128]);
  assert.match(await page.textContent('#decoded-caption'), /64×128, guidance 4, seed 42; 2 steps of ddpm/);
  assert.ok(new Set(shown.rgb).size > 16, 'a picture, not a flat image');
  await page.screenshot({ path: path.join(SCREENSHOTS, 'local-decoder-computed.png'), fullPage: true });
  assert.deepEqual(errors, []);
  await page.close();
});

test('int8 weights decode on WebGPU; a size above the GPU buffer limit is refused in words before any step', async () => {
  const { page, errors } = await openApp(browser, base, `&decoder=${TINY_DECODER}`);
  // The golden's embeddings without its noise: the size is then the fields'.
  const embeds = {};
  for (const name of ['image_embeds', 'negative_image_embeds']) embeds[name] = golden('ddim_cfg.safetensors', name, DECODER_GOLDENS);
  await page.setInputFiles('#embedding-file', { name: 'embeds.safetensors', mimeType: 'application/octet-stream', buffer: Buffer.from(writeSafetensors(embeds)) });
  await page.waitForFunction(() => /embeds\.safetensors/.test(document.getElementById('decode-source').textContent));
  await page.selectOption('#decoder-weights', 'int8');
  await setDecoderFields(page, { steps: 2, guidance: 4, width: 64, height: 64, scheduler: 'ddim' });
  assert.equal(await decodeLocally(page), 'ok', await page.textContent('#decode-status'));
  assert.match(await page.textContent('#decoder-load-summary'), /Decoder loaded \(WebGPU\)/);
  const shown = await shownRgb(page);
  assert.deepEqual([shown.width, shown.height], [64, 64]);
  assert.ok(new Set(shown.rgb).size > 16, 'a picture, not a flat image');

  // SwiftShader allows 1 GiB per buffer: the tiny MoVQ's last level at 4096×2048 (64 channels) needs 2 GiB.
  await setDecoderFields(page, { steps: 2, guidance: 4, width: 4096, height: 2048, scheduler: 'ddim' });
  await recordSteps(page);
  assert.equal(await decodeLocally(page, 60_000), 'error');
  const message = await page.textContent('#decode-status');
  assert.match(message, /a 4096×2048 image needs a 2048 MiB GPU buffer \(the MoVQ's largest feature map\), above this device's 1024 MiB per-buffer limit: the largest square image that fits is 2048×2048/, message);
  assert.deepEqual((await page.evaluate(() => window.__stepTexts)).filter(Boolean), [], 'refused before the first step');
  assert.deepEqual(errors, []);
  await page.close();
});

test('a decoder URL that does not exist is named in the message', async () => {
  const { page } = await openApp(browser, base, '&backend=cpu&decoder=/no/such/decoder/');
  await page.setInputFiles('#embedding-file', path.join(DECODER_GOLDENS, 'ddpm_nocfg.safetensors'));
  await page.waitForFunction(() => /ddpm_nocfg/.test(document.getElementById('decode-source').textContent));
  assert.equal(await decodeLocally(page, 60_000), 'error');
  const message = await page.textContent('#decode-status');
  assert.match(message, /The decoder at \/no\/such\/decoder\/ could not be loaded: .*unet\/config\.json.*not found/, message);
  await page.screenshot({ path: path.join(SCREENSHOTS, 'local-decoder-404.png'), fullPage: true });
  await page.close();
});

test('the widget decodes locally: step progress, preview, the image', async () => {
  const W = 'lambda-eclipse-widget';
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  // On the CPU: the app test above covers WebGPU, and SwiftShader would add ~45 s here.
  await page.goto(`${base}/www/embed-example.html?model=${TINY_MODEL}&decoder=${TINY_DECODER}&backend=cpu&width=64&height=64&steps=2`);
  await page.waitForFunction((w) => customElements.get(w), W);
  const settled = async () => {
    await page.waitForFunction((w) => ['ok', 'warn', 'error'].includes(document.querySelector(w).dataset.status), W, { timeout: 180_000 });
    return page.evaluate((w) => document.querySelector(w).dataset.status, W);
  };
  const statusText = () => page.locator(`${W} .status`).textContent();
  await page.click(`${W} .load`);
  assert.equal(await settled(), 'warn', await statusText()); // loaded, with the notice that the CPU computes
  assert.match(await statusText(), /^Model loaded/);
  assert.equal(await page.locator(`${W} .decode`).isVisible(), false, 'no endpoint: no "Decode" on an endpoint');
  const slots = page.locator(`${W} .subject`);
  await slots.nth(0).locator('.image').setInputFiles(path.join(IMAGES, 'chelsea.png'));
  await slots.nth(1).locator('.image').setInputFiles(path.join(IMAGES, 'coffee.png'));
  const decoded = page.evaluate((w) => new Promise((resolve) => document.querySelector(w).addEventListener('lambda-decoded', (e) => resolve({ steps: e.detail.steps, local: e.detail.local }), { once: true })), W);
  await page.evaluate((w) => { document.querySelector(w).dataset.status = 'busy'; }, W);
  await page.click(`${W} .decode-local`); // computes the embedding first, then loads the decoder and decodes
  await page.waitForFunction((w) => /^Decoded on this device/.test(document.querySelector(w).shadowRoot.querySelector('.status').textContent)
    || document.querySelector(w).dataset.status === 'error', W, { timeout: 180_000 });
  assert.equal(await settled(), 'ok', await statusText());
  assert.deepEqual(await decoded, { steps: 2, local: true });
  assert.match(await page.locator(`${W} .decode-step`).textContent(), /^step 2\/2 · \d+ ms\/step$/);
  assert.equal(await page.locator(`${W} canvas.preview`).isVisible(), true);
  const size = await page.locator(`${W} img.result-image`).evaluate((img) => [img.naturalWidth, img.naturalHeight]);
  assert.deepEqual(size, [64, 64]);
  assert.match(await page.locator(`${W} figcaption`).textContent(), /64×64, seed 42; 2 steps of \w+ · \d+ ms\/step · MoVQ \d+ ms/);
  assert.match(await page.locator(`${W} h2`).textContent(), /CPU/);
  await page.screenshot({ path: path.join(SCREENSHOTS, 'local-decoder-widget.png'), fullPage: true });
  assert.deepEqual(errors, []);
  await page.close();
});
