/**
 * A real `ferry serve` process with storage.driver s3 (configured through the
 * environment, as an operator would) on the test Ceph RGW, in a bucket of its
 * own: what the client e2e tests (skopeo, podman, the Ferry client) run
 * against besides the filesystem driver. Skip with skipUnlessS3().
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createTestBucket, startS3Server } from "./s3-rgw.js";
import { startServeProcess } from "./serve-process.js";
import { startTestRegistry } from "./registry.js";

export interface RunningRegistry {
  /** host:port */
  host: string;
  url: string;
  close(): Promise<void>;
}

export async function startFerryServeOnS3(): Promise<RunningRegistry> {
  const server = await startS3Server();
  const cleanups: Array<() => Promise<void>> = [() => server.close()];
  const close = async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  };
  try {
    const bucket = await createTestBucket(server);
    cleanups.push(() => bucket.drop());
    const data = await mkdtemp(join(tmpdir(), "ferry-serve-s3-"));
    cleanups.push(() => rm(data, { recursive: true, force: true }));
    const serve = await startServeProcess({
      data,
      env: {
        FERRY_STORAGE__DRIVER: "s3",
        FERRY_STORAGE__S3__ENDPOINT: server.endpoint,
        FERRY_STORAGE__S3__BUCKET: bucket.bucket,
        FERRY_STORAGE__S3__ACCESS_KEY_ID: server.accessKeyId,
        FERRY_STORAGE__S3__SECRET_ACCESS_KEY: server.secretAccessKey,
        // Small parts, so an image's larger layers span several parts and pieces.
        FERRY_STORAGE__S3__PART_SIZE: "5MiB",
      },
    });
    cleanups.push(() => serve.stop());
    return { host: `127.0.0.1:${serve.port}`, url: serve.url, close };
  } catch (error) {
    await close();
    throw error;
  }
}

/** The in-process registry on the filesystem driver, in the same shape. */
export async function startFilesystemRegistry(): Promise<RunningRegistry> {
  const registry = await startTestRegistry();
  return { host: registry.host, url: registry.url, close: () => registry.close() };
}
