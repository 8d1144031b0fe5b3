// End-to-end: "Decode locally" in the app — the tiny Kandinsky 2.2 decoder served by the static server,
// streamed into the decoder's own worker and run in headless Chromium (WebGPU on SwiftShader, and the wasm
// CPU). The golden case ddpm_nocfg goes in as an embedding file (it holds the embeddings and diffusers' own
// noise, the CLI's --noise layout) and the picture must equal the golden image_uint8; an embedding the app
// computes decodes with a seed; Cancel stops a decode between steps; int8 weights approximate f32; a crash of
// the decoder's worker is named and the next decode loads it anew; a wrong decoder URL is named; the widget
// decodes locally too.
// Needs pkg/ (bash .ci/build-wasm.sh).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { DECODER_GOLDENS, IMAGES, SCREENSHOTS, TINY_DECODER, TINY_MODEL, openSite } from './browser.mjs';
import { golden, openApp, openPanel } from './helpers.mjs';
import { writeSafetensors } from '../../www/lib/tensor-files.js';
import { readDecoderInput } from '../../www/ui/local-decoder.js';

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
  await openPanel(page, 'settings-panel');
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
    // The file's step_noise holds 3 steps: the Steps field follows it, as the CLI's --noise does.
    await setDecoderFields(page, { steps: 7, guidance: 1, width: 64, height: 64, scheduler: 'ddpm' });
    await recordSteps(page);
    const t0 = Date.now();
    assert.equal(await decodeLocally(page), 'ok', await page.textContent('#decode-status'));
    const seconds = (Date.now() - t0) / 1000;
    const steps = await page.evaluate(() => window.__stepTexts);
    assert.ok(steps.some((s) => /^step 1\/3 · \d+ ms\/step$/.test(s)), `step texts: ${steps}`);
    assert.match(await page.textContent('#decode-local-step'), /^step 3\/3 · \d+ ms\/step$/);
    assert.equal(await page.inputValue('#steps'), '3');
    assert.equal(await page.locator('#decode-preview').isVisible(), true, 'the latent preview is shown');
    assert.deepEqual(await page.evaluate(() => [document.getElementById('decode-preview').width, document.getElementById('decode-preview').height]), [32, 32]);
    assert.match(await page.textContent('#decoder-load-summary'), /Decoder loaded \((WebGPU|CPU), f32 weights\)/);
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

test('int8 weights decode on WebGPU close to f32; a size above the GPU buffer limit is refused in words before any step', async () => {
  const { page, errors } = await openApp(browser, base, `&decoder=${TINY_DECODER}`);
  // The golden's embeddings without its noise: the size is then the fields'.
  const embeds = {};
  for (const name of ['image_embeds', 'negative_image_embeds']) embeds[name] = golden('ddim_cfg.safetensors', name, DECODER_GOLDENS);
  await page.setInputFiles('#embedding-file', { name: 'embeds.safetensors', mimeType: 'application/octet-stream', buffer: Buffer.from(writeSafetensors(embeds)) });
  await page.waitForFunction(() => /embeds\.safetensors/.test(document.getElementById('decode-source').textContent));
  await openPanel(page, 'settings-panel');
  await page.selectOption('#decoder-weights', 'int8');
  const small = { steps: 2, guidance: 4, width: 64, height: 64, scheduler: 'ddim' };
  await setDecoderFields(page, small);
  assert.equal(await decodeLocally(page), 'ok', await page.textContent('#decode-status'));
  assert.match(await page.textContent('#decoder-load-summary'), /Decoder loaded \(WebGPU, int8 weights\)/);
  const int8 = await shownRgb(page);
  assert.deepEqual([int8.width, int8.height], [64, 64]);
  assert.ok(new Set(int8.rgb).size > 16, 'a picture, not a flat image');

  // SwiftShader allows 1 GiB per buffer: the tiny MoVQ's last level at 4096×2048 (64 channels) needs 2 GiB.
  await setDecoderFields(page, { ...small, width: 4096, height: 2048 });
  await recordSteps(page);
  assert.equal(await decodeLocally(page, 60_000), 'error');
  const message = await page.textContent('#decode-status');
  assert.match(message, /a 4096×2048 image needs a 2048 MiB GPU buffer \(the MoVQ's largest feature map\), above this device's 1024 MiB per-buffer limit: the largest square image that fits is 2048×2048/, message);
  assert.deepEqual((await page.evaluate(() => window.__stepTexts)).filter(Boolean), [], 'refused before the first step');

  // The same request with f32 weights (the decoder loads anew): int8 approximates it.
  await page.selectOption('#decoder-weights', 'f32');
  await setDecoderFields(page, small);
  assert.equal(await decodeLocally(page), 'ok', await page.textContent('#decode-status'));
  assert.match(await page.textContent('#decoder-load-summary'), /Decoder loaded \(WebGPU, f32 weights\)/);
  const f32 = await shownRgb(page);
  assert.deepEqual([f32.width, f32.height], [64, 64]);
  let sum = 0;
  let differ = 0;
  f32.rgb.forEach((v, i) => { const d = Math.abs(v - int8.rgb[i]); sum += d; if (d) differ++; });
  const mean = sum / f32.rgb.length;
  console.log(`# int8 vs f32: ${differ} of ${f32.rgb.length} 8-bit values differ, mean |Δ| ${mean.toFixed(2)}`);
  assert.ok(differ > 0, 'int8 weights are not f32: some pixel differs');
  assert.ok(mean <= 0.1 * 255, `int8 approximates f32: mean |Δ| ${mean.toFixed(2)} of 255`);
  assert.deepEqual(errors, []);
  await page.close();
});

test("a crash of the decoder's worker is named, the panel works again, and the next decode loads the decoder anew", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  // worker.js requests: the engine's, then each decoder's. The first decoder's worker traps outside any call
  // (an uncaught RuntimeError, as a trap in an async wasm call gives), the second answers its decode with a
  // trap (worker.js's fatal answer); the third is the real worker.
  const crashes = [
    "setTimeout(() => { throw new WebAssembly.RuntimeError('unreachable'); });",
    "postMessage({ id: ev.data.id, ok: false, fatal: true, error: 'RuntimeError: unreachable', name: 'RuntimeError' });",
  ];
  let workers = 0;
  await context.route((url) => url.pathname === '/www/lib/worker.js' && !url.search, (route) => {
    const crash = crashes[workers++ - 1];
    if (!crash) return route.continue();
    return route.fulfill({
      contentType: 'text/javascript',
      body: `import './worker.js?real';\nconst real = self.onmessage;\nself.onmessage = (ev) => { if (ev.data.op !== 'decode') return real(ev); ${crash} };\n`,
    });
  });
  await page.goto(`${base}/index.html?model=${TINY_MODEL}&backend=cpu&decoder=${TINY_DECODER}`);
  await page.waitForFunction(() => document.body.dataset.ready, null, { timeout: 120_000 });
  await page.setInputFiles('#embedding-file', path.join(DECODER_GOLDENS, 'ddpm_nocfg.safetensors'));
  await page.waitForFunction(() => /ddpm_nocfg/.test(document.getElementById('decode-source').textContent));
  await setDecoderFields(page, { steps: 3, guidance: 1, width: 64, height: 64, scheduler: 'ddpm' });
  for (const attempt of [1, 2]) {
    assert.equal(await decodeLocally(page, 60_000), 'error', await page.textContent('#decode-status'));
    assert.equal(workers, attempt + 1, 'a decoder worker per attempt');
    const message = await page.textContent('#decode-status');
    assert.match(message, /^Could not decode: the decoder's worker crashed \(probably out of memory\): .*RuntimeError: unreachable\. “Decode locally” loads it again\.$/, message);
    assert.equal(await page.isEnabled('#decode-local'), true, 'Decode locally is enabled again');
    assert.equal(await page.isVisible('#cancel-decode-local'), false);
  }
  assert.equal(await decodeLocally(page), 'ok', await page.textContent('#decode-status'));
  assert.equal(workers, 4);
  assert.match(await page.textContent('#decoded-caption'), /64×64, guidance 1, noise from the file; 3 steps of ddpm/);
  assert.deepEqual(errors, []);
  await context.close();
});

test('an embedding file: step_noise sets the steps; step_noise that is not float is refused, naming the file', () => {
  const f32 = (shape) => ({ shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(0.5) });
  const tensors = { image_embeds: f32([1, 8]), initial_latents: f32([1, 4, 2, 3]), step_noise: f32([5, 1, 4, 2, 3]) };
  const input = readDecoderInput(writeSafetensors(tensors), 'noise.safetensors');
  assert.equal(input.steps, 5);
  assert.deepEqual([input.noise.latentHeight, input.noise.latentWidth, input.noise.stepNoise.length], [2, 3, 120]);
  assert.equal(readDecoderInput(writeSafetensors({ image_embeds: tensors.image_embeds, initial_latents: tensors.initial_latents }), 'a.safetensors').steps, null);
  assert.throws(() => readDecoderInput(writeSafetensors({ ...tensors, step_noise: { shape: [5, 1, 4, 2, 3], data: new Int32Array(120) } }), 'bad.safetensors'),
    /^Error: bad\.safetensors: step_noise must be float \[steps, 1, 4, 2, 3\] \(as initial_latents\), not I32 \[5,1,4,2,3\]$/);
  assert.throws(() => readDecoderInput(writeSafetensors({ ...tensors, step_noise: f32([5, 4, 2, 3]) }), 'rank.safetensors'), /rank\.safetensors: step_noise must be float/);
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
  await page.goto(`${base}/www/widget/embed-example.html?model=${TINY_MODEL}&decoder=${TINY_DECODER}&backend=cpu&width=64&height=64&steps=2`);
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
  // A second decode while the first computes its embedding is refused (no second load or decode starts).
  const second = await page.evaluate((w) => {
    const el = document.querySelector(w);
    const p = el.decodeLocally().then(() => 'resolved', (e) => e.message);
    el.dataset.status = 'busy';
    return p;
  }, W);
  assert.equal(second, 'a decode is already running');
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
