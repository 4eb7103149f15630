// Starts the registries under test in a fresh temporary workspace and
// registers everything needed to tear them down again.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { onCleanup } from '../cleanup.js';
import { RegistryHttp } from '../http.js';
import { MemorySampler } from '../memory.js';
import type { Options } from '../options.js';
import type { Registry } from '../registry.js';
import type { RegistryName } from '../types.js';
import { startFerry } from './ferry.js';
import { startReference, type StartedServer } from './reference.js';
import { startBenchS3, type S3Bucket } from './s3.js';
import { startBenchPostgres } from './postgres.js';

/**
 * Creates the workspace under os.tmpdir(); removed at exit unless --keep-data.
 * The prefix deliberately does not start with "ferry-": test suites in this
 * repository leave many /tmp/ferry-* directories behind, and a run once lost
 * its data to a sweep of those.
 */
export async function makeWorkspace(keep: boolean): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'regbench-'));
  onCleanup(async () => {
    if (keep) {
      process.stderr.write(`kept benchmark data and server logs in ${dir}\n`);
      return;
    }
    // Can take a minute after a full run (GBs of blobs, 10k repositories).
    process.stderr.write(`removing ${dir}...\n`);
    await fs.rm(dir, { recursive: true, force: true });
  });
  return dir;
}

async function startOne(name: RegistryName, options: Options, workDir: string, s3?: S3Bucket, postgres?: string): Promise<StartedServer> {
  await fs.mkdir(workDir, { recursive: true });
  // --metadata postgres: the "reference" column is Ferry on SQLite.
  if (postgres !== undefined) return startFerry(options.ferryCli, options.ferryArgs, workDir, s3, options.shippedDefaults, name === 'ferry' ? postgres : '');
  return name === 'ferry'
    ? startFerry(options.ferryCli, options.ferryArgs, workDir, s3, options.shippedDefaults)
    : startReference(options.referenceBin, workDir, s3, options.shippedDefaults);
}

/**
 * Starts the selected registries one after the other (ferry first, matching
 * the alternation order of the runs). A failure to start is fatal: the
 * caller exits non-zero after cleanup.
 */
export async function launchRegistries(options: Options, workspace: string): Promise<Registry[]> {
  const names: RegistryName[] = options.only ? [options.only] : ['ferry', 'reference'];
  const out: Registry[] = [];
  // With --storage s3 both registries use one RGW, each its own bucket.
  const s3 = options.storage === 's3' ? await startBenchS3(options.repoRoot, path.join(workspace, 'rgw'), names) : undefined;
  const postgres = options.metadata === 'postgres' ? await startBenchPostgres(options.repoRoot) : undefined;
  for (const name of names) {
    const workDir = path.join(workspace, name);
    const { server, baseUrl, dataDir } = await startOne(name, options, workDir, s3?.[name], postgres);
    const http = new RegistryHttp(baseUrl);
    onCleanup(() => http.close());
    const memory = new MemorySampler(server.pid);
    memory.start();
    onCleanup(() => memory.stop());
    process.stderr.write(`${name}: listening on ${baseUrl} (pid ${server.pid})\n`);
    out.push({ name, baseUrl, dataDir, http, server, memory });
  }
  return out;
}
