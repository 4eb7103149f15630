/**
 * Repository patterns for access rules: `*` matches within one path segment,
 * `**` (a whole segment) matches any number of segments, `?` one character.
 * `team-a/**` matches `team-a/app` and `team-a/x/y` but not `team-a` itself
 * (as in .gitignore); write both patterns to include the bare name.
 */

const PATTERN_CHARS = /^[a-z0-9._\-/*?]+$/;

export function compileRepositoryPattern(pattern: string): RegExp {
  if (!PATTERN_CHARS.test(pattern)) {
    throw new Error(`repository pattern "${pattern}" may only contain a-z 0-9 . _ - / and the wildcards * ** ?`);
  }
  const segments = pattern.split("/");
  if (segments.some((s) => s === "")) throw new Error(`repository pattern "${pattern}" has an empty path segment`);
  let source = "";
  let joinNext = false;
  segments.forEach((segment, index) => {
    const first = index === 0;
    const last = index === segments.length - 1;
    if (segment === "**") {
      if (last) source += first ? ".+" : "/.+";
      else source += first ? "(?:.+/)?" : "/(?:.+/)?";
      joinNext = true;
      return;
    }
    if (segment.includes("**")) throw new Error(`repository pattern "${pattern}": ** must be a whole path segment`);
    const body = segment.replace(/[.\-]/g, "\\$&").replace(/\*/g, "[^/]*").replace(/\?/g, "[^/]");
    source += (first || joinNext ? "" : "/") + body;
    joinNext = false;
  });
  return new RegExp(`^${source}$`);
}

export class PatternSet {
  private readonly regexes: RegExp[];
  constructor(patterns: readonly string[]) {
    this.regexes = patterns.map(compileRepositoryPattern);
  }
  matches(repository: string): boolean {
    return this.regexes.some((r) => r.test(repository));
  }
}
