/**
 * Uploads and resilience: a blob goes up in one streamed PUT; a source that
 * does not match its digest never completes an upload; a chunked upload cut
 * off in the middle of a PATCH resumes from the offset the registry reports
 * instead of starting over; a copy whose streamed PUT is cut retries in
 * resumable chunks; transient 503s are retried with backoff. A proxy in front
 * of a Ferry server does the damage.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createServer, request as httpRequest, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client, copyImage, parseLocation } from "../../src/client/index.js";
import { SourceError } from "../../src/client/errors.js";
import { DEFAULT_CHUNK_SIZE, RegistryClient } from "../../src/client/registry.js";
import { buildImage, sha256, writeLayout } from "../helpers/images.js";
import { startFerry, type Target } from "./harness.js";

interface Seen {
  method: string;
  path: string;
  forwardedBytes: number;
}

let target: Target;
let proxy: Server;
let proxyHost: string;
const seen: Seen[] = [];
/** Which request to sabotage: returns "cut" (forward half the body, then drop), "503", or nothing. */
let sabotage: (method: string, path: string, index: number) => "cut" | "503" | undefined = () => undefined;

before(async () => {
  target = await startFerry();
  const [host, port] = target.host.split(":");
  proxy = createServer((req, res) => {
    const entry: Seen = { method: req.method ?? "", path: req.url ?? "", forwardedBytes: 0 };
    seen.push(entry);
    const action = sabotage(entry.method, entry.path, seen.length - 1);
    if (action === "503") {
      req.resume();
      res.writeHead(503, { "content-type": "application/json" }).end('{"errors":[{"code":"UNAVAILABLE","message":"try later"}]}');
      return;
    }
    const upstream = httpRequest({ host, port: Number(port), method: req.method, path: req.url, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    upstream.on("error", () => res.destroy());
    // A client that aborts its request (e.g. a failed digest check) aborts the upstream one too, as a real connection would.
    req.on("close", () => {
      if (!req.complete) upstream.destroy();
    });
    const limit = action === "cut" ? Math.floor(Number(req.headers["content-length"] ?? 0) / 2) : Infinity;
    req.on("data", (chunk: Buffer) => {
      if (entry.forwardedBytes >= limit) return;
      const part = chunk.subarray(0, Math.max(0, limit - entry.forwardedBytes));
      entry.forwardedBytes += part.length;
      upstream.write(part);
      if (entry.forwardedBytes >= limit) {
        // The connection dies mid-chunk: the registry sees an aborted request, the client a reset.
        setTimeout(() => {
          upstream.destroy();
          req.socket.destroy();
        }, 50);
      }
    });
    req.on("end", () => {
      if (entry.forwardedBytes < limit || limit === Infinity) upstream.end();
    });
  });
  await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
  proxyHost = `127.0.0.1:${(proxy.address() as AddressInfo).port}`;
});

after(async () => {
  proxy.closeAllConnections();
  proxy.close();
  await target.close();
});

test("an upload interrupted in the middle of a chunk resumes from the registry's offset", async () => {
  const chunkSize = 256 * 1024;
  const data = randomBytes(4 * chunkSize + 1000);
  const digest = sha256(data);
  seen.length = 0;
  let patches = 0;
  sabotage = (method) => (method === "PATCH" && ++patches === 2 ? "cut" : undefined);
  const client = new RegistryClient({ registry: proxyHost, backoffMs: 10 });
  const progress: number[] = [];
  const source = Readable.from((function* () {
    for (let i = 0; i < data.length; i += 64 * 1024) yield data.subarray(i, i + 64 * 1024);
  })());
  await client.uploadBlob("resume/test", digest, data.length, source, { chunkSize, onProgress: (n) => progress.push(n) });

  const stored = await fetch(`${target.url}/v2/resume/test/blobs/${digest}`);
  assert.equal(stored.status, 200);
  assert.deepEqual(Buffer.from(await stored.arrayBuffer()), data);
  const cut = seen.findIndex((s) => s.method === "PATCH" && s.forwardedBytes === chunkSize / 2);
  assert.ok(cut > 0, "the second PATCH was cut in half");
  assert.ok(seen.slice(cut + 1).some((s) => s.method === "GET" && s.path.includes("/blobs/uploads/")), "the client asked the registry how much arrived");
  const sent = seen.filter((s) => s.method === "PATCH" || s.method === "PUT").reduce((sum, s) => sum + s.forwardedBytes, 0);
  assert.ok(sent < data.length + chunkSize, `resumed, not restarted: ${sent} bytes sent for ${data.length}`);
  assert.equal(progress.at(-1), data.length);
});

test("transient 503 answers are retried with backoff", async () => {
  seen.length = 0;
  let failures = 0;
  sabotage = (method, path) => (method === "GET" && path.endsWith("/tags/list") && failures++ < 2 ? "503" : undefined);
  const blob = randomBytes(1000);
  const client = new RegistryClient({ registry: proxyHost, backoffMs: 10 });
  await client.uploadBlob("retry/test", sha256(blob), blob.length, Readable.from([blob]));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha256(blob), size: blob.length },
      layers: [],
    }),
  );
  await client.putManifest("retry/test", "t1", { bytes: manifest, mediaType: "application/vnd.oci.image.manifest.v1+json", digest: sha256(manifest) });
  assert.deepEqual(await client.listTags("retry/test"), ["t1"]);
  assert.equal(seen.filter((s) => s.path.endsWith("/tags/list")).length, 3, "two 503s, then success");

  failures = -Infinity; // always 503
  const impatient = new RegistryClient({ registry: proxyHost, backoffMs: 1, attempts: 2 });
  await assert.rejects(impatient.listTags("retry/test"), /HTTP 503 UNAVAILABLE: try later/);
});

test("a blob goes up in one streamed PUT: the whole body in one request with its Content-Length, no PATCH", async () => {
  const data = randomBytes(3 * 1024 * 1024 + 17);
  const digest = sha256(data);
  seen.length = 0;
  sabotage = () => undefined;
  const client = new RegistryClient({ registry: proxyHost, backoffMs: 10 });
  await client.uploadBlob("monolithic/test", digest, data.length, Readable.from(pieces(data, 100_000)));
  const uploads = seen.filter((s) => s.path.includes("/blobs/uploads/"));
  assert.deepEqual(uploads.map((s) => s.method), ["POST", "PUT"]);
  assert.equal(uploads[1]!.forwardedBytes, data.length);
  const stored = await fetch(`${target.url}/v2/monolithic/test/blobs/${digest}`);
  assert.deepEqual(Buffer.from(await stored.arrayBuffer()), data);
});

test("a source whose bytes do not match the digest or size fails the upload, and the registry never has the blob", async () => {
  sabotage = () => undefined;
  const client = new RegistryClient({ registry: proxyHost, backoffMs: 10 });
  const data = randomBytes(3 * 1024 * 1024);
  const digest = sha256(data);
  const wrong = Buffer.from(data);
  wrong[wrong.length - 1] = wrong[wrong.length - 1]! ^ 1;
  for (const [label, bytes, options] of [
    ["wrong last byte, streamed PUT", wrong, {}],
    ["wrong last byte, chunked", wrong, { chunkSize: 1024 * 1024 }],
    ["short source", data.subarray(0, data.length - 1), {}],
  ] as const) {
    seen.length = 0;
    await assert.rejects(
      client.uploadBlob("mismatch/test", digest, data.length, Readable.from(pieces(bytes, 64 * 1024)), options),
      (error: Error) => error instanceof SourceError && /digest mismatch|size mismatch/.test(error.message),
      label,
    );
    const head = await fetch(`${target.url}/v2/mismatch/test/blobs/${digest}`, { method: "HEAD" });
    assert.equal(head.status, 404, `${label}: nothing committed`);
    assert.ok(seen.some((s) => s.method === "DELETE" && s.path.includes("/blobs/uploads/")), `${label}: the session is cancelled`);
  }
});

test("a copy whose streamed PUT is cut off retries the blob in resumable chunks", async () => {
  const work = await mkdtemp(join(tmpdir(), "ferry-resume-"));
  try {
    const image = await buildImage({ layers: [{ "big.bin": randomBytes(DEFAULT_CHUNK_SIZE + 1024 * 1024) }] });
    const layer = image.layers[0]!;
    await writeLayout(join(work, "src"), [{ tag: "v1", image }]);
    seen.length = 0;
    let cut = false;
    // The first PUT that carries a body (the layer's; the config's is small) is cut in half.
    sabotage = (method, path) => {
      if (cut || method !== "PUT" || !path.includes("/blobs/uploads/") || !path.includes(encodeURIComponent(layer.digest))) return undefined;
      cut = true;
      return "cut";
    };
    const client = new Client({ configPath: join(work, "no-config.json") });
    const result = await copyImage(
      await client.source(parseLocation(`oci:${join(work, "src")}:v1`)),
      await client.destination(parseLocation(`${proxyHost}/cut/test:v1`)),
      { jobs: 1 },
    );
    assert.equal(result.digest, image.manifestDigest);
    const first = seen.findIndex((s) => s.method === "PUT" && s.path.includes("/blobs/uploads/"));
    assert.ok(first >= 0 && cut, "a blob PUT was cut");
    const after = seen.slice(first + 1);
    assert.ok(after.some((s) => s.method === "PATCH" && s.forwardedBytes === DEFAULT_CHUNK_SIZE), "the retry sent resumable chunks");
    const stored = await fetch(`${target.url}/v2/cut/test/blobs/${layer.digest}`);
    assert.deepEqual(Buffer.from(await stored.arrayBuffer()), layer.bytes);
  } finally {
    sabotage = () => undefined;
    await rm(work, { recursive: true, force: true });
  }
});

function pieces(data: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < data.length; i += size) out.push(data.subarray(i, i + size));
  return out;
}
