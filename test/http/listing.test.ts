/**
 * distribution-spec 1.1 "Content Discovery": tags list with n/last and Link,
 * the _catalog (same pagination rules), and the referrers API.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import {
  EMPTY_JSON,
  OCI_EMPTY,
  OCI_INDEX,
  OCI_MANIFEST,
  descriptor,
  expectError,
  makeImage,
  pushArtifact,
  pushBlob,
  pushManifest,
  req,
  sha256,
  uid,
} from "./client.js";

let reg: TestRegistry;
before(async () => {
  reg = await startTestRegistry();
});
after(async () => {
  await reg?.close();
});

/** "the tags MUST be sorted in lexical (case-insensitive alphanumeric) or ASCIIbetical order" */
function isSpecSorted(list: string[]): boolean {
  const ascii = [...list].sort();
  const lexical = [...list].sort((a, b) => a.toLowerCase().localeCompare(b.toLowerCase(), "en") || (a < b ? -1 : a > b ? 1 : 0));
  return JSON.stringify(list) === JSON.stringify(ascii) || JSON.stringify(list) === JSON.stringify(lexical);
}

/** Parses `Link: <url>; rel="next"` (RFC 5988) and returns the absolute next URL. */
function nextLink(res: Response): string | undefined {
  const link = res.headers.get("link");
  if (!link) return undefined;
  const match = /^\s*<([^>]+)>\s*;\s*rel="?next"?\s*$/.exec(link);
  assert.ok(match, `Link header is <url>; rel="next": ${link}`);
  return new URL(match[1]!, reg.url).toString();
}

describe("tags list", () => {
  const repo = uid("tags/");
  const tags = ["latest", "v1.0", "v1.1", "V2", "alpha", "Beta", "_x", "9", "v10", "v9"];
  let digest: string;
  before(async () => {
    const pushed = await pushManifest(reg.url, repo, tags[0]!, await makeImage(reg.url, repo), OCI_MANIFEST);
    digest = pushed.digest;
    for (const tag of tags.slice(1)) await pushManifest(reg.url, repo, tag, pushed.bytes, OCI_MANIFEST);
  });

  it("answers 200 {name, tags} with every tag, sorted", async () => {
    // "If the list is not empty, the tags MUST be sorted in lexical ... or ASCIIbetical order"
    const res = await req(`${reg.url}/v2/${repo}/tags/list`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /application\/json/);
    const body = (await res.json()) as { name: string; tags: string[] };
    assert.equal(body.name, repo);
    assert.deepEqual([...body.tags].sort(), [...tags].sort());
    assert.ok(isSpecSorted(body.tags), `sorted: ${body.tags.join(",")}`);
    assert.equal(res.headers.get("link"), null, "no Link when everything fits");
  });

  it("a manifest pushed by digest only adds no tag", async () => {
    const bytes = Buffer.from(JSON.stringify(await makeImage(reg.url, repo)));
    await pushManifest(reg.url, repo, sha256(bytes), bytes, OCI_MANIFEST);
    const body = (await (await req(`${reg.url}/v2/${repo}/tags/list`)).json()) as { tags: string[] };
    assert.equal(body.tags.length, tags.length);
    assert.ok(digest);
  });

  it("?n= returns exactly n tags and a Link to the next page; following Links yields all tags once, in order", async () => {
    // "the response MUST include <int> results" unless fewer remain or a Link header indicates more.
    const all = ((await (await req(`${reg.url}/v2/${repo}/tags/list`)).json()) as { tags: string[] }).tags;
    let url: string | undefined = `${reg.url}/v2/${repo}/tags/list?n=3`;
    const seen: string[] = [];
    let pages = 0;
    while (url) {
      const res: Response = await req(url);
      assert.equal(res.status, 200);
      const body = (await res.json()) as { tags: string[] };
      pages++;
      assert.ok(body.tags.length <= 3);
      const next = nextLink(res);
      if (next) assert.equal(body.tags.length, 3, "a page followed by a Link is full");
      seen.push(...body.tags);
      url = next;
      assert.ok(pages < 20, "pagination terminates");
    }
    assert.deepEqual(seen, all);
    assert.equal(pages, Math.ceil(all.length / 3));
  });

  it("the page that ends the list carries no Link (Link means more tags exist)", async () => {
    // "If more tags are available, the registry may include a Link header"; 10 tags, n=5: page 2 is the end.
    const first = await req(`${reg.url}/v2/${repo}/tags/list?n=5`);
    await first.arrayBuffer();
    const next = nextLink(first);
    assert.ok(next, "page 1 of 2 links to page 2");
    const second = await req(next);
    assert.equal(((await second.json()) as { tags: string[] }).tags.length, 5);
    assert.equal(second.headers.get("link"), null);
  });

  it("?n=&last= starts after last (non-inclusive)", async () => {
    // "up to <int> tags *after* <tagname> will be returned"
    const all = ((await (await req(`${reg.url}/v2/${repo}/tags/list`)).json()) as { tags: string[] }).tags;
    const res = await req(`${reg.url}/v2/${repo}/tags/list?n=2&last=${encodeURIComponent(all[3]!)}`);
    assert.equal(res.status, 200);
    assert.deepEqual(((await res.json()) as { tags: string[] }).tags, all.slice(4, 6));
    // "When using the last query parameter, the n parameter is OPTIONAL."
    const rest = await req(`${reg.url}/v2/${repo}/tags/list?last=${encodeURIComponent(all[6]!)}`);
    assert.deepEqual(((await rest.json()) as { tags: string[] }).tags, all.slice(7));
  });

  it("?last= with a value between existing tags or past the end", async () => {
    const all = ((await (await req(`${reg.url}/v2/${repo}/tags/list`)).json()) as { tags: string[] }).tags;
    const past = await req(`${reg.url}/v2/${repo}/tags/list?n=5&last=zzzz`);
    assert.equal(past.status, 200);
    assert.deepEqual(((await past.json()) as { tags: string[] }).tags, []);
    assert.equal(past.headers.get("link"), null);
    const res = await req(`${reg.url}/v2/${repo}/tags/list?last=${encodeURIComponent(all[all.length - 1]!)}`);
    assert.deepEqual(((await res.json()) as { tags: string[] }).tags, []);
  });

  it("?n=0 returns an empty list and no Link header", async () => {
    // "If n=0, the registry MUST return an empty list and MUST NOT include a Link header."
    const res = await req(`${reg.url}/v2/${repo}/tags/list?n=0`);
    assert.equal(res.status, 200);
    const body = (await res.json()) as { tags: string[] };
    assert.deepEqual(body.tags, []);
    assert.equal(res.headers.get("link"), null);
  });

  it("?n= larger than the number of tags returns all without Link", async () => {
    const res = await req(`${reg.url}/v2/${repo}/tags/list?n=1000`);
    assert.equal(((await res.json()) as { tags: string[] }).tags.length, tags.length);
    assert.equal(res.headers.get("link"), null);
  });

  it("an invalid n answers 400", async () => {
    for (const n of ["-1", "abc", "1.5", "", "1e3", "99999999999999999999999"]) {
      const res = await req(`${reg.url}/v2/${repo}/tags/list?n=${n}`);
      // A huge n may be clamped by the registry; anything else that is not an integer is a client mistake.
      if (n === "99999999999999999999999" && res.status === 200) {
        await res.arrayBuffer();
        continue;
      }
      assert.equal(res.status, 400, `n=${n}: got ${res.status}`);
      await expectError(res, 400);
    }
  });

  it("an unknown repository answers 404 NAME_UNKNOWN", async () => {
    await expectError(await req(`${reg.url}/v2/${uid("ghost/")}/tags/list`), 404, "NAME_UNKNOWN");
  });

  it("a repository whose tags were all deleted answers 200 with an empty list (or 404)", async () => {
    const r = uid("tags/");
    await pushManifest(reg.url, r, "only", await makeImage(reg.url, r), OCI_MANIFEST);
    assert.equal((await req(`${reg.url}/v2/${r}/manifests/only`, { method: "DELETE" })).status, 202);
    const res = await req(`${reg.url}/v2/${r}/tags/list`);
    if (res.status === 404) return void (await expectError(res, 404, "NAME_UNKNOWN"));
    assert.equal(res.status, 200);
    const body = (await res.json()) as { tags: string[] | null };
    assert.deepEqual(body.tags ?? [], []);
  });
});

describe("_catalog", () => {
  let cat: TestRegistry;
  const repos = ["b/one", "a/two", "c", "a/one", "a-b/x", "a_b", "a.b"];
  before(async () => {
    cat = await startTestRegistry();
    for (const r of repos) await pushManifest(cat.url, r, "t", await makeImage(cat.url, r), OCI_MANIFEST);
  });
  after(async () => {
    await cat?.close();
  });

  it("answers 200 {repositories} with every repository, sorted", async () => {
    const res = await req(`${cat.url}/v2/_catalog`);
    assert.equal(res.status, 200);
    const body = (await res.json()) as { repositories: string[] };
    assert.deepEqual([...body.repositories].sort(), [...repos].sort());
    assert.ok(isSpecSorted(body.repositories), body.repositories.join(","));
  });

  it("paginates with n, last and a Link header like tags", async () => {
    const all = ((await (await req(`${cat.url}/v2/_catalog`)).json()) as { repositories: string[] }).repositories;
    let url: string | undefined = `${cat.url}/v2/_catalog?n=2`;
    const seen: string[] = [];
    let guard = 0;
    while (url) {
      const res: Response = await req(url);
      assert.equal(res.status, 200);
      const page = ((await res.json()) as { repositories: string[] }).repositories;
      const link = res.headers.get("link");
      let next: string | undefined;
      if (link) {
        const m = /^\s*<([^>]+)>\s*;\s*rel="?next"?\s*$/.exec(link);
        assert.ok(m, `Link: ${link}`);
        next = new URL(m[1]!, cat.url).toString();
        assert.equal(page.length, 2);
      }
      seen.push(...page);
      url = next;
      assert.ok(++guard < 20);
    }
    assert.deepEqual(seen, all);
    const after1 = await req(`${cat.url}/v2/_catalog?n=2&last=${encodeURIComponent(all[1]!)}`);
    assert.deepEqual(((await after1.json()) as { repositories: string[] }).repositories, all.slice(2, 4));
  });

  it("?n=0 returns an empty list without Link; invalid n answers 400", async () => {
    const res = await req(`${cat.url}/v2/_catalog?n=0`);
    assert.equal(res.status, 200);
    assert.deepEqual(((await res.json()) as { repositories: string[] }).repositories, []);
    assert.equal(res.headers.get("link"), null);
    for (const n of ["-5", "x"]) await expectError(await req(`${cat.url}/v2/_catalog?n=${n}`), 400);
  });
});

describe("referrers API", () => {
  const repo = uid("refs/");
  let subject: { digest: string; bytes: Buffer };
  let sbom: Awaited<ReturnType<typeof pushArtifact>>;
  let sig: Awaited<ReturnType<typeof pushArtifact>>;
  let viaConfig: Awaited<ReturnType<typeof pushArtifact>>;
  let index: { digest: string; bytes: Buffer };

  before(async () => {
    subject = await pushManifest(reg.url, repo, "app", await makeImage(reg.url, repo), OCI_MANIFEST);
    const subjectDesc = descriptor(OCI_MANIFEST, subject.bytes);
    sbom = await pushArtifact(reg.url, repo, {
      artifactType: "application/vnd.example.sbom.v1",
      subject: subjectDesc,
      annotations: { "org.example.format": "json", "org.opencontainers.image.created": "2024-01-01T00:00:00Z" },
    });
    sig = await pushArtifact(reg.url, repo, { artifactType: "application/vnd.example.sig.v1", subject: subjectDesc });
    // No artifactType: the descriptor's artifactType MUST be the config's mediaType.
    const cfg = Buffer.from(`{"kind":"scan-${randomBytes(3).toString("hex")}"}`);
    await pushBlob(reg.url, repo, cfg);
    viaConfig = await pushArtifact(reg.url, repo, {
      config: descriptor("application/vnd.example.scan.config.v1+json", cfg),
      subject: subjectDesc,
    });
    // An index with a subject and no artifactType: artifactType MUST be omitted.
    const idx = {
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [descriptor(OCI_MANIFEST, sig.bytes)],
      subject: subjectDesc,
      annotations: { "org.example.kind": "bundle" },
    };
    const idxBytes = Buffer.from(JSON.stringify(idx));
    index = await pushManifest(reg.url, repo, sha256(idxBytes), idxBytes, OCI_INDEX);
  });

  it("an unknown subject answers 200 with an empty OCI image index", async () => {
    // "If no referrers exist, the registry MUST return an image index with an empty manifests list."
    const res = await req(`${reg.url}/v2/${repo}/referrers/${sha256("nothing refers to this")}`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), OCI_INDEX);
    const body = (await res.json()) as { schemaVersion: number; mediaType: string; manifests: unknown[] };
    assert.equal(body.schemaVersion, 2);
    assert.equal(body.mediaType, OCI_INDEX);
    assert.deepEqual(body.manifests, []);
  });

  it("an unknown repository answers 200 with an empty index (MUST NOT return 404)", async () => {
    // "If the registry supports the referrers API, the registry MUST NOT return a 404 Not Found to a referrers API requests."
    const res = await req(`${reg.url}/v2/${uid("ghost/")}/referrers/${sha256("x")}`);
    assert.equal(res.status, 200);
    assert.deepEqual(((await res.json()) as { manifests: unknown[] }).manifests, []);
  });

  it("lists every referrer with mediaType, digest, size, artifactType and annotations", async () => {
    const res = await req(`${reg.url}/v2/${repo}/referrers/${subject.digest}`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), OCI_INDEX);
    const body = (await res.json()) as { schemaVersion: number; mediaType: string; manifests: Array<Record<string, unknown>> };
    assert.equal(body.schemaVersion, 2);
    assert.equal(body.mediaType, OCI_INDEX);
    const byDigest = new Map(body.manifests.map((d) => [d.digest as string, d]));
    assert.equal(body.manifests.length, 4, JSON.stringify(body.manifests));

    const s = byDigest.get(sbom.digest)!;
    assert.ok(s, "sbom listed");
    assert.equal(s.mediaType, OCI_MANIFEST);
    assert.equal(s.size, sbom.bytes.length);
    assert.equal(s.artifactType, "application/vnd.example.sbom.v1");
    // "MUST include all annotations from the referenced manifest"
    assert.deepEqual(s.annotations, { "org.example.format": "json", "org.opencontainers.image.created": "2024-01-01T00:00:00Z" });

    assert.equal(byDigest.get(sig.digest)?.artifactType, "application/vnd.example.sig.v1");
    // "If the referenced manifest has no artifactType, the descriptor's artifactType MUST be set to the config descriptor's mediaType."
    assert.equal(byDigest.get(viaConfig.digest)?.artifactType, "application/vnd.example.scan.config.v1+json");
    const i = byDigest.get(index.digest)!;
    assert.ok(i, "index listed");
    assert.equal(i.mediaType, OCI_INDEX);
    assert.equal(i.size, index.bytes.length);
    assert.ok(!("artifactType" in i), "an index without artifactType has none in its descriptor");
    assert.deepEqual(i.annotations, { "org.example.kind": "bundle" });
  });

  it("?artifactType= filters and sets OCI-Filters-Applied: artifactType", async () => {
    // "If the registry applies the filter: The response MUST include OCI-Filters-Applied: artifactType"
    const res = await req(`${reg.url}/v2/${repo}/referrers/${subject.digest}?artifactType=${encodeURIComponent("application/vnd.example.sbom.v1")}`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("oci-filters-applied"), "artifactType");
    const body = (await res.json()) as { manifests: Array<{ digest: string }> };
    assert.deepEqual(body.manifests.map((d) => d.digest), [sbom.digest]);
    const none = await req(`${reg.url}/v2/${repo}/referrers/${subject.digest}?artifactType=application/none`);
    assert.deepEqual(((await none.json()) as { manifests: unknown[] }).manifests, []);
  });

  it("without a filter there is no OCI-Filters-Applied header", async () => {
    const res = await req(`${reg.url}/v2/${repo}/referrers/${subject.digest}`);
    await res.arrayBuffer();
    assert.equal(res.headers.get("oci-filters-applied"), null);
  });

  it("a deleted referrer disappears from the list", async () => {
    const extra = await pushArtifact(reg.url, repo, {
      artifactType: "application/vnd.example.tmp",
      subject: descriptor(OCI_MANIFEST, subject.bytes),
    });
    const listed = async () =>
      ((await (await req(`${reg.url}/v2/${repo}/referrers/${subject.digest}`)).json()) as { manifests: Array<{ digest: string }> }).manifests.map(
        (d) => d.digest,
      );
    assert.ok((await listed()).includes(extra.digest));
    assert.equal((await req(`${reg.url}/v2/${repo}/manifests/${extra.digest}`, { method: "DELETE" })).status, 202);
    assert.ok(!(await listed()).includes(extra.digest));
  });

  it("referrers are scoped to the repository", async () => {
    const other = uid("refs/");
    const res = await req(`${reg.url}/v2/${other}/referrers/${subject.digest}`);
    assert.equal(res.status, 200);
    assert.deepEqual(((await res.json()) as { manifests: unknown[] }).manifests, []);
  });

  it("an invalid digest answers 400", async () => {
    // "If the request is invalid, such as a <digest> with an invalid syntax, a 400 Bad Request MUST be returned."
    for (const bad of ["latest", "sha256:abc", "sha256:" + "Z".repeat(64)]) {
      await expectError(await req(`${reg.url}/v2/${repo}/referrers/${bad}`), 400, "DIGEST_INVALID");
    }
  });

  it("the subject's own GET still works and an artifact with an empty layer list is accepted", async () => {
    await pushBlob(reg.url, repo, EMPTY_JSON);
    const pushed = await pushArtifact(reg.url, repo, {
      artifactType: "application/vnd.example.nolayers",
      layers: [],
      config: descriptor(OCI_EMPTY, EMPTY_JSON),
      subject: descriptor(OCI_MANIFEST, subject.bytes),
    });
    assert.equal(pushed.res.headers.get("oci-subject"), subject.digest);
  });
});
