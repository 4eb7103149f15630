/**
 * Resilience: a chunked upload cut off in the middle of a PATCH resumes from
 * the offset the registry reports instead of starting over; transient 503s
 * are retried with backoff. A proxy in front of a Ferry server does the damage.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createServer, request as httpRequest, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { RegistryClient } from "../../src/client/registry.js";
import { sha256 } from "../helpers/images.js";
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
