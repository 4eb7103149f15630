/**
 * Blob GETs through sendfile(2) (src/http/sendfile.ts + native/sendfile):
 * the bytes a client receives are exactly the blob's (whole and ranges),
 * keep-alive survives a native transfer, a client that goes away or a server
 * shutdown ends the transfer without leaking descriptors, a stalled client is
 * timed out, and the native path is taken exactly when it should be.
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
import {
  available,
  reserveSendFile,
  sendFileResponse,
  sendFileStats,
  setSendFileLimits,
  unavailableReason,
  type SendFileOutcome,
} from "../../src/http/sendfile.js";

function addonSkip(): string | false {
  if (available()) return false;
  const reason = unavailableReason() ?? "sendfile addon unavailable";
  if (process.env.REQUIRE_E2E_TOOLS === "1") throw new Error(`sendfile addon required in CI: ${reason}`);
  return reason;
}

const skip = addonSkip();
const MiB = 1024 * 1024;

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
  await waitFor("native transfers to settle", () => sendFileStats().inFlight === 0);
}

describe("blob GET through sendfile", { skip }, () => {
  let reg: TestRegistry;
  let repo: string;
  let big: Buffer;
  let bigDigest: string;

  before(async () => {
    reg = await startTestRegistry();
    repo = uid("sf");
    big = randomBytes(24 * MiB + 12345);
    bigDigest = await pushBlob(reg.url, repo, big);
  });
  after(async () => {
    await reg?.close();
  });

  it("sends the whole blob byte for byte, with the same headers as the stream path, natively", async () => {
    const before = sendFileStats();
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
    const now = sendFileStats();
    assert.equal(now.completed - before.completed, 1, "the native path served it");
    assert.equal(now.bytes - before.bytes, big.length);
    assert.equal(now.inFlight, 0);
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
      const before = sendFileStats();
      const res = await fetchBlob(`${reg.url}/v2/${repo}/blobs/${bigDigest}`, { headers: { Range: header } });
      assert.equal(res.status, 206, header);
      assert.equal(res.headers["content-range"], `bytes ${start}-${end}/${size}`, header);
      assert.equal(res.headers["content-length"], String(end - start + 1), header);
      assert.equal(res.headers["docker-content-digest"], bigDigest, header);
      assert.equal(digestOf(res.body), digestOf(big.subarray(start, end + 1)), header);
      await settled();
      assert.equal(sendFileStats().completed - before.completed, 1, `${header} went through sendfile`);
    }
  });

  it("keeps the connection alive: two blob GETs on one socket", async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const before = sendFileStats();
      const first = await fetchBlob(`${reg.url}/v2/${repo}/blobs/${bigDigest}`, { agent });
      const second = await fetchBlob(`${reg.url}/v2/${repo}/blobs/${bigDigest}`, { agent, headers: { Range: "bytes=1-2097152" } });
      assert.equal(first.status, 200);
      assert.equal(digestOf(first.body), bigDigest);
      assert.equal(second.status, 206);
      assert.equal(digestOf(second.body), digestOf(big.subarray(1, 2097153)));
      assert.equal(second.reusedSocket, true, "the second GET reused the first one's connection");
      await settled();
      assert.equal(sendFileStats().completed - before.completed, 2);
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
    const before = sendFileStats();
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
    assert.ok(sendFileStats().completed - before.completed >= 1, "at least the first went native");
  });

  it("survives a client that disconnects mid-transfer: no exception, no descriptor leak, next request served", async () => {
    // Warm up so lazily opened descriptors (addon, database) are already counted.
    await fetchBlob(`${reg.url}/v2/${repo}/blobs/${bigDigest}`, { headers: { Range: "bytes=0-524287" } });
    await settled();
    const fdsBefore = openFds();
    const before = sendFileStats();
    const client = await stalledClient(reg.registry.port, `/v2/${repo}/blobs/${bigDigest}`);
    await waitFor("the transfer to start", () => sendFileStats().started > before.started);
    assert.equal(sendFileStats().inFlight, 1, "the transfer is still running while the client does not read");
    client.destroy();
    await waitFor("the transfer to end", () => sendFileStats().inFlight === 0);
    const now = sendFileStats();
    assert.equal(now.failed - before.failed, 1);
    assert.equal(now.completed, before.completed);
    assert.ok(now.bytes - before.bytes < big.length, "not everything was sent");

    const res = await fetchBlob(`${reg.url}/v2/${repo}/blobs/${bigDigest}`);
    assert.equal(res.status, 200);
    assert.equal(digestOf(res.body), bigDigest);
    await waitFor(`descriptors back to ${fdsBefore} (now ${openFds()})`, () => openFds() <= fdsBefore);
  });

  it("streams instead when maxInFlight transfers are already running", async () => {
    const restore = setSendFileLimits({ maxInFlight: 1 });
    const before = sendFileStats();
    const client = await stalledClient(reg.registry.port, `/v2/${repo}/blobs/${bigDigest}`);
    try {
      await waitFor("the first transfer to start", () => sendFileStats().inFlight === 1);
      const res = await fetchBlob(`${reg.url}/v2/${repo}/blobs/${bigDigest}`);
      assert.equal(res.status, 200);
      assert.equal(digestOf(res.body), bigDigest);
      const now = sendFileStats();
      assert.equal(now.overCap - before.overCap, 1, "the second GET was over the cap");
      assert.equal(now.started - before.started, 1, "only the first GET went native");
    } finally {
      restore();
      client.destroy();
    }
    await waitFor("the stalled transfer to end", () => sendFileStats().inFlight === 0);
  });

  it("server shutdown stops an in-flight transfer promptly", async () => {
    const other = await startTestRegistry();
    const otherRepo = uid("sfclose");
    const digest = await pushBlob(other.url, otherRepo, big);
    const before = sendFileStats();
    const client = await stalledClient(other.registry.port, `/v2/${otherRepo}/blobs/${digest}`);
    const clientClosed = new Promise<void>((resolve) => client.once("close", () => resolve()));
    try {
      await waitFor("the transfer to start", () => sendFileStats().started > before.started);
      const started = Date.now();
      await other.close();
      await waitFor("the transfer to end", () => sendFileStats().inFlight === 0, 3000);
      assert.ok(Date.now() - started < 3000, `shutdown took ${Date.now() - started} ms`);
      assert.equal(sendFileStats().failed - before.failed, 1);
      // The connection really is closed: the native thread's duplicate did not keep it open.
      client.resume();
      await Promise.race([clientClosed, new Promise((_, reject) => setTimeout(() => reject(new Error("client still connected")), 3000))]);
    } finally {
      client.destroy();
    }
  });
});

describe("blob GET keeps the stream path when sendfile does not apply", () => {
  let reg: TestRegistry;
  let off: TestRegistry;
  let repo: string;
  let big: Buffer;
  let bigDigest: string;
  let small: Buffer;
  let smallDigest: string;

  before(async () => {
    reg = await startTestRegistry();
    off = await startTestRegistry({ storage: { sendfile: false } });
    repo = uid("sfno");
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
    const before = sendFileStats();
    const res = await fetchBlob(`${reg.url}/v2/${repo}/blobs/${bigDigest}`, { method: "HEAD" });
    assert.equal(res.status, 200);
    assert.equal(res.headers["content-length"], String(big.length));
    assert.equal(res.headers["docker-content-digest"], bigDigest);
    assert.equal(res.body.length, 0);
    assert.equal(sendFileStats().started, before.started);
  });

  it("a blob under 256 KiB is streamed", async () => {
    const before = sendFileStats();
    const res = await fetchBlob(`${reg.url}/v2/${repo}/blobs/${smallDigest}`);
    assert.equal(res.status, 200);
    assert.equal(digestOf(res.body), smallDigest);
    assert.equal(sendFileStats().started, before.started);
  });

  it("a small range of a large blob is streamed", async () => {
    const before = sendFileStats();
    const res = await fetchBlob(`${reg.url}/v2/${repo}/blobs/${bigDigest}`, { headers: { Range: "bytes=10-1009" } });
    assert.equal(res.status, 206);
    assert.deepEqual(res.body, big.subarray(10, 1010));
    assert.equal(sendFileStats().started, before.started);
  });

  it("storage.sendfile: false streams every blob", async () => {
    const before = sendFileStats();
    const res = await fetchBlob(`${off.url}/v2/${repo}/blobs/${bigDigest}`);
    assert.equal(res.status, 200);
    assert.equal(digestOf(res.body), bigDigest);
    assert.equal(sendFileStats().started, before.started);
  });

  it("a large blob is native when the addon is available (the control for the cases above)", { skip }, async () => {
    const before = sendFileStats();
    const res = await fetchBlob(`${reg.url}/v2/${repo}/blobs/${bigDigest}`);
    assert.equal(digestOf(res.body), bigDigest);
    await settled();
    assert.equal(sendFileStats().completed - before.completed, 1);
  });
});

describe("sendFileResponse on a bare node:http server", { skip }, () => {
  let dir: string;
  let path: string;
  const size = 32 * MiB;
  let server: Server;
  let outcome: Promise<SendFileOutcome> | undefined;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "ferry-sendfile-"));
    path = join(dir, "file");
    await writeFile(path, randomBytes(size));
    server = createServer((req, res) => {
      const slot = reserveSendFile(res, size);
      assert.ok(slot, "eligible");
      const fd = openSync(path, "r");
      outcome = sendFileResponse(slot, res, {
        status: 200,
        headers: { "Content-Length": size },
        fd,
        offset: 0,
        length: size,
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
});
