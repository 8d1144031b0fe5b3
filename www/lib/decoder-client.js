// Client of a λ-ECLIPSE decoder endpoint (protocol: server/README.md, server/openapi.yaml). Runs on the page's
// thread: it only moves a few KB of JSON and an image.

/** Little-endian f32 bytes of a Float32Array, base64-encoded (the protocol's compact form). */
function base64F32(values) {
  const bytes = new Uint8Array(Float32Array.from(values).buffer);
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

/**
 * POSTs an embedding to `{endpoint}/v1/decode` and returns `{ blob, seed, decodeMs }`.
 * Errors are Error objects whose message says what happened, with the URL.
 */
export async function decode({ endpoint, token, imageEmbeds, negativeImageEmbeds, seed, steps, guidance, width, height, format = 'png', signal }) {
  const url = `${String(endpoint).replace(/\/+$/, '')}/v1/decode`;
  const body = { image_embeds: base64F32(imageEmbeds), format };
  if (negativeImageEmbeds) body.negative_image_embeds = base64F32(negativeImageEmbeds);
  if (Number.isFinite(seed)) body.seed = seed;
  if (Number.isFinite(steps)) body.num_inference_steps = steps;
  if (Number.isFinite(guidance)) body.guidance_scale = guidance;
  if (Number.isFinite(width)) body.width = width;
  if (Number.isFinite(height)) body.height = height;
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(url, { method: 'POST', headers, body: JSON.stringify(body), signal });
  } catch (e) {
    throw new Error(`cannot reach the decoder endpoint at ${url} (is it running, and does it allow this page's origin?): ${e.message}`);
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { const j = await response.json(); if (j?.error?.message) message = `${response.status}: ${j.error.message}`; } catch { /* not JSON */ }
    if (response.status === 401) message = `the endpoint refused the token (${message})`;
    if (response.status === 429) message = `the endpoint is busy, retry in ${response.headers.get('Retry-After') ?? 'a few'} s (${message})`;
    throw new Error(`decoder endpoint ${url}: ${message}`);
  }
  const type = response.headers.get('Content-Type') || '';
  if (!type.startsWith('image/')) throw new Error(`decoder endpoint ${url} answered ${type || 'no content type'}, not an image`);
  return {
    blob: await response.blob(),
    seed: Number(response.headers.get('X-Seed')),
    decodeMs: Number(response.headers.get('X-Decode-Ms')),
  };
}
