// Export of a computed embedding: safetensors (the CLI's `prior` layout, so `lambda-eclipse decode --embeds`
// and `interpolate` take it), NumPy .npy (image_embeds, [1, D]) and JSON.
import { download, writeNpy, writeSafetensors } from '../lib/tensor-files.js';

/**
 * The three files of a result. `info`: `{ prompt, seed, keywords, backend }`, stored as metadata.
 * Returns `{ safetensors: Uint8Array, npy: Uint8Array, json: string }`.
 */
export function resultFiles(result, info = {}) {
  const d = result.imageEmbeds.length;
  const row = (v) => ({ shape: [1, d], data: Float32Array.from(v) });
  const tensors = {
    image_embeds: row(result.imageEmbeds),
    negative_image_embeds: row(result.negativeImageEmbeds),
    noise: row(result.noise),
  };
  if (result.encoderHiddenStates?.length) {
    tensors.encoder_hidden_states = { shape: [1, result.encoderHiddenStates.length / d, d], data: Float32Array.from(result.encoderHiddenStates) };
  }
  const metadata = {
    prompt: info.prompt ?? '',
    seed: info.seed ?? '',
    keywords: JSON.stringify(info.keywords ?? []),
    backend: info.backend ?? '',
    warnings: JSON.stringify(result.warnings ?? []),
  };
  return {
    safetensors: writeSafetensors(tensors, metadata),
    npy: writeNpy(Float32Array.from(result.imageEmbeds), [1, d]),
    json: JSON.stringify({
      prompt: info.prompt,
      seed: info.seed,
      keywords: info.keywords,
      backend: info.backend,
      image_embeds: Array.from(result.imageEmbeds),
      negative_image_embeds: Array.from(result.negativeImageEmbeds),
      warnings: result.warnings,
      timings: result.timings,
    }),
  };
}

/** Downloads one of the result's files: format 'safetensors' | 'npy' | 'json'. */
export function exportResult(result, info, format) {
  const files = resultFiles(result, info);
  const name = `lambda-eclipse-embedding.${format}`;
  download(files[format], name, format === 'json' ? 'application/json' : 'application/octet-stream');
}
