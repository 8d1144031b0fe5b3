// What computes: the WebGPU adapter, a visible notice when the engine runs on the CPU (no WebGPU here, or
// forced), and a switch to force the CPU (or WebGPU). The backend is chosen when the model loads, so switching
// reloads the page with ?backend=.

/** Fills `facts` (a <dl>) and `notice`, and wires `select`. `engine`: a loaded engine. */
export async function showBackend({ engine, facts, notice, select }) {
  const params = new URLSearchParams(location.search);
  select.value = params.get('backend') || 'auto';
  select.onchange = () => {
    params.set('backend', select.value);
    location.search = params.toString();
  };
  const info = await engine.describe();
  if (info.adapter) addFact(facts, 'WebGPU adapter', info.adapter);
  if (info.backend === 'cpu') {
    notice.hidden = false;
    notice.textContent = select.value === 'cpu'
      ? 'Computing on the CPU (WebAssembly), as chosen: slower than WebGPU.'
      : `WebGPU is not available here (${info.fallbackReason || 'no adapter'}): computing on the CPU (WebAssembly) instead, which is slower.`;
  } else {
    notice.hidden = true;
  }
  return info;
}

function addFact(list, k, v) {
  const dt = document.createElement('dt');
  dt.textContent = k;
  const dd = document.createElement('dd');
  dd.textContent = v;
  list.append(dt, dd);
}
