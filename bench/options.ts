// Command-line parsing and the two size profiles (fast for CI, full for numbers).
import { Command, InvalidArgumentError } from 'commander';
import path from 'node:path';
import type { RegistryName } from './types.js';

export const MiB = 1024 * 1024;

/** Every knob a workload reads. Fast and full differ only in these values. */
export interface Profile {
  mode: 'fast' | 'full';
  repeats: number;
  /** Manifest GET/HEAD (autocannon). */
  manifestConnections: number;
  manifestSeconds: number;
  /** Untimed autocannon run before the first measured repeat of each case. */
  manifestWarmupSeconds: number;
  /** Blob pull: time-boxed, every worker finishes its in-flight pull. */
  pullSizes: number[];
  pullConcurrency: number[];
  pullSeconds: number;
  /** Blob push: count-boxed so digests can be computed before timing. */
  pushSizes: number[];
  pushConcurrency: number[];
  /** Bytes each push run should move at least (rounded up to whole pushes per client). */
  pushBytesPerRun: number;
  chunkSize: number;
  /** Tags in one repository and repositories in the catalog. */
  listCount: number;
  loadConcurrency: number;
  /** List operations repeat sequentially for this long (at least once). */
  listSeconds: number;
  mixSeconds: number;
  mixConcurrency: number;
  mixPushSize: number;
}

// Sized so both registries fit in ~15 minutes on a 2-core VM; the 10k-tag and
// 10k-repository loads alone take several minutes against the reference.
const FULL: Profile = {
  mode: 'full',
  repeats: 3,
  manifestConnections: 32,
  manifestSeconds: 4,
  manifestWarmupSeconds: 1,
  pullSizes: [1 * MiB, 10 * MiB, 100 * MiB],
  pullConcurrency: [1, 8],
  pullSeconds: 2,
  pushSizes: [1 * MiB, 10 * MiB, 100 * MiB],
  pushConcurrency: [1, 8],
  pushBytesPerRun: 64 * MiB,
  chunkSize: 5 * MiB,
  listCount: 10_000,
  loadConcurrency: 16,
  listSeconds: 2,
  mixSeconds: 8,
  mixConcurrency: 16,
  mixPushSize: 16 * 1024,
};

const FAST: Profile = {
  mode: 'fast',
  repeats: 1,
  manifestConnections: 32,
  manifestSeconds: 1,
  // One untimed second per registry before the one sample, as the wrk rows
  // have: a cold sample measured V8 compiling the hot path (and, with serving
  // threads, connections landing before every thread listens), not serving.
  manifestWarmupSeconds: 1,
  pullSizes: [1 * MiB],
  pullConcurrency: [1, 8],
  pullSeconds: 1,
  pushSizes: [1 * MiB],
  pushConcurrency: [1, 8],
  pushBytesPerRun: 16 * MiB,
  // Smaller than the 5 MiB of full mode so a 1 MiB blob still needs several
  // PATCHes: CI should exercise the Content-Range bookkeeping, not skip it.
  chunkSize: 256 * 1024,
  listCount: 200,
  loadConcurrency: 16,
  listSeconds: 0.5,
  mixSeconds: 2,
  mixConcurrency: 16,
  mixPushSize: 16 * 1024,
};

export const WORKLOAD_GROUPS = ['manifest', 'pull', 'push', 'list', 'mix', 'wrk', 'mirror'] as const;
export type WorkloadGroup = (typeof WORKLOAD_GROUPS)[number];

/** Where both registries keep blobs: local files, or one loopback Ceph RGW (scripts/s3-service.sh). */
export type StorageMode = 'filesystem' | 's3';

export interface Options {
  profile: Profile;
  storage: StorageMode;
  /** Both registries as installed (access logs on, info level) instead of quiet logging. */
  shippedDefaults: boolean;
  only?: RegistryName;
  ferryArgs: string[];
  ferryCli: string;
  referenceBin: string;
  groups: WorkloadGroup[];
  out: string;
  keepData: boolean;
  repoRoot: string;
  /** postgres: Ferry on PostgreSQL (ferry column) against Ferry on SQLite (reference column). */
  metadata: 'sqlite' | 'postgres';
  /** Another Ferry build in the reference column (before/after comparisons in one run). */
  baselineCli?: string;
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

function storageMode(value: string): StorageMode {
  if (value !== 'filesystem' && value !== 's3') throw new InvalidArgumentError('expected "filesystem" or "s3"');
  return value;
}

function metadataMode(value: string): 'sqlite' | 'postgres' {
  if (value !== 'sqlite' && value !== 'postgres') throw new InvalidArgumentError('expected "sqlite" or "postgres"');
  return value;
}

function registryName(value: string): RegistryName {
  if (value !== 'ferry' && value !== 'reference') throw new InvalidArgumentError('expected "ferry" or "reference"');
  return value;
}

function groupList(value: string): WorkloadGroup[] {
  const out: WorkloadGroup[] = [];
  for (const part of value.split(',').map((s) => s.trim()).filter(Boolean)) {
    const g = WORKLOAD_GROUPS.find((w) => w === part);
    if (!g) throw new InvalidArgumentError(`unknown workload group "${part}" (known: ${WORKLOAD_GROUPS.join(', ')})`);
    out.push(g);
  }
  return out;
}

/** Splits "--workers 2 --x 'a b'" the way a shell would, minus expansions. */
export function splitArgs(value: string): string[] {
  const out: string[] = [];
  const re = /"([^"]*)"|'([^']*)'|(\S+)/g;
  for (let m = re.exec(value); m; m = re.exec(value)) out.push(m[1] ?? m[2] ?? m[3] ?? '');
  return out;
}

export function parseOptions(argv: string[], repoRoot: string): Options {
  const program = new Command()
    .name('npm run bench --')
    .description('Benchmark Ferry against the reference registry (CNCF distribution)')
    .option('--fast', 'small sizes, one repeat: checks the harness works (CI)', false)
    .option('--defaults', 'shipped defaults: access logs on for both registries, as installed', false)
    .option('--only <registry>', 'run against one registry only: ferry | reference', registryName)
    .option('--storage <driver>', 'blob storage of both registries: filesystem | s3 (starts a loopback Ceph RGW)', storageMode, 'filesystem')
    .option('--ferry-args <args>', 'extra arguments for `ferry serve`, e.g. "--workers 2"', '')
    .option('--ferry-cli <path>', 'Ferry CLI entry point', path.join(repoRoot, 'dist/src/cli/main.js'))
    .option('--reference-bin <path>', 'reference registry binary', '/usr/bin/docker-registry')
    .option('--repeats <n>', 'repeats per workload (overrides the profile)', positiveInt)
    .option('--workloads <list>', `comma list of groups to run (${WORKLOAD_GROUPS.join(',')})`, groupList)
    .option('--out <file>', 'JSON results file', path.join(repoRoot, 'bench/results/latest.json'))
    .option('--keep-data', 'keep the temporary data directories and logs', false)
    .option('--metadata <driver>', 'postgres: Ferry on PostgreSQL against Ferry on SQLite (in place of the reference)', metadataMode, 'sqlite')
    .option('--baseline-cli <path>', 'run this Ferry CLI (another build) in place of the reference, for before/after comparisons')
    .allowExcessArguments(false)
    .parse(argv);

  const raw = program.opts<{
    fast: boolean;
    defaults: boolean;
    only?: RegistryName;
    storage: StorageMode;
    ferryArgs: string;
    ferryCli: string;
    referenceBin: string;
    repeats?: number;
    workloads?: WorkloadGroup[];
    out: string;
    keepData: boolean;
    metadata: 'sqlite' | 'postgres';
    baselineCli?: string;
  }>();

  const profile: Profile = { ...(raw.fast ? FAST : FULL) };
  if (raw.repeats !== undefined) profile.repeats = raw.repeats;

  return {
    profile,
    storage: raw.storage,
    shippedDefaults: raw.defaults,
    only: raw.only,
    ferryArgs: splitArgs(raw.ferryArgs),
    ferryCli: path.resolve(raw.ferryCli),
    referenceBin: raw.referenceBin,
    groups: raw.workloads && raw.workloads.length > 0 ? raw.workloads : [...WORKLOAD_GROUPS],
    out: path.resolve(raw.out),
    keepData: raw.keepData,
    repoRoot,
    metadata: raw.metadata,
    baselineCli: raw.baselineCli === undefined ? undefined : path.resolve(raw.baselineCli),
  };
}
