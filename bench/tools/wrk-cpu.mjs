// Server CPU per request under wrk, for registries started side by side on the same content, alternated round by round.
// CPU comes from /proc/PID/stat (utime+stime), so it does not depend on how busy the neighbours keep the machine;
// req/s does, and is printed for the ratio between servers in the same round only.
// Usage (repository root, after npm run build):
//   node bench/tools/wrk-cpu.mjs [--rounds 6] [--seconds 2] [--path manifest|tags|base] [--log on|off] [--tags 200] SERVER...
//   SERVER = name=ferry[~servearg,servearg][:nodeflag,nodeflag] | name=reference | name=ferry@PATH_TO_MAIN_JS[...]
//   (CPU and RSS are summed over the server's process tree: `--workers` processes count; threads are in /proc/PID/stat.)
// Example: node bench/tools/wrk-cpu.mjs --path tags a=ferry b=ferry:--max-semi-space-size=8 ref=reference
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, writeFileSync, rmSync } from "node:fs";
import { createHash } from "node:crypto";
import net from "node:net";

const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(`--${name}`); if (i < 0) return dflt; const v = args[i + 1]; args.splice(i, 2); return v; };
const rounds = Number(opt("rounds", "6"));
const seconds = Number(opt("seconds", "2"));
const which = opt("path", "manifest");
const log = opt("log", "on");
const TAGS = Number(opt("tags", "200"));
const tree = (pid) => { let kids = []; try { for (const t of require_tasks(pid)) kids.push(...readFileSync(`/proc/${pid}/task/${t}/children`, "utf8").split(" ").filter(Boolean).map(Number)); } catch {} return [pid, ...kids.flatMap(tree)]; };
function require_tasks(pid) { return readdirSync(`/proc/${pid}/task`); }
const cpuOne = (pid) => { try { const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" "); return (Number(f[11]) + Number(f[12])) / 100; } catch { return 0; } };
const cpuOf = (pid) => tree(pid).reduce((sum, p) => sum + cpuOne(p), 0);
const rssOne = (pid) => { try { return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))[1]) / 1024; } catch { return 0; } };
const rssOf = (pid) => tree(pid).reduce((sum, p) => sum + rssOne(p), 0);
const freePort = () => new Promise((r) => { const s = net.createServer().listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => r(p)); }); });
const work = mkdtempSync("/tmp/wrkcpu-");
const children = [];
process.on("exit", () => { for (const c of children) try { process.kill(-c.pid, "SIGKILL"); } catch {} rmSync(work, { recursive: true, force: true }); });

async function start(spec) {
  const i = spec.indexOf("="); const name = spec.slice(0, i); const what = spec.slice(i + 1);
  const port = await freePort();
  const dir = `${work}/${name}`;
  spawnSync("mkdir", ["-p", `${dir}/data`]);
  let child;
  if (what === "reference") {
    writeFileSync(`${dir}/config.yml`, `version: 0.1\nlog:\n  level: ${log === "on" ? "info" : "error"}\n  accesslog:\n    disabled: ${log !== "on"}\nstorage:\n  filesystem:\n    rootdirectory: ${dir}/data\n  cache:\n    blobdescriptor: inmemory\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:${port}\n`);
    child = spawn("/usr/bin/docker-registry", ["serve", `${dir}/config.yml`], { stdio: ["ignore", "ignore", "ignore"], detached: true });
  } else {
    const [kindArgs, flagList = ""] = what.split(/:(.*)/s);
    const [kind, serveList = ""] = kindArgs.split("~");
    const main = kind.startsWith("ferry@") ? kind.slice(6) : "dist/src/cli/main.js";
    const flags = flagList ? flagList.split(",") : [];
    const serveArgs = serveList ? serveList.split(",") : [];
    // NAME=VALUE among the serve arguments is set in the server's environment instead.
    const env = { ...process.env, ...Object.fromEntries(serveArgs.filter((a) => /^[A-Z_]+=/.test(a)).map((a) => a.split(/=(.*)/s).slice(0, 2))) };
    serveArgs.splice(0, serveArgs.length, ...serveArgs.filter((a) => !/^[A-Z_]+=/.test(a)));
    writeFileSync(`${dir}/ferry.yml`, log === "on" ? "" : "log:\n  level: error\n  accessLog: false\n");
    child = spawn(process.execPath, [...flags, main, "serve", "--config", `${dir}/ferry.yml`, "--listen", `127.0.0.1:${port}`, "--data", `${dir}/data`, ...serveArgs], { stdio: ["ignore", "ignore", "inherit"], detached: true, env });
  }
  children.push(child);
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) { try { if ((await fetch(`${base}/v2/`)).ok) break; } catch {} if (i > 300) throw new Error(`${name} did not start`); await new Promise((r) => setTimeout(r, 100)); }
  const cfg = Buffer.from("{}"); const d = `sha256:${createHash("sha256").update(cfg).digest("hex")}`;
  const up = await fetch(`${base}/v2/app/blobs/uploads/`, { method: "POST" });
  const loc = new URL(up.headers.get("location"), base); loc.searchParams.set("digest", d);
  await fetch(loc, { method: "PUT", body: cfg, headers: { "content-type": "application/octet-stream" } });
  const m = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: d, size: 2 }, layers: [] }));
  for (let i = 0; i <= TAGS; i++) {
    const r = await fetch(`${base}/v2/app/manifests/${i === 0 ? "latest" : `t${i}`}`, { method: "PUT", body: m, headers: { "content-type": "application/vnd.oci.image.manifest.v1+json" } });
    if (r.status !== 201) throw new Error(`${name}: manifest PUT ${r.status}`);
  }
  await new Promise((r) => setTimeout(r, 1000));
  return { name, pid: child.pid, base, idleRss: rssOf(child.pid) };
}

const url = (s) => s.base + (which === "base" ? "/v2/" : which === "tags" ? "/v2/app/tags/list" : "/v2/app/manifests/latest");
const accept = "Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
function wrk(u, secs) {
  const r = spawnSync("/usr/bin/wrk", ["-t1", "-c32", `-d${secs}s`, "-H", accept, u], { encoding: "utf8" });
  const reqs = /(\d+) requests in/.exec(r.stdout); const rps = /Requests\/sec:\s+([\d.]+)/.exec(r.stdout);
  if (!reqs || /Non-2xx|Socket errors/.test(r.stdout)) throw new Error(`wrk: ${r.stdout}${r.stderr}`);
  return { n: Number(reqs[1]), rps: Number(rps[1]) };
}

const servers = [];
for (const spec of args) servers.push(await start(spec));
for (const s of servers) wrk(url(s), 1); // warm-up (JIT, caches)
const res = Object.fromEntries(servers.map((s) => [s.name, { us: [], rps: [], cores: [], peak: 0 }]));
for (let r = 0; r < rounds; r++) {
  const order = r % 2 ? [...servers].reverse() : servers;
  for (const s of order) {
    const c0 = cpuOf(s.pid); const t0 = process.hrtime.bigint(); const w = wrk(url(s), seconds); const c1 = cpuOf(s.pid); const t1 = process.hrtime.bigint();
    res[s.name].peak = Math.max(res[s.name].peak, rssOf(s.pid));
    res[s.name].us.push(((c1 - c0) / w.n) * 1e6); res[s.name].rps.push(w.rps); res[s.name].cores.push((c1 - c0) / (Number(t1 - t0) / 1e9));
  }
}
const med = (a) => { const b = [...a].sort((x, y) => x - y); return b.length % 2 ? b[(b.length - 1) / 2] : (b[b.length / 2 - 1] + b[b.length / 2]) / 2; };
const load = readFileSync("/proc/loadavg", "utf8").split(" ")[0];
console.log(`path ${which}, access log ${log}, ${rounds} rounds x ${seconds}s, load ${load}`);
for (const s of servers) {
  const x = res[s.name];
  console.log(`${s.name.padEnd(10)} CPU/req µs min ${Math.min(...x.us).toFixed(1)} med ${med(x.us).toFixed(1)} | req/s med ${med(x.rps).toFixed(0)} (${Math.min(...x.rps).toFixed(0)}-${Math.max(...x.rps).toFixed(0)}) | cores med ${med(x.cores).toFixed(2)} | RSS idle ${s.idleRss.toFixed(0)} MiB, after a round ${x.peak.toFixed(0)} MiB | per round us ${x.us.map((v) => v.toFixed(0)).join(" ")}`);
}
process.exit(0);
