// Starts Ferry from the compiled CLI with fresh storage.
import fs from 'node:fs/promises';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { freePort, spawnServer } from '../server-process.js';
import { waitForRegistry } from '../ready.js';
import { onCleanup } from '../cleanup.js';
import { launcherNodeFlags } from './launcher-flags.js';
import type { StartedServer } from './reference.js';
import type { S3Bucket } from './s3.js';

export async function startFerry(cli: string, extraArgs: string[], workDir: string, s3?: S3Bucket, shippedDefaults = false, metadata = ''): Promise<StartedServer> {
  if (!existsSync(cli)) {
    throw new Error(`Ferry CLI not found at ${cli} (not built yet?); use --only reference to benchmark the reference alone`);
  }
  const dataDir = path.join(workDir, 'data');
  await fs.mkdir(dataDir, { recursive: true });
  const port = await freePort();
  // Same logging as the reference's generated config: access log off, errors only.
  const configPath = path.join(workDir, 'ferry.yml');
  const storage = s3
    ? [
        'storage:',
        '  driver: s3',
        '  s3:',
        `    endpoint: ${s3.endpoint}`,
        `    bucket: ${s3.bucket}`,
        `    accessKeyId: ${s3.accessKeyId}`,
        `    secretAccessKey: ${s3.secretAccessKey}`,
        '',
      ].join('\n')
    : '';
  // --defaults: no log section, so Ferry logs as installed (info, an access line per request, to server.log).
  const log = shippedDefaults ? '' : 'log:\n  level: error\n  accessLog: false\n';
  await fs.writeFile(configPath, `${log}${storage}${metadata}`);
  // The launcher's Node flags (e.g. a smaller young generation): what `ferry serve` runs with when installed.
  const args = [...launcherNodeFlags(cli), cli, 'serve', '--config', configPath, '--listen', `127.0.0.1:${port}`, '--data', dataDir, ...extraArgs];
  // process.execPath: the same Node that runs the harness, not whatever is on PATH.
  const server = spawnServer(process.execPath, args, path.join(workDir, 'server.log'), workDir);
  // Registered before waiting, so a server that never becomes ready is still stopped.
  onCleanup(() => server.stop());
  const baseUrl = `http://127.0.0.1:${port}`;
  await waitForRegistry('ferry', baseUrl, server);
  return { baseUrl, server, dataDir };
}
