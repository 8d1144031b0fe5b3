// End-to-end: the <lambda-eclipse-widget> custom element. On www/widget/embed-example.html (tiny model, tiny local
// decoder server with a token): load, photos by picker / drop / paste inside its shadow DOM, highlighted
// keywords, Compute, Decode → the image appears; a wrong token is reported in words. Then the same widget
// embedded by a page on another origin: its worker and wasm still come from the widget's own origin. And a
// model that lists quantized copies: the widget offers them with sizes, its `variant` attribute picks one,
// the choice is remembered, and an unknown variant is refused in words.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { IMAGES, ROOT, SCREENSHOTS, TINY_MODEL, freePort, launchChromium, startStaticServer, waitFor } from './browser.mjs';
import { dropFiles, imageFile, makeVariantsSite, pasteFiles } from './helpers.mjs';

const TOKEN = 'widget-test-token';
let siteA, siteB, decoder, browser, endpoint, variants;

before(async () => {
  mkdirSync(SCREENSHOTS, { recursive: true });
  variants = makeVariantsSite('widget-variants-site'); // a model listing its q8_0 and q4_m copies
  siteA = await startStaticServer({ cors: true, args: ['--mount', `/variants/=${variants.dir}`] }); // serves the widget to siteB's page too
  siteB = await startStaticServer(); // another port: another origin
  const port = await freePort();
  endpoint = `http://127.0.0.1:${port}`;
  decoder = spawn('python3', ['-m', 'lambda_decoder', '--tiny-random', '--port', String(port), '--token', TOKEN,
    '--cors-origin', siteA.base, '--cors-origin', siteB.base, '--log-level', 'warning'], { cwd: path.join(ROOT, 'server'), stdio: 'inherit' });
  await waitFor(`${endpoint}/v1/health`, 120);
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  siteA?.process.kill();
  siteB?.process.kill();
  decoder?.kill();
});

const W = 'lambda-eclipse-widget';

/** Waits until the widget's status settles (not busy): 'ok' | 'warn' | 'error'. */
async function settled(page) {
  await page.waitForFunction((w) => ['ok', 'warn', 'error'].includes(document.querySelector(w).dataset.status), W, { timeout: 120_000 });
  return page.evaluate((w) => document.querySelector(w).dataset.status, W);
}
const statusText = (page) => page.locator(`${W} .status`).textContent();

async function loadWidget(page) {
  await page.click(`${W} .load`);
  assert.equal(await settled(page), 'ok', await statusText(page));
}

async function computeAndDecode(page, shotName) {
  await page.evaluate((w) => { document.querySelector(w).dataset.status = 'busy'; }, W);
  await page.click(`${W} .compute`);
  assert.equal(await settled(page), 'ok', await statusText(page));
  const r = await page.evaluate((w) => { const x = document.querySelector(w).result; return { n: x.imageEmbeds.length, warnings: x.warnings, stages: Object.keys(x.timings) }; }, W);
  assert.deepEqual(r, { n: 32, warnings: [], stages: ['tokenize', 'text encoder', 'subject 1 (cat)', 'subject 2 (glasses)', 'prior'] });
  assert.match(await page.locator(`${W} .timings`).textContent(), /tokenize \d+ ms · text encoder \d+ ms · subject 1 \(cat\) \d+ ms · subject 2 \(glasses\) \d+ ms · prior \d+ ms · total \d+ ms/);
  await page.evaluate((w) => { document.querySelector(w).dataset.status = 'busy'; }, W);
  await page.click(`${W} .decode`);
  assert.equal(await settled(page), 'ok', await statusText(page));
  const size = await page.locator(`${W} img.result-image`).evaluate((img) => [img.naturalWidth, img.naturalHeight, img.complete]);
  assert.deepEqual(size, [64, 64, true]);
  assert.equal(await page.locator(`${W} figure`).isVisible(), true);
  assert.match(await page.locator(`${W} figcaption`).textContent(), /64×64, 2 steps, seed 42/);
  if (shotName) await page.screenshot({ path: path.join(SCREENSHOTS, shotName), fullPage: true });
}

test('the widget on embed-example.html computes with photos picked, dropped and pasted, decodes on the endpoint, and the image appears', async () => {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${siteA.base}/www/widget/embed-example.html?model=${TINY_MODEL}&endpoint=${endpoint}&token=${TOKEN}&width=64&height=64&steps=2`);
  await page.waitForFunction((w) => customElements.get(w), W);
  assert.equal(await page.locator(`${W} .decode`).isVisible(), false, 'Decode appears once there is a model');
  await page.screenshot({ path: path.join(SCREENSHOTS, '14-widget-before-load.png'), fullPage: true });
  await loadWidget(page);
  assert.match(await page.locator(`${W} h2`).textContent(), /WebGPU/);
  const slots = page.locator(`${W} .subject`);
  assert.equal(await slots.count(), 2);
  await dropFiles(page, slots.nth(0), [imageFile('chelsea.png')]);
  await pasteFiles(page, slots.nth(1).locator('.keyword'), [imageFile('coffee.png')]);
  await page.waitForFunction((w) => [...document.querySelector(w).shadowRoot.querySelectorAll('.subject')].every((s) => s.dataset.image === 'ok'), W, { timeout: 60_000 });
  await page.waitForFunction((w) => document.querySelector(w).shadowRoot.querySelectorAll('.prompt-preview mark').length === 2, W, { timeout: 30_000 });
  assert.deepEqual(await page.locator(`${W} .prompt-preview mark`).allTextContents(), ['cat', 'glasses']);
  await computeAndDecode(page, '15-widget-decoded.png');

  // A wrong token: the widget says the endpoint refused it; with the right one decoding works again.
  await page.evaluate((w) => { const el = document.querySelector(w); el.setAttribute('token', 'wrong'); el.dataset.status = 'busy'; }, W);
  await page.click(`${W} .decode`);
  assert.equal(await settled(page), 'error');
  assert.match(await statusText(page), new RegExp(`Could not decode: decoder endpoint ${endpoint}/v1/decode: the endpoint refused the token \\(401`));
  await page.screenshot({ path: path.join(SCREENSHOTS, '16-widget-wrong-token.png'), fullPage: true });
  await page.evaluate(([w, t]) => { const el = document.querySelector(w); el.setAttribute('token', t); el.dataset.status = 'busy'; }, [W, TOKEN]);
  await page.click(`${W} .decode`);
  assert.equal(await settled(page), 'ok', await statusText(page));
  assert.deepEqual(errors, []);
  await page.close();
});

test('a page on another origin embeds the widget with one module script; its worker and wasm come from the widget\'s origin', async () => {
  await fetch(`${siteA.base}/__stats/reset`, { method: 'POST' });
  await fetch(`${siteB.base}/__stats/reset`, { method: 'POST' });
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  const q = new URLSearchParams({ widget: `${siteA.base}/www/widget/lambda-eclipse-widget.js`, model: `${siteA.base}${TINY_MODEL}`, endpoint, token: TOKEN, width: '64', height: '64', steps: '2' });
  await page.goto(`${siteB.base}/tests/e2e/pages/widget-host.html?${q}`);
  await page.waitForFunction((w) => customElements.get(w), W, { timeout: 30_000 });
  await loadWidget(page);
  const slots = page.locator(`${W} .subject`);
  await slots.nth(0).locator('.image').setInputFiles(path.join(IMAGES, 'chelsea.png'));
  await slots.nth(1).locator('.image').setInputFiles(path.join(IMAGES, 'coffee.png'));
  await computeAndDecode(page, '17-widget-cross-origin.png');
  const a = await (await fetch(`${siteA.base}/__stats`)).json();
  const b = await (await fetch(`${siteB.base}/__stats`)).json();
  for (const p of ['/www/lib/worker.js', '/www/lib/tools-worker.js', '/pkg/lambda_eclipse.js', '/pkg/lambda_eclipse_bg.wasm']) {
    assert.ok(a[p] >= 1, `${p} from the widget's origin: ${JSON.stringify(a)}`);
    assert.equal(b[p], undefined, `${p} must not be fetched from the page's origin`);
  }
  assert.deepEqual(Object.keys(b).filter((p) => !p.startsWith('/tests/e2e/pages/')), []);
  assert.deepEqual(errors, []);
  await page.close();
});

/** A blank page of siteA holding `<lambda-eclipse-widget attrs>` (the module loaded first). */
async function widgetPage(context, attrs) {
  const page = await context.newPage();
  await page.goto(`${siteA.base}/tests/e2e/pages/blank.html`);
  await page.evaluate(async (a) => {
    await import('/www/widget/lambda-eclipse-widget.js');
    document.body.innerHTML = `<lambda-eclipse-widget ${a}></lambda-eclipse-widget>`;
  }, attrs);
  return page;
}
const options = (page) => page.locator(`${W} select.variant option`).allTextContents();
const mb = (bytes) => `${(bytes / 1e6).toFixed(1)} MB`;

test('the widget offers a model\'s listed variants with sizes, loads the one its variant attribute names, and remembers the choice', async () => {
  const context = await browser.newContext();
  const errors = [];
  context.on('weberror', (e) => errors.push(e.error().message));
  const { listing } = variants;
  let page = await widgetPage(context, 'model="/variants/" variant="q8_0" backend="cpu"');
  await page.waitForFunction((w) => !document.querySelector(w).shadowRoot.querySelector('.variant-choice').hidden, W, { timeout: 30_000 });
  assert.deepEqual(await options(page), [`original — ${mb(listing.original.bytes)}`, `q8_0 — ${mb(listing.q8_0.bytes)}`, `q4_m — ${mb(listing.q4_m.bytes)}`]);
  assert.equal(await page.locator(`${W} select.variant`).inputValue(), 'q8_0');
  assert.equal(await page.locator(`${W} .load`).textContent(), `Load q8_0 (${mb(listing.q8_0.bytes)} download, once)`);
  await fetch(`${siteA.base}/__stats/reset`, { method: 'POST' });
  await page.click(`${W} .load`);
  assert.equal(await settled(page), 'warn', await statusText(page)); // 'warn': computing on the CPU, as asked
  assert.equal(await page.evaluate((w) => document.querySelector(w).engine.variant, W), 'q8_0');
  assert.match(await page.locator(`${W} h2`).textContent(), /CPU \(wasm\) · q8_0/);
  const stats = await (await fetch(`${siteA.base}/__stats`)).json();
  const weights = Object.keys(stats).filter((p) => /\.(gguf|safetensors)$/.test(p));
  assert.ok(weights.length > 0 && weights.every((p) => p.startsWith('/variants/q8_0/')), JSON.stringify(weights));
  await page.screenshot({ path: path.join(SCREENSHOTS, '18-widget-variant.png'), fullPage: true });
  await page.close();

  // Chosen in the widget (q4_m), remembered: without a variant attribute the next widget starts from it.
  page = await widgetPage(context, 'model="/variants/" backend="cpu"');
  await page.waitForFunction((w) => !document.querySelector(w).shadowRoot.querySelector('.variant-choice').hidden, W, { timeout: 30_000 });
  assert.equal(await page.locator(`${W} select.variant`).inputValue(), 'q8_0', 'the loaded variant is remembered');
  await page.locator(`${W} select.variant`).selectOption('q4_m');
  assert.equal(await page.locator(`${W} .load`).textContent(), `Load q4_m (${mb(listing.q4_m.bytes)} download, once)`);
  await page.reload();
  await page.evaluate(async () => {
    await import('/www/widget/lambda-eclipse-widget.js');
    document.body.innerHTML = '<lambda-eclipse-widget model="/variants/" backend="cpu"></lambda-eclipse-widget>';
  });
  await page.waitForFunction((w) => !document.querySelector(w).shadowRoot.querySelector('.variant-choice').hidden, W, { timeout: 30_000 });
  assert.equal(await page.locator(`${W} select.variant`).inputValue(), 'q4_m');
  await page.close();

  // A variant the model does not list: refused in words, naming those it lists.
  page = await widgetPage(context, 'model="/shared/goldens/lambda-tiny/model/" variant="q8_0" backend="cpu"');
  await page.click(`${W} .load`);
  assert.equal(await settled(page), 'error');
  assert.match(await statusText(page), /The model failed to load: unknown variant "q8_0": \/shared\/goldens\/lambda-tiny\/model\/ lists no variants/);
  await page.close();
  assert.deepEqual(errors, []);
  await context.close();
});
