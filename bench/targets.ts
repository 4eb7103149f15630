// The goals from the issue. Informational only: a missed target never fails the run.
import type { Summary } from './stats.js';

export type Target =
  | { kind: 'ratio'; min: number } // ratio oriented so that >1 means Ferry is better
  | { kind: 'ceiling'; max: number; unit: string } // absolute bound on Ferry's value
  | { kind: 'relative'; max: number }; // Ferry's value at most `max` times the reference's (lower-is-better rows)

/**
 * Keyed by metric id. Size- and count-specific goals only attach to rows of
 * that size/count, so fast mode (1 MiB, 200 tags) shows fewer targets rather
 * than judging small runs by large-run goals.
 */
const TARGETS: ReadonlyArray<[RegExp, Target]> = [
  // The same targets whichever client measures (autocannon or wrk).
  [/^(manifest\.get\.tag|wrk\.manifest\.tag)\.rps$/, { kind: 'ratio', min: 15 }],
  [/^wrk\.tags\.rps$/, { kind: 'ratio', min: 20 }],
  [/^pull\.100MiB\.c\d+\.mibps$/, { kind: 'ratio', min: 1 }],
  [/^push\.mono\.100MiB\.c\d+\.mibps$/, { kind: 'ratio', min: 2 }],
  // First page and the client's full walk (no n, follow Link). The walk with
  // n=1000 on every request (list.*.walk-n1000.*) is shown without a target:
  // clients do not send n, and the reference ignores n on tag lists anyway.
  [/^list\.(tags|catalog)\.(first|walk)\.n10000\.ms$/, { kind: 'ratio', min: 20 }],
  // Mirror rows (workloads/mirror.ts): the ferry column through the mirror, the reference column the direct pull it is compared with.
  [/^mirror\.(cold|warm)\./, { kind: 'ratio', min: 0.9 }],
  // At most 1.5x the reference's peak in the same run.
  [/^rss\.mix\.peak$/, { kind: 'relative', max: 1.5 }],
];

/**
 * `--metadata postgres`: Ferry on PostgreSQL (ferry column) against Ferry on
 * SQLite (reference column), issue 13's targets. The filesystem-mode goals
 * against distribution mean nothing there.
 */
const POSTGRES_TARGETS: ReadonlyArray<[RegExp, Target]> = [
  [/^(manifest\.get\.tag|wrk\.manifest\.tag)\.rps$/, { kind: 'ratio', min: 0.8 }],
  [/^wrk\.tags\.rps$/, { kind: 'ratio', min: 0.8 }],
  [/^list\.(tags|catalog)\.first\.n\d+\.ms$/, { kind: 'ratio', min: 0.8 }],
  [/^load\.tags\.n\d+\.s$/, { kind: 'ratio', min: 0.5 }],
];

/**
 * `--storage s3` (issue 12): both registries on one RGW, so a row's goal is
 * Ferry on S3 against distribution's s3 driver. These come before TARGETS;
 * rows they do not name keep the filesystem goals (pull >= 1x, the mirror).
 * Tag lists take any tag count: loading 10,000 tags into distribution on S3
 * takes tens of minutes, so S3 runs list fewer.
 */
const S3_TARGETS: ReadonlyArray<[RegExp, Target]> = [
  [/^(manifest\.get\.(tag|digest)|wrk\.manifest\.tag)\.rps$/, { kind: 'ratio', min: 20 }],
  [/^wrk\.tags\.rps$/, { kind: 'ratio', min: 50 }],
  [/^list\.tags\.(first|walk)\.n\d+\.ms$/, { kind: 'ratio', min: 50 }],
  [/^push\.mono\.100MiB\.c\d+\.mibps$/, { kind: 'ratio', min: 5 }],
  [/^rss\.mix\.peak$/, { kind: 'ceiling', max: 256, unit: 'MiB' }],
];

export function targetFor(
  metricId: string,
  storage: 'filesystem' | 's3' = 'filesystem',
  metadata: 'sqlite' | 'postgres' = 'sqlite',
): Target | undefined {
  const match = ([re]: [RegExp, Target]) => re.test(metricId);
  // PostgreSQL mode compares Ferry with Ferry: only its own goals apply.
  if (metadata === 'postgres') return POSTGRES_TARGETS.find(match)?.[1];
  return (storage === 's3' ? S3_TARGETS.find(match) : undefined)?.[1] ?? TARGETS.find(match)?.[1];
}

export interface TargetResult {
  text: string;
  /** undefined when it cannot be judged (registry missing or failed). */
  met?: boolean;
}

/**
 * Ratio targets compare medians. Ceilings judge Ferry's worst (max) sample:
 * a peak-memory bound that only holds "in the median run" is not a bound.
 */
export function evaluateTarget(target: Target, ratio: number | undefined, ferry: Summary | undefined): TargetResult {
  if (target.kind === 'ratio') {
    const text = `>= ${target.min}x`;
    return ratio === undefined || !Number.isFinite(ratio) ? { text } : { text, met: ratio >= target.min };
  }
  if (target.kind === 'relative') {
    // The ratio of a lower-is-better row is reference / Ferry.
    const text = `<= ${target.max}x ref`;
    return ratio === undefined || !Number.isFinite(ratio) ? { text } : { text, met: 1 / ratio <= target.max };
  }
  const text = `<= ${target.max} ${target.unit}`;
  return ferry ? { text, met: ferry.max <= target.max } : { text };
}
