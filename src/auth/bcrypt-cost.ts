/**
 * bcrypt cost factors of stored hashes. The cost decides how long a password
 * check takes (each step doubles it), so the dummy hash that unknown user
 * names are checked against must have the cost most real users have, or the
 * time of a failed login tells whether the name exists.
 */

/** `ferry user add` writes this cost unless told otherwise or the file already uses another. */
export const DEFAULT_BCRYPT_COST = 12;

const BCRYPT_PREFIX = /^\$2[aby]\$(\d\d)\$/;

/** The cost of a bcrypt hash; undefined for anything else. */
export function bcryptCost(hash: string): number | undefined {
  const match = BCRYPT_PREFIX.exec(hash);
  if (!match) return undefined;
  const cost = Number(match[1]);
  // bcrypt defines costs 4..31; anything else is not a hash bcrypt can check.
  return cost >= 4 && cost <= 31 ? cost : undefined;
}

/**
 * The most common cost among `hashes` (ties: the higher, so a check is never
 * the cheaper one); undefined when none is a bcrypt hash.
 */
export function typicalCost(hashes: Iterable<string>): number | undefined {
  const counts = new Map<number, number>();
  for (const hash of hashes) {
    const cost = bcryptCost(hash);
    if (cost !== undefined) counts.set(cost, (counts.get(cost) ?? 0) + 1);
  }
  let best: number | undefined;
  let bestCount = 0;
  for (const [cost, count] of counts) {
    if (count > bestCount || (count === bestCount && best !== undefined && cost > best)) {
      best = cost;
      bestCount = count;
    }
  }
  return best;
}
