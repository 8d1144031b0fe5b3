// Every API the README documents, used as a TypeScript developer would after `npm install lambda-eclipse`.
// `tsc --noEmit` (tests/e2e/package.test.mjs) checks it against the installed package's typings; each
// `@ts-expect-error` line must be an error, so typings that degrade to `any` fail the check too.
import {
  load, loadDecoder, cacheUsage, clearCache, inspectImage, cannyPreview, interpolateGrid, resolveManifest,
  resolveDecoderManifest, DEFAULT_MODEL, DEFAULT_PRIOR, DEFAULT_MANIFEST, DEFAULT_DECODER, MODEL_FOLDERS,
  DECODER_FOLDERS, listVariants, resolveVariant, cpuFitProblem, LISTING_FILE,
} from 'lambda-eclipse';
import type {
  Engine, Decoder, PriorResult, Progress, DecodedImage, DecodeStep, CacheUsage, KeywordMatch, EngineDescription,
  TextEmbedding, CannyPreview, ModelManifest, DecoderManifest, LoadInfo, FileProgress, ModelVariant, ListedVariant,
} from 'lambda-eclipse';
import { LambdaEclipseWidget } from 'lambda-eclipse/widget';
import type { LocalDecodeResult } from 'lambda-eclipse/widget';
import { readSafetensors, writeSafetensors, readNpy, writeNpy, readEmbedding } from 'lambda-eclipse/tensor-files';

declare const file: File;
declare const bytes: Uint8Array;

const strings: string[] = [DEFAULT_MODEL, DEFAULT_PRIOR, DEFAULT_DECODER, ...MODEL_FOLDERS, ...DECODER_FOLDERS];
const manifest: ModelManifest = resolveManifest('/shared/goldens/lambda-tiny/model/', DEFAULT_PRIOR);
const defaults: Readonly<ModelManifest> = DEFAULT_MANIFEST;
const decoderManifest: DecoderManifest = resolveDecoderManifest({ base: '/decoder/', unet: '/elsewhere/unet/' });

export async function everything(): Promise<void> {
  const controller = new AbortController();
  const engine: Engine = await load({
    model: { ...manifest, base: '/model/' },
    prior: defaults.prior,
    backend: 'auto',
    cache: true,
    signal: controller.signal,
    onProgress: (p: Progress) => {
      const f: FileProgress | undefined = p.files[0];
      const eta: number | null = p.etaSeconds;
      console.log(p.phase, p.done, p.total, p.bytesPerSecond, eta, f?.file, p.memoryBytes, p.cacheWarning);
    },
  });
  const info: LoadInfo = engine.loadInfo;
  // A listed variant of a model (its variants.json), by id; a copy's folder URL also loads as a plain model.
  const listed: ModelVariant[] | null = await listVariants('/model/');
  const q8: Engine = await load({ model: '/model/', variant: 'q8_0', backend: 'cpu' });
  const loadedVariant: string | null = q8.variant;
  const { entry } = await resolveVariant({ base: '/model/', variants: { q8_0: { url: 'q8_0/', type: 'q8_0', bytes: 1, cpuBytes: 2 } satisfies ListedVariant } }, 'q8_0');
  const why: string | null = entry ? cpuFitProblem(entry, listed, 4 * 1024 ** 3) : null;
  const listingFile: string = LISTING_FILE;
  console.log(loadedVariant, why, listingFile);
  const backend: 'webgpu' | 'cpu' = engine.backend;
  console.log(info.loadSeconds, backend, engine.fallbackReason, engine.embeddingDim, engine.alive, await engine.memoryBytes());

  const r: PriorResult = await engine.prior({
    prompt: 'a cat wearing glasses', subjects: [{ keyword: 'cat', image: file }], seed: 42,
    control: bytes, noise: new Float32Array(1280), cannyLow: 100, cannyHigh: 200,
  });
  const embeds: Float32Array = r.imageEmbeds;
  console.log(embeds, r.negativeImageEmbeds, r.encoderHiddenStates, r.controlEmbeds, r.noise, r.warnings, r.timings, r.cannyEdges?.data);
  const text: TextEmbedding = await engine.embedText('a cat');
  const ids: Int32Array = text.inputIds;
  const { imageEmbeds }: { imageEmbeds: Float32Array[] } = await engine.embedImages([file, bytes, bytes.buffer as ArrayBuffer]);
  const matches: KeywordMatch[] = await engine.matchKeywords('a cat', ['cat']);
  const spans: [number, number][] = matches[0].spans;
  const described: EngineDescription = await engine.describe();
  console.log(ids, imageEmbeds, spans, described.adapter, described.version);

  const size: { width: number; height: number } = await inspectImage(file);
  const edges: CannyPreview = await cannyPreview(file, { low: 100, high: 200 });
  const imageData = new ImageData(edges.rgba, edges.width, edges.height);
  const grid: Float32Array[] = await interpolateGrid([embeds, embeds, embeds, embeds], 4);
  console.log(size, imageData, grid);

  const decoder: Decoder = await loadDecoder({ model: decoderManifest, backend: 'webgpu', weights: 'int8', onProgress: (p) => p.done, signal: controller.signal });
  console.log(decoder.backend, decoder.embeddingDim, decoder.sizeMultiple, decoder.latentScale, decoder.defaultScheduler, decoder.weights, decoder.adapter, decoder.loadInfo);
  const img: DecodedImage = await decoder.decode({
    imageEmbeds: r.imageEmbeds, negativeImageEmbeds: r.negativeImageEmbeds, seed: 42, steps: 50, guidance: 4,
    width: 512, height: 512, scheduler: 'ddpm', signal: controller.signal,
    onStep: ({ step, total, msPerStep, preview }: DecodeStep) => console.log(step, total, msPerStep, preview.rgba),
    noise: { initialLatents: new Float32Array(4), stepNoise: [0, 1] },
  });
  console.log(img.width, img.height, img.rgba, img.steps, img.scheduler, img.stepMs, img.msPerStep, img.movqMs, img.seconds);
  decoder.dispose();
  engine.dispose();

  const usage: CacheUsage = await cacheUsage('/shared/goldens/lambda-tiny/model/');
  const freed: number = await clearCache();
  console.log(usage.bytes, usage.entries, usage.files, usage.available, freed, strings);

  const el: LambdaEclipseWidget = document.createElement('lambda-eclipse-widget');
  el.setAttribute('model', '/shared/goldens/lambda-tiny/model/');
  el.addEventListener('lambda-result', (e) => console.log(e.detail.imageEmbeds));
  el.addEventListener('lambda-ready', (e) => console.log(e.detail.backend));
  el.addEventListener('lambda-error', (e) => console.log(e.detail.message));
  el.addEventListener('lambda-decoded', (e) => console.log(e.detail.blob, e.detail.seed));
  el.addEventListener('click', (e: MouseEvent) => console.log(e.clientX));
  const loaded: Engine = await el.load();
  const computed: PriorResult = await el.compute();
  const remote: { blob: Blob; seed: number; decodeMs: number } = await el.decode();
  const local: LocalDecodeResult = await el.decodeLocally();
  console.log(loaded, computed, remote, local.msPerStep, el.engine?.backend, el.result?.imageEmbeds);

  const st = readSafetensors(bytes, 'a.safetensors');
  const first: Float32Array | Float64Array | BigInt64Array | Int32Array | Uint8Array = st.tensors.image_embeds.data;
  const written: Uint8Array = writeSafetensors({ image_embeds: { shape: [1, 4], data: new Float32Array(4) } }, { prompt: 'a cat', seed: 42 });
  const npy: Uint8Array = writeNpy(new Float32Array(4), [1, 4]);
  const { shape } = readNpy(npy);
  const { embeds: fromFile, negative } = readEmbedding(written, 'a.safetensors');
  console.log(first, st.metadata, shape, fromFile, negative);
}

// The typings are not `any`: each of these must be a type error.
// @ts-expect-error: no such backend
load({ backend: 'tpu' });
// @ts-expect-error: a variant is named by a string such as 'q8_0'
load({ model: '/model/', variant: 8 });
// @ts-expect-error: prior() needs a prompt
declare const e1: Engine; e1.prior({ subjects: [] });
// @ts-expect-error: no such sampler
declare const d1: Decoder; d1.decode({ imageEmbeds: [], scheduler: 'euler' });
// @ts-expect-error: the event detail of lambda-result is a PriorResult
document.createElement('lambda-eclipse-widget').addEventListener('lambda-result', (e) => e.detail.nope);
// @ts-expect-error: writeNpy takes float32/int32/uint8 data
writeNpy([1, 2, 3], [3]);
