// Collects samples per metric and registry and turns them into report rows.
import { evaluateTarget, targetFor, type TargetResult } from './targets.js';
import { summarize, type Summary } from './stats.js';
import type { MetricDef, RegistryName } from './types.js';

export interface Row {
  metric: MetricDef;
  ferry?: Summary;
  reference?: Summary;
  errors: Partial<Record<RegistryName, string>>;
  /** Oriented so that > 1 means Ferry is better; undefined if either side is missing. */
  ratio?: number;
  target?: TargetResult;
}

export class ResultStore {
  /** Which storage both registries run on: S3 runs are judged by issue 12's goals (targets.ts). */
  constructor(private readonly storage: 'filesystem' | 's3' = 'filesystem') {}

  private readonly metrics = new Map<string, MetricDef>();
  private readonly samples = new Map<string, Partial<Record<RegistryName, number[]>>>();
  private readonly errors = new Map<string, Partial<Record<RegistryName, string>>>();
  private readonly noteSet = new Set<string>();

  define(metrics: readonly MetricDef[]): void {
    for (const m of metrics) if (!this.metrics.has(m.id)) this.metrics.set(m.id, m);
  }

  record(metricId: string, reg: RegistryName, value: number): void {
    const bySide = this.samples.get(metricId) ?? {};
    (bySide[reg] ??= []).push(value);
    this.samples.set(metricId, bySide);
  }

  fail(metricIds: readonly string[], reg: RegistryName, message: string): void {
    for (const id of metricIds) {
      const bySide = this.errors.get(id) ?? {};
      bySide[reg] ??= message;
      this.errors.set(id, bySide);
    }
  }

  note(text: string): void {
    this.noteSet.add(text);
  }

  get notes(): string[] {
    return [...this.noteSet];
  }

  get failed(): boolean {
    return this.errors.size > 0;
  }

  /** `metadata`: which mode's targets apply (bench/targets.ts). */
  rows(metadata: 'sqlite' | 'postgres' = 'sqlite'): Row[] {
    return [...this.metrics.values()].map((metric) => {
      const s = this.samples.get(metric.id) ?? {};
      const ferry = s.ferry?.length ? summarize(s.ferry) : undefined;
      const reference = s.reference?.length ? summarize(s.reference) : undefined;
      let ratio: number | undefined;
      if (ferry && reference) {
        ratio = metric.better === 'higher' ? ferry.median / reference.median : reference.median / ferry.median;
      }
      const target = targetFor(metric.id, this.storage, metadata);
      return {
        metric,
        ferry,
        reference,
        errors: this.errors.get(metric.id) ?? {},
        ratio,
        target: target ? evaluateTarget(target, ratio, ferry) : undefined,
      };
    });
  }
}
