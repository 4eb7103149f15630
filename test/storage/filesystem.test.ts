import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FilesystemBlobStore } from "../../src/storage/filesystem.js";
import { blobStoreSuite } from "./blob-store-suite.js";

for (const [fsync, directIo] of [[true, true], [true, false], [false, true]]) {
  blobStoreSuite(`filesystem (fsync ${fsync}, directIo ${directIo})`, async () => {
    const root = await mkdtemp(join(tmpdir(), "ferry-fs-"));
    const store = new FilesystemBlobStore({ root, fsync, directIo });
    await store.init();
    return { store, cleanup: () => rm(root, { recursive: true, force: true }) };
  }, { syncUpload: true });
}
