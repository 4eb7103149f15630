// Starts the reference registry (CNCF distribution 2.8, Debian's
// docker-registry) with a generated config and fresh storage.
import fs from 'node:fs/promises';
import path from 'node:path';
import { freePort, spawnServer, type ServerProcess } from '../server-process.js';
import { waitForRegistry } from '../ready.js';
import { onCleanup } from '../cleanup.js';
import type { S3Bucket } from './s3.js';

export interface StartedServer {
  baseUrl: string;
  server: ServerProcess;
  dataDir: string;
}

/**
 * The config mirrors Debian's packaged /etc/docker/registry/config.yml
 * (filesystem storage, in-memory blob descriptor cache, delete enabled) minus
 * auth and the storage health check, plus quiet logging: an access log line
 * per request would measure log I/O rather than the registry.
 */
function referenceConfig(dataDir: string, port: number, s3: S3Bucket | undefined, shippedDefaults: boolean): string {
  const storage = s3
    ? [
        // distribution's s3 driver on the same RGW (path style, plain HTTP, SigV4).
        '  s3:',
        `    accesskey: ${s3.accessKeyId}`,
        `    secretkey: ${s3.secretAccessKey}`,
        '    region: us-east-1',
        `    regionendpoint: ${s3.endpoint}`,
        `    bucket: ${s3.bucket}`,
        '    secure: false',
        '    v4auth: true',
        '    rootdirectory: /',
      ]
    : ['  filesystem:', `    rootdirectory: ${JSON.stringify(dataDir)}`];
  return [
    'version: 0.1',
    // --defaults: Debian's packaged config sets no level (info) and leaves the access log on.
    ...(shippedDefaults ? [] : ['log:', '  level: error', '  accesslog:', '    disabled: true']),
    'storage:',
    '  cache:',
    '    blobdescriptor: inmemory',
    ...storage,
    '  delete:',
    '    enabled: true',
    'http:',
    `  addr: 127.0.0.1:${port}`,
    '',
  ].join('\n');
}

export async function startReference(binary: string, workDir: string, s3?: S3Bucket, shippedDefaults = false): Promise<StartedServer> {
  const dataDir = path.join(workDir, 'data');
  await fs.mkdir(dataDir, { recursive: true });
  const port = await freePort();
  const configPath = path.join(workDir, 'config.yml');
  await fs.writeFile(configPath, referenceConfig(dataDir, port, s3, shippedDefaults));
  // Its S3 driver panics at start when AWS_CA_BUNDLE is set (LoadCustomCABundleError); env execs in place, same pid.
  const server = s3
    ? spawnServer('/usr/bin/env', ['-u', 'AWS_CA_BUNDLE', binary, 'serve', configPath], path.join(workDir, 'server.log'), workDir)
    : spawnServer(binary, ['serve', configPath], path.join(workDir, 'server.log'), workDir);
  // Registered before waiting, so a server that never becomes ready is still stopped.
  onCleanup(() => server.stop());
  const baseUrl = `http://127.0.0.1:${port}`;
  await waitForRegistry('reference', baseUrl, server);
  return { baseUrl, server, dataDir };
}
