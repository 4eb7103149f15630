// `--metadata postgres`: Ferry on PostgreSQL (the "ferry" column) against Ferry
// on SQLite (the "reference" column), same build, same blob storage. One
// loopback PostgreSQL from the project's scripts/pg-service.sh, with fsync on
// (SQLite commits with fsync too), stopped by PID at cleanup.
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { onCleanup } from '../cleanup.js';
import { freePort } from '../server-process.js';

const run = promisify(execFile);

/**
 * Starts PostgreSQL in a directory of its own (as root the server runs as `postgres`,
 * which must be able to reach it: not under the 0700 workspace); returns the
 * `metadata:` YAML block Ferry's config needs.
 */
export async function startBenchPostgres(repoRoot: string): Promise<string> {
  const script = path.join(repoRoot, 'scripts/pg-service.sh');
  const check = await run(script, ['check']).then(
    () => null,
    (err: { stderr?: string }) => err.stderr?.trim() ?? 'PostgreSQL packages missing',
  );
  if (check) throw new Error(`--metadata postgres needs PostgreSQL: ${check}`);
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'regbench-pg-'));
  const port = await freePort();
  const env = { ...process.env, PG_DIR: dir, PG_PORT: String(port), PG_FSYNC: 'on' };
  onCleanup(async () => {
    await run(script, ['stop', '--purge'], { env }).catch(() => undefined);
  });
  process.stderr.write(`[pg]      starting PostgreSQL on 127.0.0.1:${port}...\n`);
  const { stdout } = await run(script, ['start'], { env, timeout: 120_000 });
  return `metadata:\n  driver: postgres\n  postgres:\n    url: ${stdout.trim()}\n`;
}
