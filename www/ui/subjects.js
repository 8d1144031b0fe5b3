// Subject slots (1–4): a keyword of the prompt and its photo — from the file picker, dropped on the slot, or
// pasted. Each photo is checked at once exactly as the engine will decode it (in the tools worker), so a bad
// file is named before anything is computed. `bindKeywordCheck` highlights in the prompt the words each
// subject replaces and warns about keywords the prompt does not contain, by the engine's own tokenizer rule.
// Works in the page and inside a shadow root (the widget): it only touches the elements it is given.
import { inspectImage } from '../lib/lambda-eclipse.js';
import { withAdvice } from './advice.js';

export const MAX_SUBJECTS = 4;
/** One colour per slot: its card's edge, its keyword chip and its highlighted words (light: dark text on them). */
export const SUBJECT_COLORS = ['#ffe082', '#90caf9', '#c5e1a5', '#f48fb1'];

export const SUBJECTS_CSS = `
.subject { --subject-color: #ccc; display: grid; grid-template-columns: 72px minmax(0, 1fr) auto; gap: .35rem .75rem; align-items: center;
  margin: .5rem 0; padding: .6rem .7rem; background: var(--le-surface, #fff); border: 1px solid var(--le-border, #ccc);
  border-left: 6px solid var(--subject-color); border-radius: var(--le-radius-sm, 8px); }
.subject.dragover { border-style: dashed; border-color: var(--le-accent, #5335c9); background: var(--le-accent-soft, #ebe7fc); }
.subject .drop { grid-row: 1 / span 2; width: 72px; height: 72px; border-radius: var(--le-radius-sm, 8px); cursor: pointer; position: relative;
  display: grid; place-items: center; background: var(--le-surface-2, #eee); border: 2px dashed var(--le-border, #ccc); overflow: hidden; box-sizing: border-box; }
.subject[data-image] .drop { border-style: solid; }
.subject .thumb { width: 100%; height: 100%; object-fit: cover; display: block; }
.subject .thumb-empty { font-size: 1.6rem; color: var(--le-muted, #555); line-height: 1; }
.subject[data-image="ok"] .thumb-empty, .subject[data-image="checking"] .thumb-empty { display: none; }
.subject .head { display: flex; gap: .5rem; align-items: center; min-width: 0; }
.subject .keyword { min-width: 0; flex: 1 1 8rem; font-weight: 600; color: var(--le-mark-text, #15171d);
  background: color-mix(in srgb, var(--subject-color) 55%, #fff); border-color: transparent; border-radius: 999px; padding-inline: .8rem; }
.subject .keyword::placeholder { color: #3d4250; font-weight: 400; }
.subject .photo-row { display: flex; flex-wrap: wrap; gap: .25rem .6rem; align-items: center; font-size: .88rem; color: var(--le-muted, #555); min-width: 0; }
.subject .choose { min-height: 2.2rem; padding: .25rem .7rem; }
.subject .remove { grid-column: 3; grid-row: 1; }
.subject .drop-hint { font-size: .85rem; }
.subject[data-image="ok"] .drop-hint { display: none; }
.subject .notes { grid-column: 1 / -1; font-size: .88rem; }
.subject .notes:empty, .subject .notes:not(:has(.note:not(:empty))) { display: none; }
.subject .note { display: block; }
.subject .note.warn { color: var(--le-warn, #6e4300); }
.subject .note.error { color: var(--le-error, #9c1419); font-weight: 600; }
.subject .note.ok { color: var(--le-ok, #17692f); }
.prompt-preview { margin: .35rem 0 .5rem; padding: .45rem .7rem; background: var(--le-surface-2, #f3f3f3); border-radius: var(--le-radius-sm, 8px);
  font-size: .98em; white-space: pre-wrap; word-break: break-word; min-height: 1.5em; }
.prompt-preview mark { border-radius: 4px; padding: 0 .15em; color: var(--le-mark-text, #15171d); font-weight: 600; }
.keyword-warnings { margin: .25rem 0; padding-left: 1.2rem; color: var(--le-warn, #6e4300); }
.keyword-warnings:empty { display: none; }
.subjects { border: none; padding: 0; margin: .75rem 0 0; min-width: 0; }
.subjects > legend { font-weight: 600; padding: 0; }
.visually-hidden { position: absolute !important; width: 1px; height: 1px; padding: 0; margin: -1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; border: 0; }
@media (max-width: 420px) {
  .subject { grid-template-columns: 56px minmax(0, 1fr) auto; gap: .3rem .5rem; padding: .5rem; }
  .subject .drop { width: 56px; height: 56px; }
}
`;

let uid = 0;

/** The slots inside `container` (a fieldset or div). Fires 'change' when a keyword, photo or slot changes. */
export class SubjectList extends EventTarget {
  constructor(container) {
    super();
    this.container = container;
    // Files dropped beside the slots fill empty slots.
    container.addEventListener('dragover', (e) => { if (hasFiles(e)) e.preventDefault(); });
    container.addEventListener('drop', (e) => {
      if (!hasFiles(e)) return;
      e.preventDefault();
      this.placeFiles([...e.dataTransfer.files], null);
    });
  }

  /** The slot elements, in order. */
  get slots() { return [...this.container.querySelectorAll(':scope > .subject')]; }

  /** Adds a slot (at most MAX_SUBJECTS); returns it, or null when full. */
  add(keyword = '') {
    if (this.slots.length >= MAX_SUBJECTS) return null;
    const slot = document.createElement('div');
    slot.className = 'subject';
    const id = `subject-image-${++uid}`;
    slot.setAttribute('role', 'group');
    slot.innerHTML = `<label class="drop" for="${id}" title="Choose, drop or paste a photo">
        <img class="thumb" alt="" hidden><span class="thumb-empty" aria-hidden="true">+</span>
        <input class="image visually-hidden" id="${id}" type="file" accept="image/*" tabindex="-1">
      </label>
      <div class="head"><input class="keyword" placeholder="keyword in the prompt" autocomplete="off"></div>
      <div class="photo-row"><button type="button" class="choose">Choose a photo</button><span class="drop-hint">or drop / paste one here</span></div>
      <button type="button" class="remove">Remove</button>
      <div class="notes" role="status"><span class="note kw"></span><span class="note img"></span></div>`;
    // Keyboard users open the file picker with this button (the drop area is a mouse target).
    slot.querySelector('.choose').addEventListener('click', () => slot.querySelector('.image').click());
    slot.querySelector('.keyword').value = keyword;
    slot.querySelector('.keyword').addEventListener('input', () => this.#changed());
    slot.querySelector('.image').addEventListener('change', (e) => {
      const file = e.target.files[0];
      if (file) this.setImage(slot, file, { fromInput: true }); else this.clearImage(slot);
    });
    slot.querySelector('.remove').onclick = () => {
      const at = this.slots.indexOf(slot);
      this.clearImage(slot);
      slot.remove();
      this.#relabel();
      this.#changed();
      // Keep the keyboard focus in the list: on the next slot's keyword (or the previous one's).
      this.slots[Math.min(at, this.slots.length - 1)]?.querySelector('.keyword').focus();
    };
    slot.addEventListener('dragover', (e) => { if (hasFiles(e)) { e.preventDefault(); slot.classList.add('dragover'); } });
    slot.addEventListener('dragleave', () => slot.classList.remove('dragover'));
    slot.addEventListener('drop', (e) => {
      slot.classList.remove('dragover');
      if (!hasFiles(e)) return;
      e.preventDefault();
      e.stopPropagation();
      this.placeFiles([...e.dataTransfer.files], slot);
    });
    this.container.append(slot);
    this.#relabel();
    this.#changed();
    return slot;
  }

  /** Replaces every slot by `subjects` ([{ keyword, file }], a file may be null); resolves once the photos are checked. */
  async setSubjects(subjects) {
    for (const slot of this.slots) { this.clearImage(slot); slot.remove(); }
    const checks = subjects.slice(0, MAX_SUBJECTS).map(({ keyword, file }) => {
      const slot = this.add(keyword);
      return file ? this.setImage(slot, file) : null;
    });
    if (!subjects.length) this.#changed();
    await Promise.all(checks);
  }

  /** Puts files into `slot` (then into the next empty slots, adding slots up to the maximum). */
  placeFiles(files, slot) {
    files.forEach((file, k) => {
      const target = k === 0 && slot ? slot : this.slots.find((s) => !s.file) ?? this.add();
      if (target) this.setImage(target, file); // setImage marks the slot filled at once
    });
  }

  /**
   * Routes pasted files (Ctrl+V of an image) to the slot that has the focus, else to the first slot without
   * a photo (adding one when all are full). `target`: the document, or the widget's host.
   */
  attachPaste(target) {
    target.addEventListener('paste', (e) => {
      const files = [...(e.clipboardData?.files ?? [])];
      if (!files.length) return; // text pastes go where they were meant to
      const path = e.composedPath ? e.composedPath() : [e.target];
      const slot = path.find((n) => n instanceof HTMLElement && n.classList.contains('subject') && this.slots.includes(n));
      e.preventDefault();
      this.placeFiles(files, slot ?? null);
    });
  }

  /** Sets a slot's photo and checks it as the engine will decode it. */
  async setImage(slot, file, { fromInput = false } = {}) {
    this.clearImage(slot, { keepInput: fromInput });
    slot.file = file;
    const input = slot.querySelector('.image');
    if (!fromInput) {
      try { const dt = new DataTransfer(); dt.items.add(file); input.files = dt.files; } catch { /* display only */ }
    }
    const token = (slot.checkToken = {});
    let done;
    slot.checked = new Promise((r) => { done = r; });
    try {
      await this.#check(slot, file, token);
    } finally {
      done();
    }
  }

  async #check(slot, file, token) {
    slot.dataset.image = 'checking';
    this.#note(slot, 'img', `Checking ${file.name || 'the photo'}…`, '');
    this.#changed();
    try {
      const { width, height } = await inspectImage(file);
      if (slot.checkToken !== token) return;
      slot.dataset.image = 'ok';
      const img = slot.querySelector('.thumb');
      img.src = slot.objectUrl = URL.createObjectURL(file);
      img.alt = file.name || 'subject photo';
      img.hidden = false;
      this.#note(slot, 'img', `${file.name || 'photo'}: ${width}×${height}`, 'ok');
    } catch (e) {
      if (slot.checkToken !== token) return;
      slot.dataset.image = 'error';
      this.#note(slot, 'img', `${file.name || 'This file'} cannot be used as a photo: ${withAdvice(e.message)}`, 'error');
    }
    this.#changed();
  }

  clearImage(slot, { keepInput = false } = {}) {
    if (slot.objectUrl) URL.revokeObjectURL(slot.objectUrl);
    slot.objectUrl = null;
    slot.file = null;
    slot.checkToken = null;
    delete slot.dataset.image;
    const img = slot.querySelector('.thumb');
    img.hidden = true;
    img.removeAttribute('src');
    if (!keepInput) slot.querySelector('.image').value = '';
    this.#note(slot, 'img', '', '');
  }

  /** Resolves when every photo has been checked. */
  async settled() { await Promise.all(this.slots.map((s) => s.checked)); }

  /**
   * The request's subjects: `{ subjects: [{ keyword, image }], slotIndex: [...], problems: [string] }`. Slots
   * without a photo are left out; a photo without a keyword is a problem.
   */
  collect() {
    const subjects = [], slotIndex = [], problems = [];
    this.slots.forEach((slot, i) => {
      const keyword = slot.querySelector('.keyword').value.trim();
      if (!slot.file) return;
      if (!keyword) { problems.push(`Subject ${i + 1} has a photo but no keyword: type the word of the prompt it shows.`); return; }
      subjects.push({ keyword, image: slot.file });
      slotIndex.push(i);
    });
    return { subjects, slotIndex, problems };
  }

  /** Keywords of all slots (empty strings included), in slot order. */
  keywords() { return this.slots.map((s) => s.querySelector('.keyword').value.trim()); }

  /** Shows a keyword note on slot `i` ('' clears it). */
  setKeywordNote(i, text, kind = 'warn') { const slot = this.slots[i]; if (slot) this.#note(slot, 'kw', text, kind); }

  #note(slot, which, text, kind) {
    const el = slot.querySelector(`.note.${which}`);
    el.textContent = text;
    el.className = `note ${which}${kind ? ` ${kind}` : ''}`;
  }

  #relabel() {
    this.slots.forEach((slot, i) => {
      slot.style.setProperty('--subject-color', SUBJECT_COLORS[i]);
      slot.dataset.index = String(i);
      slot.setAttribute('aria-label', `Subject ${i + 1}`);
      slot.querySelector('.keyword').setAttribute('aria-label', `Subject ${i + 1} keyword`);
      slot.querySelector('.image').setAttribute('aria-label', `Subject ${i + 1} photo`);
      slot.querySelector('.choose').setAttribute('aria-label', `Choose a photo for subject ${i + 1}`);
      slot.querySelector('.remove').setAttribute('aria-label', `Remove subject ${i + 1}`);
    });
  }

  #changed() { this.dispatchEvent(new Event('change')); }
}

function hasFiles(e) { return [...(e.dataTransfer?.types ?? [])].includes('Files'); }

/**
 * Renders `prompt` into `el` with the words each subject replaces marked in its colour. `matches[j]` belongs
 * to slot `slotOf[j]`; where subjects share words the later one wins, as in the pipeline.
 */
export function renderHighlight(el, prompt, matches, slotOf = matches.map((_, j) => j)) {
  const owner = new Array(prompt.length).fill(-1);
  matches.forEach((m, j) => { for (const [s, e] of m?.spans ?? []) for (let i = s; i < e && i < prompt.length; i++) owner[i] = slotOf[j]; });
  const parts = [];
  let i = 0;
  while (i < prompt.length) {
    let k = i;
    while (k < prompt.length && owner[k] === owner[i]) k++;
    const text = prompt.slice(i, k);
    if (owner[i] < 0) parts.push(document.createTextNode(text));
    else {
      const mark = document.createElement('mark');
      mark.textContent = text;
      mark.dataset.subject = String(owner[i] + 1);
      mark.style.background = SUBJECT_COLORS[owner[i]];
      mark.title = `replaced by subject ${owner[i] + 1}'s photo`;
      parts.push(mark);
    }
    i = k;
  }
  el.replaceChildren(...parts);
}

/**
 * Keeps `preview` (the prompt with highlighted keywords) and `warnings` (a <ul> of keywords missing from the
 * prompt) up to date as the prompt and the keywords change, using `engine.matchKeywords` (the tokenizer's
 * rule, the one the pipeline applies). Returns `update()` (a Promise of the current missing-keyword list).
 */
export function bindKeywordCheck({ engine, prompt, list, preview, warnings }) {
  let timer = null, latest = 0;
  const run = async () => {
    const seq = ++latest;
    const text = prompt.value;
    const keywords = list.keywords();
    const used = keywords.map((k, i) => (k ? i : -1)).filter((i) => i >= 0);
    let matches;
    try {
      matches = used.length ? await engine.matchKeywords(text, used.map((i) => keywords[i])) : [];
    } catch (e) {
      if (seq === latest) { warnings.replaceChildren(li(`Cannot check the keywords: ${e.message}`)); }
      return [];
    }
    if (seq !== latest) return null; // a newer check is under way
    renderHighlight(preview, text, matches, used);
    const missing = [];
    keywords.forEach((k, i) => list.setKeywordNote(i, ''));
    matches.forEach((m, j) => {
      const i = used[j];
      if (m.empty) { list.setKeywordNote(i, `“${keywords[i]}” has no word the tokenizer keeps: type a word of the prompt.`, 'error'); missing.push(i); return; }
      if (!m.found) {
        const msg = `Keyword “${keywords[i]}” is not in the prompt: subject ${i + 1}'s photo will not be used.`;
        list.setKeywordNote(i, msg, 'warn');
        missing.push(i);
      }
    });
    warnings.replaceChildren(...missing.map((i) => li(`Subject ${i + 1}: keyword “${keywords[i]}” is not in the prompt (${matches[used.indexOf(i)].empty ? 'it has no tokens' : 'its photo will not be used'}).`)));
    preview.dataset.checked = String(seq);
    return missing;
  };
  const update = () => { clearTimeout(timer); return run(); };
  const soon = () => { clearTimeout(timer); timer = setTimeout(update, 120); };
  prompt.addEventListener('input', soon);
  list.addEventListener('change', soon);
  update();
  return update;
}

function li(text) { return Object.assign(document.createElement('li'), { textContent: text }); }
