// End-to-end: the JS API golden page (tests/e2e/pages/api-goldens.html) reproduces every case of
// lambda-tiny/manifest.json through www/lib/lambda-eclipse.js — ids exactly, embeddings within 1e-3 on WebGPU and
// 1e-4 on the CPU, edges exactly — and it does fail when one golden value is off.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { GOLDENS, SCREENSHOTS, openSite } from './browser.mjs';

const manifest = JSON.parse(readFileSync(path.join(GOLDENS, 'manifest.json'), 'utf8'));
let site, browser, base;

before(async () => ({ browser, base } = site = await openSite()));
after(() => site?.close());

async function runPage(query, screenshot) {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${base}/tests/e2e/pages/api-goldens.html?${query}`);
  await page.waitForFunction(() => window.__goldenReport?.done, null, { timeout: 300_000 });
  const report = await page.evaluate(() => window.__goldenReport);
  if (screenshot) await page.screenshot({ path: path.join(SCREENSHOTS, screenshot), fullPage: true });
  await page.close();
  assert.deepEqual(errors, []);
  assert.equal(report.error, undefined, report.error);
  return report;
}

/** The checks every case must have: ids, text, each subject, the pipeline outputs, edges for the canny case. */
function requiredChecks(c) {
  const names = ['input_ids', 'attention_mask', 'text_embeds', 'last_hidden_state', 'noise (passed through)',
    'encoder_hidden_states', 'control_embeds', 'negative_image_embeds', 'image_embeds'];
  c.subjects.forEach((s, j) => names.push(`subject${j}_image_embeds (${s.keyword})`));
  if (c.canny) names.push('canny_edges (pipeline)', 'canny_edges (cannyPreview)');
  return names;
}

for (const [backend, tol] of [['webgpu', 1e-3], ['cpu', 1e-4]]) {
  test(`every lambda-tiny golden case is reproduced through the JS API on ${backend}`, async () => {
    const report = await runPage(`backend=${backend}`, `api-goldens-${backend}.png`);
    assert.equal(report.backend, backend);
    assert.equal(report.tolerance, tol);
    assert.deepEqual(report.cases, manifest.cases.map((c) => c.name));
    for (const c of manifest.cases) {
      for (const what of requiredChecks(c)) {
        const check = report.checks.find((k) => k.case === c.name && k.what === what);
        assert.ok(check, `${c.name}: no ${what} check`);
        assert.ok(check.pass, `${c.name}/${what}: max |diff| ${check.diff} over ${check.tol} ${check.detail}`);
      }
      assert.ok(report.checks.some((k) => k.case === c.name && k.what.startsWith('keyword warnings') && k.pass), `${c.name}: keyword warnings`);
    }
    const exact = report.checks.filter((k) => k.tol === 0);
    assert.ok(exact.every((k) => k.diff === 0), 'exact checks are exact');
    assert.equal(report.failed, 0, JSON.stringify(report.checks.filter((k) => !k.pass)));
  });
}

test('the golden page reports a failure when one golden value is off (0.01 in an embedding, 1 in an id)', async () => {
  for (const [corrupt, what] of [['cat_glasses:image_embeds', 'image_embeds'], ['no_subject:input_ids', 'input_ids'], ['horse_rgba_canny:canny_edges', 'canny_edges (pipeline)']]) {
    const report = await runPage(`backend=cpu&corrupt=${corrupt}`);
    const failed = report.checks.filter((k) => !k.pass);
    assert.ok(failed.length >= 1, `${corrupt}: nothing failed`);
    assert.ok(failed.some((k) => `${k.case}:${k.what}` === `${corrupt.split(':')[0]}:${what}`), `${corrupt}: ${JSON.stringify(failed)}`);
    assert.ok(failed.every((k) => k.case === corrupt.split(':')[0]), `${corrupt}: other cases failed too: ${JSON.stringify(failed)}`);
    assert.equal(report.failed, failed.length);
  }
});
