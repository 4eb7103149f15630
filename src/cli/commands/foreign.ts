/**
 * `ferry foreign status|verify` ask a running Ferry registry's federation
 * admin API (/ferry/v1/foreign/...), addressed like every other command
 * (`HOST[:PORT][/REPO[:TAG|@DIGEST]]`) and authenticated with the credentials
 * `ferry login` stored. `check` comes from foreign-check.ts (client side:
 * this machine fetches the URLs itself).
 */
import type { Command } from "commander";
import { Client, closeAllConnections } from "../../client/index.js";
import {
  ForeignAdminClient,
  type ForeignLayersAnswer,
  type ForeignScope,
  type ForeignSourceRow,
  type ForeignSourcesAnswer,
  type ForeignVerifyAnswer,
} from "../../client/foreign.js";
import { isRegistryHost, parseImageReference } from "../../oci/image-reference.js";
import { registerForeignCheck } from "./foreign-check.js";

interface AdminFlags {
  json?: boolean;
  insecure?: boolean;
}

export interface ForeignTarget {
  registry: string;
  repository?: string;
  tag?: string;
  digest?: string;
}

export function registerForeignCommands(program: Command): void {
  const foreign = program.command("foreign").description("foreign (federated) layers");

  adminFlags(
    foreign
      .command("status")
      .description("health of foreign layer URLs and the foreign layers a Ferry registry knows (admin)")
      .argument("<reference>", "HOST[:PORT] (everything), HOST/REPO (one repository) or HOST/REPO:TAG|@DIGEST (one image)"),
  ).action(async (reference: string, flags: AdminFlags) => {
    const target = parseForeignTarget(reference);
    const admin = await adminClient(target, flags);
    const scope = scopeOf(target);
    const [sources, layers] = await Promise.all([admin.sources(scope), admin.layers(scope)]);
    if (flags.json) {
      const answer = { registry: target.registry, ...scope, sources: sources.sources, recheck: sources.recheck, layers: layers.layers, cache: layers.cache };
      process.stdout.write(`${JSON.stringify(answer, null, 2)}\n`);
      return;
    }
    process.stdout.write(formatStatus(sources, layers));
  });

  adminFlags(
    foreign
      .command("verify")
      .description("ask a Ferry registry to verify an image's foreign layers now (admin; exit 1 if any fails)")
      .argument("<reference>", "HOST[:PORT]/REPO[:TAG|@DIGEST] (tag defaults to latest)")
      .option("--mode <mode>", "head (reachable, size matches) or fetch (download, digest verified)"),
  ).action(async (reference: string, flags: AdminFlags & { mode?: string }) => {
    const target = parseForeignTarget(reference);
    if (!target.repository) throw new Error(`verify needs an image: HOST[:PORT]/REPO[:TAG|@DIGEST], not "${reference}"`);
    const admin = await adminClient(target, flags);
    const result = await admin.verify(target.repository, target.digest ?? target.tag ?? "latest", flags.mode);
    process.stdout.write(flags.json ? `${JSON.stringify(result, null, 2)}\n` : formatVerify(result));
    if (!result.ok) process.exitCode = 1;
  });

  for (const command of foreign.commands) command.hook("postAction", () => closeAllConnections());
  registerForeignCheck(foreign);
}

function adminFlags(command: Command): Command {
  return command.option("--json", "print a JSON document").option("--insecure", "use plain HTTP for the registry (loopback hosts always do)");
}

async function adminClient(target: ForeignTarget, flags: AdminFlags): Promise<ForeignAdminClient> {
  return new ForeignAdminClient(await new Client({ insecure: flags.insecure }).registry(target.registry));
}

function scopeOf(target: ForeignTarget): ForeignScope {
  const reference = target.digest ?? target.tag;
  return { ...(target.repository ? { repository: target.repository } : {}), ...(reference ? { reference } : {}) };
}

/**
 * `HOST[:PORT]`, `HOST/REPO`, `HOST/REPO:TAG`, `HOST/REPO@DIGEST` (optionally
 * `docker://`). Unlike a pull, the registry must be named: the admin API is
 * Ferry's, so there is no default registry to fall back to.
 */
export function parseForeignTarget(value: string): ForeignTarget {
  const bare = value.startsWith("docker://") ? value.slice("docker://".length) : value;
  const slash = bare.indexOf("/");
  const host = slash === -1 ? bare : bare.slice(0, slash);
  if (host === "" || !isRegistryHost(host)) {
    throw new Error(`"${value}" does not start with a registry: write HOST[:PORT][/REPO[:TAG|@DIGEST]] (e.g. localhost:5000/team/app:v1)`);
  }
  if (slash === -1 || slash === bare.length - 1) return { registry: host };
  const ref = parseImageReference(bare);
  return { registry: ref.registry, repository: ref.repository, ...(ref.tag ? { tag: ref.tag } : {}), ...(ref.digest ? { digest: ref.digest } : {}) };
}

function when(ms: number | null): string {
  return ms === null ? "-" : new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}

function duration(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join("  ")).join("\n") + "\n";
}

function recheckLine(recheck: ForeignSourcesAnswer["recheck"]): string {
  if (!recheck.interval) return "re-check off";
  const round = recheck.lastRound;
  const last = round?.finishedAt ? `last round ${when(round.finishedAt)}, ${round.checked} URL(s)` : "no round finished yet";
  return `re-check every ${duration(recheck.interval)} (${recheck.method ?? "head"}), ${last}`;
}

function sourceRow(s: ForeignSourceRow): string[] {
  const note = s.policy.allowed ? (s.lastError ?? "-") : `refused by policy (${s.policy.rule}): not fetched`;
  return [
    s.url,
    s.state,
    String(s.successes),
    String(s.failures),
    when(s.lastCheckedAt),
    s.averageLatencyMs === null ? "-" : `${s.averageLatencyMs}ms`,
    note,
  ];
}

export function formatStatus(sources: ForeignSourcesAnswer, layers: ForeignLayersAnswer): string {
  let out = `SOURCES (${recheckLine(sources.recheck)})\n`;
  if (sources.sources.length === 0) out += "  (no foreign layer URL known)\n";
  else out += table([["URL", "STATE", "OK", "FAILED", "LAST CHECK", "LATENCY", "LAST ERROR"], ...sources.sources.map(sourceRow)]);
  const cache = layers.cache;
  out += `\nFOREIGN LAYERS (proxy cache: ${cache.entries} blobs, ${cache.bytes} of ${cache.maxBytes} bytes)\n`;
  if (layers.layers.length === 0) return `${out}  (none)\n`;
  for (const layer of layers.layers) {
    out += `${layer.repository}  ${layer.digest}  ${layer.size} bytes  ${layer.verification}${layer.verifiedAt ? ` ${when(layer.verifiedAt)}` : ""}${layer.cached ? "  cached" : ""}\n`;
    for (const p of layer.policy) out += `    ${p.url}  ${p.allowed ? `${p.serve} (${p.rule})` : `refused: ${p.reason}`}\n`;
  }
  return out;
}

export function formatVerify(result: ForeignVerifyAnswer): string {
  let out = `${result.repository}@${result.manifest}: ${result.layers.length} foreign layer(s), mode ${result.mode}\n`;
  for (const layer of result.layers) {
    out += `${layer.verified ? "ok    " : "FAILED"}  ${layer.digest}  ${layer.size} bytes\n`;
    for (const attempt of layer.attempts) out += `        ${attempt.url}: ${attempt.answer}\n`;
    if (layer.attempts.length === 0) out += "        no URL may be fetched under the registry's policy\n";
  }
  out += result.ok ? "all foreign layers verified\n" : "some foreign layers could not be verified\n";
  return out;
}
