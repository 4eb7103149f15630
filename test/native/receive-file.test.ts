/**
 * The addon's receiveFile (the rest of a request body, from the connection
 * into an upload's file, hashed on the way, on threads of its own) and the
 * SHA-256 state it feeds. Written from what the upload path relies on: the
 * file holds exactly the body's bytes at their positions, the hash continues
 * from where it was, nothing past the body is read, nothing is written once
 * done() ran, and every way a body can stop ends the job with its reason.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { constants as osConstants } from "node:os";
import { createHash, randomBytes } from "node:crypto";
import { closeSync, constants as fsConstants, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadNativeAddon, nativeFileReceiveAvailable, NativeSha256, startReceiveFile, type FileSink } from "../../src/native/addon.js";
import { AlignedSlabs, SLAB_BYTES } from "../../src/storage/aligned-slabs.js";
import { socketPair, type SocketPair } from "../helpers/socket-pair.js";

const state = loadNativeAddon();
const skip = nativeFileReceiveAvailable() ? false : "reason" in state ? state.reason : "the addon predates receiveFile";
if (skip && process.env.REQUIRE_E2E_TOOLS === "1") throw new Error(`native receiveFile required in CI: ${skip}`);
const { ECONNRESET, ETIMEDOUT, ECANCELED, EBADF } = osConstants.errno;
const MiB = 1024 * 1024;

/** An upload file (on the disk tmpdir is on, which takes O_DIRECT) holding `existing`, opened both ways. */
function uploadFile(existing: Buffer = Buffer.alloc(0)): { path: string; directFd: number; bufferedFd: number; close(): void } {
  const dir = mkdtempSync(join(tmpdir(), "ferry-receive-file-"));
  const path = join(dir, "upload");
  writeFileSync(path, existing);
  const bufferedFd = openSync(path, fsConstants.O_WRONLY);
  const directFd = openSync(path, fsConstants.O_WRONLY | (fsConstants.O_DIRECT ?? 0));
  return {
    path,
    directFd,
    bufferedFd,
    close() {
      closeSync(directFd);
      closeSync(bufferedFd);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const pool = new AlignedSlabs(16);
function slabs(count: number): Buffer[] {
  return Array.from({ length: count }, () => pool.take()!);
}
function giveBack(taken: Buffer[]): void {
  for (const slab of taken) pool.give(slab);
}

type UploadFile = ReturnType<typeof uploadFile>;

/** Runs `body` with an upload file (holding `existing`), a socket pair and `ring` slabs, and puts all three away after. */
async function withJobSetup(ring: number, body: (file: UploadFile, p: SocketPair, taken: Buffer[]) => Promise<void>, existing?: Buffer): Promise<void> {
  const file = uploadFile(existing);
  const p = await socketPair();
  const taken = slabs(ring);
  try {
    await body(file, p, taken);
  } finally {
    giveBack(taken);
    p.close();
    file.close();
  }
}

function sink(file: { directFd: number; bufferedFd: number }, over: Partial<FileSink> & Pick<FileSink, "slabs">): FileSink {
  return { directFd: file.directFd, bufferedFd: file.bufferedFd, position: 0, prefilled: 0, hash: null, ...over };
}

test("SHA-256 state: fed in any pieces, and across the JS thread and a job, it is SHA-256", { skip }, () => {
  const data = randomBytes(3 * MiB + 5);
  for (const piece of [1, 63, 64, 65, 4096, MiB]) {
    const hash = new NativeSha256();
    for (let at = 0; at < data.length; at += piece) hash.update(data.subarray(at, at + piece));
    assert.equal(hash.hex(), createHash("sha256").update(data).digest("hex"), `pieces of ${piece}`);
  }
  assert.equal(new NativeSha256().hex(), createHash("sha256").digest("hex"), "nothing fed");
  if (!("addon" in state)) return;
  const update = state.addon.sha256Update!;
  assert.throws(() => update(new Uint8Array(8), data), TypeError, "a state too small is refused");
  // Anything but bytes would otherwise hash as nothing: a wrong digest, silently.
  const hash = new NativeSha256();
  for (const notBytes of ["abc", new DataView(data.buffer, data.byteOffset, 8), data.buffer, 7, new Uint16Array(4)]) {
    assert.throws(() => update(hash.state, notBytes as unknown as Uint8Array), TypeError, `refused: ${Object.prototype.toString.call(notBytes)}`);
  }
  update(hash.state, new Uint8Array(0));
  assert.equal(hash.hex(), createHash("sha256").digest("hex"), "an empty array is fine, and nothing");
});

for (const { name, bodyBytes, prefilled, ring, position } of [
  { name: "several slabs and an unaligned tail", bodyBytes: 5 * MiB + 12345, prefilled: 0, ring: 3, position: 0 },
  { name: "a whole number of slabs", bodyBytes: 4 * MiB, prefilled: 0, ring: 3, position: 0 },
  { name: "less than one slab", bodyBytes: 5000, prefilled: 0, ring: 3, position: 0 },
  { name: "a ring of one slab", bodyBytes: 3 * MiB + 1, prefilled: 0, ring: 1, position: 0 },
  { name: "the first slab already holding bytes, after earlier appends", bodyBytes: 2 * MiB + 700, prefilled: 70_000, ring: 2, position: 2 * MiB },
]) {
  test(`receives exactly the body into the file and the hash: ${name}`, { skip }, async () => {
    const before = randomBytes(position);
    await withJobSetup(ring, async (file, p, taken) => {
      const held = randomBytes(prefilled);
      held.copy(taken[0]);
      const body = randomBytes(bodyBytes);
      const after = Buffer.from("GET /next HTTP/1.1\r\n\r\n");
      p.client.write(Buffer.concat([body, after]));
      // The session's hash has seen the earlier appends; the job goes on from there.
      const hash = new NativeSha256();
      hash.update(before);
      const result = await startReceiveFile(p.fd, sink(file, { slabs: taken, prefilled, position, hash }), bodyBytes, 5000).done;
      assert.equal(result.errno, 0);
      assert.equal(result.received, bodyBytes);
      const whole = Buffer.concat([before, held, body]);
      assert.ok(readFileSync(file.path).equals(whole), "the file is the earlier bytes, the held ones, then the body");
      assert.equal(hash.hex(), createHash("sha256").update(whole).digest("hex"));
      const written = prefilled + bodyBytes;
      assert.equal(result.direct + result.buffered, written);
      assert.equal(result.direct, written - (written % 4096), "everything but the unaligned tail went directly");
      // What the client sent after the body is still in the socket, for Node to read.
      p.server.resume();
      const next = await new Promise<Buffer>((resolve) => p.server.once("data", resolve));
      assert.equal(next.toString(), after.toString());
    }, before);
  });
}

test("without a hash the body is only written", { skip }, async () => {
  await withJobSetup(2, async (file, p, taken) => {
    const body = randomBytes(3 * MiB + 3);
    p.client.write(body);
    const result = await startReceiveFile(p.fd, sink(file, { slabs: taken }), body.length, 5000).done;
    assert.equal(result.errno, 0);
    assert.ok(readFileSync(file.path).equals(body));
  });
});

test("memory a direct write refuses (not page aligned) goes through the page cache, intact", { skip }, async () => {
  await withJobSetup(0, async (file, p) => {
    const unaligned = [Buffer.alloc(2 * SLAB_BYTES + 4096).subarray(1, 1 + SLAB_BYTES), Buffer.alloc(2 * SLAB_BYTES + 4096).subarray(3, 3 + SLAB_BYTES)];
    const body = randomBytes(3 * MiB + 99);
    p.client.write(body);
    const hash = new NativeSha256();
    const result = await startReceiveFile(p.fd, sink(file, { slabs: unaligned, hash }), body.length, 5000).done;
    assert.equal(result.errno, 0);
    assert.equal(result.direct, 0);
    assert.equal(result.buffered, body.length);
    assert.ok(readFileSync(file.path).equals(body));
    assert.equal(hash.hex(), createHash("sha256").update(body).digest("hex"));
  });
});

test("the peer closing before the body ended is ECONNRESET, and nothing is written after done", { skip }, async () => {
  await withJobSetup(3, async (file, p, taken) => {
    p.client.end(randomBytes(2 * MiB + 10));
    const result = await startReceiveFile(p.fd, sink(file, { slabs: taken, hash: new NativeSha256() }), 10 * MiB, 5000).done;
    assert.equal(result.errno, ECONNRESET);
    assert.equal(result.diskFailed, false);
    assert.equal(result.received, 2 * MiB + 10);
    const size = statSync(file.path).size;
    assert.ok(size <= 2 * MiB, `only whole slabs received before the end were written (${size} bytes)`);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(statSync(file.path).size, size, "no write landed after done");
  });
});

test("no byte for the idle timeout is ETIMEDOUT, measured from the last byte", { skip }, async () => {
  await withJobSetup(2, async (file, p, taken) => {
    const started = Date.now();
    const job = startReceiveFile(p.fd, sink(file, { slabs: taken }), MiB, 300);
    setTimeout(() => p.client.write(Buffer.alloc(10)), 200);
    assert.equal((await job.done).errno, ETIMEDOUT);
    const took = Date.now() - started;
    assert.ok(took >= 480 && took < 2000, `timed out after ${took} ms (a byte came at 200 ms, the timeout is 300 ms)`);
  });
});

test("cancel ends a job waiting for bytes with ECANCELED and leaves the connection usable; once done it does nothing", { skip }, async () => {
  await withJobSetup(3, async (file, p, taken) => {
    const job = startReceiveFile(p.fd, sink(file, { slabs: taken, hash: new NativeSha256() }), 8 * MiB, 10_000);
    p.client.write(randomBytes(MiB + 5));
    const started = Date.now();
    setTimeout(() => job.cancel(), 100);
    const result = await job.done;
    assert.equal(result.errno, ECANCELED);
    assert.ok(Date.now() - started < 2000);
    p.server.write("reply");
    const reply = await new Promise<Buffer>((resolve) => p.client.once("data", resolve));
    assert.equal(reply.toString(), "reply");

    const second = await socketPair();
    second.client.write(Buffer.alloc(4096, 1));
    const finished = startReceiveFile(second.fd, sink(file, { slabs: taken }), 4096, 5000);
    assert.equal((await finished.done).errno, 0);
    finished.cancel(); // after the end: no effect, no throw
    second.close();
  });
});

test("a write the file refuses ends the job with the file's errno, marked as the disk's", { skip }, async () => {
  await withJobSetup(2, async (file, p, taken) => {
    const readOnly = openSync(file.path, fsConstants.O_RDONLY);
    try {
      p.client.write(randomBytes(3 * MiB));
      const result = await startReceiveFile(p.fd, { ...sink(file, { slabs: taken }), directFd: readOnly, bufferedFd: readOnly }, 3 * MiB, 5000).done;
      assert.equal(result.errno, EBADF);
      assert.equal(result.diskFailed, true);
    } finally {
      closeSync(readOnly);
    }
  });
});

test("a failed write ends the job at once, though the client keeps the connection open and trickles bytes", { skip }, async () => {
  await withJobSetup(3, async (file, p, taken) => {
    const readOnly = openSync(file.path, fsConstants.O_RDONLY);
    const trickle = setInterval(() => p.client.write(Buffer.alloc(1)), 200);
    try {
      p.client.write(randomBytes(MiB + 10));
      const started = process.cpuUsage();
      const startedAt = Date.now();
      const job = startReceiveFile(p.fd, { ...sink(file, { slabs: taken }), directFd: readOnly, bufferedFd: readOnly }, 8 * MiB, 10_000);
      const result = await job.done;
      const took = Date.now() - startedAt;
      const cpu = process.cpuUsage(started);
      assert.equal(result.errno, EBADF);
      assert.equal(result.diskFailed, true);
      assert.ok(took < 1000, `ended after ${took} ms (the idle timeout is 10 s; the receiver must stop with the writer)`);
      assert.ok((cpu.user + cpu.system) / 1000 < 500, "the receiver did not spin meanwhile");
    } finally {
      clearInterval(trickle);
      closeSync(readOnly);
    }
  });
});

test("bad arguments throw before anything starts", { skip }, () => {
  if (!("addon" in state) || !state.addon.receiveFile) return;
  const receiveFile = state.addon.receiveFile;
  const done = () => undefined;
  const slab = pool.take()!;
  const hashState = new NativeSha256().state;
  try {
    assert.throws(() => receiveFile(-1, 0, 0, 0, [slab], 0, null, 8, 1000, done), TypeError, "no socket");
    assert.throws(() => receiveFile(0, 0, 0, 0, [], 0, null, 8, 1000, done), TypeError, "no slab");
    assert.throws(() => receiveFile(0, 0, 0, 0, Array(9).fill(slab), 0, null, 8, 1000, done), TypeError, "too many slabs");
    assert.throws(() => receiveFile(0, 0, 0, 0, [slab, slab.subarray(0, 4096)], 0, null, 8, 1000, done), TypeError, "slabs of different lengths");
    assert.throws(() => receiveFile(0, 0, 0, 0, [slab.subarray(0, 5000)], 0, null, 8, 1000, done), TypeError, "not a multiple of the block size");
    assert.throws(() => receiveFile(0, 0, 0, 0, [slab], SLAB_BYTES, null, 8, 1000, done), TypeError, "prefilled fills the slab");
    assert.throws(() => receiveFile(0, 0, 0, 0, [slab], 0, hashState.subarray(0, 16), 8, 1000, done), TypeError, "a state too small");
    assert.throws(() => receiveFile(0, 0, 0, 0, [slab], 0, null, 0, 1000, done), TypeError, "nothing to receive");
    assert.throws(() => receiveFile(0, 0, 0, 0, [slab], 0, null, 8, 0, done), TypeError, "no idle timeout");
  } finally {
    pool.give(slab);
  }
});

test("a serving thread terminated mid-job: the job is stopped with it and the process lives on", { skip }, async () => {
  const { Worker } = await import("node:worker_threads");
  const addonUrl = new URL("../../src/native/addon.js", import.meta.url).href;
  const dir = mkdtempSync(join(tmpdir(), "ferry-receive-file-"));
  const source = `
    import { parentPort } from "node:worker_threads";
    import { createServer, connect } from "node:net";
    import { openSync, constants } from "node:fs";
    import { startReceiveFile, NativeSha256 } from ${JSON.stringify(addonUrl)};
    const path = ${JSON.stringify(join(dir, "upload"))};
    const fd = openSync(path, constants.O_WRONLY | constants.O_CREAT);
    const listener = createServer({ pauseOnConnect: true });
    listener.listen(0, "127.0.0.1", () => {
      listener.once("connection", (server) => {
        // Slabs and a hash state in this thread's memory, which goes with it; the body never comes.
        const slabs = [Buffer.alloc(1 << 20), Buffer.alloc(1 << 20)];
        startReceiveFile(server._handle.fd, { directFd: fd, bufferedFd: fd, position: 0, slabs, prefilled: 0, hash: new NativeSha256() }, 8 << 20, 400);
        parentPort.postMessage("receiving");
      });
      const client = connect(listener.address().port, "127.0.0.1", () => client.write(Buffer.alloc(3 << 20, 7)));
    });
  `;
  const worker = new Worker(new URL(`data:text/javascript,${encodeURIComponent(source)}`));
  try {
    await new Promise<void>((resolve, reject) => {
      worker.once("message", () => resolve());
      worker.once("error", reject);
    });
    await new Promise((resolve) => setTimeout(resolve, 50));
    await worker.terminate();
    // Past the job's idle timeout: a thread left running would now report into the freed environment.
    await new Promise((resolve) => setTimeout(resolve, 700));
    assert.ok(true, "still alive");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
