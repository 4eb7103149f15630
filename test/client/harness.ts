/**
 * What the client tests run against: a Ferry server, the reference registry
 * (CNCF distribution 2.8, /usr/bin/docker-registry) with a generated config,
 * foreign-layer servers on 127.0.0.1 that serve, lie or are down, image
 * fixtures (index layouts, docker-archives) and a `ferry` CLI runner.
 */
import { spawn, execFile, type ChildProcess } from "node:child_process";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import { mkdtemp, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createWriteStream } from "node:fs";
import { pipeline } from "node:stream/promises";
import bcrypt from "bcryptjs";
import tar from "tar-stream";
import { startTestRegistry } from "../helpers/registry.js";
import { startFerryServeOnS3 } from "../helpers/s3-serve.js";
import { sha256, writeLayout, type TestImage } from "../helpers/images.js";

export interface Target {
  name: string;
  /** host:port */
  host: string;
  url: string;
  close(): Promise<void>;
}

export async function startFerry(): Promise<Target> {
  const registry = await startTestRegistry();
  return { name: "ferry", host: registry.host, url: registry.url, close: () => registry.close() };
}

/** `ferry serve` with storage.driver s3 on the test Ceph RGW (skip with skipUnlessS3()). */
export async function startFerryServeOnS3Target(): Promise<Target> {
  const registry = await startFerryServeOnS3();
  return { name: "ferry-s3", ...registry };
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** The reference registry, optionally with htpasswd Basic auth. */
export async function startDistribution(options: { users?: Record<string, string>; extraConfig?: string[] } = {}): Promise<Target> {
  const dir = await mkdtemp(join(tmpdir(), "ferry-distribution-"));
  const port = await freePort();
  const lines = [
    "version: 0.1",
    "log:",
    "  level: error",
    "  accesslog:",
    "    disabled: true",
    "storage:",
    "  filesystem:",
    `    rootdirectory: ${join(dir, "data")}`,
    "  delete:",
    "    enabled: true",
    "http:",
    `  addr: 127.0.0.1:${port}`,
    "validation:",
    "  manifests:",
    "    urls:",
    "      allow:",
    "        - '^http://127\\.0\\.0\\.1'",
  ];
  if (options.users) {
    const htpasswd = Object.entries(options.users)
      .map(([user, password]) => `${user}:${bcrypt.hashSync(password, 4)}`)
      .join("\n");
    await writeFile(join(dir, "htpasswd"), `${htpasswd}\n`);
    lines.push("auth:", "  htpasswd:", "    realm: ferry-test", `    path: ${join(dir, "htpasswd")}`);
  }
  lines.push(...(options.extraConfig ?? []));
  await writeFile(join(dir, "config.yml"), `${lines.join("\n")}\n`);
  const child: ChildProcess = spawn("docker-registry", ["serve", join(dir, "config.yml")], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try {
      const response = await fetch(`${url}/v2/`);
      await response.arrayBuffer();
      break;
    } catch {
      if (i > 100 || child.exitCode !== null) throw new Error(`docker-registry did not start: ${stderr}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  return {
    name: "distribution",
    host: `127.0.0.1:${port}`,
    url,
    async close() {
      child.kill("SIGTERM");
      await new Promise((resolve) => (child.exitCode !== null ? resolve(null) : child.once("exit", resolve)));
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export type ForeignBehaviour = "serve" | "lie" | "missing" | "truncate";

/** A foreign-layer host on 127.0.0.1: serves `/blob/<name>` per behaviour and records every request's headers. */
export interface ForeignServer {
  url: string;
  requests: Array<{ method: string; path: string; headers: IncomingHttpHeaders }>;
  add(name: string, bytes: Buffer, behaviour?: ForeignBehaviour): string;
  close(): Promise<void>;
}

export async function startForeignServer(): Promise<ForeignServer> {
  const blobs = new Map<string, { bytes: Buffer; behaviour: ForeignBehaviour }>();
  const requests: ForeignServer["requests"] = [];
  const server: Server = createServer((req, res) => {
    requests.push({ method: req.method ?? "", path: req.url ?? "", headers: req.headers });
    const entry = blobs.get((req.url ?? "").replace(/^\/blob\//, ""));
    if (!entry || entry.behaviour === "missing") {
      res.writeHead(404).end("not here");
      return;
    }
    let body = entry.bytes;
    if (entry.behaviour === "lie") body = Buffer.from(body.map((b) => b ^ 0xff));
    if (entry.behaviour === "truncate") {
      res.writeHead(200, { "content-length": String(body.length) });
      res.write(body.subarray(0, Math.floor(body.length / 2)));
      res.destroy();
      return;
    }
    res.writeHead(200, { "content-length": String(body.length), "content-type": "application/octet-stream" });
    res.end(req.method === "HEAD" ? undefined : body);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    requests,
    add(name, bytes, behaviour = "serve") {
      blobs.set(name, { bytes, behaviour });
      return `${url}/blob/${name}`;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A URL on 127.0.0.1 where nothing listens. */
export async function deadUrl(name: string): Promise<string> {
  return `http://127.0.0.1:${await freePort()}/blob/${name}`;
}

/** An OCI index over images, written with the images into one layout under `tag`. */
export async function writeIndexLayout(dir: string, tag: string, images: Array<{ image: TestImage; platform: { os: string; architecture: string; variant?: string } }>): Promise<{ index: Buffer; digest: string }> {
  await writeLayout(dir, images.map((entry, i) => ({ tag: `child-${i}`, image: entry.image })));
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.index.v1+json",
      manifests: images.map(({ image, platform }) => ({ mediaType: image.mediaType, digest: image.manifestDigest, size: image.manifest.length, platform })),
    }),
  );
  const digest = sha256(index);
  await writeFile(join(dir, "blobs", "sha256", digest.slice(7)), index);
  await writeFile(
    join(dir, "index.json"),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{ mediaType: "application/vnd.oci.image.index.v1+json", digest, size: index.length, annotations: { "org.opencontainers.image.ref.name": tag } }],
    }),
  );
  return { index, digest };
}

/** A docker-save style tarball (`<id>/layer.tar`, `<id>.json`, manifest.json) with uncompressed layers. */
export async function writeDockerArchive(file: string, layers: Buffer[], repoTags: string[]): Promise<{ config: Buffer; diffIds: string[] }> {
  const diffIds = layers.map((l) => sha256(l));
  const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", config: {}, rootfs: { type: "layers", diff_ids: diffIds } }));
  const pack = tar.pack();
  const done = pipeline(pack, createWriteStream(file));
  const configName = `${sha256(config).slice(7)}.json`;
  pack.entry({ name: configName, size: config.length }, config);
  const names = layers.map((layer, i) => {
    const name = `${diffIds[i]!.slice(7)}/layer.tar`;
    pack.entry({ name, size: layer.length }, layer);
    return name;
  });
  const manifest = Buffer.from(JSON.stringify([{ Config: configName, RepoTags: repoTags, Layers: names }]));
  pack.entry({ name: "manifest.json", size: manifest.length }, manifest);
  pack.finalize();
  await done;
  return { config, diffIds };
}

/** A tar with one file of the given content (a valid uncompressed layer). */
export async function tarLayer(name: string, content: Buffer): Promise<Buffer> {
  const pack = tar.pack();
  pack.entry({ name, size: content.length, mtime: new Date(0), mode: 0o644 }, content);
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

export interface FerryResult {
  code: number;
  stdout: string;
  stderr: string;
}

const CLI = join(process.cwd(), "dist", "src", "cli", "main.js");

/** Runs the built `ferry` CLI with an isolated Docker config directory. */
export function ferry(args: string[], options: { dockerConfig?: string; stdin?: string } = {}): Promise<FerryResult> {
  return new Promise((resolve) => {
    const env = { ...process.env, DOCKER_CONFIG: options.dockerConfig ?? join(tmpdir(), "ferry-no-docker-config") };
    const child = execFile(process.execPath, [CLI, ...args], { env, maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout: String(stdout), stderr: String(stderr) });
    });
    child.stdin?.end(options.stdin ?? "");
  });
}

export async function readBlob(dir: string, digest: string): Promise<Buffer> {
  return readFile(join(dir, "blobs", "sha256", digest.slice(7)));
}

export async function tempDir(prefix = "ferry-client-"): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  await mkdir(dir, { recursive: true });
  return dir;
}
