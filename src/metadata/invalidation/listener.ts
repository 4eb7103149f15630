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
 * Announcements are sent here too, after the writing transaction committed
 * (publish): a transaction that runs NOTIFY takes PostgreSQL's global notify
 * lock at commit and holds it through its WAL flush, so NOTIFY inside the data
 * transactions made every replica's writes commit one fsync at a time. Sent on
 * this connection (synchronous_commit off, the announcements of one event-loop
 * turn in one statement), the lock is held for microseconds. The data
 * transaction writes a row to `metadata_changes` instead; the heartbeat reads
 * the rows of transactions that were not finished at the previous heartbeat
 * (by xid), so an announcement a writer never sent (it died between its commit
 * and its NOTIFY, or its connection broke) is applied here within about one
 * heartbeat.
 *
 * A writer waits (bounded) before acknowledging until every replica that
 * was listening when it announced has dropped the entries: each
 * listener, having applied an announcement from another replica, answers it
 * with an acknowledgement NOTIFY naming its id, and the writer knows whose
 * answers to wait for from pg_stat_activity (each listener's backend carries
 * `application_name = 'ferry-listen <channel>'`, set once it listens; its own
 * listener is not waited for: the writer drops its own entries itself).
 */
import pg from "pg";
import { ACK_PREFIX, ALL_SCOPES, CHANNEL_SQL, decodePayload, encodeAcks } from "./changes.js";

/** Change-log rows older than this are deleted (each replica tries about once a minute). */
export const CHANGE_RETENTION_MS = 120_000;
/**
 * A heartbeat this long after the previous one (an event loop stopped, a
 * machine suspended) may have missed rows deleted meanwhile: everything is
 * dropped instead of trusting the log.
 */
const POLL_GAP_MS = 60_000;
const PRUNE_EVERY = 60;

export interface ListenerOptions {
  clientConfig: pg.ClientConfig;
  /** A change announced by any replica (this one included). */
  onChange(scopes: string[]): void;
  /** Called when the connection goes live (LISTEN done) and when it stops being live. */
  onLiveChange(live: boolean): void;
  /**
   * Heartbeat period (each heartbeat also reads the change log); a heartbeat
   * unanswered for `heartbeatTimeoutMs` ends the connection.
   */
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
  /** Changes found in the change log whose announcement had not arrived (a writer that died after its commit, or a slow NOTIFY). */
  polledChanges: number;
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
  private readonly state: ListenerStatus = { live: false, since: Date.now(), reconnects: 0, received: 0, unconfirmedWrites: 0, polledChanges: 0 };
  /** Announcements to send in this event-loop turn's statement (publish). */
  private outbox: Array<{ payload: string; done(listeners: number[] | undefined): void }> = [];
  /**
   * Change-log polling: rows of transactions with xid >= `lastXmin` (the oldest
   * transaction still running at the previous poll) may not have been seen yet.
   * `seen`: announcement ids applied, with the poll generation current when they were.
   */
  private lastXmin = 0;
  private lastPollAt = 0;
  private pollGeneration = 0;
  private seen = new Map<string, number>();
  /** The last query sent on the listening connection (send). */
  private sending: Promise<unknown> = Promise.resolve();
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
    this.sending = Promise.resolve();
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
      this.seen.set(id, this.pollGeneration);
      if (this.pending.has(id)) this.confirm(id, backendPid(client));
      else this.acknowledge(client, id);
    });
    try {
      await client.connect();
      // Every transaction below xmin ended before this replica goes live (and drops everything):
      // the change log matters from xmin on.
      const row = (await client.query<{ channel: string; xmin: number }>(`select ${CHANNEL_SQL} as channel, txid_snapshot_xmin(txid_current_snapshot())::int8 as xmin`)).rows[0]!;
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
      this.lastXmin = row.xmin;
      this.lastPollAt = Date.now();
      this.seen.clear();
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

  /**
   * Sends an announcement (its transaction has committed): with every other
   * announcement of this event-loop turn in one autocommit statement on this
   * connection (synchronous_commit off: no fsync, so the notify lock is held
   * for microseconds, not through a WAL flush). Resolves with the listener
   * backends listening at that moment (each must acknowledge), or undefined
   * when it could not be sent (then the other replicas' polls find the change).
   */
  publish(payload: string): Promise<number[] | undefined> {
    const client = this.client;
    if (!this.live || !client) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      this.outbox.push({ payload, done: resolve });
      if (this.outbox.length > 1) return;
      setImmediate(() => {
        const batch = this.outbox;
        this.outbox = [];
        if (client !== this.client || !this.live) return batch.forEach((entry) => entry.done(undefined));
        this.send<{ listeners: number[] }>(
          client,
          `select pg_notify($1, p), array(select pid from pg_stat_activity
                                            where datname = current_database() and application_name = $2) as listeners
             from unnest($3::text[]) as p`,
          [this.channel, `ferry-listen ${this.channel}`, batch.map((entry) => entry.payload)],
        ).then(
          (result) => batch.forEach((entry) => entry.done(result.rows[0]?.listeners ?? [])),
          (error: Error) => {
            batch.forEach((entry) => entry.done(undefined));
            this.lost(client, error.message);
          },
        );
      });
    });
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
        this.send(client, "select pg_notify($1, $2)", [this.channel, payload]).catch((error: Error) => this.lost(client, error.message));
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
   * would otherwise leave it "live" while announcements go nowhere. It reads
   * the change log too (poll).
   */
  private heartbeat(): void {
    const client = this.client;
    if (!this.live || !client || this.heartbeatInFlight) return;
    this.heartbeatInFlight = true;
    const generation = ++this.pollGeneration;
    const timeoutMs = this.options.heartbeatTimeoutMs ?? 1_500;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`heartbeat unanswered after ${timeoutMs} ms`)), timeoutMs);
    });
    const poll = this.send<{ xmin: number; changes: Array<[number, string]> }>(
      client,
      `select txid_snapshot_xmin(txid_current_snapshot())::int8 as xmin,
              (select coalesce(json_agg(json_build_array(xid, payload) order by id), '[]'::json)
                 from metadata_changes where xid >= $1) as changes`,
      [this.lastXmin],
    );
    Promise.race([poll, timeout]).then(
      (result) => {
        clearTimeout(timer);
        if (client !== this.client) return;
        this.heartbeatInFlight = false;
        const row = result.rows[0];
        if (row) this.applyPoll(generation, row.xmin, row.changes);
        if (generation % PRUNE_EVERY === 0) this.prune(client);
      },
      (error: Error) => {
        clearTimeout(timer);
        this.lost(client, error.message);
      },
    );
  }

  /**
   * Applies the change-log rows of a poll: any whose announcement has not
   * arrived (a writer that died between its commit and its NOTIFY, or a
   * NOTIFY still on its way: dropping twice is harmless).
   */
  private applyPoll(generation: number, xmin: number, changes: ReadonlyArray<[number, string]>): void {
    const now = Date.now();
    const gap = now - this.lastPollAt > POLL_GAP_MS;
    this.lastPollAt = now;
    const missed = new Set<string>();
    const keep = new Map<string, number>();
    for (const [xid, payload] of changes) {
      const { id, scopes } = decodePayload(payload);
      if (!this.seen.has(id)) {
        this.state.polledChanges++;
        for (const scope of scopes) missed.add(scope);
      }
      // Still at or above the next poll's bound: it will be read again and must count as seen.
      if (xid >= xmin) keep.set(id, generation);
    }
    // Announcements applied while this poll was on its way may belong to rows it could not see yet.
    for (const [id, at] of this.seen) if (at >= generation) keep.set(id, at);
    this.seen = keep;
    this.lastXmin = xmin;
    if (gap) this.options.onChange([ALL_SCOPES]);
    else if (missed.size > 0) this.options.onChange(missed.has(ALL_SCOPES) ? [ALL_SCOPES] : [...missed]);
  }

  /**
   * One query at a time on the listening connection (pg would queue concurrent
   * ones itself, but calling query() while one runs is deprecated).
   */
  private send<R extends pg.QueryResultRow>(client: pg.Client, text: string, values?: unknown[]): Promise<pg.QueryResult<R>> {
    const result = this.sending.then(() => client.query<R>(text, values));
    this.sending = result.catch(() => {});
    return result;
  }

  /** Deletes change-log rows no live replica needs any more (synchronous_commit is off here: no fsync). */
  private prune(client: pg.Client): void {
    this.send(client, "delete from metadata_changes where created_at < (extract(epoch from clock_timestamp()) * 1000)::int8 - $1", [CHANGE_RETENTION_MS])
      .catch(() => {});
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
