// Tag list and catalog: first page (?n=100) and a full walk following Link
// headers with n=1000, each repeated sequentially for a fixed time.
import type { FixturePlan } from '../fixtures.js';
import type { Profile } from '../options.js';
import { listAll, listPage } from '../oci.js';
import type { Registry } from '../registry.js';
import { median } from '../stats.js';
import type { BenchCase, RunContext } from './case.js';

const FIRST_PAGE = 100;
const WALK_PAGE = 1000;

type ListOp = (reg: Registry, ctx: RunContext) => Promise<void>;

/** Runs op back to back for `seconds` (at least once); returns the median duration in ms. */
async function timeRepeatedly(seconds: number, op: () => Promise<void>): Promise<number> {
  const durations: number[] = [];
  const deadline = performance.now() + seconds * 1000;
  do {
    const t0 = performance.now();
    await op();
    durations.push(performance.now() - t0);
  } while (performance.now() < deadline);
  return median(durations);
}

export function listCases(profile: Profile, plan: FixturePlan): BenchCase[] {
  const n = profile.listCount;
  const tagsUrl = `/v2/${plan.tags.repo}/tags/list`;
  const catalogUrl = '/v2/_catalog';
  const maxPages = Math.ceil(n / WALK_PAGE) + 20;

  const firstPage =
    (url: string, field: 'tags' | 'repositories', what: string): ListOp =>
    async (reg, ctx) => {
      const page = await listPage(reg.http, `${url}?n=${FIRST_PAGE}`, field);
      if (page.items === 0) throw new Error(`${reg.name}: ${what} first page is empty`);
      if (page.items > FIRST_PAGE) {
        ctx.note(`${reg.name} ignores ?n=${FIRST_PAGE} on ${what} (returned ${page.items} entries in one page)`);
      }
    };

  const walk =
    (url: string, field: 'tags' | 'repositories', what: string, exact: boolean): ListOp =>
    async (reg, ctx) => {
      const { items, pages } = await listAll(reg.http, `${url}?n=${WALK_PAGE}`, field, maxPages);
      // Tags must all be there; the catalog also holds the other bench repositories.
      if (exact ? items !== n : items < n) {
        throw new Error(`${reg.name}: ${what} walk returned ${items} entries, expected ${exact ? '' : 'at least '}${n}`);
      }
      if (pages === 1 && items > WALK_PAGE) ctx.note(`${reg.name} returned the whole ${what} (${items} entries) in one page`);
    };

  const defs: Array<{ id: string; title: string; op: ListOp }> = [
    { id: `list.tags.first.n${n}`, title: `tag list (${n} tags), first page n=${FIRST_PAGE}`, op: firstPage(tagsUrl, 'tags', 'tag list') },
    { id: `list.tags.walk.n${n}`, title: `tag list (${n} tags), full walk n=${WALK_PAGE}`, op: walk(tagsUrl, 'tags', 'tag list', true) },
    { id: `list.catalog.first.n${n}`, title: `catalog (${n} repos), first page n=${FIRST_PAGE}`, op: firstPage(catalogUrl, 'repositories', 'catalog') },
    { id: `list.catalog.walk.n${n}`, title: `catalog (${n} repos), full walk n=${WALK_PAGE}`, op: walk(catalogUrl, 'repositories', 'catalog', false) },
  ];

  return defs.map(({ id, title, op }) => ({
    group: 'list' as const,
    title,
    metrics: [{ id: `${id}.ms`, label: title, unit: 'ms', better: 'lower' as const }],
    async warmup(reg) {
      await op(reg, { note: () => {} });
    },
    async run(reg, ctx) {
      return { [`${id}.ms`]: await timeRepeatedly(profile.listSeconds, () => op(reg, ctx)) };
    },
  }));
}
