// Helpers of the app end-to-end tests: golden tensors, files dropped or pasted into the page, downloads, and
// reading exported files with the reference Python readers (numpy, safetensors: server/requirements.txt).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { GOLDENS, IMAGES, OUTPUT, ROOT, TINY_MODEL } from './browser.mjs';

/** Tensor `name` of a golden file (in lambda-tiny unless `dir` says otherwise), parsed by hand: `{ shape, data }`
 * (F32 → Float32Array, U8 → Uint8Array, I64 → numbers). */
export function golden(file, name, dir = GOLDENS) {
  const buf = readFileSync(path.join(dir, file));
  const n = Number(buf.readBigUInt64LE(0));
  const entry = JSON.parse(buf.subarray(8, 8 + n).toString())[name];
  assert.ok(entry, `${file} has no ${name}`);
  const [b, e] = entry.data_offsets;
  const bytes = buf.subarray(8 + n + b, 8 + n + e);
  const ab = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length);
  const data = entry.dtype === 'F32' ? new Float32Array(ab) : entry.dtype === 'U8' ? new Uint8Array(ab) : Array.from(new BigInt64Array(ab), Number);
  return { shape: entry.shape, data };
}

export const maxDiff = (a, b) => {
  assert.equal(a.length, b.length, 'lengths differ');
  return a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
};

/** Opens the app on the tiny model and waits until it is ready (asserts it loaded). */
export async function openApp(browser, base, query = '') {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${base}/index.html?model=${TINY_MODEL}${query}`);
  await page.waitForFunction(() => document.body.dataset.ready, null, { timeout: 120_000 });
  assert.equal(await page.evaluate(() => document.body.dataset.ready), 'true', await page.textContent('#status'));
  return { page, errors };
}

/** A page-side DataTransfer holding files `{ name, bytes (Buffer), type }`. */
export function dataTransfer(page, files) {
  return page.evaluateHandle((list) => {
    const dt = new DataTransfer();
    for (const f of list) dt.items.add(new File([Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0))], f.name, { type: f.type }));
    return dt;
  }, files.map((f) => ({ name: f.name, type: f.type ?? 'image/png', b64: Buffer.from(f.bytes).toString('base64') })));
}

export const imageFile = (name) => ({ name, bytes: readFileSync(path.join(IMAGES, name)), type: name.endsWith('.jpg') ? 'image/jpeg' : 'image/png' });

/** Drops files on the element `locator` points to, as a drag & drop from the desktop does. */
export async function dropFiles(page, locator, files) {
  const dt = await dataTransfer(page, files);
  await locator.dispatchEvent('dragover', { dataTransfer: dt });
  await locator.dispatchEvent('drop', { dataTransfer: dt });
}

/** Pastes files (Ctrl+V of a copied image) with the focus on `locator`'s element. */
export async function pasteFiles(page, locator, files) {
  const dt = await dataTransfer(page, files);
  await locator.focus();
  await locator.evaluate((el, clipboardData) => {
    el.dispatchEvent(new ClipboardEvent('paste', { clipboardData, bubbles: true, cancelable: true, composed: true }));
  }, dt);
}

/**
 * The page's file choosers, subscribed to up front: `next(action)` runs `action` (a click or key press) and
 * resolves with the chooser it opened. Subscribing when the page is made turns Chromium's file-chooser
 * interception on before anything happens; `Promise.all([page.waitForEvent('filechooser'), press])` turns it on
 * in the same moment as the key press, and on a loaded machine the picker could open first and be missed (a CI
 * run timed out waiting that way). A picker that never opens fails with the focused element and the page's
 * console warnings (e.g. Chromium's "File chooser dialog can only be shown with a user activation").
 */
export function fileChoosers(page) {
  const opened = [];
  const waiting = [];
  const warnings = [];
  page.on('filechooser', (chooser) => (waiting.length ? waiting.shift()(chooser) : opened.push(chooser)));
  page.on('console', (m) => { if (m.type() === 'warning' || m.type() === 'error') warnings.push(m.text()); });
  return {
    async next(action, timeout = 30_000) {
      const chooser = opened.length ? Promise.resolve(opened.shift()) : new Promise((resolve) => waiting.push(resolve));
      await action();
      let timer;
      const late = new Promise((resolve) => { timer = setTimeout(resolve, timeout, null); });
      const got = await Promise.race([chooser, late]);
      clearTimeout(timer);
      if (got) return got;
      const focused = await page.evaluate(() => { const el = document.activeElement; return `${el.tagName.toLowerCase()}.${el.className} “${(el.getAttribute('aria-label') || el.textContent).trim().slice(0, 60)}”`; });
      assert.fail(`no file chooser opened within ${timeout} ms; focus on ${focused}; console: ${JSON.stringify(warnings)}`);
    },
  };
}

/** Waits until every subject photo has been checked; returns each slot's state ('ok' | 'error' | undefined). */
export async function photoStates(page) {
  await page.waitForFunction(() => ![...document.querySelectorAll('.subject')].some((s) => s.dataset.image === 'checking'), null, { timeout: 60_000 });
  return page.$$eval('.subject', (slots) => slots.map((s) => s.dataset.image));
}

/** Clicks a button that starts a download, saves the file under tests/output/downloads/; `{ name, bytes, file }`. */
export async function downloadOf(page, selector, prefix = 'download') {
  const [download] = await Promise.all([page.waitForEvent('download'), page.click(selector)]);
  const name = download.suggestedFilename();
  const file = path.join(OUTPUT, 'downloads', `${prefix}-${name}`);
  mkdirSync(path.dirname(file), { recursive: true });
  await download.saveAs(file);
  return { name, bytes: readFileSync(file), file };
}

/** Reads an exported file with numpy / safetensors in Python: `{ tensor: { shape, values } }` (npy: key "array"). */
export function readWithPython(file) {
  const script = `
import json, sys, numpy as np
p = sys.argv[1]
if p.endswith('.npy'):
    a = np.load(p, allow_pickle=False)
    out = {'array': {'shape': list(a.shape), 'dtype': str(a.dtype), 'values': a.ravel().tolist()}}
else:
    from safetensors.numpy import load_file
    from safetensors import safe_open
    out = {k: {'shape': list(v.shape), 'dtype': str(v.dtype), 'values': v.ravel().tolist()} for k, v in load_file(p).items()}
    with safe_open(p, 'np') as f:
        out['__metadata__'] = f.metadata()
print(json.dumps(out))
`;
  const r = spawnSync('python3', ['-c', script, file], { encoding: 'utf8', maxBuffer: 64 << 20 });
  assert.equal(r.status, 0, `python could not read ${file}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** Opens a panel of the studio (a <details>: 'setup', 'control-panel', 'settings-panel', 'interpolation-panel',
 * 'details') as a click on its summary does; an open one stays open. */
export async function openPanel(page, id) {
  const panel = page.locator(`#${id}`);
  if (!(await panel.evaluate((d) => d.open))) await panel.locator(':scope > summary').click();
}

/** The `lambda-eclipse` CLI the native tests built (CI runs them first), else `cargo run`: `[bin, args]`. */
export function cli() {
  for (const profile of ['debug', 'release']) {
    const bin = path.join(ROOT, 'target', profile, 'lambda-eclipse');
    if (existsSync(bin)) return [bin, []];
  }
  return ['cargo', ['run', '--quiet', '--bin', 'lambda-eclipse', '--']];
}

/**
 * A model that lists its quantized copies, as README's hub layout has it: the tiny golden model copied into
 * tests/output/`name`/, quantized there to q8_0 and q4_m by `lambda-eclipse quantize --list` (the copies in
 * `q8_0/`, `q4_m/`, `variants.json` at the root). Returns `{ dir, listing }` (listing: variants.json's
 * `variants`).
 */
export function makeVariantsSite(name = 'variants-site') {
  const dir = path.join(OUTPUT, name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  cpSync(path.join(GOLDENS, 'model'), dir, { recursive: true });
  const [bin, pre] = cli();
  for (const type of ['q8_0', 'q4_m']) {
    const run = spawnSync(bin, [...pre, 'quantize', '--model', dir, '--out', path.join(dir, type), '--type', type, '--list'], { cwd: ROOT, encoding: 'utf8' });
    assert.equal(run.status, 0, `quantize ${type} failed: ${run.stderr}`);
  }
  return { dir, listing: JSON.parse(readFileSync(path.join(dir, 'variants.json'), 'utf8')).variants };
}
