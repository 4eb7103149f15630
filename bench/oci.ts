// The distribution-spec operations the workloads use, each checking the
// response as strictly as a real client would (status, digest, byte count).
import type { BodyParts, RegistryHttp } from './http.js';
import { HttpError } from './http.js';
import { OCI_MANIFEST, type BlobData } from './content.js';

function withQuery(location: string, key: string, value: string): string {
  return `${location}${location.includes('?') ? '&' : '?'}${key}=${encodeURIComponent(value)}`;
}

function requireLocation(headers: Record<string, string | undefined>, what: string): string {
  const loc = headers['location'];
  if (!loc) throw new Error(`${what}: response has no Location header`);
  return loc;
}

function checkDigest(headers: Record<string, string | undefined>, expected: string, what: string): void {
  const got = headers['docker-content-digest'];
  // The header is optional on some responses; when present it must be right.
  if (got !== undefined && got !== expected) throw new Error(`${what}: Docker-Content-Digest ${got}, expected ${expected}`);
}

export async function startUpload(http: RegistryHttp, repo: string): Promise<string> {
  const headers = await http.expectDrained('POST', `/v2/${repo}/blobs/uploads/`, [202]);
  return requireLocation(headers, `POST /v2/${repo}/blobs/uploads/`);
}

/** Monolithic push as two requests: POST to open the session, one PUT ?digest= with the whole body. */
export async function pushMonolithic(http: RegistryHttp, repo: string, blob: BlobData): Promise<void> {
  const location = await startUpload(http, repo);
  const headers = await http.expectDrained(
    'PUT',
    withQuery(location, 'digest', blob.digest),
    [201],
    { 'content-type': 'application/octet-stream', 'content-length': String(blob.size) },
    blob.parts,
  );
  checkDigest(headers, blob.digest, `PUT blob to ${repo}`);
}

/** Views of bytes [start, end) of the concatenation of parts, without copying. */
function sliceParts(parts: BodyParts, start: number, end: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let offset = 0;
  for (const p of parts) {
    const pStart = offset;
    const pEnd = offset + p.length;
    offset = pEnd;
    if (pEnd <= start || pStart >= end) continue;
    out.push(p.subarray(Math.max(start, pStart) - pStart, Math.min(end, pEnd) - pStart));
  }
  return out;
}

/** Chunked push: POST, PATCH chunks with Content-Range, then an empty PUT ?digest=. */
export async function pushChunked(http: RegistryHttp, repo: string, blob: BlobData, chunkSize: number): Promise<void> {
  let location = await startUpload(http, repo);
  for (let start = 0; start < blob.size; start += chunkSize) {
    const end = Math.min(start + chunkSize, blob.size);
    const headers = await http.expectDrained(
      'PATCH',
      location,
      [202],
      {
        'content-type': 'application/octet-stream',
        'content-length': String(end - start),
        // distribution-spec: inclusive byte range, no "bytes " unit.
        'content-range': `${start}-${end - 1}`,
      },
      sliceParts(blob.parts, start, end),
    );
    // Each response may move the session (distribution encodes state in the URL).
    location = requireLocation(headers, `PATCH ${repo} upload`);
  }
  const headers = await http.expectDrained('PUT', withQuery(location, 'digest', blob.digest), [201], {
    'content-length': '0',
  });
  checkDigest(headers, blob.digest, `PUT (close) chunked upload to ${repo}`);
}

/** Cross-repository mount; falls back to a monolithic upload if the registry declines (202). */
export async function mountOrPush(http: RegistryHttp, repo: string, from: string, blob: BlobData): Promise<void> {
  const path = `/v2/${repo}/blobs/uploads/?mount=${encodeURIComponent(blob.digest)}&from=${encodeURIComponent(from)}`;
  const res = await http.expect('POST', path, [201, 202]);
  await res.body.dump();
  if (res.status === 201) return;
  const location = requireLocation(res.headers, `POST ${path}`);
  await http.expectDrained(
    'PUT',
    withQuery(location, 'digest', blob.digest),
    [201],
    { 'content-type': 'application/octet-stream', 'content-length': String(blob.size) },
    blob.parts,
  );
}

export async function putManifest(http: RegistryHttp, repo: string, reference: string, manifest: Buffer): Promise<string> {
  const headers = await http.expectDrained(
    'PUT',
    `/v2/${repo}/manifests/${reference}`,
    [201],
    { 'content-type': OCI_MANIFEST, 'content-length': String(manifest.length) },
    [manifest],
  );
  const digest = headers['docker-content-digest'];
  if (!digest) throw new Error(`PUT manifest ${repo}:${reference}: no Docker-Content-Digest header`);
  return digest;
}

/**
 * Streams a blob and discards it, counting bytes. Follows one redirect, as a
 * registry may serve blobs from elsewhere. Returns the byte count.
 */
export async function pullBlob(http: RegistryHttp, repo: string, digest: string, expectedSize: number): Promise<number> {
  let url = `/v2/${repo}/blobs/${digest}`;
  for (let hop = 0; hop < 2; hop++) {
    const res = await http.send('GET', url);
    if (res.status >= 300 && res.status < 400 && res.headers['location']) {
      await res.body.dump();
      url = http.resolve(res.headers['location']).toString();
      continue;
    }
    if (res.status !== 200) {
      throw new HttpError('GET', url, res.status, (await res.body.text().catch(() => '')).slice(0, 300));
    }
    let n = 0;
    for await (const chunk of res.body) n += (chunk as Buffer).length;
    if (n !== expectedSize) throw new Error(`GET ${url}: got ${n} bytes, expected ${expectedSize}`);
    return n;
  }
  throw new Error(`GET ${url}: too many redirects`);
}

export async function getManifest(http: RegistryHttp, repo: string, reference: string): Promise<number> {
  const res = await http.expect('GET', `/v2/${repo}/manifests/${reference}`, [200], { accept: OCI_MANIFEST });
  const body = Buffer.from(await res.body.arrayBuffer());
  return body.length;
}

export interface ListPage {
  items: number;
  next?: string;
}

/** One page of /tags/list or /_catalog as received: the body bytes and the Link target. */
export interface RawListPage {
  url: string;
  body: Buffer;
  next?: string;
}

/** Extracts the rel="next" target of a Link header (RFC 8288 subset used by registries). */
export function nextLink(link: string | undefined): string | undefined {
  if (!link) return undefined;
  for (const part of link.split(',')) {
    const m = /<([^>]*)>\s*;\s*rel="?next"?/i.exec(part);
    if (m) return m[1];
  }
  return undefined;
}

/** GETs one listing page and reads its body to the last byte (without parsing it). */
export async function fetchListPage(http: RegistryHttp, url: string): Promise<RawListPage> {
  const res = await http.expect('GET', url, [200]);
  const body = Buffer.from(await res.body.arrayBuffer());
  return { url, body, next: nextLink(res.headers['link']) };
}

/** Parses a page as a client would and returns the entries of `field` (throws if the body is not a listing). */
export function listEntries(page: RawListPage, field: 'tags' | 'repositories'): string[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(page.body.toString('utf8'));
  } catch (error) {
    throw new Error(`GET ${page.url}: body is not JSON (${(error as Error).message})`);
  }
  const list = typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>)[field] : undefined;
  if (!Array.isArray(list)) throw new Error(`GET ${page.url}: response has no "${field}" array`);
  if (!list.every((entry): entry is string => typeof entry === 'string')) {
    throw new Error(`GET ${page.url}: "${field}" holds a non-string`);
  }
  return list;
}

/** One page of /tags/list or /_catalog: counts entries of `field`, returns the next link. */
export async function listPage(http: RegistryHttp, url: string, field: 'tags' | 'repositories'): Promise<ListPage> {
  const page = await fetchListPage(http, url);
  return { items: listEntries(page, field).length, next: page.next };
}

/**
 * Follows Link headers from the first URL until a page has none, as skopeo,
 * crane and podman do; returns every page as received.
 */
export async function fetchAllListPages(http: RegistryHttp, firstUrl: string, maxPages: number): Promise<RawListPage[]> {
  const pages: RawListPage[] = [];
  let url: string | undefined = firstUrl;
  while (url) {
    if (pages.length >= maxPages) throw new Error(`${firstUrl}: more than ${maxPages} pages (Link loop?)`);
    const page: RawListPage = await fetchListPage(http, url);
    pages.push(page);
    url = page.next;
  }
  return pages;
}

/** Follows Link headers from the first URL to the end; returns total entries and page count. */
export async function listAll(
  http: RegistryHttp,
  firstUrl: string,
  field: 'tags' | 'repositories',
  maxPages: number,
): Promise<{ items: number; pages: number }> {
  const pages = await fetchAllListPages(http, firstUrl, maxPages);
  return { items: pages.reduce((sum, page) => sum + listEntries(page, field).length, 0), pages: pages.length };
}
