// The wasm CPU backend's speed in headless Chromium (not part of CI): www/app/bench.html on the CPU only, for
// each weight type given, in one browser, one after the other — random weights of the real configs, median of
// --iters after a warm-up. Build pkg/ first (.ci/build-wasm.sh); compare two builds by running this after each.
//
//   cd tests/e2e && node ../bench/wasm_cpu.mjs [--only matmul,text] [--dtypes f32,q8_0,q4_0] [--iters 3]
import { CHROMIUM, chromium, startStaticServer } from '../e2e/browser.mjs';

const args = process.argv.slice(2);
const option = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const only = option('--only', 'matmul,text');
const dtypes = option('--dtypes', 'f32,q8_0').split(',');
const iters = Number(option('--iters', '3'));

const { process: server, base } = await startStaticServer();
const browser = await chromium.launch(CHROMIUM);
try {
  const rows = {};
  for (const dtype of dtypes) {
    const page = await browser.newPage();
    page.on('console', (m) => { if (m.type() === 'error') console.error(`[page] ${m.text()}`); });
    await page.goto(`${base}/www/app/bench.html?only=${only}&dtype=${dtype}&iters=${iters}&backends=cpu`);
    await page.waitForFunction(() => document.body.dataset.done === 'true', null, { timeout: 3_600_000, polling: 1000 });
    for (const r of await page.evaluate(() => window.__benchResults)) (rows[r.label] ??= { unit: r.unit })[dtype] = r.cpu;
    await page.close();
  }
  console.log(`wasm CPU (1 thread); median of ${iters}`);
  console.log(['benchmark', ...dtypes].map((c, i) => (i ? c.padStart(14) : c.padEnd(34))).join(''));
  for (const [label, r] of Object.entries(rows)) {
    const cell = (v) => (typeof v === 'number' ? `${v.toFixed(1)} ${r.unit}` : String(v).slice(0, 13));
    console.log([label.padEnd(34), ...dtypes.map((d) => cell(r[d]).padStart(14))].join(''));
  }
} finally {
  await browser.close();
  server.kill();
}
