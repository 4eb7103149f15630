/**
 * While a large body streams through JavaScript, `ferry serve` lets V8's old
 * generation grow to 4x what was live instead of 2x (src/memory/streaming-heap.ts):
 * a stream's short-lived buffers count against that limit and, under the 2x
 * one, set off a mark-compact every few tens of MiB.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import {
  enableStreamingRoom,
  newStreamingState,
  STREAMING_HEAP_GROWING_PERCENT,
  STREAMING_MIN_BYTES,
  StreamingHeap,
  streamingHeap,
  streamingPercent,
} from "../../src/memory/streaming-heap.js";
import { SafeFetcher } from "../../src/federation/fetcher.js";
import { Verifier } from "../../src/federation/verifier.js";
import type { SourceHealth } from "../../src/federation/health.js";
import type { ProxyCache } from "../../src/federation/cache.js";

const wait = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const MiB = 1024 * 1024;

/** A heap whose flag changes are recorded; 17 MB live. */
function recorded(quietMs: number, state?: SharedArrayBuffer, maxStreamMs?: number) {
  const set: number[] = [];
  const heap = new StreamingHeap({ setPercent: (percent) => set.push(percent), liveBytes: () => 17 * MiB, quietMs, maxStreamMs });
  heap.enable(100, state);
  return { heap, set };
}

describe("streaming heap room", () => {
  it("raises the factor once for overlapping streams and lowers it only after they have all been quiet a while", async () => {
    const { heap, set } = recorded(40);
    const first = heap.enter();
    const second = heap.enter();
    assert.deepEqual(set, [300]);
    first();
    first(); // leaving twice counts once
    assert.equal(heap.active, 1);
    await wait(80);
    assert.deepEqual(set, [300], "one stream still runs");
    second();
    assert.equal(heap.active, 0);
    await wait(10);
    const third = heap.enter(); // within the quiet period: the pending lowering is called off
    third();
    await wait(35); // past when the first quiet period would have ended, before the second does
    assert.deepEqual(set, [300]);
    await wait(60);
    assert.deepEqual(set, [300, 100]);
    heap.enter()();
    await wait(80);
    assert.deepEqual(set, [300, 100, 300, 100]);
  });

  it("only counts while not enabled: a process without Ferry's growth policy keeps V8's", async () => {
    const set: number[] = [];
    const heap = new StreamingHeap({ setPercent: (percent) => set.push(percent), quietMs: 10 });
    const leave = heap.enter();
    assert.equal(heap.active, 1);
    leave();
    await wait(30);
    assert.deepEqual(set, []);
  });

  it("threads share one count: the factor goes down only once every thread's streams are over", async () => {
    const state = newStreamingState();
    const a = recorded(30, state);
    const b = recorded(30, state);
    const leaveA = a.heap.enter();
    const leaveB = b.heap.enter();
    assert.deepEqual([...a.set, ...b.set], [300], "raised once for the process");
    leaveA();
    await wait(80);
    assert.deepEqual([...a.set, ...b.set], [300], "thread B still streams");
    leaveB();
    await wait(80);
    assert.deepEqual(a.set, [300]);
    assert.deepEqual(b.set, [100], "lowered once, by the thread whose stream ended last");
  });

  it("lets go of a stream nobody ever closes", async () => {
    const { heap, set } = recorded(10, undefined, 30);
    heap.enter(); // never left
    await wait(90);
    assert.equal(heap.active, 0);
    assert.deepEqual(set, [300, 100]);
  });

  it("grants at most 64 MiB over the 2x limit: a large heap stays nearer 2x", () => {
    assert.equal(streamingPercent(100, 17 * MiB), STREAMING_HEAP_GROWING_PERCENT);
    assert.equal(streamingPercent(100, 320 * MiB), 120);
    assert.equal(streamingPercent(100, 64 * 1024 * MiB), 100);
    assert.equal(streamingPercent(100, 0), STREAMING_HEAP_GROWING_PERCENT);
  });

  it("leaves an operator's --heap-growing-percent alone", () => {
    assert.equal(enableStreamingRoom(undefined, ["--heap-growing-percent=150"], ""), false);
    assert.equal(enableStreamingRoom(undefined, [], "--heap_growing_percent=80"), false);
  });

  it("under Ferry's policy, a stream's buffers set off far fewer mark-compacts with the room than without", () => {
    // ~15 MB live; two 64 KiB buffers per step as Node's HTTP client allocates them (the socket read and the
    // parsed piece), 16 of them kept a while (the pieces on their way to the store and the clients): 800 MiB in all.
    const module = fileURLToPath(new URL("../../src/memory/streaming-heap.js", import.meta.url));
    const growth = fileURLToPath(new URL("../../src/memory/heap-growth.js", import.meta.url));
    const script = `
      import { PerformanceObserver, constants } from "node:perf_hooks";
      (await import(${JSON.stringify(growth)})).limitHeapGrowth([], "");
      const { enableStreamingRoom, streamingHeap } = await import(${JSON.stringify(module)});
      enableStreamingRoom(undefined, [], "");
      let majors = 0;
      new PerformanceObserver((list) => { for (const e of list.getEntries()) if (e.detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) majors++; }).observe({ entryTypes: ["gc"] });
      const live = []; for (let i = 0; i < 150000; i++) live.push({ i, s: "x" + i, a: [i, i] });
      globalThis.live = live;
      const leave = process.argv[1] === "room" ? streamingHeap.enter() : () => undefined;
      const kept = [];
      let n = 0;
      await new Promise((resolve) => {
        const step = () => {
          for (let k = 0; k < 16; k++) {
            const read = Buffer.allocUnsafe(65536); read[0] = k;
            const piece = Buffer.allocUnsafe(65536); piece[0] = read[0];
            kept.push(piece); if (kept.length > 16) kept.shift();
            n++;
          }
          if (n < 6400) setImmediate(step); else resolve();
        };
        step();
      });
      leave();
      await new Promise((resolve) => setTimeout(resolve, 50));
      console.log(majors);
    `;
    const run = (mode: string) => Number(execFileSync(process.execPath, ["--max-semi-space-size=4", "--input-type=module", "-e", script, mode], { encoding: "utf8", timeout: 60_000 }).trim());
    const without = run("none");
    const withRoom = run("room");
    // Measured on Node 20: 7-9 without, 1-2 with. Were the flag no longer read at run time, or such buffers no
    // longer counted against the limit, both would be alike and this would fail: then the room is pointless.
    assert.ok(without >= 4, `expected the 2x limit to collect often: ${without} mark-compacts`);
    assert.ok(withRoom * 2 <= without, `mark-compacts: ${withRoom} with the room, ${without} without`);
  });
});

describe("what counts as a stream", () => {
  /** A loopback server: /big (announced length), /chunked (large, no length), /small. */
  async function server(t: { after: (fn: () => unknown) => void }) {
    const big = Buffer.alloc(STREAMING_MIN_BYTES + 1024, 7);
    const srv = http.createServer((req, res) => {
      if (req.url === "/chunked") {
        res.writeHead(200);
        res.end(big);
        return;
      }
      const body = req.url === "/big" ? big : Buffer.alloc(1000);
      res.writeHead(200, { "Content-Length": String(body.length) });
      res.end(body);
    });
    await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
    const fetcher = new SafeFetcher({ schemes: ["http"], allowPrivateNetworks: true });
    t.after(() => {
      fetcher.close();
      srv.closeAllConnections();
      srv.close();
    });
    return { base: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`, fetcher, big };
  }

  const drain = (body: NodeJS.ReadableStream) =>
    new Promise<number>((resolve, reject) => {
      let got = 0;
      body.on("data", (chunk: Buffer) => (got += chunk.length));
      body.on("error", reject);
      body.on("end", () => resolve(got));
      body.resume();
    });

  it("the fetcher counts a large announced body as a stream until it closes, however it ends", async (t) => {
    const { base, fetcher, big } = await server(t);
    const before = streamingHeap.active;
    for (const plainBody of [true, false]) {
      const response = await fetcher.fetch({ url: `${base}/big`, method: "GET", timeoutMs: 5000, maxBytes: big.length, plainBody });
      assert.equal(streamingHeap.active, before + 1, "counted while it streams");
      assert.equal(await drain(response.body), big.length);
      await wait(20);
      assert.equal(streamingHeap.active, before, "no longer counted once it closed");
    }
    const cut = await fetcher.fetch({ url: `${base}/big`, method: "GET", timeoutMs: 5000, maxBytes: big.length, plainBody: true });
    assert.equal(streamingHeap.active, before + 1);
    cut.body.destroy();
    await wait(20);
    assert.equal(streamingHeap.active, before, "abandoned midway: no longer counted");
  });

  it("a small body, or one without a Content-Length (a tag list sent chunked), is no stream", async (t) => {
    const { base, fetcher, big } = await server(t);
    const before = streamingHeap.active;
    const small = await fetcher.fetch({ url: `${base}/small`, method: "GET", timeoutMs: 5000, maxBytes: 1000 });
    assert.equal(streamingHeap.active, before);
    await drain(small.body);
    const chunked = await fetcher.fetch({ url: `${base}/chunked`, method: "GET", timeoutMs: 5000, maxBytes: 16 * MiB, plainBody: true });
    assert.equal(chunked.contentLength, null);
    assert.equal(streamingHeap.active, before);
    assert.equal(await drain(chunked.body), big.length);
  });

  it("a foreign layer's verification whose cache session cannot begin closes the body it fetched", async (t) => {
    const { base, fetcher, big } = await server(t);
    const health = { record: () => undefined } as unknown as SourceHealth;
    const cache = {
      fits: () => true,
      begin: () => Promise.reject(new Error("cache full")),
    } as unknown as ProxyCache;
    const verifier = new Verifier(fetcher, health, cache);
    const before = streamingHeap.active;
    const result = await verifier.verify({ digest: `sha256:${"0".repeat(64)}`, size: big.length, urls: [`${base}/big`] }, "fetch", 5000, () => ({ pin: false }));
    assert.equal(result.ok, false);
    assert.match(result.attempts[0]!.answer, /cache full/);
    await wait(50);
    assert.equal(streamingHeap.active, before, "the body was closed, not left open on its socket");
  });
});
