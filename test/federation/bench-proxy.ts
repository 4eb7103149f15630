/**
 * Proxy throughput: a 64 MiB foreign layer served by the registry in proxy
 * mode (cold: fetched from a source on 127.0.0.1 and verified while
 * streaming; warm: from the proxy cache) against the same size of ordinary
 * local blob. Downloads with curl to /dev/null.
 *
 *   npx tsc -p tsconfig.json && node dist/test/federation/bench-proxy.js [MiB] [rounds]
 */
import { spawn } from "node:child_process";
import { startTestRegistry } from "../helpers/registry.js";
import { FakeSource, blob, pushBlob, pushForeignImage } from "./helpers.js";

const mib = Number(process.argv[2] ?? 64);
const rounds = Number(process.argv[3] ?? 5);

function curl(url: string): Promise<{ seconds: number; bytes: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn("curl", ["-sS", "-L", "-o", "/dev/null", "-w", "%{time_total} %{size_download}", url]);
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.on("close", (code) => {
      if (code !== 0) return reject(new Error(`curl exited ${code}`));
      const [seconds, bytes] = out.trim().split(" ").map(Number);
      resolve({ seconds: seconds!, bytes: bytes! });
    });
  });
}

async function measure(label: string, url: string, size: number, n: number): Promise<void> {
  const speeds: number[] = [];
  for (let i = 0; i < n; i++) {
    const { seconds, bytes } = await curl(url);
    if (bytes !== size) throw new Error(`${label}: got ${bytes} bytes, expected ${size}`);
    speeds.push(bytes / 1024 ** 2 / seconds);
  }
  speeds.sort((a, b) => a - b);
  const median = speeds[Math.floor(speeds.length / 2)]!;
  console.log(`${label.padEnd(34)} median ${median.toFixed(0).padStart(5)} MiB/s  (min ${speeds[0]!.toFixed(0)}, max ${speeds.at(-1)!.toFixed(0)}, n=${n})`);
}

const source = await new FakeSource().start();
const registry = await startTestRegistry({
  federation: { rules: [{ match: "^http://127\\.0\\.0\\.1:", serve: "proxy", cache: true }, { match: "^http://localhost:", serve: "proxy" }], proxy: { allowPrivateNetworks: true } },
});
try {
  const size = mib * 1024 ** 2;
  const foreign = blob(size);
  const local = blob(size);
  const cachedUrl = source.put("/cached", foreign.bytes);
  const uncached = blob(size);
  source.put("/uncached", uncached.bytes);
  await pushForeignImage(registry.url, "bench", "v1", [
    { ...foreign, urls: [cachedUrl] },
    { ...uncached, urls: [`http://localhost:${source.port}/uncached`] },
  ]);
  await pushBlob(registry.url, "bench", local.bytes);
  const base = `${registry.url}/v2/bench/blobs`;
  console.log(`${mib} MiB blobs, registry ${registry.url}, source ${source.base}`);
  await measure("source directly (no registry)", cachedUrl, size, rounds);
  await measure("local blob (filesystem store)", `${base}/${local.digest}`, size, rounds);
  await measure("proxy, no cache (fetch+verify)", `${base}/${uncached.digest}`, size, rounds);
  await measure("proxy, cold cache (first fetch)", `${base}/${foreign.digest}`, size, 1);
  await measure("proxy, warm cache", `${base}/${foreign.digest}`, size, rounds);
} finally {
  await registry.close();
  await source.close();
}
