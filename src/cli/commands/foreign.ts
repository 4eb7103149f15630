/**
 * `ferry foreign status|verify` (server side): both ask a running registry's
 * federation admin API (/ferry/v1/foreign/...). `check` comes from
 * foreign-check.ts (client side, owned by the client work).
 */
import type { SourceHealthRecord } from "../../metadata/meta-store.js";
import type { Command } from "commander";
import { registerForeignCheck } from "./foreign-check.js";

interface AdminFlags {
  registry: string;
  user?: string;
  json?: boolean;
}

/** A row of GET /ferry/v1/foreign/sources. */
type SourceRow = SourceHealthRecord & { healthy: boolean };

interface LayerRow {
  repository: string;
  digest: string;
  size: number;
  verification: string;
  verifiedAt: number | null;
  cached: boolean;
  manifests: string[];
  policy: Array<{ url: string; allowed: boolean; serve?: string; rule: string; reason?: string }>;
}

interface VerifyResult {
  repository: string;
  manifest: string;
  mode: string;
  ok: boolean;
  layers: Array<{ digest: string; size: number; verified: boolean; attempts: Array<{ url: string; ok: boolean; answer: string }> }>;
}

// No FERRY_* environment defaults here: the config loader reads every FERRY_* variable as a config key.
const DEFAULT_REGISTRY = "http://127.0.0.1:5000";

export function registerForeignCommands(program: Command): void {
  const foreign = program.command("foreign").description("foreign (federated) layers");

  withAdminFlags(
    foreign
      .command("status")
      .description("show foreign layer sources' health and the foreign layers a running registry knows")
      .option("--repository <name>", "only this repository's foreign layers"),
  ).action(async (flags: AdminFlags & { repository?: string }) => {
    const sources = await admin<{ sources: SourceRow[] }>(flags, "GET", "/ferry/v1/foreign/sources");
    const query = flags.repository ? `?repository=${encodeURIComponent(flags.repository)}` : "";
    const layers = await admin<{ layers: LayerRow[]; cache: { entries: number; bytes: number; maxBytes: number } }>(flags, "GET", `/ferry/v1/foreign/layers${query}`);
    if (flags.json) {
      process.stdout.write(`${JSON.stringify({ sources: sources.sources, layers: layers.layers, cache: layers.cache }, null, 2)}\n`);
      return;
    }
    process.stdout.write(formatStatus(sources.sources, layers.layers, layers.cache));
  });

  withAdminFlags(
    foreign
      .command("verify")
      .description("ask a running registry to verify an image's foreign layers now (exit 1 if any fails)")
      .argument("<image>", "repository[:tag] or repository@digest (tag defaults to latest)")
      .option("--mode <mode>", "head (reachable, size matches) or fetch (download, digest verified)"),
  ).action(async (image: string, flags: AdminFlags & { mode?: string }) => {
    const { repository, reference } = splitImage(image);
    const params = new URLSearchParams({ repository, reference });
    if (flags.mode) params.set("mode", flags.mode);
    const result = await admin<VerifyResult>(flags, "POST", `/ferry/v1/foreign/verify?${params}`);
    process.stdout.write(flags.json ? `${JSON.stringify(result, null, 2)}\n` : formatVerify(result));
    if (!result.ok) process.exitCode = 1;
  });

  registerForeignCheck(foreign);
}

function withAdminFlags(command: Command): Command {
  return command
    .option("--registry <url>", "base URL of the running registry", DEFAULT_REGISTRY)
    .option("-u, --user <name:password>", "admin credentials (HTTP basic)")
    .option("--json", "print the registry's JSON answer");
}

export function splitImage(image: string): { repository: string; reference: string } {
  const at = image.indexOf("@");
  if (at !== -1) return { repository: image.slice(0, at), reference: image.slice(at + 1) };
  const colon = image.lastIndexOf(":");
  if (colon > image.lastIndexOf("/")) return { repository: image.slice(0, colon), reference: image.slice(colon + 1) };
  return { repository: image, reference: "latest" };
}

async function admin<T>(flags: AdminFlags, method: string, path: string): Promise<T> {
  const base = flags.registry.replace(/\/+$/, "");
  const headers: Record<string, string> = { Accept: "application/json" };
  const user = flags.user;
  if (user) headers.Authorization = `Basic ${Buffer.from(user).toString("base64")}`;
  let res: Response;
  try {
    res = await fetch(`${base}${path}`, { method, headers });
  } catch (error) {
    throw new Error(`cannot reach the registry at ${base}: ${((error as Error).cause as Error | undefined)?.message ?? (error as Error).message}`);
  }
  const text = await res.text();
  if (!res.ok) {
    let message = text.slice(0, 500);
    try {
      const body = JSON.parse(text) as { errors?: Array<{ code: string; message: string }> };
      if (body.errors?.length) message = body.errors.map((e) => `${e.code}: ${e.message}`).join("; ");
    } catch {
      // not JSON: show the text as is
    }
    throw new Error(`${base} answered ${res.status}: ${message}`);
  }
  return JSON.parse(text) as T;
}

function when(ms: number | null): string {
  return ms === null ? "-" : new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join("  ")).join("\n") + "\n";
}

export function formatStatus(sources: SourceRow[], layers: LayerRow[], cache: { entries: number; bytes: number; maxBytes: number }): string {
  let out = "SOURCES\n";
  if (sources.length === 0) out += "  (no source contacted yet)\n";
  else {
    out += table([
      ["HOST", "HEALTH", "OK", "FAILED", "LAST SUCCESS", "LAST FAILURE", "LATENCY", "LAST ERROR"],
      ...sources.map((s) => [
        s.host,
        s.healthy ? "healthy" : "failing",
        String(s.successes),
        String(s.failures),
        when(s.lastSuccessAt),
        when(s.lastFailureAt),
        s.averageLatencyMs === null ? "-" : `${s.averageLatencyMs}ms`,
        s.lastError ?? "-",
      ]),
    ]);
  }
  out += `\nFOREIGN LAYERS (proxy cache: ${cache.entries} blobs, ${cache.bytes} of ${cache.maxBytes} bytes)\n`;
  if (layers.length === 0) return `${out}  (none)\n`;
  for (const layer of layers) {
    out += `${layer.repository}  ${layer.digest}  ${layer.size} bytes  ${layer.verification}${layer.verifiedAt ? ` ${when(layer.verifiedAt)}` : ""}${layer.cached ? "  cached" : ""}\n`;
    for (const p of layer.policy) out += `    ${p.url}  ${p.allowed ? `${p.serve} (${p.rule})` : `refused: ${p.reason}`}\n`;
  }
  return out;
}

export function formatVerify(result: VerifyResult): string {
  let out = `${result.repository}@${result.manifest}: ${result.layers.length} foreign layer(s), mode ${result.mode}\n`;
  for (const layer of result.layers) {
    out += `${layer.verified ? "ok    " : "FAILED"}  ${layer.digest}  ${layer.size} bytes\n`;
    for (const attempt of layer.attempts) out += `        ${attempt.url}: ${attempt.answer}\n`;
    if (layer.attempts.length === 0) out += "        no URL may be fetched under the registry's policy\n";
  }
  out += result.ok ? "all foreign layers verified\n" : "some foreign layers could not be verified\n";
  return out;
}
