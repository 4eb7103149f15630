#!/usr/bin/env node
// 10,000-tag list and 10,000-repository catalog on S3, Ferry against distribution 2.8 on the
// same RGW. Loading distribution through its API takes tens of minutes on S3, so its bucket is
// seeded with its own storage layout (docker/registry/v2/...: blob data, layer, revision and
// tag links) and the seed is checked through its API before anything is timed. Ferry is loaded
// through its API (manifest PUTs, blob mounts).
//
// Usage (after `npx tsc -p tsconfig.json`; an RGW from scripts/s3-service.sh):
//   S3_ENDPOINT=http://127.0.0.1:27480 node scripts/bench-s3-lists.mjs [tags] [repositories]
// Environment: S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY, REFERENCE_BIN (/usr/bin/docker-registry).
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CreateBucketCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const endpoint = process.env.S3_ENDPOINT ?? 'http://127.0.0.1:7480';
const accessKeyId = process.env.S3_ACCESS_KEY ?? 'ferrytestaccess';
const secretAccessKey = process.env.S3_SECRET_KEY ?? 'ferrytestsecret';
const count = Number(process.argv[2] ?? 10_000);
// distribution walks S3 for its catalog (~3 s for 50 repositories on a loaded box), so its size is separate.
const repoCount = Number(process.argv[3] ?? count);
const s3 = new S3Client({ region: 'us-east-1', endpoint, forcePathStyle: true, credentials: { accessKeyId, secretAccessKey }, requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' });
const children = [];
process.on('exit', () => children.forEach((c) => c.kill()));
const log = (...a) => console.error(`[${new Date().toISOString().slice(11, 19)}]`, ...a);
const sha = (b) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function pool(n, limit, fn) {
  let next = 0;
  await Promise.all(Array.from({ length: limit }, async () => { while (next < n) await fn(next++); }));
}
async function freePort() {
  return new Promise((resolve) => { const s = net.createServer().listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); }); });
}
async function waitFor(url) {
  for (let i = 0; i < 200; i++) { try { await fetch(url); return; } catch { await new Promise((r) => setTimeout(r, 100)); } }
  throw new Error(`${url} never answered`);
}

// ---- content: one config, one layer, `count` distinct manifests (annotation differs) ----
const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
const layer = randomBytes(1024);
const desc = (mediaType, b) => ({ mediaType, digest: sha(b), size: b.length });
const manifestFor = (annotations) => Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: desc('application/vnd.oci.image.config.v1+json', config), layers: [desc('application/vnd.oci.image.layer.v1.tar', layer)], ...(annotations ? { annotations } : {}) }));
const tags = Array.from({ length: count }, (_, i) => `v${String(i).padStart(5, '0')}`);
const manifests = tags.map((t) => manifestFor({ 'org.opencontainers.image.version': t }));
const repos = Array.from({ length: repoCount }, (_, i) => `bench/catalog/r${String(i).padStart(5, '0')}`);
const catalogManifest = manifestFor(null);

// ---- distribution's layout, written straight into its bucket ----
async function seedReference(bucket) {
  const root = 'docker/registry/v2';
  const put = (key, body) => s3.send(new PutObjectCommand({ Bucket: bucket, Key: `${root}/${key}`, Body: body }));
  const blobKey = (d) => `blobs/sha256/${d.slice(7, 9)}/${d.slice(7)}/data`;
  const link = (d) => Buffer.from(d);
  const layerLinks = (repo) => [config, layer].map((b) => [`repositories/${repo}/_layers/sha256/${sha(b).slice(7)}/link`, link(sha(b))]);
  const manifestLinks = (repo, tag, d) => [
    [`repositories/${repo}/_manifests/revisions/sha256/${d.slice(7)}/link`, link(d)],
    [`repositories/${repo}/_manifests/tags/${tag}/index/sha256/${d.slice(7)}/link`, link(d)],
    [`repositories/${repo}/_manifests/tags/${tag}/current/link`, link(d)],
  ];
  const objects = [[blobKey(sha(config)), config], [blobKey(sha(layer)), layer], [blobKey(sha(catalogManifest)), catalogManifest], ...layerLinks('bench/tags')];
  tags.forEach((t, i) => { const d = sha(manifests[i]); objects.push([blobKey(d), manifests[i]], ...manifestLinks('bench/tags', t, d)); });
  for (const r of repos) objects.push(...layerLinks(r), ...manifestLinks(r, 'latest', sha(catalogManifest)));
  const t0 = Date.now();
  await pool(objects.length, 64, async (i) => put(objects[i][0], objects[i][1]));
  log(`reference: seeded ${objects.length} objects in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}

async function startReference(bucket) {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lists-ref-'));
  fs.writeFileSync(`${dir}/config.yml`, ['version: 0.1', 'log:', '  level: error', '  accesslog:', '    disabled: true', 'storage:', '  cache:', '    blobdescriptor: inmemory', '  s3:', `    accesskey: ${accessKeyId}`, `    secretkey: ${secretAccessKey}`, '    region: us-east-1', `    regionendpoint: ${endpoint}`, `    bucket: ${bucket}`, '    secure: false', '    v4auth: true', '    rootdirectory: /', '  delete:', '    enabled: true', 'http:', `  addr: 127.0.0.1:${port}`, ''].join('\n'));
  children.push(spawn('/usr/bin/env', ['-u', 'AWS_CA_BUNDLE', process.env.REFERENCE_BIN ?? '/usr/bin/docker-registry', 'serve', `${dir}/config.yml`], { stdio: 'ignore' }));
  const url = `http://127.0.0.1:${port}`;
  await waitFor(`${url}/v2/`);
  return url;
}

async function startFerry(bucket) {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lists-ferry-'));
  fs.writeFileSync(`${dir}/ferry.yml`, `log:\n  level: error\n  accessLog: false\nstorage:\n  driver: s3\n  s3:\n    endpoint: ${endpoint}\n    bucket: ${bucket}\n    accessKeyId: ${accessKeyId}\n    secretAccessKey: ${secretAccessKey}\n`);
  children.push(spawn(process.execPath, [path.join(repoRoot, 'dist/src/cli/main.js'), 'serve', '--config', `${dir}/ferry.yml`, '--listen', `127.0.0.1:${port}`, '--data', `${dir}/data`], { stdio: 'ignore', cwd: dir }));
  const url = `http://127.0.0.1:${port}`;
  await waitFor(`${url}/v2/`);
  return url;
}

async function loadFerry(url) {
  const t0 = Date.now();
  for (const b of [config, layer]) {
    const r = await fetch(`${url}/v2/bench/tags/blobs/uploads/?digest=${sha(b)}`, { method: 'POST', body: b });
    if (r.status !== 201) throw new Error(`ferry blob push ${r.status}`);
  }
  const putManifest = async (repo, tag, body) => {
    const r = await fetch(`${url}/v2/${repo}/manifests/${tag}`, { method: 'PUT', body, headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' } });
    if (r.status !== 201) throw new Error(`ferry manifest PUT ${r.status} ${await r.text()}`);
  };
  await pool(count, 16, (i) => putManifest('bench/tags', tags[i], manifests[i]));
  await pool(repoCount, 16, async (i) => {
    for (const b of [config, layer]) {
      const r = await fetch(`${url}/v2/${repos[i]}/blobs/uploads/?mount=${sha(b)}&from=bench/tags`, { method: 'POST' });
      if (r.status !== 201) throw new Error(`ferry mount ${r.status}`);
    }
    await putManifest(repos[i], 'latest', catalogManifest);
  });
  log(`ferry: loaded through its API in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}

/** Follows Link headers (up to `pages` requests); returns [seconds, entries]. */
async function walk(url, first, key, pages = Infinity) {
  const t0 = performance.now();
  let next = first;
  let n = 0;
  for (let page = 0; next && page < pages; page++) {
    const r = await fetch(`${url}${next}`);
    if (r.status !== 200) throw new Error(`${next}: ${r.status}`);
    n += (await r.json())[key].length;
    next = /<([^>]+)>;\s*rel="next"/.exec(r.headers.get('link') ?? '')?.[1] ?? null;
  }
  return [(performance.now() - t0) / 1000, n];
}

async function verifyReference(url) {
  const r = await fetch(`${url}/v2/bench/tags/manifests/${tags[count - 1]}`, { headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } });
  const digest = r.headers.get('docker-content-digest');
  if (r.status !== 200 || digest !== sha(manifests[count - 1])) throw new Error(`reference does not read the seed back: ${r.status} ${digest}`);
  const c = await fetch(`${url}/v2/${repos[repoCount - 1]}/manifests/latest`, { headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } });
  if (c.status !== 200) throw new Error(`reference does not read the seeded repository back: ${c.status}`);
  const [, n] = await walk(url, '/v2/bench/tags/tags/list?n=1000', 'tags');
  if (n !== count) throw new Error(`reference lists ${n} tags, ${count} seeded`);
  log('reference: seed reads back through its API (manifest by tag, digest, full tag list)');
}

const stamp = Date.now();
const buckets = { reference: `lists-ref-${stamp}`, ferry: `lists-ferry-${stamp}` };
for (const b of Object.values(buckets)) await s3.send(new CreateBucketCommand({ Bucket: b }));
await seedReference(buckets.reference);
const urls = { reference: await startReference(buckets.reference), ferry: await startFerry(buckets.ferry) };
await verifyReference(urls.reference);
await loadFerry(urls.ferry);
const rows = [
  [`tag list ${count} tags, first page (n=100)`, '/v2/bench/tags/tags/list?n=100', 'tags', 1],
  [`tag list ${count} tags, full walk (n=100)`, '/v2/bench/tags/tags/list?n=100', 'tags'],
  [`tag list ${count} tags, full walk (n=1000)`, '/v2/bench/tags/tags/list?n=1000', 'tags'],
  [`catalog ${repoCount} repos, first page (n=100)`, '/v2/_catalog?n=100', 'repositories', 1],
  [`catalog ${repoCount} repos, full walk (n=1000)`, '/v2/_catalog?n=1000', 'repositories'],
];
const repeats = Number(process.env.REPEATS ?? 5);
console.log(`load average ${os.loadavg()[0].toFixed(1)}; median of ${repeats}, alternating; ratio > 1: Ferry faster`);
console.log('workload                                   ferry (ms)  reference (ms)   ratio');
for (const [label, first, key, pages] of rows) {
  const times = { ferry: [], reference: [] };
  // One untimed walk each first: the first requests after loading pay for caches and a busy server.
  for (const name of ['ferry', 'reference']) await walk(urls[name], first, key, pages);
  for (let i = 0; i < repeats; i++) {
    for (const name of i % 2 ? ['reference', 'ferry'] : ['ferry', 'reference']) {
      const [s, n] = await walk(urls[name], first, key, pages);
      if (pages === undefined && n < (key === 'tags' ? count : repoCount)) throw new Error(`${name} walked ${n} of ${count}`);
      times[name].push(s * 1000);
    }
  }
  const med = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const f = med(times.ferry), r = med(times.reference);
  console.log(`${label.padEnd(42)} ${f.toFixed(2).padStart(10)} ${r.toFixed(1).padStart(15)} ${(r / f).toFixed(0).padStart(6)}x`);
}
process.exit(0);
