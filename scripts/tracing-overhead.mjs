#!/usr/bin/env node
/**
 * Measures what tracing costs on the hottest request, manifest GET by tag:
 * `ferry serve` with tracing off, on (every request sampled, spans exported
 * over OTLP/HTTP to a sink on loopback), and on with sampleRatio 0.01.
 * Runs the modes in turn for several rounds (the machine is shared: medians
 * of alternating runs) with autocannon. Needs a built dist/.
 *
 *   node scripts/tracing-overhead.mjs [--seconds 10] [--rounds 3] [--connections 32]
 */
import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import autocannon from "autocannon";

const { values } = parseArgs({
  options: { seconds: { type: "string", default: "10" }, rounds: { type: "string", default: "3" }, connections: { type: "string", default: "32" } },
});
const seconds = Number(values.seconds);
const rounds = Number(values.rounds);
const connections = Number(values.connections);

// An OTLP/HTTP sink: counts the spans it is sent and answers 200.
let exportedBytes = 0;
const sink = createServer((req, res) => {
  req.on("data", (chunk) => (exportedBytes += chunk.length));
  req.on("end", () => res.writeHead(200, { "Content-Type": "application/json" }).end("{}"));
});
await new Promise((resolve) => sink.listen(0, "127.0.0.1", resolve));
const endpoint = `http://127.0.0.1:${sink.address().port}/v1/traces`;

const MODES = {
  off: {},
  "on (sampleRatio 1)": { FERRY_TRACING__ENABLED: "true", FERRY_TRACING__ENDPOINT: endpoint },
  "on (sampleRatio 0.01)": { FERRY_TRACING__ENABLED: "true", FERRY_TRACING__ENDPOINT: endpoint, FERRY_TRACING__SAMPLE_RATIO: "0.01" },
  "on (sampleRatio 0)": { FERRY_TRACING__ENABLED: "true", FERRY_TRACING__ENDPOINT: endpoint, FERRY_TRACING__SAMPLE_RATIO: "0" },
};

const sha256 = (bytes) => `sha256:${createHash("sha256").update(bytes).digest("hex")}`;

async function pushImage(url) {
  const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] } }));
  const layer = Buffer.from("tracing overhead layer");
  for (const bytes of [config, layer]) {
    const res = await fetch(`${url}/v2/app/blobs/uploads/?digest=${sha256(bytes)}`, { method: "POST", headers: { "Content-Type": "application/octet-stream" }, body: bytes });
    if (res.status !== 201) throw new Error(`blob push: ${res.status}`);
  }
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha256(config), size: config.length },
    layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: sha256(layer), size: layer.length }],
  });
  const res = await fetch(`${url}/v2/app/manifests/v1`, { method: "PUT", headers: { "Content-Type": "application/vnd.oci.image.manifest.v1+json" }, body: manifest });
  if (res.status !== 201) throw new Error(`manifest push: ${res.status}`);
}

async function serve(env) {
  const data = mkdtempSync(join(tmpdir(), "ferry-trace-bench-"));
  const port = 20000 + Math.floor(Math.random() * 20000);
  const child = spawn(process.execPath, ["dist/src/cli/main.js", "serve", "--listen", `127.0.0.1:${port}`, "--data", data], {
    stdio: ["ignore", "ignore", "inherit"],
    env: { PATH: process.env.PATH, FERRY_LOG__LEVEL: "error", FERRY_LOG__ACCESS_LOG: "false", FERRY_AUDIT__ENABLED: "false", ...env },
  });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    if (await fetch(`${url}/v2/`).then((r) => r.ok, () => false)) break;
    if (i > 100) throw new Error("ferry serve did not start");
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return {
    url,
    async stop() {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      await exited;
      rmSync(data, { recursive: true, force: true });
    },
  };
}

function run(url) {
  return new Promise((resolve, reject) => {
    autocannon(
      { url: `${url}/v2/app/manifests/v1`, connections, duration: seconds, headers: { Accept: "application/vnd.oci.image.manifest.v1+json" } },
      (error, result) => (error ? reject(error) : resolve(result)),
    );
  });
}

const results = Object.fromEntries(Object.keys(MODES).map((mode) => [mode, []]));
for (let round = 0; round < rounds; round++) {
  for (const [mode, env] of Object.entries(MODES)) {
    const server = await serve(env);
    try {
      await pushImage(server.url);
      await run(server.url); // warm-up, discarded
      const result = await run(server.url);
      if (result.non2xx > 0 || result.errors > 0) throw new Error(`${mode}: ${result.non2xx} non-2xx, ${result.errors} errors`);
      results[mode].push({ rps: result.requests.average, p50: result.latency.p50, p99: result.latency.p99 });
      console.error(`round ${round + 1} ${mode}: ${Math.round(result.requests.average)} req/s, p50 ${result.latency.p50} ms, p99 ${result.latency.p99} ms`);
    } finally {
      await server.stop();
    }
  }
}
sink.close();

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const base = median(results.off.map((r) => r.rps));
console.log(`manifest GET by tag, ${connections} connections, ${seconds} s per run, median of ${rounds} alternating runs (${exportedBytes} bytes of spans exported)`);
console.log("| tracing | req/s | vs off | p50 ms | p99 ms |");
console.log("| --- | --- | --- | --- | --- |");
for (const [mode, runs] of Object.entries(results)) {
  const rps = median(runs.map((r) => r.rps));
  console.log(`| ${mode} | ${Math.round(rps)} | ${mode === "off" ? "" : `${(((rps - base) / base) * 100).toFixed(1)}%`} | ${median(runs.map((r) => r.p50))} | ${median(runs.map((r) => r.p99))} |`);
}
