// End-to-end: the studio page as a visitor meets it (issue 17). The capability screen before any download
// (adapter, storage, engine memory; a model that cannot run is shown with the reason, never hidden; nothing is
// fetched before a click), a one-click example through embedding and local decode with the tiny models (the
// picture above the fold at 1280×800 and 360×740), the history strip (restore, compare, export), a
// keyboard-only flow, and axe-core on every screen (0 serious or critical), light and dark. Screenshots of each
// screen at both sizes go to tests/output/screenshots/studio-*.png (not committed).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM, IMAGES, SCREENSHOTS, TINY_DECODER, TINY_MODEL, openSite } from './browser.mjs';
import { downloadOf, dropFiles, fileChoosers, imageFile, openPanel, photoStates } from './helpers.mjs';
import { axeViolations } from './a11y.mjs';

let site, browser, base;

before(async () => ({ browser, base } = site = await openSite()));
after(() => site?.close());

const SIZES = [{ width: 1280, height: 800 }, { width: 360, height: 740 }];
/** The tiny λ model and decoder, pictures of 64×64 in 2 steps (the CPU: the app tests cover WebGPU). */
const TINY = `model=${TINY_MODEL}&decoder=${TINY_DECODER}&backend=cpu&width=64&height=64&steps=2`;

async function newPage({ size = SIZES[0], dark = false, on = browser } = {}) {
  const context = await on.newContext({ viewport: size, colorScheme: dark ? 'dark' : 'light' });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  return { page, context, errors };
}

/** Screenshot of the viewport (what a visitor sees first) and of the whole page. */
async function shot(page, name) {
  const { width } = page.viewportSize();
  await page.screenshot({ path: path.join(SCREENSHOTS, `studio-${name}-${width}.png`) });
  await page.screenshot({ path: path.join(SCREENSHOTS, `studio-${name}-${width}-full.png`), fullPage: true });
}

/** axe-core on the page: no serious or critical violation. Returns the number of (lesser) violations. */
const axeLog = [];
async function assertAccessible(page, screen) {
  const { serious, all } = await axeViolations(page);
  axeLog.push(`${screen}: ${serious.length} serious/critical, ${all.length} in all${all.length ? ` (${all.map((v) => `${v.id}: ${v.impact}`).join(', ')})` : ''}`);
  assert.deepEqual(serious, [], `axe-core on ${screen}`);
}
after(() => { for (const line of axeLog) console.log(`# axe ${line}`); });

const waitCapability = (page) => page.waitForFunction(() => document.getElementById('capability').getAttribute('aria-busy') === 'false', null, { timeout: 60_000 });
const ready = async (page) => {
  await page.waitForFunction(() => document.body.dataset.ready, null, { timeout: 180_000 });
  assert.equal(await page.evaluate(() => document.body.dataset.ready), 'true', await page.textContent('#status'));
};
/** Clicks `selector` (a Create or an example) and waits for the whole Create: 'ok' | 'error'. */
async function created(page, act) {
  await page.evaluate(() => { delete document.body.dataset.created; });
  await act();
  await page.waitForFunction(() => ['ok', 'error'].includes(document.body.dataset.created), null, { timeout: 240_000 });
  return page.evaluate(() => document.body.dataset.created);
}
const facts = (page, id) => page.$$eval(`#${id} dt`, (dts) => Object.fromEntries(dts.map((dt) => [dt.textContent, dt.nextElementSibling.textContent])));
/** The picker's rows: `{ id, verdict, disabled, size, text }`. */
const variants = (page, picker) => page.$$eval(`#${picker} .variant`, (rows) => rows.map((r) => ({
  id: r.dataset.variant, verdict: r.dataset.verdict, disabled: r.querySelector('input').disabled,
  size: r.querySelector('.size').textContent, text: r.querySelector('.variant-desc').innerText, visible: r.querySelector('.verdict').checkVisibility(),
})));
/** The shown picture's RGB bytes and where it is on the screen at scroll 0. */
const picture = (page) => page.evaluate(async () => {
  window.scrollTo(0, 0);
  await new Promise((r) => requestAnimationFrame(() => r()));
  const img = document.getElementById('decoded-image');
  const c = Object.assign(document.createElement('canvas'), { width: img.naturalWidth, height: img.naturalHeight });
  c.getContext('2d').drawImage(img, 0, 0);
  const rgba = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const r = img.getBoundingClientRect();
  return { width: c.width, height: c.height, rgb: Array.from(rgba).filter((_, i) => i % 4 !== 3), top: r.top, bottom: r.bottom, shownWidth: r.width, viewport: innerHeight, visible: img.checkVisibility() };
});

test('the capability screen shows the adapter, storage and engine memory before any download, and says why a model cannot run instead of hiding it', async () => {
  // With WebGPU (SwiftShader): every fact in words, the real model offered with its size and the wait, nothing fetched.
  for (const size of SIZES) {
    const { page, context, errors } = await newPage({ size });
    const requested = [];
    page.on('request', (r) => requested.push(r.url()));
    await page.goto(`${base}/index.html`);
    await waitCapability(page);
    const device = await facts(page, 'device-facts');
    assert.match(device['Graphics (WebGPU)'], /swiftshader/i);
    assert.match(device['Half-precision shaders'], /^no/);
    assert.match(device['Largest GPU buffer'], /^1 GiB/);
    assert.match(device['Storage for models'], /^[\d.]+ [kMGT]?B free for this page/);
    assert.match(device['Engine memory (WebAssembly)'], /^up to 4 GiB/);
    assert.ok(device.Connection, 'the connection is named');
    const model = await variants(page, 'model-picker');
    assert.deepEqual(model.map((v) => [v.id, v.size, v.disabled]), [['full', '6.6 GB download', false]]);
    assert.equal(model[0].visible, true);
    assert.match(model[0].text, /Runs on this device with WebGPU on .*swiftshader.*Download: about .*(min|h)/i);
    assert.match(model[0].text, /software fallback/, 'a caveat is said, not swallowed');
    const decoder = await variants(page, 'decoder-picker');
    assert.deepEqual(decoder.map((v) => [v.id, v.size]), [['full', '5.3 GB download'], ['none', '']]);
    assert.equal(await page.textContent('#load-model'), 'Download 6.6 GB and start');
    assert.match(await page.textContent('#status'), /Nothing is downloaded yet/);
    await page.waitForTimeout(1500);
    assert.equal(await page.evaluate(() => document.body.dataset.loading ?? document.body.dataset.ready ?? 'idle'), 'idle', 'no load starts without a click');
    const offsite = requested.filter((u) => !u.startsWith(base) && !u.startsWith('data:'));
    assert.deepEqual(offsite, [], 'nothing is fetched from the hub before a click');
    assert.deepEqual(requested.filter((u) => /safetensors|\/model\//.test(u)), [], 'no model file is fetched');
    await shot(page, 'welcome');
    await assertAccessible(page, `the capability screen at ${size.width} px`);
    assert.deepEqual(errors, []);
    await context.close();
  }

  // Little storage: the model still may load, and the row says it will not be kept. (Chromium's CDP quota
  // override limits writes but not what navigator.storage.estimate() reports, so the estimate is given here.)
  {
    const { page, context } = await newPage();
    await page.addInitScript(() => {
      const real = navigator.storage.estimate.bind(navigator.storage);
      navigator.storage.estimate = async () => ({ ...(await real()), quota: 64 * 1024 });
    });
    await page.goto(`${base}/index.html`);
    await waitCapability(page);
    assert.match((await facts(page, 'device-facts'))['Storage for models'], /^[\d.]+ k?B free for this page/);
    await shot(page, 'welcome-little-storage');
    const [full] = await variants(page, 'model-picker');
    assert.equal(full.verdict, 'warn');
    assert.equal(full.disabled, false);
    assert.match(full.text, /lets the page keep [\d.]+ k?B more; it needs 6\.6 GB: it will load, but not be kept/);
    await context.close();
  }

  // No WebGPU (Chromium without --enable-unsafe-webgpu): the real models are refused, each with the reason.
  const plain = await chromium.launch({ ...CHROMIUM, args: CHROMIUM.args.filter((a) => a !== '--enable-unsafe-webgpu') });
  try {
    for (const size of SIZES) {
      const { page, errors } = await newPage({ size, on: plain });
      await page.goto(`${base}/index.html`);
      await waitCapability(page);
      assert.match((await facts(page, 'device-facts'))['Graphics (WebGPU)'], /^not available/);
      const [full] = await variants(page, 'model-picker');
      assert.deepEqual([full.verdict, full.disabled, full.visible], ['no', true, true], 'shown, disabled, with its reason');
      assert.match(full.text, /Cannot run on this device\.[\s\S]*It needs WebGPU, which is not available here \(.+\), and it is too large for the CPU fallback[\s\S]*Open this page in a browser with WebGPU/);
      const decoder = await variants(page, 'decoder-picker');
      assert.deepEqual(decoder.map((v) => [v.id, v.verdict, v.disabled]), [['full', 'no', true], ['none', 'ok', false]]);
      assert.equal(await page.isChecked('#decoder-picker input[value="none"]'), true, 'the choice that runs is chosen');
      assert.equal(await page.isDisabled('#load-model'), true);
      assert.match(await page.textContent('#status'), /None of the models can run on this device: see why under each of them/);
      await shot(page, 'welcome-no-webgpu');
      await assertAccessible(page, `the capability screen without WebGPU at ${size.width} px`);
      assert.deepEqual(errors, []);
      await page.context().close();
    }
  } finally {
    await plain.close();
  }
});

test('an example runs end to end with the tiny models (embedding, then local decode) and the picture is above the fold at 1280×800 and 360×740', async () => {
  for (const size of SIZES) {
    const { page, context, errors } = await newPage({ size });
    await page.goto(`${base}/index.html?${TINY}`);
    await ready(page);
    assert.equal(await page.evaluate(() => document.getElementById('setup').open), false, 'the setup panel folds away once loaded');
    await shot(page, 'studio');
    await assertAccessible(page, `the studio at ${size.width} px`);

    assert.equal(await created(page, () => page.click('#example-list button[data-example="cat-coffee"]')), 'ok', await page.textContent('#status'));
    assert.match(await page.textContent('#status'), /^Done: your picture is ready \(result 1 in this session\)/);
    assert.equal(await page.inputValue('#prompt'), 'a cat next to a cup of coffee on a wooden table');
    assert.deepEqual(await page.$$eval('.subject .keyword', (ks) => ks.map((k) => k.value)), ['cat', 'cup']);
    assert.deepEqual(await photoStates(page), ['ok', 'ok']);
    assert.deepEqual(await page.$$eval('#prompt-preview mark', (ms) => ms.map((m) => m.textContent)), ['cat', 'cup']);
    const embeds = await page.evaluate(() => Array.from(window.__lambdaResult.imageEmbeds));
    assert.equal(embeds.length, 32);
    assert.ok(embeds.every(Number.isFinite) && embeds.some((v) => v !== 0), 'an embedding');
    assert.equal(await page.evaluate(() => document.body.dataset.decodedLocal), 'ok');
    assert.match(await page.textContent('#decoded-caption'), /^64×64, guidance 4, seed 42; 2 steps of \w+ · \d+ ms\/step · MoVQ \d+ ms · [\d.]+ s in all on this device \(CPU\)$/);
    assert.match(await page.getAttribute('#decoded-image', 'alt'), /^The picture made from “a cat next to a cup of coffee on a wooden table” with your photos for cat, cup$/);

    const p = await picture(page);
    assert.deepEqual([p.width, p.height, p.visible], [64, 64, true]);
    assert.ok(new Set(p.rgb).size > 16, 'a picture, not a flat image');
    assert.ok(p.top >= 0 && p.bottom <= p.viewport, `the picture is above the fold at ${size.width}×${size.height}: ${p.top}–${p.bottom} of ${p.viewport} px`);
    assert.ok(p.shownWidth >= Math.min(480, size.width - 80), `shown large: ${p.shownWidth} px wide`);
    console.log(`# ${size.width}×${size.height}: the picture spans y ${Math.round(p.top)}–${Math.round(p.bottom)} of ${p.viewport}, ${Math.round(p.shownWidth)} px wide`);
    assert.equal(await page.locator('#history-list .history-item').count(), 1);
    await shot(page, 'result');
    await assertAccessible(page, `the result at ${size.width} px`);
    assert.deepEqual(errors, []);
    await context.close();
  }
});

test('the history strip brings a result back, compares two side by side and exports the session as a zip', async () => {
  const { page, context, errors } = await newPage();
  await page.goto(`${base}/index.html?${TINY}`);
  await ready(page);
  assert.equal(await created(page, () => page.click('#example-list button[data-example="astronaut"]')), 'ok', await page.textContent('#status'));
  const first = { embeds: await page.evaluate(() => Array.from(window.__lambdaResult.imageEmbeds)), picture: (await picture(page)).rgb };
  // A second result of its own: another prompt, one subject, another seed.
  await page.fill('#prompt', 'a cat on the moon');
  await page.locator('.subject').nth(1).locator('.remove').click();
  await page.locator('.subject').nth(0).locator('.keyword').fill('cat');
  await dropFiles(page, page.locator('.subject').nth(0), [imageFile('chelsea.png')]);
  await photoStates(page);
  await page.fill('#seed', '7');
  assert.equal(await created(page, () => page.click('#create')), 'ok', await page.textContent('#status'));
  const second = { embeds: await page.evaluate(() => Array.from(window.__lambdaResult.imageEmbeds)), picture: (await picture(page)).rgb };
  assert.notDeepEqual(second.embeds, first.embeds);
  assert.equal(await page.locator('#history-list .history-item').count(), 2);
  assert.equal(await page.getAttribute('#history-list [data-entry="2"]', 'aria-current'), 'true');

  // Restore result 1: the form, the embedding and the picture are those of result 1.
  await page.click('#history-list [data-entry="1"]');
  await page.waitForFunction(() => /Result 1: .* is back/.test(document.getElementById('status').textContent));
  assert.equal(await page.inputValue('#prompt'), 'an astronaut on a motorcycle in the desert');
  assert.equal(await page.inputValue('#seed'), '42');
  assert.deepEqual(await page.$$eval('.subject .keyword', (ks) => ks.map((k) => k.value)), ['astronaut', 'motorcycle']);
  assert.deepEqual(await photoStates(page), ['ok', 'ok']);
  assert.match(await page.locator('.subject').nth(1).textContent(), /motorcycle_left\.png: \d+×\d+/);
  assert.deepEqual(await page.evaluate(() => Array.from(window.__lambdaResult.imageEmbeds)), first.embeds);
  assert.deepEqual((await picture(page)).rgb, first.picture, 'the picture of result 1 is shown again');
  assert.equal(await page.getAttribute('#history-list [data-entry="1"]', 'aria-current'), 'true');
  assert.equal(await page.getAttribute('#history-list [data-entry="1"]', 'aria-label'), 'Bring back Result 1: “an astronaut on a motorcycle in the desert”, seed 42');
  // Restored, it computes again to the same embedding (the form holds exactly what made it).
  await page.click('#compute');
  await page.waitForFunction(() => document.body.dataset.result === 'ready', null, { timeout: 120_000 });
  assert.deepEqual(await page.evaluate(() => Array.from(window.__lambdaResult.imageEmbeds)), first.embeds);

  // Compare two, side by side.
  await page.click('#compare-toggle');
  assert.equal(await page.getAttribute('#compare-toggle', 'aria-pressed'), 'true');
  await page.click('#history-list [data-entry="1"]');
  await page.click('#history-list [data-entry="2"]');
  assert.equal(await page.isVisible('#compare'), true);
  const shown = await page.$$eval('#compare-grid figure', (fs) => fs.map((f) => [f.dataset.entry, Boolean(f.querySelector('img')?.complete), f.querySelector('figcaption').textContent]));
  assert.deepEqual(shown.map(([id, img]) => [id, img]), [['1', true], ['2', true]]);
  assert.match(shown[0][2], /^A · Result 1: “an astronaut on a motorcycle in the desert”, seed 42/);
  assert.match(shown[1][2], /^B · Result 2: “a cat on the moon”, seed 7/);
  assert.match(await page.textContent('#compare-grid .compare-note'), /cosine similarity -?[01]\.\d{4}/);
  const boxes = await page.$$eval('#compare-grid figure', (fs) => fs.map((f) => f.getBoundingClientRect().toJSON()));
  assert.ok(Math.abs(boxes[0].top - boxes[1].top) < 2 && boxes[0].right <= boxes[1].left, 'side by side');
  for (const size of SIZES) {
    await page.setViewportSize(size);
    await page.locator('#compare').scrollIntoViewIfNeeded();
    await page.screenshot({ path: path.join(SCREENSHOTS, `studio-compare-${size.width}.png`) });
    await assertAccessible(page, `compare at ${size.width} px`);
  }
  await page.setViewportSize(SIZES[0]);
  await page.click('#compare-close');
  assert.equal(await page.isVisible('#compare'), false);

  // Export the session (3 results: the recompute is one): PNGs and embeddings that Python reads back.
  const zip = await downloadOf(page, '#export-session', 'session');
  assert.equal(zip.name, 'lambda-eclipse-session.zip');
  const script = `
import io, json, sys, zipfile, struct
from safetensors.numpy import load
z = zipfile.ZipFile(sys.argv[1])
assert z.testzip() is None
out = {'names': z.namelist(), 'png': {}, 'embeds': {}}
for n in z.namelist():
    data = z.read(n)
    if n.endswith('.png'):
        assert data[:8] == b'\\x89PNG\\r\\n\\x1a\\n'
        out['png'][n] = list(struct.unpack('>II', data[16:24]))
    elif n.endswith('.safetensors'):
        out['embeds'][n] = load(data)['image_embeds'].ravel().tolist()
out['session'] = json.loads(z.read('session.json'))
print(json.dumps(out))
`;
  const r = spawnSync('python3', ['-c', script, zip.file], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const z = JSON.parse(r.stdout);
  assert.deepEqual(z.names, [
    '01-an-astronaut-on-a-motorcycle-in-the-desert.png', '01-an-astronaut-on-a-motorcycle-in-the-desert.safetensors',
    '02-a-cat-on-the-moon.png', '02-a-cat-on-the-moon.safetensors',
    '03-an-astronaut-on-a-motorcycle-in-the-desert.safetensors', 'session.json']);
  assert.deepEqual(Object.values(z.png), [[64, 64], [64, 64]]);
  assert.deepEqual(z.embeds['01-an-astronaut-on-a-motorcycle-in-the-desert.safetensors'], first.embeds.map(Math.fround));
  assert.deepEqual(z.embeds['02-a-cat-on-the-moon.safetensors'], second.embeds.map(Math.fround));
  assert.deepEqual(z.session.results.map((e) => [e.result, e.prompt, e.seed, e.keywords]), [
    [1, 'an astronaut on a motorcycle in the desert', 42, ['astronaut', 'motorcycle']], [2, 'a cat on the moon', 7, ['cat']],
    [3, 'an astronaut on a motorcycle in the desert', 42, ['astronaut', 'motorcycle']]]);
  assert.deepEqual(errors, []);
  await context.close();
});

test('keyboard only: skip link, prompt, photos through the buttons, Create with Enter — the picture is made, and focus is always visible', async () => {
  const { page, context, errors } = await newPage();
  const choosers = fileChoosers(page);
  await page.goto(`${base}/index.html?${TINY}`);
  await ready(page);
  const noFocusRing = [];
  /** Presses Tab until the focused element matches `selector` (at most 60 presses), checking each one's focus ring. */
  async function tabTo(selector) {
    for (let i = 0; i < 60; i++) {
      await page.keyboard.press('Tab');
      const f = await page.evaluate((sel) => {
        const el = document.activeElement;
        const s = getComputedStyle(el);
        return { hit: el.matches(sel), ring: s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2, what: `${el.tagName.toLowerCase()}#${el.id}.${el.className} “${(el.getAttribute('aria-label') || el.textContent).trim().slice(0, 40)}”` };
      }, selector);
      if (!f.ring) noFocusRing.push(f.what);
      if (f.hit) return;
    }
    assert.fail(`Tab never reached ${selector}`);
  }
  // The skip link is the first stop; it leads to the studio.
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Skip to the studio');
  await page.keyboard.press('Enter');
  await tabTo('#prompt');
  await page.keyboard.press('Control+A');
  await page.keyboard.type('a cat next to a cup');
  await tabTo('.subject[data-index="0"] .keyword');
  assert.equal(await page.evaluate(() => document.activeElement.value), 'cat');
  await tabTo('.subject[data-index="0"] .choose');
  await (await choosers.next(() => page.keyboard.press('Enter'))).setFiles(path.join(IMAGES, 'chelsea.png'));
  await tabTo('.subject[data-index="1"] .keyword');
  await page.keyboard.press('Control+A');
  await page.keyboard.type('cup');
  await tabTo('.subject[data-index="1"] .choose');
  await (await choosers.next(() => page.keyboard.press(' '))).setFiles(path.join(IMAGES, 'coffee.png'));
  assert.deepEqual(await photoStates(page), ['ok', 'ok']);
  await tabTo('#create');
  assert.equal(await created(page, () => page.keyboard.press('Enter')), 'ok', await page.textContent('#status'));
  assert.match(await page.textContent('#status'), /^Done: your picture is ready/);
  assert.deepEqual(await page.evaluate(() => window.__lambdaResult.imageEmbeds.length), 32);
  assert.deepEqual(await page.$$eval('#prompt-preview mark', (ms) => ms.map((m) => m.textContent)), ['cat', 'cup']);
  assert.equal((await picture(page)).width, 64);
  // The history strip is reachable and works from the keyboard too.
  await tabTo('#history-list [data-entry="1"]');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => /Result 1: .* is back/.test(document.getElementById('status').textContent));
  assert.deepEqual(noFocusRing, [], 'every focused control shows a focus ring');
  await page.screenshot({ path: path.join(SCREENSHOTS, 'studio-keyboard-1280.png') });
  assert.deepEqual(errors, []);
  await context.close();
});

test('axe-core: no serious or critical violation on the other screens (loading, panels open, an error, the widget), light and dark, at both sizes', async () => {
  for (const dark of [false, true]) {
    for (const size of SIZES) {
      const tag = `${dark ? 'dark ' : ''}${size.width} px`;
      const suffix = dark ? 'dark' : '';
      const { page, context, errors } = await newPage({ size, dark });
      if (dark) {
        await page.goto(`${base}/index.html`);
        await waitCapability(page);
        await shot(page, 'welcome-dark');
        await assertAccessible(page, `the capability screen, ${tag}`);
      }
      // Loading: the tiny model sent slowly.
      await fetch(`${base}/__throttle?delay_ms=100&rate=2000000`, { method: 'POST' });
      try {
        await page.goto(`${base}/index.html?${TINY}`);
        await page.waitForFunction(() => (window.__lambdaLoadProgress?.done ?? 0) > 0, null, { timeout: 60_000 });
        await shot(page, `loading${suffix && `-${suffix}`}`);
        await assertAccessible(page, `loading, ${tag}`);
      } finally {
        await fetch(`${base}/__throttle?delay_ms=0&rate=0`, { method: 'POST' });
      }
      await ready(page);
      // A result with every panel open: edge control with its preview, settings, interpolation grid, details.
      assert.equal(await created(page, () => page.click('#example-list button[data-example="rocket-edges"]')), 'ok', await page.textContent('#status'));
      assert.equal(await page.evaluate(() => document.getElementById('control-panel').open), true, 'the example opened the edge panel');
      await page.waitForFunction(() => document.getElementById('canny-preview').dataset.state === 'ok', null, { timeout: 60_000 });
      for (const id of ['settings-panel', 'interpolation-panel', 'details', 'setup']) await openPanel(page, id);
      await page.click('#interpolation .interpolate');
      await page.waitForFunction(() => document.getElementById('interpolation').dataset.grid === 'ready', null, { timeout: 30_000 });
      await shot(page, `panels${suffix && `-${suffix}`}`);
      await assertAccessible(page, `every panel open, ${tag}`);
      // An error, in words with what to do next.
      await dropFiles(page, page.locator('.subject').nth(0), [{ name: 'notes.txt', bytes: Buffer.from('not a photo'), type: 'text/plain' }]);
      await photoStates(page);
      assert.match(await page.locator('.subject').nth(0).locator('.note.img').textContent(), /notes\.txt cannot be used as a photo: .*unsupported format.*\. Use a PNG, JPEG, WebP, GIF or BMP image\.$/);
      assert.equal(await created(page, () => page.click('#create')), 'error');
      assert.match(await page.textContent('#status'), /^Could not compute: subject 1 \("rocket"\): .*Use a PNG, JPEG, WebP, GIF or BMP image\.$/);
      await shot(page, `error${suffix && `-${suffix}`}`);
      await assertAccessible(page, `an error, ${tag}`);
      assert.deepEqual(errors, []);
      await context.close();
    }
  }
  // The widget, on its embedding example: before loading and with a result.
  for (const dark of [false, true]) {
    const { page, context, errors } = await newPage({ size: SIZES[1], dark });
    await page.goto(`${base}/www/widget/embed-example.html?${TINY}`);
    await page.waitForFunction(() => customElements.get('lambda-eclipse-widget'));
    await assertAccessible(page, `the widget before loading${dark ? ', dark' : ''}`);
    const W = 'lambda-eclipse-widget';
    await page.click(`${W} .load`);
    await page.waitForFunction((w) => ['ok', 'warn', 'error'].includes(document.querySelector(w).dataset.status), W, { timeout: 120_000 });
    await page.locator(`${W} .subject`).nth(0).locator('.image').setInputFiles(path.join(IMAGES, 'chelsea.png'));
    await page.locator(`${W} .subject`).nth(1).locator('.image').setInputFiles(path.join(IMAGES, 'coffee.png'));
    await page.evaluate((w) => document.querySelector(w).decodeLocally(), W);
    assert.match(await page.locator(`${W} .status`).textContent(), /^Decoded on this device/);
    // The same tokens as the page: the shadow root's controls take their colours from tokens.css.
    const accent = await page.locator(`${W} .compute`).evaluate((b) => getComputedStyle(b).backgroundColor);
    assert.equal(accent, dark ? 'rgb(168, 149, 255)' : 'rgb(83, 53, 201)');
    await page.screenshot({ path: path.join(SCREENSHOTS, `studio-widget${dark ? '-dark' : ''}-360.png`), fullPage: true });
    await assertAccessible(page, `the widget with a picture${dark ? ', dark' : ''}`);
    assert.deepEqual(errors, []);
    await context.close();
  }
});
