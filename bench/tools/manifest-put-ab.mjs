// A/B of manifest PUT cost on PostgreSQL between two builds, interleaved on one database server:
// wall time per PUT (sequential and 16 in parallel) and CPU of each Ferry process per PUT.
// Usage: node bench/tools/manifest-put-ab.mjs <postgres base url> <cli A> <cli B> [rounds]
//   e.g. node bench/tools/manifest-put-ab.mjs postgres://ferry@127.0.0.1:25441/ferry /tmp/before/dist/src/cli/main.js dist/src/cli/main.js 4
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createHash, randomBytes } from "node:crypto";
import pg from "pg";

const [base, cliA, cliB, roundsArg] = process.argv.slice(2);
const rounds = Number(roundsArg ?? 4);
const PER_BLOCK = 100;
const cpuOf = (pid) => { const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" "); return (Number(f[11]) + Number(f[12])) / 100; };
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function admin(text) { const c = new pg.Client({ connectionString: base }); await c.connect(); try { await c.query(text); } finally { await c.end(); } }

async function start(name, cli) {
  const schema = `putab_${randomBytes(4).toString("hex")}`;
  await admin(`create schema ${schema}`);
  const url = new URL(base); url.searchParams.set("options", `-c search_path=${schema}`);
  const data = mkdtempSync(`/tmp/putab-${name}-`);
  const port = 20000 + Math.floor(Math.random() * 10000);
  const env = { PATH: process.env.PATH, FERRY_LOG__LEVEL: "error", FERRY_LOG__ACCESS_LOG: "false", FERRY_METADATA__DRIVER: "postgres", FERRY_METADATA__POSTGRES__URL: url.toString() };
  const child = spawn(process.execPath, [cli, "serve", "--listen", `127.0.0.1:${port}`, "--data", data], { env, stdio: "inherit" });
  const server = `http://127.0.0.1:${port}`;
  for (;;) { try { if ((await fetch(`${server}/v2/`)).ok) break; } catch {} await new Promise((r) => setTimeout(r, 100)); }
  const cfg = Buffer.from("{}"); const d = `sha256:${createHash("sha256").update(cfg).digest("hex")}`;
  await fetch(`${server}/v2/app/blobs/uploads/?digest=${d}`, { method: "POST", body: cfg });
  return { name, child, server, data, schema, d, wall: { seq: [], par: [] }, cpu: { seq: [], par: [] }, n: 0 };
}

function manifest(s) {
  s.n++;
  return Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: s.d, size: 2 }, layers: [], annotations: { n: String(s.n) } }));
}

async function put(s) {
  const body = manifest(s);
  const r = await fetch(`${s.server}/v2/app/manifests/t${s.n}`, { method: "PUT", body, headers: { "content-type": "application/vnd.oci.image.manifest.v1+json" } });
  if (r.status !== 201) throw new Error(`${s.name}: ${r.status} ${await r.text()}`);
}

async function block(s, parallel) {
  const [c0, t0] = [cpuOf(s.child.pid), performance.now()];
  if (parallel) {
    let next = 0;
    await Promise.all(Array.from({ length: 16 }, async () => { while (next++ < PER_BLOCK) await put(s); }));
  } else for (let i = 0; i < PER_BLOCK; i++) await put(s);
  const kind = parallel ? "par" : "seq";
  s.wall[kind].push((performance.now() - t0) / PER_BLOCK);
  s.cpu[kind].push(((cpuOf(s.child.pid) - c0) / PER_BLOCK) * 1000);
}

const servers = [await start("A", cliA), await start("B", cliB)];
for (const s of servers) for (let i = 0; i < 20; i++) await put(s); // warm up
for (let round = 0; round < rounds; round++) {
  for (const parallel of [false, true]) for (const s of round % 2 ? [...servers].reverse() : servers) await block(s, parallel);
}
for (const s of servers) {
  console.log(`${s.name} (${s === servers[0] ? cliA : cliB}): sequential ${median(s.wall.seq).toFixed(2)} ms/PUT (${s.wall.seq.map((x) => x.toFixed(2)).join(" ")}), CPU ${median(s.cpu.seq).toFixed(2)} ms/PUT; 16 parallel ${median(s.wall.par).toFixed(2)} ms/PUT throughput-wise (${s.wall.par.map((x) => x.toFixed(2)).join(" ")}), CPU ${median(s.cpu.par).toFixed(2)} ms/PUT`);
  s.child.kill("SIGTERM");
  rmSync(s.data, { recursive: true, force: true });
  await admin(`drop schema ${s.schema} cascade`);
}
process.exit(0);
