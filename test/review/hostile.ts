/** An upstream registry on loopback that answers as a test scripts it (a hostile one). */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

type After = { after(fn: () => Promise<void>): void };

export /** An upstream answering every request with `handle`. */
async function hostileUpstream(t: After, handle: (req: IncomingMessage, res: ServerResponse, base: string) => void): Promise<string> {
  let base = "";
  const server = createServer((req, res) => handle(req, res, base));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  t.after(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  );
  return base;
}

