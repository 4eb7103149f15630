#!/usr/bin/env node
// Runs N `ferry serve` replicas behind haproxy on this machine (loopback only),
// the layout of docs/deployment.md: shared metadata and blob store, round-robin
// with no stickiness, /healthz checks, retry and redispatch on connection failure.
//
//   node scripts/replicas.mjs [--replicas N] [--data DIR] [--config FILE] [--print-haproxy-config]
//
// Needs a build (npm run build) and haproxy (apt-get install -y haproxy). Prints the
// load balancer's URL and each replica's, then runs until Ctrl-C / SIGTERM, which
// stops haproxy and the replicas by PID. Without --data the shared data directory is
// a temp directory removed on exit. Blobs go to S3 when FERRY_STORAGE__* says so
// (every replica inherits this environment).
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    replicas: { type: "string", default: "3" },
    data: { type: "string" },
    config: { type: "string" },
    "print-haproxy-config": { type: "boolean", default: false },
  },
});
const { startReplicaSet, haproxyConfig } = await import("../dist/test/helpers/replicas.js").catch(() => {
  console.error("build first: npm run build (scripts/replicas.mjs uses dist/test/helpers/replicas.js)");
  process.exit(2);
});
const count = Number(values.replicas);
if (!Number.isInteger(count) || count < 1 || count > 16) {
  console.error("--replicas must be a whole number from 1 to 16");
  process.exit(2);
}
if (values["print-haproxy-config"]) {
  const servers = Array.from({ length: count }, (_, i) => `127.0.0.1:${5001 + i}`);
  process.stdout.write(haproxyConfig({ bind: "127.0.0.1:5000", servers, checkIntervalMs: 2000 }));
  process.exit(0);
}
const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => key.startsWith("FERRY_")));
const set = await startReplicaSet({
  replicas: count,
  data: values.data,
  config: values.config ? readFileSync(values.config, "utf8") : undefined,
  env,
  checkIntervalMs: 1000,
});
console.log(`load balancer: ${set.url}  (haproxy pid ${set.haproxy.pid}, config ${set.haproxy.configFile})`);
set.replicas.forEach((r, i) => console.log(`replica r${i + 1}: ${r.url}  (pid ${r.child.pid})`));
console.log(`shared data: ${set.data}`);
let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await set.close();
  process.exit(0);
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
