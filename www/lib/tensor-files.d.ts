/** Typed arrays a tensor file holds: F32/F16/BF16 read as Float32Array. */
export type TensorData = Float32Array | Float64Array | BigInt64Array | Int32Array | Uint8Array;
export type TensorDtype = 'F32' | 'F16' | 'BF16' | 'F64' | 'I64' | 'I32' | 'U8';

export interface Tensor<D extends TensorData = TensorData> {
  shape: number[];
  data: D;
}

/** Parses a safetensors file; throws an Error naming `what` when it is not valid safetensors. */
export function readSafetensors(bytes: Uint8Array | ArrayBuffer, what?: string): {
  tensors: Record<string, Tensor & { dtype: TensorDtype }>;
  metadata: Record<string, string>;
};

/** Writes a safetensors file (F32, I32, I64 or U8 tensors; metadata values become strings). */
export function writeSafetensors(
  tensors: Record<string, Tensor<Float32Array | Int32Array | BigInt64Array | Uint8Array>>,
  metadata?: Record<string, unknown>,
): Uint8Array;

/** Writes a C-order little-endian NumPy .npy (version 1.0). */
export function writeNpy(data: Float32Array | Int32Array | Uint8Array, shape: number[]): Uint8Array;

/** Parses a NumPy .npy file (v1/v2/v3, C order, <f4 <f8 <i4 <i8 |u1). */
export function readNpy(bytes: Uint8Array | ArrayBuffer, what?: string): Tensor<Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array>;

/** One embedding from a file the app or the CLI wrote (safetensors, .npy or JSON, told apart by `name` and
 * the first byte), with the decoder's negative when the file has one. */
export function readEmbedding(bytes: Uint8Array | ArrayBuffer, name: string): { embeds: Float32Array; negative: Float32Array | null };

/** Starts a download of `bytes` as `filename` (page only). */
export function download(bytes: Uint8Array | string, filename: string, type?: string): void;
