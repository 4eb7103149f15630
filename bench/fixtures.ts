// The data every registry is loaded with before the workloads run. Content is
// generated once and sent byte-for-byte identically to each registry.
import {
  OCI_CONFIG,
  OCI_LAYER,
  descriptor,
  imageConfig,
  imageManifest,
  randomBlob,
  sha256,
  type BlobData,
} from './content.js';
import { forEachIndex } from './concurrency.js';
import { MiB, type Profile } from './options.js';
import { mountOrPush, pushMonolithic, putManifest } from './oci.js';
import type { Registry } from './registry.js';

export interface ImageFixture {
  repo: string;
  tag: string;
  config: BlobData;
  layers: BlobData[];
  manifest: Buffer;
  digest: string;
}

export interface FixturePlan {
  /** Small image whose manifest the manifest GET/HEAD workloads hammer. */
  image: ImageFixture;
  /** Image whose layers are the blobs pulled by the pull and mix workloads (sizes ascending). */
  pull: ImageFixture;
  /** One repository with `count` tags, each a distinct manifest. */
  tags: { repo: string; count: number; names: string[]; manifests: Buffer[] };
  /** `count` repositories with one small image each. */
  catalog: { repos: string[]; manifest: Buffer };
  /** Repositories the push and mix workloads write to. */
  pushRepo: string;
  mixRepo: string;
}

function image(repo: string, tag: string, layers: BlobData[], annotations?: Record<string, string>): ImageFixture {
  const config = imageConfig(layers, repo);
  const manifest = imageManifest(
    descriptor(config, OCI_CONFIG),
    layers.map((l) => descriptor(l, OCI_LAYER)),
    annotations,
  );
  return { repo, tag, config, layers, manifest, digest: sha256([manifest]) };
}

export function planFixtures(profile: Profile): FixturePlan {
  // Three small layers and an annotation give a manifest of typical size (~1 KB).
  const img = image('bench/manifest', 'latest', [randomBlob(4096), randomBlob(8192), randomBlob(2048)], {
    'org.opencontainers.image.title': 'ferry benchmark image',
    'org.opencontainers.image.source': 'https://example.invalid/ferry/bench',
  });

  // The mix workload always pulls the 1 MiB blob, so it exists even if no pull size asks for it.
  const pullSizes = [...new Set([...profile.pullSizes, 1 * MiB])].sort((a, b) => a - b);
  const pull = image('bench/pull', 'blobs', pullSizes.map((s) => randomBlob(s)));

  const tagLayer = img.layers[0];
  const tagConfig = img.config;
  const names = Array.from({ length: profile.listCount }, (_, i) => `v${String(i).padStart(5, '0')}`);
  // Distinct manifests per tag (annotation differs) so a registry cannot store
  // one manifest and 10k pointers to it and look better than it would in use.
  const manifests = names.map((name) =>
    imageManifest(descriptor(tagConfig, OCI_CONFIG), [descriptor(tagLayer, OCI_LAYER)], {
      'org.opencontainers.image.version': name,
    }),
  );

  const repos = Array.from({ length: profile.listCount }, (_, i) => `bench/catalog/r${String(i).padStart(5, '0')}`);

  return {
    image: img,
    pull,
    tags: { repo: 'bench/tags', count: profile.listCount, names, manifests },
    catalog: { repos, manifest: imageManifest(descriptor(tagConfig, OCI_CONFIG), [descriptor(tagLayer, OCI_LAYER)]) },
    pushRepo: 'bench/push',
    mixRepo: 'bench/mix',
  };
}

async function pushImage(reg: Registry, fx: ImageFixture): Promise<void> {
  for (const blob of [fx.config, ...fx.layers]) await pushMonolithic(reg.http, fx.repo, blob);
  const digest = await putManifest(reg.http, fx.repo, fx.tag, fx.manifest);
  if (digest !== fx.digest) throw new Error(`${reg.name}: manifest digest ${digest}, expected ${fx.digest}`);
}

/** Images needed by the manifest, pull and mix workloads. Untimed. */
export async function seedBase(reg: Registry, plan: FixturePlan): Promise<void> {
  await pushImage(reg, plan.image);
  await pushImage(reg, plan.pull);
}

/** Loads the tag repository; returns seconds spent on the manifest PUTs alone. */
export async function loadTags(reg: Registry, plan: FixturePlan, concurrency: number): Promise<number> {
  const { repo, names, manifests } = plan.tags;
  // Blobs referenced by every tag: untimed, the load measures manifest PUTs.
  await mountOrPush(reg.http, repo, plan.image.repo, plan.image.config);
  await mountOrPush(reg.http, repo, plan.image.repo, plan.image.layers[0]);
  const start = performance.now();
  await forEachIndex(names.length, concurrency, async (i) => {
    await putManifest(reg.http, repo, names[i], manifests[i]);
  });
  return (performance.now() - start) / 1000;
}

/** Creates the catalog repositories (2 blob mounts + 1 manifest PUT each); returns seconds. */
export async function loadCatalog(reg: Registry, plan: FixturePlan, concurrency: number): Promise<number> {
  const { repos, manifest } = plan.catalog;
  const from = plan.tags.repo;
  const start = performance.now();
  await forEachIndex(repos.length, concurrency, async (i) => {
    await mountOrPush(reg.http, repos[i], from, plan.image.config);
    await mountOrPush(reg.http, repos[i], from, plan.image.layers[0]);
    await putManifest(reg.http, repos[i], 'latest', manifest);
  });
  return (performance.now() - start) / 1000;
}
