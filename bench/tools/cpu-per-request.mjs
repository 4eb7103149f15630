// CPU per manifest GET by tag: ferry process and (for PostgreSQL) the postgres server processes.
// Usage (after npm run build): node bench/tools/cpu-per-request.mjs sqlite | postgres <url>; run from the repository root
// (the build measured is ./dist). PG_DATA=<data directory> counts only that PostgreSQL server.
import { spawn, execSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync } from "node:fs";
import { createHash } from "node:crypto";
const [mode, pgUrl] = process.argv.slice(2);
const tick = 100; // USER_HZ
const cpuOf = (pid) => { const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" "); return (Number(f[11]) + Number(f[12])) / tick; };
// PG_DATA=<data directory>: only that server's processes (the postmaster and its children), not every PostgreSQL on the machine.
const postmaster = process.env.PG_DATA ? Number(readFileSync(`${process.env.PG_DATA}/postmaster.pid`, "utf8").split("\n")[0]) : undefined;
const parentOf = (pid) => Number(readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ")[1]);
const pgCpu = () => { let t = 0; for (const p of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) { try { const cmd = readFileSync(`/proc/${p}/cmdline`, "utf8"); if (!cmd.startsWith("postgres")) continue; if (postmaster !== undefined && Number(p) !== postmaster && parentOf(p) !== postmaster) continue; t += cpuOf(p); } catch {} } return t; };
const data = mkdtempSync("/tmp/cpureq-");
const port = 20000 + Math.floor(Math.random() * 10000);
const env = { PATH: process.env.PATH, FERRY_LOG__LEVEL: "error", FERRY_LOG__ACCESS_LOG: "false" };
if (mode === "postgres") Object.assign(env, { FERRY_METADATA__DRIVER: "postgres", FERRY_METADATA__POSTGRES__URL: pgUrl });
const child = spawn(process.execPath, ["dist/src/cli/main.js", "serve", "--listen", `127.0.0.1:${port}`, "--data", data], { env, stdio: "inherit" });
const base = `http://127.0.0.1:${port}`;
for (;;) { try { if ((await fetch(`${base}/v2/`)).ok) break; } catch {} await new Promise((r) => setTimeout(r, 100)); }
const cfg = Buffer.from("{}"); const d = `sha256:${createHash("sha256").update(cfg).digest("hex")}`;
await fetch(`${base}/v2/app/blobs/uploads/?digest=${d}`, { method: "POST", body: cfg });
const m = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: d, size: 2 }, layers: [] }));
await fetch(`${base}/v2/app/manifests/latest`, { method: "PUT", body: m, headers: { "content-type": "application/vnd.oci.image.manifest.v1+json" } });
for (let i = 0; i < 500; i++) await (await fetch(`${base}/v2/app/manifests/latest`)).arrayBuffer();
const N = 4000;
const [f0, p0, t0] = [cpuOf(child.pid), pgCpu(), Date.now()];
for (let i = 0; i < N; i++) await (await fetch(`${base}/v2/app/manifests/latest`)).arrayBuffer();
const [f1, p1, t1] = [cpuOf(child.pid), pgCpu(), Date.now()];
console.log(`${mode}: ferry ${((f1 - f0) / N * 1e6).toFixed(0)} µs CPU/req, postgres ${((p1 - p0) / N * 1e6).toFixed(0)} µs CPU/req, wall ${((t1 - t0) / N * 1000).toFixed(0)} µs/req sequential`);
child.kill("SIGTERM");
execSync(`rm -rf ${data}`);
process.exit(0);
