/**
 * OpenTelemetry tracing through real requests into a real OTLP/HTTP receiver
 * on loopback: the span tree of a push and a pull (server span per request,
 * metadata and blob-store calls as its children, federation fetches as client
 * spans that carry `traceparent` to the source), an incoming `traceparent`
 * continuing the caller's trace, the request id joining spans and access log.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { pino } from "pino";
import { loadConfig } from "../../src/config/load.js";
import { startRegistry, type RunningRegistry } from "../../src/server.js";
import { buildImage, pushImage } from "../helpers/images.js";
import { blob, FakeSource, pushForeignImage } from "../federation/helpers.js";
import { OtlpReceiver, type ReceivedSpan } from "./otlp-receiver.js";

const SERVER = 2;
const CLIENT = 3;
const ERROR = 2;

interface Traced {
  registry: RunningRegistry;
  receiver: OtlpReceiver;
  accessLog: Array<Record<string, unknown>>;
  /** Closes the registry, which flushes every span to the receiver. */
  flush(): Promise<void>;
}

async function tracedRegistry(
  t: { after(fn: () => Promise<void>): void },
  extra: Record<string, unknown> = {},
  tracing: Record<string, unknown> = {},
): Promise<Traced> {
  const receiver = await new OtlpReceiver().start();
  const dir = await mkdtemp(join(tmpdir(), "ferry-tracing-"));
  const accessLog: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString("utf8").split("\n")) if (line) accessLog.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  const config = loadConfig({
    env: {},
    overrides: {
      listen: "127.0.0.1:0",
      data: dir,
      log: { level: "info", accessLog: true },
      tracing: { enabled: true, endpoint: receiver.endpoint, serviceName: "ferry-under-test", headers: { "x-collector-key": "k-123" }, ...tracing },
      ...extra,
    },
  });
  const registry = await startRegistry(config, { logger: pino({ level: "info" }, sink) });
  let closed = false;
  const flush = async () => {
    if (closed) return;
    closed = true;
    await registry.close();
  };
  t.after(async () => {
    await flush();
    await receiver.close();
    await rm(dir, { recursive: true, force: true });
  });
  return { registry, receiver, accessLog, flush };
}

function serverSpans(spans: ReceivedSpan[], name: string): ReceivedSpan[] {
  return spans.filter((s) => s.kind === SERVER && s.name === name);
}

function childrenOf(spans: ReceivedSpan[], parent: ReceivedSpan): ReceivedSpan[] {
  return spans.filter((s) => s.parentSpanId === parent.spanId && s.traceId === parent.traceId);
}

test("a push and a pull are traced: one server span per request, metadata and blob-store calls as its children", async (t) => {
  const { registry, receiver, accessLog, flush } = await tracedRegistry(t);
  const image = await buildImage({ layers: [{ "hello.txt": "traced" }] });
  await pushImage(registry.url, "team/app", "v1", image);
  const pulled = await fetch(`${registry.url}/v2/team/app/manifests/v1`, { headers: { Accept: image.mediaType } });
  assert.equal(pulled.status, 200);
  await pulled.arrayBuffer();
  const layer = await fetch(`${registry.url}/v2/team/app/blobs/${image.layers[0]!.digest}`);
  assert.equal(layer.status, 200);
  await layer.arrayBuffer();
  // The client can have the last byte before the server's 'finish' event writes the access-log line.
  for (let i = 0; i < 250 && !accessLog.some((l) => l.msg === "request" && String(l.path).includes("/blobs/sha256:")); i++) await new Promise((r) => setTimeout(r, 20));
  await flush();

  const spans = receiver.spans;
  assert.ok(receiver.requests.every((r) => r.headers["x-collector-key"] === "k-123"), "configured headers go with every export");
  assert.equal(spans[0]?.resource["service.name"], "ferry-under-test");

  // The push: blob uploads, then the manifest PUT, each a root server span of its own.
  const [put] = serverSpans(spans, "PUT manifest");
  assert.ok(put, `no PUT manifest span among ${spans.map((s) => s.name).join(", ")}`);
  assert.equal(put.parentSpanId, undefined);
  assert.equal(put.attributes["http.request.method"], "PUT");
  assert.equal(put.attributes["http.response.status_code"], 201);
  assert.equal(put.attributes["http.route"], "/v2/{name}/manifests/{reference}");
  assert.equal(put.attributes["ferry.repository"], "team/app");
  assert.equal(put.attributes["url.path"], "/v2/team/app/manifests/v1");
  assert.equal(put.attributes["client.address"], "127.0.0.1");
  const putChildren = childrenOf(spans, put).map((s) => s.name);
  assert.ok(putChildren.includes("metadata.putManifest"), `PUT manifest children: ${putChildren.join(", ")}`);
  assert.ok(putChildren.includes("metadata.linkedBlobs"), `PUT manifest children: ${putChildren.join(", ")}`);
  assert.ok(serverSpans(spans, "POST uploads").length >= 2, "each blob upload has its span");

  // The pull: the manifest GET reads the metadata store, the blob GET the blob store.
  const [get] = serverSpans(spans, "GET manifest");
  assert.ok(get);
  assert.equal(get.attributes["http.response.status_code"], 200);
  assert.ok(childrenOf(spans, get).some((s) => s.name === "metadata.getTaggedManifest"));
  const [blobGet] = serverSpans(spans, "GET blob");
  assert.ok(blobGet);
  const blobChildren = childrenOf(spans, blobGet).map((s) => s.name);
  assert.ok(blobChildren.some((name) => name.startsWith("blobstore.")), `GET blob children: ${blobChildren.join(", ")}`);
  assert.ok(blobChildren.includes("metadata.linkedBlob"), `GET blob children: ${blobChildren.join(", ")}`);

  // Logs and traces join on the request id.
  for (const span of [put, get, blobGet]) {
    const id = span.attributes["ferry.request_id"];
    assert.equal(typeof id, "string");
    const line = accessLog.find((l) => l.msg === "request" && l.requestId === id);
    assert.ok(line, `no access-log line with request id ${String(id)} (${span.name}); lines: ${accessLog.map((l) => `${String(l.requestId)} ${String(l.method)} ${String(l.path)}`).join("; ")}`);
    assert.equal(line.path, span.attributes["url.path"]);
  }
  // Background work outside requests makes no store spans of its own.
  assert.ok(spans.filter((s) => s.name.startsWith("metadata.")).every((s) => s.parentSpanId !== undefined));
});

test("an incoming traceparent continues the caller's trace; errors are marked on the span", async (t) => {
  const { registry, receiver, flush } = await tracedRegistry(t);
  const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
  const callerSpan = "00f067aa0ba902b7";
  const missing = await fetch(`${registry.url}/v2/team/app/manifests/nope`, { headers: { traceparent: `00-${traceId}-${callerSpan}-01`, "X-Request-Id": "proxy-77" } });
  assert.equal(missing.status, 404);
  await missing.arrayBuffer();
  // A malformed traceparent is ignored: a new trace starts, the request is answered as usual.
  const bad = await fetch(`${registry.url}/v2/`, { headers: { traceparent: "00-zz-yy-01" } });
  assert.equal(bad.status, 200);
  await flush();

  const [span] = serverSpans(receiver.spans, "GET manifest");
  assert.ok(span);
  assert.equal(span.traceId, traceId);
  assert.equal(span.parentSpanId, callerSpan);
  assert.equal(span.attributes["http.response.status_code"], 404);
  assert.equal(span.attributes["error.type"], "MANIFEST_UNKNOWN");
  assert.equal(span.attributes["ferry.upstream_request_id"], "proxy-77");
  assert.notEqual(span.attributes["ferry.request_id"], "proxy-77", "Ferry keeps its own request id");
  // A 404 is the client's doing: not a server error.
  assert.notEqual(span.status?.code, ERROR);
  const [base] = serverSpans(receiver.spans, "GET base");
  assert.ok(base);
  assert.notEqual(base.traceId, traceId);
  assert.equal(base.parentSpanId, undefined);
});

test("a federation fetch is a client span under the push, and the source receives its traceparent (no query string in the span)", async (t) => {
  const source = await new FakeSource().start();
  t.after(() => source.close());
  const { registry, receiver, flush } = await tracedRegistry(t, { federation: { proxy: { allowPrivateNetworks: true }, verify: { mode: "head" } } });
  const layer = blob(300);
  const url = `${source.put("/layer", layer.bytes)}?signature=secret-sig`;
  const pushed = await pushForeignImage(registry.url, "app", "v1", [{ ...layer, urls: [url] }]);
  assert.equal(pushed.status, 201, pushed.body);
  await flush();

  const [put] = serverSpans(receiver.spans, "PUT manifest");
  assert.ok(put);
  const client = receiver.spans.find((s) => s.kind === CLIENT && s.traceId === put.traceId);
  assert.ok(client, `no client span in the push's trace: ${receiver.spans.map((s) => `${s.name}/${s.kind}`).join(", ")}`);
  assert.equal(client.name, "HEAD");
  assert.equal(client.attributes["server.address"], "127.0.0.1");
  assert.equal(client.attributes["http.response.status_code"], 200);
  assert.equal(client.attributes["url.full"], `http://127.0.0.1:${source.port}/layer`);
  assert.ok(!JSON.stringify(receiver.spans).includes("secret-sig"), "a presigned URL's signature never reaches the traces");
  // The span descends from the PUT (through whatever federation spans lie between).
  const byId = new Map(receiver.spans.map((s) => [s.spanId, s]));
  let ancestor: ReceivedSpan | undefined = client;
  while (ancestor && ancestor.spanId !== put.spanId) ancestor = ancestor.parentSpanId ? byId.get(ancestor.parentSpanId) : undefined;
  assert.ok(ancestor, "the fetch's span descends from the PUT manifest span");

  const sent = source.requests.find((r) => r.method === "HEAD");
  assert.ok(sent);
  assert.equal(sent.headers.traceparent, `00-${client.traceId}-${client.spanId}-01`);
});

test("a collector that is down costs the requests nothing: they are answered, spans are dropped", async (t) => {
  const receiver = await new OtlpReceiver().start();
  const endpoint = receiver.endpoint;
  await receiver.close();
  const dir = await mkdtemp(join(tmpdir(), "ferry-tracing-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const config = loadConfig({
    env: {},
    overrides: { listen: "127.0.0.1:0", data: dir, log: { level: "silent", accessLog: false }, tracing: { enabled: true, endpoint, exportTimeout: "500ms" } },
  });
  const registry = await startRegistry(config);
  try {
    const image = await buildImage();
    await pushImage(registry.url, "app", "v1", image);
    const res = await fetch(`${registry.url}/v2/app/manifests/v1`, { headers: { Accept: image.mediaType } });
    assert.equal(res.status, 200);
    await res.arrayBuffer();
  } finally {
    const started = Date.now();
    await registry.close();
    assert.ok(Date.now() - started < 5000, "closing does not hang on an unreachable collector");
  }
});

test("sampleRatio 0 records only what a sampled caller asks for, with its children", async (t) => {
  const { registry, receiver, flush } = await tracedRegistry(t, {}, { sampleRatio: 0 });
  const image = await buildImage();
  await pushImage(registry.url, "app", "v1", image);
  const traceId = "0af7651916cd43dd8448eb211c80319c";
  const asked = await fetch(`${registry.url}/v2/app/manifests/v1`, { headers: { Accept: image.mediaType, traceparent: `00-${traceId}-b7ad6b7169203331-01` } });
  assert.equal(asked.status, 200);
  await asked.arrayBuffer();
  const unsampled = await fetch(`${registry.url}/v2/app/manifests/v1`, { headers: { Accept: image.mediaType, traceparent: `00-${traceId}-b7ad6b7169203331-00` } });
  assert.equal(unsampled.status, 200);
  await unsampled.arrayBuffer();
  await flush();

  assert.ok(receiver.spans.length > 0);
  assert.ok(receiver.spans.every((s) => s.traceId === traceId), `only the asked-for trace: ${receiver.spans.map((s) => s.name).join(", ")}`);
  const servers = receiver.spans.filter((s) => s.kind === SERVER);
  assert.equal(servers.length, 1);
  assert.ok(childrenOf(receiver.spans, servers[0]!).some((s) => s.name === "metadata.getTaggedManifest"));
});
