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
  imageEmbeds: Float32Array;
  negativeImageEmbeds: Float32Array;
  encoderHiddenStates: Float32Array;
  noise: Float32Array;
  warnings: string[];
  timings: Record<string, number>;
  cannyEdges?: { width: number; height: number; data: Uint8Array };
}

export interface Engine {
  readonly backend: 'webgpu' | 'cpu';
  /** Why 'auto' ran on the CPU, or null. */
  readonly fallbackReason: string | null;
  readonly embeddingDim: number;
  embedText(prompt: string): Promise<TextEmbedding>;
  embedImages(images: ImageInput[]): Promise<{ imageEmbeds: Float32Array[] }>;
  prior(request: PriorRequest): Promise<PriorResult>;
  dispose(): void;
}

export function load(options?: {
  model?: string;
  prior?: string;
  backend?: 'auto' | 'webgpu' | 'cpu';
  onProgress?: (p: Progress) => void;
}): Promise<Engine>;
