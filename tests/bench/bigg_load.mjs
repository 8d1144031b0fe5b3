// Measures loading a bigG-sized model in headless Chromium (not part of CI): the wasm memory of the engine
// (`memory.buffer.byteLength` of its instance, which only grows: its peak) once every weight is on the device
// and when the load completes, the times, and the resident memory of the browser's processes, next to the
// same numbers for the tiny golden model. (The load's last step runs the vision tower once, for the
// empty-image embedding: tens of minutes on a software adapter; --weights-only stops before it. After a
// complete load one text-tower forward is timed, twice.) A quantized folder (`lambda-eclipse quantize`) loads
// the same way: `node ../bench/bigg_load.mjs /tmp/bigg-q8_0 --backend cpu`.
//
//   python3 tests/bench/make_random_bigg.py --out /tmp/bigg --text-dtype f16   # ≈ 5.2 GB: check df -h first
//   cd tests/e2e && node ../bench/bigg_load.mjs /tmp/bigg [--backend webgpu|cpu] [--weights-only]
//        [--cache] [--max-minutes 60]
//   rm -rf /tmp/bigg
//
// Without --cache the weights are not written to the browser cache (the measurement is about the engine).
// With --cache the browser runs on a profile on disk (a fresh browser context is in memory, with a small
// quota): the first browser loads and caches the model (another copy of it on disk), a second browser on
// the same profile loads it again from the cache, then the profile is deleted.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CHROMIUM, chromium, startStaticServer } from '../e2e/browser.mjs';

const args = process.argv.slice(2);
const dir = args.find((a, i) => !a.startsWith('--') && !['--backend', '--max-minutes'].includes(args[i - 1]));
if (!dir) {
  console.error('usage: node ../bench/bigg_load.mjs MODEL_DIR [--backend webgpu|cpu] [--weights-only] [--cache] [--max-minutes N]');
  process.exit(2);
}
const option = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const backend = option('--backend', 'webgpu');
const maxMinutes = Number(option('--max-minutes', '60'));
const cache = args.includes('--cache');
const weightsOnly = args.includes('--weights-only');
const MB = (n) => `${(n / 1e6).toFixed(1)} MB`;

/** Resident memory of the browser's processes by kind (Linux `ps`): { renderer, 'gpu-process', … } in bytes. */
function processMemory(rootPid) {
  const rows = execFileSync('ps', ['-eo', 'pid=,ppid=,rss=,args='], { encoding: 'utf8' }).trim().split('\n')
    .map((l) => l.trim().match(/^(\d+)\s+(\d+)\s+(\d+)\s+(.*)$/)).filter(Boolean)
    .map(([, pid, ppid, rss, a]) => ({ pid: +pid, ppid: +ppid, rss: +rss * 1024, args: a }));
  const mine = new Set([rootPid]);
  for (let grew = true; grew;) {
    grew = false;
    for (const r of rows) if (mine.has(r.ppid) && !mine.has(r.pid)) { mine.add(r.pid); grew = true; }
  }
  const out = {};
  for (const r of rows.filter((x) => mine.has(x.pid) && x.pid !== rootPid && /chrom/.test(x.args))) {
    const kind = r.args.match(/--type=([\w-]+)/)?.[1] ?? 'browser';
    out[kind] = (out[kind] ?? 0) + r.rss;
  }
  return out;
}
const showMemory = (m) => Object.entries(m).map(([k, v]) => `${k} ${MB(v)}`).join(', ');

/** Starts a load in the page; `window.__run` records when the weights were all on the device (the
 * 'finishing' phase: the engine then computes its empty-image embedding) and when the load resolved. */
const start = (page, model) => page.evaluate(({ model, backend, cache }) => {
  const run = { weights: null, done: null, error: null, last: null };
  window.__run = run;
  const t0 = performance.now();
  import('/www/lib/lambda-eclipse.js').then(({ load }) => load({
    model, backend, cache,
    onProgress: (p) => {
      run.last = p;
      if (p.phase === 'finishing' && !run.weights) {
        run.weights = { seconds: (performance.now() - t0) / 1000, memoryBytes: p.memoryBytes, bytes: p.total, downloaded: p.downloaded, fromCache: p.fromCache, cacheWarning: p.cacheWarning };
      }
    },
  })).then(async (engine) => {
    const done = { seconds: (performance.now() - t0) / 1000, ...engine.loadInfo, backend: engine.backend, memoryNow: await engine.memoryBytes() };
    // One text-tower forward (77 tokens), timed twice: the first may still be warming up.
    done.textMs = [];
    for (let i = 0; i < 2; i++) {
      const t = performance.now();
      await engine.embedText('a photo of a cat sitting on a wooden table');
      done.textMs.push(performance.now() - t);
    }
    done.memoryAfterText = await engine.memoryBytes();
    run.done = done;
    engine.dispose();
  }).catch((e) => { run.error = `${e.name}: ${e.message ?? e}`; });
}, { model, backend, cache });

async function poll(page, what, minutes, every = 15) {
  const until = Date.now() + minutes * 60_000;
  let lastLog = Date.now();
  for (;;) {
    const run = await page.evaluate(() => window.__run);
    if (what(run)) return run;
    if (run.error) throw new Error(run.error);
    if (Date.now() > until) return run;
    if (Date.now() - lastLog > every * 1000 && run.last) {
      const p = run.last;
      console.log(`  … ${p.phase}: ${MB(p.done)} of ${MB(p.total)}, ${p.bytesPerSecond ? MB(p.bytesPerSecond) : '?'}/s, wasm ${MB(p.memoryBytes)}, ${p.elapsedSeconds.toFixed(0)} s`);
      lastLog = Date.now();
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** One bigG load: the numbers once the weights are on the device, then (unless --weights-only) when the
 * load completes. */
async function bigLoad(page, label) {
  await start(page, '/bigg/');
  const run = await poll(page, (r) => r.done || r.weights, maxMinutes);
  if (!run.weights) throw new Error(`the weights were not all on the device after ${maxMinutes} min`);
  const w = run.weights;
  w.processes = processMemory(process.pid);
  console.log(`${label}: ${MB(w.bytes)} of weights onto ${backend} in ${w.seconds.toFixed(1)} s (${MB(w.bytes / w.seconds)}/s; `
    + `${MB(w.downloaded)} downloaded, ${MB(w.fromCache)} from the browser cache${w.cacheWarning ? `; ${w.cacheWarning}` : ''}); `
    + `wasm memory then ${MB(w.memoryBytes)} (${(100 * w.memoryBytes / w.bytes).toFixed(1)} % of the weights); `
    + `resident memory of the browser's processes: ${showMemory(w.processes)}`);
  if (weightsOnly) return { weights: w };
  const finished = await poll(page, (r) => r.done, maxMinutes);
  if (finished.done) {
    const d = finished.done;
    console.log(`  load complete (with the engine's empty-image embedding through the vision tower) in ${d.seconds.toFixed(1)} s; `
      + `wasm memory ${MB(d.memoryBytes)}; one text-tower forward ${d.textMs.map((ms) => `${(ms / 1000).toFixed(2)} s`).join(', then ')} `
      + `(wasm memory after it ${MB(d.memoryAfterText)})`);
  } else {
    console.log(`  the load had not completed after ${maxMinutes} min more: the empty-image embedding through the bigG vision tower is slow on this adapter`);
  }
  return { weights: w, done: finished.done };
}

/** A browser (on `profile` when given) with one page of the app, not loading anything by itself. The
 * browser is closed after `fn(page)`: with it goes any GPU work still queued. */
async function withBrowser(base, profile, fn) {
  const context = profile ? await chromium.launchPersistentContext(profile, CHROMIUM) : await (await chromium.launch(CHROMIUM)).newContext();
  try {
    const page = await context.newPage();
    page.on('console', (m) => { if (m.type() === 'error' && !/404/.test(m.text())) console.error(`[page] ${m.text()}`); });
    await page.goto(`${base}/index.html?autoload=0`);
    return await fn(page);
  } finally {
    await (context.browser() ?? context).close();
  }
}

const { process: server, base } = await startStaticServer({ args: ['--mount', `/bigg=${path.resolve(dir)}`] });
const profile = cache ? mkdtempSync(path.join(os.tmpdir(), 'lambda-bigg-profile-')) : null;
try {
  const results = { cache, backend };
  await withBrowser(base, profile, async (page) => {
    await start(page, '/shared/goldens/lambda-tiny/model/');
    results.tiny = (await poll(page, (r) => r.done, 5)).done;
    console.log(`tiny model: ${MB(results.tiny.weightBytes)} of weights on ${results.tiny.backend} in ${results.tiny.seconds.toFixed(1)} s; wasm memory ${MB(results.tiny.memoryBytes)}`);
    results.bigG = await bigLoad(page, 'bigG model');
    if (cache) {
      results.cacheUsage = await page.evaluate(async () => (await import('/www/lib/lambda-eclipse.js')).cacheUsage('/bigg/'));
      console.log(`browser cache now holds ${MB(results.cacheUsage.bytes)} of the model in ${results.cacheUsage.entries} entries`);
    }
  });
  if (cache) {
    await withBrowser(base, profile, async (page) => {
      results.bigGFromCache = await bigLoad(page, 'bigG model in a new browser on the same profile (from the cache)');
    });
  }
  console.log(JSON.stringify(results, null, 2));
} finally {
  server.kill();
  if (profile) rmSync(profile, { recursive: true, force: true });
}
