/**
 * Queues events for every endpoint that subscribed to them and delivers them
 * (docs/notifications.md):
 *
 * - `emit` adds one row per interested endpoint to a buffer that is written
 *   to the durable queue (queue.ts) in one transaction right after the
 *   current tick: a request never waits for a webhook, a queue that cannot
 *   be written costs a warning, never the request, and many events (a burst
 *   of pulls) share one write. A transaction per event halved manifest GET
 *   throughput with pull events on.
 * - Every process runs a pump per endpoint: it claims the oldest due event of
 *   up to `concurrency` repositories at a time (with up to `maxBatch - 1`
 *   events of the same repository behind it), POSTs them as one envelope,
 *   and removes them on a 2xx answer. A failure schedules a retry
 *   after `backoff`, doubling up to `maxBackoff`; `maxAttempts` / `maxAge`
 *   give an event up. Delivery is at least once: an answer lost on the way
 *   back, or a shutdown mid-request, sends the event again (receivers
 *   de-duplicate by event id).
 * - Pumps wake at once for events this process queued and every
 *   `pollInterval` for the rest (other workers' events, due retries).
 */
import { hostname } from "node:os";
import { randomBytes, randomUUID } from "node:crypto";
import type { Logger } from "pino";
import type { EndpointConfig, EventAction, NotificationsConfig } from "./config.js";
import { DEFAULT_EVENTS } from "./config.js";
import { completeEvent, orderingKey, type EventInput, type EventSink } from "./events.js";
import type { ClaimedDelivery, EndpointCounters, NotificationQueue, QueuedEvent } from "./queue.js";
import { EndpointClient, type DeliveryOutcome } from "./deliver.js";

/** How long a claim outlives a delivery's deadline (twice its timeout, deliver.ts) before another process may take the events over. */
const CLAIM_MARGIN_MS = 5_000;

export interface EndpointStatus extends Omit<EndpointCounters, "endpoint"> {
  name: string;
  /** Scheme, host and path only: credentials or tokens in the userinfo or query stay out of the status page. */
  url: string;
  events: EventAction[];
}

interface Pump {
  config: EndpointConfig;
  events: Set<EventAction>;
  client: Sender;
  inFlight: Map<number, Promise<void>>;
  /** A claim pass is running (claims are serialised per process and endpoint). */
  claiming: boolean;
  /** Something may be due again: run another claim pass when the current one ends. */
  again: boolean;
}

/** Something that sends one envelope body to one endpoint (EndpointClient; tests may replace it). */
export type Sender = Pick<EndpointClient, "send" | "close" | "checkUrl">;

export interface NotifierOptions {
  config: NotificationsConfig;
  queue: NotificationQueue;
  logger: Logger;
  /** Claim holder name; default host/pid/random. */
  holder?: string;
  /** Builds the client for an endpoint (tests replace address judgement). */
  client?: (endpoint: EndpointConfig) => Sender;
}

export class Notifier implements EventSink {
  readonly holder: string;
  /** `source` of every event: this registry's host:port (set once it listens) and an id per process start. */
  readonly source = { addr: `${hostname()}`, instanceID: randomUUID() };
  private readonly pumps: Pump[];
  private readonly wanted = new Set<EventAction>();
  private timer: NodeJS.Timeout | undefined;
  private stopping = false;
  private buffered: Array<{ row: QueuedEvent; pump: Pump }> = [];
  private flushScheduled = false;

  constructor(private readonly options: NotifierOptions) {
    this.holder = options.holder ?? `${hostname()}/${process.pid}/${randomBytes(4).toString("hex")}`;
    const makeClient = options.client ?? ((endpoint: EndpointConfig) => new EndpointClient(endpoint));
    this.pumps = options.config.endpoints.map((config) => {
      const events = new Set(config.events ?? DEFAULT_EVENTS);
      for (const action of events) this.wanted.add(action);
      return { config, events, client: makeClient(config), inFlight: new Map(), claiming: false, again: false };
    });
  }

  get enabled(): boolean {
    return this.pumps.length > 0;
  }

  /**
   * Refuses endpoint URLs whose address rules forbid them outright (an IP
   * literal that is loopback, private, ...), so a wrong config stops start-up
   * instead of failing every delivery.
   */
  checkEndpoints(): void {
    this.pumps.forEach((pump, index) => {
      try {
        pump.client.checkUrl();
      } catch (error) {
        const hint = pump.config.allowPrivate ? "" : "; set allowPrivate: true on the endpoint if the receiver is meant to be inside your network";
        throw new Error(`notifications.endpoints.${index}.url: ${(error as Error).message}${hint}`);
      }
    });
  }

  start(): void {
    if (!this.enabled || this.timer) return;
    this.timer = setInterval(() => this.wakeAll(), this.options.config.pollInterval);
    this.timer.unref();
    this.wakeAll();
  }

  wants(action: EventAction): boolean {
    return this.wanted.has(action);
  }

  emit(input: EventInput): void {
    if (!this.wanted.has(input.action)) return;
    try {
      const event = completeEvent(input, this.source);
      const payload = JSON.stringify(event);
      const key = orderingKey(event);
      for (const pump of this.pumps) {
        if (!pump.events.has(input.action)) continue;
        this.buffered.push({ row: { endpoint: pump.config.name, orderingKey: key, eventId: event.id, action: event.action, payload }, pump });
      }
    } catch (error) {
      this.options.logger.warn({ err: error, action: input.action }, "could not build a notification event");
      return;
    }
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** Writes the buffered events to the queue (in emission order) and wakes their endpoints' pumps. */
  private flush(): void {
    this.flushScheduled = false;
    const batch = this.buffered;
    this.buffered = [];
    if (batch.length === 0) return;
    try {
      this.options.queue.enqueue(
        batch.map((entry) => entry.row),
        Date.now(),
        this.options.config.queueSize,
      );
    } catch (error) {
      // The registry actions already happened; a lost notification must not turn them into failures.
      this.options.logger.warn({ err: error, events: batch.length }, "could not queue notification events");
      return;
    }
    for (const pump of new Set(batch.map((entry) => entry.pump))) this.wake(pump);
  }

  /** Delivery counters and queue depth per configured endpoint (shared by every process). */
  status(): EndpointStatus[] {
    const stats = this.options.queue.stats();
    return this.pumps.map((pump) => {
      const counters = stats.get(pump.config.name);
      return {
        name: pump.config.name,
        url: displayUrl(pump.config.url),
        events: [...pump.events],
        delivered: counters?.delivered ?? 0,
        failedAttempts: counters?.failedAttempts ?? 0,
        givenUp: counters?.givenUp ?? 0,
        dropped: counters?.dropped ?? 0,
        pending: counters?.pending ?? 0,
        retrying: counters?.retrying ?? 0,
        oldestPendingAt: counters?.oldestPendingAt ?? null,
        lastSuccessAt: counters?.lastSuccessAt ?? null,
        lastFailureAt: counters?.lastFailureAt ?? null,
        lastError: counters?.lastError ?? null,
      };
    });
  }

  /** Stops claiming, lets deliveries in flight finish (each bounded by its endpoint's timeout), then closes the clients. */
  async close(): Promise<void> {
    this.flush();
    this.stopping = true;
    clearInterval(this.timer);
    this.timer = undefined;
    for (const pump of this.pumps) await Promise.allSettled([...pump.inFlight.values()]);
    for (const pump of this.pumps) pump.client.close();
  }

  private wakeAll(): void {
    for (const pump of this.pumps) this.wake(pump);
  }

  private wake(pump: Pump): void {
    if (this.stopping) return;
    if (pump.claiming) {
      pump.again = true;
      return;
    }
    pump.claiming = true;
    // After the current tick: events queued together are claimed together.
    setImmediate(() => this.claimPass(pump));
  }

  private claimPass(pump: Pump): void {
    try {
      do {
        pump.again = false;
        if (this.stopping) return;
        const room = pump.config.concurrency - pump.inFlight.size;
        if (room <= 0) return;
        const claimed = this.options.queue.claim(pump.config.name, this.holder, Date.now(), 2 * pump.config.timeout + CLAIM_MARGIN_MS, room, pump.config.maxBatch);
        for (const delivery of claimed) this.startDelivery(pump, delivery);
      } while (pump.again);
    } catch (error) {
      this.options.logger.warn({ err: error, endpoint: pump.config.name }, "could not claim notification deliveries");
    } finally {
      pump.claiming = false;
    }
  }

  private startDelivery(pump: Pump, delivery: ClaimedDelivery): void {
    const run = this.deliver(pump, delivery).finally(() => {
      pump.inFlight.delete(delivery.seq);
      // A slot is free, and the next event of this repository may now be the head.
      this.wake(pump);
    });
    pump.inFlight.set(delivery.seq, run);
  }

  private async deliver(pump: Pump, delivery: ClaimedDelivery): Promise<void> {
    const body = Buffer.from(`{"events":[${[delivery.payload, ...delivery.followers.map((f) => f.payload)].join(",")}]}`);
    let outcome: DeliveryOutcome;
    try {
      outcome = await pump.client.send(body);
    } catch (error) {
      outcome = { ok: false, error: (error as Error).message };
    }
    const { queue, logger } = this.options;
    const now = Date.now();
    try {
      if (outcome.ok) {
        queue.succeeded(delivery, this.holder, now);
        return;
      }
      const retryAt = this.retryAt(pump.config, delivery, now);
      queue.failedAttempt(delivery, this.holder, now, outcome.error, retryAt);
      const context = {
        endpoint: pump.config.name,
        event: delivery.eventId,
        action: delivery.action,
        events: 1 + delivery.followers.length,
        attempts: delivery.attempts + 1,
        reason: outcome.error,
      };
      if (retryAt === null) logger.error(context, "notification given up");
      else logger.warn({ ...context, retryInMs: retryAt - now }, "notification delivery failed; will retry");
    } catch (error) {
      // The claim runs out and another pass sends the event again.
      logger.warn({ err: error, endpoint: pump.config.name }, "could not record a notification delivery");
    }
  }

  /** When to try again, or null to give the event up (maxAttempts, maxAge). */
  private retryAt(endpoint: EndpointConfig, delivery: ClaimedDelivery, now: number): number | null {
    const attempts = delivery.attempts + 1;
    if (endpoint.maxAttempts > 0 && attempts >= endpoint.maxAttempts) return null;
    if (endpoint.maxAge > 0 && now - delivery.createdAt >= endpoint.maxAge) return null;
    const exponential = endpoint.backoff * 2 ** Math.min(delivery.attempts, 30);
    // Up to 10% jitter, so endpoints that failed together do not retry in lockstep.
    return now + Math.round(Math.min(endpoint.maxBackoff, exponential) * (1 + Math.random() * 0.1));
  }
}

/** scheme://host/path: userinfo, query and fragment may hold credentials. */
export function displayUrl(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.protocol}//${parsed.host}${parsed.pathname}`;
  } catch {
    return "(invalid URL)";
  }
}
