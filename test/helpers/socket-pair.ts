/**
 * A connected loopback TCP pair whose accepted side Node never reads (paused
 * on connect): what the native receive tests hand the addon's threads, by
 * descriptor, while `client` plays the HTTP client.
 */
import { createServer, connect, type Server, type Socket } from "node:net";

export interface SocketPair {
  server: Socket;
  client: Socket;
  listener: Server;
  /** The accepted socket's descriptor. */
  fd: number;
  close(): void;
}

export async function socketPair(): Promise<SocketPair> {
  const listener = createServer({ pauseOnConnect: true });
  await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", resolve));
  const { port } = listener.address() as { port: number };
  const accepted = new Promise<Socket>((resolve) => listener.once("connection", resolve));
  const client = connect(port, "127.0.0.1");
  await new Promise((resolve) => client.once("connect", resolve));
  const server = await accepted;
  const fd = (server as unknown as { _handle: { fd: number } })._handle.fd;
  return {
    server,
    client,
    listener,
    fd,
    close() {
      client.destroy();
      server.destroy();
      listener.close();
    },
  };
}
