/**
 * `ferry mirror status HOST[:PORT]`: a running Ferry registry's mirrors
 * (GET /ferry/v1/mirrors, admin): hit rate, bytes from cache and fetched,
 * upstream health, and the scheduled syncs' last runs. Authenticated with
 * the credentials `ferry login` stored, like every other command.
 */
import type { Command } from "commander";
import { Client, closeAllConnections } from "../../client/index.js";
import { readAll } from "../../client/http.js";
import { isRegistryHost } from "../../oci/image-reference.js";
import type { MirrorsAnswer } from "../../mirrors/admin.js";

interface StatusFlags {
  json?: boolean;
  insecure?: boolean;
}

export function registerMirrorCommands(program: Command): void {
  const mirror = program.command("mirror").description("pull-through mirrors of a Ferry registry");
  mirror
    .command("status")
    .description("hit rates, bytes served from cache and fetched, upstream health and sync runs of a Ferry registry's mirrors (admin)")
    .argument("<registry>", "HOST[:PORT]")
    .option("--json", "print a JSON document")
    .option("--insecure", "use plain HTTP for the registry (loopback hosts always do)")
    .action(async (registry: string, flags: StatusFlags) => {
      const host = registry.startsWith("docker://") ? registry.slice("docker://".length) : registry;
      if (!isRegistryHost(host)) throw new Error(`"${registry}" is not a registry host: write HOST[:PORT], e.g. localhost:5000`);
      const client = await new Client({ insecure: flags.insecure }).registry(host);
      const transport = client.transport;
      const response = await transport.send({ method: "GET", path: "/ferry/v1/mirrors", headers: { accept: "application/json" } });
      if (response.status !== 200) await transport.fail(response, `GET ${transport.baseUrl}/ferry/v1/mirrors`);
      const text = (await readAll(response.body)).toString("utf8");
      let answer: MirrorsAnswer;
      try {
        answer = JSON.parse(text) as MirrorsAnswer;
      } catch {
        throw new Error(`${transport.baseUrl}/ferry/v1/mirrors answered something that is not JSON (is this a Ferry registry?)`);
      }
      process.stdout.write(flags.json ? `${JSON.stringify(answer, null, 2)}\n` : formatMirrors(answer));
    });
  for (const command of mirror.commands) command.hook("postAction", () => closeAllConnections());
}

export function formatMirrors(answer: MirrorsAnswer): string {
  if (answer.mirrors.length === 0) return "no mirrors configured\n";
  const lines: string[] = [];
  for (const m of answer.mirrors) {
    const c = m.counters;
    const health = m.upstreamHealth;
    const state = health.rateLimitedUntil ? `rate-limited until ${iso(health.rateLimitedUntil)}` : health.ok ? "up" : `failing (${health.consecutiveFailures}x): ${health.lastError ?? "?"}`;
    lines.push(
      `${m.prefix === "" ? "(every repository)" : m.prefix} -> ${m.upstream}`,
      `  upstream: ${state}; last success ${iso(health.lastSuccessAt)}, last failure ${iso(health.lastFailureAt)}`,
      `  hit rate: ${m.hitRate === null ? "-" : `${(m.hitRate * 100).toFixed(1)}%`}  manifests ${c.manifestHits} hit, ${c.manifestRevalidated} revalidated, ${c.manifestMisses} fetched, ${c.staleServed} stale`,
      `  blobs: ${c.blobHits} hit, ${c.blobMisses} fetched (${c.blobFetchesJoined} joined a fetch in progress), ${m.fetchesInProgress} in progress`,
      `  bytes: ${bytes(c.bytesFromCache)} from cache, ${bytes(c.bytesFetched)} fetched from the upstream; ${c.upstreamErrors} upstream errors`,
    );
  }
  for (const s of answer.sync) {
    const run = s.lastRun;
    lines.push(
      `sync ${s.from} [${s.tags.join(", ")}] every ${s.intervalSeconds}s${s.running ? " (running)" : ""}: ` +
        (run
          ? `last run ${iso(run.finishedAt)}: ${run.tagsMatched} tags, ${run.tagsUpdated.length} updated, ${run.blobsFetched} blobs (${bytes(run.bytesFetched)}) fetched, ${run.errors.length} errors` +
            (run.errors[0] ? ` (${run.errors[0].tag}: ${run.errors[0].error})` : "")
          : "not run yet"),
    );
  }
  return `${lines.join("\n")}\n`;
}

function iso(ms: number | null): string {
  return ms === null ? "-" : new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}

function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}
