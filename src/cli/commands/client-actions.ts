/**
 * What the client commands do (declared in client.ts). Loaded only when a
 * client command runs. Every action ends through runAction: a failure is
 * explained in a person's terms (src/client/explain.ts), printed on stderr
 * (and as a JSON `error` event with --json), and mapped to an exit code.
 */
import { readFile } from "node:fs/promises";
// Only what every command needs is imported here; layouts, archives, copy and progress bars load with the commands that use them.
import type { Client, ImageLocation, ImageSource, CopyResult } from "../../client/index.js";
import { eraseCredentials, storeCredentials, dockerConfigPath, type Credentials } from "../../client/credentials.js";
import type { RegistryClient, ManifestData } from "../../client/registry.js";
import { connect, type ConnectOptions } from "../../client/connect.js";
import { explain } from "../../client/explain.js";
import { ClientError, NotFoundError, UsageError } from "../../client/errors.js";
import { parseLocation, parseRegistryHost, parseRegistryReference, parseRepository } from "../../client/location.js";
import { destroyAllPools, type TlsSettings } from "../../client/http.js";
import { formatPlatform, hostPlatform, parsePlatform, type Platform, type ProgressEvent } from "../../client/image.js";
import { formatImageReference, manifestReferenceOf, type ImageReference } from "../../oci/image-reference.js";
import { parseManifest, type Descriptor } from "../../oci/manifest.js";
import { isValidTag } from "../../oci/reference.js";

interface RegistryFlags {
  insecure?: boolean;
  tlsVerify?: string | boolean;
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  creds?: string;
  authfile?: string;
  json?: boolean;
}

interface TransferFlags extends RegistryFlags {
  srcCreds?: string;
  destCreds?: string;
  jobs?: string;
  platform?: string;
  includeForeign?: boolean;
  quiet?: boolean;
}

const out = (text: string) => process.stdout.write(`${text}\n`);
const warnOnStderr = (registry: string, text: string): void => {
  process.stderr.write(`warning from ${registry}: ${text}\n`);
};

/** Runs one command: explains a failure, sets the exit code, closes idle connections so the process exits at once. */
export async function runAction(action: () => Promise<void>, flags: { json?: boolean }): Promise<void> {
  try {
    await action();
  } catch (error) {
    const explained = explain(error);
    process.stderr.write(`ferry: ${explained.message}\n`);
    if (flags.json) out(JSON.stringify({ type: "error", message: explained.message, exitCode: explained.exitCode, ...(explained.code ? { code: explained.code } : {}) }));
    process.exitCode = explained.exitCode;
  } finally {
    destroyAllPools();
  }
}

function parseCreds(value: string, flag: string): Credentials {
  const colon = value.indexOf(":");
  if (colon <= 0) throw new UsageError(`${flag} must be USER:PASSWORD`);
  return { username: value.slice(0, colon), password: value.slice(colon + 1) };
}

async function readPem(path: string, flag: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (error) {
    throw new UsageError(`${flag} ${path}: cannot read it (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
}

/** TLS settings from the flags; undefined when none was given (then loopback stays plain HTTP). */
async function tlsSettings(flags: RegistryFlags): Promise<TlsSettings | undefined> {
  const given = flags.tlsVerify !== undefined || flags.caFile || flags.certFile || flags.keyFile;
  if (!given) return undefined;
  if (flags.insecure) throw new UsageError("--insecure (plain HTTP) cannot be combined with TLS flags (--tls-verify, --ca-file, --cert-file, --key-file)");
  let verify = true;
  if (flags.tlsVerify !== undefined && flags.tlsVerify !== true) {
    const value = String(flags.tlsVerify).toLowerCase();
    if (value !== "true" && value !== "false") throw new UsageError(`--tls-verify takes true or false, not "${flags.tlsVerify}"`);
    verify = value === "true";
  }
  if (Boolean(flags.certFile) !== Boolean(flags.keyFile)) throw new UsageError("--cert-file and --key-file go together");
  return {
    rejectUnauthorized: verify,
    ...(flags.caFile ? { ca: await readPem(flags.caFile, "--ca-file") } : {}),
    ...(flags.certFile ? { cert: await readPem(flags.certFile, "--cert-file") } : {}),
    ...(flags.keyFile ? { key: await readPem(flags.keyFile, "--key-file") } : {}),
  };
}

async function connectOptions(flags: RegistryFlags, creds: string | undefined, flagName: string, onWarning: (registry: string, text: string) => void = warnOnStderr): Promise<ConnectOptions> {
  const tls = await tlsSettings(flags);
  return {
    insecure: flags.insecure,
    ...(flags.authfile ? { configPath: flags.authfile } : {}),
    ...(creds ? { credentials: parseCreds(creds, flagName) } : {}),
    ...(tls ? { tls } : {}),
    onWarning,
  };
}

async function makeClient(flags: RegistryFlags, creds: string | undefined, flagName: string, onWarning?: (registry: string, text: string) => void): Promise<Client> {
  const { Client } = await import("../../client/index.js");
  return new Client(await connectOptions(flags, creds, flagName, onWarning));
}

async function registryFor(flags: RegistryFlags, ref: ImageReference | string): Promise<RegistryClient> {
  return connect(typeof ref === "string" ? ref : ref.registry, await connectOptions(flags, flags.creds, "--creds"));
}

function platformFlag(value: string | undefined): Platform | undefined {
  if (value === undefined) return undefined;
  try {
    return parsePlatform(value);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

// ---------------------------------------------------------------- login

export async function login(registryArg: string, flags: RegistryFlags & { username?: string; password?: string; passwordStdin?: boolean }): Promise<void> {
  const registry = parseRegistryHost(registryArg);
  const { prompt } = await import("./prompt.js");
  if (flags.password !== undefined) {
    process.stderr.write("WARNING! --password on the command line is visible to other users and kept in shell history; use --password-stdin\n");
  }
  if (flags.password !== undefined && flags.passwordStdin) throw new UsageError("--password and --password-stdin exclude each other");
  const terminal = process.stdin.isTTY === true;
  let username = flags.username;
  if (!username) {
    if (!terminal || flags.passwordStdin) throw new UsageError("login needs --username (or run it on a terminal to be asked)");
    username = (await prompt("Username: ", false)).trim();
    if (!username) throw new UsageError("no user name given");
  }
  let password = flags.password;
  if (flags.passwordStdin) password = (await readStdin()).replace(/\r?\n$/, "");
  else if (password === undefined) {
    if (!terminal) throw new UsageError("login needs a password: --password-stdin (or run it on a terminal to be asked)");
    password = await prompt("Password: ", true);
  }
  if (!password) throw new UsageError("no password given");
  const credentials = { username, password };
  const tls = await tlsSettings(flags);
  // Prove the credentials before storing them.
  const { RegistryClient } = await import("../../client/registry.js");
  const client = new RegistryClient({ registry, insecure: flags.insecure, credentials, ...(tls ? { tls } : {}) });
  await client.ping();
  const path = flags.authfile ?? dockerConfigPath();
  await storeCredentials(registry, credentials, path);
  out(`Login Succeeded (credentials for ${registry} stored in ${path})`);
}

export async function logout(registryArg: string, flags: { authfile?: string }): Promise<void> {
  const registry = parseRegistryHost(registryArg);
  const removed = await eraseCredentials(registry, flags.authfile ?? dockerConfigPath());
  out(removed ? `Removed login credentials for ${registry}` : `Not logged in to ${registry}`);
}

// ---------------------------------------------------------------- transfers

export async function push(source: string, reference: string, flags: TransferFlags): Promise<void> {
  const src = parseLocation(source);
  if (src.kind === "registry") throw new UsageError(`push reads oci:DIR, oci-archive:FILE or docker-archive:FILE, not a registry (use ferry copy)`);
  await transfer(src, { kind: "registry", ref: parseRegistryReference(reference) }, flags);
}

export async function pull(reference: string, destination: string, flags: TransferFlags): Promise<void> {
  const dst = parseLocation(destination);
  if (dst.kind === "registry") throw new UsageError(`pull writes oci:DIR, oci-archive:FILE or docker-archive:FILE, not a registry (use ferry copy)`);
  await transfer({ kind: "registry", ref: parseRegistryReference(reference) }, dst, flags);
}

export async function copy(source: string, destination: string, flags: TransferFlags): Promise<void> {
  await transfer(parseLocation(source), parseLocation(destination), flags);
}

async function transfer(source: ImageLocation, destination: ImageLocation, flags: TransferFlags): Promise<void> {
  const jobs = Number(flags.jobs ?? 4);
  if (!Number.isInteger(jobs) || jobs < 1) throw new UsageError(`--jobs must be a positive integer, not "${flags.jobs}"`);
  const all = flags.platform === "all";
  let platform = all ? undefined : platformFlag(flags.platform);
  const { chooseOutputMode, createReporter } = await import("../../client/progress.js");
  const { copyImage } = await import("../../client/copy.js");
  const mode = chooseOutputMode(flags);
  const reporter = createReporter(mode);
  const onWarning = (registry: string, message: string) => reporter.onEvent({ type: "warning", registry, message });
  try {
    const srcClient = await makeClient(flags, flags.srcCreds ?? flags.creds, flags.srcCreds ? "--src-creds" : "--creds", onWarning);
    const dstClient = await makeClient(flags, flags.destCreds ?? flags.creds, flags.destCreds ? "--dest-creds" : "--creds", onWarning);
    const src = await srcClient.source(source);
    try {
      const repoTags = source.kind === "registry" && source.ref.tag ? [formatImageReference({ ...source.ref, digest: undefined })] : [];
      const dst = await dstClient.destination(destination, repoTags);
      if (all && dst.singleImage) throw new UsageError(`${dst.name} holds one image: --platform all needs a registry, oci: or oci-archive: destination`);
      if (!platform && !all && dst.singleImage) platform = await defaultPlatformFor(src, (e) => reporter.onEvent(e));
      const result = await copyImage(src, dst, { jobs, includeForeign: flags.includeForeign, onEvent: (e) => reporter.onEvent(e), ...(platform ? { platform } : {}) });
      reporter.finish();
      report(result, mode);
    } finally {
      await src.close();
    }
  } finally {
    reporter.finish();
  }
}

function report(result: CopyResult, mode: string): void {
  if (mode === "json") {
    out(JSON.stringify({ type: "result", ...result, foreignSkipped: result.foreignSkipped.map((d) => d.digest) }));
    return;
  }
  if (result.rewritten) {
    process.stderr.write(`--include-foreign uploaded foreign layers as regular layers: the manifest changed from ${result.sourceDigest} to ${result.digest}\n`);
  }
  if (mode !== "quiet") {
    const { copied, exists, mounted } = result.blobs;
    process.stderr.write(`${copied} blobs copied, ${exists} already present, ${mounted} mounted, ${result.foreignSkipped.length} foreign layers left at their URLs\n`);
  }
  out(result.digest);
}

/** A docker archive holds one image: for an index, take this machine's platform and say so. */
async function defaultPlatformFor(src: ImageSource, emit: (e: ProgressEvent) => void): Promise<Platform | undefined> {
  const root = await src.rootManifest();
  if (parseManifest(root.bytes, root.mediaType).kind !== "index") return undefined;
  const platform = hostPlatform();
  const { selectPlatform } = await import("../../client/copy.js");
  await selectPlatform(src, root, platform);
  emit({ type: "notice", message: `the source is a multi-platform index; writing ${formatPlatform(platform)} (choose with --platform)` });
  return platform;
}

// ---------------------------------------------------------------- reading

/** The manifest a reference names; with a platform, that platform's manifest out of an index. */
async function resolveManifest(client: RegistryClient, ref: ImageReference, platform?: Platform): Promise<ManifestData> {
  const root = await client.getManifest(ref.repository, manifestReferenceOf(ref));
  if (!platform) return root;
  const { RegistrySource } = await import("../../client/registry-image.js");
  const { selectPlatform } = await import("../../client/copy.js");
  return selectPlatform(new RegistrySource(client, ref), root, platform);
}

export async function inspect(reference: string, flags: RegistryFlags & { raw?: boolean }): Promise<void> {
  const ref = parseRegistryReference(reference);
  const client = await makeClient(flags, flags.creds, "--creds");
  const inspection = await client.inspect(ref);
  if (flags.raw) {
    process.stdout.write(inspection.manifest.bytes);
    return;
  }
  const { manifest, parsed, config } = inspection;
  const { formatBytes } = await import("../../client/progress.js");
  if (flags.json) {
    // The manifest as stored: every field the registry holds, in its order (not Ferry's re-parse).
    const stored = JSON.parse(manifest.bytes.toString("utf8")) as unknown;
    out(JSON.stringify({ reference: inspection.reference, digest: manifest.digest, mediaType: manifest.mediaType, size: manifest.bytes.length, manifest: stored, config }, null, 2));
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
}

export async function manifest(reference: string, flags: RegistryFlags & { platform?: string }): Promise<void> {
  const ref = parseRegistryReference(reference);
  const client = await registryFor(flags, ref);
  const data = await resolveManifest(client, ref, platformFlag(flags.platform));
  process.stdout.write(data.bytes);
}

export async function digest(reference: string, flags: RegistryFlags & { platform?: string }): Promise<void> {
  const ref = parseRegistryReference(reference);
  const client = await registryFor(flags, ref);
  const platform = platformFlag(flags.platform);
  if (!platform) {
    const head = await client.headManifest(ref.repository, manifestReferenceOf(ref));
    if (head) {
      out(head.digest);
      return;
    }
  }
  out((await resolveManifest(client, ref, platform)).digest);
}

export async function config(reference: string, flags: RegistryFlags & { platform?: string }): Promise<void> {
  const ref = parseRegistryReference(reference);
  const client = await registryFor(flags, ref);
  const data = await resolveManifest(client, ref, platformFlag(flags.platform) ?? hostPlatform());
  const parsed = parseManifest(data.bytes, data.mediaType);
  if (parsed.kind !== "image" || !parsed.config) throw new ClientError(`${formatImageReference(ref)} has no config`);
  const bytes = await readVerified(client, ref.repository, parsed.config);
  process.stdout.write(bytes);
}

async function readVerified(client: RegistryClient, repository: string, descriptor: Descriptor): Promise<Buffer> {
  const { VerifyingStream } = await import("../../client/verify.js");
  const stream = await client.openBlob(repository, descriptor.digest);
  const verifier = new VerifyingStream(descriptor.digest, descriptor.size);
  stream.on("error", (error) => verifier.destroy(error));
  const chunks: Buffer[] = [];
  for await (const chunk of stream.pipe(verifier) as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks);
}

export async function blobGet(reference: string, flags: RegistryFlags & { output?: string }): Promise<void> {
  const ref = parseRegistryReference(reference);
  if (!ref.digest || ref.tag) throw new UsageError(`"${reference}": blob get needs HOST/REPO@DIGEST`);
  const client = await registryFor(flags, ref);
  const size = await client.blobSize(ref.repository, ref.digest);
  if (size === undefined || size < 0) throw new NotFoundError(`blob ${ref.digest} not found in ${ref.registry}/${ref.repository}`);
  const stream = await client.openBlob(ref.repository, ref.digest);
  const { VerifyingStream } = await import("../../client/verify.js");
  const verifier = new VerifyingStream(ref.digest, size);
  stream.on("error", (error) => verifier.destroy(error));
  stream.pipe(verifier);
  const { pipeline } = await import("node:stream/promises");
  if (!flags.output) {
    await pipeline(verifier, process.stdout, { end: false });
    return;
  }
  // Into a temporary file renamed into place once the digest matched: no partial or wrong file under the name.
  const { createWriteStream } = await import("node:fs");
  const { rename, rm } = await import("node:fs/promises");
  const temp = `${flags.output}.${process.pid}.part`;
  try {
    await pipeline(verifier, createWriteStream(temp));
    await rename(temp, flags.output);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
}

export async function tags(repository: string, flags: RegistryFlags): Promise<void> {
  const ref = parseRepository(repository);
  const client = await registryFor(flags, ref);
  const list = await client.listTags(ref.repository);
  if (flags.json) out(JSON.stringify({ Repository: `${ref.registry}/${ref.repository}`, Tags: list }));
  else for (const tag of list) out(tag);
}

export async function catalog(registryArg: string, flags: RegistryFlags): Promise<void> {
  const registry = parseRegistryHost(registryArg);
  const client = await registryFor(flags, registry);
  const repositories = await client.catalog();
  if (flags.json) out(JSON.stringify({ Registry: registry, Repositories: repositories }));
  else for (const repository of repositories) out(repository);
}

// ---------------------------------------------------------------- writing

export async function tag(reference: string, newTag: string, flags: RegistryFlags): Promise<void> {
  const ref = parseRegistryReference(reference);
  if (!isValidTag(newTag)) throw new UsageError(`"${newTag}" is not a valid tag (letters, digits, _ . -, at most 128, not starting with . or -)`);
  const client = await registryFor(flags, ref);
  const data = await client.getManifest(ref.repository, manifestReferenceOf(ref));
  await client.putManifest(ref.repository, newTag, data);
  process.stderr.write(`Tagged ${ref.registry}/${ref.repository}:${newTag}\n`);
  out(data.digest);
}

export async function untag(reference: string, flags: RegistryFlags): Promise<void> {
  const ref = parseRegistryReference(reference);
  if (!ref.tag || ref.digest) throw new UsageError(`"${reference}": untag needs HOST/REPO:TAG (to delete a manifest by digest, use ferry rm)`);
  const client = await registryFor(flags, ref);
  await client.deleteTag(ref.repository, ref.tag);
  out(`Untagged ${ref.registry}/${ref.repository}:${ref.tag}`);
}

export async function rm(reference: string, flags: RegistryFlags): Promise<void> {
  const ref = parseRegistryReference(reference);
  const client = await registryFor(flags, ref);
  let manifestDigest = ref.digest;
  if (!manifestDigest) {
    const head = await client.headManifest(ref.repository, ref.tag ?? "latest");
    if (!head) throw new NotFoundError(`image not found: ${formatImageReference(ref)}`);
    manifestDigest = head.digest;
  }
  await client.deleteManifest(ref.repository, manifestDigest);
  out(`Deleted ${ref.registry}/${ref.repository}@${manifestDigest}`);
}

export async function referrers(reference: string, flags: RegistryFlags & { artifactType?: string }): Promise<void> {
  const ref = parseRegistryReference(reference);
  const client = await registryFor(flags, ref);
  let subject = ref.digest;
  if (!subject) {
    const head = await client.headManifest(ref.repository, manifestReferenceOf(ref));
    subject = head?.digest ?? (await client.getManifest(ref.repository, manifestReferenceOf(ref))).digest;
  }
  const { manifests } = await client.referrers(ref.repository, subject, flags.artifactType);
  if (flags.json) {
    out(JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests }, null, 2));
    return;
  }
  const { formatBytes } = await import("../../client/progress.js");
  for (const m of manifests) out(`${m.digest}  ${m.artifactType ?? m.mediaType}  ${formatBytes(m.size)}`);
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks).toString("utf8");
}

