// The Node flags Ferry's `ferry` launcher passes (its shebang line), so the
// harness starts `ferry serve` as the installed bin runs it, while still using
// the harness's own Node (process.execPath) rather than whatever is on PATH.
import fs from 'node:fs';

/** Flags from a `#!/usr/bin/env -S node <flags>` first line; none for a plain `#!/usr/bin/env node`. */
export function launcherNodeFlags(cli: string): string[] {
  const first = fs.readFileSync(cli, 'utf8').split('\n', 1)[0] ?? '';
  const match = /^#!\S*env\s+(?:-S\s+)?node((?:\s+--?[\w-]+(?:=\S+)?)*)\s*$/.exec(first);
  return match ? match[1].trim().split(/\s+/).filter(Boolean) : [];
}
