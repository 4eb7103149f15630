// Runs cases against the registries, alternating registries within each
// repeat (ferry, reference, ferry, reference, ...) so slow drifts of the
// machine (thermal, page cache, background jobs) hit both sides alike.
import { interrupted } from './cleanup.js';
import { errorMessage, fmt } from './format.js';
import type { Registry } from './registry.js';
import { assertAlive } from './registry.js';
import type { ResultStore } from './results.js';
import type { BenchCase } from './workloads/case.js';

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

/** Marks the registry broken if its process died, so later cases skip it quickly. */
function checkAlive(reg: Registry): void {
  try {
    assertAlive(reg);
  } catch (err) {
    reg.broken ??= errorMessage(err);
  }
}

export async function runCases(
  cases: readonly BenchCase[],
  registries: readonly Registry[],
  repeats: number,
  store: ResultStore,
): Promise<void> {
  for (const c of cases) {
    store.define(c.metrics);
    const ids = c.metrics.map((m) => m.id);
    const failed = new Set<string>();
    const caseRepeats = Math.max(repeats, c.minRepeats ?? 1);
    for (let rep = 0; rep < caseRepeats; rep++) {
      for (const reg of registries) {
        if (interrupted()) return;
        if (failed.has(reg.name)) continue;
        if (reg.broken) {
          store.fail(ids, reg.name, `skipped: ${reg.broken.split('\n')[0]}`);
          failed.add(reg.name);
          continue;
        }
        try {
          assertAlive(reg);
          if (rep === 0 && c.warmup) await c.warmup(reg);
          const sample = await c.run(reg, { note: (t) => store.note(t) });
          for (const id of ids) {
            const v = sample[id];
            if (v === undefined) throw new Error(`harness bug: case "${c.title}" returned no value for ${id}`);
            store.record(id, reg.name, v);
          }
          const summary = c.metrics.map((m) => `${fmt(sample[m.id])} ${m.unit}`).join(', ');
          log(`[${rep + 1}/${caseRepeats}] ${reg.name.padEnd(9)} ${c.title}: ${summary}`);
        } catch (err) {
          // Servers are being torn down under us; these failures are not findings.
          if (interrupted()) return;
          const msg = errorMessage(err);
          log(`[${rep + 1}/${caseRepeats}] ${reg.name.padEnd(9)} ${c.title}: FAILED: ${msg}`);
          store.fail(ids, reg.name, msg);
          failed.add(reg.name);
          checkAlive(reg);
        }
      }
    }
  }
}
