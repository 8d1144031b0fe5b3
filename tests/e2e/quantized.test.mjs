// End-to-end: a quantized model folder (`lambda-eclipse quantize --type q8_0` of the tiny golden model, made by
// the CLI before the tests) loads in the browser through the same JS API as the original, on the CPU (wasm,
// candle's quantized matmul with simd128) and on WebGPU (the GEMM reading the blocks): its weights are under a
// third of the original's bytes, and every golden case's text, subject and prior embeddings point where the
// f32 goldens do (cosine ≥ 0.999, the acceptance for 8 bits; tests/quantized.rs holds the native
// backends to the same bound).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { CHROMIUM, GOLDENS, OUTPUT, ROOT, chromium, startStaticServer } from './browser.mjs';
import { golden } from './helpers.mjs';

const manifest = JSON.parse(readFileSync(path.join(GOLDENS, 'manifest.json'), 'utf8'));
const QUANTIZED = path.join(OUTPUT, 'lambda-tiny-q8_0');
let server, browser, base;

/** The CLI the native tests built (CI runs them first), else built here. */
function cli() {
  for (const profile of ['debug', 'release']) {
    const bin = path.join(ROOT, 'target', profile, 'lambda-eclipse');
    if (existsSync(bin)) return [bin, []];
  }
  return ['cargo', ['run', '--quiet', '--bin', 'lambda-eclipse', '--']];
}

before(async () => {
  rmSync(QUANTIZED, { recursive: true, force: true });
  mkdirSync(OUTPUT, { recursive: true });
  const [bin, pre] = cli();
  const run = spawnSync(bin, [...pre, 'quantize', '--model', path.join(GOLDENS, 'model'), '--out', QUANTIZED, '--type', 'q8_0'], { cwd: ROOT, encoding: 'utf8' });
  assert.equal(run.status, 0, `quantize failed: ${run.stderr}`);
  ({ process: server, base } = await startStaticServer({ args: ['--mount', `/q8/=${QUANTIZED}`] }));
  browser = await chromium.launch(CHROMIUM);
});
after(async () => {
  await browser?.close();
  server?.kill();
});

const cosine = (a, b) => {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  return dot / Math.sqrt(na * nb);
};

for (const backend of ['cpu', 'webgpu']) {
  test(`the q8_0 folder loads on ${backend} with a third of the weight bytes and reproduces every golden case at cosine ≥ 0.999`, async () => {
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${base}/index.html?autoload=0`);
    const cases = manifest.cases.map((c) => ({
      name: c.name,
      prompt: c.prompt,
      subjects: c.subjects.map((s) => ({ keyword: s.keyword, image: `/shared/assets/images/${s.image}` })),
      control: c.canny ? `/shared/assets/images/${c.canny}` : null,
      noise: Array.from(golden(c.tensors, 'noise').data),
    }));
    const out = await page.evaluate(async ({ backend, cases }) => {
      const { load } = await import('/www/lib/lambda-eclipse.js');
      const bytes = async (url) => new Uint8Array(await (await fetch(url)).arrayBuffer());
      const results = {};
      for (const [label, model] of [['original', '/shared/goldens/lambda-tiny/model/'], ['q8_0', '/q8/']]) {
        const engine = await load({ model, backend, cache: false });
        const info = { ...engine.loadInfo, backend: engine.backend, cases: [] };
        if (label === 'q8_0') {
          for (const c of cases) {
            const text = await engine.embedText(c.prompt);
            const photos = await Promise.all(c.subjects.map((s) => bytes(s.image)));
            const subjects = photos.length ? (await engine.embedImages(photos)).imageEmbeds.map((e) => Array.from(e)) : [];
            const prior = await engine.prior({
              prompt: c.prompt,
              subjects: c.subjects.map((s, i) => ({ keyword: s.keyword, image: photos[i] })),
              control: c.control ? await bytes(c.control) : undefined,
              noise: new Float32Array(c.noise),
            });
            info.cases.push({ lastHiddenState: Array.from(text.lastHiddenState), subjects, imageEmbeds: Array.from(prior.imageEmbeds) });
          }
        }
        engine.dispose();
        results[label] = info;
      }
      return results;
    }, { backend, cases });
    await page.close();
    assert.deepEqual(errors, []);
    assert.equal(out.q8_0.backend, backend);
    const ratio = out.original.weightBytes / out.q8_0.weightBytes;
    console.log(`# ${backend}: the q8_0 folder's weights are ${out.q8_0.weightBytes} bytes, the original's ${out.original.weightBytes} (${ratio.toFixed(2)}× less); `
      + `downloaded with configs and tokenizer: ${out.q8_0.downloadedBytes} vs ${out.original.downloadedBytes} bytes`);
    // The tiny model's weights are mostly f32 matrices (its text tower's 49,408-row token table): 128 bytes per
    // 32 values become 34, diluted by the vectors kept in f32 and the odd-width matrices of its vision tower.
    assert.ok(ratio > 3, `the weights are only ${ratio.toFixed(2)}× smaller`);
    let lowest = 1;
    manifest.cases.forEach((c, i) => {
      const got = out.q8_0.cases[i];
      const checks = [
        ['last_hidden_state', got.lastHiddenState],
        ...c.subjects.map((_, j) => [`subject${j}_image_embeds`, got.subjects[j]]),
        ['image_embeds', got.imageEmbeds],
      ];
      for (const [name, values] of checks) {
        const cos = cosine(values, golden(c.tensors, name).data);
        lowest = Math.min(lowest, cos);
        assert.ok(cos >= 0.999, `${backend} ${c.name} ${name}: cosine ${cos} < 0.999`);
      }
    });
    console.log(`# ${backend}: lowest cosine of a q8_0 embedding vs the f32 goldens: ${lowest.toFixed(6)}`);
  });
}
