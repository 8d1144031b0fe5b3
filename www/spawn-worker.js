// Starting the engine's module workers from wherever the module was served. Browsers refuse a worker script
// from another origin than the page (a widget embedded from a CDN); then a same-origin blob worker imports the
// script instead, which only needs CORS on the script's server. The worker script's own relative URLs (the
// wasm package) keep resolving against its real URL.

/** A module Worker running `url` (absolute, or relative to the page). */
export function spawnWorker(url) {
  const u = new URL(url, location.href);
  if (u.origin === location.origin) return new Worker(u, { type: 'module' });
  const blobUrl = URL.createObjectURL(new Blob([`import ${JSON.stringify(u.href)};\n`], { type: 'text/javascript' }));
  const worker = new Worker(blobUrl, { type: 'module' });
  setTimeout(() => URL.revokeObjectURL(blobUrl), 60_000); // the worker has fetched it long before
  return worker;
}
