export const DEFAULT_MODEL: string;
export const DEFAULT_PRIOR: string;

/** The folders of a model, each with its own URL in a manifest. */
export type ModelFolder = 'tokenizer' | 'text_encoder' | 'image_encoder' | 'image_processor' | 'prior';
export const MODEL_FOLDERS: readonly ModelFolder[];

/** One URL per component folder (each a folder in the Hugging Face layout). */
export type ModelManifest = Record<ModelFolder, string>;
/** The real model: Kandinsky 2.2's prior repository and the Lambda-ECLIPSE prior on Hugging Face. */
export const DEFAULT_MANIFEST: Readonly<ModelManifest>;

/** A base URL (folders under it), a manifest (partial ones take the rest from `base`; `variants`: its listing
 * of variants, or that listing's URL — else `base`'s `variants.json`), or nothing: the real model. */
export type ModelSource = string | (Partial<ModelManifest> & { base?: string; variants?: string | Record<string, ListedVariant> });

/** One entry of a `variants.json` (written by `lambda-eclipse quantize --list`), URLs relative to the model. */
export interface ListedVariant {
  url: string;
  /** The ggml block type of a copy ('q8_0', 'q4_m', 'q4_0'); absent for the original. */
  type?: string;
  /** The download. */
  bytes: number;
  /** What the CPU backend holds for the weights (plus one tensor's f32 values while loading). */
  cpuBytes: number;
}

/** A variant as `listVariants` gives it: absolute folder URL; null where the listing does not say. */
export interface ModelVariant {
  /** 'original', 'q8_0', 'q4_m', …: what `load`'s `variant` takes. */
  id: string;
  url: string;
  type: string | null;
  bytes: number | null;
  cpuBytes: number | null;
}

/** The file at a model's root that lists its variants. */
export const LISTING_FILE: 'variants.json';

/** A model's variants, the original first (then the larger downloads first), or null when it lists none
 * (no `variants.json`). Rejects naming the listing's URL when it cannot be read or is malformed. */
export function listVariants(model: ModelSource, options?: { signal?: AbortSignal }): Promise<ModelVariant[] | null>;

/** What `load` loads for `variant`: the copy's folder URL (or `model` itself for 'original' / none), the
 * listing's entry and every entry. Rejects an unknown variant naming those that exist. */
export function resolveVariant(model: ModelSource, variant?: string, options?: { signal?: AbortSignal }): Promise<{ model: ModelSource; entry: ModelVariant | null; variants: ModelVariant[] | null }>;

/** Why `entry` cannot compute on the CPU within `limit` bytes of WebAssembly memory, naming the variants that
 * fit; null when it fits (or its need is not listed). */
export function cpuFitProblem(entry: ModelVariant, variants: ModelVariant[] | null, limit: number): string | null;

/** The absolute folder URLs of a model source; `prior` overrides the prior's folder. */
export function resolveManifest(model?: ModelSource, prior?: string): ModelManifest;

export type ImageInput = Blob | ArrayBuffer | Uint8Array;

export interface FileProgress {
  component: 'text_encoder' | 'image_encoder' | 'prior' | 'unet' | 'movq';
  /** Path in the model, e.g. `text_encoder/model.safetensors` (one row per shard of a sharded checkpoint). */
  file: string;
  url: string;
  /** Bytes of tensors in the file, and how many have arrived (from the network or this browser's cache). */
  total: number;
  done: number;
  /** Of `done`, the bytes that came from this browser's cache. */
  cached: number;
}

/** Where a load stands (reported at most every 100 ms, and when a file completes). */
export interface Progress {
  /** 'preparing' (configs, tokenizer, weight headers), 'weights', 'finishing' (every weight is on the
   * backend; the engine computes the empty-image embedding), then 'done'. */
  phase: 'preparing' | 'weights' | 'finishing' | 'done';
  /** Component and file of the latest tensor read, or null. */
  component: string | null;
  file: string | null;
  files: FileProgress[];
  /** Tensor bytes of all weight files: arrived, and in all. */
  done: number;
  total: number;
  /** Bytes of all files (weights, headers, configs, tokenizer) fetched from the network, and taken from
   * this browser's cache. */
  downloaded: number;
  fromCache: number;
  /** Network speed over the last few seconds, or null at the start. */
  bytesPerSecond: number | null;
  /** Seconds left at the recent pace, or null when unknown. */
  etaSeconds: number | null;
  elapsedSeconds: number;
  /** Bytes of the engine's wasm memory now (it only grows), or null before the engine started. */
  memoryBytes: number | null;
  /** Why the model is not being kept in this browser (quota exceeded, no Cache API), or null. */
  cacheWarning: string | null;
  cacheEnabled: boolean;
}

export interface LoadInfo {
  loadSeconds: number;
  /** Tensor bytes of the model; bytes of all files that came from the network and from this browser's cache. */
  weightBytes: number;
  downloadedBytes: number;
  cachedBytes: number;
  /** Bytes of the engine's wasm memory after loading (its peak: wasm memory never shrinks). */
  memoryBytes: number;
  cacheWarning: string | null;
}

export interface CacheUsage {
  /** Bytes of model files kept in this browser (of the given model, when one was given). */
  bytes: number;
  entries: number;
  /** Distinct files with something cached. */
  files: number;
  /** False where the page has no Cache API (not https:// or localhost). */
  available: boolean;
}

/** Bytes of model files in this browser's cache; with `model`, only that model's. No engine needed. */
export function cacheUsage(model?: ModelSource): Promise<CacheUsage>;
/** Deletes every cached model file; resolves to the bytes freed. No engine needed. */
export function clearCache(): Promise<number>;

export interface TextEmbedding {
  inputIds: Int32Array;
  attentionMask: Int32Array;
  textEmbeds: Float32Array;
  lastHiddenState: Float32Array;
  truncated: boolean;
}

export interface PriorRequest {
  prompt: string;
  subjects?: { keyword: string; image: ImageInput }[];
  control?: ImageInput;
  seed?: number;
  noise?: Float32Array;
  cannyLow?: number;
  cannyHigh?: number;
}

export interface PriorResult {
  /** [D]: the embedding for the decoder. */
  imageEmbeds: Float32Array;
  /** [D]: the zero-image embedding, the decoder's negative. */
  negativeImageEmbeds: Float32Array;
  /** [77·D]: text hidden states after subject substitution. */
  encoderHiddenStates: Float32Array;
  /** [D]: the edge-control embedding (the zero-image embedding without a control image). */
  controlEmbeds: Float32Array;
  /** The text tower's embedding of the prompt. */
  textEmbeds: Float32Array;
  noise: Float32Array;
  warnings: string[];
  timings: Record<string, number>;
  cannyEdges?: { width: number; height: number; data: Uint8Array };
}

export interface KeywordMatch {
  /** Every token of the keyword occurs in the prompt (otherwise the result warns "couldn't find keyword"). */
  found: boolean;
  /** The keyword has no tokens (the pipeline refuses it). */
  empty: boolean;
  /** [start, end) string indices of the prompt's words the subject's embedding replaces. */
  spans: [number, number][];
}

export interface EngineDescription {
  backend: 'webgpu' | 'cpu';
  /** The WebGPU adapter in words, or null on the CPU. */
  adapter: string | null;
  fallbackReason: string | null;
  embeddingDim: number;
  version: string;
}

export interface CannyPreview {
  width: number;
  height: number;
  /** width·height values, 0 or 255, row-major. */
  edges: Uint8Array;
  /** width·height·4 RGBA bytes for `new ImageData(rgba, width, height)`. */
  rgba: Uint8ClampedArray<ArrayBuffer>;
}

export interface Engine {
  readonly backend: 'webgpu' | 'cpu';
  /** Why 'auto' ran on the CPU, or null. */
  readonly fallbackReason: string | null;
  readonly embeddingDim: number;
  /** How the load went. */
  readonly loadInfo: LoadInfo;
  /** The variant loaded ('original', 'q8_0', …), or null when `load` was given none. */
  readonly variant: string | null;
  /** The model the weights came from: a copy's folder URL for a variant, else the `model` given. */
  readonly source: ModelSource | null;
  /** Bytes of the engine's wasm memory now. */
  memoryBytes(): Promise<number>;
  embedText(prompt: string): Promise<TextEmbedding>;
  embedImages(images: ImageInput[]): Promise<{ imageEmbeds: Float32Array[] }>;
  prior(request: PriorRequest): Promise<PriorResult>;
  matchKeywords(prompt: string, keywords: string[]): Promise<KeywordMatch[]>;
  describe(): Promise<EngineDescription>;
  /** False once its worker crashed (a wasm trap: out of memory, a bug) or it was disposed. Every call then
   * rejects at once: after a crash with "the model's worker crashed (probably out of memory): …" (load anew). */
  readonly alive: boolean;
  /** Stops its worker; calls still pending reject with an AbortError ("the model was disposed"). */
  dispose(): void;
}

/**
 * Loads the model in a Web Worker, keeping its files in this browser's cache (a reload downloads nothing; a
 * load after an interruption fetches only what is missing). Rejects with an Error naming the URL and what
 * went wrong (404, network/CORS, truncated file, ...), or with a DOMException named 'AbortError' when
 * `signal` aborts it (the fetches stop; loading again resumes from the cache).
 */
export function load(options?: {
  model?: ModelSource;
  /** One of the variants the model lists ('q8_0', …), or 'original' / nothing: the model itself. An unknown
   * one is refused naming those that exist; on the CPU one whose listed memory exceeds this browser's
   * WebAssembly memory is refused before downloading, naming those that fit. */
  variant?: string;
  prior?: string;
  backend?: 'auto' | 'webgpu' | 'cpu';
  onProgress?: (p: Progress) => void;
  signal?: AbortSignal;
  /** Keep and reuse the model files in the browser cache (default true). */
  cache?: boolean;
}): Promise<Engine>;

/** Default decoder: kandinsky-community/kandinsky-2-2-decoder on Hugging Face (unet/, movq/, scheduler/). */
export const DEFAULT_DECODER: string;
export type DecoderFolder = 'unet' | 'movq' | 'scheduler';
export const DECODER_FOLDERS: readonly DecoderFolder[];
/** One URL per decoder folder. */
export type DecoderManifest = Record<DecoderFolder, string>;
/** A base URL (`base/unet/`, …), or a manifest, possibly partial with a `base` for the rest. */
export type DecoderSource = string | (Partial<DecoderManifest> & { base?: string });
export function resolveDecoderManifest(model?: DecoderSource): DecoderManifest;

/** Progress of one denoising step. */
export interface DecodeStep {
  /** 1-based. */
  step: number;
  total: number;
  /** Milliseconds since the previous step (or the decode's start). */
  msPerStep: number;
  /** The latents' first three channels as RGB at latent resolution ([−3, 3] → 0..255). */
  preview: { width: number; height: number; rgba: Uint8ClampedArray };
}

export interface DecodeRequest {
  imageEmbeds: ArrayLike<number>;
  /** The unconditional embedding (the prior's `negativeImageEmbeds`); needed when guidance > 1. */
  negativeImageEmbeds?: ArrayLike<number>;
  /** Seed of the initial latents and DDPM's per-step noise (portable generator; default 0). */
  seed?: number;
  /** Denoising steps (default 50). */
  steps?: number;
  /** Classifier-free guidance (default 4; ≤ 1: the embedding alone). */
  guidance?: number;
  /** Image size in pixels (default 512), multiples of `sizeMultiple`. */
  width?: number;
  height?: number;
  /** Default: the class in `scheduler/scheduler_config.json`. */
  scheduler?: 'ddpm' | 'ddim' | 'dpmpp';
  /** Given draws instead of the seed's, as in the golden files and the CLI's `--noise`: `initialLatents`
   * [1, C, h, w] and, for DDPM, `stepNoise` [steps, 1, C, h, w], row-major. */
  noise?: { initialLatents: ArrayLike<number>; stepNoise?: ArrayLike<number> };
  onStep?: (s: DecodeStep) => void;
  /** Aborting stops the decode before its next step, and a decode aborted after its last step (during the
   * MoVQ) returns no image: the promise rejects with an AbortError either way; the decoder stays loaded. */
  signal?: AbortSignal;
}

export interface DecodedImage {
  width: number;
  height: number;
  /** RGBA, 8 bits per channel (`new ImageData(rgba, width, height)` draws it). */
  rgba: Uint8ClampedArray;
  steps: number;
  scheduler: 'ddpm' | 'ddim' | 'dpmpp';
  /** Milliseconds of each denoising step, their mean, and the MoVQ's. */
  stepMs: number[];
  msPerStep: number;
  movqMs: number;
  /** The whole decode. */
  seconds: number;
}

/** The local Kandinsky 2.2 decoder, in a Web Worker of its own. */
export interface Decoder {
  readonly backend: 'webgpu' | 'cpu';
  readonly fallbackReason: string | null;
  readonly adapter: string | null;
  readonly embeddingDim: number;
  readonly latentScale: number;
  readonly sizeMultiple: number;
  readonly defaultScheduler: 'ddpm' | 'ddim' | 'dpmpp';
  /** How it keeps its weight matrices: what `weights` asked for on WebGPU; 'f32' on the CPU. */
  readonly weights: 'f16' | 'int8' | 'f32';
  readonly loadInfo: LoadInfo;
  /** Rejects with an Error in words (size, embedding length, device limits), or an AbortError. When its
   * worker crashes (a wasm trap: out of memory, a bug) it rejects with "the decoder's worker crashed (probably
   * out of memory): …" and the decoder is gone (`alive` false): load it again. */
  decode(request: DecodeRequest): Promise<DecodedImage>;
  /** False once its worker crashed or it was disposed; every call then rejects at once. */
  readonly alive: boolean;
  /** Stops its worker; a decode still pending rejects with an AbortError ("the decoder was disposed"). */
  dispose(): void;
}

/**
 * Loads the decoder (`model`: default DEFAULT_DECODER), streamed and cached like `load`'s model, with the
 * same progress, cancellation and errors. `weights`: 'f16' (default: f32 matrices kept as f16 on WebGPU,
 * half the memory, ~1e-3 relative), 'int8' (per output channel, a quarter of f32: the real UNet in 1.26 GB;
 * approximate) or 'f32' (as stored).
 */
export function loadDecoder(options?: {
  model?: DecoderSource;
  backend?: 'auto' | 'webgpu' | 'cpu';
  weights?: 'f16' | 'int8' | 'f32';
  onProgress?: (p: Progress) => void;
  signal?: AbortSignal;
  cache?: boolean;
}): Promise<Decoder>;

/** Checks that an image file decodes as a subject photo would: its size, or rejects with the reason. No model needed. */
export function inspectImage(image: ImageInput): Promise<{ width: number; height: number }>;

/** The engine's OpenCV-exact Canny edge map of an edge-control image (default thresholds 100, 200). No model needed. */
export function cannyPreview(image: ImageInput, thresholds?: { low?: number; high?: number }): Promise<CannyPreview>;

/** (steps+1)² embeddings between four corners [topLeft, topRight, bottomLeft, bottomRight], row-major. No model needed. */
export function interpolateGrid(corners: [ArrayLike<number>, ArrayLike<number>, ArrayLike<number>, ArrayLike<number>], steps?: number): Promise<Float32Array[]>;
