/**
 * The replica's LISTEN connection (one per process, outside the pool): it
 * receives every replica's change announcements (changes.ts) and says
 * whether it is live, i.e. connected, listening, and answering a heartbeat.
 *
 * While live, the store serves change tokens from memory (scoped-tokens.ts);
 * the moment it is not (start-up, PostgreSQL restart, pg_terminate_backend
 * of its backend, a network cut found by the heartbeat), the store falls back
 * to reading the WAL position, which is always correct. It reconnects with
 * backoff; going live again drops every cached entry, since announcements
 * sent while it was away are lost.
 *
 * A writer waits (bounded) before acknowledging until every replica that
 * was listening when its transaction committed has dropped the entries: each
 * listener, having applied an announcement from another replica, answers it
 * with an acknowledgement NOTIFY naming its id, and the writer knows whose
 * answers to wait for from pg_stat_activity (each listener's backend carries
 * `application_name = 'ferry-listen <channel>'`, set once it listens; its own
 * listener is not waited for: the writer drops its own entries itself).
 */
import pg from "pg";
import { ACK_PREFIX, CHANNEL_SQL, decodePayload, encodeAcks } from "./changes.js";

export interface ListenerOptions {
  clientConfig: pg.ClientConfig;
  /** A change announced by any replica (this one included). */
  onChange(scopes: string[]): void;
  /** Called when the connection goes live (LISTEN done) and when it stops being live. */
  onLiveChange(live: boolean): void;
  /** Heartbeat period; a heartbeat unanswered for `heartbeatTimeoutMs` ends the connection. */
  heartbeatMs?: number;
  heartbeatTimeoutMs?: number;
  /** Reconnect backoff bounds. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

export interface ListenerStatus {
  live: boolean;
  /** Since when (epoch ms) it is live, or since when it is not. */
  since: number;
  /** Times it went live after the first time. */
  reconnects: number;
  /** Announcements received (any replica's). */
  received: number;
  /** Writes acknowledged without their own announcement back within the bound (see waitFor). */
  unconfirmedWrites: number;
  /** Why it last stopped being live, if it did. */
  lastError?: string;
}

interface Pending {
  promise: Promise<boolean>;
  resolve(confirmed: boolean): void;
  /** Listener backends (pids) whose confirmation is still missing; undefined until the writer learnt who listens. */
  waiting: Set<number> | undefined;
  /** Confirmations that came before that. */
  early: Set<number>;
}

export class ChangeListener {
  private client: pg.Client | undefined;
  private channel = "";
  private live = false;
  private closed = false;
  private backoff: number;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private heartbeatInFlight = false;
  /** Own announcements sent and not yet confirmed by every listener, by id. */
  private readonly pending = new Map<string, Pending>();
  /** Other replicas' announcement ids applied here and not yet acknowledged (sent together, once per event-loop turn). */
  private acks: string[] = [];
  private ackScheduled = false;
  /**
   * Listener backends that let a wait run out: not waited for again until they
   * acknowledge something (a frozen replica, or a host gone without a reset that
   * PostgreSQL has not noticed yet, would otherwise cost every write the whole bound).
   */
  private readonly suspects = new Set<number>();
  private readonly state: ListenerStatus = { live: false, since: Date.now(), reconnects: 0, received: 0, unconfirmedWrites: 0 };
  private wentLiveBefore = false;

  constructor(private readonly options: ListenerOptions) {
    this.backoff = options.minBackoffMs ?? 100;
  }

  /** Starts connecting; resolves once the first attempt has ended (live or not): start-up is not held up by it. */
  async start(): Promise<void> {
    await this.connect();
    this.heartbeatTimer = setInterval(() => this.heartbeat(), this.options.heartbeatMs ?? 1_000);
    this.heartbeatTimer.unref();
  }

  get isLive(): boolean {
    return this.live;
  }

  status(): ListenerStatus {
    return { ...this.state };
  }

  /**
   * Registers an announcement about to be sent (before its transaction commits:
   * it may come back before the writer looks for it).
   */
  expect(id: string): boolean {
    if (!this.live) return false;
    let resolve!: (confirmed: boolean) => void;
    const promise = new Promise<boolean>((res) => (resolve = res));
    this.pending.set(id, { promise, resolve, waiting: undefined, early: new Set() });
    return true;
  }

  /** The listener backends (pids) listening when announcement `id` was sent: each must confirm it. */
  members(id: string, pids: readonly number[]): void {
    const pending = this.pending.get(id);
    if (!pending) return;
    for (const suspect of this.suspects) if (!pids.includes(suspect)) this.suspects.delete(suspect);
    // This replica's own entries were dropped by the writer itself: only the other replicas' acknowledgements matter.
    const own = this.client ? backendPid(this.client) : undefined;
    pending.waiting = new Set(pids.filter((pid) => pid !== own && !pending.early.has(pid) && !this.suspects.has(pid)));
    if (pending.waiting.size === 0) pending.resolve(true);
  }

  private confirm(id: string, pid: number): void {
    this.suspects.delete(pid);
    const pending = this.pending.get(id);
    if (!pending) return;
    if (pending.waiting === undefined) {
      pending.early.add(pid);
      return;
    }
    pending.waiting.delete(pid);
    if (pending.waiting.size === 0) pending.resolve(true);
  }

  /**
   * Until every listener named by `members` confirmed announcement `id`, at
   * most `timeoutMs`; true when they did. Not live (or not expected): false at once.
   */
  async waitFor(id: string, timeoutMs: number): Promise<boolean> {
    const wait = this.pending.get(id)?.promise;
    // Not expected: announced while not live with nobody else listening (the store handles the other case).
    if (wait === undefined) return false;
    let timer: NodeJS.Timeout | undefined;
    const confirmed = await Promise.race([wait, new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)))]);
    clearTimeout(timer);
    if (!confirmed) {
      this.state.unconfirmedWrites++;
      for (const pid of this.pending.get(id)?.waiting ?? []) this.suspects.add(pid);
    }
    this.forget(id);
    return confirmed;
  }

  /** A write acknowledged without confirmations (the store waited the bound itself). */
  countUnconfirmed(): void {
    this.state.unconfirmedWrites++;
  }

  /** The announcement's transaction failed: nothing to wait for. */
  forget(id: string): void {
    this.pending.delete(id);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.heartbeatTimer);
    clearTimeout(this.reconnectTimer);
    const client = this.client;
    this.setDown("closed");
    if (client) await client.end().catch(() => {});
  }

  private async connect(): Promise<void> {
    if (this.closed) return;
    const client = new pg.Client(this.options.clientConfig);
    this.client = client;
    client.on("error", (error: Error) => this.lost(client, error.message));
    client.on("end", () => this.lost(client, "connection ended"));
    client.on("notification", (message) => {
      if (client !== this.client || message.channel !== this.channel) return;
      const payload = message.payload ?? "";
      if (payload.startsWith(ACK_PREFIX)) {
        for (const id of payload.slice(ACK_PREFIX.length).split("\n")) this.confirm(id, message.processId);
        return;
      }
      this.state.received++;
      const { id, scopes } = decodePayload(payload);
      this.options.onChange(scopes);
      if (this.pending.has(id)) this.confirm(id, backendPid(client));
      else this.acknowledge(client, id);
    });
    try {
      await client.connect();
      const row = (await client.query<{ channel: string }>(`select ${CHANNEL_SQL} as channel`)).rows[0]!;
      // Acknowledgements are NOTIFYs of their own: they need no durable commit.
      await client.query("set synchronous_commit = off");
      // A replica host gone without a reset: its backend notices within ~30 s instead of the kernel's 2 hours.
      for (const setting of ["tcp_keepalives_idle = 10", "tcp_keepalives_interval = 5", "tcp_keepalives_count = 3"]) await client.query(`set ${setting}`);
      await client.query(`listen "${row.channel}"`);
      // Set once listening: writers wait for the acknowledgement of every backend named so (and
      // an operator can tell which backend listens for which schema).
      await client.query(`set application_name = 'ferry-listen ${row.channel}'`);
      if (client !== this.client || this.closed) return;
      this.channel = row.channel;
      this.backoff = this.options.minBackoffMs ?? 100;
      this.live = true;
      if (this.wentLiveBefore) this.state.reconnects++;
      this.wentLiveBefore = true;
      this.state.live = true;
      this.state.since = Date.now();
      this.options.onLiveChange(true);
    } catch (error) {
      this.lost(client, (error as Error).message);
    }
  }

  /** Acknowledges another replica's announcement once this turn's notifications are applied (one NOTIFY for all of them). */
  private acknowledge(client: pg.Client, id: string): void {
    this.acks.push(id);
    if (this.ackScheduled) return;
    this.ackScheduled = true;
    setImmediate(() => {
      this.ackScheduled = false;
      const ids = this.acks;
      this.acks = [];
      if (client !== this.client || !this.live) return;
      for (const payload of encodeAcks(ids)) {
        client.query("select pg_notify($1, $2)", [this.channel, payload]).catch((error: Error) => this.lost(client, error.message));
      }
    });
  }

  /** The connection `client` failed or ended: not live any more; try again after the backoff. */
  private lost(client: pg.Client, reason: string): void {
    if (client !== this.client) return;
    this.client = undefined;
    this.setDown(reason);
    // A connection cut without a reset may never answer end(): drop the socket.
    destroySocket(client);
    client.end().catch(() => {});
    if (this.closed) return;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => void this.connect(), this.backoff);
    this.reconnectTimer.unref();
    this.backoff = Math.min(this.backoff * 2, this.options.maxBackoffMs ?? 5_000);
  }

  private setDown(reason: string): void {
    const wasLive = this.live;
    this.live = false;
    this.heartbeatInFlight = false;
    // Writers waiting for acknowledgements cannot get them on this connection any more: their
    // waits run to the bound (the other replicas are still applying the announcement meanwhile).
    if (!wasLive) return;
    this.state.live = false;
    this.state.since = Date.now();
    this.state.lastError = reason;
    this.options.onLiveChange(false);
  }

  /**
   * A query on the listening connection: a network cut that sends no reset
   * would otherwise leave it "live" while announcements go nowhere.
   */
  private heartbeat(): void {
    const client = this.client;
    if (!this.live || !client || this.heartbeatInFlight) return;
    this.heartbeatInFlight = true;
    const timeoutMs = this.options.heartbeatTimeoutMs ?? 1_500;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`heartbeat unanswered after ${timeoutMs} ms`)), timeoutMs);
    });
    Promise.race([client.query("select 1"), timeout]).then(
      () => {
        clearTimeout(timer);
        if (client === this.client) this.heartbeatInFlight = false;
      },
      (error: Error) => {
        clearTimeout(timer);
        this.lost(client, error.message);
      },
    );
  }
}

/** The backend's pid (BackendKeyData), which pg keeps but does not type. */
function backendPid(client: pg.Client): number {
  return (client as unknown as { processID: number }).processID;
}

function destroySocket(client: pg.Client): void {
  const connection = (client as unknown as { connection?: { stream?: { destroy?: () => void } } }).connection;
  connection?.stream?.destroy?.();
}
