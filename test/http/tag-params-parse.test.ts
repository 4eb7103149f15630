/**
 * The `tag` query parameter reader on its own (distribution-spec main,
 * "Pushing Manifests"): which parameters become tags, in what order, and what
 * is refused before the body is read. The HTTP behaviour is in tag-params.test.ts.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { MAX_TAG_PARAMS, tagParams } from "../../src/http/tag-params.js";
import { parseDigestAlgorithm } from "../../src/oci/digest.js";
import { RegistryError } from "../../src/oci/errors.js";
import { parseManifestReference } from "../../src/oci/reference.js";

const byDigest = parseManifestReference(`sha512:${"ab".repeat(64)}`);

function refusal(fn: () => unknown): { code: string; status: number } {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof RegistryError, String(error));
    return { code: error.code, status: error.status };
  }
  assert.fail("accepted");
}

describe("tag query parameters", () => {
  it("none is no tag; others are the distinct tags in request order, other parameters ignored", () => {
    assert.deepEqual(tagParams(new URLSearchParams(""), byDigest), []);
    assert.deepEqual(tagParams(new URLSearchParams("ns=x&tag=b&tag=a&tag=b&digest=y"), byDigest), ["b", "a"]);
  });

  it(`exactly ${MAX_TAG_PARAMS} distinct tags pass, one more is 414; repeats do not count against the limit`, () => {
    assert.ok(MAX_TAG_PARAMS >= 10, "the spec: SHOULD support at least 10");
    const many = (n: number) => new URLSearchParams(Array.from({ length: n }, (_, i) => `tag=t${i}`).join("&"));
    assert.equal(tagParams(many(MAX_TAG_PARAMS), byDigest).length, MAX_TAG_PARAMS);
    assert.deepEqual(refusal(() => tagParams(many(MAX_TAG_PARAMS + 1), byDigest)), { code: "MANIFEST_INVALID", status: 414 });
    const repeated = new URLSearchParams(Array.from({ length: 500 }, () => "tag=same").join("&"));
    assert.deepEqual(tagParams(repeated, byDigest), ["same"]);
  });

  it("a tag outside the grammar is 400 MANIFEST_INVALID, and so is any tag parameter on a push by tag", () => {
    for (const bad of ["", ".x", "-x", "x".repeat(129), "a/b", "a b", "a,b", "a\r\nb"]) {
      const query = new URLSearchParams();
      query.append("tag", "good");
      query.append("tag", bad);
      assert.deepEqual(refusal(() => tagParams(query, byDigest)), { code: "MANIFEST_INVALID", status: 400 }, JSON.stringify(bad));
    }
    assert.deepEqual(refusal(() => tagParams(new URLSearchParams("tag=b"), parseManifestReference("a"))), { code: "MANIFEST_INVALID", status: 400 });
  });
});

describe("digest-algorithm", () => {
  it("sha256 and sha512 are accepted; anything else is DIGEST_INVALID", () => {
    assert.equal(parseDigestAlgorithm("sha256"), "sha256");
    assert.equal(parseDigestAlgorithm("sha512"), "sha512");
    for (const bad of ["", "SHA256", "sha384", "md5", "blake3", "sha256 ", "sha512:"]) {
      assert.deepEqual(refusal(() => parseDigestAlgorithm(bad)), { code: "DIGEST_INVALID", status: 400 }, bad);
    }
  });
});
