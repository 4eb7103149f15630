// Node's floor for what a mirror's cold pull must do (docs/mirrors.md "The
// cold pull's CPU budget"): a minimal relay with no checks, no streams and no
// store bookkeeping. Each GET to it fetches UPSTREAM_URL and, per chunk,
// does what MODE names: `hash` (SHA-256), `send` (to the client), `write`
// (batched writev to a scratch file); `discard` only receives. It prints its
// CPU (utime+stime, all threads) per request to stderr.
//   node dist/bench/mirror-floor.js http://127.0.0.1:PORT/v2/REPO/blobs/DIGEST hash-send-write
//   curl -o /dev/null http://127.0.0.1:<printed port>/   (a few times)
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';

const [upstream, mode = 'hash-send-write'] = process.argv.slice(2);
if (!upstream) {
  console.error('usage: node dist/bench/mirror-floor.js UPSTREAM_BLOB_URL [discard|hash|send|hash-send|hash-send-write]');
  process.exit(2);
}
const scratch = path.join(os.tmpdir(), `mirror-floor-${process.pid}.bin`);
const agent = new http.Agent({ keepAlive: true });

const server = http.createServer((_req, res) => {
  const before = process.cpuUsage();
  http.get(upstream, { agent }, (body) => {
    const hash = mode.includes('hash') ? crypto.createHash('sha256') : null;
    const fd = mode.includes('write') ? fs.openSync(scratch, 'w') : null;
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    let position = 0;
    let writing = false;
    const flush = () => {
      if (fd === null || writing || pending.length === 0) return;
      writing = true;
      const buffers = pending;
      const n = pendingBytes;
      pending = [];
      pendingBytes = 0;
      fs.writev(fd, buffers, position, () => {
        position += n;
        writing = false;
        flush();
      });
    };
    res.writeHead(200, { 'content-length': body.headers['content-length'] ?? '0' });
    body.on('data', (chunk: Buffer) => {
      hash?.update(chunk);
      if (fd !== null) {
        pending.push(chunk);
        pendingBytes += chunk.length;
        if (pendingBytes >= 1 << 20) flush();
      }
      if (mode.includes('send') && !res.write(chunk)) {
        body.pause();
        res.once('drain', () => body.resume());
      }
    });
    body.on('end', () => {
      hash?.digest('hex');
      flush();
      res.end();
      setTimeout(() => {
        const used = process.cpuUsage(before);
        if (fd !== null) fs.closeSync(fd);
        console.error(`${mode}: ${((used.user + used.system) / 1000).toFixed(0)} ms CPU (user ${(used.user / 1000).toFixed(0)}, system ${(used.system / 1000).toFixed(0)})`);
      }, 500);
    });
  });
});
server.listen(0, '127.0.0.1', () => console.log((server.address() as { port: number }).port));
process.on('SIGINT', () => {
  fs.rmSync(scratch, { force: true });
  process.exit(0);
});
process.on('SIGTERM', () => {
  fs.rmSync(scratch, { force: true });
  process.exit(0);
});
