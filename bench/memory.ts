// Peak resident memory of a server and everything it forks (e.g. Ferry with
// --workers), sampled from /proc every 100 ms.
//
// Sampling can miss a spike shorter than the interval, so each tick also reads
// VmHWM (the kernel's own per-process high-water mark) and a peak is reported
// as max(sampled sum of VmRSS over the tree, largest single-process VmHWM).
// For a single-process server that is exact; for a tree it is a lower bound
// on the true simultaneous peak, never an over-estimate.
import fs from 'node:fs';

const KiB = 1024;

interface ProcMem {
  rss: number;
  hwm: number;
}

function readMem(pid: number): ProcMem | undefined {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined; // exited between listing and reading
  }
  const field = (name: string): number => {
    const m = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text);
    return m ? Number(m[1]) * KiB : 0;
  };
  return { rss: field('VmRSS'), hwm: field('VmHWM') };
}

/** The root pid plus all its descendants, from the ppid field of /proc/N/stat. */
export function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  let entries: string[];
  try {
    entries = fs.readdirSync('/proc');
  } catch {
    return [root];
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue;
    }
    // "pid (comm) state ppid ...": comm may contain spaces and parentheses.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ppid = Number(rest[1]);
    const list = children.get(ppid) ?? [];
    list.push(Number(entry));
    children.set(ppid, list);
  }
  const out: number[] = [];
  const queue = [root];
  while (queue.length > 0) {
    const pid = queue.shift() as number;
    out.push(pid);
    queue.push(...(children.get(pid) ?? []));
  }
  return out;
}

export interface MemoryWindow {
  /** Stops tracking and returns the peak in bytes seen since the window opened. */
  end(): number;
}

export class MemorySampler {
  private tree: number[];
  private timer: NodeJS.Timeout | undefined;
  private ticks = 0;
  private overallPeak = 0;
  private readonly windows = new Set<{ peak: number }>();

  constructor(private readonly root: number, private readonly intervalMs = 100) {
    this.tree = [root];
  }

  start(): void {
    this.sample();
    this.timer = setInterval(() => this.sample(), this.intervalMs);
    // Sampling must never keep the harness alive on its own.
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Peak over the whole run so far, in bytes. */
  peak(): number {
    this.sample();
    return this.overallPeak;
  }

  /**
   * Opens a measurement window. Resets the kernel high-water marks first
   * (writing 5 to clear_refs, allowed for our own children) so VmHWM reflects
   * only this window; if that is refused, the window relies on sampling.
   */
  window(): MemoryWindow {
    for (const pid of this.tree) {
      try {
        fs.writeFileSync(`/proc/${pid}/clear_refs`, '5');
      } catch {
        // Not permitted or gone: sampling alone still gives a usable figure.
      }
    }
    const w = { peak: 0 };
    this.windows.add(w);
    this.sample();
    return {
      end: () => {
        this.sample();
        this.windows.delete(w);
        return w.peak;
      },
    };
  }

  private sample(): void {
    // Re-listing /proc costs more than reading a status file; once a second is
    // enough to notice forked workers.
    if (this.ticks++ % 10 === 0) this.tree = processTree(this.root);
    let rssSum = 0;
    let hwmMax = 0;
    for (const pid of this.tree) {
      const mem = readMem(pid);
      if (!mem) continue;
      rssSum += mem.rss;
      hwmMax = Math.max(hwmMax, mem.hwm);
    }
    const value = Math.max(rssSum, hwmMax);
    this.overallPeak = Math.max(this.overallPeak, value);
    for (const w of this.windows) w.peak = Math.max(w.peak, value);
  }
}
