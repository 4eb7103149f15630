/**
 * Large request bodies handed from the connection straight to storage
 * (src/http/body.ts, src/storage/body-handoff.ts). What a client relies on:
 * the blob is stored byte for byte whatever way its bytes arrive; the
 * response closes the connection (Node's parser never saw the body end, so
 * the connection cannot carry another request, and a request pipelined after
 * the body is never run); a body that goes quiet, stops or lies about its
 * content fails as a streamed one does, and leaves the session as it was.
 *
 * The server runs in this process, so /proc/self/fd counts its descriptors.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { newUploadSession, rawRequest, sha256, uid } from "./client.js";
import { exchange, holdOpen, settleDescriptors, uploadFiles } from "./raw-socket.js";
import { loadNativeAddon, nativeFileReceiveAvailable, nativeReceiveAvailable } from "../../src/native/addon.js";
import { MAX_TAKEN } from "../../src/http/taken-connection.js";

const IDLE_MS = 600;
const MiB = 1024 * 1024;
const skip = nativeReceiveAvailable() ? false : "the native addon (with receive) is not built";
if (skip && process.env.REQUIRE_E2E_TOOLS === "1") throw new Error(`native receive required in CI: ${skip}`);

let reg: TestRegistry;
let repo: string;

before(async () => {
  reg = await startTestRegistry({ http: { requestIdleTimeout: `${IDLE_MS}ms` } });
  repo = uid("handoff/");
});
after(async () => {
  await reg?.close();
});

function newSession(): Promise<string> {
  return newUploadSession(reg.url, repo);
}

async function blobDigest(digest: string): Promise<string | number> {
  const res = await fetch(`${reg.url}/v2/${repo}/blobs/${digest}`);
  if (res.status !== 200) return res.status;
  return sha256(Buffer.from(await res.arrayBuffer()));
}

/** The head of a PUT ?digest= that carries a body of `length` bytes on the upload session `session`. */
function putHead(session: string, digest: string, length: number): Buffer {
  return Buffer.from(`PUT ${session}?digest=${digest} HTTP/1.1\r\nHost: x\r\nContent-Length: ${length}\r\n\r\n`);
}

/** PUTs `body` (claimed to be `digest`) onto `session` in one exchange. */
function putBody(base: string, session: string, body: Buffer, timeoutMs = 15_000, digest = sha256(body)): ReturnType<typeof exchange> {
  return exchange(base, [putHead(session, digest, body.length), body], 0, timeoutMs);
}

/** Splits `body` into parts of the given sizes (the last part takes the rest). */
function pieces(body: Buffer, sizes: number[]): Buffer[] {
  const parts: Buffer[] = [];
  let at = 0;
  for (const size of sizes) {
    parts.push(body.subarray(at, at + size));
    at += size;
  }
  parts.push(body.subarray(at));
  return parts.filter((part) => part.length > 0);
}

describe("a large body handed over to storage", { skip }, () => {
  for (const [label, sizes] of [
    ["in one write with its headers", [] as number[]],
    ["headers with a few bytes, then odd-sized pieces", [3, 65_536 + 7, 1_000_003, 2 * MiB - 1]],
    ["in 4 KiB pieces", Array.from({ length: 300 }, () => 4096)],
  ] as const) {
    it(`is stored byte for byte and the connection closes after the 201: ${label}`, async () => {
      const body = randomBytes(6 * MiB + 4097);
      const digest = sha256(body);
      const session = await newSession();
      const head = Buffer.from(`PUT ${session}?digest=${digest} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: ${body.length}\r\n\r\n`);
      const [first, ...rest] = pieces(body, [...sizes]);
      const res = await exchange(reg.url, [Buffer.concat([head, first!]), ...rest], 2, 15_000);
      assert.equal(res.status, 201, res.raw.slice(0, 400));
      assert.match(res.raw, /\r\nconnection: close\r\n/i, "the response says the connection closes");
      assert.ok(res.closedByServer, "the server closed it");
      assert.equal(await blobDigest(digest), digest);
    });
  }

  it("monolithic POST ?digest= and a PATCH with Content-Range are handed over too", async () => {
    const body = randomBytes(5 * MiB);
    const digest = sha256(body);
    const post = await exchange(reg.url, [Buffer.from(`POST /v2/${repo}/blobs/uploads/?digest=${digest} HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n`), body], 0, 15_000);
    assert.equal(post.status, 201, post.raw.slice(0, 300));
    assert.equal(await blobDigest(digest), digest);

    const second = randomBytes(5 * MiB);
    const session = await newSession();
    const patch = await exchange(reg.url, [Buffer.from(`PATCH ${session} HTTP/1.1\r\nHost: x\r\nContent-Range: 0-${second.length - 1}\r\nContent-Length: ${second.length}\r\n\r\n`), second], 0, 15_000);
    assert.equal(patch.status, 202, patch.raw.slice(0, 300));
    assert.match(patch.raw, new RegExp(`\\r\\nrange: 0-${second.length - 1}\\r\\n`, "i"));
    const put = await rawRequest(reg.url, `PUT ${session}?digest=${sha256(second)} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
    assert.equal(put.status, 201, put.raw.slice(0, 300));
    assert.equal(await blobDigest(sha256(second)), sha256(second));
  });

  it("a request pipelined after the body is never run", async () => {
    const body = randomBytes(5 * MiB);
    const digest = sha256(body);
    const session = await newSession();
    const smuggled = uid("smuggled-");
    // Were the bytes after the body parsed as a request, this POST would open a session in another repository.
    const next = `POST /v2/${repo}/${smuggled}/blobs/uploads/?digest=${sha256("x")} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx`;
    const res = await exchange(reg.url, [Buffer.concat([putHead(session, digest, body.length), body, Buffer.from(next)])], 0, 15_000);
    assert.equal(res.status, 201, res.raw.slice(0, 300));
    assert.equal(res.raw.match(/HTTP\/1\.1 \d{3}/g)?.length, 1, "one response only");
    assert.equal(await blobDigest(digest), digest);
    const probe = await fetch(`${reg.url}/v2/${repo}/${smuggled}/blobs/${sha256("x")}`, { method: "HEAD" });
    assert.equal(probe.status, 404, "the pipelined request did nothing");
  });

  it("a body that does not match its digest is refused and nothing is stored", async () => {
    const body = randomBytes(5 * MiB);
    const claimed = sha256(randomBytes(10));
    const session = await newSession();
    const res = await putBody(reg.url, session, body, 15_000, claimed);
    assert.equal(res.status, 400, res.raw.slice(0, 300));
    assert.match(res.raw, /"code":"DIGEST_INVALID"/);
    assert.equal(await blobDigest(sha256(body)), 404);
  });

  it("a handed-over body that goes quiet: 408 BLOB_UPLOAD_INVALID, connection closed, session and descriptors as before", async () => {
    const session = await newSession();
    const baseline = await settleDescriptors();
    const files = await uploadFiles(reg.dataDir);
    const started = Date.now();
    const res = await exchange(reg.url, [Buffer.concat([Buffer.from(`PATCH ${session} HTTP/1.1\r\nHost: x\r\nContent-Length: ${8 * MiB}\r\n\r\n`), randomBytes(3 * MiB)])], 0, IDLE_MS * 10);
    assert.equal(res.status, 408, res.raw.slice(0, 300));
    assert.match(res.raw, /"errors":\[\{"code":"BLOB_UPLOAD_INVALID"/);
    assert.ok(res.closedByServer, "the server closed the connection");
    assert.ok(Date.now() - started < IDLE_MS * 6, `answered after ${Date.now() - started} ms`);
    const now = await settleDescriptors(baseline);
    assert.ok(now <= baseline + 1, `descriptors: ${baseline} before, ${now} after`);
    assert.equal(await uploadFiles(reg.dataDir), files, "no upload file left behind");
    // The session took none of the cut-off chunk and takes the next one at once.
    const patch = await rawRequest(reg.url, `PATCH ${session} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello`, 3000);
    assert.equal(patch.status, 202, patch.raw.slice(0, 300));
    assert.match(patch.headers, /\r\nrange: 0-4\r\n/i);
  });

  it("a client that hangs up mid-body leaves the session as it was and no descriptor behind", async () => {
    const session = await newSession();
    const baseline = await settleDescriptors();
    const held = await holdOpen(reg.url, Buffer.concat([Buffer.from(`PATCH ${session} HTTP/1.1\r\nHost: x\r\nContent-Length: ${8 * MiB}\r\n\r\n`), randomBytes(3 * MiB)]));
    await new Promise((resolve) => setTimeout(resolve, 150));
    held.socket.destroy();
    const now = await settleDescriptors(baseline);
    assert.ok(now <= baseline, `descriptors: ${baseline} before, ${now} after`);
    const patch = await rawRequest(reg.url, `PATCH ${session} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello`, 3000);
    assert.equal(patch.status, 202, patch.raw.slice(0, 300));
    assert.match(patch.headers, /\r\nrange: 0-4\r\n/i, "none of the cut-off chunk stayed");
  });

  it("bodies under 4 MiB and chunked bodies stream as before, on a connection that stays open", async () => {
    for (const framing of ["length", "chunked"] as const) {
      const body = randomBytes(framing === "length" ? 3 * MiB : 5 * MiB);
      const digest = sha256(body);
      const session = await newSession();
      const head =
        framing === "length"
          ? putHead(session, digest, body.length).toString()
          : `PUT ${session}?digest=${digest} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n${body.length.toString(16)}\r\n`;
      const tail = framing === "length" ? "" : "\r\n0\r\n\r\n";
      const res = await exchange(reg.url, [Buffer.concat([Buffer.from(head), body, Buffer.from(tail)])], 0, 1500);
      assert.equal(res.status, 201, res.raw.slice(0, 300));
      assert.doesNotMatch(res.raw, /\r\nconnection: close\r\n/i, `${framing}: kept alive`);
      assert.equal(res.closedByServer, false, `${framing}: the connection stayed open`);
      assert.equal(await blobDigest(digest), digest);
    }
  });
});

/** Counts the addon's receives into memory (not the discards after a body) and into a file while `run` runs. */
async function countingNativeJobs<T>(run: () => Promise<T>): Promise<{ result: T; intoMemory: number; intoFile: number }> {
  const loaded = loadNativeAddon();
  if (!("addon" in loaded)) throw new Error("no addon");
  const addon = loaded.addon;
  const { receive, receiveFile } = addon;
  const counts = { intoMemory: 0, intoFile: 0 };
  addon.receive = (fd, target, ...rest) => {
    if (target !== null) counts.intoMemory++;
    return receive!(fd, target, ...rest);
  };
  addon.receiveFile = (...args) => {
    counts.intoFile++;
    return receiveFile!(...args);
  };
  try {
    return { result: await run(), ...counts };
  } finally {
    addon.receive = receive;
    addon.receiveFile = receiveFile;
  }
}

/** A PATCH of `body` onto `session` at `start`, with a Content-Length or chunked. */
function patch(session: string, body: Buffer, start: number, framing: "length" | "chunked"): ReturnType<typeof exchange> {
  const range = `Content-Range: ${start}-${start + body.length - 1}\r\n`;
  if (framing === "length") {
    return exchange(reg.url, [Buffer.from(`PATCH ${session} HTTP/1.1\r\nHost: x\r\n${range}Content-Length: ${body.length}\r\n\r\n`), body], 0, 15_000);
  }
  const head = `PATCH ${session} HTTP/1.1\r\nHost: x\r\n${range}Transfer-Encoding: chunked\r\n\r\n${body.length.toString(16)}\r\n`;
  // A streamed body leaves the connection open: the exchange ends at its timeout, after the answer.
  return exchange(reg.url, [Buffer.from(head), body, Buffer.from("\r\n0\r\n\r\n")], 0, 1500);
}

describe("where a handed-over body is hashed", { skip: skip || (nativeFileReceiveAvailable() ? false : "the addon predates receiveFile") }, () => {
  it("received, written and hashed by one native job, and the session's hash goes on from it across requests", async () => {
    // Handed over only at a block-aligned offset (O_DIRECT): 5 MiB, then 11 MiB.
    const parts = [randomBytes(5 * MiB), randomBytes(6 * MiB), randomBytes(100_000)];
    const whole = Buffer.concat(parts);
    const session = await newSession();
    const { result: statuses, intoMemory, intoFile } = await countingNativeJobs(async () => {
      const out: number[] = [];
      let at = 0;
      for (const part of parts) {
        out.push((await patch(session, part, at, part.length > 4 * MiB ? "length" : "chunked")).status);
        at += part.length;
      }
      return out;
    });
    assert.deepEqual(statuses, [202, 202, 202]);
    assert.equal(intoFile, 2, "each large PATCH was one job");
    assert.equal(intoMemory, 0, "no slab-by-slab receive");
    const put = await rawRequest(reg.url, `PUT ${session}?digest=${sha256(whole)} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
    assert.equal(put.status, 201, put.raw.slice(0, 300));
    assert.equal(await blobDigest(sha256(whole)), sha256(whole));
  });

  it("a session whose hash already runs on the hashing thread: its next large body is received slab by slab, and the digest still holds", async () => {
    // 3 MiB streamed (chunked, never handed over) is past what is hashed inline: the state is on the worker.
    const parts = [randomBytes(3 * MiB), randomBytes(5 * MiB + 1)];
    const whole = Buffer.concat(parts);
    const session = await newSession();
    const { result: statuses, intoMemory, intoFile } = await countingNativeJobs(async () => [
      (await patch(session, parts[0]!, 0, "chunked")).status,
      (await patch(session, parts[1]!, parts[0]!.length, "length")).status,
    ]);
    assert.deepEqual(statuses, [202, 202]);
    assert.equal(intoFile, 0, "the worker's state cannot be fed natively");
    assert.ok(intoMemory >= 5, `received slab by slab (${intoMemory} receives)`);
    const put = await rawRequest(reg.url, `PUT ${session}?digest=${sha256(whole)} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
    assert.equal(put.status, 201, put.raw.slice(0, 300));
    assert.equal(await blobDigest(sha256(whole)), sha256(whole));
  });

  it("a body whose bytes do not match the digest after a native job is refused, and nothing is stored", async () => {
    const body = randomBytes(6 * MiB);
    const tampered = Buffer.from(body);
    tampered[5 * MiB] ^= 1;
    const session = await newSession();
    const { result: res, intoFile } = await countingNativeJobs(() => putBody(reg.url, session, tampered, 15_000, sha256(body)));
    assert.equal(intoFile, 1);
    assert.equal(res.status, 400, res.raw.slice(0, 300));
    assert.match(res.raw, /"code":"DIGEST_INVALID"/);
    assert.equal(await blobDigest(sha256(body)), 404);
    assert.equal(await blobDigest(sha256(tampered)), 404);
  });
});

describe("an idle timeout longer than a C int of milliseconds", { skip }, () => {
  it("still hands bodies over (the native receive takes the longest timeout it can)", async () => {
    const long = await startTestRegistry({ http: { requestIdleTimeout: "30d" } });
    try {
      const body = randomBytes(5 * MiB);
      const session = await newUploadSession(long.url, uid("handoff/"));
      const res = await putBody(long.url, session, body);
      assert.equal(res.status, 201, res.raw.slice(0, 300));
      assert.match(res.raw, /\r\nconnection: close\r\n/i);
    } finally {
      await long.close();
    }
  });
});

describe("a server that closes connections with handoffs in flight", { skip }, () => {
  it(`counts them back: after ${MAX_TAKEN} cut off by a shutdown, the next server still hands bodies over`, async () => {
    const first = await startTestRegistry();
    const repository = uid("handoff/");
    const held = [];
    for (let i = 0; i < MAX_TAKEN; i++) {
      const session = await newUploadSession(first.url, repository);
      held.push(await holdOpen(first.url, `PATCH ${session} HTTP/1.1\r\nHost: x\r\nContent-Length: ${5 * MiB}\r\n\r\nx`));
    }
    await new Promise((resolve) => setTimeout(resolve, 300));
    await first.close();
    for (const connection of held) connection.socket.destroy();
    const second = await startTestRegistry();
    try {
      const body = randomBytes(5 * MiB);
      const session = await newUploadSession(second.url, uid("handoff/"));
      const res = await putBody(second.url, session, body);
      assert.equal(res.status, 201, res.raw.slice(0, 300));
      assert.match(res.raw, /\r\nconnection: close\r\n/i, "handed over: no slot was left taken by the closed connections");
    } finally {
      await second.close();
    }
  });
});

describe("the number of connections taken at once", { skip }, () => {
  it(`at most ${MAX_TAKEN} bodies are handed over at once; the next ones stream as before`, async (t) => {
    // Its own server, whose idle timeout outlasts the test: the held bodies must stay held.
    const busy = await startTestRegistry();
    const repository = uid("handoff/");
    t.after(() => busy.close());
    const streamedPush = async (): Promise<string> => {
      const body = randomBytes(5 * MiB);
      const digest = sha256(body);
      const session = await newUploadSession(busy.url, repository);
      const res = await putBody(busy.url, session, body, 1500);
      assert.equal(res.status, 201, res.raw.slice(0, 300));
      const stored = await fetch(`${busy.url}/v2/${repository}/blobs/${digest}`);
      assert.equal(sha256(Buffer.from(await stored.arrayBuffer())), digest);
      return res.raw;
    };
    const held = [];
    for (let i = 0; i < MAX_TAKEN; i++) {
      const session = await newUploadSession(busy.url, repository);
      held.push(await holdOpen(busy.url, `PATCH ${session} HTTP/1.1\r\nHost: x\r\nContent-Length: ${5 * MiB}\r\n\r\nx`));
    }
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.doesNotMatch(await streamedPush(), /\r\nconnection: close\r\n/i, "past the limit: streamed, the connection stays open");
    // Counted while the held bodies wait (after the streamed push, whose hashing thread and fetch connection stay):
    // once their clients go, each must take its descriptors with it.
    const baseline = await settleDescriptors();
    for (const connection of held) connection.socket.destroy();
    const released = await settleDescriptors();
    assert.ok(released <= baseline - MAX_TAKEN * 3, `descriptors: ${baseline} while held, ${released} after (each held one had a socket, a session file and its O_DIRECT twin, a duplicate, an eventfd)`);
    // Handoffs are counted back: the next large body is handed over again.
    const again = randomBytes(5 * MiB);
    const next = await putBody(busy.url, await newUploadSession(busy.url, repository), again);
    assert.equal(next.status, 201, next.raw.slice(0, 300));
    assert.match(next.raw, /\r\nconnection: close\r\n/i);
  });
});
