import type { Engine, EngineDescription, PriorResult } from '../lib/lambda-eclipse.js';

/**
 * `<lambda-eclipse-widget model="…" variant="original|q8_0|q4_0|…" prior="…" backend="auto|webgpu|cpu" autoload endpoint="…" token="…"
 * decoder="…" decoder-weights="f16|int8|f32" prompt="…" seed="42" width="512" height="512" steps="50" guidance="4"
 * scheduler="ddpm|ddim|dpmpp">`. `decoder` (a decoder folder URL, or empty for Kandinsky 2.2 on Hugging Face)
 * enables "Decode locally". When the model lists variants (its `variants.json`), the widget offers them with
 * their download sizes, starting from `variant`, else the choice remembered for that model, else the original.
 */
export class LambdaEclipseWidget extends HTMLElement {
  /** The loaded engine, or null before `load()` finished. */
  readonly engine: Engine | null;
  /** The last result of `compute()`, or null. */
  readonly result: PriorResult | null;
  /** The variant `load()` asks for: the chooser's, else the `variant` attribute; undefined: the model itself. */
  readonly variant: string | undefined;
  /** Loads the model once (also started by the "Load the model" button or the `autoload` attribute). */
  load(): Promise<Engine>;
  /** Computes the embedding of the widget's prompt and subjects. */
  compute(): Promise<PriorResult>;
  /** Decodes the last result (computing one first if needed) on the `endpoint` and shows the image. */
  decode(): Promise<{ blob: Blob; seed: number; decodeMs: number }>;
  /** Decodes the last result (computing one first if needed) on this device with the `decoder` attribute's
   * decoder, with step progress and Cancel; rejects with an AbortError when cancelled. */
  decodeLocally(): Promise<LocalDecodeResult>;
  addEventListener<K extends keyof LambdaEclipseWidgetEventMap>(type: K, listener: (this: LambdaEclipseWidget, ev: LambdaEclipseWidgetEventMap[K]) => unknown, options?: boolean | AddEventListenerOptions): void;
  addEventListener<K extends keyof HTMLElementEventMap>(type: K, listener: (this: LambdaEclipseWidget, ev: HTMLElementEventMap[K]) => unknown, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof LambdaEclipseWidgetEventMap>(type: K, listener: (this: LambdaEclipseWidget, ev: LambdaEclipseWidgetEventMap[K]) => unknown, options?: boolean | EventListenerOptions): void;
  removeEventListener<K extends keyof HTMLElementEventMap>(type: K, listener: (this: LambdaEclipseWidget, ev: HTMLElementEventMap[K]) => unknown, options?: boolean | EventListenerOptions): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject, options?: boolean | EventListenerOptions): void;
}

export interface LocalDecodeResult {
  blob: Blob;
  seed: number;
  decodeMs: number;
  steps: number;
  msPerStep: number;
  local: true;
}

export interface LambdaEclipseWidgetEventMap {
  /** `variant`: the variant loaded, or null when none was asked for. */
  'lambda-ready': CustomEvent<EngineDescription & { variant: string | null }>;
  'lambda-result': CustomEvent<PriorResult>;
  'lambda-decoded': CustomEvent<{ blob: Blob; seed: number; decodeMs: number } | LocalDecodeResult>;
  'lambda-error': CustomEvent<{ message: string }>;
}

declare global {
  interface HTMLElementTagNameMap {
    'lambda-eclipse-widget': LambdaEclipseWidget;
  }
}
