/**
 * The access line of `ferry serve`'s logger is put together by hand
 * (src/http/access-log.ts); it must be exactly the line pino writes for the
 * same fields, through the same destination, at the same level.
 */
import { describe, it } from "node:test";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import pino, { type LoggerOptions } from "pino";
import { accessLog, plainShape, type AccessFields } from "../../src/http/access-log.js";
import { createLogger } from "../../src/server.js";
import { loadConfig } from "../../src/config/load.js";

/** A pino logger with createLogger's options, writing to memory. */
function capture(options: LoggerOptions = {}): { logger: pino.Logger; lines: string[] } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(chunk.toString("utf8"));
      done();
    },
  });
  // stream.write is synchronous enough here: Writable buffers nothing when the callback runs at once.
  const logger = pino(
    {
      level: "info",
      base: { pid: process.pid },
      redact: { paths: ["authorization", "*.authorization", "headers.authorization", "password", "*.password", "token", "*.token", "secret", "*.secret"], censor: "[redacted]" },
      ...options,
    },
    stream,
  );
  return { logger, lines };
}

const CASES: AccessFields[] = [
  { requestId: "1a-2b", method: "GET", path: "/v2/app/manifests/latest", status: 200, ms: 0.3, code: undefined, client: "127.0.0.1" },
  { requestId: "1a-2c", method: "HEAD", path: "/v2/a/b/c/blobs/sha256:abc", status: 404, ms: 12, code: "BLOB_UNKNOWN", client: "::1" },
  { requestId: "x", method: "PUT", path: '/v2/"quoted"\\back/slash', status: 400, ms: 1234.5, code: "NAME_INVALID", client: "10.0.0.1, 10.0.0.2" },
  { requestId: "y", method: "GET", path: "/v2/\u0001control\u001f\ttab", status: 400, ms: 0, code: "UNSUPPORTED", client: "" },
  { requestId: "z", method: "GET", path: `/v2/${"long/".repeat(40)}x\u00e9\u00ff`, status: 500, ms: 0.1, code: "UNKNOWN", client: "\u00e9" },
  { requestId: "w", method: "GET", path: "/", status: 200, ms: Number.NaN, code: undefined, client: "1.2.3.4" },
  { requestId: 'q"1', method: "G\\T", path: "/v2/\u007f\u0080", status: 201, ms: 0.05, code: 'A"B', client: "\u001f" },
  // Durations as the dispatcher rounds them (tenths of a millisecond), and a few it never passes.
  ...[0.1, 0.3, 0.7, 1, 9.9, 10, 99.5, 1234.5, 65536.1, 1e6 + 0.1, 123456789.9, 1e-7, 2.25, 1e21, -0.5, Number.POSITIVE_INFINITY].map(
    (ms, i): AccessFields => ({ requestId: `ms${i}`, method: "GET", path: "/v2/", status: 200, ms, code: undefined, client: "::1" }),
  ),
];

const withoutTime = (line: string) => line.replace(/"time":\d+/, '"time":0');
/** The hand-built lines of a turn are written at its end. */
const turn = () => new Promise((resolve) => setImmediate(resolve));

describe("access log line", () => {
  it("ferry serve's logger gets the hand-built line", () => {
    assert.equal(plainShape(createLogger(loadConfig()).child({}, { redact: [] })), true);
    assert.equal(plainShape(capture().logger.child({}, { redact: [] })), true);
  });

  it("is byte for byte the line pino writes for the same fields", async () => {
    for (const fields of CASES) {
      const fast = capture();
      const slow = capture();
      accessLog(fast.logger)(fields);
      slow.logger.child({}, { redact: [] }).info({ ...fields }, "request");
      await turn();
      assert.equal(fast.lines.length, 1);
      assert.equal(withoutTime(fast.lines[0]!), withoutTime(slow.lines[0]!));
      assert.match(fast.lines[0]!, /"time":\d{13},/);
    }
  });

  it("writes the lines of one turn together, in order, at its end", async () => {
    const { logger, lines } = capture();
    const log = accessLog(logger);
    for (const fields of CASES) log(fields);
    assert.equal(lines.length, 0, "not before the turn ends");
    await turn();
    assert.equal(lines.length, 1, "one write");
    assert.deepEqual(
      lines[0]!.split("\n").filter(Boolean).map((line) => (JSON.parse(line) as { requestId: string }).requestId),
      CASES.map((fields) => fields.requestId),
    );
    log(CASES[0]!);
    await turn();
    assert.equal(lines.length, 2, "the next turn's lines are written too");
  });

  it("keeps each write within the destination's largest write, in whole lines (serving threads share a pipe)", async () => {
    const { logger, lines } = capture();
    // ferry serve's destination writes at most PIPE_BUF bytes at once (createLogger).
    Object.assign((logger as unknown as Record<symbol, object>)[pino.symbols.streamSym]!, { maxWrite: 4096 });
    const log = accessLog(logger);
    const ids: string[] = [];
    for (let i = 0; i < 120; i++) {
      const fields = CASES[i % CASES.length]!;
      ids.push(`${fields.requestId}#${i}`);
      log({ ...fields, requestId: `${fields.requestId}#${i}` });
    }
    await turn();
    assert.ok(lines.length > 1, "more than one write for 120 lines");
    for (const chunk of lines) {
      assert.ok(Buffer.byteLength(chunk) <= 4096, `a write of ${Buffer.byteLength(chunk)} bytes`);
      assert.ok(chunk.endsWith("\n"), "ends at a line's end");
    }
    const written = lines.join("").split("\n").filter(Boolean).map((line) => (JSON.parse(line) as { requestId: string }).requestId);
    assert.deepEqual(written, ids);
  });

  it("writes the turn's lines when the process exits before the turn ends", () => {
    // ferry serve's own destination (asynchronous, fd 1), and process.exit() right after the line.
    const script = `
      import { accessLog } from ${JSON.stringify(fileURLToPath(new URL("../../src/http/access-log.js", import.meta.url)))};
      import { createLogger } from ${JSON.stringify(fileURLToPath(new URL("../../src/server.js", import.meta.url)))};
      import { loadConfig } from ${JSON.stringify(fileURLToPath(new URL("../../src/config/load.js", import.meta.url)))};
      const log = accessLog(createLogger(loadConfig()));
      for (let i = 0; i < 3; i++) log({ requestId: "exit-" + i, method: "GET", path: "/v2/", status: 200, ms: 1, code: undefined, client: "::1" });
      process.exit(0);`;
    const child = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8" });
    assert.equal(child.status, 0, child.stderr);
    const ids = child.stdout.split("\n").filter((line) => line.includes('"msg":"request"')).map((line) => (JSON.parse(line) as { requestId: string }).requestId);
    assert.deepEqual(ids, ["exit-0", "exit-1", "exit-2"]);
  });

  it("is not written when the logger's level leaves out info", async () => {
    const { logger, lines } = capture({ level: "warn" });
    accessLog(logger)(CASES[0]!);
    await turn();
    assert.deepEqual(lines, []);
  });

  it("goes through pino for loggers of another shape", () => {
    const mixed = capture({ mixin: () => ({ node: "n1" }) });
    assert.equal(plainShape(mixed.logger.child({}, { redact: [] })), false);
    accessLog(mixed.logger)(CASES[1]!);
    assert.equal(JSON.parse(mixed.lines[0]!).node, "n1");
    const keyed = capture({ messageKey: "message" });
    accessLog(keyed.logger)(CASES[1]!);
    assert.equal(JSON.parse(keyed.lines[0]!).message, "request");
  });

  it("keeps the bindings of a child logger", async () => {
    const child = capture();
    accessLog(child.logger.child({ worker: 2 }))(CASES[0]!);
    await turn();
    assert.equal(JSON.parse(child.lines[0]!).worker, 2);
  });
});
