// The Web Worker for the engine's model-free tools: checking an image file, the Canny edge preview and the
// interpolation grid. Same wasm package as worker.js, no model: usable before (and without) loading one, and
// never queued behind a long model computation.
// Protocol: {id, op, args} in; {id, ok: true, result} | {id, ok: false, error, fatal} out.
import init, { inspectImage, cannyPreview, interpolateGrid } from '../../pkg/lambda_eclipse.js';

const ready = init();

const ops = {
  inspectImage: ({ image }) => inspectImage(image),
  cannyPreview: ({ image, low, high }) => cannyPreview(image, low, high),
  interpolateGrid: ({ corners, steps }) => interpolateGrid(corners, steps),
};

self.onmessage = async ({ data: { id, op, args } }) => {
  try {
    await ready;
    if (!ops[op]) throw new Error(`unknown operation ${op}`);
    const result = await ops[op](args);
    const transfer = [];
    const collect = (v) => { if (ArrayBuffer.isView(v)) transfer.push(v.buffer); else if (v && typeof v === 'object') Object.values(v).forEach(collect); };
    collect(result);
    postMessage({ id, ok: true, result }, transfer);
  } catch (e) {
    // A trap (out of memory, a bug) leaves the wasm instance unusable: the client then starts a fresh worker.
    postMessage({ id, ok: false, error: String(e && e.message ? e.message : e), fatal: e instanceof WebAssembly.RuntimeError });
  }
};
