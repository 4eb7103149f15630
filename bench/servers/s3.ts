// `--storage s3`: one loopback Ceph RGW (the project's scripts/s3-service.sh,
// OSD on bluestore) shared by both registries, a bucket each; stopped by PID at
// cleanup. The reference uses its s3 driver with its defaults, which redirect
// blob GETs to presigned RGW URLs; Ferry streams them (redirect off by default).
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { onCleanup } from '../cleanup.js';
import { freePort } from '../server-process.js';
import type { RegistryName } from '../types.js';

const run = promisify(execFile);

export interface S3Bucket {
  endpoint: string;
  bucket: string;
  accessKeyId: string;
  secretAccessKey: string;
}

export async function startBenchS3(repoRoot: string, rgwDir: string, names: RegistryName[]): Promise<Partial<Record<RegistryName, S3Bucket>>> {
  const script = path.join(repoRoot, 'scripts/s3-service.sh');
  const check = await run(script, ['check']).then(
    () => null,
    (err: { stderr?: string }) => err.stderr?.trim() ?? 'Ceph RGW packages missing',
  );
  if (check) throw new Error(`--storage s3 needs a local Ceph RGW: ${check}`);
  const port = await freePort();
  // Bluestore on a sparse file: a full run writes more than an in-RAM OSD should hold.
  const env = {
    ...process.env,
    RGW_DIR: rgwDir,
    S3_PORT: String(port),
    // A free port from the kernel's ephemeral range, like S3_PORT: a random pick could land on a port
    // another cluster on this machine listens on (the OSD takes the 100 ports after it).
    MON_PORT: String(await freePort()),
    OSD_BACKEND: 'bluestore',
  };
  onCleanup(async () => {
    await run(script, ['stop', '--purge'], { env }).catch(() => undefined);
  });
  process.stderr.write(`[s3]      starting Ceph RGW on 127.0.0.1:${port}...\n`);
  await run(script, ['start'], { env, timeout: 120_000 });
  const endpoint = `http://127.0.0.1:${port}`;
  const out: Partial<Record<RegistryName, S3Bucket>> = {};
  for (const name of names) {
    const bucket = `bench-${name}`;
    // Created with the same signed curl call the script uses (RGW wants the payload hash header).
    await run('curl', [
      '-fsS', '-X', 'PUT', '--aws-sigv4', 'aws:amz:us-east-1:s3', '-u', 'ferrytestaccess:ferrytestsecret',
      '-H', 'x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
      `${endpoint}/${bucket}`,
    ]);
    out[name] = { endpoint, bucket, accessKeyId: 'ferrytestaccess', secretAccessKey: 'ferrytestsecret' };
  }
  return out;
}
