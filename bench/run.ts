// Entry point of `npm run bench`: start registries, load data, run workloads,
// print the table, write JSON, tear everything down. Exit code 0 means every
// registry started and every request behaved; performance never fails a run.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { installSignalHandlers, interrupted, runCleanup } from './cleanup.js';
import { planFixtures, loadCatalog, loadTags, seedBase, type FixturePlan } from './fixtures.js';
import { errorMessage, fmt } from './format.js';
import { MiB, parseOptions, type Options } from './options.js';
import type { Registry } from './registry.js';
import { renderReport, type RunInfo } from './report.js';
import { ResultStore } from './results.js';
import { writeResultsJson } from './results-file.js';
import { runCases } from './runner.js';
import { launchRegistries, makeWorkspace } from './servers/launch.js';
import type { MetricDef } from './types.js';
import type { BenchCase } from './workloads/case.js';
import { listCases } from './workloads/list.js';
import { manifestCases } from './workloads/manifest.js';
import { mixCase } from './workloads/mix.js';
import { pullCases } from './workloads/pull.js';
import { pushCases } from './workloads/push.js';
import { curlPullCases, wrkCases } from './workloads/c-clients.js';
import { missingTools } from './workloads/tools.js';
import { mirrorCases } from './workloads/mirror.js';

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

function referenceVersion(bin: string): string {
  const r = spawnSync(bin, ['--version'], { encoding: 'utf8' });
  const text = `${r.stdout ?? ''}`.trim();
  return text ? text.replace(/^\S+\s+/, 'distribution ') : `${bin} (version unknown)`;
}

function buildCases(options: Options, plan: FixturePlan, launched: { registries: Registry[]; workspace: string }): BenchCase[] {
  const p = options.profile;
  const g = new Set(options.groups);
  const missing = missingTools();
  const cTools = missing.length === 0;
  if (!cTools) {
    const text = `${missing.join(', ')} missing: the wrk and curl rows are left out (apt-get install -y wrk curl)`;
    // CI must measure what users are told about, not quietly skip it.
    if (process.env.REQUIRE_E2E_TOOLS === '1') throw new Error(text);
    log(text);
  }
  return [
    ...(g.has('manifest') ? manifestCases(p, plan) : []),
    ...(g.has('pull') ? pullCases(p, plan) : []),
    ...(g.has('pull') && cTools ? curlPullCases(p, plan) : []),
    ...(g.has('push') ? pushCases(p, plan) : []),
    ...(g.has('list') ? listCases(p, plan) : []),
    ...(g.has('mix') ? [mixCase(p, plan)] : []),
    ...(g.has('wrk') && cTools ? wrkCases(p, plan, g.has('list')) : []),
    ...(g.has('mirror') ? mirrorCases(options, plan, () => launched.registries, () => launched.workspace) : []),
  ];
}

function loadMetrics(n: number, concurrency: number): { tags: MetricDef; catalog: MetricDef } {
  return {
    tags: { id: `load.tags.n${n}.s`, label: `load ${n} tags (manifest PUTs, ${concurrency} parallel)`, unit: 's', better: 'lower' },
    catalog: {
      id: `load.catalog.n${n}.s`,
      label: `load ${n} repos (2 mounts + 1 PUT each, ${concurrency} parallel)`,
      unit: 's',
      better: 'lower',
    },
  };
}

const RSS_RUN: MetricDef = { id: 'rss.run.peak', label: 'peak RSS over the whole run', unit: 'MiB', better: 'lower' };

/** Loads the list fixtures into each registry (timed once; the tag load `repeats` times with --metadata postgres). */
async function loadLists(registries: readonly Registry[], plan: FixturePlan, options: Options, store: ResultStore): Promise<void> {
  const { listCount: n, loadConcurrency: c } = options.profile;
  const m = loadMetrics(n, c);
  for (const reg of registries) {
    if (reg.broken) continue;
    for (const [metric, load] of [
      [m.tags, loadTags],
      [m.catalog, loadCatalog],
    ] as const) {
      try {
        log(`[load]    ${reg.name.padEnd(9)} ${metric.label}...`);
        const seconds = await load(reg, plan, c);
        store.record(metric.id, reg.name, seconds);
        log(`[load]    ${reg.name.padEnd(9)} ${metric.label}: ${fmt(seconds)} s`);
      } catch (err) {
        store.fail([metric.id], reg.name, errorMessage(err));
        log(`[load]    ${reg.name.padEnd(9)} ${metric.label}: FAILED: ${errorMessage(err)}`);
      }
    }
  }
  // With --metadata postgres the tag load is the manifest PUT row with a target (issue 13). One timed load per
  // side swung 0.24-2.4 s from run to run on SQLite alone, so it gets `repeats` samples: each extra round loads
  // the same manifests into a fresh repository, the two sides in alternating order.
  if (options.metadata !== 'postgres') return;
  for (let round = 1; round < options.profile.repeats; round++) {
    const order = round % 2 === 1 ? [...registries].reverse() : registries;
    const again: FixturePlan = { ...plan, tags: { ...plan.tags, repo: `${plan.tags.repo}-again${round}` } };
    for (const reg of order) {
      if (reg.broken) continue;
      try {
        const seconds = await loadTags(reg, again, c);
        store.record(m.tags.id, reg.name, seconds);
        log(`[load]    ${reg.name.padEnd(9)} ${m.tags.label}, round ${round + 1}: ${fmt(seconds)} s`);
      } catch (err) {
        store.fail([m.tags.id], reg.name, errorMessage(err));
      }
    }
  }
}

async function main(): Promise<number> {
  // dist/bench/run.js -> repository root
  const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
  const options = parseOptions(process.argv, repoRoot);
  const profile = options.profile;
  installSignalHandlers();
  const t0 = Date.now();
  const loadAtStart = os.loadavg()[0];
  const store = new ResultStore(options.storage);

  try {
    log(`generating test content (${profile.mode} mode)...`);
    const plan = planFixtures(profile);
    // Mirror rows start their own servers against the launched registries: filled in below.
    const launched: { registries: Registry[]; workspace: string } = { registries: [], workspace: '' };
    const cases = buildCases(options, plan, launched);

    // Fix the table order up front: loads sit just before the list workloads.
    const loads = loadMetrics(profile.listCount, profile.loadConcurrency);
    for (const c of cases) {
      if (c.group === 'list') store.define([loads.tags, loads.catalog]);
      store.define(c.metrics);
    }
    store.define([RSS_RUN]);

    const workspace = await makeWorkspace(options.keepData);
    const registries = await launchRegistries(options, workspace);
    launched.registries = registries;
    launched.workspace = workspace;

    for (const reg of registries) {
      try {
        await seedBase(reg, plan);
      } catch (err) {
        reg.broken = `seeding failed: ${errorMessage(err)}`;
        log(`${reg.name}: ${reg.broken}`);
      }
    }
    if (options.groups.includes('list')) await loadLists(registries, plan, options, store);

    await runCases(cases, registries, profile.repeats, store);
    // The signal handler exits once teardown is done; a partial report would mislead.
    if (interrupted()) return 130;

    for (const reg of registries) store.record(RSS_RUN.id, reg.name, reg.memory.peak() / MiB);
    for (const reg of registries) if (reg.broken) store.fail([RSS_RUN.id], reg.name, reg.broken);

    const pkg = JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { version?: string };
    const info: RunInfo = {
      mode: profile.mode,
      storage: options.storage,
      shippedDefaults: options.shippedDefaults,
      repeats: profile.repeats,
      cores: os.cpus().length,
      cpuModel: os.cpus()[0]?.model ?? 'unknown',
      node: process.version,
      platform: `${os.type()} ${os.release()} ${os.arch()}`,
      referenceVersion: options.baselineCli ? `here: Ferry from ${options.baselineCli}` : options.metadata === 'postgres' ? 'here: Ferry on SQLite; ferry column: Ferry on PostgreSQL' : referenceVersion(options.referenceBin),
      ferryArgs: options.ferryArgs,
      registries: registries.map((r) => r.name),
      startedAt: new Date(t0).toISOString(),
      durationSeconds: (Date.now() - t0) / 1000,
      loadAverage: { start: loadAtStart, end: os.loadavg()[0] },
    };
    if (pkg.version) store.note(`ferry package version ${pkg.version}`);
    const rows = store.rows(options.metadata);
    process.stdout.write(`\n${renderReport(info, rows, store.notes)}\n`);
    await writeResultsJson(options.out, info, rows, store.notes);
    log(`results written to ${path.relative(process.cwd(), options.out) || options.out}`);
    return store.failed ? 1 : 0;
  } catch (err) {
    if (interrupted()) return 130;
    log(`bench: ${errorMessage(err)}`);
    return 1;
  } finally {
    await runCleanup();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    log(`bench: unexpected failure: ${errorMessage(err)}`);
    process.exit(1);
  },
);
