// Renders the results table (plain text, fixed-width) for the terminal.
import { fmt, fmtRatio } from './format.js';
import type { Row } from './results.js';
import type { Summary } from './stats.js';
import type { RegistryName } from './types.js';

export interface RunInfo {
  mode: 'fast' | 'full';
  /** Blob storage of both registries (--storage). */
  storage: 'filesystem' | 's3';
  /** --defaults: both registries log as installed (access logs on). */
  shippedDefaults: boolean;
  repeats: number;
  cores: number;
  cpuModel: string;
  node: string;
  platform: string;
  referenceVersion: string;
  ferryArgs: string[];
  registries: RegistryName[];
  startedAt: string;
  durationSeconds: number;
  /** 1-minute load average when the run started and ended: other work on the box skews everything. */
  loadAverage: { start: number; end: number };
}

function cell(s: Summary | undefined, error: string | undefined): string {
  if (error) return 'ERROR';
  if (!s) return '-';
  if (s.samples.length === 1) return fmt(s.median);
  return `${fmt(s.median)} (${fmt(s.min)}-${fmt(s.max)})`;
}

function table(header: string[], body: string[][], rightAligned: Set<number>): string {
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => r[i].length)));
  const line = (r: string[]): string =>
    r.map((c, i) => (rightAligned.has(i) ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ').trimEnd();
  const sep = widths.map((w) => '-'.repeat(w)).join('  ');
  return [line(header), sep, ...body.map((r) => (r[0] === '' ? '' : line(r)))].join('\n');
}

export function renderReport(info: RunInfo, rows: readonly Row[], notes: readonly string[]): string {
  const out: string[] = [];
  out.push(`Ferry vs reference registry (${info.referenceVersion})`);
  out.push(
    `mode ${info.mode}, storage ${info.storage}, ` +
      `${info.shippedDefaults ? 'shipped defaults (access logs on)' : 'quiet logging (access logs off)'}, ${info.repeats} repeat${info.repeats > 1 ? 's' : ''} per workload, ` +
      `registries: ${info.registries.join(', ')}${info.ferryArgs.length ? `, ferry args: ${info.ferryArgs.join(' ')}` : ''}`,
  );
  out.push(`machine: ${info.cores} cores (${info.cpuModel}), Node ${info.node}, ${info.platform}`);
  out.push(
    `NOTE: the load generator shares these ${info.cores} cores with both servers; absolute numbers are ` +
      'lower bounds and large ratios are compressed when the client saturates first.',
  );
  const busiest = Math.max(info.loadAverage.start, info.loadAverage.end);
  out.push(
    `load average (1 min) at start ${fmt(info.loadAverage.start)}, at end ${fmt(info.loadAverage.end)}` +
      (info.loadAverage.start > info.cores * 0.25
        ? ` -- WARNING: the machine was busy before the run started (peak seen ${fmt(busiest)}); treat numbers with suspicion`
        : ''),
  );
  out.push(
    'Cells: median (min-max) over repeats. Ratio > 1 means Ferry is better (Ferry/reference for ' +
      'throughput, reference/Ferry for times and memory).',
  );
  out.push('');

  const body: string[][] = [];
  let lastGroup = '';
  for (const r of rows) {
    const group = r.metric.id.split('.')[0];
    if (lastGroup && group !== lastGroup) body.push(['', '', '', '', '', '', '']);
    lastGroup = group;
    body.push([
      r.metric.label,
      r.metric.unit,
      cell(r.ferry, r.errors.ferry),
      cell(r.reference, r.errors.reference),
      fmtRatio(r.ratio),
      r.target?.text ?? '',
      r.target ? (r.target.met === undefined ? 'n/a' : r.target.met ? 'met' : 'MISSED') : '',
    ]);
  }
  out.push(table(['workload', 'unit', 'ferry', 'reference', 'ratio', 'target', ''], body, new Set([2, 3, 4])));

  const errors = rows.flatMap((r) =>
    (Object.entries(r.errors) as Array<[RegistryName, string]>).map(([reg, e]) => `${reg}, ${r.metric.label.trim()}: ${e}`),
  );
  const uniqueErrors = [...new Set(errors)];
  if (uniqueErrors.length > 0) {
    out.push('', 'Errors:');
    for (const e of uniqueErrors) out.push(`  - ${e.split('\n').join('\n    ')}`);
  }
  if (notes.length > 0) {
    out.push('', 'Notes:');
    for (const n of notes) out.push(`  - ${n}`);
  }
  out.push('', `finished in ${fmt(info.durationSeconds)} s`);
  return out.join('\n');
}
