/** The bench judges an `--storage s3` run by issue 12's goals, a filesystem run by its own. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { evaluateTarget, targetFor } from "../../bench/targets.js";
import { summarize } from "../../bench/stats.js";

test("--storage s3 rows carry issue 12's targets; rows it does not name keep the filesystem ones", () => {
  assert.deepEqual(targetFor("push.mono.100MiB.c1.mibps"), { kind: "ratio", min: 2 });
  assert.deepEqual(targetFor("push.mono.100MiB.c1.mibps", "s3"), { kind: "ratio", min: 5 });
  assert.deepEqual(targetFor("push.mono.100MiB.c8.mibps", "s3"), { kind: "ratio", min: 5 });
  assert.deepEqual(targetFor("manifest.get.tag.rps"), { kind: "ratio", min: 15 });
  assert.deepEqual(targetFor("manifest.get.tag.rps", "s3"), { kind: "ratio", min: 20 });
  assert.deepEqual(targetFor("manifest.get.digest.rps", "s3"), { kind: "ratio", min: 20 });
  assert.deepEqual(targetFor("wrk.tags.rps", "s3"), { kind: "ratio", min: 50 });
  assert.deepEqual(targetFor("list.tags.first.n200.ms", "s3"), { kind: "ratio", min: 50 });
  assert.equal(targetFor("list.tags.first.n200.ms"), undefined);
  assert.deepEqual(targetFor("pull.100MiB.c1.mibps", "s3"), { kind: "ratio", min: 1 });
  assert.equal(targetFor("push.mono.10MiB.c1.mibps", "s3"), undefined);
});

test("on S3, RSS under the mix is bounded absolutely (Ferry's worst repeat), not relative to the reference", () => {
  const rss = targetFor("rss.mix.peak", "s3")!;
  assert.equal(evaluateTarget(rss, 0.5, summarize([200, 240, 250])).met, true);
  assert.equal(evaluateTarget(rss, 5, summarize([100, 120, 300])).met, false);
  assert.equal(evaluateTarget(targetFor("push.mono.100MiB.c1.mibps", "s3")!, 4.47, undefined).met, false);
  assert.equal(evaluateTarget(targetFor("push.mono.100MiB.c1.mibps", "s3")!, 5.1, undefined).met, true);
});
