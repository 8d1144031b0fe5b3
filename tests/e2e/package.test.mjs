// The npm package (package.json at the repository root): `npm pack`, installed from the tarball into a fresh
// page (tests/e2e/package/: index.html, main.js, usage.ts) as a web developer would, then
//  - what the tarball holds: the JS API, the widget, their typings and the wasm package, nothing else;
//  - tsc --noEmit of a usage file of every documented API against the installed typings (with lines that
//    must be type errors), and the typings' value exports equal to what the modules really export;
//  - the page built by Vite (offline) runs the cat_glasses golden case through
//    `import { load } from 'lambda-eclipse'` in Chromium: the workers and the wasm come from the build.
// Needs pkg/ (bash .ci/build-wasm.sh).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { GOLDENS, ROOT, SCREENSHOTS, launchChromium, startStaticServer } from './browser.mjs';
import { golden, maxDiff } from './helpers.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const FIXTURE = path.join(HERE, 'package');
const ENTRY_POINTS = ['lambda-eclipse', 'lambda-eclipse/tensor-files', 'lambda-eclipse/widget'];

let tmp, app, packed, server, browser;

function run(cmd, args, cwd) {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', maxBuffer: 64 << 20 });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} in ${cwd} failed:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

before(async () => {
  tmp = mkdtempSync(path.join(os.tmpdir(), 'lambda-package-'));
  [packed] = JSON.parse(run('npm', ['pack', '--json', '--pack-destination', tmp], ROOT));
  app = path.join(tmp, 'fresh-page');
  mkdirSync(app);
  for (const f of readdirSync(FIXTURE)) copyFileSync(path.join(FIXTURE, f), path.join(app, f));
  writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'fresh-page', private: true, type: 'module' }));
  // A real install of the tarball (no registry needed: the package has no dependencies).
  run('npm', ['install', '--offline', '--no-audit', '--no-fund', path.join(tmp, packed.filename)], app);
});

after(async () => {
  await browser?.close();
  server?.process.kill();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

test('npm pack ships the JS API, the widget, their typings and the wasm package, and nothing of the app, the Rust crate or the tests', () => {
  const files = packed.files.map((f) => f.path).sort();
  for (const f of ['package.json', 'README.md', 'www/lib/lambda-eclipse.js', 'www/lib/lambda-eclipse.d.ts', 'www/lib/worker.js',
    'www/lib/tools-worker.js', 'www/lib/model-reader.js', 'www/lib/weight-cache.js', 'www/lib/tensor-files.js', 'www/lib/tensor-files.d.ts',
    'www/ui/subjects.js', 'www/ui/local-decoder.js', 'www/ui/tokens.css', 'www/widget/lambda-eclipse-widget.js', 'www/widget/lambda-eclipse-widget.d.ts',
    'pkg/lambda_eclipse.js', 'pkg/lambda_eclipse_bg.wasm']) assert.ok(files.includes(f), `${f} is missing from ${packed.filename}: ${files.join(', ')}`);
  const stray = files.filter((f) => !/^(package\.json|README\.md|www\/(lib|ui|widget)\/[\w.-]+\.(js|d\.ts)|www\/ui\/[\w.-]+\.css|pkg\/(lambda_eclipse\.js|lambda_eclipse_bg\.wasm|snippets\/.+\.js))$/.test(f));
  assert.deepEqual(stray, [], 'files that are not part of the package');
  // Every file the package's modules import is in the package.
  const manifest = JSON.parse(readFileSync(path.join(app, 'node_modules/lambda-eclipse/package.json'), 'utf8'));
  assert.equal(manifest.name, 'lambda-eclipse');
  // The exports map names files of the package (Node resolves it as bundlers do, "default" condition).
  const req = createRequire(path.join(app, 'package.json'));
  for (const spec of ENTRY_POINTS) {
    const file = path.relative(path.join(app, 'node_modules/lambda-eclipse'), req.resolve(spec)).split(path.sep).join('/');
    assert.ok(files.includes(file), `${spec} resolves to ${file}, not in the package`);
  }
  for (const f of files.filter((f) => f.endsWith('.js'))) {
    const source = readFileSync(path.join(app, 'node_modules/lambda-eclipse', f), 'utf8').replace(/\/\*[\s\S]*?\*\/|^\s*\/\/.*$/gm, '');
    for (const m of source.matchAll(/(?:from|import)\s*['"](\.{1,2}\/[^'"]+)['"]|new URL\(\s*['"]([^'":]+)['"]\s*,\s*import\.meta\.url\s*\)/g)) {
      const rel = m[1] ?? m[2];
      const target = path.posix.normalize(path.posix.join(path.posix.dirname(f), rel));
      assert.ok(files.includes(target), `${f} imports ${rel}, which the package lacks`);
    }
  }
});

/** The TypeScript program of the fresh page's usage.ts and tsconfig.json, against the installed package. */
function usageProgram() {
  const configPath = path.join(app, 'tsconfig.json');
  const { config } = ts.readConfigFile(configPath, ts.sys.readFile);
  const parsed = ts.parseJsonConfigFileContent(config, ts.sys, app);
  return { program: ts.createProgram(parsed.fileNames, parsed.options), options: parsed.options };
}

test('the typings check: tsc --noEmit of a usage file of every documented API against the installed package', () => {
  const tsc = path.join(HERE, 'node_modules/typescript/bin/tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', path.join(app, 'tsconfig.json')], { cwd: app, encoding: 'utf8' });
  assert.equal(r.status, 0, `tsc --noEmit found errors:\n${r.stdout}${r.stderr}`);
  // The check is not vacuous: the usage file resolves the package's own .d.ts files (not `any`).
  const { program } = usageProgram();
  const typings = program.getSourceFiles().map((s) => s.fileName).filter((f) => f.includes('node_modules/lambda-eclipse/')).map((f) => f.split('node_modules/lambda-eclipse/')[1]).sort();
  assert.deepEqual(typings, ['www/lib/lambda-eclipse.d.ts', 'www/lib/tensor-files.d.ts', 'www/widget/lambda-eclipse-widget.d.ts']);
});

/** The value exports (functions, classes, constants) each entry point's typings declare. */
function declaredValueExports() {
  const { program, options } = usageProgram();
  const checker = program.getTypeChecker();
  const usage = path.join(app, 'usage.ts');
  return Object.fromEntries(ENTRY_POINTS.map((spec) => {
    const resolved = ts.resolveModuleName(spec, usage, options, ts.sys).resolvedModule;
    assert.ok(resolved, `${spec} does not resolve to typings`);
    const symbol = checker.getSymbolAtLocation(program.getSourceFile(resolved.resolvedFileName));
    const names = checker.getExportsOfModule(symbol).filter((s) => s.flags & ts.SymbolFlags.Value).map((s) => s.name).sort();
    return [spec.replace('lambda-eclipse', '.'), names];
  }));
}

test('a fresh page built by Vite from the installed tarball runs cat_glasses through import { load } from "lambda-eclipse" and gets the golden embedding', async () => {
  const { build } = await import('vite');
  const dist = path.join(tmp, 'dist');
  // Offline: everything comes from the fresh page's node_modules. `base: './'` lets any folder serve the build.
  await build({ root: app, configFile: false, logLevel: 'warn', base: './', build: { outDir: dist, emptyOutDir: true } });
  const built = readdirSync(path.join(dist, 'assets'));
  assert.ok(built.some((f) => f.endsWith('.wasm')), `the build has the wasm: ${built.join(', ')}`);

  mkdirSync(SCREENSHOTS, { recursive: true });
  server = await startStaticServer({ args: ['--mount', `/fresh-page=${dist}`] });
  browser = await launchChromium();
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await fetch(`${server.base}/__stats/reset`, { method: 'POST' });
  await page.goto(`${server.base}/fresh-page/index.html`);
  await page.waitForFunction(() => document.body.dataset.ready, null, { timeout: 30_000 });

  // The typings declare exactly what the built modules export.
  const runtime = await page.evaluate(() => window.lambda.exports);
  assert.deepEqual(runtime, declaredValueExports());
  assert.equal(await page.evaluate(() => window.lambda.widgetDefined), true, '<lambda-eclipse-widget> is defined by importing lambda-eclipse/widget');

  const c = JSON.parse(readFileSync(path.join(GOLDENS, 'manifest.json'), 'utf8')).cases.find((k) => k.name === 'cat_glasses');
  const result = await page.evaluate(async ({ c, noise }) => {
    const bytes = async (url) => new Uint8Array(await (await fetch(url)).arrayBuffer());
    const engine = await window.lambda.load({ model: '/shared/goldens/lambda-tiny/model/', backend: 'cpu' });
    const subjects = await Promise.all(c.subjects.map(async (s) => ({ keyword: s.keyword, image: await bytes(`/shared/assets/images/${s.image}`) })));
    const r = await engine.prior({ prompt: c.prompt, subjects, noise: new Float32Array(noise) });
    const { backend } = await engine.describe();
    engine.dispose();
    return { backend, warnings: r.warnings, imageEmbeds: Array.from(r.imageEmbeds) };
  }, { c, noise: Array.from(golden('cat_glasses.safetensors', 'noise').data) });
  await page.screenshot({ path: path.join(SCREENSHOTS, 'npm-package-page.png') });
  assert.equal(result.backend, 'cpu');
  assert.deepEqual(result.warnings, []);
  // 1e-4 on the CPU, as api-goldens.test.mjs.
  const diff = maxDiff(result.imageEmbeds, golden('cat_glasses.safetensors', 'image_embeds').data);
  assert.ok(diff <= 1e-4, `cat_glasses image_embeds differ from the golden by ${diff}`);

  // The page, its workers and the wasm all came from the build, none from the repository's www/ or pkg/.
  const stats = await (await fetch(`${server.base}/__stats`)).json();
  const paths = Object.keys(stats);
  assert.deepEqual(paths.filter((p) => p.startsWith('/www/') || p.startsWith('/pkg/')), []);
  assert.ok(paths.some((p) => /^\/fresh-page\/assets\/.+\.wasm$/.test(p)), `wasm from the build: ${paths.join(', ')}`);
  assert.ok(paths.filter((p) => /^\/fresh-page\/assets\/.+\.js$/.test(p)).length >= 2, `the page and worker chunks: ${paths.join(', ')}`);
  assert.deepEqual(errors, []);
  await page.close();
});
