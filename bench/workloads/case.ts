// The unit the runner schedules: one workload configuration, measured
// against each registry once per repeat.
import type { WorkloadGroup } from '../options.js';
import type { Registry } from '../registry.js';
import type { MetricDef, Sample } from '../types.js';

/** What a run may tell the report besides numbers. */
export interface RunContext {
  /** Adds a caveat to the report (deduplicated), e.g. "reference ignores ?n= on tag lists". */
  note(text: string): void;
}

export interface BenchCase {
  group: WorkloadGroup;
  title: string;
  metrics: MetricDef[];
  /** Untimed, once per registry before its first measured repeat (warm caches, JIT, connections). */
  warmup?(reg: Registry): Promise<void>;
  /**
   * At least this many measured repeats, whatever the profile says (fast mode
   * runs one): a row that is a single ~1 s sample on a shared machine swings
   * 2-3x from run to run (docs/benchmarks-history.md, "Speed round 4").
   */
  minRepeats?: number;
  /** One measured run; returns a value for every metric id in `metrics`. */
  run(reg: Registry, ctx: RunContext): Promise<Sample>;
}
