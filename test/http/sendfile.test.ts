/**
 * Blob GETs through the native transfer (src/http/sendfile.ts +
 * native/sendfile), in both of its modes, storage.blobTransfer "copy" (a
 * buffer pread() then send()) and "sendfile" (sendfile(2)): the bytes a
 * client receives are exactly the blob's (whole and ranges, also when the
 * socket takes writes only in part), keep-alive and pipelining survive a
 * native transfer, a client that goes away or a server shutdown ends the
 * transfer without leaking descriptors, a stalled client is timed out, a
 * file shorter than its range fails with EIO, and the native path is taken
 * exactly when it should be ("stream" never takes it).
 *
 * Without the addon built the native-path tests skip with the reason; in CI
 * (REQUIRE_E2E_TOOLS=1) they fail instead, so a broken build cannot pass.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { createServer, get, request, Agent, type IncomingMessage, type Server } from "node:http";
import { connect, type AddressInfo, type Socket } from "node:net";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { openSync, closeSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { pushBlob, uid } from "./client.js";
import { ConfigError, loadConfig } from "../../src/config/load.js";
import {
  available,
  copyBufferBytesFor,
  nativeTransferResponse,
  nativeTransferStats,
  reserveNativeTransfer,
  setNativeTransferLimits,
  unavailableReason,
  type NativeTransferMode,
  type NativeTransferOutcome,
  type NativeTransferStats,
} from "../../src/http/sendfile.js";

function addonSkip(): string | false {
  if (available()) return false;
  const reason = unavailableReason() ?? "native transfer addon unavailable";
  if (process.env.REQUIRE_E2E_TOOLS === "1") throw new Error(`sendfile addon required in CI: ${reason}`);
  return reason;
}

const skip = addonSkip();
const MiB = 1024 * 1024;
const MODES: readonly NativeTransferMode[] = ["copy", "sendfile"];

/** Native transfers started in `mode` between two snapshots. */
function startedIn(mode: NativeTransferMode, before: NativeTransferStats, now: NativeTransferStats): number {
  return mode === "copy" ? now.startedCopy - before.startedCopy : now.startedSendfile - before.startedSendfile;
}

function otherMode(mode: NativeTransferMode): NativeTransferMode {
  return mode === "copy" ? "sendfile" : "copy";
}

function digestOf(data: Buffer): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

function openFds(): number {
  return readdirSync("/proc/self/fd").length;
}

interface Fetched {
  status: number;
  headers: IncomingMessage["headers"];
  body: Buffer;
  reusedSocket: boolean;
}

function fetchBlob(url: string, options: { method?: string; headers?: Record<string, string>; agent?: Agent | false } = {}): Promise<Fetched> {
  return new Promise((resolve, reject) => {
    const r = request(url, { method: options.method ?? "GET", headers: options.headers, agent: options.agent ?? false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), reusedSocket: r.reusedSocket }));
      res.on("error", reject);
    });
    r.on("error", reject);
    r.end();
  });
}

/** A client that sends a GET and then reads nothing: the server's send buffer fills and the transfer stalls. */
function stalledClient(port: number, path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1", () => {
      socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
      // Take the first bytes (headers are out), then stop reading.
      socket.once("data", () => {
        socket.pause();
        resolve(socket);
      });
    });
    socket.on("error", () => undefined);
    socket.once("error", reject);
  });
}

/**
 * A client that reads a whole `Connection: close` response slowly (pausing
 * after every chunk), so the server's socket buffer keeps filling and its
 * writes are taken only in part; answers the raw bytes received.
 */
function slowClient(port: number, path: string, headers = ""): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = connect(port, "127.0.0.1", () => {
      socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n${headers}\r\n`);
    });
    socket.on("data", (chunk: Buffer) => {
      chunks.push(chunk);
      socket.pause();
      setTimeout(() => socket.resume(), 1);
    });
    socket.on("end", () => resolve(Buffer.concat(chunks)));
    socket.on("error", reject);
  });
}

/** Splits one raw HTTP/1.1 response into status, head and body (exactly Content-Length bytes). */
function parseResponse(raw: Buffer): { status: number; head: string; body: Buffer } {
  const headEnd = raw.indexOf("\r\n\r\n");
  assert.ok(headEnd > 0, "a response head");
  const head = raw.subarray(0, headEnd).toString("latin1");
  const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1]);
  assert.ok(Number.isFinite(length), `Content-Length in ${head}`);
  const body = raw.subarray(headEnd + 4);
  assert.equal(body.length, length, "exactly Content-Length bytes after the head");
  return { status: Number(head.split(" ")[1]), head, body };
}

async function waitFor(what: string, condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * The client can see the last byte before the server's completion callback
 * ran (both live in this process): wait for the server to settle.
 */
async function settled(): Promise<void> {
  await waitFor("native transfers to settle", () => nativeTransferStats().inFlight === 0);
}

for (const mode of MODES) {
  describe(`blob GET through the native transfer, storage.blobTransfer: ${mode}`, { skip }, () => {
    let reg: TestRegistry;
    let repo: string;
    let big: Buffer;
    let bigDigest: string;

    before(async () => {
      reg = await startTestRegistry({ storage: { blobTransfer: mode } });
      repo = uid(`nt${mode}`);
      big = randomBytes(24 * MiB + 12345);
      bigDigest = await pushBlob(reg.url, repo, big);
    });
    after(async () => {
      await reg?.close();
    });

    it(`sends the whole blob byte for byte, with the same headers as the stream path, natively in ${mode} mode`, async () => {
      const before = nativeTransferStats();
      const res = await fetchBlob(`${reg.url}/v2/${repo}/blobs/${bigDigest}`);
      assert.equal(res.status, 200);
      assert.equal(res.headers["content-length"], String(big.length));
      assert.equal(res.headers["docker-content-digest"], bigDigest);
      assert.equal(res.headers["etag"], `"${bigDigest}"`);
      assert.equal(res.headers["content-type"], "application/octet-stream");
      assert.equal(res.headers["docker-distribution-api-version"], "registry/2.0");
      assert.equal(res.headers["accept-ranges"], "bytes");
      assert.equal(digestOf(res.body), bigDigest);
      await settled();
      const now = nativeTransferStats();
      assert.equal(now.completed - before.completed, 1, "the native path served it");
      assert.equal(startedIn(mode, before, now), 1, `in ${mode} mode`);
      assert.equal(startedIn(otherMode(mode), before, now), 0, `not in ${otherMode(mode)} mode`);
      assert.equal(now.bytes - before.bytes, big.length);
      assert.equal(now.inFlight, 0);
    });

    it("sends every byte in order to a slow reader whose socket takes writes only in part", async () => {
      const before = nativeTransferStats();
      const whole = parseResponse(await slowClient(reg.registry.port, `/v2/${repo}/blobs/${bigDigest}`));
      assert.equal(whole.status, 200);
      assert.equal(digestOf(whole.body), bigDigest);
      const start = 3 * MiB + 17;
      const end = 19 * MiB + 5;
      const ranged = parseResponse(await slowClient(reg.registry.port, `/v2/${repo}/blobs/${bigDigest}`, `Range: bytes=${start}-${end}\r\n`));
      assert.equal(ranged.status, 206);
      assert.equal(digestOf(ranged.body), digestOf(big.subarray(start, end + 1)));
      await settled();
      const now = nativeTransferStats();
      assert.equal(now.completed - before.completed, 2, "both went native");
      assert.equal(startedIn(mode, before, now), 2);
      assert.ok(now.partialWrites > before.partialWrites, "the socket took some writes only in part: the partial-write path ran");
    });

    it("answers Range requests with 206 and exactly the requested bytes", async () => {
      const size = big.length;
      const cases: Array<[string, number, number]> = [
        ["bytes=0-1048575", 0, 1048575],
        ["bytes=1000-5000000", 1000, 5000000],
        [`bytes=${size - 3 * MiB}-`, size - 3 * MiB, size - 1],
        [`bytes=-${2 * MiB + 7}`, size - (2 * MiB + 7), size - 1],
        [`bytes=${7 * MiB + 3}-${20 * MiB}`, 7 * MiB + 3, 20 * MiB],
      ];
      for (const [header, start, end] of cases) {
        const before = nativeTransferStats();
        const res = await fetchBlob(`${reg.url}/v2/${repo}/blobs/${bigDigest}`, { headers: { Range: header } });
        assert.equal(res.status, 206, header);
        assert.equal(res.headers["content-range"], `bytes ${start}-${end}/${size}`, header);
        assert.equal(res.headers["content-length"], String(end - start + 1), header);
        assert.equal(res.headers["docker-content-digest"], bigDigest, header);
        assert.equal(digestOf(res.body), digestOf(big.subarray(start, end + 1)), header);
        await settled();
        const now = nativeTransferStats();
        assert.equal(now.completed - before.completed, 1, `${header} went native`);
        assert.equal(startedIn(mode, before, now), 1, `${header} in ${mode} mode`);
      }
    });

    it("keeps the connection alive: two blob GETs on one socket", async () => {
      const agent = new Agent({ keepAlive: true, maxSockets: 1 });
      try {
        const before = nativeTransferStats();
        const first = await fetchBlob(`${reg.url}/v2/${repo}/blobs/${bigDigest}`, { agent });
        const second = await fetchBlob(`${reg.url}/v2/${repo}/blobs/${bigDigest}`, { agent, headers: { Range: "bytes=1-2097152" } });
        assert.equal(first.status, 200);
        assert.equal(digestOf(first.body), bigDigest);
        assert.equal(second.status, 206);
        assert.equal(digestOf(second.body), digestOf(big.subarray(1, 2097153)));
        assert.equal(second.reusedSocket, true, "the second GET reused the first one's connection");
        await settled();
        assert.equal(nativeTransferStats().completed - before.completed, 2);
        // And a small request after them on the same connection still works.
        const third = await fetchBlob(`${reg.url}/v2/`, { agent });
        assert.equal(third.status, 200);
        assert.equal(third.reusedSocket, true);
      } finally {
        agent.destroy();
      }
    });

    it("answers pipelined requests in order, nothing interleaved into a native body", async () => {
      // RFC 9112 9.3.2: a server MUST send responses to pipelined requests in the order received.
      const path = `/v2/${repo}/blobs/${bigDigest}`;
      const socket = connect(reg.registry.port, "127.0.0.1");
      const chunks: Buffer[] = [];
      socket.on("data", (chunk: Buffer) => chunks.push(chunk));
      const ended = new Promise<void>((resolve, reject) => {
        socket.on("end", () => resolve());
        socket.on("error", reject);
      });
      const before = nativeTransferStats();
      socket.write(
        `GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n` +
          `GET ${path} HTTP/1.1\r\nHost: x\r\nRange: bytes=5-600004\r\n\r\n` +
          `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
      );
      await ended;
      let rest = Buffer.concat(chunks);
      const responses: Array<{ status: number; body: Buffer }> = [];
      while (rest.length > 0) {
        const headEnd = rest.indexOf("\r\n\r\n");
        assert.ok(headEnd > 0, "a response head");
        const head = rest.subarray(0, headEnd).toString("latin1");
        const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1]);
        assert.ok(Number.isFinite(length), `Content-Length in ${head}`);
        responses.push({ status: Number(head.split(" ")[1]), body: rest.subarray(headEnd + 4, headEnd + 4 + length) });
        rest = rest.subarray(headEnd + 4 + length);
      }
      assert.equal(responses.length, 3);
      assert.equal(responses[0].status, 200);
      assert.equal(digestOf(responses[0].body), bigDigest);
      assert.equal(responses[1].status, 206);
      assert.equal(digestOf(responses[1].body), digestOf(big.subarray(5, 600005)));
      assert.equal(responses[2].status, 200);
      assert.equal(digestOf(responses[2].body), bigDigest);
      await settled();
      assert.ok(nativeTransferStats().completed - before.completed >= 1, "at least the first went native");
    });

    it("survives a client that disconnects mid-transfer: no exception, no descriptor leak, next request served", async () => {
      // Warm up so lazily opened descriptors (addon, database) are already counted.
      await fetchBlob(`${reg.url}/v2/${repo}/blobs/${bigDigest}`, { headers: { Range: "bytes=0-524287" } });
      await settled();
      const fdsBefore = openFds();
      const before = nativeTransferStats();
      const client = await stalledClient(reg.registry.port, `/v2/${repo}/blobs/${bigDigest}`);
      await waitFor("the transfer to start", () => nativeTransferStats().started > before.started);
      assert.equal(nativeTransferStats().inFlight, 1, "the transfer is still running while the client does not read");
      client.destroy();
      await waitFor("the transfer to end", () => nativeTransferStats().inFlight === 0);
      const now = nativeTransferStats();
      assert.equal(now.failed - before.failed, 1);
      assert.equal(now.completed, before.completed);
      assert.ok(now.bytes - before.bytes < big.length, "not everything was sent");

      const res = await fetchBlob(`${reg.url}/v2/${repo}/blobs/${bigDigest}`);
      assert.equal(res.status, 200);
      assert.equal(digestOf(res.body), bigDigest);
      await waitFor(`descriptors back to ${fdsBefore} (now ${openFds()})`, () => openFds() <= fdsBefore);
    });

    it("streams instead when maxInFlight transfers are already running", async () => {
      const restore = setNativeTransferLimits({ maxInFlight: 1 });
      const before = nativeTransferStats();
      const client = await stalledClient(reg.registry.port, `/v2/${repo}/blobs/${bigDigest}`);
      try {
        await waitFor("the first transfer to start", () => nativeTransferStats().inFlight === 1);
        const res = await fetchBlob(`${reg.url}/v2/${repo}/blobs/${bigDigest}`);
        assert.equal(res.status, 200);
        assert.equal(digestOf(res.body), bigDigest);
        const now = nativeTransferStats();
        assert.equal(now.overCap - before.overCap, 1, "the second GET was over the cap");
        assert.equal(now.started - before.started, 1, "only the first GET went native");
      } finally {
        restore();
        client.destroy();
      }
      await waitFor("the stalled transfer to end", () => nativeTransferStats().inFlight === 0);
    });

    it("server shutdown stops an in-flight transfer promptly", async () => {
      const other = await startTestRegistry({ storage: { blobTransfer: mode } });
      const otherRepo = uid("ntclose");
      const digest = await pushBlob(other.url, otherRepo, big);
      const before = nativeTransferStats();
      const client = await stalledClient(other.registry.port, `/v2/${otherRepo}/blobs/${digest}`);
      const clientClosed = new Promise<void>((resolve) => client.once("close", () => resolve()));
      try {
        await waitFor("the transfer to start", () => nativeTransferStats().started > before.started);
        const started = Date.now();
        await other.close();
        await waitFor("the transfer to end", () => nativeTransferStats().inFlight === 0, 3000);
        assert.ok(Date.now() - started < 3000, `shutdown took ${Date.now() - started} ms`);
        assert.equal(nativeTransferStats().failed - before.failed, 1);
        // The connection really is closed: the native thread's duplicate did not keep it open.
        client.resume();
        await Promise.race([clientClosed, new Promise((_, reject) => setTimeout(() => reject(new Error("client still connected")), 3000))]);
      } finally {
        client.destroy();
      }
    });
  });
}

describe("blob GET keeps the stream path when the native transfer does not apply", () => {
  let reg: TestRegistry;
  let off: TestRegistry;
  let repo: string;
  let big: Buffer;
  let bigDigest: string;
  let small: Buffer;
  let smallDigest: string;

  before(async () => {
    reg = await startTestRegistry();
    off = await startTestRegistry({ storage: { blobTransfer: "stream" } });
    repo = uid("ntno");
    big = randomBytes(3 * MiB + 1);
    small = randomBytes(100 * 1024);
    bigDigest = await pushBlob(reg.url, repo, big);
    smallDigest = await pushBlob(reg.url, repo, small);
    await pushBlob(off.url, repo, big);
  });
  after(async () => {
    await reg?.close();
    await off?.close();
  });

  it("HEAD answers the headers only, without a native transfer", async () => {
    const before = nativeTransferStats();
    const res = await fetchBlob(`${reg.url}/v2/${repo}/blobs/${bigDigest}`, { method: "HEAD" });
    assert.equal(res.status, 200);
    assert.equal(res.headers["content-length"], String(big.length));
    assert.equal(res.headers["docker-content-digest"], bigDigest);
    assert.equal(res.body.length, 0);
    assert.equal(nativeTransferStats().started, before.started);
  });

  it("a blob under 256 KiB is streamed", async () => {
    const before = nativeTransferStats();
    const res = await fetchBlob(`${reg.url}/v2/${repo}/blobs/${smallDigest}`);
    assert.equal(res.status, 200);
    assert.equal(digestOf(res.body), smallDigest);
    assert.equal(nativeTransferStats().started, before.started);
  });

  it("a small range of a large blob is streamed", async () => {
    const before = nativeTransferStats();
    const res = await fetchBlob(`${reg.url}/v2/${repo}/blobs/${bigDigest}`, { headers: { Range: "bytes=10-1009" } });
    assert.equal(res.status, 206);
    assert.deepEqual(res.body, big.subarray(10, 1010));
    assert.equal(nativeTransferStats().started, before.started);
  });

  it("storage.blobTransfer: stream streams every blob, whole and ranged", async () => {
    const before = nativeTransferStats();
    const res = await fetchBlob(`${off.url}/v2/${repo}/blobs/${bigDigest}`);
    assert.equal(res.status, 200);
    assert.equal(digestOf(res.body), bigDigest);
    const ranged = await fetchBlob(`${off.url}/v2/${repo}/blobs/${bigDigest}`, { headers: { Range: "bytes=1-2097152" } });
    assert.equal(ranged.status, 206);
    assert.equal(digestOf(ranged.body), digestOf(big.subarray(1, 2097153)));
    const now = nativeTransferStats();
    assert.equal(now.started, before.started);
    assert.equal(now.overCap, before.overCap, "not even considered for the native path");
  });

  it("by default a large blob goes native in copy mode when the addon is available (the control for the cases above)", { skip }, async () => {
    const before = nativeTransferStats();
    const res = await fetchBlob(`${reg.url}/v2/${repo}/blobs/${bigDigest}`);
    assert.equal(digestOf(res.body), bigDigest);
    await settled();
    const now = nativeTransferStats();
    assert.equal(now.completed - before.completed, 1);
    assert.equal(startedIn("copy", before, now), 1);
  });
});

describe("storage.blobTransfer configuration", () => {
  it("defaults to copy and accepts copy, sendfile and stream", () => {
    assert.equal(loadConfig({ env: {} }).storage.blobTransfer, "copy");
    for (const value of ["copy", "sendfile", "stream"]) {
      assert.equal(loadConfig({ env: {}, overrides: { storage: { blobTransfer: value } } }).storage.blobTransfer, value);
    }
    assert.equal(loadConfig({ env: { FERRY_STORAGE__BLOB_TRANSFER: "sendfile" } }).storage.blobTransfer, "sendfile");
  });

  it("refuses any other value with a config error naming the key", () => {
    for (const value of ["zerocopy", true, ""]) {
      assert.throws(
        () => loadConfig({ env: {}, overrides: { storage: { blobTransfer: value } } }),
        (error: unknown) => error instanceof ConfigError && /storage\.blobTransfer/.test(error.message),
        String(value),
      );
    }
  });

  it("the old storage.sendfile switch is an unknown key, not silently ignored", () => {
    assert.throws(() => loadConfig({ env: {}, overrides: { storage: { sendfile: true } } }), ConfigError);
  });
});

for (const mode of MODES) {
  describe(`nativeTransferResponse on a bare node:http server, ${mode} mode`, { skip }, () => {
    let dir: string;
    let path: string;
    const size = 32 * MiB;
    let content: Buffer;
    let server: Server;
    let outcome: Promise<NativeTransferOutcome> | undefined;

    before(async () => {
      dir = await mkdtemp(join(tmpdir(), "ferry-sendfile-"));
      path = join(dir, "file");
      content = randomBytes(size);
      await writeFile(path, content);
      server = createServer((req, res) => {
        // "/short" promises (and asks the addon for) 1 MiB more than the file holds.
        const length = req.url === "/short" ? size + MiB : size;
        const slot = reserveNativeTransfer(res, length);
        assert.ok(slot, "eligible");
        const fd = openSync(path, "r");
        outcome = nativeTransferResponse(slot, res, {
          status: 200,
          headers: { "Content-Length": length },
          fd,
          offset: 0,
          length,
          copyBufferBytes: copyBufferBytesFor(mode),
          idleTimeoutMs: 300,
        }).finally(() => closeSync(fd));
      });
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    });
    after(async () => {
      server?.closeAllConnections();
      await new Promise((resolve) => server?.close(resolve));
      await rm(dir, { recursive: true, force: true });
    });

    it("a client that stops reading is timed out after idleTimeoutMs and its connection cut", async () => {
      outcome = undefined;
      const port = (server.address() as AddressInfo).port;
      const client = await stalledClient(port, "/");
      const closed = new Promise<void>((resolve) => client.once("close", () => resolve()));
      try {
        await waitFor("the handler to run", () => outcome !== undefined);
        const started = Date.now();
        const result = await outcome!;
        assert.equal(result.ok, false);
        assert.equal(result.ok === false && (result.error as NodeJS.ErrnoException).code, "ETIMEDOUT");
        assert.equal(result.ok === false && result.clientGone, false, "a timeout is reported, not taken for a client abort");
        assert.ok(Date.now() - started < 3000);
        client.resume();
        await closed;
      } finally {
        client.destroy();
      }
    });

    it("a client that goes away after the headers ends the transfer as clientGone, nothing thrown", async () => {
      outcome = undefined;
      const port = (server.address() as AddressInfo).port;
      const done = new Promise<void>((resolve) => {
        const r = get({ port, host: "127.0.0.1", path: "/" }, (res) => {
          res.destroy();
          resolve();
        });
        r.on("error", () => resolve());
      });
      await done;
      await waitFor("the handler to run", () => outcome !== undefined);
      const result = await outcome!;
      assert.equal(result.ok, false);
      assert.equal(result.ok === false && result.clientGone, true);
    });

    it("a file shorter than the range fails with EIO after sending all it has, and the connection is cut", async () => {
      outcome = undefined;
      const port = (server.address() as AddressInfo).port;
      const before = nativeTransferStats();
      const received = await new Promise<Buffer>((resolve, reject) => {
        const chunks: Buffer[] = [];
        const socket = connect(port, "127.0.0.1", () => socket.write("GET /short HTTP/1.1\r\nHost: x\r\n\r\n"));
        socket.on("data", (chunk: Buffer) => chunks.push(chunk));
        socket.on("close", () => resolve(Buffer.concat(chunks)));
        socket.on("error", () => undefined);
        setTimeout(() => reject(new Error("connection not cut")), 5000).unref();
      });
      await waitFor("the handler to run", () => outcome !== undefined);
      const result = await outcome!;
      assert.equal(result.ok, false);
      assert.equal(result.ok === false && (result.error as NodeJS.ErrnoException).code, "EIO");
      assert.equal(result.ok === false && result.clientGone, false, "a short file is a fault, not a client abort");
      assert.equal(result.bytes, size, "every byte the file has was sent");
      const headEnd = received.indexOf("\r\n\r\n");
      assert.ok(headEnd > 0);
      const body = received.subarray(headEnd + 4);
      assert.equal(body.length, size, "the client got the file's bytes and then the connection closed, short of Content-Length");
      assert.equal(digestOf(body), digestOf(content));
      assert.equal(startedIn(mode, before, nativeTransferStats()), 1);
    });
  });
}
