// Per-operation cost of the SQLite metadata store, in process (no HTTP): CPU
// microseconds per manifest PUT (3 blobs, 1 tag), tag list (100 of 200 tags)
// and manifest by tag. Compares two builds side by side, alternating rounds:
//   node dist/bench/tools/metadata-micro.js <distA> <distB>
// where each dist is a compiled tree holding src/metadata/sqlite.js.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { createHash } from 'node:crypto';

interface Store {
  linkBlob(r: string, d: string, s: number): Promise<void>;
  putManifest(r: string, m: unknown, t?: string): Promise<void>;
  listTags(r: string, p: { limit: number; after?: string }): Promise<string[]>;
  getTaggedManifest(r: string, t: string): Promise<unknown>;
  close(): Promise<void>;
}

const sha = (s: string) => `sha256:${createHash('sha256').update(s).digest('hex')}`;

async function open(dist: string, file: string): Promise<Store> {
  const mod = (await import(pathToFileURL(path.join(dist, 'src/metadata/sqlite.js')).href)) as { SqliteMetaStore: new (p: string) => Store & { ready?: Promise<void> } };
  const store = new mod.SqliteMetaStore(file);
  await store.ready;
  return store;
}

async function cpu(n: number, fn: (i: number) => Promise<unknown>): Promise<number> {
  const start = process.cpuUsage();
  for (let i = 0; i < n; i++) await fn(i);
  const used = process.cpuUsage(start);
  return (used.user + used.system) / n;
}

async function round(dist: string, label: string, seed: number): Promise<Record<string, number>> {
  const dir = mkdtempSync(path.join(tmpdir(), 'meta-micro-'));
  const store = await open(dist, path.join(dir, 'metadata.db'));
  const blobs = [sha(`a${seed}`), sha(`b${seed}`), sha(`c${seed}`)];
  for (const b of blobs) await store.linkBlob('bench/repo', b, 1000);
  const put = await cpu(1000, (i) => {
    const content = Buffer.from(`{"schemaVersion":2,"n":${i},"s":${seed}}`);
    return store.putManifest('bench/repo', { digest: sha(content.toString()), mediaType: 'application/vnd.oci.image.manifest.v1+json', content, subjectDigest: null, artifactType: null, annotations: null, blobs, manifests: [], foreignLayers: [] }, `t${i % 200}`);
  });
  const list = await cpu(3000, () => store.listTags('bench/repo', { limit: 100 }));
  const get = await cpu(5000, (i) => store.getTaggedManifest('bench/repo', `t${i % 200}`));
  await store.close();
  rmSync(dir, { recursive: true, force: true });
  return { [`${label} put`]: put, [`${label} list`]: list, [`${label} get`]: get };
}

const [a, b] = process.argv.slice(2);
if (!a || !b) throw new Error('usage: metadata-micro.js <distA> <distB>');
const totals: Record<string, number[]> = {};
for (let r = 0; r < 3; r++) {
  for (const [dist, label] of [[a, 'A'], [b, 'B']] as const) {
    for (const [k, v] of Object.entries(await round(path.resolve(dist), label, r))) (totals[k] ??= []).push(v);
  }
}
for (const [k, v] of Object.entries(totals)) {
  const sorted = [...v].sort((x, y) => x - y);
  process.stdout.write(`${k.padEnd(8)} median ${sorted[1]!.toFixed(1)} µs CPU/op (runs: ${v.map((x) => x.toFixed(1)).join(', ')})\n`);
}
