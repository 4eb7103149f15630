// CPU per 100 MiB of every process in an S3 push or pull (radosgw, ceph-osd, ferry serve, distribution,
// this client) and how many cores the machine was busy, modes alternated round by round
// (docs/storage.md, sixth round). CPU is utime+stime from /proc/PID/stat.
// Usage (repository root, after npm run build; an RGW from scripts/s3-service.sh, a `ferry serve` and a
// distribution on it, each with its own bucket):
//   RGW_DIR=/tmp/x-rgw S3_ENDPOINT=http://127.0.0.1:7480 S3_BUCKET=ferry FERRY_URL=http://127.0.0.1:5000 \
//   FERRY_PID=123 FERRY_PREFIX= DIST_URL=http://127.0.0.1:5001 DIST_PID=456 \
//   node bench/tools/s3-cpu.mjs <modes> <clients> <rounds>
// modes (comma list): pull-ferry (streamed through Ferry), pull-direct (a presigned GET straight from RGW, what
// distribution's 307 gives the client), push-ferry, push-dist (POST + PUT ?digest=, fresh 100 MiB blobs),
// push-raw (RGW's own multipart ingest with Ferry's S3 client: 16 MiB parts, 2 in flight, no receiving, no hashing)
import fs from 'node:fs';
import http from 'node:http';
import { RegistryHttp } from '../../dist/bench/http.js';
import { pushMonolithic } from '../../dist/bench/oci.js';
import { UniqueBlobFactory } from '../../dist/bench/content.js';
import { createS3Client } from '../../dist/src/storage/s3-client.js';
import { CreateMultipartUploadCommand, UploadPartCommand, CompleteMultipartUploadCommand, GetObjectCommand } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
const [modesArg, clientsArg, roundsArg] = process.argv.slice(2);
const modes = modesArg.split(','); const C = Number(clientsArg); const R = Number(roundsArg);
const MiB = 1 << 20, SIZE = 100 * MiB;
const rd = (f) => fs.readFileSync(f, 'utf8').trim();
const env = (name) => { const v = process.env[name]; if (v === undefined) throw new Error(`set ${name} (see the usage at the top)`); return v; };
const rgwDir = env('RGW_DIR');
const pids = { rgw: rd(`${rgwDir}/run/client.rgw.a.pid`), osd: rd(`${rgwDir}/run/osd.0.pid`), ferry: env('FERRY_PID'), dist: env('DIST_PID') };
const bucket = env('S3_BUCKET');
// Ferry's storage.s3.prefix, where its blobs are (pull-direct reads one there).
const configured = process.env.FERRY_PREFIX ?? '';
const prefix = configured === '' || configured.endsWith('/') ? configured : `${configured}/`;
const HZ = 100;
const cpu = (pid) => { const r = rd(`/proc/${pid}/stat`); const f = r.slice(r.lastIndexOf(')') + 2).split(' '); return (Number(f[11]) + Number(f[12])) / HZ; };
const machine = () => { const f = rd('/proc/stat').split('\n')[0].split(/\s+/).slice(1).map(Number); const idle = f[3] + f[4]; const tot = f.slice(0, 8).reduce((a, b) => a + b, 0); return { busy: (tot - idle) / HZ, tot: tot / HZ }; };
const self = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; };
const ferryUrl = env('FERRY_URL');
const ferry = new RegistryHttp(ferryUrl);
const dist = new RegistryHttp(env('DIST_URL'));
const s3 = createS3Client({ endpoint: env('S3_ENDPOINT'), region: 'us-east-1', bucket, accessKeyId: process.env.S3_ACCESS_KEY ?? 'ferrytestaccess', secretAccessKey: process.env.S3_SECRET_KEY ?? 'ferrytestsecret' });
const fac = new UniqueBlobFactory(SIZE);
let pullBlob;
if (modes.some((m) => m.startsWith('pull'))) { pullBlob = fac.next(); await pushMonolithic(ferry, 'b/pullcpu', pullBlob); }
const get = (url) => new Promise((resolve, reject) => {
  http.get(url, { agent: false }, (res) => { if (res.statusCode !== 200) reject(new Error(`${url} ${res.statusCode}`)); let n = 0; res.on('data', (c) => (n += c.length)); res.on('end', () => (n === SIZE ? resolve(n) : reject(new Error(`short ${n}`)))); res.on('error', reject); }).on('error', reject);
});
async function rawPush(blob) {
  const Key = `raw/${blob.digest}`;
  const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key }));
  const buf = Buffer.concat(blob.parts); const parts = []; const inflight = [];
  for (let off = 0, n = 1; off < SIZE; off += 16 * MiB, n++) {
    const body = buf.subarray(off, Math.min(SIZE, off + 16 * MiB)); const pn = n;
    const p = s3.send(new UploadPartCommand({ Bucket: bucket, Key, UploadId, PartNumber: pn, Body: body, ContentLength: body.length })).then((o) => (parts[pn - 1] = { PartNumber: pn, ETag: o.ETag }));
    inflight.push(p); if (inflight.length >= 2) await inflight.shift();
  }
  await Promise.all(inflight);
  await s3.send(new CompleteMultipartUploadCommand({ Bucket: bucket, Key, UploadId, MultipartUpload: { Parts: parts } }));
}
const out = {};
for (let r = 0; r < R; r++) for (const mode of modes) {
  const blobs = mode.startsWith('push') ? fac.many(C) : [];
  const direct = mode === 'pull-direct' ? await getSignedUrl(s3, new GetObjectCommand({ Bucket: bucket, Key: `${prefix}blobs/sha256/${pullBlob.digest.slice(7)}` }), { expiresIn: 900 }) : '';
  const b = { ...Object.fromEntries(Object.entries(pids).map(([k, p]) => [k, cpu(p)])), client: self(), m: machine(), t: performance.now() };
  await Promise.all(Array.from({ length: C }, async (_, i) => {
    if (mode === 'pull-ferry') await get(`${ferryUrl}/v2/b/pullcpu/blobs/${pullBlob.digest}`);
    else if (mode === 'pull-direct') await get(direct);
    else if (mode === 'push-ferry') await pushMonolithic(ferry, 'b/pushcpu', blobs[i]);
    else if (mode === 'push-dist') await pushMonolithic(dist, 'b/pushcpu', blobs[i]);
    else if (mode === 'push-raw') await rawPush(blobs[i]);
  }));
  const wall = (performance.now() - b.t) / 1000; const m = machine();
  const per = (x) => x / C; // per 100 MiB
  const row = { wall, mibps: (C * 100) / wall, rgw: per(cpu(pids.rgw) - b.rgw), osd: per(cpu(pids.osd) - b.osd), ferry: per(cpu(pids.ferry) - b.ferry), dist: per(cpu(pids.dist) - b.dist), client: per(self() - b.client), machineBusyCores: (m.busy - b.m.busy) / wall };
  row.involvedCores = ((row.rgw + row.osd + row.ferry + row.dist + row.client) * C) / wall;
  (out[mode] ??= []).push(row);
  console.log(mode.padEnd(12), `c${C}`, `${row.mibps.toFixed(0).padStart(4)} MiB/s wall ${wall.toFixed(2)}s  CPU-s/100MiB rgw ${row.rgw.toFixed(2)} osd ${row.osd.toFixed(2)} ferry ${row.ferry.toFixed(2)} dist ${row.dist.toFixed(2)} client ${row.client.toFixed(2)}  involved cores ${row.involvedCores.toFixed(2)} machine busy cores ${row.machineBusyCores.toFixed(2)}`);
}
const med = (a) => { const s = [...a].sort((x, y) => x - y); return s[Math.floor(s.length / 2)]; };
for (const [mode, rows] of Object.entries(out)) console.log('MEDIAN', mode.padEnd(12), `c${C}`, Object.keys(rows[0]).map((k) => `${k} ${med(rows.map((r) => r[k])).toFixed(2)}`).join('  '));
process.exit(0);
