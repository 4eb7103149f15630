#!/usr/bin/env node
// Throughput of 1 vs N `ferry serve` replicas behind haproxy on this machine, measured
// with wrk through the load balancer (and, for reference, 1 replica without it).
//
//   node scripts/bench-replicas.mjs [--replicas 3] [--seconds 10] [--connections 32] [--postgres URL]
//
// Needs a build, haproxy and wrk (apt-get install -y haproxy wrk). Workloads: manifest GET by
// tag (metadata read, cached per replica), tag list, and a 64 KiB blob GET. Metadata is SQLite
// in the shared directory, or PostgreSQL with --postgres. Rows are requests per second; run
// both layouts in ONE invocation and compare ratios (absolute numbers depend on the machine's load).
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    replicas: { type: "string", default: "3" },
    seconds: { type: "string", default: "10" },
    connections: { type: "string", default: "32" },
    postgres: { type: "string" },
  },
});
const { startReplicaSet } = await import("../dist/test/helpers/replicas.js");
const sha256 = (b) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

async function seed(base) {
  const config = Buffer.from('{"architecture":"amd64","os":"linux"}');
  const layer = randomBytes(64 * 1024);
  for (const blob of [config, layer]) {
    const r = await fetch(`${base}/v2/bench/app/blobs/uploads/?digest=${sha256(blob)}`, { method: "POST", body: blob, headers: { "Content-Type": "application/octet-stream" } });
    if (r.status !== 201) throw new Error(`seed blob: ${r.status}`);
  }
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha256(config), size: config.length },
    layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: sha256(layer), size: layer.length }],
  });
  for (let i = 0; i < 50; i++) {
    const r = await fetch(`${base}/v2/bench/app/manifests/v${i}`, { method: "PUT", body: manifest, headers: { "Content-Type": "application/vnd.oci.image.manifest.v1+json" } });
    if (r.status !== 201) throw new Error(`seed manifest: ${r.status}`);
  }
  return { layer: sha256(layer) };
}

function wrk(url, accept) {
  const args = ["-t2", `-c${values.connections}`, `-d${values.seconds}s`];
  if (accept) args.push("-H", `Accept: ${accept}`);
  const out = execFileSync("wrk", [...args, url], { encoding: "utf8" });
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
  const errors = /Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? "0";
  if (errors !== "0") throw new Error(`${url}: ${errors} non-2xx answers`);
  return rps;
}

const workloads = (base, layer) => [
  ["manifest GET by tag", `${base}/v2/bench/app/manifests/v7`, "application/vnd.oci.image.manifest.v1+json"],
  ["tag list", `${base}/v2/bench/app/tags/list`],
  ["blob GET 64 KiB", `${base}/v2/bench/app/blobs/${layer}`],
];

const n = Number(values.replicas);
const rows = {};
for (const count of [1, n]) {
  const set = await startReplicaSet({ replicas: count, postgresUrl: values.postgres, env: { FERRY_LOG__ACCESS_LOG: "false" } });
  try {
    const { layer } = await seed(set.url);
    if (count === 1) for (const [name, url, accept] of workloads(set.replicas[0].url, layer)) (rows[name] ??= {}).direct = wrk(url, accept);
    for (const [name, url, accept] of workloads(set.url, layer)) (rows[name] ??= {})[`lb${count}`] = wrk(url, accept);
  } finally {
    await set.close();
  }
}
console.log(`| workload | 1 replica, no haproxy | 1 replica via haproxy | ${n} replicas via haproxy | ${n} vs 1 via haproxy |`);
console.log("| --- | ---: | ---: | ---: | ---: |");
for (const [name, r] of Object.entries(rows)) {
  console.log(`| ${name} | ${r.direct.toFixed(0)} | ${r.lb1.toFixed(0)} | ${r[`lb${n}`].toFixed(0)} | ${(r[`lb${n}`] / r.lb1).toFixed(2)}x |`);
}
