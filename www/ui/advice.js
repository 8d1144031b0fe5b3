// What to do next, in plain words, after an error message of the engine or the loader. The engine's message
// stays as it is (it names the file and what is wrong); the advice is appended. Shared by the page and the widget.

const ADVICE = [
  [/more than the \d+×\d+ \/ \d+ MiB decode limit|edge detection takes at most/, 'Try a smaller copy of the image: 2048 pixels a side is plenty (photos are reduced to 224 pixels anyway).'],
  [/unsupported format/, 'Use a PNG, JPEG, WebP, GIF or BMP image.'],
  [/corrupt|truncated|damaged/, 'The file looks damaged: download or export it again, then retry.'],
  [/\(CORS\)/, 'The server does not let this page read its files: serve the model with CORS headers (Access-Control-Allow-Origin), or from this page’s own address.'],
  [/not found|\b404\b/, 'Check the address of the model (its folders tokenizer/, text_encoder/, … must be under it).'],
  [/network error|download interrupted|cannot reach/, 'Check your connection, then try again: what was already downloaded is kept.'],
  [/access denied|\b40[13]\b|refused the token/, 'The server refused access: check the token or the address.'],
  [/out of memory|crashed/, 'Close other tabs or choose a smaller picture size, then try again.'],
  [/per-buffer limit/, 'Choose a smaller picture size in Picture settings.'],
];

/** The advice for `message`, or ''. */
export function adviceFor(message) {
  for (const [pattern, advice] of ADVICE) if (pattern.test(message)) return advice;
  return '';
}

/** `message` with a full stop and the advice appended ("… decode limit. Try a smaller copy …"). */
export function withAdvice(message) {
  const advice = adviceFor(message);
  if (!advice) return message;
  return `${message.replace(/[.\s]+$/, '')}. ${advice}`;
}
