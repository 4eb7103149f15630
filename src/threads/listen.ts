/**
 * The listening sockets of serving threads: one per thread, all on the same
 * port with SO_REUSEPORT (the native addon makes them; Node 20 cannot), so
 * the kernel spreads new connections over the threads by their addresses.
 * One socket shared by every thread left the choice to whichever event loop
 * woke first: of 32 connections opened at once, one thread took all or
 * nearly all (docs/benchmarks-history.md, "Speed round 5").
 *
 * A thread opens its socket only once its server is ready to accept
 * (startRegistry's `listenSocket`): a socket is handed its share of new
 * connections from the moment it listens, and a thread still starting (its
 * S3 start-up check waiting on a silent store, say) would leave them in its
 * backlog unanswered (docs/benchmarks-history.md, "Speed round 6").
 */
import { isIP } from "node:net";
import { lookup } from "node:dns/promises";
import { listenReusePort } from "../native/addon.js";
import { listenError } from "../server.js";

export interface ThreadSocket {
  fd: number;
  /** The numeric address it is bound to ("" = every interface), for the other threads' sockets. */
  address: string;
}

/**
 * A listening socket on `host`:`port` for one thread, or why threads cannot
 * have one. `exclusive` (the first socket) refuses a port anything else
 * listens on, with the message a single-threaded Ferry gives.
 */
export async function threadSocket(host: string, port: number, exclusive: boolean): Promise<ThreadSocket | { reason: string }> {
  const address = host === "" || isIP(host) !== 0 ? host : (await lookup(host)).address;
  const result = listenReusePort(address, port, exclusive);
  if ("reason" in result) return result;
  if ("error" in result) throw listenError(result.error, host, port);
  return { fd: result.fd, address };
}

/** threadSocket for startRegistry's `listenSocket`: the descriptor, or an error (threads were checked to be possible). */
export async function openThreadSocket(host: string, port: number, exclusive: boolean, opened?: (socket: ThreadSocket) => void): Promise<number> {
  const socket = await threadSocket(host, port, exclusive);
  if ("reason" in socket) throw new Error(socket.reason);
  opened?.(socket);
  return socket.fd;
}
