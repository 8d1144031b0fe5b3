// Starting the engine's module workers from wherever this package was served. Browsers refuse a worker script
// from another origin than the page (a widget embedded from a CDN); then a same-origin blob worker imports the
// script instead, which only needs CORS on the script's server. The worker script's own relative URLs (the
// wasm package) keep resolving against its real URL.

/** True when the module at `moduleUrl` was served from another origin than the page. */
export const isCrossOrigin = (moduleUrl) => new URL(moduleUrl).origin !== location.origin;

/** A module Worker on a same-origin blob that imports `url` (absolute). */
export function blobWorker(url) {
  const blobUrl = URL.createObjectURL(new Blob([`import ${JSON.stringify(String(url))};\n`], { type: 'text/javascript' }));
  const worker = new Worker(blobUrl, { type: 'module' });
  setTimeout(() => URL.revokeObjectURL(blobUrl), 60_000); // the worker has fetched it long before
  return worker;
}
