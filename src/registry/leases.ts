/**
 * Mutual exclusion that holds across processes and replicas, built on the
 * metadata store's leases (MetaStore.acquireLease). Process memory cannot do
 * this: with `--workers N` two PATCHes to one upload session land in two
 * processes, and a blob commit in one races garbage collection in another.
 *
 * A held lease is renewed in the background while the work runs. If renewal
 * fails for longer than the lease lives (the holder was frozen, the database
 * was unreachable), another process may have taken it: the work's `signal`
 * aborts so that it stops writing, and it must not commit anything.
 */
import { randomUUID } from "node:crypto";
import { hostname } from "node:os";
import type { MetaStore } from "../metadata/meta-store.js";

export interface LeaseOptions {
  /** How long a lease lives without renewal (a crashed holder blocks others at most this long). */
  ttlMs: number;
  /** How long to wait for a busy lease before giving up. */
  waitMs: number;
  /** Stops waiting (rejecting with its reason): the client that wanted the lease went away. */
  signal?: AbortSignal;
}

export interface HeldLease {
  /** Aborted when the lease was lost; the holder must stop and commit nothing. */
  readonly signal: AbortSignal;
  /** Confirms (and extends) the lease right before an irreversible step. */
  confirm(): Promise<boolean>;
  /**
   * True when the previous holder never released the key (it crashed, or was
   * frozen past the lease): it may still hold open files and write to them
   * if it wakes up, so the new holder must not share its resources.
   */
  readonly tookOver: boolean;
}

export class LeaseBusyError extends Error {
  constructor(
    readonly key: string,
    /** True when the lease could not be taken at all (as opposed to lost while held). */
    readonly acquiring = false,
  ) {
    super(acquiring ? `${key} is held by another request` : `${key} was lost while held`);
  }
}

/** Serializes work per key: KeyedMutex within a process, LeaseLocks.mutex across processes. */
export interface Mutex {
  run<T>(key: string, work: () => Promise<T>): Promise<T>;
}

const HOST = hostname();
const HOLDER_PREFIX = `${HOST}:${process.pid}:`;

/** Whether `holder` names a process of this machine that no longer exists. */
function holderIsDeadHere(holder: string): boolean {
  const match = /^(.*):(\d+):[0-9a-f-]{36}$/.exec(holder);
  if (!match || match[1] !== HOST) return false;
  const pid = Number(match[2]);
  if (pid === process.pid) return false;
  try {
    process.kill(pid, 0);
    return false;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "ESRCH";
  }
}

export class LeaseLocks {
  constructor(
    private readonly meta: Pick<MetaStore, "acquireLease" | "renewLease" | "releaseLease" | "leaseHolder">,
    private readonly defaults: LeaseOptions = { ttlMs: 30_000, waitMs: 30_000 },
  ) {}

  /** Runs `work` holding `key`; waits up to waitMs for it, then rejects with LeaseBusyError. */
  async run<T>(key: string, work: (lease: HeldLease) => Promise<T>, options: Partial<LeaseOptions> = {}): Promise<T> {
    const { ttlMs, waitMs, signal } = { ...this.defaults, ...options };
    const holder = HOLDER_PREFIX + randomUUID();
    const tookOver = await this.acquire(key, holder, ttlMs, waitMs, signal);
    const controller = new AbortController();
    let expiresAt = Date.now() + ttlMs;
    let renewing = false;
    const renew = async () => {
      if (renewing || controller.signal.aborted) return;
      renewing = true;
      try {
        if (await this.meta.renewLease(key, holder, ttlMs)) expiresAt = Date.now() + ttlMs;
        else controller.abort(new LeaseBusyError(key));
      } catch {
        // The store did not answer: the lease is ours until it would expire.
        if (Date.now() >= expiresAt) controller.abort(new LeaseBusyError(key));
      } finally {
        renewing = false;
      }
    };
    const timer = setInterval(() => void renew(), Math.max(Math.floor(ttlMs / 3), 50));
    timer.unref();
    const lease: HeldLease = {
      tookOver,
      signal: controller.signal,
      confirm: async () => {
        if (controller.signal.aborted) return false;
        const held = await this.meta.renewLease(key, holder, ttlMs);
        if (held) expiresAt = Date.now() + ttlMs;
        else controller.abort(new LeaseBusyError(key));
        return held;
      },
    };
    try {
      return await work(lease);
    } finally {
      clearInterval(timer);
      await this.meta.releaseLease(key, holder).catch(() => undefined);
    }
  }

  /** Like run with no waiting; resolves undefined when the lease is busy. */
  async tryRun<T>(key: string, work: (lease: HeldLease) => Promise<T>): Promise<T | undefined> {
    try {
      return await this.run(key, work, { waitMs: 0 });
    } catch (error) {
      if (error instanceof LeaseBusyError && error.acquiring && error.key === key) return undefined;
      throw error;
    }
  }

  /**
   * A Mutex over leases named `prefix + key`, queued in-process first so that
   * waiters in one process do not poll the store against each other.
   */
  mutex(prefix: string, local: Mutex): Mutex {
    return {
      run: <T>(key: string, work: () => Promise<T>) => local.run(key, () => this.run(prefix + key, () => work())),
    };
  }

  /** Takes the lease; resolves whether it was taken over from a holder that never released it. */
  private async acquire(key: string, holder: string, ttlMs: number, waitMs: number, signal: AbortSignal | undefined): Promise<boolean> {
    const deadline = Date.now() + waitMs;
    let pause = 2;
    let checkedHolder = false;
    for (;;) {
      signal?.throwIfAborted();
      const previous = await this.meta.leaseHolder(key);
      if (await this.meta.acquireLease(key, holder, ttlMs)) return previous !== null && previous.holder !== holder;
      if (!checkedHolder) {
        // A holder on this machine whose process is gone (kill -9, a worker
        // the supervisor restarted) will never write again: break its lease
        // now instead of making the client wait for it to expire.
        checkedHolder = true;
        const current = await this.meta.leaseHolder(key);
        if (current !== null && holderIsDeadHere(current.holder)) {
          await this.meta.releaseLease(key, current.holder);
          continue;
        }
      }
      if (Date.now() + pause > deadline) throw new LeaseBusyError(key, true);
      await new Promise((resolve) => setTimeout(resolve, pause));
      pause = Math.min(pause * 2, 50);
    }
  }
}
