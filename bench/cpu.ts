// CPU time a server spent, from /proc: utime + stime of the server and every
// process it forked (--workers), all threads included. Unlike a request rate
// it does not depend on how much of the machine the neighbours leave free,
// so CPU per request compares two servers measured minutes apart.
import fs from 'node:fs';
import { processTree } from './memory.js';

/** Clock ticks per second of /proc/PID/stat (USER_HZ; 100 on Linux everywhere). */
const USER_HZ = 100;

function cpuSeconds(pid: number): number {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return 0; // exited
  }
  // Fields after "pid (comm) ": state is [0], utime [11], stime [12].
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(rest[11]) + Number(rest[12])) / USER_HZ;
}

/** Seconds of CPU the process tree under `root` has used so far. */
export function treeCpuSeconds(root: number): number {
  return processTree(root).reduce((sum, pid) => sum + cpuSeconds(pid), 0);
}
