/**
 * "Did you mean" for configuration keys: walks the schema to find the keys
 * that exist where an unknown one was written, and picks the closest.
 * Kept apart from load.ts because it reads zod's internal definition shape,
 * which is the one place that has to change if zod changes it.
 */
import type { z } from "zod";

interface Def {
  type: string;
  shape?: Record<string, z.ZodType>;
  innerType?: z.ZodType;
  in?: z.ZodType;
  element?: z.ZodType;
  options?: z.ZodType[];
}

function defOf(schema: z.ZodType): Def {
  return (schema as unknown as { _zod: { def: Def } })._zod.def;
}

/** The schema with defaults, optionals, pipes and the like taken off. */
function unwrap(schema: z.ZodType): z.ZodType {
  let current = schema;
  for (let depth = 0; depth < 20; depth++) {
    const def = defOf(current);
    const inner = def.innerType ?? (def.type === "pipe" ? def.in : undefined);
    if (!inner) return current;
    current = inner;
  }
  return current;
}

/** The keys a mapping at `path` may have (list indexes are numeric segments); empty when it is no mapping. */
export function keysAt(root: z.ZodType, path: readonly string[]): string[] {
  let schema = unwrap(root);
  for (const segment of path) {
    const def = defOf(schema);
    if (def.type === "object" && def.shape && segment in def.shape) schema = unwrap(def.shape[segment]!);
    else if (def.type === "array" && def.element && /^\d+$/.test(segment)) schema = unwrap(def.element);
    else return [];
  }
  const def = defOf(schema);
  if (def.type === "object" && def.shape) return Object.keys(def.shape);
  // A union of mappings (e.g. one of several rule shapes): any of their keys.
  if (def.type === "union" && def.options) return [...new Set(def.options.flatMap((option) => keysAt(option, [])))];
  return [];
}

/** Whether the value at `path` is (inside) a list item: environment variables can only set whole lists. */
export function listPrefix(root: z.ZodType, path: readonly string[]): string[] | undefined {
  let schema = unwrap(root);
  for (let i = 0; i < path.length; i++) {
    const def = defOf(schema);
    if (def.type === "array") return path.slice(0, i);
    if (def.type === "object" && def.shape && path[i]! in def.shape) schema = unwrap(def.shape[path[i]!]!);
    else return undefined;
  }
  return undefined;
}

/** Edit distance where swapping two neighbouring letters is one edit (levle -> level), as typos go. */
function distance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) best = Math.min(best, d[i - 2]![j - 2]! + 1);
      d[i]![j] = best;
    }
  }
  return d[a.length]![b.length]!;
}

/** The known key closest to `key`, if one is close enough to be a typo of it. */
export function closestKey(key: string, known: readonly string[]): string | undefined {
  const folded = (s: string) => s.toLowerCase().replace(/[_-]/g, "");
  let best: { key: string; score: number } | undefined;
  for (const candidate of known) {
    // Case and separators never make a different key: accesslog, access_log -> accessLog.
    const score = folded(candidate) === folded(key) ? 0 : distance(folded(key), folded(candidate));
    if (!best || score < best.score) best = { key: candidate, score };
  }
  if (!best) return undefined;
  const allowed = Math.max(1, Math.floor(Math.min(key.length, best.key.length) / 3));
  return best.score <= allowed ? best.key : undefined;
}

/**
 * A key written one level too high or low (`storage.fsync` for `storage.filesystem.fsync`):
 * the path of a key of the same name in a mapping below `path`, searched breadth first, two levels deep.
 */
export function relocatedKey(root: z.ZodType, path: readonly string[], key: string): string[] | undefined {
  const folded = (s: string) => s.toLowerCase().replace(/[_-]/g, "");
  let level: string[][] = [[...path]];
  for (let depth = 0; depth < 3 && level.length > 0; depth++) {
    const next: string[][] = [];
    for (const at of level) {
      for (const candidate of keysAt(root, at)) {
        if (depth > 0 && folded(candidate) === folded(key)) return [...at, candidate];
        next.push([...at, candidate]);
      }
    }
    level = next;
  }
  return undefined;
}
