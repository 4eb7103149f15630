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
import { enableStreamingRoom, STREAMING_HEAP_GROWING_PERCENT, STREAMING_MIN_BYTES, StreamingHeap, streamingHeap } from "../../src/memory/streaming-heap.js";
import { SafeFetcher } from "../../src/federation/fetcher.js";

const wait = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("streaming heap room", () => {
  it("raises the factor once for overlapping streams and lowers it only after they have all been quiet a while", async () => {
    const set: number[] = [];
    let released = 0;
    const heap = new StreamingHeap((percent) => set.push(percent), 300, 40, () => released++);
    heap.enable(100);
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
    const third = heap.enter(); // within the quiet period: nothing changes
    third();
    assert.deepEqual(set, [300]);
    assert.equal(released, 0);
    await wait(80);
    assert.deepEqual(set, [300, 100]);
    assert.equal(released, 1, "what the streams left is handed back once, when the factor goes back");
    heap.enter()();
    await wait(80);
    assert.deepEqual(set, [300, 100, 300, 100]);
    assert.equal(released, 2);
  });

  it("only counts while not enabled: a process without Ferry's growth policy keeps V8's", async () => {
    const set: number[] = [];
    let released = 0;
    const heap = new StreamingHeap((percent) => set.push(percent), 300, 10, () => released++);
    const leave = heap.enter();
    assert.equal(heap.active, 1);
    leave();
    await wait(30);
    assert.deepEqual(set, []);
    assert.equal(released, 0);
  });

  it("leaves an operator's --heap-growing-percent alone", () => {
    assert.equal(enableStreamingRoom(["--heap-growing-percent=150"], ""), false);
    assert.equal(enableStreamingRoom([], "--heap_growing_percent=80"), false);
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
      enableStreamingRoom([], "");
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
    // Measured on Node 20: 7-8 without, 1-2 with. Were the flag no longer read at run time, or such buffers no
    // longer counted against the limit, both would be alike and this would fail: then the room is pointless.
    assert.ok(without >= 4, `expected the 2x limit to collect often: ${without} mark-compacts`);
    assert.ok(withRoom * 2 <= without, `mark-compacts: ${withRoom} with the room, ${without} without`);
    assert.equal(STREAMING_HEAP_GROWING_PERCENT, 300);
  });

  it("the fetcher counts a large blob body as a stream until it closes, and a small one not at all", async (t) => {
    const big = Buffer.alloc(STREAMING_MIN_BYTES + 1024, 7);
    const server = http.createServer((req, res) => {
      const body = req.url === "/big" ? big : Buffer.alloc(1000);
      res.writeHead(200, { "Content-Length": String(body.length) });
      res.end(body);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const fetcher = new SafeFetcher({ schemes: ["http"], allowPrivateNetworks: true });
    t.after(() => {
      fetcher.close();
      server.closeAllConnections();
      server.close();
    });
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const before = streamingHeap.active;

    for (const plainBody of [true, false]) {
      const response = await fetcher.fetch({ url: `${base}/big`, method: "GET", timeoutMs: 5000, maxBytes: big.length, plainBody });
      assert.equal(streamingHeap.active, before + 1, "counted while it streams");
      let got = 0;
      await new Promise<void>((resolve, reject) => {
        response.body.on("data", (chunk: Buffer) => (got += chunk.length));
        response.body.on("error", reject);
        response.body.on("end", resolve);
        response.body.resume();
      });
      assert.equal(got, big.length);
      await wait(20);
      assert.equal(streamingHeap.active, before, "no longer counted once it closed");
    }

    // Abandoned midway: still uncounted once destroyed.
    const cut = await fetcher.fetch({ url: `${base}/big`, method: "GET", timeoutMs: 5000, maxBytes: big.length, plainBody: true });
    assert.equal(streamingHeap.active, before + 1);
    cut.body.destroy();
    await wait(20);
    assert.equal(streamingHeap.active, before);

    const small = await fetcher.fetch({ url: `${base}/small`, method: "GET", timeoutMs: 5000, maxBytes: 1000 });
    assert.equal(streamingHeap.active, before, "a small body is no stream");
    small.body.resume();
    await new Promise((resolve) => small.body.on("end", resolve));
  });
});
