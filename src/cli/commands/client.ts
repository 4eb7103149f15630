/**
 * Client commands: login, logout, push, pull, copy, inspect, tags, rm, catalog.
 * Results go to stdout (a digest, a list, JSON with --json); progress and
 * notices go to stderr.
 */
import type { Command } from "commander";
import { Client, closeAllConnections, copyImage, hostPlatform, parseLocation, parsePlatform, formatPlatform, type ImageLocation, type ImageSource, type CopyResult } from "../../client/index.js";
import { eraseCredentials, storeCredentials, dockerConfigPath } from "../../client/credentials.js";
import { RegistryClient } from "../../client/registry.js";
import { chooseOutputMode, createReporter, formatBytes } from "../../client/progress.js";
import { selectPlatform } from "../../client/copy.js";
import { parseImageReference, parseRepositoryReference, formatImageReference } from "../../oci/image-reference.js";
import { parseManifest } from "../../oci/manifest.js";

interface CommonFlags {
  insecure?: boolean;
  quiet?: boolean;
  json?: boolean;
}

interface TransferFlags extends CommonFlags {
  jobs?: string;
  platform?: string;
  includeForeign?: boolean;
}

const out = (text: string) => process.stdout.write(`${text}\n`);

function transferOptions(command: Command): Command {
  return command
    .option("--platform <os/arch[/variant]>", "copy one platform of an index (default: the whole index)")
    .option("-j, --jobs <n>", "parallel layer transfers", "4")
    .option("--include-foreign", "upload foreign layers' bytes as regular layers (changes the manifest digest)")
    .option("--insecure", "use plain HTTP for the registry (loopback hosts always do)")
    .option("-q, --quiet", "no progress output")
    .option("--json", "JSON lines on stdout (events and the result)");
}

const CLIENT_COMMANDS = new Set(["login", "logout", "push", "pull", "copy", "inspect", "tags", "rm", "catalog"]);

export function registerClientCommands(program: Command): void {
  registerAll(program);
  // Idle keep-alive connections would hold the process open for seconds after the work is done.
  for (const command of program.commands) {
    if (CLIENT_COMMANDS.has(command.name())) command.hook("postAction", () => closeAllConnections());
  }
}

function registerAll(program: Command): void {
  program
    .command("login")
    .description("store credentials for a registry in the Docker config.json (or its credential helper)")
    .argument("<registry>", "host[:port]")
    .option("-u, --username <user>", "user name")
    .option("-p, --password <password>", "password (prefer --password-stdin)")
    .option("--password-stdin", "read the password from stdin")
    .option("--insecure", "use plain HTTP")
    .action(async (registry: string, flags: { username?: string; password?: string; passwordStdin?: boolean; insecure?: boolean }) => {
      if (!flags.username) throw new Error("login needs --username");
      const password = flags.passwordStdin ? (await readStdin()).replace(/\r?\n$/, "") : flags.password;
      if (!password) throw new Error("login needs a password: --password-stdin (recommended) or --password");
      const credentials = { username: flags.username, password };
      // Prove the credentials before storing them.
      const client = new RegistryClient({ registry, insecure: flags.insecure, credentials });
      await client.ping();
      await storeCredentials(registry, credentials);
      out(`Login Succeeded (credentials for ${registry} stored in ${dockerConfigPath()})`);
    });

  program
    .command("logout")
    .description("remove stored credentials for a registry")
    .argument("<registry>", "host[:port]")
    .action(async (registry: string) => {
      const removed = await eraseCredentials(registry);
      out(removed ? `Removed login credentials for ${registry}` : `Not logged in to ${registry}`);
    });

  transferOptions(
    program
      .command("push")
      .description("push an image from oci:DIR[:TAG] or docker-archive:FILE to a registry")
      .argument("<source>", "oci:DIR[:TAG] or docker-archive:FILE")
      .argument("<reference>", "host[:port]/repository[:tag]"),
  ).action(async (source: string, reference: string, flags: TransferFlags) => {
    const src = parseLocation(source);
    if (src.kind === "registry") throw new Error(`push reads oci:DIR or docker-archive:FILE, not a registry (use ferry copy)`);
    await transfer(src, { kind: "registry", ref: parseImageReference(reference) }, flags);
  });

  transferOptions(
    program
      .command("pull")
      .description("pull an image from a registry into oci:DIR[:TAG] or docker-archive:FILE")
      .argument("<reference>", "host[:port]/repository[:tag|@digest]")
      .argument("<destination>", "oci:DIR[:TAG] or docker-archive:FILE"),
  ).action(async (reference: string, destination: string, flags: TransferFlags) => {
    const dst = parseLocation(destination);
    if (dst.kind === "registry") throw new Error(`pull writes oci:DIR or docker-archive:FILE, not a registry (use ferry copy)`);
    await transfer({ kind: "registry", ref: parseImageReference(reference) }, dst, flags);
  });

  transferOptions(
    program
      .command("copy")
      .description("copy an image between registries and layouts, streaming; mounts blobs within one registry")
      .argument("<source>", "host/repo:tag, oci:DIR[:TAG] or docker-archive:FILE")
      .argument("<destination>", "host/repo:tag, oci:DIR[:TAG] or docker-archive:FILE"),
  ).action(async (source: string, destination: string, flags: TransferFlags) => {
    await transfer(parseLocation(source), parseLocation(destination), flags);
  });

  program
    .command("inspect")
    .description("show an image's manifest, config and layers (sizes, foreign URLs)")
    .argument("<reference>", "host[:port]/repository[:tag|@digest]")
    .option("--raw", "print the manifest bytes exactly as the registry serves them")
    .option("--json", "print a JSON document")
    .option("--insecure", "use plain HTTP")
    .action(async (reference: string, flags: CommonFlags & { raw?: boolean }) => {
      const client = new Client({ insecure: flags.insecure });
      const inspection = await client.inspect(parseImageReference(reference));
      if (flags.raw) {
        process.stdout.write(inspection.manifest.bytes);
        return;
      }
      const { manifest, parsed, config } = inspection;
      if (flags.json) {
        out(JSON.stringify({ reference: inspection.reference, digest: manifest.digest, mediaType: manifest.mediaType, manifest: parsed, config }, null, 2));
        return;
      }
      out(`Reference:  ${inspection.reference}`);
      out(`Digest:     ${manifest.digest}`);
      out(`MediaType:  ${manifest.mediaType}`);
      if (parsed.kind === "index") {
        out("Manifests:");
        for (const m of parsed.manifests) out(`  ${m.digest}  ${formatPlatform(m.platform)}  ${m.mediaType}  ${formatBytes(m.size)}`);
        return;
      }
      const cfg = (config ?? {}) as { os?: string; architecture?: string; variant?: string; created?: string };
      out(`Platform:   ${formatPlatform(cfg as Record<string, unknown>)}`);
      if (cfg.created) out(`Created:    ${cfg.created}`);
      out(`Config:     ${parsed.config!.digest} (${parsed.config!.mediaType}, ${formatBytes(parsed.config!.size)})`);
      const total = parsed.layers.reduce((sum, l) => sum + l.size, 0);
      out(`Layers:     ${parsed.layers.length} (${formatBytes(total)})`);
      for (const layer of parsed.layers) {
        out(`  ${layer.digest}  ${formatBytes(layer.size)} (${layer.size} bytes)  ${layer.mediaType}`);
        for (const url of layer.urls ?? []) out(`      foreign: ${url}`);
      }
    });

  program
    .command("tags")
    .description("list a repository's tags")
    .argument("<repository>", "host[:port]/repository")
    .option("--json", "print a JSON array")
    .option("--insecure", "use plain HTTP")
    .action(async (repository: string, flags: CommonFlags) => {
      const ref = parseRepositoryReference(repository);
      const client = await new Client({ insecure: flags.insecure }).registry(ref.registry);
      const tags = await client.listTags(ref.repository);
      if (flags.json) out(JSON.stringify(tags));
      else for (const tag of tags) out(tag);
    });

  program
    .command("rm")
    .description("delete a manifest (a tag is resolved to its digest first, as skopeo delete does)")
    .argument("<reference>", "host[:port]/repository:tag or @digest")
    .option("--insecure", "use plain HTTP")
    .action(async (reference: string, flags: CommonFlags) => {
      const ref = parseImageReference(reference);
      const client = await new Client({ insecure: flags.insecure }).registry(ref.registry);
      let digest = ref.digest;
      if (!digest) {
        const head = await client.headManifest(ref.repository, ref.tag ?? "latest");
        if (!head) throw new Error(`${formatImageReference(ref)}: no such manifest`);
        digest = head.digest;
      }
      await client.deleteManifest(ref.repository, digest);
      out(`Deleted ${ref.registry}/${ref.repository}@${digest}`);
    });

  program
    .command("catalog")
    .description("list the repositories of a registry")
    .argument("<registry>", "host[:port]")
    .option("--json", "print a JSON array")
    .option("--insecure", "use plain HTTP")
    .action(async (registry: string, flags: CommonFlags) => {
      const client = await new Client({ insecure: flags.insecure }).registry(registry);
      const repositories = await client.catalog();
      if (flags.json) out(JSON.stringify(repositories));
      else for (const repository of repositories) out(repository);
    });
}

async function transfer(source: ImageLocation, destination: ImageLocation, flags: TransferFlags): Promise<void> {
  const jobs = Number(flags.jobs ?? 4);
  if (!Number.isInteger(jobs) || jobs < 1) throw new Error(`--jobs must be a positive integer, not "${flags.jobs}"`);
  const client = new Client({ insecure: flags.insecure });
  const src = await client.source(source);
  const repoTags = source.kind === "registry" && source.ref.tag ? [formatImageReference({ ...source.ref, digest: undefined })] : [];
  const dst = await client.destination(destination, repoTags);
  const mode = chooseOutputMode(flags);
  const reporter = createReporter(mode);
  let platform = flags.platform ? parsePlatform(flags.platform) : undefined;
  if (!platform && dst.singleImage) platform = await defaultPlatformFor(src, reporter.onEvent);
  let result: CopyResult;
  try {
    result = await copyImage(src, dst, { jobs, includeForeign: flags.includeForeign, onEvent: (e) => reporter.onEvent(e), ...(platform ? { platform } : {}) });
  } finally {
    reporter.finish();
    await src.close();
  }
  if (mode === "json") {
    out(JSON.stringify({ type: "result", ...result, foreignSkipped: result.foreignSkipped.map((d) => d.digest) }));
    return;
  }
  if (result.rewritten) {
    process.stderr.write(
      `--include-foreign uploaded foreign layers as regular layers: the manifest changed from ${result.sourceDigest} to ${result.digest}\n`,
    );
  }
  if (mode !== "quiet") {
    const { copied, exists, mounted } = result.blobs;
    process.stderr.write(
      `${copied} blobs copied, ${exists} already present, ${mounted} mounted, ${result.foreignSkipped.length} foreign layers left at their URLs\n`,
    );
  }
  out(result.digest);
}

/** A docker archive holds one image: for an index, take this machine's platform and say so. */
async function defaultPlatformFor(src: ImageSource, emit: (e: { type: "notice"; message: string }) => void) {
  const root = await src.rootManifest();
  if (parseManifest(root.bytes, root.mediaType).kind !== "index") return undefined;
  const platform = hostPlatform();
  await selectPlatform(src, root, platform);
  emit({ type: "notice", message: `the source is a multi-platform index; writing ${formatPlatform(platform)} (choose with --platform)` });
  return platform;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks).toString("utf8");
}
