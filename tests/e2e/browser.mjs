// Shared pieces of the end-to-end tests: free ports, waiting for a server, the static server, Chromium.
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { chromium } from 'playwright-core';

/** playwright-core's Chromium launcher, for scripts outside tests/e2e (where the package is installed). */
export { chromium };

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const IMAGES = path.resolve(ROOT, '../shared/assets/images');
export const OUTPUT = path.join(ROOT, 'tests/output');
export const SCREENSHOTS = path.join(OUTPUT, 'screenshots');
export const GOLDENS = path.resolve(ROOT, '../shared/goldens/lambda-tiny');
export const TINY_MODEL = '/shared/goldens/lambda-tiny/model/';
/** The tiny Kandinsky 2.2 decoder and its golden cases (`ddpm_nocfg.safetensors`, …). */
export const DECODER_GOLDENS = path.resolve(ROOT, '../shared/goldens/kandinsky-tiny');
export const TINY_DECODER = '/shared/goldens/kandinsky-tiny/model/';

export const freePort = () => new Promise((resolve) => {
  const s = createServer().listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
});

export async function waitFor(url, seconds) {
  for (let i = 0; i < seconds * 10; i++) {
    try { if ((await fetch(url)).ok) return; } catch { /* not up yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} did not come up within ${seconds} s`);
}

/** Starts .ci/static_server.py on `port` (default: a free one) with extra `args` (`--mount`, `--throttle`):
 * `{ process, base, port }`. `testHooks` (default true): /__stats and /__throttle; `cors`: let pages of other
 * origins read its files. */
export async function startStaticServer({ port, args = [], cors = false, testHooks = true } = {}) {
  port ??= await freePort();
  const flags = [...(testHooks ? ['--test-hooks'] : []), ...(cors ? ['--cors'] : []), ...args];
  const process = spawn('python3', [path.join(ROOT, '.ci/static_server.py'), '--port', String(port), ...flags], { stdio: 'inherit' });
  const base = `http://127.0.0.1:${port}`;
  await waitFor(`${base}/index.html`, 10);
  return { process, base, port };
}

/** Debian's Chromium, headless, with WebGPU (SwiftShader) enabled and no background network traffic. */
export const CHROMIUM = {
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--enable-unsafe-webgpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--no-first-run', '--disable-quic'],
};

export function launchChromium() {
  return chromium.launch(CHROMIUM);
}

/** The static server and Chromium most page tests share: `{ base, browser, close() }`; the screenshot folder
 * exists once it resolves. */
export async function openSite() {
  mkdirSync(SCREENSHOTS, { recursive: true });
  const { process: server, base } = await startStaticServer();
  const browser = await launchChromium();
  return { base, browser, close: async () => { await browser.close(); server.kill(); } };
}
