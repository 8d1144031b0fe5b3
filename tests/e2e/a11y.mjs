// Accessibility checks of the e2e tests: axe-core (npm `axe-core`) injected into the page under test.
import { createRequire } from 'node:module';

const AXE = createRequire(import.meta.url).resolve('axe-core/axe.min.js');

/** Runs axe-core on the page (open shadow roots included): `{ serious, all }` — the violations of impact
 * serious or critical, summarised as `rule (impact): target, …`, and every violation. */
export async function axeViolations(page, { include } = {}) {
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) await page.addScriptTag({ path: AXE });
  const violations = await page.evaluate(async (sel) => {
    const r = await window.axe.run(sel ? { include: [sel] } : document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, targets: v.nodes.map((n) => n.target.join(' ')).slice(0, 6), count: v.nodes.length }));
  }, include ?? null);
  const serious = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.id} (${v.impact}, ${v.count}×): ${v.help} — ${v.targets.join(', ')}`);
  return { serious, all: violations };
}
