import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FilesystemBlobStore } from "../../src/storage/filesystem.js";
import { blobStoreSuite } from "./blob-store-suite.js";

for (const fsync of [true, false]) {
  blobStoreSuite(`filesystem (fsync ${fsync})`, async () => {
    const root = await mkdtemp(join(tmpdir(), "ferry-fs-"));
    const store = new FilesystemBlobStore({ root, fsync });
    await store.init();
    return { store, cleanup: () => rm(root, { recursive: true, force: true }) };
  });
}
