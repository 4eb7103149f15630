// Spawning and stopping one registry server process, with its output sent to
// a log file (not through a pipe: draining a chatty server's pipe would cost
// the load generator CPU on a machine that has none to spare).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';

export interface ServerProcess {
  readonly pid: number;
  readonly logPath: string;
  /** Exit code or signal name once the process has exited, undefined while alive. */
  exitStatus(): string | undefined;
  /** Resolves when the process exits. */
  readonly exited: Promise<void>;
  /** SIGTERM to the process group, SIGKILL after a grace period. */
  stop(): Promise<void>;
  /** Last lines of the server log, for error messages. */
  logTail(lines?: number): string;
}

/** Asks the kernel for a free loopback port. Racy in theory, fine in practice. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

export function spawnServer(command: string, args: string[], logPath: string, cwd: string): ServerProcess {
  const logFd = fs.openSync(logPath, 'a');
  const child = spawn(command, args, {
    cwd,
    stdio: ['ignore', logFd, logFd],
    // Own process group: lets stop() reach worker processes a server may fork,
    // and keeps a terminal Ctrl-C from killing servers before we print results.
    detached: true,
  });
  fs.closeSync(logFd);

  let status: string | undefined;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      status = signal ?? String(code);
      resolve();
    });
    child.once('error', (err) => {
      status = `spawn error: ${err.message}`;
      resolve();
    });
  });

  if (child.pid === undefined) {
    // spawn() failed synchronously-ish (ENOENT is reported through 'error').
    return {
      pid: -1,
      logPath,
      exitStatus: () => status ?? 'not started',
      exited,
      stop: async () => {},
      logTail: () => '',
    };
  }
  const pid = child.pid;

  const signalGroup = (sig: NodeJS.Signals): void => {
    try {
      process.kill(-pid, sig);
    } catch {
      // Group already gone.
    }
  };

  return {
    pid,
    logPath,
    exitStatus: () => status,
    exited,
    async stop() {
      if (status !== undefined) {
        signalGroup('SIGKILL'); // stray children of an exited leader
        return;
      }
      signalGroup('SIGTERM');
      const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 5000).unref());
      if ((await Promise.race([exited.then(() => 'exited' as const), timer])) === 'timeout') {
        signalGroup('SIGKILL');
        await exited;
      }
      signalGroup('SIGKILL');
    },
    logTail(lines = 20) {
      try {
        const text = fs.readFileSync(logPath, 'utf8');
        return text.trimEnd().split('\n').slice(-lines).join('\n');
      } catch {
        return '';
      }
    },
  };
}
