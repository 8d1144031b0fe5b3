// End-to-end: bad inputs in the app — a file that is not an image, a corrupt PNG, a 12000×12000 image (as a
// subject photo and as the edge-control image), decode bombs through the JS API, and a keyword missing from the prompt. Each is named in the UI
// as soon as it is given, computing with it gives a clear message (or the engine's warning), and the next good
// action — the cat_glasses case — computes the golden embedding. Screenshots in tests/output/screenshots/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { deflateSync } from 'node:zlib';
import { GOLDENS, IMAGES, ROOT, SCREENSHOTS, TINY_MODEL, openSite, startStaticServer } from './browser.mjs';
import { dropFiles, golden, imageFile, maxDiff, openApp, pasteFiles, photoStates } from './helpers.mjs';

let site, browser, base;

before(async () => ({ browser, base } = site = await openSite()));
after(() => site?.close());

function crc32(bytes) {
  let c = ~0;
  for (const b of bytes) { c ^= b; for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1; }
  return ~c >>> 0;
}

function chunk(type, data) {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'latin1');
  data.copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

/** A valid, black, 8-bit grey PNG of width × height (12000² compresses to about 140 KB). */
function blackPng(width, height) {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth; colour type 0 (grey), compression/filter/interlace 0
  const raw = Buffer.alloc((width + 1) * height); // filter byte 0 + zero pixels per row
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw, { level: 9 })), chunk('IEND', Buffer.alloc(0))]);
}

/** chelsea.png with its image data cut off half-way. */
function truncatedPng() {
  const png = readFileSync(path.join(IMAGES, 'chelsea.png'));
  return png.subarray(0, Math.floor(png.length / 2));
}

/** cat_glasses through the page after the bad input: good photos, golden noise → the golden embedding. */
async function catGlassesWorks(page) {
  await page.fill('#prompt', 'a cat wearing glasses at a park');
  const slots = page.locator('.subject');
  await slots.nth(0).locator('.keyword').fill('cat');
  await slots.nth(1).locator('.keyword').fill('glasses');
  await slots.nth(0).locator('.image').setInputFiles(path.join(IMAGES, 'chelsea.png'));
  await slots.nth(1).locator('.image').setInputFiles(path.join(IMAGES, 'coffee.png'));
  assert.deepEqual(await photoStates(page), ['ok', 'ok']);
  await page.evaluate((n) => { window.__lambdaNoise = new Float32Array(n); delete document.body.dataset.result; }, Array.from(golden('cat_glasses.safetensors', 'noise').data));
  await page.click('#compute');
  await page.waitForFunction(() => ['ready', 'error'].includes(document.body.dataset.result), null, { timeout: 120_000 });
  assert.equal(await page.evaluate(() => document.body.dataset.result), 'ready', await page.textContent('#status'));
  assert.equal(await page.textContent('#status'), 'Done.');
  const got = await page.evaluate(() => Array.from(window.__lambdaResult.imageEmbeds));
  const diff = maxDiff(got, golden('cat_glasses.safetensors', 'image_embeds').data);
  assert.ok(diff <= 1e-4, `after the bad input, cat_glasses differs from the golden by ${diff}`);
}

/** Clicks Compute and returns the status line once computing ended. */
async function computeStatus(page) {
  await page.evaluate(() => { delete document.body.dataset.result; });
  await page.click('#compute');
  await page.waitForFunction(() => ['ready', 'error'].includes(document.body.dataset.result), null, { timeout: 120_000 });
  return { result: await page.evaluate(() => document.body.dataset.result), status: await page.textContent('#status') };
}

const BAD_PHOTOS = [
  {
    name: 'a file that is not an image',
    file: { name: 'notes.txt', bytes: Buffer.from('These are my holiday notes, not a photo.\n'), type: 'text/plain' },
    give: dropFiles,
    note: /notes\.txt cannot be used as a photo: image: unsupported format: the file starts with bytes \[54 68 65 73 65 20 61 72\], which is not PNG, JPEG, WebP, GIF or BMP/,
    compute: /Could not compute: subject 2 \("glasses"\): image: unsupported format/,
    shot: '09-error-not-an-image',
  },
  {
    name: 'a corrupt (truncated) PNG',
    file: { name: 'broken.png', bytes: truncatedPng(), type: 'image/png' },
    give: pasteFiles,
    note: /broken\.png cannot be used as a photo: image: corrupt PNG/,
    compute: /Could not compute: subject 2 \("glasses"\): image: corrupt PNG/,
    shot: '10-error-corrupt-png',
  },
  {
    name: 'a 12000×12000 image',
    file: { name: 'huge.png', bytes: blackPng(12000, 12000), type: 'image/png' },
    give: dropFiles,
    note: /huge\.png cannot be used as a photo: image: PNG image is 12000×12000, more than the 16384×16384 \/ 512 MiB decode limit/,
    compute: /Could not compute: subject 2 \("glasses"\): image: PNG image is 12000×12000/,
    shot: '11-error-huge-photo',
  },
];

for (const bad of BAD_PHOTOS) {
  test(`${bad.name} as a subject photo is named at once and on Compute, and cat_glasses computes afterwards`, async () => {
    const { page, errors } = await openApp(browser, base, '&backend=cpu');
    const slots = page.locator('.subject');
    await slots.nth(0).locator('.image').setInputFiles(path.join(IMAGES, 'chelsea.png'));
    // Paste goes to the slot with the focus; drop to the slot it lands on.
    await bad.give(page, bad.give === pasteFiles ? slots.nth(1).locator('.keyword') : slots.nth(1), [bad.file]);
    assert.deepEqual(await photoStates(page), ['ok', 'error']);
    const note = await slots.nth(1).locator('.note.img').textContent();
    assert.match(note, bad.note);
    assert.equal(await slots.nth(1).locator('.thumb').isVisible(), false);
    const { result, status } = await computeStatus(page);
    assert.equal(result, 'error');
    assert.match(status, bad.compute);
    await page.screenshot({ path: path.join(SCREENSHOTS, `${bad.shot}.png`), fullPage: true });
    await catGlassesWorks(page);
    assert.deepEqual(errors, []);
    await page.close();
  });
}

test('a 12000×12000 edge-control image is refused in the preview and on Compute, and cat_glasses computes afterwards', async () => {
  const { page, errors } = await openApp(browser, base, '&backend=cpu');
  await dropFiles(page, page.locator('#control-zone'), [{ name: 'huge-edges.png', bytes: blackPng(12000, 12000), type: 'image/png' }]);
  await page.waitForFunction(() => ['ok', 'error'].includes(document.getElementById('canny-preview').dataset.state), null, { timeout: 60_000 });
  assert.match(await page.textContent('#control-status'), /huge-edges\.png cannot be used as the edge-control image: image: PNG image is 12000×12000, more than the 16384×16384 \/ 512 MiB decode limit \(it would need 2747 MiB\)/);
  assert.equal(await page.isVisible('#canny-preview'), false);
  const { result, status } = await computeStatus(page);
  assert.equal(result, 'error');
  assert.match(status, /Could not compute: control image: image: PNG image is 12000×12000/);
  await page.screenshot({ path: path.join(SCREENSHOTS, '12-error-huge-control.png'), fullPage: true });
  // Removing it brings the page back to a good state.
  await page.click('#control-clear');
  assert.equal(await page.textContent('#control-status'), '');
  await catGlassesWorks(page);
  assert.deepEqual(errors, []);
  await page.close();
});

test('a keyword missing from the prompt warns before and after computing, and cat_glasses computes afterwards', async () => {
  const { page, errors } = await openApp(browser, base, '&backend=cpu');
  const slots = page.locator('.subject');
  await slots.nth(0).locator('.image').setInputFiles(path.join(IMAGES, 'chelsea.png'));
  await slots.nth(1).locator('.image').setInputFiles(path.join(IMAGES, 'coffee.png'));
  await page.fill('#prompt', 'a cat at a park');
  await page.waitForFunction(() => /glasses/.test(document.getElementById('keyword-warnings').textContent), null, { timeout: 30_000 });
  assert.match(await page.textContent('#keyword-warnings'), /Subject 2: keyword “glasses” is not in the prompt \(its photo will not be used\)/);
  const { result, status } = await computeStatus(page);
  assert.equal(result, 'ready');
  assert.match(status, /Done, with 1 warning/);
  assert.match(await page.textContent('#warnings'), /subject 2: couldn't find keyword "glasses" in the prompt; its photo is not used there/);
  await page.screenshot({ path: path.join(SCREENSHOTS, '13-warning-keyword-missing.png'), fullPage: true });
  await catGlassesWorks(page);
  assert.equal(await page.textContent('#warnings'), '');
  assert.deepEqual(errors, []);
  await page.close();
});

test('a photo without a keyword is refused before computing with words saying what to do', async () => {
  const { page, errors } = await openApp(browser, base, '&backend=cpu');
  const slots = page.locator('.subject');
  await slots.nth(0).locator('.keyword').fill('');
  await slots.nth(0).locator('.image').setInputFiles(path.join(IMAGES, 'chelsea.png'));
  await photoStates(page);
  await page.click('#compute');
  assert.match(await page.textContent('#status'), /Subject 1 has a photo but no keyword: type the word of the prompt it shows/);
  await catGlassesWorks(page);
  assert.deepEqual(errors, []);
  await page.close();
});

// ---- A corrupt safetensors header through the JS API (issue 12, defect 6) ----

/** `file` rewritten with its data offsets or header length doctored by `edit(tensors, header)`: returns the
 * new file's bytes. `edit` may return a length-prefix delta (default 0). */
function doctoredSafetensors(file, edit) {
  const buf = readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const tensors = JSON.parse(buf.subarray(8, 8 + n).toString());
  const delta = edit(tensors) ?? 0;
  const text = JSON.stringify(tensors);
  // Padded with spaces to a multiple of 8, as safetensors writers do (so a short length prefix still parses).
  const head = Buffer.from(text.padEnd(Math.ceil(text.length / 8) * 8 + 8, ' '));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(head.length + delta));
  return Buffer.concat([len, head, buf.subarray(8 + n)]);
}

test('a model whose safetensors header is corrupt fails to load with the file and tensor named; a good load on the same page then computes cat_glasses', async () => {
  const tiny = path.join(GOLDENS, 'model');
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'lambda-bad-header-'));
  const weights = 'text_encoder/model.safetensors';
  const copies = {
    // The length prefix one byte short: the JSON still parses, every tensor would be read one byte early.
    'length-short': () => -1,
    // The projection's range moved 4 bytes back over the tensor before it.
    overlapping: (t) => { t['text_projection.weight'].data_offsets = t['text_projection.weight'].data_offsets.map((o) => o - 4); },
  };
  for (const [name, edit] of Object.entries(copies)) {
    for (const folder of readdirSync(tiny)) {
      mkdirSync(path.join(tmp, name, folder), { recursive: true });
      for (const f of readdirSync(path.join(tiny, folder))) symlinkSync(path.join(tiny, folder, f), path.join(tmp, name, folder, f));
    }
    unlinkSync(path.join(tmp, name, weights));
    writeFileSync(path.join(tmp, name, weights), doctoredSafetensors(path.join(tiny, weights), edit));
  }
  writeFileSync(path.join(tmp, 'blank.html'), '<!doctype html><meta charset="utf-8"><title>JS API</title><link rel="icon" href="data:,">');
  const { process: server, base: mounted } = await startStaticServer({ args: ['--mount', `/tmp-models=${tmp}`] });
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${mounted}/tmp-models/blank.html`);
    const tryLoad = (model) => page.evaluate(async (m) => {
      const api = await import('/www/lib/lambda-eclipse.js');
      try {
        const engine = await api.load({ model: m, backend: 'cpu' });
        engine.dispose();
        return 'loaded';
      } catch (e) {
        return e.message;
      }
    }, model);
    const url = (name) => `${mounted}/tmp-models/${name}/${weights}`;
    const short = await tryLoad('/tmp-models/length-short/');
    assert.ok(short.includes(url('length-short')), short);
    assert.match(short, /corrupt safetensors: the tensors' data ends at byte \d+ \(the last, `text_projection\.weight`,\) but the file has \d+ data bytes/);
    const overlapping = await tryLoad('/tmp-models/overlapping/');
    assert.ok(overlapping.includes(url('overlapping')), overlapping);
    assert.match(overlapping, /tensor `text_projection\.weight`: data offsets \d+\.\.\d+ do not follow on from the previous tensor: they overlap tensor `text_model\.final_layer_norm\.weight`/);

    // The same page: the good model loads and computes the golden embedding.
    const noise = Array.from(golden('cat_glasses.safetensors', 'noise').data);
    const got = await page.evaluate(async ({ model, noise }) => {
      const api = await import('/www/lib/lambda-eclipse.js');
      const engine = await api.load({ model, backend: 'cpu' });
      const bytes = async (f) => new Uint8Array(await (await fetch(`/shared/assets/images/${f}`)).arrayBuffer());
      const r = await engine.prior({
        prompt: 'a cat wearing glasses at a park',
        subjects: [{ keyword: 'cat', image: await bytes('chelsea.png') }, { keyword: 'glasses', image: await bytes('coffee.png') }],
        noise: Float32Array.from(noise),
      });
      return Array.from(r.imageEmbeds);
    }, { model: TINY_MODEL, noise });
    const diff = maxDiff(got, golden('cat_glasses.safetensors', 'image_embeds').data);
    assert.ok(diff <= 1e-4, `after the corrupt headers, cat_glasses differs from the golden by ${diff}`);
    assert.deepEqual(errors, []);
    await page.close();
  } finally {
    server.kill();
    rmSync(tmp, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------------------------------------
// Decode bombs through the JS API (issue 12, defect 7): small files claiming huge images or metadata are
// refused from their header by inspectImage and as a subject photo, without the engine's wasm memory growing,
// and the same engine then computes cat_glasses.

/** The 982-byte 37×29 4:2:0 JPEG fixture with its SOF claiming width × height (its data runs out at once). */
function jpegClaiming(width, height) {
  const jpg = Buffer.from(readFileSync(path.join(ROOT, 'tests/fixtures/jpeg/baseline_420_q75.jpg')));
  const sof = jpg.indexOf(Buffer.from([0xff, 0xc0]));
  jpg.writeUInt16BE(height, sof + 5);
  jpg.writeUInt16BE(width, sof + 7);
  return jpg;
}

/** A 1×1 grey PNG whose iCCP colour profile inflates to `bytes` (64 MiB of zeros deflate to 64 KB). */
function profileBombPng(bytes) {
  const ihdr = Buffer.from([0, 0, 0, 1, 0, 0, 0, 1, 8, 0, 0, 0, 0]);
  const iccp = Buffer.concat([Buffer.from('bomb\0\0', 'latin1'), deflateSync(Buffer.alloc(bytes), { level: 9 })]);
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('iCCP', iccp),
    chunk('IDAT', deflateSync(Buffer.alloc(2))), chunk('IEND', Buffer.alloc(0))]);
}

/** A PNG header claiming 30000×30000 followed by a few bytes of image data. */
function headerBombPng() {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(30000, 0);
  ihdr.writeUInt32BE(30000, 4);
  ihdr[8] = 8;
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(Buffer.alloc(4096))), chunk('IEND', Buffer.alloc(0))]);
}

const BOMBS = [
  { name: '1 KB JPEG of 16384×8192 (134 Mpx)', bytes: jpegClaiming(16384, 8192), error: /JPEG image is 16384×8192, more than the 16384×16384 \/ 512 MiB decode limit \(it would need \d+ MiB\)/ },
  { name: '1 KB JPEG of 10000×9000 (90 Mpx)', bytes: jpegClaiming(10000, 9000), error: /JPEG image is 10000×9000, more than the 16384×16384 \/ 512 MiB decode limit/ },
  { name: '1×1 PNG whose colour profile inflates to 64 MiB', bytes: profileBombPng(64 << 20), error: /PNG colour profile \(iCCP chunk\) inflates to more than 1024 KiB, the metadata limit/ },
  { name: 'PNG header claiming 30000×30000', bytes: headerBombPng(), error: /PNG image is 30000×30000, more than the 16384×16384 \/ 512 MiB decode limit \(wider than 16384 px\)/ },
];

test('decode bombs are refused in words by inspectImage and as subject photos, the engine memory stays put, and the same engine computes cat_glasses', async () => {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${base}/tests/e2e/pages/blank.html`);
  const result = await page.evaluate(async ({ bombs, model, noise }) => {
    const api = await import('/www/lib/lambda-eclipse.js');
    const message = (p) => p.then(() => 'accepted', (e) => e.message);
    const inspected = [];
    for (const b of bombs) inspected.push(await message(api.inspectImage(new Uint8Array(b))));
    const engine = await api.load({ model, backend: 'cpu' });
    const photo = async (name) => new Uint8Array(await (await fetch(`/shared/assets/images/${name}`)).arrayBuffer());
    const [chelsea, coffee] = [await photo('chelsea.png'), await photo('coffee.png')];
    const before = await engine.memoryBytes();
    const asPhoto = [];
    for (const b of bombs) {
      asPhoto.push(await message(engine.prior({ prompt: 'a cat wearing glasses at a park', subjects: [{ keyword: 'cat', image: chelsea }, { keyword: 'glasses', image: new Uint8Array(b) }], noise: Float32Array.from(noise) })));
    }
    const after = await engine.memoryBytes();
    const good = await engine.prior({ prompt: 'a cat wearing glasses at a park', subjects: [{ keyword: 'cat', image: chelsea }, { keyword: 'glasses', image: coffee }], noise: Float32Array.from(noise) });
    const inspectGood = await api.inspectImage(chelsea);
    return { inspected, asPhoto, before, after, imageEmbeds: Array.from(good.imageEmbeds), inspectGood };
  }, { bombs: BOMBS.map((b) => Array.from(b.bytes)), model: TINY_MODEL, noise: Array.from(golden('cat_glasses.safetensors', 'noise').data) });
  BOMBS.forEach((b, i) => {
    assert.match(result.inspected[i], b.error, `inspectImage, ${b.name}`);
    assert.match(result.asPhoto[i], new RegExp(`subject 2 \\("glasses"\\): image: ${b.error.source}`), `as a subject photo, ${b.name}`);
  });
  // wasm memory never shrinks, so its size is the peak: a decode of any of these needs ≥ 64 MiB more.
  const grew = (result.after - result.before) / 2 ** 20;
  assert.ok(grew < 16, `the engine's wasm memory grew by ${grew.toFixed(1)} MiB while refusing the bombs`);
  assert.deepEqual(result.inspectGood, { width: 451, height: 300 });
  const diff = maxDiff(result.imageEmbeds, golden('cat_glasses.safetensors', 'image_embeds').data);
  assert.ok(diff <= 1e-4, `after the bombs, cat_glasses differs from the golden by ${diff}`);
  assert.deepEqual(errors, []);
  await page.close();
});
