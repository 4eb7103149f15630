// Tag list and catalog, each repeated sequentially for a fixed time:
//  - the first page (?n=100);
//  - the full walk a client does: no n, follow Link until there is none
//    (skopeo list-tags, crane ls and podman search send no n on the first request);
//  - a full walk with n=1000 on every request, kept as its own row.
//
// Timed: from the first request to the last byte of the last page, the way
// wrk or autocannon time a response. Every run is checked after the clock
// stops, so a wrong answer still fails the case: the bodies are parsed and
// their entries checked (count, no duplicates), unless they are byte for byte
// the pages of the last run that passed that check. Parsing 10,000 tags costs
// the Node client 0.3-1 ms whatever the server, and the garbage it leaves
// slows the next timed request; inside the clock it would cap the visible
// ratio for any registry faster than that.
import type { FixturePlan } from '../fixtures.js';
import type { Profile } from '../options.js';
import { fetchAllListPages, fetchListPage, listEntries, type RawListPage } from '../oci.js';
import type { Registry } from '../registry.js';
import { median } from '../stats.js';
import type { BenchCase, RunContext } from './case.js';

const FIRST_PAGE = 100;
const WALK_PAGE = 1000;

type Field = 'tags' | 'repositories';

/** One timed listing: how long it took, and the pages to check once the clock has stopped. */
interface Timed {
  ms: number;
  pages: RawListPage[];
}

type ListOp = (reg: Registry) => Promise<Timed>;

interface ListDef {
  id: string;
  title: string;
  op: ListOp;
  check: (reg: Registry, ctx: RunContext, pages: RawListPage[]) => void;
}

function samePages(a: RawListPage[], b: RawListPage[]): boolean {
  return a.length === b.length && a.every((page, i) => page.url === b[i]!.url && page.body.equals(b[i]!.body));
}

/** Runs op back to back for `seconds` (at least once), checking every result; returns the median time in ms. */
async function timeRepeatedly(seconds: number, op: () => Promise<Timed>, check: (pages: RawListPage[]) => void): Promise<number> {
  const durations: number[] = [];
  let lastChecked: RawListPage[] = [];
  const deadline = performance.now() + seconds * 1000;
  do {
    const { ms, pages } = await op();
    if (!samePages(pages, lastChecked)) {
      check(pages);
      lastChecked = pages;
    }
    durations.push(ms);
  } while (performance.now() < deadline);
  return median(durations);
}

function pageOp(url: string): ListOp {
  return async (reg) => {
    const t0 = performance.now();
    const page = await fetchListPage(reg.http, url);
    return { ms: performance.now() - t0, pages: [page] };
  };
}

function walkOp(url: string, maxPages: number): ListOp {
  return async (reg) => {
    const t0 = performance.now();
    const pages = await fetchAllListPages(reg.http, url, maxPages);
    return { ms: performance.now() - t0, pages };
  };
}

/** Every entry across the pages, failing on duplicates (a walk that repeats entries is broken). */
function walkEntries(reg: Registry, what: string, pages: RawListPage[], field: Field): number {
  const seen = new Set<string>();
  for (const page of pages) {
    for (const entry of listEntries(page, field)) {
      if (seen.has(entry)) throw new Error(`${reg.name}: ${what} walk returned "${entry}" twice`);
      seen.add(entry);
    }
  }
  return seen.size;
}

export function listCases(profile: Profile, plan: FixturePlan): BenchCase[] {
  const n = profile.listCount;
  const tagsUrl = `/v2/${plan.tags.repo}/tags/list`;
  const catalogUrl = '/v2/_catalog';
  // Only a guard against Link loops: a registry may page by as little as it likes.
  const maxPages = n + 100;

  const firstPage = (url: string, field: Field, what: string): Omit<ListDef, 'id' | 'title'> => ({
    op: pageOp(`${url}?n=${FIRST_PAGE}`),
    check(reg, ctx, pages) {
      const items = listEntries(pages[0]!, field).length;
      if (items === 0) throw new Error(`${reg.name}: ${what} first page is empty`);
      if (items > FIRST_PAGE) {
        ctx.note(`${reg.name} ignores ?n=${FIRST_PAGE} on ${what} (returned ${items} entries in one page)`);
      }
    },
  });

  /** `pageSize` undefined: no n at all, the registry picks the page size. */
  const walk = (url: string, field: Field, what: string, exact: boolean, pageSize?: number): Omit<ListDef, 'id' | 'title'> => ({
    op: walkOp(pageSize === undefined ? url : `${url}?n=${pageSize}`, maxPages),
    check(reg, ctx, pages) {
      const items = walkEntries(reg, what, pages, field);
      // Tags must all be there; the catalog also holds the other bench repositories.
      if (exact ? items !== n : items < n) {
        throw new Error(`${reg.name}: ${what} walk returned ${items} entries, expected ${exact ? '' : 'at least '}${n}`);
      }
      const how = pageSize === undefined ? 'without n' : `with n=${pageSize}`;
      ctx.note(`${reg.name}: ${what} walk ${how} took ${pages.length} page${pages.length === 1 ? '' : 's'} (${items} entries)`);
    },
  });

  const defs: ListDef[] = [
    { id: `list.tags.first.n${n}`, title: `tag list (${n} tags), first page n=${FIRST_PAGE}`, ...firstPage(tagsUrl, 'tags', 'tag list') },
    { id: `list.tags.walk.n${n}`, title: `tag list (${n} tags), full walk, no n`, ...walk(tagsUrl, 'tags', 'tag list', true) },
    {
      id: `list.tags.walk-n${WALK_PAGE}.n${n}`,
      title: `tag list (${n} tags), full walk n=${WALK_PAGE}`,
      ...walk(tagsUrl, 'tags', 'tag list', true, WALK_PAGE),
    },
    {
      id: `list.catalog.first.n${n}`,
      title: `catalog (${n} repos), first page n=${FIRST_PAGE}`,
      ...firstPage(catalogUrl, 'repositories', 'catalog'),
    },
    {
      id: `list.catalog.walk.n${n}`,
      title: `catalog (${n} repos), full walk, no n`,
      ...walk(catalogUrl, 'repositories', 'catalog', false),
    },
    {
      id: `list.catalog.walk-n${WALK_PAGE}.n${n}`,
      title: `catalog (${n} repos), full walk n=${WALK_PAGE}`,
      ...walk(catalogUrl, 'repositories', 'catalog', false, WALK_PAGE),
    },
  ];

  return defs.map(({ id, title, op, check }) => ({
    group: 'list' as const,
    title,
    metrics: [{ id: `${id}.ms`, label: title, unit: 'ms', better: 'lower' as const }],
    async warmup(reg) {
      check(reg, { note: () => {} }, (await op(reg)).pages);
    },
    async run(reg, ctx) {
      const ms = await timeRepeatedly(profile.listSeconds, () => op(reg), (pages) => check(reg, ctx, pages));
      return { [`${id}.ms`]: ms };
    },
  }));
}
