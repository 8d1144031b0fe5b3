// The dev static server (.ci/static_server.py, also `bash .ci/serve.sh`) serves only what the app needs: the
// page, www/, pkg/, the test pages, the goldens and photos of ../shared/ and mounted model folders — never a
// dotfile (.git/), a directory listing or another repository file; paths are URL-decoded before they are
// checked; CORS headers only with --cors; the test hooks (/__stats, /__throttle) only with --test-hooks, and a
// bad hook parameter is a 400, not a dropped connection. No browser needed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { ROOT, startStaticServer } from './browser.mjs';

let plain, hooks, cors, tmp;

before(async () => {
  tmp = mkdtempSync(path.join(os.tmpdir(), 'lambda-static-'));
  mkdirSync(path.join(tmp, 'model', '.cache'), { recursive: true });
  writeFileSync(path.join(tmp, 'model', 'config file.json'), '{"spaces": true}');
  writeFileSync(path.join(tmp, 'model', 'é.json'), '{"utf8": true}');
  writeFileSync(path.join(tmp, 'model', '.env'), 'SECRET=1');
  writeFileSync(path.join(tmp, 'model', '.cache', 'x.json'), '{}');
  const mount = ['--mount', `/m=${tmp}/model`];
  [plain, hooks, cors] = await Promise.all([
    startStaticServer({ testHooks: false, args: mount }),
    startStaticServer({ args: mount }),
    startStaticServer({ cors: true, testHooks: false }),
  ]);
});

after(() => {
  for (const s of [plain, hooks, cors]) s?.process.kill();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

/** A raw request (the path is sent exactly as given, unlike fetch, which normalises `..` and `%2e`). */
function raw(base, target, { method = 'GET', headers = {} } = {}) {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({ hostname, port, path: target, method, headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('the page, its modules, the wasm package, the test pages, the goldens and photos are served (needs pkg/)', async () => {
  for (const p of ['/', '/index.html', '/www/lib/lambda-eclipse.js', '/pkg/lambda_eclipse.js', '/tests/e2e/pages/api-goldens.html',
    '/shared/goldens/lambda-tiny/manifest.json', '/shared/goldens/lambda-tiny/model/prior/config.json', '/shared/assets/images/chelsea.png']) {
    const r = await raw(plain.base, p);
    assert.equal(r.status, 200, p);
  }
  const page = await raw(plain.base, '/');
  assert.equal(page.body, readFileSync(path.join(ROOT, 'index.html'), 'utf8'));
  assert.match(page.headers['content-type'], /^text\/html/);
  assert.equal((await raw(plain.base, '/www/lib/lambda-eclipse.js')).headers['content-type'], 'text/javascript');
  assert.equal((await raw(plain.base, '/pkg/lambda_eclipse_bg.wasm', { method: 'HEAD' })).headers['content-type'], 'application/wasm');
});

test('no dotfile, no directory listing, no other repository file, no way out of a served folder', async () => {
  const refused = ['/.git', '/.git/', '/.git/config', '/.git/HEAD', '/.gitignore', '/.ci/static_server.py', '/www/', '/www/lib/',
    '/pkg/', '/shared/', '/shared/goldens/', '/shared/goldens/lambda-tiny/model/', '/Cargo.toml', '/src/lib.rs', '/README.md',
    '/tests/e2e/browser.mjs', '/shared/docs/lambda-eclipse-spec.md', '/www/../Cargo.toml', '/www/%2e%2e/Cargo.toml',
    '/www/%2E%2E/%2Egit/config', '/www/..%2fCargo.toml', '/pkg/%2e%2e%2f.git%2fconfig', '//etc/passwd', '/m/.env',
    '/m/.cache/x.json', '/m/%2eenv', '/m/'];
  for (const p of refused) {
    const r = await raw(plain.base, p);
    assert.equal(r.status, 404, `${p}: ${r.status} ${r.body.slice(0, 80)}`);
    assert.doesNotMatch(r.body, /Directory listing|\[core\]|ref: refs/, p);
  }
});

test('paths are URL-decoded: %20 and UTF-8 names of a mounted model folder are found', async () => {
  const spaced = await raw(plain.base, '/m/config%20file.json');
  assert.equal(spaced.status, 200);
  assert.deepEqual(JSON.parse(spaced.body), { spaces: true });
  const utf8 = await raw(plain.base, `/m/${encodeURIComponent('é')}.json`);
  assert.equal(utf8.status, 200);
  assert.deepEqual(JSON.parse(utf8.body), { utf8: true });
  assert.equal((await raw(plain.base, '/www/lib/lambda%2Declipse.js')).status, 200);
  // Bytes that are not a path: 400, and the server answers the next request.
  for (const p of ['/www/%00.js', '/www/%ff.js', '/www/a%5c..%5c..%5cCargo.toml']) assert.equal((await raw(plain.base, p)).status, 400, p);
  assert.equal((await raw(plain.base, '/index.html')).status, 200);
});

test('Range requests: a 206 with the bytes asked for, 416 past the end', async () => {
  const file = readFileSync(path.join(ROOT, 'index.html'));
  const r = await raw(plain.base, '/index.html', { headers: { Range: 'bytes=10-19' } });
  assert.equal(r.status, 206);
  assert.equal(r.headers['content-range'], `bytes 10-19/${file.length}`);
  assert.equal(r.body, file.subarray(10, 20).toString());
  assert.ok(r.headers.etag);
  assert.equal((await raw(plain.base, '/index.html', { headers: { Range: `bytes=${file.length}-` } })).status, 416);
  const head = await raw(plain.base, '/index.html', { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(Number(head.headers['content-length']), file.length);
});

test('CORS headers only when started with --cors', async () => {
  for (const p of ['/index.html', '/shared/goldens/lambda-tiny/manifest.json', '/no/such/file']) {
    const r = await raw(plain.base, p, { headers: { Origin: 'http://elsewhere.example' } });
    assert.equal(r.headers['access-control-allow-origin'], undefined, p);
  }
  const preflight = await raw(plain.base, '/pkg/lambda_eclipse.js', { method: 'OPTIONS', headers: { Origin: 'http://elsewhere.example', 'Access-Control-Request-Headers': 'range' } });
  assert.equal(preflight.headers['access-control-allow-origin'], undefined);
  const open = await raw(cors.base, '/shared/goldens/lambda-tiny/manifest.json', { headers: { Origin: 'http://elsewhere.example' } });
  assert.equal(open.headers['access-control-allow-origin'], '*');
  assert.match(open.headers['access-control-expose-headers'], /Content-Range/);
  // --cors opens the same files, not more.
  assert.equal((await raw(cors.base, '/.git/config')).status, 404);
});

test('the test hooks exist only when started with --test-hooks', async () => {
  assert.equal((await raw(plain.base, '/__stats')).status, 404);
  assert.equal((await raw(plain.base, '/__stats/reset', { method: 'POST' })).status, 404);
  assert.equal((await raw(plain.base, '/__throttle?rate=1&delay_ms=5000', { method: 'POST' })).status, 404);
  assert.equal((await raw(cors.base, '/__stats')).status, 404);
  // Nothing was throttled on the plain server: a weight file comes at once.
  const t0 = Date.now();
  assert.equal((await raw(plain.base, '/shared/goldens/lambda-tiny/model/prior/diffusion_pytorch_model.safetensors', { headers: { Range: 'bytes=0-7' } })).status, 206);
  assert.ok(Date.now() - t0 < 2000, 'not throttled');

  assert.equal((await raw(hooks.base, '/__stats/reset', { method: 'POST' })).status, 204);
  await raw(hooks.base, '/m/config%20file.json');
  const stats = JSON.parse((await raw(hooks.base, '/__stats')).body);
  assert.deepEqual(stats, { '/m/config file.json': 1 });
});

test('a bad /__throttle parameter is answered 400 naming it, and the server keeps serving', async () => {
  for (const [query, name] of [['rate=abc', 'rate'], ['rate=-5', 'rate'], ['delay_ms=1e999', 'delay_ms'], ['delay_ms=nan', 'delay_ms'], ['rate=', 'rate']]) {
    const r = await raw(hooks.base, `/__throttle?${query}`, { method: 'POST' });
    assert.equal(r.status, 400, query);
    assert.match(r.body, new RegExp(`${name}=`), query);
    assert.equal((await raw(hooks.base, '/index.html')).status, 200, `serving after ${query}`);
  }
  assert.equal((await raw(hooks.base, '/__throttle?rate=0&delay_ms=0', { method: 'POST' })).status, 204);
  assert.equal((await raw(hooks.base, '/__throttle', { method: 'GET' })).status, 405);
});

test('the test hooks refuse a browser request from another origin', async () => {
  for (const [p, method] of [['/__stats', 'GET'], ['/__stats/reset', 'POST'], ['/__throttle?rate=1', 'POST']]) {
    const r = await raw(hooks.base, p, { method, headers: { Origin: 'http://elsewhere.example' } });
    assert.equal(r.status, 403, p);
  }
  const own = await raw(hooks.base, '/__stats', { headers: { Origin: hooks.base } });
  assert.equal(own.status, 200);
});
