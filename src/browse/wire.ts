/**
 * The JSON the web UI reads from /ferry/v1, in one place that the server and
 * the UI (ui/src/api.ts, with a type-only import) both compile against: a
 * field renamed or added on one side is a type error on the other, instead of
 * a blank cell in the browser. This file must stay free of imports (the UI is
 * type-checked without Node's types), so the server-side modules check their
 * answers against these shapes where they build them.
 */

/** GET /ferry/v1/session */
export interface Session {
  user: string | null;
  admin: boolean;
  /** False: no `auth` section, everyone may do everything. */
  authRequired: boolean;
  /** Ferry's own /token service is there to sign in with. */
  tokenService: boolean;
}

/** A row of GET /ferry/v1/repositories. */
export interface RepositorySummary {
  name: string;
  tags: number;
  /** Bytes of the blobs the repository holds (foreign layers are not held). */
  size: number;
  /** Latest tag update or manifest push (epoch ms). */
  lastPush: number | null;
}

/** GET /ferry/v1/repositories */
export interface RepositoryPage {
  repositories: RepositorySummary[];
  /** Repositories matching the search that the caller may see. */
  total: number;
  /** Pass as `last` for the next page; absent on the last page. */
  next?: string;
}

export interface TagRow {
  tag: string;
  digest: string;
  mediaType: string;
  kind: "image" | "index" | "unknown";
  artifactType: string | null;
  /** Manifest + config + layers; for an index, the sum over the child images held here. */
  size: number;
  platforms: string[];
  createdAt: number;
  pushedAt: number;
}

/** GET /ferry/v1/repository */
export interface RepositoryView {
  name: string;
  canDelete: boolean;
  tags: TagRow[];
  /** More tags exist than one answer lists. */
  truncated: boolean;
}

export interface ForeignSourceState {
  url: string;
  allowed: boolean;
  serve?: string;
  reason?: string;
  /** Source health: unknown, healthy, degraded, failing. */
  state: string;
  lastError: string | null;
  lastCheckedAt: number | null;
}

export interface ForeignView {
  verification: string;
  verifiedAt: number | null;
  /** This repository is served the layer from Ferry's proxy cache. */
  cached: boolean;
  sources: ForeignSourceState[];
}

export interface LayerView {
  digest: string;
  mediaType: string;
  size: number;
  urls?: string[];
  foreign?: ForeignView;
}

export interface ConfigView {
  digest: string;
  mediaType: string;
  size: number;
  /** Absent when the blob is not held here, too large, or not JSON. */
  os?: string;
  architecture?: string;
  variant?: string;
  created?: string;
  env?: string[];
  entrypoint?: string[];
  cmd?: string[];
  workingDir?: string;
  user?: string;
  labels?: Record<string, string>;
  history?: Array<{ created?: string; createdBy?: string; comment?: string; emptyLayer?: boolean }>;
  /** Env, cmd, labels or history were too long and were cut. */
  truncated?: true;
}

export interface ImageNode {
  digest: string;
  mediaType: string;
  kind: "image" | "index";
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
  config?: ConfigView;
  layers?: LayerView[];
  children?: ChildNode[];
}

export interface ChildNode {
  digest: string;
  mediaType: string;
  size: number;
  platform: string | null;
  /** The child manifest is stored in this repository. */
  present: boolean;
  image?: ImageNode;
}

export interface ReferrerView {
  digest: string;
  mediaType: string;
  size: number;
  annotations: Record<string, string> | null;
}

export interface ImageView extends ImageNode {
  repository: string;
  /** The manifest exactly as pushed (UTF-8). */
  raw: string;
  tags: string[];
  /** Referrers grouped by artifact type. */
  referrers: Record<string, ReferrerView[]>;
}

/** GET /ferry/v1/image */
export interface ImageResponse extends ImageView {
  canDelete: boolean;
}

/** A row of GET /ferry/v1/foreign/sources (the fields the UI shows). */
export interface SourceRow {
  url: string;
  host: string;
  state: string;
  healthy: boolean;
  referenced: boolean;
  successes: number;
  failures: number;
  consecutiveFailures: number;
  lastError: string | null;
  lastCheckedAt: number | null;
  lastLatencyMs: number | null;
  policy: { allowed: boolean; rule: string; reason?: string };
}

export interface GcReportView {
  manifestsDeleted: number;
  linksDeleted: number;
  blobsDeleted: number;
  /** Bytes left behind by crashes (no metadata record), removed. */
  untrackedDeleted: number;
  /** Another process was collecting already, so this run did nothing. */
  skipped: boolean;
}

/** GET and POST /ferry/v1/gc */
export interface GcState {
  running: boolean;
  last: null | {
    startedAt: number;
    finishedAt: number;
    /** Why the run failed (no paths or stack). */
    error?: string;
    report?: GcReportView;
  };
}
