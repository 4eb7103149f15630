/**
 * Docker Hub answers 401 (not 404) for a repository that does not exist,
 * even to a request carrying a valid anonymous token for exactly that
 * repository's scope. A mirror of it must tell its client the repository is
 * unknown (404 NAME_UNKNOWN), not that the upstream failed (502) — while a
 * 401 the mirror could not answer with such a token stays a failure.
 */
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";

const MANIFEST = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: `sha256:${"0".repeat(64)}`, size: 2 }, layers: [] }));

/** A loopback upstream with Docker Hub's token flow: anonymous tokens for any scope, 401 insufficient_scope for unknown repositories. */
class HubLikeUpstream {
  private server: Server | null = null;
  url = "";
  /** The token endpoint answers errors instead of tokens (the mirror then never holds a token for the scope). */
  tokensRefused = false;
  readonly repositories = new Set(["library/exists"]);

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      const url = new URL(req.url ?? "/", this.url);
      if (url.pathname === "/token") {
        if (this.tokensRefused) {
          res.writeHead(500).end("token service down");
          return;
        }
        res.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify({ token: `anon ${url.searchParams.get("scope") ?? ""}`.replace(/ /g, "_") }));
        return;
      }
      const match = /^\/v2\/(.+)\/(manifests|blobs|tags)\/.+$/.exec(url.pathname);
      const repository = match?.[1] ?? "";
      const scope = `repository:${repository}:pull`;
      const carried = req.headers.authorization === `Bearer anon_${scope}`;
      if (!match || !carried || !this.repositories.has(repository)) {
        const challenge = `Bearer realm="${this.url}/token",service="hub"${match ? `,scope="${scope}"` : ""}${carried ? ',error="insufficient_scope"' : ""}`;
        res.writeHead(401, { "Content-Type": "application/json", "WWW-Authenticate": challenge });
        res.end(JSON.stringify({ errors: [{ code: "UNAUTHORIZED", message: "authentication required", detail: [{ Type: "repository", Name: repository, Action: "pull" }] }] }));
        return;
      }
      if (match[2] === "manifests") {
        res.writeHead(200, { "Content-Type": "application/vnd.oci.image.manifest.v1+json", "Content-Length": MANIFEST.length }).end(req.method === "HEAD" ? undefined : MANIFEST);
        return;
      }
      res.writeHead(404, { "Content-Type": "application/json" }).end(JSON.stringify({ errors: [{ code: "BLOB_UNKNOWN", message: "blob unknown" }] }));
    });
    await new Promise<void>((resolve) => this.server!.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async close(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

interface ErrorBody {
  errors: Array<{ code: string; message: string; detail?: { upstream?: string; answer?: string } }>;
}

describe("mirror of an upstream that answers 401 for unknown repositories (Docker Hub)", () => {
  let upstream: HubLikeUpstream;
  let mirror: TestRegistry;

  before(async () => {
    upstream = await new HubLikeUpstream().start();
    mirror = await startTestRegistry({ mirrors: [{ prefix: "hub/", upstream: upstream.url, tagTtl: "1s", onUpstreamDown: "fail" }] });
  });
  after(async () => {
    await mirror?.close();
    await upstream?.close();
  });

  test("a repository that exists upstream is pulled through the token flow", async () => {
    const response = await fetch(`${mirror.url}/v2/hub/library/exists/manifests/latest`, { headers: { Accept: "application/vnd.oci.image.manifest.v1+json" } });
    assert.equal(response.status, 200, await response.clone().text());
    assert.deepEqual(Buffer.from(await response.arrayBuffer()), MANIFEST);
  });

  for (const [what, path] of [
    ["a manifest by tag", "manifests/latest"],
    ["a blob", `blobs/sha256:${"1".repeat(64)}`],
    ["the tag list", "tags/list"],
  ] as const) {
    test(`${what} of a repository the upstream refuses even with a token for its scope: 404 NAME_UNKNOWN naming the upstream's answer`, async () => {
      const response = await fetch(`${mirror.url}/v2/hub/library/nope-${path.split("/")[0]}/${path}`);
      const body = (await response.json()) as ErrorBody;
      assert.equal(response.status, 404, JSON.stringify(body));
      assert.equal(body.errors[0]!.code, "NAME_UNKNOWN");
      // The upstream's answer (a HEAD's has no body to quote, so the status is what is named).
      assert.match(body.errors[0]!.message, /HTTP 401/);
      assert.match(body.errors[0]!.detail?.answer ?? "", /HTTP 401/);
      assert.equal(body.errors[0]!.detail?.upstream, upstream.url);
      assert.doesNotMatch(JSON.stringify(body), /anon_/, "the upstream token never reaches the client");
    });
  }

  test("a 401 without a token for the scope (the token service is down) is still the upstream failing, not an unknown name", async () => {
    const other = await startTestRegistry({ mirrors: [{ prefix: "hub/", upstream: upstream.url, onUpstreamDown: "fail" }] });
    upstream.tokensRefused = true;
    try {
      const response = await fetch(`${other.url}/v2/hub/library/exists/manifests/latest`);
      const body = (await response.json()) as ErrorBody;
      assert.equal(response.status, 502, JSON.stringify(body));
      assert.equal(body.errors[0]!.code, "UNAVAILABLE");
    } finally {
      upstream.tokensRefused = false;
      await other.close();
    }
  });
});
