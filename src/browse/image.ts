/**
 * Builds what the UI shows of tags and images from stored manifests: sizes,
 * platforms, the config's useful fields, foreign layers with their sources'
 * state, referrers grouped by artifact type. Reads only; every read is
 * bounded (config blobs up to CONFIG_MAX_BYTES, index children up to
 * CHILDREN_MAX).
 */
import type { RegistryDeps } from "../registry/context.js";
import type { ForeignLayerMark, ManifestRecord, TagDetail } from "../metadata/meta-store.js";
import { parseManifest, type Descriptor, type ParsedManifest } from "../oci/manifest.js";
import { RegistryError } from "../oci/errors.js";
import type { ManifestReference } from "../oci/reference.js";
import { FederationService } from "../federation/service.js";
import type { ChildNode, ConfigView, ForeignView, ImageNode, ImageView, LayerView, TagRow } from "./wire.js";

export type { ChildNode, ConfigView, ForeignView, ImageNode, ImageView, LayerView, TagRow };

/** Config blobs larger than this are not read (an image config is a few KiB). */
const CONFIG_MAX_BYTES = 1024 * 1024;
/**
 * Characters of env, cmd, entrypoint, labels and history shown per config;
 * the rest is cut (`truncated`). Without it an index of 64 images with 1 MiB
 * configs made one answer 60 MiB and one request hold ~200 MiB of parsed
 * JSON: a few anonymous requests for a public image could exhaust the heap.
 */
const CONFIG_TEXT_MAX = 64 * 1024;
/** Child manifests of an index described in full; the rest are listed as descriptors. */
const CHILDREN_MAX = 64;
/**
 * Config blobs one tag listing reads to find platforms (on S3 each is a GET);
 * platforms of the rest show once a later listing has read them. Configs are
 * content-addressed, so what was read is kept per digest (PLATFORMS_KEPT).
 */
const CONFIG_READS_PER_LISTING = 200;
const PLATFORMS_KEPT = 20_000;

/** Platform of a config digest ("" when it names none), shared by every request: the bytes behind a digest never change. */
const platformsByConfig = new Map<string, string>();

function rememberPlatform(digest: string, platform: string): void {
  if (platformsByConfig.size >= PLATFORMS_KEPT) platformsByConfig.delete(platformsByConfig.keys().next().value!);
  platformsByConfig.set(digest, platform);
}

/** What is shown of a config blob (read once per request; the parsed JSON itself is not kept). */
type ConfigDetails = Omit<ConfigView, "digest" | "mediaType" | "size">;

export async function describeTags(deps: RegistryDeps, repository: string, tags: TagDetail[]): Promise<TagRow[]> {
  const reader = new Reader(deps, repository);
  const rows: TagRow[] = [];
  // Many tags often name one manifest: parse and sum it once.
  const byDigest = new Map<string, { kind: TagRow["kind"]; summary: { size: number; platforms: string[] } }>();
  for (const tag of tags) {
    let known = byDigest.get(tag.digest);
    if (!known) {
      const parsed = tryParse(tag.content, tag.mediaType);
      const kind = parsed ? (parsed.kind === "index" ? "index" : "image") : "unknown";
      known = { kind, summary: parsed ? await reader.summary(tag.size, parsed) : { size: tag.size, platforms: [] } };
      byDigest.set(tag.digest, known);
    }
    const { kind, summary } = known;
    rows.push({
      tag: tag.tag,
      digest: tag.digest,
      mediaType: tag.mediaType,
      kind,
      artifactType: tag.artifactType,
      size: summary.size,
      platforms: summary.platforms,
      createdAt: tag.createdAt,
      pushedAt: tag.pushedAt,
    });
  }
  return rows;
}

export async function describeImage(deps: RegistryDeps, repository: string, reference: ManifestReference): Promise<ImageView> {
  const record =
    reference.kind === "tag" ? await deps.meta.getTaggedManifest(repository, reference.tag) : await deps.meta.getManifest(repository, reference.digest.digest);
  if (!record) {
    const text = reference.kind === "tag" ? reference.tag : reference.digest.digest;
    throw new RegistryError("MANIFEST_UNKNOWN", `manifest ${text} is not in ${repository}`, { detail: { reference: text } });
  }
  const reader = new Reader(deps, repository);
  const node = await reader.node(record, true);
  const referrers: ImageView["referrers"] = {};
  for (const r of await deps.meta.listReferrers(repository, record.digest)) {
    const group = r.artifactType ?? r.mediaType;
    (referrers[group] ??= []).push({ digest: r.digest, mediaType: r.mediaType, size: r.size, annotations: r.annotations });
  }
  const tags = deps.meta.listTagDetails ? (await deps.meta.listTagDetails(repository, 1000)).filter((t) => t.digest === record.digest).map((t) => t.tag) : [];
  return { ...node, repository, raw: record.content.toString("utf8"), tags, referrers };
}

function tryParse(content: Buffer, mediaType: string): ParsedManifest | null {
  try {
    return parseManifest(content, mediaType);
  } catch {
    return null;
  }
}

function platformText(platform: Record<string, unknown> | undefined): string | null {
  if (!platform) return null;
  const parts = [platform.os, platform.architecture, platform.variant].filter((p): p is string => typeof p === "string" && p !== "");
  return parts.length > 0 ? parts.join("/") : null;
}

/** One request's reads, with the configs and child manifests it already read. */
class Reader {
  private readonly configs = new Map<string, ConfigDetails | null>();
  private readonly manifests = new Map<string, ManifestRecord | null>();
  private marks: Promise<Map<string, ForeignLayerMark>> | null = null;

  constructor(
    private readonly deps: RegistryDeps,
    private readonly repository: string,
  ) {}

  /** Size and platforms of a tag's manifest. */
  async summary(manifestSize: number, parsed: ParsedManifest): Promise<{ size: number; platforms: string[] }> {
    if (parsed.kind !== "index") {
      const size = manifestSize + (parsed.config?.size ?? 0) + parsed.layers.reduce((sum, l) => sum + l.size, 0);
      const platform = parsed.config ? await this.platformOf(parsed.config) : null;
      return { size, platforms: platform ? [platform] : [] };
    }
    let size = manifestSize;
    const platforms: string[] = [];
    for (const child of parsed.manifests.slice(0, CHILDREN_MAX)) {
      const text = platformText(child.platform);
      // Attestation manifests (buildx) sit in indexes as unknown/unknown: not a platform.
      if (text && text !== "unknown/unknown" && !platforms.includes(text)) platforms.push(text);
      const record = await this.manifest(child.digest);
      const childParsed = record ? tryParse(record.content, record.mediaType) : null;
      if (childParsed && childParsed.kind !== "index") {
        size += record!.size + (childParsed.config?.size ?? 0) + childParsed.layers.reduce((sum, l) => sum + l.size, 0);
      } else size += child.size;
    }
    return { size, platforms };
  }

  async node(record: ManifestRecord, expandChildren: boolean): Promise<ImageNode> {
    const parsed = parseManifest(record.content, record.mediaType);
    const base = {
      digest: record.digest,
      mediaType: record.mediaType,
      size: record.size,
      ...(parsed.artifactType ? { artifactType: parsed.artifactType } : {}),
      ...(parsed.annotations ? { annotations: parsed.annotations } : {}),
    };
    if (parsed.kind === "index") {
      const children: ChildNode[] = [];
      for (const [i, child] of parsed.manifests.entries()) {
        const childRecord = i < CHILDREN_MAX ? await this.manifest(child.digest) : null;
        const entry: ChildNode = { digest: child.digest, mediaType: child.mediaType, size: child.size, platform: platformText(child.platform), present: childRecord !== null };
        if (childRecord && expandChildren) entry.image = await this.node(childRecord, false);
        children.push(entry);
      }
      return { ...base, kind: "index", children };
    }
    const config = parsed.config ? await this.configView(parsed.config) : undefined;
    const layers: LayerView[] = [];
    for (const layer of parsed.layers) layers.push(await this.layer(layer));
    return { ...base, kind: "image", config, layers };
  }

  private async layer(layer: Descriptor): Promise<LayerView> {
    const view: LayerView = { digest: layer.digest, mediaType: layer.mediaType, size: layer.size };
    if (!layer.urls || layer.urls.length === 0) return view;
    view.urls = layer.urls;
    const mark = (await this.foreignMarks()).get(layer.digest);
    // A layer with urls whose bytes the registry holds is served locally: no mark.
    if (mark) view.foreign = this.foreignView(mark);
    return view;
  }

  private foreignMarks(): Promise<Map<string, ForeignLayerMark>> {
    this.marks ??= (async () => {
      const federation = this.deps.federation;
      // The admin view's cache state reads the cache index: bring it up to date first (as listMarks does).
      if (federation instanceof FederationService) await federation.cache.refresh();
      const marks = await this.deps.meta.listForeignLayers(this.repository);
      return new Map(marks.map((m) => [m.digest, m]));
    })();
    return this.marks;
  }

  private foreignView(mark: ForeignLayerMark): ForeignView {
    const federation = this.deps.federation;
    if (!(federation instanceof FederationService)) {
      return {
        verification: mark.verification,
        verifiedAt: mark.verifiedAt,
        cached: false,
        sources: mark.urls.map((url) => ({ url, allowed: false, state: "unknown", lastError: null, lastCheckedAt: null })),
      };
    }
    const described = federation.describeMark(mark);
    return {
      verification: mark.verification,
      verifiedAt: mark.verifiedAt,
      cached: described.cached,
      sources: described.policy.map((p) => {
        const health = federation.health.viewOf(p.url);
        return {
          url: p.url,
          allowed: p.allowed,
          ...(p.allowed ? { serve: p.serve } : { reason: p.reason }),
          state: health.state,
          lastError: health.lastError,
          lastCheckedAt: health.lastCheckedAt,
        };
      }),
    };
  }

  private configReads = 0;

  /** The platform an image config names, from the shared cache or (up to CONFIG_READS_PER_LISTING per request) the blob. */
  private async platformOf(descriptor: Descriptor): Promise<string | null> {
    // The cache is keyed by content, but only a repository that holds the blob may learn from it.
    if (!(await this.deps.meta.linkedBlob(this.repository, descriptor.digest))) return null;
    const known = platformsByConfig.get(descriptor.digest);
    if (known !== undefined) return known || null;
    if (this.configReads >= CONFIG_READS_PER_LISTING) return null;
    this.configReads++;
    const config = await this.config(descriptor);
    const platform = config ? platformText({ os: config.os, architecture: config.architecture, variant: config.variant }) : null;
    if (config) rememberPlatform(descriptor.digest, platform ?? "");
    return platform;
  }

  private async manifest(digest: string): Promise<ManifestRecord | null> {
    if (!this.manifests.has(digest)) this.manifests.set(digest, await this.deps.meta.getManifest(this.repository, digest));
    return this.manifests.get(digest)!;
  }

  /** What is shown of the config blob, when the repository holds it and it is small JSON. */
  private async config(descriptor: Descriptor): Promise<ConfigDetails | null> {
    if (this.configs.has(descriptor.digest)) return this.configs.get(descriptor.digest)!;
    let value: ConfigDetails | null = null;
    if (descriptor.size <= CONFIG_MAX_BYTES && descriptor.mediaType.endsWith("json")) {
      const linked = await this.deps.meta.linkedBlob(this.repository, descriptor.digest);
      if (linked && linked.size <= CONFIG_MAX_BYTES) {
        try {
          const chunks: Buffer[] = [];
          let total = 0;
          for await (const chunk of await this.deps.blobs.read(descriptor.digest)) {
            total += (chunk as Buffer).length;
            if (total > CONFIG_MAX_BYTES) break;
            chunks.push(chunk as Buffer);
          }
          const parsed = JSON.parse(Buffer.concat(chunks).toString("utf8")) as unknown;
          if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) value = detailsOf(parsed as Record<string, unknown>);
        } catch {
          value = null; // missing bytes or not JSON: shown without details
        }
      }
    }
    this.configs.set(descriptor.digest, value);
    return value;
  }

  private async configView(descriptor: Descriptor): Promise<ConfigView> {
    const view: ConfigView = { digest: descriptor.digest, mediaType: descriptor.mediaType, size: descriptor.size };
    const details = await this.config(descriptor);
    return details ? { ...view, ...details } : view;
  }
}

/** The shown fields of a parsed config, their text bounded by CONFIG_TEXT_MAX. */
function detailsOf(json: Record<string, unknown>): ConfigDetails {
  let left = CONFIG_TEXT_MAX;
  let truncated = false;
  /** The text if it still fits the budget (short fields like os always fit in practice). */
  const fit = (v: unknown): string | undefined => {
    if (typeof v !== "string") return undefined;
    if (v.length > left) {
      truncated = true;
      left = 0;
      return undefined;
    }
    left -= v.length;
    return v;
  };
  const strings = (v: unknown): string[] | undefined => {
    if (!Array.isArray(v)) return undefined;
    const out: string[] = [];
    for (const item of v) {
      const text = fit(item);
      if (text !== undefined) out.push(text);
      else if (typeof item === "string") break;
    }
    return out;
  };
  const inner = (json.config && typeof json.config === "object" ? json.config : {}) as Record<string, unknown>;
  const rawLabels = inner.Labels && typeof inner.Labels === "object" ? (inner.Labels as Record<string, unknown>) : undefined;
  const history = Array.isArray(json.history) ? (json.history as unknown[]) : undefined;
  const details: ConfigDetails = {
    os: fit(json.os),
    architecture: fit(json.architecture),
    variant: fit(json.variant),
    created: fit(json.created),
    workingDir: fit(inner.WorkingDir),
    user: fit(inner.User),
    entrypoint: strings(inner.Entrypoint),
    cmd: strings(inner.Cmd),
    env: strings(inner.Env),
  };
  if (rawLabels) {
    const labels: Record<string, string> = {};
    for (const [key, value] of Object.entries(rawLabels)) {
      if (typeof value !== "string") continue;
      if (key.length + value.length > left) {
        truncated = true;
        break;
      }
      left -= key.length + value.length;
      labels[key] = value;
    }
    details.labels = labels;
  }
  if (history) {
    details.history = [];
    for (const entry of history.slice(0, 500)) {
      const h = (entry && typeof entry === "object" ? entry : {}) as Record<string, unknown>;
      const step = { created: fit(h.created), createdBy: fit(h.created_by), comment: fit(h.comment), emptyLayer: h.empty_layer === true ? (true as const) : undefined };
      if (left === 0) break;
      details.history.push(step);
    }
    if (history.length > 500) truncated = true;
  }
  if (truncated) details.truncated = true;
  return details;
}
