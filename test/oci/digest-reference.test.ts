/**
 * Unit tests for the digest and reference grammars, from the specs' text:
 * image-spec 1.1 "Digests" and distribution-spec 1.1 "Pulling manifests".
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { digestOf, isValidDigest, parseDigest } from "../../src/oci/digest.js";
import {
  assertRepositoryName,
  isValidRepositoryName,
  isValidTag,
  parseManifestReference,
} from "../../src/oci/reference.js";
import { RegistryError } from "../../src/oci/errors.js";

function code(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (error) {
    assert.ok(error instanceof RegistryError, `throws RegistryError, got ${String(error)}`);
    return error.code;
  }
}

describe("digests (image-spec: digest ::= algorithm ':' encoded)", () => {
  const hex64 = "0123456789abcdef".repeat(4);
  const hex128 = hex64 + hex64;

  it("accepts sha256 with 64 lowercase hex and sha512 with 128", () => {
    // "the encoded portion MUST match /[a-f0-9]{64}/" (sha256), "/[a-f0-9]{128}/" (sha512)
    assert.deepEqual(parseDigest(`sha256:${hex64}`), { algorithm: "sha256", encoded: hex64, digest: `sha256:${hex64}` });
    assert.equal(parseDigest(`sha512:${hex128}`).algorithm, "sha512");
  });

  it("refuses wrong length, uppercase and non-hex encodings with DIGEST_INVALID", () => {
    for (const bad of [
      `sha256:${hex64.slice(1)}`,
      `sha256:${hex64}0`,
      `sha256:${hex64.toUpperCase()}`,
      `sha256:${"g".repeat(64)}`,
      `sha512:${hex64}`,
      `sha256:`,
      `:${hex64}`,
      hex64,
      "",
      `sha256:${hex64}\n`,
      ` sha256:${hex64}`,
      `SHA256:${hex64}`,
    ]) {
      assert.equal(code(() => parseDigest(bad)), "DIGEST_INVALID", JSON.stringify(bad));
      assert.equal(isValidDigest(bad), false);
    }
  });

  it("grammatically valid but unsupported algorithms are refused (not mis-parsed) with a message naming the algorithm", () => {
    for (const value of ["md5:d41d8cd98f00b204e9800998ecf8427e", "sha384:" + "a".repeat(96), "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8", "blake3:" + hex64]) {
      try {
        parseDigest(value);
        assert.fail(`accepted ${value}`);
      } catch (error) {
        assert.ok(error instanceof RegistryError);
        assert.equal(error.code, "DIGEST_INVALID");
        assert.ok(error.message.includes(value.split(":")[0]!), error.message);
      }
    }
  });

  it("digestOf computes algorithm:hex of the bytes", () => {
    const data = Buffer.from("a small string");
    assert.equal(digestOf(data), `sha256:${createHash("sha256").update(data).digest("hex")}`);
    assert.equal(digestOf(data, "sha512"), `sha512:${createHash("sha512").update(data).digest("hex")}`);
    assert.equal(digestOf(""), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  });

  it("a huge input does not appear in full in the error", () => {
    try {
      parseDigest("x".repeat(100_000));
      assert.fail("accepted");
    } catch (error) {
      assert.ok((error as Error).message.length < 1000);
      assert.ok(JSON.stringify((error as RegistryError).detail).length < 1000);
    }
  });
});

describe("repository names (distribution-spec 1.1)", () => {
  // [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*
  it("accepts names that match the grammar", () => {
    for (const name of ["a", "library/ubuntu", "a.b", "a_b", "a__b", "a-b", "a---b", "a/b/c/d", "0", "x1/y2.z3-w4"]) {
      assert.ok(isValidRepositoryName(name), name);
      assert.doesNotThrow(() => assertRepositoryName(name));
    }
  });

  it("refuses names that do not match with NAME_INVALID", () => {
    for (const name of ["", "A", "Library/ubuntu", "a..b", "a___b", "a.-b", "-a", "a-", ".a", "a/", "/a", "a//b", "a/../b", "..", "a b", "a:b", "a@b", "é", "a\u0000b"]) {
      assert.equal(isValidRepositoryName(name), false, JSON.stringify(name));
      assert.equal(code(() => assertRepositoryName(name)), "NAME_INVALID", JSON.stringify(name));
    }
  });

  it("caps length at 255 characters", () => {
    // Clients impose 255 on host + "/" + name; the registry refuses longer names outright.
    assert.ok(isValidRepositoryName("a".repeat(255)));
    assert.equal(isValidRepositoryName("a".repeat(256)), false);
    assert.equal(code(() => assertRepositoryName("a".repeat(10_000))), "NAME_INVALID");
  });
});

describe("tags and manifest references", () => {
  // tag: [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}
  it("accepts tags of the grammar up to 128 characters", () => {
    for (const tag of ["latest", "v1.0.0", "_x", "A", "9", "a-b_c.d", "x".repeat(128), "Z".repeat(128)]) {
      assert.ok(isValidTag(tag), tag);
      assert.deepEqual(parseManifestReference(tag), { kind: "tag", tag });
    }
  });

  it("refuses other tags with a 400", () => {
    for (const tag of ["", ".x", "-x", "x".repeat(129), "a/b", "a b", "a+b", "a@b", "é"]) {
      assert.equal(isValidTag(tag), false, tag);
      try {
        parseManifestReference(tag);
        assert.fail(`accepted ${tag}`);
      } catch (error) {
        assert.ok(error instanceof RegistryError);
        assert.equal(error.status, 400);
      }
    }
  });

  it("a reference containing ':' is a digest and must be a valid one", () => {
    const d = `sha256:${"a".repeat(64)}`;
    const parsed = parseManifestReference(d);
    assert.equal(parsed.kind, "digest");
    assert.equal(code(() => parseManifestReference("sha256:abc")), "DIGEST_INVALID");
    assert.equal(code(() => parseManifestReference("tag:withcolon")), "DIGEST_INVALID");
  });
});
