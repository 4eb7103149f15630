/**
 * The web UI's JSON API: what /v2/ lacks (sizes, times, summaries, an image
 * as one tree), documented in docs/ui.md.
 *
 *   GET /ferry/v1/session                        who the caller is and what the UI may offer
 *   GET /ferry/v1/repositories?q=&n=&last=       repositories the caller may pull, with tag count, size, last push
 *   GET /ferry/v1/repository?name=R              one repository's tags with digest, size, platforms, times
 *   GET /ferry/v1/image?repository=R&reference=  a manifest or index as a tree, its config, foreign layers, referrers
 *
 * Every answer is filtered by the access policy the same way the catalog is
 * (AccessController.can): a repository the caller may not pull does not
 * exist for them (404, or 401 for anonymous callers so the UI offers
 * sign-in). Nothing here changes anything; deletes go through /v2/ and GC
 * through /ferry/v1/gc, where the usual authorization applies.
 */
import type { Extension } from "../http/app.js";
import type { RequestContext } from "../http/context.js";
import { sendJson } from "../http/respond.js";
import type { ImageResponse, RepositoryPage, RepositoryView, Session } from "./wire.js";
import { RegistryError } from "../oci/errors.js";
import { assertRepositoryName, parseManifestReference } from "../oci/reference.js";
import type { Principal } from "../auth/access.js";
import { describeImage, describeTags } from "./image.js";
import type { RegistryDeps } from "../registry/context.js";

const NO_STORE = { "Cache-Control": "no-store" };
const PAGE_DEFAULT = 50;
const PAGE_MAX = 500;
/** Tags shown for one repository; more are cut (the answer says so). */
export const TAGS_MAX = 1000;

export function browseExtensions(deps: RegistryDeps): Extension[] {
  return [
    {
      method: "GET",
      path: /^\/ferry\/v1\/session$/,
      access: null,
      async handle(ctx) {
        const principal = await identify(ctx);
        const { access } = ctx.services;
        const admin = await access.authorize(principal, [{ type: "admin" }]).then(
          () => true,
          () => false,
        );
        sendJson(
          ctx.res,
          200,
          {
            user: principal.user,
            admin,
            authRequired: !access.open,
            tokenService: (access.extensions ?? []).some((e) => e.path.test("/token")),
          } satisfies Session,
          NO_STORE,
        );
      },
    },
    {
      method: "GET",
      path: /^\/ferry\/v1\/repositories$/,
      access: null,
      async handle(ctx) {
        const principal = await identify(ctx);
        const meta = deps.meta;
        if (!meta.listRepositorySummaries) throw new RegistryError("UNSUPPORTED", "this metadata driver has no repository summaries", { status: 501 });
        const limit = pageSize(ctx.query.get("n"));
        const after = ctx.query.get("last") || undefined;
        const search = (ctx.query.get("q") ?? "").slice(0, 256);
        const page = await meta.listRepositorySummaries({ limit, after, search }, (name) => ctx.services.access.can(principal, name, "pull"));
        sendJson(ctx.res, 200, page satisfies RepositoryPage, NO_STORE);
      },
    },
    {
      method: "GET",
      path: /^\/ferry\/v1\/repository$/,
      access: null,
      async handle(ctx) {
        const principal = await identify(ctx);
        const name = repositoryParam(ctx, "name");
        await mayPull(ctx, principal, name);
        const meta = deps.meta;
        if (!meta.listTagDetails) throw new RegistryError("UNSUPPORTED", "this metadata driver has no tag details", { status: 501 });
        const tags = await meta.listTagDetails(name, TAGS_MAX + 1);
        // A name never pushed is 404, as on tags/list (and as ui.md promises): a typo must not look like an empty repository.
        if (tags.length === 0 && !(await meta.repositoryExists(name))) {
          throw new RegistryError("NAME_UNKNOWN", `repository ${name} is not known to this registry`, { detail: { name } });
        }
        sendJson(
          ctx.res,
          200,
          {
            name,
            canDelete: ctx.services.access.can(principal, name, "delete"),
            tags: await describeTags(deps, name, tags.slice(0, TAGS_MAX)),
            truncated: tags.length > TAGS_MAX,
          } satisfies RepositoryView,
          NO_STORE,
        );
      },
    },
    {
      method: "GET",
      path: /^\/ferry\/v1\/image$/,
      access: null,
      async handle(ctx) {
        const principal = await identify(ctx);
        const repository = repositoryParam(ctx, "repository");
        const referenceText = ctx.query.get("reference");
        if (!referenceText) throw badParameter("reference", `the query parameter "reference" is required`);
        const reference = parseManifestReference(referenceText);
        await mayPull(ctx, principal, repository);
        const image = await describeImage(deps, repository, reference);
        sendJson(ctx.res, 200, { ...image, canDelete: ctx.services.access.can(principal, repository, "delete") } satisfies ImageResponse, NO_STORE);
      },
    },
  ];
}

async function identify(ctx: RequestContext): Promise<Principal> {
  ctx.principal = await ctx.services.access.authenticate(ctx.req.headers, ctx.clientAddress);
  return ctx.principal;
}

/** A repository the caller may not pull is not there for them: 404, or 401 for anonymous callers (sign-in might help). */
async function mayPull(ctx: RequestContext, principal: Principal, name: string): Promise<void> {
  if (ctx.services.access.can(principal, name, "pull")) return;
  if (principal.user === null && !ctx.services.access.open) {
    throw new RegistryError("UNAUTHORIZED", "sign in to see this repository", { detail: { repository: name } });
  }
  throw new RegistryError("NAME_UNKNOWN", `repository ${name} is not known to this registry`, { detail: { name } });
}

function repositoryParam(ctx: RequestContext, parameter: string): string {
  const name = ctx.query.get(parameter);
  if (!name) throw badParameter(parameter, `the query parameter "${parameter}" is required`);
  assertRepositoryName(name);
  return name;
}

function pageSize(value: string | null): number {
  if (value === null || value === "") return PAGE_DEFAULT;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > PAGE_MAX) throw badParameter("n", `n must be an integer from 1 to ${PAGE_MAX}`);
  return n;
}

function badParameter(parameter: string, message: string): RegistryError {
  return new RegistryError("UNSUPPORTED", message, { status: 400, detail: { parameter } });
}
