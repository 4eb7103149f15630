/**
 * Runs `ferry serve` as a real child process (for tests that need several
 * worker processes, or that kill the registry with SIGKILL and restart it).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createServer } from "node:net";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";

/** Every committed blob file under a data directory, with its bytes (small test data only). */
export async function readBlobFiles(data: string): Promise<Array<{ digest: string; bytes: Buffer }>> {
  const out: Array<{ digest: string; bytes: Buffer }> = [];
  const root = join(data, "blobs", "sha256");
  for (const prefix of await readdir(root).catch(() => [] as string[])) {
    for (const hex of await readdir(join(root, prefix))) out.push({ digest: `sha256:${hex}`, bytes: await readFile(join(root, prefix, hex)) });
  }
  return out;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => resolve(port));
    });
  });
}

export interface ServeProcess {
  url: string;
  port: number;
  child: ChildProcess;
  stderr(): string;
  /** SIGKILL, as a crash would; resolves once the process is gone. */
  kill(): Promise<void>;
  /** SIGTERM and wait. */
  stop(): Promise<void>;
}

export interface ServeOptions {
  data: string;
  port?: number;
  workers?: number;
  /** Serving threads (`--threads`); unset: the shipped default (one per core). */
  threads?: number;
  /** Extra environment (e.g. FERRYTEST_CRASH_POINT). */
  env?: Record<string, string>;
  args?: string[];
}

export async function startServeProcess(options: ServeOptions): Promise<ServeProcess> {
  const port = options.port ?? (await freePort());
  const args = ["dist/src/cli/main.js", "serve", "--listen", `127.0.0.1:${port}`, "--data", options.data];
  if (options.workers) args.push("--workers", String(options.workers));
  if (options.threads) args.push("--threads", String(options.threads));
  const child = spawn(process.execPath, [...args, ...(options.args ?? [])], {
    stdio: ["ignore", "ignore", "pipe"],
    env: { PATH: process.env.PATH ?? "", FERRY_LOG__LEVEL: "warn", ...options.env },
  });
  let stderr = "";
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    // 401: up, with auth configured.
    const ok = await fetch(`${url}/v2/`).then((r) => r.ok || r.status === 401, () => false);
    if (ok) break;
    if (child.exitCode !== null || child.signalCode !== null || i > 150) {
      child.kill("SIGKILL");
      throw new Error(`ferry serve did not start: ${stderr.slice(0, 2000)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return {
    url,
    port,
    child,
    stderr: () => stderr,
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      await exited;
    },
  };
}
