export const DEFAULT_MODEL: string;
export const DEFAULT_PRIOR: string;

export type ImageInput = Blob | ArrayBuffer | Uint8Array;

export interface Progress { component: string; done: number; total: number }

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
  embedText(prompt: string): Promise<TextEmbedding>;
  embedImages(images: ImageInput[]): Promise<{ imageEmbeds: Float32Array[] }>;
  prior(request: PriorRequest): Promise<PriorResult>;
  matchKeywords(prompt: string, keywords: string[]): Promise<KeywordMatch[]>;
  describe(): Promise<EngineDescription>;
  dispose(): void;
}

export function load(options?: {
  model?: string;
  prior?: string;
  backend?: 'auto' | 'webgpu' | 'cpu';
  onProgress?: (p: Progress) => void;
}): Promise<Engine>;

/** Checks that an image file decodes as a subject photo would: its size, or rejects with the reason. No model needed. */
export function inspectImage(image: ImageInput): Promise<{ width: number; height: number }>;

/** The engine's OpenCV-exact Canny edge map of an edge-control image (default thresholds 100, 200). No model needed. */
export function cannyPreview(image: ImageInput, thresholds?: { low?: number; high?: number }): Promise<CannyPreview>;

/** (steps+1)² embeddings between four corners [topLeft, topRight, bottomLeft, bottomRight], row-major. No model needed. */
export function interpolateGrid(corners: [ArrayLike<number>, ArrayLike<number>, ArrayLike<number>, ArrayLike<number>], steps?: number): Promise<Float32Array[]>;
