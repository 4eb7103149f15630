// Writes the machine-readable results next to the human table.
import fs from 'node:fs/promises';
import path from 'node:path';
import type { RunInfo } from './report.js';
import type { Row } from './results.js';

export async function writeResultsJson(file: string, info: RunInfo, rows: readonly Row[], notes: readonly string[]): Promise<void> {
  const doc = {
    info,
    rows: rows.map((r) => ({
      id: r.metric.id,
      label: r.metric.label.trim(),
      unit: r.metric.unit,
      better: r.metric.better,
      ferry: r.ferry ?? null,
      reference: r.reference ?? null,
      errors: r.errors,
      ratio: r.ratio ?? null,
      target: r.target ?? null,
    })),
    notes,
  };
  await fs.mkdir(path.dirname(file), { recursive: true });
  await fs.writeFile(file, `${JSON.stringify(doc, null, 2)}\n`);
}
