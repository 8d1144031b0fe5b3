// One-click examples with the bundled photos (../shared/assets/images/, served at /shared/assets/images/ by
// the dev server): a click fills in the prompt, the subjects (and the edge image) and makes the picture with
// whatever model is loaded — the tiny test model with ?model=, the real one from the hub by default.

/** Where the photos are, relative to the page (&examples=URL overrides it). */
export const EXAMPLE_IMAGES = 'shared/assets/images/';

export const EXAMPLES = Object.freeze([
  { id: 'cat-coffee', title: 'A cat with a cup of coffee', prompt: 'a cat next to a cup of coffee on a wooden table', subjects: [['cat', 'chelsea.png'], ['cup', 'coffee.png']] },
  { id: 'rider', title: 'A woman riding a horse on the beach', prompt: 'a woman riding a horse on a beach at sunset', subjects: [['woman', 'grace_hopper.jpg'], ['horse', 'horse.png']] },
  { id: 'astronaut', title: 'An astronaut on a motorcycle', prompt: 'an astronaut on a motorcycle in the desert', subjects: [['astronaut', 'astronaut.png'], ['motorcycle', 'motorcycle_left.png']] },
  { id: 'rocket-edges', title: 'A rocket, following a horse’s outline', prompt: 'a rocket made of glass at night', subjects: [['rocket', 'rocket.jpg']], control: 'horse.png' },
]);

/** The photos of `example` as Files: `{ subjects: [{ keyword, file }], control }`. Rejects naming a photo that is not served. */
export async function exampleFiles(example, base) {
  const get = async (name) => {
    const url = new URL(name, base);
    let response;
    try { response = await fetch(url); } catch (e) { throw new Error(`the example photo ${url} could not be fetched (${e.message})`); }
    if (!response.ok) throw new Error(`the example photo ${url} is not served here (HTTP ${response.status})`);
    return new File([await response.blob()], name, { type: response.headers.get('content-type') || '' });
  };
  const subjects = await Promise.all(example.subjects.map(async ([keyword, name]) => ({ keyword, file: await get(name) })));
  return { subjects, control: example.control ? await get(example.control) : null };
}

/** Renders the example buttons into `list` (a <ul>); `onRun(example)` on a click. */
export function renderExamples(list, base, onRun) {
  list.replaceChildren(...EXAMPLES.map((ex) => {
    const li = document.createElement('li');
    const button = Object.assign(document.createElement('button'), { type: 'button', className: 'example' });
    button.dataset.example = ex.id;
    const thumbs = Object.assign(document.createElement('span'), { className: 'thumbs' });
    for (const [, name] of ex.subjects) thumbs.append(Object.assign(document.createElement('img'), { src: new URL(name, base).href, alt: '', loading: 'lazy' }));
    const words = ex.subjects.map(([k]) => k).join(' and ');
    button.append(thumbs, Object.assign(document.createElement('span'), { className: 'title', textContent: ex.title }));
    button.setAttribute('aria-label', `Example: ${ex.title} (“${ex.prompt}”, with photos for ${words}${ex.control ? ', and an edge image' : ''})`);
    button.addEventListener('click', () => onRun(ex, button));
    li.append(button);
    return li;
  }));
}
